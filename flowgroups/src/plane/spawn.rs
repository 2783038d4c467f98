//! Starting kernel instances: the plane re-executes its own binary as
//! `netpop instance --index I ...` (exec rather than fork, because the plane is
//! multi-threaded by then: the model engine runs on its own thread), with the descriptors
//! the instance must inherit duplicated without close-on-exec and their numbers on the
//! command line (DESIGN.md "Processes").
//!
//! Inherited by every instance: the control segment memfd, its end of a Unix socketpair
//! to the plane (app fds travel there), its doorbell eventfd, and the NIC's descriptors
//! (model register file and DMA window for `sim`, the XSKMAP for `afxdp`; `ixgbe` opens
//! the PCI BAR itself). The stack secret is not put on the command line, which any user
//! can read: it is the first message on the socketpair ([`Bootstrap`]).
//!
//! # Messages on the socketpair (plane -> instance), 64 bytes each
//!
//! 1. [`Bootstrap`] once, right after the spawn: magic `"NPBS"`, version, the secret.
//! 2. Then the instance link protocol of [`crate::instance::plane_link`]: app descriptors
//!    (sent before `ControlMessage::AppAttached`), capture requests and their answers.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::{ControlMessage, ControlSegment, ControlSlot, InstanceState};
use crate::shm::process::dup_inheritable;
use crate::shm::{EventFd, RingConsumer, RingProducer};

use super::PlaneError;
use super::config::{ArgCursor, ConfigError, DEFAULT_RX_RING, DEFAULT_TX_RING, parse_ring};

/// First four bytes of the bootstrap message: "NPBS" little-endian.
pub const BOOTSTRAP_MAGIC: u32 = u32::from_le_bytes(*b"NPBS");
/// Bootstrap message version.
pub const BOOTSTRAP_VERSION: u16 = 1;
/// Length of the bootstrap message.
pub const BOOTSTRAP_LEN: usize = 64;

/// What the plane tells an instance before anything else.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bootstrap {
    /// ISN / SYN-cookie / timestamp secret, the same in every instance (connections may
    /// move between instances).
    pub secret: [u8; 16],
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap").finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// Wire form: magic, version, 2 zero bytes, secret, zeroes.
    pub fn encode(&self) -> [u8; BOOTSTRAP_LEN] {
        let mut b = [0u8; BOOTSTRAP_LEN];
        b[0..4].copy_from_slice(&BOOTSTRAP_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&BOOTSTRAP_VERSION.to_le_bytes());
        b[8..24].copy_from_slice(&self.secret);
        b
    }

    /// Parses and checks a bootstrap message.
    pub fn decode(b: &[u8; BOOTSTRAP_LEN]) -> Result<Bootstrap, &'static str> {
        if b[0..4] != BOOTSTRAP_MAGIC.to_le_bytes() || b[4..6] != BOOTSTRAP_VERSION.to_le_bytes() {
            return Err("bootstrap message: bad magic or version");
        }
        if b[6..8].iter().chain(&b[24..]).any(|&x| x != 0) {
            return Err("bootstrap message: reserved bytes set");
        }
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&b[8..24]);
        Ok(Bootstrap { secret })
    }

    /// Reads the bootstrap message from the plane socket (blocking).
    pub fn read_from(mut sock: &UnixStream) -> io::Result<Bootstrap> {
        let mut b = [0u8; BOOTSTRAP_LEN];
        sock.read_exact(&mut b)?;
        Bootstrap::decode(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// 16 random bytes from the kernel's generator.
pub fn random_secret() -> io::Result<[u8; 16]> {
    let mut s = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut s)?;
    Ok(s)
}

/// How an instance reaches its NIC queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildNic {
    /// Queue `index` of the model, through its inherited register file and DMA window.
    Sim {
        /// Register file memfd.
        regs_fd: RawFd,
        /// DMA window memfd.
        dma_fd: RawFd,
    },
    /// AF_XDP socket on queue `index` of `interface`, registered in the inherited XSKMAP.
    AfXdp {
        /// Interface name.
        interface: String,
        /// XSKMAP fd.
        map_fd: RawFd,
        /// Entries in the map.
        map_entries: u32,
    },
    /// Queue `index` of an 82599 at `pci`.
    Ixgbe {
        /// PCI address.
        pci: String,
        /// The plane's VFIO fds (`VfioFds` text form) when the device is reached through
        /// VFIO.
        vfio: Option<String>,
    },
}

/// The command line of `netpop instance` (hidden; only the plane runs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceArgs {
    /// Instance index = queue index.
    pub index: u16,
    /// The plane's pid (the instance exits if its parent is not this process).
    pub plane_pid: u32,
    /// Control segment memfd.
    pub control_fd: RawFd,
    /// The instance's end of the plane socketpair.
    pub plane_fd: RawFd,
    /// The instance's doorbell eventfd.
    pub doorbell_fd: RawFd,
    /// The other instances' doorbells (rung after forwarding frames to them).
    pub peer_doorbells: Vec<(u16, RawFd)>,
    /// The queue.
    pub nic: ChildNic,
    /// Where capture files go.
    pub capture_dir: PathBuf,
    /// CPU to pin to.
    pub core: Option<usize>,
    /// Receive and transmit descriptors of the instance's queue (`sim` and `ixgbe`).
    pub rings: (u32, u32),
}

impl InstanceArgs {
    /// Arguments after `netpop instance`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--index".to_string(),
            self.index.to_string(),
            "--plane-pid".into(),
            self.plane_pid.to_string(),
            "--control-fd".into(),
            self.control_fd.to_string(),
            "--plane-fd".into(),
            self.plane_fd.to_string(),
            "--doorbell-fd".into(),
            self.doorbell_fd.to_string(),
            "--capture-dir".into(),
            self.capture_dir.display().to_string(),
        ];
        if !self.peer_doorbells.is_empty() {
            let list: Vec<String> =
                self.peer_doorbells.iter().map(|(i, fd)| format!("{i}:{fd}")).collect();
            a.extend(["--peer-doorbells".into(), list.join(",")]);
        }
        match &self.nic {
            ChildNic::Sim { regs_fd, dma_fd } => {
                a.extend(["--nic".into(), "sim".into(), "--model-fds".into()]);
                a.push(format!("{regs_fd},{dma_fd}"));
            }
            ChildNic::AfXdp { interface, map_fd, map_entries } => {
                a.extend(["--nic".into(), format!("afxdp:{interface}")]);
                a.extend(["--xskmap".into(), format!("{map_fd},{map_entries}")]);
            }
            ChildNic::Ixgbe { pci, vfio } => {
                a.extend(["--nic".into(), format!("ixgbe:{pci}")]);
                if let Some(spec) = vfio {
                    a.extend(["--vfio-fds".into(), spec.clone()]);
                }
            }
        }
        if let Some(c) = self.core {
            a.extend(["--core".into(), c.to_string()]);
        }
        a.extend(["--rings".into(), format!("{},{}", self.rings.0, self.rings.1)]);
        a
    }

    /// Parses what [`InstanceArgs::to_args`] wrote.
    pub fn parse(args: &[String]) -> Result<InstanceArgs, ConfigError> {
        fn num<T: std::str::FromStr>(o: &'static str, v: &str) -> Result<T, ConfigError> {
            v.parse().map_err(|_| ConfigError::Invalid {
                option: o,
                value: v.to_string(),
                why: "not a number".into(),
            })
        }
        fn pair(o: &'static str, v: &str) -> Result<(i64, i64), ConfigError> {
            let (a, b) = v.split_once(',').ok_or(ConfigError::Invalid {
                option: o,
                value: v.to_string(),
                why: "expected A,B".into(),
            })?;
            Ok((num(o, a)?, num(o, b)?))
        }
        let fd = |o: &'static str, v: i64| -> Result<RawFd, ConfigError> {
            RawFd::try_from(v).ok().filter(|&f| f >= 3).ok_or(ConfigError::Invalid {
                option: o,
                value: v.to_string(),
                why: "not an inheritable descriptor number".into(),
            })
        };
        let (mut index, mut plane_pid, mut control_fd, mut plane_fd, mut doorbell_fd) =
            (None, None, None, None, None);
        let (mut nic, mut model_fds, mut xskmap, mut capture_dir, mut core) =
            (None, None, None, None, None);
        let mut peer_doorbells = Vec::new();
        let mut rings = (DEFAULT_RX_RING, DEFAULT_TX_RING);
        let mut vfio_fds: Option<String> = None;
        let mut c = ArgCursor::new(args);
        while let Some(opt) = c.next_option() {
            match opt {
                "--index" => index = Some(num::<u16>("--index", c.value("--index")?)?),
                "--plane-pid" => {
                    plane_pid = Some(num::<u32>("--plane-pid", c.value("--plane-pid")?)?)
                }
                "--control-fd" => {
                    control_fd =
                        Some(fd("--control-fd", num("--control-fd", c.value("--control-fd")?)?)?)
                }
                "--plane-fd" => {
                    plane_fd = Some(fd("--plane-fd", num("--plane-fd", c.value("--plane-fd")?)?)?)
                }
                "--doorbell-fd" => {
                    doorbell_fd =
                        Some(fd("--doorbell-fd", num("--doorbell-fd", c.value("--doorbell-fd")?)?)?)
                }
                "--nic" => nic = Some(c.value("--nic")?.to_string()),
                "--model-fds" => model_fds = Some(pair("--model-fds", c.value("--model-fds")?)?),
                "--xskmap" => xskmap = Some(pair("--xskmap", c.value("--xskmap")?)?),
                "--vfio-fds" => vfio_fds = Some(c.value("--vfio-fds")?.to_string()),
                "--capture-dir" => capture_dir = Some(PathBuf::from(c.value("--capture-dir")?)),
                "--core" => core = Some(num::<usize>("--core", c.value("--core")?)?),
                "--rings" => {
                    let v = c.value("--rings")?;
                    let (rx, tx) = v.split_once(',').ok_or(ConfigError::Invalid {
                        option: "--rings",
                        value: v.to_string(),
                        why: "expected RX,TX".into(),
                    })?;
                    rings = (parse_ring("--rings", rx)?, parse_ring("--rings", tx)?);
                }
                "--peer-doorbells" => {
                    for item in c.value("--peer-doorbells")?.split(',') {
                        let (i, f) = item.split_once(':').ok_or(ConfigError::Invalid {
                            option: "--peer-doorbells",
                            value: item.to_string(),
                            why: "expected INDEX:FD".into(),
                        })?;
                        let f = fd("--peer-doorbells", num("--peer-doorbells", f)?)?;
                        peer_doorbells.push((num::<u16>("--peer-doorbells", i)?, f));
                    }
                }
                other => return Err(ConfigError::UnknownOption(other.to_string())),
            }
        }
        let nic = nic.ok_or(ConfigError::Required("--nic"))?;
        let nic = match nic.split_once(':') {
            None if nic == "sim" => {
                let (r, d) = model_fds.ok_or(ConfigError::Required("--model-fds"))?;
                ChildNic::Sim { regs_fd: fd("--model-fds", r)?, dma_fd: fd("--model-fds", d)? }
            }
            Some(("afxdp", interface)) => {
                let (m, n) = xskmap.ok_or(ConfigError::Required("--xskmap"))?;
                let map_entries = u32::try_from(n).map_err(|_| ConfigError::Invalid {
                    option: "--xskmap",
                    value: n.to_string(),
                    why: "entry count out of range".into(),
                })?;
                ChildNic::AfXdp {
                    interface: interface.to_string(),
                    map_fd: fd("--xskmap", m)?,
                    map_entries,
                }
            }
            Some(("ixgbe", pci)) => {
                ChildNic::Ixgbe { pci: pci.to_string(), vfio: vfio_fds.clone() }
            }
            _ => {
                return Err(ConfigError::Invalid {
                    option: "--nic",
                    value: nic,
                    why: "unknown NIC".into(),
                });
            }
        };
        Ok(InstanceArgs {
            index: index.ok_or(ConfigError::Required("--index"))?,
            plane_pid: plane_pid.ok_or(ConfigError::Required("--plane-pid"))?,
            control_fd: control_fd.ok_or(ConfigError::Required("--control-fd"))?,
            plane_fd: plane_fd.ok_or(ConfigError::Required("--plane-fd"))?,
            doorbell_fd: doorbell_fd.ok_or(ConfigError::Required("--doorbell-fd"))?,
            peer_doorbells,
            nic,
            capture_dir: capture_dir.ok_or(ConfigError::Required("--capture-dir"))?,
            core,
            rings,
        })
    }
}

/// The plane's handle on one running (or dead) kernel instance.
#[derive(Debug)]
pub struct InstanceProc {
    /// Instance index.
    pub index: u16,
    child: Option<Child>,
    /// Process id.
    pub pid: u32,
    /// The plane's end of the socketpair.
    pub link: UnixStream,
    /// The instance's doorbell (the plane rings it after queueing a control message; apps
    /// get a copy).
    pub doorbell: EventFd,
    to_instance: RingProducer<ControlSlot>,
    from_instance: RingConsumer<ControlSlot>,
    /// Control messages sent to the instance.
    pub control_sent: AtomicU64,
    /// Control messages received from it.
    pub control_received: AtomicU64,
    /// Control messages dropped because its ring was full.
    pub control_dropped: AtomicU64,
    /// How it ended, once it did.
    pub exit: Option<ExitStatus>,
    /// Declared dead (exited, or killed for missing heartbeats).
    pub dead: bool,
}

impl InstanceProc {
    /// Spawns instance `index` of `exe`. The descriptors named in `nic` must already be
    /// inheritable; the others (control segment, socketpair end, `doorbells` — one per
    /// instance, `index`'s own and its peers') are duplicated inheritable here and closed
    /// in this process once the child has them.
    pub fn spawn(
        exe: &std::path::Path,
        index: u16,
        control: &ControlSegment,
        doorbells: &[EventFd],
        nic: ChildNic,
        capture_dir: PathBuf,
        core: Option<usize>,
        rings: (u32, u32),
        secret: [u8; 16],
    ) -> Result<InstanceProc, PlaneError> {
        let (link, theirs) = UnixStream::pair().map_err(PlaneError::io("socketpair"))?;
        let doorbell = doorbells
            .get(usize::from(index))
            .ok_or_else(|| PlaneError::Instance(format!("no doorbell for instance {index}")))?
            .try_clone()
            .map_err(PlaneError::io("dup"))?;
        let mut peers = Vec::new();
        for (i, d) in (0u16..).zip(doorbells).filter(|(i, _)| *i != index) {
            peers.push((i, dup_inheritable(d.as_fd()).map_err(PlaneError::io("dup"))?));
        }
        let to_instance = control
            .plane_to_instance(index)
            .and_then(|h| h.producer())
            .map_err(PlaneError::shm("control ring"))?;
        let from_instance = control
            .instance_to_plane(index)
            .and_then(|h| h.consumer())
            .map_err(PlaneError::shm("control ring"))?;
        let control_fd = dup_inheritable(control.fd()).map_err(PlaneError::io("dup"))?;
        let plane_fd = dup_inheritable(theirs.as_fd()).map_err(PlaneError::io("dup"))?;
        let doorbell_fd = dup_inheritable(doorbell.as_fd()).map_err(PlaneError::io("dup"))?;
        let args = InstanceArgs {
            index,
            plane_pid: std::process::id(),
            control_fd: control_fd.as_raw_fd(),
            plane_fd: plane_fd.as_raw_fd(),
            doorbell_fd: doorbell_fd.as_raw_fd(),
            peer_doorbells: peers.iter().map(|(i, fd)| (*i, fd.as_raw_fd())).collect(),
            nic,
            capture_dir,
            core,
            rings,
        };
        if let Some(block) = control.instance(index) {
            block.state.store(InstanceState::Starting as u32, Ordering::Release);
        }
        let child = Command::new(exe)
            .arg("instance")
            .args(args.to_args())
            .stdin(Stdio::null())
            .spawn()
            .map_err(PlaneError::io("spawn instance"))?;
        // The child has its copies now; ours must not leak into the next instance.
        drop((control_fd, plane_fd, doorbell_fd, theirs, peers));
        let pid = child.id();
        if let Some(block) = control.instance(index) {
            block.pid.store(pid, Ordering::Release);
        }
        (&link).write_all(&Bootstrap { secret }.encode()).map_err(PlaneError::io("bootstrap"))?;
        Ok(InstanceProc {
            index,
            child: Some(child),
            pid,
            link,
            doorbell,
            to_instance,
            from_instance,
            control_sent: AtomicU64::new(0),
            control_received: AtomicU64::new(0),
            control_dropped: AtomicU64::new(0),
            exit: None,
            dead: false,
        })
    }

    /// Queues a control message and rings the doorbell. False if the ring was full or the
    /// instance is dead (the message is dropped and counted).
    pub fn send(&mut self, msg: ControlMessage) -> bool {
        if self.dead {
            return false;
        }
        let pushed = matches!(self.to_instance.push(&msg.encode()), Ok(true));
        if pushed {
            self.control_sent.fetch_add(1, Ordering::Relaxed);
            // A failed write only means the instance already has a wake-up pending or is
            // gone; health checks notice the latter.
            let _ = self.doorbell.notify();
        } else {
            self.control_dropped.fetch_add(1, Ordering::Relaxed);
        }
        pushed
    }

    /// Takes the next message the instance sent, if any (undecodable slots are counted and
    /// skipped by the caller).
    pub fn receive(&mut self) -> Option<ControlSlot> {
        let slot = self.from_instance.pop().ok().flatten()?;
        self.control_received.fetch_add(1, Ordering::Relaxed);
        Some(slot)
    }

    /// Non-blocking check whether the process ended; returns its status the first time.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return None;
        }
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.exit = Some(status);
        Some(status)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.poll_exit();
        self.exit.is_none()
    }

    /// SIGKILLs the process (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() {
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    self.exit = Some(status);
                }
            }
        }
    }
}

impl Drop for InstanceProc {
    fn drop(&mut self) {
        // Never leave an instance behind (and never a zombie).
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_round_trips_and_rejects_garbage() {
        let b = Bootstrap { secret: [9; 16] };
        let wire = b.encode();
        assert_eq!(Bootstrap::decode(&wire), Ok(b));
        let mut bad = wire;
        bad[0] ^= 1;
        assert!(Bootstrap::decode(&bad).is_err());
        let mut bad = wire;
        bad[40] = 1;
        assert!(Bootstrap::decode(&bad).is_err());
        assert!(!format!("{b:?}").contains('9'), "the secret is not printed");
        assert_ne!(random_secret().unwrap(), random_secret().unwrap());
    }

    #[test]
    fn instance_args_round_trip() {
        for nic in [
            ChildNic::Sim { regs_fd: 5, dma_fd: 6 },
            ChildNic::AfXdp { interface: "veth0".into(), map_fd: 7, map_entries: 4 },
            ChildNic::Ixgbe {
                pci: "0000:03:00.0".into(),
                vfio: Some("container=3,group=4,device=5,iova=6".into()),
            },
        ] {
            let a = InstanceArgs {
                index: 3,
                plane_pid: 1234,
                control_fd: 10,
                plane_fd: 11,
                doorbell_fd: 12,
                peer_doorbells: vec![(0, 13), (2, 14)],
                nic,
                capture_dir: PathBuf::from("/run/netpop/x.capture"),
                core: Some(1),
                rings: (4096, 64),
            };
            assert_eq!(InstanceArgs::parse(&a.to_args()), Ok(a));
        }
        let mut bad = InstanceArgs {
            index: 0,
            plane_pid: 1,
            control_fd: 10,
            plane_fd: 11,
            doorbell_fd: 12,
            peer_doorbells: Vec::new(),
            nic: ChildNic::Ixgbe { pci: "x".into(), vfio: None },
            capture_dir: PathBuf::new(),
            core: None,
            rings: (512, 512),
        }
        .to_args();
        bad[5] = "1".into(); // --control-fd 1: stdout is not inheritable state
        assert!(InstanceArgs::parse(&bad).is_err());
    }
}
