//! The wire side of a model port: the [`WireBackend`] trait, and an in-memory link that
//! joins two ports (or a port and a test) without any privileges.
//!
//! TAP and AF_PACKET backends (in `linux/`) implement the same trait, so a model port can
//! also talk to the Linux kernel.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Something that carries Ethernet frames (without FCS) to and from a model port.
pub trait WireBackend: Send {
    /// Sends one frame. A full wire drops the frame (and counts it) rather than blocking.
    fn transmit(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Receives one frame into `buf` without blocking; `Ok(None)` when none is waiting.
    /// Frames longer than `buf` are truncated to it.
    fn receive(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Whether the link partner is present (drives the port's LINKS.UP).
    fn link_up(&self) -> bool {
        true
    }
}

/// Frames one direction of a link holds before it drops new ones.
pub const LINK_QUEUE_FRAMES: usize = 8192;

#[derive(Debug, Default)]
struct Direction {
    frames: Mutex<VecDeque<Vec<u8>>>,
    dropped: AtomicU64,
}

/// One end of an in-memory link. Frames sent at one end are received at the other, in
/// order. Both ends are `Send`; each is meant to be owned by one port (or test).
#[derive(Debug)]
pub struct MemoryLinkEnd {
    outgoing: Arc<Direction>,
    incoming: Arc<Direction>,
}

/// Creates a link and returns its two ends.
pub fn memory_link() -> (MemoryLinkEnd, MemoryLinkEnd) {
    let a_to_b = Arc::new(Direction::default());
    let b_to_a = Arc::new(Direction::default());
    (
        MemoryLinkEnd { outgoing: Arc::clone(&a_to_b), incoming: Arc::clone(&b_to_a) },
        MemoryLinkEnd { outgoing: b_to_a, incoming: a_to_b },
    )
}

impl MemoryLinkEnd {
    /// Sends a frame to the other end.
    pub fn send(&self, frame: &[u8]) {
        let mut q = self.outgoing.frames.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= LINK_QUEUE_FRAMES {
            self.outgoing.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            q.push_back(frame.to_vec());
        }
    }

    /// Takes the next frame sent by the other end.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.incoming.frames.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
    }

    /// Frames this end sent that the link dropped because the other end was not reading.
    pub fn dropped(&self) -> u64 {
        self.outgoing.dropped.load(Ordering::Relaxed)
    }
}

impl WireBackend for MemoryLinkEnd {
    fn transmit(&mut self, frame: &[u8]) -> io::Result<()> {
        self.send(frame);
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.recv().map(|frame| {
            let n = frame.len().min(buf.len());
            buf[..n].copy_from_slice(&frame[..n]);
            n
        }))
    }

    fn link_up(&self) -> bool {
        // Each direction is shared by exactly the two ends; a dropped peer leaves one.
        Arc::strong_count(&self.incoming) > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_in_order_both_ways() {
        let (mut a, mut b) = memory_link();
        a.transmit(&[1, 2, 3]).unwrap();
        a.transmit(&[4]).unwrap();
        b.transmit(&[9; 70]).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(b.receive(&mut buf).unwrap(), Some(3));
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(b.receive(&mut buf).unwrap(), Some(1));
        assert_eq!(b.receive(&mut buf).unwrap(), None);
        assert_eq!(a.receive(&mut buf).unwrap(), Some(64), "truncated to the buffer");
    }

    #[test]
    fn link_goes_down_when_the_peer_is_dropped() {
        let (a, b) = memory_link();
        assert!(a.link_up());
        drop(b);
        assert!(!a.link_up());
    }

    #[test]
    fn a_full_link_drops_and_counts() {
        let (a, _b) = memory_link();
        for _ in 0..LINK_QUEUE_FRAMES + 3 {
            a.send(&[0]);
        }
        assert_eq!(a.dropped(), 3);
    }
}
