//! Initial sequence numbers (RFC 6528 §3, RFC 9293 §3.4.1) and per-host-pair timestamp
//! offsets (RFC 7323 §5.4 and appendix; Linux randomises each pair's TSval base the same
//! way, `secure_tcp_ts_off`).
//!
//! `ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`, with M a 4 µs
//! clock and F SipHash-2-4 keyed with the embedder's secret. Successive incarnations of a
//! 4-tuple therefore get increasing ISNs (so old duplicates stay out of the new window),
//! while an off-path attacker who does not know the secret cannot predict another
//! tuple's ISN from its own.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

use super::siphash::siphash24;
use crate::tcp::seq::SeqNumber;
use crate::time::Instant;

/// Length of one tick of M (RFC 9293 §3.4.1: "bound to a (possibly fictitious) 32 bit
/// clock whose low order bit is incremented roughly every 4 microseconds").
const ISN_TICK_NANOS: u64 = 4_000;

/// Domain-separation tags: one secret feeds two independent PRFs.
const TAG_ISN: u8 = 1;
const TAG_TS_OFFSET: u8 = 2;

/// Generates RFC 6528 initial sequence numbers and timestamp offsets from a secret the
/// embedder supplies (it should come from a cryptographic random source at start-up, and
/// be the same on every instance only if connections migrate between them).
#[derive(Clone)]
pub struct IsnGenerator {
    secret: [u8; 16],
}

impl IsnGenerator {
    /// A generator keyed with `secret`.
    pub fn new(secret: [u8; 16]) -> Self {
        IsnGenerator { secret }
    }

    /// The ISN for a connection between `local` and `remote` opened at `now`.
    pub fn isn(&self, local: SocketAddrV4, remote: SocketAddrV4, now: Instant) -> SeqNumber {
        // M wraps every 2^32 ticks (about 4.8 hours), as the RFC's 32-bit clock does.
        let clock = (now.as_nanos() / ISN_TICK_NANOS) as u32;
        let mut message = [0u8; 13];
        message[0] = TAG_ISN;
        message[1..5].copy_from_slice(&local.ip().octets());
        message[5..7].copy_from_slice(&local.port().to_be_bytes());
        message[7..11].copy_from_slice(&remote.ip().octets());
        message[11..13].copy_from_slice(&remote.port().to_be_bytes());
        SeqNumber((siphash24(&self.secret, &message) as u32).wrapping_add(clock))
    }

    /// The offset added to the timestamp clock for segments between `local` and `remote`.
    /// Keyed by addresses only, not ports, so PAWS across successive connections between
    /// the same hosts still sees a monotonic clock (RFC 7323 §5.4).
    pub fn ts_offset(&self, local: Ipv4Addr, remote: Ipv4Addr) -> u32 {
        let mut message = [0u8; 9];
        message[0] = TAG_TS_OFFSET;
        message[1..5].copy_from_slice(&local.octets());
        message[5..9].copy_from_slice(&remote.octets());
        siphash24(&self.secret, &message) as u32
    }
}

/// Slots of [`TsOffsetCache`].
const TS_OFFSET_SLOTS: usize = 64;

/// Recently computed timestamp offsets, so that a host pair costs one SipHash per
/// connection (its ISN) rather than two: the offset depends on the addresses only.
/// Direct-mapped by address bits; a miss just computes the offset again.
#[derive(Clone, Debug)]
pub(crate) struct TsOffsetCache {
    /// `(local, remote, offset)`; a slot is valid when its addresses match.
    slots: [Option<(Ipv4Addr, Ipv4Addr, u32)>; TS_OFFSET_SLOTS],
}

impl Default for TsOffsetCache {
    fn default() -> Self {
        TsOffsetCache { slots: [None; TS_OFFSET_SLOTS] }
    }
}

impl TsOffsetCache {
    /// [`IsnGenerator::ts_offset`] for `local` and `remote`, from the cache when possible.
    pub(crate) fn get(&mut self, isn: &IsnGenerator, local: Ipv4Addr, remote: Ipv4Addr) -> u32 {
        let slot = (local.to_bits() ^ remote.to_bits()) as usize % TS_OFFSET_SLOTS;
        match self.slots.get_mut(slot) {
            Some(Some((l, r, offset))) if *l == local && *r == remote => *offset,
            Some(entry) => {
                let offset = isn.ts_offset(local, remote);
                *entry = Some((local, remote, offset));
                offset
            }
            None => isn.ts_offset(local, remote),
        }
    }
}

impl fmt::Debug for IsnGenerator {
    /// Leaves the secret out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsnGenerator").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use core::time::Duration;

    const SECRET: [u8; 16] = *b"0123456789abcdef";

    fn addr(ip: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(ip), port)
    }

    #[test]
    fn each_part_of_the_tuple_changes_the_isn() {
        let g = IsnGenerator::new(SECRET);
        let now = Instant::from_secs(10);
        let base = g.isn(addr([10, 0, 0, 1], 80), addr([10, 0, 0, 2], 40000), now);
        let variants = [
            g.isn(addr([10, 0, 0, 9], 80), addr([10, 0, 0, 2], 40000), now),
            g.isn(addr([10, 0, 0, 1], 81), addr([10, 0, 0, 2], 40000), now),
            g.isn(addr([10, 0, 0, 1], 80), addr([10, 0, 0, 3], 40000), now),
            g.isn(addr([10, 0, 0, 1], 80), addr([10, 0, 0, 2], 40001), now),
            // Swapping the ends is a different connection.
            g.isn(addr([10, 0, 0, 2], 40000), addr([10, 0, 0, 1], 80), now),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }

    #[test]
    fn isn_advances_one_per_four_microseconds() {
        let g = IsnGenerator::new(SECRET);
        let (l, r) = (addr([192, 168, 1, 1], 443), addr([192, 168, 1, 7], 51000));
        let t0 = Instant::from_secs(3);
        let isn0 = g.isn(l, r, t0);
        assert_eq!(g.isn(l, r, t0 + Duration::from_nanos(3_999)), isn0);
        assert_eq!(g.isn(l, r, t0 + Duration::from_micros(4)).since(isn0), 1);
        assert_eq!(g.isn(l, r, t0 + Duration::from_millis(1)).since(isn0), 250);
        assert_eq!(g.isn(l, r, t0 + Duration::from_secs(1)).since(isn0), 250_000);
    }

    #[test]
    fn isn_depends_on_the_secret() {
        let (l, r) = (addr([10, 1, 1, 1], 80), addr([10, 1, 1, 2], 1234));
        let now = Instant::from_millis(77);
        let mut other = SECRET;
        other[0] ^= 0x80;
        assert_ne!(
            IsnGenerator::new(SECRET).isn(l, r, now),
            IsnGenerator::new(other).isn(l, r, now)
        );
    }

    #[test]
    fn ts_offset_is_stable_per_pair_and_differs_between_pairs() {
        let g = IsnGenerator::new(SECRET);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        let c = Ipv4Addr::new(10, 0, 0, 3);
        assert_eq!(g.ts_offset(a, b), g.ts_offset(a, b));
        assert_ne!(g.ts_offset(a, b), g.ts_offset(a, c));
        assert_ne!(g.ts_offset(a, b), g.ts_offset(b, a));
        let mut other = SECRET;
        other[15] ^= 1;
        assert_ne!(IsnGenerator::new(other).ts_offset(a, b), g.ts_offset(a, b));
    }

    #[test]
    fn isn_is_siphash_of_the_tuple_in_network_order() {
        // The message layout is part of the ISN's definition (successive versions of the
        // stack must agree on it for connections to migrate between them).
        let g = IsnGenerator::new(SECRET);
        let (l, r) = (addr([10, 0, 0, 1], 0x1234), addr([10, 0, 0, 2], 0xabcd));
        let mut hasher = crate::stack::siphash::SipHasher24::new(&SECRET);
        hasher.write(&[TAG_ISN, 10, 0, 0, 1]);
        hasher.write_u16(0x1234);
        hasher.write(&[10, 0, 0, 2]);
        hasher.write_u16(0xabcd);
        assert_eq!(g.isn(l, r, Instant::ZERO), SeqNumber(hasher.finish() as u32));
    }

    #[test]
    fn cached_ts_offsets_equal_computed_ones() {
        let g = IsnGenerator::new(SECRET);
        let mut cache = TsOffsetCache::default();
        let local = Ipv4Addr::new(10, 0, 0, 1);
        // More remote hosts than slots, twice over, so slots are shared and replaced.
        for round in 0..2 {
            for host in 0..200u32 {
                let remote = Ipv4Addr::from_bits(0x0a00_0000 | host << 3);
                assert_eq!(
                    cache.get(&g, local, remote),
                    g.ts_offset(local, remote),
                    "round {round}, host {host}"
                );
            }
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?}", IsnGenerator::new(SECRET));
        assert!(!shown.contains("48"), "{shown}"); // b'0' == 48
        assert!(shown.starts_with("IsnGenerator"));
    }
}
