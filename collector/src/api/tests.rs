use super::*;

const NOW: i64 = 1_700_000_000_000;

fn parse(q: &str) -> Result<RecordQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap();
    parse_records_query(&pairs, MAX_QUERY_LIMIT, NOW)
}

fn bad(q: &str) -> ApiError {
    match parse(q) {
        Ok(v) => panic!("{q} was accepted: {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn defaults_are_all_records_newest_first_with_payloads() {
    let q = parse("").unwrap();
    assert_eq!(q.limit, 10_000);
    assert!(q.include_payload);
    assert_eq!(q, RecordQuery::default());
}

#[test]
fn the_telemetrics_example_query_parses() {
    let q = parse("classification=org.clearlinux%2Fkernel%2Fwarning&severity=2&build=2980&created_in_sec=5&limit=100")
        .unwrap();
    assert_eq!(
        q.classification.as_deref(),
        Some("org.clearlinux/kernel/warning")
    );
    assert_eq!(q.severity, Some(2));
    assert_eq!(q.build.as_deref(), Some("2980"));
    assert_eq!(q.since, Some(TimeBound(NOW - 5000)));
    assert_eq!(q.limit, 100);
}

#[test]
fn every_parameter_is_read() {
    let q = parse(&format!(
        "machine_id={m}&platform=a%7Cb%7Cc&created_in_days=2&since=1699000000&until=2023-11-14T22:13:20Z\
         &log_id={l}&event_id={e}&record_id={r}&include_payload=false&cursor=77",
        m = "0123456789abcdef0123456789abcdef",
        l = "ab".repeat(32),
        e = "cd".repeat(16),
        r = "ef".repeat(16),
    ))
    .unwrap();
    assert_eq!(
        q.machine_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(q.platform.as_deref(), Some("a|b|c"));
    // created_in_days (2 days back from NOW) is later than since, so it wins.
    assert_eq!(q.since, Some(TimeBound(NOW - 2 * 86_400_000)));
    assert_eq!(q.until, Some(TimeBound(1_700_000_000_000)));
    assert_eq!(q.log_id, Some([0xab; 32]));
    assert_eq!(q.event_id, Some([0xcd; 16]));
    assert_eq!(q.record_id, Some([0xef; 16]));
    assert!(!q.include_payload);
    assert_eq!(q.cursor, Some(Cursor(77)));
}

#[test]
fn created_in_days_wins_over_created_in_sec() {
    let q = parse("created_in_sec=10&created_in_days=1").unwrap();
    assert_eq!(q.since, Some(TimeBound(NOW - 86_400_000)));
}

#[test]
fn empty_values_count_as_absent() {
    assert_eq!(
        parse("classification=&severity=&limit=").unwrap(),
        RecordQuery::default()
    );
}

#[test]
fn each_bad_parameter_is_a_400_naming_it() {
    let long_class = "c".repeat(141);
    let long_build = "b".repeat(257);
    let cases: Vec<(String, &str)> = vec![
        (format!("classification={long_class}"), "classification"),
        ("severity=huge".into(), "severity"),
        ("severity=1.5".into(), "severity"),
        ("severity=5".into(), "severity"),
        ("severity=0".into(), "severity"),
        ("priority=urgent".into(), "priority"),
        ("priority=4..1".into(), "priority"),
        ("priority=0..".into(), "priority"),
        ("boot_id=1234".into(), "boot_id"),
        (format!("boot_id={}", "g".repeat(32)), "boot_id"),
        ("machine_id=short".into(), "machine_id"),
        (format!("machine_id={}", "a".repeat(33)), "machine_id"),
        (format!("build={long_build}"), "build"),
        (format!("platform={long_build}"), "platform"),
        ("created_in_days=-1".into(), "created_in_days"),
        ("created_in_days=two".into(), "created_in_days"),
        ("created_in_days=99999999".into(), "created_in_days"),
        ("created_in_sec=1e3".into(), "created_in_sec"),
        ("limit=0".into(), "limit"),
        ("limit=10001".into(), "limit"),
        ("limit=-5".into(), "limit"),
        ("limit=ten".into(), "limit"),
        ("since=yesterday".into(), "since"),
        ("until=2023-13-01T00:00:00Z".into(), "until"),
        ("since=2000&until=1000".into(), "until"),
        ("log_id=xyz".into(), "log_id"),
        (format!("log_id={}", "AG".repeat(32)), "log_id"),
        ("classification=org.*/x".into(), "classification"),
        (format!("event_id={}", "a".repeat(31)), "event_id"),
        ("record_id=00".into(), "record_id"),
        ("include_payload=maybe".into(), "include_payload"),
        ("cursor=0".into(), "cursor"),
        ("cursor=abc".into(), "cursor"),
        ("severity=1&severity=2".into(), "severity"),
        ("colour=blue".into(), "colour"),
    ];
    for (q, param) in cases {
        let e = bad(&q);
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(e.parameter.as_deref(), Some(param), "{q}: {e:?}");
        assert!(
            e.message.contains(param),
            "{q}: message {:?} does not name {param}",
            e.message
        );
    }
}

#[test]
fn limits_at_the_edges_are_accepted() {
    assert_eq!(
        parse(&format!("classification={}", "c".repeat(140)))
            .unwrap()
            .classification
            .unwrap()
            .len(),
        140
    );
    assert_eq!(
        parse(&format!("build={}", "b".repeat(256)))
            .unwrap()
            .build
            .unwrap()
            .len(),
        256
    );
    assert_eq!(parse("limit=1").unwrap().limit, 1);
    assert_eq!(parse("limit=10000").unwrap().limit, 10_000);
    assert_eq!(parse("severity=4").unwrap().severity, Some(4));
    // Names as in `record -s` and `journal -s`, ids in either case as on the command line.
    assert_eq!(parse("severity=High").unwrap().severity, Some(3));
    assert_eq!(
        parse(&format!("log_id={}", "AB".repeat(32)))
            .unwrap()
            .log_id,
        Some([0xab; 32])
    );
    assert_eq!(
        parse("classification=org.example%2F*")
            .unwrap()
            .classification
            .as_deref(),
        Some("org.example/*")
    );
    // 140 characters, more than 140 bytes: the limit counts characters, as telemetrics does.
    assert!(parse(&format!("classification={}", "é".repeat(140))).is_ok());
}

#[test]
fn payloads_are_text_when_utf8_and_hex_otherwise() {
    assert_eq!(payload_value(b"hi"), (Value::String("hi".into()), "utf-8"));
    assert_eq!(
        payload_value(&[0xff, 0x00]),
        (Value::String("ff00".into()), "hex")
    );
}

#[test]
fn times_print_as_rfc3339_with_milliseconds() {
    assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(rfc3339(-5), "-5");
    assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
}

#[test]
fn record_json_has_the_telemetrics_fields() {
    let r = crate::store::RecordRow {
        seq: 1,
        record_id: [1; 16],
        log_id: [2; 32],
        batch_id: [3; 32],
        segment: 4,
        offset: 64,
        classification: "a/b/c".into(),
        severity: 2,
        created_ms: 1_700_000_000_000,
        boot_ms: 9,
        event_id: None,
        received_ms: 1_700_000_001_000,
        payload_len: 5,
        payload: Some(b"hello".to_vec()),
        machine_id: "m".into(),
        boot_id: "b".into(),
        arch: "x86_64".into(),
        platform: "v|p|1".into(),
        build: "42".into(),
        system_name: "os".into(),
        kernel_version: "6.1".into(),
        record_format_version: "2".into(),
        context: vec![("k".into(), "v".into())].into(),
    };
    let j = record_json(&r);
    for k in [
        "arch",
        "build",
        "classification",
        "kernel_version",
        "machine_id",
        "machine_type",
        "payload",
        "record_format_version",
        "severity",
        "ts_capture",
        "ts_reception",
    ] {
        assert!(j.get(k).is_some(), "missing {k}: {j}");
    }
    assert_eq!(j["ts_capture"], "2023-11-14T22:13:20.000Z");
    assert_eq!(j["payload"], "hello");
    assert_eq!(j["machine_type"], "v|p|1");
    assert_eq!(j["record_id"], "01".repeat(16));
    assert_eq!(j["context"]["k"], "v");
}

#[test]
fn gaps_query_validates_its_parameters() {
    let p = |q: &str| {
        parse_gaps_query(&serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap())
    };
    assert_eq!(p("").unwrap(), (None, 1000));
    assert_eq!(
        p(&format!("log_id={}&limit=5", "00".repeat(32))).unwrap(),
        (Some([0; 32]), 5)
    );
    assert_eq!(
        p("limit=0").unwrap_err().parameter.as_deref(),
        Some("limit")
    );
    assert_eq!(
        p("log_id=1").unwrap_err().parameter.as_deref(),
        Some("log_id")
    );
    assert_eq!(p("x=1").unwrap_err().parameter.as_deref(), Some("x"));
}
