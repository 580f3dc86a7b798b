//! Backups and restores: a node's point-in-time copy of its database, the files an operator
//! downloads of it, and the import a restore sends back into a cluster.
//!
//! Why this shape (Cassandra's `nodetool snapshot` + `sstableloader`, Riak's per-node backup):
//! every node copies its own database, and a restore *merges* every object of every copy into
//! whatever cluster it is given, by the keys' placement there. Nothing ties a backup to the
//! cluster it came from: the restored cluster may have other nodes, another size, another
//! replication. Merging (the dotted version vector's sync) makes the restore idempotent (a
//! retried batch changes nothing), keeps concurrent values as siblings, and lets an object come
//! back from any one replica's copy; a key held by three nodes is merged three times, to the
//! same result.
//!
//! - A checkpoint ([`create`]) is RocksDB's: the memtables are flushed and the SST files hard
//!   linked into `<data_dir>/backups/<id>/`, so it costs no time or space until compaction
//!   rewrites the originals. It holds every write this node acknowledged before the call.
//!   Each file is listed with its size and SHA-256, which the downloader checks
//!   (`GET /v1/admin/backups/{id}/{file}`), and the restore checks again before reading.
//! - [`NodeBackup`] reads a downloaded checkpoint: every record of the data space, and every
//!   hint (a write this node held for another while it was down: without it a backup taken
//!   during an outage would miss acknowledged writes). Each record's checksum is verified.
//! - The import body ([`encode_import`], [`decode_import`]) carries `(bucket, key, record)`
//!   triples; the receiving node checks every record's checksum and every name before it
//!   merges anything (`POST /v1/admin/import`), then merges each object into every node of its
//!   partition's write set ([`crate::replication::merge_into_write_sets`]).
//!
//! What a backup holds is the data: objects, tombstones, data types, expiring objects (with
//! their expiry). Not the node's metadata: API keys and bucket properties live in the layout
//! (the CLI's manifest records bucket properties and the restore sets them first); API keys are
//! not copied (their hashes are secrets of the cluster they were made on).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use yeskv_core::codec::{decode_record, encode_record};
use yeskv_core::keyspace::split_storage_key;
use yeskv_storage::Engine;
#[cfg(feature = "rocksdb")]
use yeskv_storage::Space;

use crate::error::Error;

/// The directory under a node's `data_dir` that holds its checkpoints.
pub const BACKUPS_DIR: &str = "backups";

/// Longest backup id.
pub const ID_LEN_MAX: usize = 64;

/// Largest body of `POST /v1/admin/import`.
pub const IMPORT_BODY_BYTES_MAX: usize = 64 << 20;

/// One file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// Its name in the checkpoint directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its contents, lowercase hex.
    pub sha256: String,
}

/// Checks a backup id: 1 to [`ID_LEN_MAX`] of `A-Z a-z 0-9 - _ .`, not starting with a dot
/// (it names a directory).
pub fn check_id(id: &str) -> Result<(), Error> {
    check_name("backup id", id, ID_LEN_MAX)
}

fn check_name(what: &str, name: &str, max: usize) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > max || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(Error::BadRequest(format!(
            "a {what} is 1 to {max} of A-Z a-z 0-9 - _ . not starting with a dot, got {name:?}"
        )));
    }
    Ok(())
}

/// The directory of backup `id` under `backups`.
pub fn backup_dir(backups: &Path, id: &str) -> Result<PathBuf, Error> {
    check_id(id)?;
    Ok(backups.join(id))
}

/// Takes a checkpoint of `engine` as backup `id` under `backups` and lists its files. Refuses
/// an id already taken. Blocking (a flush, hard links, and reading every file for its hash).
pub fn create<E: Engine>(engine: &E, backups: &Path, id: &str) -> Result<Vec<BackupFile>, Error> {
    let dir = backup_dir(backups, id)?;
    if dir.exists() {
        return Err(Error::Conflict(format!(
            "backup {id} exists on this node: delete it first (DELETE /v1/admin/backups/{id})"
        )));
    }
    std::fs::create_dir_all(backups)
        .map_err(|e| Error::Storage(format!("cannot create {}: {e}", backups.display())))?;
    engine.checkpoint(&dir).map_err(Error::from)?;
    list_files(&dir)
}

/// The files of the checkpoint in `dir`, sorted by name, each with its size and hash.
pub fn list_files(dir: &Path) -> Result<Vec<BackupFile>, Error> {
    let io = |e: std::io::Error| Error::Storage(format!("reading {}: {e}", dir.display()));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_type().map_err(io)?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let (bytes, sha256) = hash_file(&entry.path()).map_err(io)?;
        files.push(BackupFile {
            name,
            bytes,
            sha256,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The path of `file` of backup `id`: refuses names that are not a plain file name of the
/// checkpoint (no separators, no `..`) and files that do not exist.
pub fn file_path(backups: &Path, id: &str, file: &str) -> Result<PathBuf, Error> {
    let dir = backup_dir(backups, id)?;
    check_name("backup file name", file, 255)?;
    if !dir.is_dir() {
        return Err(Error::NotFound(format!("no backup {id} on this node")));
    }
    let path = dir.join(file);
    if !path.is_file() {
        return Err(Error::NotFound(format!("backup {id} has no file {file}")));
    }
    Ok(path)
}

/// Deletes backup `id` (its hard links: the database's own files stay).
pub fn remove(backups: &Path, id: &str) -> Result<(), Error> {
    let dir = backup_dir(backups, id)?;
    if !dir.is_dir() {
        return Err(Error::NotFound(format!("no backup {id} on this node")));
    }
    std::fs::remove_dir_all(&dir)
        .map_err(|e| Error::Storage(format!("cannot delete {}: {e}", dir.display())))
}

/// The size and SHA-256 (lowercase hex) of the file at `path`.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex(&hasher.finalize())))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One object of a backup: its bucket, key and checksummed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupObject {
    /// The bucket (a salted bucket's sub-key bucket as stored).
    pub bucket: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
    /// The object as a stored record ([`yeskv_core::codec::encode_record`]).
    pub record: Vec<u8>,
}

/// A downloaded node backup (a checkpoint directory), opened read-only.
#[cfg(feature = "rocksdb")]
pub struct NodeBackup {
    reader: yeskv_storage::CheckpointReader,
    dir: PathBuf,
}

#[cfg(feature = "rocksdb")]
impl NodeBackup {
    /// Opens the checkpoint in `dir`.
    pub fn open(dir: &Path) -> Result<NodeBackup, Error> {
        let reader = yeskv_storage::CheckpointReader::open(dir).map_err(|e| {
            Error::Storage(format!("cannot open the backup in {}: {e}", dir.display()))
        })?;
        Ok(NodeBackup {
            reader,
            dir: dir.to_path_buf(),
        })
    }

    /// Calls `each` with every object of `partition` (of the partitioning the backup was taken
    /// under), checksums verified: a corrupt record fails the read, naming its key.
    pub fn partition(
        &self,
        partition: u16,
        mut each: impl FnMut(BackupObject),
    ) -> Result<u64, Error> {
        let (start, end) = yeskv_core::keyspace::partition_range(partition);
        let dir = &self.dir;
        self.reader
            .scan(Space::Data, &start, Some(&end), |sk, record| {
                let (bucket, key) = names(dir, sk)?;
                decode_record(record).map_err(|e| {
                    yeskv_storage::Error::Corrupt(format!(
                        "{}: the record of {}/{}: {e}",
                        dir.display(),
                        String::from_utf8_lossy(&bucket),
                        String::from_utf8_lossy(&key)
                    ))
                })?;
                each(BackupObject {
                    bucket,
                    key,
                    record: record.to_vec(),
                });
                Ok(())
            })
            .map_err(Error::from)
    }

    /// Calls `each` with every hint the node held for another (the object owed), checksums
    /// verified.
    pub fn hints(&self, mut each: impl FnMut(BackupObject)) -> Result<u64, Error> {
        let dir = &self.dir;
        self.reader
            .scan(Space::Hints, b"", None, |hk, value| {
                let (sk, object) = crate::replica::decode_stored_hint(hk, value).map_err(|e| {
                    yeskv_storage::Error::Corrupt(format!("{}: a hint: {e}", dir.display()))
                })?;
                let (bucket, key) = names(dir, &sk)?;
                each(BackupObject {
                    bucket,
                    key,
                    record: encode_record(&object, None),
                });
                Ok(())
            })
            .map_err(Error::from)
    }
}

/// The bucket and key of a storage key read from the backup in `dir`.
#[cfg(feature = "rocksdb")]
fn names(dir: &Path, sk: &[u8]) -> Result<(Vec<u8>, Vec<u8>), yeskv_storage::Error> {
    let (_, bucket, key) = split_storage_key(sk).ok_or_else(|| {
        yeskv_storage::Error::Corrupt(format!("a malformed storage key in {}", dir.display()))
    })?;
    Ok((bucket.to_vec(), key.to_vec()))
}

/// The objects of `objects` with the copies of each key merged into one (the dotted version
/// vectors' sync: as replicas merge), in `(bucket, key)` order. Fails on a corrupt record.
pub fn merge_copies(objects: Vec<BackupObject>) -> Result<Vec<BackupObject>, Error> {
    let mut merged: std::collections::BTreeMap<(Vec<u8>, Vec<u8>), Vec<BackupObject>> =
        Default::default();
    for o in objects {
        merged
            .entry((o.bucket.clone(), o.key.clone()))
            .or_default()
            .push(o);
    }
    merged
        .into_values()
        .map(|mut copies| {
            if copies.len() == 1 {
                return Ok(copies.pop().expect("one copy"));
            }
            let mut object = yeskv_core::Object::new();
            for c in &copies {
                let copy = decode_record(&c.record).map_err(|e| {
                    Error::Corrupt(format!(
                        "the record of {}/{}: {e}",
                        String::from_utf8_lossy(&c.bucket),
                        String::from_utf8_lossy(&c.key)
                    ))
                })?;
                object.sync(&copy);
            }
            let first = copies.swap_remove(0);
            Ok(BackupObject {
                record: encode_record(&object, None),
                ..first
            })
        })
        .collect()
}

/// Encodes objects as the body of `POST /v1/admin/import`: for each, `u16 BE len(bucket) ‖
/// bucket ‖ u16 BE len(key) ‖ key ‖ u32 BE len(record) ‖ record`.
pub fn encode_import(objects: &[BackupObject]) -> Vec<u8> {
    let mut out = Vec::with_capacity(objects.iter().map(import_len).sum());
    for o in objects {
        out.extend_from_slice(&(o.bucket.len() as u16).to_be_bytes());
        out.extend_from_slice(&o.bucket);
        out.extend_from_slice(&(o.key.len() as u16).to_be_bytes());
        out.extend_from_slice(&o.key);
        out.extend_from_slice(&(o.record.len() as u32).to_be_bytes());
        out.extend_from_slice(&o.record);
    }
    out
}

/// The bytes `o` takes in an import body.
pub fn import_len(o: &BackupObject) -> usize {
    8 + o.bucket.len() + o.key.len() + o.record.len()
}

/// Decodes an import body ([`encode_import`]); names the offset where it is malformed. Checks
/// only the framing: the caller checks names and records.
pub fn decode_import(body: &[u8]) -> Result<Vec<BackupObject>, String> {
    struct Reader<'a> {
        body: &'a [u8],
        at: usize,
        index: usize,
    }
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
            let part = self.body.get(self.at..self.at + n).ok_or_else(|| {
                format!(
                    "object {}: {what} runs past the end of the body (offset {})",
                    self.index, self.at
                )
            })?;
            self.at += n;
            Ok(part)
        }
        fn len(&mut self, bytes: usize, what: &str) -> Result<usize, String> {
            let raw = self.take(bytes, what)?;
            Ok(raw.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b)))
        }
    }
    let mut r = Reader {
        body,
        at: 0,
        index: 0,
    };
    let mut out = Vec::new();
    while r.at < body.len() {
        r.index = out.len();
        let n = r.len(2, "the bucket length")?;
        let bucket = r.take(n, "the bucket")?.to_vec();
        let n = r.len(2, "the key length")?;
        let key = r.take(n, "the key")?.to_vec();
        let n = r.len(4, "the record length")?;
        let record = r.take(n, "the record")?.to_vec();
        out.push(BackupObject {
            bucket,
            key,
            record,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn object() -> impl Strategy<Value = BackupObject> {
        (
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(bucket, key, record)| BackupObject {
                bucket,
                key,
                record,
            })
    }

    proptest! {
        /// An import body decodes to the objects it was made of.
        #[test]
        fn import_round_trips(objects in proptest::collection::vec(object(), 0..20)) {
            let body = encode_import(&objects);
            prop_assert_eq!(body.len(), objects.iter().map(import_len).sum::<usize>());
            prop_assert_eq!(decode_import(&body).expect("decodes"), objects);
        }

        /// A body cut anywhere inside an object is refused, never read as fewer objects.
        #[test]
        fn truncated_import_is_refused(
            objects in proptest::collection::vec(object(), 1..10),
            cut in any::<prop::sample::Index>(),
        ) {
            let body = encode_import(&objects);
            let ends: Vec<usize> = objects
                .iter()
                .scan(0, |end, o| { *end += import_len(o); Some(*end) })
                .collect();
            let at = cut.index(body.len());
            prop_assume!(!ends.contains(&at) && at != 0);
            prop_assert!(decode_import(&body[..at]).is_err());
        }
    }

    #[test]
    fn ids_and_file_names_are_plain_names() {
        for ok in ["nightly-2026-12-04", "a", "B_1.2"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("b1")).expect("mkdir");
        std::fs::write(dir.path().join("b1/CURRENT"), b"x").expect("write");
        assert!(file_path(dir.path(), "b1", "CURRENT").is_ok());
        assert!(matches!(
            file_path(dir.path(), "b1", "../b1/CURRENT"),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            file_path(dir.path(), "b1", "MANIFEST"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            file_path(dir.path(), "b2", "CURRENT"),
            Err(Error::NotFound(_))
        ));
    }
}
