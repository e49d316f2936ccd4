//! Feeds arbitrary bytes to the segment decoders: header, frame check, and a full reader
//! scan of the bytes as a segment file (resync, damage reporting, bounds).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    segment_log::fuzzing::scan_bytes(data);
});
