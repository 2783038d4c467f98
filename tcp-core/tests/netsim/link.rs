//! One direction of a simulated Ethernet link: a transmitter with a finite byte queue
//! (tail drop) that serialises frames at a fixed rate, then a wire with one-way latency
//! that may lose, delay (reorder), duplicate or corrupt a frame, and an MTU check.
//!
//! Frames are delivered in order of arrival time; ties keep transmit order, so a run is a
//! pure function of the parameters and the seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use tcp_core::{Duration, Instant};

use crate::rng::Rng;

/// Bytes a frame costs on an Ethernet wire beyond the ones the stack writes: preamble and
/// start delimiter (8), FCS (4) and the inter-frame gap (12).
pub(crate) const ETHERNET_OVERHEAD: u64 = 24;
/// Ethernet header length: the link MTU counts the IP packet, not this.
pub(crate) const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

/// What the link does to frames. Probabilities are in parts per million.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkParams {
    /// One-way propagation delay.
    pub(crate) latency: Duration,
    /// Serialisation rate in bits per second; 0 means infinitely fast (no queue).
    pub(crate) bandwidth_bps: u64,
    /// Bytes the transmit queue holds (frames waiting or being serialised); a frame that
    /// does not fit is tail-dropped.
    pub(crate) queue_limit: usize,
    /// Frames lost on the wire.
    pub(crate) loss_ppm: u32,
    /// Frames held back by an extra random delay in `0..=reorder_delay`, so that later
    /// frames overtake them.
    pub(crate) reorder_ppm: u32,
    /// Largest extra delay of a reordered frame.
    pub(crate) reorder_delay: Duration,
    /// Frames delivered twice (the copy takes its own reorder and corruption chances).
    pub(crate) duplicate_ppm: u32,
    /// IPv4 frames with one byte of the IP packet flipped. Ethernet's FCS would catch
    /// corruption on a real wire; this models corruption the IPv4 and TCP checksums must
    /// catch (a router's memory, a broken offload).
    pub(crate) corrupt_ppm: u32,
    /// Largest IP packet the link carries; larger frames are dropped and counted.
    pub(crate) mtu: usize,
}

impl LinkParams {
    /// A perfect link: no delay, infinite rate, nothing lost.
    pub(crate) fn ideal() -> LinkParams {
        LinkParams {
            latency: Duration::ZERO,
            bandwidth_bps: 0,
            queue_limit: usize::MAX,
            loss_ppm: 0,
            reorder_ppm: 0,
            reorder_delay: Duration::ZERO,
            duplicate_ppm: 0,
            corrupt_ppm: 0,
            mtu: 1500,
        }
    }

    /// Time to put `len` frame bytes on the wire.
    pub(crate) fn serialisation(&self, len: usize) -> Duration {
        if self.bandwidth_bps == 0 {
            return Duration::ZERO;
        }
        let bits = (len as u64 + ETHERNET_OVERHEAD) * 8;
        Duration::from_nanos(bits.saturating_mul(1_000_000_000) / self.bandwidth_bps)
    }
}

/// What happened to the frames given to one link direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkStats {
    /// Frames handed to the link.
    pub(crate) offered: u64,
    /// Frames (copies included) that reached the other end.
    pub(crate) delivered: u64,
    /// Payload bytes of delivered frames, Ethernet header included.
    pub(crate) delivered_bytes: u64,
    /// Frames larger than the MTU: a stack bug, must stay 0.
    pub(crate) oversize: u64,
    /// Frames tail-dropped because the queue was full.
    pub(crate) queue_drops: u64,
    /// Frames lost on the wire.
    pub(crate) lost: u64,
    /// Extra copies made.
    pub(crate) duplicated: u64,
    /// Frames (copies) that got the extra reordering delay.
    pub(crate) delayed: u64,
    /// Frames (copies) delivered with a flipped byte.
    pub(crate) corrupted: u64,
    /// Largest queue occupancy seen, bytes.
    pub(crate) max_queue: usize,
}

/// A frame on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    arrival: Instant,
    /// Transmit order: the tie-breaker that keeps delivery deterministic.
    order: u64,
    corrupted: bool,
    frame: Vec<u8>,
}

/// A frame coming out of the link.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) frame: Vec<u8>,
    /// The link flipped a byte of this frame: the receiver must drop it.
    pub(crate) corrupted: bool,
}

/// One direction of the link.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) params: LinkParams,
    pub(crate) stats: LinkStats,
    rng: Rng,
    /// When the transmitter finishes the frames already queued.
    busy_until: Instant,
    /// `(finish, bytes)` of frames still queued or being serialised at the last send.
    queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// Frames still to be lost on purpose (scripted loss for reproductions).
    forced_losses: u32,
}

impl Link {
    pub(crate) fn new(params: LinkParams, rng: Rng) -> Link {
        Link {
            params,
            stats: LinkStats::default(),
            rng,
            busy_until: Instant::ZERO,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: BinaryHeap::new(),
            order: 0,
            forced_losses: 0,
        }
    }

    /// Loses the next `n` frames offered, whatever the random draw says.
    pub(crate) fn lose_next(&mut self, n: u32) {
        self.forced_losses += n;
    }

    /// Puts a frame the sender produced at `now` on the link.
    pub(crate) fn send(&mut self, now: Instant, frame: &[u8]) {
        self.stats.offered += 1;
        if frame.len() > self.params.mtu + ETH_HEADER {
            self.stats.oversize += 1;
            return;
        }
        while self.queue.front().is_some_and(|&(finish, _)| finish <= now) {
            if let Some((_, bytes)) = self.queue.pop_front() {
                self.queued_bytes -= bytes;
            }
        }
        let departure = if self.params.bandwidth_bps == 0 {
            now
        } else {
            if self.queued_bytes + frame.len() > self.params.queue_limit {
                self.stats.queue_drops += 1;
                return;
            }
            let start = self.busy_until.max(now);
            let finish = start + self.params.serialisation(frame.len());
            self.busy_until = finish;
            self.queue.push_back((finish, frame.len()));
            self.queued_bytes += frame.len();
            self.stats.max_queue = self.stats.max_queue.max(self.queued_bytes);
            finish
        };
        // A lost frame still used the transmitter: loss happens on the wire.
        let forced = self.forced_losses > 0;
        self.forced_losses = self.forced_losses.saturating_sub(1);
        if self.rng.chance(self.params.loss_ppm) || forced {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.params.duplicate_ppm) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut arrival = departure + self.params.latency;
            if self.rng.chance(self.params.reorder_ppm) {
                let max = self.params.reorder_delay.as_nanos() as u64;
                arrival += Duration::from_nanos(self.rng.below(max + 1));
                self.stats.delayed += 1;
            }
            let mut copy = frame.to_vec();
            let corrupted = self.rng.chance(self.params.corrupt_ppm) && self.corrupt(&mut copy);
            self.order += 1;
            self.in_flight.push(Reverse(InFlight {
                arrival,
                order: self.order,
                corrupted,
                frame: copy,
            }));
        }
    }

    /// Flips one byte of the IP packet in an IPv4 frame; other frames are left alone.
    fn corrupt(&mut self, frame: &mut [u8]) -> bool {
        if frame.get(12..14) != Some(&ETHERTYPE_IPV4[..]) || frame.len() <= ETH_HEADER {
            return false;
        }
        let span = (frame.len() - ETH_HEADER) as u64;
        let at = ETH_HEADER + self.rng.below(span) as usize;
        let flip = 1 + self.rng.below(255) as u8;
        frame[at] ^= flip;
        self.stats.corrupted += 1;
        true
    }

    /// When the next frame arrives, if any is on its way.
    pub(crate) fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(f)| f.arrival)
    }

    /// The next frame that has arrived by `now`.
    pub(crate) fn pop_arrived(&mut self, now: Instant) -> Option<Delivery> {
        if self.next_arrival()? > now {
            return None;
        }
        let Reverse(f) = self.in_flight.pop()?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += f.frame.len() as u64;
        Some(Delivery { frame: f.frame, corrupted: f.corrupted })
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        f
    }

    fn drain(link: &mut Link) -> Vec<(Instant, Delivery)> {
        let mut out = Vec::new();
        while let Some(t) = link.next_arrival() {
            let d = link.pop_arrived(t).unwrap();
            out.push((t, d));
        }
        out
    }

    #[test]
    fn serialisation_queues_back_to_back_frames_then_tail_drops() {
        // 8 Mbit/s: a 976-byte frame plus 24 bytes of overhead takes exactly 1 ms.
        let params = LinkParams {
            latency: Duration::from_millis(5),
            bandwidth_bps: 8_000_000,
            queue_limit: 3 * 976,
            ..LinkParams::ideal()
        };
        let mut link = Link::new(params, Rng::new(1));
        for _ in 0..4 {
            link.send(Instant::ZERO, &ipv4_frame(976));
        }
        assert_eq!(link.stats.queue_drops, 1, "the fourth frame does not fit the queue");
        let times: Vec<u64> = drain(&mut link).iter().map(|(t, _)| t.as_millis()).collect();
        assert_eq!(times, [6, 7, 8]);
        // Once the queue drained, a new frame is accepted and goes out at once.
        link.send(Instant::from_millis(10), &ipv4_frame(976));
        assert_eq!(drain(&mut link)[0].0, Instant::from_millis(16));
    }

    #[test]
    fn oversize_frames_are_counted_and_dropped() {
        let mut link = Link::new(LinkParams { mtu: 576, ..LinkParams::ideal() }, Rng::new(1));
        link.send(Instant::ZERO, &ipv4_frame(576 + ETH_HEADER));
        link.send(Instant::ZERO, &ipv4_frame(577 + ETH_HEADER));
        assert_eq!(link.stats.oversize, 1);
        assert_eq!(drain(&mut link).len(), 1);
    }

    #[test]
    fn impairments_happen_at_their_rates_and_corruption_stays_in_the_ip_packet() {
        let params = LinkParams {
            latency: Duration::from_millis(1),
            loss_ppm: 100_000,
            duplicate_ppm: 100_000,
            corrupt_ppm: 100_000,
            reorder_ppm: 100_000,
            reorder_delay: Duration::from_millis(3),
            ..LinkParams::ideal()
        };
        let mut link = Link::new(params, Rng::new(9));
        let original = ipv4_frame(100);
        for i in 0..10_000u64 {
            link.send(Instant::from_micros(i), &original);
        }
        let s = link.stats.clone();
        for (name, n) in [("lost", s.lost), ("dup", s.duplicated), ("corrupt", s.corrupted)] {
            assert!((800..1200).contains(&n), "{name}: {n}");
        }
        let delivered = drain(&mut link);
        assert_eq!(delivered.len() as u64, 10_000 - s.lost + s.duplicated);
        let mut overtaken = false;
        for (i, (_, d)) in delivered.iter().enumerate() {
            let differs: Vec<usize> = (0..100).filter(|&k| d.frame[k] != original[k]).collect();
            assert_eq!(d.corrupted, !differs.is_empty());
            assert!(differs.len() <= 1 && differs.iter().all(|&k| k >= ETH_HEADER));
            overtaken |= i > 0 && delivered[i - 1].0 > delivered[i].0;
        }
        assert!(!overtaken, "arrivals come out in time order");
        assert!(s.delayed > 0);
    }
}
