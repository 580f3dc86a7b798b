//! openraft's `RaftLogStorage`: the log and the vote in memory (the layout log is small: a few
//! entries per operator action, purged after each snapshot), written through to the durable
//! [`RaftStore`] before openraft learns they are persisted.
//!
//! Writes run on a blocking thread (`spawn_blocking`: they fsync) while this store's lock is
//! held, so they reach the disk in the order openraft issued them, as openraft requires.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageError, StorageIOError};
use tokio::sync::Mutex;

use super::{Entry, LogId, RaftId, TypeConfig, Vote};
use crate::store::{RaftStore, Recovered, StoreError};

/// The durable store, shared by the log store and the state machine (one call at a time).
pub(crate) type SharedStore = Arc<parking_lot::Mutex<Box<dyn RaftStore>>>;

/// Runs `write` on the durable store in a blocking thread and waits for it.
pub(crate) async fn persist<F>(store: &SharedStore, write: F) -> Result<(), StoreError>
where
    F: FnOnce(&mut dyn RaftStore) -> Result<(), StoreError> + Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || write(&mut **store.lock())).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Io {
            operation: "run the store write",
            path: Default::default(),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// The log store handed to openraft; clones share the log (they are its log readers).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    store: SharedStore,
}

struct LogInner {
    log: BTreeMap<u64, Entry>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl LogStore {
    /// A log store starting from what the durable store recovered.
    pub(crate) fn new(recovered: &Recovered, store: SharedStore) -> LogStore {
        LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                log: recovered.entries.clone(),
                purged: recovered.purged,
                vote: recovered.vote,
                committed: recovered.committed,
            })),
            store,
        }
    }
}

fn io_error(error: StoreError) -> std::io::Error {
    std::io::Error::other(error.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<RaftId>> {
        let inner = self.inner.lock().await;
        Ok(inner
            .log
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftId>> {
        let inner = self.inner.lock().await;
        let last = inner
            .log
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<RaftId>> {
        let mut inner = self.inner.lock().await;
        let saved = *vote;
        persist(&self.store, move |store| store.save_vote(&saved))
            .await
            .map_err(|e| StorageIOError::write_vote(&io_error(e)))?;
        inner.vote = Some(saved);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<RaftId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<RaftId>> {
        let mut inner = self.inner.lock().await;
        persist(&self.store, move |store| store.save_committed(committed))
            .await
            .map_err(|e| StorageIOError::write(&io_error(e)))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<RaftId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut inner = self.inner.lock().await;
        let written = entries.clone();
        match persist(&self.store, move |store| store.append(&written)).await {
            Ok(()) => {
                for entry in entries {
                    inner.log.split_off(&entry.log_id.index);
                    inner.log.insert(entry.log_id.index, entry);
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message.clone())));
                Err(StorageIOError::write_logs(&std::io::Error::other(message)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<RaftId>> {
        let mut inner = self.inner.lock().await;
        let since = log_id.index;
        persist(&self.store, move |store| store.truncate(since))
            .await
            .map_err(|e| StorageIOError::write_logs(&io_error(e)))?;
        inner.log.split_off(&since);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<RaftId>> {
        let mut inner = self.inner.lock().await;
        persist(&self.store, move |store| store.purge(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(&io_error(e)))?;
        if inner.purged.as_ref() < Some(&log_id) {
            inner.purged = Some(log_id);
        }
        crate::store::keep_after(&mut inner.log, log_id.index);
        Ok(())
    }
}
