//! Public value types of the connection API: addressing, states (RFC 9293 §3.3.2), events,
//! errors and statistics.

use core::fmt;
use core::net::SocketAddrV4;

use crate::tcp::seq::SeqNumber;
use crate::time::Duration;

/// The addresses and ports that identify a connection, from this host's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Ord, PartialOrd)]
pub struct FourTuple {
    /// This host's address and port.
    pub local: SocketAddrV4,
    /// The peer's address and port.
    pub remote: SocketAddrV4,
}

/// The connection states of RFC 9293 §3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// No connection.
    Closed,
    /// Waiting for a SYN (listeners live in the stack; a connection is never in this state).
    Listen,
    /// SYN sent, waiting for the peer's SYN.
    SynSent,
    /// SYN received and SYN-ACK sent, waiting for the ACK.
    SynReceived,
    /// Open; data flows both ways.
    Established,
    /// We closed; our FIN is not yet acknowledged.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's FIN.
    FinWait2,
    /// The peer closed; we may still send.
    CloseWait,
    /// Both sides closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed first, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Both FINs acknowledged; lingering 2*MSL for stray segments.
    TimeWait,
}

impl State {
    /// SYN-RECEIVED or later, but not CLOSED: the states with a synchronized peer.
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::Closed | State::Listen | State::SynSent)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECEIVED",
            State::Established => "ESTABLISHED",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        })
    }
}

/// What the stack supplies when it creates a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionParams {
    /// The connection's addresses.
    pub tuple: FourTuple,
    /// Initial send sequence number (RFC 6528), chosen by the stack.
    pub iss: SeqNumber,
    /// Random offset added to our timestamp clock (RFC 7323 §5.4).
    pub ts_offset: u32,
}

/// Options agreed during a handshake, as recovered from a SYN cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's MSS.
    pub mss: u16,
    /// The peer's window-scale shift, when both sides use scaling.
    pub window_scale: Option<u8>,
    /// Both sides permit SACK.
    pub sack: bool,
    /// Both sides use timestamps.
    pub timestamps: bool,
}

/// What [`super::Connection::handle_segment`] did with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentOutcome {
    /// Processed (possibly partly, e.g. data trimmed to the window).
    Accepted,
    /// Discarded; an ACK or RST may still be queued in reply.
    Dropped(DropReason),
    /// A SYN that may reuse this TIME-WAIT tuple (RFC 6191): the stack should free this
    /// connection and treat the SYN as a new connection request.
    ReopenFromTimeWait,
}

/// Why a segment was discarded.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Outside the receive window (RFC 9293 §3.10.7.4).
    OutOfWindow,
    /// Failed the PAWS test (RFC 7323 §5).
    PawsRejected,
    /// The ACK field was not acceptable.
    BadAck,
    /// Answered with a challenge ACK (RFC 5961).
    ChallengeAck,
    /// A RST whose sequence or acknowledgment number was not acceptable.
    RstNotAcceptable,
    /// Not expected in the current state.
    InvalidState,
    /// A segment without ACK in a synchronized state.
    NoAck,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::OutOfWindow => "segment outside the receive window",
            DropReason::PawsRejected => "timestamp older than TS.Recent (PAWS)",
            DropReason::BadAck => "unacceptable acknowledgment number",
            DropReason::ChallengeAck => "answered with a challenge ACK",
            DropReason::RstNotAcceptable => "unacceptable reset",
            DropReason::InvalidState => "segment not expected in this state",
            DropReason::NoAck => "ACK bit missing",
        })
    }
}

/// Edge-triggered notifications, delivered in order by `poll_event`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The handshake completed.
    Established,
    /// New data can be read.
    Readable,
    /// Send buffer space became free after a send was cut short.
    Writable,
    /// The peer sent FIN: after the buffered data, reads return end of file.
    ReadClosed,
    /// The connection reached CLOSED.
    Closed(CloseReason),
}

/// Why a connection reached CLOSED.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Orderly close by both sides.
    Normal,
    /// The peer reset the connection (or refused it).
    Reset,
    /// Retransmissions, SYN retries, zero-window probes or keepalives went unanswered.
    TimedOut,
    /// Closed locally with `abort`, or with unread data.
    Aborted,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Normal => "closed",
            CloseReason::Reset => "connection reset by peer",
            CloseReason::TimedOut => "connection timed out",
            CloseReason::Aborted => "connection aborted",
        })
    }
}

/// Why `send` failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendError {
    /// The connection is not open (never opened, or already closed).
    NotConnected,
    /// The write side was shut down.
    Closed,
    /// The peer reset the connection.
    Reset,
    /// The connection timed out.
    TimedOut,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::NotConnected => "not connected",
            SendError::Closed => "write side shut down",
            SendError::Reset => "connection reset by peer",
            SendError::TimedOut => "connection timed out",
        })
    }
}

/// Why `recv` failed. `Ok(0)` from `recv` means orderly end of file.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecvError {
    /// Nothing to read yet.
    WouldBlock,
    /// The connection is not open.
    NotConnected,
    /// The peer reset the connection.
    Reset,
    /// The connection timed out.
    TimedOut,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvError::WouldBlock => "no data available",
            RecvError::NotConnected => "not connected",
            RecvError::Reset => "connection reset by peer",
            RecvError::TimedOut => "connection timed out",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SendError {}
#[cfg(feature = "std")]
impl std::error::Error for RecvError {}

/// Counters and estimates for one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Segments produced by `poll_transmit`.
    pub segments_sent: u64,
    /// Segments given to `handle_segment`.
    pub segments_received: u64,
    /// Segments (or SYNs, FINs) sent again.
    pub retransmits: u64,
    /// Fast retransmits (loss recovery entered on duplicate ACKs or SACK).
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Duplicate ACKs received.
    pub dup_acks: u64,
    /// D-SACK blocks received (RFC 2883).
    pub dsacks: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub challenge_acks: u64,
    /// Segments dropped, any reason.
    pub dropped: u64,
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Congestion window, bytes.
    pub cwnd: u32,
    /// Slow-start threshold, bytes (`u32::MAX` before the first loss).
    pub ssthresh: u32,
    /// Largest payload we send per segment.
    pub send_mss: u32,
}
