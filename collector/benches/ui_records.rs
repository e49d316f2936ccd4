//! Server time of the records page (`/ui/records`) over a store of 10,000 records: the
//! rendering the handler does (record query, total count, newer/older cursors, gap
//! placement, maud templates), without HTTP. Issue 17's budget: paging through all 10,000
//! records (100 pages of 100, following each page's "older" link) in under 200 ms.
//!
//! ```text
//! cargo bench -p collector --bench ui_records
//! ```
//!
//! The store is built once (two devices, 9,000 + 1,000 records, a gap of A's every 1,000
//! records) in a temporary directory on the machine's disk, queried from a warm page cache.

use std::hint::black_box;

use collector::fixtures;
use collector::store::{IngestMeta, Store};
use collector::ui::records_page_html;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::{Gap, GapReason};

const RECORDS: u64 = 10_000;
const BATCH: u64 = 500;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let (a, b) = (fixtures::private_id(1), fixtures::private_id(2));
    let mut received = fixtures::BASE_WALL_MS;
    let mut ingest = |p: &[u8; 32], start: u64, count: u64, gap: bool| {
        let mut batch = fixtures::batch(p, start, count, "40");
        if gap {
            batch.gaps.push(Gap {
                reason: GapReason::Trimmed,
                start: batch.first,
                end: batch.first,
                segments: 1,
                records: 0,
                bytes: 0,
                detail: "bench gap".into(),
            });
        }
        received += 1000;
        let meta = IngestMeta {
            body_bytes: 1000,
            raw_bytes: 10_000,
            received_ms: received,
        };
        store.ingest(&batch, meta).expect("ingest");
    };
    let mut start = 0;
    while start < 9_000 {
        ingest(&a, start, BATCH, start % 1000 == 0);
        start += BATCH;
    }
    ingest(&b, 0, 1_000, false);
    (dir, store)
}

/// The query of the "older" link of a rendered page, if it has one.
fn older(html: &str) -> Option<String> {
    let tag = html.split("id=\"next\" href=\"/ui/records?").nth(1)?;
    Some(tag.split('"').next()?.replace("&amp;", "&"))
}

fn bench(c: &mut Criterion) {
    let (_dir, store) = store();
    let now = fixtures::BASE_WALL_MS + 86_400_000;
    // Check once that the walk really covers every record.
    let mut pages = 0;
    let mut q = String::new();
    loop {
        let html = records_page_html(&store, &q, now);
        pages += 1;
        match older(&html) {
            Some(next) => q = next,
            None => break,
        }
    }
    assert_eq!(pages, RECORDS / 100, "pages of 100 over {RECORDS} records");

    let mut g = c.benchmark_group("ui_records");
    g.throughput(Throughput::Elements(100));
    g.bench_function("first_page", |bch| {
        bch.iter(|| black_box(records_page_html(&store, "", now)))
    });
    let middle = {
        let mut q = String::new();
        for _ in 0..50 {
            q = older(&records_page_html(&store, &q, now)).unwrap_or_default();
        }
        q
    };
    g.bench_function("middle_page_with_newer_and_count", |bch| {
        bch.iter(|| black_box(records_page_html(&store, &middle, now)))
    });
    g.bench_function("filtered_page_class_prefix", |bch| {
        bch.iter(|| {
            black_box(records_page_html(
                &store,
                "classification=org.example%2Fnet%2F*",
                now,
            ))
        })
    });
    // The parts of a middle page, to see where its time goes.
    let q = collector::api::parse_records_query(
        &collector::api::query_pairs(Some(&middle)).expect("query"),
        100,
        now,
    )
    .expect("query");
    g.bench_function("part_query_records", |bch| {
        bch.iter(|| black_box(store.query_records(&q).expect("page")))
    });
    g.bench_function("part_count_records", |bch| {
        bch.iter(|| black_box(store.count_records(&q).expect("count")))
    });
    let walk = || {
        let mut q = String::new();
        loop {
            let html = records_page_html(&store, &q, now);
            match older(&html) {
                Some(next) => q = next,
                None => break black_box(html.len()),
            }
        }
    };
    g.throughput(Throughput::Elements(RECORDS));
    g.sample_size(10);
    g.bench_function("walk_all_10000_records", |bch| bch.iter(walk));
    g.finish();
    // Wall time above includes waiting for a core on a busy machine; the thread's own CPU
    // time is the figure to compare across runs there.
    let mut cpu = Vec::new();
    for _ in 0..10 {
        let t0 = thread_cpu_ms();
        walk();
        cpu.push(thread_cpu_ms() - t0);
    }
    cpu.sort_by(f64::total_cmp);
    println!(
        "ui_records/walk_all_10000_records thread CPU time: median {:.1} ms, min {:.1} ms, max {:.1} ms (10 walks)",
        cpu[cpu.len() / 2],
        cpu[0],
        cpu[cpu.len() - 1]
    );
}

/// This thread's CPU time in milliseconds.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

criterion_group!(benches, bench);
criterion_main!(benches);
