//! Single-producer/single-consumer ring of fixed-size slots in shared memory.
//!
//! The index protocol is the classic Lamport ring with free-running indices, the same shape
//! as rigtorp's `SPSCQueue` and crossbeam's bounded queue: the consumer owns `head` (next
//! slot to read), the producer owns `tail` (next slot to write); each side keeps a private
//! copy of the *other* index and reloads it only when that copy says the ring is full
//! (producer) or empty (consumer), so the busy path touches one shared cache line.
//!
//! Trust: each side keeps its own index privately and never re-reads it from shared memory
//! after attaching, and keeps the capacity privately too. An index read from the peer is
//! accepted only if it is possible (`head <= tail <= head + capacity`, never moving
//! backwards); otherwise the operation returns [`ShmError::Corrupt`] and touches nothing.
//! Slot positions are `index & mask` with the private mask, so no peer-written value can
//! steer an access outside the ring.

use std::fmt;
use std::marker::PhantomData;
use std::mem::{MaybeUninit, offset_of};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::{Pod, Segment, ShmError, ShmSafe};

/// Shared header at the start of every ring ([`RingProducer`]/[`RingConsumer`] and the
/// byte rings). Head and tail sit on separate cache lines so the two sides do not
/// false-share.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingHeader {
    /// Count of slots (or bytes) consumed since the ring was initialised; written only by
    /// the consumer.
    pub head: CachePadded<AtomicU64>,
    /// Count of slots (or bytes) produced since the ring was initialised; written only by
    /// the producer.
    pub tail: CachePadded<AtomicU64>,
}

const _: () = assert!(offset_of!(RingHeader, head) == 0);
const _: () = assert!(offset_of!(RingHeader, tail) == size_of::<CachePadded<AtomicU64>>());
const _: () = assert!(size_of::<RingHeader>() == 2 * size_of::<CachePadded<AtomicU64>>());
const _: () = assert!(size_of::<RingHeader>() % align_of::<RingHeader>() == 0);
#[cfg(target_arch = "x86_64")]
const _: () = assert!(size_of::<RingHeader>() == 256 && align_of::<RingHeader>() == 128);

// SAFETY: repr(C) pair of CachePadded<AtomicU64>, both ShmSafe; no other fields.
unsafe impl ShmSafe for RingHeader {}

impl RingHeader {
    /// Alignment a ring's offset must have.
    pub const ALIGN: usize = align_of::<RingHeader>();
    /// Size of the header; the slots (or bytes) follow immediately.
    pub const SIZE: usize = size_of::<RingHeader>();
}

/// Geometry of a slot ring: `capacity` slots, a power of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    /// Number of slots; a power of two, at least 1.
    pub capacity: u32,
}

impl RingLayout {
    /// Bytes a ring of `T` slots occupies (header plus slots), saturating at `usize::MAX`
    /// so that an absurd capacity fails the segment's bounds check instead of wrapping.
    pub fn size_for<T>(&self) -> usize {
        (self.capacity as usize)
            .checked_mul(size_of::<T>())
            .and_then(|slots| slots.checked_add(RingHeader::SIZE))
            .unwrap_or(usize::MAX)
    }

    /// Resets the ring at `offset` to empty. Only for a ring that no process is attached
    /// to (a fresh segment is already zero, i.e. empty).
    pub fn init(seg: &Segment, offset: usize) -> Result<(), ShmError> {
        let header = seg.get::<RingHeader>(offset)?;
        // Relaxed: no peer is attached; whoever attaches later learns of the ring through
        // a synchronising channel (fd passing, a control message, process creation).
        header.head.store(0, Ordering::Relaxed);
        header.tail.store(0, Ordering::Relaxed);
        Ok(())
    }
}

/// Checks a head index published by the consumer, as seen by the producer. The consumer
/// may only move forward from where we last saw it, and never past what we produced.
pub(crate) fn check_head(cached_head: u64, new_head: u64, tail: u64) -> Result<(), ShmError> {
    if new_head.wrapping_sub(cached_head) > tail.wrapping_sub(cached_head) {
        return Err(ShmError::Corrupt("consumer's head moved backwards or passed the tail"));
    }
    Ok(())
}

/// Checks a tail index published by the producer, as seen by the consumer. The producer
/// may only move forward from where we last saw it, and never more than one ring ahead of
/// what we consumed.
pub(crate) fn check_tail(
    head: u64,
    cached_tail: u64,
    new_tail: u64,
    capacity: u64,
) -> Result<(), ShmError> {
    let ahead = new_tail.wrapping_sub(head);
    if ahead > capacity {
        return Err(ShmError::Corrupt("producer's tail is more than one ring ahead"));
    }
    if ahead < cached_tail.wrapping_sub(head) {
        return Err(ShmError::Corrupt("producer's tail moved backwards"));
    }
    Ok(())
}

/// A ring's header and data area, bounds-checked once at attach time.
pub(crate) struct RawRing {
    /// Keeps the mapping (and so `header` and `data`) alive.
    seg: Arc<Segment>,
    header: NonNull<RingHeader>,
    /// Start of `capacity * elem_size` bytes inside the mapping.
    data: NonNull<u8>,
    /// Private copy of the capacity (never re-read from shared memory).
    capacity: u64,
}

// SAFETY: the pointers target a mapping kept alive by the owned Arc<Segment>, and all
// shared-memory access through them is either atomic (header) or to ranges owned by this
// ring end under the ring protocol, which does not depend on which thread runs it.
unsafe impl Send for RawRing {}

impl RawRing {
    pub(crate) fn attach(
        seg: Arc<Segment>,
        offset: usize,
        capacity: u32,
        elem_size: usize,
        elem_align: usize,
    ) -> Result<RawRing, ShmError> {
        if capacity == 0 || !capacity.is_power_of_two() {
            return Err(ShmError::BadLayout("ring capacity must be a non-zero power of two"));
        }
        if elem_size == 0 || elem_align > RingHeader::ALIGN {
            return Err(ShmError::BadLayout("ring slot type is zero-sized or over-aligned"));
        }
        let data_len = (capacity as usize)
            .checked_mul(elem_size)
            .ok_or(ShmError::BadLayout("ring too large"))?;
        let header = NonNull::from(seg.get::<RingHeader>(offset)?);
        let data_offset = offset + RingHeader::SIZE;
        let data = seg.region_ptr(data_offset, data_len)?;
        Ok(RawRing { seg, header, data, capacity: u64::from(capacity) })
    }

    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: `header` was obtained from `Segment::get` (in bounds, aligned, ShmSafe) and
        // the mapping lives as long as `self.seg`, which `self` owns.
        unsafe { self.header.as_ref() }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn data(&self) -> NonNull<u8> {
        self.data
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }
}

impl fmt::Debug for RawRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRing")
            .field("data", &self.data)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Where a slot ring lives in a segment; attach exactly one producer and one consumer
/// (normally in two different processes).
pub struct RingHandle<T> {
    seg: Arc<Segment>,
    offset: usize,
    capacity: u32,
    _slot: PhantomData<fn() -> T>,
}

impl<T> Clone for RingHandle<T> {
    fn clone(&self) -> Self {
        RingHandle {
            seg: Arc::clone(&self.seg),
            offset: self.offset,
            capacity: self.capacity,
            _slot: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RingHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHandle")
            .field("offset", &self.offset)
            .field("capacity", &self.capacity)
            .field("slot_size", &size_of::<T>())
            .finish()
    }
}

impl<T: Pod> RingHandle<T> {
    /// Names the ring of `capacity` `T` slots at `offset` in `seg` (checked on attach).
    pub fn new(seg: Arc<Segment>, offset: usize, capacity: u32) -> Self {
        RingHandle { seg, offset, capacity, _slot: PhantomData }
    }

    /// Offset of the ring header in the segment.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Attaches the producing end.
    pub fn producer(&self) -> Result<RingProducer<T>, ShmError> {
        RingProducer::attach(Arc::clone(&self.seg), self.offset, self.capacity)
    }

    /// Attaches the consuming end.
    pub fn consumer(&self) -> Result<RingConsumer<T>, ShmError> {
        RingConsumer::attach(Arc::clone(&self.seg), self.offset, self.capacity)
    }
}

/// The producing end of a slot ring. Not `Sync`: wrap it in a `Mutex` to share.
pub struct RingProducer<T> {
    ring: RawRing,
    /// Next index to write; authoritative (the shared copy is only published).
    tail: u64,
    /// Last head we loaded; `tail - cached_head` over-estimates the fill level.
    cached_head: u64,
    _slot: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for RingProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingProducer")
            .field("ring", &self.ring)
            .field("tail", &self.tail)
            .field("cached_head", &self.cached_head)
            .finish()
    }
}

impl<T: Pod> RingProducer<T> {
    /// Attaches the producer to the ring at `offset` holding `capacity` (a power of two)
    /// slots of `T`. Resumes from the indices in shared memory if they are consistent.
    pub fn attach(seg: Arc<Segment>, offset: usize, capacity: u32) -> Result<Self, ShmError> {
        let ring = RawRing::attach(seg, offset, capacity, size_of::<T>(), align_of::<T>())?;
        let header = ring.header();
        // Acquire pairs with the consumer's Release store of head, so slots it finished
        // reading before that store are ours to overwrite.
        let head = header.head.load(Ordering::Acquire);
        // Relaxed: tail is ours to write; its value is only a starting point, checked below.
        let tail = header.tail.load(Ordering::Relaxed);
        if tail.wrapping_sub(head) > ring.capacity() {
            return Err(ShmError::Corrupt("ring indices are more than one ring apart"));
        }
        Ok(RingProducer { ring, tail, cached_head: head, _slot: PhantomData })
    }

    /// Reloads the consumer's head, validating it.
    fn refresh_head(&mut self) -> Result<(), ShmError> {
        // Acquire pairs with the consumer's Release store in `pop`: its copy out of every
        // slot below the new head happens before our next write into those slots.
        let head = self.ring.header().head.load(Ordering::Acquire);
        check_head(self.cached_head, head, self.tail)?;
        self.cached_head = head;
        Ok(())
    }

    /// Appends `value`. `Ok(false)` if the ring is full; `Err(Corrupt)` if the consumer
    /// published an impossible head.
    pub fn push(&mut self, value: &T) -> Result<bool, ShmError> {
        let capacity = self.ring.capacity();
        if self.tail.wrapping_sub(self.cached_head) >= capacity {
            self.refresh_head()?;
            if self.tail.wrapping_sub(self.cached_head) >= capacity {
                return Ok(false);
            }
        }
        let index = (self.tail & (capacity - 1)) as usize;
        // SAFETY: `index < capacity`, and attach checked that `capacity * size_of::<T>()`
        // bytes from `data` lie in the mapping, which `self.ring` keeps alive. The slot is
        // ours: the consumer released it (head > tail - capacity, loaded with Acquire) and
        // will not read it until we publish the new tail. T: Pod, so a byte copy is a copy.
        unsafe {
            let slot = self.ring.data().as_ptr().add(index * size_of::<T>());
            std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), slot, size_of::<T>());
        }
        self.tail = self.tail.wrapping_add(1);
        // Release pairs with the consumer's Acquire load of tail: the slot bytes written
        // above are visible before the consumer can see the slot as filled.
        self.ring.header().tail.store(self.tail, Ordering::Release);
        Ok(true)
    }

    /// Number of slots that can be pushed right now.
    pub fn free_slots(&mut self) -> Result<u32, ShmError> {
        self.refresh_head()?;
        let used = self.tail.wrapping_sub(self.cached_head);
        // check_head guarantees used <= tail - old head <= capacity, which fits u32.
        Ok(u32::try_from(self.ring.capacity().saturating_sub(used)).unwrap_or(0))
    }

    /// Number of slots in the ring.
    pub fn capacity(&self) -> u32 {
        u32::try_from(self.ring.capacity()).unwrap_or(u32::MAX)
    }

    /// The segment this ring lives in.
    pub fn segment(&self) -> &Arc<Segment> {
        self.ring.segment()
    }
}

/// The consuming end of a slot ring. Not `Sync`: wrap it in a `Mutex` to share.
pub struct RingConsumer<T> {
    ring: RawRing,
    /// Next index to read; authoritative (the shared copy is only published).
    head: u64,
    /// Last tail we loaded; `cached_tail - head` under-estimates the fill level.
    cached_tail: u64,
    _slot: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for RingConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingConsumer")
            .field("ring", &self.ring)
            .field("head", &self.head)
            .field("cached_tail", &self.cached_tail)
            .finish()
    }
}

impl<T: Pod> RingConsumer<T> {
    /// Attaches the consumer to the ring at `offset` holding `capacity` (a power of two)
    /// slots of `T`. Resumes from the indices in shared memory if they are consistent.
    pub fn attach(seg: Arc<Segment>, offset: usize, capacity: u32) -> Result<Self, ShmError> {
        let ring = RawRing::attach(seg, offset, capacity, size_of::<T>(), align_of::<T>())?;
        let header = ring.header();
        // Relaxed: head is ours to write; its value is only a starting point.
        let head = header.head.load(Ordering::Relaxed);
        // Acquire pairs with the producer's Release store of tail (slots below it are full).
        let tail = header.tail.load(Ordering::Acquire);
        check_tail(head, head, tail, ring.capacity())?;
        Ok(RingConsumer { ring, head, cached_tail: tail, _slot: PhantomData })
    }

    /// Reloads the producer's tail, validating it.
    fn refresh_tail(&mut self) -> Result<(), ShmError> {
        // Acquire pairs with the producer's Release store in `push`: the slot bytes it
        // wrote are visible once we see the tail that covers them.
        let tail = self.ring.header().tail.load(Ordering::Acquire);
        check_tail(self.head, self.cached_tail, tail, self.ring.capacity())?;
        self.cached_tail = tail;
        Ok(())
    }

    /// Takes the oldest slot. `Ok(None)` if the ring is empty; `Err(Corrupt)` if the
    /// producer published an impossible tail. The value is whatever bytes the producer
    /// wrote: validate it before use.
    pub fn pop(&mut self) -> Result<Option<T>, ShmError> {
        if self.head == self.cached_tail {
            self.refresh_tail()?;
            if self.head == self.cached_tail {
                return Ok(None);
            }
        }
        let capacity = self.ring.capacity();
        let index = (self.head & (capacity - 1)) as usize;
        let mut value = MaybeUninit::<T>::uninit();
        // SAFETY: `index < capacity` and attach bounds-checked the whole data area, kept
        // mapped by `self.ring`. The slot is ours: the producer published it (tail loaded
        // with Acquire covers it) and will not rewrite it until we publish a head past it.
        // T: Pod, so any bytes form a valid T.
        let value = unsafe {
            let slot = self.ring.data().as_ptr().add(index * size_of::<T>());
            std::ptr::copy_nonoverlapping(slot, value.as_mut_ptr().cast::<u8>(), size_of::<T>());
            value.assume_init()
        };
        self.head = self.head.wrapping_add(1);
        // Release pairs with the producer's Acquire load of head: our copy out of the slot
        // completes before the producer can reuse it.
        self.ring.header().head.store(self.head, Ordering::Release);
        Ok(Some(value))
    }

    /// Number of slots waiting to be popped.
    pub fn len(&mut self) -> Result<u32, ShmError> {
        self.refresh_tail()?;
        // check_tail guarantees cached_tail - head <= capacity, which fits u32.
        Ok(u32::try_from(self.cached_tail.wrapping_sub(self.head)).unwrap_or(u32::MAX))
    }

    /// True if nothing is waiting to be popped.
    pub fn is_empty(&mut self) -> Result<bool, ShmError> {
        Ok(self.len()? == 0)
    }

    /// Number of slots in the ring.
    pub fn capacity(&self) -> u32 {
        u32::try_from(self.ring.capacity()).unwrap_or(u32::MAX)
    }

    /// The segment this ring lives in.
    pub fn segment(&self) -> &Arc<Segment> {
        self.ring.segment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(C)]
    struct Slot {
        seq: u64,
        check: u64,
    }
    // SAFETY: repr(C), two u64 fields, no padding; any bits are a valid Slot.
    unsafe impl Pod for Slot {}
    const _: () = assert!(size_of::<Slot>() == 16);

    fn slot(seq: u64) -> Slot {
        Slot { seq, check: !seq }
    }

    fn ring(capacity: u32) -> (RingProducer<Slot>, RingConsumer<Slot>, Arc<Segment>) {
        let layout = RingLayout { capacity };
        let seg = Arc::new(Segment::create("t-ring", layout.size_for::<Slot>()).unwrap());
        let handle = RingHandle::<Slot>::new(Arc::clone(&seg), 0, capacity);
        (handle.producer().unwrap(), handle.consumer().unwrap(), seg)
    }

    #[test]
    fn fifo_full_and_empty() {
        let (mut p, mut c, _seg) = ring(4);
        assert_eq!(c.pop().unwrap(), None);
        assert_eq!(p.free_slots().unwrap(), 4);
        for i in 0..4 {
            assert!(p.push(&slot(i)).unwrap());
        }
        assert!(!p.push(&slot(99)).unwrap(), "a full ring refuses the push");
        assert_eq!(p.free_slots().unwrap(), 0);
        assert_eq!(c.len().unwrap(), 4);
        for i in 0..4 {
            assert_eq!(c.pop().unwrap(), Some(slot(i)));
        }
        assert_eq!(c.pop().unwrap(), None);
        assert!(c.is_empty().unwrap());
    }

    #[test]
    fn wraps_around_many_times() {
        let (mut p, mut c, _seg) = ring(8);
        let mut next_out = 0;
        for i in 0..1000u64 {
            assert!(p.push(&slot(i)).unwrap());
            if i % 3 != 0 {
                assert_eq!(c.pop().unwrap(), Some(slot(next_out)));
                next_out += 1;
            }
            while p.free_slots().unwrap() == 0 {
                assert_eq!(c.pop().unwrap(), Some(slot(next_out)));
                next_out += 1;
            }
        }
        while let Some(s) = c.pop().unwrap() {
            assert_eq!(s, slot(next_out));
            next_out += 1;
        }
        assert_eq!(next_out, 1000);
    }

    #[test]
    fn indices_near_u64_wrap_still_work() {
        let layout = RingLayout { capacity: 4 };
        let seg = Arc::new(Segment::create("t-wrap", layout.size_for::<Slot>()).unwrap());
        let header = seg.get::<RingHeader>(0).unwrap();
        header.head.store(u64::MAX - 1, Ordering::Relaxed);
        header.tail.store(u64::MAX - 1, Ordering::Relaxed);
        let mut p = RingProducer::<Slot>::attach(Arc::clone(&seg), 0, 4).unwrap();
        let mut c = RingConsumer::<Slot>::attach(Arc::clone(&seg), 0, 4).unwrap();
        for round in 0..3u64 {
            for i in 0..4 {
                assert!(p.push(&slot(round * 10 + i)).unwrap());
            }
            for i in 0..4 {
                assert_eq!(c.pop().unwrap(), Some(slot(round * 10 + i)));
            }
        }
    }

    #[test]
    fn attach_rejects_bad_geometry() {
        let seg = Arc::new(Segment::create("t-geom", 4096).unwrap());
        let attach = |off, cap| RingProducer::<Slot>::attach(Arc::clone(&seg), off, cap);
        assert!(matches!(attach(0, 3), Err(ShmError::BadLayout(_))));
        assert!(matches!(attach(0, 0), Err(ShmError::BadLayout(_))));
        assert!(matches!(attach(64, 4), Err(ShmError::Misaligned { .. })));
        // 256 header + 256 * 16 bytes does not fit in 4096.
        assert!(matches!(attach(0, 256), Err(ShmError::OutOfBounds { .. })));
        assert!(matches!(attach(0, 1 << 31), Err(ShmError::OutOfBounds { .. })));
        assert!(attach(0, 128).is_ok());
        let zst = RingProducer::<[u8; 0]>::attach(Arc::clone(&seg), 0, 4);
        assert!(matches!(zst, Err(ShmError::BadLayout(_))));
    }

    #[test]
    fn attach_rejects_inconsistent_indices() {
        let seg = Arc::new(
            Segment::create("t-attach", RingLayout { capacity: 4 }.size_for::<Slot>()).unwrap(),
        );
        let header = seg.get::<RingHeader>(0).unwrap();
        header.tail.store(5, Ordering::Relaxed);
        assert!(matches!(
            RingProducer::<Slot>::attach(Arc::clone(&seg), 0, 4),
            Err(ShmError::Corrupt(_))
        ));
        assert!(matches!(
            RingConsumer::<Slot>::attach(Arc::clone(&seg), 0, 4),
            Err(ShmError::Corrupt(_))
        ));
        header.head.store(1, Ordering::Relaxed);
        assert!(RingConsumer::<Slot>::attach(Arc::clone(&seg), 0, 4).is_ok());
    }

    #[test]
    fn consumer_head_backwards_or_past_tail_is_corrupt() {
        let (mut p, mut c, seg) = ring(4);
        let header = seg.get::<RingHeader>(0).unwrap();
        for i in 0..4 {
            p.push(&slot(i)).unwrap();
        }
        c.pop().unwrap();
        c.pop().unwrap();
        // Hostile consumer claims to have consumed more than was produced.
        header.head.store(9, Ordering::Relaxed);
        assert!(matches!(p.free_slots(), Err(ShmError::Corrupt(_))));
        // Make the producer see head = 2, then move it backwards.
        header.head.store(2, Ordering::Relaxed);
        assert_eq!(p.free_slots().unwrap(), 2);
        header.head.store(1, Ordering::Relaxed);
        assert!(matches!(p.free_slots(), Err(ShmError::Corrupt(_))));
    }

    #[test]
    fn producer_tail_impossible_is_corrupt() {
        let (mut p, mut c, seg) = ring(4);
        let header = seg.get::<RingHeader>(0).unwrap();
        p.push(&slot(0)).unwrap();
        p.push(&slot(1)).unwrap();
        header.tail.store(100, Ordering::Relaxed);
        assert!(matches!(c.pop(), Err(ShmError::Corrupt(_))));
        header.tail.store(2, Ordering::Relaxed);
        assert_eq!(c.pop().unwrap(), Some(slot(0)));
        assert_eq!(c.len().unwrap(), 1);
        header.tail.store(1, Ordering::Relaxed);
        assert!(matches!(c.len(), Err(ShmError::Corrupt(_))));
    }

    #[test]
    fn producer_ignores_a_rewritten_shared_tail() {
        let (mut p, mut c, seg) = ring(4);
        p.push(&slot(0)).unwrap();
        // A hostile consumer rewrites the producer's tail; the producer keeps its own.
        seg.get::<RingHeader>(0).unwrap().tail.store(0, Ordering::Relaxed);
        p.push(&slot(1)).unwrap();
        assert_eq!(c.pop().unwrap(), Some(slot(0)));
        assert_eq!(c.pop().unwrap(), Some(slot(1)));
    }

    #[test]
    fn two_threads_transfer_in_order() {
        let count: u64 = if cfg!(miri) { 200 } else { 200_000 };
        let (mut p, mut c, _seg) = ring(16);
        let producer = std::thread::spawn(move || {
            for i in 0..count {
                while !p.push(&slot(i)).unwrap() {
                    std::thread::yield_now();
                }
            }
        });
        let mut expect = 0;
        while expect < count {
            match c.pop().unwrap() {
                Some(s) => {
                    assert_eq!(s, slot(expect));
                    expect += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pop().unwrap(), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push,
        Pop,
        ScribbleHead(u64),
        ScribbleTail(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let near = prop_oneof![0u64..40, any::<u64>(), (u64::MAX - 40)..=u64::MAX];
        prop_oneof![
            4 => Just(Op::Push),
            4 => Just(Op::Pop),
            1 => near.clone().prop_map(Op::ScribbleHead),
            1 => near.prop_map(Op::ScribbleTail),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, ..ProptestConfig::default() })]

        /// With honest peers the ring behaves like a bounded FIFO.
        #[test]
        fn matches_a_bounded_queue(ops in proptest::collection::vec(prop_oneof![Just(true), Just(false)], 0..300), cap_log in 0u32..5) {
            let capacity = 1u32 << cap_log;
            let (mut p, mut c, _seg) = ring(capacity);
            let mut model = VecDeque::new();
            let mut next = 0u64;
            for push in ops {
                if push {
                    let pushed = p.push(&slot(next)).unwrap();
                    prop_assert_eq!(pushed, model.len() < capacity as usize);
                    if pushed { model.push_back(next); }
                    next += 1;
                } else {
                    prop_assert_eq!(c.pop().unwrap(), model.pop_front().map(slot));
                }
            }
        }

        /// A peer scribbling on the shared indices makes operations fail with Corrupt or
        /// return slot data, but never panics or touches memory outside the ring. The
        /// ring sits at the very end of its segment (page aligned), so a read or write past
        /// it faults, and a canary before it catches writes below it.
        #[test]
        fn hostile_indices_never_escape_the_ring(ops in proptest::collection::vec(op(), 0..200)) {
            let capacity = 8u32;
            let layout = RingLayout { capacity };
            let ring_len = layout.size_for::<Slot>();
            let seg_len = 8192;
            let offset = seg_len - ring_len;
            let seg = Arc::new(Segment::create("t-hostile", seg_len).unwrap());
            let canary = seg.get_slice::<AtomicU64>(0, offset / 8).unwrap();
            for w in canary { w.store(0x5a5a_5a5a_5a5a_5a5a, Ordering::Relaxed); }
            let header = seg.get::<RingHeader>(offset).unwrap();
            let mut p = RingProducer::<Slot>::attach(Arc::clone(&seg), offset, capacity).unwrap();
            let mut c = RingConsumer::<Slot>::attach(Arc::clone(&seg), offset, capacity).unwrap();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Push => { let _ = p.push(&slot(next)); next += 1; }
                    Op::Pop => {
                        if let Ok(Some(s)) = c.pop() {
                            // Bytes in the ring are only ever slots we pushed (or zero).
                            let zero = Slot { seq: 0, check: 0 };
                            prop_assert!(s == zero || (s.check == !s.seq && s.seq < next), "unexpected slot {:?}", s);
                        }
                    }
                    Op::ScribbleHead(v) => header.head.store(v, Ordering::Relaxed),
                    Op::ScribbleTail(v) => header.tail.store(v, Ordering::Relaxed),
                }
                if let Ok(free) = p.free_slots() { prop_assert!(free <= capacity); }
                if let Ok(len) = c.len() { prop_assert!(len <= capacity); }
            }
            prop_assert!(canary.iter().all(|w| w.load(Ordering::Relaxed) == 0x5a5a_5a5a_5a5a_5a5a));
        }
    }
}
