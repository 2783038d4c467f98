//! A hostile application scribbles over its own segment — request ring slots and indices,
//! completion ring, socket table, data rings, flags — and sends garbage and plausible
//! requests, while a well-behaved application on the same instance runs echo connections.
//! The instance must never panic and the good application must not notice anything
//! (DESIGN.md "Shared memory and trust"; issue 4 acceptance 5).

mod channel_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use channel_support::{Harness, Rng, peer_ip};
use flowgroups::channel::AppSegment;
use flowgroups::channel::proto::{Opcode, RequestSlot};

/// Plausible-or-garbage request slots: mostly known opcodes with slots and arguments near
/// valid ranges, so that both validation and execution paths are exercised.
fn random_request(rng: &mut Rng) -> RequestSlot {
    let mut slot = RequestSlot {
        opcode: if rng.below(10) == 0 { rng.next() as u16 } else { 1 + rng.below(10) as u16 },
        flags: if rng.below(20) == 0 { rng.next() as u16 } else { 0 },
        sock: if rng.below(10) == 0 { rng.next() as u32 } else { rng.below(64) as u32 },
        user: rng.next(),
        args: [0; 12],
    };
    let peer = u32::from(peer_ip(0));
    match Opcode::from_u16(slot.opcode) {
        Some(Opcode::Listen) => {
            // Includes the good app's port: another family must get EADDRINUSE.
            slot.args[0] =
                [97, 2000 + rng.below(50) as u32, rng.next() as u32][rng.below(3) as usize];
            slot.args[1] = rng.below(300) as u32;
        }
        Some(Opcode::Accept) => slot.args[0] = rng.below(70) as u32,
        Some(Opcode::Connect) => {
            slot.args[0] = [peer, rng.next() as u32, 0x0a00_0063][rng.below(3) as usize];
            slot.args[1] = [97, 1 + rng.below(3000) as u32, 0][rng.below(3) as usize];
        }
        Some(Opcode::Shutdown) => slot.args[0] = rng.below(4) as u32,
        Some(Opcode::SetOption) => {
            slot.args[0] = rng.below(5) as u32;
            slot.args[1] = rng.below(3) as u32;
        }
        _ => {}
    }
    if rng.below(20) == 0 {
        let i = rng.below(12) as usize;
        slot.args[i] = rng.next() as u32;
    }
    slot
}

/// One hostile app's life: `steps` random actions on its segment.
fn scribble(seg: &AppSegment, rng: &mut Rng, steps: u32) {
    let layout = seg.layout();
    let raw = seg.segment();
    let mut producer = seg.request_producer(0).ok();
    let mut consumer = seg.completion_consumer(0).ok();
    let ring_start = layout.request_ring_offset(0);
    let ring_len = layout.completion_ring_offset(0) - ring_start;
    let completion_len = layout.socket_table_offset() - layout.completion_ring_offset(0);
    let table = layout.socket_table_offset();
    for _ in 0..steps {
        match rng.below(100) {
            // Requests, valid and not: the common case.
            0..=54 => {
                if let Some(p) = producer.as_mut() {
                    if p.push(&random_request(rng)).is_err() {
                        producer = None;
                    }
                }
            }
            // Drain (or not) completions, so the instance is sometimes back-pressured.
            55..=64 => {
                if let Some(c) = consumer.as_mut() {
                    while let Ok(Some(_)) = c.pop() {}
                }
            }
            // Random words into the request ring (slots and, rarely, head/tail).
            65..=74 => {
                let at = ring_start + (rng.below(ring_len as u64 / 8) as usize) * 8;
                if let Ok(w) = raw.get::<AtomicU64>(at) {
                    w.store(rng.next(), Ordering::Relaxed);
                }
            }
            // Random words into the socket table.
            75..=84 => {
                let at = table + rng.below(u64::from(layout.sockets) * 16) as usize * 4;
                if let Ok(w) = raw.get::<AtomicU32>(at) {
                    w.store(rng.next() as u32, Ordering::Relaxed);
                }
            }
            // Data ring headers and bytes of a random socket.
            85..=92 => {
                let s = rng.below(u64::from(layout.sockets)) as u32;
                let base = if rng.below(2) == 0 {
                    layout.socket_rx_offset(s)
                } else {
                    layout.socket_tx_offset(s)
                };
                let at = base + rng.below(64) as usize * 8;
                if let Ok(w) = raw.get::<AtomicU64>(at) {
                    w.store(
                        if rng.below(2) == 0 { rng.next() } else { rng.below(1 << 16) },
                        Ordering::Relaxed,
                    );
                }
            }
            // The completion ring, header and slots.
            93..=95 => {
                let at = layout.completion_ring_offset(0)
                    + rng.below(completion_len as u64 / 8) as usize * 8;
                if let Ok(w) = raw.get::<AtomicU64>(at) {
                    w.store(rng.next(), Ordering::Relaxed);
                }
            }
            // Header words, flags.
            _ => {
                let at = rng.below(layout.request_ring_offset(0) as u64 / 8) as usize * 8;
                if let Ok(w) = raw.get::<AtomicU64>(at) {
                    w.store(rng.next(), Ordering::Relaxed);
                }
            }
        }
        if rng.below(64) == 0 {
            std::thread::yield_now();
        }
    }
}

#[test]
fn a_scribbling_app_breaks_only_itself() {
    let h = Arc::new(Harness::new(1));
    let good = h.add_app(1, 1, 0);
    let c = good.client.clone();
    let l = c.listen(97, 64).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let hostile_rounds = {
        let h = h.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            let mut seen = (0u64, 0u64, 0u64, 0u32); // requests, invalid, completions, broken
            let mut rng = Rng::new(0x0005_eed0_fbad);
            while !stop.load(Ordering::Relaxed) {
                let id = 1000 + rounds;
                let app = h.add_app(id, 2, 0);
                scribble(&app.segment, &mut rng, 3000);
                // Let the instance chew on it, then the app "dies".
                std::thread::sleep(Duration::from_millis(2));
                if let Some((t, broken)) =
                    h.with(|w| w.lanes[0].hub.app(id).map(|a| (a.totals(), a.broken())))
                {
                    seen.0 += t.requests;
                    seen.1 += t.invalid;
                    seen.2 += t.completions;
                    seen.3 += u32::from(broken.is_some());
                }
                h.detach(id);
                rounds += 1;
            }
            (rounds, seen)
        })
    };

    // Meanwhile the good app serves 200 echo connections.
    for i in 0..200u32 {
        let p = h.peer_connect(0, 97);
        let msg = format!("request {i}");
        h.with(|w| w.lanes[0].peer.send(p, msg.as_bytes()).unwrap());
        let (s, _) = c.accept(l, true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < msg.len() {
            let n = c.recv(s, &mut buf, true).unwrap();
            assert!(n > 0, "early EOF");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, msg.as_bytes());
        c.send(s, &got, true).unwrap();
        c.close(s).unwrap();
        assert_eq!(h.peer_recv_to_eof(0, p), msg.as_bytes());
        h.with(|w| w.lanes[0].peer.close(p).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let (rounds, (requests, invalid, completions, broken)) = hostile_rounds.join().unwrap();
    eprintln!(
        "{rounds} hostile apps: {requests} requests taken, {invalid} refused, \
         {completions} completions, {broken} marked broken"
    );
    assert!(rounds >= 3, "only {rounds} hostile apps ran");
    // The scribbling really reached the instance: requests were taken, garbage refused,
    // and corrupted rings detected.
    assert!(requests > 100 && invalid > 0 && completions > 0 && broken > 0);

    // The instance is alive (a panic would have poisoned the world lock), serves the good
    // app, and kept nothing of the hostile apps.
    let before = h.with(|w| w.iterations);
    h.wait_for("instance loop running", Duration::from_secs(5), |w| {
        (w.iterations > before + 10).then_some(())
    });
    h.with(|w| {
        let lane = &w.lanes[0];
        assert_eq!(lane.hub.app_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(lane.hub.registry().subscribers(97), 1, "no hostile subscription on the port");
        for port in 2000..2050 {
            assert_eq!(lane.hub.registry().subscribers(port), 0);
        }
    });
    h.wait_for("hostile connections gone", Duration::from_secs(10), |w| {
        (w.lanes[0].hub.registry().connection_count() == 0).then_some(())
    });
    let totals = h.with(|w| w.lanes[0].hub.app(1).unwrap().totals());
    assert!(totals.invalid == 0, "the good app sent nothing invalid");
}
