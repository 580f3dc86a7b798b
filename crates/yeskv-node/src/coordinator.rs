//! The coordinator: turns one client request into replica operations and a quorum decision.
//!
//! Any node coordinates any key (Dynamo §4.5: no leader on the data path). The key's replicas
//! come from the [`Topology`] (the layout this node last applied), never from a consensus round.
//!
//! - **Write**: if this node is a replica of the key, it applies the write with its own actor
//!   ([`Replica::coordinate`], durable locally), then sends the resulting object to the key's
//!   other replicas (`Merge`), and answers once `w` replicas — itself included — hold it durably.
//!   Replication to the rest continues in the background. If this node is not a replica, it
//!   forwards the write (`Coordinate`) to the first live replica. Only a replica the request
//!   never reached (believed down, address unknown) is skipped for the next one: after a
//!   transport failure the write may have been applied there, and applying it again elsewhere
//!   would mint a second, concurrent version of one client write, which a later write or delete
//!   carrying the context of a read of the first would not supersede (found by the simulator:
//!   a deleted value came back). Such a write answers `503` (indeterminate).
//! - **Sloppy quorum** (Dynamo §4.6): a primary that is down or fails is replaced, for that
//!   write, by the next live fallback of the partition, which keeps the copy as a hint for it
//!   (`MergeHint`; handed back by `handoff.rs`). If no fallback takes it, the primary is tried
//!   even though it is believed down: the failure detector may be wrong (a node that has just
//!   restarted has heard from nobody and believes everyone down). If no primary could be
//!   reached at all, this node stands in for the first one and coordinates the write itself. A
//!   write fails only when fewer than `w` nodes could take it.
//! - **Read**: asks `r` replicas of the key (itself first, directly; a down primary's stand-in
//!   for every hint it holds), and one more whenever one fails or all are slower than
//!   `read_hedge`; one read in `read_all_every` asks every replica at once. Merges the objects
//!   with DVV `sync` as they come and answers after `r` replies — asking and waiting for the
//!   primaries if an empty stand-in helped make the quorum — so the answer holds every sibling
//!   any of them had. Then **read repair**: the merged object goes to every primary that
//!   answered (before or after the client got its answer) with an older copy.
//! - **Quorums**: `r`/`w` are validated against `n` (`400` above it), then capped at the number
//!   of replicas a key has ("while the cluster has fewer nodes than n, each key has one replica
//!   per node"). Known-down replicas count as failures at once; the pure
//!   [`QuorumTracker`] decides as soon as the outcome is certain.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use yeskv_core::codec::{decode_record, decode_token, encode_record, encode_token};
use yeskv_core::keyspace::{key_hash, key_tag, partition_of, split_storage_key, storage_key};
use yeskv_core::{CausalContext, NodeId, Object, Outcome, Quorum, QuorumTracker, Version};
use yeskv_storage::Engine;

use crate::clock::Clock;
use crate::error::Error;
use crate::peer::{PeerClient, PeerRequest, PeerResponse, RemoteError};
use crate::replica::{Replica, Slot};
use crate::topology::Topology;

/// Settings the coordinator applies to every request.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Replicas per key.
    pub n: u8,
    /// Default read quorum.
    pub r: u8,
    /// Default write quorum.
    pub w: u8,
    /// Partition count of the ring.
    pub partitions: u32,
    /// Most siblings a client write may leave.
    pub siblings_max: usize,
    /// TTL for writes without one (0 = none).
    pub default_ttl_secs: u64,
    /// Deadline of one internode call.
    pub rpc_timeout: Duration,
    /// Most read repairs in flight at once; past it a repair is skipped (and counted).
    pub read_repair_inflight_max: usize,
    /// One read in this many asks every replica of the key (and so repairs all of them); the
    /// others ask `r` replicas first. 1: every read asks every replica (Riak's way).
    pub read_all_every: u32,
    /// How long a read waits for its first replicas before asking one more.
    pub read_hedge: Duration,
}

/// See the module docs.
pub struct Coordinator<E: Engine> {
    replica: Arc<Replica<E>>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    topology: Arc<dyn Topology>,
    peers: Arc<dyn PeerClient>,
    read_repairs: Arc<tokio::sync::Semaphore>,
    /// Reads coordinated (picks the ones that ask every replica).
    reads: Arc<AtomicU64>,
}

impl<E: Engine> Clone for Coordinator<E> {
    fn clone(&self) -> Self {
        Coordinator {
            replica: self.replica.clone(),
            clock: self.clock.clone(),
            settings: self.settings.clone(),
            topology: self.topology.clone(),
            peers: self.peers.clone(),
            read_repairs: self.read_repairs.clone(),
            reads: self.reads.clone(),
        }
    }
}

/// A client write on its way to the replicas.
struct Write {
    /// What the client had seen.
    ctx: CausalContext,
    /// The value; `None` for a delete.
    value: Option<Vec<u8>>,
    /// TTL of the value, if the request set one.
    ttl_secs: Option<u64>,
}

/// Where a key lives.
struct Placement {
    partition: u16,
    hash: u64,
    storage_key: Arc<Vec<u8>>,
    replicas: Arc<[NodeId]>,
}

/// Who holds one replica slot of a key for a read or a write.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Holder {
    /// The primary itself.
    Primary(NodeId),
    /// `node` stands in for the primary `for_primary` (sloppy quorum): the object is a hint.
    StandIn {
        /// The fallback node.
        node: NodeId,
        /// The primary it stands in for.
        for_primary: NodeId,
    },
}

/// Whether a request to a node waits for the failure detector to say it is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    /// Only if it is up (a node believed down is skipped at once).
    IfUp,
    /// Whatever the failure detector says: the last resort before failing a quorum.
    Anyway,
}

impl Holder {
    fn node(&self) -> &NodeId {
        match self {
            Holder::Primary(n) | Holder::StandIn { node: n, .. } => n,
        }
    }
}

impl<E: Engine> Coordinator<E> {
    /// A coordinator over the local replica, reaching others through `peers`.
    pub fn new(
        replica: Arc<Replica<E>>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        topology: Arc<dyn Topology>,
        peers: Arc<dyn PeerClient>,
    ) -> Self {
        let read_repairs = Arc::new(tokio::sync::Semaphore::new(
            settings.read_repair_inflight_max,
        ));
        Coordinator {
            replica,
            clock,
            settings,
            topology,
            peers,
            read_repairs,
            reads: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The local replica.
    pub fn replica(&self) -> &Arc<Replica<E>> {
        &self.replica
    }

    /// The topology.
    pub fn topology(&self) -> &Arc<dyn Topology> {
        &self.topology
    }

    /// The internode client.
    pub fn peers(&self) -> &Arc<dyn PeerClient> {
        &self.peers
    }

    /// The clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn place(&self, bucket: &[u8], key: &[u8]) -> Placement {
        let hash = key_hash(bucket, key);
        let partition = partition_of(hash, self.settings.partitions);
        Placement {
            partition,
            hash,
            storage_key: Arc::new(storage_key(partition, bucket, key)),
            replicas: self.topology.preference(partition),
        }
    }

    /// Resolves a requested quorum (or the default) against `n`, then caps it at `replicas`.
    fn quorum(
        &self,
        requested: Option<Quorum>,
        default: u8,
        replicas: usize,
        what: &str,
    ) -> Result<u8, Error> {
        let q = match requested {
            Some(q) => q
                .resolve(self.settings.n)
                .map_err(|e| Error::BadRequest(format!("{what} {e}")))?,
            None => default,
        };
        Ok(q.min(replicas.min(usize::from(u8::MAX)) as u8).max(1))
    }

    fn is_local(&self, node: &NodeId) -> bool {
        node == self.topology.local()
    }

    /// The live fallbacks of a partition, this node excluded, in the order to try them.
    fn live_fallbacks(&self, partition: u16) -> VecDeque<NodeId> {
        self.topology
            .fallbacks(partition)
            .iter()
            .filter(|n| !self.is_local(n) && self.topology.is_up(n))
            .cloned()
            .collect()
    }

    /// Who to ask for each replica slot of a read: the primary when the failure detector says
    /// it is up, else the next live fallback (this node included), which answers with every hint
    /// it holds for the key, whichever primary it stood in for; and, apart, the down primaries
    /// no fallback stands in for (tried only as a last resort: the failure detector may be
    /// wrong — a node that just started has heard from nobody).
    fn read_holders(&self, p: &Placement) -> (Vec<Holder>, Vec<Holder>) {
        let mut fallbacks: Option<VecDeque<NodeId>> = None;
        let mut last_resort = Vec::new();
        let holders = p
            .replicas
            .iter()
            .filter_map(|primary| {
                if self.topology.is_up(primary) {
                    return Some(Holder::Primary(primary.clone()));
                }
                let f = fallbacks
                    .get_or_insert_with(|| {
                        self.topology
                            .fallbacks(p.partition)
                            .iter()
                            .filter(|n| self.topology.is_up(n))
                            .cloned()
                            .collect()
                    })
                    .pop_front();
                match f {
                    Some(node) => Some(Holder::StandIn {
                        node,
                        for_primary: primary.clone(),
                    }),
                    None => {
                        last_resort.push(Holder::Primary(primary.clone()));
                        None
                    }
                }
            })
            .collect();
        (holders, last_resort)
    }

    /// The merge of every hint this node holds for the key: for any of `primaries`, and for
    /// any other node it holds hints for (a former owner of the partition, say), so that a
    /// reader or the reaper asking "what hints of this key are there" is told of all of them.
    fn local_hints(&self, primaries: &[NodeId], storage_key: &[u8]) -> Result<Object, Error> {
        let mut targets: Vec<NodeId> = primaries.to_vec();
        for held in self.replica.hint_counts().into_keys() {
            if !targets.contains(&held) {
                targets.push(held);
            }
        }
        let mut merged = Object::new();
        for target in targets.iter().filter(|n| !self.is_local(n)) {
            merged.sync(&self.replica.read_hint(target, storage_key)?);
        }
        Ok(merged)
    }

    /// Reads one holder's object: locally, or by RPC. A stand-in answers with every hint it
    /// holds for the key (for any of `primaries`).
    async fn read_holder(
        self,
        holder: Holder,
        storage_key: Arc<Vec<u8>>,
        primaries: Arc<[NodeId]>,
        liveness: Liveness,
    ) -> (Holder, Result<Object, Error>) {
        let node = holder.node();
        let result = if self.is_local(node) {
            match &holder {
                Holder::Primary(_) => self.replica.read(&storage_key),
                Holder::StandIn { .. } => self.local_hints(&primaries, &storage_key),
            }
        } else {
            let req = match &holder {
                Holder::Primary(_) => PeerRequest::Read {
                    storage_key: storage_key.to_vec(),
                },
                Holder::StandIn { .. } => PeerRequest::ReadHints {
                    targets: primaries.iter().map(|n| n.as_str().to_string()).collect(),
                    storage_key: storage_key.to_vec(),
                },
            };
            match self
                .call_as(node, req, self.settings.rpc_timeout, liveness)
                .await
            {
                Ok(PeerResponse::Object(None)) => Ok(Object::new()),
                Ok(PeerResponse::Object(Some(rec))) => decode_record(&rec)
                    .map_err(|e| Error::Corrupt(format!("object from {node}: {e}"))),
                Ok(PeerResponse::Failed(e)) => Err(e.into()),
                Ok(other) => Err(Error::Storage(format!("unexpected answer {other:?}"))),
                Err(e) => Err(e),
            }
        };
        (holder, result)
    }

    /// Sends `request` to `node` if its address is known, and — unless `liveness` says to try
    /// anyway — if the failure detector says it is up.
    async fn call_as(
        &self,
        node: &NodeId,
        request: PeerRequest,
        timeout: Duration,
        liveness: Liveness,
    ) -> Result<PeerResponse, Error> {
        if liveness == Liveness::IfUp && !self.topology.is_up(node) {
            return Err(Error::Storage("down".into()));
        }
        let addr = self
            .topology
            .peer_addr(node)
            .ok_or_else(|| Error::Storage("address unknown".into()))?;
        self.peers
            .call(&addr, request, timeout)
            .await
            .map_err(Error::Storage)
    }

    /// Reads a key: the merged object of the first `r` replicas to answer (empty if none has it).
    /// Down primaries are read through their stand-ins. One read in `read_all_every` asks every
    /// replica at once; the others ask `r` of them — this node's own copy first, it costs no
    /// round trip — and another only when one fails or has not answered after `read_hedge`.
    /// The replies that come after the answer feed read repair (see
    /// [`Coordinator::read_repair`]).
    pub async fn get(&self, bucket: &[u8], key: &[u8], r: Option<Quorum>) -> Result<Object, Error> {
        let p = self.place(bucket, key);
        let required = self.quorum(r, self.settings.r, p.replicas.len(), "r")?;
        let (holders, last_resort) = self.read_holders(&p);
        let mut queue: VecDeque<(Holder, Liveness)> =
            holders.into_iter().map(|h| (h, Liveness::IfUp)).collect();
        if let Some(i) = queue.iter().position(|(h, _)| self.is_local(h.node())) {
            if let Some(local) = queue.remove(i) {
                queue.push_front(local);
            }
        }
        let every = u64::from(self.settings.read_all_every.max(1));
        let ask_all = every == 1
            || self
                .reads
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every);
        let first = if ask_all {
            queue.len()
        } else {
            usize::from(required).min(queue.len())
        };
        // Behind everything else, the primaries believed down that nobody stands in for.
        queue.extend(last_resort.into_iter().map(|h| (h, Liveness::Anyway)));
        let first = first.max(usize::from(required).min(queue.len()));
        // Asks one holder; counts the primaries asked and not yet answered.
        let launch = |(h, liveness): (Holder, Liveness), primaries_pending: &mut usize| {
            *primaries_pending += usize::from(matches!(h, Holder::Primary(_)));
            self.clone()
                .read_holder(h, p.storage_key.clone(), p.replicas.clone(), liveness)
        };
        let mut tracker = QuorumTracker::new(required, p.replicas.len() as u8);
        let mut merged = Object::new();
        // A stand-in that holds nothing for the key knows nothing about it: once the quorum is
        // reached with such a reply, wait for the primaries (a primary that holds the value
        // must not be outvoted by fallbacks that never saw it).
        let mut primaries_pending = 0usize;
        let mut pending = FuturesUnordered::new();
        for h in queue.drain(..first) {
            pending.push(launch(h, &mut primaries_pending));
        }
        let mut replies = Vec::with_capacity(p.replicas.len());
        let mut corrupt = None;
        let mut empty_stand_ins = 0usize;
        let mut reached = false;
        let hedge = tokio::time::sleep(self.settings.read_hedge);
        tokio::pin!(hedge);
        loop {
            let next = tokio::select! {
                biased;
                next = pending.next() => next,
                _ = &mut hedge, if !queue.is_empty() && !reached => {
                    // Slow replies: ask one more replica, and again after another `read_hedge`.
                    if let Some(h) = queue.pop_front() {
                        pending.push(launch(h, &mut primaries_pending));
                    }
                    let at = tokio::time::Instant::now() + self.settings.read_hedge;
                    hedge.as_mut().reset(at);
                    continue;
                }
            };
            let Some((holder, result)) = next else { break };
            if matches!(holder, Holder::Primary(_)) {
                primaries_pending = primaries_pending.saturating_sub(1);
            }
            let outcome = match result {
                Ok(obj) => {
                    if obj.is_empty() && !matches!(holder, Holder::Primary(_)) {
                        empty_stand_ins += 1;
                    }
                    merged.sync(&obj);
                    replies.push((holder, obj));
                    tracker.success()
                }
                Err(e) => {
                    if matches!(e, Error::Corrupt(_)) {
                        corrupt = Some(e.to_string());
                    }
                    // Another replica takes the failed one's place.
                    if let Some(h) = queue.pop_front() {
                        pending.push(launch(h, &mut primaries_pending));
                    }
                    tracker.failure(format!("{}: {e}", holder.node()))
                }
            };
            match outcome {
                Outcome::Reached => {
                    reached = true;
                    if empty_stand_ins > 0 {
                        // Ask the primaries not asked yet, and wait for all of them.
                        while let Some(i) = queue.iter().position(|(h, l)| {
                            matches!(h, Holder::Primary(_)) && *l == Liveness::IfUp
                        }) {
                            if let Some(h) = queue.remove(i) {
                                pending.push(launch(h, &mut primaries_pending));
                            }
                        }
                        if primaries_pending > 0 {
                            continue;
                        }
                    }
                    break;
                }
                Outcome::Impossible if !reached => {
                    // A lone replica that is corrupt is reported as such, not as a quorum miss.
                    if let (Some(c), 1) = (corrupt, required) {
                        return Err(Error::Corrupt(c));
                    }
                    return Err(quorum_error(&tracker));
                }
                _ => {}
            }
        }
        if reached {
            self.read_repair(
                p.hash,
                p.storage_key.clone(),
                pending,
                replies,
                merged.clone(),
            );
            return Ok(merged);
        }
        Err(quorum_error(&tracker))
    }

    /// Read repair (Dynamo §4.7): after the client has its answer, waits (one RPC deadline at
    /// most) for the replicas that had not answered, merges everything, and sends the merged
    /// object to every primary whose copy was older or missing. Bounded: past
    /// `read_repair_inflight_max` repairs in flight, a repair is skipped and counted.
    fn read_repair<F>(
        &self,
        key_hash: u64,
        storage_key: Arc<Vec<u8>>,
        mut pending: FuturesUnordered<F>,
        mut replies: Vec<(Holder, Object)>,
        mut merged: Object,
    ) where
        F: std::future::Future<Output = (Holder, Result<Object, Error>)> + Send + 'static,
    {
        if pending.is_empty()
            && replies
                .iter()
                .all(|(h, o)| *o == merged || !matches!(h, Holder::Primary(_)))
        {
            return;
        }
        let Ok(permit) = self.read_repairs.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::READ_REPAIRS_SKIPPED).increment(1);
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = tokio::time::sleep(this.settings.rpc_timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    biased;
                    next = pending.next() => match next {
                        Some((holder, Ok(obj))) => {
                            merged.sync(&obj);
                            replies.push((holder, obj));
                        }
                        Some((_, Err(_))) => {}
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
            for (holder, obj) in replies {
                // Only primaries are repaired: a stand-in that lacks the key would turn every
                // read during an outage into a new hint.
                if obj == merged || !matches!(holder, Holder::Primary(_)) {
                    continue;
                }
                let result = this
                    .merge_into(&holder, key_hash, &storage_key, &merged)
                    .await;
                match result {
                    Ok(()) => metrics::counter!(crate::metrics::READ_REPAIRS).increment(1),
                    Err(e) => {
                        tracing::debug!(node = %holder.node(), error = %e, "read repair failed")
                    }
                }
            }
        });
    }

    /// Sends `obj` to be merged into `holder`'s copy (its own replica, or its hint).
    async fn merge_into(
        &self,
        holder: &Holder,
        key_hash: u64,
        storage_key: &[u8],
        obj: &Object,
    ) -> Result<(), Error> {
        let node = holder.node();
        if self.is_local(node) {
            let slot = match holder {
                Holder::Primary(_) => Slot::Own,
                Holder::StandIn { for_primary, .. } => Slot::HintFor(for_primary),
            };
            let now = self.clock.now_ms();
            self.replica
                .merge(slot, key_hash, storage_key, obj, now)
                .await?;
            return Ok(());
        }
        let record = encode_record(obj, None);
        self.send_merge(holder, key_hash, storage_key, &record, Liveness::IfUp)
            .await
    }

    /// Sends a record to `holder` to merge, over RPC.
    async fn send_merge(
        &self,
        holder: &Holder,
        key_hash: u64,
        storage_key: &[u8],
        record: &[u8],
        liveness: Liveness,
    ) -> Result<(), Error> {
        let req = match holder {
            Holder::Primary(_) => PeerRequest::Merge {
                key_hash,
                storage_key: storage_key.to_vec(),
                record: record.to_vec(),
            },
            Holder::StandIn { for_primary, .. } => PeerRequest::MergeHint {
                target: for_primary.as_str().to_string(),
                key_hash,
                storage_key: storage_key.to_vec(),
                record: record.to_vec(),
            },
        };
        match self
            .call_as(holder.node(), req, self.settings.rpc_timeout, liveness)
            .await?
        {
            PeerResponse::Merged => Ok(()),
            PeerResponse::Failed(e) => Err(e.into()),
            other => Err(Error::Storage(format!("unexpected answer {other:?}"))),
        }
    }

    /// Hands a hint to its target (hinted handoff): the target merges it into its own replica
    /// and answers once durable.
    pub async fn hand_off(
        &self,
        target: &NodeId,
        hint: &crate::replica::Hint,
    ) -> Result<(), Error> {
        let record = encode_record(&hint.object, None);
        self.send_merge(
            &Holder::Primary(target.clone()),
            hint.key_hash,
            &hint.storage_key,
            &record,
            Liveness::IfUp,
        )
        .await
    }

    /// Delivers a hint whose target left the layout to the key's current primaries (this node
    /// merges its own copy if it is one); fails unless every one of them took it durably.
    pub async fn rehome(&self, hint: &crate::replica::Hint) -> Result<(), Error> {
        let partition = split_storage_key(&hint.storage_key)
            .map(|(p, _, _)| p)
            .ok_or_else(|| Error::Storage("malformed storage key in a hint".into()))?;
        let primaries = self.topology.preference(partition);
        if primaries.is_empty() {
            return Err(Error::Storage("no layout: the key has no primaries".into()));
        }
        for node in primaries.iter() {
            let holder = Holder::Primary(node.clone());
            self.merge_into(&holder, hint.key_hash, &hint.storage_key, &hint.object)
                .await?;
        }
        Ok(())
    }

    /// Writes a value (or, with `value = None`, a tombstone) superseding what `ctx` covers.
    /// Returns the context the client holds afterwards: `ctx` plus the new write's dot.
    pub async fn put(
        &self,
        bucket: &[u8],
        key: &[u8],
        ctx: CausalContext,
        value: Option<Vec<u8>>,
        ttl_secs: Option<u64>,
        w: Option<Quorum>,
    ) -> Result<CausalContext, Error> {
        let p = self.place(bucket, key);
        let required = self.quorum(w, self.settings.w, p.replicas.len(), "w")?;
        let write = Write {
            ctx,
            value,
            ttl_secs,
        };
        if p.replicas.iter().any(|n| self.is_local(n)) {
            return match self.coordinate_local(&p, &write, required, None).await {
                // This node's storage refused the write before applying it (a full disk): the
                // key's other primaries can still make `w`, so one of them coordinates it.
                Err(Error::Storage(local)) => {
                    tracing::debug!(error = %local, "own storage refused a write; forwarding it");
                    metrics::counter!(crate::metrics::WRITES_FORWARDED_STORAGE).increment(1);
                    match self.forward(bucket, key, &p, &write, required).await {
                        Ok(ctx) => Ok(ctx),
                        Err(Forward::Unreachable(errors)) => {
                            Err(Error::Storage(format!("{local}; {errors}")))
                        }
                        Err(Forward::Refused(e)) => Err(e),
                    }
                }
                other => other,
            };
        }
        match self.forward(bucket, key, &p, &write, required).await {
            Ok(ctx) => Ok(ctx),
            // No primary could coordinate (all down, or none answered): this node stands in
            // for the first primary and coordinates the write itself (sloppy quorum), so the
            // write fails only when fewer than `w` nodes of the whole cluster can take it.
            Err(Forward::Unreachable(errors)) => match p.replicas.first() {
                Some(first) => {
                    tracing::debug!(%errors, "no primary reachable; coordinating as a stand-in");
                    metrics::counter!(crate::metrics::SLOPPY_WRITES, "reason" => "coordinator")
                        .increment(1);
                    let first = first.clone();
                    self.coordinate_local(&p, &write, required, Some(first))
                        .await
                }
                None => Err(Error::Quorum {
                    required,
                    succeeded: 0,
                    errors: "no layout: the key has no replicas".into(),
                }),
            },
            Err(Forward::Refused(e)) => Err(e),
        }
    }

    /// Applies a write here — as one of the key's primaries, or as a stand-in for
    /// `stand_in_for` — and replicates it to the other primaries, each replaced by a fallback
    /// when it is down or fails (see the module docs).
    async fn coordinate_local(
        &self,
        p: &Placement,
        write: &Write,
        required: u8,
        stand_in_for: Option<NodeId>,
    ) -> Result<CausalContext, Error> {
        let Write {
            ctx,
            value,
            ttl_secs,
        } = write;
        let now = self.clock.now_ms();
        let version = match value {
            None => Version::tombstone(now),
            Some(v) => {
                let ttl = ttl_secs.or(match self.settings.default_ttl_secs {
                    0 => None,
                    t => Some(t),
                });
                Version::value(
                    v.clone(),
                    now,
                    ttl.map(|t| now.saturating_add(t.saturating_mul(1000))),
                )
            }
        };
        let slot = match &stand_in_for {
            None => Slot::Own,
            Some(t) => Slot::HintFor(t),
        };
        let (obj, dot) = self
            .replica
            .coordinate(
                slot,
                p.hash,
                &p.storage_key,
                ctx,
                version,
                now,
                self.settings.siblings_max,
            )
            .await?;
        let after = ctx.clone().with_dot(dot);
        let mut tracker = QuorumTracker::new(required, p.replicas.len() as u8);
        if tracker.success() == Outcome::Reached && p.replicas.len() == 1 {
            return Ok(after);
        }
        // Replicate to every other primary slot; each runs to completion in its own task so
        // replicas beyond the quorum still receive the write after the client is answered.
        let record: Arc<[u8]> = Arc::from(encode_record(&obj, None));
        let fallbacks = Arc::new(Mutex::new(self.live_fallbacks(p.partition)));
        let (tx, mut rx) = tokio::sync::mpsc::channel(p.replicas.len());
        for primary in p
            .replicas
            .iter()
            .filter(|n| !self.is_local(n) && Some(*n) != stand_in_for.as_ref())
        {
            let tx = tx.clone();
            let this = self.clone();
            let primary = primary.clone();
            let fallbacks = fallbacks.clone();
            let record = record.clone();
            let storage_key = p.storage_key.clone();
            let hash = p.hash;
            tokio::spawn(async move {
                let result = this
                    .replicate_slot(primary, hash, storage_key, record, fallbacks)
                    .await;
                let _ = tx.send(result).await;
            });
        }
        drop(tx);
        if tracker.outcome() == Outcome::Reached {
            return Ok(after);
        }
        while let Some(result) = rx.recv().await {
            let outcome = match result {
                Ok(()) => tracker.success(),
                Err(e) => tracker.failure(e),
            };
            match outcome {
                Outcome::Reached => return Ok(after),
                Outcome::Impossible => return Err(quorum_error(&tracker)),
                Outcome::Pending => {}
            }
        }
        Err(quorum_error(&tracker))
    }

    /// Puts one primary slot's copy of a write: on the primary if it is up and takes it, else
    /// on the next fallback that takes it as a hint for that primary.
    async fn replicate_slot(
        self,
        primary: NodeId,
        key_hash: u64,
        storage_key: Arc<Vec<u8>>,
        record: Arc<[u8]>,
        fallbacks: Arc<Mutex<VecDeque<NodeId>>>,
    ) -> Result<(), String> {
        let mut errors = Vec::new();
        let believed_up = self.topology.is_up(&primary);
        let reason = if believed_up {
            let holder = Holder::Primary(primary.clone());
            match self
                .send_merge(&holder, key_hash, &storage_key, &record, Liveness::IfUp)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(node = %primary, error = %e, "replication to a primary failed");
                    errors.push(format!("{primary}: {e}"));
                    "failed"
                }
            }
        } else {
            errors.push(format!("{primary}: down"));
            "down"
        };
        loop {
            let Some(node) = fallbacks.lock().pop_front() else {
                break;
            };
            let holder = Holder::StandIn {
                node: node.clone(),
                for_primary: primary.clone(),
            };
            match self
                .send_merge(&holder, key_hash, &storage_key, &record, Liveness::IfUp)
                .await
            {
                Ok(()) => {
                    metrics::counter!(crate::metrics::SLOPPY_WRITES, "reason" => reason)
                        .increment(1);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{node} (for {primary}): {e}")),
            }
        }
        // No fallback took it: try the primary even though it is believed down (the failure
        // detector may be wrong — a node that just started has heard from nobody yet).
        if !believed_up {
            let holder = Holder::Primary(primary.clone());
            match self
                .send_merge(&holder, key_hash, &storage_key, &record, Liveness::Anyway)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => errors.push(format!("{primary} (believed down, tried anyway): {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Sends a write to the first live primary of the key in preference order; moves on to the
    /// next only past primaries the request never reached (see the module docs).
    async fn forward(
        &self,
        bucket: &[u8],
        key: &[u8],
        p: &Placement,
        write: &Write,
        required: u8,
    ) -> Result<CausalContext, Forward> {
        let tag = key_tag(bucket, key);
        let token = encode_token(&write.ctx, tag);
        let mut errors = Vec::new();
        for node in p.replicas.iter().filter(|n| !self.is_local(n)) {
            if !self.topology.is_up(node) {
                errors.push(format!("{node}: down"));
                continue;
            }
            let Some(addr) = self.topology.peer_addr(node) else {
                errors.push(format!("{node}: address unknown"));
                continue;
            };
            let req = PeerRequest::Coordinate {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                context: token.clone(),
                value: write.value.clone().map(serde_bytes::ByteBuf::from),
                ttl_secs: write.ttl_secs,
                w: required,
            };
            // A forwarded write waits for its own replication round, which may include a
            // fallback after a slow primary: allow three RPC deadlines.
            match self
                .peers
                .call(&addr, req, self.settings.rpc_timeout * 3)
                .await
            {
                Ok(PeerResponse::Coordinated { context }) => {
                    return decode_token(&context, tag)
                        .map_err(|e| Forward::Refused(Error::InvalidContext(e)));
                }
                // Not a replica there (another layout version), or its storage refused before
                // applying: nothing was written, the next primary may take it.
                Ok(PeerResponse::Failed(RemoteError::Unavailable(e))) => {
                    errors.push(format!("{node}: {e}"))
                }
                // A quorum miss there: the write was applied on that primary and may spread, so
                // it must not be applied again elsewhere (a second version of one client write
                // could outlive a delete that saw only one). The outcome is unknown: 503.
                Ok(PeerResponse::Failed(e)) => return Err(Forward::Refused(e.into())),
                // The primary got the request: whatever happened there, the write may have been
                // applied, so it must not be applied again by another replica or a stand-in.
                Ok(other) => {
                    errors.push(format!("{node}: unexpected answer {other:?}"));
                    return Err(Forward::Refused(indeterminate(required, &errors)));
                }
                Err(e) => {
                    errors.push(format!(
                        "{node}: {e} (the write may have been applied there)"
                    ));
                    return Err(Forward::Refused(indeterminate(required, &errors)));
                }
            }
        }
        Err(Forward::Unreachable(errors.join("; ")))
    }

    /// Answers a data-path request from another node (`Layout` messages are answered by the
    /// layout service, see `server.rs`).
    pub async fn serve_peer(&self, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::Layout(_) => PeerResponse::Failed(RemoteError::BadRequest(
                "layout messages are not served by the coordinator".into(),
            )),
            r @ (PeerRequest::AaeRoots { .. }
            | PeerRequest::AaeBranches { .. }
            | PeerRequest::AaeSegments { .. }
            | PeerRequest::AaeKeys { .. }
            | PeerRequest::Reap { .. }) => crate::aae::serve(self, r).await,
            PeerRequest::Read { storage_key } => object_response(self.replica.read(&storage_key)),
            PeerRequest::ReadHints {
                targets,
                storage_key,
            } => {
                let primaries: Result<Vec<NodeId>, String> =
                    targets.into_iter().map(NodeId::new).collect();
                match primaries {
                    Ok(t) => object_response(self.local_hints(&t, &storage_key)),
                    Err(e) => PeerResponse::Failed(RemoteError::BadRequest(e)),
                }
            }
            PeerRequest::Merge {
                key_hash,
                storage_key,
                record,
            } => {
                self.serve_merge(Slot::Own, key_hash, &storage_key, &record)
                    .await
            }
            PeerRequest::MergeHint {
                target,
                key_hash,
                storage_key,
                record,
            } => match NodeId::new(target) {
                Ok(t) => {
                    self.serve_merge(Slot::HintFor(&t), key_hash, &storage_key, &record)
                        .await
                }
                Err(e) => PeerResponse::Failed(RemoteError::BadRequest(e)),
            },
            PeerRequest::Coordinate {
                bucket,
                key,
                context,
                value,
                ttl_secs,
                w,
            } => {
                let tag = key_tag(&bucket, &key);
                let ctx = match decode_token(&context, tag) {
                    Ok(c) => c,
                    Err(e) => return PeerResponse::Failed(RemoteError::BadRequest(e.to_string())),
                };
                let p = self.place(&bucket, &key);
                if !p.replicas.iter().any(|n| self.is_local(n)) {
                    return PeerResponse::Failed(RemoteError::Unavailable(format!(
                        "{} is not a replica of this key in layout {}",
                        self.topology.local(),
                        self.topology.layout_version()
                    )));
                }
                let w = w.clamp(1, p.replicas.len().max(1) as u8);
                let write = Write {
                    ctx,
                    value: value.map(|v| v.into_vec()),
                    ttl_secs,
                };
                match self.coordinate_local(&p, &write, w, None).await {
                    Ok(after) => PeerResponse::Coordinated {
                        context: encode_token(&after, tag),
                    },
                    Err(e) => PeerResponse::Failed(e.into()),
                }
            }
        }
    }

    async fn serve_merge(
        &self,
        slot: Slot<'_>,
        key_hash: u64,
        storage_key: &[u8],
        record: &[u8],
    ) -> PeerResponse {
        let incoming = match decode_record(record) {
            Ok(o) => o,
            Err(e) => {
                return PeerResponse::Failed(RemoteError::Corrupt(format!("incoming object: {e}")))
            }
        };
        let now = self.clock.now_ms();
        match self
            .replica
            .merge(slot, key_hash, storage_key, &incoming, now)
            .await
        {
            Ok(_) => PeerResponse::Merged,
            Err(e) => PeerResponse::Failed(e.into()),
        }
    }
}

/// Why a forwarded write did not complete.
enum Forward {
    /// No primary could coordinate it (down, unreachable, or short of its quorum).
    Unreachable(String),
    /// A primary refused it for a reason that holds everywhere (bad context, sibling limit).
    Refused(Error),
}

/// The error of a forwarded write whose outcome is unknown.
fn indeterminate(required: u8, errors: &[String]) -> Error {
    Error::Quorum {
        required,
        succeeded: 0,
        errors: errors.join("; "),
    }
}

fn object_response(result: Result<Object, Error>) -> PeerResponse {
    match result {
        Ok(obj) if obj.is_empty() => PeerResponse::Object(None),
        Ok(obj) => {
            PeerResponse::Object(Some(serde_bytes::ByteBuf::from(encode_record(&obj, None))))
        }
        Err(e) => PeerResponse::Failed(e.into()),
    }
}

fn quorum_error(t: &QuorumTracker) -> Error {
    Error::Quorum {
        required: t.required(),
        succeeded: t.succeeded(),
        errors: t.errors().join("; "),
    }
}
