//! The event trace of one seed: the client history (in `yeskv-check`'s model), the faults, the
//! nodes' own events (starts, epochs, crash losses) and the final reads, in the order they
//! happened, each with its simulated time.
//!
//! The trace is what `--hash` digests (FNV-1a, 64 bits, over the rendered lines), so two runs of
//! one seed that differ in any event, value, time or order give different hashes. Everything is
//! recorded from the simulation's single thread, so the order of lines is the order of events.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use yeskv_check::history::{DigestSample, Event, FinalRead, History};

/// What a trace line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A fault started or ended.
    Fault,
    /// A node's own event.
    Node,
    /// A client event (of the history).
    Op,
    /// A read of the final state.
    Final,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Fault => "fault",
            Kind::Node => "node",
            Kind::Op => "op",
            Kind::Final => "final",
        })
    }
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Simulated ms since the start.
    pub time_ms: u64,
    /// What it is about.
    pub kind: Kind,
    /// The key, for client events and final reads.
    pub key: Option<String>,
    /// The event, rendered.
    pub text: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7} {:<5} {}", self.time_ms, self.kind, self.text)
    }
}

#[derive(Default)]
struct Inner {
    history: History,
    lines: Vec<Line>,
}

/// The shared recorder of one seed (hosts, clients and the driver all write to it).
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a client event.
    pub fn event(&self, event: Event) {
        let text = serde_json::to_string(&event).unwrap_or_else(|e| format!("{event:?} ({e})"));
        let mut inner = self.inner.lock();
        inner.lines.push(Line {
            time_ms: event.time_ms,
            kind: Kind::Op,
            key: Some(event.op.key().to_string()),
            text,
        });
        inner.history.events.push(event);
    }

    /// Records a fault or a node event.
    pub fn note(&self, time_ms: u64, kind: Kind, text: impl Into<String>) {
        self.inner.lock().lines.push(Line {
            time_ms,
            kind,
            key: None,
            text: text.into(),
        });
    }

    /// Records a final read.
    pub fn final_read(&self, time_ms: u64, read: FinalRead) {
        let mut inner = self.inner.lock();
        inner.lines.push(Line {
            time_ms,
            kind: Kind::Final,
            key: Some(read.key.clone()),
            text: format!("{} {}: {:?}", read.node, read.key, read.values),
        });
        inner.history.final_reads.push(read);
    }

    /// Records tree-root samples (in the history only: they are many; what they show, the
    /// time the replicas agreed, is a trace line, and the roots follow from the final state).
    pub fn digests(&self, samples: Vec<DigestSample>) {
        self.inner.lock().history.digests.extend(samples);
    }

    /// Sets when the last fault healed.
    pub fn healed_at(&self, time_ms: u64) {
        self.inner.lock().history.healed_at_ms = Some(time_ms);
    }

    /// The history and the trace recorded so far.
    pub fn take(&self) -> (History, Vec<Line>) {
        let mut inner = self.inner.lock();
        (
            std::mem::take(&mut inner.history),
            std::mem::take(&mut inner.lines),
        )
    }
}

/// FNV-1a (64 bits) of the rendered trace: stable across runs, platforms and Rust versions.
pub fn hash(lines: &[Line]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in lines {
        for b in line.to_string().bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
