//! The veth scenarios: one queue of a veth pair whose peer end lives in a network namespace
//! the benchmark creates, driven by an `AF_PACKET` socket (the baseline) and by AF_XDP in SKB
//! and driver mode with a copy bind (veth has no zero-copy).
//!
//! - TX: the queue on the local end sends frames to the peer. Counted: frames the veth
//!   carried (its `tx_packets` in sysfs) against frames the queue accepted.
//! - RX: a generator thread inside the namespace sends from the peer end through its own
//!   `AF_PACKET` socket; the queue on the local end receives. Counted: frames the queue
//!   delivered against frames the generator sent.
//!
//! Frames are addressed to a MAC address nobody owns, so wherever the kernel's own stack sees
//! them it drops them at its first check (`PACKET_OTHERHOST`) instead of routing them: the
//! baseline does not pay for a stack traversal the XSK never makes, and no benchmark frame
//! can leave the veth pair. No interface gets an IP address.
//!
//! Where the work happens matters for reading the figures: veth delivers a frame on the
//! sending CPU (its transmit hands the frame to the peer's receive path in the same softirq),
//! so in the RX tests the kernel's receive work — XDP, the copy into the UMEM or the packet
//! socket's queue — runs on the generator's CPU, and the measured thread only drains rings
//! (AF_XDP) or copies out of socket buffers (AF_PACKET).

use std::fs;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ixgbe_user::QueuePair;
use ixgbe_user::afxdp::{AfXdpPort, BindMode, XdpError, XdpMode, XskConfig};
use ixgbe_user::linux::netns::{NetNamespace, VethPair, running_as_root, unique_name};
use ixgbe_user::linux::{PacketSocket, interface_mac};

use super::{
    AF_PACKET, BenchError, Direction, FRAME_LEN, Measurement, RunConfig, Skipped,
    pin_current_thread, receive_batch, run_window, setup, transmit_batch, udp_frame,
    unpin_current_thread,
};

/// A locally administered unicast address that no interface has.
const NOBODY_MAC: [u8; 6] = [0x02, 0xbe, 0x4c, 0x00, 0x00, 0x01];
const SRC_IP: [u8; 4] = [10, 77, 9, 1];
const DST_IP: [u8; 4] = [10, 77, 9, 2];

/// The ways the local veth end is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VethBackend {
    /// An `AF_PACKET` socket with recvmmsg/sendmmsg batches.
    AfPacket,
    /// An XSK bound in copy mode, the redirect program attached in the given mode.
    AfXdp(XdpMode),
}

impl VethBackend {
    /// All backends, the baseline first.
    pub const ALL: [VethBackend; 3] = [
        VethBackend::AfPacket,
        VethBackend::AfXdp(XdpMode::Skb),
        VethBackend::AfXdp(XdpMode::Driver),
    ];

    /// Name in reports.
    pub fn name(self) -> String {
        match self {
            VethBackend::AfPacket => AF_PACKET.into(),
            VethBackend::AfXdp(XdpMode::Skb) => "AF_XDP SKB mode, copy".into(),
            VethBackend::AfXdp(XdpMode::Driver) => "AF_XDP driver mode, copy".into(),
            VethBackend::AfXdp(mode) => format!("AF_XDP {mode} mode, copy"),
        }
    }
}

/// The queue under test; the XSK goes before its port (which detaches the program).
struct LocalQueue {
    queue: Box<dyn QueuePair>,
    _port: Option<AfXdpPort>,
}

fn open_local(backend: VethBackend, interface: &str) -> Result<LocalQueue, BenchError> {
    match backend {
        VethBackend::AfPacket => {
            let socket = PacketSocket::open(interface).map_err(setup("open AF_PACKET"))?;
            Ok(LocalQueue { queue: Box::new(socket), _port: None })
        }
        VethBackend::AfXdp(mode) => {
            let port = AfXdpPort::open(interface, mode, 1).map_err(setup("attach XDP"))?;
            let config = XskConfig { bind_mode: BindMode::Copy, ..XskConfig::default() };
            // The kernel releases a closed XSK's buffer pool from the queue in deferred work,
            // so right after the previous backend's socket closed, bind(2) can still find the
            // queue taken (EBUSY) for a moment.
            let deadline = Instant::now() + Duration::from_secs(2);
            let socket = loop {
                match port.open_queue(0, &config) {
                    Err(XdpError::Syscall { source, .. })
                        if source.raw_os_error() == Some(libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    other => break other.map_err(setup("bind the XSK"))?,
                }
            };
            Ok(LocalQueue { queue: Box::new(socket), _port: Some(port) })
        }
    }
}

/// A veth statistics counter from sysfs.
fn interface_counter(interface: &str, counter: &str) -> Result<u64, BenchError> {
    let path = format!("/sys/class/net/{interface}/statistics/{counter}");
    let text = fs::read_to_string(&path).map_err(setup(&path))?;
    text.trim().parse().map_err(|e| BenchError::Setup(format!("{path}: {e}")))
}

/// Runs TX and RX for every backend; backends the kernel refuses are reported as skipped.
pub fn run(config: &RunConfig) -> Result<(Vec<Measurement>, Vec<Skipped>), BenchError> {
    if !running_as_root() {
        let skipped = VethBackend::ALL
            .iter()
            .map(|b| Skipped {
                backend: b.name(),
                reason: "needs root (network namespace, veth, XDP)".into(),
            })
            .collect();
        return Ok((Vec::new(), skipped));
    }
    // Fields drop in reverse: the veth pair, then the namespace.
    let ns = NetNamespace::create(&unique_name("bns")).map_err(setup("create a namespace"))?;
    let veth = VethPair::create(&unique_name("bva"), &unique_name("bvb"), &ns, 1)
        .map_err(setup("create a veth pair"))?;
    pin_current_thread(config, 1).map_err(setup("pin the measuring thread"))?;
    let mut measurements = Vec::new();
    let mut skipped = Vec::new();
    for backend in VethBackend::ALL {
        let mut local = match open_local(backend, veth.local()) {
            Ok(local) => local,
            Err(e) => {
                skipped.push(Skipped { backend: backend.name(), reason: e.to_string() });
                continue;
            }
        };
        measurements.push(transmit_test(config, backend, &mut local, veth.local())?);
        measurements.push(receive_test(config, backend, &mut local, &ns, veth.peer())?);
    }
    unpin_current_thread(config).map_err(setup("unpin"))?;
    drop(veth);
    drop(ns);
    Ok((measurements, skipped))
}

fn transmit_test(
    config: &RunConfig,
    backend: VethBackend,
    local: &mut LocalQueue,
    interface: &str,
) -> Result<Measurement, BenchError> {
    let src_mac = local.queue.mac_address();
    let frame = udp_frame(NOBODY_MAC, src_mac, SRC_IP, DST_IP, 4000, 5000);
    let window = run_window(
        config,
        local,
        |l| {
            transmit_batch(l.queue.as_mut(), &frame)?;
            Ok(())
        },
        |l| Ok((l.queue.stats().tx_packets, interface_counter(interface, "tx_packets")?)),
    )?;
    Ok(Measurement {
        backend: backend.name(),
        direction: Direction::Tx,
        packets: window.end.1.saturating_sub(window.start.1),
        offered: window.end.0.saturating_sub(window.start.0),
        seconds: window.seconds,
    })
}

fn receive_test(
    config: &RunConfig,
    backend: VethBackend,
    local: &mut LocalQueue,
    ns: &NetNamespace,
    peer: &str,
) -> Result<Measurement, BenchError> {
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let generator = scope.spawn(|| {
            ns.run_inside(|| generate(config, peer, &stop, &sent))
                .map_err(setup("enter the namespace"))?
        });
        let mut sink = 0u64;
        let window = run_window(
            config,
            local,
            |l| {
                if receive_batch(l.queue.as_mut(), &mut sink)? == 0 {
                    std::hint::spin_loop();
                }
                // A generator that failed to start would leave us polling an idle queue.
                if generator.is_finished() {
                    return Err(BenchError::Setup("the traffic generator stopped".into()));
                }
                Ok(())
            },
            |l| Ok((l.queue.stats().rx_packets, sent.load(Ordering::Relaxed))),
        );
        stop.store(true, Ordering::Relaxed);
        let generated = generator
            .join()
            .map_err(|_| BenchError::Setup("the traffic generator panicked".into()))?;
        // The generator's own error explains a failed window best.
        generated?;
        let window = window?;
        Ok(Measurement {
            backend: backend.name(),
            direction: Direction::Rx,
            packets: window.end.0.saturating_sub(window.start.0),
            offered: window.end.1.saturating_sub(window.start.1),
            seconds: window.seconds,
        })
    })
}

/// Sends minimum-size frames from the peer end (inside the namespace) until `stop`;
/// publishes the count the kernel accepted in `sent`.
fn generate(
    config: &RunConfig,
    peer: &str,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<(), BenchError> {
    pin_current_thread(config, 0).map_err(setup("pin the generator"))?;
    let mut socket = PacketSocket::open(peer).map_err(setup("open the generator socket"))?;
    let peer_mac = interface_mac(peer).map_err(|e: io::Error| setup("peer MAC")(e))?;
    let frame: [u8; FRAME_LEN] = udp_frame(NOBODY_MAC, peer_mac, DST_IP, SRC_IP, 5000, 4000);
    while !stop.load(Ordering::Relaxed) {
        transmit_batch(&mut socket, &frame)?;
        sent.store(socket.stats().tx_packets, Ordering::Relaxed);
    }
    Ok(())
}
