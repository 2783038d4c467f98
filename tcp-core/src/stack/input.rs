//! Receive path: Ethernet → ARP / IPv4 (reassembly) → ICMP / UDP / TCP demultiplexing.

use core::net::SocketAddrV4;

use super::Stack;
use super::syn_cookie::CookieOptions;
use crate::tcp::{
    Connection, ConnectionParams, DropReason, FourTuple, Negotiated, SegmentOutcome, reset_for,
};
use crate::time::Instant;
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::ethernet::{EtherType, EthernetRepr};
use crate::wire::icmpv4::{DstUnreachable, Icmpv4Repr};
use crate::wire::ipv4::Ipv4Repr;
use crate::wire::udp::UdpRepr;
use crate::wire::{IpProtocol, TcpFlags, TcpRepr, WireError};

/// How long after a SYN-queue overflow ACKs are still checked for SYN cookies.
const COOKIE_WINDOW_MILLIS: u64 = 2 * 64 * 1000;

impl Stack {
    /// Processes one received Ethernet frame (without FCS).
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        let now = self.clock(now);
        self.counters.frames_received += 1;
        let (eth, payload) = match EthernetRepr::parse(frame) {
            Ok(v) => v,
            Err(_) => {
                self.counters.eth_malformed += 1;
                return;
            }
        };
        if eth.dst_addr != self.config.mac && !eth.dst_addr.is_broadcast() {
            self.counters.eth_not_for_us += 1;
            return;
        }
        match eth.ethertype {
            EtherType::Arp => self.arp_input(now, payload),
            EtherType::Ipv4 => self.ipv4_input(now, payload),
            _ => self.counters.eth_unknown_ethertype += 1,
        }
    }

    fn arp_input(&mut self, now: Instant, payload: &[u8]) {
        let arp = match ArpRepr::parse(payload) {
            Ok(a) => a,
            Err(_) => {
                self.counters.arp_malformed += 1;
                return;
            }
        };
        let sender = arp.source_protocol_addr;
        if sender.is_unspecified()
            || sender.is_broadcast()
            || sender == self.config.ipv4_addr
            || !arp.source_hardware_addr.is_unicast()
        {
            self.counters.arp_malformed += 1;
            return;
        }
        let for_us = arp.target_protocol_addr == self.config.ipv4_addr;
        // RFC 826 "merge": update an existing entry from any ARP packet; add a new one only
        // when the packet is addressed to us.
        if for_us || self.arp.lookup(sender, now).is_some() {
            self.arp.fill(sender, arp.source_hardware_addr, now);
            self.flush_pending(sender, arp.source_hardware_addr);
        }
        if for_us && arp.operation == ArpOperation::Request {
            let reply = ArpRepr {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.config.mac,
                source_protocol_addr: self.config.ipv4_addr,
                target_hardware_addr: arp.source_hardware_addr,
                target_protocol_addr: sender,
            };
            self.queue_arp(arp.source_hardware_addr, &reply);
            self.counters.arp_replies_sent += 1;
        }
    }

    fn ipv4_input(&mut self, now: Instant, packet: &[u8]) {
        let (ip, payload) = match Ipv4Repr::parse(packet, &self.config.checksums) {
            Ok(v) => v,
            Err(WireError::BadChecksum) => {
                self.counters.ipv4_bad_checksum += 1;
                return;
            }
            Err(_) => {
                self.counters.ipv4_malformed += 1;
                return;
            }
        };
        let dst = ip.dst_addr;
        let unicast = dst == self.config.ipv4_addr;
        if !unicast && dst != self.config.broadcast() && !dst.is_broadcast() {
            self.counters.ipv4_not_for_us += 1;
            return;
        }
        if ip.is_fragment() {
            let key = super::reassembly::FragmentKey {
                src: ip.src_addr,
                dst: ip.dst_addr,
                protocol: u8::from(ip.protocol),
                ident: ip.ident,
            };
            match self.reassembler.add(
                now,
                key,
                usize::from(ip.fragment_offset),
                ip.more_fragments,
                payload,
            ) {
                Ok(Some(whole)) => {
                    self.counters.ipv4_fragments_reassembled += 1;
                    let ip = Ipv4Repr {
                        payload_len: whole.len(),
                        more_fragments: false,
                        fragment_offset: 0,
                        ..ip
                    };
                    self.l4_input(now, &ip, &whole, unicast);
                }
                Ok(None) => {}
                Err(_) => self.counters.ipv4_fragments_dropped += 1,
            }
            return;
        }
        self.l4_input(now, &ip, payload, unicast);
    }

    fn l4_input(&mut self, now: Instant, ip: &Ipv4Repr, payload: &[u8], unicast: bool) {
        match ip.protocol {
            IpProtocol::Tcp if unicast => self.tcp_input(now, ip, payload),
            IpProtocol::Tcp => self.counters.ipv4_not_for_us += 1,
            IpProtocol::Icmp => self.icmp_input(now, ip, payload, unicast),
            IpProtocol::Udp => self.udp_input(now, ip, payload, unicast),
            IpProtocol::Unknown(_) => {
                self.counters.ipv4_unknown_protocol += 1;
                if unicast {
                    self.send_icmp_error(now, ip, payload, DstUnreachable::ProtocolUnreachable);
                }
            }
        }
    }

    fn icmp_input(&mut self, now: Instant, ip: &Ipv4Repr, payload: &[u8], unicast: bool) {
        let icmp = match Icmpv4Repr::parse(payload, &self.config.checksums) {
            Ok(i) => i,
            Err(_) => {
                self.counters.icmp_malformed += 1;
                return;
            }
        };
        match icmp {
            // Linux ignores broadcast echo requests by default (icmp_echo_ignore_broadcasts).
            Icmpv4Repr::EchoRequest { ident, seq_no, data } if unicast => {
                let reply = Icmpv4Repr::EchoReply { ident, seq_no, data };
                self.send_icmp(now, ip.src_addr, &reply);
                self.counters.icmp_echo_replied += 1;
            }
            Icmpv4Repr::DstUnreachable { reason, next_hop_mtu, header, data } => {
                self.counters.icmp_unreachable_received += 1;
                if reason == DstUnreachable::FragmentationNeeded
                    && header.protocol == IpProtocol::Tcp
                    && header.src_addr == self.config.ipv4_addr
                {
                    self.path_mtu_input(now, &header, data, next_hop_mtu);
                }
            }
            _ => self.counters.icmp_ignored += 1,
        }
    }

    /// RFC 1191 §4: lower the connection's path MTU, after checking that the quoted segment
    /// could be one we sent (RFC 5927 §4.1: a blind attacker must guess the 4-tuple).
    fn path_mtu_input(&mut self, now: Instant, header: &Ipv4Repr, quoted: &[u8], mtu: u16) {
        let Some((sport, dport, seq)) = crate::wire::tcp::quoted_ports_and_seq(quoted) else {
            self.counters.icmp_malformed += 1;
            return;
        };
        // RFC 791's minimum; a lower or missing value is not trusted.
        if usize::from(mtu) < 68 || usize::from(mtu) >= self.config.mtu {
            self.counters.icmp_ignored += 1;
            return;
        }
        let tuple = FourTuple {
            local: SocketAddrV4::new(header.src_addr, sport),
            remote: SocketAddrV4::new(header.dst_addr, dport),
        };
        let Some(index) = self.by_tuple.get(&tuple) else {
            self.counters.icmp_ignored += 1;
            return;
        };
        if let Some(s) = self.sockets.by_index_mut(index) {
            if !s.conn.is_in_flight(seq) {
                self.counters.icmp_ignored += 1;
                return;
            }
            s.conn.handle_path_mtu(mtu, now);
            self.counters.path_mtu_updates += 1;
            self.after_activity(index);
        }
    }

    fn udp_input(&mut self, now: Instant, ip: &Ipv4Repr, payload: &[u8], unicast: bool) {
        if UdpRepr::parse(payload, ip.src_addr, ip.dst_addr, &self.config.checksums).is_err() {
            self.counters.udp_malformed += 1;
            return;
        }
        // No UDP sockets: every datagram is for a closed port (RFC 1122 §4.1.3.1), but an
        // error is never sent for a broadcast (RFC 1122 §3.2.2).
        if unicast {
            self.send_icmp_error(now, ip, payload, DstUnreachable::PortUnreachable);
        } else {
            self.counters.udp_dropped += 1;
        }
    }

    fn tcp_input(&mut self, now: Instant, ip: &Ipv4Repr, segment: &[u8]) {
        let seg = match TcpRepr::parse(segment, ip.src_addr, ip.dst_addr, &self.config.checksums) {
            Ok(s) => s,
            Err(WireError::BadChecksum) => {
                self.counters.tcp_bad_checksum += 1;
                return;
            }
            Err(_) => {
                self.counters.tcp_malformed += 1;
                return;
            }
        };
        let src = ip.src_addr;
        // RFC 1122 §4.2.3.10: segments from broadcast/multicast sources are dropped.
        if src.is_unspecified()
            || src.is_broadcast()
            || src.is_multicast()
            || src == self.config.broadcast()
            || seg.src_port == 0
            || seg.dst_port == 0
        {
            self.counters.tcp_malformed += 1;
            return;
        }
        let tuple = FourTuple {
            local: SocketAddrV4::new(ip.dst_addr, seg.dst_port),
            remote: SocketAddrV4::new(src, seg.src_port),
        };
        if let Some(index) = self.by_tuple.get(&tuple) {
            let Some(s) = self.sockets.by_index_mut(index) else { return };
            let outcome = s.conn.handle_segment(now, &seg);
            match outcome {
                SegmentOutcome::Accepted => {}
                SegmentOutcome::Dropped(reason) => self.count_drop(reason),
                SegmentOutcome::ReopenFromTimeWait => {
                    self.counters.tcp_time_wait_reused += 1;
                    self.free_socket(index);
                    self.listener_input(now, ip, tuple, &seg);
                    return;
                }
            }
            self.after_activity(index);
            return;
        }
        self.listener_input(now, ip, tuple, &seg);
    }

    fn count_drop(&mut self, reason: DropReason) {
        let c = &mut self.counters;
        match reason {
            DropReason::PawsRejected => c.tcp_paws_rejected += 1,
            DropReason::ChallengeAck => c.tcp_challenge_acks += 1,
            DropReason::OutOfWindow => c.tcp_out_of_window += 1,
            _ => c.tcp_dropped_other += 1,
        }
    }

    /// A segment for no connection: hand it to the listener on its port, or answer with a
    /// reset (RFC 9293 §3.10.7.1).
    fn listener_input(&mut self, now: Instant, ip: &Ipv4Repr, tuple: FourTuple, seg: &TcpRepr<'_>) {
        let Some(&lindex) = self.by_port.get(&seg.dst_port) else {
            self.counters.tcp_no_listener_rst_sent += 1;
            self.send_reset(now, ip, seg);
            return;
        };
        if seg.flags.contains(TcpFlags::RST) {
            self.counters.tcp_dropped_other += 1;
            return;
        }
        let is_syn = seg.flags.contains(TcpFlags::SYN);
        if seg.flags.contains(TcpFlags::ACK) {
            if !is_syn && self.cookie_ack_input(now, lindex, tuple, seg) {
                return;
            }
            // RFC 9293 §3.10.7.2: an ACK to a listener is answered with a reset.
            self.send_reset(now, ip, seg);
            return;
        }
        if !is_syn || seg.flags.contains(TcpFlags::FIN) {
            self.counters.tcp_dropped_other += 1;
            return;
        }
        let Some(l) = self.listeners.by_index(lindex) else { return };
        let (backlog, syn_queue, accept_len) = (l.backlog, l.syn_queue, l.accept_queue.len());
        if accept_len >= backlog {
            // Linux drops SYNs while the accept queue is full; the peer retries.
            self.counters.tcp_accept_queue_full += 1;
            return;
        }
        if self.sockets.len() >= self.config.max_sockets {
            self.counters.tcp_no_socket_space += 1;
            return;
        }
        let Some(next_hop) = self.next_hop(*tuple.remote.ip()) else {
            self.counters.tcp_dropped_other += 1;
            return;
        };
        if syn_queue >= backlog {
            self.counters.tcp_syn_queue_full += 1;
            self.last_syn_overflow = Some(now);
            self.send_cookie_syn_ack(now, tuple, seg);
            return;
        }
        let params = ConnectionParams {
            tuple,
            iss: self.isn.isn(tuple.local, tuple.remote, now),
            ts_offset: self.ts_offset(*tuple.local.ip(), *tuple.remote.ip()),
        };
        let conn = Connection::accept_syn(&self.config.tcp, params, seg, now);
        if let Some(l) = self.listeners.by_index_mut(lindex) {
            l.syn_queue += 1;
        }
        self.insert_socket(conn, Some(lindex), next_hop);
    }

    /// The options this stack agrees to for a SYN it answers with a cookie.
    fn cookie_options(&self, seg: &TcpRepr<'_>) -> CookieOptions {
        let tcp = &self.config.tcp;
        let timestamps = tcp.timestamps && seg.options.timestamp.is_some();
        CookieOptions {
            mss: seg.options.mss.unwrap_or(536),
            window_scale: seg.options.window_scale.filter(|_| tcp.window_scale),
            sack: tcp.sack && seg.options.sack_permitted,
            timestamps,
        }
    }

    fn send_cookie_syn_ack(&mut self, now: Instant, tuple: FourTuple, syn: &TcpRepr<'_>) {
        let opts = self.cookie_options(syn);
        let client_tsval = syn.options.timestamp.map(|(tsval, _)| tsval);
        let (iss, tsval) =
            self.cookies.generate(now, tuple.local, tuple.remote, syn.seq, &opts, client_tsval);
        // The cookie's TSval is on the bare millisecond clock; on the wire it carries the
        // same per-pair offset as every other segment to this peer.
        let offset = self.ts_offset(*tuple.local.ip(), *tuple.remote.ip());
        let tsval = tsval.map(|v| v.wrapping_add(offset));
        let syn_ack = crate::tcp::cookie_syn_ack(&self.config.tcp, syn, iss, tsval);
        self.counters.tcp_syn_cookies_sent += 1;
        self.send_tcp_control(now, *tuple.local.ip(), *tuple.remote.ip(), &syn_ack);
    }

    /// Completes a handshake whose SYN was answered with a cookie. Returns false when the
    /// ACK carries no valid cookie.
    fn cookie_ack_input(
        &mut self,
        now: Instant,
        lindex: u32,
        tuple: FourTuple,
        seg: &TcpRepr<'_>,
    ) -> bool {
        let recent = self.last_syn_overflow.is_some_and(|t| {
            now.saturating_duration_since(t).as_millis() < u128::from(COOKIE_WINDOW_MILLIS)
        });
        if !recent {
            return false;
        }
        let offset = self.ts_offset(*tuple.local.ip(), *tuple.remote.ip());
        let tsecr = seg.options.timestamp.map(|(_, ecr)| ecr.wrapping_sub(offset));
        let client_isn = seg.seq - 1;
        let cookie = seg.ack - 1;
        let Some(opts) =
            self.cookies.check(now, tuple.local, tuple.remote, client_isn, cookie, tsecr)
        else {
            self.counters.tcp_syn_cookies_rejected += 1;
            return false;
        };
        let accept_full =
            self.listeners.by_index(lindex).is_none_or(|l| l.accept_queue.len() >= l.backlog);
        if accept_full || self.sockets.len() >= self.config.max_sockets {
            self.counters.tcp_accept_queue_full += 1;
            return true;
        }
        let Some(next_hop) = self.next_hop(*tuple.remote.ip()) else { return true };
        let negotiated = Negotiated {
            mss: opts.mss,
            window_scale: opts.window_scale,
            sack: opts.sack,
            timestamps: opts.timestamps,
        };
        let params = ConnectionParams {
            tuple,
            iss: cookie,
            ts_offset: self.ts_offset(*tuple.local.ip(), *tuple.remote.ip()),
        };
        let conn =
            Connection::from_syn_cookie(&self.config.tcp, params, client_isn, negotiated, seg, now);
        self.counters.tcp_syn_cookies_accepted += 1;
        if let Some(l) = self.listeners.by_index_mut(lindex) {
            // Counted as if it had sat in the SYN queue, so promotion balances the count.
            l.syn_queue += 1;
        }
        self.insert_socket(conn, Some(lindex), next_hop);
        true
    }

    fn send_reset(&mut self, now: Instant, ip: &Ipv4Repr, seg: &TcpRepr<'_>) {
        if let Some(rst) = reset_for(seg) {
            self.counters.tcp_resets_sent += 1;
            self.send_tcp_control(now, ip.dst_addr, ip.src_addr, &rst);
        }
    }

    /// Keeps ICMP errors under `icmp_error_rate` per second (a token bucket refilled every
    /// second).
    pub(super) fn icmp_error_allowed(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.icmp_refilled).as_secs() >= 1 {
            self.icmp_refilled = now;
            self.icmp_tokens = self.config.icmp_error_rate;
        }
        if self.icmp_tokens == 0 {
            self.counters.icmp_rate_limited += 1;
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }
}
