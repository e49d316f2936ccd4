//! Per-batch zone maps of both stores: how record filters find their rows without a
//! secondary index entry per record.
//!
//! Records are kept in reception order (`seq`, the rowid) and one writer stores a batch's
//! records back to back, so a batch's records are the contiguous range
//! `batches.first_seq ..= batches.last_seq`. Each batch row also carries the range of
//! creation times of its records and a Bloom filter of their record ids, and `batch_keys`
//! holds one row per (batch, classification / context / severity) with the number of its
//! records that have it. A filter first selects the candidate batches through those small
//! rows (and their indexes), then scans the candidates' rowid ranges with the exact per-row
//! predicate. Ingest writes a handful of zone rows per batch instead of seven index entries
//! per record; the per-row predicates are `query::where_clause`'s, so a zone map can only
//! narrow the scan, never change an answer.
//!
//! PostgreSQL (schema version 2, `pg/schema.rs`) has the same zone rows; there a batch's
//! records are `seq` `batch id << 20 | i` (the writer assigns them, so a batch is one range
//! whatever other collectors write at the same time), and its Bloom filters have a power of
//! two bits so that the probes fit in SQL (`get_bit`, [`pg_bloom_add`]).

use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::Connection;

use super::query::{where_clause, Cursor, RecordQuery};
use super::StoreError;

/// `batch_keys.key` is `kind << KIND_SHIFT | id`: classes, contexts and severities share one
/// small index.
const KIND_SHIFT: u32 = 40;
/// Key kind of a classification (`classes.id`).
pub(crate) const CLASS: i64 = 1 << KIND_SHIFT;
/// Key kind of a context (`contexts.id`).
pub(crate) const CONTEXT: i64 = 2 << KIND_SHIFT;
/// Key kind of a severity (its number).
pub(crate) const SEVERITY: i64 = 3 << KIND_SHIFT;
/// One past the largest id a key can hold.
pub(crate) const KIND_SPAN: i64 = 1 << KIND_SHIFT;

/// Bloom filter bits per record id, and probes per id: a false positive rate of about
/// 0.25 % (a false positive costs one scan of the batch's range).
const BLOOM_BITS_PER_ID: usize = 16;
const BLOOM_PROBES: u64 = 4;

/// The SQL function that tests a record id against a batch's Bloom filter.
pub(crate) const BLOOM_FN: &str = "seglog_rid_in";

/// Registers [`BLOOM_FN`] on `conn` (every connection of the store), and turns off
/// SQLite's automatic indexes: one built on `records` for a query is a scan of every record.
pub(crate) fn register(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "automatic_index", false)?;
    conn.create_scalar_function(
        BLOOM_FN,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let bloom = ctx.get_raw(0).as_blob_or_null().ok().flatten();
            let rid = ctx.get_raw(1).as_blob_or_null().ok().flatten();
            Ok(match (bloom, rid) {
                (Some(b), Some(r)) => bloom_has(b, r),
                _ => false,
            })
        },
    )?;
    Ok(())
}

/// The bit positions of `rid` in a filter of `bits` bits (double hashing; a record id is
/// already a hash).
fn probes(rid: &[u8], bits: u64) -> impl Iterator<Item = u64> {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        for (j, b) in w.iter_mut().enumerate() {
            *b = rid.get(i + j).copied().unwrap_or(0);
        }
        u64::from_le_bytes(w)
    };
    let (h1, h2) = (word(0), word(8) | 1);
    (0..BLOOM_PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits.max(1))
}

/// Whether `rid` may be in the filter `bloom` (false: certainly not).
pub(crate) fn bloom_has(bloom: &[u8], rid: &[u8]) -> bool {
    if bloom.is_empty() {
        return false;
    }
    let bits = bloom.len() as u64 * 8;
    probes(rid, bits).all(|p| bloom[(p / 8) as usize] & (1 << (p % 8)) != 0)
}

/// A Bloom filter sized for `n` record ids.
pub(crate) fn bloom_new(n: usize) -> Vec<u8> {
    vec![0u8; (n.max(4) * BLOOM_BITS_PER_ID).div_ceil(8)]
}

/// Adds `rid` to `bloom` (made by [`bloom_new`]).
pub(crate) fn bloom_add(bloom: &mut [u8], rid: &[u8]) {
    let bits = bloom.len() as u64 * 8;
    for p in probes(rid, bits) {
        bloom[(p / 8) as usize] |= 1 << (p % 8);
    }
}

/// PostgreSQL's Bloom filter bits for `n` record ids: at least [`BLOOM_BITS_PER_ID`] per id,
/// rounded up to a power of two, so a probe is a mask, which SQL can apply.
fn pg_bloom_bits(n: usize) -> u64 {
    (n.max(4) as u64 * BLOOM_BITS_PER_ID as u64).next_power_of_two()
}

/// PostgreSQL's probes of `rid` before masking: its first four 32-bit little-endian words (a
/// record id is already a hash).
pub(crate) fn pg_probes(rid: &[u8]) -> [i64; BLOOM_PROBES as usize] {
    let mut out = [0i64; BLOOM_PROBES as usize];
    for (i, p) in out.iter_mut().enumerate() {
        let mut w = [0u8; 4];
        for (j, b) in w.iter_mut().enumerate() {
            *b = rid.get(i * 4 + j).copied().unwrap_or(0);
        }
        *p = i64::from(u32::from_le_bytes(w));
    }
    out
}

/// A PostgreSQL Bloom filter sized for `n` record ids.
pub(crate) fn pg_bloom_new(n: usize) -> Vec<u8> {
    vec![0u8; (pg_bloom_bits(n) / 8) as usize]
}

/// Adds `rid` to `bloom` (made by [`pg_bloom_new`]): bit `probe & (bits - 1)` for each
/// probe, numbered as PostgreSQL's `get_bit` numbers them (byte `n / 8`, bit `n % 8`).
pub(crate) fn pg_bloom_add(bloom: &mut [u8], rid: &[u8]) {
    let mask = (bloom.len() as i64 * 8 - 1).max(0);
    for p in pg_probes(rid) {
        let bit = p & mask;
        bloom[(bit / 8) as usize] |= 1 << (bit % 8);
    }
}

/// Which store a filter is written for (they differ in the record-id Bloom test only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite: the [`BLOOM_FN`] function.
    Sqlite,
    /// PostgreSQL: `get_bit` on the power-of-two filter.
    Pg,
}

/// The zone map of one batch, gathered while its records are inserted.
#[derive(Debug)]
pub(crate) struct Zone {
    seqs: Option<(i64, i64)>,
    created: (i64, i64),
    keys: Vec<(i64, i64)>,
    bloom: Vec<u8>,
}

impl Zone {
    /// An empty zone for a batch of `records` records.
    pub(crate) fn new(records: usize) -> Zone {
        Zone {
            seqs: None,
            created: (i64::MAX, i64::MIN),
            keys: Vec::new(),
            bloom: bloom_new(records),
        }
    }

    fn key(&mut self, key: i64) {
        // Few distinct keys per batch, and runs of equal ones: a linear search from the end.
        match self.keys.iter_mut().rev().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => self.keys.push((key, 1)),
        }
    }

    /// Adds a stored record.
    pub(crate) fn add(
        &mut self,
        seq: i64,
        class_ref: i64,
        context_ref: i64,
        severity: u8,
        created_ms: i64,
        rid: &[u8],
    ) {
        self.seqs = Some(match self.seqs {
            Some((first, _)) => (first, seq),
            None => (seq, seq),
        });
        self.created = (
            self.created.0.min(created_ms),
            self.created.1.max(created_ms),
        );
        self.key(CLASS + class_ref);
        self.key(CONTEXT + context_ref);
        self.key(SEVERITY + i64::from(severity));
        bloom_add(&mut self.bloom, rid);
    }

    /// Writes the zone of batch `batch_ref` and its count of stored records, in one update
    /// of the batch row (nothing when no record was stored: the batch row was inserted with
    /// `records_stored = 0`). The `batch_keys` rows go in one by one: a statement that
    /// inserts several rows and may abort makes SQLite copy every page it touches into a
    /// statement journal first (measured: a quarter of the writer's time, see BENCHMARKS.md).
    pub(crate) fn write(
        self,
        conn: &Connection,
        batch_ref: i64,
        stored: u64,
    ) -> Result<(), StoreError> {
        let Some((first, last)) = self.seqs else {
            return Ok(());
        };
        conn.prepare_cached(
            "UPDATE batches SET records_stored = ?1, first_seq = ?2, last_seq = ?3,
                 min_created_ms = ?4, max_created_ms = ?5, rid_bloom = ?6 WHERE id = ?7",
        )?
        .execute(rusqlite::params![
            super::to_sql_u64(stored),
            first,
            last,
            self.created.0,
            self.created.1,
            self.bloom,
            batch_ref
        ])?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO batch_keys(batch_ref, key, records) VALUES (?1, ?2, ?3)",
        )?;
        for (key, n) in self.keys {
            insert.execute([batch_ref, key, n])?;
        }
        Ok(())
    }
}

/// A record filter as SQL: `SELECT ... FROM {from} {cond} ORDER BY {desc}`.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    /// The record table, alias `r` (joined to its candidate batches `zb` when zoned).
    pub from: &'static str,
    /// `WHERE ...` (or empty).
    pub cond: String,
    /// Its parameters.
    pub args: Vec<Value>,
    /// Newest first.
    pub desc: &'static str,
    /// Oldest first.
    pub asc: &'static str,
    /// Through the zone maps (else the per-row form over `records r`).
    pub zoned: bool,
}

/// Scanning candidate batches newest first, then each one's records.
const ZONED_FROM: &str = "batches zb JOIN records r ON r.seq BETWEEN zb.first_seq AND zb.last_seq";

/// The same on PostgreSQL, whose planner cannot tell that the `seq` range of one batch is a
/// small part of the records and would rather hash-join a scan of all of them: a lateral
/// subquery that it may not flatten (`OFFSET 0`) makes it a range scan of the primary key per
/// candidate batch. It reads the table `record_rows` (schema version 3) and takes the
/// columns of the view `records` that follow from the batch from the batch row `zb` itself
/// (the view would join each record to its batch again); the columns a query does not use
/// are not computed.
const PG_ZONED_FROM: &str = r#"batches zb CROSS JOIN LATERAL (SELECT r0.seq, zb.log_ref,
         r0.segment, r0."offset",
         seglog_record_id((SELECT l0.log_id FROM logs l0 WHERE l0.id = zb.log_ref),
                          r0.segment, r0."offset") AS record_id,
         zb.id AS batch_ref, r0.context_ref, r0.class_ref, r0.severity::bigint AS severity,
         r0.created_ms, r0.boot_ms, r0.event_id, zb.received_ms, r0.payload
     FROM record_rows r0 WHERE r0.seq BETWEEN zb.first_seq AND zb.last_seq OFFSET 0) r"#;

/// Candidate batches joined to their records, alias `zb` and `r`, in `dialect`.
pub(crate) fn zoned_from(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => ZONED_FROM,
        Dialect::Pg => PG_ZONED_FROM,
    }
}

/// `q` with the per-row predicates only (`records r`, newest first by `seq`): what both
/// stores run when no filter has a zone map or when a per-record index is the better path
/// (the event id; on SQLite the position range of `any_record_between`).
pub(crate) fn plain(q: &RecordQuery) -> Filter {
    let (cond, args) = where_clause(q);
    Filter {
        from: "records r",
        cond,
        args,
        desc: "r.seq DESC",
        asc: "r.seq ASC",
        zoned: false,
    }
}

/// The four `batch_keys` keys of a priority range (for `key IN (?, ?, ?, ?)`): a severity
/// outside the range names key 0, which no row has (kind 0 is unused).
fn severity_keys(lo: u8, hi: u8) -> Vec<Value> {
    (1..=4u8)
        .map(|s| {
            Value::Integer(if (lo..=hi).contains(&s) {
                SEVERITY + i64::from(s)
            } else {
                0
            })
        })
        .collect()
}

/// How many of `q`'s per-record filters are set (cursor, limit and payload options aside).
fn filters(q: &RecordQuery) -> usize {
    [
        q.classification.is_some(),
        q.severity.is_some(),
        q.priority.is_some(),
        q.boot_id.is_some(),
        q.machine_id.is_some(),
        q.build.is_some(),
        q.platform.is_some(),
        q.since.is_some(),
        q.until.is_some(),
        q.log_id.is_some(),
        q.event_id.is_some(),
        q.record_id.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count()
}

/// The `batch_keys` key sets `q` filters on, one `(SQL listing the keys, its values)` per
/// filter on a classification (exact or prefix), a severity, a priority range or a context
/// column (machine id, build, platform, boot id).
fn key_sets(q: &RecordQuery) -> Vec<(String, Vec<Value>)> {
    let mut sets = Vec::new();
    if let Some(v) = &q.classification {
        sets.push(match v.strip_suffix('*') {
            Some(prefix) => (
                format!("SELECT id + {CLASS} FROM classes WHERE name >= ? AND name < ?"),
                vec![
                    Value::Text(prefix.to_owned()),
                    Value::Text(format!("{prefix}\u{7f}")),
                ],
            ),
            None => (
                format!("SELECT id + {CLASS} FROM classes WHERE name = ?"),
                vec![Value::Text(v.clone())],
            ),
        });
    }
    if let Some(v) = q.severity {
        sets.push((
            "?".to_owned(),
            vec![Value::Integer(SEVERITY + i64::from(v))],
        ));
    }
    if let Some((lo, hi)) = q.priority {
        sets.push(("?, ?, ?, ?".to_owned(), severity_keys(lo, hi)));
    }
    for (col, v) in [
        ("machine_id", &q.machine_id),
        ("build", &q.build),
        ("platform", &q.platform),
        ("boot_id", &q.boot_id),
    ] {
        if let Some(v) = v {
            sets.push((
                format!("SELECT id + {CONTEXT} FROM contexts WHERE {col} = ?"),
                vec![Value::Text(v.clone())],
            ));
        }
    }
    sets
}

/// `q` for a store: candidate batches from the zone maps, then their records.
pub(crate) fn zoned(q: &RecordQuery, dialect: Dialect) -> Filter {
    // Event ids keep their (partial, small) per-record index: it finds the few records.
    if filters(q) == 0 || q.event_id.is_some() {
        return plain(q);
    }
    let (row_cond, mut args) = where_clause(q);
    // `+ 0` on both sides: not a join key, or SQLite would look batches up from records or
    // build an automatic index on `records.batch_ref` (a scan of every record).
    let mut conds = vec!["r.batch_ref + 0 = zb.id + 0".to_owned()];
    for (sub, values) in key_sets(q) {
        conds.push(format!(
            "zb.id IN (SELECT batch_ref FROM batch_keys WHERE key IN ({sub}))"
        ));
        args.extend(values);
    }
    let mut push = |cond: &str, v: Value| {
        conds.push(cond.to_owned());
        args.push(v);
    };
    if let Some(t) = q.since {
        push("zb.max_created_ms >= ?", Value::Integer(t.0));
    }
    if let Some(t) = q.until {
        push("zb.min_created_ms < ?", Value::Integer(t.0));
    }
    if let Some(v) = q.log_id {
        push(
            "zb.log_ref = (SELECT id FROM logs WHERE log_id = ?)",
            Value::Blob(v.to_vec()),
        );
    }
    if let Some(v) = q.record_id {
        match dialect {
            Dialect::Sqlite => push(
                &format!("{BLOOM_FN}(zb.rid_bloom, ?)"),
                Value::Blob(v.to_vec()),
            ),
            Dialect::Pg => {
                for p in pg_probes(&v) {
                    push(
                        "get_bit(zb.rid_bloom, ?::bigint & (octet_length(zb.rid_bloom) * 8 - 1)) = 1",
                        Value::Integer(p),
                    );
                }
            }
        }
    }
    if let Some(Cursor(c)) = q.cursor {
        push("zb.first_seq < ?", Value::Integer(c));
    }
    // where_clause's conditions come first: its values are first in `args`.
    let cond = if row_cond.is_empty() {
        format!("WHERE {}", conds.join(" AND "))
    } else {
        format!("{row_cond} AND {}", conds.join(" AND "))
    };
    Filter {
        from: zoned_from(dialect),
        cond,
        args,
        desc: "zb.id DESC, r.seq DESC",
        asc: "zb.id ASC, r.seq ASC",
        zoned: true,
    }
}

/// The number of records matching `q` from the zone maps alone, when `q` has exactly one
/// filter and that filter is a key of `batch_keys` or the device (the per-batch counts are
/// exact): SQL and parameters, else `None` (count the rows).
pub(crate) fn count_from_zones(q: &RecordQuery) -> Option<(String, Vec<Value>)> {
    let keys = |sub: String, v: Vec<Value>| {
        Some((
            format!("SELECT CAST(sum(records) AS BIGINT) FROM batch_keys WHERE key IN ({sub})"),
            v,
        ))
    };
    if filters(q) != 1 {
        return None;
    }
    if let Some((sub, values)) = key_sets(q).into_iter().next() {
        return keys(sub, values);
    }
    q.log_id.map(|l| {
        (
            "SELECT CAST(sum(last_seq - first_seq + 1) AS BIGINT) FROM batches
             WHERE log_ref = (SELECT id FROM logs WHERE log_id = ?)"
                .to_owned(),
            vec![Value::Blob(l.to_vec())],
        )
    })
}

impl super::Store {
    /// `q` as this store runs it (zoned, in its dialect).
    pub(crate) fn record_filter(&self, q: &RecordQuery) -> Filter {
        zoned(q, self.dialect())
    }

    /// The SQL dialect of this store's zone filters.
    pub(crate) fn dialect(&self) -> Dialect {
        if self.pg().is_some() {
            Dialect::Pg
        } else {
            Dialect::Sqlite
        }
    }
}

/// Records created in `[?1, ?2)`, as `FROM ... WHERE ...` over `records r`, through the
/// batches' creation-time ranges.
pub(crate) fn created_window(dialect: Dialect) -> String {
    format!(
        "{} WHERE zb.max_created_ms >= ?1 AND zb.min_created_ms < ?2
           AND r.created_ms >= ?1 AND r.created_ms < ?2",
        zoned_from(dialect)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bloom_filter_has_every_added_id_and_few_others() {
        let ids: Vec<[u8; 16]> = (0..1000u32)
            .map(|i| super::super::record_id(&[7; 32], 1, u64::from(i) * 24))
            .collect();
        let mut b = bloom_new(ids.len());
        for id in &ids {
            bloom_add(&mut b, id);
        }
        assert!(ids.iter().all(|id| bloom_has(&b, id)));
        let others = (0..10_000u32)
            .map(|i| super::super::record_id(&[8; 32], 1, u64::from(i) * 24))
            .filter(|id| bloom_has(&b, id))
            .count();
        // Expected about 0.25 %: 25 of 10,000.
        assert!(others < 100, "{others} false positives of 10,000");
        assert!(!bloom_has(&[], &ids[0]));
    }

    #[test]
    fn a_postgres_bloom_filter_has_every_added_id_and_few_others() {
        let ids: Vec<[u8; 16]> = (0..1000u32)
            .map(|i| super::super::record_id(&[7; 32], 1, u64::from(i) * 24))
            .collect();
        let mut b = pg_bloom_new(ids.len());
        assert!(b.len().is_power_of_two() && b.len() * 8 >= ids.len() * BLOOM_BITS_PER_ID);
        for id in &ids {
            pg_bloom_add(&mut b, id);
        }
        // The test as the SQL of `zoned` makes it with get_bit.
        let has = |rid: &[u8]| {
            let mask = b.len() as i64 * 8 - 1;
            pg_probes(rid).iter().all(|p| {
                let bit = p & mask;
                b[(bit / 8) as usize] & (1 << (bit % 8)) != 0
            })
        };
        assert!(ids.iter().all(|id| has(id)));
        let others = (0..10_000u32)
            .map(|i| super::super::record_id(&[8; 32], 1, u64::from(i) * 24))
            .filter(|id| has(id))
            .count();
        assert!(others < 100, "{others} false positives of 10,000");
    }

    #[test]
    fn zone_rows_count_records_per_key_and_span_their_seqs() {
        let mut z = Zone::new(3);
        z.add(10, 1, 5, 3, 100, &[1; 16]);
        z.add(11, 1, 5, 4, 90, &[2; 16]);
        z.add(12, 2, 5, 3, 120, &[3; 16]);
        assert_eq!(z.seqs, Some((10, 12)));
        assert_eq!(z.created, (90, 120));
        let mut keys = z.keys.clone();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                (CLASS + 1, 2),
                (CLASS + 2, 1),
                (CONTEXT + 5, 3),
                (SEVERITY + 3, 2),
                (SEVERITY + 4, 1)
            ]
        );
    }
}
