//! Running a node: open storage, pick the actor epoch, serve HTTP, and shut down gracefully.
//!
//! Shutdown order (on the future passed to [`run`] resolving, i.e. SIGTERM or Ctrl-C): health
//! turns `503` ("draining"), the node waits `server.shutdown_drain_ms` for load balancers to
//! notice, the listener closes and in-flight requests finish, storage is flushed, and a
//! clean-shutdown marker is written so the next start keeps the actor epoch.
//!
//! Two listeners: the client HTTP API on `http`, internode RPC (`yeskv-rpc`) on `peer`.

use std::future::Future;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use yeskv_storage::{CachedEngine, Engine, RocksConfig, RocksEngine};

use crate::api::{router, AppState, Serving};
use crate::clock::SystemClock;
use crate::cluster::ClusterTopology;
use crate::config::Validated;
use crate::coordinator::{Coordinator, Settings};
use crate::peer::{LayoutOverPeers, PeerRequest, PeerResponse};
use crate::replica::{Replica, Startup};
use yeskv_layout::{JoinSpec, Layout, LayoutConfig, LayoutService, StorageConfig};
use yeskv_membership::{GossipTransport, Membership, MembershipConfig};
use yeskv_rpc::{RpcClient, RpcConfig, RpcServer};

/// Runs a node until `shutdown` resolves. Errors are one-line, for the binary to print.
pub async fn run(
    cfg: Validated,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let raw = &cfg.raw;
    let mut rocks = RocksConfig::new(raw.data_dir.join("db"));
    rocks.sync = cfg.sync;
    rocks.block_cache_mb = raw.storage.block_cache_mb;
    rocks.write_buffer_mb = raw.storage.write_buffer_mb;
    rocks.group_commit_window_us = raw.storage.group_commit_window_us;
    rocks.reserve_bytes = raw.storage.reserve_mb.saturating_mul(1 << 20);
    let engine = tokio::task::spawn_blocking(move || RocksEngine::open(&rocks))
        .await
        .map_err(|e| format!("opening storage: {e}"))?
        .map_err(|e| format!("opening storage in {}: {e}", raw.data_dir.display()))?;
    let engine: Arc<dyn Engine> = match raw.storage.object_cache_mb {
        0 => Arc::new(engine),
        mb => Arc::new(CachedEngine::new(engine, (mb as u64) << 20)),
    };

    let (replica, startup) = Replica::open(
        engine,
        cfg.node_id.clone(),
        raw.ttl.reap_grace_secs.saturating_mul(1000),
        rand::random::<u64>,
    )
    .await
    .map_err(|e| e.to_string())?;
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
    let mut replica = replica;
    replica.set_hint_limits(crate::replica::HintLimits {
        per_target_max: raw.repair.hints_per_target_max,
        bytes_max: raw.repair.hints_mb_max.saturating_mul(1 << 20),
    });
    if raw.repair.hint_age_max_secs.is_some() {
        tracing::warn!(
            "repair.hint_age_max_secs is no longer used: hints are kept until delivered"
        );
    }
    let replica = Arc::new(replica);

    let rpc_config = RpcConfig::new(raw.cluster_name.clone(), cfg.node_id.as_str());
    let peers: RpcClient<PeerRequest, PeerResponse> =
        RpcClient::new(rpc_config.clone()).map_err(|e| format!("internode RPC: {e}"))?;
    let stats_client = peers.clone();

    // The layout: replicated by Raft among the owners, persisted under data_dir/layout. A node
    // started without seeds and without a layout creates a new cluster that it owns alone.
    let layout_config = LayoutConfig::new(
        cfg.node_id.clone(),
        raw.cluster_name.clone(),
        cfg.peer.to_string(),
        StorageConfig::Directory(raw.data_dir.join("layout")),
    );
    let layout = LayoutService::start(layout_config, Arc::new(LayoutOverPeers(peers.clone())))
        .await
        .map_err(|e| format!("layout: {e}"))?;
    let bootstrap = if layout.current().is_none() && raw.seeds.is_empty() {
        let spec = JoinSpec {
            zone: raw.zone.clone(),
            capacity: 1,
            http: cfg.http.to_string(),
            peer: cfg.peer.to_string(),
        };
        Some(
            Layout::bootstrap(
                raw.cluster_name.clone(),
                raw.n,
                raw.partitions,
                cfg.node_id.clone(),
                spec,
            )
            .map_err(|e| format!("layout: {e}"))?,
        )
    } else {
        None
    };
    // The partition count and n are fixed when the cluster is created: the layout's win.
    let (n, partitions) = match (layout.current(), &bootstrap) {
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
    // Gossip membership and failure detection (UDP, on the peer address's port).
    let mut membership_config = MembershipConfig::new(
        cfg.node_id.clone(),
        raw.cluster_name.clone(),
        raw.zone.clone(),
        cfg.http.to_string(),
        cfg.peer.to_string(),
    );
    membership_config.seeds = raw.seeds.clone();
    membership_config.layout_version = layout.current().map_or(0, |l| l.version);
    // Dropped at exit: chitchat has no goodbye, peers notice through the failure detector.
    let membership = Arc::new(
        Membership::start(membership_config, GossipTransport::Udp)
            .await
            .map_err(|e| format!("gossip: {e}"))?,
    );
    let view = membership.subscribe();
    let liveness = Arc::new(move |node: &yeskv_core::NodeId| view.borrow().is_up(node));
    let topology = ClusterTopology::follow(cfg.node_id.clone(), layout.subscribe(), liveness);
    // Gossip the layout version this node holds.
    {
        let membership = membership.clone();
        let mut layouts = layout.subscribe();
        tokio::spawn(async move {
            while layouts.changed().await.is_ok() {
                let version = layouts.borrow_and_update().as_ref().map(|l| l.version);
                if let Some(v) = version {
                    let _ = membership.set_layout_version(v).await;
                }
            }
        });
    }
    let directory_view = membership.subscribe();
    let directory: crate::cluster_api::Directory = Box::new(move |node| {
        directory_view.borrow().member(node).map(|m| JoinSpec {
            zone: m.zone.clone(),
            capacity: 1,
            http: m.http_addr.clone(),
            peer: m.peer_addr.clone(),
        })
    });

    // Anti-entropy trees: loaded if the last run stopped cleanly, else rebuilt in the
    // background (those partitions report no root until ready).
    let rebuild = replica.init_trees(partitions);
    if !rebuild.is_empty() {
        let replica = replica.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let count = rebuild.len();
            for p in rebuild {
                if let Err(e) = replica.rebuild_tree(p) {
                    tracing::warn!(partition = p, error = %e, "anti-entropy tree rebuild failed");
                }
            }
            tracing::info!(
                partitions = count,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "anti-entropy trees rebuilt"
            );
        });
    }

    let settings = Settings {
        n,
        r: raw.r.min(n),
        w: raw.w.min(n),
        partitions,
        siblings_max: raw.limits.siblings_max,
        default_ttl_secs: raw.ttl.default_ttl_secs,
        rpc_timeout: std::time::Duration::from_millis(raw.server.rpc_timeout_ms),
        read_repair_inflight_max: if raw.repair.read_repair {
            raw.repair.read_repair_inflight_max
        } else {
            0
        },
        read_all_every: raw.repair.read_all_every,
        read_hedge: std::time::Duration::from_millis(raw.repair.read_hedge_ms),
    };
    // Test-only: the chaos runner's delay on the coordinator's internode calls.
    let chaos = raw
        .chaos
        .enabled
        .then(|| Arc::new(crate::chaos::ChaosControl::default()));
    let coordinator_peers: Arc<dyn crate::peer::PeerClient> = match &chaos {
        Some(control) => Arc::new(crate::chaos::ChaosPeers::new(
            Arc::new(peers),
            control.clone(),
        )),
        None => Arc::new(peers),
    };
    let state = Arc::new(AppState {
        coordinator: Coordinator::new(
            replica.clone(),
            Arc::new(SystemClock),
            settings,
            topology,
            coordinator_peers,
        ),
        layout: layout.clone(),
        membership: Some(membership.clone()),
        directory,
        limits: raw.limits.clone(),
        node_id: cfg.node_id.clone(),
        zone: raw.zone.clone(),
        http: cfg.http.to_string(),
        peer: cfg.peer.to_string(),
        serving: AtomicU8::new(Serving::Starting as u8),
        metrics,
        started: Instant::now(),
        peer_stats: Box::new(move || stats_client.stats()),
    });

    // Internode RPC on the peer address: replicas of other coordinators reach this node here.
    let peer_listener = tokio::net::TcpListener::bind(cfg.peer)
        .await
        .map_err(|e| format!("cannot listen on peer address {}: {e}", cfg.peer))?;
    let rpc_server: RpcServer<PeerRequest, PeerResponse> =
        RpcServer::new(rpc_config).map_err(|e| format!("internode RPC: {e}"))?;
    let (rpc_stop_tx, rpc_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rpc_state = state.clone();
    let rpc_task = tokio::spawn(async move {
        rpc_server
            .serve(
                peer_listener,
                move |_peer, request| {
                    let state = rpc_state.clone();
                    async move {
                        match request {
                            PeerRequest::Layout(rpc) => {
                                PeerResponse::Layout(state.layout.handle(rpc).await)
                            }
                            other => state.coordinator.serve_peer(other).await,
                        }
                    }
                },
                async move {
                    let _ = rpc_stop_rx.await;
                },
            )
            .await;
    });

    if let Some(first) = bootstrap {
        layout
            .bootstrap_single(first)
            .await
            .map_err(|e| format!("creating the cluster's first layout: {e}"))?;
        tracing::info!(cluster = %raw.cluster_name, "new cluster: this node owns every partition");
    }

    // Background repair: hinted handoff (and anti-entropy, see aae.rs).
    let (workers_stop_tx, workers_stop_rx) = tokio::sync::watch::channel(false);
    let handoff_task = tokio::spawn(crate::handoff::run(
        state.coordinator.clone(),
        crate::handoff::HandoffSettings {
            interval: Duration::from_millis(raw.repair.handoff_interval_ms),
            batch: raw.repair.handoff_batch,
            inflight_max: raw.repair.handoff_inflight_max,
        },
        workers_stop_rx.clone(),
    ));
    let aae_settings = crate::aae::AaeSettings {
        interval: Duration::from_millis(raw.repair.aae_interval_ms),
        keys_per_round_max: raw.repair.aae_keys_per_exchange_max,
        reap_interval: Duration::from_millis(raw.repair.reap_interval_ms),
    };
    let aae_task = tokio::spawn(crate::aae::run_exchanges(
        state.coordinator.clone(),
        aae_settings.clone(),
        workers_stop_rx.clone(),
    ));
    let reaper_task = tokio::spawn(crate::aae::run_reaper(
        state.coordinator.clone(),
        aae_settings,
        workers_stop_rx.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.http))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    state.set_serving(Serving::Serving);
    tracing::info!(node = %cfg.node_id, http = %local, zone = %raw.zone, sync = %cfg.sync, "serving");

    let drain = Duration::from_millis(raw.server.shutdown_drain_ms);
    let state2 = state.clone();
    let graceful = async move {
        shutdown.await;
        state2.set_serving(Serving::Draining);
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: draining"
        );
        tokio::time::sleep(drain).await;
    };
    let mut app = router(state.clone());
    if let Some(control) = chaos {
        tracing::warn!("chaos layer enabled: POST /v1/admin/chaos delays internode calls");
        app = app.merge(crate::chaos::routes(control));
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .await
        .map_err(|e| format!("http server: {e}"))?;

    if let Err(e) = layout.shutdown().await {
        tracing::warn!(error = %e, "layout service did not stop cleanly");
    }
    let _ = workers_stop_tx.send(true);
    let _ = handoff_task.await;
    let _ = aae_task.await;
    let _ = reaper_task.await;
    let _ = rpc_stop_tx.send(());
    let _ = rpc_task.await;
    tracing::info!("in-flight requests finished; flushing storage");
    replica.close_cleanly().await.map_err(|e| e.to_string())?;
    tracing::info!("stopped cleanly");
    Ok(())
}
