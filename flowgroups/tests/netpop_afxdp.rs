//! `netpop up --nic afxdp:VETH --queues 2` (root; skipped otherwise): the plane attaches
//! the XDP program and creates the XSKMAP, each instance binds its own AF_XDP socket, and
//! steering is done in software (veth has no RSS table we program): a frame that lands on
//! the instance that does not own its flow group is forwarded to the owner and counted.
//! The Linux stack in a namespace on the other end makes 1,000 short connections. With
//! fewer instances than the interface has receive queues, `netpop up` refuses to start.

mod netpop_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ixgbe_user::linux::netns::{NetNamespace, VethPair, unique_name};
use netpop_common::*;

#[test]
#[ignore = "entry point of the echo server child process"]
fn echo_server_child() {
    echo_server_main();
}

#[test]
fn short_connections_over_af_xdp_with_software_steering() {
    if skip_unless_root("short_connections_over_af_xdp_with_software_steering") {
        return;
    }
    let scratch = Scratch::new("xdp");
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    let veth = VethPair::create(&unique_name("xa"), &unique_name("xb"), &ns, 2).unwrap();
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", veth.peer()]).unwrap();
    // The peer's kernel leaves TCP checksums to "hardware" (veth: nobody) when it may; an
    // AF_XDP receiver gets the frame before anything fills them in, and netpop checks
    // them. Also keep segments MTU-sized (no TSO/GSO).
    ns.exec("ethtool", &["-K", veth.peer(), "tx", "off", "tso", "off", "gso", "off"])
        .expect("ethtool is installed");
    let np = Netpop::up(
        &scratch,
        &["--nic", &format!("afxdp:{}", veth.local()), "--queues", "2", "--ip", "10.0.0.2/24"],
    );
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);

    const TOTAL: usize = 1000;
    let failures = ns
        .run_inside(|| {
            let target: SocketAddr = "10.0.0.2:7".parse().unwrap();
            let mut failures = Vec::new();
            for i in 0..TOTAL {
                let payload = (i as u32).to_be_bytes();
                let result = (|| -> std::io::Result<()> {
                    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(&payload)?;
                    let mut echo = [0u8; 4];
                    s.read_exact(&mut echo)?;
                    if echo != payload {
                        return Err(std::io::Error::other("wrong echo"));
                    }
                    Ok(())
                })();
                if let Err(e) = result {
                    failures.push(format!("{i}: {e}"));
                    if failures.len() >= 5 {
                        break;
                    }
                }
            }
            failures
        })
        .unwrap();
    let stat = np.stat_after_accepts(TOTAL as u64);
    println!("{}", summarize(&stat));
    println!("{}", np.stat_table());
    assert!(failures.is_empty(), "{} failures, first: {:?}", failures.len(), failures.first());
    assert_eq!(stat.get("steering").str(), "software");
    assert_eq!(stat.get("totals").get("accepts").u64(), TOTAL as u64);
    // veth picks rx queues by its own hash, not by our flow groups: software steering
    // forwards the mismatches, and says so.
    let totals = stat.get("totals");
    assert!(totals.get("forwarded_packets").u64() > 0);
    assert_eq!(totals.get("forwarded_packets").u64(), totals.get("cross_instance_msgs").u64());
}

#[test]
fn fewer_instances_than_the_interface_has_queues_is_refused() {
    if skip_unless_root("fewer_instances_than_the_interface_has_queues_is_refused") {
        return;
    }
    let scratch = Scratch::new("xdpq");
    let ns = NetNamespace::create(&unique_name("ns")).unwrap();
    let veth = VethPair::create(&unique_name("xa"), &unique_name("xb"), &ns, 4).unwrap();
    let out = std::process::Command::new(NETPOP)
        .args(["up", "--foreground", "--name", &scratch.name, "--socket-dir"])
        .arg(&scratch.dir)
        .args(["--nic", &format!("afxdp:{}", veth.local()), "--queues", "2"])
        .args(["--ip", "10.0.0.2/24"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "netpop up with 2 instances on 4 queues started: {text}");
    // The frames RSS puts on queues 2 and 3 would have no reader: say so, and how to fix it.
    for needed in ["4 receive queues", "--queues 2", "--queues 4", "ethtool -L"] {
        assert!(text.contains(needed), "{needed:?} missing: {text}");
    }
    assert!(!scratch.socket().exists(), "nothing was started");
}
