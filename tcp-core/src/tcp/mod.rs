//! The TCP protocol engine (RFC 9293 and the RFCs each submodule names).
//!
//! [`Connection`] is one transmission control block; it works on parsed segments
//! ([`crate::wire::TcpRepr`]) and leaves addressing, checksums and demultiplexing to the
//! stack.

pub(crate) mod assembler;
pub(crate) mod buffer;
pub mod config;
pub mod congestion;
pub mod connection;
pub(crate) mod rtt;
pub(crate) mod scoreboard;
pub mod seq;

pub use config::{CongestionAlgorithm, Keepalive, TcpConfig};
pub use connection::{
    CODEC_MAGIC, CODEC_VERSION, CloseReason, CodecError, Connection, ConnectionEvent,
    ConnectionParams, ConnectionState, ConnectionStats, DropReason, FourTuple, Negotiated,
    RecvError, SegmentOutcome, SendError, State, cookie_syn_ack, reset_for,
};
pub use seq::SeqNumber;
