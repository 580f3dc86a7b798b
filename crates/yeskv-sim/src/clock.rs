//! Simulated time: every node's [`Clock`] is the simulation's elapsed time, plus a fixed base
//! (a plausible Unix time, so version timestamps look real), plus the node's own skew.
//!
//! The skew is an `AtomicI64` held by the simulation driver outside the node's host, so a clock
//! skew fault changes a running node's clock at once and survives the node's restarts (a skewed
//! machine stays skewed when its process restarts). Nothing here reads the system clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use yeskv_node::clock::Clock;

/// The Unix time (ms) at which every simulation starts: 2026-01-01T00:00:00Z.
pub const BASE_UNIX_MS: u64 = 1_767_225_600_000;

/// Simulated milliseconds since the simulation began, read inside a host or client of the
/// running simulation (0 outside one).
pub fn sim_now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// One node's clock (see the module docs).
#[derive(Clone, Debug)]
pub struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock skewed by whatever `skew_ms` holds when read.
    pub fn new(skew_ms: Arc<AtomicI64>) -> Self {
        SimClock { skew_ms }
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let now = BASE_UNIX_MS + sim_now_ms();
        now.saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }
}
