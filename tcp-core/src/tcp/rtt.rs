//! Round-trip time estimation and the retransmission timeout (RFC 6298 §2-§5), with Karn's
//! rule (RFC 6298 §3; samples from retransmitted segments are never taken, which callers
//! guarantee) or RFC 7323 §4 timestamp samples. As on Linux, the variance term is floored
//! at the minimum RTO, so `RTO = SRTT + max(4*RTTVAR, min_rto)`.

use crate::time::Duration;

/// The RFC 6298 estimator plus the backoff multiplier of §5.5.
#[derive(Clone, Debug)]
pub(crate) struct RttEstimator {
    pub(crate) srtt: Option<Duration>,
    pub(crate) rttvar: Duration,
    /// The RTO before backoff.
    pub(crate) base_rto: Duration,
    /// Number of doublings applied (RFC 6298 §5.5).
    pub(crate) backoff: u32,
    min_rto: Duration,
    max_rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            base_rto: initial,
            backoff: 0,
            min_rto,
            max_rto,
        }
    }

    pub(crate) fn restore(
        srtt: Option<Duration>,
        rttvar: Duration,
        base_rto: Duration,
        backoff: u32,
        min_rto: Duration,
        max_rto: Duration,
    ) -> RttEstimator {
        RttEstimator { srtt, rttvar, base_rto, backoff, min_rto, max_rto }
    }

    /// Feeds one measurement (RFC 6298 §2.2 for the first, §2.3 afterwards) and clears the
    /// backoff, since an ACK for new data just arrived (§5.7 note).
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                // RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'|, SRTT = 7/8 SRTT + 1/8 R'.
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.base_rto =
            (srtt + (self.rttvar * 4).max(self.min_rto)).clamp(self.min_rto, self.max_rto);
        self.backoff = 0;
    }

    /// The current timeout, backoff included, capped at the maximum (RFC 6298 §2.5).
    pub(crate) fn rto(&self) -> Duration {
        let shift = self.backoff.min(31);
        let factor = 1u32 << shift;
        self.base_rto.checked_mul(factor).unwrap_or(self.max_rto).min(self.max_rto)
    }

    /// Doubles the timeout after an expiry (RFC 6298 §5.5).
    pub(crate) fn back_off(&mut self) {
        if self.rto() < self.max_rto {
            self.backoff += 1;
        }
    }

    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> RttEstimator {
        RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(200),
            Duration::from_secs(120),
        )
    }

    #[test]
    fn first_sample_sets_srtt_and_floor_applies() {
        let mut e = est();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.sample(Duration::from_millis(100));
        assert_eq!(e.srtt, Some(Duration::from_millis(100)));
        // 100 + max(4*50, 200) = 300 ms.
        assert_eq!(e.rto(), Duration::from_millis(300));
        e.sample(Duration::from_millis(100));
        // RTTVAR shrinks to 37.5 ms; the floor keeps the RTO at 300 ms.
        assert_eq!(e.rto(), Duration::from_millis(300));
    }

    #[test]
    fn large_samples_follow_rfc6298_formula() {
        let mut e = est();
        e.sample(Duration::from_secs(2));
        assert_eq!(e.rto(), Duration::from_secs(6));
        e.sample(Duration::from_secs(4));
        // RTTVAR = (3*1 + 2)/4 = 1.25 s; SRTT = (14+4)/8 = 2.25 s; RTO = 7.25 s.
        assert_eq!(e.rto(), Duration::from_millis(7250));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut e = est();
        for _ in 0..10 {
            e.back_off();
        }
        assert_eq!(e.rto(), Duration::from_secs(120));
        e.reset_backoff();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.back_off();
        assert_eq!(e.rto(), Duration::from_secs(2));
    }
}
