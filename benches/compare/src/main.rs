//! Peer comparison: the same 100-byte append workload (one thread, sync off or as lazy as each
//! crate allows) through seglog's segment-log, the two baselines of `seglog-benches`, and the
//! crates a user might pick instead: commitlog, SQLite (rusqlite, bundled; WAL,
//! synchronous=NORMAL) with batched transactions and with one transaction per row, okaywal,
//! and yaque.
//!
//! Method (noisy 2-core machine): `ROUNDS` rounds; in each round every contender runs once in a
//! fresh temp dir, in a rotated order, so load drift hits all of them alike. A run: open
//! (untimed), warm up with 16 MiB worth of records or 0.3 s (untimed, lets seglog rotate once
//! and prepare its next segment), sleep 50 ms, then time `RECORDS` appends or `SECS` seconds,
//! whichever comes first, plus the final flush (no fsync unless the crate always does one).
//! Reported: median records/s over rounds, and the median of the per-round ratios.
//!
//! Bytes on disk: a separate run of 1M records, closed; "written" is st_size of every file
//! (for seglog, whose segments are preallocated, the frame bytes used plus segment headers),
//! "allocated" is st_blocks * 512 (includes preallocation: seglog's next segment, the unused
//! tail of its active one).
//!
//! Run: `cd benches/compare && cargo run --release` (env: COMPARE_ROUNDS=5,
//! COMPARE_RECORDS=2000000, COMPARE_SECS=3, COMPARE_ONLY=<substring>, COMPARE_NO_DISK=1).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use seglog_benches::{
    disk_usage, median, report_dir, synthetic_payload, temp_dir, BufWriterSink, RawMmapSink,
};

const SEGMENT: u64 = 16 << 20;
const PAYLOAD: usize = 100;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One contender, opened on a directory.
trait Runner {
    /// Appends up to `n` records of `payload`, stopping early after `deadline`; returns how
    /// many it appended. Includes whatever flush makes them reach the kernel.
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64>;
    /// Closes (drops) the writer.
    fn close(self: Box<Self>) -> Result<()>;
}

struct Contender {
    name: &'static str,
    note: &'static str,
    /// Opens the contender in a directory, sized for up to this many records.
    open: fn(&Path, u64) -> Result<Box<dyn Runner>>,
    /// Whether disk usage is meaningful (okaywal recycles its files after checkpoints).
    disk: bool,
}

#[inline]
fn past(i: u64, deadline: Instant) -> bool {
    i & 1023 == 0 && Instant::now() >= deadline
}

// ---- baselines ----

struct Raw(RawMmapSink);
impl Runner for Raw {
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64> {
        for i in 0..n {
            if past(i, deadline) {
                return Ok(i);
            }
            self.0.append(payload);
        }
        Ok(n)
    }
    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

struct BufW(Option<BufWriterSink>);
impl Runner for BufW {
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64> {
        let sink = self.0.as_mut().ok_or("closed")?;
        for i in 0..n {
            if past(i, deadline) {
                return Ok(i);
            }
            sink.append(payload);
        }
        Ok(n)
    }
    fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(s) = self.0.take() {
            s.finish();
        }
        Ok(())
    }
}

// ---- seglog ----

struct Seglog(segment_log::Log);
impl Runner for Seglog {
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64> {
        for i in 0..n {
            if past(i, deadline) {
                return Ok(i);
            }
            std::hint::black_box(self.0.append(payload)?);
        }
        Ok(n)
    }
    fn close(self: Box<Self>) -> Result<()> {
        drop(self.0);
        Ok(())
    }
}

fn open_seglog(dir: &Path, sync: segment_log::SyncPolicy) -> Result<Box<dyn Runner>> {
    let opts = segment_log::Options {
        sync,
        ..segment_log::Options::default()
    };
    Ok(Box::new(Seglog(segment_log::Log::open(dir, opts)?)))
}

// ---- commitlog ----

struct CommitLog(commitlog::CommitLog);
impl Runner for CommitLog {
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64> {
        for i in 0..n {
            if past(i, deadline) {
                self.0.flush()?;
                return Ok(i);
            }
            self.0
                .append_msg(payload)
                .map_err(|e| format!("commitlog append: {e:?}"))?;
        }
        self.0.flush()?;
        Ok(n)
    }
    fn close(self: Box<Self>) -> Result<()> {
        drop(self.0);
        Ok(())
    }
}

// ---- SQLite ----

struct Sqlite {
    conn: rusqlite::Connection,
    /// Rows per transaction (1 = autocommit, one transaction per row).
    batch: u64,
}

const INSERT: &str = "INSERT INTO log(payload) VALUES (?1)";

fn open_sqlite(dir: &Path, batch: u64) -> Result<Box<dyn Runner>> {
    let conn = rusqlite::Connection::open(dir.join("log.db"))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    assert_eq!(mode.to_lowercase(), "wal");
    conn.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE log (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);",
    )?;
    Ok(Box::new(Sqlite { conn, batch }))
}

impl Runner for Sqlite {
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64> {
        let mut stmt = self.conn.prepare_cached(INSERT)?;
        let mut i = 0;
        while i < n {
            if Instant::now() >= deadline {
                break;
            }
            let k = self.batch.min(n - i);
            if self.batch > 1 {
                self.conn.execute_batch("BEGIN")?;
            }
            for _ in 0..k {
                stmt.execute([payload])?;
            }
            if self.batch > 1 {
                self.conn.execute_batch("COMMIT")?;
            }
            i += k;
        }
        Ok(i)
    }
    fn close(self: Box<Self>) -> Result<()> {
        self.conn.close().map_err(|(_, e)| e)?;
        Ok(())
    }
}

// ---- okaywal ----

struct OkayWal {
    log: okaywal::WriteAheadLog,
    /// Records (chunks) per entry; every commit is an fsync.
    per_entry: u64,
}

impl Runner for OkayWal {
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64> {
        let mut i = 0;
        while i < n {
            if Instant::now() >= deadline {
                break;
            }
            let k = self.per_entry.min(n - i);
            let mut w = self.log.begin_entry()?;
            for _ in 0..k {
                w.write_chunk(payload)?;
            }
            w.commit()?;
            i += k;
        }
        Ok(i)
    }
    fn close(self: Box<Self>) -> Result<()> {
        self.log.shutdown()?;
        Ok(())
    }
}

// ---- yaque ----

struct Yaque(yaque::Sender);
impl Runner for Yaque {
    fn run(&mut self, payload: &[u8], n: u64, deadline: Instant) -> Result<u64> {
        for i in 0..n {
            if past(i, deadline) {
                return Ok(i);
            }
            self.0
                .try_send(payload)
                .map_err(|e| format!("yaque: {e}"))?;
        }
        Ok(n)
    }
    fn close(self: Box<Self>) -> Result<()> {
        drop(self.0);
        Ok(())
    }
}

fn contenders() -> Vec<Contender> {
    vec![
        Contender {
            name: "raw mmap loop (fresh pages)",
            note: "baseline: length+crc32c+payload into fresh mappings of preallocated files",
            open: |d, n| {
                Ok(Box::new(Raw(RawMmapSink::prepare(
                    d, n, PAYLOAD, SEGMENT, false,
                ))))
            },
            disk: true,
        },
        Contender {
            name: "raw mmap loop (pre-faulted)",
            note: "baseline: same, pages faulted in before timing",
            open: |d, n| {
                Ok(Box::new(Raw(RawMmapSink::prepare(
                    d, n, PAYLOAD, SEGMENT, true,
                ))))
            },
            disk: true,
        },
        Contender {
            name: "BufWriter<File> + crc32c",
            note: "baseline: same frames, 8 KiB buffer; not crash- or multi-process-safe",
            open: |d, _| {
                Ok(Box::new(BufW(Some(BufWriterSink::create(
                    &d.join("frames"),
                )))))
            },
            disk: true,
        },
        Contender {
            name: "seglog sync=never",
            note: "segment-log Log::append, default options",
            open: |d, _| open_seglog(d, segment_log::SyncPolicy::Never),
            disk: true,
        },
        Contender {
            name: "seglog sync=interval=100ms",
            note: "background msync every 100 ms (group commit)",
            open: |d, _| {
                open_seglog(
                    d,
                    segment_log::SyncPolicy::Interval(Duration::from_millis(100)),
                )
            },
            disk: true,
        },
        Contender {
            name: "commitlog 0.2",
            note: "append_msg per record, default LogOptions, flush at end",
            open: |d, _| {
                Ok(Box::new(CommitLog(commitlog::CommitLog::new(
                    commitlog::LogOptions::new(d),
                )?)))
            },
            disk: true,
        },
        Contender {
            name: "SQLite WAL, 1000 rows/txn",
            note: "rusqlite 0.32 bundled, synchronous=NORMAL, prepared INSERT",
            open: |d, _| open_sqlite(d, 1000),
            disk: true,
        },
        Contender {
            name: "SQLite WAL, 1 row/txn",
            note: "same, autocommit: one transaction per row",
            open: |d, _| open_sqlite(d, 1),
            disk: true,
        },
        Contender {
            name: "okaywal 0.3, 1 record/entry",
            note: "every commit fsyncs (the crate has no lazy mode)",
            open: |d, _| {
                Ok(Box::new(OkayWal {
                    log: okaywal::WriteAheadLog::recover(d, okaywal::LogVoid)?,
                    per_entry: 1,
                }))
            },
            disk: false,
        },
        Contender {
            name: "okaywal 0.3, 1000 records/entry",
            note: "one fsync per 1000 records",
            open: |d, _| {
                Ok(Box::new(OkayWal {
                    log: okaywal::WriteAheadLog::recover(d, okaywal::LogVoid)?,
                    per_entry: 1000,
                }))
            },
            disk: false,
        },
        Contender {
            name: "yaque 0.6",
            note: "Sender::try_send per record (one write(2) each)",
            open: |d, _| Ok(Box::new(Yaque(yaque::Sender::open(d.join("q"))?))),
            disk: true,
        },
    ]
}

/// `3.50M`, `32.1k`, `301`.
fn rate_str(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One timed run; returns records/s.
fn timed_run(c: &Contender, payload: &[u8], records: u64, secs: f64) -> Result<f64> {
    let dir = temp_dir("seglog-compare-");
    let warm = SEGMENT / seglog_benches::frame_len(PAYLOAD) as u64 + 1;
    let mut r = (c.open)(dir.path(), records + warm)?;
    r.run(payload, warm, Instant::now() + Duration::from_millis(300))?;
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let done = r.run(payload, records, start + Duration::from_secs_f64(secs))?;
    let elapsed = start.elapsed();
    r.close()?;
    Ok(done as f64 / elapsed.as_secs_f64())
}

/// After writing `n` records and closing: (bytes written, bytes allocated on disk). "Written"
/// is what the files hold (st_size), except for seglog, whose segment files are preallocated
/// to 16 MiB: there it is the frame bytes actually used (`stats().bytes_used`) plus headers.
fn disk_after(c: &Contender, payload: &[u8], n: u64) -> Result<(u64, u64)> {
    let dir = temp_dir("seglog-compare-disk-");
    let mut r = (c.open)(dir.path(), n)?;
    let done = r.run(payload, n, Instant::now() + Duration::from_secs(600))?;
    assert_eq!(done, n);
    r.close()?;
    let (apparent, allocated) = disk_usage(dir.path());
    if dir.path().join(segment_log::fs::SEGMENTS_DIR).is_dir() {
        let st = segment_log::stats(dir.path(), false)?;
        let headers = st.segments * segment_log::format::HEADER_LEN;
        return Ok((st.bytes_used + headers, allocated));
    }
    Ok((apparent, allocated))
}

fn main() -> Result<()> {
    let rounds: usize = env_or("COMPARE_ROUNDS", 5);
    let records: u64 = env_or("COMPARE_RECORDS", 2_000_000);
    let secs: f64 = env_or("COMPARE_SECS", 3.0);
    let only: Option<String> = std::env::var("COMPARE_ONLY").ok();
    let payload = synthetic_payload(PAYLOAD);
    let all = contenders();
    let list: Vec<&Contender> = all
        .iter()
        .filter(|c| only.as_ref().is_none_or(|o| c.name.contains(o.as_str())))
        .collect();

    // rates[contender][round]
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); list.len()];
    for round in 0..rounds {
        for k in 0..list.len() {
            let i = (k + round) % list.len();
            let c = list[i];
            match timed_run(c, &payload, records, secs) {
                Ok(rate) => {
                    eprintln!(
                        "round {round}: {:<34} {:>8.3} M records/s",
                        c.name,
                        rate / 1e6
                    );
                    rates[i].push(rate);
                }
                Err(e) => eprintln!("round {round}: {} failed: {e}", c.name),
            }
        }
    }

    let find = |needle: &str| list.iter().position(|c| c.name.starts_with(needle));
    let raw = find("raw mmap loop (fresh");
    let seg = find("seglog sync=never");
    let peers: Vec<usize> = (0..list.len())
        .filter(|&i| !list[i].name.starts_with("raw") && !list[i].name.starts_with("BufWriter"))
        .filter(|&i| !list[i].name.starts_with("seglog"))
        .collect();
    let med: Vec<f64> = rates.iter().map(|v| median(&mut v.clone())).collect();
    let best_peer = peers
        .iter()
        .copied()
        .filter(|&i| !med[i].is_nan())
        .max_by(|&a, &b| med[a].total_cmp(&med[b]));
    // Median of per-round ratios a/b (same round = same machine conditions).
    let ratio = |a: usize, b: usize| -> f64 {
        let mut v: Vec<f64> = rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect();
        median(&mut v)
    };

    let no_disk = std::env::var_os("COMPARE_NO_DISK").is_some();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "100-byte records, 1 thread, {rounds} rounds, up to {records} records or {secs} s per run; medians.\n"
    );
    let _ = writeln!(
        md,
        "| contender | records/s | MB/s (payload) | vs raw fresh loop | seglog is faster by | bytes written/record | bytes allocated/record (1M records) | notes |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for (i, c) in list.iter().enumerate() {
        let vs_raw = raw.map_or(String::from("-"), |r| format!("{:.2}x", ratio(i, r)));
        let seglog_vs = match seg {
            Some(s) if s != i => format!("{:.2}x", ratio(s, i)),
            _ => "-".into(),
        };
        let (written, allocated) = if no_disk || !c.disk {
            ("n/a".to_string(), "n/a".to_string())
        } else {
            match disk_after(c, &payload, 1_000_000) {
                Ok((w, a)) => (
                    format!("{:.1}", w as f64 / 1e6),
                    format!("{:.1}", a as f64 / 1e6),
                ),
                Err(e) => (format!("error: {e}"), "-".into()),
            }
        };
        let row = format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            c.name,
            rate_str(med[i]),
            med[i] * PAYLOAD as f64 / 1e6,
            vs_raw,
            seglog_vs,
            written,
            allocated,
            c.note
        );
        eprintln!("{row}");
        let _ = writeln!(md, "{row}");
    }
    if let (Some(s), Some(b)) = (seg, best_peer) {
        let _ = writeln!(md, "\nBest peer: {} ({} records/s); seglog/best peer = {:.2}x (median of per-round ratios).", list[b].name, rate_str(med[b]), ratio(s, b));
    }
    if let (Some(s), Some(r)) = (seg, raw) {
        let _ = writeln!(md, "seglog/raw fresh-mapping loop = {:.2}x.", ratio(s, r));
    }
    if let (Some(s), Some(bw)) = (seg, find("BufWriter")) {
        let _ = writeln!(md, "seglog/BufWriter = {:.2}x.", ratio(s, bw));
    }
    println!("{md}");
    let path = report_dir().join("compare.md");
    std::fs::write(&path, &md)?;
    println!("written to {}", path.display());
    Ok(())
}
