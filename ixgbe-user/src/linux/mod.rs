//! Queue pairs over ordinary Linux network interfaces, plus the interface plumbing they
//! share.
//!
//! - [`tap::TapDevice`]: a TAP device (`/dev/net/tun`, see the kernel's
//!   `Documentation/networking/tuntap.rst`); the process is the wire, the kernel sees an
//!   Ethernet interface.
//! - [`packet_socket::PacketSocket`]: an `AF_PACKET`/`SOCK_RAW` socket bound to one
//!   interface (packet(7)); the baseline for the AF_XDP benchmark and a wire backend for the
//!   82599 model.
//! - [`netns`]: test support that builds network namespaces and veth pairs with `ip`.
//!
//! The helpers in this module talk to the kernel through the classic interface ioctls of
//! netdevice(7) (`SIOCGIFFLAGS`, `SIOCSIFMTU`, `SIOCGIFHWADDR`, ...).

pub mod netns;
pub mod packet_socket;
pub mod tap;
pub mod wire;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub use packet_socket::PacketSocket;
pub use tap::TapDevice;

/// Length of an interface name buffer including the terminating NUL (`IFNAMSIZ`).
pub(crate) const IFNAMSIZ: usize = 16;

/// Ethernet header length (destination, source, EtherType), used to turn an MTU into a
/// frame length.
pub(crate) const ETH_HEADER_LEN: usize = 14;

/// `struct ifreq` from `<net/if.h>`: a name followed by a 24-byte union. Only the union
/// members this crate uses are accessed, through the typed helpers below.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IfReq {
    pub(crate) name: [u8; IFNAMSIZ],
    pub(crate) data: [u8; 24],
}

// The kernel copies exactly `sizeof(struct ifreq)` bytes in and out.
const _: () = assert!(size_of::<IfReq>() == size_of::<libc::ifreq>());
const _: () = assert!(size_of::<IfReq>() == 40);

impl IfReq {
    /// An ifreq naming `name`; fails if the name does not fit or contains NUL.
    pub(crate) fn new(name: &str) -> io::Result<IfReq> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1 to {} bytes without NUL", IFNAMSIZ - 1),
            ));
        }
        let mut req = IfReq { name: [0; IFNAMSIZ], data: [0; 24] };
        req.name[..bytes.len()].copy_from_slice(bytes);
        Ok(req)
    }

    /// The name the kernel wrote back (TUNSETIFF fills in `tap%d` patterns).
    pub(crate) fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    pub(crate) fn set_short(&mut self, value: i16) {
        self.data[..2].copy_from_slice(&value.to_ne_bytes());
    }

    pub(crate) fn short(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    pub(crate) fn set_int(&mut self, value: i32) {
        self.data[..4].copy_from_slice(&value.to_ne_bytes());
    }

    /// Stores a pointer in the union (`ifr_data`, used by `SIOCETHTOOL`).
    pub(crate) fn set_pointer(&mut self, ptr: *mut libc::c_void) {
        self.data[..size_of::<usize>()].copy_from_slice(&(ptr as usize).to_ne_bytes());
    }

    pub(crate) fn int(&self) -> i32 {
        i32::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }
}

/// Runs one interface ioctl whose argument is an `ifreq`.
///
/// Callers pass only requests from netdevice(7) / if_tun.h that read or write a
/// `struct ifreq`, so the kernel never touches memory beyond `req`.
pub(crate) fn ifreq_ioctl(fd: RawFd, request: libc::Ioctl, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: `req` is a valid, exclusively borrowed `struct ifreq` for the duration of the
    // call and every caller passes a request whose argument is a `struct ifreq *`.
    let rc = unsafe { libc::ioctl(fd, request, req as *mut IfReq) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A throwaway `AF_INET` datagram socket: the handle netdevice(7) ioctls are issued on.
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel's index of interface `name` (if_nametoindex(3)).
pub fn interface_index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("interface {name:?}: {err}")));
    }
    Ok(index)
}

/// The hardware (MAC) address of interface `name` (`SIOCGIFHWADDR`).
pub fn interface_mac(name: &str) -> io::Result<[u8; 6]> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as libc::Ioctl, &mut req)?;
    // The union holds a `struct sockaddr`: 2 bytes of family, then the address bytes.
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.data[2..8]);
    Ok(mac)
}

/// The MTU of interface `name` (`SIOCGIFMTU`).
pub fn interface_mtu(name: &str) -> io::Result<u32> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as libc::Ioctl, &mut req)?;
    u32::try_from(req.int()).map_err(|_| io::Error::other("kernel reported a negative MTU"))
}

/// Sets the MTU of interface `name` (`SIOCSIFMTU`; needs CAP_NET_ADMIN).
pub fn set_interface_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let mtu = i32::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"))?;
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    req.set_int(mtu);
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU as libc::Ioctl, &mut req)
}

/// Sets how many frames interface `name` queues for transmission (`SIOCSIFTXQLEN`; needs
/// CAP_NET_ADMIN). For a TAP this is the queue of frames waiting for the reading process.
pub fn set_interface_tx_queue_len(name: &str, frames: u32) -> io::Result<()> {
    let frames = i32::try_from(frames)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "queue length out of range"))?;
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    req.set_int(frames);
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCSIFTXQLEN as libc::Ioctl, &mut req)
}

/// How many frames interface `name` queues for transmission (`SIOCGIFTXQLEN`).
pub fn interface_tx_queue_len(name: &str) -> io::Result<u32> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCGIFTXQLEN as libc::Ioctl, &mut req)?;
    u32::try_from(req.int()).map_err(|_| io::Error::other("negative queue length"))
}

/// Brings interface `name` administratively up or down (`SIOCSIFFLAGS`, `IFF_UP`; needs
/// CAP_NET_ADMIN).
pub fn set_interface_up(name: &str, up: bool) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut req)?;
    let flags = req.short();
    let iff_up = libc::IFF_UP as i16;
    req.set_short(if up { flags | iff_up } else { flags & !iff_up });
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &mut req)
}

/// Whether interface `name` is administratively up (`SIOCGIFFLAGS`).
pub fn interface_is_up(name: &str) -> io::Result<bool> {
    let sock = control_socket()?;
    let mut req = IfReq::new(name)?;
    ifreq_ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut req)?;
    Ok(req.short() & libc::IFF_UP as i16 != 0)
}

/// Whether an I/O error only means "try again later" on a non-blocking descriptor.
pub(crate) fn is_transient(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_rejects_names_the_kernel_would_truncate() {
        assert!(IfReq::new("").is_err());
        assert!(IfReq::new("sixteen-chars-xx").is_err());
        assert!(IfReq::new("a\0b").is_err());
        let req = IfReq::new("fifteen-chars-x").unwrap();
        assert_eq!(req.name(), "fifteen-chars-x");
    }

    #[test]
    fn loopback_is_visible_through_the_interface_ioctls() {
        // Every Linux network namespace has `lo`, up, with MTU 65536 and an all-zero MAC.
        assert_eq!(interface_index("lo").unwrap(), 1);
        assert_eq!(interface_mac("lo").unwrap(), [0; 6]);
        assert!(interface_mtu("lo").unwrap() >= 1500);
        assert!(interface_is_up("lo").unwrap());
        assert!(interface_tx_queue_len("lo").is_ok());
    }

    #[test]
    fn unknown_interface_is_an_error_naming_it() {
        let err = interface_index("np-no-such-if").unwrap_err();
        assert!(err.to_string().contains("np-no-such-if"), "{err}");
        assert!(interface_mac("np-no-such-if").is_err());
    }
}
