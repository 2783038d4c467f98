//! The control plane's life: start-up (NIC, control segment, instances), the event loop
//! (registrations, operator requests, balancing, health) and an orderly shutdown.
//!
//! One thread runs the loop over poll(2): the listening socket, connections whose first
//! message has not arrived yet, registered apps (for hang-up), the instances' socketpair
//! ends (an instance that dies closes its end) and a signalfd for SIGTERM/SIGINT/SIGHUP.
//! Nothing here is on the packet path, so simplicity wins over throughput.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::balancer::BalancerPolicy;
use crate::channel::proto::{Errno, RegistrationMessage};
use crate::control::{
    ControlConfig, ControlLayout, ControlMessage, ControlSegment, InstanceState, SegmentState,
};
use crate::instance::plane_link::{PlaneMessage, recv_plane_message, send_capture_request};
use crate::shm::EventFd;
use crate::shm::process::{TerminationSignals, wait_readable};
use crate::shm::sys::monotonic_ns;
use crate::steering::Steering;

use super::PlaneError;
use super::admin::{self, AdminRequest};
use super::balance_loop::{BALANCE_INTERVAL, BalanceLoop};

/// How often the plane looks at the instances' replies while a flow group moves.
const MOVE_POLL: Duration = Duration::from_millis(1);
use super::config::{NicSpec, UpConfig, check_environment, format_mac};
use super::health::{self, PROBE_INTERVAL};
use super::nic::{Nic, RSS_KEY};
use super::registration::{Registrar, live_mask};
use super::spawn::{InstanceProc, random_secret};
use super::stat::{InstanceFacts, PlaneStat, StatSnapshot};

/// Listener entries in the control segment.
const LISTENERS: u32 = 256;
/// How long instances get to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default grace period between `Shutdown` and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long a new connection may take to send its first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_millis(500);

/// Where `netpop up` reports readiness: stdout always, and the launching process when
/// daemonised.
#[derive(Debug, Default)]
pub struct ReadyReport {
    /// The launcher's end of a socketpair (`--ready-fd`).
    pub launcher: Option<UnixStream>,
}

impl ReadyReport {
    fn ok(&mut self, line: &str) {
        println!("{line}");
        let _ = io::stdout().flush();
        if let Some(mut s) = self.launcher.take() {
            let _ = writeln!(s, "ok {line}");
        }
    }

    fn failed(&mut self, why: &str) {
        if let Some(mut s) = self.launcher.take() {
            let _ = writeln!(s, "error {why}");
        }
    }
}

/// Why the loop ended.
#[derive(Debug)]
enum StopReason {
    Signal(i32),
    Down { grace: Duration },
}

struct Plane {
    config: UpConfig,
    started: Instant,
    control: ControlSegment,
    nic: Nic,
    steering: Box<dyn Steering>,
    instances: Vec<InstanceProc>,
    registrar: Registrar,
    balance: BalanceLoop,
    socket_path: PathBuf,
    listener: UnixListener,
    pending: Vec<(UnixStream, Instant)>,
    down_waiters: Vec<UnixStream>,
    captures: Vec<PendingCapture>,
    next_capture_seq: u32,
    signals: TerminationSignals,
    stop: Option<StopReason>,
    next_tick: Instant,
    next_probe: Instant,
    probe_seq: u64,
    bad_control_messages: u64,
}

/// Runs `netpop up` in this process until `down` or a termination signal. Readiness is
/// reported through `ready` once registrations are accepted.
pub fn run_up(config: UpConfig, mut ready: ReadyReport) -> Result<(), PlaneError> {
    match start(config) {
        Ok(mut plane) => {
            ready.ok(&plane.ready_line());
            let result = plane.event_loop();
            plane.shutdown();
            result
        }
        Err(e) => {
            ready.failed(&e.to_string());
            Err(e)
        }
    }
}

/// Refuses to start a second netpop of the same name; removes a stale socket file.
pub fn claim_socket_path(path: &std::path::Path, name: &str) -> Result<(), PlaneError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(PlaneError::AlreadyUp(format!("netpop '{name}' ({})", path.display())));
        }
        std::fs::remove_file(path).map_err(PlaneError::io("removing a stale socket"))?;
    }
    Ok(())
}

/// Binds the registration socket at `path` with the owner group and mode the
/// configuration asks for. Those are applied to a socket bound under a temporary name and
/// only then renamed into place (rename(2) is atomic), so that nobody can connect while it
/// still has the creator's defaults, and an app that finds the socket can use it.
pub fn bind_control_socket(path: &Path, config: &UpConfig) -> Result<UnixListener, PlaneError> {
    let mode = config.socket_mode_to_apply();
    if config.socket_group.is_none() && mode.is_none() {
        return UnixListener::bind(path).map_err(PlaneError::io("binding the control socket"));
    }
    let mut staging = path.as_os_str().to_owned();
    staging.push(".new");
    let staging = PathBuf::from(staging);
    // Left over by a netpop of this name that died between bind and rename.
    match std::fs::remove_file(&staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(PlaneError::io("removing a stale control socket")(e));
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(&staging).map_err(PlaneError::io("binding the control socket"))?;
    let applied = apply_socket_access(&staging, config.socket_group, mode)
        .and_then(|()| std::fs::rename(&staging, path).map_err(|e| format!("renaming it: {e}")));
    if let Err(why) = applied {
        let _ = std::fs::remove_file(&staging);
        return Err(PlaneError::Config(format!("control socket {}: {why}", path.display())));
    }
    Ok(listener)
}

fn apply_socket_access(path: &Path, group: Option<u32>, mode: Option<u32>) -> Result<(), String> {
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            format!(
                "cannot give it to group {gid} (--socket-group): {e}; only root, or a member of \
                 that group, may"
            )
        })?;
    }
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set its mode to {mode:04o} (--socket-mode): {e}"))?;
    }
    Ok(())
}

fn start(config: UpConfig) -> Result<Plane, PlaneError> {
    check_environment(&config)?;
    // Block termination signals before any thread exists, so every thread inherits the
    // mask and the signals wait for the event loop's signalfd.
    let signals = TerminationSignals::install().map_err(PlaneError::io("signalfd"))?;
    std::fs::create_dir_all(&config.socket_dir)
        .map_err(PlaneError::io("creating the socket directory"))?;
    let socket_path = config.socket_path();
    claim_socket_path(&socket_path, &config.name)?;
    let capture_dir = config.capture_dir();
    std::fs::create_dir_all(&capture_dir)
        .map_err(PlaneError::io("creating the capture directory"))?;

    let nic = Nic::open(&config)?;
    let layout = ControlLayout::new(config.queues, config.groups, LISTENERS)
        .map_err(PlaneError::shm("control layout"))?;
    let control_config = ControlConfig {
        ip: config.ip.octets(),
        gateway: config.gateway.map_or([0; 4], |g| g.octets()),
        mac: nic.mac,
        mtu: config.mtu,
        prefix_len: config.prefix_len,
        balancer_policy: match config.policy {
            BalancerPolicy::Off => 0,
            BalancerPolicy::Idle => 1,
            BalancerPolicy::Live => 2,
        },
        steering: if matches!(config.nic, NicSpec::AfXdp { .. }) { 2 } else { 0 },
        reserved: [0; 5],
        rss_key: RSS_KEY,
    };
    let control =
        ControlSegment::create(&format!("netpop-{}-control", config.name), layout, &control_config)
            .map_err(PlaneError::shm("control segment"))?;
    let steering = nic.steering(&control)?;
    let balance = BalanceLoop::new(config.policy, config.groups)
        .map_err(|e| PlaneError::Config(format!("balancer: {e}")))?;

    let exe = std::env::current_exe().map_err(PlaneError::io("finding the netpop binary"))?;
    let secret = random_secret().map_err(PlaneError::io("reading /dev/urandom"))?;
    let doorbells = (0..config.queues)
        .map(|_| EventFd::new())
        .collect::<io::Result<Vec<EventFd>>>()
        .map_err(PlaneError::io("eventfd"))?;
    let mut instances = Vec::new();
    for index in 0..config.queues {
        let (child_nic, keep) = nic.child_nic(index)?;
        let core = config.cores.get(usize::from(index) % config.cores.len().max(1)).copied();
        let inst = InstanceProc::spawn(
            &exe,
            index,
            &control,
            &doorbells,
            child_nic,
            capture_dir.clone(),
            core,
            (config.rx_ring, config.tx_ring),
            secret,
        )?;
        drop::<Vec<OwnedFd>>(keep);
        inst.link.set_nonblocking(true).map_err(PlaneError::io("socketpair"))?;
        instances.push(inst);
    }
    wait_ready(&control, &mut instances, &signals)?;

    let listener = bind_control_socket(&socket_path, &config)?;
    listener.set_nonblocking(true).map_err(PlaneError::io("control socket"))?;
    control.header().state.store(SegmentState::Up as u32, Ordering::Release);
    let now = Instant::now();
    Ok(Plane {
        registrar: Registrar::new(config.app_layout()),
        config,
        started: now,
        control,
        nic,
        steering,
        instances,
        balance,
        socket_path,
        listener,
        pending: Vec::new(),
        down_waiters: Vec::new(),
        captures: Vec::new(),
        next_capture_seq: 1,
        signals,
        stop: None,
        next_tick: now + BALANCE_INTERVAL,
        next_probe: now + PROBE_INTERVAL,
        probe_seq: 0,
        bad_control_messages: 0,
    })
}

fn wait_ready(
    control: &ControlSegment,
    instances: &mut [InstanceProc],
    signals: &TerminationSignals,
) -> Result<(), PlaneError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some((index, why)) =
            health::check(instances, control, monotonic_ns()).into_iter().next()
        {
            return Err(PlaneError::Instance(format!("instance {index} failed to start: {why}")));
        }
        if instances.iter().all(|i| health::is_ready(control, i.index)) {
            return Ok(());
        }
        if let Ok(Some(sig)) = signals.take() {
            return Err(PlaneError::Instance(format!(
                "interrupted by signal {sig} during start-up"
            )));
        }
        if Instant::now() > deadline {
            let late: Vec<String> = instances
                .iter()
                .filter(|i| !health::is_ready(control, i.index))
                .map(|i| i.index.to_string())
                .collect();
            return Err(PlaneError::Instance(format!(
                "instance(s) {} did not report ready within {} s",
                late.join(", "),
                START_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `netpop capture` waiting for its instance to finish.
#[derive(Debug)]
struct PendingCapture {
    conn: UnixStream,
    request: AdminRequest,
    instance: u16,
    seq: u32,
    deadline: Instant,
}

/// What a readable descriptor in the poll set stands for.
#[derive(Clone, Copy, Debug)]
enum Source {
    Signals,
    Listener,
    Pending(usize),
    App(u32),
    InstanceLink(usize),
}

impl Plane {
    fn ready_line(&self) -> String {
        let c = &self.config;
        let wire = c.wire.as_ref().map(|w| format!(" (wire {w})")).unwrap_or_default();
        format!(
            "netpop {} up: {} instances, ip {}, mac {}, nic {}{}, {} flow groups, policy {}, socket {}",
            c.name,
            c.queues,
            c.ip_with_prefix(),
            format_mac(&self.nic.mac),
            c.nic,
            wire,
            c.groups,
            self.balance.describe_policy(),
            self.socket_path.display()
        )
    }

    fn event_loop(&mut self) -> Result<(), PlaneError> {
        while self.stop.is_none() {
            let now = Instant::now();
            let mut timeout = self.next_tick.saturating_duration_since(now);
            if self.balance.busy() {
                // A move waits on instance replies, which arrive on rings, not descriptors.
                timeout = timeout.min(MOVE_POLL);
            }
            let (ready, sources) = {
                let mut fds: Vec<BorrowedFd<'_>> =
                    vec![self.signals.as_fd(), self.listener.as_fd()];
                let mut sources = vec![Source::Signals, Source::Listener];
                for (n, (conn, _)) in self.pending.iter().enumerate() {
                    fds.push(conn.as_fd());
                    sources.push(Source::Pending(n));
                }
                for (app_id, fd) in self.registrar.watched() {
                    fds.push(fd);
                    sources.push(Source::App(app_id));
                }
                for (n, inst) in self.instances.iter().enumerate().filter(|(_, i)| !i.dead) {
                    fds.push(inst.link.as_fd());
                    sources.push(Source::InstanceLink(n));
                }
                (wait_readable(&fds, Some(timeout)).map_err(PlaneError::io("poll"))?, sources)
            };
            let mut finished_pending = Vec::new();
            let mut check_health = false;
            for (source, _) in sources.iter().zip(&ready).filter(|(_, r)| **r) {
                match *source {
                    Source::Signals => {
                        if let Ok(Some(sig)) = self.signals.take() {
                            self.stop = Some(StopReason::Signal(sig));
                        }
                    }
                    Source::Listener => self.accept_all(),
                    Source::Pending(n) => finished_pending.push(n),
                    Source::App(app_id) => {
                        if self.registrar.hung_up(app_id) {
                            self.registrar.detach(app_id, &mut self.instances);
                        }
                    }
                    Source::InstanceLink(n) => check_health |= self.read_link(n),
                }
            }
            // Highest index first so that earlier indices stay valid while removing.
            finished_pending.sort_unstable_by(|a, b| b.cmp(a));
            for n in finished_pending {
                if n < self.pending.len() {
                    let (conn, _) = self.pending.swap_remove(n);
                    self.first_message(conn);
                }
            }
            let now = Instant::now();
            self.pending.retain(|(_, deadline)| *deadline > now);
            self.expire_captures(now);
            if check_health {
                self.health();
            }
            if now >= self.next_tick {
                self.next_tick = now + BALANCE_INTERVAL;
                self.tick(now);
            } else if self.balance.busy() {
                self.pump_instance_messages(now);
            }
        }
        Ok(())
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((conn, _)) => {
                    if conn.set_nonblocking(true).is_ok() {
                        self.pending.push((conn, Instant::now() + FIRST_MESSAGE_TIMEOUT));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// Handles the first message of a connection: a registration or an operator request.
    fn first_message(&mut self, conn: UnixStream) {
        if conn.set_nonblocking(false).is_err()
            || conn.set_read_timeout(Some(FIRST_MESSAGE_TIMEOUT)).is_err()
            || conn.set_write_timeout(Some(Duration::from_secs(2))).is_err()
        {
            return;
        }
        let Ok(Some((msg, fds))) = admin::read_first_message(&conn) else { return };
        if admin::is_admin(&msg) {
            match AdminRequest::decode(&msg) {
                Some(req) => self.admin(conn, req, fds),
                None => {
                    let req = AdminRequest::Stat { json: false, groups: false };
                    let _ = admin::write_response(&conn, &req, libc::EINVAL, "malformed request");
                }
            }
            return;
        }
        drop(fds);
        match RegistrationMessage::decode(&msg) {
            Ok(RegistrationMessage::Register { pid }) => {
                if self.stop.is_some() {
                    self.registrar.refuse(&conn, Errno::ECONNREFUSED);
                    return;
                }
                if Registrar::prepare(&conn).is_err() {
                    return;
                }
                if let Err(e) = self.registrar.register(conn, pid, &mut self.instances) {
                    eprintln!("netpop: registration of pid {pid} failed: {e}");
                }
            }
            _ => self.registrar.refuse(&conn, Errno::EINVAL),
        }
    }

    fn admin(&mut self, conn: UnixStream, req: AdminRequest, fds: Vec<OwnedFd>) {
        match req {
            AdminRequest::Stat { json, groups } => {
                let snap = self.snapshot(groups);
                let body = if json { snap.to_json() } else { snap.to_table() };
                let _ = admin::write_response(&conn, &req, 0, &body);
            }
            AdminRequest::Down { grace_ms } => {
                let grace =
                    Duration::from_millis(u64::from(grace_ms)).min(Duration::from_secs(120));
                self.stop = Some(StopReason::Down { grace });
                self.down_waiters.push(conn);
            }
            AdminRequest::Capture { instance, count, timeout_ms } => {
                let refuse = |why: String| {
                    let _ = admin::write_response(&conn, &req, libc::EINVAL, &why);
                };
                let Some(out) = fds.into_iter().next() else {
                    return refuse("capture needs the output file's descriptor".into());
                };
                if count == 0 {
                    return refuse("capture count must be at least 1".into());
                }
                let Some(inst) = self.instances.get(usize::from(instance)) else {
                    return refuse(format!(
                        "no instance {instance} (this netpop has 0..{})",
                        self.instances.len().saturating_sub(1)
                    ));
                };
                if inst.dead {
                    return refuse(format!("instance {instance} is dead"));
                }
                let seq = self.next_capture_seq;
                self.next_capture_seq = self.next_capture_seq.wrapping_add(1).max(1);
                if let Err(e) = send_capture_request(&inst.link, count, seq, Some(out.as_fd())) {
                    return refuse(format!("cannot reach instance {instance}: {e}"));
                }
                // Wake it: the request arrives on its socket, which it polls when idle, but
                // the doorbell also covers a loop that sleeps in short naps.
                let _ = inst.doorbell.notify();
                let timeout = Duration::from_millis(u64::from(timeout_ms));
                self.captures.push(PendingCapture {
                    conn,
                    request: req,
                    instance,
                    seq,
                    deadline: Instant::now() + timeout,
                });
            }
        }
    }

    /// Reads the messages instance `n` sent on its socketpair; true if it hung up.
    fn read_link(&mut self, n: usize) -> bool {
        let Some(inst) = self.instances.get_mut(n) else { return false };
        let index = inst.index;
        let mut done = Vec::new();
        let hung_up = loop {
            match recv_plane_message(&mut inst.link) {
                Ok((PlaneMessage::CaptureDone { seq, frames, errno }, _)) => {
                    done.push((seq, frames, errno));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
                Err(_) => break true,
            }
        };
        for (seq, frames, errno) in done {
            self.finish_capture(index, seq, frames, errno);
        }
        hung_up
    }

    fn finish_capture(&mut self, instance: u16, seq: u32, frames: u32, errno: u32) {
        let Some(at) = self.captures.iter().position(|c| c.instance == instance && c.seq == seq)
        else {
            return;
        };
        let c = self.captures.swap_remove(at);
        let (status, body) = if errno == 0 {
            (0, format!("captured {frames} frame(s) of instance {instance}"))
        } else {
            let e = io::Error::from_raw_os_error(i32::try_from(errno).unwrap_or(libc::EIO));
            (
                libc::EIO,
                format!("capture on instance {instance} failed after {frames} frame(s): {e}"),
            )
        };
        let _ = admin::write_response(&c.conn, &c.request, status, &body);
    }

    fn expire_captures(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.captures.len() {
            let dead = self
                .instances
                .get(usize::from(self.captures[i].instance))
                .is_none_or(|inst| inst.dead);
            if self.captures[i].deadline <= now || dead {
                let c = self.captures.swap_remove(i);
                let why = if dead {
                    format!("instance {} died during the capture", c.instance)
                } else {
                    format!(
                        "timed out: instance {} saw fewer frames than asked for (the file \
                         holds those it saw)",
                        c.instance
                    )
                };
                let _ = admin::write_response(&c.conn, &c.request, libc::ETIMEDOUT, &why);
            } else {
                i += 1;
            }
        }
    }

    fn snapshot(&self, groups: bool) -> StatSnapshot {
        let facts: Vec<InstanceFacts> = self
            .instances
            .iter()
            .map(|i| InstanceFacts {
                pid: i.pid,
                dead: i.dead,
                control_msgs: i.control_sent.load(Ordering::Relaxed)
                    + i.control_received.load(Ordering::Relaxed),
            })
            .collect();
        let c = &self.config;
        let plane = PlaneStat {
            name: c.name.clone(),
            pid: std::process::id(),
            nic: match &c.wire {
                Some(w) => format!("{} (wire {w})", c.nic),
                None => c.nic.to_string(),
            },
            ip: c.ip_with_prefix(),
            mac: format_mac(&self.nic.mac),
            policy: self.balance.describe_policy(),
            steering: self.steering.kind().to_string(),
            apps: self.registrar.len(),
            apps_total: self.registrar.registered_total,
            uptime_s: self.started.elapsed().as_secs_f64(),
            balancer_rounds: self.balance.rounds,
            balance_moves: self.balance.balance_moves,
            failover_moves: self.balance.failover_moves,
            failed_moves: self.balance.failed_moves,
            completed_moves: self.balance.completed_moves,
            migrated_connections: self.balance.migrated_connections,
            aborted_moves: self.balance.aborted_moves,
            wire_drops: self.nic.wire_drops(),
        };
        StatSnapshot::take(&self.control, plane, &facts, groups, monotonic_ns())
    }

    fn health(&mut self) {
        let dead = health::check(&mut self.instances, &self.control, monotonic_ns());
        if !dead.is_empty() {
            self.registrar.announce_live_instances(live_mask(&self.instances));
        }
        for (index, why) in dead {
            eprintln!("netpop {}: instance {index} is dead: {why}", self.config.name);
            self.registrar.withdraw_instance(index);
            // Its listener ready counts are stale too.
            for l in self.control.listeners() {
                if let Some(r) = l.ready.get(usize::from(index)) {
                    r.store(0, Ordering::Release);
                }
            }
        }
    }

    /// Reads what the instances sent the plane and advances the flow-group moves.
    fn pump_instance_messages(&mut self, now: Instant) {
        let alive: Vec<bool> = self.instances.iter().map(|i| !i.dead).collect();
        let mut messages = Vec::new();
        for inst in &mut self.instances {
            while let Some(slot) = inst.receive() {
                match ControlMessage::decode(&slot, self.control.layout()) {
                    Ok(msg) => messages.push((inst.index, msg)),
                    Err(_) => self.bad_control_messages += 1,
                }
            }
        }
        for (from, msg) in messages {
            self.balance.on_message(
                from,
                msg,
                &self.control,
                self.steering.as_mut(),
                &mut self.instances,
                &alive,
                now,
            );
        }
        self.balance.check_moves(&self.control, &alive, now);
    }

    fn tick(&mut self, now: Instant) {
        self.pump_instance_messages(now);
        self.health();
        let alive: Vec<bool> = self.instances.iter().map(|i| !i.dead).collect();
        self.balance.round(&self.control, &alive, self.steering.as_mut(), &mut self.instances, now);
        if now >= self.next_probe {
            self.next_probe = now + PROBE_INTERVAL;
            self.probe_seq += 1;
            for inst in self.instances.iter_mut().filter(|i| !i.dead) {
                inst.send(ControlMessage::Heartbeat { seq: self.probe_seq });
            }
        }
    }

    /// Stops every instance (Shutdown, then SIGKILL after the grace period), releases the
    /// NIC and the socket, and answers whoever asked for `down`.
    fn shutdown(&mut self) {
        let grace = match self.stop {
            Some(StopReason::Down { grace }) => grace,
            _ => DEFAULT_GRACE,
        };
        if let Some(StopReason::Signal(sig)) = self.stop {
            eprintln!("netpop {}: signal {sig}, shutting down", self.config.name);
        }
        self.control.header().state.store(SegmentState::Stopping as u32, Ordering::Release);
        let _ = std::fs::remove_file(&self.socket_path);
        for inst in self.instances.iter_mut().filter(|i| !i.dead) {
            inst.send(ControlMessage::Shutdown);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.instances.iter_mut().any(|i| !i.dead && i.running())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (mut clean, mut killed) = (0, 0);
        for inst in &mut self.instances {
            if inst.dead {
                continue;
            }
            if inst.running() {
                inst.kill();
                killed += 1;
            } else {
                clean += 1;
            }
            if let Some(block) = self.control.instance(inst.index) {
                block.state.store(InstanceState::Dead as u32, Ordering::Release);
            }
        }
        self.nic.stop();
        let message = format!(
            "netpop {} down: {clean} instance(s) exited, {killed} killed after {} ms, {} already dead",
            self.config.name,
            grace.as_millis(),
            self.instances.len() - clean - killed
        );
        for conn in self.down_waiters.drain(..) {
            let _ = admin::write_response(&conn, &AdminRequest::Down { grace_ms: 0 }, 0, &message);
        }
        eprintln!("{message}");
    }
}
