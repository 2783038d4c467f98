//! Segment arrival (RFC 9293 §3.10.7): SYN-SENT (§3.10.7.3), the synchronized states
//! (§3.10.7.4: sequence check, RST, SYN, ACK, text, FIN), TIME-WAIT reuse (RFC 6191 and
//! Linux's rule without timestamps). Also PAWS and the TS.Recent update (RFC 7323 §4.3,
//! §5.3), RFC 5961 challenge ACKs (§3 RST, §4 SYN) and the receive-side ACK policy
//! (RFC 9293 §3.8.6.3, RFC 5681 §4.2: every second full segment, at most 40 ms late,
//! immediately for out-of-order data and at connection start).

use super::{Connection, ConnectionEvent, DropReason, MAX_QUICKACKS, SegmentOutcome, State};
use crate::tcp::seq::SeqNumber;
use crate::time::{Duration, Instant};
use crate::wire::{TcpFlags, TcpRepr};

/// RFC 7323 §5.5: TS.Recent older than 24 days is invalid and not used by PAWS.
const PAWS_IDLE_LIMIT: Duration = Duration::from_secs(24 * 24 * 3600);

/// Sequence comparison for 32-bit timestamps (RFC 7323 §5.2).
fn ts_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl Connection {
    /// Processes one segment of this connection (already demultiplexed and checksummed).
    pub fn handle_segment(&mut self, now: Instant, seg: &TcpRepr<'_>) -> SegmentOutcome {
        self.stats.segments_received += 1;
        let outcome = match self.state {
            State::Closed | State::Listen => SegmentOutcome::Dropped(DropReason::InvalidState),
            State::SynSent => self.input_syn_sent(now, seg),
            State::TimeWait => self.input_time_wait(now, seg),
            _ => self.input_synchronized(now, seg),
        };
        match outcome {
            SegmentOutcome::Dropped(_) => self.stats.dropped += 1,
            _ => self.arm_keepalive(now),
        }
        outcome
    }

    fn input_syn_sent(&mut self, now: Instant, seg: &TcpRepr<'_>) -> SegmentOutcome {
        let has_ack = seg.flags.contains(TcpFlags::ACK);
        let rst = seg.flags.contains(TcpFlags::RST);
        if has_ack && (seg.ack <= self.iss || seg.ack > self.snd_max) {
            if !rst {
                self.pending_control = Some(self.make_bare_rst(seg.ack));
            }
            return SegmentOutcome::Dropped(DropReason::BadAck);
        }
        if rst {
            // RFC 9293 §3.10.7.3 (and RFC 5961 §3.2): only with an acceptable ACK.
            if has_ack {
                self.enter_closed(super::CloseReason::Reset);
                return SegmentOutcome::Accepted;
            }
            return SegmentOutcome::Dropped(DropReason::RstNotAcceptable);
        }
        if !seg.flags.contains(TcpFlags::SYN) {
            return SegmentOutcome::Dropped(DropReason::InvalidState);
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1u32;
        self.last_ack_sent = self.rcv_nxt;
        self.negotiate_from_syn(seg, now);
        // The window of a SYN is never scaled (RFC 7323 §2.2).
        self.snd_wnd = u32::from(seg.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seg.seq;
        self.snd_wl2 = seg.ack;
        if has_ack {
            self.take_rtt_sample(now, seg, seg.ack);
            self.snd_una = seg.ack;
            self.rtx_deadline = None;
            self.retransmits = 0;
            self.establish(now);
            self.rcv_adv = self.rcv_nxt;
            self.ack_now = true;
            self.process_text(now, seg.seq + 1u32, seg.payload, seg.flags.contains(TcpFlags::FIN));
        } else {
            // Simultaneous open (RFC 9293 §3.5, figure 7): answer with SYN-ACK.
            self.state = State::SynReceived;
            self.rcv_adv = self.rcv_nxt;
            self.snd_nxt = self.iss;
        }
        SegmentOutcome::Accepted
    }

    fn input_time_wait(&mut self, now: Instant, seg: &TcpRepr<'_>) -> SegmentOutcome {
        let f = seg.flags;
        if f.contains(TcpFlags::SYN) && !f.intersects(TcpFlags::ACK | TcpFlags::RST) {
            // RFC 6191 §2 with timestamps; Linux's sequence rule without them.
            let reusable = match (self.ts_ok, seg.options.timestamp) {
                (true, Some((tsval, _))) => ts_before(self.ts_recent, tsval),
                _ => seg.seq > self.rcv_nxt,
            };
            if reusable {
                return SegmentOutcome::ReopenFromTimeWait;
            }
            self.ack_now = true;
            return SegmentOutcome::Dropped(DropReason::InvalidState);
        }
        if f.contains(TcpFlags::FIN)
            && !f.contains(TcpFlags::RST)
            && seg.seq + seg.segment_len() == self.rcv_nxt
        {
            // The peer missed our ACK of its FIN: ACK again, restart 2*MSL (§3.10.7.4).
            self.close_deadline = Some(now + self.cfg.time_wait);
            self.ack_now = true;
            return SegmentOutcome::Accepted;
        }
        self.input_synchronized(now, seg)
    }

    /// RFC 9293 §3.10.7.4 segment acceptability, against the window we advertised.
    fn sequence_acceptable(&self, seg: &TcpRepr<'_>) -> bool {
        let wnd = self.advertised_window();
        let len = seg.segment_len() as u32;
        let wnd_end = self.rcv_nxt + wnd;
        match (len, wnd) {
            (0, 0) => seg.seq == self.rcv_nxt,
            // Linux and BSD also accept an empty segment exactly at the right edge (Linux
            // `tcp_sequence`): a peer whose window we filled up to a hole can send nothing
            // else, and dropping it would lose the ACKs of our own data.
            (0, _) => seg.seq.in_range(self.rcv_nxt, wnd_end + 1u32),
            (_, 0) => false,
            _ => {
                seg.seq.in_range(self.rcv_nxt, wnd_end)
                    || (seg.seq + (len - 1)).in_range(self.rcv_nxt, wnd_end)
            }
        }
    }

    /// RCV.WND as last advertised.
    pub(crate) fn advertised_window(&self) -> u32 {
        if self.rcv_adv > self.rcv_nxt { self.rcv_adv.since(self.rcv_nxt) } else { 0 }
    }

    fn input_synchronized(&mut self, now: Instant, seg: &TcpRepr<'_>) -> SegmentOutcome {
        let rst = seg.flags.contains(TcpFlags::RST);
        let syn = seg.flags.contains(TcpFlags::SYN);
        let has_ack = seg.flags.contains(TcpFlags::ACK);

        // A retransmitted SYN while our SYN-ACK is unanswered: send the SYN-ACK again.
        if self.state == State::SynReceived && syn && !has_ack && !rst && seg.seq == self.irs {
            self.snd_nxt = self.iss;
            return SegmentOutcome::Accepted;
        }
        // Simultaneous open: the peer's SYN-ACK acknowledges our SYN (RFC 9293 figure 7).
        if self.state == State::SynReceived
            && syn
            && has_ack
            && !rst
            && seg.seq == self.irs
            && self.snd_una < seg.ack
            && seg.ack <= self.snd_max
        {
            self.establish(now);
            self.ack_now = true;
            return match self.process_ack(now, seg) {
                Ok(()) => SegmentOutcome::Accepted,
                Err(reason) => SegmentOutcome::Dropped(reason),
            };
        }

        // RFC 7323 §5.3 R1: PAWS, for everything but RST.
        if let (true, false, Some((tsval, _))) = (self.ts_ok, rst, seg.options.timestamp) {
            if ts_before(tsval, self.ts_recent) && now - self.ts_recent_stamp < PAWS_IDLE_LIMIT {
                self.ack_now = true;
                return SegmentOutcome::Dropped(DropReason::PawsRejected);
            }
        }

        let mut text_allowed = true;
        if !self.sequence_acceptable(seg) {
            if rst {
                return SegmentOutcome::Dropped(DropReason::OutOfWindow);
            }
            // RFC 9293 §3.10.7.4: with a zero window, still take ACKs at RCV.NXT.
            if self.advertised_window() == 0 && seg.seq == self.rcv_nxt && has_ack && !syn {
                text_allowed = false;
                self.ack_now = true;
            } else {
                self.ack_now = true;
                return SegmentOutcome::Dropped(DropReason::OutOfWindow);
            }
        }

        // RFC 7323 §4.3 R3: TS.Recent from segments covering Last.ACK.sent.
        if let (true, Some((tsval, _))) = (self.ts_ok, seg.options.timestamp) {
            if !ts_before(tsval, self.ts_recent) && seg.seq <= self.last_ack_sent {
                self.ts_recent = tsval;
                self.ts_recent_stamp = now;
            }
        }

        if rst {
            // RFC 5961 §3.2: reset only on an exact match, challenge otherwise.
            if seg.seq == self.rcv_nxt {
                self.enter_closed(super::CloseReason::Reset);
                return SegmentOutcome::Accepted;
            }
            self.challenge_ack(now);
            return SegmentOutcome::Dropped(DropReason::ChallengeAck);
        }
        if syn {
            // RFC 5961 §4.2: any SYN in a synchronized state gets a challenge ACK.
            self.challenge_ack(now);
            return SegmentOutcome::Dropped(DropReason::ChallengeAck);
        }
        if !has_ack {
            return SegmentOutcome::Dropped(DropReason::NoAck);
        }
        if self.state == State::SynReceived {
            if !(self.snd_una < seg.ack && seg.ack <= self.snd_max) {
                self.pending_control = Some(self.make_bare_rst(seg.ack));
                return SegmentOutcome::Dropped(DropReason::BadAck);
            }
            self.establish(now);
        }
        if let Err(reason) = self.process_ack(now, seg) {
            return SegmentOutcome::Dropped(reason);
        }
        if self.state == State::Closed {
            return SegmentOutcome::Accepted;
        }
        if text_allowed {
            self.process_text(now, seg.seq, seg.payload, seg.flags.contains(TcpFlags::FIN));
        }
        SegmentOutcome::Accepted
    }

    /// RFC 5961 §7: challenge ACKs, at most `challenge_ack_limit_per_sec` per second.
    pub(crate) fn challenge_ack(&mut self, now: Instant) {
        if now - self.challenge_window_start >= Duration::from_secs(1) {
            self.challenge_window_start = now;
            self.challenge_count = 0;
        }
        if self.challenge_count < self.cfg.challenge_ack_limit_per_sec {
            self.challenge_count += 1;
            self.ack_now = true;
            self.stats.challenge_acks += 1;
        }
    }

    /// The handshake completed (RFC 9293 §3.10.7.3 and §3.10.7.4 SYN-RECEIVED).
    pub(crate) fn establish(&mut self, now: Instant) {
        self.state = if self.fin_queued { State::FinWait1 } else { State::Established };
        self.events.push(ConnectionEvent::Established);
        // RFC 5681 §3.1: one segment if the SYN or SYN-ACK had to be retransmitted.
        let segments =
            if self.syn_retransmitted { 1 } else { self.cfg.initial_cwnd_segments.max(1) };
        self.cc.cwnd = segments * self.smss();
        self.quickacks = MAX_QUICKACKS;
        self.arm_keepalive(now);
    }

    /// RFC 9293 §3.10.7.4 "seventh" and "eighth": segment text and FIN.
    pub(crate) fn process_text(&mut self, now: Instant, seq: SeqNumber, payload: &[u8], fin: bool) {
        if payload.is_empty() && !fin {
            return;
        }
        match self.state {
            State::Established | State::FinWait1 | State::FinWait2 => {}
            State::TimeWait => {
                // A retransmitted FIN: ACK it and restart the 2*MSL timer (§3.10.7.4).
                if fin {
                    self.close_deadline = Some(now + self.cfg.time_wait);
                }
                self.ack_now = true;
                return;
            }
            _ => {
                // The peer's FIN was already received; anything more is a duplicate.
                self.ack_now = true;
                return;
            }
        }
        let seg_end = seq + payload.len();
        if self.app_closed && !payload.is_empty() && seg_end > self.rcv_nxt {
            // Nobody will read this data: reset, as Linux does after close().
            self.abort();
            return;
        }
        let (mut seq, mut payload, mut fin) = (seq, payload, fin);
        if seq < self.rcv_nxt {
            let skip = self.rcv_nxt.since(seq) as usize;
            let dup_end = seq + skip.min(payload.len());
            self.assembler.note_duplicate(seq, dup_end);
            if skip > payload.len() || (skip == payload.len() && !fin) {
                // Entirely old (RFC 2883: report it as D-SACK).
                self.ack_now = true;
                return;
            }
            payload = payload.get(skip..).unwrap_or(&[]);
            seq = self.rcv_nxt;
        }
        // Keep only what lies inside the advertised window and fits the buffer.
        let limit =
            self.advertised_window().min(u32::try_from(self.recv_buf.free()).unwrap_or(u32::MAX));
        let offset = seq.since(self.rcv_nxt);
        let room = limit.saturating_sub(offset) as usize;
        if payload.len() > room {
            payload = payload.get(..room).unwrap_or(&[]);
            fin = false;
        }
        if seq == self.rcv_nxt {
            if !payload.is_empty() {
                self.deliver_in_order(now, payload);
            }
            if (fin && seq + payload.len() == self.rcv_nxt) || self.ooo_fin == Some(self.rcv_nxt) {
                self.receive_fin(now);
            }
        } else {
            if !payload.is_empty() {
                self.assembler.insert(seq, payload);
            }
            if fin {
                self.ooo_fin = Some(seq + payload.len());
            }
            // RFC 5681 §4.2: out-of-order data is acknowledged at once (a duplicate ACK).
            self.ack_now = true;
            self.quickacks = MAX_QUICKACKS;
        }
    }

    fn deliver_in_order(&mut self, now: Instant, payload: &[u8]) {
        let had_holes = !self.assembler.is_empty();
        let n = self.recv_buf.push(payload);
        self.rcv_nxt += n as u32;
        while let Some(data) = self.assembler.pop_ready(self.rcv_nxt) {
            let m = self.recv_buf.push(&data);
            self.rcv_nxt += m as u32;
        }
        let seen = u32::try_from(payload.len()).unwrap_or(u32::MAX).min(u32::from(self.cfg.mss));
        self.rcv_mss_seen = self.rcv_mss_seen.max(seen);
        self.events.push(ConnectionEvent::Readable);
        if had_holes {
            // RFC 5681 §4.2: ACK at once when a segment fills (part of) a gap.
            self.ack_now = true;
        } else {
            self.schedule_ack(now);
        }
    }

    /// RFC 9293 §3.8.6.3 delayed ACKs, Linux-style: quick ACKs first, then an ACK for
    /// every second full segment or after `delayed_ack`.
    fn schedule_ack(&mut self, now: Instant) {
        let unacked = self.rcv_nxt.since(self.last_ack_sent);
        if self.quickacks > 0 {
            self.quickacks -= 1;
            self.ack_now = true;
        } else if unacked > self.rcv_mss_seen {
            self.ack_now = true;
        } else if self.delack_deadline.is_none() {
            self.delack_deadline = Some(now + self.cfg.delayed_ack);
        }
    }

    fn receive_fin(&mut self, now: Instant) {
        self.rcv_nxt += 1u32;
        self.fin_received = true;
        self.ooo_fin = None;
        self.ack_now = true;
        self.events.push(ConnectionEvent::ReadClosed);
        match self.state {
            State::Established => self.state = State::CloseWait,
            State::FinWait1 if self.fin_acked() => self.enter_time_wait(now),
            State::FinWait1 => self.state = State::Closing,
            State::FinWait2 => self.enter_time_wait(now),
            _ => {}
        }
    }

    pub(crate) fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.rtx_deadline = None;
        self.persist_deadline = None;
        self.keepalive_deadline = None;
        self.close_deadline = Some(now + self.cfg.time_wait);
    }
}
