//! The member table: folds what the gossip layer knows into a [`MembershipView`]. Pure: the
//! runtime feeds it [`Observation`]s (one full snapshot of chitchat's node states per refresh);
//! no clock, no sockets, so its rules are tested by properties below.
//!
//! ## Rules
//!
//! chitchat identifies a node *incarnation* by `(node id, generation, gossip address)` and
//! forgets a dead incarnation after a grace period. yeskv wants one entry per node id that says
//! `up` or `down` and never silently vanishes. So, per node id:
//!
//! 1. The record follows the **newest generation whose key-values are complete**; an older
//!    generation never replaces a newer one (a restarted node's previous life is dead by
//!    definition, and its lingering gossip state must not shadow the new one).
//! 2. The record is `Up` iff chitchat's failure detector holds *that* generation live; otherwise
//!    it is `Down`, including when chitchat has no state for the node at all any more.
//! 3. A record, once made, stays until [`MemberTable::forget`]. Forgetting a node that is up is
//!    refused. After a forget, the gossip state chitchat still holds for the forgotten
//!    generation (or older) is ignored while it is not live; a live incarnation (the node came
//!    back) or a newer generation brings the member back.
//! 4. The local node is always present and always `Up`, with the info it was started with; what
//!    peers gossip under its id is ignored (a second process started with the same id shows up
//!    only in the log).
//! 5. At most `members_max` records: observations of further ids are dropped and counted.

use std::collections::{BTreeMap, BTreeSet};

use yeskv_core::NodeId;

use crate::view::{Member, MemberStatus, MembershipView};
use crate::wire::NodeInfo;

/// What the gossip layer knows of one node incarnation at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The node's id.
    pub id: NodeId,
    /// The incarnation's generation.
    pub generation: u64,
    /// Whether the failure detector holds this incarnation live.
    pub live: bool,
    /// Its key-values, when complete and valid.
    pub info: Option<NodeInfo>,
}

/// Why [`MemberTable::forget`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForgetRefused {
    /// The member is up: it would come straight back.
    Up,
    /// The local node cannot forget itself.
    SelfNode,
}

/// The member records of one node; see the module docs for the rules.
#[derive(Clone, Debug)]
pub struct MemberTable {
    self_member: Member,
    /// Every other member, by id.
    others: BTreeMap<NodeId, Member>,
    /// Forgotten ids and the newest generation forgotten for each.
    forgotten: BTreeMap<NodeId, u64>,
    members_max: usize,
    members_over_limit: u64,
}

impl MemberTable {
    /// A table holding only the local node. `members_max` counts the local node too.
    pub fn new(
        self_id: NodeId,
        self_generation: u64,
        self_info: NodeInfo,
        members_max: usize,
    ) -> Self {
        MemberTable {
            self_member: member(self_id, self_generation, self_info, MemberStatus::Up),
            others: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            members_max: members_max.max(1),
            members_over_limit: 0,
        }
    }

    /// The local node's id.
    pub fn self_id(&self) -> &NodeId {
        &self.self_member.id
    }

    /// The local node's record.
    pub fn self_member(&self) -> &Member {
        &self.self_member
    }

    /// Records the layout version the local node now holds.
    pub fn set_self_layout_version(&mut self, layout_version: u64) {
        self.self_member.layout_version = layout_version;
    }

    /// How many observations of new ids were dropped because the table was full (a count of
    /// refreshes × ids, not of distinct nodes).
    pub fn members_over_limit(&self) -> u64 {
        self.members_over_limit
    }

    /// Folds one full snapshot of the gossip state into the records.
    pub fn observe(&mut self, observations: impl IntoIterator<Item = Observation>) {
        // Per id: the newest usable generation with info, and the generations held live.
        let mut newest: BTreeMap<NodeId, (u64, NodeInfo)> = BTreeMap::new();
        let mut live: BTreeSet<(NodeId, u64)> = BTreeSet::new();
        let mut seen: BTreeSet<NodeId> = BTreeSet::new();
        for observation in observations {
            if observation.id == self.self_member.id {
                if observation.generation != self.self_member.generation && observation.live {
                    tracing::warn!(
                        node = %observation.id,
                        generation = observation.generation,
                        "another process gossips under this node's id"
                    );
                }
                continue;
            }
            seen.insert(observation.id.clone());
            if let Some(&forgotten_generation) = self.forgotten.get(&observation.id) {
                if observation.generation <= forgotten_generation && !observation.live {
                    continue;
                }
            }
            if observation.live {
                live.insert((observation.id.clone(), observation.generation));
            }
            if let Some(info) = observation.info {
                let newer = newest
                    .get(&observation.id)
                    .is_none_or(|(generation, _)| observation.generation > *generation);
                if newer {
                    newest.insert(observation.id, (observation.generation, info));
                }
            }
        }

        // A forgotten id comes back only through a live or newer incarnation (handled above by
        // not skipping it); once chitchat holds nothing of it, the tombstone has done its job.
        self.forgotten.retain(|id, _| seen.contains(id));

        for (id, (generation, info)) in newest {
            match self.others.get_mut(&id) {
                Some(record) if generation < record.generation => {}
                Some(record) => {
                    // The same incarnation keeps what this node saw of it.
                    let seen_up = record.seen_up && record.generation == generation;
                    *record = member(id, generation, info, MemberStatus::Down);
                    record.seen_up = seen_up;
                }
                None => {
                    if self.others.len() + 1 >= self.members_max {
                        self.members_over_limit += 1;
                        continue;
                    }
                    self.forgotten.remove(&id);
                    self.others
                        .insert(id.clone(), member(id, generation, info, MemberStatus::Down));
                }
            }
        }
        for record in self.others.values_mut() {
            record.status = if live.contains(&(record.id.clone(), record.generation)) {
                MemberStatus::Up
            } else {
                MemberStatus::Down
            };
            record.seen_up |= record.status == MemberStatus::Up;
        }
    }

    /// Drops the record of `id` (a node removed for good), so it no longer shows as `down`.
    /// Returns whether there was a record.
    pub fn forget(&mut self, id: &NodeId) -> Result<bool, ForgetRefused> {
        if *id == self.self_member.id {
            return Err(ForgetRefused::SelfNode);
        }
        match self.others.get(id) {
            None => Ok(false),
            Some(record) if record.status == MemberStatus::Up => Err(ForgetRefused::Up),
            Some(record) => {
                let generation = record.generation;
                let forgotten = self.forgotten.entry(id.clone()).or_insert(generation);
                *forgotten = (*forgotten).max(generation);
                self.others.remove(id);
                Ok(true)
            }
        }
    }

    /// The current view: every record, sorted by id.
    pub fn view(&self) -> MembershipView {
        let mut members: Vec<Member> = self.others.values().cloned().collect();
        let position = members
            .binary_search_by(|member| member.id.cmp(&self.self_member.id))
            .unwrap_or_else(|insert_at| insert_at);
        members.insert(position, self.self_member.clone());
        MembershipView {
            self_id: self.self_member.id.clone(),
            members,
        }
    }
}

fn member(id: NodeId, generation: u64, info: NodeInfo, status: MemberStatus) -> Member {
    Member {
        id,
        generation,
        zone: info.zone,
        region: info.region,
        http_addr: info.http_addr,
        peer_addr: info.peer_addr,
        layout_version: info.layout_version,
        release: info.release,
        seen_up: status == MemberStatus::Up,
        status,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(name: &str) -> NodeId {
        NodeId::new(name).expect("valid test node id")
    }

    fn info(zone: &str, layout_version: u64) -> NodeInfo {
        NodeInfo {
            zone: zone.to_string(),
            region: crate::wire::DEFAULT_REGION.to_string(),
            http_addr: format!("http-{zone}"),
            peer_addr: format!("peer-{zone}"),
            layout_version,
            release: None,
        }
    }

    fn seen(name: &str, generation: u64, live: bool, layout_version: u64) -> Observation {
        Observation {
            id: id(name),
            generation,
            live,
            info: Some(info(name, layout_version)),
        }
    }

    fn table() -> MemberTable {
        MemberTable::new(id("n1"), 100, info("n1", 0), 16)
    }

    fn status(table: &MemberTable, name: &str) -> Option<(u64, MemberStatus)> {
        table
            .view()
            .member(&id(name))
            .map(|member| (member.generation, member.status))
    }

    #[test]
    fn a_new_table_holds_only_the_local_node_up() {
        let view = table().view();
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.self_id, id("n1"));
        assert!(view.is_up(&id("n1")));
    }

    #[test]
    fn live_members_are_up_and_dead_ones_down_until_forgotten() {
        let mut table = table();
        table.observe([seen("n2", 1, true, 3), seen("n3", 1, true, 3)]);
        assert_eq!(status(&table, "n2"), Some((1, MemberStatus::Up)));
        assert_eq!(
            table.view().member(&id("n2")).map(|m| m.layout_version),
            Some(3)
        );

        table.observe([seen("n2", 1, false, 3), seen("n3", 1, true, 3)]);
        assert_eq!(status(&table, "n2"), Some((1, MemberStatus::Down)));

        // chitchat garbage-collects the dead incarnation: still down, not gone.
        table.observe([seen("n3", 1, true, 3)]);
        assert_eq!(status(&table, "n2"), Some((1, MemberStatus::Down)));

        assert_eq!(table.forget(&id("n2")), Ok(true));
        assert_eq!(status(&table, "n2"), None);
        assert_eq!(table.forget(&id("n2")), Ok(false));
    }

    #[test]
    fn a_member_seen_up_stays_seen_until_it_restarts() {
        let seen_up = |table: &MemberTable| table.view().member(&id("n2")).map(|m| m.seen_up);
        let mut table = table();
        table.observe([seen("n2", 1, false, 3)]);
        assert_eq!(seen_up(&table), Some(false), "only heard of");
        table.observe([seen("n2", 1, true, 3)]);
        assert_eq!(seen_up(&table), Some(true));
        // Its info changes while it is down: still the incarnation seen up.
        table.observe([seen("n2", 1, false, 4)]);
        assert_eq!(seen_up(&table), Some(true));
        assert_eq!(status(&table, "n2"), Some((1, MemberStatus::Down)));
        // A new incarnation has not been seen up yet.
        table.observe([seen("n2", 2, false, 0)]);
        assert_eq!(seen_up(&table), Some(false));
    }

    #[test]
    fn a_restarted_node_is_followed_by_its_new_generation_only() {
        let mut table = table();
        table.observe([seen("n2", 1, true, 3)]);
        // The new incarnation is heard of before the old one is declared dead.
        table.observe([seen("n2", 1, true, 3), seen("n2", 2, true, 0)]);
        assert_eq!(status(&table, "n2"), Some((2, MemberStatus::Up)));
        assert_eq!(
            table.view().member(&id("n2")).map(|m| m.layout_version),
            Some(0)
        );
        // The old generation, even live, never comes back over the new one.
        table.observe([seen("n2", 1, true, 9)]);
        assert_eq!(status(&table, "n2"), Some((2, MemberStatus::Down)));
    }

    #[test]
    fn an_incarnation_without_its_keys_yet_does_not_replace_the_record() {
        let mut table = table();
        table.observe([seen("n2", 1, false, 3)]);
        let keys_missing = Observation {
            id: id("n2"),
            generation: 2,
            live: true,
            info: None,
        };
        table.observe([seen("n2", 1, false, 3), keys_missing]);
        assert_eq!(status(&table, "n2"), Some((1, MemberStatus::Down)));
        // A node whose keys never arrived is not a member at all.
        table.observe([Observation {
            id: id("n9"),
            generation: 1,
            live: true,
            info: None,
        }]);
        assert_eq!(status(&table, "n9"), None);
    }

    #[test]
    fn forgetting_an_up_member_or_the_local_node_is_refused() {
        let mut table = table();
        table.observe([seen("n2", 1, true, 0)]);
        assert_eq!(table.forget(&id("n2")), Err(ForgetRefused::Up));
        assert_eq!(table.forget(&id("n1")), Err(ForgetRefused::SelfNode));
    }

    #[test]
    fn a_forgotten_member_stays_away_unless_it_comes_back_alive() {
        let mut table = table();
        table.observe([seen("n2", 1, false, 0)]);
        assert_eq!(table.forget(&id("n2")), Ok(true));
        // chitchat still gossips the dead incarnation: ignored.
        table.observe([seen("n2", 1, false, 0)]);
        assert_eq!(status(&table, "n2"), None);
        // It was only partitioned away and is heard live again: back.
        table.observe([seen("n2", 1, true, 0)]);
        assert_eq!(status(&table, "n2"), Some((1, MemberStatus::Up)));
        // Forgotten again once dead, then restarted with a newer generation: back as well.
        table.observe([seen("n2", 1, false, 0)]);
        assert_eq!(table.forget(&id("n2")), Ok(true));
        table.observe([seen("n2", 1, false, 0), seen("n2", 5, false, 0)]);
        assert_eq!(status(&table, "n2"), Some((5, MemberStatus::Down)));
    }

    #[test]
    fn gossip_under_the_local_id_is_ignored() {
        let mut table = table();
        table.observe([seen("n1", 999, true, 42)]);
        let view = table.view();
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.member(&id("n1")).map(|m| m.generation), Some(100));
    }

    #[test]
    fn the_table_holds_at_most_members_max_records() {
        let mut table = MemberTable::new(id("n1"), 100, info("n1", 0), 3);
        table.observe([
            seen("n2", 1, true, 0),
            seen("n3", 1, true, 0),
            seen("n4", 1, true, 0),
        ]);
        assert_eq!(table.view().members.len(), 3);
        assert_eq!(table.members_over_limit(), 1);
    }

    fn observation_strategy() -> impl Strategy<Value = Observation> {
        (0..5usize, 1..4u64, any::<bool>(), any::<bool>(), 0..3u64).prop_map(
            |(node, generation, live, complete, layout_version)| Observation {
                id: id(&format!("n{node}")),
                generation,
                live,
                info: complete.then(|| info("z", layout_version)),
            },
        )
    }

    #[derive(Clone, Debug)]
    enum Step {
        Observe(Vec<Observation>),
        Forget(usize),
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => prop::collection::vec(observation_strategy(), 0..8).prop_map(Step::Observe),
            1 => (0..5usize).prop_map(Step::Forget),
        ]
    }

    proptest! {
        /// The invariants of the module docs hold after any sequence of snapshots and forgets.
        #[test]
        fn invariants_hold_for_any_history(steps in prop::collection::vec(step_strategy(), 1..30)) {
            let mut table = MemberTable::new(id("n0"), 2, info("self", 0), 4);
            let mut previous = table.view();
            for step in steps {
                let mut forgotten = None;
                match &step {
                    Step::Observe(observations) => table.observe(observations.clone()),
                    Step::Forget(node) => {
                        let node = id(&format!("n{node}"));
                        if table.forget(&node) == Ok(true) {
                            forgotten = Some(node);
                        }
                    }
                }
                let view = table.view();
                // The local node: present, up, unchanged.
                prop_assert_eq!(view.member(&id("n0")), Some(table.self_member()));
                // Sorted, unique ids, bounded.
                prop_assert!(view.members.windows(2).all(|pair| pair[0].id < pair[1].id));
                prop_assert!(view.members.len() <= 4);
                for before in &previous.members {
                    match view.member(&before.id) {
                        // Generations never go back.
                        Some(now) => prop_assert!(now.generation >= before.generation),
                        // Nobody vanishes except by an explicit forget.
                        None => prop_assert_eq!(Some(&before.id), forgotten.as_ref()),
                    }
                }
                if let Step::Observe(observations) = &step {
                    for member in view.members.iter().filter(|m| m.id != view.self_id) {
                        // Up iff that exact incarnation was observed live.
                        let live = observations
                            .iter()
                            .any(|o| o.id == member.id && o.generation == member.generation && o.live);
                        prop_assert_eq!(member.status == MemberStatus::Up, live);
                    }
                }
                previous = view;
            }
        }
    }
}
