//! Memory the NIC can reach by DMA, and the address the NIC uses for it.
//!
//! The driver needs, for every ring and packet buffer, a pointer it can write through and
//! the bus address it programs into descriptors and base registers (82599 datasheet
//! §7.1.9 / §7.2.3.2: descriptor rings and buffers are addressed by 64-bit physical
//! addresses). Two providers implement [`DmaAllocator`]:
//!
//! - [`HugepageDma`] for a real device: 2 MiB hugepages (physically contiguous, never
//!   swapped or moved) translated through `/proc/self/pagemap` (Linux
//!   `Documentation/admin-guide/mm/pagemap.rst`: bits 0–54 hold the page frame number, and
//!   they read as zero without `CAP_SYS_ADMIN`).
//! - [`SharedDmaWindow`] for the 82599 model: one shared memory file in which an offset,
//!   plus [`MODEL_IOVA_BASE`], acts as the physical address. Any process that maps the same
//!   file (the model engine, the control plane, each kernel instance) sees the same bytes at
//!   the same "physical" address, which is what lets a queue pair be attached from another
//!   process.
//! - `VfioDma` (in `ixgbe::vfio`) for a real device behind an IOMMU: ordinary memory mapped
//!   into the device's I/O address space with `VFIO_IOMMU_MAP_DMA`.

use std::any::Any;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why DMA memory could not be provided.
#[derive(Debug)]
#[non_exhaustive]
pub enum DmaError {
    /// No hugepages are configured (or all are in use); the message says how to add some.
    NoHugepages(String),
    /// Physical addresses are hidden from this process (not root / no `CAP_SYS_ADMIN`).
    NotPrivileged(String),
    /// The request cannot be met by this allocator (too large, bad alignment).
    Unsupported(String),
    /// The shared window has no room left.
    OutOfMemory {
        /// Bytes asked for.
        requested: usize,
        /// Bytes still free in the window.
        available: usize,
    },
    /// The IOMMU refused to map memory for the device (VFIO); the message says why and
    /// what to do.
    Iommu(String),
    /// A system call failed.
    Io(io::Error),
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::NoHugepages(msg) => write!(f, "no hugepages available: {msg}"),
            DmaError::NotPrivileged(msg) => write!(f, "physical addresses not readable: {msg}"),
            DmaError::Unsupported(msg) => write!(f, "unsupported DMA request: {msg}"),
            DmaError::OutOfMemory { requested, available } => {
                write!(f, "DMA window full: {requested} bytes requested, {available} free")
            }
            DmaError::Iommu(msg) => write!(f, "IOMMU mapping failed: {msg}"),
            DmaError::Io(e) => write!(f, "DMA memory system call failed: {e}"),
        }
    }
}

impl std::error::Error for DmaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DmaError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for DmaError {
    fn from(e: io::Error) -> Self {
        DmaError::Io(e)
    }
}

/// A region of DMA-able memory: a virtual pointer for the CPU and an I/O virtual address
/// (physical address, or model window address) for the device.
///
/// The region stays mapped as long as this value or any clone of its backing lives.
pub struct DmaRegion {
    virt: NonNull<u8>,
    iova: u64,
    len: usize,
    /// Whatever keeps the memory mapped and reachable by the device (a shared mapping, or
    /// an IOMMU mapping that is undone on drop).
    _backing: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the region is plain memory kept alive by an `Arc<SharedMemory>` (itself
// Send + Sync); the pointer is only dereferenced through methods whose callers uphold
// the aliasing rules, as with any shared-memory buffer.
unsafe impl Send for DmaRegion {}
// SAFETY: see `Send`; `&DmaRegion` exposes only the pointer, the address and the length.
unsafe impl Sync for DmaRegion {}

impl fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRegion")
            .field("virt", &self.virt)
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.len)
            .finish()
    }
}

impl DmaRegion {
    /// A region provided by an allocator outside this module.
    ///
    /// # Safety
    /// `virt..virt + len` must stay mapped, readable and writable, and the device must
    /// reach the same bytes at `iova..iova + len`, for as long as `backing` lives.
    pub(crate) unsafe fn from_parts(
        virt: NonNull<u8>,
        iova: u64,
        len: usize,
        backing: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        DmaRegion { virt, iova, len, _backing: backing }
    }

    /// CPU pointer to the first byte.
    pub fn virt(&self) -> *mut u8 {
        self.virt.as_ptr()
    }

    /// Device address of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A provider of DMA-able memory.
pub trait DmaAllocator: Send + Sync {
    /// Allocates `size` bytes aligned to `align` (a power of two) in device address space.
    fn allocate(&self, size: usize, align: usize) -> Result<DmaRegion, DmaError>;
}

/// A shared memory mapping (`MAP_SHARED`) of a file, usually a memfd, unmapped on drop.
///
/// Shared across processes by passing the file descriptor (fork, `SCM_RIGHTS`, or
/// `/proc/<pid>/fd/<n>`), then [`SharedMemory::from_fd`].
#[derive(Debug)]
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is process-wide memory; concurrent access goes through atomics or
// through the ownership rules of the types built on it.
unsafe impl Send for SharedMemory {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates an anonymous shared memory file (`memfd_create`) of `len` bytes, mapped.
    /// The descriptor is close-on-exec; see [`SharedMemory::make_inheritable`].
    pub fn create(name: &str, len: usize) -> io::Result<Self> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd);
        file.set_len(len as u64)?;
        Self::map(OwnedFd::from(file), len)
    }

    /// Maps an existing shared memory file (for example one inherited from the process that
    /// created it). `len` is taken from the file's size.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let file = File::from(fd);
        let len =
            usize::try_from(file.metadata()?.len()).map_err(|_| io::ErrorKind::InvalidData)?;
        Self::map(OwnedFd::from(file), len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty shared memory"));
        }
        // SAFETY: mapping a file we hold open; the kernel chooses the address, so no
        // existing mapping is replaced.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::Other)?;
        Ok(SharedMemory { ptr, len, fd: Some(fd) })
    }

    /// Wraps a mapping made elsewhere (hugepages, a sysfs BAR).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be a mapping created by `mmap` that nothing else unmaps; it is
    /// unmapped when the returned value is dropped.
    pub(crate) unsafe fn from_raw_mapping(ptr: NonNull<u8>, len: usize) -> Self {
        SharedMemory { ptr, len, fd: None }
    }

    /// First byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true for a successfully created mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing file descriptor, if the mapping has one.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Clears close-on-exec so a child started with `exec` inherits the descriptor and can
    /// map the same memory (pass the number in the environment or on the command line).
    pub fn make_inheritable(&self) -> io::Result<RawFd> {
        let fd = self.raw_fd().ok_or(io::ErrorKind::Unsupported)?;
        // SAFETY: F_SETFD on a descriptor we own; no memory is involved.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// The 32-bit word at byte `offset` as an atomic, or `None` when out of bounds or
    /// unaligned.
    pub(crate) fn atomic_u32(&self, offset: usize) -> Option<&std::sync::atomic::AtomicU32> {
        if offset % 4 != 0 || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds and 4-byte aligned (the mapping is page aligned); the memory is
        // shared and only ever accessed atomically or through volatile/byte copies, and
        // it lives as long as `self`.
        Some(unsafe {
            std::sync::atomic::AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast())
        })
    }

    /// The 64-bit word at byte `offset` as an atomic, or `None` when out of bounds or
    /// unaligned.
    pub(crate) fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        if offset % 8 != 0 || offset.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: as in `atomic_u32`, with 8-byte alignment checked above.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast()) })
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: we own this mapping (created by `map` or handed over through
        // `from_raw_mapping`) and nothing borrows it past our lifetime.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Device address of byte 0 of a model DMA window. Non-zero so that a zeroed descriptor
/// (address 0) is always outside the window and is caught by the model.
pub const MODEL_IOVA_BASE: u64 = 0x10_0000_0000;

const WINDOW_MAGIC: u64 = 0x6e65_7470_6f70_444d; // "netpopDM"
/// Bytes at the start of the window reserved for its header (magic, size, bump pointer).
const WINDOW_HEADER: usize = 4096;

/// The 82599 model's DMA window: a shared memory file whose offset `o` has the device
/// address `MODEL_IOVA_BASE + o`.
///
/// Allocation is a bump pointer kept in the window's header, so processes that map the
/// same window allocate disjoint regions without talking to each other. Regions are never
/// reused (the window lives as long as one model device).
#[derive(Clone, Debug)]
pub struct SharedDmaWindow {
    memory: Arc<SharedMemory>,
}

impl SharedDmaWindow {
    /// Creates a window of `len` bytes (rounded up to a page).
    pub fn create(len: usize) -> io::Result<Self> {
        let len = len.checked_add(WINDOW_HEADER + 4095).ok_or(io::ErrorKind::InvalidInput)? & !4095;
        let memory = SharedMemory::create("netpop-82599-dma", len)?;
        let window = SharedDmaWindow { memory: Arc::new(memory) };
        window.header(1).store(len as u64, Ordering::Relaxed);
        window.header(2).store(WINDOW_HEADER as u64, Ordering::Relaxed);
        window.header(0).store(WINDOW_MAGIC, Ordering::Release);
        Ok(window)
    }

    /// Maps a window created by another process.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let memory = SharedMemory::from_fd(fd)?;
        if memory.len() < WINDOW_HEADER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "DMA window too small"));
        }
        let window = SharedDmaWindow { memory: Arc::new(memory) };
        if window.header(0).load(Ordering::Acquire) != WINDOW_MAGIC
            || window.header(1).load(Ordering::Relaxed) != window.memory.len() as u64
        {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a model DMA window"));
        }
        Ok(window)
    }

    fn header(&self, word: usize) -> &AtomicU64 {
        // Header words 0..3 lie inside the first page, which every window has.
        match self.memory.atomic_u64(word * 8) {
            Some(a) => a,
            None => unreachable!("window header is inside the mapping"),
        }
    }

    /// The shared memory behind the window (for passing its descriptor to another process).
    pub fn memory(&self) -> &SharedMemory {
        &self.memory
    }

    /// Total size of the window in bytes.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether the window is empty (never true).
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }

    /// Translates a device address range to a CPU pointer, or `None` if any byte of
    /// `iova..iova+len` is outside the window. This is the model's bounds check for every
    /// address a descriptor or base register carries.
    pub fn translate(&self, iova: u64, len: usize) -> Option<*mut u8> {
        let offset = usize::try_from(iova.checked_sub(MODEL_IOVA_BASE)?).ok()?;
        if offset < WINDOW_HEADER || offset.checked_add(len)? > self.memory.len() {
            return None;
        }
        // SAFETY: `offset + len` is within the mapping, checked above.
        Some(unsafe { self.memory.as_ptr().add(offset) })
    }
}

impl DmaAllocator for SharedDmaWindow {
    fn allocate(&self, size: usize, align: usize) -> Result<DmaRegion, DmaError> {
        if !align.is_power_of_two() || size == 0 {
            return Err(DmaError::Unsupported(format!("size {size}, alignment {align}")));
        }
        let bump = self.header(2);
        let total = self.memory.len();
        let mut current = bump.load(Ordering::Relaxed);
        loop {
            let start = (current as usize).checked_add(align - 1).map(|v| v & !(align - 1));
            let end = start.and_then(|s| s.checked_add(size));
            let (start, end) = match (start, end) {
                (Some(s), Some(e)) if e <= total => (s, e),
                _ => {
                    return Err(DmaError::OutOfMemory {
                        requested: size,
                        available: total.saturating_sub(current as usize),
                    });
                }
            };
            match bump.compare_exchange_weak(
                current,
                end as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // SAFETY: `start < end <= total`, so the pointer is inside the mapping.
                    let ptr = unsafe { self.memory.as_ptr().add(start) };
                    let virt = NonNull::new(ptr).ok_or(DmaError::Unsupported("null".into()))?;
                    return Ok(DmaRegion {
                        virt,
                        iova: MODEL_IOVA_BASE + start as u64,
                        len: size,
                        _backing: Arc::clone(&self.memory) as _,
                    });
                }
                Err(now) => current = now,
            }
        }
    }
}

const HUGEPAGE_SIZE: usize = 2 * 1024 * 1024;

/// DMA memory from 2 MiB hugepages, for a real 82599 (the ixy approach).
///
/// A region never spans more than one hugepage, because only memory inside one hugepage is
/// known to be physically contiguous.
#[derive(Debug, Default)]
pub struct HugepageDma {
    _private: (),
}

impl HugepageDma {
    /// Checks that hugepages are configured and that physical addresses are readable, so
    /// that a misconfigured machine fails here with a clear message rather than at the first
    /// allocation.
    pub fn new() -> Result<Self, DmaError> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        Self::check_meminfo(&meminfo)?;
        Ok(HugepageDma { _private: () })
    }

    /// Parses `/proc/meminfo` text and fails with [`DmaError::NoHugepages`] when no
    /// hugepage is free.
    pub(crate) fn check_meminfo(meminfo: &str) -> Result<(), DmaError> {
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        match (field("HugePages_Total:"), field("HugePages_Free:")) {
            (Some(0), _) | (None, _) => Err(DmaError::NoHugepages(
                "HugePages_Total is 0; reserve some, e.g. \
                 `echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` (root)"
                    .into(),
            )),
            (Some(total), Some(0)) => Err(DmaError::NoHugepages(format!(
                "all {total} hugepages are in use (HugePages_Free is 0)"
            ))),
            _ => Ok(()),
        }
    }
}

/// Translates a virtual address of this process to a physical address through
/// `/proc/self/pagemap`.
pub fn virt_to_phys(virt: *const u8) -> Result<u64, DmaError> {
    use std::os::unix::fs::FileExt;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let addr = virt as u64;
    let file = File::open("/proc/self/pagemap").map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            DmaError::NotPrivileged("cannot open /proc/self/pagemap".into())
        } else {
            DmaError::Io(e)
        }
    })?;
    let mut entry = [0u8; 8];
    file.read_exact_at(&mut entry, addr / page_size * 8)?;
    let entry = u64::from_le_bytes(entry);
    let present = entry & (1 << 63) != 0;
    let pfn = entry & ((1 << 55) - 1);
    if !present {
        return Err(DmaError::Unsupported(format!("page at {addr:#x} is not present")));
    }
    if pfn == 0 {
        return Err(DmaError::NotPrivileged(
            "/proc/self/pagemap hides page frame numbers; run as root (CAP_SYS_ADMIN)".into(),
        ));
    }
    Ok(pfn * page_size + addr % page_size)
}

impl DmaAllocator for HugepageDma {
    fn allocate(&self, size: usize, align: usize) -> Result<DmaRegion, DmaError> {
        if size == 0 || size > HUGEPAGE_SIZE || !align.is_power_of_two() || align > HUGEPAGE_SIZE {
            return Err(DmaError::Unsupported(format!(
                "{size} bytes: a region must fit one 2 MiB hugepage"
            )));
        }
        // SAFETY: anonymous mapping at a kernel-chosen address; replaces nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HUGEPAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOMEM) => DmaError::NoHugepages(format!("mmap(MAP_HUGETLB): {err}")),
                _ => DmaError::Io(err),
            });
        }
        let virt = NonNull::new(ptr.cast::<u8>()).ok_or(DmaError::Unsupported("null".into()))?;
        // SAFETY: the mapping was just created by mmap and is owned by the new value.
        let backing = Arc::new(unsafe { SharedMemory::from_raw_mapping(virt, HUGEPAGE_SIZE) });
        // SAFETY: locking a mapping we own; hugepages are not swapped anyway, this also
        // keeps them from being migrated.
        if unsafe { libc::mlock(ptr, HUGEPAGE_SIZE) } != 0 {
            return Err(DmaError::Io(io::Error::last_os_error()));
        }
        let iova = virt_to_phys(virt.as_ptr())?;
        Ok(DmaRegion { virt, iova, len: size, _backing: backing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_allocations_are_disjoint_aligned_and_translate_back() {
        let window = SharedDmaWindow::create(64 * 1024).unwrap();
        let a = window.allocate(100, 128).unwrap();
        let b = window.allocate(4096, 4096).unwrap();
        assert_eq!(a.iova() % 128, 0);
        assert_eq!(b.iova() % 4096, 0);
        assert!(a.iova() + a.len() as u64 <= b.iova());
        assert_eq!(window.translate(b.iova(), 4096), Some(b.virt()));
        // SAFETY: `a` is a live region of 100 bytes.
        unsafe { a.virt().write(0xAB) };
        let seen = window.translate(a.iova(), 1).unwrap();
        // SAFETY: translate returned an in-window pointer to the same byte.
        assert_eq!(unsafe { seen.read() }, 0xAB);
    }

    #[test]
    fn window_rejects_addresses_outside_and_the_header() {
        let window = SharedDmaWindow::create(8192).unwrap();
        assert!(window.translate(0, 1).is_none());
        assert!(window.translate(MODEL_IOVA_BASE, 1).is_none(), "header is not DMA memory");
        let end = MODEL_IOVA_BASE + window.len() as u64;
        assert!(window.translate(end - 4, 4).is_some());
        assert!(window.translate(end - 4, 5).is_none());
        assert!(window.translate(u64::MAX, 2).is_none());
    }

    #[test]
    fn window_reports_exhaustion() {
        let window = SharedDmaWindow::create(8192).unwrap();
        window.allocate(4096, 64).unwrap();
        match window.allocate(8192, 64) {
            Err(DmaError::OutOfMemory { requested: 8192, .. }) => {}
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
    }

    #[test]
    fn window_is_shared_through_its_descriptor() {
        let window = SharedDmaWindow::create(8192).unwrap();
        let region = window.allocate(64, 64).unwrap();
        let fd = window.memory().raw_fd().unwrap();
        // Reopen the same memfd as another process would through /proc/<pid>/fd/<n>.
        let file = File::open(format!("/proc/self/fd/{fd}")).unwrap();
        let again = SharedDmaWindow::from_fd(OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .unwrap(),
        ))
        .unwrap();
        // SAFETY: live 64-byte region.
        unsafe { region.virt().add(3).write(7) };
        let p = again.translate(region.iova() + 3, 1).unwrap();
        // SAFETY: in-window pointer.
        assert_eq!(unsafe { p.read() }, 7);
        // Allocations continue after the other mapping's allocations.
        assert!(again.allocate(64, 64).unwrap().iova() > region.iova());
    }

    #[test]
    fn meminfo_without_hugepages_is_a_clear_error() {
        let text = "MemTotal: 100 kB\nHugePages_Total:       0\nHugePages_Free:        0\n";
        let err = HugepageDma::check_meminfo(text).unwrap_err();
        assert!(matches!(err, DmaError::NoHugepages(_)));
        assert!(err.to_string().contains("nr_hugepages"), "{err}");
        let busy = "HugePages_Total:       4\nHugePages_Free:        0\n";
        assert!(matches!(HugepageDma::check_meminfo(busy), Err(DmaError::NoHugepages(_))));
        let ok = "HugePages_Total:       4\nHugePages_Free:        2\n";
        assert!(HugepageDma::check_meminfo(ok).is_ok());
    }

    #[test]
    fn hugepage_allocation_on_this_machine_fails_or_yields_a_physical_address() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let configured = HugepageDma::check_meminfo(&meminfo).is_ok();
        match HugepageDma::new() {
            Err(DmaError::NoHugepages(_)) => assert!(!configured),
            Err(other) => panic!("unexpected error {other}"),
            Ok(dma) => {
                assert!(configured);
                match dma.allocate(4096, 64) {
                    Ok(region) => assert_ne!(region.iova(), 0),
                    Err(DmaError::NotPrivileged(_) | DmaError::NoHugepages(_)) => {}
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
        }
    }

    #[test]
    fn pagemap_translation_is_page_consistent_or_privileged_error() {
        let buf = vec![1u8; 8192];
        match (virt_to_phys(buf.as_ptr()), virt_to_phys(buf.as_ptr().wrapping_add(1))) {
            (Ok(a), Ok(b)) => assert_eq!(a + 1, b, "same page, consecutive bytes"),
            (Err(DmaError::NotPrivileged(_)), Err(DmaError::NotPrivileged(_))) => {}
            other => panic!("inconsistent translation {other:?}"),
        }
    }
}
