//! Option negotiation on the handshake: MSS (RFC 9293 §3.7.1, 536 when absent), window
//! scale (RFC 7323 §2.2-2.3: used only when both SYNs carry it, shift capped at 14), SACK
//! permitted (RFC 2018 §2) and timestamps (RFC 7323 §3.2: used only when both SYNs carry
//! them). Also the option overhead that limits each segment's payload (RFC 6691).

use super::{Connection, DEFAULT_MSS};
use crate::time::Instant;
use crate::wire::{SackBlocks, TcpOptions, TcpRepr};

/// Largest shift RFC 7323 §2.3 allows.
const MAX_WSCALE: u8 = 14;
/// Timestamps option with its two NOPs of padding.
pub(crate) const TS_OPTION_LEN: u32 = 12;

/// The smallest shift that lets the window field describe the whole receive buffer.
pub(crate) fn receive_scale_for(recv_buffer: usize) -> u8 {
    let mut shift = 0u8;
    while shift < MAX_WSCALE && (recv_buffer >> shift) > usize::from(u16::MAX) {
        shift += 1;
    }
    shift
}

/// Bytes a set of SACK blocks takes, padded to 32 bits (RFC 2018 §3).
pub(crate) fn sack_option_len(blocks: usize) -> u32 {
    if blocks == 0 { 0 } else { 4 + 8 * blocks as u32 }
}

impl Connection {
    /// Applies the options of the peer's SYN (or SYN-ACK) against what we offered, which is
    /// what the configuration enables.
    pub(crate) fn negotiate_from_syn(&mut self, syn: &TcpRepr<'_>, now: Instant) {
        self.snd_mss = syn.options.mss.unwrap_or(DEFAULT_MSS).max(64);
        match (self.cfg.window_scale, syn.options.window_scale) {
            (true, Some(shift)) => {
                self.ws_ok = true;
                self.snd_wscale = shift.min(MAX_WSCALE);
                self.rcv_wscale = receive_scale_for(self.cfg.recv_buffer);
            }
            _ => {
                self.ws_ok = false;
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
            }
        }
        self.sack_ok = self.cfg.sack && syn.options.sack_permitted;
        match (self.cfg.timestamps, syn.options.timestamp) {
            (true, Some((tsval, _))) => {
                self.ts_ok = true;
                self.ts_recent = tsval;
                self.ts_recent_stamp = now;
            }
            _ => self.ts_ok = false,
        }
    }

    /// Our timestamp clock: milliseconds plus the per-connection offset (RFC 7323 §5.4).
    pub(crate) fn ts_now(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// The options of a SYN or SYN-ACK. A SYN-ACK carries only what the SYN offered.
    pub(crate) fn syn_options(&self, now: Instant, is_syn_ack: bool) -> TcpOptions {
        let offer = |enabled: bool, negotiated: bool| enabled && (!is_syn_ack || negotiated);
        TcpOptions {
            mss: Some(self.cfg.mss),
            window_scale: offer(self.cfg.window_scale, self.ws_ok).then_some(self.rcv_wscale),
            sack_permitted: offer(self.cfg.sack, self.sack_ok),
            timestamp: offer(self.cfg.timestamps, self.ts_ok)
                .then(|| (self.ts_now(now), if is_syn_ack { self.ts_recent } else { 0 })),
            sack: SackBlocks::EMPTY,
        }
    }

    /// The options of a synchronized-state segment, and their length on the wire.
    pub(crate) fn segment_options(&mut self, now: Instant) -> TcpOptions {
        let mut options = TcpOptions::default();
        if self.ts_ok {
            options.timestamp = Some((self.ts_now(now), self.ts_recent));
        }
        if self.sack_ok {
            options.sack = self.assembler.sack_blocks(self.max_sack_blocks());
        }
        options
    }

    fn max_sack_blocks(&self) -> usize {
        if self.ts_ok { 3 } else { 4 }
    }

    /// Option bytes the next synchronized segment will carry.
    pub(crate) fn option_overhead(&self) -> u32 {
        let ts = if self.ts_ok { TS_OPTION_LEN } else { 0 };
        let sack = if self.sack_ok {
            sack_option_len(self.assembler.pending_blocks().min(self.max_sack_blocks()))
        } else {
            0
        };
        ts + sack
    }

    /// SMSS: the payload of a full segment (RFC 5681 §2), after the timestamps option.
    pub(crate) fn smss(&self) -> u32 {
        let mss = u32::from(self.snd_mss.min(self.cfg.mss));
        let ts = if self.ts_ok { TS_OPTION_LEN } else { 0 };
        mss.saturating_sub(ts).max(1)
    }
}

/// The SYN-ACK that answers `syn` statelessly with a SYN cookie (RFC 4987 §3.6): `iss` is
/// the cookie and `tsval`, when the peer offered timestamps, carries the encoded window
/// scale and SACK bits. Without timestamps nothing but the MSS survives the round trip, so
/// window scaling and SACK are not offered. Its window matches what
/// [`Connection::from_syn_cookie`] assumes was advertised.
pub fn cookie_syn_ack(
    config: &crate::tcp::TcpConfig,
    syn: &TcpRepr<'_>,
    iss: crate::tcp::SeqNumber,
    tsval: Option<u32>,
) -> TcpRepr<'static> {
    let peer_ts = syn.options.timestamp.map(|(v, _)| v);
    let timestamp = match (tsval, peer_ts) {
        (Some(ours), Some(theirs)) if config.timestamps => Some((ours, theirs)),
        _ => None,
    };
    let with_ts = timestamp.is_some();
    TcpRepr {
        src_port: syn.dst_port,
        dst_port: syn.src_port,
        seq: iss,
        ack: syn.seq + 1u32,
        flags: crate::wire::TcpFlags::SYN | crate::wire::TcpFlags::ACK,
        window: config.recv_buffer.min(usize::from(u16::MAX)) as u16,
        urgent: 0,
        options: TcpOptions {
            mss: Some(config.mss),
            window_scale: (config.window_scale && with_ts && syn.options.window_scale.is_some())
                .then(|| receive_scale_for(config.recv_buffer)),
            sack_permitted: config.sack && with_ts && syn.options.sack_permitted,
            timestamp,
            sack: SackBlocks::EMPTY,
        },
        payload: &[],
    }
}
