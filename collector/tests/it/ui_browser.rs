//! The HTML views rendered by a real browser: headless Chromium loads each page from the
//! collector on 127.0.0.1 and dumps the DOM it built; the test checks each page for its
//! parts and writes a screenshot of each under `target/ui-screenshots/` for a person to look
//! at. Skips (with a message) when /usr/bin/chromium is not installed; `.ci/run` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Harness;
use collector::fixtures;
use protocol::{Gap, GapReason};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(args: &[String]) -> Option<std::process::Output> {
    if !Path::new(CHROMIUM).exists() {
        eprintln!(
            "SKIPPED: {CHROMIUM} not found; install the chromium package to run the browser test"
        );
        return None;
    }
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out)
}

/// The DOM of `url` after the browser parsed and laid it out, or `None` when there is no
/// browser.
fn dump_dom(url: &str) -> Option<String> {
    let out = chromium(&["--dump-dom".to_owned(), url.to_owned()])?;
    Some(String::from_utf8(out.stdout).unwrap())
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a 1280x1000 screenshot of `url` to `target/ui-screenshots/NAME.png`.
fn screenshot(url: &str, name: &str) {
    let path = screenshot_dir().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    if chromium(&[
        format!("--screenshot={}", path.display()),
        "--window-size=1280,1000".to_owned(),
        url.to_owned(),
    ])
    .is_none()
    {
        return;
    }
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{name}: not a real screenshot"
    );
    eprintln!("screenshot: {}", path.display());
}

fn rows(dom: &str) -> usize {
    dom.matches("<tr class=\"record\">").count()
}

/// The `href` of the element with `id`, `&amp;` decoded.
fn href_of(dom: &str, id: &str) -> Option<String> {
    let tag = dom.split(&format!("id=\"{id}\"")).nth(1)?;
    let href = tag.split("href=\"").nth(1)?.split('"').next()?;
    Some(href.replace("&amp;", "&"))
}

/// Two devices: A uploads records 0..120, then (after losing 80 records to retention)
/// 200..330; B uploads 0..60 and reports a trimmed range of unknown size and 25 records its
/// rate limit refused. One of A's payloads is a script that must never run.
fn fill(h: &Harness) -> ([u8; 32], [u8; 32]) {
    let (a, b) = (fixtures::private_id(1), fixtures::private_id(2));
    let mut first = fixtures::batch(&a, 0, 120, "40");
    first.counters.clear();
    first.records[119].payload =
        b"<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><script>document.title='pwned'</script>"
            .to_vec();
    assert_eq!(h.upload(&a, &first).0, 200);
    let mut second = fixtures::batch(&a, 200, 130, "40");
    second.counters.clear();
    second.first = fixtures::position(120);
    second.gaps.push(Gap {
        reason: GapReason::Trimmed,
        start: fixtures::position(120),
        end: fixtures::position(200),
        segments: 0,
        records: 80,
        bytes: 80 * fixtures::STRIDE,
        detail: "retention removed 80 records before upload".into(),
    });
    assert_eq!(h.upload(&a, &second).0, 200);
    let mut other = fixtures::batch(&b, 0, 60, "41");
    other.gaps.push(Gap {
        reason: GapReason::Trimmed,
        start: fixtures::position(0),
        end: fixtures::position(0),
        segments: 2,
        records: 0,
        bytes: 0,
        detail: "segments 1-2 trimmed, count unknown".into(),
    });
    other.counters = vec![("recorder.dropped.rate_limit_records".into(), 25)];
    assert_eq!(h.upload(&b, &other).0, 200);
    (a, b)
}

#[test]
fn chromium_renders_every_page_with_its_parts_and_screenshots_them() {
    let h = Harness::start(|_| {});
    let (a, b) = fill(&h);
    let device_a = hex::encode(fixtures::public_id(&a));

    // Records: total count, compact rows with severity names, context on demand, event
    // links, device links, paging both ways, and the payload shown as text only.
    let Some(dom) = dump_dom(&format!("{}/ui/records", h.url)) else {
        return;
    };
    screenshot(&format!("{}/ui/records", h.url), "records");
    assert!(dom.contains("<table id=\"records\">"), "{dom}");
    assert_eq!(rows(&dom), 100, "first page");
    assert!(dom.contains("<strong id=\"total\">310</strong>"), "{dom}");
    assert!(
        dom.contains("<nav class=\"ranges\" id=\"ranges\">"),
        "time range picker"
    );
    for sev in ["low", "medium", "high", "critical"] {
        assert!(
            dom.contains(&format!(">{sev}</td>")),
            "severity {sev} by name"
        );
    }
    assert!(dom.contains("<details class=\"ctx\"><summary>context</summary>"));
    assert!(dom.contains("class=\"event\" href=\"/ui/records?event_id="));
    assert!(dom.contains(&format!("href=\"/ui/devices/{device_a}\"")));
    assert!(
        !dom.contains("id=\"newer\""),
        "nothing is newer than the first page"
    );
    assert!(!dom.contains("<body data-pwned"), "a payload ran as HTML");
    assert!(!dom.contains("<title>pwned"), "a payload ran as a script");
    assert!(
        !dom.contains("<img src=\"x\""),
        "a payload became an element"
    );

    // Page 2: newer and older links, and A's gap between records 200 and 119.
    let next = href_of(&dom, "next").expect("an older link");
    let dom2 = dump_dom(&format!("{}{next}", h.url)).unwrap();
    assert_eq!(rows(&dom2), 100, "second page");
    assert!(dom2.contains("id=\"newer\""), "{dom2}");
    let gap_at = dom2
        .find("<tr class=\"gap\">")
        .expect("the gap row on page 2");
    let gap_row = &dom2[gap_at..];
    assert!(
        gap_row.contains("80 records lost (trimmed") && gap_row.contains("href=\"/ui/gaps#gap-"),
        "{gap_row}"
    );
    let before = &dom2[..gap_at];
    assert!(before.contains("record 200:") && !before.contains("record 119:"));
    assert!(
        gap_row.contains("record 118:"),
        "records 119 and older are under the gap"
    );
    // A's records 205..200 (received as seq 126..121), its gap, then 119 and older.
    let around = format!("{}/ui/records?log_id={device_a}&limit=25&cursor=127", h.url);
    let near = dump_dom(&around).unwrap();
    screenshot(&around, "records-gap");
    assert_eq!(near.matches("<tr class=\"gap\">").count(), 1, "{near}");
    let (above, below) = near.split_once("<tr class=\"gap\">").unwrap();
    assert!(above.contains("record 200:") && !above.contains("record 118:"));
    assert!(below.contains("record 118:") && !below.contains("record 200:"));
    let newer = href_of(&dom2, "newer").unwrap();
    let back = dump_dom(&format!("{}{newer}", h.url)).unwrap();
    assert_eq!(back, dom, "newer leads back to the first page");
    let third = dump_dom(&format!("{}{}", h.url, href_of(&dom2, "next").unwrap())).unwrap();
    assert_eq!(rows(&third), 100);
    let last = dump_dom(&format!("{}{}", h.url, href_of(&third, "next").unwrap())).unwrap();
    assert_eq!(rows(&last), 10, "the last 10 of 310");
    assert!(!last.contains("id=\"next\"") && last.contains("id=\"newer\""));

    // The filter form's query, as the browser would submit it, with a wildcard class.
    let dom3 = dump_dom(&format!(
        "{}/ui/records?classification=org.example%2Fnet%2F*&severity=&limit=",
        h.url
    ))
    .unwrap();
    assert!(
        dom3.contains("value=\"org.example/net/*\""),
        "the form keeps the filter"
    );
    let indices = || (0..120u64).chain(200..330).chain(0..60);
    let net = indices().filter(|i| i % 3 == 2).count();
    assert!(
        dom3.contains(&format!("<strong id=\"total\">{net}</strong>")),
        "{dom3}"
    );
    let sev = dump_dom(&format!("{}/ui/records?severity=critical&limit=500", h.url)).unwrap();
    assert_eq!(rows(&sev), indices().filter(|i| i % 4 == 3).count());

    // Gaps: every gap with device, reason, range, records, bytes; the truthful summary.
    let gaps_url = format!("{}/ui/gaps", h.url);
    let gaps = dump_dom(&gaps_url).unwrap();
    screenshot(&gaps_url, "gaps");
    assert_eq!(gaps.matches("<tr class=\"gap-entry\"").count(), 2, "{gaps}");
    assert!(
        gaps.contains("<strong id=\"lost\">105</strong>"),
        "80 + 25 refused: {gaps}"
    );
    assert!(gaps.contains("plus an unknown number in 1 gap (2 whole segments)"));
    assert!(gaps.contains("retention removed 80 records before upload"));
    assert!(gaps.contains(">unknown<"));
    assert!(gaps.contains("1:15424 → 1:25664"), "the range: {gaps}");

    // Overview: charts as inline SVG, the range picker, totals with what was lost.
    let stats_url = format!("{}/ui/stats?range=all", h.url);
    let stats = dump_dom(&stats_url).unwrap();
    screenshot(&stats_url, "overview");
    for chart in [
        "chart-class",
        "chart-severity",
        "chart-build",
        "chart-machine",
    ] {
        let at = stats
            .find(&format!("id=\"{chart}\""))
            .unwrap_or_else(|| panic!("{chart}"));
        assert!(stats[at..].contains("<svg"), "{chart} is an SVG");
    }
    assert!(stats.contains("<rect class=\"bar\""), "{stats}");
    assert!(!stats.contains("<script"), "no scripts");
    assert!(stats.contains("org.example/hello/world ("), "legend");
    assert!(stats.contains("<td id=\"lost-total\">105</td>"), "{stats}");
    assert!(
        stats.contains("class=\"on\">all</a>"),
        "the chosen range is marked"
    );

    // Devices and one device.
    let devices_url = format!("{}/ui/devices", h.url);
    let devices = dump_dom(&devices_url).unwrap();
    screenshot(&devices_url, "devices");
    assert!(
        devices.contains(&fixtures::machine_id(&a)) && devices.contains(&fixtures::machine_id(&b))
    );
    let device_url = format!("{}/ui/devices/{device_a}", h.url);
    let device = dump_dom(&device_url).unwrap();
    screenshot(&device_url, "device");
    assert!(device.contains(&format!("<code id=\"log-id\">{device_a}</code>")));
    assert!(device.contains("<table id=\"records\">") && rows(&device) == 20);
    assert!(device.contains("<table id=\"builds\">") && device.contains(">40<"));
    assert!(device.contains("<table id=\"gaps\">"));
    assert!(
        device.contains("<strong id=\"lost\">80</strong>"),
        "{device}"
    );
}
