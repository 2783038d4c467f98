//! The exported C entry points. Each one checks whether its descriptor is the shim's (one
//! atomic load for descriptors that are not) and otherwise calls libc's function with the
//! same arguments, so the program sees libc's behaviour, errno included.
//!
//! Entry points that do netpop work run inside `guarded`: a panic never unwinds into C; it
//! becomes `-1`/`EIO`.

#![cfg_attr(test, allow(dead_code))]

pub mod fd;
pub mod io;
pub mod process;
pub mod socket;
pub mod varargs;
pub mod wait;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use libc::{c_int, sockaddr, sockaddr_in, socklen_t, ssize_t};

use crate::errno::{Errno, set_errno};
use crate::real::Failure;
use crate::sock::SockDesc;
use crate::{FDS, FdEntry};

unsafe extern "C" {
    /// glibc's "buffer overflow detected" abort, used by the fortified (`__*_chk`) entry
    /// points.
    fn __chk_fail() -> !;
}

/// The netpop socket behind `fd`, if it is one.
#[inline]
pub(crate) fn socket_of(fd: c_int) -> Option<Arc<SockDesc>> {
    if !FDS.is_tracked(fd) {
        return None;
    }
    match FDS.get(fd) {
        Some(FdEntry::Socket(s)) => Some(s),
        _ => None,
    }
}

/// Runs `f`, turning a panic into `-1` with errno `EIO`.
pub(crate) fn guarded<R: Failure>(f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            set_errno(libc::EIO);
            R::FAILED
        }
    }
}

/// `Ok(v)` -> `v`; `Err(e)` -> `-1` with errno `e`.
pub(crate) fn int_result(r: Result<c_int, Errno>) -> c_int {
    r.unwrap_or_else(|e| {
        set_errno(e);
        -1
    })
}

/// As [`int_result`] for byte counts.
pub(crate) fn size_result(r: Result<usize, Errno>) -> ssize_t {
    match r {
        Ok(n) => ssize_t::try_from(n).unwrap_or(ssize_t::MAX),
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// Reads an IPv4 socket address passed by the program.
///
/// # Safety
///
/// `addr` is null or valid for `len` bytes.
pub(crate) unsafe fn read_sockaddr_in(
    addr: *const sockaddr,
    len: socklen_t,
) -> Result<SocketAddrV4, Errno> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if (len as usize) < size_of::<sockaddr_in>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: `addr` is valid for at least size_of::<sockaddr_in>() bytes (checked above);
    // an unaligned read because programs pass any sockaddr buffer.
    let sin = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
    if c_int::from(sin.sin_family) != libc::AF_INET {
        return Err(libc::EAFNOSUPPORT);
    }
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

/// Writes an IPv4 socket address back as the kernel does: at most `*len` bytes, and
/// `*len` set to the full size. A null `addr` writes nothing (allowed by `accept`).
///
/// # Safety
///
/// `addr` is null or valid for `*len` bytes; `len` is null only if `addr` is.
pub(crate) unsafe fn write_sockaddr_in(
    a: SocketAddrV4,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Result<(), Errno> {
    if addr.is_null() {
        return Ok(());
    }
    if len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `len` is non-null and points to the caller's length.
    let room = unsafe { *len };
    if (room as i32) < 0 {
        return Err(libc::EINVAL);
    }
    // SAFETY: sockaddr_in is plain data; all-zero is valid (and zero padding is what the
    // kernel writes).
    let mut sin: sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = a.port().to_be();
    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    let full = size_of::<sockaddr_in>();
    let n = full.min(room as usize);
    // SAFETY: copies `n <= *len` bytes into the caller's buffer, which is valid for `*len`
    // bytes; the source is a local of `full >= n` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const sin).cast::<u8>(), addr.cast::<u8>(), n);
        *len = full as socklen_t;
    }
    Ok(())
}

/// A placeholder descriptor for a new netpop socket: an eventfd, always non-blocking so
/// that a call the shim does not see can never hang on it.
pub(crate) fn new_placeholder(cloexec: bool) -> Result<c_int, Errno> {
    let flags = libc::EFD_NONBLOCK | if cloexec { libc::EFD_CLOEXEC } else { 0 };
    // SAFETY: eventfd has no pointer arguments.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 { Err(crate::errno::errno()) } else { Ok(fd) }
}

/// Registers a placeholder and its socket; drops whatever stale entry had the number.
pub(crate) fn track(fd: c_int, desc: Arc<SockDesc>) {
    let stale = FDS.insert(fd, FdEntry::Socket(desc));
    drop(stale);
}

/// Sends SIGPIPE to the calling thread, as the kernel does for a write to a broken
/// connection without `MSG_NOSIGNAL`.
pub(crate) fn raise_sigpipe() {
    // SAFETY: raise has no memory arguments; glibc directs it at the calling thread.
    unsafe { libc::raise(libc::SIGPIPE) };
}

/// Calls glibc's fortify failure (abort with "buffer overflow detected").
pub(crate) fn chk_fail() -> ! {
    // SAFETY: __chk_fail takes no arguments and never returns.
    unsafe { __chk_fail() }
}
