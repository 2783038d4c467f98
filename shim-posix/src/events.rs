//! Readiness of netpop sockets in the vocabulary of poll(2), select(2) and epoll(7), and the
//! emulated epoll interest list (level-triggered, `EPOLLET`, `EPOLLONESHOT`,
//! `EPOLLEXCLUSIVE`, `EPOLLRDHUP`), as plain Rust over a [`Pollable`] source so that the
//! rules can be tested without any socket.
//!
//! The rules follow Linux (`fs/eventpoll.c`, `net/ipv4/tcp.c:tcp_poll`): `EPOLLERR` and
//! `EPOLLHUP` are reported whether asked for or not; `EPOLLRDHUP` only when asked for; an
//! edge-triggered interest is reported again only after the socket changed (its instance
//! bumps a per-socket event counter on every change); a one-shot interest is disarmed after
//! one report until `EPOLL_CTL_MOD`; `EPOLL_CTL_MOD` re-arms and re-evaluates readiness.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use flowgroups::channel::Readiness;

use crate::errno::Errno;

/// poll/epoll event bits (the two share values on Linux).
pub(crate) const IN: u32 = libc::EPOLLIN as u32;
pub(crate) const PRI: u32 = libc::EPOLLPRI as u32;
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;
pub(crate) const ERR: u32 = libc::EPOLLERR as u32;
pub(crate) const HUP: u32 = libc::EPOLLHUP as u32;
pub(crate) const RDNORM: u32 = libc::EPOLLRDNORM as u32;
pub(crate) const RDBAND: u32 = libc::EPOLLRDBAND as u32;
pub(crate) const WRNORM: u32 = libc::EPOLLWRNORM as u32;
pub(crate) const WRBAND: u32 = libc::EPOLLWRBAND as u32;
pub(crate) const RDHUP: u32 = libc::EPOLLRDHUP as u32;
const ET: u32 = libc::EPOLLET as u32;
const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;
const WAKEUP: u32 = libc::EPOLLWAKEUP as u32;
/// What may accompany `EPOLLEXCLUSIVE` (Linux `EPOLLEXCLUSIVE_OK_BITS`).
const EXCLUSIVE_OK: u32 =
    IN | OUT | RDNORM | RDBAND | WRNORM | WRBAND | ERR | HUP | WAKEUP | ET | EXCLUSIVE;

/// The poll mask of a connected (or closing) netpop stream, from its channel readiness.
pub(crate) fn stream_mask(r: Readiness) -> u32 {
    let mut m = 0;
    if r.contains(Readiness::READABLE) {
        m |= IN | RDNORM;
    }
    if r.contains(Readiness::WRITABLE) {
        m |= OUT | WRNORM;
    }
    if r.contains(Readiness::RDHUP) {
        m |= IN | RDNORM | RDHUP;
    }
    if r.contains(Readiness::HUP) {
        m |= HUP;
    }
    if r.contains(Readiness::ERR) {
        m |= ERR;
    }
    m
}

/// The poll mask of a listening netpop socket.
pub(crate) fn listener_mask(r: Readiness) -> u32 {
    if r.intersects(Readiness::ACCEPTABLE | Readiness::READABLE) { IN | RDNORM } else { 0 }
}

/// A TCP socket that is neither connected, connecting nor listening: Linux reports it
/// writable and hung up (`tcp_poll` on `TCP_CLOSE`).
pub(crate) const UNCONNECTED_MASK: u32 = OUT | WRNORM | HUP;

/// A connection that failed or was reset: closed in both directions, `EPOLLERR` while the
/// error is pending.
pub(crate) fn failed_mask(error_pending: bool) -> u32 {
    let m = IN | RDNORM | RDHUP | OUT | WRNORM | HUP;
    if error_pending { m | ERR } else { m }
}

/// What `poll` reports for a descriptor given its mask and the `events` asked for:
/// errors and hang-ups always.
pub(crate) fn poll_revents(mask: u32, events: i16) -> i16 {
    let wanted = u32::from(events as u16) | ERR | HUP;
    (mask & wanted & 0xffff) as u16 as i16
}

/// select(2)'s view of a poll result (Linux `POLLIN_SET`, `POLLOUT_SET`, `POLLEX_SET`):
/// (readable, writable, exceptional).
pub(crate) fn select_bits(revents: i16) -> (bool, bool, bool) {
    let r = u32::from(revents as u16);
    (
        r & (IN | RDNORM | RDBAND | HUP | ERR) != 0,
        r & (OUT | WRNORM | WRBAND | ERR) != 0,
        r & PRI != 0,
    )
}

/// The poll events that stand for membership in select's read, write and except sets.
pub(crate) fn select_events(read: bool, write: bool, except: bool) -> i16 {
    let mut e = 0;
    if read {
        e |= IN | RDNORM | RDBAND;
    }
    if write {
        e |= OUT | WRNORM | WRBAND;
    }
    if except {
        e |= PRI;
    }
    e as u16 as i16
}

/// A socket's current poll mask and change counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PollState {
    /// poll/epoll bits that hold now.
    pub(crate) mask: u32,
    /// Moves whenever the socket changes; edge-triggered interests compare it.
    pub(crate) seq: u32,
}

/// Something an emulated epoll set can watch.
pub(crate) trait Pollable {
    /// The current state (may do work, e.g. finish a pending connect).
    fn poll_state(&self) -> PollState;
}

#[derive(Debug)]
struct Interest<S> {
    target: Weak<S>,
    events: u32,
    data: u64,
    /// Change counter at the last report (edge-triggered); `None`: report when ready.
    last_seq: Option<u32>,
    /// False after a one-shot report, until `EPOLL_CTL_MOD`.
    armed: bool,
}

/// The netpop part of one epoll set: fd -> interest. Interests hold their socket weakly:
/// once every fd of a socket is closed its interest disappears, as in Linux where an
/// epoll registration dies with the open file description.
#[derive(Debug)]
pub(crate) struct InterestList<S> {
    map: BTreeMap<i32, Interest<S>>,
    /// Where the next scan starts, so that a small `maxevents` serves every socket in turn.
    cursor: i32,
}

impl<S> Default for InterestList<S> {
    fn default() -> Self {
        InterestList { map: BTreeMap::new(), cursor: 0 }
    }
}

impl<S: Pollable> InterestList<S> {
    /// `epoll_ctl` for a netpop socket `target` known as `fd`. `event` is `(events, data)`
    /// (`None` for a null event pointer).
    pub(crate) fn ctl(
        &mut self,
        op: i32,
        fd: i32,
        target: &Arc<S>,
        event: Option<(u32, u64)>,
    ) -> Result<(), Errno> {
        // An entry whose socket is gone, or whose fd now names another socket, is stale.
        let live = self
            .map
            .get(&fd)
            .is_some_and(|i| i.target.upgrade().is_some_and(|t| Arc::ptr_eq(&t, target)));
        match op {
            libc::EPOLL_CTL_ADD => {
                let (events, data) = event.ok_or(libc::EFAULT)?;
                if live {
                    return Err(libc::EEXIST);
                }
                if events & EXCLUSIVE != 0 && events & !EXCLUSIVE_OK != 0 {
                    return Err(libc::EINVAL);
                }
                self.map.insert(
                    fd,
                    Interest {
                        target: Arc::downgrade(target),
                        events,
                        data,
                        last_seq: None,
                        armed: true,
                    },
                );
                Ok(())
            }
            libc::EPOLL_CTL_MOD => {
                let (events, data) = event.ok_or(libc::EFAULT)?;
                let Some(i) = self.map.get_mut(&fd).filter(|_| live) else {
                    return Err(libc::ENOENT);
                };
                if events & EXCLUSIVE != 0 || i.events & EXCLUSIVE != 0 {
                    return Err(libc::EINVAL);
                }
                i.events = events;
                i.data = data;
                i.last_seq = None;
                i.armed = true;
                Ok(())
            }
            libc::EPOLL_CTL_DEL => {
                if !live {
                    self.map.remove(&fd);
                    return Err(libc::ENOENT);
                }
                self.map.remove(&fd);
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }

    /// True if some interest's socket is still open (dead ones are dropped).
    pub(crate) fn has_live(&mut self) -> bool {
        self.map.retain(|_, i| i.target.strong_count() > 0);
        !self.map.is_empty()
    }

    /// The first `Some` that `f` gives for a live socket of the set (the shim asks for the
    /// channel client to sleep on).
    pub(crate) fn find_map_target<T>(&self, mut f: impl FnMut(&S) -> Option<T>) -> Option<T> {
        self.map.values().find_map(|i| i.target.upgrade().and_then(|t| f(&t)))
    }

    /// Appends up to `max - out.len()` ready events `(events, data)` to `out`, applying the
    /// edge-triggered and one-shot rules.
    pub(crate) fn collect(&mut self, max: usize, out: &mut Vec<(u32, u64)>) {
        if out.len() >= max || self.map.is_empty() {
            return;
        }
        let start = self.cursor;
        let order: Vec<i32> =
            self.map.range(start..).chain(self.map.range(..start)).map(|(&fd, _)| fd).collect();
        let mut dead = Vec::new();
        for fd in order {
            if out.len() >= max {
                self.cursor = fd;
                break;
            }
            let Some(i) = self.map.get_mut(&fd) else { continue };
            let Some(target) = i.target.upgrade() else {
                dead.push(fd);
                continue;
            };
            if !i.armed {
                continue;
            }
            let st = target.poll_state();
            let ready = st.mask & (i.events | ERR | HUP);
            if ready == 0 {
                continue;
            }
            if i.events & ET != 0 {
                if i.last_seq == Some(st.seq) {
                    continue;
                }
                i.last_seq = Some(st.seq);
            }
            if i.events & ONESHOT != 0 {
                i.armed = false;
            }
            out.push((ready, i.data));
            self.cursor = fd.saturating_add(1);
        }
        for fd in dead {
            self.map.remove(&fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug)]
    struct FakeSocket(Mutex<PollState>);

    impl FakeSocket {
        fn new(mask: u32) -> Arc<FakeSocket> {
            Arc::new(FakeSocket(Mutex::new(PollState { mask, seq: 0 })))
        }
        /// Something happened on the socket (its instance bumped the counter).
        fn change(&self, mask: u32) {
            let mut s = self.0.lock().unwrap();
            s.mask = mask;
            s.seq += 1;
        }
    }

    impl Pollable for FakeSocket {
        fn poll_state(&self) -> PollState {
            *self.0.lock().unwrap()
        }
    }

    fn ready(list: &mut InterestList<FakeSocket>, max: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        list.collect(max, &mut out);
        out
    }

    #[test]
    fn level_triggered_reports_while_ready() {
        let s = FakeSocket::new(IN | RDNORM);
        let mut l = InterestList::default();
        l.ctl(libc::EPOLL_CTL_ADD, 5, &s, Some((IN, 42))).unwrap();
        assert_eq!(ready(&mut l, 8), vec![(IN, 42)]);
        assert_eq!(ready(&mut l, 8), vec![(IN, 42)], "level: again while still readable");
        s.change(0);
        assert!(ready(&mut l, 8).is_empty());
    }

    #[test]
    fn edge_triggered_reports_once_per_change() {
        let s = FakeSocket::new(IN);
        let mut l = InterestList::default();
        l.ctl(libc::EPOLL_CTL_ADD, 5, &s, Some((IN | ET, 1))).unwrap();
        assert_eq!(ready(&mut l, 8).len(), 1, "ready at ADD: reported once");
        assert!(ready(&mut l, 8).is_empty(), "no change, no report");
        s.change(IN);
        assert_eq!(ready(&mut l, 8).len(), 1, "more data arrived");
        assert!(ready(&mut l, 8).is_empty());
        // A change that leaves the socket unready for the interest is not an event.
        s.change(OUT);
        assert!(ready(&mut l, 8).is_empty());
    }

    #[test]
    fn mod_rearms_edge_and_oneshot() {
        let s = FakeSocket::new(IN);
        let mut l = InterestList::default();
        l.ctl(libc::EPOLL_CTL_ADD, 5, &s, Some((IN | ONESHOT, 7))).unwrap();
        assert_eq!(ready(&mut l, 8).len(), 1);
        s.change(IN);
        assert!(ready(&mut l, 8).is_empty(), "one-shot stays disarmed");
        l.ctl(libc::EPOLL_CTL_MOD, 5, &s, Some((IN | ONESHOT, 8))).unwrap();
        assert_eq!(ready(&mut l, 8), vec![(IN, 8)], "MOD re-arms with the new data");
    }

    #[test]
    fn errors_and_hangups_are_always_reported_rdhup_only_on_request() {
        let s = FakeSocket::new(IN | RDNORM | RDHUP | HUP | ERR);
        let mut l = InterestList::default();
        l.ctl(libc::EPOLL_CTL_ADD, 3, &s, Some((OUT, 0))).unwrap();
        assert_eq!(ready(&mut l, 8), vec![(HUP | ERR, 0)]);
        l.ctl(libc::EPOLL_CTL_MOD, 3, &s, Some((IN | RDHUP, 0))).unwrap();
        assert_eq!(ready(&mut l, 8), vec![(IN | RDHUP | HUP | ERR, 0)]);
    }

    #[test]
    fn ctl_errors_match_linux() {
        let s = FakeSocket::new(0);
        let other = FakeSocket::new(0);
        let mut l = InterestList::default();
        assert_eq!(l.ctl(libc::EPOLL_CTL_MOD, 3, &s, Some((IN, 0))), Err(libc::ENOENT));
        assert_eq!(l.ctl(libc::EPOLL_CTL_DEL, 3, &s, None), Err(libc::ENOENT));
        assert_eq!(l.ctl(libc::EPOLL_CTL_ADD, 3, &s, None), Err(libc::EFAULT));
        l.ctl(libc::EPOLL_CTL_ADD, 3, &s, Some((IN, 0))).unwrap();
        assert_eq!(l.ctl(libc::EPOLL_CTL_ADD, 3, &s, Some((IN, 0))), Err(libc::EEXIST));
        // fd 3 closed and reused for another socket: the old registration is stale.
        assert!(l.ctl(libc::EPOLL_CTL_ADD, 3, &other, Some((IN, 0))).is_ok());
        assert_eq!(l.ctl(99, 3, &other, Some((IN, 0))), Err(libc::EINVAL));
        l.ctl(libc::EPOLL_CTL_DEL, 3, &other, None).unwrap();
        assert!(!l.has_live());
    }

    #[test]
    fn exclusive_rules() {
        let s = FakeSocket::new(IN);
        let mut l = InterestList::default();
        assert_eq!(
            l.ctl(libc::EPOLL_CTL_ADD, 3, &s, Some((IN | EXCLUSIVE | ONESHOT, 0))),
            Err(libc::EINVAL)
        );
        assert_eq!(
            l.ctl(libc::EPOLL_CTL_ADD, 3, &s, Some((IN | EXCLUSIVE | RDHUP, 0))),
            Err(libc::EINVAL)
        );
        l.ctl(libc::EPOLL_CTL_ADD, 3, &s, Some((IN | EXCLUSIVE, 0))).unwrap();
        assert_eq!(l.ctl(libc::EPOLL_CTL_MOD, 3, &s, Some((IN, 0))), Err(libc::EINVAL));
        assert_eq!(ready(&mut l, 8).len(), 1);
    }

    #[test]
    fn closed_sockets_leave_the_set() {
        let s = FakeSocket::new(IN);
        let mut l = InterestList::default();
        l.ctl(libc::EPOLL_CTL_ADD, 3, &s, Some((IN, 0))).unwrap();
        assert!(l.has_live());
        drop(s);
        assert!(ready(&mut l, 8).is_empty());
        assert!(!l.has_live());
    }

    #[test]
    fn small_maxevents_serves_every_socket_in_turn() {
        let socks: Vec<_> = (0..4).map(|_| FakeSocket::new(IN)).collect();
        let mut l = InterestList::default();
        for (k, s) in socks.iter().enumerate() {
            l.ctl(libc::EPOLL_CTL_ADD, 10 + k as i32, s, Some((IN, k as u64))).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let r = ready(&mut l, 1);
            assert_eq!(r.len(), 1);
            seen.push(r[0].1);
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }

    #[test]
    fn masks_follow_tcp_poll() {
        let r = Readiness::READABLE | Readiness::WRITABLE | Readiness::CONNECTED;
        assert_eq!(stream_mask(r), IN | RDNORM | OUT | WRNORM);
        assert_eq!(stream_mask(Readiness::RDHUP | Readiness::READABLE), IN | RDNORM | RDHUP);
        assert_eq!(listener_mask(Readiness::LISTENING), 0);
        assert_eq!(listener_mask(Readiness::LISTENING | Readiness::ACCEPTABLE), IN | RDNORM);
        assert_eq!(poll_revents(IN | OUT | HUP, libc::POLLIN), (IN | HUP) as i16);
        assert_eq!(poll_revents(RDHUP | IN, libc::POLLIN), IN as i16, "RDHUP only on request");
    }

    #[test]
    fn select_sets_follow_linux() {
        assert_eq!(select_bits(libc::POLLHUP), (true, false, false));
        assert_eq!(select_bits(libc::POLLERR), (true, true, false));
        assert_eq!(select_bits(libc::POLLOUT), (false, true, false));
        assert_eq!(select_bits(libc::POLLPRI), (false, false, true));
        assert_eq!(select_events(true, false, true) & libc::POLLIN, libc::POLLIN);
    }
}
