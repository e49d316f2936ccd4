//! The records page: the filter form and time range picker, the total match count, one
//! compact row per record (time, severity name, classification, device, event, message)
//! with its context on demand (`<details>`, no script), gap rows where a device's gap falls
//! between the records shown, and newest / newer / older paging.

use axum::http::StatusCode;
use maud::{html, Markup};

use super::{device_href, num, page, qs, sev_name, short_hex, value_of, when, UI_PAGE};
use crate::api::{self, query_pairs, ApiError};
use crate::store::views::GapView;
use crate::store::{RecordPage, RecordQuery, RecordRow, Store, StoreError};

/// Message characters put in a row (CSS cuts the visible line; the record's own view and
/// the API have it all).
const MESSAGE_CHARS: usize = 300;
/// Gap entries looked at to place among the records of one page.
const GAPS_LOOKED_AT: u32 = 500;

/// The filter fields of the form: (parameter, label, placeholder).
const FIELDS: [(&str, &str, &str); 12] = [
    ("classification", "Classification", "org.example/* or exact"),
    ("priority", "Priority", "high (or higher), low..medium"),
    ("boot_id", "Boot id", "32 hex"),
    ("machine_id", "Machine id", "32 characters"),
    ("build", "Build", ""),
    ("platform", "Platform", "vendor|product|version"),
    ("event_id", "Event id", "32 hex"),
    ("record_id", "Record id", "32 hex"),
    ("log_id", "Device (log id)", "64 hex"),
    ("since", "Since", "2024-01-31T12:00:00Z"),
    ("until", "Until", "Unix seconds or RFC 3339"),
    ("limit", "Per page", "100"),
];

/// The time range picker's choices: (label, `created_in_sec`).
pub(super) const RANGES: [(&str, &str); 5] = [
    ("1 hour", "3600"),
    ("24 hours", "86400"),
    ("7 days", "604800"),
    ("30 days", "2592000"),
    ("all", ""),
];

fn filter_form(pairs: &[(String, String)]) -> Markup {
    let sev = value_of(pairs, "severity");
    let window = value_of(pairs, "created_in_sec");
    html! {
        form.filters method="get" action="/ui/records" {
            @for (name, label, ph) in FIELDS {
                label { (label) input name=(name) value=(value_of(pairs, name)) placeholder=(ph); }
            }
            label { "Severity"
                select name="severity" {
                    option value="" { "any" }
                    @for v in 1..=4u8 {
                        @let s = v.to_string();
                        option value=(s) selected[sev == s || sev == sev_name(v)] { (sev_name(v)) }
                    }
                }
            }
            @if !window.is_empty() { input type="hidden" name="created_in_sec" value=(window); }
            div.buttons { button type="submit" { "Filter" } a href="/ui/records" { "reset" } }
        }
    }
}

/// The pairs without `cursor` and empty values (a filter to link to with a new page or range).
fn kept<'a>(pairs: &'a [(String, String)], drop: &[&str]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .filter(|(k, v)| !v.is_empty() && !drop.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn range_picker(pairs: &[(String, String)]) -> Markup {
    let current = value_of(pairs, "created_in_sec");
    let base = kept(pairs, &["cursor", "created_in_sec", "created_in_days"]);
    let links: Vec<(&str, String, bool)> = RANGES
        .iter()
        .map(|&(label, secs)| {
            let mut p = base.clone();
            if !secs.is_empty() {
                p.push(("created_in_sec", secs));
            }
            (label, format!("/ui/records?{}", qs(&p)), current == secs)
        })
        .collect();
    html! {
        nav.ranges #ranges { "Created in the last:"
            @for (label, href, on) in &links {
                a href=(href) class=[on.then_some("on")] { (label) }
            }
        }
    }
}

/// The payload as one line: text with control characters shown as `␊`-style escapes, or
/// `[hex] …` when it is not UTF-8; cut to [`MESSAGE_CHARS`].
fn message(r: &RecordRow) -> String {
    let Some(p) = &r.payload else {
        return String::new();
    };
    // Text as it is; anything else as hex of (at most) the bytes the line can show.
    let hex;
    let (s, prefix) = match std::str::from_utf8(p) {
        Ok(s) => (s, ""),
        Err(_) => {
            hex = hex::encode(p.get(..MESSAGE_CHARS).unwrap_or(p));
            (hex.as_str(), "[hex] ")
        }
    };
    let mut out = String::with_capacity(prefix.len() + s.len().min(MESSAGE_CHARS * 2) + 3);
    out.push_str(prefix);
    let mut chars = s.chars();
    for c in chars.by_ref().take(MESSAGE_CHARS) {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A record's context: the main fields in a row's `<details>`; `all` adds every context
/// field as sent (the record's own view: a row stays light, 100 to a page).
fn context(r: &RecordRow, all: bool) -> Markup {
    let rid = hex::encode(r.record_id);
    html! {
        details.ctx open[all] {
            summary { "context" }
            dl.kv {
                dt { "record id" } dd { a href={ "/ui/records?" (qs(&[("record_id", &rid)])) } { (rid) } }
                dt { "received" } dd { (api::rfc3339(r.received_ms)) }
                dt { "created" } dd { (api::rfc3339(r.created_ms)) }
                dt { "boot" } dd { (r.boot_id) ", " (r.boot_ms) " ms after boot" }
                dt { "device (log id)" } dd { a href=(device_href(&r.log_id)) { (hex::encode(r.log_id)) } }
                dt { "machine id" } dd { (r.machine_id) }
                dt { "build" } dd { (r.system_name) " " (r.build) ", kernel " (r.kernel_version) ", " (r.arch) }
                dt { "platform" } dd { (r.platform) }
                dt { "position" } dd { (r.segment) ":" (r.offset) ", " (r.payload_len) " bytes" }
                @if all { @for (k, v) in r.context.iter() { dt { (k) } dd { (v) } } }
            }
        }
    }
}

fn record_row(r: &RecordRow) -> Markup {
    let sev = sev_name(r.severity);
    html! {
        tr.record {
            td.mono title={ "received " (api::rfc3339(r.received_ms)) } { (when(r.created_ms)) }
            td class={ "sev" (r.severity) } { (sev) }
            td { a href={ "/ui/records?" (qs(&[("classification", &r.classification)])) } { (r.classification) } }
            td.mono { a href=(device_href(&r.log_id)) title=(r.machine_id) { (r.machine_id.chars().take(12).collect::<String>()) } }
            td.mono {
                @match r.event_id {
                    Some(e) => {
                        @let e = hex::encode(e);
                        a.event href={ "/ui/records?" (qs(&[("event_id", &e)])) } title="this event's records" { (e.get(..8).unwrap_or(&e)) }
                    }
                    None => "–",
                }
            }
            td.msg { (message(r)) }
            td { (context(r, false)) }
        }
    }
}

fn gap_row(g: &GapView) -> Markup {
    html! {
        tr.gap {
            td colspan="7" {
                "⚠ gap on device "
                a href=(device_href(&g.log_id)) { (short_hex(&g.log_id, 12)) }
                ": "
                @if g.records > 0 { (num(g.records)) " records lost" } @else { "an unknown number of records lost" }
                " (" (g.reason) ", " (g.start.0) ":" (g.start.1) " → " (g.end.0) ":" (g.end.1)
                @if g.bytes > 0 { ", " (num(g.bytes)) " bytes" }
                ") "
                a href={ "/ui/gaps#gap-" (g.id) } { "gap details" }
            }
        }
    }
}

/// Where each gap falls among `records` (newest first): `(index, gap)` means the gap's row
/// goes before row `index`. A gap of a device goes right after the device's oldest shown
/// record at or past the gap's end, when that record is the first one after the gap
/// (`between(gap, oldest)` says whether other matching records lie between them, i.e. on a
/// later page); a gap newer than every record of its device shows on the first page.
fn place_gaps(
    records: &[RecordRow],
    gaps: Vec<GapView>,
    first_page: bool,
    mut between: impl FnMut(&GapView, (u64, u64)) -> bool,
) -> Vec<(usize, GapView)> {
    let pos = |r: &RecordRow| (r.segment, r.offset);
    let mut placed = Vec::new();
    // Newest gap first per device: once records lie between a gap and the oldest shown
    // record, they lie between every older gap and it too, so those need no query.
    let mut gaps = gaps;
    gaps.sort_by(|a, b| a.log_id.cmp(&b.log_id).then(b.end.cmp(&a.end)));
    let mut buried: Vec<[u8; 32]> = Vec::new();
    for g in gaps {
        if buried.contains(&g.log_id) {
            continue;
        }
        let mine: Vec<usize> = (0..records.len())
            .filter(|&i| records.get(i).is_some_and(|r| r.log_id == g.log_id))
            .collect();
        let newer: Vec<usize> = mine
            .iter()
            .copied()
            .filter(|&i| records.get(i).is_some_and(|r| pos(r) >= g.end))
            .collect();
        let older = mine
            .iter()
            .any(|&i| records.get(i).is_some_and(|r| pos(r) < g.start));
        let at = match newer
            .iter()
            .copied()
            .min_by_key(|&i| records.get(i).map(pos))
        {
            // The oldest record after the gap is shown: the gap goes just under it, unless
            // more records after the gap come before it (then the gap is on a later page).
            Some(i) => {
                let oldest = records.get(i).map(pos).unwrap_or_default();
                if !older && between(&g, oldest) {
                    buried.push(g.log_id);
                    continue;
                }
                // Under the oldest newer row, but above any older row of the device.
                let next_older = mine
                    .iter()
                    .copied()
                    .find(|&j| j > i && records.get(j).is_some_and(|r| pos(r) < g.end));
                next_older.unwrap_or(i + 1)
            }
            None if first_page && older => match mine.first() {
                Some(&i) => i,
                None => continue,
            },
            None => continue,
        };
        placed.push((at, g));
    }
    placed.sort_by_key(|(i, g)| (*i, std::cmp::Reverse(g.id)));
    placed
}

fn pager(pairs: &[(String, String)], p: &RecordPage, newer: Option<Option<i64>>) -> Markup {
    let base = kept(pairs, &["cursor"]);
    let with_cursor = |c: i64| {
        let c = c.to_string();
        let mut q = base.clone();
        q.push(("cursor", &c));
        qs(&q)
    };
    html! {
        div.pager {
            @if !value_of(pairs, "cursor").is_empty() {
                a #newest href={ "/ui/records?" (qs(&base)) } { "« newest" }
            }
            @match newer {
                Some(Some(c)) => a #newer href={ "/ui/records?" (with_cursor(c)) } { "‹ newer" },
                Some(None) => a #newer href={ "/ui/records?" (qs(&base)) } { "‹ newer" },
                None => {},
            }
            @if let Some(c) = p.next {
                a #next href={ "/ui/records?" (with_cursor(c.0)) } { "older ›" }
            }
        }
    }
}

fn record_detail(r: &RecordRow) -> Markup {
    html! {
        h2 { "Record " code { (hex::encode(r.record_id)) } }
        (context(r, true))
        @if let Some(p) = &r.payload {
            @let (v, enc) = api::payload_value(p);
            h3 { "Payload (" (enc) ")" }
            pre #payload { (v.as_str().unwrap_or_default()) }
        }
    }
}

/// Everything the page shows, read from the store.
struct Loaded {
    page: RecordPage,
    total: u64,
    newer: Option<Option<i64>>,
    gaps: Vec<(usize, GapView)>,
}

fn load(store: &Store, q: &RecordQuery) -> Result<Loaded, StoreError> {
    let page = store.query_records(q)?;
    let total = store.count_records(q)?;
    let newer = match (q.cursor, page.records.first()) {
        (Some(_), Some(first)) => store.newer_cursor(q, first.seq, q.limit)?,
        // Past the oldest record: the page before is the newest page or a cursor's.
        (Some(c), None) => store.newer_cursor(q, c.0 - 1, q.limit)?,
        (None, _) => None,
    };
    let mut logs: Vec<[u8; 32]> = page.records.iter().map(|r| r.log_id).collect();
    logs.sort_unstable();
    logs.dedup();
    let gaps = if q.record_id.is_some() {
        Vec::new()
    } else {
        let all = store.gaps_of_logs(&logs, GAPS_LOOKED_AT)?;
        let mut failed = None;
        let placed = place_gaps(&page.records, all, q.cursor.is_none(), |g, oldest| {
            store
                .any_record_between(q, g.log_id, g.end, oldest)
                .unwrap_or_else(|e| {
                    failed = Some(e);
                    true
                })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        placed
    };
    Ok(Loaded {
        page,
        total,
        newer,
        gaps,
    })
}

fn table(l: &Loaded) -> Markup {
    let shown = l.page.records.len();
    html! {
        table #records {
            thead { tr { th { "Created (UTC)" } th { "Severity" } th { "Classification" } th { "Device" } th { "Event" } th { "Message" } th {} } }
            tbody {
                @for (i, r) in l.page.records.iter().enumerate() {
                    @for (_, g) in l.gaps.iter().filter(|(at, _)| *at == i) { (gap_row(g)) }
                    (record_row(r))
                }
                @for (_, g) in l.gaps.iter().filter(|(at, _)| *at >= shown) { (gap_row(g)) }
            }
        }
        @if shown == 0 { p #empty { "No records match." } }
    }
}

/// The table of the newest `limit` records of one device (its page shows them).
pub(super) fn device_table(
    store: &Store,
    log_id: [u8; 32],
    limit: u32,
    max_payload_bytes: u64,
) -> Result<Markup, StoreError> {
    let q = RecordQuery {
        log_id: Some(log_id),
        limit,
        max_payload_bytes,
        ..RecordQuery::default()
    };
    Ok(table(&load(store, &q)?))
}

/// Renders `/ui/records?raw_query`: the status and the page (an error page on a bad query).
pub fn render_records_page(
    store: &Store,
    raw_query: Option<&str>,
    now_ms: i64,
    max_payload_bytes: u64,
) -> (StatusCode, Markup) {
    let (pairs, parsed) = match query_pairs(raw_query) {
        Ok(p) => (p, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    };
    let result = parsed
        .and_then(|()| api::parse_records_query(&pairs, UI_PAGE, now_ms))
        .and_then(|mut q| {
            q.max_payload_bytes = max_payload_bytes;
            load(store, &q).map_err(ApiError::internal)
        });
    let head = html! {
        h1 { "Records" }
        (range_picker(&pairs))
        (filter_form(&pairs))
    };
    match result {
        Err(e) => (
            e.status,
            page(
                "Records",
                "/ui/records",
                html! { (head) div.error #error { (e.message) } },
            ),
        ),
        Ok(l) => {
            let shown = l.page.records.len();
            let body = html! {
                (head)
                @if let (Some(r), false) = (l.page.records.first(), value_of(&pairs, "record_id").is_empty()) {
                    (record_detail(r))
                }
                p.count #count {
                    strong #total { (num(l.total)) } " records match"
                    @if shown > 0 { "; showing " (num(shown as u64)) ", newest first" }
                    "."
                }
                (pager(&pairs, &l.page, l.newer))
                (table(&l))
                (pager(&pairs, &l.page, l.newer))
            };
            (StatusCode::OK, page("Records", "/ui/records", body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(log: u8, segment: u64, seq: i64) -> RecordRow {
        RecordRow {
            seq,
            record_id: [0; 16],
            log_id: [log; 32],
            batch_id: [0; 32],
            segment,
            offset: 0,
            classification: "a/b/c".into(),
            severity: 1,
            created_ms: 0,
            boot_ms: 0,
            event_id: None,
            received_ms: 0,
            payload_len: 0,
            payload: Some(b"line\nnext <b>".to_vec()),
            machine_id: String::new(),
            boot_id: String::new(),
            arch: String::new(),
            platform: String::new(),
            build: String::new(),
            system_name: String::new(),
            kernel_version: String::new(),
            record_format_version: String::new(),
            context: Vec::new().into(),
        }
    }

    fn gap(id: i64, log: u8, start: u64, end: u64) -> GapView {
        GapView {
            id,
            log_id: [log; 32],
            machine_id: String::new(),
            reason: "trimmed".into(),
            start: (start, 0),
            end: (end, 0),
            segments: end - start,
            records: 0,
            bytes: 0,
            detail: String::new(),
            received_ms: 0,
        }
    }

    #[test]
    fn gaps_go_under_the_first_record_after_them() {
        // Newest first: device 1 segments 9, 8, then 3; device 2 segment 5.
        let recs = [row(1, 9, 4), row(1, 8, 3), row(2, 5, 2), row(1, 3, 1)];
        let at = |gaps: Vec<GapView>, first: bool, between: bool| -> Vec<(usize, i64)> {
            place_gaps(&recs, gaps, first, |_, _| between)
                .iter()
                .map(|(i, g)| (*i, g.id))
                .collect()
        };
        // Device 1's gap 4..8 lies between segment 8 (row 1) and segment 3 (row 3).
        assert_eq!(at(vec![gap(1, 1, 4, 8)], false, true), [(3, 1)]);
        // Device 2's gap 1..2 is older than its only record here: under it, when no other
        // record comes between (else a later page shows it).
        assert_eq!(at(vec![gap(2, 2, 1, 2)], false, false), [(3, 2)]);
        assert!(at(vec![gap(2, 2, 1, 2)], false, true).is_empty());
        // A gap newer than all of device 1's records: on the first page only, above them.
        assert_eq!(at(vec![gap(5, 1, 10, 11)], true, false), [(0, 5)]);
        assert!(at(vec![gap(5, 1, 10, 11)], false, false).is_empty());
        // A device with no records here: nowhere.
        assert!(at(vec![gap(3, 3, 1, 2)], true, false).is_empty());
    }

    #[test]
    fn messages_are_one_line_and_the_row_escapes_them() {
        let r = row(1, 1, 1);
        assert_eq!(message(&r), "line\\nnext <b>");
        let html = record_row(&r).into_string();
        assert!(html.contains("line\\nnext &lt;b&gt;"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
    }
}
