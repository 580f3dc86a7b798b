//! The rules, one function each. See the crate documentation for what each rule promises and
//! why it is stated this way; this module is the executable version.
//!
//! Each public checker takes the whole history and [`Options`] and returns its findings;
//! [`crate::check`] runs them all over one shared analysis of the history. Findings come out in a
//! deterministic order (keys sorted, then history order), so a seed's report replays byte for
//! byte.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::analysis::{
    cart_items, Analysis, FinalState, KeyInfo, KeyKind, Operation, Outcome, MERGED_NODE,
};
use crate::history::{History, Op, ProcessId, Status};
use crate::report::{Options, Violation, ViolationKind};

/// How many values an explanation lists before eliding the rest.
const VALUES_SHOWN_MAX: usize = 6;

/// `[a, b, c, … (+n)]`.
fn show<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let values: Vec<&str> = values.into_iter().collect();
    let mut shown: Vec<String> = values
        .iter()
        .take(VALUES_SHOWN_MAX)
        .map(|value| format!("{value:?}"))
        .collect();
    if values.len() > VALUES_SHOWN_MAX {
        shown.push(format!("… (+{})", values.len() - VALUES_SHOWN_MAX));
    }
    format!("[{}]", shown.join(", "))
}

fn finding(
    kind: ViolationKind,
    key: &str,
    value: Option<&str>,
    event_index: Option<usize>,
    explanation: String,
) -> Violation {
    Violation {
        kind,
        key: Some(key.to_string()),
        value: value.map(str::to_string),
        event_index,
        explanation,
    }
}

/// Rule 1, registers: every acknowledged write is in the final state or covered (or, with a
/// TTL, may have expired by the final reads).
pub fn lost_writes(history: &History, options: &Options) -> Vec<Violation> {
    lost_writes_in(&Analysis::new(history), options)
}

/// When an operation was invoked (its completion's time for a completion without an
/// invocation, in a malformed history), ms.
fn invoked_ms(analysis: &Analysis<'_>, operation: &Operation<'_>) -> u64 {
    operation
        .invoke_index
        .or(operation.completion_index)
        .map_or(0, |index| analysis.history.events[index].time_ms)
}

/// When an operation completed, ms (`None`: pending).
fn completed_ms(analysis: &Analysis<'_>, operation: &Operation<'_>) -> Option<u64> {
    operation
        .completion_index
        .map(|index| analysis.history.events[index].time_ms)
}

/// Whether a write with a TTL of `ttl_ms` invoked at `invoked_ms` may have expired for a reader
/// at `read_ms` (`None`: unknown, so it may have): its coordinator may have applied it as soon
/// as it was invoked, with a clock up to `skew_bound_ms` ahead of the reader's.
fn may_have_expired(
    invoked_ms: u64,
    ttl_ms: u64,
    read_ms: Option<u64>,
    skew_bound_ms: u64,
) -> bool {
    read_ms.is_none_or(|read_ms| {
        read_ms.saturating_add(skew_bound_ms) >= invoked_ms.saturating_add(ttl_ms)
    })
}

/// The values of a register key that survived: present in the final state (read from
/// `first_read_ms` on), or written with a TTL by a write that may have applied and may have
/// expired by then, or seen (in `saw`) by a delete that may have applied, or by a write that
/// itself survived — transitively.
fn surviving_values<'h>(
    analysis: &Analysis<'h>,
    key: &str,
    final_values: &BTreeSet<&'h str>,
    first_read_ms: Option<u64>,
    options: &Options,
) -> HashSet<&'h str> {
    let Some(info) = analysis.keys.get(key) else {
        return HashSet::new();
    };
    let mut saw_of: HashMap<&'h str, &'h [String]> = HashMap::new();
    let mut pending: Vec<&'h str> = final_values.iter().copied().collect();
    for operation in analysis.operations_on(info) {
        match operation.op {
            // Any write that survived was applied whatever the client was told (a `fail` one
            // that is visible is reported by its own rule), so its context covers what it saw.
            Op::Write {
                value, saw, ttl_ms, ..
            } => {
                saw_of.insert(value.as_str(), saw.as_slice());
                // Applied and then expired: gone from the final state as it should be, and what
                // it superseded stays superseded. (An indeterminate one may never have applied;
                // absent, it cannot be told from one that expired, so it is given the benefit.)
                let expired = ttl_ms.is_some_and(|ttl| {
                    let invoked = invoked_ms(analysis, operation);
                    may_have_expired(invoked, ttl, first_read_ms, options.skew_bound_ms)
                });
                if expired && operation.outcome.may_have_applied() {
                    pending.push(value.as_str());
                }
            }
            Op::Delete { saw, .. } if operation.outcome.may_have_applied() => {
                pending.extend(saw.iter().map(String::as_str));
            }
            Op::Delete { .. }
            | Op::Read { .. }
            | Op::CartAdd { .. }
            | Op::DtCartAdd { .. }
            | Op::DtCartRemove { .. }
            | Op::DtCartRead { .. } => {}
        }
    }
    let mut surviving = HashSet::new();
    while let Some(value) = pending.pop() {
        if surviving.insert(value) {
            if let Some(saw) = saw_of.get(value) {
                pending.extend(saw.iter().map(String::as_str));
            }
        }
    }
    surviving
}

pub(crate) fn lost_writes_in(analysis: &Analysis<'_>, options: &Options) -> Vec<Violation> {
    let mut findings = Vec::new();
    for (&key, info) in &analysis.keys {
        let FinalState::Judged {
            values, read_ms, ..
        } = &info.final_state
        else {
            continue;
        };
        if info.kind != KeyKind::Register {
            continue;
        }
        let first_read_ms = read_ms.map(|(first, _)| first);
        let surviving = surviving_values(analysis, key, values, first_read_ms, options);
        for operation in analysis.operations_on(info) {
            let Op::Write { value, .. } = operation.op else {
                continue;
            };
            if operation.outcome == Outcome::Ok && !surviving.contains(value.as_str()) {
                findings.push(finding(
                    ViolationKind::LostWrite,
                    key,
                    Some(value),
                    operation.event_index(),
                    format!(
                        "acknowledged write of {value:?} by process {} is not in the final state \
                         {}, no surviving write or delete saw it, and it cannot have expired",
                        operation.process,
                        show(values.iter().copied()),
                    ),
                ));
            }
        }
    }
    findings
}

/// Rule 2, carts: every acknowledged add is in the union of the final siblings' items; for a
/// server-side cart, unless a remove of the item may have applied (rule 2a).
pub fn lost_cart_adds(history: &History, _options: &Options) -> Vec<Violation> {
    lost_cart_adds_in(&Analysis::new(history))
}

/// The items of a cart key's final state (the union of its siblings' items).
fn final_items<'h>(values: &BTreeSet<&'h str>) -> HashSet<&'h str> {
    values
        .iter()
        .flat_map(|sibling| cart_items(sibling))
        .collect()
}

/// The items of a server-side cart that a remove may have removed (`ok`, `info` or pending).
fn maybe_removed<'h>(analysis: &Analysis<'h>, info: &KeyInfo<'h>) -> HashSet<&'h str> {
    analysis
        .operations_on(info)
        .filter(|operation| operation.outcome.may_have_applied())
        .filter_map(|operation| match operation.op {
            Op::DtCartRemove { item, .. } => Some(item.as_str()),
            _ => None,
        })
        .collect()
}

pub(crate) fn lost_cart_adds_in(analysis: &Analysis<'_>) -> Vec<Violation> {
    let mut findings = Vec::new();
    for (&key, info) in &analysis.keys {
        let FinalState::Judged { values, .. } = &info.final_state else {
            continue;
        };
        if !matches!(info.kind, KeyKind::Cart | KeyKind::DtCart) {
            continue;
        }
        let items = final_items(values);
        let removed = maybe_removed(analysis, info);
        for operation in analysis.operations_on(info) {
            let (item, place) = match operation.op {
                Op::CartAdd { item, .. } => (item, "none of the final siblings"),
                Op::DtCartAdd { item, .. } if !removed.contains(item.as_str()) => (
                    item,
                    "the final state of the server-side cart (and no remove of it was sent)",
                ),
                _ => continue,
            };
            if operation.outcome == Outcome::Ok && !items.contains(item.as_str()) {
                findings.push(finding(
                    ViolationKind::LostCartAdd,
                    key,
                    Some(item),
                    operation.event_index(),
                    format!(
                        "acknowledged add of {item:?} by process {} is in {place} {}",
                        operation.process,
                        show(values.iter().copied()),
                    ),
                ));
            }
        }
    }
    findings
}

/// Rule 2b, server-side carts: an item an acknowledged remove removed is not in the final
/// state. Each item is added once and the remove carried the context of a read that showed
/// it, so the remove saw the item's only add: add-wins (which keeps adds a remove did not see)
/// cannot bring it back.
pub fn removed_items(history: &History, _options: &Options) -> Vec<Violation> {
    removed_items_in(&Analysis::new(history))
}

pub(crate) fn removed_items_in(analysis: &Analysis<'_>) -> Vec<Violation> {
    let mut findings = Vec::new();
    for (&key, info) in &analysis.keys {
        let FinalState::Judged { values, .. } = &info.final_state else {
            continue;
        };
        if info.kind != KeyKind::DtCart {
            continue;
        }
        let items = final_items(values);
        let mut reported: HashSet<&str> = HashSet::new();
        for operation in analysis.operations_on(info) {
            let Op::DtCartRemove { item, .. } = operation.op else {
                continue;
            };
            let item = item.as_str();
            if operation.outcome == Outcome::Ok && items.contains(item) && reported.insert(item) {
                findings.push(finding(
                    ViolationKind::RemovedItemPresent,
                    key,
                    Some(item),
                    operation.event_index(),
                    format!(
                        "{item:?} was removed (acknowledged, process {}, with the context of a \
                         read that showed it) but is in the final state",
                        operation.process
                    ),
                ));
            }
        }
    }
    findings
}

/// Rule 7, expiry: a value written with a TTL by an acknowledged write that completed at `c`
/// is not visible to a read invoked after `c + ttl + skew_bound_ms` — not in an `ok` read, not
/// in the final state (judged at the time of its reads; final reads without a time are not
/// judged). The write's coordinator stamped the expiry by its clock no later than `c`; the
/// reading coordinator compares by its own, at most [`Options::skew_bound_ms`] behind.
/// Indeterminate writes are not judged: their coordinator may have applied them any time.
pub fn expired_values(history: &History, options: &Options) -> Vec<Violation> {
    expired_values_in(&Analysis::new(history), options).0
}

/// [`expired_values`], and how many acknowledged TTL'd writes were judged: read (`ok` read or
/// final state) after they must have expired.
pub(crate) fn expired_values_in(
    analysis: &Analysis<'_>,
    options: &Options,
) -> (Vec<Violation>, usize) {
    let mut findings = Vec::new();
    let mut judged = 0;
    for (&key, info) in &analysis.keys {
        if info.kind != KeyKind::Register {
            continue;
        }
        // Each acknowledged TTL'd value: by when it must have expired for every reader.
        let mut expired_by: HashMap<&str, (u64, ProcessId)> = HashMap::new();
        for operation in analysis.operations_on(info) {
            if let Op::Write {
                value,
                ttl_ms: Some(ttl),
                ..
            } = operation.op
            {
                if let (Outcome::Ok, Some(completed)) =
                    (operation.outcome, completed_ms(analysis, operation))
                {
                    let by = completed
                        .saturating_add(*ttl)
                        .saturating_add(options.skew_bound_ms);
                    expired_by.insert(value.as_str(), (by, operation.process));
                }
            }
        }
        if expired_by.is_empty() {
            continue;
        }
        // (where, its time, the event if any, the value)
        let mut seen: Vec<(String, u64, Option<usize>, &str)> = Vec::new();
        // The last read of the key (an `ok` read's invocation, the final state's last read).
        let mut last_read_ms: Option<u64> = None;
        for operation in analysis.operations_on(info) {
            if let (Op::Read { values, .. }, Outcome::Ok) = (operation.op, operation.outcome) {
                let at = invoked_ms(analysis, operation);
                last_read_ms = last_read_ms.max(Some(at));
                let place = format!("a read by process {} invoked at {at} ms", operation.process);
                seen.extend(
                    values
                        .iter()
                        .map(|value| (place.clone(), at, operation.event_index(), value.as_str())),
                );
            }
        }
        if let FinalState::Judged {
            values,
            read_ms: Some((_, last)),
            ..
        } = &info.final_state
        {
            last_read_ms = last_read_ms.max(Some(*last));
            let place = format!("the final state read at {last} ms");
            seen.extend(
                values
                    .iter()
                    .map(|value| (place.clone(), *last, None, *value)),
            );
        }
        judged += expired_by
            .values()
            .filter(|(by, _)| last_read_ms.is_some_and(|last| last > *by))
            .count();
        let mut reported: HashSet<&str> = HashSet::new();
        for (place, at, index, value) in seen {
            let Some(&(by, process)) = expired_by.get(value) else {
                continue;
            };
            if at > by && reported.insert(value) {
                findings.push(finding(
                    ViolationKind::ExpiredVisible,
                    key,
                    Some(value),
                    index,
                    format!(
                        "{value:?} (written with a TTL by process {process}) is in {place}, \
                         after it must have expired ({by} ms: completion + ttl + skew bound {} ms)",
                        options.skew_bound_ms
                    ),
                ));
            }
        }
    }
    (findings, judged)
}

/// Rule 3: no value an acknowledged delete saw is in the final state — unless the value's own
/// write ended indeterminate (a client retry of it is a new version the delete never saw).
pub fn resurrections(history: &History, _options: &Options) -> Vec<Violation> {
    resurrections_in(&Analysis::new(history))
}

pub(crate) fn resurrections_in(analysis: &Analysis<'_>) -> Vec<Violation> {
    let mut findings = Vec::new();
    for (&key, info) in &analysis.keys {
        let FinalState::Judged { values, .. } = &info.final_state else {
            continue;
        };
        // A write that ended indeterminate may be retried by its client after the delete: a new
        // version, concurrent with the delete, that legitimately brings the value back.
        let retryable: HashSet<&str> = analysis
            .operations_on(info)
            .filter(|operation| matches!(operation.outcome, Outcome::Info | Outcome::Pending))
            .filter_map(|operation| match operation.op {
                Op::Write { value, .. } => Some(value.as_str()),
                _ => None,
            })
            .collect();
        let mut reported: HashSet<&str> = HashSet::new();
        for operation in analysis.operations_on(info) {
            let Op::Delete { saw, .. } = operation.op else {
                continue;
            };
            if operation.outcome != Outcome::Ok {
                continue;
            }
            for value in saw {
                let value = value.as_str();
                if values.contains(value) && !retryable.contains(value) && reported.insert(value) {
                    findings.push(finding(
                        ViolationKind::Resurrected,
                        key,
                        Some(value),
                        operation.event_index(),
                        format!(
                            "{value:?} was deleted (acknowledged, process {}) but is back in the \
                             final state",
                            operation.process
                        ),
                    ));
                }
            }
        }
    }
    findings
}

/// Rule 6 (visibility half): a value whose write failed, or that nobody wrote, must not be
/// visible — not in any final read (merged or per node), not in an acknowledged read, not in
/// the context (`saw`) of any write or delete.
pub fn visible_values(history: &History, _options: &Options) -> Vec<Violation> {
    visible_values_in(&Analysis::new(history))
}

pub(crate) fn visible_values_in(analysis: &Analysis<'_>) -> Vec<Violation> {
    let mut findings = Vec::new();
    for (&key, info) in &analysis.keys {
        // Every value or item written on the key: whether its write was refused.
        let mut written: HashMap<&str, (bool, ProcessId)> = HashMap::new();
        for operation in analysis.operations_on(info) {
            if let Op::Write { value: v, .. }
            | Op::CartAdd { item: v, .. }
            | Op::DtCartAdd { item: v, .. } = operation.op
            {
                written.insert(v, (operation.outcome == Outcome::Fail, operation.process));
            }
        }
        // (where it was seen, the event if any, the value or item)
        let mut seen: Vec<(String, Option<usize>, &str)> = Vec::new();
        for read in &info.final_reads {
            for sibling in &read.values {
                let place = if read.node == MERGED_NODE {
                    "the merged final state".to_string()
                } else {
                    format!("the final read of node {}", read.node)
                };
                match info.kind {
                    KeyKind::Register => seen.push((place, None, sibling)),
                    KeyKind::Cart | KeyKind::DtCart => {
                        seen.extend(cart_items(sibling).map(|item| (place.clone(), None, item)))
                    }
                }
            }
        }
        for operation in analysis.operations_on(info) {
            let index = operation.event_index();
            match operation.op {
                Op::Read { values, .. } if operation.outcome == Outcome::Ok => {
                    for sibling in values {
                        let place = format!("a read by process {}", operation.process);
                        match info.kind {
                            KeyKind::Register => seen.push((place, index, sibling)),
                            KeyKind::Cart | KeyKind::DtCart => seen.extend(
                                cart_items(sibling).map(|item| (place.clone(), index, item)),
                            ),
                        }
                    }
                }
                Op::DtCartRead { items, .. } if operation.outcome == Outcome::Ok => {
                    let place = format!("a read by process {}", operation.process);
                    seen.extend(
                        items
                            .iter()
                            .map(|item| (place.clone(), index, item.as_str())),
                    );
                }
                Op::Write { saw, .. } | Op::Delete { saw, .. } => {
                    for value in saw {
                        let place = format!(
                            "the context of an operation by process {}",
                            operation.process
                        );
                        seen.push((place, index, value));
                    }
                }
                Op::Read { .. }
                | Op::CartAdd { .. }
                | Op::DtCartAdd { .. }
                | Op::DtCartRemove { .. }
                | Op::DtCartRead { .. } => {}
            }
        }
        let mut reported: HashSet<&str> = HashSet::new();
        for (place, index, value) in seen {
            let (kind, explanation) = match written.get(value) {
                None => (
                    ViolationKind::UnknownValue,
                    format!("{value:?} is in {place} but no operation wrote it"),
                ),
                Some(&(true, process)) => (
                    ViolationKind::FailedWritePresent,
                    format!(
                        "{value:?} is in {place} but its write (process {process}) was refused"
                    ),
                ),
                Some(&(false, _)) => continue,
            };
            if reported.insert(value) {
                findings.push(finding(kind, key, Some(value), index, explanation));
            }
        }
    }
    findings
}

/// Rule 5: each acknowledged read, and each key's final state, has at most as many siblings as
/// writers could have left: the distinct processes that invoked a write or cart add on the key
/// up to the read's completion, plus the indeterminate writes on the key up to then (a timed-out
/// write may be retried and leave an extra sibling), plus the blind writes (empty `saw` at
/// invocation) by a process that had already written the key (its earlier write is not
/// superseded) and the cart adds whose read was stale (marked `stale` when they complete); and
/// never more than [`Options::siblings_max`].
pub fn sibling_bounds(history: &History, options: &Options) -> Vec<Violation> {
    sibling_bounds_in(&Analysis::new(history), options)
}

/// The sibling bound at a point of the history.
#[derive(Default)]
struct WriterCount {
    /// Processes that invoked a write or cart add on the key.
    processes: BTreeSet<ProcessId>,
    /// Indeterminate writes and cart adds on the key.
    indeterminate: usize,
    /// Writes by a process that had already written the key and whose `saw` lacks that
    /// earlier write — a blind write, or a write after a stale read (Dynamo allows a read that
    /// misses the reader's own write, e.g. under sloppy quorum): the earlier write may survive
    /// beside the new one.
    blind: usize,
    /// Each process's last written value on the key.
    last_written: HashMap<ProcessId, String>,
}

fn sibling_finding(
    key: &str,
    siblings: usize,
    count: Option<&WriterCount>,
    options: &Options,
    event_index: Option<usize>,
    what: &str,
) -> Option<Violation> {
    let (processes, indeterminate, blind) = count.map_or((0, 0, 0), |count| {
        (count.processes.len(), count.indeterminate, count.blind)
    });
    let bound = processes + indeterminate + blind;
    let explanation = if siblings > bound {
        format!(
            "{what} has {siblings} siblings, more than the {processes} writing processes plus \
             {indeterminate} indeterminate and {blind} writes that missed the writer's own \
             previous write so far"
        )
    } else if options.siblings_max.is_some_and(|max| siblings > max) {
        format!(
            "{what} has {siblings} siblings, more than the hard maximum {}",
            options.siblings_max.unwrap_or_default()
        )
    } else {
        return None;
    };
    Some(finding(
        ViolationKind::TooManySiblings,
        key,
        None,
        event_index,
        explanation,
    ))
}

pub(crate) fn sibling_bounds_in(analysis: &Analysis<'_>, options: &Options) -> Vec<Violation> {
    let mut findings = Vec::new();
    let mut counts: HashMap<&str, WriterCount> = HashMap::new();
    for (index, event) in analysis.history.events.iter().enumerate() {
        let key = event.op.key();
        match (&event.op, event.status) {
            (Op::Write { saw, value, .. }, Status::Invoke) => {
                let count = counts.entry(key).or_default();
                count.processes.insert(event.process);
                if let Some(previous) = count.last_written.get(&event.process) {
                    if !saw.contains(previous) {
                        count.blind += 1;
                    }
                }
                count.last_written.insert(event.process, value.clone());
            }
            (Op::CartAdd { .. }, Status::Invoke) => {
                counts
                    .entry(key)
                    .or_default()
                    .processes
                    .insert(event.process);
            }
            (Op::Write { .. } | Op::CartAdd { .. }, Status::Info) => {
                let count = counts.entry(key).or_default();
                count.indeterminate += 1;
                if matches!(event.op, Op::CartAdd { stale: true, .. }) {
                    count.blind += 1;
                }
            }
            (Op::CartAdd { stale: true, .. }, Status::Ok) => {
                counts.entry(key).or_default().blind += 1;
            }
            (Op::Read { values, .. }, Status::Ok) => {
                let what = format!("the read at event {index} (process {})", event.process);
                findings.extend(sibling_finding(
                    key,
                    values.len(),
                    counts.get(key),
                    options,
                    Some(index),
                    &what,
                ));
            }
            _ => {}
        }
    }
    for (&key, info) in &analysis.keys {
        let FinalState::Judged { siblings, .. } = info.final_state else {
            continue;
        };
        if info.kind == KeyKind::DtCart {
            // A data-type read answers one value, whatever the siblings stored.
            if siblings > 1 {
                findings.push(finding(
                    ViolationKind::TooManySiblings,
                    key,
                    None,
                    None,
                    format!("the final state of a server-side cart has {siblings} values, not 1"),
                ));
            }
            continue;
        }
        findings.extend(sibling_finding(
            key,
            siblings,
            counts.get(key),
            options,
            None,
            "the final state",
        ));
    }
    // Reads first in history order, then final states by key: stable and readable.
    findings
}

/// What the convergence checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Convergence {
    /// Time from `healed_at_ms` to the first digest sample time at which every partition's
    /// replicas agreed (`None`: no digests, or never).
    pub converged_ms: Option<u64>,
    /// Diverged keys, digests that never agreed, or agreed too late. Violations only when
    /// [`Options::check_convergence`] is on (then [`crate::check`] counts them).
    pub findings: Vec<Violation>,
}

/// Rule 4: replicas agree after healing — per-node final reads of each key are equal as sets,
/// and the digest samples show every partition's replicas agreeing within
/// [`Options::convergence_bound_ms`] of `healed_at_ms`.
///
/// Digest samples need not be taken at the same instant on every node: the state at a sample
/// time `t` is each (node, partition)'s latest sample at or before `t`, and agreement is judged
/// only once every (node, partition) that is ever sampled has been sampled.
pub fn convergence(history: &History, options: &Options) -> Convergence {
    convergence_in(&Analysis::new(history), options)
}

/// [`convergence`] on an analysis shared with the other checkers.
pub(crate) fn convergence_in(analysis: &Analysis<'_>, options: &Options) -> Convergence {
    let mut findings = diverged_keys(analysis);
    let history = analysis.history;
    if history.digests.is_empty() {
        return Convergence {
            converged_ms: None,
            findings,
        };
    }
    let converged_ms = match digest_agreement(history) {
        DigestAgreement::At { time_ms } => {
            let ms = time_ms.saturating_sub(history.healed_at_ms.unwrap_or(0));
            if ms > options.convergence_bound_ms {
                findings.push(Violation {
                    kind: ViolationKind::ConvergedTooLate,
                    key: None,
                    value: None,
                    event_index: None,
                    explanation: format!(
                        "replicas agreed {ms} ms after healing, the bound is {} ms",
                        options.convergence_bound_ms
                    ),
                });
            }
            Some(ms)
        }
        DigestAgreement::Never { differing } => {
            findings.push(never_converged(&differing));
            None
        }
    };
    Convergence {
        converged_ms,
        findings,
    }
}

/// A [`ViolationKind::Diverged`] finding for each key whose per-node final reads are not all
/// the same set as the first node's (the `merged` read is not a replica, so it is left out).
fn diverged_keys(analysis: &Analysis<'_>) -> Vec<Violation> {
    let mut findings = Vec::new();
    for (&key, info) in &analysis.keys {
        let per_node: Vec<_> = info
            .final_reads
            .iter()
            .filter(|read| read.node != MERGED_NODE)
            .collect();
        let Some(first) = per_node.first() else {
            continue;
        };
        let first_values: BTreeSet<&str> = first.values.iter().map(String::as_str).collect();
        if let Some(other) = per_node.iter().find(|read| {
            read.values
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>()
                != first_values
        }) {
            findings.push(finding(
                ViolationKind::Diverged,
                key,
                None,
                None,
                format!(
                    "node {} has {} but node {} has {}",
                    first.node,
                    show(first_values.iter().copied()),
                    other.node,
                    show(other.values.iter().map(String::as_str)),
                ),
            ));
        }
    }
    findings
}

/// Whether and when the digest samples show every partition's replicas agreeing.
enum DigestAgreement {
    /// First at this sample time (ms since the run began).
    At { time_ms: u64 },
    /// Never. `differing`: the partitions whose replicas still differed at the last sample
    /// time by which every sampled (node, partition) had been sampled; empty if there was none.
    Never { differing: Vec<u32> },
}

/// Walks the digest samples of `history` in time order, each sample time at once, and finds
/// the first time at which every partition's replicas agree. The state at a time is each
/// (node, partition)'s latest sample at or before it; it is judged only once every
/// (node, partition) ever sampled has been sampled, so a late first sample is not mistaken
/// for agreement.
fn digest_agreement(history: &History) -> DigestAgreement {
    let sampled: BTreeSet<(&str, u32)> = history
        .digests
        .iter()
        .map(|sample| (sample.node.as_str(), sample.partition))
        .collect();
    let mut samples: Vec<_> = history.digests.iter().collect();
    samples.sort_by_key(|sample| sample.time_ms);
    let mut latest: BTreeMap<(u32, &str), &str> = BTreeMap::new();
    let mut differing: Vec<u32> = Vec::new();
    let mut position = 0;
    while position < samples.len() {
        let time_ms = samples[position].time_ms;
        while position < samples.len() && samples[position].time_ms == time_ms {
            let sample = samples[position];
            latest.insert(
                (sample.partition, sample.node.as_str()),
                sample.digest.as_str(),
            );
            position += 1;
        }
        if latest.len() < sampled.len() {
            continue;
        }
        differing = partitions_differing(&latest);
        if differing.is_empty() {
            return DigestAgreement::At { time_ms };
        }
    }
    DigestAgreement::Never { differing }
}

/// The partitions, in order, whose replicas' digests in `latest` (keyed by partition, then
/// node) are not all equal.
fn partitions_differing(latest: &BTreeMap<(u32, &str), &str>) -> Vec<u32> {
    let mut per_partition: BTreeMap<u32, BTreeSet<&str>> = BTreeMap::new();
    for (&(partition, _), &digest) in latest {
        per_partition.entry(partition).or_default().insert(digest);
    }
    per_partition
        .iter()
        .filter(|(_, digests)| digests.len() > 1)
        .map(|(&partition, _)| partition)
        .collect()
}

/// The [`ViolationKind::NotConverged`] finding for digests that never agreed; `differing` as
/// in [`DigestAgreement::Never`], of which the first [`VALUES_SHOWN_MAX`] are named.
fn never_converged(differing: &[u32]) -> Violation {
    let explanation = if differing.is_empty() {
        "not every sampled replica was sampled before the samples ended".to_string()
    } else {
        let shown: Vec<String> = differing
            .iter()
            .take(VALUES_SHOWN_MAX)
            .map(u32::to_string)
            .collect();
        format!(
            "replicas never agreed: at the last sample {} partitions still differ \
             (e.g. {})",
            differing.len(),
            shown.join(", ")
        )
    };
    Violation {
        kind: ViolationKind::NotConverged,
        key: None,
        value: None,
        event_index: None,
        explanation,
    }
}

/// Warnings for written keys whose final state could not be determined.
pub(crate) fn not_judgeable_in(analysis: &Analysis<'_>) -> Vec<Violation> {
    analysis
        .keys
        .iter()
        .filter(|(_, info)| info.written)
        .filter_map(|(&key, info)| match &info.final_state {
            FinalState::NotJudgeable { reason } => Some(finding(
                ViolationKind::NotJudgeable,
                key,
                None,
                None,
                format!("not judged for lost writes or resurrections: {reason}"),
            )),
            FinalState::Judged { .. } => None,
        })
        .collect()
}
