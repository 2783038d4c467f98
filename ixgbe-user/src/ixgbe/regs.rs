//! 82599 register offsets and bits (82599 datasheet §8.2.3, "Device Registers — PF").
//!
//! Only what the driver and the model use. Queue-indexed registers are functions of the
//! queue number; callers pass queue numbers already checked against [`MAX_QUEUES`].

#![allow(missing_docs)] // Names are the datasheet's; each group cites its section.

/// Size of the memory BAR (BAR0) of the 82599: 512 KiB of CSR space (§9.3.6.1).
pub const BAR0_LEN: usize = 512 * 1024;
/// Receive and transmit queues per port (§1.3).
pub const MAX_QUEUES: u16 = 128;
/// RSS redirection table entries (§7.1.2.8.3).
pub const RETA_ENTRIES: usize = 128;
/// RSS reaches queues 0..16 only: RETA entries are 4 bits wide on the 82599.
pub const RSS_MAX_QUEUES: u16 = 16;

// General control (§8.2.3.1).
pub const CTRL: usize = 0x00000;
pub const CTRL_LNK_RST: u32 = 1 << 3;
pub const CTRL_RST: u32 = 1 << 26;
pub const CTRL_RST_MASK: u32 = CTRL_LNK_RST | CTRL_RST;
pub const STATUS: usize = 0x00008;
pub const CTRL_EXT: usize = 0x00018;
pub const CTRL_EXT_NS_DIS: u32 = 1 << 16;
/// Driver loaded (§8.2.3.1.3); also this driver's marker that global init finished.
pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;

// EEPROM/flash control (§8.2.3.2.1): ARD = auto-read of the EEPROM done.
pub const EEC: usize = 0x10010;
pub const EEC_ARD: u32 = 1 << 9;

// Interrupts (§8.2.3.5).
pub const EICR: usize = 0x00800;
pub const EIMS: usize = 0x00880;
pub const EIMC: usize = 0x00888;
pub const EIMC_ALL: u32 = 0x7FFF_FFFF;

// Receive DMA (§8.2.3.8).
pub const RDRXCTL: usize = 0x02F00;
pub const RDRXCTL_CRCSTRIP: u32 = 1 << 1;
pub const RDRXCTL_DMAIDONE: u32 = 1 << 3;
pub const RXCTRL: usize = 0x03000;
pub const RXCTRL_RXEN: u32 = 1;
pub const fn rxpbsize(i: usize) -> usize {
    0x03C00 + 4 * i
}
pub const RXPBSIZE_128KB: u32 = 0x0002_0000;

const fn rx_queue_reg(base_low: usize, base_high: usize, q: u16) -> usize {
    let q = q as usize;
    if q < 64 { base_low + 0x40 * q } else { base_high + 0x40 * (q - 64) }
}
pub const fn rdbal(q: u16) -> usize {
    rx_queue_reg(0x01000, 0x0D000, q)
}
pub const fn rdbah(q: u16) -> usize {
    rx_queue_reg(0x01004, 0x0D004, q)
}
pub const fn rdlen(q: u16) -> usize {
    rx_queue_reg(0x01008, 0x0D008, q)
}
pub const fn dca_rxctrl(q: u16) -> usize {
    rx_queue_reg(0x0100C, 0x0D00C, q)
}
pub const DCA_RXCTRL_DESC_RRO_EN: u32 = 1 << 9;
pub const DCA_RXCTRL_RX_DESC_WBRO_EN: u32 = 1 << 13;
/// Bit 12 is reserved and must be written 0 (§8.2.3.11.1).
pub const DCA_RXCTRL_RESERVED_BIT12: u32 = 1 << 12;
pub const fn rdh(q: u16) -> usize {
    rx_queue_reg(0x01010, 0x0D010, q)
}
pub const fn srrctl(q: u16) -> usize {
    rx_queue_reg(0x01014, 0x0D014, q)
}
pub const SRRCTL_BSIZEPKT_MASK: u32 = 0x1F;
pub const SRRCTL_DESCTYPE_MASK: u32 = 0x7 << 25;
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 0x1 << 25;
pub const SRRCTL_DROP_EN: u32 = 1 << 28;
pub const fn rdt(q: u16) -> usize {
    rx_queue_reg(0x01018, 0x0D018, q)
}
pub const fn rxdctl(q: u16) -> usize {
    rx_queue_reg(0x01028, 0x0D028, q)
}
pub const RXDCTL_ENABLE: u32 = 1 << 25;

// MAC (§8.2.3.22).
pub const HLREG0: usize = 0x04240;
pub const HLREG0_TXCRCEN: u32 = 1 << 0;
pub const HLREG0_RXCRCSTRP: u32 = 1 << 1;
pub const HLREG0_TXPADEN: u32 = 1 << 10;
pub const AUTOC: usize = 0x042A0;
pub const AUTOC_AN_RESTART: u32 = 1 << 12;
pub const AUTOC_LMS_MASK: u32 = 0x7 << 13;
pub const AUTOC_LMS_10G_SERIAL: u32 = 0x3 << 13;
pub const AUTOC_10G_PMA_PMD_MASK: u32 = 0x3 << 7;
pub const AUTOC_10G_XAUI: u32 = 0;
pub const LINKS: usize = 0x042A4;
pub const LINKS_UP: u32 = 1 << 30;
pub const LINKS_SPEED_MASK: u32 = 0x3 << 28;
pub const LINKS_SPEED_10G: u32 = 0x3 << 28;
pub const LINKS_SPEED_1G: u32 = 0x2 << 28;
pub const LINKS_SPEED_100M: u32 = 0x1 << 28;

// Receive filtering (§8.2.3.7).
pub const RXCSUM: usize = 0x05000;
pub const RXCSUM_IPPCSE: u32 = 1 << 12;
/// Packet checksum disable: the write-back's high dword then carries the RSS hash.
pub const RXCSUM_PCSD: u32 = 1 << 13;
pub const FCTRL: usize = 0x05080;
pub const FCTRL_MPE: u32 = 1 << 8;
pub const FCTRL_UPE: u32 = 1 << 9;
pub const FCTRL_BAM: u32 = 1 << 10;
pub const MRQC: usize = 0x05818;
pub const MRQC_MRQE_MASK: u32 = 0xF;
pub const MRQC_MRQE_RSS: u32 = 0x1;
pub const MRQC_RSS_FIELD_IPV4_TCP: u32 = 1 << 16;
pub const MRQC_RSS_FIELD_IPV4: u32 = 1 << 17;
pub const MRQC_RSS_FIELD_IPV4_UDP: u32 = 1 << 22;
pub const fn reta(i: usize) -> usize {
    0x05C00 + 4 * i
}
pub const fn rssrk(i: usize) -> usize {
    0x05C80 + 4 * i
}
pub const fn ral(i: usize) -> usize {
    0x0A200 + 8 * i
}
pub const fn rah(i: usize) -> usize {
    0x0A204 + 8 * i
}
pub const RAH_AV: u32 = 1 << 31;

// Transmit (§8.2.3.9).
pub const DMATXCTL: usize = 0x04A80;
pub const DMATXCTL_TE: u32 = 1;
pub const DTXMXSZRQ: usize = 0x08100;
pub const RTTDCS: usize = 0x04900;
pub const RTTDCS_ARBDIS: u32 = 1 << 6;
pub const fn txpbsize(i: usize) -> usize {
    0x0CC00 + 4 * i
}
pub const TXPBSIZE_40KB: u32 = 0x0000_A000;
pub const fn tdbal(q: u16) -> usize {
    0x06000 + 0x40 * q as usize
}
pub const fn tdbah(q: u16) -> usize {
    0x06004 + 0x40 * q as usize
}
pub const fn tdlen(q: u16) -> usize {
    0x06008 + 0x40 * q as usize
}
pub const fn tdh(q: u16) -> usize {
    0x06010 + 0x40 * q as usize
}
pub const fn tdt(q: u16) -> usize {
    0x06018 + 0x40 * q as usize
}
pub const fn txdctl(q: u16) -> usize {
    0x06028 + 0x40 * q as usize
}
pub const TXDCTL_ENABLE: u32 = 1 << 25;
pub const fn tdwbal(q: u16) -> usize {
    0x06038 + 0x40 * q as usize
}
pub const fn tdwbah(q: u16) -> usize {
    0x0603C + 0x40 * q as usize
}
pub const TDWBAL_HEAD_WB_EN: u32 = 1;

// Statistics (§8.2.3.23); all clear on read.
pub const CRCERRS: usize = 0x04000;
pub const fn mpc(i: usize) -> usize {
    0x03FA0 + 4 * i
}
pub const GPRC: usize = 0x04074;
pub const GPTC: usize = 0x04080;
pub const GORCL: usize = 0x04088;
pub const GORCH: usize = 0x0408C;
pub const GOTCL: usize = 0x04090;
pub const GOTCH: usize = 0x04094;
pub const fn qprc(q: u16) -> usize {
    0x01030 + 0x40 * q as usize
}
pub const fn qprdc(q: u16) -> usize {
    0x01430 + 0x40 * q as usize
}
pub const fn qptc(q: u16) -> usize {
    0x08680 + 4 * q as usize
}
/// Per-queue statistics registers exist for 16 queue groups only (§8.2.3.23.71).
pub const STAT_QUEUES: u16 = 16;

// Flow Director (§8.2.3.21).
pub const FDIRCTRL: usize = 0x0EE00;
pub const FDIRCTRL_PBALLOC_64K: u32 = 0x1;
pub const FDIRCTRL_INIT_DONE: u32 = 1 << 3;
pub const FDIRCTRL_PERFECT_MATCH: u32 = 1 << 4;
pub const FDIRCTRL_REPORT_STATUS: u32 = 1 << 5;
pub const FDIRCTRL_DROP_Q_SHIFT: u32 = 8;
pub const FDIRCTRL_FLEX_SHIFT: u32 = 16;
pub const FDIRCTRL_MAX_LENGTH_SHIFT: u32 = 24;
pub const FDIRCTRL_FULL_THRESH_SHIFT: u32 = 28;
pub const FDIRIP4M: usize = 0x0EE3C;
pub const FDIRSIP4M: usize = 0x0EE40;
pub const FDIRTCPM: usize = 0x0EE44;
pub const FDIRUDPM: usize = 0x0EE48;
pub const FDIRM: usize = 0x0EE70;
pub const FDIRM_VLANID: u32 = 1 << 0;
pub const FDIRM_VLANP: u32 = 1 << 1;
pub const FDIRM_POOL: u32 = 1 << 2;
pub const FDIRM_L4P: u32 = 1 << 3;
pub const FDIRM_FLEX: u32 = 1 << 4;
pub const FDIRHKEY: usize = 0x0EE68;
pub const FDIRSKEY: usize = 0x0EE6C;
pub const FDIRIPSA: usize = 0x0EE18;
pub const FDIRIPDA: usize = 0x0EE1C;
pub const FDIRPORT: usize = 0x0EE20;
pub const FDIRPORT_DST_SHIFT: u32 = 16;
pub const FDIRVLAN: usize = 0x0EE24;
pub const FDIRHASH: usize = 0x0EE28;
pub const FDIRHASH_BUCKET_MASK: u32 = 0x7FFF;
pub const FDIRHASH_BUCKET_VALID: u32 = 1 << 15;
pub const FDIRHASH_SW_INDEX_SHIFT: u32 = 16;
pub const FDIRCMD: usize = 0x0EE2C;
pub const FDIRCMD_CMD_MASK: u32 = 0x3;
pub const FDIRCMD_CMD_ADD_FLOW: u32 = 0x1;
pub const FDIRCMD_CMD_REMOVE_FLOW: u32 = 0x2;
pub const FDIRCMD_FILTER_UPDATE: u32 = 1 << 3;
pub const FDIRCMD_L4TYPE_SHIFT: u32 = 5;
pub const FDIRCMD_L4TYPE_MASK: u32 = 0x3 << 5;
pub const FDIRCMD_IPV6: u32 = 1 << 7;
pub const FDIRCMD_DROP: u32 = 1 << 9;
pub const FDIRCMD_LAST: u32 = 1 << 11;
pub const FDIRCMD_QUEUE_EN: u32 = 1 << 15;
pub const FDIRCMD_RX_QUEUE_SHIFT: u32 = 16;
pub const FDIRFREE: usize = 0x0EE38;
/// Default Flow Director hash keys (§7.1.2.7.15 recommends these values; the Linux ixgbe
/// driver uses them too).
pub const FDIR_BUCKET_HASH_KEY: u32 = 0x3DAD_14E2;
pub const FDIR_SIGNATURE_HASH_KEY: u32 = 0x174D_3614;

/// Whether reading `offset` clears it (statistics registers, §8.2.3.23, and EICR).
pub fn is_clear_on_read(offset: usize) -> bool {
    matches!(offset, CRCERRS | GPRC | GPTC | GORCL | GORCH | GOTCL | GOTCH | EICR)
        || (mpc(0)..mpc(8)).contains(&offset)
        || (qptc(0)..qptc(STAT_QUEUES)).contains(&offset)
        || (0..STAT_QUEUES).any(|q| offset == qprc(q) || offset == qprdc(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_registers_follow_the_datasheet_layout() {
        assert_eq!(rdbal(0), 0x01000);
        assert_eq!(rdt(1), 0x01058);
        assert_eq!(rxdctl(63), 0x01028 + 63 * 0x40);
        assert_eq!(rdbal(64), 0x0D000);
        assert_eq!(srrctl(127), 0x0D014 + 63 * 0x40);
        assert_eq!(txdctl(127), 0x06028 + 127 * 0x40);
        assert!(txdctl(127) < BAR0_LEN && rxdctl(127) < BAR0_LEN);
    }

    #[test]
    fn statistics_clear_on_read_and_controls_do_not() {
        assert!(is_clear_on_read(GPRC) && is_clear_on_read(mpc(7)) && is_clear_on_read(qprc(15)));
        assert!(
            !is_clear_on_read(rdt(0)) && !is_clear_on_read(CTRL) && !is_clear_on_read(rxdctl(16))
        );
    }
}
