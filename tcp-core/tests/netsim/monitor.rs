//! A passive observer of every TCP segment on the link. It checks, from outside the
//! stacks, the sequence-space rules a correct TCP keeps (RFC 9293 §3.4, §3.8.6; RFC 7323
//! §2.3):
//! - segments leave with valid checksums and within the MTU;
//! - the MSS a SYN announces fits the interface MTU (RFC 9293 §3.7.1);
//! - a sender's acknowledgment number never moves backwards;
//! - a receiver does not shrink the window it offered (RFC 9293 §3.8.6.2.2 says it should
//!   not), beyond the rounding window scaling forces;
//! - a sender never sends data beyond the right edge of the window the peer offered
//!   (a one-byte zero-window probe excepted), counting only what actually reached it.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use tcp_core::tcp::SeqNumber;
use tcp_core::wire::{Checksums, EtherType, EthernetRepr, IpProtocol, Ipv4Repr, TcpFlags, TcpRepr};

/// What the monitor knows about one direction of one connection, keyed by its sender.
#[derive(Debug, Default)]
struct Half {
    /// The window shift the sender offered in its SYN.
    offered_shift: Option<u8>,
    saw_syn: bool,
    highest_ack: Option<SeqNumber>,
    /// Highest right edge (ack + window) this sender has advertised.
    advertised_edge: Option<SeqNumber>,
    /// Highest right edge of the peer's window that reached this sender.
    usable_edge: Option<SeqNumber>,
}

type Key = (SocketAddrV4, SocketAddrV4);

/// Which checks are on. All are on by default; a test may turn one off to study a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checks {
    /// Data never goes beyond the right edge the peer offered
    /// (`bugs::sender_stays_within_the_offered_window`).
    pub(crate) peer_window: bool,
    /// The window a receiver offers never exceeds its receive buffer
    /// (`bugs::passive_open_offers_no_more_window_than_its_buffer`).
    pub(crate) window_within_buffer: bool,
}

impl Default for Checks {
    fn default() -> Checks {
        Checks { peer_window: true, window_within_buffer: true }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Monitor {
    checks: Checks,
    /// Receive buffer size of each host, for `Checks::window_within_buffer`.
    recv_buffers: Vec<(std::net::Ipv4Addr, usize)>,
    halves: BTreeMap<Key, Half>,
    /// Segments observed leaving a stack.
    pub(crate) segments: u64,
    /// Largest window shift actually in use on any connection.
    pub(crate) max_shift_used: u8,
}

fn tcp_segment(frame: &[u8]) -> Option<Result<(SocketAddrV4, SocketAddrV4, TcpRepr<'_>), String>> {
    let (eth, payload) = EthernetRepr::parse(frame).ok()?;
    if eth.ethertype != EtherType::Ipv4 {
        return None;
    }
    let (ip, l4) = match Ipv4Repr::parse(payload, &Checksums::default()) {
        Ok(v) => v,
        Err(e) => return Some(Err(format!("IPv4 header does not parse: {e}"))),
    };
    if ip.protocol != IpProtocol::Tcp {
        return None;
    }
    match TcpRepr::parse(l4, ip.src_addr, ip.dst_addr, &Checksums::default()) {
        Ok(seg) => Some(Ok((
            SocketAddrV4::new(ip.src_addr, seg.src_port),
            SocketAddrV4::new(ip.dst_addr, seg.dst_port),
            seg,
        ))),
        Err(e) => Some(Err(format!("TCP segment does not parse: {e}"))),
    }
}

fn after(a: SeqNumber, b: SeqNumber) -> bool {
    a.0.wrapping_sub(b.0) as i32 > 0
}

impl Monitor {
    pub(crate) fn new(checks: Checks, recv_buffers: Vec<(std::net::Ipv4Addr, usize)>) -> Monitor {
        Monitor { checks, recv_buffers, ..Monitor::default() }
    }

    /// The window shift `sender` applies to the windows it advertises (0 unless both SYNs
    /// carried the option).
    fn shift(&self, sender: Key) -> u8 {
        let mine = self.halves.get(&sender).and_then(|h| h.offered_shift);
        let theirs = self.halves.get(&(sender.1, sender.0)).and_then(|h| h.offered_shift);
        match (mine, theirs) {
            (Some(s), Some(_)) => s,
            _ => 0,
        }
    }

    fn right_edge(&self, key: Key, seg: &TcpRepr<'_>) -> SeqNumber {
        let shift = if seg.flags.contains(TcpFlags::SYN) { 0 } else { self.shift(key) };
        seg.ack + ((u32::from(seg.window)) << shift)
    }

    /// A frame a stack just produced. Returns a description of the first rule it breaks.
    pub(crate) fn on_transmit(&mut self, frame: &[u8], mtu: usize) -> Result<(), String> {
        let Some(parsed) = tcp_segment(frame) else { return Ok(()) };
        let (src, dst, seg) = parsed.map_err(|e| format!("stack emitted a bad frame: {e}"))?;
        self.segments += 1;
        let key = (src, dst);
        if frame.len() > mtu + 14 {
            return Err(format!("{src}->{dst}: frame of {} bytes exceeds MTU {mtu}", frame.len()));
        }
        if seg.flags.contains(TcpFlags::RST) {
            return Ok(());
        }
        if seg.flags.contains(TcpFlags::SYN) {
            if !seg.flags.contains(TcpFlags::ACK)
                && !self.halves.get(&key).is_some_and(|h| h.saw_syn)
            {
                self.halves.remove(&key);
                self.halves.remove(&(dst, src));
            }
            let half = self.halves.entry(key).or_default();
            half.saw_syn = true;
            half.offered_shift = seg.options.window_scale;
            if let Some(mss) = seg.options.mss {
                if usize::from(mss) + 40 > mtu {
                    return Err(format!(
                        "{src}->{dst}: SYN announces MSS {mss} but the MTU is {mtu}"
                    ));
                }
            }
        }
        let shift = self.shift(key);
        self.max_shift_used = self.max_shift_used.max(shift);
        let edge = self.right_edge(key, &seg);
        let half = self.halves.entry(key).or_default();
        if seg.flags.contains(TcpFlags::ACK) {
            if let Some(prev) = half.highest_ack {
                if after(prev, seg.ack) {
                    return Err(format!(
                        "{src}->{dst}: acknowledgment went backwards from {prev} to {}",
                        seg.ack
                    ));
                }
            }
            half.highest_ack = Some(seg.ack);
            if !seg.flags.contains(TcpFlags::SYN) {
                if let Some(prev) = half.advertised_edge {
                    let rounding = (1u32 << shift) - 1;
                    if after(prev, edge + rounding) {
                        return Err(format!(
                            "{src}->{dst}: window shrank: right edge {prev} -> {edge} (ack {}, window {} << {shift})",
                            seg.ack, seg.window
                        ));
                    }
                }
                if half.advertised_edge.is_none_or(|prev| after(edge, prev)) {
                    half.advertised_edge = Some(edge);
                }
                let offered = u64::from(seg.window) << shift;
                let buffer =
                    self.recv_buffers.iter().find(|(ip, _)| ip == src.ip()).map(|&(_, b)| b);
                if let (true, Some(buffer)) = (self.checks.window_within_buffer, buffer) {
                    if offered > buffer as u64 + (1u64 << shift) - 1 {
                        return Err(format!(
                            "{src}->{dst}: offers a window of {offered} bytes with a {buffer}-byte receive buffer"
                        ));
                    }
                }
            }
        }
        let half = self.halves.entry(key).or_default();
        if !seg.payload.is_empty() && self.checks.peer_window {
            if let Some(usable) = half.usable_edge {
                let end = seg.seq + seg.payload.len();
                if after(end, usable + 1u32) {
                    return Err(format!(
                        "{src}->{dst}: data {}..{end} beyond the peer's window edge {usable}",
                        seg.seq
                    ));
                }
            }
        }
        Ok(())
    }

    /// A frame that reached a stack intact: the receiver now knows the window it carries.
    pub(crate) fn on_deliver(&mut self, frame: &[u8]) {
        let Some(Ok((src, dst, seg))) = tcp_segment(frame) else { return };
        if seg.flags.contains(TcpFlags::RST) || !seg.flags.contains(TcpFlags::ACK) {
            return;
        }
        let edge = self.right_edge((src, dst), &seg);
        let receiver = self.halves.entry((dst, src)).or_default();
        if receiver.usable_edge.is_none_or(|prev| after(edge, prev)) {
            receiver.usable_edge = Some(edge);
        }
    }
}

/// One line describing a frame, for traces.
pub(crate) fn summary(frame: &[u8]) -> String {
    match tcp_segment(frame) {
        None => format!("non-TCP frame of {} bytes", frame.len()),
        Some(Err(e)) => format!("unparsable frame ({e})"),
        Some(Ok((src, dst, seg))) => {
            let o = &seg.options;
            let mut line = format!(
                "{src}->{dst} [{:?}] seq={} ack={} len={} win={}",
                seg.flags,
                seg.seq.0,
                seg.ack.0,
                seg.payload.len(),
                seg.window
            );
            if let Some(mss) = o.mss {
                line += &format!(" mss={mss}");
            }
            if let Some(ws) = o.window_scale {
                line += &format!(" ws={ws}");
            }
            if o.sack_permitted {
                line += " sackOK";
            }
            if let Some((val, ecr)) = o.timestamp {
                line += &format!(" ts={val}/{ecr}");
            }
            for b in o.sack.as_slice() {
                line += &format!(" sack={}-{}", b.left.0, b.right.0);
            }
            line
        }
    }
}
