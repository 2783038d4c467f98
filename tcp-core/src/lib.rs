//! `tcp-core`: a sans-IO TCP/IPv4 engine.
//!
//! The engine does no I/O, reads no clock and draws no random numbers. The embedder feeds
//! it frames and the current time, and pulls out frames to send, the next deadline and
//! events. See [`stack::Stack`] for the call protocol.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod stack;
pub mod tcp;
pub mod time;
pub mod wire;

pub use time::{Duration, Instant};
