//! The Toeplitz receive-side-scaling hash (82599 datasheet §7.1.2.8.1 "RSS Hash Function";
//! Microsoft "RSS hashing functions" and "Verifying the RSS Hash Calculation").
//!
//! The NIC, the 82599 model and every kernel instance compute the same function with the
//! same 40-byte key, so they all agree on which flow group (low 7 bits of the hash, an index
//! into the 128-entry RETA) a 4-tuple belongs to.
//!
//! Two implementations: [`hash`] walks the input bit by bit exactly as the datasheet
//! describes it and is the reference; [`ToeplitzTable`] precomputes, for every input byte
//! position and byte value, the XOR of the key windows that byte selects, so a hash costs
//! one table lookup per input byte. Tests check them against each other.

/// Length of the RSS key (RSSRK holds 10 × 32 bits).
pub const KEY_LEN: usize = 40;

/// The longest input the 40-byte key can hash: every input bit consumes one key bit and
/// the last one still needs a full 32-bit window (320 − 32 = 288 bits).
pub const MAX_INPUT_LEN: usize = KEY_LEN - 4;

/// The key Microsoft publishes with its RSS verification suite, also the example key of the
/// 82599 datasheet §7.1.2.8.4. Any 40-byte key works; this one makes results comparable
/// with published vectors and other stacks.
pub const MICROSOFT_RSS_KEY: [u8; KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// The 32 key bits starting at bit `bit` (bit 0 = most significant bit of `key[0]`).
fn key_window(key: &[u8; KEY_LEN], bit: usize) -> u32 {
    let byte = bit / 8;
    let shift = bit % 8;
    // Gather 40 bits so a window that starts mid-byte still has 32 bits after the shift;
    // the fifth byte is past the key's end only for the last window, where it is unused.
    let mut wide: u64 = 0;
    for i in 0..5 {
        wide = (wide << 8) | u64::from(key.get(byte + i).copied().unwrap_or(0));
    }
    ((wide << shift) >> 8) as u32
}

/// Toeplitz hash of `input` with `key`, bit by bit (the reference implementation).
///
/// Input beyond [`MAX_INPUT_LEN`] bytes is hashed against zero key bits, i.e. ignored,
/// because the key has no bits left for it.
pub fn hash(key: &[u8; KEY_LEN], input: &[u8]) -> u32 {
    let mut result = 0u32;
    for (byte_index, byte) in input.iter().take(MAX_INPUT_LEN).enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= key_window(key, byte_index * 8 + bit);
            }
        }
    }
    result
}

/// The RSS input for IPv4 without ports: source address, then destination address
/// (datasheet §7.1.2.8.2, field order as in the packet).
pub fn ipv4_input(src: [u8; 4], dst: [u8; 4]) -> [u8; 8] {
    let mut input = [0u8; 8];
    input[..4].copy_from_slice(&src);
    input[4..].copy_from_slice(&dst);
    input
}

/// The RSS input for IPv4 with TCP (or UDP) ports: source address, destination address,
/// source port, destination port, all in network byte order.
pub fn ipv4_l4_input(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> [u8; 12] {
    let mut input = [0u8; 12];
    input[..4].copy_from_slice(&src);
    input[4..8].copy_from_slice(&dst);
    input[8..10].copy_from_slice(&sport.to_be_bytes());
    input[10..].copy_from_slice(&dport.to_be_bytes());
    input
}

/// Hash of an IPv4 address pair (the 82599's "IPv4" RSS field, MRQC bit 17).
pub fn hash_ipv4(key: &[u8; KEY_LEN], src: [u8; 4], dst: [u8; 4]) -> u32 {
    hash(key, &ipv4_input(src, dst))
}

/// Hash of an IPv4 TCP 4-tuple (the 82599's "TcpIPv4" RSS field, MRQC bit 16).
pub fn hash_ipv4_tcp(
    key: &[u8; KEY_LEN],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
) -> u32 {
    hash(key, &ipv4_l4_input(src, dst, sport, dport))
}

/// A Toeplitz hasher with the key expanded into per-byte lookup tables.
///
/// Building costs 36 × 256 window computations (about 37 KiB of tables); hashing costs one
/// lookup and one XOR per input byte.
#[derive(Clone)]
pub struct ToeplitzTable {
    key: [u8; KEY_LEN],
    /// `tables[i][v]` = hash contribution of input byte `i` having value `v`.
    tables: Box<[[u32; 256]; MAX_INPUT_LEN]>,
}

impl std::fmt::Debug for ToeplitzTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToeplitzTable").field("key", &self.key).finish_non_exhaustive()
    }
}

impl ToeplitzTable {
    /// Expands `key` into lookup tables.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let mut tables = Box::new([[0u32; 256]; MAX_INPUT_LEN]);
        for (position, table) in tables.iter_mut().enumerate() {
            let windows: [u32; 8] = std::array::from_fn(|bit| key_window(key, position * 8 + bit));
            for (value, slot) in table.iter_mut().enumerate() {
                *slot = windows
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| value & (0x80 >> bit) != 0)
                    .fold(0, |acc, (_, window)| acc ^ window);
            }
        }
        ToeplitzTable { key: *key, tables }
    }

    /// The key this table was built from.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// Toeplitz hash of `input`; bytes past [`MAX_INPUT_LEN`] are ignored, as in [`hash`].
    pub fn hash(&self, input: &[u8]) -> u32 {
        input.iter().zip(self.tables.iter()).fold(0, |acc, (&b, t)| acc ^ t[usize::from(b)])
    }

    /// Hash of an IPv4 address pair.
    pub fn hash_ipv4(&self, src: [u8; 4], dst: [u8; 4]) -> u32 {
        self.hash(&ipv4_input(src, dst))
    }

    /// Hash of an IPv4 TCP/UDP 4-tuple.
    pub fn hash_ipv4_tcp(&self, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> u32 {
        self.hash(&ipv4_l4_input(src, dst, sport, dport))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One row of Microsoft's IPv4 verification table: (destination, dport, source, sport,
    /// IPv4-only hash, IPv4-with-TCP hash).
    type Ipv4Vector = ([u8; 4], u16, [u8; 4], u16, u32, u32);

    const IPV4_VECTORS: [Ipv4Vector; 5] = [
        ([161, 142, 100, 80], 1766, [66, 9, 149, 187], 2794, 0x323e_8fc2, 0x51cc_c178),
        ([65, 69, 140, 83], 4739, [199, 92, 111, 2], 14230, 0xd718_262a, 0xc626_b0ea),
        ([12, 22, 207, 184], 38024, [24, 19, 198, 95], 12898, 0xd2d0_a5de, 0x5c2b_394a),
        ([209, 142, 163, 6], 2217, [38, 27, 205, 30], 48228, 0x8298_9176, 0xafc7_327f),
        ([202, 188, 127, 2], 1303, [153, 39, 163, 191], 44251, 0x5d18_09c5, 0x10e8_28a2),
    ];

    #[test]
    fn microsoft_ipv4_vectors_bitwise() {
        for (dst, dport, src, sport, ip_only, with_tcp) in IPV4_VECTORS {
            let key = &MICROSOFT_RSS_KEY;
            assert_eq!(hash_ipv4(key, src, dst), ip_only, "ipv4 {src:?} -> {dst:?}");
            assert_eq!(hash_ipv4_tcp(key, src, dst, sport, dport), with_tcp, "tcp {src:?}");
        }
    }

    #[test]
    fn microsoft_ipv4_vectors_table() {
        let table = ToeplitzTable::new(&MICROSOFT_RSS_KEY);
        for (dst, dport, src, sport, ip_only, with_tcp) in IPV4_VECTORS {
            assert_eq!(table.hash_ipv4(src, dst), ip_only);
            assert_eq!(table.hash_ipv4_tcp(src, dst, sport, dport), with_tcp);
        }
    }

    #[test]
    fn microsoft_ipv6_vector_exercises_full_key_length() {
        // First entry of Microsoft's IPv6 table (3ffe:2501:200:1fff::7 port 2794 →
        // 3ffe:2501:200:3::1 port 1766): 36 input bytes use every key bit.
        let src = [0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7];
        let dst = [0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut input = Vec::new();
        input.extend_from_slice(&src);
        input.extend_from_slice(&dst);
        assert_eq!(hash(&MICROSOFT_RSS_KEY, &input), 0x2cc1_8cd5);
        input.extend_from_slice(&2794u16.to_be_bytes());
        input.extend_from_slice(&1766u16.to_be_bytes());
        assert_eq!(hash(&MICROSOFT_RSS_KEY, &input), 0x4020_7d3d);
        assert_eq!(ToeplitzTable::new(&MICROSOFT_RSS_KEY).hash(&input), 0x4020_7d3d);
    }

    #[test]
    fn key_window_reads_unaligned_bits() {
        let mut key = [0u8; KEY_LEN];
        key[0] = 0x01;
        key[1] = 0x80;
        // Window at bit 7 starts with the two set bits.
        assert_eq!(key_window(&key, 7), 0xC000_0000);
        assert_eq!(key_window(&key, 0), 0x0180_0000);
    }

    proptest! {
        #[test]
        fn table_matches_bitwise(key in proptest::array::uniform32(any::<u8>()),
                                 tail in proptest::array::uniform8(any::<u8>()),
                                 input in proptest::collection::vec(any::<u8>(), 0..=MAX_INPUT_LEN + 4)) {
            let mut full = [0u8; KEY_LEN];
            full[..32].copy_from_slice(&key);
            full[32..].copy_from_slice(&tail);
            let table = ToeplitzTable::new(&full);
            prop_assert_eq!(table.hash(&input), hash(&full, &input));
        }

        #[test]
        fn hash_is_linear_in_the_input(a in proptest::array::uniform12(any::<u8>()),
                                       b in proptest::array::uniform12(any::<u8>())) {
            // Toeplitz is XOR-linear: h(a ^ b) = h(a) ^ h(b). A wrong window makes this fail.
            let x: Vec<u8> = a.iter().zip(b.iter()).map(|(p, q)| p ^ q).collect();
            let k = &MICROSOFT_RSS_KEY;
            prop_assert_eq!(hash(k, &x), hash(k, &a) ^ hash(k, &b));
        }
    }
}
