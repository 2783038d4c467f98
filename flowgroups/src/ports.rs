//! Source-port choice for active opens, so that the replies come back to the instance
//! that opened the connection (the RSS-aware port choice of mTCP, NSDI 2014 §4.3).
//!
//! The peer's replies travel remote → local, so the NIC hashes (remote address, local
//! address, remote port, local port) — 82599 datasheet §7.1.2.8.2 field order. The only
//! free variable is the local port. Toeplitz is XOR-linear in its input (§7.1.2.8.1: each
//! set input bit XORs one key window into the result), so the hash of every candidate port
//! is the hash with port 0 XOR the windows of the port's set bits: sixteen windows computed
//! once, then a few XORs per candidate instead of a full hash.

use std::net::Ipv4Addr;

use ixgbe_user::toeplitz;

use crate::flowgroup::{FlowGroupConfig, FlowGroupTable};

/// The local ports Linux hands out by default (`net.ipv4.ip_local_port_range`).
pub const DEFAULT_EPHEMERAL_RANGE: (u16, u16) = (32768, 60999);

/// Finds a local port `p` in `range` (inclusive) such that the reply 4-tuple
/// (`remote_ip:remote_port` → `local_ip:p`) hashes into a flow group `table` gives to
/// `instance`, and `is_free(p)` holds.
///
/// The search starts at `start` (or at the range's low end if `start` lies outside it) and
/// wraps around once, so callers that advance `start` spread their ports over the range.
/// Port 0 is never returned. `None` when no port qualifies, when the range is empty, when
/// `instance` owns no group, or when `table` and `cfg` disagree on the group count.
pub fn choose_source_port(
    cfg: &FlowGroupConfig,
    table: &FlowGroupTable,
    instance: u16,
    local_ip: Ipv4Addr,
    remote_ip: Ipv4Addr,
    remote_port: u16,
    range: (u16, u16),
    start: u16,
    is_free: impl Fn(u16) -> bool,
) -> Option<u16> {
    let (low, high) = (range.0.max(1), range.1);
    if low > high || table.groups() != cfg.groups() || table.groups_of(instance).next().is_none() {
        return None;
    }
    let key = cfg.rss_key();
    let base = toeplitz::hash_ipv4_tcp(key, remote_ip.octets(), local_ip.octets(), remote_port, 0);
    let unspecified = [0u8; 4];
    // windows[bit] = what local-port bit `bit` (0 = least significant) adds to the hash.
    let windows: [u32; 16] = std::array::from_fn(|bit| {
        toeplitz::hash_ipv4_tcp(key, unspecified, unspecified, 0, 1 << bit)
    });
    let hash_with = |port: u16| {
        windows
            .iter()
            .enumerate()
            .filter(|(bit, _)| port & (1 << bit) != 0)
            .fold(base, |acc, (_, window)| acc ^ window)
    };
    let start = if (low..=high).contains(&start) { start } else { low };
    (start..=high).chain(low..start).find(|&port| {
        table.owner(cfg.group_of_hash(hash_with(port))) == Some(instance) && is_free(port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowgroup::flow_group_of;
    use ixgbe_user::toeplitz::MICROSOFT_RSS_KEY;
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 20);

    fn reply_owner(cfg: &FlowGroupConfig, table: &FlowGroupTable, port: u16) -> Option<u16> {
        table.owner(flow_group_of(cfg, REMOTE, LOCAL, 443, port))
    }

    #[test]
    fn every_instance_gets_ports_with_2_4_and_16_instances() {
        let cfg = FlowGroupConfig::default();
        for instances in [2u16, 4, 16] {
            let table = FlowGroupTable::new(128, instances).unwrap();
            for instance in 0..instances {
                // Take 20 ports in a row, as consecutive connects would.
                let used = RefCell::new(BTreeSet::new());
                for _ in 0..20 {
                    let port = choose_source_port(
                        &cfg,
                        &table,
                        instance,
                        LOCAL,
                        REMOTE,
                        443,
                        DEFAULT_EPHEMERAL_RANGE,
                        DEFAULT_EPHEMERAL_RANGE.0,
                        |p| !used.borrow().contains(&p),
                    )
                    .unwrap_or_else(|| panic!("no port for {instance} of {instances}"));
                    assert_eq!(reply_owner(&cfg, &table, port), Some(instance));
                    assert!(used.borrow_mut().insert(port));
                }
            }
        }
    }

    #[test]
    fn the_search_starts_at_start_and_wraps() {
        let cfg = FlowGroupConfig::default();
        let table = FlowGroupTable::new(128, 4).unwrap();
        let choose = |start| {
            choose_source_port(&cfg, &table, 1, LOCAL, REMOTE, 443, (1000, 1999), start, |_| true)
        };
        let first = choose(1000).unwrap();
        assert!((1000..=1999).contains(&first));
        assert!((1000..first).all(|p| reply_owner(&cfg, &table, p) != Some(1)));
        // Starting past the last qualifying port wraps around to the first one.
        let last = (1000..=1999).rev().find(|&p| reply_owner(&cfg, &table, p) == Some(1)).unwrap();
        assert_eq!(choose(last + 1), Some(first));
        assert_eq!(choose(5), Some(first), "a start outside the range means its low end");
    }

    #[test]
    fn impossible_requests_find_nothing() {
        let cfg = FlowGroupConfig::default();
        let mut table = FlowGroupTable::new(128, 3).unwrap();
        for g in table.groups_of(2).collect::<Vec<_>>() {
            table.set_owner(g, 0).unwrap();
        }
        let range = DEFAULT_EPHEMERAL_RANGE;
        let choose = |table: &FlowGroupTable, instance, range, free: &dyn Fn(u16) -> bool| {
            choose_source_port(&cfg, table, instance, LOCAL, REMOTE, 443, range, 0, free)
        };
        assert_eq!(choose(&table, 2, range, &|_| true), None, "instance owns no group");
        assert_eq!(choose(&table, 1, range, &|_| false), None, "no free port");
        assert_eq!(choose(&table, 1, (2000, 1000), &|_| true), None, "empty range");
        assert_eq!(choose(&table, 1, (0, 0), &|_| true), None, "port 0 is never chosen");
        let other = FlowGroupTable::new(64, 3).unwrap();
        assert_eq!(choose(&other, 1, range, &|_| true), None, "table and config disagree");
    }

    proptest! {
        #[test]
        fn returned_ports_hash_back_to_the_instance(
            local in any::<u32>(), remote in any::<u32>(), remote_port in any::<u16>(),
            instances in 1u16..=16, pick in any::<u16>(), start in any::<u16>(),
            log_groups in 4u32..=12, busy_mod in 1u16..8,
        ) {
            let cfg = FlowGroupConfig::new(1 << log_groups, MICROSOFT_RSS_KEY).unwrap();
            let table = FlowGroupTable::new(cfg.groups(), instances).unwrap();
            let instance = pick % instances;
            let (local, remote) = (Ipv4Addr::from(local), Ipv4Addr::from(remote));
            let free = |p: u16| p % busy_mod == 0;
            let port = choose_source_port(&cfg, &table, instance, local, remote, remote_port,
                                          DEFAULT_EPHEMERAL_RANGE, start, free);
            let port = port.expect("thousands of candidates always include one");
            prop_assert!(free(port));
            let group = flow_group_of(&cfg, remote, local, remote_port, port);
            prop_assert_eq!(table.owner(group), Some(instance));
        }
    }
}
