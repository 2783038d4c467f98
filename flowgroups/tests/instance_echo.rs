//! Kernel instances end to end, unprivileged: a tcp-core peer makes many short echo
//! connections to a server app written with the native `Client`, through one or two
//! `KernelInstance`s running their real loop (`run`) behind an emulated NIC.

mod instance_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use instance_support::*;

fn total(net: &Net, f: impl Fn(&flowgroups::control::InstanceShared) -> u64) -> u64 {
    (0..net.instances.len() as u16).map(|i| f(net.shared(i))).sum()
}

fn group_connections(net: &Net) -> u64 {
    net.control.flow_groups().iter().map(|g| u64::from(g.connections.load(Ordering::Relaxed))).sum()
}

/// Pumps the peer until every flow group's published connection count is zero (all
/// connections fully closed and freed on the instances).
fn wait_all_closed(net: &Net, peer: &mut Peer) {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while group_connections(net) != 0 {
        assert!(std::time::Instant::now() < end, "connections left: {}", group_connections(net));
        peer.pump_or_wait(net);
    }
}

fn echo_run(name: &str, instances: u16, nic: Nic, connections: u32) -> (Net, Peer) {
    let mut net = Net::start(name, Options { instances, nic, ..Options::default() });
    let app = net.add_app(0);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = echo_server(app.clone(), 7, 4, 2, stop.clone());
    let mut peer = Peer::new();
    // Watch the busy ratio the instances publish while they work.
    let watch = Arc::new(AtomicBool::new(true));
    let busiest = {
        let control = flowgroups::control::ControlSegment::open(
            net.control.fd().try_clone_to_owned().unwrap(),
        )
        .unwrap();
        let watch = watch.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while watch.load(Ordering::Relaxed) {
                for s in control.instances() {
                    max = max.max(s.busy_ppm.load(Ordering::Relaxed));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            max
        })
    };
    let done = run_echo_clients(&net, &mut peer, 7, connections, 32, Duration::from_secs(120));
    watch.store(false, Ordering::Relaxed);
    let busiest = busiest.join().unwrap();
    assert!(busiest > 0 && busiest <= 1_000_000, "busy ratio {busiest} ppm under load");
    assert_eq!(done, connections, "every connection got its echo");
    wait_all_closed(&net, &mut peer);
    stop.store(true, Ordering::Relaxed);
    let served: usize = servers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(served, connections as usize);
    // Let the instances publish their final counters (every 10 ms).
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..instances {
        let s = net.shared(i);
        println!(
            "{name} instance {i}: rx {} tx {} accepts {} connections {} forwarded {} idle sleeps {}",
            s.rx_packets.load(Ordering::Relaxed),
            s.tx_packets.load(Ordering::Relaxed),
            s.accepts.load(Ordering::Relaxed),
            s.connections_total.load(Ordering::Relaxed),
            s.forwarded_packets.load(Ordering::Relaxed),
            s.idle_sleeps.load(Ordering::Relaxed),
        );
    }
    (net, peer)
}

#[test]
fn one_instance_echoes_1000_connections_and_counts_them() {
    let (mut net, _peer) = echo_run("t-inst-echo1", 1, Nic::Rss, 1000);
    let s = net.shared(0);
    assert_eq!(s.accepts.load(Ordering::Relaxed), 1000);
    assert_eq!(s.connections_total.load(Ordering::Relaxed), 1000);
    assert_eq!(s.connections_established.load(Ordering::Relaxed), 0);
    assert_eq!(s.cross_instance_msgs.load(Ordering::Relaxed), 0);
    assert!(s.rx_packets.load(Ordering::Relaxed) >= 5000, "SYN, ACK, data, FIN, ACK each");
    assert!(s.tx_packets.load(Ordering::Relaxed) >= 4000);
    assert!(s.heartbeat_ns.load(Ordering::Relaxed) > 0);
    let syns: u64 = net.control.flow_groups().iter().map(|g| g.syns.load(Ordering::Relaxed)).sum();
    assert_eq!(syns, 1000, "one SYN per connection, counted in its flow group");
    let packets: u64 =
        net.control.flow_groups().iter().map(|g| g.packets.load(Ordering::Relaxed)).sum();
    assert!(packets >= 5000);
    // 1000 connections from one peer spread over many groups.
    let busy_groups =
        net.control.flow_groups().iter().filter(|g| g.syns.load(Ordering::Relaxed) > 0).count();
    assert!(busy_groups > 64, "only {busy_groups} groups saw SYNs");
    // The listener table shows port 7 with nothing waiting to be accepted.
    let entry = net.control.listeners().iter().find(|l| l.port.load(Ordering::Relaxed) == 7);
    assert_eq!(entry.expect("port 7 published").ready[0].load(Ordering::Relaxed), 0);
    let results = net.shutdown();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        net.shared(0).state.load(Ordering::Relaxed),
        flowgroups::control::InstanceState::Stopping as u32
    );
}

#[test]
fn two_rss_steered_instances_share_the_load_without_fast_path_messages() {
    let (mut net, _peer) = echo_run("t-inst-echo2", 2, Nic::Rss, 1000);
    let a0 = net.shared(0).accepts.load(Ordering::Relaxed);
    let a1 = net.shared(1).accepts.load(Ordering::Relaxed);
    assert_eq!(a0 + a1, 1000);
    assert!(a0 > 200 && a1 > 200, "accepts {a0} / {a1}: both instances serve");
    assert_eq!(total(&net, |s| s.cross_instance_msgs.load(Ordering::Relaxed)), 0);
    assert_eq!(total(&net, |s| s.forwarded_packets.load(Ordering::Relaxed)), 0);
    // Each instance counted the connections of its own groups only.
    for g in 0..GROUPS {
        let shared = net.control.flow_group(g).unwrap();
        assert_eq!(shared.connections.load(Ordering::Relaxed), 0);
    }
    assert!(net.shutdown().iter().all(|r| r.is_ok()));
}

#[test]
fn a_single_queue_nic_works_through_software_steering() {
    let (mut net, _peer) = echo_run("t-inst-echo-sw", 2, Nic::SingleQueue, 300);
    let fwd0 = net.shared(0).forwarded_packets.load(Ordering::Relaxed);
    let fwd1 = net.shared(1).forwarded_packets.load(Ordering::Relaxed);
    assert!(fwd0 > 300, "instance 0 forwarded instance 1's segments ({fwd0})");
    assert_eq!(fwd1, 0, "instance 1 receives nothing from the NIC");
    assert_eq!(net.shared(0).cross_instance_msgs.load(Ordering::Relaxed), fwd0);
    let a1 = net.shared(1).accepts.load(Ordering::Relaxed);
    assert!(a1 > 50, "instance 1 accepted its groups' connections ({a1})");
    assert_eq!(net.shared(1).rx_packets.load(Ordering::Relaxed), 0);
    assert!(net.shutdown().iter().all(|r| r.is_ok()));
}
