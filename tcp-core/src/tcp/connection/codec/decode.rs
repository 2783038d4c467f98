//! Reading and validating an encoded [`ConnectionState`] (the format is described in the
//! parent module). Every read is bounds-checked; nothing here can panic.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::super::{
    CloseReason, ConnectionEvent, ConnectionState, ConnectionStats, FourTuple, State,
};
use super::{CodecError, MAX_WINDOW_SHIFT};
use crate::tcp::config::{CongestionAlgorithm, Keepalive, TcpConfig};
use crate::tcp::seq::SeqNumber;
use crate::time::{Duration, Instant};
use crate::wire::{SackBlock, SackBlocks, TcpFlags, TcpOptions, TcpRepr};

pub(super) struct Reader<'a> {
    pub(super) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(CodecError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::InvalidValue(field)),
        }
    }
    fn usize(&mut self, field: &'static str) -> Result<usize, CodecError> {
        usize::try_from(self.u64(field)?).map_err(|_| CodecError::InvalidValue(field))
    }
    fn seq(&mut self, field: &'static str) -> Result<SeqNumber, CodecError> {
        Ok(SeqNumber(self.u32(field)?))
    }
    fn instant(&mut self, field: &'static str) -> Result<Instant, CodecError> {
        Ok(Instant::from_nanos(self.u64(field)?))
    }
    fn duration(&mut self, field: &'static str) -> Result<Duration, CodecError> {
        let secs = self.u64(field)?;
        let nanos = self.u32(field)?;
        if nanos >= 1_000_000_000 {
            return Err(CodecError::InvalidValue(field));
        }
        // Cannot overflow: the nanoseconds are below one second.
        Ok(Duration::new(secs, nanos))
    }
    /// A count of elements each at least `min_size` bytes long: refused if the rest of the
    /// input could not hold them, so a forged count never drives an allocation.
    fn count(&mut self, min_size: usize, field: &'static str) -> Result<usize, CodecError> {
        let n = self.u32(field)? as usize;
        if n.saturating_mul(min_size) > self.rest.len() {
            return Err(CodecError::Truncated(field));
        }
        Ok(n)
    }
    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, CodecError> {
        let n = self.count(1, field)?;
        Ok(self.take(n, field)?.to_vec())
    }
    fn option<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Option<T>, CodecError> {
        if self.bool(field)? { f(self).map(Some) } else { Ok(None) }
    }
    fn addr(&mut self, field: &'static str) -> Result<SocketAddrV4, CodecError> {
        let ip = self.array::<4>(field)?;
        let port = self.u16(field)?;
        Ok(SocketAddrV4::new(Ipv4Addr::from(ip), port))
    }
}

fn read_state_tag(r: &mut Reader<'_>) -> Result<State, CodecError> {
    Ok(match r.u8("state")? {
        0 => State::Closed,
        1 => State::Listen,
        2 => State::SynSent,
        3 => State::SynReceived,
        4 => State::Established,
        5 => State::FinWait1,
        6 => State::FinWait2,
        7 => State::CloseWait,
        8 => State::Closing,
        9 => State::LastAck,
        10 => State::TimeWait,
        _ => return Err(CodecError::InvalidValue("state")),
    })
}

fn read_close_reason(r: &mut Reader<'_>, field: &'static str) -> Result<CloseReason, CodecError> {
    Ok(match r.u8(field)? {
        0 => CloseReason::Normal,
        1 => CloseReason::Reset,
        2 => CloseReason::TimedOut,
        3 => CloseReason::Aborted,
        _ => return Err(CodecError::InvalidValue(field)),
    })
}

fn read_congestion(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<CongestionAlgorithm, CodecError> {
    Ok(match r.u8(field)? {
        0 => CongestionAlgorithm::Cubic,
        1 => CongestionAlgorithm::NewReno,
        _ => return Err(CodecError::InvalidValue(field)),
    })
}

fn read_keepalive(r: &mut Reader<'_>) -> Result<Keepalive, CodecError> {
    Ok(Keepalive {
        idle: r.duration("keepalive idle")?,
        interval: r.duration("keepalive interval")?,
        probes: r.u8("keepalive probes")?,
    })
}

fn read_config(r: &mut Reader<'_>) -> Result<TcpConfig, CodecError> {
    Ok(TcpConfig {
        mss: r.u16("config mss")?,
        send_buffer: r.usize("config send_buffer")?,
        recv_buffer: r.usize("config recv_buffer")?,
        window_scale: r.bool("config window_scale")?,
        sack: r.bool("config sack")?,
        timestamps: r.bool("config timestamps")?,
        congestion: read_congestion(r, "config congestion")?,
        initial_rto: r.duration("config initial_rto")?,
        min_rto: r.duration("config min_rto")?,
        max_rto: r.duration("config max_rto")?,
        delayed_ack: r.duration("config delayed_ack")?,
        time_wait: r.duration("config time_wait")?,
        syn_retries: r.u8("config syn_retries")?,
        max_retransmits: r.u8("config max_retransmits")?,
        initial_cwnd_segments: r.u32("config initial_cwnd_segments")?,
        nodelay: r.bool("config nodelay")?,
        keepalive: r.option("config keepalive", read_keepalive)?,
        challenge_ack_limit_per_sec: r.u32("config challenge_ack_limit")?,
    })
}

fn read_control(r: &mut Reader<'_>) -> Result<TcpRepr<'static>, CodecError> {
    let src_port = r.u16("control src_port")?;
    let dst_port = r.u16("control dst_port")?;
    let seq = r.seq("control seq")?;
    let ack = r.seq("control ack")?;
    let flags = TcpFlags::from_bits_retain(r.u8("control flags")?);
    let window = r.u16("control window")?;
    let urgent = r.u16("control urgent")?;
    let mss = r.option("control mss", |r| r.u16("control mss"))?;
    let window_scale = r.option("control window_scale", |r| r.u8("control window_scale"))?;
    let sack_permitted = r.bool("control sack_permitted")?;
    let timestamp = r.option("control timestamp", |r| {
        Ok((r.u32("control timestamp")?, r.u32("control timestamp")?))
    })?;
    let n = r.u8("control sack blocks")?;
    let mut sack = SackBlocks::EMPTY;
    for _ in 0..n {
        let block = SackBlock { left: r.seq("control sack")?, right: r.seq("control sack")? };
        if !sack.push(block) {
            return Err(CodecError::InvalidValue("control sack blocks"));
        }
    }
    Ok(TcpRepr {
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window,
        urgent,
        options: TcpOptions { mss, window_scale, sack_permitted, timestamp, sack },
        payload: &[],
    })
}

fn read_event(r: &mut Reader<'_>) -> Result<ConnectionEvent, CodecError> {
    Ok(match r.u8("pending event")? {
        0 => ConnectionEvent::Established,
        1 => ConnectionEvent::Readable,
        2 => ConnectionEvent::Writable,
        3 => ConnectionEvent::ReadClosed,
        4 => ConnectionEvent::Closed(read_close_reason(r, "pending event reason")?),
        _ => return Err(CodecError::InvalidValue("pending event")),
    })
}

fn read_stats(r: &mut Reader<'_>) -> Result<ConnectionStats, CodecError> {
    Ok(ConnectionStats {
        segments_sent: r.u64("stats")?,
        segments_received: r.u64("stats")?,
        retransmits: r.u64("stats")?,
        fast_retransmits: r.u64("stats")?,
        timeouts: r.u64("stats")?,
        dup_acks: r.u64("stats")?,
        dsacks: r.u64("stats")?,
        challenge_acks: r.u64("stats")?,
        dropped: r.u64("stats")?,
        srtt: r.option("stats srtt", |r| r.duration("stats srtt"))?,
        rto: r.duration("stats rto")?,
        cwnd: r.u32("stats cwnd")?,
        ssthresh: r.u32("stats ssthresh")?,
        send_mss: r.u32("stats send_mss")?,
    })
}

pub(super) fn read_state(r: &mut Reader<'_>) -> Result<ConnectionState, CodecError> {
    let config = read_config(r)?;
    let tuple = FourTuple { local: r.addr("local address")?, remote: r.addr("remote address")? };
    let state = read_state_tag(r)?;
    let iss = r.seq("iss")?;
    let snd_una = r.seq("snd_una")?;
    let snd_nxt = r.seq("snd_nxt")?;
    let snd_max = r.seq("snd_max")?;
    let snd_wnd = r.u32("snd_wnd")?;
    let max_snd_wnd = r.u32("max_snd_wnd")?;
    let snd_wl1 = r.seq("snd_wl1")?;
    let snd_wl2 = r.seq("snd_wl2")?;
    let send_buffer = r.bytes("send_buffer")?;
    let send_start = r.seq("send_start")?;
    let fin_queued = r.bool("fin_queued")?;
    let irs = r.seq("irs")?;
    let rcv_nxt = r.seq("rcv_nxt")?;
    let rcv_adv = r.seq("rcv_adv")?;
    let recv_buffer = r.bytes("recv_buffer")?;
    // Each run is at least a sequence number and a length.
    let runs = r.count(8, "out_of_order")?;
    let mut out_of_order = Vec::with_capacity(runs);
    for _ in 0..runs {
        out_of_order.push((r.seq("out_of_order")?, r.bytes("out_of_order")?));
    }
    let out_of_order_fin = r.option("out_of_order_fin", |r| r.seq("out_of_order_fin"))?;
    let fin_received = r.bool("fin_received")?;
    let snd_mss = r.u16("snd_mss")?;
    let window_scale =
        r.option("window_scale", |r| Ok((r.u8("window_scale")?, r.u8("window_scale")?)))?;
    let sack = r.bool("sack")?;
    let timestamps = r.bool("timestamps")?;
    let ts_recent = r.u32("ts_recent")?;
    let ts_recent_stamp = r.instant("ts_recent_stamp")?;
    let ts_offset = r.u32("ts_offset")?;
    let last_ack_sent = r.seq("last_ack_sent")?;
    let rcv_mss_seen = r.u32("rcv_mss_seen")?;
    let ack_pending = r.bool("ack_pending")?;
    let pending_control = r.option("pending_control", read_control)?;
    let delayed_ack_deadline = r.option("delayed_ack_deadline", |r| r.instant("delayed_ack"))?;
    let quickacks = r.u32("quickacks")?;
    let retransmit_deadline = r.option("retransmit_deadline", |r| r.instant("retransmit"))?;
    let retransmits = r.u8("retransmits")?;
    let srtt = r.option("srtt", |r| r.duration("srtt"))?;
    let rttvar = r.duration("rttvar")?;
    let base_rto = r.duration("base_rto")?;
    let rto_backoff = r.u32("rto_backoff")?;
    let rtt_probe =
        r.option("rtt_probe", |r| Ok((r.seq("rtt_probe")?, r.instant("rtt_probe")?)))?;
    let congestion = read_congestion(r, "congestion")?;
    let cwnd = r.u32("cwnd")?;
    let ssthresh = r.u32("ssthresh")?;
    let cwnd_limited = r.bool("cwnd_limited")?;
    let max_in_flight = r.u32("max_in_flight")?;
    let cwnd_window_end = r.seq("cwnd_window_end")?;
    let cubic_w_max = r.u32("cubic_w_max")?;
    let cubic_epoch_start = r.option("cubic_epoch_start", |r| r.instant("cubic_epoch"))?;
    let cubic_k_ms = r.u64("cubic_k_ms")?;
    let cubic_w_est = r.u32("cubic_w_est")?;
    let growth_credit = r.u64("growth_credit")?;
    let dup_acks = r.u32("dup_acks")?;
    let recovery = r.option("recovery", |r| Ok((r.seq("recovery")?, r.seq("recovery")?)))?;
    let recover = r.seq("recover")?;
    let retransmit_head = r.bool("retransmit_head")?;
    let ranges = r.count(8, "sacked")?;
    let mut sacked = Vec::with_capacity(ranges);
    for _ in 0..ranges {
        sacked.push((r.seq("sacked")?, r.seq("sacked")?));
    }
    let syn_retransmitted = r.bool("syn_retransmitted")?;
    let persist_deadline = r.option("persist_deadline", |r| r.instant("persist_deadline"))?;
    let persist_backoff = r.u32("persist_backoff")?;
    let persist_unanswered = r.u8("persist_unanswered")?;
    let persist_probe_due = r.bool("persist_probe_due")?;
    let keepalive = r.option("keepalive", read_keepalive)?;
    let keepalive_deadline = r.option("keepalive_deadline", |r| r.instant("keepalive"))?;
    let keepalive_probes = r.u8("keepalive_probes")?;
    let keepalive_probe_due = r.bool("keepalive_probe_due")?;
    let close_deadline = r.option("close_deadline", |r| r.instant("close_deadline"))?;
    let challenge_window_start = r.instant("challenge_window_start")?;
    let challenge_count = r.u32("challenge_count")?;
    let nodelay = r.bool("nodelay")?;
    let cork = r.bool("cork")?;
    let push_until = r.option("push_until", |r| r.seq("push_until"))?;
    let app_closed = r.bool("app_closed")?;
    let write_blocked = r.bool("write_blocked")?;
    let close_reason = r.option("close_reason", |r| read_close_reason(r, "close_reason"))?;
    let events = r.count(1, "pending_events")?;
    let mut pending_events = Vec::with_capacity(events);
    for _ in 0..events {
        pending_events.push(read_event(r)?);
    }
    let stats = read_stats(r)?;
    Ok(ConnectionState {
        config,
        tuple,
        state,
        iss,
        snd_una,
        snd_nxt,
        snd_max,
        snd_wnd,
        max_snd_wnd,
        snd_wl1,
        snd_wl2,
        send_buffer,
        send_start,
        fin_queued,
        irs,
        rcv_nxt,
        rcv_adv,
        recv_buffer,
        out_of_order,
        out_of_order_fin,
        fin_received,
        snd_mss,
        window_scale,
        sack,
        timestamps,
        ts_recent,
        ts_recent_stamp,
        ts_offset,
        last_ack_sent,
        rcv_mss_seen,
        ack_pending,
        pending_control,
        delayed_ack_deadline,
        quickacks,
        retransmit_deadline,
        retransmits,
        srtt,
        rttvar,
        base_rto,
        rto_backoff,
        rtt_probe,
        congestion,
        cwnd,
        ssthresh,
        cwnd_limited,
        max_in_flight,
        cwnd_window_end,
        cubic_w_max,
        cubic_epoch_start,
        cubic_k_ms,
        cubic_w_est,
        growth_credit,
        dup_acks,
        recovery,
        recover,
        retransmit_head,
        sacked,
        syn_retransmitted,
        persist_deadline,
        persist_backoff,
        persist_unanswered,
        persist_probe_due,
        keepalive,
        keepalive_deadline,
        keepalive_probes,
        keepalive_probe_due,
        close_deadline,
        challenge_window_start,
        challenge_count,
        nodelay,
        cork,
        push_until,
        app_closed,
        write_blocked,
        close_reason,
        pending_events,
        stats,
    })
}

/// The invariants a decoded state must keep before a stack may adopt it.
pub(super) fn validate(s: &ConnectionState) -> Result<(), CodecError> {
    let bad = |why| Err(CodecError::Inconsistent(why));
    if s.state == State::Listen {
        return bad("a connection cannot be in LISTEN");
    }
    if s.config.mss == 0 || s.snd_mss == 0 {
        return bad("zero MSS");
    }
    if s.config.min_rto > s.config.max_rto {
        return bad("minimum RTO above the maximum");
    }
    if let Some((snd, rcv)) = s.window_scale {
        if snd > MAX_WINDOW_SHIFT || rcv > MAX_WINDOW_SHIFT {
            return bad("window-scale shift above 14");
        }
    }
    if s.send_buffer.len() > s.config.send_buffer {
        return bad("send buffer longer than configured");
    }
    if s.recv_buffer.len() > s.config.recv_buffer {
        return bad("receive buffer longer than configured");
    }
    // SND.UNA <= SND.NXT <= SND.MAX, modulo 2^32 (RFC 9293 §3.3.1, §3.4).
    let nxt = s.snd_nxt.since(s.snd_una);
    let max = s.snd_max.since(s.snd_una);
    if nxt > max || max > i32::MAX as u32 {
        return bad("SND.UNA, SND.NXT and SND.MAX out of order");
    }
    if s.out_of_order.iter().any(|(_, data)| data.is_empty()) {
        return bad("empty out-of-order run");
    }
    if s.sacked.iter().any(|(l, r)| r.diff(*l) <= 0) {
        return bad("empty or backwards SACK range");
    }
    Ok(())
}
