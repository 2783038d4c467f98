//! `netpop up` without `--foreground`: start the plane as a daemon and return once it
//! accepts registrations.
//!
//! The plane cannot simply fork itself into the background after start-up: by then it is
//! multi-threaded (the model engine has its own thread) and a forked child would keep only
//! the forking thread. Instead the launcher re-executes the binary as
//! `netpop up ... --foreground --ready-fd N` with stdin on /dev/null and stdout/stderr
//! appended to `<dir>/<name>.log`; the daemon starts a new session (setsid(2)) and, when
//! it is ready or has failed, writes one line (`ok <ready line>` or `error <why>`) on the
//! inherited socket `N`. The launcher prints it and exits 0 or 1 accordingly.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::shm::process::{claim_inherited_fd, dup_inheritable, new_session};

use super::PlaneError;
use super::config::{UpConfig, check_environment};
use super::server::claim_socket_path;

/// The hidden option that carries the readiness socket to the daemon.
pub const READY_FD_OPTION: &str = "--ready-fd";
/// How long the launcher waits for the daemon's verdict.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The daemon's log file.
pub fn log_path(config: &UpConfig) -> PathBuf {
    config.socket_dir.join(format!("{}.log", config.name))
}

/// Starts the daemon and waits for its verdict; returns its ready line.
pub fn launch(config: &UpConfig) -> Result<String, PlaneError> {
    check_environment(config)?;
    std::fs::create_dir_all(&config.socket_dir)
        .map_err(PlaneError::io("creating the socket directory"))?;
    claim_socket_path(&config.socket_path(), &config.name)?;
    let log = log_path(config);
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(PlaneError::io("opening the log file"))?;
    let err = out.try_clone().map_err(PlaneError::io("log file"))?;
    let (ours, theirs) = UnixStream::pair().map_err(PlaneError::io("socketpair"))?;
    let inherited = dup_inheritable(theirs.as_fd()).map_err(PlaneError::io("dup"))?;
    drop(theirs);
    let exe = std::env::current_exe().map_err(PlaneError::io("finding the netpop binary"))?;
    let mut daemon_config = config.clone();
    daemon_config.foreground = true;
    let mut child = Command::new(exe)
        .arg("up")
        .args(daemon_config.to_args())
        .arg(READY_FD_OPTION)
        .arg(inherited.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(PlaneError::io("starting the daemon"))?;
    drop(inherited);
    ours.set_read_timeout(Some(LAUNCH_TIMEOUT)).map_err(PlaneError::io("socketpair"))?;
    let mut line = String::new();
    let read = BufReader::new(&ours).read_line(&mut line);
    // The daemon lives on in its own session; reap nothing here (it is not our zombie to
    // wait for once it exits, init adopts it when we exit).
    match read {
        Ok(_) if line.starts_with("ok ") => {
            Ok(line.trim_end().trim_start_matches("ok ").to_string())
        }
        Ok(_) if line.starts_with("error ") => {
            let _ = child.wait();
            Err(PlaneError::Instance(line.trim_end().trim_start_matches("error ").to_string()))
        }
        _ => {
            let status = child.try_wait().ok().flatten();
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            Err(PlaneError::Instance(format!(
                "the daemon did not report ready (see {})",
                log.display()
            )))
        }
    }
}

/// In the daemon: detach from the terminal's session and take the readiness socket.
pub fn become_daemon(ready_fd: i32) -> Result<UnixStream, PlaneError> {
    let fd = claim_inherited_fd(ready_fd).map_err(PlaneError::io("readiness fd"))?;
    // Fails only if we already lead a process group, which a freshly spawned child does
    // not; a failure leaves us in the launcher's session, which is harmless.
    let _ = new_session();
    Ok(UnixStream::from(fd))
}

/// Removes `--ready-fd N` from `up`'s arguments; returns the number if present.
pub fn take_ready_fd(args: &mut Vec<String>) -> Result<Option<i32>, PlaneError> {
    let Some(at) = args.iter().position(|a| a == READY_FD_OPTION) else { return Ok(None) };
    if at + 1 >= args.len() {
        return Err(PlaneError::Config(format!("{READY_FD_OPTION} needs a value")));
    }
    let value = args.remove(at + 1);
    args.remove(at);
    value
        .parse()
        .map(Some)
        .map_err(|_| PlaneError::Config(format!("{READY_FD_OPTION}: '{value}' is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_fd_is_taken_out_of_the_arguments() {
        let mut a: Vec<String> = ["--ip", "10.0.0.2/24", "--ready-fd", "7", "--foreground"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(take_ready_fd(&mut a).unwrap(), Some(7));
        assert_eq!(a, vec!["--ip", "10.0.0.2/24", "--foreground"]);
        assert_eq!(take_ready_fd(&mut a).unwrap(), None);
        let mut bad = vec!["--ready-fd".to_string()];
        assert!(take_ready_fd(&mut bad).is_err());
    }
}
