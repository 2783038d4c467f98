//! A binary encoding of [`ConnectionState`], so a transmission control block (RFC 9293
//! §3.3.1) can cross a process boundary when a flow group migrates between stack instances.
//!
//! # Format (version 1)
//!
//! ```text
//! magic  "NPCS"          4 bytes
//! version                u16, little endian (= 1)
//! body length            u32, little endian: bytes that follow
//! body                   the fields of ConnectionState in declaration order
//! ```
//!
//! In the body every integer is little endian with its Rust width (`usize` as `u64`); a
//! `bool` is one byte 0 or 1; an `Option` is a presence byte 0 or 1 followed by the value;
//! a `Vec` is a `u32` element count followed by the elements; a `Duration` is `u64` seconds
//! and `u32` nanoseconds; an [`Instant`] is its `u64` nanoseconds; enums are one tag byte
//! (plus the payload of a variant that has one); an IPv4 socket address is four address
//! bytes and a `u16` port. A pending control segment (RST or ACK) is carried as header
//! fields and options only: control segments of a TCB carry no payload, and one that did
//! would be decoded with an empty payload.
//!
//! # Validation
//!
//! [`ConnectionState::decode`] never panics, whatever the input (checked by a proptest and
//! by the `connection_codec` fuzz target). Beyond the framing (magic, version, exact body
//! length, tags, booleans, nanoseconds below one second, element counts that fit in what
//! is left of the input, so a lying count cannot make it allocate) it rejects states no
//! [`Connection`](super::Connection) can be in: LISTEN (listeners are not connections),
//! a window-scale shift above 14 (RFC 7323 §2.3), a zero MSS, send or receive buffers
//! longer than the configuration allows, SND.UNA/SND.NXT/SND.MAX out of order (RFC 9293
//! §3.3.1), empty out-of-order runs, SACK ranges that are empty or backwards, and RTO
//! bounds the wrong way round.

use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddrV4;

use super::{CloseReason, ConnectionEvent, ConnectionState, ConnectionStats, State};
use crate::tcp::config::{CongestionAlgorithm, Keepalive, TcpConfig};
use crate::tcp::seq::SeqNumber;
use crate::time::{Duration, Instant};
use crate::wire::TcpRepr;

/// The first four bytes of an encoded state.
pub const CODEC_MAGIC: [u8; 4] = *b"NPCS";
/// The format version [`ConnectionState::encode`] writes and `decode` accepts.
pub const CODEC_VERSION: u16 = 1;
/// Magic, version and body length.
const HEADER_LEN: usize = 10;
/// Largest window-scale shift (RFC 7323 §2.3).
const MAX_WINDOW_SHIFT: u8 = 14;

/// Why [`ConnectionState::decode`] refused its input.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The input does not start with [`CODEC_MAGIC`].
    BadMagic,
    /// The input was written by another format version.
    UnsupportedVersion(u16),
    /// The input ended before the field named.
    Truncated(&'static str),
    /// Bytes follow the encoded state (the length header and the body disagree).
    TrailingBytes,
    /// A field holds a value its type cannot take (an unknown tag, a boolean other than
    /// 0 or 1, nanoseconds of a second or more, a size beyond this machine's `usize`).
    InvalidValue(&'static str),
    /// The fields decode but describe a connection that cannot exist (see the module
    /// documentation).
    Inconsistent(&'static str),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::BadMagic => f.write_str("not an encoded connection state (bad magic)"),
            CodecError::UnsupportedVersion(v) => {
                write!(f, "connection state format version {v} (this build reads {CODEC_VERSION})")
            }
            CodecError::Truncated(field) => write!(f, "connection state truncated at {field}"),
            CodecError::TrailingBytes => f.write_str("bytes after the encoded connection state"),
            CodecError::InvalidValue(field) => write!(f, "invalid value in field {field}"),
            CodecError::Inconsistent(why) => write!(f, "inconsistent connection state: {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CodecError {}

// ---------------------------------------------------------------------------------------
// Writing

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }
    fn seq(&mut self, v: SeqNumber) {
        self.u32(v.0);
    }
    fn instant(&mut self, v: Instant) {
        self.u64(v.as_nanos());
    }
    fn duration(&mut self, v: Duration) {
        self.u64(v.as_secs());
        self.u32(v.subsec_nanos());
    }
    /// Writes a length as `u32`. Lengths past `u32::MAX` cannot occur for a TCB (buffers
    /// are bounded by the configuration); they are clamped, which `decode` then rejects as
    /// truncated rather than misreading.
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.out.extend_from_slice(b);
    }
    fn option<T>(&mut self, v: &Option<T>, mut f: impl FnMut(&mut Self, &T)) {
        match v {
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
            None => self.u8(0),
        }
    }
    fn addr(&mut self, a: SocketAddrV4) {
        self.out.extend_from_slice(&a.ip().octets());
        self.u16(a.port());
    }
}

fn state_tag(s: State) -> u8 {
    match s {
        State::Closed => 0,
        State::Listen => 1,
        State::SynSent => 2,
        State::SynReceived => 3,
        State::Established => 4,
        State::FinWait1 => 5,
        State::FinWait2 => 6,
        State::CloseWait => 7,
        State::Closing => 8,
        State::LastAck => 9,
        State::TimeWait => 10,
    }
}

fn close_reason_tag(r: CloseReason) -> u8 {
    match r {
        CloseReason::Normal => 0,
        CloseReason::Reset => 1,
        CloseReason::TimedOut => 2,
        CloseReason::Aborted => 3,
    }
}

fn congestion_tag(c: CongestionAlgorithm) -> u8 {
    match c {
        CongestionAlgorithm::Cubic => 0,
        CongestionAlgorithm::NewReno => 1,
    }
}

fn write_keepalive(w: &mut Writer<'_>, k: &Keepalive) {
    w.duration(k.idle);
    w.duration(k.interval);
    w.u8(k.probes);
}

fn write_config(w: &mut Writer<'_>, c: &TcpConfig) {
    w.u16(c.mss);
    w.usize(c.send_buffer);
    w.usize(c.recv_buffer);
    w.bool(c.window_scale);
    w.bool(c.sack);
    w.bool(c.timestamps);
    w.u8(congestion_tag(c.congestion));
    w.duration(c.initial_rto);
    w.duration(c.min_rto);
    w.duration(c.max_rto);
    w.duration(c.delayed_ack);
    w.duration(c.time_wait);
    w.u8(c.syn_retries);
    w.u8(c.max_retransmits);
    w.u32(c.initial_cwnd_segments);
    w.bool(c.nodelay);
    w.option(&c.keepalive, write_keepalive);
    w.u32(c.challenge_ack_limit_per_sec);
}

fn write_control(w: &mut Writer<'_>, r: &TcpRepr<'static>) {
    w.u16(r.src_port);
    w.u16(r.dst_port);
    w.seq(r.seq);
    w.seq(r.ack);
    w.u8(r.flags.bits());
    w.u16(r.window);
    w.u16(r.urgent);
    let o = &r.options;
    w.option(&o.mss, |w, v| w.u16(*v));
    w.option(&o.window_scale, |w, v| w.u8(*v));
    w.bool(o.sack_permitted);
    w.option(&o.timestamp, |w, (val, ecr)| {
        w.u32(*val);
        w.u32(*ecr);
    });
    let blocks = o.sack.as_slice();
    w.u8(blocks.len() as u8);
    for b in blocks {
        w.seq(b.left);
        w.seq(b.right);
    }
}

fn write_event(w: &mut Writer<'_>, e: &ConnectionEvent) {
    match e {
        ConnectionEvent::Established => w.u8(0),
        ConnectionEvent::Readable => w.u8(1),
        ConnectionEvent::Writable => w.u8(2),
        ConnectionEvent::ReadClosed => w.u8(3),
        ConnectionEvent::Closed(r) => {
            w.u8(4);
            w.u8(close_reason_tag(*r));
        }
    }
}

fn write_stats(w: &mut Writer<'_>, s: &ConnectionStats) {
    w.u64(s.segments_sent);
    w.u64(s.segments_received);
    w.u64(s.retransmits);
    w.u64(s.fast_retransmits);
    w.u64(s.timeouts);
    w.u64(s.dup_acks);
    w.u64(s.dsacks);
    w.u64(s.challenge_acks);
    w.u64(s.dropped);
    w.option(&s.srtt, |w, d| w.duration(*d));
    w.duration(s.rto);
    w.u32(s.cwnd);
    w.u32(s.ssthresh);
    w.u32(s.send_mss);
}

impl ConnectionState {
    /// Appends the encoding of this state (see the module documentation) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Fixed fields take about 500 bytes; the buffers dominate.
        let data: usize = self.out_of_order.iter().map(|(_, d)| d.len() + 8).sum();
        out.reserve(HEADER_LEN + 512 + self.send_buffer.len() + self.recv_buffer.len() + data);
        out.extend_from_slice(&CODEC_MAGIC);
        out.extend_from_slice(&CODEC_VERSION.to_le_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let body_start = out.len();
        let w = &mut Writer { out };
        let s = self;
        write_config(w, &s.config);
        w.addr(s.tuple.local);
        w.addr(s.tuple.remote);
        w.u8(state_tag(s.state));
        w.seq(s.iss);
        w.seq(s.snd_una);
        w.seq(s.snd_nxt);
        w.seq(s.snd_max);
        w.u32(s.snd_wnd);
        w.u32(s.max_snd_wnd);
        w.seq(s.snd_wl1);
        w.seq(s.snd_wl2);
        w.bytes(&s.send_buffer);
        w.seq(s.send_start);
        w.bool(s.fin_queued);
        w.seq(s.irs);
        w.seq(s.rcv_nxt);
        w.seq(s.rcv_adv);
        w.bytes(&s.recv_buffer);
        w.len(s.out_of_order.len());
        for (start, data) in &s.out_of_order {
            w.seq(*start);
            w.bytes(data);
        }
        w.option(&s.out_of_order_fin, |w, v| w.seq(*v));
        w.bool(s.fin_received);
        w.u16(s.snd_mss);
        w.option(&s.window_scale, |w, (snd, rcv)| {
            w.u8(*snd);
            w.u8(*rcv);
        });
        w.bool(s.sack);
        w.bool(s.timestamps);
        w.u32(s.ts_recent);
        w.instant(s.ts_recent_stamp);
        w.u32(s.ts_offset);
        w.seq(s.last_ack_sent);
        w.u32(s.rcv_mss_seen);
        w.bool(s.ack_pending);
        w.option(&s.pending_control, write_control);
        w.option(&s.delayed_ack_deadline, |w, v| w.instant(*v));
        w.u32(s.quickacks);
        w.option(&s.retransmit_deadline, |w, v| w.instant(*v));
        w.u8(s.retransmits);
        w.option(&s.srtt, |w, v| w.duration(*v));
        w.duration(s.rttvar);
        w.duration(s.base_rto);
        w.u32(s.rto_backoff);
        w.option(&s.rtt_probe, |w, (seq, at)| {
            w.seq(*seq);
            w.instant(*at);
        });
        w.u8(congestion_tag(s.congestion));
        w.u32(s.cwnd);
        w.u32(s.ssthresh);
        w.bool(s.cwnd_limited);
        w.u32(s.max_in_flight);
        w.seq(s.cwnd_window_end);
        w.u32(s.cubic_w_max);
        w.option(&s.cubic_epoch_start, |w, v| w.instant(*v));
        w.u64(s.cubic_k_ms);
        w.u32(s.cubic_w_est);
        w.u64(s.growth_credit);
        w.u32(s.dup_acks);
        w.option(&s.recovery, |w, (point, high)| {
            w.seq(*point);
            w.seq(*high);
        });
        w.seq(s.recover);
        w.bool(s.retransmit_head);
        w.len(s.sacked.len());
        for (l, r) in &s.sacked {
            w.seq(*l);
            w.seq(*r);
        }
        w.bool(s.syn_retransmitted);
        w.option(&s.persist_deadline, |w, v| w.instant(*v));
        w.u32(s.persist_backoff);
        w.u8(s.persist_unanswered);
        w.bool(s.persist_probe_due);
        w.option(&s.keepalive, write_keepalive);
        w.option(&s.keepalive_deadline, |w, v| w.instant(*v));
        w.u8(s.keepalive_probes);
        w.bool(s.keepalive_probe_due);
        w.option(&s.close_deadline, |w, v| w.instant(*v));
        w.instant(s.challenge_window_start);
        w.u32(s.challenge_count);
        w.bool(s.nodelay);
        w.bool(s.cork);
        w.option(&s.push_until, |w, v| w.seq(*v));
        w.bool(s.app_closed);
        w.bool(s.write_blocked);
        w.option(&s.close_reason, |w, r| w.u8(close_reason_tag(*r)));
        w.len(s.pending_events.len());
        for e in &s.pending_events {
            write_event(w, e);
        }
        write_stats(w, &s.stats);
        let body_len = u32::try_from(out.len() - body_start).unwrap_or(u32::MAX);
        if let Some(slot) = out.get_mut(len_at..len_at + 4) {
            slot.copy_from_slice(&body_len.to_le_bytes());
        }
    }

    /// Decodes and validates a state written by [`ConnectionState::encode`]. The input must
    /// hold exactly one encoded state. Never panics.
    pub fn decode(input: &[u8]) -> Result<ConnectionState, CodecError> {
        let mut r = Reader { rest: input };
        if r.take(4, "magic")? != CODEC_MAGIC {
            return Err(CodecError::BadMagic);
        }
        let version = r.u16("version")?;
        if version != CODEC_VERSION {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let body_len = r.u32("body length")? as usize;
        match r.rest.len() {
            n if n < body_len => return Err(CodecError::Truncated("body")),
            n if n > body_len => return Err(CodecError::TrailingBytes),
            _ => {}
        }
        let state = read_state(&mut r)?;
        if !r.rest.is_empty() {
            return Err(CodecError::TrailingBytes);
        }
        validate(&state)?;
        Ok(state)
    }
}

mod decode;
#[cfg(test)]
mod tests;

use decode::{Reader, read_state, validate};
