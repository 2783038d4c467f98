//! An idle kernel instance blocks instead of spinning (DESIGN.md "Processes": an idle
//! netpop uses almost no CPU). The CPU time of the instance's thread over about a second
//! of idleness is measured with getrusage(RUSAGE_THREAD) and printed; the assertion is
//! only the behaviour "it does not spin" (well under half a core), not a benchmark.

mod instance_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use instance_support::*;

/// Starts one instance with an app listening (so the sleep path has an app to arm),
/// leaves it idle for a second and returns (CPU time, wall time, idle sleeps).
fn idle_cost(name: &str, wait_fd: bool) -> (Duration, Duration, u64) {
    let mut net = Net::start(name, Options { wait_fd, ..Options::default() });
    let app = net.add_app(0);
    let _listener = app.listen(80, 16).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let sleeps = net.shared(0).idle_sleeps.load(Ordering::Relaxed);
    assert!(net.shutdown().iter().all(|r| r.is_ok()));
    let (cpu, wall) = net.instances[0].run_cost.lock().unwrap().expect("run() returned");
    (cpu, wall, sleeps)
}

#[test]
fn an_idle_instance_blocks_on_its_descriptors() {
    let (cpu, wall, sleeps) = idle_cost("t-inst-idle-fd", true);
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "idle instance with a wait fd: {:.3} ms CPU over {:.3} s ({:.3}% of a core), {sleeps} sleeps",
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        share * 100.0
    );
    assert!(sleeps > 0, "the loop blocked");
    assert!(share < 0.5, "an idle instance spins: {:.1}% of a core", share * 100.0);
}

#[test]
fn an_idle_instance_without_wait_fd_naps() {
    let (cpu, wall, sleeps) = idle_cost("t-inst-idle-nap", false);
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "idle instance, poll-only queue: {:.3} ms CPU over {:.3} s ({:.3}% of a core), {sleeps} naps",
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        share * 100.0
    );
    assert!(sleeps > 0, "the loop napped");
    assert!(share < 0.5, "an idle instance spins: {:.1}% of a core", share * 100.0);
}
