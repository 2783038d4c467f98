//! errno: reading and setting it, and turning the channel client's `io::Error`s into the
//! errno values Linux would report for the same socket call.

use std::io;

/// A Linux errno value.
pub(crate) type Errno = i32;

/// Sets the calling thread's errno.
pub(crate) fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns the address of the calling thread's errno, valid
    // for the thread's lifetime.
    unsafe { *libc::__errno_location() = e };
}

/// The calling thread's errno.
pub(crate) fn errno() -> Errno {
    // SAFETY: as in `set_errno`.
    unsafe { *libc::__errno_location() }
}

/// The errno for an error from the channel client. Errors that carry an OS code (every
/// socket error the instances report does) keep it; the rest are mapped by kind, and an
/// internal failure of the channel itself (a corrupt segment, a malformed reply) becomes
/// EIO, which callers treat as a broken connection rather than retrying.
pub(crate) fn errno_of(e: &io::Error) -> Errno {
    if let Some(code) = e.raw_os_error() {
        if code > 0 {
            return code;
        }
    }
    match e.kind() {
        io::ErrorKind::WouldBlock => libc::EAGAIN,
        io::ErrorKind::Interrupted => libc::EINTR,
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::ConnectionReset => libc::ECONNRESET,
        io::ErrorKind::ConnectionAborted => libc::ECONNABORTED,
        io::ErrorKind::NotConnected => libc::ENOTCONN,
        io::ErrorKind::BrokenPipe => libc::EPIPE,
        io::ErrorKind::AddrInUse => libc::EADDRINUSE,
        io::ErrorKind::AddrNotAvailable => libc::EADDRNOTAVAIL,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        io::ErrorKind::OutOfMemory => libc::ENOMEM,
        io::ErrorKind::Unsupported => libc::EOPNOTSUPP,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_codes_from_instances_are_kept() {
        for code in [libc::ECONNREFUSED, libc::ECONNRESET, libc::EPIPE, libc::EAGAIN, libc::EMFILE]
        {
            assert_eq!(errno_of(&io::Error::from_raw_os_error(code)), code);
        }
    }

    #[test]
    fn errors_without_a_code_map_by_kind() {
        assert_eq!(errno_of(&io::Error::from(io::ErrorKind::WouldBlock)), libc::EAGAIN);
        assert_eq!(errno_of(&io::Error::from(io::ErrorKind::BrokenPipe)), libc::EPIPE);
        assert_eq!(errno_of(&io::Error::from(io::ErrorKind::TimedOut)), libc::ETIMEDOUT);
        // A malformed reply from the channel is not something the app can retry.
        assert_eq!(
            errno_of(&io::Error::new(io::ErrorKind::InvalidData, "unexpected completion")),
            libc::EIO
        );
    }

    #[test]
    fn set_errno_is_seen_by_errno() {
        set_errno(libc::EINPROGRESS);
        assert_eq!(errno(), libc::EINPROGRESS);
        set_errno(0);
        assert_eq!(errno(), 0);
    }
}
