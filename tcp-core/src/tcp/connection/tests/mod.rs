//! Segment-level tests: a harness holding one [`Connection`] and a virtual clock, builders
//! for the peer's segments, and assertions on what `poll_transmit` produces.

mod close;
mod handshake;
mod loopback;
mod loss;
mod security;
mod transfer;

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::*;
use crate::time::Duration;
use crate::wire::{SackBlock, SackBlocks, TcpFlags, TcpOptions};

pub(super) const LOCAL_PORT: u16 = 49152;
pub(super) const REMOTE_PORT: u16 = 80;
/// Our ISS and the peer's.
pub(super) const ISS: u32 = 1000;
pub(super) const IRS: u32 = 5000;

pub(super) fn tuple() -> FourTuple {
    FourTuple {
        local: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), LOCAL_PORT),
        remote: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), REMOTE_PORT),
    }
}

pub(super) fn params() -> ConnectionParams {
    ConnectionParams { tuple: tuple(), iss: SeqNumber(ISS), ts_offset: 0 }
}

/// A configuration without options, so tests state only what they care about.
pub(super) fn plain() -> TcpConfig {
    TcpConfig { window_scale: false, sack: false, timestamps: false, ..TcpConfig::default() }
}

/// A segment from the peer, built fluently: `seg().seq(5001).ack(1001).payload(b"x")`.
#[derive(Clone, Debug)]
pub(super) struct Seg {
    pub(super) repr: TcpRepr<'static>,
    pub(super) data: Vec<u8>,
}

pub(super) fn seg() -> Seg {
    Seg {
        repr: TcpRepr {
            src_port: REMOTE_PORT,
            dst_port: LOCAL_PORT,
            seq: SeqNumber(IRS + 1),
            ack: SeqNumber(0),
            flags: TcpFlags::empty(),
            window: 65535,
            urgent: 0,
            options: TcpOptions::default(),
            payload: &[],
        },
        data: Vec::new(),
    }
}

impl Seg {
    pub(super) fn syn(mut self) -> Seg {
        self.repr.flags |= TcpFlags::SYN;
        self
    }
    pub(super) fn fin(mut self) -> Seg {
        self.repr.flags |= TcpFlags::FIN;
        self
    }
    pub(super) fn rst(mut self) -> Seg {
        self.repr.flags |= TcpFlags::RST;
        self
    }
    pub(super) fn seq(mut self, n: u32) -> Seg {
        self.repr.seq = SeqNumber(n);
        self
    }
    pub(super) fn ack(mut self, n: u32) -> Seg {
        self.repr.flags |= TcpFlags::ACK;
        self.repr.ack = SeqNumber(n);
        self
    }
    pub(super) fn win(mut self, w: u16) -> Seg {
        self.repr.window = w;
        self
    }
    pub(super) fn mss(mut self, m: u16) -> Seg {
        self.repr.options.mss = Some(m);
        self
    }
    pub(super) fn wscale(mut self, s: u8) -> Seg {
        self.repr.options.window_scale = Some(s);
        self
    }
    pub(super) fn sack_perm(mut self) -> Seg {
        self.repr.options.sack_permitted = true;
        self
    }
    pub(super) fn ts(mut self, val: u32, ecr: u32) -> Seg {
        self.repr.options.timestamp = Some((val, ecr));
        self
    }
    pub(super) fn sack(mut self, blocks: &[(u32, u32)]) -> Seg {
        let mut s = SackBlocks::EMPTY;
        for &(l, r) in blocks {
            s.push(SackBlock { left: SeqNumber(l), right: SeqNumber(r) });
        }
        self.repr.options.sack = s;
        self
    }
    pub(super) fn payload(mut self, data: &[u8]) -> Seg {
        self.data = data.to_vec();
        self
    }
    pub(super) fn len(self, n: usize) -> Seg {
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        self.payload(&data)
    }
}

/// A segment the connection produced, copied out of the borrow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Out {
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: TcpFlags,
    pub(super) window: u16,
    pub(super) options: TcpOptions,
    pub(super) payload: Vec<u8>,
}

impl Out {
    pub(super) fn has(&self, f: TcpFlags) -> bool {
        self.flags.contains(f)
    }
    pub(super) fn is_pure_ack(&self) -> bool {
        self.flags == TcpFlags::ACK && self.payload.is_empty()
    }
    pub(super) fn sack_blocks(&self) -> Vec<(u32, u32)> {
        self.options.sack.as_slice().iter().map(|b| (b.left.0, b.right.0)).collect()
    }
}

/// One connection under test with a virtual clock.
pub(super) struct Harness {
    pub(super) conn: Connection,
    pub(super) now: Instant,
    pub(super) mtu_payload: usize,
}

impl Harness {
    pub(super) fn client(cfg: &TcpConfig) -> Harness {
        Harness {
            conn: Connection::connect(cfg, params(), Instant::ZERO),
            now: Instant::ZERO,
            mtu_payload: 1460,
        }
    }

    /// A server connection from the peer's SYN `syn`.
    pub(super) fn server(cfg: &TcpConfig, syn: Seg) -> Harness {
        let repr = TcpRepr { payload: &syn.data, ..syn.repr };
        Harness {
            conn: Connection::accept_syn(cfg, params(), &repr, Instant::ZERO),
            now: Instant::ZERO,
            mtu_payload: 1460,
        }
    }

    /// A client that completed the handshake with a plain SYN-ACK (window 65535, MSS 1460).
    pub(super) fn established(cfg: &TcpConfig) -> Harness {
        let mut h = Harness::client(cfg);
        let syn = h.out();
        assert!(syn.has(TcpFlags::SYN));
        let mut synack = seg().syn().seq(IRS).ack(ISS + 1).mss(1460);
        if cfg.timestamps {
            synack = synack.ts(1, syn.options.timestamp.map_or(0, |t| t.0));
        }
        if cfg.sack {
            synack = synack.sack_perm();
        }
        if cfg.window_scale {
            synack = synack.wscale(0);
        }
        assert_eq!(h.input(synack), SegmentOutcome::Accepted);
        let ack = h.out();
        assert!(ack.is_pure_ack());
        h.none();
        assert_eq!(h.conn.poll_event(), Some(ConnectionEvent::Established));
        h
    }

    pub(super) fn input(&mut self, s: Seg) -> SegmentOutcome {
        let repr = TcpRepr { payload: &s.data, ..s.repr };
        self.conn.handle_segment(self.now, &repr)
    }

    /// The next segment to send; panics when there is none.
    pub(super) fn out(&mut self) -> Out {
        self.try_out().unwrap_or_else(|| panic!("expected a segment at {:?}", self.now))
    }

    pub(super) fn try_out(&mut self) -> Option<Out> {
        let r = self.conn.poll_transmit(self.now, self.mtu_payload)?;
        Some(Out {
            seq: r.seq.0,
            ack: r.ack.0,
            flags: r.flags,
            window: r.window,
            options: r.options,
            payload: r.payload.to_vec(),
        })
    }

    /// Everything sendable now.
    pub(super) fn drain(&mut self) -> Vec<Out> {
        let mut v = Vec::new();
        while let Some(o) = self.try_out() {
            v.push(o);
            assert!(v.len() < 10_000, "poll_transmit never returns None");
        }
        v
    }

    /// Asserts nothing is sent now.
    pub(super) fn none(&mut self) {
        if let Some(o) = self.try_out() {
            panic!("expected no segment at {:?}, got {o:?}", self.now);
        }
    }

    /// Moves the clock forward by `ms`, firing every timer that comes due on the way.
    pub(super) fn advance(&mut self, ms: u64) {
        let until = self.now + Duration::from_millis(ms);
        while let Some(t) = self.conn.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.conn.handle_timeout(self.now);
            if self.conn.poll_timeout() == Some(t) {
                break;
            }
        }
        self.now = until;
    }

    /// Moves to the next deadline and fires it; returns how long that took.
    pub(super) fn fire_next(&mut self) -> Duration {
        let t = self.conn.poll_timeout().expect("a timer is armed");
        let waited = t - self.now;
        self.now = t;
        self.conn.handle_timeout(t);
        waited
    }

    pub(super) fn events(&mut self) -> Vec<ConnectionEvent> {
        core::iter::from_fn(|| self.conn.poll_event()).collect()
    }
}
