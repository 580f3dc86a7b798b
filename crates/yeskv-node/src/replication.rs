//! Replication: the messages that carry objects between replicas, how a replica answers them,
//! and the typed calls the rest of the node sends them with.
//!
//! | message | sent by | a replica answers |
//! |---|---|---|
//! | `Read` | reads, read repair, anti-entropy, the reaper | its own object of the key |
//! | `ReadHints` | reads through a stand-in, the reaper | the merge of every hint it holds for the key |
//! | `Merge` | write replication, read repair, anti-entropy, handoff | once the object is merged into its own replica (DVV `sync`) and durable |
//! | `MergeHint` | write replication to a stand-in | once the object is merged into the hint it keeps for a down primary |
//! | `MergeMany` | cross-region replication (`crate::xr`) | once every object of the batch it holds a copy of is merged and durable; it names the ones it refused |
//! | `Coordinate` | a node that is not a replica of the key | once it coordinated the write as a replica ([`Coordinator`]) |
//!
//! This is where a replica *receives* a write: [`serve`] → [`Replica::merge`] for `Merge`,
//! [`Replica::merge_many`] for a batch from another region (`MergeMany`), or
//! `Coordinator::coordinate_forwarded` for a forwarded `Coordinate`.

use serde::{Deserialize, Serialize};
use yeskv_core::codec::{decode_record, encode_record, encode_token};
use yeskv_core::keyspace::{key_tag, split_storage_key};
use yeskv_core::{NodeId, Object};
use yeskv_storage::Engine;

use crate::context::{out_of_protocol, Liveness, NodeContext};
use crate::coordinator::{Coordinator, Write, WriteBody};
use crate::error::Error;
use crate::peer::{PeerRequest, PeerResponse, RemoteError};
use crate::replica::{Hint, Slot};

/// A replication message (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReplicationRequest {
    /// Return the local object of a key (as a record), if any.
    Read {
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
    },
    /// Return the merge of the hints held for this key (for any of `targets`, and any other
    /// node hints are held for), if any.
    ReadHints {
        /// The primaries the hints may be for.
        targets: Vec<String>,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
    },
    /// Merge this object into the local replica (DVV sync) and answer once durable.
    Merge {
        /// The key's hash (selects the stripe lock).
        key_hash: u64,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
        /// The object, as a checksummed record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Merge this object into the hint held for `target` (a stand-in write for a down primary)
    /// and answer once durable.
    MergeHint {
        /// The primary the hint is for.
        target: String,
        /// The key's hash (selects the stripe lock).
        key_hash: u64,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
        /// The object, as a checksummed record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Merge each of these objects into the local replica, as `Merge` does, and answer once
    /// all are durable: a batch of cross-region replication (`crate::xr`). At most
    /// [`MERGE_MANY_MAX`]; a batch with an undecodable record is refused whole.
    MergeMany {
        /// The objects.
        objects: Vec<MergeItem>,
    },
    /// Coordinate a client write: the receiver is a replica of the key; it applies the write
    /// with its own actor and replicates it to the key's other replicas.
    Coordinate {
        /// Bucket.
        #[serde(with = "serde_bytes")]
        bucket: Vec<u8>,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The client's context token (empty = none).
        context: String,
        /// What the write writes.
        body: WriteBody,
        /// TTL of the value.
        ttl_secs: Option<u64>,
        /// Durable acknowledgements required (already resolved and capped), for
        /// [`crate::coordinator::Scope::All`].
        w: u8,
        /// Which replicas the quorum counts.
        scope: crate::coordinator::Scope,
    },
    /// Extend the expiry of the key's expiring values to at least `expires_at_ms` (a touch:
    /// no new version, no value sent; `Object::extend_expiry`).
    Touch {
        /// The key's hash (selects the stripe lock).
        key_hash: u64,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
        /// The new expiry.
        expires_at_ms: u64,
    },
}

impl ReplicationRequest {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ReplicationRequest::Read { .. } => "Read",
            ReplicationRequest::ReadHints { .. } => "ReadHints",
            ReplicationRequest::Merge { .. } => "Merge",
            ReplicationRequest::MergeHint { .. } => "MergeHint",
            ReplicationRequest::MergeMany { .. } => "MergeMany",
            ReplicationRequest::Coordinate { .. } => "Coordinate",
            ReplicationRequest::Touch { .. } => "Touch",
        }
    }

    /// Whether receiving it twice does what receiving it once does (reads and merges).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            ReplicationRequest::Read { .. }
                | ReplicationRequest::Merge { .. }
                | ReplicationRequest::MergeMany { .. }
                | ReplicationRequest::Touch { .. }
        )
    }
}

/// The answer to a [`ReplicationRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ReplicationResponse {
    /// The object of a `Read` or `ReadHints`, as a record (`None`: nothing held).
    Object(Option<serde_bytes::ByteBuf>),
    /// A `Merge` or `MergeHint` is durable.
    Merged,
    /// The objects of a `MergeMany` are durable, except those at these indices, which the
    /// receiver refused: it holds no copy of their partition in its layout.
    MergedMany {
        /// Indices (in the batch) of the objects refused.
        refused: Vec<u32>,
    },
    /// A `Coordinate` reached its quorum; the client's new context token.
    Coordinated {
        /// The context token to hand to the client.
        context: String,
        /// Siblings the key holds after the write, on the coordinator.
        siblings: u32,
    },
    /// A `Touch` was applied (durably); `found`: the replica held a live expiring value.
    Touched {
        /// Whether anything was there to extend.
        found: bool,
    },
}

/// Most objects in one `MergeMany`.
pub const MERGE_MANY_MAX: usize = 4096;

/// One object of a `MergeMany`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MergeItem {
    /// The key's hash (selects the stripe lock).
    pub key_hash: u64,
    /// The key's storage key.
    #[serde(with = "serde_bytes")]
    pub storage_key: Vec<u8>,
    /// The object, as a checksummed record.
    #[serde(with = "serde_bytes")]
    pub record: Vec<u8>,
}

/// Who holds one replica slot of a key for a read or a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// The primary itself.
    Primary(NodeId),
    /// `node` stands in for the primary `for_primary` (sloppy quorum): the object is a hint.
    StandIn {
        /// The fallback node.
        node: NodeId,
        /// The primary it stands in for.
        for_primary: NodeId,
    },
}

impl Holder {
    /// The node asked.
    pub fn node(&self) -> &NodeId {
        match self {
            Holder::Primary(n) | Holder::StandIn { node: n, .. } => n,
        }
    }
}

/// Which of a partition's sets a node must be in to serve a message of it.
enum Set {
    /// The data holders (reads of its own copy).
    DataHolders,
    /// The write set (merges into its own copy).
    WriteSet,
}

/// The refusal of a message for `storage_key` when this node is not in `set` of the key's
/// partition in its layout; `None` when it is (or the key names no partition).
fn unless_in<E: Engine>(
    ctx: &NodeContext<E>,
    storage_key: &[u8],
    set: Set,
) -> Option<PeerResponse> {
    let topology = ctx.topology();
    let (partition, _, _) = split_storage_key(storage_key)?;
    let (members, holds) = match set {
        Set::DataHolders => (topology.data_holders(partition), "no data"),
        Set::WriteSet => (topology.write_set(partition), "no copy"),
    };
    // The write-set text is NOT_IN_WRITE_SET: the sender recognises the refusal by it.
    if members.contains(topology.local()) {
        return None;
    }
    Some(PeerResponse::Failed(RemoteError::Unavailable(format!(
        "{} holds {holds} of this key's partition in its layout (version {})",
        topology.local(),
        topology.layout_version()
    ))))
}

/// The words of a replica's refusal of a merge of a partition it is not in the write set of in
/// its layout (a `Merge` answered `Unavailable`, or an index of a `MergeMany`'s `refused`, which
/// the sender words so: `crate::merges`). [`refused_by_layout`] recognises it.
pub const NOT_IN_WRITE_SET: &str = "holds no copy of this key's partition in its layout";

/// Whether `e` is a replica's refusal of a merge because it is not in the key's write set in
/// its layout ([`NOT_IN_WRITE_SET`]): the sender's layout and the replica's disagree, and a
/// sender with a newer layout would not have asked it (`crate::coordinator`, write path).
pub fn refused_by_layout(e: &Error) -> bool {
    matches!(e, Error::PeerRefused { reason, .. } if reason.contains(NOT_IN_WRITE_SET))
}

/// How long a merge or touch of a partition this node is not in the write set of waits for a
/// newer layout before it is refused: a coordinator that applied a layout first may already
/// count this node as a new holder while this node has not applied it yet (every node applies a
/// committed layout within milliseconds). Refused at once, the write would miss its quorum in
/// that window (seen in the transfer test: two new holders refused one write).
const WRITE_SET_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// [`unless_in`] for the write set, waiting up to [`WRITE_SET_GRACE`] for this node's layout to
/// change and make it a holder (polled every 10 ms).
async fn unless_in_write_set<E: Engine>(
    ctx: &NodeContext<E>,
    storage_key: &[u8],
) -> Option<PeerResponse> {
    let deadline = tokio::time::Instant::now() + WRITE_SET_GRACE;
    loop {
        let refusal = unless_in(ctx, storage_key, Set::WriteSet)?;
        if tokio::time::Instant::now() >= deadline {
            return Some(refusal);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Longest bucket name a peer may send: the client limit's maximum (512) and the suffix of a
/// salted bucket's sub-key bucket.
pub const STORED_BUCKET_BYTES_MAX: usize = 512 + crate::coordinator::SALT_SUFFIX.len();
/// Longest key a peer may send: the client limit's maximum (512) and a sub-key's salt byte.
pub const STORED_KEY_BYTES_MAX: usize = 512 + 1;

/// Checks a key a peer names, as the HTTP path checks a client's: a storage key that parses,
/// a bucket and key within the stored-name limits, a partition that exists and is the key's,
/// and, if given, the key's hash (it selects the stripe lock: a wrong one would let two writes
/// of one key run at once).
fn check_key<E: Engine>(
    ctx: &NodeContext<E>,
    key_hash: Option<u64>,
    storage_key: &[u8],
) -> Result<(), Error> {
    let (partition, bucket, key) = split_storage_key(storage_key)
        .ok_or_else(|| Error::BadRequest("malformed storage key".into()))?;
    check_names(bucket, key)?;
    let hash = yeskv_core::keyspace::key_hash(bucket, key);
    let partitions = ctx.settings().partitions;
    if partition != yeskv_core::keyspace::partition_of(hash, partitions) {
        return Err(Error::BadRequest(format!(
            "storage key names partition {partition}, not its key's (of {partitions})"
        )));
    }
    if key_hash.is_some_and(|h| h != hash) {
        return Err(Error::BadRequest("key hash does not match the key".into()));
    }
    Ok(())
}

/// Checks a bucket and key a peer names against the stored-name limits.
pub(crate) fn check_names(bucket: &[u8], key: &[u8]) -> Result<(), Error> {
    if bucket.is_empty() || bucket.len() > STORED_BUCKET_BYTES_MAX {
        return Err(Error::BadRequest(format!(
            "a bucket name is 1 to {STORED_BUCKET_BYTES_MAX} bytes, got {}",
            bucket.len()
        )));
    }
    if key.is_empty() || key.len() > STORED_KEY_BYTES_MAX {
        return Err(Error::BadRequest(format!(
            "a key is 1 to {STORED_KEY_BYTES_MAX} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// Answers a replication message (see the module docs).
pub async fn serve<E: Engine>(c: &Coordinator<E>, request: ReplicationRequest) -> PeerResponse {
    let ctx = c.context();
    if let Err(e) = check_request(ctx, &request) {
        return PeerResponse::Failed(RemoteError::from(e));
    }
    let answer = match request {
        ReplicationRequest::Read { storage_key } => {
            // A node answers a read of its own copy only for a partition whose data it holds in
            // its layout: a coordinator with an older layout may still count a former holder
            // whose copy has since been cleaned up, or a new holder still receiving, and "not
            // found" from either would be a miss. Refused, the coordinator asks the others.
            if let Some(refusal) = unless_in(ctx, &storage_key, Set::DataHolders) {
                return refusal;
            }
            object_answer(ctx.replica().read(&storage_key))
        }
        ReplicationRequest::ReadHints {
            targets,
            storage_key,
        } => match targets
            .into_iter()
            .map(NodeId::new)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(targets) => object_answer(local_hints(ctx, &targets, &storage_key)),
            Err(e) => Err(Error::BadRequest(e.to_string())),
        },
        ReplicationRequest::Merge {
            key_hash,
            storage_key,
            record,
        } => {
            // A node takes a copy into its own data only for a partition it is in the write set
            // of in its layout: a coordinator (or a handoff) with an older layout may still
            // count a former holder, whose copy would be cleaned up, and a write acknowledged
            // on it would be lost. Refused (after a short wait for a newer layout that makes
            // it a holder), the sender uses a stand-in, and a coordinator re-places the write
            // by its next layout (`crate::coordinator`, re-placement).
            if let Some(refusal) = unless_in_write_set(ctx, &storage_key).await {
                return refusal;
            }
            merge_record(ctx, Slot::Own, key_hash, &storage_key, &record).await
        }
        ReplicationRequest::MergeHint {
            target,
            key_hash,
            storage_key,
            record,
        } => match NodeId::new(target) {
            Ok(t) => merge_record(ctx, Slot::HintFor(&t), key_hash, &storage_key, &record).await,
            Err(e) => Err(Error::BadRequest(e.to_string())),
        },
        ReplicationRequest::MergeMany { objects } => merge_many(ctx, objects).await,
        ReplicationRequest::Coordinate {
            bucket,
            key,
            context,
            body,
            ttl_secs,
            w,
            scope,
        } => {
            let tag = key_tag(&bucket, &key);
            let keys = &ctx.settings().context_keys;
            match yeskv_core::codec::decode_token(&context, tag, keys) {
                Ok(ctx_token) => {
                    let write = Write {
                        ctx: ctx_token,
                        body,
                        ttl_secs,
                    };
                    c.coordinate_forwarded(&bucket, &key, &write, w, scope)
                        .await
                        .map(|after| ReplicationResponse::Coordinated {
                            context: encode_token(&after.ctx, tag, keys),
                            siblings: after.siblings.min(u32::MAX as usize) as u32,
                        })
                }
                Err(e) => Err(Error::BadRequest(e.to_string())),
            }
        }
        ReplicationRequest::Touch {
            key_hash,
            storage_key,
            expires_at_ms,
        } => {
            if let Some(refusal) = unless_in_write_set(ctx, &storage_key).await {
                return refusal;
            }
            ctx.replica()
                .touch(key_hash, &storage_key, expires_at_ms, ctx.now_ms())
                .await
                .map(|found| ReplicationResponse::Touched { found })
        }
    };
    match answer {
        Ok(a) => PeerResponse::Replication(a),
        Err(e) => PeerResponse::Failed(RemoteError::from(e)),
    }
}

/// Checks what a replication message names before anything is done (see [`check_key`]); a
/// `MergeMany`'s items are checked one by one by [`merge_many`].
fn check_request<E: Engine>(
    ctx: &NodeContext<E>,
    request: &ReplicationRequest,
) -> Result<(), Error> {
    match request {
        ReplicationRequest::Read { storage_key }
        | ReplicationRequest::ReadHints { storage_key, .. } => check_key(ctx, None, storage_key),
        ReplicationRequest::Merge {
            key_hash,
            storage_key,
            ..
        }
        | ReplicationRequest::MergeHint {
            key_hash,
            storage_key,
            ..
        } => check_key(ctx, Some(*key_hash), storage_key),
        ReplicationRequest::Touch {
            key_hash,
            storage_key,
            expires_at_ms,
        } => {
            check_key(ctx, Some(*key_hash), storage_key)?;
            let latest = ctx
                .now_ms()
                .saturating_add(crate::config::TTL_SECS_MAX.saturating_mul(1000));
            if *expires_at_ms > latest {
                return Err(Error::BadRequest(format!(
                    "a touch to {expires_at_ms} ms is past the longest TTL"
                )));
            }
            Ok(())
        }
        ReplicationRequest::Coordinate {
            bucket,
            key,
            ttl_secs,
            ..
        } => {
            check_names(bucket, key)?;
            if ttl_secs.is_some_and(|t| t == 0 || t > crate::config::TTL_SECS_MAX) {
                return Err(Error::BadRequest(format!(
                    "ttl_secs must be 1 ..= {}",
                    crate::config::TTL_SECS_MAX
                )));
            }
            Ok(())
        }
        ReplicationRequest::MergeMany { .. } => Ok(()),
    }
}

fn object_answer(result: Result<Object, Error>) -> Result<ReplicationResponse, Error> {
    result.map(|obj| {
        ReplicationResponse::Object(if obj.is_empty() {
            None
        } else {
            Some(serde_bytes::ByteBuf::from(encode_record(&obj, None)))
        })
    })
}

async fn merge_record<E: Engine>(
    ctx: &NodeContext<E>,
    slot: Slot<'_>,
    key_hash: u64,
    storage_key: &[u8],
    record: &[u8],
) -> Result<ReplicationResponse, Error> {
    let incoming =
        decode_record(record).map_err(|e| Error::Corrupt(format!("incoming object: {e}")))?;
    ctx.replica()
        .merge(slot, key_hash, storage_key, &incoming, ctx.now_ms())
        .await?;
    Ok(ReplicationResponse::Merged)
}

/// Merges a `MergeMany` batch into this node's own copies: the keys of partitions it is in the
/// write set of (like `Merge`); the others are named as refused. Every record is decoded
/// before anything is applied, so a bad batch changes nothing.
async fn merge_many<E: Engine>(
    ctx: &NodeContext<E>,
    objects: Vec<MergeItem>,
) -> Result<ReplicationResponse, Error> {
    if objects.len() > MERGE_MANY_MAX {
        return Err(Error::BadRequest(format!(
            "a MergeMany of {} objects (at most {MERGE_MANY_MAX})",
            objects.len()
        )));
    }
    let mut waiting = Vec::new();
    let mut taken = Vec::with_capacity(objects.len());
    for (i, item) in objects.into_iter().enumerate() {
        let object = decode_record(&item.record)
            .map_err(|e| Error::Corrupt(format!("incoming object {i} of a batch: {e}")))?;
        check_key(ctx, Some(item.key_hash), &item.storage_key)
            .map_err(|e| Error::BadRequest(format!("object {i} of a batch: {e}")))?;
        let entry = (item.key_hash, item.storage_key, object);
        if unless_in(ctx, &entry.1, Set::WriteSet).is_some() {
            waiting.push((i as u32, entry));
        } else {
            taken.push(entry);
        }
    }
    ctx.replica().merge_many(&taken, ctx.now_ms()).await?;
    // As a `Merge` does, an object of a partition this node is not (yet) a holder of waits
    // for the layout that makes it one, up to WRITE_SET_GRACE, before it is refused.
    let deadline = tokio::time::Instant::now() + WRITE_SET_GRACE;
    while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let (ready, still): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|(_, entry)| unless_in(ctx, &entry.1, Set::WriteSet).is_none());
        waiting = still;
        let ready: Vec<_> = ready.into_iter().map(|(_, entry)| entry).collect();
        if !ready.is_empty() {
            ctx.replica().merge_many(&ready, ctx.now_ms()).await?;
        }
    }
    let refused = waiting.into_iter().map(|(i, _)| i).collect();
    Ok(ReplicationResponse::MergedMany { refused })
}

/// Sends a `MergeMany` batch to `node`; returns the indices it refused.
pub async fn send_merge_many<E: Engine>(
    ctx: &NodeContext<E>,
    node: &NodeId,
    objects: Vec<MergeItem>,
) -> Result<Vec<u32>, Error> {
    let request = ReplicationRequest::MergeMany { objects };
    match ctx
        .call(node, PeerRequest::Replication(request), Liveness::IfUp)
        .await?
    {
        PeerResponse::Replication(ReplicationResponse::MergedMany { refused }) => Ok(refused),
        other => Err(out_of_protocol(node, "MergeMany", other)),
    }
}

/// Merges every object of `objects` into each node of its partition's write set: this node's
/// own copy if it is one of them (as a `MergeMany` it received would), every other over
/// `MergeMany`, the nodes concurrently. Keys are checked first (a malformed one, or one of
/// another partition count, fails the whole call before anything is sent). Fails unless every
/// node of every write set took its objects durably; a merge is idempotent, so the caller
/// retries the same objects. Used by `POST /v1/admin/import` (a restore, `crate::backup`).
pub async fn merge_into_write_sets<E: Engine>(
    ctx: &NodeContext<E>,
    objects: Vec<MergeItem>,
) -> Result<(), Error> {
    let mut by_node: std::collections::BTreeMap<NodeId, Vec<MergeItem>> = Default::default();
    for (i, item) in objects.into_iter().enumerate() {
        check_key(ctx, Some(item.key_hash), &item.storage_key)
            .map_err(|e| Error::BadRequest(format!("object {i}: {e}")))?;
        let partition = split_storage_key(&item.storage_key)
            .map(|(p, _, _)| p)
            .ok_or_else(|| Error::BadRequest(format!("object {i}: malformed storage key")))?;
        let nodes = ctx.topology().write_set(partition);
        if nodes.is_empty() {
            return Err(Error::NotServing(
                "without a layout: the key has no replicas",
            ));
        }
        for node in nodes.iter() {
            by_node.entry(node.clone()).or_default().push(item.clone());
        }
    }
    let sends = by_node.into_iter().map(|(node, items)| async move {
        let mut refused = 0;
        for chunk in items.chunks(MERGE_MANY_MAX) {
            let chunk = chunk.to_vec();
            refused += if ctx.is_local(&node) {
                match merge_many(ctx, chunk).await? {
                    ReplicationResponse::MergedMany { refused } => refused.len(),
                    other => {
                        return Err(Error::Storage(format!(
                            "unexpected local merge answer {other:?}"
                        )))
                    }
                }
            } else {
                send_merge_many(ctx, &node, chunk).await?.len()
            };
        }
        if refused > 0 {
            return Err(Error::Busy(format!(
                "{node} refused {refused} objects: not in their write set (the layout is \
                 changing); retry"
            )));
        }
        Ok(())
    });
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    Ok(())
}

/// The merge of every hint this node holds for the key: for any of `primaries`, and for any
/// other node it holds hints for (a former owner of the partition, say), so that a reader or
/// the reaper asking "what hints of this key are there" is told of all of them.
pub fn local_hints<E: Engine>(
    ctx: &NodeContext<E>,
    primaries: &[NodeId],
    storage_key: &[u8],
) -> Result<Object, Error> {
    let mut targets: Vec<NodeId> = primaries.to_vec();
    for held in ctx.replica().hint_counts().into_keys() {
        if !targets.contains(&held) {
            targets.push(held);
        }
    }
    let mut merged = Object::new();
    for target in targets.iter().filter(|n| !ctx.is_local(n)) {
        merged.sync(&ctx.replica().read_hint(target, storage_key)?);
    }
    Ok(merged)
}

/// The object in a `Read`/`ReadHints` answer.
fn object_of(node: &NodeId, request: &'static str, answer: PeerResponse) -> Result<Object, Error> {
    match answer {
        PeerResponse::Replication(ReplicationResponse::Object(None)) => Ok(Object::new()),
        PeerResponse::Replication(ReplicationResponse::Object(Some(rec))) => {
            decode_record(&rec).map_err(|e| Error::Corrupt(format!("object from {node}: {e}")))
        }
        other => Err(out_of_protocol(node, request, other)),
    }
}

/// Reads `holder`'s object of the key: its own replica, or (a stand-in) every hint it holds
/// for the key, for any of `primaries`. Locally without a call.
pub async fn read<E: Engine>(
    ctx: &NodeContext<E>,
    holder: &Holder,
    storage_key: &[u8],
    primaries: &[NodeId],
    liveness: Liveness,
) -> Result<Object, Error> {
    let node = holder.node();
    if ctx.is_local(node) {
        return match holder {
            Holder::Primary(_) => ctx.replica().read(storage_key),
            Holder::StandIn { .. } => local_hints(ctx, primaries, storage_key),
        };
    }
    let (request, name) = match holder {
        Holder::Primary(_) => (
            ReplicationRequest::Read {
                storage_key: storage_key.to_vec(),
            },
            "Read",
        ),
        Holder::StandIn { .. } => (
            ReplicationRequest::ReadHints {
                targets: primaries.iter().map(|n| n.as_str().to_string()).collect(),
                storage_key: storage_key.to_vec(),
            },
            "ReadHints",
        ),
    };
    let answer = ctx
        .call(node, PeerRequest::Replication(request), liveness)
        .await?;
    object_of(node, name, answer)
}

/// Sends `record` (the encoding of an object) to `holder` to merge: into its own replica, or
/// into its hint for the primary it stands in for. Over RPC only (the caller merges its own
/// copy itself).
pub async fn send_merge<E: Engine>(
    ctx: &NodeContext<E>,
    holder: &Holder,
    key_hash: u64,
    storage_key: &[u8],
    record: &[u8],
    liveness: Liveness,
) -> Result<(), Error> {
    if let (Holder::Primary(node), Liveness::IfUp) = (holder, liveness) {
        if record.len() <= crate::merges::BATCH_BYTES_MAX / 16 {
            if !ctx.topology().is_up(node) {
                return Err(Error::PeerDown(node.clone()));
            }
            let item = MergeItem {
                key_hash,
                storage_key: storage_key.to_vec(),
                record: record.to_vec(),
            };
            return ctx.merges().merge(ctx, node, item).await;
        }
    }
    let request = match holder {
        Holder::Primary(_) => ReplicationRequest::Merge {
            key_hash,
            storage_key: storage_key.to_vec(),
            record: record.to_vec(),
        },
        Holder::StandIn { for_primary, .. } => ReplicationRequest::MergeHint {
            target: for_primary.as_str().to_string(),
            key_hash,
            storage_key: storage_key.to_vec(),
            record: record.to_vec(),
        },
    };
    let name = request.name();
    let node = holder.node();
    match ctx
        .call(node, PeerRequest::Replication(request), liveness)
        .await?
    {
        PeerResponse::Replication(ReplicationResponse::Merged) => Ok(()),
        other => Err(out_of_protocol(node, name, other)),
    }
}

/// Merges `obj` into `holder`'s copy: locally if the holder is this node, else over RPC.
pub async fn merge_into<E: Engine>(
    ctx: &NodeContext<E>,
    holder: &Holder,
    key_hash: u64,
    storage_key: &[u8],
    obj: &Object,
) -> Result<(), Error> {
    if ctx.is_local(holder.node()) {
        let slot = match holder {
            Holder::Primary(_) => Slot::Own,
            Holder::StandIn { for_primary, .. } => Slot::HintFor(for_primary),
        };
        ctx.replica()
            .merge(slot, key_hash, storage_key, obj, ctx.now_ms())
            .await?;
        return Ok(());
    }
    let record = encode_record(obj, None);
    send_merge(ctx, holder, key_hash, storage_key, &record, Liveness::IfUp).await
}

/// Hands a hint to its target (hinted handoff): the target merges it into its own replica and
/// answers once durable.
pub async fn hand_off<E: Engine>(
    ctx: &NodeContext<E>,
    target: &NodeId,
    hint: &Hint,
) -> Result<(), Error> {
    let record = encode_record(&hint.object, None);
    send_merge(
        ctx,
        &Holder::Primary(target.clone()),
        hint.key_hash,
        &hint.storage_key,
        &record,
        Liveness::IfUp,
    )
    .await
}

/// Delivers a hint whose target left the layout to every node of the key's current write set
/// (replicas and former holders still serving it; this node merges its own copy if it is one);
/// fails unless every one of them took it durably.
pub async fn rehome<E: Engine>(ctx: &NodeContext<E>, hint: &Hint) -> Result<(), Error> {
    let partition = split_storage_key(&hint.storage_key)
        .map(|(p, _, _)| p)
        .ok_or_else(|| Error::Corrupt("a hint's storage key does not parse".into()))?;
    let primaries = ctx.topology().write_set(partition);
    if primaries.is_empty() {
        return Err(Error::NotServing(
            "without a layout: the key has no primaries",
        ));
    }
    for node in primaries.iter() {
        let holder = Holder::Primary(node.clone());
        merge_into(ctx, &holder, hint.key_hash, &hint.storage_key, &hint.object).await?;
    }
    Ok(())
}

/// Asks `node`, a replica of the key, to coordinate `write` (see [`Coordinator`]'s forward).
/// Returns the client's new context token.
#[allow(clippy::too_many_arguments)]
pub async fn coordinate_on<E: Engine>(
    ctx: &NodeContext<E>,
    node: &NodeId,
    bucket: &[u8],
    key: &[u8],
    token: String,
    write: &Write,
    w: u8,
    scope: &crate::coordinator::Scope,
    timeout: std::time::Duration,
) -> Result<(String, u32), Error> {
    let request = ReplicationRequest::Coordinate {
        bucket: bucket.to_vec(),
        key: key.to_vec(),
        context: token,
        body: write.body.clone(),
        ttl_secs: write.ttl_secs,
        w,
        scope: scope.clone(),
    };
    match ctx
        .call_within(
            node,
            PeerRequest::Replication(request),
            Liveness::IfUp,
            timeout,
        )
        .await?
    {
        PeerResponse::Replication(ReplicationResponse::Coordinated { context, siblings }) => {
            Ok((context, siblings))
        }
        other => Err(out_of_protocol(node, "Coordinate", other)),
    }
}

/// Sends a touch of a key to `node` (a replica of it); `Ok(found)` once applied there.
pub async fn send_touch<E: Engine>(
    ctx: &NodeContext<E>,
    node: &NodeId,
    key_hash: u64,
    storage_key: &[u8],
    expires_at_ms: u64,
) -> Result<bool, Error> {
    let request = ReplicationRequest::Touch {
        key_hash,
        storage_key: storage_key.to_vec(),
        expires_at_ms,
    };
    match ctx
        .call(node, PeerRequest::Replication(request), Liveness::IfUp)
        .await?
    {
        PeerResponse::Replication(ReplicationResponse::Touched { found }) => Ok(found),
        other => Err(out_of_protocol(node, "Touch", other)),
    }
}
