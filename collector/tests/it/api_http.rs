//! The read side over HTTP: `/api/records` validation and filters, `/api/stats`, the HTML
//! views (as text; `ui_browser.rs` renders them in Chromium), `/healthz`, `/metrics`, and
//! the API token.

use crate::common::Harness;
use collector::fixtures;

fn loaded() -> (Harness, [u8; 32], [u8; 32]) {
    let h = Harness::start(|_| {});
    let (a, b) = (fixtures::private_id(1), fixtures::private_id(2));
    assert_eq!(h.upload(&a, &fixtures::batch(&a, 0, 30, "100")).0, 200);
    assert_eq!(h.upload(&b, &fixtures::batch(&b, 0, 12, "200")).0, 200);
    (h, a, b)
}

#[test]
fn every_bad_parameter_is_a_400_with_a_json_message_naming_it() {
    crate::common::each_backend(|| {
        let (h, _, _) = loaded();
        let cases: Vec<(String, &str)> = vec![
            (
                format!("classification={}", "c".repeat(141)),
                "classification",
            ),
            ("severity=abc".into(), "severity"),
            ("severity=9".into(), "severity"),
            ("machine_id=123".into(), "machine_id"),
            (format!("build={}", "b".repeat(257)), "build"),
            ("created_in_days=x".into(), "created_in_days"),
            ("created_in_sec=-3".into(), "created_in_sec"),
            ("limit=10001".into(), "limit"),
            ("limit=0".into(), "limit"),
            ("since=notatime".into(), "since"),
            ("until=notatime".into(), "until"),
            ("log_id=abc".into(), "log_id"),
            ("event_id=abc".into(), "event_id"),
            ("record_id=abc".into(), "record_id"),
            ("include_payload=perhaps".into(), "include_payload"),
            ("cursor=-1".into(), "cursor"),
            ("platform=".to_owned() + &"p".repeat(300), "platform"),
            ("bogus=1".into(), "bogus"),
        ];
        for (q, param) in cases {
            let (s, v) = h.get(&format!("/api/records?{q}"));
            assert_eq!(s, 400, "{q}: {v}");
            assert_eq!(v["parameter"], param, "{q}: {v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains(param), "{q}: {msg}");
        }
        let (s, v) = h.get("/api/stats?x=1");
        assert_eq!((s, v["parameter"].as_str()), (400, Some("x")));
        let (s, v) = h.get("/api/gaps?limit=0");
        assert_eq!((s, v["parameter"].as_str()), (400, Some("limit")));
    });
}

#[test]
fn filters_and_limits_select_the_right_records() {
    crate::common::each_backend(|| {
        let (h, a, b) = loaded();
        assert_eq!(h.records("").len(), 42);
        assert_eq!(h.records("limit=7").len(), 7);
        assert_eq!(h.records("build=200").len(), 12);
        assert_eq!(
            h.records(&format!("machine_id={}", fixtures::machine_id(&a)))
                .len(),
            30
        );
        assert_eq!(
            h.records(&format!("log_id={}", hex::encode(fixtures::public_id(&b))))
                .len(),
            12
        );
        let q = format!(
            "classification={}&severity=1",
            fixtures::CLASSES[0].replace('/', "%2F")
        );
        let recs = h.records(&q);
        assert!(!recs.is_empty());
        assert!(recs
            .iter()
            .all(|r| r["classification"] == fixtures::CLASSES[0] && r["severity"] == 1));
        // `priority` as `journal -p`: one severity and higher, or a range; the same records
        // as the exact severities added up.
        let all = h.records("");
        let count = |lo: u64, hi: u64| {
            all.iter()
                .filter(|r| (lo..=hi).contains(&r["severity"].as_u64().unwrap_or(0)))
                .count()
        };
        assert!(
            count(3, 4) > 0 && count(3, 4) < all.len(),
            "fixture severities"
        );
        assert_eq!(h.records("priority=high").len(), count(3, 4));
        assert_eq!(h.records("priority=2..3").len(), count(2, 3));
        assert_eq!(h.records("priority=..medium").len(), count(1, 2));
        assert_eq!(h.records("priority=1").len(), all.len());
        // `boot_id`: the records of one boot, dashes and upper case accepted.
        let boot = all[0]["boot_id"].as_str().unwrap().to_owned();
        let of_boot = all.iter().filter(|r| r["boot_id"] == boot.as_str()).count();
        assert!(of_boot > 0);
        assert_eq!(h.records(&format!("boot_id={boot}")).len(), of_boot);
        let dashed = format!(
            "{}-{}-{}-{}-{}",
            &boot[..8],
            &boot[8..12],
            &boot[12..16],
            &boot[16..20],
            &boot[20..]
        )
        .to_uppercase();
        assert_eq!(h.records(&format!("boot_id={dashed}")).len(), of_boot);
        // The fixture records were created in 2023, so nothing is from the last day...
        assert!(h.records("created_in_days=1").is_empty());
        assert!(h.records("created_in_sec=60").is_empty());
        // ...but all of them are from the last 100 years.
        assert_eq!(h.records("created_in_days=36500").len(), 42);
        // Records 10..20 of log a, 10..12 of log b.
        assert_eq!(
            h.records("since=1700000010&until=2023-11-14T22:13:40Z")
                .len(),
            10 + 2
        );
        let one = &h.records("")[5];
        let by_id = h.records(&format!("record_id={}", one["record_id"].as_str().unwrap()));
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0], *one);
        let no_payload = h.records("include_payload=false&limit=3");
        assert!(no_payload
            .iter()
            .all(|r| r.get("payload").is_none() && r["payload_size"].as_u64() > Some(0)));
    });
}

#[test]
fn cursors_page_through_everything_newest_first() {
    crate::common::each_backend(|| {
        let (h, _, _) = loaded();
        let mut seen = Vec::new();
        let mut q = "limit=10".to_owned();
        loop {
            let (s, v) = h.get(&format!("/api/records?{q}"));
            assert_eq!(s, 200);
            for r in v["records"].as_array().unwrap() {
                seen.push(r["record_id"].as_str().unwrap().to_owned());
            }
            match v["next_cursor"].as_i64() {
                Some(c) => q = format!("limit=10&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 42);
        let all: Vec<_> = h
            .records("")
            .iter()
            .map(|r| r["record_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(seen, all);
    });
}

#[test]
fn stats_count_by_classification_severity_platform_and_build() {
    crate::common::each_backend(|| {
        let (h, a, _) = loaded();
        assert_eq!(h.upload(&a, &fixtures::batch(&a, 0, 30, "100")).0, 200);
        let (s, st) = h.get("/api/stats");
        assert_eq!(s, 200, "{st}");
        assert_eq!(st["records"], 42);
        assert_eq!(st["batches"]["received"], 2);
        assert_eq!(st["batches"]["duplicates"], 1);
        let sum = |k: &str| {
            st[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["count"].as_u64().unwrap())
                .sum::<u64>()
        };
        for k in [
            "by_classification",
            "by_severity",
            "by_platform",
            "by_build",
        ] {
            assert_eq!(sum(k), 42, "{k}: {st}");
        }
        assert_eq!(
            st["by_build"][0],
            serde_json::json!({"key": "100", "count": 30})
        );
        assert_eq!(st["by_platform"][0]["key"], "Example Inc.|Board 9000|1.0");
        assert!(st["bytes"]["compressed"].as_u64().unwrap() > 0);
    });
}

#[test]
fn the_records_view_escapes_payloads_and_pages() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        let p = fixtures::private_id(3);
        let mut b = fixtures::batch(&p, 0, 150, "1");
        b.records[149].payload = b"<script>alert(1)</script>".to_vec();
        assert_eq!(h.upload(&p, &b).0, 200);
        let (s, page) = h.get_text("/ui/records");
        assert_eq!(s, 200);
        assert_eq!(page.matches("<tr class=\"record\">").count(), 100);
        assert!(!page.contains("<script>"), "unescaped payload");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let next = page
            .split("id=\"next\" href=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .replace("&amp;", "&");
        let (s, page2) = h.get_text(&next);
        assert_eq!(s, 200);
        assert_eq!(page2.matches("<tr class=\"record\">").count(), 50);
        assert!(!page2.contains("id=\"next\""));
        let (s, bad) = h.get_text("/ui/records?severity=banana");
        assert_eq!(s, 400);
        assert!(bad.contains("severity must be 1 (low)"), "{bad}");
        let (s, stats) = h.get_text("/ui/stats");
        assert_eq!(s, 200);
        assert!(
            stats.contains("id=\"by_classification\"") && stats.contains("org.example/hello/world")
        );
        let (s, _) = h.get_text("/");
        assert_eq!(s, 200, "/ redirects to the records view");
    });
}

#[test]
fn healthz_metrics_and_unknown_paths() {
    crate::common::each_backend(|| {
        let (h, a, _) = loaded();
        h.upload(&a, &fixtures::batch(&a, 0, 30, "100"));
        assert_eq!(h.get_text("/healthz"), (200, "ok\n".to_owned()));
        let (s, m) = h.get_text("/metrics");
        assert_eq!(s, 200);
        for line in [
            "seglog_collector_uploads_total{outcome=\"stored\"} 2",
            "seglog_collector_uploads_total{outcome=\"duplicate\"} 1",
            "seglog_collector_records_stored_total 42",
            "seglog_collector_records 42",
            "seglog_collector_upload_duration_seconds_count 3",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
        let (s, v) = h.get("/nope");
        assert_eq!((s, v["error"].as_str()), (404, Some("no such endpoint")));
    });
}

#[test]
fn api_tokens_protect_reads_but_not_healthz() {
    crate::common::each_backend(|| {
        let h = Harness::start(|c| c.api_tokens = vec!["reader".into()]);
        for path in [
            "/api/records",
            "/api/stats",
            "/api/gaps",
            "/ui/records",
            "/ui/stats",
            "/metrics",
        ] {
            assert_eq!(h.get_text(path).0, 401, "{path}");
            let r = crate::common::agent()
                .get(format!("{}{path}", h.url))
                .header("Authorization", "Bearer reader")
                .call();
            assert_eq!(crate::common::reply(r).status, 200, "{path}");
        }
        assert_eq!(h.get_text("/healthz").0, 200);
        // Uploads stay open: no upload tokens are configured.
        let p = fixtures::private_id(4);
        assert_eq!(h.upload(&p, &fixtures::batch(&p, 0, 1, "1")).0, 200);
    });
}
