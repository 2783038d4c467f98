//! `shim-posix`: the `LD_PRELOAD` socket shim.
//!
//! Not built yet: no libc call is intercepted today (see README).
