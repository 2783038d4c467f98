//! TCP header and options (RFC 9293 §3.1; MSS RFC 9293 §3.7.1; window scale and timestamps
//! RFC 7323 §2-3; SACK RFC 2018 §2-3).

use crate::tcp::seq::SeqNumber;

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
