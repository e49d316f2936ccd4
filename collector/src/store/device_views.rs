//! Read-side SQL of the web view's device pages: every device (log) with its newest machine
//! id, records, last upload and gaps; and one device's summary. Counts come from the zone
//! rows (`zone.rs`), not from the records.

use rusqlite::types::Value;

use super::views::{bytes, int, opt_int, text};
use super::{zone, Store, StoreError};

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
        self.rows(
            // From the zone rows (store/zone.rs): a batch's records are the range
            // first_seq..=last_seq, so the device's newest record is its batches' largest
            // last_seq and its count their ranges' sum.
            "SELECT l.log_id,
                COALESCE((SELECT c.machine_id FROM records r JOIN contexts c
                          ON c.id = r.context_ref
                          WHERE r.seq = (SELECT max(b.last_seq) FROM batches b
                                         WHERE b.log_ref = l.id)), ''),
                COALESCE((SELECT CAST(sum(b.last_seq - b.first_seq + 1) AS BIGINT)
                          FROM batches b WHERE b.log_ref = l.id), 0),
                COALESCE((SELECT max(received_ms) FROM batches b WHERE b.log_ref = l.id), 0)
                    AS last,
                (SELECT count(*) FROM gaps g WHERE g.log_ref = l.id)
             FROM logs l ORDER BY last DESC, l.id LIMIT ?",
            vec![Value::Integer(i64::from(limit))],
        )?
        .iter()
        .map(|r| {
            Ok(DeviceRow {
                log_id: bytes(r, 0)?,
                machine_id: text(r, 1)?,
                records: int(r, 2)? as u64,
                last_received_ms: int(r, 3)?,
                gaps: int(r, 4)? as u64,
            })
        })
        .collect()
    }

    /// One device's summary; `None` when the collector never heard from it.
    pub fn device(&self, log_id: [u8; 32]) -> Result<Option<DeviceView>, StoreError> {
        let found = self.rows(
            "SELECT id, first_seen_ms FROM logs WHERE log_id = ?",
            vec![Value::Blob(log_id.to_vec())],
        )?;
        let Some(row) = found.first() else {
            return Ok(None);
        };
        let (id, first_seen_ms) = (int(row, 0)?, int(row, 1)?);
        let arg = || vec![Value::Integer(id)];
        let one = |sql: &str| -> Result<i64, StoreError> {
            let rows = self.rows(sql, arg())?;
            Ok(rows
                .first()
                .map(|r| opt_int(r, 0))
                .transpose()?
                .flatten()
                .unwrap_or(0))
        };
        let by = |col: &str| {
            self.pairs(
                &format!(
                    "SELECT {col}, CAST(sum(g.n) AS BIGINT) AS n FROM (
                        SELECT k.key - {kind} AS context_ref, sum(k.records) AS n
                        FROM batches b JOIN batch_keys k ON k.batch_ref = b.id
                        WHERE b.log_ref = ? AND k.key >= {kind} AND k.key < {end}
                        GROUP BY k.key) g
                     JOIN contexts c ON c.id = g.context_ref
                     GROUP BY {col} ORDER BY n DESC, {col} LIMIT 50",
                    kind = zone::CONTEXT,
                    end = zone::CONTEXT + zone::KIND_SPAN,
                ),
                arg(),
            )
        };
        Ok(Some(DeviceView {
            log_id,
            first_seen_ms,
            records: one(
                "SELECT CAST(sum(last_seq - first_seq + 1) AS BIGINT) FROM batches
                 WHERE log_ref = ?",
            )? as u64,
            last_received_ms: one("SELECT max(received_ms) FROM batches WHERE log_ref = ?")?,
            machines: by("c.machine_id")?,
            builds: by("c.build")?,
            platforms: by("c.platform")?,
            gaps: one("SELECT count(*) FROM gaps WHERE log_ref = ?")? as u64,
            gap_records: self.u64_sum("SELECT records FROM gaps WHERE log_ref = ?", arg())?,
            counters: self.pairs(
                "SELECT name, value FROM device_counters WHERE log_ref = ? ORDER BY name",
                arg(),
            )?,
        }))
    }
}
