//! Receive-side steering through the ethtool ioctl: the RSS indirection table that maps
//! hash buckets (flow groups) to rx queues, and the channel count.
//!
//! `SIOCETHTOOL` with `ETHTOOL_GRXFHINDIR` / `ETHTOOL_SRXFHINDIR` (`struct
//! ethtool_rxfh_indir`) and `ETHTOOL_GCHANNELS` (`struct ethtool_channels`), from
//! `<linux/ethtool.h>`. Drivers without an indirection table (veth, TAP, loopback) answer
//! `EOPNOTSUPP`; that comes back as [`SteeringError::NotSupported`] so the caller can fall back
//! to software steering instead of guessing.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

use crate::linux::{IfReq, control_socket, ifreq_ioctl};

const ETHTOOL_GRXFHINDIR: u32 = 0x38;
const ETHTOOL_SRXFHINDIR: u32 = 0x39;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Largest indirection table accepted from a driver (real NICs use 128 to 2048 entries).
const MAX_TABLE: u32 = 64 * 1024;

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const _: () = assert!(size_of::<EthtoolChannels>() == 36);

/// Why steering could not be read or programmed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SteeringError {
    /// The interface has no hardware steering table (for example veth): frames land on
    /// queues the device chooses, and flow groups must be enforced in software.
    NotSupported {
        /// The interface asked.
        interface: String,
        /// The ethtool request it refused, e.g. `"ETHTOOL_GRXFHINDIR"`.
        request: &'static str,
    },
    /// The ioctl failed for another reason (no such interface, no permission, ...).
    Io {
        /// The interface asked.
        interface: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The table given or returned is unusable (empty, or names a queue that does not
    /// exist).
    InvalidTable(String),
}

impl fmt::Display for SteeringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SteeringError::NotSupported { interface, request } => write!(
                f,
                "{interface} does not support {request}: no hardware steering, use software steering"
            ),
            SteeringError::Io { interface, source } => {
                write!(f, "ethtool on {interface}: {source}")
            }
            SteeringError::InvalidTable(why) => write!(f, "invalid RSS indirection table: {why}"),
        }
    }
}

impl std::error::Error for SteeringError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SteeringError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Issues `SIOCETHTOOL` on `interface` with `command` as the `ifr_data` buffer.
fn ethtool(
    interface: &str,
    request_name: &'static str,
    command: &mut [u32],
) -> Result<(), SteeringError> {
    let io_error = |source: io::Error| {
        if matches!(source.raw_os_error(), Some(libc::EOPNOTSUPP)) {
            SteeringError::NotSupported { interface: interface.to_owned(), request: request_name }
        } else {
            SteeringError::Io { interface: interface.to_owned(), source }
        }
    };
    let socket = control_socket().map_err(io_error)?;
    let mut request = IfReq::new(interface).map_err(io_error)?;
    request.set_pointer(command.as_mut_ptr().cast());
    // `command` is the whole ethtool structure the command reads or writes: callers size it
    // from the command's struct (and the table size the kernel announced).
    ifreq_ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as libc::Ioctl, &mut request)
        .map_err(io_error)
}

/// The number of receive queues (`ETHTOOL_GCHANNELS`: combined plus rx-only channels).
pub fn rx_queue_count(interface: &str) -> Result<u32, SteeringError> {
    let mut channels = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..EthtoolChannels::default() };
    // SAFETY: EthtoolChannels is nine u32s with no padding, so viewing it as a u32 slice of
    // that length is exact.
    let words = unsafe {
        std::slice::from_raw_parts_mut((&mut channels as *mut EthtoolChannels).cast::<u32>(), 9)
    };
    ethtool(interface, "ETHTOOL_GCHANNELS", words)?;
    Ok(channels.combined_count + channels.rx_count)
}

/// The RSS indirection table: entry `i` is the rx queue of hash bucket `i`.
pub fn rss_indirection_table(interface: &str) -> Result<Vec<u32>, SteeringError> {
    // First ask for the size only (size 0), then fetch the table.
    let mut header = [ETHTOOL_GRXFHINDIR, 0];
    ethtool(interface, "ETHTOOL_GRXFHINDIR", &mut header)?;
    let size = header[1];
    if size == 0 {
        return Err(SteeringError::NotSupported {
            interface: interface.to_owned(),
            request: "ETHTOOL_GRXFHINDIR",
        });
    }
    if size > MAX_TABLE {
        return Err(SteeringError::InvalidTable(format!("driver reports {size} entries")));
    }
    let mut command = vec![0u32; 2 + size as usize];
    command[0] = ETHTOOL_GRXFHINDIR;
    command[1] = size;
    ethtool(interface, "ETHTOOL_GRXFHINDIR", &mut command)?;
    Ok(command.split_off(2))
}

/// Programs the RSS indirection table. `table` must have exactly the driver's table size and
/// name only existing rx queues.
pub fn set_rss_indirection_table(interface: &str, table: &[u32]) -> Result<(), SteeringError> {
    let current = rss_indirection_table(interface)?;
    if table.len() != current.len() {
        return Err(SteeringError::InvalidTable(format!(
            "{} entries given, {interface} has {}",
            table.len(),
            current.len()
        )));
    }
    let queues = rx_queue_count(interface)?;
    if let Some(bad) = table.iter().find(|&&queue| queue >= queues) {
        return Err(SteeringError::InvalidTable(format!("queue {bad} >= {queues} rx queues")));
    }
    let mut command = Vec::with_capacity(2 + table.len());
    command.push(ETHTOOL_SRXFHINDIR);
    command.push(table.len() as u32);
    command.extend_from_slice(table);
    ethtool(interface, "ETHTOOL_SRXFHINDIR", &mut command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::netns::{NetNamespace, VethPair, skip_unless_root, unique_name};

    #[test]
    fn loopback_has_no_steering_table() {
        match rss_indirection_table("lo") {
            Err(SteeringError::NotSupported { interface, request }) => {
                assert_eq!((interface.as_str(), request), ("lo", "ETHTOOL_GRXFHINDIR"));
            }
            other => panic!("expected NotSupported, got {other:?}"),
        }
    }

    #[test]
    fn unknown_interface_is_an_io_error_not_no_steering() {
        let err = rss_indirection_table("np-missing0").unwrap_err();
        assert!(matches!(err, SteeringError::Io { .. }), "{err:?}");
    }

    #[test]
    fn veth_reports_its_queues_and_no_steering() {
        if skip_unless_root("veth_reports_its_queues_and_no_steering") {
            return;
        }
        let ns = NetNamespace::create(&unique_name("ns")).unwrap();
        let veth = VethPair::create(&unique_name("va"), &unique_name("vb"), &ns, 3).unwrap();
        assert_eq!(rx_queue_count(veth.local()).unwrap(), 3);
        let err = set_rss_indirection_table(veth.local(), &[0, 1, 2, 0]).unwrap_err();
        assert!(matches!(err, SteeringError::NotSupported { .. }), "{err:?}");
        assert!(err.to_string().contains("no hardware steering"), "{err}");
    }
}
