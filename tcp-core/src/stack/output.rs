//! Transmit path: connection segments and the stack's own packets (ARP, ICMP, resets,
//! cookie SYN-ACKs) framed for the wire, with ARP resolution of the next hop.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::{Stack, StackConfig};
use crate::tcp::FourTuple;
use crate::time::Instant;
use crate::wire::arp::{self, ArpOperation, ArpRepr};
use crate::wire::ethernet::{self, EtherType, EthernetRepr};
use crate::wire::icmpv4::{DstUnreachable, Icmpv4Repr};
use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::tcp;
use crate::wire::{EthernetAddress, IpProtocol, TcpRepr, WireError};

/// Bytes of an offending datagram quoted in an ICMP error (RFC 1812 §4.3.2.3: as much as
/// fits in 576 bytes).
const ICMP_QUOTE_MAX: usize = 576 - ipv4::HEADER_LEN - 8 - ipv4::HEADER_LEN;

impl Stack {
    /// Writes the next frame to transmit into `buf` and returns its length, or `None` when
    /// there is nothing to send. Call it until it returns `None` after every input and
    /// operation. `buf` should hold at least `mtu + 14` bytes; a frame that does not fit is
    /// dropped and counted.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let now = self.clock(now);
        loop {
            if let Some(frame) = self.control_tx.pop_front() {
                match buf.get_mut(..frame.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(&frame);
                        self.counters.frames_sent += 1;
                        return Some(frame.len());
                    }
                    None => {
                        self.counters.tx_no_buffer += 1;
                        continue;
                    }
                }
            }
            let index = self.tx_queue.pop_front()?;
            let Some(s) = self.sockets.by_index_mut(index) else { continue };
            s.tx_queued = false;
            let next_hop = s.next_hop;
            let max_payload = self.config.mtu.saturating_sub(ipv4::HEADER_LEN + tcp::HEADER_LEN);
            let tuple = s.conn.tuple();
            // An unresolved next hop does not hold the connection back: its segments wait in
            // the bounded ARP queue (as in Linux's neighbour queue) while TCP's own timers
            // run, so a peer that never answers ARP ends in a timeout, not a hang. The
            // lookup waits until there is a segment: most polls of a socket find none.
            let mut mac = None;
            let written = s.conn.poll_transmit(now, max_payload).map(|seg| {
                mac = self.arp.lookup(next_hop, now);
                let dst = mac.unwrap_or(EthernetAddress([0; 6]));
                frame_tcp(&self.config, &mut self.ip_ident, dst, tuple, &seg, buf)
            });
            // Sending may arm timers and finish a closing connection. A socket with nothing
            // to send leaves the transmit queue until its next activity.
            self.settle(index, written.is_some());
            match (written, mac) {
                (Some(Ok(len)), Some(_)) => {
                    self.counters.frames_sent += 1;
                    return Some(len);
                }
                (Some(Ok(len)), None) => {
                    let packet = buf.get(ethernet::HEADER_LEN..len).unwrap_or_default().to_vec();
                    if !self.arp.queue_pending(next_hop, packet, now) {
                        self.counters.arp_pending_dropped += 1;
                    }
                    self.request_arp(now, next_hop);
                }
                (Some(Err(_)), _) => self.counters.tx_no_buffer += 1,
                (None, _) => {}
            }
        }
    }

    /// Queues an ARP request for `ip` unless one went out recently.
    pub(super) fn request_arp(&mut self, now: Instant, ip: Ipv4Addr) {
        if !self.arp.should_request(ip, now) {
            return;
        }
        let request = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: self.config.mac,
            source_protocol_addr: self.config.ipv4_addr,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        };
        self.queue_arp(EthernetAddress::BROADCAST, &request);
        self.counters.arp_requests_sent += 1;
    }

    pub(super) fn queue_arp(&mut self, dst: EthernetAddress, repr: &ArpRepr) {
        let mut frame = vec![0u8; ethernet::HEADER_LEN + arp::BUFFER_LEN];
        let eth =
            EthernetRepr { src_addr: self.config.mac, dst_addr: dst, ethertype: EtherType::Arp };
        let ok = eth.emit(&mut frame).is_ok()
            && frame.get_mut(ethernet::HEADER_LEN..).is_some_and(|p| repr.emit(p).is_ok());
        if ok {
            self.control_tx.push_back(frame);
        }
    }

    /// Sends frames that waited for `ip` to resolve.
    pub(super) fn flush_pending(&mut self, ip: Ipv4Addr, mac: EthernetAddress) {
        for packet in self.arp.take_pending(ip) {
            let frame = self.ethernet_frame(mac, &packet);
            self.control_tx.push_back(frame);
        }
    }

    fn ethernet_frame(&self, dst: EthernetAddress, ip_packet: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; ethernet::HEADER_LEN + ip_packet.len()];
        let eth =
            EthernetRepr { src_addr: self.config.mac, dst_addr: dst, ethertype: EtherType::Ipv4 };
        // The frame was sized for the header and the packet: neither write can fail.
        let _ = eth.emit(&mut frame);
        if let Some(p) = frame.get_mut(ethernet::HEADER_LEN..) {
            p.copy_from_slice(ip_packet);
        }
        frame
    }

    /// Routes a complete IPv4 packet the stack originated: straight out when the next hop
    /// is resolved, otherwise parked in the ARP pending queue behind a request.
    fn send_ip_packet(&mut self, now: Instant, dst: Ipv4Addr, packet: Vec<u8>) {
        let Some(next_hop) = self.next_hop(dst) else {
            self.counters.tx_no_route += 1;
            return;
        };
        match self.arp.lookup(next_hop, now) {
            Some(mac) => {
                let frame = self.ethernet_frame(mac, &packet);
                self.control_tx.push_back(frame);
            }
            None => {
                if !self.arp.queue_pending(next_hop, packet, now) {
                    self.counters.arp_pending_dropped += 1;
                }
                self.request_arp(now, next_hop);
            }
        }
    }

    fn ip_header(&mut self, dst: Ipv4Addr, protocol: IpProtocol, payload_len: usize) -> Ipv4Repr {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        Ipv4Repr {
            src_addr: self.config.ipv4_addr,
            dst_addr: dst,
            protocol,
            payload_len,
            ttl: self.config.ttl,
            dscp_ecn: 0,
            ident: self.ip_ident,
            dont_fragment: protocol == IpProtocol::Tcp,
            more_fragments: false,
            fragment_offset: 0,
        }
    }

    /// A segment that belongs to no connection (reset, cookie SYN-ACK).
    pub(super) fn send_tcp_control(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        seg: &TcpRepr<'_>,
    ) {
        let len = seg.buffer_len();
        let header = self.ip_header(dst, IpProtocol::Tcp, len);
        let mut packet = vec![0u8; ipv4::HEADER_LEN + len];
        let checksums = self.config.checksums;
        let ok = header.emit(&mut packet, &checksums).is_ok()
            && packet
                .get_mut(ipv4::HEADER_LEN..)
                .is_some_and(|p| seg.emit(p, src, dst, &checksums).is_ok());
        if ok {
            self.send_ip_packet(now, dst, packet);
        }
    }

    pub(super) fn send_icmp(&mut self, now: Instant, dst: Ipv4Addr, icmp: &Icmpv4Repr<'_>) {
        let len = icmp.buffer_len();
        let header = self.ip_header(dst, IpProtocol::Icmp, len);
        let mut packet = vec![0u8; ipv4::HEADER_LEN + len];
        let checksums = self.config.checksums;
        let ok = header.emit(&mut packet, &checksums).is_ok()
            && packet.get_mut(ipv4::HEADER_LEN..).is_some_and(|p| icmp.emit(p, &checksums).is_ok());
        if ok {
            self.send_ip_packet(now, dst, packet);
        }
    }

    /// An ICMP destination-unreachable error about a datagram we received.
    pub(super) fn send_icmp_error(
        &mut self,
        now: Instant,
        offending: &Ipv4Repr,
        payload: &[u8],
        reason: DstUnreachable,
    ) {
        if !self.icmp_error_allowed(now) {
            return;
        }
        let quoted = payload.get(..payload.len().min(ICMP_QUOTE_MAX)).unwrap_or(payload);
        let error = Icmpv4Repr::DstUnreachable {
            reason,
            next_hop_mtu: 0,
            header: *offending,
            data: quoted,
        };
        self.counters.icmp_errors_sent += 1;
        self.send_icmp(now, offending.src_addr, &error);
    }
}

/// Frames one connection segment: Ethernet + IPv4 + TCP into `buf`.
fn frame_tcp(
    config: &StackConfig,
    ip_ident: &mut u16,
    dst_mac: EthernetAddress,
    tuple: FourTuple,
    seg: &TcpRepr<'_>,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let tcp_len = seg.buffer_len();
    let total = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp_len;
    let frame = buf.get_mut(..total).ok_or(WireError::BufferTooSmall)?;
    let (eth_buf, rest) = frame.split_at_mut(ethernet::HEADER_LEN);
    let (ip_buf, tcp_buf) = rest.split_at_mut(ipv4::HEADER_LEN);
    EthernetRepr { src_addr: config.mac, dst_addr: dst_mac, ethertype: EtherType::Ipv4 }
        .emit(eth_buf)?;
    *ip_ident = ip_ident.wrapping_add(1);
    let ip = Ipv4Repr {
        src_addr: *tuple.local.ip(),
        dst_addr: *tuple.remote.ip(),
        protocol: IpProtocol::Tcp,
        payload_len: tcp_len,
        ttl: config.ttl,
        dscp_ecn: 0,
        ident: *ip_ident,
        dont_fragment: true,
        more_fragments: false,
        fragment_offset: 0,
    };
    ip.emit(ip_buf, &config.checksums)?;
    seg.emit(tcp_buf, *tuple.local.ip(), *tuple.remote.ip(), &config.checksums)?;
    debug_assert!(total - ethernet::HEADER_LEN <= config.mtu, "segment exceeds the MTU");
    Ok(total)
}
