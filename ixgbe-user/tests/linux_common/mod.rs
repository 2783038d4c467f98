//! Tiny hand-written frame builders and parsers shared by the Linux-interface and AF_XDP
//! tests (Ethernet II, ARP per RFC 826, IPv4 per RFC 791, ICMP echo per RFC 792, UDP per
//! RFC 768). Deliberately minimal: the real wire code lives in tcp-core.

#![allow(dead_code, unreachable_pub)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ixgbe_user::QueuePair;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xff; 6];

fn ethernet(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// ARP request or reply (op 1 / 2) for IPv4 over Ethernet; returns the frame length.
pub fn arp(
    buf: &mut [u8],
    op: u16,
    eth_dst: [u8; 6],
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> usize {
    ethernet(buf, eth_dst, sender_mac, ETHERTYPE_ARP);
    let a = &mut buf[14..42];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type Ethernet
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&sender_mac);
    a[14..18].copy_from_slice(&sender_ip.octets());
    a[18..24].copy_from_slice(&target_mac);
    a[24..28].copy_from_slice(&target_ip.octets());
    // Pad to the 60-byte Ethernet minimum.
    buf[42..60].fill(0);
    60
}

/// A parsed ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

pub fn parse_arp(frame: &[u8]) -> Option<Arp> {
    if frame.len() < 42 || frame[12..14] != ETHERTYPE_ARP.to_be_bytes() {
        return None;
    }
    let a = &frame[14..42];
    Some(Arp {
        op: u16::from_be_bytes([a[6], a[7]]),
        sender_mac: a[8..14].try_into().ok()?,
        sender_ip: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        target_ip: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    })
}

/// RFC 1071 Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(buf: &mut [u8], protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) {
    let h = &mut buf[14..34];
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    h[8] = 64;
    h[9] = protocol;
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// ICMP echo request (type 8) with identifier, sequence and payload; returns the length.
#[allow(clippy::too_many_arguments)]
pub fn icmp_echo_request(
    buf: &mut [u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> usize {
    ethernet(buf, dst_mac, src_mac, ETHERTYPE_IPV4);
    let icmp_len = 8 + payload.len();
    ipv4(buf, 1, src, dst, icmp_len);
    let m = &mut buf[34..34 + icmp_len];
    m[0] = 8;
    m[1] = 0;
    m[2..4].fill(0);
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    m[6..8].copy_from_slice(&seq.to_be_bytes());
    m[8..].copy_from_slice(payload);
    let sum = checksum(m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    (34 + icmp_len).max(60)
}

/// A parsed ICMP echo reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ident: u16,
    pub seq: u16,
    pub payload: Vec<u8>,
    pub checksum_ok: bool,
}

fn ipv4_payload(frame: &[u8], protocol: u8) -> Option<(Ipv4Addr, Ipv4Addr, &[u8])> {
    if frame.len() < 34 || frame[12..14] != ETHERTYPE_IPV4.to_be_bytes() {
        return None;
    }
    let h = &frame[14..];
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || h[9] != protocol || total < ihl || total > h.len() {
        return None;
    }
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    Some((src, dst, &h[ihl..total]))
}

pub fn parse_echo_reply(frame: &[u8]) -> Option<EchoReply> {
    let (src, dst, m) = ipv4_payload(frame, 1)?;
    if m.len() < 8 || m[0] != 0 {
        return None;
    }
    Some(EchoReply {
        src,
        dst,
        ident: u16::from_be_bytes([m[4], m[5]]),
        seq: u16::from_be_bytes([m[6], m[7]]),
        payload: m[8..].to_vec(),
        checksum_ok: checksum(m) == 0,
    })
}

/// UDP datagram over IPv4 (checksum 0 = none, allowed by RFC 768 over IPv4).
#[allow(clippy::too_many_arguments)]
pub fn udp(
    buf: &mut [u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> usize {
    ethernet(buf, dst_mac, src_mac, ETHERTYPE_IPV4);
    let udp_len = 8 + payload.len();
    ipv4(buf, 17, src, dst, udp_len);
    let u = &mut buf[34..34 + udp_len];
    u[0..2].copy_from_slice(&src_port.to_be_bytes());
    u[2..4].copy_from_slice(&dst_port.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[6..8].fill(0);
    u[8..].copy_from_slice(payload);
    (34 + udp_len).max(60)
}

/// A parsed UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

pub fn parse_udp(frame: &[u8]) -> Option<Udp> {
    let (src, dst, u) = ipv4_payload(frame, 17)?;
    if u.len() < 8 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if len < 8 || len > u.len() {
        return None;
    }
    Some(Udp {
        src,
        dst,
        src_port: u16::from_be_bytes([u[0], u[1]]),
        dst_port: u16::from_be_bytes([u[2], u[3]]),
        payload: u[8..len].to_vec(),
    })
}

/// Sends one frame built by `build` and flushes.
pub fn send(queue: &mut dyn QueuePair, mut build: impl FnMut(&mut [u8]) -> usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if queue.tx_one(&mut build).unwrap() {
            break;
        }
        queue.tx_flush().unwrap();
        assert!(Instant::now() < deadline, "no transmit buffer became free within 2 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    queue.tx_flush().unwrap();
}

/// Polls `queue` until `matcher` accepts a frame or `timeout` passes. ARP requests for
/// `answer_arp_for` (our address) are answered with the queue's MAC along the way, because
/// the kernel may re-resolve us at any time.
pub fn wait_for<T>(
    queue: &mut dyn QueuePair,
    timeout: Duration,
    answer_arp_for: Option<Ipv4Addr>,
    mut matcher: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let our_mac = queue.mac_address();
    while Instant::now() < deadline {
        let mut found = None;
        let mut arp_to_answer = Vec::new();
        queue
            .rx_burst(32, &mut |frame| {
                if found.is_none() {
                    found = matcher(frame);
                }
                if let (Some(ours), Some(req)) = (answer_arp_for, parse_arp(frame)) {
                    if req.op == 1 && req.target_ip == ours {
                        arp_to_answer.push(req);
                    }
                }
            })
            .unwrap();
        for req in arp_to_answer {
            send(queue, |buf| {
                arp(
                    buf,
                    2,
                    req.sender_mac,
                    our_mac,
                    answer_arp_for.unwrap(),
                    req.sender_mac,
                    req.sender_ip,
                )
            });
        }
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// ARP request from us, expect the kernel's reply: returns the kernel's MAC.
pub fn resolve_kernel_mac(
    queue: &mut dyn QueuePair,
    our_ip: Ipv4Addr,
    kernel_ip: Ipv4Addr,
) -> Option<[u8; 6]> {
    let our_mac = queue.mac_address();
    for _attempt in 0..3 {
        send(queue, |buf| arp(buf, 1, BROADCAST, our_mac, our_ip, [0; 6], kernel_ip));
        let reply = wait_for(queue, Duration::from_secs(1), Some(our_ip), |frame| {
            parse_arp(frame)
                .filter(|a| a.op == 2 && a.sender_ip == kernel_ip && a.target_ip == our_ip)
        });
        if let Some(reply) = reply {
            return Some(reply.sender_mac);
        }
    }
    None
}

/// ICMP echo to the kernel, expect its reply with the same identifier, sequence and payload.
pub fn ping_kernel(
    queue: &mut dyn QueuePair,
    kernel_mac: [u8; 6],
    our_ip: Ipv4Addr,
    kernel_ip: Ipv4Addr,
    ident: u16,
    seq: u16,
) -> Option<EchoReply> {
    let our_mac = queue.mac_address();
    let payload: Vec<u8> = (0..56u8).map(|i| i.wrapping_mul(7) ^ seq as u8).collect();
    send(queue, |buf| {
        icmp_echo_request(buf, kernel_mac, our_mac, our_ip, kernel_ip, ident, seq, &payload)
    });
    wait_for(queue, Duration::from_secs(2), Some(our_ip), |frame| {
        parse_echo_reply(frame).filter(|r| r.ident == ident && r.seq == seq)
    })
    .filter(|reply| reply.payload == payload)
}
