//! Feeds arbitrary bytes to the trim-ledger decoder and the sealed record count: bounded,
//! checked, canonical, no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    segment_log::fuzzing::ledger_bytes(data);
});
