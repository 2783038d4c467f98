//! The smoltcp side of the comparison: two `Interface`s, each with its own `SocketSet`,
//! joined by a two-queue in-memory Ethernet device, driven from one thread the way smoltcp's
//! own examples drive it (poll the interfaces, then look at the sockets). As with tcp-core,
//! each loop turn lets a stack take its input, its application act, and its output leave
//! (`poll_ingress_single` and `poll_egress`, the two halves of `Interface::poll`).
//!
//! smoltcp is configured as close to tcp-core as it allows: the same buffer sizes (which
//! also turns on window scaling), a 1,500-byte MTU, CUBIC, TCP timestamps, Nagle on.
//! It has no SACK (tcp-core offers it; on a lossless wire it never comes into play).
//!
//! smoltcp has no listen backlog: a listening socket turns into the connection it accepts.
//! A server is emulated the usual way, with as many listening sockets on the port as
//! connections may be in flight, each put back to listening once its connection is over
//! (smoltcp's `listen` allows several sockets on one endpoint for such acceptor loops). A socket re-armed from TIME-WAIT leaves TIME-WAIT at once (smoltcp's
//! `listen` resets it), so unlike tcp-core's and Linux's servers smoltcp keeps no TIME-WAIT
//! state for closed connections.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netpop_benches::tcp::{
    APP_CHUNK, BenchClock, Bound, CLIENT_IP, CLIENT_MAC, CLIENT_PORTS, DriverStats, MTU,
    RECV_BUFFER, REQUEST, RESPONSE, SEND_BUFFER, SERVER_IP, SERVER_MAC, SERVER_PORT,
};
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

/// The TCP timestamp clock: smoltcp asks a plain function for it, so the driver stores the
/// current millisecond here once per loop turn.
static TSVAL_MILLIS: AtomicU32 = AtomicU32::new(0);

fn tsval() -> u32 {
    TSVAL_MILLIS.load(Ordering::Relaxed)
}

/// Both directions of the wire, and frame buffers recycled between them so neither stack
/// pays for an allocation per frame (tcp-core's wire reuses one buffer).
#[derive(Debug, Default)]
struct Wire {
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    spare: RefCell<Vec<Vec<u8>>>,
    frames: Cell<u64>,
}

impl Wire {
    fn client_port(&mut self) -> Port<'_> {
        let Wire { to_server, to_client, spare, frames } = self;
        Port { rx: to_client, tx: to_server, spare, frames }
    }

    fn server_port(&mut self) -> Port<'_> {
        let Wire { to_server, to_client, spare, frames } = self;
        Port { rx: to_server, tx: to_client, spare, frames }
    }

    fn is_empty(&self) -> bool {
        self.to_server.is_empty() && self.to_client.is_empty()
    }
}

/// One end of the wire, as a smoltcp device.
struct Port<'w> {
    rx: &'w mut VecDeque<Vec<u8>>,
    tx: &'w mut VecDeque<Vec<u8>>,
    spare: &'w RefCell<Vec<Vec<u8>>>,
    frames: &'w Cell<u64>,
}

impl Device for Port<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        let rx = RxToken { frame, spare: self.spare };
        let tx = TxToken { queue: self.tx, spare: self.spare, frames: self.frames };
        Some((rx, tx))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken { queue: self.tx, spare: self.spare, frames: self.frames })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp counts the Ethernet header in the MTU of an Ethernet device.
        caps.max_transmission_unit = MTU + 14;
        caps
    }
}

struct RxToken<'w> {
    frame: Vec<u8>,
    spare: &'w RefCell<Vec<Vec<u8>>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.frame);
        self.spare.borrow_mut().push(self.frame);
        result
    }
}

struct TxToken<'w> {
    queue: &'w mut VecDeque<Vec<u8>>,
    spare: &'w RefCell<Vec<Vec<u8>>>,
    frames: &'w Cell<u64>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = self.spare.borrow_mut().pop().unwrap_or_default();
        // smoltcp writes every byte of the frame it asked for, so a recycled buffer is
        // only cut or grown to size, not cleared.
        if frame.len() >= len {
            frame.truncate(len);
        } else {
            frame.resize(len, 0);
        }
        let result = f(&mut frame);
        self.queue.push_back(frame);
        self.frames.set(self.frames.get() + 1);
        result
    }
}

fn instant(t: Duration) -> Instant {
    Instant::from_micros(i64::try_from(t.as_micros()).unwrap_or(i64::MAX))
}

fn interface(mac: [u8; 6], ip: core::net::Ipv4Addr, port: &mut Port<'_>, seed: u64) -> Interface {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = seed;
    let mut iface = Interface::new(config, port, Instant::from_micros(0));
    iface.update_ip_addrs(|addrs| {
        // A fresh interface has room for its one address.
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
    });
    iface
}

/// `Interface::poll` split in two, so the application can act between a stack's input and
/// its output as it does with tcp-core (`poll` itself sends before returning).
fn ingress(
    iface: &mut Interface,
    t: Instant,
    port: &mut Port<'_>,
    sockets: &mut SocketSet<'_>,
) -> bool {
    let mut changed = false;
    loop {
        match iface.poll_ingress_single(t, port, sockets) {
            PollIngressSingleResult::None => return changed,
            PollIngressSingleResult::PacketProcessed => {}
            PollIngressSingleResult::SocketStateChanged => changed = true,
        }
    }
}

fn egress(
    iface: &mut Interface,
    t: Instant,
    port: &mut Port<'_>,
    sockets: &mut SocketSet<'_>,
) -> bool {
    let mut changed = false;
    while iface.poll_egress(t, port, sockets) == PollResult::SocketStateChanged {
        changed = true;
    }
    changed
}

fn socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; RECV_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; SEND_BUFFER]),
    );
    s.set_congestion_control(CongestionControl::Cubic);
    s.set_tsval_generator(Some(tsval));
    s
}

/// Both interfaces and their sockets.
struct SmolPair {
    wire: Wire,
    client: Interface,
    server: Interface,
    client_sockets: SocketSet<'static>,
    server_sockets: SocketSet<'static>,
    next_port: u16,
}

impl SmolPair {
    fn new() -> SmolPair {
        let mut wire = Wire::default();
        let client = interface(CLIENT_MAC, CLIENT_IP, &mut wire.client_port(), 1);
        let server = interface(SERVER_MAC, SERVER_IP, &mut wire.server_port(), 2);
        SmolPair {
            wire,
            client,
            server,
            client_sockets: SocketSet::new(Vec::new()),
            server_sockets: SocketSet::new(Vec::new()),
            next_port: CLIENT_PORTS.0,
        }
    }

    /// Sets the time for this loop turn (smoltcp's timestamp clock included).
    fn set_time(&self, now: Duration) -> Instant {
        TSVAL_MILLIS.store(now.as_millis() as u32, Ordering::Relaxed);
        instant(now)
    }

    /// The server interface takes every frame waiting for it; true if a socket may have
    /// changed.
    fn server_input(&mut self, t: Instant) -> bool {
        let port = &mut self.wire.server_port();
        ingress(&mut self.server, t, port, &mut self.server_sockets)
    }

    /// The server interface sends whatever its sockets have; true if a socket changed.
    fn server_output(&mut self, t: Instant) -> bool {
        let port = &mut self.wire.server_port();
        egress(&mut self.server, t, port, &mut self.server_sockets)
    }

    fn client_input(&mut self, t: Instant) -> bool {
        let port = &mut self.wire.client_port();
        ingress(&mut self.client, t, port, &mut self.client_sockets)
    }

    fn client_output(&mut self, t: Instant) -> bool {
        let port = &mut self.wire.client_port();
        egress(&mut self.client, t, port, &mut self.client_sockets)
    }

    /// When idle, jumps the clock to the earliest time either interface wants to be polled.
    /// False when idle and neither wants to be polled ever: nothing can happen again.
    fn wait(&mut self, clock: &mut BenchClock, idle: bool) -> bool {
        if !idle || !self.wire.is_empty() {
            return true;
        }
        let t = instant(clock.now());
        let next = [
            self.client.poll_at(t, &self.client_sockets),
            self.server.poll_at(t, &self.server_sockets),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) => {
                let micros = u64::try_from(at.total_micros()).unwrap_or(0);
                clock.skip_to(Duration::from_micros(micros));
                true
            }
            None => false,
        }
    }

    fn connect(&mut self, handle: SocketHandle) -> bool {
        let port = self.next_port;
        self.next_port = if port >= CLIENT_PORTS.1 { CLIENT_PORTS.0 } else { port + 1 };
        let remote = IpEndpoint::new(IpAddress::Ipv4(SERVER_IP), SERVER_PORT);
        let s = self.client_sockets.get_mut::<tcp::Socket<'_>>(handle);
        s.connect(self.client.context(), remote, port).is_ok()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientPhase {
    Idle,
    Connecting,
    AwaitingResponse,
    Closing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerPhase {
    Listening,
    Closing,
}

/// Short connections with `concurrency` in flight: the same exchange as tcp-core's
/// `pair::churn`; `done` counts connections whose client saw the whole response and the
/// end of stream.
pub(crate) fn churn<B: Bound>(
    concurrency: usize,
    clock: &mut BenchClock,
    bound: &mut B,
) -> DriverStats {
    let mut pair = SmolPair::new();
    let mut servers: Vec<(SocketHandle, ServerPhase)> = (0..concurrency)
        .map(|_| {
            let mut s = socket();
            let _ = s.listen(SERVER_PORT);
            (pair.server_sockets.add(s), ServerPhase::Listening)
        })
        .collect();
    let mut clients: Vec<(SocketHandle, ClientPhase, usize)> = (0..concurrency)
        .map(|_| (pair.client_sockets.add(socket()), ClientPhase::Idle, 0))
        .collect();
    let mut buf = [0u8; 64];
    let (mut started, mut done, mut failures) = (0u64, 0u64, 0u64);
    loop {
        let t = pair.set_time(clock.tick());
        let mut acted = false;
        let mut active = 0;
        for (handle, phase, got) in clients.iter_mut() {
            if *phase == ClientPhase::Idle && bound.may_start(started) {
                if pair.connect(*handle) {
                    started += 1;
                    *phase = ClientPhase::Connecting;
                    *got = 0;
                    acted = true;
                } else {
                    failures += 1;
                }
            }
            active += usize::from(*phase != ClientPhase::Idle);
        }
        if active == 0 || (!bound.keep_going(done) && !bound.finish_in_flight()) {
            break;
        }
        // Each stack takes its input, then its application acts, then its output leaves.
        let mut changed = pair.client_output(t);
        changed |= pair.server_input(t);
        for (handle, phase) in servers.iter_mut() {
            let s = pair.server_sockets.get_mut::<tcp::Socket<'_>>(*handle);
            match phase {
                ServerPhase::Listening if s.can_recv() => {
                    acted = true;
                    if s.recv_slice(&mut buf) == Ok(REQUEST.len())
                        && s.send_slice(RESPONSE) == Ok(RESPONSE.len())
                    {
                        s.close();
                    } else {
                        failures += 1;
                        s.abort();
                    }
                    *phase = ServerPhase::Closing;
                }
                // Reset before the request came: listen again.
                ServerPhase::Listening if s.state() == State::Closed => {
                    acted = true;
                    let _ = s.listen(SERVER_PORT);
                }
                _ => {}
            }
        }
        changed |= pair.server_output(t);
        // Only once the output went: `listen` resets the socket, and a socket that just
        // entered TIME-WAIT still owes the client the ACK of its FIN.
        for (handle, phase) in servers.iter_mut() {
            let s = pair.server_sockets.get_mut::<tcp::Socket<'_>>(*handle);
            if *phase == ServerPhase::Closing
                && matches!(s.state(), State::TimeWait | State::Closed)
            {
                acted = true;
                let _ = s.listen(SERVER_PORT);
                *phase = ServerPhase::Listening;
            }
        }
        changed |= pair.client_input(t);
        for (handle, phase, got) in clients.iter_mut() {
            let s = pair.client_sockets.get_mut::<tcp::Socket<'_>>(*handle);
            match phase {
                ClientPhase::Connecting if s.may_send() => {
                    acted = true;
                    if s.send_slice(REQUEST) == Ok(REQUEST.len()) {
                        *phase = ClientPhase::AwaitingResponse;
                    } else {
                        failures += 1;
                        s.abort();
                        *phase = ClientPhase::Closing;
                    }
                }
                ClientPhase::Connecting if s.state() == State::Closed => {
                    acted = true;
                    failures += 1;
                    *phase = ClientPhase::Idle;
                }
                ClientPhase::AwaitingResponse => {
                    while let Ok(n @ 1..) = s.recv_slice(&mut buf) {
                        *got += n;
                        acted = true;
                    }
                    // The peer's FIN arrived and everything before it was read.
                    if !s.may_recv() {
                        acted = true;
                        if *got == RESPONSE.len() && s.state() == State::CloseWait {
                            done += 1;
                        } else {
                            failures += 1;
                        }
                        s.close();
                        *phase = ClientPhase::Closing;
                    }
                }
                ClientPhase::Closing if matches!(s.state(), State::Closed | State::TimeWait) => {
                    acted = true;
                    *phase = ClientPhase::Idle;
                }
                _ => {}
            }
        }
        if !pair.wait(clock, !changed && !acted) {
            failures += active as u64;
            break;
        }
    }
    DriverStats { done, failures, frames: pair.wire.frames.get(), timer_skips: clock.skips() }
}

/// Bulk: one connection moving bytes from client to server until `bound` says stop;
/// `done` counts bytes the server application read.
pub(crate) fn bulk<B: Bound>(clock: &mut BenchClock, bound: &mut B) -> DriverStats {
    let mut pair = SmolPair::new();
    let mut listener = socket();
    let _ = listener.listen(SERVER_PORT);
    let server = pair.server_sockets.add(listener);
    let client = pair.client_sockets.add(socket());
    if !pair.connect(client) {
        return DriverStats { failures: 1, ..DriverStats::default() };
    }
    // The handshake, before anything is counted.
    let deadline = clock.now() + Duration::from_secs(5);
    loop {
        let t = pair.set_time(clock.tick());
        let changed = pair.client_output(t)
            | pair.server_input(t)
            | pair.server_output(t)
            | pair.client_input(t);
        let up = pair.client_sockets.get::<tcp::Socket<'_>>(client).may_send()
            && pair.server_sockets.get::<tcp::Socket<'_>>(server).state() == State::Established;
        if up {
            break;
        }
        if clock.now() > deadline || !pair.wait(clock, !changed) {
            return DriverStats { failures: 1, ..DriverStats::default() };
        }
    }
    let chunk: Vec<u8> = (0..APP_CHUNK).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; APP_CHUNK];
    let mut received = 0u64;
    let mut failures = 0;
    while bound.keep_going(received) {
        let t = pair.set_time(clock.tick());
        let mut acted = false;
        let s = pair.client_sockets.get_mut::<tcp::Socket<'_>>(client);
        while let Ok(n @ 1..) = s.send_slice(&chunk) {
            acted |= n > 0;
        }
        let mut changed = pair.client_output(t);
        changed |= pair.server_input(t);
        let s = pair.server_sockets.get_mut::<tcp::Socket<'_>>(server);
        while let Ok(n @ 1..) = s.recv_slice(&mut buf) {
            received += n as u64;
            acted = true;
        }
        if !s.may_recv() {
            failures += 1;
            break;
        }
        changed |= pair.server_output(t);
        changed |= pair.client_input(t);
        if !pair.wait(clock, !changed && !acted) {
            failures += 1;
            break;
        }
    }
    DriverStats {
        done: received,
        failures,
        frames: pair.wire.frames.get(),
        timer_skips: clock.skips(),
    }
}
