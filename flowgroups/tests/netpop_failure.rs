//! Acceptance 4: failures.
//! - kill -9 of one kernel instance under load: the plane declares it dead, its flow
//!   groups go to the survivor, and new connections keep succeeding.
//! - an app started after an instance died listens at once (on the live instance only)
//!   and is served.
//! - an app registered before an instance died learns of the death from the plane: its
//!   next listen does not wait for the dead instance, and the port is served.
//! - kill -9 of an app holding open connections, 100 times: every time the instances
//!   reset and free its sockets; afterwards no connection, app or app segment remains.

mod netpop_common;

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgroups::channel::SocketId;
use flowgroups::channel::client::Client;
use flowgroups::shm::process::{Signal, send_signal};
use netpop_common::*;

#[test]
#[ignore = "entry point of the echo server child process"]
fn echo_server_child() {
    echo_server_main();
}

fn start(tag: &str, policy: &str) -> (Scratch, Netpop, Peer) {
    let scratch = Scratch::new(tag);
    let (np, peer) = up_on_unix_wire(&scratch, &["--policy", policy]);
    (scratch, np, peer)
}

/// Waits (bounded) until `check` holds for a stat snapshot; returns the last snapshot.
fn wait_stat(np: &Netpop, what: &str, timeout: Duration, check: impl Fn(&Json) -> bool) -> Json {
    let start = Instant::now();
    loop {
        let s = np.stat_json();
        if check(&s) {
            return s;
        }
        assert!(start.elapsed() < timeout, "{what} within {timeout:?}:\n{}", summarize(&s));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killing_an_instance_under_load_leaves_service_to_the_survivor() {
    let (_scratch, np, mut peer) = start("kinst", "off");
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);
    let server = SocketAddrV4::new(NETPOP_IP, ECHO_PORT);
    let before = peer.short_connections(
        server,
        500,
        16,
        Duration::from_secs(5),
        Duration::from_secs(60),
        |_| None,
    );
    assert_eq!(before.failed, 0, "{:?}", before.failures);

    let victim = np.instance_pids()[1];
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        send_signal(victim, Signal::Kill).unwrap();
    });
    // Load while the instance dies: connections it held are lost, the rest succeed.
    let during = peer.short_connections(
        server,
        2000,
        16,
        Duration::from_secs(3),
        Duration::from_secs(120),
        |_| None,
    );
    killer.join().unwrap();
    println!("during the kill: {} ok, {} failed {:?}", during.ok, during.failed, during.failures);

    let stat =
        wait_stat(&np, "instance 1 dead and its groups moved", Duration::from_secs(10), |s| {
            let i = &s.get("instances").array()[1];
            i.get("state").str() == "dead" && i.get("groups_owned").u64() == 0
        });
    assert_eq!(
        stat.get("balancer").get("failover_moves").u64(),
        64,
        "all 64 groups of instance 1 moved"
    );
    assert_eq!(stat.get("instances").array()[0].get("groups_owned").u64(), 128);

    let after = peer.short_connections(
        server,
        1000,
        16,
        Duration::from_secs(5),
        Duration::from_secs(60),
        |_| None,
    );
    let stat = np.stat_json();
    println!("after: {} ok, {} failed\n{}", after.ok, after.failed, summarize(&stat));
    println!("{}", np.stat_table());
    assert_eq!(after.failed, 0, "new connections after the failover: {:?}", after.failures);
    assert_eq!(after.ok, 1000);
    assert_eq!(stat.get("instances").array()[0].get("state").str(), "running");
}

#[test]
fn an_app_started_after_an_instance_died_listens_at_once_and_is_served() {
    let (_scratch, np, mut peer) = start("kfresh", "off");
    let victim = np.instance_pids()[1];
    send_signal(victim, Signal::Kill).unwrap();
    wait_stat(&np, "instance 1 dead and its groups moved", Duration::from_secs(10), |s| {
        let i = &s.get("instances").array()[1];
        i.get("state").str() == "dead" && i.get("groups_owned").u64() == 0
    });
    // The app registers, learns that only instance 0 lives, and replicates its listener
    // there alone: listen must not wait for the dead instance's answer (it used to, for
    // 10 s, and then failed).
    let started = Instant::now();
    let server_app = EchoServer::spawn(&np.socket(), ECHO_PORT);
    let ready_in = started.elapsed();
    println!("app {} listening after {ready_in:?}", server_app.app_id);
    assert!(ready_in < Duration::from_secs(3), "listen took {ready_in:?}");
    peer.assert_serves_200(ECHO_PORT);
}

/// Echoes every connection accepted on `listener`, each on a thread of its own.
fn serve_echo(client: Arc<Client>, listener: SocketId) {
    std::thread::spawn(move || {
        while let Ok((s, _)) = client.accept(listener, true) {
            let client = Arc::clone(&client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = client.recv(s, &mut buf, true) {
                    if client.send(s, &buf[..n], true).is_err() {
                        break;
                    }
                }
                let _ = client.close(s);
            });
        }
    });
}

#[test]
fn an_app_registered_before_an_instance_died_listens_at_once_afterwards() {
    let (_scratch, np, mut peer) = start("kold", "off");
    // This test process is the app; it registers while both instances serve.
    let client = Arc::new(Client::register(&np.socket()).unwrap());
    assert_eq!(client.live_instances(), vec![0, 1]);
    let first = client.listen(ECHO_PORT, 128).unwrap();
    serve_echo(Arc::clone(&client), first);

    let victim = np.instance_pids()[1];
    send_signal(victim, Signal::Kill).unwrap();
    let killed = Instant::now();
    // At once, without waiting for the plane: the listen reaches instance 1's ring either
    // before or after the plane announces the death, and must not wait 10 s for an answer
    // from it either way.
    let new_port = ECHO_PORT + 1;
    let second = client.listen(new_port, 128).unwrap();
    let took = killed.elapsed();
    println!("listen on a new port {took:?} after the kill; live {:?}", client.live_instances());
    assert!(took < Duration::from_millis(1500), "listen took {took:?}");
    assert_eq!(client.live_instances(), vec![0], "the plane told the app");
    serve_echo(Arc::clone(&client), second);

    wait_stat(&np, "instance 1's groups moved", Duration::from_secs(10), |s| {
        s.get("instances").array()[1].get("groups_owned").u64() == 0
    });
    for port in [new_port, ECHO_PORT] {
        peer.assert_serves_200(port);
    }
}

/// Mappings of app segments in process `pid` (memfd names "netpop-app-<id>").
fn app_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().filter(|l| l.contains("netpop-app-")).count())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn killed_apps_have_their_sockets_reclaimed_every_time() {
    let (_scratch, np, mut peer) = start("kapp", "off");
    let server = SocketAddrV4::new(NETPOP_IP, ECHO_PORT);
    let plane_pid = np.child.id();
    let instance_pids = np.instance_pids();
    // One app first, so the fd baseline includes the plane's steady state.
    {
        let _warm = EchoServer::spawn(&np.socket(), ECHO_PORT);
    }
    wait_stat(&np, "the warm-up app is gone", Duration::from_secs(10), |s| {
        s.get("apps").u64() == 0
    });
    let fds_before = fd_count(plane_pid);

    let mut held_total = 0;
    for round in 0..100 {
        let mut app = EchoServer::spawn(&np.socket(), ECHO_PORT);
        let held = peer.hold_connections(server, 4, Duration::from_secs(10));
        assert_eq!(held.len(), 4, "round {round}: the app echoed on all 4 connections");
        held_total += held.len();
        app.kill();
        // The instances reset the app's connections: the peer sees them end.
        let start = Instant::now();
        while peer.established(&held) > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "round {round}: connections not reset"
            );
            peer.run_for(Duration::from_millis(5));
        }
        peer.release(&held);
    }
    let stat = wait_stat(&np, "no app and no connection left", Duration::from_secs(10), |s| {
        s.get("apps").u64() == 0
            && s.get("instances")
                .array()
                .iter()
                .all(|i| i.get("connections_established").u64() == 0)
    });
    let groups = np.command("stat", &["--json", "--groups"]);
    let groups = Json::parse(&String::from_utf8_lossy(&groups.stdout)).unwrap();
    let in_groups: u64 =
        groups.get("groups").array().iter().map(|g| g.get("connections").u64()).sum();
    println!("{} connections held and reclaimed\n{}", held_total, summarize(&stat));
    assert_eq!(in_groups, 0, "flow groups still count connections");
    assert_eq!(stat.get("apps_total").u64(), 101);
    for pid in std::iter::once(plane_pid).chain(instance_pids) {
        assert_eq!(app_mappings(pid), 0, "process {pid} still maps app segments");
    }
    let fds_after = fd_count(plane_pid);
    assert!(fds_after <= fds_before + 2, "plane fds grew from {fds_before} to {fds_after}");
}
