//! Ethernet II framing (IEEE 802.3 §3.2.6 type interpretation of the length/type field).
//!
//! Only untagged frames are understood: an IEEE 802.1Q tag shows up as
//! [`EtherType::Unknown(0x8100)`](EtherType::Unknown) and the caller drops the frame.

use core::fmt;

use super::WireError;

/// Length of an Ethernet II header: destination, source, EtherType.
pub const HEADER_LEN: usize = 14;

/// A 48-bit Ethernet (MAC) address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// True for a unicast address (group bit clear).
    pub const fn is_unicast(&self) -> bool {
        self.0[0] & 0x01 == 0
    }

    /// True for the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True for a multicast address (group bit set, not broadcast).
    pub fn is_multicast(&self) -> bool {
        !self.is_unicast() && !self.is_broadcast()
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// The EtherType field: what the frame carries (IEEE 802.3 §3.2.6; IANA assignments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// IPv4, 0x0800.
    Ipv4,
    /// ARP, 0x0806.
    Arp,
    /// Anything else, including VLAN tags (0x8100) and IPv6 (0x86dd).
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Unknown(other) => other,
        }
    }
}

/// A parsed Ethernet II header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Sender's address.
    pub src_addr: EthernetAddress,
    /// Receiver's address.
    pub dst_addr: EthernetAddress,
    /// What the payload is.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Parses the header of `frame` and returns it with the payload after it. The payload
    /// may include padding up to the 60-byte minimum frame; the IPv4 layer drops it using
    /// its own total length. Values of the length/type field below 0x0600 (IEEE 802.3
    /// length frames) come back as `EtherType::Unknown`.
    pub fn parse(frame: &[u8]) -> Result<(EthernetRepr, &[u8]), WireError> {
        let (header, payload) = frame.split_at_checked(HEADER_LEN).ok_or(WireError::Truncated)?;
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&header[0..6]);
        src.copy_from_slice(&header[6..12]);
        let ethertype = EtherType::from(u16::from_be_bytes([header[12], header[13]]));
        let repr = EthernetRepr {
            src_addr: EthernetAddress(src),
            dst_addr: EthernetAddress(dst),
            ethertype,
        };
        Ok((repr, payload))
    }

    /// Writes the 14-byte header at the start of `buf`; the payload goes after it.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall)?;
        header[0..6].copy_from_slice(&self.dst_addr.0);
        header[6..12].copy_from_slice(&self.src_addr.0);
        header[12..14].copy_from_slice(&u16::from(self.ethertype).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_vectors;
    use proptest::prelude::*;

    const SRC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
    const DST: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);

    #[test]
    fn parses_a_real_frame_header() {
        let (repr, payload) = EthernetRepr::parse(test_vectors::SYN_MSS1460_FRAME).unwrap();
        assert_eq!(repr, EthernetRepr { src_addr: SRC, dst_addr: DST, ethertype: EtherType::Ipv4 });
        assert_eq!(payload, &test_vectors::SYN_MSS1460_FRAME[14..]);
    }

    #[test]
    fn emit_writes_exactly_the_header() {
        let repr = EthernetRepr { src_addr: SRC, dst_addr: DST, ethertype: EtherType::Arp };
        let mut buf = [0xeeu8; 20];
        repr.emit(&mut buf).unwrap();
        assert_eq!(&buf[..14], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        assert_eq!(&buf[14..], &[0xee; 6]);
    }

    #[test]
    fn vlan_tag_is_unknown() {
        let mut frame = [0u8; 18];
        frame[12] = 0x81;
        let (repr, payload) = EthernetRepr::parse(&frame).unwrap();
        assert_eq!(repr.ethertype, EtherType::Unknown(0x8100));
        assert_eq!(payload.len(), 4);
    }

    #[test]
    fn short_frames_and_buffers_are_errors() {
        for len in 0..HEADER_LEN {
            assert_eq!(EthernetRepr::parse(&[0u8; 14][..len]), Err(WireError::Truncated));
            let repr = EthernetRepr { src_addr: SRC, dst_addr: DST, ethertype: EtherType::Ipv4 };
            assert_eq!(repr.emit(&mut [0u8; 14][..len]), Err(WireError::BufferTooSmall));
        }
        let (_, payload) = EthernetRepr::parse(&[0u8; 14]).unwrap();
        assert!(payload.is_empty());
    }

    #[test]
    fn address_classes() {
        assert!(SRC.is_unicast());
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(!EthernetAddress::BROADCAST.is_multicast());
        assert!(EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert_eq!(alloc::format!("{SRC}"), "02:00:00:00:00:01");
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = EthernetRepr::parse(&bytes);
        }

        #[test]
        fn round_trip(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), ty in any::<u16>()) {
            let repr = EthernetRepr {
                src_addr: EthernetAddress(src),
                dst_addr: EthernetAddress(dst),
                ethertype: EtherType::from(ty),
            };
            let mut buf = [0u8; HEADER_LEN];
            repr.emit(&mut buf).unwrap();
            let (parsed, payload) = EthernetRepr::parse(&buf).unwrap();
            prop_assert_eq!(parsed, repr);
            prop_assert!(payload.is_empty());
            prop_assert_eq!(u16::from(repr.ethertype), ty);
        }
    }
}
