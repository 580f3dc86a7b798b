//! `yeskv cluster ...`: operator commands. `status` prints the members as the asked node sees
//! them: liveness, state, zone, owned share of the ring, and the layout version. `join`,
//! `leave`, `plan` and `commit` stage membership changes and apply them together, as in Riak:
//! nothing moves until `commit`.

use anyhow::Context as _;

/// `yeskv cluster` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, their liveness and state, zone, owned share, and the layout version.
    Status(StatusArgs),
    /// Stage: make these nodes (started with --seed, so known to the gossip) owners.
    Join(ChangeArgs),
    /// Stage: hand these nodes' partitions to others and drop them.
    Leave(LeaveArgs),
    /// Stage replicas per region, as REGION=REPLICAS pairs (e.g. `r1=3 r2=3 r3=2`); `--none`
    /// goes back to one implicit region of n replicas over every node.
    Replication(ReplicationArgs),
    /// Show the staged changes and the partition moves they cause.
    Plan(NodeArg),
    /// Apply the staged changes as one new layout version.
    Commit(NodeArg),
}

/// The node to ask.
#[derive(clap::Args, Debug)]
pub struct NodeArg {
    /// URL of the node to ask (any node of the cluster).
    #[arg(long, default_value = "http://127.0.0.1:8081", env = "YESKV_NODE")]
    node: String,
}

impl NodeArg {
    /// The node's URL.
    pub fn url(&self) -> &str {
        &self.node
    }
}

/// Flags of `yeskv cluster join`.
#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    /// Node ids.
    #[arg(required = true)]
    nodes: Vec<String>,
    #[command(flatten)]
    node: NodeArg,
}

/// Flags of `yeskv cluster leave`.
#[derive(clap::Args, Debug)]
pub struct LeaveArgs {
    /// Node ids.
    #[arg(required = true)]
    nodes: Vec<String>,
    /// The nodes are dead: drop them at once; their partitions are rebuilt on the new holders
    /// from the surviving copies. Refused if a partition's only copies are on them.
    #[arg(long)]
    force: bool,
    /// With --force: accept that partitions whose only copies are on these nodes start empty.
    #[arg(long, requires = "force")]
    allow_data_loss: bool,
    #[command(flatten)]
    node: NodeArg,
}

/// Flags of `yeskv cluster replication`.
#[derive(clap::Args, Debug)]
pub struct ReplicationArgs {
    /// REGION=REPLICAS pairs.
    #[arg(required_unless_present = "none", value_parser = parse_region_replicas)]
    regions: Vec<(String, u8)>,
    /// No replication per region: n replicas over every node, whatever its region.
    #[arg(long, conflicts_with = "regions")]
    none: bool,
    #[command(flatten)]
    node: NodeArg,
}

/// `REGION=REPLICAS`.
fn parse_region_replicas(text: &str) -> Result<(String, u8), String> {
    let (region, replicas) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not REGION=REPLICAS"))?;
    let replicas = replicas
        .parse::<u8>()
        .map_err(|_| format!("{replicas:?} is not a replica count"))?;
    Ok((region.to_string(), replicas))
}

/// Flags of `yeskv cluster status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// URL of the node to ask.
    #[arg(long, default_value = "http://127.0.0.1:8081", env = "YESKV_NODE")]
    node: String,
    /// Print the node's `/v1/status` JSON as is.
    #[arg(long)]
    json: bool,
}

/// Runs a `yeskv cluster` command.
pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Join(a) => {
            let body = serde_json::json!({ "nodes": a.nodes });
            print_plan(&call(&a.node.node, "POST", "/v1/cluster/join", Some(body)).await?);
            Ok(())
        }
        ClusterCommand::Leave(a) => {
            let body = serde_json::json!({
                "nodes": a.nodes,
                "force": a.force,
                "allow_data_loss": a.allow_data_loss,
            });
            print_plan(&call(&a.node.node, "POST", "/v1/cluster/leave", Some(body)).await?);
            Ok(())
        }
        ClusterCommand::Replication(a) => {
            let body: serde_json::Map<String, serde_json::Value> = a
                .regions
                .into_iter()
                .map(|(region, replicas)| (region, replicas.into()))
                .collect();
            let body = serde_json::Value::Object(body);
            print_plan(&call(&a.node.node, "POST", "/v1/cluster/replication", Some(body)).await?);
            Ok(())
        }
        ClusterCommand::Plan(a) => {
            print_plan(&call(&a.node, "GET", "/v1/cluster/plan", None).await?);
            Ok(())
        }
        ClusterCommand::Commit(a) => {
            let v = call(&a.node, "POST", "/v1/cluster/commit", None).await?;
            println!(
                "committed: layout version {} with members {}",
                v["version"], v["members"]
            );
            Ok(())
        }
    }
}

/// One JSON request to a node's operator endpoint, answered within 30 s; a non-2xx answer is
/// an error with its reason.
pub(crate) async fn call(
    node: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    call_within(node, method, path, body, std::time::Duration::from_secs(30)).await
}

/// [`call`], answered within `timeout`.
pub(crate) async fn call_within(
    node: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    timeout: std::time::Duration,
) -> anyhow::Result<serde_json::Value> {
    let client = http_client(crate::ca_file(), timeout)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, bytes) =
        send(&client, crate::api_key(), node, method, path, body, timeout).await?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        anyhow::bail!(
            "server said {}: {}",
            status.as_u16(),
            v["error"].as_str().unwrap_or("(no reason)")
        );
    }
    Ok(v)
}

/// A client of `http://` and `https://` nodes for operator calls.
pub(crate) type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// An [`HttpClient`] trusting the CA in `ca` (for `https://` nodes), connecting within
/// `connect_timeout`.
pub(crate) fn http_client(
    ca: Option<&std::path::Path>,
    connect_timeout: std::time::Duration,
) -> anyhow::Result<HttpClient> {
    let connector = yeskv_client::https_connector(ca, connect_timeout)?;
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// One JSON request to `node` with the API key `key`, if any: its status and body, read within
/// `timeout`, whatever the status.
pub(crate) async fn send(
    client: &HttpClient,
    key: Option<&str>,
    node: &str,
    method: &str,
    path: &str,
    body: String,
    timeout: std::time::Duration,
) -> anyhow::Result<(hyper::StatusCode, bytes::Bytes)> {
    let body = bytes::Bytes::from(body);
    send_bytes(
        client,
        key,
        node,
        method,
        path,
        body,
        "application/json",
        timeout,
    )
    .await
}

/// [`send`] with a body of `content_type`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send_bytes(
    client: &HttpClient,
    key: Option<&str>,
    node: &str,
    method: &str,
    path: &str,
    body: bytes::Bytes,
    content_type: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<(hyper::StatusCode, bytes::Bytes)> {
    use http_body_util::{BodyExt as _, Full};
    let uri: hyper::Uri = format!("{}{path}", node.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("bad node URL {node:?}"))?;
    let mut req = hyper::Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req
        .header("content-type", content_type)
        .body(Full::new(body))?;
    let answer = async {
        let resp = client
            .request(req)
            .await
            .with_context(|| format!("cannot reach {node}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, bytes))
    };
    tokio::time::timeout(timeout, answer)
        .await
        .with_context(|| format!("{node} did not answer within {} s", timeout.as_secs()))?
}

fn print_plan(p: &serde_json::Value) {
    println!(
        "staged (revision {}): join {}, leave {}",
        p["staged"]["revision"], p["staged"]["joins"], p["staged"]["leaves"]
    );
    if !p["staged"]["replication"].is_null() {
        println!("staged replicas per region: {}", p["staged"]["replication"]);
    }
    println!(
        "plan: layout version {} -> {}, {} replicas move",
        p["base_version"], p["new_version"], p["replicas_moved"]
    );
    println!(
        "transfers: {} partitions move, {}{}, ETA {} at {}/s per receiver",
        p["partitions_moving"],
        human_bytes(p["bytes_moving"].as_u64().unwrap_or(0)),
        if p["bytes_known"] == false {
            " (some sizes unknown: holders down)"
        } else {
            ""
        },
        p["eta_s"]
            .as_f64()
            .map_or_else(|| "unknown".to_string(), |s| format!("{s:.0} s")),
        human_bytes(p["rate_bytes_per_s"].as_u64().unwrap_or(0)),
    );
    println!(
        "safety: replicas in distinct zones: {}; every partition keeps a live holder of its data: {}",
        if p["zone_safe"] == true { "yes" } else { "NO" },
        if p["data_safe"] == true { "yes" } else { "NO" },
    );
    if let Some(owned) = p["owned"].as_object() {
        println!(
            "  {:<16} {:>6}    {:<6} {:>9} {:>10} {:>9}",
            "node", "owns", "after", "receives", "bytes in", "gives"
        );
        for (node, c) in owned {
            println!(
                "  {node:<16} {:>6} -> {:<6} {:>9} {:>10} {:>9}",
                c["before"],
                c["after"],
                p["receiving"][node].as_u64().unwrap_or(0),
                human_bytes(p["receiving_bytes"][node].as_u64().unwrap_or(0)),
                p["sourcing"][node].as_u64().unwrap_or(0),
            );
        }
    }
}

/// `bytes` in B, KiB, MiB or GiB.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = crate::client_builder()
        .node(&args.node)
        .ring_aware(false)
        .build()?;
    let scheme = if args.node.trim().starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let s = client
        .status()
        .await
        .with_context(|| format!("asking {} for its status", args.node))?;
    if args.json {
        println!("{s}");
        return Ok(());
    }
    // Repair progress needs every member's own view: hints it holds, roots of its replicas.
    let mut peers = std::collections::BTreeMap::new();
    for m in s["members"].as_array().cloned().unwrap_or_default() {
        let (Some(id), Some(http)) = (m["id"].as_str(), m["http"].as_str()) else {
            continue;
        };
        if m["status"] != "up" {
            continue;
        }
        let Ok(c) = crate::client_builder()
            .node(format!("{scheme}://{http}"))
            .ring_aware(false)
            .build()
        else {
            continue;
        };
        if let Ok(Ok(st)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), c.status()).await
        {
            peers.insert(id.to_string(), st);
        }
    }
    print!("{}", render(&s, &peers));
    Ok(())
}

/// A member's receiving progress from its own `transfers`: partitions, bytes left, rate, ETA
/// (`-` when it receives nothing).
fn transfer_cell(t: &serde_json::Value) -> String {
    let partitions = t["partitions_incoming"].as_u64().unwrap_or(0);
    if partitions == 0 {
        return "-".to_string();
    }
    let left = t["bytes_pending"]
        .as_u64()
        .map_or_else(|| "?".to_string(), human_bytes);
    let eta = t["eta_s"]
        .as_f64()
        .map_or_else(|| "?".to_string(), |s| format!("{s:.0}s"));
    let rate = human_bytes(t["rate_bytes_per_s"].as_f64().unwrap_or(0.0) as u64);
    format!("{partitions}p {left} {rate}/s {eta}")
}

/// A member's cross-region queue from its own `regions`: writes queued for the other regions,
/// the oldest one's age, and the regions whose link it sees down (`-` without regions).
fn xr_cell(regions: &serde_json::Value) -> String {
    let Some(regions) = regions.as_object().filter(|r| !r.is_empty()) else {
        return "-".to_string();
    };
    let queue: u64 = regions.values().filter_map(|r| r["queue"].as_u64()).sum();
    let age = regions
        .values()
        .filter_map(|r| r["oldest_age_s"].as_f64())
        .fold(0.0, f64::max);
    let down: Vec<&str> = regions
        .iter()
        .filter(|(_, r)| r["link"] == "down")
        .map(|(name, _)| name.as_str())
        .collect();
    match down.is_empty() {
        true => format!("{queue} {age:.1}s"),
        false => format!("{queue} {age:.1}s {}:down", down.join(",")),
    }
}

/// The human-readable table of a `/v1/status` document, with each member's own status (those
/// that answered) for the repair columns: hints it holds for others, and how many partitions
/// have every replica reporting the same anti-entropy root.
fn render(
    s: &serde_json::Value,
    peers: &std::collections::BTreeMap<String, serde_json::Value>,
) -> String {
    let mut members = s["members"].as_array().cloned().unwrap_or_default();
    // Grouped by region (members of the default region, or of a cluster without regions, first).
    let region = |m: &serde_json::Value| -> String {
        match m["region"].as_str() {
            None | Some("default") => String::new(),
            Some(r) => r.to_string(),
        }
    };
    members.sort_by_key(|m| (region(m), m["id"].as_str().unwrap_or("").to_string()));
    let total: f64 = members
        .iter()
        .map(|m| m["owns"].as_f64().unwrap_or(0.0))
        .sum();
    let mut out = format!(
        "node {} (zone {}), layout version {}, hints pending {}\n",
        s["node"].as_str().unwrap_or("?"),
        s["zone"].as_str().unwrap_or("?"),
        s["layout_version"],
        s["hints_pending"],
    );
    out.push_str(&format!(
        "{:<16} {:<8} {:<9} {:<12} {:>6} {:>7} {:>8} {:>22} {:>18}  {}\n",
        "member",
        "status",
        "state",
        "zone",
        "owns",
        "share",
        "hints",
        "receiving",
        "xr queue/lag",
        "http"
    ));
    for m in &members {
        let owns = m["owns"].as_f64().unwrap_or(0.0);
        let share = if total > 0.0 {
            100.0 * owns / total
        } else {
            0.0
        };
        let id = m["id"].as_str().unwrap_or("?");
        let hints = peers
            .get(id)
            .and_then(|p| p["hints_pending"].as_u64())
            .map_or_else(|| "?".to_string(), |h| h.to_string());
        let receiving = peers
            .get(id)
            .map_or_else(|| "?".to_string(), |p| transfer_cell(&p["transfers"]));
        let xr = peers
            .get(id)
            .map_or_else(|| "?".to_string(), |p| xr_cell(&p["regions"]));
        out.push_str(&format!(
            "{:<16} {:<8} {:<9} {:<12} {:>6} {:>6.1}% {:>8} {:>22} {:>18}  {}\n",
            id,
            m["status"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            match region(m).as_str() {
                "" => m["zone"].as_str().unwrap_or("?").to_string(),
                r => format!("{r}/{}", m["zone"].as_str().unwrap_or("?")),
            },
            owns,
            share,
            hints,
            receiving,
            xr,
            m["http"].as_str().unwrap_or("?"),
        ));
    }
    if !peers.is_empty() {
        // partition -> roots reported by the replicas that answered.
        let mut roots: std::collections::BTreeMap<u64, Vec<Option<String>>> = Default::default();
        for p in peers.values() {
            for part in p["partitions"].as_array().into_iter().flatten() {
                if let Some(id) = part["id"].as_u64() {
                    roots
                        .entry(id)
                        .or_default()
                        .push(part["merkle_root"].as_str().map(str::to_string));
                }
            }
        }
        let agreeing = roots
            .values()
            .filter(|r| r.len() > 1 && r.iter().all(|x| x.is_some() && *x == r[0]))
            .count();
        let hints: u64 = peers
            .values()
            .filter_map(|p| p["hints_pending"].as_u64())
            .sum();
        out.push_str(&format!(
            "repair: {agreeing} of {} partitions agree on every replica's anti-entropy root; {hints} hints to hand off\n",
            roots.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_members_and_shares() {
        let s = serde_json::json!({
            "node": "n1", "zone": "a", "layout_version": 3, "hints_pending": 0,
            "members": [
                {"id": "n1", "status": "up", "state": "valid", "zone": "a", "owns": 192, "http": "127.0.0.1:8081"},
                {"id": "n2", "status": "down", "state": "valid", "zone": "b", "owns": 576, "http": "127.0.0.1:8082"}
            ]
        });
        let peers = std::collections::BTreeMap::from([
            (
                "n1".to_string(),
                serde_json::json!({"hints_pending": 7, "partitions": [
                    {"id": 0, "merkle_root": "aa"}, {"id": 1, "merkle_root": "bb"}]}),
            ),
            (
                "n3".to_string(),
                serde_json::json!({"hints_pending": 1, "partitions": [
                    {"id": 0, "merkle_root": "aa"}, {"id": 1, "merkle_root": "cc"}]}),
            ),
        ]);
        let text = render(&s, &peers);
        assert!(text.contains("layout version 3"));
        assert!(text.contains("n1") && text.contains("25.0%") && text.contains(" 7 "));
        assert!(text.contains("n2") && text.contains("down") && text.contains("75.0%"));
        assert!(text.contains("1 of 2 partitions agree"), "{text}");
        assert!(text.contains("8 hints to hand off"), "{text}");
    }

    #[test]
    fn groups_members_by_region() {
        let s = serde_json::json!({
            "node": "n1", "zone": "a", "layout_version": 2, "hints_pending": 0,
            "members": [
                {"id": "n1", "status": "up", "state": "valid", "region": "r2", "zone": "a", "owns": 1},
                {"id": "n2", "status": "up", "state": "valid", "region": "r1", "zone": "b", "owns": 1},
                {"id": "n3", "status": "up", "state": "valid", "region": "r2", "zone": "b", "owns": 1}
            ]
        });
        let text = render(&s, &Default::default());
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(at("r1/b") < at("r2/a") && at("r2/a") < at("r2/b"), "{text}");
    }

    #[test]
    fn shows_each_members_cross_region_queue() {
        let regions = serde_json::json!({
            "r2": {"queue": 40, "oldest_age_s": 12.5, "link": "down"},
            "r3": {"queue": 2, "oldest_age_s": 0.2, "link": "up"}
        });
        assert_eq!(xr_cell(&regions), "42 12.5s r2:down");
        assert_eq!(xr_cell(&serde_json::json!({})), "-");
        let s = serde_json::json!({
            "node": "n1", "zone": "a", "layout_version": 2, "hints_pending": 0,
            "members": [{"id": "n1", "status": "up", "state": "valid", "region": "r1", "zone": "a", "owns": 1}]
        });
        let peers = std::collections::BTreeMap::from([(
            "n1".to_string(),
            serde_json::json!({"hints_pending": 0, "regions": regions}),
        )]);
        let text = render(&s, &peers);
        assert!(
            text.contains("xr queue/lag") && text.contains("42 12.5s r2:down"),
            "{text}"
        );
    }

    #[test]
    fn region_replicas_parse_or_say_why_not() {
        assert_eq!(parse_region_replicas("eu=3"), Ok(("eu".to_string(), 3)));
        assert!(parse_region_replicas("eu").is_err());
        assert!(parse_region_replicas("eu=three").is_err());
    }
}
