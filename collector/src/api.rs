//! The read API: `GET /api/records`, `GET /api/gaps`, `GET /api/stats`.
//!
//! Query parameters follow the telemetrics backend (classification, severity, machine_id,
//! build, created_in_days, created_in_sec, limit) with the same validation, plus `since`,
//! `until`, `log_id`, `event_id`, `record_id`, `platform`, `include_payload` and `cursor`.
//! Every bad parameter is a 400 whose JSON body names it:
//! `{"error": "<sentence>", "parameter": "<name>"}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::config::MAX_QUERY_LIMIT;
use crate::store::{Cursor, GapRow, RecordPage, RecordQuery, RecordRow, Stats, TimeBound};

/// Parameters `GET /api/records` accepts.
pub const RECORD_PARAMS: [&str; 17] = [
    "classification",
    "severity",
    "priority",
    "boot_id",
    "machine_id",
    "build",
    "platform",
    "created_in_days",
    "created_in_sec",
    "since",
    "until",
    "log_id",
    "event_id",
    "record_id",
    "include_payload",
    "limit",
    "cursor",
];

/// Longest classification filter (the telemetrics backend's limit).
pub const MAX_CLASSIFICATION: usize = 140;
/// Exact length of a machine id.
pub const MACHINE_ID_LEN: usize = 32;
/// Longest build (and platform) filter.
pub const MAX_BUILD: usize = 256;
/// Largest `created_in_days` (100 years; keeps the arithmetic in range).
const MAX_DAYS: u64 = 36_500;

/// A refused request: status, the offending parameter, and a sentence saying what is wrong
/// and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The parameter at fault, if one is.
    pub parameter: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            parameter: Some(param.to_owned()),
            message: message.into(),
        }
    }

    /// A 500 (the cause is logged, not shown).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        eprintln!("seglog collector: internal error: {e}");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            parameter: None,
            message: "internal error; see the collector's log".to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(p) = self.parameter {
            body["parameter"] = Value::String(p);
        }
        (self.status, Json(body)).into_response()
    }
}

/// Milliseconds since the Unix epoch, saturating.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 with milliseconds (`2015-09-30T00:39:35.123Z`); times before 1970 or past
/// year 9999 print as the raw millisecond number.
pub fn rfc3339(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(n) if n < 253_402_300_800_000 => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(n)).to_string()
        }
        _ => ms.to_string(),
    }
}

fn parse_hex<const N: usize>(param: &str, v: &str) -> Result<[u8; N], ApiError> {
    let want = N * 2;
    // Either case, as everywhere an id is read (the CLI too); ids are shown in lower case.
    let ok = v.len() == want && v.bytes().all(|b| b.is_ascii_hexdigit());
    let mut out = [0u8; N];
    if !ok || hex::decode_to_slice(v, &mut out).is_err() {
        return Err(ApiError::bad(
            param,
            format!("{param} must be {want} hex characters"),
        ));
    }
    Ok(out)
}

fn parse_uint(param: &str, v: &str, max: u64) -> Result<u64, ApiError> {
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(ApiError::bad(
            param,
            format!("{param} must be an integer from 0 to {max}"),
        )),
    }
}

/// A time as Unix seconds (`1700000000`) or RFC 3339 (`2023-11-14T22:13:20Z`, fractions and a
/// space instead of `T` allowed).
fn parse_time(param: &str, v: &str) -> Result<i64, ApiError> {
    let err = || {
        ApiError::bad(
            param,
            format!(
                "{param} must be Unix seconds or an RFC 3339 time such as 2024-01-31T12:00:00Z"
            ),
        )
    };
    if let Ok(secs) = v.parse::<i64>() {
        return secs.checked_mul(1000).ok_or_else(err);
    }
    let t = humantime::parse_rfc3339_weak(v.trim_end_matches('Z')).map_err(|_| err())?;
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| err())?;
    i64::try_from(d.as_millis()).map_err(|_| err())
}

fn parse_bool(param: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ApiError::bad(
            param,
            format!("{param} must be true or false (or 1 or 0)"),
        )),
    }
}

/// Validates the query parameters of a records request. Empty values count as absent (an
/// HTML form sends every field). `default_limit` is 10 000 for the API and smaller for the
/// UI; `now_ms` anchors `created_in_*` (the server's clock, as in telemetrics).
pub fn parse_records_query(
    pairs: &[(String, String)],
    default_limit: u32,
    now_ms: i64,
) -> Result<RecordQuery, ApiError> {
    let mut q = RecordQuery {
        limit: default_limit,
        ..RecordQuery::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    let (mut days, mut secs) = (None, None);
    for (k, v) in pairs {
        let Some(name) = RECORD_PARAMS.iter().find(|p| **p == k.as_str()) else {
            let shown: String = k.chars().take(64).collect();
            return Err(ApiError::bad(
                &shown,
                format!(
                    "unknown parameter {shown:?}; known parameters: {}",
                    RECORD_PARAMS.join(", ")
                ),
            ));
        };
        if seen.contains(name) {
            return Err(ApiError::bad(
                name,
                format!("{name} is given more than once"),
            ));
        }
        seen.push(name);
        if v.is_empty() {
            continue;
        }
        match *name {
            "classification" => {
                if v.chars().count() > MAX_CLASSIFICATION {
                    return Err(ApiError::bad(
                        name,
                        format!("classification must be at most {MAX_CLASSIFICATION} characters"),
                    ));
                }
                crate::store::views::check_class_pattern(v)
                    .map_err(|why| ApiError::bad(name, why))?;
                q.classification = Some(v.clone());
            }
            "severity" => {
                // Exactly this severity, as `record -s` sets it and `journal -s` selects it;
                // the number or the name.
                let s = v.parse::<records::Severity>().map_err(|_| {
                    ApiError::bad(
                        name,
                        "severity must be 1 (low), 2 (medium), 3 (high) or 4 (critical), or the name",
                    )
                })?;
                q.severity = Some(s.get());
            }
            "priority" => {
                // As `journal -p`: one severity is that one or higher; or a range.
                let (lo, hi) = records::Severity::parse_range(v).map_err(|e| {
                    ApiError::bad(
                        name,
                        match e {
                            records::RangeError::Severity => "priority must be a severity (1 low, 2 medium, 3 high, 4 critical, or the name) for that one or higher, or a range such as low..high, 2.. or ..medium",
                            records::RangeError::Empty => "priority range is empty: the lower end comes first (low..high)",
                        },
                    )
                })?;
                q.priority = Some((lo.get(), hi.get()));
            }
            "boot_id" => {
                // Dashes allowed and either case, as `journal -b` takes it; stored as 32
                // lower-case hex characters.
                let hex: String = v.chars().filter(|c| *c != '-').collect();
                q.boot_id = Some(hex::encode(parse_hex::<16>(name, &hex)?));
            }
            "machine_id" => {
                if v.chars().count() != MACHINE_ID_LEN {
                    return Err(ApiError::bad(
                        name,
                        format!("machine_id must be exactly {MACHINE_ID_LEN} characters"),
                    ));
                }
                q.machine_id = Some(v.clone());
            }
            "build" | "platform" => {
                if v.chars().count() > MAX_BUILD {
                    return Err(ApiError::bad(
                        name,
                        format!("{name} must be at most {MAX_BUILD} characters"),
                    ));
                }
                if *name == "build" {
                    q.build = Some(v.clone());
                } else {
                    q.platform = Some(v.clone());
                }
            }
            "created_in_days" => days = Some(parse_uint(name, v, MAX_DAYS)?),
            "created_in_sec" => secs = Some(parse_uint(name, v, MAX_DAYS * 86_400)?),
            "since" => q.since = Some(TimeBound(parse_time(name, v)?)),
            "until" => q.until = Some(TimeBound(parse_time(name, v)?)),
            "log_id" => q.log_id = Some(parse_hex::<32>(name, v)?),
            "event_id" => q.event_id = Some(parse_hex::<16>(name, v)?),
            "record_id" => q.record_id = Some(parse_hex::<16>(name, v)?),
            "include_payload" => q.include_payload = parse_bool(name, v)?,
            "limit" => {
                let n = parse_uint(name, v, u64::from(MAX_QUERY_LIMIT))
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        ApiError::bad(
                            name,
                            format!("limit must be an integer from 1 to {MAX_QUERY_LIMIT}"),
                        )
                    })?;
                q.limit = n as u32;
            }
            "cursor" => {
                let c = v.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                    ApiError::bad(
                        name,
                        "cursor must be a positive integer (a next_cursor value)",
                    )
                })?;
                q.cursor = Some(Cursor(c));
            }
            _ => {}
        }
    }
    // created_in_days wins over created_in_sec (telemetrics); both combine with since.
    let window = match (days, secs) {
        (Some(d), _) => Some(d * 86_400),
        (None, s) => s,
    };
    if let Some(w) = window {
        let from = now_ms.saturating_sub((w as i64).saturating_mul(1000));
        q.since = Some(TimeBound(q.since.map_or(from, |TimeBound(s)| s.max(from))));
    }
    if let (Some(TimeBound(s)), Some(TimeBound(u))) = (q.since, q.until) {
        if s >= u {
            return Err(ApiError::bad(
                "until",
                "until must be later than since (and created_in_*)",
            ));
        }
    }
    Ok(q)
}

/// Splits a raw query string into pairs (percent-decoded; `+` is a space).
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    match raw {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q).map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            parameter: None,
            message: format!("the query string is malformed: {e}"),
        }),
    }
}

/// The payload as JSON: a string when it is UTF-8, else lower-case hex.
pub fn payload_value(p: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(p) {
        Ok(s) => (Value::String(s.to_owned()), "utf-8"),
        Err(_) => (Value::String(hex::encode(p)), "hex"),
    }
}

/// One record as JSON: the telemetrics backend's fields (`arch`, `build`, `classification`,
/// `kernel_version`, `machine_id`, `machine_type`, `payload`, `record_format_version`,
/// `severity`, `ts_capture`, `ts_reception`) plus seglog's.
pub fn record_json(r: &RecordRow) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("record_id", hex::encode(r.record_id).into());
    put("log_id", hex::encode(r.log_id).into());
    put("batch_id", hex::encode(r.batch_id).into());
    put(
        "position",
        json!({ "segment": r.segment, "offset": r.offset }),
    );
    put("classification", r.classification.clone().into());
    put("severity", r.severity.into());
    put("machine_id", r.machine_id.clone().into());
    put("boot_id", r.boot_id.clone().into());
    put("arch", r.arch.clone().into());
    put("machine_type", r.platform.clone().into());
    put("build", r.build.clone().into());
    put("system_name", r.system_name.clone().into());
    put("kernel_version", r.kernel_version.clone().into());
    put(
        "record_format_version",
        r.record_format_version.clone().into(),
    );
    put(
        "event_id",
        r.event_id.map_or(Value::Null, |e| hex::encode(e).into()),
    );
    put("ts_capture", rfc3339(r.created_ms).into());
    put("ts_reception", rfc3339(r.received_ms).into());
    put("created_ms", r.created_ms.into());
    put("boot_ms", r.boot_ms.into());
    put("received_ms", r.received_ms.into());
    put("payload_size", r.payload_len.into());
    if let Some(p) = &r.payload {
        let (v, enc) = payload_value(p);
        put("payload", v);
        put("payload_encoding", enc.into());
    }
    let ctx: Map<String, Value> = r
        .context
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    put("context", Value::Object(ctx));
    Value::Object(m)
}

/// `{"records": [...], "next_cursor": N|null}`.
pub fn page_json(page: &RecordPage) -> Value {
    json!({
        "records": page.records.iter().map(record_json).collect::<Vec<_>>(),
        "next_cursor": page.next.map(|Cursor(c)| c),
    })
}

/// One gap entry as JSON.
pub fn gap_json(g: &GapRow) -> Value {
    json!({
        "log_id": hex::encode(g.log_id),
        "batch_id": hex::encode(g.batch_id),
        "reason": g.reason,
        "start": { "segment": g.start.0, "offset": g.start.1 },
        "end": { "segment": g.end.0, "offset": g.end.1 },
        "segments": g.segments,
        "records": g.records,
        "bytes": g.bytes,
        "detail": g.detail,
        "ts_reception": rfc3339(g.received_ms),
    })
}

fn pairs_json(v: &[(String, u64)]) -> Value {
    Value::Array(
        v.iter()
            .map(|(k, n)| json!({ "key": k, "count": n }))
            .collect(),
    )
}

/// The stats as JSON.
pub fn stats_json(s: &Stats) -> Value {
    json!({
        "records": s.records,
        "logs": s.logs,
        "batches": {
            "received": s.batches,
            "duplicates": s.batches_duplicate,
            "rejected": s.rejected.values().fold(0u64, |a, n| a.saturating_add(*n)),
            "rejected_by_reason": s.rejected,
        },
        "records_duplicate": s.records_duplicate,
        "gaps": { "entries": s.gaps, "records_lost": s.gap_records, "by_reason": pairs_json(&s.gaps_by_reason) },
        "bytes": { "compressed": s.body_bytes, "decompressed": s.raw_bytes },
        "by_classification": pairs_json(&s.by_classification),
        "by_severity": pairs_json(&s.by_severity),
        "by_platform": pairs_json(&s.by_platform),
        "by_build": pairs_json(&s.by_build),
        "device_counters": pairs_json(&s.device_counters),
    })
}

/// Validates `GET /api/gaps` parameters: `log_id` and `limit` (1 to 10 000, default 1000).
pub fn parse_gaps_query(pairs: &[(String, String)]) -> Result<(Option<[u8; 32]>, u32), ApiError> {
    let (mut log, mut limit) = (None, 1000u32);
    for (k, v) in pairs {
        match k.as_str() {
            _ if v.is_empty() => {}
            "log_id" => log = Some(parse_hex::<32>("log_id", v)?),
            "limit" => {
                limit = parse_uint("limit", v, u64::from(MAX_QUERY_LIMIT))
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        ApiError::bad(
                            "limit",
                            format!("limit must be an integer from 1 to {MAX_QUERY_LIMIT}"),
                        )
                    })? as u32;
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::bad(
                    &shown,
                    format!("unknown parameter {shown:?}; known: log_id, limit"),
                ));
            }
        }
    }
    Ok((log, limit))
}

#[cfg(test)]
mod tests;
