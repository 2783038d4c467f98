//! A netpop socket as the application sees it through its fds: the POSIX state machine
//! (fresh, bound, listening, connecting, connected, failed) over the channel client, with
//! Linux's errno for every misuse.
//!
//! A [`SockDesc`] is an open file description: `dup`ed fds share it (and its `O_NONBLOCK`
//! flag and its options), and its netpop socket is closed when the last fd goes (`Drop`).
//! Blocking calls never hold the state lock while they sleep.
//!
//! `MSG_PEEK` and `FIONREAD` look at the socket's receive ring in place
//! ([`Client::peek`](flowgroups::channel::client::Client::peek),
//! [`Client::readable`](flowgroups::channel::client::Client::readable)): nothing is taken
//! from the channel before the application reads it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flowgroups::channel::proto::ShutdownHow;
use flowgroups::channel::{Readiness, SocketId};

use crate::errno::Errno;
use crate::events::{self, PollState, Pollable};
use crate::netpop::{self, Deadline, Link, block_on, io_errno};
use crate::opts::SockOpts;

/// Ephemeral ports tried by `listen` on a socket bound to port 0 (Linux's default range).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One netpop socket of one registered client.
#[derive(Clone, Debug)]
struct Conn {
    link: Link,
    id: SocketId,
}

#[derive(Debug)]
enum State {
    /// No netpop socket yet; `bind` only records the address.
    Fresh {
        bound: Option<SocketAddrV4>,
    },
    /// `conn` is `None` in a forked child until it re-subscribes to the port.
    Listening {
        conn: Option<Conn>,
        addr: SocketAddrV4,
        backlog: u32,
    },
    Connecting {
        conn: Conn,
    },
    Connected {
        conn: Conn,
    },
    /// The connect failed; the slot is kept until close.
    Failed {
        conn: Option<Conn>,
    },
}

/// What `accept` hands back.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) desc: Arc<SockDesc>,
    pub(crate) peer: SocketAddrV4,
}

/// A netpop socket's open file description.
#[derive(Debug)]
pub(crate) struct SockDesc {
    nonblocking: AtomicBool,
    state: Mutex<State>,
    opts: Mutex<SockOpts>,
    /// SO_ERROR of a failed connect, reported once.
    pending_error: AtomicI32,
    /// A non-blocking connect said EINPROGRESS and no later `connect` has reported the
    /// outcome yet (Linux's `SS_CONNECTING`: the next `connect` returns 0 once, not
    /// EISCONN).
    connect_unreported: AtomicBool,
}

impl Drop for SockDesc {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let conn = match state {
            State::Listening { conn, .. } | State::Failed { conn } => conn.take(),
            State::Connecting { conn } | State::Connected { conn } => Some(conn.clone()),
            State::Fresh { .. } => None,
        };
        let reset = self.opts.get_mut().unwrap_or_else(PoisonError::into_inner).resets_on_close();
        // A forked child never closes its parent's sockets: they are the parent's.
        if let Some(c) = conn.filter(|c| c.link.is_current()) {
            // SO_LINGER {on, 0}: the peer gets a RST, as from Linux.
            let _ = if reset { c.link.client.abort(c.id) } else { c.link.client.close(c.id) };
        }
    }
}

impl SockDesc {
    /// A new unconnected socket whose channel buffers hold `buffer` bytes.
    pub(crate) fn new(nonblocking: bool, buffer: u32) -> SockDesc {
        SockDesc {
            nonblocking: AtomicBool::new(nonblocking),
            state: Mutex::new(State::Fresh { bound: None }),
            opts: Mutex::new(SockOpts::new(buffer)),
            pending_error: AtomicI32::new(0),
            connect_unreported: AtomicBool::new(false),
        }
    }

    fn connected(conn: Conn, opts: SockOpts, nonblocking: bool) -> SockDesc {
        let d = SockDesc::new(nonblocking, 0);
        *lock(&d.state) = State::Connected { conn };
        *lock(&d.opts) = opts;
        d
    }

    /// `O_NONBLOCK` of this description.
    pub(crate) fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Sets `O_NONBLOCK` (fcntl F_SETFL, ioctl FIONBIO).
    pub(crate) fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    // -----------------------------------------------------------------------------------
    // Setting up

    /// `bind`: records the address for `listen`, `connect` (the source port) and
    /// `getsockname`.
    pub(crate) fn bind(&self, addr: SocketAddrV4) -> Result<(), Errno> {
        match &mut *lock(&self.state) {
            State::Fresh { bound: bound @ None } => {
                *bound = Some(addr);
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }

    /// `listen`: replicates a listener on every instance (an unbound socket or port 0 gets
    /// an ephemeral port, as on Linux).
    pub(crate) fn listen(&self, backlog: i32) -> Result<(), Errno> {
        let backlog = u32::try_from(backlog.max(0)).unwrap_or(0);
        let mut st = lock(&self.state);
        let bound = match &mut *st {
            State::Fresh { bound } => *bound,
            State::Listening { backlog: b, .. } => {
                *b = backlog;
                return Ok(());
            }
            _ => return Err(libc::EINVAL),
        };
        let link = netpop::current_link()?;
        let ip = bound.map_or(Ipv4Addr::UNSPECIFIED, |a| *a.ip());
        let (id, port) = match bound.map(|a| a.port()).filter(|&p| p != 0) {
            Some(port) => (link.client.listen(port, backlog).map_err(io_errno)?, port),
            None => listen_ephemeral(&link, backlog)?,
        };
        // The instances give the listener's options to every connection they accept
        // from it (as Linux does), so accept needs no round trip for them.
        for o in lock(&self.opts).connection_options() {
            let _ = link.client.set_option(id, o);
        }
        let defer = lock(&self.opts).get(libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT);
        if defer.is_ok_and(|v| v != 0i32.to_ne_bytes()) {
            netpop::notice_once(1, || {
                "TCP_DEFER_ACCEPT is accepted but not emulated: connections are handed over at once"
                    .into()
            });
        }
        *st = State::Listening {
            conn: Some(Conn { link, id }),
            addr: SocketAddrV4::new(ip, port),
            backlog,
        };
        Ok(())
    }

    /// The listener's netpop socket for this process, re-subscribing to the port in a
    /// forked child (listeners are global by port, DESIGN.md "Single-socket abstraction").
    fn listener_conn(&self) -> Result<Conn, Errno> {
        let mut st = lock(&self.state);
        let State::Listening { conn, addr, backlog } = &mut *st else {
            return Err(libc::EINVAL);
        };
        if let Some(c) = conn.as_ref().filter(|c| c.link.is_current()) {
            return Ok(c.clone());
        }
        let link = netpop::current_link()?;
        let id = link.client.listen(addr.port(), *backlog).map_err(io_errno)?;
        for o in lock(&self.opts).connection_options() {
            let _ = link.client.set_option(id, o);
        }
        let c = Conn { link, id };
        // The parent's socket id is left alone: it belongs to the parent's client.
        *conn = Some(c.clone());
        Ok(c)
    }

    /// `accept4`: one connection, waiting for it unless non-blocking.
    pub(crate) fn accept(&self, nonblocking_child: bool) -> Result<Accepted, Errno> {
        let conn = self.listener_conn()?;
        let blocking = !self.is_nonblocking();
        let deadline = Deadline::from_timeout(lock(&self.opts).rcv_timeout);
        let client = &conn.link.client;
        let (id, peer) =
            block_on(client, blocking, deadline, || match client.accept(conn.id, false) {
                Ok(v) => Ok(Some(v)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(io_errno(e)),
            })?;
        // Its instance gave it the listener's options already.
        let opts = lock(&self.opts).clone();
        let child = Conn { link: conn.link.clone(), id };
        Ok(Accepted { desc: Arc::new(SockDesc::connected(child, opts, nonblocking_child)), peer })
    }

    /// `connect`.
    pub(crate) fn connect(&self, addr: SocketAddrV4) -> Result<(), Errno> {
        {
            let mut st = lock(&self.state);
            match &mut *st {
                // The outcome of a non-blocking connect is reported once, by this call.
                State::Failed { .. } if self.connect_unreported.swap(false, Ordering::Relaxed) => {
                    return Err(self.take_pending_error().unwrap_or(libc::ECONNABORTED));
                }
                State::Fresh { .. } | State::Failed { .. } => {
                    if let State::Failed { conn: Some(old) } = &*st {
                        if old.link.is_current() {
                            let _ = old.link.client.close(old.id);
                        }
                    }
                    // bind() before connect(): the connection leaves from the bound port.
                    let bound_port = match &*st {
                        State::Fresh { bound } => bound.map(|a| a.port()),
                        _ => None,
                    };
                    let link = netpop::current_link()?;
                    let id = link.client.connect_from(addr, bound_port, false).map_err(io_errno)?;
                    for o in lock(&self.opts).connection_options() {
                        let _ = link.client.set_option(id, o);
                    }
                    self.pending_error.store(0, Ordering::Relaxed);
                    *st = State::Connecting { conn: Conn { link, id } };
                    if self.is_nonblocking() {
                        self.connect_unreported.store(true, Ordering::Relaxed);
                        return Err(libc::EINPROGRESS);
                    }
                }
                State::Connecting { .. } => {
                    self.refresh(&mut st);
                    match &*st {
                        State::Connecting { .. } if self.is_nonblocking() => {
                            return Err(libc::EALREADY);
                        }
                        State::Connecting { .. } => {}
                        State::Connected { .. } => {
                            self.connect_unreported.store(false, Ordering::Relaxed);
                            return Ok(());
                        }
                        _ => return Err(self.take_pending_error().unwrap_or(libc::ECONNABORTED)),
                    }
                }
                State::Connected { .. }
                    if self.connect_unreported.swap(false, Ordering::Relaxed) =>
                {
                    return Ok(());
                }
                State::Connected { .. } | State::Listening { .. } => return Err(libc::EISCONN),
            }
        }
        // Blocking: wait for the handshake to finish, without holding the lock.
        let conn = self.any_conn().ok_or(libc::EBADF)?;
        let deadline = Deadline::from_timeout(lock(&self.opts).snd_timeout);
        let done = block_on(&conn.link.client, true, deadline, || {
            let mut st = lock(&self.state);
            self.refresh(&mut st);
            Ok(match &*st {
                State::Connecting { .. } => None,
                State::Connected { .. } => Some(true),
                _ => Some(false),
            })
        });
        match done {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.take_pending_error().unwrap_or(libc::ECONNABORTED)),
            // Linux: a blocking connect that times out (SO_SNDTIMEO) says EINPROGRESS.
            Err(libc::EAGAIN) => Err(libc::EINPROGRESS),
            Err(e) => Err(e),
        }
    }

    /// Moves a pending connect on once its instance reported the outcome.
    fn refresh(&self, st: &mut State) {
        let State::Connecting { conn } = st else { return };
        if !conn.link.is_current() {
            return;
        }
        let r = conn.link.client.readiness(conn.id);
        if r.contains(Readiness::CONNECTED) && !r.contains(Readiness::ERR) {
            *st = State::Connected { conn: conn.clone() };
        } else if r.intersects(Readiness::ERR | Readiness::HUP) {
            let e = conn.link.client.take_error(conn.id).map_or(libc::ECONNREFUSED, io_errno);
            self.pending_error.store(e, Ordering::Relaxed);
            *st = State::Failed { conn: Some(conn.clone()) };
        }
    }

    fn take_pending_error(&self) -> Option<Errno> {
        Some(self.pending_error.swap(0, Ordering::Relaxed)).filter(|&e| e != 0)
    }

    fn any_conn(&self) -> Option<Conn> {
        match &*lock(&self.state) {
            State::Listening { conn, .. } | State::Failed { conn } => conn.clone(),
            State::Connecting { conn } | State::Connected { conn } => Some(conn.clone()),
            State::Fresh { .. } => None,
        }
    }

    /// The connection for a data transfer, waiting for a pending connect if blocking.
    /// `for_write` chooses Linux's errno for a socket that never connected (EPIPE for
    /// writes, ENOTCONN for reads).
    fn stream(&self, blocking: bool, for_write: bool) -> Result<Conn, Errno> {
        loop {
            let pending = {
                let mut st = lock(&self.state);
                self.refresh(&mut st);
                match &*st {
                    State::Connected { conn } if conn.link.is_current() => return Ok(conn.clone()),
                    // Inherited across fork: the connection belongs to the parent's app.
                    State::Connected { .. } => return Err(libc::ENOTCONN),
                    State::Connecting { conn } => conn.clone(),
                    State::Failed { .. } => {
                        return Err(self.take_pending_error().unwrap_or(if for_write {
                            libc::EPIPE
                        } else {
                            libc::ENOTCONN
                        }));
                    }
                    State::Fresh { .. } | State::Listening { .. } => {
                        return Err(if for_write { libc::EPIPE } else { libc::ENOTCONN });
                    }
                }
            };
            block_on(&pending.link.client, blocking, Deadline::NEVER, || {
                let mut st = lock(&self.state);
                self.refresh(&mut st);
                Ok((!matches!(&*st, State::Connecting { .. })).then_some(()))
            })?;
        }
    }

    // -----------------------------------------------------------------------------------
    // Data

    /// `recv` with `MSG_PEEK`, `MSG_DONTWAIT` and `MSG_WAITALL`.
    pub(crate) fn recv(&self, buf: &mut [u8], flags: i32) -> Result<usize, Errno> {
        if flags & libc::MSG_OOB != 0 {
            return Err(libc::EINVAL);
        }
        if flags & libc::MSG_ERRQUEUE != 0 {
            return Err(libc::EAGAIN);
        }
        if flags & libc::MSG_TRUNC != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        let blocking = !self.is_nonblocking() && flags & libc::MSG_DONTWAIT == 0;
        let conn = self.stream(blocking, false)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Deadline::from_timeout(lock(&self.opts).rcv_timeout);
        let client = &conn.link.client;
        if flags & libc::MSG_PEEK != 0 {
            return block_on(client, blocking, deadline, || match client.peek(conn.id, buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(io_errno(e)),
            });
        }
        let wait_all = flags & libc::MSG_WAITALL != 0 && blocking;
        let mut got = 0;
        loop {
            let rest = buf.get_mut(got..).unwrap_or(&mut []);
            let step =
                block_on(client, blocking, deadline, || match client.recv(conn.id, rest, false) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(io_errno(e)),
                });
            match step {
                Ok(0) => return Ok(got),
                Ok(n) => got += n,
                // Bytes already taken are the caller's: report them, not the error.
                Err(_) if got > 0 => return Ok(got),
                Err(e) => return Err(e),
            }
            if !wait_all || got >= buf.len() {
                return Ok(got);
            }
        }
    }

    /// `send`: blocking sends everything (or fails), non-blocking what fits.
    pub(crate) fn send(&self, data: &[u8], flags: i32) -> Result<usize, Errno> {
        if flags & libc::MSG_OOB != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        let blocking = !self.is_nonblocking() && flags & libc::MSG_DONTWAIT == 0;
        let conn = self.stream(blocking, true)?;
        let deadline = Deadline::from_timeout(lock(&self.opts).snd_timeout);
        let client = &conn.link.client;
        let mut sent = 0;
        while sent < data.len() {
            let rest = data.get(sent..).unwrap_or(&[]);
            let step =
                block_on(client, blocking, deadline, || match client.send(conn.id, rest, false) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(io_errno(e)),
                });
            match step {
                Ok(n) => sent += n,
                Err(_) if sent > 0 => return Ok(sent),
                Err(e) => return Err(e),
            }
            if !blocking {
                break;
            }
        }
        Ok(sent)
    }

    /// `FIONREAD`: bytes readable now, without taking them.
    pub(crate) fn readable_bytes(&self) -> Result<usize, Errno> {
        match &*lock(&self.state) {
            State::Listening { .. } => Err(libc::EINVAL),
            State::Connected { conn } if conn.link.is_current() => {
                Ok(conn.link.client.readable(conn.id))
            }
            _ => Ok(0),
        }
    }

    /// `shutdown`.
    pub(crate) fn shutdown(&self, how: i32) -> Result<(), Errno> {
        let how = match how {
            libc::SHUT_RD => ShutdownHow::Read,
            libc::SHUT_WR => ShutdownHow::Write,
            libc::SHUT_RDWR => ShutdownHow::Both,
            _ => return Err(libc::EINVAL),
        };
        let conn = match &*lock(&self.state) {
            State::Connected { conn } | State::Connecting { conn } if conn.link.is_current() => {
                conn.clone()
            }
            _ => return Err(libc::ENOTCONN),
        };
        conn.link.client.shutdown(conn.id, how).map_err(io_errno)
    }

    // -----------------------------------------------------------------------------------
    // Names and options

    /// `getsockname`.
    pub(crate) fn local_addr(&self) -> Result<SocketAddrV4, Errno> {
        match &*lock(&self.state) {
            State::Fresh { bound } => {
                Ok(bound.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
            }
            State::Listening { addr, .. } => Ok(*addr),
            State::Connecting { conn }
            | State::Connected { conn }
            | State::Failed { conn: Some(conn) } => Ok(conn
                .link
                .client
                .addresses(conn.id)
                .map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |a| a.0)),
            State::Failed { conn: None } => Ok(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        }
    }

    /// `getpeername`.
    pub(crate) fn peer_addr(&self) -> Result<SocketAddrV4, Errno> {
        let mut st = lock(&self.state);
        self.refresh(&mut st);
        match &*st {
            State::Connected { conn } => {
                conn.link.client.addresses(conn.id).map(|a| a.1).map_err(io_errno)
            }
            _ => Err(libc::ENOTCONN),
        }
    }

    /// `getsockopt`, in Linux's byte format.
    pub(crate) fn get_option(&self, level: i32, name: i32) -> Result<Vec<u8>, Errno> {
        let int = |v: i32| Ok(v.to_ne_bytes().to_vec());
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                let mut st = lock(&self.state);
                self.refresh(&mut st);
                if let Some(e) = self.take_pending_error() {
                    return int(e);
                }
                let e = match &*st {
                    State::Connected { conn } if conn.link.is_current() => {
                        conn.link.client.take_error(conn.id).map_or(0, io_errno)
                    }
                    _ => 0,
                };
                int(e)
            }
            (libc::SOL_SOCKET, libc::SO_TYPE) => int(libc::SOCK_STREAM),
            (libc::SOL_SOCKET, libc::SO_DOMAIN) => int(libc::AF_INET),
            (libc::SOL_SOCKET, libc::SO_PROTOCOL) => int(libc::IPPROTO_TCP),
            (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
                int(i32::from(matches!(&*lock(&self.state), State::Listening { .. })))
            }
            _ => lock(&self.opts).get(level, name),
        }
    }

    /// `setsockopt`.
    pub(crate) fn set_option(&self, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
        let apply = lock(&self.opts).set(level, name, value)?;
        if let Some(option) = apply {
            let conn = match &*lock(&self.state) {
                State::Connected { conn }
                | State::Connecting { conn }
                | State::Listening { conn: Some(conn), .. }
                    if conn.link.is_current() =>
                {
                    Some(conn.clone())
                }
                _ => None,
            };
            if let Some(c) = conn {
                c.link.client.set_option(c.id, option).map_err(io_errno)?;
            }
        }
        Ok(())
    }

    /// The channel client this socket uses now, if it has a netpop socket.
    pub(crate) fn link(&self) -> Option<Link> {
        self.any_conn().map(|c| c.link).filter(Link::is_current)
    }
}

fn listen_ephemeral(link: &Link, backlog: u32) -> Result<(SocketId, u16), Errno> {
    let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
    // Start somewhere different in every process; walk from there.
    let seed =
        std::process::id().wrapping_mul(2_654_435_761) ^ (std::ptr::from_ref(link) as usize as u32);
    let mut last = libc::EADDRINUSE;
    for k in 0..64u32 {
        let port = EPHEMERAL.start()
            + u16::try_from(seed.wrapping_add(k.wrapping_mul(7919)) % span).unwrap_or(0);
        match link.client.listen(port, backlog) {
            Ok(id) => return Ok((id, port)),
            Err(e) => {
                last = io_errno(e);
                if last != libc::EADDRINUSE {
                    break;
                }
            }
        }
    }
    Err(last)
}

impl Pollable for SockDesc {
    fn poll_state(&self) -> PollState {
        let listener = {
            let st = lock(&self.state);
            matches!(&*st, State::Listening { .. })
        };
        if listener {
            return match self.listener_conn() {
                Ok(c) => {
                    let r = c.link.client.readiness(c.id);
                    let mask = events::listener_mask(r);
                    let seq =
                        c.link.client.event_count(c.id).wrapping_mul(2) | u32::from(mask != 0);
                    PollState { mask, seq }
                }
                Err(_) => PollState { mask: events::ERR, seq: 0 },
            };
        }
        let mut st = lock(&self.state);
        self.refresh(&mut st);
        match &*st {
            State::Fresh { .. } => PollState { mask: events::UNCONNECTED_MASK, seq: 0 },
            State::Listening { .. } | State::Connecting { .. } => PollState { mask: 0, seq: 0 },
            State::Connected { conn } if conn.link.is_current() => {
                let mask = events::stream_mask(conn.link.client.readiness(conn.id));
                PollState { mask, seq: conn.link.client.event_count(conn.id) }
            }
            State::Connected { .. } => PollState { mask: events::failed_mask(false), seq: 0 },
            State::Failed { .. } => PollState {
                mask: events::failed_mask(self.pending_error.load(Ordering::Relaxed) != 0),
                seq: 1,
            },
        }
    }
}
