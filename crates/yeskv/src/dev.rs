//! `yeskv dev`: a local cluster of real `yeskv server` processes on 127.0.0.1.
//!
//! Each node is a child process of this command with its own data directory
//! (`DATA_DIR/nN`), HTTP port `BASE_PORT + i` and peer port `BASE_PORT - 1000 + i`; with
//! `--resp`, a Redis-protocol port `BASE_PORT + 1000 + i` too (`docs/resp.md`). Their logs are
//! streamed here prefixed by node id. The command prints each node's URL and one `ready` line once
//! every node answers `/v1/health`, and stops them all (SIGTERM, which flushes storage) on Ctrl-C
//! or SIGTERM. Running it again on the same data directory brings back the same nodes and data.
//!
//! The cluster is formed the way an operator would: `n1` starts without seeds and creates the
//! cluster, the others start with `--seed` (n1's peer address) and join its gossip, then this
//! command stages `join` for them on n1 and `commit`s, and waits until every node applied the
//! new layout. On a second run the layout is already committed and nothing is staged.
//!
//! With `--regions R`, `R × --nodes` nodes start, region `rK` holding nodes in zones `z1`.. of
//! their own, and the first formation also stages replicas per region (`min(--nodes, 3)` in
//! each) in the same commit.
//!
//! With `--wan-delay-ms MS` (and `--wan-jitter-ms J`) beside `--regions`, every node also reads
//! `[chaos] wan` links between every two regions, both directions (a symmetric WAN on one
//! machine: each call from one region to another waits MS plus up to J ms, so a round trip
//! across regions costs MS..MS+J, the answer riding back on the delayed call). This turns on
//! the nodes' test-only chaos layer (`yeskv_node::chaos`), so they also serve
//! `/v1/admin/chaos`. The links go into `DATA_DIR/dev-wan.toml`, written on each run: a copy
//! of `--config` (if given) with the links added, which every node reads instead.
//!
//! With `--secure`, the cluster runs as production does (`docs/security.md`): HTTPS and mutual
//! TLS, API keys required, contexts signed and gossip sealed with a cluster keyring. On its first
//! run it creates, in the data directory, the cluster CA (`ca.pem`, `ca.key`), a certificate per
//! node (`certs/nN/`), the keyring (`cluster.keys`) and the admin key (`admin.key`, registered by
//! `n1` as the key `admin`); later runs reuse them. Secrets are written with mode 0600. It prints
//! how to reach the cluster with them (`YESKV_CA`, `YESKV_KEY`, and a `curl`).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Flags of `yeskv dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Number of nodes (per region with `--regions`).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Regions `r1`..`rR`, each of `--nodes` nodes in zones of their own, with `min(--nodes, 3)`
    /// replicas per region; 0 for none (one implicit region).
    #[arg(long, default_value_t = 0)]
    regions: u16,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "./yeskv-data")]
    data_dir: PathBuf,
    /// HTTP port of the first node; peer ports start 1000 lower.
    #[arg(long, default_value_t = 8081)]
    base_port: u16,
    /// Durability mode passed to every node (always, group, none).
    #[arg(long)]
    sync: Option<String>,
    /// A configuration file every node reads (`yeskv server --config`); the node id, addresses,
    /// data directory, seeds and `--sync` given by `yeskv dev` override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// With `--regions` (2 or more): delay in ms of every call from a node of one region to a
    /// node of another, both directions, through the nodes' test-only chaos layer
    /// (`[chaos] wan`); 0 for none.
    #[arg(long, default_value_t = 0)]
    wan_delay_ms: u64,
    /// With `--wan-delay-ms`: extra random delay per call, uniform in 0..=J ms.
    #[arg(long, default_value_t = 0)]
    wan_jitter_ms: u64,
    /// HTTPS and mutual TLS, API keys, a cluster keyring: a CA, node certificates, the keyring
    /// and an admin key are created in the data directory on the first run (`ca.pem`,
    /// `admin.key`) and reused after.
    #[arg(long)]
    secure: bool,
    /// Also serve the Redis protocol on every node, at `BASE_PORT + 1000 + i` (TLS and keys
    /// too with `--secure`).
    #[arg(long)]
    resp: bool,
}

impl DevArgs {
    /// Nodes in all.
    fn total(&self) -> u16 {
        self.nodes.saturating_mul(self.regions.max(1))
    }

    /// The region and zone of node `index`, with `--regions`.
    fn place(&self, index: u16) -> Option<(String, String)> {
        (self.regions > 0).then(|| {
            (
                format!("r{}", index / self.nodes + 1),
                format!("z{}", index % self.nodes + 1),
            )
        })
    }

    /// Whether WAN delays between the regions were asked for.
    fn wan(&self) -> bool {
        self.wan_delay_ms > 0 || self.wan_jitter_ms > 0
    }

    /// Extra time to form the cluster over the WAN: the new replicas of the other regions
    /// receive every partition across it, one call at a time per partition (about 20 s more
    /// for 3 × 2 nodes at 40 ms): one second per millisecond of delay and jitter.
    fn wan_allowance(&self) -> Duration {
        Duration::from_secs(self.wan_delay_ms + self.wan_jitter_ms)
    }

    /// The `[chaos] wan` links of `--wan-delay-ms`: every ordered pair of distinct regions.
    fn wan_links(&self) -> Vec<yeskv_node::chaos::WanLink> {
        let regions: Vec<String> = (1..=self.regions).map(|r| format!("r{r}")).collect();
        let mut links = Vec::new();
        for from in &regions {
            for to in regions.iter().filter(|to| *to != from) {
                links.push(yeskv_node::chaos::WanLink {
                    from: from.clone(),
                    to: to.clone(),
                    delay_ms: self.wan_delay_ms,
                    jitter_ms: self.wan_jitter_ms,
                    loss: 0.0,
                });
            }
        }
        links
    }

    /// The replicas per region to stage, with `--regions`.
    fn replication(&self) -> Option<serde_json::Value> {
        (self.regions > 0).then(|| {
            let per = self.nodes.min(3);
            let map: serde_json::Map<String, serde_json::Value> = (1..=self.regions)
                .map(|r| (format!("r{r}"), per.into()))
                .collect();
            serde_json::Value::Object(map)
        })
    }
}

/// How long a node may take to answer its health check after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

struct Node {
    id: String,
    url: String,
    /// The RESP address, with `--resp`.
    resp: Option<String>,
    child: Child,
}

/// How this command reaches its nodes: plain HTTP, or HTTPS trusting the cluster CA with the
/// admin key (`--secure`).
struct Access {
    client: crate::cluster_cmd::HttpClient,
    key: Option<String>,
}

impl Access {
    fn new(secure: Option<&Secure>) -> anyhow::Result<Access> {
        Ok(Access {
            client: crate::cluster_cmd::http_client(
                secure.map(|s| s.ca.as_path()),
                Duration::from_millis(500),
            )?,
            key: secure.map(|s| s.admin_key.clone()),
        })
    }

    /// One small request to the node at `url`; `(status, body)` or `None` if it did not answer
    /// within 15 s.
    async fn http(&self, url: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let key = self.key.as_deref();
        let timeout = Duration::from_secs(15);
        let sent =
            crate::cluster_cmd::send(&self.client, key, url, method, path, body.into(), timeout);
        let (status, body) = sent.await.ok()?;
        Some((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
    }

    async fn healthy(&self, url: &str) -> bool {
        matches!(
            self.http(url, "GET", "/v1/health", "").await,
            Some((200, _))
        )
    }

    /// The layout version and member ids a node routes by (`None` while it has no layout).
    async fn ring(&self, url: &str) -> Option<(u64, Vec<String>)> {
        let (status, body) = self.http(url, "GET", "/v1/ring", "").await?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let ids = v["nodes"]
            .as_array()?
            .iter()
            .filter_map(|n| n["id"].as_str().map(str::to_string))
            .collect();
        Some((v["version"].as_u64()?, ids))
    }

    /// Whether `url`'s failure detector sees `count` members, all up.
    async fn all_up(&self, url: &str, count: usize) -> bool {
        let Some((200, body)) = self.http(url, "GET", "/v1/status", "").await else {
            return false;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return false;
        };
        let members = v["members"].as_array().cloned().unwrap_or_default();
        members.len() == count
            && members.iter().all(|m| m["status"] == "up")
            && v["transfers"]["partitions_pending"] == 0
    }
}

/// Stages a join of every node the layout lacks on the first node, commits, and waits until
/// every node applied the result, sees every member up and every new holder has received its
/// partitions.
async fn form_cluster(
    access: &Access,
    nodes: &[Node],
    replication: Option<&serde_json::Value>,
    deadline: Instant,
) -> anyhow::Result<u64> {
    let first = nodes[0].url.as_str();
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    // With --secure, n1 registers the admin key once it has its layout: until then its
    // answers are 401.
    let (mut version, members) = loop {
        match access.ring(first).await {
            Some(ring) => break Some(ring),
            None if access.key.is_some() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            None => break None,
        }
    }
    .ok_or_else(|| anyhow::anyhow!("{} has no layout", nodes[0].id))?;
    let missing: Vec<&String> = ids.iter().filter(|id| !members.contains(id)).collect();
    // Replicas per region are staged once, when the layout has none yet.
    let replication = match replication {
        Some(wanted) => match access.http(first, "GET", "/v1/ring", "").await {
            Some((200, body)) => {
                let ring: serde_json::Value = serde_json::from_str(&body)?;
                let set = ring["replication"]
                    .as_object()
                    .is_some_and(|m| !m.is_empty());
                (!set).then_some(wanted)
            }
            _ => bail!("{} did not answer /v1/ring", nodes[0].id),
        },
        None => None,
    };
    if !missing.is_empty() || replication.is_some() {
        let body = serde_json::json!({ "nodes": missing }).to_string();
        // The newcomers must be in n1's gossip view first: retry until they are.
        while !missing.is_empty() {
            match access.http(first, "POST", "/v1/cluster/join", &body).await {
                Some((200, _)) => break,
                Some((status, reply)) if Instant::now() > deadline => {
                    bail!("staging the join failed: {status} {reply}")
                }
                _ if Instant::now() > deadline => bail!("staging the join: no answer"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        if let Some(replication) = replication {
            match access
                .http(
                    first,
                    "POST",
                    "/v1/cluster/replication",
                    &replication.to_string(),
                )
                .await
            {
                Some((200, _)) => {}
                Some((status, reply)) => bail!("staging replicas per region: {status} {reply}"),
                None => bail!("staging replicas per region: no answer"),
            }
        }
        match access.http(first, "POST", "/v1/cluster/commit", "").await {
            Some((200, reply)) => {
                let v: serde_json::Value = serde_json::from_str(&reply)?;
                version = v["version"].as_u64().unwrap_or(version);
            }
            Some((status, reply)) => bail!("commit failed: {status} {reply}"),
            None => bail!("commit: no answer"),
        }
    }
    for n in nodes {
        loop {
            if let (Some((v, _)), true) = (
                access.ring(&n.url).await,
                access.all_up(&n.url, nodes.len()).await,
            ) {
                if v >= version {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("node {} did not apply layout version {version}", n.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(version)
}

fn stream_logs<R: tokio::io::AsyncRead + Unpin + Send + 'static>(id: String, r: R) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{id}] {line}");
        }
    });
}

fn terminate(nodes: &[Node]) {
    for n in nodes {
        if let Some(pid) = n.child.id() {
            #[allow(unsafe_code)]
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
}

/// Sends every node SIGTERM and waits for each to exit (killing one that takes over 30 s).
async fn stop(nodes: &mut [Node]) {
    terminate(nodes);
    for n in nodes {
        if tokio::time::timeout(Duration::from_secs(30), n.child.wait())
            .await
            .is_err()
        {
            let _ = n.child.start_kill();
        }
    }
}

/// Waits until every node is healthy (printing each one's URL), then forms the cluster;
/// returns the committed layout version.
async fn start_up(
    access: &Access,
    nodes: &mut [Node],
    replication: Option<&serde_json::Value>,
    allowance: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + START_TIMEOUT + allowance;
    for node in nodes.iter_mut() {
        while !access.healthy(&node.url).await {
            if let Ok(Some(status)) = node.child.try_wait() {
                bail!("node {} exited during start-up ({status})", node.id);
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} did not become healthy within {:?}",
                    node.id,
                    START_TIMEOUT
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match &node.resp {
            Some(resp) => println!("{} {} resp {resp}", node.id, node.url),
            None => println!("{} {}", node.id, node.url),
        }
    }
    form_cluster(access, nodes, replication, deadline).await
}

/// Refuses a node count or base port that would not give every node an HTTP port and a peer
/// port 1000 lower, both valid and above the privileged range.
fn check_args(args: &DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > 64 {
        bail!("--nodes must be between 1 and 64");
    }
    if args.regions > 8 || args.total() > 64 {
        bail!("--regions must be between 0 and 8, with at most 64 nodes in all");
    }
    if args.wan() && args.regions < 2 {
        bail!("--wan-delay-ms and --wan-jitter-ms need --regions 2 or more");
    }
    let max = yeskv_node::chaos::DELAY_MS_MAX;
    if args.wan_delay_ms > max || args.wan_jitter_ms > max {
        bail!("--wan-delay-ms and --wan-jitter-ms must be at most {max}");
    }
    let total = args.total();
    if args.base_port < 1024 + total || args.base_port.checked_add(total).is_none() {
        bail!(
            "--base-port {} leaves no room for peer ports 1000 lower",
            args.base_port
        );
    }
    if args.resp && args.base_port.checked_add(1000 + total).is_none() {
        bail!(
            "--base-port {} leaves no room for RESP ports 1000 higher",
            args.base_port
        );
    }
    Ok(())
}

/// Writes `DATA_DIR/dev-wan.toml`: the `--config` file (if any) with the `[chaos] wan` links of
/// `--wan-delay-ms` added; returns its path. Refuses a `--config` that has links of its own.
fn write_wan_config(args: &DevArgs) -> anyhow::Result<PathBuf> {
    let mut table: toml::Table = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            text.parse()
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let chaos = table
        .entry("chaos")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(chaos) = chaos.as_table_mut() else {
        bail!("--config: chaos must be a table");
    };
    if chaos.contains_key("wan") {
        bail!("--config already has [chaos] wan: leave out --wan-delay-ms, or the config's links");
    }
    let links = args.wan_links();
    yeskv_node::chaos::check_links(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    chaos.insert(
        "wan".into(),
        toml::Value::try_from(&links).context("writing the WAN links")?,
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let path = args.data_dir.join("dev-wan.toml");
    let text = format!(
        "# written by yeskv dev --wan-delay-ms: the nodes' config (rewritten on each run)\n{}",
        toml::to_string(&table).context("writing the WAN config")?
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What `--secure` nodes are started with, and how this command and its users reach them.
struct Secure {
    /// `DATA_DIR/ca.pem`: the cluster CA (clients trust it).
    ca: PathBuf,
    /// `DATA_DIR/cluster.keys`: the keyring every node reads.
    keyring: PathBuf,
    /// `DATA_DIR/admin.key`: the admin key's file (n1 registers it as the key `admin`).
    admin_key_file: PathBuf,
    /// The admin key itself.
    admin_key: String,
    /// `DATA_DIR/certs`: one directory per node (`nN/node.pem`, `nN/node.key`).
    certs: PathBuf,
}

impl Secure {
    /// Creates what is missing in `args.data_dir` (CA, node certificates, keyring, admin key)
    /// and reuses what a previous run made.
    fn prepare(args: &DevArgs) -> anyhow::Result<Secure> {
        let dir = &args.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = dir.join("ca.pem");
        if !ca.exists() {
            crate::cert_cmd::init(dir)?;
            println!("created the cluster CA: {}", ca.display());
        }
        let certs = dir.join("certs");
        for index in 0..args.total() {
            let id = node_id(index);
            let out = certs.join(&id);
            if !out.join("node.pem").exists() {
                crate::cert_cmd::issue(dir, &id, &[], &out)?;
            }
        }
        let keyring = dir.join("cluster.keys");
        if !keyring.exists() {
            crate::key_cmd::new_keyring(&keyring)?;
        }
        let admin_key_file = dir.join("admin.key");
        let admin_key = yeskv_node::server::read_or_create_admin_key(&admin_key_file)
            .map_err(anyhow::Error::msg)?;
        Ok(Secure {
            ca,
            keyring,
            admin_key_file,
            admin_key,
            certs,
        })
    }

    /// The `yeskv server` flags of node `index`.
    fn flags(&self, index: u16) -> Vec<std::ffi::OsString> {
        let node = self.certs.join(node_id(index));
        let mut flags: Vec<std::ffi::OsString> = vec![
            "--tls-cert".into(),
            node.join("node.pem").into(),
            "--tls-key".into(),
            node.join("node.key").into(),
            "--tls-ca".into(),
            self.ca.clone().into(),
            "--auth".into(),
            "--cluster-keys".into(),
            self.keyring.clone().into(),
        ];
        if index == 0 {
            flags.push("--admin-key-file".into());
            flags.push(self.admin_key_file.clone().into());
        }
        flags
    }

    /// How to use the cluster, printed once it is ready.
    fn usage(&self, url: &str) -> String {
        let (ca, key) = (self.ca.display(), self.admin_key_file.display());
        format!(
            "HTTPS with API keys required; the cluster CA is {ca}, the admin key {key}:\n  \
             export YESKV_NODE={url} YESKV_CA={ca} YESKV_KEY=$(cat {key})\n  \
             yeskv put demo greeting hello\n  \
             curl --cacert {ca} -H \"Authorization: Bearer $(cat {key})\" \
             -X PUT --data-binary hello {url}/v1/kv/demo/greeting"
        )
    }
}

/// Node `index`'s id.
fn node_id(index: u16) -> String {
    format!("n{}", index + 1)
}

/// Starts every node's `yeskv server` process. If one cannot be started, the ones already
/// started are killed when their handles are dropped.
fn spawn_nodes(args: &DevArgs, secure: Option<&Secure>) -> anyhow::Result<Vec<Node>> {
    let exe = std::env::current_exe().context("locating the yeskv binary")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut nodes = Vec::new();
    for index in 0..args.total() {
        nodes.push(spawn_node(args, secure, &exe, index)?);
    }
    Ok(nodes)
}

/// Starts node `index` (`n{index + 1}`) from `exe` with its own ports and data directory,
/// seeded with the first node's peer address unless it is the first, and streams its output
/// here prefixed by its id.
fn spawn_node(
    args: &DevArgs,
    secure: Option<&Secure>,
    exe: &Path,
    index: u16,
) -> anyhow::Result<Node> {
    let id = node_id(index);
    let http = format!("127.0.0.1:{}", args.base_port + index);
    let peer = format!("127.0.0.1:{}", args.base_port - 1000 + index);
    let resp = args
        .resp
        .then(|| format!("127.0.0.1:{}", args.base_port + 1000 + index));
    let mut cmd = Command::new(exe);
    cmd.arg("server")
        .args(["--node-id", &id, "--http", &http, "--peer", &peer])
        .arg("--data-dir")
        .arg(args.data_dir.join(&id))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(s) = &args.sync {
        cmd.args(["--sync", s]);
    }
    if let Some(c) = &args.config {
        cmd.arg("--config").arg(c);
    }
    if let Some((region, zone)) = args.place(index) {
        cmd.args(["--region", &region, "--zone", &zone]);
    }
    if index > 0 {
        cmd.args(["--seed", &format!("127.0.0.1:{}", args.base_port - 1000)]);
    }
    if let Some(secure) = secure {
        cmd.args(secure.flags(index));
    }
    if let Some(resp) = &resp {
        cmd.args(["--resp", resp]);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting node {id}"))?;
    if let Some(out) = child.stdout.take() {
        stream_logs(id.clone(), out);
    }
    if let Some(err) = child.stderr.take() {
        stream_logs(id.clone(), err);
    }
    let scheme = if secure.is_some() { "https" } else { "http" };
    Ok(Node {
        id,
        url: format!("{scheme}://{http}"),
        resp,
        child,
    })
}

/// Waits until one of `nodes` exits; returns its id and exit status.
async fn first_exit(nodes: &mut [Node]) -> (String, ExitStatus) {
    loop {
        for n in nodes.iter_mut() {
            if let Ok(Some(status)) = n.child.try_wait() {
                return (n.id.clone(), status);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the dev cluster until Ctrl-C / SIGTERM or until a node exits.
pub async fn run(mut args: DevArgs) -> anyhow::Result<()> {
    // From here on a Ctrl-C or SIGTERM stops the nodes, also while they start.
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    check_args(&args)?;
    if args.wan() {
        args.config = Some(write_wan_config(&args)?);
        println!(
            "WAN between regions: {}+{} ms per call, both directions (test-only chaos layer on)",
            args.wan_delay_ms, args.wan_jitter_ms
        );
    }
    let secure = args.secure.then(|| Secure::prepare(&args)).transpose()?;
    let access = Access::new(secure.as_ref())?;
    let mut nodes = spawn_nodes(&args, secure.as_ref())?;

    let started = {
        let replication = args.replication();
        let start = start_up(
            &access,
            &mut nodes,
            replication.as_ref(),
            args.wan_allowance(),
        );
        tokio::pin!(start);
        tokio::select! {
            r = &mut start => Some(r),
            _ = &mut shutdown => None,
        }
    };
    let version = match started {
        Some(Ok(version)) => version,
        Some(Err(e)) => {
            stop(&mut nodes).await;
            return Err(e);
        }
        None => {
            eprintln!(
                "interrupted while starting: stopping {} node(s)",
                nodes.len()
            );
            stop(&mut nodes).await;
            return Ok(());
        }
    };
    if let Some(resp) = &nodes[0].resp {
        let (host, port) = resp.rsplit_once(':').unwrap_or((resp, ""));
        match &secure {
            None => println!("RESP: redis-cli -h {host} -p {port} SET demo:greeting hello"),
            Some(s) => println!(
                "RESP: redis-cli -h {host} -p {port} --tls --cacert {} --user admin --pass $(cat {}) SET demo:greeting hello",
                s.ca.display(),
                s.admin_key_file.display()
            ),
        }
    }
    match &secure {
        None => println!(
            "ready: {} node(s), layout version {version}; try: curl -X PUT --data-binary hello {}/v1/kv/demo/greeting",
            nodes.len(),
            nodes[0].url
        ),
        Some(secure) => {
            println!("{}", secure.usage(&nodes[0].url));
            println!(
                "ready: {} node(s), layout version {version} (HTTPS, API keys required)",
                nodes.len()
            );
        }
    }

    let outcome = tokio::select! {
        _ = &mut shutdown => None,
        (id, status) = first_exit(&mut nodes) => Some((id, status)),
    };
    eprintln!("stopping {} node(s)", nodes.len());
    stop(&mut nodes).await;
    match outcome {
        None => Ok(()),
        Some((id, status)) => bail!("node {id} exited unexpectedly ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        dev: DevArgs,
    }

    fn args(flags: &[&str]) -> DevArgs {
        Cli::try_parse_from(std::iter::once("dev").chain(flags.iter().copied()))
            .expect("flags parse")
            .dev
    }

    #[test]
    fn wan_links_join_every_two_regions_both_ways() {
        let a = args(&[
            "--regions",
            "3",
            "--wan-delay-ms",
            "40",
            "--wan-jitter-ms",
            "5",
        ]);
        check_args(&a).expect("valid");
        let links = a.wan_links();
        let pairs: Vec<(&str, &str)> = links
            .iter()
            .map(|l| (l.from.as_str(), l.to.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("r1", "r2"),
                ("r1", "r3"),
                ("r2", "r1"),
                ("r2", "r3"),
                ("r3", "r1"),
                ("r3", "r2")
            ]
        );
        assert!(links
            .iter()
            .all(|l| l.delay_ms == 40 && l.jitter_ms == 5 && l.loss == 0.0));
        yeskv_node::chaos::check_links(&links).expect("the nodes take them");
        assert!(!args(&["--regions", "3"]).wan());
    }

    #[test]
    fn wan_without_regions_or_out_of_bounds_is_refused() {
        for flags in [
            &["--wan-delay-ms", "40"][..],
            &["--regions", "1", "--wan-jitter-ms", "5"],
            &["--regions", "2", "--wan-delay-ms", "60001"],
        ] {
            assert!(check_args(&args(flags)).is_err(), "{flags:?}");
        }
    }

    #[test]
    fn the_wan_config_keeps_the_given_config_and_refuses_links_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let given = dir.path().join("given.toml");
        std::fs::write(
            &given,
            "[storage]\nsync = \"none\"\n[chaos]\nenabled = true\n",
        )
        .expect("write");
        let data = dir.path().join("data");
        let flags = [
            "--regions",
            "2",
            "--wan-delay-ms",
            "40",
            "--config",
            given.to_str().expect("utf-8"),
            "--data-dir",
            data.to_str().expect("utf-8"),
        ];
        let written = write_wan_config(&args(&flags)).expect("written");
        let text = std::fs::read_to_string(&written).expect("read");
        let cfg = yeskv_node::config::Config::from_toml(&text).expect("a node config");
        assert_eq!(cfg.storage.sync, "none");
        assert!(cfg.chaos.enabled);
        assert_eq!(cfg.chaos.wan.len(), 2);
        cfg.validate().expect("validates");

        std::fs::write(&given, "[chaos]\nwan = []\n").expect("write");
        let e = write_wan_config(&args(&flags)).expect_err("refused");
        assert!(e.to_string().contains("already has"), "{e}");
    }
}
