//! sync=interval: before each `msync` the syncer unmaps the written pages behind the
//! appenders (`MADV_DONTNEED`; the file's pages stay in the page cache), so writeback does not
//! write-protect them one TLB-shootdown interrupt at a time. Writers still filling frames in
//! those pages fault the same page back in: nothing written may be lost or torn, whether it
//! was written before or after the unmapping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use segment_log::{
    FrameKind, Log, Options, OwnedEntry, Position, Reader, ReaderOptions, SyncPolicy,
};

#[test]
fn pages_unmapped_behind_the_writers_keep_every_frame() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 1 << 20,
        max_record_size: 4096,
        sync: SyncPolicy::Interval(Duration::from_millis(1)),
        ..Options::default()
    };
    let log = Log::open(d.path(), opts).unwrap();
    const THREADS: u8 = 4;
    const EACH: u32 = 4000;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Syncs as often as it can on top of the 1 ms syncer: pages are unmapped while
        // frames in them are still being written.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                log.sync().unwrap();
            }
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    for i in 0..EACH {
                        // 77..1500 bytes: frames straddle page boundaries everywhere.
                        let len = 77 + (i as usize * 131 + t as usize * 17) % 1424;
                        let mut p = vec![t; len];
                        p[..4].copy_from_slice(&i.to_le_bytes());
                        log.append(&p).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(log.rotations() >= 5, "{} rotations", log.rotations());
    log.sync().unwrap();
    drop(log);
    let opts = ReaderOptions {
        hole_timeout: Duration::from_millis(50),
        ..ReaderOptions::default()
    };
    let mut next = [0u32; THREADS as usize];
    let mut n = 0;
    for e in Reader::open(d.path(), Position::default(), opts).unwrap() {
        match e.unwrap() {
            OwnedEntry::Frame(f) => {
                assert_eq!(f.kind, FrameKind::Record);
                let t = f.payload[4];
                let i = u32::from_le_bytes(f.payload[..4].try_into().unwrap());
                assert!(f.payload[4..].iter().all(|&b| b == t), "torn frame {t}/{i}");
                assert_eq!(
                    f.payload.len(),
                    77 + (i as usize * 131 + t as usize * 17) % 1424
                );
                assert_eq!(i, next[t as usize], "thread {t} out of order");
                next[t as usize] += 1;
                n += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(n, u32::from(THREADS) * EACH);
}
