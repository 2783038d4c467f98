//! `netpop stat`: a snapshot of the counters the instances publish in the control segment
//! (DESIGN.md "Flow-group balancing": per-instance load and per-group counters) and of
//! what the plane itself knows (processes, apps, balancer), rendered as a table for people
//! or as JSON for scripts.
//!
//! "Cross-instance messages (fast path)" is the instances' `cross_instance_msgs` counter:
//! messages one instance sent another for packets or connections; DESIGN.md wants it at 0
//! except while a flow group moves. "Control messages" are the plane <-> instance messages
//! on the control rings (app attach/detach, steering changes, heartbeats), which are not
//! on the packet path.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::control::{ControlSegment, GroupState, InstanceState};

/// One instance's line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceStat {
    /// Index.
    pub index: u16,
    /// "starting", "running", "stopping", "dead", ...
    pub state: String,
    /// Process id.
    pub pid: u32,
    /// Busy share of the last interval, percent.
    pub busy_pct: f64,
    /// Frames received.
    pub rx_packets: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Frames dropped on receive.
    pub rx_dropped: u64,
    /// Frames dropped on transmit.
    pub tx_dropped: u64,
    /// Connections established now.
    pub connections_established: u64,
    /// Connections ever created (see `instance::InstanceCounters::connections_total`).
    pub connections_total: u64,
    /// Connections handed to apps.
    pub accepts: u64,
    /// App requests served.
    pub app_requests: u64,
    /// Fast-path messages to other instances.
    pub cross_instance_msgs: u64,
    /// Frames forwarded to the owner of their group (software steering, stragglers).
    pub forwarded_packets: u64,
    /// Control messages exchanged with the plane.
    pub control_msgs: u64,
    /// Flow groups received from other instances.
    pub moves_in: u64,
    /// Flow groups given to other instances.
    pub moves_out: u64,
    /// Flow groups owned now.
    pub groups_owned: u32,
    /// Milliseconds since its last loop iteration (`None` before the first).
    pub heartbeat_age_ms: Option<u64>,
}

/// One flow group's line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStat {
    /// Group number.
    pub group: u32,
    /// Owner instance.
    pub owner: u32,
    /// "active", "frozen", "moving" or "?".
    pub state: String,
    /// Packets received.
    pub packets: u64,
    /// SYNs received.
    pub syns: u64,
    /// Connections held (any state).
    pub connections: u32,
    /// Times it moved.
    pub moves: u64,
}

/// What the plane knows besides the segment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlaneStat {
    /// netpop name.
    pub name: String,
    /// Plane pid.
    pub pid: u32,
    /// NIC description.
    pub nic: String,
    /// `A.B.C.D/P`.
    pub ip: String,
    /// MAC address.
    pub mac: String,
    /// Balancer policy in force.
    pub policy: String,
    /// Steering mechanism.
    pub steering: String,
    /// Registered apps.
    pub apps: usize,
    /// Apps registered since start.
    pub apps_total: u64,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Balancer rounds run.
    pub balancer_rounds: u64,
    /// Groups moved for balance.
    pub balance_moves: u64,
    /// Groups moved away from dead instances.
    pub failover_moves: u64,
    /// Moves the steering refused.
    pub failed_moves: u64,
    /// Moves confirmed by their new owner.
    pub completed_moves: u64,
    /// Connections that migrated with their groups.
    pub migrated_connections: u64,
    /// Moves abandoned or closed without confirmation.
    pub aborted_moves: u64,
    /// Frames dropped between the wire and the queues.
    pub wire_drops: u64,
}

/// Plane-side facts about one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    /// Process id.
    pub pid: u32,
    /// Declared dead by the plane.
    pub dead: bool,
    /// Control messages both ways.
    pub control_msgs: u64,
}

/// A full snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatSnapshot {
    /// Plane facts.
    pub plane: PlaneStat,
    /// Flow groups in total.
    pub groups_total: u32,
    /// Per instance.
    pub instances: Vec<InstanceStat>,
    /// Per group (only when asked for).
    pub groups: Vec<GroupStat>,
}

fn state_name(v: u32) -> &'static str {
    match InstanceState::from_u32(v) {
        Some(InstanceState::Absent) => "absent",
        Some(InstanceState::Starting) => "starting",
        Some(InstanceState::Running) => "running",
        Some(InstanceState::Stopping) => "stopping",
        Some(InstanceState::Dead) => "dead",
        None => "?",
    }
}

fn group_state_name(v: u32) -> &'static str {
    match GroupState::from_u32(v) {
        Some(GroupState::Active) => "active",
        Some(GroupState::Frozen) => "frozen",
        Some(GroupState::Moving) => "moving",
        None => "?",
    }
}

impl StatSnapshot {
    /// Reads the segment. `facts[i]` describes instance `i`; `now_ns` is CLOCK_MONOTONIC.
    pub fn take(
        control: &ControlSegment,
        plane: PlaneStat,
        facts: &[InstanceFacts],
        with_groups: bool,
        now_ns: u64,
    ) -> StatSnapshot {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let groups = control.flow_groups();
        let mut instances = Vec::new();
        for (index, block) in (0u16..).zip(control.instances()) {
            let f = facts.get(usize::from(index)).copied().unwrap_or_default();
            let hb = block.heartbeat_ns.load(Ordering::Relaxed);
            let state =
                if f.dead { "dead" } else { state_name(block.state.load(Ordering::Relaxed)) };
            instances.push(InstanceStat {
                index,
                state: state.to_string(),
                pid: f.pid,
                busy_pct: f64::from(block.busy_ppm.load(Ordering::Relaxed).min(1_000_000)) / 1e4,
                rx_packets: r(&block.rx_packets),
                tx_packets: r(&block.tx_packets),
                rx_dropped: r(&block.rx_dropped),
                tx_dropped: r(&block.tx_dropped),
                connections_established: r(&block.connections_established),
                connections_total: r(&block.connections_total),
                accepts: r(&block.accepts),
                app_requests: r(&block.app_requests),
                cross_instance_msgs: r(&block.cross_instance_msgs),
                forwarded_packets: r(&block.forwarded_packets),
                control_msgs: f.control_msgs,
                moves_in: r(&block.moves_in),
                moves_out: r(&block.moves_out),
                groups_owned: groups
                    .iter()
                    .filter(|g| g.owner.load(Ordering::Relaxed) == u32::from(index))
                    .count() as u32,
                heartbeat_age_ms: (hb != 0).then(|| now_ns.saturating_sub(hb) / 1_000_000),
            });
        }
        let groups_detail = if with_groups {
            (0u32..)
                .zip(groups)
                .map(|(group, g)| GroupStat {
                    group,
                    owner: g.owner.load(Ordering::Relaxed),
                    state: group_state_name(g.state.load(Ordering::Relaxed)).to_string(),
                    packets: g.packets.load(Ordering::Relaxed),
                    syns: g.syns.load(Ordering::Relaxed),
                    connections: g.connections.load(Ordering::Relaxed),
                    moves: g.moves.load(Ordering::Relaxed),
                })
                .collect()
        } else {
            Vec::new()
        };
        StatSnapshot {
            plane,
            groups_total: control.layout().groups(),
            instances,
            groups: groups_detail,
        }
    }

    /// Sums over every instance (state "total").
    pub fn totals(&self) -> InstanceStat {
        let mut t = InstanceStat { state: "total".into(), ..InstanceStat::default() };
        let n = self.instances.len().max(1) as f64;
        for i in &self.instances {
            t.busy_pct += i.busy_pct / n;
            t.rx_packets += i.rx_packets;
            t.tx_packets += i.tx_packets;
            t.rx_dropped += i.rx_dropped;
            t.tx_dropped += i.tx_dropped;
            t.connections_established += i.connections_established;
            t.connections_total += i.connections_total;
            t.accepts += i.accepts;
            t.app_requests += i.app_requests;
            t.cross_instance_msgs += i.cross_instance_msgs;
            t.forwarded_packets += i.forwarded_packets;
            t.control_msgs += i.control_msgs;
            t.moves_in += i.moves_in;
            t.moves_out += i.moves_out;
            t.groups_owned += i.groups_owned;
        }
        t
    }

    /// The human-readable form.
    pub fn to_table(&self) -> String {
        let p = &self.plane;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "netpop {} (pid {}): {} instances, ip {}, mac {}, nic {}, up {:.0}s",
            p.name,
            p.pid,
            self.instances.len(),
            p.ip,
            p.mac,
            p.nic,
            p.uptime_s
        );
        let _ = writeln!(
            s,
            "apps {} ({} since start); {} flow groups, steering {}, policy {}: {} rounds, {} \
             balance moves ({} completed, {} connections migrated, {} aborted), {} failover \
             moves, {} failed; wire drops {}",
            p.apps,
            p.apps_total,
            self.groups_total,
            p.steering,
            p.policy,
            p.balancer_rounds,
            p.balance_moves,
            p.completed_moves,
            p.migrated_connections,
            p.aborted_moves,
            p.failover_moves,
            p.failed_moves,
            p.wire_drops
        );
        let _ = writeln!(
            s,
            "\n{:>5} {:<8} {:>7} {:>6} {:>10} {:>10} {:>7} {:>11} {:>9} {:>9} {:>7} {:>7} {:>7} \
             {:>7} {:>6}",
            "inst",
            "state",
            "pid",
            "busy%",
            "rx",
            "tx",
            "drops",
            "conn(est)",
            "conn-tot",
            "accepts",
            "x-inst",
            "ctrl",
            "fwd",
            "mv-in/out",
            "groups"
        );
        let mut rows: Vec<(String, &InstanceStat)> =
            self.instances.iter().map(|i| (i.index.to_string(), i)).collect();
        let totals = self.totals();
        rows.push(("all".into(), &totals));
        for (label, i) in rows {
            let _ = writeln!(
                s,
                "{:>5} {:<8} {:>7} {:>6.1} {:>10} {:>10} {:>7} {:>11} {:>9} {:>9} {:>7} {:>7} {:>7} \
                 {:>7} {:>6}",
                label,
                i.state,
                if i.pid == 0 { "-".to_string() } else { i.pid.to_string() },
                i.busy_pct,
                i.rx_packets,
                i.tx_packets,
                i.rx_dropped + i.tx_dropped,
                i.connections_established,
                i.connections_total,
                i.accepts,
                i.cross_instance_msgs,
                i.control_msgs,
                i.forwarded_packets,
                format!("{}/{}", i.moves_in, i.moves_out),
                i.groups_owned
            );
        }
        let _ = writeln!(
            s,
            "\nx-inst = cross-instance messages on the fast path (should be 0); ctrl = control \
             messages with the plane"
        );
        if !self.groups.is_empty() {
            let _ = writeln!(
                s,
                "\n{:>6} {:>5} {:<7} {:>10} {:>8} {:>6} {:>6}",
                "group", "owner", "state", "packets", "syns", "conns", "moves"
            );
            for g in &self.groups {
                let _ = writeln!(
                    s,
                    "{:>6} {:>5} {:<7} {:>10} {:>8} {:>6} {:>6}",
                    g.group, g.owner, g.state, g.packets, g.syns, g.connections, g.moves
                );
            }
        }
        s
    }

    /// The JSON form (one object; numbers are integers except `busy_pct` and `uptime_s`).
    pub fn to_json(&self) -> String {
        let p = &self.plane;
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"name\":{},\"pid\":{},\"nic\":{},\"ip\":{},\"mac\":{},\"policy\":{},\"steering\":{},\
             \"apps\":{},\"apps_total\":{},\"uptime_s\":{:.3},\"groups_total\":{},\
             \"balancer\":{{\"rounds\":{},\"balance_moves\":{},\"failover_moves\":{},\
             \"failed_moves\":{},\"completed_moves\":{},\"migrated_connections\":{},\
             \"aborted_moves\":{}}},\"wire_drops\":{},",
            json_str(&p.name),
            p.pid,
            json_str(&p.nic),
            json_str(&p.ip),
            json_str(&p.mac),
            json_str(&p.policy),
            json_str(&p.steering),
            p.apps,
            p.apps_total,
            p.uptime_s,
            self.groups_total,
            p.balancer_rounds,
            p.balance_moves,
            p.failover_moves,
            p.failed_moves,
            p.completed_moves,
            p.migrated_connections,
            p.aborted_moves,
            p.wire_drops
        );
        s.push_str("\"instances\":[");
        for (n, i) in self.instances.iter().enumerate() {
            if n > 0 {
                s.push(',');
            }
            instance_json(&mut s, i);
        }
        s.push_str("],\"totals\":");
        instance_json(&mut s, &self.totals());
        s.push_str(",\"groups\":[");
        for (n, g) in self.groups.iter().enumerate() {
            if n > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"group\":{},\"owner\":{},\"state\":{},\"packets\":{},\"syns\":{},\
                 \"connections\":{},\"moves\":{}}}",
                g.group,
                g.owner,
                json_str(&g.state),
                g.packets,
                g.syns,
                g.connections,
                g.moves
            );
        }
        s.push_str("]}\n");
        s
    }
}

fn instance_json(s: &mut String, i: &InstanceStat) {
    let _ = write!(
        s,
        "{{\"index\":{},\"state\":{},\"pid\":{},\"busy_pct\":{:.2},\"rx_packets\":{},\
         \"tx_packets\":{},\"rx_dropped\":{},\"tx_dropped\":{},\"connections_established\":{},\
         \"connections_total\":{},\"accepts\":{},\"app_requests\":{},\
         \"cross_instance_msgs\":{},\"forwarded_packets\":{},\"control_msgs\":{},\
         \"moves_in\":{},\"moves_out\":{},\"groups_owned\":{},\"heartbeat_age_ms\":{}}}",
        i.index,
        json_str(&i.state),
        i.pid,
        i.busy_pct,
        i.rx_packets,
        i.tx_packets,
        i.rx_dropped,
        i.tx_dropped,
        i.connections_established,
        i.connections_total,
        i.accepts,
        i.app_requests,
        i.cross_instance_msgs,
        i.forwarded_packets,
        i.control_msgs,
        i.moves_in,
        i.moves_out,
        i.groups_owned,
        i.heartbeat_age_ms.map_or("null".to_string(), |v| v.to_string())
    );
}

/// A JSON string literal (RFC 8259 §7 escapes).
pub fn json_str(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlConfig, ControlLayout};

    fn segment() -> ControlSegment {
        let cs = ControlSegment::create(
            "t-stat",
            ControlLayout::new(2, 8, 4).unwrap(),
            &ControlConfig::default(),
        )
        .unwrap();
        let i0 = cs.instance(0).unwrap();
        i0.state.store(InstanceState::Running as u32, Ordering::Relaxed);
        i0.rx_packets.store(100, Ordering::Relaxed);
        i0.accepts.store(7, Ordering::Relaxed);
        i0.busy_ppm.store(250_000, Ordering::Relaxed);
        i0.heartbeat_ns.store(1_000_000_000, Ordering::Relaxed);
        let i1 = cs.instance(1).unwrap();
        i1.state.store(InstanceState::Running as u32, Ordering::Relaxed);
        i1.rx_packets.store(50, Ordering::Relaxed);
        i1.cross_instance_msgs.store(3, Ordering::Relaxed);
        cs.flow_group(3).unwrap().packets.store(42, Ordering::Relaxed);
        cs.flow_group(3).unwrap().owner.store(0, Ordering::Relaxed);
        cs
    }

    #[test]
    fn snapshot_reads_counters_and_plane_facts() {
        let cs = segment();
        let facts = [
            InstanceFacts { pid: 11, dead: false, control_msgs: 4 },
            InstanceFacts { pid: 12, dead: true, control_msgs: 1 },
        ];
        let snap = StatSnapshot::take(&cs, PlaneStat::default(), &facts, true, 3_000_000_000);
        assert_eq!(snap.instances.len(), 2);
        let (a, b) = (&snap.instances[0], &snap.instances[1]);
        assert_eq!((a.state.as_str(), a.pid, a.rx_packets, a.accepts), ("running", 11, 100, 7));
        assert_eq!(a.busy_pct, 25.0);
        assert_eq!(a.heartbeat_age_ms, Some(2000));
        assert_eq!(b.state, "dead", "the plane's verdict wins over the segment");
        assert_eq!(b.heartbeat_age_ms, None);
        assert_eq!(a.groups_owned + b.groups_owned, 8);
        assert_eq!(a.groups_owned, 5, "groups 0,2,4,6 round robin plus group 3 reassigned");
        let t = snap.totals();
        assert_eq!((t.rx_packets, t.cross_instance_msgs, t.control_msgs), (150, 3, 5));
        assert_eq!(snap.groups.len(), 8);
        assert_eq!(snap.groups[3].packets, 42);
        let without = StatSnapshot::take(&cs, PlaneStat::default(), &facts, false, 0);
        assert!(without.groups.is_empty());
    }

    #[test]
    fn table_and_json_carry_the_figures() {
        let cs = segment();
        let plane =
            PlaneStat { name: "t\"x".into(), policy: "idle".into(), ..PlaneStat::default() };
        let snap = StatSnapshot::take(&cs, plane, &[], true, 0);
        let table = snap.to_table();
        assert!(table.contains("running"));
        assert!(table.contains(" all "), "{table}");
        let json = snap.to_json();
        assert!(json.starts_with("{\"name\":\"t\\\"x\""), "{json}");
        assert!(json.contains("\"accepts\":7"));
        assert!(json.contains("\"cross_instance_msgs\":3"));
        assert!(json.contains("\"group\":3,\"owner\":0,\"state\":\"active\",\"packets\":42"));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json_str("a\u{1}b\n"), "\"a\\u0001b\\n\"");
    }
}
