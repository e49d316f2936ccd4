//! Quick single-thread append throughput check: `cargo run --release --example quick_append`.
use segment_log::{Log, Options};
use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let log = Log::open(
        dir.path(),
        Options {
            segment_size: 64 << 20,
            ..Options::default()
        },
    )
    .expect("open");
    let payload = [b'x'; 100];
    // Warm up: let the preparer get ahead.
    for _ in 0..1000 {
        log.append(&payload).expect("append");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let t = Instant::now();
    for _ in 0..n {
        log.append(&payload).expect("append");
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "{n} appends in {dt:.3}s = {:.2}M/s, rotations {}",
        n as f64 / dt / 1e6,
        log.rotations()
    );
}
