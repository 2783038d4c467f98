//! AF_XDP on a veth pair whose peer end lives in a network namespace the test creates: frames
//! exchanged with the Linux kernel through the XSK in both directions, in SKB (generic) and
//! driver (native) mode, and with two queues in driver mode. Needs root; skips otherwise.

mod linux_common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use ixgbe_user::QueuePair;
use ixgbe_user::afxdp::{
    AfXdpPort, BindMode, XdpAttachment, XdpError, XdpMode, XdpProgram, XskConfig, XskMap,
    XskSocket, attached_xdp,
};
use ixgbe_user::linux::interface_index;
use ixgbe_user::linux::netns::{NetNamespace, VethPair, skip_unless_root, unique_name};
use linux_common::*;

const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// Namespace + veth + attached program; fields drop in order (detach, delete link, delete
/// namespace), also when the test panics.
struct Fixture {
    port: AfXdpPort,
    veth: VethPair,
    ns: NetNamespace,
}

impl Fixture {
    fn new(mode: XdpMode, queues: u32) -> Fixture {
        let ns = NetNamespace::create(&unique_name("ns")).unwrap();
        let veth = VethPair::create(&unique_name("xa"), &unique_name("xb"), &ns, queues).unwrap();
        ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", veth.peer()]).unwrap();
        let port = AfXdpPort::open(veth.local(), mode, queues).unwrap();
        Fixture { port, veth, ns }
    }

    fn kernel_mac(&self) -> [u8; 6] {
        let peer = self.veth.peer().to_owned();
        self.ns.run_inside(move || ixgbe_user::linux::interface_mac(&peer)).unwrap().unwrap()
    }

    /// Sends one UDP datagram per source port from sockets inside the namespace.
    fn send_udp_from_kernel(&self, src_ports: &[u16], dst_port: u16, payload: &[u8]) {
        self.ns
            .run_inside(|| {
                for &port in src_ports {
                    let socket = UdpSocket::bind((KERNEL_IP, port)).unwrap();
                    socket.send_to(payload, (OUR_IP, dst_port)).unwrap();
                }
            })
            .unwrap();
    }
}

/// ARP, ICMP echo and UDP both ways between an XSK on queue 0 and the namespace's kernel.
fn exchange_with_kernel(mode: XdpMode, bind_mode: BindMode) {
    let fixture = Fixture::new(mode, 1);
    let ifindex = interface_index(fixture.veth.local()).unwrap();
    let attached = attached_xdp(ifindex).unwrap().expect("no XDP program reported");
    assert_eq!(attached.mode, Some(mode));
    assert_eq!(attached.program_id, fixture.port.program().id().unwrap());

    let config = XskConfig { bind_mode, ..XskConfig::default() };
    let mut xsk = fixture.port.open_queue(0, &config).unwrap();
    assert!(!xsk.is_zero_copy(), "veth has no zero-copy support");
    assert_eq!(xsk.max_frame_len(), 1514);

    // Kernel → XSK and back: ARP request out, reply in.
    let kernel_mac = resolve_kernel_mac(&mut xsk, OUR_IP, KERNEL_IP).expect("no ARP reply");
    assert_eq!(kernel_mac, fixture.kernel_mac());

    for seq in 1..=3 {
        let reply = ping_kernel(&mut xsk, kernel_mac, OUR_IP, KERNEL_IP, 0x1d, seq)
            .unwrap_or_else(|| panic!("no echo reply to seq {seq} in {mode} mode"));
        assert!(reply.checksum_ok);
        assert_eq!((reply.src, reply.dst), (KERNEL_IP, OUR_IP));
    }

    // UDP from a kernel socket to us.
    fixture.send_udp_from_kernel(&[41000], 7000, b"to the xsk");
    let datagram = wait_for(&mut xsk, Duration::from_secs(3), Some(OUR_IP), parse_udp)
        .expect("UDP from the namespace never reached the XSK");
    assert_eq!((datagram.src_port, datagram.dst_port), (41000, 7000));
    assert_eq!(datagram.payload, b"to the xsk");

    // UDP from us to a kernel socket.
    let received = fixture
        .ns
        .run_inside(|| {
            let socket = UdpSocket::bind((KERNEL_IP, 42000)).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let our_mac = xsk.mac_address();
            for i in 0..5u8 {
                send(&mut xsk, |buf| {
                    udp(buf, kernel_mac, our_mac, OUR_IP, KERNEL_IP, 7001, 42000, &[i; 100])
                });
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while got.len() < 5 {
                let Ok((len, from)) = socket.recv_from(&mut buf) else { break };
                assert_eq!(from, (OUR_IP, 7001).into());
                assert_eq!(len, 100);
                got.push(buf[0]);
            }
            got
        })
        .unwrap();
    assert_eq!(received, vec![0, 1, 2, 3, 4], "datagrams from the XSK lost or reordered");

    let stats = xsk.stats();
    assert!(stats.rx_packets >= 5, "{stats:?}");
    assert!(stats.tx_packets >= 9, "1 ARP + 3 pings + 5 UDP: {stats:?}");
    assert_eq!(stats.tx_dropped, 0, "{stats:?}");

    drop(xsk);
    let Fixture { port, veth, ns } = fixture;
    drop(port);
    assert_eq!(attached_xdp(ifindex).unwrap(), None, "program left attached after drop");
    drop((veth, ns));
}

#[test]
fn skb_mode_exchanges_arp_icmp_and_udp_with_the_kernel() {
    if skip_unless_root("skb_mode_exchanges_arp_icmp_and_udp_with_the_kernel") {
        return;
    }
    exchange_with_kernel(XdpMode::Skb, BindMode::Copy);
}

#[test]
fn driver_mode_exchanges_arp_icmp_and_udp_with_the_kernel() {
    if skip_unless_root("driver_mode_exchanges_arp_icmp_and_udp_with_the_kernel") {
        return;
    }
    // Auto tries zero-copy first; veth refuses it and the socket falls back to copy.
    exchange_with_kernel(XdpMode::Driver, BindMode::Auto);
}

/// Receives until `expected` UDP datagrams for `dst_port` arrived on any of `queues`;
/// returns source port → queues it arrived on.
fn collect_udp(
    queues: &mut [XskSocket],
    dst_port: u16,
    expected: usize,
) -> BTreeMap<u16, Vec<u32>> {
    let mut seen: BTreeMap<u16, Vec<u32>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.values().map(Vec::len).sum::<usize>() < expected && Instant::now() < deadline {
        let mut idle = true;
        for xsk in queues.iter_mut() {
            let queue = xsk.queue();
            let got = xsk
                .rx_burst(64, &mut |frame| {
                    if let Some(d) = parse_udp(frame).filter(|d| d.dst_port == dst_port) {
                        seen.entry(d.src_port).or_default().push(queue);
                    }
                })
                .unwrap();
            idle &= got == 0;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    seen
}

#[test]
fn driver_mode_two_queues_each_socket_receives_its_queue_and_both_transmit() {
    if skip_unless_root("driver_mode_two_queues_each_socket_receives_its_queue_and_both_transmit") {
        return;
    }
    let fixture = Fixture::new(XdpMode::Driver, 2);
    let mut queues = vec![
        fixture.port.open_queue(0, &XskConfig::default()).unwrap(),
        fixture.port.open_queue(1, &XskConfig::default()).unwrap(),
    ];
    let our_mac = queues[0].mac_address();
    let kernel_mac = fixture.kernel_mac();
    // With two queues the kernel's ARP replies may come back on either queue; a permanent
    // neighbour entry keeps this test about UDP steering.
    let mac_text = our_mac.map(|b| format!("{b:02x}")).join(":");
    fixture
        .ns
        .ip(&[
            "neigh",
            "replace",
            &OUR_IP.to_string(),
            "lladdr",
            &mac_text,
            "dev",
            fixture.veth.peer(),
            "nud",
            "permanent",
        ])
        .unwrap();

    // 32 flows, two datagrams each. The peer picks a tx queue per flow (skb hash), and veth
    // delivers on the rx queue with the same index: each flow must land on exactly one queue.
    let ports: Vec<u16> = (43000..43032).collect();
    fixture.send_udp_from_kernel(&ports, 7100, b"first");
    fixture.send_udp_from_kernel(&ports, 7100, b"second");
    let seen = collect_udp(&mut queues, 7100, 2 * ports.len());
    assert_eq!(seen.len(), ports.len(), "flows missing: {seen:?}");
    for (port, arrivals) in &seen {
        assert_eq!(arrivals.len(), 2, "flow {port}: {arrivals:?}");
        assert_eq!(arrivals[0], arrivals[1], "flow {port} moved between queues");
    }
    let per_queue = |q: u32| seen.values().filter(|a| a[0] == q).count();
    assert!(per_queue(0) > 0 && per_queue(1) > 0, "all flows on one queue: {seen:?}");
    // The counters see every frame, and the kernel may add its own (IPv6 neighbour
    // discovery, an ARP probe) to the 64 datagrams.
    let counted = queues[0].stats().rx_packets + queues[1].stats().rx_packets;
    assert!((64..64 + 8).contains(&counted), "{counted} frames counted for 64 datagrams");

    // Transmit through each queue to a kernel socket.
    let received = fixture
        .ns
        .run_inside(|| {
            let socket = UdpSocket::bind((KERNEL_IP, 44000)).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            for xsk in queues.iter_mut() {
                let tag = xsk.queue() as u8;
                send(xsk, |buf| {
                    udp(buf, kernel_mac, our_mac, OUR_IP, KERNEL_IP, 7200, 44000, &[tag; 64])
                });
            }
            let mut tags = Vec::new();
            let mut buf = [0u8; 256];
            while tags.len() < 2 {
                let Ok((len, _)) = socket.recv_from(&mut buf) else { break };
                assert_eq!(len, 64);
                tags.push(buf[0]);
            }
            tags.sort_unstable();
            tags
        })
        .unwrap();
    assert_eq!(received, vec![0, 1], "a queue's transmission did not arrive");
}

#[test]
fn zero_copy_on_veth_is_refused_clearly() {
    if skip_unless_root("zero_copy_on_veth_is_refused_clearly") {
        return;
    }
    let fixture = Fixture::new(XdpMode::Driver, 1);
    let config = XskConfig { bind_mode: BindMode::ZeroCopy, ..XskConfig::default() };
    match fixture.port.open_queue(0, &config) {
        Err(XdpError::Syscall { call, source }) => {
            assert_eq!(call, "bind(AF_XDP)");
            assert!(source.raw_os_error().is_some(), "{source}");
        }
        other => panic!("zero-copy bind on veth should fail, got {other:?}"),
    }
}

#[test]
fn a_second_program_is_not_attached_over_ours_and_ours_is_detached_on_drop() {
    if skip_unless_root("a_second_program_is_not_attached_over_ours_and_ours_is_detached_on_drop") {
        return;
    }
    let fixture = Fixture::new(XdpMode::Skb, 1);
    let ifindex = interface_index(fixture.veth.local()).unwrap();
    let map = XskMap::create(1).unwrap();
    let other = XdpProgram::load_redirect(&map).unwrap();
    let err = XdpAttachment::attach(ifindex, &other, XdpMode::Skb).unwrap_err();
    assert!(matches!(err, XdpError::AttachRejected { .. }), "{err:?}");
    let ours = fixture.port.program().id().unwrap();
    assert_eq!(attached_xdp(ifindex).unwrap().map(|a| a.program_id), Some(ours));
    let Fixture { port, veth, ns } = fixture;
    drop(port);
    assert_eq!(attached_xdp(ifindex).unwrap(), None);
    drop((veth, ns));
}

#[test]
fn driver_mode_on_veth_needs_enough_rx_queues_for_the_peer() {
    if skip_unless_root("driver_mode_on_veth_needs_enough_rx_queues_for_the_peer") {
        return;
    }
    // Local end: 1 rx queue; peer: 2 tx queues. veth refuses native XDP and says why.
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    let local = unique_name("xa");
    let peer = unique_name("xb");
    ixgbe_user::linux::netns::ip(&[
        "link",
        "add",
        &local,
        "numrxqueues",
        "1",
        "numtxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "netns",
        ns.name(),
    ])
    .unwrap();
    struct DeleteLink(String);
    impl Drop for DeleteLink {
        fn drop(&mut self) {
            let _ = ixgbe_user::linux::netns::ip(&["link", "delete", &self.0]);
        }
    }
    let _link = DeleteLink(local.clone());
    match AfXdpPort::open(&local, XdpMode::Driver, 1) {
        Err(XdpError::AttachRejected { source, kernel_message, .. }) => {
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC expected: {source}");
            let message = kernel_message.expect("veth explains the refusal in an extended ack");
            assert!(message.contains("rx queues"), "{message}");
        }
        other => panic!("expected AttachRejected, got {other:?}"),
    }
}

/// More frames than the UMEM has chunks in each direction, so receive chunks must be recycled
/// through the fill ring and transmit chunks through the completion ring; each flush carries
/// more frames than copy mode sends per kick.
fn bursts_larger_than_the_umem(mode: XdpMode) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const FRAMES: usize = 3000;
    const BATCH: usize = 200;
    let fixture = Fixture::new(mode, 1);
    let config = XskConfig { frame_count: 1024, ring_size: 512, ..XskConfig::default() };
    let mut xsk = fixture.port.open_queue(0, &config).unwrap();
    let our_mac = xsk.mac_address();
    let kernel_mac = fixture.kernel_mac();
    let mac_text = our_mac.map(|b| format!("{b:02x}")).join(":");
    fixture
        .ns
        .ip(&[
            "neigh",
            "replace",
            &OUR_IP.to_string(),
            "lladdr",
            &mac_text,
            "dev",
            fixture.veth.peer(),
            "nud",
            "permanent",
        ])
        .unwrap();

    // Receive: the kernel sends in batches, we drain between batches.
    let mut received = vec![false; FRAMES];
    for batch in 0..FRAMES / BATCH {
        fixture
            .ns
            .run_inside(|| {
                let socket = UdpSocket::bind((KERNEL_IP, 0)).unwrap();
                for i in batch * BATCH..(batch + 1) * BATCH {
                    socket.send_to(&(i as u32).to_be_bytes(), (OUR_IP, 7300)).unwrap();
                }
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let target = (batch + 1) * BATCH;
        while received.iter().filter(|&&r| r).count() < target && Instant::now() < deadline {
            xsk.rx_burst(64, &mut |frame| {
                if let Some(d) = parse_udp(frame).filter(|d| d.dst_port == 7300) {
                    let index = u32::from_be_bytes(d.payload[..4].try_into().unwrap()) as usize;
                    received[index] = true;
                }
            })
            .unwrap();
        }
    }
    let missing = received.iter().filter(|&&r| !r).count();
    assert_eq!(missing, 0, "{missing} of {FRAMES} datagrams never reached the XSK");

    // Transmit: a capture socket on the peer counts what arrives.
    let captured = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let capture = scope.spawn(|| {
            fixture
                .ns
                .run_inside(|| {
                    let mut socket =
                        ixgbe_user::linux::PacketSocket::open(fixture.veth.peer()).unwrap();
                    ready_tx.send(()).unwrap();
                    let mut seen = vec![false; FRAMES];
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while done.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
                        socket
                            .rx_burst(64, &mut |frame| {
                                if let Some(d) = parse_udp(frame).filter(|d| d.dst_port == 47000) {
                                    let i = u32::from_be_bytes(d.payload[..4].try_into().unwrap());
                                    if let Some(slot) = seen.get_mut(i as usize) {
                                        *slot = true;
                                    }
                                    captured.fetch_add(1, Ordering::Release);
                                }
                            })
                            .unwrap();
                    }
                    seen
                })
                .unwrap()
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        for batch in 0..FRAMES / BATCH {
            for i in batch * BATCH..(batch + 1) * BATCH {
                let payload = (i as u32).to_be_bytes();
                let deadline = Instant::now() + Duration::from_secs(2);
                while !xsk
                    .tx_one(&mut |buf| {
                        udp(buf, kernel_mac, our_mac, OUR_IP, KERNEL_IP, 7301, 47000, &payload)
                    })
                    .unwrap()
                {
                    xsk.tx_flush().unwrap();
                    assert!(Instant::now() < deadline, "transmit chunks never came back");
                }
            }
            xsk.tx_flush().unwrap();
            // Let the capture keep up (its socket buffer is finite), bounded in time.
            let deadline = Instant::now() + Duration::from_secs(3);
            while captured.load(Ordering::Acquire) < (batch + 1) * BATCH
                && Instant::now() < deadline
            {
                xsk.tx_flush().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        done.store(1, Ordering::Release);
        let seen = capture.join().unwrap();
        let missing = seen.iter().filter(|&&s| !s).count();
        assert_eq!(missing, 0, "{missing} of {FRAMES} frames sent through the XSK never arrived");
    });
    let stats = xsk.stats();
    assert_eq!(stats.tx_packets, FRAMES as u64, "{stats:?}");
    assert_eq!(stats.tx_dropped, 0, "{stats:?}");
    assert!(stats.rx_packets >= FRAMES as u64, "{stats:?}");
}

#[test]
fn skb_mode_bursts_larger_than_the_umem_flow_both_ways() {
    if skip_unless_root("skb_mode_bursts_larger_than_the_umem_flow_both_ways") {
        return;
    }
    bursts_larger_than_the_umem(XdpMode::Skb);
}

#[test]
fn driver_mode_bursts_larger_than_the_umem_flow_both_ways() {
    if skip_unless_root("driver_mode_bursts_larger_than_the_umem_flow_both_ways") {
        return;
    }
    bursts_larger_than_the_umem(XdpMode::Driver);
}
