//! Which file descriptors the shim manages: a thread-safe map from fd number to what the
//! fd is (a netpop socket, an emulated epoll set), with a lock-free fast path.
//!
//! Every intercepted call on a descriptor starts with [`FdTable::is_tracked`], a single
//! relaxed load from a flag array, so `read`/`write` on ordinary files, pipes and kernel
//! sockets cost one atomic load more than plain libc and never take a lock. The flag is set
//! and cleared under the map's lock; a reader that sees a stale flag finds no entry and
//! passes the call through, which is what it would have done a moment later anyway.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Descriptors below this have a flag; above it the map is consulted (only when some
/// entry up there exists).
pub(crate) const FLAGGED_FDS: usize = 1 << 16;

/// A map fd -> `T` with a lock-free "is this fd ours" test.
#[derive(Debug)]
pub(crate) struct FdTable<T> {
    flags: [AtomicBool; FLAGGED_FDS],
    /// Entries with fd >= FLAGGED_FDS.
    high_entries: AtomicUsize,
    map: RwLock<BTreeMap<i32, T>>,
}

fn flag_index(fd: i32) -> Option<usize> {
    usize::try_from(fd).ok().filter(|&i| i < FLAGGED_FDS)
}

impl<T: Clone> FdTable<T> {
    /// An empty table (usable in a `static`: nothing is allocated until the first insert).
    pub(crate) const fn new() -> FdTable<T> {
        FdTable {
            flags: [const { AtomicBool::new(false) }; FLAGGED_FDS],
            high_entries: AtomicUsize::new(0),
            map: RwLock::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> RwLockWriteGuard<'_, BTreeMap<i32, T>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<i32, T>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held across `fork()` so that no other thread is half-way through an update when the
    /// child's copy of the table is taken.
    pub(crate) fn lock_for_fork(&self) -> RwLockWriteGuard<'_, BTreeMap<i32, T>> {
        self.lock()
    }

    /// True if `fd` may have an entry. False means certainly not: pass the call through.
    #[inline]
    pub(crate) fn is_tracked(&self, fd: i32) -> bool {
        match flag_index(fd) {
            Some(i) => self.flags.get(i).is_some_and(|f| f.load(Ordering::Relaxed)),
            None => fd >= 0 && self.high_entries.load(Ordering::Relaxed) > 0,
        }
    }

    /// The entry of `fd`, if any.
    pub(crate) fn get(&self, fd: i32) -> Option<T> {
        if !self.is_tracked(fd) {
            return None;
        }
        self.read().get(&fd).cloned()
    }

    fn set_flag(&self, fd: i32, on: bool, had_entry: bool) {
        match flag_index(fd) {
            Some(i) => {
                if let Some(f) = self.flags.get(i) {
                    f.store(on, Ordering::Relaxed);
                }
            }
            None if on && !had_entry => {
                self.high_entries.fetch_add(1, Ordering::Relaxed);
            }
            None if !on && had_entry => {
                self.high_entries.fetch_sub(1, Ordering::Relaxed);
            }
            None => {}
        }
    }

    /// Makes `fd` refer to `entry`; returns what it referred to before (the caller drops
    /// it, outside the table's lock).
    pub(crate) fn insert(&self, fd: i32, entry: T) -> Option<T> {
        if fd < 0 {
            return None;
        }
        let mut map = self.lock();
        let old = map.insert(fd, entry);
        self.set_flag(fd, true, old.is_some());
        old
    }

    /// Forgets `fd`; returns its entry.
    pub(crate) fn remove(&self, fd: i32) -> Option<T> {
        if !self.is_tracked(fd) {
            return None;
        }
        let mut map = self.lock();
        let old = map.remove(&fd);
        self.set_flag(fd, false, old.is_some());
        old
    }

    /// Forgets every fd in `first..=last`; returns their entries.
    pub(crate) fn remove_range(&self, first: i32, last: i32) -> Vec<T> {
        let mut map = self.lock();
        let fds: Vec<i32> = map.range(first..=last.max(first)).map(|(&fd, _)| fd).collect();
        let mut out = Vec::with_capacity(fds.len());
        for fd in fds {
            if let Some(e) = map.remove(&fd) {
                self.set_flag(fd, false, true);
                out.push(e);
            }
        }
        out
    }

    /// A snapshot of every entry.
    pub(crate) fn entries(&self) -> Vec<(i32, T)> {
        self.read().iter().map(|(&fd, e)| (fd, e.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn table() -> Box<FdTable<Arc<u32>>> {
        Box::new(FdTable::new())
    }

    #[test]
    fn untracked_fds_pass_through() {
        let t = table();
        assert!(!t.is_tracked(3));
        assert!(t.get(3).is_none());
        assert!(!t.is_tracked(-1));
        assert!(t.remove(3).is_none());
    }

    #[test]
    fn insert_get_remove_low_and_high_fds() {
        let t = table();
        for fd in [0, 7, FLAGGED_FDS as i32 - 1, FLAGGED_FDS as i32, 1 << 20] {
            assert!(t.insert(fd, Arc::new(fd as u32)).is_none());
            assert!(t.is_tracked(fd));
            assert_eq!(t.get(fd).as_deref(), Some(&(fd as u32)));
        }
        for fd in [0, 7, FLAGGED_FDS as i32 - 1, FLAGGED_FDS as i32, 1 << 20] {
            assert_eq!(t.remove(fd).as_deref(), Some(&(fd as u32)));
            assert!(t.get(fd).is_none(), "fd {fd} still mapped");
        }
        // High fds share one counter: only once all are gone is the fast path exact.
        assert_eq!(t.high_entries.load(Ordering::Relaxed), 0);
        assert!(!t.is_tracked(FLAGGED_FDS as i32) && !t.is_tracked(0));
    }

    #[test]
    fn replacing_an_entry_returns_the_old_one_and_keeps_counts() {
        let t = table();
        let high = FLAGGED_FDS as i32 + 5;
        t.insert(high, Arc::new(1));
        let old = t.insert(high, Arc::new(2));
        assert_eq!(old.as_deref(), Some(&1));
        assert_eq!(t.high_entries.load(Ordering::Relaxed), 1);
        t.remove(high);
        assert!(!t.is_tracked(high));
    }

    #[test]
    fn dup_shares_the_entry_until_the_last_fd_goes() {
        let t = table();
        let desc = Arc::new(9);
        t.insert(4, desc.clone());
        t.insert(5, desc.clone());
        drop(t.remove(4));
        assert_eq!(Arc::strong_count(&desc), 2);
        drop(t.remove(5));
        assert_eq!(Arc::strong_count(&desc), 1);
    }

    #[test]
    fn remove_range_takes_only_the_range() {
        let t = table();
        for fd in 3..10 {
            t.insert(fd, Arc::new(fd as u32));
        }
        let gone = t.remove_range(5, 7);
        assert_eq!(gone.len(), 3);
        assert!(t.is_tracked(4) && t.is_tracked(8));
        assert!(!t.is_tracked(5) && !t.is_tracked(6) && !t.is_tracked(7));
        assert_eq!(t.entries().len(), 4);
    }

    #[test]
    fn concurrent_inserts_and_removes_stay_consistent() {
        let t: Arc<FdTable<Arc<u32>>> = Arc::from(table());
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for round in 0..500 {
                        let fd = k * 1000 + round % 50;
                        t.insert(fd, Arc::new(fd as u32));
                        assert_eq!(t.get(fd).as_deref(), Some(&(fd as u32)));
                        t.remove(fd);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert!(t.entries().is_empty());
    }
}
