//! The balancing round the plane runs every [`BALANCE_INTERVAL`] (DESIGN.md "Flow-group
//! balancing"): read per-group packet counts (as deltas since the last round) and
//! connection counts and per-instance busy ratios from the control segment, let
//! [`Balancer::plan`] decide, then carry out each move — steering first (RETA entry or
//! software table), then the segment's owner table, the move counters and a `SetOwner` to
//! every live instance.
//!
//! Under policy `live` the balancer may pick groups that hold connections, which only
//! works if their TCBs migrate (freeze, export, import); that protocol is not built yet,
//! so `live` currently plans with the `idle` rule and says so in `netpop stat`.
//! Failover (a dead instance's groups go to survivors) happens under every policy.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::balancer::{
    Balancer, BalancerPolicy, BalancerTuning, GroupLoad, InstanceLoad, Move, TuningError,
};
use crate::control::ControlSegment;
use crate::steering::Steering;

/// How often a balancing round runs.
pub const BALANCE_INTERVAL: Duration = Duration::from_millis(100);

/// Balancer state kept across rounds.
#[derive(Debug)]
pub struct BalanceLoop {
    balancer: Balancer,
    requested: BalancerPolicy,
    last_packets: Vec<u64>,
    /// Rounds run.
    pub rounds: u64,
    /// Moves made to even out load.
    pub balance_moves: u64,
    /// Moves made away from dead instances.
    pub failover_moves: u64,
    /// Moves the steering refused.
    pub failed_moves: u64,
}

impl BalanceLoop {
    /// A loop for `policy` over `groups` groups.
    pub fn new(policy: BalancerPolicy, groups: u32) -> Result<BalanceLoop, TuningError> {
        let effective = match policy {
            BalancerPolicy::Live => BalancerPolicy::Idle,
            p => p,
        };
        let balancer = Balancer::new(effective, BalancerTuning::default())?;
        Ok(BalanceLoop {
            balancer,
            requested: policy,
            last_packets: vec![0; groups as usize],
            rounds: 0,
            balance_moves: 0,
            failover_moves: 0,
            failed_moves: 0,
        })
    }

    /// The policy as `netpop stat` should describe it.
    pub fn describe_policy(&self) -> String {
        match self.requested {
            BalancerPolicy::Live => {
                "live (connection migration not built: moves idle groups only)".into()
            }
            p => p.to_string(),
        }
    }

    /// Runs one round; `alive[i]` tells whether instance `i` is alive. Returns the moves
    /// carried out (the caller announces them with `SetOwner`).
    pub fn round(
        &mut self,
        control: &ControlSegment,
        alive: &[bool],
        steering: &mut dyn Steering,
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
        let plan = self.balancer.plan(&loads, &instances);
        let mut done = Vec::with_capacity(plan.len());
        for m in plan {
            if let Err(e) = steering.set_owner(m.group, m.to) {
                self.failed_moves += 1;
                eprintln!("netpop: moving flow group {} to instance {}: {e}", m.group, m.to);
                continue;
            }
            let Some(g) = control.flow_group(m.group) else { continue };
            g.owner.store(u32::from(m.to), Ordering::Release);
            g.moves.fetch_add(1, Ordering::Relaxed);
            control.header().owner_epoch.fetch_add(1, Ordering::Release);
            if let Some(from) = control.instance(m.from) {
                from.moves_out.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(to) = control.instance(m.to) {
                to.moves_in.fetch_add(1, Ordering::Relaxed);
            }
            if alive.get(usize::from(m.from)).copied().unwrap_or(false) {
                self.balance_moves += 1;
            } else {
                self.failover_moves += 1;
            }
            done.push(m);
        }
        done
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

    #[test]
    fn skewed_idle_groups_move_and_are_counted() {
        let (cs, mut steering, log) = setup(8);
        let mut bl = BalanceLoop::new(BalancerPolicy::Idle, 8).unwrap();
        // Instance 0's groups (even numbers) carry all the traffic, no connections.
        for g in [0u32, 2, 4, 6] {
            cs.flow_group(g).unwrap().packets.store(1000, Ordering::Relaxed);
        }
        let moves = bl.round(&cs, &[true, true], &mut steering);
        assert!(!moves.is_empty(), "an imbalance this large moves something");
        for m in &moves {
            assert_eq!((m.from, m.to), (0, 1));
            assert_eq!(cs.flow_group(m.group).unwrap().owner.load(Ordering::Relaxed), 1);
            assert_eq!(cs.flow_group(m.group).unwrap().moves.load(Ordering::Relaxed), 1);
        }
        assert_eq!(log.lock().unwrap().len(), moves.len(), "steering saw every move");
        let moved = moves.len() as u64;
        assert_eq!(cs.instance(0).unwrap().moves_out.load(Ordering::Relaxed), moved);
        assert_eq!(cs.instance(1).unwrap().moves_in.load(Ordering::Relaxed), moved);
        assert_eq!(bl.balance_moves, moved);
        assert_eq!(cs.header().owner_epoch.load(Ordering::Relaxed), moved);

        // No new packets: the next round sees zero deltas and moves nothing.
        assert!(bl.round(&cs, &[true, true], &mut steering).is_empty());
    }

    #[test]
    fn policy_off_moves_only_away_from_the_dead_and_live_holds_connections() {
        let (cs, mut steering, _) = setup(8);
        let mut off = BalanceLoop::new(BalancerPolicy::Off, 8).unwrap();
        for g in [0u32, 2, 4, 6] {
            cs.flow_group(g).unwrap().packets.store(1000, Ordering::Relaxed);
        }
        assert!(off.round(&cs, &[true, true], &mut steering).is_empty());
        let moves = off.round(&cs, &[true, false], &mut steering);
        assert_eq!(moves.len(), 4, "every group of dead instance 1 goes to instance 0");
        assert!(moves.iter().all(|m| m.from == 1 && m.to == 0));
        assert_eq!(off.failover_moves, 4);
        assert!(cs.flow_groups().iter().all(|g| g.owner.load(Ordering::Relaxed) == 0));

        let (cs, mut steering, _) = setup(8);
        let mut live = BalanceLoop::new(BalancerPolicy::Live, 8).unwrap();
        assert!(live.describe_policy().starts_with("live"));
        for g in [0u32, 2, 4, 6] {
            let g = cs.flow_group(g).unwrap();
            g.packets.store(1000, Ordering::Relaxed);
            g.connections.store(3, Ordering::Relaxed);
        }
        assert!(
            live.round(&cs, &[true, true], &mut steering).is_empty(),
            "groups with connections stay put until migration exists"
        );
    }
}
