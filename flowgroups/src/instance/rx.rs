//! Per-packet steering on the receive path, and the forwarding rings between instances
//! (DESIGN.md "NIC backends": software steering; "Flow-group balancing": stragglers).
//!
//! Every received frame is classified from its headers (Ethernet II, RFC 894; IPv4,
//! RFC 791 §3.1; TCP, RFC 9293 §3.1). For an IPv4 TCP segment the flow group is the
//! Toeplitz hash of (source address, destination address, source port, destination port)
//! — the direction the NIC hashes it (82599 datasheet §7.1.2.8.2) — and the control
//! segment's table says which instance owns that group. A segment for a group owned
//! elsewhere (a NIC without RSS control, or a straggler while a group moves) is pushed to
//! the owner's forwarding ring.
//!
//! ARP (RFC 826) is not steerable — RSS sends non-IP traffic to queue 0 — yet every
//! instance needs the neighbour it resolves, so ARP frames are processed locally and a
//! copy goes to every other instance. A copy of a request for our address is turned into
//! a reply before it is sent, so the peers learn the sender's address without each
//! answering the request again. These copies are counted apart from the fast path.
//!
//! IPv4 fragments carry no ports (the 82599 hashes them with the 2-tuple, §7.1.2.8.2), and
//! ICMP and UDP have no flow group: all of these are processed where they arrive.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::control::{ControlSegment, FRAME_SLOT_DATA, FrameSlot};
use crate::shm::{EventFd, RingConsumer, RingProducer, ShmError};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETH_HEADER_LEN: usize = 14;
const IP_PROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Offset of the ARP operation field in a frame (Ethernet header + htype, ptype, hlen,
/// plen).
const ARP_OPER_OFFSET: usize = ETH_HEADER_LEN + 6;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// Offset of the ARP target protocol address (Ethernet/IPv4 ARP).
const ARP_TPA_OFFSET: usize = ETH_HEADER_LEN + 24;

/// What a frame is, as far as steering cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// An unfragmented IPv4 TCP segment.
    Tcp {
        /// Source address and port (the remote end for a received frame).
        src: (Ipv4Addr, u16),
        /// Destination address and port.
        dst: (Ipv4Addr, u16),
        /// A SYN without ACK (a connection attempt).
        syn: bool,
    },
    /// An ARP packet.
    Arp,
    /// Anything else (ICMP, UDP, fragments, other EtherTypes, runts).
    Other,
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    let b = frame.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn ipv4_at(frame: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b = frame.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Classifies a frame from its headers; anything malformed is `Other` (the stack counts
/// and drops it).
pub(crate) fn classify(frame: &[u8]) -> FrameKind {
    match be16(frame, 12) {
        Some(ETHERTYPE_ARP) => FrameKind::Arp,
        Some(ETHERTYPE_IPV4) => classify_ipv4(frame).unwrap_or(FrameKind::Other),
        _ => FrameKind::Other,
    }
}

fn classify_ipv4(frame: &[u8]) -> Option<FrameKind> {
    let ip = ETH_HEADER_LEN;
    let vihl = *frame.get(ip)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || *frame.get(ip + 9)? != IP_PROTO_TCP {
        return Some(FrameKind::Other);
    }
    // More-fragments flag or a non-zero offset: no ports to hash.
    if be16(frame, ip + 6)? & 0x3fff != 0 {
        return Some(FrameKind::Other);
    }
    let src_ip = ipv4_at(frame, ip + 12)?;
    let dst_ip = ipv4_at(frame, ip + 16)?;
    let tcp = ip + ihl;
    let src_port = be16(frame, tcp)?;
    let dst_port = be16(frame, tcp + 2)?;
    let flags = *frame.get(tcp + 13)?;
    Some(FrameKind::Tcp {
        src: (src_ip, src_port),
        dst: (dst_ip, dst_port),
        syn: flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
    })
}

/// The copy of an ARP frame sent to the other instances: a request for `our_ip` becomes a
/// reply (so that only the instance that got the original answers it); anything else is
/// copied unchanged.
pub(crate) fn arp_copy(frame: &[u8], our_ip: Ipv4Addr, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(frame);
    let is_request = be16(frame, ARP_OPER_OFFSET) == Some(ARP_REQUEST);
    if is_request && ipv4_at(frame, ARP_TPA_OFFSET) == Some(our_ip) {
        if let Some(op) = out.get_mut(ARP_OPER_OFFSET..ARP_OPER_OFFSET + 2) {
            op.copy_from_slice(&ARP_REPLY.to_be_bytes());
        }
    }
}

/// Counters of the forwarding rings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ForwardStats {
    /// Frames pushed to peers (fast-path forwarding).
    pub(crate) forwarded: u64,
    /// ARP copies pushed to peers.
    pub(crate) arp_copies: u64,
    /// Frames dropped because a peer's ring was unusable or its backlog full.
    pub(crate) dropped: u64,
    /// Frames taken from peers' rings.
    pub(crate) received: u64,
    /// Slots from peers with an impossible length or kind, and rings found corrupt.
    pub(crate) corrupt: u64,
    /// Migration records sent (each one or more chunk slots).
    pub(crate) records_sent: u64,
    /// Items that waited in a backlog because a peer's ring was full.
    pub(crate) backlogged: u64,
}

/// [`FrameSlot::reserved`] of a slot carrying an Ethernet frame (what every version of the
/// forwarding ring has carried).
pub(crate) const SLOT_FRAME: u32 = 0;
/// [`FrameSlot::reserved`] of a slot carrying a chunk of a migration record (see
/// [`migrate`](super::migrate) for the chunk header).
pub(crate) const SLOT_RECORD: u32 = 1;
/// Bytes of chunk header at the start of a record chunk's data.
pub(crate) const CHUNK_HEADER: usize = 8;
/// Flag of the first chunk of a record.
pub(crate) const CHUNK_FIRST: u8 = 1;
/// Flag of the last chunk of a record.
pub(crate) const CHUNK_LAST: u8 = 2;
/// Bytes a peer's backlog may hold before frames (never records) are dropped: records carry
/// connection state, which must not be lost; frames can be retransmitted by TCP.
const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// Something waiting for room in a peer's ring, in the order it must arrive.
#[derive(Debug)]
enum Outgoing {
    Frame { bytes: Vec<u8>, group: u32 },
    Record { group: u32, kind: u8, bytes: Vec<u8>, sent: usize },
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Frame { bytes, .. } | Outgoing::Record { bytes, .. } => bytes.len(),
        }
    }
}

/// One peer: our producer towards it and what waits for room there.
#[derive(Debug)]
struct PeerOut {
    peer: u16,
    ring: Option<RingProducer<FrameSlot>>,
    backlog: VecDeque<Outgoing>,
}

/// This instance's ends of the forwarding rings: a producer towards every peer and a
/// consumer from every peer.
///
/// Everything sent to one peer arrives in the order it was sent: once something waits in a
/// peer's backlog (its ring was full), later frames and records queue behind it. A live
/// migration depends on this (connection state first, then the stragglers of its flow
/// group, then the end marker).
#[derive(Debug)]
pub(crate) struct Forwarding {
    me: u16,
    out: Vec<PeerOut>,
    inbound: Vec<(u16, Option<RingConsumer<FrameSlot>>)>,
    /// Next inbound ring to look at first (round robin between peers).
    next_inbound: usize,
    backlog_bytes: usize,
    doorbells: Vec<(u16, EventFd)>,
    /// Peers that got a frame since the last [`Forwarding::ring_doorbells`] (bit per
    /// instance).
    pushed: u32,
    pub(crate) stats: ForwardStats,
}

impl Forwarding {
    /// Attaches to every ring from and to instance `me`.
    pub(crate) fn attach(control: &ControlSegment, me: u16) -> Result<Forwarding, ShmError> {
        let mut out = Vec::new();
        let mut inbound = Vec::new();
        for peer in (0..control.layout().instances()).filter(|&p| p != me) {
            let ring = Some(control.forwarding(me, peer)?.producer()?);
            out.push(PeerOut { peer, ring, backlog: VecDeque::new() });
            inbound.push((peer, Some(control.forwarding(peer, me)?.consumer()?)));
        }
        Ok(Forwarding {
            me,
            out,
            inbound,
            next_inbound: 0,
            backlog_bytes: 0,
            doorbells: Vec::new(),
            pushed: 0,
            stats: ForwardStats::default(),
        })
    }

    /// Doorbells of the peers, rung after frames were pushed to them.
    pub(crate) fn set_doorbells(&mut self, doorbells: Vec<(u16, EventFd)>) {
        self.doorbells = doorbells.into_iter().filter(|(p, _)| *p != self.me).collect();
    }

    /// Pushes one slot to a peer's ring: Ok(true) pushed, Ok(false) full, Err(()) the ring
    /// is unusable (and is dropped).
    fn push_slot(
        ring: &mut Option<RingProducer<FrameSlot>>,
        slot: &FrameSlot,
        stats: &mut ForwardStats,
    ) -> Result<bool, ()> {
        let Some(producer) = ring else { return Err(()) };
        match producer.push(slot) {
            Ok(pushed) => Ok(pushed),
            Err(_) => {
                // The peer rewound its head: the ring is unusable until restart.
                *ring = None;
                stats.corrupt += 1;
                Err(())
            }
        }
    }

    /// Sends a frame to a peer, behind anything already waiting for it; false (and
    /// counted) if it was dropped.
    fn push_to(&mut self, to: u16, frame: &[u8], group: u32) -> bool {
        let Some(po) = self.out.iter_mut().find(|p| p.peer == to) else { return false };
        if po.backlog.is_empty() {
            let Some(fs) = FrameSlot::new(frame, group, 0) else { return false };
            match Self::push_slot(&mut po.ring, &fs, &mut self.stats) {
                Ok(true) => {
                    self.pushed |= 1 << to;
                    return true;
                }
                Ok(false) => {}
                Err(()) => return false,
            }
        }
        if frame.len() > FRAME_SLOT_DATA
            || self.backlog_bytes + frame.len() > MAX_BACKLOG_BYTES
            || po.ring.is_none()
        {
            return false;
        }
        self.backlog_bytes += frame.len();
        self.stats.backlogged += 1;
        po.backlog.push_back(Outgoing::Frame { bytes: frame.to_vec(), group });
        true
    }

    /// Forwards a frame of `group` to its owner; false (and counted) if it was dropped.
    pub(crate) fn forward(&mut self, to: u16, frame: &[u8], group: u32) -> bool {
        let ok = self.push_to(to, frame, group);
        if ok {
            self.stats.forwarded += 1;
        } else {
            self.stats.dropped += 1;
        }
        ok
    }

    /// Sends a migration record of `kind` to a peer, in order behind everything sent to it
    /// before; false only if the peer's ring is unusable or unknown.
    pub(crate) fn send_record(&mut self, to: u16, group: u32, kind: u8, bytes: Vec<u8>) -> bool {
        let Some(po) = self.out.iter_mut().find(|p| p.peer == to) else { return false };
        if po.ring.is_none() {
            return false;
        }
        self.backlog_bytes += bytes.len();
        self.stats.records_sent += 1;
        po.backlog.push_back(Outgoing::Record { group, kind, bytes, sent: 0 });
        self.flush();
        true
    }

    /// Moves what waits in the backlogs into the rings, as far as they have room.
    pub(crate) fn flush(&mut self) {
        for po in &mut self.out {
            while let Some(item) = po.backlog.front_mut() {
                let done = match item {
                    Outgoing::Frame { bytes, group } => {
                        let Some(fs) = FrameSlot::new(bytes, *group, 0) else {
                            // Checked when queued; cannot happen.
                            po.backlog.pop_front();
                            continue;
                        };
                        match Self::push_slot(&mut po.ring, &fs, &mut self.stats) {
                            Ok(true) => true,
                            Ok(false) => break,
                            Err(()) => true,
                        }
                    }
                    Outgoing::Record { group, kind, bytes, sent } => loop {
                        let Some(slot) = record_chunk(*group, *kind, bytes, *sent) else {
                            break true;
                        };
                        match Self::push_slot(&mut po.ring, &slot.0, &mut self.stats) {
                            Ok(true) => {
                                *sent += slot.1;
                                if *sent >= bytes.len() {
                                    break true;
                                }
                            }
                            Ok(false) => break false,
                            Err(()) => break true,
                        }
                    },
                };
                if !done {
                    break;
                }
                self.pushed |= 1 << po.peer;
                if let Some(item) = po.backlog.pop_front() {
                    self.backlog_bytes = self.backlog_bytes.saturating_sub(item.len());
                }
                if po.ring.is_none() {
                    // Unusable ring: nothing queued for this peer can be delivered.
                    for item in po.backlog.drain(..) {
                        self.backlog_bytes = self.backlog_bytes.saturating_sub(item.len());
                        self.stats.dropped += 1;
                    }
                }
            }
        }
    }

    /// True if something waits in a backlog (the loop must not sleep long).
    pub(crate) fn has_backlog(&self) -> bool {
        self.out.iter().any(|p| !p.backlog.is_empty())
    }

    /// Copies an ARP frame to every peer; returns how many copies went out.
    pub(crate) fn replicate(&mut self, frame: &[u8]) -> u32 {
        let peers: Vec<u16> = self.out.iter().map(|p| p.peer).collect();
        let mut sent = 0;
        for peer in peers {
            if self.push_to(peer, frame, 0) {
                sent += 1;
                self.stats.arp_copies += 1;
            } else {
                self.stats.dropped += 1;
            }
        }
        sent
    }

    /// The next slot from a peer's ring (peers taken round robin), with the peer's index.
    /// Slots with an impossible length or kind are counted and skipped.
    pub(crate) fn pop_inbound(&mut self) -> Option<(u16, FrameSlot)> {
        let n = self.inbound.len();
        for k in 0..n {
            let i = (self.next_inbound + k) % n;
            let Some((peer, ring)) = self.inbound.get_mut(i) else { continue };
            while let Some(consumer) = ring {
                match consumer.pop() {
                    Ok(Some(slot)) => {
                        let valid = slot.frame().is_some()
                            && matches!(slot.reserved, SLOT_FRAME | SLOT_RECORD);
                        if !valid {
                            self.stats.corrupt += 1;
                            continue;
                        }
                        if slot.reserved == SLOT_FRAME {
                            self.stats.received += 1;
                        }
                        // Stay on this peer: records and the frames behind them are
                        // processed in the order they were sent.
                        self.next_inbound = i;
                        return Some((*peer, slot));
                    }
                    Ok(None) => break,
                    Err(_) => {
                        *ring = None;
                        self.stats.corrupt += 1;
                    }
                }
            }
        }
        self.next_inbound = (self.next_inbound + 1) % n.max(1);
        None
    }

    /// True if a peer's ring holds a frame for us.
    pub(crate) fn pending(&mut self) -> bool {
        self.inbound
            .iter_mut()
            .any(|(_, r)| r.as_mut().is_some_and(|c| c.len().is_ok_and(|n| n > 0)))
    }

    /// Rings the doorbell of every peer that got frames since the last call, once.
    pub(crate) fn ring_doorbells(&mut self) {
        if self.pushed == 0 {
            return;
        }
        for (peer, bell) in &self.doorbells {
            if self.pushed & (1 << peer) != 0 {
                let _ = bell.notify();
            }
        }
        self.pushed = 0;
    }
}

/// The chunk of record `bytes` starting at `sent`, and how many record bytes it carries;
/// `None` once everything is sent (an empty record still gets one chunk).
fn record_chunk(group: u32, kind: u8, bytes: &[u8], sent: usize) -> Option<(FrameSlot, usize)> {
    if sent >= bytes.len() && !(sent == 0 && bytes.is_empty()) {
        return None;
    }
    let room = FRAME_SLOT_DATA - CHUNK_HEADER;
    let part = bytes.get(sent..(sent + room).min(bytes.len()))?;
    let mut flags = 0;
    if sent == 0 {
        flags |= CHUNK_FIRST;
    }
    if sent + part.len() >= bytes.len() {
        flags |= CHUNK_LAST;
    }
    let total = u32::try_from(bytes.len()).ok()?;
    let mut data = [0u8; FRAME_SLOT_DATA];
    data[0] = kind;
    data[1] = flags;
    data[4..8].copy_from_slice(&total.to_le_bytes());
    data.get_mut(CHUNK_HEADER..CHUNK_HEADER + part.len())?.copy_from_slice(part);
    let mut slot = FrameSlot::new(data.get(..CHUNK_HEADER + part.len())?, group, 0)?;
    slot.reserved = SLOT_RECORD;
    // An empty record is one chunk that carries nothing; report one byte "sent" so the
    // caller's loop ends.
    Some((slot, part.len().max(usize::from(bytes.is_empty()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + TCP header of a segment from `src` to `dst`.
    pub(crate) fn tcp_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[23] = IP_PROTO_TCP;
        f[26..30].copy_from_slice(&src.0.octets());
        f[30..34].copy_from_slice(&dst.0.octets());
        f[34..36].copy_from_slice(&src.1.to_be_bytes());
        f[36..38].copy_from_slice(&dst.1.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f
    }

    fn arp_frame(op: u16, target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f[ARP_OPER_OFFSET..ARP_OPER_OFFSET + 2].copy_from_slice(&op.to_be_bytes());
        f[ARP_TPA_OFFSET..ARP_TPA_OFFSET + 4].copy_from_slice(&target.octets());
        f
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn tcp_segments_are_classified_with_their_ports_and_syn_flag() {
        let syn = tcp_frame((A, 40000), (B, 80), TCP_SYN);
        assert_eq!(classify(&syn), FrameKind::Tcp { src: (A, 40000), dst: (B, 80), syn: true });
        let synack = tcp_frame((A, 40000), (B, 80), TCP_SYN | TCP_ACK);
        assert!(matches!(classify(&synack), FrameKind::Tcp { syn: false, .. }));
    }

    #[test]
    fn fragments_options_and_runts_are_handled() {
        let mut frag = tcp_frame((A, 1), (B, 2), 0);
        frag[20] = 0x20; // more fragments
        assert_eq!(classify(&frag), FrameKind::Other);
        let mut later = tcp_frame((A, 1), (B, 2), 0);
        later[21] = 0x10; // offset 16 * 8
        assert_eq!(classify(&later), FrameKind::Other);
        // IHL 6 (4 bytes of IP options): the ports are read past the options.
        let mut opts = tcp_frame((A, 1), (B, 2), 0);
        opts[14] = 0x46;
        opts.splice(34..34, [1, 1, 1, 1]);
        assert_eq!(classify(&opts), FrameKind::Tcp { src: (A, 1), dst: (B, 2), syn: false });
        for n in 0..54 {
            // No prefix of a frame can make classification panic.
            let _ = classify(&tcp_frame((A, 1), (B, 2), TCP_SYN)[..n]);
        }
        assert_eq!(classify(&[0u8; 10]), FrameKind::Other);
        let mut udp = tcp_frame((A, 1), (B, 2), 0);
        udp[23] = 17;
        assert_eq!(classify(&udp), FrameKind::Other);
        assert_eq!(classify(&arp_frame(ARP_REQUEST, B)), FrameKind::Arp);
    }

    #[test]
    fn arp_request_copies_become_replies_only_when_for_us() {
        let mut out = Vec::new();
        arp_copy(&arp_frame(ARP_REQUEST, B), B, &mut out);
        assert_eq!(be16(&out, ARP_OPER_OFFSET), Some(ARP_REPLY));
        arp_copy(&arp_frame(ARP_REQUEST, A), B, &mut out);
        assert_eq!(be16(&out, ARP_OPER_OFFSET), Some(ARP_REQUEST), "someone else's request");
        arp_copy(&arp_frame(ARP_REPLY, B), B, &mut out);
        assert_eq!(out, arp_frame(ARP_REPLY, B));
        arp_copy(&[0u8; 16], B, &mut out);
        assert_eq!(out, vec![0u8; 16], "a runt is copied as is");
    }
}
