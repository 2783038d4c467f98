//! Access to the 82599's memory BAR (BAR0): bounds-checked 32-bit register reads and
//! writes over either a real device's mapped `resource0` or the model's register file.
//!
//! Register accesses are the driver's only way to talk to the device besides DMA memory;
//! all of them go through [`Bar0::get_reg32`] and [`Bar0::set_reg32`], which never access
//! memory outside the mapping: an out-of-range or unaligned offset reads as all ones (what
//! a PCIe read of a missing register returns) and a write to one is dropped.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dma::SharedMemory;
use crate::model::RegisterFile;

enum Backing {
    /// A real device's BAR0 mapped from sysfs or a VFIO device (uncached MMIO), with
    /// whatever must outlive the mapping (the VFIO container and group, so the device
    /// keeps its IOMMU context while its registers are in use).
    Mmio { map: SharedMemory, _owner: Option<Arc<dyn Any + Send + Sync>> },
    /// The model's shared register file.
    Model(Arc<RegisterFile>),
}

/// A handle to BAR0. Clones share the mapping; it is unmapped when the last one drops.
#[derive(Clone)]
pub struct Bar0 {
    backing: Arc<Backing>,
}

impl fmt::Debug for Bar0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match *self.backing {
            Backing::Mmio { ref map, .. } => format!("mmio {} bytes", map.len()),
            Backing::Model(_) => "model".to_string(),
        };
        f.debug_struct("Bar0").field("backing", &kind).finish()
    }
}

/// A register did not reach the expected value in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterTimeout {
    /// Register offset.
    pub register: usize,
    /// Last value read.
    pub last_value: u32,
}

impl Bar0 {
    /// BAR0 of a model device.
    pub fn from_model(registers: Arc<RegisterFile>) -> Self {
        Bar0 { backing: Arc::new(Backing::Model(registers)) }
    }

    /// BAR0 of a real device, from a mapping of its `resource0`.
    pub(crate) fn from_mmio(mapping: SharedMemory) -> Self {
        Bar0 { backing: Arc::new(Backing::Mmio { map: mapping, _owner: None }) }
    }

    /// BAR0 of a real device, from a mapping that is only meaningful while `owner` lives
    /// (a VFIO device's descriptors).
    pub(crate) fn from_mmio_owned_by(
        mapping: SharedMemory,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        Bar0 { backing: Arc::new(Backing::Mmio { map: mapping, _owner: Some(owner) }) }
    }

    /// Whether this is the model's register file.
    pub fn is_model(&self) -> bool {
        matches!(*self.backing, Backing::Model(_))
    }

    /// Reads the 32-bit register at byte offset `reg`.
    pub fn get_reg32(&self, reg: usize) -> u32 {
        match &*self.backing {
            Backing::Model(file) => file.read(reg),
            Backing::Mmio { map, .. } => {
                if reg % 4 != 0 || reg.checked_add(4).is_none_or(|end| end > map.len()) {
                    return u32::MAX;
                }
                // SAFETY: in bounds and aligned (checked above); MMIO must be read with a
                // single volatile access of the register's width.
                unsafe { map.as_ptr().add(reg).cast::<u32>().read_volatile() }
            }
        }
    }

    /// Writes the 32-bit register at byte offset `reg`.
    pub fn set_reg32(&self, reg: usize, value: u32) {
        match &*self.backing {
            Backing::Model(file) => file.write(reg, value),
            Backing::Mmio { map, .. } => {
                if reg % 4 != 0 || reg.checked_add(4).is_none_or(|end| end > map.len()) {
                    return;
                }
                // SAFETY: as in `get_reg32`.
                unsafe { map.as_ptr().add(reg).cast::<u32>().write_volatile(value) }
            }
        }
    }

    /// Sets `flags` in a register (read-modify-write).
    pub fn set_flags32(&self, reg: usize, flags: u32) {
        self.set_reg32(reg, self.get_reg32(reg) | flags);
    }

    /// Clears `flags` in a register (read-modify-write).
    pub fn clear_flags32(&self, reg: usize, flags: u32) {
        self.set_reg32(reg, self.get_reg32(reg) & !flags);
    }

    /// Polls until `(reg & mask) == expected`, sleeping briefly between reads.
    pub fn wait_reg32(
        &self,
        reg: usize,
        mask: u32,
        expected: u32,
        timeout: Duration,
    ) -> Result<(), RegisterTimeout> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(10);
        loop {
            let value = self.get_reg32(reg);
            if value & mask == expected {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(RegisterTimeout { register: reg, last_value: value });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}
