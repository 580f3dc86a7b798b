//! [`FileStore`]: the layout's Raft state in a directory.
//!
//! # Files
//!
//! - `raft.log`: an append-only sequence of records, each
//!
//!   ```text
//!   +-------------+-------------------------------------------------+
//!   | length u32  | envelope (crate::codec): format u8, postcard    |
//!   | LE          | LogRecord, crc32c u32 LE                         |
//!   +-------------+-------------------------------------------------+
//!   ```
//!
//!   A record is an append of entries, a truncation, a purge, a vote or a committed log id;
//!   replaying them in order gives the store's contents. Each write is one `write_all` followed by
//!   `fdatasync` before the call returns.
//! - `snapshot.bin`: one envelope holding the latest [`StoredSnapshot`], replaced atomically
//!   (written to `snapshot.bin.tmp`, fsynced, renamed, directory fsynced).
//!
//! # Crashes and corruption
//!
//! A crash can leave the last record of `raft.log` incomplete, or (on some file systems) leave
//! zeros after the data. On open, a bad record is a **torn tail** and is cut off (the write it
//! belonged to never returned, so nothing acknowledged is lost) when it is the last thing in the
//! file: its declared length runs past the end, it ends exactly at the end, or only zeros follow.
//! A bad record with more data after it cannot come from a torn write: open fails with
//! [`StoreError::Corrupt`] rather than silently dropping acknowledged entries (Raft's safety
//! depends on them). A declared length above [`RECORD_BYTES_MAX`] is corruption too, unless
//! only zeros follow. A snapshot file that fails its checksum is corruption (it was renamed
//! into place complete).
//!
//! # Compaction
//!
//! The log file only grows by records; after a purge (which follows every snapshot) it is
//! rewritten from the contents: vote, committed, purged, one record per remaining entry, again
//! through a temporary file and a rename.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{RaftStore, Recovered, StoreError};
use crate::codec;
use crate::raft::{Entry, LogId, StoredSnapshot, Vote};

/// The log file's name inside the store directory.
pub const LOG_FILE: &str = "raft.log";
/// The snapshot file's name inside the store directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Largest record (envelope) accepted in the log, in bytes.
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One write to the log file.
#[derive(Serialize, Deserialize)]
enum LogRecord {
    Append(Vec<Entry>),
    Truncate { since: u64 },
    Purge { upto: LogId },
    Vote(Vote),
    Committed(Option<LogId>),
}

/// The durable [`RaftStore`] (see the module docs).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    log: File,
    /// Bytes of valid records in the log file.
    log_bytes: u64,
    contents: Recovered,
    torn_bytes_dropped: u64,
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        operation,
        path,
        source,
    }
}

fn encode_error(error: crate::LayoutError) -> StoreError {
    StoreError::Encode {
        reason: error.to_string(),
    }
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`, replaying the log and cutting a torn tail.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match fs::read(&snapshot_path) {
            Ok(bytes) => Some(codec::open::<StoredSnapshot>(&bytes).map_err(|error| {
                StoreError::Corrupt {
                    path: snapshot_path.clone(),
                    offset: 0,
                    reason: error.to_string(),
                }
            })?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error("read", &snapshot_path)(error)),
        };
        let log_path = dir.join(LOG_FILE);
        let (mut contents, log_bytes, file_bytes) = match fs::read(&log_path) {
            Ok(bytes) => {
                let (contents, valid) = replay(&bytes, &log_path)?;
                (contents, valid, bytes.len() as u64)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                (Recovered::default(), 0, 0)
            }
            Err(error) => return Err(io_error("read", &log_path)(error)),
        };
        contents.snapshot = snapshot;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error("open", &log_path))?;
        let torn_bytes_dropped = file_bytes - log_bytes;
        if torn_bytes_dropped > 0 {
            warn!(
                path = %log_path.display(),
                valid_bytes = log_bytes,
                torn_bytes = torn_bytes_dropped,
                "cutting a torn tail off the layout log"
            );
            log.set_len(log_bytes)
                .map_err(io_error("truncate", &log_path))?;
            log.sync_all().map_err(io_error("fsync", &log_path))?;
        }
        if file_bytes == 0 {
            sync_dir(&dir)?;
        }
        Ok(FileStore {
            dir,
            log,
            log_bytes,
            contents,
            torn_bytes_dropped,
        })
    }

    /// Bytes cut off the log file as a torn tail when it was opened.
    pub fn torn_bytes_dropped(&self) -> u64 {
        self.torn_bytes_dropped
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn write_record(&mut self, record: &LogRecord) -> Result<(), StoreError> {
        let frame = frame(record)?;
        let path = self.log_path();
        let written = self
            .log
            .write_all(&frame)
            .and_then(|()| self.log.sync_data());
        if let Err(error) = written {
            // Take the partial record back so later appends do not follow garbage; if even
            // that fails, the next open sees a torn tail or reports corruption.
            let _ = self.log.set_len(self.log_bytes);
            return Err(io_error("append", &path)(error));
        }
        self.log_bytes += frame.len() as u64;
        Ok(())
    }

    /// Rewrites the log file from the contents (see the module docs).
    fn compact(&mut self) -> Result<(), StoreError> {
        let path = self.log_path();
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut buffer = Vec::new();
        if let Some(vote) = self.contents.vote {
            buffer.extend(frame(&LogRecord::Vote(vote))?);
        }
        if let Some(committed) = self.contents.committed {
            buffer.extend(frame(&LogRecord::Committed(Some(committed)))?);
        }
        if let Some(upto) = self.contents.purged {
            buffer.extend(frame(&LogRecord::Purge { upto })?);
        }
        for entry in self.contents.entries.values() {
            buffer.extend(frame(&LogRecord::Append(vec![entry.clone()]))?);
        }
        write_atomically(&self.dir, &tmp, &path, &buffer)?;
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        self.log_bytes = buffer.len() as u64;
        info!(path = %path.display(), bytes = self.log_bytes, "compacted the layout log");
        Ok(())
    }
}

impl RaftStore for FileStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        Ok(self.contents.clone())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write_record(&LogRecord::Append(entries.to_vec()))?;
        self.contents.append(entries);
        Ok(())
    }

    fn truncate(&mut self, since: u64) -> Result<(), StoreError> {
        self.write_record(&LogRecord::Truncate { since })?;
        self.contents.truncate(since);
        Ok(())
    }

    fn purge(&mut self, upto: LogId) -> Result<(), StoreError> {
        self.write_record(&LogRecord::Purge { upto })?;
        self.contents.purge(upto);
        self.compact()
    }

    fn save_vote(&mut self, vote: &Vote) -> Result<(), StoreError> {
        self.write_record(&LogRecord::Vote(*vote))?;
        self.contents.vote = Some(*vote);
        Ok(())
    }

    fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StoreError> {
        if self.contents.committed == committed {
            return Ok(());
        }
        self.write_record(&LogRecord::Committed(committed))?;
        self.contents.committed = committed;
        Ok(())
    }

    fn save_snapshot(&mut self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        let bytes = codec::seal(snapshot).map_err(encode_error)?;
        let path = self.dir.join(SNAPSHOT_FILE);
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        write_atomically(&self.dir, &tmp, &path, &bytes)?;
        self.contents.snapshot = Some(snapshot.clone());
        Ok(())
    }
}

/// A record as written: length prefix and envelope.
fn frame(record: &LogRecord) -> Result<Vec<u8>, StoreError> {
    let body = codec::seal(record).map_err(encode_error)?;
    if body.len() > RECORD_BYTES_MAX {
        return Err(StoreError::Encode {
            reason: format!(
                "a log record of {} bytes exceeds {RECORD_BYTES_MAX}",
                body.len()
            ),
        });
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Replays a log file: the contents and the length of the valid prefix (see the module docs for
/// what counts as a torn tail).
fn replay(bytes: &[u8], path: &Path) -> Result<(Recovered, u64), StoreError> {
    let mut contents = Recovered::default();
    let mut offset = 0usize;
    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let zeros_only = rest.iter().all(|&b| b == 0);
        if rest.len() < 4 {
            break; // torn length prefix
        }
        let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if !(codec::ENVELOPE_BYTES_MIN..=RECORD_BYTES_MAX).contains(&length) {
            if zeros_only {
                break;
            }
            return Err(corrupt(
                offset,
                format!("impossible record length {length}"),
            ));
        }
        if length > rest.len() - 4 {
            break; // the record runs past the end: torn write
        }
        let end = offset + 4 + length;
        match codec::open::<LogRecord>(&rest[4..4 + length]) {
            Ok(record) => {
                match record {
                    LogRecord::Append(entries) => contents.append(&entries),
                    LogRecord::Truncate { since } => contents.truncate(since),
                    LogRecord::Purge { upto } => contents.purge(upto),
                    LogRecord::Vote(vote) => contents.vote = Some(vote),
                    LogRecord::Committed(committed) => contents.committed = committed,
                }
                offset = end;
            }
            Err(_) if end == bytes.len() || zeros_only => break,
            Err(error) => {
                return Err(corrupt(
                    offset,
                    format!("{error}, and {} more bytes follow it", bytes.len() - end),
                ))
            }
        }
    }
    Ok((contents, offset as u64))
}

/// Writes `bytes` to `tmp`, fsyncs it, renames it to `path` and fsyncs the directory.
fn write_atomically(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = File::create(tmp).map_err(io_error("create", tmp))?;
    file.write_all(bytes).map_err(io_error("write", tmp))?;
    file.sync_all().map_err(io_error("fsync", tmp))?;
    drop(file);
    fs::rename(tmp, path).map_err(io_error("rename", path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::layout::Command;
    use crate::raft::{PeerNode, SnapshotMeta, StoredMembership};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Command::Unstage { nodes: vec![] }),
        }
    }

    fn vote(term: u64) -> Vote {
        Vote::new(term, 1)
    }

    fn filled(dir: &Path) -> FileStore {
        let mut store = FileStore::open(dir).expect("opens");
        store.save_vote(&vote(1)).expect("vote");
        store
            .append(&[entry(1, 1), entry(1, 2), entry(1, 3)])
            .expect("append");
        store.save_committed(Some(log_id(1, 2))).expect("committed");
        store
    }

    /// Found by the `layout_store` fuzz target: a purge record up to index `u64::MAX` overflowed
    /// `index + 1` when the log was replayed.
    #[test]
    fn a_purge_up_to_the_last_index_drops_every_entry_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = filled(dir.path());
        store.purge(log_id(1, u64::MAX)).expect("purge");
        drop(store);
        let mut reopened = FileStore::open(dir.path()).expect("reopens");
        let contents = reopened.load().expect("loads");
        assert!(contents.entries.is_empty(), "{:?}", contents.entries);
        assert_eq!(contents.purged, Some(log_id(1, u64::MAX)));
        assert_eq!(contents.vote, Some(vote(1)));
    }

    #[test]
    fn keep_after_drops_up_to_the_index_inclusive() {
        let mut entries: std::collections::BTreeMap<u64, ()> =
            (1..=5).map(|index| (index, ())).collect();
        crate::store::keep_after(&mut entries, 3);
        assert_eq!(entries.keys().copied().collect::<Vec<_>>(), [4, 5]);
        crate::store::keep_after(&mut entries, u64::MAX);
        assert!(entries.is_empty());
    }

    #[test]
    fn reopen_gives_back_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = filled(dir.path());
        store.truncate(3).expect("truncate");
        store.append(&[entry(2, 3), entry(2, 4)]).expect("append");
        store.save_vote(&vote(2)).expect("vote");
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 3)),
                last_membership: StoredMembership::default(),
                snapshot_id: "s1".into(),
            },
            data: vec![1, 2, 3],
        };
        store.save_snapshot(&snapshot).expect("snapshot");
        store.purge(log_id(1, 2)).expect("purge");
        let before = store.load().expect("load");
        drop(store);

        let mut reopened = FileStore::open(dir.path()).expect("reopens");
        let after = reopened.load().expect("load");
        assert_eq!(after, before);
        assert_eq!(
            after.entries.keys().copied().collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(after.entries[&3].log_id, log_id(2, 3));
        assert_eq!(after.vote, Some(vote(2)));
        assert_eq!(after.purged, Some(log_id(1, 2)));
        assert_eq!(after.snapshot, Some(snapshot));
        assert_eq!(reopened.torn_bytes_dropped(), 0);
        // Compaction left no temporary file behind.
        assert!(!dir.path().join("raft.log.tmp").exists());
        let _ = PeerNode::default();
    }

    #[test]
    fn torn_tail_is_cut_and_the_store_keeps_working() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = filled(dir.path()).load().expect("load");
        let path = dir.path().join(LOG_FILE);
        let full = fs::read(&path).expect("read");
        // A crash in the middle of the next append: its record is half written.
        let mut torn = full.clone();
        let next = frame(&LogRecord::Append(vec![entry(1, 4)])).expect("frame");
        torn.extend_from_slice(&next[..next.len() / 2]);
        fs::write(&path, &torn).expect("write");

        let mut store = FileStore::open(dir.path()).expect("a torn tail is tolerated");
        assert_eq!(store.load().expect("load"), before);
        assert_eq!(store.torn_bytes_dropped(), (next.len() / 2) as u64);
        assert_eq!(fs::read(&path).expect("read").len(), full.len());
        store.append(&[entry(1, 4)]).expect("append after repair");
        drop(store);
        let mut store = FileStore::open(dir.path()).expect("reopens");
        assert_eq!(store.load().expect("load").entries.len(), 4);
    }

    #[test]
    fn zero_filled_tail_and_torn_length_are_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = filled(dir.path()).load().expect("load");
        let path = dir.path().join(LOG_FILE);
        let full = fs::read(&path).expect("read");
        for tail in [vec![0u8; 4096], vec![7u8, 0]] {
            let mut bytes = full.clone();
            bytes.extend_from_slice(&tail);
            fs::write(&path, &bytes).expect("write");
            let mut store = FileStore::open(dir.path()).expect("tolerated");
            assert_eq!(store.load().expect("load"), before);
        }
    }

    #[test]
    fn damaged_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(filled(dir.path()));
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let mut store = FileStore::open(dir.path()).expect("tolerated");
        // The last record (committed) is gone; the entries before it remain.
        let contents = store.load().expect("load");
        assert_eq!(contents.committed, None);
        assert_eq!(contents.entries.len(), 3);
    }

    #[test]
    fn corrupt_record_in_the_middle_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(filled(dir.path()));
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).expect("read");
        // Flip a payload bit of the first record (the vote); later records follow it.
        bytes[6] ^= 0x01;
        fs::write(&path, &bytes).expect("write");
        match FileStore::open(dir.path()) {
            Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("expected corruption, got {other:?}"),
        }
        // An impossible length in the middle is corruption too.
        let mut bytes = fs::read(&path).expect("read");
        bytes[6] ^= 0x01;
        bytes[3] = 0x7f;
        fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn corrupt_snapshot_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = filled(dir.path());
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta::default(),
            data: vec![9; 100],
        };
        store.save_snapshot(&snapshot).expect("snapshot");
        drop(store);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).expect("read");
        bytes[50] ^= 0x10;
        fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
