//! What to send next: SYN and SYN-ACK (RFC 9293 §3.10.1, §3.10.7.2), data under the
//! send, congestion (RFC 5681) and recovery (RFC 6582, RFC 6675 §5) windows, Nagle's
//! algorithm (RFC 9293 §3.7.4) with sender-side silly-window avoidance (§3.8.6.2.1),
//! receiver-side window management (§3.8.6.2.2, window scaling RFC 7323 §2.3), ACKs, zero
//! window probes (§3.8.6.1), keepalives (§3.8.4) and resets (§3.10.7.1).

use super::{Connection, State};
use crate::tcp::seq::SeqNumber;
use crate::time::Instant;
use crate::wire::{TcpFlags, TcpOptions, TcpRepr};

/// A reset answering a segment that belongs to no connection (RFC 9293 §3.10.7.1).
/// `None` for a segment that is itself a reset.
pub fn reset_for(seg: &TcpRepr<'_>) -> Option<TcpRepr<'static>> {
    if seg.flags.contains(TcpFlags::RST) {
        return None;
    }
    let (seq, ack, flags) = if seg.flags.contains(TcpFlags::ACK) {
        (seg.ack, SeqNumber(0), TcpFlags::RST)
    } else {
        (SeqNumber(0), seg.seq + seg.segment_len(), TcpFlags::RST | TcpFlags::ACK)
    };
    Some(TcpRepr {
        src_port: seg.dst_port,
        dst_port: seg.src_port,
        seq,
        ack,
        flags,
        window: 0,
        urgent: 0,
        options: TcpOptions::default(),
        payload: &[],
    })
}

/// A data segment chosen for transmission.
struct DataSegment {
    seq: SeqNumber,
    len: u32,
    fin: bool,
}

impl Connection {
    /// The next segment to send now, if any. Call repeatedly until `None` after every
    /// input, operation or timeout. `max_payload` is what fits in the path MTU after the
    /// IPv4 header and the 20-byte TCP header; option bytes come out of it.
    pub fn poll_transmit(&mut self, now: Instant, max_payload: usize) -> Option<TcpRepr<'_>> {
        if let Some(control) = self.pending_control.take() {
            self.stats.segments_sent += 1;
            return Some(control);
        }
        match self.state {
            State::Closed | State::Listen => return None,
            State::SynSent | State::SynReceived if self.snd_nxt == self.iss => {
                let is_syn_ack = self.state == State::SynReceived;
                return Some(self.emit_syn(now, is_syn_ack));
            }
            State::SynSent => return None,
            _ => {}
        }
        let max_payload = u32::try_from(max_payload).unwrap_or(u32::MAX);
        if let Some(seg) = self.next_data_segment(max_payload) {
            return Some(self.emit_data(now, seg));
        }
        if self.persist_probe_due {
            self.persist_probe_due = false;
            if let Some(seg) = self.window_probe_data(max_payload) {
                return Some(self.emit_data(now, seg));
            }
            // RFC 9293 §3.8.6.1 allows a probe without data; like Linux, one byte below
            // SND.UNA, which any receiver answers with its current window.
            return Some(self.emit_ack(now, self.snd_una - 1u32));
        }
        if self.keepalive_probe_due {
            self.keepalive_probe_due = false;
            return Some(self.emit_ack(now, self.snd_max - 1u32));
        }
        if self.ack_now {
            // SND.MAX, not SND.NXT: after a timeout SND.NXT went back, and an ACK carrying
            // an old sequence number would fail the peer's acceptability test.
            return Some(self.emit_ack(now, self.snd_max));
        }
        self.update_persist(now);
        self.ensure_keepalive(now);
        None
    }

    /// A RST+ACK carrying `seq` (an abort, RFC 9293 §3.10.5; a keepalive give-up).
    pub(crate) fn make_rst(&self, seq: SeqNumber) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq,
            ack: self.rcv_nxt,
            flags: TcpFlags::RST | TcpFlags::ACK,
            window: 0,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        }
    }

    /// A bare RST with `seq`, as sent in SYN-SENT and SYN-RECEIVED for a bad ACK.
    pub(crate) fn make_bare_rst(&self, seq: SeqNumber) -> TcpRepr<'static> {
        TcpRepr { flags: TcpFlags::RST, ack: SeqNumber(0), ..self.make_rst(seq) }
    }

    fn emit_syn(&mut self, now: Instant, is_syn_ack: bool) -> TcpRepr<'static> {
        if self.snd_max != self.iss {
            self.stats.retransmits += 1;
            self.syn_retransmitted = true;
            self.rtt_probe = None;
        } else if !self.ts_ok {
            self.rtt_probe = Some((self.iss + 1u32, now));
        }
        self.snd_nxt = self.iss + 1u32;
        self.snd_max = self.snd_nxt;
        if self.rtx_deadline.is_none() {
            self.rtx_deadline = Some(now + self.rtt.rto());
        }
        // RFC 7323 §2.2: the window of a SYN is never scaled.
        let window = self.recv_buf.free().min(usize::from(u16::MAX)) as u16;
        let mut flags = TcpFlags::SYN;
        let mut ack = SeqNumber(0);
        if is_syn_ack {
            flags |= TcpFlags::ACK;
            ack = self.rcv_nxt;
            self.rcv_adv = self.rcv_adv.max(self.rcv_nxt + u32::from(window));
            self.last_ack_sent = self.rcv_nxt;
            self.ack_now = false;
        }
        self.stats.segments_sent += 1;
        TcpRepr {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq: self.iss,
            ack,
            flags,
            window,
            urgent: 0,
            options: self.syn_options(now, is_syn_ack),
            payload: &[],
        }
    }

    /// States in which we may (re)send data or FIN.
    fn may_send_data(&self) -> bool {
        matches!(
            self.state,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        )
    }

    /// The payload and FIN that a segment starting at `seq` may carry, up to `cap` bytes.
    fn extent_at(&self, seq: SeqNumber, cap: u32) -> (u32, bool) {
        let end = self.data_end();
        let avail = if seq <= end { end.since(seq) } else { 0 };
        let len = avail.min(cap);
        let fin = self.fin_queued && seq + len == end && seq <= end;
        (len, fin)
    }

    fn payload_cap(&self, max_payload: u32) -> u32 {
        let overhead = self.option_overhead();
        let mss = u32::from(self.snd_mss.min(self.cfg.mss));
        mss.min(max_payload).saturating_sub(overhead)
    }

    fn in_flight(&self) -> u32 {
        let outstanding = self.snd_nxt.since(self.snd_una);
        if self.snd_nxt == self.snd_max {
            outstanding.saturating_sub(self.scoreboard.sacked_bytes())
        } else {
            outstanding
        }
    }

    fn next_data_segment(&mut self, max_payload: u32) -> Option<DataSegment> {
        if !self.may_send_data() {
            return None;
        }
        let cap = self.payload_cap(max_payload);
        if cap == 0 {
            return None;
        }
        if self.retransmit_head {
            self.retransmit_head = false;
            if self.snd_una < self.snd_max {
                let (len, fin) = self.extent_at(self.snd_una, cap);
                if let Some(r) = self.recovery.as_mut() {
                    r.high_rxt = r.high_rxt.max(self.snd_una + len);
                }
                if len > 0 || fin {
                    return Some(DataSegment { seq: self.snd_una, len, fin });
                }
            }
        }
        if let Some(seg) = self.sack_recovery_segment(cap) {
            return seg;
        }
        self.new_data_segment(cap)
    }

    /// RFC 6675 §5 steps (C.1)-(C.5): while `cwnd - pipe >= SMSS`, send what NextSeg picks.
    /// `Some(None)` means recovery is active but nothing may be sent now.
    fn sack_recovery_segment(&mut self, cap: u32) -> Option<Option<DataSegment>> {
        let recovery = self.recovery?;
        if !self.sack_ok {
            return None;
        }
        let smss = self.smss();
        let pipe = self.scoreboard.pipe(self.snd_una, self.snd_max, recovery.high_rxt, smss);
        if self.cc.cwnd < pipe.saturating_add(smss) {
            return Some(None);
        }
        // Rule 1: a lost hole.
        let hole =
            self.scoreboard.next_lost(self.snd_una, recovery.high_rxt, smss, cap).or_else(|| {
                // Rule 2 is new data, tried next; rule 3 only when there is none.
                let (new_len, new_fin) = self.extent_at(self.snd_max, cap);
                let wnd_end = self.snd_una + self.snd_wnd;
                let new_ok = (new_len > 0 || new_fin) && self.snd_max < wnd_end;
                if new_ok {
                    None
                } else {
                    self.scoreboard.next_unsacked(self.snd_una, recovery.high_rxt, cap)
                }
            });
        if let Some((seq, len)) = hole {
            let (len, fin) = self.extent_at(seq, len);
            if let Some(r) = self.recovery.as_mut() {
                r.high_rxt = r.high_rxt.max(seq + len);
            }
            return Some(Some(DataSegment { seq, len, fin }));
        }
        // Rule 2: new data, limited by the send window only (pipe already checked).
        let snd_nxt = self.snd_max;
        self.snd_nxt = snd_nxt;
        let (len, fin) = self.extent_at(snd_nxt, cap);
        let usable = (self.snd_una + self.snd_wnd).since(snd_nxt).min(self.snd_wnd);
        let len = if self.snd_una + self.snd_wnd > snd_nxt { len.min(usable) } else { 0 };
        let fin = fin && self.extent_at(snd_nxt, len).1;
        if len == 0 && !fin {
            return Some(None);
        }
        Some(Some(DataSegment { seq: snd_nxt, len, fin }))
    }

    fn new_data_segment(&mut self, cap: u32) -> Option<DataSegment> {
        // After a timeout SND.NXT went back; skip what the peer already SACKed.
        while self.snd_nxt < self.snd_max {
            match self.scoreboard.sacked_end(self.snd_nxt) {
                Some(end) => self.snd_nxt = end.min(self.snd_max),
                None => break,
            }
        }
        let seq = self.snd_nxt;
        let retransmission = seq < self.snd_max;
        let (avail, fin_possible) = self.extent_at(seq, u32::MAX);
        if avail == 0 && !fin_possible {
            return None;
        }
        let wnd_end = self.snd_una + self.snd_wnd;
        let usable_wnd = if wnd_end > seq { wnd_end.since(seq) } else { 0 };
        let usable_cwnd = self.cc.cwnd.saturating_sub(self.in_flight());
        let wanted = avail.min(cap).min(usable_wnd);
        if usable_cwnd < wanted && !retransmission {
            // cwnd, not the application or the peer's window, holds data back.
            self.cc.on_send(self.in_flight(), true, self.snd_una, self.snd_nxt);
        }
        let len = wanted.min(usable_cwnd);
        if avail > 0 && len == 0 {
            return None;
        }
        if avail == 0 && usable_cwnd == 0 && !retransmission {
            return None;
        }
        if !retransmission && len < cap && !self.may_send_partial(len, avail) {
            return None;
        }
        let fin = fin_possible && len == avail;
        Some(DataSegment { seq, len, fin })
    }

    /// Nagle (RFC 9293 §3.7.4), cork, and sender SWS avoidance (§3.8.6.2.1) for a segment
    /// shorter than a full one.
    fn may_send_partial(&self, len: u32, avail: u32) -> bool {
        let all_queued = len == avail;
        if all_queued && self.fin_queued {
            // Closing pushes everything out, corked or not.
            return true;
        }
        if self.cork {
            return false;
        }
        if self.push_until.is_some_and(|p| self.snd_nxt + len <= p) {
            return true;
        }
        let nothing_unacked = self.snd_nxt == self.snd_una;
        if all_queued && (self.nodelay || nothing_unacked) {
            return true;
        }
        // Fs = 1/2 of the largest window the peer offered.
        self.max_snd_wnd > 0 && len >= self.max_snd_wnd / 2 && nothing_unacked
    }

    /// Data a persist-timer probe may carry when the window is small but not zero.
    fn window_probe_data(&self, max_payload: u32) -> Option<DataSegment> {
        let cap = self.payload_cap(max_payload).min(self.snd_wnd);
        if cap == 0 || self.snd_nxt != self.snd_max {
            return None;
        }
        let (len, fin) = self.extent_at(self.snd_nxt, cap);
        (len > 0).then_some(DataSegment { seq: self.snd_nxt, len, fin })
    }

    fn emit_data(&mut self, now: Instant, seg: DataSegment) -> TcpRepr<'_> {
        let seg_end = seg.seq + seg.len + u32::from(seg.fin);
        if seg.seq < self.snd_max {
            self.stats.retransmits += 1;
            if self
                .rtt_probe
                .is_some_and(|(probe, _)| probe.since(seg.seq) <= seg_end.since(seg.seq))
            {
                // Karn's rule: a retransmitted segment gives no RTT sample.
                self.rtt_probe = None;
            }
        } else if self.rtt_probe.is_none() && !self.ts_ok {
            self.rtt_probe = Some((seg_end, now));
        }
        let new_data = seg_end > self.snd_max;
        if seg.seq == self.snd_nxt {
            self.snd_nxt = seg_end;
        }
        self.snd_max = self.snd_max.max(seg_end);
        if new_data {
            // No room left for another full segment counts as having filled cwnd.
            let in_flight = self.in_flight();
            let limited = self.cc.cwnd.saturating_sub(in_flight) < self.smss();
            self.cc.on_send(in_flight, limited, self.snd_una, self.snd_nxt);
        }
        if self.rtx_deadline.is_none() {
            self.rtx_deadline = Some(now + self.rtt.rto());
        }
        self.persist_deadline = None;
        let mut flags = TcpFlags::ACK;
        if seg.fin {
            flags |= TcpFlags::FIN;
        }
        if seg.len > 0 && seg.seq + seg.len == self.data_end() {
            flags |= TcpFlags::PSH;
        }
        let (ack, window, options) = self.ack_fields(now);
        self.stats.segments_sent += 1;
        let offset = seg.seq.since(self.send_start) as usize;
        let payload = self.send_buf.contiguous(offset, seg.len as usize);
        TcpRepr {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq: seg.seq,
            ack,
            flags,
            window,
            urgent: 0,
            options,
            payload,
        }
    }

    fn emit_ack(&mut self, now: Instant, seq: SeqNumber) -> TcpRepr<'static> {
        let (ack, window, options) = self.ack_fields(now);
        self.stats.segments_sent += 1;
        TcpRepr {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq,
            ack,
            flags: TcpFlags::ACK,
            window,
            urgent: 0,
            options,
            payload: &[],
        }
    }

    /// ACK number, window and options for a segment that carries ACK; the ACK owed is paid.
    fn ack_fields(&mut self, now: Instant) -> (SeqNumber, u16, TcpOptions) {
        self.ack_now = false;
        self.delack_deadline = None;
        self.last_ack_sent = self.rcv_nxt;
        let window = self.window_to_advertise();
        (self.rcv_nxt, window, self.segment_options(now))
    }

    /// The window we can offer now and whether it is worth announcing: it grows only by
    /// at least min(buffer/2, MSS) (RFC 9293 §3.8.6.2.2) and never shrinks.
    fn receive_window(&self) -> (u32, u32) {
        let max = u32::from(u16::MAX) << self.rcv_wscale;
        let free = u32::try_from(self.recv_buf.free()).unwrap_or(u32::MAX).min(max);
        let current =
            if self.rcv_adv > self.rcv_nxt { self.rcv_adv.since(self.rcv_nxt) } else { 0 };
        let threshold = u32::try_from(self.recv_buf.capacity() / 2)
            .unwrap_or(u32::MAX)
            .min(u32::from(self.cfg.mss))
            .max(1);
        let offer = if free >= current.saturating_add(threshold) { free } else { current.min(max) };
        (offer, current)
    }

    fn window_to_advertise(&mut self) -> u16 {
        let (offer, current) = self.receive_window();
        let shift = self.rcv_wscale;
        let mut field = offer >> shift;
        if field << shift < current {
            // Rounding down would pull the right edge back; round up instead (as Linux).
            field = current.div_ceil(1 << shift);
        }
        let field = field.min(u32::from(u16::MAX));
        let edge = self.rcv_nxt + (field << shift);
        if edge > self.rcv_adv {
            self.rcv_adv = edge;
        }
        field as u16
    }

    /// After the application read: announce a window that has at least doubled (Linux
    /// `tcp_cleanup_rbuf`), subject to receiver SWS avoidance.
    pub(crate) fn maybe_window_update(&mut self) {
        if !matches!(self.state, State::Established | State::FinWait1 | State::FinWait2) {
            return;
        }
        let (offer, current) = self.receive_window();
        if offer > current && offer >= current.saturating_mul(2) {
            self.ack_now = true;
        }
    }

    /// Arms or disarms the persist timer (RFC 9293 §3.8.6.1): armed while data waits, the
    /// peer's window blocks it, and no retransmission timer runs.
    pub(crate) fn update_persist(&mut self, now: Instant) {
        let waiting = self.may_send_data() && self.data_end() > self.snd_nxt;
        let idle = self.snd_una == self.snd_max && self.rtx_deadline.is_none();
        let wnd_end = self.snd_una + self.snd_wnd;
        let usable = if wnd_end > self.snd_nxt { wnd_end.since(self.snd_nxt) } else { 0 };
        let blocked = usable < self.smss().min(self.data_end().since(self.snd_nxt));
        if waiting && idle && blocked {
            if self.persist_deadline.is_none() {
                self.persist_deadline = Some(now + self.persist_interval());
            }
        } else {
            self.persist_deadline = None;
            if !blocked || !waiting {
                self.persist_backoff = 0;
            }
        }
    }

    pub(crate) fn persist_interval(&self) -> crate::time::Duration {
        let base = self.rtt.rto();
        let factor = 1u32 << self.persist_backoff.min(16);
        base.checked_mul(factor).unwrap_or(self.cfg.max_rto).min(self.cfg.max_rto)
    }
}
