//! Blocking calls and signals: with a sleep that reports a signal (as the shim installs),
//! a blocking call returns `Interrupted`, and a request it was waiting for is finished
//! later without losing a connection or a socket slot.
//!
//! The signal is simulated: the test's sleep function reports one when the calling thread
//! armed it, which is exactly what a `ppoll` that returned `EINTR` looks like to the client.

mod channel_support;

use std::cell::Cell;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use channel_support::{Harness, peer_ip};
use flowgroups::channel::client::Client;
use flowgroups::channel::{AppSegment, Readiness};
use flowgroups::shm::sys::poll_readable;

thread_local! {
    /// A signal is pending for this thread: its next sleep is interrupted.
    static SIGNAL: Cell<bool> = const { Cell::new(false) };
}

fn raise_signal() {
    SIGNAL.with(|s| s.set(true));
}

fn sleep_or_interrupt(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    if SIGNAL.with(|s| s.replace(false)) {
        return Err(io::Error::from_raw_os_error(libc::EINTR));
    }
    poll_readable(&[fd.as_raw_fd()], Some(timeout)).map(|r| r.is_ready(0))
}

struct App {
    client: Arc<Client>,
    _segment: AppSegment,
}

fn interruptible_app(h: &Harness) -> App {
    let app = h.add_app(1, 1, 0);
    let mut client = Arc::into_inner(app.client).unwrap();
    client.set_sleep(sleep_or_interrupt);
    App { client: Arc::new(client), _segment: app.segment }
}

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
fn a_signal_interrupts_a_blocking_recv_and_the_socket_stays_usable() {
    let h = Harness::new(1);
    let c = interruptible_app(&h).client;
    let l = c.listen(97, 4).unwrap();
    let p = h.peer_connect(0, 97);
    let (s, _) = c.accept(l, true).unwrap();
    let mut buf = [0u8; 16];
    raise_signal();
    let t0 = Instant::now();
    let e = c.recv(s, &mut buf, true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted);
    assert_eq!(e.raw_os_error(), Some(libc::EINTR));
    assert!(t0.elapsed() < Duration::from_millis(500), "returned at the signal");
    h.peer_send(0, p, b"after");
    let n = c.recv(s, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"after");
}

#[test]
fn an_accept_interrupted_while_the_instance_answers_keeps_the_connection() {
    let h = Harness::new(1);
    let c = interruptible_app(&h).client;
    let l = c.listen(98, 4).unwrap();
    let p = h.peer_connect(0, 98);
    eventually(&c, "a connection to accept", || c.readiness(l).contains(Readiness::ACCEPTABLE));
    let free = c.free_slots();
    {
        // The instance is paused: the Accept request waits in the ring while the signal
        // ends the call; the instance answers after.
        let _paused = h.lock();
        raise_signal();
        assert_eq!(c.accept(l, true).unwrap_err().kind(), ErrorKind::Interrupted);
    }
    // The accepted connection is kept for the next accept, not dropped.
    eventually(&c, "the parked connection", || c.readiness(l).contains(Readiness::ACCEPTABLE));
    let (s, peer) = c.accept(l, false).unwrap();
    assert_eq!(*peer.ip(), peer_ip(0));
    h.peer_send(0, p, b"kept");
    let mut buf = [0u8; 8];
    let n = c.recv(s, &mut buf, true).unwrap();
    assert_eq!(&buf[..n], b"kept");
    assert_eq!(c.free_slots(), free - 1, "exactly one slot for the one connection");
    c.close(s).unwrap();
    assert!(h.peer_recv_to_eof(0, p).is_empty());
    eventually(&c, "slot back", || c.free_slots() == free);
}

#[test]
fn interrupted_connect_and_listen_leak_no_slot_and_no_subscription() {
    let h = Harness::new(1);
    let c = interruptible_app(&h).client;
    let peer_listener = h
        .with(|w| w.lanes[0].peer.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6000), 8))
        .unwrap();
    {
        let _paused = h.lock();
        raise_signal();
        let e = c.connect(SocketAddrV4::new(peer_ip(0), 6000), true).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Interrupted);
        raise_signal();
        assert_eq!(c.listen(99, 4).unwrap_err().kind(), ErrorKind::Interrupted);
    }
    // The instance made the connection and the subscription after the callers left; the
    // client undoes both when the answers arrive.
    eventually(&c, "every slot back", || c.free_slots() == 64);
    h.wait_for("listener gone", Duration::from_secs(10), |w| {
        (w.lanes[0].hub.registry().subscribers(99) == 0).then_some(())
    });
    h.wait_for("orphan connection gone", Duration::from_secs(10), |w| {
        (w.lanes[0].hub.app(1).unwrap().connection_count() == 0).then_some(())
    });
    // Both work afterwards.
    let l = c.listen(99, 4).unwrap();
    let s = c.connect(SocketAddrV4::new(peer_ip(0), 6000), true).unwrap();
    assert!(c.readiness(s).contains(Readiness::CONNECTED));
    let _ = h.with(|w| w.lanes[0].peer.accept(peer_listener));
    c.close(s).unwrap();
    c.close(l).unwrap();
}
