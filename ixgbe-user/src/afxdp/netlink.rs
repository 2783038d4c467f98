//! Attaching and detaching the XDP program over rtnetlink.
//!
//! rtnetlink(7): an `RTM_SETLINK` request for the interface carrying a nested `IFLA_XDP`
//! attribute with `IFLA_XDP_FD` and `IFLA_XDP_FLAGS` (`<linux/if_link.h>`). Detaching sends fd
//! -1 together with `IFLA_XDP_EXPECTED_FD` and `XDP_FLAGS_REPLACE`, so we only ever remove
//! the program we attached, never one somebody attached after us. Extended acks
//! (`NETLINK_EXT_ACK`, `<linux/netlink.h>`) carry the kernel's reason for a refusal, such as
//! veth's "XDP expects number of rx queues not less than peer tx queues".

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::XdpError;
use super::bpf::XdpProgram;

const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_EXT_ACK: libc::c_int = 11;

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_EXPECTED_FD: u16 = 8;

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// `sizeof(struct nlmsghdr)` and `sizeof(struct ifinfomsg)`.
const NLMSG_HEADER_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XdpMode {
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`): after the skb is built; works on any interface,
    /// but on veth every frame reports rx queue 0 and GSO skbs arrive unsegmented.
    Skb,
    /// Native XDP in the driver (`XDP_FLAGS_DRV_MODE`); on veth, each rx queue gets a NAPI
    /// context, which is what makes more than one AF_XDP queue usable.
    Driver,
}

impl XdpMode {
    fn flag(self) -> u32 {
        match self {
            XdpMode::Skb => XDP_FLAGS_SKB_MODE,
            XdpMode::Driver => XDP_FLAGS_DRV_MODE,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Skb => "SKB (generic)",
            XdpMode::Driver => "driver (native)",
        })
    }
}

/// What `RTM_GETLINK` reports about XDP on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachedXdp {
    /// The mode the program runs in, `None` for hardware offload or several programs.
    pub mode: Option<XdpMode>,
    /// The program's kernel id.
    pub program_id: u32,
}

/// An XDP program attached to an interface; dropping it detaches that program (and only
/// that program).
#[derive(Debug)]
pub struct XdpAttachment {
    ifindex: u32,
    mode: XdpMode,
    /// A duplicate of the program fd, so detaching can name the expected program even if the
    /// caller closed its `XdpProgram`.
    program: OwnedFd,
    /// Cleared by an explicit [`XdpAttachment::detach`] so `Drop` does not detach twice.
    attached: bool,
}

impl XdpAttachment {
    /// Attaches `program` to interface `ifindex` in `mode`. Fails rather than replace an XDP
    /// program that is already attached.
    pub fn attach(
        ifindex: u32,
        program: &XdpProgram,
        mode: XdpMode,
    ) -> Result<XdpAttachment, XdpError> {
        let program = program
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| XdpError::syscall("dup(program fd)", e))?;
        set_xdp(ifindex, program.as_raw_fd(), mode.flag() | XDP_FLAGS_UPDATE_IF_NOEXIST, None)
            .map_err(|(source, kernel_message)| XdpError::AttachRejected {
                ifindex,
                mode,
                source,
                kernel_message,
            })?;
        Ok(XdpAttachment { ifindex, mode, program, attached: true })
    }

    /// The interface the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode it runs in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Detaches now, reporting failure (dropping detaches too but can only log).
    pub fn detach(mut self) -> Result<(), XdpError> {
        self.attached = false;
        self.detach_inner()
    }

    fn detach_inner(&self) -> Result<(), XdpError> {
        let flags = self.mode.flag() | XDP_FLAGS_REPLACE;
        set_xdp(self.ifindex, -1, flags, Some(self.program.as_raw_fd())).map_err(
            |(source, kernel_message)| XdpError::AttachRejected {
                ifindex: self.ifindex,
                mode: self.mode,
                source,
                kernel_message,
            },
        )
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if !self.attached {
            return;
        }
        match self.detach_inner() {
            Ok(()) => {}
            // The interface is gone (deleted, or its namespace was): nothing to detach.
            Err(XdpError::AttachRejected { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => eprintln!("ixgbe-user: detaching XDP from ifindex {}: {e}", self.ifindex),
        }
    }
}

/// Which XDP program, if any, interface `ifindex` runs (`RTM_GETLINK`).
pub fn attached_xdp(ifindex: u32) -> Result<Option<AttachedXdp>, XdpError> {
    let socket = RouteSocket::open().map_err(|e| XdpError::syscall("socket(NETLINK_ROUTE)", e))?;
    let mut request = Request::new(RTM_GETLINK, NLM_F_REQUEST, socket.next_seq(), ifindex);
    let reply = socket
        .transact(request.finish())
        .map_err(|(e, message)| XdpError::syscall("RTM_GETLINK", with_message(e, message)))?;
    let Some(attrs) = reply.get(NLMSG_HEADER_LEN + IFINFOMSG_LEN..) else {
        return Err(XdpError::syscall("RTM_GETLINK", io::Error::other("short RTM_NEWLINK")));
    };
    let Some(xdp) = attributes(attrs).find(|(kind, _)| *kind == IFLA_XDP).map(|(_, v)| v) else {
        return Ok(None);
    };
    let mut attached = 0u8;
    let mut program_id = 0u32;
    for (kind, value) in attributes(xdp) {
        match (kind, value) {
            (IFLA_XDP_ATTACHED, [mode, ..]) => attached = *mode,
            (IFLA_XDP_PROG_ID, &[a, b, c, d, ..]) => program_id = u32::from_ne_bytes([a, b, c, d]),
            _ => {}
        }
    }
    // XDP_ATTACHED_NONE / DRV / SKB / HW / MULTI from <linux/if_link.h>.
    let mode = match attached {
        0 => return Ok(None),
        1 => Some(XdpMode::Driver),
        2 => Some(XdpMode::Skb),
        _ => None,
    };
    Ok(Some(AttachedXdp { mode, program_id }))
}

fn with_message(e: io::Error, message: Option<String>) -> io::Error {
    match message {
        Some(m) => io::Error::new(e.kind(), format!("{e}: {m}")),
        None => e,
    }
}

fn set_xdp(
    ifindex: u32,
    fd: RawFd,
    flags: u32,
    expected: Option<RawFd>,
) -> Result<(), (io::Error, Option<String>)> {
    let socket = RouteSocket::open().map_err(|e| (e, None))?;
    let mut request =
        Request::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, socket.next_seq(), ifindex);
    let nest = request.begin_nested(IFLA_XDP);
    request.attribute(IFLA_XDP_FD, &fd.to_ne_bytes());
    request.attribute(IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(expected) = expected {
        request.attribute(IFLA_XDP_EXPECTED_FD, &expected.to_ne_bytes());
    }
    request.end_nested(nest);
    socket.transact(request.finish()).map(|_| ())
}

/// A netlink request under construction: header, `ifinfomsg`, attributes.
struct Request {
    buffer: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16, seq: u32, ifindex: u32) -> Request {
        let mut buffer = Vec::with_capacity(64);
        buffer.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched by finish()
        buffer.extend_from_slice(&kind.to_ne_bytes());
        buffer.extend_from_slice(&flags.to_ne_bytes());
        buffer.extend_from_slice(&seq.to_ne_bytes());
        buffer.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
        // struct ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change.
        buffer.extend_from_slice(&[0, 0, 0, 0]);
        buffer.extend_from_slice(&ifindex.to_ne_bytes());
        buffer.extend_from_slice(&0u32.to_ne_bytes());
        buffer.extend_from_slice(&0u32.to_ne_bytes());
        Request { buffer }
    }

    fn attribute(&mut self, kind: u16, value: &[u8]) {
        let len = (4 + value.len()) as u16;
        self.buffer.extend_from_slice(&len.to_ne_bytes());
        self.buffer.extend_from_slice(&kind.to_ne_bytes());
        self.buffer.extend_from_slice(value);
        self.pad();
    }

    fn begin_nested(&mut self, kind: u16) -> usize {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(&0u16.to_ne_bytes());
        self.buffer.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nested(&mut self, start: usize) {
        let len = (self.buffer.len() - start) as u16;
        self.buffer[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while self.buffer.len() % 4 != 0 {
            self.buffer.push(0);
        }
    }

    fn finish(&mut self) -> &[u8] {
        let len = self.buffer.len() as u32;
        self.buffer[..4].copy_from_slice(&len.to_ne_bytes());
        &self.buffer
    }
}

/// Iterates `(type, value)` over netlink attributes, stopping at the first malformed one.
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let header = data.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
        let value = data.get(4..len)?;
        data = data.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, value))
    })
}

/// A `NETLINK_ROUTE` socket with extended acks.
struct RouteSocket {
    fd: OwnedFd,
}

impl RouteSocket {
    fn open() -> io::Result<RouteSocket> {
        // SAFETY: socket(2) with constant arguments.
        let raw = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: the option value is a live c_int of the size passed. Failure only loses
        // the kernel's error text.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // Bound every wait: the kernel answers rtnetlink synchronously, so 5 s means trouble.
        let timeout = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: the option value is a live timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RouteSocket { fd })
    }

    fn next_seq(&self) -> u32 {
        static SEQ: AtomicU32 = AtomicU32::new(1);
        SEQ.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one request and returns the first reply message for it that is not an ack; an
    /// ack (error 0) returns an empty message. Errors carry the extended-ack text.
    fn transact(&self, request: &[u8]) -> Result<Vec<u8>, (io::Error, Option<String>)> {
        let seq = request.get(8..12).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let mut kernel: libc::sockaddr_nl = {
            // SAFETY: sockaddr_nl is a plain C struct; all-zero is valid (pid 0 = kernel).
            unsafe { std::mem::zeroed() }
        };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `request` and `kernel` are live for the call and their sizes are passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err((io::Error::last_os_error(), None));
        }
        let mut buffer = vec![0u8; 32 * 1024];
        // A reply is one or two messages; 16 reads without our answer means confusion.
        for _ in 0..16 {
            // SAFETY: `buffer` is writable for its full length during the call.
            let got = unsafe {
                libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0)
            };
            if got < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err((err, None));
            }
            let mut data = buffer.get(..got as usize).unwrap_or(&[]);
            while let Some(header) = data.get(..NLMSG_HEADER_LEN) {
                let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
                let kind = u16::from_ne_bytes([header[4], header[5]]);
                let flags = u16::from_ne_bytes([header[6], header[7]]);
                let msg_seq = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
                let Some(message) = data.get(..len).filter(|_| len >= NLMSG_HEADER_LEN) else {
                    return Err((io::Error::other("truncated netlink reply"), None));
                };
                data = data.get(len.next_multiple_of(4)..).unwrap_or(&[]);
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => return parse_ack(message, flags),
                    NLMSG_DONE => return Ok(Vec::new()),
                    RTM_NEWLINK => return Ok(message.to_vec()),
                    _ => {}
                }
            }
        }
        Err((io::Error::other("no netlink answer for our request"), None))
    }
}

/// Decodes an `NLMSG_ERROR` message: error 0 is an ack; otherwise the errno plus the
/// `NLMSGERR_ATTR_MSG` text when the kernel sent one.
fn parse_ack(message: &[u8], flags: u16) -> Result<Vec<u8>, (io::Error, Option<String>)> {
    let Some(&[a, b, c, d]) = message.get(NLMSG_HEADER_LEN..NLMSG_HEADER_LEN + 4) else {
        return Err((io::Error::other("short NLMSG_ERROR"), None));
    };
    let error = i32::from_ne_bytes([a, b, c, d]);
    if error == 0 {
        return Ok(Vec::new());
    }
    let errno = io::Error::from_raw_os_error(error.checked_neg().unwrap_or(libc::EIO));
    let mut text = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the errno comes our request: its header only if capped, else all of it.
        let inner = message.get(NLMSG_HEADER_LEN + 4..).unwrap_or(&[]);
        let inner_len = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HEADER_LEN
        } else {
            inner
                .get(..4)
                .map_or(NLMSG_HEADER_LEN, |l| u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize)
        };
        let tlvs = inner.get(inner_len.next_multiple_of(4)..).unwrap_or(&[]);
        text = attributes(tlvs).find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG).map(|(_, value)| {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            String::from_utf8_lossy(&value[..end]).into_owned()
        });
    }
    Err((errno, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setlink_request_has_the_rtnetlink_layout() {
        let mut request = Request::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 9, 3);
        let nest = request.begin_nested(IFLA_XDP);
        request.attribute(IFLA_XDP_FD, &5i32.to_ne_bytes());
        request.attribute(IFLA_XDP_FLAGS, &XDP_FLAGS_SKB_MODE.to_ne_bytes());
        request.end_nested(nest);
        let bytes = request.finish().to_vec();
        assert_eq!(bytes.len(), 16 + 16 + 4 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), bytes.len() as u32);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), RTM_SETLINK);
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 3, "ifindex");
        let attrs: Vec<_> = attributes(&bytes[32..]).collect();
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, IFLA_XDP, "nested flag is masked off");
        let inner: Vec<_> = attributes(attrs[0].1).collect();
        assert_eq!(
            inner,
            vec![(IFLA_XDP_FD, &5i32.to_ne_bytes()[..]), (IFLA_XDP_FLAGS, &2u32.to_ne_bytes()[..])]
        );
    }

    #[test]
    fn attribute_parser_stops_at_malformed_lengths() {
        // A 4-byte header claiming 200 bytes of value that are not there.
        let data = [200u8, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(attributes(&data).count(), 0);
        assert_eq!(attributes(&[1, 2]).count(), 0);
    }

    #[test]
    fn extended_ack_text_is_extracted() {
        let mut message = Vec::new();
        message.extend_from_slice(&0u32.to_ne_bytes()); // outer header (len unused here)
        message.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        message.extend_from_slice(&(NLM_F_CAPPED | NLM_F_ACK_TLVS).to_ne_bytes());
        message.extend_from_slice(&[0; 8]);
        message.extend_from_slice(&(-libc::ENOSPC).to_ne_bytes());
        message.extend_from_slice(&[0; 16]); // capped copy of our header
        let text = b"not enough queues\0";
        message.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        message.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        message.extend_from_slice(text);
        let (err, text) = parse_ack(&message, NLM_F_CAPPED | NLM_F_ACK_TLVS).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(text.as_deref(), Some("not enough queues"));
    }
}
