//! The read path: who to ask, quorum and hedging, read repair (module docs of
//! [`crate::coordinator`]).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use yeskv_core::{NodeId, Object, Outcome, Quorum, QuorumTracker};
use yeskv_storage::Engine;

use super::{quorum_error, Coordinator, Placement};
use crate::context::Liveness;
use crate::error::Error;
use crate::replication::{self, Holder};

impl<E: Engine> Coordinator<E> {
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
                if self.ctx.topology().is_up(primary) {
                    return Some(Holder::Primary(primary.clone()));
                }
                let f = fallbacks
                    .get_or_insert_with(|| {
                        self.ctx
                            .topology()
                            .fallbacks(p.partition)
                            .iter()
                            .filter(|n| self.ctx.topology().is_up(n))
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

    /// Reads one holder's object (see [`replication::read`]), tagged with the holder.
    async fn read_holder(
        self,
        holder: Holder,
        storage_key: Arc<Vec<u8>>,
        primaries: Arc<[NodeId]>,
        liveness: Liveness,
    ) -> (Holder, Result<Object, Error>) {
        let result =
            replication::read(&self.ctx, &holder, &storage_key, &primaries, liveness).await;
        (holder, result)
    }

    /// Reads a key: the merged object of the first `r` replicas to answer (empty if none has it).
    /// Down primaries are read through their stand-ins. One read in `read_all_every` asks every
    /// replica at once; the others ask `r` of them — this node's own copy first, it costs no
    /// round trip — and another only when one fails or has not answered after `read_hedge`.
    /// The replies that come after the answer feed read repair (see
    /// [`Coordinator::read_repair`]).
    pub async fn get(&self, bucket: &[u8], key: &[u8], r: Option<Quorum>) -> Result<Object, Error> {
        let p = self.place(bucket, key);
        let required = self.quorum(r, self.settings().r, p.replicas.len(), "r")?;
        let (holders, last_resort) = self.read_holders(&p);
        let mut queue: VecDeque<(Holder, Liveness)> =
            holders.into_iter().map(|h| (h, Liveness::IfUp)).collect();
        if let Some(i) = queue.iter().position(|(h, _)| self.is_local(h.node())) {
            if let Some(local) = queue.remove(i) {
                queue.push_front(local);
            }
        }
        let every = u64::from(self.settings().read_all_every.max(1));
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
        let hedge = tokio::time::sleep(self.settings().read_hedge);
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
                    let at = tokio::time::Instant::now() + self.settings().read_hedge;
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
                    tracker.failure(e.of(holder.node()))
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
            let deadline = tokio::time::sleep(this.settings().rpc_timeout);
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
                let result =
                    replication::merge_into(&this.ctx, &holder, key_hash, &storage_key, &merged)
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
}
