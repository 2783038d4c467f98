//! An echo client built on tcp-core: connects, sends each message, waits for it to come
//! back, checks it, and closes. It shows the active side of embedding a sans-IO [`Stack`]:
//! `connect`, then `send`/`recv` driven by events, with the embedder moving frames and time.
//!
//! Run it in one of two ways.
//!
//! **In memory, no privileges.** A tcp-core echo server in the same process answers over an
//! in-memory Ethernet wire with a virtual clock:
//!
//! ```text
//! cargo run -p tcp-core --example echo_client -- --in-memory
//! cargo run -p tcp-core --example echo_client -- --in-memory --bytes 1000000 "some text"
//! ```
//!
//! **On a TAP device, as root, against Linux.** The client owns the user side of a TAP
//! interface. With `--netns` the example creates a network namespace, moves the kernel side
//! of the TAP into it with the address of `--server`, and runs a small echo server there on
//! the Linux TCP stack (std::net), so the run needs nothing else:
//!
//! ```text
//! sudo cargo run -p tcp-core --example echo_client -- --tap tcpcore1 --netns tcpcore-client
//! ```
//!
//! Without `--netns` it connects to whatever listens at `--server` behind the TAP; set the
//! kernel side up while the client waits for ARP (it retries for a few seconds), e.g.:
//!
//! ```text
//! sudo ip netns add demo
//! sudo ip link set tcpcore1 netns demo
//! sudo ip -n demo addr add 10.99.0.2/24 dev tcpcore1 && sudo ip -n demo link set tcpcore1 up
//! sudo ip netns exec demo socat TCP-LISTEN:7,fork EXEC:cat
//! ```
//!
//! `--help` lists every option.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use ixgbe_user::QueuePair;
use ixgbe_user::linux::TapDevice;
use ixgbe_user::linux::netns::{self, NetNamespace};
use tcp_core::Instant;
use tcp_core::stack::{Event, SocketHandle, Stack, StackConfig};
use tcp_core::wire::EthernetAddress;

const HELP: &str = "\
echo_client: a TCP echo client on tcp-core

USAGE:
    echo_client --in-memory [--bytes N] [MESSAGE...]
    echo_client [--tap NAME] [--ip ADDR/PREFIX] [--server ADDR:PORT] [--netns NAME] [--bytes N] [MESSAGE...]

OPTIONS:
    --in-memory          talk to a tcp-core echo server in this process over an in-memory
                         wire (no privileges needed)
    --tap NAME           TAP interface to create and use (root) [default: tcpcore1]
    --ip ADDR/PREFIX     the client's address on the TAP [default: 10.99.0.1/24]
    --server ADDR:PORT   the echo server [default: 10.99.0.2:7]
    --netns NAME         create network namespace NAME, move the kernel side of the TAP into
                         it with the server's address, and run a Linux echo server there
    --bytes N            after the messages, send N bytes of generated data [default: 0]
    --timeout SECONDS    give up after this long [default: 30]
    -h, --help           print this help

MESSAGES default to two short lines of text.
";

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echo_client: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let result = if options.in_memory { run_in_memory(&options) } else { run_on_tap(&options) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

// -----------------------------------------------------------------------------------------
// The application: a client that only talks to the Stack API.

/// Sends one message at a time and checks that the same bytes come back.
struct EchoClient {
    handle: SocketHandle,
    messages: VecDeque<Vec<u8>>,
    /// Bytes of the current message the stack has taken.
    sent: usize,
    /// What came back so far for the current message.
    echo: Vec<u8>,
    /// When the current message started, for the round-trip time.
    started: Instant,
    state: ClientState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Connecting,
    Echoing,
    /// All messages came back; we closed and wait for the server's FIN.
    Closing,
    Done,
}

impl EchoClient {
    fn connect(
        stack: &mut Stack,
        now: Instant,
        server: SocketAddrV4,
        messages: Vec<Vec<u8>>,
    ) -> Result<EchoClient, String> {
        let handle =
            stack.connect(now, server, None).map_err(|e| format!("connect to {server}: {e}"))?;
        println!("client: connecting to {server}");
        Ok(EchoClient {
            handle,
            messages: messages.into(),
            sent: 0,
            echo: Vec::new(),
            started: now,
            state: ClientState::Connecting,
        })
    }

    /// Reacts to the stack's events and moves data. Call after every input.
    fn act(&mut self, stack: &mut Stack, now: Instant) -> Result<(), String> {
        while let Some(event) = stack.poll_event() {
            match event {
                Event::Connected(h) if h == self.handle => {
                    let local = stack.tuple(h).map(|t| t.local.to_string()).unwrap_or_default();
                    println!("client: connected from {local} at t={now}");
                    self.state = ClientState::Echoing;
                    self.started = now;
                }
                Event::ReadClosed(h) if h == self.handle && self.state == ClientState::Closing => {
                    println!("client: the server closed its side too");
                }
                Event::Closed(h, reason)
                    if h == self.handle && self.state != ClientState::Closing =>
                {
                    return Err(format!("connection closed early: {reason}"));
                }
                _ => {}
            }
        }
        match self.state {
            ClientState::Echoing => self.echo_messages(stack, now),
            ClientState::Closing => {
                // Read the end of stream (the server's FIN), then release the handle.
                let mut buf = [0u8; 1];
                match stack.recv(self.handle, &mut buf) {
                    Ok(0) => {
                        stack.close(self.handle).map_err(|e| format!("close: {e}"))?;
                        self.state = ClientState::Done;
                        Ok(())
                    }
                    Ok(_) => Err("the server sent more than it was sent".into()),
                    Err(_) => Ok(()),
                }
            }
            ClientState::Connecting | ClientState::Done => Ok(()),
        }
    }

    fn echo_messages(&mut self, stack: &mut Stack, now: Instant) -> Result<(), String> {
        let mut buf = [0u8; 16 * 1024];
        while let Some(message) = self.messages.front() {
            if self.sent < message.len() {
                self.sent += stack
                    .send(self.handle, &message[self.sent..])
                    .map_err(|e| format!("send: {e}"))?;
            }
            loop {
                match stack.recv(self.handle, &mut buf) {
                    Ok(0) => return Err("the server closed before echoing everything".into()),
                    Ok(n) => self.echo.extend_from_slice(&buf[..n]),
                    Err(_) => break, // nothing more for now
                }
            }
            if self.echo.len() < message.len() {
                return Ok(()); // wait for more of the echo
            }
            if self.echo != *message {
                return Err(format!(
                    "echo differs: sent {} bytes, got {} bytes back that do not match",
                    message.len(),
                    self.echo.len()
                ));
            }
            let rtt = now - self.started;
            match std::str::from_utf8(message) {
                Ok(text) => println!("client: {text:?} came back after {rtt:?}"),
                Err(_) => println!(
                    "client: {} bytes of data came back intact after {rtt:?}",
                    message.len()
                ),
            }
            self.messages.pop_front();
            self.sent = 0;
            self.echo.clear();
            self.started = now;
        }
        // Everything came back: close our side (FIN) and wait for the server's.
        stack.shutdown_write(self.handle).map_err(|e| format!("shutdown: {e}"))?;
        self.state = ClientState::Closing;
        Ok(())
    }
}

// -----------------------------------------------------------------------------------------
// Running over a TAP device in real time.

fn run_on_tap(options: &Options) -> Result<(), String> {
    let tap = TapDevice::open(&options.tap)
        .map_err(|e| format!("TAP {}: {e} (are you root?)", options.tap))?;
    let namespace = match &options.netns {
        Some(name) => Some(setup_namespace(name, &tap, options.server, options.prefix_len)?),
        None => None,
    };
    let mac = EthernetAddress(tap.mac_address());
    let mut config = StackConfig::new(mac, options.ip, options.prefix_len, random_secret());
    config.mtu = tap.max_frame_len() - 14;
    let mut driver = TapDriver::new(Stack::new(config), tap);
    let deadline = std::time::Instant::now() + options.timeout;

    std::thread::scope(|scope| {
        // With --netns: a Linux echo server (the kernel's TCP, through std::net) inside it.
        let linux_server = namespace.as_ref().map(|ns| {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let server = options.server;
            let thread = scope
                .spawn(move || ns.run_inside(|| linux_echo_server(server, ready_tx, deadline)));
            let _ = ready_rx.recv_timeout(Duration::from_secs(5));
            thread
        });

        let now = driver.now();
        let mut client =
            EchoClient::connect(&mut driver.stack, now, options.server, options.messages())?;
        let mut failure = None;
        while client.state != ClientState::Done {
            if std::time::Instant::now() >= deadline {
                failure =
                    Some(format!("timed out after {:?} ({:?})", options.timeout, client.state));
                break;
            }
            if let Err(e) = driver.turn(|stack, now| client.act(stack, now)) {
                failure = Some(e);
                break;
            }
        }
        if failure.is_some() {
            let _ = driver.stack.abort(client.handle);
            let _ = driver.turn(|_, _| Ok(()));
        }
        if let Some(thread) = linux_server {
            match thread.join() {
                Ok(Ok(Ok(echoed))) => println!("linux echo server: echoed {echoed} bytes"),
                Ok(Ok(Err(e))) => println!("linux echo server: {e}"),
                Ok(Err(e)) => println!("linux echo server: could not enter the namespace: {e}"),
                Err(_) => println!("linux echo server: panicked"),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => {
                println!("client: done");
                Ok(())
            }
        }
    })
}

/// Creates namespace `name`, moves the kernel side of `tap` into it with `server`'s address.
fn setup_namespace(
    name: &str,
    tap: &TapDevice,
    server: SocketAddrV4,
    prefix_len: u8,
) -> Result<NetNamespace, String> {
    let ns = NetNamespace::create(name).map_err(|e| format!("namespace {name}: {e}"))?;
    netns::move_into(tap.name(), &ns).map_err(|e| e.to_string())?;
    let addr = format!("{}/{prefix_len}", server.ip());
    ns.ip(&["addr", "add", &addr, "dev", tap.name()]).map_err(|e| e.to_string())?;
    ns.ip(&["link", "set", tap.name(), "up"]).map_err(|e| e.to_string())?;
    println!("namespace {name}: kernel side of {} has {addr}", tap.name());
    Ok(ns)
}

/// An echo server on the Linux TCP stack: one connection, echoed until end of stream.
fn linux_echo_server(
    addr: SocketAddrV4,
    ready: std::sync::mpsc::Sender<()>,
    deadline: std::time::Instant,
) -> Result<u64, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = ready.send(());
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let left =
        deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16 * 1024];
    let mut echoed = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(echoed), // dropping the stream sends our FIN
            Ok(n) => {
                stream.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
                echoed += n as u64;
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// A stack attached to a TAP device, driven with the wall clock.
struct TapDriver {
    stack: Stack,
    tap: TapDevice,
    epoch: std::time::Instant,
}

impl TapDriver {
    fn new(stack: Stack, tap: TapDevice) -> TapDriver {
        TapDriver { stack, tap, epoch: std::time::Instant::now() }
    }

    /// tcp-core time is nanoseconds since an epoch of our choosing: here, driver creation.
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// One turn of the loop every embedder writes.
    fn turn(
        &mut self,
        mut app: impl FnMut(&mut Stack, Instant) -> Result<(), String>,
    ) -> Result<(), String> {
        // 1. Input: received frames, then timers that are due.
        let now = self.now();
        let stack = &mut self.stack;
        let received = self
            .tap
            .rx_burst(64, &mut |frame| stack.handle_frame(now, frame))
            .map_err(|e| e.to_string())?;
        if self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
        }
        // 2. The application reacts.
        app(&mut self.stack, now)?;
        // 3. Output: every frame the stack wants to send, built in place in a TAP buffer.
        let mut sent = 0;
        loop {
            let stack = &mut self.stack;
            let mut produced = false;
            let queued = self
                .tap
                .tx_one(&mut |buf| match stack.poll_transmit(now, buf) {
                    Some(len) => {
                        produced = true;
                        len
                    }
                    None => 0,
                })
                .map_err(|e| e.to_string())?;
            if !queued {
                // The TAP's batch is full: push it to the kernel and go on.
                self.tap.tx_flush().map_err(|e| e.to_string())?;
                continue;
            }
            if !produced {
                break;
            }
            sent += 1;
        }
        self.tap.tx_flush().map_err(|e| e.to_string())?;
        // 4. Nothing happened: sleep a little, but not past the stack's next deadline.
        if received == 0 && sent == 0 {
            let mut nap = Duration::from_millis(1);
            if let Some(deadline) = self.stack.poll_timeout() {
                nap = nap.min(Duration::from_nanos(
                    deadline.as_nanos().saturating_sub(self.now().as_nanos()),
                ));
            }
            std::thread::sleep(nap);
        }
        Ok(())
    }
}

/// The ISN and SYN-cookie secret: random per run, from the kernel.
fn random_secret() -> [u8; 16] {
    let mut secret = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut secret))
    {
        eprintln!("warning: /dev/urandom: {e}; using a fixed secret");
    }
    secret
}

// -----------------------------------------------------------------------------------------
// Running in memory: the client and a tcp-core echo server, joined by a wire, virtual time.

fn run_in_memory(options: &Options) -> Result<(), String> {
    let client_ip = Ipv4Addr::new(192, 0, 2, 1);
    let server_addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 7);
    let mut client =
        Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), client_ip, 24, [1; 16]));
    let mut server = Stack::new(StackConfig::new(
        EthernetAddress([2, 0, 0, 0, 0, 2]),
        *server_addr.ip(),
        24,
        [2; 16],
    ));
    let listener = server.listen(server_addr, 8).map_err(|e| format!("listen: {e}"))?;
    println!("in-memory wire, virtual time; a tcp-core echo server listens on {server_addr}");

    let mut now = Instant::ZERO;
    let mut echo = EchoClient::connect(&mut client, now, server_addr, options.messages())?;
    let mut accepted: Option<SocketHandle> = None;
    let mut backlog = Vec::new();
    let mut frame = vec![0u8; 1514];
    // Bounded: a healthy run needs a few thousand rounds.
    for _ in 0..1_000_000 {
        echo.act(&mut client, now)?;
        if echo.state == ClientState::Done {
            println!("client: done at virtual time {now}");
            return Ok(());
        }
        // The server: accept, echo, and close when the client has closed.
        while server.poll_event().is_some() {}
        if accepted.is_none() {
            accepted = server.accept(listener).ok().map(|(h, _)| h);
        }
        if let Some(h) = accepted {
            let mut buf = [0u8; 16 * 1024];
            while backlog.len() < 64 * 1024 {
                match server.recv(h, &mut buf) {
                    Ok(0) if backlog.is_empty() => {
                        let _ = server.close(h);
                        accepted = None;
                        break;
                    }
                    Ok(n @ 1..) => backlog.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            if let Ok(n) = server.send(h, &backlog) {
                backlog.drain(..n);
            }
        }
        // The wire: carry frames both ways.
        let mut moved = 0;
        while let Some(len) = client.poll_transmit(now, &mut frame) {
            server.handle_frame(now, &frame[..len]);
            moved += 1;
        }
        while let Some(len) = server.poll_transmit(now, &mut frame) {
            client.handle_frame(now, &frame[..len]);
            moved += 1;
        }
        // Virtual time: a little per busy round, or straight to the next timer when idle.
        now = if moved > 0 {
            now + Duration::from_micros(50)
        } else {
            let next = [client.poll_timeout(), server.poll_timeout()].into_iter().flatten().min();
            next.unwrap_or(now + Duration::from_millis(1)).max(now)
        };
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    Err(format!("the exchange did not finish ({:?})", echo.state))
}

// -----------------------------------------------------------------------------------------
// Command line.

struct Options {
    in_memory: bool,
    tap: String,
    ip: Ipv4Addr,
    prefix_len: u8,
    server: SocketAddrV4,
    netns: Option<String>,
    bytes: usize,
    timeout: Duration,
    texts: Vec<String>,
}

impl Options {
    /// `Ok(None)` means `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            in_memory: false,
            tap: "tcpcore1".into(),
            ip: Ipv4Addr::new(10, 99, 0, 1),
            prefix_len: 24,
            server: SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 2), 7),
            netns: None,
            bytes: 0,
            timeout: Duration::from_secs(30),
            texts: Vec::new(),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--in-memory" => options.in_memory = true,
                "--tap" => options.tap = value()?,
                "--ip" => {
                    let v = value()?;
                    let (ip, prefix) = v.split_once('/').unwrap_or((&v, "24"));
                    options.ip = ip.parse().map_err(|_| format!("bad address {ip:?}"))?;
                    options.prefix_len =
                        prefix.parse().ok().filter(|p| *p <= 32).ok_or("bad prefix length")?;
                }
                "--server" => {
                    options.server =
                        value()?.parse().map_err(|_| "bad server address (ADDR:PORT)")?
                }
                "--netns" => options.netns = Some(value()?),
                "--bytes" => options.bytes = value()?.parse().map_err(|_| "bad byte count")?,
                "--timeout" => {
                    options.timeout =
                        Duration::from_secs(value()?.parse().map_err(|_| "bad timeout")?)
                }
                flag if flag.starts_with("--") => return Err(format!("unknown option {flag:?}")),
                _ => options.texts.push(arg),
            }
        }
        Ok(Some(options))
    }

    /// The messages to echo: the texts given (or two defaults), then `--bytes` of data.
    fn messages(&self) -> Vec<Vec<u8>> {
        let mut messages: Vec<Vec<u8>> = if self.texts.is_empty() {
            vec![b"hello, tcp-core".to_vec(), b"is anyone there?".to_vec()]
        } else {
            self.texts.iter().map(|t| t.as_bytes().to_vec()).collect()
        };
        if self.bytes > 0 {
            messages.push((0..self.bytes).map(|i| (i % 251) as u8).collect());
        }
        messages
    }
}
