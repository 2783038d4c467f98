//! `netpop run`: start a program with the socket shim preloaded (issue 5 "Scope"; the
//! counterpart of `onload CMD`).
//!
//! The command only prepares an environment and replaces itself with the program
//! (execvp(3)), so the program's pid, process group, signals and exit status are its own —
//! what a service manager or a shell expects of the command it started:
//! - `LD_PRELOAD` gets the shim (`libnetpop_shim.so` next to the `netpop` binary, or
//!   `--shim PATH`) in front of whatever was there, unless it is there already;
//! - `NETPOP_SOCKET` names the registration socket of the netpop chosen by `--name` and
//!   `--socket-dir` (the same defaults as `netpop up`), `NETPOP_NAME` its name;
//! - `--required` sets `NETPOP_REQUIRED=1` (TCP sockets fail instead of falling back).
//!
//! The variables the shim reads are listed in [`RUN_HELP`].

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::config::{ArgCursor, ConfigError, Target};

/// File name of the shim library, as cargo builds it.
pub const SHIM_FILE_NAME: &str = "libnetpop_shim.so";

/// `netpop run --help`.
pub const RUN_HELP: &str = "\
usage: netpop run [--name N] [--socket-dir DIR] [--shim PATH] [--required] [--] CMD [ARGS...]

Runs CMD with the netpop socket shim preloaded, so that its TCP/IPv4 sockets are served by
the netpop named N (like `onload CMD`). netpop run replaces itself with CMD: the pid, the
signals and the exit status are CMD's.

options:
  --name N           which netpop (default netpop)
  --socket-dir DIR   where its socket is (default /run/netpop for root, else
                     $XDG_RUNTIME_DIR/netpop or /tmp/netpop-$UID)
  --shim PATH        the shim library (default: libnetpop_shim.so next to this netpop binary)
  --required         set NETPOP_REQUIRED=1: TCP sockets fail if netpop cannot be reached
  --                 end of options (needed only if CMD begins with '-')

Without --name and --socket-dir an NETPOP_SOCKET already in the environment is kept.

environment read by the shim (netpop run sets the first three):
  LD_PRELOAD         the shim's path, which also survives exec: a program that builds a
                     new environment keeps the shim and the NETPOP_* variables
  NETPOP_SOCKET      path of the registration socket (default $NETPOP_RUN_DIR/$NETPOP_NAME.sock)
  NETPOP_NAME        name of the netpop when NETPOP_SOCKET is unset (default netpop)
  NETPOP_RUN_DIR     directory of registration sockets when NETPOP_SOCKET is unset
                     (default /run/netpop)
  NETPOP_REQUIRED=1  if netpop cannot be reached, socket(AF_INET, SOCK_STREAM) fails with
                     ENETDOWN instead of falling back to the kernel TCP stack
  NETPOP_DISABLE=1   never use netpop: every call goes to the kernel
  NETPOP_QUIET=1     no line on stderr when falling back to the kernel
Booleans take 1/true/yes/on or 0/false/no/off; any other value counts as unset.

Only AF_INET SOCK_STREAM sockets go to netpop; Unix, UDP, IPv6 and all other descriptors
stay with the kernel. Example:
  netpop up --nic sim --wire tap:np0 --ip 10.0.0.2/24 --queues 2
  netpop run -- lighttpd -D -f /etc/lighttpd/lighttpd.conf
";

/// What `netpop run` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// Which netpop; `None` when neither `--name` nor `--socket-dir` was given.
    pub target: Option<Target>,
    /// `--shim PATH`.
    pub shim: Option<PathBuf>,
    /// `--required`.
    pub required: bool,
    /// The program and its arguments (never empty).
    pub command: Vec<OsString>,
}

/// Why `netpop run` could not start the program.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The command line is wrong.
    Config(ConfigError),
    /// No program was given.
    NoCommand,
    /// `--help` was asked for (not an error; the caller prints [`RUN_HELP`]).
    Help,
    /// The shim library is not where it was looked for.
    ShimMissing {
        /// Where it was looked for.
        looked_at: PathBuf,
        /// Whether the path came from `--shim`.
        explicit: bool,
    },
    /// The program could not be executed.
    Exec {
        /// The program.
        program: OsString,
        /// The error from execvp.
        source: io::Error,
    },
}

impl RunError {
    /// The exit status a shell would use: 127 for a program that does not exist, 126 for
    /// one that cannot be run, 2 for a wrong command line, 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        match self {
            RunError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
            RunError::Exec { .. } => 126,
            RunError::Config(_) | RunError::NoCommand => 2,
            RunError::Help => 0,
            RunError::ShimMissing { .. } => 1,
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Config(e) => write!(f, "{e} (see netpop run --help)"),
            RunError::Help => f.write_str("help"),
            RunError::NoCommand => {
                f.write_str("no program to run: netpop run [options] -- CMD [ARGS...]")
            }
            RunError::ShimMissing { looked_at, explicit: true } => {
                write!(f, "--shim {}: no such file", looked_at.display())
            }
            RunError::ShimMissing { looked_at, explicit: false } => write!(
                f,
                "the shim library is not at {} (build it with `cargo build -p shim-posix`, \
                 in the same profile as netpop, or give its path with --shim PATH)",
                looked_at.display()
            ),
            RunError::Exec { program, source } => {
                write!(f, "cannot run {}: {source}", Path::new(program).display())
            }
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Config(e) => Some(e),
            RunError::Exec { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        RunError::Config(e)
    }
}

/// Options of `netpop run` that take a value (`--opt VALUE` or `--opt=VALUE`).
const VALUE_OPTIONS: [&str; 3] = ["--name", "--socket-dir", "--shim"];

/// Parses the arguments of `netpop run`: options, then the command (after `--`, or from
/// the first word that is not an option).
pub fn parse_run(args: &[OsString]) -> Result<RunConfig, RunError> {
    // Options are UTF-8; the command and its arguments may be any bytes.
    let mut options: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(arg) = args.get(at) {
        if arg == "--" {
            at += 1;
            break;
        }
        if !arg.as_bytes().starts_with(b"-") {
            break;
        }
        let text = arg
            .clone()
            .into_string()
            .map_err(|o| ConfigError::UnknownOption(o.to_string_lossy().into_owned()))?;
        let takes_value = VALUE_OPTIONS.contains(&text.as_str());
        options.push(text);
        at += 1;
        if takes_value {
            if let Some(value) = args.get(at) {
                options.push(value.to_string_lossy().into_owned());
                at += 1;
            }
        }
    }
    let command: Vec<OsString> = args.get(at..).unwrap_or_default().to_vec();
    let mut target: Option<Target> = None;
    let mut shim = None;
    let mut required = false;
    let mut c = ArgCursor::new(&options);
    while let Some(opt) = c.next_option() {
        match opt {
            "--name" | "--socket-dir" => {
                let t = target.get_or_insert_with(Target::default);
                t.take(opt, &mut c)?;
            }
            "--shim" => {
                let v = c.value("--shim")?;
                if v.is_empty() {
                    return Err(ConfigError::Invalid {
                        option: "--shim",
                        value: String::new(),
                        why: "empty path".into(),
                    }
                    .into());
                }
                shim = Some(PathBuf::from(v));
            }
            "--required" => required = true,
            "-h" | "--help" => return Err(RunError::Help),
            other => return Err(ConfigError::UnknownOption(other.to_string()).into()),
        }
    }
    if command.is_empty() {
        return Err(RunError::NoCommand);
    }
    Ok(RunConfig { target, shim, required, command })
}

/// Where the shim is: `explicit` if given, else next to the running `netpop` binary.
/// The result is absolute (the program may change directory before it loads anything).
pub fn locate_shim(explicit: Option<&Path>) -> Result<PathBuf, RunError> {
    let (path, is_explicit) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => {
            let exe = std::env::current_exe()
                .map_err(|source| RunError::Exec { program: OsString::from("netpop"), source })?;
            let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            (dir.join(SHIM_FILE_NAME), false)
        }
    };
    match std::fs::canonicalize(&path) {
        Ok(abs) if abs.is_file() => Ok(abs),
        _ => Err(RunError::ShimMissing { looked_at: path, explicit: is_explicit }),
    }
}

/// `LD_PRELOAD` with `shim` in front of `existing`, unless an item already names the same
/// file. Items are separated by spaces or colons (ld.so(8)); the result uses a space.
pub fn preload_value(shim: &Path, existing: Option<&OsStr>) -> OsString {
    let shim_bytes = shim.as_os_str().as_bytes();
    let shim_name = shim.file_name().map(OsStr::as_bytes);
    let Some(existing) = existing.filter(|e| !e.is_empty()) else {
        return shim.as_os_str().to_os_string();
    };
    let present = existing
        .as_bytes()
        .split(|&b| b == b' ' || b == b':')
        .filter(|item| !item.is_empty())
        .any(|item| {
            item == shim_bytes
                || Path::new(OsStr::from_bytes(item)).file_name().map(OsStr::as_bytes) == shim_name
        });
    if present {
        return existing.to_os_string();
    }
    let mut v = shim_bytes.to_vec();
    v.push(b' ');
    v.extend_from_slice(existing.as_bytes());
    OsString::from_vec(v)
}

/// The environment changes `netpop run` makes, given the current values of `LD_PRELOAD`
/// and `NETPOP_SOCKET`.
pub fn environment(
    config: &RunConfig,
    shim: &Path,
    preload: Option<&OsStr>,
    socket_env: Option<&OsStr>,
) -> Vec<(&'static str, OsString)> {
    let mut env = vec![("LD_PRELOAD", preload_value(shim, preload))];
    match (&config.target, socket_env.filter(|s| !s.is_empty())) {
        (None, Some(_)) => {}
        (target, _) => {
            let t = target.clone().unwrap_or_default();
            env.push(("NETPOP_SOCKET", t.socket_path().into_os_string()));
            env.push(("NETPOP_NAME", OsString::from(&t.name)));
        }
    }
    if config.required {
        env.push(("NETPOP_REQUIRED", OsString::from("1")));
    }
    env
}

/// Replaces this process with the configured program; returns only on failure.
pub fn exec(config: &RunConfig) -> RunError {
    let shim = match locate_shim(config.shim.as_deref()) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let env = environment(
        config,
        &shim,
        std::env::var_os("LD_PRELOAD").as_deref(),
        std::env::var_os("NETPOP_SOCKET").as_deref(),
    );
    let Some((program, args)) = config.command.split_first() else {
        return RunError::NoCommand;
    };
    let socket = env.iter().find(|(k, _)| *k == "NETPOP_SOCKET").map(|(_, v)| PathBuf::from(v));
    if let Some(sock) = socket.filter(|s| !s.exists()) {
        // The shim falls back (or fails, with --required) and says so itself; this line
        // names the likely cause while the user is still looking at the command.
        eprintln!(
            "netpop run: note: nothing at {} (is `netpop up` running with this --name and \
             --socket-dir?)",
            sock.display()
        );
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    RunError::Exec { program: program.clone(), source: cmd.exec() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_then_the_command_after_a_double_dash() {
        let c =
            parse_run(&args(&["--name", "web", "--socket-dir=/tmp/np", "--", "ls", "-l"])).unwrap();
        let t = c.target.clone().unwrap();
        assert_eq!(t.name, "web");
        assert_eq!(t.socket_path(), PathBuf::from("/tmp/np/web.sock"));
        assert_eq!(c.command, args(&["ls", "-l"]));
        assert!(!c.required);
        // Without "--" the first word that is not an option starts the command, and the
        // command's own options are left alone.
        let c = parse_run(&args(&["--required", "lighttpd", "-D", "--name", "x"])).unwrap();
        assert!(c.required && c.target.is_none());
        assert_eq!(c.command, args(&["lighttpd", "-D", "--name", "x"]));
        let c = parse_run(&args(&["--", "--odd-program"])).unwrap();
        assert_eq!(c.command, args(&["--odd-program"]));
    }

    #[test]
    fn mistakes_are_reported_with_the_option() {
        assert!(matches!(parse_run(&args(&["--name", "web"])), Err(RunError::NoCommand)));
        assert!(matches!(parse_run(&args(&["--"])), Err(RunError::NoCommand)));
        let e = parse_run(&args(&["--bogus", "--", "ls"])).unwrap_err();
        assert!(e.to_string().contains("--bogus"), "{e}");
        let e = parse_run(&args(&["--name", "a/b", "ls"])).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        assert!(matches!(parse_run(&args(&["--help"])), Err(RunError::Help)));
        assert_eq!(parse_run(&args(&["--shim"])).unwrap_err().exit_status(), 2);
    }

    #[test]
    fn the_shim_goes_first_in_ld_preload_once() {
        let shim = Path::new("/opt/np/libnetpop_shim.so");
        assert_eq!(preload_value(shim, None), OsString::from("/opt/np/libnetpop_shim.so"));
        assert_eq!(
            preload_value(shim, Some(OsStr::new("/usr/lib/libfoo.so"))),
            OsString::from("/opt/np/libnetpop_shim.so /usr/lib/libfoo.so")
        );
        // Already there (same path, or another copy of the same library): unchanged.
        for present in ["/usr/lib/libfoo.so:/opt/np/libnetpop_shim.so", "/x/libnetpop_shim.so"] {
            assert_eq!(preload_value(shim, Some(OsStr::new(present))), OsString::from(present));
        }
    }

    #[test]
    fn the_socket_follows_the_options_or_the_environment() {
        let shim = Path::new("/s/libnetpop_shim.so");
        let get = |env: &[(&'static str, OsString)], k: &str| {
            env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let named = parse_run(&args(&["--name", "web", "--socket-dir", "/d", "ls"])).unwrap();
        let env = environment(&named, shim, None, Some(OsStr::new("/other.sock")));
        assert_eq!(get(&env, "NETPOP_SOCKET"), Some(OsString::from("/d/web.sock")));
        assert_eq!(get(&env, "NETPOP_NAME"), Some(OsString::from("web")));
        assert_eq!(get(&env, "NETPOP_REQUIRED"), None);
        let plain = parse_run(&args(&["--required", "ls"])).unwrap();
        let env = environment(&plain, shim, None, Some(OsStr::new("/other.sock")));
        assert_eq!(get(&env, "NETPOP_SOCKET"), None, "an exported NETPOP_SOCKET is kept");
        assert_eq!(get(&env, "NETPOP_REQUIRED"), Some(OsString::from("1")));
        let env = environment(&plain, shim, None, None);
        let default = Target::default().socket_path().into_os_string();
        assert_eq!(get(&env, "NETPOP_SOCKET"), Some(default));
    }

    #[test]
    fn a_missing_shim_or_program_is_named() {
        let e = locate_shim(Some(Path::new("/nonexistent/libnetpop_shim.so"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/libnetpop_shim.so"), "{e}");
        let e = locate_shim(None);
        // The unit-test binary lives in target/<profile>/deps, where cargo does not put
        // the cdylib; either way the message says where it looked.
        if let Err(e) = e {
            assert!(e.to_string().contains(SHIM_FILE_NAME), "{e}");
        }
        let here = std::env::current_exe().unwrap();
        let found = locate_shim(Some(&here)).unwrap();
        assert!(found.is_absolute());
        let config = RunConfig {
            target: None,
            shim: Some(here),
            required: false,
            command: args(&["/nonexistent/program-for-netpop-run"]),
        };
        let e = exec(&config);
        assert_eq!(e.exit_status(), 127, "{e}");
        assert!(e.to_string().contains("/nonexistent/program-for-netpop-run"), "{e}");
    }
}
