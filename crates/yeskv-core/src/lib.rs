//! # yeskv-core: the pure heart of yeskv
//!
//! Everything in this crate is plain data and functions: no sockets, no threads, no clock, no disk.
//! The node runtime (`yeskv-node`) drives these types; because they are pure they can be tested by
//! properties (proptest) and run unchanged inside the deterministic simulator.
//!
//! - [`causality`]: actors, dots, version vectors and causal contexts — how yeskv knows which
//!   write saw which (Dynamo §4.4, "Dotted Version Vectors", Preguiça et al. 2012).
//! - [`object`]: the stored value of one key, a *dotted version vector set*: the siblings that are
//!   concurrent, each tagged with the dot of the write that made it, plus the clock of everything
//!   the replica has seen. Client writes (`update`) and replica merges (`sync`) live here.
//! - [`codec`]: the versioned, checksummed binary encodings of objects (on disk and, later, on the
//!   wire) and of the opaque causal context token handed to clients.
//! - [`keyring`]: the cluster keyring (rotation) and the subkeys that sign context tokens and
//!   encrypt gossip.
//! - [`keyspace`]: the stable key hash, key → partition, and the storage key layout.
//! - [`placement`]: the layout: partition → replicas, zone-spread, balanced, fewest moves.
//! - [`tictac`]: Tictac trees for active anti-entropy (Riak 3): per partition replica, fixed
//!   segments whose hashes are XORs of object digests, so a write updates the tree in O(1); the
//!   stable object digest; and the key diff of one segment between two replicas.
//! - [`quorum`]: `one` / `quorum` / `all` / numbers, resolved against `n`.
//! - [`bucket`]: bucket properties (data type, conflict resolution, TTL, salt).
//! - [`datatypes`]: the server-side data types (cart, counter, set) as state-based CRDTs.
//! - [`error`]: the one error enum of this crate.

pub mod bucket;
pub mod causality;
pub mod codec;
pub mod datatypes;
pub mod error;
pub mod keyring;
pub mod keyspace;
pub mod object;
pub mod placement;
pub mod quorum;
pub mod tictac;

pub use bucket::{BucketPatch, BucketProps, Conflict, Datatype};
pub use causality::{Actor, CausalContext, Dot, InvalidNodeId, NodeId, VersionVector};
pub use error::Error;
pub use object::{Object, Sibling, Version};
pub use quorum::{
    Outcome, ParseQuorumError, Quorum, QuorumSets, QuorumTooLarge, QuorumTracker, ScopedQuorum,
};
