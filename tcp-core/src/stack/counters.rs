//! Stack counters: every frame in and out, and every frame dropped, by reason (DESIGN.md:
//! "every dropped frame is counted by reason"). Names follow the layer and, where one
//! exists, the Linux MIB counter an operator would look for (`netstat -s`, `nstat`).

/// Declares the counters once, so the struct and the name list cannot drift apart.
macro_rules! stack_counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// Event and drop counters of one stack instance. Plain numbers that only grow
        /// (wrapping after 2^64 events); compare two snapshots to get rates.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct StackCounters {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        impl StackCounters {
            /// Every counter as `(name, value)`, in declaration order. Names are the field
            /// names, stable across releases.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$( (stringify!($name), self.$name), )+].into_iter()
            }
        }
    };
}

stack_counters! {
    /// Ethernet frames handed to the stack.
    frames_received,
    /// Ethernet frames the stack produced for transmission.
    frames_sent,

    /// Dropped: frame shorter than an Ethernet header.
    eth_malformed,
    /// Dropped: destination MAC neither ours, broadcast, nor a group we joined.
    eth_not_for_us,
    /// Dropped: EtherType other than IPv4 and ARP.
    eth_unknown_ethertype,

    /// Dropped: ARP packet too short, or not Ethernet/IPv4 (RFC 826).
    arp_malformed,
    /// ARP replies sent for requests asking for our address.
    arp_replies_sent,
    /// ARP requests sent to resolve a next hop.
    arp_requests_sent,
    /// Dropped: IP packets waiting for ARP resolution that were displaced, did not fit, or
    /// whose address never resolved (RFC 1122 §2.3.2.2).
    arp_pending_dropped,

    /// Dropped: IPv4 header invalid (version, IHL, total length, truncated).
    ipv4_malformed,
    /// Dropped: IPv4 header checksum wrong (RFC 791 §3.1).
    ipv4_bad_checksum,
    /// Dropped: destination address not ours (no forwarding, RFC 1122 §3.3.1).
    ipv4_not_for_us,
    /// Dropped: protocol other than ICMP, UDP and TCP (Linux `InUnknownProtos`).
    ipv4_unknown_protocol,
    /// Datagrams completed from fragments (Linux `ReasmOKs`).
    ipv4_fragments_reassembled,
    /// Dropped: fragments refused (overlap, oversize, misaligned, no room; Linux
    /// `ReasmFails`).
    ipv4_fragments_dropped,
    /// Dropped: partial datagrams whose reassembly timer ran out (Linux `ReasmTimeout`).
    ipv4_fragment_timeouts,

    /// Dropped: ICMP message truncated or with a bad checksum (RFC 792).
    icmp_malformed,
    /// Echo requests answered with an echo reply (RFC 792, RFC 1122 §3.2.2.6).
    icmp_echo_replied,
    /// Destination-unreachable messages received and passed to the transport
    /// (RFC 1122 §3.2.2.1).
    icmp_unreachable_received,
    /// ICMP errors sent (port and protocol unreachable).
    icmp_errors_sent,
    /// ICMP errors not sent because the rate limit was reached (RFC 1812 §4.3.2.8).
    icmp_rate_limited,
    /// ICMP messages received and deliberately ignored (types we do not act on, or
    /// fragmentation-needed messages that failed validation).
    icmp_ignored,
    /// Path MTU reductions applied to a connection from fragmentation-needed messages
    /// (RFC 1191 §4).
    path_mtu_updates,

    /// Dropped: UDP header or length invalid, or bad checksum (RFC 768).
    udp_malformed,
    /// Port-unreachable messages sent for UDP datagrams with no socket
    /// (RFC 1122 §3.2.2.1, §4.1.3.1).
    udp_port_unreachable_sent,
    /// Dropped: broadcast UDP datagrams (no UDP sockets; no error is sent for a
    /// broadcast).
    udp_dropped,

    /// Dropped: TCP header invalid (data offset, options) or truncated.
    tcp_malformed,
    /// Dropped: TCP checksum wrong (RFC 9293 §3.1; Linux `InCsumErrors`).
    tcp_bad_checksum,
    /// Segments to a port with no listener and no connection, answered with a reset
    /// (RFC 9293 §3.10.7.1; Linux `OutRsts` includes these).
    tcp_no_listener_rst_sent,
    /// SYNs dropped because the listener's SYN queue was full and cookies were off
    /// (Linux `ListenDrops`).
    tcp_syn_queue_full,
    /// Handshakes completed but dropped because the accept queue was full (Linux
    /// `ListenOverflows`).
    tcp_accept_queue_full,
    /// SYN-ACKs sent with a SYN cookie (RFC 4987 §3.6; Linux `SyncookiesSent`).
    tcp_syn_cookies_sent,
    /// ACKs that carried a valid cookie and created a connection (Linux
    /// `SyncookiesRecv`).
    tcp_syn_cookies_accepted,
    /// ACKs to a listener whose cookie did not validate (Linux `SyncookiesFailed`).
    tcp_syn_cookies_rejected,
    /// Challenge ACKs sent in reply to a suspicious RST or SYN (RFC 5961 §3-§4; Linux
    /// `TCPChallengeACK`).
    tcp_challenge_acks,
    /// Segments rejected by PAWS (RFC 7323 §5; Linux `PAWSEstab`).
    tcp_paws_rejected,
    /// Segments outside the receive window, answered with an ACK (RFC 9293 §3.10.7.4).
    tcp_out_of_window,
    /// Resets sent for segments that belong to no connection.
    tcp_resets_sent,
    /// SYNs to a TIME-WAIT 4-tuple that started a new connection (RFC 6191).
    tcp_time_wait_reused,
    /// SYNs dropped because the stack holds its maximum number of sockets.
    tcp_no_socket_space,
    /// Dropped for another reason (RST to a listener, segment without SYN or ACK to a
    /// listener, unacceptable segment in a state that sends nothing back).
    tcp_dropped_other,

    /// Frames not sent because the transmit buffer was too small or none was available.
    tx_no_buffer,
    /// Packets not sent because their destination is off-link and there is no gateway.
    tx_no_route,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    #[test]
    fn iter_reports_each_counter_under_its_field_name() {
        let counters = StackCounters {
            frames_received: 7,
            ipv4_bad_checksum: 3,
            tcp_syn_cookies_rejected: 11,
            tx_no_buffer: 1,
            ..StackCounters::default()
        };
        let find = |name| counters.iter().find(|&(n, _)| n == name).map(|(_, v)| v);
        assert_eq!(find("frames_received"), Some(7));
        assert_eq!(find("ipv4_bad_checksum"), Some(3));
        assert_eq!(find("tcp_syn_cookies_rejected"), Some(11));
        assert_eq!(find("tx_no_buffer"), Some(1));
        assert_eq!(find("frames_sent"), Some(0));
        assert_eq!(counters.iter().map(|(_, v)| v).sum::<u64>(), 22, "no other counter moved");
    }

    #[test]
    fn names_are_unique_and_cover_the_documented_drop_reasons() {
        let names: BTreeSet<&str> = StackCounters::default().iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), StackCounters::default().iter().count());
        for required in [
            "eth_malformed",
            "arp_pending_dropped",
            "ipv4_fragment_timeouts",
            "icmp_echo_replied",
            "udp_port_unreachable_sent",
            "tcp_no_listener_rst_sent",
            "tcp_accept_queue_full",
            "tcp_paws_rejected",
        ] {
            assert!(names.contains(required), "{required}");
        }
    }
}
