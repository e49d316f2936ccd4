//! The web view: records (filter form, total count, newer/older paging, compact rows with
//! context on demand, gaps where they fall), gaps (every gap and a truthful loss summary),
//! an overview with server-rendered SVG charts and a time range picker, and a page per
//! device. Plain HTML and inline CSS, no scripts and no external assets.
//!
//! HTML comes from maud templates, which escape every interpolated value: payloads,
//! classifications and context strings come from devices and are never trusted. Each page
//! is a synchronous `render` over the store (run off the async threads; the benches call it
//! directly) and a thin handler.
//!
//! Layout: this file holds the shared page frame, formatting helpers and the handlers;
//! [`records`], [`gaps`], [`overview`], [`devices`] render the pages; [`charts`] draws SVG.

mod charts;
mod devices;
mod gaps;
mod overview;
mod records;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::api::{self, query_pairs, ApiError};
use crate::state::AppState;
use crate::store::Store;

pub use records::render_records_page;

/// Records per page when the form does not say.
pub const UI_PAGE: u32 = 100;

const CSS: &str = "
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;color:#1d2228;background:#f6f7f9;font-size:14px}
header{background:#1d2a3a;color:#fff;padding:.45rem 1rem;display:flex;gap:1.2rem;align-items:baseline}
header a{color:#cfe3ff;text-decoration:none}header a.on{color:#fff;font-weight:600}
header strong{font-size:1.05rem}
main{padding:.6rem 1rem}
h1{font-size:1.25rem;margin:.2rem 0 .5rem}h2{font-size:1.05rem;margin:1rem 0 .4rem}
form.filters{display:grid;grid-template-columns:repeat(auto-fill,minmax(10.5rem,1fr));gap:.35rem;
 background:#fff;padding:.5rem;border:1px solid #d8dde3;border-radius:6px}
form.filters label{display:flex;flex-direction:column;font-size:.72rem;color:#4a5560}
form.filters input,form.filters select{font:inherit;font-size:.8rem;padding:.15rem .25rem;border:1px solid #c2c9d1;border-radius:4px}
.buttons{display:flex;gap:.5rem;align-items:end}
button{font:inherit;padding:.2rem .8rem;border-radius:4px;border:1px solid #2c5ea8;background:#2f6fd0;color:#fff}
.ranges{display:flex;gap:.3rem;align-items:center;margin:.4rem 0;font-size:.8rem}
.ranges a{padding:.1rem .5rem;border:1px solid #c2c9d1;border-radius:10px;text-decoration:none;color:#2c5ea8;background:#fff}
.ranges a.on{background:#2f6fd0;color:#fff;border-color:#2f6fd0}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.8rem}
th,td{border-bottom:1px solid #e3e7eb;padding:.12rem .4rem;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#eef1f4;font-weight:600}
td.msg{font-family:ui-monospace,monospace;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:0;width:100%}
.mono,code{font-family:ui-monospace,monospace;font-size:.78rem}
details.ctx summary{cursor:pointer;color:#2c5ea8;list-style:none}
details.ctx[open]{white-space:normal}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:0 .8rem;margin:.3rem 0;font-size:.75rem}
dl.kv dt{color:#4a5560}dl.kv dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
tr.gap td{background:#fff4e0;color:#7a4a00;white-space:normal}
.error{background:#fde8e8;border:1px solid #e0a0a0;color:#7a1d1d;padding:.5rem;border-radius:6px;margin-bottom:.6rem}
.summary{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.5rem .8rem;margin:.4rem 0}
.count{margin:.4rem 0;color:#4a5560}
.pager{margin:.5rem 0;display:flex;gap:1rem}
.sev1{color:#38703a}.sev2{color:#8a6d00}.sev3{color:#b34d00}.sev4{color:#b00020;font-weight:bold}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(30rem,1fr));gap:.8rem}
section.chart{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.4rem .6rem}
section.chart h2{margin:.2rem 0}
svg text{font-family:system-ui,sans-serif;font-size:10px;fill:#4a5560}
ul.legend{list-style:none;padding:0;margin:.2rem 0;display:flex;flex-wrap:wrap;gap:.2rem .8rem;font-size:.75rem}
ul.legend span{display:inline-block;width:.7rem;height:.7rem;border-radius:2px;margin-right:.25rem;vertical-align:-1px}
pre{background:#fff;border:1px solid #d8dde3;padding:.6rem;white-space:pre-wrap;word-break:break-all}
";

/// The navigation entries: (path, label).
const NAV: [(&str, &str); 4] = [
    ("/ui/records", "Records"),
    ("/ui/gaps", "Gaps"),
    ("/ui/stats", "Overview"),
    ("/ui/devices", "Devices"),
];

/// The page frame around `body`; `active` is the navigation path to highlight.
fn page(title: &str, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                title { (title) " · seglog collector" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    strong { "seglog collector" }
                    @for (path, label) in NAV {
                        a href=(path) class=[(path == active).then_some("on")] { (label) }
                    }
                    a href="/api/records?limit=100" { "API" }
                    a href="/metrics" { "Metrics" }
                }
                main { (body) }
            }
        }
    }
}

fn respond(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(m.into_string()),
    )
        .into_response()
}

fn error_page(title: &str, active: &str, e: &ApiError) -> Response {
    respond(
        e.status,
        page(
            title,
            active,
            html! { h1 { (title) } div.error #error { (e.message) } },
        ),
    )
}

/// A query string from pairs, percent-encoded.
fn qs(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn value_of<'a>(pairs: &'a [(String, String)], k: &str) -> &'a str {
    pairs
        .iter()
        .find(|(pk, _)| pk == k)
        .map_or("", |(_, v)| v.as_str())
}

/// `2023-11-14 22:13:20` (UTC), or the raw number outside the RFC 3339 years.
fn when(ms: i64) -> String {
    let t = api::rfc3339(ms);
    match (t.get(..10), t.get(11..19)) {
        (Some(d), Some(h)) if t.len() >= 20 => format!("{d} {h}"),
        _ => t,
    }
}

/// The severity's name.
fn sev_name(s: u8) -> &'static str {
    match s {
        1 => "low",
        2 => "medium",
        3 => "high",
        4 => "critical",
        _ => "?",
    }
}

/// The first `n` hex characters of `bytes`.
fn short_hex(bytes: &[u8], n: usize) -> String {
    let mut h = hex::encode(bytes);
    h.truncate(n);
    h
}

/// Thousands separated by a thin space: `12 345`.
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    out
}

/// The device page of a public log id.
fn device_href(log_id: &[u8; 32]) -> String {
    format!("/ui/devices/{}", hex::encode(log_id))
}

/// `GET /ui/records` (behind the API-token layer).
pub(crate) async fn records_page(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let max_bytes = st.cfg.limits.max_response_bytes;
    let result = st
        .blocking(move |s| {
            Ok(render_records_page(
                &s.store,
                q.as_deref(),
                api::now_ms(),
                max_bytes,
            ))
        })
        .await;
    match result {
        Ok((status, m)) => {
            st.metrics.api_request(status != StatusCode::OK);
            respond(status, m)
        }
        Err(e) => {
            st.metrics.api_request(true);
            error_page("Records", "/ui/records", &e)
        }
    }
}

/// `GET /ui/gaps`.
pub(crate) async fn gaps_page(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let result = async {
        let pairs = query_pairs(q.as_deref())?;
        let args = gaps::GapArgs::parse(&pairs)?;
        st.blocking(move |s| gaps::render(&s.store, &args)).await
    }
    .await;
    st.metrics.api_request(result.is_err());
    match result {
        Ok(m) => respond(StatusCode::OK, m),
        Err(e) => error_page("Gaps", "/ui/gaps", &e),
    }
}

/// `GET /ui/stats`: the overview with charts.
pub(crate) async fn stats_page(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let result = async {
        let pairs = query_pairs(q.as_deref())?;
        let range = overview::Range::parse(value_of(&pairs, "range"))?;
        let stats = st.current_stats().await?;
        let now = api::now_ms();
        st.blocking(move |s| overview::render(&s.store, &stats, range, now))
            .await
    }
    .await;
    st.metrics.api_request(result.is_err());
    match result {
        Ok(m) => respond(StatusCode::OK, m),
        Err(e) => error_page("Overview", "/ui/stats", &e),
    }
}

/// `GET /ui/devices`.
pub(crate) async fn devices_page(State(st): State<Arc<AppState>>) -> Response {
    let result = st.blocking(|s| devices::render_list(&s.store)).await;
    st.metrics.api_request(result.is_err());
    match result {
        Ok(m) => respond(StatusCode::OK, m),
        Err(e) => error_page("Devices", "/ui/devices", &e),
    }
}

/// `GET /ui/devices/{log_id}`.
pub(crate) async fn device_page(
    State(st): State<Arc<AppState>>,
    Path(log_id): Path<String>,
) -> Response {
    let result = async {
        let mut id = [0u8; 32];
        if log_id.len() != 64 || hex::decode_to_slice(&log_id, &mut id).is_err() {
            return Err(ApiError::bad(
                "log_id",
                "a device is named by its public log id: 64 hex characters",
            ));
        }
        let max_bytes = st.cfg.limits.max_response_bytes;
        st.blocking(move |s| devices::render_device(&s.store, id, max_bytes))
            .await
    }
    .await;
    st.metrics.api_request(result.is_err());
    match result {
        Ok(Some(m)) => respond(StatusCode::OK, m),
        Ok(None) => error_page(
            "Device",
            "/ui/devices",
            &ApiError {
                status: StatusCode::NOT_FOUND,
                parameter: Some("log_id".to_owned()),
                message: "no device with this log id has uploaded to this collector".to_owned(),
            },
        ),
        Err(e) => error_page("Device", "/ui/devices", &e),
    }
}

/// Renders the records page without a server, for benches: `raw_query` as in the URL.
pub fn records_page_html(store: &Store, raw_query: &str, now_ms: i64) -> String {
    render_records_page(store, Some(raw_query), now_ms, 32 << 20)
        .1
        .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_group_thousands_and_times_are_compact() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1234), "1\u{2009}234");
        assert_eq!(num(1_234_567), "1\u{2009}234\u{2009}567");
        assert_eq!(when(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(sev_name(4), "critical");
    }

    #[test]
    fn the_frame_escapes_its_title() {
        let m = page("<x>", "/ui/gaps", html! { p { "&" } }).into_string();
        assert!(m.contains("&lt;x&gt; · seglog collector"), "{m}");
        assert!(m.contains("<p>&amp;</p>"), "{m}");
        assert!(
            m.contains("<a href=\"/ui/gaps\" class=\"on\">Gaps</a>"),
            "{m}"
        );
    }
}
