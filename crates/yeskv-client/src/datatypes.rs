//! Data types: carts, counters and sets that the server merges (`/v1/dt/{bucket}/{key}`).
//!
//! A bucket whose `datatype` is set ([`Client::set_bucket`]) holds one kind of value, and the
//! client sends *operations* instead of values: "add 2 of sku-1 to this cart", "add 5 to this
//! counter". The coordinator applies each to the key's state, a CRDT (`yeskv_core::datatypes`),
//! so concurrent operations from two devices both take effect and a read never answers siblings
//! (Dynamo §4.4 leaves the merge to the application; here the server owns it for these types).
//!
//! This module owns the typed handles ([`CartBucket`], [`CounterBucket`], [`SetBucket`], from
//! [`Client::cart`], [`Client::counter`], [`Client::set`]), the untyped calls under them
//! ([`Client::dt_apply`], [`Client::dt_read`]) and the pure parts: an operation's JSON
//! ([`op_json`]) and a read's parsing ([`DtRead::from_json`]). Requests go through the same
//! ring-aware routing and retries as key requests: an operation is a write (retried only when it
//! was certainly not sent, since applying an `add` twice adds twice), a read is a read.
//!
//! ## Removes and the causal context
//! A read returns a context ([`CartRead::context`], ...). A remove that sends it back removes
//! what that read saw of the item and nothing else: an add made concurrently on another device
//! survives ("add wins"). A remove without a context removes everything the coordinating node
//! holds of the item, which may include adds the user never saw.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::client::{check_names, Idempotence, RequestSpec};
use crate::path;
use crate::routing::{Access, Target};
use crate::{Client, Error, Quorum, ReadOptions, WriteOptions};
use yeskv_core::datatypes::OpError;
use yeskv_core::Datatype;

pub use yeskv_core::datatypes::DtOp;

/// What a data-type key holds, as the server shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtValue {
    /// A cart: item → quantity, only items with a positive quantity.
    Cart(BTreeMap<String, u64>),
    /// A counter's value.
    Counter(i64),
    /// A set's members, sorted.
    Set(Vec<String>),
}

impl DtValue {
    /// The data type of the value.
    pub fn datatype(&self) -> Datatype {
        match self {
            DtValue::Cart(_) => Datatype::Cart,
            DtValue::Counter(_) => Datatype::Counter,
            DtValue::Set(_) => Datatype::Set,
        }
    }
}

/// A read of a data-type key: its value and the causal context to send with a remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtRead {
    /// The opaque causal context token (`X-Causal-Context`).
    pub context: String,
    /// The merged value.
    pub value: DtValue,
}

impl DtRead {
    /// Parses the server's JSON form of a read: `{"type": "cart", "items": {I: N}, "context":
    /// C}`, `{"type": "counter", "value": N, "context": C}` or `{"type": "set", "members": [..],
    /// "context": C}`.
    pub fn from_json(body: &[u8]) -> Result<DtRead, Error> {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "lowercase")]
        enum Wire {
            Cart {
                items: BTreeMap<String, u64>,
                #[serde(default)]
                context: String,
            },
            Counter {
                value: i64,
                #[serde(default)]
                context: String,
            },
            Set {
                members: Vec<String>,
                #[serde(default)]
                context: String,
            },
        }
        let wire: Wire = serde_json::from_slice(body).map_err(|error| {
            Error::InvalidResponse(format!("data type read is not valid: {error}"))
        })?;
        Ok(match wire {
            Wire::Cart { items, context } => DtRead {
                context,
                value: DtValue::Cart(items),
            },
            Wire::Counter { value, context } => DtRead {
                context,
                value: DtValue::Counter(value),
            },
            Wire::Set { members, context } => DtRead {
                context,
                value: DtValue::Set(members),
            },
        })
    }

    /// The server's JSON form of this read (see [`DtRead::from_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = match &self.value {
            DtValue::Cart(items) => json!({"type": "cart", "items": items}),
            DtValue::Counter(value) => json!({"type": "counter", "value": value}),
            DtValue::Set(members) => json!({"type": "set", "members": members}),
        };
        body["context"] = self.context.clone().into();
        body
    }

    /// The read as a cart, or [`Error::WrongDatatype`].
    pub fn into_cart(self) -> Result<CartRead, Error> {
        match self.value {
            DtValue::Cart(items) => Ok(CartRead {
                items,
                context: self.context,
            }),
            other => Err(wrong_datatype(Datatype::Cart, &other)),
        }
    }

    /// The read as a counter, or [`Error::WrongDatatype`].
    pub fn into_counter(self) -> Result<CounterRead, Error> {
        match self.value {
            DtValue::Counter(value) => Ok(CounterRead {
                value,
                context: self.context,
            }),
            other => Err(wrong_datatype(Datatype::Counter, &other)),
        }
    }

    /// The read as a set, or [`Error::WrongDatatype`].
    pub fn into_set(self) -> Result<SetRead, Error> {
        match self.value {
            DtValue::Set(members) => Ok(SetRead {
                members,
                context: self.context,
            }),
            other => Err(wrong_datatype(Datatype::Set, &other)),
        }
    }
}

fn wrong_datatype(expected: Datatype, found: &DtValue) -> Error {
    Error::WrongDatatype {
        expected,
        found: found.datatype(),
    }
}

/// A cart as read: item → quantity (items with a positive quantity only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CartRead {
    /// Items and their quantities, sorted by item.
    pub items: BTreeMap<String, u64>,
    /// The causal context: pass it to [`CartBucket::remove`] to remove what this read saw.
    pub context: String,
}

/// A counter as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterRead {
    /// The counter's value.
    pub value: i64,
    /// The causal context of the read.
    pub context: String,
}

/// A set as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetRead {
    /// The members, sorted.
    pub members: Vec<String>,
    /// The causal context: pass it to [`SetBucket::remove`] to remove what this read saw.
    pub context: String,
}

/// The JSON body of `op` (`POST /v1/dt/{bucket}/{key}`).
pub fn op_json(op: &DtOp) -> serde_json::Value {
    match op {
        DtOp::CartAdd { item, qty } => json!({"op": "add", "item": item, "qty": qty}),
        DtOp::CartRemove { item } => json!({"op": "remove", "item": item}),
        DtOp::CartSet { item, qty } => json!({"op": "set", "item": item, "qty": qty}),
        DtOp::CounterIncr { by } => json!({"op": "incr", "by": by}),
        DtOp::SetAdd { members } => json!({"op": "add", "members": members}),
        DtOp::SetRemove { members } => json!({"op": "remove", "members": members}),
    }
}

/// Checks `op`'s fields with the server's own rules (item names, quantities, member counts), so
/// that a malformed operation fails before anything is sent.
fn check_op(op: &DtOp) -> Result<(), Error> {
    op.check(op.datatype()).map_err(|error| match error {
        OpError::Malformed(reason) => Error::InvalidArgument(reason),
        // The operation is checked against its own type: this cannot happen, but say so.
        other => Error::InvalidArgument(other.to_string()),
    })
}

impl Client {
    /// A handle on the cart bucket `bucket` (its `datatype` must be `cart`).
    pub fn cart(&self, bucket: impl AsRef<[u8]>) -> CartBucket {
        CartBucket {
            handle: Handle::new(self, bucket.as_ref()),
        }
    }

    /// A handle on the counter bucket `bucket` (its `datatype` must be `counter`).
    pub fn counter(&self, bucket: impl AsRef<[u8]>) -> CounterBucket {
        CounterBucket {
            handle: Handle::new(self, bucket.as_ref()),
        }
    }

    /// A handle on the set bucket `bucket` (its `datatype` must be `set`).
    pub fn set(&self, bucket: impl AsRef<[u8]>) -> SetBucket {
        SetBucket {
            handle: Handle::new(self, bucket.as_ref()),
        }
    }

    /// Applies one operation to a data-type key and returns the key's new causal context.
    /// [`WriteOptions::context`] matters for removes (see the module docs); `w` and `ttl_secs`
    /// as for [`Client::put`]. The server answers 409 ([`Error::is_conflict`]) when the bucket
    /// holds another data type or is plain.
    pub async fn dt_apply(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        op: &DtOp,
        options: &WriteOptions,
    ) -> Result<String, Error> {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        check_names(bucket, key)?;
        check_op(op)?;
        let path = path::dt_path(bucket, key, options.w.map(|w| ("w", w)), options.ttl_secs);
        let body = Bytes::from(op_json(op).to_string());
        let response = self
            .execute(
                Target::Key {
                    bucket,
                    key,
                    access: Access::Write,
                },
                RequestSpec {
                    method: Method::POST,
                    path_and_query: Bytes::from(path),
                    context: options.context.as_deref().filter(|c| !c.is_empty()),
                    accept_json: true,
                    body: Some(body),
                    json_body: true,
                    idempotence: Idempotence::NotIdempotent,
                    timeout: None,
                },
            )
            .await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        response.context()?.ok_or_else(|| {
            Error::InvalidResponse(format!(
                "{} to a data type operation without an X-Causal-Context header",
                response.status
            ))
        })
    }

    /// Reads a data-type key, whatever its type; `Ok(None)` when it was never written.
    pub async fn dt_read(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        options: &ReadOptions,
    ) -> Result<Option<DtRead>, Error> {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        check_names(bucket, key)?;
        let path = path::dt_path(bucket, key, options.r.map(|r| ("r", r)), None);
        let response = self
            .execute(
                Target::Key {
                    bucket,
                    key,
                    access: Access::Read,
                },
                RequestSpec {
                    method: Method::GET,
                    path_and_query: Bytes::from(path),
                    context: None,
                    accept_json: true,
                    body: None,
                    json_body: false,
                    idempotence: Idempotence::Idempotent,
                    timeout: None,
                },
            )
            .await?;
        match response.status {
            StatusCode::OK => DtRead::from_json(&response.body).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(response.into_error()),
        }
    }
}

/// Per-handle request options: the quorums and the TTL every request of the handle carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DtOptions {
    /// Replicas that must answer a read (`None`: the server's default).
    pub r: Option<Quorum>,
    /// Replicas that must acknowledge an operation (`None`: the server's default).
    pub w: Option<Quorum>,
    /// Expiry of the key after each operation, in seconds (`None`: the bucket's `ttl_secs`).
    pub ttl_secs: Option<u64>,
}

/// What the three handles share: a client, a bucket and the options.
#[derive(Clone, Debug)]
struct Handle {
    client: Client,
    bucket: Bytes,
    options: DtOptions,
}

impl Handle {
    fn new(client: &Client, bucket: &[u8]) -> Handle {
        Handle {
            client: client.clone(),
            bucket: Bytes::copy_from_slice(bucket),
            options: DtOptions::default(),
        }
    }

    async fn apply(&self, key: &[u8], op: DtOp, context: Option<&str>) -> Result<String, Error> {
        let options = WriteOptions {
            context: context.map(str::to_string),
            w: self.options.w,
            ttl_secs: self.options.ttl_secs,
        };
        self.client.dt_apply(&self.bucket, key, &op, &options).await
    }

    async fn read(&self, key: &[u8]) -> Result<Option<DtRead>, Error> {
        let options = ReadOptions { r: self.options.r };
        self.client.dt_read(&self.bucket, key, &options).await
    }
}

/// The option setters every handle has.
macro_rules! handle_options {
    ($handle:ident) => {
        impl $handle {
            /// The bucket this handle works on.
            pub fn bucket(&self) -> &[u8] {
                &self.handle.bucket
            }

            /// The options its requests carry.
            pub fn options(&self) -> &DtOptions {
                &self.handle.options
            }

            /// Reads with this `r`.
            pub fn r(mut self, r: Quorum) -> Self {
                self.handle.options.r = Some(r);
                self
            }

            /// Applies operations with this `w`.
            pub fn w(mut self, w: Quorum) -> Self {
                self.handle.options.w = Some(w);
                self
            }

            /// Makes each operation set the key's expiry to `ttl_secs` from then (instead of
            /// the bucket's `ttl_secs`).
            pub fn ttl_secs(mut self, ttl_secs: u64) -> Self {
                self.handle.options.ttl_secs = Some(ttl_secs);
                self
            }
        }
    };
}

/// A cart bucket: each key is an add-wins map of item → quantity (`Client::cart`).
///
/// Two devices adding the same item concurrently both count (the quantities add up); a remove
/// removes what its context saw, so an add it did not see survives.
#[derive(Clone, Debug)]
pub struct CartBucket {
    handle: Handle,
}

handle_options!(CartBucket);

impl CartBucket {
    /// Adds `qty` (at least 1) of `item` to the cart `key`; returns the new context.
    pub async fn add(
        &self,
        key: impl AsRef<[u8]>,
        item: impl Into<String>,
        qty: u64,
    ) -> Result<String, Error> {
        let op = DtOp::CartAdd {
            item: item.into(),
            qty,
        };
        self.handle.apply(key.as_ref(), op, None).await
    }

    /// Removes `item` from the cart `key`: what `context` (from [`CartBucket::get`]) saw of it,
    /// or with `None` everything the coordinating node holds of it.
    pub async fn remove(
        &self,
        key: impl AsRef<[u8]>,
        item: impl Into<String>,
        context: Option<&str>,
    ) -> Result<String, Error> {
        let op = DtOp::CartRemove { item: item.into() };
        self.handle.apply(key.as_ref(), op, context).await
    }

    /// Sets `item`'s quantity (0 removes it): removes what the coordinating node holds of the
    /// item and adds `qty`. A concurrent `set_qty` on another device is not overwritten: both
    /// quantities count, as for two adds.
    pub async fn set_qty(
        &self,
        key: impl AsRef<[u8]>,
        item: impl Into<String>,
        qty: u64,
    ) -> Result<String, Error> {
        let op = DtOp::CartSet {
            item: item.into(),
            qty,
        };
        self.handle.apply(key.as_ref(), op, None).await
    }

    /// Reads the cart `key`; `None` if it was never written (an emptied cart reads as empty).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<CartRead>, Error> {
        self.handle
            .read(key.as_ref())
            .await?
            .map(DtRead::into_cart)
            .transpose()
    }
}

/// A counter bucket: each key is a counter that goes up and down (`Client::counter`).
#[derive(Clone, Debug)]
pub struct CounterBucket {
    handle: Handle,
}

handle_options!(CounterBucket);

impl CounterBucket {
    /// Adds `by` (negative to decrement) to the counter `key`; returns the new context.
    pub async fn incr(&self, key: impl AsRef<[u8]>, by: i64) -> Result<String, Error> {
        self.handle
            .apply(key.as_ref(), DtOp::CounterIncr { by }, None)
            .await
    }

    /// Reads the counter `key`; `None` if it was never written.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<CounterRead>, Error> {
        self.handle
            .read(key.as_ref())
            .await?
            .map(DtRead::into_counter)
            .transpose()
    }
}

/// A set bucket: each key is an add-wins set of strings (`Client::set`).
#[derive(Clone, Debug)]
pub struct SetBucket {
    handle: Handle,
}

handle_options!(SetBucket);

impl SetBucket {
    /// Adds `members` (at least one) to the set `key`; returns the new context.
    pub async fn add<I, S>(&self, key: impl AsRef<[u8]>, members: I) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let op = DtOp::SetAdd {
            members: members.into_iter().map(Into::into).collect(),
        };
        self.handle.apply(key.as_ref(), op, None).await
    }

    /// Removes `members` from the set `key`: what `context` (from [`SetBucket::members`]) saw
    /// of them, or with `None` everything the coordinating node holds of them.
    pub async fn remove<I, S>(
        &self,
        key: impl AsRef<[u8]>,
        members: I,
        context: Option<&str>,
    ) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let op = DtOp::SetRemove {
            members: members.into_iter().map(Into::into).collect(),
        };
        self.handle.apply(key.as_ref(), op, context).await
    }

    /// Reads the set `key`; `None` if it was never written.
    pub async fn members(&self, key: impl AsRef<[u8]>) -> Result<Option<SetRead>, Error> {
        self.handle
            .read(key.as_ref())
            .await?
            .map(DtRead::into_set)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_have_the_server_s_json_form() {
        let cases = [
            (
                DtOp::CartAdd {
                    item: "sku-1".into(),
                    qty: 2,
                },
                r#"{"item":"sku-1","op":"add","qty":2}"#,
            ),
            (
                DtOp::CartRemove {
                    item: "sku-1".into(),
                },
                r#"{"item":"sku-1","op":"remove"}"#,
            ),
            (
                DtOp::CartSet {
                    item: "sku-1".into(),
                    qty: 0,
                },
                r#"{"item":"sku-1","op":"set","qty":0}"#,
            ),
            (DtOp::CounterIncr { by: -3 }, r#"{"by":-3,"op":"incr"}"#),
            (
                DtOp::SetAdd {
                    members: vec!["a".into(), "b".into()],
                },
                r#"{"members":["a","b"],"op":"add"}"#,
            ),
            (
                DtOp::SetRemove {
                    members: vec!["a".into()],
                },
                r#"{"members":["a"],"op":"remove"}"#,
            ),
        ];
        for (op, expected) in cases {
            let expected: serde_json::Value = serde_json::from_str(expected).expect("JSON");
            assert_eq!(op_json(&op), expected);
            assert!(check_op(&op).is_ok(), "{op:?}");
        }
    }

    #[test]
    fn malformed_operations_are_refused_before_sending() {
        for op in [
            DtOp::CartAdd {
                item: "sku".into(),
                qty: 0,
            },
            DtOp::CartAdd {
                item: String::new(),
                qty: 1,
            },
            DtOp::CartRemove {
                item: "x".repeat(513),
            },
            DtOp::SetAdd {
                members: Vec::new(),
            },
            DtOp::SetRemove {
                members: vec![String::new()],
            },
        ] {
            assert!(
                matches!(check_op(&op), Err(Error::InvalidArgument(_))),
                "{op:?}"
            );
        }
    }

    #[test]
    fn reads_parse_every_type() {
        let cart = DtRead::from_json(br#"{"type":"cart","items":{"a":2,"b":1},"context":"c1"}"#)
            .expect("valid");
        assert_eq!(cart.context, "c1");
        let cart = cart.into_cart().expect("a cart");
        assert_eq!(cart.items.get("a"), Some(&2));
        assert_eq!(cart.items.len(), 2);

        let counter = DtRead::from_json(br#"{"type":"counter","value":-7,"context":"c2"}"#)
            .expect("valid")
            .into_counter()
            .expect("a counter");
        assert_eq!((counter.value, counter.context.as_str()), (-7, "c2"));

        let set = DtRead::from_json(br#"{"type":"set","members":["x","y"],"context":"c3"}"#)
            .expect("valid")
            .into_set()
            .expect("a set");
        assert_eq!(set.members, ["x", "y"]);

        for body in [
            &br#"{"type":"cart","items":{"a":2},"context":"c1"}"#[..],
            br#"{"type":"counter","value":-7,"context":"c2"}"#,
            br#"{"type":"set","members":["x"],"context":"c3"}"#,
        ] {
            let read = DtRead::from_json(body).expect("valid");
            let json = read.to_json();
            let expected: serde_json::Value = serde_json::from_slice(body).expect("JSON");
            assert_eq!(json, expected);
            assert_eq!(DtRead::from_json(json.to_string().as_bytes()), Ok(read));
        }
    }

    #[test]
    fn reads_of_another_type_or_shape_are_errors() {
        let counter =
            DtRead::from_json(br#"{"type":"counter","value":1,"context":"c"}"#).expect("valid");
        assert_eq!(
            counter.into_cart(),
            Err(Error::WrongDatatype {
                expected: Datatype::Cart,
                found: Datatype::Counter
            })
        );
        for body in [
            &br#"{"type":"map","entries":{}}"#[..],
            br#"{"type":"cart","items":{"a":-1}}"#,
            br#"{"items":{}}"#,
            b"not json",
        ] {
            assert!(
                matches!(DtRead::from_json(body), Err(Error::InvalidResponse(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
