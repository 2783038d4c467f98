//! TCP header and options (RFC 9293 §3.1; MSS RFC 9293 §3.7.1; window scale and timestamps
//! RFC 7323 §2-3; SACK RFC 2018 §2-3). The option codec, and the Linux option layout it
//! emits, live in `tcp_options`.

use core::net::Ipv4Addr;

use super::checksum;
use super::tcp_options;
use super::{Checksums, IpProtocol, WireError, read_u16, read_u32};
use crate::tcp::seq::SeqNumber;

/// Length of the TCP header without options.
pub const HEADER_LEN: usize = 20;

bitflags::bitflags! {
    /// The TCP control bits (RFC 9293 §3.1, RFC 3168 §6.1 for ECE/CWR).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct TcpFlags: u8 {
        /// No more data from sender.
        const FIN = 0x01;
        /// Synchronize sequence numbers.
        const SYN = 0x02;
        /// Reset the connection.
        const RST = 0x04;
        /// Push function.
        const PSH = 0x08;
        /// The acknowledgment field is significant.
        const ACK = 0x10;
        /// The urgent pointer field is significant.
        const URG = 0x20;
        /// ECN echo.
        const ECE = 0x40;
        /// Congestion window reduced.
        const CWR = 0x80;
    }
}

/// At most four SACK blocks fit in the 40 option bytes (three next to timestamps).
pub const MAX_SACK_BLOCKS: usize = 4;

/// A SACK block: the half-open sequence range `[left, right)` (RFC 2018 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SackBlock {
    /// First sequence number of the block.
    pub left: SeqNumber,
    /// Sequence number just past the block.
    pub right: SeqNumber,
}

/// The SACK blocks carried by one segment, in the order they appear on the wire.
///
/// Invariant: the slots from `len` on hold `SackBlock::default()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SackBlocks {
    len: u8,
    blocks: [SackBlock; MAX_SACK_BLOCKS],
}

impl SackBlocks {
    /// No blocks.
    pub const EMPTY: SackBlocks =
        SackBlocks { len: 0, blocks: [SackBlock { left: SeqNumber(0), right: SeqNumber(0) }; 4] };

    /// Appends a block; returns `false` (and drops it) when four are already present.
    pub fn push(&mut self, block: SackBlock) -> bool {
        match self.blocks.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = block;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The blocks, first on the wire first.
    pub fn as_slice(&self) -> &[SackBlock] {
        &self.blocks[..usize::from(self.len).min(MAX_SACK_BLOCKS)]
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps only the first `n` blocks.
    pub fn truncate(&mut self, n: usize) {
        if n < usize::from(self.len) {
            // Slots past `len` stay at their default, so the derived `PartialEq` and `Hash`
            // see only the blocks that are present.
            for slot in self.blocks.iter_mut().skip(n) {
                *slot = SackBlock::default();
            }
            self.len = n as u8;
        }
    }
}

/// The options a segment carries, parsed. Unknown options are skipped on parse and never
/// emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TcpOptions {
    /// Maximum segment size (kind 2), meaningful on SYN segments.
    pub mss: Option<u16>,
    /// Window scale shift count (kind 3), meaningful on SYN segments. Values above 14 are
    /// kept as received; RFC 7323 §2.3 says the receiver uses 14 instead.
    pub window_scale: Option<u8>,
    /// SACK-permitted (kind 4), meaningful on SYN segments.
    pub sack_permitted: bool,
    /// Timestamps (kind 8): `(TSval, TSecr)`.
    pub timestamp: Option<(u32, u32)>,
    /// SACK blocks (kind 5).
    pub sack: SackBlocks,
}

/// A parsed TCP segment. `payload` borrows from the packet it was parsed from, or from the
/// buffer the sender filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number of the first octet (of the SYN, if set).
    pub seq: SeqNumber,
    /// Acknowledgment number; significant only when `flags` has `ACK`.
    pub ack: SeqNumber,
    /// Control bits.
    pub flags: TcpFlags,
    /// The window field as on the wire (not yet scaled).
    pub window: u16,
    /// Urgent pointer; significant only when `flags` has `URG`.
    pub urgent: u16,
    /// Options.
    pub options: TcpOptions,
    /// Segment data.
    pub payload: &'a [u8],
}

impl TcpRepr<'_> {
    /// Sequence space the segment occupies: payload plus one for SYN and one for FIN
    /// (RFC 9293 §3.4, SEG.LEN).
    pub fn segment_len(&self) -> usize {
        self.payload.len()
            + usize::from(self.flags.contains(TcpFlags::SYN))
            + usize::from(self.flags.contains(TcpFlags::FIN))
    }
}

impl<'a> TcpRepr<'a> {
    /// Parses the segment in `segment` (the IPv4 payload) sent from `src` to `dst`.
    ///
    /// Checks that the data offset is at least 5 words and within the segment, verifies
    /// the checksum over the pseudo-header when [`Checksums::verify_rx`] is set, and parses
    /// the options (see `tcp_options` for what is `Malformed` and what is ignored).
    pub fn parse(
        segment: &'a [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        checksums: &Checksums,
    ) -> Result<TcpRepr<'a>, WireError> {
        let fixed = segment.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let header_len = usize::from(fixed[12] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let (header, payload) = segment.split_at_checked(header_len).ok_or(WireError::Truncated)?;
        if checksums.verify_rx {
            let length = u32::try_from(segment.len()).map_err(|_| WireError::Malformed)?;
            let sum =
                checksum::pseudo_header_ipv4_and_data(src, dst, IpProtocol::Tcp, length, segment);
            if sum != 0xffff {
                return Err(WireError::BadChecksum);
            }
        }
        let options = tcp_options::parse(header.get(HEADER_LEN..).unwrap_or_default())?;
        Ok(TcpRepr {
            src_port: read_u16(header, 0).ok_or(WireError::Truncated)?,
            dst_port: read_u16(header, 2).ok_or(WireError::Truncated)?,
            seq: SeqNumber(read_u32(header, 4).ok_or(WireError::Truncated)?),
            ack: SeqNumber(read_u32(header, 8).ok_or(WireError::Truncated)?),
            flags: TcpFlags::from_bits_retain(fixed[13]),
            window: read_u16(header, 14).ok_or(WireError::Truncated)?,
            urgent: read_u16(header, 18).ok_or(WireError::Truncated)?,
            options,
            payload,
        })
    }
}

impl TcpRepr<'_> {
    /// Length of the header this segment is emitted with: 20 bytes plus the options in the
    /// Linux layout (always a multiple of 4, at most 60). SACK blocks that do not fit in
    /// 40 option bytes are left out.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + tcp_options::encoded_len(&self.options)
    }

    /// Bytes [`emit`](Self::emit) writes: header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment (header, options, payload) at the start of `buf` for a packet
    /// from `src` to `dst`; returns the number of bytes written, [`buffer_len`].
    ///
    /// With [`Checksums::fill_tx`] off, the checksum field holds the pseudo-header sum for
    /// the NIC to complete.
    ///
    /// [`buffer_len`]: Self::buffer_len
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        checksums: &Checksums,
    ) -> Result<usize, WireError> {
        let header_len = self.header_len();
        let total_len = header_len + self.payload.len();
        let length = u32::try_from(total_len).map_err(|_| WireError::Malformed)?;
        let segment = buf.get_mut(..total_len).ok_or(WireError::BufferTooSmall)?;
        let (header, payload) = segment.split_at_mut(header_len);
        let (fixed, options) = header.split_at_mut(HEADER_LEN);
        fixed[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        fixed[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        fixed[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        fixed[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        // Data offset in words; the reserved bits (and AccECN's AE) go out as zero.
        fixed[12] = ((header_len / 4) as u8) << 4;
        fixed[13] = self.flags.bits();
        fixed[14..16].copy_from_slice(&self.window.to_be_bytes());
        fixed[16..18].copy_from_slice(&[0, 0]);
        fixed[18..20].copy_from_slice(&self.urgent.to_be_bytes());
        tcp_options::emit(&self.options, options)?;
        payload.copy_from_slice(self.payload);
        let field = if checksums.fill_tx {
            !checksum::pseudo_header_ipv4_and_data(src, dst, IpProtocol::Tcp, length, segment)
        } else {
            checksum::pseudo_header_ipv4(src, dst, IpProtocol::Tcp, length)
        };
        segment[16..18].copy_from_slice(&field.to_be_bytes());
        Ok(total_len)
    }
}

/// Source port, destination port and sequence number from the first 8 bytes of a TCP
/// header quoted in an ICMP error (RFC 792 quotes at least that much), or `None` if fewer
/// are present. The receiver checks the sequence number against its send window before
/// trusting the error (RFC 5927 §4.1).
pub fn quoted_ports_and_seq(data: &[u8]) -> Option<(u16, u16, SeqNumber)> {
    Some((read_u16(data, 0)?, read_u16(data, 2)?, SeqNumber(read_u32(data, 4)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_vectors;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const VERIFY: Checksums = Checksums { verify_rx: true, fill_tx: true };
    const OFFLOAD: Checksums = Checksums { verify_rx: false, fill_tx: false };
    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// The TCP segment inside a captured frame (after Ethernet and a 20-byte IPv4 header).
    fn segment(frame: &[u8]) -> &[u8] {
        &frame[34..]
    }

    fn syn_options(mss: u16, window_scale: u8, tsval: u32) -> TcpOptions {
        TcpOptions {
            mss: Some(mss),
            window_scale: Some(window_scale),
            sack_permitted: true,
            timestamp: Some((tsval, 0)),
            sack: SackBlocks::EMPTY,
        }
    }

    #[test]
    fn parses_a_linux_syn() {
        let repr = TcpRepr::parse(segment(test_vectors::SYN_MSS1460_FRAME), A, B, &VERIFY).unwrap();
        assert_eq!(
            repr,
            TcpRepr {
                src_port: 55042,
                dst_port: 40000,
                seq: SeqNumber(0xe623_c8f6),
                ack: SeqNumber(0),
                flags: TcpFlags::SYN,
                window: 64240,
                urgent: 0,
                options: syn_options(1460, 7, 1_084_479_712),
                payload: &[],
            }
        );
        assert_eq!(repr.header_len(), 40);
        assert_eq!(repr.segment_len(), 1);
    }

    #[test]
    fn emit_reproduces_every_captured_linux_segment_byte_for_byte() {
        let captures = [
            (test_vectors::SYN_MSS1460_FRAME, A, B),
            (test_vectors::LO_SYN_FRAME, LO, LO),
            (test_vectors::LO_SYN_ACK_FRAME, LO, LO),
            (test_vectors::LO_ACK_FRAME, LO, LO),
            (test_vectors::LO_DATA_FRAME, LO, LO),
        ];
        for (frame, src, dst) in captures {
            let wire = segment(frame);
            let repr = TcpRepr::parse(wire, src, dst, &VERIFY).unwrap();
            let mut buf = vec![0u8; repr.buffer_len()];
            assert_eq!(repr.emit(&mut buf, src, dst, &VERIFY), Ok(wire.len()));
            assert_eq!(buf, wire);
        }
    }

    #[test]
    fn parses_the_linux_data_segment() {
        let repr = TcpRepr::parse(segment(test_vectors::LO_DATA_FRAME), LO, LO, &VERIFY).unwrap();
        assert_eq!(repr.flags, TcpFlags::PSH | TcpFlags::ACK);
        assert_eq!(repr.payload, b"hello");
        assert_eq!(repr.window, 64);
        assert_eq!(repr.ack, SeqNumber(0xecfb_3c29));
        assert_eq!(repr.options.timestamp, Some((0x40a3_d8e0, 0xd8f6_3058)));
        assert_eq!(repr.options.mss, None);
    }

    /// A SYN in the Windows layout, `mss 1460,nop,wscale 8,nop,nop,sackOK`, from
    /// 10.0.0.2:49723 to 10.0.0.1:443; checksum from an independent script.
    const WINDOWS_STYLE_SYN: [u8; 32] = [
        0xc2, 0x3b, 0x01, 0xbb, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00, 0x80, 0x02, 0xfa,
        0xf0, 0x57, 0xc0, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x08, 0x01, 0x01,
        0x04, 0x02,
    ];

    /// An ACK from 10.0.0.2:443 with `nop,nop,TS val 1000 ecr 2000,nop,nop,sack 2
    /// {5000:6000}{7000:8000}`; checksum from an independent script.
    const SACK_ACK: [u8; 52] = [
        0x01, 0xbb, 0xc2, 0x3b, 0x55, 0x66, 0x77, 0x88, 0x00, 0x00, 0x0f, 0xa0, 0xd0, 0x10, 0x01,
        0xf6, 0xf8, 0xcf, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00,
        0x07, 0xd0, 0x01, 0x01, 0x05, 0x12, 0x00, 0x00, 0x13, 0x88, 0x00, 0x00, 0x17, 0x70, 0x00,
        0x00, 0x1b, 0x58, 0x00, 0x00, 0x1f, 0x40,
    ];

    #[test]
    fn parses_options_in_another_stacks_order() {
        let repr = TcpRepr::parse(&WINDOWS_STYLE_SYN, B, A, &VERIFY).unwrap();
        assert_eq!(
            repr.options,
            TcpOptions {
                mss: Some(1460),
                window_scale: Some(8),
                sack_permitted: true,
                timestamp: None,
                sack: SackBlocks::EMPTY,
            }
        );
        assert_eq!((repr.src_port, repr.dst_port), (49723, 443));
        // Emitted in the Linux order instead: MSS, NOP NOP SACK-permitted, NOP WS.
        let mut buf = [0u8; 32];
        repr.emit(&mut buf, B, A, &VERIFY).unwrap();
        assert_eq!(&buf[20..], &[2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 8]);
        assert_eq!(TcpRepr::parse(&buf, B, A, &VERIFY), Ok(repr));
    }

    #[test]
    fn parses_sack_blocks_and_emits_the_same_bytes() {
        let repr = TcpRepr::parse(&SACK_ACK, B, A, &VERIFY).unwrap();
        let blocks: Vec<(u32, u32)> =
            repr.options.sack.as_slice().iter().map(|b| (b.left.0, b.right.0)).collect();
        assert_eq!(blocks, [(5000, 6000), (7000, 8000)]);
        assert_eq!(repr.options.timestamp, Some((1000, 2000)));
        assert_eq!(repr.ack, SeqNumber(4000));
        let mut buf = [0u8; 52];
        assert_eq!(repr.emit(&mut buf, B, A, &VERIFY), Ok(52));
        assert_eq!(buf, SACK_ACK);
    }

    #[test]
    fn checksum_covers_pseudo_header_header_and_payload() {
        let wire = segment(test_vectors::LO_DATA_FRAME);
        assert_eq!(TcpRepr::parse(wire, LO, B, &VERIFY), Err(WireError::BadChecksum));
        let mut corrupted = wire.to_vec();
        *corrupted.last_mut().unwrap() ^= 0x01;
        assert_eq!(TcpRepr::parse(&corrupted, LO, LO, &VERIFY), Err(WireError::BadChecksum));
        corrupted[33] ^= 0x80;
        assert_eq!(TcpRepr::parse(&corrupted, LO, LO, &VERIFY), Err(WireError::BadChecksum));
        assert!(TcpRepr::parse(&corrupted, LO, LO, &OFFLOAD).is_ok());
    }

    #[test]
    fn offload_leaves_the_pseudo_header_sum_for_the_nic() {
        let wire = segment(test_vectors::LO_DATA_FRAME);
        let repr = TcpRepr::parse(wire, LO, LO, &VERIFY).unwrap();
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf, LO, LO, &OFFLOAD).unwrap();
        // What the NIC does: complement the sum over the segment, field included.
        let nic = !checksum::data(&buf);
        buf[16..18].copy_from_slice(&nic.to_be_bytes());
        assert_eq!(buf, wire);
    }

    #[test]
    fn truncated_headers_are_errors() {
        let wire = segment(test_vectors::LO_SYN_FRAME);
        for len in 0..wire.len() {
            assert_eq!(TcpRepr::parse(&wire[..len], LO, LO, &OFFLOAD), Err(WireError::Truncated));
        }
    }

    #[test]
    fn data_offset_is_validated() {
        let mut wire = segment(test_vectors::LO_ACK_FRAME).to_vec();
        for words in 0..5u8 {
            wire[12] = words << 4;
            assert_eq!(TcpRepr::parse(&wire, LO, LO, &OFFLOAD), Err(WireError::Malformed));
        }
        wire[12] = 9 << 4;
        assert_eq!(TcpRepr::parse(&wire, LO, LO, &OFFLOAD), Err(WireError::Truncated));
        // Five words: the options become payload.
        wire[12] = 5 << 4;
        let repr = TcpRepr::parse(&wire, LO, LO, &OFFLOAD).unwrap();
        assert_eq!(repr.payload.len(), 12);
        assert_eq!(repr.options, TcpOptions::default());
    }

    #[test]
    fn broken_options_make_the_segment_malformed() {
        let mut wire = segment(test_vectors::LO_ACK_FRAME).to_vec();
        // The timestamp's length octet (offset 23) set to 0, 1, and past the header.
        for length in [0u8, 1, 11, 255] {
            wire[23] = length;
            assert_eq!(TcpRepr::parse(&wire, LO, LO, &OFFLOAD), Err(WireError::Malformed));
        }
        // An MSS option of length 10 is structurally sound but wrong for its kind: Linux
        // skips it and so do we.
        wire[22] = 2;
        wire[23] = 10;
        let repr = TcpRepr::parse(&wire, LO, LO, &OFFLOAD).unwrap();
        assert_eq!(repr.options, TcpOptions::default());
    }

    #[test]
    fn reserved_bits_are_ignored_and_all_flags_kept() {
        let mut wire = segment(test_vectors::LO_ACK_FRAME).to_vec();
        wire[12] |= 0x0f;
        wire[13] = 0xff;
        let repr = TcpRepr::parse(&wire, LO, LO, &OFFLOAD).unwrap();
        assert_eq!(repr.flags, TcpFlags::all());
    }

    #[test]
    fn emit_needs_room_for_header_and_payload() {
        let repr = TcpRepr::parse(segment(test_vectors::LO_DATA_FRAME), LO, LO, &VERIFY).unwrap();
        assert_eq!(repr.buffer_len(), 37);
        for len in [0, 19, 20, 31, 32, 36] {
            let mut buf = vec![0u8; len];
            assert_eq!(repr.emit(&mut buf, LO, LO, &VERIFY), Err(WireError::BufferTooSmall));
        }
        let mut buf = vec![0u8; 100];
        assert_eq!(repr.emit(&mut buf, LO, LO, &VERIFY), Ok(37));
    }

    #[test]
    fn sack_blocks_are_cut_to_fit_and_the_rest_round_trips() {
        let mut sack = SackBlocks::EMPTY;
        for i in 0..4u32 {
            sack.push(SackBlock { left: SeqNumber(i * 100), right: SeqNumber(i * 100 + 50) });
        }
        let repr = TcpRepr {
            src_port: 80,
            dst_port: 50000,
            seq: SeqNumber(1),
            ack: SeqNumber(2),
            flags: TcpFlags::ACK,
            window: 1000,
            urgent: 0,
            options: TcpOptions { timestamp: Some((3, 4)), sack, ..TcpOptions::default() },
            payload: b"xyz",
        };
        assert_eq!(repr.header_len(), 60);
        let mut buf = [0u8; 63];
        repr.emit(&mut buf, A, B, &VERIFY).unwrap();
        assert_eq!(&buf[20..24], &[1, 1, 8, 10]);
        assert_eq!(&buf[32..36], &[1, 1, 5, 26]);
        let parsed = TcpRepr::parse(&buf, A, B, &VERIFY).unwrap();
        assert_eq!(parsed.options.sack.as_slice(), &sack.as_slice()[..3]);
        assert_eq!(parsed.payload, b"xyz");
    }

    #[test]
    fn truncated_sack_blocks_compare_equal_to_fresh_ones() {
        let block = |n: u32| SackBlock { left: SeqNumber(n), right: SeqNumber(n + 1) };
        let mut long = SackBlocks::EMPTY;
        let mut short = SackBlocks::EMPTY;
        for n in 0..3 {
            assert!(long.push(block(n)));
        }
        assert!(long.push(block(3)));
        assert!(!long.push(block(4)));
        assert!(short.push(block(0)));
        long.truncate(1);
        assert_eq!(long, short);
        assert_eq!(long.len(), 1);
        long.truncate(0);
        assert!(long.is_empty());
        assert_eq!(long, SackBlocks::EMPTY);
    }

    #[test]
    fn quoted_header_gives_ports_and_sequence() {
        let wire = segment(test_vectors::LO_SYN_FRAME);
        assert_eq!(quoted_ports_and_seq(&wire[..8]), Some((55042, 40000, SeqNumber(0xe623_c8f6))));
        assert_eq!(quoted_ports_and_seq(&wire[..7]), None);
    }

    fn any_options() -> impl Strategy<Value = TcpOptions> {
        let block = (any::<u32>(), any::<u32>())
            .prop_map(|(left, right)| SackBlock { left: SeqNumber(left), right: SeqNumber(right) });
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u8>()),
            any::<bool>(),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::collection::vec(block, 0..=4),
        )
            .prop_map(|(mss, window_scale, sack_permitted, timestamp, blocks)| {
                let mut sack = SackBlocks::EMPTY;
                for block in blocks {
                    sack.push(block);
                }
                TcpOptions { mss, window_scale, sack_permitted, timestamp, sack }
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = TcpRepr::parse(&bytes, A, B, &VERIFY);
            let _ = TcpRepr::parse(&bytes, A, B, &OFFLOAD);
        }

        /// Random option bytes behind a valid data offset reach the option parser.
        #[test]
        fn option_parsing_never_panics(
            words in 5u8..=15,
            options in proptest::collection::vec(any::<u8>(), 40),
        ) {
            let mut segment = [0u8; 60];
            segment[12] = words << 4;
            segment[20..].copy_from_slice(&options);
            let _ = TcpRepr::parse(&segment, A, B, &OFFLOAD);
        }

        #[test]
        fn round_trip(
            (src_port, dst_port, seq, ack) in (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
            (flags, window, urgent) in (any::<u8>(), any::<u16>(), any::<u16>()),
            options in any_options(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            (src, dst) in (any::<u32>(), any::<u32>()),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let repr = TcpRepr {
                src_port,
                dst_port,
                seq: SeqNumber(seq),
                ack: SeqNumber(ack),
                flags: TcpFlags::from_bits_retain(flags),
                window,
                urgent,
                options,
                payload: &payload,
            };
            let mut buf = [0u8; 60 + 64];
            let len = repr.emit(&mut buf, src, dst, &VERIFY).unwrap();
            prop_assert_eq!(len, repr.buffer_len());
            prop_assert!(repr.header_len() <= 60 && repr.header_len() % 4 == 0);
            let parsed = TcpRepr::parse(&buf[..len], src, dst, &VERIFY).unwrap();
            let mut expected = repr;
            expected.options.sack.truncate(tcp_options::sack_blocks_that_fit(&repr.options));
            prop_assert_eq!(parsed, expected);
            // What was cut is only what did not fit.
            let kept: Vec<_> = parsed.options.sack.as_slice().to_vec();
            prop_assert_eq!(&kept[..], &repr.options.sack.as_slice()[..kept.len()]);
        }
    }
}
