//! Congestion control (RFC 5681 §3.1 slow start and congestion avoidance, RFC 5681 §3.2 /
//! RFC 6582 / RFC 6675 for the window used during recovery, which the connection drives).
//!
//! This module owns `cwnd` and `ssthresh` and how they grow on ACKs and shrink on loss;
//! the algorithm-specific part (NewReno or CUBIC, RFC 9438) lives in the submodules.
//! After an RTO the window drops to one segment, the loss window of RFC 5681 §3.1.
//!
//! The window grows only while the sender uses it (RFC 7661 §4.1: a sender that is not
//! cwnd-limited has not shown that the path can carry more), tracked per window of data as
//! Linux does (`tcp_cwnd_validate`, `tcp_is_cwnd_limited`): an application-limited or
//! receive-window-limited connection keeps its window instead of inflating it without
//! bound.

pub(crate) mod cubic;
pub(crate) mod newreno;

use crate::tcp::config::CongestionAlgorithm;
use crate::tcp::seq::SeqNumber;
use crate::time::{Duration, Instant};

pub(crate) use cubic::Cubic;
pub(crate) use newreno::NewReno;

/// The algorithm-specific state.
#[derive(Clone, Debug)]
pub(crate) enum Algorithm {
    NewReno(NewReno),
    Cubic(Cubic),
}

/// Congestion window state of one connection, in bytes.
#[derive(Clone, Debug)]
pub(crate) struct Congestion {
    pub(crate) cwnd: u32,
    pub(crate) ssthresh: u32,
    pub(crate) algorithm: Algorithm,
    pub(crate) usage: CwndUsage,
}

/// How fully the sender has used `cwnd` in the current window of data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CwndUsage {
    /// New data was held back by `cwnd`, or filled it, in this window.
    pub(crate) limited: bool,
    /// Most bytes in flight after a transmission in this window.
    pub(crate) max_in_flight: u32,
    /// SND.NXT when the window began; it ends when SND.UNA reaches this.
    pub(crate) window_end: SeqNumber,
}

impl Congestion {
    pub(crate) fn new(algorithm: CongestionAlgorithm, initial_cwnd: u32) -> Congestion {
        let algorithm = match algorithm {
            CongestionAlgorithm::NewReno => Algorithm::NewReno(NewReno::default()),
            CongestionAlgorithm::Cubic => Algorithm::Cubic(Cubic::default()),
        };
        Congestion {
            cwnd: initial_cwnd,
            ssthresh: u32::MAX,
            algorithm,
            usage: CwndUsage::default(),
        }
    }

    /// Records a transmission of new data (or a send that `cwnd` held back, `limited`):
    /// Linux's `tcp_cwnd_validate`. A window that was cwnd-limited stays so until it ends;
    /// otherwise the window tracks the most data in flight.
    pub(crate) fn on_send(
        &mut self,
        in_flight: u32,
        limited: bool,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
    ) {
        let u = &mut self.usage;
        if snd_una >= u.window_end || limited || (!u.limited && in_flight > u.max_in_flight) {
            *u = CwndUsage { limited, max_in_flight: in_flight, window_end: snd_nxt };
        }
    }

    /// Whether ACKs may grow the window (RFC 7661 §4.1; Linux `tcp_is_cwnd_limited`): the
    /// sender was cwnd-limited in this window, or is in slow start with less than twice
    /// its largest flight, so that slow start can still double what it used.
    pub(crate) fn is_cwnd_limited(&self) -> bool {
        self.usage.limited
            || (self.in_slow_start() && self.cwnd < self.usage.max_in_flight.saturating_mul(2))
    }

    pub(crate) fn kind(&self) -> CongestionAlgorithm {
        match self.algorithm {
            Algorithm::NewReno(_) => CongestionAlgorithm::NewReno,
            Algorithm::Cubic(_) => CongestionAlgorithm::Cubic,
        }
    }

    pub(crate) fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// Grows the window for `acked` newly acknowledged bytes outside loss recovery.
    pub(crate) fn on_ack(&mut self, acked: u32, mss: u32, now: Instant, srtt: Option<Duration>) {
        let mut acked = acked;
        if self.in_slow_start() {
            // RFC 5681 §3.1 with byte counting (RFC 3465), as Linux: grow by what was acked,
            // but not past ssthresh; the remainder counts toward congestion avoidance.
            let room = self.ssthresh - self.cwnd;
            let grow = acked.min(room);
            self.cwnd = self.cwnd.saturating_add(grow);
            acked -= grow;
            if acked == 0 {
                return;
            }
        }
        match &mut self.algorithm {
            Algorithm::NewReno(r) => r.congestion_avoidance(&mut self.cwnd, acked, mss),
            Algorithm::Cubic(c) => c.congestion_avoidance(&mut self.cwnd, acked, mss, now, srtt),
        }
    }

    /// A loss detected by duplicate ACKs or SACK: sets `ssthresh` (RFC 5681 §3.2 eq. 4 for
    /// NewReno, RFC 9438 §4.6 for CUBIC) and returns it. The caller sets `cwnd` for recovery.
    pub(crate) fn on_loss(&mut self, flight: u32, mss: u32, now: Instant) -> u32 {
        self.ssthresh = match &mut self.algorithm {
            Algorithm::NewReno(_) => (flight / 2).max(2 * mss),
            Algorithm::Cubic(c) => c.on_loss(self.cwnd, mss, now),
        };
        self.ssthresh
    }

    /// A retransmission timeout: ssthresh as for a loss, cwnd to one segment.
    pub(crate) fn on_rto(&mut self, flight: u32, mss: u32, now: Instant) {
        self.on_loss(flight, mss, now);
        self.cwnd = mss;
    }

    /// Leaves fast recovery (RFC 6582 §3.2 step 3 "full acknowledgment"; RFC 6675 §5).
    /// Linux sets cwnd to ssthresh here (the "deflate" of RFC 5681 §3.2 step 6).
    pub(crate) fn exit_recovery(&mut self) {
        self.cwnd = self.ssthresh;
        if let Algorithm::Cubic(c) = &mut self.algorithm {
            c.restart_epoch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;

    #[test]
    fn slow_start_then_avoidance_newreno() {
        let mut cc = Congestion::new(CongestionAlgorithm::NewReno, 10 * MSS);
        cc.ssthresh = 12 * MSS;
        cc.on_ack(MSS, MSS, Instant::ZERO, None);
        assert_eq!(cc.cwnd, 11 * MSS);
        cc.on_ack(3 * MSS, MSS, Instant::ZERO, None);
        // Capped at ssthresh, then 2 MSS of avoidance credit: less than a full window.
        assert_eq!(cc.cwnd, 12 * MSS);
        for _ in 0..12 {
            cc.on_ack(MSS, MSS, Instant::ZERO, None);
        }
        // One window's worth of ACKs adds about one segment (RFC 5681 §3.1).
        assert_eq!(cc.cwnd, 13 * MSS);
    }

    #[test]
    fn loss_halves_and_rto_sets_loss_window() {
        let mut cc = Congestion::new(CongestionAlgorithm::NewReno, 10 * MSS);
        assert_eq!(cc.on_loss(10 * MSS, MSS, Instant::ZERO), 5 * MSS);
        assert_eq!(cc.on_loss(3 * MSS, MSS, Instant::ZERO), 2 * MSS);
        cc.on_rto(20 * MSS, MSS, Instant::ZERO);
        assert_eq!(cc.cwnd, MSS);
        assert_eq!(cc.ssthresh, 10 * MSS);
    }
}
