//! Readiness waits over mixed descriptor sets: `poll`, `ppoll`, `select`, `pselect`,
//! `epoll_create*`, `epoll_ctl`, `epoll_wait`, `epoll_pwait`, `epoll_pwait2`, and the
//! fortified `__poll_chk`, `__ppoll_chk`.
//!
//! Sets without a netpop socket go straight to libc. Otherwise netpop sockets are checked
//! in shared memory, kernel descriptors with a zero-timeout kernel call, and if nothing is
//! ready the thread sleeps in the kernel on the kernel descriptors plus the app's wake
//! eventfd ([`netpop::sleep`]), then checks again. Signals interrupt the wait (`EINTR`),
//! the signal mask of `ppoll`/`pselect`/`epoll_pwait` is installed while sleeping, and
//! `select` updates its timeout with the time left, as Linux does.
//!
//! An epoll set keeps its kernel members in the real epoll descriptor and its netpop
//! members in an [`InterestList`](crate::events::InterestList) attached to that
//! descriptor in the shim's table.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use libc::{c_int, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};

use super::{chk_fail, guarded, int_result, socket_of};
use crate::errno::{Errno, errno};
use crate::events::{self, Pollable};
use crate::netpop::{self, Deadline, Link};
use crate::real;
use crate::sock::SockDesc;
use crate::{EpollSet, FDS, FdEntry};

fn deadline_of_timespec(ts: *const timespec) -> Result<Deadline, Errno> {
    if ts.is_null() {
        return Ok(Deadline::NEVER);
    }
    // SAFETY: non-null timeout pointers from the caller point to a timespec.
    let t = unsafe { ts.read_unaligned() };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(libc::EINVAL);
    }
    Ok(Deadline::after(Duration::new(t.tv_sec as u64, t.tv_nsec as u32)))
}

/// The link to sleep on for a set of netpop sockets (any of them that has one).
fn link_of<'a>(socks: impl IntoIterator<Item = &'a Arc<SockDesc>>) -> Option<Link> {
    socks.into_iter().find_map(|s| s.link())
}

// ---------------------------------------------------------------------------------------
// poll

/// `poll` over a set with at least one netpop socket (`socks[i]` is `Some` for those).
fn mixed_poll(
    fds: &mut [pollfd],
    socks: &[Option<Arc<SockDesc>>],
    deadline: Deadline,
    sigmask: *const sigset_t,
) -> Result<usize, Errno> {
    let mut kernel: Vec<pollfd> = fds
        .iter()
        .zip(socks)
        .map(|(p, s)| pollfd {
            fd: if s.is_some() { -1 } else { p.fd },
            events: p.events,
            revents: 0,
        })
        .collect();
    let has_kernel = kernel.iter().any(|p| p.fd >= 0);
    let mut link = link_of(socks.iter().flatten());
    loop {
        let ticket = link.as_ref().map(|l| l.client.ticket());
        let mut ready = 0;
        for (p, s) in fds.iter_mut().zip(socks) {
            if let Some(s) = s {
                p.revents = events::poll_revents(s.poll_state().mask, p.events);
                ready += usize::from(p.revents != 0);
            }
        }
        if ready == 0 && link.is_none() {
            // Checking a listener inherited across fork subscribes it in this process:
            // from now on there is a client whose wake-ups this wait must sleep on.
            if let Some(l) = link_of(socks.iter().flatten()) {
                link = Some(l);
                continue;
            }
        }
        let (ticket, link) = match (ticket, &link) {
            (Some(t), Some(l)) if ready == 0 && !deadline.expired() => (t, l),
            _ => {
                // Something is ready, time is up, or nothing netpop can change: collect the
                // kernel side without waiting (or with the whole timeout if no netpop
                // socket can become ready).
                let wait =
                    if ready == 0 && link.is_none() { deadline } else { Deadline::from_millis(0) };
                return Ok(ready + kernel_poll(fds, socks, &mut kernel, has_kernel, wait, sigmask)?);
            }
        };
        let mut sleepers = std::mem::take(&mut kernel);
        let woke = netpop::sleep(&link.client, ticket, &mut sleepers, deadline, sigmask);
        kernel = sleepers;
        if woke? > 0 {
            copy_kernel_revents(fds, socks, &kernel);
            let mut n = kernel.iter().filter(|p| p.revents != 0).count();
            for (p, s) in fds.iter_mut().zip(socks) {
                if let Some(s) = s {
                    p.revents = events::poll_revents(s.poll_state().mask, p.events);
                    n += usize::from(p.revents != 0);
                }
            }
            return Ok(n);
        }
    }
}

fn copy_kernel_revents(fds: &mut [pollfd], socks: &[Option<Arc<SockDesc>>], kernel: &[pollfd]) {
    for ((p, s), k) in fds.iter_mut().zip(socks).zip(kernel) {
        if s.is_none() {
            p.revents = k.revents;
        }
    }
}

fn kernel_poll(
    fds: &mut [pollfd],
    socks: &[Option<Arc<SockDesc>>],
    kernel: &mut [pollfd],
    has_kernel: bool,
    deadline: Deadline,
    sigmask: *const sigset_t,
) -> Result<usize, Errno> {
    if !has_kernel && deadline.expired() {
        // Nothing to ask the kernel, but entries that are not netpop sockets (negative fds
        // that programs such as lighttpd leave in their arrays) still get revents = 0, as
        // poll(2) writes them: a stale value would be counted as an event.
        copy_kernel_revents(fds, socks, kernel);
        return Ok(0);
    }
    let n = ppoll_until(kernel, deadline, sigmask)?;
    copy_kernel_revents(fds, socks, kernel);
    Ok(n)
}

/// libc's `ppoll` on `fds` until `deadline`.
fn ppoll_until(
    fds: &mut [pollfd],
    deadline: Deadline,
    sigmask: *const sigset_t,
) -> Result<usize, Errno> {
    let ts = deadline.remaining().map(|d| timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const timespec);
    // SAFETY: `fds` is a live array of pollfds; the timeout and mask are valid or null.
    let rc = unsafe { real::ppoll(fds.as_mut_ptr(), fds.len() as nfds_t, ts_ptr, sigmask) };
    if rc < 0 {
        return Err(errno());
    }
    Ok(usize::try_from(rc).unwrap_or(0))
}

/// `poll`/`ppoll` for any set: straight to libc if no member is a netpop socket.
///
/// # Safety
///
/// `fds` is valid for `n` pollfds.
unsafe fn poll_any(
    fds: *mut pollfd,
    n: nfds_t,
    deadline: Deadline,
    sigmask: *const sigset_t,
) -> Option<c_int> {
    if fds.is_null() || n == 0 {
        return None;
    }
    // SAFETY: the caller's array holds `n` pollfds.
    let set = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    if !set.iter().any(|p| FDS.is_tracked(p.fd)) {
        return None;
    }
    let socks: Vec<Option<Arc<SockDesc>>> = set.iter().map(|p| socket_of(p.fd)).collect();
    if socks.iter().all(Option::is_none) {
        return None;
    }
    Some(guarded(|| int_result(mixed_poll(set, &socks, deadline, sigmask).map(|k| k as c_int))))
}

/// `poll(2)`.
///
/// # Safety
///
/// As `poll(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: the caller's array holds `n` pollfds.
    match unsafe { poll_any(fds, n, Deadline::from_millis(i64::from(timeout)), std::ptr::null()) } {
        Some(r) => r,
        // SAFETY: forwarded unchanged.
        None => unsafe { real::poll(fds, n, timeout) },
    }
}

/// glibc's fortified `poll`.
///
/// # Safety
///
/// As `poll(2)`; `fdslen` is the array's size in bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if fdslen / size_of::<pollfd>() < n as usize {
        chk_fail();
    }
    // SAFETY: same contract.
    unsafe { poll(fds, n, timeout) }
}

/// `ppoll(2)`.
///
/// # Safety
///
/// As `ppoll(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let Ok(deadline) = deadline_of_timespec(timeout) else {
        // SAFETY: forwarded unchanged (libc reports the bad timeout).
        return unsafe { real::ppoll(fds, n, timeout, mask) };
    };
    // SAFETY: the caller's array holds `n` pollfds.
    match unsafe { poll_any(fds, n, deadline, mask) } {
        Some(r) => r,
        // SAFETY: forwarded unchanged.
        None => unsafe { real::ppoll(fds, n, timeout, mask) },
    }
}

/// glibc's fortified `ppoll`.
///
/// # Safety
///
/// As `ppoll(2)`; `fdslen` is the array's size in bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    if fdslen / size_of::<pollfd>() < n as usize {
        chk_fail();
    }
    // SAFETY: same contract.
    unsafe { ppoll(fds, n, timeout, mask) }
}

// ---------------------------------------------------------------------------------------
// select

const WORD_BITS: usize = libc::c_ulong::BITS as usize;

/// # Safety
///
/// `set` is null or holds at least `fd + 1` bits.
unsafe fn fd_isset(set: *const fd_set, fd: usize) -> bool {
    if set.is_null() {
        return false;
    }
    // SAFETY: the set holds bit `fd` (caller); fd_set is an array of c_ulong words.
    let word = unsafe { set.cast::<libc::c_ulong>().add(fd / WORD_BITS).read_unaligned() };
    word & (1 << (fd % WORD_BITS)) != 0
}

/// Clears the first `nfds` bits of `set` (if any).
///
/// # Safety
///
/// `set` is null or holds at least `nfds` bits.
unsafe fn fd_zero(set: *mut fd_set, nfds: usize) {
    if set.is_null() {
        return;
    }
    for w in 0..nfds.div_ceil(WORD_BITS) {
        // SAFETY: word `w` covers bits below `nfds` rounded up to a whole word, which a
        // caller-provided set of `nfds` bits always includes (sets are whole words).
        unsafe {
            let p = set.cast::<libc::c_ulong>().add(w);
            let keep_from = (nfds - w * WORD_BITS).min(WORD_BITS);
            let mask = if keep_from == WORD_BITS { 0 } else { !0 << keep_from };
            p.write_unaligned(p.read_unaligned() & mask);
        }
    }
}

/// # Safety
///
/// `set` holds at least `fd + 1` bits.
unsafe fn fd_set_bit(set: *mut fd_set, fd: usize) {
    // SAFETY: as in `fd_isset`.
    unsafe {
        let p = set.cast::<libc::c_ulong>().add(fd / WORD_BITS);
        p.write_unaligned(p.read_unaligned() | (1 << (fd % WORD_BITS)));
    }
}

/// `select` over a set with netpop members, through [`mixed_poll`].
///
/// # Safety
///
/// The three sets are null or hold `nfds` bits.
unsafe fn select_any(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    deadline: Deadline,
    sigmask: *const sigset_t,
) -> Option<Result<c_int, Errno>> {
    let n = usize::try_from(nfds).ok()?;
    let mut polls = Vec::new();
    let mut any_netpop = false;
    for fd in 0..n {
        // SAFETY: the sets hold `nfds` bits.
        let (ir, iw, ie) = unsafe { (fd_isset(r, fd), fd_isset(w, fd), fd_isset(e, fd)) };
        if ir || iw || ie {
            let fd = fd as c_int;
            any_netpop |= FDS.is_tracked(fd) && socket_of(fd).is_some();
            polls.push(pollfd { fd, events: events::select_events(ir, iw, ie), revents: 0 });
        }
    }
    if !any_netpop {
        return None;
    }
    let socks: Vec<Option<Arc<SockDesc>>> = polls.iter().map(|p| socket_of(p.fd)).collect();
    Some((|| {
        mixed_poll(&mut polls, &socks, deadline, sigmask)?;
        if polls.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
            return Err(libc::EBADF);
        }
        // SAFETY: the sets hold `nfds` bits.
        unsafe {
            fd_zero(r, n);
            fd_zero(w, n);
            fd_zero(e, n);
        }
        let mut count = 0;
        for p in &polls {
            let (rr, ww, ee) = events::select_bits(p.revents);
            let fd = p.fd as usize;
            // Report only what was asked for.
            let asked = events::select_bits(p.events);
            for (hit, want, set) in [(rr, asked.0, r), (ww, asked.1, w), (ee, asked.2, e)] {
                if hit && want && !set.is_null() {
                    // SAFETY: `fd < nfds` and the set holds `nfds` bits.
                    unsafe { fd_set_bit(set, fd) };
                    count += 1;
                }
            }
        }
        Ok(count)
    })())
}

/// `select(2)`.
///
/// # Safety
///
/// As `select(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    let deadline = if timeout.is_null() {
        Ok(Deadline::NEVER)
    } else {
        // SAFETY: a non-null timeout points to the caller's timeval.
        let tv = unsafe { timeout.read_unaligned() };
        if tv.tv_sec < 0 || !(0..1_000_000).contains(&tv.tv_usec) {
            Err(libc::EINVAL)
        } else {
            Ok(Deadline::after(
                Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64),
            ))
        }
    };
    let Ok(deadline) = deadline else {
        // SAFETY: forwarded unchanged (libc reports the bad timeout).
        return unsafe { real::select(nfds, r, w, e, timeout) };
    };
    // SAFETY: the sets hold `nfds` bits.
    match unsafe { select_any(nfds, r, w, e, deadline, std::ptr::null()) } {
        None => {
            // SAFETY: forwarded unchanged.
            unsafe { real::select(nfds, r, w, e, timeout) }
        }
        Some(result) => guarded(|| {
            if !timeout.is_null() {
                let left = deadline.remaining().unwrap_or_default();
                // Linux writes back the time left.
                // SAFETY: the caller's timeval is writable.
                unsafe {
                    timeout.write_unaligned(timeval {
                        tv_sec: left.as_secs() as libc::time_t,
                        tv_usec: libc::suseconds_t::from(left.subsec_micros()),
                    })
                };
            }
            int_result(result)
        }),
    }
}

/// `pselect(2)`.
///
/// # Safety
///
/// As `pselect(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let Ok(deadline) = deadline_of_timespec(timeout) else {
        // SAFETY: forwarded unchanged (libc reports the bad timeout).
        return unsafe { real::pselect(nfds, r, w, e, timeout, mask) };
    };
    // SAFETY: the sets hold `nfds` bits.
    match unsafe { select_any(nfds, r, w, e, deadline, mask) } {
        // SAFETY: forwarded unchanged.
        None => unsafe { real::pselect(nfds, r, w, e, timeout, mask) },
        Some(result) => int_result(result),
    }
}

// ---------------------------------------------------------------------------------------
// epoll

/// Forgets whatever a previous descriptor with this number left in the table.
fn fresh_epoll(fd: c_int) -> c_int {
    if fd >= 0 && FDS.is_tracked(fd) {
        super::socket::drop_keeping_errno(FDS.remove(fd));
    }
    fd
}

/// `epoll_create(2)`.
///
/// # Safety
///
/// As `epoll_create(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: forwarded unchanged.
    fresh_epoll(unsafe { real::epoll_create(size) })
}

/// `epoll_create1(2)`.
///
/// # Safety
///
/// As `epoll_create1(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: forwarded unchanged.
    fresh_epoll(unsafe { real::epoll_create1(flags) })
}

fn epoll_set_of(epfd: c_int) -> Option<Arc<EpollSet>> {
    if !FDS.is_tracked(epfd) {
        return None;
    }
    match FDS.get(epfd) {
        Some(FdEntry::Epoll(set)) => Some(set),
        _ => None,
    }
}

/// `epoll_ctl(2)`: netpop members are kept by the shim, kernel ones by the kernel.
///
/// # Safety
///
/// As `epoll_ctl(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut epoll_event,
) -> c_int {
    let Some(sock) = socket_of(fd) else {
        // SAFETY: forwarded unchanged.
        return unsafe { real::epoll_ctl(epfd, op, fd, event) };
    };
    guarded(|| {
        int_result((|| {
            if epfd == fd || socket_of(epfd).is_some() {
                return Err(libc::EINVAL);
            }
            // SAFETY: F_GETFD takes no pointer; this only checks that `epfd` is open.
            if unsafe { real::fcntl(epfd, libc::F_GETFD, 0) } < 0 {
                return Err(libc::EBADF);
            }
            let set = match epoll_set_of(epfd) {
                Some(s) => s,
                None => {
                    let s = Arc::new(EpollSet::default());
                    drop(FDS.insert(epfd, FdEntry::Epoll(s.clone())));
                    s
                }
            };
            let ev = if event.is_null() {
                None
            } else {
                // SAFETY: a non-null event points to the caller's epoll_event (packed on
                // x86-64, hence unaligned).
                let e = unsafe { event.read_unaligned() };
                Some((e.events, e.u64))
            };
            let mut members = set.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            members.ctl(op, fd, &sock, ev)?;
            Ok(0)
        })())
    })
}

/// epoll_wait over a set with netpop members.
///
/// # Safety
///
/// `events` is valid for `max` entries.
unsafe fn epoll_wait_any(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    deadline: Deadline,
    sigmask: *const sigset_t,
) -> Option<c_int> {
    let set = epoll_set_of(epfd)?;
    let live_link = || {
        let m = set.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.find_map_target(SockDesc::link)
    };
    {
        let mut m = set.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !m.has_live() {
            return None;
        }
    }
    let mut link = live_link();
    if max <= 0 {
        return Some(int_result(Err(libc::EINVAL)));
    }
    if events.is_null() {
        return Some(int_result(Err(libc::EFAULT)));
    }
    Some(guarded(|| {
        int_result((|| -> Result<c_int, Errno> {
            let max_n = max as usize;
            let mut out: Vec<(u32, u64)> = Vec::with_capacity(max_n.min(1024));
            let mut kernel_buf: Vec<epoll_event> =
                vec![epoll_event { events: 0, u64: 0 }; max_n.min(4096)];
            loop {
                let ticket = link.as_ref().map(|l| l.client.ticket());
                out.clear();
                let kernel_first = set.kernel_first.fetch_xor(true, Ordering::Relaxed);
                if kernel_first {
                    collect_kernel(epfd, &mut kernel_buf, max_n, &mut out)?;
                }
                set.members
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .collect(max_n, &mut out);
                if !kernel_first {
                    collect_kernel(epfd, &mut kernel_buf, max_n, &mut out)?;
                }
                if !out.is_empty() || deadline.expired() {
                    break;
                }
                if link.is_none() {
                    // As in `mixed_poll`: an inherited listener subscribes on its first
                    // check in a forked child, and its client's wake-ups count from then.
                    if let Some(l) = live_link() {
                        link = Some(l);
                        continue;
                    }
                }
                let (Some(ticket), Some(link)) = (ticket, &link) else {
                    // No netpop member can change by itself: wait on the kernel alone.
                    let mut p = [pollfd { fd: epfd, events: libc::POLLIN, revents: 0 }];
                    ppoll_until(&mut p, deadline, sigmask)?;
                    continue;
                };
                let mut fds = vec![pollfd { fd: epfd, events: libc::POLLIN, revents: 0 }];
                netpop::sleep(&link.client, ticket, &mut fds, deadline, sigmask)?;
            }
            for (i, (ev, data)) in out.iter().enumerate() {
                // SAFETY: `i < max` and `events` holds `max` entries.
                unsafe { events.add(i).write_unaligned(epoll_event { events: *ev, u64: *data }) };
            }
            Ok(out.len() as c_int)
        })())
    }))
}

/// Appends the kernel members' ready events without waiting.
fn collect_kernel(
    epfd: c_int,
    buf: &mut [epoll_event],
    max: usize,
    out: &mut Vec<(u32, u64)>,
) -> Result<(), Errno> {
    let room = max.saturating_sub(out.len()).min(buf.len());
    if room == 0 {
        return Ok(());
    }
    // SAFETY: `buf` holds at least `room` entries.
    let n = unsafe { real::epoll_wait(epfd, buf.as_mut_ptr(), room as c_int, 0) };
    if n < 0 {
        let e = errno();
        return if e == libc::EINTR { Ok(()) } else { Err(e) };
    }
    for ev in buf.iter().take(n as usize) {
        let e = *ev;
        out.push((e.events, e.u64));
    }
    Ok(())
}

/// `epoll_wait(2)`.
///
/// # Safety
///
/// As `epoll_wait(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: the caller's array holds `max` entries.
    match unsafe {
        epoll_wait_any(
            epfd,
            events,
            max,
            Deadline::from_millis(i64::from(timeout)),
            std::ptr::null(),
        )
    } {
        Some(r) => r,
        // SAFETY: forwarded unchanged.
        None => unsafe { real::epoll_wait(epfd, events, max, timeout) },
    }
}

/// `epoll_pwait(2)`.
///
/// # Safety
///
/// As `epoll_pwait(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's array holds `max` entries.
    match unsafe {
        epoll_wait_any(epfd, events, max, Deadline::from_millis(i64::from(timeout)), mask)
    } {
        Some(r) => r,
        // SAFETY: forwarded unchanged.
        None => unsafe { real::epoll_pwait(epfd, events, max, timeout, mask) },
    }
}

/// `epoll_pwait2(2)`.
///
/// # Safety
///
/// As `epoll_pwait2(2)`.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let Ok(deadline) = deadline_of_timespec(timeout) else {
        // SAFETY: forwarded unchanged (libc reports the bad timeout).
        return unsafe { real::epoll_pwait2(epfd, events, max, timeout, mask) };
    };
    // SAFETY: the caller's array holds `max` entries.
    match unsafe { epoll_wait_any(epfd, events, max, deadline, mask) } {
        Some(r) => r,
        // SAFETY: forwarded unchanged.
        None => unsafe { real::epoll_pwait2(epfd, events, max, timeout, mask) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_set_bit_helpers_match_libc_macros() {
        // SAFETY: an all-zero fd_set is the empty set.
        let mut set: fd_set = unsafe { std::mem::zeroed() };
        // SAFETY: every fd used is below FD_SETSIZE, so within the set.
        unsafe {
            libc::FD_SET(3, &mut set);
            libc::FD_SET(70, &mut set);
            assert!(fd_isset(&set, 3) && fd_isset(&set, 70) && !fd_isset(&set, 4));
            fd_set_bit(&mut set, 100);
            assert!(libc::FD_ISSET(100, &set));
            fd_zero(&mut set, 71);
            assert!(!fd_isset(&set, 3) && !fd_isset(&set, 70));
            assert!(fd_isset(&set, 100), "bits at or above nfds are untouched");
        }
    }

    #[test]
    fn bad_timespecs_are_refused() {
        let ts = timespec { tv_sec: 0, tv_nsec: 2_000_000_000 };
        assert_eq!(deadline_of_timespec(&ts).err(), Some(libc::EINVAL));
        assert!(deadline_of_timespec(std::ptr::null()).unwrap().remaining().is_none());
    }
}
