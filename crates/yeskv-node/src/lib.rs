//! # yeskv-node: the server
//!
//! The I/O edge around the pure core: it owns sockets, storage handles, time and metrics.
//!
//! A write, end to end (see `docs/architecture.md`):
//! [`api`] parses and validates `PUT /v1/kv/{bucket}/{key}` (limits, quorum, TTL, context token) →
//! [`coordinator`] places the key (hash, partition, storage key) and stamps the version →
//! [`replica`] takes the key's stripe lock, reads the stored object, applies the DVV update with
//! this node's actor, encodes the record with its checksum and appends it to RocksDB's WAL →
//! the group committer fsyncs (per `storage.sync`) → the client gets `204` with its new context.
//!
//! Reads and writes reach other replicas through [`peer`] (the internode protocol) as the
//! [`topology`] says (which nodes hold a key, which are up).
//!
//! Modules: [`config`] (settings and validation), [`server`] (start-up and graceful shutdown),
//! [`metrics`] (names and `/metrics`), [`clock`] (the time seam), [`error`], and [`chaos`]
//! (test-only delay injection, off unless configured).

pub mod aae;
pub mod api;
pub mod chaos;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod context;
pub mod coordinator;
pub mod dispatch;
pub mod error;
pub mod handoff;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod reaper;
pub mod replica;
pub mod replication;
pub mod server;
pub mod topology;
pub mod workers;

pub use config::Config;
pub use error::Error;
