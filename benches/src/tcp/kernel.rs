//! The reference: the Linux kernel's TCP over loopback (127.0.0.1), client and server in
//! one thread pinned to one CPU, `std::net` sockets made non-blocking and one epoll set.
//!
//! On loopback the kernel processes a segment's receive side in softirq context, normally
//! on the return from the sending system call on the same CPU, occasionally in that CPU's
//! `ksoftirqd` thread; the meter counts both (see [`super::cpu`]). Loopback's MTU is
//! 64 KiB and it passes GSO super-packets through whole, so the kernel's bulk figure is not
//! one of 1,500-byte segments; BENCHMARKS.md says so beside it.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{APP_CHUNK, Bound, DriverStats, REQUEST, RESPONSE};

/// Listen backlog for the churn server: room for every connection in flight.
const BACKLOG: libc::c_int = 4096;
/// Token of the listening socket in the epoll set (connection tokens are their fds).
const LISTENER_TOKEN: u64 = u64::MAX;
/// Longest wait in `epoll_wait`, so a stuck run still reaches its end.
const WAIT_MS: libc::c_int = 10;

/// A level-triggered epoll set.
#[derive(Debug)]
struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag word and returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn add_readable(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: both fds are open; `event` is a live epoll_event the kernel copies.
        let rc =
            unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn wait(&self, events: &mut [libc::epoll_event]) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` is a live, writable array of at least `max` epoll_events.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, WAIT_MS) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// A listener on an ephemeral port of 127.0.0.1, non-blocking, with a backlog of
/// [`BACKLOG`] (std listens with a smaller one; a second `listen` raises it).
fn loopback_listener() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    // SAFETY: the fd is a bound, listening TCP socket owned by `listener`.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// One connection the churn driver tracks, indexed by fd.
#[derive(Debug)]
enum Conn {
    /// The client end; counts response bytes.
    Client(TcpStream, usize),
    /// The server end, waiting for the request.
    Server(TcpStream),
}

/// Short connections over loopback with `concurrency` in flight; the same exchange as
/// [`super::pair::churn`]. `done` counts connections whose client saw the whole response and
/// the end of stream.
pub fn churn<B: Bound>(concurrency: usize, bound: &mut B) -> io::Result<DriverStats> {
    let (listener, addr) = loopback_listener()?;
    let epoll = Epoll::new()?;
    epoll.add_readable(listener.as_raw_fd(), LISTENER_TOKEN)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0u8; 64];
    let (mut started, mut done, mut failures, mut open) = (0u64, 0u64, 0u64, 0usize);

    let open_connections = |conns: &mut Vec<Option<Conn>>,
                            started: &mut u64,
                            open: &mut usize,
                            bound: &B|
     -> io::Result<()> {
        while *open < concurrency && bound.may_start(*started) {
            // A blocking connect on loopback returns once the handshake is done, which the
            // kernel completes inside the call while the accept queue has room.
            let mut stream = TcpStream::connect(addr)?;
            stream.set_nonblocking(true)?;
            stream.write_all(REQUEST)?;
            let fd = stream.as_raw_fd();
            epoll.add_readable(fd, fd as u64)?;
            store(conns, fd, Conn::Client(stream, 0));
            *started += 1;
            *open += 1;
        }
        Ok(())
    };

    open_connections(&mut conns, &mut started, &mut open, bound)?;
    while open > 0 && (bound.keep_going(done) || bound.finish_in_flight()) {
        let n = epoll.wait(&mut events)?;
        for event in &events[..n] {
            if event.u64 == LISTENER_TOKEN {
                accept_all(&listener, &epoll, &mut conns, &mut buf, &mut failures)?;
                continue;
            }
            let fd = event.u64 as RawFd;
            let Some(slot) = conns.get_mut(fd as usize) else { continue };
            match slot {
                Some(Conn::Server(stream)) => match serve(stream, &mut buf) {
                    Served::NotYet => {}
                    Served::Done => *slot = None,
                    Served::Failed => {
                        failures += 1;
                        *slot = None;
                    }
                },
                Some(Conn::Client(stream, got)) => loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            if *got == RESPONSE.len() {
                                done += 1;
                            } else {
                                failures += 1;
                            }
                            // Dropping the stream closes it (the client's FIN), which also
                            // takes it out of the epoll set.
                            *slot = None;
                            open -= 1;
                            break;
                        }
                        Ok(k) => *got += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            failures += 1;
                            *slot = None;
                            open -= 1;
                            break;
                        }
                    }
                },
                None => {}
            }
        }
        open_connections(&mut conns, &mut started, &mut open, bound)?;
    }
    Ok(DriverStats { done, failures, frames: 0, timer_skips: 0 })
}

fn store(conns: &mut Vec<Option<Conn>>, fd: RawFd, conn: Conn) {
    let i = fd as usize;
    if conns.len() <= i {
        conns.resize_with(i + 1, || None);
    }
    conns[i] = Some(conn);
}

/// Accepts every pending connection and serves those whose request is already there.
fn accept_all(
    listener: &TcpListener,
    epoll: &Epoll,
    conns: &mut Vec<Option<Conn>>,
    buf: &mut [u8],
    failures: &mut u64,
) -> io::Result<()> {
    loop {
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        stream.set_nonblocking(true)?;
        match serve(&mut stream, buf) {
            Served::Done => {}
            Served::Failed => *failures += 1,
            Served::NotYet => {
                let fd = stream.as_raw_fd();
                epoll.add_readable(fd, fd as u64)?;
                store(conns, fd, Conn::Server(stream));
            }
        }
    }
}

enum Served {
    NotYet,
    Done,
    Failed,
}

/// The server's side of one exchange: read the request, answer; the caller drops (closes)
/// the stream when this returns `Done` or `Failed`.
fn serve(stream: &mut TcpStream, buf: &mut [u8]) -> Served {
    match stream.read(buf) {
        Ok(n) if n == REQUEST.len() => match stream.write(RESPONSE) {
            Ok(k) if k == RESPONSE.len() => Served::Done,
            _ => Served::Failed,
        },
        Err(e) if e.kind() == ErrorKind::WouldBlock => Served::NotYet,
        _ => Served::Failed,
    }
}

/// Bulk over loopback: one connection, client to server, until `bound` says stop; `done`
/// counts bytes the server read.
pub fn bulk<B: Bound>(bound: &mut B) -> io::Result<DriverStats> {
    let (listener, addr) = loopback_listener()?;
    let mut client = TcpStream::connect(addr)?;
    let mut server = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => return Err(e),
        }
    };
    client.set_nonblocking(true)?;
    server.set_nonblocking(true)?;
    let chunk: Vec<u8> = (0..APP_CHUNK).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; APP_CHUNK];
    let mut received = 0u64;
    while bound.keep_going(received) {
        loop {
            match client.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        loop {
            match server.read(&mut buf) {
                Ok(0) => return Err(io::Error::from(ErrorKind::UnexpectedEof)),
                Ok(n) => received += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(DriverStats { done: received, failures: 0, frames: 0, timer_skips: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Count;

    #[test]
    fn loopback_churn_completes_every_connection() {
        let stats = churn(4, &mut Count(200)).unwrap();
        assert_eq!((stats.done, stats.failures), (200, 0));
    }

    #[test]
    fn loopback_bulk_moves_the_bytes() {
        let stats = bulk(&mut Count(8 << 20)).unwrap();
        assert!(stats.done >= 8 << 20);
    }
}
