//! Helpers shared by the unit tests: logs with known records.
#![allow(clippy::unwrap_used)]
use std::path::Path;

use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};

/// A recorder config for `dir`: small segments, no retention, no rate limits.
pub fn config(dir: &Path, segment_size: u64) -> Config {
    let mut c = Config::for_dir(dir);
    c.log.segment_size = segment_size;
    c.log.max_record_size = 16 << 10;
    c.log.max_bytes = None;
    c.log.max_age = None;
    c.recorder = RecorderConfig::unlimited();
    c.recorder.static_machine_id_file = dir.join("no-static-id");
    c.recorder.machine_id_secret_file = dir.join("no-secret");
    c
}

/// The payload of record `i` (varied lengths, compressible).
pub fn payload(i: u64) -> Vec<u8> {
    format!("record {i:08} {}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// Writes records `from..to` with [`payload`] through a fresh recorder.
pub fn write(dir: &Path, segment_size: u64, from: u64, to: u64) {
    let rec = Recorder::open(&config(dir, segment_size)).unwrap();
    for i in from..to {
        let class = if i % 3 == 0 {
            "org.test/a/b"
        } else {
            "org.test/c/d"
        };
        rec.record(
            &RecordBuilder::parse(class, 1 + (i % 4) as i64)
                .unwrap()
                .payload(&payload(i)),
        )
        .unwrap();
    }
}

/// The record numbers in payloads of a decoded batch.
pub fn numbers(b: &crate::protocol::Batch) -> Vec<u64> {
    b.records.iter().map(|r| number(&r.payload)).collect()
}

/// The record number in a payload written by [`write`].
pub fn number(p: &[u8]) -> u64 {
    std::str::from_utf8(&p[7..15]).unwrap().parse().unwrap()
}
