//! Model receive path (82599 datasheet §7.1): MAC filtering (§7.1.1), queue selection by
//! Flow Director (§7.1.2.7) then RSS (§7.1.2.8), one-buffer advanced descriptors with
//! write-back (§7.1.6), head/tail ring semantics (§7.1.9), drops and their counters.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{Ordering, fence};

use super::{Model82599, ModelCounters, STEP_BUDGET};
use crate::ixgbe::descriptors::{
    DESC_LEN, RX_STATUS_OFFSET, RXD_ERR_RXE, RXD_RSSTYPE_IPV4, RXD_RSSTYPE_IPV4_TCP,
    RXD_RSSTYPE_IPV4_UDP, RXD_STAT_DD, RXD_STAT_EOP, RXD_STAT_FLM, RingView,
};
use crate::ixgbe::fdir::{FdirFilter, L4Protocol};
use crate::ixgbe::regs;
use crate::toeplitz::{self, KEY_LEN, ToeplitzTable};

/// Largest frame the model takes from a wire (jumbo frames included).
const MAX_WIRE_FRAME: usize = 16 * 1024;

/// Receive-side state that is not in registers: the packet buffer (frames waiting for a
/// descriptor) and the cached Toeplitz tables for the current RSSRK.
pub(super) struct RxState {
    fifo: VecDeque<Vec<u8>>,
    fifo_bytes: usize,
    capacity: usize,
    scratch: Vec<u8>,
    toeplitz: Option<ToeplitzTable>,
}

impl RxState {
    pub(super) fn new(capacity: usize) -> Self {
        RxState {
            fifo: VecDeque::new(),
            fifo_bytes: 0,
            capacity,
            scratch: vec![0; MAX_WIRE_FRAME],
            toeplitz: None,
        }
    }

    pub(super) fn clear(&mut self) {
        self.fifo.clear();
        self.fifo_bytes = 0;
    }
}

/// The parts of a frame that steering looks at.
#[derive(Clone, Copy, Debug, Default)]
struct Classified {
    ipv4: Option<(Ipv4Addr, Ipv4Addr)>,
    l4: Option<(L4Protocol, u16, u16)>,
}

/// Parses Ethernet + IPv4 + TCP/UDP ports with bounds-checked reads only.
fn classify(frame: &[u8]) -> Classified {
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
struct Steering {
    queue: u16,
    pkt_info: u32,
    hash_dword: u32,
    status: u32,
}

fn rss_key(model: &Model82599) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    for (i, chunk) in key.chunks_exact_mut(4).enumerate() {
        chunk.copy_from_slice(&model.regs().peek(regs::rssrk(i)).to_le_bytes());
    }
    key
}

fn steer(model: &mut Model82599, c: &Classified) -> Steering {
    let r = model.regs();
    let pcsd = r.peek(regs::RXCSUM) & regs::RXCSUM_PCSD != 0;
    let fdirctrl = r.peek(regs::FDIRCTRL);
    if fdirctrl & regs::FDIRCTRL_INIT_DONE != 0 {
        if let (Some((src, dst)), Some((protocol, sport, dport))) = (c.ipv4, c.l4) {
            let key = r.peek(regs::FDIRHKEY);
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
    }
    let r = model.regs();
    let mrqc = r.peek(regs::MRQC);
    if mrqc & regs::MRQC_MRQE_MASK != regs::MRQC_MRQE_RSS {
        return Steering { queue: 0, pkt_info: 0, hash_dword: 0, status: 0 };
    }
    let key = rss_key(model);
    if model.rx.toeplitz.as_ref().map(ToeplitzTable::key) != Some(&key) {
        model.rx.toeplitz = Some(ToeplitzTable::new(&key));
    }
    let Some(table) = model.rx.toeplitz.as_ref() else {
        return Steering { queue: 0, pkt_info: 0, hash_dword: 0, status: 0 };
    };
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
        _ => return Steering { queue: 0, pkt_info: 0, hash_dword: 0, status: 0 },
    };
    let index = (hash & 0x7F) as usize;
    let entry = model.regs().peek(regs::reta(index / 4)).to_le_bytes()[index % 4];
    Steering {
        queue: u16::from(entry & 0x0F),
        pkt_info: rss_type,
        hash_dword: if pcsd { hash } else { 0 },
        status: 0,
    }
}

fn accepts_destination(model: &Model82599, frame: &[u8]) -> bool {
    let r = model.regs();
    let fctrl = r.peek(regs::FCTRL);
    let Some(dst) = frame.get(..6) else { return false };
    if fctrl & regs::FCTRL_UPE != 0 {
        return true;
    }
    if dst == [0xFF; 6] {
        return fctrl & regs::FCTRL_BAM != 0;
    }
    if dst[0] & 1 != 0 {
        return fctrl & regs::FCTRL_MPE != 0;
    }
    let rah = r.peek(regs::rah(0));
    if rah & regs::RAH_AV == 0 {
        return false;
    }
    let low = r.peek(regs::ral(0)).to_le_bytes();
    let high = rah.to_le_bytes();
    dst == [low[0], low[1], low[2], low[3], high[0], high[1]]
}

enum Outcome {
    /// The frame left the packet buffer (delivered or dropped).
    Done,
    /// The queue has no descriptor and drops are off: the frame waits, and so does every
    /// frame behind it (the packet buffer is one FIFO).
    Wait,
}

fn deliver(model: &mut Model82599, frame: &[u8]) -> Outcome {
    if !accepts_destination(model, frame) {
        ModelCounters::bump(&model.counters.rx_filtered);
        return Outcome::Done;
    }
    let steering = steer(model, &classify(frame));
    let q = steering.queue;
    let r = model.regs();
    let rxdctl = r.peek(regs::rxdctl(q));
    if rxdctl & regs::RXDCTL_ENABLE == 0 || r.peek(regs::RXCTRL) & regs::RXCTRL_RXEN == 0 {
        ModelCounters::bump(&model.counters.rx_disabled_drops);
        r.count(regs::qprdc(q % regs::STAT_QUEUES), 1);
        return Outcome::Done;
    }
    let ring_len = r.peek(regs::rdlen(q)) as usize;
    let base = u64::from(r.peek(regs::rdbal(q))) | (u64::from(r.peek(regs::rdbah(q))) << 32);
    let count = ring_len / DESC_LEN;
    let head = r.peek(regs::rdh(q)) as usize;
    let tail = r.peek(regs::rdt(q)) as usize;
    let ring_ptr = model.handle.dma.translate(base, ring_len);
    let (Some(ring_ptr), true) =
        (ring_ptr, ring_len % 128 == 0 && count > 0 && head < count && tail < count)
    else {
        ModelCounters::bump(&model.counters.bad_rings);
        r.count(regs::qprdc(q % regs::STAT_QUEUES), 1);
        return Outcome::Done;
    };
    let srrctl = r.peek(regs::srrctl(q));
    if head == tail {
        if srrctl & regs::SRRCTL_DROP_EN != 0 {
            ModelCounters::bump(&model.counters.rx_no_descriptor_drops);
            r.count(regs::qprdc(q % regs::STAT_QUEUES), 1);
            return Outcome::Done;
        }
        return Outcome::Wait;
    }
    // SAFETY: `translate` checked that the whole ring lies in the DMA window; its base is
    // 128-byte aligned when RDBAL is (a misaligned base only makes accesses slower on x86,
    // and RingView rounds offsets down to natural alignment within the ring).
    let ring = unsafe { RingView::new(ring_ptr, count) };
    let buffer_addr = ring.read_u64(head, 0);
    let buffer_len = match srrctl & regs::SRRCTL_BSIZEPKT_MASK {
        0 => 2048, // BSIZEPKT 0 falls back to RCTL's 2 KiB default
        kib => kib as usize * 1024,
    };
    let mut status = RXD_STAT_DD | RXD_STAT_EOP | steering.status;
    let mut written = frame.len();
    if frame.len() > buffer_len {
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
    ring.write_u32(head, 0, steering.pkt_info);
    ring.write_u32(head, 4, steering.hash_dword);
    ring.write_u32(head, 12, written as u32);
    // The buffer and the rest of the write-back must be visible before DD hands the
    // descriptor to software.
    ring.status(head, RX_STATUS_OFFSET).store(status, Ordering::Release);
    r.poke(regs::rdh(q), ((head + 1) % count) as u32);
    if written > 0 {
        // Octet counters include the 4-byte FCS the MAC stripped (§8.2.3.23.22).
        r.count(regs::GPRC, 1);
        r.count64(regs::GORCL, regs::GORCH, written as u64 + 4);
        if q < regs::STAT_QUEUES {
            r.count(regs::qprc(q), 1);
        }
    }
    Outcome::Done
}

/// Moves frames from the wire into the packet buffer and from there into receive queues.
pub(super) fn process(model: &mut Model82599) -> usize {
    let mut work = 0;
    for _ in 0..STEP_BUDGET {
        let Ok(Some(n)) = model.wire.receive(&mut model.rx.scratch) else { break };
        work += 1;
        ModelCounters::bump(&model.counters.wire_rx_frames);
        let frame = model.rx.scratch.get(..n).unwrap_or_default().to_vec();
        if model.rx.fifo_bytes + n > model.rx.capacity {
            model.regs().count(regs::mpc(0), 1);
        } else {
            model.rx.fifo_bytes += n;
            model.rx.fifo.push_back(frame);
        }
    }
    fence(Ordering::Acquire);
    for _ in 0..STEP_BUDGET {
        let Some(frame) = model.rx.fifo.pop_front() else { break };
        match deliver(model, &frame) {
            Outcome::Done => {
                work += 1;
                model.rx.fifo_bytes -= frame.len();
            }
            Outcome::Wait => {
                model.rx.fifo.push_front(frame);
                break;
            }
        }
    }
    work
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
