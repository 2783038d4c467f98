//! Errors of the stack's socket operations. Each operation has its own enum so a caller
//! matches only what can happen; all of them are caller-side problems (the peer's
//! misbehaviour is counted, never returned).

use core::fmt;

use crate::tcp;

macro_rules! display_error {
    ($ty:ident { $($variant:pat => $msg:expr,)* }) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($variant => write!(f, "{}", $msg),)* }
            }
        }
        #[cfg(feature = "std")]
        impl std::error::Error for $ty {}
    };
}

/// Why [`Stack::listen`](super::Stack::listen) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenError {
    /// The address is neither unspecified nor this stack's address.
    AddrNotAvailable,
    /// Another listener already owns the port.
    AddrInUse,
    /// Port 0 or a backlog of 0.
    InvalidArgument,
}

display_error!(ListenError {
    ListenError::AddrNotAvailable => "address not available on this stack",
    ListenError::AddrInUse => "port already has a listener",
    ListenError::InvalidArgument => "invalid port or backlog",
});

/// Why [`Stack::accept`](super::Stack::accept) returned no connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptError {
    /// No connection is ready; wait for [`Event::Acceptable`](super::Event::Acceptable).
    WouldBlock,
    /// The handle names no open listener.
    InvalidHandle,
}

display_error!(AcceptError {
    AcceptError::WouldBlock => "no connection ready",
    AcceptError::InvalidHandle => "invalid listener handle",
});

/// Why [`Stack::connect`](super::Stack::connect) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// Unspecified, broadcast, multicast or own address, or port 0.
    InvalidAddress,
    /// No route: the destination is off-link and there is no gateway.
    Unreachable,
    /// The requested local port is already used with this remote address.
    AddrInUse,
    /// Every ephemeral port is in use towards this remote address.
    NoEphemeralPort,
    /// The stack holds `max_sockets` sockets already.
    TooManySockets,
}

display_error!(ConnectError {
    ConnectError::InvalidAddress => "invalid remote address",
    ConnectError::Unreachable => "network unreachable",
    ConnectError::AddrInUse => "address already in use",
    ConnectError::NoEphemeralPort => "no free ephemeral port",
    ConnectError::TooManySockets => "socket limit reached",
});

/// Why an operation on a connected socket failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketError {
    /// The handle names no live socket (never valid, or already closed and freed).
    InvalidHandle,
    /// The connection refused the send.
    Send(tcp::SendError),
    /// The connection refused the receive.
    Recv(tcp::RecvError),
}

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketError::InvalidHandle => write!(f, "invalid socket handle"),
            SocketError::Send(e) => write!(f, "send: {e}"),
            SocketError::Recv(e) => write!(f, "recv: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SocketError {}

/// Why [`Stack::import_connection`](super::Stack::import_connection) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportError {
    /// The connection's local address is not this stack's.
    WrongAddress,
    /// A connection with the same 4-tuple exists already.
    Duplicate,
    /// The stack holds `max_sockets` sockets already.
    TooManySockets,
}

display_error!(ImportError {
    ImportError::WrongAddress => "connection does not belong to this address",
    ImportError::Duplicate => "4-tuple already in use",
    ImportError::TooManySockets => "socket limit reached",
});
