//! # yeskv-client: the async Rust SDK for yeskv
//!
//! A [`Client`] talks to one or more yeskv nodes over the HTTP API (`docs`: the external contract
//! in `spec/interface.md`): [`Client::get`] / [`Client::read`], [`Client::put`],
//! [`Client::delete`], [`Client::update`] (read-modify-write), sessions
//! ([`Client::put_with_ttl`], [`Client::touch`]), data types ([`Client::cart`],
//! [`Client::counter`], [`Client::set`]), bucket properties ([`Client::bucket`],
//! [`Client::set_bucket`]), plus [`Client::status`], [`Client::ring`] and [`Client::health`].
//!
//! ## Causal contexts and siblings
//! yeskv is a Dynamo-style store: concurrent writes are all kept, as *siblings*. Every read
//! returns an opaque causal context token ([`Read::context`]); a write that sends it back
//! ([`WriteOptions::context`]) supersedes exactly the versions that read saw. A write without a
//! context (a *blind* write) supersedes nothing and becomes a sibling of whatever is there, so
//! code that updates a key should read it, merge the siblings, and write with the read's context
//! (see [`Client::put`]). A put returns the context of the new version, so a client that keeps
//! writing the same key can chain contexts without reading again.
//!
//! ## Data types and sessions
//! A bucket can hold server-merged data types instead of opaque values: set its `datatype`
//! ([`Client::set_bucket`]) and send operations through a typed handle. Concurrent operations
//! merge on the server (a cart's concurrent adds both count; a remove removes only what the
//! context it carries saw), so these reads never have siblings. A bucket's `ttl_secs` makes
//! every write expire; with `ttl_sliding` every read extends the expiry, and
//! [`Client::touch`] extends it without a read.
//!
//! ```no_run
//! # async fn example() -> Result<(), yeskv_client::Error> {
//! use yeskv_client::{BucketProps, Client, Datatype};
//!
//! let client = Client::builder().node("http://127.0.0.1:8081").build()?;
//! client
//!     .set_bucket("carts", &BucketProps { datatype: Some(Datatype::Cart), ..Default::default() })
//!     .await?;
//! let carts = client.cart("carts");
//! carts.add("alice", "sku-1", 2).await?;
//! if let Some(cart) = carts.get("alice").await? {
//!     // Removes what this read saw of sku-1; an add made meanwhile elsewhere survives.
//!     carts.remove("alice", "sku-1", Some(&cart.context)).await?;
//! }
//! client.counter("views").incr("page-1", 1).await?;
//! client.put_with_ttl("sessions", "s1", "state".into(), 1800).await?;
//! client.touch("sessions", "s1", Some(1800)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Performance
//! The client is built on hyper's pooled HTTP/1.1 client: connections are kept alive and reused
//! (up to [`ClientBuilder::pool_max_idle_per_host`] idle ones per node), `TCP_NODELAY` is set,
//! and a request costs a few small allocations (its path, its headers). [`Client`] is a cheap
//! handle (one `Arc`); clone it into every task rather than building one per task.
//!
//! ## Routing: ring-aware by default
//! Any yeskv node coordinates any key, forwarding to the key's replicas. A client built with
//! [`Client::with_nodes`] or [`Client::builder`] saves that hop (Dynamo §4.5, a
//! "partition-aware client library"): the first key request fetches the layout from a seed
//! (`GET /v1/ring`, parsed into a [`Ring`]), and from then on the client hashes each key itself
//! and sends the request to a node of the key's preference list: writes to the first node that
//! is not cooling down after a refused connection, reads too or spread over the live primaries
//! ([`ClientBuilder::read_routing`]). Node-level requests ([`Client::status`], ...) go
//! round-robin. The other nodes' URLs come from the ring (`nodes[].http`), so a few seeds are
//! enough to reach a whole cluster.
//!
//! The cached ring is refreshed in the background, one fetch at a time, while requests keep
//! using the old one: when a response's `X-Yeskv-Layout-Version` header ([`LAYOUT_VERSION_HEADER`])
//! is newer than the cached ring, every [`ClientBuilder::ring_refresh_interval`] (on use: an idle
//! client fetches nothing), and after a few consecutive failed attempts. A server that has no
//! usable ring (an older server, or one hashing keys in a way this client does not implement:
//! see [`Client::ring_error`]) is talked to round-robin, as is every server with
//! [`ClientBuilder::ring_aware`]`(false)`; [`Client::new`] talks to its one node only.
//!
//! ## Retries
//! A request that could not even connect goes to the next node: for a ring-routed request the
//! next node of the key's preference list, without counting as a retry (the request was never
//! sent, so this is safe for writes too); otherwise the next node in order, at most
//! [`ClientBuilder::retries`] times. A read is also retried after timeouts and "overloaded"
//! statuses. Every attempt has its own timeout ([`ClientBuilder::timeout`], 10 s by default).
//!
//! ```no_run
//! # async fn example() -> Result<(), yeskv_client::Error> {
//! use yeskv_client::{Client, ReadOptions, WriteOptions};
//!
//! // Ring-aware: the seed's `/v1/ring` names the other nodes.
//! let client = Client::builder().node("http://127.0.0.1:8081").build()?;
//! let context = client
//!     .put("users", "ada", "v1".into(), &WriteOptions::default())
//!     .await?;
//! if let Some(read) = client.get("users", "ada", &ReadOptions::default()).await? {
//!     assert_eq!(read.values().count(), 1);
//! }
//! // Replace what we wrote, chaining the context the put returned.
//! client
//!     .put("users", "ada", "v2".into(), &WriteOptions { context: Some(context), ..Default::default() })
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod buckets;
mod builder;
mod client;
mod datatypes;
mod error;
pub mod http1;
mod path;
mod ring;
mod routing;
mod tls;
mod types;
mod update;

pub use buckets::{patch_json, props_from_json, props_json, SET_BUCKET_TIMEOUT};

pub use builder::{
    ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_NODE_COOLDOWN, DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_POOL_MAX_IDLE_PER_HOST, DEFAULT_RETRIES, DEFAULT_RING_REFRESH_INTERVAL,
    DEFAULT_TIMEOUT,
};
pub use client::{Client, CAUSAL_CONTEXT_HEADER, LAYOUT_VERSION_HEADER, RESPONSE_BYTES_MAX};
pub use datatypes::{
    op_json, CartBucket, CartRead, CounterBucket, CounterRead, DtOp, DtOptions, DtRead, DtValue,
    SetBucket, SetRead,
};
pub use error::Error;
pub use path::encode_segment;
pub use ring::{Ring, RingNode, RING_NODES_MAX, RING_PARTITIONS_MAX, SUPPORTED_HASH};
pub use routing::ReadRouting;
pub use tls::{client_config, https_connector};
pub use types::{Read, ReadOptions, Sibling, WriteOptions};
pub use update::{
    UpdateOptions, UPDATE_ATTEMPTS_DEFAULT, UPDATE_BACKOFF_INITIAL, UPDATE_BACKOFF_MAX,
};
pub use yeskv_core::{BucketPatch, BucketProps, Conflict, Datatype, ParseQuorumError, Quorum};
