//! Minimal reproductions of stack bugs the simulator found, kept as regression tests. A
//! newly found bug lands here first, `#[ignore]`d with a one-line description until it is
//! fixed (`cargo test -p tcp-core --test netsim -- --ignored` runs those).

use tcp_core::Duration;
use tcp_core::tcp::{CongestionAlgorithm, TcpConfig};

use crate::app::{Response, Workload};
use crate::link::LinkParams;
use crate::sim::{Sim, SimConfig};

fn small_exchange() -> Workload {
    Workload {
        connections: 1,
        request_len: 1000,
        response: Response::Echo,
        write_chunk: 1000,
        read_chunk: 1000,
        backlog: 4,
        nodelay: false,
    }
}

fn one_ms_link() -> LinkParams {
    LinkParams { latency: Duration::from_millis(1), ..LinkParams::ideal() }
}

/// The client's first frame is its ARP request for the server. It used to be that when it
/// was lost the connection (in SYN-SENT, its SYN never handed to the wire) had no timer,
/// the ARP cache gave up after three request intervals and the connection waited forever.
/// Fixed on `stack` ("segments for an unresolved next hop wait in the ARP queue; TCP
/// timers keep running"): the SYN's retransmission asks again.
#[test]
fn a_lost_arp_request_is_retried() {
    let mut cfg = SimConfig::new(1, one_ms_link(), small_exchange());
    cfg.time_limit = Duration::from_secs(30);
    let mut sim = Sim::new(cfg);
    sim.up.lose_next(1);
    sim.run();
}

/// Same, with the server's ARP reply lost instead.
#[test]
fn a_lost_arp_reply_is_retried() {
    let mut cfg = SimConfig::new(1, one_ms_link(), small_exchange());
    cfg.time_limit = Duration::from_secs(30);
    let mut sim = Sim::new(cfg);
    sim.down.lose_next(1);
    sim.run();
}

/// Control for the two tests above: with nothing lost, dynamic ARP works.
#[test]
fn dynamic_arp_resolves_when_nothing_is_lost() {
    let cfg = SimConfig::new(1, one_ms_link(), small_exchange());
    let report = Sim::new(cfg).run();
    assert_eq!(report.client_counters.arp_requests_sent, 1);
    assert_eq!(report.server_counters.arp_replies_sent, 1);
}

/// RFC 9293 §3.7.1 (and RFC 6691): the MSS option announces the largest segment we can
/// receive, the interface MTU minus the fixed IPv4 and TCP headers. With
/// `StackConfig::mtu = 1000` and the default `TcpConfig` the SYN still announces 1460, so
/// a peer on a larger-MTU path sends segments this interface cannot take. (Between two
/// tcp-core stacks each clamps what it sends to its own MTU, which hides the problem; a
/// Linux peer would not.)
#[test]
fn syn_announces_an_mss_that_fits_the_mtu() {
    use std::net::SocketAddrV4;
    use tcp_core::Instant;
    use tcp_core::stack::{Stack, StackConfig};
    use tcp_core::wire::{Checksums, EthernetAddress, EthernetRepr, Ipv4Repr, TcpFlags, TcpRepr};

    let mut config =
        StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), crate::sim::CLIENT_IP, 24, [1; 16]);
    config.mtu = 1000;
    let mut stack = Stack::new(config);
    let now = Instant::from_secs(1);
    stack.add_neighbor(now, crate::sim::SERVER_IP, EthernetAddress([2, 0, 0, 0, 0, 2]));
    stack.connect(now, SocketAddrV4::new(crate::sim::SERVER_IP, 80), None).unwrap();
    let mut buf = [0u8; 1600];
    let n = stack.poll_transmit(now, &mut buf).expect("a SYN");
    let (_, ip) = EthernetRepr::parse(&buf[..n]).unwrap();
    let (ip, tcp) = Ipv4Repr::parse(ip, &Checksums::default()).unwrap();
    let syn = TcpRepr::parse(tcp, ip.src_addr, ip.dst_addr, &Checksums::default()).unwrap();
    assert!(syn.flags.contains(TcpFlags::SYN));
    assert_eq!(syn.options.mss, Some(1000 - 40));
}

/// The server accepts with `recv_buffer = 4096` (no window scaling): its SYN-ACK offers
/// 4096, but every later segment offers 65535. `Connection::accept_syn` leaves `rcv_adv`
/// at sequence number 0; `receive_window` takes `rcv_adv - rcv_nxt` as the window already
/// promised, which is huge whenever 0 lies "after" RCV.NXT in sequence space (half of all
/// ISNs), and the never-shrink rule then keeps offering `65535 << rcv_wscale`. A peer may
/// then send far more than the buffer holds. Active opens are not affected.
#[test]
fn passive_open_offers_no_more_window_than_its_buffer() {
    for seed in 1..=8 {
        let tcp = TcpConfig { recv_buffer: 4096, window_scale: false, ..TcpConfig::default() };
        let mut cfg = SimConfig::new(seed, one_ms_link(), small_exchange());
        cfg.client_tcp = tcp.clone();
        cfg.server_tcp = tcp;
        cfg.checks.window_within_buffer = true;
        Sim::new(cfg).run();
    }
}

/// Control: the active opener's offers stay within its buffer.
#[test]
fn active_open_offers_no_more_window_than_its_buffer() {
    for seed in 1..=8 {
        let small = TcpConfig { recv_buffer: 4096, window_scale: false, ..TcpConfig::default() };
        let mut cfg = SimConfig::new(seed, one_ms_link(), small_exchange());
        cfg.client_tcp = small;
        // The server's offers are not checked against this (large) figure.
        cfg.server_tcp = TcpConfig { recv_buffer: 1 << 30, ..TcpConfig::default() };
        cfg.checks.window_within_buffer = true;
        Sim::new(cfg).run();
    }
}

/// RFC 9293 §3.10.7.4 updates SND.WND only from a segment that passes the SND.WL1/WL2
/// test, but SND.UNA advances on any acceptable ACK, so a retransmitted (old SEQ) segment
/// that acknowledges new data moves the right edge SND.UNA + SND.WND past what the peer
/// offered. Linux avoids this by also updating the window whenever the ACK advances
/// SND.UNA (`tcp_may_update_window`). Here the client's retransmission
/// seq=3107504646 ack=405507551 win=3454 reaches the server after newer segments; the
/// server keeps its old 4096 window, now counted from 405507551, and sends 406 bytes and
/// its FIN up to 405511167 although the client offered only up to 405511005. The client
/// drops the excess and the server must retransmit it. (Found by the properties.)
#[test]
fn sender_stays_within_the_offered_window() {
    let link = LinkParams {
        latency: Duration::from_micros(14_991),
        bandwidth_bps: 1_000_000,
        queue_limit: 16384,
        loss_ppm: 9059,
        reorder_ppm: 19933,
        reorder_delay: Duration::ZERO,
        duplicate_ppm: 2492,
        corrupt_ppm: 0,
        mtu: 694,
    };
    let tcp = |send_buffer| TcpConfig {
        send_buffer,
        recv_buffer: 4096,
        window_scale: false,
        sack: true,
        timestamps: false,
        congestion: CongestionAlgorithm::NewReno,
        ..TcpConfig::default()
    };
    let workload = Workload {
        connections: 1,
        request_len: 17659,
        response: Response::Pattern(19288),
        write_chunk: 30,
        read_chunk: 134,
        backlog: 4,
        nodelay: false,
    };
    let mut cfg = SimConfig::new(3_688_641_146_997_725_064, link, workload);
    cfg.client_tcp = tcp(4578);
    cfg.server_tcp = tcp(4096);
    cfg.checks.peer_window = true;
    Sim::new(cfg).run();
}

/// Same root cause as `passive_open_offers_no_more_window_than_its_buffer`, worse
/// symptom: with this seed the client's ISN is 2147465379, so the server's RCV.NXT sits
/// just below 2^31 and its first right edge (RCV.NXT + window) just above. Compared with
/// the stale `rcv_adv = 0`, that edge counts as "before" it, so `rcv_adv` is never
/// advanced, `advertised_window()` stays 0, and every data segment is refused as outside a
/// zero window while the headers still offer the full buffer. The server acknowledges
/// RCV.NXT forever; the client retransmits until it gives up (TimedOut after ~15 minutes
/// of simulated time). Any ISN within one window below 2^31 hits this.
#[test]
fn passive_open_accepts_data_when_rcv_nxt_is_just_below_2_pow_31() {
    let cfg = SimConfig::new(7_784_349_365_214_533_827, one_ms_link(), small_exchange());
    Sim::new(cfg).run();
}
