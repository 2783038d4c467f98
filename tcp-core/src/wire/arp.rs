//! ARP for IPv4 over Ethernet (RFC 826, "Packet format"; hardware type 1 and protocol
//! type 0x0800 as assigned by IANA). Other hardware or protocol types are refused.

use core::net::Ipv4Addr;

use super::ethernet::EthernetAddress;
use super::{WireError, read_ipv4, read_u16};

/// Length of an Ethernet/IPv4 ARP packet.
pub const BUFFER_LEN: usize = 28;

const HARDWARE_ETHERNET: u16 = 1;
const PROTOCOL_IPV4: u16 = 0x0800;

/// The ARP opcode (RFC 826 `ar$op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// Who has `target_protocol_addr`? (opcode 1)
    Request,
    /// `source_protocol_addr` is at `source_hardware_addr` (opcode 2).
    Reply,
    /// Any other opcode (RARP, InARP, ...).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(value: ArpOperation) -> Self {
        match value {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request, reply or other.
    pub operation: ArpOperation,
    /// Sender hardware address (`ar$sha`).
    pub source_hardware_addr: EthernetAddress,
    /// Sender protocol address (`ar$spa`).
    pub source_protocol_addr: Ipv4Addr,
    /// Target hardware address (`ar$tha`); ignored in requests.
    pub target_hardware_addr: EthernetAddress,
    /// Target protocol address (`ar$tpa`).
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Parses an ARP packet (the Ethernet payload; bytes past the 28 are padding). A
    /// hardware type other than Ethernet or a protocol other than IPv4 is `Unsupported`.
    pub fn parse(packet: &[u8]) -> Result<ArpRepr, WireError> {
        let packet = packet.get(..BUFFER_LEN).ok_or(WireError::Truncated)?;
        let hardware_type = read_u16(packet, 0).ok_or(WireError::Truncated)?;
        let protocol_type = read_u16(packet, 2).ok_or(WireError::Truncated)?;
        if hardware_type != HARDWARE_ETHERNET
            || protocol_type != PROTOCOL_IPV4
            || packet[4] != 6
            || packet[5] != 4
        {
            return Err(WireError::Unsupported);
        }
        let operation = ArpOperation::from(read_u16(packet, 6).ok_or(WireError::Truncated)?);
        Ok(ArpRepr {
            operation,
            source_hardware_addr: read_mac(packet, 8),
            source_protocol_addr: read_ipv4(packet, 14).ok_or(WireError::Truncated)?,
            target_hardware_addr: read_mac(packet, 18),
            target_protocol_addr: read_ipv4(packet, 24).ok_or(WireError::Truncated)?,
        })
    }

    /// Writes the 28-byte packet at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let packet = buf.get_mut(..BUFFER_LEN).ok_or(WireError::BufferTooSmall)?;
        packet[0..2].copy_from_slice(&HARDWARE_ETHERNET.to_be_bytes());
        packet[2..4].copy_from_slice(&PROTOCOL_IPV4.to_be_bytes());
        packet[4] = 6;
        packet[5] = 4;
        packet[6..8].copy_from_slice(&u16::from(self.operation).to_be_bytes());
        packet[8..14].copy_from_slice(&self.source_hardware_addr.0);
        packet[14..18].copy_from_slice(&self.source_protocol_addr.octets());
        packet[18..24].copy_from_slice(&self.target_hardware_addr.0);
        packet[24..28].copy_from_slice(&self.target_protocol_addr.octets());
        Ok(())
    }
}

/// Reads six bytes at `offset` of a packet already cut to [`BUFFER_LEN`].
fn read_mac(packet: &[u8], offset: usize) -> EthernetAddress {
    let mut mac = [0u8; 6];
    if let Some(bytes) = packet.get(offset..offset + 6) {
        mac.copy_from_slice(bytes);
    }
    EthernetAddress(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A request in the layout of RFC 826: who has 10.0.0.2? tell 10.0.0.1.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0,
        0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];

    fn request() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            source_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn parses_a_request_with_ethernet_padding() {
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        assert_eq!(ArpRepr::parse(&padded), Ok(request()));
    }

    #[test]
    fn emits_the_same_bytes() {
        let mut buf = [0xaau8; 28];
        request().emit(&mut buf).unwrap();
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn truncated_packets_and_small_buffers_are_errors() {
        for len in 0..BUFFER_LEN {
            assert_eq!(ArpRepr::parse(&REQUEST[..len]), Err(WireError::Truncated));
            assert_eq!(request().emit(&mut [0u8; 28][..len]), Err(WireError::BufferTooSmall));
        }
    }

    #[test]
    fn other_hardware_or_protocols_are_unsupported() {
        for (offset, value) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut packet = REQUEST;
            packet[offset] = value;
            assert_eq!(ArpRepr::parse(&packet), Err(WireError::Unsupported), "byte {offset}");
        }
    }

    #[test]
    fn unknown_opcodes_are_kept() {
        let mut packet = REQUEST;
        packet[7] = 3;
        assert_eq!(ArpRepr::parse(&packet).unwrap().operation, ArpOperation::Unknown(3));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = ArpRepr::parse(&bytes);
        }

        #[test]
        fn round_trip(
            op in any::<u16>(),
            sha in any::<[u8; 6]>(),
            spa in any::<u32>(),
            tha in any::<[u8; 6]>(),
            tpa in any::<u32>(),
        ) {
            let repr = ArpRepr {
                operation: ArpOperation::from(op),
                source_hardware_addr: EthernetAddress(sha),
                source_protocol_addr: Ipv4Addr::from(spa),
                target_hardware_addr: EthernetAddress(tha),
                target_protocol_addr: Ipv4Addr::from(tpa),
            };
            let mut buf = [0u8; BUFFER_LEN];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(ArpRepr::parse(&buf), Ok(repr));
        }
    }
}
