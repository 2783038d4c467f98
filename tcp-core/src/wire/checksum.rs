//! The Internet checksum: the 16-bit one's-complement sum of RFC 1071 §1-2, the IPv4
//! pseudo-header of RFC 9293 §3.1 / RFC 768, and the incremental update of RFC 1624 §3
//! (equation 3).
//!
//! Sums returned here are *folded but not complemented*; a checksum field holds the
//! complement of the combined sum (`!combine(&[..])`).

use core::net::Ipv4Addr;

use super::IpProtocol;

/// Folds a 64-bit one's-complement accumulator to 16 bits (RFC 1071 §2(C)) in two
/// branch-free steps. Adding a word to itself rotated by half its width puts
/// `high + low` in the upper half, and the carry out of the lower half is exactly the
/// end-around carry of that addition, so the value stays congruent modulo 2^16 - 1. The
/// result is zero only for a zero sum.
fn fold(sum: u64) -> u16 {
    let half = (sum.wrapping_add(sum.rotate_left(32)) >> 32) as u32;
    (half.wrapping_add(half.rotate_left(16)) >> 16) as u16
}

/// `a + b + carry` with the carry out: the shape LLVM lowers to one `adc` per word.
fn add_with_carry(a: u64, b: u64, carry: bool) -> (u64, bool) {
    let (sum, first) = a.overflowing_add(b);
    let (sum, second) = sum.overflowing_add(u64::from(carry));
    (sum, first | second)
}

/// Adds the native-endian 64-bit words of `block` (`N` a multiple of 8) to `sum` in one
/// carry chain; returns the sum and the carry out of the last word.
fn add_words<const N: usize>(mut sum: u64, block: &[u8; N]) -> (u64, bool) {
    let mut carry = false;
    for word in block.chunks_exact(8) {
        // Always eight bytes: `N` is a constant multiple of 8, so this compiles to a load.
        if let Ok(word) = <[u8; 8]>::try_from(word) {
            (sum, carry) = add_with_carry(sum, u64::from_ne_bytes(word), carry);
        }
    }
    (sum, carry)
}

/// Bytes summed per loop iteration of [`data`]: eight words in one carry chain.
const BLOCK_LEN: usize = 64;

/// The folded one's-complement sum of `bytes` taken as big-endian 16-bit words; an odd
/// final byte is padded with a zero octet (RFC 1071 §1). The result is not complemented.
pub fn data(bytes: &[u8]) -> u16 {
    sum(0, bytes)
}

/// [`data`] over an IPv4 header without options, the length almost every packet has
/// (parsed once, emitted once): with the length known the sum is straight-line code.
#[inline]
pub(crate) fn ipv4_header(bytes: &[u8; 20]) -> u16 {
    sum(0, bytes)
}

/// The folded sum over the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768) and `segment`
/// (a TCP or UDP header and its data, `length` bytes), in one pass: the value of
/// `combine(&[pseudo_header_ipv4(src, dst, protocol, length), data(segment)])`.
pub(crate) fn pseudo_header_ipv4_and_data(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    length: u32,
    segment: &[u8],
) -> u16 {
    // The pseudo-header's words as they would lie in memory (the sum runs in native
    // order): the addresses, then zero and protocol, then the length. A length above 16
    // bits adds its high word, as `pseudo_header_ipv4` does.
    let pseudo = u64::from(u32::from_ne_bytes(src.octets()))
        + u64::from(u32::from_ne_bytes(dst.octets()))
        + u64::from(u16::from_ne_bytes([0, u8::from(protocol)]))
        + u64::from(u32::from_ne_bytes(length.to_be_bytes()));
    sum(pseudo, segment)
}

/// The body of [`data`], starting from `initial`, a sum of native-order words below
/// 2^62; inlined so that callers with a constant length get straight-line code.
#[inline(always)]
fn sum(initial: u64, bytes: &[u8]) -> u16 {
    // RFC 1071 §2(B): the one's-complement sum does not depend on byte order, so the words
    // are summed as they lie in memory (native order, no swap per word) and the folded
    // result is swapped once at the end. §2(A)/(C): a 64-bit word is four 16-bit words
    // whose carries are deferred (2^16 ≡ 1 mod 2^16 - 1), and a carry out of bit 63 is
    // worth 1 (2^64 ≡ 1). So eight words go through one add-with-carry chain (one
    // instruction per 8 bytes) and only the chain's final carry is counted, in `carries`,
    // which grows by at most one per 8 bytes and cannot overflow.
    let mut sum = initial;
    let mut carries = 0u64;
    let mut blocks = bytes.chunks_exact(BLOCK_LEN);
    for block in &mut blocks {
        // Always a whole block; the conversion only tells the compiler the length.
        if let Ok(block) = <&[u8; BLOCK_LEN]>::try_from(block) {
            let carry;
            (sum, carry) = add_words(sum, block);
            carries += u64::from(carry);
        }
    }
    // The last 0-63 bytes by halving sizes: straight-line code, no loop, which is what
    // headers and small segments take.
    let mut rest = blocks.remainder();
    if let Some((block, tail)) = rest.split_first_chunk::<32>() {
        let carry;
        (sum, carry) = add_words(sum, block);
        carries += u64::from(carry);
        rest = tail;
    }
    if let Some((block, tail)) = rest.split_first_chunk::<16>() {
        let carry;
        (sum, carry) = add_words(sum, block);
        carries += u64::from(carry);
        rest = tail;
    }
    if let Some((block, tail)) = rest.split_first_chunk::<8>() {
        let carry;
        (sum, carry) = add_words(sum, block);
        carries += u64::from(carry);
        rest = tail;
    }
    // At most 0xffff_ffff + 0xffff + 0xff00 in total: no overflow.
    let mut tail_sum = 0u64;
    if let Some((word, tail)) = rest.split_first_chunk::<4>() {
        tail_sum += u64::from(u32::from_ne_bytes(*word));
        rest = tail;
    }
    if let Some((word, tail)) = rest.split_first_chunk::<2>() {
        tail_sum += u64::from(u16::from_ne_bytes(*word));
        rest = tail;
    }
    if let [last] = rest {
        tail_sum += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    let (sum, carry) = add_with_carry(sum, tail_sum, false);
    let (sum, carry) = add_with_carry(sum, carries, carry);
    // Cannot overflow: `carries <= bytes.len() / 8`, so after a carry out `sum <= carries`.
    let native = fold(sum + u64::from(carry));
    u16::from_be_bytes(native.to_ne_bytes())
}

/// Combines partial sums (each from [`data`], [`pseudo_header_ipv4`] or `combine`) into one
/// folded sum. The partial sums must each cover an even number of bytes, except the last.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&sum| u64::from(sum)).sum())
}

/// The folded sum of the IPv4 pseudo-header that TCP and UDP checksums cover: source,
/// destination, zero, protocol, and the length of the TCP/UDP header plus data
/// (RFC 9293 §3.1, RFC 768).
pub fn pseudo_header_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u32) -> u16 {
    let src = u32::from(src);
    let dst = u32::from(dst);
    let sum = u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff)
        + u64::from(u8::from(protocol))
        + u64::from(length >> 16)
        + u64::from(length & 0xffff);
    fold(sum)
}

/// The new value of a checksum field after one 16-bit word it covers changes from
/// `old_word` to `new_word`, without summing the whole header again: RFC 1624 §3,
/// equation 3, `HC' = ~(~HC + ~m + m')`. That form (unlike RFC 1141's) never turns a
/// valid checksum into the negative zero `0xffff` unless the covered data is all zeros.
pub fn update(old_checksum: u16, old_word: u16, new_word: u16) -> u16 {
    !fold(u64::from(!old_checksum) + u64::from(!old_word) + u64::from(new_word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Folding as RFC 1071 §2(C) words it: add the carries back until none are left.
    fn fold_one_carry_at_a_time(mut sum: u64) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The plainest possible RFC 1071 sum, to check the fast one against.
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = match pair {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                [hi] => u16::from_be_bytes([*hi, 0]),
                _ => unreachable!(),
            };
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn rfc1071_worked_example() {
        // RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        assert_eq!(data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }

    #[test]
    fn ipv4_header_with_its_checksum_sums_to_all_ones() {
        // A header Linux sent (ICMP port unreachable, captured on lo), checksum 0x93db.
        let header = [
            0x45, 0xc0, 0x00, 0x3d, 0xe8, 0x22, 0x00, 0x00, 0x40, 0x01, 0x93, 0xdb, 0x7f, 0x00,
            0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
        ];
        assert_eq!(data(&header), 0xffff);
        let mut zeroed = header;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(!data(&zeroed), 0x93db);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0x12, 0x34, 0xab]), 0x12 * 256 + 0x34 + 0xab00);
        assert_eq!(data(&[]), 0);
    }

    #[test]
    fn sums_of_all_ones_stay_all_ones() {
        // Many 0xffff words exercise every carry path of the wide accumulators.
        let bytes = [0xffu8; 1501];
        assert_eq!(data(&bytes), reference_sum(&bytes));
    }

    #[test]
    fn all_ones_of_every_length_and_alignment() {
        // 0xff bytes make every add in the carry chains carry out.
        let bytes = [0xffu8; 300];
        for start in 0..8 {
            for end in start..bytes.len() {
                assert_eq!(data(&bytes[start..end]), reference_sum(&bytes[start..end]));
            }
        }
    }

    proptest! {
        #[test]
        fn one_pass_pseudo_header_sum_equals_combining_the_parts(
            (src, dst, protocol) in (any::<u32>(), any::<u32>(), any::<u8>()),
            segment in proptest::collection::vec(any::<u8>(), 0..300),
            length in prop_oneof![any::<u32>(), Just(0u32), Just(u32::MAX)],
        ) {
            let (src, dst, protocol) = (Ipv4Addr::from(src), Ipv4Addr::from(dst), IpProtocol::from(protocol));
            prop_assert_eq!(
                pseudo_header_ipv4_and_data(src, dst, protocol, length, &segment),
                combine(&[pseudo_header_ipv4(src, dst, protocol, length), data(&segment)])
            );
        }

        #[test]
        fn ipv4_header_sum_equals_reference(bytes in proptest::array::uniform20(any::<u8>())) {
            prop_assert_eq!(ipv4_header(&bytes), reference_sum(&bytes));
        }
    }

    #[test]
    fn pseudo_header_matches_byte_layout() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 7, 200);
        let bytes = [10, 0, 0, 1, 192, 168, 7, 200, 0, 6, 0x05, 0xdc];
        assert_eq!(pseudo_header_ipv4(src, dst, IpProtocol::Tcp, 1500), data(&bytes));
    }

    #[test]
    fn update_example_from_rfc1624() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest! {
        #[test]
        fn fast_sum_equals_reference(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(data(&bytes), reference_sum(&bytes));
        }

        /// Frame-sized inputs starting at any offset of their buffer, so every tail length
        /// and alignment of the 32-byte blocks is covered; biased towards 0xff bytes, which
        /// produce the most carries.
        #[test]
        fn fast_sum_equals_reference_for_frames(
            bytes in proptest::collection::vec(
                prop_oneof![Just(0xffu8), Just(0xfeu8), any::<u8>()],
                0..2000,
            ),
            start in 0usize..64,
        ) {
            let slice = bytes.get(start..).unwrap_or_default();
            prop_assert_eq!(data(slice), reference_sum(slice));
        }

        /// Random lengths, each summed from every start offset 0..16 of its buffer, so the
        /// words are read at every alignment and every split between the 64-byte loop,
        /// the halving steps and the odd byte is reached.
        #[test]
        fn fast_sum_equals_reference_at_every_alignment(
            bytes in proptest::collection::vec(any::<u8>(), 0..2016),
            len in 0usize..2000,
        ) {
            for start in 0..16 {
                if let Some(slice) = bytes.get(start..start + len) {
                    prop_assert_eq!(data(slice), reference_sum(slice), "start {}", start);
                }
            }
        }

        /// The branch-free fold agrees with folding one carry at a time.
        #[test]
        fn fold_equals_folding_one_carry_at_a_time(sum in prop_oneof![
            any::<u64>(),
            Just(0u64),
            Just(u64::MAX),
            (0u32..4).prop_map(|k| 0xffffu64 << (16 * k)),
        ]) {
            prop_assert_eq!(fold(sum), fold_one_carry_at_a_time(sum));
        }

        #[test]
        fn combine_equals_sum_over_concatenation(
            a in proptest::collection::vec(any::<u16>(), 0..40),
            b in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let a: Vec<u8> = a.iter().flat_map(|w| w.to_be_bytes()).collect();
            let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(combine(&[data(&a), data(&b)]), reference_sum(&whole));
        }

        /// An IPv4-like header (version nibble never zero, so the data is never all zero,
        /// the one case where RFC 1624 eqn. 3 and recomputation pick different zeros).
        #[test]
        fn incremental_update_equals_recompute(
            mut header in proptest::array::uniform20(any::<u8>()),
            word_index in 0usize..8,
            new_word in any::<u16>(),
        ) {
            header[0] = 0x45;
            header[10] = 0;
            header[11] = 0;
            let checksum = !data(&header);
            header[10..12].copy_from_slice(&checksum.to_be_bytes());
            // Any word except the first (version) and the checksum field itself (word 5).
            let offset = 2 * if word_index >= 4 { word_index + 2 } else { word_index + 1 };
            let old_word = u16::from_be_bytes([header[offset], header[offset + 1]]);
            header[offset..offset + 2].copy_from_slice(&new_word.to_be_bytes());
            header[10] = 0;
            header[11] = 0;
            let recomputed = !data(&header);
            prop_assert_eq!(update(checksum, old_word, new_word), recomputed);
        }
    }
}
