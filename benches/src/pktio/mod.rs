//! Packet I/O benchmark: packets per second per queue for the `ixgbe-user` backends, with
//! minimum-size frames (60 bytes, 64 on the wire with the FCS) moved in batches of 32 — the
//! setting ixy reports its figures for.
//!
//! Scenarios, all measured in one run so the figures share the machine's state:
//! - [`model`]: the 82599 driver on model port A transmits to port B through the in-memory
//!   link while the model engine runs on its own thread ([`ixgbe_user::ModelRunner`]); the
//!   driver on port B receives. No privileges needed.
//! - [`veth`]: one queue of a veth pair whose peer lives in a namespace the benchmark
//!   creates, driven through an `AF_PACKET` socket (the baseline) and through AF_XDP with the
//!   program attached in SKB and in driver mode (copy bind; veth has no zero-copy). TX sends
//!   to the peer; RX receives what an `AF_PACKET` generator on the peer sends. Needs root.
//!
//! Each test runs a warm-up, then a fixed window; rates are counted over the window only.

pub mod model;
pub mod report;
pub mod veth;

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use ixgbe_user::{QueueError, QueuePair};

/// Frame length without FCS: the 64-byte Ethernet minimum less its 4-byte FCS.
pub const FRAME_LEN: usize = 60;

/// Frames per transmit batch (one doorbell / kick) and per receive burst.
pub const BATCH: usize = 32;

/// How long each test runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunConfig {
    /// Traffic before counting starts (rings fill, caches warm, the generator gets going).
    pub warmup: Duration,
    /// The counted window.
    pub duration: Duration,
    /// Pin the benchmark's threads to distinct CPUs (when there are at least two).
    pub pin_threads: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
            pin_threads: true,
        }
    }
}

/// Which way the measured queue moves frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The queue transmits.
    Tx,
    /// The queue receives.
    Rx,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Tx => "TX",
            Direction::Rx => "RX",
        })
    }
}

/// One measured rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Short backend name, e.g. `"AF_PACKET"`; the baseline is [`AF_PACKET`].
    pub backend: String,
    /// Which way the measured queue moved frames.
    pub direction: Direction,
    /// Frames that made it through the measured point in the window: for TX, frames the
    /// wire carried to the other side; for RX, frames the queue handed to the benchmark.
    pub packets: u64,
    /// Frames offered in the window: for TX, frames the queue accepted from the benchmark;
    /// for RX, frames the traffic source sent.
    pub offered: u64,
    /// Length of the window.
    pub seconds: f64,
}

/// Backend name of the baseline every other figure is compared with.
pub const AF_PACKET: &str = "AF_PACKET";

impl Measurement {
    /// Millions of frames per second through the measured point.
    pub fn mpps(&self) -> f64 {
        rate(self.packets, self.seconds)
    }

    /// Millions of frames per second offered.
    pub fn offered_mpps(&self) -> f64 {
        rate(self.offered, self.seconds)
    }

    /// Fraction of offered frames that did not make it (0 when nothing was offered).
    pub fn loss(&self) -> f64 {
        if self.offered == 0 {
            return 0.0;
        }
        self.offered.saturating_sub(self.packets) as f64 / self.offered as f64
    }
}

fn rate(packets: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { packets as f64 / seconds / 1e6 } else { 0.0 }
}

/// A scenario that did not run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The backend or scenario.
    pub backend: String,
    /// Why it did not run.
    pub reason: String,
}

/// Why a scenario failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BenchError {
    /// Setting up a device, interface or socket failed.
    Setup(String),
    /// A queue operation failed while traffic was flowing.
    Queue(QueueError),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Setup(why) => write!(f, "setup failed: {why}"),
            BenchError::Queue(e) => write!(f, "queue failed during the run: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<QueueError> for BenchError {
    fn from(e: QueueError) -> Self {
        BenchError::Queue(e)
    }
}

/// Wraps a setup error with what was being set up.
pub(crate) fn setup<E: fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// A minimal IPv4/UDP frame of exactly [`FRAME_LEN`] bytes (RFC 791 header with a valid
/// checksum, RFC 768 UDP without checksum, zero payload padding).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    src_port: u16,
    dst_port: u16,
) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (FRAME_LEN - 14) as u16;
    {
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src_ip);
        ip[16..20].copy_from_slice(&dst_ip);
        let sum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    f[34..36].copy_from_slice(&src_port.to_be_bytes());
    f[36..38].copy_from_slice(&dst_port.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// RFC 1071 one's-complement sum over an IPv4 header whose checksum field is zero.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Queues up to [`BATCH`] copies of `frame` and flushes them with one doorbell or kick.
pub fn transmit_batch(queue: &mut dyn QueuePair, frame: &[u8]) -> Result<usize, QueueError> {
    let mut queued = 0;
    while queued < BATCH {
        let accepted = queue.tx_one(&mut |buffer| match buffer.get_mut(..frame.len()) {
            Some(slot) => {
                slot.copy_from_slice(frame);
                frame.len()
            }
            None => 0,
        })?;
        if !accepted {
            break;
        }
        queued += 1;
    }
    queue.tx_flush()?;
    Ok(queued)
}

/// Receives one burst of up to [`BATCH`] frames, touching each frame's first byte so the
/// data is really read, as a consumer would.
pub fn receive_batch(queue: &mut dyn QueuePair, checksum: &mut u64) -> Result<usize, QueueError> {
    queue.rx_burst(BATCH, &mut |frame| {
        *checksum = checksum.wrapping_add(u64::from(frame.first().copied().unwrap_or(0)));
    })
}

/// Rounds of work between two clock readings in [`run_window`].
const CLOCK_EVERY: usize = 16;

/// Counters at the start and end of a window, and its exact length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window<C> {
    pub(crate) start: C,
    pub(crate) end: C,
    pub(crate) seconds: f64,
}

/// Runs `work` repeatedly through the warm-up and the counted window; `snapshot` reads the
/// counters at the window's edges. `state` is what both need (queues, sockets).
pub(crate) fn run_window<S, C>(
    config: &RunConfig,
    state: &mut S,
    mut work: impl FnMut(&mut S) -> Result<(), BenchError>,
    snapshot: impl Fn(&S) -> Result<C, BenchError>,
) -> Result<Window<C>, BenchError> {
    let mut work_until = |state: &mut S, until: Instant| -> Result<(), BenchError> {
        // Reading the clock costs as much as an idle poll on a VM, so look at it only every
        // few rounds; a round is at most one batch, so the window overshoots by microseconds.
        while Instant::now() < until {
            for _ in 0..CLOCK_EVERY {
                work(state)?;
            }
        }
        Ok(())
    };
    work_until(state, Instant::now() + config.warmup)?;
    let start = snapshot(state)?;
    let started = Instant::now();
    work_until(state, started + config.duration)?;
    let end = snapshot(state)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Window { start, end, seconds })
}

/// Restricts the calling thread to `cpu` (threads it spawns afterwards inherit that).
/// Does nothing unless pinning is on and the machine has at least two CPUs.
pub fn pin_current_thread(config: &RunConfig, cpu: usize) -> io::Result<()> {
    let cpus = online_cpus();
    if !config.pin_threads || cpus < 2 {
        return Ok(());
    }
    set_affinity(&[cpu % cpus])
}

/// Lets the calling thread run on every CPU again.
pub fn unpin_current_thread(config: &RunConfig) -> io::Result<()> {
    let cpus = online_cpus();
    if !config.pin_threads || cpus < 2 {
        return Ok(());
    }
    set_affinity(&(0..cpus).collect::<Vec<_>>())
}

/// CPUs online on the machine. Not `available_parallelism`: that follows the calling
/// thread's affinity, which is exactly what pinning narrows.
fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
        // SAFETY: CPU_SET sets bit `cpu` of `set`, which is below CPU_SETSIZE (checked above),
        // the number of bits a cpu_set_t holds.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t and its exact size is passed; pid 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame_is_minimum_size_with_a_valid_ip_header() {
        let f =
            udp_frame([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], [10, 0, 0, 1], [10, 0, 0, 2], 7, 9);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(ipv4_checksum(&f[14..34]), 0, "checksum over a checksummed header is 0");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46, "IPv4 total length");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26, "UDP length");
        assert_eq!(
            (u16::from_be_bytes([f[34], f[35]]), u16::from_be_bytes([f[36], f[37]])),
            (7, 9)
        );
    }

    #[test]
    fn rates_loss_and_empty_windows() {
        let m = Measurement {
            backend: "x".into(),
            direction: Direction::Rx,
            packets: 3_000_000,
            offered: 4_000_000,
            seconds: 2.0,
        };
        assert!((m.mpps() - 1.5).abs() < 1e-9);
        assert!((m.offered_mpps() - 2.0).abs() < 1e-9);
        assert!((m.loss() - 0.25).abs() < 1e-9);
        let empty = Measurement { offered: 0, packets: 0, seconds: 0.0, ..m };
        assert_eq!((empty.mpps(), empty.loss()), (0.0, 0.0));
    }

    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: all-zero cpu_set_t is the empty set; sched_getaffinity fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is live and its exact size is passed; pid 0 = this thread.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0);
        // SAFETY: CPU_ISSET reads one bit below CPU_SETSIZE.
        (0..online_cpus()).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
    }

    #[test]
    fn a_pinned_thread_can_be_moved_to_another_cpu_and_unpinned() {
        if online_cpus() < 2 {
            println!("SKIPPED: one CPU, pinning is a no-op");
            return;
        }
        let config = RunConfig::default();
        // On a fresh thread, so the test harness's thread keeps its affinity.
        std::thread::spawn(move || {
            pin_current_thread(&config, 0).unwrap();
            assert_eq!(allowed_cpus(), vec![0]);
            // Moving from one pinned CPU to another must work: the engine and driver threads
            // rely on it.
            pin_current_thread(&config, 1).unwrap();
            assert_eq!(allowed_cpus(), vec![1]);
            unpin_current_thread(&config).unwrap();
            assert_eq!(allowed_cpus(), (0..online_cpus()).collect::<Vec<_>>());
            let off = RunConfig { pin_threads: false, ..config };
            pin_current_thread(&off, 0).unwrap();
            assert_eq!(allowed_cpus().len(), online_cpus(), "pinning off changes nothing");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn window_counts_only_after_the_warm_up() {
        let config = RunConfig {
            warmup: Duration::from_millis(30),
            duration: Duration::from_millis(30),
            pin_threads: false,
        };
        let mut count = 0u64;
        let w = run_window(
            &config,
            &mut count,
            |c| {
                *c += 1;
                std::thread::sleep(Duration::from_millis(1));
                Ok(())
            },
            |c| Ok(*c),
        )
        .unwrap();
        assert!(w.start > 5, "warm-up work ran before the window: {}", w.start);
        assert!(w.end > w.start);
        assert!(w.seconds >= 0.03 && w.seconds < 1.0, "{}", w.seconds);
    }
}
