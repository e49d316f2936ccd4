//! The gaps page: the loss summary, then every gap entry (device, reason, range, segments,
//! records, bytes, reception time, the device's detail), newest first, with older paging.
//! Each row is the anchor `gap-ID` that the records page links to.

use maud::{html, Markup};

use super::{device_href, num, page, short_hex, value_of, when};
use crate::api::ApiError;
use crate::store::views::{GapView, LossSummary};
use crate::store::{Store, StoreError};

/// Gap entries per page.
const GAPS_PAGE: u32 = 200;

/// The page's query: one device, and where the page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GapArgs {
    log_id: Option<[u8; 32]>,
    before: Option<i64>,
}

impl GapArgs {
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<GapArgs, ApiError> {
        for (k, _) in pairs {
            if k != "log_id" && k != "before" {
                let k: String = k.chars().take(64).collect();
                return Err(ApiError::bad(
                    &k,
                    format!("unknown parameter {k:?}; the gaps page takes log_id and before"),
                ));
            }
        }
        let mut args = GapArgs::default();
        let log = value_of(pairs, "log_id");
        if !log.is_empty() {
            let mut id = [0u8; 32];
            if log.len() != 64 || hex::decode_to_slice(log, &mut id).is_err() {
                return Err(ApiError::bad("log_id", "log_id must be 64 hex characters"));
            }
            args.log_id = Some(id);
        }
        let before = value_of(pairs, "before");
        if !before.is_empty() {
            let b = before
                .parse::<i64>()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| {
                    ApiError::bad("before", "before must be a positive integer (a gap id)")
                })?;
            args.before = Some(b);
        }
        Ok(args)
    }
}

/// The loss summary: what is known lost, and what is lost in unknown amounts.
pub(super) fn loss_summary(s: &LossSummary) -> Markup {
    html! {
        div.summary #loss {
            p {
                "Lost records: at least " strong #lost { (num(s.known_lost())) }
                @if s.unknown_gaps > 0 {
                    ", plus an unknown number in " (num(s.unknown_gaps)) (if s.unknown_gaps == 1 { " gap" } else { " gaps" })
                    @if s.unknown_segments > 0 { " (" (num(s.unknown_segments)) " whole segments" }
                    @if s.unknown_bytes > 0 {
                        @if s.unknown_segments > 0 { ", " } @else { " (" }
                        (num(s.unknown_bytes)) " bytes"
                    }
                    @if s.unknown_segments > 0 || s.unknown_bytes > 0 { ")" }
                }
                "."
            }
            ul {
                li { (num(s.gap_records)) " records named by " (num(s.gaps)) (if s.gaps == 1 { " gap entry" } else { " gap entries" }) }
                li { (num(s.expired_on_devices)) " records expired on devices before upload (uploader.expired_records; the same records as trimmed gaps, counted once)" }
                li { (num(s.refused_on_devices)) " records refused by the devices' recorders (recorder.dropped.*: rate limits, probes)" }
            }
        }
    }
}

pub(super) fn gap_table(gaps: &[GapView]) -> Markup {
    html! {
        table #gaps {
            thead { tr {
                th { "Received (UTC)" } th { "Device" } th { "Reason" } th { "Range" }
                th { "Segments" } th { "Records" } th { "Bytes" } th { "Detail" } th {}
            } }
            tbody {
                @for g in gaps {
                    tr.gap-entry id={ "gap-" (g.id) } {
                        td.mono { (when(g.received_ms)) }
                        td.mono {
                            a href=(device_href(&g.log_id)) title=(hex::encode(g.log_id)) {
                                @if g.machine_id.is_empty() { (short_hex(&g.log_id, 12)) }
                                @else { (g.machine_id.chars().take(12).collect::<String>()) }
                            }
                        }
                        td { (g.reason) }
                        td.mono { (g.start.0) ":" (g.start.1) " → " (g.end.0) ":" (g.end.1) }
                        td { (num(g.segments)) }
                        td { @if g.records > 0 { (num(g.records)) } @else { "unknown" } }
                        td { @if g.bytes > 0 { (num(g.bytes)) } @else { "unknown" } }
                        td { (g.detail) }
                        td { a href={ "/ui/records?log_id=" (hex::encode(g.log_id)) } { "records" } }
                    }
                }
            }
        }
    }
}

/// Renders the gaps page.
pub(crate) fn render(store: &Store, args: &GapArgs) -> Result<Markup, StoreError> {
    let summary = store.loss_summary(args.log_id)?;
    let gaps = store.gap_views(args.log_id, args.before, GAPS_PAGE)?;
    let older = (gaps.len() == GAPS_PAGE as usize)
        .then(|| gaps.last().map(|g| g.id))
        .flatten();
    let log = args.log_id.map(hex::encode);
    let body = html! {
        h1 { "Gaps" }
        @if let Some(l) = &log { p { "Device " a href={ "/ui/devices/" (l) } { code { (l) } } " · " a href="/ui/gaps" { "all devices" } } }
        (loss_summary(&summary))
        p.count { (num(summary.gaps)) " gap entries; newest first." }
        (gap_table(&gaps))
        @if gaps.is_empty() { p #empty { "No gaps: nothing was reported lost." } }
        div.pager {
            @if args.before.is_some() { a href="/ui/gaps" { "« newest" } }
            @if let Some(b) = older {
                @let q = match &log { Some(l) => format!("log_id={l}&before={b}"), None => format!("before={b}") };
                a #next href={ "/ui/gaps?" (q) } { "older ›" }
            }
        }
    };
    Ok(page("Gaps", "/ui/gaps", body))
}
