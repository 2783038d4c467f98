//! Finding an 82599 in sysfs and mapping its BAR0 (Linux `Documentation/PCI/sysfs-pci.rst`:
//! `resource0` maps BAR0, `config` is the configuration space, `driver` links to the
//! bound kernel driver). Each failure says what to do about it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::bar::Bar0;
use super::regs::BAR0_LEN;
use crate::dma::SharedMemory;

/// Intel's PCI vendor id.
pub const INTEL_VENDOR_ID: u16 = 0x8086;
/// PCI device ids of 82599-based adapters (SFP+, KX4, KR, CX4, XAUI, 10GBASE-T, FCoE and
/// the Quad-port variants).
pub const I82599_DEVICE_IDS: &[u16] = &[
    0x10F7, 0x10F8, 0x10F9, 0x10FB, 0x10FC, 0x1507, 0x1514, 0x1517, 0x151C, 0x1529, 0x152A, 0x154D,
    0x1557, 0x1558,
];

/// Why BAR0 of a PCI device could not be mapped.
#[derive(Debug)]
#[non_exhaustive]
pub enum PciError {
    /// The address is not of the form `DDDD:BB:DD.F` (hexadecimal).
    InvalidAddress(String),
    /// No PCI device has this address.
    NoSuchDevice(String),
    /// The device exists but is not an Intel 82599.
    NotAn82599 {
        /// PCI address.
        address: String,
        /// Vendor id read from sysfs.
        vendor: u16,
        /// Device id read from sysfs.
        device: u16,
    },
    /// A kernel driver owns the device; it must be unbound first.
    BoundToKernelDriver {
        /// PCI address.
        address: String,
        /// Name of the kernel driver (usually `ixgbe`).
        driver: String,
    },
    /// The sysfs files exist but this process may not open them.
    PermissionDenied(PathBuf),
    /// Another I/O error.
    Io(PathBuf, io::Error),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::InvalidAddress(a) => {
                write!(f, "invalid PCI address {a:?}: expected DDDD:BB:DD.F, e.g. 0000:03:00.0")
            }
            PciError::NoSuchDevice(a) => {
                write!(f, "no PCI device at {a} (see `lspci -D` for the addresses present)")
            }
            PciError::NotAn82599 { address, vendor, device } => {
                write!(f, "PCI device {address} is {vendor:04x}:{device:04x}, not an Intel 82599")
            }
            PciError::BoundToKernelDriver { address, driver } => write!(
                f,
                "PCI device {address} is bound to the kernel driver {driver}; unbind it with \
                 `echo {address} > /sys/bus/pci/devices/{address}/driver/unbind` (root)"
            ),
            PciError::PermissionDenied(p) => {
                write!(f, "permission denied opening {}: run as root", p.display())
            }
            PciError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for PciError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PciError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

fn io_error(path: &Path, e: io::Error) -> PciError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        PciError::PermissionDenied(path.to_path_buf())
    } else {
        PciError::Io(path.to_path_buf(), e)
    }
}

fn valid_address(addr: &str) -> bool {
    let b = addr.as_bytes();
    let hex =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_hexdigit));
    b.len() == 12
        && hex(0..4)
        && b.get(4) == Some(&b':')
        && hex(5..7)
        && b.get(7) == Some(&b':')
        && hex(8..10)
        && b.get(10) == Some(&b'.')
        && b.get(11).is_some_and(|c| (b'0'..=b'7').contains(c))
}

fn read_id(path: &Path) -> Result<u16, PciError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let digits = text.trim().trim_start_matches("0x");
    u16::from_str_radix(digits, 16)
        .map_err(|_| PciError::Io(path.to_path_buf(), io::ErrorKind::InvalidData.into()))
}

/// Maps BAR0 of the 82599 at `address` (e.g. `0000:03:00.0`) and enables bus mastering so
/// the device can DMA.
pub fn open_bar0(address: &str) -> Result<Bar0, PciError> {
    open_bar0_in(Path::new("/sys/bus/pci/devices"), address)
}

/// [`open_bar0`] with another sysfs device directory (for tests).
pub(crate) fn open_bar0_in(root: &Path, address: &str) -> Result<Bar0, PciError> {
    if !valid_address(address) {
        return Err(PciError::InvalidAddress(address.to_string()));
    }
    let dir = root.join(address);
    if !dir.exists() {
        return Err(PciError::NoSuchDevice(address.to_string()));
    }
    let vendor = read_id(&dir.join("vendor"))?;
    let device = read_id(&dir.join("device"))?;
    if vendor != INTEL_VENDOR_ID || !I82599_DEVICE_IDS.contains(&device) {
        return Err(PciError::NotAn82599 { address: address.to_string(), vendor, device });
    }
    if let Ok(target) = std::fs::read_link(dir.join("driver")) {
        let driver = target
            .file_name()
            .map_or_else(|| target.display().to_string(), |n| n.to_string_lossy().into_owned());
        return Err(PciError::BoundToKernelDriver { address: address.to_string(), driver });
    }
    enable_bus_master(&dir.join("config"))?;
    let resource = dir.join("resource0");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&resource)
        .map_err(|e| io_error(&resource, e))?;
    let len = file.metadata().map_err(|e| io_error(&resource, e))?.len();
    if len < BAR0_LEN as u64 {
        return Err(PciError::Io(resource, io::ErrorKind::UnexpectedEof.into()));
    }
    let mapping = SharedMemory::from_fd(OwnedFd::from(file)).map_err(|e| io_error(&resource, e))?;
    Ok(Bar0::from_mmio(mapping))
}

/// Sets the Bus Master Enable bit (bit 2 of the PCI command register, config offset 4).
fn enable_bus_master(config: &Path) -> Result<(), PciError> {
    let file: File =
        OpenOptions::new().read(true).write(true).open(config).map_err(|e| io_error(config, e))?;
    let mut command = [0u8; 2];
    file.read_exact_at(&mut command, 4).map_err(|e| io_error(config, e))?;
    let value = u16::from_le_bytes(command) | (1 << 2);
    file.write_all_at(&value.to_le_bytes(), 4).map_err(|e| io_error(config, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("netpop-pci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    fn fake_device(root: &Path, addr: &str, vendor: &str, device: &str) -> PathBuf {
        let dir = root.join(addr);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(dir.join("device"), format!("{device}\n")).unwrap();
        std::fs::write(dir.join("config"), [0u8; 64]).unwrap();
        let bar = File::create(dir.join("resource0")).unwrap();
        bar.set_len(BAR0_LEN as u64).unwrap();
        dir
    }

    #[test]
    fn malformed_address_is_rejected_before_touching_sysfs() {
        for bad in ["", "03:00.0", "0000:03:00.8", "zzzz:03:00.0", "0000:03:00.0/../x"] {
            assert!(matches!(open_bar0(bad), Err(PciError::InvalidAddress(_))), "{bad}");
        }
    }

    #[test]
    fn nonexistent_address_is_a_clear_error() {
        let err = open_bar0("0000:fe:1f.7").unwrap_err();
        assert!(matches!(err, PciError::NoSuchDevice(_)), "{err:?}");
        assert!(err.to_string().contains("lspci"), "{err}");
    }

    #[test]
    fn other_vendors_devices_are_refused() {
        let root = fake_sysfs("vendor");
        fake_device(&root, "0000:01:00.0", "0x10ec", "0x8168");
        let err = open_bar0_in(&root, "0000:01:00.0").unwrap_err();
        assert!(matches!(err, PciError::NotAn82599 { vendor: 0x10ec, device: 0x8168, .. }));
    }

    #[test]
    fn device_bound_to_kernel_driver_names_the_driver_and_the_fix() {
        let root = fake_sysfs("bound");
        let dir = fake_device(&root, "0000:02:00.0", "0x8086", "0x10fb");
        std::os::unix::fs::symlink("../../../bus/pci/drivers/ixgbe", dir.join("driver")).unwrap();
        let err = open_bar0_in(&root, "0000:02:00.0").unwrap_err();
        assert!(matches!(&err, PciError::BoundToKernelDriver { driver, .. } if driver == "ixgbe"));
        assert!(err.to_string().contains("unbind"), "{err}");
    }

    #[test]
    fn unbound_device_maps_and_gets_bus_mastering() {
        let root = fake_sysfs("ok");
        let dir = fake_device(&root, "0000:03:00.1", "0x8086", "0x10fb");
        let bar = open_bar0_in(&root, "0000:03:00.1").unwrap();
        bar.set_reg32(0x10, 0xDEAD_BEEF);
        assert_eq!(bar.get_reg32(0x10), 0xDEAD_BEEF);
        assert_eq!(bar.get_reg32(BAR0_LEN), u32::MAX, "outside BAR0 reads as all ones");
        assert_eq!(bar.get_reg32(0x11), u32::MAX, "unaligned reads as all ones");
        let config = std::fs::read(dir.join("config")).unwrap();
        assert_eq!(config[4] & 0x04, 0x04, "bus master enabled");
        let on_disk = std::fs::read(dir.join("resource0")).unwrap();
        assert_eq!(&on_disk[0x10..0x14], &0xDEAD_BEEFu32.to_le_bytes());
    }

    #[test]
    fn unreadable_files_are_permission_errors() {
        let e = io_error(Path::new("/x"), io::ErrorKind::PermissionDenied.into());
        assert!(matches!(e, PciError::PermissionDenied(_)));
        assert!(e.to_string().contains("root"));
    }
}
