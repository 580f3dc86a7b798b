//! The pure part of the load generator: which operation comes next and which key it touches.
//!
//! Nothing here does I/O or reads a clock; every choice comes from the caller's seeded RNG, so a
//! worker's sequence of operations and keys is a function of `--seed` and its worker index.
//!
//! - [`Workload`]: the operation mix (YCSB A/B/C, pure reads, pure writes, carts, sessions).
//! - [`KeyChooser`]: uniform or Zipfian key indexes. Zipfian ranks (θ = 0.99, as YCSB) are
//!   *scrambled* by a bijection of `0..keys`, so the hot keys are spread over the key space
//!   rather than being keys 0, 1, 2... (YCSB's "scrambled Zipfian"); being a bijection, the
//!   hottest rank still maps to exactly one key.
//! - [`Stripe`]: the keys one worker owns in the `write` workload (key index ≡ worker index
//!   modulo the worker count), so that no two workers ever write the same key concurrently.
//! - [`key_name`]: key index → key text (`key0000000042`); [`item_name`] for cart items.
//! - [`Sessions`]: one worker's sessions in the `session` workload: the ones in use, and the
//!   ones abandoned, each due for an expiry check once its TTL (plus a grace) has passed since
//!   its last use. Time comes in as an argument.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_distr::{Distribution as _, Zipf};

/// Skew of the Zipfian distribution (YCSB's `zipfian` constant).
pub const ZIPFIAN_THETA: f64 = 0.99;

/// A prime larger than any key count, used to scramble Zipfian ranks: multiplying by a number
/// coprime with `keys` permutes `0..keys`. (2^61 - 1, a Mersenne prime.)
const SCRAMBLE_PRIME: u64 = (1 << 61) - 1;

/// Offset added by the scramble, so that the hottest key is not key 0.
const SCRAMBLE_OFFSET: u64 = 0x9E37_79B9_7F4A_7C15;

/// The `cart` workload's mix: a Black-Friday shop's carts.
pub const CART_MIX: [(OpKind, f64); 4] = [
    (OpKind::CartAdd, 0.50),
    (OpKind::CartView, 0.35),
    (OpKind::CartRemove, 0.10),
    (OpKind::CartMerge, 0.05),
];

/// The `session` workload's mix.
pub const SESSION_MIX: [(OpKind, f64); 3] = [
    (OpKind::SessionCreate, 0.10),
    (OpKind::Read, 0.80),
    (OpKind::SessionExpire, 0.10),
];

/// Time past a session's TTL after which the `session` workload expects it gone: the server's
/// expiry runs on its own clock from its own time of the write or slide, a little after ours.
pub const SESSION_EXPIRY_GRACE: Duration = Duration::from_secs(1);

/// Most abandoned sessions one worker keeps for later expiry checks (the oldest go first).
pub const ABANDONED_SESSIONS_MAX: usize = 100_000;

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
    /// Shopping carts (a cart bucket): 50% add item, 35% view cart, 10% remove an item seen by
    /// a view, 5% two concurrent adds to one cart (two devices).
    Cart,
    /// Sessions (a bucket with a sliding TTL): 10% create, 80% read (each read slides the
    /// expiry), 10% expiry checks of sessions no longer used.
    Session,
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
            Workload::Cart => "cart",
            Workload::Session => "session",
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
            Workload::Cart => {
                "carts: 50% add, 35% view, 10% remove (a view's context), 5% two-device adds"
            }
            Workload::Session => {
                "sessions: 10% create (bucket TTL), 80% read (slides it), 10% expiry checks"
            }
        }
    }

    /// Whether the workload writes plain values (the YCSB-style ones), as opposed to a data
    /// type or sessions, which set their bucket's properties first.
    pub fn is_plain(self) -> bool {
        !matches!(self, Workload::Cart | Workload::Session)
    }

    /// The bucket used when `--bucket` is not given: each of the workloads that set bucket
    /// properties has its own, so that they never change the plain workloads' bucket.
    pub fn default_bucket(self) -> &'static str {
        match self {
            Workload::Cart => "bench-cart",
            Workload::Session => "bench-session",
            _ => "bench",
        }
    }

    /// The key distribution used when `--distribution` is not given: zipfian for carts (a
    /// few carts are very busy), uniform otherwise.
    pub fn default_distribution(self) -> KeyDistribution {
        match self {
            Workload::Cart => KeyDistribution::Zipfian,
            _ => KeyDistribution::Uniform,
        }
    }

    /// The next operation.
    pub fn next_op(self, rng: &mut impl Rng) -> OpKind {
        match self {
            Workload::Write => OpKind::Write,
            Workload::Read | Workload::C => OpKind::Read,
            Workload::A => pick(rng, &[(OpKind::Read, 0.5), (OpKind::Update, 0.5)]),
            Workload::B => pick(rng, &[(OpKind::Read, 0.95), (OpKind::Update, 0.05)]),
            Workload::Cart => pick(rng, &CART_MIX),
            Workload::Session => pick(rng, &SESSION_MIX),
        }
    }
}

/// Draws from a mix whose fractions add up to 1 (the last kind takes any rounding rest).
fn pick(rng: &mut impl Rng, mix: &[(OpKind, f64)]) -> OpKind {
    let mut draw = rng.random::<f64>();
    for &(kind, fraction) in mix {
        if draw < fraction {
            return kind;
        }
        draw -= fraction;
    }
    mix.last().map_or(OpKind::Read, |&(kind, _)| kind)
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
    /// Cart: add 1 to 3 of an item (one `POST /v1/dt`).
    CartAdd,
    /// Cart: read a cart (one `GET /v1/dt`); the worker keeps what it saw for a remove.
    CartView,
    /// Cart: remove an item the worker's last view saw, with that view's context.
    CartRemove,
    /// Cart: two concurrent adds to one cart from two tasks (two devices); latency until both
    /// are acknowledged.
    CartMerge,
    /// Session: a blind PUT of a new session (the bucket's TTL applies).
    SessionCreate,
    /// Session: a GET of a session abandoned for its TTL and a grace: expected to find nothing.
    SessionExpire,
}

impl OpKind {
    /// How many kinds there are (the length of per-kind arrays).
    pub const COUNT: usize = 10;

    /// Every kind, in report order.
    pub const ALL: [OpKind; OpKind::COUNT] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Write,
        OpKind::ContextRead,
        OpKind::CartAdd,
        OpKind::CartView,
        OpKind::CartRemove,
        OpKind::CartMerge,
        OpKind::SessionCreate,
        OpKind::SessionExpire,
    ];

    /// Position in [`OpKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            OpKind::Read => 0,
            OpKind::Update => 1,
            OpKind::Write => 2,
            OpKind::ContextRead => 3,
            OpKind::CartAdd => 4,
            OpKind::CartView => 5,
            OpKind::CartRemove => 6,
            OpKind::CartMerge => 7,
            OpKind::SessionCreate => 8,
            OpKind::SessionExpire => 9,
        }
    }

    /// The name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Write => "write",
            OpKind::ContextRead => "context_read",
            OpKind::CartAdd => "add",
            OpKind::CartView => "view",
            OpKind::CartRemove => "remove",
            OpKind::CartMerge => "merge",
            OpKind::SessionCreate => "create",
            OpKind::SessionExpire => "expire",
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

/// The name of cart item `index` of the catalogue: `sku-` and six digits.
pub fn item_name(index: u64) -> String {
    format!("sku-{index:06}")
}

/// One session of the `session` workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its number, unique within the worker's run.
    pub id: u64,
    /// When the worker last created or read it (or, once abandoned, when it was abandoned:
    /// never earlier than its last use).
    pub last_used: Instant,
}

/// One worker's sessions (see the module docs): at most `active_max` in use, the others
/// abandoned and checked for expiry once `ttl + SESSION_EXPIRY_GRACE` has passed.
#[derive(Debug)]
pub struct Sessions {
    prefix: String,
    active: Vec<Session>,
    active_max: usize,
    abandoned: VecDeque<Session>,
    next_id: u64,
    expiry_wait: Duration,
}

impl Sessions {
    /// Sessions named `session-{prefix}-{id}`, at most `active_max` (at least 1) in use, whose
    /// bucket's TTL is `ttl`.
    pub fn new(prefix: String, active_max: usize, ttl: Duration) -> Sessions {
        Sessions {
            prefix,
            active: Vec::new(),
            active_max: active_max.max(1),
            abandoned: VecDeque::new(),
            next_id: 0,
            expiry_wait: ttl + SESSION_EXPIRY_GRACE,
        }
    }

    /// Writes the key of session `id` into `out` (cleared first).
    pub fn key(&self, id: u64, out: &mut String) {
        out.clear();
        let _ = write!(out, "session-{}-{id:010}", self.prefix);
    }

    /// A new session's id (not in use until [`Sessions::created`]).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Session `id` was written at `now`: it is in use. If that makes one too many, a random
    /// one of the others is abandoned (users leave at random).
    pub fn created(&mut self, id: u64, now: Instant, rng: &mut impl Rng) {
        if self.active.len() >= self.active_max {
            let leaving = self
                .active
                .swap_remove(rng.random_range(0..self.active.len()));
            self.abandon(leaving, now);
        }
        self.active.push(Session { id, last_used: now });
    }

    /// A session in use, picked at random: its position and id (`None` when none is).
    pub fn pick(&self, rng: &mut impl Rng) -> Option<(usize, u64)> {
        if self.active.is_empty() {
            return None;
        }
        let position = rng.random_range(0..self.active.len());
        Some((position, self.active[position].id))
    }

    /// The session at `position` (from [`Sessions::pick`]) was read at `now`: found (its expiry
    /// slid) or not (it expired while in use: it is gone).
    pub fn read(&mut self, position: usize, found: bool, now: Instant) {
        if position >= self.active.len() {
            return;
        }
        if found {
            self.active[position].last_used = now;
        } else {
            self.active.swap_remove(position);
        }
    }

    /// The abandoned session due for an expiry check at `now`, if any (removed from the queue).
    pub fn due_for_expiry(&mut self, now: Instant) -> Option<u64> {
        let front = self.abandoned.front()?;
        if now.saturating_duration_since(front.last_used) < self.expiry_wait {
            return None;
        }
        self.abandoned.pop_front().map(|session| session.id)
    }

    /// Sessions in use.
    #[cfg(test)]
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    fn abandon(&mut self, session: Session, now: Instant) {
        if self.abandoned.len() >= ABANDONED_SESSIONS_MAX {
            self.abandoned.pop_front();
        }
        // The queue is in order of abandonment: stamping each with the time it was abandoned
        // (not earlier than its last use) keeps it sorted, so only its front can be due.
        self.abandoned.push_back(Session {
            id: session.id,
            last_used: now,
        });
    }
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
    fn cart_and_session_mixes() {
        let mut rng = rng();
        let draws = 100_000;
        for (workload, mix) in [
            (Workload::Cart, &CART_MIX[..]),
            (Workload::Session, &SESSION_MIX[..]),
        ] {
            let total: f64 = mix.iter().map(|(_, fraction)| fraction).sum();
            assert!(
                (total - 1.0).abs() < 1e-9,
                "{workload:?} adds up to {total}"
            );
            let mut counts = [0u32; OpKind::COUNT];
            for _ in 0..draws {
                counts[workload.next_op(&mut rng).index()] += 1;
            }
            for &(kind, fraction) in mix {
                let share = f64::from(counts[kind.index()]) / f64::from(draws);
                assert!((share - fraction).abs() < 0.01, "{kind:?}: {share}");
            }
        }
        assert_eq!(
            Workload::Cart.default_distribution(),
            KeyDistribution::Zipfian
        );
        assert_eq!(Workload::A.default_distribution(), KeyDistribution::Uniform);
        assert_eq!(Workload::Session.default_bucket(), "bench-session");
        assert!(!Workload::Cart.is_plain() && Workload::Write.is_plain());
    }

    #[test]
    fn sessions_are_abandoned_then_due_after_their_ttl() {
        let mut rng = rng();
        let start = Instant::now();
        let ttl = Duration::from_secs(5);
        let mut sessions = Sessions::new("s1".into(), 2, ttl);
        let mut key = String::new();
        sessions.key(7, &mut key);
        assert_eq!(key, "session-s1-0000000007");
        assert_eq!(sessions.pick(&mut rng), None);
        for offset in 0..3 {
            let id = sessions.next_id();
            sessions.created(id, start + Duration::from_secs(offset), &mut rng);
        }
        // Three created, two in use: the third creation abandoned one, at t = 2 s.
        assert_eq!(sessions.active_len(), 2);
        let wait = ttl + SESSION_EXPIRY_GRACE;
        let abandoned_at = start + Duration::from_secs(2);
        assert_eq!(sessions.due_for_expiry(abandoned_at + wait / 2), None);
        let due = sessions
            .due_for_expiry(abandoned_at + wait)
            .expect("due after ttl + grace");
        assert!(due < 2, "one of the first two was abandoned");
        assert_eq!(
            sessions.due_for_expiry(start + Duration::from_secs(60)),
            None
        );

        // A read that misses drops the session; one that finds it keeps it.
        let (position, _) = sessions.pick(&mut rng).expect("in use");
        sessions.read(position, false, start);
        assert_eq!(sessions.active_len(), 1);
        let (position, id) = sessions.pick(&mut rng).expect("in use");
        sessions.read(position, true, start + Duration::from_secs(9));
        assert_eq!(sessions.pick(&mut rng), Some((0, id)));
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
