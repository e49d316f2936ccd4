//! Bearer-token authentication, as a router layer.
//!
//! Every route declares its [`Access`] in the route table (`routes::routes`), and [`guard`]
//! wraps the route's handler in the matching check, so a handler never checks a token itself
//! and a new route cannot be added without saying who may call it. Upload tokens and API
//! tokens are separate sets: an upload token does not open the API, nor the reverse. An empty
//! set means that class of routes is open.
//!
//! This module knows nothing of the server's state: the state implements [`Gate`] (which
//! tokens apply, and what to count when a request is refused).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Json;
use sha2::{Digest, Sha256};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone (`/healthz`, the redirect to the UI).
    Open,
    /// A request carrying an upload token, when upload tokens are configured.
    Upload,
    /// A request carrying an API token, when API tokens are configured (`/api/*`, `/ui/*`,
    /// `/metrics`).
    Read,
}

/// Accepted bearer tokens, kept as sha256 digests and compared in constant time.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSet(Vec<[u8; 32]>);

impl TokenSet {
    /// The set of `tokens` (empty: anyone is admitted).
    pub(crate) fn new(tokens: &[String]) -> TokenSet {
        TokenSet(tokens.iter().map(|t| digest(t.as_bytes())).collect())
    }

    /// Whether `headers` carry an accepted token (always true when the set is empty).
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        let d = digest(presented.trim().as_bytes());
        self.0.iter().fold(false, |ok, t| ok | ct_eq(t, &d))
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Compares digests without an early exit, so timing does not reveal a matching prefix.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the authentication layer needs from the server's state.
pub(crate) trait Gate: Send + Sync + 'static {
    /// The tokens that admit a request to a route of class `access` (never asked for
    /// [`Access::Open`]).
    fn tokens(&self, access: Access) -> &TokenSet;
    /// Counts a request refused for want of a token.
    fn refused(&self, access: Access);
}

/// `handler` behind the check `access` asks for. Applied as a route layer: it runs only for
/// requests that matched the route and one of its methods (a wrong method still gets 405).
pub(crate) fn guard<G: Gate>(
    access: Access,
    gate: &Arc<G>,
    handler: MethodRouter<Arc<G>>,
) -> MethodRouter<Arc<G>> {
    match access {
        Access::Open => handler,
        Access::Upload | Access::Read => handler.route_layer(middleware::from_fn_with_state(
            (gate.clone(), access),
            check,
        )),
    }
}

async fn check<G: Gate>(
    State((gate, access)): State<(Arc<G>, Access)>,
    request: Request,
    next: Next,
) -> Response {
    if gate.tokens(access).admits(request.headers()) {
        next.run(request).await
    } else {
        gate.refused(access);
        unauthorized()
    }
}

/// A 401 with the challenge header.
pub(crate) fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": "missing or invalid bearer token" })),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn an_empty_set_admits_everyone_and_a_set_only_its_tokens() {
        assert!(TokenSet::default().admits(&HeaderMap::new()));
        let s = TokenSet::new(&["abc".to_owned(), "def".to_owned()]);
        assert!(!s.admits(&HeaderMap::new()));
        assert!(s.admits(&bearer("Bearer abc")));
        assert!(s.admits(&bearer("bearer def")));
        assert!(s.admits(&bearer("Bearer  def ")));
        assert!(!s.admits(&bearer("Bearer ab")));
        assert!(!s.admits(&bearer("Basic abc")));
        assert!(!s.admits(&bearer("abc")));
    }
}
