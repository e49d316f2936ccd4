//! Deterministic batches for tests, benches, the fuzz seed corpus and the demo. Not part of
//! the stable API.

use protocol::{self, Batch, Context, Gap, GapReason, Record};
use segment_log::Position;
use sha2::{Digest, Sha256};

/// Classifications the fixture records cycle through.
pub const CLASSES: [&str; 3] = [
    "org.example/hello/world",
    "org.example/kernel/warning",
    "org.example/net/stats",
];
/// Wall-clock time of record 0 of every fixture log (2023-11-14T22:13:20Z).
pub const BASE_WALL_MS: i64 = 1_700_000_000_000;
/// Bytes between fixture record positions.
pub const STRIDE: u64 = 128;

/// A private log id derived from `n`.
pub fn private_id(n: u8) -> [u8; 32] {
    Sha256::digest([b's', b'e', b'g', n]).into()
}

/// sha256 of the private id.
pub fn public_id(private: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(private).into()
}

/// The machine id of fixture log `private` (32 hex characters).
pub fn machine_id(private: &[u8; 32]) -> String {
    hex::encode(&public_id(private)[..16])
}

/// The context every record of fixture log `private` uses, keys as PROTOCOL.md lists them.
pub fn context(private: &[u8; 32], build: &str) -> Context {
    let f = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    Context {
        fields: vec![
            f("machine_id", &machine_id(private)),
            f("boot_id", &hex::encode(&private[..16])),
            f("arch", "x86_64"),
            f("host_type", "Example Inc.|Board 9000|1.0"),
            f("build", build),
            f("system_name", "exampleos"),
            f("kernel_version", "6.1.0-test"),
            f("board_name", "blank|blank"),
            f("cpu_model", "Example CPU"),
            f("bios_version", "1.2.3"),
            f("record_format_version", "2"),
            f("site", "lab <3>"),
        ],
    }
}

/// Position of record `index` of a fixture log: segment `1 + index / 1000`.
pub fn position(index: u64) -> Position {
    Position {
        segment: 1 + index / 1000,
        offset: 64 + (index % 1000) * STRIDE,
    }
}

/// The payload of record `index`.
pub fn payload(index: u64) -> Vec<u8> {
    format!("record {index}: temperature={} fan=on", 40 + index % 17).into_bytes()
}

/// A batch of fixture log `private` holding records `start .. start + count`, with build
/// `build`. Every 10th record has an event id; severities cycle 1 to 4.
pub fn batch(private: &[u8; 32], start: u64, count: u64, build: &str) -> Batch {
    let records = (start..start + count)
        .map(|i| Record {
            position: position(i),
            context: 0,
            classification: CLASSES[(i % 3) as usize].to_owned(),
            severity: (i % 4) as u8 + 1,
            wall_ms: BASE_WALL_MS + i as i64 * 1000,
            boot_ms: 5_000 + i * 1000,
            event_id: (i % 10 == 0).then(|| {
                let mut e = [0u8; 16];
                e[..8].copy_from_slice(&i.to_le_bytes());
                e
            }),
            payload: payload(i),
        })
        .collect();
    Batch {
        public_log_id: public_id(private),
        first: position(start),
        last: position(start + count),
        contexts: vec![context(private, build)],
        gaps: Vec::new(),
        counters: vec![("recorder.dropped.rate_limit".to_owned(), start)],
        records,
    }
}

/// Adds a gap entry covering the batch's first position (no records lost in between).
pub fn with_gap(mut b: Batch, reason: GapReason, records: u64) -> Batch {
    b.gaps.push(Gap {
        reason,
        start: b.first,
        end: b.first,
        segments: 0,
        records,
        bytes: 0,
        detail: "fixture gap".to_owned(),
    });
    b
}

/// The HTTP body of `b` (zstd level 3).
pub fn body(b: &Batch) -> Vec<u8> {
    match protocol::encode_batch(b, 3) {
        Ok(v) => v,
        Err(e) => panic!("fixture batch does not encode: {e}"),
    }
}

/// The upload path of fixture log `private`, with a leading `/`.
pub fn path(private: &[u8; 32]) -> String {
    format!("/{}", protocol::upload_path(private))
}

/// A zstd frame that expands to `total` zero bytes, compressed in 1 MiB steps (level 1
/// keeps the window at 2^19, inside the protocol's limit) so building it needs no big buffer.
pub fn zip_bomb(total: u64) -> Vec<u8> {
    use std::io::Write;
    let chunk = vec![0u8; 1 << 20];
    let build = || -> std::io::Result<Vec<u8>> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1)?;
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            enc.write_all(chunk.get(..n).unwrap_or_default())?;
            left -= n as u64;
        }
        enc.finish()
    };
    match build() {
        Ok(v) => v,
        Err(e) => panic!("building the zip bomb: {e}"),
    }
}
