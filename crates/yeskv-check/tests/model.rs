//! Property tests against a reference model of a correct DVV register store.
//!
//! The model keeps, per key, the multiset of sibling values. A write of `v` carrying the
//! context of a read that returned `saw` leaves `(state − saw) ∪ {v}` — with unique values this
//! is exactly what dotted version vectors do: the context dominates the versions it saw and
//! nothing else. A delete leaves `state − saw`. Concurrent clients interleave freely; a write's
//! context may come from a stale snapshot (but never one older than the client's own last
//! write: read-your-writes, as the workloads do). Outcomes: applied and acknowledged; applied
//! but reported indeterminate (sometimes applied twice, as a retried request would); not
//! applied and reported failed or indeterminate; indeterminate and applied much later (a hint
//! delivered after the client gave up); or never completed. The final state is the model's.
//!
//! Properties: every such history passes; dropping an acknowledged write from the final state
//! is caught as a lost write; putting a deleted value back is caught as a resurrection.

mod common;

use std::collections::{BTreeMap, VecDeque};

use common::{delete_op, read_op, write_op, Builder};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use yeskv_check::history::{History, Op, Status};
use yeskv_check::{check, Options, ViolationKind};

/// One scheduling decision: which client moves, and two random bytes for what it does.
#[derive(Clone, Debug)]
struct Step {
    process: u8,
    choice: u8,
    aux: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(process, choice, aux)| Step {
        process,
        choice,
        aux,
    })
}

type State = BTreeMap<String, Vec<String>>;

struct Outstanding {
    op: Op,
    applied: bool,
}

#[derive(Default)]
struct Client {
    outstanding: Option<Outstanding>,
    /// The oldest snapshot this client may read (its own last applied write is in it).
    snapshot_min: usize,
}

struct Model {
    /// Every state the store went through; `states[0]` is empty.
    states: Vec<State>,
    clients: Vec<Client>,
    keys: Vec<String>,
    builder: Builder,
    values_written: u64,
    /// Indeterminate writes that will be applied later (key, value, saw).
    delayed: VecDeque<(String, String, Vec<String>)>,
}

impl Model {
    fn new(clients: usize, keys: usize) -> Self {
        Model {
            states: vec![State::new()],
            clients: (0..clients).map(|_| Client::default()).collect(),
            keys: (0..keys).map(|key| format!("k{key}")).collect(),
            builder: Builder::new(),
            values_written: 0,
            delayed: VecDeque::new(),
        }
    }

    fn current(&self) -> &State {
        self.states.last().expect("states start non-empty")
    }

    fn snapshot(&self, client: usize, aux: u8) -> usize {
        let low = self.clients[client].snapshot_min;
        let high = self.states.len() - 1;
        low + usize::from(aux / 8) % (high - low + 1)
    }

    /// Applies a write (`value` is `Some`) or a delete of the versions in `saw`.
    fn apply(&mut self, key: &str, value: Option<&str>, saw: &[String]) {
        let mut state = self.current().clone();
        let siblings = state.entry(key.to_string()).or_default();
        siblings.retain(|sibling| !saw.contains(sibling));
        if let Some(value) = value {
            siblings.push(value.to_string());
        }
        self.states.push(state);
    }

    fn apply_op(&mut self, op: &Op) {
        match op {
            Op::Write {
                key, value, saw, ..
            } => self.apply(key, Some(value), saw),
            Op::Delete { key, saw } => self.apply(key, None, saw),
            _ => {}
        }
    }

    fn siblings_at(&self, snapshot: usize, key: &str) -> Vec<String> {
        self.states[snapshot].get(key).cloned().unwrap_or_default()
    }

    fn step(&mut self, step: &Step) {
        if step.aux.is_multiple_of(7) {
            if let Some((key, value, saw)) = self.delayed.pop_front() {
                self.apply(&key, Some(&value), &saw);
            }
        }
        let client = usize::from(step.process) % self.clients.len();
        let process = client as u64;
        let Some(outstanding) = self.clients[client].outstanding.take() else {
            let key = self.keys[usize::from(step.aux) % self.keys.len()].clone();
            let snapshot = self.snapshot(client, step.aux);
            let saw = self.siblings_at(snapshot, &key);
            let saw: Vec<&str> = saw.iter().map(String::as_str).collect();
            let op = match step.choice % 8 {
                0 | 1 => read_op(&key, &[]),
                6 => delete_op(&key, &saw),
                kind => {
                    self.values_written += 1;
                    let value = format!("v{}", self.values_written);
                    write_op(&key, &value, if kind == 5 { &[] } else { &saw })
                }
            };
            self.builder.invoke(process, op.clone());
            self.clients[client].outstanding = Some(Outstanding { op, applied: false });
            return;
        };
        let Outstanding { op, applied } = outstanding;
        match &op {
            Op::Read { key, .. } => {
                if step.choice % 4 == 3 {
                    self.builder.event(process, Status::Info, op.clone());
                } else {
                    let snapshot = self.snapshot(client, step.aux);
                    let values = self.siblings_at(snapshot, key);
                    let values: Vec<&str> = values.iter().map(String::as_str).collect();
                    self.builder
                        .event(process, Status::Ok, read_op(key, &values));
                }
            }
            _ if !applied => match step.choice % 8 {
                0..=4 => {
                    self.apply_op(&op);
                    self.clients[client].snapshot_min = self.states.len() - 1;
                    self.clients[client].outstanding = Some(Outstanding { op, applied: true });
                }
                5 => {
                    self.builder.event(process, Status::Fail, op);
                }
                6 => {
                    self.builder.event(process, Status::Info, op);
                }
                _ => {
                    if let Op::Write {
                        key, value, saw, ..
                    } = &op
                    {
                        self.delayed
                            .push_back((key.clone(), value.clone(), saw.clone()));
                    }
                    self.builder.event(process, Status::Info, op);
                }
            },
            _ => {
                if step.choice % 4 == 3 {
                    if step.aux.is_multiple_of(2) && matches!(op, Op::Write { .. }) {
                        // A retry that applied the write a second time: another sibling.
                        self.apply_op(&op);
                        self.clients[client].snapshot_min = self.states.len() - 1;
                    }
                    self.builder.event(process, Status::Info, op);
                } else {
                    self.builder.event(process, Status::Ok, op);
                }
            }
        }
    }

    /// The history, with the model's final state as the merged read and on three replicas,
    /// and digests that agree right after healing.
    fn finish(mut self) -> History {
        let final_state = self.current().clone();
        for key in &self.keys {
            let values = final_state.get(key).cloned().unwrap_or_default();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            self.builder.merged(key, &values);
            for node in ["n1", "n2", "n3"] {
                self.builder.final_read(node, key, &values);
            }
        }
        let healed_at_ms = self.builder.history.events.len() as u64 + 10;
        self.builder.healed_at(healed_at_ms);
        for node in ["n1", "n2", "n3"] {
            for partition in 0..3 {
                self.builder
                    .digest(healed_at_ms + 5, node, partition, &format!("d{partition}"));
            }
        }
        self.builder.build()
    }
}

fn model_history(clients: usize, keys: usize, steps: &[Step]) -> History {
    let mut model = Model::new(clients, keys);
    for step in steps {
        model.step(step);
    }
    model.finish()
}

fn histories() -> impl Strategy<Value = History> {
    (
        1usize..=5,
        1usize..=3,
        prop::collection::vec(step(), 1..250),
    )
        .prop_map(|(clients, keys, steps)| model_history(clients, keys, &steps))
}

/// Acknowledged writes present in the merged final state that no possibly-applied delete saw:
/// dropping one of them can only be explained by the store losing it.
fn droppable(history: &History) -> Vec<(String, String)> {
    let deleted_saw: Vec<(&str, &String)> = history
        .events
        .iter()
        .filter(|event| event.status != Status::Fail)
        .filter_map(|event| match &event.op {
            Op::Delete { key, saw } => Some(saw.iter().map(move |value| (key.as_str(), value))),
            _ => None,
        })
        .flatten()
        .collect();
    let merged: Vec<(&str, &String)> = history
        .final_reads
        .iter()
        .filter(|read| read.node == "merged")
        .flat_map(|read| {
            read.values
                .iter()
                .map(move |value| (read.key.as_str(), value))
        })
        .collect();
    history
        .events
        .iter()
        .filter(|event| event.status == Status::Ok)
        .filter_map(|event| match &event.op {
            Op::Write { key, value, .. }
                if merged.contains(&(key.as_str(), value))
                    && !deleted_saw.contains(&(key.as_str(), value)) =>
            {
                Some((key.clone(), value.clone()))
            }
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn correct_store_histories_pass(history in histories()) {
        let report = check(&history, &Options::default());
        prop_assert!(report.ok(), "{report:#?}");
        prop_assert_eq!(report.not_judgeable, 0);
        prop_assert_eq!(report.converged_ms, Some(5));
    }

    #[test]
    fn dropping_an_acknowledged_write_is_caught(history in histories(), pick in any::<usize>()) {
        let candidates = droppable(&history);
        if candidates.is_empty() {
            return Ok(());
        }
        let (key, value) = candidates[pick % candidates.len()].clone();
        let mut broken = history;
        for read in broken.final_reads.iter_mut().filter(|read| read.key == key) {
            read.values.retain(|sibling| *sibling != value);
        }
        let report = check(&broken, &Options::default());
        prop_assert!(report.lost >= 1);
        prop_assert!(report.violations.iter().any(|violation| {
            violation.kind == ViolationKind::LostWrite
                && violation.value.as_deref() == Some(value.as_str())
        }), "{value} on {key} not flagged: {report:#?}");
    }

    #[test]
    fn a_deleted_value_coming_back_is_caught(history in histories(), pick in any::<usize>()) {
        let acked: Vec<&String> = history
            .events
            .iter()
            .filter(|event| event.status == Status::Ok)
            .filter_map(|event| match &event.op {
                Op::Write { value, .. } => Some(value),
                _ => None,
            })
            .collect();
        let deleted: Vec<(String, String)> = history
            .events
            .iter()
            .filter(|event| event.status == Status::Ok)
            .filter_map(|event| match &event.op {
                Op::Delete { key, saw } => Some(saw.iter().map(|value| (key.clone(), value.clone()))),
                _ => None,
            })
            .flatten()
            .filter(|(_, value)| acked.contains(&value))
            .collect();
        if deleted.is_empty() {
            return Ok(());
        }
        let (key, value) = deleted[pick % deleted.len()].clone();
        let mut broken = history;
        for read in broken.final_reads.iter_mut().filter(|read| read.key == key) {
            read.values.push(value.clone());
        }
        let report = check(&broken, &Options::default());
        prop_assert!(report.resurrected >= 1);
        prop_assert!(report.violations.iter().any(|violation| {
            violation.kind == ViolationKind::Resurrected
                && violation.value.as_deref() == Some(value.as_str())
        }), "{value} on {key} not flagged: {report:#?}");
    }
}

/// The generator does produce the interesting cases (else the properties prove little).
#[test]
fn the_model_exercises_every_outcome() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut totals = [0usize; 5];
    let mut with_siblings = 0;
    let mut droppable_histories = 0;
    for _ in 0..200 {
        let history = histories()
            .new_tree(&mut runner)
            .expect("a history")
            .current();
        let report = check(&history, &Options::default());
        totals[0] += report.acked;
        totals[1] += report.indeterminate;
        totals[2] += report.failed;
        totals[3] += report.pending;
        totals[4] += history
            .events
            .iter()
            .filter(|event| event.status == Status::Ok && matches!(event.op, Op::Delete { .. }))
            .count();
        if history.final_reads.iter().any(|read| read.values.len() > 1) {
            with_siblings += 1;
        }
        if !droppable(&history).is_empty() {
            droppable_histories += 1;
        }
    }
    assert!(
        totals.iter().all(|&total| total > 0),
        "acked, info, fail, pending, deletes: {totals:?}"
    );
    assert!(
        with_siblings > 20,
        "{with_siblings} histories with siblings"
    );
    assert!(
        droppable_histories > 100,
        "{droppable_histories} histories with a droppable write"
    );
}
