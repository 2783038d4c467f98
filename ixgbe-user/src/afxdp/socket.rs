//! One AF_XDP socket (XSK) bound to one rx/tx queue of an interface, as a [`QueuePair`].
//!
//! Set-up order from the kernel's `Documentation/networking/af_xdp.rst`: create the
//! `AF_XDP` socket, register the UMEM (`XDP_UMEM_REG`), size the fill, completion, rx and tx
//! rings, read their mmap offsets (`XDP_MMAP_OFFSETS`) and map them, bind to
//! `(ifindex, queue)` with `XDP_ZEROCOPY` or `XDP_COPY` (plus `XDP_USE_NEED_WAKEUP`), give
//! the kernel receive chunks through the fill ring. The socket then has to be entered in the
//! `XSKMAP` at its queue index ([`super::XskMap::insert`]) before the redirect program sends
//! it anything.
//!
//! Chunk bookkeeping: the first half of the UMEM circulates between the fill ring and the rx
//! ring (each received chunk goes straight back to the fill ring once the caller's callback
//! returns), the second half between a free list, the tx ring and the completion ring.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::XdpError;
use super::umem::{
    ConsumerRing, ProducerRing, Umem, XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING,
    XDP_UMEM_PGOFF_COMPLETION_RING, XDP_UMEM_PGOFF_FILL_RING, XdpDesc, XdpMmapOffsets,
};
use crate::linux::{ETH_HEADER_LEN, interface_index, interface_mac, interface_mtu};
use crate::queue::{QueueError, QueuePair, QueueStats};

/// Socket options at level `SOL_XDP`.
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// `sxdp_flags` bits.
const XDP_COPY: u16 = 1 << 1;
const XDP_ZEROCOPY: u16 = 1 << 2;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

/// Room the kernel keeps in front of received data in each chunk (`XDP_PACKET_HEADROOM`).
const XDP_PACKET_HEADROOM: u32 = 256;

/// `struct xdp_umem_reg`. The last word is `tx_metadata_len` on Linux 6.8+ and padding
/// before; zero means "no tx metadata" to both.
#[repr(C)]
struct XdpUmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

const _: () = assert!(size_of::<XdpUmemReg>() == 32);

/// `struct sockaddr_xdp`.
#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

const _: () = assert!(size_of::<SockaddrXdp>() == 16);
const _: () = assert!(size_of::<SockaddrXdp>() == size_of::<libc::sockaddr_xdp>());

/// `struct xdp_statistics`: the kernel's per-socket drop counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    /// Frames dropped for reasons other than the ones below.
    pub rx_dropped: u64,
    /// Fill-ring entries the kernel rejected.
    pub rx_invalid_descs: u64,
    /// Tx descriptors the kernel rejected (bad address or length).
    pub tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the tx ring empty when woken.
    pub tx_ring_empty_descs: u64,
}

const _: () = assert!(size_of::<XdpStatistics>() == 48);

/// How to bind: let the kernel copy frames, insist on zero-copy, or try zero-copy first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BindMode {
    /// Zero-copy if the driver supports it, otherwise copy (a fresh socket is set up after a
    /// refused zero-copy bind).
    #[default]
    Auto,
    /// `XDP_COPY`: works on every interface, including veth.
    Copy,
    /// `XDP_ZEROCOPY`: the NIC DMAs straight into the UMEM; fails where unsupported.
    ZeroCopy,
}

/// Sizes and options for one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// UMEM chunks; half serve receive, half transmit.
    pub frame_count: u32,
    /// Bytes per chunk: a power of two from 2048 to the page size.
    pub frame_size: u32,
    /// Entries in each of the four rings (power of two).
    pub ring_size: u32,
    /// Copy / zero-copy choice.
    pub bind_mode: BindMode,
    /// Use `XDP_USE_NEED_WAKEUP`, so the kernel is kicked only when it asks to be.
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_count: 4096,
            frame_size: 2048,
            ring_size: 2048,
            bind_mode: BindMode::Auto,
            need_wakeup: true,
        }
    }
}

impl XskConfig {
    fn validate(&self) -> Result<(), XdpError> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
        let invalid = |why: String| Err(XdpError::InvalidConfig(why));
        if !self.frame_size.is_power_of_two() || self.frame_size < 2048 || self.frame_size > page {
            return invalid(format!(
                "frame_size {} must be a power of two in 2048..={page}",
                self.frame_size
            ));
        }
        if !self.ring_size.is_power_of_two() || self.ring_size < 2 {
            return invalid(format!("ring_size {} must be a power of two >= 2", self.ring_size));
        }
        if self.frame_count < 2 {
            return invalid("frame_count must be at least 2".into());
        }
        Ok(())
    }
}

/// An AF_XDP socket bound to one queue: frames of that queue that the XDP program redirects
/// arrive here, frames sent here leave through that queue.
#[derive(Debug)]
pub struct XskSocket {
    // Field order is drop order: rings unmap before the socket closes and the UMEM goes.
    fill: ProducerRing<u64>,
    completion: ConsumerRing<u64>,
    rx: ConsumerRing<XdpDesc>,
    tx: ProducerRing<XdpDesc>,
    fd: OwnedFd,
    umem: Umem,
    /// Transmit chunks this process owns.
    tx_free: Vec<u64>,
    ifindex: u32,
    queue: u32,
    zero_copy: bool,
    need_wakeup: bool,
    ring_size: u32,
    max_frame_len: usize,
    mac: [u8; 6],
    stats: QueueStats,
}

impl XskSocket {
    /// Creates a socket bound to queue `queue` of interface `interface` (needs CAP_NET_RAW;
    /// the UMEM counts against RLIMIT_MEMLOCK without CAP_IPC_LOCK). Insert it into the
    /// `XSKMAP` afterwards.
    pub fn bind(interface: &str, queue: u32, config: &XskConfig) -> Result<XskSocket, XdpError> {
        config.validate()?;
        let ifindex =
            interface_index(interface).map_err(|e| XdpError::syscall("if_nametoindex", e))?;
        let mac = interface_mac(interface).map_err(|e| XdpError::syscall("SIOCGIFHWADDR", e))?;
        let mtu = interface_mtu(interface).map_err(|e| XdpError::syscall("SIOCGIFMTU", e))?;
        let max_frame_len =
            ((config.frame_size - XDP_PACKET_HEADROOM) as usize).min(mtu as usize + ETH_HEADER_LEN);
        let parts = Parts { ifindex, queue, mac, max_frame_len, config: *config };
        match config.bind_mode {
            BindMode::Copy => parts.build(XDP_COPY),
            BindMode::ZeroCopy => parts.build(XDP_ZEROCOPY),
            BindMode::Auto => match parts.build(XDP_ZEROCOPY) {
                Ok(socket) => Ok(socket),
                // The refused socket is gone; a fresh one binds in copy mode.
                Err(XdpError::Syscall { call: "bind(AF_XDP)", .. }) => parts.build(XDP_COPY),
                Err(other) => Err(other),
            },
        }
    }

    /// The queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The interface index this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether the kernel runs this socket in zero-copy mode (as `XDP_OPTIONS` reports).
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The kernel's drop counters for this socket (`XDP_STATISTICS`).
    pub fn kernel_statistics(&self) -> io::Result<XdpStatistics> {
        let mut stats = XdpStatistics::default();
        getsockopt(self.fd.as_raw_fd(), XDP_STATISTICS, &mut stats)?;
        Ok(stats)
    }

    /// Returns completed transmit chunks to the free list; returns how many.
    fn reclaim_completions(&mut self) -> usize {
        let ready = self.completion.available();
        let mut reclaimed = 0;
        for _ in 0..ready {
            let Some(addr) = self.completion.pop() else { break };
            // A chunk outside our transmit half would be a kernel bug or memory corruption:
            // drop it rather than hand out memory the fill ring also owns.
            match self.umem.chunk_of(addr) {
                Some(chunk) if self.is_tx_chunk(chunk) => {
                    self.tx_free.push(chunk);
                    reclaimed += 1;
                }
                _ => self.stats.tx_dropped += 1,
            }
        }
        self.completion.release();
        reclaimed
    }

    fn is_tx_chunk(&self, chunk: u64) -> bool {
        chunk >= self.rx_chunks() * u64::from(self.umem.frame_size())
    }

    fn rx_chunks(&self) -> u64 {
        u64::from(self.umem.frame_count() / 2)
    }

    /// sendto(2) with no data: tells the kernel to process the tx ring (required in copy
    /// mode, and in zero-copy mode when the ring's need-wakeup flag is set).
    fn kick_tx(&mut self) -> Result<(), QueueError> {
        // Copy mode transmits at most a small batch per call (32 frames in current kernels)
        // and answers EAGAIN while more are queued, so kick until the ring drains, bounded.
        let max_kicks = self.tx_ring_size() / 16 + 2;
        for _ in 0..max_kicks {
            // SAFETY: a zero-length send with no buffer and no address; only the fd is used.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                if self.tx.outstanding() == 0 {
                    return Ok(());
                }
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // More to send, or the device queue is momentarily busy: try again.
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) => {
                    if self.tx.outstanding() == 0 {
                        return Ok(());
                    }
                }
                // Out of skbs or the device is down: frames stay queued for the next flush.
                Some(libc::ENOBUFS) | Some(libc::ENETDOWN) => return Ok(()),
                _ => return Err(QueueError::Io(err)),
            }
        }
        Ok(())
    }

    fn tx_ring_size(&self) -> u32 {
        self.ring_size
    }
}

/// Everything `bind` needs to build one socket, so `Auto` can build a second one.
struct Parts {
    ifindex: u32,
    queue: u32,
    mac: [u8; 6],
    max_frame_len: usize,
    config: XskConfig,
}

impl Parts {
    fn build(&self, mode_flag: u16) -> Result<XskSocket, XdpError> {
        let config = &self.config;
        // SAFETY: socket(2) with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(XdpError::syscall("socket(AF_XDP)", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Umem::new(config.frame_count, config.frame_size)
            .map_err(|e| XdpError::syscall("mmap(UMEM)", e))?;
        let registration = XdpUmemReg {
            addr: umem.base() as u64,
            len: umem.len() as u64,
            chunk_size: config.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_raw_fd(), XDP_UMEM_REG, &registration).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENOBUFS)
                || e.raw_os_error() == Some(libc::EPERM)
            {
                " (UMEM larger than RLIMIT_MEMLOCK allows? needs CAP_IPC_LOCK or a higher limit)"
            } else {
                ""
            };
            XdpError::syscall(
                "setsockopt(XDP_UMEM_REG)",
                io::Error::new(e.kind(), format!("{e}{hint}")),
            )
        })?;
        for (option, name) in [
            (XDP_UMEM_FILL_RING, "setsockopt(XDP_UMEM_FILL_RING)"),
            (XDP_UMEM_COMPLETION_RING, "setsockopt(XDP_UMEM_COMPLETION_RING)"),
            (XDP_RX_RING, "setsockopt(XDP_RX_RING)"),
            (XDP_TX_RING, "setsockopt(XDP_TX_RING)"),
        ] {
            setsockopt(fd.as_raw_fd(), option, &config.ring_size)
                .map_err(|e| XdpError::syscall(name, e))?;
        }
        let mut offsets = XdpMmapOffsets::default();
        let got = getsockopt(fd.as_raw_fd(), XDP_MMAP_OFFSETS, &mut offsets)
            .map_err(|e| XdpError::syscall("getsockopt(XDP_MMAP_OFFSETS)", e))?;
        if got != size_of::<XdpMmapOffsets>() {
            return Err(XdpError::syscall(
                "getsockopt(XDP_MMAP_OFFSETS)",
                io::Error::other("kernel predates ring flags (Linux 5.4); need-wakeup unavailable"),
            ));
        }
        let map_err = |ring: &'static str| move |e| XdpError::syscall(ring, e);
        let raw = fd.as_raw_fd();
        let size = config.ring_size;
        let mut fill = ProducerRing::map(raw, XDP_UMEM_PGOFF_FILL_RING, &offsets.fill, size)
            .map_err(map_err("mmap(fill ring)"))?;
        let completion =
            ConsumerRing::map(raw, XDP_UMEM_PGOFF_COMPLETION_RING, &offsets.completion, size)
                .map_err(map_err("mmap(completion ring)"))?;
        let rx = ConsumerRing::map(raw, XDP_PGOFF_RX_RING, &offsets.rx, size)
            .map_err(map_err("mmap(rx ring)"))?;
        let tx = ProducerRing::map(raw, XDP_PGOFF_TX_RING, &offsets.tx, size)
            .map_err(map_err("mmap(tx ring)"))?;

        let flags = mode_flag | if config.need_wakeup { XDP_USE_NEED_WAKEUP } else { 0 };
        let address = SockaddrXdp {
            family: libc::AF_XDP as u16,
            flags,
            ifindex: self.ifindex,
            queue_id: self.queue,
            shared_umem_fd: 0,
        };
        // SAFETY: `address` is a live sockaddr_xdp and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&address as *const SockaddrXdp).cast(),
                size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(XdpError::syscall("bind(AF_XDP)", io::Error::last_os_error()));
        }
        let mut options = 0u32;
        getsockopt(raw, XDP_OPTIONS, &mut options)
            .map_err(|e| XdpError::syscall("getsockopt(XDP_OPTIONS)", e))?;

        // Receive half: as many chunks as the fill ring holds, the rest transmit.
        let rx_chunks = (config.frame_count / 2).min(size);
        let frame = u64::from(config.frame_size);
        for chunk in 0..u64::from(rx_chunks) {
            fill.push(chunk * frame);
        }
        fill.publish();
        let tx_free = (u64::from(config.frame_count / 2)..u64::from(config.frame_count))
            .map(|chunk| chunk * frame)
            .collect();
        Ok(XskSocket {
            fill,
            completion,
            rx,
            tx,
            fd,
            umem,
            tx_free,
            ifindex: self.ifindex,
            queue: self.queue,
            zero_copy: options & XDP_OPTIONS_ZEROCOPY != 0,
            need_wakeup: config.need_wakeup,
            ring_size: size,
            max_frame_len: self.max_frame_len,
            mac: self.mac,
            stats: QueueStats::default(),
        })
    }
}

fn setsockopt<T>(fd: RawFd, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T and its exact size is passed; each caller pairs the option
    // with the struct the kernel expects for it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            option,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// getsockopt at `SOL_XDP` into `value`; returns the length the kernel wrote.
fn getsockopt<T>(fd: RawFd, option: libc::c_int, value: &mut T) -> io::Result<usize> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes; the kernel writes at most `len`.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, option, (value as *mut T).cast(), &mut len) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(len as usize) }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl QueuePair for XskSocket {
    fn rx_burst(
        &mut self,
        max: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, QueueError> {
        let ready = (self.rx.available() as usize).min(max);
        let mut delivered = 0;
        for _ in 0..ready {
            let Some(desc) = self.rx.pop() else { break };
            let Some(chunk) = self.umem.chunk_of(desc.addr).filter(|&c| !self.is_tx_chunk(c))
            else {
                // Not one of our receive chunks: nothing to recycle, just count it.
                self.stats.rx_dropped += 1;
                continue;
            };
            // SAFETY: the rx ring handed this chunk to us; it returns to the kernel only via
            // the fill-ring push below, after the callback's borrow has ended.
            match unsafe { self.umem.frame(desc.addr, desc.len as usize) } {
                Some(frame) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += u64::from(desc.len);
                    on_frame(frame);
                    delivered += 1;
                }
                None => self.stats.rx_dropped += 1,
            }
            // Cannot fail: at most `rx_chunks <= ring size` chunks are ever in circulation.
            if !self.fill.push(chunk) {
                self.stats.rx_dropped += 1;
            }
        }
        if ready > 0 {
            self.rx.release();
            self.fill.publish();
        }
        if self.need_wakeup && self.fill.needs_wakeup() {
            // The driver sleeps until told the fill ring has entries (zero-copy drivers).
            // SAFETY: zero-length, non-blocking receive with no buffer or address.
            let rc = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) {
                    return Err(QueueError::Io(err));
                }
            }
        }
        Ok(delivered)
    }

    fn tx_one(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<bool, QueueError> {
        if self.tx_free.is_empty() {
            self.reclaim_completions();
        }
        if self.tx_free.is_empty() || self.tx.free() == 0 {
            return Ok(false);
        }
        let Some(chunk) = self.tx_free.pop() else { return Ok(false) };
        let max = self.max_frame_len;
        // SAFETY: `chunk` came off the free list, so neither ring holds it.
        let Some(buffer) = (unsafe { self.umem.frame_mut(chunk, max) }) else {
            return Err(QueueError::Device(format!("tx chunk {chunk:#x} outside the UMEM")));
        };
        let len = build(buffer);
        if len == 0 || len > max {
            if len > max {
                self.stats.tx_dropped += 1;
            }
            self.tx_free.push(chunk);
            return Ok(true);
        }
        // `free() > 0` was checked above, so the push succeeds.
        if !self.tx.push(XdpDesc { addr: chunk, len: len as u32, options: 0 }) {
            self.tx_free.push(chunk);
            return Ok(false);
        }
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        Ok(true)
    }

    fn tx_flush(&mut self) -> Result<(), QueueError> {
        self.tx.publish();
        // Copy mode is driven only by sendto(); zero-copy only when the driver asks.
        if self.tx.outstanding() > 0
            && (!self.zero_copy || !self.need_wakeup || self.tx.needs_wakeup())
        {
            self.kick_tx()?;
        }
        self.reclaim_completions();
        Ok(())
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn stats(&self) -> QueueStats {
        let mut stats = self.stats;
        if let Ok(kernel) = self.kernel_statistics() {
            stats.rx_dropped += kernel.rx_dropped + kernel.rx_ring_full + kernel.rx_invalid_descs;
            stats.tx_dropped += kernel.tx_invalid_descs;
        }
        stats
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}
