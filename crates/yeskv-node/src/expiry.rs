//! Expiry at scale: expired data leaves through the storage engine, on every replica on its own.
//!
//! An *expiring* object is one whose every sibling is a value with an expiry
//! ([`Object::expires_at_ms`]). Such objects need no coordination to go:
//! - **Reads** hide a version from its expiry on, by the reading node's clock (`Object::visible`).
//! - **Storage** drops the whole record in a compaction once its latest expiry is at least
//!   `ttl.expiry_grace_secs` behind the node's clock ([`droppable`], installed as the engine's
//!   [`DataFilter`] by [`Expiry::data_filter`]). A record that does not decode is kept (the read
//!   path reports it). No tree changes, no reap-queue entry, no message: O(1) local work per
//!   expired key, done by a compaction that rewrites the file anyway.
//! - **Anti-entropy** leaves expiring objects out of its trees (`yeskv_core::tictac::tree_digest`),
//!   so a replica that dropped a record and one that still holds it are equal.
//! - **Nothing brings one back** into a replica that holds nothing of the key: a merge of an
//!   expired expiring object there stores nothing (`Replica::merge_applied`), a hint holding one
//!   is dropped instead of delivered (`handoff.rs`), transfers and the cross-region sender skip
//!   them. Expired siblings of an object that is kept are never pruned one by one: their dots
//!   stay in the clock, where they supersede what they overwrote.
//!
//! Tombstones still go through the coordinated reaper (`reaper.rs`): a tombstone may only go once
//! every primary holds it, or the value it deleted could come back. So does an object mixing
//! tombstones and expiring values.
//!
//! **The clock-skew rule.** A node drops a record only `expiry_grace_secs` after its latest
//! expiry *by its own clock*; reads hide a version at its expiry by the *reading* node's clock.
//! With clocks within the grace of each other, a record is dropped only after every node already
//! hides it, so dropping it changes no read. A node whose clock runs ahead by more than the grace
//! drops a record early: a read coordinated by a node that runs behind could then find the value
//! on one replica and not on another (a read repair does not put it back on the early one: by
//! that node's clock it has expired).
//! Only the instant of disappearance depends on the clocks, never whether a write survives.
//!
//! **Compaction that runs when idle.** RocksDB applies the filter only to files it compacts, and
//! an idle node compacts nothing. So every own store of an expiring object counts its record's
//! bytes in a bucket of the minute the record becomes droppable ([`Expiry::record_write`]: in
//! memory, O(log buckets) under one short lock); the `expiry` worker ([`round`]) moves the buckets
//! that came due to a count of droppable bytes, less what the filter dropped meanwhile (under
//! load, natural compactions drop expired records too), and once that count passes
//! `ttl.expiry_compact_bytes` or a quarter of the data's live bytes (so that the last expired
//! records of an idle store go too) — and no such compaction ran in the last
//! `ttl.expiry_compact_interval_secs` — compacts the data space (on the blocking pool). After a
//! restart the buckets are empty: RocksDB's periodic compaction
//! (`storage.periodic_compaction_secs`) is the backstop for what was written before.
//!
//! Metrics: `yeskv_expired_records_dropped_total` / `_bytes_total` (by the filter),
//! `yeskv_expiry_compactions_total`, `yeskv_expiry_due_bytes` / `_records` (droppable and not
//! dropped yet, as far as the counts tell), `yeskv_expiry_pending_bytes` / `_records` (expiring, not
//! due yet), `yeskv_expired_skipped_total{path}` (expired objects not stored or not sent).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use yeskv_core::codec::{decode_record, record_expires_at_ms};
use yeskv_core::Object;
use yeskv_storage::{DataFilter, Engine, Space};

use crate::clock::Clock;
use crate::context::NodeContext;
use crate::error::Error;
use crate::metrics;
use crate::workers::Progress;

/// Width of a bucket of [`Expiry`], ms.
const BUCKET_MS: u64 = 60_000;

/// Most buckets kept (about 69 days of minutes). Past it, the latest bucket is forgotten to make
/// room for an earlier one: what is due soonest is what the worker needs to know.
pub const BUCKETS_MAX: usize = 100_000;

/// The worker also compacts once the droppable bytes reach `1 / LIVE_SHARE` of the data's live
/// bytes, below `ttl.expiry_compact_bytes`.
const LIVE_SHARE: u64 = 4;

/// Whether a stored record may be dropped at `now_ms`: its object is expiring and its latest
/// expiry is at least `grace_ms` behind. Read cheaply first (most records are kept), then
/// verified by a full decode: a record that does not decode is kept.
pub fn droppable(record: &[u8], now_ms: u64, grace_ms: u64) -> bool {
    let due = |exp: u64| exp.saturating_add(grace_ms) <= now_ms;
    record_expires_at_ms(record).is_some_and(due)
        && decode_record(record)
            .ok()
            .and_then(|o| o.expires_at_ms())
            .is_some_and(due)
}

/// Whether `obj` is expiring and expired at `now_ms` (no grace): what must not come back into a
/// replica that holds nothing of the key, and is not worth sending anywhere.
pub fn expired(obj: &Object, now_ms: u64) -> bool {
    obj.is_expired_at(now_ms)
}

/// Counts one expired object not stored or not sent, by `path` (`merge`, `hint`, `transfer`,
/// `cross-region`).
pub fn skipped(path: &'static str) {
    ::metrics::counter!(metrics::EXPIRED_SKIPPED, "path" => path).increment(1);
}

/// Bytes and records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Bytes of records (as stored).
    pub bytes: u64,
    /// Records.
    pub records: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.records = self.records.saturating_add(other.records);
    }
}

/// What `/v1/status` shows of expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExpirySnapshot {
    /// The grace, seconds.
    pub grace_secs: u64,
    /// Expiring records written since start that are not droppable yet.
    pub pending: Tally,
    /// Records droppable (expired past the grace) and not dropped since they came due, as
    /// far as the counts tell (reset by each expiry compaction).
    pub due: Tally,
    /// Records the compaction filter dropped since start.
    pub dropped: Tally,
    /// Expiry compactions run since start.
    pub compactions: u64,
}

/// What came due, and what the filter had dropped when it was last counted.
#[derive(Debug, Default)]
struct Due {
    /// Due bytes and records the filter has not dropped since (an estimate: the filter's
    /// drops are taken off whatever records they were).
    outstanding: Tally,
    /// [`Expiry::dropped`] when `outstanding` was last brought up to date.
    dropped_mark: Tally,
}

/// One replica's expiry bookkeeping (see the module docs).
#[derive(Debug)]
pub struct Expiry {
    grace_ms: u64,
    /// Expiring records stored, by the minute they become droppable (`(expiry + grace) /
    /// BUCKET_MS`, rounded up).
    buckets: Mutex<BTreeMap<u64, Tally>>,
    /// What came due and the filter has not dropped yet (as far as the counts tell).
    due: Mutex<Due>,
    dropped_records: AtomicU64,
    dropped_bytes: AtomicU64,
    compactions: AtomicU64,
}

impl Default for Expiry {
    fn default() -> Self {
        Self::new(crate::config::Ttl::default().expiry_grace_secs * 1000)
    }
}

impl Expiry {
    /// Bookkeeping with a grace of `grace_ms`.
    pub fn new(grace_ms: u64) -> Self {
        Expiry {
            grace_ms,
            buckets: Mutex::new(BTreeMap::new()),
            due: Mutex::new(Due::default()),
            dropped_records: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
        }
    }

    /// The grace, ms (`ttl.expiry_grace_secs`).
    pub fn grace_ms(&self) -> u64 {
        self.grace_ms
    }

    /// The storage engine's filter: [`droppable`] at `clock`'s time, counting what it drops.
    pub fn data_filter(self: &Arc<Self>, clock: Arc<dyn Clock>) -> DataFilter {
        let expiry = self.clone();
        DataFilter::new(
            move |key, record, now_ms| {
                let drop = droppable(record, now_ms, expiry.grace_ms);
                if drop {
                    expiry.dropped_records.fetch_add(1, Ordering::Relaxed);
                    expiry
                        .dropped_bytes
                        .fetch_add((key.len() + record.len()) as u64, Ordering::Relaxed);
                }
                drop
            },
            move || clock.now_ms(),
        )
    }

    /// Counts a stored record of `bytes` (key and record) whose object expires at
    /// `expires_at_ms`.
    pub fn record_write(&self, expires_at_ms: u64, bytes: usize) {
        let minute = expires_at_ms
            .saturating_add(self.grace_ms)
            .div_ceil(BUCKET_MS);
        let tally = Tally {
            bytes: bytes as u64,
            records: 1,
        };
        let mut buckets = self.buckets.lock();
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(&minute) {
            match buckets.last_key_value() {
                Some((&last, _)) if last > minute => {
                    buckets.pop_last();
                }
                // Later than everything kept: not counted (the periodic compaction takes it).
                _ => return,
            }
        }
        buckets.entry(minute).or_default().add(tally);
    }

    /// Moves the buckets droppable at `now_ms` to the due count, less what the filter dropped
    /// since the last call (natural compactions under load drop expired records too, and then
    /// no compaction of the node's own is needed for them); returns the due count.
    pub fn collect_due(&self, now_ms: u64) -> Tally {
        let mut came_due = Tally::default();
        {
            let mut buckets = self.buckets.lock();
            while let Some(entry) = buckets.first_entry() {
                if entry.key().saturating_mul(BUCKET_MS) > now_ms {
                    break;
                }
                came_due.add(entry.remove());
            }
        }
        let dropped = self.dropped();
        let mut due = self.due.lock();
        due.outstanding.add(came_due);
        let since = Tally {
            bytes: dropped.bytes.saturating_sub(due.dropped_mark.bytes),
            records: dropped.records.saturating_sub(due.dropped_mark.records),
        };
        due.outstanding.bytes = due.outstanding.bytes.saturating_sub(since.bytes);
        due.outstanding.records = due.outstanding.records.saturating_sub(since.records);
        due.dropped_mark = dropped;
        due.outstanding
    }

    /// Records an expiry compaction of the whole data space: whatever was due is gone (a
    /// record counted due but not dropped was overwritten, and its old version went anyway).
    fn compacted(&self) {
        let mut due = self.due.lock();
        due.outstanding = Tally::default();
        due.dropped_mark = self.dropped();
        self.compactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Expiring records not droppable yet.
    pub fn pending(&self) -> Tally {
        let mut t = Tally::default();
        for b in self.buckets.lock().values() {
            t.add(*b);
        }
        t
    }

    /// What the filter dropped since start.
    pub fn dropped(&self) -> Tally {
        Tally {
            bytes: self.dropped_bytes.load(Ordering::Relaxed),
            records: self.dropped_records.load(Ordering::Relaxed),
        }
    }

    /// The figures of `/v1/status` and `/metrics`.
    pub fn snapshot(&self) -> ExpirySnapshot {
        ExpirySnapshot {
            grace_secs: self.grace_ms / 1000,
            pending: self.pending(),
            due: self.due.lock().outstanding,
            dropped: self.dropped(),
            compactions: self.compactions.load(Ordering::Relaxed),
        }
    }

    /// Sets the expiry gauges and counters of `/metrics` (sampled when it is scraped).
    pub fn export_metrics(&self) {
        let s = self.snapshot();
        let figures = [
            (metrics::EXPIRED_RECORDS_DROPPED, s.dropped.records),
            (metrics::EXPIRED_BYTES_DROPPED, s.dropped.bytes),
            (metrics::EXPIRY_COMPACTIONS, s.compactions),
        ];
        for (name, value) in figures {
            ::metrics::counter!(name).absolute(value);
        }
        let gauges = [
            (metrics::EXPIRY_DUE_BYTES, s.due.bytes),
            (metrics::EXPIRY_DUE_RECORDS, s.due.records),
            (metrics::EXPIRY_PENDING_BYTES, s.pending.bytes),
            (metrics::EXPIRY_PENDING_RECORDS, s.pending.records),
        ];
        for (name, value) in gauges {
            ::metrics::gauge!(name).set(value as f64);
        }
    }
}

/// How the expiry worker paces itself.
#[derive(Clone, Debug)]
pub struct ExpirySettings {
    /// Pause between looks at the due count.
    pub interval: Duration,
    /// Due bytes at which the data space is compacted (`ttl.expiry_compact_bytes`; 0 = never).
    pub compact_bytes: u64,
    /// Least time between two expiry compactions (`ttl.expiry_compact_interval_secs`).
    pub compact_interval: Duration,
}

impl ExpirySettings {
    /// The settings of a node's configuration.
    pub fn new(ttl: &crate::config::Ttl) -> Self {
        let compact_interval = Duration::from_secs(ttl.expiry_compact_interval_secs);
        ExpirySettings {
            interval: compact_interval.min(Duration::from_secs(10)),
            compact_bytes: ttl.expiry_compact_bytes,
            compact_interval,
        }
    }
}

/// The worker's memory between rounds: when it last compacted (monotonic).
#[derive(Debug, Default)]
pub struct ExpiryWorker {
    last_compaction: Option<tokio::time::Instant>,
}

impl ExpiryWorker {
    /// One round (see [`round`]).
    pub async fn round<E: Engine>(
        &mut self,
        ctx: &NodeContext<E>,
        settings: &ExpirySettings,
    ) -> Result<Progress, Error> {
        round(ctx, settings, &mut self.last_compaction).await
    }
}

/// One round of the `expiry` worker: counts what came due and compacts the data space if enough
/// did and the last expiry compaction is far enough behind (module docs). Returns whether it
/// compacted, as the round's progress (`Done` either way: nothing is held back).
pub async fn round<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &ExpirySettings,
    last_compaction: &mut Option<tokio::time::Instant>,
) -> Result<Progress, Error> {
    let replica = ctx.replica();
    let expiry = replica.expiry();
    let due = expiry.collect_due(ctx.now_ms());
    expiry.export_metrics();
    // Enough to be worth rewriting the data: `compact_bytes`, or a quarter of what the data
    // holds (so that the last expired records of a small or idle store go too, and not only
    // at the periodic compaction).
    let live = replica.engine().live_data_bytes();
    let enough = due.bytes >= settings.compact_bytes
        || live.is_some_and(|l| due.bytes > 0 && due.bytes.saturating_mul(LIVE_SHARE) >= l);
    if settings.compact_bytes == 0 || !enough {
        return Ok(Progress::Done);
    }
    let now = tokio::time::Instant::now();
    if last_compaction.is_some_and(|t| now.duration_since(t) < settings.compact_interval) {
        return Ok(Progress::Done);
    }
    *last_compaction = Some(now);
    let dropped_before = expiry.dropped();
    let started = std::time::Instant::now();
    let r = replica.clone();
    let compact = move || r.engine().compact(Space::Data);
    crate::workers::off_async("expiry compaction", compact).await??;
    expiry.compacted();
    expiry.export_metrics();
    let dropped = expiry.dropped();
    tracing::info!(
        due_bytes = due.bytes,
        due_records = due.records,
        dropped_records = dropped.records - dropped_before.records,
        dropped_bytes = dropped.bytes - dropped_before.bytes,
        took_ms = started.elapsed().as_millis() as u64,
        "compacted data for expired records"
    );
    Ok(Progress::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yeskv_core::codec::encode_record;
    use yeskv_core::{Actor, CausalContext, NodeId, Version};

    fn record(versions: &[Version]) -> Vec<u8> {
        let mut o = Object::new();
        for (i, v) in versions.iter().enumerate() {
            let a = Actor::new(NodeId::new(format!("n{i}")).expect("id"), 1);
            o.update(&CausalContext::empty(), &a, v.clone(), 0);
        }
        encode_record(&o, None)
    }

    fn expiring(at: u64) -> Version {
        Version::value(b"v".to_vec(), 1, Some(at))
    }

    /// The predicate: an expiring record goes `grace` after its *latest* expiry, never before;
    /// anything else — a value that never expires beside it, a tombstone, a damaged record —
    /// is kept.
    #[test]
    fn the_rule_drops_only_expiring_records_past_the_grace() {
        let grace = 60_000;
        let one = record(&[expiring(1_000)]);
        assert!(!droppable(&one, 1_000, grace), "expired, within the grace");
        assert!(!droppable(&one, 60_999, grace));
        assert!(droppable(&one, 61_000, grace));
        let two = record(&[expiring(1_000), expiring(5_000)]);
        assert!(
            !droppable(&two, 61_000, grace),
            "the later sibling is still within"
        );
        assert!(droppable(&two, 65_000, grace));
        for kept in [
            record(&[expiring(1_000), Version::value(b"x".to_vec(), 1, None)]),
            record(&[expiring(1_000), Version::tombstone(1)]),
            record(&[Version::tombstone(1)]),
            record(&[Version::value(b"x".to_vec(), 1, None)]),
        ] {
            assert!(!droppable(&kept, u64::MAX, grace));
        }
        let mut damaged = one.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(
            !droppable(&damaged, u64::MAX, grace),
            "kept for the read path"
        );
        assert!(!droppable(&[], u64::MAX, grace));
        assert!(droppable(&one, 1_000, 0), "no grace");
    }

    /// Records are counted in the minute they become droppable and come due then, not before.
    #[test]
    fn writes_come_due_in_the_minute_they_become_droppable() {
        let e = Expiry::new(30_000);
        e.record_write(100_000, 10); // droppable at 130 s: bucket of minute 3 (180 s)
        e.record_write(170_000, 20); // 200 s: minute 4
        e.record_write(175_000, 30);
        assert_eq!(
            e.pending(),
            Tally {
                bytes: 60,
                records: 3
            }
        );
        assert_eq!(e.collect_due(179_999), Tally::default());
        assert_eq!(
            e.collect_due(180_000),
            Tally {
                bytes: 10,
                records: 1
            }
        );
        assert_eq!(
            e.collect_due(240_000),
            Tally {
                bytes: 60,
                records: 3
            }
        );
        assert_eq!(e.pending(), Tally::default());
        e.compacted();
        let s = e.snapshot();
        assert_eq!((s.due, s.compactions), (Tally::default(), 1));
    }

    /// A clock the test moves.
    struct At(AtomicU64);

    impl Clock for At {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A node that never reaches a peer (the worker sends nothing).
    struct NoPeers;

    impl yeskv_rpc::Call<crate::peer::PeerRequest, crate::peer::PeerResponse> for NoPeers {
        fn call<'a>(
            &'a self,
            _addr: &'a str,
            _request: crate::peer::PeerRequest,
            _timeout: Duration,
        ) -> crate::peer::CallFuture<'a> {
            Box::pin(async {
                Err(yeskv_rpc::Error::Remote {
                    reason: "no peers in this test".into(),
                })
            })
        }
    }

    /// The worker compacts once enough bytes came due — not before, not again within its
    /// interval, and not for what another compaction dropped meanwhile — and the compaction drops
    /// what came due: an idle node gives expired records back without anything else compacting.
    /// Fails if the worker never compacts, compacts on every round, or compacts again for
    /// records already gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_worker_compacts_when_enough_came_due() {
        use crate::replica::{Replica, Slot};
        use yeskv_storage::MemoryEngine;

        let clock = Arc::new(At(AtomicU64::new(1_000_000)));
        let expiry = Arc::new(Expiry::new(10_000));
        let engine = Arc::new(MemoryEngine::new());
        engine.set_data_filter(Some(expiry.data_filter(clock.clone())));
        let node = NodeId::new("n1").expect("id");
        let (mut replica, _) = Replica::open(engine.clone(), node.clone(), 0, || 1)
            .await
            .expect("open");
        replica.set_expiry(expiry.clone());
        let replica = Arc::new(replica);
        let ctx = NodeContext::new(
            replica.clone(),
            Arc::new(crate::topology::StaticTopology::new(
                node.clone(),
                vec![node],
            )),
            Arc::new(NoPeers),
            clock.clone(),
            crate::context::Settings {
                n: 1,
                r: 1,
                w: 1,
                partitions: 256,
                siblings_max: 100,
                default_ttl_secs: 0,
                rpc_timeout: Duration::from_secs(1),
                read_repair_inflight_max: 0,
                read_all_every: 1,
                read_hedge: Duration::from_millis(20),
                context_keys: yeskv_core::keyring::Keyring::unkeyed("test")
                    .derive(yeskv_core::keyring::Purpose::Contexts),
            },
        );
        let write = |i: u32, expires: u64| {
            let replica = replica.clone();
            async move {
                let k = yeskv_core::keyspace::storage_key(1, b"b", &i.to_be_bytes());
                let v = Version::value(vec![1; 1_000], 1, Some(expires));
                replica
                    .coordinate(Slot::Own, u64::from(i), &k, &CausalContext::empty(), v, 1)
                    .await
                    .expect("write");
            }
        };
        for i in 0..10 {
            write(i, 1_010_000).await;
        }
        let settings = ExpirySettings {
            interval: Duration::from_millis(10),
            compact_bytes: 5_000,
            compact_interval: Duration::from_secs(3600),
        };
        let records = || {
            engine
                .scan(Space::Data, &[], &[0xff; 4], 1_000)
                .expect("scan")
                .len()
        };
        let mut worker = ExpiryWorker::default();
        let compactions = |e: &Expiry| e.snapshot().compactions;
        // Expired, not past the grace: nothing is due, nothing compacts.
        clock.0.store(1_015_000, Ordering::SeqCst);
        worker.round(&ctx, &settings).await.expect("round");
        assert_eq!((compactions(&expiry), records()), (0, 10));
        // Past the grace and the bucket's minute: due, compacted, dropped.
        clock.0.store(1_080_000, Ordering::SeqCst);
        worker.round(&ctx, &settings).await.expect("round");
        assert_eq!((compactions(&expiry), records()), (1, 0));
        assert_eq!(expiry.snapshot().due, Tally::default());
        assert_eq!(expiry.dropped().records, 10);
        // More comes due, but the interval has not passed: no second compaction yet.
        for i in 10..20 {
            write(i, 1_090_000).await;
        }
        clock.0.store(1_200_000, Ordering::SeqCst);
        worker.round(&ctx, &settings).await.expect("round");
        assert_eq!((compactions(&expiry), records()), (1, 10));
        assert_eq!(expiry.snapshot().due.records, 10);
        // Another compaction (an operator's, a natural one) drops them: nothing is left due, and
        // the worker does not compact for them once its interval has passed.
        engine.compact(Space::Data).expect("compact");
        // (As if the interval had passed.)
        let settings = ExpirySettings {
            compact_interval: Duration::ZERO,
            ..settings
        };
        worker.round(&ctx, &settings).await.expect("round");
        assert_eq!((compactions(&expiry), records()), (1, 0));
        assert_eq!(expiry.snapshot().due, Tally::default());
        // New ones come due past the interval: compacted again.
        for i in 20..30 {
            write(i, 1_300_000).await;
        }
        clock.0.store(1_400_000, Ordering::SeqCst);
        worker.round(&ctx, &settings).await.expect("round");
        assert_eq!((compactions(&expiry), records()), (2, 0));
    }

    /// The buckets are bounded; past the bound the latest minutes go first.
    #[test]
    fn the_buckets_are_bounded_and_keep_the_earliest() {
        let e = Expiry::new(0);
        for m in 0..BUCKETS_MAX as u64 {
            e.record_write((m + 10) * BUCKET_MS, 1);
        }
        e.record_write(u64::MAX / 2, 1);
        assert_eq!(
            e.pending().records,
            BUCKETS_MAX as u64,
            "a later one is not kept"
        );
        e.record_write(BUCKET_MS, 1);
        assert_eq!(
            e.pending().records,
            BUCKETS_MAX as u64,
            "an earlier one evicts the last"
        );
        assert_eq!(e.collect_due(BUCKET_MS).records, 1);
    }
}
