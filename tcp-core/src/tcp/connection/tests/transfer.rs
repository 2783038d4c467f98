//! Data transfer: ACK policy (RFC 9293 §3.8.6.3, RFC 5681 §4.2), Nagle and cork
//! (§3.7.4), silly-window avoidance (§3.8.6.2), persist (§3.8.6.1), window scaling
//! (RFC 7323 §2), out-of-order data and SACK blocks (RFC 2018 §4, RFC 2883).

use super::*;

/// Feeds `n` in-order full segments of 1000 bytes starting at the peer's next sequence.
fn feed(h: &mut Harness, start: u32, n: u32) -> u32 {
    let mut seq = start;
    for _ in 0..n {
        assert_eq!(h.input(seg().seq(seq).ack(ISS + 1).len(1000)), SegmentOutcome::Accepted);
        seq += 1000;
    }
    seq
}

#[test]
fn first_segments_are_acked_at_once_then_delayed_up_to_40ms() {
    let mut h = Harness::established(&plain());
    // Quick-ACK mode at connection start: 16 immediate ACKs.
    let mut seq = IRS + 1;
    for _ in 0..16 {
        seq = feed(&mut h, seq, 1);
        let a = h.out();
        assert_eq!(a.ack, seq);
    }
    seq = feed(&mut h, seq, 1);
    h.none();
    h.advance(39);
    h.none();
    h.advance(1);
    assert_eq!(h.out().ack, seq, "delayed ACK fires at 40 ms");
    // Every second full segment is acknowledged at once.
    seq = feed(&mut h, seq, 1);
    h.none();
    seq = feed(&mut h, seq, 1);
    assert_eq!(h.out().ack, seq);
    h.none();
}

#[test]
fn out_of_order_data_is_acked_immediately_with_sack_blocks_and_reassembled() {
    let cfg = TcpConfig { sack: true, ..plain() };
    let mut h = Harness::established(&cfg);
    let base = IRS + 1;
    h.input(seg().seq(base + 1000).ack(ISS + 1).len(1000));
    let a = h.out();
    assert_eq!(a.ack, base);
    assert_eq!(a.sack_blocks(), [(base + 1000, base + 2000)]);
    h.input(seg().seq(base + 3000).ack(ISS + 1).len(500));
    // The most recent block first (RFC 2018 §4).
    assert_eq!(h.out().sack_blocks(), [(base + 3000, base + 3500), (base + 1000, base + 2000)]);
    // A duplicate of held data is reported as D-SACK, first.
    h.input(seg().seq(base + 1000).ack(ISS + 1).len(1000));
    assert_eq!(h.out().sack_blocks()[0], (base + 1000, base + 2000));
    // Filling the first hole delivers 2000 bytes and is acked at once.
    h.input(seg().seq(base).ack(ISS + 1).len(1000));
    let a = h.out();
    assert_eq!(a.ack, base + 2000);
    assert_eq!(a.sack_blocks(), [(base + 3000, base + 3500)]);
    assert_eq!(h.conn.recv_queue_len(), 2000);
    let mut buf = [0u8; 4000];
    assert_eq!(h.conn.recv(&mut buf), Ok(2000));
    assert_eq!(buf[999], (999 % 256) as u8);
    assert_eq!(buf[1000], 0, "second segment starts its own pattern");
}

#[test]
fn old_duplicate_data_draws_dsack() {
    let cfg = TcpConfig { sack: true, ..plain() };
    let mut h = Harness::established(&cfg);
    let base = IRS + 1;
    feed(&mut h, base, 1);
    h.out();
    // The same segment again: below RCV.NXT, out of window, acked with D-SACK.
    assert_eq!(
        h.input(seg().seq(base).ack(ISS + 1).len(1000)),
        SegmentOutcome::Dropped(DropReason::OutOfWindow)
    );
    let a = h.out();
    assert_eq!(a.ack, base + 1000);
    // RFC 9293 drops the segment before its text is seen; only the ACK is sent.
    assert!(a.is_pure_ack());
}

#[test]
fn nagle_holds_small_segments_while_data_is_unacked() {
    let mut h = Harness::established(&plain());
    h.conn.send(b"a").unwrap();
    let first = h.out();
    assert_eq!(first.payload, b"a");
    assert!(first.has(TcpFlags::PSH));
    h.conn.send(b"bc").unwrap();
    h.none();
    h.conn.send(b"d").unwrap();
    h.none();
    h.input(seg().ack(ISS + 2));
    assert_eq!(h.out().payload, b"bcd");
    // A full segment goes out regardless.
    h.conn.send(&[7u8; 1500]).unwrap();
    let full = h.out();
    assert_eq!(full.payload.len(), 1460);
    h.none();
}

#[test]
fn nodelay_sends_small_segments_at_once() {
    let mut h = Harness::established(&plain());
    h.conn.set_nodelay(true);
    h.conn.send(b"a").unwrap();
    h.out();
    h.conn.send(b"b").unwrap();
    assert_eq!(h.out().payload, b"b");
}

#[test]
fn cork_holds_partial_segments_until_full_or_uncorked() {
    let mut h = Harness::established(&plain());
    h.conn.set_cork(true);
    h.conn.send(&[1u8; 1000]).unwrap();
    h.none();
    h.conn.send(&[2u8; 1000]).unwrap();
    assert_eq!(h.out().payload.len(), 1460);
    h.none();
    h.conn.set_cork(false);
    assert_eq!(h.out().payload.len(), 540);
}

#[test]
fn send_window_and_zero_window_probing_with_backoff() {
    let mut h = Harness::established(&plain());
    h.input(seg().ack(ISS + 1).win(3000));
    h.conn.send(&[0u8; 5000]).unwrap();
    let segs = h.drain();
    // Two full segments; the 80-byte tail would be a silly window (RFC 9293 §3.8.6.2.1).
    assert_eq!(segs.iter().map(|s| s.payload.len()).collect::<Vec<_>>(), [1460, 1460]);
    // The peer acks everything but closes its window.
    h.input(seg().ack(ISS + 2921).win(0));
    h.none();
    let mut waits = Vec::new();
    for _ in 0..3 {
        waits.push(h.fire_next().as_millis());
        let probe = h.out();
        // A probe below SND.UNA without data: the peer must answer with its window.
        assert_eq!((probe.seq, probe.payload.len()), (ISS + 2920, 0));
        h.input(seg().ack(ISS + 2921).win(0));
        h.none();
    }
    // The RTO floor (the handshake measured a zero RTT), doubling per probe.
    assert_eq!(waits, [200, 400, 800]);
    // The window opens: data flows and the persist timer stops.
    h.input(seg().ack(ISS + 2921).win(10000));
    let segs = h.drain();
    // A full segment, then Nagle holds the 620-byte tail until it is acknowledged.
    assert_eq!(segs.iter().map(|s| s.payload.len()).collect::<Vec<_>>(), [1460]);
    assert!(h.conn.persist_deadline.is_none());
    h.input(seg().ack(ISS + 4381).win(10000));
    assert_eq!(h.out().payload.len(), 620);
}

#[test]
fn receiver_window_tracks_buffer_and_avoids_silly_updates() {
    let cfg = TcpConfig { recv_buffer: 4000, mss: 1000, ..plain() };
    let mut h = Harness::established(&cfg);
    let base = IRS + 1;
    feed(&mut h, base, 4);
    let a = h.drain().pop().unwrap();
    assert_eq!((a.ack, a.window), (base + 4000, 0));
    // Data in a zero window is not taken (its ACK field still is) and re-announces it.
    h.input(seg().seq(base + 4000).ack(ISS + 1).len(10));
    assert_eq!(h.conn.recv_queue_len(), 4000);
    assert_eq!(h.out().window, 0);
    assert_eq!(
        h.input(seg().seq(base + 4100).ack(ISS + 1).len(10)),
        SegmentOutcome::Dropped(DropReason::OutOfWindow)
    );
    assert!(h.out().is_pure_ack());
    let mut buf = [0u8; 400];
    // Reading 400 bytes frees less than min(buffer/2, MSS): no window update (SWS).
    h.conn.recv(&mut buf).unwrap();
    h.none();
    let mut buf = [0u8; 1600];
    h.conn.recv(&mut buf).unwrap();
    let upd = h.out();
    assert!(upd.is_pure_ack());
    assert_eq!(upd.window, 2000);
}

#[test]
fn window_is_scaled_on_data_segments() {
    let cfg = TcpConfig { recv_buffer: 1 << 20, ..TcpConfig::default() };
    let mut h = Harness::established(&cfg);
    h.conn.send(b"x").unwrap();
    let d = h.out();
    // 1 MiB with shift 5: 32768 units.
    assert_eq!(d.window, 32768);
    assert_eq!(h.conn.rcv_wscale, 5);
}

#[test]
fn peer_fin_then_eof_and_data_is_read_first() {
    let mut h = Harness::established(&plain());
    h.input(seg().seq(IRS + 1).ack(ISS + 1).payload(b"bye").fin());
    assert_eq!(h.conn.state(), State::CloseWait);
    let a = h.out();
    assert_eq!(a.ack, IRS + 5);
    assert_eq!(h.events(), [ConnectionEvent::Readable, ConnectionEvent::ReadClosed]);
    let mut buf = [0u8; 8];
    assert_eq!(h.conn.recv(&mut buf), Ok(3));
    assert_eq!(h.conn.recv(&mut buf), Ok(0));
    assert!(h.conn.can_recv());
}

#[test]
fn send_buffer_full_then_writable_event() {
    let cfg = TcpConfig { send_buffer: 2000, ..plain() };
    let mut h = Harness::established(&cfg);
    assert_eq!(h.conn.send(&[0u8; 3000]), Ok(2000));
    assert_eq!(h.conn.send(b"more"), Ok(0));
    assert!(!h.conn.can_send());
    h.drain();
    h.input(seg().ack(ISS + 1001));
    assert_eq!(h.events(), [ConnectionEvent::Writable]);
    assert_eq!(h.conn.send_capacity(), 1000);
}

#[test]
fn export_import_mid_transfer_continues_seamlessly() {
    let cfg = TcpConfig { sack: true, timestamps: true, ..plain() };
    let mut h = Harness::established(&cfg);
    h.conn.send(&[9u8; 3000]).unwrap();
    let first = h.out();
    h.input(seg().seq(IRS + 1001).ack(ISS + 1).len(100).ts(5, 0));
    let state = h.conn.export();
    let mut moved =
        Harness { conn: Connection::import(state.clone()), now: h.now, mtu_payload: 1460 };
    assert_eq!(moved.conn.export().send_buffer, state.send_buffer);
    // The copy sends exactly what the original would.
    let a: Vec<Out> = h.drain();
    let b: Vec<Out> = moved.drain();
    assert_eq!(a, b);
    assert_eq!(a[0].seq, first.seq + first.payload.len() as u32);
    assert_eq!(moved.conn.poll_timeout(), h.conn.poll_timeout());
    // And it reassembles the out-of-order data held before the move.
    let acked = moved.conn.snd_max.0;
    let outcome = moved.input(seg().seq(IRS + 1).ack(acked).len(1000).ts(6, 0));
    assert_eq!(outcome, SegmentOutcome::Accepted);
    assert_eq!(moved.conn.recv_queue_len(), 1100);
}
