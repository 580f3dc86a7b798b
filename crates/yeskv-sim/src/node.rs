//! A simulated node: the product's node, assembled by the product's [`NodeBuilder`] as the server
//! assembles it (replica, coordinator, dispatcher of peer messages, background repair, the
//! transfer worker that receives the partitions a layout change gives it), on simulated parts: a
//! [`SimEngine`] on the node's [`Disk`], a [`SimClock`], the product's `ClusterTopology`
//! following the shared [`LayoutCell`] with the ping failure detector for liveness, and the RPC
//! client wrapped in [`ChaosPeers`].
//!
//! [`node_main`] is the host's software: turmoil calls it on start and again on every restart
//! after a crash or a clean stop. Each start reopens the replica on the same disk (which kept
//! only what was durable), so an unclean stop yields a new actor epoch, drawn from the node's
//! seeded RNG (the product draws it from the OS), while a clean stop (a restart fault: servers
//! and workers stopped, the replica closed as SIGTERM closes it) keeps the epoch, the dot
//! sequences and the saved anti-entropy trees. One start in three (drawn from the seed) speaks
//! only the oldest internode protocol version, as a node of the previous release in a rolling
//! upgrade does, so connections negotiate between versions as nodes restart. Every host runs it
//! from the start, the cluster's
//! spare nodes too: a spare serves with an empty disk and owns nothing until a membership fault
//! joins it. What the node does not run: the HTTP API (replaced by the client protocol of
//! [`crate::protocol`], served with the same coordinator calls), gossip membership (replaced by
//! the ping detector, see [`crate::topology`]), the Raft layout service (the layout is a shared
//! cell changed by the product's state machine, see [`crate::topology`]) and metrics export.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yeskv_core::NodeId;
use yeskv_node::aae::AaeSettings;
use yeskv_node::context::{NodeContext, Settings};
use yeskv_node::expiry::Expiry;
use yeskv_node::handoff::HandoffSettings;
use yeskv_node::node::{NodeBuilder, RepairSettings};
use yeskv_node::peer::{PeerRequest, PeerResponse};
use yeskv_node::reaper::ReaperSettings;
use yeskv_node::replica::{HintLimits, Replica};
use yeskv_node::transfer::{LayoutControl, TransferSettings};
use yeskv_node::workers::StopSignal;
use yeskv_rpc::{RpcClient, RpcConfig, RpcServer};
use yeskv_storage::CachedEngine;

use crate::chaos::{ChaosPeers, NetChaos};
use crate::clock::{sim_now_ms, SimClock};
use crate::engine::{Disk, SimEngine};
use crate::net::{SimConnector, SimListener};
use crate::protocol::{serve_client, ClientRequest, ClientResponse};
use crate::topology::{run_detector, CellControl, Detector, LayoutCell};
use crate::trace::{Kind, Recorder};

/// The internode RPC port of every node.
pub const PEER_PORT: u16 = 7000;
/// The client protocol port of every node.
pub const CLIENT_PORT: u16 = 7001;
/// The cluster id in RPC handshakes.
pub const CLUSTER: &str = "sim";
/// Deadline of one internode call, simulated ms.
pub const RPC_TIMEOUT_MS: u64 = 300;
/// Partitions of the simulated ring (small: placement runs at every membership change).
pub const PARTITIONS: u32 = 64;
/// Replicas per key.
pub const N: u8 = 3;
/// Tombstone grace before the reaper may remove a deleted key, simulated ms: short, so that
/// tombstones written during the workload are reaped during the settle phase.
pub const REAP_GRACE_MS: u64 = 3_000;
/// A simulated node's storage: the product's object cache over the simulated disk.
pub type NodeEngine = CachedEngine<SimEngine>;
/// The object cache of each simulated node: a few hundred records, so that it also evicts.
pub const OBJECT_CACHE_BYTES: u64 = 64 << 10;
/// Hints kept per target at most.
pub const HINTS_PER_TARGET_MAX: u64 = 10_000;
/// Bytes of hints kept at most.
pub const HINT_BYTES_MAX: u64 = 64 << 20;
/// Pause between hinted-handoff rounds, simulated ms.
pub const HANDOFF_INTERVAL_MS: u64 = 100;
/// Pause between anti-entropy exchange rounds, simulated ms.
pub const AAE_INTERVAL_MS: u64 = 200;
/// Pause between reaper rounds, simulated ms.
pub const REAP_INTERVAL_MS: u64 = 500;
/// Clock-skew allowance before a node's compaction drops an expired record, simulated ms.
pub const EXPIRY_GRACE_MS: u64 = 2_000;
/// Pause between the expiry worker's rounds (and least time between its compactions),
/// simulated ms.
pub const EXPIRY_INTERVAL_MS: u64 = 1_000;
/// Droppable bytes at which the expiry worker compacts (small: runs are short).
pub const EXPIRY_COMPACT_BYTES: u64 = 4 << 10;
/// Pause between the transfer worker's rounds, simulated ms (the product's default is 1 s).
pub const TRANSFER_INTERVAL_MS: u64 = 100;
/// How long a former holder keeps a partition's data, simulated ms (the product's default is
/// 60 s).
pub const CLEANUP_DELAY_MS: u64 = 2_000;

/// The background repair's settings: the product's defaults with fast simulated intervals.
pub fn repair_settings() -> RepairSettings {
    RepairSettings {
        handoff: HandoffSettings {
            interval: Duration::from_millis(HANDOFF_INTERVAL_MS),
            batch: 64,
            inflight_max: 8,
        },
        aae: AaeSettings {
            interval: Duration::from_millis(AAE_INTERVAL_MS),
            keys_per_round_max: 64,
        },
        reaper: ReaperSettings {
            interval: Duration::from_millis(REAP_INTERVAL_MS),
        },
        xr: yeskv_node::xr::XrSettings {
            batch: 64,
            retry: Duration::from_millis(200),
            poll: Duration::from_millis(100),
            ..Default::default()
        },
        expiry: yeskv_node::expiry::ExpirySettings {
            interval: Duration::from_millis(EXPIRY_INTERVAL_MS),
            compact_bytes: EXPIRY_COMPACT_BYTES,
            compact_interval: Duration::from_millis(EXPIRY_INTERVAL_MS),
        },
    }
}

/// The transfer worker's settings: the product's defaults with a fast simulated interval and
/// a short cleanup delay (so that former holders clean up within a run), completions reported
/// to `control`. The one place the simulator builds them.
pub fn transfer_settings(control: Arc<dyn LayoutControl>) -> TransferSettings {
    let mut settings = TransferSettings::new(&yeskv_node::config::Transfer::default(), control);
    settings.interval = Duration::from_millis(TRANSFER_INTERVAL_MS);
    settings.cleanup_delay = Duration::from_millis(CLEANUP_DELAY_MS);
    settings
}

/// Spawns a node's tasks on the simulated host's own thread, in order (determinism).
fn spawn_local(f: BoxFuture<'static, ()>) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(f)
}

/// The RPC settings of simulated nodes and clients: the product's defaults scaled to the
/// simulated latencies (milliseconds, not a WAN), so dead connections are noticed within a run.
pub fn rpc_config(node_id: &str) -> RpcConfig {
    let mut c = RpcConfig::new(CLUSTER, node_id);
    c.handshake_timeout_ms = 200;
    c.keepalive_interval_ms = 200;
    c.keepalive_timeout_ms = 1_000;
    c.reconnect_backoff_min_ms = 20;
    c.reconnect_backoff_max_ms = 500;
    c.shutdown_grace_ms = 0;
    c
}

/// The coordinator settings of every simulated node: `n = 3`, `r = w = quorum` (on a seed with
/// regions the layout's replicas per region decide, and a request without `r`/`w` asks
/// `local_quorum`, as in the product), the product's
/// default sibling limit.
pub fn settings() -> Settings {
    Settings {
        n: N,
        r: N / 2 + 1,
        w: N / 2 + 1,
        partitions: PARTITIONS,
        siblings_max: 100,
        default_ttl_secs: 0,
        rpc_timeout: Duration::from_millis(RPC_TIMEOUT_MS),
        read_repair_inflight_max: 256,
        // The product's defaults.
        read_all_every: yeskv_node::config::Repair::default().read_all_every,
        read_hedge: Duration::from_millis(yeskv_node::config::Repair::default().read_hedge_ms),
        context_keys: crate::protocol::context_keys(),
    }
}

/// What outlives a node's crashes: its disk, its clock skew, and its seeded randomness.
pub struct NodeSlot {
    /// The node.
    pub id: NodeId,
    /// Its disk.
    pub disk: Arc<Disk>,
    /// Its clock skew, ms (changed by clock-skew faults).
    pub skew_ms: Arc<AtomicI64>,
    /// The running incarnation's replica (set at start, cleared by the driver on a crash and by
    /// the node when it stops cleanly), so the driver can sample its anti-entropy tree roots.
    pub replica: Mutex<Option<Arc<Replica<NodeEngine>>>>,
    /// Asks the running incarnation to stop cleanly (a restart fault; taken by the driver).
    pub stop: Mutex<Option<StopSignal>>,
    rng: Mutex<StdRng>,
}

impl NodeSlot {
    /// A node with an empty disk, no skew, randomness from `seed`.
    pub fn new(id: NodeId, seed: u64) -> Self {
        NodeSlot {
            id,
            disk: Arc::new(Disk::new()),
            skew_ms: Arc::new(AtomicI64::new(0)),
            replica: Mutex::new(None),
            stop: Mutex::new(None),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

/// Everything a node's software needs (shared by all of its incarnations).
pub struct NodeEnv {
    /// The node's durable parts.
    pub slot: Arc<NodeSlot>,
    /// The cluster's layout.
    pub layout: Arc<LayoutCell>,
    /// Every host of the simulation (members and spares), `n1` first: the detector's peers.
    pub hosts: Vec<NodeId>,
    /// The shared loss/duplication state.
    pub chaos: Arc<NetChaos>,
    /// The trace.
    pub recorder: Recorder,
    /// Whether the background repair workers run.
    pub repair: bool,
    /// A bug planted in this node (its client API's: [`crate::protocol::serve_client`]).
    pub bug: Option<crate::Bug>,
}

/// The node's software (see the module docs). Runs until the host crashes, or until a restart
/// fault asks it to stop cleanly.
pub async fn node_main(env: Arc<NodeEnv>) -> turmoil::Result {
    let id = env.slot.id.clone();
    let (epoch, rpc_seed) = {
        let mut rng = env.slot.rng.lock();
        (rng.random::<u64>(), rng.random::<u64>())
    };
    // The product's object cache in front of the simulated disk, small enough to evict; the
    // disk's compactions drop expired records by the product's rule at this node's clock.
    let clock = Arc::new(SimClock::new(env.slot.skew_ms.clone()));
    let expiry = Arc::new(Expiry::new(EXPIRY_GRACE_MS));
    env.slot
        .disk
        .set_data_filter(Some(expiry.data_filter(clock.clone())));
    let engine = CachedEngine::new(SimEngine::new(env.slot.disk.clone()), OBJECT_CACHE_BYTES);
    let (mut replica, startup) = Replica::open(engine, id.clone(), REAP_GRACE_MS, || epoch).await?;
    replica.set_expiry(expiry);
    replica.set_hint_limits(HintLimits {
        per_target_max: HINTS_PER_TARGET_MAX,
        bytes_max: HINT_BYTES_MAX,
    });
    let replica = Arc::new(replica);
    // Anti-entropy trees, as the product sets them up: a node that stopped cleanly trusts the
    // trees it saved; one that did not (a crash is a power cut) rebuilds each partition's tree
    // from its disk. The product rebuilds on a blocking thread while it serves; here the rebuild
    // runs before the node serves (the engine is in memory, it takes no simulated time), so it
    // is deterministic.
    let rebuild = replica.init_trees(PARTITIONS);
    let rebuilt = rebuild.len();
    for p in rebuild {
        replica.rebuild_tree(p)?;
    }
    env.recorder.note(
        sim_now_ms(),
        Kind::Node,
        format!(
            "{id} started ({startup:?}), actor {}, {rebuilt} trees rebuilt",
            replica.actor()
        ),
    );
    *env.slot.replica.lock() = Some(replica.clone());

    let peers: Vec<NodeId> = env.hosts.iter().filter(|n| **n != id).cloned().collect();
    let detector = Arc::new(Detector::new(&peers, sim_now_ms()));
    {
        let (id, detector, recorder) = (id.clone(), detector.clone(), env.recorder.clone());
        tokio::task::spawn_local(async move {
            let who = id.clone();
            if let Err(e) = run_detector(id, peers, detector).await {
                recorder.note(
                    sim_now_ms(),
                    Kind::Node,
                    format!("{who}: failure detector stopped: {e}"),
                );
            }
        });
    }
    // The product's topology, following the shared layout; liveness from the ping detector
    // (the topology counts the node itself up).
    let liveness: yeskv_node::cluster::Liveness =
        Arc::new(move |node: &NodeId| detector.is_up(node, sim_now_ms()));
    let topology = env.layout.topology(id.clone(), liveness);
    let mut rpc_config = rpc_config(id.as_str());
    if rpc_seed % 3 == 0 {
        // This incarnation stands in for the previous release (see the module docs).
        let oldest = yeskv_rpc::PROTOCOL_VERSION_MIN;
        rpc_config.protocol_versions = (oldest, oldest);
        env.recorder.note(
            sim_now_ms(),
            Kind::Node,
            format!("{id}: speaks only internode protocol {oldest} (a previous release)"),
        );
    }
    let client: RpcClient<PeerRequest, PeerResponse, SimConnector> =
        RpcClient::with_connector(rpc_config.clone(), SimConnector, rpc_seed)?;

    // The node, as the product builds it, with its background repair (hinted handoff,
    // anti-entropy exchanges, the reaper) and its transfer worker. A crash drops its tasks with every other task of the
    // host; a clean stop (a restart fault) ends them through the stop signal, as SIGTERM does in
    // the product.
    let stop = StopSignal::new();
    *env.slot.stop.lock() = Some(stop.clone());
    let mut builder = NodeBuilder::new(NodeContext::new(
        replica.clone(),
        topology,
        Arc::new(ChaosPeers::new(client, env.chaos.clone())),
        clock,
        settings(),
    ))
    .spawner(spawn_local)
    .stop_signal(stop.clone())
    .transfers(transfer_settings(Arc::new(CellControl::new(
        id.clone(),
        env.layout.clone(),
    ))));
    if env.repair {
        builder = builder.repair(repair_settings());
    }
    let mut node = builder.build();
    let peer_listener = SimListener::bind(PEER_PORT).await?;
    node.serve_peers(peer_listener, RpcServer::new(rpc_config.clone())?);

    let client_listener = SimListener::bind(CLIENT_PORT).await?;
    let client_server: RpcServer<ClientRequest, ClientResponse> = RpcServer::new(rpc_config)?;
    let c = Arc::new(node.coordinator().clone());
    let bug = env.bug;
    client_server
        .serve(
            client_listener,
            move |_peer, request| {
                let c = c.clone();
                async move { serve_client(&c, request, bug).await }
            },
            async move { stop.stopped().await },
        )
        .await;

    // A clean stop, in the product's order (`yeskv_node::server::run`): the client side is
    // closed; the internode server and the workers finish; the replica saves its trees and
    // sequences and sets the clean marker. The next start keeps the actor epoch.
    node.stop().await;
    replica.close_cleanly().await?;
    *env.slot.replica.lock() = None;
    env.recorder
        .note(sim_now_ms(), Kind::Node, format!("{id} stopped cleanly"));
    Ok(())
}
