//! Writing batches into PostgreSQL: one transaction per group, dedupe by batch id with
//! `ON CONFLICT (batch_id) DO NOTHING` in the transaction that writes the rows, records with
//! one `unnest` insert per batch, ids of logs, classes and contexts cached as on SQLite.

use postgres::types::ToSql;
use postgres::{Statement, Transaction};
use protocol::Batch;
use sha2::{Digest, Sha256};

use super::Writer;
use crate::store::ingest_sql::Caches;
use crate::store::{
    context_value, record_id, to_sql_u64, IngestMeta, IngestOutcome, StoreError, CONTEXT_COLUMNS,
};

const BUMP: &str = "INSERT INTO counters(name, value) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value";
const NEW_BATCH: &str = "INSERT INTO batches(batch_id, log_ref, first_segment, first_offset,
         last_segment, last_offset, received_ms, records, records_stored, gaps, body_bytes,
         raw_bytes)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $11)
     ON CONFLICT (batch_id) DO NOTHING RETURNING id";
const STORED_BATCH: &str = "SELECT records_stored FROM batches WHERE batch_id = $1";
const NEW_LOG: &str = "INSERT INTO logs(log_id, first_seen_ms) VALUES ($1, $2)
     ON CONFLICT (log_id) DO NOTHING";
const LOG_ID: &str = "SELECT id FROM logs WHERE log_id = $1";
const NEW_CLASS: &str = "INSERT INTO classes(name) VALUES ($1) ON CONFLICT (name) DO NOTHING";
const CLASS_ID: &str = "SELECT id FROM classes WHERE name = $1";
const NEW_CONTEXT: &str = "INSERT INTO contexts(digest, machine_id, boot_id, arch, platform,
         build, system_name, kernel_version, record_format_version, fields)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (digest) DO NOTHING";
const CONTEXT_ID: &str = "SELECT id FROM contexts WHERE digest = $1";
const RECORDS: &str = r#"INSERT INTO records(log_ref, segment, "offset", record_id, batch_ref,
         context_ref, class_ref, severity, created_ms, boot_ms, event_id, received_ms, payload)
     SELECT $1, s, o, rid, $2, ctx, cls, sev, cr, bt, ev, $3, pl
     FROM unnest($4::bigint[], $5::bigint[], $6::bytea[], $7::bigint[], $8::bigint[],
                 $9::bigint[], $10::bigint[], $11::bigint[], $12::bytea[], $13::bytea[])
          AS t(s, o, rid, ctx, cls, sev, cr, bt, ev, pl)
     ON CONFLICT (log_ref, segment, "offset") DO NOTHING"#;
const GAP: &str = "INSERT INTO gaps(log_ref, batch_ref, reason, reason_code, start_segment,
         start_offset, end_segment, end_offset, segments, records, bytes, detail, received_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
// Device counters only grow; the largest u64 (stored bit for bit as i64) wins, as on SQLite.
const DEVICE_COUNTER: &str = "INSERT INTO device_counters(log_ref, name, value, updated_ms)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (log_ref, name) DO UPDATE SET value = CASE
         WHEN (device_counters.value < 0) = (excluded.value < 0)
             THEN GREATEST(device_counters.value, excluded.value)
         WHEN device_counters.value < 0 THEN device_counters.value
         ELSE excluded.value END,
         updated_ms = excluded.updated_ms";
const SET_STORED: &str = "UPDATE batches SET records_stored = $1 WHERE id = $2";

/// Adds `by` to the persistent counter `name`.
pub(crate) fn bump(w: &mut Writer, name: &str, by: u64) -> Result<(), StoreError> {
    w.run(|w| {
        w.client.execute(BUMP, &[&name, &to_sql_u64(by)])?;
        Ok(())
    })
}

/// One retention chunk (see `retention.rs`), in its own transaction.
pub(crate) fn retain_chunk(w: &mut Writer, cutoff_ms: i64) -> Result<(u64, [u64; 3]), StoreError> {
    w.run(|w| retain_chunk_on(w, cutoff_ms))
}

fn retain_chunk_on(w: &mut Writer, cutoff_ms: i64) -> Result<(u64, [u64; 3]), StoreError> {
    let mut tx = w.client.transaction()?;
    let mut counts = [0u64; 3];
    for (i, (table, key, extra)) in crate::store::retention::TABLES.iter().enumerate() {
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN
                 (SELECT {key} FROM {table} ORDER BY {key} LIMIT $1)
             AND received_ms < $2 {extra}"
        );
        counts[i] = tx.execute(
            &sql,
            &[&crate::store::retention::RETENTION_CHUNK, &cutoff_ms],
        )?;
    }
    tx.commit()?;
    Ok((counts.iter().sum::<u64>(), counts))
}

/// Stores `batches` in one transaction: all of them, or (on error) none.
pub(crate) fn write_batches(
    w: &mut Writer,
    caches: &mut Caches,
    batches: &[(&Batch, IngestMeta)],
) -> Result<Vec<IngestOutcome>, StoreError> {
    caches.bound();
    w.run(|w| write_batches_on(w, caches, batches))
}

fn write_batches_on(
    w: &mut Writer,
    caches: &mut Caches,
    batches: &[(&Batch, IngestMeta)],
) -> Result<Vec<IngestOutcome>, StoreError> {
    let Writer { client, stmts, .. } = w;
    let tx = client.transaction()?;
    let mut ins = Inserter { tx, stmts, caches };
    let mut out = Vec::with_capacity(batches.len());
    for (batch, meta) in batches {
        out.push(ins.ingest(batch, *meta)?);
    }
    ins.tx.commit()?;
    Ok(out)
}

struct Inserter<'a, 'c> {
    tx: Transaction<'c>,
    stmts: &'a mut std::collections::HashMap<&'static str, Statement>,
    caches: &'a mut Caches,
}

impl Inserter<'_, '_> {
    fn stmt(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.stmts.insert(sql, s.clone());
        Ok(s)
    }

    fn exec(&mut self, sql: &'static str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.tx.execute(&s, args)?)
    }

    fn one_i64(
        &mut self,
        sql: &'static str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<i64>, StoreError> {
        let s = self.stmt(sql)?;
        Ok(self.tx.query_opt(&s, args)?.map(|r| r.get(0)))
    }

    fn intern(
        &mut self,
        insert: &'static str,
        select: &'static str,
        key: &(dyn ToSql + Sync),
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<i64, StoreError> {
        self.exec(insert, args)?;
        self.one_i64(select, &[key])?
            .ok_or_else(|| StoreError::BadValue("an interned row vanished".into()))
    }

    fn ingest(&mut self, batch: &Batch, meta: IngestMeta) -> Result<IngestOutcome, StoreError> {
        let id = batch.id();
        let log_ref = self.log_ref(&batch.public_log_id, meta.received_ms)?;
        let batch_id: &[u8] = &id.0[..];
        let new = self.one_i64(
            NEW_BATCH,
            &[
                &batch_id,
                &log_ref,
                &to_sql_u64(batch.first.segment),
                &to_sql_u64(batch.first.offset),
                &to_sql_u64(batch.last.segment),
                &to_sql_u64(batch.last.offset),
                &meta.received_ms,
                &(batch.records.len() as i64),
                &(batch.gaps.len() as i64),
                &to_sql_u64(meta.body_bytes),
                &to_sql_u64(meta.raw_bytes),
            ],
        )?;
        let Some(batch_ref) = new else {
            // Stored before, or by another collector in a transaction that has committed
            // (the insert waited for it).
            let n = self.one_i64(STORED_BATCH, &[&batch_id])?.unwrap_or(0);
            self.exec(BUMP, &[&"batches_duplicate", &1i64])?;
            return Ok(IngestOutcome::Duplicate {
                records_stored: n as u64,
            });
        };
        self.rows(batch, meta, log_ref, batch_ref)
    }

    fn log_ref(&mut self, log_id: &[u8; 32], received_ms: i64) -> Result<i64, StoreError> {
        if let Some(id) = self.caches.logs.get(log_id) {
            return Ok(*id);
        }
        let key: &[u8] = &log_id[..];
        let id = self.intern(NEW_LOG, LOG_ID, &key, &[&key, &received_ms])?;
        self.caches.logs.insert(*log_id, id);
        Ok(id)
    }

    fn class_ref(&mut self, name: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.caches.classes.get(name) {
            return Ok(*id);
        }
        let id = self.intern(NEW_CLASS, CLASS_ID, &name, &[&name])?;
        self.caches.classes.insert(name.to_owned(), id);
        Ok(id)
    }

    fn context_ref(&mut self, fields: &[(String, String)]) -> Result<i64, StoreError> {
        if let Some(id) = self.caches.contexts.get(fields) {
            return Ok(*id);
        }
        let fields_json = serde_json::to_string(fields).unwrap_or_else(|_| "[]".to_owned());
        let digest: [u8; 32] = Sha256::digest(fields_json.as_bytes()).into();
        let d: &[u8] = &digest[..];
        let c: Vec<&str> = CONTEXT_COLUMNS
            .iter()
            .map(|(_, keys)| context_value(fields, keys))
            .collect();
        let id = self.intern(
            NEW_CONTEXT,
            CONTEXT_ID,
            &d,
            &[
                &d,
                &c[0],
                &c[1],
                &c[2],
                &c[3],
                &c[4],
                &c[5],
                &c[6],
                &c[7],
                &fields_json,
            ],
        )?;
        self.caches.contexts.insert(fields.to_vec(), id);
        Ok(id)
    }

    fn rows(
        &mut self,
        batch: &Batch,
        meta: IngestMeta,
        log_ref: i64,
        batch_ref: i64,
    ) -> Result<IngestOutcome, StoreError> {
        let mut ctx_ids = Vec::with_capacity(batch.contexts.len());
        for c in &batch.contexts {
            ctx_ids.push(self.context_ref(&c.fields)?);
        }
        let n = batch.records.len();
        let (mut seg, mut off, mut rid, mut ctx, mut cls) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut sev, mut created, mut boot, mut event, mut payload) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut last_class: Option<(&str, i64)> = None;
        for r in &batch.records {
            let class_ref = match last_class {
                Some((name, id)) if name == r.classification => id,
                _ => {
                    let id = self.class_ref(&r.classification)?;
                    last_class = Some((&r.classification, id));
                    id
                }
            };
            let context_ref = ctx_ids.get(r.context as usize).copied().ok_or_else(|| {
                StoreError::BadBatch(format!(
                    "record {} names context {} of {}",
                    r.position,
                    r.context,
                    ctx_ids.len()
                ))
            })?;
            seg.push(to_sql_u64(r.position.segment));
            off.push(to_sql_u64(r.position.offset));
            rid.push(
                record_id(&batch.public_log_id, r.position.segment, r.position.offset).to_vec(),
            );
            ctx.push(context_ref);
            cls.push(class_ref);
            sev.push(i64::from(r.severity));
            created.push(r.wall_ms);
            boot.push(to_sql_u64(r.boot_ms));
            event.push(r.event_id.as_ref().map(|e| &e[..]));
            payload.push(&r.payload[..]);
        }
        let stored = self.exec(
            RECORDS,
            &[
                &log_ref,
                &batch_ref,
                &meta.received_ms,
                &seg,
                &off,
                &rid,
                &ctx,
                &cls,
                &sev,
                &created,
                &boot,
                &event,
                &payload,
            ],
        )?;
        let dup = n as u64 - stored.min(n as u64);
        for g in &batch.gaps {
            self.exec(
                GAP,
                &[
                    &log_ref,
                    &batch_ref,
                    &g.reason.name(),
                    &i64::from(g.reason.code()),
                    &to_sql_u64(g.start.segment),
                    &to_sql_u64(g.start.offset),
                    &to_sql_u64(g.end.segment),
                    &to_sql_u64(g.end.offset),
                    &to_sql_u64(g.segments),
                    &to_sql_u64(g.records),
                    &to_sql_u64(g.bytes),
                    &g.detail,
                    &meta.received_ms,
                ],
            )?;
        }
        for (name, value) in &batch.counters {
            self.exec(
                DEVICE_COUNTER,
                &[&log_ref, name, &to_sql_u64(*value), &meta.received_ms],
            )?;
        }
        self.exec(SET_STORED, &[&to_sql_u64(stored), &batch_ref])?;
        if dup > 0 {
            self.exec(BUMP, &[&"records_duplicate", &to_sql_u64(dup)])?;
        }
        Ok(IngestOutcome::Stored {
            records_stored: stored,
            records_duplicate: dup,
            gaps: batch.gaps.len() as u64,
        })
    }
}
