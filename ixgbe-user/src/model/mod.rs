//! A register-level model of one Intel 82599 port, so the driver in [`crate::ixgbe`] can be
//! tested without the hardware (82599 datasheet: §4.6.3 reset and init handshakes, §7.1
//! receive, §7.2 transmit, §7.1.2.7 Flow Director, §7.1.2.8 RSS, §8.2.3 registers).
//!
//! The device state lives in shared memory — the [`RegisterFile`] (BAR0) and a
//! [`SharedDmaWindow`] whose offsets act as physical addresses — so a driver in another
//! process can map both through a [`ModelHandle`]. The behaviour lives in the engine,
//! [`Model82599`]: each [`Model82599::step`] applies pending register requests (reset,
//! queue enables, Flow Director commands), moves frames from the wire into receive queues
//! and from transmit queues onto the wire, and keeps LINKS current. Tests call `step`
//! directly for determinism, or hand engines to a [`ModelRunner`] thread.
//!
//! A step works in batches of up to 64 frames per queue, as DMA engines do: one
//! call to the wire per direction, frame buffers recycled through [`FrameBuffers`] (each
//! frame is copied once out of transmit DMA memory and once into receive DMA memory),
//! steering and ring registers read once per batch and head pointers and statistics
//! written back once per batch. Descriptor write-back (DD) stays per descriptor, so the
//! driver sees each frame as soon as it lands.
//!
//! What is modelled: the bits the driver polls (CTRL.RST self-clearing, EEC.ARD,
//! RDRXCTL.DMAIDONE, RXDCTL/TXDCTL.ENABLE read-back, LINKS.UP and speed, FDIRCTRL.INIT_DONE,
//! FDIRCMD completion), clear-on-read statistics (GPRC, GPTC, GORC, GOTC, MPC, QPRC, QPTC,
//! QPRDC), destination MAC filtering (RAL0/RAH0, FCTRL), RSS (MRQC, RSSRK, RETA), Flow
//! Director perfect filters for IPv4 TCP/UDP with the bucket hash, one-buffer advanced
//! receive descriptors with write-back, advanced transmit data descriptors with DD
//! write-back or head write-back. Not modelled: interrupts, VLANs, checksum offload, TSO,
//! header split, receive chaining of frames larger than one buffer (dropped and counted),
//! VMDq/DCB, flow control.
//!
//! Anything a driver programs wrongly (a ring or buffer outside the DMA window, a zero or
//! oversized length, a head or tail past the ring) is counted in [`ModelCounters`] and
//! skipped; the model never panics on register or descriptor contents.

mod engine_rx;
mod engine_tx;
mod fdir_table;
pub mod regfile;
mod steering;

use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::dma::SharedDmaWindow;
use crate::ixgbe::descriptors::DESC_LEN;
use crate::ixgbe::regs;
use crate::link::{FrameBuffers, WireBackend};
pub use regfile::RegisterFile;

use fdir_table::FdirTable;

/// Configuration of a model port.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The MAC address the port's "EEPROM" loads into RAL0/RAH0.
    pub mac: [u8; 6],
    /// Size of the DMA window in bytes (rings and packet buffers of every queue pair that
    /// attaches must fit).
    pub dma_window_bytes: usize,
    /// Receive packet buffer capacity in bytes: frames wait here while their queue has no
    /// descriptor and drop is disabled; when it is full, frames count as missed (MPC).
    pub rx_packet_buffer_bytes: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            mac: [0x02, 0x00, 0x00, 0x82, 0x59, 0x90],
            dma_window_bytes: 64 << 20,
            rx_packet_buffer_bytes: 512 * 1024,
        }
    }
}

/// Page size the DMA window hands out regions in: the driver asks for every ring and
/// packet pool 4 KiB-aligned (§7.1.9 needs only 128 bytes; a page keeps them apart).
const DMA_PAGE: usize = 4096;

impl ModelConfig {
    /// The DMA window that `queue_pairs` queue pairs attached with `queue` need: per pair
    /// a receive ring, a transmit ring (16 bytes per advanced descriptor, §7.1.6 / §7.2.3.2)
    /// and a packet pool of one buffer per descriptor of both rings, each starting on a
    /// page of its own. This is what [`crate::IxgbeQueuePair::attach`] allocates from the
    /// window; `None` if the sum does not fit in `usize`.
    pub fn dma_window_for(queue_pairs: usize, queue: &crate::QueueConfig) -> Option<usize> {
        let page = |bytes: usize| bytes.checked_next_multiple_of(DMA_PAGE);
        let descriptors = queue.rx_ring_size.checked_add(queue.tx_ring_size)?;
        let per_pair = page(queue.rx_ring_size.checked_mul(DESC_LEN)?)?
            .checked_add(page(queue.tx_ring_size.checked_mul(DESC_LEN)?)?)?
            .checked_add(page(descriptors.checked_mul(queue.buffer_size)?)?)?;
        per_pair.checked_mul(queue_pairs)
    }
}

/// What the model saw that a counter register does not show: mostly driver mistakes.
#[derive(Debug, Default)]
pub struct ModelCounters {
    /// Frames taken from the wire.
    pub wire_rx_frames: AtomicU64,
    /// Frames put on the wire.
    pub wire_tx_frames: AtomicU64,
    /// Receive frames not for this port's MAC (and not promiscuous/broadcast).
    pub rx_filtered: AtomicU64,
    /// Receive frames dropped because receive was disabled or the queue disabled.
    pub rx_disabled_drops: AtomicU64,
    /// Receive frames dropped because the queue had no free descriptor (DROP_EN set).
    pub rx_no_descriptor_drops: AtomicU64,
    /// Receive frames longer than the queue's buffer size.
    pub rx_oversize: AtomicU64,
    /// Receive descriptors pointing outside the DMA window.
    pub rx_bad_descriptors: AtomicU64,
    /// Transmit descriptors with a bad address, length or type.
    pub tx_bad_descriptors: AtomicU64,
    /// Ring base/length/head/tail registers that do not describe a valid ring.
    pub bad_rings: AtomicU64,
    /// Flow Director filters whose FDIRHASH did not match the hash of their fields (such a
    /// filter lands in the wrong bucket and never matches, as on the silicon).
    pub fdir_hash_mismatches: AtomicU64,
    /// Flow Director commands the model does not support (IPv6, signature filters).
    pub fdir_unsupported: AtomicU64,
    /// Received frames steered by a Flow Director filter.
    pub fdir_matches: AtomicU64,
}

impl ModelCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Everything a driver needs to reach a model device: its register file and DMA window.
/// Cheap to clone; can be rebuilt in another process from two inherited descriptors.
#[derive(Clone, Debug)]
pub struct ModelHandle {
    registers: Arc<RegisterFile>,
    dma: SharedDmaWindow,
}

impl ModelHandle {
    /// The register file (what the driver maps as BAR0).
    pub fn registers(&self) -> &Arc<RegisterFile> {
        &self.registers
    }

    /// The DMA window (the driver's DMA allocator).
    pub fn dma(&self) -> &SharedDmaWindow {
        &self.dma
    }

    /// Clears close-on-exec on both descriptors and returns them as
    /// `(register file, DMA window)`, for a child process started with `exec`.
    pub fn inheritable_fds(&self) -> io::Result<(RawFd, RawFd)> {
        Ok((self.registers.memory().make_inheritable()?, self.dma.memory().make_inheritable()?))
    }

    /// Maps the device from descriptors this process inherited (see
    /// [`ModelHandle::inheritable_fds`]). The descriptors are reopened through
    /// `/proc/self/fd`, so the caller keeps ownership of the numbers it passed.
    pub fn open_inherited(registers_fd: RawFd, dma_fd: RawFd) -> io::Result<Self> {
        let reopen = |fd: RawFd| -> io::Result<OwnedFd> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/self/fd/{fd}"))?;
            Ok(OwnedFd::from(file))
        };
        Ok(ModelHandle {
            registers: Arc::new(RegisterFile::from_fd(reopen(registers_fd)?)?),
            dma: SharedDmaWindow::from_fd(reopen(dma_fd)?)?,
        })
    }
}

/// Where the port is in its power-up/reset sequence. Each phase lasts at least one step, so
/// a driver that does not wait for ARD or DMAIDONE sees them unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BootPhase {
    /// Reset asserted; the EEPROM auto-read runs next.
    EepromLoad,
    /// EEPROM done (EEC.ARD set); DMA initialisation runs next.
    DmaInit,
    /// Ready: RDRXCTL.DMAIDONE set, traffic flows.
    Ready,
}

/// One 82599 port: the engine that gives the shared register file and DMA window their
/// behaviour.
pub struct Model82599 {
    config: ModelConfig,
    handle: ModelHandle,
    wire: Box<dyn WireBackend>,
    /// Frame buffers recycled between the transmit path, the wire and the receive path.
    buffers: FrameBuffers,
    counters: Arc<ModelCounters>,
    phase: BootPhase,
    fdir: FdirTable,
    rx: engine_rx::RxState,
    tx: engine_tx::TxState,
}

impl fmt::Debug for Model82599 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model82599")
            .field("mac", &self.config.mac)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// Frames and descriptors one step handles per queue, so one busy queue cannot starve the
/// register requests of the others.
const STEP_BUDGET: usize = 64;

impl Model82599 {
    /// Creates a powered-up port attached to `wire`, in the state right after a reset.
    pub fn new(config: ModelConfig, wire: Box<dyn WireBackend>) -> io::Result<Self> {
        let handle = ModelHandle {
            registers: Arc::new(RegisterFile::create()?),
            dma: SharedDmaWindow::create(config.dma_window_bytes)?,
        };
        let mut model = Model82599 {
            rx: engine_rx::RxState::new(config.rx_packet_buffer_bytes),
            tx: engine_tx::TxState::default(),
            config,
            handle,
            wire,
            buffers: FrameBuffers::default(),
            counters: Arc::new(ModelCounters::default()),
            phase: BootPhase::EepromLoad,
            fdir: FdirTable::default(),
        };
        model.reset(0);
        // Power-up completes before anyone can look.
        model.advance_boot();
        model.advance_boot();
        Ok(model)
    }

    /// The handle drivers use to reach this port.
    pub fn handle(&self) -> ModelHandle {
        self.handle.clone()
    }

    /// Counters of what the model did and rejected.
    pub fn counters(&self) -> Arc<ModelCounters> {
        Arc::clone(&self.counters)
    }

    fn regs(&self) -> &RegisterFile {
        &self.handle.registers
    }

    /// Runs the device for one step; returns how much work it did (0 = idle).
    pub fn step(&mut self) -> usize {
        let (mut work, reset) = self.apply_requests();
        if reset {
            // The reset itself takes this step; the EEPROM load starts with the next.
            return work;
        }
        if self.phase != BootPhase::Ready {
            self.advance_boot();
            return work + 1;
        }
        self.update_links();
        work += engine_tx::process(self);
        work += engine_rx::process(self);
        work
    }

    /// Puts the port in reset: every register to its power-on value (zero, apart from what
    /// the reset sequence sets), Flow Director table and internal buffers emptied.
    fn reset(&mut self, ctrl_after: u32) {
        self.regs().reset();
        self.regs().poke(regs::CTRL, ctrl_after & !regs::CTRL_RST_MASK);
        self.regs().poke(regs::rxpbsize(0), regs::RXPBSIZE_128KB * 4);
        self.fdir = FdirTable::default();
        self.rx.clear();
        self.tx.clear();
        self.phase = BootPhase::EepromLoad;
    }

    fn advance_boot(&mut self) {
        match self.phase {
            BootPhase::EepromLoad => {
                let mac = self.config.mac;
                let low = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
                let high = u32::from(u16::from_le_bytes([mac[4], mac[5]])) | regs::RAH_AV;
                self.regs().poke(regs::ral(0), low);
                self.regs().poke(regs::rah(0), high);
                self.regs().poke(regs::EEC, regs::EEC_ARD);
                self.phase = BootPhase::DmaInit;
            }
            BootPhase::DmaInit => {
                let v = self.regs().peek(regs::RDRXCTL);
                self.regs().poke(regs::RDRXCTL, v | regs::RDRXCTL_DMAIDONE);
                self.phase = BootPhase::Ready;
            }
            BootPhase::Ready => {}
        }
    }

    fn update_links(&self) {
        let links = if self.wire.link_up() { regs::LINKS_UP | regs::LINKS_SPEED_10G } else { 0 };
        if self.regs().peek(regs::LINKS) != links {
            self.regs().poke(regs::LINKS, links);
        }
        let autoc = self.regs().peek(regs::AUTOC);
        if autoc & regs::AUTOC_AN_RESTART != 0 {
            // Auto-negotiation restart self-clears once negotiation has started.
            self.regs().poke(regs::AUTOC, autoc & !regs::AUTOC_AN_RESTART);
        }
    }

    /// Applies pending register requests; returns the work done and whether a reset
    /// happened.
    fn apply_requests(&mut self) -> (usize, bool) {
        let mut work = 0;
        if !self.regs().requests_posted() {
            return (0, false);
        }
        if let Some(ctrl) = self.regs().take_request(0) {
            work += 1;
            if ctrl & regs::CTRL_RST_MASK != 0 {
                self.reset(ctrl);
                return (work, true);
            }
            self.regs().poke(regs::CTRL, ctrl);
        }
        if let Some(fdirctrl) = self.regs().take_request(1) {
            work += 1;
            // Writing FDIRCTRL (re)initialises the filter table; INIT_DONE reports it.
            self.fdir = FdirTable::default();
            let done = if fdirctrl & regs::FDIRCTRL_PERFECT_MATCH != 0 {
                regs::FDIRCTRL_INIT_DONE
            } else {
                0
            };
            self.regs().poke(regs::FDIRCTRL, fdirctrl | done);
        }
        if let Some(cmd) = self.regs().take_request(2) {
            work += 1;
            fdir_table::execute_command(self, cmd);
        }
        for q in 0..regs::MAX_QUEUES {
            if let Some(v) = self.regs().take_request(3 + q as usize) {
                work += 1;
                self.regs().poke(regs::rxdctl(q), v);
            }
            if let Some(v) = self.regs().take_request(3 + regs::MAX_QUEUES as usize + q as usize) {
                work += 1;
                self.tx.set_enabled(q, v & regs::TXDCTL_ENABLE != 0);
                self.regs().poke(regs::txdctl(q), v);
            }
        }
        (work, false)
    }
}

/// Runs model ports on a background thread until stopped or dropped.
#[derive(Debug)]
pub struct ModelRunner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Model82599>>>,
}

impl ModelRunner {
    /// Starts a thread that steps every port in turn, spinning briefly and then sleeping
    /// when all are idle so an idle model costs little CPU.
    pub fn spawn(mut ports: Vec<Model82599>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("82599-model".into()).spawn(move || {
            let mut idle_rounds = 0u32;
            while !flag.load(Ordering::Relaxed) {
                let work: usize = ports.iter_mut().map(Model82599::step).sum();
                if work > 0 {
                    idle_rounds = 0;
                } else {
                    idle_rounds = idle_rounds.saturating_add(1);
                    if idle_rounds < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            }
            ports
        })?;
        Ok(ModelRunner { stop, thread: Some(thread) })
    }

    /// Stops the thread and gives the ports back.
    pub fn stop(mut self) -> Vec<Model82599> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Vec<Model82599> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for ModelRunner {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

#[cfg(test)]
mod tests;
