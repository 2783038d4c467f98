//! The per-instance stack: frames in and out, ARP, IPv4 demultiplexing, the connection
//! table and listeners.

pub mod arp_cache;
pub mod counters;
pub mod isn;
pub mod reassembly;
pub(crate) mod siphash;
pub mod syn_cookie;
