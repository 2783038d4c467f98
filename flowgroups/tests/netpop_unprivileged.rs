//! Acceptance 1 (unprivileged): `netpop up --nic sim --wire unix:PATH --queues 2`, an echo
//! server app on the native client API in a child process, and this test as the peer: a
//! tcp-core stack on the far side of the wire making 10,000 short connections. Every
//! connection gets its echo; `netpop stat --json` shows both instances accepting and no
//! fast-path cross-instance message.

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
fn ten_thousand_short_connections_over_two_instances() {
    let scratch = Scratch::new("a1");
    let (np, mut peer) = up_on_unix_wire(&scratch, &["--policy", "off"]);
    let server = EchoServer::spawn(&np.socket(), ECHO_PORT);

    let report = peer.short_connections(
        SocketAddrV4::new(NETPOP_IP, ECHO_PORT),
        10_000,
        64,
        Duration::from_secs(20),
        Duration::from_secs(240),
        |_| None,
    );
    let stat = np.stat_after_accepts(10_000);
    println!(
        "{} ok, {} failed in {:.2?}\n{}",
        report.ok,
        report.failed,
        report.elapsed,
        summarize(&stat)
    );
    println!("{}", np.stat_table());
    assert_eq!(report.failed, 0, "failures: {:?}", report.failures);
    assert_eq!(report.ok, 10_000);

    let instances = stat.get("instances").array();
    assert_eq!(instances.len(), 2);
    for i in instances {
        assert_eq!(i.get("state").str(), "running");
        assert!(i.get("accepts").u64() > 0, "instance {:?} accepted nothing", i.get("index"));
        assert_eq!(
            i.get("cross_instance_msgs").u64(),
            0,
            "fast-path messages on {:?}",
            i.get("index")
        );
    }
    let totals = stat.get("totals");
    assert_eq!(totals.get("accepts").u64(), 10_000);
    assert_eq!(totals.get("cross_instance_msgs").u64(), 0);
    assert_eq!(stat.get("apps").u64(), 1);
    drop(server);
}
