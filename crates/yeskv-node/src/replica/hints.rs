//! Hints (sloppy quorum): the copies this node keeps for primaries it stood in for.
//!
//! When this node stands in for a down primary of a key, the object lives in the `hints` space,
//! keyed by (primary, storage key), not among the node's own data: the node's own replicas and
//! anti-entropy trees never see stand-in data, and handoff finds everything owed to one primary
//! with one prefix scan. A hint record is `[format 1][created_ms u64][key_hash u64][object record]`;
//! the object record carries its own CRC32C.
//!
//! A hint lives until its target took it durably (handoff) or, if the target left the layout,
//! until the key's current primaries did; never less. Age is no reason to drop one: a write
//! acknowledged with `w = 2` while two nodes stood in for its primaries exists only as hints,
//! and a hint's age says nothing about its writes' (one record per target and key keeps the time
//! of its first write, so a write merged into it seconds ago would go with it: a 900 s chaos run
//! lost four writes that way). What bounds hints is their number per target
//! ([`HintLimits::per_target_max`]) and their bytes in all ([`HintLimits::bytes_max`]): past
//! either the node refuses to stand in (the coordinator tries the next fallback, then the
//! primary itself, and answers `503` if fewer than `w` nodes took the write: back-pressure
//! instead of a silent drop). Deleted values cannot come back through a hint kept long: the
//! reaper removes a tombstone only once no member holds a hint of the key (`reaper.rs`).

use std::collections::BTreeMap;

use yeskv_core::codec::{decode_record, encode_record};
use yeskv_core::{NodeId, Object};
use yeskv_storage::{Durable, Engine, Space, WriteBatch};

use super::{scan_pages, Replica, Slot};
use crate::error::Error;

/// Format byte of a hint record.
const HINT_FORMAT: u8 = 1;

/// Bytes before the object record in a hint record.
const HINT_HEADER_BYTES: usize = 17;

/// Bounds on the hints this node keeps for others (module docs: past either, the node refuses
/// to stand in; it never drops a hint it holds).
#[derive(Clone, Copy, Debug)]
pub struct HintLimits {
    /// Most hints kept for one target node.
    pub per_target_max: u64,
    /// Most bytes of hints kept in all (keys and records as stored).
    pub bytes_max: u64,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            per_target_max: 1_000_000,
            bytes_max: 1 << 30,
        }
    }
}

/// The hints this node holds: how many per target, and their bytes in all (loaded by a scan
/// at open, then kept up to date under one lock).
#[derive(Clone, Debug, Default)]
pub(super) struct HintBook {
    pub(super) counts: BTreeMap<NodeId, u64>,
    pub(super) bytes: u64,
}

impl HintBook {
    /// Forgets one hint of `bytes` stored bytes held for `target`.
    pub(super) fn remove(&mut self, target: &NodeId, bytes: u64) {
        if let Some(c) = self.counts.get_mut(target) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.counts.remove(target);
            }
        }
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// One hint as stored, for handoff.
#[derive(Clone, Debug)]
pub struct Hint {
    /// The key's storage key.
    pub storage_key: Vec<u8>,
    /// The key's hash (selects the stripe lock).
    pub key_hash: u64,
    /// When the hint was first written (ms since the epoch): for the oldest-hint gauge only.
    pub created_ms: u64,
    /// The object owed to the target.
    pub object: Object,
    /// The stored bytes, so that removal can check nothing changed since they were sent.
    pub raw: Vec<u8>,
}

/// The hints-space key of (target, storage key).
fn hint_key(target: &NodeId, storage_key: &[u8]) -> Vec<u8> {
    let t = target.as_str().as_bytes();
    let mut k = Vec::with_capacity(1 + t.len() + storage_key.len());
    k.push(t.len() as u8);
    k.extend_from_slice(t);
    k.extend_from_slice(storage_key);
    k
}

/// The first key after every hint for `target`.
fn hint_prefix_end(target: &NodeId) -> Vec<u8> {
    let mut k = hint_key(target, &[]);
    // Node ids are short ASCII, so the prefix is never all 0xff: increment its last byte.
    if let Some(last) = k.last_mut() {
        *last = last.saturating_add(1);
    }
    k
}

impl<E: Engine> Replica<E> {
    /// The hint held for `target`, if any: (created_ms, object, raw bytes).
    pub(super) fn load_hint(
        &self,
        target: &NodeId,
        storage_key: &[u8],
    ) -> Result<Option<(u64, Object, Vec<u8>)>, Error> {
        let key = hint_key(target, storage_key);
        let raw = match self.engine.get(Space::Hints, &key) {
            Ok(raw) => raw,
            Err(yeskv_storage::Error::Corrupt(m)) => return Err(self.corrupt(storage_key, m)),
            Err(e) => return Err(e.into()),
        };
        let Some(raw) = raw else { return Ok(None) };
        let (created_ms, _, obj) =
            decode_hint(&raw).map_err(|e| self.corrupt(storage_key, e.to_string()))?;
        Ok(Some((created_ms, obj, raw)))
    }

    /// Stores `obj` as the hint for `target`, replacing `existing` (its creation time and
    /// stored bytes) if one is held: a new hint counts against the target's quota, and growth
    /// against the bytes bound (module docs).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_hint(
        &self,
        target: &NodeId,
        key_hash: u64,
        storage_key: &[u8],
        obj: &Object,
        existing: Option<(u64, u64)>,
        now_ms: u64,
    ) -> Result<Durable, Error> {
        let key = hint_key(target, storage_key);
        let created_ms = existing.map_or(now_ms, |(c, _)| c);
        let mut value = Vec::with_capacity(HINT_HEADER_BYTES + 64);
        value.push(HINT_FORMAT);
        value.extend_from_slice(&created_ms.to_le_bytes());
        value.extend_from_slice(&key_hash.to_le_bytes());
        value.extend_from_slice(&encode_record(obj, None));
        let new_bytes = (key.len() + value.len()) as u64;
        let old_bytes = existing.map_or(0, |(_, b)| b);
        {
            let mut book = self.hints.lock();
            let count = book.counts.get(target).copied().unwrap_or(0);
            let refusal = if existing.is_none() && count >= self.hint_limits.per_target_max {
                Some(format!("already holds {count} hints for {target}"))
            } else if new_bytes > old_bytes
                && book.bytes - old_bytes.min(book.bytes) + new_bytes > self.hint_limits.bytes_max
            {
                Some(format!(
                    "holds {} bytes of hints, the bound is {}",
                    book.bytes, self.hint_limits.bytes_max
                ))
            } else {
                None
            };
            if let Some(why) = refusal {
                metrics::counter!(crate::metrics::HINTS_REFUSED).increment(1);
                return Err(Error::HintsFull(format!("{} {why}", self.actor.node)));
            }
            if existing.is_none() {
                *book.counts.entry(target.clone()).or_insert(0) += 1;
            }
            book.bytes = book.bytes.saturating_sub(old_bytes) + new_bytes;
        }
        let mut b = WriteBatch::new();
        b.put(Space::Hints, key, value);
        let result = self.commit(b);
        if result.is_err() {
            // Nothing was written: the book goes back to what the disk holds.
            let mut book = self.hints.lock();
            if existing.is_none() {
                book.remove(target, new_bytes);
            } else {
                book.bytes = book.bytes.saturating_sub(new_bytes) + old_bytes;
            }
        }
        result
    }

    /// Reads the hint held for `target` (empty if none).
    pub fn read_hint(&self, target: &NodeId, storage_key: &[u8]) -> Result<Object, Error> {
        self.load_slot(Slot::HintFor(target), storage_key)
    }

    /// Hints held for other nodes, in all.
    pub fn hints_pending(&self) -> u64 {
        self.hints.lock().counts.values().sum()
    }

    /// Bytes of the hints held (keys and records as stored).
    pub fn hint_bytes(&self) -> u64 {
        self.hints.lock().bytes
    }

    /// Hints held per target node.
    pub fn hint_counts(&self) -> BTreeMap<NodeId, u64> {
        self.hints.lock().counts.clone()
    }

    /// Up to `limit` hints held for `target`, in key order.
    pub fn hint_batch(&self, target: &NodeId, limit: usize) -> Result<Vec<Hint>, Error> {
        let start = hint_key(target, &[]);
        let rows = self
            .engine
            .scan(Space::Hints, &start, &hint_prefix_end(target), limit)?;
        let mut hints = Vec::with_capacity(rows.len());
        for (key, raw) in rows {
            let storage_key = key[start.len()..].to_vec();
            match decode_hint(&raw) {
                Ok((created_ms, key_hash, object)) => hints.push(Hint {
                    storage_key,
                    key_hash,
                    created_ms,
                    object,
                    raw,
                }),
                Err(e) => {
                    // A corrupt hint is never sent; drop it (anti-entropy repairs the target).
                    let _ = self.corrupt(&storage_key, e.to_string());
                    let bytes = (key.len() + raw.len()) as u64;
                    let mut b = WriteBatch::new();
                    b.delete(Space::Hints, key);
                    drop(self.commit(b)?);
                    self.hints.lock().remove(target, bytes);
                }
            }
        }
        Ok(hints)
    }

    /// Removes the hint for (`target`, `hint.storage_key`) if it is still what `hint.raw` holds
    /// (a write that arrived since keeps it for the next round). Returns whether it was removed.
    pub async fn remove_hint(&self, target: &NodeId, hint: &Hint) -> Result<bool, Error> {
        let durable = {
            let _guard = self.stripe(hint.key_hash).lock();
            let key = hint_key(target, &hint.storage_key);
            if self.engine.get(Space::Hints, &key)?.as_deref() != Some(hint.raw.as_slice()) {
                return Ok(false);
            }
            let bytes = (key.len() + hint.raw.len()) as u64;
            let mut b = WriteBatch::new();
            b.delete(Space::Hints, key);
            let d = self.commit(b)?;
            self.hints.lock().remove(target, bytes);
            d
        };
        durable.wait().await?;
        Ok(true)
    }

    /// Sets the bounds on hints.
    pub fn set_hint_limits(&mut self, limits: HintLimits) {
        self.hint_limits = limits;
    }
}

/// Decodes a hint record: (created_ms, key_hash, object).
fn decode_hint(raw: &[u8]) -> Result<(u64, u64, Object), yeskv_core::Error> {
    if raw.len() < HINT_HEADER_BYTES {
        return Err(yeskv_core::Error::Corrupt {
            what: "hint",
            reason: format!("{} bytes, shorter than its header", raw.len()),
        });
    }
    if raw[0] != HINT_FORMAT {
        return Err(yeskv_core::Error::UnsupportedFormat {
            what: "hint",
            version: raw[0],
        });
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let obj = decode_record(&raw[HINT_HEADER_BYTES..])?;
    Ok((word(1), word(9), obj))
}

/// Bytes a hint takes as stored: its key and its record.
pub(super) fn stored_hint_bytes(target: &NodeId, storage_key: &[u8], raw: &[u8]) -> u64 {
    (1 + target.as_str().len() + storage_key.len() + raw.len()) as u64
}

/// Counts the hints held per target, and their bytes (at open).
pub(super) fn count_hints<E: Engine>(engine: &E) -> Result<HintBook, Error> {
    let mut book = HintBook::default();
    scan_pages(
        engine,
        Space::Hints,
        Vec::new(),
        &[0xff; 300],
        |key, raw| {
            let len = usize::from(*key.first().unwrap_or(&0));
            let id = key
                .get(1..1 + len)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| NodeId::new(s).ok());
            if let Some(id) = id {
                *book.counts.entry(id).or_insert(0) += 1;
            }
            book.bytes += (key.len() + raw.len()) as u64;
        },
    )?;
    Ok(book)
}
