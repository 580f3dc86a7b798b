//! `/v1/buckets/{bucket}`: a bucket's properties, cluster-wide (`crate::buckets`).
//!
//! - `GET` answers every field from the properties this node last applied (the defaults for a
//!   bucket never set): no Raft leader is asked or needed.
//! - `PUT` takes a JSON object of the fields to change (`datatype`, `conflict`, `ttl_secs`,
//!   `ttl_sliding`, `salt`); a missing field keeps its value, `null` clears a nullable one. The
//!   body is checked whole before anything happens: an unknown field, a wrong type or value
//!   (`400`, naming the field), properties that do not hold together (`400`). A change of
//!   `datatype` is then checked against the data: `409` if any member stores a key of the
//!   bucket, `503` if a member cannot be asked. The new properties go through the layout
//!   service's leader (`503` if there is none within its request timeout) and the answer
//!   (`204`) comes once this node applied them, so this node's next request sees them.
//!
//! The bucket is a percent-decoded path segment under the same rules as `/v1/kv`: 1 to
//! `limits.bucket_bytes_max` bytes (`400` empty, `413` longer).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use yeskv_core::bucket::{BucketPatch, BucketProps, Conflict, Datatype};
use yeskv_storage::Engine;

use super::{json_error, AppState, ErrorBody, Serving};
use crate::config::Limits;
use crate::error::Error;

/// Largest `PUT /v1/buckets/{bucket}` body, in bytes: the five fields take well under 200.
pub const BUCKET_BODY_BYTES_MAX: usize = 4 * 1024;

/// The fields a `PUT` may name.
const FIELDS: &str = "datatype, conflict, ttl_secs, ttl_sliding, salt";

pub(super) async fn bucket<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match bucket_inner(&state, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn bucket_inner<E: Engine>(
    state: &AppState<E>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    if state.serving() == Serving::Starting {
        return Err(Error::NotServing("starting"));
    }
    let bucket = parse_bucket_path(&uri, &state.limits)?;
    match method {
        Method::GET | Method::HEAD => Ok(get_props(state, &bucket)),
        Method::PUT => set_props(state, bucket, headers, body).await,
        _ => Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET or PUT on /v1/buckets/{bucket}",
        )),
    }
}

/// `GET /v1/buckets/{bucket}`: every property, as this node last applied them.
#[utoipa::path(
    get,
    path = "/v1/buckets/{bucket}",
    tag = "buckets",
    operation_id = "get_bucket",
    summary = "Read a bucket's properties",
    description = "Every field, from the properties this node last applied (the defaults for a \
        bucket never set). Also `HEAD`.",
    params(("bucket" = String, Path, description = "The bucket, percent-encoded")),
    responses(
        (status = 200, description = "The properties", body = BucketPropsBody),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 413, description = "Bucket name over its limit", body = ErrorBody),
        (status = 503, description = "The node is starting", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) fn get_props<E: Engine>(state: &AppState<E>, bucket: &[u8]) -> Response {
    let props = state.coordinator.context().topology().bucket_props(bucket);
    (StatusCode::OK, axum::Json(BucketPropsBody::from(&props))).into_response()
}

/// `PUT /v1/buckets/{bucket}`: parse, patch, check the data when the type changes, propose,
/// wait until applied.
#[utoipa::path(
    put,
    path = "/v1/buckets/{bucket}",
    tag = "buckets",
    operation_id = "set_bucket",
    summary = "Change a bucket's properties",
    description = "Cluster-wide, through the layout's Raft group; answers once this node \
        applied the change. A missing field keeps its value; `null` clears a nullable one.",
    params(("bucket" = String, Path, description = "The bucket, percent-encoded")),
    request_body(content = BucketPatchBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Unknown field, wrong type or value, or properties that do not hold together", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `server.http_body_timeout_ms`", body = ErrorBody),
        (status = 409, description = "The bucket holds data: its datatype cannot change, nor its salt shrink (`holding` names the members)", body = ErrorBody),
        (status = 413, description = "Bucket name or body over its limit", body = ErrorBody),
        (status = 503, description = "No layout leader, or a member could not be asked (`unasked`)", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn set_props<E: Engine>(
    state: &AppState<E>,
    bucket: Vec<u8>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let body =
        super::body::read(&state.bodies, &headers, body, BUCKET_BODY_BYTES_MAX, "body").await?;
    let patch = parse_patch(&body)?;
    // Patch the cluster's current properties, not a state this node applied long ago: catch
    // up with the layout group first (the change needs its leader anyway).
    state.layout.catch_up().await.map_err(layout_error)?;
    state.buckets.install(&state.layout.state());
    let ctx = state.coordinator.context();
    let current = ctx.topology().bucket_props(&bucket);
    let next = current
        .patched(&patch)
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let name = String::from_utf8_lossy(&bucket).into_owned();
    // A salted bucket's keys also live in its sub-key bucket; fewer sub-keys would hide what
    // the dropped ones hold, so a smaller salt is a change of data type in that respect.
    if next.datatype != current.datatype || next.salt < current.salt {
        let mut holders = crate::buckets::holders(ctx, &bucket).await;
        let sub = [&bucket[..], crate::coordinator::SALT_SUFFIX].concat();
        let salted = crate::buckets::holders(ctx, &sub).await;
        for n in salted.holding {
            if !holders.holding.contains(&n) {
                holders.holding.push(n);
            }
        }
        holders.unasked.extend(salted.unasked);
        if !holders.holding.is_empty() {
            let holding: Vec<&str> = holders.holding.iter().map(|n| n.as_str()).collect();
            let body = ErrorBody {
                holding: Some(holding.iter().map(|n| n.to_string()).collect()),
                ..ErrorBody::new(format!(
                    "bucket {name:?} holds data (keys on {}): its datatype cannot change from \
                     {} to {}, nor its salt shrink from {} to {}; use a new bucket",
                    holding.join(", "),
                    datatype_name(current.datatype),
                    datatype_name(next.datatype),
                    current.salt,
                    next.salt,
                ))
            };
            return Ok(body.into_response(StatusCode::CONFLICT));
        }
        if !holders.unasked.is_empty() {
            let reasons: Vec<String> = holders.unasked.iter().map(|(_, r)| r.clone()).collect();
            let unasked: Vec<&str> = holders.unasked.iter().map(|(n, _)| n.as_str()).collect();
            let body = ErrorBody {
                unasked: Some(unasked.iter().map(|n| n.to_string()).collect()),
                ..ErrorBody::new(format!(
                    "cannot tell whether bucket {name:?} holds data, so its datatype cannot \
                     change now: {} could not be asked ({})",
                    unasked.join(", "),
                    reasons.join("; "),
                ))
            };
            return Ok(body.into_response(StatusCode::SERVICE_UNAVAILABLE));
        }
    }
    state
        .layout
        .set_bucket(bucket, next)
        .await
        .map_err(layout_error)?;
    // The change is applied here; install it now rather than when the follower task runs, so
    // this node's next request (a GET, a write to the bucket) sees it.
    state.buckets.install(&state.layout.state());
    tracing::info!(bucket = %name, "bucket properties set");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A layout service error as the client sees it: a refusal of the properties is `400`, no
/// leader or a storage failure `503` (with the service's reason).
fn layout_error(e: yeskv_layout::Error) -> Error {
    match e {
        yeskv_layout::Error::Rejected(refused) => Error::BadRequest(refused.to_string()),
        other => Error::Layout(other.to_string()),
    }
}

/// The bucket of a `/v1/buckets/{bucket}` path, percent-decoded (rules of `/v1/kv`).
fn parse_bucket_path(uri: &Uri, limits: &Limits) -> Result<Vec<u8>, Error> {
    let segment = uri
        .path()
        .strip_prefix("/v1/buckets/")
        .ok_or_else(|| Error::BadRequest("path must be /v1/buckets/{bucket}".into()))?;
    if segment.contains('/') {
        return Err(Error::BadRequest(
            "path must be /v1/buckets/{bucket} (percent-encode '/' inside names)".into(),
        ));
    }
    let bucket: Vec<u8> = percent_decode_str(segment).collect();
    if bucket.is_empty() {
        return Err(Error::BadRequest("bucket must not be empty".into()));
    }
    if bucket.len() > limits.bucket_bytes_max {
        return Err(Error::TooLarge(format!(
            "bucket is {} bytes, limit {}",
            bucket.len(),
            limits.bucket_bytes_max
        )));
    }
    Ok(bucket)
}

/// A `PUT` body: a JSON object of the fields to change (module docs).
fn parse_patch(body: &[u8]) -> Result<BucketPatch, Error> {
    let bad = |m: String| Err(Error::BadRequest(m));
    let fields: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            return bad(format!(
                "the body must be a JSON object of fields ({FIELDS})"
            ))
        }
        Err(e) => return bad(format!("the body is not JSON: {e}")),
    };
    let mut patch = BucketPatch::default();
    for (field, value) in &fields {
        match field.as_str() {
            "datatype" => {
                patch.datatype = Some(match value {
                    Value::Null => None,
                    Value::String(s) => match Datatype::parse(s) {
                        Some(d) => Some(d),
                        None => {
                            return bad(field_error(
                                field,
                                "\"cart\", \"counter\", \"set\" or null",
                                value,
                            ))
                        }
                    },
                    _ => {
                        return bad(field_error(
                            field,
                            "\"cart\", \"counter\", \"set\" or null",
                            value,
                        ))
                    }
                })
            }
            "conflict" => {
                patch.conflict = match value.as_str().and_then(Conflict::parse) {
                    Some(c) => Some(c),
                    None => return bad(field_error(field, "\"siblings\" or \"lww\"", value)),
                }
            }
            "ttl_secs" => {
                patch.ttl_secs = Some(match value {
                    Value::Null => None,
                    _ => match value.as_u64() {
                        Some(t) => Some(t),
                        None => {
                            return bad(field_error(
                                field,
                                "a whole number of seconds or null",
                                value,
                            ))
                        }
                    },
                })
            }
            "ttl_sliding" => {
                patch.ttl_sliding = match value.as_bool() {
                    Some(b) => Some(b),
                    None => return bad(field_error(field, "true or false", value)),
                }
            }
            "salt" => {
                patch.salt = match value.as_u64().and_then(|s| u8::try_from(s).ok()) {
                    Some(s) => Some(s),
                    None => {
                        return bad(field_error(
                            field,
                            &format!("a whole number from 1 to {}", yeskv_core::bucket::SALT_MAX),
                            value,
                        ))
                    }
                }
            }
            _ => return bad(format!("unknown field {field:?} (fields: {FIELDS})")),
        }
    }
    Ok(patch)
}

/// The message of a field with a wrong type or value.
fn field_error(field: &str, expected: &str, got: &Value) -> String {
    format!("field {field:?} must be {expected}, got {got}")
}

fn datatype_name(datatype: Option<Datatype>) -> &'static str {
    datatype.map_or("none", Datatype::as_str)
}

/// Every property of a bucket, as `GET /v1/buckets/{bucket}` answers them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketPropsBody {
    /// The data type its keys hold (`/v1/dt`), or `null` for plain values (`/v1/kv`).
    #[schema(value_type = Option<String>, required = true, examples("cart", "counter", "set"))]
    pub datatype: Option<&'static str>,
    /// How concurrent plain writes resolve: `siblings` (kept, answered `300`) or `lww`.
    #[schema(value_type = String, examples("siblings", "lww"))]
    pub conflict: &'static str,
    /// Expiry of every write, in seconds; `null` for none.
    #[schema(required = true)]
    pub ttl_secs: Option<u64>,
    /// Whether a read extends the expiry (sessions).
    pub ttl_sliding: bool,
    /// Sub-keys each key is spread over (1: none).
    pub salt: u8,
}

impl From<&BucketProps> for BucketPropsBody {
    fn from(props: &BucketProps) -> Self {
        BucketPropsBody {
            datatype: props.datatype.map(Datatype::as_str),
            conflict: props.conflict.as_str(),
            ttl_secs: props.ttl_secs,
            ttl_sliding: props.ttl_sliding,
            salt: props.salt,
        }
    }
}

/// The body of `PUT /v1/buckets/{bucket}`: the fields to change. [`parse_patch`] reads it by
/// hand, to tell a missing field (kept) from `null` (cleared) and to name the field in a `400`;
/// this type states the shape for the OpenAPI document, and a test checks the two agree.
// Its fields are read by the schema and the tests only: `parse_patch` reads the body by hand.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BucketPatchBody {
    /// `cart`, `counter`, `set`, or `null` for plain values.
    #[schema(value_type = Option<String>, pattern = "^(cart|counter|set)$")]
    pub datatype: Option<Option<String>>,
    /// `siblings` or `lww`.
    #[schema(pattern = "^(siblings|lww)$")]
    pub conflict: Option<String>,
    /// Expiry in seconds, or `null` for none.
    #[schema(value_type = Option<u64>)]
    pub ttl_secs: Option<Option<u64>>,
    /// Whether a read extends the expiry.
    pub ttl_sliding: Option<bool>,
    /// Sub-keys per key, from 1 to `SALT_MAX`.
    #[schema(minimum = 1)]
    pub salt: Option<u8>,
}

/// Every field of `props`, as `GET` answers them.
pub fn props_json(props: &BucketProps) -> Value {
    serde_json::to_value(BucketPropsBody::from(props)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bucket_paths() {
        let l = Limits::default();
        let p = |s: &str| parse_bucket_path(&s.parse::<Uri>().expect("uri"), &l);
        assert_eq!(p("/v1/buckets/carts").expect("ok"), b"carts".to_vec());
        assert_eq!(p("/v1/buckets/a%2Fb%FF").expect("ok"), b"a/b\xff".to_vec());
        assert!(matches!(p("/v1/buckets/"), Err(Error::BadRequest(_))));
        assert!(matches!(p("/v1/buckets/a/b"), Err(Error::BadRequest(_))));
        let long = format!("/v1/buckets/{}", "b".repeat(513));
        assert!(matches!(p(&long), Err(Error::TooLarge(_))));
    }

    fn patch(body: &str) -> Result<BucketPatch, String> {
        parse_patch(body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn missing_fields_keep_and_null_clears() {
        assert_eq!(patch("{}").expect("ok"), BucketPatch::default());
        assert_eq!(
            patch(r#"{"datatype": "counter", "salt": 8}"#).expect("ok"),
            BucketPatch {
                datatype: Some(Some(Datatype::Counter)),
                salt: Some(8),
                ..BucketPatch::default()
            }
        );
        assert_eq!(
            patch(r#"{"datatype": null, "ttl_secs": null}"#).expect("ok"),
            BucketPatch {
                datatype: Some(None),
                ttl_secs: Some(None),
                ..BucketPatch::default()
            }
        );
        assert_eq!(
            patch(r#"{"conflict": "lww", "ttl_secs": 60, "ttl_sliding": true}"#).expect("ok"),
            BucketPatch {
                conflict: Some(Conflict::Lww),
                ttl_secs: Some(Some(60)),
                ttl_sliding: Some(true),
                ..BucketPatch::default()
            }
        );
    }

    #[test]
    fn wrong_fields_types_and_values_name_the_field() {
        for (body, field) in [
            (r#"{"colour": "red"}"#, "colour"),
            (r#"{"datatype": "map"}"#, "datatype"),
            (r#"{"datatype": 3}"#, "datatype"),
            (r#"{"conflict": null}"#, "conflict"),
            (r#"{"conflict": "newest"}"#, "conflict"),
            (r#"{"ttl_secs": -1}"#, "ttl_secs"),
            (r#"{"ttl_secs": 1.5}"#, "ttl_secs"),
            (r#"{"ttl_secs": "60"}"#, "ttl_secs"),
            (r#"{"ttl_sliding": "yes"}"#, "ttl_sliding"),
            (r#"{"salt": 256}"#, "salt"),
            (r#"{"salt": null}"#, "salt"),
        ] {
            let error = patch(body).expect_err(body);
            assert!(error.contains(&format!("{field:?}")), "{body}: {error}");
        }
        assert!(patch("[1]").expect_err("array").contains("JSON object"));
        assert!(patch("").expect_err("empty").contains("not JSON"));
    }

    #[test]
    fn the_documented_patch_accepts_what_the_parser_accepts() {
        for body in [
            "{}",
            r#"{"datatype": "counter", "salt": 8}"#,
            r#"{"datatype": null, "ttl_secs": null}"#,
            r#"{"conflict": "lww", "ttl_secs": 60, "ttl_sliding": true}"#,
        ] {
            assert!(patch(body).is_ok(), "{body}");
            serde_json::from_str::<BucketPatchBody>(body).expect(body);
        }
        assert!(serde_json::from_str::<BucketPatchBody>(r#"{"colour": 1}"#).is_err());
    }

    #[test]
    fn get_shows_every_field() {
        assert_eq!(
            props_json(&BucketProps::default()),
            json!({"datatype": null, "conflict": "siblings", "ttl_secs": null,
                   "ttl_sliding": false, "salt": 1})
        );
    }
}
