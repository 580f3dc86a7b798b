//! Membership on the in-process memory network, in virtual time (`start_paused`): the same code
//! as over UDP, driven by tokio's paused clock. Partitions, forgetting, and message loss.

mod support;

use std::time::Duration;

use support::{all_up, config, id, status_of, wait_for};
use tokio::time::Instant;
use yeskv_membership::{
    Error, GossipTransport, MemberStatus, Membership, MemoryNetwork, TransportExt,
};

const GOSSIP_MS: u64 = 200;
const WITHIN: Duration = Duration::from_secs(30);

async fn start_cluster(names: &[&str], transport: impl Fn() -> GossipTransport) -> Vec<Membership> {
    let mut nodes: Vec<Membership> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let seeds: Vec<_> = nodes
            .first()
            .map(Membership::gossip_addr)
            .into_iter()
            .collect();
        let generation = 1000 + index as u64;
        nodes.push(
            Membership::start_with_generation(
                config(name, "memory", &seeds, GOSSIP_MS),
                transport(),
                generation,
            )
            .await
            .expect("membership starts"),
        );
    }
    for node in &nodes {
        wait_for(node, WITHIN, "all up", |view| all_up(view, names)).await;
    }
    nodes
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_node_goes_down_can_be_forgotten_and_returns_when_healed() {
    let network = MemoryNetwork::default();
    let names = ["n1", "n2", "n3"];
    let nodes = start_cluster(&names, || GossipTransport::Memory(network.clone())).await;
    let addr = |index: usize| nodes[index].gossip_addr();

    // Cut n3 off from both others.
    let cut_at = Instant::now();
    network.remove_link(addr(2), addr(0)).await;
    network.remove_link(addr(2), addr(1)).await;
    for node in &nodes[..2] {
        wait_for(node, WITHIN, "n3 down", |view| {
            status_of(view, "n3") == Some(MemberStatus::Down)
        })
        .await;
    }
    println!(
        "virtual time to down after a partition: {:?}",
        cut_at.elapsed()
    );
    assert!(cut_at.elapsed() < Duration::from_secs(10));
    // And n3, alone, sees both others down, itself up.
    wait_for(&nodes[2], WITHIN, "n3 sees the others down", |view| {
        view.down().count() == 2 && view.is_up(&id("n3"))
    })
    .await;

    // An up member cannot be forgotten; a down one can, and stays forgotten while it is dead.
    assert!(matches!(
        nodes[0].forget(&id("n2")),
        Err(Error::CannotForget { .. })
    ));
    assert!(nodes[0].forget(&id("n3")).expect("n3 is down"));
    assert_eq!(status_of(&nodes[0].view(), "n3"), None);
    let forgotten_until = Instant::now() + Duration::from_secs(3);
    let mut views = nodes[0].subscribe();
    while let Ok(Ok(())) = tokio::time::timeout_at(forgotten_until, views.changed()).await {
        assert_eq!(
            status_of(&views.borrow_and_update(), "n3"),
            None,
            "n3 came back while dead"
        );
    }

    // Heal: n3 is heard live again and comes back everywhere.
    network.add_link(addr(2), addr(0)).await;
    network.add_link(addr(2), addr(1)).await;
    for node in &nodes {
        wait_for(node, WITHIN, "healed", |view| all_up(view, &names)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn layout_version_spreads_despite_message_loss() {
    let network = MemoryNetwork::default();
    let names = ["n1", "n2", "n3", "n4"];
    let nodes = start_cluster(&names, || {
        GossipTransport::Custom(network.clone().drop_message(0.2))
    })
    .await;
    nodes[3].set_layout_version(3).await.expect("forward");
    for node in &nodes {
        wait_for(node, WITHIN, "n4 holds layout 3", |view| {
            view.member(&id("n4"))
                .is_some_and(|member| member.layout_version == 3)
        })
        .await;
    }
    for node in &nodes {
        assert!(
            all_up(&node.view(), &names),
            "20% loss must not make anyone flap"
        );
    }
}
