//! An ixy-style userspace driver for the Intel 82599 10 GbE controller (82599 datasheet,
//! revision 3.x; section numbers below refer to it).
//!
//! Split by who uses what:
//! - [`Device::init`] runs the global initialisation of §4.6.3 once, in the control plane:
//!   reset, EEPROM and DMA handshakes, link setup (§4.6.4), receive (§4.6.7) and transmit
//!   (§4.6.8) global settings, RSS (§7.1.2.8) and Flow Director (§7.1.2.7). It leaves every
//!   queue disabled.
//! - [`IxgbeQueuePair::attach`] enables one queue pair (§4.6.7.1 / §4.6.8.1, "dynamic
//!   enabling") with rings and buffers of the caller's own, and may run in a different
//!   process from `init`: it needs only BAR0 and DMA memory, both of which can be mapped by
//!   any process (sysfs `resource0` and hugepages, or inherited VFIO descriptors, for a
//!   real NIC; the model's shared files).
//! - [`DeviceAccess`] opens a real NIC by either route: sysfs `resource0` with hugepages,
//!   or VFIO ([`vfio`]) with the IOMMU.
//! - [`DeviceControl`] changes device-wide steering at run time (RSS key, RETA entries,
//!   Flow Director filters) and reads device statistics.

mod bar;
mod control;
pub mod descriptors;
pub mod fdir;
pub mod pci;
mod queue;
pub mod regs;
pub mod vfio;

use std::fmt;
use std::time::Duration;

pub use bar::{Bar0, RegisterTimeout};
pub use control::{DeviceControl, DeviceStats, LinkStatus};
pub use pci::{AccessError, AccessMethod, DeviceAccess};
pub use queue::{IxgbeQueuePair, QueueConfig};
pub use vfio::{VfioDevice, VfioDma, VfioError, VfioFds};

use crate::dma::DmaError;
use crate::toeplitz::{KEY_LEN, MICROSOFT_RSS_KEY};

/// Errors of the 82599 driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum IxgbeError {
    /// The device did not complete a step of its initialisation in time.
    Timeout {
        /// Which step (e.g. "reset", "EEPROM auto-read").
        step: &'static str,
        /// The register polled and its last value.
        detail: RegisterTimeout,
    },
    /// Queue number out of range for the operation.
    QueueOutOfRange(u16),
    /// The queue is already enabled (owned by another queue pair, possibly in another
    /// process).
    QueueBusy(u16),
    /// The device has not been initialised by [`Device::init`].
    NotInitialised,
    /// An argument is out of range (ring size, RETA index, ...).
    InvalidArgument(String),
    /// DMA memory could not be allocated.
    Dma(DmaError),
}

impl fmt::Display for IxgbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IxgbeError::Timeout { step, detail } => write!(
                f,
                "82599 did not finish {step}: register {:#07x} reads {:#010x}",
                detail.register, detail.last_value
            ),
            IxgbeError::QueueOutOfRange(q) => write!(f, "queue {q} out of range"),
            IxgbeError::QueueBusy(q) => write!(f, "queue {q} is already enabled by another owner"),
            IxgbeError::NotInitialised => {
                write!(f, "82599 not initialised (run the control plane's Device::init first)")
            }
            IxgbeError::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            IxgbeError::Dma(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for IxgbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IxgbeError::Dma(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DmaError> for IxgbeError {
    fn from(e: DmaError) -> Self {
        IxgbeError::Dma(e)
    }
}

/// Global settings applied by [`Device::init`].
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Spread flows over queues `0..rss_queues` through RSS (0 or 1: everything to queue 0
    /// unless a Flow Director filter says otherwise). At most 16 on the 82599.
    pub rss_queues: u16,
    /// The Toeplitz key.
    pub rss_key: [u8; KEY_LEN],
    /// Enable Flow Director perfect-match filters.
    pub flow_director: bool,
    /// Accept frames for any destination MAC.
    pub promiscuous: bool,
    /// How long to wait for link up before returning (the link may come up later).
    pub link_timeout: Duration,
    /// How long to wait for each reset/initialisation handshake.
    pub step_timeout: Duration,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            rss_queues: 1,
            rss_key: MICROSOFT_RSS_KEY,
            flow_director: true,
            promiscuous: false,
            link_timeout: Duration::from_secs(10),
            step_timeout: Duration::from_secs(2),
        }
    }
}

/// An initialised 82599 port (the control plane's view).
#[derive(Debug)]
pub struct Device {
    bar: Bar0,
    link: LinkStatus,
}

/// Bucket count of the Flow Director perfect table with a 64 KiB allocation (§7.1.2.7.4).
const FDIR_MAX_LENGTH: u32 = 0xA;
/// Queue that Flow Director "drop" filters send to; unused by this driver's filters.
const FDIR_DROP_QUEUE: u32 = 127;

impl Device {
    /// Resets and initialises the port (§4.6.3), leaving all queues disabled.
    pub fn init(bar: Bar0, config: &DeviceConfig) -> Result<Self, IxgbeError> {
        if config.rss_queues > regs::RSS_MAX_QUEUES {
            return Err(IxgbeError::InvalidArgument(format!(
                "rss_queues {} > {}",
                config.rss_queues,
                regs::RSS_MAX_QUEUES
            )));
        }
        let wait = |step, reg, mask, expected| {
            bar.wait_reg32(reg, mask, expected, config.step_timeout)
                .map_err(|detail| IxgbeError::Timeout { step, detail })
        };

        // §4.6.3.1: mask all interrupts before the reset; this driver polls.
        bar.set_reg32(regs::EIMC, regs::EIMC_ALL);
        // §4.6.3.2: global reset (device + link); the bits self-clear when it is done.
        bar.set_reg32(regs::CTRL, regs::CTRL_RST_MASK);
        wait("reset", regs::CTRL, regs::CTRL_RST_MASK, 0)?;
        // §4.6.3.2: wait at least 10 ms after the reset before further accesses.
        std::thread::sleep(Duration::from_millis(10));
        // §4.6.3.1: interrupts are masked again after the reset.
        bar.set_reg32(regs::EIMC, regs::EIMC_ALL);

        // §4.6.3: wait for the EEPROM auto-read and the DMA initialisation.
        wait("EEPROM auto-read", regs::EEC, regs::EEC_ARD, regs::EEC_ARD)?;
        wait("DMA initialisation", regs::RDRXCTL, regs::RDRXCTL_DMAIDONE, regs::RDRXCTL_DMAIDONE)?;

        // §4.6.4: link setup for 10G serial (SFP+) with XAUI PMA/PMD, restart negotiation.
        let autoc = bar.get_reg32(regs::AUTOC);
        bar.set_reg32(
            regs::AUTOC,
            (autoc & !regs::AUTOC_LMS_MASK & !regs::AUTOC_10G_PMA_PMD_MASK)
                | regs::AUTOC_LMS_10G_SERIAL
                | regs::AUTOC_10G_XAUI,
        );
        bar.set_flags32(regs::AUTOC, regs::AUTOC_AN_RESTART);

        // §4.6.5 / §8.2.3.23: statistics clear on read; reading them once zeroes them.
        for reg in [regs::GPRC, regs::GPTC, regs::GORCL, regs::GORCH, regs::GOTCL, regs::GOTCH] {
            bar.get_reg32(reg);
        }
        for i in 0..8 {
            bar.get_reg32(regs::mpc(i));
        }

        init_rx(&bar, config);
        init_tx(&bar);
        if config.flow_director {
            init_flow_director(&bar, config)?;
        }
        // §4.6.7: enable receive once the global receive path is configured; queues are
        // enabled one by one later by their owners (§4.6.7.1).
        bar.set_flags32(regs::RXCTRL, regs::RXCTRL_RXEN);
        // §8.2.3.1.3: tell the firmware a driver is loaded; attach() checks it too.
        bar.set_flags32(regs::CTRL_EXT, regs::CTRL_EXT_DRV_LOAD);

        let control = DeviceControl::new(bar.clone());
        let link = control.wait_for_link(config.link_timeout);
        Ok(Device { bar, link })
    }

    /// The device's BAR0.
    pub fn bar(&self) -> &Bar0 {
        &self.bar
    }

    /// The link status seen at the end of [`Device::init`].
    pub fn initial_link(&self) -> LinkStatus {
        self.link
    }

    /// A control handle for device-wide settings.
    pub fn control(&self) -> DeviceControl {
        DeviceControl::new(self.bar.clone())
    }
}

/// §4.6.7 "Receive Initialization" (the global part).
fn init_rx(bar: &Bar0, config: &DeviceConfig) {
    // Receive stays off while it is configured.
    bar.clear_flags32(regs::RXCTRL, regs::RXCTRL_RXEN);
    // §4.6.11.3 (no DCB, no virtualisation): without DCB/VT all traffic uses packet buffer 0; give it everything.
    bar.set_reg32(regs::rxpbsize(0), regs::RXPBSIZE_128KB * 4);
    for i in 1..8 {
        bar.set_reg32(regs::rxpbsize(i), 0);
    }
    // §4.6.7: strip the CRC in both places that control it.
    bar.set_flags32(regs::HLREG0, regs::HLREG0_RXCRCSTRP);
    bar.set_flags32(regs::RDRXCTL, regs::RDRXCTL_CRCSTRIP);
    // §8.2.3.7.1: accept broadcast; promiscuous on request.
    let mut fctrl = bar.get_reg32(regs::FCTRL) | regs::FCTRL_BAM;
    if config.promiscuous {
        fctrl |= regs::FCTRL_UPE | regs::FCTRL_MPE;
    }
    bar.set_reg32(regs::FCTRL, fctrl);
    // §4.6.7: "no snoop" disabled, as the 82599 requires for correct ordering.
    bar.set_flags32(regs::CTRL_EXT, regs::CTRL_EXT_NS_DIS);
    // §7.1.2.8: RSS key, RETA round-robin over the RSS queues, hash fields, and the hash
    // reported in the descriptor (RXCSUM.PCSD).
    let control = DeviceControl::new(bar.clone());
    control.set_rss_key(&config.rss_key);
    let _ = control.spread_reta(config.rss_queues.max(1));
    bar.set_flags32(regs::RXCSUM, regs::RXCSUM_PCSD);
    let mrqc = if config.rss_queues > 1 {
        regs::MRQC_MRQE_RSS
            | regs::MRQC_RSS_FIELD_IPV4
            | regs::MRQC_RSS_FIELD_IPV4_TCP
            | regs::MRQC_RSS_FIELD_IPV4_UDP
    } else {
        0
    };
    bar.set_reg32(regs::MRQC, mrqc);
}

/// §4.6.8 "Transmit Initialization" (the global part).
fn init_tx(bar: &Bar0) {
    // CRC insertion and padding of short frames.
    bar.set_flags32(regs::HLREG0, regs::HLREG0_TXCRCEN | regs::HLREG0_TXPADEN);
    // §4.6.11.3 (no DCB, no virtualisation): one transmit packet buffer of 40 KiB without DCB.
    bar.set_reg32(regs::txpbsize(0), regs::TXPBSIZE_40KB);
    for i in 1..8 {
        bar.set_reg32(regs::txpbsize(i), 0);
    }
    // §4.6.8: required when DCB is off.
    bar.set_reg32(regs::DTXMXSZRQ, 0xFFFF);
    // §4.6.8: the descriptor arbiter must be disabled while MTQC is set, then re-enabled.
    bar.set_flags32(regs::RTTDCS, regs::RTTDCS_ARBDIS);
    bar.clear_flags32(regs::RTTDCS, regs::RTTDCS_ARBDIS);
    // §4.6.8: global transmit enable, before any TXDCTL.ENABLE.
    bar.set_flags32(regs::DMATXCTL, regs::DMATXCTL_TE);
}

/// §7.1.2.7 Flow Director initialisation for perfect-match IPv4 filters.
fn init_flow_director(bar: &Bar0, config: &DeviceConfig) -> Result<(), IxgbeError> {
    bar.set_reg32(regs::FDIRHKEY, regs::FDIR_BUCKET_HASH_KEY);
    bar.set_reg32(regs::FDIRSKEY, regs::FDIR_SIGNATURE_HASH_KEY);
    // Compare addresses, ports and protocol; ignore VLAN, pool and flex bytes. The IPv4 and
    // port mask registers hold inverted masks: 0 = compare every bit.
    bar.set_reg32(
        regs::FDIRM,
        regs::FDIRM_VLANID | regs::FDIRM_VLANP | regs::FDIRM_POOL | regs::FDIRM_FLEX,
    );
    for reg in [regs::FDIRIP4M, regs::FDIRSIP4M, regs::FDIRTCPM, regs::FDIRUDPM] {
        bar.set_reg32(reg, 0);
    }
    bar.set_reg32(
        regs::FDIRCTRL,
        regs::FDIRCTRL_PBALLOC_64K
            | regs::FDIRCTRL_PERFECT_MATCH
            | regs::FDIRCTRL_REPORT_STATUS
            | (FDIR_DROP_QUEUE << regs::FDIRCTRL_DROP_Q_SHIFT)
            | (FDIR_MAX_LENGTH << regs::FDIRCTRL_MAX_LENGTH_SHIFT)
            | (4 << regs::FDIRCTRL_FULL_THRESH_SHIFT),
    );
    bar.wait_reg32(
        regs::FDIRCTRL,
        regs::FDIRCTRL_INIT_DONE,
        regs::FDIRCTRL_INIT_DONE,
        config.step_timeout,
    )
    .map_err(|detail| IxgbeError::Timeout { step: "Flow Director initialisation", detail })
}
