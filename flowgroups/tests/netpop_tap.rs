//! Acceptance 2 (root; skipped otherwise): `netpop up --nic sim --wire tap:NAME --queues 2`,
//! the TAP's kernel side moved into a network namespace this test creates, and the Linux
//! stack there as the peer: 10,000 short connections from std `TcpStream`s (connect, send
//! 4 bytes, read the echo, close) to an echo app on the native client API. Every
//! connection gets its reply, and `netpop stat` shows both instances serving with no
//! fast-path cross-instance message.

mod netpop_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ixgbe_user::linux::netns::{NetNamespace, move_into, unique_name};
use netpop_common::*;

#[test]
#[ignore = "entry point of the echo server child process"]
fn echo_server_child() {
    echo_server_main();
}

#[test]
fn ten_thousand_linux_connections_over_a_tap() {
    if skip_unless_root("ten_thousand_linux_connections_over_a_tap") {
        return;
    }
    let scratch = Scratch::new("tap");
    let tap = unique_name("tap");
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    let np = Netpop::up(
        &scratch,
        &[
            "--nic",
            "sim",
            "--wire",
            &format!("tap:{tap}"),
            "--queues",
            "2",
            "--ip",
            "10.0.0.2/24",
            "--policy",
            "off",
        ],
    );
    // The kernel side of the TAP becomes the peer's interface inside the namespace.
    move_into(&tap, &ns).unwrap();
    ns.ip(&["link", "set", &tap, "up"]).unwrap();
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", &tap]).unwrap();
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);

    const TOTAL: usize = 10_000;
    const THREADS: usize = 8;
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let (ok2, failures2) = (Arc::clone(&ok), Arc::clone(&failures));
    ns.run_inside(move || {
        let target: SocketAddr = "10.0.0.2:7".parse().unwrap();
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (ok, failures) = (Arc::clone(&ok2), Arc::clone(&failures2));
                // Threads spawned here inherit the namespace of the thread that spawns them.
                std::thread::spawn(move || {
                    for i in (t..TOTAL).step_by(THREADS) {
                        let payload = (i as u32).to_be_bytes();
                        let result = (|| -> std::io::Result<()> {
                            let mut s =
                                TcpStream::connect_timeout(&target, Duration::from_secs(10))?;
                            s.set_read_timeout(Some(Duration::from_secs(10)))?;
                            s.write_all(&payload)?;
                            let mut echo = [0u8; 4];
                            s.read_exact(&mut echo)?;
                            if echo != payload {
                                return Err(std::io::Error::other("wrong echo"));
                            }
                            Ok(())
                        })();
                        match result {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{i}: {e}")),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    })
    .unwrap();
    let elapsed = start.elapsed();
    let stat = np.stat_after_accepts(TOTAL as u64);
    println!("{} ok in {elapsed:.2?}\n{}", ok.load(Ordering::Relaxed), summarize(&stat));
    println!("{}", np.stat_table());
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} failures, first: {:?}", failures.len(), failures.first());
    assert_eq!(ok.load(Ordering::Relaxed), TOTAL);
    let instances = stat.get("instances").array();
    for i in instances {
        assert!(i.get("accepts").u64() > 0, "instance {:?} accepted nothing", i.get("index"));
        assert_eq!(i.get("cross_instance_msgs").u64(), 0);
    }
    assert_eq!(stat.get("totals").get("accepts").u64(), TOTAL as u64);
}
