//! AF_XDP queue pairs in pure Rust over libc: no libbpf, no C.
//!
//! Implements the user side of the kernel's `Documentation/networking/af_xdp.rst`:
//! - [`bpf`]: an `XSKMAP` and a hand-assembled XDP program that redirects each frame to the
//!   socket registered for its rx queue (`bpf_redirect_map`, falling back to `XDP_PASS`);
//! - [`netlink`]: attaching that program in SKB (generic) or driver (native) mode over
//!   rtnetlink, and detaching it on drop;
//! - `umem` and [`socket`]: the UMEM, the fill/completion/rx/tx rings and one socket per
//!   queue, implementing [`crate::QueuePair`];
//! - [`ethtool`]: the NIC's RSS indirection table, or a typed "no steering" answer.
//!
//! Process model: the control plane creates the map, loads and attaches the program
//! ([`AfXdpPort`]); map and program fds survive fork(2), so each kernel instance can bind
//! its own [`XskSocket`] and insert it with [`XskMap::insert`].
//!
//! # veth notes (verified on Linux 6.18 by the tests in `tests/afxdp.rs` and by hand)
//!
//! - veth has no zero-copy: `BindMode::ZeroCopy` fails at bind(2); `BindMode::Auto` falls
//!   back to copy mode.
//! - Receiving in driver mode needs nothing on the peer (no XDP program, no GRO): once a
//!   native program is attached, veth runs a NAPI context per rx queue and frames sent by the
//!   peer's stack go through it. (The "XDP program or GRO on the peer" rule applies to
//!   frames *redirected into* a veth with `XDP_REDIRECT`; copy-mode XSK transmit does not do
//!   that, it hands an skb to the veth's ordinary transmit path.)
//! - Driver mode is refused with `ENOSPC` ("XDP expects number of rx queues not less than
//!   peer tx queues") unless the local end has at least as many rx queues as the peer has tx
//!   queues, and with `ERANGE` ("Peer MTU is too large to set XDP") for a jumbo peer MTU.
//! - Multi-queue: in driver mode a frame arrives on the rx queue whose index equals the tx
//!   queue the peer picked (a per-flow hash), so each flow sticks to one queue. In SKB mode
//!   every frame reports rx queue 0 — a second queue's socket receives nothing.
//! - Offloads: attaching in driver mode makes veth turn off segmentation offload on the peer,
//!   so a GSO burst arrives as MTU-sized frames. In SKB mode a GSO skb (e.g. TCP with TSO or
//!   UDP with `UDP_SEGMENT` on the peer) reaches generic XDP as one large frame, does not fit
//!   a chunk and is dropped (counted in `rx_dropped`); disable the peer's TSO/GSO for SKB mode.

pub mod bpf;
pub mod ethtool;
pub mod netlink;
pub mod socket;
mod umem;

use std::fmt;
use std::io;
use std::os::fd::AsFd;

pub use bpf::{XdpProgram, XskMap};
pub use ethtool::{
    SteeringError, rss_indirection_table, rx_queue_count, set_rss_indirection_table,
};
pub use netlink::{AttachedXdp, XdpAttachment, XdpMode, attached_xdp};
pub use socket::{BindMode, XdpStatistics, XskConfig, XskSocket};

/// Why an AF_XDP operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum XdpError {
    /// A system call failed; `call` names it.
    Syscall {
        /// The call, e.g. `"bind(AF_XDP)"`.
        call: &'static str,
        /// The error it returned.
        source: io::Error,
    },
    /// The verifier refused the XDP program.
    ProgramRejected {
        /// The error `bpf(BPF_PROG_LOAD)` returned.
        source: io::Error,
        /// The verifier's explanation.
        verifier_log: String,
    },
    /// The kernel refused to attach or detach the program.
    AttachRejected {
        /// The interface.
        ifindex: u32,
        /// The mode asked for.
        mode: XdpMode,
        /// The errno.
        source: io::Error,
        /// The kernel's extended-ack text, when it gave one.
        kernel_message: Option<String>,
    },
    /// A configuration value the kernel would refuse.
    InvalidConfig(String),
}

impl XdpError {
    pub(crate) fn syscall(call: &'static str, source: io::Error) -> XdpError {
        XdpError::Syscall { call, source }
    }
}

impl fmt::Display for XdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdpError::Syscall { call, source } => write!(f, "{call} failed: {source}"),
            XdpError::ProgramRejected { source, verifier_log } => {
                write!(f, "the BPF verifier rejected the XDP program ({source}):\n{verifier_log}")
            }
            XdpError::AttachRejected { ifindex, mode, source, kernel_message } => {
                write!(f, "attaching XDP in {mode} mode to ifindex {ifindex} failed: {source}")?;
                if let Some(message) = kernel_message {
                    write!(f, " ({message})")?;
                }
                Ok(())
            }
            XdpError::InvalidConfig(why) => write!(f, "invalid AF_XDP configuration: {why}"),
        }
    }
}

impl std::error::Error for XdpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            XdpError::Syscall { source, .. }
            | XdpError::ProgramRejected { source, .. }
            | XdpError::AttachRejected { source, .. } => Some(source),
            XdpError::InvalidConfig(_) => None,
        }
    }
}

/// An interface prepared for AF_XDP: an `XSKMAP` with one entry per queue and the redirect
/// program attached in the chosen mode. Dropping it detaches the program.
#[derive(Debug)]
pub struct AfXdpPort {
    // Drop order: detach before the program and map fds close.
    attachment: XdpAttachment,
    program: XdpProgram,
    map: XskMap,
    interface: String,
}

impl AfXdpPort {
    /// Creates the map for `queues` queues, loads the program and attaches it to `interface`
    /// in `mode`.
    pub fn open(interface: &str, mode: XdpMode, queues: u32) -> Result<AfXdpPort, XdpError> {
        let ifindex = crate::linux::interface_index(interface)
            .map_err(|e| XdpError::syscall("if_nametoindex", e))?;
        let map = XskMap::create(queues)?;
        let program = XdpProgram::load_redirect(&map)?;
        let attachment = XdpAttachment::attach(ifindex, &program, mode)?;
        Ok(AfXdpPort { attachment, program, map, interface: interface.to_owned() })
    }

    /// Binds a socket to `queue` and registers it in the map, so the program starts
    /// redirecting that queue's frames to it.
    pub fn open_queue(&self, queue: u32, config: &XskConfig) -> Result<XskSocket, XdpError> {
        if queue >= self.map.max_entries() {
            return Err(XdpError::InvalidConfig(format!(
                "queue {queue} >= the {} queues this port was opened for",
                self.map.max_entries()
            )));
        }
        let socket = XskSocket::bind(&self.interface, queue, config)?;
        self.map.insert(queue, socket.as_fd())?;
        Ok(socket)
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The mode the program is attached in.
    pub fn mode(&self) -> XdpMode {
        self.attachment.mode()
    }

    /// The socket map (for processes that bind their own sockets).
    pub fn map(&self) -> &XskMap {
        &self.map
    }

    /// The attached program.
    pub fn program(&self) -> &XdpProgram {
        &self.program
    }
}
