//! Two connections wired back to back through a lossy, reordering in-memory link.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::super::*;
use crate::tcp::config::{CongestionAlgorithm, TcpConfig};
use crate::time::Duration;

/// A deterministic xorshift generator for loss and reordering decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A segment in flight: the data is copied, as on a wire.
struct InFlight {
    arrival: Instant,
    repr: TcpRepr<'static>,
    payload: Vec<u8>,
}

struct Link {
    queue: VecDeque<InFlight>,
}

pub(super) struct Pair {
    a: Connection,
    b: Connection,
    a_to_b: Link,
    b_to_a: Link,
    now: Instant,
    rng: Rng,
    loss_percent: u64,
    reorder_percent: u64,
    delay: Duration,
}

fn endpoint_params(local: u16, remote: u16, iss: u32) -> ConnectionParams {
    ConnectionParams {
        tuple: FourTuple {
            local: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), local),
            remote: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), remote),
        },
        iss: SeqNumber(iss),
        ts_offset: iss.wrapping_mul(7),
    }
}

impl Pair {
    pub(super) fn new(cfg: &TcpConfig, loss_percent: u64, reorder_percent: u64, seed: u64) -> Pair {
        let mut a = Connection::connect(cfg, endpoint_params(1000, 80, 0xffff_f000), Instant::ZERO);
        let syn = a.poll_transmit(Instant::ZERO, 1460).expect("SYN");
        let syn = TcpRepr { payload: &[], ..syn };
        let b = Connection::accept_syn(cfg, endpoint_params(80, 1000, 77), &syn, Instant::ZERO);
        Pair {
            a,
            b,
            a_to_b: Link { queue: VecDeque::new() },
            b_to_a: Link { queue: VecDeque::new() },
            now: Instant::ZERO,
            rng: Rng(seed),
            loss_percent,
            reorder_percent,
            delay: Duration::from_millis(5),
        }
    }

    fn transmit(
        conn: &mut Connection,
        link: &mut Link,
        now: Instant,
        rng: &mut Rng,
        loss: u64,
        reorder: u64,
        delay: Duration,
    ) {
        while let Some(seg) = conn.poll_transmit(now, 1460) {
            let payload = seg.payload.to_vec();
            let repr = TcpRepr { payload: &[], ..seg };
            if rng.chance(loss) {
                continue;
            }
            let extra = if rng.chance(reorder) { Duration::from_millis(3) } else { Duration::ZERO };
            let item = InFlight { arrival: now + delay + extra, repr, payload };
            let pos = link
                .queue
                .iter()
                .position(|s| s.arrival > item.arrival)
                .unwrap_or(link.queue.len());
            link.queue.insert(pos, item);
        }
    }

    fn deliver(conn: &mut Connection, link: &mut Link, now: Instant) {
        while link.queue.front().is_some_and(|s| s.arrival <= now) {
            if let Some(s) = link.queue.pop_front() {
                let repr = TcpRepr { payload: &s.payload, ..s.repr };
                conn.handle_segment(now, &repr);
            }
        }
    }

    /// Runs one step: deliver due segments, fire due timers, transmit; then jump the clock
    /// to the next event.
    fn step(&mut self) {
        Pair::deliver(&mut self.a, &mut self.b_to_a, self.now);
        Pair::deliver(&mut self.b, &mut self.a_to_b, self.now);
        for conn in [&mut self.a, &mut self.b] {
            if conn.poll_timeout().is_some_and(|t| t <= self.now) {
                conn.handle_timeout(self.now);
            }
        }
        let (l, r, d) = (self.loss_percent, self.reorder_percent, self.delay);
        Pair::transmit(&mut self.a, &mut self.a_to_b, self.now, &mut self.rng, l, r, d);
        Pair::transmit(&mut self.b, &mut self.b_to_a, self.now, &mut self.rng, l, r, d);
    }

    fn next_time(&self) -> Option<Instant> {
        [
            self.a.poll_timeout(),
            self.b.poll_timeout(),
            self.a_to_b.queue.front().map(|s| s.arrival),
            self.b_to_a.queue.front().map(|s| s.arrival),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(u32::from(seed)) as u8)
        .collect()
}

/// Moves `len` bytes each way and checks exact, in-order delivery and a clean close.
fn exchange(
    cfg: &TcpConfig,
    len: usize,
    loss: u64,
    reorder: u64,
    seed: u64,
) -> (ConnectionStats, ConnectionStats) {
    let mut p = Pair::new(cfg, loss, reorder, seed);
    let (out_a, out_b) = (pattern(1, len), pattern(2, len));
    let (mut sent_a, mut sent_b) = (0, 0);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let mut buf = alloc::vec![0u8; 8192];
    let (mut eof_a, mut eof_b) = (false, false);
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(
            steps < 5_000_000,
            "no progress at {:?}: a {:?} b {:?}",
            p.now,
            p.a.state(),
            p.b.state()
        );
        if sent_a < len {
            sent_a += p.a.send(&out_a[sent_a..]).unwrap_or(0);
            if sent_a == len {
                p.a.shutdown_write();
            }
        }
        if sent_b < len && p.b.state() != State::SynReceived {
            sent_b += p.b.send(&out_b[sent_b..]).unwrap_or(0);
            if sent_b == len {
                p.b.shutdown_write();
            }
        }
        for (conn, got, eof) in
            [(&mut p.a, &mut got_a, &mut eof_a), (&mut p.b, &mut got_b, &mut eof_b)]
        {
            loop {
                match conn.recv(&mut buf) {
                    Ok(0) => {
                        *eof = true;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
        }
        p.step();
        if p.a.is_closed() && p.b.is_closed() {
            break;
        }
        match p.next_time() {
            Some(t) => p.now = p.now.max(t),
            None => break,
        }
    }
    assert!(
        eof_a && eof_b,
        "both sides saw end of file: {eof_a} {eof_b} {:?} {:?} {} {} {:?} {:?} {:?} {:?} at {:?}",
        p.a.state(),
        p.b.state(),
        got_a.len(),
        got_b.len(),
        p.a.close_reason,
        p.b.close_reason,
        p.a.stats(),
        p.b.stats(),
        p.now
    );
    assert_eq!(got_b.len(), len);
    assert!(got_b == out_a, "a->b bytes differ");
    assert_eq!(got_a.len(), len);
    assert!(got_a == out_b, "b->a bytes differ");
    (p.a.stats(), p.b.stats())
}

#[test]
fn one_megabyte_each_way_without_loss() {
    let (a, b) = exchange(&TcpConfig::default(), 1 << 20, 0, 0, 1);
    assert_eq!(a.retransmits + b.retransmits, 0);
}

#[test]
fn one_megabyte_each_way_with_5_percent_loss_and_reordering() {
    let (a, b) = exchange(&TcpConfig::default(), 1 << 20, 5, 5, 7);
    assert!(a.retransmits > 0 && b.retransmits > 0);
    assert!(a.fast_retransmits + b.fast_retransmits > 0, "SACK recovery ran");
}

#[test]
fn one_megabyte_each_way_with_loss_newreno_without_options() {
    let cfg = TcpConfig { congestion: CongestionAlgorithm::NewReno, ..super::plain() };
    exchange(&cfg, 1 << 20, 5, 2, 11);
}

#[test]
fn many_seeds_with_heavy_loss_and_reordering_all_complete() {
    for seed in 1..=12u64 {
        let cfg = if seed % 2 == 0 {
            TcpConfig::default()
        } else {
            TcpConfig { congestion: CongestionAlgorithm::NewReno, ..super::plain() }
        };
        exchange(&cfg, 128 * 1024, 10, 10, seed * 7919);
    }
}
