//! Harness of the end-to-end tests (issue 5 "Acceptance"): unmodified Debian servers under
//! the shim on a live netpop, driven from a Linux peer namespace by curl and ab.
//!
//! Everything a test creates is owned by a value whose `Drop` removes it, so a failing
//! test leaves nothing behind: network namespaces, veth pairs (the TAP of `--wire tap` is
//! the netpop process's own and goes with it), the `netpop up` process, server process
//! groups, scratch directories. Names are unique per process and call; addresses are
//! used only inside the namespaces the tests create (and netpop's own, which exists only
//! inside netpop). Every wait is bounded.
//!
//! The tests need root (namespaces, TAP, AF_XDP) and the packages that
//! `scripts/test.sh` installs; without them they print `SKIPPED ...` and pass.
//!
//! netpop and the shim are built in the release profile by the harness itself (once per
//! test process; a no-op when up to date): the load runs here push tens of thousands of
//! connections through them, which an unoptimised build cannot do in CI time.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub mod json;

/// netpop's address in every test; the peer namespace is [`PEER_IP`].
pub const NETPOP_IP: &str = "10.0.0.2";
/// The Linux peer's address inside its namespace.
pub const PEER_IP: &str = "10.0.0.1";

/// The tests of one binary run one at a time: each drives a server with as many
/// connections as the machine can take, and two at once would measure each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` can be found (absolute path, or on PATH).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// True (after printing why) if `test` cannot run here: not root, or a tool is missing.
pub fn skip(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        println!("SKIPPED {test}: needs root (network namespaces, TAP, AF_XDP)");
        return true;
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        println!(
            "SKIPPED {test}: missing {} (scripts/test.sh installs them as root)",
            missing.join(", ")
        );
        return true;
    }
    false
}

/// Requests per ab run: `NETPOP_E2E_REQUESTS`, default 50,000.
pub fn ab_requests() -> u32 {
    std::env::var("NETPOP_E2E_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000)
}

/// A name unique to this process and call, at most 15 bytes (interface names).
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("npe{tag}{:x}{n:x}", std::process::id() % 0x10_0000)
}

// -------------------------------------------------------------------------------------
// Binaries

/// The release builds of `netpop` and `libnetpop_shim.so`.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub netpop: PathBuf,
    pub shim: PathBuf,
}

/// Builds (once per process) and returns the release binaries.
pub fn binaries() -> Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        // target/<profile>/deps/<test>-<hash> -> target
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().to_path_buf();
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--release", "-p", "flowgroups", "--bin", "netpop"])
            .args(["-p", "shim-posix", "--lib"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(status.success(), "building netpop and the shim (release) failed");
        let dir = target.join("release");
        let bins = Binaries { netpop: dir.join("netpop"), shim: dir.join("libnetpop_shim.so") };
        assert!(bins.netpop.exists() && bins.shim.exists(), "{bins:?} missing after the build");
        bins
    })
    .clone()
}

// -------------------------------------------------------------------------------------
// Commands

/// Runs `program args` with a time limit; returns its output (killed when over time).
pub fn run_bounded(program: &str, args: &[&str], limit: Duration) -> Output {
    let secs = format!("{}", limit.as_secs().max(1));
    Command::new("timeout")
        .args(["-k", "5", &secs, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs `program args` and panics with its output unless it succeeds.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run_bounded(program, args, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

// -------------------------------------------------------------------------------------
// Scratch directory

/// A directory for configuration, documents and sockets; removed on drop. World-readable
/// and traversable, so that a server that drops privileges (Apache's children as
/// www-data) still reaches its files.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(unique_name(tag));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` (mode 0644) and returns its path.
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deterministic bytes that do not repeat with a short period (a misplaced chunk in a
/// transfer changes the digest).
pub fn test_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// -------------------------------------------------------------------------------------
// Network namespace and links

/// A network namespace (deleted on drop, with every interface inside).
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn create() -> Namespace {
        let name = unique_name("ns");
        run_ok("ip", &["netns", "add", &name]);
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// `program args` inside the namespace, bounded by `limit`.
    pub fn exec(&self, program: &str, args: &[&str], limit: Duration) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str(), "timeout", "-k", "5"];
        let secs = format!("{}", limit.as_secs().max(1));
        full.push(&secs);
        full.push(program);
        full.extend_from_slice(args);
        Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }

    /// A `Command` that runs `program` inside the namespace (for long-running helpers).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name.as_str(), program]);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        run_quiet("ip", &["netns", "delete", &self.name]);
    }
}

/// A veth pair: `local` in the host namespace (no address: netpop drives it through
/// AF_XDP), `peer` in `ns` with [`PEER_IP`]. Deleted on drop.
pub struct Veth {
    pub local: String,
    pub peer: String,
}

impl Veth {
    pub fn create(ns: &Namespace, queues: u32) -> Veth {
        let (local, peer) = (unique_name("va"), unique_name("vb"));
        let q = queues.to_string();
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &local,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                &ns.name,
            ],
        );
        let v = Veth { local, peer };
        run_ok("ip", &["link", "set", &v.local, "up"]);
        ns.ip(&["link", "set", &v.peer, "up"]);
        ns.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", &v.peer]);
        // An AF_XDP receiver sees frames before anyone fills in checksums the sender left
        // to "hardware"; netpop checks them. Also keep segments MTU-sized.
        let out = ns.exec(
            "ethtool",
            &["-K", &v.peer, "tx", "off", "tso", "off", "gso", "off"],
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        run_quiet("ip", &["link", "delete", &self.local]);
    }
}

// -------------------------------------------------------------------------------------
// netpop

/// Which NIC a test's netpop uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nic {
    /// The 82599 model with a TAP wire whose kernel side is in the peer namespace.
    SimTap,
    /// AF_XDP on a veth whose peer is in the peer namespace.
    AfXdp,
}

/// A peer namespace wired to a running `netpop up --foreground` (everything torn down
/// on drop, netpop first).
pub struct Testbed {
    pub netpop: Netpop,
    pub veth: Option<Veth>,
    pub ns: Namespace,
    pub scratch: Scratch,
    pub bins: Binaries,
}

impl Testbed {
    /// netpop with `queues` instances on `nic`, and the peer namespace at [`PEER_IP`].
    pub fn new(tag: &str, nic: Nic, queues: u16) -> Testbed {
        Testbed::with_up_options(tag, nic, queues, &[])
    }

    /// [`Testbed::new`] with more `netpop up` options (e.g. `--socket-group`).
    pub fn with_up_options(tag: &str, nic: Nic, queues: u16, options: &[&str]) -> Testbed {
        let bins = binaries();
        let scratch = Scratch::new(tag);
        let ns = Namespace::create();
        let name = unique_name("np");
        let q = queues.to_string();
        let ip = format!("{NETPOP_IP}/24");
        let (netpop, veth) = match nic {
            Nic::SimTap => {
                let tap = unique_name("tp");
                let args = ["--nic", "sim", "--wire", &format!("tap:{tap}"), "--queues", &q];
                let np = Netpop::up(
                    &bins,
                    &scratch,
                    &name,
                    &[&args[..], &["--ip", &ip], options].concat(),
                );
                // The kernel side of the TAP becomes the peer's interface (the netpop
                // process keeps its descriptor across the move and deletes the TAP when
                // it exits).
                run_ok("ip", &["link", "set", &tap, "netns", &ns.name]);
                ns.ip(&["link", "set", &tap, "up"]);
                ns.ip(&["addr", "add", &format!("{PEER_IP}/24"), "dev", &tap]);
                (np, None)
            }
            Nic::AfXdp => {
                let veth = Veth::create(&ns, u32::from(queues));
                let nic = format!("afxdp:{}", veth.local);
                let args = ["--nic", nic.as_str(), "--queues", &q, "--ip", &ip];
                (Netpop::up(&bins, &scratch, &name, &[&args[..], options].concat()), Some(veth))
            }
        };
        Testbed { netpop, veth, ns, scratch, bins }
    }

    /// `netpop run -- program args` in its own process group, output in the scratch
    /// directory as `<log>.out`.
    pub fn spawn_under_shim(&self, log: &str, program: &str, args: &[&str]) -> Server {
        let out = std::fs::File::create(self.scratch.path(&format!("{log}.out"))).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(&self.bins.netpop);
        cmd.arg("run")
            .args(["--name", &self.netpop.name, "--socket-dir"])
            .arg(&self.scratch.dir)
            .args(["--shim"])
            .arg(&self.bins.shim)
            .args(["--required", "--", program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Server { child, name: program.to_string(), log: self.scratch.path(&format!("{log}.out")) }
    }

    /// Fetches `http://NETPOP_IP:port/path` from the peer namespace with curl into the
    /// scratch directory; returns the body.
    pub fn curl(&self, port: u16, path: &str) -> Vec<u8> {
        let url = format!("http://{NETPOP_IP}:{port}{path}");
        let file = self.scratch.path(&format!("fetched-{}", unique_name("f")));
        let out = self.ns.exec(
            "curl",
            &["-sS", "--fail", "-m", "60", "-o", file.to_str().unwrap(), &url],
            Duration::from_secs(70),
        );
        assert!(
            out.status.success(),
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let body = std::fs::read(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        body
    }

    /// ab from the peer namespace: `requests` requests, one per connection, `concurrency`
    /// at a time, bounded by `limit`.
    pub fn ab(
        &self,
        port: u16,
        path: &str,
        requests: u32,
        concurrency: u32,
        limit: Duration,
    ) -> Ab {
        let url = format!("http://{NETPOP_IP}:{port}{path}");
        let (n, c) = (requests.to_string(), concurrency.to_string());
        let start = Instant::now();
        let out = self.ns.exec("ab", &["-q", "-r", "-s", "10", "-n", &n, "-c", &c, &url], limit);
        Ab::parse(&out, start.elapsed())
    }
}

/// `netpop up --foreground` in a child process (`netpop down`, then SIGKILL, on drop).
pub struct Netpop {
    pub child: Child,
    pub name: String,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

impl Netpop {
    pub fn up(bins: &Binaries, scratch: &Scratch, name: &str, args: &[&str]) -> Netpop {
        let mut child = Command::new(&bins.netpop)
            .args(["up", "--name", name, "--socket-dir"])
            .arg(&scratch.dir)
            .arg("--foreground")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("netpop runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[netpop] {line}");
                let _ = tx.send(line);
            }
        });
        let mut np =
            Netpop { child, name: name.into(), dir: scratch.dir.clone(), bin: bins.netpop.clone() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(" up: ") => return np,
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

    /// Runs `netpop CMD` (stat, down, ...) against this netpop.
    pub fn command(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg(cmd)
            .args(["--name", &self.name, "--socket-dir"])
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn stat_json(&self) -> json::Json {
        let out = self.command("stat", &["--json"]);
        assert!(out.status.success(), "stat: {}", String::from_utf8_lossy(&out.stderr));
        json::Json::parse(&String::from_utf8_lossy(&out.stdout)).expect("stat --json is JSON")
    }

    pub fn stat_table(&self) -> String {
        String::from_utf8_lossy(&self.command("stat", &[]).stdout).into_owned()
    }

    /// Pids of the plane and the instances.
    pub fn pids(&self) -> Vec<u32> {
        let s = self.stat_json();
        let mut pids = vec![self.child.id()];
        pids.extend(s.get("instances").array().iter().map(|i| i.get("pid").u64() as u32));
        pids
    }
}

impl Drop for Netpop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.command("down", &["--grace", "2"]);
            let deadline = Instant::now() + Duration::from_secs(10);
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
// Servers

/// A server started under the shim, leader of its own process group (the whole group is
/// killed on drop).
pub struct Server {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the server process (not its group).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with a positive pid of our own child.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Waits up to `limit` for the server to exit; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Processes of the server's group that are still alive.
    pub fn group_members(&self) -> Vec<u32> {
        let pgid = self.pid();
        let mut members = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else { return members };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // state, ppid, pgrp
            if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
                && fields.first() != Some(&"Z")
            {
                members.push(pid);
            }
        }
        members
    }

    /// Waits until `ready` accepts the log or the group has at least `processes`
    /// members, up to `limit`.
    pub fn wait_ready(&mut self, limit: Duration, ready: impl Fn(&Server) -> bool) {
        let deadline = Instant::now() + limit;
        while !ready(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited at start-up ({status}):\n{}", self.name, self.log());
            }
            assert!(Instant::now() < deadline, "{} not ready:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = self.pid() as i32;
        // SAFETY: kill of our own child's process group (negative pid = group).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

// -------------------------------------------------------------------------------------
// ab

/// What ab reported.
#[derive(Clone, Debug, Default)]
pub struct Ab {
    pub complete: u64,
    pub failed: u64,
    pub non_2xx: u64,
    pub requests_per_s: f64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub elapsed: Duration,
    pub ok_exit: bool,
    pub text: String,
}

impl Ab {
    fn parse(out: &Output, elapsed: Duration) -> Ab {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |key: &str| -> Option<String> {
            text.lines()
                .find(|l| l.trim_start().starts_with(key))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        };
        let pct = |p: &str| -> u64 {
            text.lines()
                .find(|l| l.trim_start().starts_with(p))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ab {
            complete: field("Complete requests").and_then(|v| v.parse().ok()).unwrap_or(0),
            failed: field("Failed requests").and_then(|v| v.parse().ok()).unwrap_or(0),
            non_2xx: field("Non-2xx responses").and_then(|v| v.parse().ok()).unwrap_or(0),
            requests_per_s: field("Requests per second")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            p50_ms: pct("50%"),
            p99_ms: pct("99%"),
            elapsed,
            ok_exit: out.status.success(),
            text,
        }
    }

    /// One line for the test output.
    pub fn summary(&self) -> String {
        format!(
            "{} complete, {} failed, {} non-2xx, {:.0} req/s, p50 {} ms, p99 {} ms, {:.1?}",
            self.complete,
            self.failed,
            self.non_2xx,
            self.requests_per_s,
            self.p50_ms,
            self.p99_ms,
            self.elapsed
        )
    }

    /// Panics (with ab's output) unless every one of `requests` succeeded.
    pub fn assert_clean(&self, requests: u32, what: &str) {
        assert!(
            self.ok_exit
                && self.complete == u64::from(requests)
                && self.failed == 0
                && self.non_2xx == 0,
            "{what}: ab did not complete cleanly: {}\n{}",
            self.summary(),
            self.text
        );
    }
}

/// sha256 of a file's contents as `sha256sum` prints it.
pub fn sha256(data: &[u8], scratch: &Scratch) -> String {
    let p = scratch.path(&format!("digest-{}", unique_name("d")));
    std::fs::write(&p, data).unwrap();
    let out = run_ok("sha256sum", &[p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    out.split_whitespace().next().unwrap_or("").to_string()
}
