//! ICMP for IPv4 (RFC 792): echo, destination unreachable with the next-hop MTU of
//! RFC 1191 §4, and time exceeded. Error messages quote the offending datagram's IPv4
//! header and at least its first 8 data bytes (RFC 792, RFC 1122 §3.2.2).
//!
//! NICs do not offload ICMP checksums, so [`Icmpv4Repr::emit`] always fills the checksum;
//! [`Icmpv4Repr::parse`] verifies it when [`Checksums::verify_rx`] is set.

use super::checksum;
use super::ipv4::{self, HeaderContext, Ipv4Repr};
use super::{Checksums, WireError, read_u16};

/// Length of the ICMP header: type, code, checksum and the 4-byte rest-of-header.
const HEADER_LEN: usize = 8;
/// An error message must quote at least this much of the datagram after its IP header.
const MIN_QUOTED_DATA: usize = 8;

const TYPE_ECHO_REPLY: u8 = 0;
const TYPE_DST_UNREACHABLE: u8 = 3;
const TYPE_ECHO_REQUEST: u8 = 8;
const TYPE_TIME_EXCEEDED: u8 = 11;

/// The code of a destination-unreachable message (RFC 792; RFC 1122 §3.2.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DstUnreachable {
    /// Code 0.
    NetUnreachable,
    /// Code 1.
    HostUnreachable,
    /// Code 2.
    ProtocolUnreachable,
    /// Code 3.
    PortUnreachable,
    /// Code 4: the datagram needed fragmenting but had DF set; the message carries the
    /// next-hop MTU (RFC 1191 §4), the input to path-MTU discovery.
    FragmentationNeeded,
    /// Any other code (source route failed, administratively prohibited, ...). A code
    /// that has a named variant is emitted as that code and parses back as the variant.
    Other(u8),
}

impl From<u8> for DstUnreachable {
    fn from(code: u8) -> Self {
        match code {
            0 => DstUnreachable::NetUnreachable,
            1 => DstUnreachable::HostUnreachable,
            2 => DstUnreachable::ProtocolUnreachable,
            3 => DstUnreachable::PortUnreachable,
            4 => DstUnreachable::FragmentationNeeded,
            other => DstUnreachable::Other(other),
        }
    }
}

impl From<DstUnreachable> for u8 {
    fn from(reason: DstUnreachable) -> Self {
        match reason {
            DstUnreachable::NetUnreachable => 0,
            DstUnreachable::HostUnreachable => 1,
            DstUnreachable::ProtocolUnreachable => 2,
            DstUnreachable::PortUnreachable => 3,
            DstUnreachable::FragmentationNeeded => 4,
            DstUnreachable::Other(code) => code,
        }
    }
}

/// A parsed ICMPv4 message. Quoted headers and data borrow from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    /// Type 8.
    EchoRequest {
        /// Identifier, echoed in the reply.
        ident: u16,
        /// Sequence number, echoed in the reply.
        seq_no: u16,
        /// Data, echoed in the reply.
        data: &'a [u8],
    },
    /// Type 0.
    EchoReply {
        /// Identifier of the request.
        ident: u16,
        /// Sequence number of the request.
        seq_no: u16,
        /// Data of the request.
        data: &'a [u8],
    },
    /// Type 3.
    DstUnreachable {
        /// The code.
        reason: DstUnreachable,
        /// Next-hop MTU (RFC 1191 §4); zero from routers that predate RFC 1191 and for
        /// codes other than `FragmentationNeeded`.
        next_hop_mtu: u16,
        /// The quoted IPv4 header. Its `payload_len` is the original datagram's, not the
        /// length of what was quoted.
        header: Ipv4Repr,
        /// The quoted bytes after that header: at least 8, the transport ports and more.
        data: &'a [u8],
    },
    /// Type 11 (TTL exceeded in transit, or reassembly time exceeded).
    TimeExceeded {
        /// The quoted IPv4 header.
        header: Ipv4Repr,
        /// The quoted bytes after that header (at least 8).
        data: &'a [u8],
    },
    /// Any other message, not interpreted.
    Other {
        /// ICMP type.
        msg_type: u8,
        /// ICMP code.
        code: u8,
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses an ICMP message (the whole IPv4 payload). The quoted header of an error is
    /// parsed without checking its checksum or its total length against the quote.
    pub fn parse(packet: &'a [u8], checksums: &Checksums) -> Result<Icmpv4Repr<'a>, WireError> {
        let (header, body) = packet.split_at_checked(HEADER_LEN).ok_or(WireError::Truncated)?;
        if checksums.verify_rx && checksum::data(packet) != 0xffff {
            return Err(WireError::BadChecksum);
        }
        let msg_type = header[0];
        let code = header[1];
        let ident = read_u16(header, 4).ok_or(WireError::Truncated)?;
        let word = read_u16(header, 6).ok_or(WireError::Truncated)?;
        let repr = match msg_type {
            TYPE_ECHO_REQUEST => Icmpv4Repr::EchoRequest { ident, seq_no: word, data: body },
            TYPE_ECHO_REPLY => Icmpv4Repr::EchoReply { ident, seq_no: word, data: body },
            TYPE_DST_UNREACHABLE => {
                let (header, data) = parse_quote(body)?;
                Icmpv4Repr::DstUnreachable {
                    reason: DstUnreachable::from(code),
                    next_hop_mtu: word,
                    header,
                    data,
                }
            }
            TYPE_TIME_EXCEEDED => {
                let (header, data) = parse_quote(body)?;
                Icmpv4Repr::TimeExceeded { header, data }
            }
            _ => Icmpv4Repr::Other { msg_type, code },
        };
        Ok(repr)
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Icmpv4Repr::DstUnreachable { data, .. } | Icmpv4Repr::TimeExceeded { data, .. } => {
                HEADER_LEN + ipv4::HEADER_LEN + data.len()
            }
            Icmpv4Repr::Other { .. } => HEADER_LEN,
        }
    }

    /// Writes the message at the start of `buf`, checksum included. Errors quote a 20-byte
    /// header followed by `data`, which must hold at least 8 bytes (`Malformed` otherwise).
    /// `Other` messages are written with a zero rest-of-header.
    pub fn emit(&self, buf: &mut [u8], _checksums: &Checksums) -> Result<(), WireError> {
        let message = buf.get_mut(..self.buffer_len()).ok_or(WireError::BufferTooSmall)?;
        let (header, body) = message.split_at_mut(HEADER_LEN);
        let (msg_type, code, rest_of_header) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, data } => {
                body.copy_from_slice(data);
                (TYPE_ECHO_REQUEST, 0, u32::from(ident) << 16 | u32::from(seq_no))
            }
            Icmpv4Repr::EchoReply { ident, seq_no, data } => {
                body.copy_from_slice(data);
                (TYPE_ECHO_REPLY, 0, u32::from(ident) << 16 | u32::from(seq_no))
            }
            Icmpv4Repr::DstUnreachable { reason, next_hop_mtu, header, data } => {
                emit_quote(body, &header, data)?;
                (TYPE_DST_UNREACHABLE, u8::from(reason), u32::from(next_hop_mtu))
            }
            Icmpv4Repr::TimeExceeded { header, data } => {
                emit_quote(body, &header, data)?;
                (TYPE_TIME_EXCEEDED, 0, 0)
            }
            Icmpv4Repr::Other { msg_type, code } => (msg_type, code, 0),
        };
        header[0] = msg_type;
        header[1] = code;
        header[2..4].copy_from_slice(&[0, 0]);
        header[4..8].copy_from_slice(&rest_of_header.to_be_bytes());
        let sum = !checksum::combine(&[checksum::data(header), checksum::data(body)]);
        header[2..4].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }
}

/// Splits the quote of an error message into the original IPv4 header and the data after
/// it, which must be at least 8 bytes (RFC 792).
fn parse_quote(quote: &[u8]) -> Result<(Ipv4Repr, &[u8]), WireError> {
    let (header, header_len) = ipv4::parse_header(quote, false, HeaderContext::QuotedInIcmp)?;
    let data = quote.get(header_len..).ok_or(WireError::Truncated)?;
    if data.len() < MIN_QUOTED_DATA {
        return Err(WireError::Truncated);
    }
    Ok((header, data))
}

/// Writes the quoted header and data into `body`, which is exactly 20 + `data.len()` long.
fn emit_quote(body: &mut [u8], header: &Ipv4Repr, data: &[u8]) -> Result<(), WireError> {
    if data.len() < MIN_QUOTED_DATA {
        return Err(WireError::Malformed);
    }
    let (quoted_header, quoted_data) =
        body.split_at_mut_checked(ipv4::HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
    // The quote stands for the original packet, whose header checksum was filled.
    header.emit(quoted_header, &Checksums::default())?;
    quoted_data.copy_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpProtocol;
    use crate::wire::test_vectors;
    use core::net::Ipv4Addr;
    use proptest::prelude::*;

    const VERIFY: Checksums = Checksums { verify_rx: true, fill_tx: true };
    const OFFLOAD: Checksums = Checksums { verify_rx: false, fill_tx: false };

    fn port_unreachable() -> &'static [u8] {
        &test_vectors::LO_ICMP_PORT_UNREACHABLE_FRAME[34..]
    }

    /// An echo request, ident 0x1234, seq 1, data "abcdefgh"; checksum by hand:
    /// 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364 + 0x6566 + 0x6768 folds to 0xabca,
    /// complemented 0x5435.
    const ECHO_REQUEST: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd', b'e', b'f', b'g',
        b'h',
    ];

    #[test]
    fn parses_an_echo_request_and_emits_the_reply() {
        let repr = Icmpv4Repr::parse(&ECHO_REQUEST, &VERIFY).unwrap();
        assert_eq!(repr, Icmpv4Repr::EchoRequest { ident: 0x1234, seq_no: 1, data: b"abcdefgh" });
        let reply = Icmpv4Repr::EchoReply { ident: 0x1234, seq_no: 1, data: b"abcdefgh" };
        let mut buf = [0u8; 16];
        reply.emit(&mut buf, &OFFLOAD).unwrap();
        // Only the type changes (8 -> 0), so the checksum rises by 0x0800.
        assert_eq!(&buf[..4], &[0x00, 0x00, 0x5c, 0x35]);
        assert_eq!(&buf[4..], &ECHO_REQUEST[4..]);
    }

    #[test]
    fn parses_a_real_port_unreachable() {
        let repr = Icmpv4Repr::parse(port_unreachable(), &VERIFY).unwrap();
        let Icmpv4Repr::DstUnreachable { reason, next_hop_mtu, header, data } = repr else {
            panic!("{repr:?}");
        };
        assert_eq!(reason, DstUnreachable::PortUnreachable);
        assert_eq!(next_hop_mtu, 0);
        assert_eq!(header.protocol, IpProtocol::Udp);
        assert_eq!(header.src_addr, Ipv4Addr::LOCALHOST);
        assert_eq!(header.payload_len, 13);
        // The whole datagram was quoted: its ports, length and Linux's partial checksum.
        assert_eq!(data, &port_unreachable()[28..]);
        assert_eq!(&data[..6], &test_vectors::LO_UDP_FRAME[34..40]);
        // Linux quoted the whole datagram, so emitting gives the same bytes.
        let mut buf = [0u8; 64];
        assert_eq!(repr.buffer_len(), port_unreachable().len());
        repr.emit(&mut buf, &VERIFY).unwrap();
        assert_eq!(&buf[..repr.buffer_len()], port_unreachable());
    }

    /// A fragmentation-needed error quoting the captured SYN's header and 8 bytes of TCP.
    fn frag_needed_bytes() -> [u8; 36] {
        let mut packet = [0u8; 36];
        packet[0] = 3;
        packet[1] = 4;
        packet[6..8].copy_from_slice(&1400u16.to_be_bytes());
        packet[8..36].copy_from_slice(&test_vectors::LO_SYN_FRAME[14..42]);
        let sum = !checksum::data(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        packet
    }

    #[test]
    fn fragmentation_needed_carries_the_mtu_and_a_partial_quote() {
        let packet = frag_needed_bytes();
        let repr = Icmpv4Repr::parse(&packet, &VERIFY).unwrap();
        let Icmpv4Repr::DstUnreachable { reason, next_hop_mtu, header, data } = repr else {
            panic!("{repr:?}");
        };
        assert_eq!(reason, DstUnreachable::FragmentationNeeded);
        assert_eq!(next_hop_mtu, 1400);
        // The quoted header says 40 bytes of TCP followed; only 8 are here.
        assert_eq!(header.payload_len, 40);
        assert_eq!(data.len(), 8);
    }

    #[test]
    fn quoted_header_checksum_is_not_verified() {
        let mut packet = frag_needed_bytes();
        packet[8 + 10] ^= 0x55;
        let sum = {
            packet[2] = 0;
            packet[3] = 0;
            !checksum::data(&packet)
        };
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        assert!(Icmpv4Repr::parse(&packet, &VERIFY).is_ok());
    }

    #[test]
    fn time_exceeded_round_trips_with_a_quote_of_options() {
        // A quoted header with IHL 6: parse skips the options; emit quotes 20 bytes.
        let mut packet = [0u8; 8 + 24 + 8];
        packet[0] = 11;
        packet[8] = 0x46;
        packet[8 + 2..8 + 4].copy_from_slice(&100u16.to_be_bytes());
        packet[8 + 9] = 6;
        packet[32..40].copy_from_slice(&[0, 80, 0x1f, 0x90, 0, 0, 0, 1]);
        let sum = !checksum::data(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        let repr = Icmpv4Repr::parse(&packet, &VERIFY).unwrap();
        let Icmpv4Repr::TimeExceeded { header, data } = repr else { panic!("{repr:?}") };
        assert_eq!(header.payload_len, 76);
        assert_eq!(data, &[0, 80, 0x1f, 0x90, 0, 0, 0, 1]);
        let mut buf = [0u8; 36];
        repr.emit(&mut buf, &VERIFY).unwrap();
        assert_eq!(Icmpv4Repr::parse(&buf, &VERIFY), Ok(repr));
    }

    #[test]
    fn bad_checksum_is_detected_unless_offloaded() {
        let mut packet = ECHO_REQUEST;
        packet[9] ^= 1;
        assert_eq!(Icmpv4Repr::parse(&packet, &VERIFY), Err(WireError::BadChecksum));
        assert!(Icmpv4Repr::parse(&packet, &OFFLOAD).is_ok());
    }

    #[test]
    fn truncation_is_detected_at_every_boundary() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Icmpv4Repr::parse(&ECHO_REQUEST[..len], &OFFLOAD),
                Err(WireError::Truncated)
            );
        }
        // An error message needs the 20-byte quoted header and 8 bytes after it.
        let packet = frag_needed_bytes();
        for len in HEADER_LEN..packet.len() {
            assert_eq!(Icmpv4Repr::parse(&packet[..len], &OFFLOAD), Err(WireError::Truncated));
        }
    }

    #[test]
    fn malformed_quote_is_rejected() {
        let mut packet = frag_needed_bytes();
        packet[8] = 0x44;
        assert_eq!(Icmpv4Repr::parse(&packet, &OFFLOAD), Err(WireError::Malformed));
        packet[8] = 0x65;
        assert_eq!(Icmpv4Repr::parse(&packet, &OFFLOAD), Err(WireError::Malformed));
    }

    #[test]
    fn other_messages_are_kept_uninterpreted() {
        // A redirect (type 5, code 1): gateway address and a quote we do not look at.
        let mut packet = [0u8; 8];
        packet[0] = 5;
        packet[1] = 1;
        let sum = !checksum::data(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        let repr = Icmpv4Repr::parse(&packet, &VERIFY).unwrap();
        assert_eq!(repr, Icmpv4Repr::Other { msg_type: 5, code: 1 });
        let mut buf = [0xffu8; 8];
        repr.emit(&mut buf, &VERIFY).unwrap();
        assert_eq!(buf, packet);
    }

    #[test]
    fn emit_checks_buffer_and_quote_length() {
        let repr = Icmpv4Repr::EchoRequest { ident: 1, seq_no: 2, data: b"abc" };
        assert_eq!(repr.emit(&mut [0u8; 10], &VERIFY), Err(WireError::BufferTooSmall));
        let (header, _) =
            ipv4::Ipv4Repr::parse(&test_vectors::LO_SYN_FRAME[14..], &VERIFY).unwrap();
        let short = Icmpv4Repr::TimeExceeded { header, data: &[0; 7] };
        assert_eq!(short.emit(&mut [0u8; 64], &VERIFY), Err(WireError::Malformed));
    }

    fn any_quoted_header() -> impl Strategy<Value = Ipv4Repr> {
        (any::<u32>(), any::<u32>(), any::<u8>(), 0usize..=65515, any::<u8>(), any::<u16>())
            .prop_map(|(src, dst, proto, payload_len, ttl, ident)| Ipv4Repr {
                src_addr: Ipv4Addr::from(src),
                dst_addr: Ipv4Addr::from(dst),
                protocol: IpProtocol::from(proto),
                payload_len,
                ttl,
                dscp_ecn: 0,
                ident,
                dont_fragment: true,
                more_fragments: false,
                fragment_offset: 0,
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Icmpv4Repr::parse(&bytes, &VERIFY);
            let _ = Icmpv4Repr::parse(&bytes, &OFFLOAD);
        }

        #[test]
        fn parse_never_panics_on_error_messages(
            msg_type in prop_oneof![Just(3u8), Just(11u8)],
            mut bytes in proptest::collection::vec(any::<u8>(), 8..64),
        ) {
            bytes[0] = msg_type;
            if let Some(first) = bytes.get_mut(8) {
                *first = 0x40 | (*first & 0x0f);
            }
            let _ = Icmpv4Repr::parse(&bytes, &OFFLOAD);
        }

        #[test]
        fn echo_round_trips(
            request in any::<bool>(),
            ident in any::<u16>(),
            seq_no in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let repr = if request {
                Icmpv4Repr::EchoRequest { ident, seq_no, data: &data }
            } else {
                Icmpv4Repr::EchoReply { ident, seq_no, data: &data }
            };
            let mut buf = [0u8; 72];
            repr.emit(&mut buf, &VERIFY).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&buf[..repr.buffer_len()], &VERIFY), Ok(repr));
        }

        #[test]
        fn errors_round_trip(
            unreachable in any::<bool>(),
            code in any::<u8>(),
            next_hop_mtu in any::<u16>(),
            header in any_quoted_header(),
            data in proptest::collection::vec(any::<u8>(), 8..64),
        ) {
            let repr = if unreachable {
                Icmpv4Repr::DstUnreachable {
                    reason: DstUnreachable::from(code),
                    next_hop_mtu,
                    header,
                    data: &data,
                }
            } else {
                Icmpv4Repr::TimeExceeded { header, data: &data }
            };
            let mut buf = [0u8; 92];
            repr.emit(&mut buf, &VERIFY).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&buf[..repr.buffer_len()], &VERIFY), Ok(repr));
        }

        #[test]
        fn other_round_trips(msg_type in any::<u8>(), code in any::<u8>()) {
            prop_assume!(![0, 3, 8, 11].contains(&msg_type));
            let repr = Icmpv4Repr::Other { msg_type, code };
            let mut buf = [0u8; 8];
            repr.emit(&mut buf, &VERIFY).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&buf, &VERIFY), Ok(repr));
        }
    }
}
