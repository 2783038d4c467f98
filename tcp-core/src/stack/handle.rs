//! Handles the application holds, and the slab that maps them to stack objects.
//!
//! A handle is an index plus a generation, so a handle kept after its object was freed is
//! recognised as stale instead of silently naming a new object in the same slot.

use alloc::vec::Vec;
use core::fmt;

/// Names a connection (an accepted or connected socket) inside one [`Stack`](super::Stack).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketHandle {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Names a listening socket inside one [`Stack`](super::Stack).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerHandle {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl SocketHandle {
    /// A number that identifies the socket among the live ones (its slot); reused after the
    /// socket is freed.
    pub fn slot(self) -> u32 {
        self.index
    }
}

impl ListenerHandle {
    /// A number that identifies the listener among the live ones (its slot).
    pub fn slot(self) -> u32 {
        self.index
    }
}

impl fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket#{}.{}", self.index, self.generation)
    }
}

impl fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener#{}.{}", self.index, self.generation)
    }
}

/// A generational slab: `insert` reuses freed slots, `get` checks the generation.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Slab<T> {
    pub(crate) const fn new() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value`; returns `(index, generation)`.
    pub(crate) fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(index as usize) {
                slot.generation = slot.generation.wrapping_add(1);
                slot.value = Some(value);
                return (index, slot.generation);
            }
        }
        let index = self.slots.len() as u32;
        self.slots.push(Slot { generation: 0, value: Some(value) });
        (index, 0)
    }

    pub(crate) fn get(&self, index: u32, generation: u32) -> Option<&T> {
        self.slots
            .get(index as usize)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.value.as_mut())
    }

    /// Access by index alone, for internal references that cannot outlive the object.
    pub(crate) fn by_index(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize).and_then(|s| s.value.as_ref())
    }

    pub(crate) fn by_index_mut(&mut self, index: u32) -> Option<&mut T> {
        self.slots.get_mut(index as usize).and_then(|s| s.value.as_mut())
    }

    pub(crate) fn generation(&self, index: u32) -> Option<u32> {
        self.slots.get(index as usize).filter(|s| s.value.is_some()).map(|s| s.generation)
    }

    pub(crate) fn remove(&mut self, index: u32) -> Option<T> {
        let slot = self.slots.get_mut(index as usize)?;
        let value = slot.value.take()?;
        self.free.push(index);
        self.len -= 1;
        Some(value)
    }

    /// Drops the value at `index` where it lies (no move out of the slab, which matters for
    /// a kilobyte-sized connection). Returns whether there was one.
    pub(crate) fn delete(&mut self, index: u32) -> bool {
        let Some(slot) = self.slots.get_mut(index as usize) else { return false };
        if slot.value.is_none() {
            return false;
        }
        slot.value = None;
        self.free.push(index);
        self.len -= 1;
        true
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.value.as_ref().map(|v| (i as u32, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generation_is_refused_after_reuse() {
        let mut slab = Slab::new();
        let (i, g) = slab.insert("a");
        assert_eq!(slab.remove(i), Some("a"));
        let (j, h) = slab.insert("b");
        assert_eq!(i, j, "freed slot is reused");
        assert_ne!(g, h);
        assert_eq!(slab.get(i, g), None);
        assert_eq!(slab.get(j, h), Some(&"b"));
        assert_eq!(slab.len(), 1);
    }
}
