//! The HTML views rendered by a real browser: headless Chromium loads the page from the
//! collector on 127.0.0.1 and dumps the DOM it built. Skips (with a message) when
//! /usr/bin/chromium is not installed; `.ci/run` installs it.

use std::path::Path;
use std::process::Command;

use crate::common::Harness;
use collector::fixtures;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The DOM of `url` after the browser parsed and laid it out, or `None` when there is no
/// browser.
fn dump_dom(url: &str) -> Option<String> {
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
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn rows(dom: &str) -> usize {
    dom.matches("<tr class=\"record\">").count()
}

#[test]
fn chromium_renders_the_records_table_with_rows_and_pages_through_it() {
    let h = Harness::start(|_| {});
    let p = fixtures::private_id(1);
    let mut b = fixtures::batch(&p, 0, 120, "77");
    // A payload that would mark the document if the browser ever ran it.
    b.records[119].payload =
        b"<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\"><script>document.title='pwned'</script>"
            .to_vec();
    assert_eq!(h.upload(&p, &b).0, 200);

    let Some(dom) = dump_dom(&format!("{}/ui/records", h.url)) else {
        return;
    };
    assert!(dom.contains("<table id=\"records\">"), "{dom}");
    assert_eq!(rows(&dom), 100, "first page");
    assert!(dom.contains("org.example/hello/world"));
    assert!(dom.contains(&fixtures::machine_id(&p)));
    assert!(dom.contains("<body>"), "{dom}");
    assert!(!dom.contains("<body data-pwned"), "a payload ran as HTML");
    assert!(!dom.contains("<title>pwned"), "a payload ran as a script");
    assert!(
        !dom.contains("<img src=\"x\""),
        "a payload became an element"
    );
    assert!(
        dom.contains("&lt;img src=x onerror="),
        "the payload is shown as text"
    );

    let next = dom
        .split("id=\"next\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let dom2 = dump_dom(&format!("{}{next}", h.url)).unwrap();
    assert_eq!(rows(&dom2), 20, "second page");

    // The filter form's query, as the browser would submit it.
    let dom3 = dump_dom(&format!(
        "{}/ui/records?classification=org.example%2Fnet%2Fstats&severity=&limit=",
        h.url
    ))
    .unwrap();
    assert_eq!(rows(&dom3), 40);
    assert!(
        dom3.contains("value=\"org.example/net/stats\""),
        "the form keeps the filter"
    );

    let stats = dump_dom(&format!("{}/ui/stats", h.url)).unwrap();
    assert!(
        stats.contains("<table id=\"by_classification\">"),
        "{stats}"
    );
    assert!(stats.contains(">120<"), "total records shown");
}
