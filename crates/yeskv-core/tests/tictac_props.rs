//! Property tests of the Tictac tree that active anti-entropy rests on: a tree depends only on the
//! key → digest map it summarises (not on the order of writes, nor on whether it was kept
//! incrementally or rebuilt); comparing two trees level by level finds exactly the segments of the
//! keys that differ, and nothing when the maps are equal; the encoding round-trips and every
//! damaged byte is refused; and the object digest is a function of the object's causal state —
//! equal after `sync` in either order, different whenever one replica has a write the other lacks.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use yeskv_core::tictac::{diff_keys, object_digest, tree_digest, TictacTree, TreeGeometry};
use yeskv_core::{Object, Version};

mod support;

use support::{actor, objects, run, step, synced};

type Digests = BTreeMap<Vec<u8>, u64>;

fn geometry() -> impl Strategy<Value = TreeGeometry> {
    (0u32..=5, 0u32..=5).prop_map(|(b, l)| TreeGeometry::new(1 << b, 1 << l).expect("valid"))
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..12)
}

fn digests() -> impl Strategy<Value = Digests> {
    proptest::collection::btree_map(key(), any::<u64>(), 0..60)
}

fn build(g: TreeGeometry, map: &Digests) -> TictacTree {
    TictacTree::from_digests(g, map.iter().map(|(k, d)| (k.as_slice(), *d)))
}

/// What a change does to one key of the base map.
#[derive(Clone, Debug)]
enum Change {
    /// The key of the base map at this index (modulo its size) is removed.
    Remove(usize),
    /// That key's digest is XORed with this non-zero value.
    Rewrite(usize, u64),
    /// A key is added (ignored if already present).
    Add(Vec<u8>, u64),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<usize>().prop_map(Change::Remove),
        (any::<usize>(), 1..=u64::MAX).prop_map(|(i, x)| Change::Rewrite(i, x)),
        (key(), any::<u64>()).prop_map(|(k, d)| Change::Add(k, d)),
    ]
}

/// Applies changes to a copy of `base`; returns it and the keys that really changed.
fn apply(base: &Digests, changes: &[Change]) -> (Digests, BTreeSet<Vec<u8>>) {
    let mut map = base.clone();
    for c in changes {
        let keys: Vec<Vec<u8>> = map.keys().cloned().collect();
        match c {
            Change::Remove(i) if !keys.is_empty() => {
                map.remove(&keys[i % keys.len()]);
            }
            Change::Rewrite(i, x) if !keys.is_empty() => {
                if let Some(d) = map.get_mut(&keys[i % keys.len()]) {
                    *d ^= x;
                }
            }
            Change::Add(k, d) => {
                map.entry(k.clone()).or_insert(*d);
            }
            _ => {}
        }
    }
    let changed = base
        .keys()
        .chain(map.keys())
        .filter(|k| base.get(*k) != map.get(*k))
        .cloned()
        .collect();
    (map, changed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tree_is_independent_of_insertion_order(
        g in geometry(),
        entries in digests().prop_map(|m| m.into_iter().collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let shuffled = TictacTree::from_digests(g, entries.iter().map(|(k, d)| (k.as_slice(), *d)));
        let sorted = build(g, &entries.iter().cloned().collect());
        prop_assert_eq!(&shuffled, &sorted);
        prop_assert_eq!(shuffled.key_count(), entries.len() as u64);
        prop_assert_eq!(shuffled.root(), entries.iter().fold(0, |acc, (_, d)| acc ^ d));
    }

    #[test]
    fn incremental_replace_equals_rebuild(
        g in geometry(),
        writes in proptest::collection::vec((0u8..24, proptest::option::of(any::<u64>())), 0..200),
    ) {
        // Each write sets (Some) or deletes (None) one of 24 keys, as the write path would:
        // replace(old contribution, new contribution).
        let mut tree = TictacTree::new(g);
        let mut map = Digests::new();
        for (k, new) in writes {
            let key = vec![k, k.wrapping_mul(7)];
            let old = map.get(&key).copied();
            tree.replace(&key, old, new);
            match new {
                Some(d) => map.insert(key, d),
                None => map.remove(&key),
            };
        }
        prop_assert_eq!(&tree, &build(g, &map));
        prop_assert_eq!(tree.key_count(), map.len() as u64);
        // Undoing everything gives the empty tree.
        for (k, d) in &map {
            tree.remove(k, *d);
        }
        prop_assert_eq!(tree, TictacTree::new(g));
    }

    #[test]
    fn trees_differ_exactly_in_the_segments_of_changed_keys(
        g in geometry(),
        base in digests(),
        changes in proptest::collection::vec(change(), 0..8),
    ) {
        let (other, changed) = apply(&base, &changes);
        let (ours, theirs) = (build(g, &base), build(g, &other));
        let want_segments: BTreeSet<u32> = changed.iter().map(|k| g.segment_of(k)).collect();
        let want_branches: Vec<u32> = want_segments
            .iter()
            .map(|s| g.branch_of_segment(*s))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let branches = ours.differing_branches(theirs.branches()).expect("same geometry");
        prop_assert_eq!(&branches, &want_branches);
        let mut found = BTreeSet::new();
        for b in 0..g.branches() {
            let segs = ours
                .differing_segments(b, theirs.segments_of_branch(b).expect("in range"))
                .expect("same geometry");
            // A branch reported equal has no differing segment, and vice versa.
            prop_assert_eq!(segs.is_empty(), !branches.contains(&b));
            prop_assert!(segs.iter().all(|s| g.segments_in_branch(b).contains(s)));
            found.extend(segs);
        }
        prop_assert_eq!(&found, &want_segments);
        prop_assert_eq!(ours.root() == theirs.root(), changed.is_empty());
        prop_assert_eq!(ours.key_count(), base.len() as u64);
        prop_assert_eq!(theirs.key_count(), other.len() as u64);
        // Descending into a differing segment, the key lists name exactly the changed keys there.
        for s in &want_segments {
            let list = |m: &Digests| -> Vec<(Vec<u8>, u64)> {
                m.iter().filter(|(k, _)| g.segment_of(k) == *s).map(|(k, d)| (k.clone(), *d)).collect()
            };
            let keys: BTreeSet<Vec<u8>> = diff_keys(&list(&base), &list(&other)).into_iter().collect();
            let want: BTreeSet<Vec<u8>> = changed.iter().filter(|k| g.segment_of(k) == *s).cloned().collect();
            prop_assert_eq!(keys, want);
        }
    }

    #[test]
    fn diff_keys_is_the_symmetric_difference(
        a in digests(),
        b_changes in proptest::collection::vec(change(), 0..10),
        shuffle_seed in any::<u64>(),
    ) {
        let (b, changed) = apply(&a, &b_changes);
        let ours: Vec<(Vec<u8>, u64)> = a.into_iter().collect();
        let mut theirs: Vec<(Vec<u8>, u64)> = b.into_iter().collect();
        let want: Vec<Vec<u8>> = changed.into_iter().collect();
        prop_assert_eq!(&diff_keys(&ours, &theirs), &want);
        prop_assert_eq!(&diff_keys(&theirs, &ours), &want);
        // An unsorted list from a peer gives the same answer.
        theirs.sort_by_key(|(k, d)| (k.len() as u64 ^ shuffle_seed).wrapping_mul(*d | 1));
        prop_assert_eq!(&diff_keys(&ours, &theirs), &want);
    }

    #[test]
    fn encoding_round_trips_and_every_flipped_byte_is_refused(
        g in (0u32..=2, 0u32..=2).prop_map(|(b, l)| TreeGeometry::new(1 << b, 1 << l).expect("valid")),
        map in digests(),
        mask in 1u8..=255,
    ) {
        let tree = build(g, &map);
        let bytes = tree.to_bytes();
        prop_assert_eq!(&TictacTree::from_bytes(&bytes, g).expect("round trip"), &tree);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= mask;
            prop_assert!(TictacTree::from_bytes(&bad, g).is_err(), "flip at {}", i);
        }
    }

    #[test]
    fn garbage_trees_are_errors_not_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(TictacTree::from_bytes(&b, TreeGeometry::default()).is_err());
    }

    #[test]
    fn digest_is_equal_after_sync_in_either_order(r in objects(true)) {
        let (ab, ba) = (synced(&r[0], &r[1]), synced(&r[1], &r[0]));
        prop_assert_eq!(object_digest(b"k", &ab), object_digest(b"k", &ba));
        let all = synced(&synced(&r[0], &r[1]), &r[2]);
        let all2 = synced(&r[2], &synced(&r[1], &r[0]));
        prop_assert_eq!(object_digest(b"k", &all), object_digest(b"k", &all2));
    }

    #[test]
    fn digest_tells_objects_apart(r in objects(true)) {
        for a in &r {
            for b in &r {
                prop_assert_eq!(a == b, object_digest(b"k", a) == object_digest(b"k", b));
            }
        }
    }

    #[test]
    fn a_write_one_replica_lacks_changes_the_digest(
        r in objects(true),
        at in 0u8..3,
        with_context in any::<bool>(),
        tomb in any::<bool>(),
    ) {
        let before = synced(&synced(&r[0], &r[1]), &r[2]);
        let mut after = before.clone();
        let ctx = if with_context { before.context() } else { Default::default() };
        let version = if tomb { Version::tombstone(7) } else { Version::value(b"w".to_vec(), 7, None) };
        after.update(&ctx, &actor(at), version, 0);
        prop_assert_ne!(object_digest(b"k", &before), object_digest(b"k", &after));
        prop_assert_ne!(tree_digest(b"k", &before), tree_digest(b"k", &after));
        // Once the lagging replica syncs, the digests agree again.
        let healed = synced(&before, &after);
        prop_assert_eq!(object_digest(b"k", &healed), object_digest(b"k", &after));
    }

    #[test]
    fn replicas_converge_to_equal_roots(
        g in geometry(),
        histories in proptest::collection::vec(proptest::collection::vec(step(true), 0..12), 1..16),
    ) {
        // Several keys, three replicas each: trees differ exactly where objects differ — unless
        // neither side counts in a tree (empty, or expiring: every sibling a value with an
        // expiry) — and after a full sync every replica's tree has the same root.
        let per_key: Vec<Vec<Object>> = histories.iter().map(|h| run(h)).collect();
        let key = |i: usize| format!("key{i}").into_bytes();
        let left_out = |o: &Object| o.is_empty() || o.expires_at_ms().is_some();
        let tree_of = |replica: usize, objs: &[Vec<Object>]| {
            let mut t = TictacTree::new(g);
            for (i, o) in objs.iter().enumerate() {
                t.replace(&key(i), None, tree_digest(&key(i), &o[replica]));
            }
            t
        };
        let (t0, t1) = (tree_of(0, &per_key), tree_of(1, &per_key));
        let differing: BTreeSet<u32> = per_key
            .iter()
            .enumerate()
            .filter(|(_, o)| o[0] != o[1] && !(left_out(&o[0]) && left_out(&o[1])))
            .map(|(i, _)| g.segment_of(&key(i)))
            .collect();
        let mut found = BTreeSet::new();
        for b in t0.differing_branches(t1.branches()).expect("same geometry") {
            found.extend(
                t0.differing_segments(b, t1.segments_of_branch(b).expect("in range"))
                    .expect("same geometry"),
            );
        }
        prop_assert_eq!(found, differing);
        let healed: Vec<Vec<Object>> = per_key
            .iter()
            .map(|o| {
                let all = synced(&synced(&o[0], &o[1]), &o[2]);
                vec![all; 3]
            })
            .collect();
        let roots: Vec<u64> = (0..3).map(|r| tree_of(r, &healed).root()).collect();
        prop_assert!(roots.iter().all(|x| *x == roots[0]), "{:?}", roots);
    }
}
