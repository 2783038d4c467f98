//! Safe wrappers over the few process and socket system calls the control plane
//! (`netpop up`) and the processes it starts need and `std` does not offer: descriptor
//! inheritance across exec, sessions, parent-death signals, signals to other processes, a
//! signalfd for termination requests, poll(2) over any number of borrowed descriptors and
//! SOCK_SEQPACKET Unix sockets. (The kernel instance's own loop wrappers — clocks,
//! affinity, poll over raw queue descriptors — are in [`super::sys`].)
//!
//! DESIGN.md confines `unsafe` in this crate to the shm layer; these calls live here so
//! that the rest of the crate (`plane`, `instance`) stays safe Rust. Each wrapper checks
//! its arguments so that no value a caller passes can make the call act on something the
//! caller did not name (for example `kill(0, ..)` signalling a whole process group).
//! Man pages: dup(2), fcntl(2), setsid(2), prctl(2) `PR_SET_PDEATHSIG`, kill(2),
//! signalfd(2), sigprocmask(2), poll(2), getgrnam_r(3),
//! unix(7) `SOCK_SEQPACKET`, socket(7) `SO_SNDBUF`.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Takes ownership of a descriptor a system call just returned (or its error).
fn owned(rc: libc::c_int) -> io::Result<OwnedFd> {
    let raw = check(rc)?;
    // SAFETY: the call returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

// -------------------------------------------------------------------------------------
// Descriptors across exec

/// A duplicate of `fd` *without* close-on-exec, for a child started with exec to inherit.
/// Its number is what the child is told; drop it right after the child is spawned, so that
/// later children do not inherit it too.
pub fn dup_inheritable(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD on a descriptor we borrow; the new descriptor (close-on-exec clear,
    // as F_DUPFD always gives) is returned owned. Minimum 3 keeps stdio numbers free.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, 3) })
}

/// Takes ownership of descriptor `raw`, inherited from the parent process, after checking
/// that it is open. Each number must be claimed at most once (the parent passes distinct
/// numbers); the descriptor is switched to close-on-exec so it does not leak further.
pub fn claim_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 3 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "inherited fd below 3"));
    }
    // SAFETY: F_GETFD only reads the descriptor flags; it fails with EBADF if `raw` is
    // not open, in which case we do not take ownership.
    let flags = check(unsafe { libc::fcntl(raw, libc::F_GETFD) })?;
    // SAFETY: as above; sets FD_CLOEXEC on an open descriptor.
    check(unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    // SAFETY: `raw` is open (checked) and was handed to this process to own; the caller
    // claims each inherited number once, so no other OwnedFd refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

// -------------------------------------------------------------------------------------
// Sessions, parents, signals

/// Starts a new session with this process as its leader, detaching it from the
/// controlling terminal (what a daemon does after it was started in the background).
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and only changes this process's session.
    check(unsafe { libc::setsid() }).map(|_| ())
}

/// Asks the kernel to SIGKILL this process when its parent exits (the thread that spawned
/// it, in fact: the control plane spawns instances from its main thread). Returns the
/// parent's pid as seen right after the call: if it is not `expected_parent`, the parent
/// already died and the caller should exit.
pub fn die_with_parent(expected_parent: u32) -> io::Result<bool> {
    // SAFETY: PR_SET_PDEATHSIG with a valid signal number; the remaining arguments unused.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) })?;
    Ok(parent_pid() == expected_parent)
}

/// This process's parent pid.
pub fn parent_pid() -> u32 {
    // SAFETY: getppid cannot fail and has no arguments.
    let ppid = unsafe { libc::getppid() };
    u32::try_from(ppid).unwrap_or(0)
}

/// The effective user id (0 = root).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and has no arguments.
    unsafe { libc::geteuid() }
}

/// The id of the group called `name` in the system's group database (`/etc/group`, or
/// whatever NSS is configured to ask), `None` if there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a group name"))?;
    // getgrnam_r writes the member list and strings into `buf`; grow it on ERANGE (large
    // groups from a directory service can need more than the usual few hundred bytes).
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: `group` is plain data that getgrnam_r fills in before we read it.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; `group`, `buf` (with its true length) and
        // `found` are live for the call, and the result points only into them.
        let rc = unsafe {
            libc::getgrnam_r(name.as_ptr(), &mut group, buf.as_mut_ptr(), buf.len(), &mut found)
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            // Some C libraries report "no such group" as an errno instead of a null result.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            err => return Err(io::Error::from_raw_os_error(err)),
        }
    }
}

/// Signals that may be sent with [`send_signal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: cannot be caught.
    Kill,
    /// SIGTERM: asks for a clean exit.
    Term,
    /// SIGSTOP: freezes the process (tests use it to hold an instance still).
    Stop,
    /// SIGCONT: lets a stopped process run again.
    Continue,
}

/// Sends `signal` to process `pid`. Refuses pid 0 and pids that do not fit a positive
/// `pid_t`, which kill(2) would read as "a process group" or "every process".
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a single process id"))?;
    let sig = match signal {
        Signal::Kill => libc::SIGKILL,
        Signal::Term => libc::SIGTERM,
        Signal::Stop => libc::SIGSTOP,
        Signal::Continue => libc::SIGCONT,
    };
    // SAFETY: kill with a positive pid signals exactly that process.
    check(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Whether a process with this pid exists (it may be a zombie).
pub fn process_exists(pid: u32) -> bool {
    let Some(pid) = libc::pid_t::try_from(pid).ok().filter(|&p| p > 0) else { return false };
    // SAFETY: signal 0 performs only the existence and permission checks.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// SIGTERM, SIGINT and SIGHUP turned into a readable descriptor (signalfd), so that an
/// event loop sees a termination request as ordinary input and can shut down cleanly.
#[derive(Debug)]
pub struct TerminationSignals {
    fd: OwnedFd,
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    set
}

impl TerminationSignals {
    /// Blocks the three signals in the calling thread (call it before spawning threads, so
    /// that they inherit the mask and the signals stay pending for the descriptor) and
    /// opens the signalfd. Children started with `std::process::Command` get a cleared
    /// mask, so they still die of these signals.
    pub fn install() -> io::Result<TerminationSignals> {
        let set = termination_set();
        // SAFETY: `set` is initialised; the old mask is not needed (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new signalfd for the initialised set.
        let fd =
            owned(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
        Ok(TerminationSignals { fd })
    }

    /// The signal received since the last call, if any (its number).
    pub fn take(&self) -> io::Result<Option<i32>> {
        // SAFETY: signalfd_siginfo is plain data, valid when zeroed.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let len = size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `len` bytes into the live `info`.
        let n = unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), len)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        if usize::try_from(n).ok() != Some(len) {
            return Ok(None);
        }
        Ok(i32::try_from(info.ssi_signo).ok())
    }
}

impl AsFd for TerminationSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// -------------------------------------------------------------------------------------
// poll(2)

/// Waits until at least one of `fds` is readable, hung up or in error, or `timeout`
/// passes (`None`: forever). Returns, per descriptor, whether it is ready. An interrupted
/// wait returns all `false` (the caller's loop comes round again).
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let ms = match timeout {
        None => -1,
        // Round up so that a sub-millisecond timeout does not turn into a busy loop.
        Some(t) => libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX),
    };
    let count = libc::nfds_t::try_from(pfds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"))?;
    // SAFETY: `pfds` holds `count` initialised pollfd entries for descriptors the caller
    // borrows for the duration of the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), count, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; pfds.len()]);
        }
        return Err(e);
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

// -------------------------------------------------------------------------------------
// SOCK_SEQPACKET Unix sockets

fn unix_address(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = OsStr::as_bytes(path.as_os_str());
    // One byte stays for the terminating NUL; an embedded NUL would silently cut the path.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("Unix socket path must be 1..{} bytes without NUL", addr.sun_path.len()),
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    let len = libc::socklen_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket path too long"))?;
    Ok((addr, len))
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation with constant arguments.
    owned(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })
}

/// Connects a SOCK_SEQPACKET socket to `path`. The result is returned as a `UnixStream`
/// for its `Read`/`Write`/non-blocking methods: on a SEQPACKET socket each `write` sends
/// one record and each `read` returns one (truncated to the buffer), which is what read(2)
/// and write(2) do on such a socket.
pub fn seqpacket_connect(path: &Path) -> io::Result<UnixStream> {
    let (addr, len) = unix_address(path)?;
    let fd = seqpacket_socket()?;
    // SAFETY: `addr`/`len` describe a valid sockaddr_un; `fd` is our socket.
    check(unsafe {
        libc::connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len)
    })?;
    Ok(UnixStream::from(fd))
}

/// A listening SOCK_SEQPACKET socket (see [`seqpacket_connect`]). The socket file is not
/// removed on drop: the caller owns the path.
#[derive(Debug)]
pub struct SeqpacketListener {
    fd: OwnedFd,
}

impl SeqpacketListener {
    /// Binds to `path` (which must not exist) and listens.
    pub fn bind(path: &Path) -> io::Result<SeqpacketListener> {
        let (addr, len) = unix_address(path)?;
        let fd = seqpacket_socket()?;
        // SAFETY: `addr`/`len` describe a valid sockaddr_un; `fd` is our socket.
        check(unsafe {
            libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len)
        })?;
        // SAFETY: listen on our bound socket.
        check(unsafe { libc::listen(fd.as_raw_fd(), 16) })?;
        Ok(SeqpacketListener { fd })
    }

    /// Waits for a connection (blocking unless the listener was made non-blocking).
    pub fn accept(&self) -> io::Result<UnixStream> {
        // SAFETY: accept4 on our listening socket; the peer address is not wanted (null).
        let fd = owned(unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        })?;
        Ok(UnixStream::from(fd))
    }
}

impl AsFd for SeqpacketListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The pid of the process at the other end of a connected Unix socket, as the kernel
/// recorded it when the connection was made (`SO_PEERCRED`, unix(7)). 0 when the peer lives
/// in a pid namespace this process cannot see.
pub fn peer_pid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live `cred` and updates `len`.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(u32::try_from(cred.pid).unwrap_or(0))
}

/// Asks for `bytes` of send and receive buffer on a socket (the kernel caps it at
/// `net.core.wmem_max`/`rmem_max`). Unix SEQPACKET sockets account whole skbs, so the
/// default buffer holds only about a hundred small frames.
pub fn set_socket_buffers(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a live c_int and its size.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    #[cfg_attr(miri, ignore = "system calls")]
    fn dup_inheritable_clears_close_on_exec_and_claim_sets_it() {
        let e = crate::shm::EventFd::new().unwrap();
        let dup = dup_inheritable(e.as_fd()).unwrap();
        let raw = dup.as_raw_fd();
        // SAFETY: F_GETFD reads flags of an open descriptor.
        assert_eq!(unsafe { libc::fcntl(raw, libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        let claimed = claim_inherited_fd(raw).unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(claimed.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        assert!(claim_inherited_fd(2).is_err());
        assert!(claim_inherited_fd(100_000).is_err(), "a closed number is refused");
    }

    #[test]
    #[cfg_attr(miri, ignore = "system calls")]
    fn group_id_finds_groups_by_name_and_says_none_for_unknown_ones() {
        // Group 0 is `root` on every Linux system this runs on.
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("netpop-no-such-group").unwrap(), None);
        assert!(group_id("a\0b").is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore = "system calls")]
    fn send_signal_refuses_group_pids() {
        assert!(send_signal(0, Signal::Kill).is_err());
        assert!(send_signal(u32::MAX, Signal::Kill).is_err());
        assert!(process_exists(std::process::id()));
        assert!(!process_exists(0));
    }

    #[test]
    #[cfg_attr(miri, ignore = "system calls")]
    fn seqpacket_keeps_record_boundaries_and_poll_sees_them() {
        let dir = std::env::temp_dir().join(format!("np-seq-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = SeqpacketListener::bind(&dir).unwrap();
        let mut a = seqpacket_connect(&dir).unwrap();
        let mut b = listener.accept().unwrap();
        std::fs::remove_file(&dir).unwrap();
        set_socket_buffers(a.as_fd(), 1 << 20).unwrap();
        let ready = wait_readable(&[b.as_fd()], Some(Duration::from_millis(1))).unwrap();
        assert_eq!(ready, vec![false]);
        a.write_all(&[1, 2, 3]).unwrap();
        a.write_all(&[4; 100]).unwrap();
        let ready = wait_readable(&[b.as_fd()], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ready, vec![true]);
        let mut buf = [0u8; 64];
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        assert_eq!(b.read(&mut buf).unwrap(), 64, "a record is truncated, not split");
        drop(a);
        assert_eq!(b.read(&mut buf).unwrap(), 0, "hang-up reads as end of stream");
        assert!(seqpacket_connect(Path::new("")).is_err());
        assert!(seqpacket_connect(&std::env::temp_dir().join("x".repeat(200))).is_err());
    }
}
