//! Model transmit path (82599 datasheet §7.2): descriptors between head and tail are
//! fetched, their buffers read from DMA memory and gathered up to EOP, the frame goes on
//! the wire, DD is written back for descriptors with RS (§7.2.3.5.1) or the head is
//! written to memory when head write-back is enabled (§7.2.3.5.2), and TDH advances.
//!
//! Each frame is copied once, from its DMA buffers into a recycled frame buffer that the
//! wire then carries; the frames of one step go to the wire as one batch, and TDH, head
//! write-back and the statistics registers are written once per queue per step.

use std::sync::atomic::Ordering;

use super::engine_rx::RING_BASE_MASK;
use super::{Model82599, ModelCounters, STEP_BUDGET};
use crate::ixgbe::descriptors::{
    DESC_LEN, RingView, TX_STATUS_OFFSET, TXD_DCMD_DEXT, TXD_DCMD_EOP, TXD_DCMD_RS, TXD_DTYP_DATA,
    TXD_DTYP_MASK, TXD_LEN_MASK, TXD_STAT_DD,
};
use crate::ixgbe::regs;
use crate::link::FrameBuffers;

/// Largest frame the model sends (the 82599's jumbo limit is 15.5 KiB, §8.2.3.22.13).
const MAX_TX_FRAME: usize = 15872;
/// Shortest frame on the wire without FCS; TXPADEN pads up to it.
const MIN_FRAME: usize = 60;
/// Descriptor type of an advanced context descriptor, which carries offload parameters
/// only and is skipped by the model.
const TXD_DTYP_CONTEXT: u32 = 0x2 << 20;

/// A frame being gathered from several descriptors, and whether any of them was bad.
#[derive(Debug, Default)]
struct Gather {
    bytes: Vec<u8>,
    poisoned: bool,
}

/// Transmit state that is not in registers.
#[derive(Debug)]
pub(super) struct TxState {
    /// Per queue, the frame whose EOP descriptor has not been fetched yet.
    pending: Vec<Gather>,
    /// Queues whose TXDCTL.ENABLE the engine has applied, one bit per queue. Only the
    /// engine changes that bit, so this mirrors the registers without reading 128 of them
    /// every step.
    enabled: u128,
    /// Frames finished in this step, in order, for the wire.
    outgoing: Vec<Vec<u8>>,
}

impl Default for TxState {
    fn default() -> Self {
        TxState {
            pending: (0..regs::MAX_QUEUES).map(|_| Gather::default()).collect(),
            enabled: 0,
            outgoing: Vec::with_capacity(STEP_BUDGET),
        }
    }
}

impl TxState {
    pub(super) fn clear(&mut self) {
        *self = TxState::default();
    }

    /// Records a TXDCTL write the engine applied; disabling drops a half-gathered frame.
    pub(super) fn set_enabled(&mut self, q: u16, enabled: bool) {
        let bit = 1u128.checked_shl(u32::from(q)).unwrap_or(0);
        if enabled {
            self.enabled |= bit;
        } else {
            self.enabled &= !bit;
            if let Some(g) = self.pending.get_mut(usize::from(q)) {
                *g = Gather::default();
            }
        }
    }
}

/// Frames and octets one queue sent in this step, for its statistics registers.
#[derive(Default)]
struct Sent {
    frames: u32,
    octets: u64,
}

/// Ends a frame: pads it and queues it for the wire, or drops it if a descriptor was bad.
fn finish_frame(
    frame: Gather,
    pad: bool,
    outgoing: &mut Vec<Vec<u8>>,
    buffers: &mut FrameBuffers,
    sent: &mut Sent,
) {
    let Gather { mut bytes, poisoned } = frame;
    if poisoned || bytes.is_empty() {
        buffers.recycle(bytes);
        return;
    }
    if pad && bytes.len() < MIN_FRAME {
        bytes.resize(MIN_FRAME, 0);
    }
    sent.frames += 1;
    // Octet counters include the 4-byte FCS the MAC appends (§8.2.3.23.26).
    sent.octets += bytes.len() as u64 + 4;
    outgoing.push(bytes);
}

fn process_queue(model: &mut Model82599, q: u16) -> usize {
    let r = model.regs();
    let ring_len = r.peek(regs::tdlen(q)) as usize;
    let base = (u64::from(r.peek(regs::tdbal(q))) | (u64::from(r.peek(regs::tdbah(q))) << 32))
        & RING_BASE_MASK;
    let count = ring_len / DESC_LEN;
    let mut head = r.peek(regs::tdh(q)) as usize;
    let tail = r.peek(regs::tdt(q)) as usize;
    if head == tail {
        return 0;
    }
    let ring_ptr = model.handle.dma.translate(base, ring_len);
    let (Some(ring_ptr), true) =
        (ring_ptr, ring_len % 128 == 0 && count > 0 && head < count && tail < count)
    else {
        ModelCounters::bump(&model.counters.bad_rings);
        return 0;
    };
    // SAFETY: `translate` checked that the whole ring is inside the DMA window, and the
    // base is 128-byte aligned in device addresses, whose window starts page-aligned.
    let ring = unsafe { RingView::new(ring_ptr, count) };
    let pad = r.peek(regs::HLREG0) & regs::HLREG0_TXPADEN != 0;
    let Model82599 { handle, counters, tx, buffers, .. } = &mut *model;
    let TxState { pending, outgoing, .. } = tx;
    let Some(gather) = pending.get_mut(usize::from(q)) else { return 0 };
    let mut sent = Sent::default();
    let mut done = 0;
    while head != tail && done < STEP_BUDGET {
        let addr = ring.read_u64(head, 0);
        let ctl = ring.read_u32(head, 8);
        let dtyp = ctl & TXD_DTYP_MASK;
        let is_context = ctl & TXD_DCMD_DEXT != 0 && dtyp == TXD_DTYP_CONTEXT;
        if !is_context {
            let len = (ctl & TXD_LEN_MASK) as usize;
            let is_data = ctl & TXD_DCMD_DEXT != 0 && dtyp == TXD_DTYP_DATA;
            match handle.dma.translate(addr, len) {
                Some(src) if is_data && len > 0 && gather.bytes.len() + len <= MAX_TX_FRAME => {
                    // SAFETY: `translate` checked `src..src+len`; the descriptor is between
                    // head and tail, so software does not modify its buffer until DD.
                    let data = unsafe { std::slice::from_raw_parts(src, len) };
                    if gather.bytes.capacity() == 0 {
                        gather.bytes = buffers.take();
                    }
                    gather.bytes.extend_from_slice(data);
                }
                _ => {
                    ModelCounters::bump(&counters.tx_bad_descriptors);
                    gather.poisoned = true;
                }
            }
            // EOP ends the frame even on a bad descriptor, so one mistake costs one frame.
            if ctl & TXD_DCMD_EOP != 0 {
                finish_frame(std::mem::take(gather), pad, outgoing, buffers, &mut sent);
            }
        }
        if ctl & TXD_DCMD_RS != 0 {
            // The buffer has been read; DD returns it to software.
            ring.status(head, TX_STATUS_OFFSET).store(TXD_STAT_DD, Ordering::Release);
        }
        head = (head + 1) % count;
        done += 1;
    }
    let r = model.regs();
    r.poke(regs::tdh(q), head as u32);
    if sent.frames > 0 {
        r.count(regs::GPTC, sent.frames);
        r.count64(regs::GOTCL, regs::GOTCH, sent.octets);
        if q < regs::STAT_QUEUES {
            r.count(regs::qptc(q), sent.frames);
        }
    }
    let wb_low = r.peek(regs::tdwbal(q));
    if wb_low & regs::TDWBAL_HEAD_WB_EN != 0 {
        let wb_addr = (u64::from(r.peek(regs::tdwbah(q))) << 32) | u64::from(wb_low & !3);
        match model.handle.dma.translate(wb_addr, 4) {
            // SAFETY: a 4-byte, 4-aligned (low bits masked) in-window location.
            Some(p) => unsafe {
                std::sync::atomic::AtomicU32::from_ptr(p.cast())
                    .store(head as u32, Ordering::Release)
            },
            None => ModelCounters::bump(&model.counters.bad_rings),
        }
    }
    done
}

/// Runs every enabled transmit queue, then puts the frames they finished on the wire as
/// one batch.
pub(super) fn process(model: &mut Model82599) -> usize {
    if model.tx.enabled == 0 || model.regs().peek(regs::DMATXCTL) & regs::DMATXCTL_TE == 0 {
        return 0;
    }
    let mut work = 0;
    let mut queues = model.tx.enabled;
    while queues != 0 {
        let q = queues.trailing_zeros() as u16;
        queues &= queues - 1;
        work += process_queue(model, q);
    }
    let Model82599 { wire, buffers, tx, counters, .. } = &mut *model;
    if tx.outgoing.is_empty() {
        return work;
    }
    let frames = tx.outgoing.len() as u64;
    if !wire.link_up() {
        // No link partner: the frames are gone, as on a port without a cable.
        tx.outgoing.drain(..).for_each(|f| buffers.recycle(f));
    } else if wire.transmit_batch(&mut tx.outgoing, buffers).is_ok() {
        counters.wire_tx_frames.fetch_add(frames, Ordering::Relaxed);
    }
    // A failed batch left nothing behind either: the wire takes or recycles every frame.
    tx.outgoing.clear();
    work
}
