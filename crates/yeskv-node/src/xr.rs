//! Cross-region replication: delivering this node's coordinated writes to the other regions.
//!
//! With replicas per region, a write counted by `local_quorum` is sent at once only to the
//! replicas of the coordinator's region (the coordinator, `crate::coordinator`). For every
//! other region holding replicas of the key, the coordinator's own store queued an entry in the
//! same RocksDB batch as the record (`replica/xr.rs`), so a write acknowledged locally is owed
//! to the other regions even if the coordinator crashes right after answering.
//!
//! This worker, one per node, drains the queue of each region on its own (a region cut off
//! does not hold back the others):
//! 1. it reads up to `cross_region.batch` of the region's oldest entries;
//! 2. reads the key's *current* object for each (repeated writes to one key go once; a key
//!    this node no longer holds, or that was reaped, or whose object has expired, is owed
//!    nothing from here);
//! 3. sends the objects to every node of the key's write set in that region that is believed
//!    up, in `MergeMany` batches, one RPC per node (split by bytes);
//! 4. removes an entry once at least one of them took the key durably and none believed up
//!    failed or refused it — a node of the region believed down gets it from the others by
//!    that region's own anti-entropy; otherwise the entry stays and the region is retried
//!    after `cross_region.retry_ms`.
//!
//! It wakes when entries are queued, and every `cross_region.poll_ms` otherwise. The queue is
//! bounded (`replica/xr.rs`: past the bound, anti-entropy carries the writes). Anti-entropy
//! exchanges trees between every two data holders of a partition, regions included, and is
//! the final guarantee. `/v1/status` shows, per remote region, the queue, the oldest entry's
//! age and the link ([`regions`]); `/metrics` the `yeskv_xr_*` series.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use serde::Serialize;
use yeskv_core::codec::encode_record;
use yeskv_core::keyspace::split_storage_key;
use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::context::NodeContext;
use crate::error::Error;
use crate::metrics;
use crate::replica::XrEntry;
use crate::replication::{self, MergeItem, MERGE_MANY_MAX};
use crate::workers::{Progress, StopSignal, WorkerStatus};

/// How the worker paces itself.
#[derive(Clone, Debug)]
pub struct XrSettings {
    /// Entries read and sent per batch.
    pub batch: usize,
    /// Most bytes of records in one `MergeMany` (one record alone when larger).
    pub batch_bytes: usize,
    /// Wait before a region whose last batch failed is tried again.
    pub retry: Duration,
    /// Longest wait between looks at the queue when nothing wakes the worker.
    pub poll: Duration,
}

impl Default for XrSettings {
    fn default() -> Self {
        XrSettings {
            batch: 512,
            batch_bytes: crate::config::Limits::default().object_bytes_max,
            retry: Duration::from_secs(1),
            poll: Duration::from_millis(500),
        }
    }
}

/// What this node last saw of its link to each region (shared through the node's context).
#[derive(Debug, Default)]
pub struct Links {
    regions: Mutex<BTreeMap<String, Link>>,
}

/// The outcome of the last batch sent to a region.
#[derive(Clone, Debug, Default)]
struct Link {
    /// Whether it got through.
    up: bool,
    /// Why it did not.
    error: Option<String>,
}

impl Links {
    fn record(&self, region: &str, outcome: Result<(), String>) {
        let up = outcome.is_ok();
        ::metrics::gauge!(metrics::XR_LINK_UP, "region" => region.to_string())
            .set(f64::from(u8::from(up)));
        self.regions.lock().insert(
            region.to_string(),
            Link {
                up,
                error: outcome.err(),
            },
        );
    }
}

/// One remote region in `/v1/status` (`regions`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RegionStatus {
    /// Writes queued for it.
    pub queue: u64,
    /// Age of the oldest of them, in seconds (0 when none).
    pub oldest_age_s: f64,
    /// `up` when the last batch got through (or nothing was sent yet and one of its nodes is
    /// believed up), else `down`.
    pub link: &'static str,
    /// Why the last batch failed, while the link is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Writes not queued for it since this node started (its queue was full): anti-entropy
    /// carries them.
    pub overflowed: u64,
}

/// Each region other than this node's that holds replicas, or has writes queued here.
pub fn regions<E: Engine>(ctx: &NodeContext<E>) -> BTreeMap<String, RegionStatus> {
    let topology = ctx.topology();
    let own = topology.region_of(topology.local());
    let queues = ctx.replica().xr_regions();
    let mut names: BTreeSet<String> = topology
        .regions()
        .iter()
        .filter(|r| Some(*r) != own.as_ref())
        .map(|r| r.to_string())
        .collect();
    names.extend(queues.keys().cloned());
    let links = ctx.xr_links().regions.lock().clone();
    let now = ctx.now_ms();
    names
        .into_iter()
        .map(|name| {
            let q = queues.get(&name).cloned().unwrap_or_default();
            let oldest = match q.entries {
                0 => None,
                _ => ctx.replica().xr_oldest_ms(&name).ok().flatten(),
            };
            let any_up = || {
                topology
                    .members()
                    .iter()
                    .any(|n| topology.region_of(n).as_deref() == Some(&name) && topology.is_up(n))
            };
            let link = links.get(&name);
            let up = match link {
                Some(l) => l.up,
                None => any_up(),
            };
            let status = RegionStatus {
                queue: q.entries,
                oldest_age_s: oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0),
                link: if up { "up" } else { "down" },
                error: link.filter(|l| !l.up).and_then(|l| l.error.clone()),
                overflowed: q.overflowed,
            };
            (name, status)
        })
        .collect()
}

/// The worker (module docs): runs until `stop`, reporting in `status`.
pub async fn run<E: Engine>(
    ctx: NodeContext<E>,
    settings: XrSettings,
    stop: StopSignal,
    status: Arc<WorkerStatus>,
) {
    let mut inflight = FuturesUnordered::new();
    let mut busy: BTreeSet<String> = BTreeSet::new();
    let mut not_before: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    // Where each region's next batch starts (see `Replica::xr_peek_from`).
    let mut cursors: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut gauges_at = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        // Every write wakes the worker: the gauges (a scan per region, from its oldest entry
        // over the tombstones of delivered ones) only once per poll, not per write or batch.
        let gauges = now >= gauges_at;
        if gauges {
            gauges_at = now + settings.poll;
        }
        for (region, q) in ctx.replica().xr_regions() {
            if gauges {
                set_gauges(&ctx, &region, q.entries);
            }
            if q.entries == 0
                || busy.contains(&region)
                || not_before.get(&region).is_some_and(|t| *t > now)
            {
                continue;
            }
            busy.insert(region.clone());
            let (c, s) = (ctx.clone(), settings.clone());
            let cursor = cursors.remove(&region);
            inflight.push(async move {
                let (outcome, cursor) = deliver(&c, &region, &s, cursor).await;
                (region, outcome, cursor)
            });
        }
        status.set_busy(!inflight.is_empty());
        tokio::select! {
            biased;
            _ = stop.stopped() => break,
            Some((region, outcome, cursor)) = inflight.next(), if !inflight.is_empty() => {
                busy.remove(&region);
                if let Some(cursor) = cursor {
                    cursors.insert(region.clone(), cursor);
                }
                match &outcome {
                    // Found nothing although the count said some were queued (the count
                    // drifted from the disk): wait for new work instead of asking again at
                    // once, which would never yield.
                    Ok(Progress::Done) if !cursors.contains_key(&region) => {
                        not_before.insert(region.clone(), tokio::time::Instant::now() + settings.poll);
                    }
                    Ok(Progress::Throttled) | Ok(Progress::Done) => {
                        not_before.remove(&region);
                    }
                    Err(e) => {
                        tracing::debug!(%region, error = %e, "cross-region batch failed");
                        ::metrics::counter!(metrics::XR_FAILURES, "region" => region.clone())
                            .increment(1);
                        not_before.insert(region.clone(), tokio::time::Instant::now() + settings.retry);
                    }
                }
                status.record(&outcome);
            }
            _ = ctx.replica().xr_queued() => {}
            _ = tokio::time::sleep(settings.poll) => {}
        }
    }
    status.set_stopped();
}

fn set_gauges<E: Engine>(ctx: &NodeContext<E>, region: &str, entries: u64) {
    let age = match entries {
        0 => 0.0,
        _ => ctx
            .replica()
            .xr_oldest_ms(region)
            .ok()
            .flatten()
            .map_or(0.0, |t| ctx.now_ms().saturating_sub(t) as f64 / 1000.0),
    };
    ::metrics::gauge!(metrics::XR_QUEUE, "region" => region.to_string()).set(entries as f64);
    ::metrics::gauge!(metrics::XR_LAG, "region" => region.to_string()).set(age);
}

/// One batch of `region`'s queue (module docs, steps 1–4), from `cursor` on (from the oldest
/// entry when it finds nothing there: a clock that went back may queue behind it). Throttled
/// when a full batch went through (more may wait); an error when some entry could not be
/// delivered. Also returns where the next batch starts.
pub async fn deliver<E: Engine>(
    ctx: &NodeContext<E>,
    region: &str,
    settings: &XrSettings,
    cursor: Option<Vec<u8>>,
) -> (Result<Progress, Error>, Option<Vec<u8>>) {
    let replica = ctx.replica();
    let batch = settings.batch.max(1);
    let mut entries = match replica.xr_peek_from(region, cursor.as_deref(), batch) {
        Ok(e) => e,
        Err(e) => return (Err(e), cursor),
    };
    if entries.is_empty() && cursor.is_some() {
        entries = match replica.xr_peek(region, batch) {
            Ok(e) => e,
            Err(e) => return (Err(e), None),
        };
    }
    if entries.is_empty() {
        return (Ok(Progress::Done), None);
    }
    // Resume after this batch if it all goes through, else at its first entry left.
    let mut next = entries.last().map(|e| {
        let mut k = e.queue_key.clone();
        k.push(0);
        k
    });
    let outcome = deliver_entries(ctx, region, settings, entries, &mut next).await;
    (outcome, next)
}

/// Sends `entries` (steps 2–4); sets `next` to the first entry kept, if any is.
async fn deliver_entries<E: Engine>(
    ctx: &NodeContext<E>,
    region: &str,
    settings: &XrSettings,
    entries: Vec<XrEntry>,
    next: &mut Option<Vec<u8>>,
) -> Result<Progress, Error> {
    let replica = ctx.replica();
    let full = entries.len() >= settings.batch.max(1);
    let topology = ctx.topology();
    // Each key once, with the nodes of the region that should get it.
    let keys: BTreeMap<&[u8], u64> = entries
        .iter()
        .map(|e| (&e.storage_key[..], e.key_hash))
        .collect();
    let mut owed: BTreeMap<Vec<u8>, Vec<NodeId>> = BTreeMap::new();
    let mut by_node: BTreeMap<NodeId, Vec<MergeItem>> = BTreeMap::new();
    for (storage_key, key_hash) in keys {
        let Some((partition, _, _)) = split_storage_key(storage_key) else {
            continue;
        };
        let obj = match replica.read(storage_key) {
            Ok(obj) => obj,
            // Never sent; anti-entropy replaces the record from a good replica.
            Err(Error::Corrupt(_)) => continue,
            Err(e) => return Err(e),
        };
        let nodes: Vec<NodeId> = topology
            .write_set(partition)
            .iter()
            .filter(|n| topology.region_of(n).as_deref() == Some(region))
            .cloned()
            .collect();
        if obj.is_empty() || nodes.is_empty() {
            continue;
        }
        // Expired (every sibling an expired value): owed nothing; it must not come back into a
        // replica of the other region that dropped it (`crate::expiry`).
        if crate::expiry::expired(&obj, ctx.now_ms()) {
            crate::expiry::skipped("cross-region");
            continue;
        }
        let record = encode_record(&obj, None);
        for node in &nodes {
            by_node.entry(node.clone()).or_default().push(MergeItem {
                key_hash,
                storage_key: storage_key.to_vec(),
                record: record.clone(),
            });
        }
        owed.insert(storage_key.to_vec(), nodes);
    }
    // Who took what, and who failed (believed-down nodes are neither).
    let sends = by_node.into_iter().map(|(node, items)| async move {
        let outcome = send(ctx, &node, items, settings.batch_bytes).await;
        (node, outcome)
    });
    let results = futures_util::future::join_all(sends).await;
    let mut took: BTreeMap<&[u8], usize> = BTreeMap::new();
    let mut failed: BTreeSet<(&NodeId, &[u8])> = BTreeSet::new();
    let mut errors = Vec::new();
    let mut reached = false;
    for (node, outcome) in &results {
        match outcome {
            Sent::Down => {}
            Sent::Failed(e, keys) => {
                errors.push(e.to_string());
                failed.extend(keys.iter().map(|k| (node, &k[..])));
            }
            Sent::Took { taken, refused } => {
                reached = true;
                for k in taken {
                    *took.entry(&k[..]).or_default() += 1;
                }
                failed.extend(refused.iter().map(|k| (node, &k[..])));
                if !refused.is_empty() {
                    errors.push(format!(
                        "{node} refused {} keys: it holds no copy of their partition in its layout",
                        refused.len()
                    ));
                }
            }
        }
    }
    let delivered_key = |k: &[u8]| match owed.get(k) {
        // Nothing owed (no copy here any more, or the region holds no replica of it now).
        None => true,
        Some(nodes) => {
            took.get(k).copied().unwrap_or(0) > 0 && !nodes.iter().any(|n| failed.contains(&(n, k)))
        }
    };
    let (done, kept): (Vec<XrEntry>, Vec<XrEntry>) = entries
        .into_iter()
        .partition(|e| delivered_key(&e.storage_key));
    if let Some(first) = kept.first() {
        *next = Some(first.queue_key.clone());
    }
    replica.xr_remove(region, &done)?;
    let now = ctx.now_ms();
    let delivery = ::metrics::histogram!(metrics::XR_DELIVERY, "region" => region.to_string());
    for e in &done {
        delivery.record(now.saturating_sub(e.queued_ms) as f64 / 1000.0);
    }
    ::metrics::counter!(metrics::XR_DELIVERED, "region" => region.to_string())
        .increment(done.len() as u64);
    if kept.is_empty() {
        ctx.xr_links().record(region, Ok(()));
        return Ok(if full {
            Progress::Throttled
        } else {
            Progress::Done
        });
    }
    let reason = match (reached, errors.is_empty()) {
        (false, true) => format!("no node of region {region} holding these keys is up"),
        _ => errors.join("; "),
    };
    ctx.xr_links().record(region, Err(reason.clone()));
    Err(Error::Undelivered(format!(
        "{} of {} writes queued for region {region} not delivered: {reason}",
        kept.len(),
        kept.len() + done.len()
    )))
}

/// What one node of the remote region did with its part of a batch.
enum Sent {
    /// Believed down: not asked.
    Down,
    /// A call failed (these keys, and those of the calls not made after it, are not known to
    /// have reached it).
    Failed(Error, Vec<Vec<u8>>),
    /// Answered: the keys it took durably, and those it refused.
    Took {
        taken: Vec<Vec<u8>>,
        refused: Vec<Vec<u8>>,
    },
}

/// Sends `items` to `node` in `MergeMany` calls of at most `bytes_max` bytes of records and
/// keys (one item alone when larger) and [`MERGE_MANY_MAX`] items.
async fn send<E: Engine>(
    ctx: &NodeContext<E>,
    node: &NodeId,
    items: Vec<MergeItem>,
    bytes_max: usize,
) -> Sent {
    if !ctx.topology().is_up(node) {
        return Sent::Down;
    }
    let mut chunks: Vec<Vec<MergeItem>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = item.record.len() + item.storage_key.len() + 32;
        match chunks.last_mut() {
            Some(chunk) if bytes + size <= bytes_max && chunk.len() < MERGE_MANY_MAX => {
                bytes += size;
                chunk.push(item);
            }
            _ => {
                bytes = size;
                chunks.push(vec![item]);
            }
        }
    }
    let (mut taken, mut refused) = (Vec::new(), Vec::new());
    let mut chunks = chunks.into_iter();
    while let Some(chunk) = chunks.next() {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|i| i.storage_key.clone()).collect();
        match replication::send_merge_many(ctx, node, chunk).await {
            Ok(no) => {
                for (i, k) in keys.into_iter().enumerate() {
                    match no.contains(&(i as u32)) {
                        true => refused.push(k),
                        false => taken.push(k),
                    }
                }
            }
            Err(e) => {
                let mut lost = keys;
                lost.extend(chunks.flatten().map(|i| i.storage_key));
                return match e {
                    Error::PeerDown(_) if taken.is_empty() && refused.is_empty() => Sent::Down,
                    e => Sent::Failed(e, lost),
                };
            }
        }
    }
    Sent::Took { taken, refused }
}
