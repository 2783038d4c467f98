//! The `netpop` command line: clear errors for bad configurations, daemon mode
//! (`up` returns once registrations are accepted; `stat` and `down` find it by name), a
//! second `up` of the same name refused, and `capture` writing a pcap file.

mod netpop_common;

use std::net::SocketAddrV4;
use std::process::Command;
use std::time::{Duration, Instant};

use flowgroups::shm::process::process_exists;
use netpop_common::*;

#[test]
#[ignore = "entry point of the echo server child process"]
fn echo_server_child() {
    echo_server_main();
}

fn netpop(args: &[&str]) -> (bool, String) {
    let out = Command::new(NETPOP).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn bad_configurations_are_refused_with_the_option_named() {
    let scratch = Scratch::new("bad");
    let dir = scratch.dir.to_string_lossy().into_owned();
    let wire = format!("unix:{dir}");
    let base = ["up", "--socket-dir", &dir, "--foreground", "--nic", "sim", "--wire", &wire];
    let cases: &[(&[&str], &str)] = &[
        (&["--ip", "10.0.0.300/24"], "--ip"),
        (&["--ip", "10.0.0.2"], "--ip"),
        (&["--ip", "10.0.0.2/24", "--queues", "17"], "--queues"),
        (&["--ip", "10.0.0.2/24", "--groups", "100"], "--groups"),
        (&["--ip", "10.0.0.2/24", "--mac", "01:00:5e:00:00:01"], "--mac"),
        (&["--ip", "10.0.0.2/24", "--policy", "fast"], "--policy"),
        (&["--ip", "10.0.0.2/24", "--gateway", "192.168.1.1"], "--gateway"),
        (&["--ip", "10.0.0.2/24", "--cores", "100000"], "--cores"),
        (&["--ip", "10.0.0.2/24", "--frobnicate"], "--frobnicate"),
        (&["--ip", "10.0.0.2/24", "--socket-group", "netpop-no-such-group"], "--socket-group"),
        (&["--ip", "10.0.0.2/24", "--socket-mode", "0986"], "--socket-mode"),
        (&[], "--ip"),
    ];
    for (extra, named) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let (ok, text) = netpop(&args);
        assert!(!ok, "{extra:?} was accepted");
        assert!(text.contains(named), "{extra:?}: error does not name {named}: {text}");
    }
    let (ok, text) = netpop(&[
        "up",
        "--socket-dir",
        &dir,
        "--ip",
        "10.0.0.2/24",
        "--nic",
        "afxdp:np-nonexistent0",
    ]);
    assert!(!ok && text.contains("np-nonexistent0"), "{text}");
    let (ok, text) = netpop(&["up", "--socket-dir", &dir, "--ip", "10.0.0.2/24", "--nic", "sim"]);
    assert!(!ok && text.contains("--wire"), "{text}");
    let (ok, text) = netpop(&[
        "up",
        "--socket-dir",
        &dir,
        "--ip",
        "10.0.0.2/24",
        "--nic",
        "sim",
        "--wire",
        "unix:/nonexistent/w",
    ]);
    assert!(!ok && text.contains("/nonexistent/w"), "{text}");
    let (ok, text) = netpop(&["stat", "--socket-dir", &dir, "--name", "nobody"]);
    assert!(!ok && text.contains("no netpop is up"), "{text}");
    let (ok, text) = netpop(&["help"]);
    assert!(ok && text.contains("netpop up"));
}

#[test]
fn the_registration_socket_gets_the_group_and_mode_asked_for() {
    use std::os::unix::fs::MetadataExt;
    let scratch = Scratch::new("sockmode");
    // Root may give the socket to any group: use one it is not in, as `www-data` would
    // be. Anyone else may give it only to a group of their own.
    let gid = if flowgroups::shm::process::effective_uid() == 0 {
        65534
    } else {
        std::fs::metadata(&scratch.dir).unwrap().gid()
    };
    let gid_arg = gid.to_string();
    let (np, _peer) =
        up_on_unix_wire(&scratch, &["--socket-group", &gid_arg, "--socket-mode", "0620"]);
    let sock = std::fs::metadata(np.socket()).unwrap();
    assert_eq!(sock.gid(), gid, "the socket's group");
    assert_eq!(sock.mode() & 0o7777, 0o620, "the socket's mode");
    let leftovers: Vec<_> = std::fs::read_dir(&scratch.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".new"))
        .collect();
    assert!(leftovers.is_empty(), "the staging name is gone: {leftovers:?}");
    let stat = np.stat_json();
    assert_eq!(stat.get("instances").array().len(), 2, "the socket still serves");
}

#[test]
fn daemon_mode_up_stat_down() {
    let scratch = Scratch::new("dmn");
    let dir = scratch.dir.to_string_lossy().into_owned();
    let wire_path = scratch.dir.join("wire.sock");
    let wire = Peer::bind(&wire_path);
    let wire_arg = format!("unix:{}", wire_path.display());
    let acceptor = std::thread::spawn(move || Peer::accept(&wire));
    let up = [
        "up",
        "--name",
        &scratch.name,
        "--socket-dir",
        &dir,
        "--nic",
        "sim",
        "--wire",
        &wire_arg,
        "--queues",
        "2",
        "--ip",
        "10.0.0.2/24",
    ];
    let started = Instant::now();
    let (ok, text) = netpop(&up);
    let _peer = acceptor.join().unwrap();
    assert!(ok, "up failed: {text}");
    assert!(text.contains(&format!("netpop {} up: 2 instances", scratch.name)), "{text}");
    assert!(started.elapsed() < Duration::from_secs(60));
    // `up` returned: the daemon accepts requests now.
    let (ok, stat) = netpop(&["stat", "--name", &scratch.name, "--socket-dir", &dir, "--json"]);
    assert!(ok, "{stat}");
    let stat = Json::parse(&stat).unwrap();
    let plane_pid = stat.get("pid").u64() as u32;
    let guard = KillOnDrop(plane_pid);
    let pids: Vec<u32> =
        stat.get("instances").array().iter().map(|i| i.get("pid").u64() as u32).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| process_exists(p)));

    let (ok, text) = netpop(&up);
    assert!(!ok && text.contains("already up"), "a second up of the same name: {text}");

    let (ok, text) = netpop(&["down", "--name", &scratch.name, "--socket-dir", &dir]);
    assert!(ok, "{text}");
    assert!(text.contains("2 instance(s) exited"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(plane_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!process_exists(plane_pid), "the daemon exited");
    assert!(pids.iter().all(|&p| !process_exists(p)), "its instances exited");
    assert!(!scratch.socket().exists(), "the socket was removed");
    drop(guard);
}

/// Kills a daemon left behind by a failed test.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if process_exists(self.0) {
            let _ = flowgroups::shm::process::send_signal(
                self.0,
                flowgroups::shm::process::Signal::Kill,
            );
        }
    }
}

#[test]
fn capture_writes_a_pcap_file() {
    let scratch = Scratch::new("cap");
    let wire_path = scratch.dir.join("wire.sock");
    let wire = Peer::bind(&wire_path);
    let wire_arg = format!("unix:{}", wire_path.display());
    let acceptor = std::thread::spawn(move || Peer::accept(&wire));
    let np = Netpop::up(
        &scratch,
        &["--nic", "sim", "--wire", &wire_arg, "--queues", "2", "--ip", "10.0.0.2/24"],
    );
    let mut peer = acceptor.join().unwrap();
    let _server = EchoServer::spawn(&np.socket(), ECHO_PORT);

    let out = scratch.dir.join("i0.pcap");
    let out_arg = out.to_string_lossy().into_owned();
    let (name, dir) = (np.name.clone(), np.dir.to_string_lossy().into_owned());
    let capture = std::thread::spawn(move || {
        netpop(&[
            "capture",
            "--name",
            &name,
            "--socket-dir",
            &dir,
            "--instance",
            "0",
            "--count",
            "20",
            "--out",
            &out_arg,
            "--timeout",
            "30",
        ])
    });
    // Traffic until the capture has its frames.
    let server = SocketAddrV4::new(NETPOP_IP, ECHO_PORT);
    let start = Instant::now();
    while !capture.is_finished() && start.elapsed() < Duration::from_secs(30) {
        let r = peer.short_connections(
            server,
            20,
            4,
            Duration::from_secs(5),
            Duration::from_secs(10),
            |_| None,
        );
        assert_eq!(r.failed, 0);
    }
    let (ok, text) = capture.join().unwrap();
    assert!(ok, "capture failed: {text}");
    assert!(text.contains("captured 20 frame"), "{text}");
    let pcap = std::fs::read(&out).unwrap();
    assert_eq!(&pcap[0..4], &0xa1b2_c3d4u32.to_le_bytes(), "pcap magic");
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 1, "LINKTYPE_ETHERNET");
    let mut at = 24;
    let mut records = 0;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        assert!((14..=1514).contains(&caplen), "an Ethernet frame");
        at += 16 + caplen;
        records += 1;
    }
    assert_eq!(at, pcap.len(), "records fill the file exactly");
    assert_eq!(records, 20);

    let (ok, text) = netpop(&[
        "capture",
        "--name",
        &np.name,
        "--socket-dir",
        &np.dir.to_string_lossy(),
        "--instance",
        "5",
        "--count",
        "1",
        "--out",
        &scratch.dir.join("x.pcap").to_string_lossy(),
    ]);
    assert!(!ok && text.contains("no instance 5"), "{text}");
}

/// CPU time (user + system, in clock ticks) a process has used, from /proc/PID/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn an_idle_netpop_sleeps() {
    let scratch = Scratch::new("idl");
    let wire_path = scratch.dir.join("wire.sock");
    let wire = Peer::bind(&wire_path);
    let wire_arg = format!("unix:{}", wire_path.display());
    let acceptor = std::thread::spawn(move || Peer::accept(&wire));
    let np = Netpop::up(
        &scratch,
        &["--nic", "sim", "--wire", &wire_arg, "--queues", "2", "--ip", "10.0.0.2/24"],
    );
    let _peer = acceptor.join().unwrap();
    let mut pids = vec![np.child.id()];
    pids.extend(np.instance_pids());
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let after: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    // Clock ticks are 10 ms (USER_HZ = 100 on Linux).
    let pct: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 * 10.0 / window.as_millis() as f64 * 100.0)
        .collect();
    println!(
        "idle CPU over {window:?}: plane (with the model engine thread) {:.1}%, instances {:?}%",
        pct[0],
        &pct[1..]
    );
    // A behaviour check, not a benchmark: nothing spins.
    for (pid, p) in pids.iter().zip(&pct) {
        assert!(*p < 50.0, "process {pid} used {p:.1}% of a core while idle");
    }
}
