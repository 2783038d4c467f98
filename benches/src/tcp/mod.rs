//! tcp-core in memory beside its peers: the shared parts of the `tcp_compare` and
//! `tcp_lifecycles` bench targets (BENCHMARKS.md, "tcp-core in memory").
//!
//! Three stacks run the same workloads on one pinned CPU, in one process, in one run:
//! - [`pair`]: two tcp-core [`Stack`](tcp_core::stack::Stack)s joined by an in-memory
//!   Ethernet wire;
//! - smoltcp: two `Interface`s over a two-queue in-memory device (in the bench target, as
//!   smoltcp is a dev-dependency of this crate);
//! - [`kernel`]: the Linux kernel over loopback, `std::net` sockets and epoll, as a
//!   reference.
//!
//! The workloads: short connections (SYN, a 4-byte request, a 4-byte response, the server
//! closes first as an HTTP/1.0 server does, then the client) with 1 and with 1,000
//! connections in flight, and one bulk transfer with a 1,500-byte MTU. Each run counts
//! the CPU time of the one thread that drives both ends (plus, for Linux, the softirq
//! thread of that CPU), so the figure is the cost of the whole exchange, client and server
//! together. The protocol itself is checked along the way: every response must arrive
//! whole before the end of stream, and every failure is counted.

pub mod clock;
pub mod cpu;
pub mod kernel;
pub mod pair;
pub mod report;

use core::net::Ipv4Addr;
use std::time::Duration;

pub use clock::BenchClock;

/// The request a client sends on every short connection.
pub const REQUEST: &[u8; 4] = b"ping";
/// The response the server sends before it closes.
pub const RESPONSE: &[u8; 4] = b"pong";
/// Send buffer of every connection in the in-memory stacks (tcp-core's default).
pub const SEND_BUFFER: usize = 64 * 1024;
/// Receive buffer of every connection in the in-memory stacks (tcp-core's default).
pub const RECV_BUFFER: usize = 128 * 1024;
/// IP MTU of the in-memory wires.
pub const MTU: usize = 1500;
/// How much the bulk sender offers and the receiver reads per call.
pub const APP_CHUNK: usize = 64 * 1024;
/// The client's address on the in-memory wire.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The server's address on the in-memory wire.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The client's MAC address on the in-memory wire.
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// The server's MAC address on the in-memory wire.
pub const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// The port the server listens on.
pub const SERVER_PORT: u16 = 80;
/// Local ports clients use (Linux's default ephemeral range).
pub const CLIENT_PORTS: (u16, u16) = (32768, 60999);

/// What one run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Short connections with `concurrency` of them in flight at any time.
    Churn {
        /// Connections kept open at once.
        concurrency: usize,
    },
    /// One connection carrying `bytes` from client to server.
    Bulk {
        /// Bytes to move.
        bytes: u64,
    },
}

impl Workload {
    /// The unit the rate is given in.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Churn { .. } => "connections/s",
            Workload::Bulk { .. } => "Gbit/s",
        }
    }

    /// A short label for tables.
    pub fn label(self) -> String {
        match self {
            Workload::Churn { concurrency: 1 } => "short connections, 1 at a time".into(),
            Workload::Churn { concurrency } => {
                format!("short connections, {} concurrent", report::thousands(concurrency as u64))
            }
            Workload::Bulk { bytes } => format!("bulk, {} MiB one way, MTU 1500", bytes >> 20),
        }
    }
}

/// Decides how long a driver runs: how many connections it may open and when it stops.
pub trait Bound {
    /// May another connection be opened, `started` having been opened so far?
    fn may_start(&self, started: u64) -> bool;
    /// Should the driver go on, `done` units (connections or bytes) being finished?
    fn keep_going(&mut self, done: u64) -> bool;
    /// Once `keep_going` said no, should connections still in flight be closed before the
    /// driver returns (so every frame of every lifecycle is counted)?
    fn finish_in_flight(&self) -> bool {
        false
    }
}

/// A fixed amount of work: `n` connections (or bytes), then stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub u64);

impl Bound for Count {
    fn may_start(&self, started: u64) -> bool {
        started < self.0
    }

    fn keep_going(&mut self, done: u64) -> bool {
        done < self.0
    }

    fn finish_in_flight(&self) -> bool {
        true
    }
}

/// What one run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Units finished inside the measured window (connections, or bytes for bulk).
    pub work: u64,
    /// CPU time spent inside the window.
    pub cpu: Duration,
    /// Wall-clock time of the window.
    pub wall: Duration,
    /// Connections that failed (reset, timed out, short response) inside the whole run.
    pub failures: u64,
    /// Frames the wire carried per unit of work (0 where not known, as for Linux).
    pub frames_per_unit: f64,
    /// How often the driver found nothing in flight and jumped its clock to the next
    /// timer (a delayed ACK, a retransmission): stalls that cost latency, not CPU.
    pub timer_skips: u64,
}

impl Sample {
    /// Work per CPU-second, in the workload's unit (bytes become Gbit/s).
    pub fn rate(&self, workload: Workload) -> f64 {
        let secs = self.cpu.as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        match workload {
            Workload::Churn { .. } => self.work as f64 / secs,
            Workload::Bulk { .. } => self.work as f64 * 8.0 / secs / 1e9,
        }
    }

    /// Share of the wall-clock window the measured thread had the CPU; well below 1 means
    /// other processes took the core.
    pub fn cpu_share(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall <= 0.0 { 0.0 } else { self.cpu.as_secs_f64() / wall }
    }
}

/// Counters a driver returns besides what the [`Meter`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Units finished over the whole run (connections or bytes).
    pub done: u64,
    /// Connections that failed.
    pub failures: u64,
    /// Frames that crossed the wire (both directions).
    pub frames: u64,
    /// Clock jumps to the next timer (see [`Sample::timer_skips`]).
    pub timer_skips: u64,
}

/// Runs a warm-up, then measures a window of wall-clock time (churn) or a fixed amount of
/// work (bulk), reading the CPU clock only at the two ends.
#[derive(Debug)]
pub struct Meter {
    mode: MeterMode,
    cpu: cpu::CpuClock,
    started: std::time::Instant,
    calls: u32,
    start: Option<Mark>,
    end: Option<Mark>,
}

#[derive(Clone, Copy, Debug)]
enum MeterMode {
    Timed { warmup: Duration, window: Duration },
    Work { target: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Mark {
    wall: std::time::Instant,
    cpu: Duration,
    done: u64,
}

/// How many `keep_going` calls pass between two reads of the wall clock in a timed window
/// (a clock read costs about as much as a few wire frames).
const CLOCK_READ_INTERVAL: u32 = 16;

impl Meter {
    /// Warm up for `warmup`, then count for `window` (wall-clock time).
    pub fn timed(warmup: Duration, window: Duration, cpu: cpu::CpuClock) -> Meter {
        Meter::new(MeterMode::Timed { warmup, window }, cpu)
    }

    /// Count from the first call until `target` units are done.
    pub fn work(target: u64, cpu: cpu::CpuClock) -> Meter {
        Meter::new(MeterMode::Work { target }, cpu)
    }

    fn new(mode: MeterMode, cpu: cpu::CpuClock) -> Meter {
        Meter { mode, cpu, started: std::time::Instant::now(), calls: 0, start: None, end: None }
    }

    fn mark(&self, done: u64) -> Mark {
        Mark { wall: std::time::Instant::now(), cpu: self.cpu.read(), done }
    }

    /// The measured window, once the run is over; `None` if it never started or ended.
    pub fn sample(&self, stats: DriverStats) -> Option<Sample> {
        let (start, end) = (self.start?, self.end?);
        let work = end.done.saturating_sub(start.done);
        Some(Sample {
            work,
            cpu: end.cpu.saturating_sub(start.cpu),
            wall: end.wall.saturating_duration_since(start.wall),
            failures: stats.failures,
            frames_per_unit: if stats.done == 0 {
                0.0
            } else {
                stats.frames as f64 / stats.done as f64
            },
            timer_skips: stats.timer_skips,
        })
    }
}

impl Bound for Meter {
    fn may_start(&self, _started: u64) -> bool {
        self.end.is_none()
    }

    fn keep_going(&mut self, done: u64) -> bool {
        if self.end.is_some() {
            return false;
        }
        match self.mode {
            MeterMode::Work { target } => {
                if self.start.is_none() {
                    self.start = Some(self.mark(done));
                }
                if done >= target {
                    self.end = Some(self.mark(done));
                }
            }
            MeterMode::Timed { warmup, window } => {
                self.calls = self.calls.wrapping_add(1);
                if self.calls % CLOCK_READ_INTERVAL != 0 {
                    return true;
                }
                match self.start {
                    None if self.started.elapsed() >= warmup => {
                        self.start = Some(self.mark(done));
                    }
                    Some(start) if start.wall.elapsed() >= window => {
                        self.end = Some(self.mark(done));
                    }
                    _ => {}
                }
            }
        }
        self.end.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_cpu_second_and_bulk_is_in_gigabits() {
        let s = Sample {
            work: 1_000_000,
            cpu: Duration::from_millis(500),
            wall: Duration::from_secs(1),
            ..Sample::default()
        };
        assert!((s.rate(Workload::Churn { concurrency: 1 }) - 2_000_000.0).abs() < 1e-6);
        assert!((s.rate(Workload::Bulk { bytes: 1 }) - 0.016).abs() < 1e-9);
        assert!((s.cpu_share() - 0.5).abs() < 1e-9);
        assert_eq!(Sample::default().rate(Workload::Bulk { bytes: 1 }), 0.0);
    }

    #[test]
    fn a_count_bound_opens_and_finishes_exactly_n() {
        let mut c = Count(3);
        assert!(c.may_start(2) && !c.may_start(3));
        assert!(c.keep_going(2) && !c.keep_going(3));
    }

    #[test]
    fn a_work_meter_measures_from_first_call_to_target() {
        let mut m = Meter::work(100, cpu::CpuClock::Thread);
        assert!(m.keep_going(0));
        assert!(m.sample(DriverStats::default()).is_none(), "no window before the end");
        assert!(m.keep_going(99));
        assert!(!m.keep_going(100));
        assert!(!m.may_start(0), "an ended meter opens nothing more");
        let s = m.sample(DriverStats { done: 100, frames: 300, ..DriverStats::default() });
        let s = s.unwrap();
        assert_eq!(s.work, 100);
        assert!((s.frames_per_unit - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_timed_meter_skips_the_warmup() {
        let mut m = Meter::timed(
            Duration::from_millis(20),
            Duration::from_millis(20),
            cpu::CpuClock::Thread,
        );
        let mut done = 0;
        while m.keep_going(done) {
            done += 1;
        }
        let s = m.sample(DriverStats::default()).unwrap();
        assert!(s.work < done, "work done in the warm-up is not counted");
        assert!(s.wall >= Duration::from_millis(20));
    }
}
