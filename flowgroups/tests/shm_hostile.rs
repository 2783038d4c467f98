//! A hostile peer maps the same memfd (as another process would, through `from_fd`) and
//! writes arbitrary values anywhere in a ring — indices and slots — between the honest
//! side's operations. The honest side must only ever see `Ok` with slot data or
//! `Err(Corrupt)`: no panic, no other error, and no access outside the ring. The ring ends
//! exactly at the end of its segment, so any access past it faults; a canary before it
//! catches stray writes below it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flowgroups::shm::{
    ByteRing, ByteRingReader, ByteRingWriter, Pod, RingConsumer, RingLayout, RingProducer, Segment,
    ShmError,
};
use proptest::prelude::*;

const SEGMENT: usize = 16384;
const CANARY: u64 = 0xc0ff_ee00_dead_beef;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Slot {
    words: [u64; 3],
}
// SAFETY: repr(C), three u64, no padding; any bits are a valid Slot.
unsafe impl Pod for Slot {}

#[derive(Clone, Debug)]
enum Step {
    /// The honest side does one operation (push/write or pop/read), of `len` where relevant.
    Honest { len: usize },
    /// The peer stores `value` into the ring's `word`-th u64 (header words come first).
    Scribble { word: usize, value: u64 },
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let value = prop_oneof![0u64..600, any::<u64>(), (u64::MAX - 600)..=u64::MAX];
    let step = prop_oneof![
        3 => (1usize..300).prop_map(|len| Step::Honest { len }),
        1 => (0usize..64, value.clone()).prop_map(|(word, value)| Step::Scribble { word, value }),
        // Aim at the index words (head at word 0, tail at word 16 with 128-byte padding).
        1 => (prop_oneof![Just(0usize), Just(16)], value).prop_map(|(word, value)| Step::Scribble { word, value }),
    ];
    proptest::collection::vec(step, 0..300)
}

/// The honest mapping, the peer's mapping of the same memfd, and the ring's offset.
fn mappings(ring_len: usize) -> (Arc<Segment>, Segment, usize) {
    let ours = Arc::new(Segment::create("netpop-hostile", SEGMENT).unwrap());
    let theirs = Segment::from_fd(ours.fd().try_clone_to_owned().unwrap()).unwrap();
    let offset = SEGMENT - ring_len;
    assert_eq!(offset % 128, 0);
    for w in ours.get_slice::<AtomicU64>(0, offset / 8).unwrap() {
        w.store(CANARY, Ordering::Relaxed);
    }
    (ours, theirs, offset)
}

fn scribble(theirs: &Segment, offset: usize, ring_len: usize, word: usize, value: u64) {
    let words = theirs.get_slice::<AtomicU64>(offset, ring_len / 8).unwrap();
    words[word % words.len()].store(value, Ordering::Release);
}

fn canary_intact(seg: &Segment, offset: usize) -> bool {
    seg.get_slice::<AtomicU64>(0, offset / 8)
        .unwrap()
        .iter()
        .all(|w| w.load(Ordering::Relaxed) == CANARY)
}

fn ok_or_corrupt<T>(r: Result<T, ShmError>) -> Result<Option<T>, TestCaseError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ShmError::Corrupt(_)) => Ok(None),
        Err(e) => Err(TestCaseError::fail(format!("unexpected error {e}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn slot_consumer_survives_a_hostile_producer(steps in steps()) {
        let capacity = 16u32;
        let ring_len = RingLayout { capacity }.size_for::<Slot>();
        let (ours, theirs, offset) = mappings(ring_len);
        let mut consumer = RingConsumer::<Slot>::attach(Arc::clone(&ours), offset, capacity).unwrap();
        for step in steps {
            match step {
                Step::Honest { .. } => { ok_or_corrupt(consumer.pop())?; }
                Step::Scribble { word, value } => scribble(&theirs, offset, ring_len, word, value),
            }
            if let Some(len) = ok_or_corrupt(consumer.len())? { prop_assert!(len <= capacity); }
        }
        prop_assert!(canary_intact(&ours, offset));
    }

    #[test]
    fn slot_producer_survives_a_hostile_consumer(steps in steps()) {
        let capacity = 16u32;
        let ring_len = RingLayout { capacity }.size_for::<Slot>();
        let (ours, theirs, offset) = mappings(ring_len);
        let mut producer = RingProducer::<Slot>::attach(Arc::clone(&ours), offset, capacity).unwrap();
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::Honest { .. } => { ok_or_corrupt(producer.push(&Slot { words: [i as u64; 3] }))?; }
                Step::Scribble { word, value } => scribble(&theirs, offset, ring_len, word, value),
            }
            if let Some(free) = ok_or_corrupt(producer.free_slots())? { prop_assert!(free <= capacity); }
        }
        prop_assert!(canary_intact(&ours, offset));
    }

    #[test]
    fn byte_reader_survives_a_hostile_writer(steps in steps()) {
        let capacity = 256u32;
        let ring_len = ByteRing::size_for(capacity);
        let (ours, theirs, offset) = mappings(ring_len);
        let mut reader = ByteRingReader::attach(Arc::clone(&ours), offset, capacity).unwrap();
        let mut buf = vec![0u8; 300];
        for step in steps {
            match step {
                Step::Honest { len } => {
                    if let Some(n) = ok_or_corrupt(reader.read(&mut buf[..len]))? { prop_assert!(n <= len); }
                }
                Step::Scribble { word, value } => scribble(&theirs, offset, ring_len, word, value),
            }
            if let Some(n) = ok_or_corrupt(reader.readable())? { prop_assert!(n <= capacity as usize); }
        }
        prop_assert!(canary_intact(&ours, offset));
    }

    #[test]
    fn byte_writer_survives_a_hostile_reader(steps in steps()) {
        let capacity = 256u32;
        let ring_len = ByteRing::size_for(capacity);
        let (ours, theirs, offset) = mappings(ring_len);
        let mut writer = ByteRingWriter::attach(Arc::clone(&ours), offset, capacity).unwrap();
        let data = vec![0x42u8; 300];
        for step in steps {
            match step {
                Step::Honest { len } => {
                    if let Some(n) = ok_or_corrupt(writer.write(&data[..len]))? { prop_assert!(n <= len); }
                }
                Step::Scribble { word, value } => scribble(&theirs, offset, ring_len, word, value),
            }
            if let Some(n) = ok_or_corrupt(writer.writable())? { prop_assert!(n <= capacity as usize); }
        }
        prop_assert!(canary_intact(&ours, offset));
    }
}
