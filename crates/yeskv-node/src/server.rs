//! Running a node as a process: what is outside the node proper.
//!
//! [`run`] opens the storage ([`open_storage`]) and the replica on it ([`open_replica`]),
//! starts the layout service ([`start_layout`]) and gossip membership ([`start_membership`]),
//! builds the node (`node.rs`: the same assembly the simulator and the tests use), serves the
//! internode RPC and the client HTTP API, and shuts down gracefully.
//!
//! Shutdown order (on the future passed to [`run`] resolving, i.e. SIGTERM or Ctrl-C): health
//! turns `503` ("draining"), the node waits `server.shutdown_drain_ms` for load balancers to
//! notice, the HTTP listener closes and in-flight requests finish, the RESP listener (if any)
//! closes after each connection's running batch, the layout service stops,
//! the background workers end their rounds, the internode server closes, storage is flushed, and
//! a clean-shutdown marker is written so the next start keeps the actor epoch.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use yeskv_core::keyring::{Keyring, Purpose};
use yeskv_layout::{JoinSpec, Layout, LayoutConfig, LayoutService, StorageConfig};
use yeskv_membership::{GossipTransport, Membership, MembershipConfig};
use yeskv_rpc::{RpcConfig, RpcServer};
use yeskv_storage::{CachedEngine, Engine, RocksConfig, RocksEngine};

use crate::aae::AaeSettings;
use crate::api::{AppState, Serving};
use crate::clock::SystemClock;
use crate::cluster::{optimistic_at_start, ClusterTopology, Heard, STARTUP_GRACE};
use crate::config::Validated;
use crate::context::NodeContext;
use crate::context::Settings;
use crate::error::Error;
use crate::expiry::Expiry;
use crate::handoff::HandoffSettings;
use crate::node::{Node, NodeBuilder, RepairSettings};
use crate::peer::{LayoutOverPeers, PeerClient, PeerRequest, PeerResponse, PeerRpcClient};
use crate::reaper::ReaperSettings;
use crate::replica::{HintLimits, Replica, Startup};
use crate::transfer::{LayoutControl, TransferSettings};
use crate::workers::WorkerStatus;
use crate::xr::XrSettings;

/// The engine a server runs: RocksDB, behind the object cache unless it is off.
pub type ServerEngine = Arc<dyn Engine>;

/// Runs a node until `shutdown` resolves. Errors are one line, for the binary to print.
pub async fn run(
    cfg: Validated,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let raw = &cfg.raw;
    // The expiry bookkeeping is shared by the engine's compaction filter (which counts what it
    // drops) and the replica's stores (which count what will expire).
    let expiry = Arc::new(Expiry::new(raw.ttl.expiry_grace_secs.saturating_mul(1000)));
    let keyring = load_keyring(&cfg)?;
    let engine = open_storage(&cfg, &expiry).await?;
    let replica = open_replica(engine, &cfg, expiry).await?;
    let rpc_config = RpcConfig {
        frame_bytes_max: raw.server.rpc_frame_bytes_max,
        connections_max: raw.server.rpc_connections_max,
        inflight_bytes_max: raw.server.rpc_inflight_bytes_max,
        ..RpcConfig::new(raw.cluster_name.clone(), cfg.node_id.as_str())
    };
    let tls = crate::tls::load(&cfg)?;
    let layout_watch = crate::tls::LayoutWatch::default();
    let rpc_client = PeerRpcClient::with_connector(
        rpc_config.clone(),
        crate::tls::connector(tls.as_ref(), &layout_watch),
        rand::random(),
    )
    .map_err(|e| Error::Startup(format!("internode RPC: {e}")))?;
    let (layout, bootstrap) = start_layout(&cfg, rpc_client.clone()).await?;
    let _ = layout_watch.set(layout.subscribe());
    if let Some(state) = &tls {
        crate::tls::reload_on_sighup(state.clone())?;
    }
    let (n, partitions) = cluster_shape(&cfg, layout.current(), bootstrap.as_ref());
    let membership = start_membership(&cfg, &layout, &keyring).await?;
    let view = membership.subscribe();
    let liveness = optimistic_at_start(
        move |node: &yeskv_core::NodeId| match view.borrow().member(node) {
            Some(m) if m.status == yeskv_membership::MemberStatus::Up => Heard::Up,
            Some(m) if m.seen_up => Heard::Down,
            _ => Heard::NotYet,
        },
        STARTUP_GRACE,
    );
    let topology = ClusterTopology::follow(cfg.node_id.clone(), layout.subscribe_state(), liveness);
    let buckets = topology.buckets().clone();
    let keys = topology.keys().clone();

    // Test-only: the chaos runner's delay and WAN rules on the node's internode calls.
    let chaos = chaos_control(&cfg)?;
    let peers = peer_client(&rpc_client, chaos.as_ref(), &layout);
    let mut node = NodeBuilder::new(NodeContext::new(
        replica.clone(),
        topology,
        peers,
        Arc::new(SystemClock),
        settings(&cfg, n, partitions, &keyring),
    ))
    .repair(repair_settings(&cfg))
    .transfers(transfer_settings(&cfg, &layout))
    .layout(layout_handler(&layout))
    .build();
    start_tree_rebuild(&mut node, partitions);
    start_layout_gossip(&mut node, &layout, &membership);

    let peer_server = serve_peers(&cfg, &mut node, rpc_config, tls.as_ref()).await?;

    if let Some(first) = bootstrap {
        layout
            .bootstrap_single(first)
            .await
            .map_err(|e| Error::Startup(format!("creating the cluster's first layout: {e}")))?;
        tracing::info!(cluster = %raw.cluster_name, "new cluster: this node owns every partition");
    }

    let state = app_state(
        &cfg,
        &node,
        &layout,
        (buckets, keys),
        &membership,
        (rpc_client, peer_server),
        metrics,
    );
    start_catch_up(&layout, &state);
    if let Some(path) = &raw.security.admin_key_file {
        start_admin_key(&layout, &state, path.clone());
    }
    let resp = crate::resp::start(&cfg, state.clone(), tls.as_ref()).await?;
    serve_http(&cfg, state, chaos, tls.as_ref(), shutdown).await?;
    if let Some(resp) = resp {
        resp.stop().await;
    }

    if let Err(e) = layout.shutdown().await {
        tracing::warn!(error = %e, "layout service did not stop cleanly");
    }
    node.stop().await;
    tracing::info!("in-flight requests finished; flushing storage");
    replica.close_cleanly().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// `n` and the partition count: fixed when the cluster was created, so the layout's win over
/// this node's config (a warning says so when they differ).
fn cluster_shape(
    cfg: &Validated,
    current: Option<Arc<Layout>>,
    bootstrap: Option<&Layout>,
) -> (u8, u32) {
    let raw = &cfg.raw;
    let (n, partitions) = match (current, bootstrap) {
        (Some(l), _) => (l.n, l.partitions),
        (None, Some(l)) => (l.n, l.partitions),
        (None, None) => (raw.n, raw.partitions),
    };
    if (n, partitions) != (raw.n, raw.partitions) {
        tracing::warn!(
            layout_n = n,
            layout_partitions = partitions,
            "n and partitions come from the cluster's layout, not from this node's config"
        );
    }
    (n, partitions)
}

/// The test-only chaos layer's settings when the config turns it on (`[chaos] enabled`, or
/// WAN links), holding the WAN links from this node's region as its rules.
fn chaos_control(cfg: &Validated) -> Result<Option<Arc<crate::chaos::ChaosControl>>, Error> {
    let chaos = &cfg.raw.chaos;
    if !chaos.is_on() {
        return Ok(None);
    }
    let control = crate::chaos::ChaosControl::default();
    let rules = crate::chaos::rules_from(&chaos.wan, &cfg.raw.region);
    if !rules.is_empty() {
        tracing::warn!(
            region = %cfg.raw.region,
            rules = %serde_json::to_string(&rules).unwrap_or_default(),
            "chaos: WAN rules from the config on outgoing internode calls"
        );
    }
    control
        .set_wan(rules)
        .map_err(|e| Error::Startup(format!("[chaos] wan: {e}")))?;
    Ok(Some(Arc::new(control)))
}

/// The node's internode client: the RPC client, behind the chaos layer when the config turns
/// it on. The layer learns a destination's region from the layout: the member whose internode
/// address the call goes to.
fn peer_client(
    rpc_client: &PeerRpcClient,
    chaos: Option<&Arc<crate::chaos::ChaosControl>>,
    layout: &LayoutService,
) -> Arc<dyn PeerClient> {
    match chaos {
        Some(control) => {
            let layouts = layout.subscribe();
            let region_of: crate::chaos::RegionOf = Arc::new(move |addr: &str| {
                let layout = layouts.borrow().clone()?;
                layout
                    .members
                    .values()
                    .find(|m| m.peer == addr)
                    .map(|m| m.region.clone())
            });
            Arc::new(crate::chaos::ChaosPeers::new(
                Arc::new(rpc_client.clone()),
                control.clone(),
                region_of,
            ))
        }
        None => Arc::new(rpc_client.clone()),
    }
}

/// Hands the layout group's messages that peers send to this node's layout service.
fn layout_handler(layout: &LayoutService) -> crate::dispatch::LayoutHandler {
    let layout = layout.clone();
    Arc::new(move |rpc| {
        let layout = layout.clone();
        Box::pin(async move { layout.handle(rpc).await })
    })
}

/// Listens on the peer address (mutual TLS when `tls` is set) and answers peers there until
/// the node stops; returns a clone of the server for its counters.
async fn serve_peers(
    cfg: &Validated,
    node: &mut Node<ServerEngine>,
    rpc_config: RpcConfig,
    tls: Option<&Arc<yeskv_tls::TlsState>>,
) -> Result<RpcServer<PeerRequest, PeerResponse>, Error> {
    let listener = tokio::net::TcpListener::bind(cfg.peer)
        .await
        .map_err(|e| Error::Startup(format!("cannot listen on peer address {}: {e}", cfg.peer)))?;
    let server =
        RpcServer::new(rpc_config).map_err(|e| Error::Startup(format!("internode RPC: {e}")))?;
    let stats = server.clone();
    match tls {
        Some(state) => node.serve_peers(crate::tls::rpc_listener(listener, state)?, server),
        None => node.serve_peers(listener, server),
    }
    Ok(stats)
}

/// What the HTTP handlers work with.
fn app_state(
    cfg: &Validated,
    node: &Node<ServerEngine>,
    layout: &LayoutService,
    (buckets, keys): (
        Arc<crate::topology::BucketTable>,
        Arc<crate::auth::KeyTable>,
    ),
    membership: &Arc<Membership>,
    (rpc_client, peer_server): (PeerRpcClient, RpcServer<PeerRequest, PeerResponse>),
    metrics: Option<PrometheusHandle>,
) -> Arc<AppState<ServerEngine>> {
    let raw = &cfg.raw;
    Arc::new(AppState {
        coordinator: node.coordinator().clone(),
        layout: layout.clone(),
        buckets,
        guard: Arc::new(crate::auth::Guard {
            enabled: raw.security.auth,
            open_metrics: raw.security.open_metrics,
            keys,
        }),
        membership: Some(membership.clone()),
        directory: directory(membership),
        limits: raw.limits.clone(),
        bodies: crate::api::BodyLimits::new(
            Duration::from_millis(raw.server.http_body_timeout_ms),
            raw.server.http_inflight_bytes_max,
        ),
        node_id: cfg.node_id.clone(),
        zone: raw.zone.clone(),
        region: raw.region.clone(),
        http: cfg.http.to_string(),
        peer: cfg.peer.to_string(),
        serving: AtomicU8::new(Serving::Starting as u8),
        caught_up: AtomicBool::new(false),
        metrics,
        started: Instant::now(),
        peer_stats: Box::new(move || rpc_client.stats()),
        peer_server_stats: Box::new(move || peer_server.stats()),
        workers: node.workers(),
        backups: raw.data_dir.join(crate::backup::BACKUPS_DIR),
    })
}

/// Opens RocksDB in `data_dir/db` (behind the object cache unless it is off), its compactions
/// dropping expired records by `expiry`'s rule and the system clock.
pub async fn open_storage(cfg: &Validated, expiry: &Arc<Expiry>) -> Result<ServerEngine, Error> {
    let raw = &cfg.raw;
    let mut rocks = RocksConfig::new(raw.data_dir.join("db"));
    rocks.data_filter = Some(expiry.data_filter(Arc::new(SystemClock)));
    rocks.periodic_compaction_secs = raw.storage.periodic_compaction_secs;
    rocks.sync = cfg.sync;
    rocks.block_cache_mb = raw.storage.block_cache_mb;
    rocks.write_buffer_mb = raw.storage.write_buffer_mb;
    rocks.group_commit_window_us = raw.storage.group_commit_window_us;
    rocks.reserve_bytes = raw.storage.reserve_mb.saturating_mul(1 << 20);
    let engine = tokio::task::spawn_blocking(move || RocksEngine::open(&rocks))
        .await
        .map_err(|e| Error::Startup(format!("opening storage: {e}")))?
        .map_err(|e| {
            Error::Startup(format!(
                "opening storage in {}: {e}",
                raw.data_dir.display()
            ))
        })?;
    Ok(match raw.storage.object_cache_mb {
        0 => Arc::new(engine),
        mb => Arc::new(CachedEngine::new(engine, (mb as u64) << 20)),
    })
}

/// Opens the replica on `engine`: checks the data directory is this node's and picks the actor
/// epoch (a new one after an unclean stop).
pub async fn open_replica(
    engine: ServerEngine,
    cfg: &Validated,
    expiry: Arc<Expiry>,
) -> Result<Arc<Replica<ServerEngine>>, Error> {
    let raw = &cfg.raw;
    let (mut replica, startup) = Replica::open(
        engine,
        cfg.node_id.clone(),
        raw.ttl.reap_grace_secs.saturating_mul(1000),
        rand::random::<u64>,
    )
    .await?;
    match startup {
        Startup::Clean => {
            tracing::info!(actor = %replica.actor(), "clean restart (the actor epoch is kept unless the directory predates the dot sequence)")
        }
        Startup::Fresh => {
            tracing::info!(actor = %replica.actor(), "new data directory; fresh actor epoch")
        }
        Startup::Unclean => {
            tracing::warn!(actor = %replica.actor(), "previous run did not stop cleanly; new actor epoch so no dot is ever reused")
        }
    }
    replica.set_expiry(expiry);
    replica.set_object_bytes_max(raw.limits.object_bytes_max);
    replica.set_xr_queue_max(raw.cross_region.queue_entries_max);
    replica.set_hint_limits(HintLimits {
        per_target_max: raw.repair.hints_per_target_max,
        bytes_max: raw.repair.hints_mb_max.saturating_mul(1 << 20),
    });
    if raw.repair.hint_age_max_secs.is_some() {
        tracing::warn!(
            "repair.hint_age_max_secs is no longer used: hints are kept until delivered"
        );
    }
    Ok(Arc::new(replica))
}

/// Starts the layout service (Raft, persisted under `data_dir/layout`). A node started without
/// seeds and without a layout creates a new cluster that it owns alone: the layout to bootstrap
/// is returned, to be installed once the node serves its peers.
pub async fn start_layout(
    cfg: &Validated,
    peers: PeerRpcClient,
) -> Result<(LayoutService, Option<Layout>), Error> {
    let raw = &cfg.raw;
    let layout_config = LayoutConfig::new(
        cfg.node_id.clone(),
        raw.cluster_name.clone(),
        cfg.peer.to_string(),
        StorageConfig::Directory(raw.data_dir.join("layout")),
    );
    let layout = LayoutService::start(layout_config, Arc::new(LayoutOverPeers(peers)))
        .await
        .map_err(|e| Error::Startup(format!("layout: {e}")))?;
    let bootstrap = if layout.current().is_none() && raw.seeds.is_empty() {
        let spec = JoinSpec {
            zone: raw.zone.clone(),
            capacity: 1,
            http: cfg.http.to_string(),
            peer: cfg.peer.to_string(),
            region: raw.region.clone(),
        };
        Some(
            Layout::bootstrap(
                raw.cluster_name.clone(),
                raw.n,
                raw.partitions,
                cfg.node_id.clone(),
                spec,
            )
            .map_err(|e| Error::Startup(format!("layout: {e}")))?,
        )
    } else {
        None
    };
    Ok((layout, bootstrap))
}

/// Starts gossip membership and failure detection (UDP, on the peer address's port). Dropped at
/// exit: chitchat has no goodbye, peers notice through the failure detector.
pub async fn start_membership(
    cfg: &Validated,
    layout: &LayoutService,
    keyring: &Keyring,
) -> Result<Arc<Membership>, Error> {
    let raw = &cfg.raw;
    let mut config = MembershipConfig::new(
        cfg.node_id.clone(),
        raw.cluster_name.clone(),
        raw.zone.clone(),
        cfg.http.to_string(),
        cfg.peer.to_string(),
    );
    config.seeds = raw.seeds.clone();
    config.region = raw.region.clone();
    config.layout_version = layout.current().map_or(0, |l| l.version);
    // Sealed with a secret keyring; plaintext (as before keyrings) with the public default.
    let transport = if keyring.is_secret() {
        GossipTransport::SealedUdp(keyring.derive(Purpose::Gossip))
    } else {
        GossipTransport::Udp
    };
    let membership = Membership::start(config, transport)
        .await
        .map_err(|e| Error::Startup(format!("gossip: {e}")))?;
    Ok(Arc::new(membership))
}

/// The data path's settings from the configuration, `n` and the partition count being the
/// layout's.
fn settings(cfg: &Validated, n: u8, partitions: u32, keyring: &Keyring) -> Settings {
    let raw = &cfg.raw;
    Settings {
        n,
        r: raw.r.min(n),
        w: raw.w.min(n),
        partitions,
        siblings_max: raw.limits.siblings_max,
        default_ttl_secs: raw.ttl.default_ttl_secs,
        rpc_timeout: Duration::from_millis(raw.server.rpc_timeout_ms),
        read_repair_inflight_max: if raw.repair.read_repair {
            raw.repair.read_repair_inflight_max
        } else {
            0
        },
        read_all_every: raw.repair.read_all_every,
        read_hedge: Duration::from_millis(raw.repair.read_hedge_ms),
        context_keys: keyring.derive(Purpose::Contexts),
    }
}

/// The cluster keyring: `security.cluster_keys` if set (refused if unreadable or invalid;
/// a warning if others than the owner may read it), else the public default of the cluster
/// name (`yeskv_core::keyring::Keyring::unkeyed`).
pub fn load_keyring(cfg: &Validated) -> Result<Keyring, Error> {
    let Some(path) = &cfg.raw.security.cluster_keys else {
        return Ok(Keyring::unkeyed(&cfg.raw.cluster_name));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Startup(format!(
            "cannot read the cluster keyring {}: {e}",
            path.display()
        ))
    })?;
    let keyring =
        Keyring::parse(&text).map_err(|e| Error::Startup(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the cluster keyring may be read by others than its owner (chmod 600 it)"
                );
            }
        }
    }
    tracing::info!(
        keys = keyring.keys().len(),
        "cluster keyring loaded: contexts signed, gossip sealed"
    );
    Ok(keyring)
}

/// The first admin key (`security.admin_key_file`): once this node has a layout and has
/// caught up, if the cluster has no API key at all, registers the key in `path` as the admin
/// key `admin`, first writing a new one there (mode 0600) if the file does not exist. Retried
/// until it is done or a key exists (the change needs a layout leader). A file whose key is
/// not the one registered (another node won) is left alone and logged.
fn start_admin_key(
    layout: &LayoutService,
    state: &Arc<AppState<ServerEngine>>,
    path: std::path::PathBuf,
) {
    let layout = layout.clone();
    let state = state.clone();
    tokio::spawn(async move {
        let mut layouts = layout.subscribe();
        if layouts.wait_for(Option::is_some).await.is_err() {
            return;
        }
        loop {
            while !state.caught_up.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !layout.state().state.keys.is_empty() {
                return;
            }
            let secret = match read_or_create_admin_key(&path) {
                Ok(secret) => secret,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot create the first admin key");
                    return;
                }
            };
            let key = yeskv_layout::ApiKey {
                hash: crate::auth::hash_secret(&secret),
                admin: true,
                buckets: Default::default(),
            };
            match layout.put_key("admin".to_string(), key).await {
                Ok(()) => {
                    state.guard.keys.install(&layout.state());
                    tracing::info!(path = %path.display(), "first admin key \"admin\" registered");
                    return;
                }
                Err(yeskv_layout::Error::Rejected(refused)) => {
                    tracing::warn!(error = %refused, path = %path.display(), "the first admin key was not registered (another node's may have been)");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registering the first admin key: retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// The admin key in `path`, written there first (mode 0600, never overwriting) if absent.
pub fn read_or_create_admin_key(path: &std::path::Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_string();
            if secret.is_empty() || secret.len() > 256 || secret.contains(char::is_whitespace) {
                return Err(format!("{} does not hold one key", path.display()));
            }
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = crate::auth::generate_secret()?;
            write_new_file(path, &format!("{secret}\n"), true)?;
            Ok(secret)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `text` to a new file at `path` (never over an existing one) and syncs it; a `secret`
/// one is created readable by its owner only (mode 0600 from the start, never readable by
/// others, not even briefly). The one writer of the node's and the CLI's key and certificate
/// files.
pub fn write_new_file(path: &std::path::Path, text: &str, secret: bool) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        if secret {
            options.mode(0o600);
        }
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The background repair's settings from the configuration.
fn repair_settings(cfg: &Validated) -> RepairSettings {
    let r = &cfg.raw.repair;
    RepairSettings {
        handoff: HandoffSettings {
            interval: Duration::from_millis(r.handoff_interval_ms),
            batch: r.handoff_batch,
            inflight_max: r.handoff_inflight_max,
        },
        aae: AaeSettings {
            interval: Duration::from_millis(r.aae_interval_ms),
            keys_per_round_max: r.aae_keys_per_exchange_max,
        },
        reaper: ReaperSettings {
            interval: Duration::from_millis(r.reap_interval_ms),
        },
        xr: XrSettings {
            batch: cfg.raw.cross_region.batch,
            batch_bytes: cfg.raw.limits.object_bytes_max,
            retry: Duration::from_millis(cfg.raw.cross_region.retry_ms),
            poll: Duration::from_millis(cfg.raw.cross_region.poll_ms),
        },
        expiry: crate::expiry::ExpirySettings::new(&cfg.raw.ttl),
    }
}

/// Receiving partitions: completions are recorded through the layout service.
fn transfer_settings(cfg: &Validated, layout: &LayoutService) -> TransferSettings {
    TransferSettings::new(&cfg.raw.transfer, Arc::new(LayoutTransfers(layout.clone())))
}

/// [`LayoutControl`] over the node's layout service.
struct LayoutTransfers(LayoutService);

impl LayoutControl for LayoutTransfers {
    fn transfer_done(
        &self,
        partitions: Vec<(u16, u64)>,
    ) -> futures_util::future::BoxFuture<'static, Result<(), Error>> {
        let layout = self.0.clone();
        Box::pin(async move {
            layout
                .transfer_done(partitions)
                .await
                .map_err(|e| Error::Layout(format!("recording received partitions: {e}")))
        })
    }
}

/// Anti-entropy trees: loaded if the last run stopped cleanly, else rebuilt in the background
/// (those partitions report no root until ready), as the node's job `tree-rebuild`.
fn start_tree_rebuild(node: &mut Node<ServerEngine>, partitions: u32) {
    let replica = node.context().replica().clone();
    let rebuild = replica.init_trees(partitions);
    if rebuild.is_empty() {
        return;
    }
    node.start_job(
        "tree-rebuild",
        move |stop, status: Arc<WorkerStatus>| async move {
            let job = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let count = rebuild.len();
                for p in rebuild {
                    if stop.is_stopped() {
                        return Ok(());
                    }
                    replica.rebuild_tree(p)?;
                }
                tracing::info!(
                    partitions = count,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "anti-entropy trees rebuilt"
                );
                Ok(())
            });
            crate::workers::once(&status, async move {
                job.await
                    .map_err(|e| Error::Startup(format!("the tree rebuild task failed: {e}")))?
            })
            .await
        },
    );
}

/// Gossips the layout version this node holds, as the node's job `layout-gossip`.
fn start_layout_gossip(
    node: &mut Node<ServerEngine>,
    layout: &LayoutService,
    membership: &Arc<Membership>,
) {
    let membership = membership.clone();
    let mut layouts = layout.subscribe();
    node.start_job("layout-gossip", move |stop, _status| async move {
        loop {
            let changed = tokio::select! {
                changed = layouts.changed() => changed.is_ok(),
                _ = stop.stopped() => false,
            };
            if !changed {
                return;
            }
            let version = layouts.borrow_and_update().as_ref().map(|l| l.version);
            if let Some(v) = version {
                let _ = membership.set_layout_version(v).await;
            }
        }
    });
}

/// What a join records about a node, from the membership view.
fn directory(membership: &Arc<Membership>) -> crate::api::Directory {
    let view = membership.subscribe();
    Box::new(move |node| {
        view.borrow().member(node).map(|m| JoinSpec {
            zone: m.zone.clone(),
            capacity: 1,
            http: m.http_addr.clone(),
            peer: m.peer_addr.clone(),
            region: m.region.clone(),
        })
    })
}

/// Serves keys once this node has a layout and has applied what the layout group had committed
/// by then ([`AppState::keys_gate`]): at once for a node given its first layout, after a read
/// index from the leader for a node that restarted on a layout of its own. Without a leader in the layout's request timeout, it
/// serves by the state it has (a missing leader delays a node's start, never blocks its data
/// path for longer).
fn start_catch_up(layout: &LayoutService, state: &Arc<AppState<ServerEngine>>) {
    let layout = layout.clone();
    let state = state.clone();
    // A node that starts with no layout gets its first one by the Raft log (or a snapshot)
    // like every other entry, in order: by then it has applied every change committed before
    // it was joined, so it serves at once. A node that starts on a layout of its own may have
    // missed changes while it was down: it asks the leader.
    let fresh = layout.current().is_none();
    tokio::spawn(async move {
        let mut layouts = layout.subscribe();
        if layouts.wait_for(Option::is_some).await.is_err() {
            return;
        }
        if fresh {
            tracing::info!(
                applied = layout.state().applied_index,
                "given a layout: serving keys"
            );
        } else {
            let started = Instant::now();
            match layout.catch_up().await {
                Ok(index) => tracing::info!(
                    index,
                    ms = started.elapsed().as_millis() as u64,
                    "caught up with the layout group: serving keys"
                ),
                Err(e) => tracing::warn!(
                    applied = layout.state().applied_index,
                    error = %e,
                    "could not learn the layout group's commit index; serving keys by the \
                     layout state applied here"
                ),
            }
        }
        // Bucket properties come from the state applied now, even if the task that installs
        // states has not run since.
        state.buckets.install(&layout.state());
        state.set_caught_up();
    });
}

/// Serves the client HTTP API (HTTPS only when `tls` is set) until `shutdown` resolves, then
/// drains (module docs).
async fn serve_http(
    cfg: &Validated,
    state: Arc<AppState<ServerEngine>>,
    chaos: Option<Arc<crate::chaos::ChaosControl>>,
    tls: Option<&Arc<yeskv_tls::TlsState>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(|e| Error::Startup(format!("cannot listen on {}: {e}", cfg.http)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Startup(format!("listener address: {e}")))?;
    state.set_serving(Serving::Serving);
    tracing::info!(node = %cfg.node_id, http = %local, https = tls.is_some(), zone = %cfg.raw.zone, region = %cfg.raw.region, sync = %cfg.sync, "serving");
    let drain = Duration::from_millis(cfg.raw.server.shutdown_drain_ms);
    let draining = state.clone();
    let graceful = async move {
        shutdown.await;
        draining.set_serving(Serving::Draining);
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: draining"
        );
        tokio::time::sleep(drain).await;
    };
    let mut extra = axum::Router::new();
    if let Some(control) = chaos {
        tracing::warn!(
            "chaos layer enabled: POST /v1/admin/chaos delays (and with WAN rules drops) internode calls"
        );
        extra = crate::chaos::routes(control);
    }
    let app = crate::api::router_with(state, extra);
    let limits = ConnectionLimits {
        header_timeout: Duration::from_millis(cfg.raw.server.http_header_timeout_ms),
        connections_max: cfg.raw.server.http_connections_max,
    };
    match tls {
        Some(tls) => {
            let listener = crate::tls::HttpsListener::new(listener, tls)?;
            serve_connections(listener, app, limits, graceful).await;
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            serve_connections(listener, app, limits, graceful).await;
        }
    }
    Ok(())
}

/// Bounds on the client API's connections (`[server]` settings).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Time to receive a request's headers; also how long a kept-alive connection may wait
    /// idle for its next request.
    pub header_timeout: Duration,
    /// Connections open at once; past it a new one is closed at once.
    pub connections_max: usize,
}

/// Serves `app` on every connection `listener` accepts until `shutdown` completes, then lets
/// the open connections finish their requests (idle ones close at once).
///
/// The accept loop of `axum::serve`, with what it lacks: a header timeout (hyper's, which
/// needs a timer; without it a client trickling headers holds a connection and its task
/// forever: slowloris) and a cap on open connections (past it, accepted and closed at once,
/// counted, so that the listen backlog does not fill with connections nobody serves).
pub async fn serve_connections<L>(
    mut listener: L,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) where
    L: axum::serve::Listener,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let open = ::metrics::gauge!(crate::metrics::HTTP_CONNECTIONS_OPEN);
    let refused = ::metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED);
    tokio::pin!(shutdown);
    loop {
        let (io, _remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            tracing::debug!(
                max = limits.connections_max,
                "client connection closed: server.http_connections_max open"
            );
            drop(io);
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "client connection ended");
            }
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
