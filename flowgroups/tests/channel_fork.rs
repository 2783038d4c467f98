//! What a forked child does with the client it inherited: lets go of it without a word to
//! the instances, so the parent's sockets are untouched, and without keeping the parent's
//! registration socket open (the plane takes its hang-up as the parent's death).

mod channel_support;

use std::io::Read;
use std::time::Duration;

use channel_support::{Harness, register_through_plane};

#[test]
fn a_forgotten_client_hangs_up_its_registration_and_sends_nothing() {
    let h = Harness::new(1);
    let (c, mut plane_end) = register_through_plane(&h, 7, "fork");
    let l = c.listen(95, 4).unwrap();
    let p = h.peer_connect(0, 95);
    let (s, _) = c.accept(l, true).unwrap();
    h.peer_wait_established(0, p);
    let requests_before = h.with(|w| w.lanes[0].hub.app(7).unwrap().totals().requests);

    c.forget_after_fork();
    assert!(c.is_forgotten());
    // Its copy of the registration socket is closed at once (here it is the only one, so
    // the plane sees the hang-up; after a real fork the parent's copy keeps it open).
    plane_end.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(plane_end.read(&mut byte).unwrap(), 0, "registration socket closed");

    // Nothing reaches the instance: closing, aborting and sending all fail locally.
    assert_eq!(c.close(s).unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(c.abort(s).unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(c.send(s, b"x", false).unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert_eq!(c.close(l).unwrap_err().raw_os_error(), Some(libc::EBADF));
    assert!(c.listen(96, 4).is_err());
    assert!(c.take_error(s).is_none());
    assert!(c.readiness(s).is_empty());
    drop(c);

    // The instance still serves the connection and the listener it had.
    let before = h.with(|w| w.iterations);
    h.wait_for("a few instance iterations", Duration::from_secs(5), |w| {
        (w.iterations > before + 20).then_some(())
    });
    h.with(|w| {
        let app = w.lanes[0].hub.app(7).unwrap();
        assert_eq!(app.totals().requests, requests_before, "no request was sent");
        assert_eq!(app.connection_count(), 1, "the connection is still there");
        assert_eq!(w.lanes[0].hub.registry().subscribers(95), 1, "and the listener");
        assert_eq!(
            w.lanes[0].peer.state(p).unwrap(),
            tcp_core::tcp::State::Established,
            "the peer saw no FIN and no reset"
        );
    });
}
