//! Fixed-seed scenarios: throughput close to the bandwidth-delay limit on a clean link,
//! recovery by fast retransmit and SACK (RFC 6675) rather than timeouts on a lossy one, a
//! listener serving far more concurrent handshakes than its backlog, and determinism.

use tcp_core::Duration;
use tcp_core::tcp::TcpConfig;

use crate::app::{Response, Workload};
use crate::link::LinkParams;
use crate::sim::{Report, Sim, SimConfig};

const MIB: usize = 1024 * 1024;

fn gigabit(latency_ms: u64, loss_ppm: u32) -> LinkParams {
    LinkParams {
        latency: Duration::from_millis(latency_ms),
        bandwidth_bps: 1_000_000_000,
        queue_limit: 512 * 1024,
        loss_ppm,
        ..LinkParams::ideal()
    }
}

fn bulk(bytes: usize) -> Workload {
    Workload {
        connections: 1,
        request_len: bytes,
        response: Response::Pattern(0),
        write_chunk: 64 * 1024,
        read_chunk: 64 * 1024,
        backlog: 16,
        nodelay: false,
    }
}

/// Buffers twice the bandwidth-delay product of 1 Gbit/s × 2 ms, but no more than the
/// queue holds on top of it, so a clean link never drops.
fn big_buffers() -> TcpConfig {
    TcpConfig { send_buffer: MIB / 2, recv_buffer: MIB / 2, ..TcpConfig::default() }
}

fn goodput_bps(bytes: usize, report: &Report) -> f64 {
    bytes as f64 * 8.0 / report.transfer_time.as_secs_f64()
}

#[test]
fn ten_mib_over_a_clean_gigabit_link_runs_at_more_than_half_the_link_rate() {
    let bytes = 10 * MIB;
    let mut cfg = SimConfig::new(0x5eed_0001, gigabit(1, 0), bulk(bytes));
    cfg.client_tcp = big_buffers();
    cfg.server_tcp = big_buffers();
    let report = Sim::new(cfg).run();
    let rate = goodput_bps(bytes, &report);
    println!("clean 1 Gbit/s, 1 ms: {:.1} Mbit/s in {:?}", rate / 1e6, report.transfer_time);
    assert!(rate >= 0.5e9, "goodput {:.1} Mbit/s, {:?}", rate / 1e6, report);
    let stats = &report.client_stats[0];
    assert_eq!(stats.timeouts, 0, "no loss, so no retransmission timeout: {stats:?}");
}

#[test]
fn ten_mib_with_one_percent_loss_recovers_by_fast_retransmit_not_timeouts() {
    let bytes = 10 * MIB;
    let mut cfg = SimConfig::new(0x5eed_0002, gigabit(1, 10_000), bulk(bytes));
    cfg.client_tcp = big_buffers();
    cfg.server_tcp = big_buffers();
    let report = Sim::new(cfg).run();
    let stats = &report.client_stats[0];
    println!(
        "1% loss, 1 Gbit/s, 1 ms: {:.1} Mbit/s in {:?}; {stats:?}; lost {} up, {} down",
        goodput_bps(bytes, &report) / 1e6,
        report.transfer_time,
        report.up.lost,
        report.down.lost
    );
    assert!(report.up.lost >= 30, "the link really lost data segments: {:?}", report.up);
    assert!(stats.fast_retransmits > 0, "{stats:?}");
    assert!(
        stats.retransmits >= report.up.lost / 2,
        "lost segments were retransmitted: {stats:?}, {:?}",
        report.up
    );
    assert!(
        stats.timeouts * 4 <= stats.fast_retransmits,
        "most losses repaired without waiting for the RTO: {stats:?}"
    );
    assert!(report.transfer_time < Duration::from_secs(10), "{:?}", report.transfer_time);
}

#[test]
fn two_hundred_concurrent_connections_through_a_backlog_of_64_all_complete() {
    let workload = Workload {
        connections: 200,
        request_len: 1000,
        response: Response::Pattern(3000),
        write_chunk: 4096,
        read_chunk: 4096,
        backlog: 64,
        nodelay: true,
    };
    let link = LinkParams {
        latency: Duration::from_millis(2),
        bandwidth_bps: 100_000_000,
        queue_limit: 1024 * 1024,
        ..LinkParams::ideal()
    };
    let report = Sim::new(SimConfig::new(0x5eed_0003, link, workload)).run();
    assert_eq!(report.client_stats.len(), 200);
    let c = &report.server_counters;
    println!(
        "200 connections: {:?}, syn queue full {}, cookies {}/{}",
        report.transfer_time,
        c.tcp_syn_queue_full,
        c.tcp_syn_cookies_sent,
        c.tcp_syn_cookies_accepted
    );
    assert!(c.tcp_syn_cookies_sent > 0, "200 SYNs at once overflow a SYN queue of 64: {c:?}");
}

/// The backlog holds every handshake here: with SYN cookies, a data segment that overtakes
/// the handshake's final ACK fails cookie validation (its sequence number is not ISN + 1)
/// and is answered with a reset, as Linux does, so cookies and reordering do not mix.
#[test]
fn two_hundred_connections_complete_over_a_lossy_reordering_link() {
    let workload = Workload {
        connections: 200,
        request_len: 2000,
        response: Response::Echo,
        write_chunk: 700,
        read_chunk: 1000,
        backlog: 256,
        nodelay: false,
    };
    let link = LinkParams {
        latency: Duration::from_millis(5),
        bandwidth_bps: 50_000_000,
        queue_limit: 256 * 1024,
        loss_ppm: 20_000,
        reorder_ppm: 50_000,
        reorder_delay: Duration::from_millis(8),
        duplicate_ppm: 10_000,
        corrupt_ppm: 10_000,
        mtu: 1500,
    };
    let report = Sim::new(SimConfig::new(0x5eed_0004, link, workload)).run();
    assert_eq!(report.client_stats.len(), 200);
    assert!(report.up.corrupted + report.down.corrupted > 0);
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_a_different_one() {
    let link = LinkParams {
        latency: Duration::from_millis(10),
        bandwidth_bps: 20_000_000,
        queue_limit: 64 * 1024,
        loss_ppm: 30_000,
        reorder_ppm: 100_000,
        reorder_delay: Duration::from_millis(15),
        duplicate_ppm: 20_000,
        corrupt_ppm: 20_000,
        mtu: 1200,
    };
    let workload = Workload { response: Response::Echo, ..bulk(200_000) };
    let run = |seed| {
        let r = Sim::new(SimConfig::new(seed, link.clone(), workload)).run();
        (
            r.transfer_time,
            r.teardown_time,
            r.up,
            r.down,
            r.client_counters,
            r.server_counters,
            r.steps,
        )
    };
    let first = run(7);
    assert_eq!(first, run(7));
    assert_ne!(first, run(8));
}
