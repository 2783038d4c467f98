//! Issue 5, acceptance 2 and 3 (root; skipped otherwise): Debian's Apache httpd, unmodified
//! and really multi-process, under the shim (`netpop run`) on a netpop with two instances
//! (the 82599 model, TAP wire to a peer namespace), with mpm_prefork (children blocking in
//! accept on the listener they inherited) and with mpm_event (threads, epoll).
//!
//! Each test generates a minimal `apache2.conf` in a scratch directory (modules from
//! /usr/lib/apache2/modules, Listen on netpop's address, PidFile/ErrorLog in the scratch
//! directory, children as www-data) and runs `apache2 -f CONF -DFOREGROUND`. Checked from
//! the peer namespace: curl fetches a 4-byte and a 10 MiB file (sha256); ab makes
//! `NETPOP_E2E_REQUESTS` (default 50,000) requests, one per connection, 100 at a time,
//! without failure; `netpop stat --json` shows both instances accepting and the children
//! registered as apps; a graceful restart (SIGUSR1, twice) under load loses no request;
//! a stop under load (SIGTERM for prefork, the graceful SIGWINCH for event) ends every
//! Apache process within a bounded time, no child dies of a signal, and netpop lets go of
//! every app.

mod e2e_support;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use e2e_support::*;

const PORT: u16 = 8081;
const BIG: usize = 10 << 20;
const MODULES: &str = "/usr/lib/apache2/modules";

/// www-data's group id, from the group database.
fn www_data_gid() -> u32 {
    let out = std::process::Command::new("getent").args(["group", "www-data"]).output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.split(':').nth(2).and_then(|g| g.trim().parse().ok()).expect("www-data has a group id")
}

fn apache_conf(tb: &Testbed, mpm: &str) -> PathBuf {
    let dir = tb.scratch.dir.display();
    let workers = match mpm {
        "prefork" => {
            "StartServers 4\nMinSpareServers 4\nMaxSpareServers 16\nMaxRequestWorkers 64\n"
        }
        _ => {
            "StartServers 2\nServerLimit 4\nThreadsPerChild 25\nMaxRequestWorkers 100\n\
              MinSpareThreads 25\nMaxSpareThreads 75\n"
        }
    };
    let conf = format!(
        "ServerRoot \"{dir}\"\n\
         ServerName netpop-e2e.test\n\
         LoadModule mpm_{mpm}_module {MODULES}/mod_mpm_{mpm}.so\n\
         LoadModule authz_core_module {MODULES}/mod_authz_core.so\n\
         LoadModule mime_module {MODULES}/mod_mime.so\n\
         TypesConfig /etc/mime.types\n\
         Listen {NETPOP_IP}:{PORT}\n\
         PidFile \"{dir}/apache2.pid\"\n\
         ErrorLog \"{dir}/error.log\"\n\
         LogLevel notice\n\
         Mutex file:{dir} default\n\
         User www-data\n\
         Group www-data\n\
         DocumentRoot \"{dir}/www\"\n\
         <Directory \"{dir}/www\">\n    Require all granted\n</Directory>\n\
         KeepAlive Off\n\
         {workers}"
    );
    tb.scratch.write("apache2.conf", conf.as_bytes())
}

/// ab in a thread: `requests` requests, 100 at a time, going on after errors.
fn ab_in_background(tb: &Testbed, requests: u32) -> thread::JoinHandle<std::process::Output> {
    let url = format!("http://{NETPOP_IP}:{PORT}/small.txt");
    let n = requests.to_string();
    let mut cmd = tb.ns.command("timeout");
    cmd.args(["-k", "5", "300", "ab", "-q", "-r", "-s", "10", "-n", &n, "-c", "100", &url]);
    thread::spawn(move || cmd.output().unwrap())
}

fn error_log(tb: &Testbed) -> String {
    std::fs::read_to_string(tb.scratch.path("error.log")).unwrap_or_default()
}

/// Nothing in the logs says that a process crashed.
fn assert_no_crash(tb: &Testbed, server: &Server) {
    let log = error_log(tb) + &server.log();
    for bad in ["exit signal", "Segmentation fault", "panicked", "AH00052"] {
        assert!(!log.contains(bad), "'{bad}' in the logs:\n{log}");
    }
}

fn apache(test: &str, mpm: &str) {
    if skip(test, &["/usr/sbin/apache2", "curl", "ab", "sha256sum"])
        || !std::path::Path::new(&format!("{MODULES}/mod_mpm_{mpm}.so")).exists()
    {
        return;
    }
    let _one_at_a_time = serial();
    // Apache's children drop to www-data before they register: netpop up gives them the
    // registration socket (group www-data, mode 0660) before it accepts anyone.
    let tb = Testbed::with_up_options("ap", Nic::SimTap, 2, &["--socket-group", "www-data"]);
    let sock = std::fs::metadata(tb.netpop.socket()).unwrap();
    assert_eq!(sock.gid(), www_data_gid(), "the socket's group");
    assert_eq!(sock.mode() & 0o7777, 0o660, "the socket's mode");
    let small = b"abc\n";
    let big = test_bytes(BIG);
    tb.scratch.write("www/small.txt", small);
    tb.scratch.write("www/big.bin", &big);
    let conf = apache_conf(&tb, mpm);
    let conf = conf.to_str().unwrap();
    let syntax = run_bounded("/usr/sbin/apache2", &["-t", "-f", conf], Duration::from_secs(20));
    assert!(syntax.status.success(), "apache2 -t: {syntax:?}");

    let mut server =
        tb.spawn_under_shim("apache2", "/usr/sbin/apache2", &["-f", conf, "-DFOREGROUND"]);
    server.wait_ready(Duration::from_secs(30), |_| {
        error_log(&tb).contains("resuming normal operations")
    });

    assert_eq!(tb.curl(PORT, "/small.txt"), small, "the 4-byte file");
    let got_big = tb.curl(PORT, "/big.bin");
    assert_eq!(got_big.len(), BIG, "the 10 MiB file's length");
    assert_eq!(
        sha256(&got_big, &tb.scratch),
        sha256(&big, &tb.scratch),
        "the 10 MiB file's sha256"
    );

    let n = ab_requests();
    let ab = tb.ab(PORT, "/small.txt", n, 100, Duration::from_secs(600));
    println!("{test}: apache {mpm}: {}", ab.summary());
    ab.assert_clean(n, test);

    // Acceptance 3: both instances accept, and the children are apps of their own.
    let children = server.group_members().len().saturating_sub(1);
    let stat = tb.netpop.stat_json();
    println!("{}", tb.netpop.stat_table());
    for i in stat.get("instances").array() {
        assert!(i.get("accepts").u64() > 0, "instance {} accepted nothing", i.get("index").u64());
    }
    assert!(children >= 2, "apache has {children} children");
    assert!(
        stat.get("apps").u64() >= 2,
        "{} apps registered for {children} apache children",
        stat.get("apps").u64()
    );

    // A graceful restart, twice, under load: no request lost.
    let load = ab_in_background(&tb, 20_000);
    thread::sleep(Duration::from_millis(1000));
    for _ in 0..2 {
        server.signal(libc::SIGUSR1);
        thread::sleep(Duration::from_millis(1000));
    }
    let out = load.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{test}: graceful restarts under load:\n{text}");
    assert!(text.contains("Complete requests:      20000"), "ab under graceful restarts:\n{text}");
    assert!(text.contains("Failed requests:        0"), "ab under graceful restarts:\n{text}");
    assert!(
        error_log(&tb).matches("resuming normal operations").count() >= 3,
        "{}",
        error_log(&tb)
    );
    assert_eq!(tb.curl(PORT, "/small.txt"), small, "served after the restarts");

    // A stop under load: bounded, complete, no crash; netpop lets go of every app.
    let load = ab_in_background(&tb, 200_000);
    thread::sleep(Duration::from_millis(1000));
    let stop = if mpm == "prefork" { libc::SIGTERM } else { libc::SIGWINCH };
    server.signal(stop);
    let t0 = Instant::now();
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "apache did not stop within 30 s:\n{}", error_log(&tb));
    println!("{test}: stopped by signal {stop} in {:.1?} ({status:?})", t0.elapsed());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server.group_members().is_empty() {
        assert!(Instant::now() < deadline, "apache processes left: {:?}", server.group_members());
        thread::sleep(Duration::from_millis(50));
    }
    let _ = load.join();
    assert_no_crash(&tb, &server);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = tb.netpop.stat_json();
        if stat.get("apps").u64() == 0 {
            for i in stat.get("instances").array() {
                assert_eq!(i.get("state").str(), "running");
            }
            break;
        }
        assert!(Instant::now() < deadline, "netpop still holds apps:\n{}", tb.netpop.stat_table());
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn apache_prefork_children_accept_on_the_inherited_listener() {
    apache("apache_prefork_children_accept_on_the_inherited_listener", "prefork");
}

#[test]
fn apache_event_threads_and_epoll() {
    apache("apache_event_threads_and_epoll", "event");
}
