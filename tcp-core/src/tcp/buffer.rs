//! Send and receive byte queues (the "send buffer" and "receive buffer" of RFC 9293 §3.3.1),
//! bounded by the sizes the embedder configured. Storage grows on demand up to the bound,
//! so an idle connection costs little memory.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Storage an empty queue may keep (and the largest storage the stack recycles).
pub(crate) const RETAIN_WHEN_EMPTY: usize = 16 * 1024;

/// A bounded FIFO of bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct ByteQueue {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Where [`contiguous`](ByteQueue::contiguous) copies a range that straddles the ring's
    /// wrap point; allocated on the first such range.
    straddle: Vec<u8>,
}

impl ByteQueue {
    pub(crate) fn new(capacity: usize) -> ByteQueue {
        ByteQueue { bytes: VecDeque::new(), capacity, straddle: Vec::new() }
    }

    /// Rebuilds a queue from exported contents; the capacity grows to hold them if needed.
    pub(crate) fn from_vec(capacity: usize, contents: Vec<u8>) -> ByteQueue {
        let capacity = capacity.max(contents.len());
        ByteQueue { bytes: VecDeque::from(contents), capacity, straddle: Vec::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Takes `storage` (emptied) as this queue's ring if the queue has none yet; otherwise
    /// hands it back.
    pub(crate) fn adopt(&mut self, mut storage: VecDeque<u8>) -> Option<VecDeque<u8>> {
        if self.bytes.capacity() > 0 {
            return Some(storage);
        }
        storage.clear();
        self.bytes = storage;
        None
    }

    /// Gives up the queue's ring (with whatever it holds), leaving the queue empty.
    pub(crate) fn release(&mut self) -> VecDeque<u8> {
        core::mem::take(&mut self.bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn free(&self) -> usize {
        self.capacity.saturating_sub(self.bytes.len())
    }

    /// Appends as much of `data` as fits; returns how much was taken.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let needed = self.bytes.len() + n;
        if needed > self.bytes.capacity() && needed > RETAIN_WHEN_EMPTY {
            // A queue this busy is moving bulk data: grow straight to the bound rather than
            // doubling (each doubling copies the queue), as the ring would reach it anyway.
            self.bytes.reserve_exact(self.capacity - self.bytes.len());
        }
        // Extending from a slice copies in bulk (std specialises slice iterators).
        self.bytes.extend(data.get(..n).unwrap_or_default());
        n
    }

    /// Copies bytes starting at `offset` into `buf` without consuming them.
    pub(crate) fn peek_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let (front, back) = self.bytes.as_slices();
        let (first, second) = match front.get(offset..) {
            Some(rest) => (rest, back),
            None => (back.get(offset - front.len()..).unwrap_or_default(), &[][..]),
        };
        let mut n = 0;
        for part in [first, second] {
            let Some(dst) = buf.get_mut(n..) else { break };
            let k = dst.len().min(part.len());
            dst[..k].copy_from_slice(&part[..k]);
            n += k;
        }
        n
    }

    /// Drops up to `n` bytes from the front.
    pub(crate) fn discard(&mut self, n: usize) {
        let n = n.min(self.bytes.len());
        self.bytes.drain(..n);
        // A drained queue that grew large gives its memory back, so a connection that once
        // moved bulk data costs little while idle. Small queues keep theirs to avoid
        // allocator churn on request/response traffic.
        if self.bytes.is_empty() && self.bytes.capacity() > RETAIN_WHEN_EMPTY {
            // Shrinking an empty ring moves nothing; keeping RETAIN_WHEN_EMPTY of it means a
            // stream that drains its queue between bursts does not regrow it from nothing.
            self.bytes.shrink_to(RETAIN_WHEN_EMPTY);
            self.straddle = Vec::new();
        }
    }

    /// Bytes of storage currently allocated.
    pub(crate) fn allocated(&self) -> usize {
        self.bytes.capacity()
    }

    /// A contiguous view of `len` bytes at `offset` (clamped to what is queued). A range
    /// that straddles the ring's wrap point is copied into a side buffer (at most one
    /// segment, once per trip around the ring) rather than rotating the whole ring, which
    /// would move every queued byte.
    pub(crate) fn contiguous(&mut self, offset: usize, len: usize) -> &[u8] {
        let start = offset.min(self.bytes.len());
        let end = offset.saturating_add(len).min(self.bytes.len());
        let (front, back) = self.bytes.as_slices();
        if end <= front.len() {
            return front.get(start..end).unwrap_or(&[]);
        }
        let base = front.len();
        if start >= base {
            return back.get(start - base..end - base).unwrap_or(&[]);
        }
        self.straddle.clear();
        self.straddle.extend_from_slice(front.get(start..).unwrap_or(&[]));
        self.straddle.extend_from_slice(back.get(..end - base).unwrap_or(&[]));
        &self.straddle
    }

    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_is_bounded_and_fifo() {
        let mut q = ByteQueue::new(5);
        assert_eq!(q.push(b"abcdefg"), 5);
        assert_eq!(q.free(), 0);
        let mut out = [0u8; 3];
        assert_eq!(q.peek_at(0, &mut out), 3);
        q.discard(3);
        assert_eq!(&out, b"abc");
        assert_eq!(q.push(b"xyz"), 3);
        assert_eq!(q.to_vec(), b"dexyz");
    }

    #[test]
    fn drained_large_queue_releases_most_of_its_storage() {
        let mut q = ByteQueue::new(1 << 20);
        q.push(&[7u8; 100_000]);
        assert!(q.allocated() >= 100_000);
        q.discard(60_000);
        assert!(q.allocated() >= 40_000, "still holding data");
        q.discard(40_000);
        assert!(q.allocated() <= RETAIN_WHEN_EMPTY, "kept {} bytes", q.allocated());
        q.push(b"small");
        q.discard(5);
        assert!(q.allocated() > 0, "small queues keep their storage");
    }

    #[test]
    fn a_busy_queue_grows_to_its_bound_in_one_step() {
        let mut q = ByteQueue::new(128 * 1024);
        q.push(&[1u8; 1448]);
        let small = q.allocated();
        assert!(small < RETAIN_WHEN_EMPTY, "a short message does not take the whole bound");
        for _ in 0..20 {
            q.push(&[1u8; 1448]);
        }
        assert_eq!(q.allocated(), 128 * 1024, "past the retained size it grows to the bound");
        assert_eq!(q.len(), 21 * 1448);
    }

    proptest::proptest! {
        /// Whatever the ring's layout, `contiguous` shows the bytes that were queued there.
        #[test]
        fn contiguous_matches_the_queued_bytes(
            ops in proptest::collection::vec((0usize..40, 0usize..40), 1..30),
            offset in 0usize..64,
            len in 0usize..64,
        ) {
            let mut q = ByteQueue::new(48);
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut next = 0u8;
            for (push, discard) in ops {
                let data: Vec<u8> = (0..push).map(|_| { next = next.wrapping_add(1); next }).collect();
                let n = q.push(&data);
                model.extend(&data[..n]);
                q.discard(discard);
                model.drain(..discard.min(model.len()));
                let expected: Vec<u8> =
                    model.iter().copied().skip(offset).take(len).collect();
                proptest::prop_assert_eq!(q.contiguous(offset, len), &expected[..]);
            }
        }
    }

    #[test]
    fn contiguous_view_across_the_wrap_point() {
        let mut q = ByteQueue::new(8);
        q.push(b"01234567");
        q.discard(6);
        q.push(b"abcdef");
        assert_eq!(q.contiguous(1, 4), b"7abc");
        assert_eq!(q.contiguous(6, 10), b"ef");
        assert_eq!(q.contiguous(0, 1), b"6");
        assert_eq!(q.contiguous(0, 8), b"67abcdef");
        assert_eq!(q.contiguous(8, 1), b"");
        let mut out = [0u8; 2];
        assert_eq!(q.peek_at(2, &mut out), 2);
        assert_eq!(&out, b"ab");
    }
}
