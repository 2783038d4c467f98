//! Live flow-group migration between real kernel instances (threads, in-memory NIC): the
//! test thread is the peer host and drives the control plane's move protocol through the
//! plane's own `BalanceLoop`.

mod instance_support;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowgroups::balancer::{BalancerPolicy, Move};
use flowgroups::channel::client::Client;
use flowgroups::control::{ControlMessage, ControlSegment, ControlSlot, GroupState};
use flowgroups::flowgroup::{FlowGroupConfig, FlowGroupTable, flow_group_of};
use flowgroups::plane::balance_loop::{BalanceLoop, InstanceLink};
use flowgroups::shm::RingConsumer;
use flowgroups::steering::SoftwareSteering;
use instance_support::*;
use tcp_core::stack::{Event, SocketHandle};
use tcp_core::tcp::State;

const WAIT: Duration = Duration::from_secs(20);

/// The control plane's part, played by the test: the real balance loop, the instances'
/// reply rings, and a software steering table (the emulated NIC steers by the control
/// segment's owner table, which the loop writes).
struct Plane {
    bl: BalanceLoop,
    /// A second view of the control segment (the plane's own mapping).
    control: ControlSegment,
    from: Vec<RingConsumer<ControlSlot>>,
    steering: SoftwareSteering,
    /// Every message the instances sent, in order.
    log: Vec<(u16, ControlMessage)>,
}

struct Link<'a>(&'a mut Net);

impl InstanceLink for Link<'_> {
    fn send(&mut self, instance: u16, msg: ControlMessage) -> bool {
        self.0.send_control(instance, msg);
        true
    }
}

impl Plane {
    fn new(net: &Net, policy: BalancerPolicy) -> Plane {
        let n = net.instances.len() as u16;
        Plane {
            bl: BalanceLoop::new(policy, GROUPS).unwrap(),
            control: ControlSegment::from_segment(Arc::clone(net.control.segment())).unwrap(),
            from: (0..n)
                .map(|i| net.control.instance_to_plane(i).unwrap().consumer().unwrap())
                .collect(),
            steering: SoftwareSteering::new(FlowGroupTable::new(GROUPS, n).unwrap(), |_, _| {}),
            log: Vec::new(),
        }
    }

    fn start(&mut self, net: &mut Net, m: Move) {
        assert!(self.bl.begin_move(&self.control, &mut Link(net), m, Instant::now()));
    }

    /// Reads the instances' replies and advances the move.
    fn step(&mut self, net: &mut Net) {
        let alive = vec![true; net.instances.len()];
        for (i, ring) in self.from.iter_mut().enumerate() {
            while let Some(slot) = ring.pop().unwrap() {
                let msg = ControlMessage::decode(&slot, self.control.layout()).unwrap();
                self.log.push((i as u16, msg));
                self.bl.on_message(
                    i as u16,
                    msg,
                    &self.control,
                    &mut self.steering,
                    &mut Link(net),
                    &alive,
                    Instant::now(),
                );
            }
        }
        self.bl.check_moves(&self.control, &alive, Instant::now());
    }

    fn done(&self) -> bool {
        self.bl.moves_in_flight() == 0
    }
}

/// Byte `k` of the stream identified by `seed`: any lost, repeated or reordered byte
/// breaks the comparison.
fn pattern(seed: u64, k: u64) -> u8 {
    let x = (k ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x >> 56) as u8 ^ (k as u8)
}

fn fill(seed: u64, from: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, from + i as u64);
    }
}

/// True if the frame is a TCP segment with RST set.
fn is_reset(frame: &[u8]) -> bool {
    if tcp_tuple(frame).is_none() {
        return false;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame.get(14 + ihl + 13).is_some_and(|f| f & 0x04 != 0)
}

/// Moves frames between the peer and the instances, counting resets either way.
fn pump(net: &Net, peer: &mut Peer, resets: &mut u32) -> usize {
    let now = peer.now();
    let mut moved = 0;
    let _ = net.peer_bell.drain();
    for h in &net.instances {
        while let Some(f) = h.tx.pop() {
            *resets += u32::from(is_reset(&f));
            peer.stack.handle_frame(now, &f);
            moved += 1;
        }
    }
    if peer.stack.poll_timeout().is_some_and(|t| t <= now) {
        peer.stack.handle_timeout(now);
    }
    let mut buf = vec![0u8; 1514];
    while let Some(n) = peer.stack.poll_transmit(now, &mut buf) {
        *resets += u32::from(is_reset(&buf[..n]));
        net.inject(buf[..n].to_vec());
        moved += 1;
    }
    if moved == 0 {
        let _ = net.peer_bell.wait(Some(Duration::from_millis(1)));
    }
    moved
}

/// Peer ports whose connections to the server's `port` fall into `group`.
fn ports_in_group(group: u32, port: u16, count: usize) -> Vec<u16> {
    let cfg = FlowGroupConfig::default();
    (20000..u16::MAX)
        .filter(|&p| flow_group_of(&cfg, PEER_IP, SERVER_IP, p, port) == group)
        .take(count)
        .collect()
}

/// Server side of one stream: sends `len` pattern bytes seeded by the peer's port while
/// checking the `len` bytes the peer sends (seeded by the port plus one), then closes.
/// Returns the bytes received.
fn serve_stream(client: &Client, s: flowgroups::channel::SocketId, seed: u64, len: u64) -> u64 {
    let (mut sent, mut got) = (0u64, 0u64);
    let mut out = vec![0u8; 8192];
    let mut inp = vec![0u8; 8192];
    while sent < len || got < len {
        let mut progress = false;
        if sent < len {
            let n = (len - sent).min(out.len() as u64) as usize;
            fill(seed, sent, &mut out[..n]);
            match client.send(s, &out[..n], false) {
                Ok(k) => {
                    sent += k as u64;
                    progress |= k > 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("server send on stream {seed}: {e}"),
            }
        }
        match client.recv(s, &mut inp, false) {
            Ok(0) => assert!(got >= len, "stream {seed}: end of stream after {got} bytes"),
            Ok(n) => {
                for (i, &b) in inp[..n].iter().enumerate() {
                    assert_eq!(
                        b,
                        pattern(seed + 1, got + i as u64),
                        "stream {seed}: byte {}",
                        got + i as u64
                    );
                }
                got += n as u64;
                progress = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("server recv on stream {seed} after {got} bytes: {e}"),
        }
        if !progress {
            let _ = client.wait(Some(Duration::from_millis(2)));
        }
    }
    client.close(s).unwrap();
    got
}

struct PeerStream {
    h: SocketHandle,
    seed: u64,
    sent: u64,
    got: u64,
}

#[test]
fn a_group_with_twenty_streaming_connections_moves_without_losing_a_byte() {
    const STREAMS: usize = 20;
    const LEN: u64 = 96 * 1024;
    const PORT: u16 = 7000;
    let mut net = Net::start("t-mig-live", Options { instances: 2, ..Options::default() });
    introduce_peer(&net, 0);
    introduce_peer(&net, 1);
    let app = net.add_app(0);
    let listener = app.listen(PORT, 64).unwrap();
    let group = 6; // owned by instance 0 in the round-robin table
    assert_eq!(net.control.flow_group(group).unwrap().owner.load(Ordering::Relaxed), 0);
    let ports = ports_in_group(group, PORT, STREAMS);

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(BTreeMap::new()));
    let server = {
        let (app, stop, received) = (app.clone(), stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut workers = Vec::new();
            while workers.len() < STREAMS && !stop.load(Ordering::Relaxed) {
                match app.accept(listener, false) {
                    Ok((s, peer)) => {
                        let (app, received) = (app.clone(), received.clone());
                        workers.push(std::thread::spawn(move || {
                            let seed = u64::from(peer.port());
                            let got = serve_stream(&app, s, seed, LEN);
                            received.lock().unwrap().insert(peer.port(), got);
                        }));
                    }
                    Err(_) => {
                        let _ = app.wait(Some(Duration::from_millis(5)));
                    }
                }
            }
            for w in workers {
                w.join().unwrap();
            }
        })
    };

    let mut peer = Peer::new();
    let now = peer.now();
    peer.stack.add_neighbor(now, SERVER_IP, SERVER_MAC);
    let mut streams: Vec<PeerStream> = ports
        .iter()
        .map(|&p| PeerStream {
            h: peer.stack.connect(now, SocketAddrV4::new(SERVER_IP, PORT), Some(p)).unwrap(),
            seed: u64::from(p),
            sent: 0,
            got: 0,
        })
        .collect();
    let mut plane = Plane::new(&net, BalancerPolicy::Live);
    let mut resets = 0u32;
    let mut moved_at = None;
    let mut requests_before = 0;
    // Instance 0's request count when the move finished (the connections live on 1).
    let mut old_owner_requests_at_done = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut buf = vec![0u8; 16384];
    loop {
        assert!(
            Instant::now() < deadline,
            "streams did not finish: {:?}",
            streams.iter().map(|s| (s.sent, s.got)).collect::<Vec<_>>()
        );
        pump(&net, &mut peer, &mut resets);
        plane.step(&mut net);
        while let Some(ev) = peer.stack.poll_event() {
            if let Event::Closed(h, reason) = ev {
                let s = streams.iter().find(|s| s.h == h);
                assert!(
                    s.is_none_or(|s| s.got == LEN && s.sent == LEN),
                    "stream closed early ({reason:?})"
                );
            }
        }
        // Until the move starts each stream stops at a third of its data both ways, so
        // that every connection is mid-stream (with bytes queued on both sides) when its
        // group is frozen; then everything flows again while the move is under way.
        let limit = if moved_at.is_none() { LEN / 3 } else { LEN };
        for s in &mut streams {
            if peer.stack.state(s.h).ok() == Some(State::SynSent) {
                continue;
            }
            while s.sent < limit {
                let n = (limit - s.sent).min(8192) as usize;
                fill(s.seed + 1, s.sent, &mut buf[..n]);
                match peer.stack.send(s.h, &buf[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => s.sent += k as u64,
                }
            }
            while s.got < limit {
                let room = ((limit - s.got) as usize).min(buf.len());
                let Ok(n) = peer.stack.recv(s.h, &mut buf[..room]) else { break };
                if n == 0 {
                    break;
                }
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(
                        b,
                        pattern(s.seed, s.got + i as u64),
                        "peer stream {}: byte {}",
                        s.seed,
                        s.got + i as u64
                    );
                }
                s.got += n as u64;
            }
            if s.got == LEN && s.sent == LEN && peer.stack.state(s.h).ok() == Some(State::CloseWait)
            {
                peer.stack.close(s.h).unwrap();
            }
        }
        let total_got: u64 = streams.iter().map(|s| s.got).sum();
        // Move once every stream reached its third.
        if moved_at.is_none() && streams.iter().all(|s| s.got == LEN / 3 && s.sent == LEN / 3) {
            // The app's requests so far went to its home, instance 0 (instance 1 saw only
            // the replicated Listen).
            std::thread::sleep(Duration::from_millis(30));
            requests_before = net.shared(1).app_requests.load(Ordering::Relaxed);
            plane.start(&mut net, Move { group, from: 0, to: 1 });
            moved_at = Some(total_got);
        }
        if moved_at.is_some() && plane.done() && old_owner_requests_at_done.is_none() {
            std::thread::sleep(Duration::from_millis(30));
            old_owner_requests_at_done = Some(net.shared(0).app_requests.load(Ordering::Relaxed));
        }
        let finished = streams.iter().all(|s| s.got == LEN && s.sent == LEN);
        if finished && plane.done() && received.lock().unwrap().len() == STREAMS {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    let moved_at = moved_at.expect("the group moved");
    assert!(moved_at < STREAMS as u64 * LEN, "the move happened mid-stream");
    assert_eq!(resets, 0, "no segment with RST crossed the wire");
    let received = received.lock().unwrap();
    assert!(received.values().all(|&g| g == LEN), "{received:?}");
    // The plane's view: one move, completed, with every connection.
    assert_eq!(plane.bl.completed_moves, 1);
    assert_eq!(plane.bl.migrated_connections, STREAMS as u64);
    let g = net.control.flow_group(group).unwrap();
    assert_eq!(g.owner.load(Ordering::Relaxed), 1);
    assert_eq!(g.state.load(Ordering::Relaxed), GroupState::Active as u32);
    let kinds: Vec<String> = plane
        .log
        .iter()
        .filter(|(_, m)| !matches!(m, ControlMessage::Heartbeat { .. }))
        .map(|(i, m)| format!("{i}:{m:?}"))
        .collect();
    assert_eq!(
        kinds,
        vec![
            format!("0:{:?}", ControlMessage::ExportDone { group, connections: STREAMS as u32 }),
            format!("0:{:?}", ControlMessage::ForwardingDone { group }),
            format!("1:{:?}", ControlMessage::GroupOwned { group }),
        ],
        "the protocol's messages, in order"
    );
    // Instance 1 served the moved sockets' requests (doorbells, and a close each), and
    // the app sent them to it directly: it follows the slots' Owner word, so after the
    // move instance 0 took (almost) none of them to hand on. (Following the owner cached
    // at accept, all 20 closes alone would have gone through instance 0.)
    std::thread::sleep(Duration::from_millis(30));
    let requests_after = net.shared(1).app_requests.load(Ordering::Relaxed);
    assert!(
        requests_after >= requests_before + STREAMS as u64,
        "instance 1 served the moved sockets' requests ({requests_before} -> {requests_after})"
    );
    let at_done = old_owner_requests_at_done.expect("the move finished");
    let old_owner_after = net.shared(0).app_requests.load(Ordering::Relaxed);
    assert!(
        old_owner_after - at_done < STREAMS as u64 / 2,
        "requests still went through the old owner: {at_done} -> {old_owner_after}"
    );
    let results = net.shutdown();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}

/// The race of `idle` moves: a SYN answered by the old owner just before the switch. The
/// peer's ACK then reaches the new owner, which hands it to the old one (residue), so the
/// handshake completes there; a SYN that arrives during the freeze completes on the new
/// owner. Nobody sends a reset.
#[test]
fn a_handshake_in_flight_across_an_idle_move_completes() {
    const PORT: u16 = 7100;
    let mut net = Net::start("t-mig-race", Options { instances: 2, ..Options::default() });
    introduce_peer(&net, 0);
    introduce_peer(&net, 1);
    let app = net.add_app(0);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = echo_server(app.clone(), PORT, 4, 2, stop.clone());
    let group = 10;
    let ports = ports_in_group(group, PORT, 2);
    let mut peer = Peer::new();
    let now = peer.now();
    peer.stack.add_neighbor(now, SERVER_IP, SERVER_MAC);
    let mut plane = Plane::new(&net, BalancerPolicy::Idle);
    let mut resets = 0u32;

    // The SYN reaches instance 0, which answers; the peer's ACK is held back.
    let early =
        peer.stack.connect(now, SocketAddrV4::new(SERVER_IP, PORT), Some(ports[0])).unwrap();
    let mut buf = vec![0u8; 1514];
    let n = peer.stack.poll_transmit(now, &mut buf).unwrap();
    net.inject(buf[..n].to_vec());
    let synack = wait_for("the SYN-ACK", WAIT, || net.instances[0].tx.pop());
    peer.stack.handle_frame(peer.now(), &synack);
    let n = peer.stack.poll_transmit(peer.now(), &mut buf).unwrap();
    let ack = buf[..n].to_vec();
    assert_eq!(peer.stack.state(early).unwrap(), State::Established);

    // The group moves (no connection is established in it: the half-open one stays on
    // instance 0 as residue).
    plane.start(&mut net, Move { group, from: 0, to: 1 });
    wait_for("the export", WAIT, || {
        plane.step(&mut net);
        plane.log.iter().any(|(_, m)| matches!(m, ControlMessage::ExportDone { .. })).then_some(())
    });
    assert_eq!(plane.log[0], (0, ControlMessage::ExportDone { group, connections: 0 }));
    wait_for("the move", WAIT, || {
        plane.step(&mut net);
        plane.done().then_some(())
    });
    assert_eq!(net.control.flow_group(group).unwrap().owner.load(Ordering::Relaxed), 1);
    // Now the ACK arrives: the NIC delivers it to instance 1.
    net.inject(ack);
    let late =
        peer.stack.connect(peer.now(), SocketAddrV4::new(SERVER_IP, PORT), Some(ports[1])).unwrap();
    let mut replies: BTreeMap<SocketHandle, Vec<u8>> = BTreeMap::new();
    let payload = |h: SocketHandle| if h == early { *b"earl" } else { *b"late" };
    let mut sent = Vec::new();
    wait_for("both echoes", WAIT, || {
        pump(&net, &mut peer, &mut resets);
        for h in [early, late] {
            if peer.stack.state(h).ok() == Some(State::Established) && !sent.contains(&h) {
                peer.stack.send(h, &payload(h)).unwrap();
                sent.push(h);
            }
            let mut b = [0u8; 8];
            if let Ok(n) = peer.stack.recv(h, &mut b) {
                replies.entry(h).or_default().extend_from_slice(&b[..n]);
            }
        }
        while let Some(ev) = peer.stack.poll_event() {
            assert!(
                !matches!(ev, Event::Closed(_, tcp_core::tcp::CloseReason::Reset)),
                "a reset: {ev:?} (early {early:?}, late {late:?}), log {:?}, c0 {:?}",
                plane.log,
                (
                    net.shared(0).forwarded_packets.load(Ordering::Relaxed),
                    net.shared(1).forwarded_packets.load(Ordering::Relaxed)
                )
            );
        }
        (replies.get(&early).is_some_and(|r| r.len() == 4)
            && replies.get(&late).is_some_and(|r| r.len() == 4))
        .then_some(())
    });
    assert_eq!(replies[&early], b"earl");
    assert_eq!(replies[&late], b"late");
    for h in [early, late] {
        peer.stack.close(h).unwrap();
    }
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        pump(&net, &mut peer, &mut resets);
    }
    assert_eq!(resets, 0, "no reset on the wire");
    // The early connection finished on instance 0 through residue forwarding.
    let c0 = net.shared(0);
    assert!(c0.accepts.load(Ordering::Relaxed) >= 1);
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
    let results = net.shutdown();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
}
