//! Adaptive polling: how an instance goes from busy polling to blocking when it has
//! nothing to do, and how it measures how busy it is (DESIGN.md "Processes": an idle
//! netpop must use almost no CPU).
//!
//! After an iteration that did work the loop polls again at once. After
//! [`SPIN_ITERATIONS`] empty iterations in a row it blocks in poll(2) on the queue's
//! wait descriptor (if the backend has one), its doorbell eventfd and the plane socket,
//! until the next stack timer, at most [`MAX_BLOCK`]. A backend without a wait
//! descriptor (the 82599 driver and model: completions are only visible in memory) is
//! polled in short sleeps that grow from [`FIRST_NAP`] to [`LONGEST_NAP`], so a frame
//! waits at most about a millisecond; after [`DEEP_IDLE_NAPS`] such naps in a row (about
//! a tenth of a second of silence) the naps lengthen to [`DEEP_NAP`], because every
//! wake-up costs tens of microseconds of CPU on a virtual machine and an idle netpop
//! should cost nearly nothing. The first frame after a long silence then waits up to
//! [`DEEP_NAP`].

use std::os::fd::RawFd;
use std::time::Duration;

use crate::shm::sys::{PollReady, poll_readable};

/// Empty iterations before the loop blocks (a few microseconds of spinning: a request
/// that arrives right after the last one is served without a system call).
pub const SPIN_ITERATIONS: u32 = 200;
/// Longest block: bounds the age of the heartbeat and of published counters.
pub const MAX_BLOCK: Duration = Duration::from_millis(20);
/// First sleep of a backend that can only be polled.
pub const FIRST_NAP: Duration = Duration::from_micros(200);
/// Longest sleep of a backend that can only be polled, while traffic is recent.
pub const LONGEST_NAP: Duration = Duration::from_millis(1);
/// Naps of [`LONGEST_NAP`] in a row before the instance counts as deeply idle.
pub const DEEP_IDLE_NAPS: u32 = 100;
/// Sleep of a backend that can only be polled, once deeply idle.
pub const DEEP_NAP: Duration = Duration::from_millis(4);

/// The idle state machine.
#[derive(Debug)]
pub(crate) struct Backoff {
    empty: u32,
    nap: Duration,
    /// Naps taken at [`LONGEST_NAP`] since the last work.
    long_naps: u32,
}

/// What the loop should do after an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Poll again at once.
    Spin,
    /// Block, at most this long.
    Block(Duration),
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { empty: 0, nap: FIRST_NAP, long_naps: 0 }
    }

    /// Feeds the outcome of one iteration. `until_timer` is the time to the next stack
    /// timer; `has_wait_fd` whether the queue can wake us.
    pub(crate) fn next(
        &mut self,
        did_work: bool,
        until_timer: Option<Duration>,
        has_wait_fd: bool,
    ) -> Next {
        if did_work {
            self.empty = 0;
            self.nap = FIRST_NAP;
            self.long_naps = 0;
            return Next::Spin;
        }
        self.empty = self.empty.saturating_add(1);
        if self.empty < SPIN_ITERATIONS {
            return Next::Spin;
        }
        let mut limit = MAX_BLOCK;
        if !has_wait_fd {
            limit = self.nap;
            if self.nap >= LONGEST_NAP {
                self.long_naps = self.long_naps.saturating_add(1);
            }
            self.nap = if self.long_naps >= DEEP_IDLE_NAPS {
                DEEP_NAP
            } else {
                (self.nap * 2).min(LONGEST_NAP)
            };
        }
        Next::Block(until_timer.map_or(limit, |t| t.min(limit)))
    }
}

/// Blocks until one of `fds` is readable or `timeout` passes.
pub(crate) fn block_on(fds: &[RawFd], timeout: Duration) -> std::io::Result<PollReady> {
    poll_readable(fds, Some(timeout))
}

/// Busy ratio: time spent in iterations that did work over wall time, per interval.
#[derive(Debug)]
pub(crate) struct BusyMeter {
    interval: Duration,
    started_ns: u64,
    busy_ns: u64,
}

/// Length of a busy-ratio interval.
pub const BUSY_INTERVAL: Duration = Duration::from_millis(100);

impl BusyMeter {
    pub(crate) fn new(now_ns: u64) -> BusyMeter {
        BusyMeter { interval: BUSY_INTERVAL, started_ns: now_ns, busy_ns: 0 }
    }

    /// Records an iteration of `spent_ns` that did work.
    pub(crate) fn busy(&mut self, spent_ns: u64) {
        self.busy_ns = self.busy_ns.saturating_add(spent_ns);
    }

    /// At the end of an interval returns the ratio in parts per million and starts the
    /// next one.
    pub(crate) fn tick(&mut self, now_ns: u64) -> Option<u32> {
        let wall = now_ns.saturating_sub(self.started_ns);
        if wall < self.interval.as_nanos() as u64 {
            return None;
        }
        let ppm = (u128::from(self.busy_ns.min(wall)) * 1_000_000 / u128::from(wall.max(1))) as u32;
        self.started_ns = now_ns;
        self.busy_ns = 0;
        Some(ppm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_then_blocks_until_the_timer_within_the_cap() {
        let mut b = Backoff::new();
        for _ in 0..SPIN_ITERATIONS - 1 {
            assert_eq!(b.next(false, None, true), Next::Spin);
        }
        assert_eq!(b.next(false, None, true), Next::Block(MAX_BLOCK));
        assert_eq!(
            b.next(false, Some(Duration::from_millis(3)), true),
            Next::Block(Duration::from_millis(3))
        );
        assert_eq!(b.next(true, None, true), Next::Spin, "work resets the backoff");
        assert_eq!(b.next(false, None, true), Next::Spin);
    }

    #[test]
    fn a_queue_without_wait_fd_naps_in_growing_steps() {
        let mut b = Backoff::new();
        for _ in 0..SPIN_ITERATIONS - 1 {
            b.next(false, None, false);
        }
        let naps: Vec<Next> = (0..5).map(|_| b.next(false, None, false)).collect();
        assert_eq!(
            naps,
            [200, 400, 800, 1000, 1000].map(|us| Next::Block(Duration::from_micros(us)))
        );
        // Deep idle: after DEEP_IDLE_NAPS naps of LONGEST_NAP the naps lengthen.
        for _ in 0..DEEP_IDLE_NAPS - 2 {
            assert_eq!(b.next(false, None, false), Next::Block(LONGEST_NAP));
        }
        assert_eq!(b.next(false, None, false), Next::Block(DEEP_NAP));
        assert_eq!(
            b.next(false, Some(Duration::from_millis(2)), false),
            Next::Block(Duration::from_millis(2))
        );
        b.next(true, None, false);
        for _ in 0..SPIN_ITERATIONS - 1 {
            b.next(false, None, false);
        }
        assert_eq!(b.next(false, None, false), Next::Block(FIRST_NAP));
    }

    #[test]
    fn busy_ratio_is_busy_time_over_wall_time() {
        let mut m = BusyMeter::new(0);
        m.busy(25_000_000);
        assert_eq!(m.tick(50_000_000), None, "interval not over");
        m.busy(25_000_000);
        assert_eq!(m.tick(100_000_000), Some(500_000));
        m.busy(500_000_000);
        assert_eq!(m.tick(200_000_000), Some(1_000_000), "capped at 100%");
        assert_eq!(m.tick(300_000_000), Some(0));
    }
}
