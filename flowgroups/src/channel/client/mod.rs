//! The application side of the app channel: the native socket API that tests use and the
//! LD_PRELOAD shim builds on.
//!
//! A [`Client`] is one registered application (one process; a forked child registers
//! again and becomes a new app). It is `Send + Sync`: every request ring has its own
//! mutex, completions are matched to the waiting thread by their tag, and each socket's rx
//! and tx ring ends have their own mutex, so any thread may use any socket.
//!
//! Blocking follows DESIGN.md "Shared memory and trust": see `wait` for the protocol and
//! for how several threads of one app sleep at once without losing a wake-up, and
//! `calls` for how requests are matched with their completions.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddrV4;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering, fence};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

mod calls;
mod wait;

use self::calls::Abandoned;
use self::wait::Waiters;
pub use self::wait::{SleepFn, WaitGuard, sleep_through_signals};

use super::proto::{
    Completion, CompletionSlot, Errno, MESSAGE_LEN, RegistrationMessage, Request, RequestSlot,
    ShutdownHow, SockOption, SocketInfo,
};
use super::{AppLayout, AppSegment, HeaderWord, Readiness, SocketField, SocketId};
use crate::shm::{
    ByteRingReader, ByteRingWriter, EventFd, RingConsumer, RingProducer, recv_fds, send_fds,
};

/// Longest single sleep on the eventfd. Wake-ups are not lost (see [`wait`]); this only
/// bounds how long a waiter takes to notice something no instance announces (an instance
/// that died between two steps of the protocol).
const MAX_NAP: Duration = Duration::from_secs(1);
/// How long a request may wait for its completion before the call fails with ETIMEDOUT
/// (instances answer in microseconds; this only triggers if one died).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Tag of requests whose completion nobody waits for (doorbells).
const NO_TAG: u64 = 0;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn err(e: Errno) -> io::Error {
    e.to_io()
}

fn shm_io(e: impl fmt::Display) -> io::Error {
    io::Error::other(format!("app segment: {e}"))
}

#[derive(Debug)]
enum SlotKind {
    Free,
    /// Allocated, request in flight.
    Reserved,
    Listener {
        port: u16,
        backlog: u32,
    },
    Stream {
        /// The instance that accepted or opened it; [`Client::serving_instance`] says
        /// which one serves it now.
        owner: u16,
        local: SocketAddrV4,
        peer: SocketAddrV4,
        shut_rd: bool,
        shut_wr: bool,
    },
    /// Close sent; the slot is free once every instance answered.
    Closing,
}

/// How a socket is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Close,
    Abort,
}

#[derive(Debug)]
struct SlotEntry {
    kind: Mutex<SlotKind>,
    rx: Mutex<Option<ByteRingReader>>,
    tx: Mutex<Option<ByteRingWriter>>,
}

#[derive(Debug, Default)]
struct Results {
    done: HashMap<u64, Completion>,
    /// Close tags -> slot; the slot is released when its last close completion arrives.
    closing: HashMap<u64, u32>,
    /// Slot -> close completions still expected.
    closes_left: HashMap<u32, u16>,
    /// Tags whose caller gave up waiting.
    abandoned: HashMap<u64, Abandoned>,
    /// Listener slot -> connections accepted for a caller that stopped waiting (a signal),
    /// handed out by the next accept.
    parked: HashMap<u32, VecDeque<(u32, SocketAddrV4)>>,
}

/// A registered application: its segment, wake eventfd and sockets.
pub struct Client {
    seg: AppSegment,
    layout: AppLayout,
    app_id: u32,
    home: u16,
    /// Instances that serve (bit i: instance i): listeners are replicated to these,
    /// connections opened on these. Set at registration and narrowed when the plane
    /// announces a death (see [`Client::refresh_live`]). Never empty; has `home` unless
    /// `home` died.
    live: AtomicU16,
    wake: EventFd,
    /// One per instance, or none (then instances must poll their rings).
    doorbells: Vec<EventFd>,
    requests: Vec<Mutex<RingProducer<RequestSlot>>>,
    completions: Vec<Mutex<RingConsumer<CompletionSlot>>>,
    results: Mutex<Results>,
    slots: Vec<SlotEntry>,
    free: Mutex<Vec<u32>>,
    next_tag: AtomicU64,
    waiters: Waiters,
    /// How threads sleep on the wake eventfd.
    sleep: SleepFn,
    /// Kept open for the app's lifetime: its hang-up tells the plane the app is gone.
    registration: Mutex<Option<UnixStream>>,
    /// Set by [`Client::forget_after_fork`]: the client belongs to the parent process.
    forgotten: AtomicBool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("app_id", &self.app_id)
            .field("home", &self.home)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Registers with the control plane listening on `socket_path` (see
    /// [`RegistrationMessage`] for the exchange) and maps the segment it hands over.
    pub fn register(socket_path: &Path) -> io::Result<Client> {
        let mut sock = UnixStream::connect(socket_path)?;
        let hello = RegistrationMessage::Register { pid: std::process::id() }.encode();
        send_fds(&sock, &hello, &[])?;
        let (msg, mut fds) = read_message(&mut sock, 2)?;
        let (app_id, home, layout, doorbell_count, live) = match msg {
            RegistrationMessage::Registered { app_id, home, layout, doorbells, live } => {
                (app_id, home, layout, doorbells, live)
            }
            RegistrationMessage::Refused { errno } => return Err(errno.to_io()),
            _ => return Err(invalid("unexpected registration reply")),
        };
        if fds.len() != 2 {
            return Err(invalid("registration reply without its two fds"));
        }
        let wake_fd = fds.pop().ok_or_else(|| invalid("missing wake fd"))?;
        let seg_fd = fds.pop().ok_or_else(|| invalid("missing segment fd"))?;
        let mut doorbells = Vec::new();
        if doorbell_count > 0 {
            let (msg, fds) = read_message(&mut sock, usize::from(doorbell_count))?;
            match msg {
                RegistrationMessage::Doorbells { count }
                    if count == doorbell_count && fds.len() == usize::from(count) =>
                {
                    for fd in fds {
                        doorbells.push(EventFd::from_fd(fd)?);
                    }
                }
                _ => return Err(invalid("bad doorbell message")),
            }
        }
        let segment = AppSegment::open(seg_fd, layout, Some(app_id)).map_err(shm_io)?;
        let mut client = Client::from_parts(segment, EventFd::from_fd(wake_fd)?, home, doorbells)?;
        client.set_live_instances(live)?;
        client.registration = Mutex::new(Some(sock));
        Ok(client)
    }

    /// A client over a segment and eventfd obtained some other way (tests, or a plane
    /// embedded in the same process). `doorbells` is empty or one eventfd per instance.
    pub fn from_parts(
        segment: AppSegment,
        wake: EventFd,
        home: u16,
        doorbells: Vec<EventFd>,
    ) -> io::Result<Client> {
        let layout = segment.layout();
        if home >= layout.instances {
            return Err(invalid("home instance out of range"));
        }
        if !doorbells.is_empty() && doorbells.len() != usize::from(layout.instances) {
            return Err(invalid("need one doorbell per instance"));
        }
        let mut requests = Vec::new();
        let mut completions = Vec::new();
        for i in 0..layout.instances {
            requests.push(Mutex::new(segment.request_producer(i).map_err(shm_io)?));
            completions.push(Mutex::new(segment.completion_consumer(i).map_err(shm_io)?));
        }
        let slots = (0..layout.sockets)
            .map(|_| SlotEntry {
                kind: Mutex::new(SlotKind::Free),
                rx: Mutex::new(None),
                tx: Mutex::new(None),
            })
            .collect();
        let app_id = segment.header_app_id().map_err(shm_io)?;
        Ok(Client {
            seg: segment,
            layout,
            app_id,
            home,
            live: AtomicU16::new(super::all_instances(layout.instances)),
            wake,
            doorbells,
            requests,
            completions,
            results: Mutex::new(Results::default()),
            slots,
            // Lowest slots first, like the kernel's lowest free fd.
            free: Mutex::new((0..layout.sockets).rev().collect()),
            next_tag: AtomicU64::new(1),
            waiters: Waiters::default(),
            sleep: sleep_through_signals,
            registration: Mutex::new(None),
            forgotten: AtomicBool::new(false),
        })
    }

    /// The app id the plane gave.
    pub fn app_id(&self) -> u32 {
        self.app_id
    }

    /// The instance this app talks to first.
    pub fn home(&self) -> u16 {
        self.home
    }

    /// Restricts the instances this app uses to `live` (bit i: instance i), as the plane's
    /// `Registered` names them; a client from [`Client::from_parts`] uses all of them.
    /// The mask must name the home instance and no instance outside the layout.
    pub fn set_live_instances(&mut self, live: u16) -> io::Result<()> {
        let every = super::all_instances(self.layout.instances);
        if live & !every != 0 || live & (1 << self.home) == 0 {
            return Err(invalid("live-instance mask without the home instance or out of range"));
        }
        self.live.store(live, Ordering::Relaxed);
        Ok(())
    }

    /// The instances this app uses, in index order: those alive at registration, less any
    /// the plane has since announced dead.
    pub fn live_instances(&self) -> Vec<u16> {
        let live = self.refresh_live();
        (0..self.layout.instances).filter(|&i| live & (1 << i) != 0).collect()
    }

    /// Takes in the plane's latest word on which instances serve (the segment's
    /// `LiveInstances` header word; 0 from a plane that does not write it) and returns
    /// the mask in use. Instances only ever die, so the mask only narrows; a word that
    /// would leave no instance, or names instances outside the layout, is not the
    /// plane's and is ignored.
    fn refresh_live(&self) -> u16 {
        let current = self.live.load(Ordering::Acquire);
        let announced = self
            .seg
            .header_word(HeaderWord::LiveInstances)
            .ok()
            .and_then(|w| u16::try_from(w.load(Ordering::Acquire)).ok())
            .unwrap_or(0);
        let every = super::all_instances(self.layout.instances);
        let narrowed = current & announced;
        if announced & !every != 0 || narrowed == 0 || narrowed == current {
            return current;
        }
        // Racing threads store the same or a narrower mask: either is true.
        self.live.fetch_and(announced, Ordering::AcqRel) & announced
    }

    /// Whether `instance` serves, as far as this app knows.
    fn is_live(&self, instance: u16) -> bool {
        self.refresh_live() & (1 << instance) != 0
    }

    /// The segment's layout.
    pub fn layout(&self) -> AppLayout {
        self.layout
    }

    /// The wake eventfd, for epoll/poll integration: it becomes readable when an instance
    /// has something for this app and the app announced it sleeps (see
    /// [`Client::prepare_wait`]).
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    // ---------------------------------------------------------------------------------
    // Socket operations

    /// Opens a listener on `port` on every live instance (DESIGN.md: listeners are
    /// replicated; see [`Client::live_instances`]). A port another app (for example the parent of a forked child) already listens on is
    /// shared with it.
    pub fn listen(&self, port: u16, backlog: u32) -> io::Result<SocketId> {
        if port == 0 {
            return Err(err(Errno::EINVAL));
        }
        let backlog = backlog.clamp(1, super::proto::MAX_BACKLOG);
        let slot = self.alloc_slot()?;
        let sock = SocketId(slot);
        let mut tags = Vec::new();
        for i in self.live_instances() {
            match self.submit(i, Request::Listen { sock, port, backlog }) {
                Ok(tag) => tags.push((i, tag)),
                Err(e) => {
                    self.abandon_listen(slot, tags);
                    return Err(e);
                }
            }
        }
        let mut first_error = None;
        for &(instance, tag) in &tags {
            // An instance announced dead while the Listen waited for it never answers;
            // the others serve the port.
            match self.wait_completion_unless_dead(tag, instance) {
                Ok(Some(Completion::Listening { .. }) | None) => {}
                Ok(Some(Completion::Failed { errno, .. })) => {
                    first_error.get_or_insert(err(errno));
                }
                Ok(Some(_)) => {
                    first_error.get_or_insert(invalid("unexpected completion"));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // Every live instance that got the Listen, also those whose answer did not
            // come (a signal, a timeout): each takes the Close after the Listen, so none
            // keeps the subscription; those that refused answer it with an error, which
            // is fine. A dead one would never answer the Close and keep the slot.
            let sent: Vec<u16> =
                tags.iter().map(|&(i, _)| i).filter(|&i| self.is_live(i)).collect();
            self.close_on(slot, &sent);
            return Err(e);
        }
        *lock(&self.slot(slot)?.kind) = SlotKind::Listener { port, backlog };
        Ok(sock)
    }

    fn abandon_listen(&self, slot: u32, sent: Vec<(u16, u64)>) {
        let instances: Vec<u16> = sent.iter().map(|&(i, _)| i).collect();
        {
            let mut r = lock(&self.results);
            for (_, tag) in sent {
                r.abandoned.insert(tag, Abandoned::Ignore);
            }
        }
        self.close_on(slot, &instances);
    }

    /// Takes one connection from a listener: from the home instance if it has one ready,
    /// else from any instance that has. Non-blocking: `WouldBlock` when none is ready.
    pub fn accept(
        &self,
        listener: SocketId,
        blocking: bool,
    ) -> io::Result<(SocketId, SocketAddrV4)> {
        match &*lock(&self.slot(listener.0)?.kind) {
            SlotKind::Listener { .. } => {}
            _ => return Err(err(Errno::EINVAL)),
        }
        let all = if self.layout.instances >= 32 {
            u32::MAX
        } else {
            (1u32 << self.layout.instances) - 1
        };
        let mask_word =
            self.seg.socket_word(listener.0, SocketField::AcceptReady).map_err(shm_io)?;
        let mut tries = 0u32;
        loop {
            let ready = self.block_until(None, blocking, || {
                if !self.is_listener(listener.0) {
                    return Err(err(Errno::EBADF));
                }
                if let Some(parked) = self.take_parked(listener.0) {
                    return Ok(Some(Err(parked)));
                }
                let m = mask_word.load(Ordering::Acquire) & all;
                Ok((m != 0).then_some(Ok(m)))
            })?;
            let mask = match ready {
                None => return Err(err(Errno::EAGAIN)),
                Some(Err((slot, peer))) => return Ok((SocketId(slot), peer)),
                Some(Ok(mask)) => mask,
            };
            let instance = self.pick_instance(mask);
            let new = self.alloc_slot()?;
            let result = self.call(instance, Request::Accept { listener, new_sock: SocketId(new) });
            match result {
                Ok(Completion::Accepted { sock, peer, local, .. }) if sock.0 == new => {
                    self.attach_stream(new, instance, local, peer)?;
                    return Ok((sock, peer));
                }
                Ok(Completion::Failed { errno, .. }) if errno == Errno::EAGAIN => {
                    // Another app or thread took it; the instance has cleared its bit.
                    self.release_slot(new);
                    tries += 1;
                    if !blocking && tries > u32::from(self.layout.instances) {
                        return Err(err(Errno::EAGAIN));
                    }
                }
                Ok(Completion::Failed { errno, .. }) => {
                    self.release_slot(new);
                    return Err(err(errno));
                }
                Ok(_) => {
                    self.release_slot(new);
                    return Err(invalid("unexpected completion"));
                }
                // A signal or a silent instance: the connection, if the instance hands
                // one over later, is parked for the next accept (see `calls::Abandoned`).
                Err(e) => return Err(e),
            }
        }
    }

    /// A connection accepted for a caller that stopped waiting, if `listener` has one.
    fn take_parked(&self, listener: u32) -> Option<(u32, SocketAddrV4)> {
        let mut r = lock(&self.results);
        let queue = r.parked.get_mut(&listener)?;
        let first = queue.pop_front();
        if queue.is_empty() {
            r.parked.remove(&listener);
        }
        first
    }

    /// Home instance if its bit is set, else the first set bit after it.
    fn pick_instance(&self, mask: u32) -> u16 {
        let n = self.layout.instances;
        (0..n).map(|k| (self.home + k) % n).find(|&i| mask & (1 << i) != 0).unwrap_or(self.home)
    }

    /// Opens a connection from the home instance. Non-blocking: returns as soon as the SYN
    /// is queued; [`Client::readiness`] reports `CONNECTED` (and WRITABLE) or `ERR`
    /// (then [`Client::take_error`] says why).
    pub fn connect(&self, addr: SocketAddrV4, blocking: bool) -> io::Result<SocketId> {
        self.connect_from(addr, None, blocking)
    }

    /// [`Client::connect`] from a chosen source port (`bind` before `connect`): `Some(p)`
    /// uses port `p` or fails with `EADDRINUSE` (a listener has it, or a connection from
    /// it to `addr` exists); `None` or `Some(0)` lets the instance choose. The connection
    /// is made by the instance that receives its replies (the home instance first).
    pub fn connect_from(
        &self,
        addr: SocketAddrV4,
        local_port: Option<u16>,
        blocking: bool,
    ) -> io::Result<SocketId> {
        let local_port = local_port.filter(|&p| p != 0);
        let slot = self.alloc_slot()?;
        let sock = SocketId(slot);
        let n = self.layout.instances;
        let mut started = false;
        let mask = self.refresh_live();
        let live = (0..n).map(|k| (self.home + k) % n).filter(|&i| mask & (1 << i) != 0);
        for instance in live {
            match self.call(instance, Request::Connect { sock, addr, local_port })? {
                Completion::Connecting { local, .. } => {
                    self.attach_stream(slot, instance, local, addr)?;
                    started = true;
                    break;
                }
                // Only a bound port is refused this way: its replies go to another instance.
                Completion::Failed { errno, .. }
                    if errno == Errno::EREMOTE && local_port.is_some() => {}
                Completion::Failed { errno, .. } => {
                    self.release_slot(slot);
                    return Err(err(errno));
                }
                _ => return Err(invalid("unexpected completion")),
            }
        }
        if !started {
            self.release_slot(slot);
            return Err(err(Errno::EADDRNOTAVAIL));
        }
        if blocking {
            let state = self.seg.socket_word(slot, SocketField::State).map_err(shm_io)?;
            let done = self.block_until(None, true, || {
                let s = Readiness::from_bits_retain(state.load(Ordering::Acquire));
                Ok(s.intersects(Readiness::CONNECTED | Readiness::ERR).then_some(s))
            })?;
            if done.is_some_and(|s| !s.contains(Readiness::CONNECTED)) {
                let e = self.take_error(sock).unwrap_or_else(|| err(Errno::ECONNREFUSED));
                let _ = self.close(sock);
                return Err(e);
            }
        }
        Ok(sock)
    }

    fn attach_stream(
        &self,
        slot: u32,
        owner: u16,
        local: SocketAddrV4,
        peer: SocketAddrV4,
    ) -> io::Result<()> {
        let entry = self.slot(slot)?;
        *lock(&entry.rx) = Some(self.seg.rx_reader(slot).map_err(shm_io)?);
        *lock(&entry.tx) = Some(self.seg.tx_writer(slot).map_err(shm_io)?);
        *lock(&entry.kind) =
            SlotKind::Stream { owner, local, peer, shut_rd: false, shut_wr: false };
        Ok(())
    }

    /// Sends bytes. Blocking: returns once all of `data` is in the socket's tx ring (or an
    /// error ends the connection). Non-blocking: writes what fits, `WouldBlock` if nothing.
    pub fn send(&self, s: SocketId, data: &[u8], blocking: bool) -> io::Result<usize> {
        let (owner, shut_wr) = self.stream_of(s)?;
        if shut_wr {
            return Err(err(Errno::EPIPE));
        }
        if data.is_empty() {
            return Ok(0);
        }
        let entry = self.slot(s.0)?;
        let state = self.seg.socket_word(s.0, SocketField::State).map_err(shm_io)?;
        let mut written = 0;
        loop {
            let st = Readiness::from_bits_retain(state.load(Ordering::Acquire));
            if st.intersects(Readiness::ERR | Readiness::HUP) {
                if written > 0 {
                    return Ok(written);
                }
                return Err(self.take_error(s).unwrap_or_else(|| err(Errno::EPIPE)));
            }
            if st.contains(Readiness::CONNECTED) {
                let n = {
                    let mut tx = lock(&entry.tx);
                    let ring = tx.as_mut().ok_or_else(|| err(Errno::EBADF))?;
                    let rest = data.get(written..).unwrap_or(&[]);
                    ring.write(rest).map_err(shm_io)?
                };
                if n > 0 {
                    written += n;
                    self.ring_tx_doorbell(owner, s)?;
                    if written == data.len() || !blocking {
                        return Ok(written);
                    }
                    continue;
                }
            }
            if !blocking {
                return if written > 0 { Ok(written) } else { Err(err(Errno::EAGAIN)) };
            }
            self.block_until(None, true, || {
                let st = Readiness::from_bits_retain(state.load(Ordering::Acquire));
                if st.intersects(Readiness::ERR | Readiness::HUP) {
                    return Ok(Some(()));
                }
                if !st.contains(Readiness::CONNECTED) {
                    return Ok(None);
                }
                let mut tx = lock(&entry.tx);
                let room = tx.as_mut().map(|r| r.writable()).transpose().map_err(shm_io)?;
                Ok(room.is_none_or(|n| n > 0).then_some(()))
            })?;
        }
    }

    /// Tells the owning instance that the tx ring has bytes, unless a previous doorbell is
    /// still unanswered (see [`SocketField::TxDoorbell`]).
    fn ring_tx_doorbell(&self, owner: u16, s: SocketId) -> io::Result<()> {
        let bell = self.seg.socket_word(s.0, SocketField::TxDoorbell).map_err(shm_io)?;
        // AcqRel: our ring write happens before the swap; the instance's swap(0) reads it.
        if bell.swap(1, Ordering::AcqRel) == 0 {
            self.submit_untagged(owner, Request::TxReady { sock: s })?;
        }
        Ok(())
    }

    /// Receives bytes; `Ok(0)` is end of stream. Non-blocking: `WouldBlock` if none.
    pub fn recv(&self, s: SocketId, buf: &mut [u8], blocking: bool) -> io::Result<usize> {
        let (owner, _) = self.stream_of(s)?;
        if self.shut_rd(s) || buf.is_empty() {
            return Ok(0);
        }
        let entry = self.slot(s.0)?;
        let state = self.seg.socket_word(s.0, SocketField::State).map_err(shm_io)?;
        loop {
            // State first, ring second: RDHUP is published after the last byte.
            let st = Readiness::from_bits_retain(state.load(Ordering::Acquire));
            let n = {
                let mut rx = lock(&entry.rx);
                let ring = rx.as_mut().ok_or_else(|| err(Errno::EBADF))?;
                ring.read(buf).map_err(shm_io)?
            };
            if n > 0 {
                self.ring_rx_doorbell(owner, s)?;
                return Ok(n);
            }
            match self.nothing_to_read(s, st) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && blocking => {}
                other => return other,
            }
            self.block_until(None, true, || {
                let st = Readiness::from_bits_retain(state.load(Ordering::Acquire));
                if st.intersects(Readiness::ERR | Readiness::RDHUP) {
                    return Ok(Some(()));
                }
                let mut rx = lock(&entry.rx);
                let avail = rx.as_mut().map(|r| r.readable()).transpose().map_err(shm_io)?;
                Ok(avail.is_none_or(|n| n > 0).then_some(()))
            })?;
        }
    }

    /// What a read of an empty receive ring returns, given the state word loaded *before*
    /// the ring was looked at: the pending error (taken, as SO_ERROR is), end of stream,
    /// or `WouldBlock`.
    fn nothing_to_read(&self, s: SocketId, st: Readiness) -> io::Result<usize> {
        if st.contains(Readiness::ERR) {
            return match self.take_error(s) {
                Some(e) => Err(e),
                None => Ok(0),
            };
        }
        if st.contains(Readiness::RDHUP) {
            return Ok(0);
        }
        Err(err(Errno::EAGAIN))
    }

    /// Copies received bytes without taking them (`MSG_PEEK`): the next [`Client::recv`]
    /// returns them again. Never blocks: `WouldBlock` if nothing arrived yet, `Ok(0)` at
    /// end of stream, and a pending error is reported (and cleared) as `recv` does.
    pub fn peek(&self, s: SocketId, buf: &mut [u8]) -> io::Result<usize> {
        self.stream_of(s)?;
        if self.shut_rd(s) || buf.is_empty() {
            return Ok(0);
        }
        let entry = self.slot(s.0)?;
        let state = self.seg.socket_word(s.0, SocketField::State).map_err(shm_io)?;
        // State first, ring second, as in `recv`.
        let st = Readiness::from_bits_retain(state.load(Ordering::Acquire));
        let n = {
            let mut rx = lock(&entry.rx);
            let ring = rx.as_mut().ok_or_else(|| err(Errno::EBADF))?;
            ring.peek(buf).map_err(shm_io)?
        };
        if n > 0 { Ok(n) } else { self.nothing_to_read(s, st) }
    }

    /// Bytes that can be read now without blocking (`FIONREAD`); 0 for anything that is
    /// not a connection, and after `shutdown(SHUT_RD)`.
    pub fn readable(&self, s: SocketId) -> usize {
        if self.stream_of(s).is_err() || self.shut_rd(s) {
            return 0;
        }
        let Ok(entry) = self.slot(s.0) else { return 0 };
        lock(&entry.rx).as_mut().and_then(|r| r.readable().ok()).unwrap_or(0)
    }

    /// After reading: if the instance stalled on a full rx ring, tell it there is room.
    fn ring_rx_doorbell(&self, owner: u16, s: SocketId) -> io::Result<()> {
        let bell = self.seg.socket_word(s.0, SocketField::RxDoorbell).map_err(shm_io)?;
        // SeqCst fence: our head store (the read) is ordered before the flag load; the
        // instance fences between setting the flag and re-checking the room.
        fence(Ordering::SeqCst);
        if bell.load(Ordering::Relaxed) != 0 && bell.swap(0, Ordering::AcqRel) != 0 {
            self.submit_untagged(owner, Request::RxConsumed { sock: s })?;
        }
        Ok(())
    }

    /// `shutdown(2)`.
    pub fn shutdown(&self, s: SocketId, how: ShutdownHow) -> io::Result<()> {
        let owner = {
            let mut kind = lock(&self.slot(s.0)?.kind);
            match &mut *kind {
                SlotKind::Stream { owner, shut_rd, shut_wr, .. } => {
                    if matches!(how, ShutdownHow::Read | ShutdownHow::Both) {
                        *shut_rd = true;
                    }
                    if matches!(how, ShutdownHow::Write | ShutdownHow::Both) {
                        *shut_wr = true;
                    }
                    self.serving_instance(s.0, *owner)
                }
                _ => return Err(err(Errno::ENOTCONN)),
            }
        };
        self.expect_done(self.call(owner, Request::Shutdown { sock: s, how })?)
    }

    /// Closes a socket. Returns at once; the slot is reused once every instance involved
    /// has answered. Bytes already sent are still delivered (an orderly FIN follows), unless
    /// received bytes were left unread, which resets the connection as Linux does.
    pub fn close(&self, s: SocketId) -> io::Result<()> {
        self.release(s, Ending::Close)
    }

    /// Resets a connection and releases the socket (`close` with `SO_LINGER {on, 0}`): a
    /// RST goes to the peer at once and bytes not yet sent or read are dropped. On a
    /// listener it is [`Client::close`]. Returns at once; the slot is reused once the
    /// instance answered.
    pub fn abort(&self, s: SocketId) -> io::Result<()> {
        self.release(s, Ending::Abort)
    }

    fn release(&self, s: SocketId, how: Ending) -> io::Result<()> {
        let entry = self.slot(s.0)?;
        let (instances, how) = {
            let mut kind = lock(&entry.kind);
            let targets = match &*kind {
                // Unsubscribing is the same either way; say Close.
                SlotKind::Listener { .. } => (self.live_instances(), Ending::Close),
                SlotKind::Stream { owner, .. } => (vec![self.serving_instance(s.0, *owner)], how),
                _ => return Err(err(Errno::EBADF)),
            };
            *kind = SlotKind::Closing;
            targets
        };
        *lock(&entry.rx) = None;
        *lock(&entry.tx) = None;
        // Connections accepted for an interrupted accept die with their listener, as
        // unaccepted connections do on Linux.
        let parked = lock(&self.results).parked.remove(&s.0).unwrap_or_default();
        for (slot, _) in parked {
            let _ = self.release(SocketId(slot), Ending::Abort);
        }
        self.end_on(s.0, &instances, how);
        Ok(())
    }

    /// Sends `Close` for `slot` to `instances`; the slot is released when all answered.
    fn close_on(&self, slot: u32, instances: &[u16]) {
        self.end_on(slot, instances, Ending::Close);
    }

    /// Sends `Close` or `Abort` for `slot` to `instances`; the slot is released when all
    /// answered.
    fn end_on(&self, slot: u32, instances: &[u16], how: Ending) {
        if instances.is_empty() {
            self.release_slot(slot);
            return;
        }
        if let Ok(entry) = self.slot(slot) {
            *lock(&entry.kind) = SlotKind::Closing;
        }
        let tags: Vec<u64> = instances.iter().map(|_| self.new_tag()).collect();
        {
            let mut r = lock(&self.results);
            r.closes_left.insert(slot, instances.len() as u16);
            for &tag in &tags {
                r.closing.insert(tag, slot);
            }
        }
        let sock = SocketId(slot);
        let request = match how {
            Ending::Close => Request::Close { sock },
            Ending::Abort => Request::Abort { sock },
        };
        for (&i, &tag) in instances.iter().zip(&tags) {
            if self.submit_with_tag(i, request, tag).is_err() {
                // The ring is unusable: the slot is never reused (the instance may still
                // hold it); the app is broken anyway.
                let mut r = lock(&self.results);
                r.closing.remove(&tag);
            }
        }
    }

    /// Sets a socket option on a connection, or on a listener: then every instance keeps
    /// it for the connections it accepts from the listener from now on (as Linux copies a
    /// listener's options to the connections accepted from it).
    pub fn set_option(&self, s: SocketId, option: SockOption) -> io::Result<()> {
        let targets: Vec<u16> = match &*lock(&self.slot(s.0)?.kind) {
            SlotKind::Stream { owner, .. } => vec![self.serving_instance(s.0, *owner)],
            SlotKind::Listener { .. } => self.live_instances(),
            _ => return Err(err(Errno::EBADF)),
        };
        let mut tags = Vec::new();
        for i in targets {
            match self.submit(i, Request::SetOption { sock: s, option }) {
                Ok(tag) => tags.push(tag),
                Err(e) => {
                    let mut r = lock(&self.results);
                    for tag in tags {
                        r.abandoned.insert(tag, Abandoned::Ignore);
                    }
                    return Err(e);
                }
            }
        }
        let mut result = Ok(());
        for tag in tags {
            let done =
                self.wait_completion(tag, Abandoned::Ignore).and_then(|c| self.expect_done(c));
            if result.is_ok() {
                result = done;
            }
        }
        result
    }

    /// Addresses, TCP state and queue sizes of a connection, from its instance.
    pub fn info(&self, s: SocketId) -> io::Result<SocketInfo> {
        let owner = match &*lock(&self.slot(s.0)?.kind) {
            SlotKind::Stream { owner, .. } => self.serving_instance(s.0, *owner),
            SlotKind::Listener { .. } => self.home,
            _ => return Err(err(Errno::EBADF)),
        };
        match self.call(owner, Request::GetInfo { sock: s })? {
            Completion::Info { info, .. } => Ok(info),
            Completion::Failed { errno, .. } => Err(err(errno)),
            _ => Err(invalid("unexpected completion")),
        }
    }

    /// Local and peer address of a connection (no round trip).
    pub fn addresses(&self, s: SocketId) -> io::Result<(SocketAddrV4, SocketAddrV4)> {
        match &*lock(&self.slot(s.0)?.kind) {
            SlotKind::Stream { local, peer, .. } => Ok((*local, *peer)),
            _ => Err(err(Errno::ENOTCONN)),
        }
    }

    /// The listeners this app holds: `(socket, port, backlog)`. A forked child, which is a
    /// new app, calls [`Client::listen`] for each inherited one on its own client.
    pub fn listeners(&self) -> Vec<(SocketId, u16, u32)> {
        (0..self.layout.sockets)
            .filter_map(|slot| match &*lock(&self.slots.get(slot as usize)?.kind) {
                SlotKind::Listener { port, backlog } => Some((SocketId(slot), *port, *backlog)),
                _ => None,
            })
            .collect()
    }

    /// The socket's pending error (SO_ERROR), cleared by reading it.
    pub fn take_error(&self, s: SocketId) -> Option<io::Error> {
        self.check_usable().ok()?;
        let w = self.seg.socket_word(s.0, SocketField::Error).ok()?;
        let e = w.swap(0, Ordering::AcqRel);
        let e = i32::try_from(e).ok().filter(|&e| e > 0 && e < 4096)?;
        Some(io::Error::from_raw_os_error(e))
    }

    /// What the socket is ready for, as poll(2) would report it.
    pub fn readiness(&self, s: SocketId) -> Readiness {
        let Ok(entry) = self.slot(s.0) else { return Readiness::empty() };
        let stored = self
            .seg
            .socket_word(s.0, SocketField::State)
            .map(|w| Readiness::from_bits_retain(w.load(Ordering::Acquire)))
            .unwrap_or_default();
        let pending_error = self
            .seg
            .socket_word(s.0, SocketField::Error)
            .is_ok_and(|w| w.load(Ordering::Relaxed) != 0);
        let parked = lock(&self.results).parked.contains_key(&s.0);
        let kind = lock(&entry.kind);
        match &*kind {
            SlotKind::Listener { .. } => {
                let mask = self
                    .seg
                    .socket_word(s.0, SocketField::AcceptReady)
                    .map(|w| w.load(Ordering::Acquire))
                    .unwrap_or(0);
                let mut r = Readiness::LISTENING;
                if mask != 0 || parked {
                    r |= Readiness::ACCEPTABLE | Readiness::READABLE;
                }
                r
            }
            SlotKind::Stream { shut_rd, shut_wr, .. } => {
                let mut r = stored & (Readiness::CONNECTED | Readiness::HUP | Readiness::RDHUP);
                if pending_error {
                    r |= Readiness::ERR;
                }
                let readable =
                    lock(&entry.rx).as_mut().is_some_and(|x| x.readable().is_ok_and(|n| n > 0));
                if readable || *shut_rd || r.intersects(Readiness::RDHUP | Readiness::ERR) {
                    r |= Readiness::READABLE;
                }
                let room =
                    lock(&entry.tx).as_mut().is_some_and(|x| x.writable().is_ok_and(|n| n > 0));
                let connected = r.contains(Readiness::CONNECTED);
                if (connected && room) || *shut_wr || r.intersects(Readiness::HUP | Readiness::ERR)
                {
                    r |= Readiness::WRITABLE;
                }
                r
            }
            _ => Readiness::empty(),
        }
    }

    /// Bumped by the instances on every change to `s` (data, room, state): an
    /// edge-triggered poller reports the socket again only when this moved.
    pub fn event_count(&self, s: SocketId) -> u32 {
        self.seg
            .socket_word(s.0, SocketField::EventSeq)
            .map(|w| w.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    // ---------------------------------------------------------------------------------
    // Slots

    fn slot(&self, slot: u32) -> io::Result<&SlotEntry> {
        self.check_usable()?;
        self.slots.get(slot as usize).ok_or_else(|| err(Errno::EBADF))
    }

    fn alloc_slot(&self) -> io::Result<u32> {
        self.check_usable()?;
        let slot = lock(&self.free).pop().ok_or_else(|| err(Errno::EMFILE))?;
        // No instance touches a free slot, so the app may clear what a previous owner
        // left; a connection's binding instance resets the entry again anyway.
        for field in [SocketField::State, SocketField::AcceptReady, SocketField::Error] {
            if let Ok(w) = self.seg.socket_word(slot, field) {
                w.store(0, Ordering::Relaxed);
            }
        }
        if let Ok(entry) = self.slot(slot) {
            *lock(&entry.kind) = SlotKind::Reserved;
        }
        Ok(slot)
    }

    fn release_slot(&self, slot: u32) {
        if let Ok(entry) = self.slot(slot) {
            *lock(&entry.kind) = SlotKind::Free;
            *lock(&entry.rx) = None;
            *lock(&entry.tx) = None;
            lock(&self.free).push(slot);
        }
    }

    /// The instance that serves connection `slot` now. A live migration moves a
    /// connection to another instance, which then writes its index into the slot's Owner
    /// word; requests sent to the instance the app first knew (`first`) would still arrive,
    /// handed on by it, but a hop and a wake-up later. The word lives in the app's own
    /// memory, so a value that names no instance this app uses is ignored.
    fn serving_instance(&self, slot: u32, first: u16) -> u16 {
        self.seg
            .socket_word(slot, SocketField::Owner)
            .ok()
            .and_then(|w| u16::try_from(w.load(Ordering::Acquire)).ok())
            .filter(|&i| i < self.layout.instances && self.is_live(i))
            .unwrap_or(first)
    }

    fn is_listener(&self, slot: u32) -> bool {
        self.slot(slot).is_ok_and(|e| matches!(&*lock(&e.kind), SlotKind::Listener { .. }))
    }

    fn stream_of(&self, s: SocketId) -> io::Result<(u16, bool)> {
        match &*lock(&self.slot(s.0)?.kind) {
            SlotKind::Stream { owner, shut_wr, .. } => {
                Ok((self.serving_instance(s.0, *owner), *shut_wr))
            }
            SlotKind::Listener { .. } => Err(err(Errno::ENOTCONN)),
            _ => Err(err(Errno::EBADF)),
        }
    }

    fn shut_rd(&self, s: SocketId) -> bool {
        self.slot(s.0)
            .is_ok_and(|e| matches!(&*lock(&e.kind), SlotKind::Stream { shut_rd: true, .. }))
    }

    /// In a forked child, on the client the child inherited from its parent: lets go of
    /// it without touching anything the parent still uses. Closes the child's copy of the
    /// registration socket at once (the plane takes the app's death from the hang-up of
    /// that socket, which must not wait for the child), and from then on every call fails
    /// with `EBADF` or reports nothing, without sending a request or writing the segment:
    /// closing an inherited socket in the child leaves the parent's connection alone. The
    /// mapping and the other descriptors go when the last reference does.
    ///
    /// Safe to call between `fork` and `exec` in a child of a multithreaded parent: it
    /// takes no lock another thread of the parent could have held.
    pub fn forget_after_fork(&self) {
        self.forgotten.store(true, Ordering::Release);
        // Only this function locks it after registration, so `try_lock` cannot miss a
        // holder that vanished in the fork.
        let registration = match self.registration.try_lock() {
            Ok(mut g) => g.take(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        drop(registration);
    }

    /// True once [`Client::forget_after_fork`] was called.
    pub fn is_forgotten(&self) -> bool {
        self.forgotten.load(Ordering::Acquire)
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.is_forgotten() { Err(err(Errno::EBADF)) } else { Ok(()) }
    }

    /// Free socket slots (for leak checks).
    pub fn free_slots(&self) -> usize {
        lock(&self.free).len()
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one registration message and the fds that came with it.
fn read_message(
    sock: &mut UnixStream,
    max_fds: usize,
) -> io::Result<(RegistrationMessage, Vec<OwnedFd>)> {
    let mut buf = [0u8; MESSAGE_LEN];
    let (n, fds) = recv_fds(sock, &mut buf, max_fds)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "control plane hung up"));
    }
    // A stream socket may deliver the message in pieces; fds come with the first one.
    if let Some(rest) = buf.get_mut(n..) {
        sock.read_exact(rest)?;
    }
    let msg = RegistrationMessage::decode(&buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((msg, fds))
}
