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
use serde_json::json;
use yeskv_core::codec::{decode_token, encode_token};
use yeskv_core::keyring::Subkeys;
use yeskv_core::keyspace::key_tag;
use yeskv_core::{CausalContext, Conflict, Object, Quorum};
use yeskv_storage::Engine;

use super::{json_error, AppState, CONTEXT_HEADER, LAYOUT_VERSION_HEADER};
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

async fn kv_inner<E: Engine>(
    state: &AppState<E>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    state.keys_gate()?;
    let (bucket, key) = parse_kv_path(&uri, &state.limits)?;
    let query = parse_query(&uri, &method)?;
    let tag = key_tag(&bucket, &key);
    let keys = &state.coordinator.settings().context_keys;
    let ctx = parse_context(&headers, tag, keys)?;
    let coord = &state.coordinator;
    let props = coord.bucket_props(&bucket);
    if let Some(kind) = props.datatype {
        return Err(Error::Conflict(format!(
            "the bucket holds {kind}s: use /v1/dt/{{bucket}}/{{key}}"
        )));
    }
    match method {
        Method::GET | Method::HEAD => {
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
        Method::POST if query.touch => {
            let ttl = query.ttl_secs.or(props.ttl_secs).ok_or_else(|| {
                Error::BadRequest("touch needs &ttl=SECONDS on a bucket without ttl_secs".into())
            })?;
            ::metrics::counter!(metrics::TOUCHES, "reason" => "touch").increment(1);
            match coord.touch(&bucket, &key, ttl, query.w).await? {
                true => Ok(StatusCode::NO_CONTENT.into_response()),
                false => Ok(json_error(StatusCode::NOT_FOUND, "not found")),
            }
        }
        Method::PUT => {
            let value = super::body::read(
                &state.bodies,
                &headers,
                body,
                state.limits.value_bytes_max,
                "value",
            )
            .await?;
            let write = Write {
                ctx: ctx.unwrap_or_default(),
                body: WriteBody::Value(value.to_vec()),
                ttl_secs: query.ttl_secs,
            };
            let after = coord.write(&bucket, &key, write, query.w).await?;
            Ok(written(&after, tag, keys, state.limits.siblings_max))
        }
        Method::DELETE => {
            let ctx = ctx.ok_or(Error::ContextRequired)?;
            let write = Write {
                ctx,
                body: WriteBody::Delete,
                ttl_secs: None,
            };
            let after = coord.write(&bucket, &key, write, query.w).await?;
            Ok(written(&after, tag, keys, state.limits.siblings_max))
        }
        Method::POST => Err(Error::BadRequest(
            "POST on /v1/kv/{bucket}/{key} needs ?touch".into(),
        )),
        _ => Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, PUT, DELETE or POST ?touch on /v1/kv/{bucket}/{key}",
        )),
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
            let body = json!({
                "context": ctx.to_str().unwrap_or_default(),
                "siblings": [{ "value": BASE64.encode(v), "deleted": false }],
            });
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
