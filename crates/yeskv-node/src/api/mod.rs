//! The client HTTP API (axum), exactly as `shared/spec/interface.md` describes it.
//!
//! Modules: [`kv`] (`/v1/kv`: keys and values), [`dt`] (`/v1/dt`: data types), [`node`]
//! (`/v1/status`, `/v1/ring`, `/v1/health`, `/v1/hot`, `/metrics`, `/v1/admin/compact`),
//! [`cluster`] (`/v1/cluster/*`: staged membership changes), [`buckets`]
//! (`/v1/buckets/{bucket}`: bucket properties), [`keys`] (`/v1/admin/keys`: API keys),
//! [`body`] (reading request bodies within size, time and memory bounds), [`state`] (what
//! handlers share). This module routes and renders errors; every route, the fallback
//! included, passes the API key check first ([`crate::auth::require`]).
//!
//! This module owns request parsing and validation (paths, query, limits, context tokens) and
//! response shapes (`200` raw / `300` siblings / `404`, JSON mode, error bodies). Everything it
//! accepts is checked before the coordinator sees it: a rejected request writes nothing. Keys and
//! buckets are raw path segments percent-decoded to bytes, so any byte string is a valid key.

mod body;
mod buckets;
mod cluster;
mod dt;
mod keys;
mod kv;
mod node;
mod state;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use yeskv_storage::Engine;

use crate::error::Error;
use crate::metrics;

pub use body::BodyLimits;
pub use buckets::{props_json, BUCKET_BODY_BYTES_MAX};
pub use cluster::plan_json;
pub use state::{AppState, Directory, Serving};

/// The header carrying causal context tokens.
pub const CONTEXT_HEADER: &str = "x-causal-context";
/// The header carrying the layout version the answering node routes by.
pub const LAYOUT_VERSION_HEADER: &str = "x-yeskv-layout-version";

/// The router of the client API.
pub fn router<E: Engine>(state: Arc<AppState<E>>) -> Router {
    router_with(state, Router::new())
}

/// The router of the client API with `extra` routes (the chaos layer's), all behind the API
/// key check.
pub fn router_with<E: Engine>(state: Arc<AppState<E>>, extra: Router) -> Router {
    let guard = state.guard.clone();
    Router::new()
        .route("/v1/kv/{*path}", any(kv::kv::<E>))
        .route("/v1/dt/{*path}", any(dt::dt::<E>))
        .route("/v1/buckets/{*path}", any(buckets::bucket::<E>))
        .route("/v1/status", get(node::status::<E>))
        .route("/v1/ring", get(node::ring::<E>))
        .route("/v1/health", get(node::health::<E>))
        .route("/v1/hot", get(node::hot::<E>))
        .route("/metrics", get(node::metrics_text::<E>))
        .route("/v1/admin/compact", axum::routing::post(node::compact::<E>))
        .route(
            "/v1/admin/keys",
            get(keys::list::<E>).post(keys::create::<E>),
        )
        .route(
            "/v1/admin/keys/{name}",
            axum::routing::delete(keys::revoke::<E>),
        )
        .route("/v1/cluster/join", axum::routing::post(cluster::join::<E>))
        .route(
            "/v1/cluster/leave",
            axum::routing::post(cluster::leave::<E>),
        )
        .route(
            "/v1/cluster/replication",
            axum::routing::post(cluster::replication::<E>),
        )
        .route("/v1/cluster/plan", get(cluster::plan::<E>))
        .route(
            "/v1/cluster/commit",
            axum::routing::post(cluster::commit::<E>),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::auth::require,
        ))
        .layer(axum::middleware::from_fn(track))
}

pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::ObjectTooLarge { .. } = self {
            ::metrics::counter!(metrics::OBJECT_LIMIT_REFUSED).increment(1)
        }
        json_error(self.status(), &self.to_string())
    }
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Counts requests and times them, labelled by route (the matched pattern, not the raw path).
async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (requests, duration) = metrics::http_series(route, &method, resp.status().as_u16());
    requests.increment(1);
    duration.record(start.elapsed().as_secs_f64());
    resp
}
