//! The control plane: `netpop up` and the client commands that talk to it (DESIGN.md
//! "Processes", "Flow-group balancing", "NIC backends").
//!
//! `netpop up` opens the NIC ([`nic`]), creates the control segment, starts one kernel
//! instance per queue by re-executing its own binary ([`spawn`]), waits until every
//! instance serves, then runs one event loop ([`server`]) that
//! - answers app registrations on its Unix socket `<dir>/<name>.sock` ([`registration`]),
//!   and notices apps that hang up. Connecting to it needs write permission on it, so apps
//!   that run as another user (Apache's children as www-data) need `--socket-group` (and
//!   `--socket-mode`), which the plane applies before the socket appears
//!   ([`server::bind_control_socket`]);
//! - answers `netpop stat`, `down` and `capture` on the same socket ([`admin`], [`stat`]);
//! - every 100 ms runs a balancing round ([`balance_loop`]) and checks instance health
//!   ([`health`]): a dead instance's flow groups go to the survivors.
//!
//! Without `--foreground`, `netpop up` starts the plane as a daemon and returns once it
//! accepts registrations ([`daemon`]). `--wire unix:PATH` ([`unix_wire`]) lets everything
//! run without privileges, with a test's `tcp-core` stack as the link partner.
//!
//! `netpop run -- CMD` ([`run`]) starts a program with the socket shim preloaded.
//!
//! The instance side of the process model (`netpop instance`, building an
//! `instance::InstanceSetup` from inherited descriptors) is in [`child`].

pub mod admin;
pub mod balance_loop;
pub mod child;
pub mod config;
pub mod daemon;
pub mod health;
pub mod nic;
pub mod registration;
pub mod run;
pub mod server;
pub mod spawn;
pub mod stat;
pub mod unix_wire;

use std::fmt;
use std::io;

use crate::shm::ShmError;

pub use config::{ConfigError, NicSpec, UpConfig, WireSpec};
pub use server::run_up;

/// Why `netpop up` (or the plane's set-up of one part) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PlaneError {
    /// The configuration is wrong.
    Config(String),
    /// A system call failed while doing `what`.
    Io {
        /// What the plane was doing.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Shared memory failed while doing `what`.
    Shm {
        /// What the plane was doing.
        what: &'static str,
        /// The error.
        source: ShmError,
    },
    /// The NIC could not be set up.
    Nic(String),
    /// An instance did not start.
    Instance(String),
    /// A netpop with this name already runs.
    AlreadyUp(String),
}

impl PlaneError {
    /// An `Io` error constructor for `map_err`.
    pub fn io(what: &'static str) -> impl FnOnce(io::Error) -> PlaneError {
        move |source| PlaneError::Io { what, source }
    }

    /// A `Shm` error constructor for `map_err`.
    pub fn shm(what: &'static str) -> impl FnOnce(ShmError) -> PlaneError {
        move |source| PlaneError::Shm { what, source }
    }
}

impl fmt::Display for PlaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaneError::Config(m) | PlaneError::Nic(m) | PlaneError::Instance(m) => f.write_str(m),
            PlaneError::Io { what, source } => write!(f, "{what}: {source}"),
            PlaneError::Shm { what, source } => write!(f, "{what}: {source}"),
            PlaneError::AlreadyUp(m) => write!(f, "{m} is already up"),
        }
    }
}

impl std::error::Error for PlaneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlaneError::Io { source, .. } => Some(source),
            PlaneError::Shm { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ConfigError> for PlaneError {
    fn from(e: ConfigError) -> Self {
        PlaneError::Config(e.to_string())
    }
}
