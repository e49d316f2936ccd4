//! The web UI: a records view (filter form, table, pagination) and a stats view. Plain HTML
//! and inline CSS, no scripts and no external assets; every value from the database or the
//! request is escaped.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use crate::api::{self, query_pairs, ApiError};
use crate::state::AppState;
use crate::store::{RecordPage, RecordRow, Stats};

/// Records per page when the form does not say.
pub const UI_PAGE: u32 = 100;
/// Payload characters shown in the table (the record's own page shows it all).
const PAYLOAD_EXCERPT: usize = 160;

const CSS: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2228;background:#f6f7f9}
header{background:#1d2a3a;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.5rem;align-items:baseline}
header a{color:#cfe3ff;text-decoration:none}header strong{font-size:1.1rem}
main{padding:1rem 1.2rem}
form.filters{display:grid;grid-template-columns:repeat(auto-fill,minmax(13rem,1fr));gap:.5rem;
 background:#fff;padding:.8rem;border:1px solid #d8dde3;border-radius:6px}
form.filters label{display:flex;flex-direction:column;font-size:.8rem;color:#4a5560}
form.filters input,form.filters select{font:inherit;padding:.25rem;border:1px solid #c2c9d1;border-radius:4px}
.buttons{display:flex;gap:.5rem;align-items:end}
button{font:inherit;padding:.3rem .9rem;border-radius:4px;border:1px solid #2c5ea8;background:#2f6fd0;color:#fff}
table{border-collapse:collapse;width:100%;background:#fff;margin-top:1rem;font-size:.85rem}
th,td{border:1px solid #d8dde3;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#eef1f4}tr:nth-child(even) td{background:#fafbfc}
td.payload{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-all;max-width:32rem}
td.mono,code{font-family:ui-monospace,monospace;font-size:.8rem}
.error{background:#fde8e8;border:1px solid #e0a0a0;color:#7a1d1d;padding:.6rem;border-radius:6px;margin-bottom:1rem}
.pager{margin-top:.8rem;display:flex;gap:1rem}
.sev1{color:#38703a}.sev2{color:#8a6d00}.sev3{color:#b34d00}.sev4{color:#b00020;font-weight:bold}
.bar{background:#2f6fd0;height:.7rem;border-radius:2px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(24rem,1fr));gap:1rem}
pre{background:#fff;border:1px solid #d8dde3;padding:.8rem;white-space:pre-wrap;word-break:break-all}
";

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A query string from pairs, percent-encoded.
fn qs(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} · seglog collector</title><style>{CSS}</style></head><body>\
         <header><strong>seglog collector</strong><a href=\"/ui/records\">Records</a>\
         <a href=\"/ui/stats\">Stats</a><a href=\"/api/records?limit=100\">API</a>\
         <a href=\"/metrics\">Metrics</a></header><main>{body}</main></body></html>\n",
        t = esc(title)
    )
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

/// The filter fields of the form, in order: (parameter, label, placeholder).
const FIELDS: [(&str, &str, &str); 11] = [
    ("classification", "Classification", "DOMAIN/PROBE/REST"),
    ("machine_id", "Machine id", "32 characters"),
    ("build", "Build", ""),
    ("platform", "Platform", "vendor|product|version"),
    ("log_id", "Log id", "64 hex"),
    ("event_id", "Event id", "32 hex"),
    ("record_id", "Record id", "32 hex"),
    ("created_in_days", "Created in last days", ""),
    ("since", "Since", "2024-01-31T12:00:00Z"),
    ("until", "Until", "Unix seconds or RFC 3339"),
    ("limit", "Per page", "100"),
];

fn value_of<'a>(pairs: &'a [(String, String)], k: &str) -> &'a str {
    pairs
        .iter()
        .find(|(pk, _)| pk == k)
        .map_or("", |(_, v)| v.as_str())
}

fn filter_form(pairs: &[(String, String)]) -> String {
    let mut f = String::from("<form class=\"filters\" method=\"get\" action=\"/ui/records\">");
    for (name, label, ph) in FIELDS {
        let _ = write!(
            f,
            "<label>{label}<input name=\"{name}\" value=\"{v}\" placeholder=\"{ph}\"></label>",
            label = esc(label),
            v = esc(value_of(pairs, name)),
            ph = esc(ph)
        );
    }
    let sev = value_of(pairs, "severity");
    f.push_str("<label>Severity<select name=\"severity\"><option value=\"\">any</option>");
    for (v, l) in [
        ("1", "1 low"),
        ("2", "2 medium"),
        ("3", "3 high"),
        ("4", "4 critical"),
    ] {
        let sel = if sev == v { " selected" } else { "" };
        let _ = write!(f, "<option value=\"{v}\"{sel}>{l}</option>");
    }
    f.push_str(
        "</select></label><div class=\"buttons\"><button type=\"submit\">Filter</button>\
         <a href=\"/ui/records\">reset</a></div></form>",
    );
    f
}

fn excerpt(r: &RecordRow) -> String {
    match &r.payload {
        None => String::new(),
        Some(p) => {
            let (v, enc) = api::payload_value(p);
            let s = v.as_str().unwrap_or_default();
            let mut cut: String = s.chars().take(PAYLOAD_EXCERPT).collect();
            if cut.len() < s.len() {
                cut.push('…');
            }
            if enc == "hex" {
                format!("[hex] {cut}")
            } else {
                cut
            }
        }
    }
}

fn records_table(page: &RecordPage, pairs: &[(String, String)]) -> String {
    let mut t = String::from(
        "<table id=\"records\"><thead><tr><th>Received</th><th>Created</th><th>Classification</th>\
         <th>Sev</th><th>Machine</th><th>Build</th><th>Platform</th><th>Record</th>\
         <th>Payload</th></tr></thead><tbody>",
    );
    for r in &page.records {
        let rid = hex::encode(r.record_id);
        let _ = write!(
            t,
            "<tr class=\"record\"><td>{recv}</td><td>{created}</td>\
             <td><a href=\"/ui/records?{cl}\">{class}</a></td><td class=\"sev{sev}\">{sev}</td>\
             <td class=\"mono\"><a href=\"/ui/records?{mq}\">{machine}</a></td><td>{build}</td>\
             <td>{platform}</td><td class=\"mono\"><a href=\"/ui/records?{rq}\">{rid_short}</a></td>\
             <td class=\"payload\">{payload}</td></tr>",
            recv = esc(&api::rfc3339(r.received_ms)),
            created = esc(&api::rfc3339(r.created_ms)),
            cl = esc(&qs(&[("classification", &r.classification)])),
            class = esc(&r.classification),
            sev = r.severity,
            mq = esc(&qs(&[("machine_id", &r.machine_id)])),
            machine = esc(&r.machine_id),
            build = esc(&r.build),
            platform = esc(&r.platform),
            rq = esc(&qs(&[("record_id", &rid)])),
            rid_short = esc(rid.get(..12).unwrap_or(&rid)),
            payload = esc(&excerpt(r)),
        );
    }
    t.push_str("</tbody></table>");
    if page.records.is_empty() {
        t.push_str("<p id=\"empty\">No records match.</p>");
    }
    let mut pager = String::from("<div class=\"pager\">");
    if !value_of(pairs, "cursor").is_empty() {
        let first: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, v)| k != "cursor" && !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = write!(
            pager,
            "<a href=\"/ui/records?{}\">« newest</a>",
            esc(&qs(&first))
        );
    }
    if let Some(c) = page.next {
        let c = c.0.to_string();
        let mut next: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, v)| k != "cursor" && !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        next.push(("cursor", &c));
        let _ = write!(
            pager,
            "<a id=\"next\" href=\"/ui/records?{}\">older »</a>",
            esc(&qs(&next))
        );
    }
    pager.push_str("</div>");
    t.push_str(&pager);
    t
}

fn record_detail(r: &RecordRow) -> String {
    let mut d = String::from("<h2>Record</h2><table id=\"detail\">");
    let rows: [(&str, String); 12] = [
        ("record id", hex::encode(r.record_id)),
        ("log id (public)", hex::encode(r.log_id)),
        ("batch id", hex::encode(r.batch_id)),
        ("position", format!("{}:{}", r.segment, r.offset)),
        ("classification", r.classification.clone()),
        ("severity", r.severity.to_string()),
        ("created", api::rfc3339(r.created_ms)),
        ("boot time", format!("{} ms", r.boot_ms)),
        ("received", api::rfc3339(r.received_ms)),
        ("event id", r.event_id.map(hex::encode).unwrap_or_default()),
        ("payload size", format!("{} bytes", r.payload_len)),
        ("boot id", r.boot_id.clone()),
    ];
    for (k, v) in rows
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(r.context.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        let _ = write!(
            d,
            "<tr><th>{}</th><td class=\"mono\">{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    d.push_str("</table>");
    if let Some(p) = &r.payload {
        let (v, enc) = api::payload_value(p);
        let _ = write!(
            d,
            "<h3>Payload ({enc})</h3><pre>{}</pre>",
            esc(v.as_str().unwrap_or_default())
        );
    }
    d
}

/// `GET /ui/records` (behind the API-token layer).
pub(crate) async fn records_page(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Response {
    let (pairs, parsed) = match query_pairs(q.as_deref()) {
        Ok(p) => (p, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    };
    let form = filter_form(&pairs);
    let result: Result<RecordPage, ApiError> = async {
        parsed?;
        let mut query = api::parse_records_query(&pairs, UI_PAGE, api::now_ms())?;
        query.max_payload_bytes = st.cfg.limits.max_response_bytes;
        st.blocking(move |s| s.store.query_records(&query)).await
    }
    .await;
    st.metrics.api_request(result.is_err());
    match result {
        Ok(p) => {
            let mut body = format!("<h1>Records</h1>{form}");
            if let (Some(r), false) = (p.records.first(), value_of(&pairs, "record_id").is_empty())
            {
                body.push_str(&record_detail(r));
            }
            let _ = write!(
                body,
                "<p class=\"count\">{} records on this page, newest first.</p>",
                p.records.len()
            );
            body.push_str(&records_table(&p, &pairs));
            html(StatusCode::OK, page("Records", &body))
        }
        Err(e) => {
            let body = format!(
                "<h1>Records</h1><div class=\"error\" id=\"error\">{}</div>{form}",
                esc(&e.message)
            );
            html(e.status, page("Records", &body))
        }
    }
}

fn count_table(title: &str, id: &str, param: Option<&str>, rows: &[(String, u64)]) -> String {
    let max = rows.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let mut t = format!(
        "<section><h2>{}</h2><table id=\"{}\"><thead><tr><th>value</th><th>records</th><th></th></tr></thead><tbody>",
        esc(title),
        esc(id)
    );
    for (k, n) in rows {
        let shown = if k.is_empty() {
            "(none)".to_owned()
        } else {
            k.clone()
        };
        let cell = match param {
            Some(p) if !k.is_empty() => {
                format!(
                    "<a href=\"/ui/records?{}\">{}</a>",
                    esc(&qs(&[(p, k)])),
                    esc(&shown)
                )
            }
            _ => esc(&shown),
        };
        let pct = u128::from(*n) * 100 / u128::from(max);
        let _ = write!(t, "<tr><td>{cell}</td><td>{n}</td><td style=\"width:30%\"><div class=\"bar\" style=\"width:{pct}%\"></div></td></tr>");
    }
    t.push_str("</tbody></table></section>");
    t
}

fn stats_body(s: &Stats) -> String {
    let rejected = s.rejected.values().fold(0u64, |a, n| a.saturating_add(*n));
    let mut b = String::from("<h1>Stats</h1><table id=\"totals\"><tbody>");
    let totals: [(&str, u64); 10] = [
        ("records stored", s.records),
        ("logs (devices)", s.logs),
        ("batches received", s.batches),
        ("duplicate batches acknowledged", s.batches_duplicate),
        ("duplicate records not stored twice", s.records_duplicate),
        ("uploads rejected", rejected),
        ("gap entries", s.gaps),
        ("records reported lost", s.gap_records),
        ("bytes received (compressed)", s.body_bytes),
        ("bytes received (decompressed)", s.raw_bytes),
    ];
    for (k, v) in totals {
        let _ = write!(b, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    b.push_str("</tbody></table><div class=\"grid\">");
    b.push_str(&count_table(
        "By classification",
        "by_classification",
        Some("classification"),
        &s.by_classification,
    ));
    b.push_str(&count_table(
        "By severity",
        "by_severity",
        Some("severity"),
        &s.by_severity,
    ));
    b.push_str(&count_table(
        "By platform",
        "by_platform",
        Some("platform"),
        &s.by_platform,
    ));
    b.push_str(&count_table(
        "By build",
        "by_build",
        Some("build"),
        &s.by_build,
    ));
    let rej: Vec<(String, u64)> = s.rejected.iter().map(|(k, v)| (k.clone(), *v)).collect();
    b.push_str(&count_table(
        "Rejected uploads by reason",
        "rejected",
        None,
        &rej,
    ));
    b.push_str(&count_table(
        "Gaps by reason",
        "gaps",
        None,
        &s.gaps_by_reason,
    ));
    b.push_str(&count_table(
        "Device counters",
        "device_counters",
        None,
        &s.device_counters,
    ));
    b.push_str("</div>");
    b
}

/// `GET /ui/stats` (behind the API-token layer).
pub(crate) async fn stats_page(State(st): State<Arc<AppState>>) -> Response {
    let result = st.current_stats().await;
    st.metrics.api_request(result.is_err());
    match result {
        Ok(s) => html(StatusCode::OK, page("Stats", &stats_body(&s))),
        Err(e) => html(
            e.status,
            page(
                "Stats",
                &format!("<div class=\"error\">{}</div>", esc(&e.message)),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_html_metacharacter() {
        assert_eq!(
            esc("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn form_values_are_escaped_and_kept() {
        let pairs = vec![(
            "classification".to_owned(),
            "\"><script>alert(1)</script>".to_owned(),
        )];
        let f = filter_form(&pairs);
        assert!(!f.contains("<script>"), "{f}");
        assert!(f.contains("&quot;&gt;&lt;script&gt;"), "{f}");
    }

    #[test]
    fn stats_page_escapes_keys_and_links_to_filtered_records() {
        let s = Stats {
            by_classification: vec![("a/<b>/c".to_owned(), 3)],
            ..Stats::default()
        };
        let b = stats_body(&s);
        assert!(b.contains("a/&lt;b&gt;/c"), "{b}");
        assert!(
            b.contains("/ui/records?classification=a%2F%3Cb%3E%2Fc"),
            "{b}"
        );
        assert!(!b.contains("<b>"), "{b}");
    }
}
