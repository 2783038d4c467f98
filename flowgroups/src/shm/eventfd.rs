//! Cross-process wake-ups with eventfd(2).
//!
//! An instance writes an application's eventfd only when the app has announced it is going
//! to sleep (DESIGN.md "Shared memory and trust": the busy path makes no system call); the
//! app waits on it with ppoll(2), alone or next to its other fds (epoll in the shim).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A non-blocking, close-on-exec eventfd used as a counter of wake-ups.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// Creates an eventfd with counter 0 (`EFD_CLOEXEC | EFD_NONBLOCK`).
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain system call with constant flags; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Wraps an eventfd received from another process. It must be non-blocking for
    /// [`EventFd::drain`] not to block; it is switched to non-blocking here.
    pub fn from_fd(fd: OwnedFd) -> io::Result<EventFd> {
        // SAFETY: F_GETFL/F_SETFL only read and set the descriptor's status flags.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(EventFd(fd))
    }

    /// Duplicates the descriptor (e.g. to send it to another process).
    pub fn try_clone(&self) -> io::Result<EventFd> {
        Ok(EventFd(self.0.try_clone()?))
    }

    /// Adds one to the counter, waking a waiter. A counter at its maximum already means
    /// "wake up", so a full counter is not an error.
    pub fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a valid u64 to our descriptor.
            let n = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(err),
            }
        }
    }

    /// Reads and resets the counter; 0 if nothing was signalled.
    pub fn drain(&self) -> io::Result<u64> {
        let mut value: u64 = 0;
        loop {
            // SAFETY: reads at most 8 bytes into a valid, writable u64.
            let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
            if n == 8 {
                return Ok(value);
            }
            if n >= 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "short eventfd read"));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(err),
            }
        }
    }

    /// Waits until the counter is non-zero or `timeout` passes (`None`: forever). Returns
    /// whether it was signalled; does not reset the counter (call [`EventFd::drain`]).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        loop {
            let mut pfd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let left = match deadline {
                None => None,
                Some(None) => None, // beyond what Instant can represent: wait forever
                Some(Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            };
            let ts = left.map(|d| libc::timespec {
                tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: d.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: one valid pollfd; `ts_ptr` is null or points to a live timespec; no
            // signal mask change (null sigmask).
            let rc = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
            if rc > 0 {
                return Ok(true);
            }
            if rc == 0 {
                return Ok(false);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl From<EventFd> for OwnedFd {
    fn from(e: EventFd) -> OwnedFd {
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_then_drain_counts_and_resets() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.drain().unwrap(), 0);
        e.notify().unwrap();
        e.notify().unwrap();
        assert_eq!(e.drain().unwrap(), 2);
        assert_eq!(e.drain().unwrap(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no ppoll")]
    fn wait_times_out_when_quiet_and_returns_when_signalled() {
        let e = EventFd::new().unwrap();
        let start = Instant::now();
        assert!(!e.wait(Some(Duration::from_millis(20))).unwrap());
        assert!(start.elapsed() >= Duration::from_millis(20));
        e.notify().unwrap();
        assert!(e.wait(Some(Duration::from_secs(5))).unwrap());
        assert!(e.wait(None).unwrap(), "wait does not consume the signal");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no ppoll")]
    fn wakes_a_waiter_in_another_thread() {
        let e = EventFd::new().unwrap();
        let other = e.try_clone().unwrap();
        let waiter = std::thread::spawn(move || other.wait(Some(Duration::from_secs(10))).unwrap());
        std::thread::sleep(Duration::from_millis(10));
        e.notify().unwrap();
        assert!(waiter.join().unwrap());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no F_GETFL on eventfds")]
    fn from_fd_makes_the_descriptor_non_blocking() {
        // SAFETY: plain eventfd creation, blocking on purpose; checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: fresh descriptor owned by nobody else.
        let e = EventFd::from_fd(unsafe { OwnedFd::from_raw_fd(raw) }).unwrap();
        assert_eq!(e.drain().unwrap(), 0, "drain on a quiet eventfd must not block");
    }
}
