//! # yeskv-membership: who is in the cluster, and who is up
//!
//! Every node gossips who it is and what it holds; every node folds what it hears into a
//! [`MembershipView`]: one [`Member`] per node id, with its zone, addresses, the layout version
//! it holds and a status, [`MemberStatus::Up`] or [`MemberStatus::Down`], from a failure
//! detector. The node runtime reads the view for `/v1/status`, for routing internode RPC and for
//! sloppy-quorum fallbacks (Dynamo §4.8: "membership and failure detection" by gossip).
//!
//! What each node gossips:
//! - in chitchat's node identity (`ChitchatId`): node id, generation (the start time in Unix
//!   milliseconds, so a restart is a new incarnation) and gossip address;
//! - in every SYN: the cluster id — a node of another cluster is answered `BadCluster` and its
//!   digest is never read, so it never enters the view;
//! - as versioned key-values ([`wire`]): zone, HTTP address, peer (RPC) address and layout
//!   version.
//!
//! By convention a node gossips over UDP on the *same port number* as its TCP peer address (TCP
//! and UDP ports do not collide), so `--seed` takes peer addresses;
//! [`MembershipConfig::gossip_addr`] can still put gossip elsewhere.
//!
//! ## Why chitchat, not foca
//!
//! yeskv needs to spread per-node *state* that changes (the layout version a node holds), not
//! only liveness. chitchat is scuttlebutt reconciliation (van Renesse et al. 2008): each node
//! owns a versioned key-value map, peers exchange digests and send back exactly the newer
//! entries (SYN / SYN-ACK / ACK), so a new layout version reaches everyone in O(log N) rounds
//! with no protocol of ours. It checks the cluster id on every SYN, detects failures with a
//! phi-accrual detector that adapts to the heartbeat intervals it observes (Hayashibara et al.
//! 2004, as in Cassandra and Akka), and runs in production at Quickwit. foca (SWIM) gives
//! membership and liveness, and is sans-IO (the host supplies sockets, timers and a seeded RNG),
//! which is better for simulation; but node metadata must live either in its identity, which is
//! immutable (a changed layout version would mean a rejoin), or in custom broadcasts that we
//! would have to write, version and expire ourselves, and there is no cluster id check.
//!
//! The price of chitchat is that it is not sans-IO: it owns its task and timers, picks gossip
//! peers with an RNG seeded from the thread RNG, and keeps its message codec crate-private (see
//! *Seams*). Everything chitchat-specific is confined to [`membership`] and [`transport`]; the
//! view, the table and their rules would survive a switch to foca unchanged.
//!
//! ## How liveness becomes up and down
//!
//! A node bumps its heartbeat counter every gossip round and on every message it handles; peers
//! learn newer heartbeats from digests, directly or second hand. For each peer incarnation the
//! detector keeps the mean interval between heartbeat arrivals (smoothed by a prior of
//! [`MembershipConfig::heartbeat_interval_prior_ms`] weighing as 5 samples) and computes
//! `phi = time since last heartbeat / mean interval`; at the end of each gossip round a peer with
//! `phi > phi_threshold` is dead. A stopped node is therefore down after about
//! `phi_threshold × mean interval + one gossip round` ([`MembershipConfig::time_to_down`]).
//! Heartbeats arrive several times per round, so the mean is below the gossip interval. Measured
//! on loopback (`tests/udp.rs`, killed right after the cluster converged, phi 8): down after
//! 1.2–1.4 s with 200 ms gossip and 3.0–3.5 s with the default 500 ms, well inside the 10 s that
//! `/v1/status` needs.
//!
//! chitchat then forgets a dead incarnation after [`MembershipConfig::dead_node_grace_ms`]. The
//! [`table::MemberTable`] turns incarnations into members and keeps them:
//!
//! ## Invariants
//!
//! - One member per node id, following the newest generation whose key-values are complete; a
//!   member's generation never decreases.
//! - A member is `Up` iff the failure detector holds that exact incarnation live.
//! - A member never disappears by itself: when its incarnation is dead or garbage-collected it is
//!   `Down` until [`Membership::forget`]; forgetting an `Up` member is refused, and a forgotten
//!   node that is heard live again (or restarts) comes back.
//! - The local node is always a member, always `Up`.
//! - Nodes of another cluster never appear; peers whose key-values are of another schema version
//!   or malformed stay out and are logged once.
//! - Limits: [`MembershipConfig::members_max`] members, [`config::SEEDS_MAX`] seeds, bounded
//!   zone and address lengths ([`wire`]); chitchat contacts at most 3 live peers + 1 dead + 1
//!   seed per round and keeps each datagram under 64 KiB.
//!
//! ## Seams (for the deterministic simulator)
//!
//! - **Network**: [`GossipTransport`] — real UDP, the in-process [`MemoryNetwork`] (with link
//!   cuts for partitions), or any chitchat `Transport` (message drop and delay injectors,
//!   a simulator's network). The tests run the same code on UDP and on the memory network.
//! - **Time**: chitchat and this crate only use `tokio::time`, so on the memory network a whole
//!   cluster runs in virtual time under `tokio::time::pause` (a test detects a dead node after
//!   virtual seconds in real milliseconds). [`Membership::start_with_generation`] takes the
//!   generation from the caller instead of the wall clock.
//! - **Randomness: not reachable.** chitchat 0.13 seeds its gossip-peer choice from the thread
//!   RNG and iterates `HashSet`s, so two runs are not message-for-message identical: simulation
//!   tests of membership can check properties, not replay a seed exactly.
//! - **turmoil**: the memory network runs inside turmoil hosts today (it is runtime-agnostic), but
//!   bypasses turmoil's own network and fault injection; a transport over turmoil's UDP needs the
//!   envelope codec, which chitchat 0.13 keeps `pub(crate)`. Both gaps need a small upstream
//!   change (a seedable RNG, a public codec) or a switch to foca.

//! ## Cost
//!
//! A converged 6-node cluster on loopback sends about 1.3 KB/s of gossip per node with the
//! default 500 ms interval (about 20 messages/s) and 3.1 KB/s with 200 ms (about 45 messages/s),
//! digests compressed (chitchat protocol V1); see `six_node_gossip_bytes_per_second_*`.

pub mod config;
pub mod error;
pub mod membership;
pub mod sealed;
pub mod table;
pub mod transport;
pub mod view;
pub mod wire;

/// The gossip library, re-exported so that a custom [`Transport`] can be written against the
/// exact version this crate runs.
pub use chitchat;
pub use config::MembershipConfig;
pub use error::{Error, Result};
pub use membership::{Membership, MembershipStats};
pub use transport::{GossipStats, GossipTransport, MemoryNetwork, Transport, TransportExt};
pub use view::{Member, MemberStatus, MembershipView};
pub use wire::NodeInfo;
