//! An `AF_PACKET` socket bound to one interface as a queue pair.
//!
//! packet(7): `SOCK_RAW` with protocol `ETH_P_ALL` receives every frame the interface
//! receives (complete Ethernet header, no FCS) and transmits frames verbatim. Batches go
//! through recvmmsg(2)/sendmmsg(2), so this is a fair per-syscall baseline for AF_XDP.
//!
//! The socket is created with protocol 0 (which receives nothing) and only then bound with
//! `ETH_P_ALL` to the interface, so no frame from another interface can slip into the queue
//! between socket(2) and bind(2). Frames this socket transmits are not looped back to it
//! (`PACKET_IGNORE_OUTGOING`, Linux 4.20; older kernels are handled by skipping
//! `PACKET_OUTGOING` frames).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{ETH_HEADER_LEN, interface_index, interface_mac, interface_mtu, is_transient};
use crate::queue::{QueueError, QueuePair, QueueStats};

/// `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>`.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Frames moved per recvmmsg(2)/sendmmsg(2) call at most.
const BATCH: usize = 64;

/// A raw packet socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    mac: [u8; 6],
    frame_len: usize,
    /// `BATCH` receive slots of `slot_len` bytes each.
    rx_buffers: Vec<u8>,
    /// `BATCH` transmit slots of `slot_len` bytes each; the first `tx_lens.len()` hold frames
    /// waiting for `tx_flush`.
    tx_buffers: Vec<u8>,
    tx_lens: Vec<usize>,
    slot_len: usize,
    stats: QueueStats,
}

impl PacketSocket {
    /// Opens a non-blocking raw socket on interface `name` (needs CAP_NET_RAW). Frames up to
    /// the interface MTU plus the Ethernet header are carried; longer received frames are
    /// counted as dropped.
    pub fn open(name: &str) -> io::Result<PacketSocket> {
        let ifindex = interface_index(name)?;
        let mac = interface_mac(name)?;
        let frame_len = interface_mtu(name)? as usize + ETH_HEADER_LEN;
        // SAFETY: socket(2) with constant arguments; no pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: the option value points to a live c_int and its size is passed. Failure is
        // tolerated: old kernels lack the option and rx filters by packet type instead.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let addr = link_address(ifindex);
        // SAFETY: `addr` is a fully initialised sockaddr_ll and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("bind AF_PACKET to {name:?}: {err}")));
        }
        // One spare byte per slot: a frame that fills it was longer than `frame_len`.
        let slot_len = frame_len + 1;
        Ok(PacketSocket {
            fd,
            ifindex,
            mac,
            frame_len,
            rx_buffers: vec![0; BATCH * slot_len],
            tx_buffers: vec![0; BATCH * slot_len],
            tx_lens: Vec::with_capacity(BATCH),
            slot_len,
            stats: QueueStats::default(),
        })
    }

    /// The index of the interface this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

/// A `sockaddr_ll` naming `ifindex` and every protocol.
fn link_address(ifindex: u32) -> libc::sockaddr_ll {
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    }
}

impl QueuePair for PacketSocket {
    fn rx_burst(
        &mut self,
        max: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, QueueError> {
        let mut delivered = 0;
        while delivered < max {
            let want = (max - delivered).min(BATCH);
            // SAFETY: sockaddr_ll, iovec and mmsghdr are plain C structs for which all-zero
            // bytes are a valid value.
            let mut names: [libc::sockaddr_ll; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (i, slot) in self.rx_buffers.chunks_exact_mut(self.slot_len).take(want).enumerate()
            {
                iovecs[i] = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: slot.len() };
                headers[i].msg_hdr.msg_iov = &mut iovecs[i];
                headers[i].msg_hdr.msg_iovlen = 1;
                headers[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_ll).cast();
                headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            }
            // SAFETY: the first `want` headers point at live iovecs and sockaddr buffers that
            // cover distinct slots of `rx_buffers`; all of them outlive the call.
            let got = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    headers.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if got < 0 {
                let err = io::Error::last_os_error();
                if is_transient(&err) {
                    break;
                }
                return Err(QueueError::Io(err));
            }
            let got = got as usize;
            for (index, (header, name)) in headers.iter().zip(names.iter()).take(got).enumerate() {
                if name.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let len = header.msg_len as usize;
                if len > self.frame_len || header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    self.stats.rx_dropped += 1;
                    continue;
                }
                let start = index * self.slot_len;
                let Some(frame) = self.rx_buffers.get(start..start + len) else {
                    self.stats.rx_dropped += 1;
                    continue;
                };
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += len as u64;
                on_frame(frame);
                delivered += 1;
            }
            if got < want {
                break;
            }
        }
        Ok(delivered)
    }

    fn tx_one(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<bool, QueueError> {
        let index = self.tx_lens.len();
        if index >= BATCH {
            return Ok(false);
        }
        let start = index * self.slot_len;
        let Some(slot) = self.tx_buffers.get_mut(start..start + self.frame_len) else {
            return Ok(false);
        };
        let len = build(slot);
        if len > self.frame_len {
            self.stats.tx_dropped += 1;
        } else if len > 0 {
            self.tx_lens.push(len);
        }
        Ok(true)
    }

    fn tx_flush(&mut self) -> Result<(), QueueError> {
        let count = self.tx_lens.len();
        if count == 0 {
            return Ok(());
        }
        let mut addr = link_address(self.ifindex);
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are valid.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (&len, slot)) in
            self.tx_lens.iter().zip(self.tx_buffers.chunks_exact_mut(self.slot_len)).enumerate()
        {
            iovecs[i] = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: len };
            headers[i].msg_hdr.msg_iov = &mut iovecs[i];
            headers[i].msg_hdr.msg_iovlen = 1;
            headers[i].msg_hdr.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
            headers[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        }
        // SAFETY: the first `count` headers point at live iovecs covering initialised bytes of
        // `tx_buffers` and at `addr`; all outlive the call.
        let sent = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            let err = io::Error::last_os_error();
            // Socket buffer full or device queue full: keep the frames for the next flush so
            // the caller sees back-pressure from `tx_one`.
            if is_transient(&err) {
                return Ok(());
            }
            self.stats.tx_dropped += count as u64;
            self.tx_lens.clear();
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(());
            }
            return Err(QueueError::Io(err));
        }
        let sent = sent as usize;
        for &len in self.tx_lens.iter().take(sent) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
        }
        // Move unsent frames to the front so they go first next time.
        let remaining = count - sent;
        if remaining > 0 {
            self.tx_buffers.copy_within(sent * self.slot_len..count * self.slot_len, 0);
            self.tx_lens.drain(..sent);
        } else {
            self.tx_lens.clear();
        }
        Ok(())
    }

    fn max_frame_len(&self) -> usize {
        self.frame_len
    }

    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}
