//! Helpers shared by the integration tests: node configs on loopback and waiting on the view.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use yeskv_core::NodeId;
use yeskv_membership::{MemberStatus, Membership, MembershipConfig, MembershipView};

/// A node id from a test literal.
pub fn id(name: &str) -> NodeId {
    NodeId::new(name).expect("valid test node id")
}

/// A config for node `name` gossiping on 127.0.0.1 (port 0 unless `gossip_addr` is given), with
/// recognizable zone and addresses: zone `zone-{name}`, http `{name}.test:8080`, peer
/// `{name}.test:7070`.
pub fn config(
    name: &str,
    cluster_id: &str,
    seeds: &[SocketAddr],
    gossip_interval_ms: u64,
) -> MembershipConfig {
    let mut config = MembershipConfig::new(
        id(name),
        cluster_id,
        format!("zone-{name}"),
        format!("{name}.test:8080"),
        format!("{name}.test:7070"),
    );
    config.gossip_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.seeds = seeds.iter().map(SocketAddr::to_string).collect();
    config.gossip_interval_ms = gossip_interval_ms;
    config
}

/// Waits until `condition` holds for `membership`'s view, or panics after `within` with the view.
pub async fn wait_for(
    membership: &Membership,
    within: Duration,
    what: &str,
    mut condition: impl FnMut(&MembershipView) -> bool,
) -> MembershipView {
    let mut views = membership.subscribe();
    let outcome = match tokio::time::timeout(within, views.wait_for(|view| condition(view))).await {
        Ok(Ok(view)) => Some(view.clone()),
        _ => None,
    };
    match outcome {
        Some(view) => view,
        None => panic!(
            "{what}: not within {within:?}; view of {}: {:#?}",
            membership.view().self_id,
            membership.view()
        ),
    }
}

/// Whether `view` holds exactly `names`, all up.
pub fn all_up(view: &MembershipView, names: &[&str]) -> bool {
    view.members.len() == names.len() && names.iter().all(|name| view.is_up(&id(name)))
}

/// The status `view` gives `name`, if it knows it.
pub fn status_of(view: &MembershipView, name: &str) -> Option<MemberStatus> {
    view.member(&id(name)).map(|member| member.status)
}
