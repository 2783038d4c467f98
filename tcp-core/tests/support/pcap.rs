//! A bounded in-memory capture of tcp-core's view of the link — frames as the stack handled
//! them (after any emulated loss or delay) and as it emitted them (before any) — written out
//! as a classic
//! libpcap file (the "pcap" format: 24-byte global header, 16-byte record headers,
//! link type 1 = Ethernet) when a case fails, so a failure can be read in Wireshark or with
//! `tcpdump -r` without re-running it. The machine has no tcpdump of its own.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Classic pcap magic for microsecond timestamps, written in native byte order.
const PCAP_MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// Bytes kept of each frame: enough for every header plus a little payload.
const SNAPLEN: usize = 128;

/// The last `capacity` frames, each with its time since the capture started.
#[derive(Debug)]
pub(crate) struct Capture {
    frames: VecDeque<(Duration, u32, Vec<u8>)>,
    capacity: usize,
    seen: u64,
}

impl Capture {
    /// A capture that keeps the most recent `capacity` frames.
    pub(crate) fn new(capacity: usize) -> Capture {
        Capture { frames: VecDeque::with_capacity(capacity.min(4096)), capacity, seen: 0 }
    }

    /// Records one frame (truncated to the snap length).
    pub(crate) fn record(&mut self, at: Duration, frame: &[u8]) {
        self.seen += 1;
        if self.capacity == 0 {
            return;
        }
        let mut slot = if self.frames.len() >= self.capacity {
            self.frames.pop_front().map(|(_, _, v)| v).unwrap_or_default()
        } else {
            Vec::with_capacity(SNAPLEN)
        };
        slot.clear();
        slot.extend_from_slice(&frame[..frame.len().min(SNAPLEN)]);
        self.frames.push_back((at, frame.len() as u32, slot));
    }

    /// Frames recorded since the start, including those no longer kept.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Writes the kept frames to `path` in pcap format.
    pub(crate) fn write_pcap(&self, path: &Path) -> io::Result<PathBuf> {
        let mut out = io::BufWriter::new(std::fs::File::create(path)?);
        out.write_all(&PCAP_MAGIC_MICROS.to_ne_bytes())?;
        out.write_all(&2u16.to_ne_bytes())?; // version 2.4
        out.write_all(&4u16.to_ne_bytes())?;
        out.write_all(&0i32.to_ne_bytes())?; // GMT offset
        out.write_all(&0u32.to_ne_bytes())?; // timestamp accuracy
        out.write_all(&(SNAPLEN as u32).to_ne_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_ne_bytes())?;
        for (at, original_len, bytes) in &self.frames {
            out.write_all(&(at.as_secs() as u32).to_ne_bytes())?;
            out.write_all(&at.subsec_micros().to_ne_bytes())?;
            out.write_all(&(bytes.len() as u32).to_ne_bytes())?;
            out.write_all(&original_len.to_ne_bytes())?;
            out.write_all(bytes)?;
        }
        out.flush()?;
        Ok(path.to_path_buf())
    }
}
