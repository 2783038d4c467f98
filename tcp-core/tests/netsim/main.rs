//! A deterministic network simulator for whole TCP connections between two `Stack`s
//! (issue 2, acceptance item 2), with property tests and fixed-seed scenarios on top.
//!
//! - [`rng`]: a seeded SplitMix64 generator; every run is a pure function of its seed.
//! - [`link`]: one direction of an Ethernet link with latency, serialisation at a given
//!   bandwidth behind a tail-drop queue, random loss, reordering (extra delay for some
//!   frames), duplication, corruption (a flipped byte the IPv4/TCP checksums, RFC 1071,
//!   must catch) and an MTU that frames must never exceed.
//! - [`monitor`]: a passive observer that checks sequence-space rules on the wire
//!   (RFC 9293 §3.4 and §3.8.6, RFC 7323 §2.3).
//! - [`app`]: clients and a server that move position-dependent byte patterns both ways
//!   at once and check every byte arrives exactly once and in order.
//! - [`sim`]: virtual time and the driver loop following `Stack`'s call protocol.
//! - [`properties`] (proptest) and [`scenarios`] (fixed seeds): the tests.
//!
//! Reproduce a failing property case by copying the printed `SimConfig`-building input
//! into a scenario test; the seed in each input fixes every random choice of the link.

mod app;
mod bugs;
mod link;
mod monitor;
mod properties;
mod rng;
mod scenarios;
mod sim;
