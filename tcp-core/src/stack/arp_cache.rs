//! The ARP cache (RFC 826, "Packet Reception"), with the rules of RFC 1122 §2.3.2.1
//! (entries time out; at most one request per address per interval, to prevent ARP
//! flooding) and §2.3.2.2 (packets waiting for resolution are queued, a few per address,
//! the latest kept).
//!
//! The cache is data only: it decides, the stack sends. Unresolved addresses live in a
//! separate table that holds both the request rate limit and the packets waiting; an
//! address is given up on (its packets dropped, as Linux drops them when a neighbour goes
//! FAILED after three unanswered probes) [`GIVE_UP_AFTER_INTERVALS`] request intervals
//! after resolution began.
//!
//! Every table is bounded: `capacity` resolved entries, `capacity` unresolved addresses,
//! [`PENDING_PER_ADDRESS`] packets per address and [`MAX_PENDING_BYTES`] bytes queued in
//! all.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::time::Duration;

use crate::time::Instant;
use crate::wire::EthernetAddress;

/// Packets kept per unresolved address (Linux's historical `unres_qlen` default).
pub const PENDING_PER_ADDRESS: usize = 3;
/// Bytes of IP packets kept across all unresolved addresses.
pub const MAX_PENDING_BYTES: usize = 64 * 1024;
/// Request intervals after which an unresolved address is given up on (Linux sends three
/// unicast/broadcast probes, `mcast_solicit` = 3, one per `retrans_time`).
pub const GIVE_UP_AFTER_INTERVALS: u32 = 3;

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: EthernetAddress,
    filled_at: Instant,
}

/// An address we are trying to resolve.
#[derive(Debug)]
struct Resolution {
    started: Instant,
    last_request: Option<Instant>,
    packets: VecDeque<Vec<u8>>,
}

/// Maps IPv4 addresses on the link to Ethernet addresses, rate-limits ARP requests and
/// holds packets waiting for an answer.
///
/// Call protocol: on a miss, [`queue_pending`](ArpCache::queue_pending) the packet and
/// send a request if [`should_request`](ArpCache::should_request) says so; on an ARP
/// packet that RFC 826 says to merge, [`fill`](ArpCache::fill) then
/// [`take_pending`](ArpCache::take_pending) and send what comes back; when
/// [`poll_timeout`](ArpCache::poll_timeout) is due, [`expire`](ArpCache::expire).
#[derive(Debug)]
pub struct ArpCache {
    capacity: usize,
    entry_lifetime: Duration,
    request_interval: Duration,
    // Addresses are keyed as `u32` (`Ipv4Addr::to_bits`, which orders them as `Ipv4Addr`
    // does): one integer compare per B-tree step instead of a byte-slice compare.
    entries: BTreeMap<u32, Entry>,
    /// `(filled_at, ip)` for every entry: oldest first, for eviction and the next expiry.
    by_age: BTreeSet<(Instant, u32)>,
    unresolved: BTreeMap<u32, Resolution>,
    /// Sum of the lengths of every queued packet.
    pending_bytes: usize,
    /// Packets dropped by evicting an unresolved address, reported by the next `expire`.
    evicted_packets: usize,
    /// The latest `now` any call has shown us (time never goes back inside the cache).
    latest_now: Instant,
    /// What [`poll_timeout`](ArpCache::poll_timeout) returns, recomputed after every
    /// change: the stack asks for it on every call of its own `poll_timeout`.
    next_deadline: Option<Instant>,
    /// The entry filled last, `(ip, mac, expires_at)`, answered without a B-tree walk: the
    /// transmit path looks up the next hop of every segment, and a host mostly talks to one
    /// gateway or a few peers. Cleared whenever that entry leaves `entries`.
    last_filled: Option<(u32, EthernetAddress, Instant)>,
}

impl ArpCache {
    /// A cache of at most `capacity` entries (at least 1), each valid for
    /// `entry_lifetime` after it was filled, sending at most one request per address per
    /// `request_interval` (RFC 1122 §2.3.2.1 recommends one second).
    pub fn new(capacity: usize, entry_lifetime: Duration, request_interval: Duration) -> Self {
        ArpCache {
            capacity: capacity.max(1),
            entry_lifetime,
            request_interval,
            entries: BTreeMap::new(),
            by_age: BTreeSet::new(),
            unresolved: BTreeMap::new(),
            pending_bytes: 0,
            evicted_packets: 0,
            latest_now: Instant::ZERO,
            next_deadline: None,
            last_filled: None,
        }
    }

    /// The Ethernet address of `ip`, unless unknown or expired.
    pub fn lookup(&self, ip: Ipv4Addr, now: Instant) -> Option<EthernetAddress> {
        if let Some((key, mac, expires_at)) = self.last_filled {
            if key == ip.to_bits() {
                return (now < expires_at).then_some(mac);
            }
        }
        let entry = self.entries.get(&ip.to_bits())?;
        (now < entry.filled_at + self.entry_lifetime).then_some(entry.mac)
    }

    /// Records (or refreshes) `ip` at `mac`. When the cache is full, the entry filled
    /// longest ago makes room. A group (broadcast or multicast) `mac` is ignored: no
    /// unicast IPv4 address lives there, and accepting one would let a forged ARP packet
    /// turn our unicast traffic into floods.
    pub fn fill(&mut self, ip: Ipv4Addr, mac: EthernetAddress, now: Instant) {
        self.observe(now);
        if !mac.is_unicast() {
            return;
        }
        let key = ip.to_bits();
        if let Some(old) = self.entries.insert(key, Entry { mac, filled_at: now }) {
            self.by_age.remove(&(old.filled_at, key));
        }
        self.by_age.insert((now, key));
        self.last_filled = Some((key, mac, now + self.entry_lifetime));
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            self.entries.remove(&oldest);
            self.forget_last(oldest);
        }
        self.refresh_deadline();
    }

    /// Whether to send an ARP request for `ip` now. True at most once per request
    /// interval per address; a true answer is recorded as a request sent.
    pub fn should_request(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        self.observe(now);
        let interval = self.request_interval;
        let resolution = self.resolution_mut(ip, now);
        let due = resolution.last_request.is_none_or(|last| now >= last + interval);
        if due {
            resolution.last_request = Some(now);
        }
        self.refresh_deadline();
        due
    }

    /// Queues `ip_packet` until `ip` resolves. Keeps the latest [`PENDING_PER_ADDRESS`]
    /// packets per address (RFC 1122 §2.3.2.2: "SHOULD save at least one (the latest)")
    /// within [`MAX_PENDING_BYTES`] overall.
    ///
    /// Returns false if a packet was dropped: the oldest one queued for `ip`, or this one
    /// when it does not fit in the byte budget. At most one packet is dropped per call.
    pub fn queue_pending(&mut self, ip: Ipv4Addr, ip_packet: Vec<u8>, now: Instant) -> bool {
        self.observe(now);
        let now = self.latest_now;
        let pending_bytes = self.pending_bytes;
        let resolution = self.resolution_mut(ip, now);
        let full = resolution.packets.len() >= PENDING_PER_ADDRESS;
        let displaced = match resolution.packets.front() {
            Some(oldest) if full => oldest.len(),
            _ => 0,
        };
        if pending_bytes - displaced + ip_packet.len() > MAX_PENDING_BYTES {
            if resolution.packets.is_empty() && resolution.last_request.is_none() {
                self.unresolved.remove(&ip.to_bits());
            }
            self.refresh_deadline();
            return false;
        }
        if full {
            resolution.packets.pop_front();
        }
        let added = ip_packet.len();
        resolution.packets.push_back(ip_packet);
        self.pending_bytes = pending_bytes - displaced + added;
        self.refresh_deadline();
        !full
    }

    /// The packets queued for `ip`, oldest first, and forgets the resolution attempt.
    /// Call it after [`fill`](ArpCache::fill) for `ip`.
    pub fn take_pending(&mut self, ip: Ipv4Addr) -> Vec<Vec<u8>> {
        let Some(resolution) = self.unresolved.remove(&ip.to_bits()) else { return Vec::new() };
        let packets: Vec<Vec<u8>> = resolution.packets.into();
        self.pending_bytes -= packets.iter().map(Vec::len).sum::<usize>();
        self.refresh_deadline();
        packets
    }

    /// Removes expired entries and gives up on addresses that stayed unresolved for
    /// [`GIVE_UP_AFTER_INTERVALS`] request intervals. Returns how many queued packets were
    /// dropped (including any lost since the last call because the unresolved table was
    /// full).
    pub fn expire(&mut self, now: Instant) -> usize {
        self.observe(now);
        while let Some(&(filled_at, ip)) = self.by_age.first() {
            if now < filled_at + self.entry_lifetime {
                break;
            }
            self.by_age.pop_first();
            self.entries.remove(&ip);
            self.forget_last(ip);
        }
        let mut dropped = core::mem::take(&mut self.evicted_packets);
        let mut freed = 0;
        self.unresolved.retain(|_, resolution| {
            if now < give_up_at(resolution, self.request_interval) {
                return true;
            }
            dropped += resolution.packets.len();
            freed += resolution.packets.iter().map(Vec::len).sum::<usize>();
            false
        });
        self.pending_bytes -= freed;
        self.refresh_deadline();
        dropped
    }

    /// When [`expire`](ArpCache::expire) next has work: the earliest entry expiry or
    /// give-up time. `None` when the cache holds nothing that expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_deadline
    }

    fn forget_last(&mut self, key: u32) {
        if self.last_filled.is_some_and(|(k, _, _)| k == key) {
            self.last_filled = None;
        }
    }

    fn refresh_deadline(&mut self) {
        let entry = self.by_age.first().map(|&(filled_at, _)| filled_at + self.entry_lifetime);
        let give_up = self.unresolved.values().map(|r| give_up_at(r, self.request_interval)).min();
        let eviction = (self.evicted_packets > 0).then_some(self.latest_now);
        self.next_deadline = [entry, give_up, eviction].into_iter().flatten().min();
    }

    /// Entries held, counting expired ones that [`expire`](ArpCache::expire) has not yet
    /// removed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn observe(&mut self, now: Instant) {
        self.latest_now = self.latest_now.max(now);
    }

    /// The resolution for `ip`, begun at `now` if new. A full table first evicts the
    /// resolution begun longest ago: under a flood of distinct addresses fresh attempts
    /// (most likely to be answered) win, and a request is never sent twice in an interval
    /// for any address still in the table.
    fn resolution_mut(&mut self, ip: Ipv4Addr, now: Instant) -> &mut Resolution {
        let ip = ip.to_bits();
        if !self.unresolved.contains_key(&ip) && self.unresolved.len() >= self.capacity {
            let oldest = self.unresolved.iter().min_by_key(|(_, r)| r.started).map(|(&ip, _)| ip);
            if let Some(victim) = oldest.and_then(|ip| self.unresolved.remove(&ip)) {
                self.evicted_packets += victim.packets.len();
                self.pending_bytes -= victim.packets.iter().map(Vec::len).sum::<usize>();
            }
        }
        self.unresolved.entry(ip).or_insert_with(|| Resolution {
            started: now,
            last_request: None,
            packets: VecDeque::new(),
        })
    }
}

/// When to give up on `resolution`: after the configured number of intervals, but never
/// before its last request's interval is over, so forgetting it cannot let a request be
/// repeated early.
fn give_up_at(resolution: &Resolution, interval: Duration) -> Instant {
    let deadline = resolution.started + interval.saturating_mul(GIVE_UP_AFTER_INTERVALS);
    match resolution.last_request {
        Some(last) => deadline.max(last + interval),
        None => deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xa]);
    const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0xb]);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 0, last)
    }
    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }
    fn cache(capacity: usize) -> ArpCache {
        ArpCache::new(capacity, Duration::from_secs(60), Duration::from_secs(1))
    }

    #[test]
    fn filled_entry_is_found_until_it_expires() {
        let mut c = cache(8);
        assert_eq!(c.lookup(ip(1), secs(0)), None);
        c.fill(ip(1), MAC_A, secs(10));
        assert_eq!(c.lookup(ip(1), secs(10)), Some(MAC_A));
        assert_eq!(c.lookup(ip(1), secs(69)), Some(MAC_A));
        assert_eq!(c.lookup(ip(1), secs(70)), None, "expired entries are misses");
        assert_eq!(c.lookup(ip(2), secs(10)), None);
    }

    #[test]
    fn refill_updates_the_address_and_restarts_the_lifetime() {
        let mut c = cache(8);
        c.fill(ip(1), MAC_A, secs(0));
        c.fill(ip(1), MAC_B, secs(50));
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(ip(1), secs(100)), Some(MAC_B));
        assert_eq!(c.expire(secs(100)), 0);
        assert_eq!(c.len(), 1, "the first fill's expiry must not remove the refreshed entry");
    }

    #[test]
    fn full_cache_evicts_the_entry_filled_longest_ago() {
        let mut c = cache(2);
        c.fill(ip(1), MAC_A, secs(1));
        c.fill(ip(2), MAC_A, secs(2));
        c.fill(ip(1), MAC_A, secs(3)); // refresh: ip(2) is now the oldest
        c.fill(ip(3), MAC_B, secs(4));
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(ip(2), secs(4)), None);
        assert_eq!(c.lookup(ip(1), secs(4)), Some(MAC_A));
        assert_eq!(c.lookup(ip(3), secs(4)), Some(MAC_B));
    }

    #[test]
    fn group_addresses_are_never_cached() {
        let mut c = cache(8);
        c.fill(ip(1), EthernetAddress::BROADCAST, secs(0));
        c.fill(ip(2), EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]), secs(0));
        assert!(c.is_empty());
        assert_eq!(c.lookup(ip(1), secs(0)), None);
    }

    #[test]
    fn requests_are_limited_to_one_per_interval_per_address() {
        let mut c = cache(8);
        assert!(c.should_request(ip(1), secs(0)));
        assert!(!c.should_request(ip(1), secs(0)));
        assert!(!c.should_request(ip(1), Instant::from_millis(999)));
        assert!(
            c.should_request(ip(2), Instant::from_millis(500)),
            "other addresses are independent"
        );
        assert!(c.should_request(ip(1), secs(1)));
        assert!(!c.should_request(ip(1), Instant::from_millis(1500)));
    }

    #[test]
    fn per_address_queue_keeps_the_latest_three() {
        let mut c = cache(8);
        assert!(c.queue_pending(ip(1), vec![1], secs(0)));
        assert!(c.queue_pending(ip(1), vec![2], secs(0)));
        assert!(c.queue_pending(ip(1), vec![3], secs(0)));
        assert!(!c.queue_pending(ip(1), vec![4], secs(0)), "a packet was dropped");
        assert!(c.queue_pending(ip(2), vec![9], secs(0)), "the limit is per address");
        assert_eq!(c.take_pending(ip(1)), vec![vec![2], vec![3], vec![4]]);
        assert_eq!(c.take_pending(ip(1)), Vec::<Vec<u8>>::new());
        assert_eq!(c.take_pending(ip(2)), vec![vec![9]]);
    }

    #[test]
    fn queued_bytes_are_bounded_overall() {
        let mut c = cache(64);
        let packet = vec![0u8; 9000];
        let fits = MAX_PENDING_BYTES / packet.len();
        for i in 0..fits {
            assert!(c.queue_pending(ip(i as u8), packet.clone(), secs(0)), "packet {i}");
        }
        assert!(!c.queue_pending(ip(200), packet.clone(), secs(0)), "over the byte budget");
        assert_eq!(c.take_pending(ip(200)), Vec::<Vec<u8>>::new());
        assert!(!c.queue_pending(ip(201), vec![0; MAX_PENDING_BYTES + 1], secs(0)));
        // Taking packets frees their bytes.
        assert_eq!(c.take_pending(ip(0)).len(), 1);
        assert!(c.queue_pending(ip(200), packet, secs(0)));
    }

    #[test]
    fn replacing_the_oldest_packet_counts_its_bytes_back() {
        let mut c = cache(8);
        let big = MAX_PENDING_BYTES / 3;
        for _ in 0..3 {
            assert!(c.queue_pending(ip(1), vec![0; big], secs(0)));
        }
        // Full queue, full-ish budget: the displaced packet's bytes make room.
        assert!(!c.queue_pending(ip(1), vec![1; big], secs(0)));
        let taken = c.take_pending(ip(1));
        assert_eq!(taken.len(), 3);
        assert_eq!(taken[2], vec![1; big]);
    }

    #[test]
    fn unresolved_packets_are_dropped_after_three_intervals() {
        let mut c = cache(8);
        c.expire(secs(10));
        assert!(c.should_request(ip(1), secs(10)));
        c.queue_pending(ip(1), vec![1], secs(0));
        c.queue_pending(ip(1), vec![2], secs(0));
        assert!(c.should_request(ip(1), secs(11)));
        assert_eq!(c.poll_timeout(), Some(secs(13)));
        assert_eq!(c.expire(Instant::from_millis(12_999)), 0);
        assert_eq!(c.expire(secs(13)), 2);
        assert_eq!(c.take_pending(ip(1)), Vec::<Vec<u8>>::new());
        assert_eq!(c.poll_timeout(), None);
        assert!(c.should_request(ip(1), secs(13)), "a fresh attempt may start");
    }

    #[test]
    fn giving_up_never_shortens_the_request_interval() {
        let mut c = ArpCache::new(8, Duration::from_secs(60), Duration::from_secs(1));
        assert!(c.should_request(ip(1), Instant::from_millis(0)));
        assert!(c.should_request(ip(1), Instant::from_millis(2_900)));
        assert_eq!(c.expire(secs(3)), 0);
        assert!(!c.should_request(ip(1), Instant::from_millis(3_100)));
        assert!(c.should_request(ip(1), Instant::from_millis(3_900)));
    }

    #[test]
    fn resolved_address_hands_back_its_queue() {
        let mut c = cache(8);
        assert!(c.should_request(ip(7), secs(1)));
        c.queue_pending(ip(7), vec![0xaa; 40], secs(0));
        c.fill(ip(7), MAC_A, Instant::from_millis(1_002));
        assert_eq!(c.take_pending(ip(7)), vec![vec![0xaa; 40]]);
        assert_eq!(c.expire(secs(5)), 0, "nothing left to drop");
        assert_eq!(c.lookup(ip(7), secs(5)), Some(MAC_A));
    }

    #[test]
    fn expire_removes_stale_entries_and_poll_timeout_tracks_them() {
        let mut c = cache(8);
        assert_eq!(c.poll_timeout(), None);
        c.fill(ip(1), MAC_A, secs(0));
        c.fill(ip(2), MAC_B, secs(30));
        assert_eq!(c.poll_timeout(), Some(secs(60)));
        assert_eq!(c.expire(secs(60)), 0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.poll_timeout(), Some(secs(90)));
        c.expire(secs(90));
        assert!(c.is_empty());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn unresolved_table_is_bounded_and_evicted_packets_are_reported() {
        let mut c = cache(2);
        assert!(c.should_request(ip(1), secs(0)));
        c.queue_pending(ip(1), vec![1], secs(0));
        assert!(c.should_request(ip(2), secs(1)));
        assert!(c.should_request(ip(3), secs(2)), "a new address evicts the oldest attempt");
        assert_eq!(c.take_pending(ip(1)), Vec::<Vec<u8>>::new());
        assert_eq!(c.poll_timeout(), Some(secs(2)), "the loss is due to be reported");
        assert_eq!(c.expire(secs(2)), 1);
        assert!(!c.should_request(ip(3), secs(2)), "surviving attempts keep their limit");
    }

    #[test]
    fn capacity_zero_still_works_as_one() {
        let mut c = cache(0);
        c.fill(ip(1), MAC_A, secs(0));
        assert_eq!(c.lookup(ip(1), secs(0)), Some(MAC_A));
        assert!(c.should_request(ip(2), secs(0)));
    }

    proptest::proptest! {
        /// Lookups (which answer the last-filled entry without the B-tree) agree with a
        /// plain model of the cache through fills, refreshes, evictions and expiry.
        #[test]
        fn lookups_match_a_model(
            ops in proptest::collection::vec((0u8..3, 1u8..5, 0u64..3), 1..200),
        ) {
            let mut c = cache(3);
            // ip -> (mac, filled_at)
            let mut model: alloc::collections::BTreeMap<u8, (EthernetAddress, u64)> =
                alloc::collections::BTreeMap::new();
            let mut now = 0;
            for (op, host, step) in ops {
                now += step * 20;
                match op {
                    0 => {
                        let mac = if host % 2 == 0 { MAC_A } else { MAC_B };
                        c.fill(ip(host), mac, secs(now));
                        model.insert(host, (mac, now));
                        while model.len() > 3 {
                            let oldest = model.iter().min_by_key(|(h, (_, t))| (*t, ip(**h))).map(|(h, _)| *h);
                            if let Some(h) = oldest { model.remove(&h); }
                        }
                    }
                    1 => {
                        c.expire(secs(now));
                        model.retain(|_, (_, t)| now < *t + 60);
                    }
                    _ => {}
                }
                for h in 1u8..5 {
                    let want = model.get(&h).filter(|(_, t)| now < *t + 60).map(|(m, _)| *m);
                    proptest::prop_assert_eq!(c.lookup(ip(h), secs(now)), want, "host {} at {}", h, now);
                }
            }
        }
    }
}
