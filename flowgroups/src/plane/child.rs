//! `netpop instance ...`: the process the plane starts for each queue (see [`super::spawn`]
//! for what it inherits). It claims the inherited descriptors, reads the bootstrap message,
//! opens its NIC queue, builds an `InstanceSetup` and runs the kernel instance until the
//! plane sends `Shutdown` (or dies: the instance asks for SIGKILL when its parent exits).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use ixgbe_user::afxdp::{XskConfig, XskMap, XskSocket};
use ixgbe_user::ixgbe::{AccessMethod, DeviceAccess, VfioDevice};
use ixgbe_user::ixgbe::{Bar0, QueueConfig};
use ixgbe_user::{IxgbeQueuePair, ModelHandle, QueuePair};
use tcp_core::stack::StackConfig;
use tcp_core::wire::EthernetAddress;

use crate::control::ControlSegment;
use crate::flowgroup::FlowGroupConfig;
use crate::instance::{InstanceSetup, KernelInstance};
use crate::shm::EventFd;
use crate::shm::process::{claim_inherited_fd, die_with_parent};
use crate::shm::sys::pin_to_core;

use super::PlaneError;
use super::config::PACKET_BUFFER_BYTES;
use super::spawn::{Bootstrap, ChildNic, InstanceArgs};

/// Runs one kernel instance from the arguments the plane passed.
pub fn run_instance(args: &[String]) -> Result<(), PlaneError> {
    let args = InstanceArgs::parse(args)?;
    if !die_with_parent(args.plane_pid).map_err(PlaneError::io("prctl"))? {
        return Err(PlaneError::Instance("the control plane is gone".into()));
    }
    if let Some(core) = args.core {
        pin_to_core(core).map_err(PlaneError::io("pinning to a CPU"))?;
    }
    let mut peers = Vec::new();
    for &(i, fd) in &args.peer_doorbells {
        let fd = claim_inherited_fd(fd).map_err(PlaneError::io("peer doorbell"))?;
        peers.push((i, EventFd::from_fd(fd).map_err(PlaneError::io("peer doorbell"))?));
    }
    let setup = build_setup(&args)?;
    let mut instance = KernelInstance::new(setup)
        .map_err(|e| PlaneError::Instance(format!("instance {}: {e}", args.index)))?;
    instance.set_peer_doorbells(peers);
    instance.run().map_err(|e| PlaneError::Instance(format!("instance {}: {e}", args.index)))
}

/// Everything the instance needs, from the inherited descriptors and the control segment.
pub fn build_setup(args: &InstanceArgs) -> Result<InstanceSetup, PlaneError> {
    let claim = |fd| claim_inherited_fd(fd).map_err(PlaneError::io("inherited descriptor"));
    let control = ControlSegment::open(claim(args.control_fd)?)
        .map_err(PlaneError::shm("control segment"))?;
    let plane = UnixStream::from(claim(args.plane_fd)?);
    let doorbell =
        EventFd::from_fd(claim(args.doorbell_fd)?).map_err(PlaneError::io("doorbell"))?;
    if args.index >= control.layout().instances() {
        return Err(PlaneError::Instance(format!(
            "instance index {} but the control segment has {} instances",
            args.index,
            control.layout().instances()
        )));
    }
    let boot = Bootstrap::read_from(&plane).map_err(PlaneError::io("bootstrap message"))?;
    let queue = open_queue(args)?;
    let c = *control.config();
    let mut stack =
        StackConfig::new(EthernetAddress(c.mac), Ipv4Addr::from(c.ip), c.prefix_len, boot.secret);
    stack.gateway = (c.gateway != [0; 4]).then(|| Ipv4Addr::from(c.gateway));
    if c.mtu != 0 {
        stack.mtu = usize::from(c.mtu);
    }
    let flow_groups = FlowGroupConfig::new(control.layout().groups(), c.rss_key)
        .map_err(|e| PlaneError::Instance(format!("flow groups: {e}")))?;
    Ok(InstanceSetup {
        index: args.index,
        control,
        plane,
        doorbell,
        queue,
        stack,
        flow_groups,
        capture_dir: args.capture_dir.clone(),
    })
}

/// The rings the plane chose (`netpop up --rx-ring/--tx-ring`) with the driver's buffers.
fn queue_config(args: &InstanceArgs) -> QueueConfig {
    QueueConfig {
        rx_ring_size: args.rings.0 as usize,
        tx_ring_size: args.rings.1 as usize,
        buffer_size: PACKET_BUFFER_BYTES,
        ..QueueConfig::default()
    }
}

fn open_queue(args: &InstanceArgs) -> Result<Box<dyn QueuePair>, PlaneError> {
    let nic_err = |e: String| PlaneError::Nic(format!("instance {}: {e}", args.index));
    match &args.nic {
        ChildNic::Sim { regs_fd, dma_fd } => {
            // open_inherited reopens through /proc/self/fd; the inherited numbers are then
            // closed so they do not leak into anything this process might start.
            let handle = ModelHandle::open_inherited(*regs_fd, *dma_fd)
                .map_err(|e| nic_err(format!("model: {e}")))?;
            for fd in [*regs_fd, *dma_fd] {
                drop(claim_inherited_fd(fd));
            }
            let bar = Bar0::from_model(Arc::clone(handle.registers()));
            let qp = IxgbeQueuePair::attach(bar, handle.dma(), args.index, &queue_config(args))
                .map_err(|e| nic_err(format!("queue {}: {e}", args.index)))?;
            Ok(Box::new(qp))
        }
        ChildNic::AfXdp { interface, map_fd, map_entries } => {
            let map = XskMap::from_fd(
                claim_inherited_fd(*map_fd).map_err(PlaneError::io("XSKMAP fd"))?,
                *map_entries,
            );
            let socket = XskSocket::bind(interface, u32::from(args.index), &XskConfig::default())
                .map_err(|e| nic_err(format!("AF_XDP socket: {e}")))?;
            map.insert(u32::from(args.index), socket.as_fd())
                .map_err(|e| nic_err(format!("XSKMAP: {e}")))?;
            Ok(Box::new(socket))
        }
        ChildNic::Ixgbe { pci, vfio } => {
            let access = match vfio {
                // The plane opened the VFIO group; a second open would fail (GroupBusy).
                Some(spec) => {
                    let fds = spec.parse().map_err(|e| nic_err(format!("--vfio-fds: {e}")))?;
                    let device = VfioDevice::from_inherited(pci, fds)
                        .map_err(|e| nic_err(format!("{pci}: {e}")))?;
                    DeviceAccess::from_vfio(device).map_err(|e| nic_err(format!("{pci}: {e}")))?
                }
                None => DeviceAccess::open(pci, AccessMethod::Sysfs)
                    .map_err(|e| nic_err(format!("{pci}: {e}")))?,
            };
            let dma = access.dma().map_err(|e| nic_err(format!("DMA memory: {e}")))?;
            let qp = IxgbeQueuePair::attach(
                access.bar().clone(),
                &*dma,
                args.index,
                &queue_config(args),
            )
            .map_err(|e| nic_err(format!("queue {}: {e}", args.index)))?;
            // The queue keeps its BAR0 mapping and DMA regions alive; `access` only holds
            // what the open needed.
            Ok(Box::new(qp))
        }
    }
}
