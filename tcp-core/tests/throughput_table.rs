//! Prints simulated goodput of one bulk transfer for a grid of loss rates and one-way
//! latencies, in the spirit of smoltcp's `netsim` example. It measures simulated time, so
//! the numbers are deterministic; it asserts only that every transfer completes. Run it
//! with:
//!
//! ```text
//! cargo test -p tcp-core --test throughput_table -- --ignored --nocapture
//! ```
//!
//! With `TABLE_DEBUG=1` each cell also prints its transfer time, queue drops and the
//! sender's connection statistics.
// The simulator's modules are shared with tests/netsim; this table uses only part of them.
#![allow(dead_code)]

#[path = "netsim/app.rs"]
mod app;
#[path = "netsim/link.rs"]
mod link;
#[path = "netsim/monitor.rs"]
mod monitor;
#[path = "netsim/rng.rs"]
mod rng;
#[path = "netsim/sim.rs"]
mod sim;

use tcp_core::Duration;
use tcp_core::tcp::{CongestionAlgorithm, TcpConfig};

use app::{Response, Workload};
use link::LinkParams;
use sim::{Sim, SimConfig};

const BYTES: usize = 4 * 1024 * 1024;
const RATE_BPS: u64 = 100_000_000;

fn goodput_mbps(loss_ppm: u32, latency_ms: u64, congestion: CongestionAlgorithm) -> f64 {
    let link = LinkParams {
        latency: Duration::from_millis(latency_ms),
        bandwidth_bps: RATE_BPS,
        queue_limit: 1024 * 1024,
        loss_ppm,
        ..LinkParams::ideal()
    };
    let workload = Workload {
        connections: 1,
        request_len: BYTES,
        response: Response::Pattern(0),
        write_chunk: 64 * 1024,
        read_chunk: 64 * 1024,
        backlog: 4,
        nodelay: false,
    };
    let tcp = TcpConfig {
        send_buffer: 4 * 1024 * 1024,
        recv_buffer: 4 * 1024 * 1024,
        congestion,
        ..TcpConfig::default()
    };
    let mut cfg = SimConfig::new(0x7ab1e ^ u64::from(loss_ppm) ^ latency_ms << 32, link, workload);
    cfg.client_tcp = tcp.clone();
    cfg.server_tcp = tcp;
    let report = Sim::new(cfg).run();
    if std::env::var_os("TABLE_DEBUG").is_some() {
        eprintln!(
            "{loss_ppm} {latency_ms} {congestion:?}: {:?} queue drops {} stats {:?}",
            report.transfer_time, report.up.queue_drops, report.client_stats
        );
    }
    BYTES as f64 * 8.0 / report.transfer_time.as_secs_f64() / 1e6
}

#[test]
#[ignore = "prints a table; run with --ignored --nocapture"]
fn goodput_by_loss_and_latency() {
    let latencies = [1u64, 10, 50];
    let losses = [0u32, 1_000, 10_000, 50_000];
    for congestion in [CongestionAlgorithm::Cubic, CongestionAlgorithm::NewReno] {
        println!(
            "\n{congestion:?}: goodput in Mbit/s of {} MiB over a {} Mbit/s link",
            BYTES >> 20,
            RATE_BPS / 1_000_000
        );
        print!("{:>10}", "loss \\ lat");
        for l in latencies {
            print!("{:>10}", format!("{l} ms"));
        }
        println!();
        for loss in losses {
            print!("{:>10}", format!("{:.1}%", f64::from(loss) / 10_000.0));
            for latency in latencies {
                print!("{:>10.1}", goodput_mbps(loss, latency, congestion));
            }
            println!();
        }
    }
}
