//! The pure part of the load generator: which operation comes next and which key it touches.
//!
//! Nothing here does I/O or reads a clock; every choice comes from the caller's seeded RNG, so a
//! worker's sequence of operations and keys is a function of `--seed` and its worker index.
//!
//! - [`Workload`]: the operation mix (YCSB A/B/C, pure reads, pure writes).
//! - [`KeyChooser`]: uniform or Zipfian key indexes. Zipfian ranks (θ = 0.99, as YCSB) are
//!   *scrambled* by a bijection of `0..keys`, so the hot keys are spread over the key space
//!   rather than being keys 0, 1, 2... (YCSB's "scrambled Zipfian"); being a bijection, the
//!   hottest rank still maps to exactly one key.
//! - [`Stripe`]: the keys one worker owns in the `write` workload (key index ≡ worker index
//!   modulo the worker count), so that no two workers ever write the same key concurrently.
//! - [`key_name`]: key index → key text (`key0000000042`).

use std::fmt::Write as _;

use rand::Rng;
use rand_distr::{Distribution as _, Zipf};

/// Skew of the Zipfian distribution (YCSB's `zipfian` constant).
pub const ZIPFIAN_THETA: f64 = 0.99;

/// A prime larger than any key count, used to scramble Zipfian ranks: multiplying by a number
/// coprime with `keys` permutes `0..keys`. (2^61 - 1, a Mersenne prime.)
const SCRAMBLE_PRIME: u64 = (1 << 61) - 1;

/// Offset added by the scramble, so that the hottest key is not key 0.
const SCRAMBLE_OFFSET: u64 = 0x9E37_79B9_7F4A_7C15;

/// The operation mix of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// 100% writes; each worker writes its own keys, chaining causal contexts (see below).
    Write,
    /// 100% reads.
    Read,
    /// YCSB A, update heavy: 50% reads, 50% updates.
    A,
    /// YCSB B, read mostly: 95% reads, 5% updates.
    B,
    /// YCSB C, read only: 100% reads.
    C,
}

impl Workload {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
        }
    }

    /// One line for the summary.
    pub fn description(self) -> &'static str {
        match self {
            Workload::Write => "100% writes",
            Workload::Read => "100% reads",
            Workload::A => "YCSB A: 50% reads, 50% updates",
            Workload::B => "YCSB B: 95% reads, 5% updates",
            Workload::C => "YCSB C: 100% reads",
        }
    }

    /// Fraction of operations that are reads.
    pub fn read_fraction(self) -> f64 {
        match self {
            Workload::Write => 0.0,
            Workload::Read | Workload::C => 1.0,
            Workload::A => 0.5,
            Workload::B => 0.95,
        }
    }

    /// The next operation.
    pub fn next_op(self, rng: &mut impl Rng) -> OpKind {
        match self {
            Workload::Write => OpKind::Write,
            Workload::Read | Workload::C => OpKind::Read,
            Workload::A | Workload::B => {
                if rng.random::<f64>() < self.read_fraction() {
                    OpKind::Read
                } else {
                    OpKind::Update
                }
            }
        }
    }
}

/// What one operation does, and the row it is reported under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// A GET of a key (a miss is a success).
    Read,
    /// YCSB A/B "update": a GET then a PUT with the read's context (or a blind PUT with
    /// `--context-updates false`); its latency covers both requests.
    Update,
    /// A PUT (`write` workload) carrying the context of the worker's previous write of the key.
    Write,
    /// The GET a `write` worker does before its first write of a key, to learn the key's
    /// context (skipped after `--preload`). Reported apart, not counted in the ops.
    ContextRead,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 4] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Write,
        OpKind::ContextRead,
    ];

    /// Position in [`OpKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            OpKind::Read => 0,
            OpKind::Update => 1,
            OpKind::Write => 2,
            OpKind::ContextRead => 3,
        }
    }

    /// The name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Write => "write",
            OpKind::ContextRead => "context_read",
        }
    }

    /// Whether the kind counts as an operation in the totals (context reads are overhead).
    pub fn is_op(self) -> bool {
        self != OpKind::ContextRead
    }
}

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// A few keys are hot (Zipfian, θ = 0.99, hot keys scattered over the key space).
    Zipfian,
    /// Each worker takes its keys once, in order (in the write workload, its stripe: every key
    /// is written exactly once), and stops when it has taken them all.
    Sequential,
}

impl KeyDistribution {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyDistribution::Uniform => "uniform",
            KeyDistribution::Zipfian => "zipfian",
            KeyDistribution::Sequential => "sequential",
        }
    }
}

/// Draws key indexes in `0..count`.
#[derive(Debug)]
pub struct KeyChooser {
    count: u64,
    zipf: Option<Zipf<f64>>,
    /// For [`KeyDistribution::Sequential`]: the next index handed out.
    sequence: Option<std::sync::atomic::AtomicU64>,
}

impl KeyChooser {
    /// A chooser over `count` keys (at least 1).
    pub fn new(distribution: KeyDistribution, count: u64) -> Result<KeyChooser, String> {
        if count == 0 {
            return Err("the key space must hold at least one key".into());
        }
        let zipf = match distribution {
            KeyDistribution::Uniform | KeyDistribution::Sequential => None,
            KeyDistribution::Zipfian => Some(
                Zipf::new(count as f64, ZIPFIAN_THETA)
                    .map_err(|error| format!("zipfian over {count} keys: {error}"))?,
            ),
        };
        let sequence = (distribution == KeyDistribution::Sequential)
            .then(|| std::sync::atomic::AtomicU64::new(0));
        Ok(KeyChooser {
            count,
            zipf,
            sequence,
        })
    }

    /// Whether a sequential chooser has handed out every key (never for the others).
    pub fn exhausted(&self) -> bool {
        self.sequence
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed) >= self.count)
    }

    /// The next key index (a sequential chooser starts over after the last).
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        if let Some(s) = &self.sequence {
            return s.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.count;
        }
        match &self.zipf {
            None => rng.random_range(0..self.count),
            Some(zipf) => {
                // Zipf samples integral values in [1, count]; rank 0 is the hottest.
                let rank = (zipf.sample(rng) as u64).clamp(1, self.count) - 1;
                scramble(rank, self.count)
            }
        }
    }
}

/// A bijection of `0..count` that scatters neighbouring ranks (see the module docs).
pub fn scramble(rank: u64, count: u64) -> u64 {
    let mixed = u128::from(rank) * u128::from(SCRAMBLE_PRIME) + u128::from(SCRAMBLE_OFFSET);
    (mixed % u128::from(count)) as u64
}

/// The keys worker `worker` of `workers` owns: `worker, worker + workers, worker + 2 * workers,
/// ...` below `keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stripe {
    worker: u64,
    workers: u64,
    keys: u64,
}

impl Stripe {
    /// Worker `worker`'s stripe of `keys` keys shared by `workers` workers (`worker < workers`).
    pub fn new(worker: u64, workers: u64, keys: u64) -> Stripe {
        debug_assert!(worker < workers);
        Stripe {
            worker,
            workers,
            keys,
        }
    }

    /// Number of keys in the stripe.
    pub fn len(&self) -> u64 {
        if self.worker >= self.keys {
            0
        } else {
            (self.keys - self.worker).div_ceil(self.workers)
        }
    }

    /// The global key index of the stripe's `index`-th key (`index < len()`).
    pub fn key(&self, index: u64) -> u64 {
        index * self.workers + self.worker
    }
}

/// Writes the name of key `index` into `out` (cleared first): `key` and ten digits, so that
/// names sort like indexes up to ten billion keys.
pub fn key_name(out: &mut String, index: u64) {
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(out, "key{index:010}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng as _;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    #[test]
    fn mixes_match_ycsb() {
        let mut rng = rng();
        let draws = 100_000;
        for (workload, expected_reads) in [
            (Workload::A, 0.5),
            (Workload::B, 0.95),
            (Workload::C, 1.0),
            (Workload::Read, 1.0),
            (Workload::Write, 0.0),
        ] {
            let reads = (0..draws)
                .filter(|_| workload.next_op(&mut rng) == OpKind::Read)
                .count() as f64
                / draws as f64;
            assert!(
                (reads - expected_reads).abs() < 0.01,
                "{workload:?}: {reads} reads"
            );
        }
        assert!((0..1000).all(|_| Workload::Write.next_op(&mut rng) == OpKind::Write));
        assert!((0..1000).all(|_| Workload::C.next_op(&mut rng) == OpKind::Read));
        assert!((0..1000).any(|_| Workload::B.next_op(&mut rng) == OpKind::Update));
    }

    #[test]
    fn op_kinds_index_their_array() {
        for (position, kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), position);
        }
    }

    #[test]
    fn uniform_covers_the_key_space() {
        let chooser = KeyChooser::new(KeyDistribution::Uniform, 100).expect("valid");
        let mut rng = rng();
        let mut seen = [0u32; 100];
        for _ in 0..100_000 {
            seen[chooser.next(&mut rng) as usize] += 1;
        }
        assert!(
            seen.iter().all(|&count| (800..1200).contains(&count)),
            "{seen:?}"
        );
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let keys = 10_000;
        let chooser = KeyChooser::new(KeyDistribution::Zipfian, keys).expect("valid");
        let mut rng = rng();
        let mut seen = vec![0u32; keys as usize];
        let draws = 200_000;
        for _ in 0..draws {
            let key = chooser.next(&mut rng);
            assert!(key < keys);
            seen[key as usize] += 1;
        }
        seen.sort_unstable_by(|a, b| b.cmp(a));
        // With θ = 0.99 over 10k keys the hottest key takes about 1/H ≈ 10% of the draws and the
        // top 1% of keys about half of them; uniform would give 0.01% and 1%.
        let hottest = f64::from(seen[0]) / f64::from(draws);
        assert!(
            (0.07..0.14).contains(&hottest),
            "hottest key share {hottest}"
        );
        let top_percent: u32 = seen[..100].iter().sum();
        assert!(f64::from(top_percent) / f64::from(draws) > 0.4);
    }

    #[test]
    fn zipfian_hot_keys_are_scattered() {
        let keys = 1_000_000;
        let hottest: Vec<u64> = (0..10).map(|rank| scramble(rank, keys)).collect();
        // Neighbouring ranks land far apart, not on keys 0..10.
        assert!(hottest.iter().all(|&key| key < keys));
        assert!(hottest
            .windows(2)
            .all(|pair| pair[0].abs_diff(pair[1]) > 1000));
    }

    #[test]
    fn scramble_is_a_bijection() {
        for count in [1u64, 2, 7, 10, 1000, 4096] {
            let mut hit = vec![false; count as usize];
            for rank in 0..count {
                let key = scramble(rank, count) as usize;
                assert!(!hit[key], "count {count}: {key} hit twice");
                hit[key] = true;
            }
        }
    }

    #[test]
    fn empty_key_space_is_refused() {
        let seq = KeyChooser::new(KeyDistribution::Sequential, 3).expect("valid");
        let taken: Vec<u64> = (0..3).map(|_| seq.next(&mut rng())).collect();
        assert_eq!((taken, seq.exhausted()), (vec![0, 1, 2], true));
        assert!(!KeyChooser::new(KeyDistribution::Sequential, 3)
            .expect("valid")
            .exhausted());
        assert!(KeyChooser::new(KeyDistribution::Uniform, 0).is_err());
        assert!(KeyChooser::new(KeyDistribution::Zipfian, 0).is_err());
        let one = KeyChooser::new(KeyDistribution::Zipfian, 1).expect("valid");
        assert_eq!(one.next(&mut rng()), 0);
    }

    #[test]
    fn stripes_partition_the_keys() {
        for (keys, workers) in [(10u64, 3u64), (9, 3), (2, 5), (100_000, 50), (1, 1)] {
            let mut owner = vec![None; keys as usize];
            for worker in 0..workers {
                let stripe = Stripe::new(worker, workers, keys);
                for index in 0..stripe.len() {
                    let key = stripe.key(index);
                    assert!(key < keys);
                    assert_eq!(owner[key as usize], None, "key {key} owned twice");
                    owner[key as usize] = Some(worker);
                }
            }
            assert!(
                owner.iter().all(Option::is_some),
                "{keys} keys, {workers} workers"
            );
        }
    }

    #[test]
    fn key_names_sort_like_indexes() {
        let mut name = String::from("junk");
        key_name(&mut name, 42);
        assert_eq!(name, "key0000000042");
        let mut other = String::new();
        key_name(&mut other, 1000);
        assert!(name < other);
    }
}
