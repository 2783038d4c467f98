//! Round trips of real and random states, and decoding of hostile input.

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use proptest::prelude::*;

use super::*;
use crate::stack::{SocketHandle, Stack, StackConfig};
use crate::tcp::config::{CongestionAlgorithm, Keepalive, TcpConfig};
use crate::tcp::connection::{CloseReason, ConnectionEvent, ConnectionStats, FourTuple, State};
use crate::tcp::seq::SeqNumber;
use crate::time::{Duration, Instant};
use crate::wire::EthernetAddress;
use crate::wire::{SackBlock, SackBlocks, TcpFlags, TcpOptions, TcpRepr};

const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn stack(last: u8, ip: Ipv4Addr) -> Stack {
    Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, last]), ip, 24, [7; 16]))
}

/// Moves frames between two stacks until both are quiet.
fn exchange(a: &mut Stack, b: &mut Stack, now: Instant) {
    let mut buf = vec![0u8; 1600];
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(n) = a.poll_transmit(now, &mut buf) {
            b.handle_frame(now, &buf[..n]);
            moved = true;
        }
        while let Some(n) = b.poll_transmit(now, &mut buf) {
            a.handle_frame(now, &buf[..n]);
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("never quiet");
}

fn read_all(s: &mut Stack, h: SocketHandle) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.recv(h, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

/// A connection exported mid-stream (unread received bytes, unacknowledged sent bytes,
/// out-of-order data), encoded, decoded and imported by another stack carries on: both
/// directions deliver every byte once and in order, and nobody sends a reset.
#[test]
fn a_decoded_connection_carries_on_in_another_stack() {
    let mut now = Instant::from_secs(1);
    let (mut a, mut b) = (stack(0xa, IP_A), stack(0xb, IP_B));
    a.add_neighbor(now, IP_B, EthernetAddress([2, 0, 0, 0, 0, 0xb]));
    b.add_neighbor(now, IP_A, EthernetAddress([2, 0, 0, 0, 0, 0xa]));
    let l = b.listen(SocketAddrV4::new(IP_B, 80), 8).unwrap();
    let c = a.connect(now, SocketAddrV4::new(IP_B, 80), None).unwrap();
    exchange(&mut a, &mut b, now);
    let (s, _) = b.accept(l).unwrap();

    let to_b = pattern(20_000, 1);
    let to_a = pattern(30_000, 2);
    assert_eq!(a.send(c, &to_b[..8_000]).unwrap(), 8_000);
    // The first of A's segments is lost and B's answers too (before A could repair the
    // loss): B holds out-of-order data it cannot deliver yet.
    let mut buf = vec![0u8; 1600];
    let mut first = true;
    while let Some(n) = a.poll_transmit(now, &mut buf) {
        if !core::mem::take(&mut first) {
            b.handle_frame(now, &buf[..n]);
        }
    }
    while b.poll_transmit(now, &mut buf).is_some() {}
    let sent_b = b.send(s, &to_a).unwrap();

    let state = b.export_connection(s).unwrap();
    assert!(!state.out_of_order.is_empty(), "B holds out-of-order data");
    assert!(!state.send_buffer.is_empty(), "B has unacknowledged data");
    let mut wire = Vec::new();
    state.encode(&mut wire);
    let decoded = ConnectionState::decode(&wire).unwrap();
    assert_eq!(format!("{decoded:?}"), format!("{state:?}"));

    let mut b2 = stack(0xb, IP_B);
    b2.add_neighbor(now, IP_A, EthernetAddress([2, 0, 0, 0, 0, 0xa]));
    let s2 = b2.import_connection(decoded).unwrap();
    assert_eq!(a.send(c, &to_b[8_000..]).unwrap(), 12_000);
    let mut got_b = Vec::new();
    let mut got_a = Vec::new();
    let mut sent_b_total = sent_b;
    for _ in 0..200 {
        now += Duration::from_millis(100);
        a.handle_timeout(now);
        b2.handle_timeout(now);
        exchange(&mut a, &mut b2, now);
        got_b.extend(read_all(&mut b2, s2));
        got_a.extend(read_all(&mut a, c));
        if sent_b_total < to_a.len() {
            sent_b_total += b2.send(s2, &to_a[sent_b_total..]).unwrap();
        }
        if got_b.len() == to_b.len() && got_a.len() == to_a.len() {
            break;
        }
    }
    assert_eq!(got_b, to_b, "A to B: every byte once, in order");
    assert_eq!(got_a, to_a, "B to A: every byte once, in order");
    assert_eq!(a.counters().tcp_resets_sent + b2.counters().tcp_resets_sent, 0);
}

/// xorshift64*: enough randomness to fill every field from one proptest seed.
struct Fill(u64);

impl Fill {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn u8(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn seq(&mut self) -> SeqNumber {
        SeqNumber(self.u32())
    }
    fn instant(&mut self) -> Instant {
        Instant::from_nanos(self.next())
    }
    fn duration(&mut self) -> Duration {
        Duration::new(self.next() >> 20, self.u32() % 1_000_000_000)
    }
    fn some<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.bool() { Some(f(self)) } else { None }
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % (max + 1);
        (0..n).map(|_| self.u8()).collect()
    }
    fn reason(&mut self) -> CloseReason {
        [CloseReason::Normal, CloseReason::Reset, CloseReason::TimedOut, CloseReason::Aborted]
            [(self.next() % 4) as usize]
    }
    fn keepalive(&mut self) -> Keepalive {
        Keepalive { idle: self.duration(), interval: self.duration(), probes: self.u8() }
    }
}

/// A random state that keeps the invariants `decode` checks.
fn random_state(seed: u64) -> ConnectionState {
    let mut f = Fill(seed | 1);
    let min_rto = f.duration();
    let config = TcpConfig {
        mss: f.u16().max(1),
        send_buffer: 4096,
        recv_buffer: 4096,
        window_scale: f.bool(),
        sack: f.bool(),
        timestamps: f.bool(),
        congestion: if f.bool() {
            CongestionAlgorithm::Cubic
        } else {
            CongestionAlgorithm::NewReno
        },
        initial_rto: f.duration(),
        min_rto,
        max_rto: min_rto + Duration::from_secs(f.next() % 1000),
        delayed_ack: f.duration(),
        time_wait: f.duration(),
        syn_retries: f.u8(),
        max_retransmits: f.u8(),
        initial_cwnd_segments: f.u32(),
        nodelay: f.bool(),
        keepalive: f.some(Fill::keepalive),
        challenge_ack_limit_per_sec: f.u32(),
    };
    let states = [
        State::Closed,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];
    let snd_una = f.seq();
    let in_flight = f.u32() % 100_000;
    let snd_max = snd_una + in_flight;
    let snd_nxt = snd_una + f.u32() % (in_flight + 1);
    let addr = |f: &mut Fill| SocketAddrV4::new(Ipv4Addr::from(f.u32()), f.u16());
    let mut sack = SackBlocks::EMPTY;
    for _ in 0..f.next() % 5 {
        sack.push(SackBlock { left: f.seq(), right: f.seq() });
    }
    let control = TcpRepr {
        src_port: f.u16(),
        dst_port: f.u16(),
        seq: f.seq(),
        ack: f.seq(),
        flags: TcpFlags::from_bits_retain(f.u8()),
        window: f.u16(),
        urgent: f.u16(),
        options: TcpOptions {
            mss: f.some(Fill::u16),
            window_scale: f.some(Fill::u8),
            sack_permitted: f.bool(),
            timestamp: f.some(|f| (f.u32(), f.u32())),
            sack,
        },
        payload: &[],
    };
    let events = (0..f.next() % 6)
        .map(|_| match f.next() % 5 {
            0 => ConnectionEvent::Established,
            1 => ConnectionEvent::Readable,
            2 => ConnectionEvent::Writable,
            3 => ConnectionEvent::ReadClosed,
            _ => ConnectionEvent::Closed(f.reason()),
        })
        .collect();
    ConnectionState {
        tuple: FourTuple { local: addr(&mut f), remote: addr(&mut f) },
        state: states[(f.next() % states.len() as u64) as usize],
        iss: f.seq(),
        snd_una,
        snd_nxt,
        snd_max,
        snd_wnd: f.u32(),
        max_snd_wnd: f.u32(),
        snd_wl1: f.seq(),
        snd_wl2: f.seq(),
        send_buffer: f.bytes(4096),
        send_start: f.seq(),
        fin_queued: f.bool(),
        irs: f.seq(),
        rcv_nxt: f.seq(),
        rcv_adv: f.seq(),
        recv_buffer: f.bytes(4096),
        out_of_order: (0..f.next() % 4)
            .map(|_| (f.seq(), f.bytes(300)))
            .filter(|(_, d)| !d.is_empty())
            .collect(),
        out_of_order_fin: f.some(Fill::seq),
        fin_received: f.bool(),
        snd_mss: f.u16().max(1),
        window_scale: f.some(|f| ((f.u8() % 15), (f.u8() % 15))),
        sack: f.bool(),
        timestamps: f.bool(),
        ts_recent: f.u32(),
        ts_recent_stamp: f.instant(),
        ts_offset: f.u32(),
        last_ack_sent: f.seq(),
        rcv_mss_seen: f.u32(),
        ack_pending: f.bool(),
        pending_control: f.some(|_| control),
        delayed_ack_deadline: f.some(Fill::instant),
        quickacks: f.u32(),
        retransmit_deadline: f.some(Fill::instant),
        retransmits: f.u8(),
        srtt: f.some(Fill::duration),
        rttvar: f.duration(),
        base_rto: f.duration(),
        rto_backoff: f.u32(),
        rtt_probe: f.some(|f| (f.seq(), f.instant())),
        congestion: if f.bool() {
            CongestionAlgorithm::Cubic
        } else {
            CongestionAlgorithm::NewReno
        },
        cwnd: f.u32(),
        ssthresh: f.u32(),
        cwnd_limited: f.bool(),
        max_in_flight: f.u32(),
        cwnd_window_end: f.seq(),
        cubic_w_max: f.u32(),
        cubic_epoch_start: f.some(Fill::instant),
        cubic_k_ms: f.next(),
        cubic_w_est: f.u32(),
        growth_credit: f.next(),
        dup_acks: f.u32(),
        recovery: f.some(|f| (f.seq(), f.seq())),
        recover: f.seq(),
        retransmit_head: f.bool(),
        sacked: (0..f.next() % 4)
            .map(|_| {
                let l = f.seq();
                (l, l + (f.u32() % 10_000 + 1))
            })
            .collect(),
        syn_retransmitted: f.bool(),
        persist_deadline: f.some(Fill::instant),
        persist_backoff: f.u32(),
        persist_unanswered: f.u8(),
        persist_probe_due: f.bool(),
        keepalive: f.some(Fill::keepalive),
        keepalive_deadline: f.some(Fill::instant),
        keepalive_probes: f.u8(),
        keepalive_probe_due: f.bool(),
        close_deadline: f.some(Fill::instant),
        challenge_window_start: f.instant(),
        challenge_count: f.u32(),
        nodelay: f.bool(),
        cork: f.bool(),
        push_until: f.some(Fill::seq),
        app_closed: f.bool(),
        write_blocked: f.bool(),
        close_reason: f.some(Fill::reason),
        pending_events: events,
        stats: ConnectionStats {
            segments_sent: f.next(),
            segments_received: f.next(),
            retransmits: f.next(),
            fast_retransmits: f.next(),
            timeouts: f.next(),
            dup_acks: f.next(),
            dsacks: f.next(),
            challenge_acks: f.next(),
            dropped: f.next(),
            srtt: f.some(Fill::duration),
            rto: f.duration(),
            cwnd: f.u32(),
            ssthresh: f.u32(),
            send_mss: f.u32(),
        },
        config,
    }
}

fn encoded(s: &ConnectionState) -> Vec<u8> {
    let mut v = Vec::new();
    s.encode(&mut v);
    v
}

#[test]
fn framing_errors_are_named() {
    let wire = encoded(&random_state(7));
    let mut bad = wire.clone();
    bad[0] = b'X';
    assert_eq!(ConnectionState::decode(&bad).err(), Some(CodecError::BadMagic));
    let mut bad = wire.clone();
    bad[4] = 2;
    assert_eq!(ConnectionState::decode(&bad).err(), Some(CodecError::UnsupportedVersion(2)));
    let mut longer = wire.clone();
    longer.push(0);
    assert_eq!(ConnectionState::decode(&longer).err(), Some(CodecError::TrailingBytes));
    for cut in 0..wire.len() {
        assert!(
            matches!(ConnectionState::decode(&wire[..cut]), Err(CodecError::Truncated(_))),
            "a prefix of {cut} bytes is truncated"
        );
    }
}

#[test]
fn impossible_states_are_refused() {
    let base = random_state(11);
    let mut listen = base.clone();
    listen.state = State::Listen;
    let mut shift = base.clone();
    shift.window_scale = Some((15, 0));
    let mut big = base.clone();
    big.recv_buffer = vec![0; base.config.recv_buffer + 1];
    let mut order = base.clone();
    order.snd_nxt = order.snd_max + 1u32;
    let mut sack = base.clone();
    sack.sacked = vec![(SeqNumber(10), SeqNumber(10))];
    let mut rto = base.clone();
    rto.config.max_rto = Duration::ZERO;
    rto.config.min_rto = Duration::from_secs(1);
    for (name, s) in [
        ("listen", listen),
        ("shift", shift),
        ("buffer", big),
        ("order", order),
        ("sack", sack),
        ("rto", rto),
    ] {
        assert!(
            matches!(ConnectionState::decode(&encoded(&s)), Err(CodecError::Inconsistent(_))),
            "{name}"
        );
    }
    let mut wire = encoded(&base);
    // The first config boolean (window_scale) sits after mss (2) and two buffer sizes.
    wire[HEADER_LEN + 18] = 2;
    assert_eq!(
        ConnectionState::decode(&wire).err(),
        Some(CodecError::InvalidValue("config window_scale"))
    );
    assert!(CodecError::BadMagic.to_string().contains("magic"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every valid state survives the round trip field for field, and re-encodes to the
    /// same bytes.
    #[test]
    fn round_trip(seed in any::<u64>()) {
        let state = random_state(seed);
        let wire = encoded(&state);
        let back = ConnectionState::decode(&wire).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{state:?}"));
        prop_assert_eq!(encoded(&back), wire);
    }

    /// Arbitrary bytes never make decode panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = ConnectionState::decode(&bytes);
        let mut framed = Vec::from(CODEC_MAGIC);
        framed.extend_from_slice(&CODEC_VERSION.to_le_bytes());
        framed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        framed.extend_from_slice(&bytes);
        let _ = ConnectionState::decode(&framed);
    }

    /// Valid encodings with a few bytes changed decode to a valid state or an error,
    /// never a panic, and what decodes re-encodes to exactly the input.
    #[test]
    fn mutated_encodings_never_panic(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8),
    ) {
        let mut wire = encoded(&random_state(seed));
        for (at, v) in edits {
            let at = usize::from(at) % wire.len();
            wire[at] = v;
        }
        if let Ok(s) = ConnectionState::decode(&wire) {
            prop_assert_eq!(encoded(&s), wire);
        }
    }
}
