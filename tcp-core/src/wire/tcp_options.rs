//! TCP options: parsing with the length rules of RFC 9293 §3.2 (EOL, NOP, and a length
//! octet for every other kind, so unknown kinds can be skipped) and RFC 9293 §3.7.1
//! (MSS), RFC 7323 §2.2 and §3.2 (window scale, timestamps), RFC 2018 §2-3 (SACK).
//!
//! Emission follows the order and NOP padding Linux uses (`tcp_options_write` in
//! net/ipv4/tcp_output.c), so a capture of this stack reads like one of Linux:
//!
//! ```text
//! MSS          02 04 mm mm
//! TS + SACKOK  04 02 08 0a vvvvvvvv eeeeeeee    TS alone:  01 01 08 0a vvvvvvvv eeeeeeee
//! SACKOK alone 01 01 04 02
//! WS           01 03 03 ss
//! SACK         01 01 05 ll [left right]...
//! ```
//!
//! Every element is a multiple of four bytes, so the header needs no trailing padding.

use super::WireError;
use super::tcp::{SackBlock, SackBlocks, TcpOptions};
use crate::tcp::seq::SeqNumber;

/// At most 40 option bytes fit: the data offset field counts 15 words, 5 of them fixed.
pub(crate) const MAX_OPTIONS_LEN: usize = 40;

const KIND_END: u8 = 0;
const KIND_NOP: u8 = 1;
const KIND_MSS: u8 = 2;
const KIND_WINDOW_SCALE: u8 = 3;
const KIND_SACK_PERMITTED: u8 = 4;
const KIND_SACK: u8 = 5;
const KIND_TIMESTAMP: u8 = 8;

/// Length octets of the fixed-size options, kind and length included.
const LEN_MSS: u8 = 4;
const LEN_WINDOW_SCALE: u8 = 3;
const LEN_SACK_PERMITTED: u8 = 2;
const LEN_TIMESTAMP: u8 = 10;
/// SACK's length is its kind and length octets plus eight bytes per block.
const LEN_SACK_BASE: usize = 2;
const LEN_SACK_BLOCK: usize = 8;

/// Bytes of each aligned element of the Linux layout.
const ALIGNED_MSS: usize = 4;
const ALIGNED_TIMESTAMP: usize = 12;
const ALIGNED_SACK_PERMITTED: usize = 4;
const ALIGNED_WINDOW_SCALE: usize = 4;
const ALIGNED_SACK_BASE: usize = 4;

/// Parses the option bytes of a header (everything between the fixed 20 bytes and the
/// data offset).
///
/// Structural damage — a length octet of 0 or 1, or one that runs past the header, or a
/// kind with no room for its length octet — makes the whole segment `Malformed`: there is
/// no way to find the next option. A known option with a length that is wrong for its kind
/// is skipped, as Linux's `tcp_parse_options` does. When an option appears twice, the later
/// one wins.
pub(crate) fn parse(bytes: &[u8]) -> Result<TcpOptions, WireError> {
    // The two layouts this stack and Linux send (see the module comment) are matched whole
    // first. Anything else, including these with other lengths, takes the general walk,
    // which gives the same result for these two.
    match bytes {
        [KIND_NOP, KIND_NOP, KIND_TIMESTAMP, LEN_TIMESTAMP, stamps @ ..] => {
            if let Ok(stamps) = <[u8; 8]>::try_from(stamps) {
                return Ok(TcpOptions {
                    timestamp: Some(timestamps(stamps)),
                    ..TcpOptions::default()
                });
            }
        }
        [
            KIND_MSS,
            LEN_MSS,
            mss_high,
            mss_low,
            KIND_SACK_PERMITTED,
            LEN_SACK_PERMITTED,
            KIND_TIMESTAMP,
            LEN_TIMESTAMP,
            stamps @ ..,
            KIND_NOP,
            KIND_WINDOW_SCALE,
            LEN_WINDOW_SCALE,
            shift,
        ] => {
            if let Ok(stamps) = <[u8; 8]>::try_from(stamps) {
                return Ok(TcpOptions {
                    mss: Some(u16::from_be_bytes([*mss_high, *mss_low])),
                    window_scale: Some(*shift),
                    sack_permitted: true,
                    timestamp: Some(timestamps(stamps)),
                    sack: SackBlocks::EMPTY,
                });
            }
        }
        _ => {}
    }
    parse_any_layout(bytes)
}

/// TSval and TSecr from the eight bytes after the timestamp option's kind and length.
fn timestamps(stamps: [u8; 8]) -> (u32, u32) {
    let [v0, v1, v2, v3, e0, e1, e2, e3] = stamps;
    (u32::from_be_bytes([v0, v1, v2, v3]), u32::from_be_bytes([e0, e1, e2, e3]))
}

/// [`parse`] for options in any order and with any padding.
fn parse_any_layout(mut bytes: &[u8]) -> Result<TcpOptions, WireError> {
    let mut options = TcpOptions::default();
    while let Some((&kind, rest)) = bytes.split_first() {
        match kind {
            KIND_END => break,
            KIND_NOP => bytes = rest,
            _ => {
                let length = usize::from(*rest.first().ok_or(WireError::Malformed)?);
                if length < 2 {
                    return Err(WireError::Malformed);
                }
                let (option, after) = bytes.split_at_checked(length).ok_or(WireError::Malformed)?;
                // `option` is at least two bytes long: kind and length.
                apply(&mut options, kind, option.get(2..).unwrap_or_default());
                bytes = after;
            }
        }
    }
    Ok(options)
}

/// Records one option whose structure is sound; `body` is what follows kind and length.
/// The slice patterns are the per-kind length checks.
fn apply(options: &mut TcpOptions, kind: u8, body: &[u8]) {
    match (kind, body) {
        (KIND_MSS, &[hi, lo]) => options.mss = Some(u16::from_be_bytes([hi, lo])),
        (KIND_WINDOW_SCALE, &[shift]) => options.window_scale = Some(shift),
        (KIND_SACK_PERMITTED, &[]) => options.sack_permitted = true,
        (KIND_TIMESTAMP, &[v0, v1, v2, v3, e0, e1, e2, e3]) => {
            options.timestamp = Some(timestamps([v0, v1, v2, v3, e0, e1, e2, e3]));
        }
        (KIND_SACK, blocks) if !blocks.is_empty() && blocks.len() % LEN_SACK_BLOCK == 0 => {
            options.sack = SackBlocks::EMPTY;
            for block in blocks.chunks_exact(LEN_SACK_BLOCK) {
                if let &[l0, l1, l2, l3, r0, r1, r2, r3] = block {
                    let left = SeqNumber(u32::from_be_bytes([l0, l1, l2, l3]));
                    let right = SeqNumber(u32::from_be_bytes([r0, r1, r2, r3]));
                    // A fifth block cannot fit in 40 option bytes; `push` would drop it.
                    options.sack.push(SackBlock { left, right });
                }
            }
        }
        // Unknown kinds, and known kinds with a length that does not fit them.
        _ => {}
    }
}

/// Bytes of every option except SACK blocks, in the Linux layout.
fn fixed_len(options: &TcpOptions) -> usize {
    // SACK-permitted rides in the NOP NOP slot before the timestamp when both are sent.
    let timestamp_or_sack_permitted = if options.timestamp.is_some() {
        ALIGNED_TIMESTAMP
    } else if options.sack_permitted {
        ALIGNED_SACK_PERMITTED
    } else {
        0
    };
    usize::from(options.mss.is_some()) * ALIGNED_MSS
        + timestamp_or_sack_permitted
        + usize::from(options.window_scale.is_some()) * ALIGNED_WINDOW_SCALE
}

/// How many of the SACK blocks fit next to the other options (Linux's
/// `tcp_established_options`): three with timestamps, four without.
pub(crate) fn sack_blocks_that_fit(options: &TcpOptions) -> usize {
    blocks_that_fit(options, fixed_len(options))
}

/// [`sack_blocks_that_fit`] with the other options' length already known.
fn blocks_that_fit(options: &TcpOptions, fixed_len: usize) -> usize {
    // Most segments carry no SACK blocks: answer without the division.
    if options.sack.is_empty() {
        return 0;
    }
    let room = MAX_OPTIONS_LEN.saturating_sub(fixed_len + ALIGNED_SACK_BASE);
    options.sack.len().min(room / LEN_SACK_BLOCK)
}

/// Length of the encoded options, a multiple of four and at most 40.
pub(crate) fn encoded_len(options: &TcpOptions) -> usize {
    let fixed = fixed_len(options);
    match blocks_that_fit(options, fixed) {
        0 => fixed,
        blocks => fixed + ALIGNED_SACK_BASE + blocks * LEN_SACK_BLOCK,
    }
}

/// Writes the options into `out`, which must be exactly [`encoded_len`] bytes long;
/// returns `BufferTooSmall` otherwise.
pub(crate) fn emit(options: &TcpOptions, out: &mut [u8]) -> Result<(), WireError> {
    let mut writer = Writer { out, at: 0 };
    if let Some(mss) = options.mss {
        let [high, low] = mss.to_be_bytes();
        writer.put([KIND_MSS, LEN_MSS, high, low])?;
    }
    if let Some((value, echo)) = options.timestamp {
        // SACK-permitted, when offered, takes the place of the two NOPs.
        let lead = if options.sack_permitted {
            [KIND_SACK_PERMITTED, LEN_SACK_PERMITTED]
        } else {
            [KIND_NOP, KIND_NOP]
        };
        let [v0, v1, v2, v3] = value.to_be_bytes();
        let [e0, e1, e2, e3] = echo.to_be_bytes();
        writer.put([
            lead[0],
            lead[1],
            KIND_TIMESTAMP,
            LEN_TIMESTAMP,
            v0,
            v1,
            v2,
            v3,
            e0,
            e1,
            e2,
            e3,
        ])?;
    } else if options.sack_permitted {
        writer.put([KIND_NOP, KIND_NOP, KIND_SACK_PERMITTED, LEN_SACK_PERMITTED])?;
    }
    if let Some(shift) = options.window_scale {
        writer.put([KIND_NOP, KIND_WINDOW_SCALE, LEN_WINDOW_SCALE, shift])?;
    }
    let blocks = sack_blocks_that_fit(options);
    if blocks > 0 {
        let length = (LEN_SACK_BASE + blocks * LEN_SACK_BLOCK) as u8;
        writer.put([KIND_NOP, KIND_NOP, KIND_SACK, length])?;
        for block in options.sack.as_slice().iter().take(blocks) {
            let [l0, l1, l2, l3] = block.left.0.to_be_bytes();
            let [r0, r1, r2, r3] = block.right.0.to_be_bytes();
            writer.put([l0, l1, l2, l3, r0, r1, r2, r3])?;
        }
    }
    if writer.at != writer.out.len() {
        return Err(WireError::BufferTooSmall);
    }
    Ok(())
}

/// Appends to a byte slice with a bounds check on every write.
struct Writer<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    /// Writes one whole option element; a fixed size lets the copy become plain stores.
    fn put<const N: usize>(&mut self, bytes: [u8; N]) -> Result<(), WireError> {
        let end = self.at + N;
        let slot = self.out.get_mut(self.at..end).ok_or(WireError::BufferTooSmall)?;
        slot.copy_from_slice(&bytes);
        self.at = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn encode(options: &TcpOptions) -> Vec<u8> {
        let mut out = vec![0u8; encoded_len(options)];
        emit(options, &mut out).unwrap();
        assert_eq!(parse(&out).unwrap().sack.len(), sack_blocks_that_fit(options));
        out
    }

    fn blocks(n: u32) -> SackBlocks {
        let mut sack = SackBlocks::EMPTY;
        for i in 0..n {
            sack.push(SackBlock { left: SeqNumber(1000 * i + 1), right: SeqNumber(1000 * i + 2) });
        }
        sack
    }

    #[test]
    fn syn_with_everything_is_twenty_bytes_in_linux_order() {
        let options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((0x0102_0304, 0)),
            sack: SackBlocks::EMPTY,
        };
        assert_eq!(
            encode(&options),
            [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7]
        );
    }

    #[test]
    fn syn_with_sack_but_no_timestamps() {
        let options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            ..TcpOptions::default()
        };
        assert_eq!(encode(&options), [2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7]);
    }

    #[test]
    fn syn_with_timestamps_but_no_sack() {
        let options = TcpOptions {
            mss: Some(536),
            window_scale: Some(0),
            timestamp: Some((5, 6)),
            ..TcpOptions::default()
        };
        assert_eq!(
            encode(&options),
            [2, 4, 0x02, 0x18, 1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 1, 3, 3, 0]
        );
    }

    #[test]
    fn mss_alone_and_nothing_at_all() {
        let mss_only = TcpOptions { mss: Some(1400), ..TcpOptions::default() };
        assert_eq!(encode(&mss_only), [2, 4, 0x05, 0x78]);
        assert!(encode(&TcpOptions::default()).is_empty());
    }

    #[test]
    fn sack_blocks_follow_timestamps_and_are_cut_to_three() {
        let options =
            TcpOptions { timestamp: Some((7, 8)), sack: blocks(4), ..TcpOptions::default() };
        let bytes = encode(&options);
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[..4], &[1, 1, 8, 10]);
        assert_eq!(&bytes[12..16], &[1, 1, 5, 26]);
        assert_eq!(&bytes[16..24], &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(parse(&bytes).unwrap().sack.as_slice(), blocks(3).as_slice());
    }

    #[test]
    fn four_sack_blocks_fit_without_timestamps() {
        let options = TcpOptions { sack: blocks(4), ..TcpOptions::default() };
        let bytes = encode(&options);
        assert_eq!(bytes.len(), 36);
        assert_eq!(&bytes[..4], &[1, 1, 5, 34]);
        assert_eq!(parse(&bytes).unwrap(), options);
    }

    #[test]
    fn sack_blocks_give_way_to_syn_options() {
        // 20 bytes of SYN options leave room for two blocks.
        let options = TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((1, 2)),
            sack: blocks(4),
        };
        assert_eq!(sack_blocks_that_fit(&options), 2);
        assert_eq!(encoded_len(&options), 40);
    }

    #[test]
    fn emit_refuses_a_buffer_of_the_wrong_size() {
        let options = TcpOptions { mss: Some(1460), ..TcpOptions::default() };
        assert_eq!(emit(&options, &mut [0u8; 3]), Err(WireError::BufferTooSmall));
        assert_eq!(emit(&options, &mut [0u8; 8]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn end_of_list_stops_parsing() {
        // After EOL the rest is padding, even if it looks like a broken option.
        let bytes = [2, 4, 0x05, 0xb4, 0, 8, 0, 0xff];
        assert_eq!(parse(&bytes).unwrap().mss, Some(1460));
    }

    #[test]
    fn unknown_options_are_skipped() {
        // MPTCP-like kind 30 (length 4) and TFO kind 34 (length 2) between known ones.
        let bytes = [30, 4, 0xaa, 0xbb, 34, 2, 1, 3, 3, 9, 1, 1];
        let options = parse(&bytes).unwrap();
        assert_eq!(options.window_scale, Some(9));
        assert_eq!(options.mss, None);
    }

    #[test]
    fn structurally_broken_options_are_malformed() {
        for bytes in [
            &[2, 0, 0, 0][..],   // length 0
            &[2, 1, 0, 0][..],   // length 1
            &[2, 5, 0, 0][..],   // runs past the header
            &[1, 1, 1, 8][..],   // kind with no length octet
            &[30, 40, 0, 0][..], // unknown kind running past the header
        ] {
            assert_eq!(parse(bytes), Err(WireError::Malformed), "{bytes:?}");
        }
    }

    #[test]
    fn known_options_with_wrong_lengths_are_ignored() {
        let bytes = [
            2, 3, 0x05, // MSS of length 3
            3, 4, 7, 0, // window scale of length 4
            4, 3, 0, // SACK-permitted of length 3
            8, 6, 0, 0, 0, 1, // timestamp of length 6
            5, 11, 0, 0, 0, 1, 0, 0, 0, 2, 0, // SACK of length 11
            5, 2, // SACK with no block
            2, 4, 0x02, 0x18, // and one good MSS
        ];
        let options = parse(&bytes).unwrap();
        assert_eq!(options, TcpOptions { mss: Some(536), ..TcpOptions::default() });
    }

    #[test]
    fn later_duplicates_win() {
        let bytes = [2, 4, 0, 1, 2, 4, 0, 2];
        assert_eq!(parse(&bytes).unwrap().mss, Some(2));
    }

    proptest! {
        /// The whole-layout shortcuts agree with the general walk on the layouts they
        /// match, on near misses (one byte changed) and on arbitrary bytes.
        #[test]
        fn shortcuts_agree_with_the_general_walk(
            (mss, shift, value, echo) in (any::<u16>(), any::<u8>(), any::<u32>(), any::<u32>()),
            syn in any::<bool>(),
            change in proptest::option::of((0usize..20, any::<u8>())),
            other in proptest::collection::vec(any::<u8>(), 0..=40),
        ) {
            let options = TcpOptions {
                mss: syn.then_some(mss),
                window_scale: syn.then_some(shift),
                sack_permitted: syn,
                timestamp: Some((value, echo)),
                sack: SackBlocks::EMPTY,
            };
            let mut bytes = encode(&options);
            prop_assert_eq!(parse(&bytes), Ok(options));
            if let Some((at, byte)) = change {
                if let Some(slot) = bytes.get_mut(at) {
                    *slot = byte;
                }
            }
            prop_assert_eq!(parse(&bytes), parse_any_layout(&bytes));
            prop_assert_eq!(parse(&other), parse_any_layout(&other));
        }
    }
}
