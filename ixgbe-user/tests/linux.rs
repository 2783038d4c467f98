//! TAP and AF_PACKET queue pairs exchanging frames with the Linux kernel in a network
//! namespace the test owns. Needs root; skips with a message otherwise.

mod linux_common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use ixgbe_user::QueuePair;
use ixgbe_user::linux::netns::{self, NetNamespace, VethPair, skip_unless_root, unique_name};
use ixgbe_user::linux::tap::TAP_TX_QUEUE_LEN;
use ixgbe_user::linux::{PacketSocket, TapDevice, interface_mtu};
use linux_common::*;

const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);

/// The kernel side of a TAP, moved into its own namespace and given KERNEL_IP.
fn tap_in_namespace() -> (TapDevice, NetNamespace) {
    let tap = TapDevice::open(&unique_name("tap")).unwrap();
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    netns::move_into(tap.name(), &ns).unwrap();
    ns.ip(&["link", "set", tap.name(), "up"]).unwrap();
    ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", tap.name()]).unwrap();
    (tap, ns)
}

#[test]
fn tap_kernel_answers_arp_and_ping() {
    if skip_unless_root("tap_kernel_answers_arp_and_ping") {
        return;
    }
    let (mut tap, ns) = tap_in_namespace();
    let kernel_mac_in_ns = ns.run_inside(|| tap.kernel_mac()).unwrap().unwrap();
    assert_ne!(kernel_mac_in_ns, tap.mac_address(), "both ends of the cable share a MAC");

    let kernel_mac = resolve_kernel_mac(&mut tap, OUR_IP, KERNEL_IP).expect("no ARP reply");
    assert_eq!(kernel_mac, kernel_mac_in_ns);

    for seq in 1..=3 {
        let reply = ping_kernel(&mut tap, kernel_mac, OUR_IP, KERNEL_IP, 0x4e50, seq)
            .unwrap_or_else(|| panic!("no echo reply to seq {seq}"));
        assert_eq!((reply.src, reply.dst), (KERNEL_IP, OUR_IP));
        assert!(reply.checksum_ok);
    }
    let stats = tap.stats();
    assert_eq!(stats.tx_packets, 4, "1 ARP request + 3 echo requests: {stats:?}");
    assert!(stats.rx_packets >= 4, "{stats:?}");
    assert_eq!(stats.tx_dropped, 0);
    drop(ns);
}

#[test]
fn tap_receives_udp_from_a_kernel_socket() {
    if skip_unless_root("tap_receives_udp_from_a_kernel_socket") {
        return;
    }
    let (mut tap, ns) = tap_in_namespace();
    let payload = b"hello from the namespace".to_vec();
    ns.run_inside(|| {
        let socket = UdpSocket::bind((KERNEL_IP, 40001)).unwrap();
        socket.send_to(&payload, (OUR_IP, 9)).unwrap();
    })
    .unwrap();
    // The kernel first resolves OUR_IP; `wait_for` answers, then the queued datagram flows.
    let datagram = wait_for(&mut tap, Duration::from_secs(3), Some(OUR_IP), parse_udp)
        .expect("UDP datagram never arrived");
    assert_eq!(datagram.src, KERNEL_IP);
    assert_eq!(datagram.src_port, 40001);
    assert_eq!(datagram.dst_port, 9);
    assert_eq!(datagram.payload, payload);
}

#[test]
fn tap_queues_a_burst_of_two_thousand_frames_while_the_reader_is_away() {
    if skip_unless_root("tap_queues_a_burst_of_two_thousand_frames_while_the_reader_is_away") {
        return;
    }
    let (mut tap, ns) = tap_in_namespace();
    let name = tap.name().to_owned();
    let queue_len = ns.run_inside(|| ixgbe_user::linux::interface_tx_queue_len(&name)).unwrap();
    assert!(queue_len.unwrap() >= TAP_TX_QUEUE_LEN);
    // A static neighbour entry, so the kernel sends at once instead of resolving first.
    let mac = tap.mac_address();
    let lladdr = mac.map(|b| format!("{b:02x}")).join(":");
    ns.ip(&["neigh", "add", &OUR_IP.to_string(), "lladdr", &lladdr, "dev", tap.name()]).unwrap();
    // Twice the kernel's default TAP queue (1000 frames), sent while nobody reads.
    const BURST: usize = 2000;
    ns.run_inside(|| {
        let socket = UdpSocket::bind((KERNEL_IP, 40002)).unwrap();
        for i in 0..BURST {
            socket.send_to(&(i as u32).to_be_bytes(), (OUR_IP, 9)).unwrap();
        }
    })
    .unwrap();
    let mut received = 0;
    while tap
        .rx_burst(64, &mut |frame| {
            if parse_udp(frame).is_some_and(|d| d.src_port == 40002) {
                received += 1;
            }
        })
        .unwrap()
        > 0
    {}
    assert_eq!(received, BURST, "every frame of the burst waited in the TAP queue");
}

#[test]
fn tap_mtu_follows_the_interface() {
    if skip_unless_root("tap_mtu_follows_the_interface") {
        return;
    }
    let mut tap = TapDevice::open(&unique_name("tap")).unwrap();
    assert!(ixgbe_user::linux::interface_is_up(tap.name()).unwrap());
    tap.set_mtu(1400).unwrap();
    assert_eq!(interface_mtu(tap.name()).unwrap(), 1400);
    assert_eq!(tap.max_frame_len(), 1414);
    let name = tap.name().to_owned();
    drop(tap);
    assert!(ixgbe_user::linux::interface_index(&name).is_err(), "TAP outlived its descriptor");
}

#[test]
fn tap_open_reports_bad_names() {
    if skip_unless_root("tap_open_reports_bad_names") {
        return;
    }
    let err = TapDevice::open("name-far-too-long-for-linux").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn packet_socket_on_veth_talks_to_kernel_in_namespace() {
    if skip_unless_root("packet_socket_on_veth_talks_to_kernel_in_namespace") {
        return;
    }
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    let veth = VethPair::create(&unique_name("va"), &unique_name("vb"), &ns, 1).unwrap();
    ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", veth.peer()]).unwrap();
    let mut socket = PacketSocket::open(veth.local()).unwrap();
    assert_eq!(socket.mac_address(), ixgbe_user::linux::interface_mac(veth.local()).unwrap());

    let kernel_mac = resolve_kernel_mac(&mut socket, OUR_IP, KERNEL_IP).expect("no ARP reply");
    let reply = ping_kernel(&mut socket, kernel_mac, OUR_IP, KERNEL_IP, 7, 1).expect("no reply");
    assert_eq!(reply.dst, OUR_IP);

    let payload = vec![0xa5; 1000];
    ns.run_inside(|| {
        let s = UdpSocket::bind((KERNEL_IP, 40002)).unwrap();
        s.send_to(&payload, (OUR_IP, 5000)).unwrap();
    })
    .unwrap();
    let datagram = wait_for(&mut socket, Duration::from_secs(3), Some(OUR_IP), parse_udp)
        .expect("UDP datagram never arrived");
    assert_eq!(datagram.payload, payload);

    // Our own transmissions must not echo back into our receive path.
    let before = socket.stats();
    send(&mut socket, |buf| {
        udp(buf, kernel_mac, socket_mac(&veth), OUR_IP, KERNEL_IP, 5000, 40003, b"x")
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut looped = 0;
    socket
        .rx_burst(64, &mut |frame| {
            if parse_udp(frame).is_some_and(|d| d.dst_port == 40003) {
                looped += 1;
            }
        })
        .unwrap();
    assert_eq!(looped, 0, "sent frame looped back to the sender");
    assert_eq!(socket.stats().tx_packets, before.tx_packets + 1);
}

fn socket_mac(veth: &VethPair) -> [u8; 6] {
    ixgbe_user::linux::interface_mac(veth.local()).unwrap()
}

#[test]
fn packet_socket_batches_are_bounded_by_max() {
    if skip_unless_root("packet_socket_batches_are_bounded_by_max") {
        return;
    }
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    let veth = VethPair::create(&unique_name("va"), &unique_name("vb"), &ns, 1).unwrap();
    let mut tx = PacketSocket::open(veth.local()).unwrap();
    // Outgoing frames are not looped back to their sender, so capture on the peer end.
    let sent = 100;
    let mut rx = ns.run_inside(|| PacketSocket::open(veth.peer())).unwrap().unwrap();
    let peer_mac = rx.mac_address();
    let our_mac = tx.mac_address();
    for i in 0..sent {
        send(&mut tx, |buf| udp(buf, peer_mac, our_mac, OUR_IP, KERNEL_IP, 1, 2, &[i as u8; 20]));
    }
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while seen.len() < sent && std::time::Instant::now() < deadline {
        let got = rx
            .rx_burst(7, &mut |frame| {
                if let Some(d) = parse_udp(frame).filter(|d| d.src_port == 1) {
                    seen.push(d.payload[0]);
                }
            })
            .unwrap();
        assert!(got <= 7, "rx_burst returned {got} > max");
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let expected: Vec<u8> = (0..sent).map(|i| i as u8).collect();
    assert_eq!(seen, expected, "frames lost or reordered");
}
