//! Durable storage of the layout's Raft group: the log, the vote, the committed index and the
//! latest snapshot, behind one trait ([`RaftStore`]) with two implementations:
//!
//! - [`MemoryStore`]: keeps everything in memory. Clones share the contents, so a test can stop
//!   a node and start it again "from its disk" by handing the new node a clone.
//! - [`FileStore`]: a directory (the node passes `data_dir/layout/`) with an append-only log file
//!   (one checksummed record per write, fsync before returning, a torn tail tolerated) and a
//!   snapshot file replaced atomically. See [`file`].
//!
//! Every method returns only once the change is durable: openraft's safety depends on a vote or
//! an entry never being forgotten once acknowledged. The trait is synchronous; the Raft adapters
//! call it from a blocking thread. [`Recovered`] is what [`RaftStore::load`] hands back after a
//! restart, and also the in-memory model both implementations keep.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::raft::{Entry, LogId, StoredSnapshot, Vote};

pub mod file;

pub use file::FileStore;

/// What went wrong in a [`RaftStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record or snapshot failed its checksum or does not decode, and is not a torn tail.
    #[error("corrupt {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
}

/// The durable half of the layout's Raft log and state machine. Each call is durable when it
/// returns. Calls are serialized by the caller (one at a time).
pub trait RaftStore: Send + 'static {
    /// Everything stored, as it was after the last successful call (after a restart: as the
    /// disk has it, minus a torn tail).
    fn load(&mut self) -> Result<Recovered, StoreError>;
    /// Appends entries (consecutive, following the last one or overwriting from their index).
    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError>;
    /// Drops the entries from `since` (inclusive) on: a new leader overwrote them.
    fn truncate(&mut self, since: u64) -> Result<(), StoreError>;
    /// Drops the entries up to `upto` (inclusive): a snapshot covers them.
    fn purge(&mut self, upto: LogId) -> Result<(), StoreError>;
    /// Records the vote.
    fn save_vote(&mut self, vote: &Vote) -> Result<(), StoreError>;
    /// Records the committed log id (lets a restarted node re-apply committed entries before
    /// hearing from a leader, so its layout is current at once).
    fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StoreError>;
    /// Replaces the snapshot.
    fn save_snapshot(&mut self, snapshot: &StoredSnapshot) -> Result<(), StoreError>;
}

/// The contents of a [`RaftStore`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// The last vote.
    pub vote: Option<Vote>,
    /// The last committed log id recorded.
    pub committed: Option<LogId>,
    /// The last purged log id (entries up to it are gone, covered by the snapshot).
    pub purged: Option<LogId>,
    /// The log, by index.
    pub entries: BTreeMap<u64, Entry>,
    /// The latest snapshot.
    pub snapshot: Option<StoredSnapshot>,
}

impl Recovered {
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            // An append from index i replaces whatever followed i - 1.
            self.entries.split_off(&entry.log_id.index);
            self.entries.insert(entry.log_id.index, entry.clone());
        }
    }

    pub(crate) fn truncate(&mut self, since: u64) {
        self.entries.split_off(&since);
    }

    pub(crate) fn purge(&mut self, upto: LogId) {
        if self.purged.as_ref() < Some(&upto) {
            self.purged = Some(upto);
        }
        keep_after(&mut self.entries, upto.index);
    }
}

/// Drops the entries up to `index` (inclusive). A purge up to `u64::MAX` drops them all: a purge
/// record read back from disk can say so, and `index + 1` overflowed (a panic with overflow
/// checks, and without them a wrap to 0 that kept every entry; found by the `layout_store` fuzz
/// target).
pub(crate) fn keep_after<V>(entries: &mut BTreeMap<u64, V>, index: u64) {
    *entries = match index.checked_add(1) {
        Some(next) => entries.split_off(&next),
        None => BTreeMap::new(),
    };
}

/// A [`RaftStore`] in memory; clones share the contents (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    contents: Arc<Mutex<Recovered>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RaftStore for MemoryStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        Ok(self.contents.lock().clone())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.contents.lock().append(entries);
        Ok(())
    }

    fn truncate(&mut self, since: u64) -> Result<(), StoreError> {
        self.contents.lock().truncate(since);
        Ok(())
    }

    fn purge(&mut self, upto: LogId) -> Result<(), StoreError> {
        self.contents.lock().purge(upto);
        Ok(())
    }

    fn save_vote(&mut self, vote: &Vote) -> Result<(), StoreError> {
        self.contents.lock().vote = Some(*vote);
        Ok(())
    }

    fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StoreError> {
        self.contents.lock().committed = committed;
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        self.contents.lock().snapshot = Some(snapshot.clone());
        Ok(())
    }
}
