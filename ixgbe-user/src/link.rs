//! The wire side of a model port: the [`WireBackend`] trait, the [`FrameBuffers`] a port
//! recycles its frames through, and an in-memory link that joins two ports (or a port and a
//! test) without any privileges.
//!
//! TAP and AF_PACKET backends (in `linux/`) implement the same trait, so a model port can
//! also talk to the Linux kernel.
//!
//! A model port moves frames in batches: [`WireBackend::transmit_batch`] hands the wire a
//! batch of owned frame buffers and [`WireBackend::receive_batch`] returns one, so a
//! backend takes its lock or makes its system calls once per batch, and the in-memory link
//! passes buffers along instead of copying them: a frame is copied once out of the sending
//! port's DMA memory and once into the receiving port's, as the two DMA engines would.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Largest frame a wire carries (the 82599's jumbo limit, 15.5 KiB, rounded up).
pub const MAX_WIRE_FRAME: usize = 16 * 1024;

/// Sends `frames` in order through `send` and empties the vector, every buffer going back
/// to `buffers`; after a failed send the remaining frames are not sent and the error is
/// returned. The frame loop of every [`WireBackend::transmit_batch`].
pub fn transmit_each(
    frames: &mut Vec<Vec<u8>>,
    buffers: &mut FrameBuffers,
    mut send: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut result = Ok(());
    for frame in frames.drain(..) {
        if result.is_ok() {
            result = send(&frame);
        }
        buffers.recycle(frame);
    }
    result
}

/// Emptied frame buffers kept for reuse, so a port in its steady state does not allocate.
/// Buffers beyond [`FrameBuffers::KEEP`] are freed.
#[derive(Debug, Default)]
pub struct FrameBuffers {
    spare: Vec<Vec<u8>>,
    /// Receive buffer of [`MAX_WIRE_FRAME`] bytes for backends that only copy into a slice.
    scratch: Vec<u8>,
}

impl FrameBuffers {
    /// Spare buffers kept at most: a few batches' worth.
    pub const KEEP: usize = 1024;

    /// An empty buffer (a recycled one when there is one).
    pub fn take(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Gives a buffer back for reuse.
    pub fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.spare.len() < Self::KEEP {
            frame.clear();
            self.spare.push(frame);
        }
    }

    /// Spare buffers held now.
    pub fn spare(&self) -> usize {
        self.spare.len()
    }

    /// Hands out the spare buffers beyond the first `keep` (for a wire that returns buffers
    /// to the other end).
    fn surplus(&mut self, keep: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
        let from = keep.min(self.spare.len());
        self.spare.drain(from..)
    }
}

/// Something that carries Ethernet frames (without FCS) to and from a model port.
///
/// A backend implements [`transmit`](WireBackend::transmit) and
/// [`receive`](WireBackend::receive); the batch methods have defaults built on them and are
/// what the model calls, so a backend that can do better per batch overrides those.
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

    /// Sends `frames` in order and empties the vector; buffers the wire does not keep go
    /// back to `buffers`. On an error the frames after the failing one are not sent.
    fn transmit_batch(
        &mut self,
        frames: &mut Vec<Vec<u8>>,
        buffers: &mut FrameBuffers,
    ) -> io::Result<()> {
        transmit_each(frames, buffers, |frame| self.transmit(frame))
    }

    /// Receives up to `max` frames without blocking and appends them to `out` in arrival
    /// order, in buffers taken from `buffers`; returns how many arrived. Frames longer than
    /// [`MAX_WIRE_FRAME`] are truncated to it.
    fn receive_batch(
        &mut self,
        max: usize,
        buffers: &mut FrameBuffers,
        out: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        let mut scratch = std::mem::take(&mut buffers.scratch);
        scratch.resize(MAX_WIRE_FRAME, 0);
        let mut received = 0;
        let mut result = Ok(());
        while received < max {
            match self.receive(&mut scratch) {
                Ok(Some(n)) => {
                    let mut frame = buffers.take();
                    frame.extend_from_slice(scratch.get(..n).unwrap_or(&scratch));
                    out.push(frame);
                    received += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        buffers.scratch = scratch;
        // Frames already taken off the wire are delivered even when a later read failed.
        match result {
            Err(e) if received == 0 => Err(e),
            _ => Ok(received),
        }
    }
}

/// Frames one direction of a link holds before it drops new ones.
pub const LINK_QUEUE_FRAMES: usize = 8192;

/// Spare buffers a receiving end keeps for its own transmissions; the rest go back to the
/// sending end, so a one-way stream does not allocate on one side and free on the other.
const RECEIVER_KEEPS: usize = 256;

#[derive(Debug, Default)]
struct Direction {
    state: Mutex<DirectionState>,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct DirectionState {
    /// Frames in flight, oldest first.
    frames: VecDeque<Vec<u8>>,
    /// Emptied buffers the receiving end handed back for the sending end to reuse.
    returned: Vec<Vec<u8>>,
}

impl Direction {
    fn lock(&self) -> MutexGuard<'_, DirectionState> {
        // A panic elsewhere cannot leave the queue half-updated: every critical section
        // only pushes and pops whole buffers.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
        let mut state = self.outgoing.lock();
        if state.frames.len() >= LINK_QUEUE_FRAMES {
            self.outgoing.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut buffer = state.returned.pop().unwrap_or_default();
            buffer.clear();
            buffer.extend_from_slice(frame);
            state.frames.push_back(buffer);
        }
    }

    /// Takes the next frame sent by the other end.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.incoming.lock().frames.pop_front()
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
        let mut state = self.incoming.lock();
        Ok(state.frames.pop_front().map(|frame| {
            let n = frame.len().min(buf.len());
            buf[..n].copy_from_slice(&frame[..n]);
            state.returned.push(frame);
            n
        }))
    }

    fn link_up(&self) -> bool {
        // Each direction is shared by exactly the two ends; a dropped peer leaves one.
        Arc::strong_count(&self.incoming) > 1
    }

    fn transmit_batch(
        &mut self,
        frames: &mut Vec<Vec<u8>>,
        buffers: &mut FrameBuffers,
    ) -> io::Result<()> {
        let mut dropped = 0;
        {
            let mut state = self.outgoing.lock();
            let DirectionState { frames: queue, returned } = &mut *state;
            for frame in frames.drain(..) {
                if queue.len() >= LINK_QUEUE_FRAMES {
                    dropped += 1;
                    buffers.recycle(frame);
                } else {
                    queue.push_back(frame);
                }
            }
            // Take back what the receiver emptied, for the next batch.
            let room = FrameBuffers::KEEP.saturating_sub(buffers.spare());
            let from = returned.len().saturating_sub(room);
            buffers.spare.extend(returned.drain(from..));
        }
        if dropped > 0 {
            self.outgoing.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(())
    }

    fn receive_batch(
        &mut self,
        max: usize,
        buffers: &mut FrameBuffers,
        out: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        let mut state = self.incoming.lock();
        let DirectionState { frames: queue, returned } = &mut *state;
        let n = max.min(queue.len());
        out.extend(queue.drain(..n));
        if returned.len() < LINK_QUEUE_FRAMES {
            returned.extend(buffers.surplus(RECEIVER_KEEPS));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(range: std::ops::Range<u8>) -> Vec<Vec<u8>> {
        range.map(|i| vec![i; 60]).collect()
    }

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

    #[test]
    fn batches_keep_order_across_batch_boundaries_and_with_single_frames() {
        let (mut a, mut b) = memory_link();
        let (mut pool_a, mut pool_b) = (FrameBuffers::default(), FrameBuffers::default());
        let mut batch = frames(0..10);
        a.transmit_batch(&mut batch, &mut pool_a).unwrap();
        assert!(batch.is_empty(), "the wire took every frame");
        a.transmit(&[10; 60]).unwrap();
        a.transmit_batch(&mut frames(11..20), &mut pool_a).unwrap();

        let mut got = Vec::new();
        assert_eq!(b.receive_batch(4, &mut pool_b, &mut got).unwrap(), 4);
        let mut buf = [0u8; 64];
        assert_eq!(b.receive(&mut buf).unwrap(), Some(60));
        got.push(buf[..60].to_vec());
        while b.receive_batch(3, &mut pool_b, &mut got).unwrap() > 0 {}
        let firsts: Vec<u8> = got.iter().map(|f| f[0]).collect();
        assert_eq!(firsts, (0..20).collect::<Vec<u8>>());
        assert!(got.iter().all(|f| f.len() == 60 && f.iter().all(|&x| x == f[0])));
    }

    #[test]
    fn a_one_way_stream_returns_buffers_to_the_sender() {
        let (mut a, mut b) = memory_link();
        let (mut pool_a, mut pool_b) = (FrameBuffers::default(), FrameBuffers::default());
        let mut got = Vec::new();
        for round in 0..4u8 {
            let mut batch: Vec<Vec<u8>> = (0..200)
                .map(|_| {
                    let mut f = pool_a.take();
                    f.extend_from_slice(&[round; 60]);
                    f
                })
                .collect();
            a.transmit_batch(&mut batch, &mut pool_a).unwrap();
            b.receive_batch(usize::MAX, &mut pool_b, &mut got).unwrap();
            assert!(got.iter().all(|f| f == &[round; 60]));
            got.drain(..).for_each(|f| pool_b.recycle(f));
        }
        assert!(pool_b.spare() <= RECEIVER_KEEPS + 200, "receiver hands its surplus back");
        assert!(pool_a.spare() > 0, "sender reuses buffers the receiver emptied");
    }

    #[test]
    fn a_full_link_drops_the_tail_of_a_batch_and_counts_it() {
        let (mut a, mut b) = memory_link();
        let mut pool = FrameBuffers::default();
        let mut batch: Vec<Vec<u8>> = (0..LINK_QUEUE_FRAMES + 5).map(|i| vec![i as u8]).collect();
        a.transmit_batch(&mut batch, &mut pool).unwrap();
        assert_eq!(a.dropped(), 5);
        let mut got = Vec::new();
        let n = b.receive_batch(usize::MAX, &mut FrameBuffers::default(), &mut got).unwrap();
        assert_eq!(n, LINK_QUEUE_FRAMES);
        assert_eq!(got.last().map(|f| f[0]), Some((LINK_QUEUE_FRAMES - 1) as u8));
    }

    /// A backend with only the required methods, to exercise the default batch methods.
    struct Plain(VecDeque<Vec<u8>>, Vec<Vec<u8>>);

    impl WireBackend for Plain {
        fn transmit(&mut self, frame: &[u8]) -> io::Result<()> {
            self.1.push(frame.to_vec());
            Ok(())
        }
        fn receive(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            Ok(self.0.pop_front().map(|f| {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                n
            }))
        }
    }

    #[test]
    fn default_batch_methods_keep_order_limit_the_batch_and_truncate() {
        let mut incoming: VecDeque<Vec<u8>> = frames(0..5).into();
        incoming.push_back(vec![7; MAX_WIRE_FRAME + 10]);
        let mut wire = Plain(incoming, Vec::new());
        let mut pool = FrameBuffers::default();
        let mut got = Vec::new();
        assert_eq!(wire.receive_batch(3, &mut pool, &mut got).unwrap(), 3);
        assert_eq!(wire.receive_batch(10, &mut pool, &mut got).unwrap(), 3);
        assert_eq!(wire.receive_batch(10, &mut pool, &mut got).unwrap(), 0);
        let firsts: Vec<u8> = got.iter().map(|f| f[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 3, 4, 7]);
        assert_eq!(got[5].len(), MAX_WIRE_FRAME);

        let mut batch = frames(20..23);
        wire.transmit_batch(&mut batch, &mut pool).unwrap();
        assert!(batch.is_empty());
        assert_eq!(wire.1, frames(20..23));
        assert_eq!(pool.spare(), 3, "sent buffers are recycled");
    }
}
