//! The simulator's client protocol: what the simulated clients ask a node, and what the node
//! answers. It stands in for the HTTP API (axum does not run on turmoil's sockets) and is
//! served by [`serve_client`], which calls the [`Coordinator`] exactly as `yeskv_node::api`
//! does, one request per HTTP request:
//!
//! - `GET`/`PUT`/`DELETE /v1/kv/{bucket}/{key}` (`api/kv.rs`): quorums parsed from their
//!   names, the causal context token decoded against the key's tag, a `DELETE` refused without
//!   a context, a `PUT`'s `?ttl=` passed to the coordinator, visible siblings at the
//!   coordinator's clock;
//! - `GET`/`POST /v1/dt/{bucket}/{key}` (`api/dt.rs`): refused with `409` on a bucket without a
//!   data type, the operation checked against the bucket's (`400` malformed, `409` another
//!   type), written with [`Coordinator::dt_write`] (the context token, if any, is what a remove
//!   removes), read with [`Coordinator::dt_read`] and the key's expiry slid as the API does; a
//!   key without a value is the API's `404`, here a read with `found = false`. The operation
//!   travels as a [`DtOp`] rather than the API's JSON (its parsing is `api/dt.rs`'s own);
//!
//! and errors mapped to the same HTTP statuses (`Error::status`). Messages ride `yeskv-rpc`
//! (postcard in CRC frames), so a client request crosses the simulated network like any other.

use serde::{Deserialize, Serialize};
use yeskv_core::codec::{decode_token, encode_token};
use yeskv_core::datatypes::{DtOp, DtValue, OpError};
use yeskv_core::keyspace::key_tag;
use yeskv_core::{CausalContext, Quorum};
use yeskv_node::coordinator::{Coordinator, Write, WriteBody};
use yeskv_node::Error;

use crate::node::NodeEngine;
use crate::Bug;

/// The bucket of the register and (client-side) cart keys: plain.
pub const BUCKET: &[u8] = b"sim";

/// The bucket of the server-side cart keys: its data type is `cart`, set at the start of every
/// run (`crate::topology::LayoutCell::set_bucket`).
pub const DT_BUCKET: &[u8] = b"simdt";

/// A client's request to a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientRequest {
    /// `GET /v1/kv/sim/{key}?r={r}`.
    Get {
        /// The key.
        key: String,
        /// The read quorum by name (`one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a
        /// number); empty: none given, the node's default (`local_quorum` with regions).
        r: String,
    },
    /// `PUT` (with a value) or `DELETE` (without) `/v1/kv/sim/{key}?w={w}`.
    Put {
        /// The key.
        key: String,
        /// The causal context token of a read (empty: none, a blind write).
        context: String,
        /// The value; `None` is a delete.
        value: Option<String>,
        /// The write quorum by name; empty: the node's default.
        w: String,
        /// `?ttl=`: the value expires this many seconds after the write.
        ttl_secs: Option<u64>,
    },
    /// `GET /v1/dt/simdt/{key}?r={r}`.
    DtGet {
        /// The key.
        key: String,
        /// The read quorum by name; empty: the node's default.
        r: String,
    },
    /// `POST /v1/dt/simdt/{key}?w={w}` with one operation and `X-Causal-Context` if any.
    DtPost {
        /// The key.
        key: String,
        /// The causal context token of a read (empty: none).
        context: String,
        /// The operation.
        op: DtOp,
        /// The write quorum by name; empty: the node's default.
        w: String,
    },
}

/// A node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClientResponse {
    /// A read's visible siblings: the values (tombstones left out, like the API's `404` for
    /// "only tombstones") and the context token (empty when the key was never written).
    Read {
        /// Sibling values, in the object's (dot) order.
        values: Vec<String>,
        /// Visible tombstone siblings.
        tombstones: usize,
        /// The context token covering every sibling.
        context: String,
    },
    /// A data-type read: the cart's items (`GET /v1/dt`'s `items`) and the context token.
    DtRead {
        /// Whether the key holds a value (`false`: the API's `404`).
        found: bool,
        /// Items with their (positive) quantities, by name.
        items: Vec<(String, i64)>,
        /// The context token (empty when the key was never written).
        context: String,
    },
    /// A write, delete or data-type operation reached its quorum; the client's new context.
    Written {
        /// The context token after the write.
        context: String,
    },
    /// The node refused or failed the request, with the HTTP status the API would answer.
    Refused {
        /// `4xx`: definitely not applied; `5xx`: may or may not have been applied.
        status: u16,
        /// The error message.
        message: String,
    },
}

fn refused(e: Error) -> ClientResponse {
    ClientResponse::Refused {
        status: e.status().as_u16(),
        message: e.to_string(),
    }
}

/// A quorum by name; an empty name is none given (the API without `r`/`w`: the default).
fn quorum(name: &str) -> Result<Option<Quorum>, Error> {
    if name.is_empty() {
        return Ok(None);
    }
    name.parse::<Quorum>()
        .map(Some)
        .map_err(|e| Error::BadRequest(e.to_string()))
}

/// `/v1/kv` refuses a bucket with a data type (`409`).
fn plain(c: &Coordinator<NodeEngine>) -> Result<(), Error> {
    match c.bucket_props(BUCKET).datatype {
        None => Ok(()),
        Some(kind) => Err(Error::Conflict(format!(
            "the bucket holds {kind}s: use /v1/dt/{{bucket}}/{{key}}"
        ))),
    }
}

/// The keys the simulated cluster signs context tokens with (its nodes' settings use them too).
pub(crate) fn context_keys() -> yeskv_core::keyring::Subkeys {
    yeskv_core::keyring::Keyring::unkeyed("yeskv-sim")
        .derive(yeskv_core::keyring::Purpose::Contexts)
}

/// The context token of a request (`None` for an empty one), checked against the key's tag.
fn context_of(token: &str, bucket: &[u8], key: &str) -> Result<Option<CausalContext>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    decode_token(token, key_tag(bucket, key.as_bytes()), &context_keys())
        .map(Some)
        .map_err(Error::InvalidContext)
}

/// `GET /v1/dt/simdt/{key}` (`api/dt.rs`).
async fn dt_get(c: &Coordinator<NodeEngine>, key: &str, r: &str) -> Result<ClientResponse, Error> {
    let r = quorum(r)?;
    let props = c.bucket_props(DT_BUCKET);
    if props.datatype.is_none() {
        return Err(Error::Conflict("a plain bucket".into()));
    }
    let read = c.dt_read(DT_BUCKET, key.as_bytes(), &props, r).await?;
    let obj = read.object;
    let context = if obj.is_empty() {
        String::new()
    } else {
        encode_token(
            &obj.context(),
            key_tag(DT_BUCKET, key.as_bytes()),
            &context_keys(),
        )
    };
    let Some(value) = read.value else {
        return Ok(ClientResponse::DtRead {
            found: false,
            items: Vec::new(),
            context,
        });
    };
    c.slide(DT_BUCKET, key.as_bytes(), &obj);
    let items = match value {
        DtValue::Cart(items) => items.into_iter().collect(),
        other => {
            return Err(Error::Conflict(format!(
                "the simulator's data-type bucket holds a {other:?}"
            )))
        }
    };
    Ok(ClientResponse::DtRead {
        found: true,
        items,
        context,
    })
}

/// `POST /v1/dt/simdt/{key}` (`api/dt.rs`).
async fn dt_post(
    c: &Coordinator<NodeEngine>,
    key: &str,
    context: &str,
    op: DtOp,
    w: &str,
) -> Result<ClientResponse, Error> {
    let w = quorum(w)?;
    let ctx = context_of(context, DT_BUCKET, key)?;
    let Some(kind) = c.bucket_props(DT_BUCKET).datatype else {
        return Err(Error::Conflict("a plain bucket".into()));
    };
    op.check(kind).map_err(|e| match e {
        OpError::Malformed(m) => Error::BadRequest(m),
        e => Error::Conflict(e.to_string()),
    })?;
    let write = Write {
        ctx: ctx.unwrap_or_default(),
        body: WriteBody::Dt(op),
        ttl_secs: None,
    };
    let after = c.dt_write(DT_BUCKET, key.as_bytes(), write, w).await?;
    Ok(ClientResponse::Written {
        context: encode_token(
            &after.ctx,
            key_tag(DT_BUCKET, key.as_bytes()),
            &context_keys(),
        ),
    })
}

/// Answers one client request with the node's coordinator (see the module docs), with the
/// node's planted `bug` if it has one: [`Bug::IgnoreTtl`] drops a write's TTL,
/// [`Bug::SkipRemove`] acknowledges a server-side cart remove without applying it.
pub async fn serve_client(
    c: &Coordinator<NodeEngine>,
    request: ClientRequest,
    bug: Option<Bug>,
) -> ClientResponse {
    match request {
        ClientRequest::DtGet { key, r } => dt_get(c, &key, &r).await.unwrap_or_else(refused),
        ClientRequest::DtPost {
            op: DtOp::CartRemove { .. },
            ..
        } if bug == Some(Bug::SkipRemove) => ClientResponse::Written {
            context: String::new(),
        },
        ClientRequest::DtPost {
            key,
            context,
            op,
            w,
        } => dt_post(c, &key, &context, op, &w)
            .await
            .unwrap_or_else(refused),
        ClientRequest::Get { key, r } => {
            let r = match quorum(&r) {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
            if let Err(e) = plain(c) {
                return refused(e);
            }
            match c.get(BUCKET, key.as_bytes(), r).await {
                Ok(obj) => {
                    let now = c.now_ms();
                    c.slide(BUCKET, key.as_bytes(), &obj);
                    let tag = key_tag(BUCKET, key.as_bytes());
                    let mut values = Vec::new();
                    let mut tombstones = 0;
                    for sibling in obj.visible(now) {
                        match &sibling.version.value {
                            Some(v) => values.push(String::from_utf8_lossy(v).into_owned()),
                            None => tombstones += 1,
                        }
                    }
                    let context = if obj.is_empty() {
                        String::new()
                    } else {
                        encode_token(&obj.context(), tag, &context_keys())
                    };
                    ClientResponse::Read {
                        values,
                        tombstones,
                        context,
                    }
                }
                Err(e) => refused(e),
            }
        }
        ClientRequest::Put {
            key,
            context,
            value,
            w,
            ttl_secs,
        } => {
            let ttl_secs = ttl_secs.filter(|_| bug != Some(Bug::IgnoreTtl));
            let w = match quorum(&w) {
                Ok(w) => w,
                Err(e) => return refused(e),
            };
            if let Err(e) = plain(c) {
                return refused(e);
            }
            let tag = key_tag(BUCKET, key.as_bytes());
            let ctx = if context.is_empty() {
                None
            } else {
                match decode_token(&context, tag, &context_keys()) {
                    Ok(ctx) => Some(ctx),
                    Err(e) => return refused(Error::InvalidContext(e)),
                }
            };
            if value.is_none() && ctx.is_none() {
                return refused(Error::ContextRequired);
            }
            let value = value.map(String::into_bytes);
            match c
                .put(
                    BUCKET,
                    key.as_bytes(),
                    ctx.unwrap_or_default(),
                    value,
                    ttl_secs,
                    w,
                )
                .await
            {
                Ok(after) => ClientResponse::Written {
                    context: encode_token(&after, tag, &context_keys()),
                },
                Err(e) => refused(e),
            }
        }
    }
}
