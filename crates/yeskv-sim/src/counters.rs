//! What the product's own counters say about a run: the simulator reads the nodes' metrics
//! (`yeskv_node::metrics`) instead of guessing from the disks.
//!
//! The nodes count with the `metrics` crate's macros, which report to the recorder of the
//! current thread. The driver runs each turmoil step inside [`ProductCounters::during`], so the
//! counts of every node of one seed land here (the simulation runs on one thread) and nowhere
//! else; no global recorder is installed, so seeds and tests running in parallel do not mix.
//! Only the counters below are kept; every other metric is a no-op, as without a recorder.
//!
//! Why: a data record leaves a disk when the reaper removes a tombstone *or* when a node that
//! receives a partition anew clears what it held of it (`Replica::clear_partition`), so the
//! disk's count of deletes no longer says how many tombstones were reaped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use yeskv_node::metrics::{TOMBSTONES_REAPED, TRANSFER_KEYS, TRANSFER_PARTITIONS_DONE};

/// The product's counters one seed reports (see the module docs).
#[derive(Default)]
pub struct ProductCounters {
    reaped: Arc<AtomicU64>,
    partitions_reported: Arc<AtomicU64>,
    transfer_keys: Arc<AtomicU64>,
}

impl ProductCounters {
    /// Runs `f` with these counters as the thread's recorder.
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self, f)
    }

    /// Tombstone copies removed by the reaper (`yeskv_tombstones_reaped_total`).
    pub fn reaped(&self) -> u64 {
        self.reaped.load(Ordering::Acquire)
    }

    /// Partitions transfer workers reported received, repeated reports included
    /// (`yeskv_transfer_partitions_done_total`).
    pub fn partitions_reported(&self) -> u64 {
        self.partitions_reported.load(Ordering::Acquire)
    }

    /// Keys copied by transfer workers (`yeskv_transfer_keys_total`).
    pub fn transfer_keys(&self) -> u64 {
        self.transfer_keys.load(Ordering::Acquire)
    }
}

impl Recorder for ProductCounters {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}
    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}
    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let counter = match key.name() {
            TOMBSTONES_REAPED => &self.reaped,
            TRANSFER_PARTITIONS_DONE => &self.partitions_reported,
            TRANSFER_KEYS => &self.transfer_keys,
            _ => return Counter::noop(),
        };
        Counter::from_arc(counter.clone())
    }

    fn register_gauge(&self, _key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
