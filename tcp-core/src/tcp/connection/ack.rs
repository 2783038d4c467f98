//! Acknowledgment processing (RFC 9293 §3.10.7.4 "fifth, check the ACK field"), with the
//! RFC 5961 §5 range check, RTT sampling (RFC 6298 §3 Karn, RFC 7323 §4 timestamps), the
//! send-window update rule, duplicate-ACK counting (RFC 5681 §2, §3.2), and loss recovery:
//! NewReno (RFC 6582 §3.2) without SACK, RFC 6675 §5 with SACK.

use super::{CloseReason, Connection, ConnectionEvent, DropReason, Recovery, State};
use crate::tcp::scoreboard::DUP_THRESH;
use crate::tcp::seq::SeqNumber;
use crate::time::{Duration, Instant};
use crate::wire::{TcpFlags, TcpRepr};

impl Connection {
    /// Scale applied to the peer's window field (none unless both sides agreed).
    fn peer_window(&self, field: u16) -> u32 {
        let shift = if self.ws_ok { self.snd_wscale } else { 0 };
        u32::from(field) << shift
    }

    pub(crate) fn process_ack(
        &mut self,
        now: Instant,
        seg: &TcpRepr<'_>,
    ) -> Result<(), DropReason> {
        let ack = seg.ack;
        if ack > self.snd_max {
            // RFC 9293: ACK of something not yet sent; RFC 5961 §5.2: a rate-limited ACK.
            self.challenge_ack(now);
            return Err(DropReason::BadAck);
        }
        if ack < self.snd_una && self.snd_una.since(ack) > self.max_snd_wnd {
            // RFC 5961 §5.2: too old to be a legitimate ACK.
            self.challenge_ack(now);
            return Err(DropReason::BadAck);
        }
        let window = self.peer_window(seg.window);
        if self.sack_ok && !seg.options.sack.is_empty() {
            let una = self.snd_una.max(ack);
            let (_, dsack) = self.scoreboard.update(seg.options.sack.as_slice(), una, self.snd_max);
            if dsack {
                self.stats.dsacks += 1;
            }
        }
        // Any acceptable ACK answers a window probe (RFC 1122 §4.2.2.17).
        self.persist_unanswered = 0;
        let advances = ack > self.snd_una;
        if advances {
            self.ack_new_data(now, seg, ack);
        } else if ack == self.snd_una {
            let duplicate = seg.payload.is_empty()
                && !seg.flags.intersects(TcpFlags::SYN | TcpFlags::FIN)
                && window == self.snd_wnd
                && self.snd_una != self.snd_max;
            if duplicate {
                self.on_dup_ack(now);
            } else if self.sack_ok && self.recovery.is_none() && self.should_enter_recovery() {
                self.enter_recovery(now);
            }
        }
        // RFC 9293 §3.10.7.4: update the send window from the newest segment only. An ACK
        // that moves SND.UNA also counts as newest (as Linux's tcp_may_update_window): else
        // a retransmitted segment with an old SEQ would advance SND.UNA but keep the old
        // window, stretching SND.UNA + SND.WND past what the peer offered.
        if self.snd_una <= ack
            && (advances
                || self.snd_wl1 < seg.seq
                || (self.snd_wl1 == seg.seq && self.snd_wl2 <= ack))
        {
            self.snd_wnd = window;
            self.snd_wl1 = self.snd_wl1.max(seg.seq);
            self.snd_wl2 = ack;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
        }
        if self.fin_acked() {
            match self.state {
                State::FinWait1 => {
                    self.state = State::FinWait2;
                    if self.app_closed {
                        // Linux's tcp_fin_timeout for orphaned connections (60 s).
                        self.close_deadline = Some(now + self.cfg.time_wait);
                    }
                }
                State::Closing => self.enter_time_wait(now),
                State::LastAck => self.enter_closed(CloseReason::Normal),
                _ => {}
            }
        }
        Ok(())
    }

    /// An RTT sample from the ACK of new data: RFC 7323 §4.1 with timestamps, otherwise the
    /// timed segment (never a retransmitted one, RFC 6298 §3).
    pub(crate) fn take_rtt_sample(&mut self, now: Instant, seg: &TcpRepr<'_>, ack: SeqNumber) {
        if let (true, Some((_, tsecr))) = (self.ts_ok, seg.options.timestamp) {
            let elapsed = self.ts_now(now).wrapping_sub(tsecr);
            if tsecr != 0 && elapsed < (1 << 30) {
                self.rtt.sample(Duration::from_millis(u64::from(elapsed)));
                return;
            }
        }
        if let Some((probe, sent)) = self.rtt_probe {
            if ack >= probe {
                self.rtt.sample(now - sent);
                self.rtt_probe = None;
            }
        }
    }

    fn ack_new_data(&mut self, now: Instant, seg: &TcpRepr<'_>, ack: SeqNumber) {
        let acked = ack.since(self.snd_una);
        self.take_rtt_sample(now, seg, ack);
        let data_acked =
            if ack > self.send_start { ack.min(self.data_end()).since(self.send_start) } else { 0 };
        self.send_buf.discard(data_acked as usize);
        self.send_start += data_acked;
        self.snd_una = ack;
        if self.snd_nxt < self.snd_una {
            self.snd_nxt = self.snd_una;
        }
        self.retransmits = 0;
        self.rtt.reset_backoff();
        self.scoreboard.advance(self.snd_una);
        // RFC 6298 §5.2-5.3.
        self.rtx_deadline =
            if self.snd_una == self.snd_max { None } else { Some(now + self.rtt.rto()) };
        let smss = self.smss();
        match self.recovery {
            Some(rec) if ack >= rec.point => {
                self.recovery = None;
                self.cc.exit_recovery();
            }
            Some(rec) => {
                if self.sack_ok {
                    if let Some(r) = self.recovery.as_mut() {
                        r.high_rxt = rec.high_rxt.max(self.snd_una);
                    }
                } else {
                    // RFC 6582 §3.2 step 5: partial ACK; resend the next hole, deflate.
                    self.retransmit_head = true;
                    self.cc.cwnd = self.cc.cwnd.saturating_sub(acked);
                    if acked >= smss {
                        self.cc.cwnd += smss;
                    }
                    self.cc.cwnd = self.cc.cwnd.max(smss);
                }
            }
            None => {
                if data_acked > 0 && self.cc.is_cwnd_limited() {
                    self.cc.on_ack(data_acked, smss, now, self.rtt.srtt);
                }
            }
        }
        self.dup_acks = 0;
        if self.write_blocked && self.send_buf.free() > 0 {
            self.write_blocked = false;
            self.events.push(ConnectionEvent::Writable);
        }
    }

    fn should_enter_recovery(&self) -> bool {
        // RFC 6582 §3.2 step 2: not again for losses from before the last reduction.
        if self.snd_una <= self.recover && self.recover != self.iss {
            return false;
        }
        if self.snd_una == self.snd_max {
            return false;
        }
        self.dup_acks >= DUP_THRESH
            || (self.sack_ok && self.scoreboard.is_lost(self.snd_una, self.smss()))
    }

    fn on_dup_ack(&mut self, now: Instant) {
        self.dup_acks += 1;
        self.stats.dup_acks += 1;
        if self.recovery.is_some() {
            if !self.sack_ok {
                // RFC 6582 §3.2 step 4: each further duplicate inflates the window.
                self.cc.cwnd = self.cc.cwnd.saturating_add(self.smss());
            }
        } else if self.should_enter_recovery() {
            self.enter_recovery(now);
        }
    }

    fn enter_recovery(&mut self, now: Instant) {
        let smss = self.smss();
        let flight = self.snd_max.since(self.snd_una);
        let ssthresh = self.cc.on_loss(flight, smss, now);
        self.recover = self.snd_max;
        self.recovery = Some(Recovery { point: self.snd_max, high_rxt: self.snd_una });
        self.stats.fast_retransmits += 1;
        // Both RFC 6582 §3.2 step 3 and RFC 6675 §5 (4.3) resend the first segment now.
        self.retransmit_head = true;
        self.cc.cwnd = if self.sack_ok { ssthresh } else { ssthresh + 3 * smss };
    }
}
