//! Model transmit path (82599 datasheet §7.2): descriptors between head and tail are
//! fetched, their buffers read from DMA memory and gathered up to EOP, the frame goes on
//! the wire, DD is written back for descriptors with RS (§7.2.3.5.1) or the head is
//! written to memory when head write-back is enabled (§7.2.3.5.2), and TDH advances.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::{Model82599, ModelCounters, STEP_BUDGET};
use crate::ixgbe::descriptors::{
    DESC_LEN, RingView, TX_STATUS_OFFSET, TXD_DCMD_DEXT, TXD_DCMD_EOP, TXD_DCMD_RS, TXD_DTYP_DATA,
    TXD_DTYP_MASK, TXD_LEN_MASK, TXD_STAT_DD,
};
use crate::ixgbe::regs;

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

/// Transmit state that is not in registers: partly gathered frames per queue.
#[derive(Debug, Default)]
pub(super) struct TxState {
    pending: HashMap<u16, Gather>,
}

impl TxState {
    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }

    pub(super) fn forget_queue(&mut self, q: u16) {
        self.pending.remove(&q);
    }
}

fn send_frame(model: &mut Model82599, q: u16, mut frame: Gather, pad: bool) {
    if frame.poisoned || frame.bytes.is_empty() {
        return;
    }
    if pad && frame.bytes.len() < MIN_FRAME {
        frame.bytes.resize(MIN_FRAME, 0);
    }
    let len = frame.bytes.len();
    if model.wire.link_up() && model.wire.transmit(&frame.bytes).is_ok() {
        ModelCounters::bump(&model.counters.wire_tx_frames);
    }
    let r = model.regs();
    r.count(regs::GPTC, 1);
    r.count64(regs::GOTCL, regs::GOTCH, len as u64 + 4);
    if q < regs::STAT_QUEUES {
        r.count(regs::qptc(q), 1);
    }
}

fn process_queue(model: &mut Model82599, q: u16) -> usize {
    let r = model.regs();
    let ring_len = r.peek(regs::tdlen(q)) as usize;
    let base = u64::from(r.peek(regs::tdbal(q))) | (u64::from(r.peek(regs::tdbah(q))) << 32);
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
    // SAFETY: `translate` checked that the whole ring is inside the DMA window.
    let ring = unsafe { RingView::new(ring_ptr, count) };
    let pad = r.peek(regs::HLREG0) & regs::HLREG0_TXPADEN != 0;
    let mut done = 0;
    while head != tail && done < STEP_BUDGET {
        let addr = ring.read_u64(head, 0);
        let ctl = ring.read_u32(head, 8);
        let gather = model.tx.pending.entry(q).or_default();
        let dtyp = ctl & TXD_DTYP_MASK;
        let is_context = ctl & TXD_DCMD_DEXT != 0 && dtyp == TXD_DTYP_CONTEXT;
        if !is_context {
            let len = (ctl & TXD_LEN_MASK) as usize;
            let is_data = ctl & TXD_DCMD_DEXT != 0 && dtyp == TXD_DTYP_DATA;
            match model.handle.dma.translate(addr, len) {
                Some(src) if is_data && len > 0 && gather.bytes.len() + len <= MAX_TX_FRAME => {
                    // SAFETY: `translate` checked `src..src+len`; the descriptor is between
                    // head and tail, so software does not modify its buffer until DD.
                    let data = unsafe { std::slice::from_raw_parts(src, len) };
                    gather.bytes.extend_from_slice(data);
                }
                _ => {
                    ModelCounters::bump(&model.counters.tx_bad_descriptors);
                    gather.poisoned = true;
                }
            }
            // EOP ends the frame even on a bad descriptor, so one mistake costs one frame.
            if ctl & TXD_DCMD_EOP != 0 {
                let frame = std::mem::take(gather);
                send_frame(model, q, frame, pad);
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

/// Runs every enabled transmit queue.
pub(super) fn process(model: &mut Model82599) -> usize {
    if model.regs().peek(regs::DMATXCTL) & regs::DMATXCTL_TE == 0 {
        return 0;
    }
    (0..regs::MAX_QUEUES)
        .filter(|&q| model.regs().peek(regs::txdctl(q)) & regs::TXDCTL_ENABLE != 0)
        .collect::<Vec<_>>()
        .into_iter()
        .map(|q| process_queue(model, q))
        .sum()
}
