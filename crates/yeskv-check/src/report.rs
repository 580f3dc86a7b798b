//! The checkers' verdict: [`Options`] in, [`Violation`]s and a [`Report`] out.
//!
//! Everything here is plain data that serializes to JSON, so the simulator can print it with a
//! failing seed and the chaos runner can write it as its report file. Counts are exact; the
//! lists of findings are capped ([`Options::violations_max`]) so a badly broken run still
//! produces a report of bounded size.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The default bound on how long replicas may take to agree after healing.
pub const CONVERGENCE_BOUND_MS_DEFAULT: u64 = 60_000;

/// The default bound on how far apart two nodes' clocks may be, for expiry
/// ([`Options::skew_bound_ms`]): the simulator skews one node's clock by up to ±10 s, so two
/// nodes may be 20 s apart (one +10 s coordinating the write, one −10 s coordinating the read),
/// plus 5 s of margin.
pub const SKEW_BOUND_MS_DEFAULT: u64 = 25_000;

/// The default cap on the findings listed in a report (counts are never capped).
pub const VIOLATIONS_MAX_DEFAULT: usize = 1_000;

/// How to judge. Deserializes from a partial object (missing fields take their defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Whether convergence findings are violations. When false they are still computed and
    /// listed in [`Report::warnings`] (for runs without repair — `yeskv-sim --no-repair` —
    /// where replicas that missed a write during a partition may legitimately stay behind).
    pub check_convergence: bool,
    /// The longest time, after `healed_at_ms`, replicas may take to agree on every digest.
    pub convergence_bound_ms: u64,
    /// A hard maximum on siblings in any read, on top of the bound by concurrent writers
    /// (`None`: only that bound).
    pub siblings_max: Option<usize>,
    /// At most this many findings are listed in [`Report::violations`] (and as many in
    /// [`Report::warnings`]); the rest are only counted.
    pub violations_max: usize,
    /// The most two nodes' clocks may differ during the run, ms: a TTL'd value's expiry is
    /// stamped by its write's coordinator clock and judged by the reading coordinator's, so a
    /// value may stay visible this long past `ttl` after its write completed (the expiry rule,
    /// [`crate::checkers::expired_values`]), and may be gone this long before it.
    pub skew_bound_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            check_convergence: true,
            convergence_bound_ms: CONVERGENCE_BOUND_MS_DEFAULT,
            siblings_max: None,
            violations_max: VIOLATIONS_MAX_DEFAULT,
            skew_bound_ms: SKEW_BOUND_MS_DEFAULT,
        }
    }
}

/// What rule a finding breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// An acknowledged register write is neither in the final state nor covered.
    LostWrite,
    /// An acknowledged cart add is in no final sibling of its cart (client-side), or not in the
    /// final state of its server-side cart while no remove of it may have applied.
    LostCartAdd,
    /// A value an acknowledged delete saw is back in the final state.
    Resurrected,
    /// An item an acknowledged server-side cart remove removed is in the final state.
    RemovedItemPresent,
    /// A TTL'd value is visible (an `ok` read, the final state) after it must have expired.
    ExpiredVisible,
    /// A write the store refused (`fail`) is visible (final state, a read, or a write's context).
    FailedWritePresent,
    /// A value no operation wrote is visible.
    UnknownValue,
    /// Per-node final reads of a key disagree.
    Diverged,
    /// The digest samples never showed all replicas agreeing.
    NotConverged,
    /// The replicas agreed, but later than the bound after healing.
    ConvergedTooLate,
    /// A read returned more siblings than the bound.
    TooManySiblings,
    /// Not a violation: a key whose final state could not be determined (listed as a warning).
    NotJudgeable,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule broken.
    pub kind: ViolationKind,
    /// The key, if the finding is about one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value (register) or item (cart), if the finding is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The event most relevant to the finding (e.g. the write's completion, the read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_index: Option<usize>,
    /// A short explanation for a human.
    pub explanation: String,
}

/// The verdict on one history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Completed operations (ok + fail + info), of every kind.
    pub ops: usize,
    /// Acknowledged writes, deletes and cart adds.
    pub acked: usize,
    /// Operations that ended indeterminate (`info`).
    pub indeterminate: usize,
    /// Operations invoked but never completed (judged like indeterminate ones).
    pub pending: usize,
    /// Operations that definitely failed.
    pub failed: usize,
    /// Keys with at least one write, delete or cart add.
    pub keys: usize,
    /// Of those, keys whose final state could not be determined (not judged for lost writes or
    /// resurrections; each is listed in `warnings`).
    pub not_judgeable: usize,
    /// Lost acknowledged writes and cart adds.
    pub lost: usize,
    /// Deleted values and removed server-side cart items that came back.
    pub resurrected: usize,
    /// Sightings of TTL'd values after they must have expired (one per value and key).
    #[serde(default)]
    pub expired_visible: usize,
    /// Acknowledged writes with a TTL that a later `ok` read or the final state was read past
    /// their expiry (+ the skew bound): judged by the expiry rule.
    #[serde(default)]
    pub ttl_judged: usize,
    /// Reads with too many siblings.
    pub sibling_violations: usize,
    /// Time from `healed_at_ms` to the first digest sample at which all replicas agreed.
    pub converged_ms: Option<u64>,
    /// Findings that break a rule (at most [`Options::violations_max`]).
    pub violations: Vec<Violation>,
    /// Findings that were left out of `violations` by the cap.
    pub violations_omitted: usize,
    /// Findings reported but not counted as violations (not-judgeable keys; convergence
    /// findings when [`Options::check_convergence`] is off).
    pub warnings: Vec<Violation>,
    /// Warnings left out by the cap.
    pub warnings_omitted: usize,
    /// Problems with the history itself (a harness bug; the verdict is then best-effort).
    pub errors: Vec<Error>,
}

impl Report {
    /// True when the history is well formed and no rule is broken.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.violations.is_empty() && self.violations_omitted == 0
    }

    /// Appends a violation, honouring the cap.
    pub(crate) fn push_violation(&mut self, violation: Violation, cap: usize) {
        if self.violations.len() < cap {
            self.violations.push(violation);
        } else {
            self.violations_omitted += 1;
        }
    }

    /// Appends a warning, honouring the cap.
    pub(crate) fn push_warning(&mut self, warning: Violation, cap: usize) {
        if self.warnings.len() < cap {
            self.warnings.push(warning);
        } else {
            self.warnings_omitted += 1;
        }
    }
}
