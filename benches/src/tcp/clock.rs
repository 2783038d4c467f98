//! The time the in-memory stacks see.
//!
//! In the comparison the stacks run on real time, so RTT estimates and timestamps are what
//! they would be on a fast link; but when nothing is in flight and the stacks only wait for a
//! timer (a delayed ACK, a retransmission), the clock jumps forward instead of spinning, so
//! a stall costs no CPU and the figure stays a measure of work. For callgrind the clock is
//! virtual (a fixed step per loop turn), so two runs execute the same instructions.

use std::time::Duration;

/// A monotonic clock in nanoseconds since its creation, real or virtual, that can jump.
#[derive(Clone, Debug)]
pub struct BenchClock {
    origin: std::time::Instant,
    /// Real mode: time added by jumps. Virtual mode: unused.
    skipped: Duration,
    /// Virtual mode: the step per `tick`.
    step: Option<Duration>,
    now: Duration,
    skips: u64,
}

impl BenchClock {
    /// Real time since now, plus whatever jumps add.
    pub fn real() -> BenchClock {
        BenchClock {
            origin: std::time::Instant::now(),
            skipped: Duration::ZERO,
            step: None,
            now: Duration::ZERO,
            skips: 0,
        }
    }

    /// Virtual time starting at 1 s (0 is the stacks' epoch), advancing `step` per tick.
    pub fn virtual_time(step: Duration) -> BenchClock {
        BenchClock {
            origin: std::time::Instant::now(),
            skipped: Duration::ZERO,
            step: Some(step),
            now: Duration::from_secs(1),
            skips: 0,
        }
    }

    /// Advances to the time of this loop turn and returns it.
    pub fn tick(&mut self) -> Duration {
        let next = match self.step {
            Some(step) => self.now + step,
            None => self.origin.elapsed() + self.skipped,
        };
        self.now = self.now.max(next);
        self.now
    }

    /// The time of the last tick or jump.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Jumps to `deadline` if it is in the future (nothing was in flight; the stacks only
    /// wait for a timer). Returns the new time.
    pub fn skip_to(&mut self, deadline: Duration) -> Duration {
        if deadline > self.now {
            if self.step.is_none() {
                self.skipped += deadline - self.now;
            }
            self.now = deadline;
            self.skips += 1;
        }
        self.now
    }

    /// How many jumps were taken.
    pub fn skips(&self) -> u64 {
        self.skips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_is_deterministic_and_jumps_forward_only() {
        let mut c = BenchClock::virtual_time(Duration::from_micros(10));
        assert_eq!(c.tick(), Duration::from_secs(1) + Duration::from_micros(10));
        assert_eq!(c.skip_to(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(c.skip_to(Duration::from_secs(2)), Duration::from_secs(3), "never back");
        assert_eq!(c.tick(), Duration::from_secs(3) + Duration::from_micros(10));
        assert_eq!(c.skips(), 1);
    }

    #[test]
    fn a_jump_in_real_time_stays_in_later_ticks() {
        let mut c = BenchClock::real();
        let before = c.tick();
        c.skip_to(before + Duration::from_secs(40));
        assert!(c.tick() >= before + Duration::from_secs(40));
        assert!(c.now() < before + Duration::from_secs(50));
    }
}
