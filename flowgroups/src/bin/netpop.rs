//! The `netpop` command: `up`, `down`, `stat`, `capture`, `run` (and the hidden `instance`,
//! which the control plane runs once per queue). See `netpop help` and `flowgroups::plane`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use flowgroups::plane::admin::{self, AdminRequest};
use flowgroups::plane::config::{ArgCursor, ConfigError, Target, parse_up};
use flowgroups::plane::run::{RUN_HELP, RunError, parse_run};
use flowgroups::plane::server::{DEFAULT_GRACE, ReadyReport};
use flowgroups::plane::{PlaneError, child, daemon, run_up};

const USAGE: &str = "\
netpop — a userspace TCP/IP stack for multicore machines

usage:
  netpop up --ip A.B.C.D/P [options]     start the control plane and one kernel instance per queue
      --name N                 name of this netpop (default netpop): socket <dir>/<N>.sock
      --nic sim|afxdp:IF|ixgbe:PCI
                               NIC backend (default sim: the 82599 model)
      --wire tap:NAME|packet:IF|unix:PATH
                               wire of the model (sim only; unix: a SOCK_SEQPACKET socket whose
                               peer listens at PATH, one frame per record, no privileges)
      --queues Q               kernel instances, 1..16 (default 1); with afxdp exactly the
                               interface's receive queue count (ethtool -l; change it with
                               ethtool -L), since frames on an unserved queue would be lost
      --gateway G              default gateway
      --mac M                  MAC address (default: the NIC's; sim: 02:00:00:82:59:90)
      --mtu BYTES              link MTU (default 1500)
      --groups G               flow groups, a power of two (default 128; RETA NICs: at most 128)
      --policy off|idle|live   balancer policy (default idle)
      --cores LIST             pin instance i to the i-th CPU of LIST, e.g. 2-3 or 0,2
      --socket-dir DIR         default /run/netpop (root), $XDG_RUNTIME_DIR/netpop or /tmp/netpop-$UID
      --socket-group NAME|GID  give the registration socket <dir>/<N>.sock to this group, so that
                               apps running as another user in it (e.g. Apache children as
                               www-data) can register; the directory must be searchable by them
      --socket-mode OCTAL      permission bits of that socket (default 0660 with --socket-group,
                               else from the umask); both are set before the socket appears
      --rx-ring N              receive descriptors of each instance's queue (sim, ixgbe), a power
                               of two 8..4096 (default 4096: a burst of SYNs waits there
                               while the instance is busy; the 82599 drops what overflows)
      --tx-ring N              transmit descriptors of each instance's queue (default 512)
      --app-sockets N          sockets per app segment (default 1024)
      --app-ring-slots N       request/completion ring slots per app and instance (default 256)
      --app-socket-buffer B    bytes of each socket's rx and tx ring (default 65536)
      --foreground             do not daemonise (the daemon logs to <dir>/<N>.log)
  netpop down [--name N] [--socket-dir DIR] [--grace SECS]
                               stop: Shutdown to the instances, SIGKILL after the grace period
  netpop stat [--name N] [--socket-dir DIR] [--json] [--groups]
                               per-instance (and per-flow-group) counters
  netpop capture [--name N] [--socket-dir DIR] --instance I --count C --out FILE.pcap [--timeout SECS]
                               write the next C frames of instance I to a pcap file
  netpop run [--name N] [--socket-dir DIR] [--shim PATH] [--required] -- CMD [ARGS...]
                               run CMD with the socket shim preloaded (netpop run --help
                               lists the environment variables the shim reads)
";

fn main() -> ExitCode {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if raw.first().is_some_and(|c| c == "run") {
        // The program and its arguments may be any bytes: keep them as they came.
        return run(raw.get(1..).unwrap_or_default());
    }
    let args: Vec<String> = raw.into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let (cmd, rest) = match args.split_first() {
        Some((cmd, rest)) => (cmd.as_str(), rest.to_vec()),
        None => ("help", Vec::new()),
    };
    let result = match cmd {
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        "up" => up(rest),
        "down" => down(&rest),
        "stat" => stat(&rest),
        "capture" => capture(&rest),
        "instance" => child::run_instance(&rest).map_err(|e| e.to_string()),
        other => Err(format!("unknown command '{other}' (try netpop help)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpop {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `netpop run`: returns only if the program could not be started.
fn run(args: &[std::ffi::OsString]) -> ExitCode {
    let error = match parse_run(args) {
        Ok(config) => flowgroups::plane::run::exec(&config),
        Err(RunError::Help) => {
            print!("{RUN_HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => e,
    };
    eprintln!("netpop run: {error}");
    ExitCode::from(error.exit_status())
}

fn up(mut args: Vec<String>) -> Result<(), String> {
    let ready_fd = daemon::take_ready_fd(&mut args).map_err(|e| e.to_string())?;
    let config = parse_up(&args).map_err(|e| e.to_string())?;
    if !config.foreground {
        let line = daemon::launch(&config).map_err(|e| e.to_string())?;
        println!("{line}");
        return Ok(());
    }
    let mut ready = ReadyReport::default();
    if let Some(fd) = ready_fd {
        ready.launcher = Some(daemon::become_daemon(fd).map_err(|e: PlaneError| e.to_string())?);
    }
    run_up(config, ready).map_err(|e| e.to_string())
}

fn seconds(option: &'static str, v: &str) -> Result<Duration, ConfigError> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or(ConfigError::Invalid {
            option,
            value: v.to_string(),
            why: "expected seconds (0..3600)".into(),
        })
}

fn down(args: &[String]) -> Result<(), String> {
    let mut target = Target::default();
    let mut grace = DEFAULT_GRACE;
    let mut c = ArgCursor::new(args);
    while let Some(opt) = c.next_option() {
        if target.take(opt, &mut c).map_err(|e| e.to_string())? {
            continue;
        }
        match opt {
            "--grace" => {
                grace = seconds("--grace", c.value("--grace").map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?
            }
            other => return Err(ConfigError::UnknownOption(other.to_string()).to_string()),
        }
    }
    let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
    let body = admin::request(
        &target.socket_path(),
        AdminRequest::Down { grace_ms },
        None,
        grace + Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    println!("{}", body.trim_end());
    Ok(())
}

fn stat(args: &[String]) -> Result<(), String> {
    let mut target = Target::default();
    let (mut json, mut groups) = (false, false);
    let mut c = ArgCursor::new(args);
    while let Some(opt) = c.next_option() {
        if target.take(opt, &mut c).map_err(|e| e.to_string())? {
            continue;
        }
        match opt {
            "--json" => json = true,
            "--groups" => groups = true,
            other => return Err(ConfigError::UnknownOption(other.to_string()).to_string()),
        }
    }
    let body = admin::request(
        &target.socket_path(),
        AdminRequest::Stat { json, groups },
        None,
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    print!("{body}");
    Ok(())
}

fn capture(args: &[String]) -> Result<(), String> {
    let mut target = Target::default();
    let (mut instance, mut count, mut out, mut timeout) =
        (None, None, None, Duration::from_secs(30));
    let mut c = ArgCursor::new(args);
    let e = |e: ConfigError| e.to_string();
    while let Some(opt) = c.next_option() {
        if target.take(opt, &mut c).map_err(e)? {
            continue;
        }
        match opt {
            "--instance" => {
                let v = c.value("--instance").map_err(e)?;
                instance = Some(v.parse::<u16>().map_err(|_| format!("invalid --instance '{v}'"))?);
            }
            "--count" => {
                let v = c.value("--count").map_err(e)?;
                let n = v.parse::<u32>().ok().filter(|&n| n > 0);
                count = Some(n.ok_or_else(|| format!("invalid --count '{v}': a positive number"))?);
            }
            "--out" => out = Some(PathBuf::from(c.value("--out").map_err(e)?)),
            "--timeout" => {
                timeout = seconds("--timeout", c.value("--timeout").map_err(e)?).map_err(e)?
            }
            other => return Err(ConfigError::UnknownOption(other.to_string()).to_string()),
        }
    }
    let instance = instance.ok_or_else(|| e(ConfigError::Required("--instance")))?;
    let count = count.ok_or_else(|| e(ConfigError::Required("--count")))?;
    let out = out.ok_or_else(|| e(ConfigError::Required("--out")))?;
    let file = std::fs::File::create(&out).map_err(|err| format!("{}: {err}", out.display()))?;
    let fd = std::os::fd::OwnedFd::from(file);
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let body = admin::request(
        &target.socket_path(),
        AdminRequest::Capture { instance, count, timeout_ms },
        Some(&fd),
        timeout + Duration::from_secs(10),
    )
    .map_err(|err| {
        let _ = std::fs::remove_file(&out);
        err.to_string()
    })?;
    println!("{}", body.trim_end());
    Ok(())
}
