//! Reaching an 82599 through VFIO (Linux `Documentation/driver-api/vfio.rst`; structures
//! and request numbers from `<linux/vfio.h>`): BAR0 mapped from the VFIO device, DMA
//! memory mapped into the device's IOMMU context, bus mastering set through the device's
//! PCI configuration region.
//!
//! The open sequence follows the kernel document's "VFIO Usage Example": open the container
//! `/dev/vfio/vfio` and check its API version and the Type1 IOMMU extension; find the
//! device's IOMMU group through `/sys/bus/pci/devices/<address>/iommu_group`; open
//! `/dev/vfio/<group>` and check that the group is viable (every device in it bound to
//! vfio-pci or to no driver); attach the group to the container; select the Type1 IOMMU;
//! ask the group for the device's descriptor. [`VfioDevice::bar0`] maps BAR0 after the
//! region information says it may, and [`VfioDevice::dma`] hands out a [`VfioDma`]
//! allocator.
//!
//! Compared with sysfs `resource0` and hugepages, VFIO needs neither root (the group's
//! device node can be given to a user) nor physical addresses, and the IOMMU confines the
//! device's DMA to memory mapped for it.
//!
//! Several processes: a group can be opened only once, so other processes (a kernel
//! instance started by the control plane) receive the descriptors instead:
//! [`VfioDevice::inheritable_fds`] in the parent, [`VfioDevice::from_inherited`] in the
//! child, like the model's `ModelHandle`. A shared IOVA cursor travels with them, so every
//! process maps its own DMA memory into the shared I/O address space without collisions.
//!
//! **Untested on hardware.** This machine has no IOMMU and no VFIO device, so the successful
//! path (the ioctls succeeding, BAR0 and DMA through a real IOMMU) has never run. What the
//! tests cover: every error that can be provoked without VFIO (bad or unknown address,
//! wrong device, missing driver binding, missing IOMMU group, missing `/dev/vfio/vfio`, a
//! file that is not a VFIO container, descriptors that are not VFIO objects), the layout of
//! every ioctl structure against `<linux/vfio.h>`, and the parsing of region and IOMMU
//! replies including their capability chains.

mod dma;
mod sys;

use std::any::Any;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::Arc;

pub use dma::VfioDma;

use self::dma::IovaSpace;
use self::sys::IommuInfo;
use super::bar::Bar0;
use super::pci::{self, PCI_COMMAND, PCI_COMMAND_BUS_MASTER, PciError};
use super::regs::BAR0_LEN;
use crate::dma::SharedMemory;

/// The kernel driver a device must be bound to for VFIO.
pub const VFIO_PCI_DRIVER: &str = "vfio-pci";

/// Why an 82599 could not be opened through VFIO.
#[derive(Debug)]
#[non_exhaustive]
pub enum VfioError {
    /// The address is malformed, names no device, or names a device that is not an 82599.
    Pci(PciError),
    /// The device is not bound to vfio-pci.
    NotBoundToVfio {
        /// PCI address.
        address: String,
        /// The driver it is bound to, if any.
        driver: Option<String>,
    },
    /// The device has no IOMMU group: the IOMMU is off or absent.
    NoIommuGroup {
        /// PCI address.
        address: String,
    },
    /// `/dev/vfio/vfio` does not exist: the VFIO modules are not loaded.
    ModuleNotLoaded(PathBuf),
    /// The IOMMU group has no device node.
    NoGroupDevice {
        /// IOMMU group number.
        group: u32,
        /// The missing node.
        path: PathBuf,
    },
    /// This process may not open a VFIO or sysfs file.
    PermissionDenied(PathBuf),
    /// Another process has the IOMMU group open.
    GroupBusy {
        /// IOMMU group number.
        group: u32,
    },
    /// Some device in the IOMMU group is bound to a host driver, so the group cannot be
    /// given to userspace.
    GroupNotViable {
        /// IOMMU group number.
        group: u32,
        /// The group's devices bound to other drivers, as `address (driver)`.
        blocking: Vec<String>,
    },
    /// The kernel speaks another VFIO API version.
    UnsupportedApiVersion(i32),
    /// The kernel offers no Type1 IOMMU backend.
    NoType1Iommu,
    /// A file or descriptor is not the VFIO object it should be.
    NotVfio {
        /// What was expected ("container", "group", "device", "IOVA cursor").
        what: &'static str,
        /// The path or descriptor.
        origin: String,
        /// What the kernel said.
        error: io::Error,
    },
    /// The VFIO device does not offer what the driver needs (a PCI device whose BAR0 can be
    /// mapped and whose configuration space can be written).
    UnusableDevice {
        /// PCI address.
        address: String,
        /// What is missing.
        reason: String,
    },
    /// A descriptor list for [`VfioDevice::from_inherited`] could not be parsed.
    InvalidFdSpec(String),
    /// A VFIO request failed.
    Ioctl {
        /// The request, as `<linux/vfio.h>` names it (or the system call).
        request: &'static str,
        /// What the kernel said.
        error: io::Error,
    },
    /// Another I/O error.
    Io(PathBuf, io::Error),
}

impl fmt::Display for VfioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VfioError::Pci(e) => write!(f, "{e}"),
            VfioError::NotBoundToVfio { address, driver: Some(driver) } => write!(
                f,
                "PCI device {address} is bound to {driver}, not {VFIO_PCI_DRIVER}; rebind it \
                 (root): `modprobe vfio-pci; echo {address} > \
                 /sys/bus/pci/devices/{address}/driver/unbind; echo vfio-pci > \
                 /sys/bus/pci/devices/{address}/driver_override; echo {address} > \
                 /sys/bus/pci/drivers_probe`"
            ),
            VfioError::NotBoundToVfio { address, driver: None } => write!(
                f,
                "PCI device {address} is bound to no driver; bind it to {VFIO_PCI_DRIVER} \
                 (root): `modprobe vfio-pci; echo vfio-pci > \
                 /sys/bus/pci/devices/{address}/driver_override; echo {address} > \
                 /sys/bus/pci/drivers_probe`"
            ),
            VfioError::NoIommuGroup { address } => write!(
                f,
                "PCI device {address} has no IOMMU group: enable the IOMMU (VT-d / AMD-Vi in \
                 the firmware, `intel_iommu=on` or `amd_iommu=on` on the kernel command line), \
                 or use sysfs access with hugepages instead"
            ),
            VfioError::ModuleNotLoaded(path) => write!(
                f,
                "{} does not exist: load VFIO with `modprobe vfio-pci` (root)",
                path.display()
            ),
            VfioError::NoGroupDevice { group, path } => write!(
                f,
                "IOMMU group {group} has no device node {}: is the device bound to vfio-pci?",
                path.display()
            ),
            VfioError::PermissionDenied(path) => write!(
                f,
                "permission denied opening {}: run as root or give this user the VFIO group's \
                 device node (chown)",
                path.display()
            ),
            VfioError::GroupBusy { group } => write!(
                f,
                "IOMMU group {group} is open in another process; a group opens only once, so \
                 other processes must inherit its descriptors (VfioDevice::inheritable_fds)"
            ),
            VfioError::GroupNotViable { group, blocking } => {
                write!(
                    f,
                    "IOMMU group {group} is not viable: every device in it must be bound to \
                     vfio-pci or to no driver"
                )?;
                if blocking.is_empty() {
                    write!(f, " (see /sys/kernel/iommu_groups/{group}/devices)")
                } else {
                    write!(f, "; bound elsewhere: {}", blocking.join(", "))
                }
            }
            VfioError::UnsupportedApiVersion(v) => write!(
                f,
                "the kernel's VFIO API version is {v}, this driver speaks version {}",
                sys::API_VERSION
            ),
            VfioError::NoType1Iommu => {
                write!(f, "the kernel offers no VFIO Type1 IOMMU (is the IOMMU enabled?)")
            }
            VfioError::NotVfio { what, origin, error } => {
                write!(f, "{origin} is not a usable VFIO {what}: {error}")
            }
            VfioError::UnusableDevice { address, reason } => {
                write!(f, "VFIO device {address} cannot be driven: {reason}")
            }
            VfioError::InvalidFdSpec(msg) => write!(
                f,
                "invalid VFIO descriptor list ({msg}); expected \
                 container=N,group=N,device=N,iova=N"
            ),
            VfioError::Ioctl { request, error } => write!(f, "{request} failed: {error}"),
            VfioError::Io(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl std::error::Error for VfioError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VfioError::Pci(e) => Some(e),
            VfioError::NotVfio { error, .. }
            | VfioError::Ioctl { error, .. }
            | VfioError::Io(_, error) => Some(error),
            _ => None,
        }
    }
}

impl From<PciError> for VfioError {
    fn from(e: PciError) -> Self {
        VfioError::Pci(e)
    }
}

/// Where the kernel's interfaces live (other roots in tests).
#[derive(Clone, Debug)]
pub(crate) struct HostPaths {
    /// `/sys/bus/pci/devices`.
    pub(crate) pci_devices: PathBuf,
    /// `/dev/vfio`.
    pub(crate) dev_vfio: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            pci_devices: PathBuf::from("/sys/bus/pci/devices"),
            dev_vfio: PathBuf::from("/dev/vfio"),
        }
    }
}

/// The four descriptors that let another process use an open [`VfioDevice`]: the
/// container, the group, the device, and the shared IOVA cursor.
///
/// Its `Display` form, `container=3,group=4,device=5,iova=6`, parses back with `FromStr`,
/// for passing on a command line or in the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfioFds {
    /// `/dev/vfio/vfio`, with the group attached and the IOMMU set.
    pub container: RawFd,
    /// `/dev/vfio/<group>`; keeps the group attached to the container.
    pub group: RawFd,
    /// The device (from `VFIO_GROUP_GET_DEVICE_FD`).
    pub device: RawFd,
    /// The shared memory holding the next free IOVA.
    pub iova: RawFd,
}

impl fmt::Display for VfioFds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "container={},group={},device={},iova={}",
            self.container, self.group, self.device, self.iova
        )
    }
}

impl FromStr for VfioFds {
    type Err = VfioError;

    fn from_str(text: &str) -> Result<Self, VfioError> {
        let bad = |msg: String| VfioError::InvalidFdSpec(msg);
        let mut slots: [(&str, Option<RawFd>); 4] =
            [("container", None), ("group", None), ("device", None), ("iova", None)];
        for item in text.split(',') {
            let (key, value) =
                item.split_once('=').ok_or_else(|| bad(format!("{item:?} is not key=value")))?;
            let fd: RawFd = value
                .parse()
                .ok()
                .filter(|fd| *fd >= 0)
                .ok_or_else(|| bad(format!("{value:?} is not a descriptor number")))?;
            let slot = slots
                .iter_mut()
                .find(|(name, _)| *name == key)
                .ok_or_else(|| bad(format!("unknown key {key:?}")))?;
            if slot.1.replace(fd).is_some() {
                return Err(bad(format!("{key} given twice")));
            }
        }
        let [container, group, device, iova] = slots.map(|(name, fd)| fd.ok_or(name));
        let missing = |name| bad(format!("{name} missing"));
        Ok(VfioFds {
            container: container.map_err(missing)?,
            group: group.map_err(missing)?,
            device: device.map_err(missing)?,
            iova: iova.map_err(missing)?,
        })
    }
}

/// Everything that must stay open while the device is in use. BAR0 mappings and DMA
/// regions keep it alive.
#[derive(Debug)]
///
/// Fields drop in declaration order: the device before its group, the group (whose
/// closing detaches it from the container and tears the IOMMU context down) before the
/// container.
struct Shared {
    address: String,
    device: File,
    group: OwnedFd,
    container: Arc<OwnedFd>,
    iova: Arc<IovaSpace>,
}

/// An 82599 opened through VFIO. Cheap to clone; the descriptors close when the last
/// clone, BAR0 mapping and DMA region are gone.
#[derive(Clone, Debug)]
pub struct VfioDevice {
    shared: Arc<Shared>,
}

impl VfioDevice {
    /// Opens the 82599 at `address` (e.g. `0000:03:00.0`), which must be bound to vfio-pci,
    /// through its IOMMU group.
    pub fn open(address: &str) -> Result<Self, VfioError> {
        Self::open_in(&HostPaths::default(), address)
    }

    /// [`VfioDevice::open`] with other sysfs and `/dev/vfio` directories.
    pub(crate) fn open_in(paths: &HostPaths, address: &str) -> Result<Self, VfioError> {
        let dir = pci::find_82599(&paths.pci_devices, address)?;
        match pci::bound_driver(&dir) {
            Some(driver) if driver == VFIO_PCI_DRIVER => {}
            driver => {
                return Err(VfioError::NotBoundToVfio { address: address.to_string(), driver });
            }
        }
        let group = iommu_group(&dir, address)?;

        let container_path = paths.dev_vfio.join("vfio");
        let container =
            open_rw(&container_path).map_err(|e| container_open_error(&container_path, e))?;
        check_container(&container, &container_path.display().to_string())?;
        let iommu_type = [sys::TYPE1V2_IOMMU, sys::TYPE1_IOMMU]
            .into_iter()
            .find(|&t| {
                sys::ioctl_value(container.as_raw_fd(), sys::CHECK_EXTENSION, t.into())
                    .is_ok_and(|supported| supported > 0)
            })
            .ok_or(VfioError::NoType1Iommu)?;

        let group_path = paths.dev_vfio.join(group.to_string());
        let group_fd = open_rw(&group_path).map_err(|e| group_open_error(group, &group_path, e))?;
        let status = group_status(&group_fd)
            .map_err(|error| VfioError::Ioctl { request: "VFIO_GROUP_GET_STATUS", error })?;
        if status & sys::GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::GroupNotViable { group, blocking: group_blockers(&dir) });
        }
        let mut container_raw: libc::c_int = container.as_raw_fd();
        // SAFETY: GROUP_SET_CONTAINER reads one int (the container descriptor) through the
        // pointer, which points at a live local.
        unsafe {
            sys::ioctl_ptr(group_fd.as_raw_fd(), sys::GROUP_SET_CONTAINER, &mut container_raw)
        }
        .map_err(|error| VfioError::Ioctl { request: "VFIO_GROUP_SET_CONTAINER", error })?;
        sys::ioctl_value(container.as_raw_fd(), sys::SET_IOMMU, iommu_type.into())
            .map_err(|error| VfioError::Ioctl { request: "VFIO_SET_IOMMU", error })?;
        let iommu = iommu_info(&container)
            .map_err(|error| VfioError::Ioctl { request: "VFIO_IOMMU_GET_INFO", error })?;

        let name = std::ffi::CString::new(address)
            .map_err(|_| PciError::InvalidAddress(address.to_string()))?;
        // SAFETY: GROUP_GET_DEVICE_FD reads a NUL-terminated device name through the
        // pointer and writes nothing; `name` outlives the call.
        let raw = unsafe {
            sys::ioctl_ptr(group_fd.as_raw_fd(), sys::GROUP_GET_DEVICE_FD, name.as_ptr().cast_mut())
        }
        .map_err(|error| VfioError::Ioctl { request: "VFIO_GROUP_GET_DEVICE_FD", error })?;
        // SAFETY: on success the ioctl returns a new descriptor that nobody else owns (the
        // kernel opens it close-on-exec).
        let device = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        check_device(&device, address, &format!("device of {address}"))?;

        let iova = IovaSpace::create(&iommu)
            .map_err(|e| VfioError::Io(PathBuf::from("memfd:netpop-vfio-iova"), e))?;
        Ok(VfioDevice {
            shared: Arc::new(Shared {
                address: address.to_string(),
                container: Arc::new(container),
                group: group_fd,
                device,
                iova: Arc::new(iova),
            }),
        })
    }

    /// The device's PCI address.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Clears close-on-exec on the four descriptors and returns them, for a child process
    /// started with `exec` (after `fork` alone they are inherited anyway). The child calls
    /// [`VfioDevice::from_inherited`] with them.
    pub fn inheritable_fds(&self) -> io::Result<VfioFds> {
        let s = &self.shared;
        for fd in [s.container.as_raw_fd(), s.group.as_raw_fd(), s.device.as_raw_fd()] {
            clear_cloexec(fd)?;
        }
        Ok(VfioFds {
            container: s.container.as_raw_fd(),
            group: s.group.as_raw_fd(),
            device: s.device.as_raw_fd(),
            iova: s.iova.cursor().make_inheritable()?,
        })
    }

    /// Takes up a device another process opened, from the descriptors it passed down (see
    /// [`VfioDevice::inheritable_fds`]). The descriptors are duplicated, so the caller keeps
    /// the numbers it passed; each is checked to be the VFIO object it claims to be.
    pub fn from_inherited(address: &str, fds: VfioFds) -> Result<Self, VfioError> {
        if !pci::valid_address(address) {
            return Err(PciError::InvalidAddress(address.to_string()).into());
        }
        let container = duplicate(fds.container, "container")?;
        let origin = |fd: RawFd| format!("inherited descriptor {fd}");
        check_container(&container, &origin(fds.container))?;
        let iommu = iommu_info(&container).map_err(|error| VfioError::NotVfio {
            what: "container with an IOMMU set",
            origin: origin(fds.container),
            error,
        })?;

        let group = duplicate(fds.group, "group")?;
        let status = group_status(&group).map_err(|error| VfioError::NotVfio {
            what: "group",
            origin: origin(fds.group),
            error,
        })?;
        let wanted = sys::GROUP_FLAGS_VIABLE | sys::GROUP_FLAGS_CONTAINER_SET;
        if status & wanted != wanted {
            return Err(VfioError::UnusableDevice {
                address: address.to_string(),
                reason: format!(
                    "the inherited group is not viable and attached (status {status:#x})"
                ),
            });
        }

        let device = File::from(duplicate(fds.device, "device")?);
        check_device(&device, address, &origin(fds.device))?;

        let cursor = duplicate(fds.iova, "IOVA cursor")?;
        let iova = IovaSpace::from_fd(cursor, &iommu).map_err(|error| VfioError::NotVfio {
            what: "IOVA cursor",
            origin: origin(fds.iova),
            error,
        })?;
        Ok(VfioDevice {
            shared: Arc::new(Shared {
                address: address.to_string(),
                container: Arc::new(container),
                group,
                device,
                iova: Arc::new(iova),
            }),
        })
    }

    /// Maps BAR0 and enables bus mastering (the VFIO counterpart of
    /// [`pci::open_bar0`]). The mapping keeps the device open.
    pub fn bar0(&self) -> Result<Bar0, VfioError> {
        let unusable = |reason: String| VfioError::UnusableDevice {
            address: self.shared.address.clone(),
            reason,
        };
        let reply = self.region_info(sys::PCI_BAR0_REGION_INDEX)?;
        let info = sys::parse_region_info(&reply)
            .ok_or_else(|| unusable("short BAR0 region information".into()))?;
        let rw = sys::REGION_FLAG_READ | sys::REGION_FLAG_WRITE;
        if info.flags & rw != rw {
            return Err(unusable(format!(
                "BAR0 is not readable and writable (flags {:#x})",
                info.flags
            )));
        }
        let len = bar0_mapping_len(&reply)
            .ok_or_else(|| unusable(format!("BAR0's first {BAR0_LEN} bytes cannot be mapped")))?;
        let offset = libc::off_t::try_from(info.offset)
            .map_err(|_| unusable(format!("BAR0 offset {:#x} out of range", info.offset)))?;

        self.enable_bus_master()?;
        // SAFETY: maps `len` bytes of the device's BAR0 region, which the region information
        // says may be mapped, at a kernel-chosen address; no existing mapping is replaced.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.shared.device.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VfioError::Ioctl {
                request: "mmap of BAR0",
                error: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| unusable("BAR0 mapped at address 0".into()))?;
        // SAFETY: the mapping was just created by mmap and is owned by the new value.
        let mapping = unsafe { SharedMemory::from_raw_mapping(ptr, len) };
        let owner: Arc<dyn Any + Send + Sync> = Arc::clone(&self.shared) as _;
        Ok(Bar0::from_mmio_owned_by(mapping, owner))
    }

    /// A DMA allocator whose regions the device reaches through this container's IOMMU.
    pub fn dma(&self) -> VfioDma {
        VfioDma::new(Arc::clone(&self.shared.container), Arc::clone(&self.shared.iova))
    }

    fn region_info(&self, index: u32) -> Result<Vec<u8>, VfioError> {
        let query =
            sys::RegionInfo { argsz: sys::argsz::<sys::RegionInfo>(), index, ..Default::default() };
        // SAFETY: DEVICE_GET_REGION_INFO takes a `RegionInfo` with argsz and index set.
        unsafe {
            sys::info_with_caps(self.shared.device.as_raw_fd(), sys::DEVICE_GET_REGION_INFO, query)
        }
        .map_err(|error| VfioError::Ioctl { request: "VFIO_DEVICE_GET_REGION_INFO", error })
    }

    /// Sets Bus Master Enable through the configuration-space region, which vfio-pci
    /// exposes as a readable and writable part of the device file.
    fn enable_bus_master(&self) -> Result<(), VfioError> {
        let reply = self.region_info(sys::PCI_CONFIG_REGION_INDEX)?;
        let config = sys::parse_region_info(&reply).ok_or_else(|| VfioError::UnusableDevice {
            address: self.shared.address.clone(),
            reason: "short configuration region information".into(),
        })?;
        let at =
            config.offset.checked_add(PCI_COMMAND).ok_or_else(|| VfioError::UnusableDevice {
                address: self.shared.address.clone(),
                reason: format!("configuration region offset {:#x} out of range", config.offset),
            })?;
        let config_err = |error| VfioError::Ioctl { request: "PCI configuration access", error };
        let mut command = [0u8; 2];
        self.shared.device.read_exact_at(&mut command, at).map_err(config_err)?;
        let value = u16::from_le_bytes(command) | PCI_COMMAND_BUS_MASTER;
        self.shared.device.write_all_at(&value.to_le_bytes(), at).map_err(config_err)
    }
}

/// How many bytes of BAR0 to map: the mappable area that starts at offset 0, which must
/// cover the 82599's registers. `None` when the region cannot be mapped that way.
fn bar0_mapping_len(reply: &[u8]) -> Option<usize> {
    let (_, size) = sys::mappable_areas(reply)?.into_iter().find(|&(offset, _)| offset == 0)?;
    let size = usize::try_from(size).ok()?;
    (size >= BAR0_LEN).then_some(size)
}

fn open_rw(path: &Path) -> io::Result<OwnedFd> {
    Ok(OwnedFd::from(OpenOptions::new().read(true).write(true).open(path)?))
}

fn container_open_error(path: &Path, e: io::Error) -> VfioError {
    match e.raw_os_error() {
        // ENODEV / ENXIO: a stale node whose driver is gone.
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => {
            VfioError::ModuleNotLoaded(path.to_path_buf())
        }
        Some(libc::EACCES | libc::EPERM) => VfioError::PermissionDenied(path.to_path_buf()),
        _ => VfioError::Io(path.to_path_buf(), e),
    }
}

fn group_open_error(group: u32, path: &Path, e: io::Error) -> VfioError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => VfioError::NoGroupDevice { group, path: path.to_path_buf() },
        Some(libc::EACCES | libc::EPERM) => VfioError::PermissionDenied(path.to_path_buf()),
        Some(libc::EBUSY) => VfioError::GroupBusy { group },
        _ => VfioError::Io(path.to_path_buf(), e),
    }
}

/// Checks that `fd` is a VFIO container speaking this driver's API version.
fn check_container(fd: &OwnedFd, origin: &str) -> Result<(), VfioError> {
    let version = sys::ioctl_value(fd.as_raw_fd(), sys::GET_API_VERSION, 0).map_err(|error| {
        VfioError::NotVfio { what: "container", origin: origin.to_string(), error }
    })?;
    if version != sys::API_VERSION {
        return Err(VfioError::UnsupportedApiVersion(version));
    }
    Ok(())
}

/// Checks that `device` is a vfio-pci device with the regions the driver uses.
fn check_device(device: &File, address: &str, origin: &str) -> Result<(), VfioError> {
    let mut info = sys::DeviceInfo { argsz: sys::argsz::<sys::DeviceInfo>(), ..Default::default() };
    // SAFETY: DEVICE_GET_INFO takes a `DeviceInfo` with argsz set; `info` is a live local.
    unsafe { sys::ioctl_ptr(device.as_raw_fd(), sys::DEVICE_GET_INFO, &mut info) }.map_err(
        |error| VfioError::NotVfio { what: "device", origin: origin.to_string(), error },
    )?;
    if info.flags & sys::DEVICE_FLAGS_PCI == 0 || info.num_regions <= sys::PCI_CONFIG_REGION_INDEX {
        return Err(VfioError::UnusableDevice {
            address: address.to_string(),
            reason: format!(
                "not a vfio-pci device with a configuration region (flags {:#x}, {} regions)",
                info.flags, info.num_regions
            ),
        });
    }
    Ok(())
}

fn group_status(group: &OwnedFd) -> io::Result<u32> {
    let mut status = sys::GroupStatus { argsz: sys::argsz::<sys::GroupStatus>(), flags: 0 };
    // SAFETY: GROUP_GET_STATUS takes a `GroupStatus` with argsz set; `status` is a live local.
    unsafe { sys::ioctl_ptr(group.as_raw_fd(), sys::GROUP_GET_STATUS, &mut status) }?;
    Ok(status.flags)
}

fn iommu_info(container: &OwnedFd) -> io::Result<IommuInfo> {
    let query =
        sys::IommuType1Info { argsz: sys::argsz::<sys::IommuType1Info>(), ..Default::default() };
    // SAFETY: IOMMU_GET_INFO takes an `IommuType1Info` with argsz set.
    let reply = unsafe { sys::info_with_caps(container.as_raw_fd(), sys::IOMMU_GET_INFO, query) }?;
    sys::parse_iommu_info(&reply).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "short VFIO_IOMMU_GET_INFO reply")
    })
}

/// The IOMMU group number of the device in sysfs directory `dir` (the name of the group
/// directory its `iommu_group` link points to).
fn iommu_group(dir: &Path, address: &str) -> Result<u32, VfioError> {
    let link = dir.join("iommu_group");
    let target = match std::fs::read_link(&link) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VfioError::NoIommuGroup { address: address.to_string() });
        }
        Err(e) => return Err(VfioError::Io(link, e)),
    };
    target
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.parse().ok())
        .ok_or_else(|| VfioError::Io(link, io::ErrorKind::InvalidData.into()))
}

/// Devices sharing the IOMMU group of the device in `dir` that are bound to drivers which
/// keep the group from being viable, as `address (driver)`.
fn group_blockers(dir: &Path) -> Vec<String> {
    // vfio-pci owns its devices; pci-stub and pcieport (bridges) are allowed in a group.
    const HARMLESS: [&str; 3] = [VFIO_PCI_DRIVER, "pci-stub", "pcieport"];
    let Ok(entries) = std::fs::read_dir(dir.join("iommu_group").join("devices")) else {
        return Vec::new();
    };
    let mut blocking: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let driver = pci::bound_driver(&entry.path())?;
            (!HARMLESS.contains(&driver.as_str()))
                .then(|| format!("{} ({driver})", entry.file_name().to_string_lossy()))
        })
        .collect();
    blocking.sort();
    blocking
}

/// A close-on-exec duplicate of an inherited descriptor.
fn duplicate(fd: RawFd, what: &'static str) -> Result<OwnedFd, VfioError> {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor; an invalid `fd` fails with
    // EBADF.
    let raw = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if raw < 0 {
        return Err(VfioError::NotVfio {
            what,
            origin: format!("inherited descriptor {fd}"),
            error: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is the new descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor we own changes only its flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ixgbe::pci::tests::{fake_device, fake_sysfs};

    /// A fake host: sysfs with one 82599 at `address` bound to `driver`, an IOMMU group 42
    /// holding it and `others` (address, driver), and an empty `/dev/vfio`.
    fn fake_host(
        name: &str,
        address: &str,
        driver: Option<&str>,
        group: bool,
        others: &[(&str, &str)],
    ) -> HostPaths {
        let root = fake_sysfs(&format!("vfio-{name}"));
        let devices = root.join("devices");
        std::fs::create_dir_all(&devices).unwrap();
        let group_dir = root.join("iommu_groups").join("42");
        std::fs::create_dir_all(group_dir.join("devices")).unwrap();
        let mut all = vec![(address, driver)];
        all.extend(others.iter().map(|&(a, d)| (a, Some(d))));
        for (addr, driver) in all {
            let dir = fake_device(&devices, addr, "0x8086", "0x10fb");
            if let Some(driver) = driver {
                std::os::unix::fs::symlink(root.join("drivers").join(driver), dir.join("driver"))
                    .unwrap();
            }
            if group {
                std::os::unix::fs::symlink(&group_dir, dir.join("iommu_group")).unwrap();
                std::os::unix::fs::symlink(&dir, group_dir.join("devices").join(addr)).unwrap();
            }
        }
        let dev_vfio = root.join("dev-vfio");
        std::fs::create_dir_all(&dev_vfio).unwrap();
        HostPaths { pci_devices: devices, dev_vfio }
    }

    #[test]
    fn malformed_or_unknown_addresses_fail_before_any_vfio_call() {
        let paths = fake_host("addr", "0000:03:00.0", Some(VFIO_PCI_DRIVER), true, &[]);
        for bad in ["", "3:00.0", "0000:03:00.9", "../../../etc"] {
            let err = VfioDevice::open_in(&paths, bad).unwrap_err();
            assert!(matches!(err, VfioError::Pci(PciError::InvalidAddress(_))), "{bad}: {err}");
        }
        let err = VfioDevice::open_in(&paths, "0000:04:00.0").unwrap_err();
        assert!(matches!(err, VfioError::Pci(PciError::NoSuchDevice(_))), "{err}");
        assert!(err.to_string().contains("lspci"), "{err}");
    }

    #[test]
    fn a_device_that_is_not_an_82599_is_refused() {
        let paths = fake_host("vendor", "0000:03:00.0", Some(VFIO_PCI_DRIVER), true, &[]);
        let dir = paths.pci_devices.join("0000:03:00.0");
        std::fs::write(dir.join("device"), "0x1533\n").unwrap();
        let err = VfioDevice::open_in(&paths, "0000:03:00.0").unwrap_err();
        assert!(matches!(err, VfioError::Pci(PciError::NotAn82599 { device: 0x1533, .. })));
    }

    #[test]
    fn a_device_bound_to_another_driver_names_it_and_the_rebind_steps() {
        let paths = fake_host("ixgbe", "0000:03:00.0", Some("ixgbe"), true, &[]);
        let err = VfioDevice::open_in(&paths, "0000:03:00.0").unwrap_err();
        assert!(
            matches!(&err, VfioError::NotBoundToVfio { driver: Some(d), .. } if d == "ixgbe"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("bound to ixgbe") && text.contains("driver_override"), "{text}");
    }

    #[test]
    fn an_unbound_device_says_how_to_bind_it_to_vfio_pci() {
        let paths = fake_host("unbound", "0000:03:00.0", None, true, &[]);
        let err = VfioDevice::open_in(&paths, "0000:03:00.0").unwrap_err();
        assert!(matches!(err, VfioError::NotBoundToVfio { driver: None, .. }), "{err:?}");
        assert!(err.to_string().contains("modprobe vfio-pci"), "{err}");
    }

    #[test]
    fn a_device_without_iommu_group_points_at_the_iommu_setting() {
        let paths = fake_host("nogroup", "0000:03:00.0", Some(VFIO_PCI_DRIVER), false, &[]);
        let err = VfioDevice::open_in(&paths, "0000:03:00.0").unwrap_err();
        assert!(matches!(err, VfioError::NoIommuGroup { .. }), "{err:?}");
        assert!(err.to_string().contains("intel_iommu=on"), "{err}");
    }

    #[test]
    fn a_missing_vfio_container_node_means_the_module_is_not_loaded() {
        let paths = fake_host("nomodule", "0000:03:00.0", Some(VFIO_PCI_DRIVER), true, &[]);
        let err = VfioDevice::open_in(&paths, "0000:03:00.0").unwrap_err();
        assert!(matches!(&err, VfioError::ModuleNotLoaded(p) if p.ends_with("vfio")), "{err:?}");
        assert!(err.to_string().contains("modprobe vfio-pci"), "{err}");
    }

    #[test]
    fn a_container_node_that_is_not_vfio_is_reported_as_such() {
        let paths = fake_host("notvfio", "0000:03:00.0", Some(VFIO_PCI_DRIVER), true, &[]);
        std::fs::write(paths.dev_vfio.join("vfio"), b"").unwrap();
        let err = VfioDevice::open_in(&paths, "0000:03:00.0").unwrap_err();
        match &err {
            VfioError::NotVfio { what: "container", error, .. } => {
                assert_eq!(error.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("expected NotVfio container, got {other:?}"),
        }
    }

    #[test]
    fn the_group_number_comes_from_the_iommu_group_link() {
        let paths = fake_host("groupnr", "0000:03:00.0", Some(VFIO_PCI_DRIVER), true, &[]);
        let dir = paths.pci_devices.join("0000:03:00.0");
        assert_eq!(iommu_group(&dir, "0000:03:00.0").unwrap(), 42);
        std::fs::remove_file(dir.join("iommu_group")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/not-a-number", dir.join("iommu_group")).unwrap();
        assert!(matches!(iommu_group(&dir, "0000:03:00.0"), Err(VfioError::Io(..))));
    }

    #[test]
    fn group_blockers_are_devices_bound_to_host_drivers() {
        let others =
            [("0000:03:00.1", "ixgbe"), ("0000:00:01.0", "pcieport"), ("0000:03:00.2", "e1000e")];
        let paths = fake_host("blockers", "0000:03:00.0", Some(VFIO_PCI_DRIVER), true, &others);
        let dir = paths.pci_devices.join("0000:03:00.0");
        let blocking = group_blockers(&dir);
        assert_eq!(blocking, vec!["0000:03:00.1 (ixgbe)", "0000:03:00.2 (e1000e)"]);
        let err = VfioError::GroupNotViable { group: 42, blocking };
        assert!(err.to_string().contains("0000:03:00.1 (ixgbe)"), "{err}");
    }

    #[test]
    fn group_node_errors_map_to_their_causes() {
        let path = Path::new("/dev/vfio/42");
        let err = |errno| group_open_error(42, path, io::Error::from_raw_os_error(errno));
        assert!(matches!(err(libc::ENOENT), VfioError::NoGroupDevice { group: 42, .. }));
        assert!(matches!(err(libc::EACCES), VfioError::PermissionDenied(_)));
        assert!(matches!(err(libc::EBUSY), VfioError::GroupBusy { group: 42 }));
        assert!(err(libc::EBUSY).to_string().contains("inheritable_fds"));
        assert!(matches!(err(libc::EIO), VfioError::Io(..)));
        let container = Path::new("/dev/vfio/vfio");
        let c = |errno| container_open_error(container, io::Error::from_raw_os_error(errno));
        assert!(matches!(c(libc::ENOENT), VfioError::ModuleNotLoaded(_)));
        assert!(matches!(c(libc::EACCES), VfioError::PermissionDenied(_)));
        assert!(c(libc::EACCES).to_string().contains("root"));
    }

    #[test]
    fn fd_lists_round_trip_and_reject_garbage() {
        let fds = VfioFds { container: 3, group: 4, device: 17, iova: 6 };
        assert_eq!(fds.to_string().parse::<VfioFds>().unwrap(), fds);
        assert_eq!("iova=6,device=17,group=4,container=3".parse::<VfioFds>().unwrap(), fds);
        for bad in [
            "",
            "container=3,group=4,device=5",
            "container=3,group=4,device=5,iova=6,container=7",
            "container=3,group=4,device=5,iova=-1",
            "container=3,group=4,device=5,iova=x",
            "container=3,group=4,device=5,cursor=6",
            "container:3",
        ] {
            assert!(matches!(bad.parse::<VfioFds>(), Err(VfioError::InvalidFdSpec(_))), "{bad}");
        }
    }

    #[test]
    fn inherited_descriptors_that_are_not_vfio_are_refused() {
        let file = File::open("/proc/self/stat").unwrap();
        let fd = file.as_raw_fd();
        let fds = VfioFds { container: fd, group: fd, device: fd, iova: fd };
        let err = VfioDevice::from_inherited("0000:03:00.0", fds).unwrap_err();
        assert!(matches!(err, VfioError::NotVfio { what: "container", .. }), "{err:?}");
        let closed = VfioFds { container: 1 << 20, ..fds };
        match VfioDevice::from_inherited("0000:03:00.0", closed).unwrap_err() {
            VfioError::NotVfio { error, .. } => assert_eq!(error.raw_os_error(), Some(libc::EBADF)),
            other => panic!("expected EBADF, got {other:?}"),
        }
        assert!(matches!(
            VfioDevice::from_inherited("nonsense", fds),
            Err(VfioError::Pci(PciError::InvalidAddress(_)))
        ));
        // The caller's descriptor is untouched by the failed attempts.
        // SAFETY: F_GETFD only reads the flags of `fd`.
        assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
    }

    #[test]
    fn duplicates_are_close_on_exec_and_cleared_ones_are_not() {
        let file = File::open("/proc/self/stat").unwrap();
        let dup = duplicate(file.as_raw_fd(), "test").unwrap();
        // SAFETY: F_GETFD only reads descriptor flags.
        let flags = unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        clear_cloexec(dup.as_raw_fd()).unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(dup.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn bar0_mapping_must_cover_the_registers() {
        let region = |flags: u32, size: u64| {
            let mut b = Vec::new();
            for w in [32u32, flags, 0, 0] {
                b.extend_from_slice(&w.to_ne_bytes());
            }
            b.extend_from_slice(&size.to_ne_bytes());
            b.extend_from_slice(&0u64.to_ne_bytes());
            b
        };
        let mmap = sys::REGION_FLAG_READ | sys::REGION_FLAG_WRITE | sys::REGION_FLAG_MMAP;
        assert_eq!(bar0_mapping_len(&region(mmap, 512 * 1024)), Some(512 * 1024));
        assert_eq!(bar0_mapping_len(&region(mmap, 128 * 1024)), None, "too small");
        assert_eq!(bar0_mapping_len(&region(mmap & !sys::REGION_FLAG_MMAP, 1 << 20)), None);
        // A sparse area list that leaves a hole inside the register space.
        let caps = mmap | sys::REGION_FLAG_CAPS;
        let areas: &[(u64, u64)] = &[(0, 0x1000), (0x2000, 0x7_E000)];
        let sparse = sys::tests::reply_with_caps(
            &region(caps, 0x8_0000),
            12,
            &[(sys::REGION_CAP_SPARSE_MMAP, areas)],
        );
        assert_eq!(bar0_mapping_len(&sparse), None);
        let whole: &[(u64, u64)] = &[(0, 0x8_0000)];
        let sparse = sys::tests::reply_with_caps(
            &region(caps, 0x10_0000),
            12,
            &[(sys::REGION_CAP_SPARSE_MMAP, whole)],
        );
        assert_eq!(bar0_mapping_len(&sparse), Some(0x8_0000));
    }
}
