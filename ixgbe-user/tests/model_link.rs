//! Acceptance 1: the driver initialises two model ports joined by an in-memory link and
//! exchanges frames both ways, without privileges.

mod common;

use std::time::Duration;

use common::{ipv4_frame, receive_n};
use ixgbe_user::ixgbe::Bar0;
use ixgbe_user::{
    Device, DeviceConfig, IxgbeQueuePair, Model82599, ModelConfig, ModelRunner, QueueConfig,
    QueuePair, memory_link,
};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xA];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xB];

fn port(mac: [u8; 6], wire: ixgbe_user::MemoryLinkEnd) -> Model82599 {
    let config = ModelConfig { mac, dma_window_bytes: 16 << 20, ..ModelConfig::default() };
    Model82599::new(config, Box::new(wire)).unwrap()
}

fn send_all(q: &mut IxgbeQueuePair, frames: &[Vec<u8>]) {
    for f in frames {
        let mut sent = false;
        for _ in 0..10_000 {
            if q.tx_one(&mut |buf| {
                buf[..f.len()].copy_from_slice(f);
                f.len()
            })
            .unwrap()
            {
                sent = true;
                break;
            }
            q.tx_flush().unwrap();
            std::thread::sleep(Duration::from_micros(100));
        }
        assert!(sent, "transmit ring never freed a slot");
    }
    q.tx_flush().unwrap();
}

#[test]
fn two_ports_exchange_frames_both_ways_with_content_intact() {
    let (wire_a, wire_b) = memory_link();
    let a = port(MAC_A, wire_a);
    let b = port(MAC_B, wire_b);
    let (ha, hb) = (a.handle(), b.handle());
    let counters_a = a.counters();
    let _runner = ModelRunner::spawn(vec![a, b]).unwrap();

    let config = DeviceConfig { link_timeout: Duration::from_secs(2), ..DeviceConfig::default() };
    let dev_a = Device::init(Bar0::from_model(ha.registers().clone()), &config).unwrap();
    let dev_b = Device::init(Bar0::from_model(hb.registers().clone()), &config).unwrap();
    assert!(dev_a.initial_link().up && dev_b.initial_link().up);
    assert_eq!(dev_a.initial_link().speed_mbps, 10_000);

    let qc = QueueConfig { rx_ring_size: 64, tx_ring_size: 64, ..QueueConfig::default() };
    let mut qa = IxgbeQueuePair::attach(dev_a.bar().clone(), ha.dma(), 0, &qc).unwrap();
    let mut qb = IxgbeQueuePair::attach(dev_b.bar().clone(), hb.dma(), 0, &qc).unwrap();
    assert_eq!(qa.mac_address(), MAC_A, "MAC loaded from the model's EEPROM");
    assert_eq!(qb.mac_address(), MAC_B);

    // More frames than either ring holds, so both rings wrap and buffers get recycled.
    let a_to_b: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            ipv4_frame(MAC_B, MAC_A, true, [10, 0, 0, 1], [10, 0, 0, 2], 1000 + i, 80, i.into())
        })
        .collect();
    let b_to_a: Vec<Vec<u8>> = (0..150)
        .map(|i| {
            ipv4_frame(
                MAC_A,
                MAC_B,
                false,
                [10, 0, 0, 2],
                [10, 0, 0, 1],
                53,
                2000 + i,
                7000 + u32::from(i),
            )
        })
        .collect();

    let mut got_b = Vec::new();
    let mut got_a = Vec::new();
    for (chunk_ab, chunk_ba) in a_to_b.chunks(40).zip(b_to_a.chunks(30)) {
        send_all(&mut qa, chunk_ab);
        send_all(&mut qb, chunk_ba);
        got_b.extend(receive_n(&mut qb, chunk_ab.len(), Duration::from_secs(5)));
        got_a.extend(receive_n(&mut qa, chunk_ba.len(), Duration::from_secs(5)));
    }
    assert_eq!(got_b, a_to_b, "A -> B frames arrive complete and in order");
    assert_eq!(got_a, b_to_a, "B -> A frames arrive complete and in order");

    let (sa, sb) = (qa.stats(), qb.stats());
    assert_eq!((sa.tx_packets, sa.rx_packets), (200, 150));
    assert_eq!((sb.tx_packets, sb.rx_packets), (150, 200));
    assert_eq!(sb.rx_bytes, a_to_b.iter().map(|f| f.len() as u64).sum::<u64>());

    // Device statistics count the same traffic, FCS included.
    let mut stats_a = Default::default();
    dev_a.control().read_stats(&mut stats_a);
    assert_eq!(stats_a.tx_packets, 200);
    assert_eq!(stats_a.rx_packets, 150);
    assert_eq!(stats_a.tx_bytes, a_to_b.iter().map(|f| f.len() as u64 + 4).sum::<u64>());
    let mut again = Default::default();
    dev_a.control().read_stats(&mut again);
    assert_eq!(again.rx_packets, 0, "statistics clear on read");
    assert_eq!(ixgbe_user::model::ModelCounters::get(&counters_a.tx_bad_descriptors), 0);
}
