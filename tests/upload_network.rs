//! The uploader against a network that fails in the middle of a request, with the real
//! binary and the real collector on 127.0.0.1 (issue 11, item 1): a body cut mid-way is a
//! transport failure, never a reason to dead-letter a batch.

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/upload_env.rs"]
mod upload_env;

use proxy::{Fault, Proxy};
use upload_env::{code, collector, stored_records, text, Env};

#[test]
fn a_body_cut_mid_way_is_resent_never_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let proxy = Proxy::start(server.local_addr());
    let e = Env::new(&proxy.url(), "dead_letter_after = 2");
    e.write(0, 500);
    // Content-Length N, a part of the body, then a half-close: on every connection.
    proxy.set(Fault::CutBody(100));
    let o = e.run(&["upload", "flush", "--timeout", "3s"]);
    assert_ne!(code(&o), 0, "flush claimed success: {}", text(&o));
    let st = e.status();
    assert_eq!(st["dead_lettered"]["batches"], 0, "{st}");
    assert_eq!(st["delivered"]["records"], 0, "{st}");
    // The cursor did not pass a single record: all 500 are still the backlog.
    assert_eq!(st["backlog"]["records"], 500, "the cursor moved: {st}");
    let last = st["last_error"]["message"].as_str().unwrap_or("");
    assert!(last.contains("HTTP 408"), "{st}");
    let dl = e.dir.join("upload").join("dead-letter");
    let entries = std::fs::read_dir(&dl).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 0, "dead-letter folder {}", dl.display());
    assert!(
        proxy
            .stats
            .faults
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3,
        "the cut was not exercised"
    );
    assert_eq!(stored_records(&server.url()), 0);
    // The cut stops: the same batches go through.
    proxy.set(Fault::Pass);
    let o = e.run(&["upload", "flush", "--timeout", "20s"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(stored_records(&server.url()), 500);
    let st = e.status();
    assert_eq!(st["dead_lettered"]["batches"], 0, "{st}");
    assert_eq!(st["delivered"]["records"], 500, "{st}");
}
