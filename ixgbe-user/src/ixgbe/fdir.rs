//! Flow Director perfect-match filters: the filter key and the bucket hash (82599
//! datasheet §7.1.2.7 "Flow Director Filters", hash function in §7.1.2.7.15).
//!
//! The device finds a perfect filter by hashing the packet's fields into a bucket and
//! comparing the filters stored in that bucket, so software must program each filter
//! with the same bucket hash (FDIRHASH) the device will compute for matching packets.
//! The driver and the model both use [`bucket_hash`].
//!
//! The hash input is the 11-dword filter stream (VLAN/flow type/pool, destination and
//! source IPv6-sized addresses, ports, flex bytes), masked by FDIRM. Because the hash is
//! XOR-linear, the datasheet's bit-serial definition folds to: XOR all address/port dwords
//! into one "common" dword, then XOR in shifted copies selected by the 32 key bits, the low
//! 16 key bits acting on the half-word-swapped common dword.

use std::net::Ipv4Addr;

/// Transport protocol of a filter (FDIRCMD.L4TYPE, §8.2.3.21.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Protocol {
    /// UDP (L4TYPE 1).
    Udp,
    /// TCP (L4TYPE 2).
    Tcp,
}

impl L4Protocol {
    /// The FDIRCMD.L4TYPE / hash "flow type" code.
    pub fn flow_type(self) -> u32 {
        match self {
            L4Protocol::Udp => 1,
            L4Protocol::Tcp => 2,
        }
    }

    /// From the FDIRCMD.L4TYPE code.
    pub fn from_flow_type(code: u32) -> Option<Self> {
        match code {
            1 => Some(L4Protocol::Udp),
            2 => Some(L4Protocol::Tcp),
            _ => None,
        }
    }

    /// From the IPv4 protocol number.
    pub fn from_ip_protocol(proto: u8) -> Option<Self> {
        match proto {
            6 => Some(L4Protocol::Tcp),
            17 => Some(L4Protocol::Udp),
            _ => None,
        }
    }
}

/// The fields a perfect IPv4 filter compares: protocol and 4-tuple, as seen in received
/// packets (source = the remote peer for an incoming connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdirFilter {
    /// TCP or UDP.
    pub protocol: L4Protocol,
    /// Source address of matching packets.
    pub src_ip: Ipv4Addr,
    /// Destination address of matching packets.
    pub dst_ip: Ipv4Addr,
    /// Source port of matching packets.
    pub src_port: u16,
    /// Destination port of matching packets.
    pub dst_port: u16,
}

/// Bucket hash bits kept: 13, enough for the largest table (8K buckets, §7.1.2.7.4).
pub const BUCKET_HASH_MASK: u32 = 0x1FFF;

/// The bucket hash of `filter` under the 32-bit hash key (FDIRHKEY), with VLAN, pool and
/// flex bytes masked out (FDIRM = VLANID | VLANP | POOL | FLEX, as the driver programs it).
pub fn bucket_hash(key: u32, filter: &FdirFilter) -> u32 {
    // Stream dword 0 holds pool (byte 0), flow type (byte 1) and VLAN (bytes 2-3).
    let flow_vlan = filter.protocol.flow_type() << 16;
    // Dwords 1..=10: destination address (4 dwords, IPv4 in the first), source address
    // (4 dwords), ports (source in the high half), flex bytes and the hash itself (zero).
    let ports = (u32::from(filter.src_port) << 16) | u32::from(filter.dst_port);
    let common = u32::from(filter.dst_ip) ^ u32::from(filter.src_ip) ^ ports;

    let hi = common ^ flow_vlan ^ (flow_vlan >> 16);
    let mut lo = common.rotate_left(16);
    let mut hash = 0u32;
    for n in 0..16 {
        if n == 1 {
            // Bit 0 of the stream is excluded from the low half, so dword 0 joins the low
            // word only from the second step on.
            lo ^= flow_vlan ^ (flow_vlan << 16);
        }
        if key & (1 << n) != 0 {
            hash ^= lo >> n;
        }
        if key & (1 << (n + 16)) != 0 {
            hash ^= hi >> n;
        }
    }
    hash & BUCKET_HASH_MASK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ixgbe::regs::FDIR_BUCKET_HASH_KEY;
    use proptest::prelude::*;

    fn filter(sport: u16) -> FdirFilter {
        FdirFilter {
            protocol: L4Protocol::Tcp,
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: sport,
            dst_port: 80,
        }
    }

    #[test]
    fn hash_fits_the_bucket_field_and_depends_on_every_field() {
        let base = filter(1000);
        let h = bucket_hash(FDIR_BUCKET_HASH_KEY, &base);
        assert!(h <= BUCKET_HASH_MASK);
        let variants = [
            FdirFilter { protocol: L4Protocol::Udp, ..base },
            FdirFilter { src_ip: Ipv4Addr::new(10, 0, 0, 9), ..base },
            FdirFilter { dst_ip: Ipv4Addr::new(10, 0, 0, 9), ..base },
            FdirFilter { src_port: 1001, ..base },
            FdirFilter { dst_port: 81, ..base },
        ];
        for v in variants {
            assert_ne!(bucket_hash(FDIR_BUCKET_HASH_KEY, &v), h, "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn hash_is_linear_in_the_key(k1 in any::<u32>(), k2 in any::<u32>(), a in any::<u32>(),
                                     b in any::<u32>(), sp in any::<u16>(), dp in any::<u16>()) {
            // Each key bit selects one shifted term, so keys combine by XOR; a term applied
            // to the wrong key bit breaks this.
            let f = FdirFilter {
                protocol: L4Protocol::Tcp,
                src_ip: Ipv4Addr::from(a), dst_ip: Ipv4Addr::from(b), src_port: sp, dst_port: dp,
            };
            prop_assert_eq!(bucket_hash(k1 ^ k2, &f), bucket_hash(k1, &f) ^ bucket_hash(k2, &f));
        }

        #[test]
        fn addresses_enter_the_hash_symmetrically(a in any::<u32>(), b in any::<u32>(), sp in any::<u16>()) {
            // The device XORs the source and destination dwords together before hashing.
            let f = FdirFilter {
                protocol: L4Protocol::Udp,
                src_ip: Ipv4Addr::from(a), dst_ip: Ipv4Addr::from(b), src_port: sp, dst_port: 53,
            };
            let swapped = FdirFilter { src_ip: f.dst_ip, dst_ip: f.src_ip, ..f };
            prop_assert_eq!(bucket_hash(FDIR_BUCKET_HASH_KEY, &f), bucket_hash(FDIR_BUCKET_HASH_KEY, &swapped));
        }
    }
}
