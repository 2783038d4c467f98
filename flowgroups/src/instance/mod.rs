//! The kernel instance: one process per NIC queue pair, running a private `tcp_core`
//! stack (DESIGN.md "Processes", "The path of a connection").
//!
//! One loop iteration ([`KernelInstance::poll_once`]):
//!
//! 1. descriptors from the plane socket and messages from the control ring (apps
//!    attached and detached, owner changes, heartbeats, captures, shutdown);
//! 2. a receive batch from the queue, each frame steered by its flow group (see
//!    [`rx`](self) below: foreign groups go to their owner's forwarding ring, ARP is
//!    replicated), then the frames other instances forwarded to us;
//! 3. stack events to the app channel ([`ChannelHub`]), the apps' requests, due timers;
//! 4. a transmit batch;
//! 5. counters into the control segment (per instance and per flow group).
//!
//! [`KernelInstance::run`] repeats it and, when there is nothing to do, backs off to a
//! blocking poll(2) on the queue's wait descriptor, the doorbell eventfd and the plane
//! socket (see [`MAX_BLOCK`], [`SPIN_ITERATIONS`]).
//!
//! On the fast path instances exchange no message: `cross_instance_msgs` counts only
//! frames forwarded because this instance received a segment of a group it does not own.
//! ARP copies are counted apart ([`InstanceCounters::arp_copies`]).

mod groups;
mod idle;
mod migrate;
pub mod pcap;
pub mod plane_link;
mod publish;
mod rx;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use ixgbe_user::QueuePair;
use tcp_core::Instant;
use tcp_core::stack::{Stack, StackConfig};
use tcp_core::tcp::State;

use crate::channel::server::ChannelHub;
use crate::channel::{AppLayout, AppSegment};
use crate::control::{ControlMessage, ControlSegment, ControlSlot, InstanceShared, InstanceState};
use crate::flowgroup::flow_group_of;
use crate::flowgroup::{FlowGroupConfig, FlowGroupHasher, FlowGroupTable};
use crate::ports::choose_source_port;
use crate::shm::sys::monotonic_ns;
use crate::shm::{EventFd, RingConsumer, RingProducer, ShmError};

use self::groups::{GroupTracker, SegmentWatch};
pub use self::idle::{
    BUSY_INTERVAL, DEEP_IDLE_NAPS, DEEP_NAP, FIRST_NAP, LONGEST_NAP, MAX_BLOCK, SPIN_ITERATIONS,
};
use self::idle::{Backoff, BusyMeter, Next, block_on};
pub use self::migrate::{DRAIN_GRACE, HOLD_TIMEOUT, MigrationCounters, RESIDUE_IDLE_TTL};
use self::migrate::{Migrations, Steer, Via};
use self::pcap::{Capture, CaptureSink};
use self::plane_link::{PlaneLink, PlaneMessage};
use self::publish::{ListenerColumn, SharedCounters, store_counters};
use self::rx::{Forwarding, FrameKind};

/// Frames taken from the queue, and from the forwarding rings, per iteration.
pub const RX_BATCH: usize = 64;
/// How often counters are written to the control segment (the heartbeat is written every
/// iteration).
pub const PUBLISH_INTERVAL_NS: u64 = 10_000_000;
/// How often sleeping accept waiters are re-woken while connections wait (see
/// `ListenerRegistry::rewake_waiting`).
const REWAKE_INTERVAL_NS: u64 = 5_000_000;
/// Least time between two reconcile walks of the flow-group connection counts.
const RECONCILE_INTERVAL_NS: u64 = 1_000_000;
/// While busy, how often the plane socket is read without poll(2) having said it is
/// readable (a system call per iteration would tax the fast path).
const PLANE_CHECK_INTERVAL_NS: u64 = 1_000_000;

/// Everything a kernel instance needs, built in its own process.
pub struct InstanceSetup {
    /// This instance's index (its queue number).
    pub index: u16,
    /// The control segment (opened from the inherited fd).
    pub control: ControlSegment,
    /// This instance's end of the plane socketpair: app descriptors and capture requests
    /// arrive here (see [`plane_link`]).
    pub plane: UnixStream,
    /// Rung by apps and the plane when the instance sleeps.
    pub doorbell: EventFd,
    /// The NIC queue pair.
    pub queue: Box<dyn QueuePair>,
    /// Stack configuration: the same address, MAC and secret in every instance.
    pub stack: StackConfig,
    /// Flow-group count and RSS key (the same as the NIC's).
    pub flow_groups: FlowGroupConfig,
    /// Where captures without a plane-provided file are written.
    pub capture_dir: PathBuf,
}

impl fmt::Debug for InstanceSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSetup")
            .field("index", &self.index)
            .field("flow_groups", &self.flow_groups.groups())
            .field("capture_dir", &self.capture_dir)
            .finish_non_exhaustive()
    }
}

/// Why an instance could not start or stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum InstanceError {
    /// The setup is inconsistent (the message says how).
    Config(&'static str),
    /// The control segment's rings could not be attached.
    Control(ShmError),
    /// A system call of the loop failed.
    Io(io::Error),
    /// The control plane closed its end of the socket: it is gone, so is our purpose.
    PlaneHungUp,
}

impl fmt::Display for InstanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceError::Config(why) => write!(f, "kernel instance setup: {why}"),
            InstanceError::Control(e) => write!(f, "kernel instance control segment: {e}"),
            InstanceError::Io(e) => write!(f, "kernel instance: {e}"),
            InstanceError::PlaneHungUp => write!(f, "the control plane closed the instance socket"),
        }
    }
}

impl std::error::Error for InstanceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstanceError::Control(e) => Some(e),
            InstanceError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ShmError> for InstanceError {
    fn from(e: ShmError) -> Self {
        InstanceError::Control(e)
    }
}

impl From<io::Error> for InstanceError {
    fn from(e: io::Error) -> Self {
        InstanceError::Io(e)
    }
}

/// What one [`KernelInstance::poll_once`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activity {
    /// Frames received from the queue.
    pub rx_frames: u32,
    /// Of those, frames pushed to their group's owner.
    pub forwarded_out: u32,
    /// Frames taken from other instances' forwarding rings.
    pub forwarded_in: u32,
    /// ARP copies sent to other instances.
    pub arp_copies: u32,
    /// Frames transmitted.
    pub tx_frames: u32,
    /// Frames the stack holds back because the queue had no transmit buffer.
    pub tx_blocked: bool,
    /// Application requests served.
    pub app_requests: u64,
    /// Control messages and plane-socket messages handled.
    pub control_messages: u32,
    /// Stack events routed to apps.
    pub stack_events: u32,
    /// Stack timers fired.
    pub timers_fired: bool,
    /// A shutdown was requested; the instance stopped.
    pub shutdown: bool,
}

impl Activity {
    /// True if the iteration did anything (the loop keeps polling instead of backing off).
    pub fn did_work(&self) -> bool {
        self.rx_frames > 0
            || self.forwarded_in > 0
            || self.tx_frames > 0
            || self.tx_blocked
            || self.app_requests > 0
            || self.control_messages > 0
            || self.stack_events > 0
            || self.timers_fired
            || self.shutdown
    }
}

/// Local counters of an instance (the shared ones are a subset, see `InstanceShared`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceCounters {
    /// Frames received from the queue.
    pub rx_packets: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Frames dropped here (a full or broken forwarding ring).
    pub rx_dropped: u64,
    /// Frames forwarded to their group's owner (fast-path cross-instance messages).
    pub forwarded_packets: u64,
    /// ARP copies sent to other instances (not fast-path messages).
    pub arp_copies: u64,
    /// Frames received from other instances.
    pub frames_from_peers: u64,
    /// Forwarding-ring slots or rings found corrupt.
    pub forward_corrupt: u64,
    /// Control messages handled.
    pub control_messages: u64,
    /// Control slots that did not decode, or a control ring found corrupt.
    pub control_errors: u64,
    /// Control messages this instance does not act on (ones meant for the plane).
    pub control_unsupported: u64,
    /// Plane-socket messages refused.
    pub plane_errors: u64,
    /// Apps attached.
    pub apps_attached: u64,
    /// Apps whose attach failed (bad segment, duplicate id).
    pub attach_failures: u64,
    /// Apps detached.
    pub apps_detached: u64,
    /// Connections handed to applications.
    pub accepts: u64,
    /// Connections ever created here, by passive and active opens (a SYN that reopens a
    /// TIME-WAIT tuple counts as a new one; connections imported by a migration do not).
    pub connections_total: u64,
    /// Times the flow-group connection counts needed a reconcile walk.
    pub group_reconciles: u64,
    /// Queue operations that failed.
    pub queue_errors: u64,
    /// Captures completed.
    pub captures: u64,
    /// Times the loop blocked for lack of work.
    pub idle_sleeps: u64,
    /// Flow-group moves (see the `migrate` module).
    pub migration: MigrationCounters,
}

/// Descriptors and announcement of an app, until both have arrived.
#[derive(Debug, Default)]
struct PendingApps {
    announced: BTreeSet<u32>,
    fds: BTreeMap<u32, (u32, AppLayout, OwnedFd, OwnedFd)>,
}

/// Most apps remembered as announced without descriptors, or with descriptors but not
/// announced (a buggy plane cannot grow either set without bound).
const MAX_PENDING_APPS: usize = 4096;

/// A kernel instance. Build it with [`KernelInstance::new`], then call
/// [`KernelInstance::run`] (or drive [`KernelInstance::poll_once`] yourself).
pub struct KernelInstance {
    index: u16,
    control: ControlSegment,
    from_plane: RingConsumer<ControlSlot>,
    to_plane: RingProducer<ControlSlot>,
    plane: PlaneLink,
    doorbell: EventFd,
    queue: Box<dyn QueuePair>,
    stack: Stack,
    hub: ChannelHub,
    hasher: FlowGroupHasher,
    flow_groups: FlowGroupConfig,
    owners: FlowGroupTable,
    owner_epoch: u64,
    forwarding: Forwarding,
    migrations: Migrations,
    groups: GroupTracker,
    capture: Option<Capture>,
    capture_dir: PathBuf,
    pending: PendingApps,
    counters: InstanceCounters,
    listeners: ListenerColumn,
    next_port: u16,
    arp_scratch: Vec<u8>,
    last_publish_ns: u64,
    last_rewake_ns: u64,
    last_reconcile_ns: u64,
    /// poll(2) reported the plane socket readable (or we have not looked yet).
    plane_readable: bool,
    last_plane_check_ns: u64,
    /// `now` of the current iteration.
    now: Instant,
    shutdown: bool,
}

impl fmt::Debug for KernelInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelInstance")
            .field("index", &self.index)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn read_owners(control: &ControlSegment) -> Option<FlowGroupTable> {
    let instances = control.layout().instances();
    let owners: Option<Vec<u16>> = control
        .flow_groups()
        .iter()
        .map(|g| u16::try_from(g.owner.load(Ordering::Relaxed)).ok().filter(|&o| o < instances))
        .collect();
    FlowGroupTable::from_owners(owners?, instances).ok()
}

impl KernelInstance {
    /// Attaches to the control segment's rings, builds the stack, and marks the instance
    /// running in the control segment.
    pub fn new(setup: InstanceSetup) -> Result<KernelInstance, InstanceError> {
        let InstanceSetup {
            index,
            control,
            plane,
            doorbell,
            queue,
            stack,
            flow_groups,
            capture_dir,
        } = setup;
        let layout = *control.layout();
        if index >= layout.instances() {
            return Err(InstanceError::Config(
                "instance index beyond the control segment's instances",
            ));
        }
        if flow_groups.groups() != layout.groups() {
            return Err(InstanceError::Config(
                "flow-group count differs from the control segment's",
            ));
        }
        let owners = read_owners(&control).ok_or(InstanceError::Config(
            "the flow-group table names an instance that does not exist",
        ))?;
        let from_plane = control.plane_to_instance(index)?.consumer()?;
        let to_plane = control.instance_to_plane(index)?.producer()?;
        let forwarding = Forwarding::attach(&control, index)?;
        let plane = PlaneLink::new(plane)?;
        let owner_epoch = control.header().owner_epoch.load(Ordering::Acquire);
        let next_port = stack.ephemeral_ports.0;
        let stack = Stack::new(stack);
        if let Some(shared) = control.instance(index) {
            shared.pid.store(std::process::id(), Ordering::Relaxed);
            shared.state.store(InstanceState::Running as u32, Ordering::Release);
        }
        Ok(KernelInstance {
            index,
            hasher: FlowGroupHasher::new(&flow_groups),
            groups: GroupTracker::new(flow_groups.groups()),
            flow_groups,
            control,
            from_plane,
            to_plane,
            plane,
            doorbell,
            queue,
            stack,
            hub: ChannelHub::new(index),
            owners,
            owner_epoch,
            forwarding,
            migrations: Migrations::new(index),
            capture: None,
            capture_dir,
            pending: PendingApps::default(),
            counters: InstanceCounters::default(),
            listeners: ListenerColumn::default(),
            next_port,
            arp_scratch: Vec::new(),
            last_publish_ns: 0,
            last_rewake_ns: 0,
            last_reconcile_ns: 0,
            plane_readable: true,
            last_plane_check_ns: 0,
            now: Instant::ZERO,
            shutdown: false,
        })
    }

    /// Gives the instance the other instances' doorbells, rung (once per iteration) after
    /// frames were pushed to their forwarding rings. Without them a forwarded frame waits
    /// until its owner wakes up on its own (at most [`MAX_BLOCK`]).
    pub fn set_peer_doorbells(&mut self, doorbells: Vec<(u16, EventFd)>) {
        self.forwarding.set_doorbells(doorbells);
    }

    /// This instance's index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The stack (for inspection).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The app channel hub (for inspection).
    pub fn hub(&self) -> &ChannelHub {
        &self.hub
    }

    /// The control segment.
    pub fn control(&self) -> &ControlSegment {
        &self.control
    }

    /// Local counters.
    pub fn counters(&self) -> InstanceCounters {
        let mut c = self.counters;
        let f = self.forwarding.stats;
        c.forwarded_packets = f.forwarded;
        c.arp_copies = f.arp_copies;
        c.frames_from_peers = f.received;
        c.forward_corrupt = f.corrupt;
        c.rx_dropped += f.dropped;
        c.connections_total = self.groups.created;
        c.group_reconciles = self.groups.reconciles;
        c.migration = self.migrations.counters;
        c.migration.bad_records += self.migrations.reassembly.broken;
        c
    }

    /// Connections this instance counts in flow group `group` (any state).
    pub fn group_connections(&self, group: u32) -> u32 {
        self.groups.connections(group)
    }

    fn shared(&self) -> Option<&InstanceShared> {
        self.control.instance(self.index)
    }

    /// One iteration of the loop (see the module documentation). `now` must not go
    /// backwards; [`KernelInstance::run`] passes CLOCK_MONOTONIC, which is also the clock
    /// of the published heartbeat.
    pub fn poll_once(&mut self, now: Instant) -> Activity {
        let mut act = Activity::default();
        if self.shutdown {
            act.shutdown = true;
            return act;
        }
        self.now = self.now.max(now);
        let now_ns = now.as_nanos();
        if self.plane_readable
            || now_ns.saturating_sub(self.last_plane_check_ns) >= PLANE_CHECK_INTERVAL_NS
        {
            self.plane_readable = false;
            self.last_plane_check_ns = now_ns;
            self.read_plane(&mut act);
        }
        self.read_control(&mut act);
        if self.shutdown {
            self.stop();
            act.shutdown = true;
            return act;
        }
        self.refresh_owners(false);
        self.receive(now, &mut act);
        self.drain_events(&mut act);
        self.serve_apps(now, &mut act);
        if self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
            act.timers_fired = true;
        }
        self.drain_events(&mut act);
        self.migration_tick(now, act.rx_frames, &mut act);
        self.drain_events(&mut act);
        self.transmit(now, &mut act);
        self.drain_events(&mut act);
        self.forwarding.ring_doorbells();
        self.finish_capture_if_done();
        self.housekeeping(now);
        act
    }

    // -----------------------------------------------------------------------------------
    // Control

    fn read_plane(&mut self, act: &mut Activity) {
        let input = self.plane.poll();
        self.counters.plane_errors += u64::from(input.errors);
        for (msg, mut fds) in input.messages {
            act.control_messages += 1;
            match msg {
                PlaneMessage::AppFds { app_id, family, layout } => {
                    let (Some(wake), Some(segment)) = (fds.pop(), fds.pop()) else {
                        self.counters.plane_errors += 1;
                        continue;
                    };
                    if self.pending.fds.len() >= MAX_PENDING_APPS
                        && !self.pending.fds.contains_key(&app_id)
                    {
                        self.counters.plane_errors += 1;
                        continue;
                    }
                    // A newer set of descriptors for the same id replaces the older one.
                    self.pending.fds.insert(app_id, (family, layout, segment, wake));
                    self.try_attach(app_id);
                }
                PlaneMessage::Capture { count, seq, to_fd } => {
                    let sink = match (to_fd, fds.pop()) {
                        (true, Some(fd)) => CaptureSink::Fd(File::from(fd)),
                        (false, _) => Capture::sink_in(&self.capture_dir, self.index, seq),
                        (true, None) => {
                            self.counters.plane_errors += 1;
                            continue;
                        }
                    };
                    self.start_capture(sink, count, seq);
                }
                PlaneMessage::CaptureDone { .. } => self.counters.plane_errors += 1,
            }
        }
    }

    fn read_control(&mut self, act: &mut Activity) {
        let layout = *self.control.layout();
        loop {
            let slot = match self.from_plane.pop() {
                Ok(Some(slot)) => slot,
                Ok(None) => break,
                Err(_) => {
                    self.counters.control_errors += 1;
                    break;
                }
            };
            act.control_messages += 1;
            self.counters.control_messages += 1;
            match ControlMessage::decode(&slot, &layout) {
                Ok(msg) => self.handle_control(msg),
                Err(_) => self.counters.control_errors += 1,
            }
            if self.shutdown {
                break;
            }
        }
    }

    fn handle_control(&mut self, msg: ControlMessage) {
        match msg {
            ControlMessage::AppAttached { app_id } => {
                if self.pending.announced.len() < MAX_PENDING_APPS {
                    self.pending.announced.insert(app_id);
                }
                if !self.pending.fds.contains_key(&app_id) {
                    // The descriptors are sent before the announcement: look again.
                    let mut act = Activity::default();
                    self.read_plane(&mut act);
                }
                self.try_attach(app_id);
            }
            ControlMessage::AppDetached { app_id } => {
                self.pending.announced.remove(&app_id);
                self.pending.fds.remove(&app_id);
                if self.hub.detach(&mut self.stack, self.now, app_id) {
                    self.counters.apps_detached += 1;
                }
            }
            ControlMessage::SetOwner { group, owner } => {
                self.refresh_owners(true);
                self.migration_switched(group, owner, self.now);
            }
            ControlMessage::FreezeGroup { group, to } => self.freeze_group(group, to),
            ControlMessage::ImportGroup { group, from } => self.import_group(group, from),
            ControlMessage::Heartbeat { seq } => {
                let reply = ControlMessage::Heartbeat { seq }.encode();
                if !matches!(self.to_plane.push(&reply), Ok(true)) {
                    self.counters.control_errors += 1;
                }
            }
            ControlMessage::Shutdown => self.shutdown = true,
            _ => self.counters.control_unsupported += 1,
        }
    }

    fn try_attach(&mut self, app_id: u32) {
        if !self.pending.announced.contains(&app_id) || !self.pending.fds.contains_key(&app_id) {
            return;
        }
        self.pending.announced.remove(&app_id);
        let Some((family, layout, segment, wake)) = self.pending.fds.remove(&app_id) else {
            return;
        };
        let attached = AppSegment::open(segment, layout, Some(app_id))
            .map_err(|_| ())
            .and_then(|seg| EventFd::from_fd(wake).map(|w| (seg, w)).map_err(|_| ()))
            .and_then(|(seg, wake)| self.hub.attach(app_id, family, seg, wake).map_err(|_| ()));
        match attached {
            Ok(()) => self.counters.apps_attached += 1,
            Err(()) => self.counters.attach_failures += 1,
        }
    }

    /// Re-reads the owner table when the plane says it changed (or `force`).
    fn refresh_owners(&mut self, force: bool) {
        let epoch = self.control.header().owner_epoch.load(Ordering::Acquire);
        if !force && epoch == self.owner_epoch {
            return;
        }
        self.owner_epoch = epoch;
        // A table naming a missing instance is a plane bug: keep the last good one.
        if let Some(t) = read_owners(&self.control) {
            self.owners = t;
        } else {
            self.counters.control_errors += 1;
        }
    }

    // -----------------------------------------------------------------------------------
    // Data path

    fn receive(&mut self, now: Instant, act: &mut Activity) {
        let me = self.index;
        let our_ip = self.stack.config().ipv4_addr;
        let now_ns = now.as_nanos();
        let Self {
            queue,
            stack,
            hasher,
            control,
            forwarding,
            migrations,
            groups,
            capture,
            arp_scratch,
            ..
        } = self;
        let mut on_frame = |frame: &[u8]| {
            act.rx_frames += 1;
            if let Some(c) = capture.as_mut() {
                let _ = c.record(frame);
            }
            let kind = rx::classify(frame);
            match kind {
                FrameKind::Tcp { src, dst, syn } => {
                    let (group, steer) = migrate::steer_tcp(
                        me,
                        control,
                        hasher,
                        migrations,
                        stack,
                        src,
                        dst,
                        Via::Nic,
                        now_ns,
                    );
                    match steer {
                        Steer::Local => deliver_tcp(now, stack, groups, frame, kind, group, syn),
                        Steer::Forward(to) => {
                            if forwarding.forward(to, frame, group) {
                                act.forwarded_out += 1;
                            }
                        }
                        Steer::Hold => {
                            migrations.hold(group, frame, now_ns);
                        }
                    }
                }
                FrameKind::Arp => {
                    stack.handle_frame(now, frame);
                    rx::arp_copy(frame, our_ip, arp_scratch);
                    act.arp_copies += forwarding.replicate(arp_scratch);
                }
                FrameKind::Other => stack.handle_frame(now, frame),
            }
        };
        match queue.rx_burst(RX_BATCH, &mut on_frame) {
            Ok(_) => {}
            Err(_) => self.counters.queue_errors += 1,
        }
        // Frames and migration records from the peers, one at a time and in ring order
        // (a record and the stragglers behind it must be handled in that order).
        let mut budget = 4 * RX_BATCH;
        while budget > 0 {
            let Some((peer, slot)) = self.forwarding.pop_inbound() else { break };
            budget -= 1;
            self.on_peer_slot(now, peer, &slot, act);
        }
        self.counters.rx_packets += u64::from(act.rx_frames);
    }

    fn drain_events(&mut self, act: &mut Activity) {
        while let Some(event) = self.stack.poll_event() {
            act.stack_events += 1;
            self.hub.on_stack_event(&mut self.stack, event);
        }
    }

    fn serve_apps(&mut self, now: Instant, act: &mut Activity) {
        let before: BTreeMap<u16, usize> = self.hub.registry().ready_counts(&self.stack).collect();
        let mut chosen: Vec<(u16, SocketAddrV4)> = Vec::new();
        let me = self.index;
        let Self { hub, stack, flow_groups, owners, next_port, .. } = self;
        let mut chooser = |stack: &Stack, remote: SocketAddrV4| -> Option<u16> {
            let (low, high) = stack.config().ephemeral_ports;
            let port = choose_source_port(
                flow_groups,
                owners,
                me,
                stack.config().ipv4_addr,
                *remote.ip(),
                remote.port(),
                (low, high),
                *next_port,
                |p| stack.tuple_free(p, remote),
            )?;
            *next_port = if port >= high { low } else { port + 1 };
            chosen.push((port, remote));
            Some(port)
        };
        // A connect from a port the app bound: made here only if the replies to that port
        // reach this instance; otherwise the client asks the next instance.
        let mut bound: Vec<(u16, SocketAddrV4)> = Vec::new();
        let mut owns_reply = |stack: &Stack, port: u16, remote: SocketAddrV4| -> bool {
            let local = stack.config().ipv4_addr;
            let group = flow_group_of(flow_groups, *remote.ip(), local, remote.port(), port);
            let mine = owners.owner(group) == Some(me);
            if mine {
                bound.push((port, remote));
            }
            mine
        };
        let stats = hub.serve_checked(stack, now, &mut chooser, &mut owns_reply);
        act.app_requests += stats.requests;
        for (port, remote) in chosen.into_iter().chain(bound) {
            self.groups.after_connect(&self.stack, &self.hasher, port, remote);
        }
        // Accept requests are the only thing in `serve` that shortens an accept queue of
        // a listener that still exists afterwards.
        for (port, after) in self.hub.registry().ready_counts(&self.stack) {
            if let Some(&b) = before.get(&port) {
                self.counters.accepts += b.saturating_sub(after) as u64;
            }
        }
    }

    fn transmit(&mut self, now: Instant, act: &mut Activity) {
        let Self { queue, stack, capture, counters, .. } = self;
        let mut queued = 0u32;
        loop {
            let mut wrote = 0usize;
            let mut build = |buf: &mut [u8]| {
                wrote = stack.poll_transmit(now, buf).unwrap_or(0);
                if wrote > 0 {
                    if let Some(c) = capture.as_mut() {
                        let _ = c.record(buf.get(..wrote).unwrap_or(&[]));
                    }
                }
                wrote
            };
            match queue.tx_one(&mut build) {
                Ok(true) if wrote > 0 => {
                    queued += 1;
                    if queued as usize % RX_BATCH == 0 && queue.tx_flush().is_err() {
                        counters.queue_errors += 1;
                    }
                }
                Ok(true) => break,
                Ok(false) => {
                    act.tx_blocked = true;
                    break;
                }
                Err(_) => {
                    counters.queue_errors += 1;
                    break;
                }
            }
        }
        if queued > 0 && queue.tx_flush().is_err() {
            counters.queue_errors += 1;
        }
        act.tx_frames += queued;
        counters.tx_packets += u64::from(queued);
    }

    // -----------------------------------------------------------------------------------
    // Captures

    fn start_capture(&mut self, sink: CaptureSink, count: u32, seq: u32) {
        if let Some(old) = self.capture.take() {
            self.end_capture(old);
        }
        match Capture::start(sink, count, seq) {
            Ok(c) => self.capture = Some(c),
            Err(e) => {
                let errno = e.raw_os_error().and_then(|n| u32::try_from(n).ok()).unwrap_or(5);
                let _ = self.plane.reply(&PlaneMessage::CaptureDone { seq, frames: 0, errno });
            }
        }
    }

    fn end_capture(&mut self, capture: Capture) {
        let seq = capture.seq();
        let (frames, errno) = match capture.finish() {
            Ok(n) => (u32::try_from(n).unwrap_or(u32::MAX), 0),
            Err(e) => (0, e.raw_os_error().and_then(|n| u32::try_from(n).ok()).unwrap_or(5)),
        };
        self.counters.captures += 1;
        let _ = self.plane.reply(&PlaneMessage::CaptureDone { seq, frames, errno });
    }

    fn finish_capture_if_done(&mut self) {
        if self.capture.as_ref().is_some_and(Capture::is_complete) {
            if let Some(c) = self.capture.take() {
                self.end_capture(c);
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Publishing

    fn housekeeping(&mut self, now: Instant) {
        let now_ns = now.as_nanos();
        if let Some(shared) = self.shared() {
            shared.heartbeat_ns.store(now_ns, Ordering::Relaxed);
        }
        if now_ns.saturating_sub(self.last_reconcile_ns) >= RECONCILE_INTERVAL_NS
            && self.groups.total() != self.stack.socket_count()
        {
            self.last_reconcile_ns = now_ns;
            self.groups.reconcile(&self.stack, &self.hasher);
        }
        if now_ns.saturating_sub(self.last_rewake_ns) >= REWAKE_INTERVAL_NS {
            self.last_rewake_ns = now_ns;
            self.hub.rewake_waiting(&self.stack);
        }
        if now_ns.saturating_sub(self.last_publish_ns) >= PUBLISH_INTERVAL_NS {
            self.last_publish_ns = now_ns;
            self.publish();
        }
    }

    /// Writes every counter into the control segment now.
    pub fn publish(&mut self) {
        self.groups.publish(&self.control, self.index);
        self.listeners.publish(
            &self.control,
            self.index,
            self.hub.registry().ready_counts(&self.stack),
        );
        let c = self.counters();
        let q = self.queue.stats();
        let established =
            self.stack.connections().filter(|(_, s)| *s == State::Established).count() as u64;
        let shared = SharedCounters {
            rx_packets: c.rx_packets,
            tx_packets: c.tx_packets,
            rx_dropped: c.rx_dropped + q.rx_dropped,
            tx_dropped: q.tx_dropped,
            connections_established: established,
            connections_total: c.connections_total,
            accepts: c.accepts,
            cross_instance_msgs: c.forwarded_packets,
            forwarded_packets: c.forwarded_packets,
            app_requests: self
                .hub
                .app_ids()
                .filter_map(|id| self.hub.app(id))
                .map(|a| a.totals().requests)
                .sum(),
        };
        if let Some(s) = self.shared() {
            store_counters(s, &shared);
            s.idle_sleeps.store(c.idle_sleeps, Ordering::Relaxed);
        }
    }

    fn stop(&mut self) {
        if let Some(c) = self.capture.take() {
            self.end_capture(c);
        }
        self.publish();
        if let Some(s) = self.shared() {
            s.state.store(InstanceState::Stopping as u32, Ordering::Release);
        }
    }

    // -----------------------------------------------------------------------------------
    // The loop

    /// Runs the loop until [`ControlMessage::Shutdown`] (then `Ok`) or until the plane
    /// closes its socket ([`InstanceError::PlaneHungUp`]). Idle, it blocks in poll(2);
    /// see the module documentation.
    pub fn run(mut self) -> Result<(), InstanceError> {
        let mut backoff = Backoff::new();
        let mut meter = BusyMeter::new(monotonic_ns());
        let wait_fd = self.queue.wait_fd();
        loop {
            let start = monotonic_ns();
            let act = self.poll_once(Instant::from_nanos(start));
            if act.shutdown {
                return Ok(());
            }
            if self.plane.is_closed() {
                self.stop();
                return Err(InstanceError::PlaneHungUp);
            }
            let end = monotonic_ns();
            if act.did_work() {
                meter.busy(end.saturating_sub(start));
            }
            if let Some(ppm) = meter.tick(end) {
                if let Some(s) = self.shared() {
                    s.busy_ppm.store(ppm, Ordering::Relaxed);
                }
            }
            let until_timer = self
                .stack
                .poll_timeout()
                .map(|t| std::time::Duration::from_nanos(t.as_nanos().saturating_sub(end)));
            match backoff.next(act.did_work(), until_timer, wait_fd.is_some()) {
                Next::Spin => std::hint::spin_loop(),
                Next::Block(timeout) => self.sleep(timeout, wait_fd)?,
            }
        }
    }

    /// Blocks unless work is already waiting: asks the apps to ring the doorbell, checks
    /// the rings once more, then polls.
    fn sleep(
        &mut self,
        timeout: std::time::Duration,
        wait_fd: Option<std::os::fd::RawFd>,
    ) -> Result<(), InstanceError> {
        let requests_waiting = self.hub.prepare_sleep();
        let busy = requests_waiting
            || self.forwarding.pending()
            || self.forwarding.has_backlog()
            || self.from_plane.len().is_ok_and(|n| n > 0);
        // A move in progress waits on the clock (drain grace, hold timeout).
        let timeout =
            if self.migrations.active() { timeout.min(migrate::DRAIN_GRACE) } else { timeout };
        if !busy {
            let mut fds = vec![self.doorbell.as_raw_fd(), self.plane.socket().as_raw_fd()];
            fds.extend(wait_fd);
            let ready = block_on(&fds, timeout)?;
            // poll(2) just looked at the plane socket: no need for the periodic check.
            self.plane_readable |= ready.is_ready(1);
            self.last_plane_check_ns = monotonic_ns();
            self.counters.idle_sleeps += 1;
            if ready.is_ready(0) {
                self.doorbell.drain()?;
            }
        }
        self.hub.after_wake();
        Ok(())
    }
}

/// Hands a TCP frame of `group` to the stack, counts it against its flow group, and
/// notices a connection it created or ended.
fn deliver_tcp(
    now: Instant,
    stack: &mut Stack,
    groups: &mut GroupTracker,
    frame: &[u8],
    kind: FrameKind,
    group: u32,
    syn: bool,
) {
    groups.count_packet(group, syn);
    let ours = match kind {
        FrameKind::Tcp { src, dst, .. } if dst.0 == stack.config().ipv4_addr => {
            Some((dst.1, SocketAddrV4::new(src.0, src.1)))
        }
        _ => None,
    };
    let before = ours.map(|(port, remote)| SegmentWatch::before(stack, port, remote));
    stack.handle_frame(now, frame);
    if let (Some((port, remote)), Some(before)) = (ours, before) {
        groups.after_segment(stack, port, remote, group, before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_and_its_setup_can_move_to_another_thread() {
        fn is_send<T: Send>() {}
        is_send::<InstanceSetup>();
        is_send::<KernelInstance>();
    }

    #[test]
    fn an_iteration_that_only_checked_is_not_work() {
        assert!(!Activity::default().did_work());
        assert!(Activity { tx_blocked: true, ..Activity::default() }.did_work());
        assert!(Activity { forwarded_in: 1, ..Activity::default() }.did_work());
    }
}
