//! Data calls: `read`, `readv`, `recv`, `recvfrom`, `recvmsg`, `write`, `writev`, `send`,
//! `sendto`, `sendmsg`, `sendfile`, `sendfile64`, and the fortified `__read_chk`,
//! `__recv_chk`, `__recvfrom_chk`.
//!
//! On netpop sockets, `readv`/`recvmsg` fill the first buffer as `recv` would (blocking if
//! the socket blocks) and the next ones only with bytes already there; `writev`/`sendmsg`
//! send the buffers in order (all of them when blocking). `sendfile` reads the file with
//! `pread` and advances the offset by what the socket took. A write to a broken
//! connection raises SIGPIPE unless `MSG_NOSIGNAL` is given, as on Linux.

use libc::{c_int, c_void, iovec, msghdr, off_t, off64_t, size_t, sockaddr, socklen_t, ssize_t};

use super::{chk_fail, guarded, raise_sigpipe, size_result, socket_of};
use crate::errno::{Errno, errno};
use crate::real;
use crate::sock::SockDesc;

/// Most buffers in one vector call (Linux `UIO_MAXIOV`).
const IOV_MAX: c_int = 1024;
/// Bytes `sendfile` moves per `pread`.
const SENDFILE_CHUNK: usize = 64 * 1024;

/// The caller's buffer as a slice.
///
/// # Safety
///
/// `buf` is valid for writes of `n` bytes (or `n == 0`).
unsafe fn out_buf<'a>(buf: *mut c_void, n: size_t) -> Result<&'a mut [u8], Errno> {
    if n == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the caller's buffer is valid for `n` bytes; `n` is capped at isize::MAX.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n.min(isize::MAX as usize)) })
}

/// # Safety
///
/// `buf` is valid for reads of `n` bytes (or `n == 0`).
unsafe fn in_buf<'a>(buf: *const c_void, n: size_t) -> Result<&'a [u8], Errno> {
    if n == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: as in `out_buf`.
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n.min(isize::MAX as usize)) })
}

/// # Safety
///
/// `iov` is valid for `count` iovecs.
unsafe fn iovecs<'a>(iov: *const iovec, count: c_int) -> Result<&'a [iovec], Errno> {
    if !(0..=IOV_MAX).contains(&count) {
        return Err(libc::EINVAL);
    }
    if count == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: the caller's array holds `count` iovecs.
    Ok(unsafe { std::slice::from_raw_parts(iov, count as usize) })
}

fn recv_vectored(s: &SockDesc, iov: &[iovec], flags: c_int) -> Result<usize, Errno> {
    let mut total = 0usize;
    for v in iov {
        // SAFETY: each iovec describes a buffer of the caller valid for iov_len bytes.
        let buf = unsafe { out_buf(v.iov_base, v.iov_len) }?;
        if buf.is_empty() {
            continue;
        }
        let want = buf.len();
        let step =
            if total == 0 { s.recv(buf, flags) } else { s.recv(buf, flags | libc::MSG_DONTWAIT) };
        match step {
            Ok(n) => {
                total += n;
                if n < want {
                    break;
                }
            }
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

fn send_vectored(s: &SockDesc, iov: &[iovec], flags: c_int) -> Result<usize, Errno> {
    let mut total = 0usize;
    for v in iov {
        // SAFETY: each iovec describes a buffer of the caller valid for iov_len bytes.
        let buf = unsafe { in_buf(v.iov_base, v.iov_len) }?;
        if buf.is_empty() {
            continue;
        }
        match s.send(buf, flags) {
            Ok(n) => {
                total += n;
                if n < buf.len() {
                    break;
                }
            }
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// SIGPIPE for EPIPE unless the caller asked for none.
fn sending(r: Result<usize, Errno>, flags: c_int) -> ssize_t {
    if r == Err(libc::EPIPE) && flags & libc::MSG_NOSIGNAL == 0 {
        raise_sigpipe();
    }
    size_result(r)
}

/// `read(2)`.
///
/// # Safety
///
/// As `read(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::read(fd, buf, n) };
    };
    // SAFETY: the caller's buffer is valid for `n` bytes.
    guarded(|| size_result(unsafe { out_buf(buf, n) }.and_then(|b| s.recv(b, 0))))
}

/// glibc's fortified `read`.
///
/// # Safety
///
/// As `read(2)`; `buflen` is the buffer's real size.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if socket_of(fd).is_none() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::__read_chk(fd, buf, n, buflen) };
    }
    if n > buflen {
        chk_fail();
    }
    // SAFETY: same contract.
    unsafe { read(fd, buf, n) }
}

/// `readv(2)`.
///
/// # Safety
///
/// As `readv(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::readv(fd, iov, count) };
    };
    // SAFETY: the caller's array holds `count` iovecs.
    guarded(|| size_result(unsafe { iovecs(iov, count) }.and_then(|v| recv_vectored(&s, v, 0))))
}

/// `recv(2)`.
///
/// # Safety
///
/// As `recv(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::recv(fd, buf, n, flags) };
    };
    // SAFETY: the caller's buffer is valid for `n` bytes.
    guarded(|| size_result(unsafe { out_buf(buf, n) }.and_then(|b| s.recv(b, flags))))
}

/// glibc's fortified `recv`.
///
/// # Safety
///
/// As `recv(2)`; `buflen` is the buffer's real size.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if socket_of(fd).is_none() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::__recv_chk(fd, buf, n, buflen, flags) };
    }
    if n > buflen {
        chk_fail();
    }
    // SAFETY: same contract.
    unsafe { recv(fd, buf, n, flags) }
}

/// `recvfrom(2)`. TCP reports no source address: `*len` becomes 0, as on Linux.
///
/// # Safety
///
/// As `recvfrom(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::recvfrom(fd, buf, n, flags, addr, len) };
    };
    guarded(|| {
        // SAFETY: the caller's buffer is valid for `n` bytes.
        let r = unsafe { out_buf(buf, n) }.and_then(|b| s.recv(b, flags));
        if r.is_ok() && !addr.is_null() && !len.is_null() {
            // SAFETY: `len` is the caller's non-null length.
            unsafe { *len = 0 };
        }
        size_result(r)
    })
}

/// glibc's fortified `recvfrom`.
///
/// # Safety
///
/// As `recvfrom(2)`; `buflen` is the buffer's real size.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if socket_of(fd).is_none() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len) };
    }
    if n > buflen {
        chk_fail();
    }
    // SAFETY: same contract.
    unsafe { recvfrom(fd, buf, n, flags, addr, len) }
}

/// `recvmsg(2)`: no address, no control data, no flags come back for TCP.
///
/// # Safety
///
/// As `recvmsg(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::recvmsg(fd, msg, flags) };
    };
    guarded(|| {
        if msg.is_null() {
            return size_result(Err(libc::EFAULT));
        }
        // SAFETY: `msg` is the caller's valid msghdr.
        let m = unsafe { &mut *msg };
        let count = c_int::try_from(m.msg_iovlen).unwrap_or(c_int::MAX);
        // SAFETY: the msghdr's iovec array holds msg_iovlen entries.
        let r = unsafe { iovecs(m.msg_iov, count) }.and_then(|v| recv_vectored(&s, v, flags));
        if r.is_ok() {
            m.msg_namelen = 0;
            m.msg_controllen = 0;
            m.msg_flags = 0;
        }
        size_result(r)
    })
}

/// `write(2)`.
///
/// # Safety
///
/// As `write(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::write(fd, buf, n) };
    };
    // SAFETY: the caller's buffer is valid for `n` bytes.
    guarded(|| sending(unsafe { in_buf(buf, n) }.and_then(|b| s.send(b, 0)), 0))
}

/// `writev(2)`.
///
/// # Safety
///
/// As `writev(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::writev(fd, iov, count) };
    };
    // SAFETY: the caller's array holds `count` iovecs.
    guarded(|| sending(unsafe { iovecs(iov, count) }.and_then(|v| send_vectored(&s, v, 0)), 0))
}

/// `send(2)`.
///
/// # Safety
///
/// As `send(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::send(fd, buf, n, flags) };
    };
    // SAFETY: the caller's buffer is valid for `n` bytes.
    guarded(|| sending(unsafe { in_buf(buf, n) }.and_then(|b| s.send(b, flags)), flags))
}

/// `sendto(2)`: on a TCP socket the address is ignored, as Linux does.
///
/// # Safety
///
/// As `sendto(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    if socket_of(fd).is_none() {
        // SAFETY: forwarded unchanged.
        return unsafe { real::sendto(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: same contract.
    unsafe { send(fd, buf, n, flags) }
}

/// `sendmsg(2)`: address and control data are ignored on TCP.
///
/// # Safety
///
/// As `sendmsg(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let Some(s) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::sendmsg(fd, msg, flags) };
    };
    guarded(|| {
        if msg.is_null() {
            return size_result(Err(libc::EFAULT));
        }
        // SAFETY: `msg` is the caller's valid msghdr.
        let m = unsafe { &*msg };
        let count = c_int::try_from(m.msg_iovlen).unwrap_or(c_int::MAX);
        // SAFETY: the msghdr's iovec array holds msg_iovlen entries.
        sending(
            unsafe { iovecs(m.msg_iov, count) }.and_then(|v| send_vectored(&s, v, flags)),
            flags,
        )
    })
}

/// `sendfile` onto a netpop socket: `pread` from `input` at `pos`, send, advance by what
/// the socket took. Returns (bytes sent, new position).
fn sendfile_to_netpop(
    s: &SockDesc,
    input: c_int,
    mut pos: i64,
    count: usize,
) -> (Result<usize, Errno>, i64) {
    let mut buf = vec![0u8; SENDFILE_CHUNK.min(count.max(1))];
    let mut sent = 0usize;
    while sent < count {
        let want = buf.len().min(count - sent);
        // SAFETY: `buf` is a live buffer of at least `want` bytes.
        let n = unsafe { real::pread64(input, buf.as_mut_ptr().cast(), want, pos) };
        if n < 0 {
            let e = errno();
            return (if sent > 0 { Ok(sent) } else { Err(e) }, pos);
        }
        let n = n as usize;
        if n == 0 {
            break;
        }
        match s.send(buf.get(..n).unwrap_or(&[]), 0) {
            Ok(k) => {
                sent += k;
                pos += k as i64;
                if k < n {
                    break;
                }
            }
            Err(_) if sent > 0 => break,
            Err(e) => return (Err(e), pos),
        }
    }
    (Ok(sent), pos)
}

/// # Safety
///
/// `offset` is null or a valid, writable offset.
unsafe fn sendfile_common(
    out: c_int,
    input: c_int,
    offset: *mut i64,
    count: size_t,
) -> Option<ssize_t> {
    let s = socket_of(out)?;
    Some(guarded(|| {
        if socket_of(input).is_some() {
            return size_result(Err(libc::EINVAL));
        }
        let start = if offset.is_null() {
            // SAFETY: lseek has no memory arguments.
            let p = unsafe { libc::lseek64(input, 0, libc::SEEK_CUR) };
            if p < 0 {
                return size_result(Err(errno()));
            }
            p
        } else {
            // SAFETY: the caller's offset is valid.
            unsafe { *offset }
        };
        if start < 0 {
            return size_result(Err(libc::EINVAL));
        }
        let (r, end) = sendfile_to_netpop(&s, input, start, count);
        if offset.is_null() {
            // SAFETY: lseek has no memory arguments.
            unsafe { libc::lseek64(input, end, libc::SEEK_SET) };
        } else {
            // SAFETY: the caller's offset is valid and writable.
            unsafe { *offset = end };
        }
        if r == Err(libc::EPIPE) {
            raise_sigpipe();
        }
        size_result(r)
    }))
}

/// `sendfile(2)`.
///
/// # Safety
///
/// As `sendfile(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendfile(
    out: c_int,
    input: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: off_t is i64 on the supported 64-bit targets; the pointer is the caller's.
    match unsafe { sendfile_common(out, input, offset.cast::<i64>(), count) } {
        Some(r) => r,
        // SAFETY: forwarded unchanged.
        None => unsafe { real::sendfile(out, input, offset, count) },
    }
}

/// `sendfile64`.
///
/// # Safety
///
/// As `sendfile(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn sendfile64(
    out: c_int,
    input: c_int,
    offset: *mut off64_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: off64_t is i64; the pointer is the caller's.
    match unsafe { sendfile_common(out, input, offset.cast::<i64>(), count) } {
        Some(r) => r,
        // SAFETY: forwarded unchanged.
        None => unsafe { real::sendfile64(out, input, offset, count) },
    }
}

const _: () = assert!(size_of::<off_t>() == size_of::<i64>(), "64-bit off_t assumed");
