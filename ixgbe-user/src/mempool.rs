//! Packet buffer pools over DMA memory, in the style of ixy's mempool: a region cut into
//! fixed-size entries, a stack of free entry indices, and an RAII [`PacketBuf`] that pushes
//! its entry back onto the stack when dropped.
//!
//! Entries are handed out LIFO, so a buffer freed by the receive path is the next one the
//! refill takes and is likely still in cache.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::dma::{DmaAllocator, DmaError, DmaRegion};

struct PoolInner {
    region: DmaRegion,
    entry_size: usize,
    num_entries: u32,
    /// Indices of free entries. A mutex rather than a lock-free stack: a pool belongs to one
    /// queue pair, so the lock is uncontended and costs one atomic pair per operation.
    free: Mutex<Vec<u32>>,
}

impl PoolInner {
    fn push_free(&self, index: u32) {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).push(index);
    }
}

/// A pool of equally sized DMA buffers.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mempool")
            .field("entry_size", &self.inner.entry_size)
            .field("num_entries", &self.inner.num_entries)
            .field("free", &self.free_count())
            .finish()
    }
}

impl Mempool {
    /// Allocates `num_entries` buffers of `entry_size` bytes (a multiple of 64, so every
    /// buffer starts on a cache line) from `dma`.
    pub fn new(
        dma: &dyn DmaAllocator,
        num_entries: u32,
        entry_size: usize,
    ) -> Result<Self, DmaError> {
        if entry_size == 0 || entry_size % 64 != 0 || num_entries == 0 {
            return Err(DmaError::Unsupported(format!(
                "mempool of {num_entries} entries of {entry_size} bytes"
            )));
        }
        let total = (num_entries as usize)
            .checked_mul(entry_size)
            .ok_or_else(|| DmaError::Unsupported("mempool size overflows".into()))?;
        let region = dma.allocate(total, 4096)?;
        // Reverse order so the first allocation gets entry 0 (purely for readable dumps).
        let free = (0..num_entries).rev().collect();
        Ok(Mempool {
            inner: Arc::new(PoolInner { region, entry_size, num_entries, free: Mutex::new(free) }),
        })
    }

    /// Takes a free buffer (length 0), or `None` when all are in use.
    pub fn alloc(&self) -> Option<PacketBuf> {
        let index = self.inner.free.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
        Some(PacketBuf { pool: Arc::clone(&self.inner), index, len: 0 })
    }

    /// Takes up to `n` buffers into `out` under one lock; returns how many.
    pub fn alloc_batch(&self, n: usize, out: &mut Vec<PacketBuf>) -> usize {
        let mut free = self.inner.free.lock().unwrap_or_else(PoisonError::into_inner);
        let take = n.min(free.len());
        for _ in 0..take {
            if let Some(index) = free.pop() {
                out.push(PacketBuf { pool: Arc::clone(&self.inner), index, len: 0 });
            }
        }
        take
    }

    /// Buffers currently free.
    pub fn free_count(&self) -> usize {
        self.inner.free.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Total number of buffers.
    pub fn capacity(&self) -> u32 {
        self.inner.num_entries
    }

    /// Size of each buffer in bytes.
    pub fn entry_size(&self) -> usize {
        self.inner.entry_size
    }
}

/// One packet buffer from a [`Mempool`]; returns to its pool when dropped.
///
/// Holds the buffer's capacity (the pool's entry size) and the length of the frame in it.
pub struct PacketBuf {
    pool: Arc<PoolInner>,
    index: u32,
    len: usize,
}

impl fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketBuf")
            .field("index", &self.index)
            .field("iova", &format_args!("{:#x}", self.iova()))
            .field("len", &self.len)
            .finish()
    }
}

impl PacketBuf {
    fn offset(&self) -> usize {
        self.index as usize * self.pool.entry_size
    }

    /// Device address of the buffer's first byte (what goes into a descriptor).
    pub fn iova(&self) -> u64 {
        self.pool.region.iova() + self.offset() as u64
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.pool.entry_size
    }

    /// Length of the frame in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the frame length; lengths beyond the capacity are clamped to it (so a length
    /// reported by a device can never expose memory past the buffer).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    /// The frame bytes (`..len`).
    pub fn data(&self) -> &[u8] {
        // SAFETY: the entry lies inside the pool's region (index < num_entries, checked at
        // creation), `len <= capacity`, and this buffer is the entry's only owner. The
        // device writes into it only while a receive descriptor points at it, and the
        // driver hands the buffer out only after the device reported the write done.
        unsafe { std::slice::from_raw_parts(self.pool.region.virt().add(self.offset()), self.len) }
    }

    /// The whole buffer (`..capacity`), for building a frame in place.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes this the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.region.virt().add(self.offset()),
                self.pool.entry_size,
            )
        }
    }

    /// The frame bytes, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.buffer_mut()[..len]
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        self.pool.push_free(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::SharedDmaWindow;

    #[test]
    fn buffers_return_to_the_pool_on_drop() {
        let window = SharedDmaWindow::create(1 << 20).unwrap();
        let pool = Mempool::new(&window, 4, 2048).unwrap();
        let mut held: Vec<_> = (0..4).map(|_| pool.alloc().unwrap()).collect();
        assert!(pool.alloc().is_none(), "pool of 4 is exhausted");
        held.pop();
        assert_eq!(pool.free_count(), 1);
        let again = pool.alloc().unwrap();
        drop(again);
        drop(held);
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn buffers_are_distinct_and_inside_the_window() {
        let window = SharedDmaWindow::create(1 << 20).unwrap();
        let pool = Mempool::new(&window, 8, 2048).unwrap();
        let mut bufs = Vec::new();
        assert_eq!(pool.alloc_batch(8, &mut bufs), 8);
        let mut addrs: Vec<u64> = bufs.iter().map(PacketBuf::iova).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 8);
        for (i, b) in bufs.iter_mut().enumerate() {
            b.buffer_mut()[0] = i as u8;
            b.set_len(60);
            let p = window.translate(b.iova(), 2048).unwrap();
            // SAFETY: translate checked the range.
            assert_eq!(unsafe { p.read() }, i as u8, "CPU and device views agree");
        }
    }

    #[test]
    fn set_len_never_exceeds_capacity() {
        let window = SharedDmaWindow::create(1 << 20).unwrap();
        let pool = Mempool::new(&window, 1, 2048).unwrap();
        let mut b = pool.alloc().unwrap();
        b.set_len(1 << 30);
        assert_eq!(b.len(), 2048);
        assert_eq!(b.data().len(), 2048);
    }

    #[test]
    fn rejects_unaligned_entry_sizes() {
        let window = SharedDmaWindow::create(1 << 20).unwrap();
        assert!(Mempool::new(&window, 4, 100).is_err());
    }
}
