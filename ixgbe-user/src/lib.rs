//! `ixgbe-user`: NIC queue pairs driven from userspace.

pub mod queue;

pub use queue::{QueueError, QueuePair, QueueStats};
pub mod afxdp;
pub mod linux;
