//! The data filter, on both engines: records the node's predicate names are dropped when the data
//! space compacts — at the filter's clock, which the test moves — and nothing else is: records not
//! yet due, records that never expire, tombstones, records the predicate cannot read, and other
//! spaces.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use yeskv_core::codec::{decode_record, encode_record, record_expires_at_ms};
use yeskv_core::{Actor, CausalContext, NodeId, Object, Version};
use yeskv_storage::{
    DataFilter, Engine, MemoryEngine, RocksConfig, RocksEngine, Space, WriteBatch,
};

/// Grace of the test's rule, ms.
const GRACE_MS: u64 = 1_000;

/// The node's rule, as `yeskv-node/src/expiry.rs` states it: an expiring object whose latest
/// expiry is `GRACE_MS` or more behind `now_ms`, verified by a full decode.
fn droppable(record: &[u8], now_ms: u64) -> bool {
    let due = |exp: u64| exp.saturating_add(GRACE_MS) <= now_ms;
    record_expires_at_ms(record).is_some_and(due)
        && decode_record(record)
            .ok()
            .and_then(|o| o.expires_at_ms())
            .is_some_and(due)
}

/// A filter with the rule above and a clock the test sets; also counts what it dropped.
fn filter() -> (DataFilter, Arc<AtomicU64>, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (clock, count) = (now.clone(), dropped.clone());
    let f = DataFilter::new(
        move |_key, record, now_ms| {
            let drop = droppable(record, now_ms);
            if drop {
                count.fetch_add(1, Ordering::Relaxed);
            }
            drop
        },
        move || clock.load(Ordering::SeqCst),
    );
    (f, now, dropped)
}

fn object(version: Version) -> Object {
    let mut o = Object::new();
    let actor = Actor::new(NodeId::new("n1").expect("id"), 1);
    o.update(&CausalContext::empty(), &actor, version, 0);
    o
}

fn value(expires_at_ms: Option<u64>, bytes: usize) -> Vec<u8> {
    encode_record(
        &object(Version::value(vec![7; bytes], 1, expires_at_ms)),
        None,
    )
}

fn key(kind: &str, i: u32) -> Vec<u8> {
    format!("{kind}{i:05}").into_bytes()
}

/// Writes `count` records of each kind, and one corrupt record.
async fn load(e: &dyn Engine, count: u32, bytes: usize) {
    for i in 0..count {
        let mut b = WriteBatch::new();
        b.put(Space::Data, key("exp-soon-", i), value(Some(10_000), bytes))
            .put(Space::Data, key("exp-late-", i), value(Some(50_000), bytes))
            .put(Space::Data, key("forever-", i), value(None, bytes))
            .put(
                Space::Data,
                key("deleted-", i),
                encode_record(&object(Version::tombstone(1)), None),
            )
            // The same bytes outside the data space are never filtered.
            .put(Space::Meta, key("exp-soon-", i), value(Some(10_000), bytes));
        e.write(b).expect("write").wait().await.expect("durable");
    }
    // An expired record whose checksum fails: kept for the read path to report.
    let mut bad = value(Some(10_000), bytes);
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    assert_eq!(record_expires_at_ms(&bad), Some(10_000), "still parses");
    let mut b = WriteBatch::new();
    b.put(Space::Data, b"corrupt".to_vec(), bad);
    e.write(b).expect("write").wait().await.expect("durable");
}

fn present(e: &dyn Engine, space: Space, kind: &str, count: u32) -> u32 {
    (0..count)
        .filter(|i| e.get(space, &key(kind, *i)).expect("get").is_some())
        .count() as u32
}

/// The scenario both engines go through.
async fn expired_records_go_at_compaction(e: &dyn Engine, now: &AtomicU64, dropped: &AtomicU64) {
    let n = 200;
    load(e, n, 64).await;
    // Expired, but within the grace: nothing goes.
    now.store(10_000 + GRACE_MS - 1, Ordering::SeqCst);
    e.compact(Space::Data).expect("compact");
    assert_eq!(present(e, Space::Data, "exp-soon-", n), n);
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
    // Past the grace: the expired ones go, and only they.
    now.store(10_000 + GRACE_MS, Ordering::SeqCst);
    e.compact(Space::Data).expect("compact");
    assert_eq!(present(e, Space::Data, "exp-soon-", n), 0);
    assert_eq!(present(e, Space::Data, "exp-late-", n), n);
    assert_eq!(present(e, Space::Data, "forever-", n), n);
    assert_eq!(present(e, Space::Data, "deleted-", n), n);
    assert_eq!(present(e, Space::Meta, "exp-soon-", n), n);
    assert!(e.get(Space::Data, b"corrupt").expect("get").is_some());
    assert_eq!(dropped.load(Ordering::Relaxed), u64::from(n));
    // A range compaction drops what is due in its range (RocksDB compacts whole files, so it
    // may drop due records beside the range too: harmless).
    now.store(60_000, Ordering::SeqCst);
    e.compact_range(Space::Data, &key("exp-late-", 0), &key("exp-late-", n / 2))
        .expect("compact range");
    let left = present(e, Space::Data, "exp-late-", n);
    assert!(left <= n / 2, "{left}");
    e.compact(Space::Data).expect("compact");
    assert_eq!(present(e, Space::Data, "exp-late-", n), 0);
    assert_eq!(present(e, Space::Data, "forever-", n), n);
}

#[tokio::test]
async fn memory_engine_drops_expired_records_when_it_compacts() {
    let (f, now, dropped) = filter();
    let e = MemoryEngine::new();
    e.set_data_filter(Some(f));
    expired_records_go_at_compaction(&e, &now, &dropped).await;
}

#[tokio::test]
async fn rocks_engine_drops_expired_records_when_it_compacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (f, now, dropped) = filter();
    let mut cfg = RocksConfig::new(dir.path());
    cfg.data_filter = Some(f);
    let e = RocksEngine::open(&cfg).expect("open");
    expired_records_go_at_compaction(&e, &now, &dropped).await;
    // Gone for good: a reopen (WAL replay, same files) brings none back.
    drop(e);
    let e = RocksEngine::open(&cfg).expect("reopen");
    assert_eq!(present(&e, Space::Data, "exp-soon-", 200), 0);
    assert_eq!(present(&e, Space::Data, "forever-", 200), 200);
}

/// The disk space of dropped records is given back: the live data RocksDB reports shrinks by
/// about what the expired records took.
#[tokio::test]
async fn rocks_live_data_shrinks_when_expired_records_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (f, now, _) = filter();
    let mut cfg = RocksConfig::new(dir.path());
    cfg.data_filter = Some(f);
    let e = RocksEngine::open(&cfg).expect("open");
    for i in 0..4_000u32 {
        let mut b = WriteBatch::new();
        // Incompressible (xorshift): LZ4 would squeeze a pattern to nothing.
        let mut x = u64::from(i) * 0x9e37_79b9_7f4a_7c15 + 1;
        let body: Vec<u8> = (0..1_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let o = object(Version::value(body, 1, Some(10_000)));
        b.put(Space::Data, key("s", i), encode_record(&o, None));
        if i % 10 == 0 {
            b.put(Space::Data, key("keep", i), value(None, 100));
        }
        drop(e.write(b).expect("write"));
    }
    let live = |e: &RocksEngine| {
        e.stats()
            .into_iter()
            .find(|s| s.name == "rocksdb_live_sst_bytes")
            .map(|s| s.value)
            .expect("stat")
    };
    e.compact(Space::Data).expect("compact");
    let before = live(&e);
    assert!(before > 3_000_000.0, "{before}");
    let estimate = e.live_data_bytes().expect("rocks tells") as f64;
    assert!(estimate > before / 2.0, "{estimate} beside {before} of SST");
    now.store(20_000, Ordering::SeqCst);
    e.compact(Space::Data).expect("compact");
    let after = live(&e);
    assert!(after < before / 10.0, "{before} -> {after}");
    assert!((e.live_data_bytes().expect("rocks tells") as f64) < estimate / 10.0);
    assert_eq!(present(&e, Space::Data, "keep", 4_000), 400);
}
