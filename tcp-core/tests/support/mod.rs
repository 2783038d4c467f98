//! Harness for the Linux interop tests: a tcp-core [`Stack`] driven in real time over a TAP
//! device whose kernel side lives in a network namespace the test creates.
//!
//! ```text
//!   root namespace                         test namespace
//!   tcp-core Stack ⇄ TapDevice fd ─────── TAP interface (kernel side), Linux TCP
//!   10.99.N.1 (user-side MAC)             10.99.N.2, optional `tc netem`
//! ```
//!
//! The loop in [`TapStack::run_until`] is the embedding pattern of the `Stack` docs:
//! feed received frames and due timers, let the application act, drain `poll_transmit` into
//! the TAP, then sleep until the next frame or deadline.

pub(crate) mod impair;
pub(crate) mod pcap;
pub(crate) mod peer;

use std::io::Read;
use std::net::Ipv4Addr;
use std::time::Duration;

use ixgbe_user::QueuePair;
use ixgbe_user::linux::TapDevice;
use ixgbe_user::linux::netns::{self, NetNamespace, unique_name};
use tcp_core::Instant;
use tcp_core::stack::{Event, SocketError, SocketHandle, Stack, StackConfig};
use tcp_core::tcp::{RecvError, State};
use tcp_core::wire::EthernetAddress;

use self::impair::{ImpairStats, Impairment, NetemParams};
use self::pcap::Capture;
use self::peer::{Digest, StreamHasher};

/// Longest sleep of an idle loop. Without poll(2) (tcp-core's tests carry no `unsafe`) the
/// loop sleeps in short slices; this bounds the latency it adds to every round trip.
const IDLE_SLICE: Duration = Duration::from_micros(200);
/// Frames taken from the TAP per pass.
const RX_BURST: usize = 64;
/// Frames sent per pass at most, so one pass cannot spin forever.
const TX_PER_PASS: usize = 4096;
/// Frames kept for the pcap written on failure.
const CAPTURE_FRAMES: usize = 20_000;

/// Where the link's impairment comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Netem {
    /// A clean link.
    Off,
    /// `tc netem` on the kernel side (Linux → tcp-core), the harness on tcp-core → Linux.
    KernelQdisc,
    /// The kernel has no netem; the harness impairs both directions.
    Emulated,
}

/// A TAP link between tcp-core (root namespace) and Linux (a fresh namespace).
///
/// Fields drop in order: the TAP descriptor first (which removes the interface), then the
/// namespace.
pub(crate) struct Link {
    /// The tcp-core side.
    pub(crate) driver: TapStack,
    /// The namespace holding the kernel side of the TAP.
    pub(crate) ns: NetNamespace,
    /// The kernel side's address.
    pub(crate) linux_ip: Ipv4Addr,
    /// tcp-core's address.
    pub(crate) tcp_core_ip: Ipv4Addr,
    /// How the link is impaired.
    pub(crate) netem: Netem,
}

impl Link {
    /// Builds the link on subnet 10.99.`subnet`.0/24, impaired with `impair` if given.
    pub(crate) fn open(subnet: u8, impair: Option<NetemParams>) -> Result<Link, String> {
        let tcp_core_ip = Ipv4Addr::new(10, 99, subnet, 1);
        let linux_ip = Ipv4Addr::new(10, 99, subnet, 2);
        let tap = TapDevice::open(&unique_name("tap")).map_err(|e| format!("TAP: {e}"))?;
        let ns = NetNamespace::create(&unique_name("ns")).map_err(|e| format!("netns: {e}"))?;
        let name = tap.name().to_owned();
        netns::move_into(&name, &ns).map_err(|e| e.to_string())?;
        ns.ip(&["addr", "add", &format!("{linux_ip}/24"), "dev", &name])
            .map_err(|e| e.to_string())?;
        ns.ip(&["link", "set", &name, "up"]).map_err(|e| e.to_string())?;

        let mut config =
            StackConfig::new(EthernetAddress(tap.mac_address()), tcp_core_ip, 24, random_secret());
        config.mtu = tap.max_frame_len() - 14;
        let mut driver = TapStack::new(Stack::new(config), tap);
        let mut netem = Netem::Off;
        if let Some(params) = impair {
            let seed = u64::from(subnet) << 32 | u64::from(std::process::id());
            driver.tx_impair = Some(Impairment::new(params, seed));
            let mut tc = vec!["qdisc", "add", "dev", &name, "root"];
            let args = params.tc_args();
            tc.extend(args.iter().map(String::as_str));
            match ns.exec("tc", &tc) {
                Ok(_) => netem = Netem::KernelQdisc,
                Err(e) => {
                    println!(
                        "note: `tc qdisc ... netem` is unavailable ({e}); the harness emulates \
                         loss {}%, delay {:?}, reorder {}% in both directions instead",
                        params.loss * 100.0,
                        params.delay,
                        params.reorder * 100.0
                    );
                    driver.rx_impair = Some(Impairment::new(params, seed ^ 0x5eed));
                    netem = Netem::Emulated;
                }
            }
        }
        Ok(Link { driver, ns, linux_ip, tcp_core_ip, netem })
    }
}

/// A secret for ISNs and SYN cookies, from the kernel's random pool.
pub(crate) fn random_secret() -> [u8; 16] {
    let mut secret = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut secret))
    {
        panic!("/dev/urandom: {e}");
    }
    secret
}

/// A [`Stack`] attached to a TAP, with wall-clock time, optional impairment per direction
/// and a capture of recent frames.
pub(crate) struct TapStack {
    /// The stack under test.
    pub(crate) stack: Stack,
    tap: TapDevice,
    origin: std::time::Instant,
    /// Applied to frames from the kernel before the stack sees them.
    rx_impair: Option<Impairment>,
    /// Applied to frames from the stack before the kernel sees them.
    tx_impair: Option<Impairment>,
    /// Drops frames from the kernel for which it returns true (targeted loss).
    rx_filter: Option<FrameFilter>,
    /// Drops frames from the stack for which it returns true (targeted loss).
    tx_filter: Option<FrameFilter>,
    capture: Capture,
    frame: Vec<u8>,
    events: Vec<Event>,
}

/// Decides whether to drop one frame.
pub(crate) type FrameFilter = Box<dyn FnMut(&[u8]) -> bool + Send>;

impl TapStack {
    /// Drives `stack` over `tap`.
    pub(crate) fn new(stack: Stack, tap: TapDevice) -> TapStack {
        let frame = vec![0; tap.max_frame_len()];
        TapStack {
            stack,
            tap,
            origin: std::time::Instant::now(),
            rx_impair: None,
            tx_impair: None,
            rx_filter: None,
            tx_filter: None,
            capture: Capture::new(CAPTURE_FRAMES),
            frame,
            events: Vec::new(),
        }
    }

    /// The current time on the stack's clock (nanoseconds since the driver was created).
    pub(crate) fn now(&self) -> Instant {
        self.to_stack_time(std::time::Instant::now())
    }

    fn to_stack_time(&self, t: std::time::Instant) -> Instant {
        let nanos = t.saturating_duration_since(self.origin).as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn to_wall_time(&self, t: Instant) -> std::time::Instant {
        self.origin + Duration::from_nanos(t.as_nanos())
    }

    /// Runs the embedding loop until `app` returns `Some` (or an error), for at most `limit`.
    /// `app` gets the stack, the current time and the events of this round.
    pub(crate) fn run_until<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut app: impl FnMut(&mut Stack, Instant, &[Event]) -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let received = self.input()?;
            self.events.clear();
            self.events.extend(std::iter::from_fn(|| self.stack.poll_event()));
            let now = self.now();
            let outcome = app(&mut self.stack, now, &self.events)?;
            let sent = self.output()?;
            if let Some(value) = outcome {
                return Ok(value);
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("timed out after {limit:?} waiting for {what}"));
            }
            if received == 0 && sent == 0 {
                self.sleep_until_due();
            }
        }
    }

    /// Input half of one round: frames from the TAP, delayed frames now due, timers.
    fn input(&mut self) -> Result<usize, String> {
        let wall = std::time::Instant::now();
        let now = self.to_stack_time(wall);
        let since_start = wall - self.origin;
        let TapStack { stack, tap, capture, rx_impair, rx_filter, .. } = self;
        let mut deliver = |f: &[u8]| {
            if rx_filter.as_mut().is_some_and(|drop| drop(f)) {
                return;
            }
            capture.record(since_start, f);
            stack.handle_frame(now, f);
        };
        let received = tap
            .rx_burst(RX_BURST, &mut |frame| match rx_impair {
                Some(impair) => impair.offer(wall, frame, &mut deliver),
                None => deliver(frame),
            })
            .map_err(|e| format!("TAP receive: {e}"))?;
        if let Some(impair) = rx_impair {
            impair.release(wall, &mut deliver);
        }
        if stack.poll_timeout().is_some_and(|t| t <= now) {
            stack.handle_timeout(now);
        }
        Ok(received)
    }

    /// Output half: every frame the stack has, through the impairment, into the TAP.
    fn output(&mut self) -> Result<usize, String> {
        let wall = std::time::Instant::now();
        let now = self.to_stack_time(wall);
        let since_start = wall - self.origin;
        let TapStack { stack, tap, capture, tx_impair, tx_filter, frame, .. } = self;
        let mut error = None;
        let mut transmit = |f: &[u8]| {
            if let Err(e) = queue_frame(tap, f) {
                error.get_or_insert(e);
            }
        };
        let mut sent = 0;
        while sent < TX_PER_PASS {
            let Some(len) = stack.poll_transmit(now, frame) else { break };
            capture.record(since_start, &frame[..len]);
            sent += 1;
            if tx_filter.as_mut().is_some_and(|drop| drop(&frame[..len])) {
                continue;
            }
            match tx_impair {
                Some(impair) => impair.offer(wall, &frame[..len], &mut transmit),
                None => transmit(&frame[..len]),
            }
        }
        if let Some(impair) = tx_impair {
            impair.release(wall, &mut transmit);
        }
        if let Some(e) = error {
            return Err(e);
        }
        tap.tx_flush().map_err(|e| format!("TAP transmit: {e}"))?;
        Ok(sent)
    }

    /// Sleeps one slice, or less if a timer or a delayed frame is due sooner.
    fn sleep_until_due(&self) {
        let wall = std::time::Instant::now();
        let mut wake = wall + IDLE_SLICE;
        if let Some(t) = self.stack.poll_timeout() {
            wake = wake.min(self.to_wall_time(t));
        }
        for impair in [&self.rx_impair, &self.tx_impair].into_iter().flatten() {
            if let Some(t) = impair.next_release() {
                wake = wake.min(t);
            }
        }
        std::thread::sleep(wake.saturating_duration_since(wall));
    }

    /// Drops every frame from the kernel for which `filter` returns true, before the stack
    /// (and the capture) sees it.
    pub(crate) fn drop_from_kernel(&mut self, filter: FrameFilter) {
        self.rx_filter = Some(filter);
    }

    /// Drops every frame the stack emits for which `filter` returns true (the capture still
    /// shows it, as the stack sent it).
    pub(crate) fn drop_to_kernel(&mut self, filter: FrameFilter) {
        self.tx_filter = Some(filter);
    }

    /// Impairment counters (kernel → tcp-core, tcp-core → kernel).
    pub(crate) fn impair_stats(&self) -> (Option<ImpairStats>, Option<ImpairStats>) {
        (self.rx_impair.as_ref().map(|i| i.stats()), self.tx_impair.as_ref().map(|i| i.stats()))
    }

    /// Everything useful for a failure report: stack counters, connections, TAP and
    /// impairment counters, and the path of a pcap of the most recent frames.
    pub(crate) fn diagnostics(&self, case: &str) -> String {
        let mut out = String::new();
        for (handle, state) in self.stack.connections() {
            let stats =
                self.stack.connection_stats(handle).map(|s| format!("{s:?}")).unwrap_or_default();
            out += &format!("\n  connection {handle:?}: {state:?} {stats}");
        }
        out += &format!("\n  stack counters: {:?}", self.stack.counters());
        out += &format!("\n  TAP: {:?}", self.tap.stats());
        out += &format!("\n  impairment (rx, tx): {:?}", self.impair_stats());
        let file: String =
            case.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let path = std::env::temp_dir().join(format!("tcp-core-interop-{file}.pcap"));
        match self.capture.write_pcap(&path) {
            Ok(p) => {
                out += &format!("\n  last frames ({} seen): {}", self.capture.seen(), p.display())
            }
            Err(e) => out += &format!("\n  pcap not written: {e}"),
        }
        out
    }
}

/// The parts of an Ethernet/IPv4/TCP frame the targeted-loss filters look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcpSummary {
    /// Sequence number.
    pub(crate) seq: u32,
    /// Flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub(crate) flags: u8,
    /// Payload bytes.
    pub(crate) payload_len: usize,
}

/// Parses just enough of `frame` to summarise a TCP segment; `None` for anything else.
pub(crate) fn tcp_summary(frame: &[u8]) -> Option<TcpSummary> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 6 {
        return None;
    }
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]));
    let tcp = frame.get(14 + ihl..14 + total)?;
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    Some(TcpSummary { seq, flags: *tcp.get(13)?, payload_len: tcp.len().checked_sub(doff)? })
}

/// True for an ARP frame.
pub(crate) fn is_arp(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x06][..])
}

/// Queues one frame on the TAP, flushing first if its batch is full.
fn queue_frame(tap: &mut TapDevice, frame: &[u8]) -> Result<(), String> {
    for _ in 0..2 {
        let queued = tap
            .tx_one(&mut |buf| match buf.get_mut(..frame.len()) {
                Some(dst) => {
                    dst.copy_from_slice(frame);
                    frame.len()
                }
                None => 0,
            })
            .map_err(|e| format!("TAP transmit: {e}"))?;
        if queued {
            return Ok(());
        }
        tap.tx_flush().map_err(|e| format!("TAP transmit: {e}"))?;
    }
    Err("TAP transmit batch stays full after a flush".into())
}

/// The tcp-core half of a full-duplex exchange: writes `outgoing` and then shuts down the
/// write half, while reading the peer's bytes to end of stream.
#[derive(Debug)]
pub(crate) struct Exchange {
    handle: SocketHandle,
    outgoing: Vec<u8>,
    sent: usize,
    write_closed: bool,
    received: Option<StreamHasher>,
    digest: Option<Digest>,
    /// No reading before this instant, so our receive window fills up.
    read_from: Instant,
    /// Most bytes seen waiting in the receive queue.
    peak_recv_queue: usize,
    /// When the peer had acknowledged all our data.
    all_acked_at: Option<Instant>,
    buf: Vec<u8>,
}

impl Exchange {
    /// Starts an exchange on the connection `handle`.
    pub(crate) fn new(handle: SocketHandle, outgoing: Vec<u8>) -> Exchange {
        Exchange {
            handle,
            outgoing,
            sent: 0,
            write_closed: false,
            received: Some(StreamHasher::default()),
            digest: None,
            read_from: Instant::ZERO,
            peak_recv_queue: 0,
            all_acked_at: None,
            buf: vec![0; 64 * 1024],
        }
    }

    /// Does not read before `from`.
    pub(crate) fn pause_reading_until(mut self, from: Instant) -> Exchange {
        self.read_from = from;
        self
    }

    /// When the peer had acknowledged every byte we sent (stack time), if it has.
    pub(crate) fn all_acked_at(&self) -> Option<Instant> {
        self.all_acked_at
    }

    /// The most bytes that waited in the receive queue at once.
    pub(crate) fn peak_recv_queue(&self) -> usize {
        self.peak_recv_queue
    }

    /// Where the exchange stands, for error messages.
    pub(crate) fn progress(&self, stack: &Stack) -> String {
        let received =
            self.received.as_ref().map_or(self.digest.map_or(0, |d| d.len), StreamHasher::len);
        format!(
            "tcp-core sent {} of {} bytes (write closed: {}), received {} bytes (eof: {}), state {:?}",
            self.sent,
            self.outgoing.len(),
            self.write_closed,
            received,
            self.digest.is_some(),
            stack.state(self.handle)
        )
    }

    /// Moves as much data as the stack takes and gives. Returns the digest of what was
    /// received once both directions are complete: the peer's FIN was read, and our data and
    /// FIN were acknowledged.
    pub(crate) fn pump(
        &mut self,
        stack: &mut Stack,
        now: Instant,
    ) -> Result<Option<Digest>, String> {
        while self.sent < self.outgoing.len() {
            match stack.send(self.handle, &self.outgoing[self.sent..]) {
                Ok(0) => break,
                Ok(n) => self.sent += n,
                Err(e) => return Err(format!("tcp-core send: {e}; {}", self.progress(stack))),
            }
        }
        if self.sent == self.outgoing.len() && !self.write_closed {
            stack.shutdown_write(self.handle).map_err(|e| format!("tcp-core shutdown: {e}"))?;
            self.write_closed = true;
        }
        if self.all_acked_at.is_none()
            && self.sent == self.outgoing.len()
            && stack.send_queue_len(self.handle) == Ok(0)
        {
            self.all_acked_at = Some(now);
        }
        let queued = stack.recv_queue_len(self.handle).unwrap_or(0);
        self.peak_recv_queue = self.peak_recv_queue.max(queued);
        let reading = now >= self.read_from;
        while let Some(hasher) = self.received.as_mut().filter(|_| reading) {
            match stack.recv(self.handle, &mut self.buf) {
                Ok(0) => self.digest = self.received.take().map(StreamHasher::finish),
                Ok(n) => hasher.update(&self.buf[..n]),
                Err(SocketError::Recv(RecvError::WouldBlock)) => break,
                Err(e) => return Err(format!("tcp-core recv: {e}; {}", self.progress(stack))),
            }
        }
        let state = stack.state(self.handle).map_err(|e| format!("tcp-core state: {e}"))?;
        let all_acked = matches!(state, State::TimeWait | State::Closed);
        Ok(if self.write_closed && all_acked { self.digest } else { None })
    }
}
