//! The balancer over many rounds, driving software steering as the control plane will:
//! skewed client populations (4-tuples that fall mostly into one instance's flow groups)
//! even out under `idle` and `live`, stay lopsided under `off`, settle without
//! ping-pong, and survive an instance's death.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use flowgroups::balancer::{
    Balancer, BalancerPolicy, BalancerTuning, GroupLoad, InstanceLoad, Move,
};
use flowgroups::flowgroup::{FlowGroupConfig, FlowGroupTable, flow_group_of};
use flowgroups::steering::{SoftwareSteering, Steering};
use proptest::prelude::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GROUPS: u32 = 128;

/// xorshift64*: deterministic, so every run sees the same clients.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Client connections to SERVER:80 and the flow group each one's packets hash into.
/// `skew` of them (in percent) are picked among 4-tuples landing on instance 0's groups in
/// the starting table; the rest are uniform.
fn skewed_clients(cfg: &FlowGroupConfig, table: &FlowGroupTable, n: usize, skew: u64) -> Vec<u32> {
    let mut rng = Rng(0xC11E_5700 + skew);
    let mut groups = Vec::with_capacity(n);
    while groups.len() < n {
        let want_hot = rng.next() % 100 < skew;
        loop {
            let v = rng.next();
            let client = Ipv4Addr::from(0x0A80_0000 | (v as u32 & 0x003F_FFFF));
            let group = flow_group_of(cfg, client, SERVER, (v >> 32) as u16 | 1024, 80);
            if !want_hot || table.owner(group) == Some(0) {
                groups.push(group);
                break;
            }
        }
    }
    groups
}

/// A netpop in miniature: the owner table behind software steering, a balancer, and the
/// per-group counters the instances would publish.
struct Simulation {
    steering: SoftwareSteering,
    published: Arc<Mutex<Vec<(u32, u16)>>>,
    balancer: Balancer,
    alive: Vec<bool>,
    /// Packets each group receives per round.
    packets: Vec<u64>,
    /// Connections each group holds.
    connections: Vec<u32>,
    rng: Rng,
    moves: usize,
}

impl Simulation {
    fn new(policy: BalancerPolicy, instances: u16, clients: &[u32]) -> Simulation {
        let published = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&published);
        let table = FlowGroupTable::new(GROUPS, instances).unwrap();
        let steering = SoftwareSteering::new(table, move |g, o| sink.lock().unwrap().push((g, o)));
        let tuning =
            BalancerTuning { imbalance_threshold: 0.2, max_moves_per_round: 8, min_interval: 3 };
        let mut packets = vec![0u64; GROUPS as usize];
        let mut connections = vec![0u32; GROUPS as usize];
        for &g in clients {
            packets[g as usize] += 10;
            connections[g as usize] += 1;
        }
        Simulation {
            steering,
            published,
            balancer: Balancer::new(policy, tuning).unwrap(),
            alive: vec![true; usize::from(instances)],
            packets,
            connections,
            rng: Rng(0x0BA1_A4CE),
            moves: 0,
        }
    }

    fn loads(&self) -> Vec<u64> {
        let mut loads = vec![0u64; self.alive.len()];
        for (group, &owner) in self.steering.table().owners().iter().enumerate() {
            loads[usize::from(owner)] += self.packets[group];
        }
        loads
    }

    /// Busiest surviving instance over the survivors' mean.
    fn peak_over_mean(&self) -> f64 {
        let loads = self.loads();
        let survivors: Vec<u64> =
            loads.iter().zip(&self.alive).filter(|(_, a)| **a).map(|(l, _)| *l).collect();
        let mean = survivors.iter().sum::<u64>() as f64 / survivors.len() as f64;
        *survivors.iter().max().unwrap() as f64 / mean
    }

    /// One round: counters in, plan, moves applied through steering. Short connections
    /// mean a group is often empty at the instant it is sampled: each connection is open
    /// then with probability 1/`open_one_in` (1 = long-lived connections).
    fn round(&mut self, open_one_in: u64) -> Vec<Move> {
        let table = self.steering.table();
        let groups: Vec<GroupLoad> = (0..GROUPS)
            .map(|group| {
                let total = self.connections[group as usize];
                let open = (0..total).filter(|_| self.rng.next() % open_one_in == 0).count();
                GroupLoad {
                    group,
                    owner: table.owner(group).unwrap(),
                    packets: self.packets[group as usize],
                    connections: open as u32,
                }
            })
            .collect();
        let loads = self.loads();
        let instances: Vec<InstanceLoad> = (0..self.alive.len())
            .map(|i| InstanceLoad {
                instance: i as u16,
                busy_ratio: loads[i] as f32 / 100_000.0,
                alive: self.alive[i],
            })
            .collect();
        let moves = self.balancer.plan(&groups, &instances);
        for m in &moves {
            assert_eq!(self.steering.table().owner(m.group), Some(m.from));
            self.steering.set_owner(m.group, m.to).unwrap();
        }
        self.moves += moves.len();
        moves
    }
}

#[test]
fn skewed_clients_even_out_under_idle_and_live_but_not_off() {
    let cfg = FlowGroupConfig::default();
    let start = FlowGroupTable::new(GROUPS, 4).unwrap();
    let clients = skewed_clients(&cfg, &start, 4000, 80);
    for (policy, open_one_in) in
        [(BalancerPolicy::Off, 1), (BalancerPolicy::Idle, 40), (BalancerPolicy::Live, 1)]
    {
        let mut sim = Simulation::new(policy, 4, &clients);
        let skewed = sim.peak_over_mean();
        assert!(skewed > 2.5, "the client population is skewed: {skewed}");
        let mut settled_at = None;
        for round in 0..100 {
            sim.round(open_one_in);
            if settled_at.is_none() && sim.peak_over_mean() <= 1.2 {
                settled_at = Some(round);
            }
        }
        let peak = sim.peak_over_mean();
        if policy == BalancerPolicy::Off {
            assert_eq!(sim.moves, 0);
            assert_eq!(peak, skewed, "off leaves the load as it is");
        } else {
            assert!(peak <= 1.2, "{policy}: busiest at {peak:.2} x mean after 100 rounds");
            assert!(settled_at.is_some_and(|r| r < 60), "{policy}: settled at {settled_at:?}");
            // Each move went through steering and was published once.
            assert_eq!(sim.published.lock().unwrap().len(), sim.moves);
            // Settled with stationary load: no more moves, so no ping-pong.
            let before = sim.moves;
            for _ in 0..20 {
                sim.round(open_one_in);
            }
            assert_eq!(sim.moves, before, "{policy}: moves after settling");
        }
    }
}

#[test]
fn long_lived_connections_block_idle_but_not_live() {
    // NetPopcorn's limitation: with every group holding connections, idle cannot act.
    let cfg = FlowGroupConfig::default();
    let start = FlowGroupTable::new(GROUPS, 4).unwrap();
    let clients = skewed_clients(&cfg, &start, 4000, 80);
    let mut idle = Simulation::new(BalancerPolicy::Idle, 4, &clients);
    let mut live = Simulation::new(BalancerPolicy::Live, 4, &clients);
    for _ in 0..50 {
        idle.round(1);
        live.round(1);
    }
    assert!(idle.peak_over_mean() > 2.5 && idle.moves == 0);
    assert!(live.peak_over_mean() <= 1.2);
}

#[test]
fn a_dead_instances_groups_go_to_survivors_and_load_evens_out_again() {
    let cfg = FlowGroupConfig::default();
    let start = FlowGroupTable::new(GROUPS, 4).unwrap();
    let clients = skewed_clients(&cfg, &start, 4000, 0);
    for policy in [BalancerPolicy::Off, BalancerPolicy::Idle, BalancerPolicy::Live] {
        let mut sim = Simulation::new(policy, 4, &clients);
        for _ in 0..5 {
            sim.round(40);
        }
        let owned_before = sim.steering.table().groups_of(2).count();
        assert!(owned_before > 0);
        sim.alive[2] = false;
        let moves = sim.round(40);
        let failover: Vec<_> = moves.iter().filter(|m| m.from == 2).collect();
        assert_eq!(failover.len(), owned_before, "{policy}: all of instance 2's groups move");
        assert_eq!(sim.steering.table().groups_of(2).count(), 0);
        assert!(moves.iter().all(|m| m.to != 2));
        let counts = sim.steering.table().counts();
        let survivors = [counts[0], counts[1], counts[3]];
        if policy == BalancerPolicy::Off {
            // Round-robin start: the dead instance's groups spread evenly.
            assert!(survivors.iter().max().unwrap() - survivors.iter().min().unwrap() <= 1);
        } else {
            for _ in 0..60 {
                sim.round(40);
            }
            assert!(sim.peak_over_mean() <= 1.2, "{policy}: {:?}", sim.loads());
            assert!(sim.steering.table().groups_of(2).next().is_none());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any skewed stationary load whose groups are small next to the tolerance (each
    /// carries at most half of `threshold × mean`) converges to within the threshold.
    #[test]
    fn skewed_loads_converge_within_the_threshold(
        instances in 2u16..=8,
        loads in proptest::collection::vec(80u64..=100, GROUPS as usize),
        hot_share in 50u32..=100,
        live in any::<bool>(),
        moves_per_round in 4usize..=16,
        min_interval in 0u32..=4,
    ) {
        let policy = if live { BalancerPolicy::Live } else { BalancerPolicy::Idle };
        let tuning = BalancerTuning {
            imbalance_threshold: 0.2,
            max_moves_per_round: moves_per_round,
            min_interval,
        };
        let mut balancer = Balancer::new(policy, tuning).unwrap();
        // `hot_share` percent of the groups start on instance 0, the rest round-robin.
        let mut owners: Vec<u16> = (0..GROUPS)
            .map(|g| if g * 100 < hot_share * GROUPS { 0 } else { (g % u32::from(instances)) as u16 })
            .collect();
        let all: Vec<InstanceLoad> = (0..instances)
            .map(|instance| InstanceLoad { instance, busy_ratio: 0.5, alive: true })
            .collect();
        let total: u64 = loads.iter().sum();
        let limit = total as f64 / f64::from(instances) * 1.2;
        let peak = |owners: &[u16]| {
            let mut per = vec![0u64; usize::from(instances)];
            for (g, &o) in owners.iter().enumerate() {
                per[usize::from(o)] += loads[g];
            }
            *per.iter().max().unwrap()
        };
        // Enough rounds to move every group once, plus the hysteresis pauses.
        let bound = GROUPS as usize / moves_per_round + 2 * (min_interval as usize + 1) + 4;
        let mut rounds = 0;
        while peak(&owners) as f64 > limit {
            prop_assert!(rounds < bound, "not converged after {} rounds", rounds);
            let groups: Vec<GroupLoad> = (0..GROUPS)
                .map(|g| GroupLoad { group: g, owner: owners[g as usize], packets: loads[g as usize], connections: 0 })
                .collect();
            for m in balancer.plan(&groups, &all) {
                prop_assert_eq!(owners[m.group as usize], m.from);
                owners[m.group as usize] = m.to;
            }
            rounds += 1;
        }
    }
}
