//! Read-side SQL of the web view's device pages: every device (log) with its newest machine
//! id, records, last upload and gaps; and one device's summary.

use rusqlite::types::Value;

use super::query::blob;
use super::views::{pairs, u64_sum};
use super::{Store, StoreError};

/// A per-device summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceView {
    /// Public log id.
    pub log_id: [u8; 32],
    /// First upload, ms.
    pub first_seen_ms: i64,
    /// Records stored.
    pub records: u64,
    /// Newest reception, ms (0 when none).
    pub last_received_ms: i64,
    /// Machine ids, builds and platforms seen, with record counts.
    pub machines: Vec<(String, u64)>,
    /// Builds seen.
    pub builds: Vec<(String, u64)>,
    /// Platforms seen.
    pub platforms: Vec<(String, u64)>,
    /// Gap entries and the records they name.
    pub gaps: u64,
    /// Records named lost by this device's gaps.
    pub gap_records: u64,
    /// The device's counters (latest values).
    pub counters: Vec<(String, u64)>,
}

/// One row of the devices list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Public log id.
    pub log_id: [u8; 32],
    /// Machine id of the newest record.
    pub machine_id: String,
    /// Records stored.
    pub records: u64,
    /// Newest reception, ms.
    pub last_received_ms: i64,
    /// Gap entries.
    pub gaps: u64,
}

impl Store {
    /// Every device (log), most recently heard from first.
    pub fn devices(&self, limit: u32) -> Result<Vec<DeviceRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT l.log_id,
                    COALESCE((SELECT c.machine_id FROM records r JOIN contexts c
                              ON c.id = r.context_ref WHERE r.log_ref = l.id
                              ORDER BY r.seq DESC LIMIT 1), ''),
                    (SELECT count(*) FROM records r WHERE r.log_ref = l.id),
                    COALESCE((SELECT max(received_ms) FROM batches b WHERE b.log_ref = l.id), 0)
                        AS last,
                    (SELECT count(*) FROM gaps g WHERE g.log_ref = l.id)
                 FROM logs l ORDER BY last DESC, l.id LIMIT ?",
            )?;
            let rows = stmt.query_map([i64::from(limit)], |r| {
                Ok(DeviceRow {
                    log_id: blob(r, 0)?,
                    machine_id: r.get(1)?,
                    records: r.get::<_, i64>(2)? as u64,
                    last_received_ms: r.get(3)?,
                    gaps: r.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// One device's summary; `None` when the collector never heard from it.
    pub fn device(&self, log_id: [u8; 32]) -> Result<Option<DeviceView>, StoreError> {
        self.read(|conn| {
            let found: Option<(i64, i64)> = conn
                .query_row(
                    "SELECT id, first_seen_ms FROM logs WHERE log_id = ?",
                    [log_id.to_vec()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            let Some((id, first_seen_ms)) = found else {
                return Ok(None);
            };
            let one = |sql: &str| -> Result<i64, StoreError> {
                Ok(conn
                    .query_row(sql, [id], |r| r.get::<_, Option<i64>>(0))?
                    .unwrap_or(0))
            };
            let by = |col: &str| {
                pairs(
                    conn,
                    &format!(
                        "SELECT {col}, sum(g.n) AS n FROM (
                            SELECT context_ref, count(*) AS n FROM records WHERE log_ref = ?
                            GROUP BY context_ref) g
                         JOIN contexts c ON c.id = g.context_ref
                         GROUP BY {col} ORDER BY n DESC, {col} LIMIT 50"
                    ),
                    vec![Value::Integer(id)],
                )
            };
            Ok(Some(DeviceView {
                log_id,
                first_seen_ms,
                records: one("SELECT count(*) FROM records WHERE log_ref = ?")? as u64,
                last_received_ms: one("SELECT max(received_ms) FROM batches WHERE log_ref = ?")?,
                machines: by("c.machine_id")?,
                builds: by("c.build")?,
                platforms: by("c.platform")?,
                gaps: one("SELECT count(*) FROM gaps WHERE log_ref = ?")? as u64,
                gap_records: u64_sum(
                    conn,
                    "SELECT records FROM gaps WHERE log_ref = ?",
                    vec![Value::Integer(id)],
                )?,
                counters: pairs(
                    conn,
                    "SELECT name, value FROM device_counters WHERE log_ref = ? ORDER BY name",
                    vec![Value::Integer(id)],
                )?,
            }))
        })
    }
}
