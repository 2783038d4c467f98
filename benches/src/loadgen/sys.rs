//! The few system calls `loadgen` needs that std does not offer: epoll(7) and a
//! non-blocking connect(2), plus raising the open-file limit. Everything `unsafe` in the
//! load generator is in this file.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Readiness bits as epoll reports them.
pub(crate) const READABLE: u32 = libc::EPOLLIN as u32;
pub(crate) const WRITABLE: u32 = libc::EPOLLOUT as u32;
/// The peer shut down its sending side (its FIN arrived).
pub(crate) const PEER_CLOSED: u32 = libc::EPOLLRDHUP as u32;
pub(crate) const ERROR: u32 = libc::EPOLLERR as u32;
pub(crate) const HANGUP: u32 = libc::EPOLLHUP as u32;

/// An epoll instance with edge-triggered registrations: each socket is added once for all
/// the readiness it will ever need, so the per-request cost is one `epoll_ctl` in total.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
    /// Whether epoll_pwait2(2) (Linux 5.11, nanosecond timeouts) is available.
    fine_timeouts: bool,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag word and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, fine_timeouts: true })
    }

    /// Registers `socket` for input, output, peer shutdown and errors, edge-triggered, with
    /// `token` handed back in its events. The registration ends when the socket is closed.
    pub(crate) fn add(&self, socket: &TcpStream, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open for the duration of the call and `event` is a
        // valid epoll_event the kernel only reads.
        let rc = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for readiness and fills `events` from its start; returns how
    /// many entries are valid. An interrupted wait returns 0.
    pub(crate) fn wait(
        &mut self,
        events: &mut [libc::epoll_event],
        timeout: Duration,
    ) -> io::Result<usize> {
        let capacity = i32::try_from(events.len()).unwrap_or(i32::MAX);
        let rc = if self.fine_timeouts {
            let timespec = libc::timespec {
                tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `events` is a writable buffer of `capacity` entries, `timespec` lives
            // across the call, and a null signal mask means "leave the mask alone".
            let rc = unsafe {
                libc::epoll_pwait2(
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr(),
                    capacity,
                    &timespec,
                    std::ptr::null(),
                )
            };
            if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                self.fine_timeouts = false;
                return self.wait(events, timeout);
            }
            rc
        } else {
            // Round up so a wait for 0.3 ms does not turn into a busy loop.
            let millis = timeout.as_nanos().div_ceil(1_000_000);
            let millis = i32::try_from(millis).unwrap_or(i32::MAX);
            // SAFETY: `events` is a writable buffer of `capacity` entries.
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), capacity, millis) }
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(error);
        }
        Ok(usize::try_from(rc).unwrap_or(0).min(events.len()))
    }
}

/// An empty event slot for the buffer handed to [`Epoll::wait`].
pub(crate) const NO_EVENT: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };

/// Starts a TCP connection to `addr` without waiting for the handshake: the returned
/// socket is non-blocking and becomes writable (or reports an error) when the connect
/// finishes. An error here is immediate (no local port left, network unreachable, ...).
/// `no_delay` turns Nagle's algorithm off, which matters only when a connection carries
/// more than one request (a lone request is written whole into an idle connection).
pub(crate) fn start_connect(addr: &SocketAddr, no_delay: bool) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes plain integers and returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created socket owned by nothing else; wrapping it first
    // means every error path below closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if no_delay {
        stream.set_nodelay(true)?;
    }

    // SAFETY: sockaddr_storage is plain data for which all-zero bytes are valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo().to_be(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds an initialised address of `len` bytes for the socket's family.
    let rc = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(error);
        }
    }
    Ok(stream)
}

/// Raises the soft limit on open files towards the hard limit so `wanted` sockets fit;
/// returns the soft limit in force afterwards.
pub(crate) fn raise_open_file_limit(wanted: u64) -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the valid struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the valid struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(raised.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn nonblocking_connect_completes_and_reports_writable_then_readable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut epoll = Epoll::new().unwrap();
        let mut stream = start_connect(&addr, true).unwrap();
        epoll.add(&stream, 7).unwrap();
        let mut events = [NO_EVENT; 4];
        let n = epoll.wait(&mut events, Duration::from_secs(5)).unwrap();
        assert_eq!(n, 1);
        let event = events[0];
        assert_eq!({ event.u64 }, 7);
        assert_ne!({ event.events } & WRITABLE, 0);

        let (mut server, _) = listener.accept().unwrap();
        stream.write_all(b"ping").unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).unwrap();
        server.write_all(b"pong").unwrap();
        let n = epoll.wait(&mut events, Duration::from_secs(5)).unwrap();
        assert_eq!(n, 1);
        assert_ne!({ events[0].events } & READABLE, 0);
    }

    #[test]
    fn refused_connect_is_reported_as_an_error_event() {
        // Bind then drop: the port is (almost certainly) closed right after.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut epoll = Epoll::new().unwrap();
        match start_connect(&addr, false) {
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused),
            Ok(stream) => {
                epoll.add(&stream, 1).unwrap();
                let mut events = [NO_EVENT; 1];
                assert_eq!(epoll.wait(&mut events, Duration::from_secs(5)).unwrap(), 1);
                assert_ne!({ events[0].events } & (ERROR | HANGUP), 0);
                let error = stream.take_error().unwrap().unwrap();
                assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
            }
        }
    }

    #[test]
    fn wait_honours_sub_millisecond_timeouts() {
        let mut epoll = Epoll::new().unwrap();
        let mut events = [NO_EVENT; 1];
        let started = Instant::now();
        assert_eq!(epoll.wait(&mut events, Duration::from_micros(200)).unwrap(), 0);
        // Only the lower bound is a property of the code; the upper one is the machine's.
        assert!(started.elapsed() >= Duration::from_micros(200));
    }
}
