//! Two processes, one shared segment: a producer process pushes 1,000,000 sequence-numbered
//! slots through an `SpscRing` and a few megabytes of patterned bytes through a `ByteRing`
//! while this process consumes both and checks that nothing is lost, duplicated, reordered
//! or torn.
//!
//! The producer is this test binary run again with `--ignored --exact child_producer`; it
//! gets the segment's memfd over a Unix socket (its stdin) with `send_fds`, so fd passing is
//! exercised too. The whole run is bounded: either side gives up after 30 seconds.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgroups::shm::{
    ByteRing, ByteRingReader, ByteRingWriter, Pod, RingConsumer, RingLayout, RingProducer, Segment,
    align_up, recv_fds, send_fds,
};

const CHILD_ENV: &str = "NETPOP_SHM_STRESS_CHILD";
const SLOTS: u64 = 1_000_000;
const BYTES: u64 = 8 << 20;
const RING_SLOTS: u32 = 1024;
const BYTE_RING: u32 = 1 << 16;
const TIME_LIMIT: Duration = Duration::from_secs(30);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SeqSlot {
    seq: u64,
    payload: [u64; 6],
    check: u64,
}
const _: () = assert!(size_of::<SeqSlot>() == 64);

// SAFETY: repr(C), eight u64 fields, no padding; every bit pattern is a valid SeqSlot.
unsafe impl Pod for SeqSlot {}

impl SeqSlot {
    fn new(seq: u64) -> SeqSlot {
        let payload =
            std::array::from_fn(|k| seq.wrapping_mul(k as u64 + 3) ^ 0x5555_aaaa_5555_aaaa);
        let check = payload.iter().fold(seq, |acc, w| acc.rotate_left(7) ^ w);
        SeqSlot { seq, payload, check }
    }
}

/// Byte `i` of the stream: a cheap hash of the position, so a lost, repeated or swapped
/// chunk shows up as a mismatch.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

fn byte_ring_offset() -> usize {
    align_up(RingLayout { capacity: RING_SLOTS }.size_for::<SeqSlot>(), 128)
}

fn segment_len() -> usize {
    byte_ring_offset() + ByteRing::size_for(BYTE_RING)
}

/// Sizes of successive transfers: deterministic, varied, 1..=max.
struct Sizes(u64);
impl Sizes {
    fn next(&mut self, max: usize) -> usize {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize % max) + 1
    }
}

fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Producer side, in the child process.
#[test]
#[ignore = "entry point of the child process of two_processes_stream_through_shared_rings"]
fn child_producer() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // run by hand with --ignored: nothing to do without a parent
    }
    let sock = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap());
    let mut buf = [0u8; 8];
    let (n, mut fds) = recv_fds(&sock, &mut buf, 1).unwrap();
    assert_eq!((n, fds.len()), (1, 1), "parent sends one byte and the segment fd");
    let seg = Arc::new(Segment::from_fd(fds.remove(0)).unwrap());
    assert_eq!(seg.len(), segment_len());
    let mut slots = RingProducer::<SeqSlot>::attach(Arc::clone(&seg), 0, RING_SLOTS).unwrap();
    let mut bytes =
        ByteRingWriter::attach(Arc::clone(&seg), byte_ring_offset(), BYTE_RING).unwrap();

    let deadline = Instant::now() + TIME_LIMIT;
    let (mut next_slot, mut next_byte) = (0u64, 0u64);
    let mut sizes = Sizes(7);
    let mut chunk = vec![0u8; 4096];
    let mut spins = 0;
    while next_slot < SLOTS || next_byte < BYTES {
        assert!(
            Instant::now() < deadline,
            "producer ran out of time at slot {next_slot}, byte {next_byte}"
        );
        let mut progressed = false;
        for _ in 0..sizes.next(64) {
            if next_slot == SLOTS || !slots.push(&SeqSlot::new(next_slot)).unwrap() {
                break;
            }
            next_slot += 1;
            progressed = true;
        }
        if next_byte < BYTES {
            let len = sizes.next(chunk.len()).min((BYTES - next_byte) as usize);
            for (i, b) in chunk[..len].iter_mut().enumerate() {
                *b = byte_at(next_byte + i as u64);
            }
            let written = bytes.write(&chunk[..len]).unwrap();
            next_byte += written as u64;
            progressed |= written > 0;
        }
        if progressed {
            spins = 0;
        } else {
            backoff(&mut spins);
        }
    }
    // Stay until the parent has drained everything, so our exit cannot race its reads
    // (the mapping would survive anyway; this keeps the exit status meaningful).
    while slots.free_slots().unwrap() < RING_SLOTS || bytes.unread().unwrap() > 0 {
        assert!(Instant::now() < deadline, "parent stopped consuming");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Kills the child if the parent test fails before reaping it.
struct ChildGuard(Option<Child>);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn two_processes_stream_through_shared_rings() {
    let seg = Arc::new(Segment::create("netpop-stress", segment_len()).unwrap());
    let mut slots = RingConsumer::<SeqSlot>::attach(Arc::clone(&seg), 0, RING_SLOTS).unwrap();
    let mut bytes =
        ByteRingReader::attach(Arc::clone(&seg), byte_ring_offset(), BYTE_RING).unwrap();

    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_producer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(child));
    send_fds(&ours, b"S", &[seg.fd()]).unwrap();

    let start = Instant::now();
    let deadline = start + TIME_LIMIT;
    let (mut next_slot, mut next_byte) = (0u64, 0u64);
    let mut sizes = Sizes(11);
    let mut buf = vec![0u8; 6000];
    let mut spins = 0;
    while next_slot < SLOTS || next_byte < BYTES {
        if Instant::now() > deadline {
            panic!(
                "timed out after {TIME_LIMIT:?} at slot {next_slot}/{SLOTS}, byte {next_byte}/{BYTES}"
            );
        }
        if let Some(status) = guard.0.as_mut().and_then(|c| c.try_wait().unwrap()) {
            // The child may legitimately be done producing; only a failure is fatal here.
            assert!(status.success(), "producer failed: {status}");
        }
        let mut progressed = false;
        for _ in 0..sizes.next(64) {
            match slots.pop().unwrap() {
                Some(slot) => {
                    assert_eq!(slot, SeqSlot::new(next_slot), "slot out of order or torn");
                    next_slot += 1;
                    progressed = true;
                }
                None => break,
            }
        }
        let want = sizes.next(buf.len());
        let n = bytes.read(&mut buf[..want]).unwrap();
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, byte_at(next_byte + i as u64), "byte {} wrong", next_byte + i as u64);
        }
        next_byte += n as u64;
        progressed |= n > 0;
        if progressed {
            spins = 0;
        } else {
            backoff(&mut spins);
        }
    }
    assert_eq!(slots.pop().unwrap(), None, "producer pushed more than it should");
    assert_eq!(bytes.readable().unwrap(), 0);

    let mut child = guard.0.take().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("producer did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "producer exited with {status}");
    eprintln!("streamed {SLOTS} slots and {BYTES} bytes across processes in {:?}", start.elapsed());
}
