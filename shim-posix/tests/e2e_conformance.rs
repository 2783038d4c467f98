//! Issue 5, acceptance 4 under a live netpop (root; skipped otherwise): the conformance
//! program (`tests/conformance/conformance.c`) prints exactly the same lines on the kernel
//! stack and under the shim on a netpop with two instances, on the 82599 model (TAP wire)
//! and on AF_XDP.
//!
//! A netpop stack does not connect to its own address, so the program runs in its
//! peer-helper mode: a second copy of it, in the peer namespace and without the shim,
//! makes the kernel end of every connection (a client dialing our listener, or a listener
//! for us to dial) and passes it over a Unix socket. Every check still reports what the
//! program's own end — a netpop socket — saw. The reference run on the kernel stack makes
//! both ends itself.

mod e2e_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use e2e_support::*;

fn program() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netpop-e2e-conformance");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/conformance.c");
            let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
            let status = Command::new(&cc)
                .args(["-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
            assert!(status.success(), "compiling {} failed", src.display());
            out
        })
        .clone()
}

/// The helper in the peer namespace (killed on drop; it also exits when the program
/// hangs up).
struct Helper {
    child: Child,
}

impl Helper {
    fn start(tb: &Testbed, socket: &Path) -> Helper {
        let mut child = tb
            .ns
            .command(program().to_str().unwrap())
            .args(["peer-helper", socket.to_str().unwrap(), PEER_IP])
            .env_remove("LD_PRELOAD")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the helper did not start");
        Helper { child }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env_remove("LD_PRELOAD")
        .env_remove("NETPOP_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "conformance failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn identical_under_live_netpop(test: &str, nic: Nic) {
    if skip(test, &["cc", "ethtool"]) {
        return;
    }
    let _one_at_a_time = serial();
    let kernel = run(Command::new(program()).env_remove("CONF_PEER").env_remove("CONF_ADDR"));
    assert!(kernel.contains("done") && kernel.lines().count() > 60, "reference run:\n{kernel}");

    let tb = Testbed::new("cf", nic, 2);
    let helper_socket = tb.scratch.path("peer-helper.sock");
    let _helper = Helper::start(&tb, &helper_socket);
    let live = run(Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(&tb.bins.netpop)
        .args(["run", "--name", &tb.netpop.name, "--socket-dir"])
        .arg(&tb.scratch.dir)
        .arg("--shim")
        .arg(&tb.bins.shim)
        .args(["--required", "--"])
        .arg(program())
        .env("CONF_ADDR", NETPOP_IP)
        .env("CONF_PEER", &helper_socket));
    let diffs: Vec<String> = kernel
        .lines()
        .zip(live.lines())
        .filter(|(k, l)| k != l)
        .map(|(k, l)| format!("  kernel: {k}\n  netpop: {l}"))
        .collect();
    assert!(
        diffs.is_empty() && kernel.lines().count() == live.lines().count(),
        "{test}: differs from the kernel stack ({} vs {} lines):\n{}\nlive output:\n{live}",
        kernel.lines().count(),
        live.lines().count(),
        diffs.join("\n")
    );
    println!("{test}: {} identical lines", live.lines().count());
    let stat = tb.netpop.stat_json();
    assert!(stat.get("apps_total").u64() >= 2, "the program and its forked children registered");
}

#[test]
fn conformance_is_identical_under_netpop_on_the_model_with_a_tap_wire() {
    identical_under_live_netpop(
        "conformance_is_identical_under_netpop_on_the_model_with_a_tap_wire",
        Nic::SimTap,
    );
}

#[test]
fn conformance_is_identical_under_netpop_on_af_xdp() {
    identical_under_live_netpop("conformance_is_identical_under_netpop_on_af_xdp", Nic::AfXdp);
}
