//! `yeskv cluster ...`: operator commands. `status` prints the members as the asked node sees
//! them: liveness, state, zone, owned share of the ring, and the layout version.

use anyhow::Context as _;

/// `yeskv cluster` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, their liveness and state, zone, owned share, and the layout version.
    Status(StatusArgs),
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
