//! Out-of-order receive data (RFC 9293 §3.10.7.4 "seventh, process the segment text":
//! segments beyond RCV.NXT are kept and delivered once the gap fills) and the SACK blocks
//! the receiver reports (RFC 2018 §4: the block holding the most recently received segment
//! first, then the other most recent ones), plus D-SACK for duplicates (RFC 2883 §4).
//!
//! The caller only inserts data inside the window it advertised, so memory stays bounded
//! by the receive buffer.

use alloc::vec::Vec;

use crate::tcp::seq::SeqNumber;
use crate::wire::{SackBlock, SackBlocks};

/// One contiguous run of out-of-order bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OooBlock {
    pub(crate) start: SeqNumber,
    pub(crate) data: Vec<u8>,
    /// Larger is more recent; orders SACK blocks (RFC 2018 §4).
    pub(crate) recency: u64,
}

impl OooBlock {
    fn end(&self) -> SeqNumber {
        self.start + self.data.len()
    }
}

/// Out-of-order segments, sorted by sequence number, never overlapping or adjacent.
#[derive(Clone, Debug, Default)]
pub(crate) struct Assembler {
    blocks: Vec<OooBlock>,
    clock: u64,
    /// A duplicate range to report once as the first SACK block (RFC 2883).
    dsack: Option<SackBlock>,
}

impl Assembler {
    pub(crate) fn from_blocks(blocks: Vec<(SeqNumber, Vec<u8>)>) -> Assembler {
        let mut a = Assembler::default();
        for (start, data) in blocks {
            a.insert(start, &data);
        }
        a
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.blocks.iter().map(|b| b.data.len()).sum()
    }

    pub(crate) fn export(&self) -> Vec<(SeqNumber, Vec<u8>)> {
        self.blocks.iter().map(|b| (b.start, b.data.clone())).collect()
    }

    /// Stores `data` at `seq`, merging with what is held. Returns true when every byte was
    /// already held (a duplicate, reported as D-SACK).
    pub(crate) fn insert(&mut self, seq: SeqNumber, data: &[u8]) -> bool {
        if data.is_empty() {
            return false;
        }
        self.clock += 1;
        let end = seq + data.len();
        if self.blocks.iter().any(|b| b.start <= seq && end <= b.end()) {
            self.dsack = Some(SackBlock { left: seq, right: end });
            if let Some(b) = self.blocks.iter_mut().find(|b| b.start <= seq && end <= b.end()) {
                b.recency = self.clock;
            }
            return true;
        }
        let mut merged = OooBlock { start: seq, data: data.to_vec(), recency: self.clock };
        let mut kept = Vec::with_capacity(self.blocks.len() + 1);
        for b in self.blocks.drain(..) {
            if b.end() < merged.start || merged.end() < b.start {
                kept.push(b);
                continue;
            }
            // Overlapping or adjacent: the union, keeping bytes already held.
            let start = b.start.min(merged.start);
            let stop = b.end().max(merged.end());
            let mut bytes = alloc::vec![0u8; stop.since(start) as usize];
            for (src, at) in [(&merged, merged.start), (&b, b.start)] {
                let off = at.since(start) as usize;
                if let Some(dst) = bytes.get_mut(off..off + src.data.len()) {
                    dst.copy_from_slice(&src.data);
                }
            }
            merged = OooBlock { start, data: bytes, recency: self.clock };
        }
        let pos = kept.iter().position(|b| b.start > merged.start).unwrap_or(kept.len());
        kept.insert(pos, merged);
        self.blocks = kept;
        false
    }

    /// SACK blocks the next segment would carry, before any limit.
    pub(crate) fn pending_blocks(&self) -> usize {
        self.blocks.len() + usize::from(self.dsack.is_some())
    }

    /// Records a duplicate below RCV.NXT for D-SACK (RFC 2883 §4 case 1).
    pub(crate) fn note_duplicate(&mut self, left: SeqNumber, right: SeqNumber) {
        if left != right {
            self.dsack = Some(SackBlock { left, right });
        }
    }

    /// Removes and returns bytes that start at or before `rcv_nxt` (now in order), trimming
    /// what lies below it.
    pub(crate) fn pop_ready(&mut self, rcv_nxt: SeqNumber) -> Option<Vec<u8>> {
        while let Some(first) = self.blocks.first() {
            if first.start > rcv_nxt {
                return None;
            }
            let first = self.blocks.remove(0);
            if first.end() <= rcv_nxt {
                continue;
            }
            let skip = rcv_nxt.since(first.start) as usize;
            let mut data = first.data;
            data.drain(..skip);
            return Some(data);
        }
        None
    }

    /// The SACK blocks to send: D-SACK first if pending, then by recency (RFC 2018 §4).
    /// The pending D-SACK is reported once.
    pub(crate) fn sack_blocks(&mut self, max: usize) -> SackBlocks {
        let mut out = SackBlocks::EMPTY;
        if let Some(d) = self.dsack.take() {
            out.push(d);
        }
        let mut order: Vec<&OooBlock> = self.blocks.iter().collect();
        order.sort_by_key(|b| core::cmp::Reverse(b.recency));
        for b in order {
            if out.len() >= max {
                break;
            }
            out.push(SackBlock { left: b.start, right: b.end() });
        }
        out.truncate(max);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    #[test]
    fn merges_and_delivers_in_order() {
        let mut a = Assembler::default();
        a.insert(s(20), b"klmno");
        a.insert(s(10), b"abcde");
        a.insert(s(15), b"fghij");
        assert_eq!(a.len(), 15);
        assert_eq!(a.pop_ready(s(5)), None);
        assert_eq!(a.pop_ready(s(12)).as_deref(), Some(&b"cdefghijklmno"[..]));
        assert!(a.is_empty());
    }

    #[test]
    fn sack_blocks_most_recent_first_then_dsack() {
        let mut a = Assembler::default();
        a.insert(s(100), b"aa");
        a.insert(s(200), b"bb");
        a.insert(s(300), b"cc");
        let blocks = a.sack_blocks(4);
        let lefts: Vec<u32> = blocks.as_slice().iter().map(|b| b.left.0).collect();
        assert_eq!(lefts, [300, 200, 100]);
        // Extending the oldest block makes it the most recent.
        a.insert(s(102), b"x");
        let blocks = a.sack_blocks(3);
        assert_eq!(blocks.as_slice()[0], SackBlock { left: s(100), right: s(103) });
        // A duplicate is reported first, once.
        assert!(a.insert(s(200), b"bb"));
        let blocks = a.sack_blocks(3);
        assert_eq!(blocks.as_slice()[0], SackBlock { left: s(200), right: s(202) });
        assert_eq!(blocks.len(), 3);
        assert_eq!(a.sack_blocks(3).as_slice()[0].left, s(200));
        assert_eq!(a.sack_blocks(4).len(), 3);
    }

    #[test]
    fn wraps_around_sequence_zero() {
        let mut a = Assembler::default();
        a.insert(s(u32::MAX - 1), b"ab");
        a.insert(s(0), b"cd");
        assert_eq!(a.pop_ready(s(u32::MAX - 1)).as_deref(), Some(&b"abcd"[..]));
    }
}
