//! Finding an 82599 in sysfs and mapping its BAR0 (Linux `Documentation/PCI/sysfs-pci.rst`:
//! `resource0` maps BAR0, `config` is the configuration space, `driver` links to the
//! bound kernel driver). Each failure says what to do about it.
//!
//! [`DeviceAccess`] is the driver's open path for a real device: it picks sysfs or VFIO
//! (see [`super::vfio`]) and pairs BAR0 with the DMA allocator that route needs.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::str::FromStr;

use super::bar::Bar0;
use super::regs::BAR0_LEN;
use super::vfio::{HostPaths, VFIO_PCI_DRIVER, VfioDevice, VfioError};
use crate::dma::{DmaAllocator, DmaError, HugepageDma, SharedMemory};

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
                 `echo {address} > /sys/bus/pci/devices/{address}/driver/unbind` (root), or \
                 bind it to vfio-pci and open it through VFIO"
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

pub(crate) fn io_error(path: &Path, e: io::Error) -> PciError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        PciError::PermissionDenied(path.to_path_buf())
    } else {
        PciError::Io(path.to_path_buf(), e)
    }
}

pub(crate) fn valid_address(addr: &str) -> bool {
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

/// Checks that `address` is well formed and names an Intel 82599 in the sysfs device
/// directory `root`; returns the device's sysfs directory.
pub(crate) fn find_82599(root: &Path, address: &str) -> Result<PathBuf, PciError> {
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
    Ok(dir)
}

/// The name of the driver bound to the device whose sysfs directory is `dir`, if any.
pub(crate) fn bound_driver(dir: &Path) -> Option<String> {
    let target = std::fs::read_link(dir.join("driver")).ok()?;
    Some(
        target
            .file_name()
            .map_or_else(|| target.display().to_string(), |n| n.to_string_lossy().into_owned()),
    )
}

/// [`open_bar0`] with another sysfs device directory (for tests).
pub(crate) fn open_bar0_in(root: &Path, address: &str) -> Result<Bar0, PciError> {
    let dir = find_82599(root, address)?;
    if let Some(driver) = bound_driver(&dir) {
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

/// How [`DeviceAccess::open`] reaches a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessMethod {
    /// VFIO when the device is bound to vfio-pci, sysfs otherwise.
    #[default]
    Auto,
    /// sysfs `resource0`, DMA memory from hugepages: the device must be bound to no driver
    /// and the process needs root (for physical addresses).
    Sysfs,
    /// VFIO: the device must be bound to vfio-pci; DMA goes through the IOMMU.
    Vfio,
}

impl FromStr for AccessMethod {
    type Err = String;

    /// Parses `auto`, `sysfs` or `vfio`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(AccessMethod::Auto),
            "sysfs" => Ok(AccessMethod::Sysfs),
            "vfio" => Ok(AccessMethod::Vfio),
            other => Err(format!("unknown access method {other:?} (auto, sysfs or vfio)")),
        }
    }
}

/// Why [`DeviceAccess::open`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AccessError {
    /// The device could not be found or mapped through sysfs.
    Pci(PciError),
    /// The device could not be opened through VFIO.
    Vfio(VfioError),
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::Pci(e) => write!(f, "{e}"),
            AccessError::Vfio(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AccessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AccessError::Pci(e) => Some(e),
            AccessError::Vfio(e) => Some(e),
        }
    }
}

/// An opened 82599: its BAR0, and the DMA memory that goes with the route it was reached
/// by.
#[derive(Debug)]
pub enum DeviceAccess {
    /// BAR0 from sysfs `resource0`; DMA memory from hugepages.
    Sysfs(Bar0),
    /// BAR0 and DMA through VFIO.
    Vfio {
        /// The mapped BAR0.
        bar: Bar0,
        /// The device, for its DMA allocator and for handing it to other processes.
        device: VfioDevice,
    },
}

impl DeviceAccess {
    /// Opens the 82599 at `address`, maps BAR0 and enables bus mastering.
    pub fn open(address: &str, method: AccessMethod) -> Result<Self, AccessError> {
        Self::open_in(&HostPaths::default(), address, method)
    }

    /// [`DeviceAccess::open`] with other sysfs and `/dev/vfio` directories.
    pub(crate) fn open_in(
        paths: &HostPaths,
        address: &str,
        method: AccessMethod,
    ) -> Result<Self, AccessError> {
        let use_vfio = match method {
            AccessMethod::Sysfs => false,
            AccessMethod::Vfio => true,
            AccessMethod::Auto => {
                let dir = find_82599(&paths.pci_devices, address).map_err(AccessError::Pci)?;
                bound_driver(&dir).is_some_and(|d| d == VFIO_PCI_DRIVER)
            }
        };
        if use_vfio {
            let device = VfioDevice::open_in(paths, address).map_err(AccessError::Vfio)?;
            Self::from_vfio(device).map_err(AccessError::Vfio)
        } else {
            open_bar0_in(&paths.pci_devices, address)
                .map(DeviceAccess::Sysfs)
                .map_err(AccessError::Pci)
        }
    }

    /// Maps BAR0 of a VFIO device (opened here or inherited from another process).
    pub fn from_vfio(device: VfioDevice) -> Result<Self, VfioError> {
        Ok(DeviceAccess::Vfio { bar: device.bar0()?, device })
    }

    /// The device's BAR0.
    pub fn bar(&self) -> &Bar0 {
        match self {
            DeviceAccess::Sysfs(bar) | DeviceAccess::Vfio { bar, .. } => bar,
        }
    }

    /// The VFIO device, when the device was reached through VFIO.
    pub fn vfio(&self) -> Option<&VfioDevice> {
        match self {
            DeviceAccess::Sysfs(_) => None,
            DeviceAccess::Vfio { device, .. } => Some(device),
        }
    }

    /// A DMA allocator the device can reach: hugepages with physical addresses for sysfs
    /// access, IOMMU mappings for VFIO.
    pub fn dma(&self) -> Result<Box<dyn DmaAllocator>, DmaError> {
        match self {
            DeviceAccess::Sysfs(_) => Ok(Box::new(HugepageDma::new()?)),
            DeviceAccess::Vfio { device, .. } => Ok(Box::new(device.dma())),
        }
    }
}

/// Offset of the command register in PCI configuration space (PCI Local Bus Specification
/// 3.0, §6.2.2).
pub(crate) const PCI_COMMAND: u64 = 4;
/// Bus Master Enable in the command register: without it the device cannot start DMA.
pub(crate) const PCI_COMMAND_BUS_MASTER: u16 = 1 << 2;

/// Sets the Bus Master Enable bit of the PCI command register.
fn enable_bus_master(config: &Path) -> Result<(), PciError> {
    let file: File =
        OpenOptions::new().read(true).write(true).open(config).map_err(|e| io_error(config, e))?;
    let mut command = [0u8; 2];
    file.read_exact_at(&mut command, PCI_COMMAND).map_err(|e| io_error(config, e))?;
    let value = u16::from_le_bytes(command) | PCI_COMMAND_BUS_MASTER;
    file.write_all_at(&value.to_le_bytes(), PCI_COMMAND).map_err(|e| io_error(config, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An empty directory standing in for `/sys/bus/pci/devices`.
    pub(crate) fn fake_sysfs(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("netpop-pci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    /// A device directory with ids, a config space and a BAR0 file.
    pub(crate) fn fake_device(root: &Path, addr: &str, vendor: &str, device: &str) -> PathBuf {
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

    fn host(root: &Path) -> HostPaths {
        HostPaths { pci_devices: root.to_path_buf(), dev_vfio: root.join("no-dev-vfio") }
    }

    #[test]
    fn auto_access_maps_an_unbound_device_through_sysfs() {
        let root = fake_sysfs("access-sysfs");
        fake_device(&root, "0000:05:00.0", "0x8086", "0x10fb");
        let access =
            DeviceAccess::open_in(&host(&root), "0000:05:00.0", AccessMethod::Auto).unwrap();
        assert!(matches!(access, DeviceAccess::Sysfs(_)));
        assert!(access.vfio().is_none());
        access.bar().set_reg32(0x20, 7);
        assert_eq!(access.bar().get_reg32(0x20), 7);
    }

    #[test]
    fn auto_access_takes_the_vfio_route_for_a_device_bound_to_vfio_pci() {
        let root = fake_sysfs("access-vfio");
        let dir = fake_device(&root, "0000:05:00.0", "0x8086", "0x10fb");
        std::os::unix::fs::symlink("../../../bus/pci/drivers/vfio-pci", dir.join("driver"))
            .unwrap();
        let err =
            DeviceAccess::open_in(&host(&root), "0000:05:00.0", AccessMethod::Auto).unwrap_err();
        // The fake device has no IOMMU group: the error comes from the VFIO path.
        assert!(matches!(err, AccessError::Vfio(VfioError::NoIommuGroup { .. })), "{err:?}");
        let err =
            DeviceAccess::open_in(&host(&root), "0000:05:00.0", AccessMethod::Sysfs).unwrap_err();
        assert!(
            matches!(&err, AccessError::Pci(PciError::BoundToKernelDriver { driver, .. })
                if driver == "vfio-pci"),
            "{err:?}"
        );
    }

    #[test]
    fn forced_vfio_access_explains_an_unbound_device() {
        let root = fake_sysfs("access-forced");
        fake_device(&root, "0000:05:00.0", "0x8086", "0x10fb");
        let err =
            DeviceAccess::open_in(&host(&root), "0000:05:00.0", AccessMethod::Vfio).unwrap_err();
        assert!(
            matches!(err, AccessError::Vfio(VfioError::NotBoundToVfio { driver: None, .. })),
            "{err:?}"
        );
        let err = DeviceAccess::open_in(&host(&root), "05:00.0", AccessMethod::Auto).unwrap_err();
        assert!(matches!(err, AccessError::Pci(PciError::InvalidAddress(_))), "{err:?}");
    }

    #[test]
    fn access_methods_parse_from_their_names() {
        assert_eq!("auto".parse::<AccessMethod>(), Ok(AccessMethod::Auto));
        assert_eq!("sysfs".parse::<AccessMethod>(), Ok(AccessMethod::Sysfs));
        assert_eq!("vfio".parse::<AccessMethod>(), Ok(AccessMethod::Vfio));
        assert!("uio".parse::<AccessMethod>().unwrap_err().contains("vfio"));
    }
}
