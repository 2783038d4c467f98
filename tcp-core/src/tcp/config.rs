//! Per-connection tunables, with Linux defaults where RFC 9293 leaves the choice (see
//! DESIGN.md): initial window of 10 segments (RFC 6928), RTO bounds (RFC 6298 §2 with
//! Linux's 200 ms floor), delayed ACK bound (RFC 9293 §3.8.6.3, 40 ms as Linux),
//! 2*MSL = 60 s (RFC 9293 §3.4.2), keepalive (RFC 9293 §3.8.4, RFC 1122 §4.2.3.6).

use crate::time::Duration;

/// The congestion controller a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CongestionAlgorithm {
    /// CUBIC (RFC 9438), Linux's default.
    #[default]
    Cubic,
    /// NewReno (RFC 5681 and RFC 6582).
    NewReno,
}

/// Keepalive settings (RFC 9293 §3.8.4): after `idle` without hearing from the peer, send
/// a probe every `interval`; give up after `probes` unanswered probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// Idle time before the first probe (Linux `tcp_keepalive_time`, 7200 s).
    pub idle: Duration,
    /// Time between probes (Linux `tcp_keepalive_intvl`, 75 s).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (Linux `tcp_keepalive_probes`, 9).
    pub probes: u8,
}

impl Default for Keepalive {
    fn default() -> Keepalive {
        Keepalive { idle: Duration::from_secs(7200), interval: Duration::from_secs(75), probes: 9 }
    }
}

/// Tunables for one connection. `TcpConfig::default()` gives Linux's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The MSS we advertise (and the largest segment we send), 1460 for Ethernet.
    pub mss: u16,
    /// Send buffer size in bytes.
    pub send_buffer: usize,
    /// Receive buffer size in bytes; it bounds the window we advertise.
    pub recv_buffer: usize,
    /// Offer window scaling (RFC 7323 §2).
    pub window_scale: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Offer timestamps (RFC 7323 §3).
    pub timestamps: bool,
    /// The congestion controller.
    pub congestion: CongestionAlgorithm,
    /// RTO before any RTT sample (RFC 6298 §2.1: 1 s).
    pub initial_rto: Duration,
    /// Lower bound of the RTO (Linux: 200 ms).
    pub min_rto: Duration,
    /// Upper bound of the RTO, backoff included (Linux: 120 s).
    pub max_rto: Duration,
    /// Longest time an ACK is delayed (Linux: 40 ms).
    pub delayed_ack: Duration,
    /// TIME-WAIT duration, 2*MSL (Linux: 60 s).
    pub time_wait: Duration,
    /// SYN (or SYN-ACK) retransmissions before giving up (Linux `tcp_syn_retries`, 6).
    pub syn_retries: u8,
    /// Data retransmissions before giving up (Linux `tcp_retries2`, 15).
    pub max_retransmits: u8,
    /// Initial congestion window in segments (RFC 6928: 10).
    pub initial_cwnd_segments: u32,
    /// Disable Nagle's algorithm (TCP_NODELAY).
    pub nodelay: bool,
    /// Keepalive, off by default as on Linux.
    pub keepalive: Option<Keepalive>,
    /// Challenge ACKs sent per second at most (RFC 5961 §7; Linux allows 1000).
    pub challenge_ack_limit_per_sec: u32,
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig {
            mss: 1460,
            send_buffer: 64 * 1024,
            recv_buffer: 128 * 1024,
            window_scale: true,
            sack: true,
            timestamps: true,
            congestion: CongestionAlgorithm::Cubic,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            delayed_ack: Duration::from_millis(40),
            time_wait: Duration::from_secs(60),
            syn_retries: 6,
            max_retransmits: 15,
            initial_cwnd_segments: 10,
            nodelay: false,
            keepalive: None,
            challenge_ack_limit_per_sec: 1000,
        }
    }
}
