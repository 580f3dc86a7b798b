//! Property tests of the layout algorithm (`yeskv_core::placement`) over random clusters of 1 to
//! 50 nodes in 1 to 5 zones with capacities 1 to 4, `n` from 1 to 5 and 64 or 256 partitions:
//! distinct replicas, zone spread, capacity balance against the shared water-filling targets
//! (whose defining conditions are checked here independently), balanced primaries,
//! determinism, stability, and minimal movement against lower bounds. The movement figures for
//! the architecture docs are printed by `movement_figures` (`cargo test -- --nocapture`).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use yeskv_core::placement::{assign, targets, Assignment, NodeSpec, PlacementError, Targets};
use yeskv_core::NodeId;

fn id(i: usize) -> NodeId {
    NodeId::new(format!("node-{i:02}")).expect("valid id")
}

fn spec(i: usize, zone: usize, capacity: u32) -> NodeSpec {
    NodeSpec::new(id(i), format!("zone-{zone}"), capacity)
}

/// `k` equal nodes in one zone, ids `0..k`.
fn equal_nodes(k: usize) -> Vec<NodeSpec> {
    (0..k).map(|i| spec(i, 0, 1)).collect()
}

/// A random cluster: `(members, n, partitions)`.
fn cluster() -> impl Strategy<Value = (Vec<NodeSpec>, u8, u32)> {
    (1usize..=5, 1usize..=50)
        .prop_flat_map(|(zones, nodes)| {
            (
                proptest::collection::vec((0..zones, 1u32..=4), nodes),
                1u8..=5,
                prop_oneof![Just(64u32), Just(256u32)],
            )
        })
        .prop_map(|(nodes, n, partitions)| {
            let members = nodes
                .iter()
                .enumerate()
                .map(|(i, &(z, c))| spec(i, z, c))
                .collect();
            (members, n, partitions)
        })
}

/// A change to a cluster, applied by [`apply`].
#[derive(Clone, Debug)]
enum Change {
    /// Add a node (fresh id) in zone `zone % 6` (may be a new zone) with this capacity.
    Add { zone: usize, capacity: u32 },
    /// Remove the member at `index % len` (skipped if it is the only one).
    Remove { index: usize },
    /// Set the capacity of the member at `index % len`.
    Capacity { index: usize, capacity: u32 },
    /// Move the member at `index % len` to zone `zone % 6`.
    Zone { index: usize, zone: usize },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0usize..6, 1u32..=4).prop_map(|(zone, capacity)| Change::Add { zone, capacity }),
        any::<usize>().prop_map(|index| Change::Remove { index }),
        (any::<usize>(), 1u32..=4)
            .prop_map(|(index, capacity)| Change::Capacity { index, capacity }),
        (any::<usize>(), 0usize..6).prop_map(|(index, zone)| Change::Zone { index, zone }),
    ]
}

fn apply(members: &[NodeSpec], change: &Change) -> Vec<NodeSpec> {
    let mut out = members.to_vec();
    let len = out.len();
    match *change {
        Change::Add { zone, capacity } => {
            let fresh = (100..)
                .find(|&k| out.iter().all(|m| m.id != id(k)))
                .expect("free id");
            out.push(spec(fresh, zone, capacity));
        }
        Change::Remove { index } => {
            if len > 1 {
                out.remove(index % len);
            }
        }
        Change::Capacity { index, capacity } => out[index % len].capacity = capacity,
        Change::Zone { index, zone } => out[index % len].zone = format!("zone-{zone}"),
    }
    out
}

/// Checks everything an assignment promises for `members`, independently of the algorithm
/// (except the node shares, which are the shared definition of balance).
fn check(
    members: &[NodeSpec],
    n: u8,
    partitions: u32,
    a: &Assignment,
) -> Result<(), TestCaseError> {
    let t = targets(members, n, partitions).expect("valid members");
    let zone_of: BTreeMap<&NodeId, &str> =
        members.iter().map(|m| (&m.id, m.zone.as_str())).collect();
    let zones: BTreeSet<&str> = zone_of.values().copied().collect();
    let r = usize::from(n).min(members.len());
    prop_assert_eq!(a.partitions(), partitions);
    prop_assert_eq!(a.replicas_per_partition(), r);
    prop_assert_eq!(t.replicas_per_partition, r);

    // Zone bounds: "as even as possible".
    let zone_size = |z: &str| members.iter().filter(|m| m.zone == z).count();
    let c = (1..)
        .find(|&c| zones.iter().map(|z| zone_size(z).min(c)).sum::<usize>() >= r)
        .expect("finite");
    for z in &zones {
        let zt = &t.zones[*z];
        prop_assert_eq!(zt.replicas_max, zone_size(z).min(c));
        prop_assert_eq!(zt.replicas_min, zone_size(z).min(c - 1));
    }
    if zones
        .iter()
        .all(|z| zone_size(z) >= r.div_ceil(zones.len()))
    {
        prop_assert!(zones
            .iter()
            .all(|z| t.zones[*z].replicas_max == r.div_ceil(zones.len())));
    }

    for (partition, row) in a.iter() {
        // 1. distinct members.
        let distinct: BTreeSet<&NodeId> = row.iter().collect();
        prop_assert_eq!(distinct.len(), r, "partition {} repeats a node", partition);
        prop_assert!(
            row.iter().all(|node| zone_of.contains_key(node)),
            "non-member in {}",
            partition
        );
        // 2. zones.
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for node in row {
            *per_zone.entry(zone_of[node]).or_default() += 1;
        }
        prop_assert_eq!(
            per_zone.len(),
            r.min(zones.len()),
            "partition {} spans too few zones",
            partition
        );
        for z in &zones {
            let count = per_zone.get(z).copied().unwrap_or(0);
            let zt = &t.zones[*z];
            prop_assert!(
                (zt.replicas_min..=zt.replicas_max).contains(&count),
                "partition {} has {} replicas in {}, bounds {}..={}",
                partition,
                count,
                z,
                zt.replicas_min,
                zt.replicas_max
            );
        }
    }

    // 3. balance within one of the share; 5. primaries within one of count / r, so within two
    // of P × capacity / total capacity when no bound binds.
    let load = a.load();
    let capacity_total: u64 = members.iter().map(|m| u64::from(m.capacity)).sum();
    let proportional =
        |m: &NodeSpec| f64::from(partitions) * f64::from(m.capacity) / capacity_total as f64;
    let unconstrained = members
        .iter()
        .all(|m| (t.nodes[&m.id].share - proportional(m) * r as f64).abs() < 1e-6);
    for m in members {
        let nt = &t.nodes[&m.id];
        let (owned, primaries) = load.get(&m.id).copied().unwrap_or((0, 0));
        prop_assert_eq!(owned, a.owned(&m.id));
        prop_assert!(
            (nt.slots_min as usize..=nt.slots_max as usize).contains(&owned)
                && (owned as f64 - nt.share).abs() < 1.0,
            "{} owns {}, share {}",
            m.id,
            owned,
            nt.share
        );
        prop_assert!(
            (owned / r..=owned.div_ceil(r)).contains(&primaries),
            "{} is primary of {} with {} replicas (r = {})",
            m.id,
            primaries,
            owned,
            r
        );
        if unconstrained {
            prop_assert!((primaries as f64 - proportional(m)).abs() < 2.0);
        }
    }
    Ok(())
}

/// The defining conditions of the shares (module docs, point 3), checked with floats: one global
/// level λ; every node's share is `min(μ_z × capacity, P)` for its zone's level `μ_z`; a zone
/// strictly inside its slot bounds has `μ_z = λ`, a zone on its upper bound `μ_z ≤ λ`, on its
/// lower bound `μ_z ≥ λ`; shares sum to `P × r`.
fn check_targets(t: &Targets) -> Result<(), TestCaseError> {
    let p = f64::from(t.partitions);
    let eps = 1e-6;
    let total: f64 = t.nodes.values().map(|n| n.share).sum();
    prop_assert!(
        (total - p * t.replicas_per_partition as f64).abs() < eps,
        "shares sum to {}",
        total
    );
    let mut free_levels = Vec::new();
    let mut upper_levels = Vec::new();
    let mut lower_levels = Vec::new();
    for (name, zone) in &t.zones {
        let nodes: Vec<_> = t.nodes.values().filter(|n| &n.zone == name).collect();
        let sum: f64 = nodes.iter().map(|n| n.share).sum();
        prop_assert!((sum - zone.share).abs() < eps);
        let (low, high) = (p * zone.replicas_min as f64, p * zone.replicas_max as f64);
        prop_assert!(
            sum > low - eps && sum < high + eps,
            "zone {} share {} outside {}..{}",
            name,
            sum,
            low,
            high
        );
        // The zone's level: shares of uncapped nodes divided by capacity, all equal.
        let uncapped: Vec<f64> = nodes
            .iter()
            .filter(|n| n.share < p - eps)
            .map(|n| n.share / f64::from(n.capacity))
            .collect();
        for w in uncapped.windows(2) {
            prop_assert!(
                (w[0] - w[1]).abs() < eps,
                "zone {} is not level: {:?}",
                name,
                uncapped
            );
        }
        // A capped node would want at least P at that level.
        let level = uncapped.first().copied();
        if let Some(level) = level {
            for n in &nodes {
                if n.share >= p - eps {
                    prop_assert!(level * f64::from(n.capacity) >= p - eps);
                }
            }
        }
        for n in &nodes {
            prop_assert!(
                n.slots_min as f64 <= n.share + eps && n.share <= n.slots_max as f64 + eps
            );
            prop_assert!(n.slots_max - n.slots_min <= 1 && n.share <= p + eps);
        }
        let level = level.unwrap_or(f64::NAN); // all capped: any level ≥ P / min capacity
        if sum > low + eps && sum < high - eps {
            free_levels.push((level, nodes.iter().map(|n| n.capacity).min().unwrap_or(1)));
        } else if sum >= high - eps {
            upper_levels.push(level);
        } else {
            lower_levels.push(level);
        }
    }
    // One global λ: all free zones share it (a free zone with every node capped only says λ is
    // at least P / its smallest capacity), upper-bound zones are below it, lower-bound above.
    let free: Vec<f64> = free_levels
        .iter()
        .filter(|(l, _)| l.is_finite())
        .map(|(l, _)| *l)
        .collect();
    for w in free.windows(2) {
        prop_assert!(
            (w[0] - w[1]).abs() < eps,
            "free zones at different levels {:?}",
            free
        );
    }
    if let Some(&lambda) = free.first() {
        for (l, min_cap) in &free_levels {
            if !l.is_finite() {
                prop_assert!(lambda * f64::from(*min_cap) >= p - eps);
            }
        }
        for l in upper_levels.iter().filter(|l| l.is_finite()) {
            prop_assert!(
                *l <= lambda + eps,
                "capped zone level {} above λ {}",
                l,
                lambda
            );
        }
        for l in lower_levels.iter().filter(|l| l.is_finite()) {
            prop_assert!(
                *l >= lambda - eps,
                "floored zone level {} below λ {}",
                l,
                lambda
            );
        }
    }
    Ok(())
}

/// Lower bound on the moves from `before` to any valid layout of `members`: every node needs at
/// least `slots_min` replicas and keeps at most what it had; every partition needs `r` replicas
/// and keeps at most its surviving ones, no more per zone than the zone's maximum, and needs new
/// ones in a zone where it keeps fewer than the zone's minimum.
fn moves_lower_bound(members: &[NodeSpec], n: u8, partitions: u32, before: &Assignment) -> usize {
    let t = targets(members, n, partitions).expect("valid");
    let r = t.replicas_per_partition;
    let per_node: usize = t
        .nodes
        .iter()
        .map(|(node, nt)| (nt.slots_min as usize).saturating_sub(before.owned(node)))
        .sum();
    let mut per_partition = 0;
    for partition in 0..partitions {
        // Partition counts may differ: compare with the partition holding the same first hash.
        let old = before.replicas(
            (u64::from(partition) * u64::from(before.partitions()) / u64::from(partitions)) as u16,
        );
        let mut kept_in_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for node in old {
            if let Some(nt) = t.nodes.get(node) {
                *kept_in_zone.entry(nt.zone.as_str()).or_default() += 1;
            }
        }
        let keepable: usize = t
            .zones
            .iter()
            .map(|(z, zt)| {
                kept_in_zone
                    .get(z.as_str())
                    .copied()
                    .unwrap_or(0)
                    .min(zt.replicas_max)
            })
            .sum();
        let missing_in_zones: usize = t
            .zones
            .iter()
            .map(|(z, zt)| {
                zt.replicas_min
                    .saturating_sub(kept_in_zone.get(z.as_str()).copied().unwrap_or(0))
            })
            .sum();
        per_partition += (r - keepable.min(r)).max(missing_in_zones);
    }
    per_node.max(per_partition)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn fresh_layouts_meet_every_rule((members, n, partitions) in cluster()) {
        let t = targets(&members, n, partitions).expect("valid");
        check_targets(&t)?;
        let a = assign(&members, n, partitions, None).expect("valid");
        check(&members, n, partitions, &a)?;
    }

    #[test]
    fn deterministic_and_order_independent((members, n, partitions) in cluster(), rotate in any::<usize>()) {
        let a = assign(&members, n, partitions, None).expect("valid");
        let mut shuffled = members.clone();
        let len = shuffled.len();
        shuffled.rotate_left(rotate % len);
        shuffled.reverse();
        prop_assert_eq!(&a, &assign(&shuffled, n, partitions, None).expect("valid"));
        // Same members and previous: nothing moves, not even a primary.
        let again = assign(&members, n, partitions, Some(&a)).expect("valid");
        prop_assert_eq!(again.moves_from(&a), 0);
        prop_assert_eq!(&again, &a);
    }

    #[test]
    fn changes_move_little(
        (members, n, partitions) in cluster(),
        changes in proptest::collection::vec(change(), 1..=3),
    ) {
        let mut before = assign(&members, n, partitions, None).expect("valid");
        let mut current = members;
        for change in &changes {
            let next = apply(&current, change);
            let after = assign(&next, n, partitions, Some(&before)).expect("valid");
            check(&next, n, partitions, &after)?;
            let moves = after.moves_from(&before);
            let bound = moves_lower_bound(&next, n, partitions, &before);
            let slots = partitions as usize * after.replicas_per_partition();
            // The algorithm is exactly optimal (see `moves_are_optimal_on_tiny_clusters`), but
            // this bound ignores how node and zone bounds interact, so it is not always
            // reachable: over 12,000 random changes it was met exactly in 92% of them and
            // missed by at most 14% of the slots (a node changing zones). A safety net only.
            prop_assert!(moves >= bound);
            prop_assert!(
                moves <= bound + slots / 6 + 8,
                "{:?}: {} moves, lower bound {}, {} slots", change, moves, bound, slots
            );
            // Replicas that stayed keep their relative order.
            for (partition, row) in after.iter() {
                let old = before.replicas(partition);
                let kept_new: Vec<&NodeId> = row.iter().filter(|x| old.contains(x)).collect();
                let kept_old: Vec<&NodeId> = old.iter().filter(|x| row.contains(x)).collect();
                let without_primary = |v: &[&NodeId], p: &NodeId| v.iter().copied().filter(|x| *x != p).cloned().collect::<Vec<_>>();
                prop_assert_eq!(without_primary(&kept_new, &row[0]), without_primary(&kept_old, &row[0]));
            }
            before = after;
            current = next;
        }
    }

    #[test]
    fn adding_one_equal_node_moves_only_its_share(k in 1usize..=20, n in 1u8..=5, big in any::<bool>()) {
        let partitions = if big { 256 } else { 64 };
        let before = assign(&equal_nodes(k), n, partitions, None).expect("valid");
        let grown = equal_nodes(k + 1);
        let after = assign(&grown, n, partitions, Some(&before)).expect("valid");
        let t = targets(&grown, n, partitions).expect("valid");
        let newcomer = &t.nodes[&id(k)];
        let moves = after.moves_from(&before);
        // Optimal: the new node's share (plus the replicas a partition gains if r grows).
        let r_grew = after.replicas_per_partition() > before.replicas_per_partition();
        if !r_grew {
            prop_assert!(moves >= newcomer.slots_min as usize);
            prop_assert!(moves <= newcomer.slots_max as usize, "{} moves, share {}", moves, newcomer.share);
        } else {
            prop_assert_eq!(moves, partitions as usize);
        }
    }

    #[test]
    fn removing_one_equal_node_moves_only_its_replicas(k in 2usize..=20, n in 1u8..=5, gone in any::<usize>()) {
        let partitions = 256;
        let members = equal_nodes(k);
        let before = assign(&members, n, partitions, None).expect("valid");
        let removed = gone % k;
        let shrunk: Vec<NodeSpec> = members.iter().filter(|m| m.id != id(removed)).cloned().collect();
        let after = assign(&shrunk, n, partitions, Some(&before)).expect("valid");
        check(&shrunk, n, partitions, &after)?;
        let moves = after.moves_from(&before);
        let lost = before.owned(&id(removed));
        let r_shrank = after.replicas_per_partition() < before.replicas_per_partition();
        let needed = if r_shrank { 0 } else { lost };
        // Exactly the lost replicas are re-created: every other share grows, so no node sheds.
        prop_assert_eq!(moves, needed, "{} moves for {} lost", moves, lost);
    }

    #[test]
    fn capacity_change_moves_the_delta(k in 2usize..=12, n in 1u8..=5, which in any::<usize>(), capacity in 1u32..=4) {
        let partitions = 256;
        let members: Vec<NodeSpec> = (0..k).map(|i| spec(i, 0, 2)).collect();
        let before = assign(&members, n, partitions, None).expect("valid");
        let mut changed = members.clone();
        let target = which % k;
        changed[target].capacity = capacity;
        let after = assign(&changed, n, partitions, Some(&before)).expect("valid");
        check(&changed, n, partitions, &after)?;
        let delta = (after.owned(&id(target)) as i64 - before.owned(&id(target)) as i64).unsigned_abs() as usize;
        // Exactly the delta: if the node gains, the others' shares all shrink and they only shed;
        // if it sheds, the others' shares all grow and they gain exactly what it sheds.
        prop_assert_eq!(after.moves_from(&before), delta);
    }
}

/// The fewest moves from `before` over *every* valid layout of a tiny cluster, by exhaustive
/// search: partitions choose among the replica sets that meet the zone bounds, with node counts
/// within `slots_min..=slots_max`.
fn brute_force_min_moves(
    members: &[NodeSpec],
    n: u8,
    partitions: u32,
    before: &Assignment,
) -> usize {
    let t = targets(members, n, partitions).expect("valid");
    let r = t.replicas_per_partition;
    let ids: Vec<&NodeId> = t.nodes.keys().collect();
    let zone_ok = |set: &[usize]| {
        t.zones.iter().all(|(z, zt)| {
            let count = set.iter().filter(|&&i| &t.nodes[ids[i]].zone == z).count();
            (zt.replicas_min..=zt.replicas_max).contains(&count)
        })
    };
    let mut sets = Vec::new();
    for mask in 0u32..(1 << ids.len()) {
        if mask.count_ones() as usize == r {
            let set: Vec<usize> = (0..ids.len()).filter(|&i| mask & (1 << i) != 0).collect();
            if zone_ok(&set) {
                sets.push(set);
            }
        }
    }
    fn search(
        p: usize,
        counts: &mut Vec<usize>,
        cost_so_far: usize,
        best: &mut usize,
        sets: &[Vec<usize>],
        costs: &[Vec<usize>],
        bounds: &[(usize, usize)],
    ) {
        if cost_so_far >= *best {
            return;
        }
        if p == costs.len() {
            if counts
                .iter()
                .zip(bounds)
                .all(|(c, (lo, hi))| lo <= c && c <= hi)
            {
                *best = cost_so_far;
            }
            return;
        }
        for (k, set) in sets.iter().enumerate() {
            if set.iter().any(|&i| counts[i] >= bounds[i].1) {
                continue;
            }
            for &i in set {
                counts[i] += 1;
            }
            search(
                p + 1,
                counts,
                cost_so_far + costs[p][k],
                best,
                sets,
                costs,
                bounds,
            );
            for &i in set {
                counts[i] -= 1;
            }
        }
    }
    let costs: Vec<Vec<usize>> = (0..partitions as u16)
        .map(|p| {
            sets.iter()
                .map(|set| {
                    set.iter()
                        .filter(|&&i| !before.replicas(p).contains(ids[i]))
                        .count()
                })
                .collect()
        })
        .collect();
    let bounds: Vec<(usize, usize)> = t
        .nodes
        .values()
        .map(|nt| (nt.slots_min as usize, nt.slots_max as usize))
        .collect();
    let mut best = usize::MAX;
    search(
        0,
        &mut vec![0; ids.len()],
        0,
        &mut best,
        &sets,
        &costs,
        &bounds,
    );
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Minimal movement is exact: no valid layout keeps more of an arbitrary previous layout.
    #[test]
    fn moves_are_optimal_on_tiny_clusters(
        nodes in proptest::collection::vec((0usize..3, 1u32..=3), 1..=6),
        n in 1u8..=3,
        log_partitions in 0u32..=2,
        rows in proptest::collection::vec(proptest::sample::subsequence((0..8).collect::<Vec<usize>>(), 1..=4), 4),
        width in 1usize..=4,
    ) {
        let members: Vec<NodeSpec> = nodes.iter().enumerate().map(|(i, &(z, c))| spec(i, z, c)).collect();
        let partitions = 1u32 << log_partitions;
        // An arbitrary previous layout over ids 0..8 (some not members), `width` replicas each.
        let width = rows.iter().map(Vec::len).min().unwrap_or(1).min(width);
        let before = Assignment::from_replicas(
            rows.iter().take(partitions as usize).map(|row| row.iter().take(width).map(|&i| id(i)).collect()).collect(),
        ).expect("valid rows");
        let after = assign(&members, n, partitions, Some(&before)).expect("valid");
        check(&members, n, partitions, &after)?;
        prop_assert_eq!(after.moves_from(&before), brute_force_min_moves(&members, n, partitions, &before));
    }
}

#[test]
fn errors_are_reported() {
    let ok = equal_nodes(3);
    assert_eq!(assign(&[], 3, 256, None), Err(PlacementError::NoMembers));
    assert_eq!(assign(&ok, 0, 256, None), Err(PlacementError::ZeroReplicas));
    for bad in [0, 3, 100, 1 << 17] {
        assert_eq!(
            assign(&ok, 3, bad, None),
            Err(PlacementError::InvalidPartitionCount(bad))
        );
    }
    let mut zero = ok.clone();
    zero[1].capacity = 0;
    assert_eq!(
        assign(&zero, 3, 256, None),
        Err(PlacementError::ZeroCapacity(id(1)))
    );
    let mut twice = ok.clone();
    twice.push(spec(1, 3, 2));
    assert_eq!(
        assign(&twice, 3, 256, None),
        Err(PlacementError::DuplicateNode(id(1)))
    );
    assert!(Assignment::from_replicas(vec![vec![id(0)]; 3]).is_err());
    assert!(Assignment::from_replicas(vec![vec![id(0), id(0)]; 4]).is_err());
    assert!(Assignment::from_replicas(vec![vec![id(0), id(1)], vec![id(0)]]).is_err());
}

#[test]
fn lone_node_in_a_zone_holds_every_partition() {
    // The docs' example: with r = 3 and two zones, a zone of one node holds one replica of every
    // partition, whatever its capacity; the big zone holds the other two.
    let mut members: Vec<NodeSpec> = (0..6).map(|i| spec(i, 0, 4)).collect();
    members.push(spec(6, 1, 1));
    let a = assign(&members, 3, 256, None).expect("valid");
    assert_eq!(a.owned(&id(6)), 256);
    for i in 0..6 {
        let owned = a.owned(&id(i));
        assert!((85..=86).contains(&owned), "{owned}");
    }
}

#[test]
fn partition_count_change_keeps_replicas() {
    // Equal shares at both counts: splitting every partition in four moves nothing, and merging
    // back (each partition takes its first child's replicas) gives the original layout.
    let members: Vec<NodeSpec> = (0..4).map(|i| spec(i, i % 2, 1)).collect();
    let a = assign(&members, 2, 64, None).expect("valid");
    let split = assign(&members, 2, 256, Some(&a)).expect("valid");
    assert_eq!(split.moves_from(&a), 0);
    let merged = assign(&members, 2, 64, Some(&split)).expect("valid");
    assert_eq!(merged.moves_from(&split), 0);
    assert_eq!(merged, a);
    // Uneven shares: splitting only moves what the finer rounding needs, at most a few per node.
    let members: Vec<NodeSpec> = (0..7).map(|i| spec(i, i % 3, 1 + (i as u32 % 2))).collect();
    let a = assign(&members, 3, 64, None).expect("valid");
    let split = assign(&members, 3, 256, Some(&a)).expect("valid");
    check(&members, 3, 256, &split).expect("valid layout");
    let moves = split.moves_from(&a);
    assert!(moves <= 3 * members.len(), "{moves}");
}

/// Movement figures for docs/architecture.md; also pins them.
#[test]
fn movement_figures() {
    for (from, expected) in [(3usize, 192usize), (10, 69)] {
        let before = assign(&equal_nodes(from), 3, 256, None).expect("valid");
        let after = assign(&equal_nodes(from + 1), 3, 256, Some(&before)).expect("valid");
        let moves = after.moves_from(&before);
        let optimum = 768.0 / (from + 1) as f64;
        println!(
            "{from} -> {} nodes, n = 3, 256 partitions: {moves} of 768 replicas moved ({:.2}%), optimum {optimum:.1} ({:.2}%)",
            from + 1,
            100.0 * moves as f64 / 768.0,
            100.0 * optimum / 768.0
        );
        assert_eq!(moves, expected);
    }
}

#[test]
fn fifty_nodes_are_fast() {
    let members: Vec<NodeSpec> = (0..50)
        .map(|i| spec(i, i % 5, 1 + (i as u32 % 4)))
        .collect();
    let start = std::time::Instant::now();
    let a = assign(&members, 3, 256, None).expect("valid");
    let fresh = start.elapsed();
    let mut grown = members.clone();
    grown.push(spec(50, 2, 3));
    let start = std::time::Instant::now();
    let b = assign(&grown, 3, 256, Some(&a)).expect("valid");
    let change = start.elapsed();
    println!(
        "50 nodes × 256 partitions × n = 3: fresh {fresh:?}, add a node {change:?}, {} moves",
        b.moves_from(&a)
    );
    if !cfg!(debug_assertions) {
        assert!(
            fresh.as_millis() < 250 && change.as_millis() < 250,
            "{fresh:?} {change:?}"
        );
    }
}

/// A random cluster over regions: per region a replica count 1..=3 and 0 to 6 nodes in 1 to 3
/// zones (ids unique across regions); at least one region has nodes.
fn regional_cluster() -> impl Strategy<Value = Vec<(u8, Vec<NodeSpec>)>> {
    proptest::collection::vec(
        (
            1u8..=3,
            proptest::collection::vec((0usize..3, 1u32..=2), 0..=6),
        ),
        1..=3,
    )
    .prop_filter("some region has nodes", |regions| {
        regions.iter().any(|(_, nodes)| !nodes.is_empty())
    })
    .prop_map(|regions| {
        let mut next = 0;
        regions
            .into_iter()
            .enumerate()
            .map(|(r, (n, nodes))| {
                let members = nodes
                    .into_iter()
                    .map(|(zone, capacity)| {
                        next += 1;
                        NodeSpec::new(id(next), format!("r{r}-zone-{zone}"), capacity)
                    })
                    .collect();
                (n, members)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Each region holds exactly `min(n_r, its nodes)` replicas of every partition, all its own
    /// nodes, in one block in region order, and that block is what `assign` gives the region
    /// alone: regions never borrow each other's nodes, and one region's change moves nothing in
    /// another.
    #[test]
    fn regions_are_placed_independently(regions in regional_cluster(), grow in 0usize..3) {
        let partitions = 64;
        let all = yeskv_core::placement::assign_regions(&regions, partitions, None)
            .expect("valid regions");
        for p in 0..partitions as u16 {
            let row = all.replicas(p);
            let mut at = 0;
            for (n, members) in &regions {
                if members.is_empty() {
                    continue;
                }
                let alone = assign(members, *n, partitions, None).expect("valid region");
                let width = usize::from(*n).min(members.len());
                prop_assert_eq!(&row[at..at + width], alone.replicas(p));
                at += width;
            }
            prop_assert_eq!(at, row.len());
        }
        // One more node in region `grow` (if it exists): the other regions' blocks stay.
        let mut grown = regions.clone();
        if let Some((_, members)) = grown.get_mut(grow) {
            members.push(NodeSpec::new(id(99), "new-zone", 1));
        }
        let after = yeskv_core::placement::assign_regions(&grown, partitions, Some(&all))
            .expect("valid regions");
        for (r, (_, members)) in regions.iter().enumerate() {
            if r == grow || members.is_empty() {
                continue;
            }
            let ids: BTreeSet<&NodeId> = members.iter().map(|m| &m.id).collect();
            for p in 0..partitions as u16 {
                let before: Vec<_> = all.replicas(p).iter().filter(|n| ids.contains(n)).collect();
                let now: Vec<_> = after.replicas(p).iter().filter(|n| ids.contains(n)).collect();
                prop_assert_eq!(before, now);
            }
        }
    }
}
