//! Two tcp-core stacks joined by an in-memory Ethernet wire, driven from one thread.
//!
//! The wire is lossless and instant: every frame one stack emits through `poll_transmit` is
//! handed to the other stack's `handle_frame` from the same buffer, so the only copies are
//! the ones the stacks make. Each loop turn is an event loop's: a stack takes its input,
//! its application acts, its output leaves (the client's output being the server's input).
//! The application side follows the call protocol of [`Stack`]: it acts on the events the
//! stacks report and never scans its sockets.

use core::net::SocketAddrV4;
use std::time::Duration;

use tcp_core::Instant;
use tcp_core::stack::{Event, ListenerHandle, SocketError, SocketHandle, Stack, StackConfig};
use tcp_core::tcp::RecvError;
use tcp_core::wire::EthernetAddress;

use super::{
    APP_CHUNK, BenchClock, Bound, CLIENT_IP, CLIENT_MAC, CLIENT_PORTS, DriverStats, MTU,
    RECV_BUFFER, REQUEST, RESPONSE, SEND_BUFFER, SERVER_IP, SERVER_MAC, SERVER_PORT,
};

/// A client stack and a server stack with a listener, on one wire.
#[derive(Debug)]
pub struct CorePair {
    /// The stack that opens connections.
    pub client: Stack,
    /// The stack that listens on [`SERVER_PORT`].
    pub server: Stack,
    listener: ListenerHandle,
    frame: Vec<u8>,
    frames: u64,
}

fn stack_config(mac: [u8; 6], ip: core::net::Ipv4Addr, secret: u8) -> StackConfig {
    let mut config = StackConfig::new(EthernetAddress(mac), ip, 24, [secret; 16]);
    config.mtu = MTU;
    config.tcp.send_buffer = SEND_BUFFER;
    config.tcp.recv_buffer = RECV_BUFFER;
    config.ephemeral_ports = CLIENT_PORTS;
    config
}

fn instant(t: Duration) -> Instant {
    Instant::from_nanos(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
}

impl CorePair {
    /// Two fresh stacks that know each other's MAC address, the server listening with a
    /// backlog of `backlog`.
    pub fn new(now: Duration, backlog: usize) -> CorePair {
        let now = instant(now);
        let mut client = Stack::new(stack_config(CLIENT_MAC, CLIENT_IP, 1));
        let mut server = Stack::new(stack_config(SERVER_MAC, SERVER_IP, 2));
        // Static neighbours: address resolution is set-up, not part of any connection.
        client.add_neighbor(now, SERVER_IP, EthernetAddress(SERVER_MAC));
        server.add_neighbor(now, CLIENT_IP, EthernetAddress(CLIENT_MAC));
        let listener = server
            .listen(SocketAddrV4::new(SERVER_IP, SERVER_PORT), backlog.max(1))
            .unwrap_or_else(|e| unreachable!("a fresh stack listens on its own address: {e}"));
        CorePair { client, server, listener, frame: vec![0; MTU + 14], frames: 0 }
    }

    /// Hands every frame the client has to send to the server; true if any moved.
    pub fn client_to_server(&mut self, now: Duration) -> bool {
        let now = instant(now);
        let mut moved = false;
        while let Some(n) = self.client.poll_transmit(now, &mut self.frame) {
            self.server.handle_frame(now, &self.frame[..n]);
            self.frames += 1;
            moved = true;
        }
        moved
    }

    /// Hands every frame the server has to send to the client; true if any moved.
    pub fn server_to_client(&mut self, now: Duration) -> bool {
        let now = instant(now);
        let mut moved = false;
        while let Some(n) = self.server.poll_transmit(now, &mut self.frame) {
            self.client.handle_frame(now, &self.frame[..n]);
            self.frames += 1;
            moved = true;
        }
        moved
    }

    /// Moves frames both ways until neither stack has anything to send; true if any moved.
    pub fn pump(&mut self, now: Duration) -> bool {
        let mut moved = false;
        while self.client_to_server(now) | self.server_to_client(now) {
            moved = true;
        }
        moved
    }

    /// Fires due timers; when `idle` (nothing moved, nothing to do), first jumps the clock to
    /// the earliest pending timer. False when idle with no timer pending: nothing can ever
    /// happen again.
    fn timers(&mut self, clock: &mut BenchClock, idle: bool) -> bool {
        let next =
            [self.client.poll_timeout(), self.server.poll_timeout()].into_iter().flatten().min();
        let Some(next) = next else { return !idle };
        if idle {
            clock.skip_to(Duration::from_nanos(next.as_nanos()));
        }
        let now = instant(clock.now());
        if next <= now {
            self.client.handle_timeout(now);
            self.server.handle_timeout(now);
        }
        true
    }

    /// Lets `span` of time pass with no application activity, moving frames and firing
    /// timers on the way (to reap TIME-WAIT at the end of a run, for example).
    pub fn idle_for(&mut self, clock: &mut BenchClock, span: Duration) {
        let end = clock.now() + span;
        while clock.now() < end {
            let moved = self.pump(clock.now());
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| Duration::from_nanos(t.as_nanos()));
            match next {
                Some(t) if t <= end => {
                    if !moved {
                        clock.skip_to(t);
                    }
                    let now = instant(clock.now());
                    self.client.handle_timeout(now);
                    self.server.handle_timeout(now);
                }
                _ if moved => {}
                _ => {
                    clock.skip_to(end);
                }
            }
        }
        self.pump(clock.now());
    }

    /// Frames the wire carried so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// Per-connection bookkeeping of the churn driver, indexed by socket slot.
#[derive(Debug, Default)]
struct Received {
    bytes: Vec<u8>,
}

impl Received {
    fn add(&mut self, slot: u32, n: usize) {
        let slot = slot as usize;
        if self.bytes.len() <= slot {
            self.bytes.resize(slot + 1, 0);
        }
        self.bytes[slot] = self.bytes[slot].saturating_add(u8::try_from(n).unwrap_or(u8::MAX));
    }

    fn take(&mut self, slot: u32) -> u8 {
        self.bytes.get_mut(slot as usize).map(std::mem::take).unwrap_or(0)
    }
}

/// Short connections: keeps `concurrency` in flight, each SYN, request, response, server
/// close, client close, until `bound` says stop. Returns the counters of the whole run;
/// `done` counts connections whose client saw the whole response and the end of stream.
pub fn churn<B: Bound>(
    pair: &mut CorePair,
    concurrency: usize,
    clock: &mut BenchClock,
    bound: &mut B,
) -> DriverStats {
    let remote = SocketAddrV4::new(SERVER_IP, SERVER_PORT);
    let mut buf = [0u8; 64];
    let mut received = Received::default();
    let (mut started, mut done, mut failures, mut open) = (0u64, 0u64, 0u64, 0usize);
    loop {
        let now = clock.tick();
        while open < concurrency && bound.may_start(started) {
            match pair.client.connect(instant(now), remote, None) {
                Ok(_) => {
                    started += 1;
                    open += 1;
                }
                Err(_) => {
                    failures += 1;
                    break;
                }
            }
        }
        if open == 0 || (!bound.keep_going(done) && !bound.finish_in_flight()) {
            break;
        }
        // Each stack takes its input, then its application acts, then its output leaves:
        // an event loop's order, which lets an ACK ride on the application's answer.
        let mut moved = pair.client_to_server(now);
        let mut acted = false;
        while let Some(event) = pair.server.poll_event() {
            acted = true;
            match event {
                Event::Acceptable(l) => while pair.server.accept(l).is_ok() {},
                Event::Readable(h) => failures += serve(&mut pair.server, h, &mut buf),
                _ => {}
            }
        }
        moved |= pair.server_to_client(now);
        while let Some(event) = pair.client.poll_event() {
            acted = true;
            match event {
                Event::Connected(h) if pair.client.send(h, REQUEST) != Ok(REQUEST.len()) => {
                    failures += 1;
                    open -= 1;
                    let _ = pair.client.abort(h);
                }
                Event::Readable(h) | Event::ReadClosed(h) => loop {
                    match pair.client.recv(h, &mut buf) {
                        Ok(0) => {
                            // End of stream: the exchange is over from the client's side.
                            if usize::from(received.take(h.slot())) == RESPONSE.len() {
                                done += 1;
                            } else {
                                failures += 1;
                            }
                            open -= 1;
                            let _ = pair.client.close(h);
                            break;
                        }
                        Ok(n) => received.add(h.slot(), n),
                        // A stale event for a connection closed earlier in this batch.
                        Err(SocketError::InvalidHandle) => break,
                        Err(SocketError::Recv(RecvError::WouldBlock)) => break,
                        Err(_) => {
                            received.take(h.slot());
                            failures += 1;
                            open -= 1;
                            let _ = pair.client.close(h);
                            break;
                        }
                    }
                },
                Event::Closed(h, _) => {
                    // Closed before the client read the end of stream: reset or timed out.
                    received.take(h.slot());
                    failures += 1;
                    open -= 1;
                    let _ = pair.client.close(h);
                }
                _ => {}
            }
        }
        if !pair.timers(clock, !moved && !acted) {
            failures += open as u64;
            break;
        }
    }
    DriverStats { done, failures, frames: pair.frames(), timer_skips: clock.skips() }
}

/// The server's side of one exchange: read the request, answer, close. Returns the number
/// of failures (0 or 1).
fn serve(server: &mut Stack, h: SocketHandle, buf: &mut [u8]) -> u64 {
    match server.recv(h, buf) {
        Ok(n) if n == REQUEST.len() => {
            let sent = server.send(h, RESPONSE);
            let _ = server.close(h);
            u64::from(sent != Ok(RESPONSE.len()))
        }
        Err(SocketError::Recv(RecvError::WouldBlock)) | Err(SocketError::InvalidHandle) => 0,
        _ => {
            let _ = server.abort(h);
            1
        }
    }
}

/// Bulk: opens one connection and moves bytes from client to server until `bound` says
/// stop; `done` counts bytes the server application read.
pub fn bulk<B: Bound>(pair: &mut CorePair, clock: &mut BenchClock, bound: &mut B) -> DriverStats {
    let remote = SocketAddrV4::new(SERVER_IP, SERVER_PORT);
    let mut failures = 0;
    let (client, server) = match establish(pair, clock, remote) {
        Some(handles) => handles,
        None => return DriverStats { failures: 1, ..DriverStats::default() },
    };
    let chunk: Vec<u8> = (0..APP_CHUNK).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; APP_CHUNK];
    let mut received = 0u64;
    while bound.keep_going(received) {
        let now = clock.tick();
        let mut acted = false;
        while let Ok(n @ 1..) = pair.client.send(client, &chunk) {
            acted |= n > 0;
        }
        let mut moved = pair.client_to_server(now);
        loop {
            match pair.server.recv(server, &mut buf) {
                Ok(n @ 1..) => {
                    received += n as u64;
                    acted = true;
                }
                Ok(0) | Err(SocketError::Recv(RecvError::WouldBlock)) => break,
                Err(_) => {
                    failures += 1;
                    return DriverStats { done: received, failures, ..DriverStats::default() };
                }
            }
        }
        // Readiness is known from the calls above; the events only need draining.
        while pair.server.poll_event().is_some() {}
        moved |= pair.server_to_client(now);
        while pair.client.poll_event().is_some() {}
        if !pair.timers(clock, !moved && !acted) {
            failures += 1;
            break;
        }
    }
    let _ = pair.client.abort(client);
    let _ = pair.server.abort(server);
    DriverStats { done: received, failures, frames: pair.frames(), timer_skips: clock.skips() }
}

/// Connects the client to the server and accepts; `None` if the handshake does not finish
/// within a few virtual seconds.
fn establish(
    pair: &mut CorePair,
    clock: &mut BenchClock,
    remote: SocketAddrV4,
) -> Option<(SocketHandle, SocketHandle)> {
    let client = pair.client.connect(instant(clock.tick()), remote, None).ok()?;
    let deadline = clock.now() + Duration::from_secs(5);
    let mut connected = false;
    let mut accepted = None;
    while clock.now() < deadline {
        let now = clock.tick();
        let moved = pair.pump(now);
        while let Some(event) = pair.client.poll_event() {
            connected |= event == Event::Connected(client);
        }
        while pair.server.poll_event().is_some() {}
        if accepted.is_none() {
            accepted = pair.server.accept(pair.listener).ok().map(|(h, _)| h);
        }
        if let (true, Some(server)) = (connected, accepted) {
            return Some((client, server));
        }
        if !pair.timers(clock, !moved) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Count;

    #[test]
    fn one_at_a_time_every_connection_completes_in_six_frames() {
        let mut clock = BenchClock::virtual_time(Duration::from_micros(10));
        let mut pair = CorePair::new(clock.now(), 128);
        let stats = churn(&mut pair, 1, &mut clock, &mut Count(50));
        assert_eq!((stats.done, stats.failures), (50, 0));
        assert_eq!(stats.timer_skips, 0, "no exchange waits for a timer");
        // The last client FIN is still on the wire when the driver stops.
        pair.pump(clock.tick());
        // SYN, SYN-ACK, ACK with the request, response with FIN, FIN-ACK, ACK: the ACKs
        // ride on the application's data because the application acts between a stack's
        // input and its output.
        assert_eq!(pair.frames(), 6 * 50);
        assert_eq!(pair.server.socket_count(), 50, "the server, closing first, keeps TIME-WAIT");
        assert_eq!(pair.client.socket_count(), 0, "the client side closes to CLOSED");
    }

    #[test]
    fn time_wait_is_reaped_after_sixty_seconds_of_idling() {
        let mut clock = BenchClock::virtual_time(Duration::from_micros(10));
        let mut pair = CorePair::new(clock.now(), 128);
        churn(&mut pair, 4, &mut clock, &mut Count(20));
        pair.idle_for(&mut clock, Duration::from_secs(59));
        assert!(pair.server.socket_count() > 0, "TIME-WAIT lasts 60 s");
        pair.idle_for(&mut clock, Duration::from_secs(2));
        assert_eq!((pair.client.socket_count(), pair.server.socket_count()), (0, 0));
    }

    #[test]
    fn many_at_once_every_connection_completes() {
        let mut clock = BenchClock::virtual_time(Duration::from_micros(10));
        let mut pair = CorePair::new(clock.now(), 1000);
        let stats = churn(&mut pair, 200, &mut clock, &mut Count(1000));
        assert_eq!((stats.done, stats.failures), (1000, 0));
    }

    #[test]
    fn bulk_delivers_the_requested_bytes() {
        let mut clock = BenchClock::virtual_time(Duration::from_micros(10));
        let mut pair = CorePair::new(clock.now(), 1);
        let stats = bulk(&mut pair, &mut clock, &mut Count(4 << 20));
        assert_eq!(stats.failures, 0);
        assert!(stats.done >= 4 << 20);
        let segments = (4u64 << 20) / 1448;
        assert!(stats.frames >= segments, "{} frames for {segments} segments", stats.frames);
    }
}
