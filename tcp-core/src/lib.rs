//! `tcp-core`: a sans-IO TCP/IPv4 engine.
//!
//! The engine does no I/O, reads no clock and draws no random numbers. The embedder feeds
//! it Ethernet frames and the current time, and pulls out frames to send, the next
//! deadline and events. That makes it equally at home in a userspace network stack (it is
//! the engine of every netpop kernel instance), in a simulator, and in a fuzzer.
//!
//! # Layers
//!
//! - [`wire`]: Ethernet II, ARP, IPv4, ICMPv4, UDP and TCP (with every option) as a parsed
//!   representation that parses any input without panicking and emits into caller buffers.
//! - [`tcp`]: one TCP connection ([`tcp::Connection`]), working on parsed segments: the
//!   RFC 9293 state machine, RFC 6298 retransmission, NewReno (RFC 5681/6582) and CUBIC
//!   (RFC 9438), SACK (RFC 2018) with RFC 6675 recovery, window scaling, timestamps and
//!   PAWS (RFC 7323), RFC 5961 protections, Nagle/cork, delayed ACKs, keepalive, persist.
//! - [`stack`]: a whole host on one interface ([`stack::Stack`]): ARP, IPv4 with fragment
//!   reassembly, ICMP, UDP port-unreachable, the connection table, listeners with SYN and
//!   accept queues, SYN cookies (RFC 4987), RFC 6528 ISNs, path MTU from ICMP.
//!
//! # Call protocol
//!
//! 1. Build a [`stack::Stack`] from a [`stack::StackConfig`] (address, MAC, MTU, a random
//!    secret chosen by the embedder).
//! 2. In a loop: hand every received frame to [`Stack::handle_frame`](stack::Stack::handle_frame);
//!    call [`Stack::handle_timeout`](stack::Stack::handle_timeout) once the instant from
//!    [`Stack::poll_timeout`](stack::Stack::poll_timeout) has passed; perform application
//!    operations (`listen`, `accept`, `connect`, `send`, `recv`, `close`, ...); then drain
//!    [`Stack::poll_transmit`](stack::Stack::poll_transmit) until it returns `None`, putting
//!    each frame on the wire, and drain [`Stack::poll_event`](stack::Stack::poll_event).
//! 3. Time is an [`Instant`] in nanoseconds from an epoch the embedder picks; it must not
//!    go backwards.
//!
//! Malformed or unwanted input never panics: it is dropped and counted in
//! [`Stack::counters`](stack::Stack::counters).
//!
//! # Example
//!
//! Two stacks joined by an in-memory wire, with virtual time:
//!
//! ```
//! use core::net::{Ipv4Addr, SocketAddrV4};
//! use tcp_core::stack::{Stack, StackConfig};
//! use tcp_core::wire::EthernetAddress;
//! use tcp_core::{Duration, Instant};
//!
//! let server_ip = Ipv4Addr::new(192, 0, 2, 2);
//! let mut client = Stack::new(StackConfig::new(
//!     EthernetAddress([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(192, 0, 2, 1), 24, [1; 16]));
//! let mut server = Stack::new(StackConfig::new(
//!     EthernetAddress([2, 0, 0, 0, 0, 2]), server_ip, 24, [2; 16]));
//!
//! let mut now = Instant::ZERO;
//! let listener = server.listen(SocketAddrV4::new(server_ip, 80), 16)?;
//! let conn = client.connect(now, SocketAddrV4::new(server_ip, 80), None)?;
//! client.send(conn, b"hello")?;
//!
//! // Move frames both ways until the wire is quiet; advance time by 1 ms per round.
//! let mut frame = [0u8; 1514];
//! let mut accepted = None;
//! let mut received = Vec::new();
//! for _ in 0..100 {
//!     while let Some(len) = client.poll_transmit(now, &mut frame) {
//!         server.handle_frame(now, &frame[..len]);
//!     }
//!     while let Some(len) = server.poll_transmit(now, &mut frame) {
//!         client.handle_frame(now, &frame[..len]);
//!     }
//!     if let Ok((socket, _peer)) = server.accept(listener) {
//!         accepted = Some(socket);
//!     }
//!     if let Some(socket) = accepted {
//!         let mut buf = [0u8; 64];
//!         if let Ok(n) = server.recv(socket, &mut buf) {
//!             received.extend_from_slice(&buf[..n]);
//!         }
//!     }
//!     now += Duration::from_millis(1);
//!     client.handle_timeout(now);
//!     server.handle_timeout(now);
//! }
//! assert_eq!(received, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Runnable examples live in `examples/`: `in_memory_pair` (no privileges), and an echo
//! server and client over a TAP device or in memory.
//!
//! # Features
//!
//! `no_std` + `alloc`; the default `std` feature only adds `std::error::Error` impls.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod stack;
pub mod tcp;
pub mod time;
pub mod wire;

pub use time::{Duration, Instant};
