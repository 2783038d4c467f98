//! The IPv4 header (RFC 791 §3.1) with the receive checks of RFC 1122 §3.2.1.1-3.2.1.2
//! (version, header length, total length, header checksum). Options are skipped, never
//! emitted; this stack sends 20-byte headers.

use core::net::Ipv4Addr;

use super::checksum;
use super::{Checksums, IpProtocol, WireError, read_ipv4, read_u16};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

const FLAG_DONT_FRAGMENT: u16 = 0x4000;
const FLAG_MORE_FRAGMENTS: u16 = 0x2000;
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

/// A parsed IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// What the payload is.
    pub protocol: IpProtocol,
    /// Length of the payload: total length minus header length.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// The former type-of-service byte: DSCP (high six bits) and ECN (low two, RFC 3168 §5).
    pub dscp_ecn: u8,
    /// Identification, for reassembly.
    pub ident: u16,
    /// DF: the packet must not be fragmented.
    pub dont_fragment: bool,
    /// MF: more fragments follow.
    pub more_fragments: bool,
    /// Offset of this fragment in the original payload, in bytes (a multiple of 8).
    pub fragment_offset: u16,
}

/// How strictly [`parse_header`] treats a header.
#[derive(Clone, Copy)]
pub(crate) enum HeaderContext {
    /// A packet as received: the whole packet must be present.
    Received,
    /// The header quoted in an ICMP error (RFC 792): only the start of the original
    /// datagram is there, and its checksum is not ours to judge.
    QuotedInIcmp,
}

/// Parses the header at the start of `packet`; returns it and the header length (with
/// options).
pub(crate) fn parse_header(
    packet: &[u8],
    verify_checksum: bool,
    context: HeaderContext,
) -> Result<(Ipv4Repr, usize), WireError> {
    let first = *packet.first().ok_or(WireError::Truncated)?;
    if packet.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    if first >> 4 != 4 {
        return Err(WireError::Malformed);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < HEADER_LEN {
        return Err(WireError::Malformed);
    }
    let header = packet.get(..header_len).ok_or(WireError::Truncated)?;
    let total_len = usize::from(read_u16(header, 2).ok_or(WireError::Truncated)?);
    if total_len < header_len {
        return Err(WireError::Malformed);
    }
    if matches!(context, HeaderContext::Received) && total_len > packet.len() {
        return Err(WireError::Truncated);
    }
    if verify_checksum {
        let sum = match <&[u8; HEADER_LEN]>::try_from(header) {
            Ok(without_options) => checksum::ipv4_header(without_options),
            Err(_) => checksum::data(header),
        };
        if sum != 0xffff {
            return Err(WireError::BadChecksum);
        }
    }
    let fragment = read_u16(header, 6).ok_or(WireError::Truncated)?;
    let repr = Ipv4Repr {
        src_addr: read_ipv4(header, 12).ok_or(WireError::Truncated)?,
        dst_addr: read_ipv4(header, 16).ok_or(WireError::Truncated)?,
        protocol: IpProtocol::from(header[9]),
        payload_len: total_len - header_len,
        ttl: header[8],
        dscp_ecn: header[1],
        ident: read_u16(header, 4).ok_or(WireError::Truncated)?,
        dont_fragment: fragment & FLAG_DONT_FRAGMENT != 0,
        more_fragments: fragment & FLAG_MORE_FRAGMENTS != 0,
        fragment_offset: (fragment & FRAGMENT_OFFSET_MASK) * 8,
    };
    Ok((repr, header_len))
}

impl Ipv4Repr {
    /// Parses an IPv4 packet and returns its header and payload. The payload is exactly
    /// `total length - header length` bytes: Ethernet padding after the packet is dropped.
    /// Options are skipped.
    pub fn parse<'a>(
        packet: &'a [u8],
        checksums: &Checksums,
    ) -> Result<(Ipv4Repr, &'a [u8]), WireError> {
        let (repr, header_len) =
            parse_header(packet, checksums.verify_rx, HeaderContext::Received)?;
        let end = header_len + repr.payload_len;
        let payload = packet.get(header_len..end).ok_or(WireError::Truncated)?;
        Ok((repr, payload))
    }

    /// Writes a 20-byte header at the start of `buf` with total length
    /// `20 + payload_len`. The payload goes after it. Fails with `Malformed` when the
    /// total length does not fit 16 bits or the fragment offset is not a multiple of 8
    /// below 65536.
    pub fn emit(&self, buf: &mut [u8], checksums: &Checksums) -> Result<(), WireError> {
        let total_len = self
            .payload_len
            .checked_add(HEADER_LEN)
            .and_then(|len| u16::try_from(len).ok())
            .ok_or(WireError::Malformed)?;
        if self.fragment_offset % 8 != 0 {
            return Err(WireError::Malformed);
        }
        let header: &mut [u8; HEADER_LEN] = buf
            .get_mut(..HEADER_LEN)
            .and_then(|header| header.try_into().ok())
            .ok_or(WireError::BufferTooSmall)?;
        let mut fragment = self.fragment_offset / 8;
        if self.dont_fragment {
            fragment |= FLAG_DONT_FRAGMENT;
        }
        if self.more_fragments {
            fragment |= FLAG_MORE_FRAGMENTS;
        }
        header[0] = 0x45;
        header[1] = self.dscp_ecn;
        header[2..4].copy_from_slice(&total_len.to_be_bytes());
        header[4..6].copy_from_slice(&self.ident.to_be_bytes());
        header[6..8].copy_from_slice(&fragment.to_be_bytes());
        header[8] = self.ttl;
        header[9] = u8::from(self.protocol);
        header[10..12].copy_from_slice(&[0, 0]);
        header[12..16].copy_from_slice(&self.src_addr.octets());
        header[16..20].copy_from_slice(&self.dst_addr.octets());
        if checksums.fill_tx {
            let sum = !checksum::ipv4_header(header);
            header[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        Ok(())
    }

    /// True when this packet is a fragment of a larger datagram (MF set or a non-zero
    /// offset). The stack does not reassemble; it drops fragments.
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.fragment_offset != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_vectors;
    use proptest::prelude::*;

    const VERIFY: Checksums = Checksums { verify_rx: true, fill_tx: true };
    const OFFLOAD: Checksums = Checksums { verify_rx: false, fill_tx: false };

    fn lo() -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 1)
    }

    fn syn_packet() -> &'static [u8] {
        &test_vectors::LO_SYN_FRAME[14..]
    }

    #[test]
    fn parses_a_real_linux_packet() {
        let (repr, payload) = Ipv4Repr::parse(syn_packet(), &VERIFY).unwrap();
        assert_eq!(
            repr,
            Ipv4Repr {
                src_addr: lo(),
                dst_addr: lo(),
                protocol: IpProtocol::Tcp,
                payload_len: 40,
                ttl: 64,
                dscp_ecn: 0,
                ident: 0xc31c,
                dont_fragment: true,
                more_fragments: false,
                fragment_offset: 0,
            }
        );
        assert_eq!(payload, &syn_packet()[20..]);
        assert!(!repr.is_fragment());
    }

    #[test]
    fn emit_reproduces_the_real_header_and_checksum() {
        let (repr, _) = Ipv4Repr::parse(syn_packet(), &VERIFY).unwrap();
        let mut buf = [0u8; HEADER_LEN];
        repr.emit(&mut buf, &VERIFY).unwrap();
        assert_eq!(&buf[..], &syn_packet()[..20]);
    }

    #[test]
    fn offload_leaves_the_checksum_to_the_nic() {
        let (repr, _) = Ipv4Repr::parse(syn_packet(), &VERIFY).unwrap();
        let mut buf = [0xffu8; HEADER_LEN + 40];
        repr.emit(&mut buf, &OFFLOAD).unwrap();
        assert_eq!(&buf[10..12], &[0, 0]);
        assert_eq!(Ipv4Repr::parse(&buf, &VERIFY), Err(WireError::BadChecksum));
        assert_eq!(Ipv4Repr::parse(&buf, &OFFLOAD).unwrap().0, repr);
    }

    #[test]
    fn trailing_ethernet_padding_is_dropped() {
        // The 33-byte UDP packet from the capture, padded to the 46-byte minimum payload
        // of an Ethernet frame.
        let udp = &test_vectors::LO_UDP_FRAME[14..];
        let mut padded = [0u8; 46];
        padded[..udp.len()].copy_from_slice(udp);
        let (repr, payload) = Ipv4Repr::parse(&padded, &VERIFY).unwrap();
        assert_eq!(repr.payload_len, 13);
        assert_eq!(payload, &udp[20..]);
    }

    #[test]
    fn options_are_skipped() {
        // A header with one 4-byte option (NOP NOP NOP EOL), IHL 6, checksum recomputed.
        let mut packet = [0u8; 28];
        packet[0] = 0x46;
        packet[2..4].copy_from_slice(&28u16.to_be_bytes());
        packet[8] = 64;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
        packet[16..20].copy_from_slice(&[10, 0, 0, 2]);
        packet[20..24].copy_from_slice(&[1, 1, 1, 0]);
        packet[24..28].copy_from_slice(b"data");
        let sum = !checksum::data(&packet[..24]);
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
        let (repr, payload) = Ipv4Repr::parse(&packet, &VERIFY).unwrap();
        assert_eq!(repr.protocol, IpProtocol::Udp);
        assert_eq!(repr.payload_len, 4);
        assert_eq!(payload, b"data");
    }

    #[test]
    fn truncation_at_every_length_is_an_error() {
        let packet = syn_packet();
        for len in 0..packet.len() {
            assert_eq!(Ipv4Repr::parse(&packet[..len], &VERIFY), Err(WireError::Truncated));
        }
    }

    #[test]
    fn bad_version_and_header_lengths_are_malformed() {
        let mut packet = syn_packet().to_vec();
        packet[0] = 0x65;
        assert_eq!(Ipv4Repr::parse(&packet, &OFFLOAD), Err(WireError::Malformed));
        for ihl in 0..5 {
            packet[0] = 0x40 | ihl;
            assert_eq!(Ipv4Repr::parse(&packet, &OFFLOAD), Err(WireError::Malformed));
        }
        // IHL 15 makes all 60 bytes header (the TCP header is read as options), which
        // the total length of 60 allows: an empty payload...
        packet[0] = 0x4f;
        assert_eq!(Ipv4Repr::parse(&packet, &OFFLOAD).unwrap().1, &[] as &[u8]);
        // ...and a buffer shorter than IHL*4 is truncated.
        assert_eq!(Ipv4Repr::parse(&packet[..59], &OFFLOAD), Err(WireError::Truncated));
    }

    #[test]
    fn total_length_below_header_length_is_malformed() {
        let mut packet = syn_packet().to_vec();
        packet[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Ipv4Repr::parse(&packet, &OFFLOAD), Err(WireError::Malformed));
        packet[2..4].copy_from_slice(&61u16.to_be_bytes());
        assert_eq!(Ipv4Repr::parse(&packet, &OFFLOAD), Err(WireError::Truncated));
    }

    #[test]
    fn corrupted_header_fails_the_checksum_unless_offloaded() {
        let mut packet = syn_packet().to_vec();
        packet[8] = 63;
        assert_eq!(Ipv4Repr::parse(&packet, &VERIFY), Err(WireError::BadChecksum));
        assert_eq!(Ipv4Repr::parse(&packet, &OFFLOAD).unwrap().0.ttl, 63);
        // A corrupted payload is not the IP layer's business.
        let mut packet = syn_packet().to_vec();
        packet[30] ^= 0xff;
        assert!(Ipv4Repr::parse(&packet, &VERIFY).is_ok());
    }

    #[test]
    fn emit_rejects_what_cannot_be_encoded() {
        let (mut repr, _) = Ipv4Repr::parse(syn_packet(), &VERIFY).unwrap();
        for len in 0..HEADER_LEN {
            assert_eq!(repr.emit(&mut [0u8; 20][..len], &VERIFY), Err(WireError::BufferTooSmall));
        }
        let mut buf = [0u8; HEADER_LEN];
        repr.payload_len = 65535 - 20;
        assert!(repr.emit(&mut buf, &VERIFY).is_ok());
        repr.payload_len = 65535 - 19;
        assert_eq!(repr.emit(&mut buf, &VERIFY), Err(WireError::Malformed));
        repr.payload_len = usize::MAX;
        assert_eq!(repr.emit(&mut buf, &VERIFY), Err(WireError::Malformed));
        repr.payload_len = 0;
        repr.fragment_offset = 12;
        assert_eq!(repr.emit(&mut buf, &VERIFY), Err(WireError::Malformed));
    }

    #[test]
    fn fragments_are_recognised() {
        let (mut repr, _) = Ipv4Repr::parse(syn_packet(), &VERIFY).unwrap();
        repr.more_fragments = true;
        assert!(repr.is_fragment());
        repr.more_fragments = false;
        repr.fragment_offset = 8 * 0x1fff;
        assert!(repr.is_fragment());
        let mut buf = [0u8; HEADER_LEN + 40];
        repr.emit(&mut buf, &VERIFY).unwrap();
        assert_eq!(&buf[6..8], &[0x5f, 0xff]);
        assert_eq!(Ipv4Repr::parse(&buf, &VERIFY).unwrap().0, repr);
    }

    fn any_repr() -> impl Strategy<Value = Ipv4Repr> {
        (
            (any::<u32>(), any::<u32>(), any::<u8>(), 0usize..=65515),
            (any::<u8>(), any::<u8>(), any::<u16>()),
            (any::<bool>(), any::<bool>(), 0u16..=0x1fff),
        )
            .prop_map(
                |((src, dst, proto, payload_len), (ttl, dscp_ecn, ident), (df, mf, off))| {
                    Ipv4Repr {
                        src_addr: Ipv4Addr::from(src),
                        dst_addr: Ipv4Addr::from(dst),
                        protocol: IpProtocol::from(proto),
                        payload_len,
                        ttl,
                        dscp_ecn,
                        ident,
                        dont_fragment: df,
                        more_fragments: mf,
                        fragment_offset: off * 8,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Ipv4Repr::parse(&bytes, &VERIFY);
            let _ = Ipv4Repr::parse(&bytes, &OFFLOAD);
            let _ = parse_header(&bytes, false, HeaderContext::QuotedInIcmp);
        }

        #[test]
        fn round_trip(repr in any_repr()) {
            let mut packet = alloc::vec![0u8; HEADER_LEN + repr.payload_len];
            repr.emit(&mut packet, &VERIFY).unwrap();
            let (parsed, payload) = Ipv4Repr::parse(&packet, &VERIFY).unwrap();
            prop_assert_eq!(parsed, repr);
            prop_assert_eq!(payload.len(), repr.payload_len);
        }
    }
}
