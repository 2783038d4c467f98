//! The balancing round the plane runs every [`BALANCE_INTERVAL`] (DESIGN.md "Flow-group
//! balancing"): read per-group packet counts (as deltas since the last round) and
//! connection counts and per-instance busy ratios from the control segment, let
//! [`Balancer::plan`] decide, then carry out each move.
//!
//! A move away from a live instance follows the two-phase protocol of
//! [`crate::instance::migrate`](crate::instance) under every policy: `FreezeGroup` to the
//! old owner; on its `ExportDone`, the steering switch (RETA entry or software table, then
//! the segment's owner table with the group `Moving`), `ImportGroup` to the new owner and
//! `SetOwner` to every instance; on the new owner's `GroupOwned`, the group is `Active`
//! again and the move is counted. Under `live` the balancer may pick groups that hold
//! connections (their TCBs migrate); under `idle` only empty ones, and the protocol still
//! matters: a SYN that reached the old owner just before the switch completes its
//! handshake there instead of being reset by the new owner.
//!
//! A dead instance's groups go straight to survivors (failover, any policy, even `off`):
//! its connections are lost with it. A move whose old owner dies before exporting is
//! aborted; one whose new owner does not confirm within [`IMPORT_TIMEOUT`] is closed
//! (the group is marked active; the new owner stops holding segments on its own).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::balancer::{
    Balancer, BalancerPolicy, BalancerTuning, GroupLoad, InstanceLoad, Move, TuningError,
};
use crate::control::{ControlMessage, ControlSegment, GroupState};
use crate::steering::Steering;

use super::spawn::InstanceProc;

/// How often a balancing round runs.
pub const BALANCE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for the old owner's `ExportDone` before the move is abandoned.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the new owner's `GroupOwned` after the switch.
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Abandoned moves remembered so that a late `ExportDone` still completes the switch
/// (the exported connections are on their way to the new owner by then).
const MAX_ABANDONED: usize = 1024;

/// How the balance loop reaches the instances.
pub trait InstanceLink {
    /// Queues `msg` for instance `instance` and wakes it; false if it could not be sent.
    fn send(&mut self, instance: u16, msg: ControlMessage) -> bool;
}

impl InstanceLink for Vec<InstanceProc> {
    fn send(&mut self, instance: u16, msg: ControlMessage) -> bool {
        self.get_mut(usize::from(instance)).is_some_and(|p| p.send(msg))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `FreezeGroup` sent; waiting for `ExportDone`.
    Frozen,
    /// Switched; waiting for `GroupOwned`.
    Switched,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    from: u16,
    to: u16,
    phase: Phase,
    since: Instant,
    connections: u32,
}

/// Balancer state kept across rounds.
#[derive(Debug)]
pub struct BalanceLoop {
    balancer: Balancer,
    last_packets: Vec<u64>,
    in_flight: BTreeMap<u32, InFlight>,
    abandoned: BTreeMap<u32, (u16, u16)>,
    /// Rounds run.
    pub rounds: u64,
    /// Moves made to even out load (switched).
    pub balance_moves: u64,
    /// Moves made away from dead instances.
    pub failover_moves: u64,
    /// Moves the steering refused (the software table in the control segment still
    /// steers those groups, through the instances' forwarding).
    pub failed_moves: u64,
    /// Moves confirmed by the new owner (`GroupOwned`).
    pub completed_moves: u64,
    /// Connections that migrated with their groups.
    pub migrated_connections: u64,
    /// Moves abandoned (old owner dead or silent) or closed without confirmation.
    pub aborted_moves: u64,
}

fn set_state(control: &ControlSegment, group: u32, state: GroupState) {
    if let Some(g) = control.flow_group(group) {
        g.state.store(state as u32, Ordering::Release);
    }
}

impl BalanceLoop {
    /// A loop for `policy` over `groups` groups.
    pub fn new(policy: BalancerPolicy, groups: u32) -> Result<BalanceLoop, TuningError> {
        let balancer = Balancer::new(policy, BalancerTuning::default())?;
        Ok(BalanceLoop {
            balancer,
            last_packets: vec![0; groups as usize],
            in_flight: BTreeMap::new(),
            abandoned: BTreeMap::new(),
            rounds: 0,
            balance_moves: 0,
            failover_moves: 0,
            failed_moves: 0,
            completed_moves: 0,
            migrated_connections: 0,
            aborted_moves: 0,
        })
    }

    /// The policy as `netpop stat` should describe it.
    pub fn describe_policy(&self) -> String {
        self.balancer.policy().to_string()
    }

    /// True while a move waits for an instance (the plane should read the instances'
    /// messages often rather than once per round).
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Moves started and not finished.
    pub fn moves_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Runs one round; `alive[i]` tells whether instance `i` is alive. Starts the moves the
    /// balancer plans (while earlier moves are still in flight only failovers happen) and
    /// returns them.
    pub fn round(
        &mut self,
        control: &ControlSegment,
        alive: &[bool],
        steering: &mut dyn Steering,
        link: &mut dyn InstanceLink,
        now: Instant,
    ) -> Vec<Move> {
        self.rounds += 1;
        let shared = control.flow_groups();
        let mut loads = Vec::with_capacity(shared.len());
        for ((group, g), last) in (0u32..).zip(shared).zip(self.last_packets.iter_mut()) {
            let packets = g.packets.load(Ordering::Relaxed);
            // Counters only grow; a smaller value means the owner's counter was reset (a
            // restarted instance), so the whole value is new.
            let delta = packets.checked_sub(*last).unwrap_or(packets);
            *last = packets;
            let Ok(owner) = u16::try_from(g.owner.load(Ordering::Relaxed)) else { continue };
            loads.push(GroupLoad {
                group,
                owner,
                packets: delta,
                connections: g.connections.load(Ordering::Relaxed),
            });
        }
        let instances: Vec<InstanceLoad> = (0u16..)
            .zip(control.instances())
            .map(|(instance, block)| InstanceLoad {
                instance,
                busy_ratio: block.busy_ppm.load(Ordering::Relaxed).min(1_000_000) as f32 / 1e6,
                alive: alive.get(usize::from(instance)).copied().unwrap_or(false),
            })
            .collect();
        let is_alive = |i: u16| alive.get(usize::from(i)).copied().unwrap_or(false);
        let settled = self.in_flight.is_empty();
        let plan = self.balancer.plan(&loads, &instances);
        let mut started = Vec::with_capacity(plan.len());
        for m in plan {
            if self.in_flight.contains_key(&m.group) {
                continue;
            }
            if !is_alive(m.from) {
                if self.switch(control, steering, link, alive, m) {
                    self.failover_moves += 1;
                    started.push(m);
                }
            } else if settled && self.begin_move(control, link, m, now) {
                started.push(m);
            }
        }
        started
    }

    /// Starts moving `m.group` from live `m.from` to `m.to` (the freeze). False if the old
    /// owner could not be told.
    pub fn begin_move(
        &mut self,
        control: &ControlSegment,
        link: &mut dyn InstanceLink,
        m: Move,
        now: Instant,
    ) -> bool {
        if self.in_flight.contains_key(&m.group) || m.from == m.to {
            return false;
        }
        set_state(control, m.group, GroupState::Frozen);
        if !link.send(m.from, ControlMessage::FreezeGroup { group: m.group, to: m.to }) {
            set_state(control, m.group, GroupState::Active);
            self.aborted_moves += 1;
            return false;
        }
        self.abandoned.remove(&m.group);
        self.in_flight.insert(
            m.group,
            InFlight { from: m.from, to: m.to, phase: Phase::Frozen, since: now, connections: 0 },
        );
        true
    }

    /// Points `m.group` at `m.to`: the group is `Moving` before the steering changes, so
    /// the new owner holds what arrives until the old owner's end marker; then the owner
    /// table, the counters, and `SetOwner` to every live instance.
    fn switch(
        &mut self,
        control: &ControlSegment,
        steering: &mut dyn Steering,
        link: &mut dyn InstanceLink,
        alive: &[bool],
        m: Move,
    ) -> bool {
        let Some(g) = control.flow_group(m.group) else { return false };
        let failover = !alive.get(usize::from(m.from)).copied().unwrap_or(false);
        let state = if failover { GroupState::Active } else { GroupState::Moving };
        g.state.store(state as u32, Ordering::Release);
        g.owner.store(u32::from(m.to), Ordering::Release);
        if let Err(e) = steering.set_owner(m.group, m.to) {
            self.failed_moves += 1;
            eprintln!("netpop: steering flow group {} to instance {}: {e}", m.group, m.to);
        }
        // A software publisher marks the group active; the move is not over yet.
        g.state.store(state as u32, Ordering::Release);
        g.moves.fetch_add(1, Ordering::Relaxed);
        control.header().owner_epoch.fetch_add(1, Ordering::Release);
        if let Some(from) = control.instance(m.from) {
            from.moves_out.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(to) = control.instance(m.to) {
            to.moves_in.fetch_add(1, Ordering::Relaxed);
        }
        if !failover {
            link.send(m.to, ControlMessage::ImportGroup { group: m.group, from: m.from });
        }
        for (i, _) in (0u16..).zip(alive).filter(|(_, a)| **a) {
            link.send(i, ControlMessage::SetOwner { group: m.group, owner: m.to });
        }
        true
    }

    /// Handles a message instance `from` sent the plane (others are ignored).
    pub fn on_message(
        &mut self,
        from: u16,
        msg: ControlMessage,
        control: &ControlSegment,
        steering: &mut dyn Steering,
        link: &mut dyn InstanceLink,
        alive: &[bool],
        now: Instant,
    ) {
        match msg {
            ControlMessage::ExportDone { group, connections } => {
                let pending = match self.in_flight.get(&group) {
                    Some(f) if f.phase == Phase::Frozen && f.from == from => Some((f.from, f.to)),
                    Some(_) => None,
                    // Abandoned, but the connections are already on their way: finish.
                    None => self.abandoned.remove(&group).filter(|(f, _)| *f == from),
                };
                let Some((from, to)) = pending else { return };
                let m = Move { group, from, to };
                if self.switch(control, steering, link, alive, m) {
                    self.balance_moves += 1;
                    self.in_flight.insert(
                        group,
                        InFlight { from, to, phase: Phase::Switched, since: now, connections },
                    );
                }
            }
            ControlMessage::GroupOwned { group } => {
                if let Some(f) = self.in_flight.get(&group) {
                    if f.phase == Phase::Switched && f.to == from {
                        set_state(control, group, GroupState::Active);
                        self.completed_moves += 1;
                        self.migrated_connections += u64::from(f.connections);
                        self.in_flight.remove(&group);
                    }
                }
            }
            _ => {}
        }
    }

    /// Gives up on moves whose instance died or went silent.
    pub fn check_moves(&mut self, control: &ControlSegment, alive: &[bool], now: Instant) {
        let is_alive = |i: u16| alive.get(usize::from(i)).copied().unwrap_or(false);
        let mut ended = Vec::new();
        for (&group, f) in &self.in_flight {
            let waited = now.saturating_duration_since(f.since);
            let give_up = match f.phase {
                Phase::Frozen => !is_alive(f.from) || waited > FREEZE_TIMEOUT,
                Phase::Switched => !is_alive(f.to) || waited > IMPORT_TIMEOUT,
            };
            if give_up {
                ended.push(group);
            }
        }
        for group in ended {
            let Some(f) = self.in_flight.remove(&group) else { continue };
            set_state(control, group, GroupState::Active);
            self.aborted_moves += 1;
            if f.phase == Phase::Frozen && is_alive(f.from) && self.abandoned.len() < MAX_ABANDONED
            {
                self.abandoned.insert(group, (f.from, f.to));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlConfig, ControlLayout};
    use crate::flowgroup::FlowGroupTable;
    use crate::steering::SoftwareSteering;
    use std::sync::{Arc, Mutex};

    type MoveLog = Arc<Mutex<Vec<(u32, u16)>>>;

    #[derive(Default)]
    struct Sent(Vec<(u16, ControlMessage)>);

    impl InstanceLink for Sent {
        fn send(&mut self, instance: u16, msg: ControlMessage) -> bool {
            self.0.push((instance, msg));
            true
        }
    }

    impl Sent {
        fn take(&mut self) -> Vec<(u16, ControlMessage)> {
            std::mem::take(&mut self.0)
        }
    }

    fn setup(groups: u32) -> (ControlSegment, SoftwareSteering, MoveLog) {
        let cs = ControlSegment::create(
            "t-bal",
            ControlLayout::new(2, groups, 4).unwrap(),
            &ControlConfig::default(),
        )
        .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let steering =
            SoftwareSteering::new(FlowGroupTable::new(groups, 2).unwrap(), move |g, o| {
                sink.lock().unwrap().push((g, o));
            });
        (cs, steering, log)
    }

    fn state(cs: &ControlSegment, g: u32) -> Option<GroupState> {
        GroupState::from_u32(cs.flow_group(g).unwrap().state.load(Ordering::Relaxed))
    }

    fn owner(cs: &ControlSegment, g: u32) -> u32 {
        cs.flow_group(g).unwrap().owner.load(Ordering::Relaxed)
    }

    #[test]
    fn a_move_freezes_then_switches_on_export_then_completes_on_ownership() {
        let (cs, mut steering, log) = setup(8);
        let mut bl = BalanceLoop::new(BalancerPolicy::Idle, 8).unwrap();
        let mut link = Sent::default();
        let t0 = Instant::now();
        // Instance 0's groups (even numbers) carry all the traffic, no connections.
        for g in [0u32, 2, 4, 6] {
            cs.flow_group(g).unwrap().packets.store(1000, Ordering::Relaxed);
        }
        let moves = bl.round(&cs, &[true, true], &mut steering, &mut link, t0);
        assert!(!moves.is_empty(), "an imbalance this large moves something");
        let sent = link.take();
        assert_eq!(sent.len(), moves.len(), "one freeze per move, nothing else yet");
        for (m, (to, msg)) in moves.iter().zip(&sent) {
            assert_eq!((m.from, m.to, *to), (0, 1, 0));
            assert_eq!(*msg, ControlMessage::FreezeGroup { group: m.group, to: 1 });
            assert_eq!(state(&cs, m.group), Some(GroupState::Frozen));
            assert_eq!(owner(&cs, m.group), 0, "not switched before the export");
        }
        assert!(log.lock().unwrap().is_empty());
        assert!(bl.busy());
        // No new round of moves while these are in flight.
        for g in [0u32, 2, 4, 6] {
            cs.flow_group(g).unwrap().packets.fetch_add(1000, Ordering::Relaxed);
        }
        assert!(bl.round(&cs, &[true, true], &mut steering, &mut link, t0).is_empty());

        let m = moves[0];
        // A stray ExportDone from the wrong instance changes nothing.
        bl.on_message(
            1,
            ControlMessage::ExportDone { group: m.group, connections: 3 },
            &cs,
            &mut steering,
            &mut link,
            &[true, true],
            t0,
        );
        assert!(link.take().is_empty());
        bl.on_message(
            0,
            ControlMessage::ExportDone { group: m.group, connections: 3 },
            &cs,
            &mut steering,
            &mut link,
            &[true, true],
            t0,
        );
        assert_eq!(owner(&cs, m.group), 1);
        assert_eq!(
            state(&cs, m.group),
            Some(GroupState::Moving),
            "new owner holds until the marker"
        );
        assert_eq!(log.lock().unwrap().as_slice(), &[(m.group, 1)], "steering switched");
        let sent = link.take();
        assert_eq!(sent[0], (1, ControlMessage::ImportGroup { group: m.group, from: 0 }));
        assert_eq!(
            &sent[1..],
            &[
                (0, ControlMessage::SetOwner { group: m.group, owner: 1 }),
                (1, ControlMessage::SetOwner { group: m.group, owner: 1 })
            ]
        );
        assert_eq!(cs.instance(0).unwrap().moves_out.load(Ordering::Relaxed), 1);
        assert_eq!(cs.instance(1).unwrap().moves_in.load(Ordering::Relaxed), 1);
        assert_eq!(cs.header().owner_epoch.load(Ordering::Relaxed), 1);
        bl.on_message(
            1,
            ControlMessage::GroupOwned { group: m.group },
            &cs,
            &mut steering,
            &mut link,
            &[true, true],
            t0,
        );
        assert_eq!(state(&cs, m.group), Some(GroupState::Active));
        assert_eq!((bl.balance_moves, bl.completed_moves, bl.migrated_connections), (1, 1, 3));
    }

    #[test]
    fn policy_off_moves_only_away_from_the_dead_and_live_takes_busy_groups() {
        let (cs, mut steering, _) = setup(8);
        let mut link = Sent::default();
        let now = Instant::now();
        let mut off = BalanceLoop::new(BalancerPolicy::Off, 8).unwrap();
        for g in [0u32, 2, 4, 6] {
            cs.flow_group(g).unwrap().packets.store(1000, Ordering::Relaxed);
        }
        assert!(off.round(&cs, &[true, true], &mut steering, &mut link, now).is_empty());
        let moves = off.round(&cs, &[true, false], &mut steering, &mut link, now);
        assert_eq!(moves.len(), 4, "every group of dead instance 1 goes to instance 0");
        assert!(moves.iter().all(|m| m.from == 1 && m.to == 0));
        assert_eq!(off.failover_moves, 4);
        assert!(cs.flow_groups().iter().all(|g| g.owner.load(Ordering::Relaxed) == 0));
        assert!(cs.flow_groups().iter().all(|g| g.state.load(Ordering::Relaxed) == 0));
        let sent = link.take();
        assert!(
            sent.iter()
                .all(|(i, m)| *i == 0 && matches!(m, ControlMessage::SetOwner { owner: 0, .. })),
            "the dead get nothing, failover needs no import: {sent:?}"
        );

        // Groups with connections: idle leaves them, live moves them.
        for policy in [BalancerPolicy::Idle, BalancerPolicy::Live] {
            let (cs, mut steering, _) = setup(8);
            let mut bl = BalanceLoop::new(policy, 8).unwrap();
            assert_eq!(bl.describe_policy(), policy.to_string());
            for g in [0u32, 2, 4, 6] {
                let g = cs.flow_group(g).unwrap();
                g.packets.store(1000, Ordering::Relaxed);
                g.connections.store(3, Ordering::Relaxed);
            }
            let moves = bl.round(&cs, &[true, true], &mut steering, &mut link, now);
            assert_eq!(moves.is_empty(), policy == BalancerPolicy::Idle, "{policy}");
        }
    }

    #[test]
    fn moves_are_abandoned_when_an_instance_dies_or_stays_silent() {
        let (cs, mut steering, _) = setup(8);
        let mut link = Sent::default();
        let t0 = Instant::now();
        let mut bl = BalanceLoop::new(BalancerPolicy::Live, 8).unwrap();
        assert!(bl.begin_move(&cs, &mut link, Move { group: 2, from: 0, to: 1 }, t0));
        assert!(bl.begin_move(&cs, &mut link, Move { group: 4, from: 0, to: 1 }, t0));
        assert!(!bl.begin_move(&cs, &mut link, Move { group: 4, from: 0, to: 1 }, t0), "once");
        // The old owner dies before exporting group 2's connections.
        bl.check_moves(&cs, &[false, true], t0);
        assert_eq!(bl.moves_in_flight(), 0);
        assert_eq!(bl.aborted_moves, 2);
        assert_eq!(state(&cs, 2), Some(GroupState::Active));

        // Alive but silent past the timeout: abandoned, yet a late export still switches.
        assert!(bl.begin_move(&cs, &mut link, Move { group: 6, from: 0, to: 1 }, t0));
        bl.check_moves(&cs, &[true, true], t0 + FREEZE_TIMEOUT + Duration::from_millis(1));
        assert_eq!(state(&cs, 6), Some(GroupState::Active));
        let later = t0 + FREEZE_TIMEOUT * 2;
        bl.on_message(
            0,
            ControlMessage::ExportDone { group: 6, connections: 1 },
            &cs,
            &mut steering,
            &mut link,
            &[true, true],
            later,
        );
        assert_eq!(owner(&cs, 6), 1);
        assert_eq!(bl.moves_in_flight(), 1);
        // The new owner never confirms.
        bl.check_moves(&cs, &[true, true], later + IMPORT_TIMEOUT + Duration::from_millis(1));
        assert_eq!(state(&cs, 6), Some(GroupState::Active));
        assert_eq!((bl.aborted_moves, bl.completed_moves), (4, 0));
    }
}
