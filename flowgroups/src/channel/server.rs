//! The instance side of the app channel: serve one application's request ring against this
//! instance's `tcp_core` stack, and keep its readiness words and data rings current.
//!
//! Sans-IO in the tcp-core style: nothing here blocks or reads a clock. The kernel
//! instance's loop calls, per iteration, [`ChannelHub::serve`] (requests in), feeds the
//! stack's events to [`ChannelHub::on_stack_event`], and before it blocks calls
//! [`ChannelHub::prepare_sleep`]. Everything read from an app segment is validated (see
//! [`proto`](super::proto)); an app that corrupts its rings is marked broken and its
//! sockets are reset, and nothing it writes can make this code panic or touch another
//! app's memory (DESIGN.md "Shared memory and trust").

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use tcp_core::Instant;
use tcp_core::stack::{ConnectError, Event, SocketHandle, Stack};
use tcp_core::tcp::{CloseReason, Keepalive, State};

use super::proto::{
    Completion, CompletionSlot, Errno, Opcode, Request, RequestSlot, ShutdownHow, SockOption,
    SocketInfo, linux_tcp_state,
};
use super::registry::{AppId, AppLink, ListenerRegistry};
use super::{AppLayout, AppSegment, ChannelError, Readiness, SocketField};
use crate::shm::{ByteRingReader, ByteRingWriter, EventFd, RingConsumer, RingProducer, ShmError};

/// Most requests taken from one app per [`AppServer::serve`] call, so a flooding app cannot
/// starve the others or the network.
const MAX_REQUESTS_PER_SERVE: u32 = 256;
/// Bytes moved between the stack and a data ring per copy.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Chooses the local port of an active open (the ports module picks one whose reply hashes
/// to this instance's flow groups); `None` lets the stack pick an ephemeral port.
/// Rounds of `serve` a dying app's leftover requests get (each up to
/// `MAX_REQUESTS_PER_SERVE`).
const DETACH_SERVE_ROUNDS: usize = 64;

pub type SourcePortChooser<'a> = &'a mut dyn FnMut(&Stack, SocketAddrV4) -> Option<u16>;

/// Says whether the replies of a connection from local port `port` to `remote` reach this
/// instance (their flow group is this instance's). An app that bound its source port
/// (`bind` before `connect`) gets its connection from the instance for which this holds;
/// the others answer `EREMOTE` and the client asks the next one.
pub type ReplyOwnerCheck<'a> = &'a mut dyn FnMut(&Stack, u16, SocketAddrV4) -> bool;

/// What one `serve` call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Requests taken from request rings.
    pub requests: u64,
    /// Requests refused as malformed.
    pub invalid: u64,
    /// Completions posted.
    pub completions: u64,
    /// Bytes moved from tx rings into the stack.
    pub tx_bytes: u64,
    /// Bytes moved from the stack into rx rings.
    pub rx_bytes: u64,
    /// Eventfd writes.
    pub wakes: u64,
    /// Apps found broken during this call.
    pub broken: u64,
}

impl ServeStats {
    fn add(&mut self, o: &ServeStats) {
        self.requests += o.requests;
        self.invalid += o.invalid;
        self.completions += o.completions;
        self.tx_bytes += o.tx_bytes;
        self.rx_bytes += o.rx_bytes;
        self.wakes += o.wakes;
        self.broken += o.broken;
    }
}

/// A connection of the app served by this instance.
#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    rx: ByteRingWriter,
    tx: ByteRingReader,
    /// The handshake completed (accepted connections start so).
    connected: bool,
    /// RDHUP published: the stack reported end of stream and everything is in the ring.
    eof: bool,
    /// The app asked for SHUT_WR; a FIN goes out once the tx ring is drained.
    shut_wr_pending: bool,
    shut_wr_done: bool,
    /// The stack reported the connection finished.
    closed: bool,
}

/// One application's segment as seen by one instance.
#[derive(Debug)]
pub struct AppServer {
    link: Arc<AppLink>,
    layout: AppLayout,
    requests: RingConsumer<RequestSlot>,
    completions: RingProducer<CompletionSlot>,
    /// Completion slots known to be free (refreshed from the ring when it reaches 0).
    completion_room: u32,
    conns: BTreeMap<u32, Conn>,
    /// Stack handle -> slot of every entry in `conns`.
    slots: BTreeMap<SocketHandle, u32>,
    /// Connections the app closed while bytes of its tx ring were still waiting for room in
    /// the stack: the bytes were copied out so the slot could be reused.
    lingering: BTreeMap<SocketHandle, VecDeque<u8>>,
    /// Options set on the app's listener slots, given to every connection accepted from
    /// them. At most one entry per subscribed slot, so bounded by the layout.
    listener_options: BTreeMap<u32, InheritedOptions>,
    broken: Option<&'static str>,
    /// Something changed in the app's segment since the last wake check.
    dirty: bool,
    totals: ServeStats,
    scratch: Vec<u8>,
    /// Slots whose connection migrated to another instance (live flow-group moves): the
    /// app may still send their requests here, which are handed on (see
    /// [`ChannelHub::take_forwarded_requests`]).
    moved: BTreeMap<u32, u16>,
    /// Requests for moved slots, waiting to be forwarded: (instance, slot).
    forward_out: Vec<(u16, RequestSlot)>,
}

/// A connection's app-side binding, handed from one instance to another with the
/// connection itself when its flow group migrates: which app and socket slot it belongs to
/// and what the old instance had already told the app. The slot's rings and state words
/// live in the app's segment and stay as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketBinding {
    /// The app.
    pub app_id: AppId,
    /// Its socket slot.
    pub slot: u32,
    /// The handshake had completed.
    pub connected: bool,
    /// End of stream was published (RDHUP).
    pub eof: bool,
    /// The app asked for SHUT_WR; the FIN waits for the tx ring to drain.
    pub shut_wr_pending: bool,
    /// The FIN for SHUT_WR was handed to the stack.
    pub shut_wr_done: bool,
}

/// The port decisions `serve` takes from the kernel instance.
struct PortRules<'a, 'b> {
    choose: &'b mut (dyn FnMut(&Stack, SocketAddrV4) -> Option<u16> + 'a),
    owns_reply: &'b mut (dyn FnMut(&Stack, u16, SocketAddrV4) -> bool + 'a),
}

/// The options of a listener that its accepted connections inherit (the last value of
/// each kind).
#[derive(Clone, Copy, Debug, Default)]
struct InheritedOptions {
    no_delay: Option<bool>,
    cork: Option<bool>,
    keepalive: Option<bool>,
}

impl InheritedOptions {
    fn set(&mut self, option: SockOption) {
        match option {
            SockOption::NoDelay(on) => self.no_delay = Some(on),
            SockOption::Cork(on) => self.cork = Some(on),
            SockOption::KeepAlive(on) => self.keepalive = Some(on),
        }
    }

    fn iter(&self) -> impl Iterator<Item = SockOption> {
        [
            self.no_delay.map(SockOption::NoDelay),
            self.cork.map(SockOption::Cork),
            self.keepalive.map(SockOption::KeepAlive),
        ]
        .into_iter()
        .flatten()
    }
}

fn apply_option(
    stack: &mut Stack,
    h: SocketHandle,
    option: SockOption,
) -> Result<(), tcp_core::stack::SocketError> {
    match option {
        SockOption::NoDelay(on) => stack.set_nodelay(h, on),
        SockOption::Cork(on) => stack.set_cork(h, on),
        SockOption::KeepAlive(on) => stack.set_keepalive(h, on.then(Keepalive::default)),
    }
}

fn connect_errno(e: ConnectError) -> Errno {
    match e {
        ConnectError::Unreachable => Errno::ENETUNREACH,
        ConnectError::AddrInUse | ConnectError::NoEphemeralPort => Errno::EADDRNOTAVAIL,
        ConnectError::TooManySockets => Errno::ENOBUFS,
        _ => Errno::EINVAL,
    }
}

impl AppServer {
    /// Attaches `instance` to the app's rings. `segment` must have been opened with the
    /// layout the control plane chose (never one read from the segment); `family` is the
    /// app's listener family (see [`ListenerRegistry::subscribe`]).
    pub fn new(
        app_id: AppId,
        family: u32,
        instance: u16,
        segment: AppSegment,
        wake: EventFd,
    ) -> Result<AppServer, ChannelError> {
        let layout = segment.layout();
        let requests = segment.request_consumer(instance)?;
        let mut completions = segment.completion_producer(instance)?;
        let completion_room = completions.free_slots()?;
        Ok(AppServer {
            link: Arc::new(AppLink::new(app_id, family, instance, segment, wake)),
            layout,
            requests,
            completions,
            completion_room,
            conns: BTreeMap::new(),
            slots: BTreeMap::new(),
            lingering: BTreeMap::new(),
            listener_options: BTreeMap::new(),
            broken: None,
            dirty: false,
            totals: ServeStats::default(),
            scratch: vec![0; SCRATCH_BYTES],
            moved: BTreeMap::new(),
            forward_out: Vec::new(),
        })
    }

    /// The app's id.
    pub fn app_id(&self) -> AppId {
        self.link.app_id()
    }

    /// Why the app was given up on, if it was.
    pub fn broken(&self) -> Option<&'static str> {
        self.broken
    }

    /// Counters since attach.
    pub fn totals(&self) -> ServeStats {
        self.totals
    }

    /// Connections this instance holds for the app (including closed-but-lingering ones).
    pub fn connection_count(&self) -> usize {
        self.conns.len() + self.lingering.len()
    }

    /// Takes and executes up to a budget of requests, posting completions, then wakes the
    /// app if it sleeps and anything changed.
    pub fn serve(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        registry: &mut ListenerRegistry,
        ports: SourcePortChooser<'_>,
        owns_reply: ReplyOwnerCheck<'_>,
    ) -> ServeStats {
        let before = self.totals;
        if self.broken.is_none() {
            for _ in 0..MAX_REQUESTS_PER_SERVE {
                if self.completion_room == 0 {
                    match self.completions.free_slots() {
                        Ok(0) => break, // back-pressure: the app must drain completions
                        Ok(n) => self.completion_room = n,
                        Err(e) => {
                            self.break_app(stack, registry, shm_reason(&e, "completion ring"));
                            break;
                        }
                    }
                }
                let slot = match self.requests.pop() {
                    Ok(Some(slot)) => slot,
                    Ok(None) => break,
                    Err(e) => {
                        self.break_app(stack, registry, shm_reason(&e, "request ring"));
                        break;
                    }
                };
                self.totals.requests += 1;
                if let Some(to) = self.moved_target(&slot) {
                    self.forward_out.push((to, slot));
                    continue;
                }
                self.handle_slot(&slot, stack, now, registry, ports, owns_reply);
                if self.broken.is_some() {
                    break;
                }
            }
        }
        self.flush_wake();
        let mut stats = self.totals;
        stats.requests -= before.requests;
        stats.invalid -= before.invalid;
        stats.completions -= before.completions;
        stats.tx_bytes -= before.tx_bytes;
        stats.rx_bytes -= before.rx_bytes;
        stats.wakes -= before.wakes;
        stats.broken -= before.broken;
        stats
    }

    fn handle_slot(
        &mut self,
        slot: &RequestSlot,
        stack: &mut Stack,
        now: Instant,
        registry: &mut ListenerRegistry,
        ports: SourcePortChooser<'_>,
        owns_reply: ReplyOwnerCheck<'_>,
    ) {
        let completion = match slot.decode(&self.layout) {
            Err(e) => {
                self.totals.invalid += 1;
                Some(Completion::failed(slot, e.errno()))
            }
            Ok(request) => {
                let rules = PortRules { choose: ports, owns_reply };
                let result = self.execute(request, slot.user, stack, now, registry, rules);
                match result {
                    Ok(c) => c,
                    Err(errno) => Some(Completion::failed(slot, errno)),
                }
            }
        };
        if let Some(c) = completion {
            self.post(c, stack, registry);
        }
    }

    fn post(&mut self, c: Completion, stack: &mut Stack, registry: &mut ListenerRegistry) {
        match self.completions.push(&c.encode()) {
            Ok(true) => {
                self.completion_room = self.completion_room.saturating_sub(1);
                self.totals.completions += 1;
                self.dirty = true;
            }
            // Room was checked before the request was taken; a full ring here means the
            // app rewound its head, which the ring reports as corruption on the next call.
            Ok(false) => self.completion_room = 0,
            Err(e) => self.break_app(stack, registry, shm_reason(&e, "completion ring")),
        }
    }

    /// Executes one validated request. `Ok(None)` means no completion (doorbells).
    fn execute(
        &mut self,
        request: Request,
        user: u64,
        stack: &mut Stack,
        now: Instant,
        registry: &mut ListenerRegistry,
        ports: PortRules<'_, '_>,
    ) -> Result<Option<Completion>, Errno> {
        let app = self.app_id();
        match request {
            Request::Listen { sock, port, backlog } => {
                if self.conns.contains_key(&sock.0) {
                    return Err(Errno::EINVAL);
                }
                registry.subscribe(stack, &self.link, sock.0, port, backlog)?;
                self.dirty = true;
                Ok(Some(Completion::Listening { user, sock }))
            }
            Request::Accept { listener, new_sock } => {
                let (port, handle) = registry.listener_of(app, listener.0).ok_or(Errno::EINVAL)?;
                if self.slot_in_use(registry, new_sock.0) {
                    return Err(Errno::EBADF);
                }
                let accepted = stack.accept(handle);
                registry.publish(stack, port);
                let (conn, peer) = accepted.map_err(|_| Errno::EAGAIN)?;
                let local = match stack.tuple(conn) {
                    Ok(t) => t.local,
                    Err(_) => return Err(Errno::ECONNABORTED),
                };
                if let Some(inherited) = self.listener_options.get(&listener.0) {
                    for option in inherited.iter() {
                        let _ = apply_option(stack, conn, option);
                    }
                }
                self.bind(stack, registry, new_sock.0, conn, true)?;
                self.pump_rx(stack, new_sock.0);
                Ok(Some(Completion::Accepted { user, listener, sock: new_sock, peer, local }))
            }
            Request::Connect { sock, addr, local_port } => {
                if self.slot_in_use(registry, sock.0) {
                    return Err(Errno::EISCONN);
                }
                let port = match local_port {
                    Some(p) => {
                        // A listening port is taken on every instance (listeners are
                        // replicated), so this answer does not depend on which one asks.
                        if registry.subscribers(p) > 0 {
                            return Err(Errno::EADDRINUSE);
                        }
                        if !(ports.owns_reply)(stack, p, addr) {
                            return Err(Errno::EREMOTE);
                        }
                        if !stack.tuple_free(p, addr) {
                            return Err(Errno::EADDRINUSE);
                        }
                        Some(p)
                    }
                    None => (ports.choose)(stack, addr),
                };
                let conn = stack.connect(now, addr, port).map_err(|e| match (e, local_port) {
                    (ConnectError::AddrInUse, Some(_)) => Errno::EADDRINUSE,
                    (e, _) => connect_errno(e),
                })?;
                let local = match stack.tuple(conn) {
                    Ok(t) => t.local,
                    Err(_) => return Err(Errno::ECONNABORTED),
                };
                self.bind(stack, registry, sock.0, conn, false)?;
                Ok(Some(Completion::Connecting { user, sock, local }))
            }
            Request::TxReady { sock } => {
                if !self.conns.contains_key(&sock.0) {
                    return Err(Errno::EBADF);
                }
                if let Ok(bell) = self.link.segment().socket_word(sock.0, SocketField::TxDoorbell) {
                    // AcqRel: reading the app's swap(1) makes its ring write (before that
                    // swap) visible to the drain below; see SocketField::TxDoorbell.
                    bell.swap(0, Ordering::AcqRel);
                }
                self.pump_tx(stack, sock.0);
                Ok(None)
            }
            Request::RxConsumed { sock } => {
                if !self.conns.contains_key(&sock.0) {
                    return Err(Errno::EBADF);
                }
                self.pump_rx(stack, sock.0);
                Ok(None)
            }
            Request::Shutdown { sock, how } => {
                let conn = self.conns.get_mut(&sock.0).ok_or(Errno::ENOTCONN)?;
                if matches!(how, ShutdownHow::Read | ShutdownHow::Both) {
                    self.link.raise(sock.0, Readiness::RDHUP);
                    self.link.touch_socket(sock.0);
                }
                if matches!(how, ShutdownHow::Write | ShutdownHow::Both) {
                    conn.shut_wr_pending = true;
                    self.pump_tx(stack, sock.0);
                }
                self.dirty = true;
                Ok(Some(Completion::Done { user, op: Opcode::Shutdown, sock }))
            }
            Request::Close { sock } => {
                if registry.unsubscribe(stack, app, sock.0) {
                    self.listener_options.remove(&sock.0);
                    return Ok(Some(Completion::Done { user, op: Opcode::Close, sock }));
                }
                self.close_conn(stack, registry, sock.0)?;
                Ok(Some(Completion::Done { user, op: Opcode::Close, sock }))
            }
            Request::Abort { sock } => {
                if registry.unsubscribe(stack, app, sock.0) {
                    self.listener_options.remove(&sock.0);
                    return Ok(Some(Completion::Done { user, op: Opcode::Abort, sock }));
                }
                let conn = self.remove_conn(sock.0).ok_or(Errno::EBADF)?;
                registry.unbind_connection(conn.handle);
                let _ = stack.abort(conn.handle);
                Ok(Some(Completion::Done { user, op: Opcode::Abort, sock }))
            }
            Request::SetOption { sock, option } => {
                if registry.listener_of(app, sock.0).is_some() {
                    // Kept for the connections this instance accepts from it, as Linux
                    // copies a listener's options to its children.
                    self.listener_options.entry(sock.0).or_default().set(option);
                    return Ok(Some(Completion::Done { user, op: Opcode::SetOption, sock }));
                }
                let conn = self.conns.get(&sock.0).ok_or(Errno::EBADF)?;
                // A finished connection keeps its handle until close; options are moot.
                apply_option(stack, conn.handle, option).map_err(|_| Errno::EINVAL)?;
                Ok(Some(Completion::Done { user, op: Opcode::SetOption, sock }))
            }
            Request::GetInfo { sock } => {
                if let Some((port, _)) = registry.listener_of(app, sock.0) {
                    let any = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
                    let info = SocketInfo {
                        tcp_state: linux_tcp_state(State::Listen),
                        local: SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port),
                        peer: any,
                        unread: 0,
                        unacked: 0,
                    };
                    return Ok(Some(Completion::Info { user, sock, info }));
                }
                let conn = self.conns.get(&sock.0).ok_or(Errno::EBADF)?;
                let h = conn.handle;
                let tuple = stack.tuple(h).map_err(|_| Errno::ENOTCONN)?;
                let info = SocketInfo {
                    tcp_state: stack.state(h).map(linux_tcp_state).unwrap_or(7),
                    local: tuple.local,
                    peer: tuple.remote,
                    unread: clamp_u32(stack.recv_queue_len(h).unwrap_or(0)),
                    unacked: clamp_u32(stack.send_queue_len(h).unwrap_or(0)),
                };
                Ok(Some(Completion::Info { user, sock, info }))
            }
        }
    }

    fn slot_in_use(&self, registry: &ListenerRegistry, slot: u32) -> bool {
        self.conns.contains_key(&slot) || registry.listener_of(self.app_id(), slot).is_some()
    }

    /// Gives `slot` to connection `handle`: fresh rings, fresh state word.
    fn bind(
        &mut self,
        stack: &mut Stack,
        registry: &mut ListenerRegistry,
        slot: u32,
        handle: SocketHandle,
        connected: bool,
    ) -> Result<(), Errno> {
        let seg = self.link.segment();
        let attached = seg
            .reset_socket(slot, self.link.instance())
            .and_then(|_| Ok((seg.rx_writer(slot)?, seg.tx_reader(slot)?)));
        let (rx, tx) = match attached {
            Ok(pair) => pair,
            Err(_) => {
                let _ = stack.abort(handle);
                return Err(Errno::EFAULT);
            }
        };
        if connected {
            self.link.raise(slot, Readiness::CONNECTED);
        }
        self.conns.insert(
            slot,
            Conn {
                handle,
                rx,
                tx,
                connected,
                eof: false,
                shut_wr_pending: false,
                shut_wr_done: false,
                closed: false,
            },
        );
        self.slots.insert(handle, slot);
        self.moved.remove(&slot);
        registry.bind_connection(handle, self.app_id());
        self.dirty = true;
        Ok(())
    }

    /// The instance a request must be handed to: requests about an existing connection
    /// whose slot migrated away (never those that open a new one in the slot).
    fn moved_target(&self, slot: &RequestSlot) -> Option<u16> {
        let to = *self.moved.get(&slot.sock)?;
        match Opcode::from_u16(slot.opcode)? {
            Opcode::Listen | Opcode::Accept | Opcode::Connect => None,
            _ => Some(to),
        }
    }

    /// The binding of connection `h` if it can migrate: bound to a slot, not finished, and
    /// not closed by the app (a lingering connection stays where it is).
    fn binding_of(&self, h: SocketHandle) -> Option<SocketBinding> {
        let slot = self.slot_of(h)?;
        let c = self.conns.get(&slot).filter(|c| !c.closed)?;
        Some(SocketBinding {
            app_id: self.app_id(),
            slot,
            connected: c.connected,
            eof: c.eof,
            shut_wr_pending: c.shut_wr_pending,
            shut_wr_done: c.shut_wr_done,
        })
    }

    /// Gives up connection `h` (its TCB is being exported to instance `to`); later requests
    /// for its slot are handed to `to`.
    fn release_binding(
        &mut self,
        registry: &mut ListenerRegistry,
        h: SocketHandle,
        to: u16,
    ) -> Option<SocketBinding> {
        let b = self.binding_of(h)?;
        self.remove_conn(b.slot)?;
        registry.unbind_connection(h);
        self.moved.insert(b.slot, to);
        Some(b)
    }

    /// Takes over a slot whose connection was imported as `h`: the rings keep their
    /// positions (the app may have bytes in flight in both), the owner word names this
    /// instance, and whatever is already waiting is moved at once.
    fn adopt(
        &mut self,
        stack: &mut Stack,
        registry: &mut ListenerRegistry,
        b: SocketBinding,
        h: SocketHandle,
    ) -> Result<(), Errno> {
        if self.broken.is_some() || self.conns.contains_key(&b.slot) {
            return Err(Errno(libc::EBUSY));
        }
        let seg = self.link.segment();
        let (rx, tx) = match (seg.rx_writer(b.slot), seg.tx_reader(b.slot)) {
            (Ok(rx), Ok(tx)) => (rx, tx),
            _ => return Err(Errno::EFAULT),
        };
        if let Ok(owner) = seg.socket_word(b.slot, SocketField::Owner) {
            owner.store(u32::from(self.link.instance()), Ordering::Release);
        }
        self.conns.insert(
            b.slot,
            Conn {
                handle: h,
                rx,
                tx,
                connected: b.connected,
                eof: b.eof,
                shut_wr_pending: b.shut_wr_pending,
                shut_wr_done: b.shut_wr_done,
                closed: false,
            },
        );
        self.slots.insert(h, b.slot);
        self.moved.remove(&b.slot);
        registry.bind_connection(h, self.app_id());
        self.pump_rx(stack, b.slot);
        self.pump_tx(stack, b.slot);
        self.link.touch_socket(b.slot);
        self.dirty = true;
        self.flush_wake();
        Ok(())
    }

    fn remove_conn(&mut self, slot: u32) -> Option<Conn> {
        let conn = self.conns.remove(&slot)?;
        self.slots.remove(&conn.handle);
        Some(conn)
    }

    /// The app closed a connection slot. Bytes still in its tx ring are copied out (so the
    /// slot is free as soon as the completion is posted) and fed to the stack as room
    /// appears; then the connection is closed. Unread received bytes mean a reset, as on
    /// Linux.
    fn close_conn(
        &mut self,
        stack: &mut Stack,
        registry: &mut ListenerRegistry,
        slot: u32,
    ) -> Result<(), Errno> {
        self.pump_tx(stack, slot);
        let mut conn = self.remove_conn(slot).ok_or(Errno::EBADF)?;
        let h = conn.handle;
        let unread = conn.rx.unread().unwrap_or(0) > 0;
        let mut rest = VecDeque::new();
        if !unread && !conn.closed {
            let mut buf = vec![0u8; conn.tx.readable().unwrap_or(0)];
            if let Ok(n) = conn.tx.read(&mut buf) {
                rest.extend(buf.get(..n).unwrap_or(&[]));
            }
        }
        if unread {
            registry.unbind_connection(h);
            let _ = stack.abort(h);
        } else if rest.is_empty() {
            registry.unbind_connection(h);
            let _ = stack.close(h);
        } else if self.lingering.len() >= self.layout.sockets as usize {
            // Each lingering connection holds up to a socket buffer of the app's bytes in
            // instance memory; an app that closes faster than its peers read is capped.
            registry.unbind_connection(h);
            let _ = stack.abort(h);
        } else {
            self.lingering.insert(h, rest);
        }
        Ok(())
    }

    /// Moves received bytes from the stack into `slot`'s rx ring until one is empty or the
    /// other full, and publishes end of stream once everything before the FIN is in.
    fn pump_rx(&mut self, stack: &mut Stack, slot: u32) {
        let Some(conn) = self.conns.get_mut(&slot) else { return };
        let mut moved = 0u64;
        let mut corrupt = false;
        loop {
            let room = match conn.rx.writable() {
                Ok(n) => n,
                Err(_) => {
                    corrupt = true;
                    break;
                }
            };
            if room == 0 {
                if !stack.can_recv(conn.handle) {
                    break;
                }
                // Ask the app to tell us when it reads, then look again: it may have read
                // between our check and the flag (see SocketField::RxDoorbell).
                if let Ok(bell) = self.link.segment().socket_word(slot, SocketField::RxDoorbell) {
                    bell.store(1, Ordering::Relaxed);
                }
                fence(Ordering::SeqCst);
                match conn.rx.writable() {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(_) => {
                        corrupt = true;
                        break;
                    }
                }
            }
            let Some(buf) = self.scratch.get_mut(..room.min(SCRATCH_BYTES)) else { break };
            match stack.recv(conn.handle, buf) {
                Ok(0) => {
                    if !conn.eof {
                        conn.eof = true;
                        self.link.raise(slot, Readiness::RDHUP);
                        self.dirty = true;
                        self.link.touch_socket(slot);
                    }
                    break;
                }
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or(&[]);
                    match conn.rx.write(data) {
                        Ok(w) if w == n => moved += n as u64,
                        _ => {
                            corrupt = true;
                            break;
                        }
                    }
                }
                Err(_) => break,
            }
        }
        if moved > 0 {
            self.totals.rx_bytes += moved;
            self.link.touch_socket(slot);
            self.dirty = true;
        }
        if corrupt {
            self.fail_conn(stack, slot, Errno::EFAULT);
        }
    }

    /// Moves bytes from `slot`'s tx ring into the stack until one is empty or the other
    /// full; sends the pending FIN once the ring is drained.
    fn pump_tx(&mut self, stack: &mut Stack, slot: u32) {
        let Some(conn) = self.conns.get_mut(&slot) else { return };
        let mut freed = 0u64;
        let mut corrupt = false;
        loop {
            let avail = match conn.tx.readable() {
                Ok(n) => n,
                Err(_) => {
                    corrupt = true;
                    break;
                }
            };
            if avail == 0 {
                break;
            }
            let Some(buf) = self.scratch.get_mut(..avail.min(SCRATCH_BYTES)) else { break };
            let n = match conn.tx.peek(buf) {
                Ok(n) => n,
                Err(_) => {
                    corrupt = true;
                    break;
                }
            };
            match stack.send(conn.handle, buf.get(..n).unwrap_or(&[])) {
                Ok(0) => break, // the stack's buffer is full: wait for Event::Writable
                Ok(k) => {
                    let _ = conn.tx.consume(k);
                    freed += k as u64;
                    if k < n {
                        break;
                    }
                }
                Err(_) => {
                    // The connection cannot send any more (reset, shut down); what the app
                    // wrote after that is dropped, as the kernel does. The state bits tell
                    // the app why.
                    let _ = conn.tx.consume(avail);
                    freed += avail as u64;
                    break;
                }
            }
        }
        if conn.shut_wr_pending && !conn.shut_wr_done && conn.tx.readable().is_ok_and(|n| n == 0) {
            conn.shut_wr_done = true;
            let _ = stack.shutdown_write(conn.handle);
        }
        if freed > 0 {
            self.totals.tx_bytes += freed;
            self.link.touch_socket(slot);
            self.dirty = true;
        }
        if corrupt {
            self.fail_conn(stack, slot, Errno::EFAULT);
        }
    }

    /// The app broke one connection's rings: reset that connection only.
    fn fail_conn(&mut self, stack: &mut Stack, slot: u32, errno: Errno) {
        if let Some(conn) = self.conns.get_mut(&slot) {
            if !conn.closed {
                let _ = stack.abort(conn.handle);
                // The handle is gone from the stack; the slot stays bound (as an error)
                // until the app closes it.
                conn.closed = true;
            }
            self.link.set_error(slot, errno);
            self.link.raise(slot, Readiness::ERR | Readiness::HUP | Readiness::RDHUP);
            self.link.touch_socket(slot);
            self.dirty = true;
        }
    }

    /// Feeds a stack event about one of this app's connections.
    pub fn on_socket_event(
        &mut self,
        stack: &mut Stack,
        registry: &mut ListenerRegistry,
        event: Event,
    ) {
        if self.broken.is_some() {
            return;
        }
        match event {
            Event::Connected(h) => {
                if let Some(slot) = self.slot_of(h) {
                    if let Some(c) = self.conns.get_mut(&slot) {
                        c.connected = true;
                    }
                    self.link.raise(slot, Readiness::CONNECTED);
                    self.link.touch_socket(slot);
                    self.dirty = true;
                    self.pump_tx(stack, slot);
                }
            }
            Event::Readable(h) | Event::ReadClosed(h) => {
                if let Some(slot) = self.slot_of(h) {
                    self.pump_rx(stack, slot);
                }
            }
            Event::Writable(h) => {
                if self.lingering.contains_key(&h) {
                    self.feed_lingering(stack, registry, h);
                } else if let Some(slot) = self.slot_of(h) {
                    self.pump_tx(stack, slot);
                }
            }
            Event::Closed(h, reason) => {
                if self.lingering.remove(&h).is_some() {
                    registry.unbind_connection(h);
                    let _ = stack.close(h);
                } else if let Some(slot) = self.slot_of(h) {
                    self.on_closed(stack, slot, reason);
                }
            }
            _ => {}
        }
        self.flush_wake();
    }

    fn on_closed(&mut self, stack: &mut Stack, slot: u32, reason: CloseReason) {
        // CLOSE-WAIT (RFC 793 3.2): the peer's FIN came and ours has not been asked for.
        // Linux (tcp_reset) reports a reset in that state as EPIPE, not ECONNRESET: the
        // peer had finished, and it was our write that it refused.
        let close_wait =
            self.conns.get(&slot).is_some_and(|c| c.eof && !c.shut_wr_pending && !c.shut_wr_done);
        // Deliver what arrived before the end first (an orderly close has a FIN in it).
        self.pump_rx(stack, slot);
        let Some(conn) = self.conns.get_mut(&slot) else { return };
        conn.closed = true;
        let errno = match reason {
            CloseReason::Normal => None,
            CloseReason::Reset if !conn.connected => Some(Errno::ECONNREFUSED),
            CloseReason::Reset if close_wait => Some(Errno::EPIPE),
            CloseReason::Reset => Some(Errno::ECONNRESET),
            CloseReason::TimedOut => Some(Errno::ETIMEDOUT),
            _ => Some(Errno::ECONNABORTED),
        };
        match errno {
            Some(e) => {
                self.link.set_error(slot, e);
                self.link.raise(slot, Readiness::ERR | Readiness::HUP | Readiness::RDHUP);
            }
            None => self.link.raise(slot, Readiness::HUP),
        }
        self.link.touch_socket(slot);
        self.dirty = true;
    }

    fn feed_lingering(
        &mut self,
        stack: &mut Stack,
        registry: &mut ListenerRegistry,
        h: SocketHandle,
    ) {
        let Some(rest) = self.lingering.get_mut(&h) else { return };
        loop {
            let (front, _) = rest.as_slices();
            if front.is_empty() {
                break;
            }
            match stack.send(h, front) {
                Ok(0) => return,
                Ok(k) => {
                    rest.drain(..k.min(rest.len()));
                }
                Err(_) => {
                    rest.clear();
                    break;
                }
            }
        }
        self.lingering.remove(&h);
        registry.unbind_connection(h);
        let _ = stack.close(h);
    }

    fn slot_of(&self, h: SocketHandle) -> Option<u32> {
        self.slots.get(&h).copied()
    }

    /// Bumps the app's change counter and writes its eventfd if it sleeps.
    fn flush_wake(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.link.touch_app();
        if self.link.wake_if_sleeping() {
            self.totals.wakes += 1;
        }
    }

    fn break_app(&mut self, stack: &mut Stack, registry: &mut ListenerRegistry, why: &'static str) {
        if self.broken.is_none() {
            self.broken = Some(why);
            self.totals.broken += 1;
            self.reclaim(stack, registry);
        }
    }

    /// Resets every connection of the app on this instance and drops its listener
    /// subscriptions (the app died, was detached, or broke its rings).
    pub fn reclaim(&mut self, stack: &mut Stack, registry: &mut ListenerRegistry) {
        self.slots.clear();
        for (_, conn) in std::mem::take(&mut self.conns) {
            registry.unbind_connection(conn.handle);
            let _ = stack.abort(conn.handle);
        }
        for (h, _) in std::mem::take(&mut self.lingering) {
            registry.unbind_connection(h);
            let _ = stack.abort(h);
        }
        registry.unsubscribe_app(stack, self.app_id());
        self.listener_options.clear();
    }

    /// Tells the app "ring my doorbell when you send a request" and reports whether a
    /// request is already waiting (then the instance must not sleep).
    pub fn prepare_sleep(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let Ok(flag) = self.link.segment().instance_sleeping(self.link.instance()) else {
            return false;
        };
        flag.store(1, Ordering::Relaxed);
        // SeqCst fence: the flag store is ordered before the ring check below; the app
        // fences between its push and its load of the flag (Dekker pattern).
        fence(Ordering::SeqCst);
        self.requests.len().is_ok_and(|n| n > 0)
    }

    /// The instance woke up: no doorbell is needed while it runs.
    pub fn after_wake(&mut self) {
        if let Ok(flag) = self.link.segment().instance_sleeping(self.link.instance()) {
            flag.store(0, Ordering::Relaxed);
        }
    }
}

fn shm_reason(e: &ShmError, ring: &'static str) -> &'static str {
    match (e, ring) {
        (ShmError::Corrupt(_), "request ring") => "request ring indices corrupt",
        (ShmError::Corrupt(_), _) => "completion ring indices corrupt",
        (_, "request ring") => "request ring unusable",
        _ => "completion ring unusable",
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Everything the app channel needs in one kernel instance: the attached apps, the
/// listeners and the routing of stack events to apps.
#[derive(Debug)]
pub struct ChannelHub {
    instance: u16,
    apps: BTreeMap<AppId, AppServer>,
    registry: ListenerRegistry,
}

impl ChannelHub {
    /// An empty hub for instance `instance`.
    pub fn new(instance: u16) -> ChannelHub {
        ChannelHub { instance, apps: BTreeMap::new(), registry: ListenerRegistry::new(instance) }
    }

    /// The instance index.
    pub fn instance(&self) -> u16 {
        self.instance
    }

    /// Starts serving an app (ControlMessage::AppAttached). `family` decides which apps
    /// may share a listening port (a forked child gets its parent's). Attaching an id twice
    /// is refused.
    pub fn attach(
        &mut self,
        app_id: AppId,
        family: u32,
        segment: AppSegment,
        wake: EventFd,
    ) -> Result<(), ChannelError> {
        if self.apps.contains_key(&app_id) {
            return Err(ChannelError::BadHeader("app already attached"));
        }
        let server = AppServer::new(app_id, family, self.instance, segment, wake)?;
        self.apps.insert(app_id, server);
        Ok(())
    }

    /// Stops serving an app (it died: ControlMessage::AppDetached) and resets the
    /// connections it still held. False if it was not attached.
    ///
    /// What the app asked for before it died is carried out first: a process that writes
    /// its last response, closes the connection and exits (an Apache child at a graceful
    /// restart) has its response sent and its connection closed in order, as the kernel
    /// would, even when the plane reports its death before this instance read its last
    /// requests. Its requests can still open nothing new: no source port is chosen for a
    /// dead app's `connect`.
    pub fn detach(&mut self, stack: &mut Stack, now: Instant, app_id: AppId) -> bool {
        let Some(mut server) = self.apps.remove(&app_id) else { return false };
        // Bounded: a ring holds at most its capacity of requests, and the app is gone.
        for _ in 0..DETACH_SERVE_ROUNDS {
            let served =
                server
                    .serve(stack, now, &mut self.registry, &mut |_, _| None, &mut |_, _, _| false);
            if served.requests == 0 {
                break;
            }
        }
        server.reclaim(stack, &mut self.registry);
        true
    }

    /// Serves every attached app once. A connection from a source port the app bound is
    /// made here whatever its reply hash; see [`ChannelHub::serve_checked`].
    pub fn serve(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        ports: SourcePortChooser<'_>,
    ) -> ServeStats {
        self.serve_checked(stack, now, ports, &mut |_, _, _| true)
    }

    /// Serves every attached app once; a connection from a source port the app bound is
    /// made only if `owns_reply` says its replies reach this instance (else the client
    /// asks another instance).
    pub fn serve_checked(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        ports: SourcePortChooser<'_>,
        owns_reply: ReplyOwnerCheck<'_>,
    ) -> ServeStats {
        let mut total = ServeStats::default();
        for server in self.apps.values_mut() {
            let s = server.serve(stack, now, &mut self.registry, &mut *ports, &mut *owns_reply);
            total.add(&s);
        }
        total
    }

    /// Routes a stack event to the app it concerns.
    pub fn on_stack_event(&mut self, stack: &mut Stack, event: Event) {
        let handle = match event {
            Event::Acceptable(l) => {
                self.registry.on_acceptable(stack, l);
                return;
            }
            Event::Connected(h)
            | Event::Readable(h)
            | Event::Writable(h)
            | Event::ReadClosed(h)
            | Event::Closed(h, _) => h,
            _ => return,
        };
        let Some(app) = self.registry.connection_owner(handle) else { return };
        if let Some(server) = self.apps.get_mut(&app) {
            server.on_socket_event(stack, &mut self.registry, event);
        }
    }

    /// Before the instance blocks: asks every app to ring the doorbell on its next request.
    /// True if a request is already waiting (do not block).
    pub fn prepare_sleep(&mut self) -> bool {
        let mut pending = false;
        for server in self.apps.values_mut() {
            pending |= server.prepare_sleep();
        }
        pending
    }

    /// After the instance woke up.
    pub fn after_wake(&mut self) {
        for server in self.apps.values_mut() {
            server.after_wake();
        }
    }

    /// See [`ListenerRegistry::rewake_waiting`].
    pub fn rewake_waiting(&mut self, stack: &Stack) -> usize {
        self.registry.rewake_waiting(stack)
    }

    /// The app binding of connection `h`, if the connection can migrate with it (see
    /// [`SocketBinding`]).
    pub fn socket_binding(&self, h: SocketHandle) -> Option<SocketBinding> {
        let app = self.registry.connection_owner(h)?;
        self.apps.get(&app)?.binding_of(h)
    }

    /// Releases connection `h`, whose TCB is being exported to instance `to`: this instance
    /// forgets it, and requests the app still sends here for its slot are handed to `to`
    /// (collect them with [`ChannelHub::take_forwarded_requests`]). `None` if the
    /// connection cannot migrate.
    pub fn export_binding(&mut self, h: SocketHandle, to: u16) -> Option<SocketBinding> {
        let app = self.registry.connection_owner(h)?;
        self.apps.get_mut(&app)?.release_binding(&mut self.registry, h, to)
    }

    /// Binds an imported connection `h` to the app slot it had on its old instance. On
    /// error (the app is not attached here, or the slot is busy) the caller must abort the
    /// connection.
    pub fn import_binding(
        &mut self,
        stack: &mut Stack,
        binding: SocketBinding,
        h: SocketHandle,
    ) -> Result<(), Errno> {
        let server = self.apps.get_mut(&binding.app_id).ok_or(Errno(libc::ENOENT))?;
        server.adopt(stack, &mut self.registry, binding, h)
    }

    /// Requests taken from apps' rings for slots whose connection migrated away:
    /// `(app, instance now serving the slot, request)`.
    pub fn take_forwarded_requests(&mut self) -> Vec<(AppId, u16, RequestSlot)> {
        let mut out = Vec::new();
        for (&app, server) in &mut self.apps {
            out.extend(server.forward_out.drain(..).map(|(to, slot)| (app, to, slot)));
        }
        out
    }

    /// Executes a request another instance took from `app_id`'s ring on our behalf (its
    /// completion, if any, goes to our completion ring; the app matches completions by
    /// tag). False if the app is not attached here. A slot that moved on again is handed
    /// on once more.
    pub fn serve_forwarded(
        &mut self,
        stack: &mut Stack,
        now: Instant,
        app_id: AppId,
        slot: RequestSlot,
        ports: SourcePortChooser<'_>,
    ) -> bool {
        let Some(server) = self.apps.get_mut(&app_id) else { return false };
        if server.broken.is_some() {
            return true;
        }
        server.totals.requests += 1;
        if let Some(to) = server.moved_target(&slot) {
            server.forward_out.push((to, slot));
            return true;
        }
        // Requests that open connections are never handed on (see `moved_target`), so
        // no source-port rule applies.
        let mut any_port = |_: &Stack, _: u16, _: SocketAddrV4| true;
        server.handle_slot(&slot, stack, now, &mut self.registry, ports, &mut any_port);
        server.flush_wake();
        true
    }

    /// The listener registry.
    pub fn registry(&self) -> &ListenerRegistry {
        &self.registry
    }

    /// One attached app.
    pub fn app(&self, app_id: AppId) -> Option<&AppServer> {
        self.apps.get(&app_id)
    }

    /// Ids of the attached apps.
    pub fn app_ids(&self) -> impl Iterator<Item = AppId> + '_ {
        self.apps.keys().copied()
    }
}
