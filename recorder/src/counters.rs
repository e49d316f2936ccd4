//! Dropped and spooled counts by reason, persisted in `<log dir>/recorder/counters.json`.
//!
//! The file is JSON, `{"dropped": {"<reason>": n, ...}, "spooled": {"<reason>": n, ...}}`,
//! rewritten atomically (temp file + rename) under an flock (`File::lock`) on `counters.lock`. Writers
//! batch increments in memory and flush at most once per [`FLUSH_EVERY`] and when the
//! `Recorder` is dropped, so a crash loses at most that much counting. Read it with
//! [`read`] (`seglog journal stats` and the uploader do).
//!
//! Reasons used by seglog: `rate_limit_records`, `rate_limit_bytes` (recorder), and
//! `events_dir.<reason>` (the events-dir probe). Probes may add their own.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use segment_log::Sharing;
use serde::{Deserialize, Serialize};

/// Directory inside the log directory that holds the recorder's shared state.
pub const STATE_DIR: &str = "recorder";
/// The counters file inside [`STATE_DIR`].
pub const COUNTERS_FILE: &str = "counters.json";
const COUNTERS_LOCK: &str = "counters.lock";
/// How often a writer flushes its counts at most (one lock + rewrite per second at worst).
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Persisted counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Records refused, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Records kept but held back from upload (rate limit strategy `spool`), by reason.
    pub spooled: BTreeMap<String, u64>,
    /// The latest release time of a spooled record (wall ms since the Unix epoch): until
    /// then the uploader holds records back. Absent when nothing was ever spooled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spooled_until_ms: Option<i64>,
}

impl Counters {
    /// Total dropped.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Total spooled (held back).
    pub fn total_spooled(&self) -> u64 {
        self.spooled.values().sum()
    }

    fn add(&mut self, other: &Counters) {
        for (k, v) in &other.dropped {
            *self.dropped.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.spooled {
            *self.spooled.entry(k.clone()).or_default() += v;
        }
        self.spooled_until_ms = self.spooled_until_ms.max(other.spooled_until_ms);
    }

    fn is_empty(&self) -> bool {
        self.dropped.is_empty() && self.spooled.is_empty() && self.spooled_until_ms.is_none()
    }
}

/// Says when spooled records are released: `until <RFC 3339> (in 4m 3s)` while some are
/// still held back at `now_ms`, `released <RFC 3339> (2m ago)` after that.
pub fn describe_release(until_ms: i64, now_ms: i64) -> String {
    let at = u64::try_from(until_ms)
        .ok()
        .and_then(|ms| std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .map_or_else(
            || format!("{until_ms} ms"),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        );
    let d = |ms: i64| humantime::format_duration(Duration::from_secs(ms.unsigned_abs() / 1000));
    if until_ms > now_ms {
        format!("until {at} (in {})", d(until_ms - now_ms))
    } else {
        format!("released {at} ({} ago)", d(now_ms.saturating_sub(until_ms)))
    }
}

/// Wall time now in ms since the Unix epoch.
pub fn now_wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The counters file of log directory `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join(COUNTERS_FILE)
}

/// Reads the persisted counts of log directory `dir` (all zero when none were written).
/// Takes no lock: the file is replaced atomically.
pub fn read(dir: &Path) -> std::io::Result<Counters> {
    read_file(&path(dir))
}

fn read_file(p: &Path) -> std::io::Result<Counters> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", p.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Counters::default()),
        Err(e) => Err(e),
    }
}

/// Creates `<log dir>/recorder` (0700, or 2770 in a shared log) and returns it with the
/// log's permission policy, which every file made in it follows.
pub(crate) fn ensure_state_dir(dir: &Path) -> std::io::Result<(PathBuf, Sharing)> {
    let d = dir.join(STATE_DIR);
    match Sharing::of_dir(dir).and_then(|s| s.create_dir_all(&d).map(|()| s)) {
        Ok(s) => Ok((d, s)),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("create {}: {e}", d.display()),
        )),
    }
}

/// Adds `delta` to the persisted counts of `dir` (locks, reads, adds, rewrites).
pub fn add(dir: &Path, delta: &Counters) -> std::io::Result<()> {
    if delta.is_empty() {
        return Ok(());
    }
    let (state, sharing) = ensure_state_dir(dir)?;
    let lock = sharing.open_or_create(
        std::fs::OpenOptions::new().write(true),
        &state.join(COUNTERS_LOCK),
    )?;
    lock.lock()?;
    let result = (|| {
        let file = state.join(COUNTERS_FILE);
        // A damaged file is replaced rather than blocking counting forever.
        let mut c = read_file(&file).unwrap_or_default();
        c.add(delta);
        // Under the lock: this process is the only writer of the file.
        let bytes = serde_json::to_vec_pretty(&c).map_err(std::io::Error::other)?;
        sharing.replace_file(&file, &bytes, true)
    })();
    let _ = lock.unlock();
    result
}

/// In-memory counts of one writer, flushed to the shared file.
#[derive(Debug)]
pub(crate) struct PendingCounters {
    dir: PathBuf,
    inner: Mutex<(Counters, Instant)>,
}

impl PendingCounters {
    pub(crate) fn new(dir: &Path) -> Self {
        PendingCounters {
            dir: dir.to_path_buf(),
            inner: Mutex::new((Counters::default(), Instant::now())),
        }
    }

    /// Counts `n` under `reason` (dropped or spooled); flushes when due.
    pub(crate) fn count(&self, reason: &str, n: u64, spooled: bool) {
        let due = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let map = if spooled {
                &mut g.0.spooled
            } else {
                &mut g.0.dropped
            };
            *map.entry(reason.to_string()).or_default() += n;
            g.1.elapsed() >= FLUSH_EVERY
        };
        if due {
            let _ = self.flush();
        }
    }

    /// Counts one record spooled under `reason`, held back until wall time `until_ms`.
    pub(crate) fn count_spooled(&self, reason: &str, until_ms: i64) {
        {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.0.spooled_until_ms = g.0.spooled_until_ms.max(Some(until_ms));
        }
        self.count(reason, 1, true);
    }

    /// Writes what is pending.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        let delta = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.1 = Instant::now();
            std::mem::take(&mut g.0)
        };
        let r = add(&self.dir, &delta);
        if r.is_err() {
            // Keep the counts for the next try.
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.0.add(&delta);
        }
        r
    }
}

impl Drop for PendingCounters {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_writers_and_persist() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), Counters::default());
        {
            let a = PendingCounters::new(d.path());
            let b = PendingCounters::new(d.path());
            a.count("rate_limit_records", 2, false);
            b.count("rate_limit_records", 3, false);
            b.count("rate_limit_bytes", 1, true);
            a.count_spooled("rate_limit_records", 5_000);
            b.count_spooled("rate_limit_records", 4_000);
        }
        let c = read(d.path()).unwrap();
        assert_eq!(c.dropped.get("rate_limit_records"), Some(&5));
        assert_eq!(c.spooled.get("rate_limit_bytes"), Some(&1));
        assert_eq!(c.spooled.get("rate_limit_records"), Some(&2));
        assert_eq!(c.total_spooled(), 3);
        assert_eq!(c.spooled_until_ms, Some(5_000), "the latest release time");
        assert_eq!(c.total_dropped(), 5);
    }

    #[test]
    fn release_times_read_as_future_or_past() {
        let s = describe_release(1_700_000_060_000, 1_700_000_000_000);
        assert_eq!(s, "until 2023-11-14T22:14:20Z (in 1m)");
        let s = describe_release(1_700_000_000_000, 1_700_000_120_000);
        assert_eq!(s, "released 2023-11-14T22:13:20Z (2m ago)");
    }

    #[test]
    fn a_damaged_counters_file_is_an_error_to_readers_and_replaced_by_writers() {
        let d = tempfile::tempdir().unwrap();
        ensure_state_dir(d.path()).unwrap();
        std::fs::write(path(d.path()), b"{not json").unwrap();
        assert!(read(d.path()).is_err());
        let mut delta = Counters::default();
        delta.dropped.insert("x".into(), 1);
        add(d.path(), &delta).unwrap();
        assert_eq!(read(d.path()).unwrap().dropped.get("x"), Some(&1));
    }
}
