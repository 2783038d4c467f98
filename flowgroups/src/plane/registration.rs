//! App registration (the channel's [`RegistrationMessage`] protocol, plane side).
//!
//! On `Register{pid}` the plane creates the app's segment (so its layout is trusted by the
//! instances) and wake eventfd, hands both to every live instance (socketpair message +
//! `ControlMessage::AppAttached`, see [`super::spawn`]), and answers the app with
//! `Registered` + the two fds, then `Doorbells` + one doorbell eventfd per instance.
//! `Registered` names the instances alive at that moment, so that the app replicates its
//! listeners only to instances that will answer (a dead one never would); the same mask
//! goes into the segment's `LiveInstances` header word, which the plane rewrites (and wakes
//! the app) whenever an instance dies, so that apps registered before the death stop using
//! it too ([`Registrar::announce_live_instances`]). The app keeps its connection open for
//! life; when it hangs up (exit, crash, kill -9) every
//! instance gets `AppDetached` and resets and frees the app's sockets.
//!
//! # Listener families
//!
//! Instances let apps of one *family* share a listening port (like `SO_REUSEPORT`
//! siblings) and refuse it to anyone else (`ListenerRegistry::subscribe`). A forked child
//! that inherited a listener must share its parent's port — an Apache prefork child
//! accepts on the socket its parent opened — so an app joins the family of its nearest
//! registered ancestor: the plane takes the app's pid from the kernel (`SO_PEERCRED`, not
//! the pid the app announces) and walks its parents in `/proc`. Only a descendant of an app
//! can share that app's ports, which is what inheriting the descriptor allows on Linux.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;

use crate::channel::proto::{Errno, RegistrationMessage};
use crate::channel::{AppLayout, AppSegment, HeaderWord, SocketField};
use crate::control::ControlMessage;
use crate::instance::plane_link::send_app_fds;
use crate::shm::process::peer_pid;
use crate::shm::{EventFd, send_fds};

use super::spawn::InstanceProc;

/// Most apps registered at once (each holds a segment, an eventfd and a socket).
pub const MAX_APPS: usize = 4096;

/// One registered application.
#[derive(Debug)]
pub struct AppEntry {
    /// Id given at registration.
    pub app_id: u32,
    /// Its pid (from the kernel when it can tell, else as the app announced it).
    pub pid: u32,
    /// Its listener family: its own id, or its nearest registered ancestor's family.
    pub family: u32,
    /// Its home instance.
    pub home: u16,
    conn: UnixStream,
    segment: AppSegment,
    // Lives as long as the app, whoever else holds it; the plane writes it to announce a
    // dead instance.
    wake: EventFd,
}

/// Apps registered with this plane.
#[derive(Debug)]
pub struct Registrar {
    layout: AppLayout,
    next_id: u32,
    apps: BTreeMap<u32, AppEntry>,
    /// Apps ever registered.
    pub registered_total: u64,
    /// Apps that left (hang-up).
    pub detached_total: u64,
    /// Registrations refused.
    pub refused_total: u64,
}

/// Why a registration failed on the plane's side (the app gets `Refused`).
fn errno_of(e: &io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::ENOMEM))
}

impl Registrar {
    /// An empty registry handing out segments of `layout`.
    pub fn new(layout: AppLayout) -> Registrar {
        Registrar {
            layout,
            next_id: 1,
            apps: BTreeMap::new(),
            registered_total: 0,
            detached_total: 0,
            refused_total: 0,
        }
    }

    /// Registered apps.
    pub fn apps(&self) -> impl Iterator<Item = &AppEntry> {
        self.apps.values()
    }

    /// Number of registered apps.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    /// No app registered.
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Connections to watch for hang-up: (app id, socket).
    pub fn watched(&self) -> Vec<(u32, BorrowedFd<'_>)> {
        self.apps.values().map(|a| (a.app_id, a.conn.as_fd())).collect()
    }

    /// Refuses a registration (shutting down, no live instance, ...).
    pub fn refuse(&mut self, conn: &UnixStream, errno: Errno) {
        self.refused_total += 1;
        let _ = send_fds(conn, &RegistrationMessage::Refused { errno }.encode(), &[]);
    }

    /// Registers the app that sent `Register{pid}` on `conn`.
    pub fn register(
        &mut self,
        conn: UnixStream,
        pid: u32,
        instances: &mut [InstanceProc],
    ) -> Result<u32, io::Error> {
        let Some(home) = self.choose_home(instances) else {
            self.refuse(&conn, Errno::ECONNREFUSED);
            return Err(io::Error::other("no live instance"));
        };
        if self.apps.len() >= MAX_APPS {
            self.refuse(&conn, Errno::EMFILE);
            return Err(io::Error::other("too many apps"));
        }
        // The kernel's word for who connected; the announced pid only if it has none.
        let pid = peer_pid(conn.as_fd()).ok().filter(|&p| p != 0).unwrap_or(pid);
        let app_id = self.next_id;
        // Ids are not reused while the plane runs (a late message about a dead app must
        // never reach its successor); 2^32 registrations are far away.
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let (segment, wake) = match AppSegment::create(self.layout, app_id, pid)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|s| Ok((s, EventFd::new()?)))
        {
            Ok(x) => x,
            Err(e) => {
                self.refuse(&conn, errno_of(&e));
                return Err(e);
            }
        };
        let family =
            family_by_ancestry(pid, |p| self.family_of_pid(p), parent_of).unwrap_or(app_id);
        let fds = [segment.segment().fd(), wake.as_fd()];
        for inst in instances.iter_mut().filter(|i| !i.dead) {
            // fds first, then the control message that tells the instance to take them.
            match send_app_fds(&inst.link, app_id, family, self.layout, fds[0], fds[1]) {
                Ok(()) => {
                    inst.send(ControlMessage::AppAttached { app_id });
                }
                Err(e) => {
                    eprintln!("netpop: cannot hand app {app_id} to instance {}: {e}", inst.index)
                }
            }
        }
        let live = live_mask(instances);
        if let Ok(w) = segment.header_word(HeaderWord::LiveInstances) {
            w.store(u32::from(live), Ordering::Release);
        }
        let reply = RegistrationMessage::Registered {
            app_id,
            home,
            layout: self.layout,
            doorbells: self.layout.instances,
            live,
        };
        let doorbells: Vec<BorrowedFd<'_>> = instances.iter().map(|i| i.doorbell.as_fd()).collect();
        let answered = send_fds(&conn, &reply.encode(), &fds).and_then(|()| {
            let count = self.layout.instances;
            send_fds(&conn, &RegistrationMessage::Doorbells { count }.encode(), &doorbells)
        });
        self.apps.insert(app_id, AppEntry { app_id, pid, family, home, conn, segment, wake });
        self.registered_total += 1;
        if let Err(e) = answered {
            // The app is gone already: undo at once.
            self.detach(app_id, instances);
            return Err(e);
        }
        Ok(app_id)
    }

    /// The family of the registered app with process id `pid`, if any.
    fn family_of_pid(&self, pid: u32) -> Option<u32> {
        self.apps.values().find(|a| a.pid == pid).map(|a| a.family)
    }

    /// The live instance that is home to the fewest apps (lowest index on ties).
    fn choose_home(&self, instances: &[InstanceProc]) -> Option<u16> {
        instances
            .iter()
            .filter(|i| !i.dead)
            .map(|i| (self.apps.values().filter(|a| a.home == i.index).count(), i.index))
            .min()
            .map(|(_, index)| index)
    }

    /// Reads whatever app `app_id` sent; true if it hung up (then call
    /// [`Registrar::detach`]). Apps send nothing after registering, so data is discarded.
    pub fn hung_up(&mut self, app_id: u32) -> bool {
        let Some(app) = self.apps.get_mut(&app_id) else { return false };
        let mut buf = [0u8; 256];
        loop {
            match (&app.conn).read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Forgets app `app_id` and tells every live instance to reclaim its sockets.
    pub fn detach(&mut self, app_id: u32, instances: &mut [InstanceProc]) -> bool {
        if self.apps.remove(&app_id).is_none() {
            return false;
        }
        self.detached_total += 1;
        for inst in instances.iter_mut().filter(|i| !i.dead) {
            inst.send(ControlMessage::AppDetached { app_id });
        }
        true
    }

    /// Instance `index` died: withdraw its accept-ready bit from every socket of every app,
    /// so that no app keeps asking a dead instance for connections it will never hand out
    /// (the bit is normally cleared by the instance itself, which can no longer do it).
    pub fn withdraw_instance(&self, index: u16) {
        let Some(bit) = 1u32.checked_shl(u32::from(index)) else { return };
        for app in self.apps.values() {
            for slot in 0..self.layout.sockets {
                if let Ok(w) = app.segment.socket_word(slot, SocketField::AcceptReady) {
                    w.fetch_and(!bit, Ordering::AcqRel);
                }
            }
        }
    }

    /// Writes `live` (bit i: instance i serves) into every app's `LiveInstances` header word
    /// and wakes the app, after an instance died: an app registered before the death would
    /// otherwise keep replicating listeners to the dead instance and wait for its answer.
    /// The wake-up ends any wait for that answer at once (the client re-checks the word
    /// whenever it wakes); a wake-up nobody waits for costs the app one spurious return.
    pub fn announce_live_instances(&self, live: u16) {
        for app in self.apps.values() {
            if let Ok(w) = app.segment.header_word(HeaderWord::LiveInstances) {
                w.store(u32::from(live), Ordering::Release);
            }
            if let Err(e) = app.wake.notify() {
                eprintln!("netpop: cannot wake app {} about a dead instance: {e}", app.app_id);
            }
        }
    }

    /// Makes an accepted connection non-blocking for hang-up polling.
    pub fn prepare(conn: &UnixStream) -> io::Result<()> {
        conn.set_nonblocking(true)
    }
}

/// The instances not known dead (bit i: instance i).
pub fn live_mask(instances: &[InstanceProc]) -> u16 {
    instances.iter().filter(|i| !i.dead).fold(0u16, |m, i| m | (1 << i.index))
}

/// How far up the process tree a registration looks for a registered ancestor.
const MAX_ANCESTRY: usize = 64;

/// The family of the nearest ancestor of `pid` that `family_of` knows, walking parents with
/// `parent_of` (at most [`MAX_ANCESTRY`] steps, never past init).
fn family_by_ancestry(
    pid: u32,
    family_of: impl Fn(u32) -> Option<u32>,
    parent_of: impl Fn(u32) -> Option<u32>,
) -> Option<u32> {
    let mut at = pid;
    for _ in 0..MAX_ANCESTRY {
        at = parent_of(at).filter(|&p| p > 1 && p != at)?;
        if let Some(family) = family_of(at) {
            return Some(family);
        }
    }
    None
}

/// The parent of process `pid`, from `/proc/<pid>/stat` (proc(5): the fourth field, after
/// the command name in parentheses, which may itself hold spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent(&stat)
}

fn parse_parent(stat: &str) -> Option<u32> {
    let after_comm = stat.get(stat.rfind(')')? + 1..)?;
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_an_awkward_command_name() {
        assert_eq!(parse_parent("1234 (apache2) S 1200 1234 1234 0 -1"), Some(1200));
        assert_eq!(parse_parent("77 (a) b) (c) R 5 77 77 0"), Some(5));
        assert_eq!(parse_parent("garbage"), None);
        assert_eq!(parse_parent("1 (x)"), None);
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(crate::shm::process::parent_pid()));
    }

    #[test]
    fn an_app_joins_the_family_of_its_nearest_registered_ancestor() {
        // init(1) -> shell(10) -> apache parent(20, app family 7) -> child(30) -> cgi(40);
        // an unrelated process 50 under the shell.
        let parent = |p: u32| match p {
            10 => Some(1),
            20 => Some(10),
            30 => Some(20),
            40 => Some(30),
            50 => Some(10),
            _ => None,
        };
        let family = |p: u32| (p == 20).then_some(7);
        assert_eq!(family_by_ancestry(30, family, parent), Some(7));
        assert_eq!(family_by_ancestry(40, family, parent), Some(7), "grandchildren too");
        assert_eq!(family_by_ancestry(50, family, parent), None, "a sibling is no relative");
        assert_eq!(family_by_ancestry(20, family, parent), None, "not its own ancestor");
        // A loop in a (hostile or racing) process table ends.
        assert_eq!(family_by_ancestry(5, |_| None, |p| Some(p ^ 1)), None);
    }

    #[test]
    fn the_kernel_names_the_peer_of_a_unix_socket() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_pid(a.as_fd()).unwrap(), std::process::id());
    }
}
