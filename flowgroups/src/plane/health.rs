//! Instance health (DESIGN.md "Flow-group balancing": instance failure). An instance is
//! dead when its process has exited (waitpid with WNOHANG, through `Child::try_wait`) or
//! when its heartbeat — the CLOCK_MONOTONIC time of its last loop iteration, which it
//! writes into its `InstanceShared` block — is older than [`HEARTBEAT_TIMEOUT`] while it
//! claims to run. A hung instance is killed so that it cannot come back to life with a
//! stale view of the flow-group table. The plane probes every instance with a `Heartbeat`
//! message every [`PROBE_INTERVAL`], which wakes an idle instance so that a healthy one
//! always has a fresh heartbeat.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::control::{ControlSegment, InstanceState};

use super::spawn::InstanceProc;

/// How often idle instances are woken with a probe.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeat age after which a running instance is declared hung.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks every instance not yet known dead; marks the dead ones (in the process handle and
/// in the segment) and returns `(index, reason)` for each newly dead one.
pub fn check(
    instances: &mut [InstanceProc],
    control: &ControlSegment,
    now_ns: u64,
) -> Vec<(u16, String)> {
    let mut newly_dead = Vec::new();
    for inst in instances.iter_mut().filter(|i| !i.dead) {
        let reason = if let Some(status) = inst.poll_exit() {
            Some(format!("process {} exited ({status})", inst.pid))
        } else if stale(control, inst.index, now_ns) {
            inst.kill();
            Some(format!(
                "no heartbeat for more than {} s; process {} killed",
                HEARTBEAT_TIMEOUT.as_secs(),
                inst.pid
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            inst.dead = true;
            if let Some(block) = control.instance(inst.index) {
                block.state.store(InstanceState::Dead as u32, Ordering::Release);
            }
            newly_dead.push((inst.index, reason));
        }
    }
    newly_dead
}

fn stale(control: &ControlSegment, index: u16, now_ns: u64) -> bool {
    let Some(block) = control.instance(index) else { return false };
    let running = block.state.load(Ordering::Acquire) == InstanceState::Running as u32;
    let hb = block.heartbeat_ns.load(Ordering::Acquire);
    let timeout = HEARTBEAT_TIMEOUT.as_nanos() as u64;
    running && hb != 0 && now_ns.saturating_sub(hb) > timeout
}

/// True once instance `index` reports that it serves: state `Running` or a first
/// heartbeat.
pub fn is_ready(control: &ControlSegment, index: u16) -> bool {
    control.instance(index).is_some_and(|b| {
        b.state.load(Ordering::Acquire) == InstanceState::Running as u32
            || b.heartbeat_ns.load(Ordering::Acquire) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ControlConfig, ControlLayout};

    #[test]
    fn staleness_needs_a_running_instance_with_an_old_heartbeat() {
        let cs = ControlSegment::create(
            "t-health",
            ControlLayout::new(1, 1, 1).unwrap(),
            &ControlConfig::default(),
        )
        .unwrap();
        let b = cs.instance(0).unwrap();
        let second = 1_000_000_000u64;
        assert!(!stale(&cs, 0, 100 * second), "no heartbeat yet: still starting");
        assert!(!is_ready(&cs, 0));
        b.heartbeat_ns.store(10 * second, Ordering::Relaxed);
        assert!(is_ready(&cs, 0));
        assert!(!stale(&cs, 0, 100 * second), "not claiming to run");
        b.state.store(InstanceState::Running as u32, Ordering::Relaxed);
        assert!(!stale(&cs, 0, 14 * second));
        assert!(stale(&cs, 0, 16 * second));
    }
}
