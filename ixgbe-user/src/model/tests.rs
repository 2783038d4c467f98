//! Register-level tests of the engine's batching: a test programs the rings itself and
//! steps the engine by hand, so it sees exactly what crosses each batch boundary.

use super::*;
use crate::DmaAllocator;
use crate::dma::DmaRegion;
use crate::ixgbe::descriptors::{
    RX_STATUS_OFFSET, RXD_STAT_DD, TX_STATUS_OFFSET, TXD_DCMD_DEXT, TXD_DCMD_EOP, TXD_DCMD_RS,
    TXD_DTYP_DATA, TXD_STAT_DD,
};
use crate::link::{MemoryLinkEnd, memory_link};

const MAC: [u8; 6] = [0x02, 0, 0, 0x82, 0x59, 0x01];
const RING: usize = 8;
const BUFFER: usize = 2048;

/// A frame for the port, numbered in its payload.
fn numbered(n: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&MAC);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xEE]);
    f[14..16].copy_from_slice(&n.to_be_bytes());
    f
}

fn number_of(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[14], frame[15]])
}

struct RxRig {
    model: Model82599,
    peer: MemoryLinkEnd,
    ring: DmaRegion,
    buffers: DmaRegion,
    /// Next descriptor software expects the device to fill.
    next: usize,
}

impl RxRig {
    /// A port with queue 0 receiving into a ring of [`RING`] descriptors, all but one given
    /// to the device.
    fn new(drop_when_full: bool, packet_buffer_bytes: usize) -> Self {
        let (wire, peer) = memory_link();
        let config = ModelConfig {
            mac: MAC,
            dma_window_bytes: 1 << 20,
            rx_packet_buffer_bytes: packet_buffer_bytes,
        };
        let model = Model82599::new(config, Box::new(wire)).unwrap();
        let handle = model.handle();
        let ring = handle.dma().allocate(RING * DESC_LEN_BYTES, 4096).unwrap();
        let buffers = handle.dma().allocate(RING * BUFFER, 4096).unwrap();
        let r = handle.registers();
        r.write(regs::rdbal(0), ring.iova() as u32);
        r.write(regs::rdbah(0), (ring.iova() >> 32) as u32);
        r.write(regs::rdlen(0), (RING * DESC_LEN_BYTES) as u32);
        let drop = if drop_when_full { regs::SRRCTL_DROP_EN } else { 0 };
        r.write(regs::srrctl(0), (BUFFER / 1024) as u32 | drop);
        r.write(regs::rxdctl(0), regs::RXDCTL_ENABLE);
        r.write(regs::RXCTRL, regs::RXCTRL_RXEN);
        let mut rig = RxRig { model, peer, ring, buffers, next: 0 };
        for i in 0..RING {
            rig.arm(i);
        }
        rig.model.step();
        assert_ne!(r.read(regs::rxdctl(0)) & regs::RXDCTL_ENABLE, 0, "queue enabled");
        rig.set_tail(RING - 1);
        rig
    }

    fn regs(&self) -> &RegisterFile {
        &self.model.handle.registers
    }

    /// Writes descriptor `i` in read format, pointing at buffer `i`.
    fn arm(&self, i: usize) {
        let addr = self.buffers.iova() + (i * BUFFER) as u64;
        // SAFETY: descriptor `i < RING` lies inside the ring region.
        unsafe {
            let d = self.ring.virt().add(i * DESC_LEN_BYTES);
            d.cast::<u64>().write_volatile(addr);
            d.add(8).cast::<u64>().write_volatile(0);
        }
    }

    fn set_tail(&self, tail: usize) {
        self.regs().write(regs::rdt(0), tail as u32);
    }

    /// Steps until the engine is idle.
    fn run(&mut self) {
        for _ in 0..1000 {
            if self.model.step() == 0 {
                return;
            }
        }
        panic!("the engine never went idle");
    }

    /// Takes every completed descriptor, as a driver would, returns their frame numbers,
    /// and gives the descriptors back to the device.
    fn harvest(&mut self) -> Vec<u16> {
        let mut got = Vec::new();
        loop {
            let i = self.next;
            // SAFETY: in-ring descriptor words, written by the engine before DD.
            let (status, len) = unsafe {
                let d = self.ring.virt().add(i * DESC_LEN_BYTES);
                (
                    d.add(RX_STATUS_OFFSET).cast::<u32>().read_volatile(),
                    d.add(12).cast::<u32>().read_volatile(),
                )
            };
            if status & RXD_STAT_DD == 0 {
                break;
            }
            assert_eq!(len, 60);
            // SAFETY: buffer `i` holds the 60 bytes the engine wrote.
            let frame = unsafe {
                std::slice::from_raw_parts(self.buffers.virt().add(i * BUFFER), 60).to_vec()
            };
            got.push(number_of(&frame));
            self.arm(i);
            self.set_tail(i);
            self.next = (i + 1) % RING;
        }
        got
    }
}

const DESC_LEN_BYTES: usize = 16;

#[test]
fn a_full_ring_with_drop_enabled_counts_every_dropped_frame_and_keeps_order() {
    let mut rig = RxRig::new(true, 512 * 1024);
    // More than one batch (STEP_BUDGET) arrives while the ring has room for 7.
    let total = (2 * STEP_BUDGET + 5) as u16;
    for n in 0..total {
        rig.peer.send(&numbered(n));
    }
    rig.run();
    assert_eq!(rig.harvest(), (0..7).collect::<Vec<u16>>(), "the first 7 land, in order");
    let dropped = u32::from(total) - 7;
    let counters = rig.model.counters();
    assert_eq!(ModelCounters::get(&counters.rx_no_descriptor_drops), u64::from(dropped));
    assert_eq!(rig.regs().read(regs::qprdc(0)), dropped, "QPRDC counts each drop");
    assert_eq!(rig.regs().read(regs::GPRC), 7);
    assert_eq!(rig.regs().read(regs::qprc(0)), 7);
    assert_eq!(rig.regs().read(regs::GORCL), 7 * 64, "octets include the FCS");
    assert_eq!(rig.regs().read(regs::rdh(0)), 7);

    // With descriptors back, later frames flow again and RDH wraps.
    for n in 1000..1010 {
        rig.peer.send(&numbered(n));
        rig.run();
        assert_eq!(rig.harvest(), vec![n]);
    }
    assert_eq!(rig.regs().read(regs::rdh(0)) as usize, (7 + 10) % RING);
    assert_eq!(ModelCounters::get(&counters.rx_no_descriptor_drops), u64::from(dropped));
}

#[test]
fn without_drop_enable_frames_wait_and_none_is_lost_or_reordered_across_batches() {
    let mut rig = RxRig::new(false, 512 * 1024);
    let total = (3 * STEP_BUDGET + 11) as u16;
    for n in 0..total {
        rig.peer.send(&numbered(n));
    }
    let mut got = Vec::new();
    for _ in 0..10_000 {
        rig.model.step();
        got.extend(rig.harvest());
        if got.len() == usize::from(total) {
            break;
        }
    }
    assert_eq!(got, (0..total).collect::<Vec<u16>>());
    let counters = rig.model.counters();
    assert_eq!(ModelCounters::get(&counters.rx_no_descriptor_drops), 0);
    assert_eq!(rig.regs().read(regs::qprdc(0)), 0);
    assert_eq!(rig.regs().read(regs::mpc(0)), 0);
    assert_eq!(rig.regs().read(regs::GPRC), u32::from(total));
}

#[test]
fn a_full_packet_buffer_counts_missed_frames() {
    // Room for 10 frames of 60 bytes while the ring (7 descriptors, no drop) is full.
    let mut rig = RxRig::new(false, 600);
    for n in 0..40 {
        rig.peer.send(&numbered(n));
    }
    rig.run();
    let delivered = rig.harvest();
    assert_eq!(delivered, (0..7).collect::<Vec<u16>>());
    rig.run();
    let mut rest = rig.harvest();
    rig.run();
    rest.extend(rig.harvest());
    // The frames that waited in the buffer arrive in order after the first seven.
    assert!(rest.iter().zip(7..).all(|(&a, b)| a == b), "{rest:?}");
    let missed = rig.regs().read(regs::mpc(0));
    assert_eq!(missed as usize, 40 - 7 - rest.len(), "each frame is delivered or missed");
    assert!(missed > 0);
}

#[test]
fn a_latched_write_after_a_long_idle_spell_is_still_applied() {
    let mut rig = RxRig::new(true, 512 * 1024);
    for _ in 0..100 {
        assert_eq!(rig.model.step(), 0, "idle");
    }
    rig.regs().write(regs::rxdctl(0), 0);
    rig.model.step();
    assert_eq!(rig.regs().read(regs::rxdctl(0)) & regs::RXDCTL_ENABLE, 0);
    rig.peer.send(&numbered(1));
    rig.run();
    assert!(rig.harvest().is_empty());
    assert_eq!(ModelCounters::get(&rig.model.counters().rx_disabled_drops), 1);
}

#[test]
fn transmitted_frames_cross_in_order_over_several_steps_and_are_counted() {
    let (wire, peer) = memory_link();
    let config = ModelConfig { mac: MAC, dma_window_bytes: 1 << 20, ..ModelConfig::default() };
    let mut model = Model82599::new(config, Box::new(wire)).unwrap();
    let handle = model.handle();
    let r = handle.registers();
    let slots = 256;
    let ring = handle.dma().allocate(slots * DESC_LEN_BYTES, 4096).unwrap();
    let buffers = handle.dma().allocate(slots * 64, 4096).unwrap();
    let total = 200usize;
    for i in 0..total {
        let frame = numbered(i as u16);
        let addr = buffers.iova() + (i * 64) as u64;
        let ctl = TXD_DCMD_EOP | TXD_DCMD_RS | TXD_DCMD_DEXT | TXD_DTYP_DATA | 60;
        // SAFETY: descriptor and buffer `i < slots` are inside their regions.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), buffers.virt().add(i * 64), 60);
            let d = ring.virt().add(i * DESC_LEN_BYTES);
            d.cast::<u64>().write_volatile(addr);
            d.add(8).cast::<u32>().write_volatile(ctl);
        }
    }
    r.write(regs::tdbal(0), ring.iova() as u32);
    r.write(regs::tdbah(0), (ring.iova() >> 32) as u32);
    r.write(regs::tdlen(0), (slots * DESC_LEN_BYTES) as u32);
    r.write(regs::DMATXCTL, regs::DMATXCTL_TE);
    r.write(regs::txdctl(0), regs::TXDCTL_ENABLE);
    model.step();
    r.write(regs::tdt(0), total as u32);
    let mut steps = 0;
    while model.step() > 0 {
        steps += 1;
    }
    assert!(steps > 1, "the ring takes more than one batch");
    let got: Vec<u16> = std::iter::from_fn(|| peer.recv()).map(|f| number_of(&f)).collect();
    assert_eq!(got, (0..total as u16).collect::<Vec<u16>>());
    assert_eq!(r.read(regs::tdh(0)) as usize, total);
    assert_eq!(r.read(regs::GPTC) as usize, total);
    assert_eq!(r.read(regs::qptc(0)) as usize, total);
    assert_eq!(ModelCounters::get(&model.counters().wire_tx_frames) as usize, total);
    for i in 0..total {
        // SAFETY: in-ring status word.
        let status = unsafe {
            ring.virt().add(i * DESC_LEN_BYTES + TX_STATUS_OFFSET).cast::<u32>().read_volatile()
        };
        assert_eq!(status & TXD_STAT_DD, TXD_STAT_DD, "descriptor {i} done");
    }
}

#[test]
fn ring_base_low_bits_are_ignored_as_on_the_silicon() {
    let mut rig = RxRig::new(true, 512 * 1024);
    // RDBAL bits 6:0 do not exist on the 82599: a base written with them set still names
    // the 128-byte aligned ring (and must not trip the model's alignment checks).
    rig.regs().write(regs::rdbal(0), rig.ring.iova() as u32 | 0x48);
    rig.peer.send(&numbered(5));
    rig.run();
    assert_eq!(rig.harvest(), vec![5]);

    let r = rig.model.handle.registers.clone();
    r.write(regs::tdbal(0), rig.ring.iova() as u32 | 0x08);
    r.write(regs::tdbah(0), (rig.ring.iova() >> 32) as u32);
    r.write(regs::tdlen(0), (RING * DESC_LEN_BYTES) as u32);
    r.write(regs::DMATXCTL, regs::DMATXCTL_TE);
    r.write(regs::txdctl(0), regs::TXDCTL_ENABLE);
    rig.model.step();
    r.write(regs::tdt(0), 1);
    rig.run();
    assert_eq!(r.read(regs::tdh(0)), 1, "the descriptor at the aligned base was fetched");
}

#[test]
fn a_window_sized_for_n_queue_pairs_holds_exactly_n() {
    use crate::ixgbe::Bar0;
    use crate::{Device, DeviceConfig, IxgbeError, IxgbeQueuePair, QueueConfig};

    // Ring sizes that are not a page multiple, so the page rounding of every region counts.
    let qc = QueueConfig { rx_ring_size: 1000, tx_ring_size: 200, ..QueueConfig::default() };
    let pairs = 3;
    let window = ModelConfig::dma_window_for(pairs, &qc).unwrap();
    let config = ModelConfig { dma_window_bytes: window, ..ModelConfig::default() };
    let (wire, _peer) = memory_link();
    let model = Model82599::new(config, Box::new(wire)).unwrap();
    let handle = model.handle();
    let _runner = ModelRunner::spawn(vec![model]).unwrap();
    let device = Device::init(
        Bar0::from_model(Arc::clone(handle.registers())),
        &DeviceConfig { link_timeout: Duration::from_secs(2), ..DeviceConfig::default() },
    )
    .unwrap();
    let attached: Vec<IxgbeQueuePair> = (0..pairs as u16)
        .map(|q| IxgbeQueuePair::attach(device.bar().clone(), handle.dma(), q, &qc).unwrap())
        .collect();
    assert_eq!(attached.len(), pairs);
    let one_more = IxgbeQueuePair::attach(device.bar().clone(), handle.dma(), 3, &qc);
    assert!(matches!(one_more, Err(IxgbeError::Dma(_))), "{one_more:?}");
    assert_eq!(ModelConfig::dma_window_for(usize::MAX, &qc), None, "overflow is refused");
}
