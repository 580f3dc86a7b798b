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
    /// The nodes are dead: drop them without handing their data over.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    node: NodeArg,
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
            let body = serde_json::json!({ "nodes": a.nodes, "force": a.force });
            print_plan(&call(&a.node.node, "POST", "/v1/cluster/leave", Some(body)).await?);
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

/// One JSON request to a node's cluster endpoint; a non-2xx answer is an error with its reason.
async fn call(
    node: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    use http_body_util::{BodyExt as _, Full};
    let uri: hyper::Uri = format!("{}{path}", node.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("bad node URL {node:?}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .with_context(|| format!("{node} did not answer within 30 s"))?
        .with_context(|| format!("cannot reach {node}"))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
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

fn print_plan(p: &serde_json::Value) {
    println!(
        "staged (revision {}): join {}, leave {}",
        p["staged"]["revision"], p["staged"]["joins"], p["staged"]["leaves"]
    );
    println!(
        "plan: layout version {} -> {}, {} replicas move",
        p["base_version"], p["new_version"], p["replicas_moved"]
    );
    if let Some(owned) = p["owned"].as_object() {
        for (node, c) in owned {
            println!("  {node:<16} {:>6} -> {:<6}", c["before"], c["after"]);
        }
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let client = yeskv_client::Client::new(&args.node)?;
    let s = client
        .status()
        .await
        .with_context(|| format!("asking {} for its status", args.node))?;
    if args.json {
        println!("{s}");
        return Ok(());
    }
    print!("{}", render(&s));
    Ok(())
}

/// The human-readable table of a `/v1/status` document.
fn render(s: &serde_json::Value) -> String {
    let members = s["members"].as_array().cloned().unwrap_or_default();
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
        "{:<16} {:<8} {:<9} {:<12} {:>6} {:>7}  {}\n",
        "member", "status", "state", "zone", "owns", "share", "http"
    ));
    for m in &members {
        let owns = m["owns"].as_f64().unwrap_or(0.0);
        let share = if total > 0.0 {
            100.0 * owns / total
        } else {
            0.0
        };
        out.push_str(&format!(
            "{:<16} {:<8} {:<9} {:<12} {:>6} {:>6.1}%  {}\n",
            m["id"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["zone"].as_str().unwrap_or("?"),
            owns,
            share,
            m["http"].as_str().unwrap_or("?"),
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
        let text = render(&s);
        assert!(text.contains("layout version 3"));
        assert!(text.contains("n1") && text.contains("25.0%"));
        assert!(text.contains("n2") && text.contains("down") && text.contains("75.0%"));
    }
}
