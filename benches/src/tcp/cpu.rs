//! Pinning to one CPU and reading the CPU time a run consumed.
//!
//! The VM the figures come from is shared, so wall-clock time includes whatever other
//! processes ran on the core. The CPU time of the measuring thread does not, which makes it
//! the steadier figure. For the kernel over loopback, part of the work (the receive side of
//! every segment) may run in the CPU's `ksoftirqd` thread instead of the sending system
//! call; [`CpuClock::ThreadAndSoftirq`] adds that thread's time.

use std::io;
use std::time::Duration;

/// Which CPU time a [`Meter`](super::Meter) counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuClock {
    /// The calling thread's user and system time.
    Thread,
    /// The calling thread's time plus that of the `ksoftirqd` thread with this pid.
    ThreadAndSoftirq {
        /// Pid of `ksoftirqd/<cpu>` for the CPU the thread is pinned to.
        ksoftirqd: u32,
    },
}

impl CpuClock {
    /// The current reading.
    pub fn read(self) -> Duration {
        match self {
            CpuClock::Thread => thread_cpu_time(),
            CpuClock::ThreadAndSoftirq { ksoftirqd } => {
                thread_cpu_time() + process_cpu_time(ksoftirqd).unwrap_or_default()
            }
        }
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec the call fills; the clock id is a constant the kernel
    // knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// User plus system time of process (or thread) `pid` from `/proc/<pid>/stat`, in clock
/// ticks turned into a duration.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are counted from its `)`.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) (fields 14 and 15 of proc(5)).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(Duration::from_nanos((utime + stime).saturating_mul(1_000_000_000 / hz)))
}

/// The pid of `ksoftirqd/<cpu>`, if the kernel runs one.
pub fn ksoftirqd_pid(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// CPUs online on the machine (not `available_parallelism`, which follows the affinity
/// mask that pinning narrows).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Restricts the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    if cpu >= online_cpus() || cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no CPU {cpu}")));
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), the number of bits the set holds.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t and its exact size is passed; pid 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The CPU the calling thread runs on now.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_grows_with_work_on_this_thread() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() < before + Duration::from_millis(5) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() >= before + Duration::from_millis(5));
    }

    #[test]
    fn own_process_time_is_readable_from_proc() {
        let pid = std::process::id();
        assert!(process_cpu_time(pid).is_some());
        assert!(process_cpu_time(u32::MAX).is_none(), "no such pid");
    }

    #[test]
    fn a_pinned_thread_runs_on_its_cpu() {
        std::thread::spawn(|| {
            let cpu = online_cpus() - 1;
            pin_to(cpu).unwrap();
            assert_eq!(current_cpu(), Some(cpu));
            assert!(pin_to(online_cpus()).is_err(), "a CPU that does not exist");
        })
        .join()
        .unwrap();
    }
}
