//! The write path: coordinate locally, replicate with sloppy quorum, forward to a replica
//! (module docs of [`crate::coordinator`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use yeskv_core::codec::{decode_token, encode_record, encode_token};
use yeskv_core::datatypes::{self, OpError};
use yeskv_core::keyspace::key_tag;
use yeskv_core::{
    BucketProps, CausalContext, Conflict, Dot, NodeId, Object, Outcome, Quorum, Version,
};
use yeskv_storage::Engine;

use super::{write_quorum_error, Coordinator, Placement, Scope, Write, WriteBody, Written};
use crate::context::Liveness;
use crate::error::Error;
use crate::replica::{Change, Slot};
use crate::replication::{self, Holder};

impl<E: Engine> Coordinator<E> {
    /// The live fallbacks of a partition, this node excluded, in the order to try them.
    fn live_fallbacks(&self, partition: u16) -> VecDeque<NodeId> {
        self.ctx
            .topology()
            .fallbacks(partition)
            .iter()
            .filter(|n| !self.is_local(n) && self.ctx.topology().is_up(n))
            .cloned()
            .collect()
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
        let body = match value {
            Some(v) => WriteBody::Value(v),
            None => WriteBody::Delete,
        };
        let write = Write {
            ctx,
            body,
            ttl_secs,
        };
        Ok(self.write(bucket, key, write, w).await?.ctx)
    }

    /// Coordinates a client write (a value, a delete or a data-type operation); see the
    /// module docs of [`crate::coordinator`].
    pub async fn write(
        &self,
        bucket: &[u8],
        key: &[u8],
        write: Write,
        w: Option<Quorum>,
    ) -> Result<Written, Error> {
        let p = self.place(bucket, key);
        self.record_hot(&p, bucket, key);
        check_body(&write.body, &p.props)?;
        let required = self.quorum(w, self.settings().w, &p, p.writes.len(), "w")?;
        let scope = self.scope(w, &p);
        // Only a node that holds the key's data mints a dot of its own actor for it: a node still
        // receiving the partition clears it before its first copy, and a dot minted over a copy
        // that lost the actor's earlier dots of the key would cover writes it never saw (found by
        // the simulator, seed 134). Such a node forwards to a data holder like any other.
        if p.data.iter().any(|n| self.is_local(n)) {
            if self.defers_to_first_holder(&p, &write.body) {
                match self
                    .forward(bucket, key, &p, &write, required, &scope)
                    .await
                {
                    Ok(written) => return Ok(written),
                    Err(Forward::Refused(e)) => return Err(e),
                    // No other holder could be reached: this one coordinates.
                    Err(Forward::Unreachable(_)) => {}
                }
            }
            return match self
                .coordinate_local(&p, &write, required, &scope, None)
                .await
            {
                // This node's storage refused the write before applying it (a full disk): the
                // key's other primaries can still make `w`, so one of them coordinates it.
                Err(Error::Storage(local)) => {
                    tracing::debug!(error = %local, "own storage refused a write; forwarding it");
                    metrics::counter!(crate::metrics::WRITES_FORWARDED_STORAGE).increment(1);
                    match self
                        .forward(bucket, key, &p, &write, required, &scope)
                        .await
                    {
                        Ok(written) => Ok(written),
                        Err(Forward::Unreachable(errors)) => {
                            Err(Error::Storage(format!("{local}; {errors}")))
                        }
                        Err(Forward::Refused(e)) => Err(e),
                    }
                }
                other => other,
            };
        }
        match self
            .forward(bucket, key, &p, &write, required, &scope)
            .await
        {
            Ok(written) => Ok(written),
            // No primary could coordinate (all down, or none answered): this node stands in
            // for the first primary and coordinates the write itself (sloppy quorum), so the
            // write fails only when fewer than `w` nodes of the whole cluster can take it.
            Err(Forward::Unreachable(errors)) => {
                match p.replicas.iter().find(|n| !self.is_local(n)) {
                    Some(first) => {
                        tracing::debug!(%errors, "no primary reachable; coordinating as a stand-in");
                        metrics::counter!(crate::metrics::SLOPPY_WRITES, "reason" => "coordinator")
                            .increment(1);
                        let first = first.clone();
                        self.coordinate_local(&p, &write, required, &scope, Some(first))
                            .await
                    }
                    None => Err(Error::Quorum {
                        required,
                        succeeded: 0,
                        errors: "no layout: the key has no replicas".into(),
                    }),
                }
            }
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
        scope: &Scope,
        stand_in_for: Option<NodeId>,
    ) -> Result<Written, Error> {
        let Write {
            ctx,
            body,
            ttl_secs,
        } = write;
        let now = self.now_ms();
        let ttl = ttl_secs
            .or(p.props.ttl_secs)
            .or(match self.settings().default_ttl_secs {
                0 => None,
                t => Some(t),
            });
        let expires = ttl.map(|t| now.saturating_add(t.saturating_mul(1000)));
        let lww = p.props.conflict == Conflict::Lww;
        // A fold sees the key's object under its lock: data-type operations fold the siblings'
        // states, last-writer-wins writes stamp past every version held.
        let fold: Option<Fold<'_>> = match body {
            WriteBody::Dt(op) => {
                let kind = p.props.datatype.ok_or_else(|| {
                    Error::Conflict("a data-type operation on a plain bucket".into())
                })?;
                // What a remove removes: what the client read, else all the coordinator holds.
                let read = (!ctx.seen.is_empty()).then(|| ctx.seen.clone());
                Some(Box::new(move |obj: &Object, dot: &Dot| {
                    let values = obj.visible(now).filter_map(|s| s.version.value.as_deref());
                    let mut state = datatypes::fold(kind, values).map_err(|e| {
                        Error::Conflict(format!("the key does not hold a {kind}: {e}"))
                    })?;
                    let seen = read.clone().unwrap_or_else(|| obj.clock().clone());
                    state.apply(op, dot, &seen);
                    Ok(Version::value(state.encode(), now, expires))
                }))
            }
            WriteBody::Value(v) if lww => Some(Box::new(move |obj: &Object, _: &Dot| {
                Ok(Version::value(v.clone(), lww_stamp(obj, now), expires))
            })),
            WriteBody::Delete if lww => Some(Box::new(move |obj: &Object, _: &Dot| {
                Ok(Version::tombstone(lww_stamp(obj, now)))
            })),
            WriteBody::Supersede(v) => Some(Box::new(move |obj: &Object, _: &Dot| {
                Ok(super::supersede::version(v.as_deref(), obj, now, expires))
            })),
            WriteBody::Value(_) | WriteBody::Delete => None,
        };
        let change = match (&fold, body) {
            (Some(f), _) => Change::Fold(f.as_ref()),
            (None, WriteBody::Value(v)) => Change::Put {
                ctx,
                version: Version::value(v.clone(), now, expires),
            },
            (None, _) => Change::Put {
                ctx,
                version: Version::tombstone(now),
            },
        };
        let slot = match &stand_in_for {
            None => Slot::Own,
            Some(t) => Slot::HintFor(t),
        };
        // An own copy queues the write for the other regions in the same batch (`crate::xr`);
        // a stand-in's hint sends to every region at once instead (below).
        let xr = match (slot, scope) {
            // Every region but the one the write is sent to now: a write forwarded here from
            // another region counts that region's quorum, and this node's own region then
            // gets it from the queue.
            (Slot::Own, Scope::Local(region)) => self.regions_but(&p.writes, Some(region)),
            (Slot::Own, _) => {
                let here = self.region_of(self.ctx.topology().local());
                self.regions_but(&p.writes, here.as_deref())
            }
            (Slot::HintFor(_), _) => Vec::new(),
        };
        let (obj, dot) = self
            .replica()
            .coordinate_queuing(slot, p.hash, &p.storage_key, change, now, &xr)
            .await?;
        // A fold's new version holds everything the object did: its context is the clock.
        let after = Written {
            ctx: match fold {
                Some(_) => obj.context(),
                None => ctx.clone().with_dot(dot),
            },
            siblings: obj.siblings().len(),
        };
        if let WriteBody::Dt(op) = body {
            metrics::counter!(crate::metrics::DT_OPS, "type" => op.datatype().as_str())
                .increment(1);
        } else if after.siblings > self.settings().siblings_max {
            // A plain bucket never refuses a write for its siblings: flagged instead.
            metrics::counter!(crate::metrics::SIBLINGS_OVER_LIMIT).increment(1);
            tracing::warn!(
                key = %String::from_utf8_lossy(&p.storage_key),
                siblings = after.siblings,
                max = self.settings().siblings_max,
                "a key holds more siblings than limits.siblings_max; read it and write back a merge"
            );
        }
        let me = stand_in_for
            .clone()
            .unwrap_or_else(|| self.ctx.topology().local().clone());
        let mut rounds = Rounds::new(p.routes());
        let mut quorum = self.write_quorum(p, scope, required);
        let outcome = quorum.record(
            self.region_of(&me).as_ref(),
            p.replicas.contains(&me),
            p.data.contains(&me),
            Ok(()),
        );
        rounds.count(0, &me, true);
        if outcome == Outcome::Reached && p.writes.len() == 1 {
            return Ok(after);
        }
        // Replicate to every other slot of the write set — only those of this region when the
        // quorum is this region's and the write was queued for the others — each to
        // completion in its own task, so replicas beyond the quorum still receive the write
        // after the client is answered.
        let record: Arc<[u8]> = Arc::from(encode_record(&obj, None));
        let mut fallbacks = Arc::new(Mutex::new(self.live_fallbacks(p.partition)));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let here_only = match scope {
            Scope::Local(region) if !xr.is_empty() => Some(region.as_str()),
            _ => None,
        };
        // Copies sent whose reply is not in yet.
        let pending = std::sync::atomic::AtomicUsize::new(0);
        let send = |round: usize, holder: &NodeId, fallbacks: &Fallbacks| {
            let tx: Replies = tx.clone();
            let this = self.clone();
            let holder = holder.clone();
            let fallbacks = fallbacks.clone();
            let record = record.clone();
            let storage_key = p.storage_key.clone();
            let hash = p.hash;
            pending.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut reply = Reply {
                    tx,
                    round,
                    holder: holder.clone(),
                    result: None,
                };
                let result = this
                    .replicate_slot(holder, hash, storage_key, record, fallbacks)
                    .await;
                reply.result = Some(result);
            });
        };
        let mut elsewhere = Vec::new();
        for holder in p
            .writes
            .iter()
            .filter(|n| !self.is_local(n) && Some(*n) != stand_in_for.as_ref())
        {
            match here_only.is_none_or(|r| self.is_in(holder, r)) {
                true => send(0, holder, &fallbacks),
                false => elsewhere.push(holder.clone()),
            }
        }
        if quorum.outcome() == Outcome::Reached {
            return Ok(after);
        }
        // A region that cannot make its own majority (a replica of it down, and no stand-in
        // of its region) spills: the write goes to the other regions' replicas at once, and
        // any majority-of-the-region's-replicas data holders of the whole cluster holding it
        // durably answer the client. A local quorum is then a sloppy one, never a "no" while
        // that many nodes can take the write.
        let mut spill = match (here_only, elsewhere.is_empty()) {
            (Some(region), false) => Some(Spill {
                needed: self.count_in(&p.replicas, region) / 2 + 1,
                holding: usize::from(p.data.contains(&me)),
                spilled: false,
            }),
            _ => None,
        };
        // A write set member that refused the copy because its layout does not make it one
        // (a layout newer than the one this write was placed by) re-places the write: see
        // `Rounds`. Waiting for this node's layout is bounded for the whole write.
        let mut refused_by_layout = false;
        let mut placement = p.clone();
        let layout_deadline = tokio::time::Instant::now() + LAYOUT_WAIT_MAX;
        loop {
            let reply = match pending.load(Ordering::Relaxed) {
                0 => None,
                _ => rx.recv().await,
            };
            if let Some((round, node, result)) = reply {
                pending.fetch_sub(1, Ordering::Relaxed);
                let Some((in_replicas, in_data)) = rounds.count(round, &node, result.is_ok())
                else {
                    continue;
                };
                let ok = result.is_ok();
                let reply = result.map_err(|f| {
                    refused_by_layout |= f.refused_by_layout;
                    f.errors.join("; ")
                });
                let outcome =
                    quorum.record(self.region_of(&node).as_ref(), in_replicas, in_data, reply);
                if let Some(s) = spill.as_mut() {
                    s.holding += usize::from(ok && in_data);
                    if s.spilled && s.holding >= s.needed {
                        metrics::counter!(crate::metrics::SLOPPY_WRITES, "reason" => "region")
                            .increment(1);
                        return Ok(after);
                    }
                }
                match outcome {
                    Outcome::Reached => return Ok(after),
                    Outcome::Pending => continue,
                    Outcome::Impossible => {
                        if let Some(s) = spill.as_mut() {
                            if !s.spilled {
                                s.spilled = true;
                                tracing::debug!(
                                    key = %String::from_utf8_lossy(&p.storage_key),
                                    "local quorum impossible; sending to the other regions"
                                );
                                elsewhere.iter().for_each(|n| send(0, n, &fallbacks));
                            }
                            continue;
                        }
                    }
                }
            }
            // The quorum cannot be reached under this placement. Unless a member refused by
            // its layout, that is the answer; else the write is re-placed by a newer layout of
            // this node, if one comes in time.
            if !refused_by_layout || rounds.current() + 1 >= ROUNDS_MAX {
                return Err(write_quorum_error(&quorum));
            }
            let Some(next) = self.newer_placement(&placement, layout_deadline).await else {
                return Err(write_quorum_error(&quorum));
            };
            metrics::counter!(crate::metrics::WRITES_REPLACED).increment(1);
            tracing::debug!(
                key = %String::from_utf8_lossy(&p.storage_key),
                from_epoch = placement.epoch,
                to_epoch = next.epoch,
                "a write set member refused by its layout; re-placing the write"
            );
            let (carried, to_send) = rounds.replace(next.routes());
            quorum = self.write_quorum(&next, scope, required);
            for (node, in_replicas, in_data) in carried {
                quorum.record(self.region_of(&node).as_ref(), in_replicas, in_data, Ok(()));
            }
            if quorum.outcome() == Outcome::Reached {
                return Ok(after);
            }
            // This node merges no copy into itself here: a copy of its own that counts was
            // carried; else it holds a hint, or nothing it may count.
            // Stand-ins come from this node's layout now (the one the round is placed by, or
            // newer), so that none of them is in the new write set.
            let round = rounds.current();
            fallbacks = Arc::new(Mutex::new(self.live_fallbacks(p.partition)));
            to_send
                .iter()
                .filter(|n| !self.is_local(n))
                .for_each(|n| send(round, n, &fallbacks));
            refused_by_layout = false;
            spill = None;
            placement = next;
        }
    }

    /// `p` placed by this node's layout once one newer than `p`'s places its key differently
    /// (other replicas, data holders or write set), waiting for it until `deadline`; `None`
    /// if none came by then.
    async fn newer_placement(
        &self,
        p: &Placement,
        deadline: tokio::time::Instant,
    ) -> Option<Placement> {
        let topology = self.ctx.topology();
        // Subscribed before the layout is read: one installed in between wakes the wait.
        let mut changes = topology.layout_changes();
        loop {
            let now = topology.routes(p.partition);
            let moved = now.replicas != p.replicas || now.data != p.data || now.writes != p.writes;
            if now.epoch > p.epoch && moved {
                return Some(Placement {
                    replicas: now.replicas,
                    data: now.data,
                    writes: now.writes,
                    epoch: now.epoch,
                    ..p.clone()
                });
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The deadline, or a topology whose layout never changes.
                _ => return None,
            }
        }
    }

    /// Puts one primary slot's copy of a write: on the primary if it is up and takes it, else
    /// on the next fallback that takes it as a hint for that primary.
    async fn replicate_slot(
        self,
        primary: NodeId,
        key_hash: u64,
        storage_key: Arc<Vec<u8>>,
        record: Arc<[u8]>,
        fallbacks: Fallbacks,
    ) -> Result<(), SlotFailure> {
        let mut errors = Vec::new();
        let mut refused_by_layout = false;
        let (ctx, storage_key, record) = (&self.ctx, &storage_key[..], &record[..]);
        let send = |holder: Holder, liveness: Liveness| async move {
            replication::send_merge(ctx, &holder, key_hash, storage_key, record, liveness).await
        };
        let believed_up = ctx.topology().is_up(&primary);
        let reason = if believed_up {
            match send(Holder::Primary(primary.clone()), Liveness::IfUp).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(node = %primary, error = %e, "replication to a primary failed");
                    refused_by_layout = replication::refused_by_layout(&e);
                    errors.push(e.of(&primary));
                    "failed"
                }
            }
        } else {
            errors.push(Error::PeerDown(primary.clone()).to_string());
            "down"
        };
        // A primary that is no longer a member of this node's layout (it left since the write
        // was placed: "no known address") is as stale a choice as one that refused by its own
        // layout: the write is worth re-placing if its quorum fails.
        refused_by_layout |= !ctx.topology().is_member(&primary);
        // With regions, a stand-in is of the primary's region: a copy kept across the WAN
        // would make a region's quorum out of another region's nodes.
        let region = self.region_of(&primary);
        loop {
            let next = {
                let mut queue = fallbacks.lock();
                let at = match &region {
                    None => Some(0).filter(|_| !queue.is_empty()),
                    Some(r) => queue
                        .iter()
                        .position(|n| self.region_of(n).as_ref() == Some(r)),
                };
                at.and_then(|i| queue.remove(i))
            };
            let Some(node) = next else {
                break;
            };
            let holder = Holder::StandIn {
                node: node.clone(),
                for_primary: primary.clone(),
            };
            match send(holder, Liveness::IfUp).await {
                Ok(()) => {
                    metrics::counter!(crate::metrics::SLOPPY_WRITES, "reason" => reason)
                        .increment(1);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{} (standing in for {primary})", e.of(&node))),
            }
        }
        // No fallback took it: try the primary even though it is believed down (the failure
        // detector may be wrong — a node that just started has heard from nobody yet).
        if !believed_up {
            match send(Holder::Primary(primary.clone()), Liveness::Anyway).await {
                Ok(()) => return Ok(()),
                Err(e) => errors.push(format!("{} (believed down, tried anyway)", e.of(&primary))),
            }
        }
        // A region cut off: a node of another region keeps the copy as a hint, so that it
        // reaches the primary as soon as the region is back, but the slot still counts as
        // failed for the quorum (another region's disk is not this region's replica).
        if region.is_some() {
            let next = fallbacks.lock().pop_front();
            if let Some(node) = next {
                let holder = Holder::StandIn {
                    node: node.clone(),
                    for_primary: primary.clone(),
                };
                if send(holder, Liveness::IfUp).await.is_ok() {
                    metrics::counter!(crate::metrics::SLOPPY_WRITES, "reason" => "region")
                        .increment(1);
                    errors.push(format!(
                        "{node} of another region keeps a hint for {primary} (not counted)"
                    ));
                }
            }
        }
        Err(SlotFailure {
            errors,
            refused_by_layout,
        })
    }

    /// Sends a write to the first live data holder of the key in preference order (those of
    /// this node's region first); moves on to the next only past holders the request never
    /// reached, or that refused it before applying it (see the module docs). Nodes still
    /// receiving the partition come last (they refuse to coordinate until they hold its data).
    async fn forward(
        &self,
        bucket: &[u8],
        key: &[u8],
        p: &Placement,
        write: &Write,
        required: u8,
        scope: &Scope,
    ) -> Result<Written, Forward> {
        let tag = key_tag(bucket, key);
        let keys = &self.settings().context_keys;
        let token = encode_token(&write.ctx, tag, keys);
        // A forwarded write waits for its own replication round, which may include a fallback
        // after a slow primary: allow three internode deadlines.
        let timeout = self.settings().rpc_timeout * 3;
        let mut errors = Vec::new();
        let here = self.region_of(self.ctx.topology().local());
        let mut order: Vec<&NodeId> = p
            .data
            .iter()
            .chain(p.writes.iter().filter(|n| !p.data.contains(n)))
            .filter(|n| !self.is_local(n))
            .collect();
        if here.is_some() {
            // Stable: within each group the preference order stands.
            order.sort_by_key(|n| self.region_of(n) != here);
        }
        for node in order {
            let answer = replication::coordinate_on(
                &self.ctx,
                node,
                bucket,
                key,
                token.clone(),
                write,
                required,
                scope,
                timeout,
            )
            .await;
            match answer {
                Ok((context, siblings)) => {
                    return decode_token(&context, tag, keys)
                        .map(|ctx| Written {
                            ctx,
                            siblings: siblings as usize,
                        })
                        .map_err(|e| Forward::Refused(Error::InvalidContext(e)));
                }
                // Not asked (believed down, no address, no connection could be made: the
                // request was never sent), or refused before applying anything (not a replica
                // in its layout, its storage refused): the next primary may take it.
                Err(e @ (Error::PeerDown(_) | Error::NoAddress(_) | Error::PeerRefused { .. })) => {
                    errors.push(e.to_string())
                }
                Err(e @ Error::Transport { .. }) if e.not_sent() => {
                    metrics::counter!(crate::metrics::WRITES_REROUTED).increment(1);
                    errors.push(e.to_string())
                }
                // The primary got the request: whatever happened there (a transport failure, an
                // answer out of protocol, a quorum it missed), the write may have been applied
                // and may spread, so it must not be applied again by another replica or a
                // stand-in (a second version of one client write could outlive a delete that
                // saw only one). The outcome is unknown: 503.
                Err(e @ (Error::Transport { .. } | Error::Protocol { .. })) => {
                    errors.push(format!("{e} (the write may have been applied there)"));
                    return Err(Forward::Refused(indeterminate(required, &errors)));
                }
                // Refused for a reason that holds everywhere (bad context, sibling limit), or a
                // quorum miss there.
                Err(e) => return Err(Forward::Refused(e)),
            }
        }
        Err(Forward::Unreachable(errors.join("; ")))
    }

    /// Coordinates a write another node forwarded here (`Coordinate`): this node must hold the
    /// key's data in its own layout (a replica that is not still receiving it, or a source);
    /// `w` was resolved by the sender.
    pub(crate) async fn coordinate_forwarded(
        &self,
        bucket: &[u8],
        key: &[u8],
        write: &Write,
        w: u8,
        scope: Scope,
    ) -> Result<Written, Error> {
        let p = self.place(bucket, key);
        check_body(&write.body, &p.props)?;
        if !p.data.iter().any(|n| self.is_local(n)) {
            return Err(Error::NotServing(
                "not a holder of this key's data in its layout",
            ));
        }
        let w = w.clamp(1, p.writes.len().max(1) as u8);
        // A region this node's layout gives no data holder of this key counts every replica.
        let scope = match scope {
            Scope::Local(region) if self.count_in(&p.data, &region) == 0 => Scope::All,
            other => other,
        };
        self.coordinate_local(&p, write, w, &scope, None).await
    }
}

/// How long, in all, a write waits for its coordinator's layout to move on after members of its
/// write set refused it by theirs (the coordinator's layout lags the one that released them:
/// every node applies a layout within milliseconds of the first).
pub(crate) const LAYOUT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Most placements of one write (the first and its re-placements).
const ROUNDS_MAX: usize = 4;

/// The rounds of one write's replication: the first under the placement the write was
/// coordinated by, then one more each time members of its write set refused it by their
/// (newer) layout and this node's layout moved on. The object is the same in every round:
/// no second version is minted, a re-placed write only goes to more nodes.
///
/// An acknowledgement counts in the round it was sent in by that round's placement, as ever.
/// In a later round it still counts only if the node was a *data holder* of the placement its
/// copy was sent under (its copy is kept: a node still receiving a partition may clear it
/// before its first copy, `crate::transfer`) and is in the new write set: such a copy is
/// *kept*, and is counted by the new placement's sets at once. Every other member of the new
/// write set is sent the object again; a merge is idempotent.
struct Rounds {
    /// The placement of each round, the current one last.
    placements: Vec<crate::topology::Routes>,
    /// Slots whose copy is kept (see above).
    kept: BTreeSet<NodeId>,
    /// Slots counted in the current round (each once).
    counted: BTreeSet<NodeId>,
}

impl Rounds {
    fn new(first: crate::topology::Routes) -> Self {
        Rounds {
            placements: vec![first],
            kept: BTreeSet::new(),
            counted: BTreeSet::new(),
        }
    }

    /// The current round (0 for the first).
    fn current(&self) -> usize {
        self.placements.len() - 1
    }

    /// Takes the reply of `node` (its slot) to the copy sent in `round`: whether it counts in
    /// the current round, and if so as a replica and/or a data holder of its placement.
    fn count(&mut self, round: usize, node: &NodeId, ok: bool) -> Option<(bool, bool)> {
        let sent_under = &self.placements[round];
        if ok && sent_under.data.contains(node) {
            self.kept.insert(node.clone());
        }
        let now = &self.placements[self.current()];
        let counts = round == self.current()
            || (ok && self.kept.contains(node) && now.writes.contains(node));
        if !counts || !self.counted.insert(node.clone()) {
            return None;
        }
        Some((now.replicas.contains(node), now.data.contains(node)))
    }

    /// Starts a round under `next`: the members of its write set whose copy is kept (each with
    /// whether it is a replica and a data holder of `next`; counted now), and the others, to
    /// send the object to.
    fn replace(
        &mut self,
        next: crate::topology::Routes,
    ) -> (Vec<(NodeId, bool, bool)>, Vec<NodeId>) {
        let (kept, send): (Vec<NodeId>, Vec<NodeId>) = next
            .writes
            .iter()
            .cloned()
            .partition(|n| self.kept.contains(n));
        self.counted = kept.iter().cloned().collect();
        let carried = kept
            .into_iter()
            .map(|n| {
                let (r, d) = (next.replicas.contains(&n), next.data.contains(&n));
                (n, r, d)
            })
            .collect();
        self.placements.push(next);
        (carried, send)
    }
}

/// A version made under the key's lock from its object and the new dot ([`Change::Fold`]).
type Fold<'a> = Box<dyn Fn(&Object, &Dot) -> Result<Version, Error> + Send + Sync + 'a>;

/// The timestamp of a last-writer-wins write: now, or past every version this replica holds
/// for the key if its clock is behind theirs (a hybrid logical clock per key: a write always
/// wins over what its coordinator had seen).
pub(super) fn lww_stamp(obj: &Object, now_ms: u64) -> u64 {
    obj.siblings()
        .iter()
        .map(|s| s.version.written_at_ms.saturating_add(1))
        .max()
        .unwrap_or(0)
        .max(now_ms)
}

/// Checks a write against its bucket: data-type operations only on a bucket of their type,
/// values only on plain buckets.
pub(crate) fn check_body(body: &WriteBody, props: &BucketProps) -> Result<(), Error> {
    match (body, props.datatype) {
        (WriteBody::Dt(op), Some(kind)) => op.check(kind).map_err(|e| match e {
            OpError::Malformed(m) => Error::BadRequest(m),
            e @ OpError::WrongType { .. } => Error::Conflict(e.to_string()),
        }),
        (WriteBody::Dt(op), None) => Err(Error::Conflict(format!(
            "a {} operation on a plain bucket (set its datatype with PUT /v1/buckets/{{bucket}})",
            op.datatype()
        ))),
        (WriteBody::Value(_) | WriteBody::Supersede(_), Some(kind)) => Err(Error::Conflict(
            format!("the bucket holds {kind}s: write with POST /v1/dt/{{bucket}}/{{key}}"),
        )),
        _ => Ok(()),
    }
}

/// A `local_quorum` write that may go to the other regions when its own cannot make its
/// majority (see `coordinate_local`).
struct Spill {
    /// Data holders that must hold the write: the region's majority.
    needed: usize,
    /// Data holders, of any region, known to hold it durably.
    holding: usize,
    /// Whether the write was sent to the other regions (then the loop ends once every reply
    /// is in).
    spilled: bool,
}

/// Where replication tasks send their outcome: (the round the copy was sent in, the slot's
/// primary, its result).
type Replies = tokio::sync::mpsc::UnboundedSender<(usize, NodeId, Result<(), SlotFailure>)>;

/// Sends one slot's outcome when dropped: its result, or, if the task ended without one (it
/// panicked, the runtime stopped), a failure, so the coordinator never waits for a reply that
/// cannot come (it keeps a sender for later rounds, so the channel never closes by itself).
struct Reply {
    tx: Replies,
    round: usize,
    holder: NodeId,
    result: Option<Result<(), SlotFailure>>,
}

impl Drop for Reply {
    fn drop(&mut self) {
        let result = self.result.take().unwrap_or_else(|| {
            Err(SlotFailure {
                errors: vec![format!(
                    "{}: replication ended without an answer",
                    self.holder
                )],
                refused_by_layout: false,
            })
        });
        let _ = self.tx.send((self.round, self.holder.clone(), result));
    }
}

/// The stand-ins of one round of a write, in the order to try them (each used once).
type Fallbacks = Arc<Mutex<VecDeque<NodeId>>>;

/// Why one slot of a write holds no copy.
struct SlotFailure {
    /// What each node tried said.
    errors: Vec<String>,
    /// Whether the primary refused because its layout does not make it a member of the key's
    /// write set ([`replication::refused_by_layout`]), or is not in this node's layout any
    /// more: either way the write was placed by a layout older than the newest one.
    refused_by_layout: bool,
}

/// Why a forwarded write did not complete.
enum Forward {
    /// No primary could coordinate it (down, unreachable, refused before applying).
    Unreachable(String),
    /// A primary refused it for a reason that holds everywhere (bad context, sibling limit), or
    /// its outcome is unknown.
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

#[cfg(test)]
mod tests {
    use yeskv_core::QuorumSets;

    use super::*;
    use crate::topology::Routes;

    fn ids(names: &[&str]) -> Arc<[NodeId]> {
        names.iter().map(|n| NodeId::new(*n).expect("id")).collect()
    }

    fn id(name: &str) -> NodeId {
        NodeId::new(name).expect("id")
    }

    /// Feeds `count`'s answer to `quorum`.
    fn record(quorum: &mut QuorumSets, counted: Option<(bool, bool)>, ok: bool) -> Outcome {
        match counted {
            Some((r, d)) => quorum.record(r, d, if ok { Ok(()) } else { Err("no".into()) }),
            None => quorum.outcome(),
        }
    }

    /// The transfer test's failure (two joins and a leave in one plan): the coordinator `n4`
    /// placed a write by the transition (`n5`, `n6` receiving, `n2`, `n3` its sources); `n2`
    /// and `n3` had applied the layout that ended it and refused. Under the first placement
    /// the data-holder quorum is impossible; under the newer one the coordinator's own copy
    /// counts at once, the copies `n5` and `n6` took while receiving do not (they may clear
    /// the partition before their first copy), and the object goes to them again.
    #[test]
    fn a_write_refused_by_newer_layouts_counts_only_kept_copies_under_the_next() {
        let first = Routes {
            epoch: 2,
            replicas: ids(&["n4", "n5", "n6"]),
            data: ids(&["n4", "n2", "n3"]),
            writes: ids(&["n4", "n5", "n6", "n2", "n3"]),
        };
        let mut rounds = Rounds::new(first.clone());
        let mut quorum = QuorumSets::new(2, 3, 3);
        for (node, ok) in [("n4", true), ("n5", true), ("n6", true), ("n2", false)] {
            let counted = rounds.count(0, &id(node), ok);
            assert!(counted.is_some(), "{node} counts in its own round");
            assert_ne!(record(&mut quorum, counted, ok), Outcome::Reached);
        }
        let counted = rounds.count(0, &id("n3"), false);
        assert_eq!(record(&mut quorum, counted, false), Outcome::Impossible);

        let holders = ids(&["n4", "n5", "n6"]);
        let next = Routes {
            epoch: 3,
            replicas: holders.clone(),
            data: holders.clone(),
            writes: holders,
        };
        let (carried, send) = rounds.replace(next);
        assert_eq!(carried, vec![(id("n4"), true, true)]);
        assert_eq!(send, vec![id("n5"), id("n6")]);
        let mut quorum = QuorumSets::new(2, 3, 3);
        for (node, r, d) in &carried {
            assert_eq!(quorum.record(*r, *d, Ok(())), Outcome::Pending, "{node}");
        }
        // A late answer of the first round from a node that was receiving then does not count.
        assert_eq!(rounds.count(0, &id("n5"), true), None);
        // Nor does any answer of a released source.
        assert_eq!(rounds.count(0, &id("n2"), true), None);
        // The object sent again to n6 under the new placement counts, as a data holder.
        let counted = rounds.count(1, &id("n6"), true);
        assert_eq!(counted, Some((true, true)));
        assert_eq!(record(&mut quorum, counted, true), Outcome::Reached);
        // Each slot counts once per round.
        assert_eq!(rounds.count(1, &id("n6"), true), None);
    }

    /// A data holder's copy acknowledged in an earlier round counts in a later one if the node
    /// is still in the write set (as a source, say), and not if it is out of it.
    #[test]
    fn kept_copies_carry_over_only_into_a_write_set_that_still_has_their_node() {
        let first = Routes {
            epoch: 5,
            replicas: ids(&["a", "b", "c"]),
            data: ids(&["a", "b", "c"]),
            writes: ids(&["a", "b", "c"]),
        };
        let mut rounds = Rounds::new(first);
        assert!(rounds.count(0, &id("a"), true).is_some());
        assert!(rounds.count(0, &id("b"), true).is_some());
        assert!(rounds.count(0, &id("c"), false).is_some());
        // b is a source of the next layout, c is out, d receiving.
        let (carried, send) = rounds.replace(Routes {
            epoch: 6,
            replicas: ids(&["a", "d", "e"]),
            data: ids(&["a", "e", "b"]),
            writes: ids(&["a", "d", "e", "b"]),
        });
        assert_eq!(carried, vec![(id("a"), true, true), (id("b"), false, true)]);
        assert_eq!(send, vec![id("d"), id("e")]);
        // c's answer, late or not, is of a node the new placement does not write to.
        assert_eq!(rounds.count(0, &id("c"), true), None);
        assert_eq!(rounds.current(), 1);
    }
}
