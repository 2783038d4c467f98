//! Slot formats of the app channel: requests (app -> instance), completions (instance ->
//! app) and the registration messages on the control plane's Unix socket.
//!
//! Slots are 64-byte `#[repr(C)]` structs of plain integers, so every bit pattern is a
//! value; meaning is given only by [`RequestSlot::decode`] / [`CompletionSlot::decode`],
//! which accept exactly the canonical encodings (unused words must be zero) and refuse
//! everything else with a [`ProtoError`]. Errors travel as Linux errno values (errno(3),
//! `asm-generic/errno-base.h` / `errno.h` numbering), so the shim can hand them to libc
//! callers unchanged.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::{AppLayout, SocketId};
use crate::shm::Pod;

/// What a request asks for. The value is the `opcode` word of both slot kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Opcode {
    /// Subscribe a socket slot to a port's listener (sent to every instance).
    Listen = 1,
    /// Take one connection from this instance's accept queue into a new slot.
    Accept = 2,
    /// Active open from this instance.
    Connect = 3,
    /// The socket's tx ring has new bytes.
    TxReady = 4,
    /// The app made room in the socket's rx ring after the instance stalled on it.
    RxConsumed = 5,
    /// `shutdown(2)` of one or both halves.
    Shutdown = 6,
    /// Orderly close (a reset if received bytes were left unread, as Linux does).
    Close = 7,
    /// Reset and release.
    Abort = 8,
    /// A socket option.
    SetOption = 9,
    /// Addresses, TCP state and queue sizes.
    GetInfo = 10,
}

impl Opcode {
    /// The opcode for a raw slot value.
    pub fn from_u16(v: u16) -> Option<Opcode> {
        Some(match v {
            1 => Opcode::Listen,
            2 => Opcode::Accept,
            3 => Opcode::Connect,
            4 => Opcode::TxReady,
            5 => Opcode::RxConsumed,
            6 => Opcode::Shutdown,
            7 => Opcode::Close,
            8 => Opcode::Abort,
            9 => Opcode::SetOption,
            10 => Opcode::GetInfo,
            _ => return None,
        })
    }
}

/// Which half of a connection [`Request::Shutdown`] closes (Linux `SHUT_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownHow {
    /// `SHUT_RD` (0): further reads return end of stream.
    Read,
    /// `SHUT_WR` (1): a FIN follows the bytes already written.
    Write,
    /// `SHUT_RDWR` (2).
    Both,
}

impl ShutdownHow {
    fn to_u32(self) -> u32 {
        match self {
            ShutdownHow::Read => 0,
            ShutdownHow::Write => 1,
            ShutdownHow::Both => 2,
        }
    }

    fn from_u32(v: u32) -> Option<ShutdownHow> {
        Some(match v {
            0 => ShutdownHow::Read,
            1 => ShutdownHow::Write,
            2 => ShutdownHow::Both,
            _ => return None,
        })
    }
}

/// Socket options an instance applies to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SockOption {
    /// `TCP_NODELAY`: true disables Nagle's algorithm.
    NoDelay(bool),
    /// `TCP_CORK`: hold partial segments while set.
    Cork(bool),
    /// `SO_KEEPALIVE` with Linux's default timing.
    KeepAlive(bool),
}

impl SockOption {
    fn encode(self) -> (u32, u32) {
        match self {
            SockOption::NoDelay(on) => (1, u32::from(on)),
            SockOption::Cork(on) => (2, u32::from(on)),
            SockOption::KeepAlive(on) => (3, u32::from(on)),
        }
    }

    fn decode(code: u32, value: u32) -> Option<SockOption> {
        let on = match value {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(match code {
            1 => SockOption::NoDelay(on),
            2 => SockOption::Cork(on),
            3 => SockOption::KeepAlive(on),
            _ => return None,
        })
    }
}

/// A Linux errno value carried in a completion.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// Bad file descriptor (a slot that names no socket of the right kind).
    pub const EBADF: Errno = Errno(libc::EBADF);
    /// Try again.
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    /// Bad address (the app's shared memory is corrupt).
    pub const EFAULT: Errno = Errno(libc::EFAULT);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// Too many open files (no free socket slot).
    pub const EMFILE: Errno = Errno(libc::EMFILE);
    /// Broken pipe.
    pub const EPIPE: Errno = Errno(libc::EPIPE);
    /// Protocol not available (unknown opcode or option).
    pub const ENOPROTOOPT: Errno = Errno(libc::ENOPROTOOPT);
    /// Operation not supported.
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// Address already in use.
    pub const EADDRINUSE: Errno = Errno(libc::EADDRINUSE);
    /// Cannot assign requested address.
    pub const EADDRNOTAVAIL: Errno = Errno(libc::EADDRNOTAVAIL);
    /// Network unreachable.
    pub const ENETUNREACH: Errno = Errno(libc::ENETUNREACH);
    /// Software caused connection abort.
    pub const ECONNABORTED: Errno = Errno(libc::ECONNABORTED);
    /// Connection reset by peer.
    pub const ECONNRESET: Errno = Errno(libc::ECONNRESET);
    /// No buffer space available.
    pub const ENOBUFS: Errno = Errno(libc::ENOBUFS);
    /// Transport endpoint is already connected.
    pub const EISCONN: Errno = Errno(libc::EISCONN);
    /// Transport endpoint is not connected.
    pub const ENOTCONN: Errno = Errno(libc::ENOTCONN);
    /// Connection timed out.
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    /// Connection refused.
    pub const ECONNREFUSED: Errno = Errno(libc::ECONNREFUSED);
    /// Object is remote: a `Connect` from a bound port reached an instance whose flow
    /// groups do not receive that connection's replies (the client asks the others; apps
    /// never see it).
    pub const EREMOTE: Errno = Errno(libc::EREMOTE);
    /// Operation now in progress.
    pub const EINPROGRESS: Errno = Errno(libc::EINPROGRESS);

    /// Largest errno Linux defines; anything above in a slot is corrupt.
    const MAX: i32 = 4095;

    /// The `io::Error` a Rust caller sees.
    pub fn to_io(self) -> io::Error {
        io::Error::from_raw_os_error(self.0)
    }

    fn from_wire(v: u32) -> Option<Errno> {
        let v = i32::try_from(v).ok()?;
        (1..=Errno::MAX).contains(&v).then_some(Errno(v))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({}: {})", self.0, self.to_io())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_io())
    }
}

/// Why a slot or message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// The opcode (or message kind) is not one this version knows.
    UnknownOpcode(u16),
    /// A socket slot beyond the layout's `sockets`.
    BadSocket(u32),
    /// An argument out of range (the message names which).
    BadArgument(&'static str),
    /// A word that must be zero is not.
    ReservedNonZero,
    /// A registration message with the wrong magic or version.
    BadMagic,
    /// A registration message shorter than [`MESSAGE_LEN`].
    Truncated,
}

impl ProtoError {
    /// The errno an instance answers a refused request with.
    pub fn errno(self) -> Errno {
        match self {
            ProtoError::UnknownOpcode(_) => Errno::EOPNOTSUPP,
            ProtoError::BadSocket(_) => Errno::EBADF,
            _ => Errno::EINVAL,
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            ProtoError::BadSocket(s) => write!(f, "socket slot {s} out of range"),
            ProtoError::BadArgument(what) => write!(f, "invalid argument: {what}"),
            ProtoError::ReservedNonZero => write!(f, "reserved field is not zero"),
            ProtoError::BadMagic => write!(f, "not a netpop registration message"),
            ProtoError::Truncated => write!(f, "registration message truncated"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Largest listen backlog an instance grants (Linux's default `somaxconn`).
pub const MAX_BACKLOG: u32 = 4096;

/// A request slot as it sits in the request ring.
///
/// `opcode` is an [`Opcode`]; `flags` must be 0; `sock` names the socket slot; `user` is
/// echoed in the completion; `args` per opcode (unused ones 0):
///
/// | opcode | args |
/// |---|---|
/// | Listen | `[0]` port (1..=65535), `[1]` backlog (clamped to 1..=[`MAX_BACKLOG`]) |
/// | Accept | `[0]` slot for the new connection (`sock` is the listener) |
/// | Connect | `[0]` IPv4 address as `u32::from(Ipv4Addr)`, `[1]` port (1..=65535), `[2]` local port (0: the instance chooses) |
/// | Shutdown | `[0]` how: 0 read, 1 write, 2 both |
/// | SetOption | `[0]` option: 1 TCP_NODELAY, 2 TCP_CORK, 3 SO_KEEPALIVE; `[1]` value 0 or 1 |
/// | TxReady, RxConsumed, Close, Abort, GetInfo | none |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RequestSlot {
    /// [`Opcode`] value.
    pub opcode: u16,
    /// Must be zero.
    pub flags: u16,
    /// Socket slot the request is about.
    pub sock: u32,
    /// Caller's tag, copied into the completion.
    pub user: u64,
    /// Opcode-specific arguments.
    pub args: [u32; 12],
}

/// A completion slot as it sits in the completion ring.
///
/// `opcode` echoes the request's (raw, even if unknown); `errno` is 0 on success; `user`
/// is the request's tag; `sock` the request's slot; `args` on success (unused ones 0):
///
/// | opcode | args |
/// |---|---|
/// | Accept | `[0]` new slot, `[1]` peer IPv4, `[2]` peer port, `[3]` local IPv4, `[4]` local port |
/// | Connect | `[0]` local IPv4, `[1]` local port (the open is in progress) |
/// | GetInfo | `[0]` Linux `TCP_*` state, `[1]`/`[2]` local IPv4/port, `[3]`/`[4]` peer IPv4/port, `[5]` bytes unread in the stack, `[6]` bytes unacknowledged |
/// | others | none |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CompletionSlot {
    /// The request's opcode.
    pub opcode: u16,
    /// Must be zero.
    pub flags: u16,
    /// 0 for success, else a Linux errno.
    pub errno: u32,
    /// The request's tag.
    pub user: u64,
    /// The request's socket slot.
    pub sock: u32,
    /// Opcode-specific results.
    pub args: [u32; 11],
}

const _: () = assert!(size_of::<RequestSlot>() == 64);
const _: () = assert!(size_of::<CompletionSlot>() == 64);
const _: () = assert!(align_of::<RequestSlot>() == 8);
const _: () = assert!(align_of::<CompletionSlot>() == 8);

// SAFETY: both slot types are `#[repr(C)]`, contain only unsigned integers and integer
// arrays laid out without padding (the size asserts above check 2+2+4+8+48 and
// 2+2+4+8+4+44 bytes), so every bit pattern is a valid value and a byte copy is a copy.
#[allow(unsafe_code)]
unsafe impl Pod for RequestSlot {}
// SAFETY: see `RequestSlot` above.
#[allow(unsafe_code)]
unsafe impl Pod for CompletionSlot {}

/// A validated request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Subscribe `sock` to the listener on `port`.
    Listen {
        /// The app's listening slot.
        sock: SocketId,
        /// Local port, nonzero.
        port: u16,
        /// Accept-queue length wanted (the instance clamps it).
        backlog: u32,
    },
    /// Accept one connection into `new_sock`.
    Accept {
        /// A slot previously subscribed with `Listen`.
        listener: SocketId,
        /// A free slot that will hold the connection.
        new_sock: SocketId,
    },
    /// Open a connection to `addr` in `sock`.
    Connect {
        /// A free slot that will hold the connection.
        sock: SocketId,
        /// The peer.
        addr: SocketAddrV4,
        /// The source port the app bound (`bind` before `connect`); `None`: the instance
        /// chooses one whose replies it receives.
        local_port: Option<u16>,
    },
    /// New bytes in `sock`'s tx ring.
    TxReady {
        /// The socket.
        sock: SocketId,
    },
    /// Room in `sock`'s rx ring.
    RxConsumed {
        /// The socket.
        sock: SocketId,
    },
    /// Shut down one or both halves.
    Shutdown {
        /// The socket.
        sock: SocketId,
        /// Which halves.
        how: ShutdownHow,
    },
    /// Close (connection) or unsubscribe (listener).
    Close {
        /// The socket.
        sock: SocketId,
    },
    /// Reset and release.
    Abort {
        /// The socket.
        sock: SocketId,
    },
    /// Set an option.
    SetOption {
        /// The socket.
        sock: SocketId,
        /// Option and value.
        option: SockOption,
    },
    /// Ask for addresses and state.
    GetInfo {
        /// The socket.
        sock: SocketId,
    },
}

impl Request {
    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Listen { .. } => Opcode::Listen,
            Request::Accept { .. } => Opcode::Accept,
            Request::Connect { .. } => Opcode::Connect,
            Request::TxReady { .. } => Opcode::TxReady,
            Request::RxConsumed { .. } => Opcode::RxConsumed,
            Request::Shutdown { .. } => Opcode::Shutdown,
            Request::Close { .. } => Opcode::Close,
            Request::Abort { .. } => Opcode::Abort,
            Request::SetOption { .. } => Opcode::SetOption,
            Request::GetInfo { .. } => Opcode::GetInfo,
        }
    }

    /// The socket the request is about.
    pub fn sock(&self) -> SocketId {
        match *self {
            Request::Listen { sock, .. }
            | Request::Connect { sock, .. }
            | Request::TxReady { sock }
            | Request::RxConsumed { sock }
            | Request::Shutdown { sock, .. }
            | Request::Close { sock }
            | Request::Abort { sock }
            | Request::SetOption { sock, .. }
            | Request::GetInfo { sock } => sock,
            Request::Accept { listener, .. } => listener,
        }
    }

    /// True for requests that are answered with a completion (all but the doorbells).
    pub fn expects_completion(&self) -> bool {
        !matches!(self, Request::TxReady { .. } | Request::RxConsumed { .. })
    }

    /// The slot for this request with tag `user`.
    pub fn encode(&self, user: u64) -> RequestSlot {
        let mut slot = RequestSlot {
            opcode: self.opcode() as u16,
            flags: 0,
            sock: self.sock().0,
            user,
            args: [0; 12],
        };
        match *self {
            Request::Listen { port, backlog, .. } => {
                slot.args[0] = u32::from(port);
                slot.args[1] = backlog;
            }
            Request::Accept { new_sock, .. } => slot.args[0] = new_sock.0,
            Request::Connect { addr, local_port, .. } => {
                slot.args[0] = u32::from(*addr.ip());
                slot.args[1] = u32::from(addr.port());
                slot.args[2] = u32::from(local_port.unwrap_or(0));
            }
            Request::Shutdown { how, .. } => slot.args[0] = how.to_u32(),
            Request::SetOption { option, .. } => {
                let (code, value) = option.encode();
                slot.args[0] = code;
                slot.args[1] = value;
            }
            Request::TxReady { .. }
            | Request::RxConsumed { .. }
            | Request::Close { .. }
            | Request::Abort { .. }
            | Request::GetInfo { .. } => {}
        }
        slot
    }
}

/// Checks that a slot index is inside the layout.
fn socket_in(layout: &AppLayout, raw: u32) -> Result<SocketId, ProtoError> {
    if raw < layout.sockets { Ok(SocketId(raw)) } else { Err(ProtoError::BadSocket(raw)) }
}

/// Checks that `args[used..]` are all zero.
fn rest_zero(args: &[u32], used: usize) -> Result<(), ProtoError> {
    match args.get(used..) {
        Some(rest) if rest.iter().all(|&w| w == 0) => Ok(()),
        _ => Err(ProtoError::ReservedNonZero),
    }
}

fn port_of(v: u32) -> Result<u16, ProtoError> {
    match u16::try_from(v) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ProtoError::BadArgument("port")),
    }
}

impl RequestSlot {
    /// Decodes and validates a slot read from (untrusted) shared memory against the
    /// instance's trusted layout. Accepts only what [`Request::encode`] produces.
    pub fn decode(&self, layout: &AppLayout) -> Result<Request, ProtoError> {
        let op = Opcode::from_u16(self.opcode).ok_or(ProtoError::UnknownOpcode(self.opcode))?;
        if self.flags != 0 {
            return Err(ProtoError::ReservedNonZero);
        }
        let sock = socket_in(layout, self.sock)?;
        let a = &self.args;
        let (request, used) = match op {
            Opcode::Listen => {
                let port = port_of(a[0])?;
                if a[1] == 0 || a[1] > MAX_BACKLOG {
                    return Err(ProtoError::BadArgument("backlog"));
                }
                (Request::Listen { sock, port, backlog: a[1] }, 2)
            }
            Opcode::Accept => {
                let new_sock = socket_in(layout, a[0])?;
                if new_sock == sock {
                    return Err(ProtoError::BadArgument("new socket is the listener"));
                }
                (Request::Accept { listener: sock, new_sock }, 1)
            }
            Opcode::Connect => {
                let ip = Ipv4Addr::from(a[0]);
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return Err(ProtoError::BadArgument("address"));
                }
                let addr = SocketAddrV4::new(ip, port_of(a[1])?);
                let local_port = match a[2] {
                    0 => None,
                    p => Some(port_of(p)?),
                };
                (Request::Connect { sock, addr, local_port }, 3)
            }
            Opcode::TxReady => (Request::TxReady { sock }, 0),
            Opcode::RxConsumed => (Request::RxConsumed { sock }, 0),
            Opcode::Shutdown => {
                let how = ShutdownHow::from_u32(a[0]).ok_or(ProtoError::BadArgument("how"))?;
                (Request::Shutdown { sock, how }, 1)
            }
            Opcode::Close => (Request::Close { sock }, 0),
            Opcode::Abort => (Request::Abort { sock }, 0),
            Opcode::SetOption => {
                let option =
                    SockOption::decode(a[0], a[1]).ok_or(ProtoError::BadArgument("option"))?;
                (Request::SetOption { sock, option }, 2)
            }
            Opcode::GetInfo => (Request::GetInfo { sock }, 0),
        };
        rest_zero(a, used)?;
        Ok(request)
    }
}

/// Addresses and state of a connection, from `GetInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    /// Linux `TCP_*` state number (`TCP_ESTABLISHED` = 1 ... `TCP_CLOSING` = 11).
    pub tcp_state: u8,
    /// This side's address.
    pub local: SocketAddrV4,
    /// The peer's address.
    pub peer: SocketAddrV4,
    /// Bytes received but still in the stack (not yet moved to the rx ring).
    pub unread: u32,
    /// Bytes sent but not yet acknowledged, plus bytes not yet sent.
    pub unacked: u32,
}

/// A validated completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// `Listen` succeeded on this instance.
    Listening {
        /// Tag.
        user: u64,
        /// The listening slot.
        sock: SocketId,
    },
    /// `Accept` bound a connection to `sock`.
    Accepted {
        /// Tag.
        user: u64,
        /// The listener it came from.
        listener: SocketId,
        /// The slot now holding the connection.
        sock: SocketId,
        /// The peer.
        peer: SocketAddrV4,
        /// The local address the peer connected to.
        local: SocketAddrV4,
    },
    /// `Connect` started; readiness says when it is done.
    Connecting {
        /// Tag.
        user: u64,
        /// The slot.
        sock: SocketId,
        /// The chosen local address.
        local: SocketAddrV4,
    },
    /// `Shutdown`, `Close`, `Abort` or `SetOption` succeeded.
    Done {
        /// Tag.
        user: u64,
        /// The request's opcode.
        op: Opcode,
        /// The slot.
        sock: SocketId,
    },
    /// `GetInfo` result.
    Info {
        /// Tag.
        user: u64,
        /// The slot.
        sock: SocketId,
        /// What the instance knows.
        info: SocketInfo,
    },
    /// The request failed (or was refused as malformed).
    Failed {
        /// Tag.
        user: u64,
        /// The request's raw opcode.
        opcode: u16,
        /// The request's raw slot.
        sock: u32,
        /// Why.
        errno: Errno,
    },
}

impl Completion {
    /// The request's tag.
    pub fn user(&self) -> u64 {
        match *self {
            Completion::Listening { user, .. }
            | Completion::Accepted { user, .. }
            | Completion::Connecting { user, .. }
            | Completion::Done { user, .. }
            | Completion::Info { user, .. }
            | Completion::Failed { user, .. } => user,
        }
    }

    /// The failure for a request answered with `errno` (also used for refused slots).
    pub fn failed(slot: &RequestSlot, errno: Errno) -> Completion {
        Completion::Failed { user: slot.user, opcode: slot.opcode, sock: slot.sock, errno }
    }

    /// The slot carrying this completion.
    pub fn encode(&self) -> CompletionSlot {
        let mut c = CompletionSlot { user: self.user(), ..CompletionSlot::default() };
        match *self {
            Completion::Listening { sock, .. } => {
                c.opcode = Opcode::Listen as u16;
                c.sock = sock.0;
            }
            Completion::Accepted { listener, sock, peer, local, .. } => {
                c.opcode = Opcode::Accept as u16;
                c.sock = listener.0;
                c.args[..5].copy_from_slice(&[
                    sock.0,
                    u32::from(*peer.ip()),
                    u32::from(peer.port()),
                    u32::from(*local.ip()),
                    u32::from(local.port()),
                ]);
            }
            Completion::Connecting { sock, local, .. } => {
                c.opcode = Opcode::Connect as u16;
                c.sock = sock.0;
                c.args[0] = u32::from(*local.ip());
                c.args[1] = u32::from(local.port());
            }
            Completion::Done { op, sock, .. } => {
                c.opcode = op as u16;
                c.sock = sock.0;
            }
            Completion::Info { sock, info, .. } => {
                c.opcode = Opcode::GetInfo as u16;
                c.sock = sock.0;
                c.args[..7].copy_from_slice(&[
                    u32::from(info.tcp_state),
                    u32::from(*info.local.ip()),
                    u32::from(info.local.port()),
                    u32::from(*info.peer.ip()),
                    u32::from(info.peer.port()),
                    info.unread,
                    info.unacked,
                ]);
            }
            Completion::Failed { opcode, sock, errno, .. } => {
                c.opcode = opcode;
                c.sock = sock;
                // `Errno` values built by this crate are positive; a nonsensical one still
                // reads back as an error rather than as success.
                c.errno = u32::try_from(errno.0).ok().filter(|&e| e != 0).unwrap_or(u32::MAX);
            }
        }
        c
    }
}

fn addr_of(ip: u32, port: u32) -> Result<SocketAddrV4, ProtoError> {
    Ok(SocketAddrV4::new(Ipv4Addr::from(ip), port_of(port)?))
}

impl CompletionSlot {
    /// Decodes and validates a completion. Instances are trusted, but the app's own memory
    /// is writable by any of its threads, so the client checks as strictly as an instance.
    pub fn decode(&self, layout: &AppLayout) -> Result<Completion, ProtoError> {
        if self.flags != 0 {
            return Err(ProtoError::ReservedNonZero);
        }
        let user = self.user;
        let a = &self.args;
        if self.errno != 0 {
            let errno = Errno::from_wire(self.errno).ok_or(ProtoError::BadArgument("errno"))?;
            rest_zero(a, 0)?;
            return Ok(Completion::Failed { user, opcode: self.opcode, sock: self.sock, errno });
        }
        let op = Opcode::from_u16(self.opcode).ok_or(ProtoError::UnknownOpcode(self.opcode))?;
        let sock = socket_in(layout, self.sock)?;
        let (completion, used) = match op {
            Opcode::Listen => (Completion::Listening { user, sock }, 0),
            Opcode::Accept => {
                let new_sock = socket_in(layout, a[0])?;
                let peer = addr_of(a[1], a[2])?;
                let local = addr_of(a[3], a[4])?;
                (Completion::Accepted { user, listener: sock, sock: new_sock, peer, local }, 5)
            }
            Opcode::Connect => {
                (Completion::Connecting { user, sock, local: addr_of(a[0], a[1])? }, 2)
            }
            Opcode::Shutdown | Opcode::Close | Opcode::Abort | Opcode::SetOption => {
                (Completion::Done { user, op, sock }, 0)
            }
            Opcode::GetInfo => {
                let tcp_state = u8::try_from(a[0])
                    .ok()
                    .filter(|s| (1..=11).contains(s))
                    .ok_or(ProtoError::BadArgument("tcp state"))?;
                let port = |v: u32| u16::try_from(v).map_err(|_| ProtoError::BadArgument("port"));
                let info = SocketInfo {
                    tcp_state,
                    local: SocketAddrV4::new(Ipv4Addr::from(a[1]), port(a[2])?),
                    peer: SocketAddrV4::new(Ipv4Addr::from(a[3]), port(a[4])?),
                    unread: a[5],
                    unacked: a[6],
                };
                (Completion::Info { user, sock, info }, 7)
            }
            // Doorbells are never answered on success.
            Opcode::TxReady | Opcode::RxConsumed => {
                return Err(ProtoError::BadArgument("doorbell completion"));
            }
        };
        rest_zero(a, used)?;
        Ok(completion)
    }
}

/// Linux `TCP_*` state number (include/net/tcp_states.h) of a tcp-core state.
pub fn linux_tcp_state(state: tcp_core::tcp::State) -> u8 {
    use tcp_core::tcp::State;
    match state {
        State::Established => 1,
        State::SynSent => 2,
        State::SynReceived => 3,
        State::FinWait1 => 4,
        State::FinWait2 => 5,
        State::TimeWait => 6,
        State::Closed => 7,
        State::CloseWait => 8,
        State::LastAck => 9,
        State::Listen => 10,
        State::Closing => 11,
    }
}

// -------------------------------------------------------------------------------------
// Registration messages (app <-> control plane, Unix stream socket)

/// Every registration message is exactly this many bytes.
pub const MESSAGE_LEN: usize = 64;
/// First four bytes of every registration message: "NPRG" little-endian.
pub const MESSAGE_MAGIC: u32 = u32::from_le_bytes(*b"NPRG");
/// Registration protocol version.
pub const MESSAGE_VERSION: u16 = 1;
/// Most instance doorbell fds a `Registered` message may announce.
pub const MAX_DOORBELL_FDS: u16 = super::MAX_INSTANCES;

/// A message on the registration socket. Layout (little-endian): bytes 0..4 magic,
/// 4..6 version, 6..8 kind, then per kind:
///
/// - `Register` (kind 1, app -> plane): 8..12 pid. No fds.
/// - `Registered` (kind 2, plane -> app): 8..12 app_id, 12..14 home instance,
///   14..16 instances, 16..20 sockets, 20..24 ring_slots, 24..28 socket_buffer,
///   28..30 doorbell fd count (0 or `instances`), 30..32 live-instance mask (bit i:
///   instance i serves; 0 from a plane that does not say, read as "all"). Sent with two
///   SCM_RIGHTS fds, in order: the segment memfd and the app's wake eventfd.
/// - `Refused` (kind 3, plane -> app): 8..12 errno.
/// - `Doorbells` (kind 4, plane -> app, right after `Registered` when its doorbell count is
///   not 0): 8..10 count. Sent with `count` SCM_RIGHTS fds: instance i's doorbell eventfd
///   at position i. (A separate message because one message carries at most 16 fds.)
///
/// All other bytes are zero. The app keeps the socket open for its lifetime: the plane
/// takes its hang-up as the app's death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationMessage {
    /// An app asks to join.
    Register {
        /// The app's process id.
        pid: u32,
    },
    /// The plane accepted it.
    Registered {
        /// The app's id (unique while it lives).
        app_id: u32,
        /// The instance the app talks to first (connects, accepts).
        home: u16,
        /// The segment's layout.
        layout: AppLayout,
        /// How many instance doorbell eventfds follow the two fixed fds (0 or `instances`).
        doorbells: u16,
        /// The instances alive when the app registered (bit i: instance i), which
        /// listeners are replicated to; never empty, always includes `home`. A dead
        /// instance would never answer, so an app that waited for it would fail.
        live: u16,
    },
    /// The plane refused (too many apps, shutting down, ...).
    Refused {
        /// Why.
        errno: Errno,
    },
    /// The instances' doorbell eventfds follow as fds.
    Doorbells {
        /// How many (equal to the layout's instances).
        count: u16,
    },
}

fn le_u16(b: &[u8; MESSAGE_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8; MESSAGE_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl RegistrationMessage {
    /// The message's wire form.
    pub fn encode(&self) -> [u8; MESSAGE_LEN] {
        let mut b = [0u8; MESSAGE_LEN];
        b[0..4].copy_from_slice(&MESSAGE_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&MESSAGE_VERSION.to_le_bytes());
        match *self {
            RegistrationMessage::Register { pid } => {
                b[6..8].copy_from_slice(&1u16.to_le_bytes());
                b[8..12].copy_from_slice(&pid.to_le_bytes());
            }
            RegistrationMessage::Registered { app_id, home, layout, doorbells, live } => {
                b[6..8].copy_from_slice(&2u16.to_le_bytes());
                b[8..12].copy_from_slice(&app_id.to_le_bytes());
                b[12..14].copy_from_slice(&home.to_le_bytes());
                b[14..16].copy_from_slice(&layout.instances.to_le_bytes());
                b[16..20].copy_from_slice(&layout.sockets.to_le_bytes());
                b[20..24].copy_from_slice(&layout.ring_slots.to_le_bytes());
                b[24..28].copy_from_slice(&layout.socket_buffer.to_le_bytes());
                b[28..30].copy_from_slice(&doorbells.to_le_bytes());
                b[30..32].copy_from_slice(&live.to_le_bytes());
            }
            RegistrationMessage::Refused { errno } => {
                b[6..8].copy_from_slice(&3u16.to_le_bytes());
                b[8..12].copy_from_slice(&errno.0.to_le_bytes());
            }
            RegistrationMessage::Doorbells { count } => {
                b[6..8].copy_from_slice(&4u16.to_le_bytes());
                b[8..10].copy_from_slice(&count.to_le_bytes());
            }
        }
        b
    }

    /// Parses and validates a message (the layout of `Registered` must be valid).
    pub fn decode(bytes: &[u8]) -> Result<RegistrationMessage, ProtoError> {
        let b: &[u8; MESSAGE_LEN] = bytes
            .get(..MESSAGE_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(ProtoError::Truncated)?;
        if le_u32(b, 0) != MESSAGE_MAGIC || le_u16(b, 4) != MESSAGE_VERSION {
            return Err(ProtoError::BadMagic);
        }
        let zero_from = |at: usize| -> Result<(), ProtoError> {
            if b[at..].iter().all(|&x| x == 0) { Ok(()) } else { Err(ProtoError::ReservedNonZero) }
        };
        match le_u16(b, 6) {
            1 => {
                zero_from(12)?;
                Ok(RegistrationMessage::Register { pid: le_u32(b, 8) })
            }
            2 => {
                zero_from(32)?;
                let layout = AppLayout {
                    instances: le_u16(b, 14),
                    sockets: le_u32(b, 16),
                    ring_slots: le_u32(b, 20),
                    socket_buffer: le_u32(b, 24),
                };
                layout.validate().map_err(|_| ProtoError::BadArgument("layout"))?;
                let home = le_u16(b, 12);
                if home >= layout.instances {
                    return Err(ProtoError::BadArgument("home instance"));
                }
                let doorbells = le_u16(b, 28);
                if doorbells != 0 && doorbells != layout.instances {
                    return Err(ProtoError::BadArgument("doorbell count"));
                }
                let every = super::all_instances(layout.instances);
                let live = match le_u16(b, 30) {
                    0 => every,
                    mask if mask & !every != 0 || mask & (1 << home) == 0 => {
                        return Err(ProtoError::BadArgument("live-instance mask"));
                    }
                    mask => mask,
                };
                Ok(RegistrationMessage::Registered {
                    app_id: le_u32(b, 8),
                    home,
                    layout,
                    doorbells,
                    live,
                })
            }
            3 => {
                zero_from(12)?;
                let errno =
                    Errno::from_wire(le_u32(b, 8)).ok_or(ProtoError::BadArgument("errno"))?;
                Ok(RegistrationMessage::Refused { errno })
            }
            4 => {
                zero_from(10)?;
                let count = le_u16(b, 8);
                if count == 0 || count > MAX_DOORBELL_FDS {
                    return Err(ProtoError::BadArgument("doorbell count"));
                }
                Ok(RegistrationMessage::Doorbells { count })
            }
            kind => Err(ProtoError::UnknownOpcode(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAYOUT: AppLayout =
        AppLayout { instances: 2, sockets: 64, ring_slots: 16, socket_buffer: 4096 };

    fn every_request() -> Vec<Request> {
        let s = SocketId(5);
        vec![
            Request::Listen { sock: s, port: 80, backlog: 128 },
            Request::Accept { listener: s, new_sock: SocketId(63) },
            Request::Connect {
                sock: s,
                addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 443),
                local_port: None,
            },
            Request::Connect {
                sock: s,
                addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 443),
                local_port: Some(40000),
            },
            Request::TxReady { sock: s },
            Request::RxConsumed { sock: s },
            Request::Shutdown { sock: s, how: ShutdownHow::Write },
            Request::Close { sock: s },
            Request::Abort { sock: s },
            Request::SetOption { sock: s, option: SockOption::Cork(true) },
            Request::SetOption { sock: s, option: SockOption::KeepAlive(false) },
            Request::GetInfo { sock: s },
        ]
    }

    #[test]
    fn every_request_round_trips_with_its_tag() {
        for (i, r) in every_request().into_iter().enumerate() {
            let slot = r.encode(1000 + i as u64);
            assert_eq!(slot.user, 1000 + i as u64);
            assert_eq!(slot.decode(&LAYOUT), Ok(r));
        }
    }

    #[test]
    fn invalid_requests_are_refused_with_the_right_errno() {
        let good = Request::Listen { sock: SocketId(1), port: 80, backlog: 1 }.encode(9);
        let cases: Vec<(RequestSlot, Errno)> = vec![
            (RequestSlot { opcode: 0, ..good }, Errno::EOPNOTSUPP),
            (RequestSlot { opcode: 99, ..good }, Errno::EOPNOTSUPP),
            (RequestSlot { sock: 64, ..good }, Errno::EBADF),
            (RequestSlot { flags: 1, ..good }, Errno::EINVAL),
            (RequestSlot { args: [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..good }, Errno::EINVAL),
            (RequestSlot { args: [70000, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..good }, Errno::EINVAL),
            (RequestSlot { args: [80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], ..good }, Errno::EINVAL),
            (RequestSlot { args: [80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], ..good }, Errno::EINVAL),
        ];
        for (slot, errno) in cases {
            let err = slot.decode(&LAYOUT).unwrap_err();
            assert_eq!(err.errno(), errno, "{slot:?}: {err}");
            let c = Completion::failed(&slot, err.errno());
            assert_eq!(c.user(), 9);
            assert_eq!(c.encode().decode(&LAYOUT), Ok(c));
        }
        let mut args = [0; 12];
        args[0] = 3;
        let accept_self = RequestSlot { opcode: Opcode::Accept as u16, sock: 3, args, ..good };
        assert!(accept_self.decode(&LAYOUT).is_err(), "accepting into the listener's own slot");
        let connect_any = Request::Connect {
            sock: SocketId(1),
            addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80),
            local_port: None,
        }
        .encode(1);
        assert!(connect_any.decode(&LAYOUT).is_err());
        let mut connect_from = Request::Connect {
            sock: SocketId(1),
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80),
            local_port: Some(1),
        }
        .encode(1);
        connect_from.args[2] = 65536;
        assert_eq!(
            connect_from.decode(&LAYOUT).unwrap_err(),
            ProtoError::BadArgument("port"),
            "a local port beyond 16 bits"
        );
    }

    #[test]
    fn completions_round_trip() {
        let local = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
        let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000);
        let all = [
            Completion::Listening { user: 1, sock: SocketId(2) },
            Completion::Accepted { user: 2, listener: SocketId(2), sock: SocketId(3), peer, local },
            Completion::Connecting { user: 3, sock: SocketId(4), local },
            Completion::Done { user: 4, op: Opcode::Close, sock: SocketId(4) },
            Completion::Info {
                user: 5,
                sock: SocketId(4),
                info: SocketInfo { tcp_state: 1, local, peer, unread: 10, unacked: 20 },
            },
            Completion::Failed { user: 6, opcode: 77, sock: 9999, errno: Errno::ECONNREFUSED },
        ];
        for c in all {
            assert_eq!(c.encode().decode(&LAYOUT), Ok(c));
        }
        let bad_errno = CompletionSlot { errno: 100_000, ..all[0].encode() };
        assert!(bad_errno.decode(&LAYOUT).is_err());
    }

    #[test]
    fn registration_messages_round_trip_and_refuse_garbage() {
        let msgs = [
            RegistrationMessage::Register { pid: 4242 },
            RegistrationMessage::Registered {
                app_id: 3,
                home: 1,
                layout: LAYOUT,
                doorbells: 2,
                live: 0b10,
            },
            RegistrationMessage::Refused { errno: Errno::ECONNREFUSED },
            RegistrationMessage::Doorbells { count: 2 },
        ];
        for m in msgs {
            assert_eq!(RegistrationMessage::decode(&m.encode()), Ok(m));
        }
        let reg = msgs[1].encode();
        assert_eq!(RegistrationMessage::decode(&reg[..63]), Err(ProtoError::Truncated));
        let mut bad = reg;
        bad[0] ^= 1;
        assert_eq!(RegistrationMessage::decode(&bad), Err(ProtoError::BadMagic));
        let mut bad = reg;
        bad[12] = 2; // home instance 2 of 2
        assert!(RegistrationMessage::decode(&bad).is_err());
        let mut bad = reg;
        bad[20] = 3; // ring_slots not a power of two
        assert!(RegistrationMessage::decode(&bad).is_err());
        let mut bad = reg;
        bad[63] = 1;
        assert_eq!(RegistrationMessage::decode(&bad), Err(ProtoError::ReservedNonZero));
    }

    #[test]
    fn the_live_instance_mask_is_checked_and_zero_means_all() {
        let reg = |live| RegistrationMessage::Registered {
            app_id: 3,
            home: 1,
            layout: LAYOUT,
            doorbells: 2,
            live,
        };
        let live_of = |m| match RegistrationMessage::decode(&reg(m).encode()) {
            Ok(RegistrationMessage::Registered { live, .. }) => Ok(live),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(live_of(0), Ok(0b11), "a plane that does not say: every instance");
        assert_eq!(live_of(0b10), Ok(0b10));
        assert!(live_of(0b01).is_err(), "the home instance must be alive");
        assert!(live_of(0b110).is_err(), "instance 2 of 2 does not exist");
        assert_eq!(crate::channel::all_instances(16), u16::MAX);
        assert_eq!(crate::channel::all_instances(3), 0b111);
    }

    #[test]
    fn linux_states_are_distinct_and_in_range() {
        use tcp_core::tcp::State;
        let all = [
            State::Closed,
            State::Listen,
            State::SynSent,
            State::SynReceived,
            State::Established,
            State::FinWait1,
            State::FinWait2,
            State::CloseWait,
            State::Closing,
            State::LastAck,
            State::TimeWait,
        ];
        let mut seen: Vec<u8> = all.iter().map(|&s| linux_tcp_state(s)).collect();
        seen.sort();
        assert_eq!(seen, (1..=11).collect::<Vec<u8>>());
    }

    fn arb_request_slot() -> impl Strategy<Value = RequestSlot> {
        // Bias the opcode and slot toward valid values so decoding gets past the first
        // checks often enough to exercise the per-opcode validation.
        (
            prop_oneof![0u16..12, any::<u16>()],
            prop_oneof![Just(0u16), any::<u16>()],
            prop_oneof![0u32..70, any::<u32>()],
            any::<u64>(),
            prop::array::uniform12(prop_oneof![Just(0u32), 0u32..3, 0u32..70_000, any::<u32>()]),
        )
            .prop_map(|(opcode, flags, sock, user, args)| RequestSlot {
                opcode,
                flags,
                sock,
                user,
                args,
            })
    }

    fn arb_completion_slot() -> impl Strategy<Value = CompletionSlot> {
        (
            prop_oneof![0u16..12, any::<u16>()],
            prop_oneof![Just(0u16), any::<u16>()],
            prop_oneof![Just(0u32), 1u32..200, any::<u32>()],
            any::<u64>(),
            prop_oneof![0u32..70, any::<u32>()],
            prop::array::uniform11(prop_oneof![Just(0u32), 0u32..12, 0u32..70_000, any::<u32>()]),
        )
            .prop_map(|(opcode, flags, errno, user, sock, args)| CompletionSlot {
                opcode,
                flags,
                errno,
                user,
                sock,
                args,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Decoding never panics, and whatever it accepts is exactly the canonical encoding
        /// of a request whose slots are inside the layout.
        #[test]
        fn request_decoding_accepts_only_canonical_slots(slot in arb_request_slot()) {
            if let Ok(r) = slot.decode(&LAYOUT) {
                prop_assert_eq!(r.encode(slot.user), slot);
                prop_assert!(r.sock().0 < LAYOUT.sockets);
                if let Request::Accept { new_sock, .. } = r {
                    prop_assert!(new_sock.0 < LAYOUT.sockets);
                }
            }
        }

        #[test]
        fn completion_decoding_accepts_only_canonical_slots(slot in arb_completion_slot()) {
            if let Ok(c) = slot.decode(&LAYOUT) {
                prop_assert_eq!(c.encode(), slot);
                prop_assert_eq!(c.user(), slot.user);
            }
        }

        #[test]
        fn registration_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(m) = RegistrationMessage::decode(&bytes) {
                prop_assert_eq!(&m.encode()[..], &bytes[..MESSAGE_LEN]);
            }
        }
    }
}
