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

use std::process::ExitCode;
use std::time::Duration;

use netpop_benches::tcp::pair::{self, CorePair};
use netpop_benches::tcp::{BenchClock, Count};

fn main() -> ExitCode {
    let mut connections = 1000u64;
    let mut concurrency = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--bench" => continue,
            "--connections" | "--concurrency" => args.next().and_then(|v| v.parse::<u64>().ok()),
            _ => None,
        };
        match (arg.as_str(), value) {
            ("--connections", Some(n)) => connections = n,
            ("--concurrency", Some(n)) => concurrency = usize::try_from(n).unwrap_or(1).max(1),
            _ => {
                eprintln!("usage: tcp_lifecycles [--connections N] [--concurrency C]");
                return ExitCode::from(2);
            }
        }
    }

    let mut clock = BenchClock::virtual_time(Duration::from_micros(10));
    let mut pair = CorePair::new(clock.now(), 4096);
    let stats = pair::churn(&mut pair, concurrency, &mut clock, &mut Count(connections));
    // TIME-WAIT is 60 s: after this every connection has left both stacks.
    pair.idle_for(&mut clock, Duration::from_secs(61));
    let left = pair.client.socket_count() + pair.server.socket_count();
    println!(
        "{} lifecycles, {} at a time: {} failed, {} frames, {} sockets left",
        stats.done,
        concurrency,
        stats.failures,
        pair.frames(),
        left
    );
    if stats.done != connections || stats.failures != 0 || left != 0 {
        eprintln!("tcp_lifecycles: not every lifecycle completed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
