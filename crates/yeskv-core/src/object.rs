//! The object: everything a replica knows about one key, as a dotted version vector set.
//!
//! An [`Object`] is a *clock* (a downward-closed [`VersionVector`] of every write this replica has
//! seen for the key) and the *siblings*: the versions no seen write has superseded, each tagged
//! with the [`Dot`] of the write that made it. This is the DVV set of Almeida, Baquero, Preguiça et
//! al. in its explicit form (riak_kv's `dvvset` stores the same information packed per actor).
//!
//! Two operations change objects, and their laws are what make "no acknowledged write is lost"
//! hold:
//! - [`Object::update`] — a client write arriving at a coordinating replica with a
//!   [`CausalContext`]: the siblings the context covers are removed, every other sibling stays, and
//!   a new sibling with a fresh dot of the coordinator's actor is added. A write with the empty
//!   context removes nothing; two writes without each other's dots are both kept.
//! - [`Object::sync`] — merging what two replicas know: a sibling survives unless the other side
//!   has seen its dot and dropped it. `sync` is commutative, associative and idempotent (a
//!   join-semilattice), so replicas converge whatever the order, duplication or delay of messages.
//!
//! Time is an argument (`now_ms`), never read here: expiry (TTL) is an absolute instant carried by
//! each [`Version`], so every replica agrees on it and no repair can bring an expired value back.

use crate::causality::{Actor, CausalContext, Dot, VersionVector};

/// One stored version: a value or a tombstone, with its write time and optional expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The value; `None` is a tombstone (a versioned delete).
    pub value: Option<Vec<u8>>,
    /// Wall-clock time of the write at its coordinator, in ms since the Unix epoch.
    pub written_at_ms: u64,
    /// When the version expires (ms since the Unix epoch); `None` never.
    pub expires_at_ms: Option<u64>,
}

impl Version {
    /// A value version.
    pub fn value(value: Vec<u8>, written_at_ms: u64, expires_at_ms: Option<u64>) -> Self {
        Version {
            value: Some(value),
            written_at_ms,
            expires_at_ms,
        }
    }

    /// A tombstone.
    pub fn tombstone(written_at_ms: u64) -> Self {
        Version {
            value: None,
            written_at_ms,
            expires_at_ms: None,
        }
    }

    /// Whether this is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether the version has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }
}

/// A version with the dot of the write that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The write's event.
    pub dot: Dot,
    /// What it wrote.
    pub version: Version,
}

/// Everything one replica knows about one key (see the module docs).
///
/// Invariants: every sibling's dot is contained in `clock`; no two siblings share a dot; siblings
/// are kept sorted by dot (so equal knowledge has equal representation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Object {
    clock: VersionVector,
    siblings: Vec<Sibling>,
}

impl Object {
    /// The object of a key nobody wrote.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an object from decoded parts, checking the invariants.
    pub fn from_parts(
        clock: VersionVector,
        mut siblings: Vec<Sibling>,
    ) -> Result<Self, crate::Error> {
        siblings.sort_by(|a, b| a.dot.cmp(&b.dot));
        for pair in siblings.windows(2) {
            if pair[0].dot == pair[1].dot {
                return Err(crate::Error::corrupt(
                    "object",
                    format!("duplicate dot {:?}", pair[0].dot),
                ));
            }
        }
        if let Some(s) = siblings.iter().find(|s| !clock.contains(&s.dot)) {
            return Err(crate::Error::corrupt(
                "object",
                format!(
                    "sibling dot {}:{} beyond the clock",
                    s.dot.actor, s.dot.counter
                ),
            ));
        }
        Ok(Object { clock, siblings })
    }

    /// Every write this replica has seen for the key.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// All siblings, expired or not, tombstones included.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// Whether the replica has never seen a write of this key.
    pub fn is_empty(&self) -> bool {
        self.clock.is_empty() && self.siblings.is_empty()
    }

    /// The context a read returns: it covers every sibling of this object.
    pub fn context(&self) -> CausalContext {
        CausalContext::from_seen(self.clock.clone())
    }

    /// The siblings a reader sees at `now_ms`: expired versions are hidden (their dots stay in the
    /// clock, so a write with the read's context still supersedes them).
    pub fn visible(&self, now_ms: u64) -> impl Iterator<Item = &Sibling> {
        self.siblings
            .iter()
            .filter(move |s| !s.version.is_expired(now_ms))
    }

    /// Whether a reader at `now_ms` sees no value (nothing, only tombstones, or only expired).
    pub fn is_deleted_at(&self, now_ms: u64) -> bool {
        self.visible(now_ms).all(|s| s.version.is_tombstone())
    }

    /// A client write coordinated by `actor`: removes the siblings `ctx` covers (and expired ones,
    /// which no reader can see any more), keeps all others, and adds `version` under a fresh dot.
    /// Returns the dot of the new sibling.
    ///
    /// The fresh dot's counter exceeds anything known for `actor`, in this object or in `ctx`, so
    /// it is unique as long as `actor` is unique to this replica's incarnation.
    pub fn update(
        &mut self,
        ctx: &CausalContext,
        actor: &Actor,
        version: Version,
        now_ms: u64,
    ) -> Dot {
        self.update_at_least(ctx, actor, 1, version, now_ms)
    }

    /// [`Object::update`] with a lower bound on the fresh dot's counter: the counter is at least
    /// `min_counter`, and still above anything known for `actor` here or in `ctx`.
    ///
    /// A replica passes the next value of a sequence its actor draws from for every key, so
    /// that the dot also exceeds every dot the actor minted for this key *before its copy was
    /// reaped*: a reaped replica no longer knows them, but a replica that has not reaped yet
    /// still holds them in its clock and would take a reused dot for a write it already saw.
    /// Counters then skip values within one key; a clock entry `a: n` still means "saw every
    /// write of `a` up to `n`", of which the skipped values simply were none.
    pub fn update_at_least(
        &mut self,
        ctx: &CausalContext,
        actor: &Actor,
        min_counter: u64,
        version: Version,
        now_ms: u64,
    ) -> Dot {
        self.siblings
            .retain(|s| !ctx.covers(&s.dot) && !s.version.is_expired(now_ms));
        let counter = self
            .clock
            .get(actor)
            .max(ctx.max_counter(actor))
            .saturating_add(1)
            .max(min_counter);
        // Only the downward-closed part of the context joins the clock: loose dots say nothing
        // about the events before them, and claiming them would drop siblings on a later sync.
        self.clock.merge(&ctx.seen);
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };
        self.clock.raise(actor, counter);
        let pos = self
            .siblings
            .binary_search_by(|s| s.dot.cmp(&dot))
            .unwrap_or_else(|p| p);
        self.siblings.insert(
            pos,
            Sibling {
                dot: dot.clone(),
                version,
            },
        );
        dot
    }

    /// The dot [`Object::update_at_least`] would give a write by `actor` with the empty context:
    /// above everything known for `actor` here, and at least `min_counter`.
    pub fn next_dot(&self, actor: &Actor, min_counter: u64) -> Dot {
        Dot {
            actor: actor.clone(),
            counter: self.clock.get(actor).saturating_add(1).max(min_counter),
        }
    }

    /// A write that supersedes every sibling held here (its context is the whole clock): the
    /// fold of a data-type operation, or a last-writer-wins write. `dot` must come from
    /// [`Object::next_dot`] on this object.
    pub fn supersede(&mut self, dot: Dot, version: Version) {
        self.siblings.clear();
        self.clock.raise(&dot.actor, dot.counter);
        self.siblings.push(Sibling { dot, version });
    }

    /// Extends the expiry of every expiring value to at least `expires_at_ms` (a touch).
    /// Returns whether anything changed. Tombstones and values that never expire stay as they
    /// are; the dots do not change (no new version: [`Object::sync`] keeps the later expiry).
    pub fn extend_expiry(&mut self, expires_at_ms: u64) -> bool {
        let mut changed = false;
        for s in &mut self.siblings {
            if let (Some(_), Some(e)) = (&s.version.value, s.version.expires_at_ms) {
                if e < expires_at_ms {
                    s.version.expires_at_ms = Some(expires_at_ms);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Merges what `other` knows into `self` (replica synchronization).
    ///
    /// A sibling is kept if both sides have it, or if the other side has never seen its dot; a
    /// sibling one side has seen and dropped was superseded and goes. Commutative, associative,
    /// idempotent.
    pub fn sync(&mut self, other: &Object) {
        let mut merged = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.siblings, &other.siblings);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.dot.cmp(&y.dot),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Equal => {
                    // One write, possibly with its expiry extended on one side (a touch):
                    // the later expiry wins, so a touch is a lattice join like the rest.
                    let mut s = a[i].clone();
                    if let (Some(x), Some(y)) =
                        (s.version.expires_at_ms, b[j].version.expires_at_ms)
                    {
                        s.version.expires_at_ms = Some(x.max(y));
                    }
                    merged.push(s);
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    if !other.clock.contains(&a[i].dot) {
                        merged.push(a[i].clone());
                    }
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    if !self.clock.contains(&b[j].dot) {
                        merged.push(b[j].clone());
                    }
                    j += 1;
                }
            }
        }
        self.siblings = merged;
        self.clock.merge(&other.clock);
    }

    /// The latest expiry of an *expiring* object: one with at least one sibling, every sibling a
    /// value (not a tombstone) with an expiry. `None` for any other object — one that holds a
    /// tombstone, a value that never expires, or nothing.
    ///
    /// An expiring object leaves by itself: once `now_ms` reaches this instant every sibling is
    /// hidden from reads, and past a grace its whole record may be dropped by the storage
    /// engine on each replica without coordination (no sibling of it can hide a write another
    /// replica still needs: they are all values, and all of them have expired). Such objects are
    /// kept out of anti-entropy ([`crate::tictac::tree_digest`]), so a replica that dropped the
    /// record and one that still holds it compare equal. Expired siblings of an object that is
    /// kept are never pruned one by one: their dots stay in the clock, where they supersede what
    /// they overwrote.
    pub fn expires_at_ms(&self) -> Option<u64> {
        let mut latest: Option<u64> = None;
        for s in &self.siblings {
            match (&s.version.value, s.version.expires_at_ms) {
                (Some(_), Some(exp)) => latest = Some(latest.map_or(exp, |l| l.max(exp))),
                _ => return None,
            }
        }
        latest
    }

    /// Whether the object is expiring ([`Object::expires_at_ms`]) and has expired at `now_ms`:
    /// no reader sees any of it, and it never comes back into a replica that holds nothing of
    /// the key.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_some_and(|t| t <= now_ms)
    }

    /// When this object may be physically removed: once every sibling is a tombstone or expired,
    /// `grace_ms` after the newest of those instants. `None` while any live value remains.
    ///
    /// Removing an object forgets its clock, so the grace must outlast anything that could still
    /// deliver a covered version (hints, repairs) — see `docs/architecture.md`.
    pub fn reap_at_ms(&self, grace_ms: u64) -> Option<u64> {
        let mut latest = 0u64;
        for s in &self.siblings {
            let end = match (&s.version.value, s.version.expires_at_ms) {
                (None, _) => s.version.written_at_ms,
                (Some(_), Some(exp)) => exp,
                (Some(_), None) => return None,
            };
            latest = latest.max(end);
        }
        Some(latest.saturating_add(grace_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::NodeId;

    fn actor(n: &str) -> Actor {
        Actor::new(NodeId::new(n).expect("valid"), 1)
    }

    fn val(s: &str) -> Version {
        Version::value(s.as_bytes().to_vec(), 1, None)
    }

    fn values(o: &Object) -> Vec<String> {
        o.visible(0)
            .map(|s| String::from_utf8_lossy(s.version.value.as_deref().unwrap_or(b"<del>")).into())
            .collect()
    }

    #[test]
    fn blind_writes_become_siblings_and_context_write_resolves() {
        let a = actor("a");
        let mut o = Object::new();
        o.update(&CausalContext::empty(), &a, val("x"), 0);
        o.update(&CausalContext::empty(), &a, val("y"), 0);
        assert_eq!(values(&o), vec!["x", "y"]);
        let ctx = o.context();
        o.update(&ctx, &a, val("z"), 0);
        assert_eq!(values(&o), vec!["z"]);
    }

    #[test]
    fn update_at_least_respects_the_floor_and_what_is_known() {
        let a = actor("a");
        let mut o = Object::new();
        // The floor wins on a fresh key; known counters win when they are higher.
        assert_eq!(
            o.update_at_least(&CausalContext::empty(), &a, 40, val("x"), 0)
                .counter,
            40
        );
        assert_eq!(
            o.update_at_least(&CausalContext::empty(), &a, 7, val("y"), 0)
                .counter,
            41
        );
        let ctx = o.context();
        let mut fresh = Object::new();
        assert_eq!(fresh.update_at_least(&ctx, &a, 1, val("z"), 0).counter, 42);
        // Skipped counters are no writes: a sync keeps both concurrent siblings.
        let mut other = Object::new();
        other.update_at_least(&CausalContext::empty(), &actor("b"), 3, val("w"), 0);
        o.sync(&other);
        assert_eq!(values(&o), vec!["x", "y", "w"]);
    }

    #[test]
    fn write_context_does_not_cover_concurrent_sibling() {
        let a = actor("a");
        let mut o = Object::new();
        let d1 = o.update(&CausalContext::empty(), &a, val("x"), 0);
        let _d2 = o.update(&CausalContext::empty(), &a, val("y"), 0);
        // The first writer's context knows only its own dot.
        let ctx = CausalContext::empty().with_dot(d1);
        o.update(&ctx, &a, val("x2"), 0);
        assert_eq!(values(&o), vec!["y", "x2"]);
    }

    #[test]
    fn sync_drops_superseded_and_keeps_concurrent() {
        let (a, b) = (actor("a"), actor("b"));
        let mut ra = Object::new();
        ra.update(&CausalContext::empty(), &a, val("v1"), 0);
        let mut rb = ra.clone();
        // a supersedes v1; b concurrently adds v2 without seeing the overwrite.
        let ctx = ra.context();
        ra.update(&ctx, &a, val("v1'"), 0);
        rb.update(&CausalContext::empty(), &b, val("v2"), 0);
        let mut m1 = ra.clone();
        m1.sync(&rb);
        let mut m2 = rb.clone();
        m2.sync(&ra);
        assert_eq!(m1, m2);
        let mut vs = values(&m1);
        vs.sort();
        assert_eq!(vs, vec!["v1'", "v2"]);
    }

    #[test]
    fn expiry_hides_and_reaps() {
        let a = actor("a");
        let mut o = Object::new();
        o.update(
            &CausalContext::empty(),
            &a,
            Version::value(b"s".to_vec(), 10, Some(100)),
            10,
        );
        assert!(!o.is_deleted_at(50));
        assert!(o.is_deleted_at(100));
        assert_eq!(o.reap_at_ms(5), Some(105));
        o.update(&CausalContext::empty(), &a, val("forever"), 20);
        assert_eq!(o.reap_at_ms(5), None);
    }

    fn expiring(s: &str, exp: u64) -> Version {
        Version::value(s.as_bytes().to_vec(), 1, Some(exp))
    }

    #[test]
    fn an_object_is_expiring_only_when_every_sibling_is_an_expiring_value() {
        let (a, b) = (actor("a"), actor("b"));
        let blind = CausalContext::empty();
        assert_eq!(
            Object::new().expires_at_ms(),
            None,
            "nothing is not expiring"
        );
        let mut o = Object::new();
        o.update(&blind, &a, expiring("x", 300), 0);
        assert_eq!(o.expires_at_ms(), Some(300));
        // A concurrent sibling that expires earlier: the latest expiry counts.
        o.update(&blind, &b, expiring("y", 200), 0);
        assert_eq!(o.expires_at_ms(), Some(300));
        assert!(!o.is_expired_at(299));
        assert!(o.is_expired_at(300));
        // One value that never expires, or one tombstone, and the object is not expiring.
        let mut forever = o.clone();
        forever.update(&blind, &a, val("z"), 0);
        assert_eq!(forever.expires_at_ms(), None);
        assert!(!forever.is_expired_at(u64::MAX));
        let mut deleted = o.clone();
        deleted.update(&blind, &a, Version::tombstone(1), 0);
        assert_eq!(deleted.expires_at_ms(), None);
        // A write with the read's context that touches the key extends its expiry.
        let ctx = o.context();
        o.update(&ctx, &a, expiring("x", 900), 250);
        assert_eq!(o.expires_at_ms(), Some(900));
        assert_eq!(o.siblings().len(), 1);
    }

    #[test]
    fn sync_of_expiring_objects_expires_at_the_latest_of_them() {
        let (a, b) = (actor("a"), actor("b"));
        let blind = CausalContext::empty();
        let mut x = Object::new();
        x.update(&blind, &a, expiring("x", 100), 0);
        let mut y = Object::new();
        y.update(&blind, &b, expiring("y", 500), 0);
        let mut m = x.clone();
        m.sync(&y);
        assert_eq!(m.expires_at_ms(), Some(500));
        // An expired sibling stays in an object that is kept (its dot still supersedes).
        assert_eq!(m.siblings().len(), 2);
        assert!(m.is_deleted_at(500));
    }
}
