//! Moving partitions between nodes: the streaming copy a new holder receives, the report that
//! makes it a fact of the layout, and the cleanup of former holders.
//!
//! When a commit makes this node a new holder of a partition, the layout lists it as *syncing*
//! that partition (`yeskv_layout::transition`): it takes the partition's writes but reads do
//! not count its answers, and the former holders keep serving it as *sources*. Every
//! `transfer.interval`, [`round`] takes each partition this node is syncing through three steps:
//!
//! 1. **Start empty.** Before anything is copied (once per layout epoch of the addition, kept
//!    in `meta` so that a restart does not repeat it) the node removes whatever it still holds
//!    of the partition (`Replica::clear_partition`): data left from an earlier time as its
//!    holder may be older than the holders' (a value whose tombstone they have since reaped),
//!    and syncing it would bring it back. Nothing acknowledged is lost by that: a write the
//!    node took while receiving also reached a quorum of the data holders.
//! 2. **Stream.** The node asks one data holder for the partition's records in key order, in
//!    batches of `transfer.batch_bytes` (a RocksDB range scan on the source: [`serve`]). Each
//!    batch carries a CRC32C over its keys and records, and each record its own checksum; a
//!    batch that fails either check is refused and asked again. Records are merged (DVV sync,
//!    one group commit per batch: `Replica::merge_many`), then the cursor (the last key
//!    merged) is saved in `meta`: a receiver that restarts or is killed resumes after it, and a
//!    source that fails is replaced by another data holder from the same cursor. The pace is
//!    held under `transfer.rate_bytes_per_s`. Writes keep arriving meanwhile (the node is in
//!    the write set), and merges are idempotent, so copying and writing never race.
//! 3. **Confirm.** The node runs full anti-entropy exchanges (`aae::exchange_partition`) with
//!    every data holder until one finds nothing to copy: a write acknowledged with `w = 1` may
//!    be on one of them only, and a key written during the stream may have been missed by it.
//!    A holder that is down holds the partition until it is back or forced out of the layout.
//!
//! The complete partitions are reported through [`LayoutControl::transfer_done`], which records
//! them in the replicated layout; when a partition's last syncing holder reports, its sources
//! are released and a leaving node that is a source of nothing more leaves the layout.
//!
//! **Cleanup** ([`cleanup`]): a node that holds keys of a partition it is neither a holder nor a
//! source of in its layout (the transfer was confirmed and its sources released) deletes them
//! with one range delete and compacts the range, once `transfer.cleanup_delay` has passed since
//! it first saw itself without the partition (nodes with an older layout may still read it
//! meanwhile). A node that becomes a holder again later starts the partition empty (step 1).
//!
//! Progress ([`TransferStats`]) feeds `/v1/status` (`transfers`) and `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, not std's: the simulator drives it, so pacing and cleanup stay deterministic.
use tokio::time::Instant;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use yeskv_core::codec::decode_record;
use yeskv_core::keyspace::{key_hash, partition_range, split_storage_key};
use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::context::{out_of_protocol, Liveness, NodeContext};
use crate::error::Error;
use crate::metrics;
use crate::peer::{PeerRequest, PeerResponse, RemoteError};
use crate::workers::Progress;

/// Most bytes a source puts in one batch, whatever the receiver asks (a batch must fit the
/// RPC frame with room to spare).
pub const BATCH_BYTES_MAX: u32 = 8 << 20;

/// A transfer message (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TransferRequest {
    /// The next records of `partition` after `after` (from its start when `None`).
    Batch {
        /// The partition.
        partition: u16,
        /// The last key the receiver has (exclusive start).
        after: Option<ByteBuf>,
        /// Most bytes of keys and records to send, with their length prefixes (or one record
        /// when it alone is larger).
        bytes_max: u32,
    },
    /// The keys and bytes the node holds of these partitions.
    Sizes {
        /// Partitions asked.
        partitions: Vec<u16>,
    },
}

impl TransferRequest {
    /// The request's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            TransferRequest::Batch { .. } => "TransferBatch",
            TransferRequest::Sizes { .. } => "TransferSizes",
        }
    }
}

/// The answer to a [`TransferRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum TransferResponse {
    /// Records in key order.
    Batch(Batch),
    /// `(keys, bytes)` per partition asked, in the order asked.
    Sizes(Vec<(u64, u64)>),
}

/// A run of a partition's records (see [`TransferRequest::Batch`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    /// `(storage key, stored record)` in key order.
    pub records: Vec<(ByteBuf, ByteBuf)>,
    /// Where the next batch starts (exclusive), `None` at the partition's end.
    pub next: Option<ByteBuf>,
    /// [`batch_checksum`] of `records`.
    pub checksum: u32,
}

/// CRC32C over each record's key and stored bytes, length-prefixed, in order.
pub fn batch_checksum<'a>(records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> u32 {
    let mut crc = 0;
    for (key, record) in records {
        crc = crc32c::crc32c_append(crc, &(key.len() as u32).to_le_bytes());
        crc = crc32c::crc32c_append(crc, key);
        crc = crc32c::crc32c_append(crc, &(record.len() as u32).to_le_bytes());
        crc = crc32c::crc32c_append(crc, record);
    }
    crc
}

/// Answers a transfer message of another node. A node serves batches only of partitions it
/// holds the data of in its layout (a current holder or a source).
pub fn serve<E: Engine>(ctx: &NodeContext<E>, request: TransferRequest) -> PeerResponse {
    let replica = ctx.replica();
    let answer = match request {
        TransferRequest::Batch {
            partition,
            after,
            bytes_max,
        } => {
            let topology = ctx.topology();
            if !topology.data_holders(partition).contains(topology.local()) {
                return PeerResponse::Failed(RemoteError::Unavailable(format!(
                    "{} holds no data of partition {partition} in its layout",
                    topology.local()
                )));
            }
            let bytes_max = bytes_max.clamp(1, BATCH_BYTES_MAX) as usize;
            let scanned = replica.scan_records(
                partition,
                after.as_deref().map(|a| &a[..]),
                bytes_max,
                ctx.now_ms(),
            );
            match scanned {
                Ok(run) => {
                    if run.expired > 0 {
                        ::metrics::counter!(crate::metrics::EXPIRED_SKIPPED, "path" => "transfer")
                            .increment(run.expired);
                    }
                    let checksum = batch_checksum(run.rows.iter().map(|(k, r)| (&k[..], &r[..])));
                    TransferResponse::Batch(Batch {
                        records: run
                            .rows
                            .into_iter()
                            .map(|(k, r)| (ByteBuf::from(k), ByteBuf::from(r)))
                            .collect(),
                        next: run.next.map(ByteBuf::from),
                        checksum,
                    })
                }
                Err(e) => return PeerResponse::Failed(RemoteError::from(e)),
            }
        }
        TransferRequest::Sizes { partitions } => {
            let mut sizes = Vec::with_capacity(partitions.len());
            for p in partitions {
                match replica.partition_size(p) {
                    Ok(s) => sizes.push(s),
                    Err(e) => return PeerResponse::Failed(RemoteError::from(e)),
                }
            }
            TransferResponse::Sizes(sizes)
        }
    };
    PeerResponse::Transfer(answer)
}

/// Asks `peer` one transfer message.
async fn ask<E: Engine>(
    ctx: &NodeContext<E>,
    peer: &NodeId,
    request: TransferRequest,
) -> Result<TransferResponse, Error> {
    let name = request.name();
    match ctx
        .call(peer, PeerRequest::Transfer(request), Liveness::IfUp)
        .await?
    {
        PeerResponse::Transfer(answer) => Ok(answer),
        other => Err(out_of_protocol(peer, name, other)),
    }
}

/// `(keys, bytes)` of each of `partitions` as `peer` holds them.
pub async fn sizes_at<E: Engine>(
    ctx: &NodeContext<E>,
    peer: &NodeId,
    partitions: Vec<u16>,
) -> Result<Vec<(u64, u64)>, Error> {
    if peer == ctx.topology().local() {
        return partitions
            .iter()
            .map(|p| ctx.replica().partition_size(*p))
            .collect();
    }
    let asked = partitions.len();
    match ask(ctx, peer, TransferRequest::Sizes { partitions }).await? {
        TransferResponse::Sizes(s) if s.len() == asked => Ok(s),
        other => Err(out_of_protocol(
            peer,
            "TransferSizes",
            PeerResponse::Transfer(other),
        )),
    }
}

/// How the layout learns that this node has received partitions.
pub trait LayoutControl: Send + Sync + 'static {
    /// Records that this node has the data of `partitions` (each with the layout epoch since
    /// which it was syncing it). A late or repeated report must change nothing.
    fn transfer_done(&self, partitions: Vec<(u16, u64)>) -> BoxFuture<'static, Result<(), Error>>;
}

/// How the transfer worker paces itself.
#[derive(Clone)]
pub struct TransferSettings {
    /// Pause between rounds.
    pub interval: Duration,
    /// Most exchanges with one holder for one partition in one round (each copies every
    /// differing key it finds).
    pub exchanges_per_holder_max: usize,
    /// About how many bytes of records one batch carries.
    pub batch_bytes: u32,
    /// Most bytes per second received (0: no limit).
    pub rate_bytes_per_s: u64,
    /// How long a former holder keeps a partition's data after it stopped holding it.
    pub cleanup_delay: Duration,
    /// Where completions are reported.
    pub control: Arc<dyn LayoutControl>,
}

impl TransferSettings {
    /// The settings of `[transfer]`, reporting to `control`.
    pub fn new(config: &crate::config::Transfer, control: Arc<dyn LayoutControl>) -> Self {
        TransferSettings {
            interval: Duration::from_millis(config.interval_ms),
            exchanges_per_holder_max: config.exchanges_per_holder_max,
            batch_bytes: config.batch_bytes,
            rate_bytes_per_s: config.rate_bytes_per_s,
            cleanup_delay: Duration::from_secs(config.cleanup_delay_secs),
            control,
        }
    }
}

/// What this node's transfers have done and have left (for `/v1/status`).
#[derive(Default)]
pub struct TransferStats {
    inner: Mutex<StatsInner>,
}

#[derive(Default)]
struct StatsInner {
    /// Per partition being received: bytes a holder reported, bytes received so far.
    partitions: BTreeMap<u16, (Option<u64>, u64)>,
    keys_total: u64,
    bytes_total: u64,
    /// The batches of the last [`RATE_WINDOW`]: when each arrived and its bytes.
    recent: std::collections::VecDeque<(Instant, u64)>,
    /// The configured limit, bytes per second (0: none).
    limit: u64,
}

/// A snapshot of [`TransferStats`].
#[derive(Clone, Debug, PartialEq)]
pub struct TransferSnapshot {
    /// Keys received by streaming since the node started.
    pub keys_received: u64,
    /// Bytes (keys and records) received by streaming since the node started.
    pub bytes_received: u64,
    /// Bytes still to receive of the partitions being received (`None` until a holder has
    /// told the size of each).
    pub bytes_pending: Option<u64>,
    /// The recent receiving rate (0 when nothing arrived in the last few seconds).
    pub rate_bytes_per_s: f64,
    /// Seconds left at that rate, or at the configured limit when idle.
    pub eta_s: Option<f64>,
    /// The configured limit, bytes per second (0: none).
    pub rate_limit: u64,
}

/// The receiving rate is measured over the batches of this last stretch of time.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl TransferStats {
    /// What has been received and what is left.
    pub fn snapshot(&self) -> TransferSnapshot {
        let s = self.inner.lock();
        let pending = s
            .partitions
            .values()
            .map(|(expected, got)| expected.map(|e| e.saturating_sub(*got)))
            .sum::<Option<u64>>();
        let rate = rate_of(&s.recent, Instant::now());
        let eta = match pending {
            Some(0) => Some(0.0),
            Some(p) if rate > 0.0 => Some(p as f64 / rate),
            Some(p) if s.limit > 0 => Some(p as f64 / s.limit as f64),
            _ => None,
        };
        TransferSnapshot {
            keys_received: s.keys_total,
            bytes_received: s.bytes_total,
            bytes_pending: pending,
            rate_bytes_per_s: rate,
            eta_s: eta,
            rate_limit: s.limit,
        }
    }

    /// Keeps the entries of `receiving` only.
    fn retain(&self, receiving: &[(u16, u64)]) {
        let keep: std::collections::HashSet<u16> = receiving.iter().map(|(p, _)| *p).collect();
        let mut s = self.inner.lock();
        s.partitions.retain(|p, _| keep.contains(p));
        for p in keep {
            s.partitions.entry(p).or_insert((None, 0));
        }
    }

    fn expect(&self, partition: u16, bytes: u64) {
        if let Some(e) = self.inner.lock().partitions.get_mut(&partition) {
            e.0 = Some(bytes);
        }
    }

    fn expected(&self, partition: u16) -> Option<u64> {
        self.inner
            .lock()
            .partitions
            .get(&partition)
            .and_then(|e| e.0)
    }

    fn received(&self, partition: u16, keys: u64, bytes: u64) {
        let mut s = self.inner.lock();
        s.keys_total += keys;
        s.bytes_total += bytes;
        if let Some(e) = s.partitions.get_mut(&partition) {
            e.1 += bytes;
        }
        let now = Instant::now();
        while s
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            s.recent.pop_front();
        }
        s.recent.push_back((now, bytes));
    }

    /// The partition is streamed whole: nothing more to receive of it.
    fn streamed(&self, partition: u16) {
        if let Some(e) = self.inner.lock().partitions.get_mut(&partition) {
            e.0 = Some(e.1);
        }
    }

    /// Sets the configured limit.
    pub fn set_limit(&self, rate_bytes_per_s: u64) {
        self.inner.lock().limit = rate_bytes_per_s;
    }
}

/// Bytes per second over the batches of the last [`RATE_WINDOW`] before `now` (0 when none):
/// their bytes over the time from the first to `now`, at least one second.
fn rate_of(recent: &std::collections::VecDeque<(Instant, u64)>, now: Instant) -> f64 {
    let fresh: Vec<&(Instant, u64)> = recent
        .iter()
        .filter(|(t, _)| now.duration_since(*t) <= RATE_WINDOW)
        .collect();
    let Some((first, _)) = fresh.first() else {
        return 0.0;
    };
    let span = now.duration_since(*first).max(Duration::from_secs(1));
    fresh.iter().map(|(_, b)| *b).sum::<u64>() as f64 / span.as_secs_f64()
}

/// Where a receiver stands with one partition, saved in `meta` (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    /// The layout epoch since which the node receives the partition.
    since: u64,
    /// The stream reached the partition's end.
    streamed: bool,
    /// The last key merged.
    after: Option<Vec<u8>>,
}

/// `meta` key prefix of the cursors.
const META_CURSOR: &[u8] = b"transfer/cursor/";
const CURSOR_FORMAT: u8 = 1;

fn cursor_key(partition: u16) -> Vec<u8> {
    let mut k = META_CURSOR.to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

impl Cursor {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![CURSOR_FORMAT];
        v.extend_from_slice(&self.since.to_le_bytes());
        v.push(u8::from(self.streamed));
        if let Some(a) = &self.after {
            v.extend_from_slice(a);
        }
        v
    }

    fn decode(raw: &[u8]) -> Option<Cursor> {
        let (&format, rest) = raw.split_first()?;
        if format != CURSOR_FORMAT || rest.len() < 9 {
            return None;
        }
        let since = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let streamed = match rest[8] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let after = (rest.len() > 9).then(|| rest[9..].to_vec());
        Some(Cursor {
            since,
            streamed,
            after,
        })
    }
}

async fn save_cursor<E: Engine>(
    ctx: &NodeContext<E>,
    partition: u16,
    cursor: &Cursor,
) -> Result<(), Error> {
    ctx.replica()
        .write_meta(cursor_key(partition), Some(cursor.encode()))
        .await
}

/// The cursor of `partition` for the addition since `since`: the saved one, or (after clearing
/// the partition) a fresh one.
async fn start<E: Engine>(
    ctx: &NodeContext<E>,
    partition: u16,
    since: u64,
) -> Result<Cursor, Error> {
    let saved = ctx
        .replica()
        .read_meta(&cursor_key(partition))?
        .and_then(|raw| Cursor::decode(&raw));
    if let Some(c) = saved.filter(|c| c.since == since) {
        return Ok(c);
    }
    let removed = ctx.replica().clear_partition(partition).await?;
    if removed > 0 {
        tracing::info!(
            partition,
            removed,
            "cleared what this node held of a partition it receives anew"
        );
    }
    let fresh = Cursor {
        since,
        streamed: false,
        after: None,
    };
    save_cursor(ctx, partition, &fresh).await?;
    Ok(fresh)
}

/// Holds the receiving rate under its limit over one round.
struct Throttle {
    limit: u64,
    began: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(limit: u64) -> Self {
        Throttle {
            limit,
            began: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `bytes` received and waits until the round's average is back under the limit.
    async fn took(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.limit == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.limit as f64);
        let elapsed = self.began.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// What syncing one partition with its data holders found.
#[derive(Debug, PartialEq, Eq)]
enum Synced {
    /// Every data holder has nothing this node lacks.
    Complete,
    /// Not yet: a holder down, or keys still being copied.
    Pending,
}

/// One round: receives every partition this node is syncing, reports the complete ones.
pub async fn round<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
) -> Result<Progress, Error> {
    let syncing = ctx.topology().syncing();
    let stats = ctx.transfers();
    stats.set_limit(settings.rate_bytes_per_s);
    stats.retain(&syncing);
    forget_cursors(ctx, &syncing).await?;
    if syncing.is_empty() {
        ::metrics::gauge!(metrics::TRANSFER_PARTITIONS_PENDING).set(0.0);
        return Ok(Progress::Done);
    }
    estimate(ctx, &syncing).await;
    let mut throttle = Throttle::new(settings.rate_bytes_per_s);
    let mut complete = Vec::new();
    let mut errors = Vec::new();
    for (partition, since) in &syncing {
        match receive(ctx, settings, &mut throttle, *partition, *since).await {
            Ok(Synced::Complete) => complete.push((*partition, *since)),
            Ok(Synced::Pending) => {}
            Err(e) => {
                tracing::debug!(partition, error = %e, "transfer: partition not received yet");
                errors.push(e);
            }
        }
    }
    ::metrics::gauge!(metrics::TRANSFER_PARTITIONS_PENDING)
        .set((syncing.len() - complete.len()) as f64);
    let done = complete.len();
    if done > 0 {
        settings.control.transfer_done(complete).await?;
        ::metrics::counter!(metrics::TRANSFER_PARTITIONS_DONE).increment(done as u64);
        tracing::info!(
            partitions = done,
            left = syncing.len() - done,
            "received partitions; reported to the layout"
        );
    }
    // A round where every partition failed is a failed round (its first error is shown in
    // the worker's status); otherwise the partitions left wait for the next round.
    if errors.len() == syncing.len() {
        if let Some(first) = errors.into_iter().next() {
            return Err(first);
        }
    }
    Ok(if done == syncing.len() {
        Progress::Done
    } else {
        Progress::Throttled
    })
}

/// Removes the saved cursors of partitions this node no longer receives.
async fn forget_cursors<E: Engine>(
    ctx: &NodeContext<E>,
    syncing: &[(u16, u64)],
) -> Result<(), Error> {
    for (key, _) in ctx.replica().scan_meta(META_CURSOR)? {
        let partition = key
            .get(META_CURSOR.len()..)
            .and_then(|p| <[u8; 2]>::try_from(p).ok())
            .map(u16::from_be_bytes);
        if !partition.is_some_and(|p| syncing.iter().any(|(s, _)| *s == p)) {
            ctx.replica().write_meta(key, None).await?;
        }
    }
    Ok(())
}

/// Asks the data holders the size of each partition being received whose size is not known
/// yet (for the progress figures; a failure only leaves them unknown).
async fn estimate<E: Engine>(ctx: &NodeContext<E>, syncing: &[(u16, u64)]) {
    let stats = ctx.transfers();
    let mut asks: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
    for (p, _) in syncing {
        if stats.expected(*p).is_some() {
            continue;
        }
        if let Some(holder) = sources(ctx, *p).into_iter().next() {
            asks.entry(holder).or_default().push(*p);
        }
    }
    for (holder, partitions) in asks {
        match sizes_at(ctx, &holder, partitions.clone()).await {
            Ok(sizes) => {
                for (p, (_, bytes)) in partitions.iter().zip(sizes) {
                    stats.expect(*p, bytes);
                }
            }
            Err(e) => tracing::debug!(%holder, error = %e, "transfer: sizes not known"),
        }
    }
}

/// The data holders of `partition` other than this node that are up, the one to stream from
/// first (spread over the holders by partition).
fn sources<E: Engine>(ctx: &NodeContext<E>, partition: u16) -> Vec<NodeId> {
    let topology = ctx.topology();
    let local = topology.local();
    let mut holders: Vec<NodeId> = topology
        .data_holders(partition)
        .iter()
        .filter(|n| *n != local && topology.is_up(n))
        .cloned()
        .collect();
    if !holders.is_empty() {
        let len = holders.len();
        holders.rotate_left(usize::from(partition) % len);
    }
    holders
}

/// Takes one partition as far as it goes this round (see the module docs).
async fn receive<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
    throttle: &mut Throttle,
    partition: u16,
    since: u64,
) -> Result<Synced, Error> {
    let has_holders = ctx
        .topology()
        .data_holders(partition)
        .iter()
        .any(|n| n != ctx.topology().local());
    if !has_holders {
        // Nobody has the data (it was lost with the operator's consent): nothing to copy.
        return Ok(Synced::Complete);
    }
    let mut cursor = start(ctx, partition, since).await?;
    if !cursor.streamed {
        stream(ctx, settings, throttle, partition, &mut cursor).await?;
    }
    confirm(ctx, settings, partition).await
}

/// Streams `partition` from its data holders from `cursor` to the end (see the module docs).
async fn stream<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
    throttle: &mut Throttle,
    partition: u16,
    cursor: &mut Cursor,
) -> Result<(), Error> {
    let mut last_error = None;
    for source in sources(ctx, partition) {
        match stream_from(ctx, settings, throttle, partition, cursor, &source).await {
            Ok(()) => {
                ctx.transfers().streamed(partition);
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(partition, %source, error = %e,
                    "transfer: stream broke off; trying another holder");
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or(Error::NotServing(
        "no holder of the partition's data is up to stream from",
    )))
}

async fn stream_from<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
    throttle: &mut Throttle,
    partition: u16,
    cursor: &mut Cursor,
    source: &NodeId,
) -> Result<(), Error> {
    let (start, end) = partition_range(partition);
    loop {
        let asked = TransferRequest::Batch {
            partition,
            after: cursor.after.clone().map(ByteBuf::from),
            bytes_max: settings.batch_bytes,
        };
        let batch = match ask(ctx, source, asked).await? {
            TransferResponse::Batch(b) => b,
            other => {
                return Err(out_of_protocol(
                    source,
                    "TransferBatch",
                    PeerResponse::Transfer(other),
                ))
            }
        };
        let objects = verify(source, &batch, cursor.after.as_deref(), &start, &end)?;
        let bytes: u64 = batch
            .records
            .iter()
            .map(|(k, r)| (k.len() + r.len()) as u64)
            .sum();
        ctx.replica().merge_many(&objects, ctx.now_ms()).await?;
        if let Some((last, _)) = batch.records.last() {
            cursor.after = Some(last.to_vec());
        }
        cursor.streamed = batch.next.is_none();
        save_cursor(ctx, partition, cursor).await?;
        let keys = objects.len() as u64;
        ::metrics::counter!(metrics::TRANSFER_KEYS).increment(keys);
        ::metrics::counter!(metrics::TRANSFER_BYTES).increment(bytes);
        ctx.transfers().received(partition, keys, bytes);
        throttle.took(bytes).await;
        if cursor.streamed {
            return Ok(());
        }
    }
}

/// The objects of `batch`, after checking it end to end: its checksum, each record's own,
/// and that its keys are in `partition` (`[start, end)`), ascending, after `after`.
fn verify(
    source: &NodeId,
    batch: &Batch,
    after: Option<&[u8]>,
    start: &[u8],
    end: &[u8],
) -> Result<Vec<(u64, Vec<u8>, yeskv_core::Object)>, Error> {
    let refuse = |answer: String| Error::Protocol {
        node: source.clone(),
        request: "TransferBatch",
        answer,
    };
    let checksum = batch_checksum(batch.records.iter().map(|(k, r)| (&k[..], &r[..])));
    if checksum != batch.checksum {
        ::metrics::counter!(metrics::TRANSFER_BATCHES_REFUSED).increment(1);
        return Err(refuse(format!(
            "batch checksum {:08x}, computed {checksum:08x}: corrupted in transit",
            batch.checksum
        )));
    }
    if batch.records.is_empty() && batch.next.is_some() {
        return Err(refuse("an empty batch that is not the last".into()));
    }
    let mut previous = after.map(<[u8]>::to_vec);
    let mut objects = Vec::with_capacity(batch.records.len());
    for (key, record) in &batch.records {
        let key: &[u8] = key;
        if key < start || key >= end || previous.as_deref().is_some_and(|p| key <= p) {
            return Err(refuse(format!(
                "a key out of order or outside the partition: {:?}",
                String::from_utf8_lossy(key)
            )));
        }
        let (_, bucket, user_key) =
            split_storage_key(key).ok_or_else(|| refuse("a storage key does not parse".into()))?;
        let object = decode_record(record).map_err(|e| {
            ::metrics::counter!(metrics::TRANSFER_BATCHES_REFUSED).increment(1);
            refuse(format!("a record fails its check: {e}"))
        })?;
        objects.push((key_hash(bucket, user_key), key.to_vec(), object));
        previous = Some(key.to_vec());
    }
    Ok(objects)
}

/// Syncs `partition` with each data holder until an exchange copies nothing (step 3).
async fn confirm<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
    partition: u16,
) -> Result<Synced, Error> {
    let topology = ctx.topology();
    let local = topology.local().clone();
    let holders: Vec<NodeId> = topology
        .data_holders(partition)
        .iter()
        .filter(|n| **n != local)
        .cloned()
        .collect();
    if ctx.replica().tree_summary(partition).is_none() {
        return Ok(Synced::Pending);
    }
    let mut synced = 0;
    for holder in &holders {
        if !topology.is_up(holder) {
            continue;
        }
        let mut settled = false;
        for _ in 0..settings.exchanges_per_holder_max {
            let copied = crate::aae::exchange_partition(ctx, holder, partition, usize::MAX).await?;
            ::metrics::counter!(metrics::TRANSFER_KEYS).increment(copied as u64);
            if copied == 0 {
                settled = true;
                break;
            }
        }
        if !settled {
            return Ok(Synced::Pending);
        }
        synced += 1;
    }
    Ok(if synced == holders.len() {
        Synced::Complete
    } else {
        Synced::Pending
    })
}

/// The cleanup worker's memory: when this node first saw itself without each partition it
/// still holds keys of.
#[derive(Default)]
pub struct Cleanup {
    unheld_since: Mutex<HashMap<u16, Instant>>,
}

/// One cleanup round (see the module docs): removes the data of partitions this node has not
/// held for `settings.cleanup_delay`.
pub async fn cleanup<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
    memory: &Cleanup,
) -> Result<Progress, Error> {
    let topology = ctx.topology();
    let local = topology.local().clone();
    let Some(partitions) = ctx.replica().tree_partitions() else {
        return Ok(Progress::Done);
    };
    if topology.layout_version() == 0 {
        // No layout yet (a node starting): nothing says what it holds.
        memory.unheld_since.lock().clear();
        return Ok(Progress::Done);
    }
    let mut due = Vec::new();
    {
        let mut unheld = memory.unheld_since.lock();
        let now = Instant::now();
        for p in 0..partitions {
            let p = p as u16;
            let holds_keys = ctx.replica().tree_summary(p).is_some_and(|s| s.keys > 0);
            if !holds_keys || topology.write_set(p).contains(&local) {
                unheld.remove(&p);
                continue;
            }
            let since = *unheld.entry(p).or_insert(now);
            if now.duration_since(since) >= settings.cleanup_delay {
                due.push(p);
            }
        }
    }
    let waiting = memory.unheld_since.lock().len() > due.len();
    for p in due {
        // The layout may have changed since the check: look again right before deleting.
        if topology.write_set(p).contains(&local) {
            memory.unheld_since.lock().remove(&p);
            continue;
        }
        let removed = ctx.replica().clear_partition(p).await?;
        ctx.replica().compact_partition(p).await?;
        memory.unheld_since.lock().remove(&p);
        ::metrics::counter!(metrics::TRANSFER_PARTITIONS_CLEANED).increment(1);
        tracing::info!(
            partition = p,
            keys = removed,
            "removed a partition this node no longer holds"
        );
    }
    Ok(if waiting {
        Progress::Throttled
    } else {
        Progress::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_cursor_reads_back_as_written(
            since in any::<u64>(),
            streamed in any::<bool>(),
            after in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
        ) {
            let c = Cursor { since, streamed, after };
            prop_assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }

        #[test]
        fn a_changed_byte_changes_the_batch_checksum(
            records in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 1..16),
                 proptest::collection::vec(any::<u8>(), 1..32)), 1..8),
            which in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let sum = |r: &[(Vec<u8>, Vec<u8>)]| batch_checksum(r.iter().map(|(k, v)| (&k[..], &v[..])));
            let before = sum(&records);
            let mut changed = records.clone();
            let i = which.index(changed.len());
            let len = changed[i].1.len();
            changed[i].1[len - 1] ^= 1 << bit;
            prop_assert_ne!(sum(&changed), before);
        }
    }

    /// A batch of two records of partition 5, as a source sends it.
    fn batch() -> Batch {
        let records: Vec<(Vec<u8>, Vec<u8>)> = ["k1", "k2"]
            .iter()
            .map(|k| {
                let mut obj = yeskv_core::Object::new();
                let actor = yeskv_core::Actor::new(NodeId::new("n1").expect("id"), 1);
                let version = yeskv_core::Version::value(k.as_bytes().to_vec(), 1, None);
                obj.update(&yeskv_core::CausalContext::empty(), &actor, version, 1);
                let key = yeskv_core::keyspace::storage_key(5, b"b", k.as_bytes());
                (key, yeskv_core::codec::encode_record(&obj, None))
            })
            .collect();
        Batch {
            checksum: batch_checksum(records.iter().map(|(k, r)| (&k[..], &r[..]))),
            records: records
                .into_iter()
                .map(|(k, r)| (ByteBuf::from(k), ByteBuf::from(r)))
                .collect(),
            next: None,
        }
    }

    #[test]
    fn a_batch_is_checked_end_to_end() {
        let source = NodeId::new("n1").expect("id");
        let (start, end) = partition_range(5);
        let good = batch();
        let objects = verify(&source, &good, None, &start, &end).expect("a good batch");
        assert_eq!(objects.len(), 2);

        // A flipped bit in transit: the batch checksum fails.
        let mut flipped = batch();
        let last = flipped.records[1].1.len() - 1;
        flipped.records[1].1[last] ^= 1;
        assert!(verify(&source, &flipped, None, &start, &end).is_err());

        // A record that fails its own check, under a checksum recomputed to match it.
        let mut forged = batch();
        forged.records[0].1[3] ^= 0x40;
        forged.checksum = batch_checksum(forged.records.iter().map(|(k, r)| (&k[..], &r[..])));
        assert!(verify(&source, &forged, None, &start, &end).is_err());

        // Keys not after the cursor, or outside the partition, are refused.
        let cursor = good.records[1].0.to_vec();
        assert!(verify(&source, &good, Some(&cursor), &start, &end).is_err());
        let (start6, end6) = partition_range(6);
        assert!(verify(&source, &good, None, &start6, &end6).is_err());
    }

    #[test]
    fn a_cursor_of_another_format_is_not_read() {
        let c = Cursor {
            since: 3,
            streamed: false,
            after: None,
        };
        let mut raw = c.encode();
        raw[0] = 9;
        assert_eq!(Cursor::decode(&raw), None);
        assert_eq!(Cursor::decode(&raw[..5]), None);
    }
}
