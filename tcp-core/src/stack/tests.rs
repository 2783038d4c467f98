//! Stack-level behaviour: two stacks on an in-memory Ethernet segment, virtual time.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::*;
use crate::tcp::{CloseReason, State};
use crate::time::{Duration, Instant};
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::ethernet::{EtherType, EthernetRepr};
use crate::wire::icmpv4::{DstUnreachable, Icmpv4Repr};
use crate::wire::ipv4::Ipv4Repr;
use crate::wire::udp::UdpRepr;
use crate::wire::{Checksums, EthernetAddress, IpProtocol, TcpFlags, TcpRepr};

const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xa]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xb]);
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn stack(mac: EthernetAddress, ip: Ipv4Addr) -> Stack {
    Stack::new(StackConfig::new(mac, ip, 24, [7; 16]))
}

/// Two stacks joined by a lossless wire; `run` moves frames and advances time until both
/// are quiet.
struct Pair {
    a: Stack,
    b: Stack,
    now: Instant,
    /// Frames seen on the wire, A→B and B→A.
    a_to_b: Vec<Vec<u8>>,
    b_to_a: Vec<Vec<u8>>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            a: stack(MAC_A, IP_A),
            b: stack(MAC_B, IP_B),
            now: Instant::from_secs(1),
            a_to_b: Vec::new(),
            b_to_a: Vec::new(),
        }
    }

    /// Moves frames both ways until neither stack has anything to send.
    fn flush(&mut self) {
        let mut buf = vec![0u8; 1600];
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(n) = self.a.poll_transmit(self.now, &mut buf) {
                self.a_to_b.push(buf[..n].to_vec());
                self.b.handle_frame(self.now, &buf[..n]);
                moved = true;
            }
            while let Some(n) = self.b.poll_transmit(self.now, &mut buf) {
                self.b_to_a.push(buf[..n].to_vec());
                self.a.handle_frame(self.now, &buf[..n]);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the stacks never went quiet");
    }

    /// Advances virtual time by `d`, firing timers on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.flush();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = t.max(self.now);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
        self.flush();
    }

    fn connect(&mut self, port: u16) -> (SocketHandle, SocketHandle) {
        let l = self.b.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), 16).unwrap();
        let c = self.a.connect(self.now, SocketAddrV4::new(IP_B, port), None).unwrap();
        self.advance(Duration::from_millis(10));
        let (s, remote) = self.b.accept(l).unwrap();
        assert_eq!(*remote.ip(), IP_A);
        (c, s)
    }
}

fn events(stack: &mut Stack) -> Vec<Event> {
    core::iter::from_fn(|| stack.poll_event()).collect()
}

fn read_all(stack: &mut Stack, h: SocketHandle) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stack.recv(h, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[test]
fn arp_resolves_then_handshake_and_data_flow_both_ways() {
    let mut p = Pair::new();
    let (c, s) = p.connect(80);
    // The first frame on the wire is A's ARP request for B.
    let (eth, payload) = EthernetRepr::parse(&p.a_to_b[0]).unwrap();
    assert_eq!(eth.ethertype, EtherType::Arp);
    assert!(eth.dst_addr.is_broadcast());
    let arp = ArpRepr::parse(payload).unwrap();
    assert_eq!(arp.operation, ArpOperation::Request);
    assert_eq!(arp.target_protocol_addr, IP_B);
    assert!(events(&mut p.a).contains(&Event::Connected(c)));
    assert_eq!(p.a.state(c).unwrap(), State::Established);
    assert_eq!(p.b.state(s).unwrap(), State::Established);

    assert_eq!(p.a.send(c, b"GET / HTTP/1.0\r\n\r\n").unwrap(), 18);
    p.advance(Duration::from_millis(50));
    assert_eq!(read_all(&mut p.b, s), b"GET / HTTP/1.0\r\n\r\n");
    p.b.send(s, b"HTTP/1.0 200 OK\r\n\r\nhi").unwrap();
    p.b.close(s).unwrap();
    p.advance(Duration::from_millis(50));
    assert_eq!(read_all(&mut p.a, c), b"HTTP/1.0 200 OK\r\n\r\nhi");
    assert!(events(&mut p.a).contains(&Event::ReadClosed(c)));
    p.a.close(c).unwrap();
    p.advance(Duration::from_secs(1));
    // B closed first, so B keeps TIME-WAIT; A went through LAST-ACK and is gone.
    assert_eq!(p.a.socket_count(), 0, "client freed after LAST-ACK");
    assert_eq!(p.b.socket_count(), 1, "server holds TIME-WAIT");
    p.advance(Duration::from_secs(61));
    assert_eq!(p.b.socket_count(), 0, "TIME-WAIT expired after 2*MSL");
    assert_eq!(p.a.poll_timeout(), p.a.arp.poll_timeout());
}

#[test]
fn syn_to_closed_port_gets_reset_and_connect_fails() {
    let mut p = Pair::new();
    let c = p.a.connect(p.now, SocketAddrV4::new(IP_B, 9), None).unwrap();
    p.advance(Duration::from_millis(10));
    assert_eq!(p.b.counters().tcp_no_listener_rst_sent, 1);
    let evs = events(&mut p.a);
    assert!(evs.contains(&Event::Closed(c, CloseReason::Reset)), "{evs:?}");
    let rst = p.b_to_a.iter().find_map(|f| tcp_of(f).filter(|t| t.0.contains(TcpFlags::RST)));
    assert!(rst.is_some(), "B answered with RST");
}

#[test]
fn icmp_echo_is_answered_and_udp_to_closed_port_gets_port_unreachable() {
    let mut p = Pair::new();
    p.a.add_neighbor(p.now, IP_B, MAC_B);
    p.b.add_neighbor(p.now, IP_A, MAC_A);
    let echo = Icmpv4Repr::EchoRequest { ident: 7, seq_no: 3, data: b"ping!" };
    let frame = ipv4_frame(IpProtocol::Icmp, echo.buffer_len(), |buf| {
        echo.emit(buf, &Checksums::default()).unwrap()
    });
    p.b.handle_frame(p.now, &frame);
    p.flush();
    let reply = p.b_to_a.last().expect("an echo reply");
    let (_, ip_payload) = EthernetRepr::parse(reply).unwrap();
    let (ip, icmp) = Ipv4Repr::parse(ip_payload, &Checksums::default()).unwrap();
    assert_eq!(ip.dst_addr, IP_A);
    assert_eq!(
        Icmpv4Repr::parse(icmp, &Checksums::default()).unwrap(),
        Icmpv4Repr::EchoReply { ident: 7, seq_no: 3, data: b"ping!" }
    );

    let udp = UdpRepr { src_port: 5000, dst_port: 53 };
    let frame = ipv4_frame(IpProtocol::Udp, 8 + 4, |buf| {
        udp.emit(buf, IP_A, IP_B, b"abcd", &Checksums::default()).unwrap();
    });
    p.b.handle_frame(p.now, &frame);
    p.flush();
    let (_, ip_payload) = EthernetRepr::parse(p.b_to_a.last().unwrap()).unwrap();
    let (_, icmp) = Ipv4Repr::parse(ip_payload, &Checksums::default()).unwrap();
    match Icmpv4Repr::parse(icmp, &Checksums::default()).unwrap() {
        Icmpv4Repr::DstUnreachable { reason, header, data, .. } => {
            assert_eq!(reason, DstUnreachable::PortUnreachable);
            assert_eq!(header.protocol, IpProtocol::Udp);
            assert_eq!(&data[..2], &5000u16.to_be_bytes());
        }
        other => panic!("expected port unreachable, got {other:?}"),
    }
}

#[test]
fn garbage_frames_are_counted_not_fatal() {
    let mut s = stack(MAC_B, IP_B);
    let now = Instant::from_secs(1);
    s.handle_frame(now, &[]);
    s.handle_frame(now, &[0xff; 13]);
    let mut frame = ipv4_frame(IpProtocol::Tcp, 20, |buf| buf.fill(0));
    frame[14 + 10] ^= 0xff; // corrupt the IPv4 header checksum
    s.handle_frame(now, &frame);
    let c = s.counters();
    assert_eq!(c.frames_received, 3);
    assert_eq!(c.eth_malformed, 2);
    assert_eq!(c.ipv4_bad_checksum, 1);
    let mut buf = [0u8; 1600];
    assert_eq!(s.poll_transmit(now, &mut buf), None);
}

#[test]
fn syn_queue_overflow_switches_to_syn_cookies_and_they_complete() {
    let mut p = Pair::new();
    let l = p.b.listen(SocketAddrV4::new(IP_B, 80), 2).unwrap();
    // Hold B's SYN-ACKs back so the SYN queue fills: send SYNs from A, drop B's replies.
    let mut buf = vec![0u8; 1600];
    p.a.add_neighbor(p.now, IP_B, MAC_B);
    p.b.add_neighbor(p.now, IP_A, MAC_A);
    let conns: Vec<_> =
        (0..4).map(|_| p.a.connect(p.now, SocketAddrV4::new(IP_B, 80), None).unwrap()).collect();
    while let Some(n) = p.a.poll_transmit(p.now, &mut buf) {
        p.b.handle_frame(p.now, &buf[..n]);
    }
    assert_eq!(p.b.counters().tcp_syn_queue_full, 2);
    assert_eq!(p.b.counters().tcp_syn_cookies_sent, 2);
    // Now deliver everything: the cookie SYN-ACKs complete statelessly on B's side.
    p.advance(Duration::from_millis(10));
    assert_eq!(p.b.counters().tcp_syn_cookies_accepted, 2);
    let mut accepted = 0;
    while p.b.accept(l).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, 4);
    for c in conns {
        assert_eq!(p.a.state(c).unwrap(), State::Established);
    }
}

#[test]
fn exported_connection_continues_in_another_stack() {
    let mut p = Pair::new();
    let (c, s) = p.connect(7);
    p.a.send(c, b"before").unwrap();
    p.advance(Duration::from_millis(50));
    assert_eq!(read_all(&mut p.b, s), b"before");
    // Move B's connection into a fresh stack with the same address (a flow group moving
    // to another kernel instance).
    let state = p.b.export_connection(s).unwrap();
    assert_eq!(p.b.socket_count(), 0);
    let mut b2 = stack(MAC_B, IP_B);
    b2.add_neighbor(p.now, IP_A, MAC_A);
    let s2 = b2.import_connection(state).unwrap();
    p.b = b2;
    p.a.send(c, b" after").unwrap();
    p.b.send(s2, b"reply").unwrap();
    p.advance(Duration::from_millis(50));
    assert_eq!(read_all(&mut p.b, s2), b" after");
    assert_eq!(read_all(&mut p.a, c), b"reply");
    assert_eq!(p.a.counters().tcp_resets_sent + p.b.counters().tcp_resets_sent, 0);
}

#[test]
fn listener_errors_and_stale_handles() {
    let mut s = stack(MAC_B, IP_B);
    let l = s.listen(SocketAddrV4::new(IP_B, 80), 8).unwrap();
    assert_eq!(s.listen(SocketAddrV4::new(IP_B, 80), 8), Err(ListenError::AddrInUse));
    assert_eq!(
        s.listen(SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 81), 8),
        Err(ListenError::AddrNotAvailable)
    );
    assert_eq!(s.accept(l), Err(AcceptError::WouldBlock));
    assert!(s.close_listener(l));
    assert_eq!(s.accept(l), Err(AcceptError::InvalidHandle));
    let now = Instant::from_secs(1);
    assert_eq!(
        s.connect(now, SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 80), None),
        Err(ConnectError::Unreachable),
        "off-link without a gateway"
    );
    let c = s.connect(now, SocketAddrV4::new(IP_A, 80), Some(4000)).unwrap();
    assert_eq!(
        s.connect(now, SocketAddrV4::new(IP_A, 80), Some(4000)),
        Err(ConnectError::AddrInUse)
    );
    s.abort(c).unwrap();
    assert_eq!(s.send(c, b"x"), Err(SocketError::InvalidHandle));
}

/// Builds an Ethernet+IPv4 frame from A to B around a payload written by `fill`.
fn ipv4_frame(protocol: IpProtocol, len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 20 + len];
    EthernetRepr { src_addr: MAC_A, dst_addr: MAC_B, ethertype: EtherType::Ipv4 }
        .emit(&mut frame)
        .unwrap();
    Ipv4Repr {
        src_addr: IP_A,
        dst_addr: IP_B,
        protocol,
        payload_len: len,
        ttl: 64,
        dscp_ecn: 0,
        ident: 1,
        dont_fragment: false,
        more_fragments: false,
        fragment_offset: 0,
    }
    .emit(&mut frame[14..], &Checksums::default())
    .unwrap();
    fill(&mut frame[34..]);
    frame
}

/// The TCP flags and sequence number of a frame, if it carries TCP.
fn tcp_of(frame: &[u8]) -> Option<(TcpFlags, u32)> {
    let (_, p) = EthernetRepr::parse(frame).ok()?;
    let (ip, t) = Ipv4Repr::parse(p, &Checksums::default()).ok()?;
    let seg = TcpRepr::parse(t, ip.src_addr, ip.dst_addr, &Checksums::default()).ok()?;
    Some((seg.flags, seg.seq.0))
}

#[test]
fn connect_to_a_neighbor_that_never_answers_arp_times_out_instead_of_hanging() {
    let mut a = stack(MAC_A, IP_A);
    let mut now = Instant::from_secs(1);
    let c = a.connect(now, SocketAddrV4::new(IP_B, 80), None).unwrap();
    let mut buf = vec![0u8; 1600];
    let mut arp_requests = 0;
    let end = now + Duration::from_secs(300);
    let mut closed = None;
    while now < end && closed.is_none() {
        while let Some(n) = a.poll_transmit(now, &mut buf) {
            let (eth, _) = EthernetRepr::parse(&buf[..n]).unwrap();
            assert_eq!(eth.ethertype, EtherType::Arp, "nothing but ARP leaves without a MAC");
            arp_requests += 1;
        }
        for e in events(&mut a) {
            if let Event::Closed(h, reason) = e {
                closed = Some((h, reason));
            }
        }
        now = a.poll_timeout().unwrap_or(end).max(now);
        a.handle_timeout(now);
    }
    assert_eq!(closed, Some((c, CloseReason::TimedOut)), "connect gives up like a lost SYN");
    // One request per SYN (re)transmission at most, never a flood.
    assert!((1..=8).contains(&arp_requests), "{arp_requests} ARP requests");
    a.close(c).unwrap();
    assert_eq!(a.socket_count(), 0);
}

#[test]
fn aborting_while_the_neighbor_is_unresolved_frees_the_socket() {
    let mut p = Pair::new();
    let (c, _s) = p.connect(80);
    // Let A's ARP entry for B expire, then abort: the RST waits for ARP, the socket not.
    p.advance(Duration::from_secs(120));
    p.a.abort(c).unwrap();
    let mut buf = vec![0u8; 1600];
    while p.a.poll_transmit(p.now, &mut buf).is_some() {}
    assert_eq!(p.a.socket_count(), 0);
}

#[test]
fn idle_connection_memory_stays_small() {
    // The documented per-connection cost (see `Connection`): the control block itself, plus
    // buffers that grow only while data is queued.
    let size = core::mem::size_of::<crate::tcp::Connection>();
    assert!(size <= 1100, "Connection grew to {size} bytes; update the documented figure");
    let mut p = Pair::new();
    let (c, _s) = p.connect(80);
    assert_eq!(p.a.send_queue_len(c).unwrap(), 0);
    assert_eq!(p.a.recv_queue_len(c).unwrap(), 0);
}

/// An ICMP fragmentation-needed error from B's side quoting `seq` of A's connection.
fn frag_needed(tuple: crate::tcp::FourTuple, seq: u32, mtu: u16) -> Vec<u8> {
    let mut quoted = vec![0u8; 8];
    quoted[0..2].copy_from_slice(&tuple.local.port().to_be_bytes());
    quoted[2..4].copy_from_slice(&tuple.remote.port().to_be_bytes());
    quoted[4..8].copy_from_slice(&seq.to_be_bytes());
    let header = Ipv4Repr {
        src_addr: IP_A,
        dst_addr: IP_B,
        protocol: IpProtocol::Tcp,
        payload_len: 1480,
        ttl: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_fragment: true,
        more_fragments: false,
        fragment_offset: 0,
    };
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: DstUnreachable::FragmentationNeeded,
        next_hop_mtu: mtu,
        header,
        data: &quoted,
    };
    let mut frame = vec![0u8; 14 + 20 + icmp.buffer_len()];
    EthernetRepr { src_addr: MAC_B, dst_addr: MAC_A, ethertype: EtherType::Ipv4 }
        .emit(&mut frame)
        .unwrap();
    Ipv4Repr {
        src_addr: IP_B,
        dst_addr: IP_A,
        protocol: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        ..header
    }
    .emit(&mut frame[14..], &Checksums::default())
    .unwrap();
    icmp.emit(&mut frame[34..], &Checksums::default()).unwrap();
    frame
}

#[test]
fn fragmentation_needed_lowers_the_segment_size_only_for_in_flight_data() {
    let mut p = Pair::new();
    let (c, _s) = p.connect(80);
    let tuple = p.a.tuple(c).unwrap();
    p.a.send(c, &[1u8; 20_000]).unwrap();
    let mut buf = vec![0u8; 1600];
    let mut first_seq = None;
    while let Some(n) = p.a.poll_transmit(p.now, &mut buf) {
        if let Some((_, seq)) = tcp_of(&buf[..n]) {
            first_seq.get_or_insert(seq);
        }
    }
    let seq = first_seq.expect("data went out");
    // A forged error quoting a sequence number outside the flight is ignored.
    p.a.handle_frame(p.now, &frag_needed(tuple, seq.wrapping_add(1 << 30), 1000));
    assert_eq!(p.a.counters().path_mtu_updates, 0);
    assert_eq!(p.a.connection_stats(c).unwrap().send_mss, 1448);
    // A genuine one shrinks what the connection sends.
    p.a.handle_frame(p.now, &frag_needed(tuple, seq, 1000));
    assert_eq!(p.a.counters().path_mtu_updates, 1);
    assert!(p.a.connection_stats(c).unwrap().send_mss <= 1000 - 40);
    while let Some(n) = p.a.poll_transmit(p.now, &mut buf) {
        assert!(n - 14 <= 1000, "a {n}-byte frame after the MTU dropped to 1000");
    }
}

/// Bytes of queue storage the stack's sockets hold.
fn queue_storage(stack: &Stack) -> usize {
    stack
        .sockets
        .iter()
        .map(|(_, s)| s.conn.send_buf.allocated() + s.conn.recv_buf.allocated())
        .sum()
}

#[test]
fn time_wait_holds_no_queue_storage_and_new_connections_reuse_it() {
    let mut p = Pair::new();
    let l = p.b.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 16).unwrap();
    for round in 0..3 {
        let c = p.a.connect(p.now, SocketAddrV4::new(IP_B, 80), None).unwrap();
        p.advance(Duration::from_millis(10));
        let (s, _) = p.b.accept(l).unwrap();
        p.a.send(c, b"ping").unwrap();
        p.advance(Duration::from_millis(10));
        assert_eq!(read_all(&mut p.b, s), b"ping");
        p.b.send(s, b"pong").unwrap();
        // The server closes first, so it is the one that waits out TIME-WAIT.
        p.b.close(s).unwrap();
        p.advance(Duration::from_millis(10));
        assert_eq!(read_all(&mut p.a, c), b"pong");
        p.a.close(c).unwrap();
        p.advance(Duration::from_millis(10));
        assert_eq!(p.a.socket_count(), 0, "round {round}: the client is gone");
        assert_eq!(p.b.socket_count(), round + 1, "round {round}: the server waits in TIME-WAIT");
        assert_eq!(queue_storage(&p.b), 0, "round {round}: TIME-WAIT sockets hold no rings");
        // Both ends kept their rings for the next connection rather than freeing them.
        assert_eq!(p.a.spare_queues.len(), 2, "round {round}");
        assert_eq!(p.b.spare_queues.len(), 2, "round {round}");
    }
}
