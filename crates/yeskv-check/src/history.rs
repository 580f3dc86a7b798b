//! A history: what clients asked, what they were told, and when (Jepsen's model).
//!
//! Every operation appears twice: an [`Status::Invoke`] event when the client sends it and one
//! completion event — [`Status::Ok`] (acknowledged), [`Status::Fail`] (definitely not applied:
//! a 4xx answer) or [`Status::Info`] (indeterminate: a timeout, a dropped connection, a `503`
//! quorum failure — in a Dynamo store a write that missed its quorum may still have been applied
//! on some replica and spread later, so it is never a definite failure).
//!
//! Values are unique per history (a writer never writes the same value twice), so "which write
//! is this sibling" needs no causality tracking in the checker. A write records `saw`: the values
//! of the read whose causal context it carried — the versions it claims to supersede.

use serde::{Deserialize, Serialize};

/// A client process (one logical client issuing one operation at a time).
pub type ProcessId = u64;

/// How an operation ended (or that it started).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The client sent the request.
    Invoke,
    /// Acknowledged.
    Ok,
    /// Definitely not applied (the store refused it, e.g. `400`).
    Fail,
    /// Indeterminate: may or may not have been applied.
    Info,
}

/// One operation of a workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Register workload: read a key. On `Ok`, `values` are the siblings returned (empty: not
    /// found). On `Invoke`, `values` is empty.
    Read {
        /// The key.
        key: String,
        /// Sibling values returned.
        values: Vec<String>,
    },
    /// Register workload: write `value`, with the context of a read that returned `saw`
    /// (empty `saw` and no context: a blind write), and with a TTL if `ttl_ms` is set.
    Write {
        /// The key.
        key: String,
        /// The value written (unique in the history).
        value: String,
        /// The sibling values of the read whose context the write carried.
        saw: Vec<String>,
        /// The value's time to live as the request set it (`?ttl=`, in ms; the API takes whole
        /// seconds): it must be invisible once expired (`crate::checkers::expired_values`).
        /// `None`: no TTL (and histories written before TTLs read as such).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// Register workload: delete, with the context of a read that returned `saw`.
    Delete {
        /// The key.
        key: String,
        /// The sibling values of the read whose context the delete carried.
        saw: Vec<String>,
    },
    /// Cart workload: add `item` to cart `cart` (read the cart, take the union of its siblings'
    /// items, add the item, write the union back with the read's context).
    CartAdd {
        /// The cart's key.
        cart: String,
        /// The item (unique in the history).
        item: String,
        /// Set on the completion: the add's read missed this process's own previous add to the
        /// cart (a stale read, which Dynamo allows under sloppy quorum), so its write did not
        /// supersede that add's version, which may survive beside it as a sibling.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stale: bool,
    },
    /// Server-side cart (a bucket of data type `cart`, `POST /v1/dt/{bucket}/{cart}`): add one
    /// of `item` (`{"op":"add","item":…,"qty":1}`), without a context. The store merges
    /// concurrent operations itself (an add-wins map), so there is no client-side read.
    DtCartAdd {
        /// The cart's key.
        cart: String,
        /// The item (unique in the history: each item is added once).
        item: String,
    },
    /// Server-side cart: remove `item` (`{"op":"remove","item":…}`), sent with the causal
    /// context of an `ok` [`Op::DtCartRead`] of the same process that returned the item — so
    /// the remove saw the item's only add, and add-wins cannot keep it.
    DtCartRemove {
        /// The cart's key.
        cart: String,
        /// The item.
        item: String,
    },
    /// Server-side cart: read it (`GET /v1/dt/{bucket}/{cart}`). On `Ok`, `items` are the
    /// items shown (`404`: none); on `Invoke`, empty.
    DtCartRead {
        /// The cart's key.
        cart: String,
        /// The items returned.
        items: Vec<String>,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Op::Read { key, .. } | Op::Write { key, .. } | Op::Delete { key, .. } => key,
            Op::CartAdd { cart, .. }
            | Op::DtCartAdd { cart, .. }
            | Op::DtCartRemove { cart, .. }
            | Op::DtCartRead { cart, .. } => cart,
        }
    }

    /// Whether the operation only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Read { .. } | Op::DtCartRead { .. })
    }
}

/// One event of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process.
    pub process: ProcessId,
    /// Milliseconds since the run began (simulated time in the simulator, wall time in chaos).
    pub time_ms: u64,
    /// Invoke or completion.
    pub status: Status,
    /// The operation (a completion repeats the invocation's operation, with results filled in).
    pub op: Op,
    /// Which node served it, if known (for traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why it failed or is indeterminate (for traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The state of one key read from one replica (or through one node with `r=all`) after the
/// cluster healed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    /// The key.
    pub key: String,
    /// The node read.
    pub node: String,
    /// The sibling values (for carts: each sibling's value is the cart's items joined by `,`;
    /// for a server-side cart: one value, its items joined by `,`, or none when not found).
    pub values: Vec<String>,
    /// When the read was made (ms since the run began, on the events' clock). Needed to judge
    /// expiry in the final state; `None`: the TTL'd values of the key are not judged there
    /// (and may be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
}

/// A sample of each replica's anti-entropy digest (e.g. `merkle_root` per partition), taken
/// after healing, for the convergence checker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSample {
    /// Milliseconds since the run began.
    pub time_ms: u64,
    /// The node.
    pub node: String,
    /// The partition (or any unit the digests are compared by).
    pub partition: u32,
    /// The digest.
    pub digest: String,
}

/// Everything a checker judges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Client events in the order they happened (ties by time are in recording order).
    pub events: Vec<Event>,
    /// When the last fault was healed (ms since start), if faults were injected.
    pub healed_at_ms: Option<u64>,
    /// The state after healing.
    pub final_reads: Vec<FinalRead>,
    /// Digest samples after healing.
    pub digests: Vec<DigestSample>,
}
