//! The request-rate histogram as a self-contained SVG (no plotting crate needed).

use std::fmt::Write as _;

/// An SVG bar chart of `requests` per second (with the 429 part of each bar in red) from
/// second `from`, with a dashed line at `mean` and another at `3 * mean`, and `title`.
pub fn histogram_svg(
    requests: &[u32],
    shed: &[u32],
    from: usize,
    mean: f64,
    title: &str,
) -> String {
    let (w, h, left, bottom, top) = (1200.0f64, 420.0f64, 60.0f64, 40.0f64, 30.0f64);
    let data = requests.get(from..).unwrap_or(&[]);
    let peak = data.iter().copied().max().unwrap_or(1).max(1);
    let ymax = f64::from(peak).max(3.2 * mean).max(1.0);
    let plot_w = w - left - 10.0;
    let plot_h = h - bottom - top;
    let bar = plot_w / data.len().max(1) as f64;
    let y = |v: f64| top + plot_h - v / ymax * plot_h;
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    let mut path_all = String::new();
    let mut path_shed = String::new();
    for (i, &n) in data.iter().enumerate() {
        let x = left + i as f64 * bar;
        let s = shed.get(from + i).copied().unwrap_or(0).min(n);
        if n > 0 {
            let _ = write!(path_all, "M{x:.2} {:.2}V{:.2}", y(0.0), y(f64::from(n)));
        }
        if s > 0 {
            let _ = write!(path_shed, "M{x:.2} {:.2}V{:.2}", y(0.0), y(f64::from(s)));
        }
    }
    let sw = bar.max(0.5);
    let _ = writeln!(
        o,
        "<path d=\"{path_all}\" stroke=\"#4477aa\" stroke-width=\"{sw:.2}\"/>"
    );
    let _ = writeln!(
        o,
        "<path d=\"{path_shed}\" stroke=\"#cc3311\" stroke-width=\"{sw:.2}\"/>"
    );
    for (v, label) in [(mean, "steady mean"), (3.0 * mean, "3 x steady mean")] {
        let _ = writeln!(
            o,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yv:.2}\" y2=\"{yv:.2}\" stroke=\"black\" \
             stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{:.2}\" text-anchor=\"end\">{label} ({v:.1}/s)</text>",
            w - 10.0,
            w - 12.0,
            y(v) - 3.0,
            yv = y(v),
        );
    }
    // Axes and ticks.
    let _ = writeln!(
        o,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{}\" stroke=\"black\"/>\
         <line x1=\"{left}\" x2=\"{}\" y1=\"{b:.2}\" y2=\"{b:.2}\" stroke=\"black\"/>",
        top + plot_h,
        w - 10.0,
        b = y(0.0)
    );
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{:.2}\" text-anchor=\"end\">{v:.0}</text>",
            left - 4.0,
            y(v) + 4.0
        );
    }
    let minutes = data.len() / 60;
    let step = (minutes / 10).max(1);
    for m in (0..=minutes).step_by(step) {
        let x = left + (m * 60) as f64 * bar;
        let _ = writeln!(
            o,
            "<text x=\"{x:.2}\" y=\"{:.2}\" text-anchor=\"middle\">{m} min</text>",
            h - bottom + 16.0
        );
    }
    let _ = writeln!(
        o,
        "<text x=\"{left}\" y=\"{}\">requests per second after the outage ended (blue: all, red: answered 429)</text>\n</svg>",
        h - 6.0
    );
    o
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
