//! Per-flow-group load of one instance: packets, SYNs and connections, published into the
//! control segment's flow-group table for the balancer (DESIGN.md "Flow-group balancing":
//! the `idle` policy may only move a group that holds no connection state, so the
//! connection count must include every state, TIME-WAIT too).
//!
//! `tcp_core` reports no event when it creates a connection (a SYN on a listener) or frees
//! one (end of TIME-WAIT, a reset, the last ACK after close), so the tracker follows the
//! 4-tuples it can attribute: after each frame it checks whether that frame's 4-tuple
//! appeared in or left the stack's table, and it records active opens by the port it
//! chose. What cannot be attributed (timers, application closes) shows up as a
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
    /// Connections ever tracked.
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

    fn add(&mut self, key: TupleKey, group: u32) {
        if group >= self.groups || self.by_tuple.contains_key(&key) {
            return;
        }
        self.by_tuple.insert(key, group);
        if let Some(c) = self.connections.get_mut(group as usize) {
            *c += 1;
        }
        self.created += 1;
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
    /// `group`: tracks the connection if the segment created it, forgets it if the
    /// segment ended it.
    pub(crate) fn after_segment(
        &mut self,
        stack: &Stack,
        local_port: u16,
        remote: SocketAddrV4,
        group: u32,
    ) {
        let key = (local_port, remote);
        let live = !stack.tuple_free(local_port, remote);
        match (live, self.by_tuple.contains_key(&key)) {
            (true, false) => self.add(key, group),
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
            self.add((local_port, remote), group);
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
                self.add(key, group);
            }
        }
    }

    /// Writes the changed groups' counters into the control segment: packets and SYNs as
    /// increments, connections as the current value.
    pub(crate) fn publish(&mut self, control: &ControlSegment) {
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
            shared.connections.store(self.connections(group), Ordering::Relaxed);
        }
    }
}
