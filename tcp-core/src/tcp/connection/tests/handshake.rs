//! Opening handshakes (RFC 9293 §3.5), option negotiation, SYN retransmission.

use super::*;

#[test]
fn active_open_offers_options_and_completes() {
    let mut h = Harness::client(&TcpConfig::default());
    assert_eq!(h.conn.state(), State::SynSent);
    let syn = h.out();
    assert_eq!(syn.flags, TcpFlags::SYN);
    assert_eq!(syn.seq, ISS);
    assert_eq!(syn.options.mss, Some(1460));
    assert!(syn.options.sack_permitted);
    assert_eq!(syn.options.window_scale, Some(2), "128 KiB buffer needs shift 2");
    assert_eq!(syn.options.timestamp, Some((0, 0)));
    h.none();
    h.now = Instant::from_millis(30);
    let out = h.input(
        seg().syn().seq(IRS).ack(ISS + 1).mss(1000).wscale(3).sack_perm().ts(77, 0).win(1000),
    );
    assert_eq!(out, SegmentOutcome::Accepted);
    assert_eq!(h.conn.state(), State::Established);
    let ack = h.out();
    assert!(ack.is_pure_ack());
    assert_eq!((ack.seq, ack.ack), (ISS + 1, IRS + 1));
    assert_eq!(ack.options.timestamp, Some((30, 77)));
    assert_eq!(h.events(), [ConnectionEvent::Established]);
    // SMSS = peer MSS minus the timestamps option; RTT sampled from the SYN-ACK's TSecr.
    assert_eq!(h.conn.stats().send_mss, 988);
    assert_eq!(h.conn.stats().srtt, Some(Duration::from_millis(30)));
    // IW10 in segments of SMSS.
    assert_eq!(h.conn.stats().cwnd, 9880);
    // The SYN-ACK's window is not scaled; later windows are, by 2^3.
    assert_eq!(h.conn.snd_wnd, 1000);
    h.input(seg().ack(ISS + 1).win(1000).ts(78, 30));
    assert_eq!(h.conn.snd_wnd, 8000);
}

#[test]
fn options_are_used_only_when_both_sides_offer_them() {
    let mut h = Harness::client(&TcpConfig::default());
    h.out();
    h.input(seg().syn().seq(IRS).ack(ISS + 1).win(5000));
    let ack = h.out();
    assert_eq!(ack.options.timestamp, None);
    assert_eq!(ack.options.window_scale, None);
    assert!(!h.conn.sack_ok);
    // No MSS option: 536 (RFC 9293 §3.7.1).
    assert_eq!(h.conn.stats().send_mss, 536);
    h.input(seg().ack(ISS + 1).win(5000));
    assert_eq!(h.conn.snd_wnd, 5000, "no scaling without the peer's option");
    // Our advertised window is unscaled too.
    h.conn.send(b"x").unwrap();
    assert_eq!(h.out().window, 65535);
}

#[test]
fn passive_open_answers_only_offered_options() {
    let syn = seg().syn().seq(IRS).mss(1400).sack_perm().win(8192);
    let mut h = Harness::server(&TcpConfig::default(), syn);
    assert_eq!(h.conn.state(), State::SynReceived);
    let sa = h.out();
    assert_eq!(sa.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!((sa.seq, sa.ack), (ISS, IRS + 1));
    assert!(sa.options.sack_permitted);
    assert_eq!(sa.options.timestamp, None);
    assert_eq!(sa.options.window_scale, None);
    assert_eq!(sa.window, 65535);
    h.none();
    assert_eq!(h.input(seg().ack(ISS + 1).payload(b"hello")), SegmentOutcome::Accepted);
    assert_eq!(h.conn.state(), State::Established);
    assert_eq!(h.events(), [ConnectionEvent::Established, ConnectionEvent::Readable]);
    let mut buf = [0u8; 16];
    assert_eq!(h.conn.recv(&mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
}

#[test]
fn syn_received_rejects_bad_ack_with_reset_and_resends_syn_ack_on_syn() {
    let mut h = Harness::server(&plain(), seg().syn().seq(IRS));
    h.out();
    assert_eq!(h.input(seg().ack(ISS + 50)), SegmentOutcome::Dropped(DropReason::BadAck));
    let rst = h.out();
    assert_eq!((rst.flags, rst.seq), (TcpFlags::RST, ISS + 50));
    // A retransmitted SYN brings the SYN-ACK back.
    assert_eq!(h.input(seg().syn().seq(IRS)), SegmentOutcome::Accepted);
    let sa = h.out();
    assert_eq!(sa.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!(h.conn.stats().retransmits, 1);
}

#[test]
fn simultaneous_open() {
    let mut h = Harness::client(&plain());
    h.out();
    // The peer's SYN crosses ours (RFC 9293 §3.5 figure 7).
    assert_eq!(h.input(seg().syn().seq(IRS)), SegmentOutcome::Accepted);
    assert_eq!(h.conn.state(), State::SynReceived);
    let sa = h.out();
    assert_eq!(sa.flags, TcpFlags::SYN | TcpFlags::ACK);
    assert_eq!((sa.seq, sa.ack), (ISS, IRS + 1));
    // The peer's SYN-ACK completes the handshake and is acknowledged.
    assert_eq!(h.input(seg().syn().seq(IRS).ack(ISS + 1)), SegmentOutcome::Accepted);
    assert_eq!(h.conn.state(), State::Established);
    assert_eq!(h.events(), [ConnectionEvent::Established]);
    let ack = h.out();
    assert!(ack.is_pure_ack());
    assert_eq!((ack.seq, ack.ack), (ISS + 1, IRS + 1));
}

#[test]
fn syn_sent_reset_rules() {
    let mut h = Harness::client(&plain());
    h.out();
    // RST without ACK: ignored (RFC 9293 §3.10.7.3).
    assert_eq!(h.input(seg().rst().seq(0)), SegmentOutcome::Dropped(DropReason::RstNotAcceptable));
    assert_eq!(h.conn.state(), State::SynSent);
    // RST with an ACK that does not cover our SYN: ignored.
    assert_eq!(h.input(seg().rst().ack(ISS + 7)), SegmentOutcome::Dropped(DropReason::BadAck));
    h.none();
    // A bad ACK without RST draws a reset.
    assert_eq!(h.input(seg().ack(ISS)), SegmentOutcome::Dropped(DropReason::BadAck));
    let rst = h.out();
    assert_eq!((rst.flags, rst.seq), (TcpFlags::RST, ISS));
    // RST with the acceptable ACK: refused.
    assert_eq!(h.input(seg().rst().ack(ISS + 1)), SegmentOutcome::Accepted);
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.events(), [ConnectionEvent::Closed(CloseReason::Reset)]);
    assert_eq!(h.conn.send(b"x"), Err(SendError::Reset));
    assert!(h.conn.is_closed());
}

#[test]
fn syn_is_retransmitted_with_backoff_then_gives_up() {
    let cfg = TcpConfig { syn_retries: 3, ..plain() };
    let mut h = Harness::client(&cfg);
    h.out();
    let mut waits = Vec::new();
    for _ in 0..3 {
        waits.push(h.fire_next().as_secs());
        let syn = h.out();
        assert_eq!((syn.flags, syn.seq), (TcpFlags::SYN, ISS));
    }
    assert_eq!(waits, [1, 2, 4]);
    assert_eq!(h.fire_next().as_secs(), 8);
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.events(), [ConnectionEvent::Closed(CloseReason::TimedOut)]);
    h.none();
}

#[test]
fn lost_syn_means_initial_window_of_one_segment() {
    let mut h = Harness::client(&plain());
    h.out();
    h.fire_next();
    h.out();
    h.input(seg().syn().seq(IRS).ack(ISS + 1).mss(1460));
    assert_eq!(h.conn.stats().cwnd, 1460);
    assert_eq!(h.conn.stats().srtt, None, "Karn: no sample from a retransmitted SYN");
}

#[test]
fn syn_cookie_connection_processes_the_completing_ack() {
    let neg = Negotiated { mss: 1200, window_scale: Some(7), sack: true, timestamps: true };
    let data = b"GET / HTTP/1.0\r\n\r\n";
    let ack = seg().ack(ISS + 1).ts(500, 3).payload(data);
    let repr = TcpRepr { payload: &ack.data, ..ack.repr };
    let mut conn = Connection::from_syn_cookie(
        &TcpConfig::default(),
        params(),
        SeqNumber(IRS),
        neg,
        &repr,
        Instant::from_millis(10),
    );
    assert_eq!(conn.state(), State::Established);
    assert_eq!(conn.recv_queue_len(), data.len());
    assert_eq!(conn.snd_wnd, 65535 << 7);
    assert_eq!(conn.stats().send_mss, 1188);
    let a = conn.poll_transmit(Instant::from_millis(10), 1460).unwrap();
    assert_eq!(a.ack, SeqNumber(IRS + 1 + data.len() as u32));
    assert_eq!(a.options.timestamp.map(|t| t.1), Some(500));
}

#[test]
fn state_names_display_like_the_rfc() {
    assert_eq!(alloc::format!("{}", State::SynReceived), "SYN-RECEIVED");
    assert_eq!(alloc::format!("{}", State::TimeWait), "TIME-WAIT");
}
