//! Keeping the shim across `exec`: the environment handed to a new program keeps
//! `LD_PRELOAD` pointing at this library and the `NETPOP_*` settings the process started
//! with, even when the program builds a fresh environment (CGI runners, `env -i`-like
//! sanitising).
//!
//! The rule is applied to the environment actually passed to `execve` (or `environ` for the
//! variants without one): if no `LD_PRELOAD` item names this library (same path or same
//! file name), the library's path is put first; every `NETPOP_*` variable the process had at
//! start and the new environment lacks is added. Nothing else changes.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

/// What the process started with.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Path of this library as the loader knows it.
    pub(crate) library: Vec<u8>,
    /// `NETPOP_*=value` entries.
    pub(crate) netpop_vars: Vec<Vec<u8>>,
}

static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();

/// Records the library path and the `NETPOP_*` variables (library constructor).
pub(crate) fn capture() {
    let _ = SNAPSHOT.get_or_init(|| {
        let netpop_vars = std::env::vars_os()
            .filter(|(k, _)| k.as_bytes().starts_with(b"NETPOP_"))
            .map(|(k, v)| {
                let mut e = k.as_bytes().to_vec();
                e.push(b'=');
                e.extend_from_slice(v.as_bytes());
                e
            })
            .collect();
        Snapshot { library: library_path().unwrap_or_default(), netpop_vars }
    });
}

fn library_path() -> Option<Vec<u8>> {
    // SAFETY: an all-zero Dl_info is a valid value to be overwritten.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let anchor = capture as fn() as *const libc::c_void;
    // SAFETY: `anchor` is an address inside this library; `info` is writable.
    let found = unsafe { libc::dladdr(anchor, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated path owned by the loader, valid while the
    // library is loaded; it is copied at once.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(name.to_bytes().to_vec())
}

fn names_library(item: &[u8], library: &[u8]) -> bool {
    if item.is_empty() || library.is_empty() {
        return false;
    }
    let base = |p: &[u8]| p.rsplit(|&b| b == b'/').next().map(<[u8]>::to_vec).unwrap_or_default();
    item == library || base(item) == base(library)
}

/// The environment `env` with the rule applied, or `None` if it already complies.
pub(crate) fn fixed_environment(env: &[&[u8]], snap: &Snapshot) -> Option<Vec<CString>> {
    let mut out: Vec<Vec<u8>> = env.iter().map(|e| e.to_vec()).collect();
    let mut changed = false;
    if !snap.library.is_empty() {
        let idx = out.iter().position(|e| e.starts_with(b"LD_PRELOAD="));
        let has_us = idx.and_then(|i| out.get(i)).is_some_and(|e| {
            e.get(b"LD_PRELOAD=".len()..)
                .unwrap_or(&[])
                .split(|&b| b == b':' || b == b' ')
                .any(|item| names_library(item, &snap.library))
        });
        if !has_us {
            let mut value = b"LD_PRELOAD=".to_vec();
            value.extend_from_slice(&snap.library);
            match idx.and_then(|i| out.get_mut(i)) {
                Some(e) => {
                    let old = e.get(b"LD_PRELOAD=".len()..).unwrap_or(&[]).to_vec();
                    if !old.is_empty() {
                        value.push(b':');
                        value.extend_from_slice(&old);
                    }
                    *e = value;
                }
                None => out.push(value),
            }
            changed = true;
        }
    }
    for var in &snap.netpop_vars {
        let name_len = var.iter().position(|&b| b == b'=').unwrap_or(var.len()) + 1;
        let prefix = var.get(..name_len).unwrap_or(var);
        if !out.iter().any(|e| e.starts_with(prefix)) {
            out.push(var.clone());
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    // Entries came from C strings or from the process environment: no interior NUL.
    Some(out.into_iter().filter_map(|e| CString::new(e).ok()).collect())
}

/// An environment block ready for `execve`: the strings and the NULL-terminated array.
#[derive(Debug)]
pub(crate) struct EnvBlock {
    _strings: Vec<CString>,
    pointers: Vec<*const libc::c_char>,
}

impl EnvBlock {
    /// The `envp` argument.
    pub(crate) fn as_ptr(&self) -> *const *const libc::c_char {
        self.pointers.as_ptr()
    }
}

/// The environment to pass instead of `envp`, or `None` to pass `envp` unchanged.
///
/// # Safety
///
/// `envp` is null or a NULL-terminated array of NUL-terminated strings, as `execve`
/// requires.
pub(crate) unsafe fn prepare(envp: *const *const libc::c_char) -> Option<EnvBlock> {
    let snap = SNAPSHOT.get()?;
    let mut entries: Vec<&[u8]> = Vec::new();
    if !envp.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: the caller guarantees a NULL-terminated array; we stop at the NULL.
            let p = unsafe { *envp.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: each entry is a NUL-terminated string that outlives this call.
            entries.push(unsafe { CStr::from_ptr(p) }.to_bytes());
            i += 1;
        }
    }
    let strings = fixed_environment(&entries, snap)?;
    let mut pointers: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    pointers.push(std::ptr::null());
    Some(EnvBlock { _strings: strings, pointers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            library: b"/opt/np/libnetpop_shim.so".to_vec(),
            netpop_vars: vec![b"NETPOP_SOCKET=/tmp/np.sock".to_vec()],
        }
    }

    fn fix(env: &[&str]) -> Option<Vec<String>> {
        let raw: Vec<&[u8]> = env.iter().map(|e| e.as_bytes()).collect();
        fixed_environment(&raw, &snap())
            .map(|v| v.into_iter().map(|c| c.into_string().unwrap()).collect())
    }

    #[test]
    fn a_sanitised_environment_gets_the_preload_and_settings_back() {
        let out = fix(&["PATH=/bin"]).unwrap();
        assert_eq!(
            out,
            vec!["PATH=/bin", "LD_PRELOAD=/opt/np/libnetpop_shim.so", "NETPOP_SOCKET=/tmp/np.sock"]
        );
    }

    #[test]
    fn other_preloads_are_kept_after_ours() {
        let out = fix(&["LD_PRELOAD=/usr/lib/libfoo.so", "NETPOP_SOCKET=/x"]).unwrap();
        assert_eq!(
            out,
            vec!["LD_PRELOAD=/opt/np/libnetpop_shim.so:/usr/lib/libfoo.so", "NETPOP_SOCKET=/x"]
        );
    }

    #[test]
    fn an_environment_that_complies_is_left_alone() {
        assert!(fix(&["LD_PRELOAD=libnetpop_shim.so", "NETPOP_SOCKET=/other"]).is_none());
        assert!(fix(&["LD_PRELOAD=/a.so /opt/np/libnetpop_shim.so", "NETPOP_SOCKET=/x"]).is_none());
    }

    #[test]
    fn the_app_may_override_a_setting() {
        let out = fix(&["LD_PRELOAD=/opt/np/libnetpop_shim.so", "NETPOP_SOCKET=/mine"]);
        assert!(out.is_none(), "an explicit NETPOP_SOCKET is the app's choice");
    }
}
