//! The client HTTP API (axum), exactly as `shared/spec/interface.md` describes it.
//!
//! This module owns request parsing and validation (paths, query, limits, context tokens) and
//! response shapes (`200` raw / `300` siblings / `404`, JSON mode, error bodies). Everything it
//! accepts is checked before the coordinator sees it: a rejected request writes nothing. Keys and
//! buckets are raw path segments percent-decoded to bytes, so any byte string is a valid key.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use metrics_exporter_prometheus::PrometheusHandle;
use percent_encoding::percent_decode_str;
use serde_json::json;
use yeskv_core::codec::{decode_token, encode_token};
use yeskv_core::keyspace::{key_tag, HASH_NAME};
use yeskv_core::{CausalContext, NodeId, Object, Quorum};
use yeskv_storage::Engine;

use crate::config::{Limits, TTL_SECS_MAX};
use crate::coordinator::Coordinator;
use crate::error::Error;
use crate::metrics;

/// The header carrying causal context tokens.
pub const CONTEXT_HEADER: &str = "x-causal-context";
/// The header carrying the layout version the answering node routes by.
pub const LAYOUT_VERSION_HEADER: &str = "x-yeskv-layout-version";

/// Serving state, for `/v1/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Serving {
    /// Opening storage, not yet taking requests.
    Starting = 0,
    /// Taking requests.
    Serving = 1,
    /// Shutting down: finishing in-flight requests.
    Draining = 2,
}

/// What every handler shares.
pub struct AppState<E: Engine> {
    /// Request coordination.
    pub coordinator: Coordinator<E>,
    /// Request limits.
    pub limits: Limits,
    /// This node.
    pub node_id: NodeId,
    /// Its zone.
    pub zone: String,
    /// Its client address (as advertised).
    pub http: String,
    /// Its peer address.
    pub peer: String,
    /// Serving state.
    pub serving: AtomicU8,
    /// Prometheus renderer, if this process installed one.
    pub metrics: Option<PrometheusHandle>,
    /// When the node started.
    pub started: Instant,
    /// The cluster layout (Raft-replicated); `/v1/ring` and `/v1/status` are served from it.
    pub layout: yeskv_layout::LayoutService,
    /// Gossip membership: who is up, and what newcomers announce.
    pub membership: Option<Arc<yeskv_membership::Membership>>,
    /// What a join records about a node, from the membership view.
    pub directory: crate::cluster_api::Directory,
    /// Per-peer internode RPC figures, for `/metrics` (empty for a node with no peer client).
    pub peer_stats: Box<dyn Fn() -> Vec<yeskv_rpc::PeerStats> + Send + Sync>,
}

impl<E: Engine> AppState<E> {
    /// The current serving state.
    pub fn serving(&self) -> Serving {
        match self.serving.load(Ordering::Acquire) {
            0 => Serving::Starting,
            1 => Serving::Serving,
            _ => Serving::Draining,
        }
    }

    /// Changes the serving state.
    pub fn set_serving(&self, s: Serving) {
        self.serving.store(s as u8, Ordering::Release);
    }
}

/// The router of the client API.
pub fn router<E: Engine>(state: Arc<AppState<E>>) -> Router {
    Router::new()
        .route("/v1/kv/{*path}", any(kv::<E>))
        .route("/v1/status", get(status::<E>))
        .route("/v1/ring", get(ring::<E>))
        .route("/v1/health", get(health::<E>))
        .route("/metrics", get(metrics_text::<E>))
        .route("/v1/admin/compact", axum::routing::post(compact::<E>))
        .route(
            "/v1/cluster/join",
            axum::routing::post(crate::cluster_api::join::<E>),
        )
        .route(
            "/v1/cluster/leave",
            axum::routing::post(crate::cluster_api::leave::<E>),
        )
        .route("/v1/cluster/plan", get(crate::cluster_api::plan::<E>))
        .route(
            "/v1/cluster/commit",
            axum::routing::post(crate::cluster_api::commit::<E>),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(track))
        .with_state(state)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::TooManySiblings { .. } = self {
            ::metrics::counter!(metrics::SIBLING_LIMIT_REFUSED).increment(1);
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

/// Parsed `/v1/kv/{bucket}/{key}` path.
fn parse_kv_path(uri: &Uri, limits: &Limits) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let rest = uri
        .path()
        .strip_prefix("/v1/kv/")
        .ok_or_else(|| Error::BadRequest("path must be /v1/kv/{bucket}/{key}".into()))?;
    let mut parts = rest.split('/');
    let (Some(b), Some(k), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::BadRequest(
            "path must be /v1/kv/{bucket}/{key} (percent-encode '/' inside names)".into(),
        ));
    };
    let bucket: Vec<u8> = percent_decode_str(b).collect();
    let key: Vec<u8> = percent_decode_str(k).collect();
    if bucket.is_empty() || key.is_empty() {
        return Err(Error::BadRequest("bucket and key must not be empty".into()));
    }
    if bucket.len() > limits.bucket_bytes_max {
        return Err(Error::TooLarge(format!(
            "bucket is {} bytes, limit {}",
            bucket.len(),
            limits.bucket_bytes_max
        )));
    }
    if key.len() > limits.key_bytes_max {
        return Err(Error::TooLarge(format!(
            "key is {} bytes, limit {}",
            key.len(),
            limits.key_bytes_max
        )));
    }
    Ok((bucket, key))
}

/// Query parameters of a kv request.
#[derive(Default, Debug)]
struct KvQuery {
    r: Option<Quorum>,
    w: Option<Quorum>,
    ttl_secs: Option<u64>,
}

fn parse_query(uri: &Uri, method: &Method) -> Result<KvQuery, Error> {
    let mut q = KvQuery::default();
    let Some(query) = uri.query() else {
        return Ok(q);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value).decode_utf8_lossy();
        let quorum = |what: &str| {
            value
                .parse::<Quorum>()
                .map_err(|e| Error::BadRequest(format!("{what}: {e}")))
        };
        match (name, method) {
            ("r", &Method::GET) => q.r = Some(quorum("r")?),
            ("w", &Method::PUT | &Method::DELETE) => q.w = Some(quorum("w")?),
            ("ttl", &Method::PUT) => {
                let t: u64 = value.parse().map_err(|_| {
                    Error::BadRequest(format!(
                        "ttl must be a whole number of seconds, got {value:?}"
                    ))
                })?;
                if t == 0 || t > TTL_SECS_MAX {
                    return Err(Error::BadRequest(format!(
                        "ttl must be between 1 and {TTL_SECS_MAX} seconds"
                    )));
                }
                q.ttl_secs = Some(t);
            }
            _ => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter {name:?} for {method}"
                )))
            }
        }
    }
    Ok(q)
}

fn parse_context(headers: &HeaderMap, tag: u32) -> Result<Option<CausalContext>, Error> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| Error::BadRequest("X-Causal-Context is not ASCII".into()))?;
            decode_token(s, tag)
                .map(Some)
                .map_err(Error::InvalidContext)
        }
    }
}

fn context_header(ctx: &CausalContext, tag: u32) -> HeaderValue {
    // base64url is always a valid header value.
    HeaderValue::from_str(&encode_token(ctx, tag)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn kv<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut resp = match kv_inner(&state, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // Ring-aware clients refresh their copy of /v1/ring when this exceeds theirs.
    resp.headers_mut().insert(
        LAYOUT_VERSION_HEADER,
        HeaderValue::from(state.coordinator.topology().layout_version()),
    );
    resp
}

async fn kv_inner<E: Engine>(
    state: &AppState<E>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    if state.serving() == Serving::Starting {
        return Err(Error::NotServing("starting"));
    }
    let (bucket, key) = parse_kv_path(&uri, &state.limits)?;
    let query = parse_query(&uri, &method)?;
    let tag = key_tag(&bucket, &key);
    let ctx = parse_context(&headers, tag)?;
    let coord = &state.coordinator;
    match method {
        Method::GET | Method::HEAD => {
            let obj = coord.get(&bucket, &key, query.r).await?;
            let json_mode = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/json"));
            Ok(read_response(&obj, tag, json_mode, coord.now_ms()))
        }
        Method::PUT => {
            let limit = state.limits.value_bytes_max;
            if let Some(len) = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                if len > limit as u64 {
                    return Err(Error::TooLarge(format!(
                        "value is {len} bytes, limit {limit}"
                    )));
                }
            }
            let value: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
                Error::TooLarge(format!("value exceeds the limit of {limit} bytes"))
            })?;
            let after = coord
                .put(
                    &bucket,
                    &key,
                    ctx.unwrap_or_default(),
                    Some(value.to_vec()),
                    query.ttl_secs,
                    query.w,
                )
                .await?;
            Ok(written(&after, tag))
        }
        Method::DELETE => {
            let ctx = ctx.ok_or(Error::ContextRequired)?;
            let after = coord.put(&bucket, &key, ctx, None, None, query.w).await?;
            Ok(written(&after, tag))
        }
        _ => Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, PUT or DELETE on /v1/kv/{bucket}/{key}",
        )),
    }
}

fn written(ctx: &CausalContext, tag: u32) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(CONTEXT_HEADER, context_header(ctx, tag));
    resp
}

/// The response to a read: `404` when nothing but tombstones is visible, `200` raw for a single
/// value, `300` JSON for siblings, `200` JSON in JSON mode.
fn read_response(obj: &Object, tag: u32, json_mode: bool, now_ms: u64) -> Response {
    let visible: Vec<_> = obj.visible(now_ms).collect();
    metrics::read_siblings().record(visible.len() as f64);
    let ctx = context_header(&obj.context(), tag);
    let mut resp = if visible.iter().all(|s| s.version.is_tombstone()) {
        json_error(StatusCode::NOT_FOUND, "not found")
    } else if visible.len() == 1 && !json_mode {
        let value = visible[0].version.value.clone().unwrap_or_default();
        let mut r = (StatusCode::OK, value).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r
    } else {
        let siblings: Vec<_> = visible
            .iter()
            .map(|s| match &s.version.value {
                Some(v) => json!({ "value": BASE64.encode(v), "deleted": false }),
                None => json!({ "value": null, "deleted": true }),
            })
            .collect();
        let status = if json_mode {
            StatusCode::OK
        } else {
            StatusCode::MULTIPLE_CHOICES
        };
        let body = json!({
            "context": ctx.to_str().unwrap_or_default(),
            "siblings": siblings,
        });
        (status, axum::Json(body)).into_response()
    };
    if !obj.is_empty() {
        resp.headers_mut().insert(CONTEXT_HEADER, ctx);
    }
    resp
}

async fn status<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let settings = state.coordinator.settings();
    let replica = state.coordinator.replica();
    let layout = state.layout.current();
    let gossip = state.membership.as_ref().map(|m| m.view());
    let liveness = |id: &NodeId| -> &'static str {
        if id == &state.node_id {
            return "up";
        }
        match gossip.as_ref().and_then(|g| g.member(id)) {
            Some(m) if m.status == yeskv_membership::MemberStatus::Up => "up",
            Some(_) => "down",
            None => "unknown",
        }
    };
    let mut members: Vec<serde_json::Value> = Vec::new();
    if let Some(l) = &layout {
        for (id, m) in &l.members {
            members.push(json!({
                "id": id.as_str(),
                "peer": m.peer,
                "http": m.http,
                "zone": m.zone,
                "status": liveness(id),
                "state": m.state.as_str(),
                "owns": l.assignment.owned(id),
            }));
        }
    }
    // Nodes that joined the gossip but own nothing yet.
    let in_layout = |id: &NodeId| layout.as_ref().is_some_and(|l| l.members.contains_key(id));
    if let Some(g) = &gossip {
        for m in g.members.iter().filter(|m| !in_layout(&m.id)) {
            members.push(json!({
                "id": m.id.as_str(),
                "peer": m.peer_addr,
                "http": m.http_addr,
                "zone": m.zone,
                "status": liveness(&m.id),
                "state": "joining",
                "owns": 0,
            }));
        }
    }
    if !in_layout(&state.node_id) && gossip.is_none() {
        members.push(json!({
            "id": state.node_id.as_str(),
            "peer": state.peer,
            "http": state.http,
            "zone": state.zone,
            "status": "up",
            "state": "joining",
            "owns": 0,
        }));
    }
    let local_partitions: Vec<u32> = match &layout {
        Some(l) => (0..l.partitions)
            .filter(|p| l.assignment.replicas(*p as u16).contains(&state.node_id))
            .collect(),
        None => Vec::new(),
    };
    let partitions: Vec<_> = local_partitions
        .iter()
        .map(|id| match replica.tree_summary(*id as u16) {
            Some(t) => {
                json!({ "id": id, "merkle_root": format!("{:016x}", t.root), "keys": t.keys })
            }
            None => json!({ "id": id, "merkle_root": null, "keys": null }),
        })
        .collect();
    let body = json!({
        "node": state.node_id.as_str(),
        "zone": state.zone,
        "actor": replica.actor().to_string(),
        "serving": format!("{:?}", state.serving()).to_lowercase(),
        "uptime_secs": state.started.elapsed().as_secs(),
        "sync": replica.engine().sync_mode().to_string(),
        "n": settings.n,
        "r": settings.r,
        "w": settings.w,
        "layout_version": layout.as_ref().map_or(0, |l| l.version),
        "members": members,
        "hints_pending": replica.hints_pending(),
        "hint_bytes": replica.hint_bytes(),
        "disk": replica.engine().disk().map(|d| json!({
            "path": d.path.display().to_string(),
            "total_bytes": d.total_bytes,
            "free_bytes": d.free_bytes,
            "used_bytes": {
                "sst": d.usage.sst,
                "wal": d.usage.wal,
                "manifest": d.usage.manifest,
                "info_log": d.usage.info_log,
                "other": d.usage.other,
                "total": d.usage.total(),
            },
            "reserve_bytes": d.reserve_bytes,
            "writable": d.writable,
            "error": d.error,
        })),
        "corrupt_records": replica.corrupt_total(),
        "partitions": partitions,
    });
    axum::Json(body).into_response()
}

async fn ring<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let Some(layout) = state.layout.current() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has no layout yet (it joined the gossip but owns nothing)",
        );
    };
    let partitions: Vec<_> = (0..layout.partitions)
        .map(|id| {
            let prefs: Vec<&str> = layout
                .assignment
                .replicas(id as u16)
                .iter()
                .map(|n| n.as_str())
                .collect();
            json!({ "id": id, "preference": prefs })
        })
        .collect();
    let nodes: Vec<_> = layout
        .members
        .iter()
        .map(|(id, m)| json!({ "id": id.as_str(), "http": m.http, "zone": m.zone }))
        .collect();
    axum::Json(json!({
        "version": layout.version,
        "n": layout.n,
        "partition_count": layout.partitions,
        "partitions": partitions,
        "nodes": nodes,
        "hash": HASH_NAME,
    }))
    .into_response()
}

async fn compact<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let replica = state.coordinator.replica().clone();
    let started = Instant::now();
    let result =
        tokio::task::spawn_blocking(move || replica.engine().compact(yeskv_storage::Space::Data))
            .await;
    match result {
        Ok(Ok(())) => axum::Json(json!({
            "compacted": "data",
            "duration_ms": started.elapsed().as_millis() as u64,
        }))
        .into_response(),
        Ok(Err(e)) => Error::from(e).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn health<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    match state.serving() {
        Serving::Serving => {
            (StatusCode::OK, axum::Json(json!({ "status": "serving" }))).into_response()
        }
        Serving::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "starting" })),
        )
            .into_response(),
        Serving::Draining => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "draining" })),
        )
            .into_response(),
    }
}

async fn metrics_text<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    match &state.metrics {
        Some(handle) => {
            let text = metrics::render(
                handle,
                state.coordinator.replica().engine(),
                &(state.peer_stats)(),
            );
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder in this process",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_paths() {
        let l = Limits::default();
        let p = |s: &str| parse_kv_path(&s.parse::<Uri>().expect("uri"), &l);
        assert_eq!(
            p("/v1/kv/carts/al%2Fice").expect("ok"),
            (b"carts".to_vec(), b"al/ice".to_vec())
        );
        assert_eq!(p("/v1/kv/b/%FF%00").expect("ok").1, vec![0xff, 0]);
        assert!(matches!(p("/v1/kv/b"), Err(Error::BadRequest(_))));
        assert!(matches!(p("/v1/kv/b/k/x"), Err(Error::BadRequest(_))));
        assert!(matches!(p("/v1/kv//k"), Err(Error::BadRequest(_))));
        let long = format!("/v1/kv/b/{}", "k".repeat(513));
        assert!(matches!(p(&long), Err(Error::TooLarge(_))));
    }

    #[test]
    fn queries() {
        let q = |s: &str, m: Method| parse_query(&s.parse::<Uri>().expect("uri"), &m);
        assert_eq!(
            q("/x?r=quorum", Method::GET).expect("ok").r,
            Some(Quorum::Quorum)
        );
        assert_eq!(
            q("/x?ttl=30&w=1", Method::PUT).expect("ok").ttl_secs,
            Some(30)
        );
        assert!(q("/x?ttl=0", Method::PUT).is_err());
        assert!(q("/x?ttl=abc", Method::PUT).is_err());
        assert!(q("/x?r=2", Method::PUT).is_err());
        assert!(q("/x?bogus=1", Method::GET).is_err());
    }
}
