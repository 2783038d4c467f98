//! Test harness for kernel instances: real `KernelInstance`s, each running `run()` in its
//! own thread, behind an emulated NIC. Each instance has an in-memory queue pair; the NIC
//! side either steers every TCP frame from the peer to the owner of its flow group (as RSS
//! with the RETA would, non-IP to queue 0) or sends everything to queue 0 (a NIC without
//! RSS control, so the instances must forward). The test thread is the control plane (it
//! created the control segment and talks over the plane sockets and control rings) and
//! the peer host (a tcp-core `Stack`).

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use flowgroups::channel::client::Client;
use flowgroups::channel::{AppLayout, AppSegment};
use flowgroups::control::{
    ControlConfig, ControlLayout, ControlMessage, ControlSegment, ControlSlot,
};
use flowgroups::flowgroup::{FlowGroupConfig, FlowGroupHasher};
use flowgroups::instance::plane_link::send_app_fds;
use flowgroups::instance::{InstanceError, InstanceSetup, KernelInstance};
use flowgroups::shm::sys::thread_cpu_time;
use flowgroups::shm::{EventFd, RingProducer};
use ixgbe_user::{QueueError, QueuePair, QueueStats};
use tcp_core::stack::{Stack, StackConfig};
use tcp_core::wire::EthernetAddress;

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const SERVER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 100]);
pub const GROUPS: u32 = 128;

/// Frames in one direction of one queue, with an eventfd the consumer may block on.
pub struct FrameQueue {
    frames: Mutex<VecDeque<Vec<u8>>>,
    bell: EventFd,
}

impl FrameQueue {
    pub fn new(bell: EventFd) -> Arc<FrameQueue> {
        Arc::new(FrameQueue { frames: Mutex::new(VecDeque::new()), bell })
    }

    pub fn push(&self, frame: Vec<u8>) {
        self.frames.lock().unwrap().push_back(frame);
        self.bell.notify().unwrap();
    }

    pub fn pop(&self) -> Option<Vec<u8>> {
        self.frames.lock().unwrap().pop_front()
    }

    pub fn len(&self) -> usize {
        self.frames.lock().unwrap().len()
    }
}

/// The instance's end of an in-memory queue pair.
pub struct TestQueue {
    rx: Arc<FrameQueue>,
    tx: Arc<FrameQueue>,
    /// Offer the rx eventfd as wait descriptor (false: a poll-only backend like the 82599).
    with_wait_fd: bool,
    stats: QueueStats,
    scratch: Vec<u8>,
}

impl QueuePair for TestQueue {
    fn rx_burst(
        &mut self,
        max: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, QueueError> {
        // Drain the bell before looking, so a frame pushed after the look rings it again.
        self.rx.bell.drain()?;
        let mut n = 0;
        while n < max {
            let Some(f) = self.rx.pop() else { break };
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += f.len() as u64;
            on_frame(&f);
            n += 1;
        }
        Ok(n)
    }

    fn tx_one(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<bool, QueueError> {
        let n = build(&mut self.scratch);
        if let Some(frame) = self.scratch.get(..n).filter(|f| !f.is_empty()) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += n as u64;
            self.tx.push(frame.to_vec());
        }
        Ok(true)
    }

    fn tx_flush(&mut self) -> Result<(), QueueError> {
        Ok(())
    }

    fn max_frame_len(&self) -> usize {
        1514
    }

    fn mac_address(&self) -> [u8; 6] {
        SERVER_MAC.0
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }

    fn wait_fd(&self) -> Option<RawFd> {
        self.with_wait_fd.then(|| self.rx.bell.as_raw_fd())
    }
}

/// How the emulated NIC spreads frames from the peer over the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nic {
    /// TCP by flow-group owner, everything else to queue 0 (RSS + RETA).
    Rss,
    /// Everything to queue 0 (no RSS control: software steering).
    SingleQueue,
}

pub struct InstanceHandle {
    pub thread: Option<JoinHandle<Result<(), InstanceError>>>,
    pub plane: UnixStream,
    pub doorbell: EventFd,
    pub rx: Arc<FrameQueue>,
    pub tx: Arc<FrameQueue>,
    pub control_tx: RingProducer<ControlSlot>,
    /// CPU time and wall time of `run()`, set when it returns.
    pub run_cost: Arc<Mutex<Option<(Duration, Duration)>>>,
}

pub struct Options {
    pub instances: u16,
    pub nic: Nic,
    pub wait_fd: bool,
    pub peer_doorbells: bool,
    pub capture_dir: std::path::PathBuf,
    /// Instances not started (their rings fill up, for inspection).
    pub skip: Vec<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            instances: 1,
            nic: Nic::Rss,
            wait_fd: true,
            peer_doorbells: true,
            capture_dir: std::env::temp_dir(),
            skip: Vec::new(),
        }
    }
}

pub struct Net {
    pub control: ControlSegment,
    pub instances: Vec<InstanceHandle>,
    pub nic: Nic,
    hasher: FlowGroupHasher,
    /// Rung when any instance transmits.
    pub peer_bell: EventFd,
    next_app: u32,
}

pub fn config() -> ControlConfig {
    ControlConfig {
        ip: SERVER_IP.octets(),
        mac: SERVER_MAC.0,
        mtu: 1500,
        prefix_len: 24,
        ..ControlConfig::default()
    }
}

impl Net {
    pub fn start(name: &str, opts: Options) -> Net {
        let n = opts.instances;
        let control =
            ControlSegment::create(name, ControlLayout::new(n, GROUPS, 16).unwrap(), &config())
                .unwrap();
        let peer_bell = EventFd::new().unwrap();
        let doorbells: Vec<EventFd> = (0..n).map(|_| EventFd::new().unwrap()).collect();
        let mut instances = Vec::new();
        for i in 0..n {
            let rx = FrameQueue::new(EventFd::new().unwrap());
            let tx = FrameQueue::new(peer_bell.try_clone().unwrap());
            let (plane, inst_end) = UnixStream::pair().unwrap();
            let queue = TestQueue {
                rx: rx.clone(),
                tx: tx.clone(),
                with_wait_fd: opts.wait_fd,
                stats: QueueStats::default(),
                scratch: vec![0; 1514],
            };
            let seg = ControlSegment::open(control.fd().try_clone_to_owned().unwrap()).unwrap();
            let setup = InstanceSetup {
                index: i,
                control: seg,
                plane: inst_end,
                doorbell: doorbells[i as usize].try_clone().unwrap(),
                queue: Box::new(queue),
                stack: StackConfig::new(SERVER_MAC, SERVER_IP, 24, [7; 16]),
                flow_groups: FlowGroupConfig::default(),
                capture_dir: opts.capture_dir.clone(),
            };
            let peers: Vec<(u16, EventFd)> = if opts.peer_doorbells {
                (0..n)
                    .filter(|&p| p != i)
                    .map(|p| (p, doorbells[p as usize].try_clone().unwrap()))
                    .collect()
            } else {
                Vec::new()
            };
            let run_cost = Arc::new(Mutex::new(None));
            let cost = run_cost.clone();
            let thread = (!opts.skip.contains(&i)).then(|| {
                std::thread::Builder::new()
                    .name(format!("instance-{i}"))
                    .spawn(move || {
                        let mut inst = KernelInstance::new(setup)?;
                        inst.set_peer_doorbells(peers);
                        let cpu0 = thread_cpu_time().unwrap();
                        let wall0 = std::time::Instant::now();
                        let result = inst.run();
                        let cpu = thread_cpu_time().unwrap() - cpu0;
                        *cost.lock().unwrap() = Some((cpu, wall0.elapsed()));
                        result
                    })
                    .unwrap()
            });
            let control_tx = control.plane_to_instance(i).unwrap().producer().unwrap();
            instances.push(InstanceHandle {
                thread,
                plane,
                doorbell: doorbells[i as usize].try_clone().unwrap(),
                rx,
                tx,
                control_tx,
                run_cost,
            });
        }
        Net {
            control,
            instances,
            nic: opts.nic,
            hasher: FlowGroupHasher::new(&FlowGroupConfig::default()),
            peer_bell,
            next_app: 1,
        }
    }

    /// Sends a control message to instance `i` and rings its doorbell (what the plane does).
    pub fn send_control(&mut self, i: u16, msg: ControlMessage) {
        let h = &mut self.instances[i as usize];
        assert!(h.control_tx.push(&msg.encode()).unwrap(), "control ring full");
        h.doorbell.notify().unwrap();
    }

    /// Registers an app with every instance (the plane's part of registration) and
    /// returns its client.
    pub fn add_app(&mut self, home: u16) -> Arc<Client> {
        let app_id = self.next_app;
        self.next_app += 1;
        let layout = AppLayout {
            instances: self.instances.len() as u16,
            sockets: 256,
            ring_slots: 256,
            socket_buffer: 16 * 1024,
        };
        let segment = AppSegment::create(layout, app_id, std::process::id()).unwrap();
        let wake = EventFd::new().unwrap();
        for i in 0..self.instances.len() {
            send_app_fds(
                &self.instances[i].plane,
                app_id,
                app_id,
                layout,
                segment.segment().fd(),
                wake.as_fd(),
            )
            .unwrap();
            self.send_control(i as u16, ControlMessage::AppAttached { app_id });
        }
        let doorbells = self.instances.iter().map(|h| h.doorbell.try_clone().unwrap()).collect();
        Arc::new(Client::from_parts(segment, wake, home, doorbells).unwrap())
    }

    /// Where the NIC puts a frame from the peer.
    pub fn queue_for(&self, frame: &[u8]) -> usize {
        if self.nic == Nic::SingleQueue {
            return 0;
        }
        match tcp_tuple(frame) {
            Some((src, dst)) => {
                let g = self.hasher.group_of(*src.ip(), *dst.ip(), src.port(), dst.port());
                self.control.flow_group(g).unwrap().owner.load(std::sync::atomic::Ordering::Relaxed)
                    as usize
            }
            None => 0,
        }
    }

    /// Puts a frame from the peer on the wire.
    pub fn inject(&self, frame: Vec<u8>) {
        let q = self.queue_for(&frame);
        self.instances[q].rx.push(frame);
    }

    /// Stops every instance with Shutdown and returns their results.
    pub fn shutdown(&mut self) -> Vec<Result<(), InstanceError>> {
        for i in 0..self.instances.len() {
            if self.instances[i].thread.is_some() {
                self.send_control(i as u16, ControlMessage::Shutdown);
            }
        }
        self.instances
            .iter_mut()
            .filter_map(|h| h.thread.take())
            .map(|t| t.join().unwrap())
            .collect()
    }

    pub fn shared(&self, i: u16) -> &flowgroups::control::InstanceShared {
        self.control.instance(i).unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.instances.iter().any(|h| h.thread.is_some()) {
            for h in self.instances.iter_mut().filter(|h| h.thread.is_some()) {
                let _ = h.control_tx.push(&ControlMessage::Shutdown.encode());
                let _ = h.doorbell.notify();
            }
            for h in &mut self.instances {
                if let Some(t) = h.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// (source, destination) of an unfragmented IPv4 TCP frame.
pub fn tcp_tuple(frame: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4)> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 6 {
        return None;
    }
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    let ip = |at: usize| -> Option<Ipv4Addr> {
        let b = frame.get(at..at + 4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
    };
    let t = 14 + ihl;
    Some((SocketAddrV4::new(ip(26)?, port(t)?), SocketAddrV4::new(ip(30)?, port(t + 2)?)))
}

pub fn is_arp(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x06][..])
}

/// The peer host: a tcp-core stack whose frames go through the emulated NIC.
pub struct Peer {
    pub stack: Stack,
    origin: std::time::Instant,
}

impl Peer {
    pub fn new() -> Peer {
        Peer {
            stack: Stack::new(StackConfig::new(PEER_MAC, PEER_IP, 24, [3; 16])),
            origin: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> tcp_core::Instant {
        tcp_core::Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// Moves frames both ways and fires timers; returns how many frames moved.
    pub fn pump(&mut self, net: &Net) -> usize {
        let now = self.now();
        let mut moved = 0;
        let _ = net.peer_bell.drain();
        for h in &net.instances {
            while let Some(f) = h.tx.pop() {
                self.stack.handle_frame(now, &f);
                moved += 1;
            }
        }
        if self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
        }
        let mut buf = vec![0u8; 1514];
        while let Some(n) = self.stack.poll_transmit(now, &mut buf) {
            net.inject(buf[..n].to_vec());
            moved += 1;
        }
        moved
    }

    /// Pumps until nothing moved, then waits briefly for an instance to transmit.
    pub fn pump_or_wait(&mut self, net: &Net) {
        if self.pump(net) == 0 {
            let _ = net.peer_bell.wait(Some(Duration::from_millis(1)));
        }
    }
}

/// An echo server app: `threads` threads accept on `port`, read `len` bytes, send them
/// back, wait for end of stream and close; stops once `stop` is set.
pub fn echo_server(
    client: Arc<Client>,
    port: u16,
    len: usize,
    threads: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<JoinHandle<usize>> {
    use std::sync::atomic::Ordering;
    let listener = client.listen(port, 512).unwrap();
    (0..threads)
        .map(|_| {
            let client = client.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (s, _) = match client.accept(listener, false) {
                        Ok(x) => x,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            let _ = client.wait(Some(Duration::from_millis(5)));
                            continue;
                        }
                        Err(e) => panic!("accept failed: {e}"),
                    };
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        let n = client.recv(s, &mut buf[got..], true).unwrap();
                        assert!(n > 0, "client closed before sending its {len} bytes");
                        got += n;
                    }
                    let mut sent = 0;
                    while sent < len {
                        sent += client.send(s, &buf[sent..], true).unwrap();
                    }
                    let mut rest = [0u8; 16];
                    while client.recv(s, &mut rest, true).unwrap_or(0) > 0 {}
                    client.close(s).unwrap();
                    served += 1;
                }
                served
            })
        })
        .collect()
}

/// Opens `total` connections from the peer to `SERVER_IP:port`, at most `concurrency` at a
/// time; each sends 4 bytes (its number), expects them back, and closes. Panics on a reset
/// or a wrong reply; returns when all completed or after `timeout` (with the count done).
pub fn run_echo_clients(
    net: &Net,
    peer: &mut Peer,
    port: u16,
    total: u32,
    concurrency: usize,
    timeout: Duration,
) -> u32 {
    use tcp_core::stack::{Event, SocketHandle};
    use tcp_core::tcp::State;
    struct Conn {
        h: SocketHandle,
        payload: [u8; 4],
        sent: bool,
        got: Vec<u8>,
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut active: Vec<Conn> = Vec::new();
    let (mut started, mut done) = (0u32, 0u32);
    while done < total && std::time::Instant::now() < deadline {
        // One connection first, so that ARP is resolved before a burst of SYNs would
        // overflow the peer's queue of packets waiting for it (and wait out an RTO).
        let limit = if done == 0 { 1 } else { concurrency };
        while active.len() < limit && started < total {
            let now = peer.now();
            let h = peer.stack.connect(now, SocketAddrV4::new(SERVER_IP, port), None).unwrap();
            active.push(Conn { h, payload: started.to_le_bytes(), sent: false, got: Vec::new() });
            started += 1;
        }
        peer.pump_or_wait(net);
        while let Some(ev) = peer.stack.poll_event() {
            if let Event::Closed(h, reason) = ev {
                assert!(
                    !active.iter().any(|c| c.h == h),
                    "connection closed ({reason:?}) before its reply"
                );
            }
        }
        let mut buf = [0u8; 16];
        active.retain_mut(|c| {
            if !c.sent && peer.stack.state(c.h).ok() == Some(State::Established) {
                assert_eq!(peer.stack.send(c.h, &c.payload).unwrap(), 4);
                c.sent = true;
            }
            if c.sent {
                if let Ok(n) = peer.stack.recv(c.h, &mut buf) {
                    assert!(n > 0, "end of stream before the reply");
                    c.got.extend_from_slice(&buf[..n]);
                }
            }
            if c.got.len() >= 4 {
                assert_eq!(c.got, c.payload, "wrong echo");
                peer.stack.close(c.h).unwrap();
                done += 1;
                return false;
            }
            true
        });
    }
    // Let the final FINs and ACKs through.
    let settle = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < settle {
        peer.pump_or_wait(net);
    }
    done
}

impl Peer {
    /// The SYN the peer sends for a connection from its `local_port` to the server's
    /// `port` (the peer knows the server's MAC, so no ARP comes first).
    pub fn syn_frame(&mut self, local_port: u16, port: u16) -> Vec<u8> {
        let now = self.now();
        self.stack.add_neighbor(now, SERVER_IP, SERVER_MAC);
        self.stack.connect(now, SocketAddrV4::new(SERVER_IP, port), Some(local_port)).unwrap();
        let mut buf = vec![0u8; 1514];
        let n = self.stack.poll_transmit(now, &mut buf).expect("a SYN");
        buf.truncate(n);
        buf
    }
}

/// Polls `f` every millisecond until it returns `Some`, panicking after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A local port of the peer whose connection to the server's `port` falls into a flow
/// group owned (by the default round-robin table) by `instance` of `instances`.
pub fn peer_port_for(instance: u16, instances: u16, port: u16, from: u16) -> (u16, u32) {
    let cfg = FlowGroupConfig::default();
    (from..u16::MAX)
        .map(|p| (p, flowgroups::flowgroup::flow_group_of(&cfg, PEER_IP, SERVER_IP, p, port)))
        .find(|&(_, g)| g % u32::from(instances) == u32::from(instance))
        .unwrap()
}

/// An ARP request from the peer for the server's address (RFC 826 layout).
pub fn peer_arp_request() -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&PEER_MAC.0);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&PEER_MAC.0);
    f.extend_from_slice(&PEER_IP.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&SERVER_IP.octets());
    f
}

/// Tells instance `i` the peer's MAC (an ARP request it answers) and swallows the answer.
pub fn introduce_peer(net: &Net, i: usize) {
    net.instances[i].rx.push(peer_arp_request());
    let reply = wait_for("the ARP reply", Duration::from_secs(10), || net.instances[i].tx.pop());
    assert!(is_arp(&reply));
}
