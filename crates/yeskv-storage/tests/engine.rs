//! Engine contract tests, run against both engines: batches are atomic and visible, scans are
//! ordered and bounded, compaction drops nothing, and RocksDB data survives reopen.

use yeskv_core::codec::encode_record;
use yeskv_core::Object;
use yeskv_storage::{Engine, MemoryEngine, RocksConfig, RocksEngine, Space, SyncMode, WriteBatch};

async fn contract(e: &dyn Engine) {
    let mut b = WriteBatch::new();
    b.put(Space::Data, b"a".to_vec(), b"1".to_vec())
        .put(Space::Data, b"b".to_vec(), b"2".to_vec())
        .put(Space::Meta, b"a".to_vec(), b"meta".to_vec());
    e.write(b).expect("write").wait().await.expect("durable");
    assert_eq!(e.get(Space::Data, b"a").expect("get"), Some(b"1".to_vec()));
    assert_eq!(
        e.get(Space::Meta, b"a").expect("get"),
        Some(b"meta".to_vec())
    );
    assert_eq!(e.get(Space::Hints, b"a").expect("get"), None);
    let rows = e.scan(Space::Data, b"a", b"c", 10).expect("scan");
    assert_eq!(rows.len(), 2);
    assert_eq!(e.scan(Space::Data, b"a", b"c", 1).expect("scan").len(), 1);
    let mut d = WriteBatch::new();
    d.delete(Space::Data, b"a".to_vec());
    e.write(d).expect("write").wait().await.expect("durable");
    assert_eq!(e.get(Space::Data, b"a").expect("get"), None);

    // Without a data filter, compaction keeps every record, whatever its header's (unused)
    // reap time says (what a filter drops: `expiry_filter.rs`).
    let obj = Object::new();
    let mut r = WriteBatch::new();
    r.put(Space::Data, b"old".to_vec(), encode_record(&obj, Some(1)))
        .put(Space::Data, b"never".to_vec(), encode_record(&obj, None));
    e.write(r).expect("write").wait().await.expect("durable");
    e.compact(Space::Data).expect("compact");
    assert!(e.get(Space::Data, b"old").expect("get").is_some());
    assert!(e.get(Space::Data, b"never").expect("get").is_some());
}

#[tokio::test]
async fn memory_engine_contract() {
    contract(&MemoryEngine::new()).await;
}

#[tokio::test]
async fn rocks_engine_contract_every_sync_mode() {
    for mode in [SyncMode::Always, SyncMode::Group, SyncMode::None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = RocksConfig::new(dir.path());
        cfg.sync = mode;
        let e = RocksEngine::open(&cfg).expect("open");
        contract(&e).await;
        drop(e);
        let e = RocksEngine::open(&cfg).expect("reopen");
        assert_eq!(e.get(Space::Data, b"b").expect("get"), Some(b"2".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = RocksConfig::new(dir.path());
    cfg.sync = SyncMode::Group;
    let e = std::sync::Arc::new(RocksEngine::open(&cfg).expect("open"));
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u32 {
                let mut b = WriteBatch::new();
                b.put(Space::Data, format!("{t}-{i}").into_bytes(), vec![1; 100]);
                e.write(b).expect("write").wait().await.expect("durable");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let stat = |n: &str| {
        e.stats()
            .into_iter()
            .find(|s| s.name == n)
            .map(|s| s.value)
            .unwrap_or(0.0)
    };
    let writes = stat("group_commit_writes_total");
    let fsyncs = stat("group_commit_fsyncs_total");
    assert_eq!(writes, 1600.0);
    assert!(
        fsyncs >= 1.0 && fsyncs < writes,
        "fsyncs {fsyncs} for {writes} writes"
    );
    // The committer's fsyncs are real WAL syncs, as RocksDB counts them.
    assert!(stat("rocksdb_wal_syncs_total") >= fsyncs);
}

/// A checkpoint holds every write acknowledged before it and nothing after, in every space, and
/// reads back read-only while the engine goes on; the in-memory engine refuses one.
#[tokio::test]
async fn checkpoint_is_a_point_in_time_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = RocksEngine::open(&RocksConfig::new(dir.path().join("db"))).expect("open");
    let mut b = WriteBatch::new();
    for i in 0..100u32 {
        b.put(
            Space::Data,
            format!("k{i:03}").into_bytes(),
            i.to_be_bytes().to_vec(),
        );
    }
    b.put(Space::Hints, b"h".to_vec(), b"hint".to_vec());
    e.write(b).expect("write").wait().await.expect("durable");
    let copy = dir.path().join("copy");
    e.checkpoint(&copy).expect("checkpoint");
    let mut after = WriteBatch::new();
    after
        .put(Space::Data, b"k999".to_vec(), b"later".to_vec())
        .delete(Space::Data, b"k000".to_vec());
    e.write(after)
        .expect("write")
        .wait()
        .await
        .expect("durable");

    let mut seen = Vec::new();
    let reader = yeskv_storage::CheckpointReader::open(&copy).expect("open the copy");
    let n = reader
        .scan(Space::Data, b"", None, |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .expect("read");
    assert_eq!(n, 100);
    assert_eq!(seen[0], (b"k000".to_vec(), 0u32.to_be_bytes().to_vec()));
    assert!(seen.iter().all(|(k, _)| k != b"k999"));
    let mut ranged = Vec::new();
    let in_range = reader
        .scan(Space::Data, b"k010", Some(b"k020"), |k, _| {
            ranged.push(k.to_vec());
            Ok(())
        })
        .expect("read a range");
    assert_eq!(in_range, 10);
    assert_eq!(
        (ranged[0].as_slice(), ranged[9].as_slice()),
        (&b"k010"[..], &b"k019"[..])
    );
    let hints = reader
        .scan(Space::Hints, b"", None, |k, v| {
            assert_eq!((k, v), (&b"h"[..], &b"hint"[..]));
            Ok(())
        })
        .expect("read hints");
    assert_eq!(hints, 1);
    assert!(
        e.checkpoint(&copy).is_err(),
        "a checkpoint into an existing directory is refused"
    );
    assert!(MemoryEngine::new().checkpoint(&copy).is_err());
}
