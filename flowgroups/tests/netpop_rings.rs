//! Instance receive rings (`netpop up --rx-ring`): a burst of SYNs that arrives while the
//! instance is not draining its queue must fit in the ring, since the driver sets
//! SRRCTL.DROP_EN and the 82599 (and the model) drops what does not fit. And the default
//! ring for every one of 16 queues must fit the model's DMA window.

mod netpop_common;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use flowgroups::shm::process::{Signal, send_signal};
use netpop_common::*;

#[test]
#[ignore = "entry point of the echo server child process"]
fn echo_server_child() {
    echo_server_main();
}

const BURST: usize = 2000;

/// Sends [`BURST`] SYNs to a one-instance netpop with `ring_args` while the instance is
/// stopped, lets it run again, and returns (model receive drops, frames the instance
/// received).
fn syn_burst_while_the_instance_sleeps(tag: &str, ring_args: &[&str]) -> (u64, u64) {
    let scratch = Scratch::new(tag);
    let mut args = vec!["--queues", "1", "--policy", "off"];
    args.extend_from_slice(ring_args);
    let (np, mut peer) = up_on_unix_wire(&scratch, &args);
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);
    let server = SocketAddrV4::new(NETPOP_IP, ECHO_PORT);
    // One connection first: the peer learns netpop's MAC, so the burst is all SYNs.
    let warm = peer.short_connections(
        server,
        1,
        1,
        Duration::from_secs(5),
        Duration::from_secs(10),
        |_| None,
    );
    assert_eq!(warm.ok, 1, "{:?}", warm.failures);
    let received_before = np.stat_json().get("instances").array()[0].get("rx_packets").u64();

    let instance = np.instance_pids()[0];
    send_signal(instance, Signal::Stop).unwrap();
    let now = tcp_core::Instant::from_nanos(0);
    for _ in 0..BURST {
        peer.stack.connect(now, server, None).unwrap();
    }
    let sent = peer.flush_all();
    // The model thread keeps running: give it time to move the burst into the ring (or
    // drop it) before the instance wakes; well below the 5 s heartbeat timeout.
    std::thread::sleep(Duration::from_millis(500));
    send_signal(instance, Signal::Continue).unwrap();
    assert_eq!(sent, BURST, "one SYN per connect");

    let start = Instant::now();
    loop {
        peer.run_for(Duration::from_millis(50));
        let stat = np.stat_json();
        let drops = stat.get("wire_drops").u64();
        let received = stat.get("instances").array()[0].get("rx_packets").u64() - received_before;
        if drops + received >= BURST as u64 || start.elapsed() > Duration::from_secs(10) {
            println!("{tag}: {drops} dropped, {received} received\n{}", summarize(&stat));
            return (drops, received);
        }
    }
}

#[test]
fn a_burst_of_two_thousand_syns_fits_the_default_ring_and_not_a_512_ring() {
    let (drops, received) = syn_burst_while_the_instance_sleeps("ring4k", &[]);
    assert_eq!(drops, 0, "the default ring holds the whole burst");
    assert!(received >= BURST as u64, "the instance got every SYN: {received}");

    // The driver's old default: the burst overflows it, which shows both that the test
    // can see drops and that --rx-ring reaches the instance's queue.
    let (drops, _) = syn_burst_while_the_instance_sleeps("ring512", &["--rx-ring", "512"]);
    assert!(drops >= (BURST - 512) as u64, "a 512-descriptor ring drops the rest: {drops}");
}

#[test]
fn sixteen_queues_with_the_default_ring_start_and_serve() {
    let scratch = Scratch::new("ring16");
    let (np, mut peer) = up_on_unix_wire(&scratch, &["--queues", "16", "--policy", "off"]);
    let stat = np.stat_json();
    let instances = stat.get("instances").array();
    assert_eq!(instances.len(), 16);
    assert!(instances.iter().all(|i| i.get("state").str() == "running"), "{}", summarize(&stat));
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);
    peer.assert_serves_200(ECHO_PORT);
}
