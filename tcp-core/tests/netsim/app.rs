//! The applications the simulator runs on top of the two stacks: clients that connect,
//! send a byte pattern, shut down their write side and read until end of stream, and a
//! server that accepts, reads until end of stream while answering (echo or its own
//! pattern), then closes. Both directions carry data at the same time.
//!
//! The applications are level-triggered: every time the simulator lets them run they try
//! everything they could do, so they never depend on which events the stack raised.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use tcp_core::stack::{AcceptError, ListenerHandle, SocketError, SocketHandle, Stack};
use tcp_core::tcp::{ConnectionStats, RecvError, State};

use crate::rng::mix;

/// What the server sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Response {
    /// Every byte the client sent, in order.
    Echo,
    /// Its own pattern of this many bytes, sent from the moment it accepts.
    Pattern(usize),
}

/// What each connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Workload {
    /// Concurrent connections from the client stack to the server's listener.
    pub(crate) connections: usize,
    /// Bytes each client sends.
    pub(crate) request_len: usize,
    pub(crate) response: Response,
    /// Largest `send` call the applications make (small values exercise Nagle).
    pub(crate) write_chunk: usize,
    /// Largest `recv` call.
    pub(crate) read_chunk: usize,
    /// Listener backlog.
    pub(crate) backlog: usize,
    /// TCP_NODELAY on every socket, client and server.
    pub(crate) nodelay: bool,
}

impl Workload {
    pub(crate) fn response_len(&self) -> usize {
        match self.response {
            Response::Echo => self.request_len,
            Response::Pattern(n) => n,
        }
    }
}

/// Byte `pos` of stream `stream`: different for every position and every stream, so a
/// byte delivered twice, out of order or to the wrong connection shows up.
pub(crate) fn pattern_byte(stream: u64, pos: usize) -> u8 {
    let word = mix(stream.wrapping_mul(0x1_0000_0001) ^ (pos as u64 / 8));
    word.to_le_bytes()[pos % 8]
}

pub(crate) fn fill_pattern(stream: u64, start: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = pattern_byte(stream, start + i);
    }
}

/// The client→server stream of the connection from local port `port`.
pub(crate) fn request_stream(port: u16) -> u64 {
    u64::from(port)
}

/// The server's own stream towards client port `port`.
pub(crate) fn response_stream(port: u16) -> u64 {
    u64::from(port) | 1 << 32
}

/// Checks a received byte stream against the pattern as it arrives.
#[derive(Debug)]
pub(crate) struct StreamCheck {
    pub(crate) stream: u64,
    pub(crate) expected_len: usize,
    pub(crate) received: usize,
    pub(crate) eof: bool,
}

impl StreamCheck {
    pub(crate) fn new(stream: u64, expected_len: usize) -> StreamCheck {
        StreamCheck { stream, expected_len, received: 0, eof: false }
    }

    fn take(&mut self, who: &str, data: &[u8]) {
        assert!(!self.eof, "{who}: data after end of stream");
        assert!(
            self.received + data.len() <= self.expected_len,
            "{who}: {} bytes received, more than the {} sent",
            self.received + data.len(),
            self.expected_len
        );
        for (i, &b) in data.iter().enumerate() {
            let pos = self.received + i;
            let want = pattern_byte(self.stream, pos);
            assert_eq!(b, want, "{who}: byte {pos} of stream {:#x} is wrong", self.stream);
        }
        self.received += data.len();
    }

    fn end(&mut self, who: &str) {
        assert_eq!(
            self.received, self.expected_len,
            "{who}: end of stream after {} of {} bytes",
            self.received, self.expected_len
        );
        self.eof = true;
    }

    pub(crate) fn complete(&self) -> bool {
        self.eof && self.received == self.expected_len
    }
}

/// Reads everything available; returns whether anything happened.
fn read_available(
    stack: &mut Stack,
    h: SocketHandle,
    check: &mut StreamCheck,
    buf: &mut [u8],
    who: &str,
    mut sink: impl FnMut(&[u8]),
) -> bool {
    let mut progress = false;
    while !check.eof {
        match stack.recv(h, buf) {
            Ok(0) => {
                check.end(who);
                progress = true;
            }
            Ok(n) => {
                check.take(who, &buf[..n]);
                sink(&buf[..n]);
                progress = true;
            }
            Err(SocketError::Recv(RecvError::WouldBlock)) => break,
            Err(e) => panic!("{who}: recv failed: {e} (state {:?})", stack.state(h)),
        }
    }
    progress
}

/// Sends from `source` starting at `*sent`; returns whether anything was taken.
fn write_available(
    stack: &mut Stack,
    h: SocketHandle,
    total: usize,
    sent: &mut usize,
    chunk: usize,
    who: &str,
    mut source: impl FnMut(usize, &mut [u8]),
) -> bool {
    let mut progress = false;
    let mut buf = vec![0u8; chunk.max(1)];
    while *sent < total {
        let n = chunk.min(total - *sent);
        source(*sent, &mut buf[..n]);
        match stack.send(h, &buf[..n]) {
            Ok(0) => break,
            Ok(k) => {
                assert!(k <= n, "{who}: send took {k} of {n} bytes");
                *sent += k;
                progress = true;
            }
            Err(e) => panic!("{who}: send failed: {e} (state {:?})", stack.state(h)),
        }
    }
    progress
}

#[derive(Debug)]
pub(crate) struct ClientConn {
    pub(crate) handle: SocketHandle,
    pub(crate) port: u16,
    sent: usize,
    shut: bool,
    pub(crate) rx: StreamCheck,
    pub(crate) closed: bool,
    /// The connection's statistics just before the application closed it.
    pub(crate) final_stats: Option<ConnectionStats>,
}

/// The client side: `workload.connections` connections from one stack.
#[derive(Debug)]
pub(crate) struct Clients {
    pub(crate) workload: Workload,
    pub(crate) conns: Vec<ClientConn>,
    buf: Vec<u8>,
}

impl Clients {
    pub(crate) fn connect(
        stack: &mut Stack,
        now: tcp_core::Instant,
        server: SocketAddrV4,
        workload: Workload,
    ) -> Clients {
        let conns = (0..workload.connections)
            .map(|_| {
                let handle = stack.connect(now, server, None).expect("connect");
                if workload.nodelay {
                    stack.set_nodelay(handle, true).expect("nodelay");
                }
                let port = stack.tuple(handle).expect("tuple").local.port();
                ClientConn {
                    handle,
                    port,
                    sent: 0,
                    shut: false,
                    rx: StreamCheck::new(
                        Response::stream_for(workload.response, port),
                        workload.response_len(),
                    ),
                    closed: false,
                    final_stats: None,
                }
            })
            .collect();
        Clients { workload, conns, buf: vec![0; workload.read_chunk.max(1)] }
    }

    /// Lets every client act; returns whether any did something.
    pub(crate) fn poll(&mut self, stack: &mut Stack) -> bool {
        let w = self.workload;
        let mut progress = false;
        for c in self.conns.iter_mut().filter(|c| !c.closed) {
            let who = format!("client :{}", c.port);
            let state = stack.state(c.handle).expect("client handle stays valid until close");
            if !state.is_synchronized() {
                continue;
            }
            let stream = request_stream(c.port);
            progress |= write_available(
                stack,
                c.handle,
                w.request_len,
                &mut c.sent,
                w.write_chunk,
                &who,
                |at, out| fill_pattern(stream, at, out),
            );
            if c.sent == w.request_len && !c.shut {
                stack.shutdown_write(c.handle).expect("shutdown");
                c.shut = true;
                progress = true;
            }
            progress |= read_available(stack, c.handle, &mut c.rx, &mut self.buf, &who, |_| {});
            if c.rx.eof && c.shut {
                c.final_stats = stack.connection_stats(c.handle).ok();
                stack.close(c.handle).expect("close");
                c.closed = true;
                progress = true;
            }
        }
        progress
    }

    pub(crate) fn done(&self) -> bool {
        self.conns.iter().all(|c| c.closed && c.rx.complete())
    }

    pub(crate) fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.conns.iter().filter(|c| !c.closed).map(|c| c.handle)
    }
}

impl Response {
    fn stream_for(self, port: u16) -> u64 {
        match self {
            Response::Echo => request_stream(port),
            Response::Pattern(_) => response_stream(port),
        }
    }
}

#[derive(Debug)]
pub(crate) struct ServerConn {
    pub(crate) port: u16,
    pub(crate) rx: StreamCheck,
    /// Echo mode: bytes read and not yet taken by `send`.
    echo_pending: Vec<u8>,
    sent: usize,
    pub(crate) closed: bool,
}

/// The server side: one listener, every accepted connection served.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) workload: Workload,
    pub(crate) listener: ListenerHandle,
    pub(crate) conns: BTreeMap<SocketHandle, ServerConn>,
    pub(crate) accepted: usize,
    buf: Vec<u8>,
}

impl Server {
    pub(crate) fn listen(stack: &mut Stack, port: u16, workload: Workload) -> Server {
        let listener = stack
            .listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), workload.backlog)
            .expect("listen");
        Server {
            workload,
            listener,
            conns: BTreeMap::new(),
            accepted: 0,
            buf: vec![0; workload.read_chunk.max(1)],
        }
    }

    pub(crate) fn poll(&mut self, stack: &mut Stack) -> bool {
        let w = self.workload;
        let mut progress = false;
        loop {
            match stack.accept(self.listener) {
                Ok((h, remote)) => {
                    if w.nodelay {
                        stack.set_nodelay(h, true).expect("nodelay");
                    }
                    let port = remote.port();
                    self.conns.insert(
                        h,
                        ServerConn {
                            port,
                            rx: StreamCheck::new(request_stream(port), w.request_len),
                            echo_pending: Vec::new(),
                            sent: 0,
                            closed: false,
                        },
                    );
                    self.accepted += 1;
                    progress = true;
                }
                Err(AcceptError::WouldBlock) => break,
                Err(e) => panic!("server: accept failed: {e}"),
            }
        }
        for (&h, c) in self.conns.iter_mut().filter(|(_, c)| !c.closed) {
            let who = format!("server for :{}", c.port);
            let pending = &mut c.echo_pending;
            let echo = w.response == Response::Echo;
            progress |= read_available(stack, h, &mut c.rx, &mut self.buf, &who, |data| {
                if echo {
                    pending.extend_from_slice(data)
                }
            });
            match w.response {
                Response::Echo => {
                    while !c.echo_pending.is_empty() {
                        let take = c.echo_pending.len().min(w.write_chunk.max(1));
                        match stack.send(h, &c.echo_pending[..take]) {
                            Ok(0) => break,
                            Ok(k) => {
                                c.echo_pending.drain(..k);
                                c.sent += k;
                                progress = true;
                            }
                            Err(e) => panic!("{who}: send failed: {e}"),
                        }
                    }
                }
                Response::Pattern(len) => {
                    let stream = response_stream(c.port);
                    progress |= write_available(
                        stack,
                        h,
                        len,
                        &mut c.sent,
                        w.write_chunk,
                        &who,
                        |at, out| fill_pattern(stream, at, out),
                    );
                }
            }
            if c.rx.eof && c.sent == w.response_len() {
                stack.close(h).expect("server close");
                c.closed = true;
                progress = true;
            }
        }
        progress
    }

    pub(crate) fn done(&self) -> bool {
        self.accepted == self.workload.connections
            && self.conns.values().all(|c| c.closed && c.rx.complete())
    }

    pub(crate) fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.conns.iter().filter(|(_, c)| !c.closed).map(|(&h, _)| h)
    }
}

/// True for the states a connection may be left in once both applications closed.
pub(crate) fn is_closing_state(s: State) -> bool {
    matches!(
        s,
        State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck
            | State::TimeWait
            | State::Closed
    )
}
