//! Wire formats: a parsed representation (`XxxRepr`) with `parse` and `emit` for every
//! protocol the stack speaks — Ethernet II, ARP (RFC 826), IPv4 (RFC 791), ICMPv4
//! (RFC 792), UDP (RFC 768) and TCP (RFC 9293) — and the Internet checksum (RFC 1071).
//!
//! The contract, for every type in this module:
//! - `parse` never panics on any input and returns a typed [`WireError`]. Lengths are
//!   checked before any field is read; every read goes through a bounds-checked slice.
//! - `emit` never panics: it checks the buffer it is given and returns
//!   [`WireError::BufferTooSmall`] when the encoding does not fit, or
//!   [`WireError::Malformed`] when the representation cannot be encoded (a length that does
//!   not fit its 16-bit field, a fragment offset that is not a multiple of 8).
//! - `parse(emit(repr)) == repr` for every `repr` that `parse` can return. (Where two
//!   representations share an encoding, e.g. `DstUnreachable::Other(3)` and
//!   `PortUnreachable`, `parse` returns the named one; TCP SACK blocks beyond the 40 option
//!   bytes are left out by `emit`.)
//!
//! Checksums are controlled by [`Checksums`]: with offload on the NIC, the embedder turns
//! off receive verification and transmit filling.

use core::fmt;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod tcp;
mod tcp_options;
pub mod udp;

#[cfg(test)]
mod test_vectors;

pub use arp::{ArpOperation, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetRepr};
pub use icmpv4::{DstUnreachable, Icmpv4Repr};
pub use ipv4::Ipv4Repr;
pub use tcp::{MAX_SACK_BLOCKS, SackBlock, SackBlocks, TcpFlags, TcpOptions, TcpRepr};
pub use udp::UdpRepr;

/// Why a packet could not be parsed or emitted.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The packet is shorter than its headers or its length fields say.
    Truncated,
    /// A field holds a value the format forbids (bad version, header length, option
    /// length, ...), or a representation cannot be encoded.
    Malformed,
    /// The checksum does not match the contents.
    BadChecksum,
    /// The output buffer is too short for the encoding.
    BufferTooSmall,
    /// A valid packet of a kind this stack does not handle (e.g. ARP for a non-IPv4
    /// protocol).
    Unsupported,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            WireError::Truncated => "packet truncated",
            WireError::Malformed => "malformed packet",
            WireError::BadChecksum => "bad checksum",
            WireError::BufferTooSmall => "output buffer too small",
            WireError::Unsupported => "unsupported packet",
        };
        f.write_str(text)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

/// Which checksums the stack computes itself. A NIC with checksum offload verifies
/// received IPv4/TCP/UDP checksums and fills transmitted ones, so the embedder turns both
/// off.
///
/// With `fill_tx` off, the IPv4 header checksum field is written as zero and the TCP and
/// UDP checksum fields hold the folded pseudo-header sum, which is what offloading NICs
/// expect (they add the sum over the segment and store its complement). ICMP checksums are
/// always filled, since NICs do not offload them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksums {
    /// Verify the checksums of received packets.
    pub verify_rx: bool,
    /// Compute the checksums of transmitted packets.
    pub fill_tx: bool,
}

impl Default for Checksums {
    fn default() -> Self {
        Checksums { verify_rx: true, fill_tx: true }
    }
}

/// The IPv4 protocol field (IANA "Assigned Internet Protocol Numbers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// ICMP, protocol 1.
    Icmp,
    /// TCP, protocol 6.
    Tcp,
    /// UDP, protocol 17.
    Udp,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        match value {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(other) => other,
        }
    }
}

/// Reads a big-endian `u16` at `offset`, or `None` past the end.
fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let pair = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

/// Reads a big-endian `u32` at `offset`, or `None` past the end.
fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let quad = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]))
}

/// Reads an IPv4 address at `offset`, or `None` past the end.
fn read_ipv4(bytes: &[u8], offset: usize) -> Option<core::net::Ipv4Addr> {
    read_u32(bytes, offset).map(core::net::Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_protocol_round_trips_every_byte() {
        for value in 0..=u8::MAX {
            assert_eq!(u8::from(IpProtocol::from(value)), value);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(1), IpProtocol::Icmp);
        assert_eq!(IpProtocol::from(89), IpProtocol::Unknown(89));
    }

    #[test]
    fn checksums_default_to_software() {
        assert_eq!(Checksums::default(), Checksums { verify_rx: true, fill_tx: true });
    }

    #[test]
    fn errors_display_distinct_messages() {
        let all = [
            WireError::Truncated,
            WireError::Malformed,
            WireError::BadChecksum,
            WireError::BufferTooSmall,
            WireError::Unsupported,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(alloc::format!("{a}"), alloc::format!("{b}"));
            }
        }
    }

    #[test]
    fn readers_refuse_to_run_past_the_end() {
        assert_eq!(read_u16(&[1, 2, 3], 1), Some(0x0203));
        assert_eq!(read_u16(&[1, 2, 3], 2), None);
        assert_eq!(read_u16(&[1, 2, 3], usize::MAX), None);
        assert_eq!(read_u32(&[1, 2, 3, 4], 0), Some(0x0102_0304));
        assert_eq!(read_u32(&[1, 2, 3, 4], 1), None);
    }
}
