//! # yeskv-check: histories and the checkers that judge them
//!
//! The simulator (`yeskv-sim`) and the real-process chaos runner (`scripts/chaos`) both record
//! what their clients did as a [`history::History`] and hand it, with the state read after the
//! cluster healed, to the checkers here. One set of checkers for both, so a bug found by one is
//! judged by the same rules as the other. See `docs/reliability.md` for what each rule promises.
//! Everything is pure (no I/O, no clock); only the `yeskv-check` binary reads a file.
//!
//! ## What producers record (conventions)
//!
//! - Written values and cart items are unique in a history; a cart item is non-empty and has no
//!   `,`. A write's `saw` is the sibling values of the read whose causal context it carried.
//! - A [`history::FinalRead`] with `node == "merged"` ([`MERGED_NODE`]) is the state a client
//!   sees after healing: read with `r=all`, DVV-merged across replicas. The lost-write,
//!   lost-add, resurrection and sibling rules judge this merged state. A key without a merged
//!   read is judged on its per-node reads if they all agree (as sets of values); otherwise, or
//!   with no final read at all, it is *not judgeable*: counted in [`Report::not_judgeable`] and
//!   listed as a warning, never guessed at.
//! - Per-node final reads (`node != "merged"`) and [`history::DigestSample`]s feed the
//!   convergence rule only.
//! - For carts, a sibling's value is the cart's items joined by `,`; the empty cart is `""`.
//! - A server-side cart (a bucket of data type `cart`: [`history::Op::DtCartAdd`],
//!   [`history::Op::DtCartRemove`], [`history::Op::DtCartRead`]) adds each item once, with
//!   quantity 1; a remove carries the context of an `ok` read of the same process that showed
//!   the item. Its final read has one value, the items joined by `,` (none when not found).
//! - A register write may carry a TTL ([`history::Op::Write`]'s `ttl_ms`). Final reads carry
//!   the time they were made ([`history::FinalRead::time_ms`]) for the expiry rule; without it
//!   a key's TTL'd values are not judged in its final state.
//! - A write's `saw` is recorded at invocation (the completion repeats it). The checkers go by
//!   the order of [`history::History::events`], not by `time_ms`; only digest samples are
//!   ordered by time.
//!
//! ## The rules
//!
//! 1. **No lost acknowledged register write** ([`checkers::lost_writes`]). An `ok` write of `v`
//!    is fine if `v` is in the final state, or *covered*: some write or delete `u` that may have
//!    applied (`ok`, `info` or never completed) has `v` in `u.saw`, where a covering write `u`
//!    is itself present or covered (transitively) and a covering delete covers what it saw
//!    unconditionally. This is the Dynamo contract: a write whose context saw `v` legitimately
//!    supersedes it. Otherwise `v` is lost.
//!    A write with a TTL that may have applied and may have expired by the final reads (it
//!    was invoked no more than `ttl` − [`Options::skew_bound_ms`] before them) counts as
//!    present: it is not lost, and it covers what it saw.
//! 2. **No lost acknowledged cart add** ([`checkers::lost_cart_adds`]): each `ok` add's item
//!    is in the union of the items of the final siblings of its cart. For a server-side cart
//!    (2a): each `ok` add's item is in the final state unless a remove of that item may have
//!    applied (`ok`, `info` or pending).
//! 3. **No resurrection** ([`checkers::resurrections`]): a value an `ok` delete saw is not in
//!    the final state (values are unique, so it can only be the old write coming back). The
//!    exception is a value whose write ended indeterminate: its client may have retried it,
//!    and a retry is a new version, concurrent with the delete, that rightly survives it.
//!    For a server-side cart (2b, [`checkers::removed_items`]): the item of an `ok` remove is
//!    absent from the final state. Add-wins keeps only adds the remove did not see, and the
//!    remove saw the item's only add (the read whose context it carried showed the item).
//! 4. **Convergence** ([`checkers::convergence`]): all per-node final reads of a key agree as
//!    sets; for digests, every partition's replicas agree at some sample time, and
//!    [`Report::converged_ms`] is the first such time minus `healed_at_ms`, which must not
//!    exceed [`Options::convergence_bound_ms`]. With [`Options::check_convergence`] off these
//!    findings are warnings, not violations (for histories of runs without repair).
//! 5. **Bounded siblings** ([`checkers::sibling_bounds`]): each `ok` read, and each key's final
//!    state, has at most `W` siblings, `W` = distinct processes that invoked a write or cart add
//!    on the key up to the read's completion + indeterminate (`info`) writes on the key up to
//!    then (a timed-out write may be retried and leave an extra sibling) + blind writes (empty
//!    `saw` at invocation) by a process that had already written the key (nothing supersedes
//!    its earlier write); and at most [`Options::siblings_max`]. Siblings are counted as
//!    returned, duplicates included. The bound assumes a client's write with a context saw its
//!    own previous write of the key (read-your-writes per session), which the workloads do.
//!    A server-side cart's final state has one value (a data-type read answers one).
//! 6. **Indeterminate is not failure** ([`checkers::visible_values`] and the counts): an `info`
//!    operation is neither failed nor acknowledged, and an `info` write may be present or
//!    absent. A `fail` write must stay invisible — in any final read, `ok` read, or write or
//!    delete context — since the store said it did not apply it. A value no operation wrote
//!    must never be visible either. An operation invoked but never completed is judged like an
//!    `info` one and counted in [`Report::pending`]. For server-side carts (2c): an item in an
//!    `ok` read or the final state was added by an add that did not fail (no phantom items).
//! 7. **Expiry** ([`checkers::expired_values`]): a value written with a TTL by an `ok` write
//!    that completed at `c` is not in an `ok` read invoked after `c + ttl + skew_bound`, nor in
//!    the final state read after then, `skew_bound` being [`Options::skew_bound_ms`] (the
//!    expiry is stamped by the write's coordinator's clock and judged by the reader's). An
//!    indeterminate TTL'd write is not judged (its coordinator may have applied it any time).
//!
//! The history itself is validated ([`validate`]): each completion matches an earlier
//! invocation of the same process (same kind, key, value or item), a process has at most one
//! operation outstanding, values are unique, cart items well formed, a key is one kind only
//! (register, cart, or server-side cart), and a key's merged final reads agree. Problems go to [`Report::errors`]:
//! a harness bug, not a store bug; the checkers still run on a best-effort reading.
//!
//! Counts: [`Report::ops`] completed operations (ok + fail + info), [`Report::acked`] `ok`
//! writes, deletes, cart adds and server-side cart operations (every kind but reads), [`Report::indeterminate`] `info` operations,
//! [`Report::failed`] `fail` operations.
//!
//! ## Using it
//!
//! [`check`] runs every rule and returns a [`Report`] (JSON via serde; [`Report::ok`] is the
//! verdict); [`trace`] gives the last events on a finding's key for a shortened failure trace.
//! The binary `yeskv-check HISTORY.json [--convergence-bound-ms N] [--no-convergence]
//! [--siblings-max N] [--skew-bound-ms N]` prints the report and exits 0 (pass), 1 (violations) or 2 (bad input,
//! including a malformed history).

mod analysis;
pub mod checkers;
mod error;
pub mod history;
mod report;

use std::collections::BTreeSet;

pub use analysis::MERGED_NODE;
pub use error::Error;
pub use report::{
    Options, Report, Violation, ViolationKind, CONVERGENCE_BOUND_MS_DEFAULT, SKEW_BOUND_MS_DEFAULT,
    VIOLATIONS_MAX_DEFAULT,
};

use analysis::{Analysis, Outcome};
use history::{Event, History, Op};

/// The problems with a history itself (empty: well formed).
pub fn validate(history: &History) -> Vec<Error> {
    Analysis::new(history).errors
}

/// Runs every checker and counts.
pub fn check(history: &History, options: &Options) -> Report {
    let analysis = Analysis::new(history);
    let mut report = Report {
        errors: analysis.errors.clone(),
        ..Report::default()
    };
    for operation in &analysis.operations {
        match operation.outcome {
            Outcome::Ok => {
                report.ops += 1;
                if !operation.op.is_read() {
                    report.acked += 1;
                }
            }
            Outcome::Fail => {
                report.ops += 1;
                report.failed += 1;
            }
            Outcome::Info => {
                report.ops += 1;
                report.indeterminate += 1;
            }
            Outcome::Pending => report.pending += 1,
        }
    }
    report.keys = analysis.keys.values().filter(|info| info.written).count();
    let not_judgeable = checkers::not_judgeable_in(&analysis);
    report.not_judgeable = not_judgeable.len();

    let lost_writes = checkers::lost_writes_in(&analysis, options);
    let lost_cart_adds = checkers::lost_cart_adds_in(&analysis);
    let resurrections = checkers::resurrections_in(&analysis);
    let removed = checkers::removed_items_in(&analysis);
    let (expired, ttl_judged) = checkers::expired_values_in(&analysis, options);
    let siblings = checkers::sibling_bounds_in(&analysis, options);
    let visible = checkers::visible_values_in(&analysis);
    let convergence = checkers::convergence_in(&analysis, options);
    report.lost = lost_writes.len() + lost_cart_adds.len();
    report.resurrected = resurrections.len() + removed.len();
    report.expired_visible = expired.len();
    report.ttl_judged = ttl_judged;
    report.sibling_violations = siblings.len();
    report.converged_ms = convergence.converged_ms;

    let cap = options.violations_max;
    for violation in lost_writes
        .into_iter()
        .chain(lost_cart_adds)
        .chain(resurrections)
        .chain(removed)
        .chain(expired)
        .chain(visible)
        .chain(siblings)
    {
        report.push_violation(violation, cap);
    }
    for finding in convergence.findings {
        if options.check_convergence {
            report.push_violation(finding, cap);
        } else {
            report.push_warning(finding, cap);
        }
    }
    for warning in not_judgeable {
        report.push_warning(warning, cap);
    }
    report
}

/// Whether an operation mentions a value (writes it, saw it, or read it).
fn mentions(op: &Op, value: &str) -> bool {
    match op {
        Op::Write {
            value: written,
            saw,
            ..
        } => written == value || saw.iter().any(|seen| seen == value),
        Op::Delete { saw, .. } => saw.iter().any(|seen| seen == value),
        Op::Read { values, .. } => values
            .iter()
            .any(|sibling| sibling == value || analysis::cart_items(sibling).any(|i| i == value)),
        Op::CartAdd { item, .. } | Op::DtCartAdd { item, .. } | Op::DtCartRemove { item, .. } => {
            item == value
        }
        Op::DtCartRead { items, .. } => items.iter().any(|item| item == value),
    }
}

/// A shortened trace for a finding: at most `max_events` events of the history, in order —
/// the first two events mentioning the finding's value (normally its write's invocation and
/// completion), then the last events on the finding's key. A finding without a key (digest
/// convergence) gets the last events of the whole history.
pub fn trace(history: &History, violation: &Violation, max_events: usize) -> Vec<Event> {
    let on_key = |event: &Event| {
        violation
            .key
            .as_deref()
            .is_none_or(|key| event.op.key() == key)
    };
    let mut chosen: BTreeSet<usize> = BTreeSet::new();
    if let Some(value) = violation.value.as_deref() {
        chosen.extend(
            history
                .events
                .iter()
                .enumerate()
                .filter(|(_, event)| on_key(event) && mentions(&event.op, value))
                .map(|(index, _)| index)
                .take(2.min(max_events)),
        );
    }
    for (index, event) in history.events.iter().enumerate().rev() {
        if chosen.len() >= max_events {
            break;
        }
        if on_key(event) {
            chosen.insert(index);
        }
    }
    chosen
        .into_iter()
        .map(|index| history.events[index].clone())
        .collect()
}
