//! Server-side data types — cart, counter, set — as state-based CRDTs.
//!
//! A data-type key is an ordinary object ([`crate::object`]): each sibling's value is an encoded
//! [`DtState`]. The coordinator of an operation joins the states of every sibling it holds,
//! applies the operation, and writes the result as a new sibling whose context is the whole
//! object clock, so it supersedes every sibling it folded in (nothing is lost: the new state
//! contains them). Concurrent operations at two coordinators leave two siblings; the next read
//! joins them and the next operation folds them. So every replication path (quorum, sloppy
//! quorum, hints, read repair, anti-entropy, transfer, cross-region) carries data types
//! unchanged, and clients never see siblings.
//!
//! ## The state: tagged entries and per-item remove contexts
//! A state is a set of *entries* `(item, dot) → quantity` and, per item, the version vector of
//! what removes of that item have seen. The dot of an entry is the dot of the write that made it
//! (unique cluster-wide), and an entry is dead once its item's remove context covers its dot.
//! [`DtState::join`] is union of entries, pointwise maximum of remove contexts, then dropping
//! covered entries: commutative, associative and idempotent (property-tested below), so replicas
//! converge whatever the order or repetition of merges.
//!
//! - **cart** (an add-wins map of item → quantity): `add` creates an entry with the added
//!   quantity and folds this actor's earlier entries of the item into it (so a cart holds at most
//!   one entry per item and coordinating actor); `remove` raises the item's remove context to the
//!   client's context (what it read) or, without one, to everything the coordinator holds; `set`
//!   is a remove followed by an add. An entry the remove did not see — a concurrent add — survives:
//!   add wins, with the quantity that add brought. Two concurrent adds of one item both count
//!   (quantities add up), and so do two concurrent `set`s (documented: a `set` removes what it saw,
//!   nothing else). An item whose live quantity is 0 or less is not shown.
//! - **counter** (a PN-counter): one entry per actor holding that actor's running total; `incr`
//!   replaces the actor's entry with total + by. The value is the sum of entries.
//! - **set** (an add-wins set, ORSWOT-like): an entry per member and adding write; `add` folds
//!   the member's entries the coordinator holds into the new one; `remove` as for a cart.
//!
//! Remove contexts are kept for every item ever removed (a version vector each): a late copy of
//! an entry the remove saw must stay dead. They are small and bounded by the object size limit.

use std::collections::BTreeMap;

use crate::bucket::Datatype;
use crate::causality::{Actor, Dot, VersionVector};
use crate::codec::{put_actor, put_bytes, put_varint, Reader};
use crate::error::Error;

/// Format byte of an encoded [`DtState`].
pub const STATE_FORMAT: u8 = 1;

/// Longest item (cart) or member (set) name, in bytes.
pub const ITEM_BYTES_MAX: usize = 512;

/// Most members one set operation may name.
pub const MEMBERS_PER_OP_MAX: usize = 1024;

/// Largest quantity one cart operation may carry.
pub const QTY_MAX: u64 = 1 << 40;

/// One operation on a data-type key (also sent to the node that coordinates it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DtOp {
    /// Add `qty` (≥ 1) of `item` to a cart.
    CartAdd {
        /// The item.
        item: String,
        /// How many.
        qty: u64,
    },
    /// Remove `item` from a cart (what the context saw of it).
    CartRemove {
        /// The item.
        item: String,
    },
    /// Set `item`'s quantity (0 removes it).
    CartSet {
        /// The item.
        item: String,
        /// The new quantity.
        qty: u64,
    },
    /// Add `by` (possibly negative) to a counter.
    CounterIncr {
        /// The increment.
        by: i64,
    },
    /// Add members to a set.
    SetAdd {
        /// The members.
        members: Vec<String>,
    },
    /// Remove members from a set (what the context saw of them).
    SetRemove {
        /// The members.
        members: Vec<String>,
    },
}

/// Why an operation is refused before anything is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The operation is malformed (`400`).
    #[error("{0}")]
    Malformed(String),
    /// The operation is for another data type than the bucket's (`409`).
    #[error("a {op} operation on a {bucket} bucket")]
    WrongType {
        /// The operation's data type.
        op: Datatype,
        /// The bucket's.
        bucket: Datatype,
    },
}

impl DtOp {
    /// The data type the operation applies to.
    pub fn datatype(&self) -> Datatype {
        match self {
            DtOp::CartAdd { .. } | DtOp::CartRemove { .. } | DtOp::CartSet { .. } => Datatype::Cart,
            DtOp::CounterIncr { .. } => Datatype::Counter,
            DtOp::SetAdd { .. } | DtOp::SetRemove { .. } => Datatype::Set,
        }
    }

    /// Checks the operation's fields and that it applies to a `bucket` bucket.
    pub fn check(&self, bucket: Datatype) -> Result<(), OpError> {
        let bad = |m: String| Err(OpError::Malformed(m));
        let name = |what: &str, s: &str| -> Result<(), OpError> {
            if s.is_empty() || s.len() > ITEM_BYTES_MAX {
                return Err(OpError::Malformed(format!(
                    "{what} must be 1 to {ITEM_BYTES_MAX} bytes, got {}",
                    s.len()
                )));
            }
            Ok(())
        };
        match self {
            DtOp::CartAdd { item, qty } => {
                name("item", item)?;
                if *qty == 0 || *qty > QTY_MAX {
                    return bad(format!("qty of an add must be 1 to {QTY_MAX}, got {qty}"));
                }
            }
            DtOp::CartSet { item, qty } => {
                name("item", item)?;
                if *qty > QTY_MAX {
                    return bad(format!("qty must be at most {QTY_MAX}, got {qty}"));
                }
            }
            DtOp::CartRemove { item } => name("item", item)?,
            DtOp::CounterIncr { by } => {
                if by.unsigned_abs() > QTY_MAX {
                    return bad(format!("by must be within ±{QTY_MAX}, got {by}"));
                }
            }
            DtOp::SetAdd { members } | DtOp::SetRemove { members } => {
                if members.is_empty() || members.len() > MEMBERS_PER_OP_MAX {
                    return bad(format!(
                        "members must name 1 to {MEMBERS_PER_OP_MAX} members, got {}",
                        members.len()
                    ));
                }
                for m in members {
                    name("a member", m)?;
                }
            }
        }
        if self.datatype() != bucket {
            return Err(OpError::WrongType {
                op: self.datatype(),
                bucket,
            });
        }
        Ok(())
    }
}

/// What a data-type key holds, as shown to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtValue {
    /// Items with a positive quantity.
    Cart(BTreeMap<String, i64>),
    /// The counter's value.
    Counter(i64),
    /// The members, sorted.
    Set(Vec<String>),
}

/// The state of one data-type key (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtState {
    kind: Datatype,
    entries: BTreeMap<(String, Dot), i64>,
    removed: BTreeMap<String, VersionVector>,
}

/// The item name counter entries use.
const COUNTER_ITEM: &str = "";

impl DtState {
    /// The empty state of `kind`.
    pub fn new(kind: Datatype) -> Self {
        DtState {
            kind,
            entries: BTreeMap::new(),
            removed: BTreeMap::new(),
        }
    }

    /// The data type.
    pub fn kind(&self) -> Datatype {
        self.kind
    }

    /// Whether nothing was ever written or removed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.removed.is_empty()
    }

    /// Merges `other` into `self` (module docs). States of different kinds do not merge: the
    /// caller checks kinds first (a bucket's data type never changes while it holds data).
    pub fn join(&mut self, other: &DtState) {
        debug_assert_eq!(self.kind, other.kind);
        for (item, vv) in &other.removed {
            self.removed.entry(item.clone()).or_default().merge(vv);
        }
        for (k, q) in &other.entries {
            self.entries.entry(k.clone()).or_insert(*q);
        }
        self.drop_removed();
    }

    fn drop_removed(&mut self) {
        let removed = &self.removed;
        self.entries
            .retain(|(item, dot), _| !removed.get(item).is_some_and(|vv| vv.contains(dot)));
    }

    /// Removes what `seen` covers of `item`.
    fn remove(&mut self, item: &str, seen: &VersionVector) {
        self.removed
            .entry(item.to_string())
            .or_default()
            .merge(seen);
        self.drop_removed();
    }

    /// Folds `actor`'s entries of `item` away; returns their total.
    fn fold_own(&mut self, item: &str, actor: &Actor) -> i64 {
        let own: Vec<(String, Dot)> = self
            .entries
            .keys()
            .filter(|(i, d)| i == item && &d.actor == actor)
            .cloned()
            .collect();
        let mut total = 0i64;
        let mut top = 0;
        for k in own {
            top = top.max(k.1.counter);
            total = total.saturating_add(self.entries.remove(&k).unwrap_or_default());
        }
        if top > 0 {
            self.removed
                .entry(item.to_string())
                .or_default()
                .raise(actor, top);
        }
        total
    }

    /// Applies `op` as a new write with dot `dot` (which no entry carries yet). `seen` is what a
    /// remove removes: the client's context if it sent one, else everything the coordinator
    /// holds (its object clock). The caller has checked `op` against the kind.
    pub fn apply(&mut self, op: &DtOp, dot: &Dot, seen: &VersionVector) {
        let add = |s: &mut DtState, item: &str, q: i64| {
            s.entries.insert((item.to_string(), dot.clone()), q);
        };
        match op {
            DtOp::CartAdd { item, qty } => {
                let total = self.fold_own(item, &dot.actor);
                add(self, item, total.saturating_add(*qty as i64));
            }
            DtOp::CartRemove { item } => self.remove(item, seen),
            DtOp::CartSet { item, qty } => {
                self.remove(item, seen);
                // Entries of this actor the context did not cover are concurrent adds the
                // client did not see: they keep counting, as any concurrent add does.
                if *qty > 0 {
                    add(self, item, *qty as i64);
                }
            }
            DtOp::CounterIncr { by } => {
                let total = self.fold_own(COUNTER_ITEM, &dot.actor);
                add(self, COUNTER_ITEM, total.saturating_add(*by));
            }
            DtOp::SetAdd { members } => {
                for m in members {
                    // Every entry of the member held here is folded into the new one (a set
                    // entry carries no quantity, so folding other actors' entries loses nothing).
                    let held: Vec<Dot> = self
                        .entries
                        .keys()
                        .filter(|(i, _)| i == m)
                        .map(|(_, d)| d.clone())
                        .collect();
                    let vv = self.removed.entry(m.clone()).or_default();
                    for d in held {
                        vv.raise(&d.actor, d.counter);
                    }
                    self.drop_removed();
                    add(self, m, 1);
                }
            }
            DtOp::SetRemove { members } => {
                for m in members {
                    self.remove(m, seen);
                }
            }
        }
    }

    /// The value clients see.
    pub fn value(&self) -> DtValue {
        match self.kind {
            Datatype::Cart => {
                let mut items: BTreeMap<String, i64> = BTreeMap::new();
                for ((item, _), q) in &self.entries {
                    let t = items.entry(item.clone()).or_default();
                    *t = t.saturating_add(*q);
                }
                items.retain(|_, q| *q > 0);
                DtValue::Cart(items)
            }
            Datatype::Counter => DtValue::Counter(
                self.entries
                    .values()
                    .fold(0i64, |acc, q| acc.saturating_add(*q)),
            ),
            Datatype::Set => {
                let mut members: Vec<String> =
                    self.entries.keys().map(|(m, _)| m.clone()).collect();
                members.dedup();
                DtValue::Set(members)
            }
        }
    }

    /// Entries held (for size accounting and tests).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The encoding stored as a sibling's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut actors: BTreeMap<&Actor, u64> = BTreeMap::new();
        for (_, d) in self.entries.keys() {
            actors.insert(&d.actor, 0);
        }
        for vv in self.removed.values() {
            for (a, _) in vv.iter() {
                actors.insert(a, 0);
            }
        }
        for (i, idx) in actors.values_mut().enumerate() {
            *idx = i as u64;
        }
        let mut out = vec![STATE_FORMAT, kind_byte(self.kind)];
        put_varint(&mut out, actors.len() as u64);
        for a in actors.keys() {
            put_actor(&mut out, a);
        }
        put_varint(&mut out, self.entries.len() as u64);
        for ((item, dot), q) in &self.entries {
            put_bytes(&mut out, item.as_bytes());
            put_varint(&mut out, actors[&dot.actor]);
            put_varint(&mut out, dot.counter);
            put_varint(&mut out, zigzag(*q));
        }
        put_varint(&mut out, self.removed.len() as u64);
        for (item, vv) in &self.removed {
            put_bytes(&mut out, item.as_bytes());
            put_varint(&mut out, vv.len() as u64);
            for (a, c) in vv.iter() {
                put_varint(&mut out, actors[a]);
                put_varint(&mut out, c);
            }
        }
        out
    }

    /// Reads [`DtState::encode`]'s output; any other input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<DtState, Error> {
        let mut r = Reader::new(bytes, "data type state");
        let format = r.u8()?;
        if format != STATE_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "data type state",
                version: format,
            });
        }
        let kind = match r.u8()? {
            1 => Datatype::Cart,
            2 => Datatype::Counter,
            3 => Datatype::Set,
            _ => return Err(r.err("unknown data type")),
        };
        let n = r.count(crate::codec::ACTORS_MAX)?;
        let mut actors = Vec::with_capacity(n);
        for _ in 0..n {
            actors.push(r.actor()?);
        }
        let actor = |r: &mut Reader<'_>| -> Result<Actor, Error> {
            let i = r.varint()?;
            actors
                .get(i as usize)
                .cloned()
                .ok_or_else(|| r.err("actor index out of range"))
        };
        let item = |r: &mut Reader<'_>| -> Result<String, Error> {
            let b = r.bytes()?;
            String::from_utf8(b.to_vec()).map_err(|_| r.err("item is not UTF-8"))
        };
        let mut state = DtState::new(kind);
        let entries = r.count(bytes.len())?;
        for _ in 0..entries {
            let it = item(&mut r)?;
            let a = actor(&mut r)?;
            let counter = r.counter()?;
            let q = unzigzag(r.varint()?);
            state.entries.insert((it, Dot { actor: a, counter }), q);
        }
        let removed = r.count(bytes.len())?;
        for _ in 0..removed {
            let it = item(&mut r)?;
            let m = r.count(actors.len())?;
            let mut vv = VersionVector::new();
            for _ in 0..m {
                let a = actor(&mut r)?;
                let c = r.counter()?;
                vv.raise(&a, c);
            }
            state.removed.insert(it, vv);
        }
        r.finish()?;
        Ok(state)
    }
}

fn kind_byte(k: Datatype) -> u8 {
    match k {
        Datatype::Cart => 1,
        Datatype::Counter => 2,
        Datatype::Set => 3,
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Joins encoded states (the visible siblings of a key) into one state of `kind`. A value that
/// is not a state of `kind` is an error (a plain value in a data-type bucket).
pub fn fold<'a>(
    kind: Datatype,
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<DtState, Error> {
    let mut state = DtState::new(kind);
    for v in values {
        let s = DtState::decode(v)?;
        if s.kind != kind {
            return Err(Error::corrupt(
                "data type state",
                format!("a {} state in a {} bucket", s.kind, kind),
            ));
        }
        state.join(&s);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::NodeId;
    use proptest::prelude::*;

    fn actor(i: usize) -> Actor {
        Actor::new(NodeId::new(format!("n{i}")).expect("valid"), 1)
    }

    /// A replica of the model: a state and the clock of every write it has seen.
    #[derive(Clone)]
    struct Model {
        state: DtState,
        clock: VersionVector,
    }

    impl Model {
        fn new(kind: Datatype) -> Self {
            Model {
                state: DtState::new(kind),
                clock: VersionVector::new(),
            }
        }

        fn op(&mut self, who: usize, op: &DtOp, ctx: Option<&VersionVector>) -> Dot {
            let a = actor(who);
            let dot = Dot {
                actor: a.clone(),
                counter: self.clock.get(&a) + 1,
            };
            let seen = ctx.cloned().unwrap_or_else(|| self.clock.clone());
            self.state.apply(op, &dot, &seen);
            self.clock.raise(&a, dot.counter);
            dot
        }

        fn merge(&mut self, other: &Model) {
            self.state.join(&other.state);
            self.clock.merge(&other.clock);
        }
    }

    fn item(i: u8) -> String {
        format!("sku{}", i % 4)
    }

    fn arb_op(kind: Datatype) -> BoxedStrategy<DtOp> {
        match kind {
            Datatype::Cart => prop_oneof![
                (0u8..4, 1u64..5).prop_map(|(i, q)| DtOp::CartAdd {
                    item: item(i),
                    qty: q
                }),
                (0u8..4).prop_map(|i| DtOp::CartRemove { item: item(i) }),
                (0u8..4, 0u64..5).prop_map(|(i, q)| DtOp::CartSet {
                    item: item(i),
                    qty: q
                }),
            ]
            .boxed(),
            Datatype::Counter => (-5i64..6).prop_map(|by| DtOp::CounterIncr { by }).boxed(),
            Datatype::Set => prop_oneof![
                (0u8..4).prop_map(|i| DtOp::SetAdd {
                    members: vec![item(i)]
                }),
                (0u8..4).prop_map(|i| DtOp::SetRemove {
                    members: vec![item(i)]
                }),
            ]
            .boxed(),
        }
    }

    /// A history: ops at replicas interleaved with merges between replicas.
    #[derive(Clone, Debug)]
    enum Step {
        Op(usize, DtOp),
        Merge(usize, usize),
    }

    fn arb_history(kind: Datatype) -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            prop_oneof![
                (0usize..3, arb_op(kind)).prop_map(|(r, op)| Step::Op(r, op)),
                (0usize..3, 0usize..3).prop_map(|(a, b)| Step::Merge(a, b)),
            ],
            0..40,
        )
    }

    fn run(kind: Datatype, history: &[Step]) -> Vec<Model> {
        let mut replicas = vec![Model::new(kind); 3];
        for step in history {
            match step {
                Step::Op(r, op) => {
                    replicas[*r].op(*r, op, None);
                }
                Step::Merge(a, b) => {
                    let other = replicas[*b].clone();
                    replicas[*a].merge(&other);
                }
            }
        }
        replicas
    }

    fn kinds() -> impl Strategy<Value = Datatype> {
        prop_oneof![
            Just(Datatype::Cart),
            Just(Datatype::Counter),
            Just(Datatype::Set)
        ]
    }

    proptest! {
        #[test]
        fn laws_hold_on_any_history(kind in kinds(), h in arb_history(Datatype::Cart),
                                    hc in arb_history(Datatype::Counter),
                                    hs in arb_history(Datatype::Set)) {
            let history = match kind { Datatype::Cart => h, Datatype::Counter => hc, Datatype::Set => hs };
            let replicas = run(kind, &history);
            let (a, b, c) = (&replicas[0].state, &replicas[1].state, &replicas[2].state);
            let mut ab = a.clone(); ab.join(b);
            let mut ba = b.clone(); ba.join(a);
            prop_assert_eq!(&ab, &ba, "commutative");
            let mut ab_c = ab.clone(); ab_c.join(c);
            let mut bc = b.clone(); bc.join(c);
            let mut a_bc = a.clone(); a_bc.join(&bc);
            prop_assert_eq!(&ab_c, &a_bc, "associative");
            let mut aa = a.clone(); aa.join(a);
            prop_assert_eq!(&aa, a, "idempotent");
            // Every state survives its encoding.
            for s in [a, b, c, &ab_c] {
                prop_assert_eq!(&DtState::decode(&s.encode()).expect("decodes"), s);
            }
        }

        /// Every increment counts exactly once, whatever the concurrency and merge order.
        #[test]
        fn counters_are_exact(history in arb_history(Datatype::Counter)) {
            let replicas = run(Datatype::Counter, &history);
            let expected: i64 = history.iter().map(|s| match s {
                Step::Op(_, DtOp::CounterIncr { by }) => *by,
                _ => 0,
            }).sum();
            let mut all = replicas[0].clone();
            all.merge(&replicas[1]);
            all.merge(&replicas[2]);
            prop_assert_eq!(all.state.value(), DtValue::Counter(expected));
        }

        /// Adds only: every quantity added counts exactly once.
        #[test]
        fn cart_adds_are_exact(adds in prop::collection::vec((0usize..3, 0u8..4, 1u64..5, any::<bool>()), 0..30)) {
            let mut replicas = vec![Model::new(Datatype::Cart); 3];
            let mut expected: BTreeMap<String, i64> = BTreeMap::new();
            for (r, i, q, merge) in adds {
                replicas[r].op(r, &DtOp::CartAdd { item: item(i), qty: q }, None);
                *expected.entry(item(i)).or_default() += q as i64;
                if merge {
                    let other = replicas[(r + 1) % 3].clone();
                    replicas[r].merge(&other);
                }
            }
            let mut all = replicas[0].clone();
            all.merge(&replicas[1]);
            all.merge(&replicas[2]);
            prop_assert_eq!(all.state.value(), DtValue::Cart(expected));
        }

        /// Decoding never panics, whatever the bytes.
        #[test]
        fn decode_is_total(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = DtState::decode(&bytes);
        }
    }

    #[test]
    fn a_concurrent_add_wins_over_a_remove_that_did_not_see_it() {
        let mut a = Model::new(Datatype::Cart);
        a.op(
            0,
            &DtOp::CartAdd {
                item: "shoe".into(),
                qty: 1,
            },
            None,
        );
        let mut b = a.clone();
        // Device 1 (at replica 0) removes the shoe; device 2 (at replica 1) adds one more.
        a.op(
            0,
            &DtOp::CartRemove {
                item: "shoe".into(),
            },
            None,
        );
        b.op(
            1,
            &DtOp::CartAdd {
                item: "shoe".into(),
                qty: 2,
            },
            None,
        );
        b.op(
            1,
            &DtOp::CartAdd {
                item: "hat".into(),
                qty: 1,
            },
            None,
        );
        a.merge(&b);
        b.merge(&a);
        assert_eq!(a.state, b.state);
        let DtValue::Cart(items) = a.state.value() else {
            panic!("a cart")
        };
        // The remove saw the first shoe only; the concurrent add of two survives.
        assert_eq!(items.get("shoe"), Some(&2));
        assert_eq!(items.get("hat"), Some(&1));
    }

    #[test]
    fn a_removed_item_stays_removed_when_old_copies_come_back() {
        let mut a = Model::new(Datatype::Cart);
        a.op(
            0,
            &DtOp::CartAdd {
                item: "shoe".into(),
                qty: 1,
            },
            None,
        );
        let stale = a.clone();
        a.op(
            0,
            &DtOp::CartRemove {
                item: "shoe".into(),
            },
            None,
        );
        a.merge(&stale);
        assert_eq!(a.state.value(), DtValue::Cart(BTreeMap::new()));
        // And added again, it is back.
        a.op(
            0,
            &DtOp::CartAdd {
                item: "shoe".into(),
                qty: 3,
            },
            None,
        );
        a.merge(&stale);
        assert_eq!(
            a.state.value(),
            DtValue::Cart(BTreeMap::from([("shoe".into(), 3)]))
        );
    }

    #[test]
    fn a_remove_with_a_context_removes_only_what_it_saw() {
        let mut a = Model::new(Datatype::Set);
        a.op(
            0,
            &DtOp::SetAdd {
                members: vec!["x".into()],
            },
            None,
        );
        let read = a.clock.clone();
        a.op(
            0,
            &DtOp::SetAdd {
                members: vec!["y".into()],
            },
            None,
        );
        a.op(
            0,
            &DtOp::SetRemove {
                members: vec!["x".into(), "y".into()],
            },
            Some(&read),
        );
        assert_eq!(a.state.value(), DtValue::Set(vec!["y".into()]));
    }

    #[test]
    fn ops_are_checked_against_the_bucket() {
        let add = DtOp::CartAdd {
            item: "a".into(),
            qty: 1,
        };
        assert!(add.check(Datatype::Cart).is_ok());
        assert!(matches!(
            add.check(Datatype::Set),
            Err(OpError::WrongType { .. })
        ));
        let zero = DtOp::CartAdd {
            item: "a".into(),
            qty: 0,
        };
        assert!(matches!(
            zero.check(Datatype::Cart),
            Err(OpError::Malformed(_))
        ));
        let empty = DtOp::SetAdd { members: vec![] };
        assert!(matches!(
            empty.check(Datatype::Set),
            Err(OpError::Malformed(_))
        ));
        let long = DtOp::CartRemove {
            item: "x".repeat(ITEM_BYTES_MAX + 1),
        };
        assert!(matches!(
            long.check(Datatype::Cart),
            Err(OpError::Malformed(_))
        ));
    }
}
