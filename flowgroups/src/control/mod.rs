//! The control segment: the one shared-memory segment per netpop that the control plane
//! and every kernel instance map (DESIGN.md "Processes", "Shared memory and trust",
//! "Flow-group balancing").
//!
//! Layout, in order, each part aligned for its type (offsets from [`ControlLayout`]):
//!
//! 1. [`ControlHeader`]: magic, layout version, the layout's parameters, plane state;
//! 2. [`ControlConfig`]: interface configuration, written once before the segment is shared;
//! 3. flow-group table: `[FlowGroupShared; groups]`;
//! 4. instance blocks: `[InstanceShared; instances]`;
//! 5. listener table: `[ListenerShared; listeners]`;
//! 6. control rings: for each instance `i`, plane → `i` then `i` → plane, of [`ControlSlot`];
//! 7. forwarding rings: for each ordered pair of distinct instances, of [`FrameSlot`].
//!
//! The segment is not shared with applications. Instances are trusted not to be hostile
//! but may be buggy or die mid-write, so whoever opens a segment checks that its header
//! describes a layout that fits, and every ring index and message is validated as usual.

pub mod message;

use std::fmt;
use std::mem::offset_of;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub use message::{ControlMessage, ControlSlot, DecodeError, FRAME_SLOT_DATA, FrameSlot};

use crate::shm::{
    Pod, RingHandle, RingHeader, RingLayout, Segment, ShmError, ShmSafe, checked_align_up,
};

/// Most kernel instances one netpop runs (82599 RSS reaches queues 0-15).
pub const MAX_INSTANCES: usize = 16;
/// Most flow groups (Flow Director or software steering; RETA alone gives 128).
pub const MAX_GROUPS: u32 = 4096;
/// Most listening ports at once.
pub const MAX_LISTENERS: u32 = 1024;
/// Most slots in one control or forwarding ring.
pub const MAX_RING_SLOTS: u32 = 1 << 16;
/// "NETPOP" followed by 0x0001.
pub const CONTROL_MAGIC: u64 = 0x4e45_5450_4f50_0001;
/// Version of the layout described in this module.
pub const CONTROL_VERSION: u32 = 1;
/// Default slots per control ring.
pub const CONTROL_RING_SLOTS: u32 = 256;
/// Default slots per forwarding ring (2 KiB each).
pub const FORWARD_RING_SLOTS: u32 = 128;

/// Segment header. All fields but `state` and `pid_plane` are written once by
/// [`ControlSegment::create`], `magic` last.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ControlHeader {
    /// [`CONTROL_MAGIC`].
    pub magic: AtomicU64,
    /// [`CONTROL_VERSION`].
    pub version: AtomicU32,
    /// Number of kernel instances.
    pub instances: AtomicU32,
    /// Number of flow groups.
    pub groups: AtomicU32,
    /// Number of listener entries.
    pub listeners: AtomicU32,
    /// Slots per control ring.
    pub control_slots: AtomicU32,
    /// Slots per forwarding ring.
    pub forward_slots: AtomicU32,
    /// A [`SegmentState`] value.
    pub state: AtomicU32,
    /// Process id of the control plane.
    pub pid_plane: AtomicU32,
    /// Bumped by the plane whenever it changes a flow group's owner.
    pub owner_epoch: AtomicU64,
    reserved: [AtomicU64; 2],
}

const _: () = assert!(size_of::<ControlHeader>() == 64);
const _: () = assert!(offset_of!(ControlHeader, version) == 8);
const _: () = assert!(offset_of!(ControlHeader, forward_slots) == 28);
const _: () = assert!(offset_of!(ControlHeader, state) == 32);
const _: () = assert!(offset_of!(ControlHeader, owner_epoch) == 40);

// SAFETY: repr(C) struct of atomics only (no padding: the asserts cover all 64 bytes).
unsafe impl ShmSafe for ControlHeader {}

/// Interface configuration, copied into the segment at creation and never changed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// Our IPv4 address.
    pub ip: [u8; 4],
    /// Default gateway (0.0.0.0: none).
    pub gateway: [u8; 4],
    /// Our MAC address.
    pub mac: [u8; 6],
    /// Interface MTU.
    pub mtu: u16,
    /// Prefix length of our subnet.
    pub prefix_len: u8,
    /// Balancer policy code (0 off, 1 idle, 2 live); decoded by the plane.
    pub balancer_policy: u8,
    /// Steering code (0 RETA, 1 Flow Director, 2 software); decoded by the instances.
    pub steering: u8,
    /// Must be zero.
    pub reserved: [u8; 5],
    /// Toeplitz key shared with the NIC.
    pub rss_key: [u8; 40],
}

const _: () = assert!(size_of::<ControlConfig>() == 64);
const _: () = assert!(offset_of!(ControlConfig, mtu) == 14);
const _: () = assert!(offset_of!(ControlConfig, reserved) == 19);
const _: () = assert!(offset_of!(ControlConfig, rss_key) == 24);

// SAFETY: repr(C), bytes and one aligned u16, no padding (asserts cover all 64 bytes).
unsafe impl Pod for ControlConfig {}

impl Default for ControlConfig {
    /// All zero: no address, no gateway, MTU 0; fill in what the interface has.
    fn default() -> Self {
        ControlConfig {
            ip: [0; 4],
            gateway: [0; 4],
            mac: [0; 6],
            mtu: 0,
            prefix_len: 0,
            balancer_policy: 0,
            steering: 0,
            reserved: [0; 5],
            rss_key: [0; 40],
        }
    }
}

/// Per-flow-group state and counters, one cache line each so that groups owned by
/// different instances do not false-share.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct FlowGroupShared {
    /// Owning instance (written by the plane).
    pub owner: AtomicU32,
    /// A [`GroupState`] value.
    pub state: AtomicU32,
    /// Connections in any state, TIME-WAIT included (written by the owner).
    pub connections: AtomicU32,
    reserved0: AtomicU32,
    /// Packets received (written by the owner).
    pub packets: AtomicU64,
    /// SYNs received (written by the owner).
    pub syns: AtomicU64,
    /// Times this group moved (written by the plane).
    pub moves: AtomicU64,
    reserved: [AtomicU64; 3],
}

const _: () = assert!(size_of::<FlowGroupShared>() == 64);
const _: () = assert!(offset_of!(FlowGroupShared, packets) == 16);
const _: () = assert!(offset_of!(FlowGroupShared, moves) == 32);

// SAFETY: repr(C) struct of atomics only, no padding (asserts cover all 64 bytes).
unsafe impl ShmSafe for FlowGroupShared {}

/// Per-instance state and counters (written by the instance unless noted), two cache lines.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct InstanceShared {
    /// Process id (written by the plane after fork).
    pub pid: AtomicU32,
    /// An [`InstanceState`] value.
    pub state: AtomicU32,
    /// CLOCK_MONOTONIC nanoseconds of the last loop iteration.
    pub heartbeat_ns: AtomicU64,
    /// Share of the last interval spent working, in parts per million.
    pub busy_ppm: AtomicU32,
    reserved0: AtomicU32,
    /// Frames received.
    pub rx_packets: AtomicU64,
    /// Frames transmitted.
    pub tx_packets: AtomicU64,
    /// Frames dropped on receive.
    pub rx_dropped: AtomicU64,
    /// Frames dropped on transmit.
    pub tx_dropped: AtomicU64,
    /// Connections currently established.
    pub connections_established: AtomicU64,
    /// Connections ever created.
    pub connections_total: AtomicU64,
    /// Connections handed to applications.
    pub accepts: AtomicU64,
    /// Messages sent to other instances.
    pub cross_instance_msgs: AtomicU64,
    /// Frames forwarded to their group's owner.
    pub forwarded_packets: AtomicU64,
    /// Flow groups imported.
    pub moves_in: AtomicU64,
    /// Flow groups exported.
    pub moves_out: AtomicU64,
    /// Application requests served.
    pub app_requests: AtomicU64,
    /// Times the loop went to sleep for lack of work.
    pub idle_sleeps: AtomicU64,
}

const _: () = assert!(size_of::<InstanceShared>() == 128);
const _: () = assert!(offset_of!(InstanceShared, rx_packets) == 24);
const _: () = assert!(offset_of!(InstanceShared, idle_sleeps) == 120);

// SAFETY: repr(C) struct of atomics only, no padding (asserts cover all 128 bytes).
unsafe impl ShmSafe for InstanceShared {}

/// A global listener: its port and, per instance, the number of connections ready to be
/// accepted there.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ListenerShared {
    /// Listening port; 0 means the entry is free.
    pub port: AtomicU32,
    /// Ready connections per instance (written by that instance).
    pub ready: [AtomicU32; MAX_INSTANCES],
    reserved: [AtomicU32; 15],
}

const _: () = assert!(size_of::<ListenerShared>() == 128);
const _: () = assert!(offset_of!(ListenerShared, ready) == 4);

// SAFETY: repr(C) struct of atomics and atomic arrays only, no padding (asserts).
unsafe impl ShmSafe for ListenerShared {}

macro_rules! u32_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name { $($(#[$vdoc])* $variant = $value),* }

        impl $name {
            /// Decodes a value read from shared memory; `None` if it names no state.
            pub fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

u32_state!(
    /// Life cycle of the whole netpop ([`ControlHeader::state`]).
    SegmentState { /// Instances are being started.
    Starting = 0, /// Serving.
    Up = 1, /// Shutting down.
    Stopping = 2 }
);
u32_state!(
    /// Life cycle of one instance ([`InstanceShared::state`]).
    InstanceState { /// Not started (zeroed block).
    Absent = 0, /// Forked, initialising.
    Starting = 1, /// Serving its groups.
    Running = 2, /// Shutting down.
    Stopping = 3, /// Died; its groups are being reassigned.
    Dead = 4 }
);
u32_state!(
    /// Balancing state of one flow group ([`FlowGroupShared::state`]).
    GroupState { /// Served by its owner.
    Active = 0, /// Its owner stopped serving it and is exporting it.
    Frozen = 1, /// Steering points at the new owner, which is importing it.
    Moving = 2 }
);

/// Where everything lives in a control segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlLayout {
    instances: u16,
    groups: u32,
    listeners: u32,
    control_slots: u32,
    forward_slots: u32,
    groups_offset: usize,
    instances_offset: usize,
    listeners_offset: usize,
    control_rings_offset: usize,
    control_ring_size: usize,
    forward_rings_offset: usize,
    forward_ring_size: usize,
    total_len: usize,
}

const CONFIG_OFFSET: usize = size_of::<ControlHeader>();

fn ring_slots_ok(slots: u32) -> bool {
    slots.is_power_of_two() && slots <= MAX_RING_SLOTS
}

impl ControlLayout {
    /// A layout with the default ring sizes. `instances` in 1..=16, `groups` a power of two
    /// in 1..=4096, `listeners` in 1..=1024.
    pub fn new(instances: u16, groups: u32, listeners: u32) -> Result<ControlLayout, ShmError> {
        Self::with_ring_slots(instances, groups, listeners, CONTROL_RING_SLOTS, FORWARD_RING_SLOTS)
    }

    /// A layout with explicit ring sizes (powers of two up to [`MAX_RING_SLOTS`]).
    pub fn with_ring_slots(
        instances: u16,
        groups: u32,
        listeners: u32,
        control_slots: u32,
        forward_slots: u32,
    ) -> Result<ControlLayout, ShmError> {
        if instances == 0 || usize::from(instances) > MAX_INSTANCES {
            return Err(ShmError::BadLayout("instance count must be 1..=16"));
        }
        if !groups.is_power_of_two() || groups > MAX_GROUPS {
            return Err(ShmError::BadLayout("flow-group count must be a power of two up to 4096"));
        }
        if listeners == 0 || listeners > MAX_LISTENERS {
            return Err(ShmError::BadLayout("listener count must be 1..=1024"));
        }
        if !ring_slots_ok(control_slots) || !ring_slots_ok(forward_slots) {
            return Err(ShmError::BadLayout("ring slots must be a power of two up to 65536"));
        }
        let n = usize::from(instances);
        // Every count is bounded above, so none of these sums comes near overflow; checked
        // arithmetic keeps that true if the bounds are ever raised.
        let too_large = || ShmError::BadLayout("control layout too large");
        // (start, end) of `count` items of `size` bytes placed at the first `align`ed
        // offset at or after `offset`.
        let after = |offset: usize, count: usize, size: usize, align: usize| {
            let start = checked_align_up(offset, align).ok_or_else(too_large)?;
            let end = count.checked_mul(size).and_then(|len| start.checked_add(len));
            end.map(|end| (start, end)).ok_or_else(too_large)
        };
        let config_end = CONFIG_OFFSET + size_of::<ControlConfig>();
        let (groups_offset, end) = after(
            config_end,
            groups as usize,
            size_of::<FlowGroupShared>(),
            align_of::<FlowGroupShared>(),
        )?;
        let (instances_offset, end) =
            after(end, n, size_of::<InstanceShared>(), align_of::<InstanceShared>())?;
        let (listeners_offset, end) = after(
            end,
            listeners as usize,
            size_of::<ListenerShared>(),
            align_of::<ListenerShared>(),
        )?;
        let control_ring_size = checked_align_up(
            RingLayout { capacity: control_slots }.size_for::<ControlSlot>(),
            RingHeader::ALIGN,
        )
        .ok_or_else(too_large)?;
        let (control_rings_offset, end) = after(end, 2 * n, control_ring_size, RingHeader::ALIGN)?;
        let forward_ring_size = checked_align_up(
            RingLayout { capacity: forward_slots }.size_for::<FrameSlot>(),
            RingHeader::ALIGN,
        )
        .ok_or_else(too_large)?;
        let (forward_rings_offset, end) =
            after(end, n * (n - 1), forward_ring_size, RingHeader::ALIGN)?;
        let total_len = checked_align_up(end, 4096).ok_or_else(too_large)?;
        Ok(ControlLayout {
            instances,
            groups,
            listeners,
            control_slots,
            forward_slots,
            groups_offset,
            instances_offset,
            listeners_offset,
            control_rings_offset,
            control_ring_size,
            forward_rings_offset,
            forward_ring_size,
            total_len,
        })
    }

    /// Number of kernel instances.
    pub fn instances(&self) -> u16 {
        self.instances
    }

    /// Number of flow groups.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// Number of listener entries.
    pub fn listeners(&self) -> u32 {
        self.listeners
    }

    /// Slots per control ring.
    pub fn control_slots(&self) -> u32 {
        self.control_slots
    }

    /// Slots per forwarding ring.
    pub fn forward_slots(&self) -> u32 {
        self.forward_slots
    }

    /// Bytes the segment needs (a multiple of the page size).
    pub fn total_len(&self) -> usize {
        self.total_len
    }

    fn check_instance(&self, i: u16) -> Result<usize, ShmError> {
        if i < self.instances {
            Ok(usize::from(i))
        } else {
            Err(ShmError::BadLayout("no such instance"))
        }
    }

    /// Offset of the control ring from the plane to instance `i`.
    pub fn plane_to_instance_offset(&self, i: u16) -> Result<usize, ShmError> {
        let i = self.check_instance(i)?;
        Ok(self.control_rings_offset + 2 * i * self.control_ring_size)
    }

    /// Offset of the control ring from instance `i` to the plane.
    pub fn instance_to_plane_offset(&self, i: u16) -> Result<usize, ShmError> {
        let i = self.check_instance(i)?;
        Ok(self.control_rings_offset + (2 * i + 1) * self.control_ring_size)
    }

    /// Offset of the forwarding ring from instance `from` to instance `to` (distinct).
    pub fn forwarding_offset(&self, from: u16, to: u16) -> Result<usize, ShmError> {
        let (f, t) = (self.check_instance(from)?, self.check_instance(to)?);
        if f == t {
            return Err(ShmError::BadLayout("an instance has no forwarding ring to itself"));
        }
        let peers = usize::from(self.instances) - 1;
        let index = f * peers + if t < f { t } else { t - 1 };
        Ok(self.forward_rings_offset + index * self.forward_ring_size)
    }
}

/// A mapped control segment with its validated layout.
pub struct ControlSegment {
    seg: Arc<Segment>,
    layout: ControlLayout,
    config: ControlConfig,
}

impl fmt::Debug for ControlSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlSegment")
            .field("seg", &self.seg)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl ControlSegment {
    /// Creates the segment: header, configuration, every flow group owned round-robin
    /// (`group % instances`, the 82599 RETA default) and `Active`, everything else zero.
    /// State is [`SegmentState::Starting`]; the plane sets `Up` when instances run.
    pub fn create(
        name: &str,
        layout: ControlLayout,
        config: &ControlConfig,
    ) -> Result<ControlSegment, ShmError> {
        let seg = Arc::new(Segment::create(name, layout.total_len)?);
        // SAFETY: the segment was created just now and is not yet shared with anyone.
        unsafe { seg.write(CONFIG_OFFSET, config)? };
        let header = seg.get::<ControlHeader>(0)?;
        header.version.store(CONTROL_VERSION, Ordering::Relaxed);
        header.instances.store(u32::from(layout.instances), Ordering::Relaxed);
        header.groups.store(layout.groups, Ordering::Relaxed);
        header.listeners.store(layout.listeners, Ordering::Relaxed);
        header.control_slots.store(layout.control_slots, Ordering::Relaxed);
        header.forward_slots.store(layout.forward_slots, Ordering::Relaxed);
        header.state.store(SegmentState::Starting as u32, Ordering::Relaxed);
        header.pid_plane.store(std::process::id(), Ordering::Relaxed);
        let segment = ControlSegment { seg: Arc::clone(&seg), layout, config: *config };
        let instances = u32::from(layout.instances);
        for (g, group) in (0u32..).zip(segment.flow_groups()) {
            group.owner.store(g % instances, Ordering::Relaxed);
        }
        // Release pairs with the Acquire load in `from_segment`: a process that sees the
        // magic in this mapping also sees everything written above. (Across processes the
        // fd's hand-over already orders it; this covers threads sharing the mapping.)
        header.magic.store(CONTROL_MAGIC, Ordering::Release);
        Ok(segment)
    }

    /// Maps a control segment from its fd and validates it.
    pub fn open(fd: OwnedFd) -> Result<ControlSegment, ShmError> {
        Self::from_segment(Arc::new(Segment::from_fd(fd)?))
    }

    /// Validates an already mapped control segment (e.g. inherited across fork): magic,
    /// version, a header that describes a valid layout, and a segment large enough for it.
    pub fn from_segment(seg: Arc<Segment>) -> Result<ControlSegment, ShmError> {
        let header = seg.get::<ControlHeader>(0)?;
        // Acquire pairs with the Release store of the magic in `create`.
        let magic = header.magic.load(Ordering::Acquire);
        if magic != CONTROL_MAGIC {
            return Err(ShmError::BadMagic { found: magic });
        }
        let version = header.version.load(Ordering::Relaxed);
        if version != CONTROL_VERSION {
            return Err(ShmError::VersionMismatch { found: version, expected: CONTROL_VERSION });
        }
        let instances = u16::try_from(header.instances.load(Ordering::Relaxed))
            .map_err(|_| ShmError::Corrupt("control header: instance count out of range"))?;
        let layout = ControlLayout::with_ring_slots(
            instances,
            header.groups.load(Ordering::Relaxed),
            header.listeners.load(Ordering::Relaxed),
            header.control_slots.load(Ordering::Relaxed),
            header.forward_slots.load(Ordering::Relaxed),
        )
        .map_err(|_| ShmError::Corrupt("control header describes an invalid layout"))?;
        if seg.len() < layout.total_len {
            return Err(ShmError::Corrupt("control segment is smaller than its header's layout"));
        }
        // SAFETY: the configuration block is written once by `create` before the segment
        // is shared and never again; the range is bounds-checked by `read`.
        let config = unsafe { seg.read::<ControlConfig>(CONFIG_OFFSET)? };
        Ok(ControlSegment { seg, layout, config })
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The segment's memfd, to hand to instances.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.seg.fd()
    }

    /// The validated layout.
    pub fn layout(&self) -> &ControlLayout {
        &self.layout
    }

    /// The interface configuration (a private copy taken at open).
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The header (for `state`, `pid_plane`, `owner_epoch`).
    pub fn header(&self) -> &ControlHeader {
        // The header was validated at open; an error here cannot happen (offset 0 of a
        // segment at least one page long), but we do not panic on it either.
        self.seg.get::<ControlHeader>(0).unwrap_or_else(|_| unreachable_header())
    }

    /// Decoded segment state; `None` if the word holds no valid state.
    pub fn state(&self) -> Option<SegmentState> {
        SegmentState::from_u32(self.header().state.load(Ordering::Acquire))
    }

    /// Every flow group's shared block, indexed by group number.
    pub fn flow_groups(&self) -> &[FlowGroupShared] {
        self.seg.get_slice(self.layout.groups_offset, self.layout.groups as usize).unwrap_or(&[])
    }

    /// Flow group `group`'s shared block, `None` if out of range.
    pub fn flow_group(&self, group: u32) -> Option<&FlowGroupShared> {
        self.flow_groups().get(usize::try_from(group).ok()?)
    }

    /// Every instance's shared block.
    pub fn instances(&self) -> &[InstanceShared] {
        self.seg
            .get_slice(self.layout.instances_offset, usize::from(self.layout.instances))
            .unwrap_or(&[])
    }

    /// Instance `i`'s shared block, `None` if out of range.
    pub fn instance(&self, i: u16) -> Option<&InstanceShared> {
        self.instances().get(usize::from(i))
    }

    /// Every listener entry.
    pub fn listeners(&self) -> &[ListenerShared] {
        self.seg
            .get_slice(self.layout.listeners_offset, self.layout.listeners as usize)
            .unwrap_or(&[])
    }

    /// Listener entry `i`, `None` if out of range.
    pub fn listener(&self, i: u32) -> Option<&ListenerShared> {
        self.listeners().get(usize::try_from(i).ok()?)
    }

    /// The control ring from the plane to instance `i` (the plane attaches the producer,
    /// the instance the consumer).
    pub fn plane_to_instance(&self, i: u16) -> Result<RingHandle<ControlSlot>, ShmError> {
        let offset = self.layout.plane_to_instance_offset(i)?;
        Ok(RingHandle::new(Arc::clone(&self.seg), offset, self.layout.control_slots))
    }

    /// The control ring from instance `i` to the plane (the instance attaches the
    /// producer, the plane the consumer).
    pub fn instance_to_plane(&self, i: u16) -> Result<RingHandle<ControlSlot>, ShmError> {
        let offset = self.layout.instance_to_plane_offset(i)?;
        Ok(RingHandle::new(Arc::clone(&self.seg), offset, self.layout.control_slots))
    }

    /// The forwarding ring from instance `from` to instance `to` (distinct).
    pub fn forwarding(&self, from: u16, to: u16) -> Result<RingHandle<FrameSlot>, ShmError> {
        let offset = self.layout.forwarding_offset(from, to)?;
        Ok(RingHandle::new(Arc::clone(&self.seg), offset, self.layout.forward_slots))
    }
}

#[cold]
fn unreachable_header() -> &'static ControlHeader {
    static FALLBACK: ControlHeader = ControlHeader {
        magic: AtomicU64::new(0),
        version: AtomicU32::new(0),
        instances: AtomicU32::new(0),
        groups: AtomicU32::new(0),
        listeners: AtomicU32::new(0),
        control_slots: AtomicU32::new(0),
        forward_slots: AtomicU32::new(0),
        state: AtomicU32::new(0),
        pid_plane: AtomicU32::new(0),
        owner_epoch: AtomicU64::new(0),
        reserved: [AtomicU64::new(0), AtomicU64::new(0)],
    };
    &FALLBACK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ControlConfig {
        ControlConfig {
            ip: [10, 0, 0, 2],
            gateway: [10, 0, 0, 1],
            mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
            prefix_len: 24,
            balancer_policy: 2,
            steering: 0,
            reserved: [0; 5],
            rss_key: [0x6d; 40],
        }
    }

    fn small() -> ControlLayout {
        ControlLayout::with_ring_slots(3, 16, 4, 8, 4).unwrap()
    }

    #[test]
    fn layout_regions_are_aligned_disjoint_and_inside() {
        for (n, g, l) in [(1u16, 1u32, 1u32), (2, 128, 16), (16, 4096, 1024), (5, 64, 3)] {
            let layout = ControlLayout::new(n, g, l).unwrap();
            assert_eq!(layout.groups_offset % 64, 0);
            assert!(layout.groups_offset >= CONFIG_OFFSET + size_of::<ControlConfig>());
            assert!(layout.instances_offset >= layout.groups_offset + g as usize * 64);
            assert_eq!(layout.instances_offset % 128, 0);
            assert!(layout.listeners_offset >= layout.instances_offset + usize::from(n) * 128);
            assert!(layout.control_rings_offset >= layout.listeners_offset + l as usize * 128);
            let mut rings = Vec::new();
            for i in 0..n {
                rings.push((layout.plane_to_instance_offset(i).unwrap(), layout.control_ring_size));
                rings.push((layout.instance_to_plane_offset(i).unwrap(), layout.control_ring_size));
                for j in (0..n).filter(|&j| j != i) {
                    rings.push((layout.forwarding_offset(i, j).unwrap(), layout.forward_ring_size));
                }
            }
            rings.sort_unstable();
            for pair in rings.windows(2) {
                assert!(pair[0].0 + pair[0].1 <= pair[1].0, "rings overlap: {pair:?}");
            }
            for &(offset, size) in &rings {
                assert_eq!(offset % RingHeader::ALIGN, 0);
                assert!(offset + size <= layout.total_len());
            }
            assert_eq!(layout.total_len() % 4096, 0);
        }
    }

    #[test]
    fn layout_rejects_impossible_parameters() {
        assert!(ControlLayout::new(0, 128, 1).is_err());
        assert!(ControlLayout::new(17, 128, 1).is_err());
        assert!(ControlLayout::new(2, 100, 1).is_err());
        assert!(ControlLayout::new(2, 8192, 1).is_err());
        assert!(ControlLayout::new(2, 128, 0).is_err());
        assert!(ControlLayout::new(2, 128, 1025).is_err());
        assert!(ControlLayout::with_ring_slots(2, 128, 1, 3, 4).is_err());
        assert!(ControlLayout::with_ring_slots(2, 128, 1, 4, 1 << 17).is_err());
        let l = small();
        assert!(l.forwarding_offset(1, 1).is_err());
        assert!(l.forwarding_offset(0, 3).is_err());
        assert!(l.plane_to_instance_offset(3).is_err());
    }

    #[test]
    fn create_initialises_header_owners_and_config() {
        let cs = ControlSegment::create("t-ctl", small(), &config()).unwrap();
        assert_eq!(cs.header().magic.load(Ordering::Relaxed), CONTROL_MAGIC);
        assert_eq!(cs.state(), Some(SegmentState::Starting));
        assert_eq!(cs.header().pid_plane.load(Ordering::Relaxed), std::process::id());
        let owners: Vec<u32> =
            cs.flow_groups().iter().map(|g| g.owner.load(Ordering::Relaxed)).collect();
        assert_eq!(owners, (0..16).map(|g| g % 3).collect::<Vec<_>>());
        assert!(cs.flow_group(15).is_some() && cs.flow_group(16).is_none());
        assert!(cs.instance(2).is_some() && cs.instance(3).is_none());
        assert!(cs.listener(3).is_some() && cs.listener(4).is_none());
        assert_eq!(cs.config(), &config());
        let reopened = ControlSegment::from_segment(Arc::clone(cs.segment())).unwrap();
        assert_eq!(reopened.config(), &config());
        assert_eq!(reopened.layout(), cs.layout());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no memfd")]
    fn open_by_fd_shares_counters() {
        let cs =
            ControlSegment::create("t-ctl-fd", ControlLayout::new(2, 128, 8).unwrap(), &config())
                .unwrap();
        let other = ControlSegment::open(cs.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(other.layout(), cs.layout());
        cs.instance(1).unwrap().rx_packets.fetch_add(5, Ordering::Relaxed);
        other.flow_group(127).unwrap().packets.fetch_add(9, Ordering::Relaxed);
        assert_eq!(other.instance(1).unwrap().rx_packets.load(Ordering::Relaxed), 5);
        assert_eq!(cs.flow_group(127).unwrap().packets.load(Ordering::Relaxed), 9);
    }

    #[test]
    fn open_rejects_bad_magic_and_version() {
        let raw = Arc::new(Segment::create("t-ctl-raw", 4096).unwrap());
        assert!(matches!(
            ControlSegment::from_segment(Arc::clone(&raw)),
            Err(ShmError::BadMagic { found: 0 })
        ));
        let cs = ControlSegment::create("t-ctl-ver", small(), &config()).unwrap();
        cs.header().version.store(CONTROL_VERSION + 1, Ordering::Relaxed);
        assert!(matches!(
            ControlSegment::from_segment(Arc::clone(cs.segment())),
            Err(ShmError::VersionMismatch { found: 2, expected: 1 })
        ));
    }

    #[test]
    fn open_rejects_an_inconsistent_header() {
        let cs = ControlSegment::create("t-ctl-bad", small(), &config()).unwrap();
        let h = cs.header();
        let reopen = || ControlSegment::from_segment(Arc::clone(cs.segment()));
        for (field, bad) in [
            (&h.instances, 17),
            (&h.instances, 0x1_0000),
            (&h.groups, 3),
            (&h.listeners, u32::MAX),
            (&h.forward_slots, 0),
        ] {
            let good = field.swap(bad, Ordering::Relaxed);
            assert!(matches!(reopen(), Err(ShmError::Corrupt(_))), "value {bad} accepted");
            field.store(good, Ordering::Relaxed);
        }
        assert!(reopen().is_ok());
        // A header claiming more than the segment holds.
        h.groups.store(4096, Ordering::Relaxed);
        assert!(matches!(reopen(), Err(ShmError::Corrupt(_))));
    }

    #[test]
    fn open_rejects_a_segment_shorter_than_its_header() {
        let cs = ControlSegment::create("t-ctl-src", small(), &config()).unwrap();
        let short = Arc::new(Segment::create("t-ctl-short", 4096).unwrap());
        let mut head = [0u8; 128];
        // SAFETY: single-threaded test; nothing else maps these segments concurrently.
        unsafe {
            cs.segment().copy_out(0, &mut head).unwrap();
            short.copy_in(0, &head).unwrap();
        }
        assert!(matches!(ControlSegment::from_segment(short), Err(ShmError::Corrupt(_))));
    }

    #[test]
    fn every_ring_is_separate() {
        let cs = ControlSegment::create("t-ctl-rings", small(), &config()).unwrap();
        let n = cs.layout().instances();
        let mut producers = Vec::new();
        for i in 0..n {
            producers
                .push((cs.plane_to_instance(i).unwrap().producer().unwrap(), u64::from(i) * 100));
            producers.push((
                cs.instance_to_plane(i).unwrap().producer().unwrap(),
                u64::from(i) * 100 + 1,
            ));
        }
        for (p, seq) in &mut producers {
            assert!(p.push(&ControlMessage::Heartbeat { seq: *seq }.encode()).unwrap());
        }
        for i in 0..n {
            for (handle, seq) in [
                (cs.plane_to_instance(i).unwrap(), u64::from(i) * 100),
                (cs.instance_to_plane(i).unwrap(), u64::from(i) * 100 + 1),
            ] {
                let mut c = handle.consumer().unwrap();
                let slot = c.pop().unwrap().unwrap();
                assert_eq!(
                    ControlMessage::decode(&slot, cs.layout()),
                    Ok(ControlMessage::Heartbeat { seq })
                );
                assert_eq!(c.pop().unwrap(), None);
            }
        }
        for from in 0..n {
            for to in (0..n).filter(|&t| t != from) {
                let frame = [from as u8, to as u8, 0xee];
                let slot = FrameSlot::new(&frame, u32::from(from), 0).unwrap();
                assert!(cs.forwarding(from, to).unwrap().producer().unwrap().push(&slot).unwrap());
            }
        }
        for from in 0..n {
            for to in (0..n).filter(|&t| t != from) {
                let mut c = cs.forwarding(from, to).unwrap().consumer().unwrap();
                let got = c.pop().unwrap().unwrap();
                assert_eq!(got.frame(), Some(&[from as u8, to as u8, 0xee][..]));
                assert!(c.pop().unwrap().is_none());
            }
        }
        assert!(cs.forwarding(0, 0).is_err());
        assert!(cs.plane_to_instance(n).is_err());
    }

    #[test]
    fn state_words_decode() {
        assert_eq!(SegmentState::from_u32(1), Some(SegmentState::Up));
        assert_eq!(InstanceState::from_u32(4), Some(InstanceState::Dead));
        assert_eq!(GroupState::from_u32(2), Some(GroupState::Moving));
        assert_eq!(GroupState::from_u32(3), None);
    }
}
