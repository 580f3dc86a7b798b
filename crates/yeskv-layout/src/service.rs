//! [`LayoutService`]: what the node runs and calls.
//!
//! It owns one openraft node of the layout group and exposes:
//!
//! - **reads that never wait**: [`LayoutService::current`], [`LayoutService::state`],
//!   [`LayoutService::plan`], [`LayoutService::bucket_props`] and [`LayoutService::subscribe`]
//!   read the state this node last
//!   applied (published by the state machine on a `watch` channel). They need no leader and take
//!   no lock the Raft engine holds, so the data path (routing by the layout) keeps working while
//!   the layout group has no quorum;
//! - **changes through the leader**: [`LayoutService::stage_join`], [`LayoutService::stage_leave`],
//!   [`LayoutService::unstage`], [`LayoutService::commit`] and [`LayoutService::set_bucket`]
//!   run on the Raft leader; on another
//!   node they are forwarded to it ([`Forward`]) and retried across elections until
//!   `request_timeout_ms`. They return once this node has applied the change too, so a caller
//!   reads its own writes;
//! - **catching up**: [`LayoutService::catch_up`] asks the leader for its read index and waits
//!   until this node applied it (a node does so when it starts, before it serves keys);
//! - **the Raft transport**: [`LayoutService::handle`] answers a [`RaftRpc`] (the node calls it
//!   from its own RPC server), [`LayoutService::serve`] runs a standalone server.
//!
//! # Commit, and who votes
//!
//! Raft voters are the layout's owners. A commit on the leader (one at a time):
//!
//! 1. waits until it has applied everything committed (`ensure_linearizable`), so it plans on
//!    the latest state, and checks the caller's expected version;
//! 2. computes the [`crate::Plan`] (placement with the fewest moves);
//! 3. adds the joining owners as Raft *learners* and waits until they caught up with the log, so
//!    the new layout reaches them at once (a joining node that cannot be reached fails the
//!    commit: nothing changes);
//! 4. appends [`crate::Command::Commit`], carrying the planned layout and the version and
//!    staged revision it was planned against; the state machine refuses it if either moved;
//! 5. makes the voters equal to the new owners (joint consensus), dropping leaving nodes.
//!
//! Step 5 is repeated by a reconciler on the leader every `reconcile_interval_ms`, so a
//! membership change cut short (the leader lost its leadership between 4 and 5) is finished by
//! the next leader.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{ChangeMembers, RaftMetrics, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use yeskv_core::bucket::BucketProps;
use yeskv_core::NodeId;
use yeskv_rpc::{PeerInfo, RpcConfig, RpcServer};

use crate::config::{LayoutConfig, StorageConfig};
use crate::error::{Error, LayoutError, Result};
use crate::layout::{Command, JoinSpec, Layout, LeaveMode, Plan, Staged, StagedChange};
use crate::raft::log_store::{LogStore, SharedStore};
use crate::raft::state_machine::{AppliedState, Publisher, StateMachine};
use crate::raft::{
    check_snapshot_chunk, network::snapshot_refused, network::Network, raft_id, Forward,
    ForwardError, ForwardReply, LayoutRaft, LayoutTransport, PeerNode, RaftId, RaftRequest,
    RaftRpc, RaftRpcResponse,
};
use crate::store::{FileStore, RaftStore};

/// Pause between attempts to reach a leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Most entries in one append-entries message. A commit entry carries a whole layout (at most
/// about 400 KB: 65,536 partitions × 3 replicas as member indices), so 16 of them stay under the
/// RPC layer's default 16 MiB frame; openraft's default of 300 could build a message no peer
/// accepts.
const APPEND_ENTRIES_MAX: u64 = 16;

/// Time allowed for one snapshot chunk (at most 3 MiB, openraft's default chunk size) to be sent
/// and installed, in milliseconds (openraft's default of 200 ms is tight for a slow link).
const INSTALL_SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 2_000;

/// The layout service of one node (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct LayoutService {
    inner: Arc<Inner>,
}

struct Inner {
    config: LayoutConfig,
    raft_id: RaftId,
    me: PeerNode,
    raft: LayoutRaft,
    transport: Arc<dyn LayoutTransport>,
    publisher: Arc<Publisher>,
    /// One commit at a time on this node (when it leads).
    commit_lock: tokio::sync::Mutex<()>,
    /// Set to true to stop the reconciler.
    stop: watch::Sender<bool>,
}

impl LayoutService {
    /// Opens the store, recovers the last known state (so [`LayoutService::current`] answers at
    /// once after a restart) and starts the Raft node. A node with no state waits to be
    /// bootstrapped ([`LayoutService::bootstrap_single`]) or to be added by a leader when a
    /// commit makes it an owner.
    pub async fn start(
        config: LayoutConfig,
        transport: Arc<dyn LayoutTransport>,
    ) -> Result<LayoutService> {
        config.validate()?;
        let mut store: Box<dyn RaftStore> = match &config.storage {
            StorageConfig::Directory(dir) => {
                let dir = dir.clone();
                let opened = tokio::task::spawn_blocking(move || FileStore::open(dir))
                    .await
                    .map_err(Error::raft)??;
                Box::new(opened)
            }
            StorageConfig::Memory(memory) => Box::new(memory.clone()),
        };
        let recovered = store.load()?;
        let shared: SharedStore = Arc::new(parking_lot::Mutex::new(store));
        let publisher = Publisher::new();
        let log_store = LogStore::new(&recovered, shared.clone());
        let state_machine = StateMachine::new(recovered.snapshot, shared, publisher.clone())
            .map_err(Error::raft)?;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_id.clone(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
            max_payload_entries: APPEND_ENTRIES_MAX,
            install_snapshot_timeout: INSTALL_SNAPSHOT_CHUNK_TIMEOUT_MS,
            ..Default::default()
        }
        .validate()
        .map_err(|error| Error::InvalidConfig {
            reason: error.to_string(),
        })?;
        let raft_id = raft_id(&config.node_id);
        let raft = LayoutRaft::new(
            raft_id,
            Arc::new(raft_config),
            Network {
                transport: transport.clone(),
            },
            log_store,
            state_machine,
        )
        .await
        .map_err(Error::raft)?;
        let me = PeerNode {
            name: config.node_id.to_string(),
            addr: config.peer_addr.clone(),
        };
        info!(node = %config.node_id, raft_id, peer = %config.peer_addr, "layout service started");
        let service = LayoutService {
            inner: Arc::new(Inner {
                config,
                raft_id,
                me,
                raft,
                transport,
                publisher,
                commit_lock: tokio::sync::Mutex::new(()),
                stop: watch::Sender::new(false),
            }),
        };
        tokio::spawn(reconciler(
            Arc::downgrade(&service.inner),
            service.inner.stop.subscribe(),
        ));
        Ok(service)
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.config.node_id
    }

    /// This node's Raft id ([`raft_id`] of its node id).
    pub fn raft_id(&self) -> RaftId {
        self.inner.raft_id
    }

    /// The layout this node last applied; `None` before it knows any. Never blocks, never needs
    /// a leader.
    pub fn current(&self) -> Option<Arc<Layout>> {
        self.inner.publisher.layout.borrow().clone()
    }

    /// The layout and staged changes this node last applied, with the log index.
    pub fn state(&self) -> Arc<AppliedState> {
        self.inner.publisher.state.borrow().clone()
    }

    /// A receiver that sees every new layout version this node applies.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Layout>>> {
        self.inner.publisher.layout.subscribe()
    }

    /// A receiver that sees every applied state (staged changes included).
    pub fn subscribe_state(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.inner.publisher.state.subscribe()
    }

    /// The plan of the staged changes, from this node's applied state (no leader needed).
    pub fn plan(&self) -> Result<Plan> {
        Ok(self.state().state.plan()?)
    }

    /// `(epoch, digest)` of every layout this node applied (the last
    /// [`crate::raft::state_machine::HISTORY_VERSIONS_MAX`]).
    pub fn applied_history(&self) -> Vec<(u64, u64)> {
        self.inner.publisher.history()
    }

    /// How many times this node applied one version with two different layouts: always 0
    /// unless the version invariant is broken.
    pub fn forks(&self) -> u64 {
        self.inner.publisher.forks()
    }

    /// openraft's metrics of this node (state, term, leader, membership, log indices).
    pub fn metrics(&self) -> RaftMetrics<RaftId, PeerNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The current Raft leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner
            .leader()
            .and_then(|(_, node)| NodeId::new(node.name).ok())
    }

    /// Whether this node believes it leads the layout group.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.raft_id)
    }

    /// Creates a new cluster whose only member is this node, with `layout` (version 1, built by
    /// [`Layout::bootstrap`]) as its first layout. On a node that already has a layout of this
    /// cluster (a restart) it returns that layout.
    pub async fn bootstrap_single(&self, layout: Layout) -> Result<Arc<Layout>> {
        let inner = &self.inner;
        if layout.cluster_id != inner.config.cluster_id {
            return Err(LayoutError::ClusterMismatch {
                expected: inner.config.cluster_id.clone(),
                got: layout.cluster_id,
            }
            .into());
        }
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let me = &inner.config.node_id;
        let alone = layout.members.len() == 1
            && layout
                .members
                .get(me)
                .is_some_and(|member| member.peer == inner.config.peer_addr);
        if layout.version != 1 || !alone {
            return Err(LayoutError::invalid(format!(
                "a single-node bootstrap layout has version 1 and only {me} (peer {}) as member",
                inner.config.peer_addr
            ))
            .into());
        }
        layout.validate()?;
        let initialized = inner.raft.is_initialized().await.map_err(Error::raft)?;
        if !initialized {
            let members = BTreeMap::from([(inner.raft_id, inner.me.clone())]);
            match inner.raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(Error::raft(error)),
            }
        }
        let timeout = Duration::from_millis(inner.config.request_timeout_ms);
        inner
            .raft
            .wait(Some(timeout))
            .current_leader(inner.raft_id, "bootstrap: become leader")
            .await
            .map_err(|error| Error::NoLeader {
                timeout_ms: inner.config.request_timeout_ms,
                reason: error.to_string(),
            })?;
        let deadline = Instant::now() + timeout;
        match inner.write(Command::Bootstrap { layout }).await {
            Ok(reply) => inner.wait_applied(reply.log_index, deadline).await,
            Err(ForwardError::Rejected(LayoutError::AlreadyBootstrapped { .. })) => {}
            Err(error) => return Err(forward_error(error, inner.config.request_timeout_ms)),
        }
        let current = self.current().ok_or(LayoutError::NotBootstrapped)?;
        info!(version = current.version, "bootstrapped a new cluster");
        Ok(current)
    }

    /// Stages `node` to become an owner with `spec` (or an owner's new spec); returns the staged
    /// changes after it.
    pub async fn stage_join(&self, node: NodeId, spec: JoinSpec) -> Result<Staged> {
        self.inner
            .propose(Forward::Stage(StagedChange::Join { node, spec }))
            .await?;
        Ok(self.state().state.staged.clone())
    }

    /// Stages `node` to leave, handing its data over (`force == false`) or at once because it is
    /// dead (`force == true`); returns the staged changes after it.
    pub async fn stage_leave(&self, node: NodeId, mode: LeaveMode) -> Result<Staged> {
        self.inner
            .propose(Forward::Stage(StagedChange::Leave { node, mode }))
            .await?;
        Ok(self.state().state.staged.clone())
    }

    /// Stages replicas per region (see [`crate::Layout::replication`]), replacing any staged
    /// one; returns the staged changes after it.
    pub async fn stage_replication(&self, regions: crate::Replication) -> Result<Staged> {
        self.inner
            .propose(Forward::Stage(StagedChange::Replication { regions }))
            .await?;
        Ok(self.state().state.staged.clone())
    }

    /// Drops the staged changes of `nodes`, or all of them if `nodes` is empty.
    pub async fn unstage(&self, nodes: Vec<NodeId>) -> Result<Staged> {
        self.inner.propose(Forward::Unstage(nodes)).await?;
        Ok(self.state().state.staged.clone())
    }

    /// Records through the layout log that this node has the data of `partitions` (each with
    /// the epoch since which it was syncing it; see [`crate::transition`]). Forwarded to the
    /// leader and retried like the other changes; a late or repeated report changes nothing.
    pub async fn transfer_done(&self, partitions: Vec<(u16, u64)>) -> Result<()> {
        self.inner
            .propose(Forward::TransferDone {
                node: self.inner.config.node_id.clone(),
                partitions,
            })
            .await?;
        Ok(())
    }

    /// Sets `bucket`'s properties cluster-wide ([`crate::Command::SetBucket`]: all of them,
    /// so the caller patches [`LayoutService::bucket_props`] first). Forwarded to the leader and
    /// retried like the other changes; returns once this node has applied it, so
    /// [`LayoutService::bucket_props`] here shows it at once. Moves no layout version or epoch:
    /// [`LayoutService::subscribe`] does not fire for it, [`LayoutService::subscribe_state`]
    /// does.
    pub async fn set_bucket(&self, bucket: Vec<u8>, props: BucketProps) -> Result<()> {
        self.inner
            .propose(Forward::SetBucket { bucket, props })
            .await?;
        Ok(())
    }

    /// Adds the API key `name` cluster-wide ([`crate::Command::PutKey`]). Forwarded to the
    /// leader and retried like the other changes; returns once this node has applied it.
    /// Refused ([`crate::LayoutError::KeyExists`], [`crate::LayoutError::InvalidKey`]) with
    /// nothing changed.
    pub async fn put_key(&self, name: String, key: crate::keys::ApiKey) -> Result<()> {
        self.inner.propose(Forward::PutKey { name, key }).await?;
        Ok(())
    }

    /// Drops the API key `name` cluster-wide ([`crate::Command::RevokeKey`]); refused
    /// ([`crate::LayoutError::UnknownKey`]) if there is none. Returns once this node has
    /// applied it; every other node stops accepting the key when it applies the entry.
    pub async fn revoke_key(&self, name: String) -> Result<()> {
        self.inner.propose(Forward::RevokeKey { name }).await?;
        Ok(())
    }

    /// Waits until this node has applied every change the layout group committed before the
    /// call: asks the leader for its read index ([`Forward::ReadIndex`], forwarded and retried
    /// like a change until `request_timeout_ms`) and waits to have applied it. Returns the index
    /// reached. A node calls it when it starts, so that it does not serve keys by a layout
    /// state (bucket properties) older than the cluster's; it fails when no leader answers in
    /// time, and the caller then goes on with what it has (reads and writes never wait for a
    /// leader for longer than that).
    pub async fn catch_up(&self) -> Result<u64> {
        let reply = self.inner.propose(Forward::ReadIndex).await?;
        let applied = self.inner.publisher.state.borrow().applied_index;
        if applied < reply.log_index {
            return Err(Error::Raft {
                reason: format!(
                    "the leader's commit index is {} but this node applied only {applied} in time",
                    reply.log_index
                ),
            });
        }
        Ok(applied)
    }

    /// The properties of `bucket` in the state this node last applied (the defaults for a
    /// bucket never set). Never blocks, never needs a leader.
    pub fn bucket_props(&self, bucket: &[u8]) -> BucketProps {
        self.inner
            .publisher
            .state
            .borrow()
            .state
            .bucket_props(bucket)
    }

    /// Commits the staged changes as the next layout version (see the module docs) and returns
    /// it. With `expected_version`, the commit is refused unless the layout is still at that
    /// version ([`LayoutError::VersionMismatch`]): pass the version the operator's plan showed.
    pub async fn commit(&self, expected_version: Option<u64>) -> Result<Arc<Layout>> {
        let reply = self
            .inner
            .propose(Forward::Commit { expected_version })
            .await?;
        match self.state().state.layout.clone() {
            Some(layout) if layout.version >= reply.applied.version => Ok(layout),
            _ => Err(Error::Raft {
                reason: format!(
                    "version {} was committed but not yet applied on this node",
                    reply.applied.version
                ),
            }),
        }
    }

    /// Answers one message of the layout group (the node calls this from its RPC server).
    pub async fn handle(&self, request: RaftRpc) -> RaftRpcResponse {
        let inner = &self.inner;
        if request.to != inner.raft_id {
            return RaftRpcResponse::WrongNode {
                node: inner.raft_id,
            };
        }
        match request.body {
            RaftRequest::AppendEntries(rpc) => {
                RaftRpcResponse::AppendEntries(inner.raft.append_entries(rpc).await)
            }
            RaftRequest::Vote(rpc) => RaftRpcResponse::Vote(inner.raft.vote(rpc).await),
            RaftRequest::InstallSnapshot(rpc) => {
                // openraft buffers the chunk at its offset in memory: bound it first.
                if let Err(error) = check_snapshot_chunk(rpc.offset, rpc.data.len()) {
                    warn!(%error, snapshot = %rpc.meta.snapshot_id, "refused a snapshot chunk");
                    return RaftRpcResponse::InstallSnapshot(Err(snapshot_refused(&rpc, &error)));
                }
                RaftRpcResponse::InstallSnapshot(inner.raft.install_snapshot(rpc).await)
            }
            RaftRequest::Forward(forward) => RaftRpcResponse::Forward(inner.execute(forward).await),
        }
    }

    /// Serves the layout group on `listener` with a server of its own until `shutdown`
    /// completes (the node normally multiplexes [`LayoutService::handle`] on its own server).
    pub async fn serve<S>(&self, listener: TcpListener, rpc: RpcConfig, shutdown: S) -> Result<()>
    where
        S: Future<Output = ()> + Send,
    {
        let server: RpcServer<RaftRpc, RaftRpcResponse> =
            RpcServer::new(rpc).map_err(|error| Error::InvalidConfig {
                reason: error.to_string(),
            })?;
        let service = self.clone();
        let handler = move |_peer: PeerInfo, request: RaftRpc| {
            let service = service.clone();
            async move { service.handle(request).await }
        };
        server.serve(listener, handler, shutdown).await;
        Ok(())
    }

    /// Stops the reconciler and the Raft node. The applied state stays readable.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.stop.send_replace(true);
        self.inner.raft.shutdown().await.map_err(Error::raft)
    }
}

/// A leader-side failure as the caller sees it.
fn forward_error(error: ForwardError, timeout_ms: u64) -> Error {
    match error {
        ForwardError::Rejected(error) => Error::Rejected(error),
        ForwardError::JoiningNodeUnreachable { node, reason } => Error::JoiningNodeUnreachable {
            node,
            timeout_ms,
            reason,
        },
        ForwardError::NotLeader { .. } | ForwardError::Failed { .. } => Error::NoLeader {
            timeout_ms,
            reason: error.to_string(),
        },
    }
}

fn not_leader(forward: ForwardToLeader<RaftId, PeerNode>) -> ForwardError {
    ForwardError::NotLeader {
        leader: forward.leader_id.zip(forward.leader_node),
    }
}

impl Inner {
    fn leader(&self) -> Option<(RaftId, PeerNode)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let id = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some((id, node))
    }

    /// Waits until this node applied `index`, or `deadline`.
    async fn wait_applied(&self, index: u64, deadline: Instant) {
        let mut applied = self.publisher.state.subscribe();
        let reached = tokio::time::timeout_at(
            deadline,
            applied.wait_for(|state| state.applied_index >= index),
        )
        .await;
        if reached.is_err() {
            warn!(
                index,
                "change committed but not applied here before the deadline"
            );
        }
    }

    /// Makes `forward` happen through the leader, wherever it is, retrying until the deadline.
    async fn propose(&self, forward: Forward) -> Result<ForwardReply> {
        let timeout_ms = self.config.request_timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let start_version = self.publisher.state.borrow().state.version();
        let mut ambiguous = false;
        loop {
            let attempt = match self.leader() {
                Some((id, _)) if id == self.raft_id => {
                    match tokio::time::timeout_at(deadline, self.execute(forward.clone())).await {
                        Ok(result) => result,
                        Err(_elapsed) => {
                            ambiguous = true;
                            Err(ForwardError::Failed {
                                reason: "this node leads but could not finish the change in time"
                                    .into(),
                            })
                        }
                    }
                }
                Some((id, node)) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let request = RaftRpc {
                        to: id,
                        body: RaftRequest::Forward(forward.clone()),
                    };
                    match self.transport.call(&node.addr, request, remaining).await {
                        Ok(RaftRpcResponse::Forward(result)) => result,
                        Ok(other) => Err(ForwardError::Failed {
                            reason: format!("unexpected answer from {}: {other:?}", node.name),
                        }),
                        Err(error) => {
                            // The leader may have made the change and the answer got lost.
                            ambiguous |= matches!(
                                error,
                                yeskv_rpc::Error::Timeout { .. }
                                    | yeskv_rpc::Error::Disconnected { .. }
                            );
                            Err(ForwardError::Failed {
                                reason: format!("leader {} at {}: {error}", node.name, node.addr),
                            })
                        }
                    }
                }
                None => Err(ForwardError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(reply) => {
                    self.wait_applied(reply.log_index, deadline).await;
                    return Ok(reply);
                }
                Err(
                    refused @ ForwardError::Rejected(
                        LayoutError::NothingStaged | LayoutError::VersionMismatch { .. },
                    ),
                ) if ambiguous && matches!(forward, Forward::Commit { .. }) => {
                    // An earlier attempt whose answer was lost may have committed: if the
                    // version moved on since we started, report that commit. (A local state
                    // lagging behind the leader by more than this check can see makes the
                    // caller get the refusal; `current()` then shows the new version.)
                    let state = self.publisher.state.borrow().clone();
                    if state.state.version() > start_version {
                        return Ok(ForwardReply {
                            log_index: state.applied_index,
                            applied: crate::raft::Applied {
                                version: state.state.version(),
                                staged_revision: state.state.staged.revision,
                            },
                        });
                    }
                    return Err(forward_error(refused, timeout_ms));
                }
                Err(
                    error @ (ForwardError::Rejected(_)
                    | ForwardError::JoiningNodeUnreachable { .. }),
                ) => {
                    return Err(forward_error(error, timeout_ms));
                }
                Err(error) => {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        return Err(forward_error(error, timeout_ms));
                    }
                    debug!(%error, "layout change not made yet; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Makes `forward` happen on this node, which must be the leader.
    async fn execute(&self, forward: Forward) -> Result<ForwardReply, ForwardError> {
        match forward {
            Forward::Stage(change) => {
                if let StagedChange::Join { node, .. } = &change {
                    self.check_raft_id(node)?;
                }
                self.write(Command::Stage { change }).await
            }
            Forward::Unstage(nodes) => self.write(Command::Unstage { nodes }).await,
            Forward::Commit { expected_version } => self.commit_as_leader(expected_version).await,
            Forward::TransferDone { node, partitions } => {
                self.write(Command::TransferDone { node, partitions }).await
            }
            Forward::SetBucket { bucket, props } => {
                self.write(Command::SetBucket { bucket, props }).await
            }
            Forward::ReadIndex => self.read_index().await,
            Forward::PutKey { name, key } => self.write(Command::PutKey { name, key }).await,
            Forward::RevokeKey { name } => self.write(Command::RevokeKey { name }).await,
        }
    }

    /// The index of the last entry the leader (this node) committed, once a quorum confirmed
    /// it still leads: what a node must have applied to know every change made before.
    async fn read_index(&self) -> Result<ForwardReply, ForwardError> {
        match self.raft.get_read_log_id().await {
            Ok((read, _applied)) => {
                let state = self.publisher.state.borrow().clone();
                Ok(ForwardReply {
                    log_index: read.map_or(0, |id| id.index),
                    applied: crate::raft::Applied {
                        version: state.state.version(),
                        staged_revision: state.state.staged.revision,
                    },
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(not_leader(forward))
            }
            Err(error) => Err(ForwardError::Failed {
                reason: error.to_string(),
            }),
        }
    }

    /// Refuses a join whose Raft id collides with another member's.
    fn check_raft_id(&self, node: &NodeId) -> Result<(), ForwardError> {
        let state = self.publisher.state.borrow().clone();
        let id = raft_id(node);
        let members = state.state.members_view();
        if let Some(other) = members.keys().find(|m| *m != node && raft_id(m) == id) {
            return Err(ForwardError::Rejected(LayoutError::InvalidJoin {
                node: node.to_string(),
                reason: format!("its Raft id collides with {other}'s; choose another node id"),
            }));
        }
        Ok(())
    }

    /// Appends `command` to the log (this node must lead) and returns the state machine's answer.
    async fn write(&self, command: Command) -> Result<ForwardReply, ForwardError> {
        match self.raft.client_write(command).await {
            Ok(response) => match response.data.result {
                Ok(applied) => Ok(ForwardReply {
                    log_index: response.log_id.index,
                    applied,
                }),
                Err(refused) => Err(ForwardError::Rejected(refused)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(not_leader(forward))
            }
            Err(error) => Err(ForwardError::Failed {
                reason: error.to_string(),
            }),
        }
    }

    /// The commit procedure of the module docs, on the leader.
    async fn commit_as_leader(
        &self,
        expected_version: Option<u64>,
    ) -> Result<ForwardReply, ForwardError> {
        let _one_at_a_time = self.commit_lock.lock().await;
        match self.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                return Err(not_leader(forward))
            }
            Err(error) => {
                return Err(ForwardError::Failed {
                    reason: error.to_string(),
                })
            }
        }
        let state = self.publisher.state.borrow().state.clone();
        let current = state
            .layout
            .as_ref()
            .ok_or(ForwardError::Rejected(LayoutError::NotBootstrapped))?;
        if let Some(expected) = expected_version {
            if expected != current.version {
                return Err(ForwardError::Rejected(LayoutError::VersionMismatch {
                    expected,
                    current: current.version,
                }));
            }
        }
        let plan = state.plan().map_err(ForwardError::Rejected)?;
        self.add_joining_learners(&plan.layout).await?;
        let reply = self.write(Command::commit(&plan)).await?;
        info!(
            version = reply.applied.version,
            transfers = plan.transfers(),
            "committed a new layout"
        );
        if let Err(error) = self.reconcile().await {
            warn!(%error, "could not make the voters the new owners yet; the reconciler retries");
        }
        Ok(reply)
    }

    /// Adds the owners of `layout` that Raft does not know yet as learners and waits until each
    /// has replicated the log up to its own addition (openraft's "blocking" `add_learner` counts
    /// a learner within `replication_lag_threshold` entries as caught up, which for the short
    /// layout log is any learner, reachable or not).
    async fn add_joining_learners(&self, layout: &Layout) -> Result<(), ForwardError> {
        let known: BTreeSet<RaftId> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        let timeout = Duration::from_millis(self.config.learner_catch_up_timeout_ms);
        let deadline = Instant::now() + timeout;
        for (node, member) in layout.owners() {
            let id = raft_id(node);
            let peer = PeerNode {
                name: node.to_string(),
                addr: member.peer.clone(),
            };
            let target = if known.contains(&id) {
                // Already a learner (an earlier attempt): it must still be caught up.
                self.raft.metrics().borrow().last_log_index.unwrap_or(0)
            } else {
                info!(%node, raft_id = id, addr = %member.peer, "adding a joining owner as a Raft learner");
                match self.raft.add_learner(id, peer, false).await {
                    Ok(response) => response.log_id.index,
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                        return Err(not_leader(forward))
                    }
                    Err(error) => {
                        return Err(ForwardError::Failed {
                            reason: error.to_string(),
                        })
                    }
                }
            };
            if layout_voter(&self.raft.metrics().borrow(), id) {
                continue;
            }
            let mut metrics = self.raft.metrics();
            let caught_up = tokio::time::timeout_at(
                deadline,
                metrics.wait_for(|m| {
                    m.current_leader != Some(self.raft_id)
                        || m.replication
                            .as_ref()
                            .and_then(|replication| replication.get(&id).copied().flatten())
                            .is_some_and(|matched| matched.index >= target)
                }),
            )
            .await;
            match caught_up {
                Ok(Ok(m)) if m.current_leader == Some(self.raft_id) => {}
                Ok(Ok(m)) => {
                    let leader = m.current_leader.and_then(|leader| {
                        m.membership_config
                            .membership()
                            .get_node(&leader)
                            .map(|node| (leader, node.clone()))
                    });
                    return Err(ForwardError::NotLeader { leader });
                }
                Ok(Err(_closed)) => {
                    return Err(ForwardError::Failed {
                        reason: "the Raft node stopped".into(),
                    })
                }
                Err(_elapsed) => {
                    return Err(ForwardError::JoiningNodeUnreachable {
                        node: node.to_string(),
                        reason: format!(
                            "not caught up with the layout log after {} ms (is {} reachable?)",
                            timeout.as_millis(),
                            member.peer
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    /// On the leader: makes the Raft voters exactly the layout's owners (adding missing ones as
    /// learners first, updating changed addresses) and drops learners that are neither owners
    /// nor staged to join. Does nothing on a follower.
    async fn reconcile(&self) -> Result<()> {
        let (voters, nodes, learners) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.current_leader != Some(self.raft_id) {
                return Ok(());
            }
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
            let nodes: BTreeMap<RaftId, PeerNode> = membership
                .nodes()
                .map(|(id, node)| (*id, node.clone()))
                .collect();
            let learners: BTreeSet<RaftId> = membership.learner_ids().collect();
            (voters, nodes, learners)
        };
        let state = self.publisher.state.borrow().state.clone();
        let Some(layout) = state.layout else {
            return Ok(());
        };
        let owners: BTreeMap<RaftId, PeerNode> = layout
            .owners()
            .map(|(node, member)| {
                (
                    raft_id(node),
                    PeerNode {
                        name: node.to_string(),
                        addr: member.peer.clone(),
                    },
                )
            })
            .collect();
        for (id, peer) in &owners {
            match nodes.get(id) {
                None => {
                    self.raft
                        .add_learner(*id, peer.clone(), false)
                        .await
                        .map_err(Error::raft)?;
                }
                Some(known) if known != peer => {
                    let update = BTreeMap::from([(*id, peer.clone())]);
                    self.raft
                        .change_membership(ChangeMembers::SetNodes(update), true)
                        .await
                        .map_err(Error::raft)?;
                }
                Some(_) => {}
            }
        }
        let wanted: BTreeSet<RaftId> = owners.keys().copied().collect();
        if voters != wanted {
            info!(?wanted, ?voters, "making the layout owners the Raft voters");
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(wanted.clone()), false)
                .await
                .map_err(Error::raft)?;
        }
        let joining: BTreeSet<RaftId> = state.staged.joins.keys().map(raft_id).collect();
        let stale: BTreeSet<RaftId> = learners
            .into_iter()
            .filter(|id| !wanted.contains(id) && !joining.contains(id))
            .collect();
        if !stale.is_empty() {
            info!(?stale, "dropping Raft learners that are not joining");
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(stale), false)
                .await
                .map_err(Error::raft)?;
        }
        Ok(())
    }
}

/// Whether `id` already votes (an owner of the current layout needs no catching up).
fn layout_voter(metrics: &RaftMetrics<RaftId, PeerNode>, id: RaftId) -> bool {
    metrics
        .membership_config
        .membership()
        .voter_ids()
        .any(|voter| voter == id)
}

/// Reconciles the voters every `reconcile_interval_ms` while the service lives.
async fn reconciler(inner: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => Duration::from_millis(inner.config.reconcile_interval_ms),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if *stop.borrow() {
            return;
        }
        // Reconcile only when no commit is running (a commit reconciles itself).
        let guard = inner.commit_lock.try_lock();
        if guard.is_ok() {
            if let Err(error) = inner.reconcile().await {
                debug!(%error, "membership reconciliation did not finish; retrying later");
            }
        }
        drop(guard);
    }
}
