//! DMA memory behind an IOMMU (`VFIO_IOMMU_MAP_DMA`, Linux
//! `Documentation/driver-api/vfio.rst`, "VFIO Usage Example").
//!
//! With an IOMMU the device never sees physical addresses: each region is ordinary memory
//! that this process maps into the container's I/O address space at an I/O virtual
//! address (IOVA) chosen here. Hence no hugepages and no `/proc/self/pagemap`, and regions
//! of any size (the IOMMU makes them contiguous for the device).
//!
//! Every process that shares a container (through inherited descriptors) maps into the
//! same I/O address space, so IOVAs are handed out by a bump pointer kept in a small shared
//! memory file that travels with the descriptors: processes never hand out the same IOVA
//! twice, without talking to each other. IOVAs are never reused; the space (hundreds of
//! GiB) outlasts any run of the driver.

use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::sys::{self, IommuInfo, IovaRange};
use crate::dma::{DmaAllocator, DmaError, DmaRegion, SharedMemory};

/// First IOVA handed out. Not 0, so a zeroed descriptor address is never valid DMA memory;
/// above 4 GiB, clear of the x86 MSI window at 0xFEE0_0000 that IOMMUs reserve.
pub(super) const IOVA_BASE: u64 = 0x1_0000_0000;
/// Upper end of the IOVA space used when the kernel reports no valid ranges: the narrowest
/// address width of Intel VT-d remapping hardware (39 bits, 3-level tables).
const DEFAULT_IOVA_LAST: u64 = (1 << 39) - 1;

const CURSOR_MAGIC: u64 = 0x6e65_7470_6f70_4956; // "netpopIV"
const CURSOR_MAGIC_OFFSET: usize = 0;
const CURSOR_NEXT_OFFSET: usize = 8;
const CURSOR_FILE_LEN: usize = 4096;

/// The shared IOVA bump pointer plus what the container's IOMMU accepts.
pub(super) struct IovaSpace {
    cursor: SharedMemory,
    /// Granule of every mapping: the larger of the CPU page and the IOMMU's smallest page.
    page: u64,
    ranges: Vec<IovaRange>,
}

impl fmt::Debug for IovaSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IovaSpace")
            .field("next", &format_args!("{:#x}", self.next_word().load(Ordering::Relaxed)))
            .field("page", &self.page)
            .field("ranges", &self.ranges)
            .finish()
    }
}

fn cpu_page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

impl IovaSpace {
    /// A fresh space (the process that opened the container).
    pub(super) fn create(iommu: &IommuInfo) -> io::Result<Self> {
        let cursor = SharedMemory::create("netpop-vfio-iova", CURSOR_FILE_LEN)?;
        let space = Self::with_cursor(cursor, iommu)?;
        space.next_word().store(IOVA_BASE, Ordering::Relaxed);
        space.magic_word().store(CURSOR_MAGIC, Ordering::Release);
        Ok(space)
    }

    /// The space of another process, from its cursor file.
    pub(super) fn from_fd(fd: OwnedFd, iommu: &IommuInfo) -> io::Result<Self> {
        let space = Self::with_cursor(SharedMemory::from_fd(fd)?, iommu)?;
        if space.magic_word().load(Ordering::Acquire) != CURSOR_MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a VFIO IOVA cursor"));
        }
        Ok(space)
    }

    fn with_cursor(cursor: SharedMemory, iommu: &IommuInfo) -> io::Result<Self> {
        if cursor.atomic_u64(CURSOR_NEXT_OFFSET).is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "IOVA cursor file too small"));
        }
        let mut ranges = iommu.ranges.clone();
        if ranges.is_empty() {
            ranges.push(IovaRange { start: 0, last: DEFAULT_IOVA_LAST });
        }
        Ok(IovaSpace { cursor, page: iommu.min_page(cpu_page_size()), ranges })
    }

    fn magic_word(&self) -> &std::sync::atomic::AtomicU64 {
        match self.cursor.atomic_u64(CURSOR_MAGIC_OFFSET) {
            Some(word) => word,
            None => unreachable!("the cursor file's length is checked when it is mapped"),
        }
    }

    fn next_word(&self) -> &std::sync::atomic::AtomicU64 {
        match self.cursor.atomic_u64(CURSOR_NEXT_OFFSET) {
            Some(word) => word,
            None => unreachable!("the cursor file's length is checked when it is mapped"),
        }
    }

    /// The shared cursor file (for handing to another process).
    pub(super) fn cursor(&self) -> &SharedMemory {
        &self.cursor
    }

    /// Reserves `len` bytes of I/O address space aligned to `align`; returns the start.
    fn reserve(&self, len: u64, align: u64) -> Result<u64, DmaError> {
        let next = self.next_word();
        let mut current = next.load(Ordering::Relaxed);
        loop {
            let Some(start) = place(current, len, align, &self.ranges) else {
                let last = self.ranges.last().map_or(0, |r| r.last);
                return Err(DmaError::OutOfMemory {
                    requested: usize::try_from(len).unwrap_or(usize::MAX),
                    available: usize::try_from(last.saturating_sub(current)).unwrap_or(0),
                });
            };
            // `place` checked that start + len does not overflow.
            match next.compare_exchange_weak(
                current,
                start + len,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(start),
                Err(now) => current = now,
            }
        }
    }
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// The first `align`-aligned start at or after `cursor` such that `start..start + len` lies
/// inside one of `ranges` (sorted, inclusive ends), or `None` when none is left. `align` is
/// a power of two and `len` is not zero.
pub(super) fn place(cursor: u64, len: u64, align: u64, ranges: &[IovaRange]) -> Option<u64> {
    ranges.iter().find_map(|range| {
        let start = align_up(cursor.max(range.start), align)?;
        // The exclusive end must fit too: it becomes the next cursor value.
        let end = start.checked_add(len)?;
        (end - 1 <= range.last).then_some(start)
    })
}

/// One region mapped for the device; undoes the IOMMU mapping, then the memory mapping,
/// when the last [`DmaRegion`] using it drops.
struct IommuMapping {
    memory: SharedMemory,
    iova: u64,
    container: Arc<OwnedFd>,
}

impl Drop for IommuMapping {
    fn drop(&mut self) {
        // The device must lose access before the memory goes back to the kernel (the
        // `memory` field is unmapped after this body runs).
        let mut unmap = sys::DmaUnmap {
            argsz: sys::argsz::<sys::DmaUnmap>(),
            flags: 0,
            iova: self.iova,
            size: self.memory.len() as u64,
        };
        // SAFETY: IOMMU_UNMAP_DMA takes a `DmaUnmap` with argsz set, which `unmap` is.
        // A failure leaves the pages pinned for the device (a leak, never a dangling DMA
        // target, since type1 holds its own page references); nothing better can be done
        // in a destructor.
        let _ =
            unsafe { sys::ioctl_ptr(self.container.as_raw_fd(), sys::IOMMU_UNMAP_DMA, &mut unmap) };
    }
}

/// A [`DmaAllocator`] whose regions the device reaches through the IOMMU of a VFIO
/// container. Obtained from `VfioDevice::dma`; clones share the container and the IOVA
/// space.
///
/// Memory is anonymous *shared* memory: a process that forks keeps DMA buffers the device
/// and both processes agree on, where private memory would be copied on write in the
/// parent while the IOMMU still points at the child's page.
#[derive(Clone, Debug)]
pub struct VfioDma {
    container: Arc<OwnedFd>,
    space: Arc<IovaSpace>,
}

impl VfioDma {
    pub(super) fn new(container: Arc<OwnedFd>, space: Arc<IovaSpace>) -> Self {
        VfioDma { container, space }
    }
}

impl DmaAllocator for VfioDma {
    fn allocate(&self, size: usize, align: usize) -> Result<DmaRegion, DmaError> {
        if size == 0 || !align.is_power_of_two() {
            return Err(DmaError::Unsupported(format!("size {size}, alignment {align}")));
        }
        let page = self.space.page;
        let too_big = || DmaError::Unsupported(format!("{size} bytes do not fit the IOVA space"));
        let len = align_up(size as u64, page).ok_or_else(too_big)?;
        let map_len = usize::try_from(len).map_err(|_| too_big())?;
        let iova = self.space.reserve(len, (align as u64).max(page))?;

        // SAFETY: an anonymous mapping at a kernel-chosen address replaces nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DmaError::Io(io::Error::last_os_error()));
        }
        let virt = NonNull::new(ptr.cast::<u8>()).ok_or(DmaError::Unsupported("null".into()))?;
        // SAFETY: the mapping was just created by mmap and is owned by the new value.
        let memory = unsafe { SharedMemory::from_raw_mapping(virt, map_len) };

        let mut map = sys::DmaMap {
            argsz: sys::argsz::<sys::DmaMap>(),
            flags: sys::DMA_MAP_FLAG_READ | sys::DMA_MAP_FLAG_WRITE,
            vaddr: virt.as_ptr() as u64,
            iova,
            size: len,
        };
        let container = self.container.as_raw_fd();
        // SAFETY: IOMMU_MAP_DMA takes a `DmaMap` with argsz set; `vaddr..vaddr + size` is
        // our mapping, which stays mapped until after the IOMMU mapping is removed
        // (`IommuMapping::drop`).
        let mapped = unsafe { sys::ioctl_ptr(container, sys::IOMMU_MAP_DMA, &mut map) };
        if let Err(e) = mapped {
            return Err(map_error(e, len, iova));
        }
        let mapping: Arc<dyn Any + Send + Sync> =
            Arc::new(IommuMapping { memory, iova, container: Arc::clone(&self.container) });
        // SAFETY: `virt..virt + size` lies in the mapping `mapping` owns, and the IOMMU sends
        // the device's accesses to `iova..iova + size` to the same pages until `mapping`
        // drops.
        Ok(unsafe { DmaRegion::from_parts(virt, iova, size, mapping) })
    }
}

/// Explains a failed `VFIO_IOMMU_MAP_DMA`.
fn map_error(e: io::Error, len: u64, iova: u64) -> DmaError {
    let what = format!("{len} bytes at IOVA {iova:#x}: {e}");
    DmaError::Iommu(match e.raw_os_error() {
        // type1 pins the pages and charges them to RLIMIT_MEMLOCK.
        Some(libc::ENOMEM) => format!(
            "{what}; the locked-memory limit is probably exhausted: raise it (`ulimit -l`, \
             LimitMEMLOCK= for services) or run with CAP_IPC_LOCK"
        ),
        Some(libc::EPERM) => format!("{what}; mapping DMA memory needs CAP_IPC_LOCK or root"),
        Some(libc::ENOSPC) => format!("{what}; the IOMMU has no room for more mappings"),
        _ => what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[IovaRange] = &[IovaRange { start: 0, last: u64::MAX }];

    #[test]
    fn placement_aligns_and_never_goes_backwards() {
        assert_eq!(place(IOVA_BASE, 4096, 4096, ALL), Some(IOVA_BASE));
        assert_eq!(place(IOVA_BASE + 1, 4096, 4096, ALL), Some(IOVA_BASE + 4096));
        assert_eq!(place(IOVA_BASE + 4096, 8192, 1 << 20, ALL), Some(IOVA_BASE + (1 << 20)));
    }

    #[test]
    fn placement_skips_holes_the_iommu_reserves() {
        // A hole where x86 IOMMUs keep the MSI window.
        let ranges = [
            IovaRange { start: 0, last: 0xFEDF_FFFF },
            IovaRange { start: 0xFEF0_0000, last: 0xFFFF_FFFF_FFFF },
        ];
        assert_eq!(place(0xFED0_0000, 0x10_0000, 4096, &ranges), Some(0xFED0_0000));
        assert_eq!(place(0xFED0_0000, 0x20_0000, 4096, &ranges), Some(0xFEF0_0000));
        assert_eq!(place(0xFEE0_0000, 4096, 4096, &ranges), Some(0xFEF0_0000));
    }

    #[test]
    fn placement_fails_at_the_end_of_the_space_without_overflow() {
        let ranges = [IovaRange { start: 0, last: (1 << 39) - 1 }];
        assert_eq!(place((1 << 39) - 4096, 4096, 4096, &ranges), Some((1 << 39) - 4096));
        assert_eq!(place((1 << 39) - 4096, 8192, 4096, &ranges), None);
        assert_eq!(place(u64::MAX - 10, 4096, 4096, ALL), None);
        assert_eq!(place(0, u64::MAX, 1, ALL), Some(0));
        assert_eq!(place(1, u64::MAX, 1, ALL), None);
    }

    fn info(ranges: Vec<IovaRange>) -> IommuInfo {
        IommuInfo { page_sizes: 0x1000, ranges }
    }

    #[test]
    fn reservations_are_disjoint_and_shared_through_the_cursor_file() {
        let space = IovaSpace::create(&info(vec![])).unwrap();
        let a = space.reserve(8192, 4096).unwrap();
        assert_eq!(a, IOVA_BASE);
        // Another process maps the same cursor file (here: reopened through /proc).
        let fd = space.cursor().raw_fd().unwrap();
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        let other = IovaSpace::from_fd(OwnedFd::from(reopened), &info(vec![])).unwrap();
        let b = other.reserve(4096, 4096).unwrap();
        let c = space.reserve(4096, 4096).unwrap();
        assert!(b >= a + 8192, "second process continues after the first's reservation");
        assert!(c >= b + 4096, "and the first sees the second's");
    }

    #[test]
    fn exhausted_space_is_out_of_memory() {
        let ranges = vec![IovaRange { start: 0, last: IOVA_BASE + 0x1FFF }];
        let space = IovaSpace::create(&info(ranges)).unwrap();
        space.reserve(0x2000, 4096).unwrap();
        assert!(matches!(space.reserve(4096, 4096), Err(DmaError::OutOfMemory { .. })));
    }

    #[test]
    fn a_file_that_is_not_a_cursor_is_refused() {
        let memory = SharedMemory::create("not-a-cursor", 4096).unwrap();
        let fd = memory.raw_fd().unwrap();
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        let err = IovaSpace::from_fd(OwnedFd::from(reopened), &info(vec![])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn allocation_on_a_non_vfio_container_fails_with_an_iommu_error_and_a_hint() {
        let space = Arc::new(IovaSpace::create(&info(vec![])).unwrap());
        let not_a_container = OwnedFd::from(std::fs::File::open("/proc/self/stat").unwrap());
        let dma = VfioDma::new(Arc::new(not_a_container), space);
        match dma.allocate(1000, 64) {
            Err(DmaError::Iommu(msg)) => assert!(msg.contains("IOVA 0x100000000"), "{msg}"),
            other => panic!("expected an IOMMU error, got {other:?}"),
        }
        assert!(matches!(dma.allocate(0, 64), Err(DmaError::Unsupported(_))));
        assert!(matches!(dma.allocate(64, 3), Err(DmaError::Unsupported(_))));
    }

    #[test]
    fn locked_memory_exhaustion_names_the_limit() {
        let err = map_error(io::Error::from_raw_os_error(libc::ENOMEM), 4096, IOVA_BASE);
        assert!(err.to_string().contains("ulimit -l"), "{err}");
    }
}
