//! Waiting for the instances: wait tickets, the shared "wake me" flag, and the
//! process-local count of waiting threads that lets any number of threads sleep at once
//! without losing a wake-up.
//!
//! # The protocol (DESIGN.md "Shared memory and trust")
//!
//! A waiter takes a ticket (the sum of the instances' change counters), checks its
//! condition, enters the wait ([`Client::prepare_wait`]: counts itself and sets the
//! header's `Sleeping` flag, then a SeqCst fence), compares the ticket again and only then
//! polls the wake eventfd. An instance that changed something fences, and writes the
//! eventfd if it can swap the flag from 1 to 0 — one system call per sleep, none while the
//! app is busy.
//!
//! # Several sleeping threads
//!
//! The flag is a single word, but it only says "write the eventfd once". The eventfd is
//! level-triggered for poll(2): one write makes every thread polling it return — as long
//! as nobody reads it first. So no waiter reads it while another may still be inside its
//! poll: the last thread to leave the wait drains it (and clears the flag). A thread that
//! returns and wants to sleep again while the eventfd is still readable and others have
//! not left yet waits for them on a condition variable (briefly) instead of spinning on the
//! readable eventfd.
//!
//! # Signals
//!
//! Threads sleep through a [`SleepFn`]. The default restarts after a signal, so blocking
//! calls cannot be interrupted; [`Client::set_sleep`] installs one that reports a signal as
//! `Interrupted` (the shim's does, so its callers get `EINTR`). The blocking call then
//! returns that error; a request it was waiting for is finished later (see
//! `calls::Abandoned`): an accepted connection is kept for the next accept, a connection
//! its caller never got is closed, and no socket slot leaks.
//!
//! A completion that one thread files for another also counts: it bumps a process-local
//! counter that is part of the ticket, and writes the eventfd if anybody waits, so a thread
//! waiting for its completion is not left asleep because another thread drained the ring.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Client, MAX_NAP, lock};
use crate::channel::HeaderWord;
use crate::shm::sys::poll_readable;

/// How a thread sleeps on the wake eventfd `fd`: returns `Ok(true)` once it is readable,
/// `Ok(false)` when `timeout` passed (returning early is allowed: the caller re-checks),
/// and an error of kind `Interrupted` if it wants a signal to end the blocking call.
pub type SleepFn = fn(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool>;

/// The default [`SleepFn`]: poll(2), going on after a signal (nothing is interrupted).
pub fn sleep_through_signals(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    poll_readable(&[fd.as_raw_fd()], Some(timeout)).map(|r| r.is_ready(0))
}

/// Longest wait for the other threads of a wake-up round to leave before sleeping anyway
/// (they were woken by the same eventfd write, so they are only waiting for a CPU).
const ROUND_SETTLE: Duration = Duration::from_millis(2);

#[derive(Debug, Default)]
struct Round {
    /// Threads between `prepare_wait` and `finish`; each may be inside a poll of the eventfd.
    waiting: u32,
    /// A waiter returned with the eventfd readable: the others will see it too, and it is
    /// drained when the last one leaves.
    signalled: bool,
}

/// The process-local side of waiting, shared by every thread of the app.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    round: Mutex<Round>,
    settled: Condvar,
    /// Mirror of `round.waiting`, read without the lock when a completion is filed.
    waiting: AtomicU32,
    /// Completions filed for other threads; part of the ticket.
    delivered: AtomicU64,
}

/// A thread's announced wait on [`Client::wake_fd`], from [`Client::prepare_wait`]. End it
/// with [`WaitGuard::finish`]; dropping it ends it as if the eventfd had not been seen
/// readable.
#[must_use = "a wait must be finished after the sleep"]
pub struct WaitGuard<'a> {
    client: &'a Client,
    finished: bool,
}

impl WaitGuard<'_> {
    /// Ends the wait. `woken`: the eventfd was readable when the sleep returned (poll's
    /// `revents`), so the other waiters are woken too and the eventfd is drained by the
    /// last of them.
    pub fn finish(mut self, woken: bool) -> io::Result<()> {
        self.finished = true;
        self.client.leave_wait(woken)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.client.leave_wait(false);
        }
    }
}

impl fmt::Debug for WaitGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGuard").field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl Client {
    /// Sets how this client's blocking calls sleep (see [`SleepFn`]): for example a sleep
    /// that returns `Interrupted` when a signal arrives, so they fail with `EINTR`.
    pub fn set_sleep(&mut self, sleep: SleepFn) {
        self.sleep = sleep;
    }

    /// The wait ticket: the sum of every instance's change counter (plus completions this
    /// process filed for its other threads). Take it *before* checking readiness, then pass
    /// it to [`Client::wait_since`] (or compare it after [`Client::prepare_wait`]), and no
    /// change made between the check and the sleep is missed.
    pub fn ticket(&self) -> u64 {
        (0..self.layout.instances)
            .filter_map(|i| self.seg.event_seq(i).ok())
            .fold(self.waiters.delivered.load(Ordering::Acquire), |acc, seq| {
                acc.wrapping_add(seq.load(Ordering::Acquire))
            })
    }

    /// Sleeps until an instance changes something after `ticket` was taken, or `timeout`
    /// passes (`None`: no limit). Returns true if the ticket moved. Also drains
    /// completions.
    pub fn wait_since(&self, ticket: u64, timeout: Option<Duration>) -> io::Result<bool> {
        self.check_usable()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.drain_completions()?;
            if self.ticket() != ticket {
                return Ok(true);
            }
            let nap = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    left.min(MAX_NAP)
                }
                None => MAX_NAP,
            };
            self.nap(ticket, nap)?;
        }
    }

    /// Sleeps until something changes or `timeout` passes. Racy on its own (a change
    /// between the caller's last check and this call is only seen after a nap); prefer
    /// [`Client::ticket`] + [`Client::wait_since`].
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.wait_since(self.ticket(), timeout).map(|_| ())
    }

    /// For a caller that sleeps on [`Client::wake_fd`] itself (the shim's poll and epoll):
    /// announces the sleep. Then compare [`Client::ticket`] with the ticket taken before
    /// the readiness check, poll only if it did not move, and finish the returned guard
    /// after waking, saying whether the eventfd was readable. Any number of threads may
    /// wait at once, here and inside the client's own blocking calls.
    pub fn prepare_wait(&self) -> WaitGuard<'_> {
        let w = &self.waiters;
        let mut round = lock(&w.round);
        if round.signalled && round.waiting > 0 {
            round = w
                .settled
                .wait_timeout_while(round, ROUND_SETTLE, |r| r.signalled && r.waiting > 0)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        round.waiting = round.waiting.saturating_add(1);
        w.waiting.store(round.waiting, Ordering::Relaxed);
        // Under the lock, so a last leaver's clear cannot overtake this store.
        if let Ok(flag) = self.seg.header_word(HeaderWord::Sleeping) {
            flag.store(1, Ordering::Relaxed);
        }
        drop(round);
        // SeqCst fence: the flag (and `waiting`) stores are ordered before the caller's
        // ticket re-check; pairs with the instance's fence between its change and its flag
        // load, and with `file_for_others`' fence (the Dekker pattern, both times).
        fence(Ordering::SeqCst);
        WaitGuard { client: self, finished: false }
    }

    fn leave_wait(&self, woken: bool) -> io::Result<()> {
        let w = &self.waiters;
        let mut round = lock(&w.round);
        round.waiting = round.waiting.saturating_sub(1);
        w.waiting.store(round.waiting, Ordering::Relaxed);
        round.signalled |= woken;
        if round.waiting > 0 {
            return Ok(());
        }
        // Last one out: nobody is inside a poll, so draining cannot hide a write from
        // anyone; a later waiter re-checks its ticket before it polls.
        if let Ok(flag) = self.seg.header_word(HeaderWord::Sleeping) {
            flag.store(0, Ordering::Relaxed);
        }
        round.signalled = false;
        let drained = self.wake.drain().map(|_| ());
        drop(round);
        w.settled.notify_all();
        drained
    }

    /// A completion was filed for another thread: move the ticket, and wake the waiters
    /// if there are any (one of them may be waiting for it).
    pub(super) fn file_for_others(&self) {
        self.waiters.delivered.fetch_add(1, Ordering::Release);
        // SeqCst fence: see `prepare_wait`.
        fence(Ordering::SeqCst);
        if self.waiters.waiting.load(Ordering::Relaxed) > 0 {
            let _ = self.wake.notify();
        }
    }

    /// One sleep of at most `nap` on the wake eventfd, unless the ticket already moved.
    pub(super) fn nap(&self, ticket: u64, nap: Duration) -> io::Result<()> {
        let guard = self.prepare_wait();
        if self.ticket() != ticket {
            return guard.finish(false);
        }
        let slept = (self.sleep)(self.wake.as_fd(), nap);
        let finished = guard.finish(matches!(slept, Ok(true)));
        slept.map(|_| ()).and(finished)
    }

    /// Runs `check` until it yields a value: between attempts, sleeps until an instance
    /// changes something. Non-blocking (`blocking == false`): one attempt.
    pub(super) fn block_until<T>(
        &self,
        deadline: Option<Instant>,
        blocking: bool,
        mut check: impl FnMut() -> io::Result<Option<T>>,
    ) -> io::Result<Option<T>> {
        loop {
            let ticket = self.ticket();
            self.drain_completions()?;
            if let Some(v) = check()? {
                return Ok(Some(v));
            }
            if !blocking {
                return Ok(None);
            }
            let nap = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(MAX_NAP)
                }
                None => MAX_NAP,
            };
            self.nap(ticket, nap)?;
        }
    }
}
