//! Socket options of netpop sockets: what `setsockopt` stores, what `getsockopt` reads back
//! (in Linux's formats: ints normalised to 0/1 for flags, `SO_RCVBUF`/`SO_SNDBUF` doubled,
//! `struct linger`, `struct timeval`), and which ones the owning instance must apply
//! ([`SockOption`]). Options that only matter to the kernel stack (`IP_TOS`,
//! `SO_REUSEADDR`...) are stored and read back harmlessly; options the shim does not know
//! fail with `ENOPROTOOPT`, as Linux does for an unknown name.
//!
//! Accepted connections inherit the listener's options, as on Linux.
//!
//! `SO_LINGER {on, 0}` makes the last close of the socket a reset (RST), as on Linux; a
//! nonzero linger time is stored but `close` does not block for it.

use std::time::Duration;

use flowgroups::channel::proto::SockOption;

use crate::errno::Errno;

/// Stored options of one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SockOpts {
    reuse_addr: bool,
    reuse_port: bool,
    keepalive: bool,
    oob_inline: bool,
    no_delay: bool,
    cork: bool,
    quick_ack: bool,
    /// Stored as Linux stores them: twice the value set.
    rcvbuf: i32,
    sndbuf: i32,
    defer_accept: i32,
    keep_idle: i32,
    keep_intvl: i32,
    keep_cnt: i32,
    tos: i32,
    rcv_lowat: i32,
    linger: (i32, i32),
    /// `None`: block without limit.
    pub(crate) rcv_timeout: Option<Duration>,
    pub(crate) snd_timeout: Option<Duration>,
}

/// Linux's smallest buffer sizes (`SOCK_MIN_RCVBUF`/`SOCK_MIN_SNDBUF` rounded as it does).
const MIN_RCVBUF: i32 = 2304;
const MIN_SNDBUF: i32 = 4608;

impl SockOpts {
    /// Defaults of a new socket whose channel buffers hold `buffer` bytes each way.
    pub(crate) fn new(buffer: u32) -> SockOpts {
        let buf = i32::try_from(buffer).unwrap_or(i32::MAX);
        SockOpts {
            reuse_addr: false,
            reuse_port: false,
            keepalive: false,
            oob_inline: false,
            no_delay: false,
            cork: false,
            quick_ack: true,
            rcvbuf: buf,
            sndbuf: buf,
            defer_accept: 0,
            keep_idle: 7200,
            keep_intvl: 75,
            keep_cnt: 9,
            tos: 0,
            rcv_lowat: 1,
            linger: (0, 0),
            rcv_timeout: None,
            snd_timeout: None,
        }
    }

    /// Stores an option; returns what the owning instance must be told, if anything.
    pub(crate) fn set(
        &mut self,
        level: i32,
        name: i32,
        value: &[u8],
    ) -> Result<Option<SockOption>, Errno> {
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let l = read_linger(value)?;
                self.linger = (i32::from(l.l_onoff != 0), l.l_linger.max(0));
                Ok(None)
            }
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => {
                self.rcv_timeout = read_timeout(value)?;
                Ok(None)
            }
            (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => {
                self.snd_timeout = read_timeout(value)?;
                Ok(None)
            }
            _ => {
                let v = read_int(value)?;
                self.set_int(level, name, v)
            }
        }
    }

    fn set_int(&mut self, level: i32, name: i32, v: i32) -> Result<Option<SockOption>, Errno> {
        let on = v != 0;
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => self.reuse_addr = on,
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => self.reuse_port = on,
            (libc::SOL_SOCKET, libc::SO_OOBINLINE) => self.oob_inline = on,
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
                self.keepalive = on;
                return Ok(Some(SockOption::KeepAlive(on)));
            }
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
                self.rcvbuf = v.max(0).saturating_mul(2).max(MIN_RCVBUF);
            }
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
                self.sndbuf = v.max(0).saturating_mul(2).max(MIN_SNDBUF);
            }
            (libc::SOL_SOCKET, libc::SO_RCVLOWAT) => self.rcv_lowat = v.max(1),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
                self.no_delay = on;
                return Ok(Some(SockOption::NoDelay(on)));
            }
            (libc::IPPROTO_TCP, libc::TCP_CORK) => {
                self.cork = on;
                return Ok(Some(SockOption::Cork(on)));
            }
            (libc::IPPROTO_TCP, libc::TCP_QUICKACK) => self.quick_ack = on,
            (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT) => self.defer_accept = v.max(0),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => self.keep_idle = positive(v, 32767)?,
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => self.keep_intvl = positive(v, 32767)?,
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => self.keep_cnt = positive(v, 127)?,
            (libc::IPPROTO_IP, libc::IP_TOS) => self.tos = v & 0xff,
            _ => return Err(libc::ENOPROTOOPT),
        }
        Ok(None)
    }

    /// Reads an option back in Linux's format (the caller copies at most the caller's
    /// buffer length of it).
    pub(crate) fn get(&self, level: i32, name: i32) -> Result<Vec<u8>, Errno> {
        let int = |v: i32| Ok(v.to_ne_bytes().to_vec());
        let flag = |b: bool| int(i32::from(b));
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_REUSEADDR) => flag(self.reuse_addr),
            (libc::SOL_SOCKET, libc::SO_REUSEPORT) => flag(self.reuse_port),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => flag(self.keepalive),
            (libc::SOL_SOCKET, libc::SO_OOBINLINE) => flag(self.oob_inline),
            (libc::SOL_SOCKET, libc::SO_RCVBUF) => int(self.rcvbuf),
            (libc::SOL_SOCKET, libc::SO_SNDBUF) => int(self.sndbuf),
            (libc::SOL_SOCKET, libc::SO_RCVLOWAT) => int(self.rcv_lowat),
            (libc::SOL_SOCKET, libc::SO_LINGER) => {
                let mut out = self.linger.0.to_ne_bytes().to_vec();
                out.extend_from_slice(&self.linger.1.to_ne_bytes());
                Ok(out)
            }
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => Ok(timeval_bytes(self.rcv_timeout)),
            (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => Ok(timeval_bytes(self.snd_timeout)),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY) => flag(self.no_delay),
            (libc::IPPROTO_TCP, libc::TCP_CORK) => flag(self.cork),
            (libc::IPPROTO_TCP, libc::TCP_QUICKACK) => flag(self.quick_ack),
            (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT) => int(self.defer_accept),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => int(self.keep_idle),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => int(self.keep_intvl),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => int(self.keep_cnt),
            (libc::IPPROTO_IP, libc::IP_TOS) => int(self.tos),
            _ => Err(libc::ENOPROTOOPT),
        }
    }

    /// `SO_LINGER {on, 0}`: closing resets the connection instead of a FIN.
    pub(crate) fn resets_on_close(&self) -> bool {
        self.linger == (1, 0)
    }

    /// The options a new connection of this socket (or accepted from it) must carry on its
    /// instance; defaults are left out.
    pub(crate) fn connection_options(&self) -> Vec<SockOption> {
        let mut v = Vec::new();
        if self.no_delay {
            v.push(SockOption::NoDelay(true));
        }
        if self.cork {
            v.push(SockOption::Cork(true));
        }
        if self.keepalive {
            v.push(SockOption::KeepAlive(true));
        }
        v
    }
}

fn positive(v: i32, max: i32) -> Result<i32, Errno> {
    if (1..=max).contains(&v) { Ok(v) } else { Err(libc::EINVAL) }
}

fn read_int(value: &[u8]) -> Result<i32, Errno> {
    // Linux accepts a shorter value only for a few SOL_SOCKET options; an int is what every
    // program passes, and anything shorter is EINVAL.
    let bytes: [u8; 4] = value.get(..4).and_then(|b| b.try_into().ok()).ok_or(libc::EINVAL)?;
    Ok(i32::from_ne_bytes(bytes))
}

fn read_linger(value: &[u8]) -> Result<libc::linger, Errno> {
    let on = read_int(value)?;
    let secs = read_int(value.get(4..).ok_or(libc::EINVAL)?)?;
    Ok(libc::linger { l_onoff: on, l_linger: secs })
}

fn read_timeout(value: &[u8]) -> Result<Option<Duration>, Errno> {
    const TV: usize = size_of::<libc::timeval>();
    let raw: [u8; TV] = value.get(..TV).and_then(|b| b.try_into().ok()).ok_or(libc::EINVAL)?;
    let sec = i64::from_ne_bytes(raw[..8].try_into().map_err(|_| libc::EINVAL)?);
    let usec = i64::from_ne_bytes(raw[8..].try_into().map_err(|_| libc::EINVAL)?);
    if !(0..1_000_000).contains(&usec) {
        return Err(libc::EDOM);
    }
    // Linux: a negative or zero timeout means "no timeout".
    if sec < 0 || (sec == 0 && usec == 0) {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs(sec as u64) + Duration::from_micros(usec as u64)))
}

fn timeval_bytes(t: Option<Duration>) -> Vec<u8> {
    let (sec, usec) =
        t.map_or((0i64, 0i64), |d| (d.as_secs() as i64, i64::from(d.subsec_micros())));
    let mut out = sec.to_ne_bytes().to_vec();
    out.extend_from_slice(&usec.to_ne_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    #[test]
    fn flags_read_back_as_zero_or_one() {
        let mut o = SockOpts::new(65536);
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_REUSEADDR), Ok(int(0)));
        o.set(libc::SOL_SOCKET, libc::SO_REUSEADDR, &int(5)).unwrap();
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_REUSEADDR), Ok(int(1)));
    }

    #[test]
    fn nodelay_cork_keepalive_go_to_the_instance() {
        let mut o = SockOpts::new(65536);
        assert_eq!(
            o.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &int(1)),
            Ok(Some(SockOption::NoDelay(true)))
        );
        assert_eq!(
            o.set(libc::IPPROTO_TCP, libc::TCP_CORK, &int(0)),
            Ok(Some(SockOption::Cork(false)))
        );
        assert_eq!(
            o.set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, &int(1)),
            Ok(Some(SockOption::KeepAlive(true)))
        );
        assert_eq!(o.set(libc::IP_TOS, 0, &int(0)).err(), Some(libc::ENOPROTOOPT));
        assert_eq!(o.set(libc::IPPROTO_IP, libc::IP_TOS, &int(0x10)), Ok(None));
        assert_eq!(
            o.connection_options(),
            vec![SockOption::NoDelay(true), SockOption::KeepAlive(true)]
        );
    }

    #[test]
    fn buffers_are_doubled_like_linux() {
        let mut o = SockOpts::new(65536);
        o.set(libc::SOL_SOCKET, libc::SO_RCVBUF, &int(10000)).unwrap();
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_RCVBUF), Ok(int(20000)));
        o.set(libc::SOL_SOCKET, libc::SO_SNDBUF, &int(1)).unwrap();
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_SNDBUF), Ok(int(MIN_SNDBUF)));
    }

    #[test]
    fn short_values_and_unknown_names_fail() {
        let mut o = SockOpts::new(65536);
        assert_eq!(o.set(libc::IPPROTO_TCP, libc::TCP_NODELAY, &[1]), Err(libc::EINVAL));
        assert_eq!(o.set(libc::SOL_SOCKET, libc::SO_LINGER, &int(1)), Err(libc::EINVAL));
        assert_eq!(o.set(libc::IPPROTO_TCP, 9999, &int(1)), Err(libc::ENOPROTOOPT));
        assert_eq!(o.get(libc::IPPROTO_TCP, 9999), Err(libc::ENOPROTOOPT));
        assert_eq!(o.set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, &int(0)), Err(libc::EINVAL));
    }

    #[test]
    fn linger_round_trips_with_onoff_normalised() {
        let mut o = SockOpts::new(65536);
        let mut l = int(7);
        l.extend_from_slice(&int(3));
        o.set(libc::SOL_SOCKET, libc::SO_LINGER, &l).unwrap();
        let mut expect = int(1);
        expect.extend_from_slice(&int(3));
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_LINGER), Ok(expect));
        assert!(!o.resets_on_close(), "a nonzero linger time is an orderly close");
        let mut zero = int(1);
        zero.extend_from_slice(&int(0));
        o.set(libc::SOL_SOCKET, libc::SO_LINGER, &zero).unwrap();
        assert!(o.resets_on_close());
        let mut off = int(0);
        off.extend_from_slice(&int(0));
        o.set(libc::SOL_SOCKET, libc::SO_LINGER, &off).unwrap();
        assert!(!o.resets_on_close());
    }

    #[test]
    fn timeouts_round_trip_and_zero_means_none() {
        let mut o = SockOpts::new(65536);
        let tv = |s: i64, us: i64| {
            let mut v = s.to_ne_bytes().to_vec();
            v.extend_from_slice(&us.to_ne_bytes());
            v
        };
        o.set(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv(1, 500_000)).unwrap();
        assert_eq!(o.rcv_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(o.get(libc::SOL_SOCKET, libc::SO_RCVTIMEO), Ok(tv(1, 500_000)));
        o.set(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv(0, 0)).unwrap();
        assert_eq!(o.rcv_timeout, None);
        assert_eq!(o.set(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv(0, 2_000_000)), Err(libc::EDOM));
    }
}
