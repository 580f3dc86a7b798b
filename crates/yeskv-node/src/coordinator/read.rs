//! The read path: who to ask, quorum and hedging, read repair (module docs of
//! [`crate::coordinator`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use yeskv_core::{NodeId, Object, Outcome, Quorum, QuorumTracker};
use yeskv_storage::Engine;

use super::{quorum_error, Coordinator, Placement, Scope};
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
            .data
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
        self.record_hot(&p, bucket, key);
        let mut required = self.quorum(r, self.settings().r, &p, p.data.len(), "r")?;
        // `local_quorum` asks and counts the data holders of this node's region only (the
        // other regions converge by replication and anti-entropy); `each_quorum` reads ask a
        // quorum of every replica.
        match self.scope(r, &p) {
            Scope::Local(region) => {
                let whole = p.clone();
                let p = self.in_region(p, &region);
                let majority = p.replicas.len() / 2 + 1;
                required = majority.min(p.data.len()).clamp(1, 255) as u8;
                match self.read_placed(p, required).await {
                    // The region cannot make its majority (a replica of it down): as many
                    // data holders of the whole cluster answer instead (a sloppy local
                    // quorum: a stale read is fine, no read is not).
                    Err(Error::Quorum { .. }) if whole.data.len() > required as usize => {
                        metrics::counter!(crate::metrics::READS_SPILLED).increment(1);
                        self.read_placed(whole, required).await
                    }
                    other => other,
                }
            }
            Scope::All | Scope::Each => self.read_placed(p, required).await,
        }
    }

    /// Reads the key placed at `p` from `required` of its data holders (see [`Coordinator::get`]).
    async fn read_placed(&self, p: Placement, required: u8) -> Result<Object, Error> {
        let (queue, first) = self.read_queue(&p, required);
        let launch = |(holder, liveness): (Holder, Liveness)| {
            self.clone()
                .read_holder(holder, p.storage_key.clone(), p.data.clone(), liveness)
        };
        let mut round = ReadRound::new(launch, queue, required, p.data.len());
        round.ask_first(first);
        self.collect_replies(&mut round).await?;
        let ReadRound {
            pending,
            replies,
            merged,
            ..
        } = round;
        self.read_repair(
            p.hash,
            p.storage_key.clone(),
            pending,
            replies,
            merged.clone(),
        );
        Ok(merged)
    }

    /// The holders of one read in the order they are asked, and how many of them to ask at
    /// once: the live holders with this node's own copy first (all of them when this read asks
    /// every replica, else `required`), then, behind everything else, the primaries believed
    /// down that nobody stands in for.
    fn read_queue(&self, p: &Placement, required: u8) -> (VecDeque<(Holder, Liveness)>, usize) {
        let (holders, last_resort) = self.read_holders(p);
        let mut queue: VecDeque<(Holder, Liveness)> =
            holders.into_iter().map(|h| (h, Liveness::IfUp)).collect();
        if let Some(i) = queue.iter().position(|(h, _)| self.is_local(h.node())) {
            if let Some(local) = queue.remove(i) {
                queue.push_front(local);
            }
        }
        let first = if self.ask_every_replica() {
            queue.len()
        } else {
            usize::from(required).min(queue.len())
        };
        queue.extend(last_resort.into_iter().map(|h| (h, Liveness::Anyway)));
        let first = first.max(usize::from(required).min(queue.len()));
        (queue, first)
    }

    /// Whether this read asks every replica at once: one read in `read_all_every` does.
    fn ask_every_replica(&self) -> bool {
        let every = u64::from(self.settings().read_all_every.max(1));
        every == 1
            || self
                .reads
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(every)
    }

    /// Waits for the replies of `round` until the read is decided, asking one more holder
    /// whenever one fails or none has answered for `read_hedge`. `Ok` once the quorum is reached
    /// (and, if an empty stand-in helped reach it, every primary asked has answered too); the
    /// answer is then `round.merged`.
    async fn collect_replies<L, F>(&self, round: &mut ReadRound<L, F>) -> Result<(), Error>
    where
        L: Fn((Holder, Liveness)) -> F,
        F: Future<Output = (Holder, Result<Object, Error>)>,
    {
        let hedge = tokio::time::sleep(self.settings().read_hedge);
        tokio::pin!(hedge);
        loop {
            let next = tokio::select! {
                biased;
                next = round.pending.next() => next,
                _ = &mut hedge, if !round.queue.is_empty() && !round.reached => {
                    // Slow replies: ask one more replica, and again after another `read_hedge`.
                    round.ask_next();
                    let at = tokio::time::Instant::now() + self.settings().read_hedge;
                    hedge.as_mut().reset(at);
                    continue;
                }
            };
            let Some((holder, result)) = next else { break };
            match round.record(holder, result) {
                Outcome::Reached => {
                    round.reached = true;
                    if round.empty_stand_ins > 0 {
                        // Ask the primaries not asked yet, and wait for all of them.
                        round.ask_remaining_primaries();
                        if round.primaries_pending > 0 {
                            continue;
                        }
                    }
                    break;
                }
                Outcome::Impossible if !round.reached => return Err(round.failure()),
                _ => {}
            }
        }
        if round.reached {
            Ok(())
        } else {
            Err(quorum_error(&round.tracker))
        }
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

/// One read in flight: the holders not asked yet, the asks pending, and what the replies add
/// up to so far. `launch` starts the ask of one holder.
struct ReadRound<L, F> {
    launch: L,
    /// Holders not asked yet, in the order they will be.
    queue: VecDeque<(Holder, Liveness)>,
    pending: FuturesUnordered<F>,
    /// Primaries asked that have not answered yet. A stand-in that holds nothing for the key
    /// knows nothing about it: once the quorum is reached with such a reply, the read waits for
    /// the primaries (a primary that holds the value must not be outvoted by fallbacks that
    /// never saw it).
    primaries_pending: usize,
    tracker: QuorumTracker,
    /// Every successful reply, merged.
    merged: Object,
    /// The successful replies, for read repair.
    replies: Vec<(Holder, Object)>,
    /// The last failure that was a corrupt record.
    corrupt: Option<String>,
    /// Stand-ins that answered with nothing for the key.
    empty_stand_ins: usize,
    /// Whether the quorum was reached: `merged` is the answer.
    reached: bool,
}

impl<L, F> ReadRound<L, F>
where
    L: Fn((Holder, Liveness)) -> F,
    F: Future<Output = (Holder, Result<Object, Error>)>,
{
    /// A read of a key with `replicas` replicas that needs `required` replies, nobody asked yet.
    fn new(launch: L, queue: VecDeque<(Holder, Liveness)>, required: u8, replicas: usize) -> Self {
        ReadRound {
            launch,
            queue,
            pending: FuturesUnordered::new(),
            primaries_pending: 0,
            tracker: QuorumTracker::new(required, replicas as u8),
            merged: Object::new(),
            replies: Vec::with_capacity(replicas),
            corrupt: None,
            empty_stand_ins: 0,
            reached: false,
        }
    }

    /// Asks one holder.
    fn ask(&mut self, (holder, liveness): (Holder, Liveness)) {
        self.primaries_pending += usize::from(matches!(holder, Holder::Primary(_)));
        self.pending.push((self.launch)((holder, liveness)));
    }

    /// Asks the next holder in line, if any.
    fn ask_next(&mut self) {
        if let Some(next) = self.queue.pop_front() {
            self.ask(next);
        }
    }

    /// Asks the first `count` holders in line (at most the queue's length).
    fn ask_first(&mut self, count: usize) {
        for _ in 0..count {
            self.ask_next();
        }
    }

    /// Asks every primary still in line that is believed up.
    fn ask_remaining_primaries(&mut self) {
        while let Some(i) = self
            .queue
            .iter()
            .position(|(h, l)| matches!(h, Holder::Primary(_)) && *l == Liveness::IfUp)
        {
            if let Some(primary) = self.queue.remove(i) {
                self.ask(primary);
            }
        }
    }

    /// Records one holder's reply: merges an object, or asks the next holder in the failed
    /// one's place. Returns where the quorum stands.
    fn record(&mut self, holder: Holder, result: Result<Object, Error>) -> Outcome {
        if matches!(holder, Holder::Primary(_)) {
            self.primaries_pending = self.primaries_pending.saturating_sub(1);
        }
        match result {
            Ok(obj) => {
                if obj.is_empty() && !matches!(holder, Holder::Primary(_)) {
                    self.empty_stand_ins += 1;
                }
                self.merged.sync(&obj);
                self.replies.push((holder, obj));
                self.tracker.success()
            }
            Err(e) => {
                if matches!(e, Error::Corrupt(_)) {
                    self.corrupt = Some(e.to_string());
                    // Its copy counts as missing for read repair, which replaces it.
                    if matches!(holder, Holder::Primary(_)) {
                        self.replies.push((holder.clone(), Object::new()));
                    }
                }
                self.ask_next();
                self.tracker.failure(e.of(holder.node()))
            }
        }
    }

    /// The error of a read whose quorum can no longer be reached. A lone replica that is corrupt
    /// is reported as such, not as a quorum miss.
    fn failure(&mut self) -> Error {
        match (self.corrupt.take(), self.tracker.required()) {
            (Some(c), 1) => Error::Corrupt(c),
            _ => quorum_error(&self.tracker),
        }
    }
}
