//! What can be wrong with a history itself (as opposed to the store it describes).
//!
//! A malformed history is a bug in the harness that recorded it (the simulator or the chaos
//! runner), not in the store: the checkers still run on a best-effort reading of it, but the
//! [`crate::Report`] carries these errors, [`crate::Report::ok`] is false, and the `yeskv-check`
//! binary exits 2 ("bad input") rather than 1 ("the store misbehaved").

use serde::{Deserialize, Serialize};

use crate::history::ProcessId;

/// One problem found in a history. Event indices are positions in [`crate::history::History::events`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Error {
    /// A completion (ok, fail, info) with no outstanding invocation of the same process.
    #[error("event {index}: process {process} completed an operation it never invoked")]
    CompletionWithoutInvoke {
        /// The completion event.
        index: usize,
        /// The process.
        process: ProcessId,
    },
    /// An invocation while the same process still had an operation outstanding.
    #[error(
        "event {index}: process {process} invoked an operation while its invocation at event \
         {outstanding_index} was still outstanding"
    )]
    InvokeWhileOutstanding {
        /// The second invocation.
        index: usize,
        /// The process.
        process: ProcessId,
        /// The invocation still outstanding.
        outstanding_index: usize,
    },
    /// A completion whose operation (kind, key, value or item) differs from its invocation's.
    #[error(
        "event {index}: process {process} completed a different operation than it invoked at \
         event {invoke_index}"
    )]
    CompletionMismatch {
        /// The completion event.
        index: usize,
        /// The process.
        process: ProcessId,
        /// The invocation it should match.
        invoke_index: usize,
    },
    /// A written value or cart item used by two operations (values must be unique).
    #[error("event {index}: value {value:?} was already written at event {first_index}")]
    DuplicateValue {
        /// The second invocation using the value.
        index: usize,
        /// The first one.
        first_index: usize,
        /// The value or item.
        value: String,
    },
    /// A cart item that is empty or contains `,` (a cart is stored as its items joined by `,`).
    #[error("event {index}: cart item {item:?} is empty or contains ','")]
    BadCartItem {
        /// The invocation.
        index: usize,
        /// The item.
        item: String,
    },
    /// A key used as two kinds: register operations (write, delete), client-side cart adds,
    /// server-side cart operations (a key is one kind only).
    #[error("key {key:?} is used as more than one kind (register, cart, server-side cart)")]
    MixedKey {
        /// The key.
        key: String,
    },
    /// Two `merged` final reads of one key that disagree (there is one merged state per key).
    #[error("key {key:?} has merged final reads that disagree")]
    ConflictingMergedReads {
        /// The key.
        key: String,
    },
}
