//! Issue 5, acceptance 1 (root; skipped otherwise): Debian's lighttpd, unmodified, under
//! the shim (`netpop run`) on a netpop with two instances — the 82599 model with a TAP wire,
//! and AF_XDP on a veth — each time with the epoll event handler and the sendfile network
//! backend, and with poll and writev. From the peer namespace curl fetches a 4-byte and a
//! 10 MiB file (compared by sha256), and ab makes `NETPOP_E2E_REQUESTS` (default 50,000)
//! requests, one per connection, 100 at a time, with no failure. Afterwards `netpop stat`
//! shows both instances accepting.

mod e2e_support;

use std::path::Path;
use std::time::Duration;

use e2e_support::*;

const PORT: u16 = 8080;
const BIG: usize = 10 << 20;

/// lighttpd 1.4 configuration for `handler` (server.event-handler) and `backend`
/// (server.network-backend), serving `root` on netpop's address.
fn lighttpd_conf(tb: &Testbed, handler: &str, backend: &str) -> String {
    let root = tb.scratch.path("www");
    format!(
        "server.document-root = \"{root}\"\n\
         server.bind = \"{NETPOP_IP}\"\n\
         server.port = {PORT}\n\
         server.event-handler = \"{handler}\"\n\
         server.network-backend = \"{backend}\"\n\
         server.errorlog = \"{log}\"\n\
         server.pid-file = \"{pid}\"\n\
         server.max-connections = 2048\n\
         server.max-fds = 8192\n\
         server.modules = ( )\n\
         mimetype.assign = ( \"\" => \"application/octet-stream\" )\n",
        root = root.display(),
        log = tb.scratch.path("lighttpd.err").display(),
        pid = tb.scratch.path("lighttpd.pid").display(),
    )
}

fn serve_and_load(test: &str, nic: Nic, handler: &str, backend: &str) {
    if skip(test, &["/usr/sbin/lighttpd", "curl", "ab", "ethtool", "sha256sum"]) {
        return;
    }
    let _one_at_a_time = serial();
    let tb = Testbed::new("lt", nic, 2);
    let small = b"abc\n";
    let big = test_bytes(BIG);
    tb.scratch.write("www/small.txt", small);
    tb.scratch.write("www/big.bin", &big);
    let conf = tb.scratch.write("lighttpd.conf", lighttpd_conf(&tb, handler, backend).as_bytes());
    let check = run_bounded(
        "/usr/sbin/lighttpd",
        &["-tt", "-f", conf.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert!(check.status.success(), "lighttpd refuses the configuration: {check:?}");

    let mut server = tb.spawn_under_shim(
        "lighttpd",
        "/usr/sbin/lighttpd",
        &["-D", "-f", conf.to_str().unwrap()],
    );
    let errlog = tb.scratch.path("lighttpd.err");
    server.wait_ready(Duration::from_secs(30), |_| {
        std::fs::read_to_string(&errlog).is_ok_and(|l| l.contains("server started"))
    });

    let got_small = tb.curl(PORT, "/small.txt");
    assert_eq!(got_small, small, "the 4-byte file");
    let got_big = tb.curl(PORT, "/big.bin");
    assert_eq!(got_big.len(), BIG, "the 10 MiB file's length");
    assert_eq!(
        sha256(&got_big, &tb.scratch),
        sha256(&big, &tb.scratch),
        "the 10 MiB file's sha256"
    );

    let n = ab_requests();
    let ab = tb.ab(PORT, "/small.txt", n, 100, Duration::from_secs(600));
    println!("{test}: lighttpd {handler}/{backend}: {}", ab.summary());
    ab.assert_clean(n, test);

    assert!(server.child.try_wait().unwrap().is_none(), "lighttpd died:\n{}", server.log());
    let stat = tb.netpop.stat_json();
    println!("{}", tb.netpop.stat_table());
    for i in stat.get("instances").array() {
        assert!(i.get("accepts").u64() > 0, "instance {} accepted nothing", i.get("index").u64());
    }
    let log = std::fs::read_to_string(&errlog).unwrap_or_default() + &server.log();
    assert!(!log.contains("panicked"), "the shim panicked:\n{log}");
    let _ = Path::new(&conf);
}

#[test]
fn lighttpd_epoll_sendfile_on_the_model_with_a_tap_wire() {
    serve_and_load(
        "lighttpd_epoll_sendfile_on_the_model_with_a_tap_wire",
        Nic::SimTap,
        "linux-sysepoll",
        "sendfile",
    );
}

#[test]
fn lighttpd_poll_writev_on_the_model_with_a_tap_wire() {
    serve_and_load(
        "lighttpd_poll_writev_on_the_model_with_a_tap_wire",
        Nic::SimTap,
        "poll",
        "writev",
    );
}

#[test]
fn lighttpd_epoll_sendfile_on_af_xdp() {
    serve_and_load("lighttpd_epoll_sendfile_on_af_xdp", Nic::AfXdp, "linux-sysepoll", "sendfile");
}

#[test]
fn lighttpd_poll_writev_on_af_xdp() {
    serve_and_load("lighttpd_poll_writev_on_af_xdp", Nic::AfXdp, "poll", "writev");
}
