//! One pass over a history that every checker shares: pair invocations with completions, group
//! operations by key, and decide each key's final state.
//!
//! Invariants of the result: `operations` is in invocation order; each operation's `op` is the
//! completion's (results filled in) or, for a pending one, the invocation's; every key touched
//! by an operation or a final read has a [`KeyInfo`]. The pass is total: a malformed history
//! yields a best-effort analysis plus [`Error`]s, so the checkers can still say something.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Error;
use crate::history::{Event, FinalRead, History, Op, ProcessId, Status};

/// The node name of a final read that is the DVV-merged state across replicas.
pub const MERGED_NODE: &str = "merged";

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Fail,
    Info,
    /// Invoked, never completed: as indeterminate as `Info`.
    Pending,
}

impl Outcome {
    /// Whether the operation may have taken effect.
    pub(crate) fn may_have_applied(self) -> bool {
        self != Outcome::Fail
    }
}

/// One operation: an invocation and its completion.
#[derive(Clone, Debug)]
pub(crate) struct Operation<'h> {
    pub(crate) process: ProcessId,
    /// `None` only for a completion without an invocation (a malformed history).
    pub(crate) invoke_index: Option<usize>,
    /// `None` for a pending operation.
    pub(crate) completion_index: Option<usize>,
    pub(crate) outcome: Outcome,
    pub(crate) op: &'h Op,
}

impl Operation<'_> {
    /// The event that best locates the operation (its completion, else its invocation).
    pub(crate) fn event_index(&self) -> Option<usize> {
        self.completion_index.or(self.invoke_index)
    }
}

/// Which workload a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Register,
    /// A client-side cart (a register holding items, [`Op::CartAdd`]).
    Cart,
    /// A server-side cart (a data-type key, [`Op::DtCartAdd`] and the like).
    DtCart,
}

impl KeyKind {
    /// The kind of key an operation implies, and whether it writes (a read implies no kind,
    /// except a data-type read).
    fn of(op: &Op) -> Option<(KeyKind, bool)> {
        match op {
            Op::Write { .. } | Op::Delete { .. } => Some((KeyKind::Register, true)),
            Op::CartAdd { .. } => Some((KeyKind::Cart, true)),
            Op::DtCartAdd { .. } | Op::DtCartRemove { .. } => Some((KeyKind::DtCart, true)),
            Op::DtCartRead { .. } => Some((KeyKind::DtCart, false)),
            Op::Read { .. } => None,
        }
    }
}

/// The state a key was left in, as far as the final reads tell.
#[derive(Clone, Debug)]
pub(crate) enum FinalState<'h> {
    /// The sibling values after healing (a `merged` read, or per-node reads that all agree).
    Judged {
        values: BTreeSet<&'h str>,
        /// The most siblings any read used returned (duplicates count: a retried write can
        /// leave two siblings of one value).
        siblings: usize,
        /// When the reads used were made: the earliest and the latest (`None`: some read used
        /// has no time).
        read_ms: Option<(u64, u64)>,
    },
    /// No merged read and the per-node reads disagree, or no final read at all.
    NotJudgeable { reason: String },
}

/// Everything known about one key.
#[derive(Clone, Debug)]
pub(crate) struct KeyInfo<'h> {
    pub(crate) kind: KeyKind,
    /// Whether some operation fixed `kind` (a write, or a data-type read).
    kind_known: bool,
    /// Indices into [`Analysis::operations`], in invocation order.
    pub(crate) operations: Vec<usize>,
    /// Whether any write, delete or cart add touched the key (only then must it be judged).
    pub(crate) written: bool,
    /// All final reads of the key (merged and per node).
    pub(crate) final_reads: Vec<&'h FinalRead>,
    pub(crate) final_state: FinalState<'h>,
}

/// The shared reading of a history.
#[derive(Clone, Debug)]
pub(crate) struct Analysis<'h> {
    pub(crate) history: &'h History,
    pub(crate) operations: Vec<Operation<'h>>,
    pub(crate) keys: BTreeMap<&'h str, KeyInfo<'h>>,
    pub(crate) errors: Vec<Error>,
}

/// Whether a completion's operation is the one invoked (results may differ: a read's values, a
/// write's `saw` when the client filled it in late).
fn same_operation(invoked: &Op, completed: &Op) -> bool {
    match (invoked, completed) {
        (Op::Read { key: a, .. }, Op::Read { key: b, .. }) => a == b,
        (Op::Delete { key: a, .. }, Op::Delete { key: b, .. }) => a == b,
        (
            Op::Write {
                key: a,
                value: va,
                ttl_ms: ta,
                ..
            },
            Op::Write {
                key: b,
                value: vb,
                ttl_ms: tb,
                ..
            },
        ) => a == b && va == vb && ta == tb,
        (
            Op::DtCartAdd {
                cart: a, item: ia, ..
            },
            Op::DtCartAdd {
                cart: b, item: ib, ..
            },
        )
        | (
            Op::DtCartRemove {
                cart: a, item: ia, ..
            },
            Op::DtCartRemove {
                cart: b, item: ib, ..
            },
        ) => a == b && ia == ib,
        (Op::DtCartRead { cart: a, .. }, Op::DtCartRead { cart: b, .. }) => a == b,
        (
            Op::CartAdd {
                cart: a, item: ia, ..
            },
            Op::CartAdd {
                cart: b, item: ib, ..
            },
        ) => a == b && ia == ib,
        _ => false,
    }
}

/// The items of a cart sibling (`""` is the empty cart).
pub(crate) fn cart_items(sibling: &str) -> impl Iterator<Item = &str> {
    sibling.split(',').filter(|item| !item.is_empty())
}

impl<'h> KeyInfo<'h> {
    /// A key of `kind` with no operations or final reads yet and its final state not yet
    /// decided; [`Analysis::new`] fills it in.
    fn empty(kind: KeyKind) -> Self {
        KeyInfo {
            kind,
            kind_known: false,
            operations: Vec::new(),
            written: false,
            final_reads: Vec::new(),
            final_state: FinalState::NotJudgeable {
                reason: String::new(),
            },
        }
    }
}

impl<'h> Analysis<'h> {
    /// Reads `history` once for every checker: pairs invocations with completions, groups the
    /// operations and final reads by key, and decides each key's final state. What is
    /// malformed goes to `errors` rather than stopping the pass (see the module docs).
    pub(crate) fn new(history: &'h History) -> Self {
        let mut errors = Vec::new();
        let operations = pair_operations(history, &mut errors);
        let mut keys = group_by_key(&operations, &mut errors);
        add_final_reads(&mut keys, history);
        for (key, info) in keys.iter_mut() {
            info.final_state = resolve_final_state(key, &info.final_reads, &mut errors);
        }
        Analysis {
            history,
            operations,
            keys,
            errors,
        }
    }

    /// The operations on one key, in invocation order.
    pub(crate) fn operations_on<'a>(
        &'a self,
        info: &'a KeyInfo<'h>,
    ) -> impl Iterator<Item = &'a Operation<'h>> + 'a {
        info.operations
            .iter()
            .map(move |&position| &self.operations[position])
    }
}

/// The operations of `history` in invocation order: each invocation paired with its process's
/// next completion. An invocation never completed stays [`Outcome::Pending`]; a completion with
/// no invocation becomes an operation of its own. Malformed events go to `errors`.
fn pair_operations<'h>(history: &'h History, errors: &mut Vec<Error>) -> Vec<Operation<'h>> {
    let mut operations: Vec<Operation<'h>> = Vec::new();
    // Per process: the index into `operations` of its outstanding invocation.
    let mut outstanding: HashMap<ProcessId, usize> = HashMap::new();
    // Written values and cart items: where first invoked.
    let mut first_use: HashMap<&'h str, usize> = HashMap::new();

    for (index, event) in history.events.iter().enumerate() {
        if event.status == Status::Invoke {
            if let Some(&previous) = outstanding.get(&event.process) {
                errors.push(Error::InvokeWhileOutstanding {
                    index,
                    process: event.process,
                    outstanding_index: operations[previous].invoke_index.unwrap_or(index),
                });
            }
            check_written_value(index, &event.op, &mut first_use, errors);
            outstanding.insert(event.process, operations.len());
            operations.push(Operation {
                process: event.process,
                invoke_index: Some(index),
                completion_index: None,
                outcome: Outcome::Pending,
                op: &event.op,
            });
            continue;
        }
        let outcome = match event.status {
            Status::Ok => Outcome::Ok,
            Status::Fail => Outcome::Fail,
            Status::Info | Status::Invoke => Outcome::Info,
        };
        match outstanding.remove(&event.process) {
            Some(position) => {
                complete_operation(&mut operations[position], index, event, outcome, errors)
            }
            None => {
                errors.push(Error::CompletionWithoutInvoke {
                    index,
                    process: event.process,
                });
                operations.push(Operation {
                    process: event.process,
                    invoke_index: None,
                    completion_index: Some(index),
                    outcome,
                    op: &event.op,
                });
            }
        }
    }
    operations
}

/// Checks the value a write or cart add invoked at `index` puts in: a cart item must be
/// non-empty and free of `,` (the sibling separator), and no value may be written twice in a
/// history, since the checkers tell writes apart by their values. `first_use` records where
/// each value was first invoked.
fn check_written_value<'h>(
    index: usize,
    op: &'h Op,
    first_use: &mut HashMap<&'h str, usize>,
    errors: &mut Vec<Error>,
) {
    let written = match op {
        Op::Write { value, .. } => Some(value.as_str()),
        Op::CartAdd { item, .. } | Op::DtCartAdd { item, .. } => {
            if item.is_empty() || item.contains(',') {
                errors.push(Error::BadCartItem {
                    index,
                    item: item.clone(),
                });
            }
            Some(item.as_str())
        }
        Op::Read { .. } | Op::Delete { .. } | Op::DtCartRemove { .. } | Op::DtCartRead { .. } => {
            None
        }
    };
    if let Some(value) = written {
        if let Some(&first_index) = first_use.get(value) {
            errors.push(Error::DuplicateValue {
                index,
                first_index,
                value: value.to_string(),
            });
        } else {
            first_use.insert(value, index);
        }
    }
}

/// Completes the outstanding `operation` with `event`, found at `index`: the completion's op
/// (with its results) replaces the invocation's. A completion of a different operation than
/// the one invoked goes to `errors`.
fn complete_operation<'h>(
    operation: &mut Operation<'h>,
    index: usize,
    event: &'h Event,
    outcome: Outcome,
    errors: &mut Vec<Error>,
) {
    if !same_operation(operation.op, &event.op) {
        errors.push(Error::CompletionMismatch {
            index,
            process: event.process,
            invoke_index: operation.invoke_index.unwrap_or(index),
        });
    }
    operation.completion_index = Some(index);
    operation.outcome = outcome;
    operation.op = &event.op;
}

/// Groups `operations` by key, keeping invocation order. A key takes the kind of its first
/// operation that implies one ([`KeyKind::of`]: a write, delete, cart add or server-side cart
/// operation; a key only read with [`Op::Read`] is a register); a key used as two kinds goes to
/// `errors` once.
fn group_by_key<'h>(
    operations: &[Operation<'h>],
    errors: &mut Vec<Error>,
) -> BTreeMap<&'h str, KeyInfo<'h>> {
    let mut keys: BTreeMap<&'h str, KeyInfo<'h>> = BTreeMap::new();
    let mut mixed: BTreeSet<&'h str> = BTreeSet::new();
    for (position, operation) in operations.iter().enumerate() {
        let implied = KeyKind::of(operation.op);
        let info = keys
            .entry(operation.op.key())
            .or_insert_with(|| KeyInfo::empty(KeyKind::Register));
        if let Some((kind, writes)) = implied {
            if !info.kind_known {
                info.kind = kind;
                info.kind_known = true;
            } else if info.kind != kind {
                mixed.insert(operation.op.key());
            }
            info.written |= writes;
        }
        info.operations.push(position);
    }
    for key in mixed {
        errors.push(Error::MixedKey {
            key: key.to_string(),
        });
    }
    keys
}

/// Adds each final read of `history` to its key; a key no operation touched becomes a register
/// key, so that every key read at the end has a [`KeyInfo`].
fn add_final_reads<'h>(keys: &mut BTreeMap<&'h str, KeyInfo<'h>>, history: &'h History) {
    for read in &history.final_reads {
        keys.entry(read.key.as_str())
            .or_insert_with(|| KeyInfo::empty(KeyKind::Register))
            .final_reads
            .push(read);
    }
}

/// The set of values of a final read.
fn value_set(read: &FinalRead) -> BTreeSet<&str> {
    read.values.iter().map(String::as_str).collect()
}

/// A key's final state: its `merged` read; else its per-node reads if they agree; else unknown.
fn resolve_final_state<'h>(
    key: &str,
    reads: &[&'h FinalRead],
    errors: &mut Vec<Error>,
) -> FinalState<'h> {
    let merged: Vec<&'h FinalRead> = reads
        .iter()
        .copied()
        .filter(|read| read.node == MERGED_NODE)
        .collect();
    let (used, source) = if merged.is_empty() {
        (
            reads.to_vec(),
            "the per-node final reads disagree and there is no merged read",
        )
    } else {
        (merged, "its merged final reads disagree")
    };
    let Some(first) = used.first() else {
        return FinalState::NotJudgeable {
            reason: "no final read".to_string(),
        };
    };
    let values = value_set(first);
    if used.iter().any(|read| value_set(read) != values) {
        if used.iter().any(|read| read.node == MERGED_NODE) {
            errors.push(Error::ConflictingMergedReads {
                key: key.to_string(),
            });
        }
        return FinalState::NotJudgeable {
            reason: source.to_string(),
        };
    }
    let siblings = used.iter().map(|read| read.values.len()).max().unwrap_or(0);
    let times: Option<Vec<u64>> = used.iter().map(|read| read.time_ms).collect();
    let read_ms = times.and_then(|times| Some((*times.iter().min()?, *times.iter().max()?)));
    FinalState::Judged {
        values,
        siblings,
        read_ms,
    }
}
