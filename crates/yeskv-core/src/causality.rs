//! Causality: actors, dots, version vectors and causal contexts.
//!
//! yeskv tracks causality with *server-side actors* (Dynamo §4.4; Riak's `vnode_vclocks`): only a
//! replica that coordinates a write mints a new event, never the client. An [`Actor`] is a node id
//! plus an *epoch* that is chosen at random whenever the node may have lost state (a fresh data
//! directory, or a start after an unclean stop). A dot `(actor, n)` is therefore never minted twice
//! for different values even if a node forgets what it wrote: reusing a dot is exactly the riak_kv
//! "kv679" bug, where a replica that lost its data re-issued old dots and its new writes were
//! silently discarded as "already seen" by the other replicas.
//!
//! A [`VersionVector`] maps actors to counters and stands for the *downward-closed* set of dots
//! `{(a, i) | 1 <= i <= vv[a]}`. Object clocks are always downward closed because every replica
//! receives whole objects, and an actor's counter for a key only grows on the replica that owns it.
//!
//! A [`CausalContext`] is what a client holds: a version vector (what a read saw) plus a few loose
//! dots (the writes the client made itself since, which are *not* downward closed: writing dot
//! `(a, 5)` says nothing about a concurrent `(a, 4)` the client never read). A write carrying a
//! context supersedes exactly the siblings whose dots the context covers.

use std::collections::BTreeMap;
use std::fmt;

/// The largest dot counter there can be: an actor would need 2^62 writes to reach it. Decoders
/// refuse larger ones (forged or damaged: the next counter would overflow), so counting up from
/// any decoded counter never wraps.
pub const COUNTER_MAX: u64 = 1 << 62;

/// Why a text is not a [`NodeId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidNodeId(String);

/// A node's name in the cluster (`n1`, `shop-eu-3`, ...). Non-empty, at most
/// [`NodeId::LEN_MAX`] bytes, printable ASCII.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Longest accepted node id in bytes.
    pub const LEN_MAX: usize = 64;

    /// Validates and wraps a node id.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidNodeId> {
        let id = id.into();
        if id.is_empty() || id.len() > Self::LEN_MAX {
            return Err(InvalidNodeId(format!(
                "node id must be 1 to {} bytes, got {}",
                Self::LEN_MAX,
                id.len()
            )));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(InvalidNodeId(format!(
                "node id {id:?} may only contain ASCII letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(NodeId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who minted an event: a node in one incarnation of its data (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor {
    /// The node.
    pub node: NodeId,
    /// Random, chosen anew whenever the node may have lost state, so dots are never reused.
    pub epoch: u64,
}

impl Actor {
    /// An actor for `node` in `epoch`.
    pub fn new(node: NodeId, epoch: u64) -> Self {
        Actor { node, epoch }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:x}", self.node, self.epoch)
    }
}

/// One event: the `counter`-th write minted by `actor` for a key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// Who minted it.
    pub actor: Actor,
    /// 1-based, per actor and key.
    pub counter: u64,
}

/// A version vector: for each actor, how many of its events are known (downward closed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: BTreeMap<Actor, u64>,
}

impl VersionVector {
    /// The empty vector (has seen nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter known for `actor` (0 when none).
    pub fn get(&self, actor: &Actor) -> u64 {
        self.entries.get(actor).copied().unwrap_or(0)
    }

    /// Raises `actor`'s counter to at least `counter`.
    pub fn raise(&mut self, actor: &Actor, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.entries.get_mut(actor) {
            Some(c) => *c = (*c).max(counter),
            None => {
                self.entries.insert(actor.clone(), counter);
            }
        }
    }

    /// Whether this vector has seen `dot`.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Pointwise maximum: afterwards `self` has seen everything either had seen.
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, counter) in &other.entries {
            self.raise(actor, *counter);
        }
    }

    /// Whether `self` has seen everything `other` has (`self >= other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(a, c)| self.get(a) >= *c)
    }

    /// Number of actors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no event is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(actor, counter)` pairs in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&Actor, u64)> {
        self.entries.iter().map(|(a, c)| (a, *c))
    }
}

impl FromIterator<(Actor, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (Actor, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (a, c) in iter {
            vv.raise(&a, c);
        }
        vv
    }
}

/// What a client knows about a key: a read's version vector plus the loose dots of its own writes.
///
/// Invariant (kept by [`CausalContext::normalize`]): no loose dot is already covered by `seen`, and
/// no loose dot is the next event of `seen` (such dots are folded into `seen`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CausalContext {
    /// Downward-closed knowledge, from reads.
    pub seen: VersionVector,
    /// Individual events known beyond `seen`, from the client's own writes.
    pub dots: Vec<Dot>,
}

impl CausalContext {
    /// Longest list of loose dots accepted in a token. An actor's counters come from one
    /// sequence over all keys, so a client's successive writes seldom fold into `seen`: one that
    /// writes many times without reading carries up to this many (the oldest are dropped).
    pub const DOTS_MAX: usize = 64;

    /// The empty context: supersedes nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A context that has seen exactly `vv` (what a read returns).
    pub fn from_seen(vv: VersionVector) -> Self {
        CausalContext {
            seen: vv,
            dots: Vec::new(),
        }
    }

    /// The highest counter of `actor` the context names, in `seen` or among its loose dots (0
    /// when none).
    pub fn max_counter(&self, actor: &Actor) -> u64 {
        self.dots
            .iter()
            .filter(|d| &d.actor == actor)
            .map(|d| d.counter)
            .fold(self.seen.get(actor), u64::max)
    }

    /// Whether the context covers `dot`, i.e. a write carrying it supersedes that sibling.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.seen.contains(dot) || self.dots.contains(dot)
    }

    /// Adds the dot of a write made with this context and normalizes.
    pub fn with_dot(mut self, dot: Dot) -> Self {
        self.dots.push(dot);
        self.normalize();
        self
    }

    /// Folds dots that extend `seen` contiguously into it, drops covered dots, sorts the rest,
    /// and keeps at most [`Self::DOTS_MAX`] loose dots (the oldest are dropped: forgetting a dot
    /// only makes a later write supersede less, never more).
    pub fn normalize(&mut self) {
        self.dots.sort();
        self.dots.dedup();
        loop {
            let before = self.dots.len();
            let seen = &mut self.seen;
            self.dots.retain(|d| {
                let have = seen.get(&d.actor);
                if d.counter <= have {
                    false
                } else if have.checked_add(1) == Some(d.counter) {
                    seen.raise(&d.actor, d.counter);
                    false
                } else {
                    true
                }
            });
            if self.dots.len() == before {
                break;
            }
        }
        if self.dots.len() > Self::DOTS_MAX {
            // Keep the newest dots per the global order; older ones are forgotten.
            self.dots.sort_by_key(|d| std::cmp::Reverse(d.counter));
            self.dots.truncate(Self::DOTS_MAX);
            self.dots.sort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(n: &str) -> Actor {
        Actor::new(NodeId::new(n).expect("valid"), 7)
    }

    #[test]
    fn node_id_validation() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(NodeId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn context_folds_contiguous_dots() {
        let a = actor("a");
        let ctx = CausalContext::empty()
            .with_dot(Dot {
                actor: a.clone(),
                counter: 1,
            })
            .with_dot(Dot {
                actor: a.clone(),
                counter: 3,
            });
        assert_eq!(ctx.seen.get(&a), 1);
        assert_eq!(ctx.dots.len(), 1);
        let ctx = ctx.with_dot(Dot {
            actor: a.clone(),
            counter: 2,
        });
        assert_eq!(ctx.seen.get(&a), 3);
        assert!(ctx.dots.is_empty());
    }

    #[test]
    fn descends_and_merge() {
        let (a, b) = (actor("a"), actor("b"));
        let x: VersionVector = [(a.clone(), 2)].into_iter().collect();
        let y: VersionVector = [(a.clone(), 1), (b.clone(), 1)].into_iter().collect();
        assert!(!x.descends(&y) && !y.descends(&x));
        let mut z = x.clone();
        z.merge(&y);
        assert!(z.descends(&x) && z.descends(&y));
        assert_eq!(z.get(&a), 2);
        assert_eq!(z.get(&b), 1);
    }
}
