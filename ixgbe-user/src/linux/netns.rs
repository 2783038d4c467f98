//! Test support: throwaway network namespaces and veth pairs.
//!
//! Integration tests (here, in tcp-core's Linux interop tests and in flowgroups) need a Linux
//! peer they fully own. This module builds one with the `ip` tool from iproute2 — a network
//! namespace (ip-netns(8)) and a veth pair (veth(4)) with one end inside it — and removes
//! everything again from `Drop`, so a failing test leaves nothing behind. Nothing here is
//! meant for production paths: it shells out and needs root.
//!
//! Conventions for callers: check [`skip_unless_root`] first; name everything with
//! [`unique_name`] so tests running in parallel (threads or processes) never collide; use
//! addresses only inside namespaces the test created.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether the process runs with effective uid 0.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns `true` (after printing why) when the test named `test` must be skipped because
/// the process is not root; tests call it first and return early on `true`.
pub fn skip_unless_root(test: &str) -> bool {
    if running_as_root() {
        return false;
    }
    println!("SKIPPED {test}: needs root (network namespaces, veth, TAP, XDP)");
    true
}

/// A name unique to this process and call, at most 15 bytes (the interface-name limit):
/// `np` + `tag` (at most 3 bytes used) + pid and a per-process counter in base 36.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).take(3).collect();
    format!("np{tag}{}{}", base36(std::process::id()), base36(count))
}

fn base36(mut value: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Runs `ip ARGS...`; an error carries the command line and ip's stderr.
pub fn ip(args: &[&str]) -> io::Result<String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
}

impl NetNamespace {
    /// Creates namespace `name` (`ip netns add`) and brings its loopback up.
    pub fn create(name: &str) -> io::Result<NetNamespace> {
        ip(&["netns", "add", name])?;
        let ns = NetNamespace { name: name.to_owned() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...` (a command inside the namespace).
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `PROGRAM ARGS...` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `body` on a fresh thread that has joined this namespace (setns(2) with
    /// `CLONE_NEWNET` affects only the calling thread), so sockets it creates live in the
    /// namespace. The calling thread's namespace is untouched.
    pub fn run_inside<R: Send>(&self, body: impl FnOnce() -> R + Send) -> io::Result<R> {
        let handle = File::open(format!("/run/netns/{}", self.name))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: `handle` is an open namespace file from ip-netns; setns only
                    // changes this (new) thread's network namespace.
                    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(body())
                })
                .join()
                .map_err(|_| io::Error::other("thread inside the namespace panicked"))?
        })
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // Interfaces inside go with it (veth peers are destroyed, which removes the pair).
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A veth pair whose first end stays in the caller's namespace and whose peer end lives in a
/// [`NetNamespace`]. Dropping it deletes the pair.
#[derive(Debug)]
pub struct VethPair {
    local: String,
    peer: String,
}

impl VethPair {
    /// Creates `local` ⇄ `peer` with `queues` rx and tx queues on each end, moves `peer` into
    /// `ns`, and brings both ends up. Multi-queue veth matters for XDP in driver mode, where
    /// each rx queue is its own NAPI context.
    pub fn create(local: &str, peer: &str, ns: &NetNamespace, queues: u32) -> io::Result<VethPair> {
        let queues = queues.max(1).to_string();
        ip(&[
            "link",
            "add",
            local,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "netns",
            ns.name(),
        ])?;
        let pair = VethPair { local: local.to_owned(), peer: peer.to_owned() };
        ip(&["link", "set", local, "up"])?;
        ns.ip(&["link", "set", peer, "up"])?;
        Ok(pair)
    }

    /// The end in the caller's namespace.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The end inside the namespace.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Already gone if the namespace was deleted first; that is fine.
        let _ = ip(&["link", "delete", &self.local]);
    }
}

/// Moves interface `link` from the caller's namespace into `ns` (`ip link set LINK netns
/// NS`). An open TAP descriptor keeps working across the move.
pub fn move_into(link: &str, ns: &NetNamespace) -> io::Result<()> {
    ip(&["link", "set", link, "netns", ns.name()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_an_interface_name_and_differ() {
        let a = unique_name("veth");
        let b = unique_name("veth");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a}");
        assert!(a.starts_with("npvet"), "{a}");
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u32::MAX).len(), 7);
    }

    #[test]
    fn namespace_and_veth_are_removed_on_drop() {
        if skip_unless_root("namespace_and_veth_are_removed_on_drop") {
            return;
        }
        let ns_name = unique_name("ns");
        let local = unique_name("va");
        {
            let ns = NetNamespace::create(&ns_name).unwrap();
            let veth = VethPair::create(&local, &unique_name("vb"), &ns, 2).unwrap();
            assert!(crate::linux::interface_index(veth.local()).is_ok());
            let inside = ns.ip(&["-o", "link", "show", veth.peer()]).unwrap();
            assert!(inside.contains(veth.peer()), "{inside}");
            let index_inside =
                ns.run_inside(|| crate::linux::interface_index(veth.peer())).unwrap();
            assert!(index_inside.is_ok(), "the thread did not join the namespace");
        }
        assert!(crate::linux::interface_index(&local).is_err(), "veth left behind");
        let namespaces = ip(&["netns", "list"]).unwrap();
        assert!(!namespaces.contains(&ns_name), "namespace left behind: {namespaces}");
    }
}
