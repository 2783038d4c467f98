//! The kernel side of VFIO as `<linux/vfio.h>` defines it (Linux
//! `Documentation/driver-api/vfio.rst`): request numbers, the argument structures with their
//! C layout checked at compile time, thin ioctl wrappers, and bounds-checked readers for the
//! "INFO" replies and their capability chains.
//!
//! Replies are read from byte buffers by field offset rather than by casting, so a reply
//! that is shorter than expected, or a capability chain that points outside the buffer or
//! loops, yields `None` instead of an out-of-bounds read.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::RawFd;

/// The only VFIO API version there has ever been (`VFIO_API_VERSION`).
pub(super) const API_VERSION: i32 = 0;
/// `VFIO_TYPE1_IOMMU` extension / IOMMU model.
pub(super) const TYPE1_IOMMU: u32 = 1;
/// `VFIO_TYPE1v2_IOMMU`: Type1 with stricter unmap semantics; preferred when offered.
pub(super) const TYPE1V2_IOMMU: u32 = 3;

const VFIO_TYPE: u32 = b';' as u32;
const VFIO_BASE: u32 = 100;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`. VFIO deliberately encodes neither a direction nor a
/// size in its request numbers: every structure carries its own size in `argsz`.
const fn request(n: u32) -> u32 {
    (VFIO_TYPE << 8) | (VFIO_BASE + n)
}

pub(super) const GET_API_VERSION: u32 = request(0);
pub(super) const CHECK_EXTENSION: u32 = request(1);
pub(super) const SET_IOMMU: u32 = request(2);
pub(super) const GROUP_GET_STATUS: u32 = request(3);
pub(super) const GROUP_SET_CONTAINER: u32 = request(4);
pub(super) const GROUP_GET_DEVICE_FD: u32 = request(6);
pub(super) const DEVICE_GET_INFO: u32 = request(7);
pub(super) const DEVICE_GET_REGION_INFO: u32 = request(8);
pub(super) const IOMMU_GET_INFO: u32 = request(12);
pub(super) const IOMMU_MAP_DMA: u32 = request(13);
pub(super) const IOMMU_UNMAP_DMA: u32 = request(14);

// The header spells VFIO_GET_API_VERSION as _IO(';', 100): type 0x3B, number 0x64.
const _: () = assert!(GET_API_VERSION == 0x3B64 && IOMMU_UNMAP_DMA == 0x3B72);

pub(super) const GROUP_FLAGS_VIABLE: u32 = 1 << 0;
pub(super) const GROUP_FLAGS_CONTAINER_SET: u32 = 1 << 1;
pub(super) const DEVICE_FLAGS_PCI: u32 = 1 << 1;
pub(super) const REGION_FLAG_READ: u32 = 1 << 0;
pub(super) const REGION_FLAG_WRITE: u32 = 1 << 1;
pub(super) const REGION_FLAG_MMAP: u32 = 1 << 2;
pub(super) const REGION_FLAG_CAPS: u32 = 1 << 3;
pub(super) const REGION_CAP_SPARSE_MMAP: u16 = 1;
pub(super) const IOMMU_INFO_PGSIZES: u32 = 1 << 0;
pub(super) const IOMMU_INFO_CAPS: u32 = 1 << 1;
pub(super) const IOMMU_CAP_IOVA_RANGE: u16 = 1;
pub(super) const DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub(super) const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// `VFIO_PCI_BAR0_REGION_INDEX`.
pub(super) const PCI_BAR0_REGION_INDEX: u32 = 0;
/// `VFIO_PCI_CONFIG_REGION_INDEX` (after BAR0–5 and the ROM).
pub(super) const PCI_CONFIG_REGION_INDEX: u32 = 7;

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct GroupStatus {
    pub(super) argsz: u32,
    pub(super) flags: u32,
}

/// `struct vfio_device_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DeviceInfo {
    pub(super) argsz: u32,
    pub(super) flags: u32,
    pub(super) num_regions: u32,
    pub(super) num_irqs: u32,
    pub(super) cap_offset: u32,
}

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RegionInfo {
    pub(super) argsz: u32,
    pub(super) flags: u32,
    pub(super) index: u32,
    pub(super) cap_offset: u32,
    pub(super) size: u64,
    pub(super) offset: u64,
}

/// `struct vfio_iommu_type1_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IommuType1Info {
    pub(super) argsz: u32,
    pub(super) flags: u32,
    pub(super) iova_pgsizes: u64,
    pub(super) cap_offset: u32,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DmaMap {
    pub(super) argsz: u32,
    pub(super) flags: u32,
    pub(super) vaddr: u64,
    pub(super) iova: u64,
    pub(super) size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap` (without the trailing flexible array, which only
/// the dirty-bitmap flag uses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DmaUnmap {
    pub(super) argsz: u32,
    pub(super) flags: u32,
    pub(super) iova: u64,
    pub(super) size: u64,
}

/// `struct vfio_info_cap_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CapHeader {
    pub(super) id: u16,
    pub(super) version: u16,
    pub(super) next: u32,
}

/// The fixed part of `struct vfio_iommu_type1_info_cap_iova_range` and of
/// `struct vfio_region_info_cap_sparse_mmap`: header, entry count, reserved word; the
/// 16-byte entries (`vfio_iova_range`, `vfio_region_sparse_mmap_area`) follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CapWithEntries {
    pub(super) header: CapHeader,
    pub(super) count: u32,
    pub(super) reserved: u32,
}

/// Length of one `vfio_iova_range` / `vfio_region_sparse_mmap_area` (two `__u64`).
pub(super) const CAP_ENTRY_LEN: usize = 16;

// Layouts as in <linux/vfio.h> on 64-bit Linux (`__u64` is 8-byte aligned, so
// `vfio_iommu_type1_info` ends in 4 bytes of padding).
const _: () = {
    assert!(size_of::<GroupStatus>() == 8);
    assert!(size_of::<DeviceInfo>() == 20);
    assert!(offset_of!(DeviceInfo, num_regions) == 8);
    assert!(offset_of!(DeviceInfo, cap_offset) == 16);
    assert!(size_of::<RegionInfo>() == 32);
    assert!(offset_of!(RegionInfo, index) == 8);
    assert!(offset_of!(RegionInfo, cap_offset) == 12);
    assert!(offset_of!(RegionInfo, size) == 16);
    assert!(offset_of!(RegionInfo, offset) == 24);
    assert!(offset_of!(IommuType1Info, iova_pgsizes) == 8);
    assert!(offset_of!(IommuType1Info, cap_offset) == 16);
    assert!(size_of::<DmaMap>() == 32);
    assert!(offset_of!(DmaMap, vaddr) == 8);
    assert!(offset_of!(DmaMap, iova) == 16);
    assert!(offset_of!(DmaMap, size) == 24);
    assert!(size_of::<DmaUnmap>() == 24);
    assert!(offset_of!(DmaUnmap, iova) == 8);
    assert!(size_of::<CapHeader>() == 8);
    assert!(offset_of!(CapHeader, next) == 4);
    assert!(size_of::<CapWithEntries>() == 16);
    assert!(offset_of!(CapWithEntries, count) == 8);
};
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<IommuType1Info>() == 24);

/// `size_of::<T>()` as the `argsz` VFIO expects (all structures here are a few dozen bytes).
pub(super) const fn argsz<T>() -> u32 {
    size_of::<T>() as u32
}

/// Runs a VFIO ioctl whose argument is a plain integer (or none).
pub(super) fn ioctl_value(fd: RawFd, request: u32, value: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: the request numbers above are `_IO(';', 100..)`, which the kernel's ioctl
    // registry (Documentation/userspace-api/ioctl/ioctl-number.rst) reserves for VFIO; the
    // ones passed here read their argument as an integer, never as a pointer, and any other
    // file answers them with ENOTTY. No memory of ours is involved.
    let ret = unsafe { libc::ioctl(fd, request as _, value) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Runs a VFIO ioctl whose argument points at `arg`.
///
/// # Safety
/// `request` must be one of the VFIO requests above, and `arg` valid for every access that
/// request makes through it: for the structures here, a `T` whose `argsz` field is at most
/// the length of the buffer behind `arg` (the kernel touches no more than `argsz` bytes);
/// for `GROUP_GET_DEVICE_FD`, a NUL-terminated string; for `GROUP_SET_CONTAINER`, an int.
pub(super) unsafe fn ioctl_ptr<T>(fd: RawFd, request: u32, arg: *mut T) -> io::Result<i32> {
    // SAFETY: the caller guarantees `arg` is valid for the access `request` makes; the
    // request numbers are VFIO's own (see `ioctl_value`), so other files reject them.
    let ret = unsafe { libc::ioctl(fd, request as _, arg) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Largest INFO reply this driver accepts; real replies are a few hundred bytes.
const MAX_INFO_LEN: usize = 64 * 1024;

/// Runs an INFO ioctl (`VFIO_DEVICE_GET_REGION_INFO`, `VFIO_IOMMU_GET_INFO`) whose reply
/// may continue with a capability chain, and returns the whole reply as bytes.
///
/// vfio.h: a caller whose buffer is too small for the chain gets its fixed structure filled
/// in and `argsz` raised to the size needed, so the call is repeated with a buffer of that
/// size.
///
/// # Safety
/// `request` must take a `T` whose first field is `argsz: u32`; `query` must have `argsz`
/// set to `size_of::<T>()` and its input fields (such as a region index) filled in.
pub(super) unsafe fn info_with_caps<T: Copy>(
    fd: RawFd,
    request: u32,
    query: T,
) -> io::Result<Vec<u8>> {
    let fixed = size_of::<T>();
    // u64 words keep the buffer aligned for the structure's 64-bit fields.
    let mut words = vec![0u64; fixed.div_ceil(8)];
    for _attempt in 0..2 {
        let capacity = words.len() * 8;
        // SAFETY: `words` holds at least `size_of::<T>()` bytes and is 8-byte aligned, so
        // a `T` (alignment at most 8) may be written at its start.
        unsafe { words.as_mut_ptr().cast::<T>().write(query) };
        let len = u32::try_from(capacity).map_err(|_| io::ErrorKind::InvalidData)?;
        // The caller guarantees `argsz` is T's first field; set it to the buffer's length.
        if let Some(first) = words.first_mut() {
            let mut bytes = first.to_ne_bytes();
            bytes[..4].copy_from_slice(&len.to_ne_bytes());
            *first = u64::from_ne_bytes(bytes);
        }
        // SAFETY: the buffer starts with a `T` whose `argsz` is the buffer's full length,
        // as `ioctl_ptr` requires; the caller guarantees `request` takes a `T`.
        unsafe { ioctl_ptr(fd, request, words.as_mut_ptr().cast::<T>()) }?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let needed = read_u32(&bytes, 0).map_or(0, |n| n as usize);
        if needed <= capacity {
            return Ok(bytes);
        }
        if needed > MAX_INFO_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("VFIO asks for a {needed}-byte INFO buffer"),
            ));
        }
        words = vec![0u64; needed.div_ceil(8)];
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "VFIO INFO reply keeps growing"))
}

pub(super) fn read_u16(buf: &[u8], offset: usize) -> Option<u16> {
    let bytes = buf.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

pub(super) fn read_u32(buf: &[u8], offset: usize) -> Option<u32> {
    let bytes = buf.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

pub(super) fn read_u64(buf: &[u8], offset: usize) -> Option<u64> {
    let bytes = buf.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// A chain longer than this is treated as corrupt (the kernel defines a handful of ids).
const MAX_CAPABILITIES: usize = 64;

/// Offset of the first capability with `id` in the chain that starts at `first` (offsets
/// are relative to the start of the reply; `next == 0` ends the chain).
pub(super) fn find_capability(reply: &[u8], first: u32, id: u16) -> Option<usize> {
    let mut offset = usize::try_from(first).ok()?;
    for _ in 0..MAX_CAPABILITIES {
        if offset == 0 {
            return None;
        }
        if read_u16(reply, offset + offset_of!(CapHeader, id))? == id {
            return Some(offset);
        }
        offset = usize::try_from(read_u32(reply, offset + offset_of!(CapHeader, next))?).ok()?;
    }
    None
}

/// The `(u64, u64)` entries of a counted capability (IOVA ranges, sparse mmap areas) at
/// `offset`, or `None` when the capability does not fit in the reply.
fn capability_entries(reply: &[u8], offset: usize) -> Option<Vec<(u64, u64)>> {
    let count = read_u32(reply, offset + offset_of!(CapWithEntries, count))? as usize;
    let first = offset + size_of::<CapWithEntries>();
    (0..count)
        .map(|i| {
            let entry = first.checked_add(i.checked_mul(CAP_ENTRY_LEN)?)?;
            Some((read_u64(reply, entry)?, read_u64(reply, entry + 8)?))
        })
        .collect()
}

/// `struct vfio_region_info` read from the start of a reply.
pub(super) fn parse_region_info(reply: &[u8]) -> Option<RegionInfo> {
    Some(RegionInfo {
        argsz: read_u32(reply, offset_of!(RegionInfo, argsz))?,
        flags: read_u32(reply, offset_of!(RegionInfo, flags))?,
        index: read_u32(reply, offset_of!(RegionInfo, index))?,
        cap_offset: read_u32(reply, offset_of!(RegionInfo, cap_offset))?,
        size: read_u64(reply, offset_of!(RegionInfo, size))?,
        offset: read_u64(reply, offset_of!(RegionInfo, offset))?,
    })
}

/// The areas of a region that may be mapped, as `(offset within the region, length)`:
/// the sparse-mmap capability's list when the region has one (vfio.h: mapping outside
/// those areas may fail or misbehave, e.g. over an MSI-X table), else the whole region.
/// `None` when the region cannot be mapped at all or the reply is malformed.
pub(super) fn mappable_areas(reply: &[u8]) -> Option<Vec<(u64, u64)>> {
    let info = parse_region_info(reply)?;
    if info.flags & REGION_FLAG_MMAP == 0 {
        return None;
    }
    if info.flags & REGION_FLAG_CAPS != 0 {
        if let Some(cap) = find_capability(reply, info.cap_offset, REGION_CAP_SPARSE_MMAP) {
            return capability_entries(reply, cap);
        }
    }
    Some(vec![(0, info.size)])
}

/// One inclusive range of I/O virtual addresses the IOMMU accepts (`struct vfio_iova_range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IovaRange {
    pub(super) start: u64,
    /// Last valid address (inclusive, as the kernel reports it).
    pub(super) last: u64,
}

/// What `VFIO_IOMMU_GET_INFO` says about the container's IOMMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IommuInfo {
    /// Bitmap of the page sizes the IOMMU maps (0 when not reported).
    pub(super) page_sizes: u64,
    /// Valid IOVA ranges, sorted; empty when the kernel predates the IOVA-range capability.
    pub(super) ranges: Vec<IovaRange>,
}

impl IommuInfo {
    /// The smallest page the IOMMU maps, at least `floor` (the CPU page size).
    pub(super) fn min_page(&self, floor: u64) -> u64 {
        match self.page_sizes {
            0 => floor,
            sizes => (1u64 << sizes.trailing_zeros()).max(floor),
        }
    }
}

/// Reads a `VFIO_IOMMU_GET_INFO` reply; `None` when it is shorter than the fixed structure.
/// A missing or malformed IOVA-range capability leaves `ranges` empty.
pub(super) fn parse_iommu_info(reply: &[u8]) -> Option<IommuInfo> {
    let flags = read_u32(reply, offset_of!(IommuType1Info, flags))?;
    let page_sizes = if flags & IOMMU_INFO_PGSIZES != 0 {
        read_u64(reply, offset_of!(IommuType1Info, iova_pgsizes))?
    } else {
        0
    };
    let mut ranges = Vec::new();
    if flags & IOMMU_INFO_CAPS != 0 {
        let first = read_u32(reply, offset_of!(IommuType1Info, cap_offset)).unwrap_or(0);
        if let Some(cap) = find_capability(reply, first, IOMMU_CAP_IOVA_RANGE) {
            ranges = capability_entries(reply, cap)
                .unwrap_or_default()
                .into_iter()
                .filter(|&(start, last)| start <= last)
                .map(|(start, last)| IovaRange { start, last })
                .collect();
        }
    }
    ranges.sort_by_key(|r| r.start);
    Some(IommuInfo { page_sizes, ranges })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Builds a reply buffer: a fixed structure's bytes followed by capabilities, each
    /// `(id, entries)` with a counted list of 16-byte entries, chained in order.
    pub(in super::super) fn reply_with_caps(
        fixed: &[u8],
        cap_offset_field: usize,
        caps: &[(u16, &[(u64, u64)])],
    ) -> Vec<u8> {
        let mut buf = fixed.to_vec();
        let mut previous_next: Option<usize> = None;
        for &(id, entries) in caps {
            let at = buf.len();
            let link = previous_next.unwrap_or(cap_offset_field);
            buf[link..link + 4].copy_from_slice(&(at as u32).to_ne_bytes());
            buf.extend_from_slice(&id.to_ne_bytes());
            buf.extend_from_slice(&1u16.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            for &(a, b) in entries {
                buf.extend_from_slice(&a.to_ne_bytes());
                buf.extend_from_slice(&b.to_ne_bytes());
            }
            previous_next = Some(at + 4);
        }
        let len = buf.len() as u32;
        buf[0..4].copy_from_slice(&len.to_ne_bytes());
        buf
    }

    fn region_bytes(flags: u32, size: u64, offset: u64) -> Vec<u8> {
        let mut b = Vec::new();
        for word in [32u32, flags, PCI_BAR0_REGION_INDEX, 0] {
            b.extend_from_slice(&word.to_ne_bytes());
        }
        b.extend_from_slice(&size.to_ne_bytes());
        b.extend_from_slice(&offset.to_ne_bytes());
        b
    }

    fn iommu_bytes(flags: u32, page_sizes: u64) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&24u32.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&page_sizes.to_ne_bytes());
        b.extend_from_slice(&[0u8; 8]);
        b
    }

    #[test]
    fn request_numbers_match_the_header() {
        // _IO(';', VFIO_BASE + n) for the numbers vfio.h assigns.
        assert_eq!(CHECK_EXTENSION, 0x3B65);
        assert_eq!(SET_IOMMU, 0x3B66);
        assert_eq!(GROUP_GET_STATUS, 0x3B67);
        assert_eq!(GROUP_SET_CONTAINER, 0x3B68);
        assert_eq!(GROUP_GET_DEVICE_FD, 0x3B6A);
        assert_eq!(DEVICE_GET_INFO, 0x3B6B);
        assert_eq!(DEVICE_GET_REGION_INFO, 0x3B6C);
        assert_eq!(IOMMU_GET_INFO, 0x3B70);
        assert_eq!(IOMMU_MAP_DMA, 0x3B71);
    }

    #[test]
    fn region_info_reads_back_every_field() {
        let reply = region_bytes(REGION_FLAG_READ | REGION_FLAG_MMAP, 0x8_0000, 0x100_0000_0000);
        let info = parse_region_info(&reply).unwrap();
        assert_eq!(
            info,
            RegionInfo {
                argsz: 32,
                flags: REGION_FLAG_READ | REGION_FLAG_MMAP,
                index: 0,
                cap_offset: 0,
                size: 0x8_0000,
                offset: 0x100_0000_0000,
            }
        );
        assert!(parse_region_info(&reply[..31]).is_none(), "truncated reply");
    }

    #[test]
    fn region_without_mmap_flag_is_not_mappable() {
        let reply = region_bytes(REGION_FLAG_READ | REGION_FLAG_WRITE, 0x8_0000, 0);
        assert_eq!(mappable_areas(&reply), None);
    }

    #[test]
    fn plain_mappable_region_is_one_area() {
        let reply = region_bytes(REGION_FLAG_MMAP, 0x8_0000, 0);
        assert_eq!(mappable_areas(&reply), Some(vec![(0, 0x8_0000)]));
    }

    #[test]
    fn sparse_mmap_capability_lists_the_areas() {
        let fixed = region_bytes(REGION_FLAG_MMAP | REGION_FLAG_CAPS, 0x8_0000, 0);
        let areas: &[(u64, u64)] = &[(0, 0x2000), (0x4000, 0x7_C000)];
        let other: &[(u64, u64)] = &[];
        // An unrelated capability first, to exercise the chain walk.
        let reply = reply_with_caps(&fixed, 12, &[(9, other), (REGION_CAP_SPARSE_MMAP, areas)]);
        assert_eq!(mappable_areas(&reply), Some(areas.to_vec()));
    }

    #[test]
    fn truncated_or_looping_capability_chains_do_not_read_out_of_bounds() {
        let fixed = region_bytes(REGION_FLAG_MMAP | REGION_FLAG_CAPS, 0x8_0000, 0);
        let areas: &[(u64, u64)] = &[(0, 0x1000), (0x2000, 0x1000)];
        let reply = reply_with_caps(&fixed, 12, &[(REGION_CAP_SPARSE_MMAP, areas)]);
        for cut in 0..reply.len() {
            // Every prefix parses or is refused; none panics.
            let _ = mappable_areas(&reply[..cut]);
        }
        assert_eq!(mappable_areas(&reply[..reply.len() - 1]), None, "last entry cut short");
        // A capability whose `next` points at itself.
        let mut looping = reply_with_caps(&fixed, 12, &[(7, &[])]);
        looping[36..40].copy_from_slice(&32u32.to_ne_bytes());
        assert_eq!(find_capability(&looping, 32, REGION_CAP_SPARSE_MMAP), None);
        // A first capability offset beyond the reply.
        assert_eq!(find_capability(&fixed, 4096, REGION_CAP_SPARSE_MMAP), None);
    }

    #[test]
    fn iommu_info_reports_page_sizes_and_sorted_ranges() {
        let fixed = iommu_bytes(IOMMU_INFO_PGSIZES | IOMMU_INFO_CAPS, 0x4020_1000);
        let ranges: &[(u64, u64)] =
            &[(0xFEF0_0000, 0xFF_FFFF_FFFF), (0, 0xFEDF_FFFF), (5, 4 /* empty: dropped */)];
        let reply = reply_with_caps(&fixed, 16, &[(IOMMU_CAP_IOVA_RANGE, ranges)]);
        let info = parse_iommu_info(&reply).unwrap();
        assert_eq!(info.page_sizes, 0x4020_1000);
        assert_eq!(info.min_page(4096), 4096);
        assert_eq!(
            info.ranges,
            vec![
                IovaRange { start: 0, last: 0xFEDF_FFFF },
                IovaRange { start: 0xFEF0_0000, last: 0xFF_FFFF_FFFF },
            ]
        );
    }

    #[test]
    fn iommu_info_without_capabilities_has_no_ranges() {
        let info = parse_iommu_info(&iommu_bytes(IOMMU_INFO_PGSIZES, 0x20_0000)).unwrap();
        assert!(info.ranges.is_empty());
        assert_eq!(info.min_page(4096), 0x20_0000, "IOMMU pages larger than CPU pages win");
        let none = parse_iommu_info(&iommu_bytes(0, 0x20_0000)).unwrap();
        assert_eq!(none.page_sizes, 0, "page sizes only count when flagged");
        assert!(parse_iommu_info(&[0u8; 4]).is_none());
    }

    #[test]
    fn ioctls_on_a_non_vfio_file_fail_cleanly() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        assert!(ioctl_value(fd, GET_API_VERSION, 0).is_err());
        let query = GroupStatus { argsz: argsz::<GroupStatus>(), flags: 0 };
        // SAFETY: GROUP_GET_STATUS takes a GroupStatus with argsz set.
        assert!(unsafe { info_with_caps(fd, GROUP_GET_STATUS, query) }.is_err());
    }
}
