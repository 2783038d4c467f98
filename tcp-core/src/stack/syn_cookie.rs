//! SYN cookies (RFC 4987 §3.6), laid out as Linux lays them out (net/ipv4/syncookies.c),
//! so a listener whose SYN queue is full can answer a SYN without keeping state and
//! rebuild the connection from the client's ACK.
//!
//! The cookie is our ISN:
//!
//! ```text
//! cookie = H1(4-tuple) + client_isn + (period << 24) + (H2(4-tuple, period, mss_index) << 2 | mss_index) mod 2^24
//! ```
//!
//! - `period` counts 64-second periods, mod 256. A cookie is accepted while the current
//!   period is the one it was made in or the next, so it lives between 64 and 128 seconds
//!   (Linux: one-minute periods, `MAX_SYNCOOKIE_AGE` 2). That comfortably covers a
//!   SYN-ACK's round trip and the client's first retransmissions of its ACK.
//! - `mss_index` (2 bits) picks the MSS from [`MSS_TABLE`].
//! - H1 and H2 are SipHash-2-4 under the embedder's secret, with different domain tags.
//!   Unlike Linux, which adds the MSS index to its hash, H2 covers the index, so no bit of
//!   the cookie can be changed undetected. A forged or corrupted cookie survives `check`
//!   with probability about 2^-29 (22 MAC bits, 2 of 256 periods accepted).
//!
//! Window scale and SACK-permitted do not fit in the cookie. When the client sent
//! timestamps (RFC 7323 §3), they travel in the low 6 bits of our SYN-ACK TSval, and come
//! back in the ACK's TSecr:
//!
//! ```text
//! bit:   31 .. 6 | 5        | 4    | 3 2 1 0
//!        clock   | reserved | SACK | window scale, 0xf = none
//! ```
//!
//! Without timestamps the connection gets neither: the SYN-ACK must then offer no window
//! scale and no SACK (Linux clears both), since the ACK cannot bring them back.

use core::fmt;
use core::net::SocketAddrV4;

use super::siphash::SipHasher24;
use crate::tcp::seq::SeqNumber;
use crate::time::Instant;

/// MSS values a cookie can carry (Linux's IPv4 table): the minimum IPv4 MSS, typical
/// tunnelled / PPPoE-with-options paths, and Ethernet. Chosen from the peer's MSS by
/// rounding down.
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];

const PERIOD_NANOS: u64 = 64 * 1_000_000_000;
/// Periods a cookie stays valid: the one it was made in and the next.
const MAX_AGE_PERIODS: u32 = 2;
const PERIOD_SHIFT: u32 = 24;
const LOW_MASK: u32 = (1 << PERIOD_SHIFT) - 1;
const MSS_INDEX_BITS: u32 = 2;
const MSS_INDEX_MASK: u32 = (1 << MSS_INDEX_BITS) - 1;

/// Low TSval bits that carry options, as Linux's `TSBITS`.
const TS_OPTION_BITS: u32 = 6;
const TS_OPTION_MASK: u32 = (1 << TS_OPTION_BITS) - 1;
const TS_WSCALE_MASK: u32 = 0xf;
const TS_SACK: u32 = 1 << 4;
/// RFC 7323 §2.3: the largest shift a peer may use.
const MAX_WINDOW_SCALE: u8 = 14;

const TAG_TUPLE: u8 = 1;
const TAG_PERIOD: u8 = 2;

/// The connection parameters a SYN cookie preserves from the client's SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieOptions {
    /// The MSS the client advertised. [`SynCookies::check`] returns an entry of
    /// [`MSS_TABLE`]: the largest one not above what the client advertised (536 when it
    /// advertised less, the IPv4 minimum every host accepts, RFC 9293 §3.7.1).
    pub mss: u16,
    /// The client's window-scale shift (RFC 7323 §2), `None` if it sent no option.
    pub window_scale: Option<u8>,
    /// The client sent SACK-permitted (RFC 2018 §2).
    pub sack: bool,
    /// The client sent timestamps and we use them (RFC 7323 §3).
    pub timestamps: bool,
}

/// Issues and validates SYN cookies under a secret the embedder supplies (from a
/// cryptographic random source; every instance that may see the ACK of a cookie must share
/// it).
#[derive(Clone)]
pub struct SynCookies {
    secret: [u8; 16],
}

impl SynCookies {
    /// A cookie jar keyed with `secret`.
    pub fn new(secret: [u8; 16]) -> Self {
        SynCookies { secret }
    }

    /// The cookie to use as our ISN in the SYN-ACK answering a SYN from `remote` to
    /// `local` with sequence number `client_isn`, and, when both sides use timestamps
    /// (`opts.timestamps` and the SYN carried `client_tsval`), the TSval to send.
    ///
    /// The TSval is on a millisecond clock (`now` in ms, mod 2^32) rounded down so it is
    /// never ahead of that clock, with the options in its low bits. If the stack adds a
    /// per-pair offset to its timestamps (see `IsnGenerator::ts_offset`), it adds it to
    /// this value too and subtracts it from the ACK's TSecr before [`SynCookies::check`],
    /// as Linux does. `client_tsval` itself is not encoded: the SYN-ACK echoes it.
    pub fn generate(
        &self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        client_isn: SeqNumber,
        opts: &CookieOptions,
        client_tsval: Option<u32>,
    ) -> (SeqNumber, Option<u32>) {
        let period = period_at(now);
        let mss_index = MSS_TABLE.iter().rposition(|&mss| mss <= opts.mss).unwrap_or(0) as u32;
        let low = self.low_bits(local, remote, period, mss_index);
        let cookie = self
            .tuple_hash(local, remote)
            .wrapping_add(client_isn.0)
            .wrapping_add(period << PERIOD_SHIFT)
            .wrapping_add(low);

        let tsval = (opts.timestamps && client_tsval.is_some()).then(|| {
            let mut options = match opts.window_scale {
                Some(shift) => u32::from(shift.min(MAX_WINDOW_SCALE)),
                None => TS_WSCALE_MASK,
            };
            if opts.sack {
                options |= TS_SACK;
            }
            let clock = now.as_millis() as u32;
            let stamped = (clock & !TS_OPTION_MASK) | options;
            // Keep the clock monotonic for the connection that follows: never hand out a
            // TSval later than the clock it will continue from.
            if stamped > clock { stamped.wrapping_sub(1 << TS_OPTION_BITS) } else { stamped }
        });
        (SeqNumber(cookie), tsval)
    }

    /// Validates the ACK completing a cookie handshake and recovers the options.
    ///
    /// `client_isn` is the ACK's sequence number minus one, `cookie` its acknowledgment
    /// number minus one, `tsecr` its TSecr (after removing any per-pair offset), `None`
    /// if it carried no timestamps. Returns `None` for a forged, corrupted, expired or
    /// misdirected cookie.
    pub fn check(
        &self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        client_isn: SeqNumber,
        cookie: SeqNumber,
        tsecr: Option<u32>,
    ) -> Option<CookieOptions> {
        let unmasked =
            cookie.0.wrapping_sub(self.tuple_hash(local, remote)).wrapping_sub(client_isn.0);
        let period = unmasked >> PERIOD_SHIFT;
        let age = period_at(now).wrapping_sub(period) & (u32::MAX >> PERIOD_SHIFT);
        if age >= MAX_AGE_PERIODS {
            return None;
        }
        let mss_index = unmasked & MSS_INDEX_MASK;
        if unmasked & LOW_MASK != self.low_bits(local, remote, period, mss_index) {
            return None;
        }
        let mss = *MSS_TABLE.get(usize::try_from(mss_index).ok()?)?;

        let Some(tsecr) = tsecr else {
            return Some(CookieOptions { mss, window_scale: None, sack: false, timestamps: false });
        };
        // 0..=14 are the shifts we encode; the one remaining value means "none".
        let window_scale = match tsecr & TS_WSCALE_MASK {
            TS_WSCALE_MASK => None,
            shift => Some(shift as u8),
        };
        Some(CookieOptions { mss, window_scale, sack: tsecr & TS_SACK != 0, timestamps: true })
    }

    fn tuple_hash(&self, local: SocketAddrV4, remote: SocketAddrV4) -> u32 {
        let mut hasher = self.tuple_hasher(TAG_TUPLE, local, remote);
        hasher.write_u32(0);
        hasher.finish() as u32
    }

    /// The cookie's low 24 bits: a MAC of the tuple, period and MSS index, then the index.
    fn low_bits(
        &self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        period: u32,
        mss_index: u32,
    ) -> u32 {
        let mut hasher = self.tuple_hasher(TAG_PERIOD, local, remote);
        hasher.write_u32(period);
        hasher.write_u32(mss_index);
        let mac = hasher.finish() as u32;
        ((mac << MSS_INDEX_BITS) | mss_index) & LOW_MASK
    }

    fn tuple_hasher(&self, tag: u8, local: SocketAddrV4, remote: SocketAddrV4) -> SipHasher24 {
        let mut hasher = SipHasher24::new(&self.secret);
        hasher.write(&[tag]);
        hasher.write(&local.ip().octets());
        hasher.write_u16(local.port());
        hasher.write(&remote.ip().octets());
        hasher.write_u16(remote.port());
        hasher
    }
}

/// The 64-second period `now` falls in, reduced to the 8 bits the cookie keeps.
fn period_at(now: Instant) -> u32 {
    ((now.as_nanos() / PERIOD_NANOS) as u32) & (u32::MAX >> PERIOD_SHIFT)
}

impl fmt::Debug for SynCookies {
    /// Leaves the secret out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SynCookies").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use core::time::Duration;

    const SECRET: [u8; 16] = [7; 16];

    fn local() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80)
    }
    fn remote() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 50123)
    }
    fn full_options() -> CookieOptions {
        CookieOptions { mss: 1460, window_scale: Some(7), sack: true, timestamps: true }
    }

    #[test]
    fn round_trip_recovers_every_option_with_timestamps() {
        let jar = SynCookies::new(SECRET);
        let t = Instant::from_secs(1000) + Duration::from_millis(123);
        let isn = SeqNumber(0xdead_beef);
        let (cookie, tsval) = jar.generate(t, local(), remote(), isn, &full_options(), Some(99));
        let tsval = tsval.expect("client sent timestamps");
        let later = t + Duration::from_millis(40);
        let got = jar.check(later, local(), remote(), isn, cookie, Some(tsval));
        assert_eq!(got, Some(full_options()));
    }

    #[test]
    fn round_trip_without_window_scale_or_sack() {
        let jar = SynCookies::new(SECRET);
        let opts = CookieOptions { mss: 1440, window_scale: None, sack: false, timestamps: true };
        let t = Instant::from_secs(5);
        let (cookie, tsval) = jar.generate(t, local(), remote(), SeqNumber(1), &opts, Some(1));
        assert_eq!(jar.check(t, local(), remote(), SeqNumber(1), cookie, tsval), Some(opts));
    }

    #[test]
    fn cookie_survives_isn_wraparound() {
        let jar = SynCookies::new(SECRET);
        let t = Instant::from_secs(77);
        let isn = SeqNumber(u32::MAX);
        let (cookie, _) = jar.generate(t, local(), remote(), isn, &full_options(), None);
        assert!(jar.check(t, local(), remote(), isn, cookie, None).is_some());
    }

    #[test]
    fn without_timestamps_only_mss_survives() {
        let jar = SynCookies::new(SECRET);
        let t = Instant::from_secs(30);
        let mut opts = full_options();
        opts.timestamps = false;
        let (cookie, tsval) = jar.generate(t, local(), remote(), SeqNumber(5), &opts, Some(1));
        assert_eq!(tsval, None, "timestamps disabled locally: no TSval to carry options");
        let got = jar.check(t, local(), remote(), SeqNumber(5), cookie, None).unwrap();
        assert_eq!(
            got,
            CookieOptions { mss: 1460, window_scale: None, sack: false, timestamps: false }
        );

        // Client sent no timestamps.
        let (cookie, tsval) =
            jar.generate(t, local(), remote(), SeqNumber(5), &full_options(), None);
        assert_eq!(tsval, None);
        let got = jar.check(t, local(), remote(), SeqNumber(5), cookie, None).unwrap();
        assert_eq!((got.window_scale, got.sack, got.timestamps), (None, false, false));
    }

    #[test]
    fn mss_rounds_down_to_the_table() {
        let jar = SynCookies::new(SECRET);
        let t = Instant::from_secs(1);
        for (advertised, expected) in [
            (9000, 1460),
            (1460, 1460),
            (1459, 1440),
            (1440, 1440),
            (1400, 1300),
            (1300, 1300),
            (1299, 536),
            (536, 536),
            (100, 536),
        ] {
            let opts = CookieOptions { mss: advertised, ..full_options() };
            let (cookie, _) = jar.generate(t, local(), remote(), SeqNumber(9), &opts, None);
            let got = jar.check(t, local(), remote(), SeqNumber(9), cookie, None).unwrap();
            assert_eq!(got.mss, expected, "advertised {advertised}");
        }
    }

    #[test]
    fn cookie_expires_after_its_period_and_the_next() {
        let jar = SynCookies::new(SECRET);
        let made = Instant::from_secs(64 * 10); // start of a period
        let isn = SeqNumber(42);
        let (cookie, _) = jar.generate(made, local(), remote(), isn, &full_options(), None);
        let check_at = |secs| {
            jar.check(made + Duration::from_secs(secs), local(), remote(), isn, cookie, None)
        };
        assert!(check_at(0).is_some());
        assert!(check_at(127).is_some(), "still within the next period");
        assert!(check_at(128).is_none(), "two periods later");
        assert!(check_at(64 * 200).is_none(), "long expired");
        // A cookie "from the future" (period ahead of ours) is a forgery.
        assert!(
            jar.check(made - Duration::from_secs(1), local(), remote(), isn, cookie, None)
                .is_none()
        );
    }

    #[test]
    fn tampered_cookie_is_rejected() {
        let jar = SynCookies::new(SECRET);
        let t = Instant::from_secs(100);
        let isn = SeqNumber(1000);
        let (cookie, _) = jar.generate(t, local(), remote(), isn, &full_options(), None);
        for bit in 0..32 {
            let forged = SeqNumber(cookie.0 ^ (1 << bit));
            assert!(jar.check(t, local(), remote(), isn, forged, None).is_none(), "bit {bit}");
        }
        // The client ISN is bound too.
        assert!(jar.check(t, local(), remote(), isn + 1u32, cookie, None).is_none());
        // So is the secret.
        assert!(SynCookies::new([8; 16]).check(t, local(), remote(), isn, cookie, None).is_none());
    }

    #[test]
    fn cookie_for_another_tuple_is_rejected() {
        let jar = SynCookies::new(SECRET);
        let t = Instant::from_secs(100);
        let isn = SeqNumber(1000);
        let (cookie, _) = jar.generate(t, local(), remote(), isn, &full_options(), None);
        let other_port = SocketAddrV4::new(*remote().ip(), remote().port() + 1);
        let other_ip = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), remote().port());
        let other_local = SocketAddrV4::new(*local().ip(), 8080);
        assert!(jar.check(t, local(), other_port, isn, cookie, None).is_none());
        assert!(jar.check(t, local(), other_ip, isn, cookie, None).is_none());
        assert!(jar.check(t, other_local, remote(), isn, cookie, None).is_none());
    }

    #[test]
    fn tsval_never_runs_ahead_of_the_millisecond_clock() {
        let jar = SynCookies::new(SECRET);
        for millis in [0u64, 1, 63, 64, 65, 1_000_000, 4_294_967_295, 4_294_967_296 + 3] {
            let t = Instant::from_millis(millis);
            let (_, tsval) =
                jar.generate(t, local(), remote(), SeqNumber(0), &full_options(), Some(7));
            let tsval = tsval.unwrap();
            let clock = millis as u32;
            let behind = clock.wrapping_sub(tsval);
            assert!(behind < 1 << TS_OPTION_BITS, "clock {clock} tsval {tsval}");
        }
    }

    #[test]
    fn oversized_window_scale_is_clamped() {
        let jar = SynCookies::new(SECRET);
        let t = Instant::from_secs(9);
        let opts = CookieOptions { window_scale: Some(15), ..full_options() };
        let (cookie, tsval) = jar.generate(t, local(), remote(), SeqNumber(3), &opts, Some(1));
        let got = jar.check(t, local(), remote(), SeqNumber(3), cookie, tsval).unwrap();
        assert_eq!(got.window_scale, Some(14));
    }
}
