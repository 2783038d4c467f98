//! Two stacks over a network the fuzzer controls (drop, duplicate, delay, corrupt, reorder
//! each frame). Whatever the network does, each side may only ever read a prefix of what
//! the other side sent: never a wrong, duplicated or reordered byte.
#![no_main]

use core::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use tcp_core::stack::{Stack, StackConfig};
use tcp_core::wire::EthernetAddress;
use tcp_core::{Duration, Instant};

const MAC_A: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
const MAC_B: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// The byte stream each side sends: position-dependent so any misplacement is visible.
fn stream(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fuzz_target!(|net: &[u8]| {
    let mut a = Stack::new(StackConfig::new(MAC_A, IP_A, 24, [1; 16]));
    let mut b = Stack::new(StackConfig::new(MAC_B, IP_B, 24, [2; 16]));
    let mut now = Instant::from_secs(1);
    let listener = b.listen(SocketAddrV4::new(IP_B, 80), 8).expect("listen");
    let ca = a.connect(now, SocketAddrV4::new(IP_B, 80), None).expect("connect");
    let mut cb = None;
    let to_b = stream(1, 20_000);
    let to_a = stream(2, 20_000);
    let (mut sent_a, mut sent_b) = (0usize, 0usize);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    // In-flight frames: (deliver at, to B?, frame).
    let mut wire: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
    let mut choices = net.iter().copied().cycle();
    let mut buf = vec![0u8; 2048];
    let mut rbuf = vec![0u8; 4096];

    for _round in 0..2_000 {
        if let Ok(n) = a.send(ca, &to_b[sent_a..]) {
            sent_a += n;
        }
        if cb.is_none() {
            cb = b.accept(listener).ok().map(|(h, _)| h);
        }
        if let Some(cb) = cb {
            if let Ok(n) = b.send(cb, &to_a[sent_b..]) {
                sent_b += n;
            }
            while let Ok(n @ 1..) = b.recv(cb, &mut rbuf) {
                got_b.extend_from_slice(&rbuf[..n]);
            }
        }
        while let Ok(n @ 1..) = a.recv(ca, &mut rbuf) {
            got_a.extend_from_slice(&rbuf[..n]);
        }
        assert!(to_b.starts_with(&got_b), "B read bytes A never sent at that position");
        assert!(to_a.starts_with(&got_a), "A read bytes B never sent at that position");

        for (stack, to_b_dir) in [(&mut a, true), (&mut b, false)] {
            let mut frames = 0;
            while let Some(n) = stack.poll_transmit(now, &mut buf) {
                frames += 1;
                assert!(frames < 10_000, "poll_transmit never returned None");
                let c = if net.is_empty() { 0 } else { choices.next().unwrap_or(0) };
                let mut frame = buf[..n].to_vec();
                match c % 16 {
                    0 => continue, // lost
                    1 => {
                        let i = usize::from(c) % frame.len();
                        frame[i] ^= 0x5a; // corrupted: checksums must catch it
                    }
                    2 => wire.push((now, to_b_dir, frame.clone())), // duplicated
                    _ => {}
                }
                let delay = Duration::from_micros(100 + u64::from(c / 16) * 500);
                wire.push((now + delay, to_b_dir, frame));
            }
        }
        // Deliver whatever is due (the delays above reorder frames).
        let next_wire = wire.iter().map(|w| w.0).min();
        let next_timer = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min();
        match [next_wire, next_timer].into_iter().flatten().min() {
            Some(t) => now = now.max(t),
            None => break,
        }
        let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|w| w.0 <= now);
        wire = later;
        for (_, to_b_dir, frame) in due {
            if to_b_dir { b.handle_frame(now, &frame) } else { a.handle_frame(now, &frame) }
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
    }
});
