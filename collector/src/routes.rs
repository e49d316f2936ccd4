//! The route table and the read handlers (`/api/*`, `/healthz`, `/metrics`).
//!
//! Every route is a row of [`routes`] with the [`Access`] it requires; [`router`] builds the
//! router from that table only and puts each handler behind its authentication layer
//! ([`auth::guard`]). Handlers never check tokens themselves.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};

use crate::api::{self, query_pairs, ApiError};
use crate::auth::{self, Access};
use crate::state::AppState;
use crate::{ingest, ui};

/// One route: method, path (axum syntax), who may call it, and its handler.
pub(crate) struct Route {
    /// The one method the handler serves (others get 405). Read by the route-table test.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) access: Access,
    handler: MethodRouter<Arc<AppState>>,
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<Arc<AppState>>,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every route the collector serves. README.md (`api_tokens`, `tokens`) documents the
/// access column.
pub(crate) fn routes() -> Vec<Route> {
    use Access::{Open, Read, Upload};
    vec![
        route(
            Method::POST,
            "/v1/logs/{id}/batches",
            Upload,
            post(ingest::upload),
        ),
        route(Method::GET, "/api/records", Read, get(api_records)),
        route(Method::GET, "/api/gaps", Read, get(api_gaps)),
        route(Method::GET, "/api/stats", Read, get(api_stats)),
        route(Method::GET, "/ui/records", Read, get(ui::records_page)),
        route(Method::GET, "/ui/stats", Read, get(ui::stats_page)),
        route(Method::GET, "/ui/gaps", Read, get(ui::gaps_page)),
        route(Method::GET, "/ui/devices", Read, get(ui::devices_page)),
        route(
            Method::GET,
            "/ui/devices/{log_id}",
            Read,
            get(ui::device_page),
        ),
        route(Method::GET, "/metrics", Read, get(metrics)),
        route(
            Method::GET,
            "/",
            Open,
            get(|| async { Redirect::to("/ui/records") }),
        ),
        route(Method::GET, "/healthz", Open, get(healthz)),
    ]
}

/// The router: every row of [`routes`] behind its authentication layer, and a JSON 404 for
/// anything else.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new();
    for row in routes() {
        r = r.route(row.path, auth::guard(row.access, &state, row.handler));
    }
    r.fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no such endpoint" })),
        )
    })
    .with_state(state)
}

fn finish<T: IntoResponse>(state: &AppState, r: Result<T, ApiError>) -> Response {
    state.metrics.api_request(r.is_err());
    match r {
        Ok(v) => v.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn api_records(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let r = async {
        let mut query = api::parse_records_query(
            &query_pairs(q.as_deref())?,
            crate::config::MAX_QUERY_LIMIT,
            api::now_ms(),
        )?;
        query.max_payload_bytes = st.cfg.limits.max_response_bytes;
        let page = st.blocking(move |s| s.store.query_records(&query)).await?;
        Ok(Json(api::page_json(&page)))
    }
    .await;
    finish(&st, r)
}

async fn api_gaps(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let r = async {
        let (log, limit) = api::parse_gaps_query(&query_pairs(q.as_deref())?)?;
        let gaps = st.blocking(move |s| s.store.query_gaps(log, limit)).await?;
        Ok(Json(
            serde_json::json!({ "gaps": gaps.iter().map(api::gap_json).collect::<Vec<_>>() }),
        ))
    }
    .await;
    finish(&st, r)
}

async fn api_stats(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let r = async {
        if let Some((k, _)) = query_pairs(q.as_deref())?.first() {
            let k: String = k.chars().take(64).collect();
            return Err(ApiError::bad(
                &k,
                format!("unknown parameter {k:?}; /api/stats takes none"),
            ));
        }
        Ok(Json(api::stats_json(&st.current_stats().await?)))
    }
    .await;
    finish(&st, r)
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.blocking(|s| s.store.ping()).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render()
            + &crate::metrics::render_writer(st.store.writer_stats())
            + &st
                .store
                .background_checkpoints()
                .map(crate::metrics::render_checkpoints)
                .unwrap_or_default()
            + &st
                .forward
                .as_ref()
                .map(|f| crate::metrics::render_forward(&f.stats))
                .unwrap_or_default(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
