//! Process calls: `fork`, `vfork`, and the exec family (`execve`, `execv`, `execvp`,
//! `execvpe`, `fexecve`, `posix_spawn`, `posix_spawnp`; `execl*` arrive through
//! [`super::varargs`]).
//!
//! - `fork` is libc's; the shim's work happens in its atfork handlers (see
//!   `crate::netpop`), which also run for forks libc makes internally (`daemon`).
//! - `vfork` is `fork` (see the crate documentation for why).
//! - exec: the environment keeps the preload (`crate::envfix`); netpop sockets are
//!   marked close-on-exec just before the call and unmarked if it fails, so the new program
//!   starts without them. `posix_spawn*` get the same treatment for the child they start.

use libc::{c_char, c_int, c_void, pid_t};

use crate::envfix;
use crate::errno::{errno, set_errno};
use crate::real;
use crate::{FDS, FdEntry};

unsafe extern "C" {
    static environ: *const *const c_char;
}

/// `fork(2)`.
///
/// # Safety
///
/// As `fork(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn fork() -> pid_t {
    // SAFETY: libc's fork; the shim's handlers are registered with pthread_atfork.
    unsafe { real::fork() }
}

/// `vfork(2)`, served as `fork`.
///
/// # Safety
///
/// As `vfork(2)`; the child must not rely on sharing the parent's memory (POSIX allows
/// only `exec` and `_exit` there anyway).
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn vfork() -> pid_t {
    // SAFETY: as `fork`.
    unsafe { real::fork() }
}

/// Netpop placeholders that were inheritable, now marked close-on-exec.
#[derive(Debug)]
struct CloseOnExec(Vec<c_int>);

impl CloseOnExec {
    fn mark() -> CloseOnExec {
        let mut marked = Vec::new();
        for (fd, entry) in FDS.entries() {
            if !matches!(entry, FdEntry::Socket(_)) {
                continue;
            }
            // SAFETY: F_GETFD/F_SETFD take no pointer.
            let flags = unsafe { real::fcntl(fd, libc::F_GETFD, 0) };
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                // SAFETY: as above.
                if unsafe {
                    real::fcntl(fd, libc::F_SETFD, (flags | libc::FD_CLOEXEC) as libc::c_ulong)
                } == 0
                {
                    marked.push(fd);
                }
            }
        }
        CloseOnExec(marked)
    }

    /// The exec failed (or the spawn is done): the descriptors are inheritable again.
    fn restore(self) {
        let saved = errno();
        for fd in self.0 {
            // SAFETY: F_GETFD/F_SETFD take no pointer.
            unsafe {
                let flags = real::fcntl(fd, libc::F_GETFD, 0);
                if flags >= 0 {
                    real::fcntl(fd, libc::F_SETFD, (flags & !libc::FD_CLOEXEC) as libc::c_ulong);
                }
            }
        }
        set_errno(saved);
    }
}

/// Runs an exec-like call with the fixed environment and netpop sockets marked
/// close-on-exec.
///
/// # Safety
///
/// `envp` is null or a valid environment array.
unsafe fn with_exec_rules<R>(
    envp: *const *const c_char,
    call: impl FnOnce(*const *const c_char) -> R,
) -> R {
    // SAFETY: the caller guarantees `envp`.
    let block = unsafe { envfix::prepare(envp) };
    let env = block.as_ref().map_or(envp, |b| b.as_ptr());
    let marked = CloseOnExec::mark();
    let r = call(env);
    marked.restore();
    r
}

/// `execve(2)`.
///
/// # Safety
///
/// As `execve(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: arguments forwarded; `env` is the caller's or a valid fixed copy.
    unsafe { with_exec_rules(envp, |env| real::execve(path, argv, env)) }
}

/// `execv(3)`.
///
/// # Safety
///
/// As `execv(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `environ` is the process environment, valid here.
    unsafe { execve(path, argv, environ) }
}

/// `execvp(3)`.
///
/// # Safety
///
/// As `execvp(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `environ` is the process environment, valid here.
    unsafe { execvpe(file, argv, environ) }
}

/// `execvpe(3)`.
///
/// # Safety
///
/// As `execvpe(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: arguments forwarded; `env` is the caller's or a valid fixed copy.
    unsafe { with_exec_rules(envp, |env| real::execvpe(file, argv, env)) }
}

/// `fexecve(3)`.
///
/// # Safety
///
/// As `fexecve(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: arguments forwarded; `env` is the caller's or a valid fixed copy.
    unsafe { with_exec_rules(envp, |env| real::fexecve(fd, argv, env)) }
}

/// `posix_spawn(3)`.
///
/// # Safety
///
/// As `posix_spawn(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: arguments forwarded; `env` is the caller's or a valid fixed copy.
    unsafe {
        with_exec_rules(envp.cast(), |env| {
            real::posix_spawn(pid, path, actions, attr, argv, env.cast())
        })
    }
}

/// `posix_spawnp(3)`.
///
/// # Safety
///
/// As `posix_spawnp(3)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: arguments forwarded; `env` is the caller's or a valid fixed copy.
    unsafe {
        with_exec_rules(envp.cast(), |env| {
            real::posix_spawnp(pid, file, actions, attr, argv, env.cast())
        })
    }
}
