//! Shared harness of the `netpop_*` acceptance tests: a `netpop up --foreground` child with
//! a unique name and socket directory (always `netpop down` + SIGKILL on drop), an echo
//! server app in a child process (this test binary re-run with `--exact
//! echo_server_child`), a `tcp-core` peer on the far side of a `--wire unix:` socket, and
//! a small JSON reader for `netpop stat --json`.

#![allow(dead_code, unreachable_pub)]

mod streams;
#[allow(unused_imports)]
pub use streams::*;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowgroups::channel::client::Client;
use flowgroups::plane::unix_wire::UnixWirePeer;
use flowgroups::shm::process::wait_readable;
use tcp_core::stack::{SocketHandle, Stack, StackConfig};
use tcp_core::tcp::State;
use tcp_core::wire::EthernetAddress;

pub const NETPOP: &str = env!("CARGO_BIN_EXE_netpop");
pub const NETPOP_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
pub const ECHO_PORT: u16 = 7;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique scratch directory (removed on drop) and netpop name.
pub struct Scratch {
    pub dir: PathBuf,
    pub name: String,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{tag}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("np-test-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir, name }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.sock", self.name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `netpop up --foreground` in a child process.
pub struct Netpop {
    pub child: Child,
    pub name: String,
    pub dir: PathBuf,
    pub ready_line: String,
    pub log: mpsc::Receiver<String>,
}

impl Netpop {
    /// Starts netpop with `args` (name and socket dir are added) and waits for its ready
    /// line (at most 60 s).
    pub fn up(scratch: &Scratch, args: &[&str]) -> Netpop {
        let mut child = Command::new(NETPOP)
            .arg("up")
            .args(["--name", &scratch.name, "--socket-dir"])
            .arg(&scratch.dir)
            .arg("--foreground")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("netpop binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[netpop] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut np = Netpop {
            child,
            name: scratch.name.clone(),
            dir: scratch.dir.clone(),
            ready_line: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match np.log.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line.contains(" up: ") => {
                    np.ready_line = line;
                    return np;
                }
                Ok(_) => {}
                Err(_) => {
                    if let Ok(Some(status)) = np.child.try_wait() {
                        panic!("netpop up exited before it was ready: {status}");
                    }
                    assert!(Instant::now() < deadline, "netpop up not ready within 60 s");
                }
            }
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.sock", self.name))
    }

    /// Runs a client command (`stat`, `down`, `capture`) against this netpop.
    pub fn command(&self, cmd: &str, args: &[&str]) -> std::process::Output {
        Command::new(NETPOP)
            .arg(cmd)
            .args(["--name", &self.name, "--socket-dir"])
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn stat_json(&self) -> Json {
        let out = self.command("stat", &["--json"]);
        assert!(out.status.success(), "stat failed: {}", String::from_utf8_lossy(&out.stderr));
        Json::parse(&String::from_utf8_lossy(&out.stdout)).expect("stat --json is JSON")
    }

    /// Stat once the instances have published `accepts` accepted connections in total
    /// (they publish counters every few milliseconds, so the last ones may lag a little);
    /// gives up after 3 s and returns the last snapshot.
    pub fn stat_after_accepts(&self, accepts: u64) -> Json {
        let start = Instant::now();
        loop {
            let s = self.stat_json();
            if s.get("totals").get("accepts").u64() >= accepts
                || start.elapsed() > Duration::from_secs(3)
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stat_table(&self) -> String {
        String::from_utf8_lossy(&self.command("stat", &[]).stdout).into_owned()
    }

    /// `netpop down`, then waits for the process (bounded).
    pub fn down(&mut self) -> String {
        let out = self.command("down", &["--grace", "3"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        text
    }

    /// Pids of the kernel instances, from stat.
    pub fn instance_pids(&self) -> Vec<u32> {
        let s = self.stat_json();
        s.get("instances").array().iter().map(|i| i.get("pid").u64() as u32).collect()
    }
}

impl Drop for Netpop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.command("down", &["--grace", "1"]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// -------------------------------------------------------------------------------------
// Echo server app

const SERVER_SOCKET_ENV: &str = "NETPOP_TEST_SERVER_SOCKET";
const SERVER_PORT_ENV: &str = "NETPOP_TEST_SERVER_PORT";

/// Body of the `echo_server_child` entry point every test file defines: registers with
/// the plane named in the environment, listens, prints READY, and echoes every connection
/// on a thread of its own.
pub fn echo_server_main() {
    let Ok(socket) = std::env::var(SERVER_SOCKET_ENV) else { return };
    let port: u16 = std::env::var(SERVER_PORT_ENV).unwrap().parse().unwrap();
    let client = std::sync::Arc::new(Client::register(Path::new(&socket)).expect("register"));
    let listener = client.listen(port, 1024).expect("listen");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "\nREADY app {} home {}", client.app_id(), client.home()).unwrap();
        out.flush().unwrap();
    }
    // Acceptors hand each connection to a thread of its own, so long-lived streams never
    // keep short connections waiting in the accept queue.
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = std::sync::Arc::clone(&client);
            std::thread::spawn(move || {
                loop {
                    let Ok((s, _peer)) = client.accept(listener, true) else { continue };
                    let client = std::sync::Arc::clone(&client);
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 16 * 1024];
                        // Echo until the peer closes: 4 bytes for the short connections,
                        // long checksummed streams for the migration tests.
                        loop {
                            match client.recv(s, &mut buf, true) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if client.send(s, &buf[..n], true).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = client.close(s);
                    });
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

/// The echo server app in a child process (killed on drop).
pub struct EchoServer {
    pub child: Child,
    pub app_id: u32,
}

impl EchoServer {
    /// Re-runs this test binary's `echo_server_child` against `socket`.
    pub fn spawn(socket: &Path, port: u16) -> EchoServer {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--ignored", "--exact", "echo_server_child", "--nocapture", "--test-threads=1"])
            .env(SERVER_SOCKET_ENV, socket)
            .env(SERVER_PORT_ENV, port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("READY") => {
                    let app_id = line.split_whitespace().nth(2).unwrap().parse().unwrap();
                    // Keep draining so the child never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return EchoServer { child, app_id };
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("echo server did not become ready");
                }
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// -------------------------------------------------------------------------------------
// tcp-core peer over the unix wire

/// The far end of `--wire unix:PATH`: a tcp-core stack.
pub struct Peer {
    pub stack: Stack,
    sock: UnixStream,
    epoch: Instant,
    frame: Vec<u8>,
    pub frames_in: u64,
    pub frames_out: u64,
    pub tx_dropped: u64,
    /// TCP segments with RST received from netpop.
    pub resets_in: u64,
    /// Local ports of the connections those resets were for (the last 64).
    pub reset_ports: Vec<u16>,
    /// Local ports whose resets are counted apart, in `watched_resets`.
    pub watched: Vec<u16>,
    pub watched_resets: u64,
}

/// Outcome of a batch of connections.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub ok: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    pub elapsed: Duration,
    /// Local ports of the successful connections.
    pub ports: Vec<u16>,
}

enum Phase {
    Connecting,
    Sent,
}

struct Conn {
    handle: SocketHandle,
    phase: Phase,
    payload: [u8; 4],
    got: Vec<u8>,
    started: Instant,
}

/// Starts `netpop up --nic sim --wire unix:... --queues 2 --ip 10.0.0.2/24` plus `extra`
/// with the test as the wire's peer: binds the wire, accepts netpop's connection to it
/// while netpop starts, and returns both.
pub fn up_on_unix_wire(scratch: &Scratch, extra: &[&str]) -> (Netpop, Peer) {
    let wire_path = scratch.dir.join("wire.sock");
    let wire = Peer::bind(&wire_path);
    let wire_arg = format!("unix:{}", wire_path.display());
    let acceptor = std::thread::spawn(move || Peer::accept(&wire));
    let mut args =
        vec!["--nic", "sim", "--wire", &wire_arg, "--queues", "2", "--ip", "10.0.0.2/24"];
    args.extend_from_slice(extra);
    let np = Netpop::up(scratch, &args);
    (np, acceptor.join().unwrap())
}

impl Peer {
    /// Binds the unix wire at `path`; call [`Peer::accept`] after starting netpop.
    pub fn bind(path: &Path) -> UnixWirePeer {
        UnixWirePeer::bind(path).unwrap()
    }

    pub fn accept(listener: &UnixWirePeer) -> Peer {
        let sock = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut secret = [0u8; 16];
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut secret).unwrap();
        let mut config = StackConfig::new(EthernetAddress(PEER_MAC), PEER_IP, 24, secret);
        config.ephemeral_ports = (20000, 60999);
        Peer {
            stack: Stack::new(config),
            sock,
            epoch: Instant::now(),
            frame: vec![0u8; 2048],
            frames_in: 0,
            frames_out: 0,
            tx_dropped: 0,
            resets_in: 0,
            reset_ports: Vec::new(),
            watched: Vec::new(),
            watched_resets: 0,
        }
    }

    pub(crate) fn now(&self) -> tcp_core::Instant {
        tcp_core::Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Moves frames both ways once; true if anything moved.
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        let now = self.now();
        loop {
            match (&self.sock).read(&mut self.frame) {
                Ok(0) => break,
                Ok(n) => {
                    self.frames_in += 1;
                    moved = true;
                    if is_tcp_reset(&self.frame[..n]) {
                        self.resets_in += 1;
                        if self.reset_ports.len() == 64 {
                            self.reset_ports.remove(0);
                        }
                        let port = tcp_dst_port(&self.frame[..n]);
                        self.reset_ports.push(port);
                        self.watched_resets += u64::from(self.watched.contains(&port));
                    }
                    self.stack.handle_frame(now, &self.frame[..n]);
                }
                Err(_) => break,
            }
        }
        if self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
        }
        while let Some(n) = self.stack.poll_transmit(now, &mut self.frame) {
            moved = true;
            // One record per frame: a SEQPACKET write is all or nothing.
            match (&self.sock).write(&self.frame[..n]) {
                Ok(w) if w == n => self.frames_out += 1,
                _ => self.tx_dropped += 1,
            }
        }
        while self.stack.poll_event().is_some() {}
        moved
    }

    /// Puts everything the stack has to send on the wire, waiting for room in the socket
    /// instead of dropping (a burst must reach the model whole); reads nothing. Returns
    /// the frames written.
    pub fn flush_all(&mut self) -> usize {
        let now = self.now();
        let mut written = 0;
        while let Some(n) = self.stack.poll_transmit(now, &mut self.frame) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match (&self.sock).write(&self.frame[..n]) {
                    Ok(w) if w == n => break,
                    Ok(_) => panic!("a SEQPACKET record is written whole"),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "the wire took no frame for 10 s");
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(e) => panic!("writing to the wire: {e}"),
                }
            }
            self.frames_out += 1;
            written += 1;
        }
        written
    }

    /// Waits briefly for input (at most until the next stack timer, capped at 1 ms).
    pub fn idle(&self) {
        let cap = Duration::from_millis(1);
        let wait = self
            .stack
            .poll_timeout()
            .map(|t| {
                Duration::from_nanos(t.as_nanos().saturating_sub(self.now().as_nanos())).min(cap)
            })
            .unwrap_or(cap);
        let _ = wait_readable(&[self.sock.as_fd()], Some(wait));
    }

    /// Asserts that netpop serves 200 short echo connections on `port`, 16 at a time.
    pub fn assert_serves_200(&mut self, port: u16) {
        let served = self.short_connections(
            SocketAddrV4::new(NETPOP_IP, port),
            200,
            16,
            Duration::from_secs(5),
            Duration::from_secs(60),
            |_| None,
        );
        assert_eq!(served.failed, 0, "port {port}: {:?}", served.failures);
        assert_eq!(served.ok, 200, "port {port}");
    }

    /// Makes `total` short connections (connect, send 4 bytes, read the 4-byte echo,
    /// close) to `server`, `concurrency` at a time. `port_for(i)` may choose connection
    /// `i`'s local port (None: ephemeral). Every connection gets `per_conn` to finish.
    pub fn short_connections(
        &mut self,
        server: SocketAddrV4,
        total: usize,
        concurrency: usize,
        per_conn: Duration,
        deadline: Duration,
        mut port_for: impl FnMut(usize) -> Option<u16>,
    ) -> Report {
        let start = Instant::now();
        let mut report = Report::default();
        let mut active: Vec<Conn> = Vec::new();
        let mut next = 0usize;
        let fail = |report: &mut Report, why: &str| {
            report.failed += 1;
            *report.failures.entry(why.to_string()).or_default() += 1;
        };
        while report.ok + report.failed < total {
            if start.elapsed() > deadline {
                let left = total - report.ok - report.failed;
                report.failed += left;
                *report.failures.entry("deadline".into()).or_default() += left;
                break;
            }
            while active.len() < concurrency && next < total {
                let payload = (next as u32).to_be_bytes();
                let now = self.now();
                match self.stack.connect(now, server, port_for(next)) {
                    Ok(handle) => active.push(Conn {
                        handle,
                        phase: Phase::Connecting,
                        payload,
                        got: Vec::new(),
                        started: Instant::now(),
                    }),
                    Err(e) => fail(&mut report, &format!("connect: {e:?}")),
                }
                next += 1;
            }
            let moved = self.pump();
            let mut i = 0;
            while i < active.len() {
                let c = &mut active[i];
                let state = self.stack.state(c.handle);
                let mut finished: Option<Result<(), String>> = None;
                match (&c.phase, state) {
                    (_, Err(e)) => finished = Some(Err(format!("socket: {e:?}"))),
                    (Phase::Connecting, Ok(State::Established)) => {
                        if self.stack.send(c.handle, &c.payload) == Ok(4) {
                            c.phase = Phase::Sent;
                        } else {
                            finished = Some(Err("send".into()));
                        }
                    }
                    (Phase::Sent, Ok(_)) => {
                        let mut buf = [0u8; 16];
                        while let Ok(n) = self.stack.recv(c.handle, &mut buf) {
                            if n == 0 {
                                break;
                            }
                            c.got.extend_from_slice(&buf[..n]);
                        }
                        if c.got.len() >= 4 {
                            finished = Some(if c.got[..4] == c.payload {
                                Ok(())
                            } else {
                                Err("wrong echo".into())
                            });
                        }
                    }
                    (_, Ok(State::Closed)) => finished = Some(Err("closed".into())),
                    _ => {}
                }
                if finished.is_none() && c.started.elapsed() > per_conn {
                    finished = Some(Err("timeout".into()));
                }
                match finished {
                    None => i += 1,
                    Some(result) => {
                        let c = active.swap_remove(i);
                        match result {
                            Ok(()) => {
                                report.ok += 1;
                                if let Ok(t) = self.stack.tuple(c.handle) {
                                    report.ports.push(t.local.port());
                                }
                                let _ = self.stack.close(c.handle);
                            }
                            Err(why) => {
                                let _ = self.stack.abort(c.handle);
                                let _ = self.stack.close(c.handle);
                                fail(&mut report, &why);
                            }
                        }
                    }
                }
            }
            if !moved {
                self.idle();
            }
        }
        // Let the FINs and last ACKs out.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(300) {
            if !self.pump() {
                self.idle();
            }
        }
        report.elapsed = start.elapsed();
        report
    }

    /// Opens `n` connections to `server`, each sending 4 bytes and reading their echo, and
    /// keeps them open; returns the handles of those that got their echo.
    pub fn hold_connections(
        &mut self,
        server: SocketAddrV4,
        n: usize,
        timeout: Duration,
    ) -> Vec<SocketHandle> {
        let now = self.now();
        let mut pending: Vec<(SocketHandle, bool)> = (0..n)
            .filter_map(|_| self.stack.connect(now, server, None).ok())
            .map(|h| (h, false))
            .collect();
        let mut done = Vec::new();
        let start = Instant::now();
        while !pending.is_empty() && start.elapsed() < timeout {
            let moved = self.pump();
            pending.retain_mut(|(h, sent)| {
                match self.stack.state(*h) {
                    Ok(State::Established) if !*sent => {
                        *sent = self.stack.send(*h, b"hold") == Ok(4)
                    }
                    Ok(_) if *sent && self.stack.recv_queue_len(*h).unwrap_or(0) >= 4 => {
                        done.push(*h);
                        return false;
                    }
                    Err(_) | Ok(State::Closed) => return false,
                    _ => {}
                }
                true
            });
            if !moved {
                self.idle();
            }
        }
        done
    }

    /// Connections of `handles` that are still established.
    pub fn established(&self, handles: &[SocketHandle]) -> usize {
        handles.iter().filter(|h| self.stack.state(**h) == Ok(State::Established)).count()
    }

    /// Aborts and closes `handles`.
    pub fn release(&mut self, handles: &[SocketHandle]) {
        for h in handles {
            let _ = self.stack.abort(*h);
            let _ = self.stack.close(*h);
        }
        self.pump();
    }

    /// Keeps the peer's side of the wire serviced for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            if !self.pump() {
                self.idle();
            }
        }
    }
}

/// True for an IPv4 TCP segment with RST set.
pub fn is_tcp_reset(frame: &[u8]) -> bool {
    if frame.get(12..14) != Some(&[0x08, 0x00][..]) || frame.get(23) != Some(&6) {
        return false;
    }
    let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
    frame.get(14 + ihl + 13).is_some_and(|f| f & 0x04 != 0)
}

/// Destination port of an IPv4 TCP segment (0 if it is not one).
pub fn tcp_dst_port(frame: &[u8]) -> u16 {
    let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
    frame.get(14 + ihl + 2..14 + ihl + 4).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]))
}

/// Is this process root? (Privileged tests skip otherwise.)
pub fn skip_unless_root(test: &str) -> bool {
    if flowgroups::shm::process::effective_uid() != 0 {
        eprintln!("skipping {test}: needs root (TAP device, network namespace)");
        return true;
    }
    false
}

// -------------------------------------------------------------------------------------
// JSON (just enough for `netpop stat --json`)

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

static NULL: Json = Json::Null;

impl Json {
    pub fn parse(s: &str) -> Result<Json, String> {
        let b = s.as_bytes();
        let mut at = 0;
        let v = parse_value(b, &mut at)?;
        skip_ws(b, &mut at);
        if at != b.len() {
            return Err(format!("trailing data at {at}"));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(key).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn array(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => &[],
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => *n as u64,
            other => panic!("not a number: {other:?}"),
        }
    }

    pub fn f64(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            other => panic!("not a number: {other:?}"),
        }
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

fn skip_ws(b: &[u8], at: &mut usize) {
    while *at < b.len() && b[*at].is_ascii_whitespace() {
        *at += 1;
    }
}

fn parse_value(b: &[u8], at: &mut usize) -> Result<Json, String> {
    skip_ws(b, at);
    match b.get(*at) {
        Some(b'{') => {
            *at += 1;
            let mut m = BTreeMap::new();
            skip_ws(b, at);
            if b.get(*at) == Some(&b'}') {
                *at += 1;
                return Ok(Json::Obj(m));
            }
            loop {
                skip_ws(b, at);
                let Json::Str(k) = parse_value(b, at)? else { return Err("key".into()) };
                skip_ws(b, at);
                if b.get(*at) != Some(&b':') {
                    return Err(format!("expected : at {at}"));
                }
                *at += 1;
                let v = parse_value(b, at)?;
                m.insert(k, v);
                skip_ws(b, at);
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        return Ok(Json::Obj(m));
                    }
                    _ => return Err(format!("expected , or }} at {at}")),
                }
            }
        }
        Some(b'[') => {
            *at += 1;
            let mut v = Vec::new();
            skip_ws(b, at);
            if b.get(*at) == Some(&b']') {
                *at += 1;
                return Ok(Json::Arr(v));
            }
            loop {
                v.push(parse_value(b, at)?);
                skip_ws(b, at);
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b']') => {
                        *at += 1;
                        return Ok(Json::Arr(v));
                    }
                    _ => return Err(format!("expected , or ] at {at}")),
                }
            }
        }
        Some(b'"') => {
            *at += 1;
            let mut s = String::new();
            loop {
                match b.get(*at) {
                    Some(b'"') => {
                        *at += 1;
                        return Ok(Json::Str(s));
                    }
                    Some(b'\\') => {
                        let c = *b.get(*at + 1).ok_or("escape")?;
                        *at += 2;
                        match c {
                            b'n' => s.push('\n'),
                            b't' => s.push('\t'),
                            b'r' => s.push('\r'),
                            b'u' => {
                                let hex = std::str::from_utf8(b.get(*at..*at + 4).ok_or("\\u")?)
                                    .map_err(|e| e.to_string())?;
                                let code =
                                    u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                                s.push(char::from_u32(code).unwrap_or('?'));
                                *at += 4;
                            }
                            other => s.push(other as char),
                        }
                    }
                    Some(_) => {
                        let start = *at;
                        while *at < b.len() && b[*at] != b'"' && b[*at] != b'\\' {
                            *at += 1;
                        }
                        s.push_str(std::str::from_utf8(&b[start..*at]).map_err(|e| e.to_string())?);
                    }
                    None => return Err("unterminated string".into()),
                }
            }
        }
        Some(b't') if b[*at..].starts_with(b"true") => {
            *at += 4;
            Ok(Json::Bool(true))
        }
        Some(b'f') if b[*at..].starts_with(b"false") => {
            *at += 5;
            Ok(Json::Bool(false))
        }
        Some(b'n') if b[*at..].starts_with(b"null") => {
            *at += 4;
            Ok(Json::Null)
        }
        Some(_) => {
            let start = *at;
            while *at < b.len() && matches!(b[*at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
            {
                *at += 1;
            }
            std::str::from_utf8(&b[start..*at])
                .ok()
                .and_then(|t| t.parse().ok())
                .map(Json::Num)
                .ok_or_else(|| format!("bad value at {start}"))
        }
        None => Err("unexpected end".into()),
    }
}

/// Per-instance figures from a stat snapshot, for printing in test output.
pub fn summarize(stat: &Json) -> String {
    let mut s = String::new();
    for i in stat.get("instances").array() {
        s += &format!(
            "instance {} {}: rx {} tx {} accepts {} conn est {} total {} x-inst {} fwd {} ctrl {} moves {}/{} groups {} busy {:.1}%\n",
            i.get("index").u64(),
            i.get("state").str(),
            i.get("rx_packets").u64(),
            i.get("tx_packets").u64(),
            i.get("accepts").u64(),
            i.get("connections_established").u64(),
            i.get("connections_total").u64(),
            i.get("cross_instance_msgs").u64(),
            i.get("forwarded_packets").u64(),
            i.get("control_msgs").u64(),
            i.get("moves_in").u64(),
            i.get("moves_out").u64(),
            i.get("groups_owned").u64(),
            i.get("busy_pct").f64(),
        );
    }
    s
}
