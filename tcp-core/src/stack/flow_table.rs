//! The connection table: 4-tuple → socket, the demultiplexing step of RFC 9293 §3.10.7
//! ("if the connection exists ...").
//!
//! An open-addressing hash table with linear probing. The 4-tuple is packed into 96 bits
//! and compared as two integers; slots are 16 bytes, so a probe sequence usually stays in
//! one cache line. The hash is a folded 64×64→128-bit multiply (the construction of
//! wyhash and foldhash) keyed with two words derived from the stack's secret, so a peer
//! that does not know the secret cannot choose 4-tuples that collide (hash flooding). A
//! deletion shifts the following entries of its run back (Knuth, TAOCP vol. 3, §6.4,
//! algorithm R), so the table never fills with tombstones under connection churn.

use alloc::vec;
use alloc::vec::Vec;

use super::siphash::siphash24;
use crate::tcp::FourTuple;

/// Domain-separation tag for the table's hash keys (see `isn` for tags 1 and 2).
const TAG_FLOW_TABLE: u8 = 3;
/// Slots of the smallest table.
const MIN_SLOTS: usize = 16;
/// A slot whose `socket` is this holds no entry.
const EMPTY: u32 = u32::MAX;

/// A 4-tuple packed for hashing and comparison: the remote address and both ports in one
/// word, the local address in the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowKey {
    remote_and_ports: u64,
    local_ip: u32,
}

impl FlowKey {
    fn new(tuple: &FourTuple) -> FlowKey {
        let remote = u64::from(tuple.remote.ip().to_bits());
        let ports = (u64::from(tuple.remote.port()) << 16) | u64::from(tuple.local.port());
        FlowKey { remote_and_ports: (remote << 32) | ports, local_ip: tuple.local.ip().to_bits() }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: FlowKey,
    socket: u32,
}

const VACANT: Slot = Slot { key: FlowKey { remote_and_ports: 0, local_ip: 0 }, socket: EMPTY };

/// Maps 4-tuples to socket indices. Holds at most one socket per 4-tuple.
#[derive(Debug)]
pub(crate) struct FlowTable {
    /// A power of two long; at most half full, so every probe sequence ends at an empty
    /// slot and a lookup inspects about two slots on average.
    slots: Vec<Slot>,
    len: usize,
    keys: [u64; 2],
}

impl FlowTable {
    /// An empty table whose hash is keyed by `secret`.
    pub(crate) fn new(secret: &[u8; 16]) -> FlowTable {
        let keys = [
            siphash24(secret, &[TAG_FLOW_TABLE, 0]),
            // Odd, so the multiplier can never be zero whatever the packed tuple is.
            siphash24(secret, &[TAG_FLOW_TABLE, 1]) | 1,
        ];
        FlowTable { slots: vec![VACANT; MIN_SLOTS], len: 0, keys }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, key: FlowKey) -> usize {
        let a = key.remote_and_ports ^ self.keys[0];
        let b = u64::from(key.local_ip) ^ self.keys[1];
        let product = u128::from(a) * u128::from(b);
        let hash = (product as u64) ^ ((product >> 64) as u64);
        hash as usize & self.mask()
    }

    /// The slot holding `key`, or the empty slot where its probe sequence ends.
    fn find(&self, key: FlowKey) -> (usize, bool) {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.slots.get(i) {
                Some(slot) if slot.socket == EMPTY => return (i, false),
                Some(slot) if slot.key == key => return (i, true),
                Some(_) => i = (i + 1) & mask,
                // Unreachable: `i` is masked to the table's length.
                None => return (i, false),
            }
        }
    }

    /// The socket of `tuple`.
    pub(crate) fn get(&self, tuple: &FourTuple) -> Option<u32> {
        let (i, found) = self.find(FlowKey::new(tuple));
        found.then(|| self.slots.get(i).map(|s| s.socket)).flatten()
    }

    pub(crate) fn contains(&self, tuple: &FourTuple) -> bool {
        self.find(FlowKey::new(tuple)).1
    }

    /// Maps `tuple` to `socket`, replacing any previous mapping. `socket` must not be
    /// `u32::MAX` (the slab never gets that far: each socket is over a kilobyte).
    pub(crate) fn insert(&mut self, tuple: &FourTuple, socket: u32) {
        debug_assert_ne!(socket, EMPTY, "socket index reserved for empty slots");
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize(self.slots.len() * 2);
        }
        let key = FlowKey::new(tuple);
        let (i, found) = self.find(key);
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Slot { key, socket };
            if !found {
                self.len += 1;
            }
        }
    }

    /// Removes the mapping of `tuple` if it names `socket`.
    pub(crate) fn remove_if(&mut self, tuple: &FourTuple, socket: u32) {
        let (mut hole, found) = self.find(FlowKey::new(tuple));
        if !found || self.slots.get(hole).is_none_or(|s| s.socket != socket) {
            return;
        }
        self.len -= 1;
        // Algorithm R: walk the rest of the run; an entry whose home does not lie
        // cyclically in (hole, j] would become unreachable behind the hole, so it moves
        // into the hole, which moves to where it was.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(&slot) = self.slots.get(j) else { break };
            if slot.socket == EMPTY {
                break;
            }
            let home = self.home(slot.key);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = slot;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = VACANT;
        }
        if self.slots.len() > MIN_SLOTS && self.len * 8 < self.slots.len() {
            self.resize(self.slots.len() / 2);
        }
    }

    fn resize(&mut self, slots: usize) {
        let old = core::mem::replace(&mut self.slots, vec![VACANT; slots]);
        for slot in old.into_iter().filter(|s| s.socket != EMPTY) {
            let (i, _) = self.find(slot.key);
            if let Some(s) = self.slots.get_mut(i) {
                *s = slot;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use core::net::{Ipv4Addr, SocketAddrV4};
    use proptest::prelude::*;

    fn tuple(remote_ip: u8, remote_port: u16, local_port: u16) -> FourTuple {
        FourTuple {
            local: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), local_port),
            remote: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, remote_ip), remote_port),
        }
    }

    #[test]
    fn each_part_of_the_tuple_tells_entries_apart() {
        let mut t = FlowTable::new(&[7; 16]);
        let base = tuple(2, 40000, 80);
        let mut local_ip = base;
        local_ip.local.set_ip(Ipv4Addr::new(10, 0, 0, 9));
        let variants = [tuple(3, 40000, 80), tuple(2, 40001, 80), tuple(2, 40000, 81), local_ip];
        t.insert(&base, 0);
        for (i, v) in variants.iter().enumerate() {
            assert_eq!(t.get(v), None);
            t.insert(v, i as u32 + 1);
        }
        assert_eq!(t.get(&base), Some(0));
        for (i, v) in variants.iter().enumerate() {
            assert_eq!(t.get(v), Some(i as u32 + 1));
        }
    }

    #[test]
    fn remove_only_drops_the_named_socket() {
        let mut t = FlowTable::new(&[0; 16]);
        let a = tuple(2, 1000, 80);
        t.insert(&a, 5);
        t.remove_if(&a, 6);
        assert_eq!(t.get(&a), Some(5));
        t.remove_if(&a, 5);
        assert_eq!(t.get(&a), None);
        assert!(!t.contains(&a));
    }

    #[test]
    fn grows_and_shrinks_with_its_contents() {
        let mut t = FlowTable::new(&[1; 16]);
        for port in 0..10_000u16 {
            t.insert(&tuple(2, port, 80), u32::from(port));
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.slots.len() >= 20_000);
        for port in 0..10_000u16 {
            assert_eq!(t.get(&tuple(2, port, 80)), Some(u32::from(port)));
        }
        for port in 0..9_990u16 {
            t.remove_if(&tuple(2, port, 80), u32::from(port));
        }
        assert!(t.slots.len() <= 128, "{} slots for 10 entries", t.slots.len());
        for port in 9_990..10_000u16 {
            assert_eq!(t.get(&tuple(2, port, 80)), Some(u32::from(port)));
        }
    }

    proptest! {
        /// Any sequence of inserts and removals leaves the table agreeing with a B-tree map,
        /// over a key space small enough that runs and wrap-arounds are common.
        #[test]
        fn behaves_like_a_map(
            ops in proptest::collection::vec((any::<bool>(), 0u8..4, 0u16..64, 0u32..8), 1..400),
            secret in any::<[u8; 16]>(),
        ) {
            let mut t = FlowTable::new(&secret);
            let mut model = BTreeMap::new();
            for (insert, ip, port, socket) in ops {
                let k = tuple(ip, port, 80);
                if insert {
                    t.insert(&k, socket);
                    model.insert(k, socket);
                } else {
                    t.remove_if(&k, socket);
                    if model.get(&k) == Some(&socket) {
                        model.remove(&k);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for ip in 0u8..4 {
                for port in 0u16..64 {
                    let k = tuple(ip, port, 80);
                    prop_assert_eq!(t.get(&k), model.get(&k).copied());
                }
            }
        }
    }
}
