//! Wire formats: a checked view over bytes (`XxxPacket`) and a parsed representation
//! (`XxxRepr`) for every protocol the stack speaks.
//!
//! The contract, for every type in this module:
//! - `XxxPacket::new_checked(buf)` validates lengths once; after it succeeds no accessor
//!   panics, whatever the bytes say.
//! - `XxxRepr::parse(..)` never panics on any input and returns a typed [`WireError`].
//! - `XxxRepr::emit(..)` never panics when given a buffer of at least
//!   `XxxRepr::buffer_len()` bytes, and returns an error for a shorter one.

pub mod ethernet;
pub mod tcp;

pub use ethernet::EthernetAddress;
pub use tcp::{MAX_SACK_BLOCKS, SackBlock, SackBlocks, TcpFlags, TcpOptions, TcpRepr};
