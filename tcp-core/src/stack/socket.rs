//! The stack's bookkeeping around each connection and listener.

use alloc::collections::VecDeque;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::handle::SocketHandle;
use crate::tcp::Connection;
use crate::time::Instant;

/// A connection plus what the stack needs to know about who owns it.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) conn: Connection,
    /// The listener (slab index) that created this connection, until the application
    /// accepts it. Events of unaccepted connections go to the listener, not the app.
    pub(crate) parent: Option<u32>,
    /// True once the handshake completed and the socket sits in its parent's accept queue.
    pub(crate) in_accept_queue: bool,
    /// The application gave up its handle (`close`/`abort`); the stack frees the socket as
    /// soon as the connection reaches CLOSED.
    pub(crate) app_closed: bool,
    /// The deadline this socket currently has in the stack's timer set.
    pub(crate) deadline: Option<Instant>,
    /// True while the socket's index sits in the transmit queue.
    pub(crate) tx_queued: bool,
    /// Where this connection's frames go at the Ethernet level (the peer or the gateway).
    pub(crate) next_hop: Ipv4Addr,
}

/// A listening socket: its own SYN and accept queues (DESIGN.md: each instance holds a clone
/// of every listener).
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) local: SocketAddrV4,
    pub(crate) backlog: usize,
    /// Connections in SYN-RECEIVED that this listener created.
    pub(crate) syn_queue: usize,
    /// Established connections waiting for `accept`.
    pub(crate) accept_queue: VecDeque<SocketHandle>,
}
