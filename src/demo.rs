//! `seglog demo`: the whole pipeline end to end on a temporary log.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use recorder::config::GlobalArgs;
use segment_log::{Entry, FrameKind, Log, Options, Position, Reader, ReaderOptions};

/// Run the pipeline end to end.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Use this log directory instead of a fresh temporary one.
    #[arg(long = "demo-dir")]
    demo_dir: Option<PathBuf>,
    /// Exit when the work is done instead of serving until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Records per writer thread.
    #[arg(long, default_value_t = 50_000)]
    records: u32,
}

/// Runs the demo.
pub fn run(args: DemoArgs, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match &args.demo_dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("seglog-demo-{}", std::process::id()));
            tmp
        }
    };
    println!("seglog demo: log directory {}", dir.display());
    let log = Arc::new(Log::open(&dir, Options::default())?);
    let start = Instant::now();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let log = log.clone();
            let n = args.records;
            std::thread::spawn(move || -> anyhow::Result<()> {
                for i in 0..n {
                    log.append(format!("writer {t} record {i}: demo telemetry line").as_bytes())?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let wrote = Instant::now() - start;
    let total = u64::from(args.records) * 4;
    println!(
        "wrote {total} records from 4 threads in {:.3}s ({:.2}M records/s)",
        wrote.as_secs_f64(),
        total as f64 / wrote.as_secs_f64() / 1e6
    );
    let mut reader = Reader::open(&dir, Position::default(), ReaderOptions::default())?;
    let (mut records, mut damage) = (0u64, 0u64);
    while let Some(e) = reader.next_entry()? {
        match e {
            Entry::Frame(f) if f.kind == FrameKind::Record => records += 1,
            Entry::Frame(_) => {}
            Entry::Damage(_) => damage += 1,
        }
    }
    let st = segment_log::stats(&dir, true)?;
    println!(
        "read back {records} records, {damage} damaged ranges; {} segments, {} bytes on disk",
        st.segments, st.bytes_on_disk
    );
    if args.demo_dir.is_none() {
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if records != total || damage != 0 {
        anyhow::bail!("demo mismatch: wrote {total}, read {records}, damage {damage}");
    }
    Ok(ExitCode::SUCCESS)
}
