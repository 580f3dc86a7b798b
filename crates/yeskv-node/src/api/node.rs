//! The node's own endpoints: `/v1/status`, `/v1/ring`, `/v1/health`, `/metrics`,
//! `/v1/admin/compact`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use yeskv_core::keyspace::HASH_NAME;
use yeskv_core::NodeId;
use yeskv_layout::Layout;
use yeskv_membership::{MemberStatus, MembershipView};
use yeskv_storage::{DiskStatus, Engine};

use super::{json_error, AppState, ErrorBody, Serving};
use crate::error::Error;
use crate::metrics;
use crate::replica::Replica;
use crate::workers::WorkerStatus;

/// The release this build is (the workspace's version).
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// Most reap-queue entries `/v1/status` counts (it scans the queue).
const REAP_QUEUE_COUNT_MAX: usize = 100_000;

/// `GET /v1/status`: this node's view of itself and of the cluster, one JSON document.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "node",
    operation_id = "status",
    summary = "This node's view of itself and of the cluster",
    description = "`node`, `release`, `protocol_versions` (oldest and newest internode protocol \
        spoken), `zone`, `region`, `serving`, quorum settings, layout version, \
        `transfers`, `members` (each `id`, `peer`, `http`, `zone`, `region`, `status`, `release` \
        (null: 0.1.0), `protocol` (the version this node's connection to it speaks; null: none \
        open), `state`, `owns`), `regions`, hints, reaping, expiry, `disk`, `workers`, `partitions` (each `id`, \
        `merkle_root`, `keys`).",
    responses((status = 200, description = "The status document", body = Object)),
    security(("admin_key" = []))
)]
pub(super) async fn status<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let settings = state.coordinator.settings();
    let replica = state.coordinator.replica();
    let layout = state.layout.current();
    let gossip = state.membership.as_ref().map(|m| m.view());
    let members = members_json(&state, layout.as_deref(), gossip.as_ref());
    let partitions = partitions_json(&state.node_id, replica, layout.as_deref());
    let body = json!({
        "node": state.node_id.as_str(),
        "release": RELEASE,
        // The internode protocol versions this build speaks (a connection speaks the newest
        // both ends do), and the store and record formats it writes.
        "protocol_versions": [yeskv_rpc::PROTOCOL_VERSION_MIN, yeskv_rpc::PROTOCOL_VERSION],
        "zone": state.zone,
        "region": state.region,
        "actor": replica.actor().to_string(),
        "serving": format!("{:?}", state.serving()).to_lowercase(),
        "uptime_secs": state.started.elapsed().as_secs(),
        "sync": replica.engine().sync_mode().to_string(),
        "n": settings.n,
        "r": settings.r,
        "w": settings.w,
        "layout_version": layout.as_ref().map_or(0, |l| l.version),
        "layout_epoch": layout.as_ref().map_or(0, |l| l.epoch),
        "transfers": transfers_json(
            &state.node_id,
            layout.as_deref(),
            &state.coordinator.context().transfers().snapshot(),
        ),
        "members": members,
        // Gossip packets dropped for not opening under the cluster keyring (sealed gossip).
        "gossip_sealed_refused": state.membership.as_ref().map(|m| m.stats().gossip.sealed_refused),
        // Each other region: writes queued for it here, the oldest one's age, the link.
        "regions": crate::xr::regions(state.coordinator.context()),
        "hints_pending": replica.hints_pending(),
        "hint_bytes": replica.hint_bytes(),
        // Keys waiting for the reaper (tombstones; expiring keys never queue), counted up to
        // REAP_QUEUE_COUNT_MAX.
        "reap_queue_entries": replica.reap_queue_len(REAP_QUEUE_COUNT_MAX).ok(),
        // Expiring records: pending (not droppable yet), due (droppable, since the last expiry
        // compaction), dropped by compaction, and expiry compactions run (`crate::expiry`).
        "expiry": replica.expiry().snapshot(),
        "disk": replica.engine().disk().map(|d| disk_json(&d)),
        "corrupt_records": replica.corrupt_total(),
        // Keys this node stores in every partition, held or not (a former holder's copies stay
        // until cleanup removes them).
        "keys_stored": keys_stored(replica),
        "workers": workers_json(&state.workers),
        "partitions": partitions,
    });
    axum::Json(body).into_response()
}

/// The `transfers` of `/v1/status`: partitions still moving to new holders, cluster-wide
/// (`(partition, receiving node)` pairs the layout lists as syncing), and this node's own
/// receiving: partitions, bytes still to receive (`null` until a holder has told the size of
/// each), the recent rate and the ETA at it (at the configured limit while idle), and what
/// it received since it started.
fn transfers_json(
    this_node: &NodeId,
    layout: Option<&Layout>,
    stats: &crate::transfer::TransferSnapshot,
) -> serde_json::Value {
    let pending = layout.map_or(0, |l| {
        l.transitions
            .values()
            .map(|t| t.syncing.len())
            .sum::<usize>()
    });
    let incoming = layout.map_or(0, |l| l.syncing_of(this_node).len());
    json!({
        "partitions_pending": pending,
        "partitions_incoming": incoming,
        "bytes_pending": if incoming == 0 { Some(0) } else { stats.bytes_pending },
        "rate_bytes_per_s": stats.rate_bytes_per_s.round(),
        "rate_limit_bytes_per_s": stats.rate_limit,
        "eta_s": if incoming == 0 { Some(0.0) } else { stats.eta_s.map(|e| (e * 10.0).round() / 10.0) },
        "keys_received": stats.keys_received,
        "bytes_received": stats.bytes_received,
    })
}

/// The `members` of `/v1/status`: the layout's members, then the nodes that joined the gossip
/// but own nothing yet, then this node itself when it is in neither (no layout, no gossip).
fn members_json<E: Engine>(
    state: &AppState<E>,
    layout: Option<&Layout>,
    gossip: Option<&MembershipView>,
) -> Vec<serde_json::Value> {
    let liveness = |id: &NodeId| liveness(&state.node_id, gossip, id);
    // The release each member runs, as it gossips it (`null`: release 0.1.0, which does not).
    let release = |id: &NodeId| -> Option<String> {
        if *id == state.node_id {
            return Some(RELEASE.to_string());
        }
        gossip
            .and_then(|g| g.member(id))
            .and_then(|m| m.release.clone())
    };
    // The protocol version this node's connection to each peer address speaks, if one is open.
    let protocols: BTreeMap<String, u16> = (state.peer_stats)()
        .into_iter()
        .filter_map(|p| Some((p.addr, p.protocol_version?)))
        .collect();
    let protocol = |id: &NodeId, peer: &str| -> Option<u16> {
        if *id == state.node_id {
            return Some(yeskv_rpc::PROTOCOL_VERSION);
        }
        protocols.get(peer).copied()
    };
    let mut members: Vec<serde_json::Value> = Vec::new();
    if let Some(l) = layout {
        for (id, m) in &l.members {
            members.push(json!({
                "id": id.as_str(),
                "peer": m.peer,
                "http": m.http,
                "zone": m.zone,
                "region": m.region,
                "status": liveness(id),
                "release": release(id),
                "protocol": protocol(id, &m.peer),
                "state": m.state.as_str(),
                "owns": l.assignment.owned(id),
                "receiving": l.syncing_of(id).len(),
                "sourcing": l.transitions.values().filter(|t| t.sources.contains(id)).count(),
            }));
        }
    }
    let in_layout = |id: &NodeId| layout.is_some_and(|l| l.members.contains_key(id));
    if let Some(g) = gossip {
        for m in g.members.iter().filter(|m| !in_layout(&m.id)) {
            members.push(json!({
                "id": m.id.as_str(),
                "peer": m.peer_addr,
                "http": m.http_addr,
                "zone": m.zone,
                "region": m.region,
                "status": liveness(&m.id),
                "release": m.release,
                "state": "joining",
                "owns": 0,
            }));
        }
    }
    if !in_layout(&state.node_id) && gossip.is_none() {
        members.push(json!({
            "id": state.node_id.as_str(),
            "peer": state.peer,
            "http": state.http,
            "zone": state.zone,
            "region": state.region,
            "status": "up",
            "release": RELEASE,
            "state": "joining",
            "owns": 0,
        }));
    }
    members
}

/// A member's `status` as this node sees it: itself is always `up`; others are what the
/// gossip says (`up` or `down`), or `unknown` when the gossip does not know them.
fn liveness(this_node: &NodeId, gossip: Option<&MembershipView>, id: &NodeId) -> &'static str {
    if id == this_node {
        return "up";
    }
    match gossip.and_then(|g| g.member(id)) {
        Some(m) if m.status == MemberStatus::Up => "up",
        Some(_) => "down",
        None => "unknown",
    }
}

/// The `partitions` of `/v1/status`: every partition this node is a replica of, with the root
/// and key count of its tree (`null` while the tree is not built).
fn partitions_json<E: Engine>(
    this_node: &NodeId,
    replica: &Replica<E>,
    layout: Option<&Layout>,
) -> Vec<serde_json::Value> {
    let local_partitions: Vec<u32> = match layout {
        Some(l) => (0..l.partitions)
            .filter(|p| l.assignment.replicas(*p as u16).contains(this_node))
            .collect(),
        None => Vec::new(),
    };
    local_partitions
        .iter()
        .map(|id| match replica.tree_summary(*id as u16) {
            Some(t) => {
                json!({ "id": id, "merkle_root": format!("{:016x}", t.root), "keys": t.keys })
            }
            None => json!({ "id": id, "merkle_root": null, "keys": null }),
        })
        .collect()
}

/// The `disk` of `/v1/status`: the filesystem under the database and what the database takes.
fn disk_json(d: &DiskStatus) -> serde_json::Value {
    json!({
        "path": d.path.display().to_string(),
        "total_bytes": d.total_bytes,
        "free_bytes": d.free_bytes,
        "used_bytes": {
            "sst": d.usage.sst,
            "wal": d.usage.wal,
            "manifest": d.usage.manifest,
            "info_log": d.usage.info_log,
            "other": d.usage.other,
            "total": d.usage.total(),
        },
        "reserve_bytes": d.reserve_bytes,
        "writable": d.writable,
        "error": d.error,
    })
}

/// The `workers` of `/v1/status`: each background worker's state and counters.
fn workers_json(workers: &[Arc<WorkerStatus>]) -> Vec<serde_json::Value> {
    workers
        .iter()
        .map(|w| {
            json!({
                "name": w.name(),
                "state": w.state().as_str(),
                "rounds": w.rounds(),
                "failures": w.failures(),
                "last_error": w.last_error(),
            })
        })
        .collect()
}

/// `GET /v1/ring`: the layout clients route by (`503` while this node has none).
#[utoipa::path(
    get,
    path = "/v1/ring",
    tag = "node",
    operation_id = "ring",
    summary = "The layout clients route by",
    responses(
        (status = 200, description = "The layout", body = RingBody),
        (status = 503, description = "This node has no layout yet", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub(super) async fn ring<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let Some(layout) = state.layout.current() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has no layout yet (it joined the gossip but owns nothing)",
        );
    };
    let names = |nodes: &mut dyn Iterator<Item = &NodeId>| {
        nodes.map(|n| n.as_str().to_string()).collect::<Vec<_>>()
    };
    let partitions = (0..layout.partitions)
        .map(|id| {
            let transition = layout.transition(id as u16);
            RingPartition {
                id,
                preference: names(&mut layout.assignment.replicas(id as u16).iter()),
                syncing: transition.map(|t| names(&mut t.syncing.keys())),
                sources: transition.map(|t| names(&mut t.sources.iter())),
            }
        })
        .collect();
    let nodes = layout
        .members
        .iter()
        .map(|(id, m)| RingNode {
            id: id.as_str().to_string(),
            http: m.http.clone(),
            zone: m.zone.clone(),
            region: m.region.clone(),
        })
        .collect();
    axum::Json(RingBody {
        version: layout.version,
        epoch: layout.epoch,
        n: layout.n,
        replication: layout.replication.clone(),
        partition_count: layout.partitions,
        partitions,
        nodes,
        hash: HASH_NAME,
    })
    .into_response()
}

/// The answer of `GET /v1/ring`: the layout, so that a client can route by key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingBody {
    /// The layout version.
    pub version: u64,
    /// The layout epoch (bumped when a cluster is re-created from a backup or a forced change).
    pub epoch: u64,
    /// Replicas per key.
    pub n: u8,
    /// Replicas per region (empty: one implicit region).
    pub replication: BTreeMap<String, u8>,
    /// How many partitions the key space is cut into.
    pub partition_count: u32,
    /// Every partition's replicas.
    pub partitions: Vec<RingPartition>,
    /// The members.
    pub nodes: Vec<RingNode>,
    /// The key-to-partition function.
    pub hash: &'static str,
}

/// One partition of `/v1/ring`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingPartition {
    /// The partition.
    pub id: u32,
    /// Its replicas, primaries first.
    pub preference: Vec<String>,
    /// While it moves: the nodes receiving it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syncing: Option<Vec<String>>,
    /// While it moves: the nodes it is copied from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
}

/// One member of `/v1/ring`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingNode {
    /// Its id.
    pub id: String,
    /// Its client (HTTP) address.
    pub http: String,
    /// Its zone.
    pub zone: String,
    /// Its region.
    pub region: String,
}

/// The answer of `POST /v1/admin/compact`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactBody {
    /// The space compacted (`data`).
    pub compacted: &'static str,
    /// How long it took.
    pub duration_ms: u64,
}

/// `POST /v1/admin/compact`: compacts the data space now and says how long it took.
#[utoipa::path(
    post,
    path = "/v1/admin/compact",
    tag = "node",
    operation_id = "compact",
    summary = "Compact this node's data now",
    responses(
        (status = 200, description = "Compacted", body = CompactBody),
        (status = 500, description = "The compaction task failed", body = ErrorBody),
        (status = 503, description = "Storage refused", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub(super) async fn compact<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let replica = state.coordinator.replica().clone();
    let started = Instant::now();
    let result =
        tokio::task::spawn_blocking(move || replica.engine().compact(yeskv_storage::Space::Data))
            .await;
    match result {
        Ok(Ok(())) => axum::Json(CompactBody {
            compacted: "data",
            duration_ms: started.elapsed().as_millis() as u64,
        })
        .into_response(),
        Ok(Err(e)) => Error::from(e).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// A node's serving state, as `/v1/health` answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    /// Taking requests.
    Serving,
    /// Opening storage.
    Starting,
    /// Given a layout but not yet caught up with the layout group.
    CatchingUp,
    /// Shutting down.
    Draining,
}

/// The answer of `GET /v1/health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    /// The serving state.
    pub status: HealthStatus,
}

/// `GET /v1/health`: `200` while serving, `503` while starting, catching up with the layout
/// ([`AppState::catching_up`]) or draining.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "node",
    operation_id = "health",
    summary = "Whether this node serves (for load balancers)",
    description = "Open: needs no key.",
    responses(
        (status = 200, description = "Serving", body = HealthBody),
        (status = 503, description = "Starting, catching up or draining", body = HealthBody),
    )
)]
pub(super) async fn health<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let status = match state.serving() {
        Serving::Serving if state.catching_up() => HealthStatus::CatchingUp,
        Serving::Serving => HealthStatus::Serving,
        Serving::Starting => HealthStatus::Starting,
        Serving::Draining => HealthStatus::Draining,
    };
    let code = match status {
        HealthStatus::Serving => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, axum::Json(HealthBody { status })).into_response()
}

/// `GET /metrics`: Prometheus text (`503` when this process installed no recorder).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Open unless `security.open_metrics = false` (then it needs an admin key).",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4",
            body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "No metrics recorder in this process", body = ErrorBody),
    )
)]
pub(super) async fn metrics_text<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    match &state.metrics {
        Some(handle) => {
            state.coordinator.replica().expiry().export_metrics();
            let mut text = metrics::render(
                handle,
                state.coordinator.replica().engine(),
                &(state.peer_stats)(),
                &(state.peer_server_stats)(),
            );
            hot_metrics(&mut text, state.coordinator.hot());
            cluster_metrics(&mut text, &state);
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder in this process",
        ),
    }
}

/// Top keys shown in `/metrics` (`GET /v1/hot` shows every tracked one).
const HOT_KEYS_IN_METRICS: usize = 10;

/// Appends the hot keys and per-partition operation counts to the Prometheus text (rendered
/// here: their label sets change with the load, and a key that cooled down must leave).
fn hot_metrics(text: &mut String, hot: &crate::hot::HotKeys) {
    use std::fmt::Write as _;
    let label = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        text,
        "# HELP yeskv_hot_key_ops Operations on the hottest keys (Space-Saving estimate, halved every minute).\n# TYPE yeskv_hot_key_ops gauge"
    );
    for k in hot.top(HOT_KEYS_IN_METRICS) {
        let _ = writeln!(
            text,
            "yeskv_hot_key_ops{{bucket=\"{}\",key=\"{}\"}} {}",
            label(&k.bucket),
            label(&k.key),
            k.ops
        );
    }
    let _ = writeln!(
        text,
        "# HELP yeskv_partition_ops_total Client operations coordinated here, by partition.\n# TYPE yeskv_partition_ops_total counter"
    );
    for (p, n) in hot.partitions() {
        let _ = writeln!(text, "yeskv_partition_ops_total{{partition=\"{p}\"}} {n}");
    }
}

/// Keys this node stores in every partition, held or not (a former holder's copies stay until
/// cleanup removes them), from the anti-entropy trees.
fn keys_stored<E: Engine>(replica: &Replica<E>) -> u64 {
    (0..replica.tree_partitions().unwrap_or(0))
        .filter_map(|p| replica.tree_summary(p as u16))
        .map(|s| s.keys)
        .sum()
}

/// One metric family in the Prometheus text format: `# HELP`, `# TYPE`, then each sample as
/// `(labels, value)` (labels already rendered, without braces; empty for none).
fn family(text: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    use std::fmt::Write as _;
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(text, "{name} {value}");
        } else {
            let _ = writeln!(text, "{name}{{{labels}}} {value}");
        }
    }
}

/// Appends what an operator watches of the cluster as this node sees it: the layout version,
/// gossip members up and suspected (rendered here: a member forgotten by gossip must leave the
/// text, not linger at its last value), gossip traffic refused, the reaper's queue and the
/// keys stored.
fn cluster_metrics<E: Engine>(text: &mut String, state: &AppState<E>) {
    let layout = state.layout.current();
    let version = layout.as_ref().map_or(0, |l| l.version);
    family(
        text,
        "yeskv_layout_version",
        "gauge",
        "Version of the cluster layout this node holds (0 before the first).",
        &[(String::new(), version as f64)],
    );
    if let Some(membership) = &state.membership {
        let view = membership.view();
        let stats = membership.stats();
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let (up, down) = (view.up().count(), view.down().count());
        family(
            text,
            "yeskv_gossip_members",
            "gauge",
            "Members gossip knows, by status: up, or down (suspected by the failure detector).",
            &[
                ("status=\"up\"".into(), up as f64),
                ("status=\"down\"".into(), down as f64),
            ],
        );
        let each: Vec<(String, f64)> = view
            .members
            .iter()
            .map(|m| {
                let labels = format!(
                    "member=\"{}\",zone=\"{}\",region=\"{}\"",
                    label(m.id.as_str()),
                    label(&m.zone),
                    label(&m.region)
                );
                (labels, f64::from(u8::from(m.status == MemberStatus::Up)))
            })
            .collect();
        family(
            text,
            "yeskv_gossip_member_up",
            "gauge",
            "1 while the failure detector hears the member, 0 while it suspects it.",
            &each,
        );
        let behind = view
            .members
            .iter()
            .filter(|m| m.status == MemberStatus::Up && m.layout_version < version)
            .count();
        family(
            text,
            "yeskv_layout_members_behind",
            "gauge",
            "Members up whose gossiped layout version is older than this node's.",
            &[(String::new(), behind as f64)],
        );
        family(
            text,
            "yeskv_gossip_sealed_refused_total",
            "counter",
            "Gossip packets dropped for not opening under the cluster keyring.",
            &[(String::new(), stats.gossip.sealed_refused as f64)],
        );
        family(
            text,
            "yeskv_gossip_send_errors_total",
            "counter",
            "Gossip messages the transport failed to send.",
            &[(String::new(), stats.gossip.send_errors as f64)],
        );
    }
    let replica = state.coordinator.replica();
    if let Ok(n) = replica.reap_queue_len(REAP_QUEUE_COUNT_MAX) {
        family(
            text,
            "yeskv_reap_queue_entries",
            "gauge",
            &format!("Tombstones waiting for the reaper (counted up to {REAP_QUEUE_COUNT_MAX})."),
            &[(String::new(), n as f64)],
        );
    }
    family(
        text,
        "yeskv_keys_stored",
        "gauge",
        "Keys this node stores, over every partition it has data of.",
        &[(String::new(), keys_stored(replica) as f64)],
    );
}

/// `GET /v1/hot`: this node's hottest keys and its operations per partition.
#[utoipa::path(
    get,
    path = "/v1/hot",
    tag = "node",
    operation_id = "hot",
    summary = "This node's hottest keys and its operations per partition",
    responses((status = 200, description = "Hot keys", body = HotBody)),
    security(("admin_key" = []))
)]
pub(super) async fn hot<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    let hot = state.coordinator.hot();
    let keys = hot
        .top(crate::hot::TRACKED)
        .into_iter()
        .map(|k| HotKeyBody {
            bucket: String::from_utf8_lossy(&k.bucket).into_owned(),
            key: String::from_utf8_lossy(&k.key).into_owned(),
            partition: k.partition,
            ops: k.ops,
            error: k.error,
        })
        .collect();
    let mut partitions = hot.partitions();
    partitions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let partitions = partitions
        .into_iter()
        .map(|(id, ops)| HotPartition { id, ops })
        .collect();
    axum::Json(HotBody {
        node: state
            .coordinator
            .context()
            .topology()
            .local()
            .as_str()
            .to_string(),
        decay_secs: crate::hot::DECAY.as_secs(),
        keys,
        partitions,
    })
    .into_response()
}

/// The answer of `GET /v1/hot`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HotBody {
    /// This node.
    pub node: String,
    /// Every this many seconds the counts are halved.
    pub decay_secs: u64,
    /// The hottest keys, hottest first.
    pub keys: Vec<HotKeyBody>,
    /// Operations per partition, busiest first.
    pub partitions: Vec<HotPartition>,
}

/// A hot key (Space-Saving estimate).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HotKeyBody {
    /// Its bucket (lossy UTF-8).
    pub bucket: String,
    /// The key (lossy UTF-8).
    pub key: String,
    /// Its partition.
    pub partition: u16,
    /// Operations counted.
    pub ops: u64,
    /// How much `ops` may overcount.
    pub error: u64,
}

/// Operations on one partition.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HotPartition {
    /// The partition.
    pub id: u16,
    /// Operations coordinated here.
    pub ops: u64,
}
