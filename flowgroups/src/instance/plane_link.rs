//! The Unix socketpair between the control plane and one kernel instance: what travels
//! there that the control ring cannot carry — file descriptors (SCM_RIGHTS, unix(7)).
//!
//! Every message is [`PLANE_MESSAGE_LEN`] bytes; the descriptors a message carries are
//! attached to its first byte (see [`send_fds`]). The stream may split or merge messages,
//! so the instance reassembles them and hands each message the descriptors that arrived
//! with it, in order.
//!
//! Order for an application (the plane's side):
//! 1. [`send_app_fds`] on the instance's socket (segment memfd, wake eventfd);
//! 2. push `ControlMessage::AppAttached { app_id }` on the instance's control ring;
//! 3. ring the instance's doorbell.
//!
//! The instance attaches the app when it has both the message and the descriptors, in
//! whichever order it sees them. A capture request ([`send_capture_request`]) is answered
//! with [`PlaneMessage::CaptureDone`] on the same socket once the frames are written.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::channel::AppLayout;
use crate::shm::{recv_fds, send_fds};

/// Bytes of every message on the plane ↔ instance socket.
pub const PLANE_MESSAGE_LEN: usize = 64;
/// "NPIL" (netpop instance link), little-endian.
const LINK_MAGIC: u32 = u32::from_le_bytes(*b"NPIL");
const LINK_VERSION: u16 = 1;
/// Most descriptors a single message carries.
const MAX_MESSAGE_FDS: usize = 2;

const KIND_APP_FDS: u16 = 1;
const KIND_CAPTURE: u16 = 2;
const KIND_CAPTURE_DONE: u16 = 3;

/// A message on the plane ↔ instance socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaneMessage {
    /// Plane → instance: the descriptors of application `app_id` follow (two: the segment
    /// memfd, then the wake eventfd). `layout` is the layout the plane created the segment
    /// with (trusted; the segment's own header is only compared with it).
    AppFds {
        /// Identifier of the application (as in `ControlMessage::AppAttached`).
        app_id: u32,
        /// Listener family: apps of one family share listening ports (a forked child
        /// inherits its parent's). Plain apps use their own id.
        family: u32,
        /// Layout of the app's segment.
        layout: AppLayout,
    },
    /// Plane → instance: write the next `count` frames this instance receives or sends to
    /// a pcap file — the one descriptor attached if `to_fd`, else a file named by
    /// [`capture_file_name`](super::pcap::capture_file_name) in the capture directory.
    Capture {
        /// Frames to capture (at least one).
        count: u32,
        /// Chosen by the plane, echoed in `CaptureDone`.
        seq: u32,
        /// One descriptor (an open, writable file) is attached.
        to_fd: bool,
    },
    /// Instance → plane: capture `seq` is complete (or failed with `errno`, 0 = success).
    CaptureDone {
        /// The request's sequence number.
        seq: u32,
        /// Frames written.
        frames: u32,
        /// 0, or the errno of the failure.
        errno: u32,
    },
}

/// Why a plane-link message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlaneLinkError {
    /// Fewer than [`PLANE_MESSAGE_LEN`] bytes.
    Truncated,
    /// Magic or version do not match.
    BadMagic,
    /// Unknown message kind.
    UnknownKind(u16),
    /// A field has an impossible value (named).
    BadField(&'static str),
    /// The message did not arrive with the descriptors it announces.
    MissingFds,
}

impl fmt::Display for PlaneLinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaneLinkError::Truncated => write!(f, "plane link message truncated"),
            PlaneLinkError::BadMagic => write!(f, "plane link message has a bad magic or version"),
            PlaneLinkError::UnknownKind(k) => write!(f, "plane link message of unknown kind {k}"),
            PlaneLinkError::BadField(what) => write!(f, "plane link message: bad {what}"),
            PlaneLinkError::MissingFds => {
                write!(f, "plane link message without the descriptors it announces")
            }
        }
    }
}

impl std::error::Error for PlaneLinkError {}

fn put16(b: &mut [u8; PLANE_MESSAGE_LEN], at: usize, v: u16) {
    if let Some(dst) = b.get_mut(at..at + 2) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn put32(b: &mut [u8; PLANE_MESSAGE_LEN], at: usize, v: u32) {
    if let Some(dst) = b.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

fn get16(b: &[u8; PLANE_MESSAGE_LEN], at: usize) -> u16 {
    let mut w = [0u8; 2];
    if let Some(src) = b.get(at..at + 2) {
        w.copy_from_slice(src);
    }
    u16::from_le_bytes(w)
}

fn get32(b: &[u8; PLANE_MESSAGE_LEN], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(src) = b.get(at..at + 4) {
        w.copy_from_slice(src);
    }
    u32::from_le_bytes(w)
}

impl PlaneMessage {
    /// How many descriptors travel with this message.
    pub fn fd_count(&self) -> usize {
        match self {
            PlaneMessage::AppFds { .. } => 2,
            PlaneMessage::Capture { to_fd: true, .. } => 1,
            _ => 0,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; PLANE_MESSAGE_LEN] {
        let mut b = [0u8; PLANE_MESSAGE_LEN];
        put32(&mut b, 0, LINK_MAGIC);
        put16(&mut b, 4, LINK_VERSION);
        match *self {
            PlaneMessage::AppFds { app_id, family, layout } => {
                put16(&mut b, 6, KIND_APP_FDS);
                put32(&mut b, 8, app_id);
                put32(&mut b, 12, family);
                put16(&mut b, 16, layout.instances);
                put32(&mut b, 20, layout.sockets);
                put32(&mut b, 24, layout.ring_slots);
                put32(&mut b, 28, layout.socket_buffer);
            }
            PlaneMessage::Capture { count, seq, to_fd } => {
                put16(&mut b, 6, KIND_CAPTURE);
                put32(&mut b, 8, count);
                put32(&mut b, 12, seq);
                put32(&mut b, 16, u32::from(to_fd));
            }
            PlaneMessage::CaptureDone { seq, frames, errno } => {
                put16(&mut b, 6, KIND_CAPTURE_DONE);
                put32(&mut b, 8, seq);
                put32(&mut b, 12, frames);
                put32(&mut b, 16, errno);
            }
        }
        b
    }

    /// Parses and validates a message; unused bytes must be zero.
    pub fn decode(bytes: &[u8]) -> Result<PlaneMessage, PlaneLinkError> {
        let b: &[u8; PLANE_MESSAGE_LEN] = bytes
            .get(..PLANE_MESSAGE_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(PlaneLinkError::Truncated)?;
        if get32(b, 0) != LINK_MAGIC || get16(b, 4) != LINK_VERSION {
            return Err(PlaneLinkError::BadMagic);
        }
        let zero_from = |at: usize| {
            if b.get(at..).is_some_and(|rest| rest.iter().all(|&x| x == 0)) {
                Ok(())
            } else {
                Err(PlaneLinkError::BadField("reserved bytes"))
            }
        };
        match get16(b, 6) {
            KIND_APP_FDS => {
                zero_from(32)?;
                if get16(b, 18) != 0 {
                    return Err(PlaneLinkError::BadField("reserved bytes"));
                }
                let layout = AppLayout {
                    instances: get16(b, 16),
                    sockets: get32(b, 20),
                    ring_slots: get32(b, 24),
                    socket_buffer: get32(b, 28),
                };
                layout.validate().map_err(|_| PlaneLinkError::BadField("app layout"))?;
                Ok(PlaneMessage::AppFds { app_id: get32(b, 8), family: get32(b, 12), layout })
            }
            KIND_CAPTURE => {
                zero_from(20)?;
                let count = get32(b, 8);
                if count == 0 {
                    return Err(PlaneLinkError::BadField("capture count"));
                }
                let to_fd = match get32(b, 16) {
                    0 => false,
                    1 => true,
                    _ => return Err(PlaneLinkError::BadField("capture flag")),
                };
                Ok(PlaneMessage::Capture { count, seq: get32(b, 12), to_fd })
            }
            KIND_CAPTURE_DONE => {
                zero_from(20)?;
                Ok(PlaneMessage::CaptureDone {
                    seq: get32(b, 8),
                    frames: get32(b, 12),
                    errno: get32(b, 16),
                })
            }
            kind => Err(PlaneLinkError::UnknownKind(kind)),
        }
    }
}

/// Plane side: hands an application's segment memfd and wake eventfd to an instance.
pub fn send_app_fds(
    sock: &UnixStream,
    app_id: u32,
    family: u32,
    layout: AppLayout,
    segment: BorrowedFd<'_>,
    wake: BorrowedFd<'_>,
) -> io::Result<()> {
    let msg = PlaneMessage::AppFds { app_id, family, layout };
    send_fds(sock, &msg.encode(), &[segment, wake])
}

/// Plane side: asks an instance for a capture of `count` frames, into `out` if given.
pub fn send_capture_request(
    sock: &UnixStream,
    count: u32,
    seq: u32,
    out: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let msg = PlaneMessage::Capture { count, seq, to_fd: out.is_some() };
    let fds: Vec<BorrowedFd<'_>> = out.into_iter().collect();
    send_fds(sock, &msg.encode(), &fds)
}

/// Blocking read of one message (the plane reading `CaptureDone`, or a test). Honours the
/// socket's timeout.
pub fn recv_plane_message(sock: &mut UnixStream) -> io::Result<(PlaneMessage, Vec<OwnedFd>)> {
    let mut buf = [0u8; PLANE_MESSAGE_LEN];
    let (n, fds) = recv_fds(sock, &mut buf, MAX_MESSAGE_FDS)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "plane link closed"));
    }
    if let Some(rest) = buf.get_mut(n..) {
        sock.read_exact(rest)?;
    }
    let msg =
        PlaneMessage::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if fds.len() != msg.fd_count() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, PlaneLinkError::MissingFds));
    }
    Ok((msg, fds))
}

/// Instance side: a non-blocking reader that reassembles messages and pairs them with
/// their descriptors.
#[derive(Debug)]
pub(crate) struct PlaneLink {
    sock: UnixStream,
    partial: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    closed: bool,
}

/// What one [`PlaneLink::poll`] call found.
#[derive(Debug, Default)]
pub(crate) struct PlaneInput {
    /// Complete messages with their descriptors.
    pub(crate) messages: Vec<(PlaneMessage, Vec<OwnedFd>)>,
    /// Messages refused (bad format or missing descriptors).
    pub(crate) errors: u32,
}

impl PlaneLink {
    /// Wraps the instance's end of the socketpair and makes it non-blocking.
    pub(crate) fn new(sock: UnixStream) -> io::Result<PlaneLink> {
        sock.set_nonblocking(true)?;
        Ok(PlaneLink { sock, partial: Vec::new(), fds: VecDeque::new(), closed: false })
    }

    /// The socket (for poll and for replies).
    pub(crate) fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// True once the plane closed its end.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Reads everything available without blocking.
    pub(crate) fn poll(&mut self) -> PlaneInput {
        let mut input = PlaneInput::default();
        let mut buf = [0u8; PLANE_MESSAGE_LEN * 8];
        while !self.closed {
            match recv_fds(&self.sock, &mut buf, crate::shm::fdpass::MAX_FDS_PER_MESSAGE) {
                Ok((0, _)) => self.closed = true,
                Ok((n, fds)) => {
                    self.partial.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                    self.fds.extend(fds);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    // Too many descriptors in one message: they were closed; the stream
                    // itself is still in step.
                    input.errors += 1;
                }
                Err(_) => self.closed = true,
            }
        }
        while self.partial.len() >= PLANE_MESSAGE_LEN {
            let rest = self.partial.split_off(PLANE_MESSAGE_LEN);
            let bytes = std::mem::replace(&mut self.partial, rest);
            match PlaneMessage::decode(&bytes) {
                Ok(msg) if self.fds.len() >= msg.fd_count() => {
                    let fds = self.fds.drain(..msg.fd_count()).collect();
                    input.messages.push((msg, fds));
                }
                Ok(_) => input.errors += 1,
                Err(_) => input.errors += 1,
            }
        }
        input
    }

    /// Sends a message to the plane (best effort: a full socket drops it).
    pub(crate) fn reply(&self, msg: &PlaneMessage) -> io::Result<()> {
        send_fds(&self.sock, &msg.encode(), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::EventFd;
    use std::os::fd::AsFd;

    const LAYOUT: AppLayout =
        AppLayout { instances: 2, sockets: 64, ring_slots: 16, socket_buffer: 4096 };

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        for m in [
            PlaneMessage::AppFds { app_id: 7, family: 3, layout: LAYOUT },
            PlaneMessage::Capture { count: 100, seq: 9, to_fd: true },
            PlaneMessage::Capture { count: 1, seq: 0, to_fd: false },
            PlaneMessage::CaptureDone { seq: 9, frames: 100, errno: 0 },
        ] {
            assert_eq!(PlaneMessage::decode(&m.encode()), Ok(m));
        }
        let good = PlaneMessage::AppFds { app_id: 7, family: 7, layout: LAYOUT }.encode();
        assert_eq!(PlaneMessage::decode(&good[..63]), Err(PlaneLinkError::Truncated));
        let mut bad = good;
        bad[1] ^= 1;
        assert_eq!(PlaneMessage::decode(&bad), Err(PlaneLinkError::BadMagic));
        let mut bad = good;
        bad[24] = 3; // ring slots not a power of two
        assert_eq!(PlaneMessage::decode(&bad), Err(PlaneLinkError::BadField("app layout")));
        let mut bad = good;
        bad[63] = 1;
        assert!(PlaneMessage::decode(&bad).is_err());
        let mut bad = good;
        bad[6] = 99;
        assert_eq!(PlaneMessage::decode(&bad), Err(PlaneLinkError::UnknownKind(99)));
        let zero = PlaneMessage::Capture { count: 0, seq: 1, to_fd: false }.encode();
        assert!(PlaneMessage::decode(&zero).is_err());
    }

    #[test]
    fn link_pairs_descriptors_with_their_messages_across_split_reads() {
        let (plane, inst) = UnixStream::pair().unwrap();
        let mut link = PlaneLink::new(inst).unwrap();
        assert!(link.poll().messages.is_empty());
        let a = EventFd::new().unwrap();
        let b = EventFd::new().unwrap();
        let c = EventFd::new().unwrap();
        send_app_fds(&plane, 1, 1, LAYOUT, a.as_fd(), b.as_fd()).unwrap();
        send_capture_request(&plane, 5, 2, Some(c.as_fd())).unwrap();
        send_capture_request(&plane, 6, 3, None).unwrap();
        // Half a message: nothing is decoded until the rest arrives.
        let half = PlaneMessage::Capture { count: 1, seq: 4, to_fd: false }.encode();
        io::Write::write_all(&mut &plane, &half[..10]).unwrap();
        let got = link.poll();
        assert_eq!(got.errors, 0);
        assert_eq!(got.messages.len(), 3);
        assert_eq!(got.messages[0].1.len(), 2);
        assert_eq!(got.messages[1].0, PlaneMessage::Capture { count: 5, seq: 2, to_fd: true });
        assert_eq!(got.messages[1].1.len(), 1);
        assert!(got.messages[2].1.is_empty());
        // The descriptors are the ones sent, in order.
        let wake = EventFd::from_fd(got.messages.into_iter().next().unwrap().1.pop().unwrap());
        b.notify().unwrap();
        assert_eq!(wake.unwrap().drain().unwrap(), 1);
        io::Write::write_all(&mut &plane, &half[10..]).unwrap();
        let got = link.poll();
        assert_eq!(got.messages.len(), 1);
        assert!(!link.is_closed());
        drop(plane);
        let _ = link.poll();
        assert!(link.is_closed());
    }

    #[test]
    fn a_message_without_its_descriptors_is_an_error() {
        let (plane, inst) = UnixStream::pair().unwrap();
        let mut link = PlaneLink::new(inst).unwrap();
        let msg = PlaneMessage::AppFds { app_id: 1, family: 1, layout: LAYOUT }.encode();
        io::Write::write_all(&mut &plane, &msg).unwrap();
        let got = link.poll();
        assert!(got.messages.is_empty());
        assert_eq!(got.errors, 1);
    }

    #[test]
    fn capture_done_reaches_the_plane() {
        let (mut plane, inst) = UnixStream::pair().unwrap();
        let link = PlaneLink::new(inst).unwrap();
        link.reply(&PlaneMessage::CaptureDone { seq: 4, frames: 10, errno: 0 }).unwrap();
        let (m, fds) = recv_plane_message(&mut plane).unwrap();
        assert_eq!(m, PlaneMessage::CaptureDone { seq: 4, frames: 10, errno: 0 });
        assert!(fds.is_empty());
    }
}
