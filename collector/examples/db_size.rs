//! Database size per million records of real log lines: the loghub samples (24,000 lines of
//! 12 systems, `/work/shared/data/loghub` or the directory given) cycled through 1,000,000
//! records from 10 devices in 1,000-record batches, then the size of the SQLite file after
//! a checkpoint, per table and index (`dbstat`).
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
    Ok(())
}
