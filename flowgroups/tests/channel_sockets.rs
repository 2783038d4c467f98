//! Socket calls of the native client beyond the basic echo: peeking and counting received
//! bytes, resets, binding a source port, listener options and edge-triggered listeners.

mod channel_support;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use channel_support::{Harness, SERVER_IP, peer_ip};
use flowgroups::channel::Readiness;
use flowgroups::channel::client::Client;
use flowgroups::channel::proto::{ShutdownHow, SockOption};

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

#[test]
fn connect_from_a_bound_port_uses_it_or_says_address_in_use() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let server = SocketAddrV4::new(peer_ip(0), 5000);
    let peer_listener = h
        .with(|w| w.lanes[0].peer.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5000), 8))
        .unwrap();
    let s = c.connect_from(server, Some(40001), true).unwrap();
    assert_eq!(c.addresses(s).unwrap(), (SocketAddrV4::new(SERVER_IP, 40001), server));
    let (_, remote) =
        h.wait_for("peer accepts", LONG, |w| w.lanes[0].peer.accept(peer_listener).ok());
    assert_eq!(remote, SocketAddrV4::new(SERVER_IP, 40001), "the peer sees the bound port");

    let again = c.connect_from(server, Some(40001), true).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::EADDRINUSE), "same 4-tuple twice");
    let l = c.listen(40002, 4).unwrap();
    let on_listener = c.connect_from(server, Some(40002), false).unwrap_err();
    assert_eq!(on_listener.raw_os_error(), Some(libc::EADDRINUSE), "a listening port");
    let chosen = c.connect_from(server, Some(0), true).unwrap();
    let port = c.addresses(chosen).unwrap().0.port();
    assert!(port != 0 && port != 40001 && port != 40002, "port 0 means any: {port}");
    for sock in [s, chosen, l] {
        c.close(sock).unwrap();
    }
    eventually(c, "slots released", || c.free_slots() == 64);
}

#[test]
fn connect_from_a_bound_port_is_made_by_the_instance_that_gets_the_replies() {
    let h = Harness::new(2);
    // Odd ports' replies reach instance 1, even ones instance 0.
    h.with(|w| w.owns_reply = |instance, port| port % 2 == instance % 2);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    // Only instance 1's wire leads to peer 1: the connection can only complete if instance
    // 1 made it, although the app's home is instance 0.
    let server = SocketAddrV4::new(peer_ip(1), 5001);
    let peer_listener = h
        .with(|w| w.lanes[1].peer.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5001), 8))
        .unwrap();
    let s = c.connect_from(server, Some(40003), false).unwrap();
    eventually(c, "connected", || c.readiness(s).contains(Readiness::CONNECTED));
    let (p, remote) =
        h.wait_for("peer 1 accepts", LONG, |w| w.lanes[1].peer.accept(peer_listener).ok());
    assert_eq!(remote.port(), 40003);
    c.send(s, b"via instance 1", true).unwrap();
    assert_eq!(h.peer_recv_exact(1, p, 14), b"via instance 1");
    c.close(s).unwrap();
}

#[test]
fn a_listener_event_count_moves_with_every_connection_its_queues_gain() {
    let h = Harness::new(2);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(92, 16).unwrap();
    let mut last = c.event_count(l);
    // Connections land on both instances; none is accepted in between, so the listener
    // stays ACCEPTABLE and only the counter tells an edge-triggered poller about each.
    for (round, lane) in [0usize, 0, 1, 1, 0].into_iter().enumerate() {
        let p = h.peer_connect(lane, 92);
        h.peer_wait_established(lane, p);
        eventually(c, "the counter moved", || c.event_count(l) != last);
        last = c.event_count(l);
        assert!(c.readiness(l).contains(Readiness::ACCEPTABLE), "round {round}");
    }
    for _ in 0..5 {
        c.accept(l, true).unwrap();
    }
    assert_eq!(c.accept(l, false).unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn accepted_connections_inherit_the_listener_options_on_every_instance() {
    let h = Harness::new(2);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let corked = c.listen(93, 16).unwrap();
    c.set_option(corked, SockOption::Cork(true)).unwrap();
    let plain = c.listen(94, 16).unwrap();
    for lane in [0usize, 1] {
        // A corked connection holds a short write back until uncorked; a connection from
        // the plain listener sends it at once.
        let p = h.peer_connect(lane, 93);
        let q = h.peer_connect(lane, 94);
        let (s, _) = c.accept(corked, true).unwrap();
        let (t, _) = c.accept(plain, true).unwrap();
        h.peer_wait_established(lane, p);
        h.peer_wait_established(lane, q);
        c.send(s, b"held", true).unwrap();
        c.send(t, b"sent", true).unwrap();
        assert_eq!(h.peer_recv_exact(lane, q, 4), b"sent");
        std::thread::sleep(Duration::from_millis(100));
        let mut buf = [0u8; 8];
        let early = h.with(|w| w.lanes[lane].peer.recv(p, &mut buf));
        assert!(early.is_err(), "instance {lane}: the corked bytes were held back");
        c.set_option(s, SockOption::Cork(false)).unwrap();
        assert_eq!(h.peer_recv_exact(lane, p, 4), b"held");
        c.close(s).unwrap();
        c.close(t).unwrap();
    }
}
