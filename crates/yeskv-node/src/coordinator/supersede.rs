//! Writes that supersede their coordinator's copy ([`WriteBody::Supersede`]): what a Redis
//! client expects of `SET k v1; SET k v2; GET k` (`v2`), kept within Dynamo's rules.
//!
//! An HTTP `PUT` without a context is blind: it supersedes nothing and adds a sibling, so two
//! sequential `PUT`s leave two values. A `Supersede` write is instead a read-modify-write of
//! the coordinating replica's copy under the key's stripe lock (`Change::Fold`, as
//! last-writer-wins and data-type writes are): the new version's context is the copy's whole
//! clock, so it replaces every sibling that replica holds, and nothing else. A version the
//! coordinator has not seen — a write through another coordinator during a partition, or one
//! still on its way — is not in that clock and survives as a sibling: concurrent writes are
//! never lost, sequential ones replace.
//!
//! "Sequential" needs the second write to be coordinated where the first one is. So a
//! `Supersede` write is coordinated by the key's first live data holder in preference order
//! (those of this node's region first, as forwarding orders them), wherever it arrives: a
//! data holder that is not that node forwards it there (`Coordinate`) instead of applying it
//! itself, and applies it only when no other holder can be reached. This is Dynamo's
//! "coordinator is the first among the top N nodes of the preference list" (§4.5), which the
//! paper uses for the same reason: one coordinator orders a key's writes while it is up. The
//! cost is one internode round trip for a write that arrives at another node. When the first
//! holder goes down (or is believed down), the next one coordinates; writes it had not yet
//! received from the first become siblings of the ones it takes, as any concurrent writes do.
//!
//! The version is stamped like a last-writer-wins write ([`super::write::lww_stamp`]): past
//! every version the copy holds, so a bucket later switched to `lww` still orders them.

use yeskv_core::{Object, Version};
use yeskv_storage::Engine;

use super::{Coordinator, Placement, WriteBody};

impl<E: Engine> Coordinator<E> {
    /// Whether this node, a data holder of `p`, leaves a write of `body` to another one: a
    /// [`WriteBody::Supersede`] write when the first live data holder (module docs) is not this
    /// node.
    pub(super) fn defers_to_first_holder(&self, p: &Placement, body: &WriteBody) -> bool {
        if !matches!(body, WriteBody::Supersede(_)) {
            return false;
        }
        let here = self.region_of(self.ctx.topology().local());
        let mut order: Vec<_> = p.data.iter().collect();
        if here.is_some() {
            // Stable: within each group the preference order stands.
            order.sort_by_key(|n| self.region_of(n) != here);
        }
        order
            .into_iter()
            .find(|n| self.is_local(n) || self.ctx.topology().is_up(n))
            .is_some_and(|first| !self.is_local(first))
    }
}

/// The version a [`WriteBody::Supersede`] write stores over `obj`: `value` (a tombstone for
/// `None`), stamped past every version held, expiring at `expires_at_ms` (values only).
pub(super) fn version(
    value: Option<&[u8]>,
    obj: &Object,
    now_ms: u64,
    expires_at_ms: Option<u64>,
) -> Version {
    let stamp = super::write::lww_stamp(obj, now_ms);
    match value {
        Some(v) => Version::value(v.to_vec(), stamp, expires_at_ms),
        None => Version::tombstone(stamp),
    }
}
