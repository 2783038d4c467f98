//! NIC set-up in the control plane (DESIGN.md "NIC backends"): the plane owns the device
//! (or the model, or the XDP program) and its steering; each instance gets just enough to
//! open its own queue.
//!
//! - `sim`: the 82599 model with its wire (TAP, AF_PACKET or a Unix SEQPACKET socket), run
//!   by a [`ModelEngine`] thread in the plane; the plane initialises the device with the
//!   real driver (`Device::init`, RSS over `queues` queues) and steers with the RETA.
//! - `afxdp:IF`: the plane creates the XSKMAP and attaches the redirect program; each
//!   instance binds an AF_XDP socket to its queue and registers it in the inherited map.
//!   Steering is done in software (the instances forward foreign groups' packets), which
//!   works on veth and every NIC whose RSS table we do not program. Since the NIC's RSS
//!   still spreads frames over all its receive queues, `netpop up` refuses to serve fewer
//!   queues than the interface has (`config::check_afxdp_queues`).
//! - `ixgbe:PCI`: the plane initialises the 82599 through its BAR0; each instance maps the
//!   BAR itself and allocates its rings from hugepages. RETA steering.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ixgbe_user::afxdp::{AfXdpPort, XdpMode};
use ixgbe_user::ixgbe::{AccessMethod, Bar0, DeviceAccess};
use ixgbe_user::linux::wire::{PacketWire, TapWire};
use ixgbe_user::linux::{PacketSocket, TapDevice};
use ixgbe_user::model::ModelCounters;
use ixgbe_user::toeplitz::{KEY_LEN, MICROSOFT_RSS_KEY};
use ixgbe_user::{
    Device, DeviceConfig, DeviceControl, Model82599, ModelConfig, ModelHandle, WireBackend,
};

use crate::control::{ControlSegment, GroupState};
use crate::flowgroup::FlowGroupTable;
use crate::shm::process::dup_inheritable;
use crate::steering::{RetaSteering, SoftwareSteering, Steering};

use super::PlaneError;
use super::config::{DEFAULT_SIM_MAC, NicSpec, UpConfig, WireSpec};
use super::spawn::ChildNic;
use super::unix_wire::{UnixSeqpacketWire, WireCounters};

/// The Toeplitz key netpop programs into the NIC and shares with the instances.
pub const RSS_KEY: [u8; KEY_LEN] = MICROSOFT_RSS_KEY;

/// The running NIC backend as the plane holds it.
pub enum NicRuntime {
    /// The 82599 model.
    Sim {
        /// Engine thread (stopped on drop).
        runner: Option<ModelEngine>,
        /// Register file and DMA window.
        handle: ModelHandle,
        /// RSS / RETA access.
        control: DeviceControl,
        /// The model's own counters.
        counters: Arc<ModelCounters>,
        /// The Unix wire's counters, for `--wire unix:`.
        wire: Option<Arc<WireCounters>>,
    },
    /// AF_XDP on a Linux interface (the program is detached on drop).
    AfXdp {
        /// Program, map and attachment.
        port: AfXdpPort,
    },
    /// A real 82599.
    Ixgbe {
        /// The initialised device.
        device: Device,
        /// Its PCI address.
        pci: String,
        /// How BAR0 and DMA are reached (sysfs + hugepages, or VFIO); kept alive while the
        /// device is in use.
        access: DeviceAccess,
    },
}

impl std::fmt::Debug for NicRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NicRuntime::Sim { .. } => f.write_str("NicRuntime::Sim"),
            NicRuntime::AfXdp { port } => write!(f, "NicRuntime::AfXdp({})", port.interface()),
            NicRuntime::Ixgbe { pci, .. } => write!(f, "NicRuntime::Ixgbe({pci})"),
        }
    }
}

/// The NIC, its address and what the instances need to open their queues.
#[derive(Debug)]
pub struct Nic {
    /// The backend.
    pub runtime: NicRuntime,
    /// The MAC address the stack uses.
    pub mac: [u8; 6],
}

/// A wire for the model, and the Unix wire's counters when it is one.
type Wire = (Box<dyn WireBackend>, Option<Arc<WireCounters>>);

fn wire_for(spec: &WireSpec) -> Result<Wire, PlaneError> {
    Ok(match spec {
        WireSpec::Tap(name) => {
            let tap = TapDevice::open(name).map_err(PlaneError::io("open TAP"))?;
            (Box::new(TapWire::new(tap)), None)
        }
        WireSpec::Packet(ifname) => {
            let sock = PacketSocket::open(ifname).map_err(PlaneError::io("open AF_PACKET"))?;
            let wire = PacketWire::new(sock)
                .with_carrier_of(ifname)
                .map_err(PlaneError::io("interface carrier"))?;
            (Box::new(wire), None)
        }
        WireSpec::Unix(path) => {
            let wire = UnixSeqpacketWire::connect(path).map_err(PlaneError::io("unix wire"))?;
            let counters = wire.counters();
            (Box::new(wire), Some(counters))
        }
    })
}

impl Nic {
    /// Opens and initialises the NIC for `config.queues` queues.
    pub fn open(config: &UpConfig) -> Result<Nic, PlaneError> {
        match &config.nic {
            NicSpec::Sim => {
                let spec = config
                    .wire
                    .as_ref()
                    .ok_or_else(|| PlaneError::Config("--nic sim needs --wire".into()))?;
                let (wire, wire_counters) = wire_for(spec)?;
                let mac = config.mac.unwrap_or(DEFAULT_SIM_MAC);
                // Exactly what the instances' queues take (rings and one buffer per
                // descriptor); memory is only used as the rings cycle through it.
                let window = config.sim_dma_window()?;
                let model_config =
                    ModelConfig { mac, dma_window_bytes: window, ..ModelConfig::default() };
                let model = Model82599::new(model_config, wire).map_err(|e| {
                    PlaneError::Nic(format!(
                        "creating the model's {} MiB DMA window ({} queue(s), --rx-ring {}, \
                         --tx-ring {}): {e}",
                        window.div_ceil(1 << 20),
                        config.queues,
                        config.rx_ring,
                        config.tx_ring
                    ))
                })?;
                let handle = model.handle();
                let counters = model.counters();
                let runner = ModelEngine::spawn(model).map_err(PlaneError::io("model thread"))?;
                let device = Device::init(
                    Bar0::from_model(Arc::clone(handle.registers())),
                    &device_config(config),
                )
                .map_err(|e| PlaneError::Nic(format!("initialising the model: {e}")))?;
                let control = device.control();
                Ok(Nic {
                    runtime: NicRuntime::Sim {
                        runner: Some(runner),
                        handle,
                        control,
                        counters,
                        wire: wire_counters,
                    },
                    mac,
                })
            }
            NicSpec::AfXdp { interface } => {
                let queues = u32::from(config.queues);
                // Several queues need driver mode on veth (SKB mode reports every frame on
                // queue 0); one queue works in either, and SKB mode works everywhere.
                let port = match AfXdpPort::open(interface, XdpMode::Driver, queues) {
                    Ok(p) => p,
                    Err(e) if queues > 1 => {
                        return Err(PlaneError::Nic(format!(
                            "attaching XDP to {interface} in driver mode (needed for {queues} \
                             queues): {e}"
                        )));
                    }
                    Err(_) => AfXdpPort::open(interface, XdpMode::Skb, queues).map_err(|e| {
                        PlaneError::Nic(format!("attaching XDP to {interface}: {e}"))
                    })?,
                };
                let mac = match config.mac {
                    Some(m) => m,
                    None => ixgbe_user::linux::interface_mac(interface)
                        .map_err(PlaneError::io("interface MAC"))?,
                };
                Ok(Nic { runtime: NicRuntime::AfXdp { port }, mac })
            }
            NicSpec::Ixgbe { pci } => {
                // VFIO when the device is bound to vfio-pci, sysfs resource0 otherwise.
                let access = DeviceAccess::open(pci, AccessMethod::Auto)
                    .map_err(|e| PlaneError::Nic(format!("opening {pci}: {e}")))?;
                let device = Device::init(access.bar().clone(), &device_config(config))
                    .map_err(|e| PlaneError::Nic(format!("initialising {pci}: {e}")))?;
                let mac = match config.mac {
                    Some(m) => m,
                    None => device_mac(&device),
                };
                Ok(Nic { runtime: NicRuntime::Ixgbe { device, pci: pci.clone(), access }, mac })
            }
        }
    }

    /// The steering mechanism for this NIC, set to the control segment's initial owner
    /// table. Software steering publishes every change into the segment's table.
    pub fn steering(&self, control: &ControlSegment) -> Result<Box<dyn Steering>, PlaneError> {
        let layout = control.layout();
        let owners: Vec<u16> = control
            .flow_groups()
            .iter()
            .map(|g| u16::try_from(g.owner.load(Ordering::Relaxed)).unwrap_or(0))
            .collect();
        let table = FlowGroupTable::from_owners(owners, layout.instances())
            .map_err(|e| PlaneError::Nic(format!("initial flow-group table: {e}")))?;
        let device_control = match &self.runtime {
            NicRuntime::Sim { control, .. } => Some(control.clone()),
            NicRuntime::Ixgbe { device, .. } => Some(device.control()),
            NicRuntime::AfXdp { .. } => None,
        };
        match device_control {
            Some(dc) => {
                let mut reta = RetaSteering::new(dc, layout.groups())
                    .map_err(|e| PlaneError::Nic(format!("RETA steering: {e}")))?;
                reta.apply_table(&table).map_err(|e| PlaneError::Nic(format!("RETA: {e}")))?;
                Ok(Box::new(reta))
            }
            None => {
                let segment = ControlSegment::from_segment(Arc::clone(control.segment()))
                    .map_err(PlaneError::shm("control segment"))?;
                let publish = move |group: u32, owner: u16| {
                    if let Some(g) = segment.flow_group(group) {
                        g.owner.store(u32::from(owner), Ordering::Release);
                        g.state.store(GroupState::Active as u32, Ordering::Release);
                    }
                };
                Ok(Box::new(SoftwareSteering::new(table, publish)))
            }
        }
    }

    /// What instance `index` needs to open its queue, and the inheritable descriptors to
    /// keep open until it has been spawned.
    pub fn child_nic(&self, _index: u16) -> Result<(ChildNic, Vec<OwnedFd>), PlaneError> {
        match &self.runtime {
            NicRuntime::Sim { handle, .. } => {
                // inheritable_fds clears close-on-exec on the model's own descriptors; every
                // instance needs them, and the plane starts no other programs.
                let (regs_fd, dma_fd) =
                    handle.inheritable_fds().map_err(PlaneError::io("model fds"))?;
                Ok((ChildNic::Sim { regs_fd, dma_fd }, Vec::new()))
            }
            NicRuntime::AfXdp { port } => {
                let map = dup_inheritable(port.map().as_fd()).map_err(PlaneError::io("dup"))?;
                let child = ChildNic::AfXdp {
                    interface: port.interface().to_string(),
                    map_fd: std::os::fd::AsRawFd::as_raw_fd(&map),
                    map_entries: port.map().max_entries(),
                };
                Ok((child, vec![map]))
            }
            NicRuntime::Ixgbe { pci, access, .. } => {
                // A VFIO group opens once: children inherit the plane's fds instead.
                let vfio = match access.vfio() {
                    Some(device) => Some(
                        device.inheritable_fds().map_err(PlaneError::io("VFIO fds"))?.to_string(),
                    ),
                    None => None,
                };
                Ok((ChildNic::Ixgbe { pci: pci.clone(), vfio }, Vec::new()))
            }
        }
    }

    /// Stops the model engine (nothing for the other backends: dropping them releases
    /// the device or detaches the program).
    pub fn stop(&mut self) {
        if let NicRuntime::Sim { runner, .. } = &mut self.runtime {
            drop(runner.take());
        }
    }

    /// Frames dropped on the wire side (model: missed and no-descriptor drops).
    pub fn wire_drops(&self) -> u64 {
        match &self.runtime {
            NicRuntime::Sim { counters, wire, .. } => {
                ModelCounters::get(&counters.rx_no_descriptor_drops)
                    + wire.as_ref().map_or(0, |w| w.tx_dropped.load(Ordering::Relaxed))
            }
            _ => 0,
        }
    }
}

/// The model's engine thread. Like `ixgbe_user::ModelRunner` it steps the port, yields
/// and then naps when there is no work, but after [`DEEP_IDLE_AFTER`] without work it naps
/// [`DEEP_NAP`] instead of 100 µs, so an idle netpop costs about a thousand wake-ups per
/// second rather than ten thousand. (The model has no doorbell to block on: the driver's
/// tail writes are plain stores into shared memory.) The price is up to one deep nap of
/// latency on the first frame after a long quiet spell.
pub struct ModelEngine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Quiet time after which the engine naps [`DEEP_NAP`].
pub const DEEP_IDLE_AFTER: Duration = Duration::from_millis(50);
/// Nap of a deeply idle engine.
pub const DEEP_NAP: Duration = Duration::from_millis(1);
/// Nap of a briefly idle engine.
const SHORT_NAP: Duration = Duration::from_micros(100);
/// Idle rounds spent yielding before the first nap.
const YIELD_ROUNDS: u32 = 64;

impl std::fmt::Debug for ModelEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelEngine").finish_non_exhaustive()
    }
}

impl ModelEngine {
    /// Starts the engine thread for `model`.
    pub fn spawn(mut model: Model82599) -> std::io::Result<ModelEngine> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("82599-model".into()).spawn(move || {
            let mut idle_rounds = 0u32;
            let mut idle_since = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if model.step() > 0 {
                    idle_rounds = 0;
                    continue;
                }
                if idle_rounds == 0 {
                    idle_since = Instant::now();
                }
                idle_rounds = idle_rounds.saturating_add(1);
                if idle_rounds < YIELD_ROUNDS {
                    std::thread::yield_now();
                } else if idle_since.elapsed() < DEEP_IDLE_AFTER {
                    std::thread::sleep(SHORT_NAP);
                } else {
                    std::thread::sleep(DEEP_NAP);
                }
            }
        })?;
        Ok(ModelEngine { stop, thread: Some(thread) })
    }
}

impl Drop for ModelEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn device_config(config: &UpConfig) -> DeviceConfig {
    DeviceConfig {
        rss_queues: config.queues,
        rss_key: RSS_KEY,
        link_timeout: Duration::from_secs(5),
        ..DeviceConfig::default()
    }
}

/// The MAC the 82599 loaded into RAL0/RAH0 (datasheet §8.2.3.7.9-10).
fn device_mac(device: &Device) -> [u8; 6] {
    use ixgbe_user::ixgbe::regs;
    let low = device.bar().get_reg32(regs::ral(0)).to_le_bytes();
    let high = device.bar().get_reg32(regs::rah(0)).to_le_bytes();
    [low[0], low[1], low[2], low[3], high[0], high[1]]
}
