//! The operator's cluster endpoints: staged membership changes, as in Riak's `cluster join /
//! leave / plan / commit`. Nothing changes until `commit`, which installs the plan as one new
//! layout version through the layout's Raft group (any node may be asked; it forwards to the
//! leader). The data path is never involved.
//!
//! - `POST /v1/cluster/join {"nodes": ["n4"]}` — stage: these nodes become owners. A node must
//!   be known to this node's membership view (it gossips its zone and addresses), so only a
//!   node that was started with `--seed` can be joined.
//! - `POST /v1/cluster/leave {"nodes": ["n2"], "force": false}` — stage: hand these nodes'
//!   partitions to others and drop them; `force` for a node that is dead.
//! - `POST /v1/cluster/replication {"r1": 3, "r2": 3, "r3": 2}` — stage: replicas per region
//!   (each region then holds that many replicas of every partition, zone-aware inside it).
//! - `GET /v1/cluster/plan` — the staged changes and the partition moves they cause.
//! - `POST /v1/cluster/commit` — apply the staged changes as one new layout version.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use yeskv_core::NodeId;
use yeskv_layout::{LayoutError, LeaveMode, Plan};
use yeskv_storage::Engine;

use super::{AppState, ErrorBody};

/// Most nodes named in one join or leave request.
pub const NODES_PER_REQUEST_MAX: usize = 64;

/// Body of `join`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The nodes to make owners (known to this node's gossip view), 1 to 64.
    nodes: Vec<String>,
}

/// Body of `leave`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaveBody {
    /// The nodes to hand their partitions to others and drop, 1 to 64.
    nodes: Vec<String>,
    /// For a node that is dead: do not wait for it to hand over.
    #[serde(default)]
    force: bool,
    /// With `force`: accept that partitions whose only copies are on these nodes start empty.
    #[serde(default)]
    allow_data_loss: bool,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    ErrorBody::new(message.to_string()).into_response(status)
}

/// The answer of `POST /v1/cluster/commit`: the layout installed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// Its version.
    pub version: u64,
    /// Its members.
    pub members: Vec<String>,
}

fn layout_error(e: yeskv_layout::Error) -> Response {
    use yeskv_layout::Error as E;
    let status = match &e {
        E::Rejected(
            LayoutError::VersionMismatch { .. }
            | LayoutError::StagedChanged { .. }
            | LayoutError::NothingStaged
            | LayoutError::AlreadyLeaving { .. }
            | LayoutError::NotStaged { .. }
            | LayoutError::NoOwnersLeft
            | LayoutError::DataLoss { .. },
        ) => StatusCode::CONFLICT,
        E::Rejected(_) => StatusCode::BAD_REQUEST,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if let E::Rejected(LayoutError::DataLoss {
        partitions,
        holders,
    }) = &e
    {
        let body = ErrorBody {
            unsafe_partitions: Some(partitions.to_vec()),
            holders: Some(holders.iter().map(|n| n.to_string()).collect()),
            ..ErrorBody::new(e.to_string())
        };
        return body.into_response(status);
    }
    error(status, e)
}

/// Validates the node names of a request.
fn parse_nodes(nodes: &[String]) -> Result<Vec<NodeId>, crate::error::Error> {
    let bad = crate::error::Error::BadRequest;
    if nodes.is_empty() || nodes.len() > NODES_PER_REQUEST_MAX {
        return Err(bad(format!(
            "\"nodes\" must name 1 to {NODES_PER_REQUEST_MAX} nodes"
        )));
    }
    nodes
        .iter()
        .map(|n| NodeId::new(n.clone()).map_err(|e| bad(e.to_string())))
        .collect()
}

/// What a plan moves, in bytes: each moving partition's size as one of its data holders told
/// it, and the receiving rate the ETA assumes.
#[derive(Debug, Default)]
pub struct PlanSizes {
    /// Bytes (keys and records) per moving partition; a partition whose holders could not be
    /// asked is missing.
    pub partitions: BTreeMap<u16, u64>,
    /// Bytes per second each receiver takes at most (`transfer.rate_bytes_per_s`; 0: no limit).
    pub rate_bytes_per_s: u64,
}

/// The sizes of the partitions `plan` moves, asked of one data holder each (this node when it
/// is one, else the first that is up), one request per holder.
async fn plan_sizes<E: Engine>(state: &AppState<E>, plan: &Plan) -> PlanSizes {
    let ctx = state.coordinator.context();
    let topology = ctx.topology();
    let local = topology.local().clone();
    let mut asks: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
    for p in plan.layout.transitions.keys() {
        let holders = topology.data_holders(*p);
        let pick = if holders.contains(&local) {
            Some(local.clone())
        } else {
            holders.iter().find(|n| topology.is_up(n)).cloned()
        };
        if let Some(holder) = pick {
            asks.entry(holder).or_default().push(*p);
        }
    }
    let answers = futures_util::future::join_all(asks.into_iter().map(|(holder, ps)| async move {
        let sizes = crate::transfer::sizes_at(ctx, &holder, ps.clone()).await;
        if let Err(e) = &sizes {
            tracing::debug!(%holder, error = %e, "plan: partition sizes not known");
        }
        (ps, sizes)
    }))
    .await;
    let mut out = PlanSizes {
        rate_bytes_per_s: ctx.transfers().snapshot().rate_limit,
        ..PlanSizes::default()
    };
    for (ps, sizes) in answers {
        if let Ok(sizes) = sizes {
            out.partitions.extend(
                ps.into_iter()
                    .zip(sizes.into_iter().map(|(_, bytes)| bytes)),
            );
        }
    }
    out
}

/// The JSON form of a plan.
pub fn plan_json(plan: &Plan, unsafe_partitions: &[u16], sizes: &PlanSizes) -> serde_json::Value {
    let data_safe = unsafe_partitions.is_empty();
    let owned: serde_json::Map<String, serde_json::Value> = plan
        .owned
        .iter()
        .map(|(id, c)| {
            (
                id.as_str().to_string(),
                json!({ "before": c.before, "after": c.after }),
            )
        })
        .collect();
    let moves: Vec<_> = plan
        .moves
        .iter()
        .map(|m| {
            json!({
                "partition": m.partition,
                "from": m.from.as_ref().map(|n| n.as_str()),
                "to": m.to.as_ref().map(|n| n.as_str()),
            })
        })
        .collect();
    let mut receiving: BTreeMap<&str, usize> = BTreeMap::new();
    let mut receiving_bytes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sourcing: BTreeMap<&str, usize> = BTreeMap::new();
    let mut bytes_known = true;
    for (p, t) in &plan.layout.transitions {
        let bytes = sizes.partitions.get(p).copied();
        bytes_known &= bytes.is_some();
        for node in t.syncing.keys() {
            *receiving.entry(node.as_str()).or_default() += 1;
            *receiving_bytes.entry(node.as_str()).or_default() += bytes.unwrap_or(0);
        }
        for node in &t.sources {
            *sourcing.entry(node.as_str()).or_default() += 1;
        }
    }
    let bytes_moving: u64 = receiving_bytes.values().sum();
    // Each receiver takes its partitions one after another at the rate limit, all receivers at
    // once: the slowest receiver sets the ETA.
    let eta_s = match (sizes.rate_bytes_per_s, receiving_bytes.values().max()) {
        (_, None) => Some(0.0),
        (0, Some(_)) => None,
        (rate, Some(most)) => Some((*most as f64 / rate as f64 * 10.0).ceil() / 10.0),
    };
    json!({
        "base_version": plan.base_version,
        "new_version": plan.layout.version,
        "partitions_moving": plan.layout.transitions.len(),
        "receiving": receiving,
        "receiving_bytes": receiving_bytes,
        "bytes_moving": bytes_moving,
        "bytes_known": bytes_known,
        "rate_bytes_per_s": sizes.rate_bytes_per_s,
        "eta_s": eta_s,
        "sourcing": sourcing,
        "zone_safe": zone_safe(&plan.layout),
        "data_safe": data_safe,
        "unsafe_partitions": unsafe_partitions,
        "staged": {
            "revision": plan.staged.revision,
            "joins": plan.staged.joins.keys().map(|n| n.as_str()).collect::<Vec<_>>(),
            "leaves": plan.staged.leaves.iter()
                .map(|(n, mode)| json!({ "node": n.as_str(), "mode": mode.as_str() }))
                .collect::<Vec<_>>(),
            "replication": plan.staged.replication,
        },
        "replication": plan.layout.replication,
        "replicas_moved": plan.moves.len(),
        "moves": moves,
        "owned": owned,
    })
}

/// The partitions that `plan` would leave with no data holder up (as this node's failure
/// detector sees it), unless a staged leave allows data loss.
fn dead_partitions<E: Engine>(state: &AppState<E>, plan: &Plan) -> (Vec<u16>, Vec<String>) {
    let topology = state.coordinator.context().topology();
    let mut partitions = Vec::new();
    let mut holders = std::collections::BTreeSet::new();
    for p in 0..plan.layout.partitions {
        let data = plan.layout.data_holders(p as u16);
        if !data.iter().any(|n| topology.is_up(n)) {
            partitions.push(p as u16);
            holders.extend(data.iter().map(|n| n.as_str().to_string()));
        }
    }
    (partitions, holders.into_iter().collect())
}

/// The `409` for a plan after which some partition has no holder of its data that is up, or
/// `None` when every partition keeps one (or a staged leave allows data loss).
fn without_live_holder<E: Engine>(state: &AppState<E>, plan: &Plan) -> Option<Response> {
    if plan
        .staged
        .leaves
        .values()
        .any(|mode| *mode == LeaveMode::ForceAllowDataLoss)
    {
        return None;
    }
    let (partitions, holders) = dead_partitions(state, plan);
    if partitions.is_empty() {
        return None;
    }
    let body = ErrorBody {
        error: format!(
            "after this change {} partition(s) would have no holder of their data that is up \
             (holders {}, all down): bring one back, or force the dead nodes out with \
             allow_data_loss if their copies are gone for good",
            partitions.len(),
            holders.join(", ")
        ),
        unsafe_partitions: Some(partitions),
        holders: Some(holders),
        ..ErrorBody::default()
    };
    Some(body.into_response(StatusCode::CONFLICT))
}

/// Whether every partition's replicas in `layout` are spread over zones as placement promises:
/// in distinct zones when there are at least as many zones as replicas, else over every zone.
fn zone_safe(layout: &yeskv_layout::Layout) -> bool {
    use std::collections::BTreeSet;
    // Zones are compared inside a region when the layout has regions (a zone name may repeat
    // in two regions), over every owner otherwise.
    let group = |n: &NodeId| {
        layout
            .members
            .get(n)
            .map(|m| match layout.replication.is_empty() {
                true => "",
                false => m.region.as_str(),
            })
    };
    let zone = |n: &NodeId| layout.members.get(n).map(|m| m.zone.as_str());
    let mut zones: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, m) in layout.owners() {
        if let Some(g) = group(id) {
            zones.entry(g).or_default().insert(m.zone.as_str());
        }
    }
    layout.assignment.iter().all(|(_, replicas)| {
        let mut by_group: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
        for n in replicas {
            if let (Some(g), Some(z)) = (group(n), zone(n)) {
                let entry = by_group.entry(g).or_default();
                entry.0 += 1;
                entry.1.insert(z);
            }
        }
        by_group.iter().all(|(g, (count, used))| {
            used.len() >= (*count).min(zones.get(g).map_or(0, BTreeSet::len))
        })
    })
}

async fn plan_response<E: Engine>(state: &AppState<E>) -> Response {
    match state.layout.plan() {
        Ok(plan) => {
            let (dead, _) = dead_partitions(state, &plan);
            let sizes = plan_sizes(state, &plan).await;
            axum::Json(plan_json(&plan, &dead, &sizes)).into_response()
        }
        Err(e) => layout_error(e),
    }
}

/// `POST /v1/cluster/join`.
#[utoipa::path(
    post,
    path = "/v1/cluster/join",
    tag = "cluster",
    operation_id = "cluster_join",
    summary = "Stage nodes joining as owners",
    request_body(content = JoinBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The plan: staged changes, the partition moves they cause, bytes, ETA, zone and data safety", body = Object),
        (status = 400, description = "Malformed body, or a node this node's gossip does not know", body = ErrorBody),
        (status = 409, description = "Refused by the layout (e.g. the staged changes moved meanwhile)", body = ErrorBody),
        (status = 503, description = "No layout leader within its request timeout", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn join<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    body: axum::body::Bytes,
) -> Response {
    let body: JoinBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let nodes = match parse_nodes(&body.nodes) {
        Ok(n) => n,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let mut specs = Vec::new();
    for node in nodes {
        match (state.directory)(&node) {
            Some(spec) => specs.push((node, spec)),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("node {node} is not known to this node's membership view: start it with --seed pointing at this cluster first"),
                )
            }
        }
    }
    for (node, spec) in specs {
        if let Err(e) = state.layout.stage_join(node, spec).await {
            return layout_error(e);
        }
    }
    plan_response(&state).await
}

/// `POST /v1/cluster/replication`: stages replicas per region, a JSON object of region name →
/// replicas (`{}` goes back to one implicit region of `n` replicas over every owner).
#[utoipa::path(
    post,
    path = "/v1/cluster/replication",
    tag = "cluster",
    operation_id = "cluster_replication",
    summary = "Stage replicas per region",
    request_body(content = BTreeMap<String, u8>, content_type = "application/json", description = "Region name → replicas; `{}` for one implicit region"),
    responses(
        (status = 200, description = "The plan: staged changes, the partition moves they cause, bytes, ETA, zone and data safety", body = Object),
        (status = 400, description = "Malformed body or replication", body = ErrorBody),
        (status = 409, description = "Refused by the layout", body = ErrorBody),
        (status = 503, description = "No layout leader within its request timeout", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn replication<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    body: axum::body::Bytes,
) -> Response {
    let regions: yeskv_layout::Replication = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: {e} (expected {{\"REGION\": replicas, ...}})"),
            )
        }
    };
    if let Err(e) = state.layout.stage_replication(regions).await {
        return layout_error(e);
    }
    plan_response(&state).await
}

/// `POST /v1/cluster/leave`.
#[utoipa::path(
    post,
    path = "/v1/cluster/leave",
    tag = "cluster",
    operation_id = "cluster_leave",
    summary = "Stage nodes leaving",
    request_body(content = LeaveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The plan: staged changes, the partition moves they cause, bytes, ETA, zone and data safety", body = Object),
        (status = 400, description = "Malformed body or node name", body = ErrorBody),
        (status = 409, description = "Refused: not an owner, already leaving, or data would be lost (`unsafe_partitions`, `holders`)", body = ErrorBody),
        (status = 503, description = "No layout leader within its request timeout", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn leave<E: Engine>(
    State(state): State<Arc<AppState<E>>>,
    body: axum::body::Bytes,
) -> Response {
    let body: LeaveBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let nodes = match parse_nodes(&body.nodes) {
        Ok(n) => n,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let mode = match (body.force, body.allow_data_loss) {
        (false, false) => LeaveMode::Graceful,
        (true, false) => LeaveMode::Force,
        (true, true) => LeaveMode::ForceAllowDataLoss,
        (false, true) => {
            return error(
                StatusCode::BAD_REQUEST,
                "\"allow_data_loss\" applies to a forced leave only (add \"force\": true)",
            )
        }
    };
    for node in &nodes {
        if let Err(e) = state.layout.stage_leave(node.clone(), mode).await {
            return layout_error(e);
        }
    }
    // A leave whose plan would lose data, empty a region the replication names, or leave a
    // partition with no holder that is up, is refused and leaves nothing staged behind.
    let refusal = match state.layout.plan() {
        Err(refused @ yeskv_layout::Error::Rejected(LayoutError::DataLoss { .. })) => {
            Some(layout_error(refused))
        }
        Err(yeskv_layout::Error::Rejected(refused @ LayoutError::InvalidReplication { .. })) => {
            Some(error(StatusCode::CONFLICT, refused))
        }
        Ok(plan) => without_live_holder(&state, &plan),
        Err(_) => None,
    };
    if let Some(refusal) = refusal {
        if let Err(e) = state.layout.unstage(nodes).await {
            tracing::warn!(error = %e, "could not unstage a refused leave");
        }
        return refusal;
    }
    plan_response(&state).await
}

/// `GET /v1/cluster/plan`.
#[utoipa::path(
    get,
    path = "/v1/cluster/plan",
    tag = "cluster",
    operation_id = "cluster_plan",
    summary = "Show the staged changes and their moves",
    responses(
        (status = 200, description = "The plan: staged changes, the partition moves they cause, bytes, ETA, zone and data safety", body = Object),
        (status = 409, description = "Nothing staged, or the plan would lose data", body = ErrorBody),
        (status = 503, description = "No layout leader within its request timeout", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn plan<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    plan_response(&state).await
}

/// `POST /v1/cluster/commit`.
#[utoipa::path(
    post,
    path = "/v1/cluster/commit",
    tag = "cluster",
    operation_id = "cluster_commit",
    summary = "Apply the staged changes as one new layout version",
    responses(
        (status = 200, description = "The new layout", body = CommitBody),
        (status = 409, description = "Nothing staged, the staged changes moved, or a partition would be left without a live holder", body = ErrorBody),
        (status = 503, description = "No layout leader within its request timeout", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn commit<E: Engine>(State(state): State<Arc<AppState<E>>>) -> Response {
    // The plan must leave every partition a holder of its data that is up now: the structural
    // check in the layout model knows nothing of liveness.
    if let Ok(plan) = state.layout.plan() {
        if let Some(refusal) = without_live_holder(&state, &plan) {
            return refusal;
        }
    }
    match state.layout.commit(None).await {
        Ok(layout) => axum::Json(CommitBody {
            version: layout.version,
            members: layout.members.keys().map(|n| n.to_string()).collect(),
        })
        .into_response(),
        Err(e) => layout_error(e),
    }
}
