//! The overview (`/ui/stats`): totals with the loss summary, a time range picker, and SVG
//! charts of the records created in the range: over time by classification and by
//! severity, and by build and by machine; then the all-time count tables.

use maud::{html, Markup};

use super::charts::{self, Series, PALETTE, SEVERITY_COLOURS};
use super::gaps::loss_summary;
use super::{num, page, qs, sev_name};
use crate::api::ApiError;
use crate::store::views::{Buckets, CountBy, SeriesBy};
use crate::store::{Stats, Store, StoreError};

/// Classifications drawn as their own series; the rest are "other".
const TOP_CLASSES: usize = 6;
/// Rows of the by-build and by-machine charts.
const TOP_ROWS: u32 = 12;
/// About this many columns per chart.
const COLUMNS: i64 = 48;

/// The time range picker's choices: (parameter, label, length in ms; 0 for all).
const RANGES: [(&str, &str, i64); 5] = [
    ("1h", "1 hour", 3_600_000),
    ("24h", "24 hours", 86_400_000),
    ("7d", "7 days", 7 * 86_400_000),
    ("30d", "30 days", 30 * 86_400_000),
    ("all", "all", 0),
];

/// The chosen range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    key: &'static str,
    len_ms: i64,
}

impl Range {
    /// `range=` of the query; empty is 7 days.
    pub(crate) fn parse(v: &str) -> Result<Range, ApiError> {
        let v = if v.is_empty() { "7d" } else { v };
        RANGES
            .iter()
            .find(|(k, _, _)| *k == v)
            .map(|&(key, _, len_ms)| Range { key, len_ms })
            .ok_or_else(|| ApiError::bad("range", "range must be 1h, 24h, 7d, 30d or all"))
    }
}

/// A bucket width at least `span / COLUMNS`, rounded to a readable step.
fn bucket_width(span_ms: i64) -> i64 {
    const STEPS: [i64; 12] = [
        60_000,
        300_000,
        900_000,
        1_800_000,
        3_600_000,
        3 * 3_600_000,
        6 * 3_600_000,
        12 * 3_600_000,
        86_400_000,
        7 * 86_400_000,
        30 * 86_400_000,
        365 * 86_400_000,
    ];
    let want = (span_ms / COLUMNS).max(1);
    STEPS.iter().copied().find(|s| *s >= want).unwrap_or(want)
}

/// The label of the bucket starting at `ms`: a date for day-wide buckets, else the time.
fn bucket_label(ms: i64, width: i64) -> String {
    let t = super::when(ms);
    if width >= 86_400_000 {
        t.get(..10).unwrap_or(&t).to_owned()
    } else {
        t.get(5..16).unwrap_or(&t).to_owned()
    }
}

/// Series from bucket rows: the `top` keys by total (in `order` when given) and "other".
fn series(
    rows: &Buckets,
    n: usize,
    top: usize,
    colour: impl Fn(usize, &str) -> &'static str,
) -> Vec<Series> {
    let mut totals: Vec<(String, u64)> = Vec::new();
    for (_, k, c) in rows {
        match totals.iter_mut().find(|(tk, _)| tk == k) {
            Some(t) => t.1 += c,
            None => totals.push((k.clone(), *c)),
        }
    }
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: Vec<String> = totals.iter().take(top).map(|(k, _)| k.clone()).collect();
    let mut out: Vec<Series> = kept
        .iter()
        .enumerate()
        .map(|(i, k)| Series {
            name: k.clone(),
            colour: colour(i, k),
            counts: vec![0; n],
        })
        .collect();
    let mut other = vec![0u64; n];
    for (b, k, c) in rows {
        let Ok(b) = usize::try_from(*b) else { continue };
        let slot = match kept.iter().position(|x| x == k) {
            Some(i) => out.get_mut(i).and_then(|s| s.counts.get_mut(b)),
            None => other.get_mut(b),
        };
        if let Some(v) = slot {
            *v += c;
        }
    }
    if other.iter().any(|c| *c > 0) {
        out.push(Series {
            name: "other".into(),
            colour: PALETTE[PALETTE.len() - 1],
            counts: other,
        });
    }
    out
}

fn range_picker(current: Range) -> Markup {
    html! {
        nav.ranges #ranges { "Records created in the last:"
            @for (key, label, _) in RANGES {
                a href={ "/ui/stats?range=" (key) } class=[(current.key == key).then_some("on")] { (label) }
            }
        }
    }
}

fn count_table(title: &str, id: &str, param: Option<&str>, rows: &[(String, u64)]) -> Markup {
    html! {
        section {
            h2 { (title) }
            table id=(id) {
                thead { tr { th { "value" } th { "records" } } }
                tbody {
                    @for (k, n) in rows {
                        tr {
                            td {
                                @match param {
                                    Some(p) if !k.is_empty() => a href={ "/ui/records?" (qs(&[(p, k)])) } { (k) },
                                    _ => { @if k.is_empty() { "(none)" } @else { (k) } }
                                }
                            }
                            td { (num(*n)) }
                        }
                    }
                }
            }
        }
    }
}

/// Renders the overview for records created in `range` up to `now_ms`.
pub(crate) fn render(
    store: &Store,
    s: &Stats,
    range: Range,
    now_ms: i64,
) -> Result<Markup, StoreError> {
    let (since, until) = if range.len_ms > 0 {
        (now_ms - range.len_ms, now_ms)
    } else {
        match store.created_range()? {
            Some((a, b)) => (a, b.saturating_add(1)),
            None => (now_ms - 86_400_000, now_ms),
        }
    };
    let width = bucket_width(until - since);
    // Buckets aligned to the width, so labels are round times.
    let start = since - since.rem_euclid(width);
    let n = usize::try_from((until - start + width - 1) / width)
        .unwrap_or(1)
        .max(1);
    let labels: Vec<String> = (0..n)
        .map(|i| bucket_label(start + i as i64 * width, width))
        .collect();
    let by_class = store.buckets(start, until, width, SeriesBy::Classification)?;
    let by_sev = store.buckets(start, until, width, SeriesBy::Severity)?;
    let class_series = series(&by_class, n, TOP_CLASSES, |i, _| {
        PALETTE[i % (PALETTE.len() - 1)]
    });
    let mut sev_series = series(&by_sev, n, 4, |_, k| {
        let i = k.parse::<usize>().unwrap_or(1).clamp(1, 4) - 1;
        SEVERITY_COLOURS[i]
    });
    sev_series.sort_by_key(|s| s.name.parse::<u8>().unwrap_or(0));
    for s in &mut sev_series {
        s.name = format!("{} {}", s.name, sev_name(s.name.parse().unwrap_or(0)));
    }
    let builds: Vec<(String, u64, Option<String>)> = store
        .counts_by(since, until, CountBy::Build, TOP_ROWS)?
        .into_iter()
        .map(|(b, n)| {
            let link = format!("/ui/records?{}", qs(&[("build", &b)]));
            (b, n, Some(link))
        })
        .collect();
    let machines: Vec<(String, u64, Option<String>)> = store
        .counts_by(since, until, CountBy::Machine, TOP_ROWS)?
        .into_iter()
        .map(|(m, n)| {
            let link = format!("/ui/records?{}", qs(&[("machine_id", &m)]));
            (m, n, Some(link))
        })
        .collect();
    let loss = store.loss_summary(None)?;
    let rejected = s.rejected.values().fold(0u64, |a, n| a.saturating_add(*n));
    let totals: [(&str, u64); 9] = [
        ("records stored", s.records),
        ("devices (logs)", s.logs),
        ("batches received", s.batches),
        ("duplicate batches acknowledged", s.batches_duplicate),
        ("duplicate records not stored twice", s.records_duplicate),
        ("uploads rejected", rejected),
        ("gap entries", s.gaps),
        ("bytes received (compressed)", s.body_bytes),
        ("bytes received (decompressed)", s.raw_bytes),
    ];
    let rej: Vec<(String, u64)> = s.rejected.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let body = html! {
        h1 { "Overview" }
        (range_picker(range))
        (loss_summary(&loss))
        div.grid {
            (charts::stacked("chart-class", "Records over time by classification", &labels, &class_series))
            (charts::stacked("chart-severity", "Records over time by severity", &labels, &sev_series))
            (charts::horizontal("chart-build", "Records by build", &builds))
            (charts::horizontal("chart-machine", "Records by machine", &machines))
        }
        h2 { "All time" }
        table #totals { tbody {
            @for (k, v) in totals { tr { th { (k) } td { (num(v)) } } }
            tr { th { "records reported lost (at least)" } td #lost-total { (num(loss.known_lost())) } }
        } }
        div.grid {
            (count_table("By classification", "by_classification", Some("classification"), &s.by_classification))
            (count_table("By severity", "by_severity", Some("severity"), &s.by_severity))
            (count_table("By platform", "by_platform", Some("platform"), &s.by_platform))
            (count_table("By build", "by_build", Some("build"), &s.by_build))
            (count_table("Rejected uploads by reason", "rejected", None, &rej))
            (count_table("Gaps by reason", "gaps_by_reason", None, &s.gaps_by_reason))
            (count_table("Device counters", "device_counters", None, &s.device_counters))
        }
    };
    Ok(page("Overview", "/ui/stats", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_default_to_a_week() {
        assert_eq!(Range::parse("").unwrap().key, "7d");
        assert_eq!(Range::parse("1h").unwrap().len_ms, 3_600_000);
        assert!(Range::parse("2h").is_err());
    }

    #[test]
    fn bucket_widths_are_readable_steps() {
        assert_eq!(bucket_width(3_600_000), 300_000);
        assert_eq!(bucket_width(86_400_000), 1_800_000);
        assert_eq!(bucket_width(7 * 86_400_000), 6 * 3_600_000);
        assert_eq!(bucket_width(1), 60_000);
    }

    #[test]
    fn series_keep_the_largest_keys_and_sum_the_rest_as_other() {
        let rows: Buckets = vec![
            (0, "a".into(), 5),
            (1, "a".into(), 1),
            (0, "b".into(), 3),
            (1, "c".into(), 1),
            (9, "a".into(), 100), // outside the buckets: ignored
        ];
        let s = series(&rows, 2, 1, |_, _| PALETTE[0]);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].counts.clone()), ("a", vec![5, 1]));
        assert_eq!(
            (s[1].name.as_str(), s[1].counts.clone()),
            ("other", vec![3, 1])
        );
    }
}
