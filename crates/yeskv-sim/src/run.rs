//! Running one seed: build the cluster in a turmoil simulation, drive it through its fault
//! schedule while the clients run, heal, settle, read the final state, and judge the history
//! with `yeskv-check`.
//!
//! The driver owns the simulation loop: before each turmoil step (1 simulated ms) it applies the
//! faults whose start or end has come. When the workload's time is up every fault has ended (the
//! schedule clips them), so the cluster is healed and crashed nodes are restarted; the clients
//! finish their last operations. From then on the nodes' own repair (hinted handoff,
//! anti-entropy exchanges, the reaper) puts the replicas right, and every [`DIGEST_SAMPLE_MS`]
//! the driver samples each node's anti-entropy tree root of every partition it is a primary of
//! (`yeskv-check`'s digest samples). The settle phase lasts at least [`SETTLE_MIN_MS`] (long
//! enough for tombstones of the workload to pass their grace and be reaped), then until every
//! partition's replicas have equal roots and no hint is pending, at most [`SETTLE_MAX_MS`].
//! Then a final client reads every key with `r = all` through the coordinator, and the driver
//! reads every replica's copy of every key straight from its disk. Convergence (equal roots
//! within [`CONVERGENCE_BOUND_MS`] of healing, equal per-replica reads) is enforced unless
//! [`SimOptions::require_convergence`] is turned off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yeskv_check::history::{DigestSample, FinalRead, History};
use yeskv_check::{Options, Report};
use yeskv_core::codec::decode_record;
use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_core::NodeId;
use yeskv_storage::Space;

use crate::chaos::{ChaosCounts, NetChaos};
use crate::clock::BASE_UNIX_MS;
use crate::error::Error;
use crate::faults::{self, highest, latency, remove_one, Active, Fault, Scheduled};
use crate::node::{node_main, NodeEnv, NodeSlot, N, PARTITIONS};
use crate::protocol::BUCKET;
use crate::topology::SimLayout;
use crate::trace::{self, Kind, Line, Recorder};
use crate::workload::{client_main, final_reads_main, ClientEnv, Keys};

/// Least simulated time between healing and the final reads, ms: in-flight operations end,
/// hints are handed off, anti-entropy runs, and tombstones written during the workload pass
/// their grace ([`crate::node::REAP_GRACE_MS`], 3 s) and then the reaper's hold (the grace
/// again: `yeskv_node::aae::Sightings`), so the reaper removes some of them.
pub const SETTLE_MIN_MS: u64 = 7_000;
/// Most simulated time between healing and the final reads, ms (a cluster that has not
/// converged by then fails the convergence rule).
pub const SETTLE_MAX_MS: u64 = 12_000;
/// Replicas must agree (equal tree roots) within this many simulated ms of healing.
pub const CONVERGENCE_BOUND_MS: u64 = 10_000;
/// Period of the tree-root samples after healing, simulated ms.
pub const DIGEST_SAMPLE_MS: u64 = 100;
/// Most nodes in a simulated cluster.
pub const NODES_MAX: usize = 7;
/// Fewest nodes (`n = 3`).
pub const NODES_MIN: usize = 3;
/// Most clients.
pub const CLIENTS_MAX: usize = 64;
/// Mixed into a seed to draw its long split (`faults::long_split`) from a generator of its own.
const LONG_SPLIT_SALT: u64 = 0x6c6f_6e67_5f73_706c;
/// Longest workload, simulated ms.
pub const DURATION_MS_MAX: u64 = 600_000;
/// Extra simulated time allowed after the final reads should have finished before the run is
/// declared stuck, ms.
const STUCK_AFTER_MS: u64 = 60_000;

/// A bug planted in the simulated nodes, to prove the checkers can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Node `n1`'s disk acknowledges a share of its data writes, then drops them.
    LoseAck,
}

/// Share of `n1`'s data writes the lose-ack bug drops.
pub const LOSE_ACK_RATE: f64 = 0.5;

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Node count (`None`: drawn from the seed, 3 to 7).
    pub nodes: Option<usize>,
    /// Client count (`None`: drawn from the seed, 2 to 6).
    pub clients: Option<usize>,
    /// How long the clients run, simulated ms.
    pub duration_ms: u64,
    /// A planted bug.
    pub bug: Option<Bug>,
    /// Whether diverged replicas (per-replica final reads, tree roots not equal within
    /// [`CONVERGENCE_BOUND_MS`] of healing) fail the seed. On by default.
    pub require_convergence: bool,
    /// Whether the nodes run their background repair (hinted handoff, anti-entropy, reaper).
    /// Off only to show that the convergence rule fails without it.
    pub repair: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: None,
            clients: None,
            duration_ms: 3_000,
            bug: None,
            require_convergence: true,
            repair: true,
        }
    }
}

impl SimOptions {
    /// Refuses options out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(n) = self.nodes {
            if !(NODES_MIN..=NODES_MAX).contains(&n) {
                return Err(Error::Config(format!(
                    "--nodes must be {NODES_MIN} to {NODES_MAX}, got {n}"
                )));
            }
        }
        if let Some(c) = self.clients {
            if !(1..=CLIENTS_MAX).contains(&c) {
                return Err(Error::Config(format!(
                    "--clients must be 1 to {CLIENTS_MAX}, got {c}"
                )));
            }
        }
        if !(500..=DURATION_MS_MAX).contains(&self.duration_ms) {
            return Err(Error::Config(format!(
                "--duration-ms must be 500 to {DURATION_MS_MAX}, got {}",
                self.duration_ms
            )));
        }
        Ok(())
    }
}

/// What one seed did and what the checkers said.
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// Clients simulated.
    pub clients: usize,
    /// The recorded history (with final reads).
    pub history: History,
    /// The whole trace.
    pub trace: Vec<Line>,
    /// Its hash.
    pub hash: u64,
    /// The verdict.
    pub report: Report,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// What the chaos layer did.
    pub chaos: ChaosCounts,
    /// Writes lost to crashes before they were durable (never acknowledged).
    pub lost_unsynced: u64,
    /// Writes acknowledged and dropped by the planted bug.
    pub lost_by_bug: u64,
    /// Simulated ms the seed ran.
    pub simulated_ms: u64,
    /// Replica copies of tombstones removed by the reaper.
    pub reaped: u64,
    /// Hints still pending on any node when the final reads started.
    pub hints_left: u64,
}

impl SeedOutcome {
    /// Whether the seed passed.
    pub fn ok(&self) -> bool {
        self.report.ok()
    }
}

/// Applies fault starts and ends to the simulation.
struct Driver<'a> {
    sim: turmoil::Sim<'a>,
    names: Vec<String>,
    slots: Vec<Arc<NodeSlot>>,
    chaos: Arc<NetChaos>,
    recorder: Recorder,
    active: Active,
    counts: BTreeMap<&'static str, usize>,
}

impl Driver<'_> {
    fn now_ms(&self) -> u64 {
        self.sim.elapsed().as_millis() as u64
    }

    fn set_latency(&self) {
        let bound = latency(&self.active.delay_ms);
        for (i, a) in self.names.iter().enumerate() {
            for b in &self.names[i + 1..] {
                self.sim
                    .set_link_max_message_latency(a.as_str(), b.as_str(), bound);
            }
        }
    }

    /// Whether node `node` is down for a crash or a restart still in force.
    fn is_down(&self, node: usize) -> bool {
        self.active.crashed.get(&node).is_some_and(|c| *c > 0)
            || self.active.restarting.get(&node).is_some_and(|c| *c > 0)
    }

    /// Cuts node `node`'s power: every task dropped, the running incarnation forgotten (its
    /// replica and stop handle), and the disk loses what was not fsynced. Returns the writes
    /// lost.
    fn power_cut(&mut self, node: usize) -> usize {
        self.sim.crash(self.names[node].as_str());
        let slot = &self.slots[node];
        *slot.replica.lock() = None;
        *slot.stop.lock() = None;
        slot.disk.crash()
    }

    fn start(&mut self, f: &Scheduled) {
        let now = self.now_ms();
        *self.counts.entry(f.fault.kind()).or_default() += 1;
        let mut note = format!("start {} (until {} ms)", f.fault, f.end_ms);
        match &f.fault {
            Fault::Crash { node } => {
                let c = self.active.crashed.entry(*node).or_default();
                *c += 1;
                if *c == 1 {
                    // Also when the node is stopping or stopped cleanly: a clean stop leaves
                    // nothing unsynced, so the disk then loses nothing. The dead incarnation's
                    // stop handle goes too: a restart must not take it for the next one's.
                    let lost = self.power_cut(*node);
                    note.push_str(&format!(": {lost} writes not yet durable lost"));
                } else {
                    note.push_str(": already down");
                }
            }
            Fault::Restart { node } => {
                let down = self.is_down(*node);
                *self.active.restarting.entry(*node).or_default() += 1;
                if down {
                    note.push_str(": already down");
                } else if let Some(stop) = self.slots[*node].stop.lock().take() {
                    stop.stop();
                    note.push_str(": stopping");
                } else {
                    // Bounced but not yet running its software: nothing to stop cleanly.
                    note.push_str(": not serving yet");
                }
            }
            Fault::Partition { cut, .. } => {
                for link in cut {
                    let c = self.active.cut.entry(*link).or_default();
                    *c += 1;
                    if *c == 1 {
                        self.sim.partition_oneway(
                            self.names[link.0].as_str(),
                            self.names[link.1].as_str(),
                        );
                    }
                }
            }
            Fault::Loss { rate } => {
                self.active.loss.push(*rate);
                self.chaos.set_loss_rate(highest(&self.active.loss));
            }
            Fault::Duplicate { rate } => {
                self.active.duplicate.push(*rate);
                self.chaos
                    .set_duplicate_rate(highest(&self.active.duplicate));
            }
            Fault::Delay { max_ms } => {
                self.active.delay_ms.push(*max_ms);
                self.set_latency();
            }
            Fault::ClockSkew { node, skew_ms } => {
                self.active.skew_ms.entry(*node).or_default().push(*skew_ms);
                self.slots[*node]
                    .skew_ms
                    .store(*skew_ms, std::sync::atomic::Ordering::Relaxed);
            }
            Fault::SlowDisk { node, delay_ms } => {
                let slow = self.active.slow_ms.entry(*node).or_default();
                slow.push(*delay_ms);
                let worst = slow.iter().copied().max().unwrap_or(0);
                self.slots[*node].disk.set_slow_ms(worst);
            }
        }
        self.recorder.note(now, Kind::Fault, note);
    }

    fn end(&mut self, f: &Scheduled) {
        let now = self.now_ms();
        let mut note = format!("end {}", f.fault);
        match &f.fault {
            Fault::Crash { node } => {
                let c = self.active.crashed.entry(*node).or_default();
                *c = c.saturating_sub(1);
                if !self.is_down(*node) {
                    self.sim.bounce(self.names[*node].as_str());
                    note.push_str(": restarted");
                }
            }
            Fault::Restart { node } => {
                let r = self.active.restarting.entry(*node).or_default();
                *r = r.saturating_sub(1);
                if !self.is_down(*node) {
                    if self.sim.is_host_running(self.names[*node].as_str()) {
                        // Still stopping when its time ran out: killed, as after a stop timeout.
                        let lost = self.power_cut(*node);
                        note.push_str(&format!(
                            ": not stopped in time, killed ({lost} writes not yet durable lost)"
                        ));
                    }
                    self.sim.bounce(self.names[*node].as_str());
                    note.push_str(", restarted");
                }
            }
            Fault::Partition { cut, .. } => {
                for link in cut {
                    let c = self.active.cut.entry(*link).or_default();
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        self.sim.repair_oneway(
                            self.names[link.0].as_str(),
                            self.names[link.1].as_str(),
                        );
                    }
                }
            }
            Fault::Loss { rate } => {
                remove_one(&mut self.active.loss, rate);
                self.chaos.set_loss_rate(highest(&self.active.loss));
            }
            Fault::Duplicate { rate } => {
                remove_one(&mut self.active.duplicate, rate);
                self.chaos
                    .set_duplicate_rate(highest(&self.active.duplicate));
            }
            Fault::Delay { max_ms } => {
                remove_one(&mut self.active.delay_ms, max_ms);
                self.set_latency();
            }
            Fault::ClockSkew { node, skew_ms } => {
                let skews = self.active.skew_ms.entry(*node).or_default();
                remove_one(skews, skew_ms);
                let now_skew = skews.last().copied().unwrap_or(0);
                self.slots[*node]
                    .skew_ms
                    .store(now_skew, std::sync::atomic::Ordering::Relaxed);
            }
            Fault::SlowDisk { node, delay_ms } => {
                let slow = self.active.slow_ms.entry(*node).or_default();
                remove_one(slow, delay_ms);
                let worst = slow.iter().copied().max().unwrap_or(0);
                self.slots[*node].disk.set_slow_ms(worst);
            }
        }
        self.recorder.note(now, Kind::Fault, note);
    }
}

/// One sample of every running node's tree roots (partitions it is a primary of). Returns the
/// samples, whether every partition's sampled roots agree, and the hints pending cluster-wide.
fn sample_digests(
    layout: &SimLayout,
    slots: &[Arc<NodeSlot>],
    time_ms: u64,
) -> (Vec<DigestSample>, bool, u64) {
    let mut samples = Vec::new();
    let mut hints = 0;
    let mut roots: BTreeMap<u16, std::collections::BTreeSet<u64>> = BTreeMap::new();
    let mut complete = true;
    for slot in slots {
        let Some(replica) = slot.replica.lock().clone() else {
            complete = false;
            continue;
        };
        hints += replica.hints_pending();
        for (p, prefs) in layout.prefs.iter().enumerate() {
            if !prefs.contains(&slot.id) {
                continue;
            }
            let p = p as u16;
            let Some(summary) = replica.tree_summary(p) else {
                complete = false;
                continue;
            };
            roots.entry(p).or_default().insert(summary.root);
            samples.push(DigestSample {
                time_ms,
                node: slot.id.to_string(),
                partition: u32::from(p),
                digest: format!("{:016x}", summary.root),
            });
        }
    }
    let agree = complete && roots.values().all(|r| r.len() == 1);
    (samples, agree, hints)
}

fn node_id(i: usize) -> Result<NodeId, Error> {
    NodeId::new(faults::node_name(i)).map_err(|e| Error::Config(e.to_string()))
}

/// Reads every replica's copy of every key straight from its disk.
fn replica_reads(layout: &SimLayout, slots: &[Arc<NodeSlot>], keys: &Keys) -> Vec<FinalRead> {
    let mut reads = Vec::new();
    for key in keys.all() {
        let hash = key_hash(BUCKET, key.as_bytes());
        let partition = partition_of(hash, layout.partitions);
        let sk = storage_key(partition, BUCKET, key.as_bytes());
        for node in layout.prefs[usize::from(partition)].iter() {
            let Some(slot) = slots.iter().find(|s| &s.id == node) else {
                continue;
            };
            let values = match slot.disk.get(Space::Data, &sk) {
                Ok(Some(record)) => match decode_record(&record) {
                    Ok(obj) => obj
                        .siblings()
                        .iter()
                        .filter_map(|s| s.version.value.as_ref())
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect(),
                    Err(e) => vec![format!("<corrupt record: {e}>")],
                },
                Ok(None) => Vec::new(),
                Err(e) => vec![format!("<unreadable: {e}>")],
            };
            reads.push(FinalRead {
                key: key.clone(),
                node: node.to_string(),
                values,
            });
        }
    }
    reads
}

/// Held while a seed runs: seeds in one process run one at a time, so that no other
/// simulation draws task ids from tokio's process-wide counter in between (see
/// [`align_task_ids`]). Test harnesses run tests on parallel threads.
static ONE_SEED_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Task ids are aligned to this before each seed (a multiple of tokio's shard count).
const TASK_ID_ALIGN: u64 = 64;

/// Moves tokio's process-wide task-id counter to a multiple of [`TASK_ID_ALIGN`].
///
/// A current-thread runtime keeps its tasks in lists sharded by task id (id mod 4) and, when
/// turmoil crashes a host, drops them shard by shard. A crashed node's connections therefore
/// close, and its peers notice, in an order that depends on where the process-wide counter
/// stood when the seed began: the second run of a seed in one process took another path than
/// the first (found by `a_seed_replays_identically`). Aligning the counter makes a seed's trace
/// the same whether it runs alone or after other seeds, provided no other thread spawns tokio
/// tasks meanwhile: [`run_seed`] holds [`ONE_SEED_AT_A_TIME`] for the whole seed.
fn align_task_ids() -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::Simulation(format!("tokio runtime: {e}")))?;
    for _ in 0..TASK_ID_ALIGN {
        let id: u64 = rt
            .spawn(async {})
            .id()
            .to_string()
            .parse()
            .map_err(|e| Error::Simulation(format!("tokio task id: {e}")))?;
        if id % TASK_ID_ALIGN == TASK_ID_ALIGN - 1 {
            return Ok(());
        }
    }
    Err(Error::Simulation("tokio task ids did not align".into()))
}

/// One seed's cluster, drawn from the seed before the simulation is built: its nodes and
/// clients, the keys they use, the faults they go through and how long the workload lasts.
struct Setup {
    /// Node count.
    nodes: usize,
    /// Client count.
    clients: usize,
    /// The keys the workload uses.
    keys: Keys,
    /// The nodes' ids, `n1` first.
    ids: Vec<NodeId>,
    /// The fixed layout (preference lists) of the seed.
    layout: SimLayout,
    /// Where hosts, clients and the driver record the trace and the history.
    recorder: Recorder,
    /// The message loss and duplication layer shared by the nodes.
    chaos: Arc<NetChaos>,
    /// The nodes' state that outlives their crashes (disk, running replica, skew).
    slots: Vec<Arc<NodeSlot>>,
    /// Every fault with its window, sorted by start and end.
    schedule: Vec<Scheduled>,
    /// How long the clients run, simulated ms (past the duration when a long split needs it).
    workload_ms: u64,
}

impl Setup {
    /// Latest simulated ms the run may reach before it is declared stuck.
    fn limit_ms(&self) -> u64 {
        self.workload_ms + SETTLE_MAX_MS + STUCK_AFTER_MS
    }
}

/// Draws the cluster of `seed` from `rng`: node and client counts, keys, node slots (and the
/// planted bug), the fault schedule. The draws come in a fixed order, since every later draw of
/// the seed (the simulation's own seed, the clients') follows from where this leaves `rng`.
fn draw_setup(options: &SimOptions, seed: u64, rng: &mut StdRng) -> Result<Setup, Error> {
    let nodes = options
        .nodes
        .unwrap_or_else(|| rng.random_range(NODES_MIN..=NODES_MAX));
    let clients = options.clients.unwrap_or_else(|| rng.random_range(2..=6));
    let keys = Keys::new(rng.random_range(2..=5), rng.random_range(1..=3));
    let ids: Vec<NodeId> = (0..nodes).map(node_id).collect::<Result<_, _>>()?;
    let layout = SimLayout::new(ids.clone(), N, PARTITIONS)?;
    let recorder = Recorder::new();
    let chaos = Arc::new(NetChaos::new(rng.random()));
    let slots: Vec<Arc<NodeSlot>> = ids
        .iter()
        .map(|id| Arc::new(NodeSlot::new(id.clone(), rng.random())))
        .collect();
    if options.bug == Some(Bug::LoseAck) {
        slots[0].disk.set_lose_ack(LOSE_ACK_RATE, rng.random());
    }
    let (schedule, workload_ms) = draw_schedule(rng, seed, nodes, options.duration_ms);
    recorder.note(
        0,
        Kind::Node,
        format!(
            "seed {seed}: {nodes} nodes, {clients} clients, keys {:?}, {} faults, bug {:?}",
            keys.all().collect::<Vec<_>>(),
            schedule.len(),
            options.bug
        ),
    );
    Ok(Setup {
        nodes,
        clients,
        keys,
        ids,
        layout,
        recorder,
        chaos,
        slots,
        schedule,
        workload_ms,
    })
}

/// Draws the fault schedule of `seed` and the workload time it needs. The usual faults come
/// from `rng`; a long split comes from a generator of its own (faults module docs), so adding
/// it does not shift the other draws, and the workload goes on past its heal.
fn draw_schedule(
    rng: &mut StdRng,
    seed: u64,
    nodes: usize,
    duration_ms: u64,
) -> (Vec<Scheduled>, u64) {
    let mut schedule = faults::schedule(rng, nodes, duration_ms);
    let mut workload_ms = duration_ms;
    let mut long_rng = StdRng::seed_from_u64(seed ^ LONG_SPLIT_SALT);
    if let Some(long) = faults::long_split(&mut long_rng, nodes) {
        workload_ms = workload_ms.max(long.end_ms + faults::AFTER_LONG_SPLIT_MS);
        schedule.push(long);
        schedule.sort_by_key(|f| (f.start_ms, f.end_ms));
    }
    (schedule, workload_ms)
}

/// Builds the turmoil simulation of `setup`: 1 ms steps, time starting at [`BASE_UNIX_MS`],
/// one host per node running the product's node code and one client per workload client.
/// Draws the simulation's seed and then each client's seed from `rng`, in that order.
/// Returns the simulation and the hosts' names (index `i` is node `i`).
fn build_sim(
    setup: &Setup,
    options: &SimOptions,
    rng: &mut StdRng,
) -> (turmoil::Sim<'static>, Vec<String>) {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(rng.random())
        .epoch(UNIX_EPOCH + Duration::from_millis(BASE_UNIX_MS))
        .simulation_duration(Duration::from_millis(setup.limit_ms() + 1_000))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_millis(faults::LATENCY_MS_MAX));
    let mut sim = builder.build();

    let names: Vec<String> = setup.ids.iter().map(|id| id.to_string()).collect();
    for (i, name) in names.iter().enumerate() {
        let env = Arc::new(NodeEnv {
            slot: setup.slots[i].clone(),
            layout: setup.layout.clone(),
            chaos: setup.chaos.clone(),
            recorder: setup.recorder.clone(),
            repair: options.repair,
        });
        sim.host(name.as_str(), move || node_main(env.clone()));
    }
    for index in 0..setup.clients {
        let env = ClientEnv {
            index,
            clients: setup.clients,
            nodes: setup.ids.clone(),
            keys: setup.keys.clone(),
            seed: rng.random(),
            until_ms: setup.workload_ms,
            recorder: setup.recorder.clone(),
        };
        sim.client(format!("client{}", index + 1).as_str(), client_main(env));
    }
    (sim, names)
}

/// The fault starts and ends of a schedule in the order the driver applies them, and how far
/// it has got.
struct Timeline {
    /// `(time_ms, is_start, index into the schedule)`: in time order; at equal times ends
    /// before starts, then by schedule.
    transitions: Vec<(u64, bool, usize)>,
    /// The first transition not yet applied.
    next: usize,
}

impl Timeline {
    /// The transitions of `schedule`, none applied.
    fn new(schedule: &[Scheduled]) -> Self {
        let mut transitions: Vec<(u64, bool, usize)> = Vec::new();
        for (i, f) in schedule.iter().enumerate() {
            transitions.push((f.start_ms, true, i));
            transitions.push((f.end_ms, false, i));
        }
        transitions.sort();
        Timeline {
            transitions,
            next: 0,
        }
    }

    /// Applies, in order, every transition whose time has come by `now_ms`.
    fn apply_due(&mut self, driver: &mut Driver<'_>, schedule: &[Scheduled], now_ms: u64) {
        while self.next < self.transitions.len() && self.transitions[self.next].0 <= now_ms {
            let (_, is_start, i) = self.transitions[self.next];
            if is_start {
                driver.start(&schedule[i]);
            } else {
                driver.end(&schedule[i]);
            }
            self.next += 1;
        }
    }

    /// Whether every fault has started and ended.
    fn all_applied(&self) -> bool {
        self.next == self.transitions.len()
    }
}

/// The settle phase after healing: when the cluster healed, the tree-root samples, when the
/// replicas came to agree, and whether the final reads may start.
#[derive(Default)]
struct Settle {
    /// When every fault had ended and the workload's time was up.
    healed_at_ms: Option<u64>,
    /// When the next tree-root sample is due.
    next_sample_ms: u64,
    /// Since when the replicas agree (equal roots, no hint pending), if they do.
    agreed_at_ms: Option<u64>,
    /// Whether the cluster has settled: the final reads start when the clients are done.
    settled: bool,
    /// Hints pending cluster-wide at the sample that settled the cluster.
    hints_left: u64,
}

impl Settle {
    /// Marks the cluster healed at `now_ms` the first time every fault has ended
    /// (`all_faults_ended`) and the workload's time is up; samples start then.
    fn heal_if_due(&mut self, setup: &Setup, all_faults_ended: bool, now_ms: u64) {
        if self.healed_at_ms.is_none() && all_faults_ended && now_ms >= setup.workload_ms {
            self.healed_at_ms = Some(now_ms);
            self.next_sample_ms = now_ms;
            setup.recorder.healed_at(now_ms);
            setup
                .recorder
                .note(now_ms, Kind::Fault, "healed: every fault has ended");
        }
    }

    /// After healing, every [`DIGEST_SAMPLE_MS`]: samples the tree roots, notes when the
    /// replicas come to agree or differ again, and settles the cluster once it has had
    /// [`SETTLE_MIN_MS`] and either agrees or has had [`SETTLE_MAX_MS`].
    fn sample_if_due(&mut self, setup: &Setup, now_ms: u64) {
        let Some(healed) = self.healed_at_ms else {
            return;
        };
        if now_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = now_ms + DIGEST_SAMPLE_MS;
        let (samples, agree, hints) = sample_digests(&setup.layout, &setup.slots, now_ms);
        setup.recorder.digests(samples);
        match (agree && hints == 0, self.agreed_at_ms) {
            (true, None) => {
                self.agreed_at_ms = Some(now_ms);
                setup.recorder.note(
                    now_ms,
                    Kind::Node,
                    format!(
                        "replicas agree: equal tree roots, no hint pending ({} ms after healing)",
                        now_ms - healed
                    ),
                );
            }
            (false, Some(_)) => {
                self.agreed_at_ms = None;
                setup
                    .recorder
                    .note(now_ms, Kind::Node, "replicas differ again");
            }
            _ => {}
        }
        if !self.settled
            && now_ms >= healed + SETTLE_MIN_MS
            && (self.agreed_at_ms.is_some() || now_ms >= healed + SETTLE_MAX_MS)
        {
            self.settled = true;
            self.hints_left = hints;
        }
    }
}

/// Steps the simulation 1 ms at a time through the fault schedule, the healing and the settle
/// phase, starts the final reads once the cluster has settled and the clients are done, and
/// returns when they are done too, with the hints pending when the cluster settled. Fails if
/// the run passes [`Setup::limit_ms`] (stuck) or turmoil reports an error.
fn drive(driver: &mut Driver<'_>, setup: &Setup, final_seed: u64) -> Result<u64, Error> {
    let limit_ms = setup.limit_ms();
    let mut timeline = Timeline::new(&setup.schedule);
    let mut settle = Settle::default();
    let mut final_started = false;
    let mut steps: u64 = 0;
    loop {
        let now = driver.now_ms();
        timeline.apply_due(driver, &setup.schedule, now);
        settle.heal_if_due(setup, timeline.all_applied(), now);
        settle.sample_if_due(setup, now);
        let finished = driver
            .sim
            .step()
            .map_err(|e| Error::Simulation(e.to_string()))?;
        steps += 1;
        if finished {
            if final_started {
                break;
            }
            if settle.settled {
                final_started = true;
                driver.sim.client(
                    "final",
                    final_reads_main(
                        setup.ids.clone(),
                        setup.keys.clone(),
                        setup.recorder.clone(),
                        final_seed,
                    ),
                );
            }
        }
        if now > limit_ms {
            return Err(Error::Stuck {
                steps,
                what: if final_started {
                    "the final reads".into()
                } else {
                    "the clients".into()
                },
            });
        }
    }
    Ok(settle.hints_left)
}

/// What the disks showed at the end of a run.
struct DiskTotals {
    /// Writes lost to crashes before they were durable.
    lost_unsynced: u64,
    /// Writes acknowledged and dropped by the planted bug.
    lost_by_bug: u64,
    /// Replica copies of tombstones removed by the reaper.
    reaped: u64,
}

/// Ends a run whose final reads are done: records every replica's own copy of every key (read
/// from its disk) at the final time, sums the disks' counters, and drops the replicas and then
/// the simulation. Returns the final simulated ms, the disk totals and the faults injected by
/// kind.
fn read_final_state(
    mut driver: Driver<'_>,
    setup: &Setup,
) -> (u64, DiskTotals, BTreeMap<&'static str, usize>) {
    let simulated_ms = driver.now_ms();
    for read in replica_reads(&setup.layout, &setup.slots, &setup.keys) {
        setup.recorder.final_read(simulated_ms, read);
    }
    let disks = DiskTotals {
        lost_unsynced: setup.slots.iter().map(|s| s.disk.lost_unsynced()).sum(),
        lost_by_bug: setup.slots.iter().map(|s| s.disk.lost_acked()).sum(),
        reaped: setup.slots.iter().map(|s| s.disk.data_deletes()).sum(),
    };
    for slot in &setup.slots {
        *slot.replica.lock() = None;
    }
    let faults = std::mem::take(&mut driver.counts);
    drop(driver);
    (simulated_ms, disks, faults)
}

/// Judges a recorded history with `yeskv-check`, enforcing convergence within
/// [`CONVERGENCE_BOUND_MS`] of healing unless the options turn it off.
fn judge(history: &History, options: &SimOptions) -> Report {
    let check_options = Options {
        check_convergence: options.require_convergence,
        convergence_bound_ms: CONVERGENCE_BOUND_MS,
        ..Options::default()
    };
    yeskv_check::check(history, &check_options)
}

/// Runs one seed (see the module docs): draws the cluster, builds the simulation, drives it
/// through faults, healing and settling to the final reads, then judges the history.
pub fn run_seed(options: &SimOptions, seed: u64) -> Result<SeedOutcome, Error> {
    options.validate()?;
    let _one_at_a_time = ONE_SEED_AT_A_TIME.lock();
    align_task_ids()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let setup = draw_setup(options, seed, &mut rng)?;
    let (sim, names) = build_sim(&setup, options, &mut rng);
    let final_seed: u64 = rng.random();

    let mut driver = Driver {
        sim,
        names,
        slots: setup.slots.clone(),
        chaos: setup.chaos.clone(),
        recorder: setup.recorder.clone(),
        active: Active::default(),
        counts: BTreeMap::new(),
    };
    let hints_left = drive(&mut driver, &setup, final_seed)?;
    let (simulated_ms, disks, faults) = read_final_state(driver, &setup);

    let (history, trace) = setup.recorder.take();
    let report = judge(&history, options);
    let hash = trace::hash(&trace);
    Ok(SeedOutcome {
        seed,
        nodes: setup.nodes,
        clients: setup.clients,
        history,
        trace,
        hash,
        report,
        faults,
        chaos: setup.chaos.counts(),
        lost_unsynced: disks.lost_unsynced,
        lost_by_bug: disks.lost_by_bug,
        simulated_ms,
        reaped: disks.reaped,
        hints_left,
    })
}
