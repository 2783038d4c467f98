//! Acceptance 4 of issue 5: the conformance program (`tests/conformance/conformance.c`) must
//! print exactly the same lines on the kernel stack and under the shim.
//!
//! Runs made here:
//! 1. the kernel stack, no preload (the reference);
//! 2. the shim preloaded with netpop absent (`NETPOP_SOCKET` naming a socket that does not
//!    exist): every call takes the fallback path; exactly one notice on stderr;
//! 3. the shim against a live netpop, when `NETPOP_SOCKET` is set in the test's
//!    environment (with `NETPOP_REQUIRED=1`, so nothing silently falls back; `CONF_ADDR`
//!    chooses the address the program listens on and connects to). Without it the run is
//!    skipped with a message.
//!
//! Also checked: `NETPOP_REQUIRED=1` without netpop makes TCP `socket()` fail with
//! ENETDOWN, and `exec` with an empty environment keeps the preload.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    // target/<profile>/deps/conformance-<hash> -> target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The shim library. `cargo test` builds the crate's rlib but not always its cdylib, so the
/// library is built here (once per test process; a no-op when it is up to date) with the
/// same cargo, so that a stale copy is never tested.
fn shim() -> PathBuf {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let so = target_dir().join("libnetpop_shim.so");
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "shim-posix", "--lib"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
        assert!(status.success(), "building libnetpop_shim.so failed");
        assert!(so.exists(), "{} is missing after the build", so.display());
        so
    })
    .clone()
}

/// Compiled once per test process (the tests run in parallel threads).
fn conformance_program() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(compile_conformance_program).clone()
}

fn compile_conformance_program() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netpop-conformance");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/conformance.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    // _FORTIFY_SOURCE makes glibc route read/recv/poll through the __*_chk entry points.
    let status = Command::new(&cc)
        .args(["-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

/// Runs the program with `env` added; `preload` adds the shim.
fn run(program: &Path, args: &[&str], preload: bool, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for var in ["NETPOP_SOCKET", "NETPOP_REQUIRED", "NETPOP_DISABLE", "NETPOP_QUIET", "LD_PRELOAD"]
    {
        cmd.env_remove(var);
    }
    if preload {
        cmd.env("LD_PRELOAD", shim());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Line-by-line comparison with a readable failure.
fn assert_same(reference: &str, other: &str, what: &str) {
    let a: Vec<&str> = reference.lines().collect();
    let b: Vec<&str> = other.lines().collect();
    let diffs: Vec<String> = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("  kernel: {x}\n  {what}: {y}"))
        .collect();
    assert!(
        diffs.is_empty() && a.len() == b.len(),
        "{what} differs from the kernel stack ({} vs {} lines):\n{}",
        a.len(),
        b.len(),
        diffs.join("\n")
    );
}

const ABSENT: &str = "/nonexistent/netpop-conformance.sock";

#[test]
fn conformance_is_identical_on_kernel_and_shim_fallback_and_live_netpop() {
    let program = conformance_program();
    let kernel = run(&program, &[], false, &[]);
    let kernel_out = text(&kernel.stdout);
    assert!(kernel_out.contains("done"), "reference run incomplete:\n{kernel_out}");
    assert!(kernel_out.lines().count() > 60, "too few checks ran:\n{kernel_out}");

    let fallback = run(&program, &[], true, &[("NETPOP_SOCKET", ABSENT)]);
    assert_same(&kernel_out, &text(&fallback.stdout), "shim (netpop absent)");
    let notices: Vec<String> = text(&fallback.stderr)
        .lines()
        .filter(|l| l.contains("netpop-shim"))
        .map(String::from)
        .collect();
    assert_eq!(notices.len(), 1, "expected one fallback notice, got {notices:?}");
    assert!(notices[0].contains(ABSENT) && notices[0].contains("kernel TCP stack"), "{notices:?}");

    match std::env::var("NETPOP_SOCKET") {
        Ok(sock) if !sock.is_empty() => {
            let addr = std::env::var("CONF_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
            let live = run(
                &program,
                &[],
                true,
                &[("NETPOP_SOCKET", &sock), ("NETPOP_REQUIRED", "1"), ("CONF_ADDR", &addr)],
            );
            assert_same(&kernel_out, &text(&live.stdout), "shim (live netpop)");
        }
        _ => eprintln!("skipping the live-netpop run: NETPOP_SOCKET is not set"),
    }
}

#[test]
fn required_without_netpop_fails_tcp_sockets_with_enetdown() {
    let program = conformance_program();
    let out = run(
        &program,
        &["socket-probe"],
        true,
        &[("NETPOP_SOCKET", ABSENT), ("NETPOP_REQUIRED", "1")],
    );
    assert_eq!(text(&out.stdout).trim(), "socket: ENETDOWN");
    assert!(text(&out.stderr).contains("NETPOP_REQUIRED=1"));
    let out =
        run(&program, &["socket-probe"], true, &[("NETPOP_SOCKET", ABSENT), ("NETPOP_QUIET", "1")]);
    assert_eq!(text(&out.stdout).trim(), "socket: ok");
    assert!(!text(&out.stderr).contains("netpop-shim"), "NETPOP_QUIET=1 still printed");
}

#[test]
fn exec_with_an_empty_environment_keeps_the_preload() {
    let program = conformance_program();
    let out = run(&program, &["exec-probe"], true, &[("NETPOP_SOCKET", ABSENT)]);
    assert_eq!(text(&out.stdout).trim(), "preload kept: yes");
    let out = run(&program, &["exec-probe"], false, &[]);
    assert_eq!(text(&out.stdout).trim(), "preload kept: no", "without the shim nothing is added");
}
