//! `POST /v1/logs/{private id}/batches`: PROTOCOL.md section 6, step by step.
//!
//! Order matters for cost: the token (by the route's authentication layer, see `auth`) and
//! the URL are checked before a byte of the body is read,
//! `Content-Length` before reading, the body is read with a hard cap, decompression has a
//! hard output cap, and only then is anything decoded or stored. At most
//! `max_concurrent_uploads` requests hold a body in memory at once.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use protocol::{self, Batch, ProtocolError};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::state::AppState;
use crate::store::{IngestMeta, IngestOutcome, StoreError};

/// `Retry-After` (seconds) sent with 503 when all upload slots stay busy.
const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// A refused upload: status, a reason code for counters, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// Counter label (see `metrics::REJECT_REASONS`).
    pub reason: &'static str,
    /// What was wrong.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Where each protocol error goes (PROTOCOL.md section 4): sizes and counts over a limit are
/// 413 (the device splits the batch), over-long strings and everything malformed are 400.
pub fn refusal_for(e: &ProtocolError) -> Refusal {
    let (status, reason) = match e {
        ProtocolError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        ProtocolError::DecompressedTooLarge { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "decompressed_too_large")
        }
        ProtocolError::LimitExceeded { what, .. } if is_count_limit(what) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded")
        }
        ProtocolError::UnsupportedVersion { .. } => {
            (StatusCode::BAD_REQUEST, "unsupported_version")
        }
        ProtocolError::Decompress(_) => (StatusCode::BAD_REQUEST, "bad_zstd"),
        _ => (StatusCode::BAD_REQUEST, "bad_batch"),
    };
    Refusal::new(status, reason, e.to_string())
}

/// The limits of PROTOCOL.md section 4 that answer 413 (counts and the payload size); the
/// string-length limits answer 400.
fn is_count_limit(what: &str) -> bool {
    what.ends_with(" count") || what == "payload length"
}

/// Checks the URL's private id (64 lower-case hex) and returns the public id.
pub fn public_id_from_path(id: &str) -> Result<[u8; 32], Refusal> {
    let ok = id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut private = [0u8; 32];
    if !ok || hex::decode_to_slice(id, &mut private).is_err() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the log id in the URL must be 64 lower-case hex characters",
        ));
    }
    Ok(Sha256::digest(private).into())
}

/// Header checks that need no body: protocol version, content type and encoding, batch id
/// syntax. Returns the batch id the device sent, if any.
pub fn check_headers(h: &HeaderMap) -> Result<Option<[u8; 32]>, Refusal> {
    let text = |name: &str| {
        h.get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_owned())
    };
    if let Some(v) = text(protocol::HEADER_PROTOCOL) {
        if v != protocol::PROTOCOL_VERSION.to_string() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "unsupported_version",
                format!(
                    "{} {v:?} is not supported; this collector speaks version {}",
                    protocol::HEADER_PROTOCOL,
                    protocol::PROTOCOL_VERSION
                ),
            ));
        }
    }
    // PROTOCOL.md section 2: both are required; missing or other is 415.
    let encoding = text(header::CONTENT_ENCODING.as_str()).unwrap_or_default();
    if !encoding.eq_ignore_ascii_case("zstd") {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_media_type",
            format!("Content-Encoding {encoding:?} is not supported; send zstd"),
        ));
    }
    let ctype = text(header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let mime = ctype.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case(protocol::CONTENT_TYPE) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_media_type",
            format!(
                "Content-Type {mime:?} is not supported; send {}",
                protocol::CONTENT_TYPE
            ),
        ));
    }
    match text(protocol::HEADER_BATCH_ID) {
        None => Ok(None),
        Some(v) => {
            let mut id = [0u8; 32];
            let ok = v.len() == 64
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok || hex::decode_to_slice(&v, &mut id).is_err() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "{} must be 64 lower-case hex characters",
                        protocol::HEADER_BATCH_ID
                    ),
                ));
            }
            Ok(Some(id))
        }
    }
}

/// The body did not arrive complete and intact (cut short, a read error, too slow, or not
/// matching its `Content-Digest`): a transport failure, 408 so that every client resends,
/// never a verdict on the batch (PROTOCOL.md section 5).
fn not_intact(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::REQUEST_TIMEOUT, reason, message)
}

/// Decodes a body within `limits` and checks it against the URL's public id and the batch id
/// header (PROTOCOL.md section 6, steps 4 and 5). Pure: this is the fuzzed path.
pub fn decode_upload(
    body: &[u8],
    public_id: &[u8; 32],
    header_batch_id: Option<&[u8; 32]>,
    limits: &protocol::Limits,
) -> Result<(Batch, u64), Refusal> {
    let raw = protocol::decompress_body(body, limits).map_err(|e| refusal_for(&e))?;
    let batch = protocol::decode_batch_raw(&raw, limits).map_err(|e| refusal_for(&e))?;
    if &batch.public_log_id != public_id {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "log_id_mismatch",
            "the batch's public log id is not sha256 of the private id in the URL",
        ));
    }
    if let Some(h) = header_batch_id {
        let id = batch.id();
        if &id.0 != h {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "batch_id_mismatch",
                format!(
                    "{} {} does not match the id computed from the body, {id}",
                    protocol::HEADER_BATCH_ID,
                    hex::encode(h)
                ),
            ));
        }
    }
    Ok((batch, raw.len() as u64))
}

fn refuse(st: &AppState, r: Refusal) -> Response {
    st.reject(r.reason);
    let mut resp = (r.status, Json(json!({ "error": r.message }))).into_response();
    resp.headers_mut().insert(
        protocol::HEADER_PROTOCOL,
        header::HeaderValue::from(u16::from(protocol::PROTOCOL_VERSION)),
    );
    if r.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of a cut body may still be on its way: do not read it as a new request.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    if r.status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(BUSY_RETRY_AFTER_SECS),
        );
    }
    resp
}

/// A refusal of a body that arrived complete and intact: carries the
/// `Seglog-Received-Digest` of the bytes read, the device's proof that the refusal is about the
/// batch and not about bytes lost on the way (PROTOCOL.md section 5).
fn refuse_intact(st: &AppState, r: Refusal, received_digest: &str) -> Response {
    let mut resp = refuse(st, r);
    if let Ok(v) = header::HeaderValue::from_str(received_digest) {
        resp.headers_mut()
            .insert(protocol::HEADER_RECEIVED_DIGEST, v);
    }
    resp
}

fn busy() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the collector is busy; retry later",
    )
}

/// Reads an upload body as it arrives: each piece within `idle_timeout` of the one before,
/// the whole within `body_timeout` (else 408: the body is incomplete), at most `max` bytes
/// (else 413), every byte counted against the receive budget while it is held (503 when no
/// room frees up within `upload_queue_timeout`).
async fn read_body<'a>(
    st: &'a AppState,
    mut body: Body,
    max: u64,
) -> Result<(Vec<u8>, Option<tokio::sync::SemaphorePermit<'a>>), Refusal> {
    let l = &st.cfg.limits;
    let deadline = tokio::time::Instant::now() + l.body_timeout;
    let mut buf: Vec<u8> = Vec::new();
    let mut held: Option<tokio::sync::SemaphorePermit<'a>> = None;
    loop {
        let until = deadline.min(tokio::time::Instant::now() + l.idle_timeout);
        let frame = match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) => {
                return Err(not_intact(
                    "incomplete_body",
                    "the body did not arrive in time; resend it",
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(not_intact(
                    "incomplete_body",
                    format!("the body did not arrive complete ({e}); resend it"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() as u64 + data.len() as u64 > max {
            return Err(refusal_for(&ProtocolError::BodyTooLarge {
                len: max + 1,
                max,
            }));
        }
        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let permit =
            match tokio::time::timeout(l.upload_queue_timeout, st.receive_budget.acquire_many(n))
                .await
            {
                Ok(Ok(p)) => p,
                _ => return Err(busy()),
            };
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf, held))
}

/// Bodies up to this size are decoded on the async thread that read them (see
/// `upload_inner`) ...
const INLINE_MAX_BODY_BYTES: usize = 16 << 10;
/// ... when their zstd frame header states at most this many decompressed bytes (a batch of
/// about 100 small records). The header is only a hint: the inline decoder stops at this
/// size, and a body that inflates further is decoded again on the blocking pool with the
/// configured limit. Bigger batches go to the blocking pool: decoding a thousand records on
/// an async thread made the 1,000-record HTTP load slower (BENCHMARKS.md).
const INLINE_MAX_RAW_BYTES: u64 = 32 << 10;

/// Whether `body` is small enough to decode on the async thread.
fn decode_inline(body: &[u8]) -> bool {
    body.len() <= INLINE_MAX_BODY_BYTES
        && zstd::zstd_safe::get_frame_content_size(body)
            .ok()
            .flatten()
            .is_some_and(|n| n <= INLINE_MAX_RAW_BYTES)
}

/// A refusal, with the `Seglog-Received-Digest` when the body arrived intact.
type Refused = (Refusal, Option<String>);

/// What a body is checked against (PROTOCOL.md section 6, steps 3 to 5).
struct Checked {
    public_id: [u8; 32],
    header_id: Option<[u8; 32]>,
    limits: protocol::Limits,
    sent_digest: Option<String>,
}

impl Checked {
    /// Checks the body's `Content-Digest`, decodes it (decompressing to at most `max_raw`
    /// bytes) and queues it for forwarding when `forward` is set. `Ok(None)`: the body
    /// inflates past a `max_raw` below the configured limit (decode it again with that).
    fn run(
        &self,
        bytes: &[u8],
        forward: Option<&crate::forward::Forwarder>,
        max_raw: u64,
    ) -> Result<Option<(Batch, u64)>, Refused> {
        let received = protocol::content_digest(bytes);
        if let Some(sent) = &self.sent_digest {
            if protocol::verify_content_digest(sent, bytes) == Some(false) {
                let why = format!(
                    "the body does not match its {} (received {received}); resend it",
                    protocol::HEADER_CONTENT_DIGEST
                );
                return Err((not_intact("damaged_body", why), None));
            }
        }
        let mut limits = self.limits;
        let inline = max_raw < limits.max_decompressed_bytes;
        limits.max_decompressed_bytes = limits.max_decompressed_bytes.min(max_raw);
        let (batch, raw_len) =
            match decode_upload(bytes, &self.public_id, self.header_id.as_ref(), &limits) {
                Ok(v) => v,
                Err(r) if inline && r.reason == "decompressed_too_large" => return Ok(None),
                Err(r) => return Err((r, Some(received))),
            };
        if let Some(f) = forward {
            // Queued before the store commits: whatever is stored is in the queue.
            if let Err(e) = f.queue(&batch.id().0, bytes) {
                let why = format!("cannot queue the batch for forwarding ({e}); resend it");
                let r = Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "forward_queue", why);
                return Err((r, None));
            }
        }
        Ok(Some((batch, raw_len)))
    }
}

/// The upload handler (behind the upload-token layer).
pub(crate) async fn upload(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let _guard = st.metrics.upload_started();
    let resp = upload_inner(&st, &id, &headers, body).await;
    st.metrics.observe_upload(started.elapsed());
    resp
}

async fn upload_inner(st: &Arc<AppState>, id: &str, headers: &HeaderMap, body: Body) -> Response {
    let public_id = match public_id_from_path(id) {
        Ok(p) => p,
        Err(r) => return refuse(st, r),
    };
    let header_id = match check_headers(headers) {
        Ok(h) => h,
        Err(r) => return refuse(st, r),
    };
    let limits = st.cfg.limits.protocol();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limits.max_body_bytes) {
        return refuse(
            st,
            refusal_for(&ProtocolError::BodyTooLarge {
                len: n,
                max: limits.max_body_bytes,
            }),
        );
    }
    // The body first, without an upload slot: a slow or stalled peer holds only the bytes it
    // actually sent (from the receive budget), never a slot that fast uploads need.
    let (bytes, _budget) = match read_body(st, body, limits.max_body_bytes).await {
        Ok(v) => v,
        Err(r) => return refuse(st, r),
    };
    let slot = match tokio::time::timeout(
        st.cfg.limits.upload_queue_timeout,
        st.upload_slots.acquire(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => return refuse(st, busy()),
    };
    let sent_digest = headers
        .get(protocol::HEADER_CONTENT_DIGEST)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body_len = bytes.len() as u64;
    let check = Checked {
        public_id,
        header_id,
        limits,
        sent_digest,
    };
    // A small body is decoded right here: zstd of a few KiB and the decoder take
    // microseconds, less than the hand-off to the blocking pool and back. A larger body, one
    // that inflates past `INLINE_MAX_RAW_BYTES`, and every body to forward (a file append)
    // go to the blocking pool.
    let inline = st.forward.is_none() && decode_inline(&bytes);
    let first = if inline {
        check.run(&bytes, None, INLINE_MAX_RAW_BYTES)
    } else {
        Ok(None)
    };
    let decoded = match first {
        Ok(Some(v)) => Ok(v),
        Ok(None) => {
            let blocking = st
                .blocking(move |s| {
                    let max = check.limits.max_decompressed_bytes;
                    Ok(match check.run(&bytes, s.forward.as_deref(), max) {
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => Err((
                            refusal_for(&ProtocolError::DecompressedTooLarge { max }),
                            None,
                        )),
                        Err(e) => Err(e),
                    })
                })
                .await;
            match blocking {
                Ok(r) => r,
                Err(e) => {
                    st.reject("internal");
                    return e.into_response();
                }
            }
        }
        Err(e) => Err(e),
    };
    let (batch, raw_len) = match decoded {
        Ok(v) => v,
        Err((r, Some(received))) => return refuse_intact(st, r, &received),
        Err((r, None)) => return refuse(st, r),
    };
    // Decoding is done: the slot goes to the next upload while this one waits for the writer.
    drop(slot);
    drop(_budget);
    let batch_id = batch.id();
    let records = batch.records.len() as u64;
    // Device values: any u64, so the total saturates instead of overflowing.
    let gap_records = batch
        .gaps
        .iter()
        .fold(0u64, |n, g| n.saturating_add(g.records));
    let meta = IngestMeta {
        body_bytes: body_len,
        raw_bytes: raw_len,
        received_ms: crate::api::now_ms(),
    };
    let reply = match st.store.try_submit(batch, meta) {
        Ok(r) => r,
        Err(o) => return overloaded(st, o.retry_after_secs),
    };
    let result = match reply.await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Err(crate::api::ApiError::internal(e)),
        Err(_) => Err(crate::api::ApiError::internal(StoreError::WriterGone)),
    };
    match result {
        Ok(outcome) => {
            st.metrics.bytes(body_len, raw_len);
            let body = match outcome {
                IngestOutcome::Stored {
                    records_stored,
                    records_duplicate,
                    gaps,
                } => {
                    st.metrics
                        .stored(records_stored, records_duplicate, gaps, gap_records);
                    json!({
                        "batch_id": batch_id.to_hex(),
                        "records": records,
                        "duplicate": false,
                        "stored": records_stored,
                        "records_already_stored": records_duplicate,
                        "gaps": gaps,
                    })
                }
                IngestOutcome::Duplicate { records_stored } => {
                    st.metrics.duplicate();
                    json!({
                        "batch_id": batch_id.to_hex(),
                        "records": records,
                        "duplicate": true,
                        "stored": records_stored,
                    })
                }
            };
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => {
            st.reject("internal");
            e.into_response()
        }
    }
}

/// The writer queue is full: 429 with `Retry-After` at once, so the device backs off instead
/// of waiting on a request that would time out.
fn overloaded(st: &AppState, retry_after_secs: u64) -> Response {
    let mut resp = refuse(
        st,
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "the collector's write queue is full; retry later",
        ),
    );
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(retry_after_secs),
    );
    resp
}

#[cfg(test)]
mod tests;
