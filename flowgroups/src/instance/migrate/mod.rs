//! Moving a flow group between kernel instances without losing, duplicating or reordering
//! a byte, and without resetting a connection (DESIGN.md "Flow-group balancing", policy
//! `live`; the same protocol makes `idle` moves race-free).
//!
//! # Actors
//!
//! P is the control plane ([`crate::plane::balance_loop`]), O the group's old owner, N its
//! new owner. The NIC (RETA entry, or the software table in the control segment) decides
//! which queue a segment of group G reaches; instances also steer in software: a segment
//! of a group the control segment says they do not own goes to the owner's forwarding ring.
//!
//! # The protocol
//!
//! 1. **Freeze.** P sets G's shared state to `Frozen` and sends `FreezeGroup{G, to: N}` to
//!    O.
//! 2. **Export.** In the same loop iteration O exports every connection of G that an app
//!    holds (accepted or connected, not closed): `Stack::export_connection`, plus its app
//!    binding ([`SocketBinding`]: app, socket slot, what the app was told). Each goes to N
//!    as a `CONN` record on O's forwarding ring to N. Connections O cannot export — not
//!    yet accepted, half-open, closed by the app but not finished (FIN-WAIT, LAST-ACK,
//!    TIME-WAIT) — stay on O: the *residue*. A `RESIDUE` record tells N their 4-tuples
//!    (and passes on residue O itself had inherited from earlier moves), then `EXPORT_END`
//!    closes the list. O answers `ExportDone{G, connections}` to P. From now on O hands
//!    every segment of G it gets (from its queue or from a peer) to N, behind the records
//!    on the same ring — except segments of its residue, which it keeps serving. Requests
//!    the app still sends O for a moved socket slot are handed to N as `APP_REQUEST`
//!    records (the app matches completions by tag, whichever instance posts them); the
//!    native client reads the slot's owner word before each request, so once N has
//!    adopted the slot (step 3) the app talks to N directly and only requests already on
//!    their way to O take this detour.
//! 3. **Import.** N adopts each `CONN` record as it arrives (`Stack::import_connection`,
//!    then the app binding: the slot's rings keep their positions, its owner word now names
//!    N, bytes waiting in either ring are moved at once). Stragglers that follow on O's
//!    ring are processed in order after the state they belong to. A record that cannot be
//!    adopted (the app is gone) aborts that one connection and is counted.
//! 4. **Switch.** On `ExportDone`, P sets G's state to `Moving`, rewrites the steering
//!    entry and G's owner in the control segment, bumps the owner epoch, sends
//!    `ImportGroup{G, from: O}` to N and `SetOwner{G, N}` to every instance.
//! 5. **Drain.** Segments of G now reach N directly. While G is `Moving` and O's end
//!    marker has not arrived, N *holds* them (in arrival order, bounded) instead of
//!    processing them: a segment that overtook its connection's state would be answered
//!    with a reset. O, on `SetOwner`, keeps forwarding stragglers until its receive queue
//!    has run dry after the switch, [`DRAIN_GRACE`] has passed and its inbound rings are
//!    empty; then it sends the `FORWARDING_DONE` record to N (in band, behind the last
//!    straggler) and `ForwardingDone{G}` to P.
//! 6. **Own.** On `FORWARDING_DONE` N processes the held segments in order, serves G
//!    normally and tells P `GroupOwned{G}`; P sets G `Active` and counts the move.
//!
//! # Residue
//!
//! An instance that gets a segment whose 4-tuple is in its residue table forwards it to
//! the holder (never back to the peer it came from), so a half-open or closing connection
//! finishes where it started and a SYN that reached O just before the switch completes its
//! handshake on O (the race of `idle` moves). The holder announces residue connections
//! that ended with a `RESIDUE_GONE` record to every peer; entries unused for
//! [`RESIDUE_IDLE_TTL`] are dropped anyway. A residue connection stays on its holder for
//! its whole life (an app that accepts it later is served from there).
//!
//! # Failures
//!
//! P aborts a move whose old owner dies before `ExportDone` (its connections die with it,
//! and failover reassigns its groups) and gives up waiting for `GroupOwned` after a timeout
//! (marking G `Active`). N stops holding when the marker is late ([`HOLD_TIMEOUT`]), when
//! G's state is `Active` again, or when the hold queue is full (later segments are dropped
//! and counted; TCP retransmits them).
//!
//! # Wire format
//!
//! Records travel on the instance → instance forwarding rings in [`FrameSlot`]s whose
//! `reserved` word is 1 (`SLOT_RECORD`; ordinary frames have 0). A slot's data starts
//! with an 8-byte chunk header: kind (u8), flags (u8: 1 first chunk, 2 last chunk), two
//! zero bytes, total record length (u32 LE); then up to 2,024 bytes of the record. The
//! records (little endian):
//!
//! | kind | record |
//! |---|---|
//! | 1 `CONN` | group u32, app u32, slot u32, binding flags u8, `ConnectionState` encoding |
//! | 2 `RESIDUE` | group u32, n u32, n × (local port u16, remote IPv4 4 B, remote port u16, holder u16) |
//! | 3 `EXPORT_END` | group u32, connections u32 |
//! | 4 `FORWARDING_DONE` | group u32 |
//! | 5 `RESIDUE_GONE` | n u32, n × (local port u16, remote IPv4 4 B, remote port u16) |
//! | 6 `APP_REQUEST` | app u32, the 64-byte request slot |
//!
//! [`SocketBinding`]: crate::channel::server::SocketBinding
//! [`FrameSlot`]: crate::control::FrameSlot

mod flow;
pub(crate) mod record;

pub(crate) use self::flow::steer_tcp;

use std::collections::{BTreeMap, HashMap, VecDeque};

use self::record::TupleKey;

/// How long the old owner keeps forwarding after its queue ran dry past the switch: frames
/// the NIC was already writing when the steering entry changed land within this.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(2);
/// Longest the new owner holds a group's segments waiting for the old owner's end marker.
pub const HOLD_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// Residue entries not used for this long are forgotten (TIME-WAIT is 60 s).
pub const RESIDUE_IDLE_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Most bytes of held segments per instance.
const MAX_HELD_BYTES: usize = 32 << 20;
/// How often residue and hold timeouts are checked.
const SWEEP_INTERVAL_NS: u64 = 5_000_000;

/// Where a frame came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// This instance's NIC queue.
    Nic,
    /// A peer's forwarding ring.
    Peer(u16),
    /// This instance's hold queue, released after an import finished.
    Released,
}

/// What to do with a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Steer {
    /// Process here.
    Local,
    /// Push to this instance's forwarding ring.
    Forward(u16),
    /// Keep until the group's import finishes.
    Hold,
}

/// Counters of the migration protocol, per instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationCounters {
    /// Groups this instance froze and exported.
    pub groups_exported: u64,
    /// Groups this instance imported (end marker seen, or gave up waiting).
    pub groups_imported: u64,
    /// Connections exported with their app binding.
    pub connections_exported: u64,
    /// Connections imported and bound to their app.
    pub connections_imported: u64,
    /// Imported connections that had to be aborted (their app was gone, or the state did
    /// not fit this stack).
    pub import_failures: u64,
    /// Connections left behind as residue when their group was exported.
    pub residue_left: u64,
    /// Segments handed to a residue holder.
    pub residue_forwards: u64,
    /// Segments held until an import finished.
    pub frames_held: u64,
    /// Segments dropped because the hold queue was full.
    pub hold_drops: u64,
    /// Imports finished without the end marker (timeout, or the plane gave up).
    pub hold_timeouts: u64,
    /// App requests handed to the instance now serving their slot.
    pub requests_forwarded: u64,
    /// Records that did not decode or reassemble.
    pub bad_records: u64,
}

#[derive(Debug)]
enum OutPhase {
    /// Exported; waiting for the plane to switch the steering.
    AwaitSwitch,
    /// Switched at `since_ns`; forwarding stragglers until the queue ran dry.
    Draining { since_ns: u64, rx_dry: bool },
}

#[derive(Debug)]
struct OutMove {
    to: u16,
    phase: OutPhase,
}

#[derive(Debug)]
struct InMove {
    /// The exporting instance, once known (from its records or from `ImportGroup`).
    from: Option<u16>,
    held: VecDeque<Vec<u8>>,
    /// When the first segment was held (0 = none yet).
    first_hold_ns: u64,
    /// The end marker arrived (or we gave up): segments are processed normally until the
    /// plane marks the group active again.
    done: bool,
    imported: u32,
    failed: u32,
}

#[derive(Debug)]
struct ResidueEntry {
    holder: u16,
    last_ns: u64,
}

/// An instance's part in flow-group moves: groups it is exporting and importing, the
/// residue table, and the record reassembly.
#[derive(Debug)]
pub(crate) struct Migrations {
    me: u16,
    outgoing: BTreeMap<u32, OutMove>,
    incoming: BTreeMap<u32, InMove>,
    /// 4-tuples held by other instances.
    residue: HashMap<TupleKey, ResidueEntry>,
    /// 4-tuples this instance holds in groups it exported (announced when they end).
    held: HashMap<TupleKey, u32>,
    held_bytes: usize,
    last_sweep_ns: u64,
    pub(crate) reassembly: record::Reassembly,
    pub(crate) counters: MigrationCounters,
}

impl Migrations {
    pub(crate) fn new(me: u16) -> Migrations {
        Migrations {
            me,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            residue: HashMap::new(),
            held: HashMap::new(),
            held_bytes: 0,
            last_sweep_ns: 0,
            reassembly: record::Reassembly::default(),
            counters: MigrationCounters::default(),
        }
    }

    /// True while a move involving this instance is under way (the loop must keep an eye
    /// on the clock rather than block for long).
    pub(crate) fn active(&self) -> bool {
        !self.outgoing.is_empty() || self.incoming.values().any(|m| !m.done)
    }

    /// Where a TCP segment of `group` for connection `key` goes. `owner` and `moving`
    /// (the group's state is `Moving`: the steering switched, the import may not be
    /// finished) are read from the control segment; `held_here` says whether this
    /// instance's stack has the connection (only asked when it matters).
    pub(crate) fn steer(
        &mut self,
        group: u32,
        key: TupleKey,
        owner: u16,
        moving: bool,
        via: Via,
        now_ns: u64,
        held_here: impl FnOnce() -> bool,
    ) -> Steer {
        let me = self.me;
        let exporting = self.outgoing.get(&group).map(|m| m.to);
        // Fast path: our group, nothing moving, no residue.
        if owner == me
            && !moving
            && exporting.is_none()
            && self.residue.is_empty()
            && self.incoming.is_empty()
        {
            return Steer::Local;
        }
        if let Some(entry) = self.residue.get_mut(&key) {
            if entry.holder != me && via != Via::Peer(entry.holder) {
                entry.last_ns = now_ns;
                self.counters.residue_forwards += 1;
                return Steer::Forward(entry.holder);
            }
        }
        if (owner != me || exporting.is_some()) && held_here() {
            return Steer::Local;
        }
        if let Some(to) = exporting {
            return Steer::Forward(to);
        }
        if owner == me {
            let importing = match self.incoming.get(&group) {
                Some(m) => !m.done,
                None => moving,
            };
            if !importing {
                return Steer::Local;
            }
            let m = self.incoming.entry(group).or_insert_with(InMove::new);
            let from_exporter = m.from.is_some_and(|f| via == Via::Peer(f));
            return if via == Via::Released || from_exporter { Steer::Local } else { Steer::Hold };
        }
        match via {
            Via::Nic => Steer::Forward(owner),
            // Never forwarded twice: processing it here cannot loop.
            Via::Peer(_) | Via::Released => Steer::Local,
        }
    }

    /// Keeps a segment of `group` until its import finishes; false if the hold queue is full
    /// (the segment is dropped).
    pub(crate) fn hold(&mut self, group: u32, frame: &[u8], now_ns: u64) -> bool {
        if self.held_bytes + frame.len() > MAX_HELD_BYTES {
            self.counters.hold_drops += 1;
            return false;
        }
        let m = self.incoming.entry(group).or_insert_with(InMove::new);
        if m.first_hold_ns == 0 {
            m.first_hold_ns = now_ns.max(1);
        }
        m.held.push_back(frame.to_vec());
        self.held_bytes += frame.len();
        self.counters.frames_held += 1;
        true
    }

    // -------------------------------------------------------------------------------
    // The old owner's side

    /// Starts exporting `group` to `to`; false if it is already being exported.
    fn begin_export(&mut self, group: u32, to: u16) -> bool {
        if self.outgoing.contains_key(&group) {
            return false;
        }
        // A group that comes back here while we were still importing it: that import is
        // over as far as we are concerned.
        self.incoming.remove(&group);
        self.outgoing.insert(group, OutMove { to, phase: OutPhase::AwaitSwitch });
        self.counters.groups_exported += 1;
        true
    }

    /// Residue entries of `group` this instance knows of (to pass on with the group).
    fn residue_of(&self, group_of: impl Fn(&TupleKey) -> u32, group: u32) -> Vec<(TupleKey, u16)> {
        self.residue
            .iter()
            .filter(|(k, _)| group_of(k) == group)
            .map(|(k, e)| (*k, e.holder))
            .collect()
    }

    /// The plane switched `group` to `owner`.
    fn switched(&mut self, group: u32, owner: u16, now_ns: u64) {
        if let Some(m) = self.outgoing.get_mut(&group) {
            if matches!(m.phase, OutPhase::AwaitSwitch) {
                m.to = owner;
                m.phase = OutPhase::Draining { since_ns: now_ns, rx_dry: false };
            }
        }
    }

    /// After a receive pass that found the queue `dry` (fewer frames than the batch):
    /// the exports whose end marker is due now, removed from the table.
    fn drained(&mut self, now_ns: u64, dry: bool, rings_empty: bool) -> Vec<(u32, u16)> {
        let grace = DRAIN_GRACE.as_nanos() as u64;
        let mut due = Vec::new();
        for (&group, m) in &mut self.outgoing {
            if let OutPhase::Draining { since_ns, rx_dry } = &mut m.phase {
                // Only a pass that started after the switch proves the queue drained past it.
                if dry && now_ns > *since_ns {
                    *rx_dry = true;
                }
                if *rx_dry && rings_empty && now_ns.saturating_sub(*since_ns) >= grace {
                    due.push((group, m.to));
                }
            }
        }
        for (group, _) in &due {
            self.outgoing.remove(group);
        }
        due
    }

    // -------------------------------------------------------------------------------
    // The new owner's side

    /// A record about `group` came from `from`.
    fn importing_from(&mut self, group: u32, from: u16) {
        let m = self.incoming.entry(group).or_insert_with(InMove::new);
        if m.done {
            // A new move of a group we finished importing before the plane marked it
            // active: start over.
            *m = InMove::new();
        }
        m.from = Some(from);
    }

    /// A connection record of `group` could not be adopted.
    fn import_failed(&mut self, group: u32) {
        self.counters.import_failures += 1;
        if let Some(m) = self.incoming.get_mut(&group) {
            m.failed += 1;
        }
    }

    /// Ends the import of `group`: the held segments, in arrival order.
    fn finish_import(&mut self, group: u32, timed_out: bool) -> Vec<Vec<u8>> {
        let Some(m) = self.incoming.get_mut(&group) else { return Vec::new() };
        if m.done {
            return Vec::new();
        }
        m.done = true;
        self.counters.groups_imported += 1;
        if timed_out {
            self.counters.hold_timeouts += 1;
        }
        let held: Vec<Vec<u8>> = m.held.drain(..).collect();
        self.held_bytes = self.held_bytes.saturating_sub(held.iter().map(Vec::len).sum::<usize>());
        held
    }

    /// Imports to give up on now (marker late, or the plane already marked the group
    /// active), and finished imports to forget (the group is active again).
    fn expired(&mut self, now_ns: u64, group_active: impl Fn(u32) -> bool) -> Vec<u32> {
        if self.incoming.is_empty() {
            return Vec::new();
        }
        let timeout = HOLD_TIMEOUT.as_nanos() as u64;
        let mut give_up = Vec::new();
        self.incoming.retain(|&group, m| {
            let active = group_active(group);
            if m.done {
                return !active;
            }
            let late = m.first_hold_ns != 0 && now_ns.saturating_sub(m.first_hold_ns) > timeout;
            if active || late {
                give_up.push(group);
            }
            true
        });
        give_up
    }

    // -------------------------------------------------------------------------------
    // Residue

    fn add_residue(&mut self, entries: &[(TupleKey, u16)], now_ns: u64) {
        for &(key, holder) in entries {
            if holder == self.me {
                continue;
            }
            self.residue.insert(key, ResidueEntry { holder, last_ns: now_ns });
        }
    }

    fn residue_gone(&mut self, holder: u16, tuples: &[TupleKey]) {
        for key in tuples {
            if self.residue.get(key).is_some_and(|e| e.holder == holder) {
                self.residue.remove(key);
            }
        }
    }

    /// Remembers that this instance keeps `key` (of `group`) as residue.
    fn note_held(&mut self, key: TupleKey, group: u32) {
        self.held.insert(key, group);
    }

    /// Due housekeeping, at most every [`SWEEP_INTERVAL_NS`]: forgets idle residue entries
    /// and returns the held connections that ended (`is_gone`) or whose group came back
    /// (`owned`), to announce.
    fn sweep(
        &mut self,
        now_ns: u64,
        is_gone: impl Fn(&TupleKey) -> bool,
        owned: impl Fn(u32) -> bool,
    ) -> Option<Vec<TupleKey>> {
        if now_ns.saturating_sub(self.last_sweep_ns) < SWEEP_INTERVAL_NS {
            return None;
        }
        self.last_sweep_ns = now_ns;
        let ttl = RESIDUE_IDLE_TTL.as_nanos() as u64;
        self.residue.retain(|_, e| now_ns.saturating_sub(e.last_ns) < ttl);
        let outgoing = &self.outgoing;
        // A group being exported is still ours in the table until the switch: its residue
        // must not be taken back before the new owner even has it.
        let back_home = |g: u32| owned(g) && !outgoing.contains_key(&g);
        let gone: Vec<TupleKey> = self
            .held
            .iter()
            .filter(|(k, g)| is_gone(k) || back_home(**g))
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.held.remove(k);
        }
        Some(gone)
    }
}

impl InMove {
    fn new() -> InMove {
        InMove {
            from: None,
            held: VecDeque::new(),
            first_hold_ns: 0,
            done: false,
            imported: 0,
            failed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn key(port: u16) -> TupleKey {
        (80, SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), port))
    }

    #[test]
    fn quiet_owned_groups_take_the_fast_path() {
        let mut m = Migrations::new(0);
        assert_eq!(m.steer(3, key(1), 0, false, Via::Nic, 1, || panic!("not asked")), Steer::Local);
        assert_eq!(m.steer(3, key(1), 1, false, Via::Nic, 1, || false), Steer::Forward(1));
        assert_eq!(m.steer(3, key(1), 1, false, Via::Peer(1), 1, || false), Steer::Local);
    }

    #[test]
    fn an_exporting_owner_forwards_all_but_its_residue() {
        let mut m = Migrations::new(0);
        assert!(m.begin_export(3, 1));
        assert!(!m.begin_export(3, 1), "once");
        assert_eq!(m.steer(3, key(1), 0, false, Via::Nic, 1, || false), Steer::Forward(1));
        assert_eq!(m.steer(3, key(2), 0, false, Via::Nic, 1, || true), Steer::Local, "residue");
        // Even what a third instance forwarded goes on, behind the state.
        assert_eq!(m.steer(3, key(1), 0, false, Via::Peer(2), 1, || false), Steer::Forward(1));
        m.switched(3, 1, 100);
        // A pass that started before the switch does not count; grace must pass too.
        assert!(m.drained(100, true, true).is_empty());
        assert!(m.drained(200, true, true).is_empty());
        let grace = DRAIN_GRACE.as_nanos() as u64;
        assert!(m.drained(100 + grace, false, false).is_empty(), "rings not empty");
        assert_eq!(m.drained(100 + grace, false, true), vec![(3, 1)]);
        assert!(!m.active());
    }

    #[test]
    fn the_new_owner_holds_direct_segments_until_the_marker() {
        let mut m = Migrations::new(1);
        m.importing_from(3, 0);
        // Switched: owner is us, the group is Moving.
        assert_eq!(m.steer(3, key(1), 1, true, Via::Peer(0), 5, || false), Steer::Local);
        assert_eq!(m.steer(3, key(1), 1, true, Via::Nic, 5, || false), Steer::Hold);
        assert_eq!(m.steer(3, key(1), 1, true, Via::Peer(2), 5, || false), Steer::Hold);
        assert!(m.hold(3, b"one", 5));
        assert!(m.hold(3, b"two", 6));
        assert_eq!(m.finish_import(3, false), vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(m.steer(3, key(1), 1, true, Via::Nic, 7, || false), Steer::Local);
        // Forgotten once the plane marks the group active.
        assert!(m.expired(8, |_| true).is_empty());
        assert!(m.incoming.is_empty());
    }

    #[test]
    fn a_switch_seen_before_any_record_still_holds_and_times_out() {
        let mut m = Migrations::new(1);
        assert_eq!(m.steer(4, key(1), 1, true, Via::Nic, 10, || false), Steer::Hold);
        assert!(m.hold(4, b"x", 10));
        assert!(m.expired(10 + 1000, |_| false).is_empty());
        let late = 10 + HOLD_TIMEOUT.as_nanos() as u64 + 1;
        assert_eq!(m.expired(late, |_| false), vec![4]);
        assert_eq!(m.finish_import(4, true), vec![b"x".to_vec()]);
        assert_eq!(m.counters.hold_timeouts, 1);
    }

    #[test]
    fn residue_goes_to_its_holder_but_never_back() {
        let mut m = Migrations::new(1);
        m.add_residue(&[(key(1), 0), (key(2), 1)], 0);
        assert_eq!(m.steer(3, key(1), 1, false, Via::Nic, 1, || false), Steer::Forward(0));
        assert_eq!(m.steer(3, key(1), 1, false, Via::Peer(0), 1, || false), Steer::Local);
        // Our own tuple in a list we received is not residue to us.
        assert_eq!(m.steer(3, key(2), 1, false, Via::Nic, 1, || false), Steer::Local);
        m.residue_gone(2, &[key(1)]);
        assert_eq!(m.steer(3, key(1), 1, false, Via::Nic, 1, || false), Steer::Forward(0));
        m.residue_gone(0, &[key(1)]);
        assert_eq!(m.steer(3, key(1), 1, false, Via::Nic, 1, || false), Steer::Local);
    }

    #[test]
    fn held_connections_are_announced_once_gone() {
        let mut m = Migrations::new(0);
        m.note_held(key(1), 3);
        m.note_held(key(2), 3);
        let gone = m.sweep(SWEEP_INTERVAL_NS, |k| *k == key(1), |_| false).unwrap();
        assert_eq!(gone, vec![key(1)]);
        assert!(m.sweep(SWEEP_INTERVAL_NS + 1, |_| true, |_| false).is_none(), "rate limited");
        m.begin_export(3, 1);
        let none = m.sweep(3 * SWEEP_INTERVAL_NS, |_| false, |g| g == 3).unwrap();
        assert!(none.is_empty(), "still ours in the table only because the switch is pending");
        m.outgoing.clear();
        let gone = m.sweep(5 * SWEEP_INTERVAL_NS, |_| false, |g| g == 3).unwrap();
        assert_eq!(gone, vec![key(2)], "its group came back: no longer residue");
    }
}
