//! `yeskv-sim`: runs seeds of the deterministic simulation and judges them (see the library
//! docs for what a seed simulates and how to replay one).

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use yeskv_sim::trace::Kind;
use yeskv_sim::{run_seed, Bug, SeedOutcome, SimOptions};

/// Most events of a violating key printed with a failure.
const TRACE_EVENTS_MAX: usize = 20;
/// Most violations printed per failing seed.
const VIOLATIONS_SHOWN_MAX: usize = 5;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BugArg {
    /// Node n1 acknowledges some writes, then drops them.
    LoseAck,
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
    /// Nodes per cluster, 3 to 7 (default: drawn from the seed).
    #[arg(long)]
    nodes: Option<usize>,
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

fn print_failure(o: &SeedOutcome) {
    println!(
        "FAILED seed {} ({} nodes, {} clients): lost {}, resurrected {}, violations {}{}",
        o.seed,
        o.nodes,
        o.clients,
        o.report.lost,
        o.report.resurrected,
        o.report.violations.len() + o.report.violations_omitted,
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
    println!("  replay: yeskv-sim --seed {} -vv", o.seed);
}

/// Log lines stamped with the simulated time (ms) instead of the wall clock.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>7}", yeskv_sim::clock::sim_now_ms())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The nodes' own logs, for replaying a seed: `YESKV_SIM_LOG=yeskv_node=debug yeskv-sim
    // --seed N -vv`. Off unless set: logging changes nothing the simulation does.
    if let Ok(filter) = std::env::var("YESKV_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimTime)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let options = SimOptions {
        nodes: args.nodes,
        clients: args.clients,
        duration_ms: args.duration_ms,
        bug: args.inject_bug.map(|b| match b {
            BugArg::LoseAck => Bug::LoseAck,
        }),
        require_convergence: !args.no_convergence,
        repair: !args.no_repair,
    };
    if let Err(e) = options.validate() {
        eprintln!("yeskv-sim: {e}");
        return ExitCode::from(2);
    }
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.from..args.from.saturating_add(args.seeds)).collect(),
    };
    let started = Instant::now();
    let (mut failed, mut ops, mut acked, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let mut diverged_seeds = 0u64;
    let (mut reaped, mut seeds_reaping, mut hints_left) = (0u64, 0u64, 0u64);
    let mut converged: Vec<u64> = Vec::new();
    let mut never_converged = 0u64;
    let (mut lost_unsynced, mut indeterminate) = (0u64, 0u64);
    let mut chaos = yeskv_sim::chaos::ChaosCounts::default();
    let mut fault_counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for &seed in &seeds {
        let outcome = match run_seed(&options, seed) {
            Ok(o) => o,
            Err(e) => {
                failed += 1;
                println!("FAILED seed {seed}: {e}");
                println!("  replay: yeskv-sim --seed {seed} -vv");
                continue;
            }
        };
        ops += outcome.report.ops as u64;
        acked += outcome.report.acked as u64;
        lost += outcome.report.lost as u64;
        indeterminate += outcome.report.indeterminate as u64;
        lost_unsynced += outcome.lost_unsynced;
        reaped += outcome.reaped;
        seeds_reaping += u64::from(outcome.reaped > 0);
        hints_left += outcome.hints_left;
        match outcome.report.converged_ms {
            Some(ms) => converged.push(ms),
            None => never_converged += 1,
        }
        chaos.requests_dropped += outcome.chaos.requests_dropped;
        chaos.replies_dropped += outcome.chaos.replies_dropped;
        chaos.duplicated += outcome.chaos.duplicated;
        for (k, v) in &outcome.faults {
            *fault_counts.entry(k).or_default() += v;
        }
        let diverged = outcome
            .report
            .warnings
            .iter()
            .chain(&outcome.report.violations)
            .any(|w| w.kind == yeskv_check::ViolationKind::Diverged);
        diverged_seeds += u64::from(diverged);
        if args.verbose >= 2 {
            for line in &outcome.trace {
                println!("{line}");
            }
        }
        if args.verbose >= 1 {
            let r = &outcome.report;
            println!(
                "seed {seed}: {} nodes, {} clients, ops {}, acked {}, info {}, fail {}, lost {}, \
                 not judgeable {}, warnings {}, simulated {} ms, converged {:?} ms after healing, \
                 reaped {}, lost unsynced {}, dropped by bug {}, chaos {:?}",
                outcome.nodes,
                outcome.clients,
                r.ops,
                r.acked,
                r.indeterminate,
                r.failed,
                r.lost,
                r.not_judgeable,
                r.warnings.len(),
                outcome.simulated_ms,
                r.converged_ms,
                outcome.reaped,
                outcome.lost_unsynced,
                outcome.lost_by_bug,
                outcome.chaos
            );
        }
        if args.hash {
            println!("seed {seed} hash {:016x}", outcome.hash);
        }
        if !outcome.ok() {
            failed += 1;
            print_failure(&outcome);
        }
    }
    let faults: Vec<String> = fault_counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("faults: {}", faults.join(", "));
    println!(
        "indeterminate ops {indeterminate}; unacknowledged writes lost in crashes {lost_unsynced}; \
         internode requests dropped {}, replies dropped {}, requests duplicated {}",
        chaos.requests_dropped, chaos.replies_dropped, chaos.duplicated
    );
    converged.sort_unstable();
    let at = |q: f64| {
        converged
            .get(((converged.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "converged after healing (ms): median {}, p90 {}, p99 {}, max {}; never {never_converged}",
        at(0.5),
        at(0.9),
        at(0.99),
        converged.last().copied().unwrap_or(0)
    );
    println!(
        "tombstone copies reaped {reaped} (in {seeds_reaping} seeds); hints left at the final reads {hints_left}"
    );
    println!(
        "time {:.1} s, seeds with diverged replicas after healing: {diverged_seeds}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "seeds {}, failed {failed}, ops {ops}, acked {acked}, lost {lost}",
        seeds.len()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
