//! The client HTTP API (axum), exactly as `shared/spec/interface.md` describes it.
//!
//! Modules: [`kv`] (`/v1/kv`: keys and values), [`dt`] (`/v1/dt`: data types), [`node`]
//! (`/v1/status`, `/v1/ring`, `/v1/health`, `/v1/hot`, `/metrics`, `/v1/admin/compact`),
//! [`cluster`] (`/v1/cluster/*`: staged membership changes), [`buckets`]
//! (`/v1/buckets/{bucket}`: bucket properties), [`keys`] (`/v1/admin/keys`: API keys), [`backups`]
//! (`/v1/admin/backups`, `/v1/admin/import`: backup checkpoints and restores),
//! [`openapi`] (`/v1/openapi.json`: the OpenAPI description of all of these), [`ui`] (`/ui`:
//! the web console's embedded page), [`cors`] (cross-origin headers, so the console of one node
//! can read the others), [`body`] (reading request bodies within size, time and memory bounds), [`state`] (what
//! handlers share). This module routes and renders errors; every route, the fallback
//! included, passes the API key check first ([`crate::auth::require`]), except a CORS
//! preflight, which [`cors::cors`] (layered outside the check) answers without a key.
//!
//! This module owns request parsing and validation (paths, query, limits, context tokens) and
//! response shapes (`200` raw / `300` siblings / `404`, JSON mode, error bodies). Everything it
//! accepts is checked before the coordinator sees it: a rejected request writes nothing. Keys and
//! buckets are raw path segments percent-decoded to bytes, so any byte string is a valid key.

mod backups;
mod body;
mod buckets;
mod cluster;
mod cors;
mod dt;
mod keys;
mod kv;
mod node;
pub mod openapi;
mod state;
mod ui;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use yeskv_storage::Engine;

use crate::error::Error;
use crate::metrics;

pub use body::BodyLimits;
pub use buckets::{props_json, BUCKET_BODY_BYTES_MAX};
pub use cluster::plan_json;
pub use openapi::ApiDoc;
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
    let origins = member_origins(state.clone());
    Router::new()
        .route("/v1/kv/{*path}", any(kv::kv::<E>))
        .route("/v1/dt/{*path}", any(dt::dt::<E>))
        .route("/v1/buckets/{*path}", any(buckets::bucket::<E>))
        .route("/v1/status", get(node::status::<E>))
        .route("/v1/ring", get(node::ring::<E>))
        .route("/v1/health", get(node::health::<E>))
        .route("/v1/hot", get(node::hot::<E>))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/metrics", get(node::metrics_text::<E>))
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/{asset}", get(ui::asset))
        .route("/v1/admin/compact", axum::routing::post(node::compact::<E>))
        .route(
            "/v1/admin/backups/{id}",
            axum::routing::post(backups::create::<E>).delete(backups::delete::<E>),
        )
        .route("/v1/admin/backups/{id}/{file}", get(backups::file::<E>))
        .route(
            "/v1/admin/import",
            axum::routing::post(backups::import::<E>),
        )
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
        // Outside the key check: a browser's preflight carries no key (see `cors`).
        .layer(axum::middleware::from_fn_with_state(origins, cors::cors))
        .layer(axum::middleware::from_fn(track))
}

/// The origins whose pages may read answers (`cors`): the HTTP addresses of the layout's
/// members and of this node.
fn member_origins<E: Engine>(state: Arc<AppState<E>>) -> cors::Origins {
    Arc::new(move |addr: &str| {
        addr == state.http
            || state
                .layout
                .current()
                .is_some_and(|l| l.members.values().any(|m| m.http == addr))
    })
}

/// The JSON body of every error answer: `{"error": REASON}`, with the nodes or partitions it
/// is about when a refusal names them.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
    /// `409` of `PUT /v1/buckets/{bucket}`: the members that store keys of the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holding: Option<Vec<String>>,
    /// `503` of `PUT /v1/buckets/{bucket}`: the members that could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unasked: Option<Vec<String>>,
    /// `409` of a cluster change: partitions that would be left without a live holder of
    /// their data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsafe_partitions: Option<Vec<u16>>,
    /// `409` of a cluster change: the (down) nodes that hold those partitions' data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<String>>,
}

impl ErrorBody {
    /// A body with just the reason.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorBody {
            error: message.into(),
            ..ErrorBody::default()
        }
    }

    /// The answer: `status` with this body.
    pub fn into_response(self, status: StatusCode) -> Response {
        (status, axum::Json(self)).into_response()
    }
}

pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    ErrorBody::new(message).into_response(status)
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
