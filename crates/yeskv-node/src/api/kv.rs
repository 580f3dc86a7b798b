//! `/v1/kv/{bucket}/{key}`: parsing and validation (paths, query, limits, context tokens) and
//! response shapes (`200` raw / `300` siblings / `404`, JSON mode). Everything is checked
//! before the coordinator sees it: a rejected request writes nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use utoipa::ToSchema;
use yeskv_core::bucket::BucketProps;
use yeskv_core::codec::{decode_token, encode_token};
use yeskv_core::keyring::Subkeys;
use yeskv_core::keyspace::key_tag;
use yeskv_core::{CausalContext, Conflict, Object, Quorum};
use yeskv_storage::Engine;

use super::{json_error, AppState, ErrorBody, CONTEXT_HEADER, LAYOUT_VERSION_HEADER};
use crate::config::{Limits, TTL_SECS_MAX};
use crate::coordinator::{Write, WriteBody, Written};
use crate::error::Error;
use crate::metrics;

/// Parsed `/v1/kv/{bucket}/{key}` (or `/v1/dt/...`) path.
pub(super) fn parse_kv_path(uri: &Uri, limits: &Limits) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let rest = uri
        .path()
        .strip_prefix("/v1/kv/")
        .or_else(|| uri.path().strip_prefix("/v1/dt/"))
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
pub(super) struct KvQuery {
    pub(super) r: Option<Quorum>,
    pub(super) w: Option<Quorum>,
    pub(super) ttl_secs: Option<u64>,
    /// `POST ?touch`.
    pub(super) touch: bool,
}

pub(super) fn parse_query(uri: &Uri, method: &Method) -> Result<KvQuery, Error> {
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
            ("w", &Method::PUT | &Method::DELETE | &Method::POST) => q.w = Some(quorum("w")?),
            ("touch", &Method::POST) if value.is_empty() => q.touch = true,
            ("ttl", &Method::PUT | &Method::POST) => {
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

pub(super) fn parse_context(
    headers: &HeaderMap,
    tag: u32,
    keys: &Subkeys,
) -> Result<Option<CausalContext>, Error> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| Error::BadRequest("X-Causal-Context is not ASCII".into()))?;
            decode_token(s, tag, keys)
                .map(Some)
                .map_err(Error::InvalidContext)
        }
    }
}

pub(super) fn context_header(ctx: &CausalContext, tag: u32, keys: &Subkeys) -> HeaderValue {
    // base64url is always a valid header value.
    HeaderValue::from_str(&encode_token(ctx, tag, keys))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `/v1/kv/{*path}`: parses and checks the request ([`KeyRequest::parse`]), then dispatches by
/// method to one function per operation (each described in the OpenAPI document).
pub(super) async fn kv<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = kv_inner(&state, method, uri, headers, body).await;
    key_response(&state, result)
}

/// The response of a request on a key (`/v1/kv`, `/v1/dt`), with the layout version the node
/// routes by: ring-aware clients refresh their copy of /v1/ring when it exceeds theirs.
pub(super) fn key_response<E: Engine>(
    state: &AppState<E>,
    result: Result<Response, Error>,
) -> Response {
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    resp.headers_mut().insert(
        LAYOUT_VERSION_HEADER,
        HeaderValue::from(state.coordinator.context().topology().layout_version()),
    );
    resp
}

/// A request on one key (`/v1/kv` or `/v1/dt`), parsed and checked: nothing reaches the
/// coordinator before this succeeds.
pub(super) struct KeyRequest {
    pub(super) bucket: Vec<u8>,
    pub(super) key: Vec<u8>,
    pub(super) query: KvQuery,
    /// The key's tag, which binds a context token to it.
    pub(super) tag: u32,
    /// The `X-Causal-Context` sent, if any.
    pub(super) ctx: Option<CausalContext>,
    /// The bucket's properties.
    pub(super) props: BucketProps,
}

impl KeyRequest {
    /// Checks that the node serves keys, then parses path, query and context, in that order.
    pub(super) fn parse<E: Engine>(
        state: &AppState<E>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<KeyRequest, Error> {
        state.keys_gate()?;
        let (bucket, key) = parse_kv_path(uri, &state.limits)?;
        let query = parse_query(uri, method)?;
        let tag = key_tag(&bucket, &key);
        let ctx = parse_context(headers, tag, &state.coordinator.settings().context_keys)?;
        let props = state.coordinator.bucket_props(&bucket);
        Ok(KeyRequest {
            bucket,
            key,
            query,
            tag,
            ctx,
            props,
        })
    }
}

async fn kv_inner<E: Engine>(
    state: &AppState<E>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let request = KeyRequest::parse(state, &method, &uri, &headers)?;
    if let Some(kind) = request.props.datatype {
        return Err(Error::Conflict(format!(
            "the bucket holds {kind}s: use /v1/dt/{{bucket}}/{{key}}"
        )));
    }
    match method {
        Method::GET | Method::HEAD => get_value(state, request, &headers).await,
        Method::POST if request.query.touch => touch_key(state, request).await,
        Method::PUT => put_value(state, request, &headers, body).await,
        Method::DELETE => delete_value(state, request).await,
        Method::POST => Err(Error::BadRequest(
            "POST on /v1/kv/{bucket}/{key} needs ?touch".into(),
        )),
        _ => Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, PUT, DELETE or POST ?touch on /v1/kv/{bucket}/{key}",
        )),
    }
}

/// `GET /v1/kv/{bucket}/{key}`: the value, or its siblings.
#[utoipa::path(
    get,
    path = "/v1/kv/{bucket}/{key}",
    tag = "kv",
    operation_id = "get_value",
    summary = "Read a key",
    description = "One version: `200` with the raw value. Concurrent versions (siblings): `300` \
        with a JSON list of them. With `Accept: application/json`, `200` JSON in both cases. A \
        last-writer-wins bucket answers the newest version. `404` when nothing but tombstones \
        is visible (still with `X-Causal-Context` when the key has a history). Also `HEAD`.",
    params(
        ("bucket" = String, Path, description = "The bucket, percent-encoded (1 to `limits.bucket_bytes_max` bytes)"),
        ("key" = String, Path, description = "The key, percent-encoded (1 to `limits.key_bytes_max` bytes)"),
        ("r" = Option<String>, Query, description = "Read quorum: `one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a number 1..=n"),
        ("accept" = Option<String>, Header, description = "`application/json` for the JSON form even for one version"),
    ),
    responses(
        (status = 200, description = "The value (raw), or the versions in JSON mode",
            content(
                ("application/octet-stream"),
                (SiblingsBody = "application/json"),
            ),
            headers(
                ("x-causal-context" = String, description = "The context token of what was read"),
                ("x-yeskv-siblings" = u64, description = "The key holds more siblings than `limits.siblings_max`: how many"),
            )),
        (status = 300, description = "Siblings: concurrent versions, with the context that covers them all",
            body = SiblingsBody, content_type = "application/json",
            headers(
                ("x-causal-context" = String, description = "The context token of what was read"),
                ("x-yeskv-siblings" = u64, description = "The key holds more siblings than `limits.siblings_max`: how many"),
            )),
        (status = 400, description = "Malformed path, quorum or context", body = ErrorBody),
        (status = 404, description = "Not found (or only tombstones)", body = ErrorBody,
            headers(("x-causal-context" = String, description = "The context of the tombstones, when there are any"))),
        (status = 409, description = "The bucket holds a data type: use `/v1/dt`", body = ErrorBody),
        (status = 413, description = "Bucket or key over its limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or the node is not serving keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn get_value<E: Engine>(
    state: &AppState<E>,
    request: KeyRequest,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    let KeyRequest {
        bucket,
        key,
        query,
        tag,
        props,
        ..
    } = request;
    let coord = &state.coordinator;
    let keys = &coord.settings().context_keys;
    let obj = coord.get(&bucket, &key, query.r).await?;
    let json_mode = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let now = coord.now_ms();
    coord.slide(&bucket, &key, &obj);
    let mut resp = match props.conflict {
        Conflict::Lww => lww_response(&obj, tag, keys, json_mode, now),
        Conflict::Siblings => read_response(&obj, tag, keys, json_mode, now),
    };
    flag_siblings(
        &mut resp,
        obj.visible(now).count(),
        state.limits.siblings_max,
    );
    Ok(resp)
}

/// `POST /v1/kv/{bucket}/{key}?touch`: extends the key's expiry without rewriting it.
#[utoipa::path(
    post,
    path = "/v1/kv/{bucket}/{key}",
    tag = "kv",
    operation_id = "touch_key",
    summary = "Extend a key's expiry",
    description = "Extends the key's expiry by `ttl` (or the bucket's `ttl_secs`) from now, \
        without rewriting its value. Also for keys of data-type buckets.",
    params(
        ("bucket" = String, Path, description = "The bucket, percent-encoded"),
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("touch" = String, Query, description = "Present, with no value (`?touch`)"),
        ("ttl" = Option<u64>, Query, description = "Seconds from now (1..=`TTL_SECS_MAX`); required when the bucket has no `ttl_secs`"),
        ("w" = Option<String>, Query, description = "Write quorum: `one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a number 1..=n"),
    ),
    responses(
        (status = 204, description = "Touched"),
        (status = 400, description = "Malformed request, or no ttl to touch with", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Refused for what the bucket holds", body = ErrorBody),
        (status = 413, description = "Bucket or key over its limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or the node is not serving keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn touch_key<E: Engine>(
    state: &AppState<E>,
    request: KeyRequest,
) -> Result<Response, Error> {
    let ttl = request
        .query
        .ttl_secs
        .or(request.props.ttl_secs)
        .ok_or_else(|| {
            Error::BadRequest("touch needs &ttl=SECONDS on a bucket without ttl_secs".into())
        })?;
    ::metrics::counter!(metrics::TOUCHES, "reason" => "touch").increment(1);
    let coord = &state.coordinator;
    match coord
        .touch(&request.bucket, &request.key, ttl, request.query.w)
        .await?
    {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Ok(json_error(StatusCode::NOT_FOUND, "not found")),
    }
}

/// `PUT /v1/kv/{bucket}/{key}`: writes a value.
#[utoipa::path(
    put,
    path = "/v1/kv/{bucket}/{key}",
    tag = "kv",
    operation_id = "put_value",
    summary = "Write a value",
    description = "Writes the body as the key's value. With the `X-Causal-Context` of a read it \
        supersedes exactly what that read saw; without one it supersedes nothing (a sibling).",
    params(
        ("bucket" = String, Path, description = "The bucket, percent-encoded"),
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("w" = Option<String>, Query, description = "Write quorum: `one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a number 1..=n"),
        ("ttl" = Option<u64>, Query, description = "Expire the value this many seconds after the write"),
        ("x-causal-context" = Option<String>, Header, description = "The context token of a read of this key"),
    ),
    request_body(content(("application/octet-stream")),
        description = "The value: opaque bytes, up to `limits.value_bytes_max`"),
    responses(
        (status = 204, description = "Written",
            headers(
                ("x-causal-context" = String, description = "The context after the write"),
                ("x-yeskv-siblings" = u64, description = "The key holds more siblings than `limits.siblings_max`: how many"),
            )),
        (status = 400, description = "Malformed request or context", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `server.http_body_timeout_ms`", body = ErrorBody),
        (status = 409, description = "The bucket holds a data type, or the key's history is too long", body = ErrorBody),
        (status = 413, description = "Bucket, key, value or object over its limit", body = ErrorBody),
        (status = 503, description = "Fewer than `w` nodes could take the write, or the node is busy or not serving keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn put_value<E: Engine>(
    state: &AppState<E>,
    request: KeyRequest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let value = super::body::read(
        &state.bodies,
        headers,
        body,
        state.limits.value_bytes_max,
        "value",
    )
    .await?;
    let write = Write {
        ctx: request.ctx.unwrap_or_default(),
        body: WriteBody::Value(value.to_vec()),
        ttl_secs: request.query.ttl_secs,
    };
    let coord = &state.coordinator;
    let after = coord
        .write(&request.bucket, &request.key, write, request.query.w)
        .await?;
    let keys = &coord.settings().context_keys;
    Ok(written(
        &after,
        request.tag,
        keys,
        state.limits.siblings_max,
    ))
}

/// `DELETE /v1/kv/{bucket}/{key}`: writes a tombstone over what a read saw.
#[utoipa::path(
    delete,
    path = "/v1/kv/{bucket}/{key}",
    tag = "kv",
    operation_id = "delete_value",
    summary = "Delete a key",
    description = "Writes a versioned tombstone that supersedes exactly what the read whose \
        `X-Causal-Context` it carries saw.",
    params(
        ("bucket" = String, Path, description = "The bucket, percent-encoded"),
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("w" = Option<String>, Query, description = "Write quorum: `one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a number 1..=n"),
        ("x-causal-context" = String, Header, description = "The context token of a read of this key (required)"),
    ),
    responses(
        (status = 204, description = "Deleted",
            headers(
                ("x-causal-context" = String, description = "The context after the delete"),
                ("x-yeskv-siblings" = u64, description = "The key holds more siblings than `limits.siblings_max`: how many"),
            )),
        (status = 400, description = "Malformed request or context", body = ErrorBody),
        (status = 409, description = "The bucket holds a data type", body = ErrorBody),
        (status = 413, description = "Bucket or key over its limit", body = ErrorBody),
        (status = 428, description = "No `X-Causal-Context`", body = ErrorBody),
        (status = 503, description = "Fewer than `w` nodes could take the write, or the node is not serving keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn delete_value<E: Engine>(
    state: &AppState<E>,
    request: KeyRequest,
) -> Result<Response, Error> {
    let ctx = request.ctx.ok_or(Error::ContextRequired)?;
    let write = Write {
        ctx,
        body: WriteBody::Delete,
        ttl_secs: None,
    };
    let coord = &state.coordinator;
    let after = coord
        .write(&request.bucket, &request.key, write, request.query.w)
        .await?;
    let keys = &coord.settings().context_keys;
    Ok(written(
        &after,
        request.tag,
        keys,
        state.limits.siblings_max,
    ))
}

/// The JSON form of a read: the versions visible and the context that covers them all.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiblingsBody {
    /// The context token (the same as the `X-Causal-Context` header).
    pub context: String,
    /// The visible versions, tombstones included.
    pub siblings: Vec<Sibling>,
}

/// One version of a key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sibling {
    /// The value in standard base64; `null` for a tombstone.
    #[schema(required = true, content_encoding = "base64")]
    pub value: Option<String>,
    /// Whether this version is a tombstone (a delete).
    pub deleted: bool,
}

impl Sibling {
    fn of(value: Option<&Vec<u8>>) -> Sibling {
        Sibling {
            value: value.map(|v| BASE64.encode(v)),
            deleted: value.is_none(),
        }
    }
}

/// The answer to a write: `204` with the new context, flagged when the key holds more
/// siblings than `limits.siblings_max`.
pub(super) fn written(after: &Written, tag: u32, keys: &Subkeys, siblings_max: usize) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(CONTEXT_HEADER, context_header(&after.ctx, tag, keys));
    flag_siblings(&mut resp, after.siblings, siblings_max);
    resp
}

/// The header that flags a key over `limits.siblings_max`: how many siblings it holds.
pub const SIBLINGS_HEADER: &str = "x-yeskv-siblings";

/// Adds [`SIBLINGS_HEADER`] when `siblings` exceeds `max` (a plain bucket never refuses a
/// write for its siblings; it says so instead).
fn flag_siblings(resp: &mut Response, siblings: usize, max: usize) {
    if siblings > max {
        resp.headers_mut()
            .insert(SIBLINGS_HEADER, HeaderValue::from(siblings as u64));
    }
}

/// The answer to a read of a last-writer-wins bucket: the version with the highest timestamp
/// (ties broken by dot), `404` when it is a tombstone or nothing is visible.
fn lww_response(obj: &Object, tag: u32, keys: &Subkeys, json_mode: bool, now_ms: u64) -> Response {
    let winner = obj
        .visible(now_ms)
        .max_by(|a, b| (a.version.written_at_ms, &a.dot).cmp(&(b.version.written_at_ms, &b.dot)));
    let ctx = context_header(&obj.context(), tag, keys);
    let mut resp = match winner.and_then(|s| s.version.value.as_ref()) {
        None => json_error(StatusCode::NOT_FOUND, "not found"),
        Some(v) if json_mode => {
            let body = SiblingsBody {
                context: ctx.to_str().unwrap_or_default().to_string(),
                siblings: vec![Sibling::of(Some(v))],
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Some(v) => {
            let mut r = (StatusCode::OK, v.clone()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
    };
    if !obj.is_empty() {
        resp.headers_mut().insert(CONTEXT_HEADER, ctx);
    }
    resp
}

/// The response to a read: `404` when nothing but tombstones is visible, `200` raw for a single
/// value, `300` JSON for siblings, `200` JSON in JSON mode.
fn read_response(obj: &Object, tag: u32, keys: &Subkeys, json_mode: bool, now_ms: u64) -> Response {
    let visible: Vec<_> = obj.visible(now_ms).collect();
    metrics::read_siblings().record(visible.len() as f64);
    let ctx = context_header(&obj.context(), tag, keys);
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
            .map(|s| Sibling::of(s.version.value.as_ref()))
            .collect();
        let status = if json_mode {
            StatusCode::OK
        } else {
            StatusCode::MULTIPLE_CHOICES
        };
        let body = SiblingsBody {
            context: ctx.to_str().unwrap_or_default().to_string(),
            siblings,
        };
        (status, axum::Json(body)).into_response()
    };
    if !obj.is_empty() {
        resp.headers_mut().insert(CONTEXT_HEADER, ctx);
    }
    resp
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
