//! The simulated cluster's topology: a real [`yeskv_layout::Layout`] in a shared cell that the
//! driver changes and the nodes' transfer workers complete, each node routing by it through the
//! product's [`ClusterTopology`]; liveness from a small ping-based failure detector.
//!
//! ## The layout
//!
//! In the product the layout is the replicated state of a Raft log, changed only by the pure
//! state machine [`yeskv_layout::apply`] on [`Command`]s. The simulator keeps that state in one
//! [`LayoutCell`] and changes it with the same function on the same commands; what it leaves out
//! is Raft itself (no log, no leader, no messages), so every change applies at once, in the
//! simulation's single thread, in the order the driver and the nodes make it, as a log would
//! order them:
//!
//! - at the start, [`LayoutCell::bootstrap`] applies `Command::Bootstrap` with the first members
//!   placed by the product's placement (`yeskv_core::placement::assign`; zones `z0`, `z1`, `z2`
//!   round robin by host, or on a seed with regions each member in its region and a zone of it,
//!   [`crate::regions`]); with regions it then stages the replicas per region
//!   (`StagedChange::Replication`), plans and commits — the forming commit, as `yeskv dev
//!   --regions` stages the replication before its first commit — so every partition starts
//!   moving to its regional replicas at time 0, from the bootstrap's holders;
//! - a membership fault ([`crate::faults`]: join, leave, replace) stages its changes, plans them
//!   and commits the plan ([`LayoutCell::change`]: `Command::Stage`, [`yeskv_layout::plan`],
//!   `Command::commit`), with the checks an operator meets: the layout's own refusal of a change
//!   that would lose the only copies of a partition ([`LayoutError::DataLoss`], raised by the
//!   plan) and the API's refusal of a plan after which some partition has no data holder that
//!   is up (`yeskv_node::api::cluster`, mirrored by [`partitions_without_live_holder`] with the
//!   driver's knowledge of which nodes are down);
//! - each node's transfer worker (`yeskv_node::transfer`) reports the partitions it received
//!   through [`CellControl`], its [`LayoutControl`], which applies `Command::TransferDone`: the
//!   layout's `record_done` ends transitions, releases sources and drops leaving members that are
//!   a source of nothing more;
//! - a bucket's properties are set by `Command::SetBucket` ([`LayoutCell::set_bucket`]; the
//!   driver sets the server-side cart bucket's data type before the nodes start, as an
//!   operator's `PUT /v1/buckets/{bucket}` would before the bucket is used).
//!
//! Every node follows the cell's applied states ([`yeskv_layout::AppliedState`], numbered in the
//! order they were applied, as by a log's index) through a `watch` channel with the product's
//! [`ClusterTopology::follow`], exactly as a node follows the states its layout service applies:
//! the same per-epoch snapshots give preference lists, fallbacks, data holders, write sets and the
//! partitions the node is syncing, and each state's bucket properties come with its layout. A
//! new state is installed by a task of the node's host the next time that host runs, so for a
//! moment nodes route by different epochs (view skew as in production, if shorter: Raft's apply
//! lag across nodes is not modelled).
//!
//! ## Liveness
//!
//! The product's failure detector is chitchat's phi-accrual over UDP gossip, and chitchat picks
//! gossip peers with a thread-local RNG that cannot be seeded, so it cannot run
//! deterministically. Instead each simulated node runs [`run_detector`]: every
//! [`PING_INTERVAL_MS`] it sends a UDP ping to every other host (members and spares) over the
//! simulated network; a node answers pings with pongs; a peer is *up* while a pong came from it
//! within the last [`SUSPECT_AFTER_MS`]. Partitions, crashes and one-way partitions affect it
//! like any traffic, so the coordinator sees the same kind of (imperfect) liveness as in
//! production: a peer can be believed up while a request to it times out, and down while it
//! still serves others.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use yeskv_core::placement::{assign, NodeSpec};
use yeskv_core::{BucketProps, NodeId};
use yeskv_layout::{
    apply, AppliedState, Command, JoinSpec, Layout, LayoutError, LayoutState, Member, MemberState,
    Plan, Replication, StagedChange, Transitions,
};
use yeskv_node::cluster::{ClusterTopology, Liveness};
use yeskv_node::transfer::LayoutControl;

use crate::clock::sim_now_ms;
use crate::error::Error;
use crate::node::{CLIENT_PORT, CLUSTER, N, PARTITIONS, PEER_PORT};
use crate::regions::{region_name, Regions};
use crate::trace::{Kind, Recorder};

/// How often a node pings each peer, simulated ms.
pub const PING_INTERVAL_MS: u64 = 50;
/// A peer silent for longer than this is believed down, simulated ms.
pub const SUSPECT_AFTER_MS: u64 = 300;
/// The UDP port of the failure detector.
pub const PING_PORT: u16 = 7002;
/// Zones the hosts are spread over, round robin by host index.
pub const ZONES: usize = 3;

/// Where a host stands: its region and its zone inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The region (`yeskv_layout::DEFAULT_REGION` on a seed without regions).
    pub region: String,
    /// The zone.
    pub zone: String,
}

/// The places of `hosts` hosts: on a seed without regions every host in the default region,
/// zones `z0`, `z1`, `z2` round robin by host index; with `regions`, each host's region and
/// its zone inside it.
pub fn places(hosts: usize, regions: Option<&Regions>) -> Vec<Place> {
    (0..hosts)
        .map(|i| match regions {
            None => Place {
                region: yeskv_layout::DEFAULT_REGION.into(),
                zone: format!("z{}", i % ZONES),
            },
            Some(r) => Place {
                region: region_name(r.region_of(i)),
                zone: r.zone_of(i),
            },
        })
        .collect()
}

/// What `node` records when it joins at `place`: its region and zone, capacity 1, its
/// addresses.
pub fn join_spec(node: &NodeId, place: &Place) -> JoinSpec {
    JoinSpec {
        zone: place.zone.clone(),
        capacity: 1,
        http: format!("{node}:{CLIENT_PORT}"),
        peer: peer_addr(node),
        region: place.region.clone(),
    }
}

/// The internode RPC address of a simulated node.
pub fn peer_addr(node: &NodeId) -> String {
    format!("{node}:{PEER_PORT}")
}

/// Why a membership change was not committed.
#[derive(Debug)]
pub enum Refusal {
    /// The layout refused it (e.g. [`LayoutError::DataLoss`]: it would lose the only copies
    /// of some partitions).
    Layout(LayoutError),
    /// After it these partitions would have no data holder that is up (the API's `409`).
    NoLiveHolder {
        /// The partitions.
        partitions: Vec<u16>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Layout(e) => write!(f, "refused by the layout: {e}"),
            Refusal::NoLiveHolder { partitions } => write!(
                f,
                "refused: {} partition(s) would have no data holder that is up (e.g. {:?})",
                partitions.len(),
                &partitions[..partitions.len().min(5)]
            ),
        }
    }
}

/// The layout's replicated state and the layout it holds (never `None` after bootstrap).
struct Cell {
    state: LayoutState,
    layout: Arc<Layout>,
    /// Partitions recorded received (reports that took a node out of a syncing set).
    received: u64,
    /// Commands applied so far (the log index a Raft state machine would be at).
    applied_index: u64,
}

/// The cluster's layout, shared by the driver and every node (see the module docs).
pub struct LayoutCell {
    cell: Mutex<Cell>,
    layouts: tokio::sync::watch::Sender<Option<Arc<Layout>>>,
    /// The applied state, published whenever the buckets' properties change (what each node's
    /// bucket table follows).
    states: tokio::sync::watch::Sender<Arc<AppliedState>>,
    recorder: Recorder,
}

impl LayoutCell {
    /// The first layout: `members` (hosts `0..members.len()`, at `places[i]`) own every
    /// partition, placed by the product's placement, installed by `Command::Bootstrap`. With
    /// `replication` (a seed with regions), the forming commit follows: the replicas per region
    /// are staged, planned and committed, and the partitions move to them from there.
    pub fn bootstrap(
        members: &[NodeId],
        places: &[Place],
        replication: Option<Replication>,
        recorder: Recorder,
    ) -> Result<Arc<LayoutCell>, Error> {
        let specs: Vec<(NodeId, JoinSpec)> = members
            .iter()
            .zip(places)
            .map(|(id, place)| (id.clone(), join_spec(id, place)))
            .collect();
        if specs.len() != members.len() {
            return Err(Error::Config(format!(
                "{} members but {} places",
                members.len(),
                places.len()
            )));
        }
        let placement: Vec<NodeSpec> = specs
            .iter()
            .map(|(id, spec)| NodeSpec::new(id.clone(), spec.zone.clone(), spec.capacity))
            .collect();
        let assignment =
            assign(&placement, N, PARTITIONS, None).map_err(|e| Error::Placement(e.to_string()))?;
        let layout = Layout {
            version: 1,
            epoch: 1,
            cluster_id: CLUSTER.to_string(),
            n: N,
            partitions: PARTITIONS,
            members: specs
                .into_iter()
                .map(|(id, spec)| {
                    let member = Member {
                        zone: spec.zone,
                        capacity: spec.capacity,
                        state: MemberState::Valid,
                        http: spec.http,
                        peer: spec.peer,
                        region: spec.region,
                    };
                    (id, member)
                })
                .collect(),
            assignment,
            transitions: Transitions::new(),
            replication: Default::default(),
        };
        let state = apply(
            &LayoutState::default(),
            &Command::Bootstrap {
                layout: layout.clone(),
            },
        )
        .map_err(|e| Error::Placement(e.to_string()))?;
        let layout = state
            .layout
            .clone()
            .ok_or_else(|| Error::Placement("bootstrap installed no layout".into()))?;
        let (layouts, _) = tokio::sync::watch::channel(Some(layout.clone()));
        let (states, _) = tokio::sync::watch::channel(Arc::new(AppliedState {
            applied_index: 1,
            state: state.clone(),
        }));
        let cell = Arc::new(LayoutCell {
            cell: Mutex::new(Cell {
                state,
                layout,
                received: 0,
                applied_index: 1,
            }),
            layouts,
            states,
            recorder,
        });
        if let Some(regions) = replication {
            cell.change(&[StagedChange::Replication { regions }], |_| true)
                .map_err(|e| Error::Placement(format!("the forming commit: {e}")))?;
            cell.record_empty_transfers()
                .map_err(|e| Error::Placement(format!("after the forming commit: {e}")))?;
        }
        Ok(cell)
    }

    /// Applies `Command::TransferDone` for every partition every member is syncing, as each
    /// node's transfer worker would report it, for a cluster whose disks are all still empty
    /// (before the first node starts): there is nothing to copy. Without it the forming
    /// commit's transfers run during the workload, and the transfer worker confirms each
    /// partition with every data holder in turn, one WAN round trip each, which takes longer
    /// than the whole run (see `docs/reliability.md`). Not counted as partitions received.
    fn record_empty_transfers(&self) -> Result<(), LayoutError> {
        let mut cell = self.cell.lock();
        let members: Vec<NodeId> = cell.layout.members.keys().cloned().collect();
        let mut state = cell.state.clone();
        for node in members {
            let syncing = state
                .layout
                .as_ref()
                .map(|l| l.syncing_of(&node))
                .unwrap_or_default();
            if syncing.is_empty() {
                continue;
            }
            state = apply(
                &state,
                &Command::TransferDone {
                    node,
                    partitions: syncing,
                },
            )?;
        }
        self.install(&mut cell, state);
        Ok(())
    }

    /// The current layout.
    pub fn current(&self) -> Arc<Layout> {
        self.cell.lock().layout.clone()
    }

    /// Partitions whose receipt a `TransferDone` recorded so far (repeated or late reports,
    /// which the layout ignores, not counted).
    pub fn partitions_received(&self) -> u64 {
        self.cell.lock().received
    }

    /// A receiver of every new layout, for [`ClusterTopology::follow`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<Arc<Layout>>> {
        self.layouts.subscribe()
    }

    /// A topology of `local` that follows this cell, asking `liveness` who is up; its bucket
    /// table follows the buckets' properties (a task of the calling host).
    pub fn topology(&self, local: NodeId, liveness: Liveness) -> Arc<ClusterTopology> {
        ClusterTopology::follow(local, self.states.subscribe(), liveness)
    }

    /// Applies `Command::SetBucket`: `bucket`'s properties are `props` on every node from the
    /// next time its host runs (at once for a node started later).
    pub fn set_bucket(&self, bucket: &[u8], props: BucketProps) -> Result<(), LayoutError> {
        let mut cell = self.cell.lock();
        let next = apply(
            &cell.state,
            &Command::SetBucket {
                bucket: bucket.to_vec(),
                props,
            },
        )?;
        self.install(&mut cell, next);
        Ok(())
    }

    /// Stages `changes` and plans them against the current layout without committing: the
    /// plan, or why an operator would be refused (the layout's checks, then the API's liveness
    /// check of the plan with `is_up`).
    pub fn plan_change(
        &self,
        changes: &[StagedChange],
        is_up: impl Fn(&NodeId) -> bool,
    ) -> Result<(LayoutState, Plan), Refusal> {
        let mut staged = self.cell.lock().state.clone();
        for change in changes {
            staged = apply(
                &staged,
                &Command::Stage {
                    change: change.clone(),
                },
            )
            .map_err(Refusal::Layout)?;
        }
        let plan = staged.plan().map_err(Refusal::Layout)?;
        let dead = partitions_without_live_holder(&plan.layout, is_up);
        if !dead.is_empty() {
            return Err(Refusal::NoLiveHolder { partitions: dead });
        }
        Ok((staged, plan))
    }

    /// Stages `changes`, plans them and commits the plan, unless [`LayoutCell::plan_change`]
    /// refuses them. Nothing is staged after a refusal (the API unstages a refused leave).
    /// Returns the plan committed.
    pub fn change(
        &self,
        changes: &[StagedChange],
        is_up: impl Fn(&NodeId) -> bool,
    ) -> Result<Plan, Refusal> {
        let (staged, plan) = self.plan_change(changes, is_up)?;
        let mut cell = self.cell.lock();
        let committed = apply(&staged, &Command::commit(&plan)).map_err(Refusal::Layout)?;
        self.install(&mut cell, committed);
        Ok(plan)
    }

    /// Applies `Command::TransferDone` for `node`: it has received `partitions` (each with
    /// the epoch since which it was syncing it). A late or repeated report changes nothing.
    pub fn transfer_done(
        &self,
        node: &NodeId,
        partitions: Vec<(u16, u64)>,
    ) -> Result<(), LayoutError> {
        let mut cell = self.cell.lock();
        let next = apply(
            &cell.state,
            &Command::TransferDone {
                node: node.clone(),
                partitions: partitions.clone(),
            },
        )?;
        let before = cell.layout.clone();
        let changed = next
            .layout
            .as_ref()
            .is_some_and(|l| l.epoch != before.epoch);
        if !changed {
            return Ok(());
        }
        self.install(&mut cell, next);
        let after = cell.layout.clone();
        // Received: reported, syncing before, and syncing no more.
        let (syncing_before, syncing_after) = (before.syncing_of(node), after.syncing_of(node));
        let reported = partitions
            .iter()
            .filter(|p| syncing_before.contains(p) && !syncing_after.contains(p))
            .count();
        cell.received += reported as u64;
        drop(cell);
        let now_ms = sim_now_ms();
        self.recorder.note(
            now_ms,
            Kind::Node,
            format!(
                "{node} reported {reported} partition(s) received: layout epoch {}, {} partition(s) still moving",
                after.epoch,
                after.transitions.len()
            ),
        );
        for gone in before
            .members
            .keys()
            .filter(|m| !after.members.contains_key(*m))
        {
            self.recorder.note(
                now_ms,
                Kind::Node,
                format!("{gone} left the layout: a source of no partition any more"),
            );
        }
        Ok(())
    }

    /// Makes `state` current (one more command applied) and hands its layout to every node,
    /// with its buckets.
    fn install(&self, cell: &mut Cell, state: LayoutState) {
        cell.applied_index += 1;
        if let Some(layout) = state.layout.clone() {
            cell.layout = layout.clone();
            // No receiver is an error only for `send`; `send_replace` stores it regardless (a
            // node started later reads it).
            self.layouts.send_replace(Some(layout));
        }
        self.states.send_replace(Arc::new(AppliedState {
            applied_index: cell.applied_index,
            state: state.clone(),
        }));
        cell.state = state;
    }
}

/// The partitions that have no data holder that `is_up` in `layout`: the API's liveness check
/// before a leave or a commit (`yeskv_node::api::cluster::without_live_holder`, which asks the
/// node's failure detector), here with the driver's knowledge of which nodes are down.
pub fn partitions_without_live_holder(
    layout: &Layout,
    is_up: impl Fn(&NodeId) -> bool,
) -> Vec<u16> {
    (0..layout.partitions)
        .map(|p| p as u16)
        .filter(|p| !layout.data_holders(*p).iter().any(&is_up))
        .collect()
}

/// A node's [`LayoutControl`]: its completed transfers go to the shared [`LayoutCell`], as the
/// product's go through the layout service's Raft log.
pub struct CellControl {
    node: NodeId,
    cell: Arc<LayoutCell>,
}

impl CellControl {
    /// The control of `node` over `cell`.
    pub fn new(node: NodeId, cell: Arc<LayoutCell>) -> Self {
        CellControl { node, cell }
    }
}

impl LayoutControl for CellControl {
    fn transfer_done(
        &self,
        partitions: Vec<(u16, u64)>,
    ) -> BoxFuture<'static, Result<(), yeskv_node::Error>> {
        let result = self
            .cell
            .transfer_done(&self.node, partitions)
            .map_err(|e| yeskv_node::Error::Layout(format!("recording received partitions: {e}")));
        Box::pin(async move { result })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> NodeId {
        NodeId::new(format!("n{}", i + 1)).expect("a node id")
    }

    fn cell(members: usize) -> Arc<LayoutCell> {
        let ids: Vec<NodeId> = (0..members).map(id).collect();
        LayoutCell::bootstrap(&ids, &places(members, None), None, Recorder::new())
            .expect("bootstrap")
    }

    fn join(i: usize) -> StagedChange {
        StagedChange::Join {
            node: id(i),
            spec: join_spec(&id(i), &places(i + 1, None)[i]),
        }
    }

    fn leave(i: usize, mode: yeskv_layout::LeaveMode) -> StagedChange {
        StagedChange::Leave { node: id(i), mode }
    }

    fn replace(cell: &LayoutCell, node: usize, with: usize) -> Result<Plan, Refusal> {
        cell.change(
            &[join(with), leave(node, yeskv_layout::LeaveMode::Force)],
            |_| true,
        )
    }

    /// Reports, for every node, every partition it is syncing, as its transfer worker would.
    fn report_all(cell: &Arc<LayoutCell>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for node in cell.current().members.keys() {
            let syncing = cell.current().syncing_of(node);
            if syncing.is_empty() {
                continue;
            }
            let control = CellControl::new(node.clone(), cell.clone());
            rt.block_on(control.transfer_done(syncing))
                .expect("the report is taken");
        }
    }

    #[test]
    fn a_cluster_with_regions_is_formed_with_its_replicas_per_region() {
        use rand::SeedableRng;
        let regions = Regions::draw(&mut rand::rngs::StdRng::seed_from_u64(3), 3, 3, &[]);
        let ids: Vec<NodeId> = (0..9).map(id).collect();
        let cell = LayoutCell::bootstrap(
            &ids,
            &places(9, Some(&regions)),
            Some(regions.replication()),
            Recorder::new(),
        )
        .expect("formed");
        let layout = cell.current();
        // Bootstrap, then the forming commit, then one report per node that had partitions to
        // receive: nothing left moving, and nothing counted as received.
        assert!(layout.version >= 2, "the replication was committed");
        assert!(layout.transitions.is_empty());
        assert_eq!(cell.partitions_received(), 0);
        assert_eq!(layout.replication, regions.replication());
        for (i, node) in ids.iter().enumerate() {
            let member = layout.member(node).expect("a member");
            assert_eq!(member.region, region_name(i / 3));
            assert_eq!(member.zone, format!("z{}", i % 3));
        }
        for p in 0..64 {
            let replicas = layout.assignment.replicas(p);
            let regions_of: Vec<&str> = replicas
                .iter()
                .map(|n| layout.region_of(n).expect("a member"))
                .collect();
            assert_eq!(
                regions_of,
                ["r1", "r1", "r2", "r2", "r3", "r3"],
                "partition {p}"
            );
            assert_eq!(layout.data_holders(p).len(), 6);
        }
    }

    #[test]
    fn a_forced_leave_that_would_lose_the_only_copies_is_refused_and_changes_nothing() {
        let cell = cell(3);
        // Three members, n = 3: every partition is on all three. Replacing two of them before
        // anything was received leaves n3 the only data holder of every partition.
        replace(&cell, 0, 3).expect("n1 replaced by n4");
        replace(&cell, 1, 4).expect("n2 replaced by n5");
        let before = cell.current();
        assert!((0..64).all(|p| before.data_holders(p) == vec![id(2)]));
        match replace(&cell, 2, 5) {
            Err(Refusal::Layout(LayoutError::DataLoss { partitions, .. })) => {
                assert_eq!(partitions.len(), 64)
            }
            other => panic!("expected a data-loss refusal, got {other:?}"),
        }
        assert_eq!(*cell.current(), *before, "a refused change changes nothing");
        // Once the newcomers have the data, the same replacement loses nothing.
        report_all(&cell);
        assert!(cell.current().transitions.is_empty());
        replace(&cell, 2, 5).expect("n3 replaced by n6 once n4 and n5 hold the data");
    }

    #[test]
    fn a_change_leaving_a_partition_without_a_live_holder_is_refused() {
        let cell = cell(3);
        let before = cell.current();
        let only_the_newcomer_up = |n: &NodeId| *n == id(3);
        match cell.change(&[join(3)], only_the_newcomer_up) {
            Err(Refusal::NoLiveHolder { partitions }) => assert_eq!(partitions.len(), 64),
            other => panic!("expected a liveness refusal, got {other:?}"),
        }
        assert_eq!(*cell.current(), *before);
        cell.change(&[join(3)], |n| *n != id(0))
            .expect("n2 and n3 are up: every partition keeps a live holder");
    }

    #[test]
    fn reports_end_transitions_and_a_leaving_member_leaves_once_it_is_a_source_of_nothing() {
        let cell = cell(4);
        let plan = cell
            .change(&[leave(0, yeskv_layout::LeaveMode::Graceful)], |_| true)
            .expect("n1 leaves");
        let moving = plan.layout.transitions.len();
        assert!(moving > 0);
        let layout = cell.current();
        assert_eq!(
            layout.member(&id(0)).map(|m| m.state),
            Some(MemberState::Leaving),
            "n1 stays, a source, until its partitions are received"
        );
        let mut layouts = cell.subscribe();
        assert_eq!(layouts.borrow_and_update().as_deref(), Some(&*layout));
        report_all(&cell);
        let after = cell.current();
        assert!(after.transitions.is_empty());
        assert!(after.member(&id(0)).is_none(), "n1 has left the layout");
        assert_eq!(cell.partitions_received(), moving as u64);
        assert!(layouts.has_changed().expect("the cell is alive"));
        assert_eq!(layouts.borrow_and_update().as_deref(), Some(&*after));
        // A repeated report changes nothing.
        let n2 = CellControl::new(id(1), cell.clone());
        let again: Vec<(u16, u64)> = (0..64).map(|p| (p, layout.epoch)).collect();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(n2.transfer_done(again))
            .expect("taken");
        assert_eq!(*cell.current(), *after);
        assert_eq!(cell.partitions_received(), moving as u64);
    }
}
