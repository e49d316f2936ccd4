//! Feeds arbitrary bytes to the recorder's frame decoder (first byte: frame kind): no panic,
//! and whatever decodes re-encodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    records::fuzzing::fuzz_decode(data);
});
