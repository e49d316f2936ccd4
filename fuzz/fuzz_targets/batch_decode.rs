//! Feeds arbitrary bytes to the upload batch decoder, as an HTTP body (zstd) and as a
//! decompressed batch: no panic, bounded memory, canonical re-encoding.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    protocol::fuzzing::batch_decode(data);
});
