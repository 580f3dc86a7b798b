//! openraft's `RaftStateMachine`: the [`LayoutState`], advanced by [`crate::layout::apply`].
//!
//! The state itself is not written on every apply: it is rebuilt on start from the last
//! snapshot plus the committed entries of the log (openraft re-applies them up to the committed
//! log id the log store recorded), so after a restart the node has its last known layout before
//! any leader exists. Snapshots are written through to the durable store.
//!
//! After each batch of entries the new state is *published* on `tokio::sync::watch` channels:
//! that is how [`crate::LayoutService::current`] answers without ever waiting on Raft, and how
//! the node subscribes to layout changes. The publisher also keeps a bounded history of
//! `(version, digest)` pairs this node applied, to check that no version ever named two
//! layouts.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageError, StorageIOError};
use tokio::sync::watch;
use tracing::{error, info};

use super::log_store::{persist, SharedStore};
use super::{
    Applied, CommandOutcome, Entry, LogId, RaftId, SnapshotMeta, StoredMembership, StoredSnapshot,
    TypeConfig,
};
use crate::layout::{Layout, LayoutState};

/// Most `(version, digest)` pairs kept in the applied history.
pub const HISTORY_VERSIONS_MAX: usize = 1024;

/// The state machine's state as last published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// Index of the last applied log entry (0 if none).
    pub applied_index: u64,
    /// The layout and staged changes.
    pub state: LayoutState,
}

/// Where the state machine publishes, shared with the service.
pub(crate) struct Publisher {
    pub(crate) state: watch::Sender<Arc<AppliedState>>,
    pub(crate) layout: watch::Sender<Option<Arc<Layout>>>,
    history: parking_lot::Mutex<BTreeMap<u64, u64>>,
    forks: AtomicU64,
}

impl Publisher {
    pub(crate) fn new() -> Arc<Publisher> {
        Arc::new(Publisher {
            state: watch::Sender::new(Arc::new(AppliedState::default())),
            layout: watch::Sender::new(None),
            history: parking_lot::Mutex::new(BTreeMap::new()),
            forks: AtomicU64::new(0),
        })
    }

    /// `(epoch, digest)` of every layout applied here (the last [`HISTORY_VERSIONS_MAX`]).
    pub(crate) fn history(&self) -> Vec<(u64, u64)> {
        self.history
            .lock()
            .iter()
            .map(|(version, digest)| (*version, *digest))
            .collect()
    }

    /// How many times this node saw one epoch with two different layouts (must stay 0).
    pub(crate) fn forks(&self) -> u64 {
        self.forks.load(Ordering::Relaxed)
    }

    fn publish(&self, applied: Option<LogId>, state: &LayoutState) {
        if let Some(layout) = &state.layout {
            let digest = layout.digest();
            let mut history = self.history.lock();
            match history.insert(layout.epoch, digest) {
                Some(previous) if previous != digest => {
                    self.forks.fetch_add(1, Ordering::Relaxed);
                    error!(
                        epoch = layout.epoch,
                        previous, digest, "one layout epoch applied with two different layouts"
                    );
                }
                _ => {}
            }
            while history.len() > HISTORY_VERSIONS_MAX {
                history.pop_first();
            }
        }
        // The layout first: whoever sees the applied index move also sees its layout.
        let layout = state.layout.clone();
        self.layout.send_if_modified(|current| {
            let changed = current.as_ref().map(|l| l.epoch) != layout.as_ref().map(|l| l.epoch);
            if changed {
                *current = layout;
            }
            changed
        });
        self.state.send_replace(Arc::new(AppliedState {
            applied_index: applied.map_or(0, |id| id.index),
            state: state.clone(),
        }));
    }
}

/// The state machine handed to openraft.
pub struct StateMachine {
    applied: Option<LogId>,
    membership: StoredMembership,
    state: LayoutState,
    snapshot: Arc<parking_lot::Mutex<Option<StoredSnapshot>>>,
    snapshots_built: Arc<AtomicU64>,
    store: SharedStore,
    publisher: Arc<Publisher>,
}

fn snapshot_error(
    meta: Option<&SnapshotMeta>,
    error: impl std::fmt::Display,
) -> StorageError<RaftId> {
    StorageIOError::read_snapshot(
        meta.map(SnapshotMeta::signature),
        &std::io::Error::other(error.to_string()),
    )
    .into()
}

impl StateMachine {
    /// A state machine at `snapshot` (or empty), publishing to `publisher`.
    pub(crate) fn new(
        snapshot: Option<StoredSnapshot>,
        store: SharedStore,
        publisher: Arc<Publisher>,
    ) -> Result<StateMachine, StorageError<RaftId>> {
        let (applied, membership, state) = match &snapshot {
            Some(stored) => (
                stored.meta.last_log_id,
                stored.meta.last_membership.clone(),
                LayoutState::decode(&stored.data)
                    .map_err(|e| snapshot_error(Some(&stored.meta), e))?,
            ),
            None => (None, StoredMembership::default(), LayoutState::default()),
        };
        publisher.publish(applied, &state);
        Ok(StateMachine {
            applied,
            membership,
            state,
            snapshot: Arc::new(parking_lot::Mutex::new(snapshot)),
            snapshots_built: Arc::new(AtomicU64::new(0)),
            store,
            publisher,
        })
    }
}

/// Builds a snapshot of the state at the time [`RaftStateMachine::get_snapshot_builder`] ran.
pub struct SnapshotBuilder {
    applied: Option<LogId>,
    membership: StoredMembership,
    state: LayoutState,
    snapshot: Arc<parking_lot::Mutex<Option<StoredSnapshot>>>,
    snapshots_built: Arc<AtomicU64>,
    store: SharedStore,
}

/// Persists `stored` and makes it the current snapshot unless a newer one is already current.
async fn keep_snapshot(
    store: &SharedStore,
    current: &parking_lot::Mutex<Option<StoredSnapshot>>,
    stored: StoredSnapshot,
) -> Result<(), StorageError<RaftId>> {
    let newer_exists = current
        .lock()
        .as_ref()
        .is_some_and(|c| c.meta.last_log_id > stored.meta.last_log_id);
    if newer_exists {
        return Ok(());
    }
    let written = stored.clone();
    persist(store, move |store| store.save_snapshot(&written))
        .await
        .map_err(|e| {
            StorageIOError::write_snapshot(
                Some(stored.meta.signature()),
                &std::io::Error::other(e.to_string()),
            )
        })?;
    let mut current = current.lock();
    if current
        .as_ref()
        .is_none_or(|c| c.meta.last_log_id <= stored.meta.last_log_id)
    {
        *current = Some(stored);
    }
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftId>> {
        let data = self.state.encode().map_err(|e| {
            StorageIOError::read_state_machine(&std::io::Error::other(e.to_string()))
        })?;
        let built = self.snapshots_built.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match self.applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, built),
            None => format!("--{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        keep_snapshot(
            &self.store,
            &self.snapshot,
            StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )
        .await?;
        info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built a layout snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<RaftId>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandOutcome>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Normal(command) => match self.state.apply(&command) {
                    Ok(next) => {
                        self.state = next;
                        Ok(())
                    }
                    Err(refused) => Err(refused),
                },
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Ok(())
                }
            };
            outcomes.push(CommandOutcome {
                result: result.map(|()| Applied {
                    version: self.state.version(),
                    staged_revision: self.state.staged.revision,
                }),
            });
            // Publish per entry so that the history sees every version, even when a batch holds
            // two commits.
            self.publisher.publish(self.applied, &self.state);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            applied: self.applied,
            membership: self.membership.clone(),
            state: self.state.clone(),
            snapshot: self.snapshot.clone(),
            snapshots_built: self.snapshots_built.clone(),
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftId>> {
        let data = snapshot.into_inner();
        let state = LayoutState::decode(&data).map_err(|e| snapshot_error(Some(meta), e))?;
        keep_snapshot(
            &self.store,
            &self.snapshot,
            StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )
        .await?;
        info!(snapshot = %meta.snapshot_id, version = state.version(), "installed a layout snapshot");
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state = state;
        self.publisher.publish(self.applied, &self.state);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftId>> {
        Ok(self.snapshot.lock().as_ref().map(|stored| Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        }))
    }
}
