//! `ixgbe-user`: NIC queue pairs driven from userspace.

pub mod dma;
pub mod mempool;
pub mod queue;
pub mod toeplitz;

pub use queue::{QueueError, QueuePair, QueueStats};
