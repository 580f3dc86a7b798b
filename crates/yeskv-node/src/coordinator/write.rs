//! The write path: coordinate locally, replicate with sloppy quorum, forward to a replica
//! (module docs of [`crate::coordinator`]).

use std::collections::VecDeque;
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
        let me = stand_in_for.as_ref().unwrap_or(self.ctx.topology().local());
        let mut quorum = self.write_quorum(p, scope, required);
        let outcome = quorum.record(
            self.region_of(me).as_ref(),
            p.replicas.contains(me),
            p.data.contains(me),
            Ok(()),
        );
        if outcome == Outcome::Reached && p.writes.len() == 1 {
            return Ok(after);
        }
        // Replicate to every other slot of the write set — only those of this region when the
        // quorum is this region's and the write was queued for the others — each to
        // completion in its own task, so replicas beyond the quorum still receive the write
        // after the client is answered.
        let record: Arc<[u8]> = Arc::from(encode_record(&obj, None));
        let fallbacks = Arc::new(Mutex::new(self.live_fallbacks(p.partition)));
        let (tx, mut rx) = tokio::sync::mpsc::channel(p.writes.len());
        let here_only = match scope {
            Scope::Local(region) if !xr.is_empty() => Some(region.as_str()),
            _ => None,
        };
        let send = |tx: &Replies, holder: &NodeId| {
            let tx = tx.clone();
            let this = self.clone();
            let holder = holder.clone();
            let fallbacks = fallbacks.clone();
            let record = record.clone();
            let storage_key = p.storage_key.clone();
            let hash = p.hash;
            tokio::spawn(async move {
                let result = this
                    .replicate_slot(holder.clone(), hash, storage_key, record, fallbacks)
                    .await;
                let _ = tx.send((holder, result)).await;
            });
        };
        let mut elsewhere = Vec::new();
        for holder in p
            .writes
            .iter()
            .filter(|n| !self.is_local(n) && Some(*n) != stand_in_for.as_ref())
        {
            match here_only.is_none_or(|r| self.is_in(holder, r)) {
                true => send(&tx, holder),
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
                holding: usize::from(p.data.contains(me)),
                tx: Some(tx),
            }),
            _ => {
                drop(tx);
                None
            }
        };
        while let Some((node, result)) = rx.recv().await {
            let ok = result.is_ok();
            let reply = result.map_err(|e| e.join("; "));
            let region = self.region_of(&node);
            let outcome = quorum.record(
                region.as_ref(),
                p.replicas.contains(&node),
                p.data.contains(&node),
                reply,
            );
            if let Some(s) = spill.as_mut() {
                s.holding += usize::from(ok && p.data.contains(&node));
                if s.tx.is_none() && s.holding >= s.needed {
                    metrics::counter!(crate::metrics::SLOPPY_WRITES, "reason" => "region")
                        .increment(1);
                    return Ok(after);
                }
            }
            match outcome {
                Outcome::Reached => return Ok(after),
                Outcome::Impossible => match spill.as_mut() {
                    Some(s) => {
                        if let Some(tx) = s.tx.take() {
                            tracing::debug!(
                                key = %String::from_utf8_lossy(&p.storage_key),
                                "local quorum impossible; sending to the other regions"
                            );
                            elsewhere.iter().for_each(|n| send(&tx, n));
                        }
                    }
                    None => return Err(write_quorum_error(&quorum)),
                },
                Outcome::Pending => {}
            }
        }
        Err(write_quorum_error(&quorum))
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
    ) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
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
                    errors.push(e.of(&primary));
                    "failed"
                }
            }
        } else {
            errors.push(Error::PeerDown(primary.clone()).to_string());
            "down"
        };
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
        Err(errors)
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
    /// The channel the replies come back on, until the write is sent to the other regions
    /// (then the loop ends once every reply is in).
    tx: Option<Replies>,
}

/// Where replication tasks send their outcome: (the slot's primary, its result).
type Replies = tokio::sync::mpsc::Sender<(NodeId, Result<(), Vec<String>>)>;

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
