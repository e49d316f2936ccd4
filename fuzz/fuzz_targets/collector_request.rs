//! Feeds arbitrary requests (URL log id, headers, body) to the collector's upload checks and
//! bounded batch decoding: no panic, bounded memory, refusals only as 400/413/415, and an
//! accepted batch always belongs to the URL's log and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    collector::fuzzing::collector_request(data);
});
