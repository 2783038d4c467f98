//! The UDP header (RFC 768), with the checksum rules of RFC 1122 §4.1.3.4: a zero
//! checksum field means the sender computed none; a computed zero is sent as all ones.

use core::net::Ipv4Addr;

use super::checksum;
use super::{Checksums, IpProtocol, WireError, read_u16};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A parsed UDP header. The length and checksum are derived from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses the datagram in `segment` (the IPv4 payload) sent from `src` to `dst`, and
    /// returns its header and payload. The payload ends where the UDP length field says;
    /// bytes after it are ignored.
    pub fn parse<'a>(
        segment: &'a [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        checksums: &Checksums,
    ) -> Result<(UdpRepr, &'a [u8]), WireError> {
        if segment.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let length = read_u16(segment, 4).ok_or(WireError::Truncated)?;
        if usize::from(length) < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let datagram = segment.get(..usize::from(length)).ok_or(WireError::Truncated)?;
        let checksum_field = read_u16(datagram, 6).ok_or(WireError::Truncated)?;
        if checksums.verify_rx && checksum_field != 0 {
            let sum = checksum::pseudo_header_ipv4_and_data(
                src,
                dst,
                IpProtocol::Udp,
                u32::from(length),
                datagram,
            );
            if sum != 0xffff {
                return Err(WireError::BadChecksum);
            }
        }
        let repr = UdpRepr {
            src_port: read_u16(datagram, 0).ok_or(WireError::Truncated)?,
            dst_port: read_u16(datagram, 2).ok_or(WireError::Truncated)?,
        };
        let payload = datagram.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
        Ok((repr, payload))
    }

    /// Writes the header and `payload` at the start of `buf` for a datagram from `src` to
    /// `dst`; returns the number of bytes written (`8 + payload.len()`). Fails with
    /// `Malformed` when that length does not fit the 16-bit length field.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
        checksums: &Checksums,
    ) -> Result<usize, WireError> {
        let length = payload
            .len()
            .checked_add(HEADER_LEN)
            .and_then(|len| u16::try_from(len).ok())
            .ok_or(WireError::Malformed)?;
        let datagram = buf.get_mut(..usize::from(length)).ok_or(WireError::BufferTooSmall)?;
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        header[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        header[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        header[4..6].copy_from_slice(&length.to_be_bytes());
        header[6..8].copy_from_slice(&[0, 0]);
        body.copy_from_slice(payload);
        let pseudo = checksum::pseudo_header_ipv4(src, dst, IpProtocol::Udp, u32::from(length));
        let field = if checksums.fill_tx {
            let sum = checksum::combine(&[
                pseudo,
                checksum::data(&datagram[..HEADER_LEN]),
                checksum::data(payload),
            ]);
            // Zero on the wire means "no checksum"; its one's-complement twin is sent
            // instead (RFC 768, "Fields").
            match !sum {
                0 => 0xffff,
                other => other,
            }
        } else {
            pseudo
        };
        datagram[6..8].copy_from_slice(&field.to_be_bytes());
        Ok(usize::from(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_vectors;
    use proptest::prelude::*;

    const VERIFY: Checksums = Checksums { verify_rx: true, fill_tx: true };
    const OFFLOAD: Checksums = Checksums { verify_rx: false, fill_tx: false };
    const LO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

    fn datagram() -> &'static [u8] {
        &test_vectors::LO_UDP_FRAME[34..]
    }

    #[test]
    fn parses_a_real_datagram() {
        let (repr, payload) = UdpRepr::parse(datagram(), LO, LO, &VERIFY).unwrap();
        assert_eq!(repr, UdpRepr { src_port: 52888, dst_port: 40001 });
        assert_eq!(payload, b"ping!");
    }

    #[test]
    fn emit_reproduces_the_real_datagram() {
        let repr = UdpRepr { src_port: 52888, dst_port: 40001 };
        let mut buf = [0u8; 64];
        let len = repr.emit(&mut buf, LO, LO, b"ping!", &VERIFY).unwrap();
        assert_eq!(&buf[..len], datagram());
    }

    #[test]
    fn wrong_addresses_fail_the_checksum() {
        let other = Ipv4Addr::new(127, 0, 0, 2);
        assert_eq!(UdpRepr::parse(datagram(), LO, other, &VERIFY), Err(WireError::BadChecksum));
        assert!(UdpRepr::parse(datagram(), LO, other, &OFFLOAD).is_ok());
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut bytes = datagram().to_vec();
        bytes[6] = 0;
        bytes[7] = 0;
        bytes[9] ^= 0x20;
        assert_eq!(UdpRepr::parse(&bytes, LO, LO, &VERIFY).unwrap().1, b"pIng!");
    }

    #[test]
    fn computed_zero_is_sent_as_all_ones() {
        // Choose the last two payload bytes so the whole sum is 0xffff: then the checksum
        // would be 0 and must go out as 0xffff.
        let repr = UdpRepr { src_port: 1, dst_port: 2 };
        let mut payload = [0u8; 2];
        let mut buf = [0u8; 10];
        repr.emit(&mut buf, LO, LO, &payload, &VERIFY).unwrap();
        let field = u16::from_be_bytes([buf[6], buf[7]]);
        // Adding the current checksum as payload brings the sum to 0xffff.
        payload.copy_from_slice(&field.to_be_bytes());
        repr.emit(&mut buf, LO, LO, &payload, &VERIFY).unwrap();
        assert_eq!(&buf[6..8], &[0xff, 0xff]);
        assert!(UdpRepr::parse(&buf, LO, LO, &VERIFY).is_ok());
    }

    #[test]
    fn bytes_after_the_length_field_are_ignored() {
        let mut padded = datagram().to_vec();
        padded.extend_from_slice(&[0; 11]);
        assert_eq!(UdpRepr::parse(&padded, LO, LO, &VERIFY).unwrap().1, b"ping!");
    }

    #[test]
    fn length_field_is_validated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpRepr::parse(&datagram()[..len], LO, LO, &OFFLOAD),
                Err(WireError::Truncated)
            );
        }
        for len in HEADER_LEN..datagram().len() {
            assert_eq!(
                UdpRepr::parse(&datagram()[..len], LO, LO, &OFFLOAD),
                Err(WireError::Truncated)
            );
        }
        let mut bytes = datagram().to_vec();
        bytes[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(UdpRepr::parse(&bytes, LO, LO, &OFFLOAD), Err(WireError::Malformed));
    }

    #[test]
    fn emit_checks_the_buffer_and_the_length() {
        let repr = UdpRepr { src_port: 1, dst_port: 2 };
        assert_eq!(
            repr.emit(&mut [0u8; 12], LO, LO, b"hello", &VERIFY),
            Err(WireError::BufferTooSmall)
        );
        let big = alloc::vec![0u8; 65536 - HEADER_LEN];
        let mut buf = alloc::vec![0u8; 65536];
        assert_eq!(repr.emit(&mut buf, LO, LO, &big, &VERIFY), Err(WireError::Malformed));
        assert_eq!(repr.emit(&mut buf, LO, LO, &big[1..], &VERIFY), Ok(65535));
    }

    #[test]
    fn offload_leaves_the_pseudo_header_sum_for_the_nic() {
        let repr = UdpRepr { src_port: 52888, dst_port: 40001 };
        let mut buf = [0u8; 13];
        repr.emit(&mut buf, LO, LO, b"ping!", &OFFLOAD).unwrap();
        // What a NIC does: complement the sum over the datagram, field included.
        let nic = !checksum::data(&buf);
        buf[6..8].copy_from_slice(&nic.to_be_bytes());
        assert_eq!(&buf[..], datagram());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = UdpRepr::parse(&bytes, LO, LO, &VERIFY);
            let _ = UdpRepr::parse(&bytes, LO, LO, &OFFLOAD);
        }

        #[test]
        fn round_trip(
            src_port in any::<u16>(),
            dst_port in any::<u16>(),
            src in any::<u32>(),
            dst in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let repr = UdpRepr { src_port, dst_port };
            let mut buf = [0u8; 128];
            let len = repr.emit(&mut buf, src, dst, &payload, &VERIFY).unwrap();
            prop_assert_eq!(len, HEADER_LEN + payload.len());
            let (parsed, parsed_payload) = UdpRepr::parse(&buf[..len], src, dst, &VERIFY).unwrap();
            prop_assert_eq!(parsed, repr);
            prop_assert_eq!(parsed_payload, &payload[..]);
        }
    }
}
