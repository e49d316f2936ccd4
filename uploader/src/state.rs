//! The uploader's files in `<log dir>/upload/` and its persisted status (`state.json`).
//!
//! ```text
//! <log dir>/upload/            mode 0700 (2770 in a shared log; files 0600, or 0660)
//!   cursor.a, cursor.b         the cursor (see `cursor`)
//!   state.json                 status: last success/error, totals, daily budget
//!   uploader.lock              flock held by the one uploader of this log
//!   control.sock               the daemon's Unix socket (flush, status)
//!   opt-in                     marker: uploads are allowed (`seglog upload opt-in`)
//!   dead-letter/<id>.batch     bodies the server refused for good, and <id>.json the reason
//!   gap-report                 the gap report of a dead-lettered batch until acknowledged
//! ```
//!
//! `state.json` is informational except for the budget and the retention notes; it is
//! replaced atomically (temp + rename) and a damaged one is reset with a warning.

use std::fs;
use std::path::{Path, PathBuf};

use segment_log::Sharing;
use serde::{Deserialize, Serialize};

/// Sub-directory of the log directory holding the uploader's files.
pub const UPLOAD_DIR: &str = "upload";
/// Status file.
pub const STATE_FILE: &str = "state.json";
/// The one-uploader-per-log lock.
pub const LOCK_FILE: &str = "uploader.lock";
/// The daemon's control socket.
pub const SOCKET_FILE: &str = "control.sock";
/// Default opt-in marker.
pub const OPT_IN_FILE: &str = "opt-in";
/// Dead-letter folder.
pub const DEAD_LETTER_DIR: &str = "dead-letter";

/// `<log dir>/upload`.
pub fn upload_dir(log_dir: &Path) -> PathBuf {
    log_dir.join(UPLOAD_DIR)
}

/// Creates `dir` (the upload directory, or one inside it) if needed, with the mode of the
/// log's directories whatever the umask: 0700, or 2770 in a shared log (the policy of its
/// parent, see [`segment_log::perms`]; 0700 for missing parents). Returns the policy its files
/// follow.
pub fn ensure_dir(dir: &Path) -> std::io::Result<Sharing> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let sharing = match Sharing::of_dir(parent) {
        // No log yet (`upload opt-in` first): a new log is private, parents included.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sharing::Private,
        other => other?,
    };
    sharing.create_dir_all(dir)?;
    Ok(sharing)
}

/// Totals and last outcomes, persisted across runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// Last acknowledged batch (ms since the epoch).
    pub last_success_ms: Option<i64>,
    /// Last upload pass, whatever its outcome (when it started).
    pub last_attempt_ms: Option<i64>,
    /// When the last pass that did not fail ended: one that delivered everything, or
    /// stopped at held-back records or at the daily budget. The policy's `interval` counts
    /// from it, so a failed pass (server unreachable) does not delay the next one.
    pub last_pass_ms: Option<i64>,
    /// Passes so far (every call of `Uploader::pass`, failed ones included).
    pub passes: u64,
    /// Last error, as a sentence.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_ms: Option<i64>,
    /// The value of `passes` when it happened (so `status` can say "2 passes ago").
    pub last_error_pass: Option<u64>,
    /// When the running uploader will try again after a failed attempt (ms since the epoch),
    /// and whether the server asked for that time (`Retry-After`) or it is the uploader's
    /// own backoff (which a `flush` cuts short). Cleared once a batch is acknowledged or
    /// the pass ends; `status` shows it only while an uploader holds the lock.
    pub next_attempt_ms: Option<i64>,
    /// See `next_attempt_ms`.
    pub next_attempt_asked: bool,
    /// Records acknowledged by the server.
    pub delivered_records: u64,
    /// Payload bytes acknowledged.
    pub delivered_bytes: u64,
    /// Compressed bytes sent and acknowledged.
    pub delivered_wire_bytes: u64,
    /// Batches acknowledged.
    pub delivered_batches: u64,
    /// Batches moved to the dead-letter folder.
    pub dead_lettered_batches: u64,
    /// Records in them.
    pub dead_lettered_records: u64,
    /// Records removed by retention before they were uploaded (known counts).
    pub expired_records: u64,
    /// Segments found missing (trimmed or deleted) before upload.
    pub missing_segments: u64,
    /// Damaged ranges skipped (corrupt frames, bad headers, abandoned reservations).
    pub corrupt_ranges: u64,
    /// Frames that held no decodable record.
    pub undecodable_records: u64,
    /// Gap entries sent to the server.
    pub gaps_reported: u64,
    /// UTC day (days since the epoch) that `budget_used_bytes` counts.
    pub budget_day: i64,
    /// Wire bytes sent on `budget_day`.
    pub budget_used_bytes: u64,
    /// Record frames before the acknowledged cursor in its segment, when known: a trimmed
    /// gap that starts at the cursor subtracts them from the segment's trim-ledger count.
    pub cursor_records_before: Option<RecordsBefore>,
    /// The same for the end of the batch in flight (a rebuilt range that meets trimmed
    /// segments splits its gap there).
    pub inflight_records_before: Option<RecordsBefore>,
}

/// Record frames of a segment before a position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsBefore {
    /// The position's segment.
    pub segment: u64,
    /// The position's offset.
    pub offset: u64,
    /// Record frames of the segment before the offset.
    pub records: u64,
}

impl Status {
    /// Reads `state.json`; a missing file gives defaults, a damaged one defaults plus a
    /// warning.
    pub fn load(upload_dir: &Path) -> (Status, Option<String>) {
        let path = upload_dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(s) => (s, None),
                Err(e) => (
                    Status::default(),
                    Some(format!(
                        "{} is damaged ({e}); status totals were reset",
                        path.display()
                    )),
                ),
            },
            Err(_) => (Status::default(), None),
        }
    }

    /// Writes `state.json` atomically (no fsync: losing the last update costs a count).
    pub fn save(&self, upload_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        Sharing::of_dir(upload_dir)?.replace_file(&upload_dir.join(STATE_FILE), &bytes, false)
    }

    /// What is known about the records before the cursor and the in-flight batch's end.
    pub fn known_records_before(&self) -> [Option<RecordsBefore>; 2] {
        [self.cursor_records_before, self.inflight_records_before]
    }

    /// Bytes sent today (UTC), resetting the counter on a new day.
    pub fn budget_used(&mut self, now_ms: i64) -> u64 {
        let day = now_ms.div_euclid(86_400_000);
        if day != self.budget_day {
            self.budget_day = day;
            self.budget_used_bytes = 0;
        }
        self.budget_used_bytes
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_damage_resets_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let s = Status {
            delivered_records: 5,
            ..Status::default()
        };
        s.save(d.path()).unwrap();
        assert_eq!(Status::load(d.path()), (s, None));
        fs::write(d.path().join(STATE_FILE), b"{not json").unwrap();
        let (s, w) = Status::load(d.path());
        assert_eq!(s, Status::default());
        assert!(w.unwrap().contains("damaged"));
    }

    #[test]
    fn budget_resets_at_utc_midnight() {
        let mut s = Status::default();
        let day = 19_000 * 86_400_000;
        assert_eq!(s.budget_used(day + 5), 0);
        s.budget_used_bytes = 100;
        assert_eq!(s.budget_used(day + 86_399_999), 100);
        assert_eq!(s.budget_used(day + 86_400_000), 0);
    }
}
