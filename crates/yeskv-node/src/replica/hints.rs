//! Hints (sloppy quorum): the copies this node keeps for primaries it stood in for.
//!
//! When this node stands in for a down primary of a key, the object lives in the `hints` space,
//! keyed by (primary, storage key), not among the node's own data: the node's own replicas and
//! anti-entropy trees never see stand-in data, and handoff finds everything owed to one primary
//! with one prefix scan. A hint record is `[format 2][created_ms u64][key_hash u64][stand-in
//! epoch u64][object record]` (format 1, still read, has no stand-in epoch); the object record
//! carries its own CRC32C.
//!
//! **Stand-in actors.** A write this node coordinates for a down primary gets a dot of a
//! *stand-in actor* `node@epoch`, not of the node's own actor (whose counters for the key live
//! on the primaries, which a stand-in cannot read: minting from an empty hint would reuse a dot
//! the primaries have seen, kv679). The hint keeps its actor's epoch: every stand-in write into
//! the same hint takes the next counter of the same actor, on top of the hint's object, which
//! holds every earlier dot of that actor for the key — so the actor's counters for the key are
//! contiguous, as DVV requires, and a key takes one new actor per hint lifetime (an outage), not
//! per write. The first stand-in write into a new hint draws a fresh epoch
//! ([`Replica::stand_in_actor`]): after a hint was delivered and dropped, the next one starts a
//! new actor, never reusing a counter of the old. (One fresh actor per write, as before, grew a
//! key written 910 times during an outage past the 16 KiB token limit, for good.)
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
const HINT_FORMAT: u8 = 2;

/// Bytes before the object record in a hint record.
const HINT_HEADER_BYTES: usize = 25;

/// Bytes before the object record in a hint record of format 1.
const HINT_HEADER_BYTES_V1: usize = 17;

/// A decoded hint record (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct HintRecord {
    /// When the hint was first stored.
    pub(super) created_ms: u64,
    /// The key's hash.
    pub(super) key_hash: u64,
    /// The epoch of the hint's stand-in actor, once a write was coordinated into it.
    pub(super) stand_in: Option<u64>,
    /// The object held.
    pub(super) object: Object,
}

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
pub(super) fn hint_key(target: &NodeId, storage_key: &[u8]) -> Vec<u8> {
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
    /// The hint held for `target`, if any, with its stored bytes.
    pub(super) fn load_hint(
        &self,
        target: &NodeId,
        storage_key: &[u8],
    ) -> Result<Option<(HintRecord, Vec<u8>)>, Error> {
        let key = hint_key(target, storage_key);
        let raw = match self.engine.get(Space::Hints, &key) {
            Ok(raw) => raw,
            Err(yeskv_storage::Error::Corrupt(m)) => return Err(self.corrupt(storage_key, m)),
            Err(e) => return Err(e.into()),
        };
        let Some(raw) = raw else { return Ok(None) };
        let record = decode_hint(&raw).map_err(|e| self.corrupt(storage_key, e.to_string()))?;
        Ok(Some((record, raw)))
    }

    /// Stores `obj` as the hint for `target`, replacing `existing` (its record and stored
    /// bytes) if one is held, with stand-in epoch `stand_in` (else the existing one's): a new
    /// hint counts against the target's quota, and growth against the bytes bound (module
    /// docs).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_hint(
        &self,
        target: &NodeId,
        key_hash: u64,
        storage_key: &[u8],
        obj: &Object,
        existing: Option<(&HintRecord, u64)>,
        stand_in: Option<u64>,
        now_ms: u64,
    ) -> Result<Durable, Error> {
        let key = hint_key(target, storage_key);
        let created_ms = existing.map_or(now_ms, |(h, _)| h.created_ms);
        let stand_in = stand_in.or_else(|| existing.and_then(|(h, _)| h.stand_in));
        let mut value = Vec::with_capacity(HINT_HEADER_BYTES + 64);
        value.push(HINT_FORMAT);
        value.extend_from_slice(&created_ms.to_le_bytes());
        value.extend_from_slice(&key_hash.to_le_bytes());
        // 0 is no epoch: stand-in epochs are odd (`Replica::stand_in_actor`).
        value.extend_from_slice(&stand_in.unwrap_or(0).to_le_bytes());
        value.extend_from_slice(&encode_record(obj, None));
        let new_bytes = (key.len() + value.len()) as u64;
        let old_bytes = existing.map_or(0, |(_, b)| b);
        let existing = existing.map(|(h, _)| h.created_ms);
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
                Ok(h) => hints.push(Hint {
                    storage_key,
                    key_hash: h.key_hash,
                    created_ms: h.created_ms,
                    object: h.object,
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

/// A hint as stored in the hints space (its key and value, as a backup copies them): the
/// storage key of the key it is for, and the object owed. Checks the record's checksum.
pub fn decode_stored_hint(
    key: &[u8],
    value: &[u8],
) -> Result<(Vec<u8>, yeskv_core::Object), yeskv_core::Error> {
    let target_len = usize::from(*key.first().ok_or_else(|| yeskv_core::Error::Corrupt {
        what: "hint key",
        reason: "empty".into(),
    })?);
    let storage_key = key
        .get(1 + target_len..)
        .ok_or_else(|| yeskv_core::Error::Corrupt {
            what: "hint key",
            reason: format!("{} bytes, shorter than its target's name", key.len()),
        })?;
    Ok((storage_key.to_vec(), decode_hint(value)?.object))
}

/// Decodes a hint record (format 2, or 1 without a stand-in epoch).
fn decode_hint(raw: &[u8]) -> Result<HintRecord, yeskv_core::Error> {
    let header = match raw.first() {
        Some(&HINT_FORMAT) => HINT_HEADER_BYTES,
        Some(1) => HINT_HEADER_BYTES_V1,
        Some(&version) => {
            return Err(yeskv_core::Error::UnsupportedFormat {
                what: "hint",
                version,
            })
        }
        None => 0,
    };
    if header == 0 || raw.len() < header {
        return Err(yeskv_core::Error::Corrupt {
            what: "hint",
            reason: format!("{} bytes, shorter than its header", raw.len()),
        });
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let stand_in = (header == HINT_HEADER_BYTES)
        .then(|| word(17))
        .filter(|e| *e != 0);
    Ok(HintRecord {
        created_ms: word(1),
        key_hash: word(9),
        stand_in,
        object: decode_record(&raw[header..])?,
    })
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
