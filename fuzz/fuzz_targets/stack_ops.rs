//! One stack fed an arbitrary sequence of frames, time steps and API calls. Besides "no
//! panic", every frame the stack emits must parse back, fit the MTU and come from our
//! address, and time-driven work must terminate.
#![no_main]

use core::net::{Ipv4Addr, SocketAddrV4};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tcp_core::stack::{Stack, StackConfig};
use tcp_core::wire::ethernet::EthernetRepr;
use tcp_core::wire::ipv4::Ipv4Repr;
use tcp_core::wire::{Checksums, EthernetAddress};
use tcp_core::{Duration, Instant};

const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw bytes as a frame.
    Frame(Vec<u8>),
    /// A TCP segment from the peer with fuzzer-chosen header fields, wrapped in valid
    /// Ethernet and IPv4 headers so it reaches the TCP engine.
    Segment { sport: u8, dport: u8, seq: u32, ack: u32, flags: u8, window: u16, options: Vec<u8>, payload: Vec<u8> },
    Advance(u16),
    Listen(u8),
    Connect(u8),
    Accept(u8),
    Send(u8, Vec<u8>),
    Recv(u8, u16),
    Close(u8),
    Abort(u8),
    Shutdown(u8),
    NoDelay(u8, bool),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut stack = Stack::new(StackConfig::new(MAC, IP, 24, [3; 16]));
    let mut now = Instant::from_secs(1);
    stack.add_neighbor(now, PEER, PEER_MAC);
    let mut listeners = Vec::new();
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 2048];
    for op in ops.into_iter().take(256) {
        match op {
            Op::Frame(bytes) => stack.handle_frame(now, &bytes),
            Op::Segment { sport, dport, seq, ack, flags, window, options, payload } => {
                let frame = segment_frame(sport, dport, seq, ack, flags, window, &options, &payload);
                stack.handle_frame(now, &frame);
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms));
                stack.handle_timeout(now);
            }
            Op::Listen(p) => {
                if let Ok(l) = stack.listen(SocketAddrV4::new(IP, 1 + u16::from(p % 4)), 4) {
                    listeners.push(l);
                }
            }
            Op::Connect(p) => {
                if let Ok(s) = stack.connect(now, SocketAddrV4::new(PEER, 1 + u16::from(p % 4)), None) {
                    sockets.push(s);
                }
            }
            Op::Accept(i) => {
                if let Some(&l) = listeners.get(usize::from(i) % listeners.len().max(1)) {
                    if let Ok((s, _)) = stack.accept(l) {
                        sockets.push(s);
                    }
                }
            }
            Op::Send(i, data) => {
                if let Some(&s) = pick(&sockets, i) {
                    let _ = stack.send(s, &data);
                }
            }
            Op::Recv(i, n) => {
                if let Some(&s) = pick(&sockets, i) {
                    let mut out = vec![0u8; usize::from(n)];
                    let _ = stack.recv(s, &mut out);
                }
            }
            Op::Close(i) => {
                if let Some(&s) = pick(&sockets, i) {
                    let _ = stack.close(s);
                }
            }
            Op::Abort(i) => {
                if let Some(&s) = pick(&sockets, i) {
                    let _ = stack.abort(s);
                }
            }
            Op::Shutdown(i) => {
                if let Some(&s) = pick(&sockets, i) {
                    let _ = stack.shutdown_write(s);
                }
            }
            Op::NoDelay(i, on) => {
                if let Some(&s) = pick(&sockets, i) {
                    let _ = stack.set_nodelay(s, on);
                }
            }
        }
        // Drain output; a bounded number of frames per step (no transmit loop may spin).
        let mut frames = 0;
        while let Some(n) = stack.poll_transmit(now, &mut buf) {
            check_frame(&buf[..n]);
            frames += 1;
            assert!(frames < 10_000, "poll_transmit never returned None");
        }
        while stack.poll_event().is_some() {}
        if let Some(t) = stack.poll_timeout() {
            assert!(t > Instant::ZERO);
        }
    }
    // Let every timer run out: all connections must eventually be freed once closed.
    for s in sockets {
        let _ = stack.abort(s);
    }
    for l in listeners {
        stack.close_listener(l);
    }
    for _ in 0..10_000 {
        while stack.poll_transmit(now, &mut buf).is_some() {}
        match stack.poll_timeout() {
            Some(t) => {
                now = t.max(now);
                stack.handle_timeout(now);
            }
            None => break,
        }
    }
    while stack.poll_transmit(now, &mut buf).is_some() {}
    assert_eq!(stack.socket_count(), 0, "every aborted socket is eventually freed");
});

fn pick<T>(v: &[T], i: u8) -> Option<&T> {
    v.get(usize::from(i) % v.len().max(1))
}

fn check_frame(frame: &[u8]) {
    let (eth, payload) = EthernetRepr::parse(frame).expect("stack emits valid Ethernet");
    assert_eq!(eth.src_addr, MAC);
    if let Ok((ip, _)) = Ipv4Repr::parse(payload, &Checksums::default()) {
        assert_eq!(ip.src_addr, IP);
        assert!(20 + ip.payload_len <= 1500, "frame exceeds the MTU");
    }
}

#[allow(clippy::too_many_arguments)]
fn segment_frame(sport: u8, dport: u8, seq: u32, ack: u32, flags: u8, window: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let opts = &options[..options.len().min(40) & !3];
    let tcp_len = 20 + opts.len() + payload.len().min(1400);
    let mut f = vec![0u8; 34 + tcp_len];
    f[0..6].copy_from_slice(&MAC.0);
    f[6..12].copy_from_slice(&PEER_MAC.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = Ipv4Repr {
        src_addr: PEER,
        dst_addr: IP,
        protocol: tcp_core::wire::IpProtocol::Tcp,
        payload_len: tcp_len,
        ttl: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_fragment: true,
        more_fragments: false,
        fragment_offset: 0,
    };
    ip.emit(&mut f[14..], &Checksums::default()).expect("emit IPv4");
    let t = &mut f[34..];
    // High bit set: aim at the stack's active opens (peer ports 1-4, ephemeral local ports
    // from 32768); clear: at its listeners (local ports 1-4).
    let sport = if sport & 0x80 != 0 { 1 + u16::from(sport % 4) } else { 1000 + u16::from(sport % 4) };
    let dport = if dport & 0x80 != 0 { 32768 + u16::from(dport % 4) } else { 1 + u16::from(dport % 4) };
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = (((20 + opts.len()) / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    t[20..20 + opts.len()].copy_from_slice(opts);
    let plen = tcp_len - 20 - opts.len();
    t[20 + opts.len()..].copy_from_slice(&payload[..plen]);
    // Fill in a correct checksum so the segment is not dropped before the state machine.
    let sum = tcp_core::wire::checksum::combine(&[
        tcp_core::wire::checksum::pseudo_header_ipv4(PEER, IP, tcp_core::wire::IpProtocol::Tcp, tcp_len as u32),
        tcp_core::wire::checksum::data(t),
    ]);
    t[16..18].copy_from_slice(&(!sum).to_be_bytes());
    f
}
