//! The faults: how each is made and how it is healed (the fault matrix of
//! `docs/reliability.md`, "Real-process chaos").
//!
//! | kind | made by | healed by |
//! |---|---|---|
//! | `kill` | SIGKILL of one node | start it again on the same data, wait for health |
//! | `pause` | SIGSTOP of one node | SIGCONT |
//! | `partition-isolate` | nft drop rules in one node's namespace: everything to/from the other nodes | flush the chains |
//! | `partition-split` | a minority and a majority, each side dropping the other's traffic | flush |
//! | `partition-oneway` | one node drops only what it receives from (or only what it sends to) the others | flush |
//! | `loss` | `numgen random mod 100 < P drop` on input in 1..N/2 nodes, P in 10..30 | flush |
//! | `clock-skew` | libfaketime offset file of one node rewritten to ±30..600 s, checked through the node's `Date` header (or, when hyper's cached Date hides a backward jump, by a fresh process with the same preload and file) | offset back to `+0` |
//! | `disk-full` | a ballast file fills the small loop-mounted ext4 that is one node's data dir; probe writes through that node must be refused | delete the ballast; probe writes must succeed again |
//! | `delay` | `POST /v1/admin/chaos` on 1-2 nodes: 50..500 ms (+ jitter 0..300 ms) before each outgoing internode call | delay 0 |
//! | `region-cut` (2+ regions) | nft drop rules in the namespace of every node of one region: everything to/from the nodes of the other regions | flush the chains |
//! | `slow-wan` (2+ regions) | `POST /v1/admin/chaos` WAN rules on every node between one region and the others, both ways: 100..400 ms (+ jitter 0..100 ms), loss 0..5 % on half of the faults | `"wan": []` on every node |
//!
//! One fault is active at a time; every kind has its own heal, and [`Faults::heal_everything`]
//! resets every node at the end (rules flushed, offsets zero, delays and WAN rules cleared,
//! ballast gone, paused nodes continued, dead nodes restarted) whatever happened before. The
//! region kinds are drawn only in a run with 2 or more regions.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::Rng as _;
use serde::Serialize;
use yeskv_client::{Quorum, WriteOptions};

use crate::cluster::Cluster;
use crate::net::{Direction, Firewall};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9, then restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// One node cut off from the others.
    PartitionIsolate,
    /// Minority / majority.
    PartitionSplit,
    /// One direction only.
    PartitionOneway,
    /// Random packet loss.
    Loss,
    /// Wall clock offset.
    ClockSkew,
    /// The data filesystem of one node is full.
    DiskFull,
    /// Delay on outgoing internode calls.
    Delay,
    /// A node dies for good and is replaced: kill -9, forced out of the layout, its data wiped,
    /// started again empty and joined as a new member; its partitions are rebuilt from the
    /// others.
    Replace,
    /// A node leaves the layout gracefully (its partitions stream to the others while it keeps
    /// serving them), and once it is out it joins again on the data it kept: it must start every
    /// partition it receives anew empty, so that nothing deleted meanwhile comes back.
    LeaveJoin,
    /// One region cut off from the others (every node of it drops their traffic).
    RegionCut,
    /// WAN delay, jitter and maybe loss between one region and the others.
    SlowWan,
    /// A rolling upgrade's mixed releases: a node is stopped (SIGTERM) and started on the
    /// previous release's binary over its data directory; healed by stopping it and starting it
    /// on this build again. Needs the previous release (`--previous-yeskv`).
    OldRelease,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 14] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::PartitionIsolate,
        FaultKind::PartitionSplit,
        FaultKind::PartitionOneway,
        FaultKind::Loss,
        FaultKind::ClockSkew,
        FaultKind::DiskFull,
        FaultKind::Delay,
        FaultKind::Replace,
        FaultKind::LeaveJoin,
        FaultKind::RegionCut,
        FaultKind::SlowWan,
        FaultKind::OldRelease,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::PartitionIsolate => "partition-isolate",
            FaultKind::PartitionSplit => "partition-split",
            FaultKind::PartitionOneway => "partition-oneway",
            FaultKind::Loss => "loss",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Delay => "delay",
            FaultKind::Replace => "replace",
            FaultKind::LeaveJoin => "leave-join",
            FaultKind::RegionCut => "region-cut",
            FaultKind::SlowWan => "slow-wan",
            FaultKind::OldRelease => "old-release",
        }
    }

    /// Whether the kind needs regions (2 or more).
    pub fn needs_regions(self) -> bool {
        matches!(self, FaultKind::RegionCut | FaultKind::SlowWan)
    }
}

/// A fault in force, with what its heal needs.
#[derive(Debug)]
pub enum Active {
    /// Node killed.
    Killed(usize),
    /// Node paused.
    Paused(usize),
    /// Partition rules in these nodes' namespaces.
    Partition(Vec<usize>),
    /// Loss rules in these nodes' namespaces.
    Loss(Vec<usize>),
    /// Node's clock offset.
    ClockSkew(usize),
    /// Ballast on the disk node.
    DiskFull(usize),
    /// Delay on these nodes.
    Delay(Vec<usize>),
    /// WAN rules on these nodes.
    SlowWan(Vec<usize>),
    /// Node running the previous release: the heal starts it on this build again.
    OldRelease(usize),
    /// Node replaced (already running again, empty, and a member): the heal waits until it has
    /// received its partitions.
    Replaced(usize),
    /// Node leaving the layout gracefully (`false`: the leave was refused): the heal waits until
    /// it is out, joins it again and waits until it has received its partitions.
    Leaving(usize, bool),
}

/// One injected fault, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// Kind.
    pub kind: FaultKind,
    /// Injected at, ms since start.
    pub start_ms: u64,
    /// Healed at, ms since start (`None`: healing failed).
    pub healed_ms: Option<u64>,
    /// Targets and parameters.
    pub detail: String,
}

/// What the disk-full faults showed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiskChecks {
    /// Disk-full faults injected.
    pub injected: u32,
    /// Of those, how many saw a probe write through the full node refused (non-2xx answer).
    /// Rare since a node whose storage refuses a write hands it to another primary, and a
    /// fallback stands in for the full node's copy.
    pub refused: u32,
    /// How many saw the node's own storage report that it refuses writes
    /// (`yeskv_storage_write_failing 1` in its `/metrics`): the fault took hold.
    pub failing_seen: u32,
    /// How many saw the node stay up (healthy, not exited) while full.
    pub stayed_up: u32,
    /// How many saw the node's storage take writes again on its own after the ballast went
    /// (`yeskv_storage_write_failing 0`) and a `w=all` probe write through the node succeed.
    pub recovered: u32,
    /// Longest time from ballast removal to the first successful probe write, s (among the
    /// faults that recovered on their own).
    pub recovery_s_max: f64,
    /// How many did not recover on their own within the bound and were restarted (kill -9 and
    /// start, the operator's remedy) so the run could go on; each is a failure of the run.
    pub restarted: u32,
    /// Of those, how many took writes after the restart.
    pub recovered_after_restart: u32,
    /// Bytes added to ballast files after their first fill (space the node freed while full).
    pub topped_up_bytes: u64,
    /// Disk-full faults in which the node was also killed (`kill -9`) and started again while
    /// its disk was full.
    pub restarted_while_full: u32,
    /// Of those, how many came up (healthy) and served a read.
    pub started_while_full: u32,
    /// What each probe saw.
    pub notes: Vec<String>,
}

/// Largest ballast written (the loop filesystem is much smaller).
const BALLAST_BYTES_MAX: u64 = 4 << 30;
/// Probe value size while the disk is full.
const PROBE_VALUE_BYTES: usize = 256 << 10;
/// Probe writes tried while the disk is full.
const PROBE_WRITES_MAX: usize = 64;

/// The fault injector of one run.
pub struct Faults {
    /// nftables handle.
    pub firewall: Firewall,
    /// 0-based index of the node whose data dir is the loop filesystem, if any.
    pub disk_node: Option<usize>,
    /// What was injected.
    pub records: Vec<FaultRecord>,
    /// Kind → times injected.
    pub counts: BTreeMap<String, u32>,
    /// Disk-full observations.
    pub disk: DiskChecks,
    /// The largest clock offset ahead and behind (s, 0 included) any clock-skew fault set: any
    /// two nodes' clocks were at most their difference apart during the run.
    pub skew_s: (i64, i64),
    /// Clock-skew faults whose offset was seen in the node's `Date` header.
    pub clock_verified: u32,
    /// Clock-skew faults whose offset the node's `Date` header did not show (hyper's cached
    /// Date after a backward jump) but a fresh process with the same preload and file did.
    pub clock_verified_fresh: u32,
    /// How long a healed disk node may take to take writes again.
    pub disk_recovery_timeout: Duration,
    /// Nodes in the cluster (a node leaves only if `n = 3` members stay).
    pub nodes: usize,
    /// Regions in the cluster (the region kinds need 2 or more).
    pub regions: usize,
    /// Whether the previous release's binary is at hand (the `old-release` fault).
    pub previous_release: bool,
    probe_keys_used: u64,
    start: Instant,
}

impl Faults {
    /// An injector; times are measured from `start`.
    pub fn new(firewall: Firewall, disk_node: Option<usize>, start: Instant) -> Faults {
        Faults {
            firewall,
            disk_node,
            records: Vec::new(),
            counts: BTreeMap::new(),
            disk: DiskChecks::default(),
            skew_s: (0, 0),
            clock_verified: 0,
            clock_verified_fresh: 0,
            disk_recovery_timeout: Duration::from_secs(30),
            nodes: 0,
            regions: 0,
            previous_release: false,
            probe_keys_used: 0,
            start,
        }
    }

    /// The kinds this run can inject.
    pub fn kinds(&self) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| *k != FaultKind::DiskFull || self.disk_node.is_some())
            .filter(|k| *k != FaultKind::LeaveJoin || self.nodes > 3)
            .filter(|k| !k.needs_regions() || self.regions >= 2)
            .filter(|k| *k != FaultKind::OldRelease || self.previous_release)
            .collect()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn ballast(cluster: &Cluster, node: usize) -> PathBuf {
        cluster.nodes[node].spec.data_dir.join("chaos-ballast")
    }

    /// Injects a fault of `kind`; returns what to heal and a description. Each kind draws its
    /// targets and parameters from `rng` in a fixed order, so a seed picks the same ones.
    pub async fn inject(
        &mut self,
        cluster: &mut Cluster,
        kind: FaultKind,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let (active, detail) = match kind {
            FaultKind::Kill => self.inject_kill(cluster, rng).await?,
            FaultKind::Pause => self.inject_pause(cluster, rng).await?,
            FaultKind::PartitionIsolate => self.inject_partition_isolate(cluster, rng).await?,
            FaultKind::PartitionSplit => self.inject_partition_split(cluster, rng).await?,
            FaultKind::PartitionOneway => self.inject_partition_oneway(cluster, rng).await?,
            FaultKind::Loss => self.inject_loss(cluster, rng).await?,
            FaultKind::ClockSkew => self.inject_clock_skew(cluster, rng).await?,
            FaultKind::DiskFull => self.inject_disk_full(cluster).await?,
            FaultKind::Delay => self.inject_delay(cluster, rng).await?,
            FaultKind::Replace => self.inject_replace(cluster, rng).await?,
            FaultKind::LeaveJoin => self.inject_leave(cluster, rng).await?,
            FaultKind::RegionCut => self.inject_region_cut(cluster, rng).await?,
            FaultKind::SlowWan => self.inject_slow_wan(cluster, rng).await?,
            FaultKind::OldRelease => self.inject_old_release(cluster, rng).await?,
        };
        *self.counts.entry(kind.name().to_string()).or_default() += 1;
        self.records.push(FaultRecord {
            kind,
            start_ms: self.now_ms(),
            healed_ms: None,
            detail: detail.clone(),
        });
        Ok((active, detail))
    }

    /// `kill`: SIGKILL of a node drawn from `rng`; healed by starting it again on its data.
    async fn inject_kill(
        &self,
        cluster: &mut Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = rng.random_range(0..cluster.len());
        cluster.kill9(i).await?;
        Ok((Active::Killed(i), node_id(cluster, i)))
    }

    /// `old-release`: a node drawn from `rng` stopped with SIGTERM and started on the previous
    /// release over the same data directory (waited for until it serves).
    async fn inject_old_release(
        &self,
        cluster: &mut Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = rng.random_range(0..cluster.len());
        cluster.terminate(i).await?;
        cluster.nodes[i].on_previous = true;
        cluster.start(i).await?;
        Ok((Active::OldRelease(i), node_id(cluster, i)))
    }

    /// `pause`: SIGSTOP of a node drawn from `rng`; healed by SIGCONT.
    async fn inject_pause(
        &self,
        cluster: &mut Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = rng.random_range(0..cluster.len());
        cluster.signal_pause(i, true).await?;
        Ok((Active::Paused(i), node_id(cluster, i)))
    }

    /// `partition-isolate`: a node drawn from `rng` drops all traffic to and from the others.
    async fn inject_partition_isolate(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = rng.random_range(0..cluster.len());
        let ns = cluster.nodes[i].spec.netns.clone();
        self.firewall
            .block(&ns, &other_ips(cluster, i), Direction::Both)
            .await?;
        Ok((
            Active::Partition(vec![i]),
            format!("{} | rest", node_id(cluster, i)),
        ))
    }

    /// `partition-split`: the nodes shuffled by `rng` into a minority (at least one node) and a
    /// majority, each side dropping the other's traffic.
    async fn inject_partition_split(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let n = cluster.len();
        let order = shuffled(n, rng);
        let minority = ((n - 1) / 2).max(1);
        let (a, b) = order.split_at(minority);
        let (a_ips, b_ips) = (node_ips(cluster, a), node_ips(cluster, b));
        for &i in a {
            let ns = cluster.nodes[i].spec.netns.clone();
            self.firewall.block(&ns, &b_ips, Direction::Both).await?;
        }
        for &i in b {
            let ns = cluster.nodes[i].spec.netns.clone();
            self.firewall.block(&ns, &a_ips, Direction::Both).await?;
        }
        let detail = format!("{} | {}", node_ids(cluster, a), node_ids(cluster, b));
        Ok((Active::Partition(order), detail))
    }

    /// `partition-oneway`: a node drawn from `rng` drops only what it receives from the others,
    /// or only what it sends to them (a coin flip).
    async fn inject_partition_oneway(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = rng.random_range(0..cluster.len());
        let direction = if rng.random_bool(0.5) {
            Direction::In
        } else {
            Direction::Out
        };
        let ns = cluster.nodes[i].spec.netns.clone();
        self.firewall
            .block(&ns, &other_ips(cluster, i), direction)
            .await?;
        let detail = match direction {
            Direction::In => format!("{} hears nobody", node_id(cluster, i)),
            _ => format!("nobody hears {}", node_id(cluster, i)),
        };
        Ok((Active::Partition(vec![i]), detail))
    }

    /// `loss`: 1 to N/2 nodes drawn from `rng` each drop a share (10 to 30 %) of what they
    /// receive.
    async fn inject_loss(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let n = cluster.len();
        let order = shuffled(n, rng);
        let count = rng.random_range(1..=(n / 2).max(1));
        let chosen: Vec<usize> = order[..count].to_vec();
        let mut parts = Vec::new();
        for &i in &chosen {
            let percent = rng.random_range(10..=30);
            let ns = cluster.nodes[i].spec.netns.clone();
            self.firewall.loss(&ns, percent).await?;
            parts.push(format!("{} {percent}%", node_id(cluster, i)));
        }
        Ok((Active::Loss(chosen), parts.join(", ")))
    }

    /// `clock-skew`: the clock of a node drawn from `rng` set 30 to 600 s ahead or behind, then
    /// checked through the node's `Date` header or, failing that, a fresh process (counted in
    /// [`Faults::clock_verified`] and [`Faults::clock_verified_fresh`]).
    async fn inject_clock_skew(
        &mut self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = rng.random_range(0..cluster.len());
        let magnitude: i64 = rng.random_range(30..=600);
        let offset = if rng.random_bool(0.5) {
            magnitude
        } else {
            -magnitude
        };
        // Counted before it is set: a node may read the file before this fault is over.
        self.skew_s = (self.skew_s.0.max(offset), self.skew_s.1.min(offset));
        cluster.set_clock_offset(i, offset)?;
        // libfaketime re-reads the file within a second: look for it in `Date`.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = None;
        while Instant::now() < deadline {
            seen = cluster.clock_offset_s(i).await;
            if seen.is_some_and(|s| (s - offset).abs() <= 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let verified = seen.is_some_and(|s| (s - offset).abs() <= 2);
        // hyper caches the Date header until the clock passes the next second it
        // expects, so after a backward jump it stays frozen: then check that a fresh
        // process with the same preload and offset file sees the offset.
        let fresh = cluster.fresh_process_offset_s(i).await;
        let fresh_ok = fresh.is_some_and(|s| (s - offset).abs() <= 2);
        if verified {
            self.clock_verified += 1;
        } else if fresh_ok {
            self.clock_verified_fresh += 1;
        }
        let detail = format!(
            "{} {offset:+} s (node's Date header: {}; fresh process: {})",
            node_id(cluster, i),
            seen.map_or("no answer".to_string(), |s| format!("{s:+} s")),
            fresh.map_or("failed".to_string(), |s| format!("{s:+} s")),
        );
        Ok((Active::ClockSkew(i), detail))
    }

    /// `disk-full`: a ballast fills the disk node's filesystem, then probe writes through the
    /// node check that it refuses writes and stays up ([`Faults::disk`]). Draws nothing from
    /// the run's generator.
    async fn inject_disk_full(
        &mut self,
        cluster: &mut Cluster,
    ) -> anyhow::Result<(Active, String)> {
        let Some(i) = self.disk_node else {
            bail!("no disk node in this run");
        };
        let path = Self::ballast(cluster, i);
        let written = tokio::task::spawn_blocking(move || fill(&path)).await??;
        self.disk.injected += 1;
        let probe = self.probe_full(cluster, i).await;
        // Every second time the node is also killed and started again on its full
        // disk: it must come up and serve reads (opening its storage needs space, and
        // a node that exits in a restart loop serves nothing). Not drawn from `rng`, so
        // a seed's fault schedule stays what it was.
        let restart = if self.disk.injected.is_multiple_of(2) {
            format!("; {}", self.restart_full(cluster, i).await)
        } else {
            String::new()
        };
        Ok((
            Active::DiskFull(i),
            format!(
                "{} ballast {} MiB; {probe}{restart}",
                node_id(cluster, i),
                written >> 20
            ),
        ))
    }

    /// `delay`: 1 or 2 nodes drawn from `rng` each wait 50 to 500 ms (plus a jitter of up to
    /// 300 ms) before every outgoing internode call.
    async fn inject_delay(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let n = cluster.len();
        let order = shuffled(n, rng);
        let count = rng.random_range(1..=2.min(n));
        let mut parts = Vec::new();
        for &i in &order[..count] {
            let delay = rng.random_range(50..=500);
            let jitter = rng.random_range(0..=300);
            cluster.set_delay(i, delay, jitter).await?;
            parts.push(format!("{} {delay}+{jitter} ms", node_id(cluster, i)));
        }
        Ok((Active::Delay(order[..count].to_vec()), parts.join(", ")))
    }

    /// A region drawn from `rng`: its name and the indexes of its nodes and of the others.
    fn draw_region(
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(String, Vec<usize>, Vec<usize>)> {
        let regions = cluster.regions();
        if regions.len() < 2 {
            bail!("a region fault needs 2 or more regions");
        }
        let region = regions[rng.random_range(0..regions.len())].clone();
        let inside = cluster.in_region(&region);
        let outside = (0..cluster.len()).filter(|i| !inside.contains(i)).collect();
        Ok((region, inside, outside))
    }

    /// `region-cut`: a region drawn from `rng` is cut off: every node of it drops all traffic
    /// to and from the nodes of the other regions (clients still reach every node).
    async fn inject_region_cut(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let (region, inside, outside) = Self::draw_region(cluster, rng)?;
        let outside_ips = node_ips(cluster, &outside);
        let mut blocked = Vec::new();
        for &i in &inside {
            let ns = cluster.nodes[i].spec.netns.clone();
            // Recorded before the rule, so that a failure halfway is still healed.
            blocked.push(i);
            if let Err(e) = self
                .firewall
                .block(&ns, &outside_ips, Direction::Both)
                .await
            {
                self.heal_partition(cluster, blocked).await?;
                return Err(e);
            }
        }
        let detail = format!(
            "{region} ({}) | rest ({})",
            node_ids(cluster, &inside),
            node_ids(cluster, &outside)
        );
        Ok((Active::Partition(inside), detail))
    }

    /// `slow-wan`: between a region drawn from `rng` and the others, both ways, every call
    /// waits 100 to 400 ms plus a jitter of up to 100 ms, and on half of the faults a share of
    /// 0 to 5 % of the calls is dropped (the nodes' chaos layer: WAN rules by destination
    /// region).
    async fn inject_slow_wan(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let (region, inside, outside) = Self::draw_region(cluster, rng)?;
        let delay_ms: u64 = rng.random_range(100..=400);
        let jitter_ms: u64 = rng.random_range(0..=100);
        let loss = if rng.random_bool(0.5) {
            f64::from(rng.random_range(0..=50u32)) / 1000.0
        } else {
            0.0
        };
        let rule = |to: &str| {
            serde_json::json!({
                "to": to, "delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss": loss
            })
        };
        let others: Vec<String> = cluster
            .regions()
            .into_iter()
            .filter(|r| *r != region)
            .collect();
        let mut set = Vec::new();
        for i in (0..cluster.len()).filter(|&i| cluster.is_running(i)) {
            let rules: Vec<serde_json::Value> = if inside.contains(&i) {
                others.iter().map(|r| rule(r)).collect()
            } else {
                vec![rule(&region)]
            };
            set.push(i);
            if let Err(e) = cluster.set_wan(i, serde_json::Value::Array(rules)).await {
                self.heal_slow_wan(cluster, set).await?;
                return Err(e);
            }
        }
        let detail = format!(
            "{region} ({}) <-> rest ({}): {delay_ms}+{jitter_ms} ms, loss {:.1} %",
            node_ids(cluster, &inside),
            node_ids(cluster, &outside),
            loss * 100.0
        );
        Ok((Active::SlowWan(set), detail))
    }

    /// A node drawn from `rng` for a membership fault: not the first (whose configuration
    /// bootstraps the cluster and through which changes are staged), nor the disk node.
    fn membership_candidate(
        &self,
        cluster: &Cluster,
        rng: &mut StdRng,
        what: &str,
    ) -> anyhow::Result<usize> {
        let candidates: Vec<usize> = (1..cluster.len())
            .filter(|i| Some(*i) != self.disk_node)
            .collect();
        if candidates.is_empty() {
            bail!("no node can {what} in this run");
        }
        Ok(candidates[rng.random_range(0..candidates.len())])
    }

    /// `replace`: a node drawn from `rng` (not the first, whose configuration bootstraps the
    /// cluster, nor the disk node) is killed with `kill -9` and forced out of the layout through
    /// another node; its data directory is wiped and it is started again, empty, and joined as a
    /// new member in a second commit. If the forced leave is refused (the node holds the only
    /// copy of some partition), the node is restarted on its data instead.
    async fn inject_replace(
        &self,
        cluster: &mut Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = self.membership_candidate(cluster, rng, "be replaced")?;
        let id = node_id(cluster, i);
        cluster.kill9(i).await?;
        let via = cluster.nodes[0].spec.http.clone();
        let leave = serde_json::json!({ "nodes": [id], "force": true }).to_string();
        let staged = membership_change(&via, "/v1/cluster/leave", &leave).await;
        if let Err(refused) = staged {
            cluster.start(i).await?;
            return Ok((
                Active::Replaced(i),
                format!("{id}: forced leave refused ({refused}); restarted on its data"),
            ));
        }
        let data_dir = cluster.nodes[i].spec.data_dir.clone();
        tokio::task::spawn_blocking(move || wipe(&data_dir)).await??;
        cluster.start(i).await?;
        let join = serde_json::json!({ "nodes": [id] }).to_string();
        membership_change(&via, "/v1/cluster/join", &join)
            .await
            .map_err(|e| anyhow::anyhow!("joining the replacement {id}: {e}"))?;
        Ok((
            Active::Replaced(i),
            format!("{id}: killed, forced out, wiped, joined again"),
        ))
    }

    /// `leave-join`: a node drawn from `rng` (as for `replace`) leaves gracefully through the
    /// first node; it keeps running and serving while its partitions move.
    async fn inject_leave(
        &self,
        cluster: &mut Cluster,
        rng: &mut StdRng,
    ) -> anyhow::Result<(Active, String)> {
        let i = self.membership_candidate(cluster, rng, "leave")?;
        let id = node_id(cluster, i);
        let via = cluster.nodes[0].spec.http.clone();
        let leave = serde_json::json!({ "nodes": [id] }).to_string();
        Ok(
            match membership_change(&via, "/v1/cluster/leave", &leave).await {
                Ok(()) => (Active::Leaving(i, true), format!("{id}: leaving")),
                Err(refused) => (
                    Active::Leaving(i, false),
                    format!("{id}: leave refused ({refused})"),
                ),
            },
        )
    }

    /// Waits until node `i` is out of the first node's layout, then joins it again on the data
    /// it kept and waits until it has received its partitions.
    async fn heal_leave(&self, cluster: &Cluster, i: usize) -> anyhow::Result<String> {
        let id = node_id(cluster, i);
        let via = cluster.nodes[0].spec.http.clone();
        let started = Instant::now();
        let timeout = Duration::from_secs(180);
        loop {
            if !crate::cluster::ring_members(&via)
                .await
                .is_some_and(|m| m.contains(&id))
            {
                break;
            }
            if started.elapsed() > timeout {
                bail!("{id}: still in the layout {timeout:?} after its leave");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let left_s = started.elapsed().as_secs_f64();
        let join = serde_json::json!({ "nodes": [id] }).to_string();
        membership_change(&via, "/v1/cluster/join", &join)
            .await
            .map_err(|e| anyhow::anyhow!("joining {id} again: {e}"))?;
        let received = self.heal_replace(cluster, i).await?;
        Ok(format!(
            "left after {left_s:.1} s, joined again; {received}"
        ))
    }

    /// Waits until every node's layout has no partition in transfer (the replacement received
    /// its partitions).
    async fn heal_replace(&self, cluster: &Cluster, i: usize) -> anyhow::Result<String> {
        let started = Instant::now();
        let timeout = Duration::from_secs(120);
        loop {
            let mut done = true;
            for j in 0..cluster.len() {
                done &= cluster.transfers_done(j).await;
            }
            if done {
                return Ok(format!(
                    "{} received its partitions after {:.1} s",
                    node_id(cluster, i),
                    started.elapsed().as_secs_f64()
                ));
            }
            if started.elapsed() > timeout {
                bail!(
                    "{}: partitions still moving after {timeout:?}",
                    node_id(cluster, i)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Keeps a fault in force while it is held (called about once a second): a full disk is
    /// topped up, since RocksDB may free space (a finished flush, a deleted WAL) after the fill.
    pub async fn maintain(&mut self, cluster: &Cluster, active: &Active) {
        if let Active::DiskFull(i) = active {
            let path = Self::ballast(cluster, *i);
            if let Ok(Ok(more)) = tokio::task::spawn_blocking(move || top_up(&path)).await {
                self.disk.topped_up_bytes += more;
            }
        }
    }

    /// Heals `active` (the last injected fault) and stamps its record; returns what was done.
    pub async fn heal(&mut self, cluster: &mut Cluster, active: Active) -> anyhow::Result<String> {
        let note = match active {
            Active::Killed(i) => {
                cluster.start(i).await?;
                "restarted".to_string()
            }
            Active::Paused(i) => {
                cluster.signal_pause(i, false).await?;
                "continued".to_string()
            }
            Active::Partition(nodes) => self.heal_partition(cluster, nodes).await?,
            Active::Loss(nodes) => self.heal_loss(cluster, nodes).await?,
            Active::ClockSkew(i) => {
                cluster.set_clock_offset(i, 0)?;
                "offset +0".to_string()
            }
            Active::DiskFull(i) => self.heal_disk_full(cluster, i).await?,
            Active::Delay(nodes) => self.heal_delay(cluster, nodes).await?,
            Active::SlowWan(nodes) => self.heal_slow_wan(cluster, nodes).await?,
            Active::OldRelease(i) => {
                cluster.terminate(i).await?;
                cluster.nodes[i].on_previous = false;
                cluster.start(i).await?;
                "restarted on this release".to_string()
            }
            Active::Replaced(i) => self.heal_replace(cluster, i).await?,
            Active::Leaving(i, true) => self.heal_leave(cluster, i).await?,
            Active::Leaving(i, false) => self.heal_replace(cluster, i).await?,
        };
        let now = self.now_ms();
        if let Some(last) = self.records.last_mut() {
            last.healed_ms = Some(now);
        }
        Ok(note)
    }

    /// Flushes the partition rules in the namespaces of `nodes`.
    async fn heal_partition(&self, cluster: &Cluster, nodes: Vec<usize>) -> anyhow::Result<String> {
        for i in nodes {
            let ns = cluster.nodes[i].spec.netns.clone();
            self.firewall.heal_partition(&ns).await?;
        }
        Ok("rules flushed".to_string())
    }

    /// Flushes the loss rules in the namespaces of `nodes`.
    async fn heal_loss(&self, cluster: &Cluster, nodes: Vec<usize>) -> anyhow::Result<String> {
        for i in nodes {
            let ns = cluster.nodes[i].spec.netns.clone();
            self.firewall.heal_loss(&ns).await?;
        }
        Ok("rules flushed".to_string())
    }

    /// Removes node `i`'s ballast and waits for its storage to take writes again on its own;
    /// if it does not within [`Faults::disk_recovery_timeout`], restarts it (the operator's
    /// remedy) so the run can go on, and counts the failure in [`Faults::disk`].
    async fn heal_disk_full(&mut self, cluster: &mut Cluster, i: usize) -> anyhow::Result<String> {
        let path = Self::ballast(cluster, i);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        let timeout = self.disk_recovery_timeout;
        let note = match self.probe_recovered(cluster, i, timeout).await {
            Ok(s) => {
                self.disk.recovered += 1;
                self.disk.recovery_s_max = self.disk.recovery_s_max.max(s);
                format!("ballast removed; w=all write ok after {s:.1} s")
            }
            Err(last) => {
                // Not recovered on its own: restart it so the run can go on, and count the
                // failure.
                self.disk.restarted += 1;
                cluster.kill9(i).await?;
                cluster.start(i).await?;
                let after = self.probe_recovered(cluster, i, timeout).await;
                if after.is_ok() {
                    self.disk.recovered_after_restart += 1;
                }
                format!(
                    "ballast removed; NOT recovered within {timeout:?} ({last}); \
                     restarted: writes ok again: {}",
                    after.is_ok()
                )
            }
        };
        self.disk.notes.push(note.clone());
        Ok(note)
    }

    /// Sets the delay of `nodes` back to 0, skipping those not running (they cannot be asked).
    async fn heal_delay(&self, cluster: &Cluster, nodes: Vec<usize>) -> anyhow::Result<String> {
        for i in nodes {
            if cluster.is_running(i) {
                cluster.set_delay(i, 0, 0).await?;
            }
        }
        Ok("delay 0".to_string())
    }

    /// Clears the WAN rules of `nodes`, skipping those not running (they cannot be asked; a
    /// node starts without rules).
    async fn heal_slow_wan(&self, cluster: &Cluster, nodes: Vec<usize>) -> anyhow::Result<String> {
        for i in nodes {
            if cluster.is_running(i) {
                cluster.set_wan(i, serde_json::json!([])).await?;
            }
        }
        Ok("wan rules cleared".to_string())
    }

    /// Resets every node, whatever is in force: continues paused nodes, restarts dead ones,
    /// flushes every rule, zeroes offsets, clears delays and WAN rules, removes the ballast.
    pub async fn heal_everything(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for i in 0..cluster.len() {
            if cluster.is_paused(i) {
                if let Err(e) = cluster.signal_pause(i, false).await {
                    problems.push(e.to_string());
                }
            }
            if !cluster.is_running(i) {
                if let Err(e) = cluster.start(i).await {
                    problems.push(e.to_string());
                }
            }
            let ns = cluster.nodes[i].spec.netns.clone();
            for r in [
                self.firewall.heal_partition(&ns).await,
                self.firewall.heal_loss(&ns).await,
                cluster.set_clock_offset(i, 0),
                cluster.clear_chaos(i).await,
            ] {
                if let Err(e) = r {
                    problems.push(e.to_string());
                }
            }
        }
        if let Some(i) = self.disk_node {
            let path = Self::ballast(cluster, i);
            if path.exists() {
                if let Err(e) = std::fs::remove_file(&path) {
                    problems.push(format!("removing {}: {e}", path.display()));
                }
            }
        }
        if !problems.is_empty() {
            bail!("healing: {}", problems.join("; "));
        }
        Ok(())
    }

    /// Whether node `i` is a replica of `probe/{key}`, from its ring.
    async fn probe_key(&mut self, cluster: &Cluster, i: usize) -> Option<String> {
        let r = crate::http::request(
            &cluster.nodes[i].spec.http,
            "GET",
            "/v1/ring",
            b"",
            crate::cluster::CALL_TIMEOUT,
        )
        .await
        .ok()?;
        let ring = yeskv_client::Ring::from_json(&r.body).ok()?;
        let me = ring
            .nodes()
            .iter()
            .position(|n| n.id == cluster.nodes[i].spec.id)?;
        // A fresh key per probe, so no probe inherits an earlier probe's versions.
        let start = self.probe_keys_used;
        let (k, key) = (start..start + 1000)
            .map(|k| (k, format!("d{k}")))
            .find(|(_, key)| ring.preference(b"probe", key.as_bytes()).contains(&me))?;
        self.probe_keys_used = k + 1;
        Some(key)
    }

    /// While the disk is full: `w=all` writes of large values through the node to a key it
    /// replicates, until one is refused or the node's storage reports it refuses writes; then
    /// checks the node is still up.
    async fn probe_full(&mut self, cluster: &mut Cluster, i: usize) -> String {
        let Some(key) = self.probe_key(cluster, i).await else {
            let note = "no probe key (ring unavailable)".to_string();
            self.disk.notes.push(note.clone());
            return note;
        };
        let clients = match crate::workload::clients(&[cluster.nodes[i].spec.http.clone()]) {
            Ok(c) => c,
            Err(e) => return format!("no probe client: {e}"),
        };
        let client = &clients[0];
        let mut options = WriteOptions {
            w: Some(Quorum::All),
            ..WriteOptions::default()
        };
        let value = bytes::Bytes::from(vec![b'x'; PROBE_VALUE_BYTES]);
        let mut refused = None;
        let mut failing = false;
        for n in 1..=PROBE_WRITES_MAX {
            // Each write replaces the previous one (its context), so the object stays one
            // version: what fills up is the node's disk, not the key.
            match client.put("probe", &key, value.clone(), &options).await {
                Ok(context) => options.context = Some(context),
                Err(e) => {
                    refused = Some((n, e));
                    break;
                }
            }
            if storage_failing(&cluster.nodes[i].spec.http).await == Some(true) {
                failing = true;
                break;
            }
        }
        // After a refused write the gauge is read once more (the loop left before reading it).
        let failing = failing || storage_failing(&cluster.nodes[i].spec.http).await == Some(true);
        if failing {
            self.disk.failing_seen += 1;
        }
        let alive = cluster.reap_unexpected_one(i).is_none()
            && crate::cluster::healthy(&cluster.nodes[i].spec.http).await;
        if alive {
            self.disk.stayed_up += 1;
        }
        let note = match refused {
            Some((n, e)) => {
                self.disk.refused += 1;
                format!(
                    "probe write {n} refused: {e}; storage failing: {failing}; node up: {alive}"
                )
            }
            None => format!(
                "probe writes accepted (through other replicas); storage failing: {failing}; \
                 node up: {alive}"
            ),
        };
        self.disk.notes.push(note.clone());
        note
    }

    /// Kills node `i` and starts it again while its disk is full (topped up first, since the
    /// kill may free what the node held open): it must come up and serve a read. Its storage
    /// opens for writing if releasing its reserve made room, else read-only.
    async fn restart_full(&mut self, cluster: &mut Cluster, i: usize) -> String {
        self.disk.restarted_while_full += 1;
        if let Err(e) = cluster.kill9(i).await {
            return format!("kill before the full-disk restart: {e:#}");
        }
        let path = Self::ballast(cluster, i);
        let _ = tokio::task::spawn_blocking(move || top_up(&path)).await;
        let note = match cluster.start(i).await {
            Err(e) => format!("restarted on the full disk: {e:#}"),
            Ok(()) => {
                let http = cluster.nodes[i].spec.http.clone();
                let read = crate::http::request(
                    &http,
                    "GET",
                    "/v1/kv/probe/restart-read",
                    b"",
                    crate::cluster::CALL_TIMEOUT,
                )
                .await;
                let disk = cluster.status(i).await.map(|s| s["disk"].clone());
                let opened = match &disk {
                    Some(d) if d["writable"] == false => "read-only".to_string(),
                    Some(d) if d["reserve_bytes"] == 0 => "for writing, its reserve spent".into(),
                    Some(_) => "for writing".into(),
                    None => "(no status)".into(),
                };
                match read {
                    Ok(r) if r.status == 200 || r.status == 404 => {
                        self.disk.started_while_full += 1;
                        format!("restarted on the full disk: up, storage open {opened}, reads served")
                    }
                    Ok(r) => format!(
                        "restarted on the full disk: up, storage open {opened}, but a read answered {}",
                        r.status
                    ),
                    Err(e) => format!("restarted on the full disk: up, but a read failed: {e:#}"),
                }
            }
        };
        self.disk.notes.push(note.clone());
        note
    }

    /// After the ballast is gone: small `w=all` writes through the node until one succeeds;
    /// the seconds that took, or the last error after `timeout`.
    async fn probe_recovered(
        &mut self,
        cluster: &mut Cluster,
        i: usize,
        timeout: Duration,
    ) -> Result<f64, String> {
        let t = Instant::now();
        let Some(key) = self.probe_key(cluster, i).await else {
            return Err("no probe key (ring unavailable)".to_string());
        };
        let client = &crate::workload::clients(&[cluster.nodes[i].spec.http.clone()])
            .map_err(|e| e.to_string())?[0];
        let options = WriteOptions {
            w: Some(Quorum::All),
            ..WriteOptions::default()
        };
        let mut last = String::new();
        let http = cluster.nodes[i].spec.http.clone();
        while t.elapsed() < timeout {
            // The node's own storage must take writes again (a write through it alone proves
            // nothing: another primary coordinates it while this node's disk refuses).
            match client
                .put("probe", &key, bytes::Bytes::from_static(b"ok"), &options)
                .await
            {
                Ok(_) => match storage_failing(&http).await {
                    Some(false) => return Ok(t.elapsed().as_secs_f64()),
                    Some(true) => last = "storage still refuses writes".into(),
                    None => last = "no storage figure in /metrics".into(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    }
}

/// Node `i`'s id, as the report names it.
fn node_id(cluster: &Cluster, i: usize) -> String {
    cluster.nodes[i].spec.id.clone()
}

/// The ids of `nodes`, comma-separated.
fn node_ids(cluster: &Cluster, nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|&j| node_id(cluster, j))
        .collect::<Vec<_>>()
        .join(",")
}

/// The addresses of `nodes`, as firewall rules name them.
fn node_ips(cluster: &Cluster, nodes: &[usize]) -> Vec<String> {
    nodes
        .iter()
        .map(|&j| cluster.nodes[j].spec.ip.clone())
        .collect()
}

/// The addresses of every node but `i`.
fn other_ips(cluster: &Cluster, i: usize) -> Vec<String> {
    let others: Vec<usize> = (0..cluster.len()).filter(|&j| j != i).collect();
    node_ips(cluster, &others)
}

/// Whether the node at `http` says its storage refuses writes (`yeskv_storage_write_failing`
/// in `/metrics`); `None` if it does not answer.
async fn storage_failing(http: &str) -> Option<bool> {
    crate::cluster::metric(http, "yeskv_storage_write_failing", Duration::from_secs(2))
        .await
        .map(|v| v > 0.0)
}

/// Writes zeros to `path` until the filesystem is full; returns the bytes written.
fn fill(path: &std::path::Path) -> anyhow::Result<u64> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    fill_file(f)
}

/// Appends to an existing ballast until the filesystem is full again; returns the bytes added.
fn top_up(path: &std::path::Path) -> anyhow::Result<u64> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    fill_file(f)
}

fn fill_file(mut f: std::fs::File) -> anyhow::Result<u64> {
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let mut full = false;
    while written < BALLAST_BYTES_MAX {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => written += k as u64,
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => {
                full = true;
                break;
            }
            Err(e) => return Err(e).context("writing ballast"),
        }
    }
    // Small writes fill the last partial megabyte.
    let small = [0u8; 4096];
    while full && written < BALLAST_BYTES_MAX {
        match f.write(&small) {
            Ok(k) if k > 0 => written += k as u64,
            _ => break,
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

/// `ENOSPC` on Linux.
const fn libc_enospc() -> i32 {
    28
}

/// The node indexes `0..n` in an order drawn from `rng`.
fn shuffled(n: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    order
}

/// Stages a membership change on the node at `via` and commits it, retrying for up to 30 s
/// while the answer is retryable (a joining node not yet in the gossip view, no layout leader).
/// A refusal (`409`: the change would lose data, or is not allowed) is returned as the error,
/// with nothing left staged.
async fn membership_change(via: &str, path: &str, body: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let timeout = crate::cluster::CALL_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match crate::http::request(via, "POST", path, body.as_bytes(), timeout).await {
            Ok(r) if r.status == 200 => {
                match crate::http::request(via, "POST", "/v1/cluster/commit", b"", timeout).await {
                    Ok(c) if c.status == 200 => return Ok(()),
                    Ok(c) => {
                        last = format!("commit: {} {}", c.status, String::from_utf8_lossy(&c.body))
                    }
                    Err(e) => last = format!("commit: {e}"),
                }
            }
            Ok(r) if r.status == 409 => {
                return Err(String::from_utf8_lossy(&r.body).into_owned());
            }
            Ok(r) => last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("not done within 30 s: {last}"))
}

/// Removes everything in `dir` (the directory itself stays: it may be a mount point).
fn wipe(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_faults_are_drawn_only_with_two_or_more_regions() {
        let firewall = Firewall {
            table: "t".to_string(),
        };
        let mut faults = Faults::new(firewall, None, Instant::now());
        faults.nodes = 6;
        let has = |f: &Faults, k| f.kinds().contains(&k);
        for regions in [0, 1] {
            faults.regions = regions;
            assert!(!has(&faults, FaultKind::RegionCut), "{regions} regions");
            assert!(!has(&faults, FaultKind::SlowWan), "{regions} regions");
            assert!(has(&faults, FaultKind::Kill));
        }
        faults.regions = 2;
        assert!(has(&faults, FaultKind::RegionCut) && has(&faults, FaultKind::SlowWan));
        assert_eq!(FaultKind::RegionCut.name(), "region-cut");
        assert_eq!(FaultKind::SlowWan.name(), "slow-wan");
    }
}
