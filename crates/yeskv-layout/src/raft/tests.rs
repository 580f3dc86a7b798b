//! The storage adapters against openraft's own storage test suite, and the wire messages
//! through postcard.

use std::sync::Arc;

use openraft::error::{Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, StorageError};

use super::log_store::{LogStore, SharedStore};
use super::state_machine::{Publisher, StateMachine};
use super::*;
use crate::layout::{JoinSpec, Layout};
use crate::store::{FileStore, MemoryStore, RaftStore};

fn adapters(
    mut store: Box<dyn RaftStore>,
) -> Result<(LogStore, StateMachine), StorageError<RaftId>> {
    let recovered = store.load().map_err(|e| {
        StorageError::from(openraft::StorageIOError::read(&std::io::Error::other(
            e.to_string(),
        )))
    })?;
    let shared: SharedStore = Arc::new(parking_lot::Mutex::new(store));
    let log = LogStore::new(&recovered, shared.clone());
    let sm = StateMachine::new(recovered.snapshot, shared, Publisher::new())?;
    Ok((log, sm))
}

struct MemoryBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for MemoryBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<RaftId>> {
        let (log, sm) = adapters(Box::new(MemoryStore::new()))?;
        Ok(((), log, sm))
    }
}

struct FileBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FileBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<RaftId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("opens");
        let (log, sm) = adapters(Box::new(store))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn memory_store_passes_the_openraft_suite() {
    Suite::test_all(MemoryBuilder).expect("suite passes");
}

#[test]
fn file_store_passes_the_openraft_suite() {
    Suite::test_all(FileBuilder).expect("suite passes");
}

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    let bytes = postcard::to_stdvec(value).expect("encodes");
    postcard::from_bytes(&bytes).expect("decodes")
}

#[test]
fn messages_survive_postcard() {
    let layout = Layout::bootstrap(
        "c",
        3,
        8,
        yeskv_core::NodeId::new("n1").expect("id"),
        JoinSpec {
            zone: "z".into(),
            capacity: 1,
            http: "h:1".into(),
            peer: "p:1".into(),
            region: "default".into(),
        },
    )
    .expect("bootstrap");
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 7), 9),
        payload: EntryPayload::Normal(Command::Bootstrap {
            layout: layout.clone(),
        }),
    };
    let request = RaftRpc {
        to: 7,
        body: RaftRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(3, 7),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 7), 8)),
            entries: vec![entry.clone()],
            leader_commit: Some(LogId::new(CommittedLeaderId::new(2, 7), 8)),
        }),
    };
    let back = roundtrip(&request);
    match back.body {
        RaftRequest::AppendEntries(append) => {
            assert_eq!(append.entries.len(), 1);
            assert_eq!(append.entries[0].log_id, entry.log_id);
            match &append.entries[0].payload {
                EntryPayload::Normal(Command::Bootstrap { layout: decoded }) => {
                    assert_eq!(decoded, &layout)
                }
                other => panic!("unexpected payload {other:?}"),
            }
        }
        other => panic!("unexpected body {other:?}"),
    }
    let vote = RaftRpc {
        to: 1,
        body: RaftRequest::Vote(VoteRequest::new(Vote::new(4, 1), None)),
    };
    assert!(matches!(roundtrip(&vote).body, RaftRequest::Vote(_)));

    let ok = RaftRpcResponse::AppendEntries(Ok(AppendEntriesResponse::Success));
    assert!(matches!(
        roundtrip(&ok),
        RaftRpcResponse::AppendEntries(Ok(AppendEntriesResponse::Success))
    ));
    let fatal = RaftRpcResponse::AppendEntries(Err(RaftError::Fatal(Fatal::Stopped)));
    assert!(matches!(
        roundtrip(&fatal),
        RaftRpcResponse::AppendEntries(Err(RaftError::Fatal(Fatal::Stopped)))
    ));
    let refused = RaftRpcResponse::Forward(Err(ForwardError::Rejected(
        crate::LayoutError::VersionMismatch {
            expected: 1,
            current: 2,
        },
    )));
    assert!(matches!(
        roundtrip(&refused),
        RaftRpcResponse::Forward(Err(ForwardError::Rejected(
            crate::LayoutError::VersionMismatch { .. }
        )))
    ));

    let props = yeskv_core::bucket::BucketProps {
        datatype: Some(yeskv_core::bucket::Datatype::Set),
        salt: 4,
        ..Default::default()
    };
    let set_bucket = Forward::SetBucket {
        bucket: b"tags".to_vec(),
        props: props.clone(),
    };
    let forwarded = RaftRpc {
        to: 2,
        body: RaftRequest::Forward(set_bucket.clone()),
    };
    match roundtrip(&forwarded).body {
        RaftRequest::Forward(back) => assert_eq!(back, set_bucket),
        other => panic!("unexpected body {other:?}"),
    }
    let invalid = RaftRpcResponse::Forward(Err(ForwardError::Rejected(
        crate::LayoutError::InvalidBucket {
            bucket: "tags".into(),
            reason: "salt".into(),
        },
    )));
    assert!(matches!(
        roundtrip(&invalid),
        RaftRpcResponse::Forward(Err(ForwardError::Rejected(
            crate::LayoutError::InvalidBucket { .. }
        )))
    ));
}

#[test]
fn raft_ids_are_stable_and_never_zero() {
    let id = raft_id(&yeskv_core::NodeId::new("n1").expect("id"));
    assert_ne!(id, 0);
    assert_eq!(id, xxhash_rust::xxh3::xxh3_64(b"n1"));
}
