//! The cluster under test: real `yeskv server` processes, one per network namespace.
//!
//! `scripts/chaos` made the namespaces (`{netns_prefix}{i}`, node `n{i}` at `{ip_prefix}.{10+i}`
//! on a bridge in the hub namespace this runner lives in); this module writes each node's TOML
//! config, starts the node inside its namespace with `ip netns exec` (which execs, so the child's
//! pid *is* the server's), with libfaketime preloaded and reading its offset from a per-node file
//! (the clock-skew fault rewrites that file), and forms the cluster the operator's way: `n1`
//! creates it, the others start with `--seed`, then a staged join and commit on `n1`.
//!
//! With regions (`--regions R`), node `n{i}` is in region `r{(i - 1) % R + 1}` (round-robin)
//! and, inside it, in zone `z{((i - 1) / R) % ZONES}`, so that a region's nodes are in zones of
//! their own and placement inside the region stays zone-aware; the forming commit also stages
//! replicas per region, `min(nodes in the region, 2)` in each (`POST /v1/cluster/replication`,
//! as `yeskv dev --regions` does). The nodes' default quorum is then `local_quorum`.
//!
//! Invariants: a node is in exactly one of the states running / paused (SIGSTOP) / killed; the
//! runner only signals its own children; every child is in its own process group (a Ctrl-C on
//! the terminal reaches the runner, which stops them) and is killed when its handle drops.
//! A child that exits without the runner having killed it is an *unexpected exit* (a crash):
//! [`Cluster::reap_unexpected`] reports it, and the run counts it as a failure.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::process::{Child, Command};

use crate::http::{self, JsonBody as _};

/// HTTP port every node listens on (each node has its own address).
pub const HTTP_PORT: u16 = 8080;
/// Peer (internode RPC and gossip) port of every node.
pub const PEER_PORT: u16 = 7080;
/// Zones the nodes are spread over (`n{i}` is in zone `z{i % ZONES}`; with regions, zones
/// inside each region, module docs).
pub const ZONES: usize = 3;
/// Most replicas per region staged with regions (fewer in a region with fewer nodes).
pub const REPLICAS_PER_REGION_MAX: usize = 2;
/// How long a node may take to answer `/v1/health` after a start.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one runner call to a node (status, ring, admin).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how the nodes run (from the runner's flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Number of nodes.
    pub nodes: usize,
    /// Regions the nodes are spread over (0: none, one implicit region).
    pub regions: usize,
    /// Network namespace of node `i` (1-based) is `{netns_prefix}{i}`.
    pub netns_prefix: String,
    /// Node `i` listens on `{ip_prefix}.{10 + i}`.
    pub ip_prefix: String,
    /// The `yeskv` binary.
    pub yeskv_bin: PathBuf,
    /// The previous release's `yeskv` binary, for the `old-release` fault (none: no such faults).
    pub previous_bin: Option<PathBuf>,
    /// libfaketime (preloaded into every node).
    pub faketime_lib: PathBuf,
    /// Parent of the nodes' data directories (`{data_root}/n{i}`).
    pub data_root: PathBuf,
    /// Configs and faketime files.
    pub work_dir: PathBuf,
    /// Node logs (`n{i}.log`, appended across restarts).
    pub log_dir: PathBuf,
    /// Run the nodes as production does (`--secure`): TLS, API keys, a cluster keyring.
    pub secure: bool,
}

/// One node's fixed facts.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// `n{i}`.
    pub id: String,
    /// Its namespace.
    pub netns: String,
    /// Its address.
    pub ip: String,
    /// `ip:HTTP_PORT`.
    pub http: String,
    /// Its zone.
    pub zone: String,
    /// Its region, with regions.
    pub region: Option<String>,
    /// Its data directory.
    pub data_dir: PathBuf,
    config: PathBuf,
    /// The file libfaketime reads the node's clock offset from.
    pub faketime_file: PathBuf,
    log: PathBuf,
}

/// The files of a `--secure` run, under `{work_dir}/tls` and `{work_dir}`: the cluster CA, a
/// certificate per node naming its address, the keyring and the admin key (which the first
/// node to have a layout registers, and the runner's calls and workloads carry).
struct SecureFiles {
    tls: PathBuf,
    keyring: PathBuf,
    admin_key: PathBuf,
}

impl SecureFiles {
    fn create(settings: &Settings) -> anyhow::Result<SecureFiles> {
        let tls = settings.work_dir.join("tls");
        let keyring = settings.work_dir.join("cluster.keys");
        let admin_key = settings.work_dir.join("admin.key");
        // Fresh material for each run (the commands refuse to overwrite).
        let _ = std::fs::remove_dir_all(&tls);
        for file in [&keyring, &admin_key] {
            let _ = std::fs::remove_file(file);
        }
        let yeskv = |args: &[&std::ffi::OsStr]| -> anyhow::Result<()> {
            let out = std::process::Command::new(&settings.yeskv_bin)
                .args(args)
                .output()
                .with_context(|| format!("running {}", settings.yeskv_bin.display()))?;
            if !out.status.success() {
                bail!(
                    "yeskv {:?}: {}",
                    args,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        yeskv(&[
            "cert".as_ref(),
            "init".as_ref(),
            "--dir".as_ref(),
            tls.as_os_str(),
        ])?;
        for i in 1..=settings.nodes {
            let ip = format!("{}.{}", settings.ip_prefix, 10 + i);
            let id = format!("n{i}");
            yeskv(&[
                "cert".as_ref(),
                "issue".as_ref(),
                "--ca-dir".as_ref(),
                tls.as_os_str(),
                "--node-id".as_ref(),
                id.as_ref(),
                "--host".as_ref(),
                ip.as_ref(),
                "--out".as_ref(),
                tls.join(&id).as_os_str(),
            ])?;
        }
        yeskv(&[
            "keyring".as_ref(),
            "new".as_ref(),
            "--out".as_ref(),
            keyring.as_os_str(),
        ])?;
        let key = {
            use rand::RngCore as _;
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("ykv_chaos_{hex}")
        };
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&admin_key)
                .with_context(|| format!("creating {}", admin_key.display()))?;
            writeln!(file, "{key}")?;
        }
        crate::http::set_secure(tls.join("ca.pem"), key)?;
        Ok(SecureFiles {
            tls,
            keyring,
            admin_key,
        })
    }

    /// Node `id`'s `[security]` keys.
    fn section(&self, id: &str) -> String {
        let node = self.tls.join(id);
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\nauth = true\n\
             cluster_keys = \"{}\"\nadmin_key_file = \"{}\"\n",
            node.join("node.pem").display(),
            node.join("node.key").display(),
            self.tls.join("ca.pem").display(),
            self.keyring.display(),
            self.admin_key.display()
        )
    }
}

/// A node process and its state.
pub struct Node {
    /// Fixed facts.
    pub spec: NodeSpec,
    child: Option<Child>,
    paused: bool,
    /// Times the node was started.
    pub starts: u32,
    /// Runs (from its next start) the previous release's binary (the `old-release` fault).
    pub on_previous: bool,
}

/// All nodes.
pub struct Cluster {
    /// Flags.
    pub settings: Settings,
    /// Nodes in id order (`nodes[0]` is `n1`).
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Writes every node's config and faketime file (offset `+0`); starts nothing.
    pub fn prepare(settings: Settings) -> anyhow::Result<Cluster> {
        for dir in [&settings.work_dir, &settings.log_dir, &settings.data_root] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let seed = format!("{}.{}:{PEER_PORT}", settings.ip_prefix, 11);
        let secure = if settings.secure {
            Some(SecureFiles::create(&settings)?)
        } else {
            None
        };
        let mut nodes = Vec::new();
        for i in 1..=settings.nodes {
            let id = format!("n{i}");
            let ip = format!("{}.{}", settings.ip_prefix, 10 + i);
            let (region, zone) = place(i, settings.regions);
            let spec = NodeSpec {
                netns: format!("{}{i}", settings.netns_prefix),
                http: format!("{ip}:{HTTP_PORT}"),
                zone,
                region,
                data_dir: settings.data_root.join(&id),
                config: settings.work_dir.join(format!("{id}.toml")),
                faketime_file: settings.work_dir.join(format!("{id}.faketime")),
                log: settings.log_dir.join(format!("{id}.log")),
                id,
                ip,
            };
            std::fs::create_dir_all(&spec.data_dir)?;
            let seeds = if i == 1 {
                String::new()
            } else {
                format!("\"{seed}\"")
            };
            let region = spec
                .region
                .as_ref()
                .map_or(String::new(), |r| format!("region = \"{r}\"\n"));
            let security = match &secure {
                Some(files) => files.section(&spec.id),
                // The namespaces' addresses are not loopback: a node refuses them without TLS,
                // keys and a keyring unless told it is on a network it trusts (the runner's own
                // namespaces).
                None => "insecure = true\n".to_string(),
            };
            let config = format!(
                r#"# written by yeskv-chaos
cluster_name = "chaos"
node_id = "{id}"
data_dir = "{data}"
http = "{http}"
peer = "{ip}:{PEER_PORT}"
seeds = [{seeds}]
zone = "{zone}"
{region}n = 3
r = 2
w = 2
partitions = 64
log = "info"

[storage]
sync = "group"
block_cache_mb = 16
# Small memtables: the full-disk fault's loop filesystem is small, and RocksDB preallocates
# about a memtable's worth of WAL.
write_buffer_mb = 4
# The reserve that lets the node open again on its full disk.
reserve_mb = 8

# Tombstones are reaped within the run (the default grace is an hour), so that the reaper runs
# under the faults too: with skewed clocks, one primary reaps while another still holds the
# tombstone.
[ttl]
reap_grace_secs = 5

[repair]
reap_interval_ms = 1000

[chaos]
enabled = true

[security]
{security}"#,
                id = spec.id,
                data = spec.data_dir.display(),
                http = spec.http,
                zone = spec.zone,
                ip = spec.ip,
            );
            std::fs::write(&spec.config, config)?;
            std::fs::write(&spec.faketime_file, "+0\n")?;
            nodes.push(Node {
                spec,
                child: None,
                paused: false,
                starts: 0,
                on_previous: false,
            });
        }
        Ok(Cluster { settings, nodes })
    }

    /// Node count.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Starts node `i` (0-based) in its namespace; does not wait for it.
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            bail!("{} is already running", node.spec.id);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.spec.log)
            .with_context(|| format!("opening {}", node.spec.log.display()))?;
        let log2 = log.try_clone()?;
        let program = match (&self.settings.previous_bin, node.on_previous) {
            (Some(previous), true) => previous,
            _ => &self.settings.yeskv_bin,
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &node.spec.netns])
            .arg(program)
            .arg("server")
            .arg("--config")
            .arg(&node.spec.config)
            .env("LD_PRELOAD", &self.settings.faketime_lib)
            .env("FAKETIME_TIMESTAMP_FILE", &node.spec.faketime_file)
            // Re-read the offset file every second; leave CLOCK_MONOTONIC alone so tokio's
            // timers, Instant and the failure detector keep working.
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", node.spec.id))?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// Starts node `i` and waits until it answers `/v1/health` with 200.
    pub async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_healthy(i, START_TIMEOUT).await
    }

    /// Waits until node `i` answers `/v1/health` with 200; fails if it exits meanwhile.
    pub async fn wait_healthy(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.nodes[i].child = None;
                bail!(
                    "{} exited during start-up ({status})",
                    self.nodes[i].spec.id
                );
            }
            if healthy(&self.nodes[i].spec.http).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not healthy within {timeout:?}", self.nodes[i].spec.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether node `i` has a process (running or paused).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// `kill -9` node `i` and reap it.
    pub async fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", node.spec.id))?;
        child.start_kill()?;
        child.wait().await?;
        node.paused = false;
        Ok(())
    }

    /// SIGTERM node `i` and wait for it to exit (it drains, as in a rolling upgrade); after
    /// `STOP_TIMEOUT` it is killed.
    pub async fn terminate(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", node.spec.id))?;
        if let Some(pid) = child.id() {
            // `ip netns exec` runs the node in its place (exec), so the pid is the node's.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            child.start_kill()?;
            child.wait().await?;
        }
        node.paused = false;
        Ok(())
    }

    /// SIGSTOP (`pause = true`) or SIGCONT node `i`.
    pub async fn signal_pause(&mut self, i: usize, pause: bool) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let pid = node
            .child
            .as_ref()
            .and_then(|c| c.id())
            .ok_or_else(|| anyhow!("{} is not running", node.spec.id))?;
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill {signal} {pid} failed ({status})");
        }
        node.paused = pause;
        Ok(())
    }

    /// Whether node `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Children that exited although the runner did not kill them (crashes), reaped.
    pub fn reap_unexpected(&mut self) -> Vec<(usize, ExitStatus)> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                node.child = None;
                node.paused = false;
                out.push((i, status));
            }
        }
        out
    }

    /// Like [`Cluster::reap_unexpected`] for node `i` alone.
    pub fn reap_unexpected_one(&mut self, i: usize) -> Option<ExitStatus> {
        let node = &mut self.nodes[i];
        let status = node
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())?;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    /// Replicas per region to stage (`{"r1": 2, ...}`), with regions.
    pub fn replication(&self) -> Option<serde_json::Value> {
        replication(self.settings.nodes, self.settings.regions)
    }

    /// The indexes of the nodes in `region`.
    pub fn in_region(&self, region: &str) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.nodes[i].spec.region.as_deref() == Some(region))
            .collect()
    }

    /// The region names, in order (empty without regions).
    pub fn regions(&self) -> Vec<String> {
        (1..=self.settings.regions)
            .map(|r| format!("r{r}"))
            .collect()
    }

    /// Forms the cluster: stages a join of every other node on `n1` (and, with regions, the
    /// replicas per region), commits, and waits until every node applied the layout, sees
    /// every member up and no partition is still moving to its new holders. Returns the layout
    /// version.
    pub async fn form(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let first = &self.nodes[0].spec.http;
        let joiners: Vec<&str> = self.nodes[1..].iter().map(|n| n.spec.id.as_str()).collect();
        let mut version = 1;
        if !joiners.is_empty() {
            let body = serde_json::json!({ "nodes": joiners }).to_string();
            // The newcomers must be in n1's gossip view first.
            loop {
                match http::request(
                    first,
                    "POST",
                    "/v1/cluster/join",
                    body.as_bytes(),
                    CALL_TIMEOUT,
                )
                .await
                {
                    Ok(r) if r.status == 200 => break,
                    other if Instant::now() > deadline => bail!("staging the join: {other:?}"),
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            if let Some(replication) = self.replication() {
                let body = replication.to_string();
                let r = http::request(
                    first,
                    "POST",
                    "/v1/cluster/replication",
                    body.as_bytes(),
                    CALL_TIMEOUT,
                )
                .await?;
                if r.status != 200 {
                    bail!(
                        "staging replicas per region {body}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
            }
            let commit =
                http::request(first, "POST", "/v1/cluster/commit", b"", CALL_TIMEOUT).await?;
            if commit.status != 200 {
                bail!(
                    "commit: {} {}",
                    commit.status,
                    String::from_utf8_lossy(&commit.body)
                );
            }
            version = commit.json()?["version"].as_u64().unwrap_or(version);
        }
        for i in 0..self.len() {
            loop {
                let applied = ring_version(&self.nodes[i].spec.http)
                    .await
                    .is_some_and(|v| v >= version);
                if applied && self.sees_all_up(i).await && self.transfers_done(i).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} did not apply layout {version}", self.nodes[i].spec.id);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(version)
    }

    /// Node `i`'s `/v1/status` document, if it answers `200` with JSON.
    pub async fn status(&self, i: usize) -> Option<serde_json::Value> {
        let r = http::request(
            &self.nodes[i].spec.http,
            "GET",
            "/v1/status",
            b"",
            CALL_TIMEOUT,
        )
        .await
        .ok()?;
        if r.status != 200 {
            return None;
        }
        r.json().ok()
    }

    /// The value of the unlabelled metric `name` in node `i`'s `/metrics`, if it answers.
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        metric(&self.nodes[i].spec.http, name, CALL_TIMEOUT).await
    }

    /// Sets `bucket`'s properties to the JSON object `props` (`PUT /v1/buckets/{bucket}`
    /// through node 0, retried while the layout service has no leader), then waits until every
    /// node answers them (`GET`), each applying the change from its own Raft log.
    pub async fn set_bucket(
        &self,
        bucket: &str,
        props: &serde_json::Value,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let path = format!("/v1/buckets/{bucket}");
        let body = serde_json::to_vec(props)?;
        loop {
            let answer =
                http::request(&self.nodes[0].spec.http, "PUT", &path, &body, CALL_TIMEOUT).await;
            match answer {
                Ok(r) if (200..300).contains(&r.status) => break,
                Ok(r) if r.status < 500 => {
                    bail!("PUT {path}: {} {}", r.status, r.text())
                }
                other if Instant::now() >= deadline => {
                    bail!("PUT {path}: no success within {timeout:?}: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            loop {
                let shown = http::request(&node.spec.http, "GET", &path, b"", CALL_TIMEOUT)
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| r.json().ok());
                let applied = shown.as_ref().is_some_and(|shown| {
                    props
                        .as_object()
                        .is_some_and(|want| want.iter().all(|(k, v)| &shown[k] == v))
                });
                if applied {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("{}: {path} still shows {shown:?} (node {i})", node.spec.id);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Whether node `i`'s failure detector sees every member up.
    pub async fn sees_all_up(&self, i: usize) -> bool {
        let Some(v) = self.status(i).await else {
            return false;
        };
        let members = v["members"].as_array().cloned().unwrap_or_default();
        members.len() == self.len() && members.iter().all(|m| m["status"] == "up")
    }

    /// Whether node `i`'s layout has no partition in transfer.
    pub async fn transfers_done(&self, i: usize) -> bool {
        self.status(i)
            .await
            .is_some_and(|v| v["transfers"]["partitions_pending"] == 0)
    }

    /// Sets node `i`'s outgoing internode delay (the node's test-only chaos layer); its WAN
    /// rules stay as they are.
    pub async fn set_delay(&self, i: usize, delay_ms: u64, jitter_ms: u64) -> anyhow::Result<()> {
        let body = serde_json::json!({ "delay_ms": delay_ms, "jitter_ms": jitter_ms });
        self.set_chaos(i, &body).await
    }

    /// Replaces node `i`'s WAN rules (`[{"to", "delay_ms", "jitter_ms", "loss"}]`, `[]` for
    /// none) and sets its global delay to 0 (the chaos layer's `POST` semantics).
    pub async fn set_wan(&self, i: usize, rules: serde_json::Value) -> anyhow::Result<()> {
        self.set_chaos(i, &serde_json::json!({ "wan": rules }))
            .await
    }

    /// Clears node `i`'s chaos layer: no delay, no WAN rules.
    pub async fn clear_chaos(&self, i: usize) -> anyhow::Result<()> {
        let body = serde_json::json!({ "delay_ms": 0, "jitter_ms": 0, "wan": [] });
        self.set_chaos(i, &body).await
    }

    /// `POST /v1/admin/chaos` with `body` on node `i`.
    async fn set_chaos(&self, i: usize, body: &serde_json::Value) -> anyhow::Result<()> {
        let body = body.to_string();
        let r = http::request(
            &self.nodes[i].spec.http,
            "POST",
            "/v1/admin/chaos",
            body.as_bytes(),
            CALL_TIMEOUT,
        )
        .await?;
        if r.status != 200 {
            bail!(
                "{}: /v1/admin/chaos answered {} {}",
                self.nodes[i].spec.id,
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(())
    }

    /// Writes node `i`'s clock offset in seconds (libfaketime re-reads it within a second).
    pub fn set_clock_offset(&self, i: usize, offset_s: i64) -> anyhow::Result<()> {
        let spec = format!("{offset_s:+}\n");
        write_atomically(&self.nodes[i].spec.faketime_file, spec.as_bytes())
    }

    /// Node `i`'s clock minus ours, in seconds, from the `Date` header of its answer (1 s
    /// resolution); `None` if it did not answer.
    pub async fn clock_offset_s(&self, i: usize) -> Option<i64> {
        let r = http::request(
            &self.nodes[i].spec.http,
            "GET",
            "/v1/health",
            b"",
            CALL_TIMEOUT,
        )
        .await
        .ok()?;
        let theirs = parse_http_date(r.header("date")?)?;
        let ours = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        Some(theirs - ours)
    }

    /// The offset a fresh process started like node `i` (same libfaketime, same offset file)
    /// sees: `date +%s` minus our clock, in seconds.
    pub async fn fresh_process_offset_s(&self, i: usize) -> Option<i64> {
        let out = Command::new("date")
            .arg("+%s")
            .env("LD_PRELOAD", &self.settings.faketime_lib)
            .env("FAKETIME_TIMESTAMP_FILE", &self.nodes[i].spec.faketime_file)
            .output()
            .await
            .ok()?;
        let theirs: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        let ours = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        Some(theirs - ours)
    }

    /// Continues every paused node and kills every node (the end of a run or an interrupt).
    pub async fn stop_all(&mut self) {
        for i in 0..self.len() {
            if self.nodes[i].paused {
                let _ = self.signal_pause(i, false).await;
            }
            if self.nodes[i].child.is_some() {
                let _ = self.kill9(i).await;
            }
        }
    }
}

/// Node `n{i}`'s (1-based) region and zone: without regions no region and zone
/// `z{i % ZONES}`; with `regions` R, region `r{(i - 1) % R + 1}` and zone
/// `z{((i - 1) / R) % ZONES}` inside it.
pub fn place(i: usize, regions: usize) -> (Option<String>, String) {
    if regions == 0 {
        return (None, format!("z{}", i % ZONES));
    }
    let k = i - 1;
    (
        Some(format!("r{}", k % regions + 1)),
        format!("z{}", (k / regions) % ZONES),
    )
}

/// The replicas per region of `nodes` nodes placed over `regions` by [`place`]:
/// `min(nodes in the region, REPLICAS_PER_REGION_MAX)` each; `None` without regions.
pub fn replication(nodes: usize, regions: usize) -> Option<serde_json::Value> {
    let mut per_region: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 1..=nodes {
        *per_region.entry(place(i, regions).0?).or_default() += 1;
    }
    let map: serde_json::Map<String, serde_json::Value> = per_region
        .into_iter()
        .map(|(r, count)| (r, count.min(REPLICAS_PER_REGION_MAX).into()))
        .collect();
    Some(serde_json::Value::Object(map))
}

/// The value of the unlabelled metric `name` in the `/metrics` of the node at `addr`, if it
/// answers within `timeout`.
pub async fn metric(addr: &str, name: &str, timeout: Duration) -> Option<f64> {
    let r = http::request(addr, "GET", "/metrics", b"", timeout)
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&r.body);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `/v1/health` answers 200.
pub async fn healthy(addr: &str) -> bool {
    matches!(
        http::request(addr, "GET", "/v1/health", b"", Duration::from_millis(500)).await,
        Ok(r) if r.status == 200
    )
}

/// The members of the layout a node routes by.
pub async fn ring_members(addr: &str) -> Option<Vec<String>> {
    let r = http::request(addr, "GET", "/v1/ring", b"", CALL_TIMEOUT)
        .await
        .ok()?;
    if r.status != 200 {
        return None;
    }
    let nodes = r.json().ok()?["nodes"].as_array()?.clone();
    Some(
        nodes
            .iter()
            .filter_map(|n| n["id"].as_str().or(n.as_str()).map(str::to_string))
            .collect(),
    )
}

/// The layout version a node routes by.
pub async fn ring_version(addr: &str) -> Option<u64> {
    let r = http::request(addr, "GET", "/v1/ring", b"", CALL_TIMEOUT)
        .await
        .ok()?;
    if r.status != 200 {
        return None;
    }
    r.json().ok()?["version"].as_u64()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[2])? as i64 + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_round_robin_with_zones_of_their_own_inside() {
        assert_eq!(place(4, 0), (None, "z1".to_string()));
        let placed: Vec<(String, String)> = (1..=6)
            .map(|i| {
                let (r, z) = place(i, 3);
                (r.expect("a region"), z)
            })
            .collect();
        let names: Vec<String> = placed.iter().map(|(r, z)| format!("{r}/{z}")).collect();
        assert_eq!(
            names,
            ["r1/z0", "r2/z0", "r3/z0", "r1/z1", "r2/z1", "r3/z1"],
            "each region's two nodes in two zones"
        );
        // 7 nodes over 3 regions: r1 gets the third, in a third zone.
        assert_eq!(place(7, 3), (Some("r1".to_string()), "z2".to_string()));
    }

    #[test]
    fn replicas_per_region_are_at_most_two_and_at_most_the_regions_nodes() {
        assert_eq!(replication(6, 0), None);
        assert_eq!(
            replication(6, 3),
            Some(serde_json::json!({"r1": 2, "r2": 2, "r3": 2}))
        );
        assert_eq!(
            replication(4, 3),
            Some(serde_json::json!({"r1": 2, "r2": 1, "r3": 1}))
        );
        assert_eq!(
            replication(9, 2),
            Some(serde_json::json!({"r1": 2, "r2": 2}))
        );
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sat, 29 Feb 2020 12:00:01 GMT"),
            Some(1_582_977_601)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
