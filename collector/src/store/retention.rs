//! Server-side retention (`retain_days`): deletes records, gaps and batches received before a
//! cutoff, oldest first, in small transactions queued on the writer between ingest groups,
//! so ingest never waits for more than one chunk.
//!
//! Each chunk looks only at the oldest `RETENTION_CHUNK` rows by reception order (`seq`,
//! `id`), so a pass costs nothing when nothing is old enough. Deleting a batch row forgets
//! its id: a device that resends a batch after its records expired stores it again.
//! Logs, classes and contexts stay (they are small and shared).

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

/// (table, key column, extra condition) in deletion order. Batches and their records are
/// inserted in the same order, so a batch older than the batch of the oldest remaining
/// record (and gap) has none left: it goes only then, and queries that join records to
/// batches never lose a row early.
pub(super) const TABLES: [(&str, &str, &str); 3] = [
    ("records", "seq", ""),
    ("gaps", "id", ""),
    (
        "batches",
        "id",
        "AND id < coalesce((SELECT batch_ref FROM records ORDER BY seq LIMIT 1), 9223372036854775807)
         AND id < coalesce((SELECT batch_ref FROM gaps ORDER BY id LIMIT 1), 9223372036854775807)",
    ),
];

impl Store {
    /// Deletes everything received before `cutoff_ms` (ms since the Unix epoch), in chunks
    /// of [`RETENTION_CHUNK`] rows per table, each its own transaction on the writer.
    pub fn retain(&self, cutoff_ms: i64) -> Result<RetentionPass, StoreError> {
        let mut pass = RetentionPass::default();
        loop {
            let (deleted, counts) = self.writer.exec(move |c, _| {
                let c = match c {
                    super::Conn::Sqlite(c) => c,
                    super::Conn::Pg(c) => return super::pg::ingest::retain_chunk(c, cutoff_ms),
                };
                let tx = c.transaction()?;
                let mut counts = [0u64; 3];
                for (i, (table, key, extra)) in TABLES.iter().enumerate() {
                    let sql = format!(
                        "DELETE FROM {table} WHERE {key} IN
                             (SELECT {key} FROM {table} ORDER BY {key} LIMIT ?1)
                         AND received_ms < ?2 {extra}"
                    );
                    counts[i] = tx.execute(&sql, params![RETENTION_CHUNK, cutoff_ms])? as u64;
                }
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
