//! Single-producer/single-consumer byte-stream ring in shared memory (socket data).
//!
//! Same header, index protocol and trust rules as the slot ring ([`super::ring`]), with
//! indices counting bytes: the writer owns `tail`, the reader owns `head`, each keeps its
//! own index and the capacity privately and validates the peer's index on every reload.
//! A transfer that crosses the end of the buffer is split into at most two copies.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::ring::{RawRing, RingHeader, check_head, check_tail};
use super::{Segment, ShmError};

/// Namespace for byte-ring geometry helpers.
#[derive(Debug)]
pub struct ByteRing;

impl ByteRing {
    /// Bytes a byte ring of `capacity` data bytes occupies (header plus data).
    pub fn size_for(capacity: u32) -> usize {
        RingHeader::SIZE + capacity as usize
    }

    /// Resets the ring at `offset` to empty. Only for a ring that no process is attached to
    /// (e.g. a socket slot being recycled after both sides dropped their ends).
    pub fn init(seg: &Segment, offset: usize) -> Result<(), ShmError> {
        super::RingLayout::init(seg, offset)
    }
}

/// Splits a transfer of `len` bytes starting at ring position `pos` into the piece before
/// the end of the data area and the piece that wraps to its start.
fn split(pos: usize, len: usize, capacity: usize) -> (usize, usize) {
    let first = len.min(capacity - pos);
    (first, len - first)
}

/// Copies `src` into the ring's data area starting at position `pos`, wrapping once.
///
/// # Safety
///
/// `pos < capacity`, `src.len() <= capacity`, and the writer owns those ring bytes under the
/// ring protocol (free, and unread until it publishes a new tail).
unsafe fn copy_into_ring(ring: &RawRing, pos: usize, src: &[u8]) {
    let (first, second) = split(pos, src.len(), ring.capacity() as usize);
    let data = ring.data().as_ptr();
    // SAFETY: `pos + first <= capacity` and `second <= pos < capacity` (as src.len() <=
    // capacity), so both pieces lie in the data area that attach bounds-checked and the
    // RawRing keeps mapped; a Rust slice cannot overlap it; exclusivity per the contract.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), data.add(pos), first);
        std::ptr::copy_nonoverlapping(src.as_ptr().add(first), data, second);
    }
}

/// Copies `dst.len()` bytes out of the ring's data area starting at position `pos`,
/// wrapping once.
///
/// # Safety
///
/// `pos < capacity`, `dst.len() <= capacity`, and the reader owns those ring bytes under
/// the ring protocol (published by the writer, not yet released by a new head).
unsafe fn copy_out_of_ring(ring: &RawRing, pos: usize, dst: &mut [u8]) {
    let (first, second) = split(pos, dst.len(), ring.capacity() as usize);
    let data = ring.data().as_ptr();
    // SAFETY: as in `copy_into_ring`, with the roles of source and destination swapped.
    unsafe {
        std::ptr::copy_nonoverlapping(data.add(pos), dst.as_mut_ptr(), first);
        std::ptr::copy_nonoverlapping(data, dst.as_mut_ptr().add(first), second);
    }
}

/// The writing end of a byte ring.
pub struct ByteRingWriter {
    ring: RawRing,
    /// Bytes written so far; authoritative.
    tail: u64,
    /// Last head loaded from the reader.
    cached_head: u64,
}

impl fmt::Debug for ByteRingWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteRingWriter")
            .field("ring", &self.ring)
            .field("tail", &self.tail)
            .field("cached_head", &self.cached_head)
            .finish()
    }
}

impl ByteRingWriter {
    /// Attaches the writer to the byte ring at `offset` with `capacity` (a power of two)
    /// data bytes.
    pub fn attach(seg: Arc<Segment>, offset: usize, capacity: u32) -> Result<Self, ShmError> {
        let ring = RawRing::attach(seg, offset, capacity, 1, 1)?;
        let header = ring.header();
        // Acquire pairs with the reader's Release store of head (bytes below it are free).
        let head = header.head.load(Ordering::Acquire);
        // Relaxed: tail is ours; its shared value is only a starting point, checked below.
        let tail = header.tail.load(Ordering::Relaxed);
        if tail.wrapping_sub(head) > ring.capacity() {
            return Err(ShmError::Corrupt("byte ring indices are more than one ring apart"));
        }
        Ok(ByteRingWriter { ring, tail, cached_head: head })
    }

    fn refresh_head(&mut self) -> Result<(), ShmError> {
        // Acquire pairs with the reader's Release store in `consume`: its copies out of the
        // bytes below the new head are finished before we overwrite them.
        let head = self.ring.header().head.load(Ordering::Acquire);
        check_head(self.cached_head, head, self.tail)?;
        self.cached_head = head;
        Ok(())
    }

    fn free_cached(&self) -> u64 {
        self.ring.capacity().saturating_sub(self.tail.wrapping_sub(self.cached_head))
    }

    /// Writes as much of `data` as fits; returns the number of bytes written (0 if full).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, ShmError> {
        if self.free_cached() < data.len() as u64 {
            self.refresh_head()?;
        }
        let n = self.free_cached().min(data.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let pos = (self.tail & (self.ring.capacity() - 1)) as usize;
        // SAFETY: pos < capacity; n <= free <= capacity; the n bytes from `tail` are free
        // (the reader's head, loaded with Acquire, is at most capacity - free behind tail)
        // and unread until we publish; `data` has at least n bytes.
        unsafe { copy_into_ring(&self.ring, pos, &data[..n]) };
        self.tail = self.tail.wrapping_add(n as u64);
        // Release pairs with the reader's Acquire load of tail: the bytes copied above are
        // visible before the reader sees them as readable.
        self.ring.header().tail.store(self.tail, Ordering::Release);
        Ok(n)
    }

    /// Bytes that can be written right now.
    pub fn writable(&mut self) -> Result<usize, ShmError> {
        self.refresh_head()?;
        Ok(self.free_cached() as usize)
    }

    /// Bytes written but not yet consumed by the reader (as of a fresh load of its head).
    pub fn unread(&mut self) -> Result<usize, ShmError> {
        self.refresh_head()?;
        Ok(self.tail.wrapping_sub(self.cached_head) as usize)
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity() as usize
    }
}

/// The reading end of a byte ring.
pub struct ByteRingReader {
    ring: RawRing,
    /// Bytes consumed so far; authoritative.
    head: u64,
    /// Last tail loaded from the writer.
    cached_tail: u64,
}

impl fmt::Debug for ByteRingReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteRingReader")
            .field("ring", &self.ring)
            .field("head", &self.head)
            .field("cached_tail", &self.cached_tail)
            .finish()
    }
}

impl ByteRingReader {
    /// Attaches the reader to the byte ring at `offset` with `capacity` (a power of two)
    /// data bytes.
    pub fn attach(seg: Arc<Segment>, offset: usize, capacity: u32) -> Result<Self, ShmError> {
        let ring = RawRing::attach(seg, offset, capacity, 1, 1)?;
        let header = ring.header();
        // Relaxed: head is ours; its shared value is only a starting point.
        let head = header.head.load(Ordering::Relaxed);
        // Acquire pairs with the writer's Release store of tail (bytes below it are written).
        let tail = header.tail.load(Ordering::Acquire);
        check_tail(head, head, tail, ring.capacity())?;
        Ok(ByteRingReader { ring, head, cached_tail: tail })
    }

    fn refresh_tail(&mut self) -> Result<(), ShmError> {
        // Acquire pairs with the writer's Release store in `write`: the bytes below the new
        // tail are visible to our copies.
        let tail = self.ring.header().tail.load(Ordering::Acquire);
        check_tail(self.head, self.cached_tail, tail, self.ring.capacity())?;
        self.cached_tail = tail;
        Ok(())
    }

    fn available_cached(&self) -> u64 {
        self.cached_tail.wrapping_sub(self.head)
    }

    /// Copies up to `buf.len()` readable bytes into `buf` without consuming them.
    pub fn peek(&mut self, buf: &mut [u8]) -> Result<usize, ShmError> {
        if self.available_cached() < buf.len() as u64 {
            self.refresh_tail()?;
        }
        let n = self.available_cached().min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let pos = (self.head & (self.ring.capacity() - 1)) as usize;
        // SAFETY: pos < capacity; n <= available <= capacity (check_tail); the n bytes from
        // head were published by the writer (tail loaded with Acquire) and stay put until we
        // publish a head past them; `buf` has at least n bytes.
        unsafe { copy_out_of_ring(&self.ring, pos, &mut buf[..n]) };
        Ok(n)
    }

    /// Copies up to `buf.len()` bytes into `buf` and consumes them.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ShmError> {
        let n = self.peek(buf)?;
        self.advance(n as u64);
        Ok(n)
    }

    /// Discards up to `n` readable bytes (after a `peek`); returns how many were discarded.
    pub fn consume(&mut self, n: usize) -> Result<usize, ShmError> {
        if self.available_cached() < n as u64 {
            self.refresh_tail()?;
        }
        let n = self.available_cached().min(n as u64);
        self.advance(n);
        Ok(n as usize)
    }

    fn advance(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.head = self.head.wrapping_add(n);
        // Release pairs with the writer's Acquire load of head: our copies out of these
        // bytes finish before the writer may overwrite them.
        self.ring.header().head.store(self.head, Ordering::Release);
    }

    /// Bytes that can be read right now.
    pub fn readable(&mut self) -> Result<usize, ShmError> {
        self.refresh_tail()?;
        Ok(self.available_cached() as usize)
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.capacity() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn ring(capacity: u32) -> (ByteRingWriter, ByteRingReader, Arc<Segment>) {
        let seg = Arc::new(Segment::create("t-bytes", ByteRing::size_for(capacity)).unwrap());
        let w = ByteRingWriter::attach(Arc::clone(&seg), 0, capacity).unwrap();
        let r = ByteRingReader::attach(Arc::clone(&seg), 0, capacity).unwrap();
        (w, r, seg)
    }

    #[test]
    fn write_until_full_then_read_back() {
        let (mut w, mut r, _seg) = ring(16);
        assert_eq!(w.writable().unwrap(), 16);
        assert_eq!(w.write(b"hello, shared world").unwrap(), 16);
        assert_eq!(w.write(b"x").unwrap(), 0);
        assert_eq!(r.readable().unwrap(), 16);
        let mut buf = [0u8; 32];
        assert_eq!(r.read(&mut buf).unwrap(), 16);
        assert_eq!(&buf[..16], b"hello, shared wo");
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        assert_eq!(w.unread().unwrap(), 0);
    }

    #[test]
    fn wrap_around_splits_the_copy() {
        let (mut w, mut r, _seg) = ring(8);
        let mut buf = [0u8; 8];
        assert_eq!(w.write(b"abcdef").unwrap(), 6);
        assert_eq!(r.read(&mut buf[..5]).unwrap(), 5);
        // Tail is at 6: this write covers positions 6, 7, 0, 1, 2, 3.
        assert_eq!(w.write(b"ghijkl").unwrap(), 6);
        assert_eq!(w.writable().unwrap(), 1);
        assert_eq!(r.read(&mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], b"fghijkl");
    }

    #[test]
    fn peek_does_not_consume_and_consume_is_bounded() {
        let (mut w, mut r, _seg) = ring(8);
        w.write(b"12345").unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(r.peek(&mut buf).unwrap(), 3);
        assert_eq!(&buf, b"123");
        assert_eq!(r.readable().unwrap(), 5);
        assert_eq!(r.consume(2).unwrap(), 2);
        assert_eq!(r.peek(&mut buf).unwrap(), 3);
        assert_eq!(&buf, b"345");
        assert_eq!(r.consume(100).unwrap(), 3, "cannot consume more than was written");
        assert_eq!(r.readable().unwrap(), 0);
        assert_eq!(w.writable().unwrap(), 8);
    }

    #[test]
    fn hostile_indices_are_corrupt() {
        let (mut w, mut r, seg) = ring(8);
        let header = seg.get::<RingHeader>(0).unwrap();
        w.write(b"abc").unwrap();
        header.tail.store(1000, Ordering::Relaxed);
        let mut buf = [0u8; 8];
        assert!(matches!(r.read(&mut buf), Err(ShmError::Corrupt(_))));
        header.tail.store(3, Ordering::Relaxed);
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        header.head.store(7, Ordering::Relaxed);
        assert!(matches!(w.writable(), Err(ShmError::Corrupt(_))));
        header.head.store(3, Ordering::Relaxed);
        assert_eq!(w.writable().unwrap(), 8);
        header.head.store(2, Ordering::Relaxed);
        assert!(matches!(w.writable(), Err(ShmError::Corrupt(_))));
        // The writer's own view is intact: restoring the head makes the ring usable again.
        header.head.store(3, Ordering::Relaxed);
        assert_eq!(w.write(b"0123456789").unwrap(), 8);
    }

    #[test]
    fn attach_checks_capacity_and_bounds() {
        let seg = Arc::new(Segment::create("t-bgeom", 4096).unwrap());
        assert!(matches!(
            ByteRingWriter::attach(Arc::clone(&seg), 0, 100),
            Err(ShmError::BadLayout(_))
        ));
        assert!(matches!(
            ByteRingReader::attach(Arc::clone(&seg), 0, 4096),
            Err(ShmError::OutOfBounds { .. })
        ));
        assert!(ByteRingReader::attach(Arc::clone(&seg), 0, 2048).is_ok());
        assert!(matches!(ByteRing::init(&seg, 4000), Err(ShmError::OutOfBounds { .. })));
    }

    #[test]
    fn two_threads_stream_in_order() {
        let total: usize = if cfg!(miri) { 3_000 } else { 2_000_000 };
        let (mut w, mut r, _seg) = ring(256);
        let writer = std::thread::spawn(move || {
            let mut sent = 0usize;
            let mut chunk = [0u8; 97];
            while sent < total {
                let n = chunk.len().min(total - sent);
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = ((sent + i) % 251) as u8;
                }
                let mut done = 0;
                while done < n {
                    let k = w.write(&chunk[done..n]).unwrap();
                    if k == 0 {
                        std::thread::yield_now();
                    }
                    done += k;
                }
                sent += n;
            }
        });
        let mut got = 0usize;
        let mut buf = [0u8; 61];
        while got < total {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                std::thread::yield_now();
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((got + i) % 251) as u8);
            }
            got += n;
        }
        writer.join().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, ..ProptestConfig::default() })]

        /// With honest peers the byte ring is a bounded byte FIFO.
        #[test]
        fn matches_a_bounded_byte_queue(
            ops in proptest::collection::vec((any::<bool>(), 0usize..40), 0..200),
            cap_log in 0u32..6,
        ) {
            let capacity = 1u32 << cap_log;
            let (mut w, mut r, _seg) = ring(capacity);
            let mut model = VecDeque::new();
            let mut next = 0u8;
            for (write, len) in ops {
                if write {
                    let data: Vec<u8> = (0..len).map(|i| next.wrapping_add(i as u8)).collect();
                    let n = w.write(&data).unwrap();
                    prop_assert_eq!(n, len.min(capacity as usize - model.len()));
                    model.extend(&data[..n]);
                    next = next.wrapping_add(n as u8);
                } else {
                    let mut buf = vec![0u8; len];
                    let n = r.read(&mut buf).unwrap();
                    let expect: Vec<u8> = model.drain(..len.min(model.len())).collect();
                    prop_assert_eq!(&buf[..n], &expect[..]);
                }
            }
        }

        /// Scribbled indices give Corrupt or bytes, never a panic or an access outside the
        /// ring (it sits at the end of its segment; a canary guards the bytes before it).
        #[test]
        fn hostile_indices_never_escape_the_ring(
            ops in proptest::collection::vec((0u8..4, any::<u64>(), 0usize..200), 0..200),
        ) {
            let capacity = 128u32;
            let seg_len = 4096;
            let offset = seg_len - ByteRing::size_for(capacity);
            let seg = Arc::new(Segment::create("t-bhostile", seg_len).unwrap());
            let canary = seg.get_slice::<std::sync::atomic::AtomicU64>(0, offset / 8).unwrap();
            for c in canary { c.store(0xa5a5_a5a5_a5a5_a5a5, Ordering::Relaxed); }
            let header = seg.get::<RingHeader>(offset).unwrap();
            let mut w = ByteRingWriter::attach(Arc::clone(&seg), offset, capacity).unwrap();
            let mut r = ByteRingReader::attach(Arc::clone(&seg), offset, capacity).unwrap();
            for (kind, value, len) in ops {
                let near = value % 512;
                match kind {
                    0 => { let _ = w.write(&vec![0x11; len]); }
                    1 => {
                        let mut buf = vec![0u8; len];
                        if let Ok(n) = r.read(&mut buf) {
                            prop_assert!(n <= len);
                            prop_assert!(buf[..n].iter().all(|&b| b == 0x11 || b == 0));
                        }
                    }
                    2 => header.head.store(if value & 1 == 0 { near } else { value }, Ordering::Relaxed),
                    _ => header.tail.store(if value & 1 == 0 { near } else { value }, Ordering::Relaxed),
                }
                if let Ok(n) = w.writable() { prop_assert!(n <= capacity as usize); }
                if let Ok(n) = r.readable() { prop_assert!(n <= capacity as usize); }
            }
            prop_assert!(canary.iter().all(|c| c.load(Ordering::Relaxed) == 0xa5a5_a5a5_a5a5_a5a5));
        }
    }
}
