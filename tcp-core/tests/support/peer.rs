//! Payloads, digests, and the Linux side of an exchange: a std `TcpStream` in the test's
//! namespace that sends its payload and reads the other side's to end of stream, both at
//! once (full duplex), with every blocking call bounded by a deadline.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// What one side received (or sent): length and SHA-256.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    /// Bytes.
    pub(crate) len: u64,
    /// SHA-256 of those bytes.
    pub(crate) sha256: [u8; 32],
}

impl Digest {
    /// The digest of `data`.
    pub(crate) fn of(data: &[u8]) -> Digest {
        Digest { len: data.len() as u64, sha256: Sha256::digest(data).into() }
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes, sha256 ", self.len)?;
        for b in &self.sha256[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Hashes a stream as it arrives.
#[derive(Clone, Default)]
pub(crate) struct StreamHasher {
    hasher: Sha256,
    len: u64,
}

impl fmt::Debug for StreamHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamHasher({} bytes)", self.len)
    }
}

impl StreamHasher {
    /// Adds `data` to the stream.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes seen so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The digest of everything seen.
    pub(crate) fn finish(self) -> Digest {
        Digest { len: self.len, sha256: self.hasher.finalize().into() }
    }
}

/// `len` pseudo-random bytes determined by `seed` (SplitMix64), so a reordered, duplicated
/// or shifted byte changes the digest.
pub(crate) fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// When the Linux side must give up: at a deadline, or as soon as the tcp-core side has
/// failed (so a failing case reports at once instead of waiting for socket timeouts).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits<'a> {
    /// Wall-clock limit of the case.
    pub(crate) deadline: Instant,
    /// Set by the tcp-core side when it gave up.
    pub(crate) cancel: &'a AtomicBool,
}

/// Socket timeouts are sliced this fine so `Limits::cancel` is noticed quickly.
const SLICE: Duration = Duration::from_millis(100);

impl Limits<'_> {
    /// `Err` once the case must stop, else the next socket timeout to use.
    fn check(&self, doing: &str) -> Result<Duration, String> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(format!("{doing}: cancelled because the tcp-core side failed"));
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{doing}: deadline passed"));
        }
        Ok(left.clamp(Duration::from_millis(1), SLICE))
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

/// Sends `outgoing` then shuts down the write half, while reading until end of stream
/// (starting only after `read_pause`, so the receive window can fill up); returns the digest
/// of what was read. Fails on any socket error or when `limits` say so.
pub(crate) fn exchange(
    stream: TcpStream,
    outgoing: &[u8],
    read_pause: Duration,
    limits: Limits<'_>,
) -> Result<Digest, String> {
    let writer_stream = stream.try_clone().map_err(|e| format!("try_clone: {e}"))?;
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_then_shutdown(writer_stream, outgoing, limits));
        let resume = Instant::now() + read_pause;
        let mut paused = Ok(());
        while paused.is_ok() && Instant::now() < resume {
            paused = limits.check("linux pausing before reading").map(|_| ());
            std::thread::sleep(Duration::from_millis(5));
        }
        let read_result = paused.and_then(|()| read_to_end(&stream, limits));
        if read_result.is_err() {
            // Unblock the writer so the scope can end.
            let _ = stream.shutdown(Shutdown::Both);
        }
        let write_result = writer.join().map_err(|_| "linux writer panicked".to_string())?;
        let received = read_result?;
        write_result?;
        Ok(received)
    })
}

fn write_then_shutdown(
    mut stream: TcpStream,
    outgoing: &[u8],
    limits: Limits<'_>,
) -> Result<(), String> {
    let mut written = 0;
    while written < outgoing.len() {
        let doing = format!("linux write after {written} of {} bytes", outgoing.len());
        stream.set_write_timeout(Some(limits.check(&doing)?)).map_err(|e| e.to_string())?;
        match stream.write(&outgoing[written..]) {
            Ok(n) => written += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(format!("{doing}: {e}")),
        }
    }
    stream.shutdown(Shutdown::Write).map_err(|e| format!("linux shutdown(SHUT_WR): {e}"))
}

fn read_to_end(mut stream: &TcpStream, limits: Limits<'_>) -> Result<Digest, String> {
    let mut hasher = StreamHasher::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let doing = format!("linux read after {} bytes", hasher.len());
        stream.set_read_timeout(Some(limits.check(&doing)?)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(format!("{doing}: {e}")),
        }
    }
}

/// Accepts one connection on `listener` (polling, so a test that never connects cannot hang
/// the thread).
pub(crate) fn accept_one(listener: &TcpListener, limits: Limits<'_>) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(stream);
            }
            Err(e) if is_timeout(&e) => {
                limits.check("linux accept")?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(format!("linux accept: {e}")),
        }
    }
}

/// Connects to `addr` within the limits.
pub(crate) fn connect(addr: SocketAddrV4, limits: Limits<'_>) -> Result<TcpStream, String> {
    let timeout =
        limits.deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    TcpStream::connect_timeout(&addr.into(), timeout)
        .map_err(|e| format!("linux connect to {addr}: {e}"))
}
