//! Flow groups: the unit of ownership that makes many kernel instances one stack.
//!
//! A TCP packet's flow group is the low bits of the Toeplitz RSS hash of its IPv4 4-tuple
//! (82599 datasheet §7.1.2.8.1 hash function, §7.1.2.8.2 input fields, §7.1.2.8.3 the
//! redirection table indexed by the hash's 7 least significant bits). The NIC, the 82599
//! model and every instance compute the same function with the same 40-byte key, so they
//! agree on the group of every packet; the [`FlowGroupTable`] then says which instance owns
//! that group.
//!
//! The hash covers the fields in the order they appear in the packet: source address,
//! destination address, source port, destination port. For a packet the local stack
//! receives, the source is the remote peer; [`flow_group_of_connection`] takes a
//! connection's two ends and orders them that way, so callers cannot hash the transmit
//! direction by mistake (Toeplitz is not symmetric).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use ixgbe_user::toeplitz::{self, KEY_LEN, MICROSOFT_RSS_KEY, ToeplitzTable};

/// Flow groups by default: one per 82599 RETA entry.
pub const DEFAULT_GROUPS: u32 = 128;

/// The most flow groups a configuration may have (Flow Director or software steering; the
/// RETA alone reaches 128).
pub const MAX_GROUPS: u32 = 4096;

/// Why a flow-group configuration or table operation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowGroupError {
    /// The group count is not a power of two in `1..=MAX_GROUPS`.
    InvalidGroupCount {
        /// The count asked for.
        groups: u32,
    },
    /// A table needs at least one instance to own its groups.
    NoInstances,
    /// A group number past the table's end.
    GroupOutOfRange {
        /// The group asked for.
        group: u32,
        /// Groups in the table.
        groups: u32,
    },
    /// An instance number the table does not know.
    InstanceOutOfRange {
        /// The instance asked for.
        instance: u16,
        /// Instances the table spreads groups over.
        instances: u16,
    },
}

impl fmt::Display for FlowGroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowGroupError::InvalidGroupCount { groups } => {
                write!(
                    f,
                    "flow group count {groups} is not a power of two between 1 and {MAX_GROUPS}"
                )
            }
            FlowGroupError::NoInstances => {
                write!(f, "a flow-group table needs at least one instance")
            }
            FlowGroupError::GroupOutOfRange { group, groups } => {
                write!(f, "flow group {group} out of range (table has {groups})")
            }
            FlowGroupError::InstanceOutOfRange { instance, instances } => {
                write!(f, "instance {instance} out of range (table has {instances})")
            }
        }
    }
}

impl std::error::Error for FlowGroupError {}

/// How packets map to flow groups: the group count and the RSS key.
///
/// The fields are private so that every configuration in existence has a valid group
/// count; build one with [`FlowGroupConfig::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowGroupConfig {
    groups: u32,
    rss_key: [u8; KEY_LEN],
}

impl Default for FlowGroupConfig {
    /// 128 groups (one per RETA entry) and the Microsoft verification key, which is also
    /// what `ixgbe_user::DeviceConfig` programs by default.
    fn default() -> Self {
        FlowGroupConfig { groups: DEFAULT_GROUPS, rss_key: MICROSOFT_RSS_KEY }
    }
}

impl FlowGroupConfig {
    /// A configuration with `groups` flow groups (a power of two, `1..=MAX_GROUPS`).
    pub fn new(groups: u32, rss_key: [u8; KEY_LEN]) -> Result<Self, FlowGroupError> {
        validate_group_count(groups)?;
        Ok(FlowGroupConfig { groups, rss_key })
    }

    /// Number of flow groups.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// The Toeplitz key (the same bytes the NIC's RSSRK holds).
    pub fn rss_key(&self) -> &[u8; KEY_LEN] {
        &self.rss_key
    }

    /// The group a raw RSS hash selects (the hash's low bits; with 128 groups, exactly the
    /// RETA index the 82599 uses).
    pub fn group_of_hash(&self, hash: u32) -> u32 {
        hash & (self.groups - 1)
    }
}

fn validate_group_count(groups: u32) -> Result<(), FlowGroupError> {
    if groups.is_power_of_two() && groups <= MAX_GROUPS {
        Ok(())
    } else {
        Err(FlowGroupError::InvalidGroupCount { groups })
    }
}

/// The flow group of a TCP/IPv4 packet with these header fields, in packet order.
///
/// For a packet this host receives, `src_*` is the remote end and `dst_*` the local one;
/// see [`flow_group_of_connection`]. This computes the hash bit by bit from the key (no
/// tables), which suits the control plane; per-packet code should use
/// [`FlowGroupHasher`].
pub fn flow_group_of(
    cfg: &FlowGroupConfig,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
) -> u32 {
    let hash =
        toeplitz::hash_ipv4_tcp(&cfg.rss_key, src_ip.octets(), dst_ip.octets(), src_port, dst_port);
    cfg.group_of_hash(hash)
}

/// The flow group of a local connection: the group its received packets (remote to local)
/// hash into, hence the group whose owner must hold the connection.
pub fn flow_group_of_connection(
    cfg: &FlowGroupConfig,
    local: SocketAddrV4,
    remote: SocketAddrV4,
) -> u32 {
    flow_group_of(cfg, *remote.ip(), *local.ip(), remote.port(), local.port())
}

/// Computes flow groups with the key expanded into lookup tables (one lookup per header
/// byte), for the per-packet path.
#[derive(Clone, Debug)]
pub struct FlowGroupHasher {
    config: FlowGroupConfig,
    table: ToeplitzTable,
}

impl FlowGroupHasher {
    /// Expands `config`'s key (about 37 KiB of tables).
    pub fn new(config: &FlowGroupConfig) -> Self {
        FlowGroupHasher { config: config.clone(), table: ToeplitzTable::new(&config.rss_key) }
    }

    /// The configuration this hasher was built from.
    pub fn config(&self) -> &FlowGroupConfig {
        &self.config
    }

    /// Same result as [`flow_group_of`].
    pub fn group_of(
        &self,
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        src_port: u16,
        dst_port: u16,
    ) -> u32 {
        let hash = self.table.hash_ipv4_tcp(src_ip.octets(), dst_ip.octets(), src_port, dst_port);
        self.config.group_of_hash(hash)
    }
}

/// Which instance owns each flow group.
///
/// Serialises to and from the plain owner list (`owners()[g]` = owner of group `g`), which
/// is also how the control segment publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowGroupTable {
    /// `owners[g]` is the instance owning group `g`; every entry is below `instances`, and
    /// the length is a valid group count.
    owners: Vec<u16>,
    instances: u16,
}

impl FlowGroupTable {
    /// `groups` groups spread round-robin over `instances` instances (group `g` to
    /// instance `g % instances`), the way the 82599 driver fills its RETA at start.
    pub fn new(groups: u32, instances: u16) -> Result<Self, FlowGroupError> {
        validate_group_count(groups)?;
        if instances == 0 {
            return Err(FlowGroupError::NoInstances);
        }
        let owners = (0..groups).map(|g| (g % u32::from(instances)) as u16).collect();
        Ok(FlowGroupTable { owners, instances })
    }

    /// A table from a plain owner list (for example one read back from shared memory).
    pub fn from_owners(owners: Vec<u16>, instances: u16) -> Result<Self, FlowGroupError> {
        let groups = u32::try_from(owners.len()).unwrap_or(u32::MAX);
        validate_group_count(groups)?;
        if instances == 0 {
            return Err(FlowGroupError::NoInstances);
        }
        if let Some(&instance) = owners.iter().find(|&&o| o >= instances) {
            return Err(FlowGroupError::InstanceOutOfRange { instance, instances });
        }
        Ok(FlowGroupTable { owners, instances })
    }

    /// Number of flow groups.
    pub fn groups(&self) -> u32 {
        // The length was validated to be at most MAX_GROUPS.
        self.owners.len() as u32
    }

    /// Number of instances groups may be given to.
    pub fn instances(&self) -> u16 {
        self.instances
    }

    /// The owner of `group`, or `None` past the table's end.
    pub fn owner(&self, group: u32) -> Option<u16> {
        self.owners.get(group as usize).copied()
    }

    /// The owner of the group a raw RSS hash selects. Never fails: the hash is masked to
    /// the table's size.
    pub fn owner_of_hash(&self, hash: u32) -> u16 {
        let group = hash & (self.groups() - 1);
        self.owners.get(group as usize).copied().unwrap_or(0)
    }

    /// Gives `group` to `instance`; returns the previous owner.
    pub fn set_owner(&mut self, group: u32, instance: u16) -> Result<u16, FlowGroupError> {
        let (groups, instances) = (self.groups(), self.instances);
        if instance >= instances {
            return Err(FlowGroupError::InstanceOutOfRange { instance, instances });
        }
        let slot = self
            .owners
            .get_mut(group as usize)
            .ok_or(FlowGroupError::GroupOutOfRange { group, groups })?;
        Ok(std::mem::replace(slot, instance))
    }

    /// The groups `instance` owns, in ascending order.
    pub fn groups_of(&self, instance: u16) -> impl Iterator<Item = u32> + '_ {
        self.owners.iter().zip(0u32..).filter(move |(o, _)| **o == instance).map(|(_, g)| g)
    }

    /// How many groups each instance owns (index = instance).
    pub fn counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; usize::from(self.instances)];
        for &owner in &self.owners {
            if let Some(c) = counts.get_mut(usize::from(owner)) {
                *c += 1;
            }
        }
        counts
    }

    /// The owner list (`owners()[g]` = owner of group `g`).
    pub fn owners(&self) -> &[u16] {
        &self.owners
    }

    /// Consumes the table into its owner list.
    pub fn into_owners(self) -> Vec<u16> {
        self.owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn group_counts_must_be_powers_of_two_up_to_4096() {
        for groups in [1, 2, 64, 128, 1024, 4096] {
            assert_eq!(FlowGroupConfig::new(groups, MICROSOFT_RSS_KEY).unwrap().groups(), groups);
        }
        for groups in [0, 3, 100, 129, 8192, u32::MAX] {
            assert_eq!(
                FlowGroupConfig::new(groups, MICROSOFT_RSS_KEY),
                Err(FlowGroupError::InvalidGroupCount { groups })
            );
        }
    }

    #[test]
    fn microsoft_vector_lands_in_its_low_bits_group() {
        // Microsoft's first IPv4/TCP verification vector: 66.9.149.187:2794 ->
        // 161.142.100.80:1766 hashes to 0x51ccc178, so RETA index 0x78.
        let cfg = FlowGroupConfig::default();
        let src = Ipv4Addr::new(66, 9, 149, 187);
        let dst = Ipv4Addr::new(161, 142, 100, 80);
        assert_eq!(flow_group_of(&cfg, src, dst, 2794, 1766), 0x78);
        let small = FlowGroupConfig::new(16, MICROSOFT_RSS_KEY).unwrap();
        assert_eq!(flow_group_of(&small, src, dst, 2794, 1766), 0x8);
    }

    #[test]
    fn connection_group_hashes_the_receive_direction() {
        let cfg = FlowGroupConfig::default();
        let local = SocketAddrV4::new(Ipv4Addr::new(161, 142, 100, 80), 1766);
        let remote = SocketAddrV4::new(Ipv4Addr::new(66, 9, 149, 187), 2794);
        assert_eq!(flow_group_of_connection(&cfg, local, remote), 0x78);
    }

    #[test]
    fn default_table_spreads_like_the_reta_fill() {
        let t = FlowGroupTable::new(128, 3).unwrap();
        assert_eq!(t.owner(0), Some(0));
        assert_eq!(t.owner(4), Some(1));
        assert_eq!(t.owner(127), Some(1));
        assert_eq!(t.owner(128), None);
        assert_eq!(t.counts(), vec![43, 43, 42]);
        assert_eq!(t.groups_of(2).take(3).collect::<Vec<_>>(), vec![2, 5, 8]);
    }

    #[test]
    fn set_owner_moves_a_group_and_rejects_bad_arguments() {
        let mut t = FlowGroupTable::new(8, 2).unwrap();
        assert_eq!(t.set_owner(3, 0), Ok(1));
        assert_eq!(t.owner(3), Some(0));
        assert_eq!(t.counts(), vec![5, 3]);
        assert_eq!(t.set_owner(8, 0), Err(FlowGroupError::GroupOutOfRange { group: 8, groups: 8 }));
        assert_eq!(
            t.set_owner(0, 2),
            Err(FlowGroupError::InstanceOutOfRange { instance: 2, instances: 2 })
        );
        assert_eq!(t.counts(), vec![5, 3], "failed calls change nothing");
    }

    #[test]
    fn owner_lists_are_validated() {
        assert_eq!(FlowGroupTable::new(128, 0), Err(FlowGroupError::NoInstances));
        assert_eq!(
            FlowGroupTable::from_owners(vec![0, 1, 0], 2),
            Err(FlowGroupError::InvalidGroupCount { groups: 3 })
        );
        assert_eq!(
            FlowGroupTable::from_owners(vec![0, 1, 2, 0], 2),
            Err(FlowGroupError::InstanceOutOfRange { instance: 2, instances: 2 })
        );
        assert_eq!(
            FlowGroupTable::from_owners(vec![], 2),
            Err(FlowGroupError::InvalidGroupCount { groups: 0 })
        );
    }

    #[test]
    fn owner_of_hash_masks_to_the_table() {
        let mut t = FlowGroupTable::new(4, 4).unwrap();
        t.set_owner(2, 0).unwrap();
        assert_eq!(t.owner_of_hash(0xFFFF_FFF2), 0);
        assert_eq!(t.owner_of_hash(0xFFFF_FFF3), 3);
    }

    proptest! {
        #[test]
        fn table_hasher_matches_reference(src in any::<u32>(), dst in any::<u32>(),
                                          sport in any::<u16>(), dport in any::<u16>(),
                                          log_groups in 0u32..=12) {
            let cfg = FlowGroupConfig::new(1 << log_groups, MICROSOFT_RSS_KEY).unwrap();
            let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let g = flow_group_of(&cfg, s, d, sport, dport);
            prop_assert!(g < cfg.groups());
            prop_assert_eq!(FlowGroupHasher::new(&cfg).group_of(s, d, sport, dport), g);
        }

        #[test]
        fn owner_list_round_trips(owners in proptest::collection::vec(0u16..5, 64)) {
            let t = FlowGroupTable::from_owners(owners.clone(), 5).unwrap();
            let counts = t.counts();
            prop_assert_eq!(counts.iter().sum::<u32>(), 64);
            for i in 0..5u16 {
                prop_assert_eq!(t.groups_of(i).count() as u32, counts[usize::from(i)]);
                prop_assert!(t.groups_of(i).all(|g| t.owner(g) == Some(i)));
            }
            prop_assert_eq!(t.into_owners(), owners);
        }
    }
}
