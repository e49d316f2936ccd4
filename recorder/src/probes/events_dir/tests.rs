use serde_json::json;

use super::*;
use crate::writer::tests::{read_all, test_config, FakeClock};

fn event(msg: &str) -> Value {
    json!({
        "Version": "1.0.0.23",
        "Timestamp": "2018-01-02T22:08:12.510696Z",
        "TaskName": "TestRun",
        "EventLevel": "Warning",
        "Message": msg,
        "EventPid": 1,
        "EventTid": "2",
        "OperationId": "60c014cd-4693-40f1-b334-548cd932949b",
    })
}

fn args(dir: &Path) -> EventsDirArgs {
    EventsDirArgs {
        dir: dir.to_path_buf(),
        once: true,
        watch: false,
        scan_interval: Duration::from_millis(10),
        duration: None,
        max_events: 360,
        period: Duration::from_secs(300),
        retry_delay: Duration::from_millis(10),
        class_prefix: "org.seglog/events".into(),
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, Recorder) {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("ext");
    std::fs::create_dir(&events).unwrap();
    let rec =
        Recorder::open_with(&test_config(&d.path().join("log")), FakeClock::new(), false).unwrap();
    (d, events, rec)
}

#[test]
fn valid_events_are_normalised_and_case_insensitive() {
    let mut v = event("  hello  ");
    let obj = v.as_object_mut().unwrap();
    let m = obj.remove("Message").unwrap();
    obj.insert("message".into(), m);
    let e = validate(&v).unwrap();
    assert_eq!(e.fields["Message"], "hello");
    assert_eq!(e.fields["EventPid"], "1");
    assert_eq!(e.severity(), Severity::MEDIUM);
    assert_eq!(
        e.event_id().unwrap().to_string(),
        "60c014cd469340f1b334548cd932949b"
    );
}

#[test]
fn schema_violations_give_their_reason() {
    let mut missing = event("x");
    missing.as_object_mut().unwrap().remove("TaskName");
    assert_eq!(validate(&missing), Err("missing_field"));
    assert_eq!(validate(&event("")), Err("empty_message"));
    assert_eq!(validate(&json!(3)), Err("not_an_object"));
    let mut bad = event("x");
    bad["Version"] = json!(true);
    assert_eq!(validate(&bad), Err("invalid_field"));
    let mut big = event("x");
    big["TaskName"] = json!("t".repeat(MAX_EVENT_CHARS));
    assert_eq!(validate(&big), Err("event_too_large"));
    let long = validate(&event(&"m".repeat(10_000))).unwrap();
    assert_eq!(
        long.fields["Message"].len(),
        MAX_MESSAGE_CHARS,
        "message trimmed, not dropped"
    );
}

#[test]
fn files_are_recorded_then_deleted_and_bad_ones_counted_by_reason() {
    let (d, dir, rec) = setup();
    std::fs::write(
        dir.join("2.json"),
        serde_json::to_vec(&json!([event("a"), event("b"), event("")])).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("1.json"),
        serde_json::to_vec(&event("first")).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("3.json"), b"{ not json").unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    let sub = dir.join("Microsoft.Test.Ext").join("events");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(
        sub.join("10.json"),
        serde_json::to_vec(&event("nested")).unwrap(),
    )
    .unwrap();
    let mut c = EventsDir::new(args(&dir)).unwrap();
    let r = c.pass(&rec).unwrap();
    assert_eq!(r.recorded, 4);
    assert_eq!(r.files, 4);
    assert_eq!(r.dropped.get("empty_message"), Some(&1));
    assert_eq!(r.dropped.get("invalid_json"), Some(&1));
    assert!(
        !dir.join("1.json").exists()
            && !dir.join("3.json").exists()
            && !sub.join("10.json").exists()
    );
    assert!(dir.join("notes.txt").exists());
    let all = read_all(&d.path().join("log"));
    let msgs: Vec<String> = all
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.3).unwrap()["Message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(msgs, ["first", "a", "b", "nested"], "oldest file first");
    assert_eq!(all[0].1.classification.as_str(), "org.seglog/events/ext");
    assert_eq!(
        all[3].1.classification.as_str(),
        "org.seglog/events/Microsoft.Test.Ext"
    );
    assert!(all.iter().all(|r| r.1.event_id.is_some()));
    assert!(
        all.iter().all(|r| r.1.wall_ms == 1_514_930_892_510),
        "each record keeps its event's own Timestamp: {:?}",
        all.iter().map(|r| r.1.wall_ms).collect::<Vec<_>>()
    );
    let kept = dir
        .join(QUARANTINE_DIR)
        .join("invalid_json")
        .join("ext_3.json");
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        b"{ not json",
        "a file that does not parse is kept for a person, not deleted"
    );
    assert_eq!(r.quarantined, 1);
    assert!(r.to_string().contains("moved to .quarantine/"), "{r}");
    // The quarantine folder is never scanned as a source: a second pass records nothing.
    let again = c.pass(&rec).unwrap();
    assert_eq!((again.recorded, again.files), (0, 0), "{again}");
    assert!(kept.exists());
    drop(rec);
    let counters = crate::counters::read(&d.path().join("log")).unwrap();
    assert_eq!(counters.dropped.get("events_dir.invalid_json"), Some(&1));
}

#[test]
fn the_per_period_cap_defers_files_and_cuts_oversized_ones() {
    let (_d, dir, rec) = setup();
    let mut a = args(&dir);
    a.max_events = 3;
    std::fs::write(
        dir.join("1.json"),
        serde_json::to_vec(&json!([event("a"), event("b")])).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("2.json"),
        serde_json::to_vec(&json!([event("c"), event("d")])).unwrap(),
    )
    .unwrap();
    let mut c = EventsDir::new(a.clone()).unwrap();
    let r = c.pass(&rec).unwrap();
    assert_eq!((r.recorded, r.files, r.deferred), (2, 1, 1));
    assert!(
        dir.join("2.json").exists(),
        "a file that does not fit waits for the next period"
    );
    let r = c.pass(&rec).unwrap();
    assert_eq!(r.recorded, 0, "the period is not over");
    // A new period.
    a.period = Duration::ZERO;
    let mut c = EventsDir::new(a).unwrap();
    let many: Vec<Value> = (0..5).map(|i| event(&format!("m{i}"))).collect();
    std::fs::write(dir.join("3.json"), serde_json::to_vec(&many).unwrap()).unwrap();
    let r = c.pass(&rec).unwrap();
    assert_eq!(r.recorded, 2 + 3);
    assert_eq!(r.dropped.get("over_cap"), Some(&2));
    assert!(!dir.join("3.json").exists());
}

#[test]
fn oversized_files_are_dropped_whole() {
    let (_d, dir, rec) = setup();
    let f = std::fs::File::create(dir.join("7.json")).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    let r = EventsDir::new(args(&dir)).unwrap().pass(&rec).unwrap();
    assert_eq!(r.dropped.get("file_too_large"), Some(&1));
    assert!(!dir.join("7.json").exists());
    assert!(dir
        .join(QUARANTINE_DIR)
        .join("file_too_large")
        .join("ext_7.json")
        .exists());
}

#[test]
fn a_file_still_being_written_is_retried_until_it_parses() {
    let (_d, dir, rec) = setup();
    let path = dir.join("5.json");
    let full = serde_json::to_vec(&event("late")).unwrap();
    std::fs::write(&path, &full[..10]).unwrap();
    let mut a = args(&dir);
    a.retry_delay = Duration::from_millis(200);
    let writer = std::thread::spawn({
        let path = path.clone();
        move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::write(&path, &full).unwrap();
        }
    });
    let r = EventsDir::new(a).unwrap().pass(&rec).unwrap();
    writer.join().unwrap();
    assert_eq!(r.recorded, 1, "{r}");
    assert!(r.dropped.is_empty());
}

#[test]
fn event_timestamps_parse_with_any_fraction_and_fall_back_when_unreadable() {
    let with = |t: &str| {
        let mut v = event("x");
        v["Timestamp"] = json!(t);
        validate(&v).unwrap().wall_ms()
    };
    assert_eq!(with("2018-01-02T22:08:12.510696Z"), Some(1_514_930_892_510));
    assert_eq!(with("2018-01-02T22:08:12Z"), Some(1_514_930_892_000));
    assert_eq!(with("2018-01-02 22:08:12.5"), Some(1_514_930_892_500));
    assert_eq!(with("yesterday"), None);
}

#[test]
fn a_bad_class_prefix_is_refused() {
    let mut a = args(Path::new("/tmp"));
    a.class_prefix = "only-one-part".into();
    assert!(EventsDir::new(a).is_err());
}
