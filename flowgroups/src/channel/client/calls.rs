//! Requests and their completions: tags, pushing to the request rings (with the
//! instance's doorbell), and handing each completion to the thread that waits for it.

use std::io;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::{CALL_TIMEOUT, Client, NO_TAG, err, invalid, lock, shm_io};

/// What to do with the completion of a request whose caller gave up waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Abandoned {
    /// Nothing to undo (the request binds no slot, or its caller cleans up itself).
    Ignore,
    /// An `Accept` into `slot`: a connection it brought is parked for the listener's next
    /// accept; a failure frees the slot.
    Accept { listener: u32, slot: u32, instance: u16 },
    /// A `Connect` in `slot`: the connection is closed (its caller never got it); a
    /// failure frees the slot.
    Connect { slot: u32, instance: u16 },
}
use crate::channel::proto::{Completion, Errno, Request};

impl Client {
    pub(super) fn new_tag(&self) -> u64 {
        // Never NO_TAG: start at 1 and skip 0 on wrap-around.
        loop {
            let t = self.next_tag.fetch_add(1, Ordering::Relaxed);
            if t != NO_TAG {
                return t;
            }
        }
    }

    pub(super) fn submit(&self, instance: u16, request: Request) -> io::Result<u64> {
        let tag = self.new_tag();
        self.submit_with_tag(instance, request, tag)?;
        Ok(tag)
    }

    pub(super) fn submit_untagged(&self, instance: u16, request: Request) -> io::Result<()> {
        self.submit_with_tag(instance, request, NO_TAG)
    }

    /// Pushes a request, waiting (draining completions, which is what frees the instance
    /// to take more requests) while the ring is full; then rings the doorbell if the
    /// instance announced it sleeps.
    pub(super) fn submit_with_tag(
        &self,
        instance: u16,
        request: Request,
        tag: u64,
    ) -> io::Result<()> {
        let ring = self.requests.get(usize::from(instance)).ok_or_else(|| err(Errno::EINVAL))?;
        let slot = request.encode(tag);
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            if lock(ring).push(&slot).map_err(shm_io)? {
                break;
            }
            self.ring_doorbell(instance)?;
            if Instant::now() >= deadline {
                return Err(err(Errno::ETIMEDOUT));
            }
            self.drain_completions()?;
            std::thread::sleep(Duration::from_micros(50));
        }
        self.ring_doorbell(instance)
    }

    pub(super) fn ring_doorbell(&self, instance: u16) -> io::Result<()> {
        let Some(bell) = self.doorbells.get(usize::from(instance)) else { return Ok(()) };
        let flag = self.seg.instance_sleeping(instance).map_err(shm_io)?;
        // SeqCst fence: the pushed tail is ordered before the flag load; the instance
        // fences between setting the flag and checking its ring.
        fence(Ordering::SeqCst);
        if flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::AcqRel) != 0 {
            bell.notify()?;
        }
        Ok(())
    }

    /// Sends `request` to `instance` and waits for its completion. If the wait ends early
    /// (a signal, or no answer in time), what the request may still do is undone when its
    /// completion arrives (see [`Abandoned`]).
    pub(super) fn call(&self, instance: u16, request: Request) -> io::Result<Completion> {
        let tag = self.submit(instance, request)?;
        let if_abandoned = match request {
            Request::Accept { listener, new_sock } => {
                Abandoned::Accept { listener: listener.0, slot: new_sock.0, instance }
            }
            Request::Connect { sock, .. } => Abandoned::Connect { slot: sock.0, instance },
            _ => Abandoned::Ignore,
        };
        self.wait_completion(tag, if_abandoned)
    }

    /// Waits for the completion tagged `tag`. A signal during the wait (see
    /// [`Client::set_sleep`]) ends it with `Interrupted` — except for an `Accept` —, a
    /// silent instance with `ETIMEDOUT`; either way the completion, when it comes, is
    /// handled as `if_abandoned` says, so no socket slot leaks.
    ///
    /// An `Accept` waits through signals (until the deadline): the instance takes the
    /// connection off the shared accept queue as soon as it serves the request, so the
    /// caller is the only one who can still have it. accept(2) behaves the same once the
    /// kernel has dequeued a connection; the signal's handler has run either way. Ending
    /// the call would park the connection in this process, which may be about to exit:
    /// an Apache prefork child told to stop with a signal would take it along and the
    /// client would see a reset.
    pub(super) fn wait_completion(
        &self,
        tag: u64,
        if_abandoned: Abandoned,
    ) -> io::Result<Completion> {
        // Without an instance to watch, only a completion ends the wait with `Ok`.
        self.wait_completion_from(tag, if_abandoned, None)?.ok_or_else(|| err(Errno::ETIMEDOUT))
    }

    /// [`Client::wait_completion`] for a request sent to `instance`, which gives up early,
    /// with `Ok(None)`, if the plane announces that instance dead: it will never answer,
    /// and a caller that replicates a request to every instance (a listen) goes on with
    /// the others instead of failing after [`CALL_TIMEOUT`]. The plane wakes the app when
    /// it announces a death, so this takes no longer than noticing the death does.
    pub(super) fn wait_completion_unless_dead(
        &self,
        tag: u64,
        instance: u16,
    ) -> io::Result<Option<Completion>> {
        self.wait_completion_from(tag, Abandoned::Ignore, Some(instance))
    }

    fn wait_completion_from(
        &self,
        tag: u64,
        if_abandoned: Abandoned,
        instance: Option<u16>,
    ) -> io::Result<Option<Completion>> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        // `Some(None)`: the instance died first.
        let check = || -> io::Result<Option<Option<Completion>>> {
            if let Some(c) = lock(&self.results).done.remove(&tag) {
                return Ok(Some(Some(c)));
            }
            Ok(instance.is_some_and(|i| !self.is_live(i)).then_some(None))
        };
        let waited = loop {
            match self.block_until(Some(deadline), true, check) {
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        && matches!(if_abandoned, Abandoned::Accept { .. }) => {}
                w => break w,
            }
        };
        let error = match waited {
            Ok(Some(Some(c))) => return Ok(Some(c)),
            Ok(Some(None)) => None,
            Ok(None) => Some(err(Errno::ETIMEDOUT)),
            Err(e) => Some(e),
        };
        let mut r = lock(&self.results);
        // Filed after the last check: the call did complete.
        if let Some(c) = r.done.remove(&tag) {
            return Ok(Some(c));
        }
        r.abandoned.insert(tag, if_abandoned);
        match error {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    pub(super) fn expect_done(&self, c: Completion) -> io::Result<()> {
        match c {
            Completion::Done { .. } => Ok(()),
            Completion::Failed { errno, .. } => Err(err(errno)),
            _ => Err(invalid("unexpected completion")),
        }
    }

    /// Pops every completion ring that no other thread is draining right now and hands
    /// each completion to its waiter.
    pub(super) fn drain_completions(&self) -> io::Result<()> {
        let mut delivered = false;
        for ring in &self.completions {
            let Ok(mut ring) = ring.try_lock() else { continue };
            while let Some(slot) = ring.pop().map_err(shm_io)? {
                // A completion this client cannot decode was not written by an instance
                // (the app scribbled on its own memory); there is nobody to give it to.
                let Ok(c) = slot.decode(&self.layout) else { continue };
                delivered |= self.deliver(c);
            }
        }
        if delivered {
            self.file_for_others();
        }
        Ok(())
    }

    /// Files one completion; true if a waiting thread may want it.
    pub(super) fn deliver(&self, c: Completion) -> bool {
        let tag = c.user();
        if tag == NO_TAG {
            return false;
        }
        let mut r = lock(&self.results);
        if let Some(slot) = r.closing.remove(&tag) {
            let left = r.closes_left.get(&slot).copied().unwrap_or(1).saturating_sub(1);
            if left == 0 {
                r.closes_left.remove(&slot);
                drop(r);
                self.release_slot(slot);
            } else {
                r.closes_left.insert(slot, left);
            }
            return false;
        }
        if let Some(action) = r.abandoned.remove(&tag) {
            drop(r);
            return self.undo(action, c);
        }
        r.done.insert(tag, c);
        true
    }

    /// Deals with the completion of a request whose caller stopped waiting; true if a
    /// waiting thread may want the result (a parked connection).
    fn undo(&self, action: Abandoned, c: Completion) -> bool {
        match (action, c) {
            (
                Abandoned::Accept { listener, slot, instance },
                Completion::Accepted { sock, peer, local, .. },
            ) if sock.0 == slot => {
                // The instance took the connection off its accept queue: keep it for the
                // listener's next accept rather than drop a connection Linux would keep.
                if self.is_listener(listener)
                    && self.attach_stream(slot, instance, local, peer).is_ok()
                {
                    let mut r = lock(&self.results);
                    r.parked.entry(listener).or_default().push_back((slot, peer));
                    return true;
                }
                self.close_on(slot, &[instance]);
                false
            }
            (Abandoned::Connect { slot, instance }, Completion::Connecting { .. }) => {
                // The caller never got the socket: nobody will use the connection.
                self.close_on(slot, &[instance]);
                false
            }
            (
                Abandoned::Accept { slot, .. } | Abandoned::Connect { slot, .. },
                Completion::Failed { .. },
            ) => {
                self.release_slot(slot);
                false
            }
            // A completion that does not fit the request was not written by an instance;
            // the slot stays reserved rather than be reused while an instance may hold it.
            _ => false,
        }
    }
}
