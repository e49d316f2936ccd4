//! Server-side retention (`retain_days`): deletes records, gaps and batches received before a
//! cutoff, oldest first, in small transactions queued on the writer between ingest groups,
//! so ingest never waits for more than one chunk.
//!
//! Each chunk looks only at the oldest `RETENTION_CHUNK` rows by reception order (`seq`,
//! `id`), so a pass costs nothing when nothing is old enough. Deleting a batch row forgets
//! its id: a device that resends a batch after its records expired stores it again.
//! Logs, classes and contexts stay (they are small and shared).
//!
//! On both stores (PostgreSQL: `pg/retention.rs`), records go by whole batches (at least
//! `RETENTION_CHUNK` records, or one batch), oldest first, with their zone rows (`zone.rs`), so the per-batch counts stay
//! exact; a batch row whose records are gone stays, emptied, as long as a gap refers to it.

use rusqlite::params;

use super::{Store, StoreError};

/// Rows deleted per table in one writer transaction.
pub const RETENTION_CHUNK: i64 = 5_000;

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// Records deleted.
    pub records: u64,
    /// Gap entries deleted.
    pub gaps: u64,
    /// Batch entries deleted.
    pub batches: u64,
    /// Writer transactions used.
    pub chunks: u64,
}

impl Store {
    /// Deletes everything received before `cutoff_ms` (ms since the Unix epoch), in chunks
    /// of [`RETENTION_CHUNK`] rows per table, each its own transaction on the writer.
    pub fn retain(&self, cutoff_ms: i64) -> Result<RetentionPass, StoreError> {
        let mut pass = RetentionPass::default();
        loop {
            let (deleted, counts) = self.writer.exec(move |c, _| {
                let c = match c {
                    super::Conn::Sqlite(c) => c,
                    super::Conn::Pg(c) => return super::pg::retention::retain_chunk(c, cutoff_ms),
                };
                let tx = c.transaction()?;
                let counts = sqlite_chunk(&tx, cutoff_ms)?;
                tx.commit()?;
                Ok((counts.iter().sum::<u64>(), counts))
            })?;
            pass.chunks += 1;
            pass.records += counts[0];
            pass.gaps += counts[1];
            pass.batches += counts[2];
            if deleted == 0 {
                return Ok(pass);
            }
        }
    }
}

/// Whole batches to delete in one retention chunk.
pub(crate) struct Chunk {
    /// First and last batch id.
    pub(crate) batches: (i64, i64),
    /// The last batch's last record `seq`: every record up to it goes.
    pub(crate) last_seq: i64,
}

/// The chunk to delete, from the oldest batches that hold records as (id, first_seq,
/// last_seq, received_ms) in id order: whole batches received before `cutoff_ms`, until they
/// hold [`RETENTION_CHUNK`] records; `None` when the oldest is not old enough. Both backends
/// use it, each reading its rows its own way.
pub(crate) fn chunk_batches(
    rows: impl IntoIterator<Item = Result<(i64, i64, i64, i64), StoreError>>,
    cutoff_ms: i64,
) -> Result<Option<Chunk>, StoreError> {
    let (mut ids, mut last_seq, mut records) = (None::<(i64, i64)>, 0i64, 0i64);
    for r in rows {
        let (id, first, last, received) = r?;
        if received >= cutoff_ms {
            break;
        }
        ids = Some((ids.map_or(id, |(lo, _)| lo), id));
        last_seq = last;
        records += last - first + 1;
        if records >= RETENTION_CHUNK {
            break;
        }
    }
    Ok(ids.map(|batches| Chunk { batches, last_seq }))
}

/// One SQLite retention chunk: (records, gaps, batches) deleted.
fn sqlite_chunk(tx: &rusqlite::Transaction<'_>, cutoff_ms: i64) -> Result<[u64; 3], StoreError> {
    // The oldest batches with records, while received before the cutoff, up to a chunk.
    let mut stmt = tx.prepare_cached(
        "SELECT id, first_seq, last_seq, received_ms FROM batches
         WHERE first_seq IS NOT NULL ORDER BY id LIMIT ?1",
    )?;
    let rows = stmt.query_map([RETENTION_CHUNK], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    let chunk = chunk_batches(rows.map(|r| r.map_err(StoreError::from)), cutoff_ms)?;
    drop(stmt);
    let mut counts = [0u64; 3];
    if let Some(Chunk {
        batches: (lo, hi),
        last_seq,
    }) = chunk
    {
        counts[0] = tx.execute("DELETE FROM records WHERE seq <= ?1", [last_seq])? as u64;
        tx.execute(
            "DELETE FROM batch_keys WHERE batch_ref BETWEEN ?1 AND ?2",
            [lo, hi],
        )?;
        tx.execute(
            "UPDATE batches SET first_seq = NULL, last_seq = NULL, min_created_ms = NULL,
                 max_created_ms = NULL, rid_bloom = NULL
             WHERE id BETWEEN ?1 AND ?2",
            [lo, hi],
        )?;
    }
    counts[1] = tx.execute(
        "DELETE FROM gaps WHERE id IN (SELECT id FROM gaps ORDER BY id LIMIT ?1)
         AND received_ms < ?2",
        params![RETENTION_CHUNK, cutoff_ms],
    )? as u64;
    counts[2] = tx.execute(
        "DELETE FROM batches WHERE id IN (SELECT id FROM batches ORDER BY id LIMIT ?1)
         AND received_ms < ?2 AND first_seq IS NULL
         AND id < coalesce((SELECT batch_ref FROM gaps ORDER BY id LIMIT 1), 9223372036854775807)",
        params![RETENTION_CHUNK, cutoff_ms],
    )? as u64;
    Ok(counts)
}
