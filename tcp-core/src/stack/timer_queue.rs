//! The stack's timer queue: which socket's deadline comes next.
//!
//! A binary min-heap of `(deadline, socket)` entries with lazy deletion. Each socket keeps
//! its one current deadline itself (`Socket::deadline`); moving or cancelling a deadline
//! only pushes the new entry (O(1) on average for a later deadline) and leaves the old one
//! in the heap, where it is recognised as stale — its socket's current deadline differs —
//! and dropped once it reaches the top. The stack prunes the top after every change, so
//! the earliest entry is always a live one and [`TimerQueue::next`] is exact. Stale
//! entries never outnumber live ones by much: past a bound the heap is rebuilt from the
//! sockets' deadlines, which costs O(sockets) once per that many pushes.
//!
//! Entries pop in `(deadline, socket index)` order, so sockets due at the same instant are
//! served by index, as with an ordered set.

use alloc::collections::BinaryHeap;
use core::cmp::Reverse;

use crate::time::Instant;

/// Stale entries tolerated beyond the live ones before a rebuild.
const SLACK: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Sockets with a deadline (each has at least one entry in `heap`).
    live: usize,
}

impl TimerQueue {
    /// The earliest deadline, if any. Exact as long as the owner prunes after changes.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
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
            self.heap.push(Reverse((t, socket)));
        }
    }

    /// Pops the earliest entry if it is due at `now`: `(deadline, socket)`. The entry may
    /// be stale; the caller checks it against the socket and, if it is live, clears the
    /// socket's deadline and calls [`fired`](TimerQueue::fired).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, u32)> {
        let &Reverse((t, socket)) = self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        Some((t, socket))
    }

    /// A live entry popped by `pop_due` fired: its socket has no deadline any more.
    pub(crate) fn fired(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Drops stale entries from the top, so that [`next`](TimerQueue::next) is exact, and
    /// rebuilds the heap from `current` (every socket's `(deadline, index)`) when stale
    /// entries pile up. `is_current(deadline, socket)` says whether an entry is live.
    pub(crate) fn prune<I>(
        &mut self,
        is_current: impl Fn(Instant, u32) -> bool,
        current: impl FnOnce() -> I,
    ) where
        I: Iterator<Item = (Instant, u32)>,
    {
        if self.heap.len() > 2 * self.live + SLACK {
            self.heap.clear();
            self.heap.extend(current().map(Reverse));
            self.live = self.heap.len();
            return;
        }
        while let Some(&Reverse((t, socket))) = self.heap.peek() {
            if is_current(t, socket) {
                break;
            }
            self.heap.pop();
        }
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.heap.len()
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
