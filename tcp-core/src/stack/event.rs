//! What the stack tells its embedder through [`Stack::poll_event`](super::Stack::poll_event).

use super::handle::{ListenerHandle, SocketHandle};
use crate::tcp::CloseReason;

/// Something the application may want to act on. Events are edge-triggered: each says that
/// something changed since the last time; the current state is always available through the
/// stack's query methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An active open completed the handshake.
    Connected(SocketHandle),
    /// A listener has at least one connection ready for [`Stack::accept`](super::Stack::accept).
    Acceptable(ListenerHandle),
    /// New data (or the end of the stream) can be read.
    Readable(SocketHandle),
    /// Send buffer space became available.
    Writable(SocketHandle),
    /// The peer closed its side (FIN received): reads return end of stream once the buffer
    /// is drained.
    ReadClosed(SocketHandle),
    /// The connection is finished; the handle stays valid until the application calls
    /// [`Stack::close`](super::Stack::close) (if it has not already).
    Closed(SocketHandle, CloseReason),
}
