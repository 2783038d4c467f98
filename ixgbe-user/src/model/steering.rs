//! Model receive filtering and queue selection: destination MAC filtering (82599 datasheet
//! §7.1.1), Flow Director perfect filters (§7.1.2.7), then RSS through the Toeplitz hash
//! and the redirection table (§7.1.2.8).
//!
//! The registers these read are sampled once per receive batch into a [`SteeringConfig`]
//! (a write the driver makes takes effect from the next batch, a few dozen frames later);
//! RETA is read per frame, so a flow-group move is seen by the very next frame.

use std::net::Ipv4Addr;

use super::{Model82599, ModelCounters};
use crate::ixgbe::descriptors::{
    RXD_RSSTYPE_IPV4, RXD_RSSTYPE_IPV4_TCP, RXD_RSSTYPE_IPV4_UDP, RXD_STAT_FLM,
};
use crate::ixgbe::fdir::{FdirFilter, L4Protocol};
use crate::ixgbe::regs;
use crate::toeplitz::{self, KEY_LEN, ToeplitzTable};

/// The parts of a frame that steering looks at.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Classified {
    pub(super) ipv4: Option<(Ipv4Addr, Ipv4Addr)>,
    pub(super) l4: Option<(L4Protocol, u16, u16)>,
}

/// Parses Ethernet + IPv4 + TCP/UDP ports with bounds-checked reads only.
pub(super) fn classify(frame: &[u8]) -> Classified {
    let mut out = Classified::default();
    if frame.get(12..14) != Some(&[0x08, 0x00]) {
        return out;
    }
    let Some(ip) = frame.get(14..) else { return out };
    let (Some(&ver_ihl), Some(flags), Some(&proto)) = (ip.first(), ip.get(6..8), ip.get(9)) else {
        return out;
    };
    let ihl = usize::from(ver_ihl & 0x0F) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        return out;
    }
    let (Some(src), Some(dst)) = (ip.get(12..16), ip.get(16..20)) else { return out };
    let addr = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    out.ipv4 = Some((addr(src), addr(dst)));
    // Fragments (MF set or non-zero offset) carry no reliable ports (§7.1.2.8.1).
    let fragmented = (u16::from_be_bytes([flags[0], flags[1]]) & 0x3FFF) != 0;
    if let (false, Some(l4), Some(ports)) =
        (fragmented, L4Protocol::from_ip_protocol(proto), ip.get(ihl..ihl + 4))
    {
        out.l4 = Some((
            l4,
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        ));
    }
    out
}

/// Where a frame goes and what the descriptor reports about the steering decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Steering {
    pub(super) queue: u16,
    pub(super) pkt_info: u32,
    pub(super) hash_dword: u32,
    pub(super) status: u32,
}

const QUEUE_ZERO: Steering = Steering { queue: 0, pkt_info: 0, hash_dword: 0, status: 0 };

/// The filtering and steering registers, as sampled at the start of a receive batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct SteeringConfig {
    fctrl: u32,
    /// RAL0/RAH0 when its address-valid bit is set.
    station: Option<[u8; 6]>,
    pcsd: bool,
    /// FDIRCTRL and FDIRHKEY, when the table is initialised and holds a filter.
    fdir: Option<(u32, u32)>,
    mrqc: u32,
}

impl SteeringConfig {
    /// Samples the registers, and rebuilds the cached Toeplitz table if RSSRK changed.
    pub(super) fn read(model: &mut Model82599) -> Self {
        let r = model.regs();
        let rah = r.peek(regs::rah(0));
        let station = (rah & regs::RAH_AV != 0).then(|| {
            let low = r.peek(regs::ral(0)).to_le_bytes();
            let high = rah.to_le_bytes();
            [low[0], low[1], low[2], low[3], high[0], high[1]]
        });
        let fdirctrl = r.peek(regs::FDIRCTRL);
        let fdir = (fdirctrl & regs::FDIRCTRL_INIT_DONE != 0 && !model.fdir.is_empty())
            .then(|| (fdirctrl, r.peek(regs::FDIRHKEY)));
        let config = SteeringConfig {
            fctrl: r.peek(regs::FCTRL),
            station,
            pcsd: r.peek(regs::RXCSUM) & regs::RXCSUM_PCSD != 0,
            fdir,
            mrqc: r.peek(regs::MRQC),
        };
        if config.rss_enabled() {
            let key = rss_key(model);
            if model.rx.toeplitz.as_ref().map(ToeplitzTable::key) != Some(&key) {
                model.rx.toeplitz = Some(ToeplitzTable::new(&key));
            }
        }
        config
    }

    fn rss_enabled(&self) -> bool {
        self.mrqc & regs::MRQC_MRQE_MASK == regs::MRQC_MRQE_RSS
    }

    /// Whether the MAC accepts a frame with this destination (§7.1.1.1).
    pub(super) fn accepts_destination(&self, frame: &[u8]) -> bool {
        let Some(dst) = frame.get(..6) else { return false };
        if self.fctrl & regs::FCTRL_UPE != 0 {
            return true;
        }
        if dst == [0xFF; 6] {
            return self.fctrl & regs::FCTRL_BAM != 0;
        }
        if dst[0] & 1 != 0 {
            return self.fctrl & regs::FCTRL_MPE != 0;
        }
        self.station.is_some_and(|mac| dst == mac)
    }

    /// The receive queue for a frame: a Flow Director hit, else the RSS choice, else 0.
    pub(super) fn steer(&self, model: &Model82599, c: &Classified) -> Steering {
        if let (Some((fdirctrl, key)), Some((src, dst)), Some((protocol, sport, dport))) =
            (self.fdir, c.ipv4, c.l4)
        {
            let f =
                FdirFilter { protocol, src_ip: src, dst_ip: dst, src_port: sport, dst_port: dport };
            if let Some(hit) = model.fdir.lookup(key, &f) {
                ModelCounters::bump(&model.counters.fdir_matches);
                let report = fdirctrl & regs::FDIRCTRL_REPORT_STATUS != 0;
                return Steering {
                    queue: hit.queue,
                    pkt_info: 0,
                    hash_dword: if report { hit.soft_id } else { 0 },
                    status: if report { RXD_STAT_FLM } else { 0 },
                };
            }
        }
        if !self.rss_enabled() {
            return QUEUE_ZERO;
        }
        let Some(table) = model.rx.toeplitz.as_ref() else { return QUEUE_ZERO };
        let mrqc = self.mrqc;
        let (hash, rss_type) = match (c.ipv4, c.l4) {
            (Some((s, d)), Some((L4Protocol::Tcp, sp, dp)))
                if mrqc & regs::MRQC_RSS_FIELD_IPV4_TCP != 0 =>
            {
                (
                    table.hash(&toeplitz::ipv4_l4_input(s.octets(), d.octets(), sp, dp)),
                    RXD_RSSTYPE_IPV4_TCP,
                )
            }
            (Some((s, d)), Some((L4Protocol::Udp, sp, dp)))
                if mrqc & regs::MRQC_RSS_FIELD_IPV4_UDP != 0 =>
            {
                (
                    table.hash(&toeplitz::ipv4_l4_input(s.octets(), d.octets(), sp, dp)),
                    RXD_RSSTYPE_IPV4_UDP,
                )
            }
            (Some((s, d)), _) if mrqc & regs::MRQC_RSS_FIELD_IPV4 != 0 => {
                (table.hash(&toeplitz::ipv4_input(s.octets(), d.octets())), RXD_RSSTYPE_IPV4)
            }
            // Not a hashable packet: RSS output index 0 (§7.1.2.8).
            _ => return QUEUE_ZERO,
        };
        let index = (hash & 0x7F) as usize;
        let entry = model.regs().peek(regs::reta(index / 4)).to_le_bytes()[index % 4];
        Steering {
            queue: u16::from(entry & 0x0F),
            pkt_info: rss_type,
            hash_dword: if self.pcsd { hash } else { 0 },
            status: 0,
        }
    }
}

fn rss_key(model: &Model82599) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    for (i, chunk) in key.chunks_exact_mut(4).enumerate() {
        chunk.copy_from_slice(&model.regs().peek(regs::rssrk(i)).to_le_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn classify_extracts_the_4_tuple() {
        let c = classify(&tcp_frame(1234, 80));
        assert_eq!(c.ipv4, Some((Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))));
        assert_eq!(c.l4, Some((L4Protocol::Tcp, 1234, 80)));
    }

    #[test]
    fn classify_ignores_ports_of_fragments_and_survives_truncation() {
        let mut f = tcp_frame(1, 2);
        f[20] = 0x20; // MF
        assert!(classify(&f).l4.is_none());
        assert!(classify(&f).ipv4.is_some());
        for len in 0..54 {
            let c = classify(&tcp_frame(1, 2)[..len]);
            assert!(len >= 38 || c.l4.is_none(), "length {len}");
        }
    }
}
