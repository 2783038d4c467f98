//! `ixgbe-user`: NIC queue pairs driven from userspace.
//!
//! Not built yet: the 82599 driver, the 82599 model and the AF_XDP backend (see README).
