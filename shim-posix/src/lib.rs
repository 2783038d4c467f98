//! `shim-posix`: the `LD_PRELOAD` library (`libnetpop_shim.so`) that serves unmodified POSIX
//! servers from netpop (DESIGN.md "Processes", issue 5).
//!
//! Run a program with `LD_PRELOAD=/path/libnetpop_shim.so program` (or `netpop run`). The
//! library defines the libc socket and descriptor functions; each one looks the descriptor
//! up in the shim's `fdtable` and either passes the call to libc (found with
//! `dlsym(RTLD_NEXT)`, `real`) or serves it from netpop through the app channel client
//! (`flowgroups::channel::client::Client`).
//!
//! # What goes to netpop
//!
//! Only `socket(AF_INET, SOCK_STREAM, 0 | IPPROTO_TCP)`. Unix, UDP, IPv6, raw and every other
//! socket, and every other descriptor, are the kernel's and untouched. A netpop socket
//! occupies a real descriptor, an eventfd used as a placeholder, so descriptor numbers never
//! collide and `close`, `dup2`, `fcntl(F_SETFD)` and `exec` behave. If netpop cannot be
//! reached the shim prints one line on stderr and uses the kernel stack (see `config` for
//! the environment variables, including `NETPOP_REQUIRED=1` to fail instead).
//!
//! # Intercepted
//!
//! `socket`, `bind`, `listen`, `accept`, `accept4`, `connect`, `shutdown`, `close`,
//! `close_range`, `dup`, `dup2`, `dup3`, `fcntl`/`fcntl64` (`O_NONBLOCK` is per open file
//! description; `FD_CLOEXEC` is the placeholder's own; `F_DUPFD*`), `ioctl` (`FIONBIO`,
//! `FIONREAD`), `getsockopt`, `setsockopt`, `getsockname`, `getpeername`, `read`, `readv`,
//! `recv`, `recvfrom`, `recvmsg`, `write`, `writev`, `send`, `sendto`, `sendmsg`,
//! `sendfile`, `sendfile64`, `poll`, `ppoll`, `select`, `pselect`, `epoll_create`,
//! `epoll_create1`, `epoll_ctl`, `epoll_wait`, `epoll_pwait`, `epoll_pwait2`, `fork`,
//! `vfork`, `execve`, `execv`, `execvp`, `execvpe`, `execl`, `execlp`, `execle`,
//! `fexecve`, `posix_spawn`, `posix_spawnp`, and glibc's fortified `__read_chk`,
//! `__recv_chk`, `__recvfrom_chk`, `__poll_chk`, `__ppoll_chk`. `socketpair` is not
//! intercepted (it never makes an AF_INET socket on Linux).
//!
//! # fork and exec
//!
//! - `fork`: the child is a new netpop application. It registers on its first netpop call.
//!   Inherited *listeners* keep working: the child subscribes its own socket to the same
//!   port (listeners are global, DESIGN.md "Single-socket abstraction"), which the plane
//!   allows because a registering process joins the listener family of its nearest
//!   registered ancestor; the child does so when it first accepts or polls the listener
//!   (Apache prefork and event children). If the child drops privileges first, its user
//!   needs access to the registration socket (for example `chgrp www-data` and mode
//!   0660 on it). Inherited
//!   *connections* stay with the parent: in the child, data calls on them fail with
//!   `ENOTCONN` and poll reports them hung up; closing them in the child does not affect the
//!   parent. (Sharing a connection between processes needs channel support that does not
//!   exist yet.)
//! - `vfork` behaves as `fork`: the shim's state cannot be shared with a child that borrows
//!   the parent's memory. Programs that follow POSIX (only `exec` or `_exit` after `vfork`)
//!   see no difference.
//! - `exec`: the new program keeps the preload and the `NETPOP_*` settings (`envfix`).
//!   netpop sockets do not survive `exec`: the shim sets `FD_CLOEXEC` on their placeholders
//!   just before the call (and restores the flags if `exec` fails), so the new program
//!   never sees a descriptor it cannot interpret.
//!
//! # Not covered
//!
//! Calls the shim does not see cannot know about netpop sockets: glibc-internal I/O such as
//! `fdopen`+stdio on a socket, raw `syscall()`, and `splice`/`recvmmsg`/`sendmmsg`. An
//! epoll descriptor that is itself polled or nested in another epoll set does not reflect
//! its netpop members. A process that forks while another of its threads is inside a netpop
//! call on the same socket may find that socket's lock held in the child.

// The library's real interface is the C symbols it exports; its docs are for the people who
// work on it, so they may link to private modules.
#![allow(rustdoc::private_intra_doc_links)]

mod config;
mod envfix;
mod errno;
mod events;
mod fdtable;
pub mod ffi;
mod netpop;
mod opts;
mod real;
mod sock;

use std::sync::{Arc, Mutex};

use crate::events::InterestList;
use crate::fdtable::FdTable;
use crate::sock::SockDesc;

/// What a descriptor tracked by the shim is.
#[derive(Clone, Debug)]
pub(crate) enum FdEntry {
    /// A netpop socket (its placeholder eventfd).
    Socket(Arc<SockDesc>),
    /// An epoll set with netpop members (the real epoll fd holds the kernel members).
    Epoll(Arc<EpollSet>),
}

/// The netpop members of one epoll set.
#[derive(Debug, Default)]
pub(crate) struct EpollSet {
    pub(crate) members: Mutex<InterestList<SockDesc>>,
    /// Alternates which kind of member fills the caller's array first, so that neither
    /// kernel fds nor netpop sockets starve the other under a small `maxevents`.
    pub(crate) kernel_first: std::sync::atomic::AtomicBool,
}

/// Every descriptor the shim manages in this process.
pub(crate) static FDS: FdTable<FdEntry> = FdTable::new();

/// Runs when the library is loaded, before the program's `main`.
extern "C" fn on_load() {
    netpop::install_fork_handlers();
    envfix::capture();
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;
