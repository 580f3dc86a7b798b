//! Unit and property tests of the pure layout model.

use proptest::prelude::*;

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
fn graceful_leave_keeps_the_node_one_version_force_drops_it() {
    let state = three_nodes();
    let state = stage(&state, leave("n2", LeaveMode::Graceful));
    let state = commit(&state);
    let layout = state.layout.clone().expect("layout");
    assert_eq!(layout.members[&id("n2")].state, MemberState::Leaving);
    assert_eq!(layout.assignment.owned(&id("n2")), 0);
    assert_eq!(layout.assignment.replicas_per_partition(), 2);
    assert_eq!(
        state.apply(&Command::Stage {
            change: leave("n2", LeaveMode::Graceful)
        }),
        Err(LayoutError::AlreadyLeaving { node: "n2".into() })
    );
    // The next commit drops the leaving node.
    let state = stage(&state, join("n4", "b"));
    let state = commit(&state);
    let layout = state.layout.clone().expect("layout");
    assert!(!layout.members.contains_key(&id("n2")));

    let state = stage(&state, leave("n4", LeaveMode::Force));
    let state = commit(&state);
    let layout = state.layout.clone().expect("layout");
    assert!(!layout.members.contains_key(&id("n4")));
    assert_eq!(layout.owners().count(), 2);
}

#[test]
fn a_leaving_node_can_join_again() {
    let state = three_nodes();
    let state = commit(&stage(&state, leave("n3", LeaveMode::Graceful)));
    let state = commit(&stage(&state, join("n3", "c")));
    let layout = state.layout.clone().expect("layout");
    assert_eq!(layout.members[&id("n3")].state, MemberState::Valid);
    assert!(layout.assignment.owned(&id("n3")) > 0);
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

/// The format-1 bytes of a small layout: decoding them must keep working in every future
/// build (a new format adds a decoder, it never drops this one).
#[test]
fn format_1_fixture_decodes() {
    let layout = Layout::bootstrap(
        "fixture",
        3,
        2,
        id("n1"),
        JoinSpec {
            zone: "z".into(),
            capacity: 1,
            http: "h:1".into(),
            peer: "p:2".into(),
        },
    )
    .expect("bootstrap");
    let fixture: &[u8] = &[
        1, 1, 7, b'f', b'i', b'x', b't', b'u', b'r', b'e', 3, 2, 1, 2, b'n', b'1', 1, b'z', 1, 1,
        3, b'h', b':', b'1', 3, b'p', b':', b'2', 1, 2, 0, 0,
    ];
    let encoded = layout.encode().expect("encodes");
    assert_eq!(&encoded[..encoded.len() - 4], fixture);
    let mut sealed = fixture.to_vec();
    sealed.extend_from_slice(&crc32c::crc32c(fixture).to_le_bytes());
    assert_eq!(Layout::decode(&sealed).expect("decodes"), layout);
}

/// A random operator action.
#[derive(Clone, Debug)]
enum Action {
    Join { node: u8, zone: u8, capacity: u32 },
    Leave { node: u8, force: bool },
    Unstage,
    Commit,
    StaleCommit,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0u8..8, 0u8..3, 1u32..4).prop_map(|(node, zone, capacity)| Action::Join { node, zone, capacity }),
        2 => (0u8..8, any::<bool>()).prop_map(|(node, force)| Action::Leave { node, force }),
        1 => Just(Action::Unstage),
        3 => Just(Action::Commit),
        1 => Just(Action::StaleCommit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever operators do: every state keeps the layout invariants, versions only grow by one
    /// per accepted commit, a commit planned against an old version is always refused, `apply` is
    /// deterministic, the state round-trips through its encoding, and every plan moves exactly
    /// the replicas the placement says.
    #[test]
    fn any_sequence_of_commands_keeps_the_invariants(actions in proptest::collection::vec(action(), 1..24)) {
        let mut state = bootstrapped(32);
        let mut stale: Option<Command> = None;
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
            };
            let version = state.version();
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
                            prop_assert!(next.staged.is_empty());
                        }
                        _ => prop_assert_eq!(layout.version, version),
                    }
                    prop_assert!(next.staged.revision > state.staged.revision);
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
