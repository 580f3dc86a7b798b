//! `yeskv-sim`: runs seeds of the deterministic simulation and judges them (see the library
//! docs for what a seed simulates and how to replay one).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use yeskv_check::history::{Op, Status};
use yeskv_sim::chaos::ChaosCounts;
use yeskv_sim::trace::Kind;
use yeskv_sim::workload::WriteOutcomes;
use yeskv_sim::{run_seed, Bug, SeedOutcome, SimOptions};

/// Most events of a violating key printed with a failure.
const TRACE_EVENTS_MAX: usize = 20;
/// Most violations printed per failing seed.
const VIOLATIONS_SHOWN_MAX: usize = 5;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BugArg {
    /// Node n1 acknowledges some writes, then drops them.
    LoseAck,
    /// Node n1's API drops the TTL of the writes it takes (they never expire).
    IgnoreTtl,
    /// Node n1's API acknowledges server-side cart removes without applying them.
    SkipRemove,
}

/// Deterministic simulation of yeskv clusters under faults.
#[derive(Parser, Debug)]
#[command(name = "yeskv-sim", version)]
struct Args {
    /// Run seeds FROM..FROM+N-1.
    #[arg(long, default_value_t = 1, conflicts_with = "seed")]
    seeds: u64,
    /// First seed of --seeds.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print each seed's trace hash.
    #[arg(long)]
    hash: bool,
    /// Members at the start of a seed without regions, 3 to 7 (default: drawn from the seed);
    /// the spares that membership changes join come on top.
    #[arg(long)]
    nodes: Option<usize>,
    /// Regions of every seed: 0 for none, or 2 to 4 (`r1`..`rR`, WAN latency between them,
    /// 2 replicas per region, region cuts and slow WANs among the faults). Default: every
    /// third seed (3, 6, 9, ...) has 3 regions, the others none.
    #[arg(long)]
    regions: Option<usize>,
    /// Members per region on a seed with regions, 2 or 3 (default: drawn from the seed).
    #[arg(long)]
    region_nodes: Option<usize>,
    /// Concurrent clients (default: drawn from the seed, 2 to 6).
    #[arg(long)]
    clients: Option<usize>,
    /// Simulated workload time per seed, ms.
    #[arg(long, default_value_t = 3_000)]
    duration_ms: u64,
    /// Plant a bug the checkers must catch.
    #[arg(long, value_enum)]
    inject_bug: Option<BugArg>,
    /// Do not fail a seed whose replicas have not converged (equal anti-entropy tree roots
    /// within 10 simulated s of healing, equal per-replica final reads); still reported.
    #[arg(long)]
    no_convergence: bool,
    /// Run the nodes without their background repair (hinted handoff, anti-entropy, reaper):
    /// shows what the convergence rule catches without it.
    #[arg(long)]
    no_repair: bool,
    /// Print a summary per seed; twice: the whole trace of every seed.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Prints why seed `o` failed: its counts, its first violations each with the last events on
/// its key and the key's final reads, every fault and node event, and how to replay it
/// (`replay`).
fn print_failure(o: &SeedOutcome, replay: &str) {
    println!(
        "FAILED seed {} ({} regions, {} nodes, {} spares, {} clients): lost {}, resurrected {}, \
         expired and seen {}, violations {}, partitions still moving {}{}",
        o.seed,
        o.regions,
        o.nodes,
        o.spares,
        o.clients,
        o.report.lost,
        o.report.resurrected,
        o.report.expired_visible,
        o.report.violations.len() + o.report.violations_omitted,
        o.transitions_left,
        if o.report.errors.is_empty() {
            String::new()
        } else {
            format!(", history errors {:?}", o.report.errors)
        }
    );
    for v in o.report.violations.iter().take(VIOLATIONS_SHOWN_MAX) {
        println!(
            "  {:?} {}: {}",
            v.kind,
            v.key.as_deref().unwrap_or("-"),
            v.explanation
        );
        for e in yeskv_check::trace(&o.history, v, TRACE_EVENTS_MAX) {
            println!(
                "    {:>7} p{} {:?} {:?}{}{}",
                e.time_ms,
                e.process,
                e.status,
                e.op,
                e.node.map(|n| format!(" via {n}")).unwrap_or_default(),
                e.error.map(|e| format!(" ({e})")).unwrap_or_default()
            );
        }
        if let Some(key) = v.key.as_deref() {
            for line in o
                .trace
                .iter()
                .filter(|l| l.kind == Kind::Final && l.key.as_deref() == Some(key))
            {
                println!("    {line}");
            }
        }
    }
    println!("  faults and node events:");
    for line in o
        .trace
        .iter()
        .filter(|l| matches!(l.kind, Kind::Fault | Kind::Node))
    {
        println!("    {line}");
    }
    println!("  replay: {replay}");
}

/// Log lines stamped with the simulated time (ms) instead of the wall clock.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>7}", yeskv_sim::clock::sim_now_ms())
    }
}
/// Sends the nodes' own logs to stderr, stamped with simulated time, when `YESKV_SIM_LOG` is set
/// (an `EnvFilter`), for replaying a seed: `YESKV_SIM_LOG=yeskv_node=debug yeskv-sim --seed N
/// -vv`. Off unless set: logging changes nothing the simulation does.
fn init_node_logs() {
    if let Ok(filter) = std::env::var("YESKV_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimTime)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
}

/// The simulation options the command line asks for (not yet validated).
fn sim_options(args: &Args) -> SimOptions {
    SimOptions {
        nodes: args.nodes,
        clients: args.clients,
        duration_ms: args.duration_ms,
        bug: args.inject_bug.map(|b| match b {
            BugArg::LoseAck => Bug::LoseAck,
            BugArg::IgnoreTtl => Bug::IgnoreTtl,
            BugArg::SkipRemove => Bug::SkipRemove,
        }),
        require_convergence: !args.no_convergence,
        repair: !args.no_repair,
        regions: args.regions,
        region_nodes: args.region_nodes,
    }
}

/// The command that replays `seed` with the options that change what a seed draws.
fn replay_command(args: &Args, seed: u64) -> String {
    let mut command = format!("yeskv-sim --seed {seed}");
    let options = [
        ("--regions", args.regions.map(|v| v.to_string())),
        ("--region-nodes", args.region_nodes.map(|v| v.to_string())),
        ("--nodes", args.nodes.map(|v| v.to_string())),
        ("--clients", args.clients.map(|v| v.to_string())),
        (
            "--duration-ms",
            (args.duration_ms != 3_000).then(|| args.duration_ms.to_string()),
        ),
        (
            "--inject-bug",
            args.inject_bug.map(|bug| match bug {
                BugArg::LoseAck => "lose-ack".to_string(),
                BugArg::IgnoreTtl => "ignore-ttl".to_string(),
                BugArg::SkipRemove => "skip-remove".to_string(),
            }),
        ),
        ("--no-convergence", args.no_convergence.then(String::new)),
        ("--no-repair", args.no_repair.then(String::new)),
    ];
    for (flag, value) in options {
        match value.as_deref() {
            None => {}
            Some("") => command.push_str(&format!(" {flag}")),
            Some(v) => command.push_str(&format!(" {flag} {v}")),
        }
    }
    command.push_str(" -vv");
    command
}

/// The seeds to run, in order: `--seed` alone, else `--from` to `--from + --seeds - 1`.
fn seeds_to_run(args: &Args) -> Vec<u64> {
    match args.seed {
        Some(s) => vec![s],
        None => (args.from..args.from.saturating_add(args.seeds)).collect(),
    }
}

/// Sums over the seeds run, for the closing report.
#[derive(Default)]
struct Totals {
    /// Seeds that failed (a violation, or an error that stopped the run).
    failed: u64,
    /// Operations recorded.
    ops: u64,
    /// Operations acknowledged.
    acked: u64,
    /// Acknowledged writes lost.
    lost: u64,
    /// Operations whose outcome is unknown (`info`).
    indeterminate: u64,
    /// Unacknowledged writes lost in crashes.
    lost_unsynced: u64,
    /// Tombstone copies removed by the reaper.
    reaped: u64,
    /// Seeds in which the reaper removed at least one tombstone copy.
    seeds_reaping: u64,
    /// Partitions cleared (range deletes) by nodes receiving them anew or cleaning up.
    cleared: u64,
    /// Partitions whose receipt the layout recorded.
    partitions_received: u64,
    /// Partitions transfer workers reported (repeats included).
    partitions_reported: u64,
    /// Keys copied by transfer workers.
    transfer_keys: u64,
    /// Partitions still in transition at the final reads.
    transitions_left: u64,
    /// Hints still pending when the final reads started.
    hints_left: u64,
    /// Per seed that converged: ms from healing to equal tree roots.
    converged: Vec<u64>,
    /// Seeds whose replicas never reached equal tree roots.
    never_converged: u64,
    /// Seeds with a diverged-replicas warning or violation.
    diverged_seeds: u64,
    /// What the chaos layer did.
    chaos: ChaosCounts,
    /// Faults injected, by kind.
    fault_counts: BTreeMap<&'static str, usize>,
    /// Seeds that ran with regions.
    region_seeds: u64,
    /// Writes of the seeds with regions by the quorum they asked, and how they ended.
    region_writes: BTreeMap<&'static str, WriteOutcomes>,
    /// Acknowledged server-side cart adds.
    dt_adds: u64,
    /// Acknowledged server-side cart removes.
    dt_removes: u64,
    /// Acknowledged server-side cart reads.
    dt_reads: u64,
    /// Acknowledged writes with a TTL.
    ttl_writes: u64,
    /// Of those, the ones read (an `ok` read, the final state) after they had to be gone.
    ttl_judged: u64,
    /// Deleted values and removed server-side cart items that came back.
    resurrected: u64,
    /// TTL'd values seen after they had to be gone.
    expired_visible: u64,
}

impl Totals {
    /// Adds a seed that ran to its end, whatever the verdict (failures are counted apart).
    fn add(&mut self, outcome: &SeedOutcome) {
        self.ops += outcome.report.ops as u64;
        self.acked += outcome.report.acked as u64;
        self.lost += outcome.report.lost as u64;
        self.indeterminate += outcome.report.indeterminate as u64;
        self.ttl_judged += outcome.report.ttl_judged as u64;
        self.resurrected += outcome.report.resurrected as u64;
        self.expired_visible += outcome.report.expired_visible as u64;
        for event in &outcome.history.events {
            if event.status != Status::Ok {
                continue;
            }
            match &event.op {
                Op::DtCartAdd { .. } => self.dt_adds += 1,
                Op::DtCartRemove { .. } => self.dt_removes += 1,
                Op::DtCartRead { .. } => self.dt_reads += 1,
                Op::Write {
                    ttl_ms: Some(_), ..
                } => self.ttl_writes += 1,
                _ => {}
            }
        }
        self.lost_unsynced += outcome.lost_unsynced;
        self.reaped += outcome.reaped;
        self.seeds_reaping += u64::from(outcome.reaped > 0);
        self.cleared += outcome.cleared;
        self.partitions_received += outcome.partitions_received;
        self.partitions_reported += outcome.partitions_reported;
        self.transfer_keys += outcome.transfer_keys;
        self.transitions_left += outcome.transitions_left as u64;
        self.hints_left += outcome.hints_left;
        match outcome.report.converged_ms {
            Some(ms) => self.converged.push(ms),
            None => self.never_converged += 1,
        }
        self.chaos.requests_dropped += outcome.chaos.requests_dropped;
        self.chaos.replies_dropped += outcome.chaos.replies_dropped;
        self.chaos.duplicated += outcome.chaos.duplicated;
        for (k, v) in &outcome.faults {
            *self.fault_counts.entry(k).or_default() += v;
        }
        if outcome.regions > 0 {
            self.region_seeds += 1;
            for (quorum, counts) in &outcome.writes_by_quorum {
                self.region_writes.entry(quorum).or_default().add(counts);
            }
        }
        let diverged = outcome
            .report
            .warnings
            .iter()
            .chain(&outcome.report.violations)
            .any(|w| w.kind == yeskv_check::ViolationKind::Diverged);
        self.diverged_seeds += u64::from(diverged);
    }

    /// Prints the closing report of `seeds` seeds begun at `started`. Its last line is always
    /// `seeds N, failed F, ops O, acked A, lost L` (the library docs promise it).
    fn print(mut self, seeds: usize, started: Instant) {
        let faults: Vec<String> = self
            .fault_counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("faults: {}", faults.join(", "));
        let count = |kind: &str| self.fault_counts.get(kind).copied().unwrap_or(0);
        let committed = |kind: &str, skipped: usize| count(kind).saturating_sub(skipped);
        println!(
            "membership changes committed: joins {}, leaves {} (left and stopped {}), replaces {}; \
             skipped: joins {}, leaves {}, replaces {} (refused for data loss {}); partitions \
             received {} (reported {}), keys copied {}, partitions cleared {}; \
             partitions still moving at the final reads {}",
            committed("join", count("join-skipped")),
            committed("leave", count("leave-skipped")),
            count("leave-completed"),
            committed(
                "replace",
                count("replace-skipped") + count("replace-refused-data-loss")
            ),
            count("join-skipped"),
            count("leave-skipped"),
            count("replace-skipped"),
            count("replace-refused-data-loss"),
            self.partitions_received,
            self.partitions_reported,
            self.transfer_keys,
            self.cleared,
            self.transitions_left
        );
        println!(
            "indeterminate ops {}; unacknowledged writes lost in crashes {}; \
             internode requests dropped {}, replies dropped {}, requests duplicated {}",
            self.indeterminate,
            self.lost_unsynced,
            self.chaos.requests_dropped,
            self.chaos.replies_dropped,
            self.chaos.duplicated
        );
        self.converged.sort_unstable();
        println!(
            "converged after healing (ms): median {}, p90 {}, p99 {}, max {}; never {}",
            quantile(&self.converged, 0.5),
            quantile(&self.converged, 0.9),
            quantile(&self.converged, 0.99),
            self.converged.last().copied().unwrap_or(0),
            self.never_converged
        );
        println!(
            "tombstone copies reaped {} (in {} seeds); hints left at the final reads {}",
            self.reaped, self.seeds_reaping, self.hints_left
        );
        println!(
            "server-side carts: adds acked {}, removes acked {}, reads {}; writes with a TTL \
             acked {}, read after their expiry {}; deleted or removed and back {}, expired and \
             seen {}",
            self.dt_adds,
            self.dt_removes,
            self.dt_reads,
            self.ttl_writes,
            self.ttl_judged,
            self.resurrected,
            self.expired_visible
        );
        if self.region_seeds > 0 {
            let writes: Vec<String> = self
                .region_writes
                .iter()
                .map(|(q, c)| {
                    format!(
                        "{q} acked {} (ms: median {}, p99 {}), indeterminate {}, refused {}",
                        c.acked,
                        c.acked_ms_quantile(0.5).unwrap_or(0),
                        c.acked_ms_quantile(0.99).unwrap_or(0),
                        c.indeterminate,
                        c.refused
                    )
                })
                .collect();
            println!(
                "seeds with regions {}; their writes by quorum: {}",
                self.region_seeds,
                writes.join("; ")
            );
        }
        println!(
            "time {:.1} s, seeds with diverged replicas after healing: {}",
            started.elapsed().as_secs_f64(),
            self.diverged_seeds
        );
        println!(
            "seeds {seeds}, failed {}, ops {}, acked {}, lost {}",
            self.failed, self.ops, self.acked, self.lost
        );
    }
}

/// The `q` quantile (nearest rank) of `sorted`, ascending; 0 if it is empty.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0)
}

/// Prints the one-line summary of a seed (`--verbose`).
fn print_seed_summary(o: &SeedOutcome) {
    let r = &o.report;
    println!(
        "seed {}: {} regions, {} nodes, {} spares, {} clients, ops {}, acked {}, info {}, fail {}, lost {}, \
         not judgeable {}, warnings {}, simulated {} ms, converged {:?} ms after healing, \
         reaped {}, layout v{} epoch {}, partitions received {}, still moving {}, \
         lost unsynced {}, dropped by bug {}, chaos {:?}",
        o.seed,
        o.regions,
        o.nodes,
        o.spares,
        o.clients,
        r.ops,
        r.acked,
        r.indeterminate,
        r.failed,
        r.lost,
        r.not_judgeable,
        r.warnings.len(),
        o.simulated_ms,
        r.converged_ms,
        o.reaped,
        o.layout_version,
        o.layout_epoch,
        o.partitions_received,
        o.transitions_left,
        o.lost_unsynced,
        o.lost_by_bug,
        o.chaos
    );
}

/// Runs `seed`, adds it to `totals` and prints what the flags ask for: its trace (`-vv`),
/// its summary (`-v`), its hash (`--hash`), and, if it failed, why and how to replay it.
fn run_and_report(args: &Args, options: &SimOptions, seed: u64, totals: &mut Totals) {
    let outcome = match run_seed(options, seed) {
        Ok(o) => o,
        Err(e) => {
            totals.failed += 1;
            println!("FAILED seed {seed}: {e}");
            println!("  replay: {}", replay_command(args, seed));
            return;
        }
    };
    totals.add(&outcome);
    if args.verbose >= 2 {
        for line in &outcome.trace {
            println!("{line}");
        }
    }
    if args.verbose >= 1 {
        print_seed_summary(&outcome);
    }
    if args.hash {
        println!("seed {seed} hash {:016x}", outcome.hash);
    }
    if !outcome.ok() {
        totals.failed += 1;
        print_failure(&outcome, &replay_command(args, seed));
    }
}

/// Runs the seeds the command line asks for, one after another, and reports on them; exits 1
/// if any failed, 2 if the options are out of range.
fn main() -> ExitCode {
    let args = Args::parse();
    init_node_logs();
    let options = sim_options(&args);
    if let Err(e) = options.validate() {
        eprintln!("yeskv-sim: {e}");
        return ExitCode::from(2);
    }
    let seeds = seeds_to_run(&args);
    let started = Instant::now();
    let mut totals = Totals::default();
    for &seed in &seeds {
        run_and_report(&args, &options, seed, &mut totals);
    }
    let failed = totals.failed;
    totals.print(seeds.len(), started);
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
