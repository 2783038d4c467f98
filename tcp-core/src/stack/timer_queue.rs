//! The stack's timer queue: which socket's deadline comes next.
//!
//! Entries are `(deadline, socket)` pairs with lazy deletion. Each socket keeps its one
//! current deadline itself (`Socket::deadline`); moving or cancelling a deadline only adds
//! the new entry and leaves the old one behind, where it is recognised as stale — its
//! socket's current deadline differs — and dropped once it is the earliest. The stack
//! prunes after every change, so the earliest entry is always a live one and
//! [`TimerQueue::next`] is exact. Stale entries never outnumber live ones by much: past a
//! bound the queue is rebuilt from the sockets' deadlines, which costs O(sockets log
//! sockets) once per that many additions.
//!
//! Most deadlines are "now plus a fixed duration" (TIME-WAIT, the RTO, delayed ACK,
//! keepalive) and the stack's clock only moves forward, so entries of one kind arrive in
//! order. They are kept in a few sorted FIFO *lanes*: an entry joins the lane whose last
//! entry is the latest one not after it, so each kind of deadline settles into a lane of its
//! own and adding or removing an entry is O(1). Only an entry that fits no lane goes to a
//! binary heap. The earliest entry is the least of the lanes' fronts and the heap's top.
//!
//! Entries pop in `(deadline, socket index)` order, so sockets due at the same instant are
//! served by index, as with an ordered set.

use alloc::collections::{BinaryHeap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::time::Instant;

/// Stale entries tolerated beyond the live ones before a rebuild.
const SLACK: usize = 64;

/// Sorted FIFO lanes; a handful covers the kinds of deadline a connection has.
const LANES: usize = 4;

type Entry = (Instant, u32);

/// Where the earliest entry lives.
#[derive(Clone, Copy, Debug)]
enum Source {
    Lane(usize),
    Heap,
}

#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    /// Each lane is sorted by `(deadline, socket)`.
    lanes: [VecDeque<Entry>; LANES],
    /// Entries that fit no lane.
    heap: BinaryHeap<Reverse<Entry>>,
    /// Entries in the lanes and the heap, stale ones included.
    entries: usize,
    /// Sockets with a deadline (each has at least one entry).
    live: usize,
    /// The earliest entry and where it is, kept up to date by every change: the stack
    /// asks for it far more often than the queue changes.
    first: Option<(Entry, Source)>,
}

impl TimerQueue {
    /// The earliest deadline, if any. Exact as long as the owner prunes after changes.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.first.map(|(entry, _)| entry.0)
    }

    /// Finds the earliest entry and where it is.
    fn find_first(&self) -> Option<(Entry, Source)> {
        let mut best = self.heap.peek().map(|&Reverse(e)| (e, Source::Heap));
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(&front) = lane.front() {
                if best.is_none_or(|(b, _)| front < b) {
                    best = Some((front, Source::Lane(i)));
                }
            }
        }
        best
    }

    fn remove(&mut self, source: Source) {
        match source {
            Source::Lane(i) => {
                if let Some(lane) = self.lanes.get_mut(i) {
                    lane.pop_front();
                }
            }
            Source::Heap => {
                self.heap.pop();
            }
        }
        self.entries = self.entries.saturating_sub(1);
        self.first = self.find_first();
    }

    fn add(&mut self, entry: Entry) {
        self.entries += 1;
        // The lane whose last entry is the latest one not after `entry`; else an empty lane.
        let mut fit: Option<(usize, Entry)> = None;
        let mut empty = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            match lane.back() {
                Some(&back) if back <= entry && fit.is_none_or(|(_, f)| back > f) => {
                    fit = Some((i, back))
                }
                Some(_) => {}
                None => empty = empty.or(Some(i)),
            }
        }
        let source = fit.map(|(i, _)| i).or(empty).map_or(Source::Heap, Source::Lane);
        match source {
            Source::Lane(i) => {
                if let Some(lane) = self.lanes.get_mut(i) {
                    lane.push_back(entry);
                }
            }
            Source::Heap => self.heap.push(Reverse(entry)),
        }
        // An entry earlier than every other one is the front of its lane (a lane it joined
        // holds nothing later than it) or the heap's new top.
        if self.first.is_none_or(|(f, _)| entry < f) {
            self.first = Some((entry, source));
        }
    }

    /// Records that `socket`'s deadline moved from `old` to `new` (either may be `None`).
    /// The caller stores `new` as the socket's current deadline, then calls `prune`.
    pub(crate) fn reschedule(&mut self, socket: u32, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        match (old, new) {
            (None, Some(_)) => self.live += 1,
            (Some(_), None) => self.live -= 1,
            _ => {}
        }
        if let Some(t) = new {
            self.add((t, socket));
        }
    }

    /// Pops the earliest entry if it is due at `now`: `(deadline, socket)`. The entry may
    /// be stale; the caller checks it against the socket and, if it is live, clears the
    /// socket's deadline and calls [`fired`](TimerQueue::fired).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, u32)> {
        let (entry, source) = self.first?;
        if entry.0 > now {
            return None;
        }
        self.remove(source);
        Some(entry)
    }

    /// A live entry popped by `pop_due` fired: its socket has no deadline any more.
    pub(crate) fn fired(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Drops stale entries from the front, so that [`next`](TimerQueue::next) is exact,
    /// and rebuilds the queue from `current` (every socket's `(deadline, index)`) when
    /// stale entries pile up. `is_current(deadline, socket)` says whether an entry is live.
    pub(crate) fn prune<I>(
        &mut self,
        is_current: impl Fn(Instant, u32) -> bool,
        current: impl FnOnce() -> I,
    ) where
        I: Iterator<Item = (Instant, u32)>,
    {
        if self.entries > 2 * self.live + SLACK {
            let mut all: Vec<Entry> = current().collect();
            all.sort_unstable();
            self.heap.clear();
            for lane in &mut self.lanes {
                lane.clear();
            }
            self.live = all.len();
            self.entries = all.len();
            if let Some(first) = self.lanes.first_mut() {
                first.extend(all);
            }
            self.first = self.find_first();
            return;
        }
        while let Some(((t, socket), source)) = self.first {
            if is_current(t, socket) {
                break;
            }
            self.remove(source);
        }
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Sockets' current deadlines, as the stack holds them, and the queue over them.
    struct Model {
        deadlines: Vec<Option<Instant>>,
        queue: TimerQueue,
    }

    impl Model {
        fn new(sockets: usize) -> Model {
            Model { deadlines: vec![None; sockets], queue: TimerQueue::default() }
        }

        fn set(&mut self, socket: u32, new: Option<Instant>) {
            let old = self.deadlines[socket as usize];
            self.queue.reschedule(socket, old, new);
            self.deadlines[socket as usize] = new;
            self.prune();
        }

        fn prune(&mut self) {
            let deadlines = &self.deadlines;
            self.queue.prune(
                |t, s| deadlines[s as usize] == Some(t),
                || deadlines.iter().enumerate().filter_map(|(s, d)| d.map(|t| (t, s as u32))),
            );
        }

        /// Fires what is due at `now`, the way `Stack::handle_timeout` does.
        fn fire(&mut self, now: Instant) -> Vec<u32> {
            let mut fired = Vec::new();
            while let Some((t, s)) = self.queue.pop_due(now) {
                if self.deadlines[s as usize] == Some(t) {
                    self.deadlines[s as usize] = None;
                    self.queue.fired();
                    fired.push(s);
                }
            }
            self.prune();
            fired
        }
    }

    #[test]
    fn a_moved_deadline_fires_once_at_its_new_time() {
        let mut m = Model::new(2);
        let t = Instant::from_millis;
        m.set(0, Some(t(100)));
        m.set(1, Some(t(50)));
        m.set(0, Some(t(30)));
        m.set(0, Some(t(100)));
        assert_eq!(m.queue.next(), Some(t(50)));
        assert_eq!(m.fire(t(60)), [1]);
        assert_eq!(m.queue.next(), Some(t(100)));
        assert_eq!(m.fire(t(100)), [0], "the stale second entry for 100 ms does not fire");
        assert_eq!(m.queue.next(), None);
    }

    #[test]
    fn stale_entries_stay_bounded_under_churn() {
        let mut m = Model::new(100);
        // Every socket keeps a far deadline and pulls it earlier again and again, which
        // leaves a later, stale entry behind each time.
        for round in 0..1_000u64 {
            for s in 0..100 {
                m.set(s, Some(Instant::from_secs(10_000 - round)));
            }
        }
        assert!(m.queue.entries() <= 2 * 100 + SLACK, "{} entries", m.queue.entries());
        assert_eq!(m.queue.next(), Some(Instant::from_secs(10_000 - 999)));
    }

    #[test]
    fn fixed_duration_deadlines_stay_in_lanes() {
        // TIME-WAIT-like deadlines (now + 60 s) interleaved with RTO-like ones (now + 1 s),
        // as a server closing one connection after another produces them.
        let mut m = Model::new(2_000);
        for i in 0..1_000u32 {
            let now = Instant::from_millis(u64::from(i) * 7);
            m.set(2 * i, Some(now + core::time::Duration::from_secs(60)));
            m.set(2 * i + 1, Some(now + core::time::Duration::from_secs(1)));
        }
        assert_eq!(m.queue.heap.len(), 0, "ordered arrivals need no heap");
        assert_eq!(m.queue.next(), Some(Instant::from_secs(1)));
        let fired = m.fire(Instant::from_millis(1_000 + 7 * 999));
        assert_eq!(fired.len(), 1_000);
        assert!(fired.iter().all(|s| s % 2 == 1), "only the 1 s deadlines are due");
    }

    proptest! {
        /// After any sequence of changes and firings, `next` is the earliest current
        /// deadline and firing yields exactly the sockets whose deadline has passed, in
        /// (deadline, socket) order.
        #[test]
        fn agrees_with_the_sockets_deadlines(
            ops in proptest::collection::vec((0u32..8, proptest::option::of(0u64..50), any::<bool>()), 1..300),
        ) {
            let mut m = Model::new(8);
            let mut now = 0u64;
            for (socket, deadline, fire) in ops {
                if fire {
                    now += 3;
                    let mut expected: Vec<(Instant, u32)> = m
                        .deadlines
                        .iter()
                        .enumerate()
                        .filter_map(|(s, d)| d.filter(|t| *t <= Instant::from_millis(now)).map(|t| (t, s as u32)))
                        .collect();
                    expected.sort();
                    let fired = m.fire(Instant::from_millis(now));
                    prop_assert_eq!(fired, expected.iter().map(|e| e.1).collect::<Vec<_>>());
                } else {
                    m.set(socket, deadline.map(|d| Instant::from_millis(now + d)));
                }
                let earliest = m.deadlines.iter().flatten().min().copied();
                prop_assert_eq!(m.queue.next(), earliest);
            }
        }
    }
}
