//! The per-instance stack: frames in and out, ARP, IPv4 demultiplexing, the connection
//! table and listeners.
