//! A TAP device as a queue pair.
//!
//! Implements the user side of the kernel's TUN/TAP driver
//! (`Documentation/networking/tuntap.rst`, `<linux/if_tun.h>`): `/dev/net/tun` opened and
//! attached to an interface with `TUNSETIFF`, `IFF_TAP | IFF_NO_PI`, so each `read(2)` returns
//! exactly one Ethernet frame (no FCS, no packet-information prefix) and each `write(2)`
//! injects one frame into the kernel as if it had arrived on the wire.
//!
//! The kernel side of the TAP is an ordinary interface with its own MAC address; this
//! process is the far end of the cable and so uses a different MAC ([`TapDevice::mac_address`]).
//! The descriptor keeps working after the interface is moved into another network namespace
//! (`ip link set NAME netns NS`), which is how the tests give the kernel side an address in a
//! namespace they own.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{ETH_HEADER_LEN, IfReq, ifreq_ioctl, interface_mac, interface_mtu, is_transient};
use crate::queue::{QueueError, QueuePair, QueueStats};

/// `IFF_TAP` from `<linux/if_tun.h>`: Ethernet frames rather than IP packets.
const IFF_TAP: i16 = 0x0002;
/// `IFF_NO_PI` from `<linux/if_tun.h>`: no 4-byte packet-information prefix.
const IFF_NO_PI: i16 = 0x1000;

/// Frames built by `tx_one` before a flush must write them.
const TX_BATCH: usize = 64;

/// Frames the kernel queues towards this process before it drops (the interface's
/// `tx_queue_len`). The default, 1000 frames on the kernels here, is what a burst of a
/// thousand SYNs from a load generator overflows whenever the reading process is
/// descheduled for a moment; 4096 rides out such gaps.
pub const TAP_TX_QUEUE_LEN: u32 = 4096;

/// A TAP interface opened by this process: receive = frames the kernel sends out of the
/// interface, transmit = frames the kernel receives on it.
#[derive(Debug)]
pub struct TapDevice {
    file: File,
    name: String,
    mac: [u8; 6],
    mtu: usize,
    rx_buffer: Vec<u8>,
    /// Frames built by `tx_one` and not yet written; each entry is one frame.
    tx_pending: Vec<Vec<u8>>,
    /// Recycled frame buffers so the steady state does not allocate.
    tx_spare: Vec<Vec<u8>>,
    stats: QueueStats,
}

impl TapDevice {
    /// Creates (or attaches to) TAP interface `name` and brings it up. `name` may be a
    /// pattern such as `"tap%d"`; [`TapDevice::name`] tells which name the kernel chose.
    /// Needs CAP_NET_ADMIN.
    ///
    /// The user-side MAC address is a locally administered address derived from the
    /// interface index; use [`TapDevice::with_mac`] to choose one.
    pub fn open(name: &str) -> io::Result<TapDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
        let mut req = IfReq::new(name)?;
        req.set_short(IFF_TAP | IFF_NO_PI);
        ifreq_ioctl(file.as_raw_fd(), libc::TUNSETIFF as libc::Ioctl, &mut req)
            .map_err(|e| io::Error::new(e.kind(), format!("TUNSETIFF {name:?}: {e}")))?;
        let name = req.name();
        // Only ever raised: an interface someone configured with a longer queue keeps it.
        if super::interface_tx_queue_len(&name)? < TAP_TX_QUEUE_LEN {
            super::set_interface_tx_queue_len(&name, TAP_TX_QUEUE_LEN)?;
        }
        super::set_interface_up(&name, true)?;
        let mtu = interface_mtu(&name)? as usize;
        let index = super::interface_index(&name)?;
        // 0x02 in the first octet: locally administered, unicast (IEEE 802 section 8.2).
        let [a, b, c, d] = index.to_be_bytes();
        let mac = [0x02, 0x6e, a, b, c, d];
        Ok(TapDevice {
            file,
            name,
            mac,
            mtu,
            rx_buffer: vec![0; mtu + ETH_HEADER_LEN],
            tx_pending: Vec::with_capacity(TX_BATCH),
            tx_spare: Vec::new(),
            stats: QueueStats::default(),
        })
    }

    /// Uses `mac` as this end's address (what [`QueuePair::mac_address`] reports).
    pub fn with_mac(mut self, mac: [u8; 6]) -> TapDevice {
        self.mac = mac;
        self
    }

    /// The interface name the kernel assigned.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MAC address of the kernel side of the TAP (frames addressed to it reach the
    /// kernel's stack). Only meaningful while the interface is in this process's namespace.
    pub fn kernel_mac(&self) -> io::Result<[u8; 6]> {
        interface_mac(&self.name)
    }

    /// Changes the interface MTU (CAP_NET_ADMIN) and resizes the receive buffer to match.
    pub fn set_mtu(&mut self, mtu: u32) -> io::Result<()> {
        super::set_interface_mtu(&self.name, mtu)?;
        self.mtu = mtu as usize;
        self.rx_buffer.resize(self.mtu + ETH_HEADER_LEN, 0);
        Ok(())
    }
}

impl QueuePair for TapDevice {
    fn rx_burst(
        &mut self,
        max: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, QueueError> {
        let mut received = 0;
        while received < max {
            match self.file.read(&mut self.rx_buffer) {
                Ok(0) => break,
                Ok(len) => {
                    let frame = self.rx_buffer.get(..len).unwrap_or(&[]);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                    on_frame(frame);
                    received += 1;
                }
                Err(e) if is_transient(&e) => break,
                Err(e) => return Err(QueueError::Io(e)),
            }
        }
        Ok(received)
    }

    fn tx_one(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<bool, QueueError> {
        if self.tx_pending.len() >= TX_BATCH {
            return Ok(false);
        }
        let mut buffer = self.tx_spare.pop().unwrap_or_default();
        buffer.resize(self.max_frame_len(), 0);
        let len = build(&mut buffer);
        if len == 0 || len > buffer.len() {
            if len != 0 {
                self.stats.tx_dropped += 1;
            }
            self.tx_spare.push(buffer);
            return Ok(true);
        }
        buffer.truncate(len);
        self.tx_pending.push(buffer);
        Ok(true)
    }

    fn tx_flush(&mut self) -> Result<(), QueueError> {
        let mut first_error = None;
        for mut frame in self.tx_pending.drain(..) {
            match self.file.write(&frame) {
                Ok(written) if written == frame.len() => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += written as u64;
                }
                Ok(_) => self.stats.tx_dropped += 1,
                // The kernel drops rather than blocks when its backlog is full; either way
                // the frame is gone and the caller learns it from the counters.
                Err(e) if is_transient(&e) || e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.stats.tx_dropped += 1;
                }
                // EIO: the interface is down. Count the frame and report once.
                Err(e) => {
                    self.stats.tx_dropped += 1;
                    first_error.get_or_insert(e);
                }
            }
            frame.clear();
            self.tx_spare.push(frame);
        }
        match first_error {
            Some(e) => Err(QueueError::Io(e)),
            None => Ok(()),
        }
    }

    fn max_frame_len(&self) -> usize {
        self.mtu + ETH_HEADER_LEN
    }

    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}
