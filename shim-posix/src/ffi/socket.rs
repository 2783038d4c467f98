//! Socket calls: `socket`, `bind`, `listen`, `accept`, `accept4`, `connect`, `shutdown`,
//! `getsockopt`, `setsockopt`, `getsockname`, `getpeername`.

use std::sync::Arc;

use libc::{c_int, c_void, sockaddr, socklen_t};

use super::{
    guarded, int_result, new_placeholder, read_sockaddr_in, socket_of, track, write_sockaddr_in,
};
use crate::errno::{Errno, errno, set_errno};
use crate::netpop::{self, Route};
use crate::real;
use crate::sock::SockDesc;

fn is_netpop_kind(domain: c_int, ty: c_int, protocol: c_int) -> bool {
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    domain == libc::AF_INET
        && base == libc::SOCK_STREAM
        && (protocol == 0 || protocol == libc::IPPROTO_TCP)
}

/// `socket(2)`: AF_INET stream sockets go to netpop (when reachable), the rest to libc.
///
/// # Safety
///
/// As `socket(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if !is_netpop_kind(domain, ty, protocol) {
        // SAFETY: forwarded unchanged.
        return unsafe { real::socket(domain, ty, protocol) };
    }
    guarded(|| match netpop::route_new_socket() {
        // SAFETY: forwarded unchanged.
        Route::Kernel => unsafe { real::socket(domain, ty, protocol) },
        Route::Fail(e) => int_result(Err(e)),
        Route::Netpop(link) => {
            int_result(new_placeholder(ty & libc::SOCK_CLOEXEC != 0).inspect(|&fd| {
                let buffer = link.client.layout().socket_buffer;
                track(fd, Arc::new(SockDesc::new(ty & libc::SOCK_NONBLOCK != 0, buffer)));
            }))
        }
    })
}

/// `bind(2)`.
///
/// # Safety
///
/// As `bind(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::bind(fd, addr, len) };
    };
    guarded(|| {
        // SAFETY: the caller's address is valid for `len` bytes.
        let a = unsafe { read_sockaddr_in(addr, len) };
        int_result(a.and_then(|a| s.bind(a)).map(|()| 0))
    })
}

/// `listen(2)`.
///
/// # Safety
///
/// As `listen(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::listen(fd, backlog) };
    };
    guarded(|| int_result(s.listen(backlog).map(|()| 0)))
}

/// `accept(2)`.
///
/// # Safety
///
/// As `accept(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if socket_of(fd).is_none() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::accept(fd, addr, len) };
    }
    // SAFETY: same contract.
    unsafe { accept4(fd, addr, len, 0) }
}

/// `accept4(2)`.
///
/// # Safety
///
/// As `accept4(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::accept4(fd, addr, len, flags) };
    };
    guarded(|| {
        int_result((|| -> Result<c_int, Errno> {
            if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
                return Err(libc::EINVAL);
            }
            if !addr.is_null() && len.is_null() {
                return Err(libc::EFAULT);
            }
            let accepted = s.accept(flags & libc::SOCK_NONBLOCK != 0)?;
            let new_fd = new_placeholder(flags & libc::SOCK_CLOEXEC != 0)?;
            track(new_fd, accepted.desc);
            // SAFETY: the caller's buffer is valid for `*len` bytes (or null).
            if let Err(e) = unsafe { write_sockaddr_in(accepted.peer, addr, len) } {
                // SAFETY: closing the descriptor we just made (through the shim, so the
                // table entry goes too).
                unsafe { super::fd::close(new_fd) };
                return Err(e);
            }
            Ok(new_fd)
        })())
    })
}

/// `connect(2)`.
///
/// # Safety
///
/// As `connect(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::connect(fd, addr, len) };
    };
    guarded(|| {
        // SAFETY: the caller's address is valid for `len` bytes.
        let a = unsafe { read_sockaddr_in(addr, len) };
        int_result(a.and_then(|a| s.connect(a)).map(|()| 0))
    })
}

/// `shutdown(2)`.
///
/// # Safety
///
/// As `shutdown(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::shutdown(fd, how) };
    };
    guarded(|| int_result(s.shutdown(how).map(|()| 0)))
}

/// `getsockopt(2)`.
///
/// # Safety
///
/// As `getsockopt(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::getsockopt(fd, level, name, val, len) };
    };
    guarded(|| {
        int_result((|| {
            if len.is_null() {
                return Err(libc::EFAULT);
            }
            // SAFETY: `len` is non-null and the caller's.
            let room = unsafe { *len } as i32;
            if room < 0 {
                return Err(libc::EINVAL);
            }
            let bytes = s.get_option(level, name).inspect_err(|&e| unsupported(level, name, e))?;
            let n = bytes.len().min(room as usize);
            if n > 0 && val.is_null() {
                return Err(libc::EFAULT);
            }
            // SAFETY: `val` is valid for `*len >= n` bytes; `bytes` holds at least n.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), val.cast::<u8>(), n);
                *len = n as socklen_t;
            }
            Ok(0)
        })())
    })
}

/// `setsockopt(2)`.
///
/// # Safety
///
/// As `setsockopt(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::setsockopt(fd, level, name, val, len) };
    };
    guarded(|| {
        int_result((|| {
            let value: &[u8] = if len == 0 {
                &[]
            } else if val.is_null() {
                return Err(libc::EFAULT);
            } else {
                // SAFETY: the caller's value is valid for `len` bytes.
                unsafe { std::slice::from_raw_parts(val.cast::<u8>(), len as usize) }
            };
            s.set_option(level, name, value).inspect_err(|&e| unsupported(level, name, e))?;
            Ok(0)
        })())
    })
}

fn unsupported(level: c_int, name: c_int, e: Errno) {
    if e == libc::ENOPROTOOPT {
        let key = (2u64 << 40) | (u64::from(level as u32) << 20) | u64::from(name as u32 & 0xfffff);
        netpop::notice_once(key, || {
            format!(
                "socket option level {level} name {name} is not supported on netpop sockets (ENOPROTOOPT)"
            )
        });
    }
}

/// `getsockname(2)`.
///
/// # Safety
///
/// As `getsockname(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::getsockname(fd, addr, len) };
    };
    guarded(|| {
        if addr.is_null() || len.is_null() {
            return int_result(Err(libc::EFAULT));
        }
        // SAFETY: the caller's buffer is valid for `*len` bytes.
        int_result(
            s.local_addr().and_then(|a| unsafe { write_sockaddr_in(a, addr, len) }).map(|()| 0),
        )
    })
}

/// `getpeername(2)`.
///
/// # Safety
///
/// As `getpeername(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::getpeername(fd, addr, len) };
    };
    guarded(|| {
        if addr.is_null() || len.is_null() {
            return int_result(Err(libc::EFAULT));
        }
        // SAFETY: the caller's buffer is valid for `*len` bytes.
        int_result(
            s.peer_addr().and_then(|a| unsafe { write_sockaddr_in(a, addr, len) }).map(|()| 0),
        )
    })
}

/// Keeps errno across a drop that may make system calls (closing a netpop socket).
pub(crate) fn drop_keeping_errno<T>(value: T) {
    let saved = errno();
    drop(value);
    set_errno(saved);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv4_tcp_goes_to_netpop() {
        assert!(is_netpop_kind(libc::AF_INET, libc::SOCK_STREAM, 0));
        assert!(is_netpop_kind(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            6
        ));
        assert!(!is_netpop_kind(libc::AF_INET, libc::SOCK_DGRAM, 0));
        assert!(!is_netpop_kind(libc::AF_INET6, libc::SOCK_STREAM, 0));
        assert!(!is_netpop_kind(libc::AF_UNIX, libc::SOCK_STREAM, 0));
        assert!(!is_netpop_kind(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP));
    }
}
