//! The pending gap report of a dead-lettered batch, persisted until the server acknowledges it.
//!
//! When a batch is dead-lettered, its range is reported as a gap-only batch under the same
//! batch id. That report is data: it is sent until acknowledged (retried on 5xx and connection
//! errors like any batch) and survives a crash, so the cursor never moves past the range
//! before the server knows what was lost there.
//!
//! `<log dir>/upload/gap-report` holds the exact zstd body followed by sha256 of the body
//! (32 bytes), replaced atomically. It is valid while the cursor's in-flight range equals the
//! body's `[first, last)`; otherwise it is stale and removed.
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::batch::{Built, End};
use crate::protocol::{self, BatchId};

/// File name of the pending report in the upload directory.
pub const GAP_REPORT_FILE: &str = "gap-report";

/// Persists `r` durably (0600, temp file + rename + fsync).
pub(super) fn save(updir: &Path, r: &Built) -> std::io::Result<()> {
    let mut bytes = r.body.clone();
    bytes.extend_from_slice(&Sha256::digest(&r.body));
    crate::cursor::write_atomic(updir, GAP_REPORT_FILE, &bytes)
}

/// Removes the pending report (a missing file is fine).
pub(super) fn remove(updir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(updir.join(GAP_REPORT_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Loads the pending report of log `public`: `Ok(None)` when there is none; `Err` names why
/// an existing file is unusable (damaged, another log's).
/// The saved report (always in seglog's encoding, whatever the wire protocol), with its body
/// encoded for the wire as `format` says.
pub(super) fn load(
    updir: &Path,
    public: &[u8; 32],
    format: crate::batch::BodyFormat,
    level: i32,
) -> Result<Option<Built>, String> {
    let path = updir.join(GAP_REPORT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let damaged = || format!("{} is damaged (checksum mismatch)", path.display());
    let split = bytes.len().checked_sub(32).ok_or_else(damaged)?;
    let (body, sum) = bytes.split_at(split);
    if Sha256::digest(body).as_slice() != sum {
        return Err(damaged());
    }
    let batch = protocol::decode_body(body, &protocol::Limits::default())
        .map_err(|e| format!("{} does not decode: {e}", path.display()))?;
    if batch.public_log_id != *public {
        return Err(format!("{} belongs to another log", path.display()));
    }
    let body = match format {
        crate::batch::BodyFormat::Seglog => body.to_vec(),
        _ => crate::batch::encode_body(&batch, format, level)
            .map_err(|e| format!("{} cannot be re-encoded: {e}", path.display()))?,
    };
    Ok(Some(Built {
        id: BatchId::new(public, batch.first, batch.last),
        first: batch.first,
        last: batch.last,
        body,
        raw_len: 0,
        records: 0,
        payload_bytes: 0,
        frame_bytes: 0,
        gaps: batch.gaps,
        end: End::Full,
        oldest_wall_ms: None,
        // Not saved with the report; after a restart the trim ledger alone answers for a
        // trimmed gap that starts at its end.
        last_records_before: None,
    }))
}
