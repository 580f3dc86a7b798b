//! Unit and property tests of the pure layout model.

use std::collections::BTreeSet;

use proptest::prelude::*;
use yeskv_core::bucket::{Conflict, Datatype};

use crate::keys::{Access, ApiKey, KEYS_MAX, KEY_BUCKETS_MAX};

use super::*;

fn id(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn spec(name: &str, zone: &str, capacity: u32) -> JoinSpec {
    JoinSpec {
        zone: zone.into(),
        capacity,
        http: format!("{name}.http:8080"),
        peer: format!("{name}.peer:7070"),
        region: "default".into(),
    }
}

fn bootstrapped(partitions: u32) -> LayoutState {
    let layout =
        Layout::bootstrap("c1", 3, partitions, id("n1"), spec("n1", "a", 1)).expect("bootstrap");
    LayoutState::default()
        .apply(&Command::Bootstrap { layout })
        .expect("applies")
}

fn stage(state: &LayoutState, change: StagedChange) -> LayoutState {
    state
        .apply(&Command::Stage { change })
        .expect("stage applies")
}

fn join(name: &str, zone: &str) -> StagedChange {
    StagedChange::Join {
        node: id(name),
        spec: spec(name, zone, 1),
    }
}

fn leave(name: &str, mode: LeaveMode) -> StagedChange {
    StagedChange::Leave {
        node: id(name),
        mode,
    }
}

fn commit(state: &LayoutState) -> LayoutState {
    let plan = state.plan().expect("plans");
    state
        .apply(&Command::commit(&plan))
        .expect("commit applies")
}

fn three_nodes() -> LayoutState {
    let state = bootstrapped(64);
    let state = stage(&state, join("n2", "b"));
    let state = stage(&state, join("n3", "c"));
    commit(&state)
}

/// `node` reports every partition it is syncing as done.
fn done(state: &LayoutState, node: &str) -> LayoutState {
    let layout = state.layout.as_ref().expect("layout");
    let partitions = layout.syncing_of(&id(node));
    state
        .apply(&Command::TransferDone {
            node: id(node),
            partitions,
        })
        .expect("transfer done applies")
}

/// Every syncing node reports done: no partition is in transition any more.
fn settle(state: &LayoutState) -> LayoutState {
    let mut state = state.clone();
    let syncing: BTreeSet<NodeId> = state
        .layout
        .as_ref()
        .expect("layout")
        .transitions
        .values()
        .flat_map(|t| t.syncing.keys().cloned())
        .collect();
    for node in syncing {
        state = done(&state, node.as_str());
    }
    assert!(state
        .layout
        .as_ref()
        .expect("layout")
        .transitions
        .is_empty());
    state
}

/// A settled cluster of `count` nodes, zones a, b, c in turn.
fn settled_nodes(count: u8) -> LayoutState {
    let mut state = bootstrapped(64);
    for i in 2..=count {
        let zone = ["a", "b", "c"][usize::from(i - 1) % 3];
        state = stage(&state, join(&format!("n{i}"), zone));
    }
    settle(&commit(&state))
}

#[test]
fn bootstrap_owns_every_partition() {
    let state = bootstrapped(64);
    let layout = state.layout.as_ref().expect("layout");
    assert_eq!(layout.version, 1);
    assert_eq!(layout.assignment.replicas_per_partition(), 1);
    assert_eq!(layout.assignment.owned(&id("n1")), 64);
    assert_eq!(layout.members[&id("n1")].state, MemberState::Valid);
    assert!(state.staged.is_empty());
    let again = state.apply(&Command::Bootstrap {
        layout: (**layout).clone(),
    });
    assert_eq!(again, Err(LayoutError::AlreadyBootstrapped { version: 1 }));
}

#[test]
fn join_plan_shows_moves_then_commit_installs_it() {
    let state = bootstrapped(64);
    let state = stage(&state, join("n2", "b"));
    let state = stage(&state, join("n3", "c"));
    assert_eq!(state.staged.revision, 3);
    let view = state.members_view();
    assert_eq!(view[&id("n2")].state, MemberState::Joining);
    let plan = state.plan().expect("plans");
    assert_eq!(plan.base_version, 1);
    assert_eq!(plan.layout.version, 2);
    // r grows from 1 to 3: every partition gains two replicas, copied from n1.
    assert_eq!(plan.transfers(), 128);
    assert_eq!(
        plan.transfers(),
        plan.layout
            .assignment
            .moves_from(&state.layout.as_ref().expect("l").assignment)
    );
    assert!(plan.moves.iter().all(|m| m.from.is_none()));
    assert_eq!(
        plan.owned[&id("n1")],
        OwnedChange {
            before: 64,
            after: 64
        }
    );
    assert_eq!(
        plan.owned[&id("n2")],
        OwnedChange {
            before: 0,
            after: 64
        }
    );

    let next = state.apply(&Command::commit(&plan)).expect("commit");
    let layout = next.layout.as_ref().expect("layout");
    assert_eq!(layout.version, 2);
    assert_eq!(**layout, plan.layout);
    assert!(next.staged.is_empty());
    assert_eq!(next.staged.revision, 4);
}

#[test]
fn adding_a_fourth_node_moves_only_its_share() {
    let state = three_nodes();
    let state = stage(&state, join("n4", "d"));
    let plan = state.plan().expect("plans");
    // 64 × 3 replicas over 4 equal nodes in 4 zones: n4 takes 48, and nothing else moves.
    assert_eq!(plan.transfers(), 48);
    assert!(plan.moves.iter().all(|m| m.to == Some(id("n4"))));
    // In zone "a" beside n1 instead, n4 takes half of the zone's 64 replicas.
    let state = stage(&state, join("n4", "a"));
    assert_eq!(state.plan().expect("plans").transfers(), 32);
}

#[test]
fn two_commits_planned_against_one_version_never_both_apply() {
    let state = bootstrapped(64);
    let state = stage(&state, join("n2", "b"));
    // Two nodes plan concurrently against version 1 ...
    let first = Command::commit(&state.plan().expect("plans"));
    let second = Command::commit(&state.plan().expect("plans"));
    // ... the log orders them; the first applies, the second is refused.
    let after_first = state.apply(&first).expect("first applies");
    assert_eq!(after_first.version(), 2);
    let refused = after_first.apply(&second);
    assert_eq!(
        refused,
        Err(LayoutError::VersionMismatch {
            expected: 1,
            current: 2
        })
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("expected version 1"), "{message}");
}

#[test]
fn a_change_staged_after_planning_is_never_committed_unseen() {
    let state = bootstrapped(64);
    let state = stage(&state, join("n2", "b"));
    let planned = Command::commit(&state.plan().expect("plans"));
    let state = stage(&state, join("n3", "c"));
    assert_eq!(
        state.apply(&planned),
        Err(LayoutError::StagedChanged {
            expected: 2,
            current: 3
        })
    );
}

#[test]
fn a_commit_must_install_exactly_the_staged_changes() {
    let state = bootstrapped(64);
    let state = stage(&state, join("n2", "b"));
    let plan = state.plan().expect("plans");

    let mut other_members = plan.layout.clone();
    other_members
        .members
        .get_mut(&id("n2"))
        .expect("n2")
        .capacity = 5;
    let bad = Command::Commit {
        expected_version: 1,
        expected_staged_revision: plan.staged.revision,
        layout: Box::new(other_members),
    };
    assert!(matches!(
        state.apply(&bad),
        Err(LayoutError::InvalidLayout { .. })
    ));

    let mut skipped_version = plan.layout.clone();
    skipped_version.version = 7;
    let bad = Command::Commit {
        expected_version: 1,
        expected_staged_revision: plan.staged.revision,
        layout: Box::new(skipped_version),
    };
    assert!(matches!(
        state.apply(&bad),
        Err(LayoutError::InvalidLayout { .. })
    ));

    let mut other_cluster = plan.layout.clone();
    other_cluster.cluster_id = "c2".into();
    let bad = Command::Commit {
        expected_version: 1,
        expected_staged_revision: plan.staged.revision,
        layout: Box::new(other_cluster),
    };
    assert!(matches!(
        state.apply(&bad),
        Err(LayoutError::ClusterMismatch { .. })
    ));
}

#[test]
fn commit_with_nothing_staged_is_refused() {
    let state = three_nodes();
    assert_eq!(state.plan(), Err(LayoutError::NothingStaged));
    let layout = (**state.layout.as_ref().expect("layout")).clone();
    let mut next = layout.clone();
    next.version += 1;
    let command = Command::Commit {
        expected_version: layout.version,
        expected_staged_revision: state.staged.revision,
        layout: Box::new(next),
    };
    assert_eq!(state.apply(&command), Err(LayoutError::NothingStaged));
}

#[test]
fn new_holders_sync_while_the_old_ones_stay_sources() {
    let state = settled_nodes(3);
    let before = state.layout.clone().expect("layout");
    let state = stage(&state, join("n4", "a"));
    let state = stage(&state, join("n5", "b"));
    let state = commit(&state);
    let layout = state.layout.clone().expect("layout");
    assert_eq!(layout.version, before.version + 1);
    assert_eq!(layout.epoch, before.epoch + 1);
    assert!(!layout.transitions.is_empty());
    for p in 0..64u16 {
        let old = before.assignment.replicas(p);
        let new = layout.assignment.replicas(p);
        let mut gained: Vec<&NodeId> = new.iter().filter(|n| !old.contains(n)).collect();
        gained.sort();
        let mut lost: Vec<&NodeId> = old.iter().filter(|n| !new.contains(n)).collect();
        lost.sort();
        match layout.transition(p) {
            None => assert!(
                gained.is_empty(),
                "partition {p} gained {gained:?} unsynced"
            ),
            Some(t) => {
                assert_eq!(t.syncing.keys().collect::<Vec<_>>(), gained);
                assert!(t.syncing.values().all(|since| *since == layout.epoch));
                assert_eq!(t.sources.iter().collect::<Vec<_>>(), lost);
            }
        }
        // Reads count the nodes that had the data; writes reach them and the new ones.
        let mut holders = layout.data_holders(p);
        holders.sort();
        let mut had = old.to_vec();
        had.sort();
        assert_eq!(holders, had, "partition {p}");
        let writes = layout.write_set(p);
        assert!(old.iter().chain(new).all(|n| writes.contains(n)));
    }
    // n4 reports first: partitions that n5 also syncs stay in transition.
    let state = done(&state, "n4");
    let after_n4 = state.layout.clone().expect("layout");
    assert_eq!(after_n4.epoch, layout.epoch + 1);
    assert_eq!(
        after_n4.version, layout.version,
        "completion is not a commit"
    );
    assert!(after_n4.syncing_of(&id("n4")).is_empty());
    assert!(!after_n4.syncing_of(&id("n5")).is_empty());
    // A repeated report changes nothing, not even the epoch.
    let again = done(&state, "n4");
    assert_eq!(again, state);
    let state = done(&state, "n5");
    let layout = state.layout.clone().expect("layout");
    assert!(layout.transitions.is_empty());
    for p in 0..64u16 {
        assert_eq!(layout.data_holders(p), layout.assignment.replicas(p));
    }
}

#[test]
fn a_report_for_another_epoch_is_ignored() {
    let state = settled_nodes(3);
    let state = stage(&state, join("n4", "a"));
    let state = commit(&state);
    let layout = state.layout.clone().expect("layout");
    let (p, since) = layout.syncing_of(&id("n4"))[0];
    let stale = Command::TransferDone {
        node: id("n4"),
        partitions: vec![(p, since - 1)],
    };
    assert_eq!(state.apply(&stale).expect("applies"), state);
    let wrong_node = Command::TransferDone {
        node: id("n1"),
        partitions: vec![(p, since)],
    };
    assert_eq!(state.apply(&wrong_node).expect("applies"), state);
}

#[test]
fn a_leaving_node_stays_a_source_until_its_partitions_are_confirmed() {
    let state = settled_nodes(4);
    let held = state
        .layout
        .as_ref()
        .expect("layout")
        .assignment
        .partitions_of(&id("n2"));
    let state = stage(&state, leave("n2", LeaveMode::Graceful));
    let state = commit(&state);
    let layout = state.layout.clone().expect("layout");
    assert_eq!(layout.members[&id("n2")].state, MemberState::Leaving);
    assert_eq!(layout.assignment.owned(&id("n2")), 0);
    assert_eq!(
        state.apply(&Command::Stage {
            change: leave("n2", LeaveMode::Graceful)
        }),
        Err(LayoutError::AlreadyLeaving { node: "n2".into() })
    );
    for p in &held {
        let t = layout.transition(*p).expect("in transition");
        assert_eq!(t.sources, vec![id("n2")]);
        assert!(layout.data_holders(*p).contains(&id("n2")));
        assert!(layout.write_set(*p).contains(&id("n2")));
    }
    // A later commit does not drop it while it still holds data for someone.
    let state = stage(&state, join("n5", "b"));
    let state = commit(&state);
    let layout = state.layout.clone().expect("layout");
    assert_eq!(layout.members[&id("n2")].state, MemberState::Leaving);
    for p in &held {
        assert!(layout.data_holders(*p).contains(&id("n2")), "partition {p}");
    }
    // Every receiver but one reports: n2 stays while one partition still needs it.
    let receivers: BTreeSet<NodeId> = layout
        .transitions
        .values()
        .flat_map(|t| t.syncing.keys().cloned())
        .collect();
    let mut state = state;
    let mut receivers = receivers.into_iter();
    let last = receivers.next().expect("a receiver");
    for node in receivers {
        state = done(&state, node.as_str());
    }
    let before_last = state.layout.clone().expect("layout");
    let still_needed = before_last
        .transitions
        .values()
        .any(|t| t.sources.contains(&id("n2")));
    assert_eq!(before_last.members.contains_key(&id("n2")), still_needed);
    let state = done(&state, last.as_str());
    let layout = state.layout.clone().expect("layout");
    assert!(!layout.members.contains_key(&id("n2")), "released, dropped");
    assert!(layout.transitions.is_empty());
}

#[test]
fn forcing_out_every_holder_of_a_partition_is_refused_unless_allowed() {
    let state = settled_nodes(6);
    let layout = state.layout.clone().expect("layout");
    // One node per zone: n1 (a), n2 (b), n3 (c); some partitions live only on them.
    let only_on_them: Vec<u16> = (0..64u16)
        .filter(|p| {
            layout
                .assignment
                .replicas(*p)
                .iter()
                .all(|n| ["n1", "n2", "n3"].contains(&n.as_str()))
        })
        .collect();
    assert!(!only_on_them.is_empty());
    let mut forced = state.clone();
    for n in ["n1", "n2", "n3"] {
        forced = stage(&forced, leave(n, LeaveMode::Force));
    }
    match forced.plan() {
        Err(LayoutError::DataLoss {
            partitions,
            holders,
        }) => {
            assert_eq!(partitions, only_on_them);
            assert_eq!(holders, vec!["n1", "n2", "n3"]);
        }
        other => panic!("expected DataLoss, got {other:?}"),
    }
    // Gracefully, the same three leave with nothing lost: they stay sources.
    let mut graceful = state.clone();
    for n in ["n1", "n2", "n3"] {
        graceful = stage(&graceful, leave(n, LeaveMode::Graceful));
    }
    let graceful = commit(&graceful);
    let layout = graceful.layout.clone().expect("layout");
    for p in &only_on_them {
        assert_eq!(layout.transition(*p).expect("moving").sources.len(), 3);
    }
    let settled = settle(&graceful);
    assert_eq!(settled.layout.as_ref().expect("layout").members.len(), 3);
    // Allowed explicitly: the partitions start empty on their new holders.
    let mut allowed = state.clone();
    for n in ["n1", "n2", "n3"] {
        allowed = stage(&allowed, leave(n, LeaveMode::ForceAllowDataLoss));
    }
    let allowed = commit(&allowed);
    let layout = allowed.layout.clone().expect("layout");
    for p in &only_on_them {
        assert!(layout.transition(*p).is_none());
    }
    assert_eq!(layout.members.len(), 3);
}

#[test]
fn a_node_dropped_while_syncing_is_never_a_source() {
    let state = settled_nodes(3);
    let state = commit(&stage(&state, join("n4", "a")));
    let syncing = state.layout.as_ref().expect("layout").syncing_of(&id("n4"));
    assert!(!syncing.is_empty());
    let state = commit(&stage(&state, leave("n4", LeaveMode::Graceful)));
    let layout = state.layout.clone().expect("layout");
    // n4 never had the data, so it leaves at once and the old holders are holders again.
    assert!(!layout.members.contains_key(&id("n4")));
    assert!(layout.transitions.is_empty());
}

#[test]
fn a_leaving_node_can_join_again() {
    let state = settled_nodes(4);
    let state = commit(&stage(&state, leave("n3", LeaveMode::Graceful)));
    let sourced: Vec<u16> = state
        .layout
        .as_ref()
        .expect("layout")
        .transitions
        .iter()
        .filter(|(_, t)| t.sources.contains(&id("n3")))
        .map(|(p, _)| *p)
        .collect();
    assert!(!sourced.is_empty());
    let state = commit(&stage(&state, join("n3", "c")));
    let layout = state.layout.clone().expect("layout");
    assert_eq!(layout.members[&id("n3")].state, MemberState::Valid);
    assert!(layout.assignment.owned(&id("n3")) > 0);
    // It kept the data of the partitions it was a source of: it does not sync them again.
    let syncing: Vec<u16> = layout
        .syncing_of(&id("n3"))
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert!(sourced.iter().all(|p| !syncing.contains(p)));
}

#[test]
fn the_last_owner_cannot_leave() {
    let state = bootstrapped(16);
    let state = stage(&state, leave("n1", LeaveMode::Graceful));
    assert_eq!(state.plan(), Err(LayoutError::NoOwnersLeft));
}

#[test]
fn staging_rules() {
    let state = bootstrapped(16);
    assert_eq!(
        state.apply(&Command::Stage {
            change: leave("ghost", LeaveMode::Force)
        }),
        Err(LayoutError::UnknownNode {
            node: "ghost".into()
        })
    );
    // Leave of a node whose join is only staged cancels the join.
    let staged = stage(&state, join("n2", "b"));
    let cancelled = stage(&staged, leave("n2", LeaveMode::Graceful));
    assert!(cancelled.staged.is_empty());
    // A join replaces a staged leave of the same node, and vice versa.
    let s = stage(&state, leave("n1", LeaveMode::Graceful));
    let s = stage(&s, join("n1", "z"));
    assert!(s.staged.leaves.is_empty());
    assert_eq!(s.staged.joins[&id("n1")].zone, "z");
    // Two nodes cannot share a peer address.
    let mut clash = spec("n9", "b", 1);
    clash.peer = "n1.peer:7070".into();
    let refused = state.apply(&Command::Stage {
        change: StagedChange::Join {
            node: id("n9"),
            spec: clash,
        },
    });
    assert!(matches!(refused, Err(LayoutError::InvalidJoin { .. })));
    // Capacity 0 and empty addresses are refused.
    let refused = state.apply(&Command::Stage {
        change: StagedChange::Join {
            node: id("n9"),
            spec: spec("n9", "b", 0),
        },
    });
    assert!(matches!(refused, Err(LayoutError::InvalidJoin { .. })));
    // Nothing can be staged before bootstrap.
    assert_eq!(
        LayoutState::default().apply(&Command::Stage {
            change: join("n2", "b")
        }),
        Err(LayoutError::NotBootstrapped)
    );
}

#[test]
fn unstage_some_or_all() {
    let state = bootstrapped(16);
    let state = stage(&state, join("n2", "b"));
    let state = stage(&state, join("n3", "c"));
    let some = state
        .apply(&Command::Unstage {
            nodes: vec![id("n2")],
        })
        .expect("unstages");
    assert_eq!(
        some.staged.joins.keys().collect::<Vec<_>>(),
        vec![&id("n3")]
    );
    assert_eq!(
        some.apply(&Command::Unstage {
            nodes: vec![id("n2")]
        }),
        Err(LayoutError::NotStaged { node: "n2".into() })
    );
    let none = state
        .apply(&Command::Unstage { nodes: vec![] })
        .expect("unstages");
    assert!(none.staged.is_empty());
    assert_eq!(none.staged.revision, state.staged.revision + 1);
}

#[test]
fn capacity_change_is_a_join_of_an_existing_member() {
    let state = three_nodes();
    let state = stage(
        &state,
        StagedChange::Join {
            node: id("n1"),
            spec: spec("n1", "a", 2),
        },
    );
    let plan = state.plan().expect("plans");
    assert_eq!(plan.layout.members[&id("n1")].capacity, 2);
    // Three zones, n = 3: one replica per zone whatever the capacity, so nothing moves.
    assert_eq!(plan.transfers(), 0);
    let next = state.apply(&Command::commit(&plan)).expect("commit");
    assert_eq!(next.version(), 3);
}

#[test]
fn layout_round_trips_and_rejects_corruption() {
    let state = three_nodes();
    let layout = state.layout.clone().expect("layout");
    let bytes = layout.encode().expect("encodes");
    let back = Layout::decode(&bytes).expect("decodes");
    assert_eq!(back, *layout);
    assert_eq!(back.digest(), layout.digest());
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    assert!(matches!(
        Layout::decode(&flipped),
        Err(LayoutError::Corrupt { .. })
    ));

    let state_bytes = state.encode().expect("encodes");
    assert_eq!(LayoutState::decode(&state_bytes).expect("decodes"), state);
}

#[test]
fn decoding_checks_invariants_not_only_the_checksum() {
    let layout = (*bootstrapped(4).layout.expect("layout")).clone();
    let mut broken = layout.clone();
    broken.members.get_mut(&id("n1")).expect("n1").state = MemberState::Leaving;
    // Serialization itself succeeds; decoding refuses a layout whose owner is leaving.
    let bytes = codec::seal(&broken).expect("encodes");
    assert!(matches!(
        Layout::decode(&bytes),
        Err(LayoutError::Corrupt { .. })
    ));
}

fn fixture_layout() -> Layout {
    Layout::bootstrap(
        "fixture",
        3,
        2,
        id("n1"),
        JoinSpec {
            zone: "z".into(),
            capacity: 1,
            http: "h:1".into(),
            peer: "p:2".into(),
            region: "default".into(),
        },
    )
    .expect("bootstrap")
}

fn sealed(body: &[u8]) -> Vec<u8> {
    let mut sealed = body.to_vec();
    sealed.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    sealed
}

/// The format-1 bytes of a small layout (before epochs and transitions): decoding them must
/// keep working in every future build (a new format adds a decoder, it never drops this one).
#[test]
fn format_1_fixture_decodes() {
    let fixture: &[u8] = &[
        1, 1, 7, b'f', b'i', b'x', b't', b'u', b'r', b'e', 3, 2, 1, 2, b'n', b'1', 1, b'z', 1, 1,
        3, b'h', b':', b'1', 3, b'p', b':', b'2', 1, 2, 0, 0,
    ];
    let layout = Layout::decode(&sealed(fixture)).expect("decodes");
    assert_eq!(layout, fixture_layout());
    assert_eq!(layout.epoch, layout.version);
    assert!(layout.transitions.is_empty());
}

/// The format-2 bytes of the same layout (version, epoch, ..., transitions; no regions): read
/// with every member in the default region and no replication per region.
#[test]
fn format_2_fixture_decodes() {
    let fixture: &[u8] = &[
        2, 1, 1, 7, b'f', b'i', b'x', b't', b'u', b'r', b'e', 3, 2, 1, 2, b'n', b'1', 1, b'z', 1,
        1, 3, b'h', b':', b'1', 3, b'p', b':', b'2', 1, 2, 0, 0, 0,
    ];
    let layout = Layout::decode(&sealed(fixture)).expect("decodes");
    assert_eq!(layout, fixture_layout());
    assert_eq!(layout.members[&id("n1")].region, DEFAULT_REGION);
    assert!(layout.replication.is_empty());
}

/// A layout in transition round-trips, and its invariants are checked when decoded.
#[test]
fn transitions_round_trip_and_are_checked() {
    let state = commit(&stage(&settled_nodes(3), join("n4", "a")));
    let layout = (**state.layout.as_ref().expect("layout")).clone();
    assert!(!layout.transitions.is_empty());
    assert_eq!(
        Layout::decode(&layout.encode().expect("encodes")),
        Ok(layout.clone())
    );
    let mut broken = layout.clone();
    let (p, t) = broken.transitions.iter_mut().next().expect("one");
    let replica = broken.assignment.replicas(*p)[0].clone();
    t.sources.push(replica);
    t.sources.sort();
    let bytes = codec::seal(&broken).expect("encodes");
    assert!(matches!(
        Layout::decode(&bytes),
        Err(LayoutError::Corrupt { .. })
    ));
}

/// A random operator action.
#[derive(Clone, Debug)]
enum Action {
    Join { node: u8, zone: u8, capacity: u32 },
    Leave { node: u8, force: bool },
    Unstage,
    Commit,
    StaleCommit,
    Done { node: u8 },
    SetBucket { bucket: u8, counter: bool },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0u8..8, 0u8..3, 1u32..4).prop_map(|(node, zone, capacity)| Action::Join { node, zone, capacity }),
        2 => (0u8..8, any::<bool>()).prop_map(|(node, force)| Action::Leave { node, force }),
        1 => Just(Action::Unstage),
        3 => Just(Action::Commit),
        1 => Just(Action::StaleCommit),
        3 => (0u8..8).prop_map(|node| Action::Done { node }),
        1 => (0u8..4, any::<bool>()).prop_map(|(bucket, counter)| Action::SetBucket { bucket, counter }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever operators do: every state keeps the layout invariants, versions only grow by one
    /// per accepted commit, epochs grow with every change, a commit planned against an old
    /// version is always refused, bucket properties move no version, epoch or staging, `apply`
    /// is deterministic, the state round-trips through its encoding, and every plan moves
    /// exactly the replicas the placement says. And no data is
    /// lost: in a model where a node has a partition's data only if it was a holder from the
    /// start or reported the transfer done, every partition's data holders really have it and
    /// there is always at least one.
    #[test]
    fn any_sequence_of_commands_keeps_the_invariants(actions in proptest::collection::vec(action(), 1..32)) {
        let mut state = bootstrapped(32);
        let mut stale: Option<Command> = None;
        let mut has: Vec<BTreeSet<NodeId>> = vec![BTreeSet::from([id("n1")]); 32];
        for action in actions {
            let command = match action {
                Action::Join { node, zone, capacity } => {
                    let name = format!("n{node}");
                    Command::Stage { change: StagedChange::Join { node: id(&name), spec: spec(&name, &format!("z{zone}"), capacity) } }
                }
                Action::Leave { node, force } => Command::Stage { change: StagedChange::Leave {
                    node: id(&format!("n{node}")),
                    mode: if force { LeaveMode::Force } else { LeaveMode::Graceful },
                } },
                Action::Unstage => Command::Unstage { nodes: vec![] },
                Action::Commit => match state.plan() {
                    Ok(plan) => {
                        let before = state.layout.as_ref().expect("layout");
                        prop_assert_eq!(plan.transfers(), plan.layout.assignment.moves_from(&before.assignment));
                        let command = Command::commit(&plan);
                        stale = Some(command.clone());
                        command
                    }
                    Err(_) => continue,
                },
                Action::StaleCommit => match stale.clone() {
                    Some(command) => command,
                    None => continue,
                },
                Action::Done { node } => {
                    let node = id(&format!("n{node}"));
                    let partitions = state.layout.as_ref().expect("layout").syncing_of(&node);
                    Command::TransferDone { node, partitions }
                }
                Action::SetBucket { bucket, counter } => Command::SetBucket {
                    bucket: vec![b'b', bucket],
                    props: BucketProps {
                        datatype: counter.then_some(Datatype::Counter),
                        ..BucketProps::default()
                    },
                },
            };
            let version = state.version();
            let epoch = state.layout.as_ref().expect("layout").epoch;
            let result = state.apply(&command);
            prop_assert_eq!(&result, &state.apply(&command), "apply is deterministic");
            match result {
                Ok(next) => {
                    let layout = next.layout.as_ref().expect("layout");
                    layout.validate().expect("valid layout");
                    match &command {
                        Command::Commit { expected_version, .. } => {
                            prop_assert_eq!(*expected_version, version);
                            prop_assert_eq!(layout.version, version + 1);
                            prop_assert_eq!(layout.epoch, epoch + 1);
                            prop_assert!(next.staged.is_empty());
                            prop_assert!(next.staged.revision > state.staged.revision);
                        }
                        Command::SetBucket { bucket, props } => {
                            prop_assert_eq!(layout.version, version);
                            prop_assert_eq!(layout.epoch, epoch);
                            prop_assert_eq!(&next.staged, &state.staged);
                            prop_assert_eq!(&next.bucket_props(bucket), props);
                        }
                        Command::TransferDone { node, partitions } => {
                            prop_assert_eq!(layout.version, version);
                            prop_assert_eq!(layout.epoch, epoch + u64::from(!partitions.is_empty()));
                            for (p, _) in partitions {
                                has[usize::from(*p)].insert(node.clone());
                            }
                        }
                        _ => {
                            prop_assert_eq!(layout.version, version);
                            prop_assert!(next.staged.revision > state.staged.revision);
                        }
                    }
                    // Nodes out of the layout lose what they had (a wiped disk is allowed).
                    for holders in &mut has {
                        holders.retain(|n| layout.members.contains_key(n));
                    }
                    for (p, holders) in has.iter().enumerate() {
                        let data = layout.data_holders(p as u16);
                        prop_assert!(!data.is_empty(), "partition {} has no data holder", p);
                        for n in &data {
                            prop_assert!(holders.contains(n), "partition {}: {} is trusted without the data", p, n);
                        }
                    }
                    for (node, member) in &layout.members {
                        if member.state == MemberState::Leaving {
                            prop_assert!(layout.transitions.values().any(|t| t.sources.contains(node)));
                        }
                    }
                    prop_assert_eq!(&LayoutState::decode(&next.encode().expect("encodes")).expect("decodes"), &next);
                    state = next;
                }
                Err(error) => {
                    if let Command::Commit { expected_version, .. } = &command {
                        if *expected_version != version {
                            prop_assert_eq!(error, LayoutError::VersionMismatch { expected: *expected_version, current: version });
                        }
                    }
                }
            }
        }
    }
}

fn join_in(name: &str, region: &str, zone: &str) -> StagedChange {
    StagedChange::Join {
        node: id(name),
        spec: JoinSpec {
            region: region.into(),
            ..spec(name, zone, 1)
        },
    }
}

fn replication(pairs: &[(&str, u8)]) -> StagedChange {
    StagedChange::Replication {
        regions: pairs.iter().map(|(r, k)| (r.to_string(), *k)).collect(),
    }
}

/// Three regions of two nodes (plus the bootstrap node n1 in region r1), two replicas per
/// region, committed and settled.
fn three_regions() -> LayoutState {
    let mut state = bootstrapped(64);
    for (name, region, zone) in [
        ("n2", "r1", "b"),
        ("n3", "r2", "a"),
        ("n4", "r2", "b"),
        ("n5", "r3", "a"),
        ("n6", "r3", "b"),
    ] {
        state = stage(&state, join_in(name, region, zone));
    }
    // n1 moves to region r1 (a join of a member updates its spec).
    state = stage(&state, join_in("n1", "r1", "a"));
    state = stage(&state, replication(&[("r1", 2), ("r2", 2), ("r3", 2)]));
    settle(&commit(&state))
}

#[test]
fn replication_per_region_places_each_regions_replicas_in_it() {
    let state = three_regions();
    let layout = state.layout.as_ref().expect("layout");
    assert_eq!(layout.replicas_per_partition(), 6);
    for (p, row) in layout.assignment.iter() {
        let regions: Vec<&str> = row
            .iter()
            .map(|n| layout.region_of(n).expect("member"))
            .collect();
        assert_eq!(
            regions,
            ["r1", "r1", "r2", "r2", "r3", "r3"],
            "partition {p}"
        );
        for pair in row.chunks(2) {
            let zones: BTreeSet<&str> = pair
                .iter()
                .map(|n| layout.members[n].zone.as_str())
                .collect();
            assert_eq!(
                zones.len(),
                2,
                "partition {p}: a region's replicas in two zones"
            );
        }
    }
    // A node joining r3 takes only r3's replicas: r1 and r2 keep theirs.
    let before = layout.clone();
    let state = commit(&stage(&state, join_in("n7", "r3", "c")));
    let after = state.layout.as_ref().expect("layout");
    for (p, row) in after.assignment.iter() {
        assert_eq!(
            row[..4],
            before.assignment.replicas(p)[..4],
            "partition {p}"
        );
    }
    assert!(after.assignment.owned(&id("n7")) > 0);
    // Round trip in format 3, with the replication.
    assert_eq!(
        Layout::decode(&after.encode().expect("encodes")),
        Ok((**after).clone())
    );
    assert_eq!(
        LayoutState::decode(&state.encode().expect("encodes")),
        Ok(state.clone())
    );
}

#[test]
fn replication_is_checked_before_it_is_staged_or_planned() {
    let state = three_regions();
    for bad in [
        replication(&[("r1", 0)]),
        replication(&[("r1", REGION_REPLICAS_MAX + 1)]),
        replication(&[("", 1)]),
        replication(&[(&"r".repeat(REGION_BYTES_MAX + 1), 1)]),
    ] {
        assert!(matches!(
            state.apply(&Command::Stage { change: bad }),
            Err(LayoutError::InvalidReplication { .. })
        ));
    }
    let too_many: Vec<(String, u8)> = (0..=REGIONS_MAX).map(|i| (format!("r{i}"), 1)).collect();
    let too_many = StagedChange::Replication {
        regions: too_many.into_iter().collect(),
    };
    assert!(matches!(
        state.apply(&Command::Stage { change: too_many }),
        Err(LayoutError::InvalidReplication { .. })
    ));
    // A region without owners is refused, with its name; so is a plan whose staged leaves
    // empty a region the staged replication names.
    match state.apply(&Command::Stage {
        change: replication(&[("r1", 2), ("r9", 2)]),
    }) {
        Err(LayoutError::InvalidReplication { reason }) => assert!(reason.contains("r9")),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let staged = stage(&state, replication(&[("r1", 2), ("r2", 1)]));
    let staged = stage(&staged, leave("n3", LeaveMode::Graceful));
    let staged = stage(&staged, leave("n4", LeaveMode::Graceful));
    match staged.plan() {
        Err(LayoutError::InvalidReplication { reason }) => assert!(reason.contains("r2")),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_layout_whose_regions_are_out_of_order_does_not_decode() {
    let state = three_regions();
    let mut broken = (**state.layout.as_ref().expect("layout")).clone();
    let rows: Vec<Vec<NodeId>> = broken
        .assignment
        .iter()
        .map(|(_, row)| row.iter().rev().cloned().collect())
        .collect();
    broken.assignment = Assignment::from_replicas(rows).expect("shape");
    let bytes = codec::seal(&broken).expect("encodes");
    assert!(matches!(
        Layout::decode(&bytes),
        Err(LayoutError::Corrupt { .. })
    ));
}

/// The format-3 bytes of the fixture layout: format 2 plus the member's region and the
/// layout's replication (empty).
#[test]
fn format_3_fixture_decodes() {
    let fixture: &[u8] = &[
        3, 1, 1, 7, b'f', b'i', b'x', b't', b'u', b'r', b'e', 3, 2, 1, 2, b'n', b'1', 1, b'z', 1,
        1, 3, b'h', b':', b'1', 3, b'p', b':', b'2', 7, b'd', b'e', b'f', b'a', b'u', b'l', b't',
        1, 2, 0, 0, 0, 0,
    ];
    let layout = fixture_layout();
    assert_eq!(Layout::decode(&sealed(fixture)).expect("decodes"), layout);
    // Format 4 changed the state (buckets), not the layout: the same bytes after the format.
    let encoded = layout.encode().expect("encodes");
    assert_eq!(encoded[0], codec::FORMAT);
    assert_eq!(&encoded[1..encoded.len() - 4], &fixture[1..]);
}

/// The fixture layout's bytes after the format byte (formats 3 and 4 encode a layout alike).
const FIXTURE_LAYOUT_BODY: &[u8] = &[
    1, 1, 7, b'f', b'i', b'x', b't', b'u', b'r', b'e', 3, 2, 1, 2, b'n', b'1', 1, b'z', 1, 1, 3,
    b'h', b':', b'1', 3, b'p', b':', b'2', 7, b'd', b'e', b'f', b'a', b'u', b'l', b't', 1, 2, 0, 0,
    0, 0,
];

/// The state of a cluster bootstrapped with the fixture layout.
fn fixture_state() -> LayoutState {
    LayoutState::default()
        .apply(&Command::Bootstrap {
            layout: fixture_layout(),
        })
        .expect("bootstraps")
}

/// The format-3 bytes of a whole state (a snapshot's payload: layout, staged changes, no
/// buckets) read back with no bucket properties, in every future build.
#[test]
fn format_3_state_fixture_decodes_with_no_buckets() {
    // Format 3, Some(layout), the layout, then staged: revision 1, no joins, no leaves, no
    // replication.
    let mut fixture = vec![3u8, 1];
    fixture.extend_from_slice(FIXTURE_LAYOUT_BODY);
    fixture.extend_from_slice(&[1, 0, 0, 0]);
    let state = LayoutState::decode(&sealed(&fixture)).expect("decodes");
    assert_eq!(state, fixture_state());
    assert!(state.buckets.is_empty());
    assert_eq!(state.bucket_props(b"carts"), BucketProps::default());
}

/// The format-4 bytes of a state with one bucket's properties: pinned, so a change of the
/// encoding is a new format, not an accident.
#[test]
fn format_4_state_with_buckets_is_pinned_and_round_trips() {
    let props = BucketProps {
        datatype: Some(Datatype::Counter),
        conflict: Conflict::Siblings,
        ttl_secs: Some(60),
        ttl_sliding: true,
        salt: 4,
    };
    let state = fixture_state()
        .apply(&Command::SetBucket {
            bucket: b"b".to_vec(),
            props: props.clone(),
        })
        .expect("applies");
    let mut fixture = vec![4u8, 1];
    fixture.extend_from_slice(FIXTURE_LAYOUT_BODY);
    fixture.extend_from_slice(&[1, 0, 0, 0]);
    // One bucket: name [b'b'], Some(Counter), Siblings, Some(60), sliding, salt 4.
    fixture.extend_from_slice(&[1, 1, b'b', 1, 1, 0, 1, 60, 1, 4]);
    let back = LayoutState::decode(&sealed(&fixture)).expect("decodes");
    assert_eq!(back, state);
    assert!(back.keys.is_empty());
    // Format 5 writes the same bytes, then the (empty) keys.
    let encoded = state.encode().expect("encodes");
    assert_eq!(encoded[0], 5);
    assert_eq!(&encoded[1..encoded.len() - 5], &fixture[1..]);
    assert_eq!(encoded[encoded.len() - 5], 0);
    let back = LayoutState::decode(&encoded).expect("decodes");
    assert_eq!(back, state);
    assert_eq!(back.bucket_props(b"b"), props);
    assert_eq!(back.bucket_props(b"other"), BucketProps::default());
}

fn api_key(hash: u8, admin: bool, buckets: &[(&[u8], Access)]) -> ApiKey {
    ApiKey {
        hash: [hash; 32],
        admin,
        buckets: buckets.iter().map(|(b, a)| (b.to_vec(), *a)).collect(),
    }
}

fn put_key(state: &LayoutState, name: &str, key: ApiKey) -> Result<LayoutState, LayoutError> {
    state.apply(&Command::PutKey {
        name: name.to_string(),
        key,
    })
}

/// The format-5 bytes of a state with one API key: pinned, and read back.
#[test]
fn format_5_state_with_keys_is_pinned_and_round_trips() {
    let state = put_key(
        &fixture_state(),
        "ci",
        api_key(9, false, &[(b"b", Access::ReadWrite)]),
    )
    .expect("applies");
    let encoded = state.encode().expect("encodes");
    let mut fixture = vec![5u8, 1];
    fixture.extend_from_slice(FIXTURE_LAYOUT_BODY);
    fixture.extend_from_slice(&[1, 0, 0, 0]);
    // No buckets; one key: name "ci", hash 32 x 9, not admin, one bucket b"b" ReadWrite (2).
    fixture.extend_from_slice(&[0, 1, 2, b'c', b'i']);
    fixture.extend_from_slice(&[9; 32]);
    fixture.extend_from_slice(&[0, 1, 1, b'b', 2]);
    assert_eq!(&encoded[..encoded.len() - 4], fixture.as_slice());
    assert_eq!(LayoutState::decode(&encoded).expect("decodes"), state);
}

/// Keys are added once per name and per secret, revoked once, bounded, validated, and move
/// no version, epoch or staging.
#[test]
fn api_keys_are_added_and_revoked_with_their_limits() {
    let state = stage(&three_nodes(), join("n4", "a"));
    let layout = state.layout.clone().expect("layout");
    let next = put_key(&state, "reader", api_key(1, false, &[(b"b", Access::Read)])).expect("adds");
    assert!(next.keys["reader"].may_read(b"b"));
    assert!(!next.keys["reader"].may_write(b"b"));
    let after = next.layout.clone().expect("layout");
    assert_eq!((after.version, after.epoch), (layout.version, layout.epoch));
    assert_eq!(next.staged, state.staged);

    assert!(matches!(
        put_key(&next, "reader", api_key(2, true, &[])),
        Err(LayoutError::KeyExists { .. })
    ));
    assert!(matches!(
        put_key(&next, "other", api_key(1, true, &[])),
        Err(LayoutError::InvalidKey { reason, .. }) if reason.contains("same secret")
    ));
    assert!(matches!(
        put_key(&next, "bad name", api_key(3, true, &[])),
        Err(LayoutError::InvalidKey { .. })
    ));
    assert!(matches!(
        put_key(
            &next,
            "empty-bucket",
            api_key(3, false, &[(b"", Access::Read)])
        ),
        Err(LayoutError::InvalidKey { .. })
    ));
    let many: Vec<(Vec<u8>, Access)> = (0..=KEY_BUCKETS_MAX)
        .map(|i| (format!("b{i}").into_bytes(), Access::Read))
        .collect();
    let wide = ApiKey {
        hash: [4; 32],
        admin: false,
        buckets: many.into_iter().collect(),
    };
    assert!(matches!(
        put_key(&next, "wide", wide),
        Err(LayoutError::InvalidKey { .. })
    ));

    let mut full = next.clone();
    for i in 0..KEYS_MAX - 1 {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(i as u64 + 100).to_le_bytes());
        full.keys.insert(
            format!("k{i}"),
            ApiKey {
                hash,
                admin: false,
                buckets: Default::default(),
            },
        );
    }
    assert!(matches!(
        put_key(&full, "one-more", api_key(5, false, &[])),
        Err(LayoutError::InvalidKey { reason, .. }) if reason.contains("at most")
    ));

    let revoked = next
        .apply(&Command::RevokeKey {
            name: "reader".into(),
        })
        .expect("revokes");
    assert_eq!(revoked, state);
    assert!(matches!(
        revoked.apply(&Command::RevokeKey {
            name: "reader".into()
        }),
        Err(LayoutError::UnknownKey { .. })
    ));
    // The keys survive a commit.
    let committed = commit(&next);
    assert!(committed.keys.contains_key("reader"));
}

/// `SetBucket` is the last variant of the log's commands: the entries written before it
/// existed keep their indices (postcard writes the variant index first).
#[test]
fn set_bucket_is_appended_to_the_commands() {
    let transfer = postcard::to_allocvec(&Command::TransferDone {
        node: id("n1"),
        partitions: vec![],
    })
    .expect("encodes");
    assert_eq!(transfer[0], 4);
    let set = postcard::to_allocvec(&Command::SetBucket {
        bucket: b"b".to_vec(),
        props: BucketProps::default(),
    })
    .expect("encodes");
    assert_eq!(set[0], 5);
    let put = postcard::to_allocvec(&Command::PutKey {
        name: "k".into(),
        key: api_key(1, false, &[]),
    })
    .expect("encodes");
    assert_eq!(put[0], 6);
    let revoke = postcard::to_allocvec(&Command::RevokeKey { name: "k".into() }).expect("encodes");
    assert_eq!(revoke[0], 7);
}

fn set_bucket(state: &LayoutState, bucket: &[u8], props: BucketProps) -> LayoutState {
    state
        .apply(&Command::SetBucket {
            bucket: bucket.to_vec(),
            props,
        })
        .expect("applies")
}

/// Bucket properties are replicated state but not a layout change: no version, epoch or
/// staged revision moves, and the staging is kept.
#[test]
fn setting_a_bucket_moves_no_version() {
    let state = stage(&three_nodes(), join("n4", "a"));
    let layout = state.layout.clone().expect("layout");
    let counter = BucketProps {
        datatype: Some(Datatype::Counter),
        salt: 8,
        ..BucketProps::default()
    };
    let next = set_bucket(&state, b"likes", counter.clone());
    assert_eq!(next.bucket_props(b"likes"), counter);
    assert_eq!(next.bucket_props(b"other"), BucketProps::default());
    let after = next.layout.clone().expect("layout");
    assert_eq!(
        (after.version, after.epoch, after.digest()),
        (layout.version, layout.epoch, layout.digest())
    );
    assert_eq!(next.staged, state.staged);
    // The staging still commits, and the commit keeps the buckets.
    let committed = commit(&next);
    assert_eq!(committed.bucket_props(b"likes"), counter);
    // Before bootstrap too: buckets do not need a layout.
    let empty = set_bucket(&LayoutState::default(), b"likes", counter.clone());
    assert_eq!(empty.version(), 0);
    assert_eq!(empty.bucket_props(b"likes"), counter);
}

/// Setting the defaults drops the bucket's entry: a bucket never set and one set back are the
/// same state.
#[test]
fn a_bucket_set_back_to_the_defaults_is_dropped() {
    let state = three_nodes();
    let lww = BucketProps {
        conflict: Conflict::Lww,
        ..BucketProps::default()
    };
    let set = set_bucket(&state, b"b", lww);
    assert_eq!(set.buckets.len(), 1);
    let back = set_bucket(&set, b"b", BucketProps::default());
    assert_eq!(back, state);
}

/// Invalid properties, names and too many buckets are refused, the state unchanged.
#[test]
fn invalid_bucket_properties_are_refused() {
    let state = three_nodes();
    let refused = |bucket: &[u8], props: BucketProps| refused_by(&state, bucket, props);
    let sliding_alone = BucketProps {
        ttl_sliding: true,
        ..BucketProps::default()
    };
    assert!(refused(b"b", sliding_alone).contains("ttl_sliding"));
    let salted_plain = BucketProps {
        salt: 4,
        ..BucketProps::default()
    };
    assert!(refused(b"b", salted_plain).contains("salt"));
    let lww = BucketProps {
        conflict: Conflict::Lww,
        ..BucketProps::default()
    };
    assert!(refused(b"", lww.clone()).contains("1 to 512"));
    assert!(refused(&[b'x'; BUCKET_BYTES_MAX + 1], lww.clone()).contains("1 to 512"));
    assert!(state
        .apply(&Command::SetBucket {
            bucket: vec![b'x'; BUCKET_BYTES_MAX],
            props: lww.clone(),
        })
        .is_ok());

    let mut full = state.clone();
    for i in 0..BUCKETS_MAX {
        full.buckets
            .insert(format!("b{i}").into_bytes(), lww.clone());
    }
    assert!(refused_by(&full, b"one-more", lww.clone()).contains("at most"));
    // A bucket already set can still change, and one can be set back to the defaults.
    assert!(full
        .apply(&Command::SetBucket {
            bucket: b"b0".to_vec(),
            props: BucketProps {
                ttl_secs: Some(5),
                ..lww
            },
        })
        .is_ok());
    assert!(full
        .apply(&Command::SetBucket {
            bucket: b"b0".to_vec(),
            props: BucketProps::default(),
        })
        .is_ok());
}

fn refused_by(state: &LayoutState, bucket: &[u8], props: BucketProps) -> String {
    match state.apply(&Command::SetBucket {
        bucket: bucket.to_vec(),
        props,
    }) {
        Err(LayoutError::InvalidBucket { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A staged state written in format 2 (no replication, join specs without region) reads
/// back with the default region and nothing staged for replication.
#[test]
fn a_format_2_state_reads_with_the_default_region() {
    let state = stage(&three_nodes(), join("n4", "a"));
    // Encode as format 2 would have: the same postcard without the new fields is what the V2
    // decoders read; build it from the V2 shapes.
    #[derive(Serialize)]
    struct SpecV2<'a> {
        zone: &'a str,
        capacity: u32,
        http: &'a str,
        peer: &'a str,
    }
    let s = spec("n4", "a", 1);
    let staged_v2 = (
        state.staged.revision,
        BTreeMap::from([(
            "n4",
            SpecV2 {
                zone: &s.zone,
                capacity: s.capacity,
                http: &s.http,
                peer: &s.peer,
            },
        )]),
        BTreeMap::<&str, LeaveMode>::new(),
    );
    let mut body = vec![2u8];
    body = postcard::to_extend(&staged_v2, body).expect("encodes");
    let read: Staged = codec::open(&sealed(&body)).expect("decodes");
    assert_eq!(read.replication, None);
    assert_eq!(read.joins[&id("n4")].region, DEFAULT_REGION);
    assert_eq!(read.joins[&id("n4")], s);
}

/// A replication whose assignment would not fit a commit entry is refused when staged: five
/// replicas of 65,536 partitions are 327,680 entries, above the bound.
#[test]
fn a_replication_too_large_for_a_commit_is_refused() {
    let mut state = bootstrapped(65_536);
    for name in ["n2", "n3", "n4", "n5"] {
        state = stage(&state, join(name, "a"));
    }
    const { assert!(5 * 65_536 > ASSIGNMENT_ENTRIES_MAX) };
    match state.apply(&Command::Stage {
        change: replication(&[(DEFAULT_REGION, 5)]),
    }) {
        Err(LayoutError::InvalidReplication { reason }) => {
            assert!(reason.contains("assignment entries"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Four replicas fit (262,144 entries, exactly the bound).
    assert!(state
        .apply(&Command::Stage {
            change: replication(&[(DEFAULT_REGION, 4)]),
        })
        .is_ok());
}
