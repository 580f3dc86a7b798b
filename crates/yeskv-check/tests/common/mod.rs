//! A small builder for hand-made histories, shared by the integration tests.

#![allow(dead_code)]

use yeskv_check::history::{DigestSample, Event, FinalRead, History, Op, ProcessId, Status};

/// Builds a history event by event; time advances by 1 ms per event.
#[derive(Default)]
pub struct Builder {
    pub history: History,
    time_ms: u64,
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| value.to_string()).collect()
}

pub fn write_op(key: &str, value: &str, saw: &[&str]) -> Op {
    Op::Write {
        key: key.to_string(),
        value: value.to_string(),
        saw: strings(saw),
        ttl_ms: None,
    }
}

/// A write with a TTL of `ttl_ms`.
pub fn ttl_write_op(key: &str, value: &str, saw: &[&str], ttl_ms: u64) -> Op {
    Op::Write {
        key: key.to_string(),
        value: value.to_string(),
        saw: strings(saw),
        ttl_ms: Some(ttl_ms),
    }
}

pub fn dt_add_op(cart: &str, item: &str) -> Op {
    Op::DtCartAdd {
        cart: cart.to_string(),
        item: item.to_string(),
    }
}

pub fn dt_remove_op(cart: &str, item: &str) -> Op {
    Op::DtCartRemove {
        cart: cart.to_string(),
        item: item.to_string(),
    }
}

pub fn dt_read_op(cart: &str, items: &[&str]) -> Op {
    Op::DtCartRead {
        cart: cart.to_string(),
        items: strings(items),
    }
}

pub fn delete_op(key: &str, saw: &[&str]) -> Op {
    Op::Delete {
        key: key.to_string(),
        saw: strings(saw),
    }
}

pub fn read_op(key: &str, values: &[&str]) -> Op {
    Op::Read {
        key: key.to_string(),
        values: strings(values),
    }
}

pub fn add_op(cart: &str, item: &str) -> Op {
    Op::CartAdd {
        cart: cart.to_string(),
        item: item.to_string(),
        stale: false,
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder::default()
    }

    pub fn event(&mut self, process: ProcessId, status: Status, op: Op) -> &mut Self {
        self.time_ms += 1;
        self.history.events.push(Event {
            process,
            time_ms: self.time_ms,
            status,
            op,
            node: None,
            error: None,
        });
        self
    }

    pub fn invoke(&mut self, process: ProcessId, op: Op) -> &mut Self {
        let op = match op {
            Op::Read { key, .. } => Op::Read {
                key,
                values: Vec::new(),
            },
            Op::DtCartRead { cart, .. } => Op::DtCartRead {
                cart,
                items: Vec::new(),
            },
            other => other,
        };
        self.event(process, Status::Invoke, op)
    }

    /// An invocation immediately followed by its completion.
    pub fn op(&mut self, process: ProcessId, status: Status, op: Op) -> &mut Self {
        self.invoke(process, op.clone());
        self.event(process, status, op)
    }

    pub fn write(
        &mut self,
        process: ProcessId,
        status: Status,
        key: &str,
        value: &str,
        saw: &[&str],
    ) -> &mut Self {
        self.op(process, status, write_op(key, value, saw))
    }

    pub fn delete(
        &mut self,
        process: ProcessId,
        status: Status,
        key: &str,
        saw: &[&str],
    ) -> &mut Self {
        self.op(process, status, delete_op(key, saw))
    }

    pub fn read(
        &mut self,
        process: ProcessId,
        status: Status,
        key: &str,
        values: &[&str],
    ) -> &mut Self {
        self.op(process, status, read_op(key, values))
    }

    pub fn add(&mut self, process: ProcessId, status: Status, cart: &str, item: &str) -> &mut Self {
        self.op(process, status, add_op(cart, item))
    }

    pub fn final_read(&mut self, node: &str, key: &str, values: &[&str]) -> &mut Self {
        self.history.final_reads.push(FinalRead {
            key: key.to_string(),
            node: node.to_string(),
            values: strings(values),
            time_ms: None,
        });
        self
    }

    /// A `merged` final read made at `time_ms`.
    pub fn merged_at(&mut self, time_ms: u64, key: &str, values: &[&str]) -> &mut Self {
        self.history.final_reads.push(FinalRead {
            key: key.to_string(),
            node: "merged".to_string(),
            values: strings(values),
            time_ms: Some(time_ms),
        });
        self
    }

    /// Lets `ms` pass before the next event.
    pub fn sleep(&mut self, ms: u64) -> &mut Self {
        self.time_ms += ms;
        self
    }

    /// The time of the last event, ms.
    pub fn now_ms(&self) -> u64 {
        self.time_ms
    }

    pub fn merged(&mut self, key: &str, values: &[&str]) -> &mut Self {
        self.final_read("merged", key, values)
    }

    pub fn digest(&mut self, time_ms: u64, node: &str, partition: u32, digest: &str) -> &mut Self {
        self.history.digests.push(DigestSample {
            time_ms,
            node: node.to_string(),
            partition,
            digest: digest.to_string(),
        });
        self
    }

    pub fn healed_at(&mut self, time_ms: u64) -> &mut Self {
        self.history.healed_at_ms = Some(time_ms);
        self
    }

    pub fn build(&self) -> History {
        self.history.clone()
    }
}
