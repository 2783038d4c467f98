//! `ixgbe-user`: NIC queue pairs driven from userspace.

pub mod dma;
pub mod ixgbe;
pub mod link;
pub mod mempool;
pub mod model;
pub mod queue;
pub mod toeplitz;

pub use dma::{DmaAllocator, DmaError, DmaRegion, HugepageDma, SharedDmaWindow};
pub use ixgbe::{Device, DeviceConfig, DeviceControl, IxgbeError, IxgbeQueuePair, QueueConfig};
pub use link::{MemoryLinkEnd, WireBackend, memory_link};
pub use mempool::{Mempool, PacketBuf};
pub use model::{Model82599, ModelConfig, ModelHandle, ModelRunner};
pub use queue::{QueueError, QueuePair, QueueStats};
pub mod afxdp;
pub mod linux;
