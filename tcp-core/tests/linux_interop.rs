//! Interop with the Linux kernel's TCP as the peer (issue 2, acceptance item 3).
//!
//! Each test builds its own namespace and TAP link (see `support`), then runs one
//! connection per payload size: 0 B, 4 B, 100 KiB and 10 MiB. Every connection is full
//! duplex — both sides send a payload of that size, shut down their write half and read the
//! other's to end of stream — and both received streams are checked by SHA-256 against what
//! the other side sent. That covers the handshake and orderly close in both roles, ARP, MSS,
//! window scaling, SACK and timestamps as Linux negotiates them, flow control and, on the
//! lossy link, loss recovery and reordering in both directions of data flow.
//!
//! The lossy tests ask for `tc qdisc add dev <kernel side> root netem loss 2% delay 5ms
//! reorder 25% 50%`. Where the kernel lacks `sch_netem` the harness applies the same profile
//! itself to both directions and says so.
//!
//! Needs root (namespaces, TAP); skips with a message otherwise. Each connection is bounded
//! to [`CASE_LIMIT`] of wall time.

mod support;

use std::net::{SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ixgbe_user::linux::netns::skip_unless_root;
use tcp_core::stack::{AcceptError, Event, ListenerHandle, SocketHandle};
use tcp_core::tcp::State;

use support::impair::NetemParams;
use support::peer::{self, Digest, Limits};
use support::{Exchange, Link, Netem, TapStack};

/// Payload sizes, each sent in both directions on its own connection.
const SIZES: [usize; 4] = [0, 4, 100 * 1024, 10 * 1024 * 1024];
/// Wall-clock bound of one connection (handshake, both transfers, close).
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// Which side opens the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opener {
    /// tcp-core connects to a std `TcpListener` in the namespace.
    TcpCore,
    /// A std `TcpStream` in the namespace connects to a tcp-core listener.
    Linux,
}

#[test]
fn tcp_core_client_to_linux_server() {
    run_sizes("tcp_core_client_to_linux_server", 1, Opener::TcpCore, None);
}

#[test]
fn linux_client_to_tcp_core_server() {
    run_sizes("linux_client_to_tcp_core_server", 2, Opener::Linux, None);
}

#[test]
fn tcp_core_client_to_linux_server_with_loss_and_reordering() {
    run_sizes(
        "tcp_core_client_to_linux_server_with_loss_and_reordering",
        3,
        Opener::TcpCore,
        Some(NetemParams::LOSSY),
    );
}

#[test]
fn linux_client_to_tcp_core_server_with_loss_and_reordering() {
    run_sizes(
        "linux_client_to_tcp_core_server_with_loss_and_reordering",
        4,
        Opener::Linux,
        Some(NetemParams::LOSSY),
    );
}

/// Runs every size on one link and fails with all failures listed.
fn run_sizes(test: &str, subnet: u8, opener: Opener, impair: Option<NetemParams>) {
    if skip_unless_root(test) {
        return;
    }
    let mut link = Link::open(subnet, impair).unwrap_or_else(|e| panic!("{test}: link setup: {e}"));
    if impair.is_some() {
        assert_ne!(link.netem, Netem::Off);
    }
    let mut failures = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let port = 5000 + i as u16;
        let label = format!("{test} {size} B");
        match run_case(&mut link, opener, port, size) {
            Ok(report) => println!("{label}: ok in {:.2?} ({})", report.elapsed, report.stats),
            Err(e) => {
                let report = format!("{label}: {e}{}", link.driver.diagnostics(&label));
                println!("FAILED {report}");
                failures.push(report);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        SIZES.len(),
        failures.join("\n")
    );
}

#[derive(Debug)]
struct CaseReport {
    elapsed: Duration,
    stats: String,
}

/// One full-duplex connection of `size` bytes each way on `port`.
fn run_case(link: &mut Link, opener: Opener, port: u16, size: usize) -> Result<CaseReport, String> {
    let started = Instant::now();
    let deadline = started + CASE_LIMIT;
    let from_tcp_core = peer::payload(0x7c_0000 + u64::from(port), size);
    let from_linux = peer::payload(0x11_0000 + u64::from(port), size);
    let expected_at_linux = Digest::of(&from_tcp_core);
    let expected_at_tcp_core = Digest::of(&from_linux);

    let Link { driver, ns, linux_ip, tcp_core_ip, .. } = link;
    let linux_addr = SocketAddrV4::new(*linux_ip, port);
    let tcp_core_addr = SocketAddrV4::new(*tcp_core_ip, port);
    let listener = match opener {
        Opener::Linux => {
            Some(driver.stack.listen(tcp_core_addr, 8).map_err(|e| format!("listen: {e}"))?)
        }
        Opener::TcpCore => None,
    };
    let cancel = AtomicBool::new(false);
    let limits = Limits { deadline, cancel: &cancel };

    let outcome = std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<Result<Digest, String>>();
        let ns = &*ns;
        let from_linux = &from_linux;
        scope.spawn(move || {
            let result = ns
                .run_inside(|| match opener {
                    Opener::TcpCore => {
                        let listener = TcpListener::bind(linux_addr)
                            .map_err(|e| format!("linux bind {linux_addr}: {e}"))?;
                        let _ = ready_tx.send(());
                        let stream = peer::accept_one(&listener, limits)?;
                        peer::exchange(stream, from_linux, limits)
                    }
                    Opener::Linux => {
                        let _ = ready_tx.send(());
                        let stream = peer::connect(tcp_core_addr, limits)?;
                        peer::exchange(stream, from_linux, limits)
                    }
                })
                .map_err(|e| format!("joining the namespace: {e}"))
                .and_then(|r| r);
            let _ = done_tx.send(result);
        });
        let tcp_core = tcp_core_side(
            driver,
            opener,
            linux_addr,
            listener,
            from_tcp_core,
            &ready_rx,
            &done_rx,
            deadline,
        );
        if tcp_core.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        tcp_core
    });
    if let Some(l) = listener {
        driver.stack.close_listener(l);
    }
    let (at_tcp_core, at_linux, stats) = outcome?;
    if at_linux != expected_at_linux {
        return Err(format!("Linux received {at_linux:?}, tcp-core sent {expected_at_linux:?}"));
    }
    if at_tcp_core != expected_at_tcp_core {
        return Err(format!(
            "tcp-core received {at_tcp_core:?}, Linux sent {expected_at_tcp_core:?}"
        ));
    }
    Ok(CaseReport { elapsed: started.elapsed(), stats })
}

/// The tcp-core half of a case: open (or accept) the connection, run the exchange until both
/// streams are complete and the Linux side reported, then close. Returns what tcp-core
/// received, what Linux received, and the connection's statistics.
#[allow(clippy::too_many_arguments)]
fn tcp_core_side(
    driver: &mut TapStack,
    opener: Opener,
    linux_addr: SocketAddrV4,
    listener: Option<ListenerHandle>,
    outgoing: Vec<u8>,
    linux_ready: &mpsc::Receiver<()>,
    linux_done: &mpsc::Receiver<Result<Digest, String>>,
    deadline: Instant,
) -> Result<(Digest, Digest, String), String> {
    let left = || deadline.saturating_duration_since(Instant::now());
    if linux_ready.recv_timeout(Duration::from_secs(10).min(left())).is_err() {
        return Err(match linux_done.try_recv() {
            Ok(Err(e)) => e,
            _ => "the Linux side never got ready".into(),
        });
    }

    let handle: SocketHandle = match (opener, listener) {
        (Opener::Linux, Some(l)) => {
            driver.run_until(left(), "Linux to connect", |stack, _, _| {
                if let Ok(Err(e)) = linux_done.try_recv() {
                    return Err(e);
                }
                match stack.accept(l) {
                    Ok((h, _)) => Ok(Some(h)),
                    Err(AcceptError::WouldBlock) => Ok(None),
                    Err(e) => Err(format!("accept: {e}")),
                }
            })?
        }
        _ => {
            let now = driver.now();
            let h =
                driver.stack.connect(now, linux_addr, None).map_err(|e| format!("connect: {e}"))?;
            driver.run_until(left(), "the handshake", |stack, _, events| {
                for event in events {
                    if let Event::Closed(c, reason) = event {
                        if *c == h {
                            return Err(format!("connect failed: {reason}"));
                        }
                    }
                }
                Ok((stack.state(h) == Ok(State::Established)).then_some(h))
            })?
        }
    };

    let mut exchange = Exchange::new(handle, outgoing);
    let mut at_linux = None;
    let run = driver.run_until(left(), "both transfers to finish", |stack, _, _| {
        let at_tcp_core = exchange.pump(stack)?;
        match linux_done.try_recv() {
            Ok(Ok(digest)) => at_linux = Some(digest),
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
        Ok(at_tcp_core.zip(at_linux))
    });
    let stats = driver.stack.connection_stats(handle).map(|s| format!("{s:?}")).unwrap_or_default();
    let progress = exchange.progress(&driver.stack);
    let _ = driver.stack.close(handle);
    let (at_tcp_core, at_linux) = run.map_err(|e| format!("{e}; {progress}"))?;
    Ok((at_tcp_core, at_linux, stats))
}
