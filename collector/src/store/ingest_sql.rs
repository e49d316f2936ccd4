//! Writing one batch inside the writer's transaction: dedupe by batch id, then the rows.
//!
//! Logs, classes and contexts are interned once and their ids cached across batches and
//! transactions (a fleet sends the same few thousand of each over and over); the cache is
//! dropped whenever a rollback may have removed an id it holds. Statements are prepared once
//! per connection (rusqlite's statement cache), payloads are bound as the decoded bytes.
//! A batch's zone map (`zone.rs`) is gathered while its records are inserted and written
//! with it.

use std::collections::HashMap;

use protocol::Batch;
use rusqlite::{params, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};

use super::zone::Zone;
use super::{record_id, to_sql_u64, IngestMeta, IngestOutcome, StoreError, CONTEXT_COLUMNS};

/// Cached entries per kind before the cache is emptied (bounds memory).
const CACHE_MAX: usize = 100_000;

/// Ids of interned rows, valid for the committed state of the database.
#[derive(Debug, Default)]
pub(crate) struct Caches {
    pub(super) logs: HashMap<[u8; 32], i64>,
    pub(super) classes: HashMap<String, i64>,
    pub(super) contexts: HashMap<Vec<(String, String)>, i64>,
}

impl Caches {
    /// Forgets every id (after a rollback, or when rows were deleted).
    pub(crate) fn clear(&mut self) {
        self.logs.clear();
        self.classes.clear();
        self.contexts.clear();
    }

    pub(super) fn bound(&mut self) {
        if self.logs.len() > CACHE_MAX {
            self.logs.clear();
        }
        if self.classes.len() > CACHE_MAX {
            self.classes.clear();
        }
        if self.contexts.len() > CACHE_MAX {
            self.contexts.clear();
        }
    }
}

/// Adds `by` to the persistent counter `name`.
pub(crate) fn bump(conn: &rusqlite::Connection, name: &str, by: u64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![name, to_sql_u64(by)])?;
    Ok(())
}

/// Writes batches into one open transaction.
pub(crate) struct Inserter<'a, 'c> {
    tx: &'a Transaction<'c>,
    caches: &'a mut Caches,
}

impl<'a, 'c> Inserter<'a, 'c> {
    pub(crate) fn new(tx: &'a Transaction<'c>, caches: &'a mut Caches) -> Result<Self, StoreError> {
        caches.bound();
        Ok(Inserter { tx, caches })
    }

    /// Stores `batch` unless a batch with its id is stored (in this transaction or before).
    pub(crate) fn ingest(
        &mut self,
        batch: &Batch,
        meta: IngestMeta,
    ) -> Result<IngestOutcome, StoreError> {
        let id = batch.id();
        let existing: Option<i64> = self
            .tx
            .prepare_cached("SELECT records_stored FROM batches WHERE batch_id = ?1")?
            .query_row([&id.0[..]], |r| r.get(0))
            .optional()?;
        if let Some(n) = existing {
            bump(self.tx, "batches_duplicate", 1)?;
            return Ok(IngestOutcome::Duplicate {
                records_stored: n as u64,
            });
        }
        self.insert(&id.0, batch, meta)
    }

    fn log_ref(&mut self, log_id: &[u8; 32], received_ms: i64) -> Result<i64, StoreError> {
        if let Some(id) = self.caches.logs.get(log_id) {
            return Ok(*id);
        }
        self.tx
            .prepare_cached(
                "INSERT INTO logs(log_id, first_seen_ms) VALUES (?1, ?2)
                 ON CONFLICT(log_id) DO NOTHING",
            )?
            .execute(params![&log_id[..], received_ms])?;
        let id: i64 = self
            .tx
            .prepare_cached("SELECT id FROM logs WHERE log_id = ?1")?
            .query_row([&log_id[..]], |r| r.get(0))?;
        self.caches.logs.insert(*log_id, id);
        Ok(id)
    }

    fn class_ref(&mut self, name: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.caches.classes.get(name) {
            return Ok(*id);
        }
        self.tx
            .prepare_cached("INSERT INTO classes(name) VALUES (?1) ON CONFLICT(name) DO NOTHING")?
            .execute([name])?;
        let id: i64 = self
            .tx
            .prepare_cached("SELECT id FROM classes WHERE name = ?1")?
            .query_row([name], |r| r.get(0))?;
        self.caches.classes.insert(name.to_owned(), id);
        Ok(id)
    }

    fn context_ref(&mut self, fields: &[(String, String)]) -> Result<i64, StoreError> {
        if let Some(id) = self.caches.contexts.get(fields) {
            return Ok(*id);
        }
        let fields_json = serde_json::to_string(fields).unwrap_or_else(|_| "[]".to_owned());
        let digest: [u8; 32] = Sha256::digest(fields_json.as_bytes()).into();
        let col = |i: usize| super::context_value(fields, CONTEXT_COLUMNS[i].1);
        self.tx
            .prepare_cached(
                "INSERT INTO contexts(digest, machine_id, boot_id, arch, platform, build,
                     system_name, kernel_version, record_format_version, fields)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(digest) DO NOTHING",
            )?
            .execute(params![
                &digest[..],
                col(0),
                col(1),
                col(2),
                col(3),
                col(4),
                col(5),
                col(6),
                col(7),
                fields_json
            ])?;
        let id: i64 = self
            .tx
            .prepare_cached("SELECT id FROM contexts WHERE digest = ?1")?
            .query_row([&digest[..]], |r| r.get(0))?;
        self.caches.contexts.insert(fields.to_vec(), id);
        Ok(id)
    }

    fn insert(
        &mut self,
        id: &[u8; 32],
        batch: &Batch,
        meta: IngestMeta,
    ) -> Result<IngestOutcome, StoreError> {
        let tx = self.tx;
        let log_ref = self.log_ref(&batch.public_log_id, meta.received_ms)?;
        tx.prepare_cached(
            "INSERT INTO batches(batch_id, log_ref, first_segment, first_offset, last_segment,
                 last_offset, received_ms, records, records_stored, gaps, body_bytes, raw_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)",
        )?
        .execute(params![
            &id[..],
            log_ref,
            to_sql_u64(batch.first.segment),
            to_sql_u64(batch.first.offset),
            to_sql_u64(batch.last.segment),
            to_sql_u64(batch.last.offset),
            meta.received_ms,
            batch.records.len() as i64,
            batch.gaps.len() as i64,
            to_sql_u64(meta.body_bytes),
            to_sql_u64(meta.raw_bytes),
        ])?;
        let batch_ref = tx.last_insert_rowid();

        let mut ctx_ids = Vec::with_capacity(batch.contexts.len());
        for c in &batch.contexts {
            ctx_ids.push(self.context_ref(&c.fields)?);
        }
        // A batch has few distinct classifications: look each up once per run of equal ones.
        let mut last_class: Option<(&str, i64)> = None;
        let mut insert = tx.prepare_cached(
            "INSERT INTO records(log_ref, segment, offset, record_id, batch_ref, context_ref,
                 class_ref, severity, created_ms, boot_ms, event_id, received_ms, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT(log_ref, segment, offset) DO NOTHING",
        )?;
        let (mut stored, mut dup) = (0u64, 0u64);
        let mut zone = Zone::new(batch.records.len());
        for r in &batch.records {
            let class_ref = match last_class {
                Some((name, id)) if name == r.classification => id,
                _ => {
                    let id = self.class_ref(&r.classification)?;
                    last_class = Some((&r.classification, id));
                    id
                }
            };
            // The decoder checked the index; a miss here would be a decoder bug.
            let context_ref = ctx_ids.get(r.context as usize).copied().ok_or_else(|| {
                StoreError::BadBatch(format!(
                    "record {} names context {} of {}",
                    r.position,
                    r.context,
                    ctx_ids.len()
                ))
            })?;
            let rid = record_id(&batch.public_log_id, r.position.segment, r.position.offset);
            let n = insert.execute(params![
                log_ref,
                to_sql_u64(r.position.segment),
                to_sql_u64(r.position.offset),
                &rid[..],
                batch_ref,
                context_ref,
                class_ref,
                i64::from(r.severity),
                r.wall_ms,
                to_sql_u64(r.boot_ms),
                r.event_id.as_ref().map(|e| &e[..]),
                meta.received_ms,
                &r.payload[..],
            ])?;
            if n == 1 {
                stored += 1;
                zone.add(
                    tx.last_insert_rowid(),
                    class_ref,
                    context_ref,
                    r.severity,
                    r.wall_ms,
                    &rid,
                );
            } else {
                dup += 1;
            }
        }
        drop(insert);
        zone.write(tx, batch_ref, stored)?;

        for g in &batch.gaps {
            tx.prepare_cached(
                "INSERT INTO gaps(log_ref, batch_ref, reason, reason_code, start_segment,
                     start_offset, end_segment, end_offset, segments, records, bytes, detail,
                     received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                log_ref,
                batch_ref,
                g.reason.name(),
                i64::from(g.reason.code()),
                to_sql_u64(g.start.segment),
                to_sql_u64(g.start.offset),
                to_sql_u64(g.end.segment),
                to_sql_u64(g.end.offset),
                to_sql_u64(g.segments),
                to_sql_u64(g.records),
                to_sql_u64(g.bytes),
                g.detail,
                meta.received_ms,
            ])?;
        }
        // Device counters only grow during a log's life (PROTOCOL.md 3.5), so the largest
        // value seen is the latest, also when the halves of a split batch arrive out of
        // order. The values are u64 stored bit for bit as i64, so "largest" is compared
        // unsigned: with different signs the negative one (top bit set) is the larger u64.
        for (name, value) in &batch.counters {
            tx.prepare_cached(
                "INSERT INTO device_counters(log_ref, name, value, updated_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(log_ref, name) DO UPDATE SET value = CASE
                     WHEN (value < 0) = (excluded.value < 0) THEN max(value, excluded.value)
                     WHEN value < 0 THEN value
                     ELSE excluded.value END,
                     updated_ms = excluded.updated_ms",
            )?
            .execute(params![log_ref, name, to_sql_u64(*value), meta.received_ms])?;
        }
        if dup > 0 {
            bump(tx, "records_duplicate", dup)?;
        }
        Ok(IngestOutcome::Stored {
            records_stored: stored,
            records_duplicate: dup,
            gaps: batch.gaps.len() as u64,
        })
    }
}
