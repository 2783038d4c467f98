//! Operator requests on the plane's Unix socket: `netpop stat`, `down` and `capture`.
//!
//! They share the socket with app registration and are told apart by their first four
//! bytes: registration messages start with "NPRG", admin requests with "NPAD". Every
//! request is 64 bytes (little-endian):
//!
//! - 0..4 magic "NPAD", 4..6 version (1), 6..8 kind;
//! - `Stat` (kind 1): 8..12 flags (bit 0 JSON, bit 1 per-group table);
//! - `Down` (kind 2): 8..12 grace period in ms before instances are killed;
//! - `Capture` (kind 3): 8..10 instance, 12..16 frame count, 16..20 timeout in ms; one
//!   SCM_RIGHTS fd: the output file, opened for writing by the requester (so the file is
//!   created with the requester's rights, not the plane's).
//!
//! The answer is a 64-byte header — magic, version, kind | 0x80, 8..12 status (0 = done,
//! otherwise an errno), 12..16 body length — followed by the body: UTF-8 text (the stat
//! table or JSON, or an error message).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::shm::{recv_fds, send_fds};

/// First four bytes of an admin message: "NPAD" little-endian.
pub const ADMIN_MAGIC: u32 = u32::from_le_bytes(*b"NPAD");
/// Admin protocol version.
pub const ADMIN_VERSION: u16 = 1;
/// Length of a request and of a response header.
pub const ADMIN_LEN: usize = 64;
/// Largest response body accepted by the client.
pub const MAX_BODY: usize = 64 << 20;

/// An operator request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// Statistics.
    Stat {
        /// JSON instead of a table.
        json: bool,
        /// Include every flow group.
        groups: bool,
    },
    /// Shut down: instances get `Shutdown` and this long to exit before they are killed.
    Down {
        /// Grace period in milliseconds.
        grace_ms: u32,
    },
    /// Capture the next `count` frames of `instance` into the passed file.
    Capture {
        /// Instance index.
        instance: u16,
        /// Frames to capture.
        count: u32,
        /// How long to wait for them, in milliseconds.
        timeout_ms: u32,
    },
}

const KIND_STAT: u16 = 1;
const KIND_DOWN: u16 = 2;
const KIND_CAPTURE: u16 = 3;
const RESPONSE_BIT: u16 = 0x80;

fn header(kind: u16) -> [u8; ADMIN_LEN] {
    let mut b = [0u8; ADMIN_LEN];
    b[0..4].copy_from_slice(&ADMIN_MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&ADMIN_VERSION.to_le_bytes());
    b[6..8].copy_from_slice(&kind.to_le_bytes());
    b
}

fn u16_at(b: &[u8; ADMIN_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; ADMIN_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// True if `b` starts an admin message (rather than a registration).
pub fn is_admin(b: &[u8]) -> bool {
    b.get(0..4) == Some(&ADMIN_MAGIC.to_le_bytes()[..])
}

impl AdminRequest {
    /// Wire form.
    pub fn encode(&self) -> [u8; ADMIN_LEN] {
        match *self {
            AdminRequest::Stat { json, groups } => {
                let mut b = header(KIND_STAT);
                let flags = u32::from(json) | (u32::from(groups) << 1);
                b[8..12].copy_from_slice(&flags.to_le_bytes());
                b
            }
            AdminRequest::Down { grace_ms } => {
                let mut b = header(KIND_DOWN);
                b[8..12].copy_from_slice(&grace_ms.to_le_bytes());
                b
            }
            AdminRequest::Capture { instance, count, timeout_ms } => {
                let mut b = header(KIND_CAPTURE);
                b[8..10].copy_from_slice(&instance.to_le_bytes());
                b[12..16].copy_from_slice(&count.to_le_bytes());
                b[16..20].copy_from_slice(&timeout_ms.to_le_bytes());
                b
            }
        }
    }

    /// Parses a request; `None` for anything malformed.
    pub fn decode(b: &[u8; ADMIN_LEN]) -> Option<AdminRequest> {
        if u32_at(b, 0) != ADMIN_MAGIC || u16_at(b, 4) != ADMIN_VERSION {
            return None;
        }
        let zero_from = |at: usize| b[at..].iter().all(|&x| x == 0);
        match u16_at(b, 6) {
            KIND_STAT => {
                let flags = u32_at(b, 8);
                (flags & !3 == 0 && zero_from(12))
                    .then_some(AdminRequest::Stat { json: flags & 1 != 0, groups: flags & 2 != 0 })
            }
            KIND_DOWN => zero_from(12).then_some(AdminRequest::Down { grace_ms: u32_at(b, 8) }),
            KIND_CAPTURE => {
                (b[10..12] == [0, 0] && zero_from(20)).then_some(AdminRequest::Capture {
                    instance: u16_at(b, 8),
                    count: u32_at(b, 12),
                    timeout_ms: u32_at(b, 16),
                })
            }
            _ => None,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            AdminRequest::Stat { .. } => KIND_STAT,
            AdminRequest::Down { .. } => KIND_DOWN,
            AdminRequest::Capture { .. } => KIND_CAPTURE,
        }
    }
}

/// Writes a response (header + body) to a blocking socket.
pub fn write_response(
    mut conn: &UnixStream,
    kind_of: &AdminRequest,
    status: i32,
    body: &str,
) -> io::Result<()> {
    let mut h = header(kind_of.kind() | RESPONSE_BIT);
    h[8..12].copy_from_slice(&status.to_le_bytes());
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("response too long"))?;
    h[12..16].copy_from_slice(&len.to_le_bytes());
    conn.write_all(&h)?;
    conn.write_all(body.as_bytes())
}

/// A failed admin request, as the client reports it.
#[derive(Debug)]
#[non_exhaustive]
pub enum AdminError {
    /// No netpop answers at that socket.
    NotRunning {
        /// The socket path tried.
        socket: String,
        /// What connect said.
        source: io::Error,
    },
    /// The plane refused or failed (its message).
    Refused(String),
    /// The exchange broke down.
    Io(io::Error),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::NotRunning { socket, source } => {
                write!(f, "no netpop is up at {socket} ({source})")
            }
            AdminError::Refused(m) => f.write_str(m),
            AdminError::Io(e) => write!(f, "talking to the control plane: {e}"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<io::Error> for AdminError {
    fn from(e: io::Error) -> Self {
        AdminError::Io(e)
    }
}

/// Sends `request` (with `fd` for a capture) to the plane at `socket` and returns the
/// response body. `timeout` bounds the whole wait.
pub fn request(
    socket: &Path,
    request: AdminRequest,
    fd: Option<&OwnedFd>,
    timeout: Duration,
) -> Result<String, AdminError> {
    let mut conn = UnixStream::connect(socket).map_err(|source| AdminError::NotRunning {
        socket: socket.display().to_string(),
        source,
    })?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
    send_fds(&conn, &request.encode(), &fds)?;
    let mut h = [0u8; ADMIN_LEN];
    conn.read_exact(&mut h).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            AdminError::Refused("the control plane closed the connection without answering".into())
        }
        _ => AdminError::Io(e),
    })?;
    if u32_at(&h, 0) != ADMIN_MAGIC || u16_at(&h, 6) != request.kind() | RESPONSE_BIT {
        return Err(AdminError::Refused("malformed answer from the control plane".into()));
    }
    let status = i32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    let len = u32_at(&h, 12) as usize;
    if len > MAX_BODY {
        return Err(AdminError::Refused("oversized answer from the control plane".into()));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != 0 {
        return Err(AdminError::Refused(body));
    }
    Ok(body)
}

/// Reads a request's first 64 bytes and its fds from a connection the plane accepted.
/// `Ok(None)` if the peer closed first.
pub fn read_first_message(
    conn: &UnixStream,
) -> io::Result<Option<([u8; ADMIN_LEN], Vec<OwnedFd>)>> {
    let mut buf = [0u8; ADMIN_LEN];
    let (n, fds) = recv_fds(conn, &mut buf, 2)?;
    if n == 0 {
        return Ok(None);
    }
    if let Some(rest) = buf.get_mut(n..) {
        // The rest follows at once from a well-behaved client; the caller set a timeout.
        (&*conn).read_exact(rest)?;
    }
    Ok(Some((buf, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        for r in [
            AdminRequest::Stat { json: true, groups: false },
            AdminRequest::Stat { json: false, groups: true },
            AdminRequest::Down { grace_ms: 5000 },
            AdminRequest::Capture { instance: 1, count: 100, timeout_ms: 3000 },
        ] {
            let b = r.encode();
            assert!(is_admin(&b));
            assert_eq!(AdminRequest::decode(&b), Some(r));
        }
        let mut b = AdminRequest::Stat { json: true, groups: true }.encode();
        b[8] = 4;
        assert_eq!(AdminRequest::decode(&b), None, "unknown flag");
        let mut b = AdminRequest::Down { grace_ms: 1 }.encode();
        b[6] = 9;
        assert_eq!(AdminRequest::decode(&b), None, "unknown kind");
        let reg = crate::channel::proto::RegistrationMessage::Register { pid: 1 }.encode();
        assert!(!is_admin(&reg));
    }

    #[test]
    fn a_response_reaches_the_client() {
        let (a, b) = UnixStream::pair().unwrap();
        let req = AdminRequest::Stat { json: false, groups: false };
        write_response(&b, &req, 0, "hello").unwrap();
        write_response(&b, &req, libc::EINVAL, "bad").unwrap();
        let mut h = [0u8; ADMIN_LEN];
        (&a).read_exact(&mut h).unwrap();
        assert_eq!(u32_at(&h, 12), 5);
        let mut body = [0u8; 5];
        (&a).read_exact(&mut body).unwrap();
        assert_eq!(&body, b"hello");
    }

    #[test]
    fn a_missing_plane_is_reported_as_not_running() {
        let err = request(
            Path::new("/nonexistent/netpop.sock"),
            AdminRequest::Stat { json: false, groups: false },
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, AdminError::NotRunning { .. }));
        assert!(err.to_string().contains("/nonexistent/netpop.sock"));
    }
}
