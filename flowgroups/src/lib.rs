//! `flowgroups`: what makes many kernel instances one stack.
//!
//! Not built yet: shared-memory rings, the flow-group table, the balancer, kernel
//! instances and the app channel protocol (see README).

pub mod channel;
pub mod control;
pub mod shm;

pub use control::{ControlLayout, ControlMessage, ControlSegment};
pub use shm::{Segment, ShmError};
