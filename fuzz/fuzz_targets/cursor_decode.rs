//! Feeds arbitrary bytes to the upload cursor decoder and to the two-copy loader: no panic,
//! canonical decoding, and a damaged newest copy always falls back to the older one.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    uploader::fuzzing::cursor_decode(data);
});
