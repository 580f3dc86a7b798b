//! The coordinator: turns one client request into replica operations and a quorum decision.
//!
//! Any node coordinates any key (Dynamo §4.5: no leader on the data path). The key's replicas
//! come from the [`Topology`](crate::topology::Topology) (the layout this node last applied),
//! never from a consensus round.
//!
//! - **Write** ([`write`]): if this node holds the key's data (a replica not still receiving
//!   the partition, or a former holder still serving it), it applies the write with its own
//!   actor ([`Replica::coordinate`](crate::replica::Replica::coordinate), durable locally),
//!   then sends the resulting object to the key's other replicas (`Merge`), and answers once `w`
//!   replicas — itself included — hold it durably. Replication to the rest continues in the
//!   background. Otherwise it forwards the write (`Coordinate`) to the first live data holder
//!   (a node still receiving clears the partition before its first copy: a dot of its actor
//!   minted over a copy that lost the actor's earlier dots would cover writes it never saw).
//!   Only a replica the request never reached (believed down, address
//!   unknown, no connection could be made — a refused connection is a definite "not sent" —
//!   or refused before applying) is skipped for the next one: after a transport failure
//!   the write may have been applied there, and applying it again elsewhere would mint a second,
//!   concurrent version of one client write, which a later write or delete carrying the context
//!   of a read of the first would not supersede (found by the simulator: a deleted value came
//!   back). Such a write answers `503` (indeterminate).
//! - **Sloppy quorum** (Dynamo §4.6): a primary that is down or fails is replaced, for that
//!   write, by the next live fallback of the partition, which keeps the copy as a hint for it
//!   (`MergeHint`; handed back by `handoff.rs`). If no fallback takes it, the primary is tried
//!   even though it is believed down: the failure detector may be wrong (a node that has just
//!   restarted has heard from nobody and believes everyone down). If no primary could be
//!   reached at all, this node stands in for the first one and coordinates the write itself. A
//!   write fails only when fewer than `w` nodes could take it.
//! - **Read** ([`read`]): asks `r` replicas of the key (itself first, directly; a down
//!   primary's stand-in for every hint it holds), and one more whenever one fails or all are
//!   slower than `read_hedge`; one read in `read_all_every` asks every replica at once. Merges
//!   the objects with DVV `sync` as they come and answers after `r` replies — asking and waiting
//!   for the primaries if an empty stand-in helped make the quorum — so the answer holds every
//!   sibling any of them had. Then **read repair**: the merged object goes to every primary that
//!   answered (before or after the client got its answer) with an older copy.
//! - **While a partition moves** (`yeskv_layout::transition`): a write goes to its replicas and
//!   to the former holders still serving it, and needs `w` among the replicas *and* `w` among
//!   the data holders ([`QuorumSets`](yeskv_core::QuorumSets)); a read asks and counts only the
//!   data holders, so a node still receiving the partition never answers for it. Outside a
//!   transition the three sets are the preference list and nothing changes.
//! - **Re-placement**: a member of the write set may refuse a copy because its layout, newer
//!   than the coordinator's, no longer has it in the write set (a transition ended and released
//!   it as a source), or it may have left the coordinator's own layout since the write was
//!   placed (no known address). When the quorum then fails, the coordinator waits — for its own layout to
//!   move on (`Topology::layout_changes`), bounded — places the key again and counts the *same*
//!   object under the new sets: copies acknowledged by data holders of the placement they were
//!   sent under still count if their node is in the new write set; every other member gets the
//!   object again. No second version is minted (`write.rs`, `Rounds`).
//! - **Regions** (a layout with replicas per region): `local_quorum` — the default there — counts
//!   only the replicas (and data holders) in the coordinator's region, a majority of them;
//!   `each_quorum` a majority in every region (writes; a read asks `quorum` of all). The
//!   coordinator's store of its own copy queues the write for every other region holding
//!   replicas of the key, in the same batch ([`crate::xr`] delivers it). A `local_quorum`
//!   write is then sent at once only within the region; with any other level it is also sent
//!   to every other region's replicas at once (their answers count), the queue still standing
//!   behind it. Forwarding tries data holders of the receiving node's
//!   region first, and a forwarded write carries its [`Scope`], not only a count. A stand-in
//!   is of the down primary's region; when that region has none, a node of another region
//!   keeps a hint for it, which does not count toward the quorum.
//! - **Quorums**: `r`/`w` are validated against `n` (`400` above it), then capped at the number
//!   of replicas a key has ("while the cluster has fewer nodes than n, each key has one replica
//!   per node"). Known-down replicas count as failures at once; the pure
//!   [`QuorumTracker`](yeskv_core::QuorumTracker) decides as soon as the outcome is certain.
//!
//! The replicas' side of each message is in [`crate::replication`].

mod expiry;
mod read;
mod salt;
mod supersede;
mod write;

pub use salt::{props_bucket, sub_key, DtRead, SALT_SUFFIX};

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use yeskv_core::datatypes::DtOp;
use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_core::{
    BucketProps, CausalContext, NodeId, Quorum, QuorumSets, QuorumTracker, ScopedQuorum,
};
use yeskv_storage::Engine;

use crate::context::NodeContext;
pub use crate::context::Settings;
use crate::error::Error;
use crate::hot::HotKeys;

/// See the module docs.
pub struct Coordinator<E: Engine> {
    ctx: NodeContext<E>,
    read_repairs: Arc<tokio::sync::Semaphore>,
    /// Reads coordinated (picks the ones that ask every replica).
    reads: Arc<AtomicU64>,
    /// The hottest keys and partitions of client requests.
    hot: Arc<HotKeys>,
}

impl<E: Engine> Clone for Coordinator<E> {
    fn clone(&self) -> Self {
        Coordinator {
            ctx: self.ctx.clone(),
            read_repairs: self.read_repairs.clone(),
            reads: self.reads.clone(),
            hot: self.hot.clone(),
        }
    }
}

/// A client write on its way to the replicas.
pub struct Write {
    /// What the client had seen.
    pub ctx: CausalContext,
    /// What it writes.
    pub body: WriteBody,
    /// TTL of the value, if the request set one (else the bucket's, if any).
    pub ttl_secs: Option<u64>,
}

/// What a client write writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WriteBody {
    /// A value (plain or last-writer-wins bucket).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A delete: a tombstone superseding what the context covers.
    Delete,
    /// An operation on a data-type key.
    Dt(DtOp),
    /// A value (`None`: a tombstone) that supersedes every sibling its coordinating replica
    /// holds of the key, whatever the client's context ([`supersede`]): the RESP listener's
    /// `SET`, `DEL`, `MSET` and the rewrites of `EXPIRE` and `PERSIST`.
    Supersede(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
}

/// What a coordinated write left.
#[derive(Clone, Debug)]
pub struct Written {
    /// The context the client holds afterwards.
    pub ctx: CausalContext,
    /// Siblings the key holds after the write, on its coordinator.
    pub siblings: usize,
}

/// Which replicas a request's quorum counts (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Every replica: `w` (or `r`) of them.
    All,
    /// A majority of the replicas in this region.
    Local(String),
    /// A majority of the replicas in every region that holds some.
    Each,
}

/// Where a key lives.
#[derive(Clone)]
struct Placement {
    partition: u16,
    hash: u64,
    storage_key: Arc<Vec<u8>>,
    /// Its replicas (the target of the layout), primary first.
    replicas: Arc<[NodeId]>,
    /// The nodes trusted to hold every acknowledged write: what reads ask and count.
    data: Arc<[NodeId]>,
    /// Every node a write goes to: `replicas`, then former holders still serving the key.
    writes: Arc<[NodeId]>,
    /// The epoch of the layout the three sets come from.
    epoch: u64,
    /// The bucket's properties.
    props: BucketProps,
}

impl Placement {
    /// Its sets, as the topology gave them.
    fn routes(&self) -> crate::topology::Routes {
        crate::topology::Routes {
            epoch: self.epoch,
            replicas: self.replicas.clone(),
            data: self.data.clone(),
            writes: self.writes.clone(),
        }
    }
}

impl<E: Engine> Coordinator<E> {
    /// A coordinator over the node's context.
    pub fn new(ctx: NodeContext<E>) -> Self {
        let read_repairs = Arc::new(tokio::sync::Semaphore::new(
            ctx.settings().read_repair_inflight_max,
        ));
        let hot = Arc::new(HotKeys::new(ctx.settings().partitions));
        Coordinator {
            ctx,
            read_repairs,
            reads: Arc::new(AtomicU64::new(0)),
            hot,
        }
    }

    /// The hot-key and partition counters of client requests.
    pub fn hot(&self) -> &HotKeys {
        &self.hot
    }

    /// Counts a client request on `p`.
    fn record_hot(&self, p: &Placement, bucket: &[u8], key: &[u8]) {
        self.hot.record(p.partition, p.hash, bucket, key);
    }

    /// The node's context.
    pub fn context(&self) -> &NodeContext<E> {
        &self.ctx
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        self.ctx.settings()
    }

    /// The local replica.
    pub fn replica(&self) -> &Arc<crate::replica::Replica<E>> {
        self.ctx.replica()
    }

    /// Now, by this node's clock.
    pub fn now_ms(&self) -> u64 {
        self.ctx.now_ms()
    }

    fn place(&self, bucket: &[u8], key: &[u8]) -> Placement {
        let hash = key_hash(bucket, key);
        let partition = partition_of(hash, self.settings().partitions);
        let routes = self.ctx.topology().routes(partition);
        Placement {
            partition,
            hash,
            storage_key: Arc::new(storage_key(partition, bucket, key)),
            replicas: routes.replicas,
            data: routes.data,
            writes: routes.writes,
            epoch: routes.epoch,
            props: self.bucket_props(bucket),
        }
    }

    /// The properties of `bucket` (from the last layout state this node applied); the
    /// sub-keys of a salted bucket follow it ([`props_bucket`]).
    pub fn bucket_props(&self, bucket: &[u8]) -> BucketProps {
        self.ctx.topology().bucket_props(props_bucket(bucket))
    }

    /// Resolves a requested quorum (or the default) against the key's replica count — `n`, or
    /// more with replicas per region (`quorum` is then a majority of all of them, `all` all
    /// of them) — then caps it at `replicas`. With more replicas than `n`, the default is
    /// `quorum` (the configured `r`/`w` were chosen against `n`; kept, a read and a write
    /// quorum need not overlap).
    fn quorum(
        &self,
        requested: Option<Quorum>,
        default: u8,
        p: &Placement,
        replicas: usize,
        what: &str,
    ) -> Result<u8, Error> {
        let n = self
            .settings()
            .n
            .max(p.replicas.len().min(usize::from(u8::MAX)) as u8);
        let q = match requested {
            Some(q) => q
                .resolve(n)
                .map_err(|e| Error::BadRequest(format!("{what} {e}")))?,
            None if n > self.settings().n => default.max(Quorum::Quorum.resolve(n).unwrap_or(n)),
            None => default,
        };
        Ok(q.min(replicas.min(usize::from(u8::MAX)) as u8).max(1))
    }

    fn is_local(&self, node: &NodeId) -> bool {
        self.ctx.is_local(node)
    }

    /// The region of `node` in a layout with replicas per region.
    fn region_of(&self, node: &NodeId) -> Option<Arc<str>> {
        self.ctx.topology().region_of(node)
    }

    /// The scope of a request asking `requested`: with replicas per region, `local_quorum`
    /// (also the default) counts this node's region — if it holds data holders of the key,
    /// else every replica — and `each_quorum` every region; anything else, and every request
    /// without regions, counts every replica.
    fn scope(&self, requested: Option<Quorum>, p: &Placement) -> Scope {
        let Some(region) = self.region_of(self.ctx.topology().local()) else {
            return Scope::All;
        };
        match requested {
            None | Some(Quorum::LocalQuorum) => {
                // Data holders, not only replicas: a region just added holds replicas that
                // are still receiving their partitions, and counts every replica meanwhile.
                match self.count_in(&p.data, &region) > 0 {
                    true => Scope::Local(region.to_string()),
                    false => Scope::All,
                }
            }
            Some(Quorum::EachQuorum) => Scope::Each,
            Some(_) => Scope::All,
        }
    }

    /// Whether `node` is in `region` (never without regions).
    fn is_in(&self, node: &NodeId, region: &str) -> bool {
        self.region_of(node).as_deref() == Some(region)
    }

    /// How many nodes of `set` are in `region`.
    fn count_in(&self, set: &[NodeId], region: &str) -> usize {
        set.iter().filter(|n| self.is_in(n, region)).count()
    }

    /// The regions of `nodes` other than `but`, each once (none without regions).
    fn regions_but(&self, nodes: &[NodeId], but: Option<&str>) -> Vec<Arc<str>> {
        let mut regions: Vec<Arc<str>> = nodes
            .iter()
            .filter_map(|n| self.region_of(n))
            .filter(|r| Some(&r[..]) != but)
            .collect();
        regions.sort();
        regions.dedup();
        regions
    }

    /// `p` with only the nodes of `region` in its replicas, data holders and write set.
    fn in_region(&self, p: Placement, region: &str) -> Placement {
        let keep = |set: &Arc<[NodeId]>| -> Arc<[NodeId]> {
            set.iter()
                .filter(|n| self.is_in(n, region))
                .cloned()
                .collect()
        };
        Placement {
            replicas: keep(&p.replicas),
            data: keep(&p.data),
            writes: keep(&p.writes),
            ..p
        }
    }

    /// The quorum of a write of `p` in `scope`, `required` being the resolved `w` of
    /// [`Scope::All`]: one set over every replica, or a majority set per region counted.
    fn write_quorum(&self, p: &Placement, scope: &Scope, required: u8) -> WriteQuorum {
        let regional = |region: &str| {
            let replicas = self.count_in(&p.replicas, region);
            let majority = (replicas / 2 + 1).min(usize::from(u8::MAX)) as u8;
            (
                Some(Arc::from(region)),
                QuorumSets::new(majority, replicas, self.count_in(&p.data, region)),
            )
        };
        let sets = match scope {
            Scope::All => vec![(
                None,
                QuorumSets::new(required, p.replicas.len(), p.data.len()),
            )],
            Scope::Local(region) => vec![regional(region)],
            Scope::Each => {
                // Every region with a data holder of the key (a region still receiving its
                // first copies has none yet).
                let mut regions: Vec<Arc<str>> =
                    p.data.iter().filter_map(|n| self.region_of(n)).collect();
                regions.sort();
                regions.dedup();
                regions.iter().map(|r| regional(r)).collect()
            }
        };
        ScopedQuorum::new(sets)
    }
}

/// A write's quorum: sets scoped by region (see [`Coordinator::write_quorum`]).
type WriteQuorum = ScopedQuorum<Arc<str>>;

fn quorum_error(t: &QuorumTracker) -> Error {
    Error::Quorum {
        required: t.required(),
        succeeded: t.succeeded(),
        errors: t.errors().join("; "),
    }
}

/// The error of a write quorum that was not reached.
fn write_quorum_error(q: &WriteQuorum) -> Error {
    match q.deciding() {
        Some(t) => quorum_error(t),
        None => Error::Quorum {
            required: 1,
            succeeded: 0,
            errors: "no replica to count".into(),
        },
    }
}
