//! Quorum sizes: how requests name them (`one`, `quorum`, `all`, or a number) and how a name
//! becomes a count for a given replication factor `n` (Dynamo §4.5: R + W > N gives
//! read-your-writes; R = W = 1 gives the lowest latency).

use std::fmt;
use std::str::FromStr;

/// A requested quorum: how many replicas must answer a read (`r`) or acknowledge a write
/// (`w`). Written on the wire (and on the command line) as `one`, `quorum`, `all`, or a number
/// `1..=255`; a number above the key's replica count `n` is refused when resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quorum {
    /// One replica.
    One,
    /// A majority of the `n` replicas: `n / 2 + 1`.
    Quorum,
    /// All `n` replicas.
    All,
    /// Exactly this many replicas (1 ..= n).
    N(u8),
    /// A majority of the replicas in the coordinator's region (with replicas per region; else
    /// as [`Quorum::Quorum`]).
    LocalQuorum,
    /// A majority of the replicas in every region (with replicas per region; else as
    /// [`Quorum::Quorum`]).
    EachQuorum,
}

/// Why a text is not a [`Quorum`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quorum {0:?}: expected one, quorum, all, local_quorum, each_quorum or a number from 1 \
     to 255"
)]
pub struct ParseQuorumError(String);

/// A quorum larger than the replication factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be between 1 and n ({n}), got {asked}")]
pub struct QuorumTooLarge {
    /// The replication factor.
    pub n: u8,
    /// What was asked.
    pub asked: u8,
}

impl Quorum {
    /// The replica count for replication factor `n`; a number above `n` is an error. The
    /// regional levels resolve as [`Quorum::Quorum`] over the `n` they are given (the
    /// coordinator gives each region's replica count).
    pub fn resolve(self, n: u8) -> Result<u8, QuorumTooLarge> {
        match self {
            Quorum::One => Ok(1),
            Quorum::Quorum | Quorum::LocalQuorum | Quorum::EachQuorum => Ok(n / 2 + 1),
            Quorum::All => Ok(n),
            Quorum::N(k) if k >= 1 && k <= n => Ok(k),
            Quorum::N(k) => Err(QuorumTooLarge { n, asked: k }),
        }
    }
}

impl FromStr for Quorum {
    type Err = ParseQuorumError;

    /// `one`, `quorum`, `all` (any case, surrounding blanks ignored) or a number `1..=255`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("one") {
            Ok(Quorum::One)
        } else if trimmed.eq_ignore_ascii_case("quorum") {
            Ok(Quorum::Quorum)
        } else if trimmed.eq_ignore_ascii_case("all") {
            Ok(Quorum::All)
        } else if trimmed.eq_ignore_ascii_case("local_quorum") {
            Ok(Quorum::LocalQuorum)
        } else if trimmed.eq_ignore_ascii_case("each_quorum") {
            Ok(Quorum::EachQuorum)
        } else {
            match trimmed.parse::<u8>() {
                Ok(count) if count >= 1 => Ok(Quorum::N(count)),
                _ => Err(ParseQuorumError(text.to_string())),
            }
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::N(k) => write!(f, "{k}"),
            Quorum::LocalQuorum => f.write_str("local_quorum"),
            Quorum::EachQuorum => f.write_str("each_quorum"),
        }
    }
}

/// Where one request's quorum stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided: more replies may come.
    Pending,
    /// `required` replicas succeeded: answer the client.
    Reached,
    /// Too many replicas failed for `required` ever to succeed: answer with an error.
    Impossible,
}

/// The bookkeeping of one request's quorum: `required` successes out of `asked` replicas.
/// Pure; the coordinator feeds it replies as they arrive.
#[derive(Clone, Debug)]
pub struct QuorumTracker {
    required: u8,
    outstanding: u8,
    succeeded: u8,
    errors: Vec<String>,
}

impl QuorumTracker {
    /// A request that asked `asked` replicas and needs `required` successes.
    pub fn new(required: u8, asked: u8) -> Self {
        QuorumTracker {
            required,
            outstanding: asked,
            succeeded: 0,
            errors: Vec::new(),
        }
    }

    /// Records a success.
    pub fn success(&mut self) -> Outcome {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.succeeded = self.succeeded.saturating_add(1);
        self.outcome()
    }

    /// Records a failure (`why` is kept for the error message).
    pub fn failure(&mut self, why: String) -> Outcome {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.errors.push(why);
        self.outcome()
    }

    /// The current outcome.
    pub fn outcome(&self) -> Outcome {
        if self.succeeded >= self.required {
            Outcome::Reached
        } else if u16::from(self.succeeded) + u16::from(self.outstanding) < u16::from(self.required)
        {
            Outcome::Impossible
        } else {
            Outcome::Pending
        }
    }

    /// Successes so far.
    pub fn succeeded(&self) -> u8 {
        self.succeeded
    }

    /// Successes needed.
    pub fn required(&self) -> u8 {
        self.required
    }

    /// Failure reasons so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

/// The quorum of a write while a partition's holders change: it must reach `required` (capped
/// at each set's size) among the *target* replicas and, separately, among the *data holders*
/// (the nodes reads count), as Garage requires a quorum in every active layout version. A reply
/// counts for each set its node belongs to. When the two sets are equal (no transition) this is
/// exactly one [`QuorumTracker`].
#[derive(Clone, Debug)]
pub struct QuorumSets {
    target: QuorumTracker,
    data: QuorumTracker,
}

impl QuorumSets {
    /// A write that needs `required` successes among `target` replicas and among `data`
    /// holders (each capped at the set's size, at least 1).
    pub fn new(required: u8, target: usize, data: usize) -> Self {
        let cap = |size: usize| {
            let size = size.min(usize::from(u8::MAX)) as u8;
            QuorumTracker::new(required.min(size).max(1), size)
        };
        QuorumSets {
            target: cap(target),
            data: cap(data),
        }
    }

    /// Records the reply of a node that is in the target set and/or the data set.
    pub fn record(&mut self, in_target: bool, in_data: bool, reply: Result<(), String>) -> Outcome {
        for (member, tracker) in [(in_target, &mut self.target), (in_data, &mut self.data)] {
            if member {
                match &reply {
                    Ok(()) => tracker.success(),
                    Err(why) => tracker.failure(why.clone()),
                };
            }
        }
        self.outcome()
    }

    /// Reached when both sets are; impossible as soon as either is.
    pub fn outcome(&self) -> Outcome {
        match (self.target.outcome(), self.data.outcome()) {
            (Outcome::Impossible, _) | (_, Outcome::Impossible) => Outcome::Impossible,
            (Outcome::Reached, Outcome::Reached) => Outcome::Reached,
            _ => Outcome::Pending,
        }
    }

    /// The set that decides the error message: the one that failed, else the data holders.
    pub fn deciding(&self) -> &QuorumTracker {
        if self.target.outcome() == Outcome::Impossible {
            &self.target
        } else {
            &self.data
        }
    }
}

/// A write's quorum when replicas span regions: one [`QuorumSets`] per scope, where a scope is
/// every replica (`None`) or the replicas of one region. `local_quorum` is one set for the
/// coordinator's region, `each_quorum` one per region. A reply counts in every set of its
/// node's region (and in the all-replicas set). Reached when every set is, impossible as soon
/// as one is.
#[derive(Clone, Debug)]
pub struct ScopedQuorum<R> {
    sets: Vec<(Option<R>, QuorumSets)>,
}

impl<R: PartialEq> ScopedQuorum<R> {
    /// The sets, each with its scope. At least one.
    pub fn new(sets: Vec<(Option<R>, QuorumSets)>) -> Self {
        ScopedQuorum { sets }
    }

    /// Records the reply of a node of `region` that is in the target set and/or the data set.
    pub fn record(
        &mut self,
        region: Option<&R>,
        in_target: bool,
        in_data: bool,
        reply: Result<(), String>,
    ) -> Outcome {
        for (scope, set) in &mut self.sets {
            if scope.is_none() || scope.as_ref() == region {
                set.record(in_target, in_data, reply.clone());
            }
        }
        self.outcome()
    }

    /// Reached when every set is; impossible as soon as one is.
    pub fn outcome(&self) -> Outcome {
        let mut all = Outcome::Reached;
        for (_, set) in &self.sets {
            match set.outcome() {
                Outcome::Impossible => return Outcome::Impossible,
                Outcome::Pending => all = Outcome::Pending,
                Outcome::Reached => {}
            }
        }
        all
    }

    /// The tracker that decides the error message: of a set that failed, else of one still
    /// pending; `None` only without sets.
    pub fn deciding(&self) -> Option<&QuorumTracker> {
        self.sets
            .iter()
            .find(|(_, s)| s.outcome() == Outcome::Impossible)
            .or_else(|| {
                self.sets
                    .iter()
                    .find(|(_, s)| s.outcome() == Outcome::Pending)
            })
            .or(self.sets.first())
            .map(|(_, s)| s.deciding())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// With the same set twice, the sets decide exactly as one tracker does, reply by reply.
        #[test]
        fn equal_sets_decide_as_one_tracker(
            required in 1u8..6,
            replies in proptest::collection::vec(any::<bool>(), 1..6),
        ) {
            let n = replies.len();
            let mut one = QuorumTracker::new(required.min(n as u8), n as u8);
            let mut sets = QuorumSets::new(required, n, n);
            prop_assert_eq!(one.outcome(), sets.outcome());
            for ok in replies {
                let expected = if ok { one.success() } else { one.failure("x".into()) };
                let reply = if ok { Ok(()) } else { Err("x".to_string()) };
                prop_assert_eq!(sets.record(true, true, reply), expected);
            }
        }
    }

    #[test]
    fn a_write_needs_a_quorum_among_the_target_and_among_the_data_holders() {
        // Target {a, b, new}, data holders {a, b, old}: w = 2.
        let mut sets = QuorumSets::new(2, 3, 3);
        assert_eq!(sets.record(true, false, Ok(())), Outcome::Pending); // new
        assert_eq!(sets.record(false, true, Ok(())), Outcome::Pending); // old
        assert_eq!(sets.record(true, true, Ok(())), Outcome::Reached); // a
                                                                       // Only the target reached: not enough, reads count the data holders.
        let mut sets = QuorumSets::new(2, 3, 3);
        sets.record(true, false, Ok(()));
        sets.record(true, true, Ok(()));
        assert_eq!(sets.outcome(), Outcome::Pending);
        sets.record(false, true, Err("old down".into()));
        assert_eq!(
            sets.record(true, true, Err("b down".into())),
            Outcome::Impossible
        );
        assert_eq!(sets.deciding().errors().len(), 2);
    }

    proptest! {
        /// One all-replicas scope decides exactly as its sets alone, whatever the regions.
        #[test]
        fn one_unscoped_set_is_the_sets(
            required in 1u8..6,
            replies in proptest::collection::vec((0u8..3, any::<bool>()), 1..6),
        ) {
            let n = replies.len();
            let mut sets = QuorumSets::new(required, n, n);
            let mut scoped = ScopedQuorum::new(vec![(None, QuorumSets::new(required, n, n))]);
            for (region, ok) in replies {
                let reply = if ok { Ok(()) } else { Err("x".to_string()) };
                prop_assert_eq!(
                    scoped.record(Some(&region), true, true, reply.clone()),
                    sets.record(true, true, reply)
                );
            }
        }
    }

    #[test]
    fn a_local_quorum_counts_its_region_and_each_quorum_every_region() {
        // Regions 1, 2 and 3 with two replicas each; local quorum in region 1 needs both of it.
        let local = || ScopedQuorum::new(vec![(Some(1), QuorumSets::new(2, 2, 2))]);
        let mut q = local();
        assert_eq!(q.record(Some(&2), true, true, Ok(())), Outcome::Pending);
        assert_eq!(q.record(Some(&3), true, true, Ok(())), Outcome::Pending);
        assert_eq!(q.record(Some(&1), true, true, Ok(())), Outcome::Pending);
        assert_eq!(q.record(Some(&1), true, true, Ok(())), Outcome::Reached);
        // Region 3 cut off: each_quorum is impossible once both of its replicas fail.
        let mut each = ScopedQuorum::new(
            (1..=3)
                .map(|r| (Some(r), QuorumSets::new(2, 2, 2)))
                .collect(),
        );
        for r in [1, 1, 2, 2] {
            assert_eq!(each.record(Some(&r), true, true, Ok(())), Outcome::Pending);
        }
        assert_eq!(
            each.record(Some(&3), true, true, Err("r3 down".into())),
            Outcome::Impossible
        );
        assert_eq!(each.deciding().expect("a set").errors(), ["r3 down"]);
    }

    #[test]
    fn tracker_decides_as_soon_as_it_can() {
        let mut t = QuorumTracker::new(2, 3);
        assert_eq!(t.outcome(), Outcome::Pending);
        assert_eq!(t.failure("n2 down".into()), Outcome::Pending);
        assert_eq!(t.success(), Outcome::Pending);
        assert_eq!(t.success(), Outcome::Reached);
        let mut t = QuorumTracker::new(2, 3);
        t.failure("a".into());
        assert_eq!(t.failure("b".into()), Outcome::Impossible);
        assert_eq!(t.errors().len(), 2);
        // Asking fewer replicas than required is impossible from the start.
        assert_eq!(QuorumTracker::new(3, 2).outcome(), Outcome::Impossible);
    }

    #[test]
    fn parse_and_resolve() {
        assert_eq!("quorum".parse::<Quorum>().map(|q| q.resolve(3)), Ok(Ok(2)));
        assert_eq!("all".parse::<Quorum>().map(|q| q.resolve(3)), Ok(Ok(3)));
        assert_eq!("2".parse::<Quorum>().map(|q| q.resolve(3)), Ok(Ok(2)));
        assert!("4".parse::<Quorum>().expect("parses").resolve(3).is_err());
        assert!("0".parse::<Quorum>().is_err());
        assert_eq!(" ONE ".parse::<Quorum>(), Ok(Quorum::One));
        assert_eq!(
            Quorum::N(4).resolve(3).expect_err("above n").to_string(),
            "must be between 1 and n (3), got 4"
        );
        assert!("most".parse::<Quorum>().is_err());
        for q in [Quorum::LocalQuorum, Quorum::EachQuorum] {
            assert_eq!(q.to_string().parse::<Quorum>(), Ok(q));
            assert_eq!(q.resolve(2), Ok(2));
        }
        assert_eq!(Quorum::N(2).to_string().parse::<Quorum>(), Ok(Quorum::N(2)));
    }
}
