//! `flowgroups`: what makes many kernel instances one stack.
//!
//! - [`shm`]: shared-memory segments, single-producer/single-consumer rings, eventfds and
//!   fd passing — the only place in this crate with `unsafe`.
//! - [`control`]: the control segment shared by the control plane and the instances.
//! - [`channel`]: the app channel: per-app shared segments, the request/completion
//!   protocol, the instance side (`ChannelHub`) and the native client API (`Client`).
//! - [`flowgroup`], [`steering`], [`balancer`], [`ports`]: flow groups (steering-table
//!   buckets), how they are steered, how load is balanced by moving them, and how active
//!   opens pick a source port that comes back to their own instance.
//!
//! - [`instance`]: the kernel instance event loop (one process per NIC queue pair).
//! - [`plane`]: the control plane (`netpop up`) and the rest of the `netpop` command.

pub mod balancer;
pub mod channel;
pub mod control;
pub mod flowgroup;
pub mod instance;
pub mod plane;
pub mod ports;
pub mod shm;
pub mod steering;

pub use control::{ControlLayout, ControlMessage, ControlSegment};
pub use shm::{Segment, ShmError};
