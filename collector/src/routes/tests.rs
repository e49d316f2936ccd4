use super::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::store::Store;

const UPLOAD_TOKEN: &str = "upload-secret";
const API_TOKEN: &str = "api-secret";

fn state(dir: &std::path::Path) -> Arc<AppState> {
    let mut cfg = ServerConfig::new(dir.to_path_buf());
    cfg.tokens = vec![UPLOAD_TOKEN.to_owned()];
    cfg.api_tokens = vec![API_TOKEN.to_owned()];
    let store = Arc::new(Store::open(dir).unwrap());
    Arc::new(AppState::new(cfg, store, 0))
}

/// A concrete request path for a route pattern.
fn concrete(pattern: &str) -> String {
    let path = pattern
        .replace("{id}", &"ab".repeat(32))
        .replace("{log_id}", &"cd".repeat(32));
    assert!(
        !path.contains('{'),
        "{pattern}: teach this test a value for the new path parameter"
    );
    path
}

async fn status(app: &Router, method: &Method, path: &str, token: Option<&str>) -> StatusCode {
    let mut req = Request::builder().method(method.clone()).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

/// Enumerates the route table: with tokens configured, every route that is not explicitly
/// open refuses a request without a token, or with the other class's token, and admits one
/// with its own token.
#[tokio::test]
async fn every_route_refuses_a_request_without_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let app = router(st.clone());
    let table = routes();
    assert!(table.len() >= 9, "the table lost routes");
    for r in &table {
        let path = concrete(r.path);
        let none = status(&app, &r.method, &path, None).await;
        let upload = status(&app, &r.method, &path, Some(UPLOAD_TOKEN)).await;
        let api = status(&app, &r.method, &path, Some(API_TOKEN)).await;
        let what = format!("{} {} ({:?})", r.method, r.path, r.access);
        match r.access {
            Access::Open => {
                for s in [none, upload, api] {
                    assert!(
                        s != StatusCode::UNAUTHORIZED && s.as_u16() < 405,
                        "{what}: {s}"
                    );
                }
            }
            Access::Upload => {
                assert_eq!(none, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(api, StatusCode::UNAUTHORIZED, "{what}: an API token");
                // Past the gate, the empty body is refused for its media type.
                assert_eq!(upload, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{what}");
            }
            Access::Read => {
                assert_eq!(none, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(upload, StatusCode::UNAUTHORIZED, "{what}: an upload token");
                // Past the gate: a device page of a device that never uploaded is a 404.
                let past = if r.path.contains("{log_id}") {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::OK
                };
                assert_eq!(api, past, "{what}");
            }
        }
    }
    // Opening a route to everyone is a decision this list records.
    let open: Vec<&str> = table
        .iter()
        .filter(|r| r.access == Access::Open)
        .map(|r| r.path)
        .collect();
    assert_eq!(open, ["/", "/healthz"]);
    // Refusals are counted: one unauthorized upload per refused upload request.
    assert_eq!(
        st.metrics
            .render()
            .matches("reason=\"unauthorized\"} 2")
            .count(),
        1
    );
}

#[tokio::test]
async fn without_tokens_every_route_is_open_and_unknown_paths_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::new(dir.path().to_path_buf());
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let app = router(Arc::new(AppState::new(cfg, store, 0)));
    for r in routes() {
        let s = status(&app, &r.method, &concrete(r.path), None).await;
        assert_ne!(s, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
    }
    let s = status(&app, &Method::GET, "/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A full writer queue answers 429 with `Retry-After` at once (never a client timeout), counts
/// the refusal and shows the queue on `/metrics`; once the writer catches up, the same
/// upload is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_sheds_with_429_and_retry_after() {
    use crate::fixtures;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new(dir.path().to_path_buf());
    cfg.limits.ingest_queue_bytes = 1;
    let store = Arc::new(
        Store::open_with(dir.path(), crate::store::WriterLimits { queue_bytes: 1 }).unwrap(),
    );
    let st = Arc::new(AppState::new(cfg, store.clone(), 0));
    let app = router(st.clone());
    let upload = |n: u8| {
        let p = fixtures::private_id(n);
        let b = fixtures::batch(&p, 0, 10, "1");
        Request::builder()
            .method(Method::POST)
            .uri(fixtures::path(&p))
            .header(header::CONTENT_TYPE, protocol::CONTENT_TYPE)
            .header(header::CONTENT_ENCODING, "zstd")
            .body(Body::from(fixtures::body(&b)))
            .unwrap()
    };
    let hold = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.hold_writer().unwrap())
            .await
            .unwrap()
    };
    // The first upload takes the (empty) queue and waits for the writer.
    let first = tokio::spawn(app.clone().oneshot(upload(1)));
    while store
        .writer_stats()
        .queued_batches
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let shed = app.clone().oneshot(upload(2)).await.unwrap();
    assert_eq!(shed.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let secs: u64 = shed.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let metrics = st.metrics.render() + &crate::metrics::render_writer(store.writer_stats());
    assert!(
        metrics.contains("seglog_collector_ingest_queue_batches 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("seglog_collector_ingest_shed_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"overloaded\"} 1"), "{metrics}");
    drop(hold);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    let again = app.clone().oneshot(upload(2)).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(store.stats().unwrap().records, 20);
}
