//! Loss handling: RTO with backoff and Karn (RFC 6298), giving up, fast retransmit and
//! NewReno (RFC 5681 §3.2, RFC 6582), SACK recovery (RFC 6675), CUBIC's reduction
//! (RFC 9438 §4.6), keepalive (RFC 9293 §3.8.4) and path MTU (RFC 1191).

use super::*;
use crate::tcp::config::{CongestionAlgorithm, Keepalive};

fn newreno() -> TcpConfig {
    TcpConfig { congestion: CongestionAlgorithm::NewReno, ..plain() }
}

/// An established client that has sent `n` full segments of 1460 bytes.
fn sending(cfg: &TcpConfig, n: usize) -> Harness {
    let mut h = Harness::established(cfg);
    h.conn.set_nodelay(true);
    h.conn.send(&alloc::vec![0xabu8; 1460 * n]).unwrap();
    let segs = h.drain();
    assert_eq!(segs.len(), n);
    h
}

fn seq_of(i: u32) -> u32 {
    ISS + 1 + 1460 * i
}

#[test]
fn rto_backs_off_and_karn_ignores_retransmitted_samples() {
    let mut h = sending(&plain(), 1);
    // The handshake measured ~0 ms: RTO is the 200 ms floor, then doubles.
    let mut waits = Vec::new();
    for _ in 0..3 {
        waits.push(h.fire_next().as_millis());
        let r = h.out();
        assert_eq!((r.seq, r.payload.len()), (ISS + 1, 1460));
    }
    assert_eq!(waits, [200, 400, 800]);
    assert_eq!(h.conn.stats().cwnd, 1460, "loss window after RTO");
    assert_eq!(h.conn.stats().timeouts, 3);
    h.advance(100);
    h.input(seg().ack(seq_of(1)));
    // Karn: the ACK of a retransmitted segment gives no sample; backoff is cleared.
    assert_eq!(h.conn.stats().srtt, Some(Duration::ZERO));
    assert_eq!(h.conn.stats().rto, Duration::from_millis(200));
}

#[test]
fn rtt_is_measured_on_new_data() {
    let mut h = sending(&plain(), 1);
    h.advance(150);
    h.input(seg().ack(seq_of(1)));
    // SRTT = 7/8*0 + 1/8*150 ms.
    assert_eq!(h.conn.stats().srtt, Some(Duration::from_micros(18_750)));
}

#[test]
fn gives_up_after_max_retransmits() {
    let cfg = TcpConfig { max_retransmits: 3, ..plain() };
    let mut h = sending(&cfg, 1);
    for _ in 0..3 {
        h.fire_next();
        h.out();
    }
    h.fire_next();
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.events(), [ConnectionEvent::Closed(CloseReason::TimedOut)]);
    assert_eq!(h.conn.send(b"x"), Err(SendError::TimedOut));
    h.none();
}

#[test]
fn three_dup_acks_trigger_fast_retransmit_and_newreno_partial_acks() {
    let mut h = sending(&newreno(), 6);
    let cwnd_before = h.conn.stats().cwnd;
    for i in 0..2 {
        h.input(seg().ack(seq_of(0)));
        h.none();
        assert_eq!(h.conn.dup_acks, i + 1);
    }
    h.input(seg().ack(seq_of(0)));
    let r = h.out();
    assert_eq!((r.seq, r.payload.len()), (seq_of(0), 1460));
    let stats = h.conn.stats();
    assert_eq!(stats.fast_retransmits, 1);
    // ssthresh = FlightSize/2; cwnd = ssthresh + 3*SMSS (RFC 6582 §3.2 step 3).
    assert_eq!(stats.ssthresh, 6 * 1460 / 2);
    assert_eq!(stats.cwnd, stats.ssthresh + 3 * 1460);
    assert!(stats.cwnd < cwnd_before);
    // Partial ACK: the next hole is retransmitted at once.
    h.input(seg().ack(seq_of(2)));
    let r = h.out();
    assert_eq!(r.seq, seq_of(2));
    // Full ACK: recovery ends with cwnd = ssthresh.
    h.input(seg().ack(seq_of(6)));
    assert!(h.conn.recovery.is_none());
    assert_eq!(h.conn.stats().cwnd, 3 * 1460);
}

#[test]
fn sack_recovery_retransmits_only_the_holes() {
    let cfg = TcpConfig { sack: true, congestion: CongestionAlgorithm::NewReno, ..plain() };
    let mut h = sending(&cfg, 8);
    // Segments 0 and 2 are lost; 1 and 3..6 arrive. Duplicate ACKs carry SACK blocks.
    h.input(seg().ack(seq_of(0)).sack(&[(seq_of(1), seq_of(2))]));
    h.none();
    h.input(seg().ack(seq_of(0)).sack(&[(seq_of(3), seq_of(4)), (seq_of(1), seq_of(2))]));
    h.none();
    // Three SACKed segments above segment 0: lost (RFC 6675 IsLost) before 3 dup ACKs.
    h.input(seg().ack(seq_of(0)).sack(&[(seq_of(3), seq_of(5)), (seq_of(1), seq_of(2))]));
    let first = h.out();
    assert_eq!(first.seq, seq_of(0));
    assert_eq!(h.conn.stats().fast_retransmits, 1);
    h.input(seg().ack(seq_of(0)).sack(&[(seq_of(3), seq_of(6)), (seq_of(1), seq_of(2))]));
    let sent = h.drain();
    // Segment 2 is now lost too; segment 1 and 3..5 are never resent.
    assert_eq!(sent.first().map(|s| s.seq), Some(seq_of(2)));
    assert!(sent.iter().all(|s| s.seq != seq_of(1) && s.seq != seq_of(3)));
    assert_eq!(h.conn.stats().cwnd, 4 * 1460);
    // A D-SACK is counted but does not inflate the scoreboard.
    let sacked = h.conn.scoreboard.sacked_bytes();
    h.input(seg().ack(seq_of(0)).sack(&[(seq_of(1), seq_of(2)), (seq_of(1), seq_of(2))]));
    assert_eq!(h.conn.stats().dsacks, 1);
    assert_eq!(h.conn.scoreboard.sacked_bytes(), sacked);
    h.input(seg().ack(seq_of(8)));
    assert!(h.conn.recovery.is_none());
}

#[test]
fn cubic_reduces_to_seventy_percent_and_grows_back() {
    let mut h = sending(&plain(), 10);
    for _ in 0..3 {
        h.input(seg().ack(seq_of(0)));
    }
    h.drain();
    let s = h.conn.stats();
    assert_eq!(s.ssthresh, 10 * 1460 * 7 / 10);
    h.input(seg().ack(seq_of(10)));
    let after_recovery = h.conn.stats().cwnd;
    assert_eq!(after_recovery, s.ssthresh);
    // Congestion avoidance keeps growing the window as ACKs arrive over time, while the
    // sender keeps it full.
    for _ in 0..50 {
        h.advance(100);
        h.conn.send(&alloc::vec![0u8; 20 * 1460]).unwrap();
        assert!(!h.drain().is_empty());
        h.input(seg().ack(h.conn.snd_max.0));
    }
    assert!(h.conn.stats().cwnd > after_recovery);
}

/// RFC 7661 §4.1 (Linux `tcp_is_cwnd_limited`): ACKs grow cwnd only while the sender uses
/// it. A request/response exchange that never fills the window leaves it alone, in slow
/// start and in congestion avoidance; once the application sends more than fits, the
/// window grows again.
#[test]
fn cwnd_grows_only_while_the_sender_is_cwnd_limited() {
    for ssthresh in [u32::MAX, 5 * 1460] {
        let mut h = sending(&newreno(), 1);
        h.conn.cc.ssthresh = ssthresh;
        let initial = h.conn.stats().cwnd;
        h.input(seg().ack(seq_of(1)));
        // Application-limited: one segment at a time, acknowledged before the next.
        for _ in 0..100 {
            h.advance(10);
            h.conn.send(&[0u8; 1460]).unwrap();
            assert_eq!(h.drain().len(), 1);
            h.input(seg().ack(h.conn.snd_max.0));
        }
        assert_eq!(h.conn.stats().cwnd, initial, "ssthresh {ssthresh}: grew while idle");
        // Window-limited: more queued than cwnd lets out, so the window grows.
        for _ in 0..10 {
            h.advance(10);
            h.conn.send(&alloc::vec![0u8; 40 * 1460]).unwrap();
            h.drain();
            h.input(seg().ack(h.conn.snd_max.0));
        }
        assert!(h.conn.stats().cwnd > initial, "ssthresh {ssthresh}: did not grow when used");
    }
}

#[test]
fn keepalive_probes_then_gives_up_with_reset() {
    let mut h = Harness::established(&plain());
    let k =
        Keepalive { idle: Duration::from_secs(10), interval: Duration::from_secs(2), probes: 2 };
    h.conn.set_keepalive(Some(k));
    h.none();
    assert_eq!(h.fire_next().as_secs(), 10);
    let probe = h.out();
    assert!(probe.is_pure_ack());
    assert_eq!(probe.seq, ISS, "SND.NXT - 1, no data");
    // An answer restarts the idle period.
    h.input(seg().ack(ISS + 1));
    assert_eq!(h.fire_next().as_secs(), 10);
    h.out();
    assert_eq!(h.fire_next().as_secs(), 2);
    h.out();
    assert_eq!(h.fire_next().as_secs(), 2);
    let rst = h.out();
    assert!(rst.has(TcpFlags::RST));
    assert_eq!(h.events(), [ConnectionEvent::Closed(CloseReason::TimedOut)]);
}

#[test]
fn path_mtu_drop_resends_smaller_segments_without_congestion_response() {
    let mut h = sending(&plain(), 2);
    let cwnd = h.conn.stats().cwnd;
    h.conn.handle_path_mtu(1040, h.now);
    assert_eq!(h.conn.stats().send_mss, 1000);
    let again = h.drain();
    assert_eq!(again.iter().map(|s| s.payload.len()).collect::<Vec<_>>(), [1000, 1000, 920]);
    assert_eq!(again[0].seq, ISS + 1);
    assert_eq!(h.conn.stats().cwnd, cwnd);
    // A larger MTU report is ignored.
    h.conn.handle_path_mtu(9000, h.now);
    assert_eq!(h.conn.stats().send_mss, 1000);
}
