//! A node on a full data disk: it starts anyway, serves reads, answers writes with a
//! `503` that names the disk, and takes writes again within seconds of space coming back. Its
//! reserve file is what lets it open for writing on a disk others filled; without the reserve
//! (already spent) it opens read-only. Real processes on a small tmpfs.
//!
//! Needs root (it mounts a tmpfs); under CI it must run, elsewhere it says it skipped.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{wait_until, Node};

/// A tmpfs of `size_mb` mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size_mb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallDisk { _dir: dir, mount })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Fills the filesystem at `dir` with the ballast file `name` until a write fails.
fn fill(dir: &Path, name: &str) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("ballast");
    let chunk = vec![0xA5u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

fn status(node: &Node) -> serde_json::Value {
    node.req("GET", "/v1/status", &[], b"").json()
}

fn put(node: &Node, key: &str, value: &str) -> support::Resp {
    node.req("PUT", &format!("/v1/kv/b/{key}"), &[], value.as_bytes())
}

#[test]
fn a_node_on_a_full_disk_starts_serves_reads_refuses_writes_and_recovers() {
    let Some(disk) = SmallDisk::mount(48) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run (as root, to mount a tmpfs)"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let cfg = disk.mount.join("node.toml");
    std::fs::write(
        &cfg,
        "[storage]\nwrite_buffer_mb = 4\nblock_cache_mb = 8\nobject_cache_mb = 0\nreserve_mb = 6\n",
    )
    .expect("config");
    let cfg = cfg.display().to_string();
    let data = disk.mount.join("data");
    let mut node = Node::start(&data, &["--config", &cfg]);
    for i in 0..40 {
        assert_eq!(put(&node, &format!("k{i}"), &format!("v{i}")).status, 204);
    }
    wait_until("the reserve is in place", Duration::from_secs(20), || {
        status(&node)["disk"]["reserve_bytes"].as_u64() >= Some(6 << 20)
    });

    // 1. Killed, the disk filled by someone else, restarted: the reserve makes room for the
    //    open, and the node takes writes.
    node.kill9();
    let ballast = fill(&disk.mount, "ballast-1");
    node.restart();
    let s = status(&node);
    assert_eq!(s["disk"]["writable"], true, "{}", s["disk"]);
    assert_eq!(
        s["disk"]["reserve_bytes"], 0,
        "the reserve was spent: {}",
        s["disk"]
    );
    assert_eq!(put(&node, "after-reserve", "x").status, 204);

    // 2. Killed again with no reserve left and the disk full: it opens read-only.
    node.kill9();
    let ballast2 = fill(&disk.mount, "ballast-2");
    node.restart();
    let s = status(&node);
    assert_eq!(s["disk"]["writable"], false, "{}", s["disk"]);
    let error = s["disk"]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("full") && error.contains(data.to_str().expect("utf-8")),
        "{error}"
    );
    assert!(
        s["disk"]["free_bytes"].as_u64() < Some(1 << 20),
        "{}",
        s["disk"]
    );
    assert!(
        s["disk"]["used_bytes"]["total"].as_u64() > Some(0),
        "{}",
        s["disk"]
    );
    assert_eq!(node.metric("yeskv_storage_read_only"), 1.0);
    // Reads are served, every acknowledged write among them.
    for i in 0..40 {
        let r = node.req("GET", &format!("/v1/kv/b/k{i}"), &[], b"");
        assert_eq!((r.status, r.text()), (200, format!("v{i}")));
    }
    assert_eq!(
        node.req("GET", "/v1/kv/b/after-reserve", &[], b"").text(),
        "x"
    );
    // Writes are refused with a 503 that names the disk.
    let refused = put(&node, "during", "y");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("full") && refused.text().contains("disk"),
        "{}",
        refused.text()
    );
    assert_eq!(node.req("GET", "/v1/health", &[], b"").status, 200);

    // 3. Space comes back: writes are taken within seconds, without a restart.
    std::fs::remove_file(&ballast2).expect("remove ballast");
    std::fs::remove_file(&ballast).expect("remove ballast");
    let freed = Instant::now();
    wait_until("a write is taken again", Duration::from_secs(20), || {
        put(&node, "after", "z").status == 204
    });
    eprintln!(
        "writes taken again {:?} after space came back",
        freed.elapsed()
    );
    wait_until(
        "the storage reports itself writable",
        Duration::from_secs(5),
        || status(&node)["disk"]["writable"] == true,
    );
    assert_eq!(node.req("GET", "/v1/kv/b/after", &[], b"").text(), "z");
    assert_eq!(node.req("GET", "/v1/kv/b/k7", &[], b"").text(), "v7");
    wait_until("the reserve is back", Duration::from_secs(20), || {
        status(&node)["disk"]["reserve_bytes"].as_u64() >= Some(6 << 20)
    });
    // A clean stop after all this keeps the data.
    assert!(node.stop().success());
    node.restart();
    assert_eq!(node.req("GET", "/v1/kv/b/after", &[], b"").text(), "z");
    assert_eq!(node.req("GET", "/v1/kv/b/k39", &[], b"").text(), "v39");
}
