//! Membership over real UDP on 127.0.0.1: convergence, layout version spread, failure detection
//! and restart, cluster isolation, and the gossip traffic of a 6-node cluster.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{all_up, config, id, status_of, wait_for};
use yeskv_membership::{Error, GossipTransport, MemberStatus, Membership, MembershipConfig};

const CONVERGE_WITHIN: Duration = Duration::from_secs(10);
/// What `/v1/status` promises: a killed node shows `down` within this.
const DOWN_WITHIN: Duration = Duration::from_secs(10);
const FAST_GOSSIP_MS: u64 = 200;

async fn start(config: MembershipConfig) -> Membership {
    Membership::start(config, GossipTransport::Udp)
        .await
        .expect("membership starts")
}

/// Starts `names[0]` alone, then the others with it as their seed.
async fn start_cluster(
    names: &[&str],
    cluster_id: &str,
    gossip_interval_ms: u64,
) -> Vec<Membership> {
    let first = start(config(names[0], cluster_id, &[], gossip_interval_ms)).await;
    let seed = first.gossip_addr();
    let mut nodes = vec![first];
    for name in &names[1..] {
        nodes.push(start(config(name, cluster_id, &[seed], gossip_interval_ms)).await);
    }
    nodes
}

async fn wait_all_up(nodes: &[Membership], names: &[&str]) {
    for node in nodes {
        wait_for(node, CONVERGE_WITHIN, "all members up", |view| {
            all_up(view, names)
        })
        .await;
    }
}

#[tokio::test]
async fn three_nodes_converge_with_zone_and_addresses() {
    let names = ["n1", "n2", "n3"];
    let started = Instant::now();
    let nodes = start_cluster(&names, "converge", FAST_GOSSIP_MS).await;
    wait_all_up(&nodes, &names).await;
    println!("3 nodes converged in {:?}", started.elapsed());

    for node in &nodes {
        let view = node.view();
        for name in names {
            let member = view.member(&id(name)).expect("member known");
            assert_eq!(member.status, MemberStatus::Up);
            assert_eq!(member.zone, format!("zone-{name}"));
            assert_eq!(member.http_addr, format!("{name}.test:8080"));
            assert_eq!(member.peer_addr, format!("{name}.test:7070"));
            assert_eq!(member.layout_version, 0);
        }
        let me = view.member(&view.self_id).expect("self is a member");
        assert_eq!(me.generation, node.generation());
    }
}

#[tokio::test]
async fn layout_version_propagates_and_never_regresses() {
    let names = ["n1", "n2", "n3"];
    let nodes = start_cluster(&names, "layout", FAST_GOSSIP_MS).await;
    wait_all_up(&nodes, &names).await;

    nodes[1].set_layout_version(7).await.expect("forward");
    assert_eq!(
        nodes[1]
            .view()
            .member(&id("n2"))
            .map(|member| member.layout_version),
        Some(7),
        "the local view changes at once"
    );
    for node in &nodes {
        wait_for(node, CONVERGE_WITHIN, "n2 holds layout 7", |view| {
            view.member(&id("n2"))
                .is_some_and(|member| member.layout_version == 7)
        })
        .await;
    }
    assert!(matches!(
        nodes[1].set_layout_version(6).await,
        Err(Error::LayoutVersionRegressed {
            current: 7,
            requested: 6
        })
    ));
}

/// Kills the third of three nodes, measures how long the two others take to see it down, then
/// restarts it on the same address and waits until both see its new generation up.
async fn kill_and_restart(cluster_id: &str, gossip_interval_ms: u64) {
    let names = ["n1", "n2", "n3"];
    let mut nodes = start_cluster(&names, cluster_id, gossip_interval_ms).await;
    wait_all_up(&nodes, &names).await;

    let victim = nodes.pop().expect("three nodes");
    let victim_addr = victim.gossip_addr();
    let victim_generation = victim.generation();
    let killed_at = Instant::now();
    drop(victim); // a crash: no goodbye, the socket just goes quiet

    let (down_at_n1, down_at_n2) = tokio::join!(
        async {
            wait_for(&nodes[0], DOWN_WITHIN, "n1 sees n3 down", |view| {
                status_of(view, "n3") == Some(MemberStatus::Down)
            })
            .await;
            killed_at.elapsed()
        },
        async {
            wait_for(&nodes[1], DOWN_WITHIN, "n2 sees n3 down", |view| {
                status_of(view, "n3") == Some(MemberStatus::Down)
            })
            .await;
            killed_at.elapsed()
        },
    );
    println!(
        "time to down: n1 {down_at_n1:?}, n2 {down_at_n2:?} (gossip {gossip_interval_ms} ms, phi 8)"
    );
    assert!(down_at_n1 < DOWN_WITHIN && down_at_n2 < DOWN_WITHIN);
    for node in &nodes {
        let view = node.view();
        assert_eq!(view.members.len(), 3, "a down member stays in the view");
        assert!(view.is_up(&id("n1")) && view.is_up(&id("n2")));
    }

    // Restart on the same address. The crashed task's socket is closed asynchronously, so the
    // bind is retried until it is free.
    let mut restart_config = config(
        "n3",
        cluster_id,
        &[nodes[0].gossip_addr()],
        gossip_interval_ms,
    );
    restart_config.gossip_addr = Some(victim_addr);
    let bind_deadline = Instant::now() + Duration::from_secs(5);
    let restarted = loop {
        match Membership::start(restart_config.clone(), GossipTransport::Udp).await {
            Ok(membership) => break membership,
            Err(Error::Bind { .. }) if Instant::now() < bind_deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("restart failed: {error}"),
        }
    };
    assert!(restarted.generation() > victim_generation);
    let restarted_at = Instant::now();
    for node in &nodes {
        let view = wait_for(node, CONVERGE_WITHIN, "n3 up again", |view| {
            view.member(&id("n3")).is_some_and(|member| {
                member.status == MemberStatus::Up && member.generation == restarted.generation()
            })
        })
        .await;
        assert_eq!(
            view.members.len(),
            3,
            "one member per id across generations"
        );
    }
    println!(
        "gossip {gossip_interval_ms} ms: restarted n3 up again after {:?}",
        restarted_at.elapsed()
    );
    restarted.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_killed_node_is_down_within_10s_and_up_again_after_restart() {
    kill_and_restart("kill-fast", FAST_GOSSIP_MS).await;
}

#[tokio::test]
async fn a_killed_node_is_down_within_10s_at_the_default_interval() {
    kill_and_restart(
        "kill-default",
        yeskv_membership::config::GOSSIP_INTERVAL_MS_DEFAULT,
    )
    .await;
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused() {
    let names = ["n1", "n2"];
    let nodes = start_cluster(&names, "blue", FAST_GOSSIP_MS).await;
    let stranger = start(config(
        "x1",
        "green",
        &[nodes[0].gossip_addr()],
        FAST_GOSSIP_MS,
    ))
    .await;
    wait_all_up(&nodes, &names).await;

    // Wait until the stranger has knocked (and been refused) several times.
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let refused = nodes[0].stats().gossip.foreign_cluster_syns_received;
        let refusals = stranger.stats().gossip.refusals_received;
        if refused >= 5 && refusals >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stranger not refused: {refused} syns, {refusals} refusals"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Members never vanish by themselves, so absence now means it was never admitted.
    for node in &nodes {
        let view = node.view();
        assert!(
            view.member(&id("x1")).is_none(),
            "stranger admitted: {view:#?}"
        );
        assert!(all_up(&view, &names));
    }
    let stranger_view = stranger.view();
    assert_eq!(stranger_view.members.len(), 1, "{stranger_view:#?}");
}

/// Gossip traffic of a converged 6-node cluster, per node, measured over 5 s. Printed for the
/// performance notes; asserted only for sanity.
async fn six_node_gossip_bytes_per_second(gossip_interval_ms: u64) {
    let names = ["n1", "n2", "n3", "n4", "n5", "n6"];
    let cluster_id = format!("six-{gossip_interval_ms}");
    let nodes = start_cluster(&names, &cluster_id, gossip_interval_ms).await;
    wait_all_up(&nodes, &names).await;

    let window = Duration::from_secs(5);
    let before: Vec<_> = nodes.iter().map(|node| node.stats().gossip).collect();
    let started = Instant::now();
    tokio::time::sleep(window).await; // the measurement window itself
    let elapsed = started.elapsed().as_secs_f64();
    let after: Vec<_> = nodes.iter().map(|node| node.stats().gossip).collect();

    let mut sent_total = 0.0;
    for ((name, before), after) in names.iter().zip(&before).zip(&after) {
        let sent = (after.bytes_sent - before.bytes_sent) as f64 / elapsed;
        let received = (after.bytes_received - before.bytes_received) as f64 / elapsed;
        let messages = (after.messages_sent - before.messages_sent) as f64 / elapsed;
        println!(
            "gossip {gossip_interval_ms} ms, {name}: sent {sent:.0} B/s, received {received:.0} B/s, {messages:.1} msg/s"
        );
        assert!(sent > 0.0 && sent < 1_000_000.0, "{name} sent {sent} B/s");
        sent_total += sent;
    }
    println!(
        "gossip {gossip_interval_ms} ms, 6 nodes: mean {:.0} B/s sent per node",
        sent_total / names.len() as f64
    );
    for node in &nodes {
        assert!(
            all_up(&node.view(), &names),
            "nobody flapped during the window"
        );
    }
}

#[tokio::test]
async fn six_node_gossip_bytes_per_second_default_interval() {
    six_node_gossip_bytes_per_second(yeskv_membership::config::GOSSIP_INTERVAL_MS_DEFAULT).await;
}

#[tokio::test]
async fn six_node_gossip_bytes_per_second_fast_interval() {
    six_node_gossip_bytes_per_second(FAST_GOSSIP_MS).await;
}

#[tokio::test]
async fn gossip_defaults_to_the_peer_address_port() {
    // Find a free port by binding, then let the membership bind the same number over UDP.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind probe");
    let port = probe.local_addr().expect("probe addr").port();
    drop(probe);
    let mut config = config("n1", "port", &[], FAST_GOSSIP_MS);
    config.peer_addr = format!("127.0.0.1:{port}");
    config.gossip_addr = None;
    let node = start(config).await;
    assert_eq!(node.gossip_addr(), SocketAddr::from(([127, 0, 0, 1], port)));
}

fn sealed(seed: u8) -> GossipTransport {
    use yeskv_core::keyring::{Keyring, Purpose};
    let ring = Keyring::new(vec![[seed; 32]]).expect("ring");
    GossipTransport::SealedUdp(ring.derive(Purpose::Gossip))
}

/// Sealed gossip: nodes with the same keyring converge (and see a killed node down); a node
/// with another keyring never shows up, and its packets are counted as refused; a replayed or
/// forged packet changes nothing (a forged `Ack` cannot be produced without the key, and
/// garbage sent to the port is dropped).
#[tokio::test]
async fn sealed_gossip_admits_only_the_keyring() {
    let names = ["n1", "n2", "n3"];
    let first = Membership::start(config("n1", "sealed", &[], FAST_GOSSIP_MS), sealed(1))
        .await
        .expect("starts");
    let seed = first.gossip_addr();
    let mut nodes = vec![first];
    for name in &names[1..] {
        nodes.push(
            Membership::start(config(name, "sealed", &[seed], FAST_GOSSIP_MS), sealed(1))
                .await
                .expect("starts"),
        );
    }
    wait_all_up(&nodes, &names).await;

    let stranger = Membership::start(config("x1", "sealed", &[seed], FAST_GOSSIP_MS), sealed(2))
        .await
        .expect("starts");
    // Plaintext chitchat and random bytes aimed at the gossip port.
    let plain = start(config("x2", "sealed", &[seed], FAST_GOSSIP_MS)).await;
    let noise = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for i in 0..20u8 {
        noise.send_to(&[i; 200], seed).await.expect("send");
    }
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while nodes[0].stats().gossip.sealed_refused < 30 {
        assert!(Instant::now() < deadline, "refusals not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in &nodes {
        let view = node.view();
        assert!(view.member(&id("x1")).is_none(), "other keyring admitted");
        assert!(view.member(&id("x2")).is_none(), "plaintext node admitted");
        assert!(all_up(&view, &names));
    }
    assert!(stranger.view().member(&id("n1")).is_none());
    drop(plain);
}
