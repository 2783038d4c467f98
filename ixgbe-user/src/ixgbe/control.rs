//! Device-wide controls used by the control plane at run time: RSS key and redirection
//! table (82599 datasheet §7.1.2.8, registers §8.2.3.7.13–16), Flow Director perfect
//! filters (§7.1.2.7, registers §8.2.3.21), link status (§8.2.3.22.20 LINKS) and device
//! statistics (§8.2.3.23).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::bar::Bar0;
use super::fdir::{FdirFilter, bucket_hash};
use super::{IxgbeError, regs};
use crate::toeplitz::KEY_LEN;

/// Link state as LINKS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Link up.
    pub up: bool,
    /// Speed in Mbit/s (0 when down).
    pub speed_mbps: u32,
}

/// Device-wide counters, accumulated from the clear-on-read statistics registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Good packets received (GPRC).
    pub rx_packets: u64,
    /// Good packets transmitted (GPTC).
    pub tx_packets: u64,
    /// Good octets received, FCS included (GORC).
    pub rx_bytes: u64,
    /// Good octets transmitted, FCS included (GOTC).
    pub tx_bytes: u64,
    /// Packets missed because the receive packet buffer was full (sum of MPC).
    pub rx_missed: u64,
    /// Packets dropped because their queue had no descriptor (sum of QPRDC 0..16).
    pub rx_queue_drops: u64,
}

/// Handle for device-wide settings; cheap to clone, usable from any thread.
#[derive(Debug)]
pub struct DeviceControl {
    bar: Bar0,
    /// Software index given to the next Flow Director filter (FDIRHASH.SW_INDEX), which
    /// the device reports in the descriptor of matching packets.
    next_soft_id: AtomicU32,
    timeout: Duration,
}

impl Clone for DeviceControl {
    fn clone(&self) -> Self {
        DeviceControl {
            bar: self.bar.clone(),
            next_soft_id: AtomicU32::new(self.next_soft_id.load(Ordering::Relaxed)),
            timeout: self.timeout,
        }
    }
}

impl DeviceControl {
    /// A control handle over an initialised device's BAR0.
    pub fn new(bar: Bar0) -> Self {
        DeviceControl { bar, next_soft_id: AtomicU32::new(1), timeout: Duration::from_secs(2) }
    }

    /// Writes the 40-byte Toeplitz key to RSSRK (key byte 0 in bits 7:0 of the first RSSRK register).
    pub fn set_rss_key(&self, key: &[u8; KEY_LEN]) {
        for (i, chunk) in key.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            self.bar.set_reg32(regs::rssrk(i), word);
        }
    }

    /// Reads the Toeplitz key back.
    pub fn rss_key(&self) -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        for (i, chunk) in key.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&self.bar.get_reg32(regs::rssrk(i)).to_le_bytes());
        }
        key
    }

    /// Points RETA entry `index` (a flow group, 0..128) at `queue` (0..16). Takes effect
    /// for the next packet the device classifies; packets already queued stay where they
    /// are.
    pub fn set_reta_entry(&self, index: usize, queue: u16) -> Result<(), IxgbeError> {
        if index >= regs::RETA_ENTRIES {
            return Err(IxgbeError::InvalidArgument(format!("RETA index {index} >= 128")));
        }
        if queue >= regs::RSS_MAX_QUEUES {
            return Err(IxgbeError::QueueOutOfRange(queue));
        }
        let reg = regs::reta(index / 4);
        let mut bytes = self.bar.get_reg32(reg).to_le_bytes();
        bytes[index % 4] = queue as u8;
        self.bar.set_reg32(reg, u32::from_le_bytes(bytes));
        Ok(())
    }

    /// The queue RETA entry `index` points at.
    pub fn reta_entry(&self, index: usize) -> Result<u16, IxgbeError> {
        if index >= regs::RETA_ENTRIES {
            return Err(IxgbeError::InvalidArgument(format!("RETA index {index} >= 128")));
        }
        let bytes = self.bar.get_reg32(regs::reta(index / 4)).to_le_bytes();
        Ok(u16::from(bytes[index % 4] & 0x0F))
    }

    /// Spreads the 128 RETA entries round-robin over queues `0..queues`.
    pub fn spread_reta(&self, queues: u16) -> Result<(), IxgbeError> {
        if queues == 0 || queues > regs::RSS_MAX_QUEUES {
            return Err(IxgbeError::QueueOutOfRange(queues));
        }
        for index in 0..regs::RETA_ENTRIES {
            self.set_reta_entry(index, index as u16 % queues)?;
        }
        Ok(())
    }

    /// Turns RSS on for IPv4, IPv4+TCP and IPv4+UDP (MRQC), or off (all to queue 0).
    pub fn set_rss_enabled(&self, enabled: bool) {
        let mrqc = if enabled {
            regs::MRQC_MRQE_RSS
                | regs::MRQC_RSS_FIELD_IPV4
                | regs::MRQC_RSS_FIELD_IPV4_TCP
                | regs::MRQC_RSS_FIELD_IPV4_UDP
        } else {
            0
        };
        self.bar.set_reg32(regs::MRQC, mrqc);
    }

    fn program_fdir(
        &self,
        filter: &FdirFilter,
        command: u32,
        soft_id: u32,
    ) -> Result<(), IxgbeError> {
        if self.bar.get_reg32(regs::FDIRCTRL) & regs::FDIRCTRL_INIT_DONE == 0 {
            return Err(IxgbeError::InvalidArgument("Flow Director is not enabled".into()));
        }
        // §7.1.2.7: the filter fields first (addresses and ports as host-order values),
        // then FDIRHASH with the bucket the device will compute for matching packets, then
        // the command that makes the device take them all.
        self.bar.set_reg32(regs::FDIRIPSA, u32::from(filter.src_ip));
        self.bar.set_reg32(regs::FDIRIPDA, u32::from(filter.dst_ip));
        self.bar.set_reg32(
            regs::FDIRPORT,
            u32::from(filter.src_port) | (u32::from(filter.dst_port) << regs::FDIRPORT_DST_SHIFT),
        );
        self.bar.set_reg32(regs::FDIRVLAN, 0);
        let key = self.bar.get_reg32(regs::FDIRHKEY);
        let hash = bucket_hash(key, filter) | (soft_id << regs::FDIRHASH_SW_INDEX_SHIFT);
        self.bar.set_reg32(regs::FDIRHASH, hash);
        self.bar.set_reg32(
            regs::FDIRCMD,
            command
                | regs::FDIRCMD_LAST
                | (filter.protocol.flow_type() << regs::FDIRCMD_L4TYPE_SHIFT),
        );
        // The command field clears when the device has executed the command.
        self.bar
            .wait_reg32(regs::FDIRCMD, regs::FDIRCMD_CMD_MASK, 0, self.timeout)
            .map_err(|detail| IxgbeError::Timeout { step: "Flow Director command", detail })
    }

    /// Adds (or updates) a perfect filter sending matching packets to `queue` (any of the
    /// 128 queues; Flow Director, unlike RSS, reaches them all). Filters take precedence
    /// over RSS. Returns the filter's software id, which matching packets carry in their
    /// receive descriptor.
    pub fn add_fdir_filter(&self, filter: &FdirFilter, queue: u16) -> Result<u32, IxgbeError> {
        if queue >= regs::MAX_QUEUES {
            return Err(IxgbeError::QueueOutOfRange(queue));
        }
        let soft_id = self.next_soft_id.fetch_add(1, Ordering::Relaxed) & 0x7FFF;
        let command = regs::FDIRCMD_CMD_ADD_FLOW
            | regs::FDIRCMD_FILTER_UPDATE
            | regs::FDIRCMD_QUEUE_EN
            | (u32::from(queue) << regs::FDIRCMD_RX_QUEUE_SHIFT);
        self.program_fdir(filter, command, soft_id)?;
        Ok(soft_id)
    }

    /// Removes a perfect filter.
    pub fn remove_fdir_filter(&self, filter: &FdirFilter) -> Result<(), IxgbeError> {
        self.program_fdir(filter, regs::FDIRCMD_CMD_REMOVE_FLOW, 0)
    }

    /// Current link state.
    pub fn link_status(&self) -> LinkStatus {
        let links = self.bar.get_reg32(regs::LINKS);
        if links & regs::LINKS_UP == 0 {
            return LinkStatus { up: false, speed_mbps: 0 };
        }
        let speed_mbps = match links & regs::LINKS_SPEED_MASK {
            regs::LINKS_SPEED_10G => 10_000,
            regs::LINKS_SPEED_1G => 1_000,
            regs::LINKS_SPEED_100M => 100,
            _ => 0,
        };
        LinkStatus { up: true, speed_mbps }
    }

    /// Polls LINKS until the link is up or `timeout` passes; returns the last status.
    pub fn wait_for_link(&self, timeout: Duration) -> LinkStatus {
        let start = Instant::now();
        loop {
            let status = self.link_status();
            if status.up || start.elapsed() >= timeout {
                return status;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Adds the statistics accumulated since the previous call (the registers clear
    /// on read, so each call reads only the increments).
    pub fn read_stats(&self, stats: &mut DeviceStats) {
        let b = &self.bar;
        stats.rx_packets += u64::from(b.get_reg32(regs::GPRC));
        stats.tx_packets += u64::from(b.get_reg32(regs::GPTC));
        // The low half must be read first (§8.2.3.23.22).
        let gorcl = u64::from(b.get_reg32(regs::GORCL));
        stats.rx_bytes += gorcl | (u64::from(b.get_reg32(regs::GORCH)) << 32);
        let gotcl = u64::from(b.get_reg32(regs::GOTCL));
        stats.tx_bytes += gotcl | (u64::from(b.get_reg32(regs::GOTCH)) << 32);
        stats.rx_missed += (0..8).map(|i| u64::from(b.get_reg32(regs::mpc(i)))).sum::<u64>();
        stats.rx_queue_drops +=
            (0..regs::STAT_QUEUES).map(|q| u64::from(b.get_reg32(regs::qprdc(q)))).sum::<u64>();
    }
}
