//! Per-flow-group load of one instance: packets, SYNs and connections, published into the
//! control segment's flow-group table for the balancer (DESIGN.md "Flow-group balancing":
//! the `idle` policy may only move a group that holds no connection state, so the
//! connection count must include every state, TIME-WAIT too).
//!
//! `tcp_core` reports no event when it creates a connection (a SYN on a listener) or frees
//! one (end of TIME-WAIT, a reset, the last ACK after close), so the tracker follows the
//! 4-tuples it can attribute: before and after each frame it looks at that frame's
//! 4-tuple in the stack's table ([`SegmentWatch`]) to see whether the frame created or
//! ended a connection, and it records active opens by the port it chose. A tuple that
//! stays in the table can still hold a *new* connection: a SYN that reopens a TIME-WAIT
//! tuple (RFC 6191; servers that close first, under clients that reuse ports, see this
//! for most connections), or one that arrives after a timer freed the tuple and before the
//! tracker noticed; both count as created. What cannot be attributed (timers, application closes) shows up as a
//! difference between the stack's socket count and the tracker's; only then does
//! [`GroupTracker::reconcile`] walk the tracked tuples (or the stack's connections) to
//! settle it.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;

use tcp_core::stack::Stack;

use crate::control::ControlSegment;
use crate::flowgroup::FlowGroupHasher;

/// (local port, remote end): the part of a 4-tuple that varies (the local address is the
/// stack's own).
type TupleKey = (u16, SocketAddrV4);

/// What the stack held for one segment's 4-tuple just before it handled the segment, so
/// that [`GroupTracker::after_segment`] can tell whether the segment opened a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentWatch {
    tuple_was_free: bool,
    time_wait_reused: u64,
}

impl SegmentWatch {
    /// Takes the snapshot; call it right before `stack.handle_frame`.
    pub(crate) fn before(stack: &Stack, local_port: u16, remote: SocketAddrV4) -> SegmentWatch {
        SegmentWatch {
            tuple_was_free: stack.tuple_free(local_port, remote),
            time_wait_reused: stack.counters().tcp_time_wait_reused,
        }
    }

    /// Whether the segment handled since opened a connection on its (now live) tuple: the
    /// tuple was free before, or the stack reopened a TIME-WAIT connection for it (its
    /// counter moved; one frame concerns one tuple, so the move is this tuple's).
    fn opened_connection(&self, stack: &Stack) -> bool {
        self.tuple_was_free || stack.counters().tcp_time_wait_reused != self.time_wait_reused
    }
}

/// Connections and packet counts per flow group.
#[derive(Debug)]
pub(crate) struct GroupTracker {
    groups: u32,
    by_tuple: HashMap<TupleKey, u32>,
    connections: Vec<u32>,
    /// Packets and SYNs since the last publish, per group.
    packets: Vec<u64>,
    syns: Vec<u64>,
    /// Groups with something to publish (each listed once).
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Connections created here (passive and active opens; not those imported by a
    /// migration).
    pub(crate) created: u64,
    /// Times a reconcile walk was needed.
    pub(crate) reconciles: u64,
}

impl GroupTracker {
    pub(crate) fn new(groups: u32) -> GroupTracker {
        let n = groups as usize;
        GroupTracker {
            groups,
            by_tuple: HashMap::new(),
            connections: vec![0; n],
            packets: vec![0; n],
            syns: vec![0; n],
            dirty: Vec::new(),
            is_dirty: vec![false; n],
            created: 0,
            reconciles: 0,
        }
    }

    fn mark(&mut self, group: u32) {
        if let Some(d) = self.is_dirty.get_mut(group as usize) {
            if !*d {
                *d = true;
                self.dirty.push(group);
            }
        }
    }

    /// Counts a packet (and a SYN) of `group` processed here.
    pub(crate) fn count_packet(&mut self, group: u32, syn: bool) {
        let g = group as usize;
        if let Some(p) = self.packets.get_mut(g) {
            *p += 1;
        }
        if syn {
            if let Some(s) = self.syns.get_mut(g) {
                *s += 1;
            }
        }
        self.mark(group);
    }

    /// Starts tracking `key`; `new` counts it in [`GroupTracker::created`].
    fn add(&mut self, key: TupleKey, group: u32, new: bool) {
        if group >= self.groups || self.by_tuple.contains_key(&key) {
            return;
        }
        self.by_tuple.insert(key, group);
        if let Some(c) = self.connections.get_mut(group as usize) {
            *c += 1;
        }
        if new {
            self.created += 1;
        }
        self.mark(group);
    }

    fn remove(&mut self, key: &TupleKey) {
        if let Some(group) = self.by_tuple.remove(key) {
            if let Some(c) = self.connections.get_mut(group as usize) {
                *c = c.saturating_sub(1);
            }
            self.mark(group);
        }
    }

    /// After the stack handled a segment of connection (`local_port`, `remote`) in
    /// `group`, with `before` taken just before it did: tracks the connection if the
    /// segment created it (counting it even when its tuple was already tracked: a reopened
    /// TIME-WAIT), forgets it if the segment ended it.
    pub(crate) fn after_segment(
        &mut self,
        stack: &Stack,
        local_port: u16,
        remote: SocketAddrV4,
        group: u32,
        before: SegmentWatch,
    ) {
        let key = (local_port, remote);
        let live = !stack.tuple_free(local_port, remote);
        let opened = live && before.opened_connection(stack);
        match (live, self.by_tuple.contains_key(&key)) {
            // Untracked and live without this segment opening it: an active open whose
            // port the stack chose, not seen yet. Created here all the same.
            (true, false) => self.add(key, group, true),
            (true, true) if opened => {
                // One connection replaced another under the same tuple: the per-group
                // count stays, the total grows.
                self.created += 1;
                self.mark(group);
            }
            (false, true) => self.remove(&key),
            _ => {}
        }
    }

    /// After a migration moved connection (`local_port`, `remote`) of `group` in or out of
    /// this instance's stack: tracks or forgets it, without counting it as created (the
    /// instance that accepted or opened it did).
    pub(crate) fn after_migration(
        &mut self,
        stack: &Stack,
        local_port: u16,
        remote: SocketAddrV4,
        group: u32,
    ) {
        let key = (local_port, remote);
        let live = !stack.tuple_free(local_port, remote);
        match (live, self.by_tuple.contains_key(&key)) {
            (true, false) => self.add(key, group, false),
            (false, true) => self.remove(&key),
            _ => {}
        }
    }

    /// After an active open chose `local_port` towards `remote`.
    pub(crate) fn after_connect(
        &mut self,
        stack: &Stack,
        hasher: &FlowGroupHasher,
        local_port: u16,
        remote: SocketAddrV4,
    ) {
        if !stack.tuple_free(local_port, remote) {
            let local = stack.config().ipv4_addr;
            let group = hasher.group_of(*remote.ip(), local, remote.port(), local_port);
            self.add((local_port, remote), group, true);
        }
    }

    /// Connections tracked in `group`.
    pub(crate) fn connections(&self, group: u32) -> u32 {
        self.connections.get(group as usize).copied().unwrap_or(0)
    }

    /// Connections tracked in all groups.
    pub(crate) fn total(&self) -> usize {
        self.by_tuple.len()
    }

    /// Settles changes no segment explained; does nothing when the counts agree.
    pub(crate) fn reconcile(&mut self, stack: &Stack, hasher: &FlowGroupHasher) {
        if self.by_tuple.len() == stack.socket_count() {
            return;
        }
        self.reconciles += 1;
        if self.by_tuple.len() > stack.socket_count() {
            let gone: Vec<TupleKey> = self
                .by_tuple
                .keys()
                .filter(|(port, remote)| stack.tuple_free(*port, *remote))
                .copied()
                .collect();
            for key in gone {
                self.remove(&key);
            }
        }
        if self.by_tuple.len() < stack.socket_count() {
            // A connection we did not see created (an active open whose port the stack
            // chose): find it among the connections the stack will name.
            let local = stack.config().ipv4_addr;
            let found: Vec<(TupleKey, u32)> = stack
                .connections()
                .filter_map(|(h, _)| stack.tuple(h).ok())
                .map(|t| ((t.local.port(), t.remote), t))
                .filter(|(key, _)| !self.by_tuple.contains_key(key))
                .map(|(key, t)| {
                    (key, hasher.group_of(*t.remote.ip(), local, t.remote.port(), t.local.port()))
                })
                .collect();
            for (key, group) in found {
                self.add(key, group, true);
            }
        }
    }

    /// Marks `group` for the next publish (its owner changed).
    pub(crate) fn touch(&mut self, group: u32) {
        self.mark(group);
    }

    /// The tracked connections of `group`.
    pub(crate) fn tuples_in(&self, group: u32) -> Vec<TupleKey> {
        self.by_tuple.iter().filter(|(_, g)| **g == group).map(|(k, _)| *k).collect()
    }

    /// Writes the changed groups' counters into the control segment: packets and SYNs as
    /// increments, connections as the current value — the latter only for groups this
    /// instance owns (`me`), since connections left behind when a group moved (see
    /// `migrate`) must not overwrite the new owner's count.
    pub(crate) fn publish(&mut self, control: &ControlSegment, me: u16) {
        for group in std::mem::take(&mut self.dirty) {
            let g = group as usize;
            if let Some(d) = self.is_dirty.get_mut(g) {
                *d = false;
            }
            let Some(shared) = control.flow_group(group) else { continue };
            if let Some(p) = self.packets.get_mut(g) {
                if *p > 0 {
                    shared.packets.fetch_add(std::mem::take(p), Ordering::Relaxed);
                }
            }
            if let Some(s) = self.syns.get_mut(g) {
                if *s > 0 {
                    shared.syns.fetch_add(std::mem::take(s), Ordering::Relaxed);
                }
            }
            if shared.owner.load(Ordering::Relaxed) == u32::from(me) {
                shared.connections.store(self.connections(group), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowgroup::FlowGroupConfig;
    use crate::instance::rx::{FrameKind, classify};
    use std::net::Ipv4Addr;
    use tcp_core::Instant;
    use tcp_core::stack::StackConfig;
    use tcp_core::wire::EthernetAddress;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

    struct Pair {
        server: Stack,
        client: Stack,
        tracker: GroupTracker,
        hasher: FlowGroupHasher,
        now: Instant,
    }

    impl Pair {
        fn new() -> Pair {
            let mut server = Stack::new(StackConfig::new(
                EthernetAddress([2, 0, 0, 0, 0, 2]),
                SERVER,
                24,
                [1; 16],
            ));
            let mut client = Stack::new(StackConfig::new(
                EthernetAddress([2, 0, 0, 0, 0, 9]),
                CLIENT,
                24,
                [2; 16],
            ));
            server.add_neighbor(Instant::ZERO, CLIENT, EthernetAddress([2, 0, 0, 0, 0, 9]));
            client.add_neighbor(Instant::ZERO, SERVER, EthernetAddress([2, 0, 0, 0, 0, 2]));
            let cfg = FlowGroupConfig::default();
            Pair {
                server,
                client,
                tracker: GroupTracker::new(cfg.groups()),
                hasher: FlowGroupHasher::new(&cfg),
                now: Instant::ZERO,
            }
        }

        /// Moves frames both ways; the server side accounts every segment it receives.
        fn pump(&mut self) {
            let mut buf = vec![0u8; 1514];
            for _ in 0..20 {
                let mut moved = false;
                while let Some(n) = self.client.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let FrameKind::Tcp { src, dst, .. } = classify(&buf[..n]) else {
                        self.server.handle_frame(self.now, &buf[..n]);
                        continue;
                    };
                    let remote = SocketAddrV4::new(src.0, src.1);
                    let before = SegmentWatch::before(&self.server, dst.1, remote);
                    self.server.handle_frame(self.now, &buf[..n]);
                    let g = self.hasher.group_of(src.0, dst.0, src.1, dst.1);
                    self.tracker.after_segment(&self.server, dst.1, remote, g, before);
                }
                while let Some(n) = self.server.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    self.client.handle_frame(self.now, &buf[..n]);
                }
                if !moved {
                    break;
                }
            }
        }
    }

    #[test]
    fn segments_create_and_end_tracked_connections() {
        let mut p = Pair::new();
        let l = p.server.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 8).unwrap();
        let c =
            p.client.connect(Instant::ZERO, SocketAddrV4::new(SERVER, 80), Some(40000)).unwrap();
        p.pump();
        let g = p.hasher.group_of(CLIENT, SERVER, 40000, 80);
        assert_eq!(p.tracker.connections(g), 1);
        assert_eq!(p.tracker.created, 1);
        // The peer resets before the connection is accepted: the segment that ends it is
        // attributed too, no walk needed.
        p.client.abort(c).unwrap();
        p.pump();
        assert_eq!(p.server.socket_count(), 0);
        assert_eq!(p.tracker.connections(g), 0);
        assert_eq!(p.tracker.reconciles, 0);
        assert_eq!(p.server.accept_queue_len(l), Some(0));
    }

    /// One connection from the client's `port`, closed by the server first (as HTTP
    /// servers do), so the server keeps its tuple in TIME-WAIT.
    fn server_closes_first(p: &mut Pair, l: tcp_core::stack::ListenerHandle, port: u16) {
        let c = p.client.connect(p.now, SocketAddrV4::new(SERVER, 80), Some(port)).unwrap();
        p.pump();
        let (s, _) = p.server.accept(l).unwrap();
        p.server.close(s).unwrap();
        p.pump();
        p.client.close(c).unwrap();
        p.pump();
        // Later connections get later ISNs and timestamps, as RFC 6191 reuse requires.
        p.now += tcp_core::Duration::from_secs(1);
        p.server.handle_timeout(p.now);
        p.client.handle_timeout(p.now);
    }

    #[test]
    fn connections_that_reopen_a_time_wait_tuple_are_each_counted() {
        let mut p = Pair::new();
        let l = p.server.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 8).unwrap();
        const N: u64 = 5;
        for _ in 0..N {
            server_closes_first(&mut p, l, 40000);
        }
        assert_eq!(p.server.counters().tcp_time_wait_reused, N - 1, "the tuple was reopened");
        assert_eq!(p.tracker.created, N, "every connection counted, not every tuple");
        let g = p.hasher.group_of(CLIENT, SERVER, 40000, 80);
        assert_eq!(p.tracker.connections(g), 1, "one TIME-WAIT entry at a time");
    }

    #[test]
    fn a_connection_on_a_tuple_a_timer_freed_unnoticed_is_counted() {
        let mut p = Pair::new();
        let l = p.server.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 8).unwrap();
        server_closes_first(&mut p, l, 40002);
        // TIME-WAIT ends on a timer: no segment tells the tracker, which still holds it.
        p.now += tcp_core::Duration::from_secs(61);
        p.server.handle_timeout(p.now);
        assert_eq!(p.server.socket_count(), 0);
        assert_eq!(p.tracker.total(), 1, "not noticed yet");
        server_closes_first(&mut p, l, 40002);
        assert_eq!(p.server.counters().tcp_time_wait_reused, 0);
        assert_eq!(p.tracker.created, 2);
    }

    #[test]
    fn migrated_connections_are_tracked_but_not_counted_as_created() {
        let mut p = Pair::new();
        let l = p.server.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 8).unwrap();
        p.client.connect(p.now, SocketAddrV4::new(SERVER, 80), Some(40003)).unwrap();
        p.pump();
        let (s, _) = p.server.accept(l).unwrap();
        let remote = SocketAddrV4::new(CLIENT, 40003);
        let g = p.hasher.group_of(CLIENT, SERVER, 40003, 80);
        let state = p.server.export_connection(s).unwrap();
        p.tracker.after_migration(&p.server, 80, remote, g);
        assert_eq!((p.tracker.connections(g), p.tracker.created), (0, 1), "exported");
        p.server.import_connection(state).unwrap();
        p.tracker.after_migration(&p.server, 80, remote, g);
        assert_eq!((p.tracker.connections(g), p.tracker.created), (1, 1), "imported");
    }

    #[test]
    fn reconcile_settles_what_no_segment_explained() {
        let mut p = Pair::new();
        let l = p.server.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 8).unwrap();
        p.client.connect(Instant::ZERO, SocketAddrV4::new(SERVER, 80), Some(40001)).unwrap();
        p.pump();
        let g = p.hasher.group_of(CLIENT, SERVER, 40001, 80);
        let (s, _) = p.server.accept(l).unwrap();
        // The application aborts: the stack frees the socket without any segment in.
        p.server.abort(s).unwrap();
        p.pump(); // the reset goes out; nothing comes back
        assert_eq!(p.server.socket_count(), 0);
        assert_eq!(p.tracker.connections(g), 1, "not yet noticed");
        p.tracker.reconcile(&p.server, &p.hasher);
        assert_eq!(p.tracker.connections(g), 0);
        assert_eq!(p.tracker.reconciles, 1);
        // An active open whose port the stack chose is found by the other walk.
        let h = p.server.connect(Instant::ZERO, SocketAddrV4::new(CLIENT, 9), None).unwrap();
        let port = p.server.tuple(h).unwrap().local.port();
        p.tracker.reconcile(&p.server, &p.hasher);
        let g = p.hasher.group_of(CLIENT, SERVER, 9, port);
        assert_eq!(p.tracker.connections(g), 1);
        // One chosen by us is tracked at once.
        p.server.connect(Instant::ZERO, SocketAddrV4::new(CLIENT, 9), Some(50000)).unwrap();
        p.tracker.after_connect(&p.server, &p.hasher, 50000, SocketAddrV4::new(CLIENT, 9));
        assert_eq!(p.tracker.total(), 2);
        assert_eq!(p.tracker.created, 3);
    }

    #[test]
    fn publish_adds_packets_and_stores_connections() {
        use crate::control::{ControlConfig, ControlLayout};
        let cs = ControlSegment::create(
            "t-inst-groups",
            ControlLayout::new(1, 128, 1).unwrap(),
            &ControlConfig::default(),
        )
        .unwrap();
        let mut t = GroupTracker::new(128);
        t.count_packet(5, true);
        t.count_packet(5, false);
        t.count_packet(9, false);
        t.publish(&cs, 0);
        t.count_packet(5, false);
        t.publish(&cs, 0);
        let g5 = cs.flow_group(5).unwrap();
        assert_eq!((g5.packets.load(Ordering::Relaxed), g5.syns.load(Ordering::Relaxed)), (3, 1));
        assert_eq!(cs.flow_group(9).unwrap().packets.load(Ordering::Relaxed), 1);
        t.count_packet(200, true); // out of range: ignored, no panic
        t.publish(&cs, 0);
    }
}
