//! One retention chunk on PostgreSQL (see `../retention.rs`), as on SQLite: records go by
//! whole batches, oldest first, with their zone rows, so the per-batch counts stay exact and
//! the position ranges used for dedupe name only records that are still stored; a batch row
//! whose records are gone stays, emptied, as long as a gap refers to it.

use super::Writer;
use crate::store::retention::{chunk_batches, Chunk, RETENTION_CHUNK};
use crate::store::StoreError;

/// Deletes one chunk received before `cutoff_ms` in its own transaction: (total, [records,
/// gaps, batches]).
pub(crate) fn retain_chunk(w: &mut Writer, cutoff_ms: i64) -> Result<(u64, [u64; 3]), StoreError> {
    w.run(|w| {
        let mut tx = w.client.transaction()?;
        let counts = chunk(&mut tx, cutoff_ms)?;
        tx.commit()?;
        Ok((counts.iter().sum::<u64>(), counts))
    })
}

fn chunk(tx: &mut postgres::Transaction<'_>, cutoff_ms: i64) -> Result<[u64; 3], StoreError> {
    // The oldest batches with records, while received before the cutoff, up to a chunk.
    let rows = tx.query(
        "SELECT id, first_seq, last_seq, received_ms FROM batches
         WHERE first_seq IS NOT NULL ORDER BY id LIMIT $1",
        &[&RETENTION_CHUNK],
    )?;
    let chunk = chunk_batches(
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))),
        cutoff_ms,
    )?;
    let mut counts = [0u64; 3];
    if let Some(Chunk {
        batches: (lo, hi),
        last_seq,
    }) = chunk
    {
        counts[0] = tx.execute("DELETE FROM record_rows WHERE seq <= $1", &[&last_seq])?;
        tx.execute(
            "DELETE FROM batch_keys WHERE batch_ref BETWEEN $1 AND $2",
            &[&lo, &hi],
        )?;
        tx.execute(
            "UPDATE batches SET first_seq = NULL, last_seq = NULL, min_created_ms = NULL,
                 max_created_ms = NULL, rid_bloom = NULL, pos_lo_segment = NULL,
                 pos_lo_offset = NULL, pos_hi_segment = NULL, pos_hi_offset = NULL
             WHERE id BETWEEN $1 AND $2",
            &[&lo, &hi],
        )?;
    }
    counts[1] = tx.execute(
        "DELETE FROM gaps WHERE id IN (SELECT id FROM gaps ORDER BY id LIMIT $1)
         AND received_ms < $2",
        &[&RETENTION_CHUNK, &cutoff_ms],
    )?;
    counts[2] = tx.execute(
        "DELETE FROM batches WHERE id IN (SELECT id FROM batches ORDER BY id LIMIT $1)
         AND received_ms < $2 AND first_seq IS NULL
         AND id < coalesce((SELECT batch_ref FROM gaps ORDER BY id LIMIT 1), 9223372036854775807)",
        &[&RETENTION_CHUNK, &cutoff_ms],
    )?;
    Ok(counts)
}
