//! This process's link to netpop: registration on first use, the fallback to the kernel
//! stack, what a forked child does, and the sleep that blocking calls and mixed
//! poll/select/epoll waits share.
//!
//! # Registration and fallback
//!
//! The first `socket(AF_INET, SOCK_STREAM, ...)` registers with the control plane
//! ([`Client::register`] on the socket named by [`Config`]). If that fails the shim prints
//! one line on stderr and every later TCP socket is a kernel socket; with
//! `NETPOP_REQUIRED=1` they fail with `ENETDOWN` instead.
//!
//! # fork
//!
//! A child is a new application (DESIGN.md "Processes"): the atfork child handler bumps
//! the process generation and lets go of the parent's client
//! ([`Client::forget_after_fork`]: its registration socket is closed in the child, and it
//! sends nothing), and the child registers again on its next netpop call. Sockets
//! remember the generation of the client that created them, so the child never drives the
//! parent's rings (they are single-producer: the parent still uses them). Inherited
//! listeners re-subscribe to their port in the child's own registration; inherited
//! connections cannot be used by the child (see the crate documentation).
//!
//! # Signals
//!
//! A signal that arrives while a netpop call waits ends it with `EINTR`: the waits here
//! and the client's own waits for the instances' answers ([`Client::set_sleep`]) all sleep
//! in `ppoll`. `SA_RESTART` is not consulted (Linux would restart a blocking `accept`,
//! `recv`, `send` or `connect` without a timeout set); programs that handle `EINTR`, as
//! servers do, see no difference. An `accept` interrupted while its instance was handing
//! over a connection keeps that connection for the next `accept`; a blocking `connect`
//! interrupted during the handshake goes on in the background, as POSIX says.
//!
//! # Sleeping
//!
//! Waits follow the channel's protocol: take a ticket, check, announce the sleep
//! ([`Client::prepare_wait`]), compare the ticket again, then sleep in the kernel on the
//! app's wake eventfd plus whatever kernel fds the caller waits for. The client counts the
//! waiting threads, so any number of them may sleep at once without losing a wake-up;
//! naps are capped at [`MAX_NAP`] only so that a waiter notices an instance that died.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLockWriteGuard};
use std::time::{Duration, Instant};

use flowgroups::channel::client::Client;

use crate::config::Config;
use crate::errno::{Errno, errno, errno_of};
use crate::real;
use crate::{FDS, FdEntry};

/// Longest single sleep in the kernel while a netpop socket is involved.
pub(crate) const MAX_NAP: Duration = Duration::from_secs(1);

/// The registered client of this process, with the generation it belongs to.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub(crate) client: Arc<Client>,
    pub(crate) generation: u64,
}

impl Link {
    /// False in a forked child for a link its parent made.
    pub(crate) fn is_current(&self) -> bool {
        self.generation == generation()
    }
}

#[derive(Debug)]
enum Status {
    Untried,
    Active(Link),
    /// Registration failed; `required` says whether TCP sockets fail or fall back.
    Unavailable {
        required: bool,
    },
    Disabled,
}

static STATUS: Mutex<Status> = Mutex::new(Status::Untried);
/// Bumped in every forked child.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The current process generation.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

fn status() -> MutexGuard<'static, Status> {
    STATUS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a new TCP socket goes.
#[derive(Debug)]
pub(crate) enum Route {
    Netpop(Link),
    Kernel,
    Fail(Errno),
}

/// Decides where a new TCP socket goes, registering with netpop on first use.
pub(crate) fn route_new_socket() -> Route {
    let mut st = status();
    if let Status::Active(link) = &*st {
        if link.is_current() {
            return Route::Netpop(link.clone());
        }
        // A forked child: the parent's client is not ours.
        *st = Status::Untried;
    }
    if let Status::Untried = &*st {
        *st = register();
    }
    match &*st {
        Status::Active(link) => Route::Netpop(link.clone()),
        Status::Unavailable { required: true } => Route::Fail(libc::ENETDOWN),
        _ => Route::Kernel,
    }
}

/// The current link, registering if this process has not yet (a forked child re-attaching
/// an inherited listener). `Err(ENETDOWN)` if netpop cannot be reached.
pub(crate) fn current_link() -> Result<Link, Errno> {
    match route_new_socket() {
        Route::Netpop(link) => Ok(link),
        Route::Fail(e) => Err(e),
        Route::Kernel => Err(libc::ENETDOWN),
    }
}

fn register() -> Status {
    let config = Config::from_env();
    if config.disabled {
        return Status::Disabled;
    }
    match Client::register(&config.socket_path) {
        Ok(mut client) => {
            client.set_sleep(sleep_until_signal);
            Status::Active(Link { client: Arc::new(client), generation: generation() })
        }
        Err(e) => {
            if config.required {
                notice(&format!(
                    "cannot reach netpop at {} ({e}); NETPOP_REQUIRED=1, so TCP sockets fail with ENETDOWN",
                    config.socket_path.display()
                ));
            } else if !config.quiet {
                notice(&format!(
                    "cannot reach netpop at {} ({e}); using the kernel TCP stack (set NETPOP_REQUIRED=1 to fail instead)",
                    config.socket_path.display()
                ));
            }
            Status::Unavailable { required: config.required }
        }
    }
}

/// Writes one line `netpop-shim[pid]: msg` to stderr, straight to the kernel (not through
/// the shim's own `write`, nor through Rust's stderr lock).
pub(crate) fn notice(msg: &str) {
    let line = format!("netpop-shim[{}]: {msg}\n", std::process::id());
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes bytes from a live slice to fd 2.
        let n = unsafe { real::write(2, rest.as_ptr().cast(), rest.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => rest = rest.get(n..).unwrap_or(&[]),
            _ if n < 0 && errno() == libc::EINTR => {}
            _ => break,
        }
    }
}

/// Prints `msg` the first time `key` is seen in this process (unsupported options and
/// the like: worth one line, not one per call).
pub(crate) fn notice_once(key: u64, msg: impl FnOnce() -> String) {
    static SEEN: Mutex<BTreeMap<u64, ()>> = Mutex::new(BTreeMap::new());
    let first = SEEN.lock().unwrap_or_else(PoisonError::into_inner).insert(key, ()).is_none();
    if first {
        notice(&msg());
    }
}

// ---------------------------------------------------------------------------------------
// fork

type ForkGuards = (MutexGuard<'static, Status>, RwLockWriteGuard<'static, BTreeMap<i32, FdEntry>>);

thread_local! {
    /// The locks the forking thread holds between the atfork prepare and parent/child
    /// handlers.
    static FORK_GUARDS: RefCell<Option<ForkGuards>> = const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    // Taken in the same order as everywhere else (status, then table), so this cannot
    // deadlock with another thread; holding them means the child's copies are consistent.
    let guards = (status(), FDS.lock_for_fork());
    FORK_GUARDS.with(|g| *g.borrow_mut() = Some(guards));
}

extern "C" fn after_fork_in_parent() {
    FORK_GUARDS.with(|g| drop(g.borrow_mut().take()));
}

extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    FORK_GUARDS.with(|g| {
        if let Some((mut st, table)) = g.borrow_mut().take() {
            if let Status::Active(link) = &*st {
                // The parent's client: close this process's copy of its registration
                // socket (the plane must see the parent's death when it comes) and make
                // sure nothing here sends on its rings. Its memory goes when the last
                // inherited socket referring to it is closed. Register afresh on first use.
                link.client.forget_after_fork();
                *st = Status::Untried;
            }
            drop(table);
            drop(st);
        }
    });
}

/// Installs the fork handlers (called once, from the library constructor).
pub(crate) fn install_fork_handlers() {
    // SAFETY: the three handlers are `extern "C"` functions that live as long as the
    // library, which is never unloaded while the process runs.
    let rc = unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        )
    };
    if rc != 0 {
        notice("pthread_atfork failed: a forked child may misuse its parent's netpop client");
    }
}

// ---------------------------------------------------------------------------------------
// Waiting

/// An absolute time limit for a wait (`None`: no limit).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// No limit.
    pub(crate) const NEVER: Deadline = Deadline(None);

    /// From a poll-style timeout in milliseconds (negative: no limit).
    pub(crate) fn from_millis(ms: i64) -> Deadline {
        if ms < 0 { Deadline(None) } else { Deadline::after(Duration::from_millis(ms as u64)) }
    }

    /// `d` from now (`None`: no limit).
    pub(crate) fn after(d: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(d))
    }

    /// From an optional duration.
    pub(crate) fn from_timeout(t: Option<Duration>) -> Deadline {
        t.map_or(Deadline::NEVER, Deadline::after)
    }

    /// Time left (`None`: unlimited); zero once passed.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }
}

fn timespec_of(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    }
}

/// Sleeps until an instance changes something after `ticket`, one of the kernel `fds`
/// is ready, `deadline` passes, or a signal arrives (`Err(EINTR)`), whichever comes first —
/// or at most [`MAX_NAP`]. `sigmask` is installed during the sleep as `ppoll` does (null:
/// unchanged). Returns the number of `fds` with events; their `revents` are filled in.
pub(crate) fn sleep(
    client: &Client,
    ticket: u64,
    fds: &mut Vec<libc::pollfd>,
    deadline: Deadline,
    sigmask: *const libc::sigset_t,
) -> Result<usize, Errno> {
    let wake = std::os::fd::AsRawFd::as_raw_fd(&client.wake_fd());
    fds.push(libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 });
    let waiting = client.prepare_wait();
    let nap = if client.ticket() != ticket {
        Duration::ZERO
    } else {
        deadline.remaining().map_or(MAX_NAP, |r| r.min(MAX_NAP))
    };
    let ts = timespec_of(nap);
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfds; `ts` outlives the
    // call; `sigmask` is null or the caller's valid signal set.
    let rc = unsafe { real::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, sigmask) };
    let saved = errno();
    let woke_by_wake = fds.pop().is_some_and(|p| p.revents != 0);
    // The client drains the eventfd once the last waiting thread leaves.
    let _ = waiting.finish(woke_by_wake);
    if rc < 0 {
        return Err(saved);
    }
    let ready = usize::try_from(rc).unwrap_or(0);
    Ok(ready.saturating_sub(usize::from(woke_by_wake)))
}

/// How the client's own blocking waits (for the instances' answers) sleep in this
/// process: like every other netpop wait here, a signal ends them with `EINTR`.
fn sleep_until_signal(fd: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ts = timespec_of(timeout);
    // SAFETY: one live, writable pollfd; `ts` outlives the call; the signal mask is kept.
    let rc = unsafe { real::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    if rc < 0 {
        return Err(std::io::Error::from_raw_os_error(errno()));
    }
    Ok(rc > 0)
}

/// Runs `check` until it yields a value, sleeping between attempts while `blocking`.
/// Non-blocking, or when `deadline` passes: `Err(EAGAIN)`. A signal: `Err(EINTR)`.
pub(crate) fn block_on<T>(
    client: &Client,
    blocking: bool,
    deadline: Deadline,
    mut check: impl FnMut() -> Result<Option<T>, Errno>,
) -> Result<T, Errno> {
    let mut fds = Vec::new();
    loop {
        let ticket = client.ticket();
        if let Some(v) = check()? {
            return Ok(v);
        }
        if !blocking || deadline.expired() {
            return Err(libc::EAGAIN);
        }
        fds.clear();
        sleep(client, ticket, &mut fds, deadline, std::ptr::null())?;
    }
}

/// The errno of a channel error.
pub(crate) fn io_errno(e: std::io::Error) -> Errno {
    errno_of(&e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        assert!(Deadline::NEVER.remaining().is_none());
        assert!(!Deadline::from_millis(-1).expired());
        assert!(Deadline::from_millis(0).expired());
        let d = Deadline::from_millis(60_000);
        assert!(!d.expired());
        assert!(d.remaining().unwrap() <= Duration::from_secs(60));
    }

    #[test]
    fn timespec_conversion() {
        let ts = timespec_of(Duration::from_millis(1500));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (1, 500_000_000));
    }
}
