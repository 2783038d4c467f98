//! Test harness for the app channel: kernel instances ("lanes") running in one background
//! thread, each a tcp-core stack with a `ChannelHub`, joined by an in-memory wire to its own
//! peer stack (a plain tcp-core client). The test thread plays the applications through
//! `Client`s and drives the peers through `Harness::with`.

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use flowgroups::channel::client::Client;
use flowgroups::channel::server::ChannelHub;
use flowgroups::channel::{AppLayout, AppSegment};
use flowgroups::shm::EventFd;
use tcp_core::stack::{Event, SocketHandle, Stack, StackConfig};
use tcp_core::wire::EthernetAddress;

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const SERVER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);

pub fn peer_ip(lane: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 100 + lane as u8)
}

fn peer_mac(lane: usize) -> EthernetAddress {
    EthernetAddress([2, 0, 0, 0, 1, lane as u8])
}

pub fn layout(instances: u16) -> AppLayout {
    AppLayout { instances, sockets: 64, ring_slots: 64, socket_buffer: 16 * 1024 }
}

/// One kernel instance and the peer host on its wire.
pub struct Lane {
    pub server: Stack,
    pub peer: Stack,
    pub hub: ChannelHub,
    /// Events of the peer stack, oldest first.
    pub peer_events: Vec<Event>,
    doorbell: EventFd,
}

pub struct World {
    pub lanes: Vec<Lane>,
    pub now: tcp_core::Instant,
    /// Loop iterations (to tell the instance ran since some point).
    pub iterations: u64,
    /// How often stale accept queues get another wake-up (`None`: never).
    pub rewake_every: Option<Duration>,
    /// Whether instance `i` receives the replies of a connection from local port `p`
    /// (what flow-group ownership decides in a real instance); every instance by default.
    pub owns_reply: fn(u16, u16) -> bool,
}

pub struct Harness {
    world: Arc<Mutex<World>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub instances: u16,
}

pub struct App {
    pub client: Arc<Client>,
    pub segment: AppSegment,
    pub app_id: u32,
}

impl Harness {
    pub fn new(instances: u16) -> Harness {
        // One loop thread runs every instance here, so one doorbell serves them all.
        let doorbell = EventFd::new().unwrap();
        let lanes = (0..instances as usize)
            .map(|i| {
                let server = Stack::new(StackConfig::new(SERVER_MAC, SERVER_IP, 24, [9; 16]));
                let peer = Stack::new(StackConfig::new(peer_mac(i), peer_ip(i), 24, [i as u8; 16]));
                Lane {
                    server,
                    peer,
                    hub: ChannelHub::new(i as u16),
                    peer_events: Vec::new(),
                    doorbell: doorbell.try_clone().unwrap(),
                }
            })
            .collect();
        let world = Arc::new(Mutex::new(World {
            lanes,
            now: tcp_core::Instant::ZERO,
            iterations: 0,
            rewake_every: Some(Duration::from_millis(5)),
            owns_reply: |_, _| true,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let world = world.clone();
            let stop = stop.clone();
            std::thread::spawn(move || instance_loop(&world, &stop))
        };
        Harness { world, stop, thread: Some(thread), instances }
    }

    /// Creates an app segment and attaches it to every instance.
    pub fn add_app(&self, app_id: u32, family: u32, home: u16) -> App {
        let layout = layout(self.instances);
        let segment = AppSegment::create(layout, app_id, std::process::id()).unwrap();
        let wake = EventFd::new().unwrap();
        let mut doorbells = Vec::new();
        {
            let mut w = self.lock();
            for lane in &mut w.lanes {
                // Each instance maps the segment itself from the fd, as it would after fd
                // passing, and gets its own copy of the wake eventfd.
                let fd = segment.segment().fd().try_clone_to_owned().unwrap();
                let seg = AppSegment::open(fd, layout, Some(app_id)).unwrap();
                lane.hub.attach(app_id, family, seg, wake.try_clone().unwrap()).unwrap();
                doorbells.push(lane.doorbell.try_clone().unwrap());
            }
        }
        let client = Client::from_parts(segment.clone(), wake, home, doorbells).unwrap();
        App { client: Arc::new(client), segment, app_id }
    }

    /// Attaches a segment made elsewhere (by a test's control plane) to every instance.
    pub fn attach_existing(&self, app_id: u32, family: u32, segment: &AppSegment, wake: &EventFd) {
        let layout = segment.layout();
        let mut w = self.lock();
        for lane in &mut w.lanes {
            let fd = segment.segment().fd().try_clone_to_owned().unwrap();
            let seg = AppSegment::open(fd, layout, Some(app_id)).unwrap();
            lane.hub.attach(app_id, family, seg, wake.try_clone().unwrap()).unwrap();
        }
    }

    /// A copy of the instances' doorbell eventfd.
    pub fn doorbell(&self) -> EventFd {
        self.lock().lanes[0].doorbell.try_clone().unwrap()
    }

    /// Detaches an app from every instance (what the plane does when it dies).
    pub fn detach(&self, app_id: u32) {
        let mut w = self.lock();
        let now = w.now;
        for lane in &mut w.lanes {
            let Lane { server, hub, .. } = lane;
            hub.detach(server, now, app_id);
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// Runs `f` on the world (the instance loop is paused meanwhile).
    pub fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.lock())
    }

    /// Polls `f` until it returns `Some`, or panics after `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&mut World) -> Option<T>,
    ) -> T {
        let end = std::time::Instant::now() + timeout;
        loop {
            if let Some(v) = f(&mut self.lock()) {
                return v;
            }
            assert!(std::time::Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Peer `lane` opens a connection to the server's `port`.
    pub fn peer_connect(&self, lane: usize, port: u16) -> SocketHandle {
        self.with(|w| {
            let now = w.now;
            w.lanes[lane].peer.connect(now, SocketAddrV4::new(SERVER_IP, port), None).unwrap()
        })
    }

    /// Waits until peer `lane`'s connection is established.
    pub fn peer_wait_established(&self, lane: usize, h: SocketHandle) {
        self.wait_for("peer connection established", Duration::from_secs(10), |w| {
            (w.lanes[lane].peer.state(h).ok()? == tcp_core::tcp::State::Established).then_some(())
        })
    }

    pub fn peer_send(&self, lane: usize, h: SocketHandle, data: &[u8]) {
        let mut sent = 0;
        while sent < data.len() {
            sent += self.with(|w| w.lanes[lane].peer.send(h, &data[sent..]).unwrap());
            if sent < data.len() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Reads from peer `lane`'s connection until `n` bytes arrived.
    pub fn peer_recv_exact(&self, lane: usize, h: SocketHandle, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        self.wait_for("peer data", Duration::from_secs(20), |w| {
            while out.len() < n {
                match w.lanes[lane].peer.recv(h, &mut buf) {
                    Ok(0) => panic!("peer saw end of stream after {} of {n} bytes", out.len()),
                    Ok(k) => out.extend_from_slice(&buf[..k]),
                    Err(_) => return None,
                }
            }
            Some(())
        });
        out
    }

    /// Waits until peer `lane` sees end of stream (or the connection finished) and returns
    /// the bytes that came before.
    pub fn peer_recv_to_eof(&self, lane: usize, h: SocketHandle) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        self.wait_for("peer end of stream", Duration::from_secs(20), |w| {
            loop {
                match w.lanes[lane].peer.recv(h, &mut buf) {
                    Ok(0) => return Some(()),
                    Ok(k) => out.extend_from_slice(&buf[..k]),
                    Err(tcp_core::stack::SocketError::Recv(
                        tcp_core::tcp::RecvError::WouldBlock,
                    )) => {
                        return None;
                    }
                    Err(e) => panic!("peer recv failed: {e}"),
                }
            }
        });
        out
    }

    /// The close event peer `lane` got for `h`, once it got one.
    pub fn peer_wait_closed(&self, lane: usize, h: SocketHandle) -> tcp_core::tcp::CloseReason {
        self.wait_for("peer close event", Duration::from_secs(20), |w| {
            w.lanes[lane].peer_events.iter().find_map(|e| match *e {
                Event::Closed(x, reason) if x == h => Some(reason),
                _ => None,
            })
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The "kernel instances": serve apps, run the stacks, move frames, fire timers; when idle,
/// ask the apps for a doorbell and sleep on it briefly.
fn instance_loop(world: &Mutex<World>, stop: &AtomicBool) {
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut last_rewake = start;
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        let mut doorbells = Vec::new();
        {
            let mut guard = world.lock().unwrap();
            let w = &mut *guard;
            w.iterations += 1;
            let now = tcp_core::Instant::from_nanos(start.elapsed().as_nanos() as u64);
            w.now = now;
            let rewake = w.rewake_every.is_some_and(|every| last_rewake.elapsed() > every);
            let owns_reply = w.owns_reply;
            for (index, lane) in w.lanes.iter_mut().enumerate() {
                let Lane { server, peer, hub, peer_events, .. } = lane;
                for _ in 0..4 {
                    let stats = hub.serve_checked(server, now, &mut |_, _| None, &mut |_, p, _| {
                        owns_reply(index as u16, p)
                    });
                    busy |= stats.requests > 0;
                    let mut moved = false;
                    while let Some(e) = server.poll_event() {
                        hub.on_stack_event(server, e);
                        moved = true;
                    }
                    while let Some(n) = server.poll_transmit(now, &mut buf) {
                        peer.handle_frame(now, &buf[..n]);
                        moved = true;
                    }
                    while let Some(n) = peer.poll_transmit(now, &mut buf) {
                        server.handle_frame(now, &buf[..n]);
                        moved = true;
                    }
                    while let Some(e) = peer.poll_event() {
                        peer_events.push(e);
                    }
                    if server.poll_timeout().is_some_and(|t| t <= now) {
                        server.handle_timeout(now);
                        moved = true;
                    }
                    if peer.poll_timeout().is_some_and(|t| t <= now) {
                        peer.handle_timeout(now);
                        moved = true;
                    }
                    busy |= moved;
                    if !moved && stats.requests == 0 {
                        break;
                    }
                }
                if rewake {
                    hub.rewake_waiting(server);
                }
            }
            if rewake {
                last_rewake = std::time::Instant::now();
            }
            if !busy {
                let mut pending = false;
                for lane in &mut w.lanes {
                    pending |= lane.hub.prepare_sleep();
                    doorbells.push(lane.doorbell.try_clone().unwrap());
                }
                if pending {
                    busy = true;
                    for lane in &mut w.lanes {
                        lane.hub.after_wake();
                    }
                }
            }
        }
        if !busy {
            // Real instances block on the NIC fd and the doorbell together; here the wire
            // is in memory, so a short timeout stands in for frames from the peer.
            if let Some(bell) = doorbells.first() {
                let _ = bell.wait(Some(Duration::from_millis(1)));
            }
            for bell in &doorbells {
                let _ = bell.drain();
            }
            let mut w = world.lock().unwrap();
            for lane in &mut w.lanes {
                lane.hub.after_wake();
            }
        }
    }
}

/// A fixed-seed xorshift generator (no dependency, reproducible).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A stand-in for the control plane's registration: binds a Unix socket in a fresh
/// directory, registers one app through it with `Client::register`, attaches the segment
/// it created to every instance, and returns the client with the plane's end of the
/// registration socket (whose hang-up is the app's death).
pub fn register_through_plane(
    h: &Harness,
    app_id: u32,
    tag: &str,
) -> (Client, std::os::unix::net::UnixStream) {
    use flowgroups::channel::all_instances;
    use flowgroups::channel::proto::{MESSAGE_LEN, RegistrationMessage};
    use flowgroups::shm::send_fds;
    use std::io::Read;
    use std::os::fd::AsFd;

    let dir = std::env::temp_dir().join(format!("netpop-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plane.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let doorbell = h.doorbell();
    let instances = h.instances;
    let plane = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut msg = [0u8; MESSAGE_LEN];
        conn.read_exact(&mut msg).unwrap();
        let Ok(RegistrationMessage::Register { pid }) = RegistrationMessage::decode(&msg) else {
            panic!("not a Register message");
        };
        let layout = layout(instances);
        let segment = AppSegment::create(layout, app_id, pid).unwrap();
        let wake = EventFd::new().unwrap();
        // Every instance serves (0 would say the same).
        let live = all_instances(instances);
        let reply =
            RegistrationMessage::Registered { app_id, home: 0, layout, doorbells: instances, live };
        send_fds(&conn, &reply.encode(), &[segment.segment().fd(), wake.as_fd()]).unwrap();
        // One loop thread runs every instance here: each doorbell is the same eventfd.
        let bells = RegistrationMessage::Doorbells { count: instances };
        let fds: Vec<_> = (0..instances).map(|_| doorbell.as_fd()).collect();
        send_fds(&conn, &bells.encode(), &fds).unwrap();
        (segment, wake, conn)
    });
    let client = Client::register(&path).unwrap();
    let (segment, wake, conn) = plane.join().unwrap();
    h.attach_existing(app_id, app_id, &segment, &wake);
    let _ = std::fs::remove_dir_all(&dir);
    (client, conn)
}
