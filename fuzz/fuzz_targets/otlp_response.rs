//! Feeds arbitrary bytes to the OTLP response decoders (ExportLogsServiceResponse and
//! google.rpc.Status, read from a receiver's answer): no panic, bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    otlp::fuzzing::response_decode(data);
});
