//! Passing file descriptors between processes over a Unix stream socket.
//!
//! Implements `SCM_RIGHTS` ancillary messages (unix(7), cmsg(3)): the control plane hands
//! each application its segment memfd and wake-up eventfd this way, and hands the same fds
//! to every instance. Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one message may carry (the kernel allows 253; netpop needs a few).
pub const MAX_FDS_PER_MESSAGE: usize = 16;

/// Bytes of control buffer for `n` descriptors, in u64 words so the buffer is aligned for
/// `cmsghdr`.
fn cmsg_words(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let bytes = unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) } as usize;
    bytes.div_ceil(size_of::<u64>())
}

/// Sends `data` (at least one byte) with `fds` attached. The descriptors travel with the
/// first byte; the rest of `data` follows if the socket took only part of it.
pub fn send_fds(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "fd passing needs at least one data byte",
        ));
    }
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds in one message"));
    }
    let mut control = vec![0u64; cmsg_words(fds.len())];
    let mut iov = libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: data.len() };
    // SAFETY: `msghdr` is plain data; all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() * size_of::<u64>();
        // SAFETY: msg_control points to a zeroed, aligned buffer of CMSG_SPACE(len) bytes, so
        // CMSG_FIRSTHDR is non-null and the header plus `fds.len()` descriptors fit in it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<RawFd>()) as u32) as usize;
            let slots = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                slots.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    let sent = loop {
        // SAFETY: `msg` points to live buffers (data via iov, control) for the whole call;
        // MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    if let Some(rest) = data.get(sent..).filter(|r| !r.is_empty()) {
        io::Write::write_all(&mut &*sock, rest)?;
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and up to `max_fds` descriptors. Returns the byte
/// count (0 = the peer closed) and the descriptors, owned and close-on-exec.
///
/// A message carrying more than `max_fds` descriptors is an error: the kernel closes the
/// ones that did not fit, the ones that did are closed here, and the caller should treat
/// the connection as broken (the protocol said how many to expect).
pub fn recv_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let max_fds = max_fds.min(MAX_FDS_PER_MESSAGE);
    let mut control = vec![0u64; cmsg_words(max_fds.max(1))];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `msghdr` is plain data; all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() * size_of::<u64>();
    let n = loop {
        // SAFETY: `msg` points to live, writable buffers for data and control for the whole
        // call; the kernel writes at most their stated lengths.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen with well-formed cmsghdrs;
    // CMSG_FIRSTHDR/NXTHDR stay within that length, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / 4 descriptors newly installed in this process, which
    // nothing else owns yet.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len.saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..payload / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > max_fds {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "peer sent more fds than expected"));
    }
    Ok((n, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::EventFd;
    use std::os::fd::AsFd;

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sendmsg/recvmsg")]
    fn passes_working_descriptors_with_data() {
        let (a, b) = UnixStream::pair().unwrap();
        let e1 = EventFd::new().unwrap();
        let e2 = EventFd::new().unwrap();
        send_fds(&a, b"hello", &[e1.as_fd(), e2.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_fds(&b, &mut buf, 4).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 2);
        let mut got = fds.into_iter().map(|fd| EventFd::from_fd(fd).unwrap());
        let (r1, r2) = (got.next().unwrap(), got.next().unwrap());
        // The received descriptors name the same eventfds as the sent ones.
        e1.notify().unwrap();
        assert_eq!(r1.drain().unwrap(), 1);
        assert_eq!(r2.drain().unwrap(), 0);
        e2.notify().unwrap();
        assert_eq!(r2.drain().unwrap(), 1);
        // SAFETY: F_GETFD only reads descriptor flags.
        let flags = unsafe { libc::fcntl(r1.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received fds are close-on-exec");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sendmsg/recvmsg")]
    fn plain_data_and_eof() {
        let (a, b) = UnixStream::pair().unwrap();
        send_fds(&a, b"x", &[]).unwrap();
        let mut buf = [0u8; 4];
        let (n, fds) = recv_fds(&b, &mut buf, 2).unwrap();
        assert_eq!((n, fds.len()), (1, 0));
        drop(a);
        assert_eq!(recv_fds(&b, &mut buf, 2).unwrap().0, 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no sendmsg/recvmsg")]
    fn too_many_fds_is_an_error_not_a_leak() {
        let (a, b) = UnixStream::pair().unwrap();
        let e = EventFd::new().unwrap();
        send_fds(&a, b"y", &[e.as_fd(), e.as_fd(), e.as_fd()]).unwrap();
        let mut buf = [0u8; 4];
        let err = recv_fds(&b, &mut buf, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn refuses_empty_data_and_oversized_fd_lists() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(send_fds(&a, b"", &[]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let e = EventFd::new().unwrap();
        let many = vec![e.as_fd(); MAX_FDS_PER_MESSAGE + 1];
        assert_eq!(send_fds(&a, b"z", &many).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
