//! UMEM (the packet memory shared with the kernel) and the four single-producer /
//! single-consumer rings of an AF_XDP socket.
//!
//! Follows the kernel's `Documentation/networking/af_xdp.rst` and `<linux/if_xdp.h>`: the
//! UMEM is registered with `XDP_UMEM_REG` and split into equal chunks; the fill and
//! completion rings carry chunk addresses (u64), the rx and tx rings carry `struct xdp_desc`.
//! Each ring is mmap'd from the socket at a fixed page offset; its producer index, consumer
//! index, flags word and descriptor array sit at the offsets `XDP_MMAP_OFFSETS` reports.
//!
//! Synchronisation with the kernel (which uses `smp_load_acquire`/`smp_store_release` on the
//! same words): a producer writes descriptors, then publishes the new producer index with a
//! release store; a consumer reads the producer index with an acquire load before reading
//! descriptors, and hands slots back with a release store of the consumer index after it
//! has finished reading them.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `struct xdp_desc`: one rx or tx descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct XdpDesc {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) options: u32,
}

const _: () = assert!(size_of::<XdpDesc>() == 16);

/// `struct xdp_ring_offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XdpRingOffset {
    pub(crate) producer: u64,
    pub(crate) consumer: u64,
    pub(crate) desc: u64,
    pub(crate) flags: u64,
}

/// `struct xdp_mmap_offsets` (Linux 5.4+, with the `flags` fields need-wakeup relies on).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XdpMmapOffsets {
    pub(crate) rx: XdpRingOffset,
    pub(crate) tx: XdpRingOffset,
    pub(crate) fill: XdpRingOffset,
    pub(crate) completion: XdpRingOffset,
}

const _: () = assert!(size_of::<XdpMmapOffsets>() == 128);

/// Page offsets that select which ring an mmap of the socket maps.
pub(crate) const XDP_PGOFF_RX_RING: i64 = 0;
pub(crate) const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
pub(crate) const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
pub(crate) const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;

/// `XDP_RING_NEED_WAKEUP` in a ring's flags word.
const XDP_RING_NEED_WAKEUP: u32 = 1;

/// An owned memory mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves that
// ownership. Concurrent access with the kernel is synchronised by the ring protocol above.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Anonymous, zeroed, pre-faulted memory of `len` bytes (rounded up to pages by mmap).
    pub(crate) fn anonymous(len: usize) -> io::Result<Mapping> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
        };
        Mapping::from_mmap(ptr, len)
    }

    /// Maps `len` bytes of AF_XDP socket `fd` at page offset `offset` (one of the
    /// `XDP_*PGOFF*` constants), shared with the kernel.
    pub(crate) fn ring(fd: RawFd, offset: i64, len: usize) -> io::Result<Mapping> {
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        // SAFETY: maps kernel-provided ring memory into a fresh range; the kernel validates
        // `offset` and `len` against the ring it set up.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        Mapping::from_mmap(ptr, len)
    }

    fn from_mmap(ptr: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap at 0"))?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and nobody else unmaps;
        // no reference into it outlives `self` (borrows of frames are tied to `&self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The UMEM area: `frame_count` chunks of `frame_size` bytes.
///
/// Ownership of each chunk alternates between this process and the kernel: a chunk given to
/// the fill ring or the tx ring belongs to the kernel until it comes back through the rx ring
/// or the completion ring. Only chunks this process owns may be borrowed.
#[derive(Debug)]
pub(crate) struct Umem {
    area: Mapping,
    frame_size: u32,
    frame_count: u32,
}

impl Umem {
    pub(crate) fn new(frame_count: u32, frame_size: u32) -> io::Result<Umem> {
        let len = (frame_count as usize)
            .checked_mul(frame_size as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "UMEM size overflows"))?;
        Ok(Umem { area: Mapping::anonymous(len)?, frame_size, frame_count })
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.area.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.area.len()
    }

    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    pub(crate) fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// The start of the chunk containing `addr`, if `addr` lies inside the UMEM.
    pub(crate) fn chunk_of(&self, addr: u64) -> Option<u64> {
        (addr < self.len() as u64).then(|| addr - addr % u64::from(self.frame_size))
    }

    /// Whether `addr..addr+len` lies inside one chunk.
    fn in_one_chunk(&self, addr: u64, len: usize) -> bool {
        let Some(chunk) = self.chunk_of(addr) else { return false };
        addr.checked_add(len as u64).is_some_and(|end| end <= chunk + u64::from(self.frame_size))
    }

    /// Borrows `len` bytes at `addr`, or `None` if they do not lie inside one chunk.
    ///
    /// # Safety
    ///
    /// The chunk must be owned by this process (received and not yet returned to the fill
    /// ring) for as long as the borrow lives, so the kernel does not write it meanwhile.
    pub(crate) unsafe fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        if !self.in_one_chunk(addr, len) {
            return None;
        }
        // SAFETY: the range is inside the mapping (checked above) and, per the caller's
        // contract, nothing else writes it while the borrow lives.
        Some(unsafe { std::slice::from_raw_parts(self.base().add(addr as usize), len) })
    }

    /// Mutably borrows `len` bytes at `addr`, or `None` if they do not lie inside one chunk.
    ///
    /// # Safety
    ///
    /// The chunk must be owned by this process (free, not in the tx or fill ring) for as
    /// long as the borrow lives.
    pub(crate) unsafe fn frame_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        if !self.in_one_chunk(addr, len) {
            return None;
        }
        // SAFETY: inside the mapping (checked above); exclusive per the caller's contract and
        // `&mut self`.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base().add(addr as usize), len) })
    }
}

/// The mapped memory of one ring and the pointers into it.
#[derive(Debug)]
struct RingMemory<T> {
    _mapping: Mapping,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    size: u32,
    _marker: PhantomData<T>,
}

// SAFETY: all pointers point into `_mapping`, which this value owns; see `Mapping`.
unsafe impl<T: Send> Send for RingMemory<T> {}

impl<T: Copy> RingMemory<T> {
    fn map(fd: RawFd, pgoff: i64, offsets: &XdpRingOffset, size: u32) -> io::Result<Self> {
        if !size.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring size not a power of 2"));
        }
        let desc_bytes = size as usize * size_of::<T>();
        let len = usize::try_from(offsets.desc)
            .ok()
            .and_then(|d| d.checked_add(desc_bytes))
            .ok_or_else(|| io::Error::other("ring offsets out of range"))?;
        let mapping = Mapping::ring(fd, pgoff, len)?;
        let word = |offset: u64| -> io::Result<NonNull<AtomicU32>> {
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            if offset.checked_add(4).is_none_or(|end| end > len) || offset % 4 != 0 {
                return Err(io::Error::other("ring index offset outside the ring mapping"));
            }
            // SAFETY: `offset + 4 <= len`, so the pointer stays inside the mapping.
            let ptr = unsafe { mapping.as_ptr().add(offset) };
            NonNull::new(ptr.cast::<AtomicU32>()).ok_or_else(|| io::Error::other("null ring"))
        };
        let producer = word(offsets.producer)?;
        let consumer = word(offsets.consumer)?;
        let flags = word(offsets.flags)?;
        let desc_offset = offsets.desc as usize;
        if desc_offset % align_of::<T>() != 0 {
            return Err(io::Error::other("misaligned ring descriptors"));
        }
        // SAFETY: `desc_offset + size * size_of::<T>() == len`, inside the mapping.
        let descs = unsafe { mapping.as_ptr().add(desc_offset) }.cast::<T>();
        let descs = NonNull::new(descs).ok_or_else(|| io::Error::other("null ring"))?;
        Ok(RingMemory {
            _mapping: mapping,
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
            _marker: PhantomData,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points at an aligned u32 inside the live mapping (checked in `map`); the
        // kernel accesses it only atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask < size`, and the array holds `size` descriptors.
        unsafe { self.descs.as_ptr().add((index & self.mask) as usize) }
    }
}

/// A ring this process produces into: fill (chunk addresses) or tx (descriptors).
#[derive(Debug)]
pub(crate) struct ProducerRing<T> {
    memory: RingMemory<T>,
    /// Our next producer index (ahead of the published one until `publish`).
    next: u32,
    /// Last consumer index read from the kernel.
    cached_consumer: u32,
}

impl<T: Copy> ProducerRing<T> {
    pub(crate) fn map(
        fd: RawFd,
        pgoff: i64,
        offsets: &XdpRingOffset,
        size: u32,
    ) -> io::Result<Self> {
        let memory = RingMemory::map(fd, pgoff, offsets, size)?;
        let next = memory.producer().load(Ordering::Relaxed);
        let cached_consumer = memory.consumer().load(Ordering::Acquire);
        Ok(ProducerRing { memory, next, cached_consumer })
    }

    /// Free slots, re-reading the kernel's consumer index only when the cached one shows
    /// the ring full (it can only have moved forward).
    pub(crate) fn free(&mut self) -> u32 {
        let used = self.next.wrapping_sub(self.cached_consumer);
        if used < self.memory.size {
            return self.memory.size - used;
        }
        // Acquire: the kernel finished reading the slots it released.
        self.cached_consumer = self.memory.consumer().load(Ordering::Acquire);
        self.memory.size - self.next.wrapping_sub(self.cached_consumer)
    }

    /// Writes `value` into the next slot (not visible to the kernel before `publish`).
    /// Returns `false` when the ring is full.
    pub(crate) fn push(&mut self, value: T) -> bool {
        if self.free() == 0 {
            return false;
        }
        // SAFETY: the slot is between the kernel's consumer index and our producer index
        // plus one, so the kernel is not reading it; the pointer is in bounds (`slot`).
        unsafe { self.memory.slot(self.next).write(value) };
        self.next = self.next.wrapping_add(1);
        true
    }

    /// Makes every pushed slot visible to the kernel.
    pub(crate) fn publish(&mut self) {
        // Release: the descriptor writes above happen-before the kernel's acquire of this
        // index, so it never reads a half-written slot.
        self.memory.producer().store(self.next, Ordering::Release);
    }

    /// Slots published but not yet consumed by the kernel.
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.cached_consumer = self.memory.consumer().load(Ordering::Acquire);
        self.memory.producer().load(Ordering::Relaxed).wrapping_sub(self.cached_consumer)
    }

    /// Whether the kernel asked to be woken (`XDP_RING_NEED_WAKEUP`).
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.memory.needs_wakeup()
    }
}

/// A ring this process consumes from: rx (descriptors) or completion (chunk addresses).
#[derive(Debug)]
pub(crate) struct ConsumerRing<T> {
    memory: RingMemory<T>,
    /// Our consumer index (ahead of the published one until `release`).
    next: u32,
    /// Last producer index read from the kernel.
    cached_producer: u32,
}

impl<T: Copy> ConsumerRing<T> {
    pub(crate) fn map(
        fd: RawFd,
        pgoff: i64,
        offsets: &XdpRingOffset,
        size: u32,
    ) -> io::Result<Self> {
        let memory = RingMemory::map(fd, pgoff, offsets, size)?;
        let next = memory.consumer().load(Ordering::Relaxed);
        let cached_producer = memory.producer().load(Ordering::Acquire);
        Ok(ConsumerRing { memory, next, cached_producer })
    }

    /// Entries ready to read, refreshing the kernel's producer index when none are cached.
    pub(crate) fn available(&mut self) -> u32 {
        let mut ready = self.cached_producer.wrapping_sub(self.next);
        if ready == 0 {
            // Acquire: the kernel's descriptor writes are visible once we see its index.
            self.cached_producer = self.memory.producer().load(Ordering::Acquire);
            ready = self.cached_producer.wrapping_sub(self.next);
        }
        // A corrupted index must not make us read more than a ring's worth.
        ready.min(self.memory.size)
    }

    /// Reads the next entry; call only when `available()` was non-zero since the last read.
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.cached_producer.wrapping_sub(self.next) == 0 {
            return None;
        }
        // SAFETY: the slot is between our consumer index and the producer index we acquired,
        // so the kernel has finished writing it and will not reuse it before `release`.
        let value = unsafe { self.memory.slot(self.next).read() };
        self.next = self.next.wrapping_add(1);
        Some(value)
    }

    /// Hands every popped slot back to the kernel.
    pub(crate) fn release(&mut self) {
        // Release: our reads of the slots happen-before the kernel may overwrite them.
        self.memory.consumer().store(self.next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umem_borrows_stay_inside_one_chunk() {
        let mut umem = Umem::new(4, 2048).unwrap();
        assert_eq!(umem.len(), 8192);
        assert_eq!(umem.chunk_of(2048 + 300), Some(2048));
        assert_eq!(umem.chunk_of(8192), None);
        // SAFETY: no socket exists, so every chunk is ours.
        unsafe {
            assert!(umem.frame(2048 + 256, 1792).is_some());
            assert!(umem.frame(2048 + 256, 1793).is_none(), "crosses into the next chunk");
            assert!(umem.frame(u64::MAX - 2, 8).is_none());
            let frame = umem.frame_mut(4096, 4).unwrap();
            frame.copy_from_slice(b"abcd");
            assert_eq!(umem.frame(4096, 4).unwrap(), b"abcd");
        }
    }
}
