//! The simulated cluster's topology: preference lists from the product's placement, liveness from
//! a small ping-based failure detector.
//!
//! The layout is computed once per seed with [`yeskv_core::placement::assign`] (the function the
//! product's Raft-replicated layout uses; nodes in zones `z0`, `z1`, `z2` round robin), and each
//! node's [`SimTopology`] turns it into per-partition preference lists exactly as
//! `yeskv_node::cluster::ClusterTopology` does. The layout does not change during a run: the
//! simulator exercises the data path, not layout changes (those go through Raft, which is not
//! simulated here).
//!
//! Liveness: the product's failure detector is chitchat's phi-accrual over UDP gossip, and
//! chitchat picks gossip peers with a thread-local RNG that cannot be seeded, so it cannot run
//! deterministically. Instead each simulated node runs [`run_detector`]: every
//! [`PING_INTERVAL_MS`] it sends a UDP ping to every other node over the simulated network; a
//! node answers pings with pongs; a peer is *up* while a pong came from it within the last
//! [`SUSPECT_AFTER_MS`]. Partitions, crashes and one-way partitions affect it like any traffic,
//! so the coordinator sees the same kind of (imperfect) liveness as in production: a peer can be
//! believed up while a request to it times out, and down while it still serves others.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use yeskv_core::placement::{assign, NodeSpec};
use yeskv_core::NodeId;
use yeskv_node::topology::Topology;

use crate::clock::sim_now_ms;
use crate::error::Error;

/// How often a node pings each peer, simulated ms.
pub const PING_INTERVAL_MS: u64 = 50;
/// A peer silent for longer than this is believed down, simulated ms.
pub const SUSPECT_AFTER_MS: u64 = 300;
/// The UDP port of the failure detector.
pub const PING_PORT: u16 = 7002;

/// The layout of one simulated cluster: members, their zones and every partition's replicas.
#[derive(Clone, Debug)]
pub struct SimLayout {
    /// Members in order (`n1`, `n2`, ...).
    pub nodes: Vec<NodeId>,
    /// Zone of each member.
    pub zones: BTreeMap<NodeId, String>,
    /// Partition count.
    pub partitions: u32,
    /// Replication factor.
    pub n: u8,
    /// Per partition, its replicas (primary first).
    pub prefs: Arc<Vec<Arc<[NodeId]>>>,
    /// Per partition, its sloppy-quorum fallbacks (the product's order).
    pub fallbacks: Arc<Vec<Arc<[NodeId]>>>,
}

impl SimLayout {
    /// Places `nodes` (zones round robin over three) with replication `n`.
    pub fn new(nodes: Vec<NodeId>, n: u8, partitions: u32) -> Result<SimLayout, Error> {
        let zones: BTreeMap<NodeId, String> = nodes
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), format!("z{}", i % 3)))
            .collect();
        let specs: Vec<NodeSpec> = nodes
            .iter()
            .map(|id| NodeSpec::new(id.clone(), zones[id].clone(), 1))
            .collect();
        let assignment =
            assign(&specs, n, partitions, None).map_err(|e| Error::Placement(e.to_string()))?;
        let prefs: Vec<Arc<[NodeId]>> = (0..partitions)
            .map(|p| Arc::from(assignment.replicas(p as u16).to_vec()))
            .collect();
        let fallbacks = prefs
            .iter()
            .enumerate()
            .map(|(p, primaries)| {
                Arc::from(yeskv_core::placement::fallback_order(
                    zones.iter().map(|(id, z)| (id, z.as_str())),
                    p as u16,
                    primaries,
                ))
            })
            .collect();
        Ok(SimLayout {
            nodes,
            zones,
            partitions,
            n,
            prefs: Arc::new(prefs),
            fallbacks: Arc::new(fallbacks),
        })
    }
}

/// When each peer last answered a ping (simulated ms), as one node sees it.
#[derive(Debug, Default)]
pub struct Detector {
    last_heard_ms: Mutex<BTreeMap<NodeId, u64>>,
}

impl Detector {
    /// A detector that believes every peer up as of now (a node starts optimistic, like the
    /// product's, which learns of failures from gossip).
    pub fn new(peers: &[NodeId], now_ms: u64) -> Self {
        Detector {
            last_heard_ms: Mutex::new(peers.iter().map(|p| (p.clone(), now_ms)).collect()),
        }
    }

    /// Records a pong from `peer`.
    pub fn heard(&self, peer: &NodeId, now_ms: u64) {
        if let Some(t) = self.last_heard_ms.lock().get_mut(peer) {
            *t = (*t).max(now_ms);
        }
    }

    /// Whether `peer` answered recently enough.
    pub fn is_up(&self, peer: &NodeId, now_ms: u64) -> bool {
        self.last_heard_ms
            .lock()
            .get(peer)
            .is_some_and(|t| now_ms.saturating_sub(*t) <= SUSPECT_AFTER_MS)
    }
}

/// One node's [`Topology`] (see the module docs).
pub struct SimTopology {
    local: NodeId,
    layout: SimLayout,
    detector: Arc<Detector>,
}

impl SimTopology {
    /// The topology of `local`.
    pub fn new(local: NodeId, layout: SimLayout, detector: Arc<Detector>) -> Self {
        SimTopology {
            local,
            layout,
            detector,
        }
    }
}

/// The internode RPC address of a simulated node.
pub fn peer_addr(node: &NodeId) -> String {
    format!("{node}:{}", crate::node::PEER_PORT)
}

impl Topology for SimTopology {
    fn local(&self) -> &NodeId {
        &self.local
    }

    fn preference(&self, partition: u16) -> Arc<[NodeId]> {
        self.layout
            .prefs
            .get(usize::from(partition))
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    fn fallbacks(&self, partition: u16) -> Arc<[NodeId]> {
        self.layout
            .fallbacks
            .get(usize::from(partition))
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    fn peer_addr(&self, node: &NodeId) -> Option<String> {
        self.layout
            .zones
            .contains_key(node)
            .then(|| peer_addr(node))
    }

    fn is_up(&self, node: &NodeId) -> bool {
        node == &self.local || self.detector.is_up(node, sim_now_ms())
    }

    fn is_member(&self, node: &NodeId) -> bool {
        self.layout.zones.contains_key(node)
    }

    fn layout_version(&self) -> u64 {
        1
    }
}

/// Runs `local`'s failure detector until the host stops: answers pings, pings every peer every
/// [`PING_INTERVAL_MS`], records pongs in `detector`.
pub async fn run_detector(
    local: NodeId,
    peers: Vec<NodeId>,
    detector: Arc<Detector>,
) -> std::io::Result<()> {
    let socket = Arc::new(turmoil::net::UdpSocket::bind(("0.0.0.0", PING_PORT)).await?);
    let sender = socket.clone();
    let me = local.as_str().to_string();
    tokio::task::spawn_local(async move {
        let mut interval =
            tokio::time::interval(std::time::Duration::from_millis(PING_INTERVAL_MS));
        loop {
            interval.tick().await;
            for p in &peers {
                // A send fails only on a full buffer or an unknown host; the next round retries.
                let _ = sender
                    .send_to(format!("ping {me}").as_bytes(), (p.as_str(), PING_PORT))
                    .await;
            }
        }
    });
    let mut buf = [0u8; 128];
    loop {
        let (len, from) = socket.recv_from(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        match text.split_once(' ') {
            Some(("ping", _)) => {
                let _ = socket
                    .send_to(format!("pong {}", local.as_str()).as_bytes(), from)
                    .await;
            }
            Some(("pong", peer)) => {
                if let Ok(peer) = NodeId::new(peer) {
                    detector.heard(&peer, sim_now_ms());
                }
            }
            _ => {}
        }
    }
}
