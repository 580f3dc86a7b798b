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
use serde_json::{json, Map, Value};
use yeskv_core::datatypes::{self, DtOp, DtValue};
use yeskv_core::keyspace::key_tag;
use yeskv_core::Datatype;
use yeskv_storage::Engine;

use super::kv::{context_header, key_response, parse_context, parse_kv_path, parse_query, written};
use super::{json_error, AppState, CONTEXT_HEADER};
use crate::coordinator::{Write, WriteBody};
use crate::error::Error;

/// Largest JSON operation accepted (a set operation of many members fits).
const OP_BYTES_MAX: usize = 1 << 20;

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
    state.keys_gate()?;
    let (bucket, key) = parse_kv_path(&uri, &state.limits)?;
    let query = parse_query(&uri, &method)?;
    if query.touch {
        return Err(Error::BadRequest(
            "touch a data-type key with POST /v1/kv/{bucket}/{key}?touch".into(),
        ));
    }
    let tag = key_tag(&bucket, &key);
    let keys = &state.coordinator.settings().context_keys;
    let ctx = parse_context(&headers, tag, keys)?;
    let coord = &state.coordinator;
    let props = coord.bucket_props(&bucket);
    let Some(kind) = props.datatype else {
        return Err(Error::Conflict(
            "a plain bucket: set its datatype with PUT /v1/buckets/{bucket}, or use /v1/kv".into(),
        ));
    };
    match method {
        Method::GET => {
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
            let mut body = render(&value);
            body.insert(
                "context".into(),
                Value::String(ctx.to_str().unwrap_or_default().to_string()),
            );
            let mut resp = (StatusCode::OK, axum::Json(Value::Object(body))).into_response();
            resp.headers_mut().insert(CONTEXT_HEADER, ctx);
            Ok(resp)
        }
        Method::POST => {
            let bytes =
                super::body::read(&state.bodies, &headers, body, OP_BYTES_MAX, "operation").await?;
            let op = parse_op(&bytes, kind)?;
            let write = Write {
                ctx: ctx.unwrap_or_default(),
                body: WriteBody::Dt(op),
                ttl_secs: query.ttl_secs,
            };
            let after = coord.dt_write(&bucket, &key, write, query.w).await?;
            Ok(written(&after, tag, keys, usize::MAX))
        }
        _ => Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET or POST on /v1/dt/{bucket}/{key}",
        )),
    }
}

/// The JSON of a value (without its context).
fn render(value: &DtValue) -> Map<String, Value> {
    let mut m = Map::new();
    match value {
        DtValue::Cart(items) => {
            m.insert("type".into(), json!("cart"));
            m.insert("items".into(), json!(items));
        }
        DtValue::Counter(v) => {
            m.insert("type".into(), json!("counter"));
            m.insert("value".into(), json!(v));
        }
        DtValue::Set(members) => {
            m.insert("type".into(), json!("set"));
            m.insert("members".into(), json!(members));
        }
    }
    m
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
}
