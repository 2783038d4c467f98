//! Closing (RFC 9293 §3.6): both orders, simultaneous close, TIME-WAIT and its reuse
//! (RFC 6191), resets, and Linux's RST on close with unread data.

use super::*;

#[test]
fn active_close_through_time_wait() {
    let mut h = Harness::established(&plain());
    h.conn.close();
    assert_eq!(h.conn.state(), State::FinWait1);
    let fin = h.out();
    assert_eq!((fin.flags, fin.seq), (TcpFlags::FIN | TcpFlags::ACK, ISS + 1));
    assert_eq!(h.conn.send(b"x"), Err(SendError::Closed));
    h.input(seg().ack(ISS + 2));
    assert_eq!(h.conn.state(), State::FinWait2);
    h.input(seg().ack(ISS + 2).fin());
    assert_eq!(h.conn.state(), State::TimeWait);
    assert_eq!(h.out().ack, IRS + 2);
    // A retransmitted FIN is acked again and restarts 2*MSL.
    h.advance(30_000);
    h.input(seg().ack(ISS + 2).fin());
    assert_eq!(h.out().ack, IRS + 2);
    h.advance(59_999);
    assert_eq!(h.conn.state(), State::TimeWait);
    h.advance(1);
    assert_eq!(h.conn.state(), State::Closed);
    assert!(h.conn.is_closed());
    assert_eq!(
        h.events(),
        [ConnectionEvent::ReadClosed, ConnectionEvent::Closed(CloseReason::Normal)]
    );
}

#[test]
fn fin_ack_of_our_fin_goes_straight_to_time_wait() {
    let mut h = Harness::established(&plain());
    h.conn.shutdown_write();
    h.out();
    h.input(seg().ack(ISS + 2).fin());
    assert_eq!(h.conn.state(), State::TimeWait);
}

#[test]
fn passive_close_through_last_ack() {
    let mut h = Harness::established(&plain());
    h.input(seg().ack(ISS + 1).fin());
    assert_eq!(h.conn.state(), State::CloseWait);
    h.out();
    // We may still send in CLOSE-WAIT.
    assert_eq!(h.conn.send(b"last"), Ok(4));
    h.conn.close();
    assert_eq!(h.conn.state(), State::LastAck);
    let d = h.out();
    assert_eq!(d.payload, b"last");
    assert!(d.has(TcpFlags::FIN), "FIN rides on the last data");
    h.input(seg().seq(IRS + 2).ack(ISS + 6));
    assert_eq!(h.conn.state(), State::Closed);
    assert!(h.conn.is_closed());
    assert_eq!(h.events().last(), Some(&ConnectionEvent::Closed(CloseReason::Normal)));
}

#[test]
fn simultaneous_close_through_closing() {
    let mut h = Harness::established(&plain());
    h.conn.shutdown_write();
    h.out();
    // The peer's FIN crosses ours and does not acknowledge it.
    h.input(seg().ack(ISS + 1).fin());
    assert_eq!(h.conn.state(), State::Closing);
    assert_eq!(h.out().ack, IRS + 2);
    h.input(seg().seq(IRS + 2).ack(ISS + 2));
    assert_eq!(h.conn.state(), State::TimeWait);
}

#[test]
fn unacked_fin_is_retransmitted() {
    let mut h = Harness::established(&plain());
    h.conn.shutdown_write();
    h.out();
    h.fire_next();
    let again = h.out();
    assert!(again.has(TcpFlags::FIN));
    assert_eq!(again.seq, ISS + 1);
}

#[test]
fn close_with_unread_data_sends_reset() {
    let mut h = Harness::established(&plain());
    h.input(seg().ack(ISS + 1).payload(b"unread"));
    h.drain();
    h.conn.close();
    let rst = h.out();
    assert_eq!(rst.flags, TcpFlags::RST | TcpFlags::ACK);
    assert_eq!(rst.seq, ISS + 1);
    assert!(h.conn.is_closed());
    assert_eq!(h.events().last(), Some(&ConnectionEvent::Closed(CloseReason::Aborted)));
}

#[test]
fn data_arriving_after_close_resets() {
    let mut h = Harness::established(&plain());
    h.conn.close();
    h.out();
    h.input(seg().ack(ISS + 2).payload(b"late"));
    assert!(h.out().has(TcpFlags::RST));
    assert_eq!(h.conn.state(), State::Closed);
}

#[test]
fn reset_from_peer_closes_and_reports() {
    let mut h = Harness::established(&plain());
    assert_eq!(h.input(seg().rst().seq(IRS + 1)), SegmentOutcome::Accepted);
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.events(), [ConnectionEvent::Closed(CloseReason::Reset)]);
    let mut buf = [0u8; 4];
    assert_eq!(h.conn.recv(&mut buf), Err(RecvError::Reset));
    assert_eq!(h.conn.send(b"x"), Err(SendError::Reset));
    h.none();
}

#[test]
fn abort_sends_reset() {
    let mut h = Harness::established(&plain());
    h.conn.abort();
    let rst = h.out();
    assert!(rst.has(TcpFlags::RST));
    assert_eq!(h.events(), [ConnectionEvent::Closed(CloseReason::Aborted)]);
    assert!(h.conn.is_closed());
}

fn time_wait(cfg: &TcpConfig) -> Harness {
    let mut h = Harness::established(cfg);
    h.conn.close();
    h.out();
    let mut fin = seg().ack(ISS + 2).fin();
    if cfg.timestamps {
        fin = fin.ts(100, 0);
    }
    h.input(fin);
    assert_eq!(h.conn.state(), State::TimeWait);
    h.drain();
    h
}

#[test]
fn time_wait_reuse_with_timestamps() {
    let cfg = TcpConfig { timestamps: true, ..plain() };
    let mut h = time_wait(&cfg);
    // Same TSval as TS.Recent: not newer, so no reuse; the SYN is answered with an ACK.
    assert_eq!(
        h.input(seg().syn().seq(1).ts(100, 0)),
        SegmentOutcome::Dropped(DropReason::InvalidState)
    );
    assert!(h.out().is_pure_ack());
    assert_eq!(h.input(seg().syn().seq(1).ts(101, 0)), SegmentOutcome::ReopenFromTimeWait);
}

#[test]
fn time_wait_reuse_without_timestamps_needs_higher_sequence() {
    let mut h = time_wait(&plain());
    assert_eq!(
        h.input(seg().syn().seq(IRS + 2)),
        SegmentOutcome::Dropped(DropReason::InvalidState)
    );
    assert_eq!(h.input(seg().syn().seq(IRS + 100_000)), SegmentOutcome::ReopenFromTimeWait);
}

#[test]
fn shutdown_in_syn_sent_closes_without_fin() {
    let mut h = Harness::client(&plain());
    h.out();
    h.conn.shutdown_write();
    assert_eq!(h.conn.state(), State::Closed);
    h.none();
}
