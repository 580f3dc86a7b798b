//! Hot keys: which keys and partitions this node's clients hit hardest.
//!
//! Keys are tracked with the Space-Saving algorithm (Metwally, Agrawal, El Abbadi 2005): at
//! most `k` counters; a key not tracked takes over the smallest counter, inheriting its count
//! as its error bound. Every key whose true count exceeds `total / k` is tracked, and a
//! tracked key's count overestimates its true count by at most its error. Counts halve every
//! [`DECAY`], so the list follows the current load, not the node's whole life. Lookups go by
//! the key hash the coordinator computed anyway: a hit allocates nothing.
//!
//! Partitions are simply counted (one atomic per partition): with a salted bucket, the counts
//! show a hot key's load spread over partitions. Served at `GET /v1/hot` and in `/metrics`
//! (`yeskv_hot_key_ops` for the top keys, `yeskv_partition_ops_total`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Keys tracked.
pub const TRACKED: usize = 64;

/// Counts halve this often.
pub const DECAY: Duration = Duration::from_secs(60);

/// One tracked key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotKey {
    /// Its bucket.
    pub bucket: Vec<u8>,
    /// Its key.
    pub key: Vec<u8>,
    /// Its partition.
    pub partition: u16,
    /// Operations counted (an overestimate by at most `error`).
    pub ops: u64,
    /// How much of `ops` may belong to keys it displaced.
    pub error: u64,
}

/// The Space-Saving summary (module docs): pure, time passed in.
#[derive(Debug)]
pub struct SpaceSaving {
    capacity: usize,
    keys: HashMap<u64, HotKey>,
}

impl SpaceSaving {
    /// A summary of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        SpaceSaving {
            capacity: capacity.max(1),
            keys: HashMap::with_capacity(capacity),
        }
    }

    /// Counts one operation on `(bucket, key)` of `partition`, whose hash is `hash`.
    pub fn record(&mut self, partition: u16, hash: u64, bucket: &[u8], key: &[u8]) {
        if let Some(k) = self.keys.get_mut(&hash) {
            k.ops += 1;
            return;
        }
        let (ops, error) = if self.keys.len() < self.capacity {
            (1, 0)
        } else {
            let (&victim, min) = self
                .keys
                .iter()
                .min_by_key(|(_, k)| k.ops)
                .map(|(h, k)| (h, k.ops))
                .expect("full, so not empty");
            self.keys.remove(&victim);
            (min + 1, min)
        };
        self.keys.insert(
            hash,
            HotKey {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                partition,
                ops,
                error,
            },
        );
    }

    /// Halves every count (keys that reach 0 leave).
    pub fn decay(&mut self) {
        self.keys.retain(|_, k| {
            k.ops /= 2;
            k.error /= 2;
            k.ops > 0
        });
    }

    /// The `n` keys with the highest counts, highest first.
    pub fn top(&self, n: usize) -> Vec<HotKey> {
        let mut all: Vec<HotKey> = self.keys.values().cloned().collect();
        all.sort_by(|a, b| b.ops.cmp(&a.ops).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }
}

/// The node's hot-key and partition counters (module docs).
pub struct HotKeys {
    keys: Mutex<(SpaceSaving, Instant)>,
    partitions: Vec<AtomicU64>,
}

impl HotKeys {
    /// Counters for `partitions` partitions.
    pub fn new(partitions: u32) -> Self {
        HotKeys {
            keys: Mutex::new((SpaceSaving::new(TRACKED), Instant::now())),
            partitions: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one client operation on `(bucket, key)` in `partition`.
    pub fn record(&self, partition: u16, hash: u64, bucket: &[u8], key: &[u8]) {
        if let Some(p) = self.partitions.get(usize::from(partition)) {
            p.fetch_add(1, Ordering::Relaxed);
        }
        let mut guard = self.keys.lock();
        let (summary, since) = &mut *guard;
        if since.elapsed() >= DECAY {
            summary.decay();
            *since = Instant::now();
        }
        summary.record(partition, hash, bucket, key);
    }

    /// The hottest `n` keys.
    pub fn top(&self, n: usize) -> Vec<HotKey> {
        self.keys.lock().0.top(n)
    }

    /// Operations counted per partition since start, `(partition, ops)` for those with any.
    pub fn partitions(&self) -> Vec<(u16, u64)> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(p, n)| (p as u16, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every key more frequent than total / capacity is tracked, and no tracked key's
        /// count is below its true count or above it by more than its error.
        #[test]
        fn space_saving_bounds(stream in prop::collection::vec(0u64..40, 1..2000)) {
            let mut s = SpaceSaving::new(8);
            let mut truth: HashMap<u64, u64> = HashMap::new();
            for k in &stream {
                s.record(0, *k, b"b", &k.to_be_bytes());
                *truth.entry(*k).or_default() += 1;
            }
            let top = s.top(8);
            for hk in &top {
                let k = u64::from_be_bytes(hk.key.clone().try_into().expect("8 bytes"));
                let t = truth[&k];
                prop_assert!(hk.ops >= t && hk.ops - hk.error <= t, "{hk:?} true {t}");
            }
            let total = stream.len() as u64;
            for (k, t) in &truth {
                if *t > total / 8 {
                    prop_assert!(top.iter().any(|hk| hk.key == k.to_be_bytes()), "{k} ({t}) missing");
                }
            }
        }
    }

    #[test]
    fn decay_halves_and_forgets() {
        let mut s = SpaceSaving::new(4);
        for _ in 0..5 {
            s.record(0, 1, b"b", b"one");
        }
        s.record(0, 2, b"b", b"two");
        s.decay();
        let top = s.top(4);
        assert_eq!(top.len(), 1);
        assert_eq!((top[0].key.as_slice(), top[0].ops), (&b"one"[..], 2));
    }
}
