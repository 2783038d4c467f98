//! App registration (the channel's [`RegistrationMessage`] protocol, plane side).
//!
//! On `Register{pid}` the plane creates the app's segment (so its layout is trusted by the
//! instances) and wake eventfd, hands both to every live instance (socketpair message +
//! `ControlMessage::AppAttached`, see [`super::spawn`]), and answers the app with
//! `Registered` + the two fds, then `Doorbells` + one doorbell eventfd per instance. The
//! app keeps its connection open for life; when it hangs up (exit, crash, kill -9) every
//! instance gets `AppDetached` and resets and frees the app's sockets.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;

use crate::channel::proto::{Errno, RegistrationMessage};
use crate::channel::{AppLayout, AppSegment, SocketField};
use crate::control::ControlMessage;
use crate::instance::plane_link::send_app_fds;
use crate::shm::{EventFd, send_fds};

use super::spawn::InstanceProc;

/// Most apps registered at once (each holds a segment, an eventfd and a socket).
pub const MAX_APPS: usize = 4096;

/// One registered application.
#[derive(Debug)]
pub struct AppEntry {
    /// Id given at registration.
    pub app_id: u32,
    /// Its pid as it announced it (informational).
    pub pid: u32,
    /// Its home instance.
    pub home: u16,
    conn: UnixStream,
    segment: AppSegment,
    // Kept so that the eventfd lives as long as the app, whoever else holds it.
    _wake: EventFd,
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
        let fds = [segment.segment().fd(), wake.as_fd()];
        for inst in instances.iter_mut().filter(|i| !i.dead) {
            // fds first, then the control message that tells the instance to take them.
            // Every app is its own listener family (a forked child registers as a new app
            // of a new family; sharing a parent's ports is the shim's business).
            match send_app_fds(&inst.link, app_id, app_id, self.layout, fds[0], fds[1]) {
                Ok(()) => {
                    inst.send(ControlMessage::AppAttached { app_id });
                }
                Err(e) => {
                    eprintln!("netpop: cannot hand app {app_id} to instance {}: {e}", inst.index)
                }
            }
        }
        let reply = RegistrationMessage::Registered {
            app_id,
            home,
            layout: self.layout,
            doorbells: self.layout.instances,
        };
        let doorbells: Vec<BorrowedFd<'_>> = instances.iter().map(|i| i.doorbell.as_fd()).collect();
        let answered = send_fds(&conn, &reply.encode(), &fds).and_then(|()| {
            let count = self.layout.instances;
            send_fds(&conn, &RegistrationMessage::Doorbells { count }.encode(), &doorbells)
        });
        self.apps.insert(app_id, AppEntry { app_id, pid, home, conn, segment, _wake: wake });
        self.registered_total += 1;
        if let Err(e) = answered {
            // The app is gone already: undo at once.
            self.detach(app_id, instances);
            return Err(e);
        }
        Ok(app_id)
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

    /// Makes an accepted connection non-blocking for hang-up polling.
    pub fn prepare(conn: &UnixStream) -> io::Result<()> {
        conn.set_nonblocking(true)
    }
}
