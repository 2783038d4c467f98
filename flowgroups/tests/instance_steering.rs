//! Kernel instance behaviour around steering and the control plane: forwarding of foreign
//! flow groups, ARP replication, captures, heartbeats, app detach, shutdown.

mod instance_support;

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flowgroups::control::{ControlMessage, InstanceState};
use flowgroups::instance::InstanceError;
use flowgroups::instance::pcap::{capture_file_name, parse_pcap};
use flowgroups::instance::plane_link::{PlaneMessage, recv_plane_message, send_capture_request};
use instance_support::*;
use tcp_core::stack::Event;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_frame_of_a_foreign_group_goes_to_the_owners_ring_and_is_counted() {
    // Instance 1 is not running, so its inbound ring keeps what instance 0 forwards.
    let net =
        Net::start("t-inst-fwd", Options { instances: 2, skip: vec![1], ..Options::default() });
    let mut peer = Peer::new();
    let (foreign_port, foreign_group) = peer_port_for(1, 2, 80, 40000);
    let (local_port, local_group) = peer_port_for(0, 2, 80, 40000);
    introduce_peer(&net, 0);
    let foreign = peer.syn_frame(foreign_port, 80);
    let local = peer.syn_frame(local_port, 80);
    // Both arrive on queue 0, as from a NIC without RSS control.
    net.instances[0].rx.push(foreign.clone());
    net.instances[0].rx.push(local);
    let s0 = net.shared(0);
    wait_for("the forward to be published", WAIT, || {
        (s0.forwarded_packets.load(Ordering::Relaxed) == 1).then_some(())
    });
    assert_eq!(s0.cross_instance_msgs.load(Ordering::Relaxed), 1);
    let mut ring = net.control.forwarding(0, 1).unwrap().consumer().unwrap();
    // First the copy of the peer's ARP request, turned into a reply so that instance 1
    // learns the peer's address without answering the request a second time.
    let arp = ring.pop().unwrap().expect("the ARP copy");
    let mut expected = peer_arp_request();
    expected[21] = 2;
    assert_eq!(arp.frame().unwrap(), &expected[..]);
    let slot = ring.pop().unwrap().expect("the frame is on instance 1's ring");
    assert_eq!(slot.frame().unwrap(), &foreign[..], "forwarded unchanged");
    assert_eq!(slot.group, foreign_group);
    assert!(ring.pop().unwrap().is_none(), "only the foreign frame was forwarded");
    // The local SYN was served here: no listener, so a reset goes back to the peer.
    let reply = wait_for("the reset", WAIT, || net.instances[0].tx.pop());
    let (src, dst) = tcp_tuple(&reply).unwrap();
    assert_eq!((src.port(), dst.port()), (80, local_port));
    // Only the owner counts a group's packets.
    let group = |g: u32| net.control.flow_group(g).unwrap();
    wait_for("group counters", WAIT, || {
        (group(local_group).syns.load(Ordering::Relaxed) == 1).then_some(())
    });
    assert_eq!(group(foreign_group).syns.load(Ordering::Relaxed), 0);
    assert_eq!(group(foreign_group).packets.load(Ordering::Relaxed), 0);
}

#[test]
fn arp_reaches_every_instance_but_is_answered_once() {
    let net = Net::start("t-inst-arp", Options { instances: 2, ..Options::default() });
    let mut net = net;
    let mut peer = Peer::new();
    let now = peer.now();
    peer.stack.connect(now, SocketAddrV4::new(SERVER_IP, 80), None).unwrap();
    let mut buf = vec![0u8; 1514];
    let n = peer.stack.poll_transmit(now, &mut buf).unwrap();
    assert!(is_arp(&buf[..n]), "the peer asks for the server's address first");
    net.inject(buf[..n].to_vec());
    let reply = wait_for("the ARP reply", WAIT, || net.instances[0].tx.pop());
    assert!(is_arp(&reply));
    // An app whose home is instance 1 connects to the peer: instance 1 learned the peer's
    // MAC from the replicated request, so its first frame is the SYN, not an ARP request.
    let app = net.add_app(1);
    let sock = app.connect(SocketAddrV4::new(PEER_IP, 9000), false).unwrap();
    let first = wait_for("instance 1's first frame", WAIT, || net.instances[1].tx.pop());
    let (src, dst) = tcp_tuple(&first).expect("a TCP segment, not an ARP request");
    assert_eq!(dst, SocketAddrV4::new(PEER_IP, 9000));
    assert_eq!(first[0..6], peer_mac_bytes(), "addressed to the learned MAC");
    // The source port was chosen so that the reply hashes back to instance 1.
    let cfg = flowgroups::flowgroup::FlowGroupConfig::default();
    let g = flowgroups::flowgroup::flow_group_of(&cfg, PEER_IP, SERVER_IP, 9000, src.port());
    assert_eq!(net.control.flow_group(g).unwrap().owner.load(Ordering::Relaxed), 1);
    assert_eq!(app.addresses(sock).unwrap().0.port(), src.port());
    // Nobody but instance 0 answered the request, and no fast-path message was counted.
    std::thread::sleep(Duration::from_millis(30));
    assert!(net.instances[1].tx.pop().is_none(), "instance 1 sent nothing else");
    assert!(net.instances[0].tx.pop().is_none(), "one ARP reply only");
    for i in 0..2 {
        assert_eq!(net.shared(i).cross_instance_msgs.load(Ordering::Relaxed), 0);
    }
    assert!(net.shutdown().iter().all(|r| r.is_ok()));
}

fn peer_mac_bytes() -> [u8; 6] {
    PEER_MAC.0
}

#[test]
fn capture_writes_the_next_frames_seen_and_sent_to_pcap() {
    let dir = std::env::temp_dir().join(format!("netpop-inst-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut net =
        Net::start("t-inst-cap", Options { capture_dir: dir.clone(), ..Options::default() });
    let mut peer = Peer::new();
    introduce_peer(&net, 0);
    // Capture 1: into a file the plane opened; capture 2 follows into the directory.
    let out = dir.join("given.pcap");
    let file = std::fs::File::create(&out).unwrap();
    send_capture_request(&net.instances[0].plane, 4, 11, Some(std::os::fd::AsFd::as_fd(&file)))
        .unwrap();
    drop(file);
    net.instances[0].doorbell.notify().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let syn1 = peer.syn_frame(50001, 81);
    let syn2 = peer.syn_frame(50002, 81);
    net.instances[0].rx.push(syn1.clone());
    let rst1 = wait_for("reset 1", WAIT, || net.instances[0].tx.pop());
    net.instances[0].rx.push(syn2.clone());
    let rst2 = wait_for("reset 2", WAIT, || net.instances[0].tx.pop());
    let plane = &mut net.instances[0].plane;
    plane.set_read_timeout(Some(WAIT)).unwrap();
    let (done, _) = recv_plane_message(plane).unwrap();
    assert_eq!(done, PlaneMessage::CaptureDone { seq: 11, frames: 4, errno: 0 });
    let recs = parse_pcap(&std::fs::read(&out).unwrap()).unwrap();
    let frames: Vec<Vec<u8>> = recs.into_iter().map(|r| r.data).collect();
    assert_eq!(frames, vec![syn1, rst1, syn2, rst2], "received and sent frames, in order");

    send_capture_request(&net.instances[0].plane, 1, 12, None).unwrap();
    net.instances[0].doorbell.notify().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let syn3 = peer.syn_frame(50003, 81);
    net.instances[0].rx.push(syn3.clone());
    let plane = &mut net.instances[0].plane;
    let (done, _) = recv_plane_message(plane).unwrap();
    assert_eq!(done, PlaneMessage::CaptureDone { seq: 12, frames: 1, errno: 0 });
    let path = dir.join(capture_file_name(0, 12));
    let recs = parse_pcap(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].data, syn3);
    assert!(net.shutdown().iter().all(|r| r.is_ok()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn heartbeats_are_answered_and_shutdown_ends_run() {
    let mut net = Net::start("t-inst-hb", Options::default());
    let mut from = net.control.instance_to_plane(0).unwrap().consumer().unwrap();
    net.send_control(0, ControlMessage::Heartbeat { seq: 42 });
    let slot = wait_for("the heartbeat answer", WAIT, || from.pop().unwrap());
    assert_eq!(
        ControlMessage::decode(&slot, net.control.layout()),
        Ok(ControlMessage::Heartbeat { seq: 42 })
    );
    let s = net.shared(0);
    assert_eq!(s.state.load(Ordering::Relaxed), InstanceState::Running as u32);
    assert_eq!(s.pid.load(Ordering::Relaxed), std::process::id());
    let before = s.heartbeat_ns.load(Ordering::Relaxed);
    // Idle, the loop still wakes up within MAX_BLOCK and moves the heartbeat on.
    std::thread::sleep(flowgroups::instance::MAX_BLOCK * 3);
    assert!(s.heartbeat_ns.load(Ordering::Relaxed) > before);
    let results = net.shutdown();
    assert!(matches!(results.as_slice(), [Ok(())]), "{results:?}");
    assert_eq!(net.shared(0).state.load(Ordering::Relaxed), InstanceState::Stopping as u32);
}

#[test]
fn the_plane_hanging_up_stops_the_instance() {
    let mut net = Net::start("t-inst-hup", Options::default());
    let h = &mut net.instances[0];
    let (replacement, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(std::mem::replace(&mut h.plane, replacement));
    let result = h.thread.take().unwrap().join().unwrap();
    assert!(matches!(result, Err(InstanceError::PlaneHungUp)), "{result:?}");
}

#[test]
fn a_detached_app_loses_its_connections_and_they_are_reset() {
    let mut net = Net::start("t-inst-detach", Options::default());
    let app = net.add_app(0);
    let listener = app.listen(8080, 16).unwrap();
    let mut peer = Peer::new();
    let now = peer.now();
    let h = peer.stack.connect(now, SocketAddrV4::new(SERVER_IP, 8080), None).unwrap();
    let accepted = wait_for("the accept", WAIT, || {
        peer.pump(&net);
        app.accept(listener, false).ok()
    });
    let connections = |net: &Net| -> u32 {
        net.control.flow_groups().iter().map(|g| g.connections.load(Ordering::Relaxed)).sum()
    };
    wait_for("the connection to be counted", WAIT, || (connections(&net) == 1).then_some(()));
    let app_id = app.app_id();
    net.send_control(0, ControlMessage::AppDetached { app_id });
    let reason = wait_for("the reset at the peer", WAIT, || {
        peer.pump_or_wait(&net);
        std::iter::from_fn(|| peer.stack.poll_event()).find_map(|e| match e {
            Event::Closed(c, reason) if c == h => Some(reason),
            _ => None,
        })
    });
    assert_eq!(reason, tcp_core::tcp::CloseReason::Reset);
    wait_for("the connection count to drop", WAIT, || (connections(&net) == 0).then_some(()));
    let _ = accepted;
    assert!(net.shutdown().iter().all(|r| r.is_ok()));
}

#[test]
fn a_moved_group_is_steered_to_its_new_owner() {
    let mut net = Net::start("t-inst-move", Options { instances: 2, ..Options::default() });
    introduce_peer(&net, 0);
    introduce_peer(&net, 1);
    let mut peer = Peer::new();
    let (port, group) = peer_port_for(1, 2, 81, 41000);
    // Move the group to instance 0 as the plane does: table entry, epoch, SetOwner.
    net.control.flow_group(group).unwrap().owner.store(0, Ordering::Relaxed);
    net.control.header().owner_epoch.fetch_add(1, Ordering::Release);
    net.send_control(0, ControlMessage::SetOwner { group, owner: 0 });
    net.send_control(1, ControlMessage::SetOwner { group, owner: 0 });
    // A straggler of the group still arrives on the old owner's queue.
    net.instances[1].rx.push(peer.syn_frame(port, 81));
    let reply = wait_for("the new owner's reset", WAIT, || net.instances[0].tx.pop());
    assert_eq!(tcp_tuple(&reply).unwrap().1.port(), port);
    wait_for("the forward to be published", WAIT, || {
        (net.shared(1).forwarded_packets.load(Ordering::Relaxed) == 1).then_some(())
    });
    assert!(net.instances[1].tx.pop().is_none(), "the old owner did not answer");
    let g = net.control.flow_group(group).unwrap();
    wait_for("the SYN to be counted", WAIT, || (g.syns.load(Ordering::Relaxed) == 1).then_some(()));
    assert!(net.shutdown().iter().all(|r| r.is_ok()));
}
