//! Interop with the Linux kernel's TCP as the peer (issue 2, acceptance item 3).
//!
//! Each test builds its own namespace and TAP link (see `support`), then runs one
//! connection per payload size: 0 B, 4 B, 100 KiB and 10 MiB. Every connection is full
//! duplex — both sides send a payload of that size, shut down their write half and read the
//! other's to end of stream — and both received streams are checked by SHA-256 against what
//! the other side sent. That covers the handshake and orderly close in both roles, ARP, MSS,
//! window scaling, SACK and timestamps as Linux negotiates them, flow control and, on the
//! lossy link, loss recovery and reordering in both directions of data flow. Two smaller
//! tests cover zero windows (receivers that stop reading) and refused connections.
//!
//! The lossy tests ask for `tc qdisc add dev <kernel side> root netem loss 2% delay 5ms
//! reorder 25% 50%`. Where the kernel lacks `sch_netem` the harness applies the same profile
//! itself to both directions and says so.
//!
//! On failure the report names a pcap of the last frames on the link; set
//! `TCP_CORE_INTEROP_PCAP=1` to get one for passing cases too.
//!
//! Needs root (namespaces, TAP); skips with a message otherwise. Each connection is bounded
//! to [`CASE_LIMIT`] of wall time.

mod support;

use std::io::ErrorKind;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ixgbe_user::linux::netns::skip_unless_root;
use tcp_core::stack::{AcceptError, Event, ListenerHandle, SocketHandle};
use tcp_core::tcp::{CloseReason, ConnectionStats, State};

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

/// One connection to run.
#[derive(Clone, Copy, Debug)]
struct Case {
    opener: Opener,
    /// Bytes tcp-core sends.
    upload: usize,
    /// Bytes Linux sends.
    download: usize,
    /// How long each side waits before it starts reading.
    read_pause: Duration,
    /// Wall-clock bound of the whole connection.
    limit: Duration,
}

impl Case {
    /// `size` bytes each way.
    fn new(opener: Opener, size: usize) -> Case {
        Case { opener, upload: size, download: size, read_pause: Duration::ZERO, limit: CASE_LIMIT }
    }
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

/// Both receivers stop reading for a while, so both windows close: Linux must probe
/// tcp-core's zero window and tcp-core Linux's, and both must resume when reading does.
#[test]
fn receivers_that_pause_make_both_windows_close_and_reopen() {
    let test = "receivers_that_pause_make_both_windows_close_and_reopen";
    if skip_unless_root(test) {
        return;
    }
    let mut link = Link::open(5, None).unwrap_or_else(|e| panic!("{test}: link setup: {e}"));
    let recv_buffer = link.driver.stack.config().tcp.recv_buffer;
    let case =
        Case { read_pause: Duration::from_millis(700), ..Case::new(Opener::TcpCore, 4 << 20) };
    let report = run_case(&mut link, case, 5100)
        .unwrap_or_else(|e| panic!("{test}: {e}{}", link.driver.diagnostics(test)));
    println!("{test}: ok in {:.2?} ({})", report.elapsed, report.stats);
    capture_if_asked(&link, test);
    assert!(
        report.peak_recv_queue + 2 * 1460 >= recv_buffer,
        "tcp-core's receive queue peaked at {} of {recv_buffer} bytes: its window never closed",
        report.peak_recv_queue
    );
}

/// A SYN to a port nobody listens on is answered with a reset, both ways.
#[test]
fn connections_to_closed_ports_are_refused_both_ways() {
    let test = "connections_to_closed_ports_are_refused_both_ways";
    if skip_unless_root(test) {
        return;
    }
    let mut link = Link::open(6, None).unwrap_or_else(|e| panic!("{test}: link setup: {e}"));
    let Link { driver, ns, linux_ip, tcp_core_ip, .. } = &mut link;

    let to_linux = SocketAddrV4::new(*linux_ip, 5200);
    let now = driver.now();
    let handle = driver.stack.connect(now, to_linux, None).expect("connect");
    let reason = driver
        .run_until(Duration::from_secs(5), "the reset from Linux", |_, _, events| {
            Ok(events.iter().find_map(|e| match e {
                Event::Closed(h, reason) if *h == handle => Some(*reason),
                _ => None,
            }))
        })
        .unwrap_or_else(|e| panic!("{test}: {e}{}", driver.diagnostics(test)));
    assert_eq!(reason, CloseReason::Reset, "tcp-core connecting to a closed Linux port");
    let _ = driver.stack.close(handle);

    let to_tcp_core = SocketAddrV4::new(*tcp_core_ip, 5201);
    let refused = std::thread::scope(|scope| {
        let linux = scope.spawn(|| {
            ns.run_inside(|| {
                TcpStream::connect_timeout(&to_tcp_core.into(), Duration::from_secs(5))
            })
        });
        let _ = driver.run_until(Duration::from_secs(6), "the Linux client", |_, _, _| {
            Ok(linux.is_finished().then_some(()))
        });
        linux.join().expect("Linux thread").expect("entering the namespace")
    });
    match refused {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "Linux connecting: {e}"),
        Ok(_) => panic!("Linux connected to a port tcp-core does not listen on"),
    }
    assert!(driver.stack.counters().tcp_no_listener_rst_sent >= 1);
}

/// A lost ARP request must not strand a connection: Linux retries ARP every second and its
/// SYN timer fires regardless; tcp-core must get the SYN out once the neighbour answers.
#[test]
fn connect_survives_a_lost_arp_request() {
    let test = "connect_survives_a_lost_arp_request";
    if skip_unless_root(test) {
        return;
    }
    let mut link = Link::open(7, None).unwrap_or_else(|e| panic!("{test}: link setup: {e}"));
    let mut arp_requests = 0;
    link.driver.drop_to_kernel(Box::new(move |frame| {
        let first = support::is_arp(frame) && arp_requests == 0;
        arp_requests += u32::from(support::is_arp(frame));
        first
    }));
    let case = Case { limit: Duration::from_secs(10), ..Case::new(Opener::TcpCore, 4) };
    let report = run_case(&mut link, case, 5300)
        .unwrap_or_else(|e| panic!("{test}: {e}{}", link.driver.diagnostics(test)));
    // The case's own limit (10 s) bounds it: without ARP retries it would never connect.
    println!("{test}: ok in {:.2?}", report.elapsed);
}

/// While a hole at RCV.NXT holds tcp-core's receive window full of out-of-order data, Linux
/// can only send pure ACKs, whose sequence number is then exactly RCV.NXT + RCV.WND. Linux
/// (`tcp_sequence`) and BSD accept such segments; tcp-core must too, or it ignores the ACKs
/// of its own data and its upload stalls until the hole is filled.
#[test]
fn tcp_core_keeps_sending_while_a_hole_holds_its_receive_window_full() {
    let test = "tcp_core_keeps_sending_while_a_hole_holds_its_receive_window_full";
    if skip_unless_root(test) {
        return;
    }
    let mut link = Link::open(8, None).unwrap_or_else(|e| panic!("{test}: link setup: {e}"));
    // Once Linux's window has opened up (1 MiB into its stream), drop one of its data
    // segments, and every retransmission of it, for HOLE_HELD.
    const HOLE_AT: u32 = 1 << 20;
    const HOLE_HELD: Duration = Duration::from_millis(600);
    let mut first_seq = None;
    let mut hole: Option<(u32, Instant)> = None;
    link.driver.drop_from_kernel(Box::new(move |frame| {
        let Some(seg) = support::tcp_summary(frame).filter(|s| s.payload_len > 0) else {
            return false;
        };
        let base = *first_seq.get_or_insert(seg.seq);
        if hole.is_none() && seg.seq.wrapping_sub(base) >= HOLE_AT {
            hole = Some((seg.seq, Instant::now()));
        }
        hole.is_some_and(|(seq, since)| seq == seg.seq && since.elapsed() < HOLE_HELD)
    }));
    let case = Case { upload: 16 << 20, download: 4 << 20, ..Case::new(Opener::TcpCore, 0) };
    let report = run_case(&mut link, case, 5400)
        .unwrap_or_else(|e| panic!("{test}: {e}{}", link.driver.diagnostics(test)));
    println!(
        "{test}: ok in {:.2?}, upload acknowledged after {:?} ({})",
        report.elapsed, report.upload_acked_after, report.stats
    );
    capture_if_asked(&link, test);
    report.upload_acked_after.expect("upload never acknowledged");
    // Dropping the pure ACKs at the edge of the window (the bug this guards) drops every ACK
    // of the window in flight, dozens of them, and stalls the upload into timeouts. On a
    // busy machine a descheduled driver can make Linux resend a segment or two that tcp-core
    // rightly discards as duplicates (seen: 1–2 drops, at most one timeout, under four
    // spinning processes on two CPUs), so a handful is allowed.
    assert!(
        report.conn.dropped < 8,
        "tcp-core dropped {} of Linux's segments while a hole held its receive window full ({})",
        report.conn.dropped,
        report.stats
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
        match run_case(&mut link, Case::new(opener, size), port) {
            Ok(report) => {
                println!("{label}: ok in {:.2?} ({})", report.elapsed, report.stats);
                capture_if_asked(&link, &label);
            }
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

/// With `TCP_CORE_INTEROP_PCAP` set, writes the capture of a passing case too.
fn capture_if_asked(link: &Link, label: &str) {
    if std::env::var_os("TCP_CORE_INTEROP_PCAP").is_some() {
        println!("{label}: capture{}", link.driver.diagnostics(label));
    }
}

#[derive(Debug)]
struct CaseReport {
    elapsed: Duration,
    /// From the start of the exchange until Linux had acknowledged all of tcp-core's data.
    upload_acked_after: Option<Duration>,
    /// tcp-core's connection statistics at the end.
    stats: String,
    conn: ConnectionStats,
    /// The most bytes that waited in tcp-core's receive queue.
    peak_recv_queue: usize,
}

/// What the tcp-core side of a case found.
struct TcpCoreOutcome {
    upload_acked_after: Option<Duration>,
    received: Digest,
    linux_received: Digest,
    conn: ConnectionStats,
    peak_recv_queue: usize,
}

/// One full-duplex connection on `port`.
fn run_case(link: &mut Link, case: Case, port: u16) -> Result<CaseReport, String> {
    let started = Instant::now();
    let deadline = started + case.limit;
    let from_tcp_core = peer::payload(0x7c_0000 + u64::from(port), case.upload);
    let from_linux = peer::payload(0x11_0000 + u64::from(port), case.download);
    let expected_at_linux = Digest::of(&from_tcp_core);
    let expected_at_tcp_core = Digest::of(&from_linux);

    let Link { driver, ns, linux_ip, tcp_core_ip, .. } = link;
    let linux_addr = SocketAddrV4::new(*linux_ip, port);
    let tcp_core_addr = SocketAddrV4::new(*tcp_core_ip, port);
    let listener = match case.opener {
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
                .run_inside(|| {
                    let stream = match case.opener {
                        Opener::TcpCore => {
                            let listener = TcpListener::bind(linux_addr)
                                .map_err(|e| format!("linux bind {linux_addr}: {e}"))?;
                            let _ = ready_tx.send(());
                            peer::accept_one(&listener, limits)?
                        }
                        Opener::Linux => {
                            let _ = ready_tx.send(());
                            peer::connect(tcp_core_addr, limits)?
                        }
                    };
                    peer::exchange(stream, from_linux, case.read_pause, limits)
                })
                .map_err(|e| format!("joining the namespace: {e}"))
                .and_then(|r| r);
            let _ = done_tx.send(result);
        });
        let linux = LinuxSide { ready: &ready_rx, done: &done_rx };
        let tcp_core =
            tcp_core_side(driver, case, linux_addr, listener, from_tcp_core, linux, deadline);
        if tcp_core.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        tcp_core
    });
    if let Some(l) = listener {
        driver.stack.close_listener(l);
    }
    let outcome = outcome?;
    if outcome.linux_received != expected_at_linux {
        return Err(format!(
            "Linux received {:?}, tcp-core sent {expected_at_linux:?}",
            outcome.linux_received
        ));
    }
    if outcome.received != expected_at_tcp_core {
        return Err(format!(
            "tcp-core received {:?}, Linux sent {expected_at_tcp_core:?}",
            outcome.received
        ));
    }
    Ok(CaseReport {
        elapsed: started.elapsed(),
        upload_acked_after: outcome.upload_acked_after,
        stats: format!("{:?}", outcome.conn),
        conn: outcome.conn,
        peak_recv_queue: outcome.peak_recv_queue,
    })
}

/// How the tcp-core side hears from the Linux thread.
#[derive(Clone, Copy)]
struct LinuxSide<'a> {
    /// Signalled once the Linux side listens (or is about to connect).
    ready: &'a mpsc::Receiver<()>,
    /// The Linux side's result: the digest of what it received.
    done: &'a mpsc::Receiver<Result<Digest, String>>,
}

/// The tcp-core half of a case: open (or accept) the connection, run the exchange until both
/// streams are complete and the Linux side reported, then close.
fn tcp_core_side(
    driver: &mut TapStack,
    case: Case,
    linux_addr: SocketAddrV4,
    listener: Option<ListenerHandle>,
    outgoing: Vec<u8>,
    linux: LinuxSide<'_>,
    deadline: Instant,
) -> Result<TcpCoreOutcome, String> {
    let left = || deadline.saturating_duration_since(Instant::now());
    if linux.ready.recv_timeout(Duration::from_secs(10).min(left())).is_err() {
        return Err(match linux.done.try_recv() {
            Ok(Err(e)) => e,
            _ => "the Linux side never got ready".into(),
        });
    }

    let handle: SocketHandle = match listener {
        Some(l) => driver.run_until(left(), "Linux to connect", |stack, _, _| {
            if let Ok(Err(e)) = linux.done.try_recv() {
                return Err(e);
            }
            match stack.accept(l) {
                Ok((h, _)) => Ok(Some(h)),
                Err(AcceptError::WouldBlock) => Ok(None),
                Err(e) => Err(format!("accept: {e}")),
            }
        })?,
        None => {
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

    let exchange_started = driver.now();
    let resume_reading = exchange_started + case.read_pause;
    let mut exchange = Exchange::new(handle, outgoing).pause_reading_until(resume_reading);
    let mut linux_received = None;
    let run = driver.run_until(left(), "both transfers to finish", |stack, now, _| {
        let received = exchange.pump(stack, now)?;
        match linux.done.try_recv() {
            Ok(Ok(digest)) => linux_received = Some(digest),
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
        Ok(received.zip(linux_received))
    });
    let conn = driver.stack.connection_stats(handle).unwrap_or_default();
    let progress = exchange.progress(&driver.stack);
    let _ = driver.stack.close(handle);
    let (received, linux_received) = run.map_err(|e| format!("{e}; {progress}"))?;
    Ok(TcpCoreOutcome {
        upload_acked_after: exchange.all_acked_at().map(|t| t - exchange_started),
        received,
        linux_received,
        conn,
        peak_recv_queue: exchange.peak_recv_queue(),
    })
}
