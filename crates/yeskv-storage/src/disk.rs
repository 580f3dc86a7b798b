//! The disk under the database: free space, what the database's files take, and the reserve.
//!
//! A node whose disk filled up must still start (RocksDB's open replays the WAL and writes a new
//! MANIFEST, OPTIONS file and WAL, so it needs some room) and must say what the space went to.
//! This module owns the three facts the engine needs for that:
//! - [`free_bytes`]: what an unprivileged process may still write on the filesystem;
//! - [`Usage`]: the bytes the database directory takes on disk, by kind of file (SSTs, WAL,
//!   MANIFEST, RocksDB's info log, the rest), counted in allocated blocks so that space a file
//!   reserved ahead of its data shows too;
//! - the **reserve**: a file of `reserve_bytes` kept beside the database while the disk has
//!   room ([`ensure_reserve`]) and deleted when the database cannot open for lack of space
//!   ([`release_reserve`]), so that the open finds the room it needs even on a disk that others
//!   filled. Like ext4's reserved blocks, but for the node alone.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, Error> {
    let st = rustix::fs::statvfs(path)
        .map_err(|e| Error::Io(format!("statvfs {}: {e}", path.display())))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Size of the filesystem holding `path`.
pub fn total_bytes(path: &Path) -> Result<u64, Error> {
    let st = rustix::fs::statvfs(path)
        .map_err(|e| Error::Io(format!("statvfs {}: {e}", path.display())))?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

/// Whether a RocksDB error message says the disk is full.
pub fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Disk quota exceeded")
}

/// What the database directory takes on disk, by kind of file (allocated bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Table files (`*.sst`): live data, tombstones, hints, and files compaction has not
    /// removed yet.
    pub sst: u64,
    /// Write-ahead log files (`*.log`).
    pub wal: u64,
    /// `MANIFEST-*` files.
    pub manifest: u64,
    /// RocksDB's own info log (`LOG`, `LOG.old.*`).
    pub info_log: u64,
    /// Everything else (`OPTIONS-*`, `CURRENT`, `IDENTITY`, `LOCK`, temporary files).
    pub other: u64,
}

impl Usage {
    /// Every byte counted.
    pub fn total(&self) -> u64 {
        self.sst + self.wal + self.manifest + self.info_log + self.other
    }

    /// Adds up the files of `dir` (not recursive: RocksDB keeps its files flat).
    pub fn of(dir: &Path) -> Result<Usage, Error> {
        let mut u = Usage::default();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Io(format!("listing {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // A file RocksDB deleted between the listing and the stat is simply not counted.
            let Ok(bytes) = allocated_bytes(&entry.path()) else {
                continue;
            };
            let slot = if name.ends_with(".sst") {
                &mut u.sst
            } else if name.ends_with(".log") {
                &mut u.wal
            } else if name.starts_with("MANIFEST-") {
                &mut u.manifest
            } else if name == "LOG" || name.starts_with("LOG.old") {
                &mut u.info_log
            } else {
                &mut u.other
            };
            *slot += bytes;
        }
        Ok(u)
    }
}

/// Bytes the file at `path` takes on disk (its allocated blocks, preallocated ones included).
pub fn allocated_bytes(path: &Path) -> Result<u64, Error> {
    let st =
        rustix::fs::stat(path).map_err(|e| Error::Io(format!("stat {}: {e}", path.display())))?;
    Ok((st.st_blocks as u64).saturating_mul(512))
}

/// The reserve file of the database at `db_path`: `reserve` beside it.
pub fn reserve_path(db_path: &Path) -> PathBuf {
    match db_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("reserve"),
        _ => PathBuf::from("reserve"),
    }
}

/// Bytes the reserve holds now (0 if it is missing).
pub fn reserve_held(db_path: &Path) -> u64 {
    allocated_bytes(&reserve_path(db_path)).unwrap_or(0)
}

/// Deletes the reserve, if any; returns the bytes it freed.
pub fn release_reserve(db_path: &Path) -> u64 {
    let path = reserve_path(db_path);
    let held = allocated_bytes(&path).unwrap_or(0);
    match std::fs::remove_file(&path) {
        Ok(()) => held,
        Err(_) => 0,
    }
}

/// Makes the reserve hold `bytes` if the disk has room for it and `headroom` more; returns
/// whether it does afterwards. Allocates real blocks (`fallocate`), then syncs, so that the
/// space is the node's and not only promised.
pub fn ensure_reserve(db_path: &Path, bytes: u64, headroom: u64) -> Result<bool, Error> {
    let path = reserve_path(db_path);
    let held = allocated_bytes(&path).unwrap_or(0);
    if bytes == 0 || held >= bytes {
        return Ok(true);
    }
    let free = free_bytes(db_path.parent().unwrap_or(db_path))?;
    if free + held < bytes + headroom {
        return Ok(false);
    }
    // A short reserve (its size was changed) is replaced whole.
    if held > 0 {
        let _ = std::fs::remove_file(&path);
    }
    let tmp = path.with_extension("tmp");
    let written = write_reserve(&tmp, bytes);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io(format!("writing {}: {e}", tmp.display())));
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::Io(format!("renaming {}: {e}", tmp.display())))?;
    Ok(true)
}

fn write_reserve(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    if rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, bytes).is_err() {
        // A filesystem without fallocate: write the bytes.
        let chunk = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
    }
    f.sync_all()
}
