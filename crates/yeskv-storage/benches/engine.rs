//! Raw engine throughput: the ceiling the HTTP path is measured against in
//! `docs/performance.md`. 100-byte values over 100k keys, like `yeskv bench`.
//!
//! Run: `cargo bench -p yeskv-storage --bench engine`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use yeskv_storage::{Engine, MemoryEngine, RocksConfig, RocksEngine, Space, SyncMode, WriteBatch};

const KEYS: u64 = 100_000;
const VALUE: [u8; 100] = [7u8; 100];

fn key(i: u64) -> Vec<u8> {
    format!("bench/key{:08}", i % KEYS).into_bytes()
}

fn put(e: &dyn Engine, rt: &tokio::runtime::Runtime, i: u64) {
    let mut b = WriteBatch::new();
    b.put(Space::Data, key(i), VALUE.to_vec());
    let d = e.write(b).expect("write");
    rt.block_on(d.wait()).expect("durable");
}

fn engines(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    for mode in [SyncMode::None, SyncMode::Group] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = RocksConfig::new(dir.path());
        cfg.sync = mode;
        let e = RocksEngine::open(&cfg).expect("open");
        for i in 0..KEYS {
            let mut b = WriteBatch::new();
            b.put(Space::Data, key(i), VALUE.to_vec());
            drop(e.write(b).expect("preload"));
        }
        let mut i = 0u64;
        group.bench_function(format!("rocksdb_put_sync_{mode}"), |b| {
            b.iter(|| {
                i = i.wrapping_add(7919);
                put(&e, &rt, i);
            })
        });
        group.bench_function(format!("rocksdb_get_sync_{mode}"), |b| {
            b.iter(|| {
                i = i.wrapping_add(7919);
                e.get(Space::Data, &key(i)).expect("get")
            })
        });
    }
    let m = MemoryEngine::new();
    let mut i = 0u64;
    group.bench_function("memory_put", |b| {
        b.iter_batched(
            || {
                i = i.wrapping_add(7919);
                i
            },
            |i| put(&m, &rt, i),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
