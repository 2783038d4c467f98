//! `flowgroups`: what makes many kernel instances one stack.
//!
//! Not built yet: shared-memory rings, the flow-group table, the balancer, kernel
//! instances and the app channel protocol (see README).

pub mod balancer;
pub mod flowgroup;
pub mod ports;
pub mod steering;
