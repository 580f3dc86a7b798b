//! # yeskv-node: the node
//!
//! The I/O edge around the pure core: it owns sockets, storage handles, time and metrics.
//! [`node::NodeBuilder`] assembles a node from its parts (the server, the simulator and the
//! tests all build it there); `server` runs one as a process (with the default `rocksdb`
//! feature: without it the crate builds without RocksDB, for the fuzz targets of `fuzz/`).
//!
//! A write, end to end (the whole walk is in `docs/architecture.md`): [`api`] parses and
//! validates `PUT /v1/kv/{bucket}/{key}` (limits, quorum, TTL, context token) → [`coordinator`]
//! places the key (hash, partition, storage key), stands in or forwards when it must, and stamps
//! the version → [`replica`] applies the DVV update under the key's stripe lock, encodes the
//! checksummed record and commits it to RocksDB (group commit per `storage.sync`) → the
//! coordinator replicates the object to the key's other primaries, or to fallbacks as hints for
//! the down ones, through [`replication`] → the client gets `204` with its new context once `w`
//! replicas hold it. Each other replica receives it in [`dispatch`] → [`replication::serve`] →
//! [`replica::Replica::merge`]. With replicas per region, the other regions' replicas get it
//! from the coordinator's durable queue, through [`xr`] (`MergeMany`).
//!
//! Modules: [`context`] (what every subsystem works with, and its one `call` to a peer),
//! [`dispatch`] (where peer messages arrive), [`peer`] (their envelope), [`replication`],
//! [`handoff`], [`xr`] (cross-region replication), [`aae`] (anti-entropy), [`reaper`] and
//! [`buckets`] (bucket properties' checks) (each owns its messages and serves them),
//! [`workers`] (background work, reported and joined), [`topology`] and [`cluster`] (who holds a
//! key, who is up), [`config`] (settings and validation), [`metrics`] (names and `/metrics`),
//! [`clock`] (the time seam), [`auth`] (API keys and what each endpoint needs), [`resp`] (the
//! Redis-protocol listener, off unless configured), [`error`], [`tls`] (HTTPS, mutual TLS between nodes, reload), and [`chaos`] (delay, and WAN delay and loss per
//! destination region, for tests; off unless configured).

pub mod aae;
pub mod api;
pub mod auth;
pub mod backup;
pub mod buckets;
pub mod chaos;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod context;
pub mod coordinator;
pub mod dispatch;
pub mod error;
pub mod expiry;
pub mod handoff;
pub mod hot;
pub mod merges;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod reaper;
pub mod replica;
pub mod replication;
pub mod resp;
/// Needs the RocksDB engine (the default `rocksdb` feature).
#[cfg(feature = "rocksdb")]
pub mod server;
pub mod tls;
pub mod topology;
pub mod transfer;
pub mod workers;
pub mod xr;

pub use config::Config;
pub use error::Error;
