//! Writing batches into PostgreSQL (schema version 3): one transaction per group, no
//! per-record index but the primary key (and the event-id partial index).
//!
//! - **Logs are locked.** The group first takes a transaction-scoped advisory lock per log
//!   it writes (two-key form, namespace [`LOG_LOCK_NS`], in ascending key order so two
//!   collectors never wait on each other crosswise). Everything below about one log happens
//!   with no other collector writing that log at the same time; its committed writes are
//!   visible once the lock is granted (each statement reads the newest committed state).
//! - **Dedupe by batch id**: a stored batch id is answered `duplicate` and nothing is written.
//! - **Dedupe by position**, exact without a per-record unique index: each batch row holds
//!   the smallest and largest position of the records it stored (`pos_lo`, `pos_hi`,
//!   index `batches_positions`). A new batch looks up the stored batches of its log whose
//!   range meets its own; when there are any (a re-cut batch after a crash, the rare case) the
//!   positions of their records are read (by `seq` range) and those records are skipped.
//! - **Seq by batch**: the batch's id is drawn first; its stored records get
//!   `id << SEQ_SHIFT | i`, so the batch is one `seq` range (its zone map, `zone.rs`) even
//!   while other collectors insert.
//! - **COPY**: the group's records go in one binary `COPY`, its `batch_keys` in one `unnest`
//!   insert, at the end of the group (or before a position lookup that may need them).

use std::collections::HashSet;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Statement, Transaction};
use protocol::Batch;
use sha2::{Digest, Sha256};

use super::schema::SEQ_SHIFT;
use super::Writer;
use crate::store::ingest_sql::Caches;
use crate::store::zone::{self, CLASS, CONTEXT, SEVERITY};
use crate::store::{
    context_value, record_id, to_sql_u64, IngestMeta, IngestOutcome, StoreError, CONTEXT_COLUMNS,
};

/// First key of the writers' two-key advisory locks on logs ("sglg").
const LOG_LOCK_NS: i32 = 0x7367_6c67;

const LOCK_LOGS: &str = "SELECT count(pg_advisory_xact_lock($1, k)) FROM unnest($2::int4[]) AS k";
const BUMP: &str = "INSERT INTO counters(name, value) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value";
/// Whether the batch is stored; a fresh batch id; the `seq` ranges of the stored batches of
/// the log whose position range meets `[$3/$4, $5/$6]` (when `$7`).
const PROBE: &str = "SELECT (SELECT records_stored FROM batches WHERE batch_id = $1),
         nextval('batches_id_seq'),
         ARRAY(SELECT first_seq FROM batches WHERE $7 AND log_ref = $2
               AND (pos_hi_segment, pos_hi_offset) >= ($3, $4)
               AND (pos_lo_segment, pos_lo_offset) <= ($5, $6) AND first_seq IS NOT NULL
               ORDER BY id),
         ARRAY(SELECT last_seq FROM batches WHERE $7 AND log_ref = $2
               AND (pos_hi_segment, pos_hi_offset) >= ($3, $4)
               AND (pos_lo_segment, pos_lo_offset) <= ($5, $6) AND first_seq IS NOT NULL
               ORDER BY id)";
const POSITIONS: &str = r#"SELECT segment, "offset" FROM record_rows WHERE seq BETWEEN $1 AND $2"#;
const NEW_BATCH: &str = "INSERT INTO batches(id, batch_id, log_ref, first_segment, first_offset,
         last_segment, last_offset, received_ms, records, records_stored, gaps, body_bytes,
         raw_bytes, first_seq, last_seq, min_created_ms, max_created_ms, rid_bloom,
         pos_lo_segment, pos_lo_offset, pos_hi_segment, pos_hi_offset)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
             $19, $20, $21, $22)
     ON CONFLICT (batch_id) DO NOTHING";
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
/// Only the record's own columns (schema version 3): its log, batch, reception time and
/// record id follow from its batch and position (the view `records` adds them).
const COPY_RECORDS: &str = r#"COPY record_rows(seq, segment, "offset", context_ref, class_ref,
         created_ms, boot_ms, severity, event_id, payload)
     FROM STDIN (FORMAT binary)"#;
const COPY_TYPES: [Type; 10] = [
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT2,
    Type::BYTEA,
    Type::BYTEA,
];
const BATCH_KEYS: &str = "INSERT INTO batch_keys(batch_ref, key, records)
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[])";
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

/// Adds `by` to the persistent counter `name`.
pub(crate) fn bump(w: &mut Writer, name: &str, by: u64) -> Result<(), StoreError> {
    w.run(|w| {
        w.client.execute(BUMP, &[&name, &to_sql_u64(by)])?;
        Ok(())
    })
}

/// The advisory lock key of a log (hash collisions only make two logs share a lock).
fn log_lock_key(public_log_id: &[u8; 32]) -> i32 {
    i32::from_le_bytes([
        public_log_id[0],
        public_log_id[1],
        public_log_id[2],
        public_log_id[3],
    ])
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
    let mut tx = client.transaction()?;
    let mut keys: Vec<i32> = batches
        .iter()
        .map(|(b, _)| log_lock_key(&b.public_log_id))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // unnest yields the array in order, and the aggregate takes the locks in that order.
    tx.query_one(LOCK_LOGS, &[&LOG_LOCK_NS, &keys])?;
    let mut ins = Inserter {
        tx,
        stmts,
        caches,
        rows: Vec::new(),
        keys: (Vec::new(), Vec::new(), Vec::new()),
    };
    let mut out = Vec::with_capacity(batches.len());
    for (batch, meta) in batches {
        out.push(ins.ingest(batch, *meta)?);
    }
    ins.flush()?;
    ins.tx.commit()?;
    Ok(out)
}

/// A record waiting for the group's `COPY`.
struct Row<'b> {
    seq: i64,
    segment: i64,
    offset: i64,
    /// For the batch's Bloom filter only (not stored).
    rid: [u8; 16],
    context_ref: i64,
    class_ref: i64,
    severity: i16,
    created_ms: i64,
    boot_ms: i64,
    event_id: Option<&'b [u8]>,
    payload: &'b [u8],
}

/// The zone map of one batch for PostgreSQL (see `zone.rs`).
struct PgZone {
    created: (i64, i64),
    pos: Option<((i64, i64), (i64, i64))>,
    keys: Vec<(i64, i64)>,
    bloom: Vec<u8>,
}

impl PgZone {
    fn key(&mut self, key: i64) {
        match self.keys.iter_mut().rev().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.keys.push((key, 1)),
        }
    }

    fn add(&mut self, r: &Row<'_>) {
        self.created = (
            self.created.0.min(r.created_ms),
            self.created.1.max(r.created_ms),
        );
        let p = (r.segment, r.offset);
        self.pos = Some(match self.pos {
            Some((lo, hi)) => (lo.min(p), hi.max(p)),
            None => (p, p),
        });
        self.key(CLASS + r.class_ref);
        self.key(CONTEXT + r.context_ref);
        self.key(SEVERITY + i64::from(r.severity));
        zone::pg_bloom_add(&mut self.bloom, &r.rid);
    }
}

struct Inserter<'a, 'c, 'b> {
    tx: Transaction<'c>,
    stmts: &'a mut std::collections::HashMap<&'static str, Statement>,
    caches: &'a mut Caches,
    /// Records of this group not yet copied.
    rows: Vec<Row<'b>>,
    /// `batch_keys` rows of this group (batch, key, records).
    keys: (Vec<i64>, Vec<i64>, Vec<i64>),
}

impl<'b> Inserter<'_, '_, 'b> {
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

    /// Writes the records and `batch_keys` rows gathered so far.
    fn flush(&mut self) -> Result<(), StoreError> {
        if !self.rows.is_empty() {
            let sink = self.tx.copy_in(COPY_RECORDS)?;
            let mut w = BinaryCopyInWriter::new(sink, &COPY_TYPES);
            for r in self.rows.drain(..) {
                w.write(&[
                    &r.seq,
                    &r.segment,
                    &r.offset,
                    &r.context_ref,
                    &r.class_ref,
                    &r.created_ms,
                    &r.boot_ms,
                    &r.severity,
                    &r.event_id,
                    &r.payload,
                ])?;
            }
            w.finish()?;
        }
        if !self.keys.0.is_empty() {
            let (b, k, n) = std::mem::take(&mut self.keys);
            self.exec(BATCH_KEYS, &[&b, &k, &n])?;
        }
        Ok(())
    }

    fn ingest(&mut self, batch: &'b Batch, meta: IngestMeta) -> Result<IngestOutcome, StoreError> {
        if batch.records.len() > 1 << SEQ_SHIFT {
            return Err(StoreError::BadBatch(format!(
                "{} records in one batch; the PostgreSQL store takes at most {} \
                 (lower [collector] max_records_per_batch)",
                batch.records.len(),
                1u64 << SEQ_SHIFT
            )));
        }
        let id = batch.id();
        let batch_id: &[u8] = &id.0[..];
        let log_ref = self.log_ref(&batch.public_log_id, meta.received_ms)?;
        // The batch's position range, in the signed order the columns compare in.
        let positions = batch.records.iter().map(|r| {
            (
                to_sql_u64(r.position.segment),
                to_sql_u64(r.position.offset),
            )
        });
        let lo = positions.clone().min().unwrap_or((0, 0));
        let hi = positions.max().unwrap_or((0, 0));
        let has_records = !batch.records.is_empty();
        let probe = self.stmt(PROBE)?;
        let row = self.tx.query_one(
            &probe,
            &[
                &batch_id,
                &log_ref,
                &lo.0,
                &lo.1,
                &hi.0,
                &hi.1,
                &has_records,
            ],
        )?;
        if let Some(n) = row.try_get::<_, Option<i64>>(0)? {
            self.exec(BUMP, &[&"batches_duplicate", &1i64])?;
            return Ok(IngestOutcome::Duplicate {
                records_stored: n as u64,
            });
        }
        let batch_ref: i64 = row.try_get(1)?;
        let firsts: Vec<i64> = row.try_get(2)?;
        let lasts: Vec<i64> = row.try_get(3)?;
        let mut stored_before: HashSet<(i64, i64)> = HashSet::new();
        if !firsts.is_empty() {
            // A batch of this group may be among them: its records must be in the table.
            self.flush()?;
            let s = self.stmt(POSITIONS)?;
            for (a, b) in firsts.iter().zip(&lasts) {
                for r in self.tx.query(&s, &[a, b])? {
                    stored_before.insert((r.try_get(0)?, r.try_get(1)?));
                }
            }
        }
        self.rows_of(batch, batch_id, meta, (log_ref, batch_ref), &stored_before)
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

    fn rows_of(
        &mut self,
        batch: &'b Batch,
        batch_id: &[u8],
        meta: IngestMeta,
        (log_ref, batch_ref): (i64, i64),
        stored_before: &HashSet<(i64, i64)>,
    ) -> Result<IngestOutcome, StoreError> {
        let mut ctx_ids = Vec::with_capacity(batch.contexts.len());
        for c in &batch.contexts {
            ctx_ids.push(self.context_ref(&c.fields)?);
        }
        let mut zone = PgZone {
            created: (i64::MAX, i64::MIN),
            pos: None,
            keys: Vec::new(),
            bloom: zone::pg_bloom_new(batch.records.len()),
        };
        let mut rows = Vec::with_capacity(batch.records.len());
        let mut last_class: Option<(&str, i64)> = None;
        for r in &batch.records {
            let (segment, offset) = (
                to_sql_u64(r.position.segment),
                to_sql_u64(r.position.offset),
            );
            if stored_before.contains(&(segment, offset)) {
                continue;
            }
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
            let row = Row {
                seq: (batch_ref << SEQ_SHIFT) + rows.len() as i64,
                segment,
                offset,
                rid: record_id(&batch.public_log_id, r.position.segment, r.position.offset),
                context_ref,
                class_ref,
                severity: i16::from(r.severity),
                created_ms: r.wall_ms,
                boot_ms: to_sql_u64(r.boot_ms),
                event_id: r.event_id.as_ref().map(|e| &e[..]),
                payload: &r.payload[..],
            };
            zone.add(&row);
            rows.push(row);
        }
        let stored = rows.len() as u64;
        let dup = batch.records.len() as u64 - stored;
        let seqs = rows.first().zip(rows.last()).map(|(a, b)| (a.seq, b.seq));
        let (created, bloom) = match seqs {
            Some(_) => (Some(zone.created), Some(&zone.bloom[..])),
            None => (None, None),
        };
        let (pos_lo, pos_hi) = (zone.pos.map(|p| p.0), zone.pos.map(|p| p.1));
        let inserted = self.exec(
            NEW_BATCH,
            &[
                &batch_ref,
                &batch_id,
                &log_ref,
                &to_sql_u64(batch.first.segment),
                &to_sql_u64(batch.first.offset),
                &to_sql_u64(batch.last.segment),
                &to_sql_u64(batch.last.offset),
                &meta.received_ms,
                &(batch.records.len() as i64),
                &to_sql_u64(stored),
                &(batch.gaps.len() as i64),
                &to_sql_u64(meta.body_bytes),
                &to_sql_u64(meta.raw_bytes),
                &seqs.map(|s| s.0),
                &seqs.map(|s| s.1),
                &created.map(|c| c.0),
                &created.map(|c| c.1),
                &bloom,
                &pos_lo.map(|p| p.0),
                &pos_lo.map(|p| p.1),
                &pos_hi.map(|p| p.0),
                &pos_hi.map(|p| p.1),
            ],
        )?;
        if inserted == 0 {
            // Another transaction stored this batch id (the log lock makes this unlikely:
            // a batch id names its log).
            let n = self.one_i64(STORED_BATCH, &[&batch_id])?.unwrap_or(0);
            self.exec(BUMP, &[&"batches_duplicate", &1i64])?;
            return Ok(IngestOutcome::Duplicate {
                records_stored: n as u64,
            });
        }
        if seqs.is_some() {
            for (key, n) in zone.keys {
                self.keys.0.push(batch_ref);
                self.keys.1.push(key);
                self.keys.2.push(n);
            }
        }
        self.rows.extend(rows);
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
