//! `yeskv-chaos`: the real-process chaos runner. Run it through
//! `scripts/chaos`, which builds it, creates the network namespaces, the bridge and the loop
//! filesystem this runner expects, runs it inside the hub namespace, and removes everything
//! afterwards (also on Ctrl-C).
//!
//! A run: start `--nodes` real `yeskv server` processes (one per namespace, three zones, n=3,
//! r=w=2; with `--regions R`, spread round-robin over regions `r1..rR` with zones inside each
//! and `min(nodes in the region, 2)` replicas per region, so that the nodes' default quorum is
//! `local_quorum`) and form the cluster; set the data type of the server-side carts' bucket
//! (`PUT /v1/buckets/dtcart {"datatype":"cart"}`, seen by every node); run the register, cart,
//! server-side cart and TTL workloads ([`workload`])
//! from the hub namespace while injecting one fault at a time ([`faults`]; `region-cut` and
//! `slow-wan` with 2+ regions, `old-release` with `--previous-yeskv`) for `--duration` seconds; stop the workload, heal everything,
//! restart dead nodes and wait until every node sees every member up; read every key through
//! every node until the answers agree (`reads_agreed_s`, bounded) and record them as the
//! `merged` final state — with `r=all`, or with regions `r=local_quorum`, so that each region
//! must serve every write from its own replicas, then `r=all` (the union of every replica)
//! if they never agreed; sample every node's
//! anti-entropy roots (`/v1/status`) once a second until every partition's replicas agree
//! (`converged_s`, from the heal; the checker's convergence rule, bound `--converge-bound-s`);
//! judge the history with `yeskv-check` (expiry judged with the clock-skew faults' spread plus
//! [`EXPIRY_MARGIN_MS`] as the skew bound); write the report (`--report FILE.json`), the history next to it
//! (`FILE.history.json`, replayable with the `yeskv-check` binary) and the node logs
//! (`FILE.logs/`). Exit status 0 only when the checker, the crash watch and the disk checks
//! all pass; 1 on a violation; 2 when the run itself could not be carried out; 130 when
//! interrupted.

mod cluster;
mod faults;
mod http;
use http::JsonBody as _;
mod net;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use yeskv_check::history::{FinalRead, History};
use yeskv_client::{Quorum, ReadOptions};

use cluster::{Cluster, Settings};
use faults::{FaultKind, Faults};
use net::Firewall;
use workload::{Params, Recorder, Shared};

/// Added to the spread of the clock-skew faults' offsets for the expiry rule's skew bound, ms:
/// the nodes' clocks may be up to 2 s off the runner's at the start (`start_cluster`), and a
/// final read's time is when it was sent.
const EXPIRY_MARGIN_MS: u64 = 3_000;

/// Flags (scripts/chaos passes the namespace and path ones).
#[derive(Parser, Debug)]
#[command(
    name = "yeskv-chaos",
    about = "Real-process chaos run (use scripts/chaos)"
)]
struct Args {
    /// Nodes (3 to 9).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Regions `r1..rR` the nodes are spread over round-robin, with `min(nodes in the region,
    /// 2)` replicas in each (0: none, one implicit region; at most the nodes and 8).
    #[arg(long, default_value_t = 0)]
    regions: usize,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Report file (JSON); the history and logs go next to it.
    #[arg(long)]
    report: PathBuf,
    /// Seed of the fault schedule and workload choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Node `i`'s network namespace is `{netns_prefix}{i}`.
    #[arg(long)]
    netns_prefix: String,
    /// Node `i`'s address is `{ip_prefix}.{10+i}`.
    #[arg(long)]
    ip_prefix: String,
    /// The nftables table name to use in the node namespaces (unique per run).
    #[arg(long)]
    nft_table: String,
    /// The yeskv binary.
    #[arg(long)]
    yeskv: PathBuf,
    /// The previous release's yeskv binary (`scripts/prev-release`): adds the `old-release`
    /// fault, a node running the previous release over its data for a while, as in a rolling
    /// upgrade (none: no such faults).
    #[arg(long)]
    previous_yeskv: Option<PathBuf>,
    /// libfaketime to preload into the nodes.
    #[arg(long)]
    faketime_lib: PathBuf,
    /// Scratch directory (node data under `data/`); the script removes it.
    #[arg(long)]
    work_dir: PathBuf,
    /// 1-based node whose data dir (`{work_dir}/data/n{i}`) is a small mounted filesystem, for
    /// the disk-full fault (none: no disk-full faults).
    #[arg(long)]
    disk_node: Option<usize>,
    /// Only these fault kinds, comma-separated (default: every kind).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Plant a harness-level bug to prove the run can fail: `drop-acked-value` removes one
    /// acknowledged register value from the final state before judging (must report lost >= 1).
    #[arg(long)]
    plant_bug: Option<String>,
    /// How long the final `r=all` reads through every node may take to agree, in seconds.
    #[arg(long, default_value_t = 60)]
    converge_timeout_s: u64,
    /// Within how many seconds of the heal every partition's replicas must report the same
    /// anti-entropy root.
    #[arg(long, default_value_t = 120)]
    converge_bound_s: u64,
    /// Run the nodes as production does: HTTPS and mutual TLS (a CA and node certificates made
    /// for the run), API keys required (the runner and workloads carry an admin key), contexts
    /// signed and gossip sealed with a cluster keyring.
    #[arg(long)]
    secure: bool,
}

/// Ends the run with this exit status.
enum Outcome {
    Passed,
    Violations,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let run = run(args);
    let interrupted = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    };
    tokio::select! {
        result = run => match result {
            Ok(Outcome::Passed) => ExitCode::SUCCESS,
            Ok(Outcome::Violations) => ExitCode::from(1),
            Err(e) => {
                eprintln!("chaos: error: {e:#}");
                ExitCode::from(2)
            }
        },
        signal = interrupted => {
            // Dropping the run kills every node (kill_on_drop); the script removes the rest.
            eprintln!("chaos: {signal}: stopping the nodes");
            ExitCode::from(130)
        }
    }
}

fn progress(start: Instant, line: &str) {
    println!("[{:>6.1}s] {line}", start.elapsed().as_secs_f64());
}

/// Where a run writes: the report, the history next to it, the node logs.
struct Paths {
    report: PathBuf,
    history: PathBuf,
    logs: PathBuf,
}

impl Paths {
    /// `FILE.json` → `FILE.history.json` and `FILE.logs/` beside it (the logs of an earlier run
    /// with the same name are removed).
    fn beside(report: &std::path::Path) -> anyhow::Result<Paths> {
        let stem = report
            .file_stem()
            .map_or("chaos".into(), |s| s.to_string_lossy().into_owned());
        let dir = report
            .parent()
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let logs = dir.join(format!("{stem}.logs"));
        if logs.exists() {
            std::fs::remove_dir_all(&logs)
                .with_context(|| format!("clearing {}", logs.display()))?;
        }
        Ok(Paths {
            report: report.to_path_buf(),
            history: dir.join(format!("{stem}.history.json")),
            logs,
        })
    }
}

async fn run(args: Args) -> anyhow::Result<Outcome> {
    if !(3..=9).contains(&args.nodes) {
        bail!("--nodes must be between 3 and 9");
    }
    if args.regions > args.nodes.min(8) {
        bail!("--regions must be at most the nodes and 8 (0: no regions)");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let paths = Paths::beside(&args.report)?;
    let start = Instant::now();
    let disk_node = match args.disk_node {
        Some(i) if (1..=args.nodes).contains(&i) => Some(i - 1),
        Some(i) => bail!("--disk-node {i} is not a node"),
        None => None,
    };
    let firewall = Firewall {
        table: args.nft_table.clone(),
    };
    let mut cluster = start_cluster(&args, &paths, &firewall, seed, start).await?;
    cluster
        .set_bucket(
            workload::DT_CART_BUCKET,
            &json!({"datatype": "cart"}),
            Duration::from_secs(60),
        )
        .await
        .context("typing the server-side carts' bucket")?;
    progress(
        start,
        &format!(
            "bucket {} has data type cart on every node",
            workload::DT_CART_BUCKET
        ),
    );
    let short = args.duration < 120;
    let mut workload = Workload::start(&cluster, disk_node, seed, start)?;
    let mut faults = Faults::new(firewall, disk_node, start);
    faults.disk_recovery_timeout = Duration::from_secs(if short { 15 } else { 30 });
    faults.nodes = args.nodes;
    faults.regions = args.regions;
    faults.previous_release = args.previous_yeskv.is_some();
    let kinds = fault_kinds(&faults, &args.faults)?;
    let mut trouble = Trouble::default();
    let window = Window {
        end: Instant::now() + Duration::from_secs(args.duration),
        short,
    };
    inject_faults(
        &mut cluster,
        &mut faults,
        &kinds,
        &workload,
        &mut trouble,
        &mut rng,
        &window,
    )
    .await;
    tokio::time::sleep(window.end.saturating_duration_since(Instant::now())).await;
    workload.stop().await;
    trouble.note_exits(&mut cluster, &workload, false).await;
    let settled = heal_and_settle(&mut cluster, &mut faults, &workload, &mut trouble, &args).await;
    trouble.note_exits(&mut cluster, &workload, false).await;
    cluster.stop_all().await;
    judge(&args, seed, &paths, &workload, &faults, trouble, settled)
}

/// Starts the nodes (firewall tables first) and forms the cluster; checks that every node's
/// clock agrees with the runner's (libfaketime is preloaded with offset 0).
async fn start_cluster(
    args: &Args,
    paths: &Paths,
    firewall: &Firewall,
    seed: u64,
    start: Instant,
) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::prepare(Settings {
        nodes: args.nodes,
        regions: args.regions,
        netns_prefix: args.netns_prefix.clone(),
        ip_prefix: args.ip_prefix.clone(),
        yeskv_bin: args.yeskv.clone(),
        previous_bin: args.previous_yeskv.clone(),
        faketime_lib: args.faketime_lib.clone(),
        data_root: args.work_dir.join("data"),
        work_dir: args.work_dir.join("conf"),
        log_dir: paths.logs.clone(),
        secure: args.secure,
    })?;
    for node in &cluster.nodes {
        firewall.install(&node.spec.netns).await?;
    }
    let shape = match cluster.replication() {
        Some(replication) => format!(
            "{} regions round-robin, zones inside each, replicas per region {replication}, \
             default quorum local_quorum",
            args.regions
        ),
        None => format!("zones {}, n=3 r=2 w=2", cluster::ZONES),
    };
    progress(
        start,
        &format!(
            "seed {seed}: starting {} nodes ({shape}), logs in {}",
            args.nodes,
            paths.logs.display()
        ),
    );
    for i in 0..cluster.len() {
        cluster.start(i).await?;
    }
    let version = cluster.form(Duration::from_secs(90)).await?;
    progress(start, &format!("cluster formed: layout version {version}"));
    for i in 0..cluster.len() {
        match cluster.clock_offset_s(i).await {
            Some(s) if s.abs() <= 2 => {}
            other => bail!(
                "{}: clock offset {other:?} s with faketime at +0",
                cluster.nodes[i].spec.id
            ),
        }
    }
    Ok(cluster)
}

/// The register and cart workers, and the progress line printed every 10 s while they run.
struct Workload {
    /// The workers' clients, recorder, node ids and parameters.
    shared: Arc<Shared>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    ticker: tokio::task::JoinHandle<()>,
    /// The fault being held, for the progress line.
    status: Arc<Mutex<String>>,
    start: Instant,
}

impl Workload {
    fn start(
        cluster: &Cluster,
        disk_node: Option<usize>,
        seed: u64,
        start: Instant,
    ) -> anyhow::Result<Workload> {
        let nodes = cluster.len();
        let params = Params {
            register_keys: 12,
            cart_keys: 6,
            dt_cart_keys: 6,
            ttl_keys: 8,
            register_workers: 2 * nodes,
            cart_workers: nodes,
            dt_cart_workers: nodes,
            ttl_workers: nodes,
            think_ms_min: 20,
            think_ms_max: 80,
        };
        let recorder = Arc::new(Recorder::new(start));
        let node_ids: Vec<String> = cluster.nodes.iter().map(|n| n.spec.id.clone()).collect();
        let http_addrs: Vec<String> = cluster.nodes.iter().map(|n| n.spec.http.clone()).collect();
        let shared = Arc::new(Shared {
            clients: workload::clients(&http_addrs)?,
            http_addrs: http_addrs.clone(),
            node_ids: node_ids.clone(),
            recorder: recorder.clone(),
            stop: AtomicBool::new(false),
            params: params.clone(),
        });
        let stride = (params.register_workers
            + params.cart_workers
            + params.dt_cart_workers
            + params.ttl_workers) as u64;
        let mut workers = Vec::new();
        for w in 0..params.register_workers as u64 {
            let worker = workload::register_worker(shared.clone(), w, stride, seed);
            workers.push(tokio::spawn(worker));
        }
        for w in 0..params.cart_workers as u64 {
            let index = params.register_workers as u64 + w;
            let worker = workload::cart_worker(shared.clone(), index, stride, seed);
            workers.push(tokio::spawn(worker));
        }
        let first_dt = (params.register_workers + params.cart_workers) as u64;
        for w in 0..params.dt_cart_workers as u64 {
            let worker = workload::dt_cart_worker(shared.clone(), first_dt + w, stride, seed);
            workers.push(tokio::spawn(worker));
        }
        let first_ttl = first_dt + params.dt_cart_workers as u64;
        for w in 0..params.ttl_workers as u64 {
            let worker = workload::ttl_worker(shared.clone(), first_ttl + w, stride, seed);
            workers.push(tokio::spawn(worker));
        }
        let status = Arc::new(Mutex::new(String::from("none")));
        let disk = disk_node.map(|i| (node_ids[i].clone(), cluster.nodes[i].spec.http.clone()));
        let ticker = tokio::spawn(ticker(recorder.clone(), status.clone(), disk, start));
        Ok(Workload {
            shared,
            workers,
            ticker,
            status,
            start,
        })
    }

    /// What the progress line names as the current fault.
    fn set_status(&self, line: String) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = line;
    }

    /// Stops the workers (every request has a timeout, so this ends) and the progress line.
    async fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        progress(self.start, "workload stopping");
        for w in self.workers.drain(..) {
            let _ = w.await;
        }
        self.ticker.abort();
    }

    /// Every key the workload touched, with its bucket.
    fn keys(&self) -> Vec<(String, &'static str)> {
        let p = &self.shared.params;
        let named = |prefix: &'static str, count: usize, bucket: &'static str| {
            (0..count).map(move |k| (format!("{prefix}{k}"), bucket))
        };
        named("r", p.register_keys, workload::REGISTER_BUCKET)
            .chain(named("c", p.cart_keys, workload::CART_BUCKET))
            .chain(named("d", p.dt_cart_keys, workload::DT_CART_BUCKET))
            .chain(named("t", p.ttl_keys, workload::TTL_BUCKET))
            .collect()
    }
}

/// The progress line every 10 s; once a minute also what the disk node's small disk holds (a
/// disk that fills up over a long run should show where the space goes while it happens).
async fn ticker(
    recorder: Arc<Recorder>,
    status: Arc<Mutex<String>>,
    disk: Option<(String, String)>,
    start: Instant,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        if let (Some((id, addr)), true) = (&disk, ticks.is_multiple_of(6)) {
            progress(start, &format!("disk {id}: {}", disk_line(addr).await));
        }
        let s = status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        progress(
            start,
            &format!(
                "ops {} (ok {}, info {}); fault: {s}",
                recorder.completed.load(Ordering::Relaxed),
                recorder.ok.load(Ordering::Relaxed),
                recorder.info.load(Ordering::Relaxed),
            ),
        );
    }
}

/// What went wrong beside the checker's verdict: nodes that exited on their own, and faults
/// that could not be injected or healed.
#[derive(Default)]
struct Trouble {
    crashes: Vec<String>,
    fault_errors: Vec<String>,
}

impl Trouble {
    /// Records every node that exited without being told to; restarts them if `restart`.
    async fn note_exits(&mut self, cluster: &mut Cluster, workload: &Workload, restart: bool) {
        let node_ids = &workload.shared.node_ids;
        for (i, status) in cluster.reap_unexpected() {
            let line = if restart {
                format!("{} exited unexpectedly ({status}); restarting", node_ids[i])
            } else {
                format!("{} exited unexpectedly ({status})", node_ids[i])
            };
            progress(workload.start, &line);
            self.crashes.push(line);
            if restart {
                if let Err(e) = cluster.start(i).await {
                    self.fault_errors
                        .push(format!("restarting {}: {e:#}", node_ids[i]));
                }
            }
        }
    }
}

/// The fault kinds of this run: every kind the runner can inject, or those `--faults` names.
fn fault_kinds(faults: &Faults, names: &[String]) -> anyhow::Result<Vec<FaultKind>> {
    if names.is_empty() {
        return Ok(faults.kinds());
    }
    names
        .iter()
        .map(|name| {
            faults
                .kinds()
                .into_iter()
                .find(|k| k.name() == name)
                .with_context(|| format!("--faults: unknown or unavailable kind {name:?}"))
        })
        .collect()
}

/// When the faults end, and whether the run is short (under 120 s: faults held and spaced
/// more briefly, so that a short run still sees every kind).
#[derive(Clone, Copy)]
struct Window {
    end: Instant,
    short: bool,
}

/// Injects one fault at a time until the window ends: every kind once per shuffled round, each
/// held a few seconds (kept up meanwhile, e.g. a disk kept full), healed, then a short gap.
async fn inject_faults(
    cluster: &mut Cluster,
    faults: &mut Faults,
    kinds: &[FaultKind],
    workload: &Workload,
    trouble: &mut Trouble,
    rng: &mut StdRng,
    window: &Window,
) {
    let start = workload.start;
    let Window { end, short } = *window;
    let (hold_s, gap_s) = if short {
        (3..=5, 1..=2)
    } else {
        (5..=10, 2..=4)
    };
    let mut round: Vec<FaultKind> = Vec::new();
    tokio::time::sleep(Duration::from_secs(if short { 2 } else { 5 })).await;
    while Instant::now() + Duration::from_secs(*hold_s.start()) < end {
        trouble.note_exits(cluster, workload, true).await;
        if round.is_empty() {
            round = kinds.to_vec();
            round.shuffle(rng);
        }
        let kind = round.pop().expect("refilled above");
        let active = match faults.inject(cluster, kind, rng).await {
            Ok((active, detail)) => {
                progress(start, &format!("inject {}: {detail}", kind.name()));
                let short_detail = detail.split(';').next().unwrap_or("");
                workload.set_status(format!("{} {short_detail}", kind.name()));
                active
            }
            Err(e) => {
                let line = format!("injecting {}: {e:#}", kind.name());
                progress(start, &line);
                trouble.fault_errors.push(line);
                continue;
            }
        };
        let hold = Duration::from_secs(rng.random_range(hold_s.clone()));
        let held_until = (Instant::now() + hold).min(end);
        while Instant::now() < held_until {
            let step = held_until.saturating_duration_since(Instant::now());
            tokio::time::sleep(step.min(Duration::from_secs(1))).await;
            faults.maintain(cluster, &active).await;
        }
        match faults.heal(cluster, active).await {
            Ok(note) => progress(start, &format!("heal {}: {note}", kind.name())),
            Err(e) => {
                let line = format!("healing {}: {e:#}", kind.name());
                progress(start, &line);
                trouble.fault_errors.push(line);
            }
        }
        workload.set_status("none".into());
        let gap = Duration::from_secs(rng.random_range(gap_s.clone()));
        tokio::time::sleep(gap.min(end.saturating_duration_since(Instant::now()))).await;
    }
}

/// What the cluster looked like once healed.
struct Settled {
    healed_at_ms: u64,
    all_up: bool,
    final_reads: Vec<FinalRead>,
    reads_agreed_s: Option<f64>,
    digests: Vec<yeskv_check::history::DigestSample>,
    /// Tombstone copies reaped, counted since each node's last start (the reaper ran under
    /// the faults: the nodes' grace is 5 s).
    reaped: u64,
}

/// Heals everything and restarts the dead; then, side by side: waits until every node sees
/// every member up and reads every key with `r=all` through every node until they agree, and
/// samples the anti-entropy roots from the heal on (sampled only after the reads, a run in
/// which one node never came back measured 181 s for replicas that had agreed long before).
async fn heal_and_settle(
    cluster: &mut Cluster,
    faults: &mut Faults,
    workload: &Workload,
    trouble: &mut Trouble,
    args: &Args,
) -> Settled {
    let (start, recorder) = (workload.start, &workload.shared.recorder);
    if let Err(e) = faults.heal_everything(cluster).await {
        trouble.fault_errors.push(format!("{e:#}"));
    }
    let healed_at_ms = recorder.now_ms();
    let until_ms = healed_at_ms + args.converge_bound_s * 1000;
    let cluster = &*cluster;
    let sampling = sample_roots(cluster, &workload.shared.node_ids, recorder, until_ms);
    let settle = async {
        let up_deadline = Instant::now() + Duration::from_secs(120);
        let mut all_up = false;
        while !all_up && Instant::now() < up_deadline {
            all_up = true;
            for i in 0..cluster.len() {
                all_up &= cluster.sees_all_up(i).await;
            }
            if !all_up {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        progress(
            start,
            &format!(
                "healed; every node sees every member up: {all_up} (after {:.1} s)",
                (recorder.now_ms() - healed_at_ms) as f64 / 1000.0
            ),
        );
        let timeout = Duration::from_secs(args.converge_timeout_s);
        let quorum = final_read_quorum(args);
        let keys = workload.keys();
        let (mut reads, agreed_s) = final_reads(&workload.shared, &keys, timeout, quorum).await;
        progress(
            start,
            &format!(
                "final reads: {} keys; r={quorum} reads through every node{} agree: {}",
                reads.len(),
                if args.regions > 0 {
                    " (every region)"
                } else {
                    ""
                },
                agreed_s.map_or("no".to_string(), |s| format!("after {s:.1} s"))
            ),
        );
        if agreed_s.is_none() && quorum != Quorum::All {
            // The regions never served the same answers: judge the union of every replica.
            let (union, _) =
                final_reads(&workload.shared, &keys, Duration::ZERO, Quorum::All).await;
            let mut by_key: BTreeMap<String, FinalRead> =
                reads.into_iter().map(|r| (r.key.clone(), r)).collect();
            by_key.extend(union.into_iter().map(|r| (r.key.clone(), r)));
            reads = by_key.into_values().collect();
            progress(
                start,
                "final reads: the regions did not agree; the final state is one r=all read per key",
            );
        }
        (all_up, reads, agreed_s)
    };
    let (digests, (all_up, final_reads, reads_agreed_s)) = tokio::join!(sampling, settle);
    progress(
        start,
        &format!("anti-entropy roots sampled: {} samples", digests.len()),
    );
    let mut reaped = 0u64;
    for i in 0..cluster.len() {
        reaped += cluster
            .metric(i, "yeskv_tombstones_reaped_total")
            .await
            .unwrap_or(0.0) as u64;
    }
    Settled {
        healed_at_ms,
        all_up,
        final_reads,
        reads_agreed_s,
        digests,
        reaped,
    }
}

/// Judges the history with `yeskv-check`, adds the runner's own checks (crashes, the full-disk
/// checks, every member up), writes the history and the report, and prints the verdict.
fn judge(
    args: &Args,
    seed: u64,
    paths: &Paths,
    workload: &Workload,
    faults: &Faults,
    trouble: Trouble,
    settled: Settled,
) -> anyhow::Result<Outcome> {
    let (start, recorder, node_ids) = (
        workload.start,
        &workload.shared.recorder,
        &workload.shared.node_ids,
    );
    let mut final_reads = settled.final_reads;
    if let Some(bug) = &args.plant_bug {
        plant(bug, &recorder.events(), &mut final_reads)?;
        progress(
            start,
            &format!("planted bug {bug}: the checker must fail this run"),
        );
    }
    let history = History {
        events: recorder.events(),
        healed_at_ms: Some(settled.healed_at_ms),
        final_reads,
        digests: settled.digests,
    };
    std::fs::write(&paths.history, serde_json::to_vec(&history)?)
        .with_context(|| format!("writing {}", paths.history.display()))?;
    let bound_ms = args.converge_bound_s * 1000;
    let skew_bound_ms = skew_bound_ms(faults);
    let options = yeskv_check::Options {
        check_convergence: true,
        convergence_bound_ms: bound_ms,
        skew_bound_ms,
        ..yeskv_check::Options::default()
    };
    let report = yeskv_check::check(&history, &options);
    let converged_s = report.converged_ms.map(|ms| ms as f64 / 1000.0);

    let Trouble {
        crashes,
        fault_errors,
    } = trouble;
    let all_up = settled.all_up;
    let failures = failures(&report, &crashes, &faults.disk, all_up);
    let passed = failures.is_empty();
    let summary = recorder.summary();
    let reaped = settled.reaped;
    let doc = json!({
        "passed": passed,
        "failures": failures,
        "acked": report.acked,
        "lost": report.lost,
        "resurrected": report.resurrected,
        "expired_visible": report.expired_visible,
        "ttl_judged": report.ttl_judged,
        "skew_bound_ms": skew_bound_ms,
        "converged_s": converged_s,
        "reads_agreed_s": settled.reads_agreed_s,
        "tombstones_reaped_since_last_start": reaped,
        "faults": faults.counts,
        "ops": summary,
        "params": {
            "nodes": args.nodes,
            "duration_s": args.duration,
            "seed": seed,
            "zones": cluster::ZONES,
            "n": 3, "r": 2, "w": 2,
            "regions": args.regions,
            "replication": cluster::replication(args.nodes, args.regions),
            "final_read_quorum": final_read_quorum(args).to_string(),
            "workload": workload.shared.params,
            "request_timeout_ms": workload::REQUEST_TIMEOUT.as_millis() as u64,
            "disk_node": faults.disk_node.map(|i| node_ids[i].clone()),
        },
        "clock_skew_verified": {
            "node_date_header": faults.clock_verified,
            "fresh_process_only": faults.clock_verified_fresh,
        },
        "disk_full": faults.disk,
        "unexpected_exits": crashes,
        "fault_errors": fault_errors,
        "all_up_after_heal": all_up,
        "healed_at_ms": settled.healed_at_ms,
        "fault_log": faults.records,
        "history": paths.history.display().to_string(),
        "logs": paths.logs.display().to_string(),
        "check": report,
    });
    std::fs::write(&paths.report, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", paths.report.display()))?;

    print_verdict(
        args, seed, paths, recorder, &report, faults, reaped, &failures,
    )
}

/// The run's last lines: what it did, where its report and history are, and the verdict (with
/// the first violations when it failed).
#[allow(clippy::too_many_arguments)]
fn print_verdict(
    args: &Args,
    seed: u64,
    paths: &Paths,
    recorder: &Recorder,
    report: &yeskv_check::Report,
    faults: &Faults,
    reaped: u64,
    failures: &[String],
) -> anyhow::Result<Outcome> {
    let summary = recorder.summary();
    let count = |k: &str| summary.get(k).map_or(0, |s| s.ok);
    let converged_s = report.converged_ms.map(|ms| ms as f64 / 1000.0);
    let bound_ms = args.converge_bound_s * 1000;
    println!(
        "chaos: {} nodes{}, {} s, seed {seed}: ops ok {} (reads {}, writes {}, deletes {}, cart adds {}, server-side cart adds {}, removes {}, reads {}, TTL-key writes {}), acked {}, lost {}, resurrected {}, TTL'd writes checked after their expiry {} (skew bound {} s), of them still seen {}, converged_s {}, reaped {reaped}, faults {}",
        args.nodes,
        if args.regions > 0 {
            format!(" in {} regions", args.regions)
        } else {
            String::new()
        },
        args.duration,
        recorder.ok.load(Ordering::Relaxed),
        count("read"),
        count("write"),
        count("delete"),
        count("cart_add"),
        count("dt_add"),
        count("dt_remove"),
        count("dt_read"),
        count("ttl_key_write"),
        report.acked,
        report.lost,
        report.resurrected,
        report.ttl_judged,
        skew_bound_ms(faults) / 1000,
        report.expired_visible,
        converged_s.map_or("null".into(), |s| format!("{s:.1}")),
        faults
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "chaos: report {}, history {} (replay: yeskv-check {} --convergence-bound-ms {bound_ms} \
         --skew-bound-ms {})",
        paths.report.display(),
        paths.history.display(),
        paths.history.display(),
        skew_bound_ms(faults)
    );
    if failures.is_empty() {
        println!("chaos: PASS");
        Ok(Outcome::Passed)
    } else {
        for f in failures {
            println!("chaos: FAIL: {f}");
        }
        for v in report.violations.iter().take(10) {
            println!("chaos: violation: {}", serde_json::to_string(v)?);
        }
        Ok(Outcome::Violations)
    }
}

/// Why the run fails, if it does: the checker's violations, nodes that exited on their own,
/// full-disk checks that did not hold (storage seen failing, the node staying up, recovering on
/// its own, starting on its full disk), and a healed cluster in which not every member was seen
/// up.
fn failures(
    report: &yeskv_check::Report,
    crashes: &[String],
    disk: &faults::DiskChecks,
    all_up: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    if !report.ok() {
        failures.push(format!(
            "checker: {} violation(s), {} history error(s)",
            report.violations.len(),
            report.errors.len()
        ));
    }
    if !crashes.is_empty() {
        failures.push(format!("{} unexpected node exit(s)", crashes.len()));
    }
    let disk_ok = disk.recovered == disk.injected
        && disk.stayed_up == disk.injected
        && disk.failing_seen == disk.injected
        && disk.started_while_full == disk.restarted_while_full;
    if !disk_ok {
        failures.push(format!(
            "full disk: {} injected, storage failing seen {}, node stayed up {}, recovered on its own {} (restarted {}), started on the full disk {} of {}",
            disk.injected,
            disk.failing_seen,
            disk.stayed_up,
            disk.recovered,
            disk.restarted,
            disk.started_while_full,
            disk.restarted_while_full
        ));
    }
    if !all_up {
        failures.push("the healed cluster never saw every member up".into());
    }
    failures
}

/// The expiry rule's skew bound of the run: the spread of the clock-skew faults' offsets (the
/// most two nodes' clocks were apart) plus [`EXPIRY_MARGIN_MS`].
fn skew_bound_ms(faults: &Faults) -> u64 {
    let (ahead, behind) = faults.skew_s;
    ahead.abs_diff(behind) * 1000 + EXPIRY_MARGIN_MS
}

/// The quorum of the final reads: `all` (every replica), or with regions `local_quorum`, so
/// that every node answers from its own region's replicas and agreement means every region
/// serves every write.
fn final_read_quorum(args: &Args) -> Quorum {
    if args.regions > 0 {
        Quorum::LocalQuorum
    } else {
        Quorum::All
    }
}

/// Reads every key with `r=quorum` through every node, every second, until all nodes answer
/// every key alike or `timeout` passes (one pass with a zero timeout). Returns the `merged`
/// final reads (the agreed answers, or, without agreement, each key's first successful answer),
/// each with the time its first read was sent, and the seconds agreement took. A server-side
/// cart's answer is its items joined by `,` (none for a `404`).
async fn final_reads(
    shared: &Shared,
    keys: &[(String, &'static str)],
    timeout: Duration,
    quorum: Quorum,
) -> (Vec<FinalRead>, Option<f64>) {
    let t = Instant::now();
    let all = ReadOptions { r: Some(quorum) };
    let mut first: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
    loop {
        let mut agreed = true;
        for (key, bucket) in keys {
            let sent_ms = shared.recorder.now_ms();
            let mut answers: Vec<Option<Vec<String>>> = Vec::new();
            for (client, addr) in shared.clients.iter().zip(&shared.http_addrs) {
                let answer = if *bucket == workload::DT_CART_BUCKET {
                    workload::dt_read(addr, key, Some(quorum))
                        .await
                        .ok()
                        .map(|(items, _)| match items.is_empty() {
                            true => Vec::new(),
                            false => vec![items.join(",")],
                        })
                } else {
                    client.read(*bucket, key, &all).await.ok().map(|r| {
                        let mut v = workload::values_of(&r);
                        v.sort();
                        v
                    })
                };
                if let Some(v) = &answer {
                    first
                        .entry(key.clone())
                        .or_insert_with(|| (v.clone(), sent_ms));
                }
                answers.push(answer);
            }
            let agree = answers.iter().all(|a| a.is_some() && *a == answers[0]);
            if agree {
                if let Some(Some(v)) = answers.first() {
                    first.insert(key.clone(), (v.clone(), sent_ms));
                }
            }
            agreed &= agree;
        }
        let converged = agreed.then(|| t.elapsed().as_secs_f64());
        if agreed || t.elapsed() >= timeout {
            let reads = first
                .into_iter()
                .map(|(key, (values, time_ms))| FinalRead {
                    key,
                    node: yeskv_check::MERGED_NODE.to_string(),
                    values,
                    time_ms: Some(time_ms),
                })
                .collect();
            return (reads, converged);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the disk of the node at `addr` holds, from its `/v1/status`, in one line.
async fn disk_line(addr: &str) -> String {
    let status = match http::request(addr, "GET", "/v1/status", b"", Duration::from_secs(2))
        .await
        .ok()
        .and_then(|r| r.json().ok())
    {
        Some(s) => s,
        None => return "no answer".into(),
    };
    let d: &serde_json::Value = &status["disk"];
    let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / f64::from(1u32 << 20);
    let u = &d["used_bytes"];
    format!(
        "free {:.1} of {:.1} MiB; sst {:.1}, wal {:.1}, manifest {:.1}, info log {:.1}, other {:.1}, reserve {:.1} MiB; hints {:.1} MiB; writable {}",
        mib(&d["free_bytes"]),
        mib(&d["total_bytes"]),
        mib(&u["sst"]),
        mib(&u["wal"]),
        mib(&u["manifest"]),
        mib(&u["info_log"]),
        mib(&u["other"]),
        mib(&d["reserve_bytes"]),
        mib(&status["hint_bytes"]),
        d["writable"],
    )
}

/// Samples every node's anti-entropy roots (`/v1/status`: `merkle_root` per partition it is a
/// replica of; `null` while a tree rebuilds) once a second, until every partition's replicas
/// report the same root or `until_ms` (run time) passes.
async fn sample_roots(
    cluster: &Cluster,
    node_ids: &[String],
    recorder: &Recorder,
    until_ms: u64,
) -> Vec<yeskv_check::history::DigestSample> {
    let mut samples = Vec::new();
    loop {
        let time_ms = recorder.now_ms();
        let mut roots: BTreeMap<u32, std::collections::BTreeSet<String>> = BTreeMap::new();
        let mut answered = 0;
        for (i, node) in node_ids.iter().enumerate() {
            let status = cluster.status(i).await;
            let Some(partitions) = status.as_ref().and_then(|s| s["partitions"].as_array()) else {
                continue;
            };
            answered += 1;
            for p in partitions {
                let Some(id) = p["id"].as_u64() else { continue };
                // A tree being rebuilt agrees with nothing, not even another one.
                let digest = p["merkle_root"]
                    .as_str()
                    .map_or_else(|| format!("tree-not-ready@{node}"), str::to_string);
                roots.entry(id as u32).or_default().insert(digest.clone());
                samples.push(yeskv_check::history::DigestSample {
                    time_ms,
                    node: node.clone(),
                    partition: id as u32,
                    digest,
                });
            }
        }
        let agreed = answered == node_ids.len() && roots.values().all(|d| d.len() == 1);
        if agreed || recorder.now_ms() >= until_ms {
            return samples;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Plants a harness-level bug (see `--plant-bug`).
fn plant(
    bug: &str,
    events: &[yeskv_check::history::Event],
    final_reads: &mut [FinalRead],
) -> anyhow::Result<()> {
    use yeskv_check::history::{Op, Status};
    match bug {
        "drop-acked-value" => {
            // The last acknowledged write whose value is in the final state: drop it there.
            for e in events.iter().rev() {
                if let (Status::Ok, Op::Write { key, value, .. }) = (e.status, &e.op) {
                    if let Some(read) = final_reads
                        .iter_mut()
                        .find(|r| &r.key == key && r.values.contains(value))
                    {
                        read.values.retain(|v| v != value);
                        return Ok(());
                    }
                }
            }
            bail!("drop-acked-value: no acknowledged value in the final state")
        }
        other => bail!("--plant-bug: unknown bug {other:?} (known: drop-acked-value)"),
    }
}
