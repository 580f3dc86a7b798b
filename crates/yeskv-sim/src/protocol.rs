//! The simulator's client protocol: the one thing the simulated clients ask a node, and what the
//! node answers. It stands in for the HTTP API (axum does not run on turmoil's sockets) and is
//! served by [`serve_client`], which calls the [`Coordinator`] exactly as
//! `yeskv_node::api` does for `GET`/`PUT`/`DELETE /v1/kv/{bucket}/{key}`: quorums parsed from
//! their names, the causal context token decoded against the key's tag, a `DELETE` refused
//! without a context, visible siblings at the coordinator's clock, and errors mapped to the same
//! HTTP statuses (`Error::status`). Messages ride `yeskv-rpc` (postcard in CRC frames), so a
//! client request crosses the simulated network like any other.

use serde::{Deserialize, Serialize};
use yeskv_core::codec::{decode_token, encode_token};
use yeskv_core::keyspace::key_tag;
use yeskv_core::Quorum;
use yeskv_node::coordinator::Coordinator;
use yeskv_node::Error;

use crate::node::NodeEngine;

/// The bucket every simulated key lives in.
pub const BUCKET: &[u8] = b"sim";

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
    /// A write or delete reached its quorum; the client's new context.
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

/// Answers one client request with the node's coordinator (see the module docs).
pub async fn serve_client(c: &Coordinator<NodeEngine>, request: ClientRequest) -> ClientResponse {
    match request {
        ClientRequest::Get { key, r } => {
            let r = match quorum(&r) {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
            match c.get(BUCKET, key.as_bytes(), r).await {
                Ok(obj) => {
                    let now = c.now_ms();
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
                        encode_token(&obj.context(), tag)
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
        } => {
            let w = match quorum(&w) {
                Ok(w) => w,
                Err(e) => return refused(e),
            };
            let tag = key_tag(BUCKET, key.as_bytes());
            let ctx = if context.is_empty() {
                None
            } else {
                match decode_token(&context, tag) {
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
                    None,
                    w,
                )
                .await
            {
                Ok(after) => ClientResponse::Written {
                    context: encode_token(&after, tag),
                },
                Err(e) => refused(e),
            }
        }
    }
}
