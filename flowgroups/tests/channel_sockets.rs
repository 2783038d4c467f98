//! Socket calls of the native client beyond the basic echo: peeking and counting received
//! bytes, resets, binding a source port, listener options and edge-triggered listeners.

mod channel_support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use channel_support::Harness;
use flowgroups::channel::client::Client;
use flowgroups::channel::proto::ShutdownHow;

const LONG: Duration = Duration::from_secs(10);

/// Waits (without the harness lock) until `f` holds, sleeping on the client between checks.
fn eventually(client: &Client, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + LONG;
    loop {
        let ticket = client.ticket();
        if f() {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        client.wait_since(ticket, Some(Duration::from_millis(20))).unwrap();
    }
}

#[test]
fn peek_leaves_the_bytes_for_recv_and_readable_counts_them() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(90, 16).unwrap();
    let p = h.peer_connect(0, 90);
    let (s, _) = c.accept(l, true).unwrap();
    assert_eq!(c.readable(s), 0);
    assert_eq!(c.readable(l), 0, "a listener has nothing to read");
    let mut buf = [0u8; 64];
    assert_eq!(c.peek(s, &mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);

    h.peer_send(0, p, b"hello, world");
    eventually(c, "12 bytes readable", || c.readable(s) == 12);
    let mut five = [0u8; 5];
    assert_eq!(c.peek(s, &mut five).unwrap(), 5);
    assert_eq!(&five, b"hello");
    assert_eq!(c.peek(s, &mut buf).unwrap(), 12, "peeking twice sees the same bytes");
    assert_eq!(&buf[..12], b"hello, world");
    assert_eq!(c.readable(s), 12, "peeking took nothing");
    assert_eq!(c.recv(s, &mut five, false).unwrap(), 5);
    assert_eq!(c.readable(s), 7);
    assert_eq!(c.peek(s, &mut buf).unwrap(), 7);
    assert_eq!(&buf[..7], b", world");
    assert_eq!(c.recv(s, &mut buf, false).unwrap(), 7);
    assert_eq!(&buf[..7], b", world");
    assert_eq!(c.readable(s), 0);

    h.with(|w| w.lanes[0].peer.shutdown_write(p).unwrap());
    eventually(c, "end of stream", || c.peek(s, &mut buf).is_ok());
    assert_eq!(c.peek(s, &mut buf).unwrap(), 0, "peek reports end of stream");
    assert_eq!(c.recv(s, &mut buf, false).unwrap(), 0);
    c.shutdown(s, ShutdownHow::Read).unwrap();
    assert_eq!(c.readable(s), 0);
    c.close(s).unwrap();
}

#[test]
fn abort_resets_the_connection_and_frees_the_slot() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(91, 16).unwrap();
    let p = h.peer_connect(0, 91);
    let (s, _) = c.accept(l, true).unwrap();
    h.peer_wait_established(0, p);
    // Unsent bytes do not hold the reset back (a close would deliver them first).
    c.send(s, &[7u8; 4000], true).unwrap();
    c.abort(s).unwrap();
    assert_eq!(h.peer_wait_closed(0, p), tcp_core::tcp::CloseReason::Reset);
    eventually(c, "slot released", || c.free_slots() == 63);
    assert!(c.abort(s).is_err(), "the socket is gone");
    // The listener still works, and aborting it just closes it.
    let p2 = h.peer_connect(0, 91);
    let (s2, _) = c.accept(l, true).unwrap();
    h.peer_wait_established(0, p2);
    c.close(s2).unwrap();
    assert!(h.peer_recv_to_eof(0, p2).is_empty());
    c.abort(l).unwrap();
    eventually(c, "all slots released", || c.free_slots() == 64);
}
