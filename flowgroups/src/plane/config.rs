//! `netpop up` configuration: parsing the command line and checking every value before
//! anything is created, so that a mistake is reported in words a user can act on rather
//! than as a failure halfway through start-up (DESIGN.md "Processes", "NIC backends").

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::balancer::BalancerPolicy;
use crate::channel::AppLayout;
use crate::control::{MAX_GROUPS, MAX_INSTANCES};
use crate::flowgroup::DEFAULT_GROUPS;
use crate::shm::process::{effective_uid, group_id};
use crate::steering::RetaSteering;
use ixgbe_user::{ModelConfig, QueueConfig};

/// Default netpop name (socket `<dir>/netpop.sock`).
pub const DEFAULT_NAME: &str = "netpop";
/// Default MAC of a model port: locally administered, unicast.
pub const DEFAULT_SIM_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x82, 0x59, 0x90];
/// App segment defaults (see [`UpConfig::app_layout`]).
pub const DEFAULT_APP_SOCKETS: u32 = 1024;
/// Slots of each app request and completion ring.
pub const DEFAULT_APP_RING_SLOTS: u32 = 256;
/// Bytes of each socket's receive and transmit ring in an app segment.
pub const DEFAULT_APP_SOCKET_BUFFER: u32 = 64 * 1024;
/// Receive descriptors per instance queue. A burst of SYNs from a thousand clients lands
/// faster than one instance drains it, and the driver sets SRRCTL.DROP_EN, so a ring of
/// 512 (the driver's default) dropped about 1,400 SYNs per run of the end-to-end benchmark
/// at concurrency 1,000, each costing its client a 1 s retransmission (BENCHMARKS.md).
pub const DEFAULT_RX_RING: u32 = 4096;
/// Transmit descriptors per instance queue. A full transmit ring does not lose frames (the
/// stack keeps them until a descriptor frees), so it needs no more than the driver's default.
pub const DEFAULT_TX_RING: u32 = 512;
/// Smallest ring: RDLEN and TDLEN count bytes in multiples of 128, i.e. 8 descriptors of
/// 16 bytes (82599 datasheet §8.2.3.8.3, §8.2.3.9.7).
pub const MIN_RING: u32 = 8;
/// Largest ring. The 82599 is validated with rings of up to 8K descriptors (the note on
/// RDLEN/TDLEN; Linux's ixgbe uses the same limit, `IXGBE_MAX_RXD_82599`), but the ixgbe-user
/// driver, which also drives the model, takes at most 4096.
pub const MAX_RING: u32 = 4096;
/// Bytes of each packet buffer of an instance queue (the driver's default, SRRCTL.BSIZEPKT
/// 2 KiB: a 1,514-byte frame fits).
pub const PACKET_BUFFER_BYTES: usize = 2048;

/// Mode of the control socket when `--socket-group` is given without `--socket-mode`:
/// owner and group may connect, others may not.
pub const GROUP_SOCKET_MODE: u32 = 0o660;

/// Which NIC backend serves the queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicSpec {
    /// The 82599 register-level model, its wire given by `--wire`.
    Sim,
    /// An existing Linux interface through AF_XDP.
    AfXdp {
        /// Interface name.
        interface: String,
    },
    /// A real 82599 through its PCI BAR and hugepage DMA memory.
    Ixgbe {
        /// PCI address, `DDDD:BB:DD.F`.
        pci: String,
    },
}

impl fmt::Display for NicSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicSpec::Sim => f.write_str("sim"),
            NicSpec::AfXdp { interface } => write!(f, "afxdp:{interface}"),
            NicSpec::Ixgbe { pci } => write!(f, "ixgbe:{pci}"),
        }
    }
}

/// The wire of the model port (`--nic sim` only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireSpec {
    /// A TAP interface this process creates (root).
    Tap(String),
    /// An existing interface through an AF_PACKET socket (root).
    Packet(String),
    /// A SOCK_SEQPACKET Unix socket connected to this path, one frame per record (no
    /// privileges; the peer listens).
    Unix(PathBuf),
}

impl fmt::Display for WireSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireSpec::Tap(n) => write!(f, "tap:{n}"),
            WireSpec::Packet(n) => write!(f, "packet:{n}"),
            WireSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Everything `netpop up` was asked to do, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpConfig {
    /// Name of this netpop (socket and segment names).
    pub name: String,
    /// NIC backend.
    pub nic: NicSpec,
    /// Wire of the model (`Some` exactly when `nic` is `Sim`).
    pub wire: Option<WireSpec>,
    /// Kernel instances = queue pairs.
    pub queues: u16,
    /// Our address.
    pub ip: Ipv4Addr,
    /// Prefix length of our subnet.
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// MAC address (`None`: the NIC's own, or [`DEFAULT_SIM_MAC`] for the model).
    pub mac: Option<[u8; 6]>,
    /// Link MTU.
    pub mtu: u16,
    /// Flow groups.
    pub groups: u32,
    /// Balancer policy.
    pub policy: BalancerPolicy,
    /// CPUs to pin instances to (instance `i` on `cores[i % len]`); empty: no pinning.
    pub cores: Vec<usize>,
    /// Directory of the control socket.
    pub socket_dir: PathBuf,
    /// Group to give the control socket (`--socket-group`), so that apps running as
    /// another user of that group can register; `None`: the creator's group.
    pub socket_group: Option<u32>,
    /// Permission bits of the control socket (`--socket-mode`); `None`: the umask's
    /// default, or [`GROUP_SOCKET_MODE`] when a group is given. See
    /// [`UpConfig::socket_mode_to_apply`].
    pub socket_mode: Option<u32>,
    /// Stay in the foreground instead of daemonising.
    pub foreground: bool,
    /// App segment layout numbers (instances filled in from `queues`).
    pub app_sockets: u32,
    /// See [`UpConfig::app_sockets`].
    pub app_ring_slots: u32,
    /// See [`UpConfig::app_sockets`].
    pub app_socket_buffer: u32,
    /// Receive descriptors of each instance's queue (`--rx-ring`; `sim` and `ixgbe`).
    pub rx_ring: u32,
    /// Transmit descriptors of each instance's queue (`--tx-ring`; `sim` and `ixgbe`).
    pub tx_ring: u32,
}

impl UpConfig {
    /// The control socket's path.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.socket_dir, &self.name)
    }

    /// The mode the control socket must get before anyone can connect, if any: the
    /// `--socket-mode` given, else [`GROUP_SOCKET_MODE`] when `--socket-group` was given
    /// (connecting to a Unix socket needs write permission, which the umask's default
    /// does not give the group).
    pub fn socket_mode_to_apply(&self) -> Option<u32> {
        self.socket_mode.or(self.socket_group.map(|_| GROUP_SOCKET_MODE))
    }

    /// Where instances write capture files.
    pub fn capture_dir(&self) -> PathBuf {
        self.socket_dir.join(format!("{}.capture", self.name))
    }

    /// The layout of every app segment.
    pub fn app_layout(&self) -> AppLayout {
        AppLayout {
            instances: self.queues,
            sockets: self.app_sockets,
            ring_slots: self.app_ring_slots,
            socket_buffer: self.app_socket_buffer,
        }
    }

    /// The ring and buffer sizes every instance attaches its 82599 (or model) queue with.
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            rx_ring_size: self.rx_ring as usize,
            tx_ring_size: self.tx_ring as usize,
            buffer_size: PACKET_BUFFER_BYTES,
            ..QueueConfig::default()
        }
    }

    /// Bytes of DMA window the model needs so that every instance can attach its queue:
    /// per queue both rings (16 bytes a descriptor) and one packet buffer per descriptor.
    pub fn sim_dma_window(&self) -> Result<usize, ConfigError> {
        ModelConfig::dma_window_for(usize::from(self.queues), &self.queue_config()).ok_or_else(
            || {
                ConfigError::Conflict(format!(
                    "--queues {} with --rx-ring {} and --tx-ring {}: the DMA memory size \
                     overflows",
                    self.queues, self.rx_ring, self.tx_ring
                ))
            },
        )
    }

    /// `A.B.C.D/P`.
    pub fn ip_with_prefix(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }

    /// Arguments that make another `netpop up` (the daemon) run this same configuration.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--name".to_string(),
            self.name.clone(),
            "--nic".into(),
            self.nic.to_string(),
            "--queues".into(),
            self.queues.to_string(),
            "--ip".into(),
            self.ip_with_prefix(),
            "--mtu".into(),
            self.mtu.to_string(),
            "--groups".into(),
            self.groups.to_string(),
            "--policy".into(),
            self.policy.to_string(),
            "--socket-dir".into(),
            self.socket_dir.display().to_string(),
            "--app-sockets".into(),
            self.app_sockets.to_string(),
            "--app-ring-slots".into(),
            self.app_ring_slots.to_string(),
            "--app-socket-buffer".into(),
            self.app_socket_buffer.to_string(),
            "--rx-ring".into(),
            self.rx_ring.to_string(),
            "--tx-ring".into(),
            self.tx_ring.to_string(),
        ];
        if let Some(w) = &self.wire {
            a.extend(["--wire".into(), w.to_string()]);
        }
        if let Some(g) = self.gateway {
            a.extend(["--gateway".into(), g.to_string()]);
        }
        if let Some(m) = self.mac {
            a.extend(["--mac".into(), format_mac(&m)]);
        }
        if !self.cores.is_empty() {
            let list: Vec<String> = self.cores.iter().map(usize::to_string).collect();
            a.extend(["--cores".into(), list.join(",")]);
        }
        if let Some(g) = self.socket_group {
            a.extend(["--socket-group".into(), g.to_string()]);
        }
        if let Some(m) = self.socket_mode {
            a.extend(["--socket-mode".into(), format!("{m:04o}")]);
        }
        if self.foreground {
            a.push("--foreground".into());
        }
        a
    }
}

/// `<dir>/<name>.sock`.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// The default socket directory: `/run/netpop` for root, else `$XDG_RUNTIME_DIR/netpop`,
/// else `/tmp/netpop-$UID`.
pub fn default_socket_dir() -> PathBuf {
    let uid = effective_uid();
    if uid == 0 {
        return PathBuf::from("/run/netpop");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("netpop"),
        _ => PathBuf::from(format!("/tmp/netpop-{uid}")),
    }
}

/// A configuration mistake, named so that the user knows which option to change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option this command does not have.
    UnknownOption(String),
    /// An option without its value.
    MissingValue(&'static str),
    /// A required option was not given.
    Required(&'static str),
    /// A value that does not parse or is out of range: option, value, why.
    Invalid {
        /// The option.
        option: &'static str,
        /// What was given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// Options that do not fit together.
    Conflict(String),
    /// Something the system lacks (privileges, interface, hugepages, ...).
    Environment(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownOption(o) => write!(f, "unknown option '{o}'"),
            ConfigError::MissingValue(o) => write!(f, "option {o} needs a value"),
            ConfigError::Required(o) => write!(f, "option {o} is required"),
            ConfigError::Invalid { option, value, why } => {
                write!(f, "invalid {option} '{value}': {why}")
            }
            ConfigError::Conflict(why) | ConfigError::Environment(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(option: &'static str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { option, value: value.to_string(), why: why.into() }
}

/// Walks `--option value`, `--option=value` and `--flag` arguments.
#[derive(Debug)]
pub struct ArgCursor<'a> {
    args: &'a [String],
    at: usize,
    pending: Option<(&'a str, &'a str)>,
}

impl<'a> ArgCursor<'a> {
    /// A cursor over `args` (without the command name).
    pub fn new(args: &'a [String]) -> Self {
        ArgCursor { args, at: 0, pending: None }
    }

    /// The next option name, or `None` at the end.
    pub fn next_option(&mut self) -> Option<&'a str> {
        let arg = self.args.get(self.at)?;
        self.at += 1;
        if let Some((name, value)) = arg.split_once('=').filter(|(n, _)| n.starts_with("--")) {
            self.pending = Some((name, value));
            return Some(name);
        }
        self.pending = None;
        Some(arg.as_str())
    }

    /// The value of the option just returned.
    pub fn value(&mut self, option: &'static str) -> Result<&'a str, ConfigError> {
        if let Some((_, v)) = self.pending.take() {
            return Ok(v);
        }
        let v = self.args.get(self.at).ok_or(ConfigError::MissingValue(option))?;
        self.at += 1;
        Ok(v.as_str())
    }
}

fn parse_num<T: std::str::FromStr>(option: &'static str, v: &str) -> Result<T, ConfigError> {
    v.parse().map_err(|_| invalid(option, v, "not a number"))
}

/// Parses `A.B.C.D/P` (P in 1..=32) and refuses addresses a host cannot use.
pub fn parse_ip_prefix(v: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let (addr, prefix) = v
        .split_once('/')
        .ok_or_else(|| invalid("--ip", v, "expected A.B.C.D/PREFIX, for example 10.0.0.2/24"))?;
    let ip: Ipv4Addr = addr.parse().map_err(|_| invalid("--ip", v, "not an IPv4 address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid("--ip", v, "prefix is not a number"))?;
    if !(1..=32).contains(&prefix) {
        return Err(invalid("--ip", v, "prefix length must be 1..32"));
    }
    check_host_address("--ip", v, ip)?;
    if prefix < 31 {
        let mask = u32::MAX << (32 - u32::from(prefix));
        let host = u32::from(ip) & !mask;
        if host == 0 || host == !mask {
            return Err(invalid("--ip", v, "that is the subnet's network or broadcast address"));
        }
    }
    Ok((ip, prefix))
}

fn check_host_address(option: &'static str, v: &str, ip: Ipv4Addr) -> Result<(), ConfigError> {
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        return Err(invalid(option, v, "not a usable unicast host address"));
    }
    Ok(())
}

/// Parses `aa:bb:cc:dd:ee:ff`; refuses multicast and all-zero addresses.
pub fn parse_mac(v: &str) -> Result<[u8; 6], ConfigError> {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() != 6 {
        return Err(invalid("--mac", v, "expected six hex octets like 02:00:00:00:00:01"));
    }
    let mut mac = [0u8; 6];
    for (dst, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(invalid("--mac", v, "each octet is two hex digits"));
        }
        *dst = u8::from_str_radix(p, 16).map_err(|_| invalid("--mac", v, "not hexadecimal"))?;
    }
    if mac[0] & 1 != 0 {
        return Err(invalid("--mac", v, "a multicast address cannot be an interface address"));
    }
    if mac == [0; 6] {
        return Err(invalid("--mac", v, "the all-zero address is not valid"));
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Parses a CPU list such as `0,2-3`.
pub fn parse_cores(v: &str) -> Result<Vec<usize>, ConfigError> {
    let mut cores = Vec::new();
    for part in v.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_num::<usize>("--cores", a)?, parse_num::<usize>("--cores", b)?),
            None => {
                let c = parse_num::<usize>("--cores", part)?;
                (c, c)
            }
        };
        if lo > hi || hi - lo > 1024 {
            return Err(invalid("--cores", v, "a range must go upwards"));
        }
        cores.extend(lo..=hi);
    }
    if cores.is_empty() {
        return Err(invalid("--cores", v, "empty list"));
    }
    Ok(cores)
}

/// `--rx-ring N` / `--tx-ring N`: a power of two in [`MIN_RING`]..=[`MAX_RING`].
pub fn parse_ring(option: &'static str, v: &str) -> Result<u32, ConfigError> {
    let n: u32 = parse_num(option, v)?;
    if !n.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&n) {
        let why = format!(
            "descriptors per ring: a power of two from {MIN_RING} (the 82599 counts ring \
             lengths in 128-byte units) to {MAX_RING} (what ixgbe-user's driver takes; the \
             82599 itself is validated up to 8192)"
        );
        return Err(invalid(option, v, why));
    }
    Ok(n)
}

fn parse_nic(v: &str) -> Result<NicSpec, ConfigError> {
    match v.split_once(':') {
        None if v == "sim" => Ok(NicSpec::Sim),
        Some(("afxdp", ifname)) if !ifname.is_empty() => {
            Ok(NicSpec::AfXdp { interface: ifname.to_string() })
        }
        Some(("ixgbe", pci)) if !pci.is_empty() => Ok(NicSpec::Ixgbe { pci: pci.to_string() }),
        _ => Err(invalid("--nic", v, "expected sim, afxdp:IFNAME or ixgbe:PCI-ADDRESS")),
    }
}

fn parse_wire(v: &str) -> Result<WireSpec, ConfigError> {
    match v.split_once(':') {
        Some(("tap", n)) if !n.is_empty() => Ok(WireSpec::Tap(n.to_string())),
        Some(("packet", n)) if !n.is_empty() => Ok(WireSpec::Packet(n.to_string())),
        Some(("unix", p)) if !p.is_empty() => Ok(WireSpec::Unix(PathBuf::from(p))),
        _ => Err(invalid("--wire", v, "expected tap:NAME, packet:IFNAME or unix:PATH")),
    }
}

/// Checks a netpop name: 1..=32 characters of `[A-Za-z0-9_-]` (it becomes part of file
/// and segment names).
pub fn check_name(v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(invalid("--name", v, "use 1-32 letters, digits, '-' or '_'")) }
}

/// `--socket-group NAME|GID`: a group id, or a group name looked up in the system's group
/// database now, so that a typo is reported before anything starts.
pub fn parse_socket_group(v: &str) -> Result<u32, ConfigError> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // chown(2) reads (gid_t)-1 as "leave the group alone".
        return v
            .parse::<u32>()
            .ok()
            .filter(|&g| g != u32::MAX)
            .ok_or_else(|| invalid("--socket-group", v, "group id out of range"));
    }
    if v.is_empty() || v.contains([':', '/', '\0']) || v.chars().any(char::is_whitespace) {
        return Err(invalid("--socket-group", v, "expected a group name or a numeric group id"));
    }
    match group_id(v) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => Err(invalid(
            "--socket-group",
            v,
            "no such group (see getent group; a numeric group id is taken as it is)",
        )),
        Err(e) => Err(invalid("--socket-group", v, format!("cannot look the group up: {e}"))),
    }
}

/// `--socket-mode OCTAL`: permission bits, 0 to 0777 in octal (`660`, `0660` or `0o660`).
/// Set-id and sticky bits mean nothing on a socket and are refused.
pub fn parse_socket_mode(v: &str) -> Result<u32, ConfigError> {
    let digits = v.strip_prefix("0o").unwrap_or(v);
    let mode = (!digits.is_empty() && digits.len() <= 4)
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten()
        .ok_or_else(|| invalid("--socket-mode", v, "expected octal permission bits, e.g. 0660"))?;
    if mode > 0o777 {
        return Err(invalid(
            "--socket-mode",
            v,
            "only permission bits (at most 0777): set-id and sticky bits do not apply to a socket",
        ));
    }
    if mode & 0o200 == 0 {
        return Err(invalid(
            "--socket-mode",
            v,
            "the owner needs write permission (u+w) to connect: netpop stat and down use it",
        ));
    }
    Ok(mode)
}

/// Parses the arguments of `netpop up` and checks them against each other. Checks that
/// depend on the machine (interfaces, privileges, hugepages) are done by
/// [`check_environment`].
pub fn parse_up(args: &[String]) -> Result<UpConfig, ConfigError> {
    let mut name = DEFAULT_NAME.to_string();
    let mut nic = NicSpec::Sim;
    let mut wire = None;
    let mut queues: u16 = 1;
    let mut ip = None;
    let mut gateway = None;
    let mut mac = None;
    let mut mtu: u16 = 1500;
    let mut groups = DEFAULT_GROUPS;
    let mut policy = BalancerPolicy::Idle;
    let mut cores = Vec::new();
    let mut socket_dir = None;
    let mut socket_group = None;
    let mut socket_mode = None;
    let mut foreground = false;
    let mut app_sockets = DEFAULT_APP_SOCKETS;
    let mut app_ring_slots = DEFAULT_APP_RING_SLOTS;
    let mut app_socket_buffer = DEFAULT_APP_SOCKET_BUFFER;
    let mut rx_ring = DEFAULT_RX_RING;
    let mut tx_ring = DEFAULT_TX_RING;

    let mut c = ArgCursor::new(args);
    while let Some(opt) = c.next_option() {
        match opt {
            "--name" => {
                let v = c.value("--name")?;
                check_name(v)?;
                name = v.to_string();
            }
            "--nic" => nic = parse_nic(c.value("--nic")?)?,
            "--wire" => wire = Some(parse_wire(c.value("--wire")?)?),
            "--queues" => {
                let v = c.value("--queues")?;
                let q: u32 = parse_num("--queues", v)?;
                if q == 0 || q as usize > MAX_INSTANCES {
                    return Err(invalid("--queues", v, format!("must be 1..{MAX_INSTANCES}")));
                }
                queues = q as u16;
            }
            "--ip" => ip = Some(parse_ip_prefix(c.value("--ip")?)?),
            "--gateway" => {
                let v = c.value("--gateway")?;
                let g: Ipv4Addr =
                    v.parse().map_err(|_| invalid("--gateway", v, "not an IPv4 address"))?;
                check_host_address("--gateway", v, g)?;
                gateway = Some(g);
            }
            "--mac" => mac = Some(parse_mac(c.value("--mac")?)?),
            "--mtu" => {
                let v = c.value("--mtu")?;
                let m: u16 = parse_num("--mtu", v)?;
                if !(576..=9000).contains(&m) {
                    return Err(invalid("--mtu", v, "must be 576..9000"));
                }
                mtu = m;
            }
            "--groups" => {
                let v = c.value("--groups")?;
                let g: u32 = parse_num("--groups", v)?;
                if !g.is_power_of_two() || g > MAX_GROUPS {
                    return Err(invalid(
                        "--groups",
                        v,
                        format!("must be a power of two up to {MAX_GROUPS}"),
                    ));
                }
                groups = g;
            }
            "--policy" => {
                let v = c.value("--policy")?;
                policy = v.parse().map_err(|e| invalid("--policy", v, format!("{e}")))?;
            }
            "--cores" => cores = parse_cores(c.value("--cores")?)?,
            "--socket-dir" => {
                let v = c.value("--socket-dir")?;
                if v.is_empty() {
                    return Err(invalid("--socket-dir", v, "empty path"));
                }
                socket_dir = Some(PathBuf::from(v));
            }
            "--socket-group" => {
                socket_group = Some(parse_socket_group(c.value("--socket-group")?)?);
            }
            "--socket-mode" => socket_mode = Some(parse_socket_mode(c.value("--socket-mode")?)?),
            "--foreground" => foreground = true,
            "--app-sockets" => {
                let v = c.value("--app-sockets")?;
                app_sockets = parse_num("--app-sockets", v)?;
            }
            "--app-ring-slots" => {
                let v = c.value("--app-ring-slots")?;
                app_ring_slots = parse_num("--app-ring-slots", v)?;
            }
            "--app-socket-buffer" => {
                let v = c.value("--app-socket-buffer")?;
                app_socket_buffer = parse_num("--app-socket-buffer", v)?;
            }
            "--rx-ring" => rx_ring = parse_ring("--rx-ring", c.value("--rx-ring")?)?,
            "--tx-ring" => tx_ring = parse_ring("--tx-ring", c.value("--tx-ring")?)?,
            other => return Err(ConfigError::UnknownOption(other.to_string())),
        }
    }
    let (ip, prefix_len) = ip.ok_or(ConfigError::Required("--ip"))?;
    let config = UpConfig {
        name,
        nic,
        wire,
        queues,
        ip,
        prefix_len,
        gateway,
        mac,
        mtu,
        groups,
        policy,
        cores,
        socket_dir: socket_dir.unwrap_or_else(default_socket_dir),
        socket_group,
        socket_mode,
        foreground,
        app_sockets,
        app_ring_slots,
        app_socket_buffer,
        rx_ring,
        tx_ring,
    };
    check_consistency(&config)?;
    Ok(config)
}

/// Checks that the options fit together (no system access).
pub fn check_consistency(c: &UpConfig) -> Result<(), ConfigError> {
    match (&c.nic, &c.wire) {
        (NicSpec::Sim, None) => {
            return Err(ConfigError::Conflict(
                "--nic sim needs --wire tap:NAME, packet:IFNAME or unix:PATH".into(),
            ));
        }
        (NicSpec::AfXdp { .. } | NicSpec::Ixgbe { .. }, Some(_)) => {
            return Err(ConfigError::Conflict(format!(
                "--wire only applies to --nic sim (the {} NIC has its own wire)",
                c.nic
            )));
        }
        _ => {}
    }
    if c.groups < u32::from(c.queues) {
        return Err(ConfigError::Conflict(format!(
            "{} flow groups cannot feed {} instances: use --groups {} or more",
            c.groups,
            c.queues,
            u32::from(c.queues).next_power_of_two()
        )));
    }
    if matches!(c.nic, NicSpec::Sim | NicSpec::Ixgbe { .. }) && c.groups > RetaSteering::MAX_GROUPS
    {
        return Err(ConfigError::Conflict(format!(
            "--nic {} steers with the 82599 RETA, which has {} entries: use --groups {} or less",
            c.nic,
            RetaSteering::MAX_GROUPS,
            RetaSteering::MAX_GROUPS
        )));
    }
    if let Some(g) = c.gateway {
        let mask = u32::MAX.checked_shl(32 - u32::from(c.prefix_len)).unwrap_or(0);
        if g == c.ip {
            return Err(invalid("--gateway", &g.to_string(), "it is our own address"));
        }
        if u32::from(g) & mask != u32::from(c.ip) & mask {
            return Err(invalid(
                "--gateway",
                &g.to_string(),
                format!("not inside our subnet {}", c.ip_with_prefix()),
            ));
        }
    }
    c.app_layout()
        .validate()
        .map_err(|e| ConfigError::Conflict(format!("app segment options (--app-*): {e}")))?;
    Ok(())
}

fn interface_exists(name: &str) -> bool {
    !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
}

fn need_root(what: &str) -> Result<(), ConfigError> {
    if effective_uid() != 0 {
        return Err(ConfigError::Environment(format!("{what} needs root (CAP_NET_ADMIN)")));
    }
    Ok(())
}

/// Number of receive queues of a Linux interface (from sysfs).
pub fn interface_rx_queues(name: &str) -> usize {
    std::fs::read_dir(Path::new("/sys/class/net").join(name).join("queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(0)
}

fn online_cpus() -> usize {
    // "0-3,6" style list; fall back to what the scheduler lets us use.
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cores(s.trim()).ok())
        .and_then(|v| v.iter().max().map(|m| m + 1))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// `MemAvailable` from /proc/meminfo in bytes; 0 if it cannot be read.
fn available_memory() -> u64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// The model's DMA window is shared memory that fills as the rings cycle through their
/// buffers, so it must fit in the memory the machine has free (`available` bytes; 0: not
/// known, then the window's creation is the check).
pub fn check_sim_memory(c: &UpConfig, available: u64) -> Result<(), ConfigError> {
    let window = c.sim_dma_window()?;
    if available == 0 || window as u64 <= available {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    let per_queue = window / usize::from(c.queues);
    Err(ConfigError::Environment(format!(
        "--nic sim needs {} MiB of DMA memory for {} queue(s) ({} MiB each: {} receive and {} \
         transmit descriptors with a {PACKET_BUFFER_BYTES}-byte buffer each) but only {} MiB \
         is available: use a smaller --rx-ring or fewer --queues",
        mib(window as u64),
        c.queues,
        mib(per_queue as u64),
        c.rx_ring,
        c.tx_ring,
        mib(available),
    )))
}

fn free_hugepages() -> u64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `--nic afxdp:IF` serves queue i with instance i, and the NIC's own RSS spreads flows
/// over all `rx` receive queues (netpop does not reprogram its indirection table), so the
/// instances must be exactly as many as the queues: a frame on a queue no instance serves
/// would be lost, and with it every connection whose hash lands there. `rx` 0 means sysfs
/// did not say; then the check is left to the bind.
pub fn check_afxdp_queues(interface: &str, rx: usize, queues: u16) -> Result<(), ConfigError> {
    let q = usize::from(queues);
    if rx == 0 || q == rx {
        return Ok(());
    }
    if q > rx {
        return Err(ConfigError::Environment(format!(
            "--nic afxdp:{interface} has {rx} receive queue(s); --queues {q} is too many \
             (use --queues {rx}, or add queues with ethtool -L {interface} rx {q} or combined {q}, \
             depending on the driver)"
        )));
    }
    let use_all =
        if rx <= MAX_INSTANCES { format!("use --queues {rx}, or ") } else { String::new() };
    Err(ConfigError::Environment(format!(
        "--nic afxdp:{interface} has {rx} receive queues but --queues {q} serves only {q} of \
         them: frames the NIC's RSS puts on queues {q}..{last} would be lost. {use_all}\
         reduce the interface to {q} queue(s) first: ethtool -L {interface} rx {q} (or \
         combined {q}, depending on the driver)",
        last = rx - 1,
    )))
}

/// Checks what the configuration needs from the machine: privileges, interfaces, PCI
/// devices, hugepages, CPUs.
pub fn check_environment(c: &UpConfig) -> Result<(), ConfigError> {
    let cpus = online_cpus();
    if let Some(&bad) = c.cores.iter().find(|&&core| core >= cpus) {
        return Err(invalid(
            "--cores",
            &bad.to_string(),
            format!("this machine has CPUs 0..{}", cpus.saturating_sub(1)),
        ));
    }
    match &c.nic {
        NicSpec::Sim => {
            check_sim_memory(c, available_memory())?;
            check_sim_wire(c)?;
        }
        NicSpec::AfXdp { interface } => {
            need_root("--nic afxdp")?;
            if !interface_exists(interface) {
                return Err(ConfigError::Environment(format!(
                    "--nic afxdp:{interface}: no such interface"
                )));
            }
            check_afxdp_queues(interface, interface_rx_queues(interface), c.queues)?;
        }
        NicSpec::Ixgbe { pci } => {
            need_root("--nic ixgbe")?;
            if !is_pci_address(pci) {
                return Err(invalid("--nic", pci, "expected a PCI address like 0000:03:00.0"));
            }
            if !Path::new("/sys/bus/pci/devices").join(pci).exists() {
                return Err(ConfigError::Environment(format!(
                    "--nic ixgbe:{pci}: no such PCI device"
                )));
            }
            if free_hugepages() == 0 {
                return Err(ConfigError::Environment(
                    "--nic ixgbe needs hugepages for DMA memory and none are free \
                     (echo 512 > /proc/sys/vm/nr_hugepages)"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

fn check_sim_wire(c: &UpConfig) -> Result<(), ConfigError> {
    match &c.wire {
        Some(WireSpec::Tap(_)) => need_root("--wire tap")?,
        Some(WireSpec::Packet(ifname)) => {
            need_root("--wire packet")?;
            if !interface_exists(ifname) {
                return Err(ConfigError::Environment(format!(
                    "--wire packet:{ifname}: no such interface"
                )));
            }
        }
        Some(WireSpec::Unix(path)) if !path.exists() => {
            return Err(ConfigError::Environment(format!(
                "--wire unix:{}: nothing listens there (the peer must create the \
                 SOCK_SEQPACKET socket first)",
                path.display()
            )));
        }
        Some(WireSpec::Unix(_)) => {}
        None => {}
    }
    Ok(())
}

fn is_pci_address(v: &str) -> bool {
    let b = v.as_bytes();
    let hex =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_hexdigit));
    b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11])
}

/// The options every client command (`down`, `stat`, `capture`) shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// netpop name.
    pub name: String,
    /// Socket directory.
    pub socket_dir: PathBuf,
}

impl Default for Target {
    fn default() -> Self {
        Target { name: DEFAULT_NAME.to_string(), socket_dir: default_socket_dir() }
    }
}

impl Target {
    /// Handles `--name` and `--socket-dir`; false if `opt` is neither.
    pub fn take(&mut self, opt: &str, c: &mut ArgCursor<'_>) -> Result<bool, ConfigError> {
        match opt {
            "--name" => {
                let v = c.value("--name")?;
                check_name(v)?;
                self.name = v.to_string();
                Ok(true)
            }
            "--socket-dir" => {
                self.socket_dir = PathBuf::from(c.value("--socket-dir")?);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The control socket's path.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.socket_dir, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn base() -> String {
        "--nic sim --wire unix:/tmp/x --ip 10.0.0.2/24 --socket-dir /tmp/d".to_string()
    }

    #[test]
    fn a_full_command_line_parses_and_round_trips() {
        let c = parse_up(&args(
            "--name web --nic sim --wire unix:/tmp/peer --queues 4 --ip=10.1.0.2/16 \
             --gateway 10.1.0.1 --mac 02:aa:bb:cc:dd:ee --groups 64 --policy live --cores 0,2-3 \
             --socket-dir /tmp/np --foreground --app-sockets 64",
        ))
        .unwrap();
        assert_eq!(c.name, "web");
        assert_eq!(c.queues, 4);
        assert_eq!((c.ip, c.prefix_len), (Ipv4Addr::new(10, 1, 0, 2), 16));
        assert_eq!(c.gateway, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(c.mac, Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
        assert_eq!(c.cores, vec![0, 2, 3]);
        assert_eq!(c.policy, BalancerPolicy::Live);
        assert_eq!(c.socket_path(), PathBuf::from("/tmp/np/web.sock"));
        assert_eq!(c.app_layout().sockets, 64);
        assert_eq!(parse_up(&c.to_args()).unwrap(), c, "the daemon re-parses the same config");
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let cases = [
            ("--ip 10.0.0.300/24", "--ip"),
            ("--ip 10.0.0.2", "--ip"),
            ("--ip 10.0.0.2/33", "--ip"),
            ("--ip 10.0.0.0/24", "--ip"),
            ("--ip 224.0.0.1/4", "--ip"),
            ("--queues 17", "--queues"),
            ("--queues 0", "--queues"),
            ("--groups 100", "--groups"),
            ("--groups 8192", "--groups"),
            ("--mac 01:00:00:00:00:01", "--mac"),
            ("--mac 02:00:00:00:00", "--mac"),
            ("--policy fast", "--policy"),
            ("--cores 3-1", "--cores"),
            ("--gateway 10.9.0.1", "--gateway"),
            ("--gateway 10.0.0.2", "--gateway"),
            ("--name a/b", "--name"),
            ("--nic e1000", "--nic"),
        ];
        for (extra, option) in cases {
            let err = parse_up(&args(&format!("{} {extra}", base()))).unwrap_err();
            assert!(err.to_string().contains(option), "{extra}: {err}");
        }
        let err = parse_up(&args(&format!("{} --bogus", base()))).unwrap_err();
        assert_eq!(err, ConfigError::UnknownOption("--bogus".into()));
        let err = parse_up(&args("--nic sim --wire unix:/tmp/x")).unwrap_err();
        assert_eq!(err, ConfigError::Required("--ip"));
        let err = parse_up(&args(&format!("{} --queues", base()))).unwrap_err();
        assert_eq!(err, ConfigError::MissingValue("--queues"));
    }

    #[test]
    fn ring_sizes_are_powers_of_two_the_82599_and_the_driver_take() {
        let c = parse_up(&args(&base())).unwrap();
        assert_eq!((c.rx_ring, c.tx_ring), (DEFAULT_RX_RING, DEFAULT_TX_RING));
        let c = parse_up(&args(&format!("{} --rx-ring 1024 --tx-ring 8", base()))).unwrap();
        assert_eq!((c.queue_config().rx_ring_size, c.queue_config().tx_ring_size), (1024, 8));
        assert_eq!(parse_up(&c.to_args()).unwrap(), c, "the daemon gets both");
        for bad in ["--rx-ring 1000", "--rx-ring 4", "--rx-ring 8192", "--tx-ring 0", "--rx-ring x"]
        {
            let err = parse_up(&args(&format!("{} {bad}", base()))).unwrap_err().to_string();
            assert!(err.contains(bad.split(' ').next().unwrap()), "{bad}: {err}");
        }
        let why = parse_ring("--rx-ring", "8192").unwrap_err().to_string();
        assert!(why.contains("power of two") && why.contains("4096"), "{why}");
    }

    #[test]
    fn the_model_memory_check_names_the_numbers() {
        let c = parse_up(&args(&format!("{} --queues 16", base()))).unwrap();
        let window = c.sim_dma_window().unwrap();
        let one = parse_up(&args(&base())).unwrap().sim_dma_window().unwrap();
        assert_eq!(window, 16 * one, "the window grows with the queues");
        assert_eq!(check_sim_memory(&c, window as u64), Ok(()));
        assert_eq!(check_sim_memory(&c, 0), Ok(()), "unknown: left to the window's creation");
        let err = check_sim_memory(&c, window as u64 - 1).unwrap_err().to_string();
        let mib = window.div_ceil(1 << 20);
        for needed in [format!("{mib} MiB"), "16 queue(s)".into(), "4096 receive".into()] {
            assert!(err.contains(&needed), "{needed:?} missing: {err}");
        }
        assert!(err.contains("--rx-ring"), "says what to change: {err}");
    }

    #[test]
    fn socket_group_and_mode_parse_round_trip_and_default_the_mode() {
        let c =
            parse_up(&args(&format!("{} --socket-group 33 --socket-mode 0640", base()))).unwrap();
        assert_eq!((c.socket_group, c.socket_mode), (Some(33), Some(0o640)));
        assert_eq!(c.socket_mode_to_apply(), Some(0o640));
        assert_eq!(parse_up(&c.to_args()).unwrap(), c, "the daemon gets both");
        let by_name = parse_up(&args(&format!("{} --socket-group root", base()))).unwrap();
        assert_eq!(by_name.socket_group, Some(0));
        assert_eq!(by_name.socket_mode_to_apply(), Some(GROUP_SOCKET_MODE), "group may connect");
        let plain = parse_up(&args(&base())).unwrap();
        assert_eq!(plain.socket_mode_to_apply(), None, "the umask decides as before");
        for (v, mode) in [("660", 0o660), ("0o600", 0o600), ("0777", 0o777), ("0200", 0o200)] {
            assert_eq!(parse_socket_mode(v), Ok(mode), "{v}");
        }
    }

    #[test]
    fn bad_socket_groups_and_modes_say_what_is_wrong() {
        let cases = [
            ("--socket-group netpop-no-such-group", "no such group"),
            ("--socket-group 4294967295", "out of range"),
            ("--socket-group a:b", "group name or a numeric"),
            ("--socket-mode 0668", "octal"),
            ("--socket-mode rw", "octal"),
            ("--socket-mode 4660", "set-id"),
            ("--socket-mode 07777", "octal"),
            ("--socket-mode 0460", "owner needs write"),
        ];
        for (extra, why) in cases {
            let err = parse_up(&args(&format!("{} {extra}", base()))).unwrap_err();
            let option = extra.split(' ').next().unwrap();
            assert!(err.to_string().contains(option), "{extra}: {err}");
            assert!(err.to_string().contains(why), "{extra}: {err}");
        }
    }

    #[test]
    fn afxdp_needs_one_instance_per_receive_queue() {
        assert_eq!(check_afxdp_queues("eth0", 4, 4), Ok(()));
        assert_eq!(check_afxdp_queues("eth0", 0, 2), Ok(()), "sysfs silent: left to the bind");
        let few = check_afxdp_queues("eth0", 4, 2).unwrap_err().to_string();
        for needed in
            ["4 receive queues", "--queues 2", "queues 2..3", "--queues 4", "ethtool -L eth0"]
        {
            assert!(few.contains(needed), "{needed:?} missing: {few}");
        }
        let many = check_afxdp_queues("eth0", 2, 4).unwrap_err().to_string();
        assert!(many.contains("too many") && many.contains("--queues 2"), "{many}");
        let huge = check_afxdp_queues("eth0", 64, 16).unwrap_err().to_string();
        assert!(!huge.contains("--queues 64"), "more queues than instances can exist: {huge}");
        assert!(huge.contains("ethtool -L eth0 rx 16"), "{huge}");
    }

    #[test]
    fn options_that_do_not_fit_together_are_refused() {
        let no_wire = parse_up(&args("--nic sim --ip 10.0.0.2/24")).unwrap_err();
        assert!(no_wire.to_string().contains("--wire"), "{no_wire}");
        let xdp_wire =
            parse_up(&args("--nic afxdp:eth0 --wire tap:t --ip 10.0.0.2/24")).unwrap_err();
        assert!(matches!(xdp_wire, ConfigError::Conflict(_)));
        let reta = parse_up(&args(&format!("{} --groups 256", base()))).unwrap_err();
        assert!(reta.to_string().contains("RETA"), "{reta}");
        assert!(parse_up(&args("--nic afxdp:eth0 --ip 10.0.0.2/24 --groups 1024")).is_ok());
        let few = parse_up(&args(&format!("{} --queues 8 --groups 4", base()))).unwrap_err();
        assert!(few.to_string().contains("--groups 8"), "{few}");
        let app = parse_up(&args(&format!("{} --app-socket-buffer 1000", base()))).unwrap_err();
        assert!(app.to_string().contains("socket_buffer"), "{app}");
    }

    #[test]
    fn the_environment_check_finds_missing_things() {
        let mut c = parse_up(&args(&base())).unwrap();
        c.wire = Some(WireSpec::Unix(PathBuf::from("/nonexistent/peer.sock")));
        assert!(matches!(check_environment(&c), Err(ConfigError::Environment(_))));
        c.wire = Some(WireSpec::Unix(std::env::temp_dir()));
        c.cores = vec![100_000];
        assert!(check_environment(&c).unwrap_err().to_string().contains("--cores"));
        c.cores.clear();
        assert!(check_environment(&c).is_ok());
        let xdp = UpConfig {
            nic: NicSpec::AfXdp { interface: "np-no-such-if".into() },
            wire: None,
            ..c.clone()
        };
        assert!(check_environment(&xdp).unwrap_err().to_string().contains("afxdp"));
        let ixgbe = UpConfig { nic: NicSpec::Ixgbe { pci: "0000:zz:00.0".into() }, ..xdp };
        assert!(check_environment(&ixgbe).is_err());
    }

    #[test]
    fn pci_addresses_and_names() {
        assert!(is_pci_address("0000:03:00.0"));
        assert!(!is_pci_address("03:00.0"));
        assert!(!is_pci_address("0000:03:00.8"));
        assert!(check_name("web-1_a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(33)).is_err());
        assert_eq!(format_mac(&[2, 0, 0, 0xab, 0, 1]), "02:00:00:ab:00:01");
        assert_eq!(parse_mac("02:00:00:ab:00:01").unwrap(), [2, 0, 0, 0xab, 0, 1]);
    }
}
