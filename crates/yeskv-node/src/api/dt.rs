//! `/v1/dt/{bucket}/{key}`: operations on data-type keys (cart, counter, set) and their reads.
//!
//! `POST` takes one JSON operation (`yeskv_core::datatypes::DtOp`), checked here and again by
//! the coordinator against the bucket's data type (`409` for another type, `400` for a
//! malformed one; nothing is written either way). `GET` joins the states of the key's siblings
//! and answers the value: data types never answer `300`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use yeskv_core::datatypes::{self, DtOp, DtValue};
use yeskv_core::Datatype;
use yeskv_storage::Engine;

use super::kv::{context_header, key_response, written, KeyRequest};
use super::{json_error, AppState, ErrorBody, CONTEXT_HEADER};
use crate::coordinator::{Write, WriteBody};
use crate::error::Error;

/// Largest JSON operation accepted (a set operation of many members fits).
const OP_BYTES_MAX: usize = 1 << 20;

/// `/v1/dt/{*path}`: parses and checks the request, then dispatches by method.
pub(super) async fn dt<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = dt_inner(&state, method, uri, headers, body).await;
    key_response(&state, result)
}

async fn dt_inner<E: Engine>(
    state: &AppState<E>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let request = KeyRequest::parse(state, &method, &uri, &headers)?;
    if request.query.touch {
        return Err(Error::BadRequest(
            "touch a data-type key with POST /v1/kv/{bucket}/{key}?touch".into(),
        ));
    }
    let Some(kind) = request.props.datatype else {
        return Err(Error::Conflict(
            "a plain bucket: set its datatype with PUT /v1/buckets/{bucket}, or use /v1/kv".into(),
        ));
    };
    match method {
        Method::GET => read_datatype(state, request).await,
        Method::POST => update_datatype(state, request, kind, &headers, body).await,
        _ => Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET or POST on /v1/dt/{bucket}/{key}",
        )),
    }
}

/// `GET /v1/dt/{bucket}/{key}`: the value of a data-type key, its siblings' states joined.
#[utoipa::path(
    get,
    path = "/v1/dt/{bucket}/{key}",
    tag = "datatypes",
    operation_id = "read_datatype",
    summary = "Read a cart, counter or set",
    description = "Joins the states of the key's siblings and answers the value: data types \
        never answer `300`.",
    params(
        ("bucket" = String, Path, description = "The bucket (its `datatype` set), percent-encoded"),
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("r" = Option<String>, Query, description = "Read quorum: `one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a number 1..=n"),
    ),
    responses(
        (status = 200, description = "The value", body = DtValueBody,
            headers(("x-causal-context" = String, description = "The context token of what was read"))),
        (status = 400, description = "Malformed path, quorum or context", body = ErrorBody),
        (status = 404, description = "Never written (or removed)", body = ErrorBody,
            headers(("x-causal-context" = String, description = "The context, when the key has a history"))),
        (status = 409, description = "A plain bucket: use `/v1/kv`", body = ErrorBody),
        (status = 413, description = "Bucket or key over its limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or the node is not serving keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn read_datatype<E: Engine>(
    state: &AppState<E>,
    request: KeyRequest,
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
    let read = coord.dt_read(&bucket, &key, &props, query.r).await?;
    let obj = read.object;
    let Some(value) = read.value else {
        let mut resp = json_error(StatusCode::NOT_FOUND, "not found");
        if !obj.is_empty() {
            resp.headers_mut()
                .insert(CONTEXT_HEADER, context_header(&obj.context(), tag, keys));
        }
        return Ok(resp);
    };
    coord.slide(&bucket, &key, &obj);
    let ctx = context_header(&obj.context(), tag, keys);
    let body = DtValueBody::of(value, ctx.to_str().unwrap_or_default().to_string());
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    resp.headers_mut().insert(CONTEXT_HEADER, ctx);
    Ok(resp)
}

/// `POST /v1/dt/{bucket}/{key}`: applies one operation.
#[utoipa::path(
    post,
    path = "/v1/dt/{bucket}/{key}",
    tag = "datatypes",
    operation_id = "update_datatype",
    summary = "Apply an operation to a cart, counter or set",
    params(
        ("bucket" = String, Path, description = "The bucket (its `datatype` set), percent-encoded"),
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("w" = Option<String>, Query, description = "Write quorum: `one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a number 1..=n"),
        ("ttl" = Option<u64>, Query, description = "Expire the key this many seconds after the write"),
        ("x-causal-context" = Option<String>, Header, description = "The context token of a read of this key"),
    ),
    request_body(content = DtOpBody, content_type = "application/json",
        description = "One operation of the bucket's data type (up to 1 MiB)"),
    responses(
        (status = 204, description = "Applied",
            headers(("x-causal-context" = String, description = "The context after the write"))),
        (status = 400, description = "Malformed operation, request or context", body = ErrorBody),
        (status = 408, description = "The body did not arrive within `server.http_body_timeout_ms`", body = ErrorBody),
        (status = 409, description = "An operation of another data type, or a plain bucket", body = ErrorBody),
        (status = 413, description = "Bucket, key or operation over its limit", body = ErrorBody),
        (status = 503, description = "Fewer than `w` nodes could take the write, or the node is busy or not serving keys", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn update_datatype<E: Engine>(
    state: &AppState<E>,
    request: KeyRequest,
    kind: Datatype,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let bytes = super::body::read(&state.bodies, headers, body, OP_BYTES_MAX, "operation").await?;
    let op = parse_op(&bytes, kind)?;
    let write = Write {
        ctx: request.ctx.unwrap_or_default(),
        body: WriteBody::Dt(op),
        ttl_secs: request.query.ttl_secs,
    };
    let coord = &state.coordinator;
    let after = coord
        .dt_write(&request.bucket, &request.key, write, request.query.w)
        .await?;
    let keys = &coord.settings().context_keys;
    Ok(written(&after, request.tag, keys, usize::MAX))
}

/// The answer to a read of a data-type key: its value, tagged by type, and its context.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DtValueBody {
    /// A cart: items with a positive quantity.
    Cart {
        /// Item → quantity.
        items: BTreeMap<String, i64>,
        /// The context token (as the `X-Causal-Context` header).
        context: String,
    },
    /// A counter.
    Counter {
        /// Its value.
        value: i64,
        /// The context token (as the `X-Causal-Context` header).
        context: String,
    },
    /// A set.
    Set {
        /// The members, sorted.
        members: Vec<String>,
        /// The context token (as the `X-Causal-Context` header).
        context: String,
    },
}

impl DtValueBody {
    fn of(value: DtValue, context: String) -> DtValueBody {
        match value {
            DtValue::Cart(items) => DtValueBody::Cart { items, context },
            DtValue::Counter(value) => DtValueBody::Counter { value, context },
            DtValue::Set(members) => DtValueBody::Set { members, context },
        }
    }
}

/// One operation of `POST /v1/dt/{bucket}/{key}`, by data type (what [`parse_op`] accepts;
/// it parses by hand to tell a malformed operation, `400`, from one of another type, `409`).
// Its fields are read by the schema and the tests only: `parse_op` reads the body by hand.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
#[schema(title = "DtOp")]
pub enum DtOpBody {
    /// Cart: add `qty` of `item`; set: add `members`.
    Add {
        /// Cart: the item.
        item: Option<String>,
        /// Cart: how many (at least 1).
        #[schema(minimum = 1)]
        qty: Option<u64>,
        /// Set: the members to add.
        members: Option<Vec<String>>,
    },
    /// Cart: remove `item`; set: remove `members`.
    Remove {
        /// Cart: the item.
        item: Option<String>,
        /// Set: the members to remove.
        members: Option<Vec<String>>,
    },
    /// Cart: set the quantity of `item` to `qty`.
    Set {
        /// The item.
        item: String,
        /// Its quantity.
        qty: u64,
    },
    /// Counter: add `by` (negative to decrement).
    Incr {
        /// How much.
        by: i64,
    },
}

/// Parses one JSON operation for a `kind` bucket: unknown fields, missing or mistyped ones
/// are `400`; an operation of another data type is `409`.
pub(crate) fn parse_op(bytes: &[u8], kind: Datatype) -> Result<DtOp, Error> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::BadRequest(format!("the operation is not JSON: {e}")))?;
    let Value::Object(fields) = v else {
        return Err(Error::BadRequest(
            "the operation must be a JSON object".into(),
        ));
    };
    let bad = |m: String| Error::BadRequest(m);
    let op = fields
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing string field \"op\"".into()))?;
    let allowed: &[&str] = match (kind, op) {
        (Datatype::Cart, "add" | "set") => &["op", "item", "qty"],
        (Datatype::Cart, "remove") => &["op", "item"],
        (Datatype::Counter, "incr") => &["op", "by"],
        (Datatype::Set, "add" | "remove") => &["op", "members"],
        (_, "add" | "remove" | "set" | "incr") => {
            let other = match op {
                "incr" => "counter",
                "set" => "cart",
                _ if fields.contains_key("members") => "set",
                _ => "cart",
            };
            return Err(Error::Conflict(format!(
                "{op:?} of a {other} on a {kind} bucket"
            )));
        }
        _ => return Err(bad(format!("unknown op {op:?} for a {kind}"))),
    };
    if let Some(extra) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!("unknown field {extra:?} for a {kind} {op:?}")));
    }
    let string = |name: &str| -> Result<String, Error> {
        fields
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(format!("missing string field {name:?}")))
    };
    let op = match (kind, op) {
        (Datatype::Cart, "add") | (Datatype::Cart, "set") => {
            let item = string("item")?;
            let qty = fields
                .get("qty")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("\"qty\" must be a whole number".into()))?;
            match op {
                "add" => DtOp::CartAdd { item, qty },
                _ => DtOp::CartSet { item, qty },
            }
        }
        (Datatype::Cart, _) => DtOp::CartRemove {
            item: string("item")?,
        },
        (Datatype::Counter, _) => DtOp::CounterIncr {
            by: fields
                .get("by")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("\"by\" must be a whole number".into()))?,
        },
        (Datatype::Set, _) => {
            let members = fields
                .get("members")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("\"members\" must be an array of strings".into()))?
                .iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("\"members\" must be an array of strings".into()))?;
            match op {
                "add" => DtOp::SetAdd { members },
                _ => DtOp::SetRemove { members },
            }
        }
    };
    op.check(kind).map_err(|e| match e {
        datatypes::OpError::Malformed(m) => Error::BadRequest(m),
        e => Error::Conflict(e.to_string()),
    })?;
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_parse_and_refuse() {
        let p = |s: &str, k| parse_op(s.as_bytes(), k);
        assert_eq!(
            p(r#"{"op":"add","item":"sku","qty":2}"#, Datatype::Cart).expect("ok"),
            DtOp::CartAdd {
                item: "sku".into(),
                qty: 2
            }
        );
        assert_eq!(
            p(r#"{"op":"incr","by":-3}"#, Datatype::Counter).expect("ok"),
            DtOp::CounterIncr { by: -3 }
        );
        assert_eq!(
            p(r#"{"op":"remove","members":["a","b"]}"#, Datatype::Set).expect("ok"),
            DtOp::SetRemove {
                members: vec!["a".into(), "b".into()]
            }
        );
        for (body, kind) in [
            (r#"{"op":"add","item":"sku"}"#, Datatype::Cart),
            (r#"{"op":"add","item":"sku","qty":0}"#, Datatype::Cart),
            (r#"{"op":"add","item":"sku","qty":1,"x":1}"#, Datatype::Cart),
            (r#"{"op":"incr","by":1.5}"#, Datatype::Counter),
            (r#"{"op":"frobnicate"}"#, Datatype::Counter),
            (r#"[1]"#, Datatype::Set),
            (r#"{"op":"add","members":[1]}"#, Datatype::Set),
            ("not json", Datatype::Set),
        ] {
            assert!(matches!(p(body, kind), Err(Error::BadRequest(_))), "{body}");
        }
        for (body, kind) in [
            (r#"{"op":"incr","by":1}"#, Datatype::Cart),
            (r#"{"op":"add","members":["a"]}"#, Datatype::Counter),
            (r#"{"op":"set","item":"a","qty":1}"#, Datatype::Set),
        ] {
            assert!(matches!(p(body, kind), Err(Error::Conflict(_))), "{body}");
        }
    }

    #[test]
    fn the_documented_operation_reads_what_the_parser_accepts() {
        for (body, kind) in [
            (r#"{"op":"add","item":"sku","qty":2}"#, Datatype::Cart),
            (r#"{"op":"set","item":"sku","qty":0}"#, Datatype::Cart),
            (r#"{"op":"remove","item":"sku"}"#, Datatype::Cart),
            (r#"{"op":"incr","by":-3}"#, Datatype::Counter),
            (r#"{"op":"add","members":["a"]}"#, Datatype::Set),
            (r#"{"op":"remove","members":["a","b"]}"#, Datatype::Set),
        ] {
            assert!(parse_op(body.as_bytes(), kind).is_ok(), "{body}");
            serde_json::from_str::<DtOpBody>(body).expect(body);
        }
        assert!(serde_json::from_str::<DtOpBody>(r#"{"op":"frobnicate"}"#).is_err());
    }
}
