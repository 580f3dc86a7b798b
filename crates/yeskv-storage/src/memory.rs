//! The in-memory engine: a `BTreeMap` per space behind a lock. For unit and simulation tests
//! only — it forgets everything when dropped, so it is never the product's default.
//!
//! It has no background compaction: [`Engine::compact`] and [`Engine::compact_range`] of the
//! data space apply its [`DataFilter`] (if one is set) to the records there, at the filter's
//! clock, as a RocksDB compaction would.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::{DataFilter, Durable, Engine, EngineStat, Error, Op, Space, SyncMode, WriteBatch};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// See the module docs.
#[derive(Default)]
pub struct MemoryEngine {
    spaces: RwLock<[Map; 3]>,
    /// While set, writes fail as on a full disk (see [`MemoryEngine::fail_writes`]).
    failing: AtomicBool,
    /// Records overwritten by [`MemoryEngine::poke`] (the engine's [`Engine::epoch`]).
    pokes: AtomicU64,
    /// What compacting the data space drops (module docs).
    data_filter: RwLock<Option<DataFilter>>,
}

fn index(space: Space) -> usize {
    match space {
        Space::Data => 0,
        Space::Meta => 1,
        Space::Hints => 2,
    }
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrites a raw record, bypassing every check (tests use it to plant corruption).
    pub fn poke(&self, space: Space, key: &[u8], value: &[u8]) {
        self.spaces.write()[index(space)].insert(key.to_vec(), value.to_vec());
        self.pokes.fetch_add(1, Ordering::SeqCst);
    }

    /// Sets what compacting the data space drops (`None`: nothing).
    pub fn set_data_filter(&self, filter: Option<DataFilter>) {
        *self.data_filter.write() = filter;
    }

    /// Drops the data records in `[start, end)` (unbounded where `None`) that the filter names.
    fn filter_data(&self, start: Option<&[u8]>, end: Option<&[u8]>) {
        let Some(filter) = self.data_filter.read().clone() else {
            return;
        };
        let now_ms = filter.now_ms();
        let mut spaces = self.spaces.write();
        spaces[index(Space::Data)].retain(|k, v| {
            let inside =
                start.is_none_or(|s| k.as_slice() >= s) && end.is_none_or(|e| k.as_slice() < e);
            !(inside && filter.drops(k, v, now_ms))
        });
    }

    /// While `on`, every write fails with [`Error::Io`] and changes nothing, as on a full disk
    /// (tests of what a node does when its own storage refuses writes).
    pub fn fail_writes(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }
}

impl Engine for MemoryEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.spaces.read()[index(space)].get(key).cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Io("No space left on device (fail_writes)".into()));
        }
        let mut spaces = self.spaces.write();
        for op in batch.ops {
            match op {
                Op::Put { space, key, value } => {
                    spaces[index(space)].insert(key, value);
                }
                Op::Delete { space, key } => {
                    spaces[index(space)].remove(&key);
                }
                Op::DeleteRange { space, start, end } => {
                    let map = &mut spaces[index(space)];
                    let mut from_start = map.split_off(&start);
                    let from_end = from_start.split_off(&end);
                    map.extend(from_end);
                }
            }
        }
        Ok(Durable::done())
    }

    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<crate::Rows, Error> {
        Ok(self.spaces.read()[index(space)]
            .range(start.to_vec()..end.to_vec())
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    fn compact(&self, space: Space) -> Result<(), Error> {
        if space == Space::Data {
            self.filter_data(None, None);
        }
        Ok(())
    }

    fn compact_range(&self, space: Space, start: &[u8], end: &[u8]) -> Result<(), Error> {
        if space == Space::Data {
            self.filter_data(Some(start), Some(end));
        }
        Ok(())
    }

    fn sync_mode(&self) -> SyncMode {
        SyncMode::None
    }

    /// Changes with every [`MemoryEngine::poke`], which changes a record behind `write`.
    fn epoch(&self) -> u64 {
        self.pokes.load(Ordering::SeqCst)
    }

    fn stats(&self) -> Vec<EngineStat> {
        let spaces = self.spaces.read();
        vec![EngineStat {
            name: "memory_records",
            help: "Records held by the in-memory engine.",
            value: spaces.iter().map(|m| m.len()).sum::<usize>() as f64,
        }]
    }
}
