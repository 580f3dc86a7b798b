//! The in-memory engine: a `BTreeMap` per space behind a lock. For unit and simulation tests
//! only — it forgets everything when dropped, so it is never the product's default.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use crate::{Durable, Engine, EngineStat, Error, Op, Space, SyncMode, WriteBatch};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// See the module docs.
#[derive(Default)]
pub struct MemoryEngine {
    spaces: RwLock<[Map; 3]>,
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
    }
}

impl Engine for MemoryEngine {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.spaces.read()[index(space)].get(key).cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<Durable, Error> {
        let mut spaces = self.spaces.write();
        for op in batch.ops {
            match op {
                Op::Put { space, key, value } => {
                    spaces[index(space)].insert(key, value);
                }
                Op::Delete { space, key } => {
                    spaces[index(space)].remove(&key);
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
        let now = crate::rocks::now_ms();
        self.spaces.write()[index(space)]
            .retain(|_, v| yeskv_core::codec::record_reap_at_ms(v).is_none_or(|t| t > now));
        Ok(())
    }

    fn sync_mode(&self) -> SyncMode {
        SyncMode::None
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
