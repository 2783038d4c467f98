//! The single-socket abstraction across instances and apps: replicated listeners, accept
//! from home first then from others, listeners shared by a forked child, one wake-up per
//! connection, app death and reclaim, registration over a Unix socket, many threads on one
//! client, and the plane's word on which instances still live.

mod channel_support;

use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use channel_support::{Harness, layout, peer_ip};
use flowgroups::channel::client::Client;
use flowgroups::channel::proto::{Errno, MESSAGE_LEN, RegistrationMessage};
use flowgroups::channel::{AppSegment, HeaderWord, Readiness};
use flowgroups::shm::{EventFd, send_fds};
use tcp_core::tcp::CloseReason;

fn eventually(client: &Client, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
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
fn accept_takes_from_home_first_then_from_other_instances() {
    let h = Harness::new(2);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(90, 16).unwrap();
    for lane in 0..2 {
        assert_eq!(h.with(|w| w.lanes[lane].hub.registry().subscribers(90)), 1);
    }
    // Only instance 1 has a connection: the app (home 0) still gets it.
    let p1 = h.peer_connect(1, 90);
    eventually(c, "ACCEPTABLE", || c.readiness(l).contains(Readiness::ACCEPTABLE));
    let (s1, peer) = c.accept(l, false).unwrap();
    assert_eq!(*peer.ip(), peer_ip(1));
    h.peer_send(1, p1, b"via instance 1");
    let mut buf = [0u8; 32];
    let n = c.recv(s1, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"via instance 1");
    c.send(s1, b"back", true).unwrap();
    assert_eq!(h.peer_recv_exact(1, p1, 4), b"back");

    // Both have one: home first.
    let _p0 = h.peer_connect(0, 90);
    let _p1b = h.peer_connect(1, 90);
    h.wait_for("both accept queues", Duration::from_secs(10), |w| {
        let ready = |lane: usize| {
            w.lanes[lane]
                .hub
                .registry()
                .ready_counts(&w.lanes[lane].server)
                .any(|(p, n)| p == 90 && n > 0)
        };
        (ready(0) && ready(1)).then_some(())
    });
    let (_, first) = c.accept(l, true).unwrap();
    let (_, second) = c.accept(l, true).unwrap();
    assert_eq!(*first.ip(), peer_ip(0), "home instance first");
    assert_eq!(*second.ip(), peer_ip(1));
    assert_eq!(c.accept(l, false).unwrap_err().kind(), ErrorKind::WouldBlock);
}

#[test]
fn forked_child_shares_the_listener_and_outlives_the_parent() {
    let h = Harness::new(1);
    let parent = h.add_app(1, 7, 0);
    let child = h.add_app(2, 7, 0);
    let stranger = h.add_app(3, 8, 0);
    let lp = parent.client.listen(91, 16).unwrap();
    let lc = child.client.listen(91, 16).unwrap();
    let e = stranger.client.listen(91, 16).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "another family cannot take the port");
    assert_eq!(h.with(|w| w.lanes[0].hub.registry().subscribers(91)), 2);

    let a = h.peer_connect(0, 91);
    let (sp, _) = parent.client.accept(lp, true).unwrap();
    let b = h.peer_connect(0, 91);
    let (sc, _) = child.client.accept(lc, true).unwrap();
    h.peer_wait_established(0, a);
    h.peer_wait_established(0, b);

    // The parent dies: its connection is reset, the child's keeps working and the
    // listener stays open for the child.
    h.detach(parent.app_id);
    assert_eq!(h.peer_wait_closed(0, a), CloseReason::Reset);
    h.peer_send(0, b, b"still here");
    let mut buf = [0u8; 16];
    let n = child.client.recv(sc, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"still here");
    let c2 = h.peer_connect(0, 91);
    let (_, peer) = child.client.accept(lc, true).unwrap();
    assert_eq!(*peer.ip(), peer_ip(0));
    h.peer_wait_established(0, c2);
    let _ = sp;
}

#[test]
fn each_connection_goes_to_exactly_one_of_several_sleeping_apps() {
    let h = Harness::new(1);
    // Periodic re-waking of stale accept queues would add wake-ups when the machine is
    // slow; this test is about the wake-up an arrival causes.
    h.with(|w| w.rewake_every = None);
    let apps: Vec<_> = (1..=3).map(|id| h.add_app(id, 5, 0)).collect();
    let listeners: Vec<_> = apps.iter().map(|a| a.client.listen(92, 16).unwrap()).collect();
    let waiters: Vec<_> = apps
        .iter()
        .zip(&listeners)
        .map(|(a, &l)| {
            let c = a.client.clone();
            std::thread::spawn(move || c.accept(l, true).map(|(s, _)| s))
        })
        .collect();
    // Let all three fall asleep.
    std::thread::sleep(Duration::from_millis(200));
    h.peer_connect(0, 92);
    let end = Instant::now() + Duration::from_secs(10);
    while !waiters.iter().any(|w| w.is_finished()) {
        assert!(Instant::now() < end, "nobody accepted");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    // Exactly one app got it; the others (woken or not) are still waiting, not failing.
    // That only one eventfd is written per arrival is checked deterministically in the
    // registry's unit tests.
    assert_eq!(waiters.iter().filter(|w| w.is_finished()).count(), 1);
    // Two more connections: the other two apps get them.
    h.peer_connect(0, 92);
    h.peer_connect(0, 92);
    for w in waiters {
        w.join().unwrap().unwrap();
    }
}

#[test]
fn dead_apps_are_reclaimed_without_leaks_a_hundred_times() {
    let h = Harness::new(1);
    for round in 0..100u32 {
        let app = h.add_app(100 + round, 100 + round, 0);
        let c = &app.client;
        let l = c.listen(93, 8).unwrap();
        let p = h.peer_connect(0, 93);
        let (s, _) = c.accept(l, true).unwrap();
        c.send(s, b"x", true).unwrap();
        assert_eq!(h.peer_recv_exact(0, p, 1), b"x");
        // kill -9: nothing is closed by the app; the plane detaches it.
        h.detach(app.app_id);
        assert_eq!(h.peer_wait_closed(0, p), CloseReason::Reset);
        h.with(|w| w.lanes[0].peer.close(p).unwrap());
    }
    h.wait_for("stacks empty", Duration::from_secs(10), |w| {
        let lane = &w.lanes[0];
        (lane.server.socket_count() == 0 && lane.peer.socket_count() == 0).then_some(())
    });
    h.with(|w| {
        let lane = &w.lanes[0];
        assert_eq!(lane.hub.app_ids().count(), 0);
        assert_eq!(lane.hub.registry().subscribers(93), 0, "listener closed with its last app");
        assert_eq!(lane.hub.registry().connection_count(), 0);
    });
}

#[test]
fn an_app_that_closes_and_dies_before_the_instance_looks_still_delivers_its_last_bytes() {
    // An Apache child at a graceful restart: it writes its last response, closes the
    // connection and exits, and the plane may report its death before the instance has
    // read any of that. The peer must get the response and an orderly end, not a reset.
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let l = c.listen(97, 8).unwrap();
    let p = h.peer_connect(0, 97);
    let (s, _) = c.accept(l, true).unwrap();
    h.peer_wait_established(0, p);
    h.with(|w| {
        // The instance loop is held still: the write and the close wait in the app's rings
        // when the detach comes.
        assert_eq!(c.send(s, b"last response", false).unwrap(), 13);
        c.close(s).unwrap();
        let now = w.now;
        let lane = &mut w.lanes[0];
        assert!(lane.hub.detach(&mut lane.server, now, app.app_id));
    });
    assert_eq!(h.peer_recv_to_eof(0, p), b"last response");
}

#[test]
fn registration_over_a_unix_socket_hands_over_segment_and_fds() {
    let h = Harness::new(1);
    let dir = std::env::temp_dir().join(format!("netpop-channel-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plane.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let doorbell = h.doorbell();
    let plane = std::thread::spawn(move || {
        // First app: accepted. Second: refused.
        let (mut conn, _) = listener.accept().unwrap();
        let mut msg = [0u8; MESSAGE_LEN];
        conn.read_exact(&mut msg).unwrap();
        let pid = match RegistrationMessage::decode(&msg).unwrap() {
            RegistrationMessage::Register { pid } => pid,
            other => panic!("{other:?}"),
        };
        assert_eq!(pid, std::process::id());
        let layout = layout(1);
        let segment = AppSegment::create(layout, 42, pid).unwrap();
        let wake = EventFd::new().unwrap();
        let reply =
            RegistrationMessage::Registered { app_id: 42, home: 0, layout, doorbells: 1, live: 1 };
        send_fds(&conn, &reply.encode(), &[segment.segment().fd(), wake.as_fd()]).unwrap();
        let bells = RegistrationMessage::Doorbells { count: 1 };
        send_fds(&conn, &bells.encode(), &[doorbell.as_fd()]).unwrap();

        let (mut refused, _) = listener.accept().unwrap();
        refused.read_exact(&mut msg).unwrap();
        let no = RegistrationMessage::Refused { errno: Errno::ECONNREFUSED };
        send_fds(&refused, &no.encode(), &[]).unwrap();
        (segment, wake, conn)
    });
    let client = Client::register(&path).unwrap();
    let second = Client::register(&path).unwrap_err();
    assert_eq!(second.raw_os_error(), Some(libc::ECONNREFUSED));
    let (segment, wake, conn) = plane.join().unwrap();
    assert_eq!(client.app_id(), 42);
    assert_eq!(client.layout(), layout(1));
    h.attach_existing(42, 42, &segment, &wake);

    let l = client.listen(94, 4).unwrap();
    let p = h.peer_connect(0, 94);
    let (s, _) = client.accept(l, true).unwrap();
    h.peer_send(0, p, b"registered");
    let mut buf = [0u8; 16];
    let n = client.recv(s, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"registered");

    // The app's exit closes the registration socket: the plane sees the hang-up.
    drop(client);
    let mut conn = conn;
    let mut byte = [0u8; 1];
    assert_eq!(conn.read(&mut byte).unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_threads_share_one_client() {
    let h = Arc::new(Harness::new(1));
    let app = h.add_app(1, 1, 0);
    let c = app.client.clone();
    let l = c.listen(96, 64).unwrap();
    const THREADS: usize = 4;
    const PER_THREAD: usize = 6;
    // Every thread accepts and serves connections concurrently on the same listener.
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    let (s, _) = c.accept(l, true).unwrap();
                    let mut buf = [0u8; 8];
                    let mut got = Vec::new();
                    while got.len() < 8 {
                        let n = c.recv(s, &mut buf, true).unwrap();
                        assert!(n > 0);
                        got.extend_from_slice(&buf[..n]);
                    }
                    let mut answer = got.clone();
                    answer.reverse();
                    c.send(s, &answer, true).unwrap();
                    c.close(s).unwrap();
                }
            })
        })
        .collect();
    let peers: Vec<_> = (0..THREADS * PER_THREAD)
        .map(|i| {
            let p = h.peer_connect(0, 96);
            let msg = format!("conn{i:04}");
            h.with(|w| w.lanes[0].peer.send(p, msg.as_bytes()).unwrap());
            (p, msg)
        })
        .collect();
    for (p, msg) in peers {
        let mut expect = msg.into_bytes();
        expect.reverse();
        assert_eq!(h.peer_recv_to_eof(0, p), expect);
    }
    for w in workers {
        w.join().unwrap();
    }
    eventually(&c, "slots back", || c.free_slots() == 63);
}

#[test]
fn the_plane_word_on_live_instances_narrows_the_mask_and_nonsense_is_ignored() {
    let h = Harness::new(3);
    let app = h.add_app(1, 1, 0);
    let c = &app.client;
    let word = app.segment.header_word(HeaderWord::LiveInstances).unwrap();
    assert_eq!(c.live_instances(), vec![0, 1, 2], "0: the plane said nothing");
    for nonsense in [0b1000, 0x1_0000, 0b1001] {
        word.store(nonsense, Ordering::Release);
        assert_eq!(c.live_instances(), vec![0, 1, 2], "{nonsense:#b} names no real instance");
    }
    word.store(0b101, Ordering::Release);
    assert_eq!(c.live_instances(), vec![0, 2], "instance 1 died");
    word.store(0b111, Ordering::Release);
    assert_eq!(c.live_instances(), vec![0, 2], "a dead instance does not come back");
    // A listen now goes to the live instances only and completes.
    c.listen(91, 16).unwrap();
    let subscribers = |lane: usize| h.with(|w| w.lanes[lane].hub.registry().subscribers(91));
    assert_eq!((subscribers(0), subscribers(1), subscribers(2)), (1, 0, 1));
}
