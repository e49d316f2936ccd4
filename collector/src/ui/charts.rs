//! Server-rendered SVG charts (no scripts): stacked bars over time and horizontal bars.
//! Every bar carries a `<title>` (the browser shows it on hover) and the legend is HTML.

use maud::{html, Markup};

use super::num;

/// Series colours, in order; the last is for "other".
pub(super) const PALETTE: [&str; 8] = [
    "#2f6fd0", "#e0842b", "#3a9a5b", "#b23a48", "#7b5cc4", "#2aa5b5", "#c4a42a", "#8a939c",
];
/// Severity colours: low, medium, high, critical.
pub(super) const SEVERITY_COLOURS: [&str; 4] = ["#6aa56c", "#d8b42a", "#e0842b", "#b00020"];

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 46.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// One stacked series: its name, colour and a count per bucket.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) colour: &'static str,
    pub(super) counts: Vec<u64>,
}

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_max(v: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            let c = p.saturating_mul(m);
            if c >= v || c == u64::MAX {
                return c.max(1);
            }
        }
        p = p.saturating_mul(10);
    }
}

/// Stacked bars: one column per bucket, `labels` under some of them.
pub(super) fn stacked(id: &str, title: &str, labels: &[String], series: &[Series]) -> Markup {
    let n = labels.len().max(1);
    let totals: Vec<u64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.counts.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = nice_max(totals.iter().copied().max().unwrap_or(0));
    let plot_w = W - LEFT - 4.0;
    let plot_h = H - TOP - BOTTOM;
    let col = plot_w / n as f64;
    let bar = (col * 0.8).max(1.0);
    let y = |v: u64| TOP + plot_h - plot_h * (v as f64 / max as f64);
    let every = n.div_ceil(6).max(1);
    let mut rects = Vec::new();
    for i in 0..n {
        let mut acc = 0u64;
        for s in series {
            let c = s.counts.get(i).copied().unwrap_or(0);
            if c == 0 {
                continue;
            }
            let (top, bottom) = (y(acc + c), y(acc));
            acc += c;
            let label = labels.get(i).map(String::as_str).unwrap_or("");
            rects.push((
                LEFT + col * i as f64 + (col - bar) / 2.0,
                top,
                bar,
                (bottom - top).max(0.5),
                s.colour,
                format!("{}: {} records ({label})", s.name, num(c)),
            ));
        }
    }
    html! {
        section.chart id=(id) {
            h2 { (title) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } width="100%" role="img" aria-label=(title) {
                @for k in 0..=4u64 {
                    @let v = max / 4 * k;
                    line x1=(LEFT) x2=(W - 4.0) y1=(y(v)) y2=(y(v)) stroke="#e3e7eb" {}
                    text x=(LEFT - 4.0) y=(y(v) + 3.0) text-anchor="end" { (num(v)) }
                }
                @for (x, top, w, h, colour, tip) in &rects {
                    rect.bar x=(format!("{x:.1}")) y=(format!("{top:.1}")) width=(format!("{w:.1}")) height=(format!("{h:.1}")) fill=(colour) { title { (tip) } }
                }
                @for (i, l) in labels.iter().enumerate() {
                    @if i.is_multiple_of(every) {
                        text x=(format!("{:.1}", LEFT + col * i as f64 + col / 2.0)) y=(H - 6.0) text-anchor="middle" { (l) }
                    }
                }
            }
            ul.legend {
                @for s in series {
                    li { span style={ "background:" (s.colour) } {} (s.name) " (" (num(s.counts.iter().sum())) ")" }
                }
            }
        }
    }
}

/// Horizontal bars: one row per `(label, count, link)`.
pub(super) fn horizontal(id: &str, title: &str, rows: &[(String, u64, Option<String>)]) -> Markup {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let row_h = 18.0;
    let h = (rows.len() as f64 * row_h).max(row_h) + 4.0;
    let label_w = 230.0;
    let bar_w = W - label_w - 70.0;
    html! {
        section.chart id=(id) {
            h2 { (title) }
            @if rows.is_empty() { p { "No records in this range." } }
            @else {
                svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (h) } width="100%" role="img" aria-label=(title) {
                    @for (i, (label, n, link)) in rows.iter().enumerate() {
                        @let y = 2.0 + i as f64 * row_h;
                        @let w = (bar_w * (*n as f64) / (max as f64)).max(1.0);
                        @let shown = if label.is_empty() { "(none)".to_owned() } else { label.chars().take(36).collect() };
                        @match link {
                            Some(href) => a href=(href) { text x=(label_w - 6.0) y=(y + 12.0) text-anchor="end" { (shown) } },
                            None => text x=(label_w - 6.0) y=(y + 12.0) text-anchor="end" { (shown) },
                        }
                        rect.bar x=(label_w) y=(y + 2.0) width=(format!("{w:.1}")) height=(row_h - 5.0) fill=(PALETTE[0]) { title { (label) ": " (num(*n)) " records" } }
                        text x=(format!("{:.1}", label_w + w + 4.0)) y=(y + 12.0) { (num(*n)) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(101), 200);
        assert_eq!(nice_max(5000), 5000);
        assert_eq!(nice_max(u64::MAX), u64::MAX);
    }

    #[test]
    fn stacked_bars_escape_names_and_stack_to_the_total() {
        let series = vec![
            Series {
                name: "<a>".into(),
                colour: PALETTE[0],
                counts: vec![1, 0, 3],
            },
            Series {
                name: "b".into(),
                colour: PALETTE[1],
                counts: vec![1, 2, 1],
            },
        ];
        let labels: Vec<String> = ["x", "y", "z"].iter().map(|s| s.to_string()).collect();
        let svg = stacked("c", "T", &labels, &series).into_string();
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 5, "{svg}");
        assert!(svg.contains("&lt;a&gt;: 3 records (z)"), "{svg}");
        assert!(!svg.contains("<a>"), "{svg}");
        assert!(svg.contains("&lt;a&gt; (4)"), "legend totals: {svg}");
    }
}
