//! Read side: filtered record queries (newest first, keyset pagination), gaps and stats.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, Row};

use super::{zone, Store, StoreError};

/// A time filter on the device's creation time, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBound(pub i64);

/// Keyset pagination: only records received before this one (`seq` is reception order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

/// A validated record query; see `api::parse_records_query` for the HTTP parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordQuery {
    /// Classification: exact, or a prefix ending in `*` (`org.example/*`).
    pub classification: Option<String>,
    /// Exact severity.
    pub severity: Option<u8>,
    /// Severities from .0 to .1 inclusive (`priority`, journalctl's `-p`).
    pub priority: Option<(u8, u8)>,
    /// Boot id, 32 lower-case hex characters as stored.
    pub boot_id: Option<String>,
    /// Exact machine id.
    pub machine_id: Option<String>,
    /// Exact build.
    pub build: Option<String>,
    /// Exact platform (`sys_vendor|product_name|product_version`).
    pub platform: Option<String>,
    /// Created at or after (inclusive).
    pub since: Option<TimeBound>,
    /// Created before (exclusive).
    pub until: Option<TimeBound>,
    /// Public log id.
    pub log_id: Option<[u8; 32]>,
    /// Event id.
    pub event_id: Option<[u8; 16]>,
    /// Record id.
    pub record_id: Option<[u8; 16]>,
    /// Return payloads.
    pub include_payload: bool,
    /// Most records returned.
    pub limit: u32,
    /// Continue after a previous page.
    pub cursor: Option<Cursor>,
    /// Stop adding records once this many payload bytes are in the page.
    pub max_payload_bytes: u64,
}

impl Default for RecordQuery {
    fn default() -> Self {
        RecordQuery {
            classification: None,
            severity: None,
            priority: None,
            boot_id: None,
            machine_id: None,
            build: None,
            platform: None,
            since: None,
            until: None,
            log_id: None,
            event_id: None,
            record_id: None,
            include_payload: true,
            limit: crate::config::MAX_QUERY_LIMIT,
            cursor: None,
            max_payload_bytes: 32 << 20,
        }
    }
}

/// One stored record with its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    /// Reception order (the pagination key).
    pub seq: i64,
    /// Record id.
    pub record_id: [u8; 16],
    /// Public log id.
    pub log_id: [u8; 32],
    /// Batch that delivered it.
    pub batch_id: [u8; 32],
    /// Segment number on the device.
    pub segment: u64,
    /// Offset in the segment.
    pub offset: u64,
    /// Classification.
    pub classification: String,
    /// Severity.
    pub severity: u8,
    /// Device wall-clock creation time, ms.
    pub created_ms: i64,
    /// Boot-relative creation time, ms.
    pub boot_ms: u64,
    /// Event id.
    pub event_id: Option<[u8; 16]>,
    /// Reception time, ms.
    pub received_ms: i64,
    /// Payload size in bytes.
    pub payload_len: u64,
    /// Payload, when requested.
    pub payload: Option<Vec<u8>>,
    /// Machine id.
    pub machine_id: String,
    /// Boot id.
    pub boot_id: String,
    /// Architecture.
    pub arch: String,
    /// Platform (host type).
    pub platform: String,
    /// OS build.
    pub build: String,
    /// OS name.
    pub system_name: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Record format version.
    pub record_format_version: String,
    /// All context fields as received; shared by the records of one context (a page of
    /// 100 records from one device parses its context once).
    pub context: Context,
}

/// A context's fields as received, (key, value) in order.
pub type Context = std::sync::Arc<[(String, String)]>;

/// Parses a context's stored fields (JSON pairs), reusing `last` when the same text was
/// parsed for the previous record: consecutive records mostly share their context.
pub(super) fn parse_context(fields: &str, last: &mut Option<(String, Context)>) -> Context {
    if let Some((text, parsed)) = last {
        if text == fields {
            return parsed.clone();
        }
    }
    let parsed: Context = serde_json::from_str::<Vec<(String, String)>>(fields)
        .unwrap_or_default()
        .into();
    *last = Some((fields.to_owned(), parsed.clone()));
    parsed
}

/// A page of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPage {
    /// Newest first.
    pub records: Vec<RecordRow>,
    /// Set when more records match: pass it as `cursor` for the next page.
    pub next: Option<Cursor>,
}

/// One stored gap entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    /// Public log id.
    pub log_id: [u8; 32],
    /// Batch that reported it.
    pub batch_id: [u8; 32],
    /// Reason name.
    pub reason: String,
    /// First missing position.
    pub start: (u64, u64),
    /// Where data resumes.
    pub end: (u64, u64),
    /// Whole segments missing.
    pub segments: u64,
    /// Records lost (0 = unknown).
    pub records: u64,
    /// Bytes skipped (0 = unknown).
    pub bytes: u64,
    /// Detail text.
    pub detail: String,
    /// Reception time, ms.
    pub received_ms: i64,
}

/// Aggregate counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records stored.
    pub records: u64,
    /// Distinct logs (devices) seen.
    pub logs: u64,
    /// Batches stored.
    pub batches: u64,
    /// Batches received again and acknowledged as duplicates.
    pub batches_duplicate: u64,
    /// Records that arrived again in a different batch and were not stored twice.
    pub records_duplicate: u64,
    /// Gap entries.
    pub gaps: u64,
    /// Records the gap entries say are lost (where known).
    pub gap_records: u64,
    /// Compressed bytes of stored batches.
    pub body_bytes: u64,
    /// Decompressed bytes of stored batches.
    pub raw_bytes: u64,
    /// Uploads refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Records by classification (top 100).
    pub by_classification: Vec<(String, u64)>,
    /// Records by severity.
    pub by_severity: Vec<(String, u64)>,
    /// Records by platform (top 100).
    pub by_platform: Vec<(String, u64)>,
    /// Records by build (top 100).
    pub by_build: Vec<(String, u64)>,
    /// Gap entries by reason.
    pub gaps_by_reason: Vec<(String, u64)>,
    /// Device counters (drops by reason...), summed over logs.
    pub device_counters: Vec<(String, u64)>,
}

/// Rows in each "by ..." list of the stats.
pub(super) const STATS_TOP: i64 = 100;

pub(super) fn blob<const N: usize>(row: &Row<'_>, i: usize) -> rusqlite::Result<[u8; N]> {
    let v: Vec<u8> = row.get(i)?;
    v.try_into().map_err(|v: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            format!("expected {N} bytes, found {}", v.len()).into(),
        )
    })
}

fn record_from_row(
    row: &Row<'_>,
    last_context: &mut Option<(String, Context)>,
) -> rusqlite::Result<RecordRow> {
    let event: Option<Vec<u8>> = row.get(10)?;
    let fields = row.get_ref(22)?.as_str()?;
    Ok(RecordRow {
        seq: row.get(0)?,
        record_id: blob(row, 1)?,
        log_id: blob(row, 2)?,
        batch_id: blob(row, 3)?,
        segment: row.get::<_, i64>(4)? as u64,
        offset: row.get::<_, i64>(5)? as u64,
        classification: row.get(6)?,
        severity: u8::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
        created_ms: row.get(8)?,
        boot_ms: row.get::<_, i64>(9)? as u64,
        event_id: event.and_then(|e| e.try_into().ok()),
        received_ms: row.get(11)?,
        payload_len: row.get::<_, i64>(12)? as u64,
        payload: row.get(13)?,
        machine_id: row.get(14)?,
        boot_id: row.get(15)?,
        arch: row.get(16)?,
        platform: row.get(17)?,
        build: row.get(18)?,
        system_name: row.get(19)?,
        kernel_version: row.get(20)?,
        record_format_version: row.get(21)?,
        context: parse_context(fields, last_context),
    })
}

/// Builds the WHERE clause and its parameters for `q`.
pub(super) fn where_clause(q: &RecordQuery) -> (String, Vec<Value>) {
    let mut conds: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(v) = &q.classification {
        // Exact, or a prefix ending in `*` (store/views.rs).
        let (cond, values) = super::views::class_condition(v);
        conds.push(cond);
        args.extend(values);
    }
    let mut push = |cond: &'static str, v: Value| {
        conds.push(cond);
        args.push(v);
    };
    if let Some(v) = q.severity {
        push("r.severity = ?", Value::Integer(i64::from(v)));
    }
    if let Some((lo, hi)) = q.priority {
        push("r.severity >= ?", Value::Integer(i64::from(lo)));
        push("r.severity <= ?", Value::Integer(i64::from(hi)));
    }
    if let Some(v) = &q.boot_id {
        push(
            "r.context_ref IN (SELECT id FROM contexts WHERE boot_id = ?)",
            Value::Text(v.clone()),
        );
    }
    if let Some(v) = &q.machine_id {
        push(
            "r.context_ref IN (SELECT id FROM contexts WHERE machine_id = ?)",
            Value::Text(v.clone()),
        );
    }
    if let Some(v) = &q.build {
        push(
            "r.context_ref IN (SELECT id FROM contexts WHERE build = ?)",
            Value::Text(v.clone()),
        );
    }
    if let Some(v) = &q.platform {
        push(
            "r.context_ref IN (SELECT id FROM contexts WHERE platform = ?)",
            Value::Text(v.clone()),
        );
    }
    if let Some(TimeBound(v)) = q.since {
        push("r.created_ms >= ?", Value::Integer(v));
    }
    if let Some(TimeBound(v)) = q.until {
        push("r.created_ms < ?", Value::Integer(v));
    }
    if let Some(v) = q.log_id {
        push(
            "r.log_ref = (SELECT id FROM logs WHERE log_id = ?)",
            Value::Blob(v.to_vec()),
        );
    }
    if let Some(v) = q.event_id {
        push("r.event_id = ?", Value::Blob(v.to_vec()));
    }
    if let Some(v) = q.record_id {
        push("r.record_id = ?", Value::Blob(v.to_vec()));
    }
    if let Some(Cursor(v)) = q.cursor {
        push("r.seq < ?", Value::Integer(v));
    }
    let sql = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    (sql, args)
}

impl Store {
    /// Records matching `q`, newest (last received) first.
    pub fn query_records(&self, q: &RecordQuery) -> Result<RecordPage, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.query_records(q);
        }
        self.read(|conn| query_records(conn, q))
    }

    /// Gap entries, newest first, optionally of one log.
    pub fn query_gaps(
        &self,
        log_id: Option<[u8; 32]>,
        limit: u32,
    ) -> Result<Vec<GapRow>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.query_gaps(log_id, limit);
        }
        self.read(|conn| {
            let mut args: Vec<Value> = Vec::new();
            let mut sql = String::from(
                "SELECT l.log_id, b.batch_id, g.reason, g.start_segment, g.start_offset,
                        g.end_segment, g.end_offset, g.segments, g.records, g.bytes, g.detail,
                        g.received_ms
                 FROM gaps g JOIN logs l ON l.id = g.log_ref JOIN batches b ON b.id = g.batch_ref",
            );
            if let Some(l) = log_id {
                sql.push_str(" WHERE g.log_ref = (SELECT id FROM logs WHERE log_id = ?)");
                args.push(Value::Blob(l.to_vec()));
            }
            sql.push_str(" ORDER BY g.id DESC LIMIT ?");
            args.push(Value::Integer(i64::from(limit)));
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), |r| {
                Ok(GapRow {
                    log_id: blob(r, 0)?,
                    batch_id: blob(r, 1)?,
                    reason: r.get(2)?,
                    start: (r.get::<_, i64>(3)? as u64, r.get::<_, i64>(4)? as u64),
                    end: (r.get::<_, i64>(5)? as u64, r.get::<_, i64>(6)? as u64),
                    segments: r.get::<_, i64>(7)? as u64,
                    records: r.get::<_, i64>(8)? as u64,
                    bytes: r.get::<_, i64>(9)? as u64,
                    detail: r.get(10)?,
                    received_ms: r.get(11)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Aggregate counts for `/api/stats` and the stats view.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.stats();
        }
        self.read(stats)
    }

    /// Number of stored records (for the metrics gauge at start-up).
    pub fn record_count(&self) -> Result<u64, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.record_count();
        }
        self.read(|c| {
            Ok(c.query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }
}

/// The SQL and parameters of a page of `q` on SQLite (zoned, `store/zone.rs`).
pub(super) fn records_sql(q: &RecordQuery) -> (String, Vec<Value>) {
    let super::zone::Filter {
        from,
        cond,
        args,
        desc,
        ..
    } = super::zone::zoned(q, super::zone::Dialect::Sqlite);
    let payload = if q.include_payload {
        "r.payload"
    } else {
        "NULL"
    };
    let sql = format!(
        "SELECT r.seq, r.record_id, l.log_id, b.batch_id, r.segment, r.offset, k.name,
                r.severity, r.created_ms, r.boot_ms, r.event_id, r.received_ms, length(r.payload),
                {payload}, c.machine_id, c.boot_id, c.arch, c.platform, c.build, c.system_name,
                c.kernel_version, c.record_format_version, c.fields
         FROM {from}
         JOIN contexts c ON c.id = r.context_ref
         JOIN classes k ON k.id = r.class_ref
         JOIN logs l ON l.id = r.log_ref
         JOIN batches b ON b.id = r.batch_ref
         {cond}
         ORDER BY {desc} LIMIT {limit}",
        // One more than asked tells whether another page exists. A literal, not a bound
        // `?`: SQLite (3.47+) plans with a bound LIMIT's value and so re-prepares the
        // statement every time it is bound; a literal keeps the cached statement.
        limit = u64::from(q.limit) + 1
    );
    (sql, args)
}

fn query_records(conn: &Connection, q: &RecordQuery) -> Result<RecordPage, StoreError> {
    let (sql, args) = records_sql(q);
    // Cached: the web view runs this for every page.
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut out = Vec::new();
    let mut payload_bytes = 0u64;
    let mut next = None;
    let mut last_context = None;
    while let Some(row) = rows.next()? {
        let rec = record_from_row(row, &mut last_context)?;
        let over_budget =
            q.include_payload && !out.is_empty() && payload_bytes >= q.max_payload_bytes;
        if out.len() >= q.limit as usize || over_budget {
            next = out.last().map(|r: &RecordRow| Cursor(r.seq));
            break;
        }
        payload_bytes += rec.payload.as_ref().map_or(0, |p| p.len() as u64);
        out.push(rec);
    }
    Ok(RecordPage { records: out, next })
}

fn grouped(conn: &Connection, sql: &str) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([STATS_TOP], |r| {
        let key: Value = r.get(0)?;
        let key = match key {
            Value::Text(s) => s,
            Value::Integer(i) => i.to_string(),
            Value::Null => String::new(),
            Value::Real(f) => f.to_string(),
            Value::Blob(b) => hex::encode(b),
        };
        Ok((key, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The u64 total of one column of u64 values stored bit for bit as i64 (device values can be
/// anything): summed in Rust, saturating, because SQLite's `sum()` fails on overflow and adds
/// values above `i64::MAX` as negative numbers.
fn u64_total(conn: &Connection, sql: &str) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let mut total = 0u64;
    while let Some(r) = rows.next()? {
        total = total.saturating_add(r.get::<_, Option<i64>>(0)?.unwrap_or(0) as u64);
    }
    Ok(total)
}

/// Device counters summed over all logs by name (the first [`STATS_TOP`] names), as u64
/// saturating totals (see [`u64_total`]).
fn device_counter_totals(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare("SELECT name, value FROM device_counters ORDER BY name")?;
    let mut rows = stmt.query([])?;
    let mut out: Vec<(String, u64)> = Vec::new();
    while let Some(r) = rows.next()? {
        let (name, value) = (r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64);
        if let Some((_, total)) = out.last_mut().filter(|(n, _)| *n == name) {
            *total = total.saturating_add(value);
        } else if out.len() as i64 >= STATS_TOP {
            break;
        } else {
            out.push((name, value));
        }
    }
    Ok(out)
}

fn stats(conn: &Connection) -> Result<Stats, StoreError> {
    let one = |sql: &str| -> Result<u64, StoreError> {
        Ok(conn
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))?
            .unwrap_or(0) as u64)
    };
    let mut s = Stats {
        records: one("SELECT count(*) FROM records")?,
        logs: one("SELECT count(*) FROM logs")?,
        batches: one("SELECT count(*) FROM batches")?,
        gaps: one("SELECT count(*) FROM gaps")?,
        gap_records: u64_total(conn, "SELECT records FROM gaps")?,
        body_bytes: one("SELECT sum(body_bytes) FROM batches")?,
        raw_bytes: one("SELECT sum(raw_bytes) FROM batches")?,
        ..Stats::default()
    };
    let mut stmt = conn.prepare("SELECT name, value FROM counters")?;
    let counters = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    for c in counters {
        let (name, value) = c?;
        match name.as_str() {
            "batches_duplicate" => s.batches_duplicate = value,
            "records_duplicate" => s.records_duplicate = value,
            n => {
                if let Some(reason) = n.strip_prefix("rejected.") {
                    s.rejected.insert(reason.to_owned(), value);
                }
            }
        }
    }
    // Per-key record counts of the zone maps (store/zone.rs): `n` records of the batches.
    let keys = |kind: i64| {
        format!(
            "SELECT key - {kind} AS id, sum(records) AS n FROM batch_keys
             WHERE key >= {kind} AND key < {} GROUP BY key",
            kind + zone::KIND_SPAN
        )
    };
    s.by_classification = grouped(
        conn,
        &format!(
            "SELECT k.name, g.n FROM ({}) g
             JOIN classes k ON k.id = g.id ORDER BY g.n DESC, k.name LIMIT ?1",
            keys(zone::CLASS)
        ),
    )?;
    s.by_severity = grouped(
        conn,
        &format!(
            "SELECT g.id, g.n FROM ({}) g ORDER BY g.id LIMIT ?1",
            keys(zone::SEVERITY)
        ),
    )?;
    for (col, out) in [("platform", &mut s.by_platform), ("build", &mut s.by_build)] {
        *out = grouped(
            conn,
            &format!(
                "SELECT c.{col}, sum(g.n) AS n FROM ({}) g
                 JOIN contexts c ON c.id = g.id
                 GROUP BY c.{col} ORDER BY n DESC, c.{col} LIMIT ?1",
                keys(zone::CONTEXT)
            ),
        )?;
    }
    s.gaps_by_reason = grouped(
        conn,
        "SELECT reason, count(*) AS n FROM gaps GROUP BY reason ORDER BY n DESC, reason LIMIT ?1",
    )?;
    s.device_counters = device_counter_totals(conn)?;
    Ok(s)
}
