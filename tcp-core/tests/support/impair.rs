//! A userspace stand-in for `tc netem` on one direction of the link: random loss, a fixed
//! delay, and reordering by letting some frames skip the delay, as netem does for
//! `delay D reorder P% C%` (tc-netem(8): with reordering, a fraction of the packets is sent
//! at once and the rest is delayed, so the immediate ones overtake the delayed ones).
//!
//! The interop tests use it where the kernel was built without `sch_netem`, and always for
//! the tcp-core → Linux direction (netem on the Linux side shapes only what Linux sends).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Loss, delay and reordering parameters, in netem's terms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NetemParams {
    /// Probability that a frame is dropped.
    pub(crate) loss: f64,
    /// Delay of every frame that is not reordered.
    pub(crate) delay: Duration,
    /// Probability that a frame skips the delay (and so overtakes delayed frames).
    pub(crate) reorder: f64,
    /// Correlation of successive reorder decisions (netem's second percentage).
    pub(crate) reorder_correlation: f64,
}

impl NetemParams {
    /// `loss 2% delay 5ms reorder 25% 50%`, the profile the interop tests ask for.
    pub(crate) const LOSSY: NetemParams = NetemParams {
        loss: 0.02,
        delay: Duration::from_millis(5),
        reorder: 0.25,
        reorder_correlation: 0.5,
    };

    /// The `tc qdisc ... netem` arguments for the same profile.
    pub(crate) fn tc_args(&self) -> Vec<String> {
        vec![
            "netem".into(),
            "loss".into(),
            format!("{}%", self.loss * 100.0),
            "delay".into(),
            format!("{}ms", self.delay.as_millis()),
            "reorder".into(),
            format!("{}%", self.reorder * 100.0),
            format!("{}%", self.reorder_correlation * 100.0),
        ]
    }
}

/// What an [`Impairment`] did to the frames it was offered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ImpairStats {
    /// Frames offered.
    pub(crate) offered: u64,
    /// Frames dropped.
    pub(crate) dropped: u64,
    /// Frames sent at once, ahead of delayed ones.
    pub(crate) reordered: u64,
    /// Frames held for the delay.
    pub(crate) delayed: u64,
}

/// A seeded xorshift64* generator: reproducible impairment patterns for a given seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator started from `seed` (any value; zero is remapped).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        // xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift
        // generators", 2016): shifts 12/25/27 and the multiplier below.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform value in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One impaired direction of the link. Frames go in with [`Impairment::offer`] and come out,
/// possibly later and in another order, through the `deliver` callbacks.
#[derive(Debug)]
pub(crate) struct Impairment {
    params: NetemParams,
    rng: Rng,
    /// The last correlated reorder draw.
    last_draw: f64,
    /// Delayed frames with their release time; the delay is fixed, so this stays sorted.
    held: VecDeque<(Instant, Vec<u8>)>,
    stats: ImpairStats,
}

impl Impairment {
    /// An impairment with `params`, drawing from a generator seeded with `seed`.
    pub(crate) fn new(params: NetemParams, seed: u64) -> Impairment {
        let mut rng = Rng::new(seed);
        let last_draw = rng.unit();
        Impairment { params, rng, last_draw, held: VecDeque::new(), stats: ImpairStats::default() }
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// Takes one frame: drops it, delivers it now, or holds it until its release time.
    pub(crate) fn offer(&mut self, now: Instant, frame: &[u8], deliver: &mut dyn FnMut(&[u8])) {
        self.stats.offered += 1;
        if self.rng.unit() < self.params.loss {
            self.stats.dropped += 1;
            return;
        }
        // netem's correlated draw: a weighted mix of the previous draw and a fresh one.
        let c = self.params.reorder_correlation;
        self.last_draw = c * self.last_draw + (1.0 - c) * self.rng.unit();
        if self.params.delay.is_zero() || self.last_draw < self.params.reorder {
            if !self.held.is_empty() {
                self.stats.reordered += 1;
            }
            deliver(frame);
        } else {
            self.stats.delayed += 1;
            self.held.push_back((now + self.params.delay, frame.to_vec()));
        }
    }

    /// Delivers every held frame whose release time has come.
    pub(crate) fn release(&mut self, now: Instant, deliver: &mut dyn FnMut(&[u8])) {
        while self.held.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, frame)) = self.held.pop_front() {
                deliver(&frame);
            }
        }
    }

    /// When the next held frame is due.
    pub(crate) fn next_release(&self) -> Option<Instant> {
        self.held.front().map(|(at, _)| *at)
    }
}
