//! One receive/transmit queue pair of the 82599: ring setup and dynamic enabling (82599
//! datasheet §4.6.7.1 and §4.6.8.1 with the per-queue steps of §4.6.7 / §4.6.8), batched
//! receive and transmit over advanced descriptors (§7.1.6, §7.2.3.2.4), ring head/tail
//! protocol (§7.1.9, §7.2.3.3).

use std::os::fd::RawFd;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use super::bar::Bar0;
use super::descriptors::{
    DESC_LEN, RX_STATUS_OFFSET, RXD_ERR_RXE, RXD_STAT_DD, RXD_STAT_EOP, RingView, TX_STATUS_OFFSET,
    TXD_DCMD_DEXT, TXD_DCMD_EOP, TXD_DCMD_IFCS, TXD_DCMD_RS, TXD_DTYP_DATA, TXD_PAYLEN_SHIFT,
    TXD_STAT_DD,
};
use super::{IxgbeError, regs};
use crate::dma::{DmaAllocator, DmaRegion};
use crate::mempool::{Mempool, PacketBuf};
use crate::queue::{QueueError, QueuePair, QueueStats};

/// Sizes of one queue pair's rings and buffers.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Receive descriptors (multiple of 8, 8..=4096).
    pub rx_ring_size: usize,
    /// Transmit descriptors (multiple of 8, 8..=4096).
    pub tx_ring_size: usize,
    /// Bytes per packet buffer (a multiple of 1 KiB, 1..=16 KiB; SRRCTL.BSIZEPKT unit).
    pub buffer_size: usize,
    /// How long to wait for the device to report a queue enabled.
    pub enable_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            rx_ring_size: 512,
            tx_ring_size: 512,
            buffer_size: 2048,
            enable_timeout: Duration::from_secs(2),
        }
    }
}

/// Largest frame without FCS and VLAN tag: the 82599's default maximum frame size of 1518
/// bytes (MAXFRS) less the FCS.
const MAX_FRAME_LEN: usize = 1514;

struct RxRing {
    ring: RingView,
    _memory: DmaRegion,
    /// The buffer each descriptor points at; index = descriptor index.
    buffers: Vec<PacketBuf>,
    /// Next descriptor to look at for DD.
    next: usize,
}

struct TxRing {
    ring: RingView,
    _memory: DmaRegion,
    /// Buffers in flight, by descriptor index; `None` once reclaimed.
    buffers: Vec<Option<PacketBuf>>,
    /// Next descriptor to fill.
    next: usize,
    /// Oldest descriptor not yet reclaimed.
    clean: usize,
    /// Descriptors filled since the last tail write.
    unflushed: usize,
}

/// A queue pair of an 82599 (or of the model) owned by this process.
pub struct IxgbeQueuePair {
    bar: Bar0,
    queue: u16,
    mac: [u8; 6],
    rx: RxRing,
    tx: TxRing,
    pool: Mempool,
    stats: QueueStats,
}

impl std::fmt::Debug for IxgbeQueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IxgbeQueuePair")
            .field("queue", &self.queue)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn check_ring_size(n: usize, what: &str) -> Result<(), IxgbeError> {
    if n % 8 != 0 || !(8..=4096).contains(&n) {
        return Err(IxgbeError::InvalidArgument(format!(
            "{what} ring size {n}: must be a multiple of 8 in 8..=4096"
        )));
    }
    Ok(())
}

fn allocate_ring(
    dma: &dyn DmaAllocator,
    count: usize,
) -> Result<(DmaRegion, RingView), IxgbeError> {
    // §7.1.9 / §7.2.3.3: ring base 128-byte aligned, length a multiple of 128 bytes.
    let region = dma.allocate(count * DESC_LEN, 4096)?;
    // SAFETY: `region` is `count * 16` bytes, 4096-aligned, and kept alive next to the view
    // in the ring struct.
    let view = unsafe { RingView::new(region.virt(), count) };
    for i in 0..count {
        view.write_u64(i, 0, 0);
        view.write_u64(i, 8, 0);
    }
    Ok((region, view))
}

impl IxgbeQueuePair {
    /// Sets up and enables queue pair `queue` of an initialised device, allocating its
    /// rings and buffers from `dma`. May run in a different process than
    /// [`super::Device::init`]; fails with [`IxgbeError::QueueBusy`] if the queue is
    /// already enabled.
    pub fn attach(
        bar: Bar0,
        dma: &dyn DmaAllocator,
        queue: u16,
        config: &QueueConfig,
    ) -> Result<Self, IxgbeError> {
        if queue >= regs::MAX_QUEUES {
            return Err(IxgbeError::QueueOutOfRange(queue));
        }
        check_ring_size(config.rx_ring_size, "receive")?;
        check_ring_size(config.tx_ring_size, "transmit")?;
        if config.buffer_size % 1024 != 0 || !(1024..=16 * 1024).contains(&config.buffer_size) {
            return Err(IxgbeError::InvalidArgument(format!(
                "buffer size {}: a multiple of 1 KiB up to 16 KiB",
                config.buffer_size
            )));
        }
        if bar.get_reg32(regs::CTRL_EXT) & regs::CTRL_EXT_DRV_LOAD == 0 {
            return Err(IxgbeError::NotInitialised);
        }
        if bar.get_reg32(regs::rxdctl(queue)) & regs::RXDCTL_ENABLE != 0
            || bar.get_reg32(regs::txdctl(queue)) & regs::TXDCTL_ENABLE != 0
        {
            return Err(IxgbeError::QueueBusy(queue));
        }
        let pool_size = config.rx_ring_size + config.tx_ring_size;
        let pool = Mempool::new(dma, pool_size as u32, config.buffer_size)?;
        let rx = Self::setup_rx(&bar, dma, &pool, queue, config)?;
        let tx = Self::setup_tx(&bar, dma, queue, config)?;
        let low = bar.get_reg32(regs::ral(0)).to_le_bytes();
        let high = bar.get_reg32(regs::rah(0)).to_le_bytes();
        let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        Ok(IxgbeQueuePair { bar, queue, mac, rx, tx, pool, stats: QueueStats::default() })
    }

    /// Per-queue part of §4.6.7, then §4.6.7.1 dynamic enabling.
    fn setup_rx(
        bar: &Bar0,
        dma: &dyn DmaAllocator,
        pool: &Mempool,
        q: u16,
        config: &QueueConfig,
    ) -> Result<RxRing, IxgbeError> {
        let count = config.rx_ring_size;
        let (memory, ring) = allocate_ring(dma, count)?;
        let mut buffers = Vec::with_capacity(count);
        if pool.alloc_batch(count, &mut buffers) != count {
            return Err(IxgbeError::InvalidArgument("packet pool smaller than the ring".into()));
        }
        for (i, buf) in buffers.iter().enumerate() {
            ring.write_u64(i, 0, buf.iova());
            ring.write_u64(i, 8, 0);
        }
        bar.set_reg32(regs::rdbal(q), memory.iova() as u32);
        bar.set_reg32(regs::rdbah(q), (memory.iova() >> 32) as u32);
        bar.set_reg32(regs::rdlen(q), (count * DESC_LEN) as u32);
        // §8.2.3.8.7: one buffer per packet, advanced descriptors, and drop when the queue
        // has no descriptor so a stalled owner cannot block the shared packet buffer for
        // every other queue.
        bar.set_reg32(
            regs::srrctl(q),
            regs::SRRCTL_DESCTYPE_ADV_ONEBUF
                | regs::SRRCTL_DROP_EN
                | (config.buffer_size / 1024) as u32 & regs::SRRCTL_BSIZEPKT_MASK,
        );
        // §4.6.7: bit 12 of DCA_RXCTRL must be cleared.
        bar.clear_flags32(regs::dca_rxctrl(q), regs::DCA_RXCTRL_RESERVED_BIT12);
        bar.set_reg32(regs::rdh(q), 0);
        bar.set_reg32(regs::rdt(q), 0);
        // §4.6.7.1: enable, then poll until the device reports the queue enabled.
        bar.set_flags32(regs::rxdctl(q), regs::RXDCTL_ENABLE);
        bar.wait_reg32(
            regs::rxdctl(q),
            regs::RXDCTL_ENABLE,
            regs::RXDCTL_ENABLE,
            config.enable_timeout,
        )
        .map_err(|detail| IxgbeError::Timeout { step: "receive queue enable", detail })?;
        // Descriptors were written with plain stores; make them visible before the tail
        // write hands them to the device.
        fence(Ordering::Release);
        // §4.6.7: tail = ring size - 1 hands all descriptors but one to the device (head ==
        // tail would mean "none").
        bar.set_reg32(regs::rdt(q), (count - 1) as u32);
        Ok(RxRing { ring, _memory: memory, buffers, next: 0 })
    }

    /// Per-queue part of §4.6.8, then §4.6.8.1 dynamic enabling.
    fn setup_tx(
        bar: &Bar0,
        dma: &dyn DmaAllocator,
        q: u16,
        config: &QueueConfig,
    ) -> Result<TxRing, IxgbeError> {
        let count = config.tx_ring_size;
        let (memory, ring) = allocate_ring(dma, count)?;
        bar.set_reg32(regs::tdbal(q), memory.iova() as u32);
        bar.set_reg32(regs::tdbah(q), (memory.iova() >> 32) as u32);
        bar.set_reg32(regs::tdlen(q), (count * DESC_LEN) as u32);
        bar.set_reg32(regs::tdh(q), 0);
        bar.set_reg32(regs::tdt(q), 0);
        // §8.2.3.9.10 thresholds: prefetch 36, host 8, write-back 4 descriptors (ixy's
        // values; batching DD write-backs saves PCIe bandwidth).
        let thresholds = 36 | (8 << 8) | (4 << 16);
        bar.set_reg32(regs::txdctl(q), thresholds | regs::TXDCTL_ENABLE);
        bar.wait_reg32(
            regs::txdctl(q),
            regs::TXDCTL_ENABLE,
            regs::TXDCTL_ENABLE,
            config.enable_timeout,
        )
        .map_err(|detail| IxgbeError::Timeout { step: "transmit queue enable", detail })?;
        Ok(TxRing {
            ring,
            _memory: memory,
            buffers: (0..count).map(|_| None).collect(),
            next: 0,
            clean: 0,
            unflushed: 0,
        })
    }

    /// The queue index on the device.
    pub fn queue_index(&self) -> u16 {
        self.queue
    }

    /// Receives up to `max` frames and hands each to `on_frame` with the RSS hash (or Flow
    /// Director filter id) the device reported. Descriptors the device marked bad are
    /// recycled and counted as dropped.
    pub fn rx_burst_with_hash(
        &mut self,
        max: usize,
        on_frame: &mut dyn FnMut(&[u8], u32),
    ) -> usize {
        let count = self.rx.buffers.len();
        let mut received = 0;
        let mut last_done = None;
        while received < max {
            let i = self.rx.next;
            // Acquire: the write-back and the frame data are visible once DD is.
            let status = self.rx.ring.load_status(i, RX_STATUS_OFFSET);
            if status & RXD_STAT_DD == 0 {
                break;
            }
            let length = usize::from(self.rx.ring.read_u32(i, 12) as u16);
            let hash = self.rx.ring.read_u32(i, 4);
            let Some(buf) = self.rx.buffers.get_mut(i) else { break };
            // A frame spanning descriptors, an error, or a length the buffer cannot hold is
            // dropped: none can come from this driver's one-buffer configuration on a
            // healthy device, and none may be trusted.
            if status & RXD_STAT_EOP == 0
                || status & RXD_ERR_RXE != 0
                || length == 0
                || length > buf.capacity()
            {
                self.stats.rx_dropped += 1;
            } else {
                buf.set_len(length);
                on_frame(buf.data(), hash);
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += length as u64;
                received += 1;
            }
            // Re-arm the descriptor with the same buffer: the frame has been consumed.
            self.rx.ring.write_u64(i, 0, buf.iova());
            self.rx.ring.write_u64(i, 8, 0);
            last_done = Some(i);
            self.rx.next = (i + 1) % count;
        }
        if let Some(last) = last_done {
            // Release: the re-armed descriptors must be in memory before the tail write
            // lets the device fetch them (§7.1.9: software writes RDT after the
            // descriptors).
            fence(Ordering::Release);
            self.bar.set_reg32(regs::rdt(self.queue), last as u32);
        }
        received
    }

    /// Reclaims transmit buffers whose descriptors the device reported done.
    fn reclaim_tx(&mut self) {
        let count = self.tx.buffers.len();
        while self.tx.clean != self.tx.next {
            let i = self.tx.clean;
            if self.tx.ring.load_status(i, TX_STATUS_OFFSET) & TXD_STAT_DD == 0 {
                break;
            }
            if let Some(slot) = self.tx.buffers.get_mut(i) {
                // Dropping the buffer returns it to the pool.
                *slot = None;
            }
            self.tx.clean = (i + 1) % count;
        }
    }

    /// Whether descriptor `next` can be filled: one slot always stays empty so that a full
    /// ring (tail one behind head) is distinguishable from an empty one (tail == head).
    fn tx_has_room(&self) -> bool {
        (self.tx.next + 1) % self.tx.buffers.len() != self.tx.clean
    }
}

impl QueuePair for IxgbeQueuePair {
    fn rx_burst(
        &mut self,
        max: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, QueueError> {
        Ok(self.rx_burst_with_hash(max, &mut |frame, _| on_frame(frame)))
    }

    fn tx_one(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<bool, QueueError> {
        if !self.tx_has_room() {
            self.reclaim_tx();
            if !self.tx_has_room() {
                return Ok(false);
            }
        }
        let Some(mut buf) = self.pool.alloc() else {
            self.reclaim_tx();
            return Ok(false);
        };
        let max = MAX_FRAME_LEN.min(buf.capacity());
        let len = build(&mut buf.buffer_mut()[..max]);
        if len == 0 {
            return Ok(true);
        }
        if len > max {
            self.stats.tx_dropped += 1;
            return Ok(true);
        }
        buf.set_len(len);
        let i = self.tx.next;
        let ring = &self.tx.ring;
        ring.write_u64(i, 0, buf.iova());
        // §7.2.3.2.4: one data descriptor per frame, FCS inserted by the MAC, DD reported.
        ring.write_u32(
            i,
            8,
            TXD_DCMD_EOP | TXD_DCMD_RS | TXD_DCMD_IFCS | TXD_DCMD_DEXT | TXD_DTYP_DATA | len as u32,
        );
        ring.write_u32(i, 12, (len as u32) << TXD_PAYLEN_SHIFT);
        if let Some(slot) = self.tx.buffers.get_mut(i) {
            *slot = Some(buf);
        }
        self.tx.next = (i + 1) % self.tx.buffers.len();
        self.tx.unflushed += 1;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        Ok(true)
    }

    fn tx_flush(&mut self) -> Result<(), QueueError> {
        if self.tx.unflushed > 0 {
            // Release: descriptors and frame data must be in memory before the tail write
            // (the doorbell) lets the device fetch them (§7.2.3.3).
            fence(Ordering::Release);
            self.bar.set_reg32(regs::tdt(self.queue), self.tx.next as u32);
            self.tx.unflushed = 0;
        }
        self.reclaim_tx();
        Ok(())
    }

    fn max_frame_len(&self) -> usize {
        MAX_FRAME_LEN
    }

    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }

    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
}

impl Drop for IxgbeQueuePair {
    /// Disables the queues (§4.6.7.1.2 / §4.6.8.1.2) so the device stops using this
    /// process's rings and buffers, and so another owner can attach the queue later.
    fn drop(&mut self) {
        self.bar.clear_flags32(regs::rxdctl(self.queue), regs::RXDCTL_ENABLE);
        self.bar.clear_flags32(regs::txdctl(self.queue), regs::TXDCTL_ENABLE);
        let timeout = Duration::from_millis(100);
        let _ = self.bar.wait_reg32(regs::rxdctl(self.queue), regs::RXDCTL_ENABLE, 0, timeout);
        let _ = self.bar.wait_reg32(regs::txdctl(self.queue), regs::TXDCTL_ENABLE, 0, timeout);
    }
}
