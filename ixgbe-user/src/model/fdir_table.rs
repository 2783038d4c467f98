//! The model's Flow Director perfect-match table (82599 datasheet §7.1.2.7): filters are
//! stored in the bucket named by the FDIRHASH the driver programmed, and a packet is looked
//! up in the bucket its own fields hash to, so a filter programmed with a wrong hash is
//! never found — as on the silicon. The model also recomputes the hash at programming time
//! and counts a mismatch, which tells a test *why* a filter does not match.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::{Model82599, ModelCounters};
use crate::ixgbe::fdir::{BUCKET_HASH_MASK, FdirFilter, L4Protocol, bucket_hash};
use crate::ixgbe::regs;

/// Where a matching packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FdirAction {
    pub(super) queue: u16,
    pub(super) soft_id: u32,
}

/// Perfect filters, by bucket.
#[derive(Debug, Default)]
pub(super) struct FdirTable {
    buckets: HashMap<u32, Vec<(FdirFilter, FdirAction)>>,
}

impl FdirTable {
    pub(super) fn lookup(&self, key: u32, filter: &FdirFilter) -> Option<FdirAction> {
        self.buckets
            .get(&bucket_hash(key, filter))?
            .iter()
            .find(|(f, _)| f == filter)
            .map(|(_, action)| *action)
    }

    pub(super) fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }

    /// No filter programmed: every lookup would miss, so the receive path skips hashing.
    pub(super) fn is_empty(&self) -> bool {
        self.buckets.values().all(Vec::is_empty)
    }
}

/// Executes an FDIRCMD write, then reports completion by clearing the command field.
pub(super) fn execute_command(model: &mut Model82599, cmd: u32) {
    let r = model.regs();
    let fdirhash = r.peek(regs::FDIRHASH);
    let filter =
        L4Protocol::from_flow_type((cmd & regs::FDIRCMD_L4TYPE_MASK) >> regs::FDIRCMD_L4TYPE_SHIFT)
            .filter(|_| cmd & regs::FDIRCMD_IPV6 == 0)
            .map(|protocol| {
                let ports = r.peek(regs::FDIRPORT);
                FdirFilter {
                    protocol,
                    src_ip: Ipv4Addr::from(r.peek(regs::FDIRIPSA)),
                    dst_ip: Ipv4Addr::from(r.peek(regs::FDIRIPDA)),
                    src_port: ports as u16,
                    dst_port: (ports >> regs::FDIRPORT_DST_SHIFT) as u16,
                }
            });
    let perfect = r.peek(regs::FDIRCTRL) & regs::FDIRCTRL_PERFECT_MATCH != 0;
    let op = cmd & regs::FDIRCMD_CMD_MASK;
    match (filter, perfect, op) {
        (Some(filter), true, regs::FDIRCMD_CMD_ADD_FLOW | regs::FDIRCMD_CMD_REMOVE_FLOW) => {
            let bucket = fdirhash & BUCKET_HASH_MASK;
            if bucket != bucket_hash(r.peek(regs::FDIRHKEY), &filter) {
                ModelCounters::bump(&model.counters.fdir_hash_mismatches);
            }
            let entries = model.fdir.buckets.entry(bucket).or_default();
            entries.retain(|(f, _)| *f != filter);
            if op == regs::FDIRCMD_CMD_ADD_FLOW {
                let action = FdirAction {
                    queue: ((cmd >> regs::FDIRCMD_RX_QUEUE_SHIFT) & 0x7F) as u16,
                    soft_id: fdirhash >> regs::FDIRHASH_SW_INDEX_SHIFT,
                };
                entries.push((filter, action));
            }
        }
        (_, _, 0) => {}
        _ => ModelCounters::bump(&model.counters.fdir_unsupported),
    }
    let r = model.regs();
    // FDIRFREE.FREE: perfect filters still free out of 2K for a 64 KiB allocation.
    r.poke(regs::FDIRFREE, 2046u32.saturating_sub(model.fdir.len() as u32));
    r.poke(regs::FDIRCMD, cmd & !regs::FDIRCMD_CMD_MASK);
}
