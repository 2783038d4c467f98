//! Acceptance 2: two processes each own one queue pair of the same model device. Each
//! receives exactly the flows its RETA entries select; rewriting a RETA entry moves that
//! flow group; a Flow Director filter overrides RSS.
//!
//! The children are this test binary run again with `--ignored --exact child_queue_owner`
//! and the model's shared-memory descriptors inherited across exec.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::ipv4_frame;
use ixgbe_user::ixgbe::fdir::{FdirFilter, L4Protocol};
use ixgbe_user::ixgbe::{Bar0, DeviceControl};
use ixgbe_user::model::ModelCounters;
use ixgbe_user::toeplitz::hash_ipv4_tcp;
use ixgbe_user::{
    Device, DeviceConfig, IxgbeQueuePair, Model82599, ModelConfig, ModelHandle, ModelRunner,
    QueueConfig, memory_link,
};

const FDS_ENV: &str = "NETPOP_TEST_MODEL_FDS";
const QUEUE_ENV: &str = "NETPOP_TEST_QUEUE";
const DEVICE_MAC: [u8; 6] = [0x02, 0, 0, 0x82, 0x59, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const SERVER: [u8; 4] = [10, 0, 0, 100];
const FLOWS: u16 = 64;

/// Child side: attach the queue named in the environment, report every frame as
/// `RX <source port> <hash>` on stdout, exit when stdin closes.
#[test]
#[ignore = "entry point of the child processes of two_processes_each_receive_their_flow_groups"]
fn child_queue_owner() {
    let fds = std::env::var(FDS_ENV).expect("run by the parent test");
    let (regs_fd, dma_fd) = fds.split_once(',').unwrap();
    let queue: u16 = std::env::var(QUEUE_ENV).unwrap().parse().unwrap();
    let handle =
        ModelHandle::open_inherited(regs_fd.parse().unwrap(), dma_fd.parse().unwrap()).unwrap();
    let bar = Bar0::from_model(handle.registers().clone());
    let qc = QueueConfig { rx_ring_size: 256, tx_ring_size: 8, ..QueueConfig::default() };
    let mut qp = IxgbeQueuePair::attach(bar, handle.dma(), queue, &qc).unwrap();

    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        let _ = done_tx.send(());
    });
    let mut out = std::io::stdout().lock();
    // The test harness has printed "test child_queue_owner ... " without a newline.
    writeln!(out, "\nREADY").unwrap();
    out.flush().unwrap();
    while done_rx.try_recv().is_err() {
        let mut lines = Vec::new();
        let n = qp.rx_burst_with_hash(32, &mut |frame, hash| {
            let sport = common::sport_of(frame).unwrap_or(0);
            lines.push(format!("RX {sport} {hash}"));
        });
        for line in &lines {
            writeln!(out, "{line}").unwrap();
        }
        out.flush().unwrap();
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

struct Children {
    procs: Vec<Child>,
    lines: mpsc::Receiver<(u16, String)>,
}

impl Children {
    fn spawn(handle: &ModelHandle, queues: &[u16]) -> Self {
        let (regs_fd, dma_fd) = handle.inheritable_fds().unwrap();
        let exe = std::env::current_exe().unwrap();
        let (tx, lines) = mpsc::channel();
        let mut procs = Vec::new();
        for &q in queues {
            let mut child = Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "child_queue_owner",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(FDS_ENV, format!("{regs_fd},{dma_fd}"))
                .env(QUEUE_ENV, q.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send((q, line)).is_err() {
                        break;
                    }
                }
            });
            procs.push(child);
        }
        Children { procs, lines }
    }

    fn wait_ready(&self, n: usize) {
        let mut ready = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while ready.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let (q, line) = self.lines.recv_timeout(left).expect("children attach in time");
            if line == "READY" {
                ready.insert(q);
            }
        }
    }

    /// Collects `n` received frames as queue -> {source port -> hash}.
    fn collect(&self, n: usize) -> BTreeMap<u16, BTreeMap<u16, u32>> {
        let mut got: BTreeMap<u16, BTreeMap<u16, u32>> = BTreeMap::new();
        let mut count = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((q, line)) = self.lines.recv_timeout(left) else {
                panic!("only {count} of {n} frames arrived: {got:?}");
            };
            let mut words = line.split(' ');
            if words.next() != Some("RX") {
                continue;
            }
            let sport: u16 = words.next().unwrap().parse().unwrap();
            let hash: u32 = words.next().unwrap().parse().unwrap();
            got.entry(q).or_default().insert(sport, hash);
            count += 1;
        }
        // Nothing beyond the expected frames may arrive (e.g. a flow delivered twice).
        std::thread::sleep(Duration::from_millis(50));
        while let Ok((_, line)) = self.lines.try_recv() {
            assert!(!line.starts_with("RX "), "unexpected extra frame: {line}");
        }
        got
    }

    fn finish(mut self) {
        for child in &mut self.procs {
            drop(child.stdin.take());
        }
        for child in &mut self.procs {
            let status = child.wait().unwrap();
            assert!(status.success(), "child failed: {status}");
        }
    }
}

fn client(i: u16) -> [u8; 4] {
    [10, 0, 1 + (i / 200) as u8, (i % 200) as u8 + 1]
}

fn sport(i: u16) -> u16 {
    20000 + i * 7
}

fn send_all_flows(peer: &ixgbe_user::MemoryLinkEnd) {
    for i in 0..FLOWS {
        peer.send(&ipv4_frame(
            DEVICE_MAC,
            PEER_MAC,
            true,
            client(i),
            SERVER,
            sport(i),
            80,
            i.into(),
        ));
    }
}

/// Where RSS sends each flow according to the RETA the device holds now.
fn expected_by_rss(control: &DeviceControl) -> BTreeMap<u16, BTreeMap<u16, u32>> {
    let key = control.rss_key();
    let mut want: BTreeMap<u16, BTreeMap<u16, u32>> = BTreeMap::new();
    for i in 0..FLOWS {
        let hash = hash_ipv4_tcp(&key, client(i), SERVER, sport(i), 80);
        let queue = control.reta_entry((hash & 0x7F) as usize).unwrap();
        want.entry(queue).or_default().insert(sport(i), hash);
    }
    want
}

#[test]
fn two_processes_each_receive_their_flow_groups() {
    let (wire, peer) = memory_link();
    let config =
        ModelConfig { mac: DEVICE_MAC, dma_window_bytes: 32 << 20, ..ModelConfig::default() };
    let model = Model82599::new(config, Box::new(wire)).unwrap();
    let handle = model.handle();
    let counters = model.counters();
    let _runner = ModelRunner::spawn(vec![model]).unwrap();

    let dev_config = DeviceConfig { rss_queues: 2, ..DeviceConfig::default() };
    let device = Device::init(Bar0::from_model(handle.registers().clone()), &dev_config).unwrap();
    let control = device.control();

    let children = Children::spawn(&handle, &[0, 1]);
    children.wait_ready(2);

    // Round 1: RETA spread round-robin over queues 0 and 1.
    let want = expected_by_rss(&control);
    assert_eq!(want.len(), 2, "64 flows land on both queues");
    send_all_flows(&peer);
    assert_eq!(children.collect(FLOWS.into()), want, "each process gets exactly its flow groups");

    // Round 2: move the flow group of one queue-0 flow to queue 1.
    let (moved_sport, moved_hash) = want[&0].iter().next().map(|(s, h)| (*s, *h)).unwrap();
    let group = (moved_hash & 0x7F) as usize;
    control.set_reta_entry(group, 1).unwrap();
    let want2 = expected_by_rss(&control);
    assert!(want2[&1].contains_key(&moved_sport));
    assert!(want2[&0].len() < want[&0].len());
    send_all_flows(&peer);
    assert_eq!(children.collect(FLOWS.into()), want2, "the rewritten flow group moved");

    // Round 3: a Flow Director filter pulls one queue-1 flow to queue 0, overriding RSS.
    let (&pinned_sport, _) = want2[&1].iter().find(|(s, _)| **s != moved_sport).unwrap();
    let i = (0..FLOWS).find(|&i| sport(i) == pinned_sport).unwrap();
    let filter = FdirFilter {
        protocol: L4Protocol::Tcp,
        src_ip: Ipv4Addr::from(client(i)),
        dst_ip: Ipv4Addr::from(SERVER),
        src_port: pinned_sport,
        dst_port: 80,
    };
    let soft_id = control.add_fdir_filter(&filter, 0).unwrap();
    let mut want3 = want2.clone();
    want3.get_mut(&1).unwrap().remove(&pinned_sport);
    // Filter matches report the filter's software id instead of the RSS hash.
    want3.get_mut(&0).unwrap().insert(pinned_sport, soft_id);
    send_all_flows(&peer);
    assert_eq!(children.collect(FLOWS.into()), want3, "Flow Director overrides RSS");
    assert_eq!(ModelCounters::get(&counters.fdir_hash_mismatches), 0);
    assert_eq!(ModelCounters::get(&counters.fdir_matches), 1);

    // Round 4: removing the filter gives the flow back to RSS.
    control.remove_fdir_filter(&filter).unwrap();
    send_all_flows(&peer);
    assert_eq!(children.collect(FLOWS.into()), want2);

    children.finish();
    assert_eq!(ModelCounters::get(&counters.rx_no_descriptor_drops), 0);
    assert_eq!(ModelCounters::get(&counters.bad_rings), 0);
}
