//! Helpers shared by the integration tests: frame builders and polling with a deadline.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use ixgbe_user::QueuePair;

/// An Ethernet + IPv4 + TCP (or UDP) frame with a payload that encodes `tag`.
pub(crate) fn ipv4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tcp: bool,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    tag: u32,
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + 8];
    f[..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    let total = (20 + 20 + 8) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = if tcp { 6 } else { 17 };
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[54..58].copy_from_slice(&tag.to_be_bytes());
    f[58..62].copy_from_slice(&(!tag).to_be_bytes());
    f
}

/// Source port of a frame built by [`ipv4_frame`].
pub(crate) fn sport_of(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(34)?, *frame.get(35)?]))
}

/// Receives from `q` until `want` frames arrived or `timeout` passed.
pub(crate) fn receive_n(q: &mut dyn QueuePair, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < want && start.elapsed() < timeout {
        let n = q.rx_burst(32, &mut |f| got.push(f.to_vec())).unwrap();
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub(crate) fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
