//! Background workers' pacing: run a round every interval until the node stops.

use std::future::Future;
use std::time::Duration;

/// Calls `round` every `interval` (a late tick waits, it does not burst) until `stop` turns
/// true or its sender is dropped. `biased` keeps the simulator deterministic.
pub async fn every<F, Fut>(
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        round().await;
    }
}
