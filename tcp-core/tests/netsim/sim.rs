//! The simulator: two stacks joined by a two-way [`Link`], with virtual time, the
//! applications of [`crate::app`] on top, and the checks that must hold at every step.
//!
//! Driver loop (the call protocol of `Stack`): advance virtual time to the earliest of
//! the next frame arrival and the stacks' next timeouts; deliver every frame due with
//! `handle_frame`; call `handle_timeout` on a stack whose deadline passed; then let the
//! applications act, drain `poll_transmit` onto the link and drain `poll_event`, repeating
//! until nothing moves. Every run is bounded in simulated time and in steps, and fails
//! loudly (with the state of both sides) when it does not converge.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use tcp_core::stack::{Event, SocketHandle, Stack, StackConfig, StackCounters};
use tcp_core::tcp::{CloseReason, ConnectionStats, TcpConfig};
use tcp_core::wire::EthernetAddress;
use tcp_core::{Duration, Instant};

use crate::app::{Clients, Server, Workload, is_closing_state};
use crate::link::{Delivery, Link, LinkParams, LinkStats};
use crate::monitor::{Checks, Monitor};
use crate::rng::Rng;

pub(crate) const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub(crate) const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
const SERVER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
pub(crate) const SERVER_PORT: u16 = 8080;
const START: Instant = Instant::from_secs(1);

/// Everything a run depends on.
#[derive(Clone, Debug)]
pub(crate) struct SimConfig {
    pub(crate) seed: u64,
    /// The same impairments apply in both directions (each direction draws its own luck).
    pub(crate) link: LinkParams,
    pub(crate) client_tcp: TcpConfig,
    pub(crate) server_tcp: TcpConfig,
    pub(crate) workload: Workload,
    /// Simulated time the applications get to finish.
    pub(crate) time_limit: Duration,
    /// Driver iterations allowed in total.
    pub(crate) step_limit: u64,
    /// Give both stacks each other's MAC address up front, with a lifetime longer than
    /// any run, to take ARP out of a reproduction. Off by default: ARP requests and
    /// replies cross the impaired link like everything else.
    pub(crate) static_arp: bool,
    /// Wire checks beyond the default set.
    pub(crate) checks: Checks,
}

impl SimConfig {
    pub(crate) fn new(seed: u64, link: LinkParams, workload: Workload) -> SimConfig {
        SimConfig {
            seed,
            link,
            client_tcp: TcpConfig::default(),
            server_tcp: TcpConfig::default(),
            workload,
            time_limit: Duration::from_secs(3600),
            step_limit: 5_000_000,
            static_arp: false,
            checks: Checks::default(),
        }
    }
}

/// What a completed run measured.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// From the first connect until every application closed.
    pub(crate) transfer_time: Duration,
    /// From the first connect until both stacks freed every socket.
    pub(crate) teardown_time: Duration,
    pub(crate) up: LinkStats,
    pub(crate) down: LinkStats,
    pub(crate) client_counters: StackCounters,
    pub(crate) server_counters: StackCounters,
    /// Each client connection's statistics just before it closed.
    pub(crate) client_stats: Vec<ConnectionStats>,
    pub(crate) steps: u64,
}

/// The counters a frame with a flipped byte may land in (exactly one of them per frame).
fn corruption_drops(c: &StackCounters) -> u64 {
    c.ipv4_malformed
        + c.ipv4_bad_checksum
        + c.ipv4_not_for_us
        + c.ipv4_unknown_protocol
        + c.ipv4_fragments_dropped
        + c.icmp_malformed
        + c.udp_malformed
        + c.tcp_malformed
        + c.tcp_bad_checksum
}

#[derive(Debug)]
pub(crate) struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) now: Instant,
    pub(crate) client_stack: Stack,
    pub(crate) server_stack: Stack,
    /// Client → server.
    pub(crate) up: Link,
    /// Server → client.
    pub(crate) down: Link,
    pub(crate) clients: Clients,
    pub(crate) server: Server,
    monitor: Monitor,
    steps: u64,
    tx_buf: Vec<u8>,
    /// Print every frame (set `NETSIM_TRACE=1`; use with a single test).
    trace: bool,
}

/// How long static neighbour entries live: longer than any run's time limit.
const STATIC_ARP_LIFETIME: Duration = Duration::from_secs(4 * 3600);

fn make_stack(
    mac: EthernetAddress,
    ip: Ipv4Addr,
    mtu: usize,
    tcp: &TcpConfig,
    rng: &mut Rng,
    static_peer: Option<(Ipv4Addr, EthernetAddress)>,
) -> Stack {
    let mut secret = [0u8; 16];
    secret[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    secret[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let mut config = StackConfig::new(mac, ip, 24, secret);
    config.mtu = mtu;
    config.tcp = tcp.clone();
    if static_peer.is_some() {
        config.arp_entry_lifetime = STATIC_ARP_LIFETIME;
    }
    let mut stack = Stack::new(config);
    if let Some((peer_ip, peer_mac)) = static_peer {
        stack.add_neighbor(START, peer_ip, peer_mac);
    }
    stack
}

impl Sim {
    pub(crate) fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let peer = |ip, mac| cfg.static_arp.then_some((ip, mac));
        let mut client_stack = make_stack(
            CLIENT_MAC,
            CLIENT_IP,
            cfg.link.mtu,
            &cfg.client_tcp,
            &mut rng,
            peer(SERVER_IP, SERVER_MAC),
        );
        let mut server_stack = make_stack(
            SERVER_MAC,
            SERVER_IP,
            cfg.link.mtu,
            &cfg.server_tcp,
            &mut rng,
            peer(CLIENT_IP, CLIENT_MAC),
        );
        let up = Link::new(cfg.link.clone(), rng.fork());
        let down = Link::new(cfg.link.clone(), rng.fork());
        let server = Server::listen(&mut server_stack, SERVER_PORT, cfg.workload);
        let clients = Clients::connect(
            &mut client_stack,
            START,
            SocketAddrV4::new(SERVER_IP, SERVER_PORT),
            cfg.workload,
        );
        let monitor = Monitor::new(
            cfg.checks,
            vec![(CLIENT_IP, cfg.client_tcp.recv_buffer), (SERVER_IP, cfg.server_tcp.recv_buffer)],
        );
        Sim {
            tx_buf: vec![0; cfg.link.mtu + 9000],
            cfg,
            now: START,
            client_stack,
            server_stack,
            up,
            down,
            clients,
            server,
            monitor,
            steps: 0,
            trace: std::env::var_os("NETSIM_TRACE").is_some(),
        }
    }

    /// Runs the workload to the end and checks every property on the way: data intact
    /// both ways, every connection closes, every socket is freed after TIME-WAIT, no timer
    /// outlives its purpose. Panics with a description of both sides when one fails.
    pub(crate) fn run(mut self) -> Report {
        let limit = START + self.cfg.time_limit;
        self.run_until("transfer", limit, |s| s.clients.done() && s.server.done());
        let transfer_time = self.now - START;
        for (stack, side) in [(&self.client_stack, "client"), (&self.server_stack, "server")] {
            for (h, state) in stack.connections() {
                assert!(
                    is_closing_state(state),
                    "{side} {h:?} in {state} after both applications closed"
                );
            }
        }
        // Once both applications closed, what remains is FIN retransmission and TIME-WAIT.
        let tw = self.cfg.client_tcp.time_wait.max(self.cfg.server_tcp.time_wait);
        let freed_by = self.now + tw + Duration::from_secs(300);
        // A reset may end TIME-WAIT early (RFC 9293 §3.10.7.4); stale frames still on the
        // wire then meet no connection and draw resets, so wait for the wire to empty too.
        self.run_until("teardown", freed_by, |s| {
            s.client_stack.socket_count() == 0
                && s.server_stack.socket_count() == 0
                && s.up.is_idle()
                && s.down.is_idle()
        });
        let teardown_time = self.now - START;
        self.check_quiescent();
        let report = Report {
            transfer_time,
            teardown_time,
            up: self.up.stats.clone(),
            down: self.down.stats.clone(),
            client_counters: self.client_stack.counters().clone(),
            server_counters: self.server_stack.counters().clone(),
            client_stats: self.clients.conns.iter().filter_map(|c| c.final_stats).collect(),
            steps: self.steps,
        };
        // A stale duplicate that arrives after its connection was freed is rightly answered
        // with a reset (RFC 9293 §3.10.7.1); without loss, duplication or reordering there
        // are no stale segments, so no reset at all.
        let l = &self.cfg.link;
        let stale_possible = l.loss_ppm + l.duplicate_ppm + l.reorder_ppm + l.corrupt_ppm > 0;
        for (c, side) in [(&report.client_counters, "client"), (&report.server_counters, "server")]
        {
            assert_eq!(c.tx_no_buffer, 0, "{side}: frames lost for lack of a transmit buffer");
            if !stale_possible {
                assert_eq!(
                    c.tcp_resets_sent + c.tcp_no_listener_rst_sent,
                    0,
                    "{side} sent a reset: {c:?}"
                );
            }
            assert_eq!(c.tcp_no_socket_space, 0, "{side}");
        }
        for (l, dir) in [(&report.up, "up"), (&report.down, "down")] {
            assert_eq!(l.oversize, 0, "{dir}: frames larger than the MTU");
        }
        report
    }

    /// Drives the loop until `done` holds; panics past `deadline` or the step budget, or
    /// when nothing is in flight and no timer is pending (a stall).
    pub(crate) fn run_until(
        &mut self,
        phase: &str,
        deadline: Instant,
        done: impl Fn(&Sim) -> bool,
    ) {
        loop {
            self.settle();
            self.check_invariants();
            if done(self) {
                return;
            }
            let next = [
                self.up.next_arrival(),
                self.down.next_arrival(),
                self.client_stack.poll_timeout(),
                self.server_stack.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                panic!(
                    "{phase}: stalled, nothing in flight and no timer pending\n{}",
                    self.describe()
                );
            };
            assert!(next <= deadline, "{phase}: not done by {deadline:?}\n{}", self.describe());
            self.steps += 1;
            assert!(
                self.steps <= self.cfg.step_limit,
                "{phase}: more than {} steps (a timer that fires without effect?)\n{}",
                self.cfg.step_limit,
                self.describe()
            );
            self.now = self.now.max(next);
            self.advance_to_now();
        }
    }

    /// Delivers what arrived by `now` and fires the timers that are due.
    fn advance_to_now(&mut self) {
        let now = self.now;
        while let Some(d) = self.up.pop_arrived(now) {
            Self::deliver(&mut self.server_stack, &mut self.monitor, now, d, "server", self.trace);
        }
        while let Some(d) = self.down.pop_arrived(now) {
            Self::deliver(&mut self.client_stack, &mut self.monitor, now, d, "client", self.trace);
        }
        if self.client_stack.poll_timeout().is_some_and(|t| t <= now) {
            self.client_stack.handle_timeout(now);
        }
        if self.server_stack.poll_timeout().is_some_and(|t| t <= now) {
            self.server_stack.handle_timeout(now);
        }
    }

    fn deliver(
        stack: &mut Stack,
        monitor: &mut Monitor,
        now: Instant,
        d: Delivery,
        side: &str,
        trace: bool,
    ) {
        if trace {
            let mark = if d.corrupted { " (corrupted)" } else { "" };
            println!("{now:?} {side} receives {}{mark}", crate::monitor::summary(&d.frame));
        }
        let before = corruption_drops(stack.counters());
        stack.handle_frame(now, &d.frame);
        let rose = corruption_drops(stack.counters()) - before;
        if d.corrupted {
            assert_eq!(
                rose, 1,
                "{side}: a corrupted frame was not dropped as corrupt: {:02x?}",
                d.frame
            );
        } else {
            assert_eq!(rose, 0, "{side}: an intact frame was counted as corrupt: {:02x?}", d.frame);
            monitor.on_deliver(&d.frame);
        }
    }

    /// Applications, transmission and events until nothing moves at this instant.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut progress = self.clients.poll(&mut self.client_stack);
            progress |= self.server.poll(&mut self.server_stack);
            progress |= self.transmit();
            self.drain_events();
            if !progress {
                return;
            }
        }
        panic!("applications and stacks never went quiet at {:?}\n{}", self.now, self.describe());
    }

    fn transmit(&mut self) -> bool {
        let mut sent = false;
        let mtu = self.cfg.link.mtu;
        for (stack, link, side) in [
            (&mut self.client_stack, &mut self.up, "client"),
            (&mut self.server_stack, &mut self.down, "server"),
        ] {
            while let Some(n) = stack.poll_transmit(self.now, &mut self.tx_buf) {
                let frame = &self.tx_buf[..n];
                if self.trace {
                    println!("{:?} {side} sends {}", self.now, crate::monitor::summary(frame));
                }
                if let Err(e) = self.monitor.on_transmit(frame, mtu) {
                    panic!("{side} broke a wire invariant at {:?}: {e}", self.now);
                }
                link.send(self.now, frame);
                sent = true;
            }
        }
        sent
    }

    fn drain_events(&mut self) {
        for (stack, side) in
            [(&mut self.client_stack, "client"), (&mut self.server_stack, "server")]
        {
            while let Some(event) = stack.poll_event() {
                if let Event::Closed(h, reason) = event {
                    assert_eq!(
                        reason,
                        CloseReason::Normal,
                        "{side} {h:?} closed abnormally at {:?}",
                        self.now
                    );
                }
            }
        }
    }

    /// Invariants visible through the API at every step.
    fn check_invariants(&self) {
        let check = |stack: &Stack,
                     tcp: &TcpConfig,
                     handles: &mut dyn Iterator<Item = SocketHandle>,
                     side: &str| {
            for h in handles {
                let sq = stack.send_queue_len(h).expect("open handle");
                let rq = stack.recv_queue_len(h).expect("open handle");
                assert!(
                    sq <= tcp.send_buffer,
                    "{side} {h:?}: send queue {sq} > buffer {}",
                    tcp.send_buffer
                );
                assert!(
                    rq <= tcp.recv_buffer,
                    "{side} {h:?}: receive queue {rq} > buffer {}",
                    tcp.recv_buffer
                );
            }
        };
        check(&self.client_stack, &self.cfg.client_tcp, &mut self.clients.handles(), "client");
        check(&self.server_stack, &self.cfg.server_tcp, &mut self.server.handles(), "server");
    }

    /// After every socket is gone and the wire is empty: nothing to send, and the
    /// remaining timers (ARP and reassembly housekeeping) run out.
    fn check_quiescent(&mut self) {
        for _ in 0..64 {
            let next = [self.client_stack.poll_timeout(), self.server_stack.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { return };
            assert!(
                next <= self.now + STATIC_ARP_LIFETIME,
                "a timer {next:?} far in the future outlives every socket\n{}",
                self.describe()
            );
            self.now = self.now.max(next);
            self.client_stack.handle_timeout(self.now);
            self.server_stack.handle_timeout(self.now);
            for (stack, side) in
                [(&mut self.client_stack, "client"), (&mut self.server_stack, "server")]
            {
                assert_eq!(
                    stack.poll_transmit(self.now, &mut self.tx_buf),
                    None,
                    "idle {side} transmitted"
                );
            }
        }
        panic!("timers keep firing with no socket left\n{}", self.describe());
    }

    /// Both sides, for failure messages.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "seed {:#x} at {:?}, {} steps", self.cfg.seed, self.now, self.steps);
        for (stack, side) in [(&self.client_stack, "client"), (&self.server_stack, "server")] {
            let conns: Vec<_> = stack.connections().collect();
            let _ = writeln!(
                out,
                "{side}: {} sockets {conns:?}, next timeout {:?}",
                stack.socket_count(),
                stack.poll_timeout()
            );
            let nonzero: Vec<_> = stack.counters().iter().filter(|&(_, v)| v != 0).collect();
            let _ = writeln!(out, "{side} counters: {nonzero:?}");
        }
        for c in self.clients.conns.iter().filter(|c| !c.closed).take(8) {
            let stats = self.client_stack.connection_stats(c.handle).ok();
            let _ = writeln!(
                out,
                "client :{} closed={} received {}/{} eof={} stats={stats:?}",
                c.port, c.closed, c.rx.received, c.rx.expected_len, c.rx.eof
            );
        }
        for (h, c) in self.server.conns.iter().filter(|(_, c)| !c.closed).take(8) {
            let stats = self.server_stack.connection_stats(*h).ok();
            let _ = writeln!(
                out,
                "server for :{} closed={} received {}/{} eof={} stats={stats:?}",
                c.port, c.closed, c.rx.received, c.rx.expected_len, c.rx.eof
            );
        }
        let _ = writeln!(out, "link up: {:?}\nlink down: {:?}", self.up.stats, self.down.stats);
        out
    }
}
