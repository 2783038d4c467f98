//! Neither side trusts the other: the model counts and skips what a broken driver
//! programs, the driver survives garbage a broken device writes back, and the setup errors
//! a user can hit on a real machine are clear.

mod common;

use std::time::Duration;

use common::{ipv4_frame, receive_n};
use ixgbe_user::ixgbe::descriptors::{
    TXD_DCMD_DEXT, TXD_DCMD_EOP, TXD_DCMD_RS, TXD_DTYP_DATA, TXD_STAT_DD,
};
use ixgbe_user::ixgbe::{Bar0, pci, regs};
use ixgbe_user::model::ModelCounters;
use ixgbe_user::{
    Device, DeviceConfig, DmaAllocator, DmaError, HugepageDma, IxgbeError, IxgbeQueuePair,
    Model82599, ModelConfig, QueueConfig, QueuePair, memory_link,
};

const MAC: [u8; 6] = [0x02, 0, 0, 0x82, 0x59, 0x90];

/// Steps the model on a helper thread while `f` runs the driver, so the test controls
/// exactly one model and can inspect it afterwards.
fn with_model<T>(model: &mut Model82599, f: impl FnOnce() -> T + Send) -> T
where
    T: Send,
{
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let stepper = s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if model.step() == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
        let out = f();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        stepper.join().unwrap();
        out
    })
}

#[test]
fn reset_handshake_is_modelled_step_by_step() {
    let (wire, _peer) = memory_link();
    let mut model = Model82599::new(ModelConfig::default(), Box::new(wire)).unwrap();
    let bar = Bar0::from_model(model.handle().registers().clone());
    bar.set_reg32(regs::CTRL, regs::CTRL_RST_MASK);
    assert_eq!(bar.get_reg32(regs::CTRL) & regs::CTRL_RST_MASK, regs::CTRL_RST_MASK, "in reset");
    model.step();
    assert_eq!(bar.get_reg32(regs::CTRL) & regs::CTRL_RST_MASK, 0, "reset self-clears");
    assert_eq!(bar.get_reg32(regs::EEC) & regs::EEC_ARD, 0, "EEPROM not yet read");
    model.step();
    assert_ne!(bar.get_reg32(regs::EEC) & regs::EEC_ARD, 0);
    assert_eq!(bar.get_reg32(regs::RDRXCTL) & regs::RDRXCTL_DMAIDONE, 0, "DMA init pending");
    model.step();
    assert_ne!(bar.get_reg32(regs::RDRXCTL) & regs::RDRXCTL_DMAIDONE, 0);
    model.step();
    assert_ne!(bar.get_reg32(regs::LINKS) & regs::LINKS_UP, 0);
}

#[test]
fn attach_before_init_and_double_attach_are_refused() {
    let (wire, _peer) = memory_link();
    let mut model = Model82599::new(ModelConfig::default(), Box::new(wire)).unwrap();
    let handle = model.handle();
    let bar = Bar0::from_model(handle.registers().clone());
    let qc = QueueConfig { rx_ring_size: 16, tx_ring_size: 16, ..QueueConfig::default() };
    assert!(matches!(
        IxgbeQueuePair::attach(bar.clone(), handle.dma(), 0, &qc),
        Err(IxgbeError::NotInitialised)
    ));
    with_model(&mut model, || {
        let config =
            DeviceConfig { link_timeout: Duration::from_secs(1), ..DeviceConfig::default() };
        let dev = Device::init(bar.clone(), &config).unwrap();
        let first = IxgbeQueuePair::attach(dev.bar().clone(), handle.dma(), 3, &qc).unwrap();
        assert!(matches!(
            IxgbeQueuePair::attach(dev.bar().clone(), handle.dma(), 3, &qc),
            Err(IxgbeError::QueueBusy(3))
        ));
        assert!(matches!(
            IxgbeQueuePair::attach(dev.bar().clone(), handle.dma(), 128, &qc),
            Err(IxgbeError::QueueOutOfRange(128))
        ));
        drop(first);
        // Dropping the owner disables the queue, so it can be attached again.
        IxgbeQueuePair::attach(dev.bar().clone(), handle.dma(), 3, &qc).unwrap();
    });
}

#[test]
fn model_counts_and_skips_malformed_transmit_descriptors() {
    let (wire, peer) = memory_link();
    let mut model = Model82599::new(ModelConfig::default(), Box::new(wire)).unwrap();
    let handle = model.handle();
    let counters = model.counters();
    let bar = Bar0::from_model(handle.registers().clone());
    with_model(&mut model, || {
        let config =
            DeviceConfig { link_timeout: Duration::from_secs(1), ..DeviceConfig::default() };
        Device::init(bar.clone(), &config).unwrap();
    });
    // Hand-build a transmit ring: a descriptor pointing outside the DMA window, one with
    // length 0, one of the wrong type, then a good one.
    let ring = handle.dma().allocate(16 * 8, 4096).unwrap();
    let buf = handle.dma().allocate(64, 64).unwrap();
    let frame = ipv4_frame([0xFF; 6], MAC, false, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 42);
    let good = TXD_DCMD_EOP | TXD_DCMD_RS | TXD_DCMD_DEXT | TXD_DTYP_DATA;
    let descs: [(u64, u32); 4] = [
        (0xdead_0000_0000, good | 60),
        (buf.iova(), good),
        (buf.iova(), TXD_DCMD_EOP | TXD_DCMD_RS | 60),
        (buf.iova(), good | frame.len() as u32),
    ];
    // SAFETY: both regions are live and large enough for what is written.
    unsafe {
        std::ptr::copy_nonoverlapping(frame.as_ptr(), buf.virt(), frame.len());
        for (i, (addr, ctl)) in descs.iter().enumerate() {
            let d = ring.virt().add(i * 16);
            d.cast::<u64>().write_volatile(*addr);
            d.add(8).cast::<u32>().write_volatile(*ctl);
        }
    }
    bar.set_reg32(regs::tdbal(0), ring.iova() as u32);
    bar.set_reg32(regs::tdbah(0), (ring.iova() >> 32) as u32);
    bar.set_reg32(regs::tdlen(0), 16 * 8);
    bar.set_reg32(regs::txdctl(0), regs::TXDCTL_ENABLE);
    model.step();
    bar.set_reg32(regs::tdt(0), 4);
    model.step();
    assert_eq!(ModelCounters::get(&counters.tx_bad_descriptors), 3);
    assert_eq!(peer.recv(), Some(frame), "the good frame still goes out");
    assert_eq!(peer.recv(), None);
    assert_eq!(bar.get_reg32(regs::tdh(0)), 4, "bad descriptors are consumed, not stuck");
    for i in 0..4 {
        // SAFETY: in-ring status word.
        let status = unsafe { ring.virt().add(i * 16 + 12).cast::<u32>().read_volatile() };
        assert_eq!(status & TXD_STAT_DD, TXD_STAT_DD, "descriptor {i} returned to software");
    }
    // A tail beyond the ring is a bad ring, not a crash.
    bar.set_reg32(regs::tdt(0), 1000);
    model.step();
    assert!(ModelCounters::get(&counters.bad_rings) >= 1);
}

#[test]
fn driver_survives_garbage_receive_write_backs_and_no_descriptor_drops_are_counted() {
    let (wire, peer) = memory_link();
    let mut model = Model82599::new(ModelConfig::default(), Box::new(wire)).unwrap();
    let handle = model.handle();
    let counters = model.counters();
    let bar = Bar0::from_model(handle.registers().clone());
    let mut qp = with_model(&mut model, || {
        let config =
            DeviceConfig { link_timeout: Duration::from_secs(1), ..DeviceConfig::default() };
        let dev = Device::init(bar.clone(), &config).unwrap();
        let qc = QueueConfig { rx_ring_size: 8, tx_ring_size: 8, ..QueueConfig::default() };
        IxgbeQueuePair::attach(dev.bar().clone(), handle.dma(), 0, &qc).unwrap()
    });
    // 10 frames for a ring that can hold 7: the rest are dropped (SRRCTL.DROP_EN) and
    // counted, per queue, by the model's QPRDC.
    for i in 0..10 {
        peer.send(&ipv4_frame(MAC, [2; 6], true, [1, 1, 1, 1], [2, 2, 2, 2], i, 80, i.into()));
    }
    for _ in 0..4 {
        model.step();
    }
    assert_eq!(ModelCounters::get(&counters.rx_no_descriptor_drops), 3);
    assert_eq!(bar.get_reg32(regs::qprdc(0)), 3);

    // Corrupt two completed write-backs as a faulty device might: a length beyond the
    // buffer, and a descriptor without EOP.
    let rdbal = u64::from(bar.get_reg32(regs::rdbal(0)));
    let rdbah = u64::from(bar.get_reg32(regs::rdbah(0)));
    let ring = handle.dma().translate(rdbal | (rdbah << 32), 8 * 16).unwrap();
    // SAFETY: in-window ring of 8 descriptors; the driver is not running concurrently.
    unsafe {
        ring.add(12).cast::<u16>().write_volatile(60_000);
        let status = ring.add(16 + 8).cast::<u32>();
        status.write_volatile(status.read_volatile() & !0x2);
    }
    let got = receive_n(&mut qp, 5, Duration::from_millis(200));
    assert_eq!(got.len(), 5, "the 5 intact frames are delivered");
    assert_eq!(qp.stats().rx_dropped, 2, "the 2 garbage descriptors are dropped and counted");
    // The ring keeps working after recycling them.
    for _ in 0..2 {
        model.step();
    }
    peer.send(&ipv4_frame(MAC, [2; 6], true, [1, 1, 1, 1], [2, 2, 2, 2], 99, 80, 99));
    model.step();
    let later = receive_n(&mut qp, 1, Duration::from_millis(200));
    assert_eq!(later.len(), 1);
}

#[test]
fn nonexistent_pci_address_is_a_clear_error() {
    let err = pci::open_bar0("0000:fe:1f.7").unwrap_err();
    assert!(matches!(err, pci::PciError::NoSuchDevice(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("0000:fe:1f.7") && msg.contains("no PCI device"), "{msg}");
}

#[test]
fn missing_hugepages_are_a_clear_error() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Total:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    match HugepageDma::new() {
        Err(e @ DmaError::NoHugepages(_)) => {
            assert_eq!(total, 0, "hugepages are configured, yet: {e}");
            assert!(e.to_string().contains("nr_hugepages"), "{e}");
        }
        Ok(_) => assert!(total > 0),
        Err(e) => panic!("unexpected error: {e}"),
    }
}
