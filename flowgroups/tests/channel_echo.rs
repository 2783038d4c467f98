//! App channel end to end in one process: a `Client` (the test thread, playing the app)
//! served by a kernel instance loop (background thread) whose tcp-core stack talks over an
//! in-memory wire to a tcp-core peer.

mod channel_support;

use std::io::ErrorKind;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_support::{Harness, peer_ip};
use flowgroups::channel::Readiness;
use flowgroups::channel::proto::{ShutdownHow, SockOption};

const LONG: Duration = Duration::from_secs(10);

/// Waits (without the harness lock) until `f` holds, sleeping on the client between checks.
fn eventually(
    client: &flowgroups::channel::client::Client,
    what: &str,
    mut f: impl FnMut() -> bool,
) {
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
fn blocking_accept_recv_send_echo_and_close() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(80, 16).unwrap();
    let p = h.peer_connect(0, 80);
    let (s, peer) = c.accept(l, true).unwrap();
    assert_eq!(*peer.ip(), peer_ip(0));
    h.peer_wait_established(0, p);
    assert!(c.readiness(s).contains(Readiness::CONNECTED | Readiness::WRITABLE));

    h.peer_send(0, p, b"hello, netpop");
    let mut buf = [0u8; 100];
    let n = c.recv(s, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"hello, netpop");
    assert_eq!(c.send(s, &buf[..n], true).unwrap(), n);
    assert_eq!(h.peer_recv_exact(0, p, n), b"hello, netpop");

    let (local, remote) = c.addresses(s).unwrap();
    assert_eq!(local.port(), 80);
    assert_eq!(remote, peer);
    let info = c.info(s).unwrap();
    assert_eq!(info.tcp_state, 1, "TCP_ESTABLISHED");
    assert_eq!(info.peer, peer);

    c.close(s).unwrap();
    assert!(h.peer_recv_to_eof(0, p).is_empty(), "orderly FIN after the echo");
    c.close(l).unwrap();
    eventually(c, "all slots released", || c.free_slots() == 64);
}

#[test]
fn non_blocking_accept_and_recv_report_would_block_and_readiness() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(8080, 16).unwrap();
    assert_eq!(c.accept(l, false).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(!c.readiness(l).contains(Readiness::ACCEPTABLE));

    let p = h.peer_connect(0, 8080);
    eventually(c, "ACCEPTABLE", || c.readiness(l).contains(Readiness::ACCEPTABLE));
    let (s, _) = c.accept(l, false).unwrap();
    eventually(c, "listener drained", || !c.readiness(l).contains(Readiness::ACCEPTABLE));
    assert_eq!(c.accept(l, false).unwrap_err().kind(), ErrorKind::WouldBlock);

    let mut buf = [0u8; 64];
    assert_eq!(c.recv(s, &mut buf, false).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(!c.readiness(s).contains(Readiness::READABLE));
    let before = c.event_count(s);
    h.peer_send(0, p, b"ping");
    eventually(c, "READABLE", || c.readiness(s).contains(Readiness::READABLE));
    assert_ne!(c.event_count(s), before, "an edge-triggered poller sees the arrival");
    assert_eq!(c.recv(s, &mut buf, false).unwrap(), 4);
    assert_eq!(&buf[..4], b"ping");
    assert!(!c.readiness(s).contains(Readiness::READABLE));
}

#[test]
fn blocking_accept_and_recv_are_woken_by_later_arrivals() {
    let h = Arc::new(Harness::new(1));
    let app = h.add_app(1, 1, 0);
    let c = app.client.clone();
    let l = c.listen(81, 16).unwrap();
    let peer_side = {
        let h = h.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let p = h.peer_connect(0, 81);
            h.peer_wait_established(0, p);
            std::thread::sleep(Duration::from_millis(100));
            h.peer_send(0, p, b"late data");
            p
        })
    };
    let t0 = Instant::now();
    let (s, _) = c.accept(l, true).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(90), "accept blocked until the connection came");
    let mut buf = [0u8; 32];
    let n = c.recv(s, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"late data");
    assert!(t0.elapsed() >= Duration::from_millis(190));
    peer_side.join().unwrap();
    let woken = app.segment.wake_count().unwrap().load(std::sync::atomic::Ordering::Relaxed);
    assert!(woken >= 1, "the instance wrote the eventfd for the sleeping app");
}

#[test]
fn end_of_stream_after_the_data_and_shutdown_write_reaches_the_peer() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(82, 16).unwrap();
    let p = h.peer_connect(0, 82);
    let (s, _) = c.accept(l, true).unwrap();
    h.peer_send(0, p, b"last words");
    h.with(|w| w.lanes[0].peer.shutdown_write(p).unwrap());
    let mut got = Vec::new();
    let mut buf = [0u8; 4];
    loop {
        let n = c.recv(s, &mut buf, true).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"last words");
    assert!(c.readiness(s).contains(Readiness::RDHUP | Readiness::READABLE));
    assert_eq!(c.recv(s, &mut buf, false).unwrap(), 0, "EOF stays EOF");
    // The other direction still works after the peer's FIN (CLOSE-WAIT).
    c.send(s, b"bye", true).unwrap();
    c.shutdown(s, ShutdownHow::Write).unwrap();
    assert_eq!(c.send(s, b"x", true).unwrap_err().raw_os_error(), Some(libc::EPIPE));
    assert_eq!(h.peer_recv_to_eof(0, p), b"bye");
    c.close(s).unwrap();
}

#[test]
fn peer_reset_is_reported_once_then_the_socket_is_dead() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(83, 16).unwrap();
    let p = h.peer_connect(0, 83);
    let (s, _) = c.accept(l, true).unwrap();
    h.peer_wait_established(0, p);
    h.with(|w| w.lanes[0].peer.abort(p).unwrap());
    let mut buf = [0u8; 8];
    let e = c.recv(s, &mut buf, true).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    let r = c.readiness(s);
    assert!(r.contains(Readiness::HUP | Readiness::READABLE | Readiness::WRITABLE), "{r:?}");
    assert_eq!(c.recv(s, &mut buf, false).unwrap(), 0, "after the error: end of stream");
    assert_eq!(c.send(s, b"x", false).unwrap_err().raw_os_error(), Some(libc::EPIPE));
    c.close(s).unwrap();
    eventually(c, "slot released", || c.free_slots() == 63);
}

#[test]
fn app_connects_out_and_refused_connect_fails_with_econnrefused() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let pl = h.with(|w| {
        w.lanes[0].peer.listen(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 7000), 8).unwrap()
    });
    let s = c.connect(SocketAddrV4::new(peer_ip(0), 7000), true).unwrap();
    assert!(c.readiness(s).contains(Readiness::CONNECTED | Readiness::WRITABLE));
    c.set_option(s, SockOption::NoDelay(true)).unwrap();
    let ps = h.wait_for("peer accept", LONG, |w| w.lanes[0].peer.accept(pl).ok()).0;
    c.send(s, b"request", true).unwrap();
    assert_eq!(h.peer_recv_exact(0, ps, 7), b"request");
    h.peer_send(0, ps, b"response");
    let mut buf = [0u8; 16];
    let n = c.recv(s, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"response");
    c.close(s).unwrap();

    let e = c.connect(SocketAddrV4::new(peer_ip(0), 7001), true).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    // Non-blocking: in progress, then ERR with SO_ERROR.
    let s = c.connect(SocketAddrV4::new(peer_ip(0), 7001), false).unwrap();
    eventually(c, "ERR", || c.readiness(s).contains(Readiness::ERR));
    assert_eq!(c.take_error(s).unwrap().raw_os_error(), Some(libc::ECONNREFUSED));
    assert!(c.take_error(s).is_none(), "SO_ERROR is cleared by reading it");
    c.close(s).unwrap();
}

#[test]
fn large_transfer_both_ways_through_small_rings() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = app.client.clone();
    let l = c.listen(84, 16).unwrap();
    let p = h.peer_connect(0, 84);
    let (s, _) = c.accept(l, true).unwrap();
    // 20 socket buffers' worth: the rx ring fills and the RxConsumed doorbell must work.
    let data: Vec<u8> = (0..320 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let sender = {
        let h_data = data.clone();
        let c = c.clone();
        std::thread::spawn(move || {
            assert_eq!(c.send(s, &h_data, true).unwrap(), h_data.len());
        })
    };
    // Peer echoes what it gets; the app reads the echo back. Nobody blocks: each side
    // moves what fits, so the windows and rings fill and drain in turn.
    let mut pending: Vec<u8> = Vec::new();
    let mut back = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut tmp = vec![0u8; 65536];
    let end = Instant::now() + Duration::from_secs(60);
    while back.len() < data.len() {
        assert!(Instant::now() < end, "transfer stalled at {} bytes", back.len());
        h.with(|w| {
            let peer = &mut w.lanes[0].peer;
            if let Ok(got) = peer.recv(p, &mut tmp) {
                pending.extend_from_slice(&tmp[..got]);
            }
            if !pending.is_empty() {
                let sent = peer.send(p, &pending).unwrap();
                pending.drain(..sent);
            }
        });
        match c.recv(s, &mut buf, false) {
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(100))
            }
            Err(e) => panic!("{e}"),
        }
    }
    sender.join().unwrap();
    assert!(back == data, "every byte echoed in order");
    c.close(s).unwrap();
}

#[test]
fn a_thousand_short_connections() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(85, 128).unwrap();
    let mut served = 0;
    for _batch in 0..50 {
        // Each peer queues its request right away (sent once the handshake completes).
        let peers: Vec<_> = (0..20)
            .map(|_| {
                let p = h.peer_connect(0, 85);
                h.with(|w| assert_eq!(w.lanes[0].peer.send(p, b"req!").unwrap(), 4));
                p
            })
            .collect();
        for _ in 0..20 {
            let (s, _) = c.accept(l, true).unwrap();
            let mut buf = [0u8; 16];
            let n = c.recv(s, &mut buf, true).unwrap();
            assert_eq!(&buf[..n], b"req!");
            c.send(s, b"resp", true).unwrap();
            c.close(s).unwrap();
            served += 1;
        }
        for p in peers {
            assert_eq!(h.peer_recv_to_eof(0, p), b"resp");
            h.with(|w| w.lanes[0].peer.close(p).unwrap());
        }
    }
    assert_eq!(served, 1000);
    eventually(c, "slots back", || c.free_slots() == 63);
    let counts = h.with(|w| w.lanes[0].hub.registry().connection_count());
    assert_eq!(counts, 0, "no connection left bound to the app");
}
