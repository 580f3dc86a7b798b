//! `yeskv backup` and `yeskv restore` on real clusters: 100,000 keys (a sibling pair, deleted
//! keys and counters among them) written to three nodes, backed up while they run, then
//! changed (overwritten, deleted, new keys, more increments); the backup restored into a fresh
//! cluster of four nodes reads exactly as the first did at the backup: every value, the
//! siblings, the deletes, the counters, the bucket's type, and nothing written after. A backup
//! with one byte of one file changed is refused before anything is restored.

mod support;

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;

use bytes::Bytes;
use support::{flip_in_sst, request, start_cluster};
use yeskv_client::{Client, ReadOptions, WriteOptions};

const KEYS: usize = 100_000;
const TASKS: usize = 32;

fn yeskv(args: &[&str]) -> Output {
    std::process::Command::new(support::bin())
        .args(args)
        .output()
        .expect("run yeskv")
}

fn client(addr: &str) -> Arc<Client> {
    Arc::new(
        Client::builder()
            .node(format!("http://{addr}"))
            .build()
            .expect("client"),
    )
}

/// What a key reads as: its live values, sorted (empty: 404).
async fn read(c: &Client, bucket: &str, key: &str) -> Vec<Bytes> {
    let mut values: Vec<Bytes> = match c
        .get(bucket, key, &ReadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("read {bucket}/{key}: {e}"))
    {
        Some(r) => r.values().cloned().collect(),
        None => Vec::new(),
    };
    values.sort();
    values
}

/// Reads every key of `want` through `c`, TASKS at a time; returns the keys that differ.
async fn differing(c: &Arc<Client>, want: &BTreeMap<String, Vec<Bytes>>) -> Vec<String> {
    let keys: Arc<Vec<(String, Vec<Bytes>)>> =
        Arc::new(want.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (c, keys) = (c.clone(), keys.clone());
        tasks.spawn(async move {
            let mut bad = Vec::new();
            for (key, values) in keys.iter().skip(t).step_by(TASKS) {
                if read(&c, "carts", key).await != *values {
                    bad.push(key.clone());
                }
            }
            bad
        });
    }
    let mut bad = Vec::new();
    while let Some(done) = tasks.join_next().await {
        bad.extend(done.expect("reader"));
    }
    bad.sort();
    bad
}

/// Writes `value_of(i)` to `carts/k{i}` for every `i` of `keys`, TASKS at a time.
async fn write_all(c: &Arc<Client>, keys: Vec<usize>, value_of: fn(usize) -> String) {
    let keys = Arc::new(keys);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (c, keys) = (c.clone(), keys.clone());
        tasks.spawn(async move {
            for &i in keys.iter().skip(t).step_by(TASKS) {
                c.put(
                    "carts",
                    format!("k{i}"),
                    Bytes::from(value_of(i)),
                    &WriteOptions::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("write k{i}: {e}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
}

async fn delete(c: &Client, key: &str) {
    c.delete_latest(
        "carts",
        key,
        &ReadOptions::default(),
        &WriteOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("delete {key}: {e}"));
}

fn set_counter_bucket(addr: &str) {
    let r = request(
        addr,
        "PUT",
        "/v1/buckets/hits",
        &[("content-type", "application/json")],
        br#"{"datatype": "counter"}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

fn counters(addr: &str) -> Vec<i64> {
    (0..20)
        .map(|i| {
            let r = request(addr, "GET", &format!("/v1/dt/hits/h{i}"), &[], b"");
            match r.status {
                404 => 0,
                200 => r.json()["value"].as_i64().expect("a counter's value"),
                s => panic!("counter h{i}: {s} {}", r.text()),
            }
        })
        .collect()
}

fn incr_counters(addr: &str, by: i64) {
    support::wait_until(
        "the counter bucket is typed here",
        std::time::Duration::from_secs(20),
        || request(addr, "GET", "/v1/dt/hits/h0", &[], b"").status != 409,
    );
    for i in 0..20 {
        let body = format!(r#"{{"op": "incr", "by": {}}}"#, by * (i + 1));
        let r = request(
            addr,
            "POST",
            &format!("/v1/dt/hits/h{i}"),
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

#[test]
fn a_restored_cluster_reads_exactly_as_the_backed_up_one_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = start_cluster(&dir.path().join("source"), 3, &["a", "b", "c"], &[]);
    let src = source.addrs();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let c = client(&src[0]);

    // 100,000 keys, a key with two siblings, 500 deleted keys, 20 counters.
    let mut want: BTreeMap<String, Vec<Bytes>> = BTreeMap::new();
    rt.block_on(write_all(&c, (0..KEYS).collect(), |i| format!("v{i}")));
    for i in 0..KEYS {
        want.insert(format!("k{i}"), vec![Bytes::from(format!("v{i}"))]);
    }
    rt.block_on(async {
        for value in ["phone", "laptop"] {
            c.put(
                "carts",
                "both",
                Bytes::from(value),
                &WriteOptions::default(),
            )
            .await
            .expect("a blind write");
        }
        for i in (0..KEYS).step_by(200) {
            delete(&c, &format!("k{i}")).await;
        }
    });
    want.insert(
        "both".into(),
        vec![Bytes::from("laptop"), Bytes::from("phone")],
    );
    for i in (0..KEYS).step_by(200) {
        want.insert(format!("k{i}"), Vec::new());
    }
    set_counter_bucket(&src[0]);
    incr_counters(&src[1], 1);
    let counted = counters(&src[0]);
    assert_eq!(counted[19], 20);
    assert!(
        rt.block_on(differing(&c, &want)).is_empty(),
        "the source reads as written"
    );

    let backup_dir = dir.path().join("backup");
    let out = yeskv(&[
        "backup",
        "--to",
        backup_dir.to_str().expect("utf-8"),
        "--node",
        &format!("http://{}", src[2]),
    ]);
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(backup_dir.join("manifest.json")).expect("manifest.json"),
    )
    .expect("the manifest is JSON");
    assert_eq!(manifest["nodes"].as_array().map(Vec::len), Some(3));
    for node in ["n1", "n2", "n3"] {
        assert!(
            !dir.path()
                .join("source")
                .join(node)
                .join("backups")
                .join(manifest["id"].as_str().expect("id"))
                .exists(),
            "the checkpoint on {node} is deleted once downloaded"
        );
    }

    // After the backup: overwrites, deletes, new keys, more increments. None of it is restored.
    rt.block_on(async {
        write_all(&c, (1..KEYS).step_by(1000).collect(), |i| {
            format!("after{i}")
        })
        .await;
        for i in (2..KEYS).step_by(1000) {
            delete(&c, &format!("k{i}")).await;
        }
        write_all(&c, (KEYS..KEYS + 1000).collect(), |i| format!("new{i}")).await;
    });
    incr_counters(&src[0], 100);
    drop(source);

    // A fresh cluster of another size.
    let target = start_cluster(&dir.path().join("target"), 4, &["a", "b"], &[]);
    let dst = target.addrs();
    let out = yeskv(&[
        "restore",
        "--from",
        backup_dir.to_str().expect("utf-8"),
        "--node",
        &format!("http://{}", dst[1]),
    ]);
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("restored backup"), "{stdout}");

    let t = client(&dst[3]);
    for i in KEYS..KEYS + 1000 {
        want.insert(format!("k{i}"), Vec::new());
    }
    let bad = rt.block_on(differing(&t, &want));
    assert!(
        bad.is_empty(),
        "{} keys read otherwise than at the backup, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    let r = request(&dst[0], "GET", "/v1/buckets/hits", &[], b"");
    assert_eq!(r.json()["datatype"], "counter", "{}", r.text());
    assert_eq!(counters(&dst[2]), counted, "the counters as at the backup");
}

#[test]
fn a_damaged_backup_is_refused_before_anything_is_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = start_cluster(&dir.path().join("source"), 1, &["a"], &[]);
    let addr = source.addrs()[0].clone();
    set_counter_bucket(&addr);
    let value = support::incompressible(4096);
    let needle = &value[1000..1064];
    let r = request(&addr, "PUT", "/v1/kv/carts/k", &[], &value);
    assert_eq!(r.status, 204, "{}", r.text());
    let backup_dir = dir.path().join("backup");
    let out = yeskv(&[
        "backup",
        "--to",
        backup_dir.to_str().expect("utf-8"),
        "--node",
        &format!("http://{addr}"),
    ]);
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The checkpoint's SST files are the backup's node directory.
    assert_eq!(
        flip_in_sst(&backup_dir.join("n1"), needle),
        1,
        "the value is in one SST file of the backup"
    );
    drop(source);

    let target = start_cluster(&dir.path().join("target"), 1, &["a"], &[]);
    let dst = target.addrs()[0].clone();
    let out = yeskv(&[
        "restore",
        "--from",
        backup_dir.to_str().expect("utf-8"),
        "--node",
        &format!("http://{dst}"),
    ]);
    assert!(!out.status.success(), "a damaged backup is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the backup is damaged"), "{stderr}");
    let r = request(&dst, "GET", "/v1/kv/carts/k", &[], b"");
    assert_eq!(r.status, 404, "nothing restored");
    let r = request(&dst, "GET", "/v1/buckets/hits", &[], b"");
    assert_eq!(
        r.json()["datatype"],
        serde_json::Value::Null,
        "no bucket set"
    );

    // A malformed import body changes nothing either, and says why.
    let r = request(&dst, "POST", "/v1/admin/import", &[], b"\x00\x05ab");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("runs past"));
}
