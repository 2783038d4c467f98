//! Shared memory between netpop processes: segments, rings, wake-ups and fd passing.
//!
//! Implements DESIGN.md "Shared memory and trust". A [`Segment`] is a sealed memfd
//! (memfd_create(2), fcntl(2) `F_ADD_SEALS`) mapped `MAP_SHARED` (mmap(2)) by the control
//! plane, the kernel instances and, for its own segment, one application. Everything in a
//! segment may be rewritten at any moment by a peer that is buggy or hostile, so:
//!
//! - references into a segment are handed out only for [`ShmSafe`] types (atomics only,
//!   valid for every bit pattern), after a bounds and alignment check;
//! - plain data crosses the boundary only by byte copy into a private [`Pod`] value, which
//!   the receiver validates before acting on it;
//! - ring indices are kept privately by their owner and every index read from the peer is
//!   checked ([`ShmError::Corrupt`]), so a scribbling peer breaks only its own rings;
//! - the memfd is sealed against shrinking, so a peer cannot make our mapping fault
//!   (SIGBUS) by truncating the file under us.
//!
//! The unsafe code and the rings' memory ordering are checked by Miri on the unit tests
//! (`MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test -p flowgroups --lib`;
//! isolation is off for proptest's RNG). Miri has no memfd, so under Miri a segment is
//! private anonymous memory and the tests that need a real fd are skipped.

pub mod byte_ring;
pub mod eventfd;
pub mod fdpass;
pub mod process;
pub mod ring;
pub mod sys;

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64};

use crossbeam_utils::CachePadded;

pub use byte_ring::{ByteRing, ByteRingReader, ByteRingWriter};
pub use eventfd::EventFd;
pub use fdpass::{recv_fds, send_fds};
pub use ring::{RingConsumer, RingHandle, RingHeader, RingLayout, RingProducer};

/// Marker for types that may be referenced in place inside memory shared with other,
/// untrusted processes.
///
/// # Safety
///
/// An implementor must be `#[repr(C)]` (or a primitive/atomic), contain no pointers or
/// references, be valid for every bit pattern (including all zeroes), and be mutated only
/// through atomic operations: another process may write any field at any time, and a
/// shared reference to it must stay sound regardless.
pub unsafe trait ShmSafe: Sync + Sized {}

// SAFETY: atomics are valid for every bit pattern, have no pointers, and all access to
// them goes through atomic instructions, so concurrent writes by a peer are not a data race.
unsafe impl ShmSafe for AtomicU8 {}
// SAFETY: as for AtomicU8.
unsafe impl ShmSafe for AtomicU16 {}
// SAFETY: as for AtomicU8.
unsafe impl ShmSafe for AtomicU32 {}
// SAFETY: as for AtomicU8.
unsafe impl ShmSafe for AtomicU64 {}
// SAFETY: as for AtomicU8.
unsafe impl ShmSafe for AtomicI32 {}
// SAFETY: as for AtomicU8.
unsafe impl ShmSafe for AtomicI64 {}
// SAFETY: an array of ShmSafe elements has no padding between them and inherits every
// property of its element type.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}
// SAFETY: CachePadded is `repr(C, align(..))` around one T; the padding after T is never
// read or written through the wrapper, so it adds no invalid bit pattern.
unsafe impl<T: ShmSafe> ShmSafe for CachePadded<T> {}

/// Plain old data: a value that may be copied byte for byte out of shared memory.
///
/// # Safety
///
/// An implementor must be `Copy`, `#[repr(C)]` (or a primitive), built from integers and
/// arrays of integers only, contain no padding bytes, and be valid for every bit pattern.
/// Values read from a peer are arbitrary: decode and validate them after copying.
pub unsafe trait Pod: Copy + 'static {}

macro_rules! pod_primitives {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive integer has no padding and every bit pattern is a valid value.
        unsafe impl Pod for $t {}
    )*};
}
pod_primitives!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

// SAFETY: an array of Pod has no padding between elements and every element bit pattern is
// valid, so every bit pattern of the array is too.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// Why a shared-memory operation failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum ShmError {
    /// A system call failed (memfd_create, ftruncate, mmap, fstat, fcntl).
    Io(io::Error),
    /// `offset..offset + len` is not inside the segment.
    OutOfBounds {
        /// Start of the requested range.
        offset: usize,
        /// Length of the requested range (saturated on overflow).
        len: usize,
        /// Length of the segment.
        segment_len: usize,
    },
    /// `offset` is not a multiple of the type's alignment.
    Misaligned {
        /// Requested offset.
        offset: usize,
        /// Alignment the type requires.
        align: usize,
    },
    /// The segment does not start with the expected magic number.
    BadMagic {
        /// The value found.
        found: u64,
    },
    /// The segment was laid out by a different layout version.
    VersionMismatch {
        /// Version in the segment header.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// The caller asked for an impossible layout (capacity not a power of two, zero-sized
    /// slots, too many instances ...). A local bug, not a peer's fault.
    BadLayout(&'static str),
    /// The segment's file can still be shrunk (no `F_SEAL_SHRINK`): a peer could truncate
    /// it and make every access fault, so it is refused.
    NotSealed,
    /// A peer wrote an impossible value (ring index, header field): its ring or segment is
    /// unusable from now on, but nothing was read or written out of bounds.
    Corrupt(&'static str),
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmError::Io(e) => write!(f, "shared memory system call failed: {e}"),
            ShmError::OutOfBounds { offset, len, segment_len } => {
                write!(f, "range {offset}+{len} lies outside the {segment_len}-byte shared segment")
            }
            ShmError::Misaligned { offset, align } => {
                write!(f, "offset {offset} is not {align}-byte aligned")
            }
            ShmError::BadMagic { found } => {
                write!(f, "not a netpop segment (magic {found:#018x})")
            }
            ShmError::VersionMismatch { found, expected } => {
                write!(f, "segment layout version {found}, this build understands {expected}")
            }
            ShmError::BadLayout(why) => write!(f, "invalid shared-memory layout: {why}"),
            ShmError::NotSealed => {
                write!(f, "segment fd is not sealed against shrinking (F_SEAL_SHRINK)")
            }
            ShmError::Corrupt(why) => write!(f, "peer corrupted shared memory: {why}"),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShmError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ShmError {
    fn from(e: io::Error) -> Self {
        ShmError::Io(e)
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two). `x + align - 1` must not
/// overflow; layouts call it only on sizes bounded far below `usize::MAX`.
pub const fn align_up(x: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (x + (align - 1)) & !(align - 1)
}

/// Like [`align_up`] (`align` a power of two), but `None` instead of overflowing: for
/// sizes computed from values a peer could have chosen.
pub const fn checked_align_up(x: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    match x.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// A shared-memory segment: a sealed memfd mapped `MAP_SHARED` into this process.
///
/// The mapping lives as long as the `Segment` (share it with `Arc`); it is unmapped on
/// drop. The memfd can be handed to other processes ([`Segment::fd`] with
/// [`send_fds`], or inheritance across `fork`), which map it with [`Segment::from_fd`].
pub struct Segment {
    /// Start of the mapping; page aligned, `len` bytes, readable and writable.
    base: NonNull<u8>,
    /// Length of the mapping, fixed for its lifetime (the memfd is sealed against resizing).
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory shared by design; `Segment` hands out only
// references to `ShmSafe` (atomic-only, Sync) types and byte copies whose exclusivity the
// caller guarantees by protocol, so moving or sharing a `Segment` between threads adds
// nothing beyond what sharing it between processes already requires.
unsafe impl Send for Segment {}
// SAFETY: see `Send` above.
unsafe impl Sync for Segment {}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

fn last_os_error() -> ShmError {
    ShmError::Io(io::Error::last_os_error())
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes backed by a new memfd named `name`
    /// (visible in `/proc/<pid>/fd` as `memfd:<name>`), close-on-exec, sealed against
    /// growing and shrinking.
    pub fn create(name: &str, len: usize) -> Result<Segment, ShmError> {
        if len == 0 {
            return Err(ShmError::BadLayout("segment length is zero"));
        }
        let cname = CString::new(name)
            .map_err(|_| ShmError::Io(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let fd = create_backing(&cname, len)?;
        Self::map(fd, len)
    }

    /// Maps a segment from a memfd received from (or inherited from) its creator. The
    /// length comes from `fstat`; the fd must be sealed against shrinking.
    pub fn from_fd(fd: OwnedFd) -> Result<Segment, ShmError> {
        if cfg!(miri) {
            return Err(ShmError::Io(io::Error::from(io::ErrorKind::Unsupported)));
        }
        // SAFETY: F_GET_SEALS takes no argument and only reads the fd's seal set.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(ShmError::NotSealed);
        }
        // SAFETY: `libc::stat` is plain integers, for which all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable `struct stat`; fstat writes only into it.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(last_os_error());
        }
        let len = usize::try_from(st.st_size)
            .ok()
            .filter(|&l| l > 0 && l <= isize::MAX as usize)
            .ok_or(ShmError::BadLayout("segment file is empty or too large"))?;
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Segment, ShmError> {
        let base = map_backing(&fd, len)?;
        Ok(Segment { base, len, fd })
    }

    /// The memfd, to pass to another process (duplicate it with `try_clone_to_owned`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Length of the segment in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a segment has at least one byte. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks that `offset..offset + len` lies in the segment and that `offset` is a
    /// multiple of `align`; returns the address of `offset`.
    fn checked_ptr(&self, offset: usize, len: usize, align: usize) -> Result<*mut u8, ShmError> {
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.len) {
            return Err(ShmError::OutOfBounds { offset, len, segment_len: self.len });
        }
        // The base is page aligned, so an aligned offset gives an aligned address.
        if offset % align != 0 {
            return Err(ShmError::Misaligned { offset, align });
        }
        // SAFETY: `offset + len <= self.len`, so the result stays inside the mapping (or one
        // past its end when len == 0).
        Ok(unsafe { self.base.as_ptr().add(offset) })
    }

    /// A reference to the `T` at `offset`, after bounds and alignment checks.
    pub fn get<T: ShmSafe>(&self, offset: usize) -> Result<&T, ShmError> {
        let ptr = self.checked_ptr(offset, size_of::<T>(), align_of::<T>())?;
        // SAFETY: the range is inside the mapping, which outlives `&self`; the address is
        // aligned for T; T: ShmSafe is valid for any bytes a peer may have written and is
        // only mutated atomically, so a shared reference is sound.
        Ok(unsafe { &*ptr.cast::<T>() })
    }

    /// A slice of `count` `T`s starting at `offset`, after bounds and alignment checks.
    pub fn get_slice<T: ShmSafe>(&self, offset: usize, count: usize) -> Result<&[T], ShmError> {
        let len = count.checked_mul(size_of::<T>()).ok_or(ShmError::OutOfBounds {
            offset,
            len: usize::MAX,
            segment_len: self.len,
        })?;
        let ptr = self.checked_ptr(offset, len, align_of::<T>())?;
        // SAFETY: as in `get`, for `count` contiguous elements inside the mapping.
        Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<T>(), count) })
    }

    /// Copies `dst.len()` bytes at `offset` out of the segment.
    ///
    /// # Safety
    ///
    /// The caller must own the range by protocol (e.g. a ring slot between the peer's
    /// publish and our release): no process may write it during the copy. A peer that
    /// breaks the protocol can only make the copied bytes garbage, which the caller must
    /// validate anyway.
    pub unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) -> Result<(), ShmError> {
        let src = self.checked_ptr(offset, dst.len(), 1)?;
        // SAFETY: the source range is inside the mapping (checked); it cannot overlap `dst`,
        // a Rust slice borrowed mutably; no concurrent writer by the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the segment at `offset`.
    ///
    /// # Safety
    ///
    /// The caller must own the range by protocol: no process may read or write it during
    /// the copy, and no reference into it may be live.
    pub unsafe fn copy_in(&self, offset: usize, src: &[u8]) -> Result<(), ShmError> {
        let dst = self.checked_ptr(offset, src.len(), 1)?;
        // SAFETY: the destination is inside the mapping (checked) and cannot overlap `src`
        // (a shared borrow cannot point into a range the caller owns exclusively).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    /// Copies the `T` at `offset` out of the segment (bounds checked; any alignment).
    ///
    /// # Safety
    ///
    /// As for [`Segment::copy_out`].
    pub unsafe fn read<T: Pod>(&self, offset: usize) -> Result<T, ShmError> {
        let src = self.checked_ptr(offset, size_of::<T>(), 1)?;
        // SAFETY: the range is inside the mapping; T: Pod is valid for any bytes; an
        // unaligned read needs no alignment; exclusivity per the caller's contract.
        Ok(unsafe { src.cast::<T>().read_unaligned() })
    }

    /// Copies `value` into the segment at `offset` (bounds checked; any alignment).
    ///
    /// # Safety
    ///
    /// As for [`Segment::copy_in`].
    pub unsafe fn write<T: Pod>(&self, offset: usize, value: &T) -> Result<(), ShmError> {
        let dst = self.checked_ptr(offset, size_of::<T>(), 1)?;
        // SAFETY: the range is inside the mapping; exclusivity per the caller's contract.
        unsafe { dst.cast::<T>().write_unaligned(*value) };
        Ok(())
    }

    /// Address of `offset`, for ring attach code that has already bounds-checked a whole
    /// region and keeps `Arc<Segment>` alive while it uses the pointer.
    pub(crate) fn region_ptr(&self, offset: usize, len: usize) -> Result<NonNull<u8>, ShmError> {
        let ptr = self.checked_ptr(offset, len, 1)?;
        NonNull::new(ptr).ok_or(ShmError::Corrupt("null mapping"))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `map_backing`, and
        // no reference into it outlives `self` (they all borrow `self` or hold an Arc).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(not(miri))]
fn create_backing(name: &CString, len: usize) -> Result<OwnedFd, ShmError> {
    let file_len = libc::off_t::try_from(len).map_err(|_| ShmError::BadLayout("too large"))?;
    // SAFETY: `name` is a valid NUL-terminated string; the flags are plain constants.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(last_os_error());
    }
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own memfd; a new memfd reads as zeroes up to `len`.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), file_len) } != 0 {
        return Err(last_os_error());
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS takes an int seal mask and only changes the fd's seal set.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(last_os_error());
    }
    Ok(fd)
}

#[cfg(not(miri))]
fn map_backing(fd: &OwnedFd, len: usize) -> Result<NonNull<u8>, ShmError> {
    // SAFETY: a fresh mapping chosen by the kernel (null hint) cannot alias any Rust
    // object; `fd` is a memfd at least `len` bytes long and sealed against shrinking, so
    // every byte of the mapping stays backed.
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
        return Err(last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or(ShmError::Corrupt("mmap returned null"))
}

// Miri implements neither memfd_create nor file-backed mmap. Under Miri a segment is
// anonymous private memory plus an eventfd standing in for the memfd, which is enough to
// check the rings' unsafe code and memory ordering within one process.
#[cfg(miri)]
fn create_backing(_name: &CString, _len: usize) -> Result<OwnedFd, ShmError> {
    // SAFETY: plain eventfd creation; the result is checked below.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(last_os_error());
    }
    // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(miri)]
fn map_backing(_fd: &OwnedFd, len: usize) -> Result<NonNull<u8>, ShmError> {
    // SAFETY: a fresh anonymous mapping cannot alias any Rust object.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or(ShmError::Corrupt("mmap returned null"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn create_is_zeroed_and_sized() {
        let seg = Segment::create("t-zero", 10_000).unwrap();
        assert_eq!(seg.len(), 10_000);
        let words = seg.get_slice::<AtomicU64>(0, 10_000 / 8).unwrap();
        assert!(words.iter().all(|w| w.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn zero_length_and_bad_name_are_errors() {
        assert!(matches!(Segment::create("t", 0), Err(ShmError::BadLayout(_))));
        assert!(matches!(Segment::create("a\0b", 64), Err(ShmError::Io(_))));
    }

    #[test]
    fn get_checks_bounds_and_alignment() {
        let seg = Segment::create("t-bounds", 4096).unwrap();
        assert!(seg.get::<AtomicU64>(4088).is_ok());
        assert!(matches!(
            seg.get::<AtomicU64>(4090),
            Err(ShmError::OutOfBounds { offset: 4090, len: 8, segment_len: 4096 })
        ));
        assert!(matches!(seg.get::<AtomicU64>(4096), Err(ShmError::OutOfBounds { .. })));
        assert!(matches!(seg.get::<AtomicU64>(usize::MAX - 2), Err(ShmError::OutOfBounds { .. })));
        assert!(matches!(
            seg.get::<AtomicU64>(12),
            Err(ShmError::Misaligned { offset: 12, align: 8 })
        ));
        assert!(seg.get::<AtomicU32>(12).is_ok());
    }

    #[test]
    fn get_slice_checks_length_overflow() {
        let seg = Segment::create("t-slice", 4096).unwrap();
        assert_eq!(seg.get_slice::<AtomicU32>(0, 1024).unwrap().len(), 1024);
        assert!(matches!(seg.get_slice::<AtomicU32>(4, 1024), Err(ShmError::OutOfBounds { .. })));
        assert!(matches!(
            seg.get_slice::<AtomicU64>(0, usize::MAX / 4),
            Err(ShmError::OutOfBounds { .. })
        ));
        assert!(seg.get_slice::<AtomicU64>(4096, 0).unwrap().is_empty());
    }

    #[test]
    fn references_see_each_others_writes() {
        let seg = Segment::create("t-alias", 4096).unwrap();
        seg.get::<AtomicU32>(64).unwrap().store(0xdead_beef, Ordering::Relaxed);
        let mut bytes = [0u8; 4];
        // SAFETY: single-threaded test; nothing else touches the segment.
        unsafe { seg.copy_out(64, &mut bytes).unwrap() };
        assert_eq!(u32::from_ne_bytes(bytes), 0xdead_beef);
    }

    #[test]
    fn copy_in_out_round_trip_and_bounds() {
        let seg = Segment::create("t-copy", 4096).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        let mut back = vec![0u8; 100];
        // SAFETY: single-threaded test; nothing else touches the segment.
        unsafe {
            seg.copy_in(3, &data).unwrap();
            seg.copy_out(3, &mut back).unwrap();
            assert!(matches!(seg.copy_in(4000, &data), Err(ShmError::OutOfBounds { .. })));
            assert!(matches!(seg.copy_out(4000, &mut back), Err(ShmError::OutOfBounds { .. })));
            seg.write(4087, &0x0102_0304_0506_0708u64).unwrap();
            assert_eq!(seg.read::<u64>(4087).unwrap(), 0x0102_0304_0506_0708);
            assert!(matches!(seg.read::<u64>(4089), Err(ShmError::OutOfBounds { .. })));
        }
        assert_eq!(back, data);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no memfd")]
    fn from_fd_maps_the_same_memory() {
        let seg = Segment::create("t-share", 8192).unwrap();
        let other = Segment::from_fd(seg.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(other.len(), 8192);
        seg.get::<AtomicU64>(4096).unwrap().store(77, Ordering::Release);
        assert_eq!(other.get::<AtomicU64>(4096).unwrap().load(Ordering::Acquire), 77);
        drop(seg);
        // The mapping of `other` survives the creator's unmapping.
        assert_eq!(other.get::<AtomicU64>(4096).unwrap().load(Ordering::Acquire), 77);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no memfd")]
    fn from_fd_refuses_a_shrinkable_file() {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        assert!(matches!(Segment::from_fd(OwnedFd::from(file)), Err(ShmError::NotSealed)));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no memfd")]
    fn created_segment_cannot_be_truncated() {
        let seg = Segment::create("t-seal", 4096).unwrap();
        // SAFETY: ftruncate on a descriptor we own; the call is expected to fail.
        let rc = unsafe { libc::ftruncate(seg.fd().as_raw_fd(), 0) };
        assert_ne!(rc, 0, "a sealed memfd must refuse to shrink");
        assert_eq!(seg.get::<AtomicU64>(4088).unwrap().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn align_up_rounds_to_power_of_two() {
        assert_eq!(align_up(0, 64), 0);
        assert_eq!(align_up(1, 64), 64);
        assert_eq!(align_up(64, 64), 64);
        assert_eq!(align_up(65, 128), 128);
        assert_eq!(checked_align_up(usize::MAX - 3, 64), None);
    }

    #[test]
    fn errors_display_their_cause() {
        let e = ShmError::OutOfBounds { offset: 10, len: 8, segment_len: 12 };
        assert!(e.to_string().contains("10+8"));
        assert!(ShmError::Corrupt("tail ran ahead").to_string().contains("tail ran ahead"));
    }
}
