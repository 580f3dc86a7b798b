//! `/v1/admin/keys`: API keys (admin only; the check is [`crate::auth::require`]).
//!
//! - `POST /v1/admin/keys` JSON `{"name", "buckets": {"B": "read"|"write"|"readwrite"},
//!   "admin": bool}` → `200 {"name", "key"}`: the secret, shown this once (only its hash is
//!   kept); `409` if the name exists, `400` for bad input.
//! - `DELETE /v1/admin/keys/{name}` → `204`; `404` for an unknown name.
//! - `GET /v1/admin/keys` → `200 {"keys": [{"name", "admin", "buckets"}]}` (never hashes).
//!
//! A change goes through the layout's Raft log (`yeskv_layout::Command::PutKey`/`RevokeKey`)
//! and is installed here as soon as it applied, so this node's next request sees it; the other
//! nodes see it when they apply the entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use yeskv_layout::{Access, ApiKey, LayoutError};
use yeskv_storage::Engine;

use super::{json_error, AppState, ErrorBody};
use crate::auth;

/// Largest body of `POST /v1/admin/keys`.
pub const KEY_BODY_BYTES_MAX: usize = 64 * 1024;

/// A key as listed: name and permissions, never its hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// Whether it is an admin key (in a request, default `false`).
    #[serde(default)]
    pub admin: bool,
    /// Bucket → `read`, `write` or `readwrite`.
    #[serde(default)]
    pub buckets: BTreeMap<String, String>,
}

impl KeyInfo {
    fn of(name: &str, key: &ApiKey) -> KeyInfo {
        KeyInfo {
            name: name.to_string(),
            admin: key.admin,
            buckets: key
                .buckets
                .iter()
                .map(|(bucket, access)| {
                    (
                        String::from_utf8_lossy(bucket).into_owned(),
                        access.as_str().to_string(),
                    )
                })
                .collect(),
        }
    }
}

/// The answer of `GET /v1/admin/keys`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    /// Every key, by name.
    pub keys: Vec<KeyInfo>,
}

/// The answer of `POST /v1/admin/keys`: the secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreated {
    /// The key's name.
    pub name: String,
    /// The secret (`ykv_…`), for `Authorization: Bearer`.
    pub key: String,
}

/// `GET /v1/admin/keys`.
#[utoipa::path(
    get,
    path = "/v1/admin/keys",
    tag = "keys",
    operation_id = "list_keys",
    summary = "List API keys",
    responses((status = 200, description = "Every key, without secrets or hashes", body = KeyList)),
    security(("admin_key" = []))
)]
pub(super) async fn list<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let keys = state
        .guard
        .keys
        .all()
        .iter()
        .map(|(name, key)| KeyInfo::of(name, key))
        .collect();
    axum::Json(KeyList { keys }).into_response()
}

/// A key request: name, admin flag, permissions per bucket.
type KeyRequest = (String, bool, BTreeMap<Vec<u8>, Access>);

/// Reads a key request.
fn parse_request(body: &[u8]) -> Result<KeyRequest, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("the body must be a JSON object {\"name\", \"buckets\", \"admin\"}")?;
    if let Some(field) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "buckets" | "admin"))
    {
        return Err(format!(
            "unknown field {field:?} (expected name, buckets, admin)"
        ));
    }
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or("\"name\" (a string) is required")?
        .to_string();
    yeskv_layout::keys::validate_name(&name)?;
    let admin = match object.get("admin") {
        None => false,
        Some(v) => v.as_bool().ok_or("\"admin\" must be true or false")?,
    };
    let mut buckets = BTreeMap::new();
    match object.get("buckets") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (bucket, access) in map {
                let access = access.as_str().and_then(Access::parse).ok_or_else(|| {
                    format!("bucket {bucket:?}: the access is \"read\", \"write\" or \"readwrite\"")
                })?;
                buckets.insert(bucket.as_bytes().to_vec(), access);
            }
        }
        Some(_) => return Err("\"buckets\" must be an object {\"BUCKET\": \"read\"}".into()),
    }
    if !admin && buckets.is_empty() {
        return Err("a key needs \"admin\": true or at least one bucket".into());
    }
    Ok((name, admin, buckets))
}

/// `POST /v1/admin/keys`.
#[utoipa::path(
    post,
    path = "/v1/admin/keys",
    tag = "keys",
    operation_id = "create_key",
    summary = "Create an API key",
    description = "Needs `\"admin\": true` or at least one bucket. The answer shows the secret \
        this once; only its hash is kept.",
    request_body(content = KeyInfo, content_type = "application/json",
        description = "`name`, `admin` (default false), `buckets`: bucket → `read`, `write` or `readwrite`"),
    responses(
        (status = 200, description = "Created", body = KeyCreated),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 409, description = "A key of that name exists", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "No layout leader", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn create<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    body: Body,
) -> Response {
    let Ok(body): Result<Bytes, _> = axum::body::to_bytes(body, KEY_BODY_BYTES_MAX).await else {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body exceeds the limit of {KEY_BODY_BYTES_MAX} bytes"),
        );
    };
    let (name, admin, buckets) = match parse_request(&body) {
        Ok(request) => request,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, &reason),
    };
    let secret = match auth::generate_secret() {
        Ok(secret) => secret,
        Err(reason) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &reason),
    };
    let key = ApiKey {
        hash: auth::hash_secret(&secret),
        admin,
        buckets,
    };
    if let Err(e) = state.layout.put_key(name.clone(), key).await {
        return layout_error(e);
    }
    state.guard.keys.install(&state.layout.state());
    tracing::info!(key = %name, admin, "API key created");
    axum::Json(KeyCreated { name, key: secret }).into_response()
}

/// `DELETE /v1/admin/keys/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/admin/keys/{name}",
    tag = "keys",
    operation_id = "revoke_key",
    summary = "Revoke an API key",
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No key of that name", body = ErrorBody),
        (status = 503, description = "No layout leader", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn revoke<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = state.layout.revoke_key(name.clone()).await {
        return layout_error(e);
    }
    state.guard.keys.install(&state.layout.state());
    tracing::info!(key = %name, "API key revoked");
    StatusCode::NO_CONTENT.into_response()
}

/// A layout service error as the client sees it.
fn layout_error(e: yeskv_layout::Error) -> Response {
    use yeskv_layout::Error as E;
    let status = match &e {
        E::Rejected(LayoutError::KeyExists { .. }) => StatusCode::CONFLICT,
        E::Rejected(LayoutError::UnknownKey { .. }) => StatusCode::NOT_FOUND,
        E::Rejected(_) => StatusCode::BAD_REQUEST,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_bad_ones_refused() {
        let (name, admin, buckets) =
            parse_request(br#"{"name": "ci", "buckets": {"b": "read", "c": "readwrite"}}"#)
                .expect("valid");
        assert_eq!((name.as_str(), admin), ("ci", false));
        assert_eq!(buckets[&b"c".to_vec()], Access::ReadWrite);
        assert!(parse_request(br#"{"name": "root", "admin": true}"#).is_ok());
        for (body, expect) in [
            (&br#"nope"#[..], "not JSON"),
            (br#"[]"#, "JSON object"),
            (br#"{"buckets": {"b": "read"}}"#, "\"name\""),
            (br#"{"name": "a b", "admin": true}"#, "key name"),
            (br#"{"name": "k", "buckets": {"b": "all"}}"#, "readwrite"),
            (br#"{"name": "k", "admin": "yes"}"#, "true or false"),
            (br#"{"name": "k"}"#, "at least one bucket"),
            (
                br#"{"name": "k", "admin": true, "extra": 1}"#,
                "unknown field",
            ),
        ] {
            let err = parse_request(body).expect_err("refused");
            assert!(err.contains(expect), "{err}");
        }
        // The documented request body (`KeyInfo`) reads what the parser accepts.
        for body in [
            &br#"{"name": "ci", "buckets": {"b": "read", "c": "readwrite"}}"#[..],
            br#"{"name": "root", "admin": true}"#,
        ] {
            assert!(parse_request(body).is_ok());
            serde_json::from_slice::<KeyInfo>(body).expect("the documented shape");
        }
    }
}
