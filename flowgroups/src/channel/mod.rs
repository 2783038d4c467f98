//! The app channel: how an application process and the kernel instances talk through one
//! shared-memory segment per application (DESIGN.md "Shared memory and trust").
//!
//! # Segment layout
//!
//! Every offset below is computed by [`AppLayout`] from four trusted numbers the control
//! plane chooses when it creates the segment; nothing in the segment itself is trusted by an
//! instance (the copies in the header are only checked once, when the segment is opened).
//!
//! ```text
//! 0                      AppHeader (HEADER_SIZE bytes)
//!                          magic u64 | version u32 | app_id u32 | pid u32 | instances u32
//!                          sockets u32 | ring_slots u32 | socket_buffer u32
//!                          live_instances u32   plane writes the mask of serving instances
//!                          (cache line 1) sleeping u32          app sets 1, instance swaps 0
//!                          (cache line 2) wake_count u64        instances count eventfd writes
//! instance_offset(i)     per instance i: InstanceBlock
//!                          event_seq u64        bumped by instance i on every change it makes
//!                          (cache line 1) instance_sleeping u32   instance sets 1, app swaps 0
//!                          request ring    app -> i   SpscRing<RequestSlot>, ring_slots slots
//!                          completion ring i -> app   SpscRing<CompletionSlot>, ring_slots slots
//! socket_table_offset()  [SocketShared; sockets], 64 bytes each (see [`SocketField`])
//! socket_rx_offset(s)    per socket: rx ByteRing (instance -> app), socket_buffer bytes
//! socket_tx_offset(s)    per socket: tx ByteRing (app -> instance), socket_buffer bytes
//! ```
//!
//! # Who writes what
//!
//! - The app owns slot allocation: it picks a free socket slot and names it in `Listen`,
//!   `Accept` or `Connect`. It must not touch the slot's data rings before the request's
//!   completion arrives, and may reuse a slot only after the `Close` completion(s) arrived.
//! - The instance that binds a slot resets its data rings and state word first.
//! - `state`, `accept_ready`, `owner`, `generation`, `event_seq` and `error` are written by
//!   instances; the app only clears `error` once it reported it (`swap(0)`).
//! - `tx_doorbell` / `rx_doorbell` are handshake words used by both sides (see
//!   [`SocketField`]).
//!
//! Readiness levels are not stored: READABLE and WRITABLE are derived from the data rings
//! (bytes present, space free) plus the sticky state bits, which is what
//! [`client::Client::readiness`] does. This keeps a single writer per word.

pub mod client;
pub mod proto;
pub mod registry;
pub mod server;

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::shm::{
    ByteRing, ByteRingReader, ByteRingWriter, RingConsumer, RingLayout, RingProducer, Segment,
    ShmError, align_up,
};

use self::proto::{CompletionSlot, RequestSlot};

/// Magic at offset 0 of every app segment: "NPAPP" + format version 1.
pub const APP_MAGIC: u64 = 0x4e50_4150_5000_0001;
/// Version of the app segment layout and of the slot formats in [`proto`].
pub const APP_VERSION: u32 = 1;
/// Most kernel instances one netpop runs (the `accept_ready` mask has one bit per instance).
pub const MAX_INSTANCES: u16 = 16;

/// The live-instance mask (bit i: instance i) naming all of `instances`; at most
/// [`MAX_INSTANCES`], 16, so it fits a `u16`.
pub fn all_instances(instances: u16) -> u16 {
    match instances {
        0 => 0,
        n if n >= 16 => u16::MAX,
        n => (1u16 << n) - 1,
    }
}

/// Bytes reserved for the header at the start of the segment.
pub const HEADER_SIZE: usize = 256;
/// Bytes of one socket's entry in the socket table.
pub const SOCKET_ENTRY_SIZE: usize = 64;
/// Bytes of an instance block before its request ring.
const INSTANCE_FLAGS_SIZE: usize = 128;
/// Alignment of every region (two cache lines: what `CachePadded` uses on x86-64).
const REGION_ALIGN: usize = 128;

// Header field offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_APP_ID: usize = 12;
const H_PID: usize = 16;
const H_INSTANCES: usize = 20;
const H_SOCKETS: usize = 24;
const H_RING_SLOTS: usize = 28;
const H_SOCKET_BUFFER: usize = 32;
const H_LIVE_INSTANCES: usize = 36;
const H_SLEEPING: usize = 64;
const H_WAKE_COUNT: usize = 128;

// Instance block field offsets.
const I_EVENT_SEQ: usize = 0;
const I_SLEEPING: usize = 64;

/// Smallest and largest values [`AppLayout::validate`] accepts.
const MIN_RING_SLOTS: u32 = 8;
const MAX_RING_SLOTS: u32 = 1 << 16;
const MIN_SOCKET_BUFFER: u32 = 1 << 10;
const MAX_SOCKET_BUFFER: u32 = 1 << 24;
const MAX_SOCKETS: u32 = 1 << 20;
/// An app segment larger than this is a configuration mistake (it is sparse, but still).
const MAX_SEGMENT_BYTES: usize = 1 << 40;

/// Why a layout or a segment was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChannelError {
    /// A layout number is out of range (the message names which).
    BadLayout(&'static str),
    /// The segment's header does not match what the opener expected.
    BadHeader(&'static str),
    /// The shared-memory layer failed.
    Shm(ShmError),
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::BadLayout(why) => write!(f, "invalid app segment layout: {why}"),
            ChannelError::BadHeader(why) => write!(f, "app segment header mismatch: {why}"),
            ChannelError::Shm(e) => write!(f, "app segment: {e}"),
        }
    }
}

impl std::error::Error for ChannelError {}

impl From<ShmError> for ChannelError {
    fn from(e: ShmError) -> Self {
        ChannelError::Shm(e)
    }
}

/// The four numbers that fix an app segment's layout. The control plane chooses them; every
/// offset is derived from them, so a process that holds a validated copy never needs to
/// trust the segment's own header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppLayout {
    /// Kernel instances (one request and one completion ring each), 1..=[`MAX_INSTANCES`].
    pub instances: u16,
    /// Socket slots, 1..=2^20.
    pub sockets: u32,
    /// Slots of every request and completion ring: a power of two in 8..=65536.
    pub ring_slots: u32,
    /// Bytes of each socket's rx and tx ring: a power of two in 1 KiB..=16 MiB.
    pub socket_buffer: u32,
}

impl AppLayout {
    /// Checks every number and that the whole segment has a sane size.
    pub fn validate(&self) -> Result<(), ChannelError> {
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return Err(ChannelError::BadLayout("instances must be 1..=16"));
        }
        if self.sockets == 0 || self.sockets > MAX_SOCKETS {
            return Err(ChannelError::BadLayout("sockets must be 1..=2^20"));
        }
        if !self.ring_slots.is_power_of_two()
            || !(MIN_RING_SLOTS..=MAX_RING_SLOTS).contains(&self.ring_slots)
        {
            return Err(ChannelError::BadLayout("ring_slots must be a power of two in 8..=65536"));
        }
        if !self.socket_buffer.is_power_of_two()
            || !(MIN_SOCKET_BUFFER..=MAX_SOCKET_BUFFER).contains(&self.socket_buffer)
        {
            return Err(ChannelError::BadLayout(
                "socket_buffer must be a power of two in 1 KiB..=16 MiB",
            ));
        }
        match self.checked_size() {
            Some(n) if n <= MAX_SEGMENT_BYTES => Ok(()),
            _ => Err(ChannelError::BadLayout("segment would be larger than 1 TiB")),
        }
    }

    fn ring_bytes<T>(&self) -> usize {
        RingLayout { capacity: self.ring_slots }.size_for::<T>()
    }

    fn instance_block_size(&self) -> usize {
        align_up(
            INSTANCE_FLAGS_SIZE
                + align_up(self.ring_bytes::<RequestSlot>(), REGION_ALIGN)
                + self.ring_bytes::<CompletionSlot>(),
            REGION_ALIGN,
        )
    }

    fn data_ring_size(&self) -> usize {
        align_up(ByteRing::size_for(self.socket_buffer), REGION_ALIGN)
    }

    fn checked_size(&self) -> Option<usize> {
        let instances = self.instance_block_size().checked_mul(usize::from(self.instances))?;
        let table = SOCKET_ENTRY_SIZE.checked_mul(self.sockets as usize)?;
        let data = self.data_ring_size().checked_mul(2)?.checked_mul(self.sockets as usize)?;
        let table_end = HEADER_SIZE.checked_add(instances)?.checked_add(table)?;
        align_up(table_end, REGION_ALIGN).checked_add(data)
    }

    /// Total bytes of the segment. Only meaningful for a validated layout.
    pub fn size(&self) -> usize {
        self.checked_size().unwrap_or(usize::MAX)
    }

    /// Offset of instance `i`'s block (its event counter and sleeping flag).
    pub fn instance_offset(&self, i: u16) -> usize {
        HEADER_SIZE + usize::from(i) * self.instance_block_size()
    }

    /// Offset of the request ring app -> instance `i`.
    pub fn request_ring_offset(&self, i: u16) -> usize {
        self.instance_offset(i) + INSTANCE_FLAGS_SIZE
    }

    /// Offset of the completion ring instance `i` -> app.
    pub fn completion_ring_offset(&self, i: u16) -> usize {
        self.request_ring_offset(i) + align_up(self.ring_bytes::<RequestSlot>(), REGION_ALIGN)
    }

    /// Offset of the socket table.
    pub fn socket_table_offset(&self) -> usize {
        self.instance_offset(self.instances)
    }

    /// Offset of socket `slot`'s entry in the socket table.
    pub fn socket_entry_offset(&self, slot: u32) -> usize {
        self.socket_table_offset() + slot as usize * SOCKET_ENTRY_SIZE
    }

    fn data_offset(&self) -> usize {
        align_up(
            self.socket_table_offset() + self.sockets as usize * SOCKET_ENTRY_SIZE,
            REGION_ALIGN,
        )
    }

    /// Offset of socket `slot`'s receive ring (instance -> app).
    pub fn socket_rx_offset(&self, slot: u32) -> usize {
        self.data_offset() + slot as usize * 2 * self.data_ring_size()
    }

    /// Offset of socket `slot`'s transmit ring (app -> instance).
    pub fn socket_tx_offset(&self, slot: u32) -> usize {
        self.socket_rx_offset(slot) + self.data_ring_size()
    }
}

/// An application's socket: a slot in its segment's socket table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u32);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket {}", self.0)
    }
}

bitflags::bitflags! {
    /// What a socket is ready for, as `poll` would say it. Only the sticky state bits
    /// (`CONNECTED`, `RDHUP`, `HUP`, `ERR`, `LISTENING`) are stored in the socket table;
    /// READABLE, WRITABLE and ACCEPTABLE are derived from the rings and the accept mask.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Readiness: u32 {
        /// Data (or end of stream, or an error) can be read without blocking.
        const READABLE = 1 << 0;
        /// Data can be written without blocking.
        const WRITABLE = 1 << 1;
        /// Both directions are finished (or the connection was reset).
        const HUP = 1 << 2;
        /// The peer shut down its sending side and every byte before the FIN is in the
        /// receive ring (EPOLLRDHUP).
        const RDHUP = 1 << 3;
        /// The socket has a pending error (see [`SocketField::Error`]).
        const ERR = 1 << 4;
        /// A listener has a connection ready on at least one instance.
        const ACCEPTABLE = 1 << 5;
        /// The handshake completed (stored; a non-blocking connect is done).
        const CONNECTED = 1 << 6;
        /// The slot is a listener (stored by the instances that subscribed it).
        const LISTENING = 1 << 7;
    }
}

/// The 32-bit words of one socket-table entry, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum SocketField {
    /// Sticky [`Readiness`] bits written by the owning instance(s).
    State = 0,
    /// Listener: bit `i` set while instance `i` has a connection in its accept queue.
    AcceptReady = 1,
    /// Index of the instance that serves this connection.
    Owner = 2,
    /// Incremented by the instance every time it binds the slot.
    Generation = 3,
    /// Pending Linux errno (SO_ERROR), 0 for none. The app swaps it to 0 once reported.
    Error = 4,
    /// Incremented by the instance on every change to this socket (data, space, state);
    /// what an edge-triggered poller compares.
    EventSeq = 5,
    /// Tx handshake: the app writes its bytes, then `swap(1)`; only when the old value was
    /// 0 does it send `TxReady`. The instance `swap(0)`s before it drains the ring.
    TxDoorbell = 6,
    /// Rx handshake: the instance sets 1 when it stopped because the rx ring was full; the
    /// app, after reading, `swap(0)`s and sends `RxConsumed` if it was 1.
    RxDoorbell = 7,
}

/// Words of the per-app header the hot paths use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderWord {
    /// 1 while app threads wait (or are about to) on the wake eventfd and no instance has
    /// written it for them yet: the instance that swaps it to 0 writes the eventfd, which
    /// wakes every waiting thread (the client counts them; see `client::wait`).
    Sleeping,
    /// The instances that still serve (bit i: instance i), written by the control plane at
    /// registration and again whenever an instance dies, so that an app that registered
    /// before the death stops sending requests the dead instance would never answer. In
    /// the app's own memory like every other word here: a value the app scribbles only
    /// misleads the app itself (instances never read it).
    LiveInstances,
}

/// One application's segment, mapped, with the validated layout that describes it.
///
/// Cloning is cheap (the mapping is shared); every accessor is bounds-checked against the
/// mapping, so even a layout mistake cannot reach outside it.
#[derive(Clone, Debug)]
pub struct AppSegment {
    seg: Arc<Segment>,
    layout: AppLayout,
}

impl AppSegment {
    /// Creates and initialises a segment for `app_id` (the control plane does this).
    pub fn create(layout: AppLayout, app_id: u32, pid: u32) -> Result<AppSegment, ChannelError> {
        layout.validate()?;
        let seg = Segment::create(&format!("netpop-app-{app_id}"), layout.size())?;
        let app = AppSegment { seg: Arc::new(seg), layout };
        app.u64_at(H_MAGIC)?.store(APP_MAGIC, Ordering::Relaxed);
        for (offset, value) in [
            (H_VERSION, APP_VERSION),
            (H_APP_ID, app_id),
            (H_PID, pid),
            (H_INSTANCES, u32::from(layout.instances)),
            (H_SOCKETS, layout.sockets),
            (H_RING_SLOTS, layout.ring_slots),
            (H_SOCKET_BUFFER, layout.socket_buffer),
        ] {
            app.u32_at(offset)?.store(value, Ordering::Relaxed);
        }
        // Everything else starts zeroed (a fresh memfd): empty rings, free sockets.
        Ok(app)
    }

    /// Maps a segment received as `fd` and checks that its header describes `layout` and,
    /// if given, `app_id`. `layout` comes from a trusted source (the control plane); the
    /// header is only compared with it, never used.
    pub fn open(
        fd: OwnedFd,
        layout: AppLayout,
        app_id: Option<u32>,
    ) -> Result<AppSegment, ChannelError> {
        layout.validate()?;
        let seg = Segment::from_fd(fd)?;
        if seg.len() < layout.size() {
            return Err(ChannelError::BadHeader("segment smaller than its layout"));
        }
        let app = AppSegment { seg: Arc::new(seg), layout };
        app.check_header(app_id)?;
        Ok(app)
    }

    /// Wraps an already mapped segment (for example one shared by two threads of a test).
    pub fn from_segment(
        seg: Arc<Segment>,
        layout: AppLayout,
        app_id: Option<u32>,
    ) -> Result<AppSegment, ChannelError> {
        layout.validate()?;
        if seg.len() < layout.size() {
            return Err(ChannelError::BadHeader("segment smaller than its layout"));
        }
        let app = AppSegment { seg, layout };
        app.check_header(app_id)?;
        Ok(app)
    }

    fn check_header(&self, app_id: Option<u32>) -> Result<(), ChannelError> {
        if self.u64_at(H_MAGIC)?.load(Ordering::Acquire) != APP_MAGIC {
            return Err(ChannelError::BadHeader("magic"));
        }
        if self.u32_at(H_VERSION)?.load(Ordering::Relaxed) != APP_VERSION {
            return Err(ChannelError::BadHeader("version"));
        }
        let l = &self.layout;
        let expected = [
            (H_INSTANCES, u32::from(l.instances), "instances"),
            (H_SOCKETS, l.sockets, "sockets"),
            (H_RING_SLOTS, l.ring_slots, "ring_slots"),
            (H_SOCKET_BUFFER, l.socket_buffer, "socket_buffer"),
        ];
        for (offset, value, what) in expected {
            if self.u32_at(offset)?.load(Ordering::Relaxed) != value {
                return Err(ChannelError::BadHeader(what));
            }
        }
        if let Some(id) = app_id {
            if self.u32_at(H_APP_ID)?.load(Ordering::Relaxed) != id {
                return Err(ChannelError::BadHeader("app_id"));
            }
        }
        Ok(())
    }

    /// The validated layout.
    pub fn layout(&self) -> AppLayout {
        self.layout
    }

    /// The mapping (for passing its fd on).
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The app id written in the header at creation (informational: untrusted).
    pub fn header_app_id(&self) -> Result<u32, ChannelError> {
        Ok(self.u32_at(H_APP_ID)?.load(Ordering::Relaxed))
    }

    fn u32_at(&self, offset: usize) -> Result<&AtomicU32, ShmError> {
        self.seg.get::<AtomicU32>(offset)
    }

    fn u64_at(&self, offset: usize) -> Result<&AtomicU64, ShmError> {
        self.seg.get::<AtomicU64>(offset)
    }

    /// A header word.
    pub fn header_word(&self, word: HeaderWord) -> Result<&AtomicU32, ShmError> {
        match word {
            HeaderWord::Sleeping => self.u32_at(H_SLEEPING),
            HeaderWord::LiveInstances => self.u32_at(H_LIVE_INSTANCES),
        }
    }

    /// Count of eventfd writes by all instances (statistics only).
    pub fn wake_count(&self) -> Result<&AtomicU64, ShmError> {
        self.u64_at(H_WAKE_COUNT)
    }

    /// Instance `i`'s change counter (the app's wait ticket is the sum over instances).
    pub fn event_seq(&self, i: u16) -> Result<&AtomicU64, ChannelError> {
        self.check_instance(i)?;
        Ok(self.u64_at(self.layout.instance_offset(i) + I_EVENT_SEQ)?)
    }

    /// Instance `i`'s "I am about to block, ring my doorbell" flag.
    pub fn instance_sleeping(&self, i: u16) -> Result<&AtomicU32, ChannelError> {
        self.check_instance(i)?;
        Ok(self.u32_at(self.layout.instance_offset(i) + I_SLEEPING)?)
    }

    /// One word of socket `slot`'s table entry.
    pub fn socket_word(&self, slot: u32, field: SocketField) -> Result<&AtomicU32, ChannelError> {
        if slot >= self.layout.sockets {
            return Err(ChannelError::BadLayout("socket slot out of range"));
        }
        let offset = self.layout.socket_entry_offset(slot) + field as usize * 4;
        Ok(self.u32_at(offset)?)
    }

    fn check_instance(&self, i: u16) -> Result<(), ChannelError> {
        if i >= self.layout.instances {
            return Err(ChannelError::BadLayout("instance index out of range"));
        }
        Ok(())
    }

    /// The app's end of the request ring to instance `i`.
    pub fn request_producer(&self, i: u16) -> Result<RingProducer<RequestSlot>, ChannelError> {
        self.check_instance(i)?;
        let offset = self.layout.request_ring_offset(i);
        Ok(RingProducer::attach(self.seg.clone(), offset, self.layout.ring_slots)?)
    }

    /// Instance `i`'s end of its request ring.
    pub fn request_consumer(&self, i: u16) -> Result<RingConsumer<RequestSlot>, ChannelError> {
        self.check_instance(i)?;
        let offset = self.layout.request_ring_offset(i);
        Ok(RingConsumer::attach(self.seg.clone(), offset, self.layout.ring_slots)?)
    }

    /// Instance `i`'s end of its completion ring.
    pub fn completion_producer(
        &self,
        i: u16,
    ) -> Result<RingProducer<CompletionSlot>, ChannelError> {
        self.check_instance(i)?;
        let offset = self.layout.completion_ring_offset(i);
        Ok(RingProducer::attach(self.seg.clone(), offset, self.layout.ring_slots)?)
    }

    /// The app's end of the completion ring from instance `i`.
    pub fn completion_consumer(
        &self,
        i: u16,
    ) -> Result<RingConsumer<CompletionSlot>, ChannelError> {
        self.check_instance(i)?;
        let offset = self.layout.completion_ring_offset(i);
        Ok(RingConsumer::attach(self.seg.clone(), offset, self.layout.ring_slots)?)
    }

    fn check_slot(&self, slot: u32) -> Result<(), ChannelError> {
        if slot >= self.layout.sockets {
            return Err(ChannelError::BadLayout("socket slot out of range"));
        }
        Ok(())
    }

    /// Empties socket `slot`'s two data rings and clears its table entry except the
    /// generation, which is incremented. The binding instance calls this before it
    /// completes the request that names the slot.
    pub fn reset_socket(&self, slot: u32, owner: u16) -> Result<u32, ChannelError> {
        self.check_slot(slot)?;
        ByteRing::init(&self.seg, self.layout.socket_rx_offset(slot))?;
        ByteRing::init(&self.seg, self.layout.socket_tx_offset(slot))?;
        for field in [
            SocketField::State,
            SocketField::AcceptReady,
            SocketField::Error,
            SocketField::TxDoorbell,
            SocketField::RxDoorbell,
        ] {
            self.socket_word(slot, field)?.store(0, Ordering::Relaxed);
        }
        self.socket_word(slot, SocketField::Owner)?.store(u32::from(owner), Ordering::Relaxed);
        let generation =
            self.socket_word(slot, SocketField::Generation)?.fetch_add(1, Ordering::Release);
        Ok(generation.wrapping_add(1))
    }

    /// The instance's end of socket `slot`'s receive ring.
    pub fn rx_writer(&self, slot: u32) -> Result<ByteRingWriter, ChannelError> {
        self.check_slot(slot)?;
        let offset = self.layout.socket_rx_offset(slot);
        Ok(ByteRingWriter::attach(self.seg.clone(), offset, self.layout.socket_buffer)?)
    }

    /// The app's end of socket `slot`'s receive ring.
    pub fn rx_reader(&self, slot: u32) -> Result<ByteRingReader, ChannelError> {
        self.check_slot(slot)?;
        let offset = self.layout.socket_rx_offset(slot);
        Ok(ByteRingReader::attach(self.seg.clone(), offset, self.layout.socket_buffer)?)
    }

    /// The app's end of socket `slot`'s transmit ring.
    pub fn tx_writer(&self, slot: u32) -> Result<ByteRingWriter, ChannelError> {
        self.check_slot(slot)?;
        let offset = self.layout.socket_tx_offset(slot);
        Ok(ByteRingWriter::attach(self.seg.clone(), offset, self.layout.socket_buffer)?)
    }

    /// The instance's end of socket `slot`'s transmit ring.
    pub fn tx_reader(&self, slot: u32) -> Result<ByteRingReader, ChannelError> {
        self.check_slot(slot)?;
        let offset = self.layout.socket_tx_offset(slot);
        Ok(ByteRingReader::attach(self.seg.clone(), offset, self.layout.socket_buffer)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> AppLayout {
        AppLayout { instances: 2, sockets: 8, ring_slots: 16, socket_buffer: 4096 }
    }

    #[test]
    fn layout_rejects_out_of_range_numbers() {
        let ok = small();
        assert!(ok.validate().is_ok());
        for bad in [
            AppLayout { instances: 0, ..ok },
            AppLayout { instances: MAX_INSTANCES + 1, ..ok },
            AppLayout { sockets: 0, ..ok },
            AppLayout { ring_slots: 12, ..ok },
            AppLayout { ring_slots: 4, ..ok },
            AppLayout { socket_buffer: 3000, ..ok },
            AppLayout { socket_buffer: 512, ..ok },
            AppLayout { sockets: MAX_SOCKETS, socket_buffer: MAX_SOCKET_BUFFER, ..ok },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn regions_are_aligned_disjoint_and_inside_the_segment() {
        let l = small();
        let mut regions = vec![(0, HEADER_SIZE)];
        for i in 0..l.instances {
            regions.push((l.instance_offset(i), INSTANCE_FLAGS_SIZE));
            regions.push((l.request_ring_offset(i), l.ring_bytes::<RequestSlot>()));
            regions.push((l.completion_ring_offset(i), l.ring_bytes::<CompletionSlot>()));
        }
        regions.push((l.socket_table_offset(), l.sockets as usize * SOCKET_ENTRY_SIZE));
        for s in 0..l.sockets {
            regions.push((l.socket_rx_offset(s), ByteRing::size_for(l.socket_buffer)));
            regions.push((l.socket_tx_offset(s), ByteRing::size_for(l.socket_buffer)));
        }
        regions.sort();
        for w in regions.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{:?} overlaps {:?}", w[0], w[1]);
        }
        for (offset, _) in &regions {
            assert_eq!(offset % 64, 0, "region at {offset} is not cache-line aligned");
        }
        let (last, len) = regions[regions.len() - 1];
        assert!(last + len <= l.size());
    }

    #[test]
    fn open_checks_the_header_against_the_expected_layout() {
        let l = small();
        let app = AppSegment::create(l, 7, 1234).unwrap();
        let again = AppSegment::from_segment(app.segment().clone(), l, Some(7)).unwrap();
        assert_eq!(again.header_app_id().unwrap(), 7);
        let wrong = AppLayout { sockets: 4, ..l };
        assert!(matches!(
            AppSegment::from_segment(app.segment().clone(), wrong, None),
            Err(ChannelError::BadHeader("sockets"))
        ));
        assert!(matches!(
            AppSegment::from_segment(app.segment().clone(), l, Some(8)),
            Err(ChannelError::BadHeader("app_id"))
        ));
        let bigger = AppLayout { sockets: 64, ..l };
        assert!(AppSegment::from_segment(app.segment().clone(), bigger, None).is_err());
        // A scribbled magic is refused.
        app.u64_at(H_MAGIC).unwrap().store(0, Ordering::Relaxed);
        assert!(matches!(
            AppSegment::from_segment(app.segment().clone(), l, None),
            Err(ChannelError::BadHeader("magic"))
        ));
    }

    #[test]
    fn reset_socket_empties_rings_and_bumps_the_generation() {
        let app = AppSegment::create(small(), 1, 1).unwrap();
        let mut tx = app.tx_writer(3).unwrap();
        assert_eq!(tx.write(b"stale").unwrap(), 5);
        app.socket_word(3, SocketField::State).unwrap().store(0xff, Ordering::Relaxed);
        assert_eq!(app.reset_socket(3, 1).unwrap(), 1);
        assert_eq!(app.reset_socket(3, 1).unwrap(), 2);
        let mut rx = app.tx_reader(3).unwrap();
        assert_eq!(rx.readable().unwrap(), 0);
        assert_eq!(app.socket_word(3, SocketField::State).unwrap().load(Ordering::Relaxed), 0);
        assert_eq!(app.socket_word(3, SocketField::Owner).unwrap().load(Ordering::Relaxed), 1);
        assert!(app.socket_word(8, SocketField::State).is_err());
        assert!(app.rx_writer(8).is_err());
        assert!(app.request_producer(2).is_err());
    }
}
