//! Packet capture in the classic libpcap file format, for `netpop capture` and Wireshark.
//!
//! Format (the "libpcap file format" as documented by the tcpdump project and
//! draft-ietf-opsawg-pcap §4-§5): a 24-byte file header — magic 0xa1b2c3d4 (microsecond
//! timestamps), version 2.4, this-zone 0, sigfigs 0, snap length, link type — then one
//! 16-byte record header per packet (seconds, microseconds, captured length, original
//! length) followed by the captured bytes. We write the header fields in little-endian
//! order; readers recognise the byte order from the magic. Link type 1 is
//! LINKTYPE_ETHERNET: every record starts with the Ethernet header (no FCS).

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The magic number of a microsecond-resolution pcap file.
pub const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest frame we keep whole; longer ones are truncated to it (with their original
/// length recorded).
pub const SNAP_LEN: u32 = 65_535;
/// Bytes of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// Writes pcap records to any byte sink.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    records: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header and returns a writer for the records.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut h = [0u8; FILE_HEADER_LEN];
        h[0..4].copy_from_slice(&PCAP_MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // 8..16: this-zone and sigfigs, both zero.
        h[16..20].copy_from_slice(&SNAP_LEN.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, records: 0 })
    }

    /// Appends one frame seen at `at` (wall-clock time).
    pub fn write_frame(&mut self, at: SystemTime, frame: &[u8]) -> io::Result<()> {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        // The classic format has 32-bit seconds (good until 2106).
        let secs = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
        let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let kept = frame.get(..SNAP_LEN as usize).unwrap_or(frame);
        let mut r = [0u8; RECORD_HEADER_LEN];
        r[0..4].copy_from_slice(&secs.to_le_bytes());
        r[4..8].copy_from_slice(&since.subsec_micros().to_le_bytes());
        r[8..12].copy_from_slice(&(kept.len() as u32).to_le_bytes());
        r[12..16].copy_from_slice(&orig.to_le_bytes());
        self.out.write_all(&r)?;
        self.out.write_all(kept)?;
        self.records += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One packet read back from a pcap file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapRecord {
    /// Seconds since the Unix epoch.
    pub secs: u32,
    /// Microseconds within the second.
    pub micros: u32,
    /// Length of the frame on the wire.
    pub original_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Why a pcap file did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PcapError {
    /// Shorter than its headers say.
    Truncated,
    /// Not a little-endian microsecond pcap file.
    BadMagic(u32),
    /// A link type other than Ethernet.
    LinkType(u32),
    /// A record claims more bytes than the snap length or its original length.
    BadRecord,
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::Truncated => write!(f, "pcap file is truncated"),
            PcapError::BadMagic(m) => write!(f, "not a pcap file we write (magic {m:#010x})"),
            PcapError::LinkType(t) => write!(f, "link type {t} is not Ethernet"),
            PcapError::BadRecord => write!(f, "pcap record length is impossible"),
        }
    }
}

impl std::error::Error for PcapError {}

fn le32(b: &[u8], at: usize) -> Result<u32, PcapError> {
    let bytes = b.get(at..at + 4).ok_or(PcapError::Truncated)?;
    let mut w = [0u8; 4];
    w.copy_from_slice(bytes);
    Ok(u32::from_le_bytes(w))
}

/// Parses a file written by [`PcapWriter`] (little-endian, microseconds, Ethernet).
pub fn parse_pcap(bytes: &[u8]) -> Result<Vec<PcapRecord>, PcapError> {
    let magic = le32(bytes, 0)?;
    if magic != PCAP_MAGIC {
        return Err(PcapError::BadMagic(magic));
    }
    let snap = le32(bytes, 16)?;
    let link = le32(bytes, 20)?;
    if link != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(link));
    }
    let mut at = FILE_HEADER_LEN;
    let mut out = Vec::new();
    while at < bytes.len() {
        let secs = le32(bytes, at)?;
        let micros = le32(bytes, at + 4)?;
        let incl = le32(bytes, at + 8)?;
        let original_len = le32(bytes, at + 12)?;
        if incl > snap || incl > original_len {
            return Err(PcapError::BadRecord);
        }
        let start = at + RECORD_HEADER_LEN;
        let end = start.checked_add(incl as usize).ok_or(PcapError::Truncated)?;
        let data = bytes.get(start..end).ok_or(PcapError::Truncated)?.to_vec();
        out.push(PcapRecord { secs, micros, original_len, data });
        at = end;
    }
    Ok(out)
}

/// Where a capture goes.
#[derive(Debug)]
pub(crate) enum CaptureSink {
    /// A file the plane opened and passed to us.
    Fd(File),
    /// A file we create in the capture directory: written under a temporary name and
    /// renamed once complete, so a reader never sees half a capture.
    Path { tmp: PathBuf, done: PathBuf },
}

/// An active capture: the next `remaining` frames received or sent by this instance.
#[derive(Debug)]
pub(crate) struct Capture {
    writer: PcapWriter<BufWriter<File>>,
    remaining: u32,
    seq: u32,
    rename: Option<(PathBuf, PathBuf)>,
}

/// The file name of capture `seq` of instance `index` in the capture directory.
pub fn capture_file_name(index: u16, seq: u32) -> String {
    format!("instance-{index}-capture-{seq}.pcap")
}

impl Capture {
    /// Starts a capture of `count` frames.
    pub(crate) fn start(sink: CaptureSink, count: u32, seq: u32) -> io::Result<Capture> {
        let (file, rename) = match sink {
            CaptureSink::Fd(f) => (f, None),
            CaptureSink::Path { tmp, done } => (File::create(&tmp)?, Some((tmp, done))),
        };
        Ok(Capture {
            writer: PcapWriter::new(BufWriter::new(file))?,
            remaining: count,
            seq,
            rename,
        })
    }

    /// The sink for a capture into `dir` without a plane-provided file.
    pub(crate) fn sink_in(dir: &Path, index: u16, seq: u32) -> CaptureSink {
        let done = dir.join(capture_file_name(index, seq));
        let tmp = dir.join(format!(".{}.partial", capture_file_name(index, seq)));
        CaptureSink::Path { tmp, done }
    }

    /// Records one frame; true once the capture has all its frames.
    pub(crate) fn record(&mut self, frame: &[u8]) -> io::Result<bool> {
        if self.remaining > 0 {
            self.writer.write_frame(SystemTime::now(), frame)?;
            self.remaining -= 1;
        }
        Ok(self.remaining == 0)
    }

    /// The plane's sequence number of this capture.
    pub(crate) fn seq(&self) -> u32 {
        self.seq
    }

    /// True once every frame asked for is written.
    pub(crate) fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// Flushes the file and, for a directory capture, gives it its final name.
    pub(crate) fn finish(self) -> io::Result<u64> {
        let frames = self.writer.records();
        let file = self.writer.finish()?;
        file.get_ref().sync_data().or_else(|e| {
            // A pipe or socket cannot be synced; that is not a failed capture.
            if e.raw_os_error() == Some(libc::EINVAL) { Ok(()) } else { Err(e) }
        })?;
        drop(file);
        if let Some((tmp, done)) = self.rename {
            std::fs::rename(tmp, done)?;
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn header_and_records_have_the_documented_layout() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000);
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(at, &[0xaa; 60]).unwrap();
        w.write_frame(at, &[1, 2, 3]).unwrap();
        assert_eq!(w.records(), 2);
        let bytes = w.finish().unwrap();
        assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian magic");
        assert_eq!(&bytes[4..8], &[2, 0, 4, 0], "version 2.4");
        assert_eq!(&bytes[20..24], &[1, 0, 0, 0], "LINKTYPE_ETHERNET");
        assert_eq!(bytes.len(), FILE_HEADER_LEN + 2 * RECORD_HEADER_LEN + 63);
        let recs = parse_pcap(&bytes).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].secs, recs[0].micros), (1_700_000_000, 123_456));
        assert_eq!(recs[0].data, vec![0xaa; 60]);
        assert_eq!(recs[1].data, vec![1, 2, 3]);
        assert_eq!(recs[1].original_len, 3);
    }

    #[test]
    fn oversized_frames_are_truncated_to_the_snap_length() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let big = vec![7u8; SNAP_LEN as usize + 10];
        w.write_frame(SystemTime::now(), &big).unwrap();
        let recs = parse_pcap(&w.finish().unwrap()).unwrap();
        assert_eq!(recs[0].data.len(), SNAP_LEN as usize);
        assert_eq!(recs[0].original_len, SNAP_LEN + 10);
    }

    #[test]
    fn parser_rejects_damaged_files() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(SystemTime::now(), &[9; 20]).unwrap();
        let good = w.finish().unwrap();
        assert_eq!(parse_pcap(&good[..good.len() - 1]), Err(PcapError::Truncated));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(parse_pcap(&bad), Err(PcapError::BadMagic(_))));
        let mut bad = good.clone();
        bad[20] = 105;
        assert_eq!(parse_pcap(&bad), Err(PcapError::LinkType(105)));
        let mut bad = good;
        bad[FILE_HEADER_LEN + 12] = 1; // original length 1 < captured 20
        assert_eq!(parse_pcap(&bad), Err(PcapError::BadRecord));
    }

    #[test]
    fn directory_capture_appears_only_when_complete() {
        let dir = std::env::temp_dir().join(format!("netpop-pcap-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Capture::start(Capture::sink_in(&dir, 3, 7), 2, 7).unwrap();
        let done = dir.join(capture_file_name(3, 7));
        assert!(!c.record(&[1; 14]).unwrap());
        assert!(!done.exists(), "a partial capture is not under its final name");
        assert!(c.record(&[2; 14]).unwrap());
        assert!(c.record(&[3; 14]).unwrap(), "frames past the count are ignored");
        assert_eq!(c.finish().unwrap(), 2);
        let recs = parse_pcap(&std::fs::read(&done).unwrap()).unwrap();
        assert_eq!(recs.iter().map(|r| r.data[0]).collect::<Vec<_>>(), vec![1, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
