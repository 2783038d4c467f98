//! Wake-ups with several sleeping threads: every thread of an app that sleeps — inside the
//! client's blocking calls or on the wake eventfd itself, as the shim's poll does — is woken
//! when its socket changes, however many others sleep at the same time.

mod channel_support;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use channel_support::Harness;
use flowgroups::channel::SocketId;
use flowgroups::channel::client::Client;
use flowgroups::shm::sys::poll_readable;

/// Longer than any scheduling hiccup, shorter than the client's longest nap (1 s): a
/// wake-up that was lost shows up as a delivery slower than this.
const PROMPT: Duration = Duration::from_millis(600);

/// Receives one byte the way the shim's poll does: ticket, check, announce, re-check,
/// poll the wake eventfd (with a timeout far beyond `PROMPT`), finish.
fn recv_by_polling(c: &Client, s: SocketId) -> u8 {
    let mut b = [0u8; 1];
    loop {
        let ticket = c.ticket();
        match c.recv(s, &mut b, false) {
            Ok(1) => return b[0],
            Ok(n) => panic!("recv returned {n}"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv failed: {e}"),
        }
        let waiting = c.prepare_wait();
        if c.ticket() != ticket {
            waiting.finish(false).unwrap();
            continue;
        }
        let ready = poll_readable(&[c.wake_fd().as_raw_fd()], Some(Duration::from_secs(5)));
        waiting.finish(ready.unwrap().is_ready(0)).unwrap();
    }
}

#[test]
fn four_threads_blocked_on_four_sockets_are_each_woken_promptly() {
    let h = Harness::new(1);
    let app = h.add_app(1, 1, 0);
    let c = app.client.clone();
    let l = c.listen(70, 16).unwrap();
    let mut socks = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..4 {
        let p = h.peer_connect(0, 70);
        let (s, _) = c.accept(l, true).unwrap();
        h.peer_wait_established(0, p);
        socks.push(s);
        peers.push(p);
    }
    const ROUNDS: usize = 6;
    let (done_tx, done_rx) = mpsc::channel::<(usize, u8, Instant)>();
    let threads: Vec<_> = socks
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let c: Arc<Client> = c.clone();
            let done = done_tx.clone();
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    // Two threads sleep inside the client, two on the eventfd themselves.
                    let byte = if i % 2 == 0 {
                        let mut b = [0u8; 1];
                        assert_eq!(c.recv(s, &mut b, true).unwrap(), 1);
                        b[0]
                    } else {
                        recv_by_polling(&c, s)
                    };
                    done.send((i, byte, Instant::now())).unwrap();
                }
            })
        })
        .collect();
    // Every thread is asleep before each byte goes out; the byte goes to one socket only,
    // so three threads keep sleeping through every wake-up.
    let order = [0usize, 3, 1, 2, 2, 0, 3, 1, 1, 3, 0, 2, 3, 2, 1, 0, 0, 1, 2, 3, 2, 3, 0, 1];
    assert_eq!(order.len(), 4 * ROUNDS);
    let mut slowest = Duration::ZERO;
    for (round, &k) in order.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(20));
        let sent = Instant::now();
        h.peer_send(0, peers[k], &[round as u8]);
        let (who, byte, at) = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((who, byte), (k, round as u8), "the byte reached the thread of its socket");
        let took = at.saturating_duration_since(sent);
        slowest = slowest.max(took);
        assert!(took < PROMPT, "round {round}: thread {k} woke after {took:?}");
    }
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("slowest delivery: {slowest:?}");
}

#[test]
fn concurrent_round_trips_from_four_threads_all_complete_promptly() {
    // Many threads issue round trips (info) at once while others sleep in recv: whoever
    // drains the completion ring files the others' completions and must wake them.
    let h = Harness::new(2);
    let app = h.add_app(1, 1, 0);
    let c = app.client.clone();
    let l = c.listen(71, 16).unwrap();
    let p = h.peer_connect(0, 71);
    let (s, _) = c.accept(l, true).unwrap();
    h.peer_wait_established(0, p);
    let t0 = Instant::now();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                for _ in 0..50 {
                    let t = Instant::now();
                    assert_eq!(c.info(s).unwrap().tcp_state, 1);
                    slowest = slowest.max(t.elapsed());
                }
                slowest
            })
        })
        .collect();
    for t in callers {
        let slowest = t.join().unwrap();
        assert!(slowest < PROMPT, "a round trip took {slowest:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(20));
}
