//! Requests and their completions: tags, pushing to the request rings (with the
//! instance's doorbell), and handing each completion to the thread that waits for it.

use std::io;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use super::{CALL_TIMEOUT, Client, NO_TAG, err, invalid, lock, shm_io};
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

    pub(super) fn call(&self, instance: u16, request: Request) -> io::Result<Completion> {
        let tag = self.submit(instance, request)?;
        self.wait_completion(tag)
    }

    pub(super) fn wait_completion(&self, tag: u64) -> io::Result<Completion> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let found =
            self.block_until(Some(deadline), true, || Ok(lock(&self.results).done.remove(&tag)))?;
        match found {
            Some(c) => Ok(c),
            None => {
                lock(&self.results).abandoned.insert(tag);
                Err(err(Errno::ETIMEDOUT))
            }
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
        if r.abandoned.remove(&tag) {
            return false;
        }
        r.done.insert(tag, c);
        true
    }
}
