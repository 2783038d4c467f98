//! The migration codec on arbitrary bytes: `ConnectionState::decode` never panics, and
//! whatever it accepts re-encodes to exactly the input (the encoding is canonical, so a
//! migrated TCB cannot change on the way).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_core::tcp::{CODEC_MAGIC, CODEC_VERSION, ConnectionState};

fuzz_target!(|data: &[u8]| {
    check(data);
    // Most inputs fail at the magic; also try the bytes as a body behind a valid header,
    // so the fuzzer reaches the field decoders.
    let mut framed = Vec::with_capacity(data.len() + 10);
    framed.extend_from_slice(&CODEC_MAGIC);
    framed.extend_from_slice(&CODEC_VERSION.to_le_bytes());
    framed.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    framed.extend_from_slice(data);
    check(&framed);
});

fn check(input: &[u8]) {
    if let Ok(state) = ConnectionState::decode(input) {
        let mut again = Vec::new();
        state.encode(&mut again);
        assert_eq!(again, input, "decode accepted a non-canonical encoding");
    }
}
