//! Quick reader scan throughput check: `cargo run --release --example quick_scan [MiB]`.
use segment_log::{Entry, Log, Options, Position, Reader, ReaderOptions};
use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    {
        let log = Log::open(
            dir.path(),
            Options {
                segment_size: 64 << 20,
                ..Options::default()
            },
        )
        .expect("open");
        let payload = [b'x'; 100];
        for _ in 0..(mib << 20) / 120 {
            log.append(&payload).expect("append");
        }
    }
    for round in 0..3 {
        let t = Instant::now();
        let mut r = Reader::open(dir.path(), Position::default(), ReaderOptions::default())
            .expect("reader");
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(e) = r.next_entry().expect("read") {
            if let Entry::Frame(f) = e {
                n += 1;
                bytes += f.payload.len() as u64;
            }
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {n} frames, {:.2} GB/s of segment, {:.1}M frames/s",
            (n * 120) as f64 / dt / 1e9,
            n as f64 / dt / 1e6
        );
        let _ = bytes;
    }
}
