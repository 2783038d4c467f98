//! `--wire unix:PATH`: the 82599 model port's wire is a SOCK_SEQPACKET Unix socket
//! (unix(7)), one Ethernet frame (without FCS) per record. Whoever listens at PATH is the
//! link partner; tests put a `tcp-core` stack there, so the whole netpop runs without any
//! privilege.
//!
//! The model's engine thread calls the wire without ever blocking: a full socket drops the
//! frame and counts it (a real wire loses frames too; TCP recovers), and the peer's hang-up
//! takes the link down (LINKS.UP clears in the model).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ixgbe_user::WireBackend;

use crate::shm::process::{SeqpacketListener, seqpacket_connect, set_socket_buffers};

/// Socket buffer asked for on both ends: a few thousand frames in flight.
pub const WIRE_SOCKET_BUFFER: usize = 4 << 20;

/// Counters of a [`UnixSeqpacketWire`], shared so that the plane can report them after
/// the wire moved into the model.
#[derive(Debug, Default)]
pub struct WireCounters {
    /// Frames sent to the peer.
    pub tx_frames: AtomicU64,
    /// Frames dropped because the socket was full.
    pub tx_dropped: AtomicU64,
    /// Frames received from the peer.
    pub rx_frames: AtomicU64,
}

/// A model wire over a connected SOCK_SEQPACKET socket.
#[derive(Debug)]
pub struct UnixSeqpacketWire {
    socket: UnixStream,
    up: AtomicBool,
    counters: Arc<WireCounters>,
}

impl UnixSeqpacketWire {
    /// Connects to the peer listening at `path`.
    pub fn connect(path: &Path) -> io::Result<UnixSeqpacketWire> {
        let socket = seqpacket_connect(path)
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {}: {e}", path.display())))?;
        Self::from_socket(socket)
    }

    /// Uses an already connected SEQPACKET socket (made non-blocking here).
    pub fn from_socket(socket: UnixStream) -> io::Result<UnixSeqpacketWire> {
        socket.set_nonblocking(true)?;
        // The kernel caps the size at net.core.[rw]mem_max; a smaller buffer still works.
        let _ = set_socket_buffers(socket.as_fd(), WIRE_SOCKET_BUFFER);
        Ok(UnixSeqpacketWire {
            socket,
            up: AtomicBool::new(true),
            counters: Arc::new(WireCounters::default()),
        })
    }

    /// The shared counters.
    pub fn counters(&self) -> Arc<WireCounters> {
        Arc::clone(&self.counters)
    }
}

impl WireBackend for UnixSeqpacketWire {
    fn transmit(&mut self, frame: &[u8]) -> io::Result<()> {
        if !self.up.load(Ordering::Relaxed) {
            self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // A SEQPACKET write sends the whole record or nothing.
        match (&self.socket).write(frame) {
            Ok(n) if n == frame.len() => {
                self.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(_) => {
                self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                self.up.store(false, Ordering::Relaxed);
                self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn receive(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if !self.up.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match (&self.socket).read(buf) {
            Ok(0) => {
                // A zero-length record is not something a peer sends for a frame; on a
                // SEQPACKET socket 0 means the peer closed.
                self.up.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Ok(n) => {
                self.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.up.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn link_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// The listening side, for the link partner (tests): bind at a path, then accept the
/// plane's connection.
#[derive(Debug)]
pub struct UnixWirePeer {
    listener: SeqpacketListener,
}

impl UnixWirePeer {
    /// Listens at `path` (which must not exist).
    pub fn bind(path: &Path) -> io::Result<UnixWirePeer> {
        Ok(UnixWirePeer { listener: SeqpacketListener::bind(path)? })
    }

    /// Waits for the plane to connect and returns the connected socket (blocking; each
    /// read returns one frame, each write sends one).
    pub fn accept(&self) -> io::Result<UnixStream> {
        let s = self.listener.accept()?;
        let _ = set_socket_buffers(s.as_fd(), WIRE_SOCKET_BUFFER);
        Ok(s)
    }

    /// The listening socket (for poll).
    pub fn listener(&self) -> &SeqpacketListener {
        &self.listener
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_whole_both_ways_and_hang_up_takes_the_link_down() {
        let path = std::env::temp_dir().join(format!("np-uw-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let peer = UnixWirePeer::bind(&path).unwrap();
        let mut wire = UnixSeqpacketWire::connect(&path).unwrap();
        let mut far = peer.accept().unwrap();
        std::fs::remove_file(&path).unwrap();

        let mut buf = [0u8; 2048];
        assert_eq!(wire.receive(&mut buf).unwrap(), None, "nothing sent yet");
        far.write_all(&[7u8; 60]).unwrap();
        far.write_all(&[8u8; 1514]).unwrap();
        far.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < 2 && std::time::Instant::now() < deadline {
            if let Some(n) = wire.receive(&mut buf).unwrap() {
                got.push(buf[..n].to_vec());
            }
        }
        assert_eq!(got, vec![vec![7u8; 60], vec![8u8; 1514]]);

        wire.transmit(&[1, 2, 3, 4]).unwrap();
        let n = far.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[1, 2, 3, 4]);
        assert_eq!(wire.counters().tx_frames.load(Ordering::Relaxed), 1);
        assert_eq!(wire.counters().rx_frames.load(Ordering::Relaxed), 2);

        assert!(wire.link_up());
        drop(far);
        assert_eq!(wire.receive(&mut buf).unwrap(), None);
        assert!(!wire.link_up(), "peer hang-up is link down");
        wire.transmit(&[1]).unwrap();
        assert_eq!(wire.counters().tx_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_missing_peer_is_a_clear_error() {
        let err = UnixSeqpacketWire::connect(Path::new("/nonexistent/np.sock")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/np.sock"), "{err}");
    }
}
