//! The 82599 driver talks to the Linux kernel through the 82599 model: the model port's wire
//! is a TAP whose kernel side lives in a namespace the test creates, or a veth end reached
//! through AF_PACKET whose peer lives there. Frames go driver → model → wire → kernel and
//! back (ARP request/reply, ICMP echo). Needs root; skips with a message otherwise.

mod linux_common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ixgbe_user::ixgbe::Bar0;
use ixgbe_user::linux::netns::{self, NetNamespace, VethPair, skip_unless_root, unique_name};
use ixgbe_user::linux::wire::{PacketWire, TapWire};
use ixgbe_user::linux::{PacketSocket, TapDevice};
use ixgbe_user::model::ModelCounters;
use ixgbe_user::{
    Device, DeviceConfig, IxgbeQueuePair, Model82599, ModelConfig, ModelRunner, QueueConfig,
    QueuePair, WireBackend,
};
use linux_common::*;

const MODEL_MAC: [u8; 6] = [0x02, 0x82, 0x59, 0x90, 0x00, 0x01];
const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);

/// A running model port with the driver initialised on it. Fields drop in order: the queue
/// disables itself while the model still runs, then the model stops, and only then do the
/// wire's interfaces and the namespace go (the caller holds those after this struct).
struct DriverOnModel {
    queue: IxgbeQueuePair,
    device: Device,
    counters: std::sync::Arc<ModelCounters>,
    _runner: ModelRunner,
}

fn driver_on_model(wire: Box<dyn WireBackend>) -> DriverOnModel {
    let config = ModelConfig { mac: MODEL_MAC, dma_window_bytes: 8 << 20, ..Default::default() };
    let port = Model82599::new(config, wire).unwrap();
    let handle = port.handle();
    let counters = port.counters();
    let runner = ModelRunner::spawn(vec![port]).unwrap();
    let config = DeviceConfig { link_timeout: Duration::from_secs(2), ..DeviceConfig::default() };
    let device = Device::init(Bar0::from_model(handle.registers().clone()), &config).unwrap();
    assert!(device.initial_link().up, "the wire is present, so LINKS.UP must be set");
    let qc = QueueConfig { rx_ring_size: 64, tx_ring_size: 64, ..QueueConfig::default() };
    let queue = IxgbeQueuePair::attach(device.bar().clone(), handle.dma(), 0, &qc).unwrap();
    assert_eq!(queue.mac_address(), MODEL_MAC);
    DriverOnModel { queue, device, counters, _runner: runner }
}

/// ARP for the kernel's address, then three pings, all through driver and model; checks
/// that the kernel's answers came back through the model's receive path.
fn arp_and_ping_through_the_model(port: &mut DriverOnModel, expected_kernel_mac: [u8; 6]) {
    let kernel_mac =
        resolve_kernel_mac(&mut port.queue, OUR_IP, KERNEL_IP).expect("no ARP reply via model");
    assert_eq!(kernel_mac, expected_kernel_mac);
    for seq in 1..=3 {
        let reply = ping_kernel(&mut port.queue, kernel_mac, OUR_IP, KERNEL_IP, 0x8259, seq)
            .unwrap_or_else(|| panic!("no echo reply to seq {seq} via model"));
        assert_eq!((reply.src, reply.dst), (KERNEL_IP, OUR_IP));
        assert!(reply.checksum_ok);
    }
    let stats = port.queue.stats();
    assert_eq!(stats.tx_packets, 4, "1 ARP request + 3 echo requests: {stats:?}");
    assert!(stats.rx_packets >= 4, "ARP reply + 3 echo replies: {stats:?}");
    assert_eq!(stats.rx_dropped, 0, "{stats:?}");
    assert!(ModelCounters::get(&port.counters.wire_tx_frames) >= 4);
    assert!(ModelCounters::get(&port.counters.wire_rx_frames) >= 4);
    assert_eq!(ModelCounters::get(&port.counters.tx_bad_descriptors), 0);

    let mut device_stats = Default::default();
    port.device.control().read_stats(&mut device_stats);
    assert_eq!(device_stats.tx_packets, 4, "GPTC counts what the model put on the wire");
}

#[test]
fn driver_reaches_the_kernel_through_a_model_port_wired_to_a_tap() {
    if skip_unless_root("driver_reaches_the_kernel_through_a_model_port_wired_to_a_tap") {
        return;
    }
    let tap = TapDevice::open(&unique_name("mtp")).unwrap();
    let tap_name = tap.name().to_owned();
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    netns::move_into(&tap_name, &ns).unwrap();
    ns.ip(&["link", "set", &tap_name, "up"]).unwrap();
    ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", &tap_name]).unwrap();
    let kernel_mac =
        ns.run_inside(|| ixgbe_user::linux::interface_mac(&tap_name)).unwrap().unwrap();

    let mut port = driver_on_model(Box::new(TapWire::new(tap)));
    arp_and_ping_through_the_model(&mut port, kernel_mac);

    // The kernel learnt the model port's MAC for OUR_IP: the model is a host on its LAN.
    let neighbours = ns.ip(&["neigh", "show", "dev", &tap_name]).unwrap();
    assert!(neighbours.contains("02:82:59:90:00:01"), "{neighbours}");
    drop(port);
    drop(ns);
}

#[test]
fn driver_reaches_the_kernel_through_a_model_port_wired_to_a_veth_by_af_packet() {
    if skip_unless_root(
        "driver_reaches_the_kernel_through_a_model_port_wired_to_a_veth_by_af_packet",
    ) {
        return;
    }
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    let veth = VethPair::create(&unique_name("mva"), &unique_name("mvb"), &ns, 1).unwrap();
    ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", veth.peer()]).unwrap();
    let peer = veth.peer().to_owned();
    let kernel_mac = ns.run_inside(|| ixgbe_user::linux::interface_mac(&peer)).unwrap().unwrap();

    let wire = PacketWire::new(PacketSocket::open(veth.local()).unwrap())
        .with_carrier_of(veth.local())
        .unwrap();
    let mut port = driver_on_model(Box::new(wire));
    arp_and_ping_through_the_model(&mut port, kernel_mac);

    // Pulling the cable: the peer end going down takes the veth's carrier, and the model's
    // LINKS.UP with it; bringing it back restores the link.
    let link_becomes = |up: bool| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if port.device.control().link_status().up == up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    };
    ns.ip(&["link", "set", &peer, "down"]).unwrap();
    assert!(link_becomes(false), "link stayed up after the veth peer went down");
    ns.ip(&["link", "set", &peer, "up"]).unwrap();
    assert!(link_becomes(true), "link did not come back with the veth peer");
    let reply = ping_kernel(&mut port.queue, kernel_mac, OUR_IP, KERNEL_IP, 0x8259, 9);
    assert!(reply.is_some(), "no echo reply after the link came back");
    drop(port);
    drop(veth);
    drop(ns);
}
