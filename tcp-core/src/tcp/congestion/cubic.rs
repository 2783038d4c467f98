//! CUBIC (RFC 9438): the window follows `W_cubic(t) = C*(t-K)^3 + W_max` (§4.2) with
//! `C = 0.4` and `beta_cubic = 0.7` (§4.5-4.6), fast convergence (§4.7) and the
//! Reno-friendly region (§4.3) with `alpha_cubic = 3*(1-beta)/(1+beta)`.
//!
//! `no_std` has no floating-point `cbrt`, so everything is integer: windows in bytes,
//! time in milliseconds, constants in thousandths.

use crate::time::{Duration, Instant};

/// C = 0.4 segments/s^3, in thousandths.
const C_MILLI: i128 = 400;
/// beta_cubic = 0.7, in thousandths.
const BETA_MILLI: u64 = 700;
/// alpha_cubic = 3 * 0.3 / 1.7 ≈ 0.529, in thousandths.
const ALPHA_MILLI: u64 = 529;

/// CUBIC state for the current congestion epoch.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cubic {
    /// Window before the last reduction, bytes (W_max).
    pub(crate) w_max: u32,
    /// Start of the current epoch; `None` until the first ACK after a reduction.
    pub(crate) epoch_start: Option<Instant>,
    /// Time to reach W_max from the epoch's start, milliseconds (K).
    pub(crate) k_ms: u64,
    /// The Reno-friendly estimate, bytes (W_est).
    pub(crate) w_est: u32,
    /// Fractional growth carried between ACKs, bytes * cwnd.
    pub(crate) credit: u64,
}

/// Integer cube root (floor).
fn cbrt(x: u64) -> u64 {
    // 2_642_245 is the cube root of u64::MAX, rounded down.
    let (mut lo, mut hi) = (0u64, 2_642_245u64);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if mid.checked_pow(3).is_some_and(|c| c <= x) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

impl Cubic {
    /// W_cubic(t) in bytes, t in milliseconds since the epoch start (RFC 9438 eq. 1).
    fn w_cubic(&self, t_ms: u64, mss: u32) -> u64 {
        let d = i128::from(t_ms.min(1_000_000_000)) - i128::from(self.k_ms);
        // C * d^3 segments with d in ms: C_MILLI/1000 * d^3 / 1e9, times mss bytes.
        let delta = C_MILLI * d * d * d / 1_000_000_000_000 * i128::from(mss);
        let w = i128::from(self.w_max) + delta;
        u64::try_from(w.max(0)).unwrap_or(u64::MAX)
    }

    pub(crate) fn restart_epoch(&mut self) {
        self.epoch_start = None;
    }

    pub(crate) fn congestion_avoidance(
        &mut self,
        cwnd: &mut u32,
        acked: u32,
        mss: u32,
        now: Instant,
        srtt: Option<Duration>,
    ) {
        let epoch_start = match self.epoch_start {
            Some(t) => t,
            None => {
                // RFC 9438 §4.2: a new epoch starts at the first ACK in avoidance.
                self.epoch_start = Some(now);
                if self.w_max <= *cwnd {
                    self.k_ms = 0;
                    self.w_max = *cwnd;
                } else {
                    // K = cbrt((W_max - cwnd) / C), in seconds; here in ms.
                    let segs_milli = u64::from(self.w_max - *cwnd) * 1000 / u64::from(mss.max(1));
                    // (segments / 0.4) s^3 = segments*2.5e9 ms^3.
                    self.k_ms = cbrt(segs_milli.saturating_mul(2_500_000));
                }
                self.w_est = *cwnd;
                self.credit = 0;
                now
            }
        };
        let rtt_ms = srtt.map_or(100, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let t_ms = u64::try_from((now - epoch_start).as_millis()).unwrap_or(u64::MAX);
        // §4.2: aim at W_cubic one RTT ahead, between cwnd and 1.5*cwnd (§4.4).
        let cur = u64::from(*cwnd);
        let target = self.w_cubic(t_ms.saturating_add(rtt_ms), mss).clamp(cur, cur + cur / 2);

        // §4.3: W_est grows by alpha_cubic segments per window of ACKed bytes.
        let est_inc = ALPHA_MILLI * u64::from(mss) * u64::from(acked) / 1000 / cur.max(1);
        self.w_est = self.w_est.saturating_add(u32::try_from(est_inc).unwrap_or(u32::MAX));
        let cubic_now = self.w_cubic(t_ms, mss);
        if cubic_now < u64::from(self.w_est) {
            // Reno-friendly region: be at least as aggressive as Reno.
            *cwnd = (*cwnd).max(self.w_est);
            return;
        }
        // §4.4/4.5: cwnd += (target - cwnd)/cwnd per segment acknowledged.
        self.credit += (target - cur) * u64::from(acked);
        let inc = self.credit / cur.max(1);
        self.credit %= cur.max(1);
        *cwnd = cwnd.saturating_add(u32::try_from(inc).unwrap_or(u32::MAX));
    }

    /// A congestion event (RFC 9438 §4.6-4.7); returns the new ssthresh.
    pub(crate) fn on_loss(&mut self, cwnd: u32, mss: u32, _now: Instant) -> u32 {
        // Fast convergence: release bandwidth to new flows when the window is shrinking.
        self.w_max = if cwnd < self.w_max {
            u32::try_from(u64::from(cwnd) * (1000 + BETA_MILLI) / 2000).unwrap_or(u32::MAX)
        } else {
            cwnd
        };
        self.epoch_start = None;
        let reduced = u64::from(cwnd) * BETA_MILLI / 1000;
        u32::try_from(reduced).unwrap_or(u32::MAX).max(2 * mss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    #[test]
    fn integer_cube_root() {
        assert_eq!(cbrt(0), 0);
        assert_eq!(cbrt(26), 2);
        assert_eq!(cbrt(27), 3);
        assert_eq!(cbrt(1_000_000_000), 1000);
        assert_eq!(cbrt(u64::MAX), 2_642_245);
    }

    #[test]
    fn reduction_uses_beta_and_fast_convergence() {
        let mut c = Cubic::default();
        assert_eq!(c.on_loss(100 * MSS, MSS, Instant::ZERO), 70 * MSS);
        assert_eq!(c.w_max, 100 * MSS);
        // A second loss below the previous W_max lowers W_max further (§4.7).
        c.on_loss(70 * MSS, MSS, Instant::ZERO);
        assert_eq!(c.w_max, 59_500);
    }

    #[test]
    fn window_is_concave_then_convex_around_w_max() {
        let mut c = Cubic::default();
        let mut cwnd = c.on_loss(100 * MSS, MSS, Instant::ZERO);
        let rtt = Some(Duration::from_millis(100));
        let mut now = Instant::ZERO;
        // K = cbrt(30 / 0.4) ≈ 4.2 s.
        let mut samples = alloc::vec::Vec::new();
        for step in 0..80 {
            now += Duration::from_millis(100);
            // One window of ACKs per RTT.
            for _ in 0..(cwnd / MSS) {
                c.congestion_avoidance(&mut cwnd, MSS, MSS, now, rtt);
            }
            if step % 10 == 9 {
                samples.push(cwnd);
            }
        }
        assert_eq!(c.k_ms, 4217);
        // Growth slows near W_max (concave) and accelerates beyond it (convex).
        assert!(samples[1] - samples[0] > samples[3] - samples[2], "{samples:?}");
        assert!(samples[3] <= 101 * MSS && samples[3] >= 95 * MSS, "{samples:?}");
        assert!(samples[7] - samples[6] > samples[5] - samples[4], "{samples:?}");
    }

    #[test]
    fn reno_friendly_region_applies_to_small_windows() {
        let mut c = Cubic::default();
        let mut cwnd = c.on_loss(4 * MSS, MSS, Instant::ZERO);
        let start = cwnd;
        let rtt = Some(Duration::from_millis(10));
        let mut now = Instant::ZERO;
        for _ in 0..20 {
            now += Duration::from_millis(10);
            for _ in 0..(cwnd / MSS).max(1) {
                c.congestion_avoidance(&mut cwnd, MSS, MSS, now, rtt);
            }
        }
        // After 20 short RTTs CUBIC's curve has barely moved; W_est grows ~0.53 MSS/RTT.
        assert!(cwnd >= start + 9 * MSS, "cwnd {cwnd} start {start}");
    }
}
