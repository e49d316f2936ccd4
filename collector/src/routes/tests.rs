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
