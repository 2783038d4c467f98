//! The model's BAR0: a 512 KiB register file in shared memory (82599 datasheet §8.2.3
//! for the registers, §9.3.6.1 for the BAR size).
//!
//! Plain shared memory cannot see accesses, so the two kinds of register with side
//! effects are modelled in the accessor the driver uses ([`RegisterFile::read`] and
//! [`RegisterFile::write`]):
//! - clear-on-read statistics are read with an atomic swap to zero;
//! - *latched* registers, whose written value takes effect only when the device acts on it
//!   (CTRL reset, RXDCTL/TXDCTL enable, FDIRCTRL init, FDIRCMD), are written into a request
//!   slot; the visible register shows a command bit until the engine clears it, and a
//!   queue's ENABLE bit keeps its old value until the engine applies the request.
//!   So the driver's polls (reset bit self-clears, ENABLE reads back as set, INIT_DONE,
//!   FDIRCMD completion) wait on the engine just as they would on the silicon.
//!
//! Layout of the shared file: `[0, 512 KiB)` registers, then one page of 64-bit request
//! slots (bit 32 = pending, bits 31:0 = value), then a header page with a magic number and
//! a request sequence number that every latched write bumps, so the engine looks at the
//! request slots only when there is something in them.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use crate::dma::SharedMemory;
use crate::ixgbe::regs;

const REQUESTS_OFFSET: usize = regs::BAR0_LEN;
const MAGIC_OFFSET: usize = regs::BAR0_LEN + 4096;
const REQUEST_SEQ_OFFSET: usize = MAGIC_OFFSET + 8;
const FILE_LEN: usize = regs::BAR0_LEN + 8192;
const MAGIC: u64 = 0x6e65_7470_6f70_5247; // "netpopRG"
const PENDING: u64 = 1 << 32;

/// Queue number of `offset` if it is the register at `first` in a block of per-queue
/// registers spaced 0x40 apart.
fn queue_in_block(offset: usize, first: usize, queues: usize) -> Option<usize> {
    let rel = offset.checked_sub(first)?;
    (rel % 0x40 == 0 && rel / 0x40 < queues).then_some(rel / 0x40)
}

/// Request slot of a latched register, or `None` for a plain register. Arithmetic rather
/// than a search: tail writes, the hottest register writes, pass through here.
pub(crate) fn latched_slot(offset: usize) -> Option<usize> {
    const QUEUES: usize = regs::MAX_QUEUES as usize;
    match offset {
        regs::CTRL => Some(0),
        regs::FDIRCTRL => Some(1),
        regs::FDIRCMD => Some(2),
        _ => queue_in_block(offset, regs::rxdctl(0), 64)
            .or_else(|| queue_in_block(offset, regs::rxdctl(64), 64).map(|q| q + 64))
            .map(|q| 3 + q)
            .or_else(|| queue_in_block(offset, regs::txdctl(0), QUEUES).map(|q| 3 + QUEUES + q)),
    }
}

/// Number of request slots.
pub(crate) const REQUEST_SLOTS: usize = 3 + 2 * regs::MAX_QUEUES as usize;

/// The model's register file, shared between the model engine and any number of driver
/// processes.
#[derive(Debug)]
pub struct RegisterFile {
    memory: SharedMemory,
    /// The request sequence number the engine last saw (engine side only).
    requests_seen: std::sync::atomic::AtomicU64,
}

impl RegisterFile {
    /// Creates a zeroed register file in a new memfd.
    pub fn create() -> io::Result<Self> {
        let memory = SharedMemory::create("netpop-82599-bar0", FILE_LEN)?;
        let file = RegisterFile { memory, requests_seen: Default::default() };
        file.magic().store(MAGIC, Ordering::Release);
        Ok(file)
    }

    /// Maps a register file created by another process.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let memory = SharedMemory::from_fd(fd)?;
        if memory.len() != FILE_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a model register file"));
        }
        let file = RegisterFile { memory, requests_seen: Default::default() };
        if file.magic().load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a model register file"));
        }
        Ok(file)
    }

    fn magic(&self) -> &std::sync::atomic::AtomicU64 {
        match self.memory.atomic_u64(MAGIC_OFFSET) {
            Some(word) => word,
            None => unreachable!("the header page is inside the file"),
        }
    }

    /// The shared memory (for handing its descriptor to another process).
    pub fn memory(&self) -> &SharedMemory {
        &self.memory
    }

    fn reg(&self, offset: usize) -> Option<&std::sync::atomic::AtomicU32> {
        if offset >= regs::BAR0_LEN {
            return None;
        }
        self.memory.atomic_u32(offset)
    }

    /// A driver read: clear-on-read registers are reset to zero by the read. Offsets
    /// outside BAR0 or unaligned read as all ones, like a PCIe master abort.
    pub fn read(&self, offset: usize) -> u32 {
        match self.reg(offset) {
            Some(r) if regs::is_clear_on_read(offset) => r.swap(0, Ordering::AcqRel),
            Some(r) => r.load(Ordering::Acquire),
            None => u32::MAX,
        }
    }

    /// A driver write: latched registers become a request for the engine, others are
    /// stored. Writes outside BAR0 are dropped.
    pub fn write(&self, offset: usize, value: u32) {
        if let Some(slot) = latched_slot(offset) {
            if let (Some(request), Some(r)) =
                (self.memory.atomic_u64(REQUESTS_OFFSET + 8 * slot), self.reg(offset))
            {
                // Self-clearing command bits (CTRL.RST, FDIRCMD.CMD) read back as written
                // until the device clears them; a queue's ENABLE bit keeps its old value
                // until the device has actually enabled or disabled the queue.
                let enable_bit = match slot {
                    0..=2 => 0,
                    _ => regs::RXDCTL_ENABLE, // same bit position as TXDCTL_ENABLE
                };
                let old = r.load(Ordering::Acquire);
                r.store((value & !enable_bit) | (old & enable_bit), Ordering::Release);
                request.store(PENDING | u64::from(value), Ordering::Release);
                // After the slot: an engine that sees the new number finds the request.
                if let Some(seq) = self.memory.atomic_u64(REQUEST_SEQ_OFFSET) {
                    seq.fetch_add(1, Ordering::AcqRel);
                }
            }
        } else if let Some(r) = self.reg(offset) {
            r.store(value, Ordering::Release);
        }
    }

    /// Engine side: the visible value, without read side effects.
    pub(crate) fn peek(&self, offset: usize) -> u32 {
        self.reg(offset).map_or(u32::MAX, |r| r.load(Ordering::Acquire))
    }

    /// Engine side: sets the visible value.
    pub(crate) fn poke(&self, offset: usize, value: u32) {
        if let Some(r) = self.reg(offset) {
            r.store(value, Ordering::Release);
        }
    }

    /// Engine side: adds to a counter register (wrapping, as the 32-bit counters do).
    pub(crate) fn count(&self, offset: usize, delta: u32) {
        if let Some(r) = self.reg(offset) {
            r.fetch_add(delta, Ordering::AcqRel);
        }
    }

    /// Engine side: adds to a 64-bit counter split over a low and a high register.
    pub(crate) fn count64(&self, low: usize, high: usize, delta: u64) {
        if let Some(r) = self.reg(low) {
            let before = r.fetch_add(delta as u32, Ordering::AcqRel);
            let carry = u64::from(before).wrapping_add(delta & 0xFFFF_FFFF) >> 32;
            self.count(high, ((delta >> 32) + carry) as u32);
        }
    }

    /// Engine side: whether a latched write may have arrived since the last call, i.e.
    /// whether the request slots need to be looked at. The first call answers true.
    pub(crate) fn requests_posted(&self) -> bool {
        let Some(seq) = self.memory.atomic_u64(REQUEST_SEQ_OFFSET) else { return true };
        let now = seq.load(Ordering::Acquire);
        // One more than the number read, so that the initial zero also counts as news.
        let now = now.wrapping_add(1);
        self.requests_seen.swap(now, Ordering::Relaxed) != now
    }

    /// Engine side: takes the pending request of a latched slot.
    pub(crate) fn take_request(&self, slot: usize) -> Option<u32> {
        let request = self.memory.atomic_u64(REQUESTS_OFFSET + 8 * slot)?;
        // A plain load first: most slots are empty and a swap would dirty their line.
        if request.load(Ordering::Acquire) & PENDING == 0 {
            return None;
        }
        let raw = request.swap(0, Ordering::AcqRel);
        (raw & PENDING != 0).then_some(raw as u32)
    }

    /// Engine side: zeroes every register and drops pending requests other than CTRL's
    /// (a device reset; the engine has already taken the CTRL request that caused it).
    pub(crate) fn reset(&self) {
        for offset in (0..regs::BAR0_LEN).step_by(4) {
            self.poke(offset, 0);
        }
        for slot in 1..REQUEST_SLOTS {
            let _ = self.take_request(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_clear_on_read() {
        let f = RegisterFile::create().unwrap();
        f.count(regs::GPRC, 3);
        f.count(regs::GPRC, 2);
        assert_eq!(f.read(regs::GPRC), 5);
        assert_eq!(f.read(regs::GPRC), 0);
    }

    #[test]
    fn latched_writes_wait_for_the_engine() {
        let f = RegisterFile::create().unwrap();
        f.write(regs::rxdctl(5), regs::RXDCTL_ENABLE);
        assert_eq!(f.read(regs::rxdctl(5)) & regs::RXDCTL_ENABLE, 0, "not yet applied");
        let slot = latched_slot(regs::rxdctl(5)).unwrap();
        assert_eq!(f.take_request(slot), Some(regs::RXDCTL_ENABLE));
        assert_eq!(f.take_request(slot), None);
        f.write(regs::rdt(5), 17);
        assert_eq!(f.read(regs::rdt(5)), 17, "plain registers store directly");
    }

    #[test]
    fn out_of_range_reads_all_ones_and_writes_vanish() {
        let f = RegisterFile::create().unwrap();
        assert_eq!(f.read(regs::BAR0_LEN), u32::MAX);
        assert_eq!(f.read(2), u32::MAX);
        f.write(regs::BAR0_LEN + 8, 1);
        assert_eq!(f.read(regs::BAR0_LEN + 8), u32::MAX);
    }

    #[test]
    fn split_counters_carry() {
        let f = RegisterFile::create().unwrap();
        f.count64(regs::GORCL, regs::GORCH, 0xFFFF_FFF0);
        f.count64(regs::GORCL, regs::GORCH, 0x20);
        assert_eq!(f.read(regs::GORCL), 0x10);
        assert_eq!(f.read(regs::GORCH), 1);
    }

    #[test]
    fn slots_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for q in 0..regs::MAX_QUEUES {
            assert!(seen.insert(latched_slot(regs::rxdctl(q)).unwrap()));
            assert!(seen.insert(latched_slot(regs::txdctl(q)).unwrap()));
        }
        assert!(seen.iter().all(|s| (3..REQUEST_SLOTS).contains(s)));
    }
}
