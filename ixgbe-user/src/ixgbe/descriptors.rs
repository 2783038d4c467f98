//! Advanced receive and transmit descriptors (82599 datasheet §7.1.6 "Advanced Receive
//! Descriptors" and §7.2.3.2.4 "Advanced Transmit Data Descriptor").
//!
//! Each descriptor is 16 bytes and is written by software in its "read" format and
//! overwritten by the device in its "write-back" format. Both sides access descriptors in
//! DMA memory shared with another agent (the NIC, or the model on another thread or in
//! another process), so the status word that hands a descriptor over is accessed
//! atomically, and everything else with volatile accesses ordered around it.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, Ordering};

/// Receive descriptor as software writes it (§7.1.6.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdvRxDescRead {
    /// Device address of the packet buffer.
    pub pkt_addr: u64,
    /// Header buffer address (header split only); 0 here. Its low bit overlaps DD, so
    /// writing 0 also clears the done flag.
    pub hdr_addr: u64,
}

/// Receive descriptor as the device writes it back (§7.1.6.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdvRxDescWb {
    /// RSS type (bits 3:0) and packet type (bits 16:4).
    pub pkt_info: u32,
    /// RSS hash, or the Flow Director filter id when the packet matched a filter.
    pub rss_hash: u32,
    /// Extended status (bits 19:0) and extended errors (bits 31:20).
    pub status_error: u32,
    /// Bytes written to the packet buffer.
    pub length: u16,
    /// VLAN tag.
    pub vlan: u16,
}

/// Transmit data descriptor as software writes it (§7.2.3.2.4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdvTxDescRead {
    /// Device address of the data buffer.
    pub buffer_addr: u64,
    /// Command, descriptor type and data length.
    pub cmd_type_len: u32,
    /// Offload info and payload length (PAYLEN, bits 31:14).
    pub olinfo_status: u32,
}

/// Transmit descriptor as the device writes it back (§7.2.3.2.4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdvTxDescWb {
    /// Reserved.
    pub rsvd: u64,
    /// Reserved for the IPsec sequence number.
    pub nxtseq_seed: u32,
    /// Status; bit 0 is DD.
    pub status: u32,
}

const _: () = {
    assert!(size_of::<AdvRxDescRead>() == 16);
    assert!(size_of::<AdvRxDescWb>() == 16);
    assert!(size_of::<AdvTxDescRead>() == 16);
    assert!(size_of::<AdvTxDescWb>() == 16);
    assert!(offset_of!(AdvRxDescWb, rss_hash) == 4);
    assert!(offset_of!(AdvRxDescWb, status_error) == RX_STATUS_OFFSET);
    assert!(offset_of!(AdvRxDescWb, length) == 12);
    assert!(offset_of!(AdvTxDescRead, cmd_type_len) == 8);
    assert!(offset_of!(AdvTxDescRead, olinfo_status) == 12);
    assert!(offset_of!(AdvTxDescWb, status) == TX_STATUS_OFFSET);
};

/// Size of every descriptor.
pub const DESC_LEN: usize = 16;
/// Byte offset of the receive write-back status word.
pub const RX_STATUS_OFFSET: usize = 8;
/// Byte offset of the transmit write-back status word.
pub const TX_STATUS_OFFSET: usize = 12;

/// Descriptor done.
pub const RXD_STAT_DD: u32 = 1 << 0;
/// End of packet.
pub const RXD_STAT_EOP: u32 = 1 << 1;
/// Flow Director filter match.
pub const RXD_STAT_FLM: u32 = 1 << 2;
/// RX data error (bad CRC, length, ...).
pub const RXD_ERR_RXE: u32 = 1 << 29;
/// RSS type field of `pkt_info`.
pub const RXD_RSSTYPE_MASK: u32 = 0xF;
/// RSS hash computed over IPv4 + TCP.
pub const RXD_RSSTYPE_IPV4_TCP: u32 = 0x1;
/// RSS hash computed over IPv4.
pub const RXD_RSSTYPE_IPV4: u32 = 0x2;
/// RSS hash computed over IPv4 + UDP.
pub const RXD_RSSTYPE_IPV4_UDP: u32 = 0x7;

/// Transmit: end of packet.
pub const TXD_DCMD_EOP: u32 = 1 << 24;
/// Transmit: insert FCS.
pub const TXD_DCMD_IFCS: u32 = 1 << 25;
/// Transmit: report status (write back DD).
pub const TXD_DCMD_RS: u32 = 1 << 27;
/// Transmit: advanced descriptor format.
pub const TXD_DCMD_DEXT: u32 = 1 << 29;
/// Transmit: descriptor type "advanced data".
pub const TXD_DTYP_DATA: u32 = 0x3 << 20;
/// Descriptor type field.
pub const TXD_DTYP_MASK: u32 = 0xF << 20;
/// Data length field of `cmd_type_len`.
pub const TXD_LEN_MASK: u32 = 0xFFFF;
/// Shift of PAYLEN in `olinfo_status`.
pub const TXD_PAYLEN_SHIFT: u32 = 14;
/// Transmit write-back: descriptor done.
pub const TXD_STAT_DD: u32 = 1 << 0;

/// A view of a descriptor ring in DMA memory: `count` descriptors of 16 bytes at `base`.
///
/// Every accessor reduces the index modulo `count`, so no index, even one derived from
/// device-written data, can reach outside the ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingView {
    base: *mut u8,
    count: usize,
}

// SAFETY: the view is a pointer into shared DMA memory; the ring's ownership protocol
// (descriptors between head and tail belong to the device) decides who may touch what.
unsafe impl Send for RingView {}

impl RingView {
    /// # Safety
    /// `base..base + count * 16` must be mapped, 16-byte aligned, and stay mapped as long
    /// as the view is used. `count` must be non-zero.
    pub(crate) unsafe fn new(base: *mut u8, count: usize) -> Self {
        debug_assert!(count > 0 && base as usize % DESC_LEN == 0);
        RingView { base, count: count.max(1) }
    }

    fn slot(&self, index: usize, offset: usize) -> *mut u8 {
        debug_assert!(index < self.count && offset < DESC_LEN);
        // SAFETY: `index % count < count` and `offset % 16 < 16`, so the byte is inside the
        // ring `new` was given.
        unsafe { self.base.add((index % self.count) * DESC_LEN + offset % DESC_LEN) }
    }

    pub(crate) fn read_u64(&self, index: usize, offset: usize) -> u64 {
        let p = self.slot(index, offset & !7);
        // SAFETY: in-ring, 8-byte aligned (ring 16-aligned, offset rounded down to 8).
        unsafe { p.cast::<u64>().read_volatile() }
    }

    pub(crate) fn write_u64(&self, index: usize, offset: usize, value: u64) {
        let p = self.slot(index, offset & !7);
        // SAFETY: as in `read_u64`.
        unsafe { p.cast::<u64>().write_volatile(value) }
    }

    pub(crate) fn read_u32(&self, index: usize, offset: usize) -> u32 {
        let p = self.slot(index, offset & !3);
        // SAFETY: in-ring, 4-byte aligned.
        unsafe { p.cast::<u32>().read_volatile() }
    }

    pub(crate) fn write_u32(&self, index: usize, offset: usize, value: u32) {
        let p = self.slot(index, offset & !3);
        // SAFETY: in-ring, 4-byte aligned.
        unsafe { p.cast::<u32>().write_volatile(value) }
    }

    /// The status word that hands a descriptor from device to software.
    pub(crate) fn status(&self, index: usize, offset: usize) -> &AtomicU32 {
        let p = self.slot(index, offset & !3);
        // SAFETY: in-ring, 4-byte aligned, and the memory outlives `self` by the contract
        // of `new`; the word is accessed atomically by both sides.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    /// Loads a status word with acquire ordering: once DD is seen, the rest of the
    /// write-back and the packet data written before it are visible too.
    pub(crate) fn load_status(&self, index: usize, offset: usize) -> u32 {
        self.status(index, offset).load(Ordering::Acquire)
    }
}
