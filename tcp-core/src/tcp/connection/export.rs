//! Connection migration: the whole transmission control block (RFC 9293 §3.3.1) as plain
//! data, so a flow group can move between stack instances without losing or reordering a
//! byte. Deadlines are absolute [`Instant`]s; both instances must share a clock.

use alloc::vec::Vec;

use super::{
    CloseReason, Connection, ConnectionEvent, ConnectionStats, FourTuple, Recovery, State,
};
use crate::tcp::assembler::Assembler;
use crate::tcp::buffer::ByteQueue;
use crate::tcp::config::{CongestionAlgorithm, Keepalive, TcpConfig};
use crate::tcp::congestion::{Algorithm, Congestion, Cubic, CwndUsage, NewReno};
use crate::tcp::rtt::RttEstimator;
use crate::tcp::scoreboard::Scoreboard;
use crate::tcp::seq::SeqNumber;
use crate::time::{Duration, Instant};
use crate::wire::TcpRepr;

/// Everything needed to continue a connection elsewhere. Produced by
/// [`Connection::export`], consumed by [`Connection::import`]. Field names follow RFC 9293.
#[derive(Clone, Debug)]
pub struct ConnectionState {
    /// The connection's configuration.
    pub config: TcpConfig,
    /// Addresses.
    pub tuple: FourTuple,
    /// RFC 9293 state.
    pub state: State,
    /// Initial send sequence number.
    pub iss: SeqNumber,
    /// SND.UNA.
    pub snd_una: SeqNumber,
    /// SND.NXT.
    pub snd_nxt: SeqNumber,
    /// Highest sequence number sent.
    pub snd_max: SeqNumber,
    /// SND.WND in bytes (scaled).
    pub snd_wnd: u32,
    /// Largest window the peer offered.
    pub max_snd_wnd: u32,
    /// SND.WL1.
    pub snd_wl1: SeqNumber,
    /// SND.WL2.
    pub snd_wl2: SeqNumber,
    /// Unacknowledged and unsent bytes, from `send_start`.
    pub send_buffer: Vec<u8>,
    /// Sequence number of `send_buffer[0]`.
    pub send_start: SeqNumber,
    /// A FIN follows the send buffer.
    pub fin_queued: bool,
    /// Initial receive sequence number.
    pub irs: SeqNumber,
    /// RCV.NXT.
    pub rcv_nxt: SeqNumber,
    /// Right edge of the window last advertised.
    pub rcv_adv: SeqNumber,
    /// Received bytes not yet read.
    pub recv_buffer: Vec<u8>,
    /// Out-of-order runs: (first sequence number, bytes).
    pub out_of_order: Vec<(SeqNumber, Vec<u8>)>,
    /// Sequence number of a FIN received out of order.
    pub out_of_order_fin: Option<SeqNumber>,
    /// The peer's FIN was received in order.
    pub fin_received: bool,
    /// The peer's MSS (after path MTU reductions).
    pub snd_mss: u16,
    /// (peer's shift, our shift) when window scaling is in use.
    pub window_scale: Option<(u8, u8)>,
    /// SACK in use.
    pub sack: bool,
    /// Timestamps in use.
    pub timestamps: bool,
    /// TS.Recent.
    pub ts_recent: u32,
    /// When TS.Recent was last updated.
    pub ts_recent_stamp: Instant,
    /// Offset of our timestamp clock.
    pub ts_offset: u32,
    /// Last.ACK.sent.
    pub last_ack_sent: SeqNumber,
    /// Largest segment received so far.
    pub rcv_mss_seen: u32,
    /// An ACK is owed now.
    pub ack_pending: bool,
    /// Reply (RST) waiting to be sent.
    pub pending_control: Option<TcpRepr<'static>>,
    /// Delayed-ACK deadline.
    pub delayed_ack_deadline: Option<Instant>,
    /// Quick ACKs left.
    pub quickacks: u32,
    /// Retransmission deadline.
    pub retransmit_deadline: Option<Instant>,
    /// Consecutive retransmission timeouts.
    pub retransmits: u8,
    /// SRTT.
    pub srtt: Option<Duration>,
    /// RTTVAR.
    pub rttvar: Duration,
    /// RTO before backoff.
    pub base_rto: Duration,
    /// RTO doublings in effect.
    pub rto_backoff: u32,
    /// Segment being timed (sequence to be acked, send time).
    pub rtt_probe: Option<(SeqNumber, Instant)>,
    /// Congestion controller.
    pub congestion: CongestionAlgorithm,
    /// cwnd, bytes.
    pub cwnd: u32,
    /// ssthresh, bytes.
    pub ssthresh: u32,
    /// New data was cwnd-limited in the current window (RFC 7661 §4.1).
    pub cwnd_limited: bool,
    /// Most bytes in flight in the current window.
    pub max_in_flight: u32,
    /// SND.NXT when the current window of cwnd use began.
    pub cwnd_window_end: SeqNumber,
    /// CUBIC W_max, bytes.
    pub cubic_w_max: u32,
    /// CUBIC epoch start.
    pub cubic_epoch_start: Option<Instant>,
    /// CUBIC K, milliseconds.
    pub cubic_k_ms: u64,
    /// CUBIC W_est, bytes.
    pub cubic_w_est: u32,
    /// Fractional window growth carried between ACKs (both algorithms).
    pub growth_credit: u64,
    /// Duplicate ACKs counted.
    pub dup_acks: u32,
    /// Fast recovery in progress: (recovery point, HighRxt).
    pub recovery: Option<(SeqNumber, SeqNumber)>,
    /// RFC 6582 "recover".
    pub recover: SeqNumber,
    /// The head segment is due for retransmission.
    pub retransmit_head: bool,
    /// SACKed ranges above SND.UNA.
    pub sacked: Vec<(SeqNumber, SeqNumber)>,
    /// The SYN had to be retransmitted.
    pub syn_retransmitted: bool,
    /// Persist deadline.
    pub persist_deadline: Option<Instant>,
    /// Persist backoff doublings.
    pub persist_backoff: u32,
    /// Window probes unanswered.
    pub persist_unanswered: u8,
    /// A window probe is due.
    pub persist_probe_due: bool,
    /// Keepalive settings.
    pub keepalive: Option<Keepalive>,
    /// Keepalive deadline.
    pub keepalive_deadline: Option<Instant>,
    /// Keepalive probes sent without answer.
    pub keepalive_probes: u8,
    /// A keepalive probe is due.
    pub keepalive_probe_due: bool,
    /// TIME-WAIT or orphaned FIN-WAIT-2 deadline.
    pub close_deadline: Option<Instant>,
    /// Start of the current challenge-ACK second.
    pub challenge_window_start: Instant,
    /// Challenge ACKs sent in it.
    pub challenge_count: u32,
    /// TCP_NODELAY.
    pub nodelay: bool,
    /// TCP_CORK.
    pub cork: bool,
    /// Data up to here is pushed regardless of Nagle (after uncorking).
    pub push_until: Option<SeqNumber>,
    /// The application closed the socket.
    pub app_closed: bool,
    /// A send was cut short; `Writable` is owed.
    pub write_blocked: bool,
    /// Why the connection closed, once it has.
    pub close_reason: Option<CloseReason>,
    /// Events not yet polled.
    pub pending_events: Vec<ConnectionEvent>,
    /// Counters.
    pub stats: ConnectionStats,
}

impl Connection {
    /// Snapshots the connection as plain data.
    pub fn export(&self) -> ConnectionState {
        let (cubic, credit) = match &self.cc.algorithm {
            Algorithm::Cubic(c) => (c.clone(), c.credit),
            Algorithm::NewReno(r) => (Cubic::default(), u64::from(r.bytes_acked)),
        };
        ConnectionState {
            config: self.cfg.clone(),
            tuple: self.tuple,
            state: self.state,
            iss: self.iss,
            snd_una: self.snd_una,
            snd_nxt: self.snd_nxt,
            snd_max: self.snd_max,
            snd_wnd: self.snd_wnd,
            max_snd_wnd: self.max_snd_wnd,
            snd_wl1: self.snd_wl1,
            snd_wl2: self.snd_wl2,
            send_buffer: self.send_buf.to_vec(),
            send_start: self.send_start,
            fin_queued: self.fin_queued,
            irs: self.irs,
            rcv_nxt: self.rcv_nxt,
            rcv_adv: self.rcv_adv,
            recv_buffer: self.recv_buf.to_vec(),
            out_of_order: self.assembler.export(),
            out_of_order_fin: self.ooo_fin,
            fin_received: self.fin_received,
            snd_mss: self.snd_mss,
            window_scale: self.ws_ok.then_some((self.snd_wscale, self.rcv_wscale)),
            sack: self.sack_ok,
            timestamps: self.ts_ok,
            ts_recent: self.ts_recent,
            ts_recent_stamp: self.ts_recent_stamp,
            ts_offset: self.ts_offset,
            last_ack_sent: self.last_ack_sent,
            rcv_mss_seen: self.rcv_mss_seen,
            ack_pending: self.ack_now,
            pending_control: self.pending_control,
            delayed_ack_deadline: self.delack_deadline,
            quickacks: self.quickacks,
            retransmit_deadline: self.rtx_deadline,
            retransmits: self.retransmits,
            srtt: self.rtt.srtt,
            rttvar: self.rtt.rttvar,
            base_rto: self.rtt.base_rto,
            rto_backoff: self.rtt.backoff,
            rtt_probe: self.rtt_probe,
            congestion: self.cc.kind(),
            cwnd: self.cc.cwnd,
            ssthresh: self.cc.ssthresh,
            cwnd_limited: self.cc.usage.limited,
            max_in_flight: self.cc.usage.max_in_flight,
            cwnd_window_end: self.cc.usage.window_end,
            cubic_w_max: cubic.w_max,
            cubic_epoch_start: cubic.epoch_start,
            cubic_k_ms: cubic.k_ms,
            cubic_w_est: cubic.w_est,
            growth_credit: credit,
            dup_acks: self.dup_acks,
            recovery: self.recovery.map(|r| (r.point, r.high_rxt)),
            recover: self.recover,
            retransmit_head: self.retransmit_head,
            sacked: self.scoreboard.ranges().to_vec(),
            syn_retransmitted: self.syn_retransmitted,
            persist_deadline: self.persist_deadline,
            persist_backoff: self.persist_backoff,
            persist_unanswered: self.persist_unanswered,
            persist_probe_due: self.persist_probe_due,
            keepalive: self.keepalive,
            keepalive_deadline: self.keepalive_deadline,
            keepalive_probes: self.keepalive_probes,
            keepalive_probe_due: self.keepalive_probe_due,
            close_deadline: self.close_deadline,
            challenge_window_start: self.challenge_window_start,
            challenge_count: self.challenge_count,
            nodelay: self.nodelay,
            cork: self.cork,
            push_until: self.push_until,
            app_closed: self.app_closed,
            write_blocked: self.write_blocked,
            close_reason: self.close_reason,
            pending_events: self.events.iter().collect(),
            stats: self.stats,
        }
    }

    /// Rebuilds a connection from [`Connection::export`]'s output.
    pub fn import(s: ConnectionState) -> Connection {
        let algorithm = match s.congestion {
            CongestionAlgorithm::Cubic => Algorithm::Cubic(Cubic {
                w_max: s.cubic_w_max,
                epoch_start: s.cubic_epoch_start,
                k_ms: s.cubic_k_ms,
                w_est: s.cubic_w_est,
                credit: s.growth_credit,
            }),
            CongestionAlgorithm::NewReno => Algorithm::NewReno(NewReno {
                bytes_acked: u32::try_from(s.growth_credit).unwrap_or(u32::MAX),
            }),
        };
        let (ws_ok, snd_wscale, rcv_wscale) = match s.window_scale {
            Some((snd, rcv)) => (true, snd.min(14), rcv.min(14)),
            None => (false, 0, 0),
        };
        Connection {
            tuple: s.tuple,
            state: s.state,
            iss: s.iss,
            snd_una: s.snd_una,
            snd_nxt: s.snd_nxt,
            snd_max: s.snd_max,
            snd_wnd: s.snd_wnd,
            max_snd_wnd: s.max_snd_wnd,
            snd_wl1: s.snd_wl1,
            snd_wl2: s.snd_wl2,
            send_buf: ByteQueue::from_vec(s.config.send_buffer, s.send_buffer),
            send_start: s.send_start,
            fin_queued: s.fin_queued,
            irs: s.irs,
            rcv_nxt: s.rcv_nxt,
            rcv_adv: s.rcv_adv,
            recv_buf: ByteQueue::from_vec(s.config.recv_buffer, s.recv_buffer),
            assembler: Assembler::from_blocks(s.out_of_order),
            ooo_fin: s.out_of_order_fin,
            fin_received: s.fin_received,
            snd_mss: s.snd_mss.max(64),
            ws_ok,
            snd_wscale,
            rcv_wscale,
            sack_ok: s.sack,
            ts_ok: s.timestamps,
            ts_recent: s.ts_recent,
            ts_recent_stamp: s.ts_recent_stamp,
            ts_offset: s.ts_offset,
            last_ack_sent: s.last_ack_sent,
            rcv_mss_seen: s.rcv_mss_seen,
            ack_now: s.ack_pending,
            pending_control: s.pending_control,
            delack_deadline: s.delayed_ack_deadline,
            quickacks: s.quickacks,
            rtx_deadline: s.retransmit_deadline,
            retransmits: s.retransmits,
            rtt: RttEstimator::restore(
                s.srtt,
                s.rttvar,
                s.base_rto,
                s.rto_backoff,
                s.config.min_rto,
                s.config.max_rto,
            ),
            rtt_probe: s.rtt_probe,
            cc: Congestion {
                cwnd: s.cwnd,
                ssthresh: s.ssthresh,
                algorithm,
                usage: CwndUsage {
                    limited: s.cwnd_limited,
                    max_in_flight: s.max_in_flight,
                    window_end: s.cwnd_window_end,
                },
            },
            dup_acks: s.dup_acks,
            recovery: s.recovery.map(|(point, high_rxt)| Recovery { point, high_rxt }),
            recover: s.recover,
            retransmit_head: s.retransmit_head,
            scoreboard: Scoreboard::from_ranges(s.sacked),
            syn_retransmitted: s.syn_retransmitted,
            persist_deadline: s.persist_deadline,
            persist_backoff: s.persist_backoff,
            persist_probe_due: s.persist_probe_due,
            persist_unanswered: s.persist_unanswered,
            keepalive: s.keepalive,
            keepalive_deadline: s.keepalive_deadline,
            keepalive_probes: s.keepalive_probes,
            keepalive_probe_due: s.keepalive_probe_due,
            close_deadline: s.close_deadline,
            challenge_window_start: s.challenge_window_start,
            challenge_count: s.challenge_count,
            nodelay: s.nodelay,
            cork: s.cork,
            push_until: s.push_until,
            app_closed: s.app_closed,
            write_blocked: s.write_blocked,
            close_reason: s.close_reason,
            events: s.pending_events.into_iter().collect(),
            stats: s.stats,
            cfg: s.config,
        }
    }
}
