//! The sender's SACK scoreboard and conservative loss recovery (RFC 6675 §3-§5): which
//! bytes the peer holds above SND.UNA, `IsLost` (§4: DupThresh discontiguous SACKed runs
//! or DupThresh*SMSS SACKed bytes above a sequence number), `pipe` (§4 SetPipe) and
//! `NextSeg` (§4 rules 1-3). D-SACK blocks (RFC 2883 §4) are recognised and never count as
//! newly SACKed data.

use alloc::vec::Vec;

use crate::tcp::seq::SeqNumber;
use crate::wire::SackBlock;

/// DupThresh of RFC 6675 §2 (and RFC 5681's three duplicate ACKs).
pub(crate) const DUP_THRESH: u32 = 3;

/// SACKed ranges above SND.UNA, sorted, disjoint and non-adjacent.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scoreboard {
    ranges: Vec<(SeqNumber, SeqNumber)>,
}

impl Scoreboard {
    pub(crate) fn from_ranges(ranges: Vec<(SeqNumber, SeqNumber)>) -> Scoreboard {
        let mut s = Scoreboard::default();
        for (l, r) in ranges {
            s.add(l, r);
        }
        s
    }

    pub(crate) fn ranges(&self) -> &[(SeqNumber, SeqNumber)] {
        &self.ranges
    }

    pub(crate) fn sacked_bytes(&self) -> u32 {
        self.ranges.iter().map(|(l, r)| r.since(*l)).sum()
    }

    /// True when `seq` is inside a SACKed range.
    pub(crate) fn is_sacked(&self, seq: SeqNumber) -> bool {
        self.ranges.iter().any(|(l, r)| seq.in_range(*l, *r))
    }

    /// The end of the SACKed range holding `seq`, if any.
    pub(crate) fn sacked_end(&self, seq: SeqNumber) -> Option<SeqNumber> {
        self.ranges.iter().find(|(l, r)| seq.in_range(*l, *r)).map(|(_, r)| *r)
    }

    /// Adds `[l, r)`; returns how many bytes were not SACKed before.
    fn add(&mut self, l: SeqNumber, r: SeqNumber) -> u32 {
        if l >= r {
            return 0;
        }
        let before = self.sacked_bytes();
        let (mut nl, mut nr) = (l, r);
        let mut kept = Vec::with_capacity(self.ranges.len() + 1);
        for &(a, b) in &self.ranges {
            if b < nl || nr < a {
                kept.push((a, b));
            } else {
                nl = nl.min(a);
                nr = nr.max(b);
            }
        }
        let pos = kept.iter().position(|(a, _)| *a > nl).unwrap_or(kept.len());
        kept.insert(pos, (nl, nr));
        self.ranges = kept;
        self.sacked_bytes() - before
    }

    /// Drops what the cumulative ACK now covers.
    pub(crate) fn advance(&mut self, snd_una: SeqNumber) {
        self.ranges.retain_mut(|(l, r)| {
            if *r <= snd_una {
                return false;
            }
            *l = (*l).max(snd_una);
            true
        });
    }

    /// Applies the blocks of one ACK. Returns the bytes newly SACKed and whether the ACK
    /// carried a D-SACK (RFC 2883 §4: first block below the cumulative ACK, or inside the
    /// second block). Blocks outside `(snd_una, snd_max]` are ignored as bogus.
    pub(crate) fn update(
        &mut self,
        blocks: &[SackBlock],
        snd_una: SeqNumber,
        snd_max: SeqNumber,
    ) -> (u32, bool) {
        let mut dsack = false;
        let mut newly = 0;
        for (i, b) in blocks.iter().enumerate() {
            if i == 0 {
                let below_ack = b.right <= snd_una;
                let inside_second =
                    blocks.get(1).is_some_and(|s| s.left <= b.left && b.right <= s.right);
                if below_ack || inside_second {
                    dsack = true;
                    continue;
                }
            }
            if b.left >= b.right || b.right > snd_max || b.left < snd_una {
                continue;
            }
            newly += self.add(b.left, b.right);
        }
        (newly, dsack)
    }

    /// The sequence number below which every un-SACKed byte is lost (RFC 6675 §4 IsLost):
    /// below it there are DupThresh SACKed runs, or more than (DupThresh-1)*SMSS SACKed
    /// bytes, above.
    pub(crate) fn loss_boundary(&self, mss: u32) -> Option<SeqNumber> {
        let byte_limit = (DUP_THRESH - 1) * mss + 1;
        let mut bytes = 0u32;
        let mut by_bytes = None;
        for (count, &(l, r)) in self.ranges.iter().rev().enumerate() {
            let len = r.since(l);
            if by_bytes.is_none() && bytes + len >= byte_limit {
                // The point inside this run where DupThresh*SMSS bytes lie above.
                by_bytes = Some(r - (byte_limit - bytes));
            }
            bytes += len;
            if count as u32 + 1 == DUP_THRESH {
                return Some(by_bytes.map_or(l, |b: SeqNumber| b.max(l)));
            }
        }
        by_bytes
    }

    /// RFC 6675 §4 IsLost for the segment starting at `seq`.
    pub(crate) fn is_lost(&self, seq: SeqNumber, mss: u32) -> bool {
        self.loss_boundary(mss).is_some_and(|b| seq < b && !self.is_sacked(seq))
    }

    /// Un-SACKed bytes in `[from, to)`.
    fn unsacked_between(&self, from: SeqNumber, to: SeqNumber) -> u32 {
        if from >= to {
            return 0;
        }
        let mut total = to.since(from);
        for &(l, r) in &self.ranges {
            let a = l.max(from);
            let b = r.min(to);
            if a < b {
                total -= b.since(a);
            }
        }
        total
    }

    /// RFC 6675 §4 SetPipe, in bytes: un-SACKed bytes not deemed lost, plus bytes
    /// retransmitted (below `high_rxt`).
    pub(crate) fn pipe(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        high_rxt: SeqNumber,
        mss: u32,
    ) -> u32 {
        let lost_below = self.loss_boundary(mss).map_or(snd_una, |b| b.max(snd_una).min(snd_nxt));
        let in_flight = self.unsacked_between(lost_below, snd_nxt);
        let retransmitted = self.unsacked_between(snd_una, high_rxt.min(snd_nxt));
        in_flight + retransmitted
    }

    /// RFC 6675 §4 NextSeg rule 1: the first un-SACKed lost range at or above `high_rxt`,
    /// at most `max_len` bytes.
    pub(crate) fn next_lost(
        &self,
        snd_una: SeqNumber,
        high_rxt: SeqNumber,
        mss: u32,
        max_len: u32,
    ) -> Option<(SeqNumber, u32)> {
        let boundary = self.loss_boundary(mss)?;
        self.first_hole(high_rxt.max(snd_una), boundary, max_len)
    }

    /// RFC 6675 §4 NextSeg rule 3: the first un-SACKed range at or above `high_rxt` that
    /// has SACKed data above it, even if not yet deemed lost.
    pub(crate) fn next_unsacked(
        &self,
        snd_una: SeqNumber,
        high_rxt: SeqNumber,
        max_len: u32,
    ) -> Option<(SeqNumber, u32)> {
        let highest = self.ranges.last()?.0;
        self.first_hole(high_rxt.max(snd_una), highest, max_len)
    }

    fn first_hole(
        &self,
        from: SeqNumber,
        limit: SeqNumber,
        max_len: u32,
    ) -> Option<(SeqNumber, u32)> {
        let mut at = from;
        for &(l, r) in &self.ranges {
            if at >= limit {
                return None;
            }
            if at < l {
                let end = l.min(limit);
                return Some((at, end.since(at).min(max_len)));
            }
            at = at.max(r);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 100;

    fn b(l: u32, r: u32) -> SackBlock {
        SackBlock { left: SeqNumber(l), right: SeqNumber(r) }
    }

    #[test]
    fn dsack_is_not_counted_as_new_data() {
        let mut sb = Scoreboard::default();
        let (n, d) = sb.update(&[b(1100, 1200)], SeqNumber(1000), SeqNumber(2000));
        assert_eq!((n, d), (100, false));
        // First block below SND.UNA: D-SACK.
        let (n, d) = sb.update(&[b(900, 1000), b(1100, 1200)], SeqNumber(1000), SeqNumber(2000));
        assert_eq!((n, d), (0, true));
        // First block inside the second: D-SACK for a duplicate above SND.UNA.
        let (n, d) = sb.update(&[b(1300, 1400), b(1300, 1500)], SeqNumber(1000), SeqNumber(2000));
        assert_eq!((n, d), (200, true));
        assert_eq!(sb.sacked_bytes(), 300);
        // Blocks beyond SND.MAX are bogus.
        assert_eq!(sb.update(&[b(1900, 2100)], SeqNumber(1000), SeqNumber(2000)).0, 0);
    }

    #[test]
    fn is_lost_needs_three_runs_or_three_segments_above() {
        let mut sb = Scoreboard::default();
        let una = SeqNumber(0);
        let max = SeqNumber(1000);
        sb.update(&[b(100, 200)], una, max);
        assert!(!sb.is_lost(SeqNumber(0), MSS));
        sb.update(&[b(300, 400)], una, max);
        assert!(!sb.is_lost(SeqNumber(0), MSS));
        sb.update(&[b(500, 600)], una, max);
        assert!(sb.is_lost(SeqNumber(0), MSS));
        // Above 200: two runs and exactly (DupThresh-1)*SMSS bytes, not more.
        assert!(!sb.is_lost(SeqNumber(200), MSS));
        sb.update(&[b(700, 701)], una, max);
        assert!(sb.is_lost(SeqNumber(200), MSS));
        assert!(!sb.is_lost(SeqNumber(400), MSS));
        // Three segments SACKed in one run mark what lies below as lost.
        let mut sb = Scoreboard::default();
        sb.update(&[b(200, 500)], una, max);
        assert!(sb.is_lost(SeqNumber(100), MSS));
        assert!(!sb.is_lost(SeqNumber(500), MSS));
    }

    #[test]
    fn pipe_and_next_seg() {
        let mut sb = Scoreboard::default();
        let una = SeqNumber(0);
        let nxt = SeqNumber(1000);
        sb.update(&[b(100, 200), b(300, 400), b(500, 600)], una, nxt);
        // Lost: [0,100) only; in flight: [200,300), [400,500) and [600,1000).
        assert_eq!(sb.pipe(una, nxt, una, MSS), 600);
        assert_eq!(sb.next_lost(una, una, MSS, MSS), Some((SeqNumber(0), 100)));
        assert_eq!(sb.next_lost(una, SeqNumber(100), MSS, MSS), None);
        assert_eq!(sb.next_unsacked(una, SeqNumber(100), MSS), Some((SeqNumber(200), 100)));
        assert_eq!(sb.next_unsacked(una, SeqNumber(300), MSS), Some((SeqNumber(400), 100)));
        // Retransmitting [0,100) adds it back to the pipe.
        assert_eq!(sb.pipe(una, nxt, SeqNumber(100), MSS), 700);
        sb.advance(SeqNumber(350));
        assert_eq!(
            sb.ranges(),
            &[(SeqNumber(350), SeqNumber(400)), (SeqNumber(500), SeqNumber(600))]
        );
    }
}
