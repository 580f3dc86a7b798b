//! The membership view: who is in the cluster, where they are, and whether they are up. Plain
//! data, no I/O: the node runtime reads it to fill `/v1/status`, route internode RPC and decide
//! which replicas to try.

use std::fmt;

use yeskv_core::NodeId;

/// Whether the failure detector considers a member reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberStatus {
    /// Heartbeats of this member's current generation keep arriving (phi below the threshold).
    Up,
    /// The member was seen, but its current generation's heartbeats stopped (phi above the
    /// threshold), or chitchat no longer knows it at all. It stays `Down` until it comes back or
    /// is forgotten.
    Down,
}

impl MemberStatus {
    /// `"up"` or `"down"`, as `/v1/status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Up => "up",
            MemberStatus::Down => "down",
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member of the cluster, as last heard of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// The incarnation: the node's start time (Unix milliseconds), so a restarted node is told
    /// apart from its previous life. Only the newest generation heard of is kept.
    pub generation: u64,
    /// Zone (failure domain).
    pub zone: String,
    /// Region (see [`crate::wire`]).
    pub region: String,
    /// Client HTTP address (`host:port`).
    pub http_addr: String,
    /// Internode RPC address (`host:port`, TCP).
    pub peer_addr: String,
    /// Version of the cluster layout this member holds.
    pub layout_version: u64,
    /// The release the member runs (`None`: release 0.1.0, which does not say).
    pub release: Option<String>,
    /// Up or down, from the failure detector.
    pub status: MemberStatus,
    /// Whether this node has seen this incarnation up since it started (a member it has only
    /// heard of is `Down` until the detector has heard from it).
    pub seen_up: bool,
}

/// A snapshot of the membership as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipView {
    /// The node that holds this view. It is always among `members`, always `Up`.
    pub self_id: NodeId,
    /// Every member seen and not forgotten, sorted by id, at most one entry per id.
    pub members: Vec<Member>,
}

impl MembershipView {
    /// The member with this id, if known.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members
            .binary_search_by(|member| member.id.cmp(id))
            .ok()
            .and_then(|index| self.members.get(index))
    }

    /// Whether the member with this id is known and up.
    pub fn is_up(&self, id: &NodeId) -> bool {
        self.member(id)
            .is_some_and(|member| member.status == MemberStatus::Up)
    }

    /// The members that are up.
    pub fn up(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|member| member.status == MemberStatus::Up)
    }

    /// The members that are down.
    pub fn down(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|member| member.status == MemberStatus::Down)
    }
}
