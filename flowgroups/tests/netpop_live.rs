//! Acceptance 3 (issue 4): `netpop up --policy live` moves flow groups that carry
//! established connections while they stream. The peer (tcp-core over `--wire unix:`)
//! keeps one checksummed stream in each of instance 0's 16 hot groups, echoed by the
//! server app, while short connections into the same groups make the load lopsided; the
//! balancer must move some of those groups, with their connections, to instance 1.
//! Every byte must come back once and in order, and no reset may cross the wire.

mod netpop_common;

use std::net::SocketAddrV4;
use std::time::Duration;

use netpop_common::*;

#[test]
#[ignore = "entry point of the echo server child process"]
fn echo_server_child() {
    echo_server_main();
}

#[test]
fn live_balancing_moves_streaming_connections_without_losing_a_byte() {
    let scratch = Scratch::new("live");
    let wire_path = scratch.dir.join("wire.sock");
    let wire = Peer::bind(&wire_path);
    let wire_arg = format!("unix:{}", wire_path.display());
    let acceptor = std::thread::spawn(move || Peer::accept(&wire));
    let np = Netpop::up(
        &scratch,
        &[
            "--nic",
            "sim",
            "--wire",
            &wire_arg,
            "--queues",
            "2",
            "--ip",
            "10.0.0.2/24",
            "--policy",
            "live",
        ],
    );
    let mut peer = acceptor.join().unwrap();
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);

    // Instance 0 owns the even groups at start (round robin); one stream per hot group.
    let hot: Vec<u32> = (0..16).map(|g| g * 2).collect();
    let mut stream_ports = Vec::new();
    for &g in &hot {
        stream_ports.extend(ports_in_groups(&[g], 20000, 1));
    }
    assert_eq!(stream_ports.len(), 16);
    let short_ports: Vec<u16> = ports_in_groups(&hot, 30000, 8000);
    let server = SocketAddrV4::new(NETPOP_IP, ECHO_PORT);

    let report = peer.streams_under_load(
        server,
        &stream_ports,
        256 * 1024,
        Duration::from_secs(5),
        Duration::from_secs(20),
        &short_ports,
        16,
    );
    let stat = np.stat_json();
    println!("{report:#?}\n{}\n{}", summarize(&stat), np.stat_table());
    let balancer = stat.get("balancer");
    let completed = balancer.get("completed_moves").u64();
    let migrated = balancer.get("migrated_connections").u64();
    assert!(report.stream_failures.is_empty(), "streams failed: {:?}", report.stream_failures);
    assert_eq!(report.completed, stream_ports.len(), "every stream finished");
    assert!(
        report.bytes_sent > 16 * 256 * 1024,
        "the streams carried data ({} bytes)",
        report.bytes_sent
    );
    assert_eq!(report.bytes_checked, report.bytes_sent, "every byte came back once, in order");
    assert_eq!(report.resets_in, 0, "netpop sent no reset");
    assert_eq!(report.short_failed, 0, "short connections failed: {:?}", report.short_failures);
    assert!(completed > 0, "the balancer moved groups");
    assert!(migrated > 0, "connections migrated with their groups");
    assert_eq!(balancer.get("aborted_moves").u64(), 0);
    // Instance 1 now serves some of the streams' groups.
    let owners_moved = stat.get("instances").array()[1].get("moves_in").u64();
    assert!(owners_moved > 0);
}
