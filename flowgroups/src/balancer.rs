//! The flow-group balancer: decides which flow groups change owner (DESIGN.md "Flow-group
//! balancing").
//!
//! The control plane calls [`Balancer::plan`] once per balancing round with each group's
//! packet count since the previous round and connection count, and each instance's busy
//! ratio and liveness. The plan is a list of [`Move`]s for the caller to carry out (rewrite
//! steering; under `live`, also freeze, export and import the group's connections).
//!
//! Rules, in order:
//! 1. Failover, under every policy (even `off`): each group whose owner is dead, or not
//!    listed at all, goes to the surviving instance that owns the fewest groups at that
//!    point, so a dead instance's groups spread evenly. These moves ignore the move budget
//!    and the hysteresis: a dead owner serves nobody.
//! 2. Balancing (`idle` and `live` only): while the busiest survivor's packet load exceeds
//!    the mean by more than the threshold, move one of its groups to the least loaded
//!    survivor. The group must carry at most half the gap between the two, so the
//!    receiver never ends up busier than the giver (no ping-pong within a round) and every
//!    move strictly narrows the spread. Among those, `idle` takes the heaviest group that
//!    holds no connection (NetPopcorn's rule); `live` may take any group and weighs each
//!    by packets / (1 + connections), so at equal benefit it prefers empty groups, then the
//!    ones with the fewest connections to migrate.
//! 3. Hysteresis: a group that moved in round `r` is not moved by balancing again before
//!    round `r + min_interval + 1`.
//!
//! Load is measured in packets because packets are what moving a group moves; busy ratios
//! only break ties (between equally loaded instances, the busier one gives and the less
//! busy one takes). Everything is deterministic: the same inputs give the same plan
//! whatever the order of the input slices.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Which groups the balancer may move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BalancerPolicy {
    /// No balancing; only a dead instance's groups are reassigned.
    #[default]
    Off,
    /// Move only groups that hold no connection state (NetPopcorn).
    Idle,
    /// Move any group; its connections migrate with it.
    Live,
}

impl BalancerPolicy {
    /// The name the command line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BalancerPolicy::Off => "off",
            BalancerPolicy::Idle => "idle",
            BalancerPolicy::Live => "live",
        }
    }
}

impl fmt::Display for BalancerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is not "off", "idle" or "live".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsePolicyError {
    /// What was given.
    pub input: String,
}

impl fmt::Display for ParsePolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown balancer policy '{}' (expected off, idle or live)", self.input)
    }
}

impl std::error::Error for ParsePolicyError {}

impl FromStr for BalancerPolicy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(BalancerPolicy::Off),
            "idle" => Ok(BalancerPolicy::Idle),
            "live" => Ok(BalancerPolicy::Live),
            other => Err(ParsePolicyError { input: other.to_string() }),
        }
    }
}

/// One flow group as the balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLoad {
    /// The group.
    pub group: u32,
    /// Its current owner.
    pub owner: u16,
    /// Packets received for it since the previous plan.
    pub packets: u64,
    /// Connections it holds in any state (SYN-RECEIVED to TIME-WAIT).
    pub connections: u32,
}

/// One instance as the balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InstanceLoad {
    /// The instance.
    pub instance: u16,
    /// Share of the last period it spent working rather than waiting (0.0 to 1.0).
    pub busy_ratio: f32,
    /// Whether it is still running (heartbeat fresh).
    pub alive: bool,
}

/// A change of owner for one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The group.
    pub group: u32,
    /// Its owner before the move.
    pub from: u16,
    /// Its owner after the move.
    pub to: u16,
}

/// Knobs of the balancer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BalancerTuning {
    /// How far above the mean the busiest instance may be before groups move (0.2 = 20%).
    pub imbalance_threshold: f32,
    /// Balancing moves per round at most (failover moves are not limited).
    pub max_moves_per_round: usize,
    /// Rounds a moved group stays put before balancing may move it again.
    pub min_interval: u32,
}

impl Default for BalancerTuning {
    fn default() -> Self {
        BalancerTuning { imbalance_threshold: 0.2, max_moves_per_round: 8, min_interval: 4 }
    }
}

/// A tuning the balancer cannot work with.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum TuningError {
    /// The imbalance threshold is negative, infinite or NaN.
    Threshold(f32),
}

impl fmt::Display for TuningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TuningError::Threshold(t) => {
                write!(f, "imbalance threshold {t} must be a finite number >= 0")
            }
        }
    }
}

impl std::error::Error for TuningError {}

/// Plans flow-group moves round after round; remembers recent moves for hysteresis.
#[derive(Clone, Debug)]
pub struct Balancer {
    policy: BalancerPolicy,
    tuning: BalancerTuning,
    /// Rounds planned so far; the current plan is round `round`.
    round: u64,
    /// Round in which each recently moved group last moved; entries older than the
    /// hysteresis window are pruned at the start of each plan.
    last_moved: BTreeMap<u32, u64>,
}

/// One survivor's running totals while a plan is built.
#[derive(Clone, Copy, Debug)]
struct Survivor {
    instance: u16,
    busy: f32,
    packets: u64,
    groups: u32,
}

impl Balancer {
    /// A balancer with `policy` and `tuning`.
    pub fn new(policy: BalancerPolicy, tuning: BalancerTuning) -> Result<Self, TuningError> {
        let t = tuning.imbalance_threshold;
        if !t.is_finite() || t < 0.0 {
            return Err(TuningError::Threshold(t));
        }
        Ok(Balancer { policy, tuning, round: 0, last_moved: BTreeMap::new() })
    }

    /// The current policy.
    pub fn policy(&self) -> BalancerPolicy {
        self.policy
    }

    /// Switches policy from the next plan on (hysteresis memory is kept).
    pub fn set_policy(&mut self, policy: BalancerPolicy) {
        self.policy = policy;
    }

    /// The tuning.
    pub fn tuning(&self) -> &BalancerTuning {
        &self.tuning
    }

    /// Plans made so far.
    pub fn rounds(&self) -> u64 {
        self.round
    }

    /// Plans one round. `groups` lists each group once with its owner as the steering
    /// holds it now (a repeated group counts once, first entry wins); `instances` lists
    /// each instance once (first entry wins). The caller carries out the returned moves in
    /// order; a move it could not carry out simply shows up again as the old owner next
    /// round.
    pub fn plan(&mut self, groups: &[GroupLoad], instances: &[InstanceLoad]) -> Vec<Move> {
        self.round += 1;
        let (round, window) = (self.round, u64::from(self.tuning.min_interval));
        self.last_moved.retain(|_, moved| round - *moved <= window);

        let mut by_group: BTreeMap<u32, GroupLoad> = BTreeMap::new();
        for g in groups {
            by_group.entry(g.group).or_insert(*g);
        }
        let mut listed: BTreeMap<u16, InstanceLoad> = BTreeMap::new();
        for i in instances {
            listed.entry(i.instance).or_insert(*i);
        }
        let mut survivors: BTreeMap<u16, Survivor> = listed
            .values()
            .filter(|i| i.alive)
            .map(|i| {
                let busy = if i.busy_ratio.is_nan() { 0.0 } else { i.busy_ratio };
                (i.instance, Survivor { instance: i.instance, busy, packets: 0, groups: 0 })
            })
            .collect();
        if survivors.is_empty() {
            return Vec::new();
        }
        for g in by_group.values() {
            if let Some(s) = survivors.get_mut(&g.owner) {
                s.packets = s.packets.saturating_add(g.packets);
                s.groups += 1;
            }
        }

        let mut moves = Vec::new();
        self.fail_over(&mut by_group, &mut survivors, &mut moves);
        if self.policy != BalancerPolicy::Off && survivors.len() > 1 {
            self.balance(&mut by_group, &mut survivors, &mut moves);
        }
        moves
    }

    /// Rule 1: every group whose owner is not a survivor goes to the survivor with the
    /// fewest groups (then the least packets, then the lowest number).
    fn fail_over(
        &mut self,
        by_group: &mut BTreeMap<u32, GroupLoad>,
        survivors: &mut BTreeMap<u16, Survivor>,
        moves: &mut Vec<Move>,
    ) {
        for g in by_group.values_mut() {
            if survivors.contains_key(&g.owner) {
                continue;
            }
            let Some(to) = survivors.values_mut().min_by_key(|s| (s.groups, s.packets, s.instance))
            else {
                return;
            };
            to.groups += 1;
            to.packets = to.packets.saturating_add(g.packets);
            moves.push(Move { group: g.group, from: g.owner, to: to.instance });
            g.owner = to.instance;
            self.last_moved.insert(g.group, self.round);
        }
    }

    /// Rule 2: relieve the busiest survivor towards the least busy one, one group at a
    /// time, within the move budget.
    fn balance(
        &mut self,
        by_group: &mut BTreeMap<u32, GroupLoad>,
        survivors: &mut BTreeMap<u16, Survivor>,
        moves: &mut Vec<Move>,
    ) {
        let total: u64 = survivors.values().map(|s| s.packets).fold(0, u64::saturating_add);
        let mean = total as f64 / survivors.len() as f64;
        let limit = mean * (1.0 + f64::from(self.tuning.imbalance_threshold));
        let window = u64::from(self.tuning.min_interval);
        for _ in 0..self.tuning.max_moves_per_round {
            let (Some(hot), Some(cold)) = (
                survivors.values().copied().max_by(busier),
                survivors.values().copied().min_by(busier),
            ) else {
                return;
            };
            if hot.packets as f64 <= limit || hot.instance == cold.instance {
                return;
            }
            let half_gap = (hot.packets - cold.packets) / 2;
            let candidate = by_group
                .values()
                .filter(|g| g.owner == hot.instance && g.packets > 0 && g.packets <= half_gap)
                .filter(|g| self.policy != BalancerPolicy::Idle || g.connections == 0)
                .filter(|g| self.last_moved.get(&g.group).is_none_or(|&r| self.round - r > window))
                .max_by(|a, b| move_benefit(a, b));
            let Some(group) = candidate.map(|g| g.group) else { return };
            let Some(g) = by_group.get_mut(&group) else { return };
            g.owner = cold.instance;
            let packets = g.packets;
            if let Some(s) = survivors.get_mut(&hot.instance) {
                s.packets -= packets;
                s.groups -= 1;
            }
            if let Some(s) = survivors.get_mut(&cold.instance) {
                s.packets += packets;
                s.groups += 1;
            }
            self.last_moved.insert(group, self.round);
            moves.push(Move { group, from: hot.instance, to: cold.instance });
        }
    }
}

/// Orders survivors by load: packets, then busy ratio; the lower instance number counts as
/// the busier one on a full tie, so `max_by` picks it as giver and `min_by` the highest
/// number as taker (never the same instance when two or more survive).
fn busier(a: &Survivor, b: &Survivor) -> Ordering {
    a.packets.cmp(&b.packets).then(a.busy.total_cmp(&b.busy)).then(b.instance.cmp(&a.instance))
}

/// Orders candidate groups by what moving them is worth: packets relieved per unit of
/// migration cost (one for the move itself plus one per connection), then more packets,
/// then the lower group number.
fn move_benefit(a: &GroupLoad, b: &GroupLoad) -> Ordering {
    // Cross-multiplied to stay exact: a.p / (1 + a.c) vs b.p / (1 + b.c).
    let lhs = u128::from(a.packets) * (1 + u128::from(b.connections));
    let rhs = u128::from(b.packets) * (1 + u128::from(a.connections));
    lhs.cmp(&rhs).then(a.packets.cmp(&b.packets)).then(b.group.cmp(&a.group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn alive(instance: u16) -> InstanceLoad {
        InstanceLoad { instance, busy_ratio: 0.5, alive: true }
    }

    fn dead(instance: u16) -> InstanceLoad {
        InstanceLoad { instance, busy_ratio: 0.0, alive: false }
    }

    fn group(group: u32, owner: u16, packets: u64, connections: u32) -> GroupLoad {
        GroupLoad { group, owner, packets, connections }
    }

    fn tuning(threshold: f32, moves: usize, interval: u32) -> BalancerTuning {
        BalancerTuning {
            imbalance_threshold: threshold,
            max_moves_per_round: moves,
            min_interval: interval,
        }
    }

    fn balancer(policy: BalancerPolicy) -> Balancer {
        Balancer::new(policy, tuning(0.2, 8, 2)).unwrap()
    }

    /// Packets per instance after applying `moves` to `groups`.
    fn loads_after(groups: &mut [GroupLoad], moves: &[Move], instances: u16) -> Vec<u64> {
        for m in moves {
            let g = groups.iter_mut().find(|g| g.group == m.group).unwrap();
            assert_eq!(g.owner, m.from, "a move starts from the group's current owner");
            g.owner = m.to;
        }
        let mut loads = vec![0u64; usize::from(instances)];
        for g in groups.iter() {
            loads[usize::from(g.owner)] += g.packets;
        }
        loads
    }

    #[test]
    fn policy_names_round_trip_and_bad_names_are_refused() {
        for p in [BalancerPolicy::Off, BalancerPolicy::Idle, BalancerPolicy::Live] {
            assert_eq!(p.to_string().parse::<BalancerPolicy>(), Ok(p));
        }
        let err = "Live".parse::<BalancerPolicy>().unwrap_err();
        assert_eq!(err.input, "Live");
        assert!(err.to_string().contains("off, idle or live"));
    }

    #[test]
    fn bad_thresholds_are_refused() {
        for t in [-0.1, f32::NAN, f32::INFINITY] {
            assert!(Balancer::new(BalancerPolicy::Live, tuning(t, 1, 0)).is_err(), "{t}");
        }
        assert!(Balancer::new(BalancerPolicy::Live, tuning(0.0, 1, 0)).is_ok());
    }

    #[test]
    fn balanced_load_moves_nothing() {
        let groups = [group(0, 0, 100, 0), group(1, 1, 115, 0), group(2, 0, 5, 0)];
        // Mean 110, busiest 115: within 20%.
        let mut b = balancer(BalancerPolicy::Live);
        assert_eq!(b.plan(&groups, &[alive(0), alive(1)]), vec![]);
    }

    #[test]
    fn off_never_balances() {
        let groups = [group(0, 0, 1000, 0), group(1, 0, 1000, 0), group(2, 1, 0, 0)];
        let mut b = balancer(BalancerPolicy::Off);
        assert_eq!(b.plan(&groups, &[alive(0), alive(1)]), vec![]);
    }

    #[test]
    fn greedy_picks_the_group_that_best_closes_the_gap_without_overshoot() {
        // Instance 0 carries 100 + 60 + 30 + 10 = 200, instance 1 carries 0. Half the gap
        // is 100: the 100-packet group fits exactly.
        let groups = [
            group(0, 0, 60, 0),
            group(1, 0, 100, 0),
            group(2, 0, 30, 0),
            group(3, 0, 10, 0),
            group(4, 1, 0, 0),
        ];
        let mut b = balancer(BalancerPolicy::Idle);
        assert_eq!(b.plan(&groups, &[alive(0), alive(1)]), vec![Move { group: 1, from: 0, to: 1 }]);
    }

    #[test]
    fn a_single_dominant_group_is_not_moved_back_and_forth() {
        // Moving the 500-packet group would only swap which instance is overloaded.
        let groups = [group(0, 0, 500, 0), group(1, 1, 20, 0)];
        let mut b = balancer(BalancerPolicy::Live);
        assert_eq!(b.plan(&groups, &[alive(0), alive(1)]), vec![]);
    }

    #[test]
    fn idle_only_moves_groups_without_connections() {
        let groups =
            [group(0, 0, 90, 3), group(1, 0, 40, 0), group(2, 0, 80, 1), group(3, 1, 10, 0)];
        let mut b = balancer(BalancerPolicy::Idle);
        let moves = b.plan(&groups, &[alive(0), alive(1)]);
        assert_eq!(moves, vec![Move { group: 1, from: 0, to: 1 }]);
    }

    #[test]
    fn live_prefers_empty_groups_at_equal_benefit_then_fewer_connections() {
        let groups = [
            group(0, 0, 50, 4),
            group(1, 0, 50, 0),
            group(2, 0, 50, 2),
            group(3, 0, 200, 9),
            group(4, 1, 0, 0),
        ];
        let instances = [alive(0), alive(1)];
        let mut b = Balancer::new(BalancerPolicy::Live, tuning(0.2, 2, 2)).unwrap();
        // Load 350 vs 0: half gap 175, the 200-packet group does not fit.
        let moves = b.plan(&groups, &instances);
        assert_eq!(
            moves,
            vec![Move { group: 1, from: 0, to: 1 }, Move { group: 2, from: 0, to: 1 }]
        );
    }

    #[test]
    fn live_moves_a_loaded_group_with_connections_when_idle_cannot() {
        let groups = [group(0, 0, 300, 5), group(1, 0, 300, 7), group(2, 1, 0, 0)];
        let instances = [alive(0), alive(1)];
        assert_eq!(balancer(BalancerPolicy::Idle).plan(&groups, &instances), vec![]);
        assert_eq!(
            balancer(BalancerPolicy::Live).plan(&groups, &instances),
            vec![Move { group: 0, from: 0, to: 1 }]
        );
    }

    #[test]
    fn moves_go_to_the_least_loaded_and_ties_to_the_less_busy() {
        let groups = [
            group(0, 0, 100, 0),
            group(1, 0, 100, 0),
            group(2, 0, 100, 0),
            group(3, 1, 20, 0),
            group(4, 2, 20, 0),
        ];
        let instances = [
            alive(0),
            InstanceLoad { instance: 1, busy_ratio: 0.9, alive: true },
            InstanceLoad { instance: 2, busy_ratio: 0.1, alive: true },
        ];
        let mut b = Balancer::new(BalancerPolicy::Idle, tuning(0.2, 1, 2)).unwrap();
        assert_eq!(b.plan(&groups, &instances), vec![Move { group: 0, from: 0, to: 2 }]);
    }

    #[test]
    fn a_dead_instance_loses_every_group_even_under_off() {
        let mut groups: Vec<GroupLoad> =
            (0..128).map(|g| group(g, (g % 4) as u16, 10, g % 3)).collect();
        let instances = [alive(0), alive(1), dead(2), alive(3)];
        let mut b = balancer(BalancerPolicy::Off);
        let moves = b.plan(&groups, &instances);
        assert_eq!(moves.len(), 32);
        assert!(moves.iter().all(|m| m.from == 2 && m.to != 2));
        loads_after(&mut groups, &moves, 4);
        let mut counts = [0u32; 4];
        for g in &groups {
            counts[usize::from(g.owner)] += 1;
        }
        assert_eq!(counts, [43, 43, 0, 42], "spread evenly over the survivors");
    }

    #[test]
    fn groups_of_unlisted_instances_are_adopted_and_no_survivor_means_no_moves() {
        let groups = [group(0, 7, 5, 1), group(1, 0, 5, 0)];
        let mut b = balancer(BalancerPolicy::Idle);
        assert_eq!(b.plan(&groups, &[alive(0)]), vec![Move { group: 0, from: 7, to: 0 }]);
        assert_eq!(b.plan(&groups, &[dead(0), dead(1)]), vec![]);
        assert_eq!(b.plan(&groups, &[]), vec![]);
    }

    #[test]
    fn moved_groups_rest_for_min_interval_rounds() {
        // Instance 0 stays overloaded round after round (the caller does not apply moves),
        // so only hysteresis keeps group 1 from being planned again.
        let groups = [group(0, 0, 1000, 0), group(1, 0, 100, 0), group(2, 1, 0, 0)];
        let instances = [alive(0), alive(1)];
        let mut b = Balancer::new(BalancerPolicy::Idle, tuning(0.2, 4, 2)).unwrap();
        let planned: Vec<bool> = (0..7).map(|_| !b.plan(&groups, &instances).is_empty()).collect();
        assert_eq!(planned, [true, false, false, true, false, false, true]);
        assert_eq!(b.rounds(), 7);
    }

    /// A scenario: 1..=6 instances (some dead), 1..=64 groups with random loads and
    /// connection counts and random owners (some unlisted).
    fn scenario() -> impl Strategy<Value = (Vec<GroupLoad>, Vec<InstanceLoad>)> {
        (1u16..=6, 1u32..=64).prop_flat_map(|(n, g)| {
            let instances = proptest::collection::vec((any::<bool>(), 0.0f32..=1.0), n as usize)
                .prop_map(|v| {
                    v.into_iter()
                        .zip(0u16..)
                        .map(|((alive, busy_ratio), instance)| InstanceLoad {
                            instance,
                            busy_ratio,
                            alive: alive || instance == 0,
                        })
                        .collect::<Vec<_>>()
                });
            let groups = proptest::collection::vec((0..=n, 0u64..5000, 0u32..4), g as usize)
                .prop_map(|v| {
                    v.into_iter()
                        .zip(0u32..)
                        .map(|((owner, packets, connections), group)| GroupLoad {
                            group,
                            owner,
                            packets,
                            connections: if connections == 3 { 0 } else { connections },
                        })
                        .collect::<Vec<_>>()
                });
            (groups, instances)
        })
    }

    fn any_policy() -> impl Strategy<Value = BalancerPolicy> {
        prop_oneof![
            Just(BalancerPolicy::Off),
            Just(BalancerPolicy::Idle),
            Just(BalancerPolicy::Live)
        ]
    }

    proptest! {
        #[test]
        fn plans_respect_every_rule((groups, instances) in scenario(), policy in any_policy(),
                                    moves_per_round in 0usize..6, interval in 0u32..4) {
            let mut b = Balancer::new(policy, tuning(0.2, moves_per_round, interval)).unwrap();
            let alive: Vec<u16> =
                instances.iter().filter(|i| i.alive).map(|i| i.instance).collect();
            let n = instances.len() as u16 + 1;
            let mut after = groups.clone();
            let total: u64 = groups.iter().map(|g| g.packets).sum();
            let moves = b.plan(&groups, &instances);
            let loads = loads_after(&mut after, &moves, n);

            prop_assert_eq!(loads.iter().sum::<u64>(), total, "no load appears or vanishes");
            let mut seen = std::collections::BTreeSet::new();
            let mut balancing = 0;
            for m in &moves {
                prop_assert!(seen.insert(m.group), "group {} moved twice in one plan", m.group);
                prop_assert!(alive.contains(&m.to), "{:?} goes to a dead instance", m);
                prop_assert_ne!(m.from, m.to);
                let before = groups.iter().find(|g| g.group == m.group).unwrap();
                if alive.contains(&m.from) {
                    balancing += 1;
                    prop_assert!(policy != BalancerPolicy::Off);
                    prop_assert!(policy != BalancerPolicy::Idle || before.connections == 0,
                                 "idle moved group {} with connections", m.group);
                }
            }
            prop_assert!(balancing <= moves_per_round);
            for g in &after {
                prop_assert!(alive.contains(&g.owner), "group {} left with a dead owner", g.group);
            }
        }

        #[test]
        fn balancing_never_raises_the_peak((groups, instances) in scenario()) {
            // Failover aside, every balancing move narrows the spread, so the busiest
            // survivor never ends busier than before.
            let mut all_alive = instances.clone();
            for i in &mut all_alive {
                i.alive = true;
            }
            let n = instances.len() as u16;
            let groups: Vec<GroupLoad> =
                groups.into_iter().map(|g| GroupLoad { owner: g.owner % n, ..g }).collect();
            let mut after = groups.clone();
            let before = loads_after(&mut after.clone(), &[], n);
            let moves = balancer(BalancerPolicy::Live).plan(&groups, &all_alive);
            let after_loads = loads_after(&mut after, &moves, n);
            prop_assert!(after_loads.iter().max() <= before.iter().max());
        }
    }
}
