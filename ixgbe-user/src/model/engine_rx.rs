//! Model receive path (82599 datasheet §7.1): frames from the wire wait in the packet
//! buffer, are filtered and steered ([`super::steering`]), and land in one-buffer advanced
//! descriptors with write-back (§7.1.6) under head/tail ring semantics (§7.1.9); drops are
//! counted where the silicon counts them (MPC, QPRDC).
//!
//! Work is done in batches of up to [`STEP_BUDGET`] frames: the wire is read once per batch,
//! each queue's ring registers are read when the batch first needs that queue (and RDT again
//! only when the cached tail is reached), and RDH and the statistics registers are written
//! once per queue at the end of the batch. Each descriptor's DD is still written as its
//! frame lands, so software sees frames as early as with per-frame processing.

use std::collections::VecDeque;
use std::sync::atomic::{Ordering, fence};

use super::steering::{SteeringConfig, classify};
use super::{Model82599, ModelCounters, STEP_BUDGET};
use crate::ixgbe::descriptors::{
    DESC_LEN, RX_STATUS_OFFSET, RXD_ERR_RXE, RXD_STAT_DD, RXD_STAT_EOP, RingView,
};
use crate::ixgbe::regs;
use crate::toeplitz::ToeplitzTable;

/// RDBAL/TDBAL bits 6:0 are ignored: rings are 128-byte aligned (§8.2.3.8.1, §8.2.3.9.5).
pub(super) const RING_BASE_MASK: u64 = !0x7F;

/// Receive-side state that is not in registers: the packet buffer (frames waiting for a
/// descriptor) and the cached Toeplitz table for the current RSSRK.
pub(super) struct RxState {
    fifo: VecDeque<Vec<u8>>,
    fifo_bytes: usize,
    capacity: usize,
    /// Frames of the current wire burst, before they enter the packet buffer.
    arrivals: Vec<Vec<u8>>,
    pub(super) toeplitz: Option<ToeplitzTable>,
}

impl RxState {
    pub(super) fn new(capacity: usize) -> Self {
        RxState {
            fifo: VecDeque::new(),
            fifo_bytes: 0,
            capacity,
            arrivals: Vec::with_capacity(STEP_BUDGET),
            toeplitz: None,
        }
    }

    pub(super) fn clear(&mut self) {
        self.fifo.clear();
        self.fifo_bytes = 0;
    }
}

/// A receive ring as read from its registers at the start of a batch.
struct Ring {
    view: RingView,
    count: usize,
    head: usize,
    tail: usize,
    buffer_len: usize,
    drop_when_full: bool,
}

enum RingState {
    /// RXDCTL.ENABLE or RXCTRL.RXEN clear.
    Disabled,
    /// Base, length, head or tail do not describe a ring in the DMA window.
    Invalid,
    Usable(Ring),
}

/// One queue's part of a batch: its ring and what to write back at the end.
struct QueueBatch {
    queue: u16,
    state: RingState,
    head_at_start: usize,
    received: u32,
    octets: u64,
    dropped: u32,
}

impl QueueBatch {
    fn open(model: &Model82599, queue: u16, rx_enabled: bool) -> Self {
        let r = model.regs();
        let mut batch = QueueBatch {
            queue,
            state: RingState::Disabled,
            head_at_start: 0,
            received: 0,
            octets: 0,
            dropped: 0,
        };
        if !rx_enabled || r.peek(regs::rxdctl(queue)) & regs::RXDCTL_ENABLE == 0 {
            return batch;
        }
        batch.state = RingState::Invalid;
        let ring_len = r.peek(regs::rdlen(queue)) as usize;
        let base = (u64::from(r.peek(regs::rdbal(queue)))
            | (u64::from(r.peek(regs::rdbah(queue))) << 32))
            & RING_BASE_MASK;
        let count = ring_len / DESC_LEN;
        let head = r.peek(regs::rdh(queue)) as usize;
        let tail = r.peek(regs::rdt(queue)) as usize;
        let Some(ring_ptr) = model.handle.dma.translate(base, ring_len) else { return batch };
        if ring_len % 128 != 0 || count == 0 || head >= count || tail >= count {
            return batch;
        }
        // SAFETY: `translate` checked that the whole ring lies in the DMA window, and the
        // base is 128-byte aligned in device addresses, whose window starts page-aligned.
        let view = unsafe { RingView::new(ring_ptr, count) };
        let srrctl = r.peek(regs::srrctl(queue));
        let buffer_len = match srrctl & regs::SRRCTL_BSIZEPKT_MASK {
            0 => 2048, // BSIZEPKT 0 falls back to RCTL's 2 KiB default
            kib => kib as usize * 1024,
        };
        batch.head_at_start = head;
        batch.state = RingState::Usable(Ring {
            view,
            count,
            head,
            tail,
            buffer_len,
            drop_when_full: srrctl & regs::SRRCTL_DROP_EN != 0,
        });
        batch
    }

    /// Writes RDH and the statistics for the frames this batch moved.
    fn finish(&self, model: &Model82599) {
        let r = model.regs();
        if let RingState::Usable(ring) = &self.state {
            if ring.head != self.head_at_start {
                r.poke(regs::rdh(self.queue), ring.head as u32);
            }
        }
        if self.received > 0 {
            r.count(regs::GPRC, self.received);
            r.count64(regs::GORCL, regs::GORCH, self.octets);
            if self.queue < regs::STAT_QUEUES {
                r.count(regs::qprc(self.queue), self.received);
            }
        }
        if self.dropped > 0 {
            r.count(regs::qprdc(self.queue % regs::STAT_QUEUES), self.dropped);
        }
    }
}

/// Everything one receive batch reads once and writes back once.
struct RxBatch {
    steering: SteeringConfig,
    rx_enabled: bool,
    /// Queues this batch has touched; a handful at most, so a linear search is fastest.
    queues: Vec<QueueBatch>,
}

impl RxBatch {
    fn start(model: &mut Model82599) -> Self {
        RxBatch {
            steering: SteeringConfig::read(model),
            rx_enabled: model.regs().peek(regs::RXCTRL) & regs::RXCTRL_RXEN != 0,
            queues: Vec::new(),
        }
    }

    fn queue(&mut self, model: &Model82599, queue: u16) -> &mut QueueBatch {
        let index = match self.queues.iter().position(|b| b.queue == queue) {
            Some(i) => i,
            None => {
                self.queues.push(QueueBatch::open(model, queue, self.rx_enabled));
                self.queues.len() - 1
            }
        };
        &mut self.queues[index]
    }

    fn finish(self, model: &Model82599) {
        for queue in &self.queues {
            queue.finish(model);
        }
    }
}

enum Outcome {
    /// The frame left the packet buffer (delivered or dropped).
    Done,
    /// The queue has no descriptor and drops are off: the frame waits, and so does every
    /// frame behind it (the packet buffer is one FIFO).
    Wait,
}

fn deliver(model: &Model82599, batch: &mut RxBatch, frame: &[u8]) -> Outcome {
    if !batch.steering.accepts_destination(frame) {
        ModelCounters::bump(&model.counters.rx_filtered);
        return Outcome::Done;
    }
    let steering = batch.steering.steer(model, &classify(frame));
    let queue = batch.queue(model, steering.queue);
    let ring = match &mut queue.state {
        RingState::Usable(ring) => ring,
        RingState::Disabled => {
            ModelCounters::bump(&model.counters.rx_disabled_drops);
            queue.dropped += 1;
            return Outcome::Done;
        }
        RingState::Invalid => {
            ModelCounters::bump(&model.counters.bad_rings);
            queue.dropped += 1;
            return Outcome::Done;
        }
    };
    if ring.head == ring.tail {
        // Software may have returned descriptors since the batch read RDT.
        let tail = model.regs().peek(regs::rdt(queue.queue)) as usize;
        if tail >= ring.count {
            ModelCounters::bump(&model.counters.bad_rings);
            queue.dropped += 1;
            return Outcome::Done;
        }
        // `peek` is an acquire load, pairing with the driver's release of RDT: the
        // descriptors it wrote before the tail are visible now.
        ring.tail = tail;
    }
    if ring.head == ring.tail {
        if ring.drop_when_full {
            ModelCounters::bump(&model.counters.rx_no_descriptor_drops);
            queue.dropped += 1;
            return Outcome::Done;
        }
        return Outcome::Wait;
    }
    let head = ring.head;
    let buffer_addr = ring.view.read_u64(head, 0);
    let mut status = RXD_STAT_DD | RXD_STAT_EOP | steering.status;
    let mut written = frame.len();
    if frame.len() > ring.buffer_len {
        // Real hardware would continue in the next descriptor; the model has no chaining.
        ModelCounters::bump(&model.counters.rx_oversize);
        status |= RXD_ERR_RXE;
        written = 0;
    } else if let Some(dst) = model.handle.dma.translate(buffer_addr, frame.len()) {
        // SAFETY: `translate` checked the destination range; the descriptor (head < tail)
        // belongs to the device, so the driver does not touch the buffer until DD is set.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), dst, frame.len()) };
    } else {
        ModelCounters::bump(&model.counters.rx_bad_descriptors);
        status |= RXD_ERR_RXE;
        written = 0;
    }
    ring.view.write_u32(head, 0, steering.pkt_info);
    ring.view.write_u32(head, 4, steering.hash_dword);
    ring.view.write_u32(head, 12, written as u32);
    // The buffer and the rest of the write-back must be visible before DD hands the
    // descriptor to software.
    ring.view.status(head, RX_STATUS_OFFSET).store(status, Ordering::Release);
    ring.head = (head + 1) % ring.count;
    if written > 0 {
        queue.received += 1;
        // Octet counters include the 4-byte FCS the MAC stripped (§8.2.3.23.22).
        queue.octets += written as u64 + 4;
    }
    Outcome::Done
}

/// Moves frames from the wire into the packet buffer and from there into receive queues.
pub(super) fn process(model: &mut Model82599) -> usize {
    let arrived = {
        let Model82599 { wire, buffers, rx, .. } = &mut *model;
        wire.receive_batch(STEP_BUDGET, buffers, &mut rx.arrivals).unwrap_or(0)
    };
    let mut work = arrived;
    if !model.rx.arrivals.is_empty() {
        model.counters.wire_rx_frames.fetch_add(arrived as u64, Ordering::Relaxed);
        let mut missed = 0;
        let Model82599 { buffers, rx, .. } = &mut *model;
        for frame in rx.arrivals.drain(..) {
            if rx.fifo_bytes + frame.len() > rx.capacity {
                missed += 1;
                buffers.recycle(frame);
            } else {
                rx.fifo_bytes += frame.len();
                rx.fifo.push_back(frame);
            }
        }
        if missed > 0 {
            model.regs().count(regs::mpc(0), missed);
        }
    }
    if model.rx.fifo.is_empty() {
        return work;
    }
    // Descriptors software handed over (tail writes) are read after the tail itself.
    fence(Ordering::Acquire);
    let mut batch = RxBatch::start(model);
    for _ in 0..STEP_BUDGET {
        let Some(frame) = model.rx.fifo.pop_front() else { break };
        match deliver(model, &mut batch, &frame) {
            Outcome::Done => {
                work += 1;
                model.rx.fifo_bytes -= frame.len();
                model.buffers.recycle(frame);
            }
            Outcome::Wait => {
                model.rx.fifo.push_front(frame);
                break;
            }
        }
    }
    batch.finish(model);
    work
}
