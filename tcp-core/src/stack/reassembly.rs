//! IPv4 fragment reassembly (RFC 791 §3.2, "Fragmentation and Reassembly"; RFC 815).
//!
//! Fragments are kept per datagram, keyed by (source, destination, protocol,
//! identification) as RFC 791 specifies, in a map ordered by offset. Because overlapping
//! fragments are refused, the RFC 815 holes are exactly the gaps between stored
//! fragments, and the datagram is complete when the bytes received equal the length the
//! last fragment (MF = 0) declared.
//!
//! Like Linux since 2018 (CVE-2018-5391, and RFC 5722's rule for IPv6), a fragment that
//! overlaps another drops the whole datagram; an exact duplicate is ignored. Fragments
//! that disagree about where the datagram ends drop it too, as Linux does.
//!
//! Memory is bounded by a datagram count and a byte budget that charges each fragment its
//! bookkeeping as well as its payload, so a flood of tiny fragments cannot exhaust
//! memory. When the budget is spent new fragments are refused rather than old datagrams
//! evicted (Linux's behaviour since 4.17); the timeout (Linux: 30 s, `ipfrag_time`)
//! frees the space.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;
use core::time::Duration;

use crate::time::Instant;

/// The largest payload a reassembled datagram may carry: the 16-bit total length minus
/// the minimum header (RFC 791 §3.1). Anything longer is the "ping of death".
pub const MAX_DATAGRAM_PAYLOAD: usize = 65_535 - 20;
/// Bytes charged per stored fragment on top of its payload: the map node and the buffer
/// header it costs.
const FRAGMENT_OVERHEAD: usize = 64;
/// Bytes charged per datagram being reassembled.
const DATAGRAM_OVERHEAD: usize = 128;

/// Identifies the datagram a fragment belongs to (RFC 791 §3.2: "the combination of
/// source, destination, protocol, and identifier").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FragmentKey {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub protocol: u8,
    /// Identification field.
    pub ident: u16,
}

/// Why a fragment was not accepted. For `Overlap`, `TooLarge` and `Inconsistent` the
/// whole datagram is dropped; for `NoRoom` and `BadOffset` only this fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// The fragment overlaps one already received without being an exact duplicate.
    Overlap,
    /// The fragment reaches past [`MAX_DATAGRAM_PAYLOAD`].
    TooLarge,
    /// The datagram-count or byte limit is reached.
    NoRoom,
    /// The offset is not a multiple of 8, or a fragment other than the last has a length
    /// that is not (RFC 791 §3.1: offsets count 8-octet units).
    BadOffset,
    /// The fragment contradicts the datagram length set by the last fragment (a second,
    /// different last fragment, or data beyond the end).
    Inconsistent,
}

impl fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReassemblyError::Overlap => "fragment overlaps another fragment of its datagram",
            ReassemblyError::TooLarge => "fragment extends past the largest IPv4 datagram",
            ReassemblyError::NoRoom => "no room to hold another fragment",
            ReassemblyError::BadOffset => "fragment offset or length is not a multiple of 8",
            ReassemblyError::Inconsistent => "fragment disagrees with the datagram's length",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReassemblyError {}

#[derive(Debug)]
struct Datagram {
    /// Set when the first fragment arrived; later fragments do not extend it (RFC 791
    /// §3.2 lets them, Linux does not, and a fixed deadline bounds how long a trickle of
    /// fragments can pin memory).
    deadline: Instant,
    /// Payload pieces by offset; non-empty and pairwise disjoint.
    fragments: BTreeMap<usize, Vec<u8>>,
    /// Sum of the stored pieces' lengths.
    received: usize,
    /// Payload length, known once the last fragment has arrived.
    end: Option<usize>,
    /// Bytes charged to the reassembler's budget for this datagram.
    cost: usize,
}

impl Datagram {
    /// One past the last byte received.
    fn received_end(&self) -> usize {
        self.fragments.last_key_value().map_or(0, |(&start, bytes)| start + bytes.len())
    }

    fn is_complete(&self) -> bool {
        self.end == Some(self.received)
    }

    fn into_payload(self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.received);
        for bytes in self.fragments.into_values() {
            payload.extend_from_slice(&bytes);
        }
        payload
    }
}

/// Reassembles fragmented IPv4 datagrams within fixed memory and time limits.
///
/// Call protocol: feed every fragment (MF set or offset non-zero) to
/// [`add`](Reassembler::add); a complete payload comes back from the call that fills the
/// last hole. When [`poll_timeout`](Reassembler::poll_timeout) is due, call
/// [`expire`](Reassembler::expire).
#[derive(Debug)]
pub struct Reassembler {
    max_datagrams: usize,
    max_bytes: usize,
    timeout: Duration,
    datagrams: BTreeMap<FragmentKey, Datagram>,
    /// `(deadline, key)` of every datagram, soonest first.
    deadlines: BTreeSet<(Instant, FragmentKey)>,
    /// Sum of every datagram's `cost`; never above `max_bytes`.
    bytes: usize,
    /// Datagrams that timed out during `add` (which clears them to make room), reported
    /// by the next `expire`.
    timed_out_unreported: usize,
    latest_now: Instant,
}

impl Reassembler {
    /// A reassembler holding at most `max_datagrams` partial datagrams and `max_bytes`
    /// bytes (payload plus bookkeeping), dropping a datagram `timeout` after its first
    /// fragment arrived (Linux: 30 s; RFC 791 suggests 15 s as a lower bound).
    pub fn new(max_datagrams: usize, max_bytes: usize, timeout: Duration) -> Self {
        Reassembler {
            max_datagrams,
            max_bytes,
            timeout,
            datagrams: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            bytes: 0,
            timed_out_unreported: 0,
            latest_now: Instant::ZERO,
        }
    }

    /// Adds a fragment of `data` at byte `offset` of datagram `key`'s payload;
    /// `more_fragments` is the MF flag. Returns the whole payload when this fragment
    /// completes the datagram, `Ok(None)` while holes remain or for an exact duplicate.
    pub fn add(
        &mut self,
        now: Instant,
        key: FragmentKey,
        offset: usize,
        more_fragments: bool,
        data: &[u8],
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        self.latest_now = self.latest_now.max(now);
        self.timed_out_unreported += self.drop_expired(now);

        if offset % 8 != 0 || (more_fragments && data.len() % 8 != 0) {
            return Err(ReassemblyError::BadOffset);
        }
        let end = offset.saturating_add(data.len());
        if end > MAX_DATAGRAM_PAYLOAD {
            self.remove(key);
            return Err(ReassemblyError::TooLarge);
        }

        let stored_cost = if data.is_empty() { 0 } else { data.len() + FRAGMENT_OVERHEAD };
        let Some(datagram) = self.datagrams.get_mut(&key) else {
            if offset == 0 && !more_fragments {
                // Not fragmented at all: nothing to hold.
                return Ok(Some(data.to_vec()));
            }
            return self.start_datagram(now, key, offset, more_fragments, data, stored_cost);
        };

        // The last fragment fixes the length; everything else must fit inside it.
        let contradicts_end = if more_fragments {
            datagram.end.is_some_and(|known| end > known)
        } else {
            datagram.end.is_some_and(|known| end != known) || datagram.received_end() > end
        };
        if contradicts_end {
            self.remove(key);
            return Err(ReassemblyError::Inconsistent);
        }

        if !data.is_empty() {
            if let Some((&start, bytes)) = datagram.fragments.range(..=offset).next_back() {
                if start == offset && bytes.as_slice() == data {
                    return Ok(None);
                }
                if start + bytes.len() > offset {
                    self.remove(key);
                    return Err(ReassemblyError::Overlap);
                }
            }
            if datagram.fragments.range(offset..end).next().is_some() {
                self.remove(key);
                return Err(ReassemblyError::Overlap);
            }
            if self.bytes + stored_cost > self.max_bytes {
                return Err(ReassemblyError::NoRoom);
            }
            datagram.fragments.insert(offset, data.to_vec());
            datagram.received += data.len();
            datagram.cost += stored_cost;
            self.bytes += stored_cost;
        }
        if !more_fragments {
            datagram.end = Some(end);
        }

        if !datagram.is_complete() {
            return Ok(None);
        }
        Ok(self.remove(key).map(Datagram::into_payload))
    }

    /// Drops datagrams whose time is up. Returns how many were dropped (including any
    /// found timed out, and dropped, by `add` since the last call).
    pub fn expire(&mut self, now: Instant) -> usize {
        self.latest_now = self.latest_now.max(now);
        let dropped = self.drop_expired(now) + self.timed_out_unreported;
        self.timed_out_unreported = 0;
        dropped
    }

    /// When [`expire`](Reassembler::expire) next has work, or `None` when nothing is
    /// held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.timed_out_unreported > 0 {
            return Some(self.latest_now);
        }
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    fn start_datagram(
        &mut self,
        now: Instant,
        key: FragmentKey,
        offset: usize,
        more_fragments: bool,
        data: &[u8],
        stored_cost: usize,
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        let cost = DATAGRAM_OVERHEAD + stored_cost;
        if self.datagrams.len() >= self.max_datagrams || self.bytes + cost > self.max_bytes {
            return Err(ReassemblyError::NoRoom);
        }
        let deadline = now + self.timeout;
        let mut fragments = BTreeMap::new();
        if !data.is_empty() {
            fragments.insert(offset, data.to_vec());
        }
        let end = (!more_fragments).then_some(offset + data.len());
        let datagram = Datagram { deadline, fragments, received: data.len(), end, cost };
        // A lone fragment is complete only when it is the whole datagram, which `add`
        // handles without storing; a last fragment of length zero at offset zero would be
        // an empty, unfragmented datagram and is caught there too.
        self.bytes += cost;
        self.deadlines.insert((deadline, key));
        self.datagrams.insert(key, datagram);
        Ok(None)
    }

    fn remove(&mut self, key: FragmentKey) -> Option<Datagram> {
        let datagram = self.datagrams.remove(&key)?;
        self.deadlines.remove(&(datagram.deadline, key));
        self.bytes -= datagram.cost;
        Some(datagram)
    }

    fn drop_expired(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&(deadline, key)) = self.deadlines.first() {
            if now < deadline {
                break;
            }
            self.deadlines.pop_first();
            if let Some(datagram) = self.datagrams.remove(&key) {
                self.bytes -= datagram.cost;
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn key(ident: u16) -> FragmentKey {
        FragmentKey {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            protocol: 17,
            ident,
        }
    }
    fn reassembler() -> Reassembler {
        Reassembler::new(16, 1 << 20, TIMEOUT)
    }
    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }
    /// (offset, MF, bytes) of one fragment.
    type Fragment = (usize, bool, Vec<u8>);

    /// Splits `data` into fragments of `size` bytes (a multiple of 8).
    fn fragments(data: &[u8], size: usize) -> Vec<Fragment> {
        let chunks: Vec<&[u8]> = data.chunks(size).collect();
        let last = chunks.len() - 1;
        chunks.iter().enumerate().map(|(i, c)| (i * size, i != last, c.to_vec())).collect()
    }

    #[test]
    fn in_order_fragments_reassemble() {
        let mut r = reassembler();
        let data = payload(3000);
        let frags = fragments(&data, 1480);
        let t = Instant::from_secs(1);
        assert_eq!(r.add(t, key(1), frags[0].0, frags[0].1, &frags[0].2), Ok(None));
        assert_eq!(r.add(t, key(1), frags[1].0, frags[1].1, &frags[1].2), Ok(None));
        assert_eq!(r.add(t, key(1), frags[2].0, frags[2].1, &frags[2].2), Ok(Some(data)));
        assert_eq!(r.poll_timeout(), None, "nothing left behind");
    }

    #[test]
    fn reverse_order_fragments_reassemble() {
        let mut r = reassembler();
        let data = payload(1000);
        let mut result = None;
        for (offset, more, bytes) in fragments(&data, 96).into_iter().rev() {
            result = r.add(Instant::ZERO, key(2), offset, more, &bytes).unwrap();
        }
        assert_eq!(result, Some(data));
    }

    #[test]
    fn unfragmented_datagram_passes_straight_through() {
        let mut r = Reassembler::new(0, 0, TIMEOUT);
        assert_eq!(r.add(Instant::ZERO, key(3), 0, false, b"whole"), Ok(Some(b"whole".to_vec())));
    }

    #[test]
    fn identical_duplicate_is_ignored() {
        let mut r = reassembler();
        let data = payload(24);
        assert_eq!(r.add(Instant::ZERO, key(4), 0, true, &data[..16]), Ok(None));
        assert_eq!(r.add(Instant::ZERO, key(4), 0, true, &data[..16]), Ok(None));
        assert_eq!(r.add(Instant::ZERO, key(4), 16, false, &data[16..]), Ok(Some(data)));
    }

    #[test]
    fn overlap_drops_the_whole_datagram() {
        let mut r = reassembler();
        let data = payload(32);
        r.add(Instant::ZERO, key(5), 0, true, &data[..16]).unwrap();
        assert_eq!(
            r.add(Instant::ZERO, key(5), 8, true, &data[8..24]),
            Err(ReassemblyError::Overlap)
        );
        // What was held is gone: the remaining fragments alone cannot complete it.
        assert_eq!(r.add(Instant::ZERO, key(5), 16, false, &data[16..]), Ok(None));
        assert_eq!(r.add(Instant::ZERO, key(5), 8, true, &data[8..16]), Ok(None));
    }

    #[test]
    fn same_offset_with_different_bytes_is_an_overlap() {
        let mut r = reassembler();
        r.add(Instant::ZERO, key(6), 8, true, &[1; 8]).unwrap();
        assert_eq!(r.add(Instant::ZERO, key(6), 8, true, &[2; 8]), Err(ReassemblyError::Overlap));
        // Overlapping the start of a later fragment counts as well.
        r.add(Instant::ZERO, key(7), 16, true, &[1; 8]).unwrap();
        assert_eq!(r.add(Instant::ZERO, key(7), 8, true, &[1; 16]), Err(ReassemblyError::Overlap));
    }

    #[test]
    fn conflicting_ends_drop_the_datagram() {
        let mut r = reassembler();
        r.add(Instant::ZERO, key(8), 16, false, &[0; 4]).unwrap();
        assert_eq!(
            r.add(Instant::ZERO, key(8), 8, false, &[0; 4]),
            Err(ReassemblyError::Inconsistent)
        );
        r.add(Instant::ZERO, key(9), 16, false, &[0; 4]).unwrap();
        assert_eq!(
            r.add(Instant::ZERO, key(9), 16, true, &[0; 8]),
            Err(ReassemblyError::Inconsistent)
        );
        r.add(Instant::ZERO, key(10), 32, true, &[0; 8]).unwrap();
        assert_eq!(
            r.add(Instant::ZERO, key(10), 8, false, &[0; 8]),
            Err(ReassemblyError::Inconsistent)
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn misaligned_fragments_are_refused_alone() {
        let mut r = reassembler();
        let data = payload(20);
        r.add(Instant::ZERO, key(11), 0, true, &data[..8]).unwrap();
        assert_eq!(
            r.add(Instant::ZERO, key(11), 8, true, &data[8..13]),
            Err(ReassemblyError::BadOffset)
        );
        assert_eq!(
            r.add(Instant::ZERO, key(11), 4, false, &data[4..]),
            Err(ReassemblyError::BadOffset)
        );
        // The datagram survived and completes normally.
        assert_eq!(r.add(Instant::ZERO, key(11), 8, false, &data[8..]), Ok(Some(data)));
    }

    #[test]
    fn datagram_past_the_ipv4_limit_is_refused() {
        let mut r = reassembler();
        r.add(Instant::ZERO, key(12), 0, true, &[0; 8]).unwrap();
        assert_eq!(
            r.add(Instant::ZERO, key(12), 65_512, false, &[0; 8]),
            Err(ReassemblyError::TooLarge)
        );
        assert_eq!(r.poll_timeout(), None, "the datagram is dropped");
        // Exactly at the limit is fine.
        let last = MAX_DATAGRAM_PAYLOAD - 65_504;
        r.add(Instant::ZERO, key(13), 0, true, &[0; 8]).unwrap();
        assert_eq!(r.add(Instant::ZERO, key(13), 65_504, false, &vec![0; last]), Ok(None));
        assert_eq!(
            r.add(Instant::ZERO, key(13), usize::MAX - 7, false, &[0; 9]),
            Err(ReassemblyError::TooLarge)
        );
    }

    #[test]
    fn largest_datagram_reassembles() {
        let mut r = reassembler();
        let data = payload(MAX_DATAGRAM_PAYLOAD);
        let mut result = None;
        for (offset, more, bytes) in fragments(&data, 1480) {
            result = r.add(Instant::ZERO, key(14), offset, more, &bytes).unwrap();
        }
        assert_eq!(result.map(|p| p.len()), Some(MAX_DATAGRAM_PAYLOAD));
    }

    #[test]
    fn incomplete_datagram_times_out() {
        let mut r = reassembler();
        let start = Instant::from_secs(100);
        r.add(start, key(15), 0, true, &[0; 8]).unwrap();
        r.add(start + Duration::from_secs(20), key(15), 16, false, &[0; 8]).unwrap();
        assert_eq!(r.poll_timeout(), Some(start + TIMEOUT), "later fragments do not extend it");
        assert_eq!(r.expire(start + Duration::from_secs(29)), 0);
        assert_eq!(r.expire(start + TIMEOUT), 1);
        assert_eq!(r.poll_timeout(), None);
        // The missing piece arriving late starts a fresh datagram instead of completing.
        assert_eq!(r.add(start + TIMEOUT, key(15), 8, true, &[0; 8]), Ok(None));
    }

    #[test]
    fn timed_out_datagram_found_by_add_is_reported_by_expire() {
        let mut r = reassembler();
        r.add(Instant::ZERO, key(16), 0, true, &[0; 8]).unwrap();
        let late = Instant::ZERO + TIMEOUT + Duration::from_secs(1);
        assert_eq!(r.add(late, key(16), 8, false, &[0; 8]), Ok(None));
        assert_eq!(r.poll_timeout(), Some(late));
        assert_eq!(r.expire(late), 1);
        assert_eq!(r.poll_timeout(), Some(late + TIMEOUT));
    }

    #[test]
    fn datagram_count_is_limited() {
        let mut r = Reassembler::new(2, 1 << 20, TIMEOUT);
        r.add(Instant::ZERO, key(1), 0, true, &[0; 8]).unwrap();
        r.add(Instant::ZERO, key(2), 0, true, &[0; 8]).unwrap();
        assert_eq!(r.add(Instant::ZERO, key(3), 0, true, &[0; 8]), Err(ReassemblyError::NoRoom));
        // Existing datagrams still progress, and completing one frees a slot.
        assert_eq!(
            r.add(Instant::ZERO, key(1), 8, false, &[1]),
            Ok(Some(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert_eq!(r.add(Instant::ZERO, key(3), 0, true, &[0; 8]), Ok(None));
    }

    #[test]
    fn byte_budget_counts_bookkeeping_of_tiny_fragments() {
        let budget = 4096;
        let mut r = Reassembler::new(1000, budget, TIMEOUT);
        let mut accepted = 0;
        for i in 0..1000usize {
            match r.add(Instant::ZERO, key(1), i * 16, true, &[0; 8]) {
                Ok(None) => accepted += 1,
                Err(ReassemblyError::NoRoom) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(accepted > 0);
        assert!(accepted * 8 < budget / 4, "8-byte fragments must be charged far above 8 bytes");
        // Dropping the datagram returns the budget.
        assert_eq!(r.expire(Instant::ZERO + TIMEOUT), 1);
        assert_eq!(r.add(Instant::ZERO + TIMEOUT, key(2), 0, true, &[0; 2048]), Ok(None));
    }

    #[test]
    fn errors_display_a_reason() {
        use alloc::string::ToString;
        for e in [
            ReassemblyError::Overlap,
            ReassemblyError::TooLarge,
            ReassemblyError::NoRoom,
            ReassemblyError::BadOffset,
            ReassemblyError::Inconsistent,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    /// A datagram and its fragmentation into pieces of multiples of 8 bytes.
    fn fragmented_datagram() -> impl Strategy<Value = (Vec<u8>, Vec<Fragment>)> {
        (prop::collection::vec(any::<u8>(), 1..3000), prop::collection::vec(1usize..40, 1..400))
            .prop_map(|(data, units)| {
                let mut frags = Vec::new();
                let mut offset = 0;
                for u in units.into_iter().cycle() {
                    let end = (offset + u * 8).min(data.len());
                    frags.push((offset, end < data.len(), data[offset..end].to_vec()));
                    offset = end;
                    if offset == data.len() {
                        break;
                    }
                }
                (data, frags)
            })
    }

    proptest! {
        #[test]
        fn any_permutation_with_duplicates_reassembles(
            (data, frags) in fragmented_datagram(),
            order in any::<prop::sample::Index>(),
            dups in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            seed in any::<u64>(),
        ) {
            let mut sequence = frags.clone();
            for d in &dups {
                sequence.push(d.get(&frags).clone());
            }
            // A seeded Fisher-Yates shuffle; `order` varies the start.
            let mut state = seed | 1;
            let n = sequence.len();
            sequence.rotate_left(order.index(n));
            for i in (1..n).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                sequence.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut r = Reassembler::new(4, 1 << 20, TIMEOUT);
            let mut completed = Vec::new();
            for (offset, more, bytes) in &sequence {
                if let Some(p) = r.add(Instant::ZERO, key(99), *offset, *more, bytes).unwrap() {
                    completed.push(p);
                }
            }
            // Duplicates arriving after completion start a new datagram, which completes
            // again only if every one of its fragments was duplicated too.
            if dups.is_empty() {
                prop_assert_eq!(completed.len(), 1);
            }
            prop_assert!(!completed.is_empty());
            for p in &completed {
                prop_assert_eq!(p, &data);
            }
        }

        #[test]
        fn arbitrary_fragments_never_panic_and_respect_limits(
            ops in prop::collection::vec(
                (0u16..3, 0usize..70_000, any::<bool>(), 0usize..200, 0u64..5_000, any::<u8>()),
                0..300,
            )
        ) {
            let (max_datagrams, max_bytes) = (3, 4096);
            let mut r = Reassembler::new(max_datagrams, max_bytes, Duration::from_secs(2));
            let mut now = Instant::ZERO;
            for (ident, raw_offset, more, len, step_ms, fill) in ops {
                now += Duration::from_millis(step_ms);
                // Mostly aligned offsets in a small range, so fragments do meet.
                let offset = if raw_offset % 5 == 0 { raw_offset } else { (raw_offset % 64) * 8 };
                let data = vec![fill; len];
                if let Ok(Some(p)) = r.add(now, key(ident), offset, more, &data) {
                    prop_assert!(p.len() <= MAX_DATAGRAM_PAYLOAD);
                }
                prop_assert!(r.datagrams.len() <= max_datagrams);
                prop_assert!(r.bytes <= max_bytes);
                prop_assert_eq!(r.deadlines.len(), r.datagrams.len());
                if let Some(t) = r.poll_timeout() {
                    prop_assert!(t <= now + Duration::from_secs(2));
                }
                if now.as_millis() % 3 == 0 {
                    r.expire(now);
                }
            }
            r.expire(now + Duration::from_secs(2));
            prop_assert!(r.datagrams.is_empty());
            prop_assert_eq!(r.bytes, 0);
        }
    }
}
