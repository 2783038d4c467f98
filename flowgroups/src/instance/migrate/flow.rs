//! The kernel instance's side of a flow-group move (the protocol is in the parent module):
//! exporting a frozen group, importing records, steering segments around a move, the end
//! marker and the residue announcements.

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;

use tcp_core::Instant;
use tcp_core::stack::{SocketHandle, Stack};
use tcp_core::tcp::FourTuple;

use super::record::{
    self, REC_APP_REQUEST, REC_CONN, REC_EXPORT_END, REC_FORWARDING_DONE, REC_RESIDUE,
    REC_RESIDUE_GONE, Record, TupleKey,
};
use super::{Migrations, Steer, Via};
use crate::control::{ControlMessage, ControlSegment, FrameSlot, GroupState};
use crate::flowgroup::FlowGroupHasher;
use crate::instance::rx::{FrameKind, SLOT_RECORD, classify};
use crate::instance::{Activity, KernelInstance, RX_BATCH, deliver_tcp};

/// Where a TCP segment from `src` to `dst` goes: its flow group and the decision. An owner
/// outside the layout means a damaged table: the segment is served here rather than lost.
#[allow(clippy::too_many_arguments)]
pub(crate) fn steer_tcp(
    me: u16,
    control: &ControlSegment,
    hasher: &FlowGroupHasher,
    migrations: &mut Migrations,
    stack: &Stack,
    src: (std::net::Ipv4Addr, u16),
    dst: (std::net::Ipv4Addr, u16),
    via: Via,
    now_ns: u64,
) -> (u32, Steer) {
    let group = hasher.group_of(src.0, dst.0, src.1, dst.1);
    let Some(shared) = control.flow_group(group) else { return (group, Steer::Local) };
    let owner = match u16::try_from(shared.owner.load(Ordering::Acquire)) {
        Ok(o) if o < control.layout().instances() => o,
        _ => me,
    };
    let moving = shared.state.load(Ordering::Acquire) == GroupState::Moving as u32;
    let remote = SocketAddrV4::new(src.0, src.1);
    let key: TupleKey = (dst.1, remote);
    let ours = dst.0 == stack.config().ipv4_addr;
    let steer = migrations
        .steer(group, key, owner, moving, via, now_ns, || ours && !stack.tuple_free(dst.1, remote));
    (group, steer)
}

impl KernelInstance {
    /// `FreezeGroup{group, to}`: export every connection of `group` an app holds to `to`,
    /// leave the rest as residue, and tell the plane.
    pub(crate) fn freeze_group(&mut self, group: u32, to: u16) {
        if to == self.index || to >= self.control.layout().instances() {
            self.counters.control_errors += 1;
            return;
        }
        if !self.migrations.begin_export(group, to) {
            return;
        }
        // Settle the per-group bookkeeping first: its tuples name the residue.
        self.groups.reconcile(&self.stack, &self.hasher);
        let local_ip = self.stack.config().ipv4_addr;
        let group_of = |t: &FourTuple| {
            self.hasher.group_of(*t.remote.ip(), local_ip, t.remote.port(), t.local.port())
        };
        let candidates: Vec<(SocketHandle, FourTuple)> = self
            .stack
            .connections()
            .filter_map(|(h, _)| self.stack.tuple(h).ok().map(|t| (h, t)))
            .filter(|(_, t)| group_of(t) == group)
            .collect();
        let mut exported = 0u32;
        for (h, t) in candidates {
            if self.hub.socket_binding(h).is_none() {
                continue;
            }
            let Ok(state) = self.stack.export_connection(h) else { continue };
            let Some(binding) = self.hub.export_binding(h, to) else {
                // Cannot happen (the binding was just there); the TCB is gone either way.
                self.migrations.counters.import_failures += 1;
                continue;
            };
            let bytes = record::encode_conn(group, &binding, &state);
            self.forwarding.send_record(to, group, REC_CONN, bytes);
            self.groups.after_migration(&self.stack, t.local.port(), t.remote, group);
            exported += 1;
        }
        self.migrations.counters.connections_exported += u64::from(exported);
        let mut residue: Vec<(TupleKey, u16)> = Vec::new();
        for key in self.groups.tuples_in(group) {
            if !self.stack.tuple_free(key.0, key.1) {
                residue.push((key, self.index));
                self.migrations.note_held(key, group);
            }
        }
        self.migrations.counters.residue_left += residue.len() as u64;
        let hasher = &self.hasher;
        let inherited = self.migrations.residue_of(
            |k: &TupleKey| hasher.group_of(*k.1.ip(), local_ip, k.1.port(), k.0),
            group,
        );
        residue.extend(inherited);
        self.forwarding.send_record(
            to,
            group,
            REC_RESIDUE,
            record::encode_residue(group, &residue),
        );
        self.forwarding.send_record(
            to,
            group,
            REC_EXPORT_END,
            record::encode_export_end(group, exported),
        );
        self.forwarding.ring_doorbells();
        self.tell_plane(ControlMessage::ExportDone { group, connections: exported });
    }

    /// `SetOwner{group, owner}` after a switch: an export of `group` starts draining.
    pub(crate) fn migration_switched(&mut self, group: u32, owner: u16, now: Instant) {
        self.migrations.switched(group, owner, now.as_nanos());
    }

    /// `ImportGroup{group, from}`: the plane switched `group` to us.
    pub(crate) fn import_group(&mut self, group: u32, from: u16) {
        if from != self.index {
            self.migrations.importing_from(group, from);
        }
        self.groups.touch(group);
    }

    /// One slot from `peer`'s forwarding ring.
    pub(crate) fn on_peer_slot(
        &mut self,
        now: Instant,
        peer: u16,
        slot: &FrameSlot,
        act: &mut Activity,
    ) {
        if slot.reserved == SLOT_RECORD {
            if let Some((kind, bytes)) = self.migrations.reassembly.push(peer, slot) {
                self.on_record(now, peer, kind, &bytes, act);
            }
            return;
        }
        let Some(frame) = slot.frame() else { return };
        act.forwarded_in += 1;
        self.deliver(now, frame, Via::Peer(peer), act);
    }

    /// Processes, forwards or holds one frame that did not come from our queue.
    pub(crate) fn deliver(&mut self, now: Instant, frame: &[u8], via: Via, act: &mut Activity) {
        if let Some(c) = self.capture.as_mut() {
            let _ = c.record(frame);
        }
        let kind = classify(frame);
        let FrameKind::Tcp { src, dst, syn } = kind else {
            // ARP copies and anything else from a peer are processed here, never sent on.
            self.stack.handle_frame(now, frame);
            return;
        };
        let now_ns = now.as_nanos();
        let (group, steer) = steer_tcp(
            self.index,
            &self.control,
            &self.hasher,
            &mut self.migrations,
            &self.stack,
            src,
            dst,
            via,
            now_ns,
        );
        match steer {
            Steer::Local => {
                deliver_tcp(now, &mut self.stack, &mut self.groups, frame, kind, group, syn);
                let owned = self
                    .control
                    .flow_group(group)
                    .is_some_and(|g| g.owner.load(Ordering::Relaxed) == u32::from(self.index));
                let remote = SocketAddrV4::new(src.0, src.1);
                if !owned && !self.stack.tuple_free(dst.1, remote) {
                    // A connection we keep for a group we do not own: announce its end.
                    self.migrations.note_held((dst.1, remote), group);
                }
            }
            Steer::Forward(to) => {
                if self.forwarding.forward(to, frame, group) {
                    act.forwarded_out += 1;
                }
            }
            Steer::Hold => {
                self.migrations.hold(group, frame, now_ns);
            }
        }
    }

    fn on_record(&mut self, now: Instant, peer: u16, kind: u8, bytes: &[u8], act: &mut Activity) {
        let record = match record::decode_record(kind, bytes) {
            Ok(r) => r,
            Err(_) => {
                self.migrations.counters.bad_records += 1;
                return;
            }
        };
        act.control_messages += 1;
        match record {
            Record::Conn { group, binding, state } => {
                self.migrations.importing_from(group, peer);
                let tuple = state.tuple;
                match self.stack.import_connection(*state) {
                    Ok(h) => match self.hub.import_binding(&mut self.stack, binding, h) {
                        Ok(()) => {
                            self.migrations.counters.connections_imported += 1;
                            if let Some(m) = self.migrations.incoming.get_mut(&group) {
                                m.imported += 1;
                            }
                            self.groups.after_migration(
                                &self.stack,
                                tuple.local.port(),
                                tuple.remote,
                                group,
                            );
                        }
                        Err(_) => {
                            let _ = self.stack.abort(h);
                            self.migrations.import_failed(group);
                        }
                    },
                    Err(_) => self.migrations.import_failed(group),
                }
            }
            Record::Residue { group, entries } => {
                self.migrations.importing_from(group, peer);
                self.migrations.add_residue(&entries, now.as_nanos());
            }
            Record::ExportEnd { group, connections } => {
                self.migrations.importing_from(group, peer);
                // Connection records that never arrived whole (damaged in transit).
                let seen =
                    self.migrations.incoming.get(&group).map_or(0, |m| m.imported + m.failed);
                self.migrations.counters.import_failures +=
                    u64::from(connections.saturating_sub(seen));
            }
            Record::ForwardingDone { group } => self.finish_import(now, group, false, act),
            Record::ResidueGone { tuples } => self.migrations.residue_gone(peer, &tuples),
            Record::AppRequest { app_id, request } => {
                let mut no_ports = |_: &Stack, _: SocketAddrV4| None;
                self.hub.serve_forwarded(&mut self.stack, now, app_id, request, &mut no_ports);
                act.app_requests += 1;
            }
        }
    }

    /// Ends an import: the held segments are processed (or forwarded to residue holders)
    /// in the order they arrived, and the plane is told.
    fn finish_import(&mut self, now: Instant, group: u32, timed_out: bool, act: &mut Activity) {
        let known = self.migrations.incoming.get(&group).is_some_and(|m| !m.done);
        if !known {
            // A marker for an import we gave up on (or never saw): nothing held.
            if !timed_out {
                self.tell_plane(ControlMessage::GroupOwned { group });
            }
            return;
        }
        let held = self.migrations.finish_import(group, timed_out);
        for frame in held {
            self.deliver(now, &frame, Via::Released, act);
        }
        self.groups.touch(group);
        self.tell_plane(ControlMessage::GroupOwned { group });
    }

    /// Per-iteration work of moves in progress: end markers that are due, imports to give
    /// up, residue announcements, and app requests to hand on. `rx_dry`: the last receive
    /// pass took fewer frames than the batch (the queue ran dry).
    pub(crate) fn migration_tick(&mut self, now: Instant, rx_frames: u32, act: &mut Activity) {
        let now_ns = now.as_nanos();
        for (app, to, slot) in self.hub.take_forwarded_requests() {
            let bytes = record::encode_app_request(app, &slot);
            if self.forwarding.send_record(to, 0, REC_APP_REQUEST, bytes) {
                self.migrations.counters.requests_forwarded += 1;
            }
        }
        if !self.migrations.outgoing.is_empty() {
            let dry = (rx_frames as usize) < RX_BATCH;
            let rings_empty = !self.forwarding.pending();
            for (group, to) in self.migrations.drained(now_ns, dry, rings_empty) {
                self.forwarding.send_record(
                    to,
                    group,
                    REC_FORWARDING_DONE,
                    record::encode_group(group),
                );
                self.tell_plane(ControlMessage::ForwardingDone { group });
            }
        }
        let control = &self.control;
        let active = |g: u32| {
            control
                .flow_group(g)
                .is_some_and(|s| s.state.load(Ordering::Acquire) == GroupState::Active as u32)
        };
        let give_up = self.migrations.expired(now_ns, active);
        for group in give_up {
            self.finish_import(now, group, true, act);
        }
        let control = &self.control;
        let me = u32::from(self.index);
        let stack = &self.stack;
        let gone = self.migrations.sweep(
            now_ns,
            |k| stack.tuple_free(k.0, k.1),
            |g| control.flow_group(g).is_some_and(|s| s.owner.load(Ordering::Relaxed) == me),
        );
        if let Some(gone) = gone.filter(|g| !g.is_empty()) {
            let bytes = record::encode_gone(&gone);
            for peer in (0..self.control.layout().instances()).filter(|&p| p != self.index) {
                self.forwarding.send_record(peer, 0, REC_RESIDUE_GONE, bytes.clone());
            }
        }
        self.forwarding.flush();
    }

    /// Queues a message for the plane (counted if its ring is full).
    pub(crate) fn tell_plane(&mut self, msg: ControlMessage) {
        if !matches!(self.to_plane.push(&msg.encode()), Ok(true)) {
            self.counters.control_errors += 1;
        }
    }
}
