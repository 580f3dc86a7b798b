//! The node's context: what every subsystem of a running node shares, and the one way it asks
//! another node anything.
//!
//! A [`NodeContext`] holds the local replica, the topology (who holds a key, who is up, where
//! they are), the internode client, the clock and the settings. The coordinator, anti-entropy,
//! hinted handoff and the reaper each take one; none of them reaches into another for these.
//! [`NodeContext::call`] is the only path to a peer: it checks the failure detector (unless told
//! to try anyway), resolves the peer's address, applies the internode deadline, and turns every
//! way a call can fail into a typed [`Error`] (down, no address, transport, remote refusal), so
//! each subsystem only matches the answers of its own messages.

use std::sync::Arc;
use std::time::Duration;

use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::clock::Clock;
use crate::error::Error;
use crate::peer::{PeerClient, PeerRequest, PeerResponse};
use crate::replica::Replica;
use crate::topology::Topology;

/// Settings of the data path, the same on every request.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Replicas per key.
    pub n: u8,
    /// Default read quorum.
    pub r: u8,
    /// Default write quorum.
    pub w: u8,
    /// Partition count of the ring.
    pub partitions: u32,
    /// Most siblings a client write may leave.
    pub siblings_max: usize,
    /// TTL for writes without one (0 = none).
    pub default_ttl_secs: u64,
    /// Deadline of one internode call.
    pub rpc_timeout: Duration,
    /// Most read repairs in flight at once; past it a repair is skipped (and counted).
    pub read_repair_inflight_max: usize,
    /// One read in this many asks every replica of the key (and so repairs all of them); the
    /// others ask `r` replicas first. 1: every read asks every replica (Riak's way).
    pub read_all_every: u32,
    /// How long a read waits for its first replicas before asking one more.
    pub read_hedge: Duration,
    /// The keys that sign and check causal context tokens (the cluster keyring's context
    /// subkeys; `yeskv_core::keyring`).
    pub context_keys: yeskv_core::keyring::Subkeys,
}

/// Whether a call to a node waits for the failure detector to say it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Only if it is up (a node believed down is skipped at once: [`Error::PeerDown`]).
    IfUp,
    /// Whatever the failure detector says: the last resort before failing a quorum (a node
    /// that has just restarted has heard from nobody and believes everyone down).
    Anyway,
}

/// See the module docs.
pub struct NodeContext<E: Engine> {
    replica: Arc<Replica<E>>,
    topology: Arc<dyn Topology>,
    peers: Arc<dyn PeerClient>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    transfers: Arc<crate::transfer::TransferStats>,
    xr_links: Arc<crate::xr::Links>,
    merges: Arc<crate::merges::MergeQueues>,
}

impl<E: Engine> Clone for NodeContext<E> {
    fn clone(&self) -> Self {
        NodeContext {
            replica: self.replica.clone(),
            topology: self.topology.clone(),
            peers: self.peers.clone(),
            clock: self.clock.clone(),
            settings: self.settings.clone(),
            transfers: self.transfers.clone(),
            xr_links: self.xr_links.clone(),
            merges: self.merges.clone(),
        }
    }
}

impl<E: Engine> NodeContext<E> {
    /// A context over these parts.
    pub fn new(
        replica: Arc<Replica<E>>,
        topology: Arc<dyn Topology>,
        peers: Arc<dyn PeerClient>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        NodeContext {
            replica,
            topology,
            peers,
            clock,
            settings,
            transfers: Arc::default(),
            xr_links: Arc::default(),
            merges: Arc::default(),
        }
    }

    /// The per-peer queues that coalesce this node's replica writes (`crate::merges`).
    pub fn merges(&self) -> &Arc<crate::merges::MergeQueues> {
        &self.merges
    }

    /// What this node last saw of its links to the other regions (`crate::xr`).
    pub fn xr_links(&self) -> &Arc<crate::xr::Links> {
        &self.xr_links
    }

    /// What this node's partition transfers have done and have left.
    pub fn transfers(&self) -> &Arc<crate::transfer::TransferStats> {
        &self.transfers
    }

    /// The local replica.
    pub fn replica(&self) -> &Arc<Replica<E>> {
        &self.replica
    }

    /// The topology.
    pub fn topology(&self) -> &Arc<dyn Topology> {
        &self.topology
    }

    /// The internode client.
    pub fn peers(&self) -> &Arc<dyn PeerClient> {
        &self.peers
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Now, by this node's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// This node.
    pub fn local(&self) -> &NodeId {
        self.topology.local()
    }

    /// Whether `node` is this node.
    pub fn is_local(&self, node: &NodeId) -> bool {
        node == self.topology.local()
    }

    /// Sends `request` to `node` with the internode deadline (see the module docs). A
    /// `Failed` answer comes back as the error it carries.
    pub async fn call(
        &self,
        node: &NodeId,
        request: PeerRequest,
        liveness: Liveness,
    ) -> Result<PeerResponse, Error> {
        self.call_within(node, request, liveness, self.settings.rpc_timeout)
            .await
    }

    /// As [`NodeContext::call`], with a deadline of its own.
    pub async fn call_within(
        &self,
        node: &NodeId,
        request: PeerRequest,
        liveness: Liveness,
        timeout: Duration,
    ) -> Result<PeerResponse, Error> {
        if liveness == Liveness::IfUp && !self.topology.is_up(node) {
            return Err(Error::PeerDown(node.clone()));
        }
        let addr = self
            .topology
            .peer_addr(node)
            .ok_or_else(|| Error::NoAddress(node.clone()))?;
        match self.peers.call(&addr, request, timeout).await {
            Ok(PeerResponse::Failed(e)) => Err(e.at(node)),
            Ok(answer) => Ok(answer),
            Err(source) => Err(Error::Transport {
                node: node.clone(),
                source,
            }),
        }
    }
}

/// The error for `node` answering `request` with `answer`, which that request never gets.
pub fn out_of_protocol(node: &NodeId, request: &'static str, answer: PeerResponse) -> Error {
    Error::Protocol {
        node: node.clone(),
        request,
        answer: format!("{answer:?}"),
    }
}
