//! An echo server built on tcp-core: whatever a client sends comes back, until the client
//! closes. It shows the whole embedding of a sans-IO [`Stack`]: feed it frames and time,
//! react to its events, drain the frames it wants to send, sleep until the next deadline.
//!
//! Run it in one of two ways.
//!
//! **In memory, no privileges.** A tcp-core client in the same process talks to the server
//! over an in-memory Ethernet wire with a virtual clock, so the run is deterministic:
//!
//! ```text
//! cargo run -p tcp-core --example echo_server -- --in-memory
//! ```
//!
//! **On a TAP device, as root.** The server owns the user side of a TAP interface; Linux
//! programs on the kernel side are the clients. With `--netns` the example creates a network
//! namespace, moves the kernel side of the TAP into it and gives it the address `.2` of the
//! server's subnet, so nothing on the host changes:
//!
//! ```text
//! sudo cargo run -p tcp-core --example echo_server -- --tap tcpcore0 --netns tcpcore-echo
//! # in another terminal, any TCP client inside the namespace:
//! sudo ip netns exec tcpcore-echo nc 10.99.0.1 7
//! sudo ip netns exec tcpcore-echo python3 -c "import socket; s = socket.create_connection(('10.99.0.1', 7)); s.sendall(b'hi'); print(s.recv(10))"
//! ```
//!
//! The TAP disappears when the server exits; the namespace is deleted too when the server
//! exits normally (`--max-connections N`), but not on Ctrl-C: then run
//! `sudo ip netns delete tcpcore-echo`. Without `--netns`, configure the kernel side of the TAP
//! yourself while the server runs, for example:
//!
//! ```text
//! sudo ip netns add tcpcore-echo
//! sudo ip link set tcpcore0 netns tcpcore-echo
//! sudo ip -n tcpcore-echo addr add 10.99.0.2/24 dev tcpcore0
//! sudo ip -n tcpcore-echo link set tcpcore0 up
//! ```
//!
//! `--help` lists every option.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::Duration;

use ixgbe_user::QueuePair;
use ixgbe_user::linux::TapDevice;
use ixgbe_user::linux::netns::{self, NetNamespace};
use tcp_core::Instant;
use tcp_core::stack::{Event, ListenerHandle, SocketHandle, Stack, StackConfig};
use tcp_core::wire::EthernetAddress;

const HELP: &str = "\
echo_server: a TCP echo server on tcp-core

USAGE:
    echo_server --in-memory
    echo_server [--tap NAME] [--ip ADDR/PREFIX] [--port PORT] [--netns NAME] [--max-connections N]

OPTIONS:
    --in-memory          run server and a demo client in this process over an in-memory wire
                         (no privileges needed)
    --tap NAME           TAP interface to create and serve on (root) [default: tcpcore0]
    --ip ADDR/PREFIX     the server's address on the TAP [default: 10.99.0.1/24]
    --port PORT          TCP port to listen on [default: 7]
    --netns NAME         create network namespace NAME, move the kernel side of the TAP into it
                         and give it the subnet's .2 address; deleted on a normal exit
    --max-connections N  exit after N clients have closed [default: run until killed]
    -h, --help           print this help

TAP SETUP BY HAND (without --netns), while the server runs:
    ip netns add tcpcore-echo
    ip link set tcpcore0 netns tcpcore-echo
    ip -n tcpcore-echo addr add 10.99.0.2/24 dev tcpcore0
    ip -n tcpcore-echo link set tcpcore0 up
    ip netns exec tcpcore-echo nc 10.99.0.1 7
";

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echo_server: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let result = if options.in_memory { run_in_memory() } else { run_on_tap(&options) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

// -----------------------------------------------------------------------------------------
// The application: an echo service that only talks to the Stack API.

/// Every accepted connection and the bytes read from it that still have to go back.
struct EchoService {
    listener: ListenerHandle,
    clients: HashMap<SocketHandle, Client>,
    finished: usize,
}

struct Client {
    peer: SocketAddrV4,
    /// Read from the client, not yet accepted by `send`.
    pending: VecDeque<u8>,
    echoed: u64,
}

/// How much the service reads from one client before it has sent that back (backpressure:
/// a client that does not read its echoes eventually stops being read).
const MAX_PENDING: usize = 64 * 1024;

impl EchoService {
    fn listen(stack: &mut Stack, addr: SocketAddrV4) -> Result<EchoService, String> {
        let listener = stack.listen(addr, 64).map_err(|e| format!("listen on {addr}: {e}"))?;
        Ok(EchoService { listener, clients: HashMap::new(), finished: 0 })
    }

    /// Reacts to one event from the stack.
    fn on_event(&mut self, stack: &mut Stack, event: Event) {
        match event {
            Event::Acceptable(listener) if listener == self.listener => {
                while let Ok((handle, peer)) = stack.accept(listener) {
                    println!("server: connection from {peer}");
                    let client = Client { peer, pending: VecDeque::new(), echoed: 0 };
                    self.clients.insert(handle, client);
                    // Data may have arrived with the handshake; serve it now.
                    self.serve(stack, handle);
                }
            }
            Event::Readable(handle) | Event::Writable(handle) | Event::ReadClosed(handle) => {
                self.serve(stack, handle)
            }
            Event::Closed(handle, reason) => {
                if let Some(client) = self.clients.remove(&handle) {
                    println!(
                        "server: {} gone ({reason}) after {} bytes",
                        client.peer, client.echoed
                    );
                    let _ = stack.close(handle);
                    self.finished += 1;
                }
            }
            _ => {}
        }
    }

    /// Moves bytes from the client's receive side to its send side until one of them blocks;
    /// closes the connection once the client finished sending and everything went back.
    fn serve(&mut self, stack: &mut Stack, handle: SocketHandle) {
        let Some(client) = self.clients.get_mut(&handle) else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            // First send back what is waiting; read more only when there is room.
            let (head, _) = client.pending.as_slices();
            if !head.is_empty() {
                match stack.send(handle, head) {
                    Ok(0) => return, // send buffer full: wait for Event::Writable
                    Ok(n) => {
                        client.pending.drain(..n);
                        client.echoed += n as u64;
                        continue;
                    }
                    Err(e) => {
                        println!("server: {}: send failed: {e}", client.peer);
                        return;
                    }
                }
            }
            let room = MAX_PENDING - client.pending.len();
            match stack.recv(handle, &mut buf[..room.min(16 * 1024)]) {
                Ok(0) => {
                    // End of stream and nothing left to echo: close our side too (FIN).
                    println!("server: {} finished, {} bytes echoed", client.peer, client.echoed);
                    let _ = stack.close(handle);
                    self.clients.remove(&handle);
                    self.finished += 1;
                    return;
                }
                Ok(n) => client.pending.extend(&buf[..n]),
                Err(_) => return, // nothing to read yet (or the connection failed: Closed follows)
            }
        }
    }
}

// -----------------------------------------------------------------------------------------
// Running over a TAP device in real time.

fn run_on_tap(options: &Options) -> Result<(), String> {
    let tap = TapDevice::open(&options.tap)
        .map_err(|e| format!("TAP {}: {e} (are you root?)", options.tap))?;
    // The namespace (if any) must outlive the TAP descriptor, so it is declared first and
    // dropped last.
    let _namespace = match &options.netns {
        Some(name) => Some(setup_namespace(name, &tap, options.ip, options.prefix_len)?),
        None => None,
    };
    let mac = EthernetAddress(tap.mac_address());
    let mut config = StackConfig::new(mac, options.ip, options.prefix_len, random_secret());
    config.mtu = tap.max_frame_len() - 14;
    let mut stack = Stack::new(config);
    let addr = SocketAddrV4::new(options.ip, options.port);
    let mut service = EchoService::listen(&mut stack, addr)?;
    println!("echo server on {addr}, TAP {} (MAC {mac:?})", tap.name());
    if let Some(ns) = &options.netns {
        println!("try: ip netns exec {ns} nc {} {}", options.ip, options.port);
    }

    let mut driver = TapDriver::new(stack, tap);
    loop {
        driver.turn(|stack, event| service.on_event(stack, event))?;
        if options.max_connections.is_some_and(|max| service.finished >= max) {
            println!("served {} connections, exiting", service.finished);
            return Ok(());
        }
    }
}

/// Creates namespace `name`, moves the kernel side of `tap` into it and addresses it.
fn setup_namespace(
    name: &str,
    tap: &TapDevice,
    ip: Ipv4Addr,
    prefix_len: u8,
) -> Result<NetNamespace, String> {
    let peer = peer_address(ip);
    let ns = NetNamespace::create(name).map_err(|e| format!("namespace {name}: {e}"))?;
    netns::move_into(tap.name(), &ns).map_err(|e| e.to_string())?;
    ns.ip(&["addr", "add", &format!("{peer}/{prefix_len}"), "dev", tap.name()])
        .map_err(|e| e.to_string())?;
    ns.ip(&["link", "set", tap.name(), "up"]).map_err(|e| e.to_string())?;
    println!("namespace {name}: kernel side of {} has {peer}/{prefix_len}", tap.name());
    Ok(ns)
}

/// The `.2` address of the subnet of `ip` (or `.1` if the server itself is `.2`).
fn peer_address(ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, d] = ip.octets();
    Ipv4Addr::new(a, b, c, if d == 2 { 1 } else { 2 })
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
    fn turn(&mut self, mut on_event: impl FnMut(&mut Stack, Event)) -> Result<(), String> {
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
        // 2. The application reacts to what happened.
        while let Some(event) = self.stack.poll_event() {
            on_event(&mut self.stack, event);
        }
        // 3. Output: every frame the stack wants to send, built in place in a TAP buffer.
        let now = self.now();
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
// Running in memory: the server and a demo client, joined by a wire, with virtual time.

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn run_in_memory() -> Result<(), String> {
    let mut server =
        Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), SERVER_IP, 24, [1; 16]));
    let mut client =
        Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 2]), CLIENT_IP, 24, [2; 16]));
    let server_addr = SocketAddrV4::new(SERVER_IP, 7);
    let mut service = EchoService::listen(&mut server, server_addr)?;
    println!("echo server on {server_addr} (in-memory wire, virtual time)");

    let messages: Vec<Vec<u8>> = vec![
        b"hello, tcp-core".to_vec(),
        b"a second line".to_vec(),
        (0..1024 * 1024).map(|i| (i % 251) as u8).collect(),
    ];
    let mut demo = DemoClient::connect(&mut client, Instant::ZERO, server_addr, messages)?;
    let mut now = Instant::ZERO;
    let mut frame = vec![0u8; 1514];
    let mut frames = 0u64;
    // Bounded: a healthy run needs a few thousand rounds.
    for _ in 0..1_000_000 {
        demo.act(&mut client)?;
        while let Some(event) = server.poll_event() {
            service.on_event(&mut server, event);
        }
        if demo.done && service.clients.is_empty() {
            println!("done: {frames} frames on the wire, virtual time {now}");
            return Ok(());
        }
        // The wire: carry frames both ways until both stacks are quiet.
        let mut moved = 0;
        while let Some(len) = client.poll_transmit(now, &mut frame) {
            server.handle_frame(now, &frame[..len]);
            moved += 1;
        }
        while let Some(len) = server.poll_transmit(now, &mut frame) {
            client.handle_frame(now, &frame[..len]);
            moved += 1;
        }
        frames += moved;
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
    Err("the demo did not finish".into())
}

/// A scripted client: sends each message, waits for its echo, checks it, then closes.
struct DemoClient {
    handle: SocketHandle,
    messages: VecDeque<Vec<u8>>,
    sent: usize,
    echo: Vec<u8>,
    done: bool,
}

impl DemoClient {
    fn connect(
        stack: &mut Stack,
        now: Instant,
        server: SocketAddrV4,
        messages: Vec<Vec<u8>>,
    ) -> Result<DemoClient, String> {
        let handle = stack.connect(now, server, None).map_err(|e| format!("connect: {e}"))?;
        Ok(DemoClient { handle, messages: messages.into(), sent: 0, echo: Vec::new(), done: false })
    }

    fn act(&mut self, stack: &mut Stack) -> Result<(), String> {
        while let Some(event) = stack.poll_event() {
            match event {
                Event::Connected(_) => println!("client: connected to the server"),
                Event::Closed(_, reason) => {
                    println!("client: connection closed ({reason})");
                    self.done = true;
                }
                _ => {}
            }
        }
        if self.done {
            return Ok(());
        }
        let Some(message) = self.messages.front() else { return Ok(()) };
        if self.sent < message.len() {
            self.sent += stack.send(self.handle, &message[self.sent..]).unwrap_or(0);
        }
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = stack.recv(self.handle, &mut buf) {
            self.echo.extend_from_slice(&buf[..n]);
        }
        if self.echo.len() < message.len() {
            return Ok(());
        }
        if self.echo != *message {
            return Err("client: the echo differs from what was sent".into());
        }
        match std::str::from_utf8(message) {
            Ok(text) => println!(
                "client: sent {text:?}, got {:?} back",
                String::from_utf8_lossy(&self.echo)
            ),
            Err(_) => println!(
                "client: sent {} bytes of binary data, got the same {} bytes back",
                message.len(),
                self.echo.len()
            ),
        }
        self.messages.pop_front();
        self.sent = 0;
        self.echo.clear();
        if self.messages.is_empty() {
            println!("client: all echoes match; closing");
            stack.close(self.handle).map_err(|e| format!("close: {e}"))?;
            self.done = true;
        }
        Ok(())
    }
}

// -----------------------------------------------------------------------------------------
// Command line.

struct Options {
    in_memory: bool,
    tap: String,
    ip: Ipv4Addr,
    prefix_len: u8,
    port: u16,
    netns: Option<String>,
    max_connections: Option<usize>,
}

impl Options {
    /// `Ok(None)` means `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            in_memory: false,
            tap: "tcpcore0".into(),
            ip: Ipv4Addr::new(10, 99, 0, 1),
            prefix_len: 24,
            port: 7,
            netns: None,
            max_connections: None,
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
                "--port" => options.port = value()?.parse().map_err(|_| "bad port")?,
                "--netns" => options.netns = Some(value()?),
                "--max-connections" => {
                    options.max_connections = Some(value()?.parse().map_err(|_| "bad count")?)
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(options))
    }
}
