//! Database size per million records of real log lines: the loghub samples (24,000 lines of
//! 12 systems, `/work/shared/data/loghub` or the directory given) cycled through 1,000,000
//! records from 10 devices in 1,000-record batches, then the size of the SQLite file after
//! a checkpoint, per table and index (`dbstat`). Then what each API record filter costs on
//! that database: the first page of 100 (`query_records`) and the total count
//! (`count_records`), warm cache, median of 5.
//!
//! ```sh
//! cargo run --release -p collector --example db_size -- [LOGHUB_DIR] [RECORDS]
//! ```

use collector::{fixtures, store};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/work/shared/data/loghub".to_owned());
    let total: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read(&p)?;
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    anyhow::ensure!(!lines.is_empty(), "no *.log lines in {dir}");
    let tmp = tempfile::tempdir()?;
    let s = store::Store::open(tmp.path())?;
    let (devices, per_batch) = (10u64, 1000u64);
    let mut payload_bytes = 0u64;
    let mut n = 0u64;
    let mut next = vec![0u64; devices as usize];
    while n < total {
        let d = (n / per_batch) % devices;
        let p = fixtures::private_id(d as u8);
        let start = next[d as usize];
        let mut b = fixtures::batch(&p, start, per_batch, "1");
        for (i, r) in b.records.iter_mut().enumerate() {
            let line = &lines[((n + i as u64) % lines.len() as u64) as usize];
            payload_bytes += line.len() as u64;
            r.payload = line.clone();
        }
        next[d as usize] += per_batch;
        n += per_batch;
        let meta = store::IngestMeta {
            body_bytes: 0,
            raw_bytes: 0,
            received_ms: 1_700_000_000_000,
        };
        s.ingest_owned(b, meta)?;
    }
    let filter_costs = filter_costs(&s)?;
    drop(s);
    let db = tmp.path().join(store::DB_FILE);
    let c = rusqlite::Connection::open(&db)?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let size = std::fs::metadata(&db)?.len();
    let per_m = |b: u64| b as f64 * 1e6 / n as f64 / (1 << 20) as f64;
    println!(
        "{n} records, {:.1} MiB of payload ({:.0} bytes/record): database {:.1} MiB per million records",
        payload_bytes as f64 / (1 << 20) as f64,
        payload_bytes as f64 / n as f64,
        per_m(size)
    );
    let mut st = c.prepare(
        "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC LIMIT 12",
    )?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (name, bytes) = row?;
        println!("  {name:<24} {:>8.1} MiB per million", per_m(bytes as u64));
    }
    println!("{filter_costs}");
    Ok(())
}

/// Median wall time of `f` over 5 runs (after one warm-up), ms.
fn median_ms<T>(mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let mut out = f()?;
    let mut t = Vec::new();
    for _ in 0..5 {
        let start = std::time::Instant::now();
        out = f()?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok((t[2], out))
}

/// First page and count of every record filter, as a Markdown table.
fn filter_costs(s: &store::Store) -> anyhow::Result<String> {
    use store::{RecordQuery, TimeBound};
    let newest = s
        .query_records(&RecordQuery {
            limit: 1,
            ..RecordQuery::default()
        })?
        .records;
    let r = newest
        .first()
        .ok_or_else(|| anyhow::anyhow!("no records"))?;
    // A record in the middle: its id, and a one-minute window of creation times.
    let mid = s
        .query_records(&RecordQuery {
            log_id: Some(fixtures::public_id(&fixtures::private_id(3))),
            cursor: Some(store::Cursor(r.seq / 2)),
            limit: 1,
            ..RecordQuery::default()
        })?
        .records;
    let m = mid
        .first()
        .ok_or_else(|| anyhow::anyhow!("no middle record"))?;
    let q = RecordQuery::default;
    let cases = [
        ("none", q()),
        (
            "classification (exact)",
            RecordQuery {
                classification: Some(m.classification.clone()),
                ..q()
            },
        ),
        (
            "classification prefix `org.example/*`",
            RecordQuery {
                classification: Some("org.example/*".into()),
                ..q()
            },
        ),
        (
            "severity",
            RecordQuery {
                severity: Some(m.severity),
                ..q()
            },
        ),
        (
            "machine_id (1 device of 10)",
            RecordQuery {
                machine_id: Some(m.machine_id.clone()),
                ..q()
            },
        ),
        (
            "build",
            RecordQuery {
                build: Some(m.build.clone()),
                ..q()
            },
        ),
        (
            "platform",
            RecordQuery {
                platform: Some(m.platform.clone()),
                ..q()
            },
        ),
        (
            "log_id",
            RecordQuery {
                log_id: Some(m.log_id),
                ..q()
            },
        ),
        (
            "since + until (one minute in the middle)",
            RecordQuery {
                since: Some(TimeBound(m.created_ms)),
                until: Some(TimeBound(m.created_ms + 60_000)),
                ..q()
            },
        ),
        (
            "record_id",
            RecordQuery {
                record_id: Some(m.record_id),
                ..q()
            },
        ),
        (
            "event_id",
            RecordQuery {
                event_id: m.event_id.or(Some([1; 16])),
                ..q()
            },
        ),
        (
            "severity, page at the middle cursor",
            RecordQuery {
                severity: Some(m.severity),
                cursor: Some(store::Cursor(m.seq)),
                ..q()
            },
        ),
    ];
    let mut out = String::from(
        "| filter | first page of 100 | matching records | count of all matches |\n| --- | --- | --- | --- |\n",
    );
    for (name, q) in cases {
        let q = RecordQuery { limit: 100, ..q };
        let (page_ms, _) = median_ms(|| Ok(s.query_records(&q)?))?;
        let (count_ms, n) = median_ms(|| Ok(s.count_records(&q)?))?;
        out.push_str(&format!(
            "| {name} | {page_ms:.2} ms | {n} | {count_ms:.1} ms |\n"
        ));
    }
    Ok(out)
}
