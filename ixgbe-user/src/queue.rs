//! The queue-pair abstraction every NIC backend implements: the 82599 driver, the 82599
//! model's ports, TAP, AF_PACKET and AF_XDP.
//!
//! One owner per queue pair: a `QueuePair` is `Send` but used from one thread or process at
//! a time. Device-wide settings (RSS key, RETA, Flow Director) live on a separate control
//! handle owned by the control plane.

use std::fmt;
use std::os::fd::RawFd;

/// Per-queue counters, as a backend reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames received and handed to the caller.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the backend dropped on receive (no free descriptor, bad descriptor, ...).
    pub rx_dropped: u64,
    /// Frames queued for transmission.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames the caller offered that the backend could not queue (ring full, too long).
    pub tx_dropped: u64,
}

/// Why a queue operation failed. Transient conditions (empty ring, full ring) are not
/// errors: they are reported through return values.
#[derive(Debug)]
#[non_exhaustive]
pub enum QueueError {
    /// The underlying system call failed.
    Io(std::io::Error),
    /// The device or model reported something the driver cannot continue from.
    Device(String),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Io(e) => write!(f, "queue I/O error: {e}"),
            QueueError::Device(msg) => write!(f, "device error: {msg}"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Io(e) => Some(e),
            QueueError::Device(_) => None,
        }
    }
}

impl From<std::io::Error> for QueueError {
    fn from(e: std::io::Error) -> Self {
        QueueError::Io(e)
    }
}

/// A receive/transmit queue pair.
///
/// Receive hands each frame to a callback while it still sits in the backend's buffer (no
/// copy); the buffer is recycled when the callback returns. Transmit lets the caller build
/// the frame in place in a backend buffer, then [`QueuePair::tx_flush`] rings the doorbell
/// (or kicks the kernel) once per batch.
pub trait QueuePair: Send {
    /// Receives up to `max` frames, calling `on_frame` for each; returns how many.
    fn rx_burst(
        &mut self,
        max: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, QueueError>;

    /// Queues one frame for transmission. `build` is given a buffer of
    /// [`QueuePair::max_frame_len`] bytes and returns the frame length it wrote (0 = none).
    /// Returns `Ok(false)` without calling `build` when no transmit buffer is free.
    fn tx_one(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<bool, QueueError>;

    /// Makes every frame queued by [`QueuePair::tx_one`] visible to the device and reclaims
    /// completed transmit buffers.
    fn tx_flush(&mut self) -> Result<(), QueueError>;

    /// Largest frame (without FCS) this queue can send or receive.
    fn max_frame_len(&self) -> usize;

    /// The MAC address of the port this queue belongs to.
    fn mac_address(&self) -> [u8; 6];

    /// Counters for this queue.
    fn stats(&self) -> QueueStats;

    /// A file descriptor that becomes readable when frames may be waiting, for callers that
    /// block when idle; `None` when the backend can only be polled.
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
}
