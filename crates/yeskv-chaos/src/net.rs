//! Network faults with nftables, inside the nodes' own network namespaces.
//!
//! Each node namespace gets one table (`inet {table}`, the name unique per run) with three base
//! chains, all `policy accept` and empty while nothing is wrong:
//! - `part_in` / `part_out` (input / output hooks): partitions, as `ip saddr {..} drop` and
//!   `ip daddr {..} drop` rules naming other nodes' addresses;
//! - `loss_in` (input hook): packet loss, `numgen random mod 100 < P drop`.
//!
//! Healing flushes a chain; the table dies with the namespace, so nothing outlives the run.
//! Rules name only node addresses, never the hub's: the clients in the hub namespace always
//! reach every node (as in Jepsen, the partition is between the servers), except under packet
//! loss, which drops a share of everything a node receives. This kernel has no netem, hence no
//! delay here: delay comes from the node's chaos layer (`yeskv_node::chaos`).

use anyhow::{bail, Context as _};
use tokio::process::Command;

/// Runs `nft ARGS...` inside namespace `netns`.
async fn nft(netns: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft"])
        .args(args)
        .output()
        .await
        .context("running nft")?;
    if !out.status.success() {
        bail!(
            "nft {} in {netns}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Which way a partition rule drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Drop what the node receives from the others.
    In,
    /// Drop what the node sends to the others.
    Out,
    /// Both.
    Both,
}

/// The nftables handle of one run.
#[derive(Clone, Debug)]
pub struct Firewall {
    /// Table name (unique per run).
    pub table: String,
}

impl Firewall {
    /// Creates the table and its empty chains in `netns`.
    pub async fn install(&self, netns: &str) -> anyhow::Result<()> {
        let t = &self.table;
        nft(netns, &["add", "table", "inet", t]).await?;
        for (chain, hook, priority) in [
            ("part_in", "input", "0"),
            ("part_out", "output", "0"),
            ("loss_in", "input", "10"),
        ] {
            let spec = format!("{{ type filter hook {hook} priority {priority}; policy accept; }}");
            nft(netns, &["add", "chain", "inet", t, chain, &spec]).await?;
        }
        Ok(())
    }

    /// In `netns`, drops traffic with the nodes at `peers` in `direction`.
    pub async fn block(
        &self,
        netns: &str,
        peers: &[String],
        direction: Direction,
    ) -> anyhow::Result<()> {
        if peers.is_empty() {
            return Ok(());
        }
        let set = format!("{{ {} }}", peers.join(", "));
        if matches!(direction, Direction::In | Direction::Both) {
            nft(
                netns,
                &[
                    "add",
                    "rule",
                    "inet",
                    &self.table,
                    "part_in",
                    "ip",
                    "saddr",
                    &set,
                    "drop",
                ],
            )
            .await?;
        }
        if matches!(direction, Direction::Out | Direction::Both) {
            nft(
                netns,
                &[
                    "add",
                    "rule",
                    "inet",
                    &self.table,
                    "part_out",
                    "ip",
                    "daddr",
                    &set,
                    "drop",
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// In `netns`, drops `percent`% of received packets (not loopback).
    pub async fn loss(&self, netns: &str, percent: u32) -> anyhow::Result<()> {
        let p = percent.min(100).to_string();
        nft(
            netns,
            &[
                "add",
                "rule",
                "inet",
                &self.table,
                "loss_in",
                "iifname",
                "!=",
                "lo",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &p,
                "drop",
            ],
        )
        .await
    }

    /// Removes every partition rule in `netns`.
    pub async fn heal_partition(&self, netns: &str) -> anyhow::Result<()> {
        nft(netns, &["flush", "chain", "inet", &self.table, "part_in"]).await?;
        nft(netns, &["flush", "chain", "inet", &self.table, "part_out"]).await
    }

    /// Removes every loss rule in `netns`.
    pub async fn heal_loss(&self, netns: &str) -> anyhow::Result<()> {
        nft(netns, &["flush", "chain", "inet", &self.table, "loss_in"]).await
    }
}
