//! `yeskv bench`: the load generator.
//!
//! `--concurrency` workers (tokio tasks) share one [`yeskv_client::Client`] (keep-alive pool;
//! requests routed by the ring: `--nodes` are seeds, each key goes to a node of its preference
//! list) and each runs a closed loop: pick an operation and a key, send it, wait for the answer, record its latency into the worker's own HDR histogram
//! (µs), repeat. Histograms are merged when the run ends (`--duration`, `--ops`, or Ctrl-C).
//! With `--rate`, operations are released on a global schedule instead; when the workers fall
//! behind it, a latency is measured from the operation's scheduled start, so time spent waiting
//! for a free worker counts (no coordinated omission).
//!
//! ## Workloads and causal contexts
//! yeskv keeps every write it cannot prove superseded: a *blind* write (no causal context)
//! becomes a sibling of whatever the key holds, and siblings accumulate (the server flags a key
//! past its sibling limit but never refuses it). So the benchmark writes the way a correct
//! application would:
//! - **`write`**: each worker owns a stripe of the keys (index ≡ worker mod concurrency), so no
//!   two workers ever write the same key at once, and remembers the context each of its writes
//!   returned; the next write of that key carries it and replaces the previous value. Before its
//!   first write of a key in a run, a worker reads the key once to learn its context (so that
//!   values left by earlier runs are replaced too); these reads are reported as `context_read`,
//!   not counted as ops, and skipped entirely after `--preload`. A key stays at one version no
//!   matter how many runs rewrite it. `--fresh-keys` skips those reads when the keys are known
//!   to be new (an empty store, an unused `--bucket`): first writes are then blind, which on
//!   keys that do hold values leaves one extra sibling per key and run.
//! - **`a` / `b` updates**: read-modify-write: a read, then a write with the read's context; the
//!   latency covers both. Two workers updating one hot key at once leave two siblings until the
//!   next update folds them; `--context-updates false` makes updates blind writes instead
//!   (siblings then grow).
//! - **reads** of keys never written are successes that find nothing; they are reported as
//!   `read misses`. `--preload` first makes sure every key holds one value of `--value-size`
//!   bytes (reading each key and writing it, with the read's context, only when it does not), so
//!   rerunning a preloaded benchmark costs one read per key.
//!
//! ## Carts and sessions
//! Two workloads set their bucket's properties first (`PUT /v1/buckets`, a bucket of their own
//! by default: `bench-cart`, `bench-session`):
//! - **`cart`** (datatype `cart`; `--keys` carts, zipfian unless `--distribution` says otherwise;
//!   `--items` products, zipfian): `add` 1–3 of a product (50%); `view` a cart (35%), which
//!   the worker remembers; `remove` (10%) an item its last view saw, with that view's context
//!   (before any view with items, the worker views a cart instead); `merge` (5%): two adds of
//!   one product to one cart, sent at once from two tasks, as from a phone and a laptop.
//! - **`session`** (`ttl_secs` = `--ttl`, sliding): `create` a session, a blind PUT under a new
//!   key, whose expiry is the bucket's (10%); `read` a session in use (80%): a GET, which slides
//!   its expiry; `expire` (10%): a GET of a session abandoned at least `--ttl` + 1 s ago, which
//!   should find nothing (counted: expired as expected / still readable). Each worker keeps
//!   `--keys / --concurrency` sessions in use; a creation beyond that abandons one at random.
//!   A session in use is read about every `keys / (0.8 × ops/s)` seconds: when that exceeds
//!   `--ttl`, sessions expire while in use (read misses). Before any session is due for a
//!   check, `expire` reads a session in use instead, and `read` creates one when none is.
//!
//! ## Output
//! Progress goes to stderr (a progress bar on a terminal, else a line every 5 s); the summary
//! (throughput, errors by kind, per-operation p50/p90/p99/p99.9/max) goes to stdout, as a table
//! or, with `--json`, as one JSON object. `--sweep 25,50,75,90` measures latency at stated
//! loads: a run as fast as possible gives the maximum, then one paced run (`--rate`) at each
//! percentage of it; the workers' causal contexts carry from step to step.

mod report;
mod workload;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use yeskv_client::{BucketPatch, CartBucket, Client, Datatype, Quorum, ReadOptions, WriteOptions};

use report::{RunDescription, Summary, WorkerStats};
use workload::{
    item_name, key_name, KeyChooser, KeyDistribution, OpKind, Sessions, Stripe, Workload,
};

/// Duration of a run given neither `--duration` nor `--ops`.
const DEFAULT_DURATION_SECS: f64 = 10.0;

/// Interval between progress lines when stderr is not a terminal.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(5);

/// Interval between progress bar redraws.
const PROGRESS_BAR_INTERVAL: Duration = Duration::from_millis(250);

/// How often a worker hands its recent latencies to the progress reporter (whose window is at
/// least 1 s). Each hand-over merges a whole histogram: every 100 ms it was ~3% of the load
/// generator's CPU.
const LIVE_FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// Pause after a connection failure, so that a dead node does not turn workers into busy loops.
const CONNECT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Attempts per key during `--preload` before giving up on the run.
const PRELOAD_ATTEMPTS_MAX: u32 = 5;

/// Largest accepted `--value-size` (the server's default value limit is 1 MiB).
const VALUE_SIZE_MAX: usize = 64 * 1024 * 1024;

/// Extra random bytes in the shared value pool: each write sends a slice of the pool at a
/// random offset, so values differ without generating bytes per write.
const VALUE_POOL_SLACK: usize = 4096;

/// Flags of `yeskv bench`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
WORKLOADS:
  write   100% writes. Each worker owns its own keys and chains the causal context of its
          previous write of a key, so rewrites replace values instead of piling up siblings.
          A worker's first write of a key in a run reads the key first (reported as
          context_read; skipped after --preload, or with --fresh-keys on an empty bucket).
  read    100% reads.
  a       YCSB A: 50% reads, 50% updates.   b   YCSB B: 95% reads, 5% updates.
  c       YCSB C: 100% reads.
  cart    a cart bucket (datatype set first): 50% add an item, 35% view a cart, 10% remove an
          item the worker's last view saw (with its context), 5% merge: two concurrent adds
          to one cart from two tasks. Zipfian carts by default; --items products.
  session a bucket with ttl_secs = --ttl, sliding: 10% create (blind PUT, the bucket's TTL),
          80% read (slides the expiry), 10% expire: read a session abandoned --ttl + 1 s ago,
          expected gone. --keys is the number of sessions in use at once (over all workers).
  An update reads the key and writes with the read's context (latency covers both), unless
  --context-updates false. Reads of keys never written count as successes ('read misses');
  --preload writes every key once first (cheap on reruns: keys already holding one value of
  the right size are only read). --distribution sequential: each worker takes its keys once,
  in order, then stops (the write workload writes every key exactly once). --ttl SECS: every
  write expires SECS seconds after it is made.

OUTPUT:
  stderr: a progress bar on a terminal, else 't=5s ops=... ops/s=... p99=...ms errors=...'
  every 5 s. stdout: the summary; with --json one object with ops, ops_per_sec, errors,
  errors_by_kind, read_misses, and operations.<read|update|write|context_read|add|view|remove|
  merge|create|expire>.{count, errors, ops_per_sec, mean_ms, p50_ms, p90_ms, p99_ms, p999_ms,
  max_ms}; the session workload adds sessions_expired and sessions_alive_past_ttl.
  With --sweep: one line per step and operation (step, target ops/s, ops/s, p50, p99,
  p99.9, errors); with --json one object with steps: [{percent, target_ops_per_sec, summary}],
  the first step (percent null) being the maximum.
  Ctrl-C stops the run early and still prints the summary.

EXAMPLES:
  yeskv bench --workload write --keys 100000 --duration 30
  yeskv bench --workload a --preload --distribution zipfian --nodes http://127.0.0.1:8081,http://127.0.0.1:8082
  yeskv bench --workload c --rate 5000 --duration 60 --json > result.json
  yeskv bench --workload write --preload --sweep 25,50,75,90 --warmup 2 --duration 15 --json
  yeskv bench --workload write --fresh-keys --distribution sequential --keys 1000000 --ttl 60
  yeskv bench --workload cart --keys 100000 --duration 30
  yeskv bench --workload session --keys 2000 --ttl 5 --duration 30")]
pub struct BenchArgs {
    /// Seed node URLs, comma separated; the client reads /v1/ring from them and sends each key
    /// to a node of its preference list.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8081",
        env = "YESKV_NODES"
    )]
    pub nodes: Vec<String>,
    /// Operation mix (see below).
    #[arg(long, value_enum, default_value_t = Workload::A)]
    pub workload: Workload,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,
    /// Concurrent workers, i.e. requests in flight.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Measure for this many seconds (default 10 unless --ops is given).
    #[arg(long, value_name = "SECS", conflicts_with = "ops")]
    pub duration: Option<f64>,
    /// Measure this many operations instead of a duration.
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,
    /// Target throughput over all workers (default: as fast as possible).
    #[arg(long, value_name = "OPS_PER_SEC", conflicts_with = "sweep")]
    pub rate: Option<f64>,
    /// Latency at stated loads: first a run as fast as possible (the maximum), then one run at
    /// each of these percentages of the maximum it measured (`--rate`), each `--duration` long
    /// after its `--warmup`; prints one line per step and operation (`--json`: one object with
    /// every step's summary). Example: `--sweep 25,50,75,90`.
    #[arg(
        long,
        value_name = "PERCENTS",
        value_delimiter = ',',
        conflicts_with = "ops"
    )]
    pub sweep: Option<Vec<f64>>,
    /// How keys are picked: uniform, or zipfian (θ = 0.99, hot keys scattered, as YCSB)
    /// [default: zipfian for cart, uniform otherwise].
    #[arg(long, value_enum)]
    pub distribution: Option<KeyDistribution>,
    /// Bucket to use [default: bench; bench-cart and bench-session for those workloads].
    #[arg(long)]
    pub bucket: Option<String>,
    /// Products in the catalogue (cart workload; zipfian popularity).
    #[arg(long, default_value_t = 1000)]
    pub items: u64,
    /// Read quorum: one, quorum, all, local_quorum, each_quorum, or a number (default: the
    /// server's r).
    #[arg(long)]
    pub r: Option<Quorum>,
    /// Write quorum: one, quorum, all, local_quorum, each_quorum, or a number (default: the
    /// server's w).
    #[arg(long)]
    pub w: Option<Quorum>,
    /// The client's region (a cluster with replicas per region): each key goes to its node in
    /// that region, as an application server of that region would send it.
    #[arg(long)]
    pub region: Option<String>,
    /// Make sure every key holds a value before measuring.
    #[arg(long)]
    pub preload: bool,
    /// Run this many seconds before measuring (not recorded).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub warmup: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seed of the random choices (default: random; printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Updates (workloads a, b) read first and write with the read's context; false: blind
    /// writes, which pile up siblings.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub context_updates: bool,
    /// Write workload: the keys are new (empty store or unused bucket), so a worker's first
    /// write of a key is blind instead of reading the key's context first. On keys that already
    /// hold values, each run then leaves one more sibling per key.
    #[arg(long)]
    pub fresh_keys: bool,
    /// Per-request timeout.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,
    /// Every write (preload included) expires this many seconds after it is made (`?ttl=`);
    /// for the session workload, the session bucket's TTL (default 5; reads slide it).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: Option<u64>,
}

/// The session workload's bucket TTL without `--ttl`, seconds.
const SESSION_TTL_SECS_DEFAULT: u64 = 5;

/// Validated settings of a run.
#[derive(Clone, Debug)]
struct Plan {
    workload: Workload,
    bucket: String,
    distribution: KeyDistribution,
    /// Products in the catalogue (cart).
    items: u64,
    /// The bucket's TTL (session).
    ttl_secs: u64,
    keys: u64,
    value_size: usize,
    workers: usize,
    duration: Option<Duration>,
    ops_limit: Option<u64>,
    rate: Option<f64>,
    warmup: Duration,
    timeout: Duration,
    seed: u64,
}

impl Plan {
    fn new(args: &BenchArgs) -> anyhow::Result<Plan> {
        let seconds = |name: &str, value: f64, allow_zero: bool| -> anyhow::Result<Duration> {
            match Duration::try_from_secs_f64(value) {
                Ok(duration) if allow_zero || !duration.is_zero() => Ok(duration),
                _ => anyhow::bail!("--{name} must be a positive number of seconds, got {value}"),
            }
        };
        anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
        anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
        anyhow::ensure!(
            args.value_size <= VALUE_SIZE_MAX,
            "--value-size must be at most {VALUE_SIZE_MAX} bytes"
        );
        let bucket = args
            .bucket
            .clone()
            .unwrap_or_else(|| args.workload.default_bucket().to_string());
        anyhow::ensure!(!bucket.is_empty(), "--bucket must not be empty");
        anyhow::ensure!(args.items >= 1, "--items must be at least 1");
        anyhow::ensure!(
            !args.preload || args.workload.is_plain(),
            "--preload writes plain values: it applies to the write, read, a, b and c workloads"
        );
        if let Some(ops) = args.ops {
            anyhow::ensure!(ops >= 1, "--ops must be at least 1");
        }
        if let Some(rate) = args.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of operations per second, got {rate}"
            );
        }
        let duration = match (args.duration, args.ops) {
            (Some(secs), _) => Some(seconds("duration", secs, false)?),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs_f64(DEFAULT_DURATION_SECS)),
        };
        // In the write workload every worker owns a stripe of keys; more workers than keys
        // would leave some with nothing to write.
        let workers = if args.workload == Workload::Write {
            usize::try_from(args.keys).map_or(args.concurrency, |keys| args.concurrency.min(keys))
        } else {
            args.concurrency
        };
        Ok(Plan {
            workload: args.workload,
            bucket,
            distribution: args
                .distribution
                .unwrap_or_else(|| args.workload.default_distribution()),
            items: args.items,
            ttl_secs: args.ttl.unwrap_or(SESSION_TTL_SECS_DEFAULT),
            keys: args.keys,
            value_size: args.value_size,
            workers,
            duration,
            ops_limit: args.ops,
            rate: args.rate,
            warmup: seconds("warmup", args.warmup, true)?,
            timeout: seconds("timeout", args.timeout, false)?,
            seed: args.seed.unwrap_or_else(|| rand::rng().random()),
        })
    }

    /// The seed of worker `index`'s random choices.
    fn worker_seed(&self, index: usize) -> u64 {
        self.seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Releases operations at a fixed global rate: the `n`-th operation of the run is due at
/// `start + n / rate`. Workers claim slots in turn; a slot in the past is due at once.
#[derive(Debug)]
struct Pacer {
    start: Instant,
    interval_secs: f64,
    next: AtomicU64,
}

impl Pacer {
    fn new(start: Instant, rate: f64) -> Pacer {
        Pacer {
            start,
            interval_secs: 1.0 / rate,
            next: AtomicU64::new(0),
        }
    }

    /// Claims the next slot and returns when it is due.
    fn next_slot(&self) -> Instant {
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        self.start + slot_offset(slot, self.interval_secs)
    }
}

/// Offset from the start of the `slot`-th operation when one is due every `interval_secs`.
fn slot_offset(slot: u64, interval_secs: f64) -> Duration {
    Duration::try_from_secs_f64(slot as f64 * interval_secs).unwrap_or(Duration::MAX)
}

/// What the progress reporter sees while the run goes on.
#[derive(Debug)]
struct LiveStats {
    /// Measured operations done.
    ops: AtomicU64,
    /// Measured operations failed.
    errors: AtomicU64,
    /// Latencies since the reporter last looked (workers add theirs every
    /// [`LIVE_FLUSH_INTERVAL`]).
    recent_latency_us: Mutex<Histogram<u64>>,
}

/// Everything the workers share.
struct Run {
    client: Client,
    /// The cart handle (cart workload), with the run's quorums.
    carts: CartBucket,
    bucket: String,
    plan: Plan,
    read_options: ReadOptions,
    w: Option<Quorum>,
    context_updates: bool,
    /// Skip the context read before a first write (`--fresh-keys`).
    fresh_keys: bool,
    /// `--ttl`.
    ttl_secs: Option<u64>,
    /// Random bytes that written values are sliced from.
    value_pool: Bytes,
    /// When measuring starts (after the warmup).
    measure_start: Instant,
    /// When measuring ends (`None`: when `ops_limit` operations are done).
    deadline: Option<Instant>,
    /// Measured operations claimed so far (for `--ops`).
    ops_claimed: AtomicU64,
    pacer: Option<Pacer>,
    /// Set by Ctrl-C.
    stop: Arc<AtomicBool>,
    live: LiveStats,
}

impl Run {
    /// The state the workers share for a run whose clock started at `start`: measuring begins
    /// after the warmup and ends `--duration` later (if given); with `--rate`, the schedule
    /// starts at `start`, so the warmup is paced too.
    fn new(
        args: &BenchArgs,
        plan: Plan,
        client: Client,
        value_pool: Bytes,
        stop: Arc<AtomicBool>,
        start: Instant,
    ) -> Run {
        let measure_start = start + plan.warmup;
        let mut carts = client.cart(&plan.bucket);
        if let Some(r) = args.r {
            carts = carts.r(r);
        }
        if let Some(w) = args.w {
            carts = carts.w(w);
        }
        Run {
            client,
            carts,
            bucket: plan.bucket.clone(),
            read_options: ReadOptions { r: args.r },
            w: args.w,
            context_updates: args.context_updates,
            fresh_keys: args.fresh_keys,
            ttl_secs: args.ttl,
            value_pool,
            measure_start,
            deadline: plan.duration.map(|duration| measure_start + duration),
            ops_claimed: AtomicU64::new(0),
            pacer: plan.rate.map(|rate| Pacer::new(start, rate)),
            stop,
            live: LiveStats {
                ops: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                recent_latency_us: Mutex::new(report::latency_histogram()),
            },
            plan,
        }
    }

    /// A value of `--value-size` bytes: a slice of the pool at a random offset.
    fn value(&self, rng: &mut SmallRng) -> Bytes {
        let size = self.plan.value_size;
        let offset = rng.random_range(0..=self.value_pool.len() - size);
        self.value_pool.slice(offset..offset + size)
    }

    /// When the next operation starts, or `None` once the deadline has come. With `--rate`, it
    /// waits for its slot if it is early, and when behind schedule the operation starts at its
    /// slot, so the time it waited for a worker counts in its latency.
    async fn next_start(&self) -> Option<Instant> {
        match &self.pacer {
            Some(pacer) => {
                let due = pacer.next_slot();
                if self.deadline.is_some_and(|deadline| due >= deadline) {
                    return None;
                }
                let now = Instant::now();
                if due > now {
                    // The worker was idle: the operation starts when it is sent (timer slack
                    // is ours, not the server's).
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                    Some(Instant::now())
                } else {
                    // Behind schedule: the time the operation waited for a worker counts.
                    Some(due)
                }
            }
            None => {
                let now = Instant::now();
                if self.deadline.is_some_and(|deadline| now >= deadline) {
                    return None;
                }
                Some(now)
            }
        }
    }

    /// Claims one of the `--ops` measured operations; false once all are claimed (always true
    /// without `--ops`).
    fn claim_op(&self) -> bool {
        match self.plan.ops_limit {
            Some(limit) => self.ops_claimed.fetch_add(1, Ordering::Relaxed) < limit,
            None => true,
        }
    }
}

/// `yeskv bench`: see the module docs.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    if plan.workers < args.concurrency {
        eprintln!(
            "note: only {} keys, so the write workload runs {} workers (each owns its keys)",
            plan.keys, plan.workers
        );
    }
    let client = connect(&args, &plan).await?;
    prepare_bucket(&client, &plan).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let interrupt = tokio::spawn(stop_on_ctrl_c(stop.clone()));
    let value_pool = value_pool(&plan);
    if let Some(percents) = args.sweep.clone() {
        let result = sweep(&args, &percents, plan, client, value_pool, &stop).await;
        interrupt.abort();
        return result;
    }
    let description = describe(&args, &plan, &client);
    let contexts = start_contexts(&args, &plan, &client, &value_pool, &stop).await?;
    let result = measure(
        &args,
        plan,
        client,
        value_pool,
        &stop,
        description,
        contexts,
    )
    .await;
    interrupt.abort();
    print_summary(&result?.0, args.json)
}

/// One step of a sweep: its share of the maximum and what it measured.
#[derive(serde::Serialize)]
struct SweepStep {
    /// Percent of the measured maximum (`None`: the maximum itself).
    percent: Option<f64>,
    /// The step's `--rate` (`None`: as fast as possible).
    target_ops_per_sec: Option<f64>,
    summary: Summary,
}

/// `--sweep`: the maximum, then each percentage of it (see [`BenchArgs::sweep`]). Contexts of
/// the write workload carry from step to step, so no step reads keys to learn them.
async fn sweep(
    args: &BenchArgs,
    percents: &[f64],
    plan: Plan,
    client: Client,
    value_pool: Bytes,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    for p in percents {
        anyhow::ensure!(
            p.is_finite() && *p > 0.0 && *p <= 100.0,
            "--sweep takes percentages of the maximum in (0, 100], got {p}"
        );
    }
    let mut contexts = start_contexts(args, &plan, &client, &value_pool, stop).await?;
    let mut steps = Vec::new();
    let mut max = None;
    for percent in std::iter::once(None).chain(percents.iter().map(|p| Some(*p))) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let target = percent.and_then(|p| max.map(|m: f64| m * p / 100.0));
        let step_plan = Plan {
            rate: target,
            ..plan.clone()
        };
        let description = RunDescription {
            rate_limit_ops_per_sec: target,
            ..describe(args, &step_plan, &client)
        };
        let (summary, left) = measure(
            args,
            step_plan,
            client.clone(),
            value_pool.clone(),
            stop,
            description,
            contexts,
        )
        .await?;
        contexts = left;
        if percent.is_none() {
            anyhow::ensure!(
                summary.ops > 0,
                "the maximum step measured no operation ({} errors)",
                summary.errors
            );
            max = Some(summary.ops_per_sec);
        }
        if !args.json {
            print_sweep_step(percent, target, &summary);
        }
        steps.push(SweepStep {
            percent,
            target_ops_per_sec: target,
            summary,
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "steps": steps }))?
        );
    }
    Ok(())
}

/// One line per operation kind of a sweep step.
fn print_sweep_step(percent: Option<f64>, target: Option<f64>, summary: &Summary) {
    if percent.is_none() {
        println!(
            "{:<7} {:>10} {:>10} {:<13} {:>8} {:>8} {:>9} {:>7}",
            "step", "target/s", "ops/s", "operation", "p50 ms", "p99 ms", "p99.9 ms", "errors"
        );
    }
    let step = percent.map_or("max".to_string(), |p| format!("{p}%"));
    let target = target.map_or("-".to_string(), |t| format!("{t:.0}"));
    for (name, op) in &summary.operations {
        println!(
            "{:<7} {:>10} {:>10.0} {:<13} {:>8.2} {:>8.2} {:>9.2} {:>7}",
            step, target, summary.ops_per_sec, name, op.p50_ms, op.p99_ms, op.p999_ms, op.errors
        );
    }
}

/// The causal contexts each worker starts with: what the preload learnt, if asked for.
async fn start_contexts(
    args: &BenchArgs,
    plan: &Plan,
    client: &Client,
    value_pool: &Bytes,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<HashMap<u64, String>>> {
    if args.preload {
        preload(client, args, plan, value_pool.clone(), stop).await
    } else {
        Ok((0..plan.workers).map(|_| HashMap::new()).collect())
    }
}

/// A client of `--nodes` that keeps an idle connection per worker and never retries (a failed
/// operation is counted, not hidden), once every node has answered.
async fn connect(args: &BenchArgs, plan: &Plan) -> anyhow::Result<Client> {
    let mut builder = crate::client_builder()
        .nodes(args.nodes.iter().cloned())
        .timeout(plan.timeout)
        .retries(0)
        .pool_max_idle_per_host(yeskv_client::DEFAULT_POOL_MAX_IDLE_PER_HOST.max(plan.workers));
    if let Some(region) = &args.region {
        builder = builder.region(region.clone());
    }
    if let Some(key) = crate::api_key() {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;
    check_nodes(&client).await?;
    Ok(client)
}

/// Sets the bucket's properties the workload needs: datatype `cart`, or a sliding TTL. The
/// plain workloads leave their bucket as it is.
async fn prepare_bucket(client: &Client, plan: &Plan) -> anyhow::Result<()> {
    let (patch, what) = match plan.workload {
        Workload::Cart => (
            BucketPatch {
                datatype: Some(Some(Datatype::Cart)),
                ..BucketPatch::default()
            },
            "datatype cart".to_string(),
        ),
        Workload::Session => (
            BucketPatch {
                ttl_secs: Some(Some(plan.ttl_secs)),
                ttl_sliding: Some(true),
                ..BucketPatch::default()
            },
            format!("ttl_secs {} with sliding expiry", plan.ttl_secs),
        ),
        _ => return Ok(()),
    };
    client
        .patch_bucket(&plan.bucket, &patch)
        .await
        .with_context(|| {
            format!(
                "setting bucket {} to {what} (PUT /v1/buckets/{}); --bucket picks another",
                plan.bucket, plan.bucket
            )
        })
}

/// The random bytes written values are sliced from (see [`Run::value`]), drawn from the run's
/// seed so that a seeded run writes the same values.
fn value_pool(plan: &Plan) -> Bytes {
    let mut rng = SmallRng::seed_from_u64(plan.seed);
    let mut pool = vec![0u8; plan.value_size + VALUE_POOL_SLACK];
    rng.fill(&mut pool[..]);
    Bytes::from(pool)
}

/// The settings of the run as the summary reports them.
fn describe(args: &BenchArgs, plan: &Plan, client: &Client) -> RunDescription {
    RunDescription {
        workload: plan.workload.name(),
        workload_description: plan.workload.description(),
        distribution: plan.distribution.name(),
        nodes: client.nodes().map(str::to_string).collect(),
        bucket: plan.bucket.clone(),
        concurrency: plan.workers,
        keys: plan.keys,
        value_size: plan.value_size,
        r: args.r.map(|r| r.to_string()),
        w: args.w.map(|w| w.to_string()),
        context_updates: args.context_updates,
        fresh_keys: args.fresh_keys,
        ttl_secs: args.ttl,
        rate_limit_ops_per_sec: plan.rate,
        preloaded: args.preload,
        warmup_secs: plan.warmup.as_secs_f64(),
        seed: plan.seed,
        items: (plan.workload == Workload::Cart).then_some(plan.items),
        session_ttl_secs: (plan.workload == Workload::Session).then_some(plan.ttl_secs),
    }
}

/// The run itself: the preload if asked for, then the workers through the warmup and the
/// measured part, with progress on stderr. Returns the summary of the measured part.
async fn measure(
    args: &BenchArgs,
    plan: Plan,
    client: Client,
    value_pool: Bytes,
    stop: &Arc<AtomicBool>,
    description: RunDescription,
    contexts: Vec<HashMap<u64, String>>,
) -> anyhow::Result<(Summary, Vec<HashMap<u64, String>>)> {
    let start = Instant::now();
    let run = Arc::new(Run::new(
        args,
        plan,
        client,
        value_pool,
        stop.clone(),
        start,
    ));
    let reporter = Reporter::start(run.clone(), start);
    let (stats, contexts) = run_workers(&run, contexts).await?;
    let elapsed = Instant::now().saturating_duration_since(run.measure_start);
    reporter.finish().await;
    Ok((Summary::new(description, &stats, elapsed), contexts))
}

/// Runs one worker per entry of `contexts` (the causal contexts it starts with) and merges
/// their statistics once all have stopped.
async fn run_workers(
    run: &Arc<Run>,
    contexts: Vec<HashMap<u64, String>>,
) -> anyhow::Result<(WorkerStats, Vec<HashMap<u64, String>>)> {
    let workers: Vec<_> = contexts
        .into_iter()
        .enumerate()
        .map(|(index, contexts)| tokio::spawn(worker(run.clone(), index, contexts)))
        .collect();
    let mut stats = WorkerStats::default();
    let mut left = Vec::with_capacity(workers.len());
    for handle in workers {
        let (worker_stats, contexts) = handle.await.context("a bench worker panicked")?;
        stats.merge(&worker_stats);
        left.push(contexts);
    }
    Ok((stats, left))
}

/// Prints `summary` on stdout, as a table or one JSON object. Fails, with the first error,
/// when every operation failed, so that a run against a cluster that is not there does not
/// look like a success.
fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        print!("{}", summary.to_text());
    }
    if summary.ops == 0 && summary.errors > 0 {
        let example = summary
            .error_examples
            .values()
            .next()
            .cloned()
            .unwrap_or_default();
        anyhow::bail!("every operation failed; first error: {example}");
    }
    Ok(())
}

/// Fails early, with the reason, when a node cannot be reached at all.
async fn check_nodes(client: &Client) -> anyhow::Result<()> {
    for (index, url) in client.nodes().enumerate() {
        let Some(node) = client.for_node(index) else {
            continue;
        };
        match node.status().await {
            // Any answer, even an error status (a node still starting), means it is there.
            Ok(_) | Err(yeskv_client::Error::Http { .. }) => {}
            Err(error @ yeskv_client::Error::Connect(_)) => return Err(error.into()),
            Err(yeskv_client::Error::Timeout) => {
                anyhow::bail!("node {url} did not answer GET /v1/status in time")
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!("cannot reach node {url}")))
            }
        }
    }
    Ok(())
}

/// Sets `stop` on the first Ctrl-C (the run ends and reports); exits on the second.
async fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    stop.store(true, Ordering::Relaxed);
    eprintln!("\ninterrupted: finishing the operations in flight (Ctrl-C again to quit now)");
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(130);
    }
}

/// Makes every key hold one value of `--value-size` bytes; returns each worker's contexts of its
/// stripe's keys (kept for the write workload only, which chains them).
async fn preload(
    client: &Client,
    args: &BenchArgs,
    plan: &Plan,
    pool: Bytes,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<HashMap<u64, String>>> {
    let (bucket, r, w, ttl) = (&plan.bucket, args.r, args.w, args.ttl);
    let done = Arc::new(AtomicU64::new(0));
    let keep_contexts = plan.workload == Workload::Write;
    let progress = Arc::new(Progress::new(
        "preload",
        Some(plan.keys),
        std::io::stderr().is_terminal(),
    ));
    let mut tasks = Vec::with_capacity(plan.workers);
    for index in 0..plan.workers {
        let client = client.clone();
        let bucket = bucket.to_string();
        let stripe = Stripe::new(index as u64, plan.workers as u64, plan.keys);
        let value = pool.slice(..plan.value_size);
        let done = done.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut contexts = HashMap::new();
            let mut name = String::new();
            for position in 0..stripe.len() {
                if stop.load(Ordering::Relaxed) {
                    anyhow::bail!("interrupted during preload");
                }
                let key = stripe.key(position);
                key_name(&mut name, key);
                let context = preload_key(&client, &bucket, &name, value.clone(), r, w, ttl)
                    .await
                    .with_context(|| format!("preloading {bucket}/{name}"))?;
                if keep_contexts {
                    contexts.insert(key, context);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(contexts)
        }));
    }
    let started = Instant::now();
    let reporter = {
        let done = done.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last_line = Instant::now();
            loop {
                tokio::time::sleep(PROGRESS_BAR_INTERVAL).await;
                let count = done.load(Ordering::Relaxed);
                progress.update(count, "");
                if !progress.is_bar() && last_line.elapsed() >= PROGRESS_LINE_INTERVAL {
                    last_line = Instant::now();
                    eprintln!("preload: {count} keys");
                }
            }
        })
    };
    let mut contexts = Vec::with_capacity(tasks.len());
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(worker_contexts)) => contexts.push(worker_contexts),
            Ok(Err(error)) => {
                stop.store(true, Ordering::Relaxed);
                failure.get_or_insert(error);
            }
            Err(panic) => {
                failure.get_or_insert(anyhow::anyhow!("a preload worker panicked: {panic}"));
            }
        }
    }
    reporter.abort();
    progress.finish();
    if let Some(error) = failure {
        return Err(error);
    }
    eprintln!(
        "preloaded {} keys in {:.1} s",
        plan.keys,
        started.elapsed().as_secs_f64()
    );
    Ok(contexts)
}

/// Makes one key hold `value` (or any one value of its size) and returns its context.
async fn preload_key(
    client: &Client,
    bucket: &str,
    key: &str,
    value: Bytes,
    r: Option<Quorum>,
    w: Option<Quorum>,
    ttl: Option<u64>,
) -> Result<String, yeskv_client::Error> {
    let mut attempt = 1;
    loop {
        let result = async {
            let read = client.read(bucket, key, &ReadOptions { r }).await?;
            if read.value().is_some_and(|found| found.len() == value.len()) {
                return Ok(read.context);
            }
            let options = WriteOptions {
                context: Some(read.context).filter(|context| !context.is_empty()),
                w,
                ttl_secs: ttl,
            };
            client.put(bucket, key, value.clone(), &options).await
        }
        .await;
        match result {
            Err(error) if error.is_retryable() && attempt < PRELOAD_ATTEMPTS_MAX => {
                tokio::time::sleep(Duration::from_millis(50) * attempt).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One worker's closed loop (see the module docs); `contexts` are the causal contexts of its
/// own keys known so far (write workload).
async fn worker(
    run: Arc<Run>,
    index: usize,
    contexts: HashMap<u64, String>,
) -> (WorkerStats, HashMap<u64, String>) {
    match Worker::new(run, index, contexts) {
        Some(worker) => worker.work().await,
        // Only an empty stripe fails, and plan.workers <= keys for the write workload.
        None => (WorkerStats::default(), HashMap::new()),
    }
}

/// What one worker keeps to itself: its random choices, its keys and its statistics.
struct Worker {
    run: Arc<Run>,
    rng: SmallRng,
    /// The keys it owns (written by the write workload only).
    stripe: Stripe,
    /// Picks among the stripe's keys (write workload) or all keys (carts too).
    chooser: KeyChooser,
    /// The causal contexts of its own keys known so far (write workload).
    contexts: HashMap<u64, String>,
    /// What the cart and session workloads keep between operations.
    state: WorkloadState,
    /// The measured operations so far.
    stats: WorkerStats,
    /// Latencies not yet handed to the progress reporter.
    recent: Histogram<u64>,
    last_flush: Instant,
    /// The current key's name (one buffer, reused).
    name: String,
}

/// A worker's memory between operations, for the workloads that need one.
enum WorkloadState {
    /// The YCSB-style workloads.
    Plain,
    /// Carts: the catalogue's popularity, and what the last view saw.
    Cart {
        items: KeyChooser,
        last_view: Option<LastView>,
    },
    /// Sessions in use and abandoned.
    Session(Sessions),
}

/// A cart as the worker last viewed it: what a remove removes, with which context.
struct LastView {
    cart: String,
    items: Vec<String>,
    context: String,
}

impl Worker {
    /// Worker `index` of `run`, or `None` when it has no keys to pick from (an empty stripe).
    fn new(run: Arc<Run>, index: usize, contexts: HashMap<u64, String>) -> Option<Worker> {
        let plan = &run.plan;
        let rng = SmallRng::seed_from_u64(plan.worker_seed(index));
        let stripe = Stripe::new(index as u64, plan.workers as u64, plan.keys);
        let chooser_keys = if plan.workload == Workload::Write {
            stripe.len()
        } else {
            plan.keys
        };
        let chooser = KeyChooser::new(plan.distribution, chooser_keys).ok()?;
        let state = match plan.workload {
            Workload::Cart => WorkloadState::Cart {
                items: KeyChooser::new(KeyDistribution::Zipfian, plan.items).ok()?,
                last_view: None,
            },
            Workload::Session => {
                let in_use = usize::try_from(plan.keys / plan.workers as u64).unwrap_or(usize::MAX);
                WorkloadState::Session(Sessions::new(
                    format!("{:08x}-{index}", plan.seed as u32),
                    in_use,
                    Duration::from_secs(plan.ttl_secs),
                ))
            }
            _ => WorkloadState::Plain,
        };
        Some(Worker {
            run,
            rng,
            stripe,
            chooser,
            contexts,
            state,
            stats: WorkerStats::default(),
            recent: report::latency_histogram(),
            last_flush: Instant::now(),
            name: String::with_capacity(32),
        })
    }

    /// Sends operations one after another until the run is stopped, its deadline comes or
    /// every `--ops` operation is claimed; returns the statistics of the measured ones and the
    /// causal contexts it knows (the next step of a sweep starts with them).
    async fn work(mut self) -> (WorkerStats, HashMap<u64, String>) {
        loop {
            // A sequential worker stops once it took each of its keys.
            if self.run.stop.load(Ordering::Relaxed) || self.chooser.exhausted() {
                break;
            }
            let measuring = Instant::now() >= self.run.measure_start;
            if measuring && !self.run.claim_op() {
                break;
            }
            let Some(start) = self.run.next_start().await else {
                break;
            };
            // An operation that claimed one of `--ops` is measured even if its slot was due
            // before the warmup ended.
            let measured = measuring || start >= self.run.measure_start;
            let drawn = self.run.plan.workload.next_op(&mut self.rng);
            let (kind, outcome) = self.perform(drawn, measured).await;
            let end = Instant::now();
            if measured {
                self.record(kind, start, end, outcome).await;
            }
        }
        flush_recent(&self.run.live, &mut self.recent);
        (self.stats, self.contexts)
    }

    /// Sends one operation of kind `drawn` (or another when the worker's state does not allow
    /// it: a remove before any view, an expiry check before any session is due) on a key it
    /// picks. Returns the kind it did, and the time to leave out of its latency or the error it
    /// failed with.
    async fn perform(
        &mut self,
        drawn: OpKind,
        measured: bool,
    ) -> (OpKind, Result<Duration, yeskv_client::Error>) {
        match drawn {
            OpKind::CartAdd | OpKind::CartView | OpKind::CartRemove | OpKind::CartMerge => {
                self.perform_cart(drawn, measured).await
            }
            OpKind::SessionCreate | OpKind::SessionExpire => {
                self.perform_session(drawn, measured).await
            }
            OpKind::Read if matches!(self.state, WorkloadState::Session(_)) => {
                self.perform_session(drawn, measured).await
            }
            OpKind::Read | OpKind::Update | OpKind::Write | OpKind::ContextRead => {
                (drawn, self.perform_plain(drawn, measured).await)
            }
        }
    }

    /// One operation of the YCSB-style workloads.
    async fn perform_plain(
        &mut self,
        kind: OpKind,
        measured: bool,
    ) -> Result<Duration, yeskv_client::Error> {
        let run = &self.run;
        match kind {
            OpKind::Update => {
                key_name(&mut self.name, self.chooser.next(&mut self.rng));
                update(run, &self.name, &mut self.rng, measured, &mut self.stats).await
            }
            OpKind::Write | OpKind::ContextRead => {
                let key = self.stripe.key(self.chooser.next(&mut self.rng));
                key_name(&mut self.name, key);
                write(
                    run,
                    key,
                    &self.name,
                    &mut self.contexts,
                    &mut self.rng,
                    measured,
                    &mut self.stats,
                )
                .await
            }
            _ => {
                key_name(&mut self.name, self.chooser.next(&mut self.rng));
                run.client
                    .read(&run.bucket, &self.name, &run.read_options)
                    .await
                    .map(|read| {
                        if measured {
                            self.stats.read_misses += u64::from(read.siblings.is_empty());
                            self.stats.conflicted_reads += u64::from(read.is_conflict());
                        }
                        Duration::ZERO
                    })
            }
        }
    }

    /// One operation of the cart workload (see the module docs).
    async fn perform_cart(
        &mut self,
        drawn: OpKind,
        measured: bool,
    ) -> (OpKind, Result<Duration, yeskv_client::Error>) {
        let WorkloadState::Cart { items, last_view } = &mut self.state else {
            return (drawn, Err(not_this_workload(drawn)));
        };
        let carts = &self.run.carts;
        let rng = &mut self.rng;
        if drawn == OpKind::CartRemove {
            if let Some(view) = last_view.as_mut().filter(|view| !view.items.is_empty()) {
                let item = view
                    .items
                    .swap_remove(rng.random_range(0..view.items.len()));
                let outcome = carts
                    .remove(&view.cart, item, Some(&view.context))
                    .await
                    .map(|_| Duration::ZERO);
                return (OpKind::CartRemove, outcome);
            }
        }
        key_name(&mut self.name, self.chooser.next(rng));
        let outcome = match drawn {
            OpKind::CartAdd => {
                let item = item_name(items.next(rng));
                let qty = rng.random_range(1..=3);
                carts
                    .add(&self.name, item, qty)
                    .await
                    .map(|_| Duration::ZERO)
            }
            OpKind::CartMerge => {
                // The second device's add runs on a task of its own, sent at the same time.
                let item = item_name(items.next(rng));
                let (other, cart, other_item) = (carts.clone(), self.name.clone(), item.clone());
                let second = tokio::spawn(async move { other.add(cart, other_item, 1).await });
                let first = carts.add(&self.name, item, 1).await;
                let second = second.await.unwrap_or_else(|error| {
                    Err(yeskv_client::Error::Transport(format!(
                        "the second device's task ended: {error}"
                    )))
                });
                first.and(second).map(|_| Duration::ZERO)
            }
            // A view, also in place of a remove when no view saw an item yet.
            _ => match carts.get(&self.name).await {
                Ok(cart) => {
                    match cart {
                        Some(cart) if !cart.items.is_empty() => {
                            *last_view = Some(LastView {
                                cart: self.name.clone(),
                                items: cart.items.into_keys().collect(),
                                context: cart.context,
                            });
                        }
                        Some(_) => {}
                        None => {
                            if measured {
                                self.stats.read_misses += 1;
                            }
                        }
                    }
                    Ok(Duration::ZERO)
                }
                Err(error) => Err(error),
            },
        };
        let kind = match drawn {
            OpKind::CartRemove => OpKind::CartView,
            other => other,
        };
        (kind, outcome)
    }

    /// One operation of the session workload (see the module docs).
    async fn perform_session(
        &mut self,
        drawn: OpKind,
        measured: bool,
    ) -> (OpKind, Result<Duration, yeskv_client::Error>) {
        let WorkloadState::Session(sessions) = &mut self.state else {
            return (drawn, Err(not_this_workload(drawn)));
        };
        let run = &self.run;
        let rng = &mut self.rng;
        if drawn == OpKind::SessionExpire {
            if let Some(id) = sessions.due_for_expiry(Instant::now()) {
                sessions.key(id, &mut self.name);
                let outcome = run
                    .client
                    .read(&run.bucket, &self.name, &run.read_options)
                    .await
                    .map(|read| {
                        if measured {
                            let alive = read.is_found();
                            self.stats.sessions_alive_past_ttl += u64::from(alive);
                            self.stats.sessions_expired += u64::from(!alive);
                        }
                        Duration::ZERO
                    });
                return (OpKind::SessionExpire, outcome);
            }
        }
        if drawn != OpKind::SessionCreate {
            if let Some((position, id)) = sessions.pick(rng) {
                sessions.key(id, &mut self.name);
                let outcome = run
                    .client
                    .read(&run.bucket, &self.name, &run.read_options)
                    .await
                    .map(|read| {
                        let found = read.is_found();
                        sessions.read(position, found, Instant::now());
                        if measured {
                            self.stats.read_misses += u64::from(!found);
                        }
                        Duration::ZERO
                    });
                return (OpKind::Read, outcome);
            }
        }
        let id = sessions.next_id();
        sessions.key(id, &mut self.name);
        let options = WriteOptions {
            context: None,
            w: run.w,
            ttl_secs: None,
        };
        let outcome = run
            .client
            .put(&run.bucket, &self.name, run.value(rng), &options)
            .await
            .map(|_| {
                sessions.created(id, Instant::now(), rng);
                Duration::ZERO
            });
        (OpKind::SessionCreate, outcome)
    }

    /// Records a measured operation of `kind` that ran from `start` to `end`: its latency, less
    /// the time `outcome` says to leave out, or its error (pausing after a connection error, so
    /// that a dead node does not make a busy loop). Every [`LIVE_FLUSH_INTERVAL`] it hands its
    /// recent latencies to the progress reporter.
    async fn record(
        &mut self,
        kind: OpKind,
        start: Instant,
        end: Instant,
        outcome: Result<Duration, yeskv_client::Error>,
    ) {
        match outcome {
            Ok(excluded) => {
                let latency = end
                    .saturating_duration_since(start)
                    .saturating_sub(excluded);
                self.stats.record(kind, latency);
                report::record_latency(&mut self.recent, latency);
                self.run.live.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats.record_error(kind, &error);
                self.run.live.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(error, yeskv_client::Error::Connect(_)) {
                    tokio::time::sleep(CONNECT_ERROR_PAUSE).await;
                }
            }
        }
        if end.saturating_duration_since(self.last_flush) >= LIVE_FLUSH_INTERVAL {
            flush_recent(&self.run.live, &mut self.recent);
            self.last_flush = end;
        }
    }
}

/// The error of an operation drawn for another workload than the worker's (cannot happen: the
/// workload draws its own kinds).
fn not_this_workload(kind: OpKind) -> yeskv_client::Error {
    yeskv_client::Error::InvalidArgument(format!(
        "a {} operation outside its workload",
        kind.name()
    ))
}

/// An update: read-modify-write with the read's context, or a blind write. Returns the time to
/// leave out of its latency (none: the read is part of an update).
async fn update(
    run: &Run,
    key: &str,
    rng: &mut SmallRng,
    measured: bool,
    stats: &mut WorkerStats,
) -> Result<Duration, yeskv_client::Error> {
    let context = if run.context_updates {
        let read = run.client.read(&run.bucket, key, &run.read_options).await?;
        if measured {
            stats.conflicted_reads += u64::from(read.is_conflict());
        }
        Some(read.context).filter(|context| !context.is_empty())
    } else {
        None
    };
    let options = WriteOptions {
        context,
        w: run.w,
        ttl_secs: run.ttl_secs,
    };
    run.client
        .put(&run.bucket, key, run.value(rng), &options)
        .await
        .map(|_| Duration::ZERO)
}

/// A write of one of the worker's own keys, carrying the context of its previous write of the
/// key; the first time, the key is read to learn its context (recorded as a context read),
/// unless `--fresh-keys` says there is nothing to learn. Returns the time that read took, to be
/// left out of the write's latency.
async fn write(
    run: &Run,
    key: u64,
    name: &str,
    contexts: &mut HashMap<u64, String>,
    rng: &mut SmallRng,
    measured: bool,
    stats: &mut WorkerStats,
) -> Result<Duration, yeskv_client::Error> {
    let mut context_read_time = Duration::ZERO;
    // Taken out: if the write fails it may or may not have been applied, so the old context is
    // no longer the right one; the next write of the key reads again.
    let context = match contexts.remove(&key) {
        Some(context) => Some(context),
        None if run.fresh_keys => None,
        None => {
            let read_start = Instant::now();
            let read = run.client.read(&run.bucket, name, &run.read_options).await;
            context_read_time = read_start.elapsed();
            match read {
                Ok(read) => {
                    if measured {
                        stats.record(OpKind::ContextRead, context_read_time);
                        stats.conflicted_reads += u64::from(read.is_conflict());
                    }
                    Some(read.context).filter(|context| !context.is_empty())
                }
                // Reported as the write's failure (the write could not be attempted).
                Err(error) => return Err(error),
            }
        }
    };
    let options = WriteOptions {
        context,
        w: run.w,
        ttl_secs: run.ttl_secs,
    };
    let new_context = run
        .client
        .put(&run.bucket, name, run.value(rng), &options)
        .await?;
    contexts.insert(key, new_context);
    Ok(context_read_time)
}

/// Hands a worker's recent latencies to the progress reporter.
fn flush_recent(live: &LiveStats, recent: &mut Histogram<u64>) {
    if recent.is_empty() {
        return;
    }
    if let Ok(mut shared) = live.recent_latency_us.lock() {
        let _ = shared.add(&*recent);
    }
    recent.reset();
}

/// Progress output on stderr: an indicatif bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// `length`: the bar's end (operations or milliseconds); `None`: a spinner.
    fn new(prefix: &'static str, length: Option<u64>, terminal: bool) -> Progress {
        if !terminal {
            return Progress { bar: None };
        }
        let bar = match length {
            Some(length) => indicatif::ProgressBar::new(length),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template =
            "{prefix:>7} [{elapsed_precise}] [{bar:30.cyan/blue}] {percent:>3}% eta {eta:<4} {msg}";
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix);
        Progress { bar: Some(bar) }
    }

    fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    fn update(&self, position: u64, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            if !message.is_empty() {
                bar.set_message(message.to_string());
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The task that reports progress during the measured run.
struct Reporter {
    task: tokio::task::JoinHandle<()>,
    done: Arc<AtomicBool>,
}

impl Reporter {
    fn start(run: Arc<Run>, start: Instant) -> Reporter {
        let done = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(report_progress(run, start, done.clone()));
        Reporter { task, done }
    }

    async fn finish(self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

async fn report_progress(run: Arc<Run>, start: Instant, done: Arc<AtomicBool>) {
    let terminal = std::io::stderr().is_terminal();
    let warmup = run.plan.warmup;
    // By time when the run has a duration (milliseconds, warmup included), else by operations.
    let by_time = run
        .plan
        .duration
        .map(|duration| (warmup + duration).as_millis() as u64);
    let progress = Progress::new("bench", by_time.or(run.plan.ops_limit), terminal);
    let window = if terminal {
        Duration::from_secs(1)
    } else {
        PROGRESS_LINE_INTERVAL
    };
    let mut window_start = Instant::now();
    let mut window_ops = 0u64;
    let mut message = String::from("starting");
    while !done.load(Ordering::Relaxed) {
        tokio::time::sleep(PROGRESS_BAR_INTERVAL).await;
        let now = Instant::now();
        let ops = run.live.ops.load(Ordering::Relaxed);
        let errors = run.live.errors.load(Ordering::Relaxed);
        if now < run.measure_start {
            message = format!(
                "warming up, {:.0} s left",
                (run.measure_start - now).as_secs_f64().ceil()
            );
            window_start = now;
        } else if now.saturating_duration_since(window_start) >= window {
            let rate = (ops - window_ops) as f64 / (now - window_start).as_secs_f64();
            let p99_ms = match run.live.recent_latency_us.lock() {
                Ok(mut recent) => {
                    let p99 = if recent.is_empty() {
                        0.0
                    } else {
                        recent.value_at_quantile(0.99) as f64 / 1000.0
                    };
                    recent.reset();
                    p99
                }
                Err(_) => 0.0,
            };
            message = format!("ops={ops} ops/s={rate:.0} p99={p99_ms:.2}ms errors={errors}");
            if !terminal {
                eprintln!(
                    "t={:.0}s {message}",
                    now.saturating_duration_since(run.measure_start)
                        .as_secs_f64()
                );
            }
            window_start = now;
            window_ops = ops;
        }
        let position = match by_time {
            Some(_) => now.saturating_duration_since(start).as_millis() as u64,
            None => ops,
        };
        progress.update(position, &message);
    }
    progress.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|cli| cli.bench)
    }

    #[test]
    fn defaults_are_sensible() {
        let args = parse(&[]).expect("defaults parse");
        assert_eq!(args.workload, Workload::A);
        assert_eq!(args.keys, 100_000);
        assert_eq!(args.concurrency, 50);
        assert!(args.context_updates);
        let plan = Plan::new(&args).expect("valid");
        assert_eq!(plan.duration, Some(Duration::from_secs(10)));
        assert_eq!(plan.ops_limit, None);
        assert_eq!(plan.workers, 50);
    }

    #[test]
    fn flags_parse() {
        let args = parse(&[
            "--nodes",
            "http://a:1,http://b:2",
            "--workload",
            "write",
            "--keys",
            "10",
            "--concurrency",
            "64",
            "--ops",
            "1000",
            "--distribution",
            "zipfian",
            "--r",
            "one",
            "--w",
            "all",
            "--context-updates",
            "false",
            "--seed",
            "3",
            "--rate",
            "500",
        ])
        .expect("valid flags");
        assert_eq!(args.nodes, ["http://a:1", "http://b:2"]);
        assert_eq!(args.r, Some(Quorum::One));
        assert_eq!(args.w, Some(Quorum::All));
        assert!(!args.context_updates);
        let plan = Plan::new(&args).expect("valid");
        assert_eq!(plan.duration, None);
        assert_eq!(plan.ops_limit, Some(1000));
        // Write workload: no more workers than keys.
        assert_eq!(plan.workers, 10);
        assert_eq!(plan.seed, 3);
        assert_ne!(plan.worker_seed(0), plan.worker_seed(1));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(parse(&["--duration", "5", "--ops", "10"]).is_err());
        assert!(parse(&["--workload", "d"]).is_err());
        assert!(parse(&["--r", "zero"]).is_err());
        for bad in [
            &["--keys", "0"][..],
            &["--concurrency", "0"],
            &["--duration", "0"],
            &["--duration=-1"],
            &["--ops", "0"],
            &["--rate", "0"],
            &["--warmup=-1"],
            &["--timeout", "0"],
            &["--bucket", ""],
        ] {
            let args = parse(bad).expect("parses");
            assert!(Plan::new(&args).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cart_and_session_workloads_have_their_own_defaults() {
        let plan = Plan::new(&parse(&["--workload", "cart"]).expect("valid")).expect("valid");
        assert_eq!(plan.bucket, "bench-cart");
        assert_eq!(plan.distribution, KeyDistribution::Zipfian);
        assert_eq!(plan.items, 1000);
        let plan = Plan::new(
            &parse(&["--workload", "session", "--ttl", "30", "--bucket", "s"]).expect("valid"),
        )
        .expect("valid");
        assert_eq!((plan.bucket.as_str(), plan.ttl_secs), ("s", 30));
        assert_eq!(plan.distribution, KeyDistribution::Uniform);
        let plan =
            Plan::new(&parse(&["--workload", "cart", "--distribution", "uniform"]).expect("valid"))
                .expect("valid");
        assert_eq!(plan.distribution, KeyDistribution::Uniform);
        for bad in [
            &["--workload", "cart", "--preload"][..],
            &["--workload", "session", "--preload"],
            &["--workload", "cart", "--items", "0"],
        ] {
            let args = parse(bad).expect("parses");
            assert!(Plan::new(&args).is_err(), "{bad:?} accepted");
        }
        assert!(parse(&["--workload", "session", "--ttl", "0"]).is_err());
    }

    #[test]
    fn pacer_slots_follow_the_rate() {
        assert_eq!(slot_offset(0, 0.001), Duration::ZERO);
        assert_eq!(slot_offset(1000, 0.001), Duration::from_secs(1));
        let start = Instant::now();
        let pacer = Pacer::new(start, 4.0);
        let slots: Vec<Duration> = (0..3).map(|_| pacer.next_slot() - start).collect();
        assert_eq!(
            slots,
            [
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500)
            ]
        );
    }
}
