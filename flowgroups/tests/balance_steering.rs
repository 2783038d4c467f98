//! Flow groups and steering against the 82599 model, unprivileged: the driver initialises
//! a model port joined to the test by an in-memory link, one queue pair per instance.
//!
//! Checked here: the flow group `flowgroups` computes for a received packet is the RETA
//! index the model (and so the NIC) uses; after `RetaSteering::set_owner(g, i)` the
//! packets of group `g` arrive on queue `i`; and a source port chosen by
//! `choose_source_port` makes the peer's replies arrive on the choosing instance's queue.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use flowgroups::flowgroup::{FlowGroupConfig, FlowGroupTable, flow_group_of};
use flowgroups::ports::{DEFAULT_EPHEMERAL_RANGE, choose_source_port};
use flowgroups::steering::{RetaSteering, Steering};
use ixgbe_user::ixgbe::Bar0;
use ixgbe_user::toeplitz::MICROSOFT_RSS_KEY;
use ixgbe_user::{
    Device, DeviceConfig, DeviceControl, IxgbeQueuePair, MemoryLinkEnd, Model82599, ModelConfig,
    ModelRunner, QueueConfig, memory_link,
};

const DEVICE_MAC: [u8; 6] = [0x02, 0, 0, 0x82, 0x59, 0x42];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

/// A frame as one queue delivered it: the 4-tuple and the hash in its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    queue: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    hash: u32,
}

/// A model port under the real driver with `queues` RSS queues attached.
struct Rig {
    peer: MemoryLinkEnd,
    control: DeviceControl,
    queues: Vec<IxgbeQueuePair>,
    _runner: ModelRunner,
}

impl Rig {
    fn new(queues: u16) -> Rig {
        let (wire, peer) = memory_link();
        let config =
            ModelConfig { mac: DEVICE_MAC, dma_window_bytes: 16 << 20, ..ModelConfig::default() };
        let model = Model82599::new(config, Box::new(wire)).unwrap();
        let handle = model.handle();
        let runner = ModelRunner::spawn(vec![model]).unwrap();
        let dev_config = DeviceConfig {
            rss_queues: queues,
            link_timeout: Duration::from_secs(2),
            ..DeviceConfig::default()
        };
        let device =
            Device::init(Bar0::from_model(handle.registers().clone()), &dev_config).unwrap();
        let qc = QueueConfig { rx_ring_size: 512, tx_ring_size: 8, ..QueueConfig::default() };
        let queues = (0..queues)
            .map(|q| IxgbeQueuePair::attach(device.bar().clone(), handle.dma(), q, &qc).unwrap())
            .collect();
        Rig { peer, control: device.control(), queues, _runner: runner }
    }

    /// Sends one TCP frame per 4-tuple (src, dst, sport, dport) and collects where each
    /// arrived, sorted.
    fn deliver(&mut self, tuples: &[(Ipv4Addr, Ipv4Addr, u16, u16)]) -> Vec<Arrival> {
        for &(src, dst, sport, dport) in tuples {
            self.peer.send(&tcp_frame(src, dst, sport, dport));
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < tuples.len() && Instant::now() < deadline {
            let mut idle = true;
            for qp in &mut self.queues {
                let queue = qp.queue_index();
                let n = qp.rx_burst_with_hash(64, &mut |frame, hash| {
                    got.push(parse(queue, frame, hash));
                });
                idle &= n == 0;
            }
            if idle {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        assert_eq!(got.len(), tuples.len(), "every frame arrives exactly once");
        got.sort();
        got
    }
}

/// Ethernet + IPv4 + minimal TCP header (SYN), peer to device.
fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[..6].copy_from_slice(&DEVICE_MAC);
    f[6..12].copy_from_slice(&PEER_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x02;
    f
}

fn parse(queue: u16, f: &[u8], hash: u32) -> Arrival {
    let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    Arrival { queue, src: ip(26), dst: ip(30), sport: port(34), dport: port(36), hash }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn tuple(&mut self) -> (Ipv4Addr, Ipv4Addr, u16, u16) {
        let v = self.next();
        (Ipv4Addr::from(v as u32), LOCAL, (v >> 32) as u16, (v >> 48) as u16)
    }
}

#[test]
fn computed_groups_are_the_model_reta_indices_and_owners_get_the_packets() {
    let mut rig = Rig::new(4);
    let cfg = FlowGroupConfig::default();
    let mut rng = Rng(0x5eed_0001);
    // A scrambled owner table, so a wrong group could not land on the right queue by luck
    // of the round-robin fill.
    let owners: Vec<u16> = (0..128).map(|_| (rng.next() % 4) as u16).collect();
    let table = FlowGroupTable::from_owners(owners, 4).unwrap();
    let mut steering = RetaSteering::new(rig.control.clone(), cfg.groups()).unwrap();
    steering.apply_table(&table).unwrap();

    let tuples: Vec<_> = (0..400).map(|_| rng.tuple()).collect();
    let arrivals = rig.deliver(&tuples);
    let mut per_queue = BTreeMap::new();
    for a in &arrivals {
        let group = flow_group_of(&cfg, a.src, a.dst, a.sport, a.dport);
        assert_eq!(group, a.hash & 0x7F, "our group is the model's RETA index for {a:?}");
        assert_eq!(Some(a.queue), table.owner(group), "group {group} arrives at its owner");
        *per_queue.entry(a.queue).or_insert(0) += 1;
    }
    assert_eq!(per_queue.len(), 4, "400 random flows reach every queue: {per_queue:?}");
}

#[test]
fn set_owner_moves_a_groups_packets_to_the_new_queue() {
    let mut rig = Rig::new(4);
    let cfg = FlowGroupConfig::default();
    let mut steering = RetaSteering::new(rig.control.clone(), cfg.groups()).unwrap();
    steering.apply_table(&FlowGroupTable::new(128, 4).unwrap()).unwrap();
    let mut rng = Rng(0x5eed_0002);
    let tuples: Vec<_> = (0..200).map(|_| rng.tuple()).collect();
    let group_of = |t: &(Ipv4Addr, Ipv4Addr, u16, u16)| flow_group_of(&cfg, t.0, t.1, t.2, t.3);

    let moved = group_of(&tuples[0]);
    let from = moved % 4;
    let to = (from + 3) % 4;
    steering.set_owner(moved, to as u16).unwrap();
    assert_eq!(steering.owner(moved).unwrap(), to as u16);

    let arrivals = rig.deliver(&tuples);
    let in_group: Vec<_> = arrivals
        .iter()
        .filter(|a| flow_group_of(&cfg, a.src, a.dst, a.sport, a.dport) == moved)
        .collect();
    assert!(!in_group.is_empty());
    assert!(in_group.iter().all(|a| u32::from(a.queue) == to), "moved group: {in_group:?}");
    for a in arrivals.iter().filter(|a| a.hash & 0x7F != moved) {
        assert_eq!(u32::from(a.queue), (a.hash & 0x7F) % 4, "other groups stay put");
    }
}

#[test]
fn fewer_groups_than_reta_entries_steer_whole_groups() {
    let mut rig = Rig::new(4);
    let cfg = FlowGroupConfig::new(16, MICROSOFT_RSS_KEY).unwrap();
    let mut table = FlowGroupTable::new(16, 4).unwrap();
    table.set_owner(3, 2).unwrap();
    table.set_owner(9, 0).unwrap();
    let mut steering = RetaSteering::new(rig.control.clone(), cfg.groups()).unwrap();
    steering.apply_table(&table).unwrap();

    let mut rng = Rng(0x5eed_0003);
    let tuples: Vec<_> = (0..300).map(|_| rng.tuple()).collect();
    for a in rig.deliver(&tuples) {
        let group = flow_group_of(&cfg, a.src, a.dst, a.sport, a.dport);
        assert_eq!(Some(a.queue), table.owner(group), "{a:?} in group {group}");
    }
}

#[test]
fn chosen_source_ports_bring_replies_to_the_opening_instance() {
    let mut rig = Rig::new(4);
    let cfg = FlowGroupConfig::default();
    let mut table = FlowGroupTable::new(128, 4).unwrap();
    // After some balancing the table is no longer round-robin.
    for g in [1, 5, 9, 13] {
        table.set_owner(g, 3).unwrap();
    }
    let mut steering = RetaSteering::new(rig.control.clone(), cfg.groups()).unwrap();
    steering.apply_table(&table).unwrap();

    let servers = [(Ipv4Addr::new(93, 184, 216, 34), 80), (Ipv4Addr::new(10, 9, 8, 7), 5432)];
    let mut replies = Vec::new();
    for instance in 0..4u16 {
        for (server, server_port) in servers {
            let mut next = DEFAULT_EPHEMERAL_RANGE.0;
            for _ in 0..8 {
                let port = choose_source_port(
                    &cfg,
                    &table,
                    instance,
                    LOCAL,
                    server,
                    server_port,
                    DEFAULT_EPHEMERAL_RANGE,
                    next,
                    |_| true,
                )
                .unwrap();
                next = port + 1;
                // The SYN-ACK travels server -> us.
                replies.push((instance, (server, LOCAL, server_port, port)));
            }
        }
    }
    let tuples: Vec<_> = replies.iter().map(|(_, t)| *t).collect();
    let arrivals = rig.deliver(&tuples);
    for (instance, (src, _, sport, dport)) in replies {
        let a =
            arrivals.iter().find(|a| a.src == src && a.sport == sport && a.dport == dport).unwrap();
        assert_eq!(a.queue, instance, "reply to port {dport} from {src}:{sport}");
    }
}
