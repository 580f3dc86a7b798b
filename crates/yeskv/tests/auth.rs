//! API keys, signed contexts and sealed gossip on real node processes: a 3-node cluster with
//! `--auth` and a cluster keyring, formed with the first admin key (`--admin-key-file`).
//!
//! - no key → 401, a read-only key writing → 403 and nothing written, a write key writes, the
//!   admin key plans, commits, creates and revokes keys; a revoked key → 401 on every node;
//! - a tampered context → 400 and the object unchanged;
//! - nodes with the same keyring form a cluster over sealed gossip, and a node with another
//!   keyring never shows up in their members (its packets are counted as refused);
//! - a genuine gossip packet captured on the wire and replayed changes nothing; the same
//!   message sealed outside the replay window, under another key, or unsealed is dropped.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{admin_key, bearer, bin, form, free_port, request, start_nodes, wait_until, Node};

/// Runs the CLI with `args` (and `YESKV_KEY` when given); returns stdout, panics on failure.
fn cli(key: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(bin());
    command.args(args).env_remove("YESKV_KEY");
    if let Some(key) = key {
        command.env("YESKV_KEY", key);
    }
    let out = command.output().expect("run yeskv");
    assert!(
        out.status.success(),
        "yeskv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keys_permissions_and_signed_contexts_on_three_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keyring = dir.path().join("cluster.keys");
    let admin_file = dir.path().join("admin.key");
    cli(
        None,
        &["keyring", "new", "--out", keyring.to_str().expect("utf-8")],
    );
    let keyring_arg = keyring.to_str().expect("utf-8");
    let admin_arg = admin_file.to_str().expect("utf-8");
    let nodes = start_nodes(
        dir.path(),
        &["n1", "n2", "n3"],
        &["--auth", "--cluster-keys", keyring_arg],
        &["--admin-key-file", admin_arg],
    );
    // The first node writes the admin key (0600) and registers it.
    let admin = admin_key(&admin_file, Duration::from_secs(30));
    assert!(admin.starts_with("ykv_"), "{admin}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&admin_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin_auth = bearer(&admin);
    let as_admin = [("authorization", admin_auth.as_str())];
    wait_until("the admin key registered", Duration::from_secs(30), || {
        nodes[0].req("GET", "/v1/admin/keys", &as_admin, b"").status == 200
    });
    form(&nodes, &admin);

    // No key: 401 with a reason, everywhere but the open endpoints.
    for n in &nodes {
        let r = n.req("GET", "/v1/kv/b/k", &[], b"");
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.json()["error"]
            .as_str()
            .expect("reason")
            .contains("API key"));
        assert_eq!(n.req("POST", "/v1/cluster/commit", &[], b"").status, 401);
        assert_eq!(n.req("GET", "/v1/status", &[], b"").status, 401);
        let wrong = [("authorization", "Bearer ykv_not-a-key")];
        assert_eq!(n.req("GET", "/v1/kv/b/k", &wrong, b"").status, 401);
        assert_eq!(n.req("GET", "/v1/health", &[], b"").status, 200);
        assert_eq!(n.req("GET", "/metrics", &[], b"").status, 200);
        // The console's page is open; what it shows is not (the /v1/status above).
        assert_eq!(n.req("GET", "/ui", &[], b"").status, 200);
        assert_eq!(n.req("GET", "/ui/app.js", &[], b"").status, 200);
        // CORS: a browser's preflight carries no key and is answered before the key check;
        // every other answer, a refusal included, lets in a page of the node's own address and
        // no other origin.
        let own = format!("http://{}", n.http);
        let origin = [("origin", own.as_str())];
        let preflight = n.req(
            "OPTIONS",
            "/v1/status",
            &[
                ("origin", own.as_str()),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization"),
            ],
            b"",
        );
        assert_eq!(preflight.status, 204, "{}", preflight.text());
        assert_eq!(
            preflight.header("access-control-allow-origin"),
            Some(own.as_str())
        );
        let methods = preflight
            .header("access-control-allow-methods")
            .unwrap_or_default();
        for method in ["GET", "HEAD", "PUT", "POST", "DELETE"] {
            assert!(methods.contains(method), "{methods}");
        }
        assert_eq!(
            preflight.header("access-control-allow-headers"),
            Some("authorization, accept, content-type, x-causal-context")
        );
        assert!(preflight.header("access-control-max-age").is_some());
        let answered = n.req("GET", "/v1/status", &[as_admin[0], origin[0]], b"");
        assert_eq!(answered.status, 200);
        assert_eq!(
            answered.header("access-control-allow-origin"),
            Some(own.as_str())
        );
        let foreign = [as_admin[0], ("origin", "http://127.0.0.1:1")];
        let answered = n.req("GET", "/v1/status", &foreign, b"");
        assert_eq!(answered.status, 200);
        assert_eq!(answered.header("access-control-allow-origin"), None);
        let refused = n.req("GET", "/v1/status", &origin, b"");
        assert_eq!(
            refused.header("access-control-allow-origin"),
            Some(own.as_str())
        );
        let open = n.req("GET", "/v1/health", &origin, b"");
        assert_eq!(
            open.header("access-control-allow-origin"),
            Some(own.as_str())
        );
        assert_eq!(
            open.header("access-control-expose-headers"),
            Some("x-causal-context, x-yeskv-layout-version")
        );
        // An OPTIONS that is not a preflight still meets the key check.
        assert_eq!(n.req("OPTIONS", "/v1/status", &[], b"").status, 401);
    }

    // Keys: one over HTTP, one with the CLI; names are unique, bad input is 400.
    let create = |body: serde_json::Value| {
        nodes[1].req(
            "POST",
            "/v1/admin/keys",
            &as_admin,
            body.to_string().as_bytes(),
        )
    };
    let reader = create(serde_json::json!({"name": "reader", "buckets": {"b": "read"}}));
    assert_eq!(reader.status, 200, "{}", reader.text());
    let reader = reader.json()["key"].as_str().expect("key").to_string();
    let writer = cli(
        Some(&admin),
        &[
            "key",
            "create",
            "writer",
            "--bucket",
            "b=readwrite",
            "--node",
            &format!("http://{}", nodes[2].http),
        ],
    )
    .trim()
    .to_string();
    assert!(writer.starts_with("ykv_") && writer != reader);
    let again = create(serde_json::json!({"name": "reader", "buckets": {"b": "write"}}));
    assert_eq!(again.status, 409, "{}", again.text());
    let bad = create(serde_json::json!({"name": "x", "buckets": {"b": "everything"}}));
    assert_eq!(bad.status, 400, "{}", bad.text());
    let by_reader = [("authorization", format!("Bearer {reader}"))];
    let by_reader: Vec<(&str, &str)> = by_reader.iter().map(|(h, v)| (*h, v.as_str())).collect();
    let writer_auth = bearer(&writer);
    let by_writer = [("authorization", writer_auth.as_str())];
    // A non-admin key cannot manage keys or the cluster.
    assert_eq!(
        nodes[0]
            .req("GET", "/v1/admin/keys", &by_writer, b"")
            .status,
        403
    );
    assert_eq!(
        nodes[0]
            .req("POST", "/v1/cluster/commit", &by_writer, b"")
            .status,
        403
    );
    let listed = cli(
        Some(&admin),
        &[
            "key",
            "list",
            "--node",
            &format!("http://{}", nodes[0].http),
        ],
    );
    assert!(
        listed.contains("reader") && listed.contains("b=read"),
        "{listed}"
    );
    assert!(
        listed.contains("writer") && listed.contains("admin"),
        "{listed}"
    );
    assert!(!listed.contains(&reader) && !listed.contains(&writer));

    // Every node knows the new keys once it applied them.
    for n in &nodes {
        wait_until("the keys reach every node", Duration::from_secs(20), || {
            n.req("GET", "/v1/kv/b/none", &by_writer, b"").status == 404
        });
    }

    // A read-only key writing: 403 with the reason, nothing written.
    let refused = nodes[0].req("PUT", "/v1/kv/b/k", &by_reader, b"sneaky");
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.json()["error"]
        .as_str()
        .expect("reason")
        .contains("may not write bucket \"b\""));
    assert_eq!(
        nodes[0].req("GET", "/v1/kv/b/k", &as_admin, b"").status,
        404
    );
    // Nor another bucket.
    assert_eq!(
        nodes[0].req("GET", "/v1/kv/c/k", &by_reader, b"").status,
        403
    );

    // The write key writes; the read key reads it on every node.
    let written = nodes[0].req("PUT", "/v1/kv/b/k?w=all", &by_writer, b"v1");
    assert_eq!(written.status, 204, "{}", written.text());
    for n in &nodes {
        let r = n.req("GET", "/v1/kv/b/k", &by_reader, b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"v1");
    }

    // A tampered context: 400, and the object is unchanged.
    let read = nodes[1].req("GET", "/v1/kv/b/k", &by_writer, b"");
    let context = read.context().expect("context");
    let mut tampered: Vec<char> = context.chars().collect();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let mut headers = by_writer.to_vec();
    headers.push(("x-causal-context", tampered.as_str()));
    let refused = nodes[1].req("PUT", "/v1/kv/b/k", &headers, b"forged");
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("causal context"),
        "{}",
        refused.text()
    );
    for n in &nodes {
        let r = n.req("GET", "/v1/kv/b/k?r=all", &by_writer, b"");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"v1"[..]));
        assert_eq!(r.context().as_deref(), Some(context.as_str()));
    }
    // The genuine context replaces the value.
    let mut headers = by_writer.to_vec();
    headers.push(("x-causal-context", context.as_str()));
    assert_eq!(
        nodes[2]
            .req("PUT", "/v1/kv/b/k?w=all", &headers, b"v2")
            .status,
        204
    );
    assert_eq!(
        nodes[0]
            .req("GET", "/v1/kv/b/k?r=all", &by_reader, b"")
            .body,
        b"v2"
    );

    // The CLI sends --key / YESKV_KEY.
    let got = cli(
        Some(&reader),
        &[
            "get",
            "b",
            "k",
            "--node",
            &format!("http://{}", nodes[1].http),
        ],
    );
    assert_eq!(got.trim(), "v2");

    // Revoked on one node: refused (401) on every node.
    cli(
        Some(&admin),
        &[
            "key",
            "revoke",
            "writer",
            "--node",
            &format!("http://{}", nodes[1].http),
        ],
    );
    for n in &nodes {
        wait_until(
            "the revocation reaches every node",
            Duration::from_secs(20),
            || n.req("GET", "/v1/kv/b/k", &by_writer, b"").status == 401,
        );
        assert_eq!(n.req("PUT", "/v1/kv/b/k", &by_writer, b"late").status, 401);
    }
    assert_eq!(
        nodes[0]
            .req("DELETE", "/v1/admin/keys/writer", &as_admin, b"")
            .status,
        404
    );
    assert_eq!(
        nodes[0].req("GET", "/v1/kv/b/k", &by_reader, b"").body,
        b"v2"
    );
    // The gossip between them is sealed (and nothing was refused among themselves).
    let status = nodes[0].req("GET", "/v1/status", &as_admin, b"").json();
    assert_eq!(status["gossip_sealed_refused"], 0, "{status}");
}

/// A node with another keyring seeded at a cluster never shows up in its members: its gossip
/// packets do not open there, and are counted.
#[test]
fn a_node_with_another_keyring_stays_out_of_the_gossip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = dir.path().join("ours.keys");
    let theirs = dir.path().join("theirs.keys");
    cli(
        None,
        &["keyring", "new", "--out", ours.to_str().expect("utf-8")],
    );
    cli(
        None,
        &["keyring", "new", "--out", theirs.to_str().expect("utf-8")],
    );
    let nodes = start_nodes(
        dir.path(),
        &["n1", "n2"],
        &["--cluster-keys", ours.to_str().expect("utf-8")],
        &[],
    );
    let n1 = &nodes[0];
    wait_until("n2 in n1's gossip", Duration::from_secs(30), || {
        let status = n1.req("GET", "/v1/status", &[], b"").json();
        status["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == "n2" && m["status"] == "up"))
    });
    let peer1 = n1.args[n1.args.iter().position(|a| a == "--peer").expect("peer") + 1].clone();
    let stranger = Node::start(
        &dir.path().join("x1"),
        &[
            "--node-id",
            "x1",
            "--seed",
            &peer1,
            "--cluster-keys",
            theirs.to_str().expect("utf-8"),
        ],
    );
    wait_until(
        "the stranger's packets refused",
        Duration::from_secs(30),
        || {
            let status = n1.req("GET", "/v1/status", &[], b"").json();
            status["gossip_sealed_refused"].as_u64() >= Some(5)
        },
    );
    for n in &nodes {
        let status = n.req("GET", "/v1/status", &[], b"").json();
        let members = status["members"].as_array().cloned().unwrap_or_default();
        assert!(
            members.iter().all(|m| m["id"] != "x1"),
            "stranger admitted: {status}"
        );
    }
    let seen = request(&stranger.http, "GET", "/v1/status", &[], b"").json();
    let members = seen["members"].as_array().cloned().unwrap_or_default();
    assert!(members.iter().all(|m| m["id"] != "n1"), "{seen}");
}

/// n1's members as `(id, status)` pairs, and its count of dropped gossip packets.
fn gossip_view(n: &Node) -> (Vec<(String, String)>, u64) {
    let status = n.req("GET", "/v1/status", &[], b"").json();
    let mut members: Vec<(String, String)> = status["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| (m["id"].to_string(), m["status"].to_string()))
        .collect();
    members.sort();
    let refused = status["gossip_sealed_refused"].as_u64().expect("counted");
    (members, refused)
}

/// Relays gossip between `n2` (whose only seed is the relay) and `n1` at `target`, keeping a
/// copy of every packet that comes from elsewhere than `target` (n2's), as a wiretap would.
fn relay(socket: UdpSocket, target: SocketAddr, taken: Arc<Mutex<Vec<Vec<u8>>>>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut other: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    while Arc::strong_count(&taken) > 1 {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if from == target {
            if let Some(other) = other {
                let _ = socket.send_to(&buf[..len], other);
            }
        } else {
            other = Some(from);
            taken.lock().expect("lock").push(buf[..len].to_vec());
            let _ = socket.send_to(&buf[..len], target);
        }
    }
}

/// A wiretap between two nodes of a keyring'd cluster keeps n2's sealed gossip. Replayed to n1,
/// a genuine packet changes nothing (chitchat already has its versions) and is not refused; the
/// same message sealed a minute before the replay window (an old packet replayed), sealed under
/// another keyring or for another cluster, sent unsealed, or altered by one bit is dropped and
/// counted, and n1's view stays the same.
#[test]
fn replayed_and_forged_gossip_packets_change_nothing() {
    use yeskv_core::keyring::{Keyring, Purpose};
    use yeskv_membership::sealed;
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = dir.path().join("ours.keys");
    cli(
        None,
        &["keyring", "new", "--out", ours.to_str().expect("utf-8")],
    );
    let keys = Keyring::parse(&std::fs::read_to_string(&ours).expect("keyring"))
        .expect("parses")
        .derive(Purpose::Gossip);
    let stranger = Keyring::new(vec![[42; 32]])
        .expect("one key")
        .derive(Purpose::Gossip);
    let peer1: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let keyring = ["--cluster-keys", ours.to_str().expect("utf-8")];
    let n1 = Node::start(
        &dir.path().join("n1"),
        &[
            &["--node-id", "n1", "--peer", &peer1.to_string()][..],
            &keyring,
        ]
        .concat(),
    );
    let tap = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tap_addr = tap.local_addr().expect("addr");
    let taken = Arc::new(Mutex::new(Vec::new()));
    let relayed = taken.clone();
    let relay = std::thread::spawn(move || relay(tap, peer1, relayed));
    let _n2 = Node::start(
        &dir.path().join("n2"),
        &[
            &["--node-id", "n2", "--seed", &tap_addr.to_string()][..],
            &keyring,
        ]
        .concat(),
    );
    wait_until("n2 up in n1's gossip", Duration::from_secs(30), || {
        let (members, _) = gossip_view(&n1);
        members.len() == 2 && members.iter().all(|(_, status)| status == "\"up\"")
    });
    let captured = std::mem::take(&mut *taken.lock().expect("lock"));
    drop(taken);
    relay.join().expect("relay");
    assert!(!captured.is_empty(), "nothing went through the relay");
    let now_ms = || {
        u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms")
    };
    let plains: Vec<Vec<u8>> = captured
        .iter()
        .map(|p| sealed::open(&keys, "yeskv", now_ms(), p).expect("n2's packets are sealed"))
        .collect();

    let attacker = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let before = gossip_view(&n1);
    // Replays of genuine packets: authentic, so not counted, and harmless.
    for packet in &captured {
        attacker.send_to(packet, peer1).expect("send");
    }
    // Forgeries: each must be dropped and counted.
    let mut forged = Vec::new();
    for plain in &plains {
        let stale = now_ms() - sealed::REPLAY_WINDOW_MS - 60_000;
        forged.push(sealed::seal(&keys, "yeskv", stale, [1; 24], plain));
        forged.push(sealed::seal(&stranger, "yeskv", now_ms(), [2; 24], plain));
        forged.push(sealed::seal(
            &keys,
            "another-cluster",
            now_ms(),
            [3; 24],
            plain,
        ));
        forged.push(plain.clone());
    }
    for packet in &captured {
        let mut flipped = packet.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        forged.push(flipped);
    }
    for packet in &forged {
        attacker.send_to(packet, peer1).expect("send");
    }
    let want = before.1 + forged.len() as u64;
    wait_until("every forgery counted", Duration::from_secs(10), || {
        gossip_view(&n1).1 >= want
    });
    let after = gossip_view(&n1);
    assert_eq!(
        after.1, want,
        "a replayed genuine packet was refused, or more"
    );
    assert_eq!(after.0, before.0, "n1's members changed");
}
