//! Linux interfaces as the wire of an 82599 model port: [`QueueWire`] turns any
//! [`QueuePair`] — a [`TapDevice`] (the kernel sees the port as a TAP interface) or a
//! [`PacketSocket`] (the port is spliced onto an existing interface through `AF_PACKET`,
//! packet(7)) — into a [`WireBackend`].
//!
//! The model calls [`WireBackend::transmit_batch`] and [`WireBackend::receive_batch`] from
//! its engine thread, once per step each. To keep system calls per frame low:
//! - a receive batch is one burst of the backend, copied into the model's recycled frame
//!   buffers;
//! - a transmit batch is queued in the backend and flushed once at its end (and whenever
//!   the backend is full).
//!
//! The single-frame methods work too: receive fetches up to [`WIRE_BATCH`] frames per burst
//! and hands them out one by one; transmit queues frames in the backend and flushes when a
//! batch is full and on the next `receive` call. Code that drives a `QueueWire` by hand
//! with `transmit` calls [`QueueWire::flush`].
//!
//! Link state: a TAP is up as long as this process holds it (the process *is* the cable), so
//! `link_up` is always true by default. For an interface reached through `AF_PACKET`,
//! [`QueueWire::with_carrier_of`] makes `link_up` follow the interface's operational state
//! (`IFF_RUNNING`, netdevice(7)); for a veth that is "the peer end is up".
//!
//! A model port filters on its own MAC address, which is not the interface's: on a real NIC
//! put the interface in promiscuous mode (`ip link set DEV promisc on`) so frames for the
//! model reach the socket. veth delivers every frame to a packet socket without that.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{IfReq, PacketSocket, TapDevice, control_socket, ifreq_ioctl};
use crate::link::{FrameBuffers, WireBackend};
use crate::queue::{QueueError, QueuePair};

/// Frames moved per receive burst, and frames queued before a transmit flush.
pub const WIRE_BATCH: usize = 32;

/// How long a carrier reading stays valid. `link_up` is called for every transmitted frame,
/// so it must not cost a system call each time; the model reacts to a cable pull within this.
const CARRIER_REFRESH: Duration = Duration::from_millis(20);

/// A queue pair used as the wire of a model port (see the module documentation).
#[derive(Debug)]
pub struct QueueWire<Q> {
    queue: Q,
    /// Frames received in the last burst and not yet handed to the model, oldest first.
    staged: VecDeque<Vec<u8>>,
    /// Emptied frame buffers, reused so the steady state does not allocate.
    spare: Vec<Vec<u8>>,
    /// Frames given to the backend since the last flush.
    unflushed: usize,
    /// Frames the backend had no room for even after a flush.
    dropped: u64,
    carrier: Option<CarrierWatch>,
}

/// A TAP interface as the wire of a model port.
pub type TapWire = QueueWire<TapDevice>;

/// An existing interface, through an `AF_PACKET` socket, as the wire of a model port.
pub type PacketWire = QueueWire<PacketSocket>;

impl<Q: QueuePair> QueueWire<Q> {
    /// Wraps `queue`; the link is reported up for as long as the wire exists.
    pub fn new(queue: Q) -> Self {
        QueueWire {
            queue,
            staged: VecDeque::with_capacity(WIRE_BATCH),
            spare: Vec::with_capacity(WIRE_BATCH),
            unflushed: 0,
            dropped: 0,
            carrier: None,
        }
    }

    /// Makes [`WireBackend::link_up`] follow the operational state of `interface` (which
    /// must stay in this process's network namespace under that name).
    pub fn with_carrier_of(mut self, interface: &str) -> io::Result<Self> {
        let watch = CarrierWatch::new(interface)?;
        watch.read()?;
        self.carrier = Some(watch);
        Ok(self)
    }

    /// The wrapped queue pair (for its statistics, MAC address, ...).
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Frames the wire dropped because the backend had no transmit buffer free.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Pushes every queued transmit frame to the backend.
    pub fn flush(&mut self) -> io::Result<()> {
        self.unflushed = 0;
        self.queue.tx_flush().map_err(into_io)
    }

    /// Flushes and returns the wrapped queue pair.
    pub fn into_inner(mut self) -> Q {
        // Frames the backend cannot take now are counted in its statistics.
        let _ = self.flush();
        self.queue
    }

    fn refill(&mut self) -> io::Result<()> {
        let Self { queue, staged, spare, .. } = self;
        queue
            .rx_burst(WIRE_BATCH, &mut |frame| {
                let mut buffer = spare.pop().unwrap_or_default();
                buffer.clear();
                buffer.extend_from_slice(frame);
                staged.push_back(buffer);
            })
            .map_err(into_io)?;
        Ok(())
    }

    /// Offers `frame` to the backend once; `Ok(false)` when it had no buffer free.
    fn offer(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.queue
            .tx_one(&mut |buffer| match buffer.get_mut(..frame.len()) {
                Some(slot) => {
                    slot.copy_from_slice(frame);
                    frame.len()
                }
                // Longer than the interface carries: report the true length so the backend
                // counts the drop.
                None => frame.len(),
            })
            .map_err(into_io)
    }

    /// Queues one frame in the backend, flushing first if it is full; a frame that still
    /// finds no room is dropped and counted (a wire never blocks the model).
    fn queue_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        if !self.offer(frame)? {
            self.flush()?;
            if !self.offer(frame)? {
                self.dropped += 1;
                return Ok(());
            }
        }
        self.unflushed += 1;
        Ok(())
    }
}

impl<Q: QueuePair> WireBackend for QueueWire<Q> {
    fn transmit(&mut self, frame: &[u8]) -> io::Result<()> {
        self.queue_frame(frame)?;
        if self.unflushed >= WIRE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.unflushed > 0 {
            self.flush()?;
        }
        if self.staged.is_empty() {
            self.refill()?;
        }
        let Some(frame) = self.staged.pop_front() else { return Ok(None) };
        let len = frame.len().min(buf.len());
        buf[..len].copy_from_slice(&frame[..len]);
        self.spare.push(frame);
        Ok(Some(len))
    }

    fn link_up(&self) -> bool {
        self.carrier.as_ref().is_none_or(CarrierWatch::is_up)
    }

    fn transmit_batch(
        &mut self,
        frames: &mut Vec<Vec<u8>>,
        buffers: &mut FrameBuffers,
    ) -> io::Result<()> {
        crate::link::transmit_each(frames, buffers, |frame| self.queue_frame(frame))?;
        if self.unflushed > 0 { self.flush() } else { Ok(()) }
    }

    fn receive_batch(
        &mut self,
        max: usize,
        buffers: &mut FrameBuffers,
        out: &mut Vec<Vec<u8>>,
    ) -> io::Result<usize> {
        if self.unflushed > 0 {
            self.flush()?;
        }
        let mut received = 0;
        // Frames a single-frame `receive` staged come first, to keep arrival order.
        while received < max {
            let Some(staged) = self.staged.pop_front() else { break };
            let mut frame = buffers.take();
            frame.extend_from_slice(&staged);
            self.spare.push(staged);
            out.push(frame);
            received += 1;
        }
        if received < max {
            received += self
                .queue
                .rx_burst(max - received, &mut |bytes| {
                    let mut frame = buffers.take();
                    frame.extend_from_slice(bytes);
                    out.push(frame);
                })
                .map_err(into_io)?;
        }
        Ok(received)
    }
}

fn into_io(err: QueueError) -> io::Error {
    match err {
        QueueError::Io(e) => e,
        QueueError::Device(message) => io::Error::other(message),
    }
}

/// A cached reading of one interface's `IFF_RUNNING` flag.
#[derive(Debug)]
struct CarrierWatch {
    socket: OwnedFd,
    interface: String,
    up: Cell<bool>,
    read_at: Cell<Option<Instant>>,
}

impl CarrierWatch {
    fn new(interface: &str) -> io::Result<Self> {
        IfReq::new(interface)?;
        Ok(CarrierWatch {
            socket: control_socket()?,
            interface: interface.to_owned(),
            up: Cell::new(false),
            read_at: Cell::new(None),
        })
    }

    /// Asks the kernel (`SIOCGIFFLAGS`) and caches the answer.
    fn read(&self) -> io::Result<bool> {
        let mut request = IfReq::new(&self.interface)?;
        ifreq_ioctl(self.socket.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut request)?;
        let up = request.short() & libc::IFF_RUNNING as i16 != 0;
        self.up.set(up);
        self.read_at.set(Some(Instant::now()));
        Ok(up)
    }

    fn is_up(&self) -> bool {
        let fresh = self.read_at.get().is_some_and(|at| at.elapsed() < CARRIER_REFRESH);
        if fresh {
            return self.up.get();
        }
        // An interface that vanished has no carrier.
        self.read().unwrap_or_else(|_| {
            self.up.set(false);
            false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueStats;

    /// A queue pair in memory: `incoming` is what the "interface" received, `sent` what was
    /// flushed to it, with room for `tx_room` unflushed frames.
    #[derive(Default)]
    struct FakeQueue {
        incoming: VecDeque<Vec<u8>>,
        pending: Vec<Vec<u8>>,
        sent: Vec<Vec<u8>>,
        tx_room: usize,
        flushes: usize,
        bursts: usize,
        flush_accepts: bool,
    }

    impl QueuePair for FakeQueue {
        fn rx_burst(
            &mut self,
            max: usize,
            on_frame: &mut dyn FnMut(&[u8]),
        ) -> Result<usize, QueueError> {
            self.bursts += 1;
            let mut n = 0;
            while n < max {
                let Some(frame) = self.incoming.pop_front() else { break };
                on_frame(&frame);
                n += 1;
            }
            Ok(n)
        }

        fn tx_one(
            &mut self,
            build: &mut dyn FnMut(&mut [u8]) -> usize,
        ) -> Result<bool, QueueError> {
            if self.pending.len() >= self.tx_room {
                return Ok(false);
            }
            let mut buffer = vec![0; self.max_frame_len()];
            let len = build(&mut buffer);
            if len > 0 && len <= buffer.len() {
                buffer.truncate(len);
                self.pending.push(buffer);
            }
            Ok(true)
        }

        fn tx_flush(&mut self) -> Result<(), QueueError> {
            self.flushes += 1;
            if self.flush_accepts {
                self.sent.append(&mut self.pending);
            }
            Ok(())
        }

        fn max_frame_len(&self) -> usize {
            100
        }

        fn mac_address(&self) -> [u8; 6] {
            [2, 0, 0, 0, 0, 1]
        }

        fn stats(&self) -> QueueStats {
            QueueStats::default()
        }
    }

    fn fake(tx_room: usize) -> FakeQueue {
        FakeQueue { tx_room, flush_accepts: true, ..FakeQueue::default() }
    }

    #[test]
    fn received_frames_come_out_one_at_a_time_in_order_from_few_bursts() {
        let mut queue = fake(64);
        queue.incoming.extend((0..40u8).map(|i| vec![i; 60]));
        let mut wire = QueueWire::new(queue);
        let mut buf = [0u8; 128];
        for i in 0..40u8 {
            assert_eq!(wire.receive(&mut buf).unwrap(), Some(60));
            assert_eq!(buf[..60], [i; 60]);
        }
        assert_eq!(wire.receive(&mut buf).unwrap(), None);
        assert_eq!(wire.queue().bursts, 3, "32 + 8 frames, then one empty burst");
    }

    #[test]
    fn received_frames_longer_than_the_buffer_are_truncated() {
        let mut queue = fake(64);
        queue.incoming.push_back((0..90).collect());
        let mut wire = QueueWire::new(queue);
        let mut buf = [0u8; 64];
        assert_eq!(wire.receive(&mut buf).unwrap(), Some(64));
        assert_eq!(buf[63], 63);
    }

    #[test]
    fn transmitted_frames_reach_the_queue_by_the_next_receive() {
        let mut wire = QueueWire::new(fake(64));
        wire.transmit(&[1; 60]).unwrap();
        wire.transmit(&[2; 61]).unwrap();
        assert!(wire.queue().sent.is_empty(), "batched until the step's receive");
        let mut buf = [0u8; 128];
        assert_eq!(wire.receive(&mut buf).unwrap(), None);
        assert_eq!(wire.queue().sent, vec![vec![1; 60], vec![2; 61]]);
    }

    #[test]
    fn a_full_batch_is_flushed_without_waiting_for_receive() {
        let mut wire = QueueWire::new(fake(64));
        for i in 0..WIRE_BATCH as u8 {
            wire.transmit(&[i; 60]).unwrap();
        }
        assert_eq!(wire.queue().sent.len(), WIRE_BATCH);
        assert_eq!(wire.queue().flushes, 1);
    }

    #[test]
    fn a_backend_without_room_is_flushed_then_the_frame_dropped_and_counted() {
        let mut queue = fake(2);
        queue.flush_accepts = false;
        let mut wire = QueueWire::new(queue);
        wire.transmit(&[1; 60]).unwrap();
        wire.transmit(&[2; 60]).unwrap();
        wire.transmit(&[3; 60]).unwrap();
        assert_eq!(wire.dropped(), 1);
        assert_eq!(wire.queue().flushes, 1, "one flush before giving up on the frame");
        assert_eq!(wire.queue().pending.len(), 2);

        // Once the backend drains, transmit goes on without loss.
        wire.queue.flush_accepts = true;
        wire.transmit(&[4; 60]).unwrap();
        assert_eq!(wire.dropped(), 1);
        let queue = wire.into_inner();
        let firsts: Vec<u8> = queue.sent.iter().map(|f| f[0]).collect();
        assert_eq!(firsts, vec![1, 2, 4]);
    }

    #[test]
    fn batches_keep_arrival_order_after_single_frame_receives() {
        let mut queue = fake(64);
        queue.incoming.extend((0..40u8).map(|i| vec![i; 60]));
        let mut wire = QueueWire::new(queue);
        let mut buf = [0u8; 128];
        // One single-frame receive stages a burst of 32; the batches must drain those first.
        assert_eq!(wire.receive(&mut buf).unwrap(), Some(60));
        let mut buffers = FrameBuffers::default();
        let mut got = Vec::new();
        assert_eq!(wire.receive_batch(20, &mut buffers, &mut got).unwrap(), 20);
        assert_eq!(wire.receive_batch(64, &mut buffers, &mut got).unwrap(), 19);
        assert_eq!(wire.receive_batch(64, &mut buffers, &mut got).unwrap(), 0);
        let firsts: Vec<u8> = got.iter().map(|f| f[0]).collect();
        assert_eq!(firsts, (1..40).collect::<Vec<u8>>());
    }

    #[test]
    fn a_transmit_batch_is_flushed_once_and_its_buffers_recycled() {
        let mut wire = QueueWire::new(fake(64));
        let mut buffers = FrameBuffers::default();
        let mut frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 60]).collect();
        wire.transmit_batch(&mut frames, &mut buffers).unwrap();
        assert!(frames.is_empty());
        assert_eq!(buffers.spare(), 10);
        assert_eq!(wire.queue().flushes, 1);
        let firsts: Vec<u8> = wire.queue().sent.iter().map(|f| f[0]).collect();
        assert_eq!(firsts, (0..10).collect::<Vec<u8>>());
    }

    #[test]
    fn a_transmit_batch_larger_than_the_backend_flushes_midway_and_drops_nothing() {
        let mut wire = QueueWire::new(fake(4));
        let mut frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 60]).collect();
        wire.transmit_batch(&mut frames, &mut FrameBuffers::default()).unwrap();
        assert_eq!(wire.dropped(), 0);
        assert_eq!(wire.queue().sent.len(), 10);
    }

    #[test]
    fn link_is_up_without_a_carrier_watch_and_follows_the_interface_with_one() {
        let wire = QueueWire::new(fake(1));
        assert!(wire.link_up());
        // Loopback exists and runs in every network namespace.
        let wire = QueueWire::new(fake(1)).with_carrier_of("lo").unwrap();
        assert!(wire.link_up());
        assert!(QueueWire::new(fake(1)).with_carrier_of("np-no-such-if").is_err());
    }
}
