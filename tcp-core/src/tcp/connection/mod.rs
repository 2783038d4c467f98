//! One TCP connection: the transmission control block and state machine of RFC 9293 §3.3
//! and §3.10, with the extensions the submodules name.
//!
//! [`Connection`] is sans-IO. The stack drives it:
//! - **input**: [`Connection::handle_segment`] for each segment of this 4-tuple (already
//!   checksum-verified) and [`Connection::handle_timeout`] when the deadline from
//!   [`Connection::poll_timeout`] has passed;
//! - **output**: after any input, operation or timeout, call [`Connection::poll_transmit`]
//!   until it returns `None`, then [`Connection::poll_event`] until `None`, then re-read
//!   [`Connection::poll_timeout`];
//! - **operations**: [`Connection::send`], [`Connection::recv`], [`Connection::close`] and
//!   the option setters.
//!
//! Every call that may depend on time takes `now`; `now` must never go backwards.
//!
//! Submodules: `input` (segment arrival, RFC 9293 §3.10.7), `ack` (acknowledgment
//! processing and loss recovery), `output` (what to send), `timers` (RFC 6298, persist,
//! keepalive, TIME-WAIT), `options` (option negotiation), `export` (migration) and
//! `codec` (the migration state's binary encoding).

mod ack;
mod codec;
mod events;
mod export;
mod input;
mod options;
mod output;
mod timers;
mod types;

#[cfg(test)]
mod tests;

use alloc::collections::VecDeque;
pub use codec::{CODEC_MAGIC, CODEC_VERSION, CodecError};
pub use export::ConnectionState;
pub use options::cookie_syn_ack;
pub use output::reset_for;
pub use types::{
    CloseReason, ConnectionEvent, ConnectionParams, ConnectionStats, DropReason, FourTuple,
    Negotiated, RecvError, SegmentOutcome, SendError, State,
};

use self::events::EventQueue;
use crate::tcp::assembler::Assembler;
use crate::tcp::buffer::ByteQueue;
use crate::tcp::config::{Keepalive, TcpConfig};
use crate::tcp::congestion::Congestion;
use crate::tcp::rtt::RttEstimator;
use crate::tcp::scoreboard::Scoreboard;
use crate::tcp::seq::SeqNumber;
use crate::time::Instant;
use crate::wire::TcpRepr;

/// MSS assumed when the peer sends none (RFC 9293 §3.7.1; RFC 1122 §4.2.2.6).
pub(crate) const DEFAULT_MSS: u16 = 536;
/// Linux's TCP_MAX_QUICKACKS: ACKs sent without delay at the start and after reordering.
const MAX_QUICKACKS: u32 = 16;

/// State of an ongoing fast recovery (RFC 6582 §3.2, RFC 6675 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// SND.MAX when recovery began ("recover" / RecoveryPoint).
    pub(crate) point: SeqNumber,
    /// Highest sequence retransmitted so far (RFC 6675 HighRxt, exclusive).
    pub(crate) high_rxt: SeqNumber,
}

/// One TCP connection. See the module documentation for the calling protocol.
///
/// # Memory
///
/// An idle connection costs about 1.1 KiB: the control block itself (1,040 bytes on
/// x86-64, checked by a test) plus the [`Stack`](crate::stack::Stack)'s bookkeeping (its
/// connection-table and timer entries). The send and receive buffers are allocated only
/// while data is queued, grow up to [`TcpConfig::send_buffer`] and
/// [`TcpConfig::recv_buffer`], and are released when they drain after growing past 16 KiB;
/// out-of-order data and the SACK scoreboard likewise exist only while there is loss.
#[derive(Debug)]
pub struct Connection {
    pub(crate) cfg: TcpConfig,
    pub(crate) tuple: FourTuple,
    pub(crate) state: State,

    // Send sequence space (RFC 9293 §3.3.1). SND.MAX is the highest sequence sent; SND.NXT
    // goes back to SND.UNA after a timeout (go-back-N, as Linux retransmits after RTO).
    pub(crate) iss: SeqNumber,
    pub(crate) snd_una: SeqNumber,
    pub(crate) snd_nxt: SeqNumber,
    pub(crate) snd_max: SeqNumber,
    pub(crate) snd_wnd: u32,
    pub(crate) max_snd_wnd: u32,
    pub(crate) snd_wl1: SeqNumber,
    pub(crate) snd_wl2: SeqNumber,
    /// Unacknowledged and unsent data; byte 0 has sequence number `send_start`.
    pub(crate) send_buf: ByteQueue,
    pub(crate) send_start: SeqNumber,
    /// The application shut the write side: a FIN follows the buffered data.
    pub(crate) fin_queued: bool,

    // Receive sequence space. RCV.ADV is the right edge of the window we advertised.
    pub(crate) irs: SeqNumber,
    pub(crate) rcv_nxt: SeqNumber,
    pub(crate) rcv_adv: SeqNumber,
    pub(crate) recv_buf: ByteQueue,
    pub(crate) assembler: Assembler,
    /// Sequence number of a FIN received out of order.
    pub(crate) ooo_fin: Option<SeqNumber>,
    pub(crate) fin_received: bool,

    // Negotiated options (RFC 9293 §3.7.1, RFC 7323, RFC 2018).
    /// The peer's MSS, lowered by path MTU discovery.
    pub(crate) snd_mss: u16,
    /// Both sides sent the window-scale option (RFC 7323 §2.2); shifts apply only then.
    pub(crate) ws_ok: bool,
    pub(crate) snd_wscale: u8,
    pub(crate) rcv_wscale: u8,
    pub(crate) sack_ok: bool,
    pub(crate) ts_ok: bool,
    pub(crate) ts_recent: u32,
    pub(crate) ts_recent_stamp: Instant,
    pub(crate) ts_offset: u32,
    /// RCV.NXT in the last ACK we sent (RFC 7323 Last.ACK.sent).
    pub(crate) last_ack_sent: SeqNumber,
    /// Largest segment received, an estimate of the peer's segment size for delayed ACKs.
    pub(crate) rcv_mss_seen: u32,

    // What output owes the peer.
    pub(crate) ack_now: bool,
    pub(crate) pending_control: Option<TcpRepr<'static>>,
    pub(crate) delack_deadline: Option<Instant>,
    pub(crate) quickacks: u32,

    // Retransmission (RFC 6298) and loss recovery.
    pub(crate) rtx_deadline: Option<Instant>,
    pub(crate) retransmits: u8,
    pub(crate) rtt: RttEstimator,
    /// Karn timing without timestamps: (sequence that must be acked, send time).
    pub(crate) rtt_probe: Option<(SeqNumber, Instant)>,
    pub(crate) cc: Congestion,
    pub(crate) dup_acks: u32,
    pub(crate) recovery: Option<Recovery>,
    /// RFC 6582 "recover": no new recovery until SND.UNA passes it.
    pub(crate) recover: SeqNumber,
    /// Retransmit the segment at SND.UNA next, whatever the windows say.
    pub(crate) retransmit_head: bool,
    pub(crate) scoreboard: Scoreboard,
    pub(crate) syn_retransmitted: bool,

    // Persist (RFC 9293 §3.8.6.1) and keepalive (§3.8.4) timers.
    pub(crate) persist_deadline: Option<Instant>,
    pub(crate) persist_backoff: u32,
    pub(crate) persist_probe_due: bool,
    /// Window probes sent since the peer last answered.
    pub(crate) persist_unanswered: u8,
    pub(crate) keepalive: Option<Keepalive>,
    pub(crate) keepalive_deadline: Option<Instant>,
    pub(crate) keepalive_probes: u8,
    pub(crate) keepalive_probe_due: bool,
    /// TIME-WAIT expiry, or the FIN-WAIT-2 timeout of an orphaned connection.
    pub(crate) close_deadline: Option<Instant>,

    // RFC 5961 §7 challenge-ACK rate limit.
    pub(crate) challenge_window_start: Instant,
    pub(crate) challenge_count: u32,

    pub(crate) nodelay: bool,
    pub(crate) cork: bool,
    /// Data queued up to here when the socket was uncorked goes out without waiting.
    pub(crate) push_until: Option<SeqNumber>,
    /// `close()` was called: reading is over, arriving data resets the connection.
    pub(crate) app_closed: bool,
    pub(crate) write_blocked: bool,
    pub(crate) close_reason: Option<CloseReason>,
    pub(crate) events: EventQueue,
    pub(crate) stats: ConnectionStats,
}

impl Connection {
    fn new(config: &TcpConfig, params: ConnectionParams, state: State, now: Instant) -> Connection {
        let mss = u32::from(config.mss.max(DEFAULT_MSS));
        Connection {
            cfg: config.clone(),
            tuple: params.tuple,
            state,
            iss: params.iss,
            snd_una: params.iss,
            snd_nxt: params.iss,
            snd_max: params.iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: params.iss,
            send_buf: ByteQueue::new(config.send_buffer),
            send_start: params.iss + 1u32,
            fin_queued: false,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            recv_buf: ByteQueue::new(config.recv_buffer),
            assembler: Assembler::default(),
            ooo_fin: None,
            fin_received: false,
            snd_mss: DEFAULT_MSS,
            ws_ok: false,
            snd_wscale: 0,
            rcv_wscale: 0,
            sack_ok: false,
            ts_ok: false,
            ts_recent: 0,
            ts_recent_stamp: now,
            ts_offset: params.ts_offset,
            last_ack_sent: SeqNumber(0),
            rcv_mss_seen: u32::from(DEFAULT_MSS),
            ack_now: false,
            pending_control: None,
            delack_deadline: None,
            quickacks: MAX_QUICKACKS,
            rtx_deadline: None,
            retransmits: 0,
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            rtt_probe: None,
            cc: Congestion::new(config.congestion, config.initial_cwnd_segments.max(1) * mss),
            dup_acks: 0,
            recovery: None,
            recover: params.iss,
            retransmit_head: false,
            scoreboard: Scoreboard::default(),
            syn_retransmitted: false,
            persist_deadline: None,
            persist_backoff: 0,
            persist_probe_due: false,
            persist_unanswered: 0,
            keepalive: config.keepalive,
            keepalive_deadline: None,
            keepalive_probes: 0,
            keepalive_probe_due: false,
            close_deadline: None,
            challenge_window_start: now,
            challenge_count: 0,
            nodelay: config.nodelay,
            cork: false,
            push_until: None,
            app_closed: false,
            write_blocked: false,
            close_reason: None,
            events: EventQueue::default(),
            stats: ConnectionStats::default(),
        }
    }

    /// Active open (RFC 9293 §3.10.1): a connection in SYN-SENT with its SYN queued.
    pub fn connect(config: &TcpConfig, params: ConnectionParams, now: Instant) -> Connection {
        let mut conn = Connection::new(config, params, State::SynSent, now);
        if config.window_scale {
            conn.rcv_wscale = options::receive_scale_for(config.recv_buffer);
        }
        conn
    }

    /// Passive open from a SYN a listener accepted (RFC 9293 §3.10.7.2): a connection in
    /// SYN-RECEIVED with its SYN-ACK queued.
    pub fn accept_syn(
        config: &TcpConfig,
        params: ConnectionParams,
        syn: &TcpRepr<'_>,
        now: Instant,
    ) -> Connection {
        let mut conn = Connection::new(config, params, State::SynReceived, now);
        conn.irs = syn.seq;
        conn.rcv_nxt = syn.seq + 1u32;
        // Nothing offered yet: the SYN-ACK moves the right edge from here.
        conn.rcv_adv = conn.rcv_nxt;
        conn.last_ack_sent = conn.rcv_nxt;
        conn.negotiate_from_syn(syn, now);
        conn.snd_wnd = u32::from(syn.window);
        conn.max_snd_wnd = conn.snd_wnd;
        conn.snd_wl1 = syn.seq;
        conn
    }

    /// A connection rebuilt from a SYN cookie when the ACK completing the handshake
    /// arrives (RFC 4987 §3.6): ESTABLISHED, with `ack` (and any data it carries)
    /// processed. `params.iss` is the cookie ISN, `irs` the peer's ISN.
    pub fn from_syn_cookie(
        config: &TcpConfig,
        params: ConnectionParams,
        irs: SeqNumber,
        negotiated: Negotiated,
        ack: &TcpRepr<'_>,
        now: Instant,
    ) -> Connection {
        let mut conn = Connection::new(config, params, State::SynReceived, now);
        conn.irs = irs;
        conn.rcv_nxt = irs + 1u32;
        conn.last_ack_sent = conn.rcv_nxt;
        conn.snd_mss = negotiated.mss.max(64);
        conn.sack_ok = negotiated.sack && config.sack;
        conn.ts_ok = negotiated.timestamps && config.timestamps;
        if let (Some(peer), true) = (negotiated.window_scale, config.window_scale) {
            conn.ws_ok = true;
            conn.snd_wscale = peer.min(14);
            conn.rcv_wscale = options::receive_scale_for(config.recv_buffer);
        }
        if let (true, Some((tsval, _))) = (conn.ts_ok, ack.options.timestamp) {
            conn.ts_recent = tsval;
        }
        // The SYN-ACK went out statelessly: SND.NXT is past it and RCV.ADV is what it offered.
        conn.snd_nxt = params.iss + 1u32;
        conn.snd_max = conn.snd_nxt;
        conn.rcv_adv = conn.rcv_nxt + conn.recv_buf.free().min(usize::from(u16::MAX));
        conn.snd_wl1 = irs;
        conn.handle_segment(now, ack);
        conn
    }

    /// True if `seq` lies in data sent and not yet acknowledged (`SND.UNA <= seq <
    /// SND.MAX`): what an ICMP error quoting one of our segments must satisfy (RFC 5927
    /// §4.1).
    pub fn is_in_flight(&self, seq: SeqNumber) -> bool {
        seq.in_range(self.snd_una, self.snd_max)
    }

    /// The connection's addresses.
    pub fn tuple(&self) -> FourTuple {
        self.tuple
    }

    /// The current RFC 9293 state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The next event, oldest first. Events are notices that something changed: one that
    /// is already waiting is not queued again, so each kind is reported at most once per
    /// poll.
    pub fn poll_event(&mut self) -> Option<ConnectionEvent> {
        self.events.pop()
    }

    /// Offers spare storage for the send and receive queues (a stack recycles the storage
    /// of freed connections rather than returning it to the allocator). Storage a queue
    /// cannot use, because it already has its own, is handed back.
    pub(crate) fn adopt_storage(&mut self, storage: VecDeque<u8>) -> Option<VecDeque<u8>> {
        let rest = self.send_buf.adopt(storage)?;
        self.recv_buf.adopt(rest)
    }

    /// True while either queue has a ring allocated.
    pub(crate) fn holds_storage(&self) -> bool {
        self.send_buf.allocated() > 0 || self.recv_buf.allocated() > 0
    }

    /// Takes the storage of the queues that are empty and will stay so: in TIME-WAIT nothing
    /// is sent any more and nothing can arrive, so a connection there needs no rings.
    pub(crate) fn release_idle_storage(&mut self) -> [VecDeque<u8>; 2] {
        let mut out = [VecDeque::new(), VecDeque::new()];
        if self.state == State::TimeWait {
            if self.send_buf.is_empty() {
                out[0] = self.send_buf.release();
            }
            if self.recv_buf.is_empty() {
                out[1] = self.recv_buf.release();
            }
        }
        out
    }

    /// Takes the storage of both queues, for a connection about to be dropped.
    pub(crate) fn release_storage(&mut self) -> [VecDeque<u8>; 2] {
        [self.send_buf.release(), self.recv_buf.release()]
    }

    /// True when [`poll_event`](Connection::poll_event) has something.
    pub fn has_event(&self) -> bool {
        !self.events.is_empty()
    }

    /// CLOSED with nothing left to send: the stack may free the connection.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.pending_control.is_none()
    }

    /// Counters and current estimates.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            srtt: self.rtt.srtt,
            rto: self.rtt.rto(),
            cwnd: self.cc.cwnd,
            ssthresh: self.cc.ssthresh,
            send_mss: self.smss(),
            ..self.stats
        }
    }

    /// Queues data for sending; copies what fits and returns how much (0 when full).
    pub fn send(&mut self, data: &[u8]) -> Result<usize, SendError> {
        match self.state {
            State::Closed | State::Listen => return Err(self.closed_send_error()),
            _ if self.fin_queued || self.app_closed => return Err(SendError::Closed),
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => {}
            _ => return Err(SendError::Closed),
        }
        let n = self.send_buf.push(data);
        if n < data.len() {
            self.write_blocked = true;
        }
        Ok(n)
    }

    fn closed_send_error(&self) -> SendError {
        match self.close_reason {
            Some(CloseReason::Reset) => SendError::Reset,
            Some(CloseReason::TimedOut) => SendError::TimedOut,
            Some(_) => SendError::Closed,
            None => SendError::NotConnected,
        }
    }

    fn recv_error(&self) -> RecvError {
        match (self.state, self.close_reason) {
            (_, Some(CloseReason::Reset)) => RecvError::Reset,
            (_, Some(CloseReason::TimedOut)) => RecvError::TimedOut,
            (State::Closed | State::Listen, _) => RecvError::NotConnected,
            _ => RecvError::WouldBlock,
        }
    }

    /// Reads received data. `Ok(0)` (with a non-empty `buf`) means the peer closed.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RecvError> {
        let n = self.peek(buf)?;
        if n > 0 {
            self.recv_buf.discard(n);
            self.maybe_window_update();
        }
        Ok(n)
    }

    /// Like [`Connection::recv`] but leaves the data queued.
    pub fn peek(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        if !self.recv_buf.is_empty() && !buf.is_empty() {
            return Ok(self.recv_buf.peek_at(0, buf));
        }
        if self.fin_received || (buf.is_empty() && self.state.is_synchronized()) {
            return Ok(0);
        }
        Err(self.recv_error())
    }

    /// Bytes ready to read.
    pub fn recv_queue_len(&self) -> usize {
        self.recv_buf.len()
    }

    /// Bytes queued for sending, unacknowledged ones included.
    pub fn send_queue_len(&self) -> usize {
        self.send_buf.len()
    }

    /// Free space in the send buffer.
    pub fn send_capacity(&self) -> usize {
        self.send_buf.free()
    }

    /// Data or end of file is available.
    pub fn can_recv(&self) -> bool {
        !self.recv_buf.is_empty() || self.fin_received
    }

    /// `send` would accept at least one byte.
    pub fn can_send(&self) -> bool {
        matches!(
            self.state,
            State::SynSent | State::SynReceived | State::Established | State::CloseWait
        ) && !self.fin_queued
            && !self.app_closed
            && self.send_buf.free() > 0
    }

    /// Shuts the write side: a FIN follows the buffered data (RFC 9293 §3.10.4).
    pub fn shutdown_write(&mut self) {
        match self.state {
            State::SynSent => self.enter_closed(CloseReason::Normal),
            State::SynReceived => self.fin_queued = true,
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Closes the connection for the application. With unread data received, sends RST
    /// as Linux does (RFC 2525 §2.17); otherwise shuts the write side.
    pub fn close(&mut self) {
        self.app_closed = true;
        self.cork = false;
        if !self.recv_buf.is_empty() {
            self.recv_buf.discard(self.recv_buf.len());
            self.abort();
            return;
        }
        self.shutdown_write();
    }

    /// Aborts: sends RST when the peer is synchronized (RFC 9293 §3.10.5) and closes.
    pub fn abort(&mut self) {
        self.app_closed = true;
        if matches!(
            self.state,
            State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
        ) {
            self.pending_control = Some(self.make_rst(self.snd_max));
        }
        if self.state != State::Closed {
            self.enter_closed(CloseReason::Aborted);
        }
    }

    /// TCP_NODELAY: disable Nagle's algorithm (RFC 9293 §3.7.4).
    pub fn set_nodelay(&mut self, on: bool) {
        self.nodelay = on;
    }

    /// TCP_CORK: hold partial segments until full or uncorked.
    pub fn set_cork(&mut self, on: bool) {
        if self.cork && !on {
            // Uncorking pushes what is queued, Nagle or not (as Linux).
            self.push_until = Some(self.data_end());
        }
        self.cork = on;
    }

    /// Turns keepalive probes on or off (RFC 9293 §3.8.4).
    pub fn set_keepalive(&mut self, keepalive: Option<Keepalive>) {
        self.keepalive = keepalive;
        self.keepalive_deadline = None;
        self.keepalive_probes = 0;
    }

    /// An ICMP "fragmentation needed" for this connection (RFC 1191 §6.3): lowers the MSS
    /// and resends what is outstanding without treating it as congestion.
    pub fn handle_path_mtu(&mut self, mtu: u16, now: Instant) {
        // 20 bytes of IPv4 and 20 of TCP; RFC 1191 §3: never below the 68-byte minimum MTU.
        let mss = mtu.max(68).saturating_sub(40);
        if mss >= self.snd_mss {
            return;
        }
        self.snd_mss = mss;
        if self.state.is_synchronized() && self.snd_nxt > self.snd_una {
            self.snd_nxt = self.snd_una;
            self.rtt_probe = None;
            self.rtx_deadline = Some(now + self.rtt.rto());
        }
    }

    /// Moves to CLOSED, clearing timers and reporting why (once).
    pub(crate) fn enter_closed(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.rtx_deadline = None;
        self.persist_deadline = None;
        self.delack_deadline = None;
        self.keepalive_deadline = None;
        self.close_deadline = None;
        self.ack_now = false;
        if self.close_reason.is_none() {
            self.close_reason = Some(reason);
            self.events.push(ConnectionEvent::Closed(reason));
        }
    }

    /// Sequence number just past the buffered data (where the FIN goes).
    pub(crate) fn data_end(&self) -> SeqNumber {
        self.send_start + self.send_buf.len()
    }

    /// Our FIN has been sent and acknowledged.
    pub(crate) fn fin_acked(&self) -> bool {
        self.fin_queued && self.snd_una == self.data_end() + 1u32
    }
}
