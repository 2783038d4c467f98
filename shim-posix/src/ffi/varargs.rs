//! The C-variadic entry points (`fcntl`, `fcntl64`, `ioctl`, `execl`, `execlp`, `execle`).
//!
//! Stable Rust cannot define a C-variadic function, so each exported symbol is a naked
//! trampoline: a single jump to the C function in `csrc/varargs.c` that unpacks the `...`
//! arguments. A jump leaves every argument register, the vector-count register (`al` on
//! x86-64) and the stack exactly as the caller set them, so the C function sees the
//! original variadic call. The C functions call back into the non-variadic Rust functions
//! below (`netpop_rs_*`).

use libc::{c_char, c_int, c_ulong};

use super::fd::{FcntlFlavor, fcntl_impl, ioctl_impl};

unsafe extern "C" {
    fn netpop_va_fcntl();
    fn netpop_va_fcntl64();
    fn netpop_va_ioctl();
    fn netpop_va_execl();
    fn netpop_va_execlp();
    fn netpop_va_execle();
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the variadic trampolines are written for x86-64 and AArch64");

macro_rules! trampoline {
    ($(#[$doc:meta])* $name:ident => $target:ident) => {
        $(#[$doc])*
        #[cfg_attr(not(test), unsafe(no_mangle))]
        #[unsafe(naked)]
        pub extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {0}", sym $target);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {0}", sym $target);
        }
    };
}

trampoline!(
    /// `fcntl(int fd, int cmd, ...)`.
    fcntl => netpop_va_fcntl
);
trampoline!(
    /// `fcntl64(int fd, int cmd, ...)`.
    fcntl64 => netpop_va_fcntl64
);
trampoline!(
    /// `ioctl(int fd, unsigned long request, ...)`.
    ioctl => netpop_va_ioctl
);
trampoline!(
    /// `execl(const char *path, const char *arg, ...)`.
    execl => netpop_va_execl
);
trampoline!(
    /// `execlp(const char *file, const char *arg, ...)`.
    execlp => netpop_va_execlp
);
trampoline!(
    /// `execle(const char *path, const char *arg, ..., char *const envp[])`.
    execle => netpop_va_execle
);

/// Called by the C `fcntl` with its optional argument.
#[unsafe(no_mangle)]
pub extern "C" fn netpop_rs_fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_impl(FcntlFlavor::Plain, fd, cmd, arg)
}

/// Called by the C `fcntl64` with its optional argument.
#[unsafe(no_mangle)]
pub extern "C" fn netpop_rs_fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_impl(FcntlFlavor::Large, fd, cmd, arg)
}

/// Called by the C `ioctl` with its optional argument.
#[unsafe(no_mangle)]
pub extern "C" fn netpop_rs_ioctl(fd: c_int, request: c_ulong, arg: c_ulong) -> c_int {
    ioctl_impl(fd, request, arg)
}

/// Called by the C `execl` with the collected argument vector.
///
/// # Safety
///
/// As `execv(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn netpop_rs_execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: same contract.
    unsafe { super::process::execv(path, argv) }
}

/// Called by the C `execlp`.
///
/// # Safety
///
/// As `execvp(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn netpop_rs_execvp(
    file: *const c_char,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: same contract.
    unsafe { super::process::execvp(file, argv) }
}

/// Called by the C `execle`.
///
/// # Safety
///
/// As `execve(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn netpop_rs_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: same contract.
    unsafe { super::process::execve(path, argv, envp) }
}
