//! Acceptance 3 (issue 4): `netpop up --policy live` moves flow groups that carry
//! established connections while they stream. The peer (tcp-core over `--wire unix:`)
//! keeps one checksummed stream in each of instance 0's 16 hot groups, echoed by the
//! server app, while short connections into the same groups make the load lopsided; the
//! balancer must move some of those groups, with their connections, to instance 1.
//! Every byte must come back once and in order, and no reset may cross the wire.

mod netpop_common;

use std::net::SocketAddrV4;
use std::time::Duration;

use netpop_common::*;

#[test]
#[ignore = "entry point of the echo server child process"]
fn echo_server_child() {
    echo_server_main();
}

#[test]
fn live_balancing_moves_streaming_connections_without_losing_a_byte() {
    let scratch = Scratch::new("live");
    let (np, mut peer) = up_on_unix_wire(&scratch, &["--policy", "live"]);
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);

    // Instance 0 owns the even groups at start (round robin); one stream per hot group.
    let hot: Vec<u32> = (0..16).map(|g| g * 2).collect();
    let mut stream_ports = Vec::new();
    for &g in &hot {
        stream_ports.extend(ports_in_groups(&[g], 20000, 1));
    }
    assert_eq!(stream_ports.len(), 16);
    let short_ports: Vec<u16> = ports_in_groups(&hot, 30000, 8000);
    let server = SocketAddrV4::new(NETPOP_IP, ECHO_PORT);

    let report = peer.streams_under_load(
        server,
        &stream_ports,
        256 * 1024,
        Duration::from_secs(5),
        Duration::from_secs(20),
        &short_ports,
        16,
    );
    let stat = np.stat_json();
    println!("{report:#?}\n{}\n{}", summarize(&stat), np.stat_table());
    let balancer = stat.get("balancer");
    let completed = balancer.get("completed_moves").u64();
    let migrated = balancer.get("migrated_connections").u64();
    assert!(report.stream_failures.is_empty(), "streams failed: {:?}", report.stream_failures);
    assert_eq!(report.completed, stream_ports.len(), "every stream finished");
    assert!(
        report.bytes_sent > 16 * 256 * 1024,
        "the streams carried data ({} bytes)",
        report.bytes_sent
    );
    assert_eq!(report.bytes_checked, report.bytes_sent, "every byte came back once, in order");
    assert_eq!(report.stream_resets, 0, "netpop sent no reset to a stream");
    // A short connection may see one when a retransmitted FIN arrives after the server
    // side is gone (a loaded machine delays ACKs past the RTO); it never fails.
    assert_eq!(report.short_failed, 0, "short connections failed: {:?}", report.short_failures);
    assert!(completed > 0, "the balancer moved groups");
    assert!(migrated > 0, "connections migrated with their groups");
    assert_eq!(balancer.get("aborted_moves").u64(), 0);
    // Instance 1 now serves some of the streams' groups.
    let owners_moved = stat.get("instances").array()[1].get("moves_in").u64();
    assert!(owners_moved > 0);
}

/// One benchmark run's figures.
struct BenchRow {
    policy: &'static str,
    rx: [u64; 2],
    moves: u64,
    migrated: u64,
    forwarded: u64,
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    failed: usize,
    resets: u64,
    stream_resets: u64,
    stream_bytes: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Skewed load against a fresh netpop with `policy`: a long-lived stream in each of
/// instance 0's 64 groups (so none of them is ever idle) plus short connections into the
/// same groups; figures are taken over the measured phase after a warm-up.
fn bench_one(policy: &'static str, warmup: Duration, measured: Duration) -> BenchRow {
    let scratch = Scratch::new(&format!("bb{policy}"));
    let (np, mut peer) = up_on_unix_wire(&scratch, &["--policy", policy]);
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);
    let hot: Vec<u32> = (0..64).map(|g| g * 2).collect();
    let mut stream_ports = Vec::new();
    for &g in &hot {
        stream_ports.extend(ports_in_groups(&[g], 1024, 1));
    }
    let short_ports: Vec<u16> = ports_in_groups(&hot, 2048, 40_000)
        .into_iter()
        .filter(|p| !stream_ports.contains(p))
        .collect();
    let server = SocketAddrV4::new(NETPOP_IP, ECHO_PORT);
    let concurrency = env_u64("BENCH_CONCURRENCY", 16) as usize;
    let stream_rate = env_u64("BENCH_STREAM_RATE", 32 * 1024);
    let mut before = None;
    let mut report = peer.streams_under_load_marked(
        server,
        &stream_ports,
        stream_rate,
        warmup + measured,
        Duration::from_secs(30),
        &short_ports,
        concurrency,
        warmup,
        &mut || before = Some(np.stat_json()),
    );
    let after = np.stat_json();
    let before = before.expect("the warm-up ended");
    let rx = |s: &Json, i: usize| s.get("instances").array()[i].get("rx_packets").u64();
    let fwd = |s: &Json| -> u64 {
        s.get("instances").array().iter().map(|i| i.get("forwarded_packets").u64()).sum()
    };
    let mut lat = std::mem::take(&mut report.short_latencies);
    lat.sort();
    println!("{policy}: {report:?}\n{}", summarize(&after));
    BenchRow {
        policy,
        rx: [rx(&after, 0) - rx(&before, 0), rx(&after, 1) - rx(&before, 1)],
        moves: after.get("balancer").get("completed_moves").u64(),
        migrated: after.get("balancer").get("migrated_connections").u64(),
        forwarded: fwd(&after) - fwd(&before),
        rate: lat.len() as f64 / measured.as_secs_f64(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
        failed: report.short_failed + report.stream_failures.values().sum::<usize>(),
        resets: report.resets_in,
        stream_resets: report.stream_resets,
        stream_bytes: report.bytes_checked,
    }
}

/// The "Flow-group balancing" benchmark of BENCHMARKS.md (run it with
/// `scripts/bench-balance.sh`): per-instance load and short-connection latency for
/// `off`, `idle` and `live` under the same skewed load. Prints the Markdown table on
/// `BENCH ` lines and the same figures as one JSON document on a `BENCH_JSON ` line
/// (`scripts/bench-balance.sh --json`, drawn by `scripts/bench-all.sh balance`).
#[test]
#[ignore = "benchmark: scripts/bench-balance.sh"]
fn bench_balance() {
    let warmup = Duration::from_secs(env_u64("BENCH_WARMUP_S", 3));
    let measured = Duration::from_secs(env_u64("BENCH_MEASURE_S", 10));
    let rows: Vec<BenchRow> =
        ["off", "idle", "live"].into_iter().map(|p| bench_one(p, warmup, measured)).collect();
    for line in bench_table(&rows) {
        println!("BENCH {line}");
    }
    let setup = format!(
        "2 instances (netpop --nic sim, unix wire); 64 long-lived streams at {} B/s and {} short connections at a time, all in instance 0's groups; {} s warm-up, {} s measured",
        env_u64("BENCH_STREAM_RATE", 32 * 1024),
        env_u64("BENCH_CONCURRENCY", 16),
        warmup.as_secs(),
        measured.as_secs()
    );
    println!("BENCH_JSON {}", bench_json(&rows, &setup));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Instance 0's share of the packets both instances received.
fn share_of_instance_0(row: &BenchRow) -> f64 {
    row.rx[0] as f64 / (row.rx[0] + row.rx[1]).max(1) as f64
}

/// The benchmark's Markdown table, one line per element.
fn bench_table(rows: &[BenchRow]) -> Vec<String> {
    let mut lines = vec![
        "| policy | moves | migrated conns | rx inst 0 | rx inst 1 | share inst 0 | fwd pkts | short conn/s | p50 ms | p99 ms | max ms | failed | resets (streams) | stream bytes |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for r in rows {
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {:.0}% | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} ({}) | {} |",
            r.policy,
            r.moves,
            r.migrated,
            r.rx[0],
            r.rx[1],
            share_of_instance_0(r) * 100.0,
            r.forwarded,
            r.rate,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.failed,
            r.resets,
            r.stream_resets,
            r.stream_bytes
        ));
    }
    lines
}

/// The figures as the sweep shape the `plot` binary draws for `balance` (one point per
/// policy along x, the short connections' rate and p99 as the panels), with every column
/// of the table kept beside them and instance 0's load share in the subtitle, since that
/// share is what the policies differ in.
fn bench_json(rows: &[BenchRow], setup: &str) -> String {
    let shares: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {:.0}%", r.policy, share_of_instance_0(r) * 100.0))
        .collect();
    let setup = format!("{setup}. Instance 0's share of received packets: {}.", shares.join(", "));
    let points: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                concat!(
                    "{{\"series\":\"short connections\",\"x\":\"{}\",",
                    "\"requests_per_s\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},",
                    "\"moves\":{},\"migrated_connections\":{},\"rx_packets\":[{},{}],",
                    "\"share_instance_0\":{:.4},\"forwarded_packets\":{},\"failed\":{},",
                    "\"resets\":{},\"stream_resets\":{},\"stream_bytes\":{}}}"
                ),
                r.policy,
                r.rate,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.moves,
                r.migrated,
                r.rx[0],
                r.rx[1],
                share_of_instance_0(r),
                r.forwarded,
                r.failed,
                r.resets,
                r.stream_resets,
                r.stream_bytes
            )
        })
        .collect();
    format!(
        "{{\"title\":\"Flow-group balancing: 2 instances, skewed load, by balancer policy\",\"x_label\":\"balancer policy\",\"setup\":\"{}\",\"points\":[{}]}}",
        setup.replace('\\', "\\\\").replace('"', "\\\""),
        points.join(",")
    )
}

#[test]
fn bench_json_has_what_the_balance_plot_reads() {
    let row = |policy, rx: [u64; 2], rate, p99_ms| BenchRow {
        policy,
        rx,
        moves: 3,
        migrated: 2,
        forwarded: 1,
        rate,
        p50: Duration::from_millis(5),
        p99: Duration::from_millis(p99_ms),
        max: Duration::from_millis(90),
        failed: 0,
        resets: 0,
        stream_resets: 0,
        stream_bytes: 1000,
    };
    let rows = [row("off", [300, 0], 2000.0, 16), row("live", [100, 300], 1500.0, 25)];
    let json = Json::parse(&bench_json(&rows, "a \"quoted\" setup")).unwrap();
    let points = json.get("points").array();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].get("x").str(), "off");
    assert_eq!(points[1].get("x").str(), "live");
    assert_eq!(points[1].get("series").str(), points[0].get("series").str(), "one line");
    assert_eq!(points[0].get("requests_per_s").f64(), 2000.0);
    assert_eq!(points[1].get("p99_ms").f64(), 25.0);
    assert_eq!(points[1].get("share_instance_0").f64(), 0.25);
    assert_eq!(points[1].get("rx_packets").array()[1].u64(), 300);
    let setup = json.get("setup").str();
    assert!(setup.starts_with("a \"quoted\" setup"), "{setup}");
    assert!(setup.contains("off 100%, live 25%"), "{setup}");
    assert_eq!(json.get("x_label").str(), "balancer policy");
}
