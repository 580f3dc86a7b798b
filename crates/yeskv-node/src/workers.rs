//! The node's background workers: started, reported and joined in one place.
//!
//! A worker (hinted handoff, anti-entropy exchanges, the reaper, the tree rebuild after a
//! crash) runs rounds every interval until the node stops ([`every`]). Each has a
//! [`WorkerStatus`] that `/v1/status` and `/metrics` show: whether it is in a round (`busy`),
//! waiting (`idle`), or waiting with work left over that a round's bounds held back
//! (`throttled`: a handoff round that sent its batches, an exchange round that spent its key
//! budget, a reaper round that filled its batch), how many rounds ran and failed, and the last
//! error. [`Workers`] owns their tasks and the stop signal: [`Workers::stop_and_join`] stops
//! every one and waits for it, so nothing the node started outlives it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use crate::error::Error;
use crate::metrics;

/// How a node spawns its tasks: `tokio::spawn` in the product, `spawn_local` in the
/// simulator (whose hosts are single-threaded and must schedule deterministically).
pub type Spawner = fn(BoxFuture<'static, ()>) -> tokio::task::JoinHandle<()>;

/// The product's spawner.
pub fn tokio_spawner(f: BoxFuture<'static, ()>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(f)
}

/// Runs `work` (a scan, a compaction: long, blocking) off the async workers, on tokio's
/// blocking pool, and returns what it returned; `what` names it if the task fails.
///
/// In the simulator (single-threaded hosts) it runs in place: a blocking-pool thread would
/// finish at a time the OS decides, and a seed would not replay the same (its engine is in
/// memory, so this does not block for long).
pub async fn off_async<T, F>(what: &str, work: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => Ok(work()),
        _ => tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Storage(format!("{what} task: {e}"))),
    }
}

/// What a round left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing left to do until new work arrives.
    Done,
    /// The round stopped at its bounds with work left for the next round.
    Throttled,
}

/// A worker's state, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Waiting for its next round, nothing left over.
    Idle = 0,
    /// In a round.
    Busy = 1,
    /// Waiting for its next round, with work its last round's bounds held back.
    Throttled = 2,
    /// Stopped.
    Stopped = 3,
}

impl State {
    /// Its name in `/v1/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Busy => "busy",
            State::Throttled => "throttled",
            State::Stopped => "stopped",
        }
    }
}

/// What one worker reports (see the module docs).
#[derive(Debug)]
pub struct WorkerStatus {
    name: &'static str,
    state: AtomicU8,
    rounds: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl WorkerStatus {
    fn new(name: &'static str) -> Self {
        WorkerStatus {
            name,
            state: AtomicU8::new(State::Idle as u8),
            rounds: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its state now.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Idle,
            1 => State::Busy,
            2 => State::Throttled,
            _ => State::Stopped,
        }
    }

    /// Rounds run.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Rounds that failed.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The error of the last failed round, if any round failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    fn set(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
        ::metrics::gauge!(metrics::WORKER_BUSY, "worker" => self.name).set(if s == State::Busy {
            1.0
        } else {
            0.0
        });
    }

    /// For a worker that runs its own loop (`crate::xr`): whether it has a round in flight.
    pub(crate) fn set_busy(&self, busy: bool) {
        self.set(if busy { State::Busy } else { State::Idle });
    }

    /// For a worker that runs its own loop: records one round's outcome.
    pub(crate) fn record(&self, outcome: &Result<Progress, Error>) {
        self.finished(outcome);
    }

    /// For a worker that runs its own loop: it has ended.
    pub(crate) fn set_stopped(&self) {
        self.set(State::Stopped);
    }

    /// Records a round's outcome.
    fn finished(&self, outcome: &Result<Progress, Error>) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(metrics::WORKER_ROUNDS, "worker" => self.name).increment(1);
        match outcome {
            Ok(Progress::Done) => self.set(State::Idle),
            Ok(Progress::Throttled) => self.set(State::Throttled),
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(metrics::WORKER_FAILURES, "worker" => self.name).increment(1);
                tracing::debug!(worker = self.name, error = %e, "background round failed");
                *self.last_error.lock() = Some(e.to_string());
                self.set(State::Idle);
            }
        }
    }
}

/// A stop signal many tasks wait on: set once, it wakes every waiter, always in the order they
/// started waiting. (A `tokio::sync::watch` channel spreads its waiters over internal notifiers
/// picked at random, so the order in which a clean stop woke the node's servers and workers
/// changed from run to run, and the simulator could not replay a seed with a clean restart.)
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    stopped: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    /// A signal not set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the signal: every waiter wakes.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether the signal is set.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once the signal is set.
    pub async fn stopped(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a `stop` in between is not missed.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Calls `round` every `interval` (a late tick waits, it does not burst) until `stop` is set,
/// reporting each round in `status`. `biased` keeps the simulator deterministic.
pub async fn every<F, Fut>(
    interval: Duration,
    stop: StopSignal,
    status: &WorkerStatus,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Progress, Error>>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            _ = stop.stopped() => break,
        }
        if stop.is_stopped() {
            break;
        }
        status.set(State::Busy);
        let outcome = round().await;
        status.finished(&outcome);
    }
    status.set(State::Stopped);
}

/// Runs a one-off job (a worker with a single round), reporting it in `status`.
pub async fn once<Fut>(status: &WorkerStatus, job: Fut)
where
    Fut: Future<Output = Result<(), Error>>,
{
    status.set(State::Busy);
    let outcome = job.await.map(|()| Progress::Done);
    status.finished(&outcome);
    status.set(State::Stopped);
}

/// The running workers of a node (see the module docs).
pub struct Workers {
    spawn: Spawner,
    stop: StopSignal,
    /// Whether the signal came from outside (then its owner sets it).
    external: bool,
    running: Vec<(Arc<WorkerStatus>, tokio::task::JoinHandle<()>)>,
}

impl Workers {
    /// No worker yet; tasks will be spawned with `spawn`, and stop on `stop` if given (else on
    /// [`Workers::stop`]).
    pub fn new(spawn: Spawner, stop: Option<StopSignal>) -> Self {
        Workers {
            spawn,
            external: stop.is_some(),
            stop: stop.unwrap_or_default(),
            running: Vec::new(),
        }
    }

    /// Starts the worker `name`: `run` gets the stop signal and the status to report in, and
    /// returns when the signal comes.
    pub fn start<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(StopSignal, Arc<WorkerStatus>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let status = Arc::new(WorkerStatus::new(name));
        let task = run(self.stop.clone(), status.clone());
        let handle = (self.spawn)(Box::pin(task));
        self.running.push((status, handle));
    }

    /// Every worker's status, in start order.
    pub fn statuses(&self) -> Vec<Arc<WorkerStatus>> {
        self.running.iter().map(|(s, _)| s.clone()).collect()
    }

    /// Signals every worker to stop (a round in progress finishes first); with a signal from
    /// outside, its owner does.
    pub fn stop(&self) {
        if !self.external {
            self.stop.stop();
        }
    }

    /// Stops every worker and waits for each to end.
    pub async fn stop_and_join(&mut self) {
        self.stop();
        for (status, handle) in self.running.drain(..) {
            if let Err(e) = handle.await {
                tracing::warn!(worker = status.name(), error = %e, "a worker ended abnormally");
            }
        }
    }
}
