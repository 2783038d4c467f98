//! Timers as data: retransmission (RFC 6298 §5, SYN retries, giving up after
//! `max_retransmits` like Linux's `tcp_retries2`), delayed ACK (RFC 9293 §3.8.6.3), persist
//! (§3.8.6.1, exponential backoff, RFC 1122 §4.2.2.17: kept while the peer answers),
//! keepalive (§3.8.4; RFC 1122 §4.2.3.6), TIME-WAIT 2*MSL (§3.4.2) and the FIN-WAIT-2
//! timeout of an orphaned connection (Linux `tcp_fin_timeout`).

use super::{CloseReason, Connection, State};
use crate::time::{Instant, earliest};

impl Connection {
    /// When `handle_timeout` should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let transfer = earliest(self.rtx_deadline, self.delack_deadline);
        let idle = earliest(self.persist_deadline, self.keepalive_deadline);
        earliest(earliest(transfer, idle), self.close_deadline)
    }

    /// Runs every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.close_deadline = None;
            if matches!(self.state, State::TimeWait | State::FinWait2) {
                self.enter_closed(CloseReason::Normal);
                return;
            }
        }
        if self.rtx_deadline.is_some_and(|d| d <= now) {
            self.rtx_deadline = None;
            self.on_retransmission_timeout(now);
        }
        if self.delack_deadline.is_some_and(|d| d <= now) {
            self.delack_deadline = None;
            self.ack_now = true;
        }
        if self.persist_deadline.is_some_and(|d| d <= now) {
            self.persist_deadline = None;
            self.on_persist_timeout();
        }
        if self.keepalive_deadline.is_some_and(|d| d <= now) {
            self.keepalive_deadline = None;
            self.on_keepalive_timeout(now);
        }
    }

    fn on_retransmission_timeout(&mut self, now: Instant) {
        self.stats.timeouts += 1;
        match self.state {
            State::SynSent | State::SynReceived => {
                if self.retransmits >= self.cfg.syn_retries {
                    self.enter_closed(CloseReason::TimedOut);
                    return;
                }
                self.retransmits += 1;
                self.rtt.back_off();
                self.syn_retransmitted = true;
                // Output sends SYN (or SYN-ACK) again and re-arms the timer.
                self.snd_nxt = self.iss;
            }
            State::Established
            | State::CloseWait
            | State::FinWait1
            | State::Closing
            | State::LastAck => {
                if self.snd_una == self.snd_max {
                    return;
                }
                if self.retransmits >= self.cfg.max_retransmits {
                    self.enter_closed(CloseReason::TimedOut);
                    return;
                }
                self.retransmits += 1;
                let smss = self.smss();
                if self.retransmits == 1 {
                    // RFC 5681 §3.1 eq. 4; later expiries keep ssthresh (same section).
                    self.cc.on_rto(self.snd_max.since(self.snd_una), smss, now);
                } else {
                    self.cc.cwnd = smss;
                }
                self.recover = self.snd_max;
                self.recovery = None;
                self.dup_acks = 0;
                self.rtt_probe = None;
                self.rtt.back_off();
                // Go back to SND.UNA; the head goes out whatever the windows say.
                self.snd_nxt = self.snd_una;
                self.retransmit_head = true;
                self.rtx_deadline = Some(now + self.rtt.rto());
            }
            _ => {}
        }
    }

    fn on_persist_timeout(&mut self) {
        self.persist_unanswered = self.persist_unanswered.saturating_add(1);
        if self.persist_unanswered > self.cfg.max_retransmits {
            self.enter_closed(CloseReason::TimedOut);
            return;
        }
        self.persist_probe_due = true;
        self.persist_backoff = self.persist_backoff.saturating_add(1);
    }

    fn keepalive_state(&self) -> bool {
        matches!(self.state, State::Established | State::CloseWait | State::FinWait2)
    }

    /// (Re)starts the idle period after hearing from the peer.
    pub(crate) fn arm_keepalive(&mut self, now: Instant) {
        match self.keepalive {
            Some(k) if self.keepalive_state() => {
                self.keepalive_deadline = Some(now + k.idle);
                self.keepalive_probes = 0;
            }
            _ => self.keepalive_deadline = None,
        }
    }

    /// Arms keepalive if it was switched on while idle.
    pub(crate) fn ensure_keepalive(&mut self, now: Instant) {
        if self.keepalive_deadline.is_none() && self.keepalive.is_some() && self.keepalive_state() {
            self.arm_keepalive(now);
        }
    }

    fn on_keepalive_timeout(&mut self, now: Instant) {
        let Some(k) = self.keepalive else { return };
        if !self.keepalive_state() {
            return;
        }
        if self.snd_una != self.snd_max || !self.send_buf.is_empty() {
            // Outstanding data: the retransmission timer watches the peer instead.
            self.keepalive_deadline = Some(now + k.idle);
            return;
        }
        if self.keepalive_probes >= k.probes {
            // Linux resets a connection whose keepalives went unanswered.
            self.pending_control = Some(self.make_rst(self.snd_max));
            self.enter_closed(CloseReason::TimedOut);
            return;
        }
        self.keepalive_probes += 1;
        self.keepalive_probe_due = true;
        self.keepalive_deadline = Some(now + k.interval);
    }
}
