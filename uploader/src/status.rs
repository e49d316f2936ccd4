//! `seglog upload status`: read-only; takes no lock, works while a daemon runs.
use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::config::UploadConfig;
use crate::cursor::CursorStore;
use crate::state::{self, now_ms, Status};

/// The pid of the process holding the uploader lock, if any.
pub fn running_uploader(cfg: &UploadConfig) -> Option<String> {
    let path = cfg.upload_dir().join(state::LOCK_FILE);
    let f = std::fs::File::open(&path).ok()?;
    if f.try_lock_shared().is_ok() {
        let _ = f.unlock();
        return None;
    }
    Some(
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    )
}

fn ago(ms: Option<i64>, now: i64) -> serde_json::Value {
    match ms {
        Some(t) => json!({ "at_ms": t, "ago_s": (now - t).max(0) / 1000 }),
        None => serde_json::Value::Null,
    }
}

/// Collects the status as JSON. A directory that is not a log is an error (as in `seglog
/// journal`), not an empty status.
pub fn collect(cfg: &UploadConfig) -> anyhow::Result<serde_json::Value> {
    let now = now_ms();
    if !cfg.dir.exists() {
        anyhow::bail!(
            "log directory {} does not exist; check --dir or SEGLOG_DIR",
            cfg.dir.display()
        );
    }
    let id = segment_log::LogId::load(&cfg.dir)?.ok_or_else(|| segment_log::Error::NotALog {
        path: cfg.dir.clone(),
    })?;
    let updir = cfg.upload_dir();
    let (mut st, st_warn) = if updir.exists() {
        Status::load(&updir)
    } else {
        (Status::default(), None)
    };
    // A state.json written before redaction existed may quote the upload URL.
    st.last_error = st
        .last_error
        .map(|e| crate::transport::scrub_private_id(&e, &id.private()));
    let mut warnings: Vec<String> = st_warn.into_iter().collect();
    let (cursor, inflight) = if updir.exists() {
        let l = CursorStore::open(&updir)?.load(&id.public())?;
        warnings.extend(l.warnings);
        (l.state.position, l.state.inflight)
    } else {
        (segment_log::Position::default(), None)
    };
    let (backlog_bytes, backlog_records, oldest) = (
        crate::backlog::backlog_bytes(&cfg.dir, cursor),
        crate::backlog::backlog_records(&cfg.dir, cursor),
        crate::backlog::oldest_record_ms(&cfg.dir, cursor),
    );
    let counters = recorder::counters::read(&cfg.dir).unwrap_or_default();
    let budget_used = st.budget_used(now);
    let uploader_pid = running_uploader(cfg);
    // Only while an uploader runs: a time left by a process that stopped means nothing.
    let next_attempt = match (st.next_attempt_ms, &uploader_pid) {
        (Some(at), Some(_)) if at > now => json!({
            "at_ms": at,
            "in_s": (at - now + 999) / 1000,
            "retry_after": st.next_attempt_asked,
        }),
        _ => serde_json::Value::Null,
    };
    Ok(json!({
        "log_dir": cfg.dir,
        "public_log_id": hex::encode(id.public()),
        "url": cfg.url,
        "url_source": cfg.url_source,
        "protocol": cfg.protocol.as_str(),
        "server_delivery": cfg.policy.server_delivery,
        "opted_in": cfg.opted_in(),
        "require_opt_in": cfg.policy.require_opt_in,
        "mode": cfg.policy.mode,
        "uploader_pid": uploader_pid,
        "next_attempt": next_attempt,
        "cursor": cursor.to_string(),
        "in_flight": inflight.map(|(f, l)| format!("{f}..{l}")),
        "backlog": { "bytes": backlog_bytes, "records": backlog_records, "oldest_record": ago(oldest, now) },
        "last_success": ago(st.last_success_ms, now),
        "last_attempt": ago(st.last_attempt_ms, now),
        "last_error": st.last_error.as_ref().map(|e| json!({
            "message": e,
            "at": ago(st.last_error_ms, now),
            "passes_ago": st.last_error_pass.map(|p| st.passes.saturating_sub(p)),
        })),
        "delivered": { "records": st.delivered_records, "bytes": st.delivered_bytes, "wire_bytes": st.delivered_wire_bytes, "batches": st.delivered_batches },
        "dropped": counters.dropped,
        "spooled": counters.spooled,
        "spooled_until_ms": counters.spooled_until_ms,
        "expired_records": st.expired_records,
        "missing_segments": st.missing_segments,
        "corrupt_ranges": st.corrupt_ranges,
        "undecodable_records": st.undecodable_records,
        "dead_lettered": { "batches": st.dead_lettered_batches, "records": st.dead_lettered_records },
        "gaps_reported": st.gaps_reported,
        "budget": { "used_today": budget_used, "daily": cfg.policy.daily_budget },
        "warnings": warnings,
    }))
}

/// When the last error happened: `2025-06-01T12:03:04Z, 5m ago, 2 passes ago` (or `in the
/// last pass`), so an error that a later pass got past does not read as the current state.
fn error_label(e: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(at) = e["at"]["at_ms"].as_u64() {
        parts.push(
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(at))
                .to_string(),
        );
        parts.push(age(&e["at"]));
    }
    match e["passes_ago"].as_u64() {
        Some(0) => parts.push("in the last pass".into()),
        Some(1) => parts.push("1 pass ago".into()),
        Some(n) => parts.push(format!("{n} passes ago")),
        None => {}
    }
    if parts.is_empty() {
        "time unknown".into()
    } else {
        parts.join(", ")
    }
}

fn age(v: &serde_json::Value) -> String {
    match v.get("ago_s").and_then(serde_json::Value::as_u64) {
        Some(s) => format!("{} ago", humantime::format_duration(Duration::from_secs(s))),
        None => "never".into(),
    }
}

/// Prints the status for humans.
pub fn print(v: &serde_json::Value, out: &mut dyn Write) -> std::io::Result<()> {
    let s = |k: &str| {
        v.get(k)
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let n = |a: &str, b: &str| {
        v.get(a)
            .and_then(|x| x.get(b))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    writeln!(
        out,
        "log:              {} (public id {})",
        s("log_dir"),
        s("public_log_id")
    )?;
    writeln!(
        out,
        "server:           {}{}{} (delivery {}, mode {}, opted in: {})",
        s("url"),
        if v["protocol"] == "otlp" {
            " (OTLP)"
        } else {
            ""
        },
        v["url_source"]
            .as_str()
            .map(|src| format!(" from {src}"))
            .unwrap_or_default(),
        if v["server_delivery"] == true {
            "on"
        } else {
            "off"
        },
        s("mode"),
        s("opted_in")
    )?;
    let pid = v["uploader_pid"]
        .as_str()
        .map_or("no uploader running".to_owned(), |p| {
            format!("uploader running (pid {p})")
        });
    writeln!(out, "uploader:         {pid}")?;
    if let Some(secs) = v["next_attempt"]["in_s"].as_u64() {
        let why = if v["next_attempt"]["retry_after"] == true {
            "as the server asked (Retry-After)"
        } else {
            "backing off after a failure; `seglog upload flush` tries now"
        };
        writeln!(
            out,
            "next attempt:     in {} ({why})",
            humantime::format_duration(Duration::from_secs(secs))
        )?;
    }
    writeln!(
        out,
        "cursor:           {}{}",
        s("cursor"),
        v["in_flight"]
            .as_str()
            .map(|r| format!(" (in flight: {r})"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "backlog:          {} records, {} bytes; oldest record {}",
        n("backlog", "records"),
        n("backlog", "bytes"),
        age(&v["backlog"]["oldest_record"])
    )?;
    writeln!(out, "last success:     {}", age(&v["last_success"]))?;
    match v["last_error"].get("message") {
        Some(m) => writeln!(
            out,
            "last error:       ({}) {}",
            error_label(&v["last_error"]),
            m.as_str().unwrap_or("")
        )?,
        None => writeln!(out, "last error:       none")?,
    }
    writeln!(
        out,
        "delivered:        {} records, {} bytes ({} on the wire) in {} batches",
        n("delivered", "records"),
        n("delivered", "bytes"),
        n("delivered", "wire_bytes"),
        n("delivered", "batches")
    )?;
    let dropped: u64 = v["dropped"]
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    writeln!(
        out,
        "dropped:          {dropped} (rate limits: {})",
        v["dropped"]
    )?;
    let spooled: u64 = v["spooled"]
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    let release = v["spooled_until_ms"]
        .as_i64()
        .map(|u| {
            let now = recorder::counters::now_wall_ms();
            format!("; {}", recorder::counters::describe_release(u, now))
        })
        .unwrap_or_default();
    writeln!(
        out,
        "spooled:          {spooled} held back by the rate limit ({}){release}",
        v["spooled"]
    )?;
    writeln!(
        out,
        "expired:          {} records (retention before upload), {} segments missing",
        s("expired_records"),
        s("missing_segments")
    )?;
    writeln!(
        out,
        "corrupt:          {} ranges, {} undecodable records",
        s("corrupt_ranges"),
        s("undecodable_records")
    )?;
    writeln!(
        out,
        "dead-lettered:    {} batches, {} records",
        n("dead_lettered", "batches"),
        n("dead_lettered", "records")
    )?;
    if let Some(w) = v["warnings"].as_array().filter(|w| !w.is_empty()) {
        for x in w {
            writeln!(out, "warning:          {}", x.as_str().unwrap_or(""))?;
        }
    }
    Ok(())
}
