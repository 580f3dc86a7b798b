//! `yeskv backup` and `yeskv restore`: a whole cluster copied into a directory, and such a
//! directory merged back into any cluster (`yeskv_node::backup` says why this shape).
//!
//! A backup directory holds `manifest.json` (the cluster's members, their files with sizes and
//! SHA-256, the layout, the bucket properties, the partition count) and one directory per member with its
//! RocksDB checkpoint. `backup` asks every member for a checkpoint, downloads each file,
//! checks its hash, then deletes the checkpoints on the nodes. `restore` checks every file's
//! hash before it changes anything, sets the bucket properties, then reads the checkpoints
//! partition by partition, merges the copies of each key (one per replica) and sends them to
//! `POST /v1/admin/import` in batches, retrying a batch a node could not place.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use yeskv_node::backup::{self, BackupFile, BackupObject, NodeBackup};

use crate::cluster_cmd::{http_client, human_bytes, send_bytes, HttpClient};

/// The manifest's format version.
const MANIFEST_FORMAT: u32 = 1;
/// An import batch is cut at this many bytes...
const BATCH_BYTES: usize = 4 << 20;
/// ... or this many objects.
const BATCH_OBJECTS: usize = 2_000;
/// Attempts per import batch before the restore fails.
const IMPORT_ATTEMPTS: u32 = 8;

/// Flags of `yeskv backup`.
#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Directory to write the backup into (created; must be empty or not exist).
    #[arg(long)]
    to: PathBuf,
    /// URL of a node of the cluster; every member is backed up.
    #[arg(long, default_value = "http://127.0.0.1:8081", env = "YESKV_NODE")]
    node: String,
}

/// Flags of `yeskv restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// Backup directory (written by `yeskv backup`).
    #[arg(long)]
    from: PathBuf,
    /// URL of a node of the cluster to restore into (any size, any layout).
    #[arg(long, default_value = "http://127.0.0.1:8081", env = "YESKV_NODE")]
    node: String,
    /// Import batches in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
}

/// `manifest.json` of a backup directory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: u32,
    id: String,
    created_ms: u64,
    partition_count: u32,
    /// Bucket properties as the first member answered them (`name`, `name_hex`, `props`).
    buckets: Vec<serde_json::Value>,
    /// The layout (`GET /v1/ring`) when the backup began: members, zones, regions, replication,
    /// preference lists. A record for the operator; a restore places keys by the layout of the
    /// cluster it restores into.
    layout: serde_json::Value,
    nodes: Vec<NodeEntry>,
}

/// One member's checkpoint in a backup directory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    node: String,
    zone: String,
    region: String,
    layout_version: u64,
    /// Its directory, relative to the backup's.
    dir: String,
    files: Vec<BackupFile>,
}

/// Progress on stderr: a bar on a terminal, a line per step otherwise.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(length: u64, unit: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(length);
        let template = format!(
            "[{{elapsed_precise}}] [{{bar:30.cyan/blue}}] {{pos}}/{{len}} {unit} eta {{eta}} {{msg}}"
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(Some(bar))
    }
    fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
    fn say(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.set_message(line.to_string()),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// `yeskv backup`.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    if args.to.exists()
        && std::fs::read_dir(&args.to)
            .with_context(|| format!("reading {}", args.to.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty: back up into a new directory",
            args.to.display()
        );
    }
    std::fs::create_dir_all(&args.to).with_context(|| format!("creating {}", args.to.display()))?;
    let scheme = if args.node.trim().starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let status = crate::cluster_cmd::call(&args.node, "GET", "/v1/status", None)
        .await
        .context("asking the node for the cluster's members")?;
    let mut members = Vec::new();
    for m in status["members"].as_array().into_iter().flatten() {
        let id = m["id"].as_str().unwrap_or("?").to_string();
        let Some(http) = m["http"].as_str() else {
            anyhow::bail!("member {id} has no HTTP address in the layout");
        };
        if m["status"] != "up" {
            anyhow::bail!(
                "member {id} is {}: a backup copies every member; bring it up (or remove it \
                 with `yeskv cluster leave`) first",
                m["status"].as_str().unwrap_or("not up")
            );
        }
        members.push((id, format!("{scheme}://{http}")));
    }
    if members.is_empty() {
        anyhow::bail!("the node names no members: is it part of a cluster?");
    }
    let layout = crate::cluster_cmd::call(&args.node, "GET", "/v1/ring", None)
        .await
        .context("asking the node for the layout")?;
    let id = format!("yeskv-{}", now_ms());
    let client = http_client(crate::ca_file(), Duration::from_secs(10))?;
    let mut nodes = Vec::new();
    let mut buckets = None;
    let mut partition_count = 0;
    // Take every checkpoint first (close together in time), then download.
    for (member, url) in &members {
        let taken = crate::cluster_cmd::call_within(
            url,
            "POST",
            &format!("/v1/admin/backups/{id}"),
            None,
            Duration::from_secs(600),
        )
        .await
        .with_context(|| format!("taking a checkpoint on {member}"))?;
        let files: Vec<BackupFile> = serde_json::from_value(taken["files"].clone())
            .with_context(|| format!("{member} listed its checkpoint's files oddly"))?;
        partition_count = taken["partition_count"].as_u64().unwrap_or(0) as u32;
        buckets.get_or_insert_with(|| taken["buckets"].as_array().cloned().unwrap_or_default());
        eprintln!(
            "checkpoint on {member}: {} files, {}",
            files.len(),
            human_bytes(files.iter().map(|f| f.bytes).sum())
        );
        nodes.push((
            url.clone(),
            NodeEntry {
                node: member.clone(),
                zone: taken["zone"].as_str().unwrap_or("").to_string(),
                region: taken["region"].as_str().unwrap_or("").to_string(),
                layout_version: taken["layout_version"].as_u64().unwrap_or(0),
                dir: member.clone(),
                files,
            },
        ));
    }
    let total: u64 = nodes
        .iter()
        .flat_map(|(_, n)| n.files.iter().map(|f| f.bytes))
        .sum();
    let progress = Progress::new(total, "bytes");
    let mut result = Ok(());
    for (url, entry) in &nodes {
        if result.is_err() {
            break;
        }
        result = download_node(&client, url, &id, entry, &args.to, &progress).await;
    }
    progress.finish();
    // The checkpoints hold hard links to SST files the nodes would otherwise delete: remove
    // them whatever happened.
    for (url, entry) in &nodes {
        if let Err(e) =
            crate::cluster_cmd::call(url, "DELETE", &format!("/v1/admin/backups/{id}"), None).await
        {
            eprintln!(
                "warning: could not delete checkpoint {id} on {}: {e:#}",
                entry.node
            );
        }
    }
    result?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        created_ms: now_ms(),
        partition_count,
        buckets: buckets.unwrap_or_default(),
        layout,
        nodes: nodes.into_iter().map(|(_, n)| n).collect(),
    };
    let path = args.to.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "backup {id}: {} members, {} in {}",
        manifest.nodes.len(),
        human_bytes(total),
        args.to.display()
    );
    Ok(())
}

/// Downloads every file of `entry`'s checkpoint into `to/<dir>`, checking each hash.
async fn download_node(
    client: &HttpClient,
    url: &str,
    id: &str,
    entry: &NodeEntry,
    to: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;
    let dir = to.join(&entry.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    progress.say(&format!("downloading {}", entry.node));
    for f in &entry.files {
        let uri: hyper::Uri = format!(
            "{}/v1/admin/backups/{id}/{}",
            url.trim_end_matches('/'),
            f.name
        )
        .parse()?;
        let mut req = hyper::Request::get(uri);
        if let Some(key) = crate::api_key() {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let resp = client
            .request(req.body(http_body_util::Full::new(bytes::Bytes::new()))?)
            .await
            .with_context(|| format!("downloading {} of {}", f.name, entry.node))?;
        if !resp.status().is_success() {
            anyhow::bail!(
                "{} answered {} for {}",
                entry.node,
                resp.status().as_u16(),
                f.name
            );
        }
        let path = dir.join(&f.name);
        let mut out = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.with_context(|| format!("downloading {}", f.name))?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data).await?;
                progress.inc(data.len() as u64);
            }
        }
        out.sync_all().await?;
        let (bytes, sha256) = backup::hash_file(&path)?;
        if (bytes, sha256.as_str()) != (f.bytes, f.sha256.as_str()) {
            anyhow::bail!(
                "{} of {} arrived as {bytes} bytes with SHA-256 {sha256}, listed as {} bytes \
                 with {}",
                f.name,
                entry.node,
                f.bytes,
                f.sha256
            );
        }
    }
    Ok(())
}

/// `yeskv restore`.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let path = args.from.join("manifest.json");
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a yeskv backup manifest", path.display()))?;
    if manifest.format != MANIFEST_FORMAT {
        anyhow::bail!(
            "{} is of backup format {}; this yeskv reads format {MANIFEST_FORMAT}",
            path.display(),
            manifest.format
        );
    }
    if !manifest.partition_count.is_power_of_two() || manifest.partition_count > 1 << 16 {
        anyhow::bail!(
            "the manifest's partition count {} is not one",
            manifest.partition_count
        );
    }
    // 1. Every file as the backup listed it, before anything changes.
    let total: u64 = manifest
        .nodes
        .iter()
        .flat_map(|n| n.files.iter().map(|f| f.bytes))
        .sum();
    eprintln!("checking {} of files", human_bytes(total));
    for n in &manifest.nodes {
        let dir = node_dir(&args.from, n)?;
        for f in &n.files {
            let file = dir.join(&f.name);
            let (bytes, sha256) =
                backup::hash_file(&file).with_context(|| format!("reading {}", file.display()))?;
            if (bytes, sha256.as_str()) != (f.bytes, f.sha256.as_str()) {
                anyhow::bail!(
                    "{} is {bytes} bytes with SHA-256 {sha256}, but the backup listed {} bytes \
                     with {}: the backup is damaged; nothing was restored",
                    file.display(),
                    f.bytes,
                    f.sha256
                );
            }
        }
    }
    let readers = manifest
        .nodes
        .iter()
        .map(|n| NodeBackup::open(&node_dir(&args.from, n)?).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // 2. The buckets' properties, so typed and expiring buckets are typed before their keys
    //    arrive.
    for b in &manifest.buckets {
        let name = b["name_hex"]
            .as_str()
            .and_then(unhex)
            .context("a bucket of the manifest has no name_hex")?;
        let path = format!("/v1/buckets/{}", percent_all(&name));
        crate::cluster_cmd::call(&args.node, "PUT", &path, Some(b["props"].clone()))
            .await
            .with_context(|| {
                format!(
                    "setting the properties of bucket {}",
                    String::from_utf8_lossy(&name)
                )
            })?;
    }
    // 3. The objects: a blocking reader cuts batches, `parallel` senders import them.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<BackupObject>>(args.parallel as usize);
    let partitions = manifest.partition_count;
    let progress = std::sync::Arc::new(Progress::new(u64::from(partitions) + 1, "partitions"));
    let reader_progress = progress.clone();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut read = 0u64;
        let mut batch = Batch::default();
        for p in 0..partitions {
            let mut copies = Vec::new();
            for r in &readers {
                read += r.partition(p as u16, |o| copies.push(o))?;
            }
            for o in backup::merge_copies(copies)? {
                if let Some(full) = batch.push(o) {
                    tx.blocking_send(full).ok().context("the import stopped")?;
                }
            }
            reader_progress.inc(1);
        }
        let mut held = Vec::new();
        for r in &readers {
            read += r.hints(|o| held.push(o))?;
        }
        for o in backup::merge_copies(held)? {
            if let Some(full) = batch.push(o) {
                tx.blocking_send(full).ok().context("the import stopped")?;
            }
        }
        if !batch.objects.is_empty() {
            tx.blocking_send(batch.objects)
                .ok()
                .context("the import stopped")?;
        }
        reader_progress.inc(1);
        Ok(read)
    });
    let client = http_client(crate::ca_file(), Duration::from_secs(10))?;
    let mut senders = tokio::task::JoinSet::new();
    let mut imported = 0u64;
    let mut failure = None;
    loop {
        tokio::select! {
            batch = rx.recv(), if senders.len() < args.parallel as usize && failure.is_none() => {
                let Some(batch) = batch else { break };
                let (client, node) = (client.clone(), args.node.clone());
                senders.spawn(async move { import(&client, &node, batch).await });
            }
            Some(done) = senders.join_next(), if !senders.is_empty() => {
                match done.context("an import task failed")? {
                    Ok(n) => imported += n,
                    Err(e) => { failure.get_or_insert(e); }
                }
            }
            else => break,
        }
        if failure.is_some() {
            break;
        }
    }
    drop(rx);
    while let Some(done) = senders.join_next().await {
        match done.context("an import task failed")? {
            Ok(n) => imported += n,
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    progress.finish();
    let read = reader.await.context("the backup reader failed")?;
    if let Some(e) = failure {
        return Err(e.context(format!(
            "restore stopped after {imported} keys (safe to run again: a restore merges)"
        )));
    }
    let read = read?;
    println!(
        "restored backup {}: {imported} keys ({read} copies read from {} members) into {}",
        manifest.id,
        manifest.nodes.len(),
        args.node
    );
    Ok(())
}

/// Objects gathered for one import request.
#[derive(Default)]
struct Batch {
    objects: Vec<BackupObject>,
    bytes: usize,
}

impl Batch {
    /// Adds `o`; returns the batch to send when it is full.
    fn push(&mut self, o: BackupObject) -> Option<Vec<BackupObject>> {
        self.bytes += backup::import_len(&o);
        self.objects.push(o);
        if self.bytes >= BATCH_BYTES || self.objects.len() >= BATCH_OBJECTS {
            self.bytes = 0;
            return Some(std::mem::take(&mut self.objects));
        }
        None
    }
}

/// Sends one batch to `POST /v1/admin/import`, retrying what may pass later (a node down, a
/// layout changing); returns the keys imported.
async fn import(client: &HttpClient, node: &str, batch: Vec<BackupObject>) -> anyhow::Result<u64> {
    let body = bytes::Bytes::from(backup::encode_import(&batch));
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=IMPORT_ATTEMPTS {
        let sent = send_bytes(
            client,
            crate::api_key(),
            node,
            "POST",
            "/v1/admin/import",
            body.clone(),
            "application/octet-stream",
            Duration::from_secs(120),
        )
        .await;
        let reason = match sent {
            Ok((status, answer)) if status.is_success() => {
                let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                return Ok(v["imported"].as_u64().unwrap_or(0));
            }
            Ok((status, answer)) => {
                let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                let reason = format!(
                    "{node} said {}: {}",
                    status.as_u16(),
                    v["error"].as_str().unwrap_or("(no reason)")
                );
                if status != hyper::StatusCode::SERVICE_UNAVAILABLE {
                    anyhow::bail!(reason);
                }
                reason
            }
            Err(e) => format!("{e:#}"),
        };
        if attempt == IMPORT_ATTEMPTS {
            anyhow::bail!("an import batch failed {IMPORT_ATTEMPTS} times, last: {reason}");
        }
        tracing::warn!(%reason, attempt, "import batch failed; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    unreachable!("the last attempt returns")
}

/// The directory of a member's checkpoint, refusing names that leave the backup directory.
fn node_dir(from: &Path, n: &NodeEntry) -> anyhow::Result<PathBuf> {
    backup::check_id(&n.dir)
        .map_err(|_| anyhow::anyhow!("the manifest names a member directory {:?}", n.dir))?;
    Ok(from.join(&n.dir))
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> u64 {
    use yeskv_node::clock::Clock as _;
    yeskv_node::clock::SystemClock.now_ms()
}

/// `bytes` percent-encoded, every byte (a path segment of any name).
fn percent_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The bytes of lowercase or uppercase hex `s`.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_names_encode() {
        let name = b"carts/\x00\xff ok".to_vec();
        assert_eq!(unhex(&backup::hex(&name)), Some(name.clone()));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(percent_all(b"a/"), "%61%2F");
    }

    #[test]
    fn batches_are_cut_by_count() {
        let mut b = Batch::default();
        let o = BackupObject {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            record: vec![0; 10],
        };
        let full = (0..BATCH_OBJECTS).filter_map(|_| b.push(o.clone())).count();
        assert_eq!(full, 1);
        assert!(b.objects.is_empty());
    }
}
