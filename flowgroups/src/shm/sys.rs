//! Small safe wrappers over the system calls a kernel instance's loop needs: waiting on
//! several descriptors (poll(2)), the monotonic clock (clock_gettime(2)), the calling
//! thread's CPU time (getrusage(2) `RUSAGE_THREAD`) and pinning to a core
//! (sched_setaffinity(2)).
//!
//! They live here because this layer is the only part of the crate allowed `unsafe`
//! (DESIGN.md "Crates and what each owns"); every call below only passes pointers to local
//! values that outlive it.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Most descriptors [`poll_readable`] takes at once (one bit each in [`PollReady`]).
pub const MAX_POLL_FDS: usize = 64;

/// What [`poll_readable`] found, one bit per descriptor in the order given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollReady {
    /// Readable, hung up or in error: a read will not block.
    pub ready: u64,
    /// Not an open descriptor (`POLLNVAL`).
    pub invalid: u64,
}

impl PollReady {
    /// True if descriptor `i` is readable (or hung up / in error).
    pub fn is_ready(&self, i: usize) -> bool {
        i < MAX_POLL_FDS && self.ready & (1 << i) != 0
    }

    /// True if descriptor `i` was not open.
    pub fn is_invalid(&self, i: usize) -> bool {
        i < MAX_POLL_FDS && self.invalid & (1 << i) != 0
    }
}

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no limit). A signal
/// interrupting the wait is reported as "nothing ready" (the caller loops anyway).
///
/// Takes raw descriptor numbers because that is what `QueuePair::wait_fd` hands out;
/// polling is only an observation, and a number that names no open descriptor is
/// reported in [`PollReady::invalid`] rather than causing harm.
pub fn poll_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<PollReady> {
    if fds.len() > MAX_POLL_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors to poll"));
    }
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `pfds` is a live array of `pfds.len()` pollfd structs the kernel may write
    // (revents); `ts_ptr` is null or points to a live timespec; the signal mask pointer is
    // null (unchanged).
    let rc = unsafe {
        libc::ppoll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ts_ptr, std::ptr::null())
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(PollReady::default())
        } else {
            Err(err)
        };
    }
    let mut out = PollReady::default();
    for (i, p) in pfds.iter().enumerate() {
        if p.revents & libc::POLLNVAL != 0 {
            out.invalid |= 1 << i;
        } else if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            out.ready |= 1 << i;
        }
    }
    Ok(out)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `InstanceShared::heartbeat_ns`, comparable
/// across the processes of one machine.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec into a live local; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// CPU time (user + system) the calling thread has used so far.
pub fn thread_cpu_time() -> io::Result<Duration> {
    // SAFETY: `rusage` is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: writes one rusage into a live local.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// Restricts the calling thread to CPU `core`.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "core number too large"));
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of the live local set; `core` was checked against
    // CPU_SETSIZE above.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: passes a pointer to the live set and its exact size; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::EventFd;
    use std::os::fd::AsRawFd;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no ppoll")]
    fn poll_reports_which_descriptor_is_ready() {
        let a = EventFd::new().unwrap();
        let b = EventFd::new().unwrap();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        let r = poll_readable(&fds, Some(Duration::ZERO)).unwrap();
        assert_eq!(r, PollReady::default());
        b.notify().unwrap();
        let r = poll_readable(&fds, Some(Duration::from_secs(5))).unwrap();
        assert!(!r.is_ready(0) && r.is_ready(1));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no ppoll")]
    fn poll_times_out_and_flags_closed_descriptors() {
        let a = EventFd::new().unwrap();
        // A number far above the lowest-free ones that parallel tests get, so that none of
        // them reuses it between the close and the poll.
        let closed = {
            let e = EventFd::new().unwrap();
            // SAFETY: dup2 onto descriptor 900, which nothing in this process owns (the
            // tests open a few dozen descriptors, numbered from the lowest free one).
            let high = unsafe { libc::dup2(e.as_raw_fd(), 900) };
            assert_eq!(high, 900);
            // SAFETY: 900 is the copy dup2 just made; closing it affects nothing else.
            unsafe { libc::close(high) };
            high
        };
        let start = std::time::Instant::now();
        let r = poll_readable(&[a.as_raw_fd()], Some(Duration::from_millis(20))).unwrap();
        assert_eq!(r.ready, 0);
        assert!(start.elapsed() >= Duration::from_millis(15));
        let r = poll_readable(&[closed], Some(Duration::ZERO)).unwrap();
        assert!(r.is_invalid(0), "a closed descriptor is flagged");
        assert!(poll_readable(&[0; MAX_POLL_FDS + 1], Some(Duration::ZERO)).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no clock_gettime(CLOCK_MONOTONIC) via libc")]
    fn clocks_advance() {
        let t0 = monotonic_ns();
        let c0 = thread_cpu_time().unwrap();
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        assert!(monotonic_ns() >= t0 + 30_000_000);
        assert!(thread_cpu_time().unwrap() > c0, "a spinning thread uses CPU time");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sched_setaffinity")]
    fn pinning_to_core_zero_works_and_huge_cores_are_refused() {
        std::thread::spawn(|| {
            pin_to_core(0).unwrap();
            assert!(pin_to_core(1 << 20).is_err());
        })
        .join()
        .unwrap();
    }
}
