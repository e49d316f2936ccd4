//! Read-side SQL of the web view (`ui/`): total match counts and "newer" paging of the
//! records table, the gaps page, the loss summary, chart data (records over time by
//! classification and by severity, records by build and machine) and the per-device page.
//! Also the classification pattern (exact, or a prefix ending in `*`) shared with the API.
//!
//! The device list and device page queries are in `device_views.rs`.
//!
//! Kept apart from `query.rs` so the store's own queries and these can change independently;
//! the only hook there is [`class_condition`] and `where_clause` being visible here.

use rusqlite::types::Value;

use super::query::where_clause;
use super::{RecordQuery, Store, StoreError};

/// Checks a classification filter: exact, or a prefix ending in `*` (`org.example/*`); a
/// `*` anywhere else is refused.
pub fn check_class_pattern(v: &str) -> Result<(), String> {
    let body = v.strip_suffix('*').unwrap_or(v);
    if body.contains('*') {
        return Err(format!(
            "classification {v:?}: '*' is only allowed at the end (org.example/*)"
        ));
    }
    Ok(())
}

/// The WHERE condition and values of a classification filter (exact or `prefix*`). A prefix
/// is a range on the name: classifications are printable ASCII, so every name starting with
/// `p` lies in `[p, p + "\x7f")` under binary collation.
pub fn class_condition(v: &str) -> (&'static str, Vec<Value>) {
    match v.strip_suffix('*') {
        // `+r.class_ref`: no index on it, so the newest-first page walks `seq` downwards and
        // stops at the limit (the class index would fetch every match of several classes
        // and sort them all).
        Some(prefix) => (
            "+r.class_ref IN (SELECT id FROM classes WHERE name >= ? AND name < ?)",
            vec![
                Value::Text(prefix.to_owned()),
                Value::Text(format!("{prefix}\u{7f}")),
            ],
        ),
        None => (
            "r.class_ref = (SELECT id FROM classes WHERE name = ?)",
            vec![Value::Text(v.to_owned())],
        ),
    }
}

/// A gap entry as the gaps page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapView {
    /// Its row id (the page's anchor `gap-ID`, and the paging key).
    pub id: i64,
    /// Public log id of the device.
    pub log_id: [u8; 32],
    /// The device's machine id (of its newest stored record), empty when none is stored.
    pub machine_id: String,
    /// Reason name.
    pub reason: String,
    /// First missing position (segment, offset).
    pub start: (u64, u64),
    /// Where data resumes.
    pub end: (u64, u64),
    /// Whole segments missing.
    pub segments: u64,
    /// Records lost (0 = unknown).
    pub records: u64,
    /// Bytes skipped (0 = unknown).
    pub bytes: u64,
    /// Detail text from the device.
    pub detail: String,
    /// Reception time, ms.
    pub received_ms: i64,
}

/// What was lost, counted from every source the collector has, without double counting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LossSummary {
    /// Gap entries.
    pub gaps: u64,
    /// Records the gap entries name (where the device knew the count).
    pub gap_records: u64,
    /// Gap entries whose record count the device did not know.
    pub unknown_gaps: u64,
    /// Bytes and whole segments those cover (where known).
    pub unknown_bytes: u64,
    /// Whole segments in those.
    pub unknown_segments: u64,
    /// Records the devices' recorders refused (`recorder.dropped.*`, rate limits and
    /// probes): never written, so never in a gap.
    pub refused_on_devices: u64,
    /// Records retention removed before upload by the devices' own count
    /// (`uploader.expired_records`); the same records as `trimmed` gaps, so not added.
    pub expired_on_devices: u64,
}

impl LossSummary {
    /// Records known lost: those the gaps name (or, per device, the larger count of expired
    /// records its uploader kept, which covers trimmed gaps of unknown size) plus those
    /// refused on the devices.
    pub fn known_lost(&self) -> u64 {
        self.gap_records
            .max(self.expired_on_devices)
            .saturating_add(self.refused_on_devices)
    }
}

/// How chart series are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesBy {
    /// By classification.
    Classification,
    /// By severity.
    Severity,
}

/// Counts per time bucket and series key: `(bucket index, key, records)`.
pub type Buckets = Vec<(i64, String, u64)>;

/// Machine ids are shown with the per-device link; builds as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountBy {
    /// By build.
    Build,
    /// By machine id.
    Machine,
}

/// The device's machine id is its newest record's: the last record of its newest batch that
/// stored any (a batch's records are `first_seq..=last_seq`, `zone.rs`; index
/// `batches_log`), not a walk back through all records (PostgreSQL has no per-device
/// record index).
const GAP_COLUMNS: &str = "g.id, l.log_id,
    COALESCE((SELECT c.machine_id FROM records r JOIN contexts c ON c.id = r.context_ref
              WHERE r.seq = (SELECT b.last_seq FROM batches b
                             WHERE b.log_ref = g.log_ref AND b.last_seq IS NOT NULL
                             ORDER BY b.id DESC LIMIT 1)), ''),
    g.reason, g.start_segment, g.start_offset, g.end_segment, g.end_offset, g.segments,
    g.records, g.bytes, g.detail, g.received_ms";

/// Column `i` of a row of [`Store::rows`] as an integer (`None` for NULL).
pub(super) fn opt_int(row: &[Value], i: usize) -> Result<Option<i64>, StoreError> {
    match row.get(i) {
        Some(Value::Integer(v)) => Ok(Some(*v)),
        Some(Value::Null) => Ok(None),
        other => Err(StoreError::BadValue(format!(
            "column {i}: expected an integer, found {other:?}"
        ))),
    }
}

/// Column `i` as an integer.
pub(super) fn int(row: &[Value], i: usize) -> Result<i64, StoreError> {
    opt_int(row, i)?
        .ok_or_else(|| StoreError::BadValue(format!("column {i}: expected an integer, found NULL")))
}

/// Column `i` as text.
pub(super) fn text(row: &[Value], i: usize) -> Result<String, StoreError> {
    match row.get(i) {
        Some(Value::Text(t)) => Ok(t.clone()),
        other => Err(StoreError::BadValue(format!(
            "column {i}: expected text, found {other:?}"
        ))),
    }
}

/// Column `i` as exactly `N` bytes.
pub(super) fn bytes<const N: usize>(row: &[Value], i: usize) -> Result<[u8; N], StoreError> {
    match row.get(i) {
        Some(Value::Blob(b)) => b.as_slice().try_into().map_err(|_| {
            StoreError::BadValue(format!("column {i}: expected {N} bytes, found {}", b.len()))
        }),
        other => Err(StoreError::BadValue(format!(
            "column {i}: expected bytes, found {other:?}"
        ))),
    }
}

fn gap_from_row(r: &[Value]) -> Result<GapView, StoreError> {
    let u = |i: usize| -> Result<u64, StoreError> { Ok(int(r, i)? as u64) };
    Ok(GapView {
        id: int(r, 0)?,
        log_id: bytes(r, 1)?,
        machine_id: text(r, 2)?,
        reason: text(r, 3)?,
        start: (u(4)?, u(5)?),
        end: (u(6)?, u(7)?),
        segments: u(8)?,
        records: u(9)?,
        bytes: u(10)?,
        detail: text(r, 11)?,
        received_ms: int(r, 12)?,
    })
}

impl Store {
    pub(super) fn u64_sum(&self, sql: &str, args: Vec<Value>) -> Result<u64, StoreError> {
        // Values are u64 stored bit for bit as i64: summed here, saturating.
        let mut total = 0u64;
        for r in self.rows(sql, args)? {
            total = total.saturating_add(opt_int(&r, 0)?.unwrap_or(0) as u64);
        }
        Ok(total)
    }

    pub(super) fn pairs(
        &self,
        sql: &str,
        args: Vec<Value>,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.rows(sql, args)?
            .iter()
            .map(|r| Ok((text(r, 0)?, int(r, 1)? as u64)))
            .collect()
    }

    /// How many records match `q` in all (its cursor and limit ignored).
    pub fn count_records(&self, q: &RecordQuery) -> Result<u64, StoreError> {
        let q = RecordQuery {
            cursor: None,
            ..q.clone()
        };
        if let Some((sql, args)) = super::zone::count_from_zones(&q) {
            return self.u64_sum(&sql, args);
        }
        let f = self.record_filter(&q);
        let sql = format!("SELECT count(*) FROM {} {}", f.from, f.cond);
        self.u64_sum(&sql, f.args)
    }

    /// The cursor of the page of `limit` records just newer than `first_seq` (the newest
    /// record shown): `None` when nothing newer matches, `Some(None)` when the newer page is
    /// the first one (no cursor), else `Some(Some(cursor))`.
    pub fn newer_cursor(
        &self,
        q: &RecordQuery,
        first_seq: i64,
        limit: u32,
    ) -> Result<Option<Option<i64>>, StoreError> {
        let q = RecordQuery {
            cursor: None,
            ..q.clone()
        };
        let super::zone::Filter {
            from,
            cond,
            mut args,
            asc,
            zoned,
            ..
        } = self.record_filter(&q);
        let join = if cond.is_empty() { "WHERE" } else { "AND" };
        let sql = format!(
            "SELECT r.seq FROM {from} {cond} {join} r.seq > ? ORDER BY {asc} LIMIT {n}",
            // A literal: a bound LIMIT makes SQLite re-prepare on every bind (query.rs).
            n = u64::from(limit) + 1
        );
        args.push(Value::Integer(first_seq));
        let seqs = self
            .rows_of(&sql, args, zoned)?
            .iter()
            .map(|r| int(r, 0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match seqs.len() {
            0 => None,
            n if n <= limit as usize => Some(None),
            // The newer page holds seqs[0..limit]; it starts below seqs[limit - 1] + 1.
            _ => seqs.get(limit as usize - 1).map(|s| Some(s + 1)),
        })
    }

    /// Whether a record of device `log_id` matching `q` (cursor ignored) lies at or after
    /// `from` and before `to` (positions as (segment, offset)).
    pub fn any_record_between(
        &self,
        q: &RecordQuery,
        log_id: [u8; 32],
        from: (u64, u64),
        to: (u64, u64),
    ) -> Result<bool, StoreError> {
        let q = RecordQuery {
            cursor: None,
            log_id: Some(log_id),
            ..q.clone()
        };
        let (cond, mut args) = where_clause(&q);
        // where_clause always has the log_id condition here, so `cond` starts with WHERE.
        // Row values: on SQLite a range on the records_position index (log_ref, segment,
        // offset); PostgreSQL has no per-record position index: the batches of the device
        // whose position range meets [from, to) (index batches_positions), then their rows.
        let sql = if self.pg().is_some() {
            format!(
                "SELECT EXISTS (SELECT 1 FROM {from} {cond}
                 AND r.batch_ref + 0 = zb.id + 0
                 AND zb.log_ref = (SELECT id FROM logs WHERE log_id = ?)
                 AND (zb.pos_hi_segment, zb.pos_hi_offset) >= (?, ?)
                 AND (zb.pos_lo_segment, zb.pos_lo_offset) < (?, ?)
                 AND (r.segment, r.offset) >= (?, ?) AND (r.segment, r.offset) < (?, ?))",
                from = super::zone::zoned_from(super::zone::Dialect::Pg)
            )
        } else {
            format!(
                "SELECT EXISTS (SELECT 1 FROM records r {cond}
                 AND (r.segment, r.offset) >= (?, ?) AND (r.segment, r.offset) < (?, ?))"
            )
        };
        if self.pg().is_some() {
            args.push(Value::Blob(log_id.to_vec()));
            for v in [from.0, from.1, to.0, to.1] {
                args.push(Value::Integer(v as i64));
            }
        }
        for v in [from.0, from.1, to.0, to.1] {
            args.push(Value::Integer(v as i64));
        }
        let rows = self.rows(&sql, args)?;
        Ok(rows.first().map(|r| int(r, 0)).transpose()?.unwrap_or(0) != 0)
    }

    /// Gap entries, newest first, optionally of one device, before gap id `before`.
    pub fn gap_views(
        &self,
        log_id: Option<[u8; 32]>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<GapView>, StoreError> {
        let mut conds = Vec::new();
        let mut args = Vec::new();
        if let Some(l) = log_id {
            conds.push("l.log_id = ?");
            args.push(Value::Blob(l.to_vec()));
        }
        if let Some(b) = before {
            conds.push("g.id < ?");
            args.push(Value::Integer(b));
        }
        let cond = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT {GAP_COLUMNS} FROM gaps g JOIN logs l ON l.id = g.log_ref {cond}
             ORDER BY g.id DESC LIMIT {limit}"
        );
        self.rows(&sql, args)?
            .iter()
            .map(|r| gap_from_row(r))
            .collect()
    }

    /// Gap entries of these devices (at most `limit`, newest first), to place among records.
    pub fn gaps_of_logs(&self, logs: &[[u8; 32]], limit: u32) -> Result<Vec<GapView>, StoreError> {
        if logs.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; logs.len()].join(",");
        let sql = format!(
            "SELECT {GAP_COLUMNS} FROM gaps g JOIN logs l ON l.id = g.log_ref
             WHERE l.log_id IN ({marks}) ORDER BY g.id DESC LIMIT {limit}"
        );
        let args: Vec<Value> = logs.iter().map(|l| Value::Blob(l.to_vec())).collect();
        self.rows(&sql, args)?
            .iter()
            .map(|r| gap_from_row(r))
            .collect()
    }

    /// What was lost, optionally on one device.
    pub fn loss_summary(&self, log_id: Option<[u8; 32]>) -> Result<LossSummary, StoreError> {
        let (gap_cond, counter_cond, args) = match log_id {
            Some(l) => (
                "WHERE g.log_ref = (SELECT id FROM logs WHERE log_id = ?)",
                "AND log_ref = (SELECT id FROM logs WHERE log_id = ?)",
                vec![Value::Blob(l.to_vec())],
            ),
            None => ("", "", Vec::new()),
        };
        let gaps = self.u64_sum(
            &format!("SELECT count(*) FROM gaps g {gap_cond}"),
            args.clone(),
        )?;
        let gap_records = self.u64_sum(
            &format!("SELECT g.records FROM gaps g {gap_cond}"),
            args.clone(),
        )?;
        let and = if gap_cond.is_empty() { "WHERE" } else { "AND" };
        let unknown = format!("{gap_cond} {and} g.records = 0");
        let unknown_gaps = self.u64_sum(
            &format!("SELECT count(*) FROM gaps g {unknown}"),
            args.clone(),
        )?;
        let unknown_bytes = self.u64_sum(
            &format!("SELECT g.bytes FROM gaps g {unknown}"),
            args.clone(),
        )?;
        let unknown_segments = self.u64_sum(
            &format!("SELECT g.segments FROM gaps g {unknown}"),
            args.clone(),
        )?;
        // Counters: `name >= 'recorder.dropped.' AND name < 'recorder.dropped/'` is the
        // prefix as a range ('/' follows '.'), without LIKE's wildcards and case folding
        // (byte order on both backends: PostgreSQL's text columns are `COLLATE "C"`).
        let refused_on_devices = self.u64_sum(
            &format!(
                "SELECT value FROM device_counters WHERE name >= 'recorder.dropped.'
                 AND name < 'recorder.dropped/' {counter_cond}"
            ),
            args.clone(),
        )?;
        let expired_on_devices = self.u64_sum(
            &format!(
                "SELECT value FROM device_counters WHERE name = 'uploader.expired_records'
                 {counter_cond}"
            ),
            args,
        )?;
        Ok(LossSummary {
            gaps,
            gap_records,
            unknown_gaps,
            unknown_bytes,
            unknown_segments,
            refused_on_devices,
            expired_on_devices,
        })
    }

    /// Records created in `[since_ms, until_ms)` per bucket of `width_ms`, by series key
    /// (classification or severity number).
    pub fn buckets(
        &self,
        since_ms: i64,
        until_ms: i64,
        width_ms: i64,
        by: SeriesBy,
    ) -> Result<Buckets, StoreError> {
        let key = match by {
            SeriesBy::Classification => "(SELECT name FROM classes WHERE id = g.class_ref)",
            SeriesBy::Severity => "CAST(g.severity AS TEXT)",
        };
        let sql = format!(
            "SELECT g.b, {key}, g.n FROM (
                SELECT (r.created_ms - ?1) / ?3 AS b, r.class_ref, r.severity, count(*) AS n
                FROM {} GROUP BY b, r.class_ref, r.severity) g
             ORDER BY g.b, g.class_ref, g.severity",
            super::zone::created_window(self.dialect())
        );
        let args = [since_ms, until_ms, width_ms.max(1)]
            .map(Value::Integer)
            .to_vec();
        // Rows are per (bucket, class, severity): merge those of one series key.
        let mut out: Buckets = Vec::new();
        for row in self.rows(&sql, args)? {
            let (b, k, n) = (int(&row, 0)?, text(&row, 1)?, int(&row, 2)? as u64);
            match out.iter_mut().find(|(ob, ok, _)| *ob == b && *ok == k) {
                Some(e) => e.2 += n,
                None => out.push((b, k, n)),
            }
        }
        Ok(out)
    }

    /// Records created in `[since_ms, until_ms)` by build or by machine id, the `top` largest.
    pub fn counts_by(
        &self,
        since_ms: i64,
        until_ms: i64,
        by: CountBy,
        top: u32,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let col = match by {
            CountBy::Build => "c.build",
            CountBy::Machine => "c.machine_id",
        };
        let sql = format!(
            "SELECT {col}, CAST(sum(g.n) AS BIGINT) AS n FROM (
                SELECT r.context_ref, count(*) AS n FROM {} GROUP BY r.context_ref) g
             JOIN contexts c ON c.id = g.context_ref
             GROUP BY {col} ORDER BY n DESC, {col} LIMIT ?3",
            super::zone::created_window(self.dialect())
        );
        self.pairs(
            &sql,
            vec![
                Value::Integer(since_ms),
                Value::Integer(until_ms),
                Value::Integer(i64::from(top)),
            ],
        )
    }

    /// The oldest and newest creation times stored (for the "all" time range).
    pub fn created_range(&self) -> Result<Option<(i64, i64)>, StoreError> {
        // From the batches' ranges (store/zone.rs), not a scan of every record.
        let sql = "SELECT min(min_created_ms), max(max_created_ms) FROM batches";
        let rows = self.rows(sql, Vec::new())?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        Ok(match (opt_int(r, 0)?, opt_int(r, 1)?) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_patterns_are_exact_or_a_trailing_star() {
        assert!(check_class_pattern("org.example/*").is_ok());
        assert!(check_class_pattern("org.example/a/b").is_ok());
        assert!(check_class_pattern("org.*/a").is_err());
        let (cond, v) = class_condition("org.example/*");
        assert!(cond.contains(">="), "{cond}");
        assert_eq!(
            v,
            [
                Value::Text("org.example/".into()),
                Value::Text("org.example/\u{7f}".into())
            ]
        );
        assert_eq!(class_condition("a/b/c").1, [Value::Text("a/b/c".into())]);
    }

    #[test]
    fn known_losses_take_the_larger_of_gaps_and_expired_counters_plus_refusals() {
        let s = LossSummary {
            gap_records: 10,
            expired_on_devices: 4000,
            refused_on_devices: 7,
            ..LossSummary::default()
        };
        assert_eq!(s.known_lost(), 4007);
    }
}
