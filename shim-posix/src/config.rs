//! The shim's configuration, read from the environment of the application.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `NETPOP_SOCKET` | path of the control plane's registration socket | `$NETPOP_RUN_DIR/$NETPOP_NAME.sock` |
//! | `NETPOP_RUN_DIR` | directory of registration sockets | `/run/netpop` |
//! | `NETPOP_NAME` | which netpop (several may run) | `netpop` |
//! | `NETPOP_REQUIRED` | `1`: if netpop cannot be reached, TCP `socket()` fails with `ENETDOWN` instead of falling back to the kernel stack | `0` |
//! | `NETPOP_DISABLE` | `1`: never use netpop; every call goes to the kernel | `0` |
//! | `NETPOP_QUIET` | `1`: no line on stderr when falling back | `0` |
//!
//! Boolean variables accept `1`/`true`/`yes`/`on` and `0`/`false`/`no`/`off`; anything else
//! (or a value that is not UTF-8) is treated as unset, so a typo never turns netpop off.

use std::ffi::OsString;
use std::path::PathBuf;

/// Where a registration socket lives when nothing else is said.
const DEFAULT_RUN_DIR: &str = "/run/netpop";
/// The name of a netpop started without `--name`.
const DEFAULT_NAME: &str = "netpop";

/// What the environment asks of the shim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    /// The control plane's registration socket.
    pub(crate) socket_path: PathBuf,
    /// Fail TCP sockets instead of falling back to the kernel when netpop is unreachable.
    pub(crate) required: bool,
    /// Do not try netpop at all.
    pub(crate) disabled: bool,
    /// Do not print the fallback notice.
    pub(crate) quiet: bool,
}

fn flag(value: Option<OsString>) -> bool {
    let Some(v) = value else { return false };
    let Some(v) = v.to_str() else { return false };
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

impl Config {
    /// Reads the configuration through `lookup` (the process environment in the shim, a
    /// table in tests).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Config {
        let socket_path = match lookup("NETPOP_SOCKET").filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => {
                let dir = lookup("NETPOP_RUN_DIR")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
                let name = lookup("NETPOP_NAME")
                    .and_then(|n| n.into_string().ok())
                    // A name is one path component: no separators, no `..`.
                    .filter(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..")
                    .unwrap_or_else(|| DEFAULT_NAME.to_string());
                dir.join(format!("{name}.sock"))
            }
        };
        Config {
            socket_path,
            required: flag(lookup("NETPOP_REQUIRED")),
            disabled: flag(lookup("NETPOP_DISABLE")),
            quiet: flag(lookup("NETPOP_QUIET")),
        }
    }

    /// The configuration of this process.
    pub(crate) fn from_env() -> Config {
        Config::from_lookup(|name| std::env::var_os(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|name| {
            vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn default_socket_is_under_run_netpop() {
        let c = config(&[]);
        assert_eq!(c.socket_path, PathBuf::from("/run/netpop/netpop.sock"));
        assert!(!c.required && !c.disabled && !c.quiet);
    }

    #[test]
    fn explicit_socket_wins_over_dir_and_name() {
        let c = config(&[
            ("NETPOP_SOCKET", "/tmp/x.sock"),
            ("NETPOP_RUN_DIR", "/var/run/np"),
            ("NETPOP_NAME", "web"),
        ]);
        assert_eq!(c.socket_path, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn dir_and_name_compose_the_path() {
        let c = config(&[("NETPOP_RUN_DIR", "/var/run/np"), ("NETPOP_NAME", "web")]);
        assert_eq!(c.socket_path, PathBuf::from("/var/run/np/web.sock"));
    }

    #[test]
    fn a_name_cannot_escape_the_run_dir() {
        for bad in ["../etc/x", "..", "a/b", ""] {
            let c = config(&[("NETPOP_NAME", bad)]);
            assert_eq!(c.socket_path, PathBuf::from("/run/netpop/netpop.sock"), "{bad}");
        }
    }

    #[test]
    fn flags_accept_common_spellings_and_ignore_typos() {
        assert!(config(&[("NETPOP_REQUIRED", "1")]).required);
        assert!(config(&[("NETPOP_REQUIRED", "Yes")]).required);
        assert!(config(&[("NETPOP_DISABLE", "on")]).disabled);
        assert!(!config(&[("NETPOP_REQUIRED", "0")]).required);
        assert!(!config(&[("NETPOP_DISABLE", "maybe")]).disabled);
        assert!(config(&[("NETPOP_QUIET", "true")]).quiet);
    }
}
