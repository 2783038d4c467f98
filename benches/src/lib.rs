//! Benchmarks and the load generator for netpop.
//!
//! Built so far:
//! - [`pktio`]: packet I/O rates per queue for the `ixgbe-user` backends (the 82599 model
//!   link, AF_XDP on veth, and an AF_PACKET socket on the same veth as the baseline); run it
//!   with `scripts/bench-pktio.sh` or `cargo run --release -p netpop-benches --bin pktio`.
//! - [`loadgen`]: an HTTP/1.1 load generator over the kernel stack (like `ab`/`wrk`); run it
//!   with `cargo run --release -p netpop-benches --bin loadgen -- --help`, or compare it with
//!   `ab` against lighttpd with `scripts/bench-loadgen.sh`.
//! - [`tcp`]: tcp-core in memory beside smoltcp and the Linux kernel over loopback
//!   (connections per second, bulk throughput) and callgrind's instructions per connection;
//!   run it with `scripts/bench-tcp.sh`.
//!
//! - [`plot`]: SVG figures of the results for BENCHMARKS.md.
//!
//! The end-to-end comparison (lighttpd and Apache on netpop and on Linux) and the
//! flow-group balancing benchmark are scripts: `scripts/bench-e2e.sh` and
//! `scripts/bench-balance.sh`; `scripts/bench-all.sh` runs everything and redraws the plots.

pub mod loadgen;
pub mod pktio;
pub mod plot;
pub mod tcp;
