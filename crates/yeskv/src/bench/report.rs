//! What the load generator measures and how it reports it.
//!
//! Each worker keeps its own [`WorkerStats`] (no sharing on the hot path): one latency histogram
//! per operation kind, in microseconds, plus error and miss counters. They are merged when the
//! run ends and turned into a [`Summary`], printed as a table or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::OpKind;

/// Highest latency a histogram tracks (one hour, in µs); slower samples are clamped to it.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Significant decimal digits the histograms keep (0.1% relative error).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds, 1 µs to one hour.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant bounds that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low, digits <= 5),
    // so construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records `latency` (clamped to the histogram's range) into `histogram`.
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.clamp(1, LATENCY_US_MAX));
}

/// How many errors of one kind, and the first message seen (to show the user what went wrong).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorTally {
    /// Errors of this kind.
    pub count: u64,
    /// The first one, as text.
    pub example: String,
}

/// One worker's measurements (and, after [`WorkerStats::merge`], the whole run's).
#[derive(Debug)]
pub struct WorkerStats {
    /// Latency of successful operations, per [`OpKind::index`], in µs.
    pub latency_us: [Histogram<u64>; OpKind::COUNT],
    /// Failed operations, per [`OpKind::index`].
    pub errors: [u64; OpKind::COUNT],
    /// Failed operations by error kind ([`error_kind`]).
    pub error_kinds: BTreeMap<String, ErrorTally>,
    /// Reads (of the read op) that found no value: successes, but worth knowing.
    pub read_misses: u64,
    /// Reads (also those of updates) that found more than one sibling.
    pub conflicted_reads: u64,
    /// Session expiry checks that found the session gone, as they should.
    pub sessions_expired: u64,
    /// Session expiry checks that still found the session (its TTL and the grace had passed
    /// since its last use).
    pub sessions_alive_past_ttl: u64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            latency_us: std::array::from_fn(|_| latency_histogram()),
            errors: [0; OpKind::COUNT],
            error_kinds: BTreeMap::new(),
            read_misses: 0,
            conflicted_reads: 0,
            sessions_expired: 0,
            sessions_alive_past_ttl: 0,
        }
    }
}

impl WorkerStats {
    /// Records a successful operation.
    pub fn record(&mut self, kind: OpKind, latency: Duration) {
        record_latency(&mut self.latency_us[kind.index()], latency);
    }

    /// Records a failed operation.
    pub fn record_error(&mut self, kind: OpKind, error: &yeskv_client::Error) {
        self.errors[kind.index()] += 1;
        let tally = self.error_kinds.entry(error_kind(error)).or_default();
        if tally.count == 0 {
            tally.example = error.to_string();
        }
        tally.count += 1;
    }

    /// Adds `other`'s measurements to these.
    pub fn merge(&mut self, other: &WorkerStats) {
        for (mine, theirs) in self.latency_us.iter_mut().zip(&other.latency_us) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.add(theirs);
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        for (kind, tally) in &other.error_kinds {
            let mine = self.error_kinds.entry(kind.clone()).or_default();
            if mine.count == 0 {
                mine.example = tally.example.clone();
            }
            mine.count += tally.count;
        }
        self.read_misses += other.read_misses;
        self.conflicted_reads += other.conflicted_reads;
        self.sessions_expired += other.sessions_expired;
        self.sessions_alive_past_ttl += other.sessions_alive_past_ttl;
    }
}

/// The summary's name for the kind of `error`: `timeout`, `connect`, `transport`, `conflict`
/// (HTTP 409: the bucket holds another data type, or none), `http_<status>`,
/// `invalid_response`, ...
pub fn error_kind(error: &yeskv_client::Error) -> String {
    use yeskv_client::Error;
    match error {
        Error::Http { status: 409, .. } => "conflict".into(),
        Error::Http { status, .. } => format!("http_{status}"),
        Error::Connect(_) => "connect".into(),
        Error::Transport(_) => "transport".into(),
        Error::Timeout => "timeout".into(),
        Error::InvalidResponse(_) => "invalid_response".into(),
        Error::InvalidUrl(_) => "invalid_url".into(),
        Error::InvalidArgument(_) => "invalid_argument".into(),
        Error::WrongDatatype { .. } => "wrong_datatype".into(),
    }
}

/// Latency and throughput of one operation kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    /// Successful operations.
    pub count: u64,
    /// Failed operations.
    pub errors: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Mean latency.
    pub mean_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Slowest operation.
    pub max_ms: f64,
}

impl OpSummary {
    fn new(histogram: &Histogram<u64>, errors: u64, elapsed_secs: f64) -> OpSummary {
        OpSummary {
            count: histogram.len(),
            errors,
            ops_per_sec: round(per_second(histogram.len(), elapsed_secs), 1),
            mean_ms: round(histogram.mean() / 1000.0, 3),
            p50_ms: quantile_ms(histogram, 0.50),
            p90_ms: quantile_ms(histogram, 0.90),
            p99_ms: quantile_ms(histogram, 0.99),
            p999_ms: quantile_ms(histogram, 0.999),
            max_ms: round(histogram.max() as f64 / 1000.0, 3),
        }
    }
}

/// What the run was (echoed in the summary so that a saved summary is self-describing).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunDescription {
    /// `write`, `read`, `a`, `b`, `c`, `cart` or `session`.
    pub workload: &'static str,
    /// The mix in words.
    pub workload_description: &'static str,
    /// `uniform` or `zipfian`.
    pub distribution: &'static str,
    /// Node URLs.
    pub nodes: Vec<String>,
    /// Bucket written and read.
    pub bucket: String,
    /// Concurrent workers (in-flight operations).
    pub concurrency: usize,
    /// Size of the key space.
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Read quorum sent (`null`: the server's default).
    pub r: Option<String>,
    /// Write quorum sent (`null`: the server's default).
    pub w: Option<String>,
    /// Whether updates read first and write with the read's context.
    pub context_updates: bool,
    /// Whether first writes skipped the context read (`--fresh-keys`).
    pub fresh_keys: bool,
    /// Expiry of every write, seconds (`--ttl`; `null`: none).
    pub ttl_secs: Option<u64>,
    /// Target rate (`null`: as fast as the workers go).
    pub rate_limit_ops_per_sec: Option<f64>,
    /// Whether every key was written before the run.
    pub preloaded: bool,
    /// Unmeasured time before the measurement.
    pub warmup_secs: f64,
    /// Seed of the workers' random choices.
    pub seed: u64,
    /// Items in the catalogue (`cart` workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// The bucket's TTL, in seconds (`session` workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ttl_secs: Option<u64>,
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// What ran.
    #[serde(flatten)]
    pub run: RunDescription,
    /// Measured time.
    pub duration_secs: f64,
    /// Successful operations (reads, updates, writes; not context reads).
    pub ops: u64,
    /// `ops` per second.
    pub ops_per_sec: f64,
    /// Failed operations (context reads included).
    pub errors: u64,
    /// Failed operations by kind (`conflict` is HTTP 409).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first error of each kind.
    pub error_examples: BTreeMap<String, String>,
    /// Reads that found no value.
    pub read_misses: u64,
    /// Reads that found siblings.
    pub conflicted_reads: u64,
    /// Session expiry checks that found the session gone (`session` workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_expired: Option<u64>,
    /// Session expiry checks that still found it (`session` workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_alive_past_ttl: Option<u64>,
    /// Median latency over all operations.
    pub p50_ms: f64,
    /// 99th percentile latency over all operations.
    pub p99_ms: f64,
    /// Per operation kind (only kinds that ran).
    pub operations: BTreeMap<&'static str, OpSummary>,
}

impl Summary {
    /// Summarizes merged `stats` of a run that measured for `elapsed`.
    pub fn new(run: RunDescription, stats: &WorkerStats, elapsed: Duration) -> Summary {
        let elapsed_secs = elapsed.as_secs_f64();
        let sessions = run.session_ttl_secs.is_some();
        let mut all_ops = latency_histogram();
        let mut operations = BTreeMap::new();
        for kind in OpKind::ALL {
            let histogram = &stats.latency_us[kind.index()];
            let errors = stats.errors[kind.index()];
            if histogram.is_empty() && errors == 0 {
                continue;
            }
            if kind.is_op() {
                let _ = all_ops.add(histogram);
            }
            operations.insert(kind.name(), OpSummary::new(histogram, errors, elapsed_secs));
        }
        Summary {
            run,
            duration_secs: round(elapsed_secs, 3),
            ops: all_ops.len(),
            ops_per_sec: round(per_second(all_ops.len(), elapsed_secs), 1),
            errors: stats.errors.iter().sum(),
            errors_by_kind: stats
                .error_kinds
                .iter()
                .map(|(kind, tally)| (kind.clone(), tally.count))
                .collect(),
            error_examples: stats
                .error_kinds
                .iter()
                .map(|(kind, tally)| (kind.clone(), tally.example.clone()))
                .collect(),
            read_misses: stats.read_misses,
            conflicted_reads: stats.conflicted_reads,
            sessions_expired: sessions.then_some(stats.sessions_expired),
            sessions_alive_past_ttl: sessions.then_some(stats.sessions_alive_past_ttl),
            p50_ms: quantile_ms(&all_ops, 0.50),
            p99_ms: quantile_ms(&all_ops, 0.99),
            operations,
        }
    }

    /// The summary as a table for people: the run's settings, its totals, then a line per
    /// operation kind. The parts write into a `String`, which cannot fail, so their
    /// `fmt::Result`s are ignored.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_settings(&mut out);
        self.write_totals(&mut out);
        out.push('\n');
        self.write_operations(&mut out);
        out
    }

    /// The settings the run was made with, one per line.
    fn write_settings(&self, out: &mut String) {
        let run = &self.run;
        let _ = writeln!(
            out,
            "workload      {} ({}), {} keys",
            run.workload, run.workload_description, run.distribution
        );
        let _ = writeln!(out, "nodes         {}", run.nodes.join(", "));
        let _ = writeln!(out, "bucket        {}", run.bucket);
        let _ = writeln!(out, "concurrency   {}", run.concurrency);
        let _ = writeln!(
            out,
            "keys          {}{}{}",
            run.keys,
            if run.preloaded { " (preloaded)" } else { "" },
            if run.fresh_keys {
                " (fresh: first writes blind)"
            } else {
                ""
            }
        );
        if let Some(items) = run.items {
            let _ = writeln!(out, "items         {items} (catalogue)");
        }
        if let Some(ttl_secs) = run.session_ttl_secs {
            let _ = writeln!(out, "session ttl   {ttl_secs} s, sliding");
        }
        let _ = writeln!(out, "value size    {} B", run.value_size);
        if let Some(ttl) = run.ttl_secs {
            let _ = writeln!(out, "ttl           {ttl} s");
        }
        if run.r.is_some() || run.w.is_some() {
            let _ = writeln!(
                out,
                "quorums       r={} w={}",
                run.r.as_deref().unwrap_or("default"),
                run.w.as_deref().unwrap_or("default")
            );
        }
        if let Some(rate) = run.rate_limit_ops_per_sec {
            let _ = writeln!(out, "rate limit    {rate} ops/s");
        }
    }

    /// The measured duration, operations, throughput and errors by kind, and the read misses
    /// and sibling reads when there were any.
    fn write_totals(&self, out: &mut String) {
        let run = &self.run;
        let _ = write!(out, "duration      {:.2} s", self.duration_secs);
        if run.warmup_secs > 0.0 {
            let _ = write!(out, " (after {} s warmup)", run.warmup_secs);
        }
        out.push('\n');
        let _ = writeln!(out, "ops           {}", self.ops);
        let _ = writeln!(out, "throughput    {:.1} ops/s", self.ops_per_sec);
        let _ = writeln!(out, "errors        {}", self.errors);
        for (kind, count) in &self.errors_by_kind {
            let example = self.error_examples.get(kind).map_or("", String::as_str);
            let _ = writeln!(out, "  {kind:<20} {count:>10}  first: {example}");
        }
        if self.read_misses > 0 {
            let _ = writeln!(
                out,
                "read misses   {} (reads that found no value{})",
                self.read_misses,
                if run.preloaded || matches!(run.workload, "cart" | "session") {
                    ""
                } else {
                    "; --preload writes every key first"
                }
            );
        }
        if let (Some(expired), Some(alive)) = (self.sessions_expired, self.sessions_alive_past_ttl)
        {
            let _ = writeln!(
                out,
                "sessions      {expired} expired as expected, {alive} still readable past their TTL"
            );
        }
        if self.conflicted_reads > 0 {
            let _ = writeln!(
                out,
                "siblings      {} reads found concurrent versions",
                self.conflicted_reads
            );
        }
    }

    /// The table of latencies, a row per operation kind that ran, and a note on what
    /// `context_read` and `update` measure when they appear.
    fn write_operations(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "{:<13} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "operation",
            "count",
            "ops/s",
            "mean ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors"
        );
        for kind in OpKind::ALL {
            if let Some(op) = self.operations.get(kind.name()) {
                let _ = writeln!(
                    out,
                    "{:<13} {:>10} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
                    kind.name(),
                    op.count,
                    op.ops_per_sec,
                    op.mean_ms,
                    op.p50_ms,
                    op.p90_ms,
                    op.p99_ms,
                    op.p999_ms,
                    op.max_ms,
                    op.errors
                );
            }
        }
        if self.operations.contains_key(OpKind::ContextRead.name()) {
            let _ = writeln!(
                out,
                "(context_read: the read before a worker's first write of a key in this run, to \
                 learn its causal context; not counted in ops)"
            );
        }
        if self.operations.contains_key(OpKind::CartRemove.name()) {
            let _ = writeln!(
                out,
                "(remove: an item the worker's last view saw, with that view's context)"
            );
        }
        if self.operations.contains_key(OpKind::CartMerge.name()) {
            let _ = writeln!(
                out,
                "(merge: two concurrent adds to one cart from two tasks; latency until both are \
                 acknowledged)"
            );
        }
        if self.operations.contains_key(OpKind::SessionExpire.name()) {
            let _ = writeln!(
                out,
                "(expire: a read of a session unused for its TTL and {} s; it should find nothing)",
                super::workload::SESSION_EXPIRY_GRACE.as_secs()
            );
        }
        if self.operations.contains_key(OpKind::Update.name()) && self.run.context_updates {
            let _ = writeln!(
                out,
                "(update: a read then a write with the read's context; latency covers both)"
            );
        }
    }
}

/// `value` in ms, from µs at `quantile` of `histogram`.
fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        return 0.0;
    }
    round(histogram.value_at_quantile(quantile) as f64 / 1000.0, 3)
}

fn per_second(count: u64, elapsed_secs: f64) -> f64 {
    if elapsed_secs > 0.0 {
        count as f64 / elapsed_secs
    } else {
        0.0
    }
}

/// `value` rounded to `decimals` places (keeps the JSON short).
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> RunDescription {
        RunDescription {
            workload: "a",
            workload_description: "YCSB A: 50% reads, 50% updates",
            distribution: "uniform",
            nodes: vec!["http://127.0.0.1:8081".into()],
            bucket: "bench".into(),
            concurrency: 2,
            keys: 10,
            value_size: 100,
            r: None,
            w: Some("all".into()),
            context_updates: true,
            fresh_keys: false,
            ttl_secs: None,
            rate_limit_ops_per_sec: None,
            preloaded: false,
            warmup_secs: 0.0,
            seed: 1,
            items: None,
            session_ttl_secs: None,
        }
    }

    #[test]
    fn merged_stats_summarize() {
        let mut first = WorkerStats::default();
        let mut second = WorkerStats::default();
        for millis in 1..=100u64 {
            first.record(OpKind::Read, Duration::from_millis(millis));
            second.record(OpKind::Update, Duration::from_millis(millis * 2));
        }
        second.record(OpKind::ContextRead, Duration::from_millis(1));
        second.record_error(OpKind::Update, &yeskv_client::Error::Timeout);
        second.record_error(
            OpKind::Update,
            &yeskv_client::Error::Http {
                status: 409,
                reason: "too many".into(),
            },
        );
        second.read_misses = 3;
        first.merge(&second);

        let summary = Summary::new(description(), &first, Duration::from_secs(2));
        assert_eq!(summary.ops, 200);
        assert_eq!(summary.ops_per_sec, 100.0);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.errors_by_kind.get("timeout"), Some(&1));
        assert_eq!(summary.errors_by_kind.get("conflict"), Some(&1));
        assert_eq!(summary.read_misses, 3);
        let read = &summary.operations["read"];
        assert_eq!(read.count, 100);
        assert!((read.p50_ms - 50.0).abs() < 0.1, "{}", read.p50_ms);
        assert!((read.p99_ms - 99.0).abs() < 0.1, "{}", read.p99_ms);
        assert!((read.max_ms - 100.0).abs() < 0.1, "{}", read.max_ms);
        let update = &summary.operations["update"];
        assert_eq!(update.errors, 2);
        assert!((update.p50_ms - 100.0).abs() < 0.1);
        assert_eq!(summary.operations["context_read"].count, 1);
        assert!(!summary.operations.contains_key("write"));

        let json = serde_json::to_value(&summary).expect("serializable");
        assert_eq!(json["workload"], "a");
        assert_eq!(json["ops_per_sec"], 100.0);
        assert_eq!(json["operations"]["read"]["count"], 100);
        assert!(json["operations"]["update"]["p99_ms"].as_f64().is_some());

        let text = summary.to_text();
        assert!(text.contains("throughput    100.0 ops/s"), "{text}");
        assert!(text.contains("conflict"), "{text}");
        assert!(text.contains("r=default w=all"), "{text}");
        assert!(text.contains("--preload"), "{text}");
    }

    #[test]
    fn latencies_are_clamped_into_range() {
        let mut histogram = latency_histogram();
        record_latency(&mut histogram, Duration::ZERO);
        record_latency(&mut histogram, Duration::from_secs(10 * 3600));
        assert_eq!(histogram.len(), 2);
        assert_eq!(histogram.min(), 1);
        assert!(histogram.max() >= LATENCY_US_MAX);
    }

    #[test]
    fn empty_run_summarizes_to_zeroes() {
        let summary = Summary::new(description(), &WorkerStats::default(), Duration::ZERO);
        assert_eq!(summary.ops, 0);
        assert_eq!(summary.ops_per_sec, 0.0);
        assert_eq!(summary.p99_ms, 0.0);
        assert!(summary.operations.is_empty());
    }
}
