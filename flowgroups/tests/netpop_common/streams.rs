//! Long-lived checksummed streams through the echo server app, driven by the tcp-core peer
//! while short connections keep a (skewed) load on: what live flow-group migration must
//! carry without losing, duplicating or reordering a byte.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use tcp_core::stack::SocketHandle;
use tcp_core::tcp::State;

use flowgroups::flowgroup::{FlowGroupConfig, flow_group_of};
use flowgroups::plane::nic::RSS_KEY;

use super::{ECHO_PORT, NETPOP_IP, PEER_IP, Peer};

/// Local ports (from `from` up) whose connections to the echo port land in `groups`
/// (with netpop's RSS key and 128 groups).
pub fn ports_in_groups(groups: &[u32], from: u16, count: usize) -> Vec<u16> {
    let cfg = FlowGroupConfig::new(128, RSS_KEY).unwrap();
    (from..61000)
        .filter(|&p| groups.contains(&flow_group_of(&cfg, PEER_IP, NETPOP_IP, p, ECHO_PORT)))
        .take(count)
        .collect()
}

/// The flow group of a connection from local port `port` to the echo port.
pub fn group_of_port(port: u16) -> u32 {
    let cfg = FlowGroupConfig::new(128, RSS_KEY).unwrap();
    flow_group_of(&cfg, PEER_IP, NETPOP_IP, port, ECHO_PORT)
}

/// Byte `k` of the stream seeded `seed` (the stream's local port): a lost, repeated or
/// reordered byte breaks the comparison with what comes back.
pub fn stream_byte(seed: u64, k: u64) -> u8 {
    let x = (k ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x >> 56) as u8 ^ (k as u8)
}

/// What the streams and the short connections did.
#[derive(Clone, Debug, Default)]
pub struct MixedReport {
    /// Streams opened.
    pub streams: usize,
    /// Streams whose every byte came back, in order, and that closed normally.
    pub completed: usize,
    /// Bytes sent over all streams.
    pub bytes_sent: u64,
    /// Echoed bytes received and checked.
    pub bytes_checked: u64,
    /// Why streams failed.
    pub stream_failures: BTreeMap<String, usize>,
    /// Short connections that got their echo.
    pub short_ok: usize,
    /// Short connections that failed, and why.
    pub short_failed: usize,
    pub short_failures: BTreeMap<String, usize>,
    /// Segments with RST netpop sent during the run, any connection.
    pub resets_in: u64,
    /// Of those, resets of the streams.
    pub stream_resets: u64,
    /// Local ports the resets were sent to (the last 64).
    pub reset_ports: Vec<u16>,
    /// Connect-to-echo times of the short connections started after the mark.
    pub short_latencies: Vec<Duration>,
}

struct Stream {
    h: SocketHandle,
    seed: u64,
    sent: u64,
    got: u64,
    closed: bool,
    failed: bool,
}

struct Short {
    h: SocketHandle,
    payload: [u8; 4],
    sent: bool,
    got: Vec<u8>,
    started: Instant,
    measured: bool,
}

/// Most echo bytes a stream may have outstanding.
const MAX_OUTSTANDING: u64 = 256 * 1024;

impl Peer {
    /// Opens one stream from each of `stream_ports` to `server` and, for `duration`,
    /// sends pattern bytes at up to `rate` bytes per second per stream while checking the
    /// echo; meanwhile keeps `concurrency` short connections (4 bytes echoed, then close)
    /// going from `short_ports`, each port used once. Then stops sending, waits for the
    /// rest of the echo (at most `drain`), closes the streams and lets the FINs through.
    #[allow(clippy::too_many_arguments)]
    pub fn streams_under_load(
        &mut self,
        server: SocketAddrV4,
        stream_ports: &[u16],
        rate: u64,
        duration: Duration,
        drain: Duration,
        short_ports: &[u16],
        concurrency: usize,
    ) -> MixedReport {
        self.streams_under_load_marked(
            server,
            stream_ports,
            rate,
            duration,
            drain,
            short_ports,
            concurrency,
            duration,
            &mut || {},
        )
    }

    /// [`Peer::streams_under_load`], calling `on_mark` once `mark` has passed (before the
    /// end of sending) and recording the latency of the short connections started after
    /// it: a warm-up, then a measured phase.
    #[allow(clippy::too_many_arguments)]
    pub fn streams_under_load_marked(
        &mut self,
        server: SocketAddrV4,
        stream_ports: &[u16],
        rate: u64,
        duration: Duration,
        drain: Duration,
        short_ports: &[u16],
        concurrency: usize,
        mark: Duration,
        on_mark: &mut dyn FnMut(),
    ) -> MixedReport {
        let mut marked = false;
        let mut report = MixedReport { streams: stream_ports.len(), ..MixedReport::default() };
        let resets_before = self.resets_in;
        let watched_before = self.watched_resets;
        self.watched = stream_ports.to_vec();
        // One connection first, so that ARP is resolved before a burst of SYNs would
        // overflow the peer's queue of packets waiting for it (and wait out an RTO).
        if let Some(&first) = stream_ports.first() {
            let h = self.stack.connect(self.now(), server, Some(first)).expect("stream connect");
            let t = Instant::now();
            while self.stack.state(h) == Ok(State::SynSent) && t.elapsed() < Duration::from_secs(5)
            {
                if !self.pump() {
                    self.idle();
                }
            }
            let _ = self.stack.abort(h);
            let _ = self.stack.close(h);
            self.run_for(Duration::from_millis(50));
        }
        let now = self.now();
        let mut streams: Vec<Stream> = stream_ports
            .iter()
            .map(|&p| Stream {
                h: self.stack.connect(now, server, Some(p)).expect("stream connect"),
                seed: u64::from(p),
                sent: 0,
                got: 0,
                closed: false,
                failed: false,
            })
            .collect();
        let mut shorts: Vec<Short> = Vec::new();
        let mut next_short = 0usize;
        let start = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        let fail = |map: &mut BTreeMap<String, usize>, why: String| {
            *map.entry(why).or_default() += 1;
        };
        loop {
            let elapsed = start.elapsed();
            let sending = elapsed < duration;
            if !marked && elapsed >= mark && sending {
                marked = true;
                on_mark();
            }
            let finished = streams.iter().all(|s| s.closed) && shorts.is_empty();
            if !sending && (elapsed > duration + drain || finished) {
                break;
            }
            // Short connections keep the skewed load on while the streams run.
            while sending && shorts.len() < concurrency && next_short < short_ports.len() {
                let payload = (next_short as u32).to_be_bytes();
                match self.stack.connect(self.now(), server, Some(short_ports[next_short])) {
                    Ok(h) => shorts.push(Short {
                        h,
                        payload,
                        sent: false,
                        got: Vec::new(),
                        started: Instant::now(),
                        measured: marked,
                    }),
                    Err(e) => {
                        report.short_failed += 1;
                        fail(&mut report.short_failures, format!("connect: {e:?}"));
                    }
                }
                next_short += 1;
            }
            let moved = self.pump();
            let allowed = (rate as f64 * elapsed.as_secs_f64()) as u64;
            for s in streams.iter_mut().filter(|s| !s.closed) {
                match self.stack.state(s.h) {
                    Ok(State::SynSent) | Ok(State::SynReceived) => continue,
                    Ok(State::Established) => {}
                    // CLOSE-WAIT: the server gave up on the stream before we closed it.
                    other => {
                        s.closed = true;
                        s.failed = true;
                        fail(&mut report.stream_failures, format!("state {other:?}"));
                        continue;
                    }
                }
                while sending && s.sent < allowed && s.sent - s.got < MAX_OUTSTANDING {
                    let n = (allowed - s.sent).min(MAX_OUTSTANDING - (s.sent - s.got));
                    let n = (n as usize).min(buf.len());
                    for (i, b) in buf[..n].iter_mut().enumerate() {
                        *b = stream_byte(s.seed, s.sent + i as u64);
                    }
                    match self.stack.send(s.h, &buf[..n]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => s.sent += k as u64,
                    }
                }
                while let Ok(n) = self.stack.recv(s.h, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Some(i) = buf[..n]
                        .iter()
                        .enumerate()
                        .position(|(i, &b)| b != stream_byte(s.seed, s.got + i as u64))
                    {
                        s.closed = true;
                        s.failed = true;
                        fail(
                            &mut report.stream_failures,
                            format!("corrupt at byte {}", s.got + i as u64),
                        );
                        break;
                    }
                    s.got += n as u64;
                }
                if !sending && !s.failed && s.got == s.sent {
                    let _ = self.stack.close(s.h);
                    s.closed = true;
                    report.completed += 1;
                }
            }
            let mut small = [0u8; 16];
            let mut i = 0;
            while i < shorts.len() {
                let c = &mut shorts[i];
                let mut done: Option<Result<(), String>> = None;
                match self.stack.state(c.h) {
                    Ok(State::Established) if !c.sent => {
                        c.sent = self.stack.send(c.h, &c.payload) == Ok(4);
                    }
                    Ok(State::Closed) | Err(_) => done = Some(Err("closed".into())),
                    _ => {}
                }
                if c.sent {
                    while let Ok(n) = self.stack.recv(c.h, &mut small) {
                        if n == 0 {
                            break;
                        }
                        c.got.extend_from_slice(&small[..n]);
                    }
                    if c.got.len() >= 4 {
                        done = Some(if c.got[..4] == c.payload {
                            Ok(())
                        } else {
                            Err("wrong echo".into())
                        });
                    }
                }
                if done.is_none() && c.started.elapsed() > Duration::from_secs(10) {
                    done = Some(Err("timeout".into()));
                }
                match done {
                    None => i += 1,
                    Some(r) => {
                        let c = shorts.swap_remove(i);
                        let _ = self.stack.close(c.h);
                        match r {
                            Ok(()) => {
                                report.short_ok += 1;
                                if c.measured {
                                    report.short_latencies.push(c.started.elapsed());
                                }
                            }
                            Err(why) => {
                                report.short_failed += 1;
                                fail(&mut report.short_failures, why);
                            }
                        }
                    }
                }
            }
            if !moved {
                self.idle();
            }
        }
        for s in &streams {
            report.bytes_sent += s.sent;
            report.bytes_checked += s.got;
            if !s.closed {
                fail(
                    &mut report.stream_failures,
                    format!("unfinished ({} of {} echoed)", s.got, s.sent),
                );
            }
        }
        for _ in &shorts {
            report.short_failed += 1;
            fail(&mut report.short_failures, "unfinished".into());
        }
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(300) {
            if !self.pump() {
                self.idle();
            }
        }
        report.resets_in = self.resets_in - resets_before;
        let n = (report.resets_in as usize).min(self.reset_ports.len());
        report.reset_ports = self.reset_ports[self.reset_ports.len() - n..].to_vec();
        report.stream_resets = self.watched_resets - watched_before;
        self.watched.clear();
        report
    }
}
