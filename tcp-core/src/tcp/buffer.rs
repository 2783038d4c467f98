//! Send and receive byte queues (the "send buffer" and "receive buffer" of RFC 9293 §3.3.1),
//! bounded by the sizes the embedder configured. Storage grows on demand up to the bound,
//! so an idle connection costs little memory.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// A bounded FIFO of bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct ByteQueue {
    bytes: VecDeque<u8>,
    capacity: usize,
}

impl ByteQueue {
    pub(crate) fn new(capacity: usize) -> ByteQueue {
        ByteQueue { bytes: VecDeque::new(), capacity }
    }

    /// Rebuilds a queue from exported contents; the capacity grows to hold them if needed.
    pub(crate) fn from_vec(capacity: usize, contents: Vec<u8>) -> ByteQueue {
        let capacity = capacity.max(contents.len());
        ByteQueue { bytes: VecDeque::from(contents), capacity }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
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
        self.bytes.extend(data.iter().take(n));
        n
    }

    /// Copies bytes starting at `offset` into `buf` without consuming them.
    pub(crate) fn peek_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let mut n = 0;
        for (dst, src) in buf.iter_mut().zip(self.bytes.iter().skip(offset)) {
            *dst = *src;
            n += 1;
        }
        n
    }

    /// Drops up to `n` bytes from the front.
    pub(crate) fn discard(&mut self, n: usize) {
        let n = n.min(self.bytes.len());
        self.bytes.drain(..n);
    }

    /// A contiguous view of `len` bytes at `offset` (clamped to what is queued). The queue
    /// is rotated when the range straddles the ring's wrap point; this happens at most once
    /// per trip around the ring, so the cost is amortised O(1) per byte.
    pub(crate) fn contiguous(&mut self, offset: usize, len: usize) -> &[u8] {
        let start = offset.min(self.bytes.len());
        let end = offset.saturating_add(len).min(self.bytes.len());
        if end > self.bytes.as_slices().0.len() && start < self.bytes.as_slices().0.len() {
            self.bytes.make_contiguous();
        }
        let (front, back) = self.bytes.as_slices();
        if end <= front.len() {
            front.get(start..end).unwrap_or(&[])
        } else {
            let base = front.len();
            back.get(start - base..end - base).unwrap_or(&[])
        }
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
    fn contiguous_view_across_the_wrap_point() {
        let mut q = ByteQueue::new(8);
        q.push(b"01234567");
        q.discard(6);
        q.push(b"abcdef");
        assert_eq!(q.contiguous(1, 4), b"7abc");
        assert_eq!(q.contiguous(6, 10), b"ef");
        let mut out = [0u8; 2];
        assert_eq!(q.peek_at(2, &mut out), 2);
        assert_eq!(&out, b"ab");
    }
}
