//! Per-instance routing of the app channel: which app owns which connection, and the
//! replicated listeners (DESIGN.md "Single-socket abstraction": each instance holds a clone
//! of every listener, with its own accept queue, and any number of apps — a forked child is
//! a new app — subscribe a socket slot of theirs to it).
//!
//! Wake-ups follow the "no thundering herd" rule: a new connection sets ACCEPTABLE (this
//! instance's bit of `accept_ready`) on every subscriber, but writes the eventfd of only one
//! sleeping subscriber, chosen round robin.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use tcp_core::stack::{ListenError, ListenerHandle, SocketHandle, Stack};

use super::proto::{Errno, MAX_BACKLOG};
use super::{AppSegment, HeaderWord, Readiness, SocketField};
use crate::shm::EventFd;

/// An application's id, given by the control plane at registration.
pub type AppId = u32;

/// What an instance needs to publish state into one app's segment and to wake it. Shared
/// by the app's [`AppServer`](super::server::AppServer) and the listener registry.
#[derive(Debug)]
pub struct AppLink {
    app_id: AppId,
    family: u32,
    instance: u16,
    seg: AppSegment,
    wake: EventFd,
}

impl AppLink {
    /// A link for `app_id` of listener family `family` (see [`ListenerRegistry::subscribe`])
    /// as seen by `instance`.
    pub fn new(
        app_id: AppId,
        family: u32,
        instance: u16,
        seg: AppSegment,
        wake: EventFd,
    ) -> AppLink {
        AppLink { app_id, family, instance, seg, wake }
    }

    /// The app's listener family.
    pub fn family(&self) -> u32 {
        self.family
    }

    /// The app's id.
    pub fn app_id(&self) -> AppId {
        self.app_id
    }

    /// The app's segment.
    pub fn segment(&self) -> &AppSegment {
        &self.seg
    }

    /// The instance this link belongs to.
    pub fn instance(&self) -> u16 {
        self.instance
    }

    /// Raises sticky state bits of `slot`. Slots are validated by the caller; a failure
    /// here could only mean an out-of-range slot and is ignored.
    pub(crate) fn raise(&self, slot: u32, bits: Readiness) {
        if let Ok(w) = self.seg.socket_word(slot, SocketField::State) {
            // Release: the data and ring updates made before this are visible to an app
            // that sees the bit (it loads the word with Acquire before the rings).
            w.fetch_or(bits.bits(), Ordering::Release);
        }
    }

    /// Records `errno` as the socket's pending error.
    pub(crate) fn set_error(&self, slot: u32, errno: Errno) {
        if let Ok(w) = self.seg.socket_word(slot, SocketField::Error) {
            w.store(u32::try_from(errno.0).unwrap_or(0), Ordering::Release);
        }
    }

    /// Sets or clears this instance's bit in `slot`'s accept mask; true if it changed.
    pub(crate) fn set_accept_ready(&self, slot: u32, ready: bool) -> bool {
        let Ok(w) = self.seg.socket_word(slot, SocketField::AcceptReady) else { return false };
        let bit = 1u32 << self.instance;
        let old = if ready {
            w.fetch_or(bit, Ordering::Release)
        } else {
            w.fetch_and(!bit, Ordering::Release)
        };
        (old & bit != 0) != ready
    }

    /// Counts a change of `slot` (what an edge-triggered poller compares).
    pub(crate) fn touch_socket(&self, slot: u32) {
        if let Ok(w) = self.seg.socket_word(slot, SocketField::EventSeq) {
            w.fetch_add(1, Ordering::Release);
        }
    }

    /// Counts a change made by this instance in the app's segment: a waiting app compares
    /// this counter with its ticket before it sleeps.
    pub(crate) fn touch_app(&self) {
        if let Ok(seq) = self.seg.event_seq(self.instance) {
            // Only this instance writes its counter; a scribbled value is just a number.
            seq.store(seq.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
        }
    }

    /// True if an app thread has announced that it sleeps on the eventfd.
    pub(crate) fn is_sleeping(&self) -> bool {
        self.seg.header_word(HeaderWord::Sleeping).is_ok_and(|w| w.load(Ordering::Relaxed) != 0)
    }

    /// Writes the eventfd if (and only if) the app sleeps, clearing the flag; true if it
    /// wrote. Call after the change is published (after `touch_app`).
    pub(crate) fn wake_if_sleeping(&self) -> bool {
        let Ok(sleeping) = self.seg.header_word(HeaderWord::Sleeping) else { return false };
        // SeqCst fence: orders our earlier stores (state, counter) before the load of
        // `sleeping`; the app fences between its store of `sleeping` and its re-check, so
        // either it sees our change or we see its flag (the Dekker pattern).
        fence(Ordering::SeqCst);
        if sleeping.load(Ordering::Relaxed) == 0 || sleeping.swap(0, Ordering::AcqRel) == 0 {
            return false;
        }
        if self.wake.notify().is_err() {
            return false;
        }
        if let Ok(count) = self.seg.wake_count() {
            count.fetch_add(1, Ordering::Relaxed);
        }
        true
    }
}

#[derive(Debug)]
struct Subscriber {
    link: Arc<AppLink>,
    slot: u32,
}

#[derive(Debug)]
struct PortListener {
    handle: ListenerHandle,
    subscribers: Vec<Subscriber>,
    /// Next subscriber to consider for a wake-up.
    cursor: usize,
    /// A subscriber was woken or an accept was attempted since the last
    /// [`ListenerRegistry::rewake_waiting`] pass.
    recent_activity: bool,
}

/// One instance's listeners (port -> stack listener and subscribers) and connection owners
/// (stack handle -> app).
#[derive(Debug)]
pub struct ListenerRegistry {
    instance: u16,
    ports: BTreeMap<u16, PortListener>,
    by_handle: BTreeMap<ListenerHandle, u16>,
    connections: BTreeMap<SocketHandle, AppId>,
}

/// Wakes the next sleeping subscriber after the cursor; true if one was woken.
fn wake_next(l: &mut PortListener) -> bool {
    let n = l.subscribers.len();
    for k in 0..n {
        let i = (l.cursor + k) % n;
        let Some(s) = l.subscribers.get(i) else { continue };
        if s.link.is_sleeping() && s.link.wake_if_sleeping() {
            l.cursor = (i + 1) % n;
            return true;
        }
    }
    false
}

fn listen_errno(e: ListenError) -> Errno {
    match e {
        ListenError::AddrInUse => Errno::EADDRINUSE,
        ListenError::AddrNotAvailable => Errno::EADDRNOTAVAIL,
        _ => Errno::EINVAL,
    }
}

impl ListenerRegistry {
    /// An empty registry for `instance`.
    pub fn new(instance: u16) -> ListenerRegistry {
        ListenerRegistry {
            instance,
            ports: BTreeMap::new(),
            by_handle: BTreeMap::new(),
            connections: BTreeMap::new(),
        }
    }

    /// The instance this registry belongs to.
    pub fn instance(&self) -> u16 {
        self.instance
    }

    /// Subscribes `link`'s `slot` to `port`, opening the stack's listener on first use.
    /// An app may subscribe one slot per port (a second slot is `EADDRINUSE`). Apps of the
    /// same *family* share a port (like SO_REUSEPORT siblings): the control plane gives a
    /// forked child its parent's family, so inherited listeners keep working in the child,
    /// while an unrelated app gets `EADDRINUSE` and cannot steal connections.
    pub fn subscribe(
        &mut self,
        stack: &mut Stack,
        link: &Arc<AppLink>,
        slot: u32,
        port: u16,
        backlog: u32,
    ) -> Result<(), Errno> {
        if let Some((p, _)) = self.listener_of(link.app_id, slot) {
            return if p == port { Ok(()) } else { Err(Errno::EINVAL) };
        }
        if let Some(l) = self.ports.get_mut(&port) {
            if l.subscribers
                .iter()
                .any(|s| s.link.app_id == link.app_id || s.link.family != link.family)
            {
                return Err(Errno::EADDRINUSE);
            }
            l.subscribers.push(Subscriber { link: link.clone(), slot });
        } else {
            let backlog = backlog.clamp(1, MAX_BACKLOG) as usize;
            let handle = stack
                .listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), backlog)
                .map_err(listen_errno)?;
            self.by_handle.insert(handle, port);
            self.ports.insert(
                port,
                PortListener {
                    handle,
                    subscribers: vec![Subscriber { link: link.clone(), slot }],
                    cursor: 0,
                    recent_activity: false,
                },
            );
        }
        link.raise(slot, Readiness::LISTENING);
        // A connection may already be waiting (another app subscribed earlier).
        self.publish(stack, port);
        Ok(())
    }

    /// The port and stack listener `app`'s `slot` is subscribed to, if any.
    pub fn listener_of(&self, app: AppId, slot: u32) -> Option<(u16, ListenerHandle)> {
        self.ports.iter().find_map(|(&port, l)| {
            l.subscribers
                .iter()
                .any(|s| s.link.app_id == app && s.slot == slot)
                .then_some((port, l.handle))
        })
    }

    /// Drops one subscription; closes the stack listener when it was the last. True if the
    /// subscription existed.
    pub fn unsubscribe(&mut self, stack: &mut Stack, app: AppId, slot: u32) -> bool {
        let Some((port, _)) = self.listener_of(app, slot) else { return false };
        if let Some(l) = self.ports.get_mut(&port) {
            if let Some(s) = l.subscribers.iter().find(|s| s.link.app_id == app && s.slot == slot) {
                s.link.set_accept_ready(slot, false);
            }
            l.subscribers.retain(|s| !(s.link.app_id == app && s.slot == slot));
        }
        self.close_if_unused(stack, port);
        true
    }

    /// Drops every subscription of `app` (it died or was detached).
    pub fn unsubscribe_app(&mut self, stack: &mut Stack, app: AppId) {
        let ports: Vec<u16> = self
            .ports
            .iter()
            .filter(|(_, l)| l.subscribers.iter().any(|s| s.link.app_id == app))
            .map(|(&p, _)| p)
            .collect();
        for port in ports {
            if let Some(l) = self.ports.get_mut(&port) {
                l.subscribers.retain(|s| s.link.app_id != app);
            }
            self.close_if_unused(stack, port);
        }
        self.connections.retain(|_, owner| *owner != app);
    }

    fn close_if_unused(&mut self, stack: &mut Stack, port: u16) {
        let unused = self.ports.get(&port).is_some_and(|l| l.subscribers.is_empty());
        if unused {
            if let Some(l) = self.ports.remove(&port) {
                self.by_handle.remove(&l.handle);
                // Connections not yet accepted are reset, as when Linux closes a listener.
                stack.close_listener(l.handle);
            }
        }
    }

    /// A new connection is ready on `listener`: mark every subscriber and wake one
    /// sleeping subscriber (round robin).
    pub fn on_acceptable(&mut self, stack: &Stack, listener: ListenerHandle) -> bool {
        let Some(&port) = self.by_handle.get(&listener) else { return false };
        self.publish(stack, port);
        let Some(l) = self.ports.get_mut(&port) else { return false };
        l.recent_activity = true;
        wake_next(l)
    }

    /// Wakes one more sleeping subscriber of every port whose accept queue is not empty
    /// and saw no wake-up and no accept attempt since the previous call. A woken app may
    /// have been sleeping for something else and not accept; the instance calls this
    /// periodically (every few milliseconds) so such a connection waits at most about two
    /// periods instead of until the next arrival. Returns the number of apps woken.
    pub fn rewake_waiting(&mut self, stack: &Stack) -> usize {
        let mut woken = 0;
        for l in self.ports.values_mut() {
            let idle = !std::mem::replace(&mut l.recent_activity, false);
            if idle && stack.accept_queue_len(l.handle).unwrap_or(0) > 0 && wake_next(l) {
                l.recent_activity = true;
                woken += 1;
            }
        }
        woken
    }

    /// Re-publishes `port`'s accept-queue state (this instance's bit) to every subscriber.
    /// Each subscriber's socket change counter (`EventSeq`) moves whenever its bit changed
    /// *or* the queue is not empty: a connection that joins a queue that already had one
    /// leaves the bit set, and only the counter tells an edge-triggered poller about it.
    pub fn publish(&mut self, stack: &Stack, port: u16) {
        let Some(l) = self.ports.get_mut(&port) else { return };
        l.recent_activity = true;
        let ready = stack.accept_queue_len(l.handle).unwrap_or(0) > 0;
        for s in &l.subscribers {
            if s.link.set_accept_ready(s.slot, ready) || ready {
                s.link.touch_socket(s.slot);
                s.link.touch_app();
            }
        }
    }

    /// Every port with its accept-queue length (for the control segment's listener table).
    pub fn ready_counts<'a>(&'a self, stack: &'a Stack) -> impl Iterator<Item = (u16, usize)> + 'a {
        self.ports.iter().map(|(&p, l)| (p, stack.accept_queue_len(l.handle).unwrap_or(0)))
    }

    /// Number of subscribers of `port`.
    pub fn subscribers(&self, port: u16) -> usize {
        self.ports.get(&port).map_or(0, |l| l.subscribers.len())
    }

    /// The app that owns a connection.
    pub fn connection_owner(&self, handle: SocketHandle) -> Option<AppId> {
        self.connections.get(&handle).copied()
    }

    pub(crate) fn bind_connection(&mut self, handle: SocketHandle, app: AppId) {
        self.connections.insert(handle, app);
    }

    pub(crate) fn unbind_connection(&mut self, handle: SocketHandle) {
        self.connections.remove(&handle);
    }

    /// Number of connections bound to apps.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::AppLayout;
    use tcp_core::stack::{Event, StackConfig};
    use tcp_core::wire::EthernetAddress;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn stack(last: u8, ip: Ipv4Addr) -> Stack {
        Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, last]), ip, 24, [1; 16]))
    }

    fn link(app_id: AppId, family: u32) -> Arc<AppLink> {
        let layout = AppLayout { instances: 1, sockets: 4, ring_slots: 8, socket_buffer: 1024 };
        let seg = AppSegment::create(layout, app_id, 1).unwrap();
        Arc::new(AppLink::new(app_id, family, 0, seg, EventFd::new().unwrap()))
    }

    fn sleep(l: &AppLink) {
        l.segment().header_word(HeaderWord::Sleeping).unwrap().store(1, Ordering::SeqCst);
    }

    /// Runs a handshake from `client` to `server`'s `port`; returns the server's events.
    fn handshake(server: &mut Stack, client: &mut Stack, port: u16) -> Vec<Event> {
        let now = tcp_core::Instant::from_secs(1);
        client.connect(now, SocketAddrV4::new(SERVER, port), None).unwrap();
        let mut buf = vec![0u8; 1600];
        for _ in 0..10 {
            while let Some(n) = client.poll_transmit(now, &mut buf) {
                server.handle_frame(now, &buf[..n]);
            }
            while let Some(n) = server.poll_transmit(now, &mut buf) {
                client.handle_frame(now, &buf[..n]);
            }
        }
        core::iter::from_fn(|| server.poll_event()).collect()
    }

    #[test]
    fn one_arrival_marks_every_subscriber_but_wakes_one_sleeper_round_robin() {
        let mut server = stack(2, SERVER);
        let mut client = stack(1, CLIENT);
        let mut reg = ListenerRegistry::new(0);
        let apps: Vec<_> = (1..=3).map(|id| link(id, 9)).collect();
        for a in &apps {
            reg.subscribe(&mut server, a, 1, 80, 16).unwrap();
            sleep(a);
        }
        let mut woken_order = Vec::new();
        for _ in 0..3 {
            for e in handshake(&mut server, &mut client, 80) {
                if let Event::Acceptable(l) = e {
                    assert!(reg.on_acceptable(&server, l));
                }
            }
            let woken: Vec<_> =
                apps.iter().filter(|a| a.wake.drain().unwrap() > 0).map(|a| a.app_id()).collect();
            assert_eq!(woken.len(), 1, "one eventfd write per arrival: {woken:?}");
            woken_order.push(woken[0]);
            for a in &apps {
                let mask = a.segment().socket_word(1, SocketField::AcceptReady).unwrap();
                assert_eq!(mask.load(Ordering::Relaxed), 1, "every subscriber sees ACCEPTABLE");
                sleep(a);
            }
        }
        woken_order.sort();
        assert_eq!(woken_order, vec![1, 2, 3], "round robin over the sleepers");
        // Nobody asleep: nobody is woken, the bit is still published.
        for a in &apps {
            a.segment().header_word(HeaderWord::Sleeping).unwrap().store(0, Ordering::SeqCst);
        }
        for e in handshake(&mut server, &mut client, 80) {
            if let Event::Acceptable(l) = e {
                assert!(!reg.on_acceptable(&server, l));
            }
        }
    }

    #[test]
    fn families_own_ports_and_the_last_unsubscribe_closes_the_listener() {
        let mut server = stack(2, SERVER);
        let (a, b, stranger) = (link(1, 7), link(2, 7), link(3, 8));
        let mut reg = ListenerRegistry::new(0);
        reg.subscribe(&mut server, &a, 0, 80, 8).unwrap();
        reg.subscribe(&mut server, &b, 2, 80, 8).unwrap();
        assert_eq!(reg.subscribe(&mut server, &stranger, 0, 80, 8), Err(Errno::EADDRINUSE));
        assert_eq!(reg.subscribe(&mut server, &a, 1, 80, 8), Err(Errno::EADDRINUSE));
        assert_eq!(reg.subscribe(&mut server, &a, 0, 80, 8), Ok(()), "idempotent");
        assert_eq!(reg.subscribe(&mut server, &a, 0, 81, 8), Err(Errno::EINVAL));
        assert_eq!(reg.subscribers(80), 2);
        reg.unsubscribe_app(&mut server, 1);
        assert_eq!(reg.subscribers(80), 1);
        assert!(reg.unsubscribe(&mut server, 2, 2));
        assert_eq!(reg.subscribers(80), 0);
        // The stack's listener is gone: the port can be opened afresh.
        assert!(server.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 1).is_ok());
    }
}
