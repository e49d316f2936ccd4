//! Ingest throughput of the collector on loopback: `DEVICES` threads each upload `BATCHES`
//! batches of `RECORDS` records (fixture records, ~40-byte payloads) to a fresh collector,
//! then resend them all once (duplicates). Prints batches/s and records/s for both passes,
//! and for comparison the same batches written straight into a `Store` (no HTTP, no zstd),
//! from `DEVICES` threads at once so that the writer's group commit works as it does behind
//! the HTTP server. A 429 is retried after its `Retry-After` and counted.
//!
//! ```sh
//! cargo run --release -p collector --example ingest_load -- [DEVICES] [BATCHES] [RECORDS]
//! ```
//!
//! Each client thread keeps one connection open and reads every answer to its end, as the
//! uploader does (a response left unread closes the connection: a TCP connect and accept per
//! upload); `INGEST_LOAD_NEW_CONNECTIONS=1` measures that older client. The client threads run
//! in this process on the same cores, so the CPU time of the collector's own threads (the
//! runtime's workers and blocking pool, the writer) is printed apart from the whole process.
//!
//! `INGEST_LOAD_DROP_INDEXES=name,name` drops those indexes before the direct store pass, to
//! measure what each costs (SQLite).
//!
//! `INGEST_LOAD_POSTGRES=1` measures the PostgreSQL store instead: a throwaway local server
//! (`initdb` into a temp dir, default durable settings: fsync on, synchronous commit) with a
//! fresh database for the HTTP passes and another for the direct pass;
//! `INGEST_LOAD_PG_SETTINGS=name=value,...` passes server settings (`-c`). Each pass then
//! also prints the server's own CPU seconds (its processes, from `/proc`).

use std::time::Instant;

use collector::{fixtures, Server, ServerConfig};

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (devices, batches, records) = (arg(1, 4), arg(2, 100), arg(3, 1000));
    let dir = tempfile::tempdir()?;
    let pg = if std::env::var_os("INGEST_LOAD_POSTGRES").is_some() {
        // INGEST_LOAD_PG_SETTINGS="shared_buffers=1GB,max_wal_size=8GB": server settings.
        let settings = std::env::var("INGEST_LOAD_PG_SETTINGS").unwrap_or_default();
        let settings: Vec<&str> = settings.split(',').filter(|s| !s.is_empty()).collect();
        let server = collector::pg_server::PgServer::start(&settings)
            .map_err(|e| anyhow::anyhow!("starting PostgreSQL: {e}"))?;
        println!(
            "PostgreSQL store (local server on 127.0.0.1:{})",
            server.port()
        );
        Some(server)
    } else {
        None
    };
    let fresh_pg = || -> anyhow::Result<Option<String>> {
        pg.as_ref()
            .map(|s| s.create_database().map_err(|e| anyhow::anyhow!(e)))
            .transpose()
    };
    let mut cfg = ServerConfig::new(dir.path().join("data"));
    cfg.postgres = fresh_pg()?;
    cfg.listen = "127.0.0.1:0".parse()?;
    let server = Server::start(cfg)?;
    let url = server.url();

    // Bodies are built before timing: this measures the server, not the encoder.
    let bodies: Vec<Vec<(String, String, Vec<u8>)>> = (0..devices)
        .map(|d| {
            let p = fixtures::private_id(d as u8);
            (0..batches)
                .map(|i| {
                    let b = fixtures::batch(&p, i * records, records, "1");
                    (fixtures::path(&p), b.id().to_hex(), fixtures::body(&b))
                })
                .collect()
        })
        .collect();
    let wire: usize = bodies.iter().flatten().map(|(_, _, b)| b.len()).sum();

    let shed = std::sync::atomic::AtomicU64::new(0);
    let server_cpu = || pg.as_ref().and_then(|s| s.cpu_seconds());
    let reuse = std::env::var_os("INGEST_LOAD_NEW_CONNECTIONS").is_none();
    for pass in ["new", "duplicate"] {
        let (t, cpu0, server0) = (Instant::now(), cpu_seconds(), collector_cpu_seconds());
        let pg_cpu0 = server_cpu();
        std::thread::scope(|s| {
            for dev in &bodies {
                let (url, shed) = (&url, &shed);
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    for (path, id, body) in dev {
                        loop {
                            let mut r = agent
                                .post(format!("{url}{path}"))
                                .header("Content-Type", protocol::CONTENT_TYPE)
                                .header("Content-Encoding", "zstd")
                                .header(protocol::HEADER_BATCH_ID, id)
                                .send(body)
                                .expect("upload failed");
                            if reuse {
                                // Read to the end, so the connection serves the next upload.
                                let _ = r.body_mut().read_to_vec();
                            }
                            if r.status() == 429 {
                                shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let secs = r
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.parse().ok())
                                    .unwrap_or(1);
                                std::thread::sleep(std::time::Duration::from_secs(secs));
                                continue;
                            }
                            assert_eq!(r.status(), 200, "upload failed");
                            break;
                        }
                    }
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let (cpu, server) = (cpu_seconds() - cpu0, collector_cpu_seconds() - server0);
        let n = (devices * batches) as f64;
        println!(
            "{pass:>9}: {devices} devices x {batches} batches x {records} records: {:.0} batches/s, {:.0} records/s, {:.1} MB/s on the wire; CPU {cpu:.2} s, of it the collector's threads {server:.2} s ({:.0} batches per collector CPU second)",
            n / secs,
            n * records as f64 / secs,
            wire as f64 / secs / 1e6,
            n / server.max(0.01)
        );
        report_server_cpu(pg_cpu0, server_cpu(), n * records as f64);
    }
    println!(
        "      429: {} uploads shed and retried",
        shed.load(std::sync::atomic::Ordering::Relaxed)
    );
    server.shutdown()?;

    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let store = match fresh_pg()? {
        Some(url) => collector::store::Store::open_postgres(&url, Default::default())?,
        None => collector::store::Store::open(&dir.path().join("direct"))?,
    };
    // Measuring what each index costs: INGEST_LOAD_DROP_INDEXES=records_record_id,... drops
    // those indexes of the direct store before the pass (the HTTP passes keep them all).
    if let Ok(drop) = std::env::var("INGEST_LOAD_DROP_INDEXES") {
        let c = rusqlite::Connection::open(dir.path().join("direct/collector.sqlite3"))?;
        for i in drop.split(',').filter(|s| !s.is_empty()) {
            c.execute_batch(&format!("DROP INDEX {i}"))?;
        }
    }
    let decoded: Vec<Vec<protocol::Batch>> = (0..devices)
        .map(|d| {
            let p = fixtures::private_id(d as u8);
            (0..batches)
                .map(|i| fixtures::batch(&p, i * records, records, "1"))
                .collect()
        })
        .collect();
    let (t, cpu0, writer0) = (Instant::now(), cpu_seconds(), collector_cpu_seconds());
    let pg_cpu0 = server_cpu();
    let commits0 = store
        .writer_stats()
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);
    std::thread::scope(|s| {
        for dev in decoded {
            let store = &store;
            s.spawn(move || {
                for b in dev {
                    let meta = collector::store::IngestMeta {
                        body_bytes: 0,
                        raw_bytes: 0,
                        received_ms: 0,
                    };
                    store.ingest_owned(b, meta).expect("ingest failed");
                }
            });
        }
    });
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    // The HTTP server is gone: the store's writer is the one collector thread left.
    let writer = collector_cpu_seconds() - writer0;
    let total = devices * batches;
    let n = (total * records) as f64;
    let commits = store
        .writer_stats()
        .commits
        .load(std::sync::atomic::Ordering::Relaxed)
        - commits0;
    println!(
        "    store: {total} batches straight into {backend} from {devices} threads: {:.0} batches/s, {:.0} records/s ({:.0} records per CPU second; the writer thread {:.0} µs of CPU per batch), {commits} commits",
        total as f64 / secs,
        n / secs,
        n / cpu,
        writer / total as f64 * 1e6
    );
    report_server_cpu(pg_cpu0, server_cpu(), n);
    Ok(())
}

/// PostgreSQL's own CPU time over a pass (its server processes, not this one).
fn report_server_cpu(before: Option<f64>, after: Option<f64>, records: f64) {
    if let (Some(a), Some(b)) = (before, after) {
        let secs = (b - a).max(0.01);
        println!(
            "           PostgreSQL server: {secs:.2} CPU s, {:.0} records per server CPU second",
            records / secs
        );
    }
}

/// User + system CPU time of the collector's threads still running (named
/// `seglog-collector...`: the runtime's workers and blocking pool, the writer), from
/// /proc/self/task. A blocking-pool thread that ended during a pass takes its time with it.
fn collector_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains("(seglog-collect"))
        .map(|stat| stat_cpu(&stat))
        .sum()
}

/// User + system CPU seconds of a /proc stat line (100 ticks per second).
fn stat_cpu(stat: &str) -> f64 {
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// User + system CPU time of this process (from /proc/self/stat, 100 ticks per second), so
/// the figure means something on a shared, busy machine.
fn cpu_seconds() -> f64 {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}
