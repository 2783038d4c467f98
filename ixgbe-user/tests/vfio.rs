//! The VFIO route to an 82599 through the public API, on a machine without an IOMMU or a
//! VFIO device: every failure a user can meet before any hardware is involved must be a
//! typed error that says what to do. (The successful path needs an 82599 bound to vfio-pci
//! behind an IOMMU and is not exercised here.)

use std::error::Error as _;
use std::os::fd::AsRawFd;
use std::path::Path;

use ixgbe_user::ixgbe::pci::{I82599_DEVICE_IDS, INTEL_VENDOR_ID, PciError};
use ixgbe_user::ixgbe::{AccessError, AccessMethod, DeviceAccess, VfioDevice, VfioError, VfioFds};

/// A PCI device present on this machine that is not an 82599, if any.
fn some_other_pci_device() -> Option<String> {
    let read_id = |dir: &Path, name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
    };
    std::fs::read_dir("/sys/bus/pci/devices").ok()?.filter_map(Result::ok).find_map(|entry| {
        let dir = entry.path();
        let is_82599 = read_id(&dir, "vendor") == Some(INTEL_VENDOR_ID)
            && read_id(&dir, "device").is_some_and(|d| I82599_DEVICE_IDS.contains(&d));
        (!is_82599).then(|| entry.file_name().to_string_lossy().into_owned())
    })
}

#[test]
fn a_malformed_address_is_refused_by_every_route() {
    let err = VfioDevice::open("0000:03:00").unwrap_err();
    assert!(matches!(err, VfioError::Pci(PciError::InvalidAddress(_))), "{err:?}");
    assert!(err.to_string().contains("DDDD:BB:DD.F"), "{err}");
    for method in [AccessMethod::Auto, AccessMethod::Sysfs, AccessMethod::Vfio] {
        let err = DeviceAccess::open("not-an-address", method).unwrap_err();
        let invalid = matches!(
            err,
            AccessError::Pci(PciError::InvalidAddress(_))
                | AccessError::Vfio(VfioError::Pci(PciError::InvalidAddress(_)))
        );
        assert!(invalid, "{method:?}: {err:?}");
    }
}

#[test]
fn an_address_with_no_device_says_so() {
    let err = VfioDevice::open("0000:fe:1f.7").unwrap_err();
    assert!(matches!(err, VfioError::Pci(PciError::NoSuchDevice(_))), "{err:?}");
    assert!(err.source().is_some(), "the PCI error is the source");
}

#[test]
fn a_device_that_is_not_an_82599_is_refused_before_vfio_is_touched() {
    let Some(address) = some_other_pci_device() else {
        eprintln!("skipped: no non-82599 PCI device on this machine");
        return;
    };
    let err = VfioDevice::open(&address).unwrap_err();
    assert!(matches!(err, VfioError::Pci(PciError::NotAn82599 { .. })), "{address}: {err:?}");
    let err = DeviceAccess::open(&address, AccessMethod::Auto).unwrap_err();
    assert!(matches!(err, AccessError::Pci(PciError::NotAn82599 { .. })), "{address}: {err:?}");
    assert!(err.to_string().contains(&address), "{err}");
}

#[test]
fn descriptors_that_are_not_vfio_objects_are_refused_by_the_child_side() {
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let fd = file.as_raw_fd();
    let fds = VfioFds { container: fd, group: fd, device: fd, iova: fd };
    let err = VfioDevice::from_inherited("0000:03:00.0", fds).unwrap_err();
    assert!(matches!(err, VfioError::NotVfio { what: "container", .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("descriptor {fd}")), "{err}");
    assert!(err.source().is_some(), "the kernel's answer is the source");
}

#[test]
fn a_descriptor_list_survives_the_trip_through_a_command_line() {
    let fds = VfioFds { container: 10, group: 11, device: 12, iova: 13 };
    let arg = fds.to_string();
    assert_eq!(arg, "container=10,group=11,device=12,iova=13");
    assert_eq!(arg.parse::<VfioFds>().unwrap(), fds);
    let err = "container=10,group=11".parse::<VfioFds>().unwrap_err();
    assert!(matches!(err, VfioError::InvalidFdSpec(_)), "{err:?}");
    assert!(err.to_string().contains("device missing"), "{err}");
}
