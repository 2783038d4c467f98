//! Descriptor calls: `close`, `close_range`, `dup`, `dup2`, `dup3`, and the logic of `fcntl`
//! and `ioctl` (their variadic entry points are in [`super::varargs`]).
//!
//! A `dup` of a netpop socket shares its description (`O_NONBLOCK`, options, the netpop
//! socket itself); the netpop socket is closed when its last descriptor is. `FD_CLOEXEC`
//! lives on each placeholder descriptor, so libc handles it.

use libc::{c_int, c_uint, c_ulong};

use super::socket::drop_keeping_errno;
use super::{guarded, int_result, socket_of};
use crate::real;
use crate::{FDS, FdEntry};

/// `close(2)`.
///
/// # Safety
///
/// As `close(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if !FDS.is_tracked(fd) {
        // SAFETY: forwarded unchanged.
        return unsafe { real::close(fd) };
    }
    guarded(|| {
        let entry = FDS.remove(fd);
        // SAFETY: closes the caller's descriptor.
        let rc = unsafe { real::close(fd) };
        drop_keeping_errno(entry);
        rc
    })
}

/// `close_range(2)`.
///
/// # Safety
///
/// As `close_range(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    guarded(|| {
        // SAFETY: forwarded unchanged.
        let rc = unsafe { real::close_range(first, last, flags) };
        if rc == 0 && flags as u32 & libc::CLOSE_RANGE_CLOEXEC == 0 {
            let first = i32::try_from(first).unwrap_or(i32::MAX);
            let last = i32::try_from(last).unwrap_or(i32::MAX);
            drop_keeping_errno(FDS.remove_range(first, last));
        }
        rc
    })
}

/// Records that `new` now refers to what `old` refers to (after a successful dup).
fn mirror(old_entry: Option<FdEntry>, new: c_int) {
    let replaced = match old_entry {
        Some(e) => FDS.insert(new, e),
        None => FDS.remove(new),
    };
    drop_keeping_errno(replaced);
}

/// `dup(2)`.
///
/// # Safety
///
/// As `dup(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarded unchanged.
    let new = unsafe { real::dup(fd) };
    if new >= 0 && (FDS.is_tracked(fd) || FDS.is_tracked(new)) {
        guarded(|| {
            mirror(FDS.get(fd), new);
            new
        })
    } else {
        new
    }
}

/// `dup2(2)`: `new` is closed first if open, and then refers to `old`'s description.
///
/// # Safety
///
/// As `dup2(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let old_entry = FDS.get(old);
    // SAFETY: forwarded unchanged.
    let rc = unsafe { real::dup2(old, new) };
    if rc >= 0 && old != new && (old_entry.is_some() || FDS.is_tracked(new)) {
        guarded(|| {
            mirror(old_entry, new);
            rc
        })
    } else {
        rc
    }
}

/// `dup3(2)`.
///
/// # Safety
///
/// As `dup3(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let old_entry = FDS.get(old);
    // SAFETY: forwarded unchanged.
    let rc = unsafe { real::dup3(old, new, flags) };
    if rc >= 0 && (old_entry.is_some() || FDS.is_tracked(new)) {
        guarded(|| {
            mirror(old_entry, new);
            rc
        })
    } else {
        rc
    }
}

/// Which libc `fcntl` symbol to fall back to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FcntlFlavor {
    Plain,
    Large,
}

fn real_fcntl(flavor: FcntlFlavor, fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    match flavor {
        // SAFETY: forwarded unchanged; `arg` is whatever the caller passed.
        FcntlFlavor::Plain => unsafe { real::fcntl(fd, cmd, arg) },
        // SAFETY: as above.
        FcntlFlavor::Large => unsafe { real::fcntl64(fd, cmd, arg) },
    }
}

/// `fcntl`: `F_GETFL`/`F_SETFL` see the description's `O_NONBLOCK` (the placeholder itself
/// is always non-blocking); `F_DUPFD*` duplicate the socket; the rest is libc's.
pub(crate) fn fcntl_impl(flavor: FcntlFlavor, fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    if !FDS.is_tracked(fd) {
        return real_fcntl(flavor, fd, cmd, arg);
    }
    guarded(|| match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let entry = FDS.get(fd);
            let new = real_fcntl(flavor, fd, cmd, arg);
            if new >= 0 {
                mirror(entry, new);
            }
            new
        }
        libc::F_GETFL => {
            let flags = real_fcntl(flavor, fd, cmd, arg);
            match socket_of(fd) {
                Some(s) if flags >= 0 => {
                    let base = flags & !libc::O_NONBLOCK;
                    if s.is_nonblocking() { base | libc::O_NONBLOCK } else { base }
                }
                _ => flags,
            }
        }
        libc::F_SETFL => match socket_of(fd) {
            Some(s) => {
                let wanted = (arg as c_int) | libc::O_NONBLOCK;
                let rc = real_fcntl(flavor, fd, cmd, wanted as c_ulong);
                if rc >= 0 {
                    s.set_nonblocking(arg as c_int & libc::O_NONBLOCK != 0);
                }
                rc
            }
            None => real_fcntl(flavor, fd, cmd, arg),
        },
        _ => real_fcntl(flavor, fd, cmd, arg),
    })
}

/// `ioctl`: `FIONBIO` and `FIONREAD` on netpop sockets; the rest is libc's.
pub(crate) fn ioctl_impl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::ioctl(fd, request, arg) };
    };
    let ptr = arg as *mut c_int;
    guarded(|| match request {
        libc::FIONBIO => {
            if ptr.is_null() {
                return int_result(Err(libc::EFAULT));
            }
            // SAFETY: FIONBIO's argument is a pointer to an int of the caller.
            s.set_nonblocking(unsafe { ptr.read_unaligned() } != 0);
            0
        }
        libc::FIONREAD => {
            if ptr.is_null() {
                return int_result(Err(libc::EFAULT));
            }
            int_result(s.readable_bytes().map(|n| {
                // SAFETY: FIONREAD's argument is a pointer to an int of the caller.
                unsafe { ptr.write_unaligned(c_int::try_from(n).unwrap_or(c_int::MAX)) };
                0
            }))
        }
        // SAFETY: forwarded unchanged.
        _ => unsafe { real::ioctl(fd, request, arg) },
    })
}
