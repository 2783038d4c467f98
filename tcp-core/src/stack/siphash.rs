//! SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012, §2), the
//! keyed PRF behind the ISN generator (RFC 6528 §3 asks for a keyed hash of the 4-tuple)
//! and the SYN-cookie MACs (RFC 4987 §3.6).
//!
//! Inputs here are a dozen bytes, so the hasher favours simplicity over throughput.

/// The initialisation constants of §2 ("somepseudorandomlygeneratedbytes" in ASCII).
const INIT: [u64; 4] =
    [0x736f_6d65_7073_6575, 0x646f_7261_6e64_6f6d, 0x6c79_6765_6e65_7261, 0x7465_6462_7974_6573];

/// An incremental SipHash-2-4 computation: two compression rounds per 8-byte word, four
/// finalisation rounds, 64-bit output.
#[derive(Clone, Debug)]
pub(crate) struct SipHasher24 {
    state: [u64; 4],
    /// Bytes not yet compressed, little-endian, `pending_len` of them.
    pending: u64,
    pending_len: u32,
    /// Total message length; only its low byte enters the hash (§2, finalisation).
    total_len: u64,
}

impl SipHasher24 {
    /// A hasher keyed with `key`, read as two little-endian 64-bit words as the paper does.
    pub(crate) fn new(key: &[u8; 16]) -> SipHasher24 {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = *key;
        let k0 = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
        let k1 = u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
        SipHasher24 {
            state: [k0 ^ INIT[0], k1 ^ INIT[1], k0 ^ INIT[2], k1 ^ INIT[3]],
            pending: 0,
            pending_len: 0,
            total_len: 0,
        }
    }

    /// Appends `data` to the message.
    pub(crate) fn write(&mut self, data: &[u8]) {
        self.total_len = self.total_len.wrapping_add(data.len() as u64);
        let mut rest = data;
        // Top up a partial word first so the bulk loop works on whole words.
        while self.pending_len != 0 {
            let Some((&byte, tail)) = rest.split_first() else { return };
            self.push_byte(byte);
            rest = tail;
        }
        let mut words = rest.chunks_exact(8);
        for word in &mut words {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            self.compress(u64::from_le_bytes(bytes));
        }
        for &byte in words.remainder() {
            self.push_byte(byte);
        }
    }

    /// Appends a 16-bit value in network byte order.
    pub(crate) fn write_u16(&mut self, value: u16) {
        self.write(&value.to_be_bytes());
    }

    /// Appends a 32-bit value in network byte order.
    pub(crate) fn write_u32(&mut self, value: u32) {
        self.write(&value.to_be_bytes());
    }

    /// The 64-bit tag of everything written so far.
    pub(crate) fn finish(self) -> u64 {
        let last = ((self.total_len & 0xff) << 56) | self.pending;
        self.finalize(last)
    }

    /// Compresses the last word (the leftover bytes and the length byte, §2) and runs the
    /// finalisation rounds.
    fn finalize(mut self, last: u64) -> u64 {
        self.compress(last);
        self.state[2] ^= 0xff;
        for _ in 0..4 {
            self.round();
        }
        self.state[0] ^ self.state[1] ^ self.state[2] ^ self.state[3]
    }

    fn push_byte(&mut self, byte: u8) {
        self.pending |= u64::from(byte) << (8 * self.pending_len);
        self.pending_len += 1;
        if self.pending_len == 8 {
            let word = self.pending;
            self.pending = 0;
            self.pending_len = 0;
            self.compress(word);
        }
    }

    fn compress(&mut self, word: u64) {
        self.state[3] ^= word;
        self.round();
        self.round();
        self.state[0] ^= word;
    }

    /// One SipRound (§2, figure 2.1).
    fn round(&mut self) {
        let [mut v0, mut v1, mut v2, mut v3] = self.state;
        v0 = v0.wrapping_add(v1);
        v1 = v1.rotate_left(13) ^ v0;
        v0 = v0.rotate_left(32);
        v2 = v2.wrapping_add(v3);
        v3 = v3.rotate_left(16) ^ v2;
        v0 = v0.wrapping_add(v3);
        v3 = v3.rotate_left(21) ^ v0;
        v2 = v2.wrapping_add(v1);
        v1 = v1.rotate_left(17) ^ v2;
        v2 = v2.rotate_left(32);
        self.state = [v0, v1, v2, v3];
    }
}

/// SipHash-2-4 of `data` under `key`, in one call: whole words straight from the slice and
/// the tail in one piece, without the incremental hasher's byte-at-a-time buffering.
pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new(key);
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        hasher.compress(u64::from_le_bytes(bytes));
    }
    let rest = words.remainder();
    let mut last = [0u8; 8];
    if let Some(head) = last.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    last[7] = data.len() as u8;
    hasher.finalize(u64::from_le_bytes(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    /// Expected outputs for key 00..0f and messages 00 01 .. (n-1), n = 0..=15, from the
    /// reference implementation's vector table (the paper's appendix A works through n = 15).
    const VECTORS: [u64; 16] = [
        0x726f_db47_dd0e_0e31,
        0x74f8_39c5_93dc_67fd,
        0x0d6c_8009_d9a9_4f5a,
        0x8567_6696_d7fb_7e2d,
        0xcf27_94e0_2771_87b7,
        0x1876_5564_cd99_a68d,
        0xcbc9_466e_58fe_e3ce,
        0xab02_00f5_8b01_d137,
        0x93f5_f579_9a93_2462,
        0x9e00_82df_0ba9_e4b0,
        0x7a5d_bbc5_94dd_b9f3,
        0xf4b3_2f46_226b_ada7,
        0x751e_8fbc_860e_e5fb,
        0x14ea_5627_c084_3d90,
        0xf723_ca90_8e7a_f2ee,
        0xa129_ca61_49be_45e5,
    ];

    fn message(len: usize) -> Vec<u8> {
        (0..len as u8).collect()
    }

    #[test]
    fn matches_reference_vectors_empty_8_and_15_bytes() {
        assert_eq!(siphash24(&KEY, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&KEY, &message(8)), 0x93f5_f579_9a93_2462);
        // The worked example of the paper's appendix A.
        assert_eq!(siphash24(&KEY, &message(15)), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn matches_every_reference_vector_up_to_two_words() {
        for (len, &expected) in VECTORS.iter().enumerate() {
            assert_eq!(siphash24(&KEY, &message(len)), expected, "message of {len} bytes");
        }
    }

    #[test]
    fn incremental_writes_split_anywhere_give_the_one_shot_result() {
        let msg = message(15);
        for split in 0..=msg.len() {
            for split2 in split..=msg.len() {
                let mut h = SipHasher24::new(&KEY);
                h.write(&msg[..split]);
                h.write(&msg[split..split2]);
                h.write(&msg[split2..]);
                assert_eq!(h.finish(), VECTORS[15], "split at {split}/{split2}");
            }
        }
    }

    #[test]
    fn integer_writes_are_big_endian_byte_writes() {
        let mut h = SipHasher24::new(&KEY);
        h.write_u16(0x0001);
        h.write_u32(0x0203_0405);
        assert_eq!(h.finish(), VECTORS[6]);
    }

    #[test]
    fn key_changes_the_output() {
        let mut other = KEY;
        other[15] ^= 1;
        assert_ne!(siphash24(&other, &message(8)), siphash24(&KEY, &message(8)));
    }
}
