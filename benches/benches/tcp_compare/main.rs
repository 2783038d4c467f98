//! tcp-core in memory beside smoltcp in memory and the Linux kernel over loopback, on one
//! pinned CPU, in one run (BENCHMARKS.md, "tcp-core in memory").
//!
//!     cargo bench -p netpop-benches --bench tcp_compare -- [options]
//!     scripts/bench-tcp.sh                      (also runs the callgrind part)
//!
//! Options: `--rounds N` (3), `--window SECS` (1.0) and `--warmup SECS` (0.25) for the
//! short-connection runs, `--bulk-mib N` (256), `--concurrency 1,1000`, `--only
//! tcp-core,smoltcp,linux`, `--cpu N` (the last CPU), `--quick` (one short round).
//!
//! Before measuring, every driver runs a few hundred connections and a few MiB under a
//! count bound and must finish all of them without a failure, and no short connection may
//! wait for a timer, so a broken driver cannot produce a figure.

mod smoltcp_pair;

use std::process::ExitCode;
use std::time::Duration;

use netpop_benches::tcp::cpu::{self, CpuClock};
use netpop_benches::tcp::pair::{self, CorePair};
use netpop_benches::tcp::report::{Peer, Results};
use netpop_benches::tcp::{BenchClock, Count, DriverStats, Meter, Sample, Workload, kernel};

/// Listen backlog of the tcp-core server (as the kernel reference's).
const BACKLOG: usize = 4096;

#[derive(Clone, Debug)]
struct Options {
    rounds: usize,
    warmup: Duration,
    window: Duration,
    bulk_bytes: u64,
    concurrency: Vec<usize>,
    peers: Vec<Peer>,
    cpu: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 3,
            warmup: Duration::from_millis(250),
            window: Duration::from_secs(1),
            bulk_bytes: 256 << 20,
            concurrency: vec![1, 1000],
            peers: Peer::ALL.to_vec(),
            cpu: cpu::online_cpus() - 1,
        }
    }
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    let secs = |v: Option<String>| -> Result<Duration, String> {
        let v = v.ok_or("missing value")?;
        Duration::try_from_secs_f64(v.parse().map_err(|e| format!("{v}: {e}"))?)
            .map_err(|e| e.to_string())
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes this to every bench target.
            "--bench" => {}
            "--rounds" => o.rounds = num(args.next())?.max(1),
            "--warmup" => o.warmup = secs(args.next())?,
            "--window" => o.window = secs(args.next())?,
            "--bulk-mib" => o.bulk_bytes = (num(args.next())? as u64).max(1) << 20,
            "--cpu" => o.cpu = num(args.next())?,
            "--concurrency" => {
                let v = args.next().ok_or("--concurrency needs a list")?;
                o.concurrency = v
                    .split(',')
                    .map(|c| num(Some(c.to_string())).map(|c| c.max(1)))
                    .collect::<Result<_, _>>()?;
            }
            "--only" => {
                let v = args.next().ok_or("--only needs a list")?;
                o.peers = v
                    .split(',')
                    .map(|name| {
                        Peer::ALL
                            .into_iter()
                            .find(|p| p.name() == name)
                            .ok_or(format!("unknown stack {name}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--quick" => {
                o.rounds = 1;
                o.warmup = Duration::from_millis(50);
                o.window = Duration::from_millis(200);
                o.bulk_bytes = 32 << 20;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn num(v: Option<String>) -> Result<usize, String> {
    let v = v.ok_or("missing value")?;
    v.parse().map_err(|e| format!("{v}: {e}"))
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tcp_compare: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cpu::pin_to(options.cpu) {
        eprintln!("tcp_compare: cannot pin to CPU {}: {e}", options.cpu);
        return ExitCode::FAILURE;
    }
    let softirq = cpu::ksoftirqd_pid(options.cpu);
    if let Err(e) = self_check(&options) {
        eprintln!("tcp_compare: self-check failed: {e}");
        return ExitCode::FAILURE;
    }

    let load_before = load_average();
    let mut workloads: Vec<Workload> =
        options.concurrency.iter().map(|&c| Workload::Churn { concurrency: c }).collect();
    workloads.push(Workload::Bulk { bytes: options.bulk_bytes });
    let mut results = Results::default();
    for round in 1..=options.rounds {
        for &workload in &workloads {
            for &peer in &options.peers {
                match measure(peer, workload, &options, softirq) {
                    Ok(sample) => {
                        eprintln!(
                            "round {round}/{}: {:<8} {:<40} {:>12.2} {} (CPU {:.0}% of wall)",
                            options.rounds,
                            peer.name(),
                            workload.label(),
                            sample.rate(workload),
                            workload.unit(),
                            sample.cpu_share() * 100.0
                        );
                        results.add(workload, peer, sample);
                    }
                    Err(e) => eprintln!("round {round}: {} {}: {e}", peer.name(), workload.label()),
                }
            }
        }
    }

    println!(
        "tcp-core in memory vs smoltcp in memory vs Linux loopback — CPU {} of {}, {} round(s), \
         {:.2} s windows after {:.2} s warm-up, bulk {} MiB; load average {} before, {} after",
        options.cpu,
        cpu::online_cpus(),
        options.rounds,
        options.window.as_secs_f64(),
        options.warmup.as_secs_f64(),
        options.bulk_bytes >> 20,
        load_before,
        load_average()
    );
    println!("\nMedians, per CPU-second of the one thread that drives both ends:\n");
    println!("{}", results.summary());
    println!("Every run:\n");
    println!("{}", results.details());
    ExitCode::SUCCESS
}

/// One measured run of `peer` on `workload`.
fn measure(
    peer: Peer,
    workload: Workload,
    options: &Options,
    softirq: Option<u32>,
) -> Result<Sample, String> {
    let cpu_clock = match (peer, softirq) {
        (Peer::Linux, Some(pid)) => CpuClock::ThreadAndSoftirq { ksoftirqd: pid },
        _ => CpuClock::Thread,
    };
    let mut meter = match workload {
        Workload::Churn { .. } => Meter::timed(options.warmup, options.window, cpu_clock),
        Workload::Bulk { bytes } => Meter::work(bytes, cpu_clock),
    };
    let stats = drive(peer, workload, &mut meter)?;
    meter.sample(stats).ok_or_else(|| "the run ended before its window did".to_string())
}

/// Runs one driver under `bound`.
fn drive<B: netpop_benches::tcp::Bound>(
    peer: Peer,
    workload: Workload,
    bound: &mut B,
) -> Result<DriverStats, String> {
    let mut clock = BenchClock::real();
    Ok(match (peer, workload) {
        (Peer::TcpCore, Workload::Churn { concurrency }) => {
            let mut pair = CorePair::new(clock.tick(), BACKLOG);
            pair::churn(&mut pair, concurrency, &mut clock, bound)
        }
        (Peer::TcpCore, Workload::Bulk { .. }) => {
            let mut pair = CorePair::new(clock.tick(), 1);
            pair::bulk(&mut pair, &mut clock, bound)
        }
        (Peer::Smoltcp, Workload::Churn { concurrency }) => {
            smoltcp_pair::churn(concurrency, &mut clock, bound)
        }
        (Peer::Smoltcp, Workload::Bulk { .. }) => smoltcp_pair::bulk(&mut clock, bound),
        (Peer::Linux, Workload::Churn { concurrency }) => {
            kernel::churn(concurrency, bound).map_err(|e| e.to_string())?
        }
        (Peer::Linux, Workload::Bulk { .. }) => kernel::bulk(bound).map_err(|e| e.to_string())?,
    })
}

/// Every driver must finish a fixed amount of work without a failure.
fn self_check(options: &Options) -> Result<(), String> {
    let mut checks: Vec<(Workload, u64)> = options
        .concurrency
        .iter()
        .map(|&c| (Workload::Churn { concurrency: c }, (2 * c as u64).max(300)))
        .collect();
    checks.push((Workload::Bulk { bytes: 8 << 20 }, 8 << 20));
    for &peer in &options.peers {
        for &(workload, n) in &checks {
            let stats = drive(peer, workload, &mut Count(n))?;
            // A short connection never needs to wait for a timer on a lossless wire; one
            // that does points at a stall in the driver or the stack.
            let stalled = matches!(workload, Workload::Churn { .. }) && stats.timer_skips > 0;
            if stats.failures != 0 || stats.done < n || stalled {
                return Err(format!(
                    "{} {}: {} of {n} done, {} failed, {} timer waits",
                    peer.name(),
                    workload.label(),
                    stats.done,
                    stats.failures,
                    stats.timer_skips
                ));
            }
        }
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
