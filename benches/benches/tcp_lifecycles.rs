//! Complete connection lifecycles between two tcp-core stacks, in virtual time, for
//! callgrind's instruction counts (BENCHMARKS.md, "tcp-core in memory").
//!
//!     valgrind --tool=callgrind <this bench binary> --connections 1000 --concurrency 1
//!
//! Each lifecycle: SYN, 4-byte request, 4-byte response, the server closes, the client
//! closes, and the server's TIME-WAIT expires (the run idles 61 virtual seconds at the
//! end so every connection is reaped). Time is virtual and the stacks' secrets fixed, so
//! two runs execute the same instructions; the instructions of one lifecycle are
//! `(Ir(N) - Ir(0)) / N`, the run with N = 0 paying for the process, the stacks and the
//! listener. `scripts/bench-tcp.sh` does that arithmetic.
//!
//! `--stack smoltcp` runs the same exchange between two smoltcp interfaces (the driver of
//! the `tcp_compare` target), for an instruction count that no other process on the
//! machine can disturb. smoltcp keeps no TIME-WAIT (its server sockets are re-armed at
//! once), so its lifecycles end with the client's close.
//!
//! `--bulk-mib N` instead moves N MiB over one connection (the bulk workload), for a
//! per-function profile of the transfer path.

#[path = "tcp_compare/smoltcp_pair.rs"]
mod smoltcp_pair;

use std::process::ExitCode;
use std::time::Duration;

use netpop_benches::tcp::pair::{self, CorePair};
use netpop_benches::tcp::{BenchClock, Count, DriverStats};

fn main() -> ExitCode {
    let mut connections = 1000u64;
    let mut concurrency = 1usize;
    let mut smoltcp = false;
    let mut bulk_mib = None;
    // cargo bench passes `--bench` to every bench target.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1).map(String::as_str)) {
            ("--connections", Some(v)) if v.parse::<u64>().is_ok() => {
                connections = v.parse().unwrap_or(0)
            }
            ("--concurrency", Some(v)) if v.parse::<usize>().is_ok() => {
                concurrency = v.parse::<usize>().unwrap_or(1).max(1)
            }
            ("--bulk-mib", Some(v)) if v.parse::<u64>().is_ok() => bulk_mib = v.parse::<u64>().ok(),
            ("--stack", Some("tcp-core")) => smoltcp = false,
            ("--stack", Some("smoltcp")) => smoltcp = true,
            _ => {
                eprintln!(
                    "usage: tcp_lifecycles [--connections N] [--concurrency C] \
                     [--bulk-mib N] [--stack tcp-core|smoltcp]"
                );
                return ExitCode::from(2);
            }
        }
    }

    let mut clock = BenchClock::virtual_time(Duration::from_micros(10));
    if let Some(mib) = bulk_mib {
        let bytes = mib << 20;
        let stats = if smoltcp {
            smoltcp_pair::bulk(&mut clock, &mut Count(bytes))
        } else {
            let mut pair = CorePair::new(clock.now(), 1);
            pair::bulk(&mut pair, &mut clock, &mut Count(bytes))
        };
        println!("{} bytes moved, {} frames, {} failed", stats.done, stats.frames, stats.failures);
        let ok = stats.done >= bytes && stats.failures == 0;
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let (stats, left) = if smoltcp {
        (smoltcp_pair::churn(concurrency, &mut clock, &mut Count(connections)), 0)
    } else {
        run_tcp_core(concurrency, connections, &mut clock)
    };
    println!(
        "{} lifecycles, {} at a time: {} failed, {} frames, {} timer waits, {} sockets left",
        stats.done, concurrency, stats.failures, stats.frames, stats.timer_skips, left
    );
    if stats.done != connections || stats.failures != 0 || left != 0 {
        eprintln!("tcp_lifecycles: not every lifecycle completed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The tcp-core lifecycles, TIME-WAIT included; returns the driver's counters and the
/// sockets left in both stacks at the end (0 when every connection was reaped).
fn run_tcp_core(
    concurrency: usize,
    connections: u64,
    clock: &mut BenchClock,
) -> (DriverStats, usize) {
    let mut pair = CorePair::new(clock.now(), 4096);
    let stats = pair::churn(&mut pair, concurrency, clock, &mut Count(connections));
    // TIME-WAIT is 60 s: after this every connection has left both stacks.
    pair.idle_for(clock, Duration::from_secs(61));
    let left = pair.client.socket_count() + pair.server.socket_count();
    (DriverStats { frames: pair.frames(), ..stats }, left)
}
