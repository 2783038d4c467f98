//! Robustness against blind attacks (RFC 5961 §3-§5, §7 rate limit) and PAWS
//! (RFC 7323 §5), plus resets for segments that match no connection (RFC 9293 §3.10.7.1).

use super::*;

#[test]
fn reset_must_match_rcv_nxt_exactly() {
    let mut h = Harness::established(&plain());
    // In the window but not exact: challenge ACK (RFC 5961 §3.2).
    assert_eq!(
        h.input(seg().rst().seq(IRS + 100)),
        SegmentOutcome::Dropped(DropReason::ChallengeAck)
    );
    let c = h.out();
    assert!(c.is_pure_ack());
    assert_eq!((c.seq, c.ack), (ISS + 1, IRS + 1));
    assert_eq!(h.conn.state(), State::Established);
    // Outside the window: silently dropped.
    assert_eq!(
        h.input(seg().rst().seq(IRS + 1_000_000)),
        SegmentOutcome::Dropped(DropReason::OutOfWindow)
    );
    h.none();
    assert_eq!(h.conn.stats().challenge_acks, 1);
}

#[test]
fn syn_on_an_established_connection_draws_a_challenge_ack() {
    let mut h = Harness::established(&plain());
    assert_eq!(
        h.input(seg().syn().seq(IRS + 10)),
        SegmentOutcome::Dropped(DropReason::ChallengeAck)
    );
    assert!(h.out().is_pure_ack());
    assert_eq!(h.conn.state(), State::Established);
}

#[test]
fn unacceptable_acks_are_dropped_with_an_ack() {
    let mut h = Harness::established(&plain());
    h.conn.send(&[1u8; 100]).unwrap();
    h.out();
    // Acknowledges data never sent.
    let out = h.input(seg().ack(ISS + 500).payload(b"data"));
    assert_eq!(out, SegmentOutcome::Dropped(DropReason::BadAck));
    assert!(h.out().is_pure_ack());
    assert_eq!(h.conn.recv_queue_len(), 0, "the segment's data is discarded");
    // Older than SND.UNA - MAX.SND.WND (65535 here).
    let out = h.input(seg().ack(ISS.wrapping_sub(70_000)));
    assert_eq!(out, SegmentOutcome::Dropped(DropReason::BadAck));
    assert!(h.out().is_pure_ack());
    // Merely old (within MAX.SND.WND): the ACK is ignored, the data kept.
    assert_eq!(h.input(seg().ack(ISS).payload(b"ok")), SegmentOutcome::Accepted);
    assert_eq!(h.conn.recv_queue_len(), 2);
}

#[test]
fn challenge_acks_are_rate_limited() {
    let cfg = TcpConfig { challenge_ack_limit_per_sec: 2, ..plain() };
    let mut h = Harness::established(&cfg);
    for _ in 0..2 {
        h.input(seg().rst().seq(IRS + 100));
        assert!(h.out().is_pure_ack());
    }
    h.input(seg().rst().seq(IRS + 100));
    h.none();
    h.advance(1000);
    h.input(seg().rst().seq(IRS + 100));
    assert!(h.out().is_pure_ack());
}

#[test]
fn paws_drops_old_timestamps_but_not_resets() {
    let cfg = TcpConfig { timestamps: true, ..plain() };
    let mut h = Harness::established(&cfg);
    h.input(seg().ack(ISS + 1).ts(1000, 0).payload(b"a"));
    h.drain();
    assert_eq!(h.conn.ts_recent, 1000, "TS.Recent follows in-order segments");
    let out = h.input(seg().seq(IRS + 2).ack(ISS + 1).ts(999, 0).payload(b"b"));
    assert_eq!(out, SegmentOutcome::Dropped(DropReason::PawsRejected));
    let dup = h.out();
    assert_eq!(dup.ack, IRS + 2);
    assert_eq!(dup.options.timestamp.map(|t| t.1), Some(1000));
    assert_eq!(h.conn.recv_queue_len(), 1);
    // A newer timestamp passes; a reset is exempt from PAWS.
    assert_eq!(
        h.input(seg().seq(IRS + 2).ack(ISS + 1).ts(1001, 0).payload(b"b")),
        SegmentOutcome::Accepted
    );
    assert_eq!(h.input(seg().rst().seq(IRS + 3).ts(5, 0)), SegmentOutcome::Accepted);
    assert_eq!(h.conn.state(), State::Closed);
}

#[test]
fn out_of_order_segments_do_not_update_ts_recent() {
    let cfg = TcpConfig { timestamps: true, ..plain() };
    let mut h = Harness::established(&cfg);
    h.input(seg().seq(IRS + 1000).ack(ISS + 1).ts(50, 0).payload(b"x"));
    assert_eq!(h.conn.ts_recent, 1, "SEG.SEQ > Last.ACK.sent (RFC 7323 §4.3)");
}

#[test]
fn reset_for_segments_without_connection() {
    let s = seg().ack(777).payload(b"abc");
    let r = reset_for(&TcpRepr { payload: &s.data, ..s.repr }).unwrap();
    assert_eq!((r.flags, r.seq.0), (TcpFlags::RST, 777));
    assert_eq!((r.src_port, r.dst_port), (LOCAL_PORT, REMOTE_PORT));
    let s = seg().syn().seq(10).payload(b"abc");
    let r = reset_for(&TcpRepr { payload: &s.data, ..s.repr }).unwrap();
    assert_eq!((r.flags, r.seq.0, r.ack.0), (TcpFlags::RST | TcpFlags::ACK, 0, 14));
    assert!(reset_for(&seg().rst().repr).is_none());
}

#[test]
fn an_empty_segment_at_the_right_window_edge_is_accepted_for_its_ack() {
    let mut h = Harness::established(&plain());
    h.conn.send(&[1u8; 100]).unwrap();
    h.out();
    let rcv_nxt = IRS + 1;
    let edge = rcv_nxt + h.conn.advertised_window();
    // A peer whose window we filled up to a hole can only send pure ACKs at the edge
    // (Linux `tcp_sequence` accepts these); their ACK must count.
    assert_eq!(h.input(seg().seq(edge).ack(ISS + 101)), SegmentOutcome::Accepted);
    assert_eq!(h.conn.send_queue_len(), 0, "the data was acknowledged");
    // One past the edge is still out of window.
    let out = h.input(seg().seq(edge + 1).ack(ISS + 101));
    assert_eq!(out, SegmentOutcome::Dropped(DropReason::OutOfWindow));
}
