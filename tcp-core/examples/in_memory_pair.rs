//! Two tcp-core stacks joined by an in-memory Ethernet wire: an echo server on one, a
//! client on the other. Needs no privileges; time is virtual, so the run is deterministic.
//!
//!     cargo run -p tcp-core --example in_memory_pair
//!
//! The wire drops every 20th frame to show retransmission at work.

use std::net::{Ipv4Addr, SocketAddrV4};

use tcp_core::stack::{Event, Stack, StackConfig};
use tcp_core::wire::EthernetAddress;
use tcp_core::{Duration, Instant};

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PAYLOAD_LEN: usize = 1 << 20;

fn main() {
    let mut client =
        Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 1]), CLIENT_IP, 24, [1; 16]));
    let mut server =
        Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 2]), SERVER_IP, 24, [2; 16]));
    let mut now = Instant::ZERO;

    let listener = server.listen(SocketAddrV4::new(SERVER_IP, 7), 128).expect("listen");
    let conn = client.connect(now, SocketAddrV4::new(SERVER_IP, 7), None).expect("connect");
    let payload: Vec<u8> = (0..PAYLOAD_LEN).map(|i| (i * 7 % 251) as u8).collect();
    let (mut sent, mut echoed) = (0, Vec::with_capacity(PAYLOAD_LEN));
    let mut accepted = None;
    let mut backlog: Vec<u8> = Vec::new();
    let (mut frames, mut dropped) = (0u64, 0u64);
    let mut buf = vec![0u8; 1514];
    let mut data = vec![0u8; 65536];

    while echoed.len() < PAYLOAD_LEN && now < Instant::from_secs(600) {
        // The application side: the client writes, the server echoes, the client reads.
        if let Ok(n) = client.send(conn, &payload[sent..]) {
            sent += n;
        }
        if accepted.is_none() {
            accepted = server.accept(listener).ok().map(|(s, peer)| {
                println!("server: accepted a connection from {peer}");
                s
            });
        }
        if let Some(s) = accepted {
            // Echo: first flush what is still waiting, read more only when all of it went out.
            loop {
                while !backlog.is_empty() {
                    match server.send(s, &backlog) {
                        Ok(n @ 1..) => drop(backlog.drain(..n)),
                        _ => break,
                    }
                }
                if !backlog.is_empty() {
                    break;
                }
                match server.recv(s, &mut data) {
                    Ok(n @ 1..) => backlog.extend_from_slice(&data[..n]),
                    _ => break,
                }
            }
        }
        while let Ok(n @ 1..) = client.recv(conn, &mut data) {
            echoed.extend_from_slice(&data[..n]);
        }
        for event in std::iter::from_fn(|| client.poll_event()) {
            if let Event::Connected(_) = event {
                println!("client: connected at t={now}");
            }
        }
        while server.poll_event().is_some() {}

        // The wire: move frames both ways, dropping every 20th.
        let moved = wire(&mut client, &mut server, now, &mut buf, &mut frames, &mut dropped)
            | wire(&mut server, &mut client, now, &mut buf, &mut frames, &mut dropped);
        if !moved {
            // Nothing in flight: jump to the next timer (virtual time).
            let next = [client.poll_timeout(), server.poll_timeout()].into_iter().flatten().min();
            now = next.unwrap_or(now + Duration::from_millis(1)).max(now);
            client.handle_timeout(now);
            server.handle_timeout(now);
        } else {
            now += Duration::from_micros(10);
        }
    }

    let ok = echoed == payload;
    println!(
        "client: echoed {} of {} bytes back, content {}",
        echoed.len(),
        PAYLOAD_LEN,
        if ok { "identical" } else { "DIFFERENT" }
    );
    let stats = client.connection_stats(conn).expect("stats");
    println!("wire: {frames} frames, {dropped} dropped on purpose; virtual time {now}");
    println!("client connection: {stats:?}");
    std::process::exit(if ok { 0 } else { 1 });
}

/// Moves every frame `from` has to send over to `to`, dropping every 20th; true if any moved.
fn wire(
    from: &mut Stack,
    to: &mut Stack,
    now: Instant,
    buf: &mut [u8],
    frames: &mut u64,
    dropped: &mut u64,
) -> bool {
    let mut moved = false;
    while let Some(n) = from.poll_transmit(now, buf) {
        *frames += 1;
        moved = true;
        if *frames % 20 == 0 {
            *dropped += 1;
            continue;
        }
        to.handle_frame(now, &buf[..n]);
    }
    moved
}
