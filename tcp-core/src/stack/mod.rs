//! The per-instance stack: frames in and out, ARP, IPv4 demultiplexing, the connection
//! table and listeners.
//!
//! Implements the host requirements of RFC 1122 that apply to an end host with one
//! interface and no forwarding: ARP (RFC 826; RFC 1122 §2.3.2), IPv4 input validation and
//! reassembly (RFC 791 §3.2; RFC 1122 §3.2.1), ICMP echo and errors (RFC 792; RFC 1122
//! §3.2.2, error rate limiting §4.3.2.8 of RFC 1812), UDP port unreachable (RFC 1122
//! §4.1.3.1), TCP demultiplexing and resets for closed ports (RFC 9293 §3.10.7.1), the
//! listener's SYN and accept queues with SYN cookies on SYN-queue overflow (RFC 4987 §3.6),
//! RFC 6528 ISNs and path MTU from ICMP (RFC 1191 §4, validated as RFC 5927 §4.1 suggests).

mod config;
mod error;
mod event;
mod flow_table;
mod handle;
mod input;
mod output;
mod socket;
mod timer_queue;

pub mod arp_cache;
pub mod counters;
pub mod isn;
pub mod reassembly;
pub(crate) mod siphash;
pub mod syn_cookie;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

pub use config::StackConfig;
pub use counters::StackCounters;
pub use error::{AcceptError, ConnectError, ImportError, ListenError, SocketError};
pub use event::Event;
pub use handle::{ListenerHandle, SocketHandle};

use self::arp_cache::ArpCache;
use self::flow_table::FlowTable;
use self::handle::Slab;
use self::isn::{IsnGenerator, TsOffsetCache};
use self::reassembly::Reassembler;
use self::socket::{Listener, Socket};
use self::syn_cookie::SynCookies;
use self::timer_queue::TimerQueue;
use crate::tcp::{
    Connection, ConnectionEvent, ConnectionParams, ConnectionState, ConnectionStats, FourTuple,
    Keepalive, State,
};
use crate::time::{Instant, earliest};

/// Byte-queue rings of freed connections are kept for new ones while their capacities add
/// up to at most this many bytes (each ring holds at most
/// [`RETAIN_WHEN_EMPTY`](crate::tcp::buffer::RETAIN_WHEN_EMPTY)): short connections then
/// allocate nothing for their send and receive queues, even when a thousand of them close
/// at once.
const SPARE_QUEUE_BYTES: usize = 512 * 1024;

/// One TCP/IPv4 stack instance bound to one interface (one NIC queue pair in netpop).
///
/// # Call protocol
///
/// The stack is sans-IO: it never blocks, reads no clock and performs no I/O. The embedder
/// drives it in a loop:
///
/// 1. Feed input: [`handle_frame`](Stack::handle_frame) for every received Ethernet frame
///    and [`handle_timeout`](Stack::handle_timeout) whenever the instant returned by
///    [`poll_timeout`](Stack::poll_timeout) has passed.
/// 2. Act for the application: [`listen`](Stack::listen), [`accept`](Stack::accept),
///    [`connect`](Stack::connect), [`send`](Stack::send), [`recv`](Stack::recv),
///    [`shutdown_write`](Stack::shutdown_write), [`close`](Stack::close),
///    [`abort`](Stack::abort) and the option setters.
/// 3. Drain output: call [`poll_transmit`](Stack::poll_transmit) until it returns `None`
///    and put every frame on the wire; drain [`poll_event`](Stack::poll_event) and react.
/// 4. Sleep until the next frame arrives or [`poll_timeout`](Stack::poll_timeout) is due.
///
/// Every call that takes `now` must get a value that does not go backwards; an earlier
/// value is treated as the latest one seen. Nothing the wire sends can make the stack
/// panic: malformed or unwanted input is dropped and counted in
/// [`counters`](Stack::counters).
///
/// # Memory
///
/// The stack allocates per connection a [`Connection`] (whose buffers are sized by
/// [`TcpConfig::send_buffer`](crate::tcp::TcpConfig) and
/// [`TcpConfig::recv_buffer`](crate::tcp::TcpConfig)) plus a few dozen bytes of
/// bookkeeping; see [`Connection`] for the per-connection figure.
#[derive(Debug)]
pub struct Stack {
    config: StackConfig,
    sockets: Slab<Socket>,
    listeners: Slab<Listener>,
    by_tuple: FlowTable,
    by_port: BTreeMap<u16, u32>,
    /// The deadlines of sockets with a pending timer.
    timers: TimerQueue,
    /// Sockets whose timers fired, kept between `handle_timeout` calls for its storage.
    due: Vec<u32>,
    /// Sockets that may have something to transmit, served round-robin.
    tx_queue: VecDeque<u32>,
    /// Queue storage of freed connections, for new ones (see [`SPARE_QUEUE_BYTES`]).
    spare_queues: Vec<VecDeque<u8>>,
    /// The capacities of `spare_queues`, summed.
    spare_queue_bytes: usize,
    /// Complete frames the stack originated itself (ARP, ICMP, resets, cookie SYN-ACKs).
    control_tx: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    arp: ArpCache,
    reassembler: Reassembler,
    isn: IsnGenerator,
    ts_offsets: TsOffsetCache,
    cookies: SynCookies,
    /// When a SYN queue last overflowed; cookie ACKs are only checked shortly after.
    last_syn_overflow: Option<Instant>,
    counters: StackCounters,
    ip_ident: u16,
    next_ephemeral: u16,
    icmp_tokens: u32,
    icmp_refilled: Instant,
    now: Instant,
}

impl Stack {
    /// A stack for the interface described by `config`.
    pub fn new(config: StackConfig) -> Stack {
        let (lo, hi) = config.ephemeral_ports;
        let ephemeral_ports = (lo.max(1), hi.max(lo.max(1)));
        let secret = config.secret;
        // The MSS we announce must fit the link: MTU less the IPv4 and TCP headers.
        let mut config = config;
        let mtu_mss = config.mtu.saturating_sub(40).clamp(536, usize::from(u16::MAX)) as u16;
        config.tcp.mss = config.tcp.mss.min(mtu_mss);
        Stack {
            arp: ArpCache::new(
                config.arp_cache_capacity,
                config.arp_entry_lifetime,
                config.arp_request_interval,
            ),
            reassembler: Reassembler::new(
                config.reassembly_max_datagrams,
                config.reassembly_max_bytes,
                config.reassembly_timeout,
            ),
            isn: IsnGenerator::new(secret),
            ts_offsets: TsOffsetCache::default(),
            cookies: SynCookies::new(secret),
            icmp_tokens: config.icmp_error_rate,
            config: StackConfig { ephemeral_ports, ..config },
            sockets: Slab::new(),
            listeners: Slab::new(),
            by_tuple: FlowTable::new(&secret),
            by_port: BTreeMap::new(),
            timers: TimerQueue::default(),
            due: Vec::new(),
            tx_queue: VecDeque::new(),
            spare_queues: Vec::new(),
            spare_queue_bytes: 0,
            control_tx: VecDeque::new(),
            events: VecDeque::new(),
            last_syn_overflow: None,
            counters: StackCounters::default(),
            ip_ident: 0,
            next_ephemeral: ephemeral_ports.0,
            icmp_refilled: Instant::ZERO,
            now: Instant::ZERO,
        }
    }

    /// The configuration the stack runs with.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// Drop and event counters.
    pub fn counters(&self) -> &StackCounters {
        &self.counters
    }

    /// Number of live sockets (connections in any state, including TIME-WAIT and those not
    /// yet accepted).
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// Handles of every live connection, with its state.
    pub fn connections(&self) -> impl Iterator<Item = (SocketHandle, State)> + '_ {
        self.sockets.iter().filter_map(|(index, s)| {
            let generation = self.sockets.generation(index)?;
            Some((SocketHandle { index, generation }, s.conn.state()))
        })
    }

    /// Adds an ARP entry by hand (a static neighbour, or one learned by other means).
    pub fn add_neighbor(&mut self, now: Instant, ip: Ipv4Addr, mac: crate::wire::EthernetAddress) {
        let now = self.clock(now);
        self.arp.fill(ip, mac, now);
        self.flush_pending(ip, mac);
    }

    /// The next instant at which [`handle_timeout`](Stack::handle_timeout) must be called,
    /// if any timer is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ip = earliest(self.arp.poll_timeout(), self.reassembler.poll_timeout());
        earliest(self.timers.next(), ip)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        let mut due = core::mem::take(&mut self.due);
        while let Some((t, index)) = self.timers.pop_due(now) {
            // Entries left behind by a deadline that moved are skipped (see `timer_queue`).
            if let Some(s) = self.sockets.by_index_mut(index).filter(|s| s.deadline == Some(t)) {
                s.deadline = None;
                self.timers.fired();
                due.push(index);
            }
        }
        for &index in &due {
            if let Some(s) = self.sockets.by_index_mut(index) {
                s.conn.handle_timeout(now);
                self.after_activity(index);
            }
        }
        due.clear();
        self.due = due;
        self.prune_timers();
        // Most timeouts are TCP's: the ARP cache and the reassembler only do work when
        // their own deadline has come.
        if self.arp.poll_timeout().is_some_and(|t| t <= now) {
            self.counters.arp_pending_dropped += self.arp.expire(now) as u64;
        }
        if self.reassembler.poll_timeout().is_some_and(|t| t <= now) {
            self.counters.ipv4_fragment_timeouts += self.reassembler.expire(now) as u64;
        }
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------------------------
    // Listeners

    /// Opens a listener on `local` (the unspecified address or this stack's address) with
    /// room for `backlog` connections in each of its SYN and accept queues.
    pub fn listen(
        &mut self,
        local: SocketAddrV4,
        backlog: usize,
    ) -> Result<ListenerHandle, ListenError> {
        if local.port() == 0 || backlog == 0 {
            return Err(ListenError::InvalidArgument);
        }
        if !local.ip().is_unspecified() && *local.ip() != self.config.ipv4_addr {
            return Err(ListenError::AddrNotAvailable);
        }
        if self.by_port.contains_key(&local.port()) {
            return Err(ListenError::AddrInUse);
        }
        let (index, generation) = self.listeners.insert(Listener {
            local,
            backlog,
            syn_queue: 0,
            accept_queue: VecDeque::new(),
        });
        self.by_port.insert(local.port(), index);
        Ok(ListenerHandle { index, generation })
    }

    /// Takes the oldest established connection from the listener's accept queue.
    pub fn accept(
        &mut self,
        listener: ListenerHandle,
    ) -> Result<(SocketHandle, SocketAddrV4), AcceptError> {
        let l = self
            .listeners
            .get_mut(listener.index, listener.generation)
            .ok_or(AcceptError::InvalidHandle)?;
        while let Some(handle) = l.accept_queue.pop_front() {
            if let Some(s) = self.sockets.get_mut(handle.index, handle.generation) {
                if s.app_closed {
                    continue;
                }
                s.parent = None;
                s.in_accept_queue = false;
                let remote = s.conn.tuple().remote;
                // Data or a FIN that arrived before accept: tell the application now.
                if s.conn.can_recv() {
                    self.events.push_back(Event::Readable(handle));
                }
                return Ok((handle, remote));
            }
        }
        Err(AcceptError::WouldBlock)
    }

    /// Number of connections waiting in the listener's accept queue.
    pub fn accept_queue_len(&self, listener: ListenerHandle) -> Option<usize> {
        self.listeners.get(listener.index, listener.generation).map(|l| l.accept_queue.len())
    }

    /// Closes a listener. Connections it created that the application has not accepted yet
    /// are reset, as Linux does.
    pub fn close_listener(&mut self, listener: ListenerHandle) -> bool {
        if self.listeners.get(listener.index, listener.generation).is_none() {
            return false;
        }
        let Some(l) = self.listeners.remove(listener.index) else { return false };
        if self.by_port.get(&l.local.port()) == Some(&listener.index) {
            self.by_port.remove(&l.local.port());
        }
        let children: Vec<u32> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.parent == Some(listener.index))
            .map(|(i, _)| i)
            .collect();
        for index in children {
            if let Some(s) = self.sockets.by_index_mut(index) {
                s.parent = None;
                s.in_accept_queue = false;
                s.app_closed = true;
                s.conn.abort();
                self.after_activity(index);
            }
        }
        true
    }

    // ---------------------------------------------------------------------------------
    // Connections

    /// Starts an active open to `remote`. Without `local_port` an ephemeral port is chosen;
    /// netpop's kernel instances pass a port whose reply hashes to their own flow groups.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddrV4,
        local_port: Option<u16>,
    ) -> Result<SocketHandle, ConnectError> {
        let now = self.clock(now);
        let rip = *remote.ip();
        if remote.port() == 0
            || rip.is_unspecified()
            || rip.is_broadcast()
            || rip.is_multicast()
            || rip == self.config.broadcast()
            || rip == self.config.ipv4_addr
            || local_port == Some(0)
        {
            return Err(ConnectError::InvalidAddress);
        }
        let next_hop = self.next_hop(rip).ok_or(ConnectError::Unreachable)?;
        if self.sockets.len() >= self.config.max_sockets {
            return Err(ConnectError::TooManySockets);
        }
        let port = match local_port {
            Some(p) => {
                if !self.tuple_free(p, remote) {
                    return Err(ConnectError::AddrInUse);
                }
                p
            }
            None => self.ephemeral_port(remote).ok_or(ConnectError::NoEphemeralPort)?,
        };
        let local = SocketAddrV4::new(self.config.ipv4_addr, port);
        let tuple = FourTuple { local, remote };
        let params = ConnectionParams {
            tuple,
            iss: self.isn.isn(local, remote, now),
            ts_offset: self.ts_offset(*local.ip(), rip),
        };
        let conn = Connection::connect(&self.config.tcp, params, now);
        Ok(self.insert_socket(conn, None, next_hop))
    }

    /// True if no connection uses `local_port` towards `remote` (so `connect` with that
    /// port would succeed).
    pub fn tuple_free(&self, local_port: u16, remote: SocketAddrV4) -> bool {
        let local = SocketAddrV4::new(self.config.ipv4_addr, local_port);
        !self.by_tuple.contains(&FourTuple { local, remote })
    }

    /// Queues data for sending; returns how many bytes were taken (0 when the send buffer
    /// is full).
    pub fn send(&mut self, handle: SocketHandle, data: &[u8]) -> Result<usize, SocketError> {
        let r = self.socket_mut(handle)?.conn.send(data).map_err(SocketError::Send);
        self.after_activity(handle.index);
        r
    }

    /// Reads received data; `Ok(0)` means the peer closed its side and everything was read.
    pub fn recv(&mut self, handle: SocketHandle, buf: &mut [u8]) -> Result<usize, SocketError> {
        let r = self.socket_mut(handle)?.conn.recv(buf).map_err(SocketError::Recv);
        // Reading opens the receive window: the connection may owe a window update.
        self.after_activity(handle.index);
        r
    }

    /// Copies received data without consuming it.
    pub fn peek(&self, handle: SocketHandle, buf: &mut [u8]) -> Result<usize, SocketError> {
        self.socket(handle)?.conn.peek(buf).map_err(SocketError::Recv)
    }

    /// Closes the sending half (sends FIN after queued data).
    pub fn shutdown_write(&mut self, handle: SocketHandle) -> Result<(), SocketError> {
        self.socket_mut(handle)?.conn.shutdown_write();
        self.after_activity(handle.index);
        Ok(())
    }

    /// Releases the handle and closes the connection: an orderly FIN after queued data, or
    /// a reset if received data was left unread (as Linux does). The stack frees the
    /// connection once it is fully closed; the handle is invalid from now on.
    pub fn close(&mut self, handle: SocketHandle) -> Result<(), SocketError> {
        let s = self.socket_mut(handle)?;
        s.app_closed = true;
        s.conn.close();
        self.after_activity(handle.index);
        Ok(())
    }

    /// Releases the handle and resets the connection.
    pub fn abort(&mut self, handle: SocketHandle) -> Result<(), SocketError> {
        let s = self.socket_mut(handle)?;
        s.app_closed = true;
        s.conn.abort();
        self.after_activity(handle.index);
        Ok(())
    }

    /// Disables (`true`) or enables Nagle's algorithm (TCP_NODELAY).
    pub fn set_nodelay(&mut self, handle: SocketHandle, on: bool) -> Result<(), SocketError> {
        self.socket_mut(handle)?.conn.set_nodelay(on);
        self.after_activity(handle.index);
        Ok(())
    }

    /// Holds back partial segments while set (TCP_CORK); unsetting flushes them.
    pub fn set_cork(&mut self, handle: SocketHandle, on: bool) -> Result<(), SocketError> {
        self.socket_mut(handle)?.conn.set_cork(on);
        self.after_activity(handle.index);
        Ok(())
    }

    /// Enables keepalive probes with the given timing, or disables them.
    pub fn set_keepalive(
        &mut self,
        handle: SocketHandle,
        keepalive: Option<Keepalive>,
    ) -> Result<(), SocketError> {
        self.socket_mut(handle)?.conn.set_keepalive(keepalive);
        self.after_activity(handle.index);
        Ok(())
    }

    /// The connection's TCP state.
    pub fn state(&self, handle: SocketHandle) -> Result<State, SocketError> {
        Ok(self.socket(handle)?.conn.state())
    }

    /// Local and remote address of the connection.
    pub fn tuple(&self, handle: SocketHandle) -> Result<FourTuple, SocketError> {
        Ok(self.socket(handle)?.conn.tuple())
    }

    /// True if `recv` would return data or end of stream.
    pub fn can_recv(&self, handle: SocketHandle) -> bool {
        self.socket(handle).is_ok_and(|s| s.conn.can_recv())
    }

    /// True if `send` would accept at least one byte.
    pub fn can_send(&self, handle: SocketHandle) -> bool {
        self.socket(handle).is_ok_and(|s| s.conn.can_send())
    }

    /// Bytes waiting to be read.
    pub fn recv_queue_len(&self, handle: SocketHandle) -> Result<usize, SocketError> {
        Ok(self.socket(handle)?.conn.recv_queue_len())
    }

    /// Bytes queued for sending and not yet acknowledged.
    pub fn send_queue_len(&self, handle: SocketHandle) -> Result<usize, SocketError> {
        Ok(self.socket(handle)?.conn.send_queue_len())
    }

    /// Per-connection statistics (RTT, congestion window, retransmissions).
    pub fn connection_stats(&self, handle: SocketHandle) -> Result<ConnectionStats, SocketError> {
        Ok(self.socket(handle)?.conn.stats())
    }

    // ---------------------------------------------------------------------------------
    // Migration

    /// Removes a connection from this stack and returns its complete state, for import into
    /// another stack (flow-group migration). Nothing is sent to the peer.
    pub fn export_connection(
        &mut self,
        handle: SocketHandle,
    ) -> Result<ConnectionState, SocketError> {
        let state = self.socket(handle)?.conn.export();
        self.free_socket(handle.index);
        Ok(state)
    }

    /// Adopts a connection exported by another stack with the same address and secret.
    pub fn import_connection(
        &mut self,
        state: ConnectionState,
    ) -> Result<SocketHandle, ImportError> {
        let conn = Connection::import(state);
        let tuple = conn.tuple();
        if *tuple.local.ip() != self.config.ipv4_addr {
            return Err(ImportError::WrongAddress);
        }
        if self.by_tuple.contains(&tuple) {
            return Err(ImportError::Duplicate);
        }
        if self.sockets.len() >= self.config.max_sockets {
            return Err(ImportError::TooManySockets);
        }
        let next_hop = self.next_hop(*tuple.remote.ip()).unwrap_or(*tuple.remote.ip());
        Ok(self.insert_socket(conn, None, next_hop))
    }

    // ---------------------------------------------------------------------------------
    // Internals shared by input and output

    /// Clamps `now` so time never goes backwards inside the stack.
    fn clock(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    fn socket(&self, handle: SocketHandle) -> Result<&Socket, SocketError> {
        self.sockets
            .get(handle.index, handle.generation)
            .filter(|s| !s.app_closed && s.parent.is_none())
            .ok_or(SocketError::InvalidHandle)
    }

    fn socket_mut(&mut self, handle: SocketHandle) -> Result<&mut Socket, SocketError> {
        self.sockets
            .get_mut(handle.index, handle.generation)
            .filter(|s| !s.app_closed && s.parent.is_none())
            .ok_or(SocketError::InvalidHandle)
    }

    /// The RFC 7323 timestamp offset for a host pair (cached: it depends on the addresses
    /// only).
    fn ts_offset(&mut self, local: Ipv4Addr, remote: Ipv4Addr) -> u32 {
        self.ts_offsets.get(&self.isn, local, remote)
    }

    /// The Ethernet-level next hop for `dst`, or `None` when it is unreachable.
    fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.config.on_link(dst) { Some(dst) } else { self.config.gateway }
    }

    fn ephemeral_port(&mut self, remote: SocketAddrV4) -> Option<u16> {
        let (lo, hi) = self.config.ephemeral_ports;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let port = self.next_ephemeral;
            self.next_ephemeral = if port >= hi { lo } else { port + 1 };
            if self.tuple_free(port, remote) && !self.by_port.contains_key(&port) {
                return Some(port);
            }
        }
        None
    }

    fn insert_socket(
        &mut self,
        conn: Connection,
        parent: Option<u32>,
        next_hop: Ipv4Addr,
    ) -> SocketHandle {
        let mut conn = conn;
        while let Some(storage) = self.spare_queues.pop() {
            let capacity = storage.capacity();
            match conn.adopt_storage(storage) {
                Some(unused) => {
                    self.spare_queues.push(unused);
                    break;
                }
                None => self.spare_queue_bytes -= capacity,
            }
        }
        let tuple = conn.tuple();
        let (index, generation) = self.sockets.insert(Socket {
            conn,
            parent,
            in_accept_queue: false,
            app_closed: false,
            deadline: None,
            tx_queued: false,
            next_hop,
        });
        self.by_tuple.insert(&tuple, index);
        self.after_activity(index);
        SocketHandle { index, generation }
    }

    /// Forgets a socket entirely (no packet is sent).
    fn free_socket(&mut self, index: u32) {
        let Some(generation) = self.sockets.generation(index) else { return };
        let Some(s) = self.sockets.by_index_mut(index) else { return };
        let (tuple, deadline, parent, in_accept_queue) =
            (s.conn.tuple(), s.deadline, s.parent, s.in_accept_queue);
        let storage = s.conn.release_storage();
        self.keep_spare_queues(storage);
        self.sockets.delete(index);
        self.by_tuple.remove_if(&tuple, index);
        if deadline.is_some() {
            self.timers.reschedule(index, deadline, None);
            self.prune_timers();
        }
        if let Some(parent) = parent {
            if let Some(l) = self.listeners.by_index_mut(parent) {
                if in_accept_queue {
                    l.accept_queue.retain(|h| *h != SocketHandle { index, generation });
                } else {
                    l.syn_queue = l.syn_queue.saturating_sub(1);
                }
            }
        }
    }

    /// After anything happened to a socket: turn its events into stack events, reschedule
    /// its timer, queue it for transmission, and free it if it is finished.
    fn after_activity(&mut self, index: u32) {
        self.settle(index, true);
    }

    /// `after_activity`, with control over whether the socket joins the transmit queue.
    ///
    /// Most calls change nothing but the transmit queue (a poll that found nothing to send,
    /// a read that owed no window update); they return after a few comparisons.
    #[inline]
    fn settle(&mut self, index: u32, queue_for_tx: bool) {
        let Some(s) = self.sockets.by_index_mut(index) else { return };
        if queue_for_tx && !s.tx_queued {
            s.tx_queued = true;
            self.tx_queue.push_back(index);
        }
        let state = s.conn.state();
        let quiet = !s.conn.has_event()
            && s.conn.poll_timeout() == s.deadline
            && state != State::Closed
            && (state != State::TimeWait || !s.conn.holds_storage());
        if !quiet {
            self.settle_changes(index);
        }
    }

    /// The part of [`settle`](Stack::settle) for a socket whose events, deadline or state
    /// may need attention.
    #[inline(never)]
    fn settle_changes(&mut self, index: u32) {
        let Some(generation) = self.sockets.generation(index) else { return };
        let handle = SocketHandle { index, generation };
        let mut became_established = false;
        let mut closed = false;
        let Some(s) = self.sockets.by_index_mut(index) else { return };
        while let Some(event) = s.conn.poll_event() {
            match (event, s.parent) {
                (ConnectionEvent::Established, Some(_)) => became_established = true,
                (ConnectionEvent::Established, None) => {
                    self.events.push_back(Event::Connected(handle))
                }
                (ConnectionEvent::Closed(reason), None) => {
                    if !s.app_closed {
                        self.events.push_back(Event::Closed(handle, reason));
                    }
                    closed = true;
                }
                (ConnectionEvent::Closed(_), Some(_)) => closed = true,
                // Not accepted yet: the application learns about data after accept.
                (_, Some(_)) => {}
                (ConnectionEvent::Readable, None) if !s.app_closed => {
                    self.events.push_back(Event::Readable(handle))
                }
                (ConnectionEvent::Writable, None) if !s.app_closed => {
                    self.events.push_back(Event::Writable(handle))
                }
                (ConnectionEvent::ReadClosed, None) if !s.app_closed => {
                    self.events.push_back(Event::ReadClosed(handle))
                }
                _ => {}
            }
        }
        let deadline = s.conn.poll_timeout();
        let rescheduled = deadline != s.deadline;
        if rescheduled {
            self.timers.reschedule(index, s.deadline, deadline);
            s.deadline = deadline;
        }
        let finished = s.conn.is_closed();
        let parent = s.parent;
        let app_closed = s.app_closed;
        if s.conn.state() == State::TimeWait && s.conn.holds_storage() {
            // A connection waiting out TIME-WAIT (often for a minute) holds no rings.
            let storage = s.conn.release_idle_storage();
            self.keep_spare_queues(storage);
        }
        if rescheduled {
            self.prune_timers();
        }

        if became_established {
            if let Some(p) = parent {
                self.promote_to_accept_queue(p, handle);
            }
        }
        if (closed && parent.is_some()) || (finished && (app_closed || parent.is_some())) {
            if closed && parent.is_some() && !finished {
                // The handshake failed or the peer reset before accept: nobody will ever
                // close this socket, so let the connection finish and drop it then.
                if let Some(s) = self.sockets.by_index_mut(index) {
                    s.app_closed = true;
                }
                return;
            }
            self.free_socket(index);
        }
    }

    /// Keeps queue storage for connections yet to come (see [`SPARE_QUEUE_BYTES`]).
    fn keep_spare_queues(&mut self, storage: [VecDeque<u8>; 2]) {
        for ring in storage {
            let capacity = ring.capacity();
            if (1..=crate::tcp::buffer::RETAIN_WHEN_EMPTY).contains(&capacity)
                && self.spare_queue_bytes + capacity <= SPARE_QUEUE_BYTES
            {
                self.spare_queue_bytes += capacity;
                self.spare_queues.push(ring);
            }
        }
    }

    /// Keeps the timer queue's earliest entry live after a deadline changed.
    fn prune_timers(&mut self) {
        let sockets = &self.sockets;
        self.timers.prune(
            |t, index| sockets.by_index(index).is_some_and(|s| s.deadline == Some(t)),
            || sockets.iter().filter_map(|(index, s)| s.deadline.map(|t| (t, index))),
        );
    }

    fn promote_to_accept_queue(&mut self, parent: u32, handle: SocketHandle) {
        let Some(lgen) = self.listeners.generation(parent) else { return };
        let Some(l) = self.listeners.by_index_mut(parent) else { return };
        l.syn_queue = l.syn_queue.saturating_sub(1);
        l.accept_queue.push_back(handle);
        if let Some(s) = self.sockets.by_index_mut(handle.index) {
            s.in_accept_queue = true;
        }
        self.events
            .push_back(Event::Acceptable(ListenerHandle { index: parent, generation: lgen }));
    }
}

#[cfg(test)]
mod tests;
