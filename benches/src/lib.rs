//! Benchmarks and the load generator for netpop.
//!
//! Not built yet (see README).
