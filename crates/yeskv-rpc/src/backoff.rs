//! Reconnect backoff: exponential, capped, jittered. Pure: the caller supplies the randomness (a
//! seeded RNG in tests and in the simulator) and does the waiting.
//!
//! After the `k`-th consecutive failure (k ≥ 1) the step is `min · 2^(k−1)`, capped at `max`,
//! and the delay is drawn uniformly from `[step / 2, step]` ("equal jitter": never less than half
//! the step, so a dead peer is not hammered, yet peers that failed together spread out).

use std::time::Duration;

use rand::Rng;

/// The backoff state of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    delay_min_ms: u64,
    delay_max_ms: u64,
    failures: u32,
}

impl Backoff {
    /// A backoff whose steps run from `delay_min_ms` up to `delay_max_ms` (both clamped to ≥ 1,
    /// and `max` to ≥ `min`).
    pub fn new(delay_min_ms: u64, delay_max_ms: u64) -> Backoff {
        let delay_min_ms = delay_min_ms.max(1);
        Backoff {
            delay_min_ms,
            delay_max_ms: delay_max_ms.max(delay_min_ms),
            failures: 0,
        }
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts again from the minimum.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records one more failure and returns how long to wait before the next attempt.
    pub fn next_delay<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(63);
        let step_ms = self
            .delay_min_ms
            .checked_shl(doublings)
            .filter(|step| step >> doublings == self.delay_min_ms)
            .unwrap_or(u64::MAX)
            .min(self.delay_max_ms);
        let delay_ms = rng.random_range(step_ms.div_ceil(2)..=step_ms);
        Duration::from_millis(delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(50, 5_000);
        let mut steps = Vec::new();
        for _ in 0..20 {
            steps.push(backoff.next_delay(&mut rng).as_millis() as u64);
        }
        let expected_steps = [50u64, 100, 200, 400, 800, 1600, 3200, 5000, 5000];
        for (delay, step) in steps.iter().zip(expected_steps) {
            assert!(
                (step.div_ceil(2)..=step).contains(delay),
                "{delay} not in [{}, {step}]",
                step / 2
            );
        }
        assert!(steps.iter().all(|delay| *delay <= 5_000));
        assert_eq!(backoff.failures(), 20);
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_millis(50));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut backoff = Backoff::new(50, 5_000);
            (0..10)
                .map(|_| backoff.next_delay(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(0);
        let mut backoff = Backoff::new(u64::MAX / 4, u64::MAX);
        for _ in 0..200 {
            backoff.next_delay(&mut rng);
        }
    }
}
