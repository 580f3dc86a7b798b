//! Running one seed: build the cluster in a turmoil simulation, drive it through its fault
//! schedule while the clients run, heal, settle, read the final state, and judge the history
//! with `yeskv-check`.
//!
//! The driver owns the simulation loop: before each turmoil step (1 simulated ms) it applies the
//! faults whose start or end has come, membership changes included (join, leave, replace: the
//! shared layout of [`crate::topology`] changes by the product's state machine; on a seed with
//! regions also region cuts and slow WANs, and the WAN latency of every link between two
//! regions is in force from the first step, [`crate::regions`]), and after each
//! step it stops for good every node that left the layout gracefully and has been dropped from
//! it. When the workload's time is up every fault has ended (the schedule clips them), so the
//! cluster is healed and crashed nodes are restarted (not the ones gone for good); the clients
//! finish their last operations. The layout's target replicas no longer change after that (only
//! completed transfers change the layout), so they are the *final holders*. From then on the
//! nodes' own repair (hinted handoff, anti-entropy exchanges, the reaper) and transfer workers
//! put the replicas right, and every [`DIGEST_SAMPLE_MS`] the driver samples the anti-entropy
//! tree root of every partition on each of its target replicas in the current layout (receiving
//! ones included: they agree once they have the data) (`yeskv-check`'s digest samples). The
//! settle phase lasts at least [`SETTLE_MIN_MS`] (long enough for tombstones of the workload to
//! pass their grace and be reaped) and until every TTL'd value the workload wrote must have
//! expired for any reader (the expiry rule then judges every TTL key's final state, with the
//! seed's exact skew bound: [`expiry_skew_bound_ms`]), then until every partition's replicas have equal roots, no
//! hint is pending and no partition is in transition (every transfer reported done), at most
//! [`SETTLE_MAX_MS`] ([`REGION_SETTLE_MAX_MS`] with regions, see [`Bounds`]). Then a final
//! client reads every key with `r = all` through a coordinator
//! among the final members, and the driver reads each final holder's copy of every key straight
//! from its disk; nodes that left the layout are not read. Convergence (equal roots within
//! [`CONVERGENCE_BOUND_MS`] of healing, [`REGION_CONVERGENCE_BOUND_MS`] with regions, equal
//! per-replica reads) is enforced unless
//! [`SimOptions::require_convergence`] is turned off; a partition still in transition at the
//! final reads fails the seed as well ([`SeedOutcome::transitions_left`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yeskv_check::history::{DigestSample, FinalRead, History};
use yeskv_check::{Options, Report};
use yeskv_core::codec::decode_record;
use yeskv_core::datatypes::{self, DtValue};
use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_core::{BucketProps, Datatype, NodeId};
use yeskv_layout::{Layout, LayoutError, LeaveMode, MemberState, StagedChange};
use yeskv_storage::Space;

use crate::chaos::{ChaosCounts, NetChaos};
use crate::clock::BASE_UNIX_MS;
use crate::counters::ProductCounters;
use crate::error::Error;
use crate::faults::{self, highest, latency, remove_one, Active, Fault, Scheduled};
use crate::node::{node_main, NodeEnv, NodeSlot};
use crate::protocol::DT_BUCKET;
use crate::regions::{
    region_name, spare_regions, Regions, REGIONS_DEFAULT, REGIONS_EVERY, REGIONS_MAX, REGIONS_MIN,
    REGION_NODES_MAX, REGION_NODES_MIN,
};
use crate::topology::{join_spec, places, LayoutCell, Place, Refusal};
use crate::trace::{self, Kind, Line, Recorder};
use crate::workload::{
    client_main, final_reads_main, ClientEnv, Keys, WriteOutcomes, WriteTally, CLIENT_TIMEOUT_MS,
    TTL_SECS_MAX,
};

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
/// [`SETTLE_MAX_MS`] on a seed with regions (see [`Bounds`]).
pub const REGION_SETTLE_MAX_MS: u64 = 75_000;
/// [`CONVERGENCE_BOUND_MS`] on a seed with regions (see [`Bounds`]).
pub const REGION_CONVERGENCE_BOUND_MS: u64 = 60_000;

/// How long a seed's cluster may take to settle and to converge after healing.
///
/// A seed with regions gets longer bounds. Not for the data path: hinted handoff and
/// anti-entropy put a region that was cut off right within seconds of the heal. For the
/// transfer worker (`yeskv_node::transfer`): a node receiving partitions takes them one at a
/// time and confirms each with every data holder in turn, so with replicas in three regions a
/// join or a replacement costs a WAN round trip per partition and holder — tens of simulated
/// seconds for the 64 partitions (up to 43 s after healing in the first 300 seeds with
/// regions), and the seed waits for it (no partition may still move at the final reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Most simulated ms between healing and the final reads.
    pub settle_max_ms: u64,
    /// Replicas must agree within this many simulated ms of healing.
    pub convergence_ms: u64,
}

impl Bounds {
    /// The bounds of a seed with or without regions.
    pub fn of(regions: bool) -> Self {
        match regions {
            false => Bounds {
                settle_max_ms: SETTLE_MAX_MS,
                convergence_ms: CONVERGENCE_BOUND_MS,
            },
            true => Bounds {
                settle_max_ms: REGION_SETTLE_MAX_MS,
                convergence_ms: REGION_CONVERGENCE_BOUND_MS,
            },
        }
    }
}
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
/// Mixed into a seed to draw its membership changes (`faults::membership_changes`) and its
/// spares' randomness from a generator of their own.
const MEMBERSHIP_SALT: u64 = 0x6d65_6d62_6572_7321;
/// Mixed into a seed to draw its regions (members per region, WAN latencies, region faults)
/// from a generator of their own.
const REGIONS_SALT: u64 = 0x7265_6769_6f6e_7321;
/// Mixed into a seed to draw its server-side cart and TTL keys from a generator of their own.
const KEYS_SALT: u64 = 0x6474_5f74_746c_2121;
/// Added to a seed's clock skew spread for the expiry rule's skew bound, ms
/// ([`expiry_skew_bound_ms`]): a final read's time is when it was sent, and the read takes a
/// few ms to reach its coordinator.
pub const EXPIRY_MARGIN_MS: u64 = 500;
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
    /// Node `n1`'s client API drops the `?ttl=` of the writes it takes: their values never
    /// expire (the expiry rule).
    IgnoreTtl,
    /// Node `n1`'s client API acknowledges server-side cart removes without applying them
    /// (removed items staying removed).
    SkipRemove,
}

/// Share of `n1`'s data writes the lose-ack bug drops.
pub const LOSE_ACK_RATE: f64 = 0.5;

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Node count at the start, spares not counted (`None`: drawn from the seed, 3 to 7).
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
    /// Regions of every seed: `Some(0)` none, `Some(R)` R regions ([`REGIONS_MIN`] to
    /// [`REGIONS_MAX`]); `None`: every [`REGIONS_EVERY`]th seed has [`REGIONS_DEFAULT`], the
    /// others none ([`SimOptions::regions_of`]).
    pub regions: Option<usize>,
    /// Members per region on a seed with regions (`None`: drawn, [`REGION_NODES_MIN`] to
    /// [`REGION_NODES_MAX`]).
    pub region_nodes: Option<usize>,
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
            regions: None,
            region_nodes: None,
        }
    }
}

impl SimOptions {
    /// The regions of `seed` (0: none): as the options fix them, else [`REGIONS_DEFAULT`] on
    /// every [`REGIONS_EVERY`]th seed.
    pub fn regions_of(&self, seed: u64) -> usize {
        self.regions
            .unwrap_or(if seed.is_multiple_of(REGIONS_EVERY) {
                REGIONS_DEFAULT
            } else {
                0
            })
    }

    /// Refuses options out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(r) = self.regions {
            if r != 0 && !(REGIONS_MIN..=REGIONS_MAX).contains(&r) {
                return Err(Error::Config(format!(
                    "--regions must be 0 or {REGIONS_MIN} to {REGIONS_MAX}, got {r}"
                )));
            }
        }
        if let Some(k) = self.region_nodes {
            if !(REGION_NODES_MIN..=REGION_NODES_MAX).contains(&k) {
                return Err(Error::Config(format!(
                    "--region-nodes must be {REGION_NODES_MIN} to {REGION_NODES_MAX}, got {k}"
                )));
            }
        }
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
    /// Regions (0: none).
    pub regions: usize,
    /// Members at the start.
    pub nodes: usize,
    /// Spare nodes (hosts that start owning nothing, for joins and replacements).
    pub spares: usize,
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
    /// Replica copies of tombstones removed by the reaper (the nodes' own counter).
    pub reaped: u64,
    /// Partitions cleared with a range delete: by nodes that received them anew (what they held
    /// of them before, and writes they took before their first transfer round), and by former
    /// holders cleaning up.
    pub cleared: u64,
    /// Partitions whose receipt the layout recorded.
    pub partitions_received: u64,
    /// Partitions transfer workers reported (the nodes' counter; above `partitions_received`
    /// by the repeated reports the layout ignored).
    pub partitions_reported: u64,
    /// Keys that transfer workers copied.
    pub transfer_keys: u64,
    /// Hints still pending on any node when the final reads started.
    pub hints_left: u64,
    /// Partitions still in transition when the final reads started (a transfer that never
    /// completed): the seed fails unless 0.
    pub transitions_left: usize,
    /// The layout's version and epoch at the end.
    pub layout_version: u64,
    /// See [`SeedOutcome::layout_version`].
    pub layout_epoch: u64,
    /// The workload's writes (and deletes, and cart writes) by the write quorum they asked:
    /// acknowledged, indeterminate, refused.
    pub writes_by_quorum: BTreeMap<&'static str, WriteOutcomes>,
}

impl SeedOutcome {
    /// Whether the seed passed: the checkers found nothing, and every transfer completed.
    pub fn ok(&self) -> bool {
        self.report.ok() && self.transitions_left == 0
    }
}

/// Applies fault starts and ends to the simulation.
struct Driver<'a> {
    sim: turmoil::Sim<'a>,
    /// The nodes' own counters, kept during every step.
    counters: ProductCounters,
    names: Vec<String>,
    /// The hosts' node ids (index `i` is host `i`).
    ids: Vec<NodeId>,
    slots: Vec<Arc<NodeSlot>>,
    /// The cluster's layout.
    layout: Arc<LayoutCell>,
    chaos: Arc<NetChaos>,
    recorder: Recorder,
    active: Active,
    counts: BTreeMap<&'static str, usize>,
    /// Nodes stopped for good (replaced, or left): never restarted, never read again.
    gone: BTreeSet<usize>,
    /// Nodes leaving gracefully, stopped for good once the layout has dropped them.
    leaving: BTreeSet<usize>,
    /// Partitions that lost a data holder for good (a replace) and are not rebuilt yet: still
    /// in transition since. A replace of another of their holders is skipped (see
    /// [`Driver::change_membership`]).
    degraded: BTreeSet<u16>,
    /// Partitions whose region lost a replica for good to a graceful leave that moved nothing
    /// (the region's replica count shrank): a replace of another holder of theirs is skipped
    /// while their data holders disagree (see [`Driver::change_membership`]).
    shrunk: BTreeSet<u16>,
    /// The seed's regions, if it has some.
    regions: Option<Arc<Regions>>,
    /// Every host's region and zone (what it records when it joins).
    places: Vec<Place>,
}

impl Driver<'_> {
    fn now_ms(&self) -> u64 {
        self.sim.elapsed().as_millis() as u64
    }

    /// Sets every node-to-node link's latency from what is in force: the LAN bound (raised by
    /// delay faults) inside a region and on seeds without regions; between two regions their
    /// WAN latency, slowed by a slow-WAN fault of either, its upper bound raised by delay
    /// faults ([`Regions::link_latency`]).
    fn set_latency(&self) {
        let bound = latency(&self.active.delay_ms);
        for (i, a) in self.names.iter().enumerate() {
            for (j, b) in self.names.iter().enumerate().skip(i + 1) {
                let wan = self.regions.as_ref().and_then(|r| {
                    let extra = self.active.slow_wan_between(r.region_of(i), r.region_of(j));
                    r.link_latency(i, j, extra, bound)
                });
                match wan {
                    None => self
                        .sim
                        .set_link_max_message_latency(a.as_str(), b.as_str(), bound),
                    Some(link) => {
                        // Both bounds; the lower first (it sets the upper to the same), so the
                        // upper is never below the lower.
                        self.sim.set_link_latency(a.as_str(), b.as_str(), link.min);
                        self.sim
                            .set_link_max_message_latency(a.as_str(), b.as_str(), link.max);
                    }
                }
            }
        }
    }

    /// Cuts the directed links `cut` (a partition or a region cut), each while any fault in
    /// force cuts it.
    fn cut_links(&mut self, cut: &[(usize, usize)]) {
        for link in cut {
            let c = self.active.cut.entry(*link).or_default();
            *c += 1;
            if *c == 1 {
                self.sim
                    .partition_oneway(self.names[link.0].as_str(), self.names[link.1].as_str());
            }
        }
    }

    /// Ends one fault's cut of the links `cut`: each is repaired once no fault cuts it.
    fn heal_links(&mut self, cut: &[(usize, usize)]) {
        for link in cut {
            let c = self.active.cut.entry(*link).or_default();
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.sim
                    .repair_oneway(self.names[link.0].as_str(), self.names[link.1].as_str());
            }
        }
    }

    /// Whether node `node` is down for a crash or a restart still in force.
    fn is_down(&self, node: usize) -> bool {
        self.active.crashed.get(&node).is_some_and(|c| *c > 0)
            || self.active.restarting.get(&node).is_some_and(|c| *c > 0)
    }

    /// Whether `node` runs: neither down nor gone for good. (The operator's view of liveness
    /// for the API's check before a commit; exact, where the product asks its detector.)
    fn is_up(&self, node: &NodeId) -> bool {
        self.ids
            .iter()
            .position(|n| n == node)
            .is_some_and(|i| !self.is_down(i) && !self.gone.contains(&i))
    }

    /// Applies membership fault `fault` (see the faults module docs): stages and
    /// commits the change, or says why it is skipped (the count to bump, the reason).
    fn change_membership(&mut self, fault: &Fault) -> Result<String, (&'static str, String)> {
        let layout = self.layout.current();
        let skipped = |reason: String| Err((fault.skipped_kind(), reason));
        let is_owner = |i: usize| {
            layout
                .member(&self.ids[i])
                .is_some_and(|m| m.state == MemberState::Valid)
        };
        let is_spare = |i: usize| layout.member(&self.ids[i]).is_none() && !self.gone.contains(&i);
        let (changes, replaced, leaving) = match *fault {
            Fault::Join { node } => {
                if !is_spare(node) {
                    return skipped(format!("{} is not a spare", self.ids[node]));
                }
                let join = StagedChange::Join {
                    node: self.ids[node].clone(),
                    spec: join_spec(&self.ids[node], &self.places[node]),
                };
                (vec![join], None, None)
            }
            Fault::Leave { node } => {
                if !is_owner(node) {
                    return skipped(format!("{} is not an owner", self.ids[node]));
                }
                let owners = layout.owners().count();
                if owners <= NODES_MIN {
                    return skipped(format!(
                        "{owners} owners: a leave would leave fewer than {NODES_MIN}"
                    ));
                }
                let leave = StagedChange::Leave {
                    node: self.ids[node].clone(),
                    mode: LeaveMode::Graceful,
                };
                (vec![leave], None, Some(node))
            }
            Fault::Replace { node, with } => {
                if !is_owner(node) {
                    return skipped(format!("{} is not an owner", self.ids[node]));
                }
                let join = StagedChange::Join {
                    node: self.ids[with].clone(),
                    spec: join_spec(&self.ids[with], &self.places[with]),
                };
                let leave = StagedChange::Leave {
                    node: self.ids[node].clone(),
                    mode: LeaveMode::Force,
                };
                (vec![join, leave], Some(node), None)
            }
            _ => return skipped("not a membership change".into()),
        };
        if let Some(node) = replaced {
            // At most one holder of a partition is destroyed before the partition is rebuilt:
            // a write acknowledged with w = 2 may be on two replicas only (the third missed it,
            // repair has not caught up), so destroying a second one before the first one's
            // replacement has synced with every data holder can lose it whatever the layout
            // says (seed 739 of the first long run). That is two permanent disk losses, beyond
            // what the product promises against. The product's own checks come first: what
            // the layout refuses is counted as its refusal.
            //
            // A partition whose region lost a replica to a graceful leave that moved nothing
            // (`shrunk`) is never rebuilt in that region: its writes acknowledged there with
            // `local_quorum` while the region was cut off may be on the remaining holder of the
            // region alone. That holder is not destroyed until every data holder of the
            // partition has the same tree root (everything it holds is somewhere else too).
            let victim = &self.ids[node];
            let degraded = self
                .degraded
                .iter()
                .find(|p| layout.data_holders(**p).contains(victim))
                .map(|p| {
                    format!("partition {p}, which lost a holder for good and is not rebuilt yet")
                });
            let shrunk = || {
                self.shrunk
                    .iter()
                    .find(|p| {
                        layout.data_holders(**p).contains(victim)
                            && !self.holders_agree(&layout, **p)
                    })
                    .map(|p| {
                        format!(
                            "partition {p}, whose region lost a replica to a leave and whose \
                             data holders do not all agree yet"
                        )
                    })
            };
            if let Some(why) = degraded.or_else(shrunk) {
                return match self.layout.plan_change(&changes, |n| self.is_up(n)) {
                    Err(refusal @ Refusal::Layout(LayoutError::DataLoss { .. })) => {
                        Err(("replace-refused-data-loss", refusal.to_string()))
                    }
                    Err(refusal) => skipped(refusal.to_string()),
                    Ok(_) => skipped(format!("{victim} holds {why}")),
                };
            }
        }
        let plan = match self.layout.change(&changes, |n| self.is_up(n)) {
            Ok(plan) => plan,
            Err(refusal @ Refusal::Layout(LayoutError::DataLoss { .. })) => {
                return Err(("replace-refused-data-loss", refusal.to_string()))
            }
            Err(refusal) => return skipped(refusal.to_string()),
        };
        let mut note = format!(
            ": committed layout v{} epoch {} ({} partitions moving, {} replicas to copy)",
            plan.layout.version,
            plan.layout.epoch,
            plan.layout.transitions.len(),
            plan.transfers()
        );
        if let Some(node) = leaving {
            self.leaving.insert(node);
            // Partitions the node held that no transition keeps it a source of: its region's
            // replicas shrank (its region has fewer owners than replicas now), nothing moves,
            // and its copy goes when it is stopped.
            let after = self.layout.current();
            let leaver = &self.ids[node];
            let dropped: Vec<u16> = (0..layout.partitions)
                .map(|p| p as u16)
                .filter(|p| {
                    layout.data_holders(*p).contains(leaver)
                        && !after.data_holders(*p).contains(leaver)
                })
                .collect();
            if !dropped.is_empty() {
                note.push_str(&format!(
                    "; {} partition(s) lose their copy on {leaver} (its region's replicas shrink)",
                    dropped.len()
                ));
            }
            self.shrunk.extend(dropped);
        }
        if let Some(node) = replaced {
            // Crashed for good in the instant of the forced leave (no host runs in between):
            // never restarted, its disk never read again.
            let victim = &self.ids[node];
            self.degraded.extend(
                (0..layout.partitions)
                    .map(|p| p as u16)
                    .filter(|p| layout.data_holders(*p).contains(victim)),
            );
            let lost = self.power_cut(node);
            self.gone.insert(node);
            note.push_str(&format!(
                "; {} crashed for good ({lost} writes not yet durable lost)",
                self.ids[node]
            ));
        }
        Ok(note)
    }

    /// Whether every data holder of partition `p` in `layout` runs and has the same tree root
    /// for it (each holds what the others hold).
    fn holders_agree(&self, layout: &Layout, p: u16) -> bool {
        let mut roots = BTreeSet::new();
        for holder in layout.data_holders(p).iter() {
            let replica = self
                .slots
                .iter()
                .find(|s| &s.id == holder)
                .and_then(|s| s.replica.lock().clone());
            match replica.and_then(|r| r.tree_summary(p)) {
                Some(summary) => roots.insert(summary.root),
                None => return false,
            };
        }
        roots.len() <= 1
    }

    /// After each step: forgets the degraded partitions that are rebuilt (out of transition),
    /// and stops the nodes that left ([`Driver::stop_departed`]).
    fn after_step(&mut self) {
        if !self.degraded.is_empty() {
            let layout = self.layout.current();
            self.degraded.retain(|p| layout.transition(*p).is_some());
        }
        self.stop_departed();
    }

    /// Stops for good every gracefully leaving node that the layout has dropped (its last
    /// partition was received elsewhere): killed, as an operator stops and wipes a node that
    /// left; whatever it still held (hints it had not delivered) goes with it.
    fn stop_departed(&mut self) {
        if self.leaving.is_empty() {
            return;
        }
        let layout = self.layout.current();
        let departed: Vec<usize> = self
            .leaving
            .iter()
            .copied()
            .filter(|i| !layout.members.contains_key(&self.ids[*i]))
            .collect();
        for node in departed {
            let now = self.now_ms();
            let hints = self.slots[node]
                .replica
                .lock()
                .as_ref()
                .map_or(0, |r| r.hints_pending());
            let lost = self.power_cut(node);
            self.leaving.remove(&node);
            self.gone.insert(node);
            *self.counts.entry("leave-completed").or_default() += 1;
            self.recorder.note(
                now,
                Kind::Fault,
                format!(
                    "{} left the layout: stopped for good ({lost} writes not yet durable \
                     lost, {hints} hints pending lost with it)",
                    self.ids[node]
                ),
            );
        }
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
            fault if fault.is_membership() => {
                note = format!("start {fault}");
                match self.change_membership(fault) {
                    Ok(done) => note.push_str(&done),
                    Err((count, reason)) => {
                        *self.counts.entry(count).or_default() += 1;
                        note.push_str(&format!(": skipped, {reason}"));
                    }
                }
            }
            Fault::Crash { node } if self.gone.contains(node) => {
                *self.active.crashed.entry(*node).or_default() += 1;
                note.push_str(": gone for good");
            }
            Fault::Restart { node } if self.gone.contains(node) => {
                *self.active.restarting.entry(*node).or_default() += 1;
                note.push_str(": gone for good");
            }
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
            Fault::Partition { cut, .. } | Fault::RegionCut { cut, .. } => self.cut_links(cut),
            Fault::SlowWan { region, extra_ms } => {
                self.active
                    .slow_wan_ms
                    .entry(*region)
                    .or_default()
                    .push(*extra_ms);
                self.set_latency();
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
            Fault::Join { .. } | Fault::Leave { .. } | Fault::Replace { .. } => {}
        }
        self.recorder.note(now, Kind::Fault, note);
    }

    fn end(&mut self, f: &Scheduled) {
        if f.fault.is_membership() {
            // Instantaneous and permanent: nothing ends.
            return;
        }
        let now = self.now_ms();
        let mut note = format!("end {}", f.fault);
        match &f.fault {
            Fault::Crash { node } if self.gone.contains(node) => {
                let c = self.active.crashed.entry(*node).or_default();
                *c = c.saturating_sub(1);
                note.push_str(": gone for good, not restarted");
            }
            Fault::Restart { node } if self.gone.contains(node) => {
                let r = self.active.restarting.entry(*node).or_default();
                *r = r.saturating_sub(1);
                note.push_str(": gone for good, not restarted");
            }
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
            Fault::Partition { cut, .. } | Fault::RegionCut { cut, .. } => self.heal_links(cut),
            Fault::SlowWan { region, extra_ms } => {
                remove_one(
                    self.active.slow_wan_ms.entry(*region).or_default(),
                    extra_ms,
                );
                self.set_latency();
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
            Fault::Join { .. } | Fault::Leave { .. } | Fault::Replace { .. } => {}
        }
        self.recorder.note(now, Kind::Fault, note);
    }
}

/// One sample of the tree roots of every partition on each of its target replicas in `layout`
/// that runs. Returns the samples, whether the replicas agree (every member running, every
/// partition's sampled roots equal, no partition in transition), and the hints and
/// cross-region queue entries pending on the nodes not gone for good.
fn sample_digests(
    layout: &Layout,
    slots: &[Arc<NodeSlot>],
    gone: &BTreeSet<usize>,
    time_ms: u64,
) -> (Vec<DigestSample>, bool, u64) {
    let mut samples = Vec::new();
    let mut hints = 0;
    let mut roots: BTreeMap<u16, BTreeSet<u64>> = BTreeMap::new();
    let mut complete = true;
    for (i, slot) in slots.iter().enumerate() {
        if gone.contains(&i) {
            continue;
        }
        let Some(replica) = slot.replica.lock().clone() else {
            complete &= !layout.members.contains_key(&slot.id);
            continue;
        };
        // Writes still owed to another region count like hints: not settled yet.
        hints += replica.hints_pending() + replica.xr_pending();
        for p in 0..layout.partitions {
            let p = p as u16;
            if !layout.assignment.replicas(p).contains(&slot.id) {
                continue;
            }
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
    let agree = complete && layout.transitions.is_empty() && roots.values().all(|r| r.len() == 1);
    (samples, agree, hints)
}

fn node_id(i: usize) -> Result<NodeId, Error> {
    NodeId::new(faults::node_name(i)).map_err(|e| Error::Config(e.to_string()))
}

/// Reads the copy of every key on each of its replicas in `layout` (the final holders) straight
/// from its disk at `time_ms`, as that replica would answer for itself: the values of its
/// siblings not expired by its clock (a server-side cart's: the items of its siblings' joined
/// states, joined by `,`).
fn replica_reads(
    layout: &Layout,
    slots: &[Arc<NodeSlot>],
    keys: &Keys,
    time_ms: u64,
) -> Vec<FinalRead> {
    let mut reads = Vec::new();
    for key in keys.all() {
        let bucket = keys.bucket_of(key);
        let hash = key_hash(bucket, key.as_bytes());
        let partition = partition_of(hash, layout.partitions);
        let sk = storage_key(partition, bucket, key.as_bytes());
        for node in layout.assignment.replicas(partition) {
            let Some(slot) = slots.iter().find(|s| &s.id == node) else {
                continue;
            };
            let skew_ms = slot.skew_ms.load(std::sync::atomic::Ordering::Relaxed);
            let now = (BASE_UNIX_MS + time_ms).saturating_add_signed(skew_ms);
            let values = match slot.disk.get(Space::Data, &sk) {
                Ok(Some(record)) => match decode_record(&record) {
                    Ok(obj) => {
                        let values = obj.visible(now).filter_map(|s| s.version.value.as_deref());
                        match keys.is_dt(key) {
                            false => values
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .collect(),
                            true => cart_items(values),
                        }
                    }
                    Err(e) => vec![format!("<corrupt record: {e}>")],
                },
                Ok(None) => Vec::new(),
                Err(e) => vec![format!("<unreadable: {e}>")],
            };
            reads.push(FinalRead {
                key: key.clone(),
                node: node.to_string(),
                values,
                time_ms: Some(time_ms),
            });
        }
    }
    reads
}

/// A server-side cart's final value from its siblings' encoded states: their join's items
/// joined by `,` (none without a state), as `GET /v1/dt` would show them.
fn cart_items<'a>(states: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let states: Vec<&[u8]> = states.collect();
    if states.is_empty() {
        return Vec::new();
    }
    match datatypes::fold(Datatype::Cart, states) {
        Ok(state) => match state.value() {
            DtValue::Cart(items) => vec![items.into_keys().collect::<Vec<_>>().join(",")],
            other => vec![format!("<not a cart: {other:?}>")],
        },
        Err(e) => vec![format!("<undecodable cart: {e}>")],
    }
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
    /// Members at the start.
    nodes: usize,
    /// Spare nodes (hosts after the members).
    spares: usize,
    /// Client count.
    clients: usize,
    /// The keys the workload uses.
    keys: Keys,
    /// Every host's id, `n1` first: the members, then the spares.
    ids: Vec<NodeId>,
    /// The layout, shared by the driver and the nodes.
    layout: Arc<LayoutCell>,
    /// Where hosts, clients and the driver record the trace and the history.
    recorder: Recorder,
    /// The message loss and duplication layer shared by the nodes.
    chaos: Arc<NetChaos>,
    /// Every host's state that outlives its crashes (disk, running replica, skew).
    slots: Vec<Arc<NodeSlot>>,
    /// Every fault with its window, sorted by start and end.
    schedule: Vec<Scheduled>,
    /// How long the clients run, simulated ms (past the duration when a long split needs it).
    workload_ms: u64,
    /// The seed's regions, if it has some.
    regions: Option<Arc<Regions>>,
    /// Every host's region and zone.
    places: Vec<Place>,
    /// The workload's writes by quorum level and outcome.
    tally: Arc<WriteTally>,
    /// The expiry rule's skew bound for this seed ([`expiry_skew_bound_ms`]).
    skew_bound_ms: u64,
}

impl Setup {
    /// The first simulated ms at which every TTL'd value the workload wrote must have expired
    /// for any reader: the last write's completion (its read and its write each within the
    /// client's timeout of the workload's end), plus the longest TTL, plus the skew bound. The
    /// settle phase lasts until then, so the final state is judged for expiry.
    fn expired_by_ms(&self) -> u64 {
        self.workload_ms + 2 * CLIENT_TIMEOUT_MS + TTL_SECS_MAX * 1_000 + self.skew_bound_ms
    }

    /// How long the cluster may take to settle and converge.
    fn bounds(&self) -> Bounds {
        Bounds::of(self.regions.is_some())
    }

    /// Latest simulated ms the run may reach before it is declared stuck.
    fn limit_ms(&self) -> u64 {
        self.workload_ms + self.bounds().settle_max_ms + STUCK_AFTER_MS
    }
}

/// Draws the cluster of `seed` from `rng`: node and client counts, keys, node slots (and the
/// planted bug), the fault schedule. The draws come in a fixed order, since every later draw of
/// the seed (the simulation's own seed, the clients') follows from where this leaves `rng`. The
/// membership changes and the spares they need come from a generator of their own, and so do a
/// seed's regions (members per region, WAN latencies, region faults): a seed without regions
/// draws from `rng` exactly what it drew before regions existed.
fn draw_setup(options: &SimOptions, seed: u64, rng: &mut StdRng) -> Result<Setup, Error> {
    let region_count = options.regions_of(seed);
    let mut region_rng = StdRng::seed_from_u64(seed ^ REGIONS_SALT);
    let region_nodes = match region_count {
        0 => 0,
        _ => options
            .region_nodes
            .unwrap_or_else(|| region_rng.random_range(REGION_NODES_MIN..=REGION_NODES_MAX)),
    };
    let nodes = match region_count {
        0 => options
            .nodes
            .unwrap_or_else(|| rng.random_range(NODES_MIN..=NODES_MAX)),
        r => r * region_nodes,
    };
    // With regions, at least one client per region (client `i` is in region `i mod R`).
    let clients = options.clients.unwrap_or_else(|| match region_count {
        0 => rng.random_range(2..=6),
        r => rng.random_range(r..=2 * r),
    });
    // The server-side carts and TTL keys come from a generator of their own, so that a seed
    // draws from `rng` what it drew before they existed (its clients' operations differ).
    let mut keys_rng = StdRng::seed_from_u64(seed ^ KEYS_SALT);
    let keys = Keys::new(
        rng.random_range(2..=5),
        rng.random_range(1..=3),
        keys_rng.random_range(1..=3),
        keys_rng.random_range(1..=3),
    );
    let mut membership_rng = StdRng::seed_from_u64(seed ^ MEMBERSHIP_SALT);
    let (membership, spares) =
        faults::membership_changes(&mut membership_rng, nodes, options.duration_ms);
    let regions = (region_count > 0).then(|| {
        Arc::new(Regions::draw(
            &mut region_rng,
            region_count,
            region_nodes,
            &spare_regions(&membership),
        ))
    });
    let ids: Vec<NodeId> = (0..nodes + spares).map(node_id).collect::<Result<_, _>>()?;
    let places = places(ids.len(), regions.as_deref());
    let recorder = Recorder::new();
    let layout = LayoutCell::bootstrap(
        &ids[..nodes],
        &places[..nodes],
        regions.as_ref().map(|r| r.replication()),
        recorder.clone(),
    )?;
    // The server-side carts' bucket, typed before any node starts (an operator's
    // `PUT /v1/buckets/simdt {"datatype":"cart"}` before the bucket is used).
    let cart = BucketProps {
        datatype: Some(Datatype::Cart),
        ..BucketProps::default()
    };
    layout
        .set_bucket(DT_BUCKET, cart)
        .map_err(|e| Error::Config(format!("setting the data type of the cart bucket: {e}")))?;
    let chaos = Arc::new(NetChaos::new(rng.random()));
    let mut slots: Vec<Arc<NodeSlot>> = ids[..nodes]
        .iter()
        .map(|id| Arc::new(NodeSlot::new(id.clone(), rng.random())))
        .collect();
    slots.extend(
        ids[nodes..]
            .iter()
            .map(|id| Arc::new(NodeSlot::new(id.clone(), membership_rng.random()))),
    );
    if options.bug == Some(Bug::LoseAck) {
        slots[0].disk.set_lose_ack(LOSE_ACK_RATE, rng.random());
    }
    let (mut schedule, workload_ms) =
        draw_schedule(rng, seed, nodes, membership, ids.len(), options.duration_ms);
    if let Some(regions) = &regions {
        schedule.extend(faults::region_faults(
            &mut region_rng,
            regions,
            options.duration_ms,
        ));
        schedule.sort_by_key(|f| (f.start_ms, f.end_ms));
    }
    recorder.note(
        0,
        Kind::Node,
        format!(
            "seed {seed}: {nodes} nodes and {spares} spares, {clients} clients, keys {:?}, {} faults, bug {:?}",
            keys.all().collect::<Vec<_>>(),
            schedule.len(),
            options.bug
        ),
    );
    if let Some(regions) = &regions {
        let layout = layout.current();
        recorder.note(
            0,
            Kind::Node,
            format!(
                "{}; formed: layout v{} epoch {}, replication {:?}, {} partitions moving",
                regions.describe(),
                layout.version,
                layout.epoch,
                layout.replication,
                layout.transitions.len()
            ),
        );
    }
    let skew_bound_ms = expiry_skew_bound_ms(&schedule);
    Ok(Setup {
        nodes,
        spares,
        clients,
        keys,
        ids,
        layout,
        recorder,
        chaos,
        slots,
        schedule,
        workload_ms,
        regions,
        places,
        tally: Arc::new(WriteTally::default()),
        skew_bound_ms,
    })
}

/// The expiry rule's skew bound for a seed with `schedule` (`yeskv_check::Options::
/// skew_bound_ms`): how far apart two nodes' clocks can be — the largest skew ahead minus the
/// largest behind among its clock-skew faults, an unskewed clock counting as 0 (a node's clock
/// is always unskewed or skewed by one of them) — plus [`EXPIRY_MARGIN_MS`]. Exact where the
/// checker's default has to assume the worst of every seed, so a seed without skews judges the
/// reads of its workload too, and only seeds with skews settle longer.
pub fn expiry_skew_bound_ms(schedule: &[Scheduled]) -> u64 {
    let skews = schedule.iter().filter_map(|f| match f.fault {
        Fault::ClockSkew { skew_ms, .. } => Some(skew_ms),
        _ => None,
    });
    let (ahead, behind) = skews.fold((0_i64, 0_i64), |(ahead, behind), skew| {
        (ahead.max(skew), behind.min(skew))
    });
    ahead.abs_diff(behind) + EXPIRY_MARGIN_MS
}

/// Draws the fault schedule of `seed` and the workload time it needs. The usual faults come
/// from `rng`, over all `hosts` (members and spares); a long split, over the `nodes` first
/// members, comes from a generator of its own (faults module docs), so adding it does not shift
/// the other draws, and the workload goes on past its heal; `membership` (drawn apart too)
/// joins them.
fn draw_schedule(
    rng: &mut StdRng,
    seed: u64,
    nodes: usize,
    membership: Vec<Scheduled>,
    hosts: usize,
    duration_ms: u64,
) -> (Vec<Scheduled>, u64) {
    let mut schedule = faults::schedule(rng, hosts, duration_ms);
    schedule.extend(membership);
    schedule.sort_by_key(|f| (f.start_ms, f.end_ms));
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
/// one host per node (members and spares) running the product's node code and one client per
/// workload client.
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
            hosts: setup.ids.clone(),
            chaos: setup.chaos.clone(),
            recorder: setup.recorder.clone(),
            repair: options.repair,
            // The API's planted bugs are `n1`'s (the disk's is planted on its disk).
            bug: options.bug.filter(|_| i == 0),
        });
        sim.host(name.as_str(), move || node_main(env.clone()));
    }
    for index in 0..setup.clients {
        let env = ClientEnv {
            index,
            clients: setup.clients,
            region: setup
                .regions
                .as_ref()
                .map(|r| region_name(index % r.count())),
            tally: setup.tally.clone(),
            layout: setup.layout.clone(),
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

/// What the settle phase samples: the layout and the nodes gone for good.
struct Cluster<'a> {
    layout: &'a LayoutCell,
    gone: &'a BTreeSet<usize>,
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
    /// replicas come to agree (no partition in transition either) or differ again, and settles
    /// the cluster once it has had [`SETTLE_MIN_MS`] and either agrees or has had
    /// [`SETTLE_MAX_MS`].
    fn sample_if_due(&mut self, setup: &Setup, cluster: Cluster<'_>, now_ms: u64) {
        let Some(healed) = self.healed_at_ms else {
            return;
        };
        if now_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = now_ms + DIGEST_SAMPLE_MS;
        let layout = cluster.layout.current();
        let (samples, agree, hints) = sample_digests(&layout, &setup.slots, cluster.gone, now_ms);
        setup.recorder.digests(samples);
        match (agree && hints == 0, self.agreed_at_ms) {
            (true, None) => {
                self.agreed_at_ms = Some(now_ms);
                setup.recorder.note(
                    now_ms,
                    Kind::Node,
                    format!(
                        "replicas agree: equal tree roots, no hint pending, no partition moving \
                         (layout v{} epoch {}, {} ms after healing)",
                        layout.version,
                        layout.epoch,
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
            && now_ms >= setup.expired_by_ms()
            && (self.agreed_at_ms.is_some() || now_ms >= healed + setup.bounds().settle_max_ms)
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
        let cluster = Cluster {
            layout: &driver.layout,
            gone: &driver.gone,
        };
        settle.sample_if_due(setup, cluster, now);
        let finished = driver
            .counters
            .during(|| driver.sim.step())
            .map_err(|e| Error::Simulation(e.to_string()))?;
        steps += 1;
        driver.after_step();
        if finished {
            if final_started {
                break;
            }
            if settle.settled {
                final_started = true;
                let members = driver.layout.current().members.keys().cloned().collect();
                driver.sim.client(
                    "final",
                    final_reads_main(
                        members,
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

/// What the layout showed at the end of a run.
struct LayoutTotals {
    /// Partitions still in transition.
    transitions_left: usize,
    /// Version.
    version: u64,
    /// Epoch.
    epoch: u64,
}

/// What the disks showed at the end of a run.
struct DiskTotals {
    /// Writes lost to crashes before they were durable.
    lost_unsynced: u64,
    /// Writes acknowledged and dropped by the planted bug.
    lost_by_bug: u64,
    /// Range deletes of data: partitions cleared by receivers and former holders.
    data_range_deletes: u64,
}

/// Ends a run whose final reads are done: records each final holder's own copy of every key
/// (read from its disk) at the final time, sums the disks' counters, and drops the replicas and
/// then the simulation. Returns the final simulated ms, the layout's and the disks' totals, the
/// nodes' counters and the faults injected by kind.
fn read_final_state(
    mut driver: Driver<'_>,
    setup: &Setup,
) -> (
    u64,
    LayoutTotals,
    DiskTotals,
    ProductCounters,
    BTreeMap<&'static str, usize>,
) {
    let simulated_ms = driver.now_ms();
    let layout = setup.layout.current();
    for read in replica_reads(&layout, &setup.slots, &setup.keys, simulated_ms) {
        setup.recorder.final_read(simulated_ms, read);
    }
    let layout_totals = LayoutTotals {
        transitions_left: layout.transitions.len(),
        version: layout.version,
        epoch: layout.epoch,
    };
    let disks = DiskTotals {
        lost_unsynced: setup.slots.iter().map(|s| s.disk.lost_unsynced()).sum(),
        lost_by_bug: setup.slots.iter().map(|s| s.disk.lost_acked()).sum(),
        data_range_deletes: setup
            .slots
            .iter()
            .map(|s| s.disk.data_range_deletes())
            .sum(),
    };
    for slot in &setup.slots {
        *slot.replica.lock() = None;
    }
    let faults = std::mem::take(&mut driver.counts);
    let counters = std::mem::take(&mut driver.counters);
    drop(driver);
    (simulated_ms, layout_totals, disks, counters, faults)
}

/// Judges a recorded history with `yeskv-check`, enforcing convergence within
/// [`CONVERGENCE_BOUND_MS`] of healing unless the options turn it off, and expiry with the
/// seed's skew bound.
fn judge(history: &History, options: &SimOptions, setup: &Setup) -> Report {
    let check_options = Options {
        check_convergence: options.require_convergence,
        convergence_bound_ms: setup.bounds().convergence_ms,
        skew_bound_ms: setup.skew_bound_ms,
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
        counters: ProductCounters::default(),
        names,
        ids: setup.ids.clone(),
        slots: setup.slots.clone(),
        layout: setup.layout.clone(),
        chaos: setup.chaos.clone(),
        recorder: setup.recorder.clone(),
        active: Active::default(),
        counts: BTreeMap::new(),
        gone: BTreeSet::new(),
        leaving: BTreeSet::new(),
        degraded: BTreeSet::new(),
        shrunk: BTreeSet::new(),
        regions: setup.regions.clone(),
        places: setup.places.clone(),
    };
    if setup.regions.is_some() {
        // The WAN latencies between regions, in force from the first step.
        driver.set_latency();
    }
    let hints_left = drive(&mut driver, &setup, final_seed)?;
    let (simulated_ms, layout, disks, counters, faults) = read_final_state(driver, &setup);

    let (history, trace) = setup.recorder.take();
    let report = judge(&history, options, &setup);
    let hash = trace::hash(&trace);
    Ok(SeedOutcome {
        seed,
        regions: setup.regions.as_ref().map_or(0, |r| r.count()),
        nodes: setup.nodes,
        spares: setup.spares,
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
        reaped: counters.reaped(),
        cleared: disks.data_range_deletes,
        partitions_received: setup.layout.partitions_received(),
        partitions_reported: counters.partitions_reported(),
        transfer_keys: counters.transfer_keys(),
        hints_left,
        transitions_left: layout.transitions_left,
        layout_version: layout.version,
        layout_epoch: layout.epoch,
        writes_by_quorum: setup.tally.counts(),
    })
}
