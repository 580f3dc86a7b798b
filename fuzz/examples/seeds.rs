//! Writes the seed corpus `fuzz/seeds/<target>/`: a few raw inputs (mode byte 0) per target,
//! each a real encoding made by yeskv's own encoders, so that the fuzzer starts from messages the
//! decoders accept. `scripts/fuzz --seeds` runs it; the seeds are committed.
//!
//! Usage: `cargo run --example seeds -- DIR` (from `fuzz/`).

use std::path::Path;

use openraft::{CommittedLeaderId, EntryPayload};
use yeskv_core::codec::{encode_record, encode_token};
use yeskv_core::{Actor, CausalContext, NodeId, Object, Version, VersionVector};
use yeskv_fuzz::RAW;
use yeskv_layout::raft::{Entry, LogId, SnapshotMeta, StoredSnapshot, Vote};
use yeskv_layout::store::{FileStore, RaftStore};
use yeskv_layout::{Forward, RaftRequest, RaftRpc, RaftRpcResponse};
use yeskv_node::peer::{PeerRequest, PeerResponse};
use yeskv_rpc::frame::{encode_message, FrameKind};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("seed directory");
    let mut input = vec![RAW];
    input.extend_from_slice(bytes);
    std::fs::write(dir.join(name), input).expect("write seed");
}

fn actor(name: &str) -> Actor {
    Actor::new(NodeId::new(name).expect("a node id"), 7)
}

fn raft_messages() -> Vec<(&'static str, RaftRpc)> {
    let snapshot = openraft::raft::InstallSnapshotRequest {
        vote: Vote::new(2, 11),
        meta: SnapshotMeta::default(),
        offset: 0,
        data: b"layout state bytes".to_vec(),
        done: true,
    };
    vec![
        (
            "read_index",
            RaftRpc {
                to: 11,
                body: RaftRequest::Forward(Forward::ReadIndex),
            },
        ),
        (
            "commit",
            RaftRpc {
                to: 11,
                body: RaftRequest::Forward(Forward::Commit {
                    expected_version: Some(3),
                }),
            },
        ),
        (
            "install_snapshot",
            RaftRpc {
                to: 11,
                body: RaftRequest::InstallSnapshot(snapshot),
            },
        ),
    ]
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let dir = Path::new(&dir);
    let max = yeskv_rpc::FRAME_BYTES_MAX_DEFAULT;

    // Internode messages, bare (peer_message: a selector byte, then postcard) and framed.
    let mut stream = Vec::new();
    let hello = yeskv_rpc::Hello {
        protocol_version: yeskv_rpc::PROTOCOL_VERSION_MIN,
        cluster_id: "yeskv".into(),
        node_id: "n1".into(),
        protocol_version_max: yeskv_rpc::PROTOCOL_VERSION,
    };
    stream.extend_from_slice(&encode_message(FrameKind::Hello, 0, &hello, max).expect("hello"));
    let mut selector_4 = vec![4];
    selector_4.extend(postcard::to_allocvec(&hello).expect("hello"));
    write(dir, "peer_message", "hello", &selector_4);
    for (id, (name, rpc)) in raft_messages().into_iter().enumerate() {
        let mut raft = vec![2];
        raft.extend(postcard::to_allocvec(&rpc).expect("raft rpc"));
        write(dir, "peer_message", &format!("raft_{name}"), &raft);
        let request = PeerRequest::Layout(rpc);
        let mut peer = vec![0];
        peer.extend(postcard::to_allocvec(&request).expect("peer request"));
        write(dir, "peer_message", &format!("peer_{name}"), &peer);
        let frame = encode_message(FrameKind::Request, id as u64 + 1, &request, max);
        stream.extend_from_slice(&frame.expect("request frame"));
    }
    let response = PeerResponse::Layout(RaftRpcResponse::WrongNode { node: 12 });
    let mut peer = vec![1];
    peer.extend(postcard::to_allocvec(&response).expect("peer response"));
    write(dir, "peer_message", "peer_response_wrong_node", &peer);
    stream.extend_from_slice(&encode_message(FrameKind::Response, 1, &response, max).expect("r"));
    stream.extend_from_slice(&encode_message(FrameKind::Ping, 0, &(), max).expect("ping"));
    write(dir, "rpc_frame", "session", &stream);

    // Records and tokens.
    let mut object = Object::new();
    let context = CausalContext::empty();
    object.update(
        &context,
        &actor("n1"),
        Version::value(b"v1".to_vec(), 1_000, None),
        1_000,
    );
    let sibling_context = CausalContext::empty();
    object.update(
        &sibling_context,
        &actor("n2"),
        Version::value(b"v2".to_vec(), 2_000, Some(9_000)),
        2_000,
    );
    write(dir, "record", "two_siblings", &encode_record(&object, None));
    let mut deleted = Object::new();
    deleted.update(
        &CausalContext::empty(),
        &actor("n3"),
        Version::tombstone(5_000),
        5_000,
    );
    write(
        dir,
        "record",
        "tombstone",
        &encode_record(&deleted, Some(6_000)),
    );
    let key_tag = 0x1234_5678u32;
    for (name, token_context) in [
        ("object", object.context()),
        ("empty", CausalContext::empty()),
        ("seen", {
            let mut seen = VersionVector::new();
            seen.raise(&actor("n1"), 3);
            seen.raise(&actor("n2"), 9);
            CausalContext::from_seen(seen)
        }),
    ] {
        let mut input = key_tag.to_le_bytes().to_vec();
        input.extend_from_slice(
            encode_token(&token_context, key_tag, &yeskv_fuzz::token_keys().0).as_bytes(),
        );
        write(dir, "context_token", name, &input);
    }

    // Gossip packets: a BadCluster, a Syn with an empty V1 digest, an Ack with an empty delta.
    let magic = 45_139u16.to_le_bytes();
    let bad_cluster = chitchat::ChitchatEnvelope {
        version: chitchat::ProtocolVersion::V1,
        message: chitchat::ChitchatMessage::BadCluster,
    };
    write(
        dir,
        "gossip_packet",
        "bad_cluster",
        &bad_cluster.serialize_to_vec(),
    );
    let mut syn = magic.to_vec();
    syn.extend_from_slice(&[1, 0, 0, 5, 0]);
    syn.extend_from_slice(b"yeskv");
    write(dir, "gossip_packet", "syn_empty", &syn);
    let mut ack = magic.to_vec();
    ack.extend_from_slice(&[1, 2, 0]);
    write(dir, "gossip_packet", "ack_empty", &ack);

    // A layout store written by the store itself: entries, a vote, a commit, a snapshot.
    let scratch = tempfile::tempdir().expect("scratch");
    {
        let mut store = FileStore::open(scratch.path()).expect("store");
        let log_id = |index| LogId::new(CommittedLeaderId::new(1, 11), index);
        let entries: Vec<Entry> = (1..=3)
            .map(|index| Entry {
                log_id: log_id(index),
                payload: EntryPayload::Blank,
            })
            .collect();
        store.append(&entries).expect("append");
        store.save_vote(&Vote::new(1, 11)).expect("vote");
        store.save_committed(Some(log_id(2))).expect("committed");
        store.truncate(3).expect("truncate");
        store
            .save_snapshot(&StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(1)),
                    snapshot_id: "1-1-1-1".into(),
                    ..SnapshotMeta::default()
                },
                data: b"layout state".to_vec(),
            })
            .expect("snapshot");
    }
    let log = std::fs::read(scratch.path().join(yeskv_layout::store::file::LOG_FILE)).expect("log");
    let snapshot = std::fs::read(
        scratch
            .path()
            .join(yeskv_layout::store::file::SNAPSHOT_FILE),
    )
    .expect("s");
    let mut with_snapshot = (snapshot.len() as u32).to_le_bytes().to_vec();
    with_snapshot.extend_from_slice(&snapshot);
    with_snapshot.extend_from_slice(&log);
    write(dir, "layout_store", "log_and_snapshot", &with_snapshot);
    let mut log_only = u32::MAX.to_le_bytes().to_vec();
    log_only.extend_from_slice(&log);
    write(dir, "layout_store", "log_only", &log_only);

    // Every seed must go through its target without a failure.
    for (target, run) in yeskv_fuzz::TARGETS {
        for seed in std::fs::read_dir(dir.join(target)).expect("seeds") {
            run(&std::fs::read(seed.expect("seed").path()).expect("read seed"));
        }
    }
    println!("seeds written to {}", dir.display());
}
