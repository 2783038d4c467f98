//! What an instance publishes in the control segment for `netpop stat` and the balancer:
//! its counters ([`InstanceShared`]) and its accept-queue lengths in the listener table
//! (DESIGN.md "Shared memory and trust": one control segment, written field by field by
//! its single writer).
//!
//! Listener entries are claimed by the first instance that listens on a port, with a
//! compare-and-swap on the entry's port word, and never freed: claims always take the
//! first free entry, so used entries stay a prefix of the table and one pass finds either
//! the port or the place to claim it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::control::{ControlSegment, InstanceShared};

/// Absolute values of the counters an instance owns in [`InstanceShared`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SharedCounters {
    pub(crate) rx_packets: u64,
    pub(crate) tx_packets: u64,
    pub(crate) rx_dropped: u64,
    pub(crate) tx_dropped: u64,
    pub(crate) connections_established: u64,
    pub(crate) connections_total: u64,
    pub(crate) accepts: u64,
    pub(crate) cross_instance_msgs: u64,
    pub(crate) forwarded_packets: u64,
    pub(crate) app_requests: u64,
}

/// Stores the counters (the instance is their only writer).
pub(crate) fn store_counters(shared: &InstanceShared, c: &SharedCounters) {
    let r = Ordering::Relaxed;
    shared.rx_packets.store(c.rx_packets, r);
    shared.tx_packets.store(c.tx_packets, r);
    shared.rx_dropped.store(c.rx_dropped, r);
    shared.tx_dropped.store(c.tx_dropped, r);
    shared.connections_established.store(c.connections_established, r);
    shared.connections_total.store(c.connections_total, r);
    shared.accepts.store(c.accepts, r);
    shared.cross_instance_msgs.store(c.cross_instance_msgs, r);
    shared.forwarded_packets.store(c.forwarded_packets, r);
    shared.app_requests.store(c.app_requests, r);
}

/// Finds the listener entry of `port`, claiming a free one if none exists.
pub(crate) fn listener_entry(control: &ControlSegment, port: u16) -> Option<usize> {
    let want = u32::from(port);
    for (i, entry) in control.listeners().iter().enumerate() {
        match entry.port.load(Ordering::Acquire) {
            p if p == want => return Some(i),
            0 => match entry.port.compare_exchange(0, want, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(i),
                Err(p) if p == want => return Some(i),
                Err(_) => {}
            },
            _ => {}
        }
    }
    None
}

/// This instance's column of the listener table.
#[derive(Debug, Default)]
pub(crate) struct ListenerColumn {
    /// Port → entry index, for ports published before.
    entries: BTreeMap<u16, usize>,
    /// Ports for which the table was full.
    pub(crate) table_full: u64,
}

impl ListenerColumn {
    /// Publishes the accept-queue length of every port this instance listens on, and 0 for
    /// ports it stopped listening on.
    pub(crate) fn publish(
        &mut self,
        control: &ControlSegment,
        me: u16,
        ready: impl Iterator<Item = (u16, usize)>,
    ) {
        let mut seen = BTreeMap::new();
        for (port, count) in ready {
            let entry = match self.entries.get(&port) {
                Some(&e) => Some(e),
                None => listener_entry(control, port),
            };
            let Some(e) = entry else {
                self.table_full += 1;
                continue;
            };
            seen.insert(port, e);
            if let Some(cell) =
                control.listener(e as u32).and_then(|l| l.ready.get(usize::from(me)))
            {
                cell.store(u32::try_from(count).unwrap_or(u32::MAX), Ordering::Relaxed);
            }
        }
        for (port, e) in std::mem::replace(&mut self.entries, seen) {
            if !self.entries.contains_key(&port) {
                if let Some(cell) =
                    control.listener(e as u32).and_then(|l| l.ready.get(usize::from(me)))
                {
                    cell.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlConfig, ControlLayout};

    #[test]
    fn ports_share_one_entry_and_stale_ports_read_zero() {
        let cs = ControlSegment::create(
            "t-inst-listeners",
            ControlLayout::new(2, 16, 3).unwrap(),
            &ControlConfig::default(),
        )
        .unwrap();
        let mut a = ListenerColumn::default();
        let mut b = ListenerColumn::default();
        a.publish(&cs, 0, [(80, 2), (443, 0)].into_iter());
        b.publish(&cs, 1, [(443, 5), (80, 1)].into_iter());
        let port = |i: u32| cs.listener(i).unwrap().port.load(Ordering::Relaxed);
        let ready =
            |i: u32, inst: usize| cs.listener(i).unwrap().ready[inst].load(Ordering::Relaxed);
        assert_eq!((port(0), port(1), port(2)), (80, 443, 0));
        assert_eq!((ready(0, 0), ready(0, 1), ready(1, 0), ready(1, 1)), (2, 1, 0, 5));
        a.publish(&cs, 0, [(443, 1)].into_iter());
        assert_eq!(ready(0, 0), 0, "instance 0 no longer listens on 80");
        assert_eq!(ready(1, 0), 1);
        // Two more ports fit one free entry: the second is counted, not published.
        a.publish(&cs, 0, [(443, 1), (22, 1), (23, 1)].into_iter());
        assert_eq!(port(2), 22);
        assert_eq!(a.table_full, 1);
    }
}
