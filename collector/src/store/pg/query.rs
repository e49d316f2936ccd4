//! The read side on PostgreSQL: the same queries as `../query.rs`, the same results. The
//! record filters are `zone::zoned`'s (PostgreSQL dialect), with SQLite's `?` placeholders
//! numbered.

use postgres::types::ToSql;
use postgres::{Client, Row};
use rusqlite::types::Value;

use super::Reads;
use crate::store::query::STATS_TOP;
use crate::store::zone::{self, zoned, Dialect, Filter};
use crate::store::{Cursor, GapRow, RecordPage, RecordQuery, RecordRow, Stats, StoreError};

type Args = Vec<Box<dyn ToSql + Sync>>;

/// `sql` with SQLite's placeholders in PostgreSQL's form (`?` numbered in order: `$1`,
/// `$2`, ...; `?N` as `$N`) and `args` as PostgreSQL parameters. The SQL given here has no
/// `?` inside string literals.
fn numbered(sql: &str, args: Vec<Value>) -> (String, Args) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '?' {
            out.push(ch);
        } else if chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            n += 1;
            out.push_str(&format!("${n}"));
        }
    }
    let args = args
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync> {
            match v {
                Value::Integer(i) => Box::new(i),
                Value::Text(s) => Box::new(s),
                Value::Blob(b) => Box::new(b),
                Value::Real(f) => Box::new(f),
                Value::Null => Box::new(Option::<i64>::None),
            }
        })
        .collect();
    (out, args)
}

/// Runs `sql`, with the planner's sorts off when it reads through the zone maps.
fn run(c: &mut Client, sql: &str, args: &Args, zoned: bool) -> Result<Vec<Row>, StoreError> {
    if zoned {
        super::unsorted(c, |tx| Ok(tx.query(sql, &refs(args))?))
    } else {
        Ok(c.query(sql, &refs(args))?)
    }
}

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect()
}

fn fixed<const N: usize>(row: &Row, i: usize) -> Result<[u8; N], StoreError> {
    let v: Vec<u8> = row.try_get(i)?;
    let len = v.len();
    v.try_into()
        .map_err(|_| StoreError::BadValue(format!("expected {N} bytes, found {len}")))
}

fn record_from_row(
    row: &Row,
    last_context: &mut Option<(String, crate::store::query::Context)>,
) -> Result<RecordRow, StoreError> {
    let event: Option<Vec<u8>> = row.try_get(10)?;
    let fields: &str = row.try_get(22)?;
    let log_id = fixed(row, 2)?;
    let (segment, offset) = (
        row.try_get::<_, i64>(4)? as u64,
        row.try_get::<_, i64>(5)? as u64,
    );
    Ok(RecordRow {
        seq: row.try_get(0)?,
        // Derived here from the log and position (column 1 is a NULL placeholder): the
        // table has no record-id column since schema version 3, and SQL would hash every
        // row of the candidate batches, not only the page's.
        record_id: crate::store::record_id(&log_id, segment, offset),
        log_id,
        batch_id: fixed(row, 3)?,
        segment,
        offset,
        classification: row.try_get(6)?,
        severity: u8::try_from(row.try_get::<_, i64>(7)?).unwrap_or(0),
        created_ms: row.try_get(8)?,
        boot_ms: row.try_get::<_, i64>(9)? as u64,
        event_id: event.and_then(|e| e.try_into().ok()),
        received_ms: row.try_get(11)?,
        payload_len: row.try_get::<_, i64>(12)? as u64,
        payload: row.try_get(13)?,
        machine_id: row.try_get(14)?,
        boot_id: row.try_get(15)?,
        arch: row.try_get(16)?,
        platform: row.try_get(17)?,
        build: row.try_get(18)?,
        system_name: row.try_get(19)?,
        kernel_version: row.try_get(20)?,
        record_format_version: row.try_get(21)?,
        context: crate::store::query::parse_context(fields, last_context),
    })
}

/// A column as the SQLite value it would be there (booleans as integers).
fn value(row: &Row, i: usize) -> Result<Value, StoreError> {
    use postgres::types::Type;
    let t = row.columns()[i].type_().clone();
    let v = match t {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Integer(v.into())),
        Type::TEXT | Type::VARCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        other => {
            return Err(StoreError::BadValue(format!(
                "column {} has type {other}, which the store does not read",
                row.columns()[i].name()
            )))
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

/// The SQL and parameters of a page of `q` (zoned, `zone.rs`).
pub(crate) fn records_sql(q: &RecordQuery) -> (String, Args, bool) {
    let Filter {
        from,
        cond,
        mut args,
        desc,
        zoned,
        ..
    } = zoned(q, Dialect::Pg);
    let payload = if q.include_payload {
        "r.payload"
    } else {
        "NULL::bytea"
    };
    let sql = format!(
        "SELECT r.seq, NULL::bytea, l.log_id, b.batch_id, r.segment, r.offset, k.name,
                r.severity, r.created_ms, r.boot_ms, r.event_id, r.received_ms,
                octet_length(r.payload)::bigint, {payload}, c.machine_id, c.boot_id, c.arch,
                c.platform, c.build, c.system_name, c.kernel_version,
                c.record_format_version, c.fields
         FROM {from}
         JOIN contexts c ON c.id = r.context_ref
         JOIN classes k ON k.id = r.class_ref
         JOIN logs l ON l.id = r.log_ref
         JOIN batches b ON b.id = r.batch_ref
         {cond}
         ORDER BY {desc} LIMIT ?"
    );
    args.push(Value::Integer(i64::from(q.limit) + 1));
    let (sql, args) = numbered(&sql, args);
    (sql, args, zoned)
}

impl Reads {
    /// Rows of a query written for SQLite (see [`numbered`]), as SQLite values; `zoned`:
    /// it reads records through the zone maps (see [`super::unsorted`]).
    pub(crate) fn rows(
        &self,
        sql: &str,
        args: Vec<Value>,
        zoned: bool,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let (sql, args) = numbered(sql, args);
        let rows = self.with(|c| run(c, &sql, &args, zoned))?;
        rows.iter()
            .map(|r| (0..r.len()).map(|i| value(r, i)).collect())
            .collect()
    }

    pub(crate) fn query_records(&self, q: &RecordQuery) -> Result<RecordPage, StoreError> {
        let (sql, args, zoned) = records_sql(q);
        let rows = self.with(|c| run(c, &sql, &args, zoned))?;
        let mut out = Vec::new();
        let mut payload_bytes = 0u64;
        let mut next = None;
        let mut last_context = None;
        for row in &rows {
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

    pub(crate) fn query_gaps(
        &self,
        log_id: Option<[u8; 32]>,
        limit: u32,
    ) -> Result<Vec<GapRow>, StoreError> {
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
        let (sql, args) = numbered(&sql, args);
        let rows = self.with(|c| Ok(c.query(&sql, &refs(&args))?))?;
        rows.iter()
            .map(|r| {
                let u =
                    |i: usize| -> Result<u64, StoreError> { Ok(r.try_get::<_, i64>(i)? as u64) };
                Ok(GapRow {
                    log_id: fixed(r, 0)?,
                    batch_id: fixed(r, 1)?,
                    reason: r.try_get(2)?,
                    start: (u(3)?, u(4)?),
                    end: (u(5)?, u(6)?),
                    segments: u(7)?,
                    records: u(8)?,
                    bytes: u(9)?,
                    detail: r.try_get(10)?,
                    received_ms: r.try_get(11)?,
                })
            })
            .collect()
    }

    pub(crate) fn record_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            Ok(c.query_one(RECORDS, &[])?
                .try_get::<_, Option<i64>>(0)?
                .unwrap_or(0) as u64)
        })
    }

    pub(crate) fn stats(&self) -> Result<Stats, StoreError> {
        self.with(stats)
    }
}

/// The number of stored records: the sum of the batches' `seq` ranges (a batch's stored
/// records are `first_seq..=last_seq`, see `zone.rs`), not a scan of the records.
const RECORDS: &str = "SELECT sum(last_seq - first_seq + 1)::bigint FROM batches";

fn grouped(c: &mut Client, sql: &str) -> Result<Vec<(String, u64)>, StoreError> {
    c.query(sql, &[&STATS_TOP])?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)))
        .collect()
}

/// The saturating u64 total of a column of u64 values stored as i64 (as on SQLite).
fn u64_total(c: &mut Client, sql: &str) -> Result<u64, StoreError> {
    let mut total = 0u64;
    for r in c.query(sql, &[])? {
        total = total.saturating_add(r.try_get::<_, Option<i64>>(0)?.unwrap_or(0) as u64);
    }
    Ok(total)
}

fn stats(c: &mut Client) -> Result<Stats, StoreError> {
    let mut one = |sql: &str| -> Result<u64, StoreError> {
        Ok(c.query_one(sql, &[])?
            .try_get::<_, Option<i64>>(0)?
            .unwrap_or(0) as u64)
    };
    let mut s = Stats {
        records: one(RECORDS)?,
        logs: one("SELECT count(*) FROM logs")?,
        batches: one("SELECT count(*) FROM batches")?,
        gaps: one("SELECT count(*) FROM gaps")?,
        body_bytes: one("SELECT sum(body_bytes)::bigint FROM batches")?,
        raw_bytes: one("SELECT sum(raw_bytes)::bigint FROM batches")?,
        ..Stats::default()
    };
    s.gap_records = u64_total(c, "SELECT records FROM gaps")?;
    for r in c.query("SELECT name, value FROM counters", &[])? {
        let (name, value): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
        let value = value as u64;
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
            "SELECT key - {kind} AS id, sum(records)::bigint AS n FROM batch_keys
             WHERE key >= {kind} AND key < {} GROUP BY key",
            kind + zone::KIND_SPAN
        )
    };
    s.by_classification = grouped(
        c,
        &format!(
            "SELECT k.name, g.n FROM ({}) g
             JOIN classes k ON k.id = g.id ORDER BY g.n DESC, k.name LIMIT $1",
            keys(zone::CLASS)
        ),
    )?;
    s.by_severity = grouped(
        c,
        &format!(
            "SELECT g.id::text, g.n FROM ({}) g ORDER BY g.id LIMIT $1",
            keys(zone::SEVERITY)
        ),
    )?;
    for (col, out) in [("platform", &mut s.by_platform), ("build", &mut s.by_build)] {
        *out = grouped(
            c,
            &format!(
                "SELECT c.{col}, sum(g.n)::bigint AS n FROM ({}) g
                 JOIN contexts c ON c.id = g.id
                 GROUP BY c.{col} ORDER BY n DESC, c.{col} LIMIT $1",
                keys(zone::CONTEXT)
            ),
        )?;
    }
    s.gaps_by_reason = grouped(
        c,
        "SELECT reason, count(*) AS n FROM gaps GROUP BY reason ORDER BY n DESC, reason LIMIT $1",
    )?;
    let mut counters: Vec<(String, u64)> = Vec::new();
    for r in c.query("SELECT name, value FROM device_counters ORDER BY name", &[])? {
        let (name, value): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
        if let Some((_, total)) = counters.last_mut().filter(|(n, _)| *n == name) {
            *total = total.saturating_add(value as u64);
        } else if counters.len() as i64 >= STATS_TOP {
            break;
        } else {
            counters.push((name, value as u64));
        }
    }
    s.device_counters = counters;
    Ok(s)
}
