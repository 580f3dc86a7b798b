//! The node's configuration: one struct, every field documented, defaults in one place, and
//! [`Config::validate`] refusing nonsense before anything starts.
//!
//! The TOML file (`--config`) holds every setting; unknown keys are refused, so a typo never
//! silently falls back to a default. Command-line flags override the file (the binary applies them
//! before validating). `yeskv.example.toml` at the repository root shows every key and is checked
//! by a test to parse and validate.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use yeskv_core::NodeId;
use yeskv_storage::SyncMode;

/// Everything a node needs to start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of the cluster this node belongs to; nodes (gossip and RPC) of another cluster are
    /// refused.
    pub cluster_name: String,
    /// This node's id: unique in the cluster, `[A-Za-z0-9._-]{1,64}`.
    pub node_id: String,
    /// Where RocksDB and the node's state live.
    pub data_dir: PathBuf,
    /// Client HTTP address to listen on.
    pub http: String,
    /// Address other nodes reach this node at (internode RPC and gossip; used by the cluster).
    pub peer: String,
    /// Peer addresses of nodes of the cluster to join; empty = start a new cluster.
    pub seeds: Vec<String>,
    /// Failure domain (rack, availability zone) for replica placement, inside the region.
    pub zone: String,
    /// Region (data centre, cloud region) the node's zone lives in: with replication per
    /// region staged (`POST /v1/cluster/replication`), each region holds its own replicas.
    pub region: String,
    /// Replicas per key.
    pub n: u8,
    /// Default read quorum (per-request `?r=` overrides).
    pub r: u8,
    /// Default write quorum (per-request `?w=` overrides).
    pub w: u8,
    /// Partitions in the ring; a power of two, fixed when the cluster is created.
    pub partitions: u32,
    /// Request limits.
    pub limits: Limits,
    /// Storage engine settings.
    pub storage: Storage,
    /// Expiry settings.
    pub ttl: Ttl,
    /// HTTP server behaviour.
    pub server: Server,
    /// Hinted handoff, read repair and anti-entropy.
    pub repair: Repair,
    /// Receiving partitions after a membership change.
    pub transfer: Transfer,
    /// Sending writes to the other regions (`crate::xr`).
    pub cross_region: CrossRegion,
    /// Test-only fault injection (off by default; see [`crate::chaos`]).
    pub chaos: Chaos,
    /// API keys, the cluster keyring, TLS and the secure-by-default rule (`docs/security.md`).
    pub security: Security,
    /// The Redis-protocol listener (`crate::resp`, `docs/resp.md`): off unless `listen` is set.
    pub resp: Resp,
    /// Log filter (tracing `EnvFilter` syntax); the `RUST_LOG` environment variable wins.
    pub log: String,
}

/// Security settings (`docs/security.md`): TLS, API keys and the cluster keyring. The three
/// TLS files go together: all set (HTTPS API, mutual TLS between nodes) or none.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// This node's certificate chain, PEM (`yeskv cert issue` writes `node.pem`); it must name
    /// this node (URI SAN `yeskv:node:<node_id>`). Re-read on `SIGHUP`.
    pub tls_cert: Option<PathBuf>,
    /// This node's private key, PEM (`node.key`). Re-read on `SIGHUP`.
    pub tls_key: Option<PathBuf>,
    /// The cluster CA certificate, PEM (`ca.pem`): peers must present a certificate it signed.
    /// Re-read on `SIGHUP`.
    pub tls_ca: Option<PathBuf>,
    /// Allows listening on a non-loopback address without TLS (plain HTTP and internode TCP
    /// that anyone on the network can read and forge). For trusted networks and tests only.
    pub insecure: bool,
    /// Whether requests need an API key (`Authorization: Bearer KEY`; [`crate::auth`]). Off
    /// by default: every request is allowed.
    pub auth: bool,
    /// With `auth`, whether `GET /metrics` stays open (true) or needs an admin key.
    /// `/v1/health` is always open.
    pub open_metrics: bool,
    /// The cluster keyring file (one base64url 32-byte key per line, `#` comments, the first
    /// signs; `yeskv keyring new`): it signs causal context tokens and encrypts gossip. Every
    /// node of a cluster needs the same keys. Without it, tokens are signed with a fixed key
    /// derived from the cluster name, which is not secret, and gossip is plaintext.
    pub cluster_keys: Option<PathBuf>,
    /// Where the first admin key is: a node whose layout state has no API key at all
    /// registers the key in this file as the admin key `admin`, first writing a new one to the
    /// file (mode 0600) if the file does not exist. Give it to the node that creates the
    /// cluster (or the same file to every node).
    pub admin_key_file: Option<PathBuf>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            insecure: false,
            auth: false,
            open_metrics: true,
            cluster_keys: None,
            admin_key_file: None,
        }
    }
}

impl Security {
    /// The TLS files when all three are set.
    pub fn tls_files(&self) -> Option<(PathBuf, PathBuf, PathBuf)> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some((cert.clone(), key.clone(), ca.clone())),
            _ => None,
        }
    }
}

/// The Redis-protocol (RESP2/RESP3) listener (`crate::resp`, `docs/resp.md`). Off by default.
/// It serves the same keys as the HTTP API, with the same limits (`[limits]`), API keys and TLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resp {
    /// Address to serve RESP on, HOST:PORT (`--resp`); unset = no listener. Under the same
    /// secure-by-default rule as `http`: a non-loopback address needs TLS, API keys and a
    /// keyring, or `security.insecure`. With TLS on, the listener speaks TLS.
    pub listen: Option<String>,
    /// The bucket of a key without a `bucket:` prefix, until a connection picks its own with
    /// `YESKV.BUCKET name` (1 to `limits.bucket_bytes_max` bytes, no `:`).
    pub default_bucket: String,
    /// Most RESP connections open at once (1 ..= 1,048,576); past it a new connection is
    /// answered `-ERR max number of clients reached` and closed.
    pub connections_max: usize,
    /// How long a connection may stay silent — idle, or in the middle of a command — before
    /// it is closed, in milliseconds (1,000 ..= 1 day).
    pub idle_timeout_ms: u64,
}

impl Default for Resp {
    fn default() -> Self {
        Resp {
            listen: None,
            default_bucket: "default".into(),
            connections_max: 4096,
            idle_timeout_ms: 300_000,
        }
    }
}

/// Request limits (STYLE habit 5: a limit on everything).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest bucket name in bytes (1 ..= 512).
    pub bucket_bytes_max: usize,
    /// Longest key in bytes (1 ..= 512).
    pub key_bytes_max: usize,
    /// Largest value in bytes (1 ..= 64 MiB, and [`OBJECT_RECORD_ROOM_BYTES`] below
    /// `object_bytes_max`).
    pub value_bytes_max: usize,
    /// Largest a key's object may be after a client write, in bytes as stored (its record:
    /// every sibling's value, their dots and timestamps, the clock). A write that would leave a
    /// larger object — blind writes keep every sibling — is refused with `413` and changes
    /// nothing (read the key and write back with its context to replace the siblings); a
    /// write that shrinks an object already past it (one that grew by merging concurrent
    /// writes, or a lowered limit) is taken. Replica merges are never refused. With the
    /// internode message around it, an object must fit one RPC frame
    /// (`server.rpc_frame_bytes_max`) to replicate at all. Each replica checks the copy it
    /// holds, so copies that took concurrent writes on different replicas can merge to more
    /// than the limit: the default, 8 MiB, is half the default frame to leave them room.
    pub object_bytes_max: usize,
    /// Siblings a plain key may hold before its writes and reads are flagged: a write past it
    /// is still taken (a plain bucket never refuses a write for its siblings), answered with
    /// `X-Yeskv-Siblings: N`, counted in `yeskv_siblings_over_limit_total` and logged.
    pub siblings_max: usize,
}

/// Storage engine settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// When a write counts as durable: `"always"` (fsync per write), `"group"` (one fsync shared
    /// by concurrent writes; survives power loss) or `"none"` (WAL in the page cache: survives
    /// `kill -9`, not power loss).
    pub sync: String,
    /// RocksDB block cache in MiB.
    pub block_cache_mb: usize,
    /// Object cache in MiB: recently read user records kept in memory in front of RocksDB, so
    /// that a hit skips the LSM lookup (absent keys included). 0 turns it off.
    pub object_cache_mb: usize,
    /// RocksDB memtable size in MiB.
    pub write_buffer_mb: usize,
    /// With `sync = "group"`: under concurrent load (the previous fsync carried several
    /// writes), the most microseconds the committer waits for more writes to join the next
    /// fsync (0 = never); it stops waiting once as many writes wait as the previous fsync
    /// carried. A lone writer is never delayed. Fewer fsyncs leave CPU to the writers.
    pub group_commit_window_us: u64,
    /// MiB kept in a reserve file beside the database while the disk has room, and released
    /// when the database cannot open for lack of space (0 = none). A node on a full disk opens
    /// read-only if even that is not enough.
    pub reserve_mb: u64,
    /// Data files older than this many seconds are compacted again, so that expired records
    /// in files nothing else compacts go within this time (after a restart too, when the node
    /// no longer knows what expired); 0 leaves RocksDB's default (30 days).
    pub periodic_compaction_secs: u64,
}

/// Expiry settings (`docs/architecture.md`, "Expiry").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ttl {
    /// TTL applied to writes that carry no `?ttl=`; 0 = never expire.
    pub default_ttl_secs: u64,
    /// How long a tombstone is kept before the reaper may remove it (and only once every
    /// primary holds it and no member holds a hint of the key). Also applies to a key whose
    /// siblings mix tombstones and expiring values.
    pub reap_grace_secs: u64,
    /// The clock-skew allowance of expiry: a record whose every sibling is a value with an
    /// expiry is dropped by the storage engine's compaction only this long after its latest
    /// expiry, by this node's clock (reads hide it from the expiry on). Larger than the clock
    /// skew between nodes and than a write's replication with its retries takes (0 ..= 1 day).
    pub expiry_grace_secs: u64,
    /// Bytes of expired records (past the grace, as written since the last such compaction)
    /// at which the node compacts its data so that they go even while nothing else compacts
    /// (an idle node); 0 = never (natural and periodic compactions only).
    pub expiry_compact_bytes: u64,
    /// Least time between two of those compactions, in seconds (1 ..= 1 day).
    pub expiry_compact_interval_secs: u64,
}

/// HTTP server behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// On SIGTERM, how long `/v1/health` answers `503` before the listener closes, so load
    /// balancers stop sending traffic first.
    pub shutdown_drain_ms: u64,
    /// Worker threads of the runtime; 0 = one per core.
    pub worker_threads: usize,
    /// Deadline of one internode call, in milliseconds (a replica slower than this counts as
    /// failed for that request).
    pub rpc_timeout_ms: u64,
    /// Largest internode message (RPC frame) sent or accepted, in bytes (16 MiB ..= 1 GiB).
    /// Must be the same on every node: a frame over the receiver's limit closes the
    /// connection. It bounds the largest object that can replicate, hence
    /// `limits.object_bytes_max` (plus [`crate::peer::ENVELOPE_BYTES_MAX`]) must fit in it.
    pub rpc_frame_bytes_max: usize,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may sit idle before its next request, in milliseconds: a connection past it
    /// is closed (slowloris: a client trickling headers holds nothing for longer).
    pub http_header_timeout_ms: u64,
    /// How long a client may take to send a request's body once its headers arrived, in
    /// milliseconds (`408` past it).
    pub http_body_timeout_ms: u64,
    /// Most client connections open at once; past it a new connection is closed at once
    /// (counted in `yeskv_http_connections_refused_total`).
    pub http_connections_max: usize,
    /// Most request-body bytes held by the node at once across all client requests; a request
    /// waits for room (up to its body timeout, then `503`).
    pub http_inflight_bytes_max: usize,
    /// Most internode connections open at once on the peer port; past it a new one is closed.
    pub rpc_connections_max: usize,
    /// Most request bytes the internode server holds in running handlers at once; past it the
    /// connections stop reading (back-pressure) until handlers finish.
    pub rpc_inflight_bytes_max: usize,
}

/// Hinted handoff, read repair and active anti-entropy (AAE).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Repair {
    /// Most hints this node keeps for one down node; past it the node refuses to stand in for
    /// that node (another fallback takes the write, or the write fails if fewer than `w` nodes
    /// could take it). Hints are never dropped: each waits until its target (or, if the target
    /// left the layout, the key's current primaries) took it.
    pub hints_per_target_max: u64,
    /// Most MiB of hints this node keeps in all; past it the node refuses to stand in.
    pub hints_mb_max: u64,
    /// No longer used (hints are kept until delivered, never dropped for age); accepted so that
    /// older configuration files still load, with a warning.
    pub hint_age_max_secs: Option<u64>,
    /// How often the handoff worker looks for hints whose target is up.
    pub handoff_interval_ms: u64,
    /// Hints read and sent per batch.
    pub handoff_batch: usize,
    /// Hints in flight to one target at once (back-pressure: the next batch waits).
    pub handoff_inflight_max: usize,
    /// Read repair after reads (the merged object to replicas that were behind).
    pub read_repair: bool,
    /// Most read repairs in flight; past it a repair is skipped (counted).
    pub read_repair_inflight_max: usize,
    /// One read in this many asks every replica of the key, which read-repairs all of them;
    /// the others ask `r` replicas (the coordinator's own copy first) and one more only when
    /// one fails or is slow. 1: every read asks every replica (Riak's way).
    pub read_all_every: u32,
    /// How long a read waits for the replicas it asked before asking one more.
    pub read_hedge_ms: u64,
    /// How often this node runs an anti-entropy exchange (one partition per exchange, with one
    /// other replica of it); 0 turns anti-entropy off.
    pub aae_interval_ms: u64,
    /// Most keys one exchange repairs (the rest wait for the next exchange of that partition).
    pub aae_keys_per_exchange_max: usize,
    /// How often the reaper looks for tombstones and expired versions past the grace period.
    pub reap_interval_ms: u64,
}

impl Default for Repair {
    fn default() -> Self {
        Repair {
            hints_per_target_max: 1_000_000,
            hints_mb_max: 1024,
            hint_age_max_secs: None,
            handoff_interval_ms: 1000,
            handoff_batch: 512,
            handoff_inflight_max: 32,
            read_repair: true,
            read_repair_inflight_max: 256,
            read_all_every: 10,
            read_hedge_ms: 20,
            aae_interval_ms: 1000,
            aae_keys_per_exchange_max: 10_000,
            reap_interval_ms: 10_000,
        }
    }
}

/// Receiving partitions after a membership change (`crate::transfer`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transfer {
    /// How often the transfer worker syncs the partitions this node is receiving.
    pub interval_ms: u64,
    /// Most full exchanges with one holder of one partition per round before the partition
    /// waits for the next round (writes arriving meanwhile can keep an exchange finding keys).
    pub exchanges_per_holder_max: usize,
    /// Most bytes of records one streamed batch carries (one record alone when it is larger).
    pub batch_bytes: u32,
    /// Most bytes per second this node receives by streaming (0: no limit).
    pub rate_bytes_per_s: u64,
    /// How long a former holder keeps a partition's data after the layout stopped listing it
    /// as a holder or source (nodes with an older layout may still read it meanwhile).
    pub cleanup_delay_secs: u64,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            interval_ms: 1000,
            exchanges_per_holder_max: 8,
            batch_bytes: 1 << 20,
            rate_bytes_per_s: 64 << 20,
            cleanup_delay_secs: 60,
        }
    }
}

/// Sending writes to the other regions (`crate::xr`); used only with replicas per region.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrossRegion {
    /// Most writes queued on this node for one region. Past it writes are still taken, but
    /// not queued for that region (anti-entropy carries them; `yeskv_xr_overflow_total`).
    pub queue_entries_max: u64,
    /// Queued writes read and sent per batch.
    pub batch: usize,
    /// Wait before a region whose last batch failed is tried again.
    pub retry_ms: u64,
    /// Longest wait between looks at the queue when no write wakes the sender.
    pub poll_ms: u64,
}

impl Default for CrossRegion {
    fn default() -> Self {
        CrossRegion {
            queue_entries_max: crate::replica::XR_QUEUE_ENTRIES_MAX_DEFAULT,
            batch: 512,
            retry_ms: 1000,
            poll_ms: 500,
        }
    }
}

/// Test-only fault injection, for the real-process chaos runner.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Chaos {
    /// Wraps internode calls in a runtime-settable delay and serves `GET`/`POST
    /// /v1/admin/chaos` to set it. Never enable in production: anyone who reaches the client
    /// port can slow the node down.
    pub enabled: bool,
    /// WAN delay, jitter and loss per region pair, e.g. `wan = [{from = "r1", to = "r2",
    /// delay_ms = 40, jitter_ms = 5, loss = 0.0}]`: a node applies the links whose `from` is
    /// its own `region` to its calls to nodes of region `to` (directional: a symmetric WAN
    /// lists both directions). Any link turns the chaos layer on, as `enabled` does. Bounds
    /// in [`crate::chaos`]: delays at most 60,000 ms, loss in `0..=1`, at most 8 links from
    /// one region (one per `to`) and 64 in all.
    pub wan: Vec<crate::chaos::WanLink>,
}

impl Chaos {
    /// Whether the chaos layer is on: `enabled`, or WAN links configured.
    pub fn is_on(&self) -> bool {
        self.enabled || !self.wan.is_empty()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            shutdown_drain_ms: 0,
            worker_threads: 0,
            rpc_timeout_ms: 2000,
            rpc_frame_bytes_max: yeskv_rpc::FRAME_BYTES_MAX_DEFAULT,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            http_connections_max: 8192,
            http_inflight_bytes_max: 256 << 20,
            rpc_connections_max: 1024,
            rpc_inflight_bytes_max: 512 << 20,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_name: "yeskv".into(),
            node_id: "n1".into(),
            data_dir: PathBuf::from("./yeskv-data/n1"),
            http: "127.0.0.1:8081".into(),
            peer: "127.0.0.1:7081".into(),
            seeds: Vec::new(),
            zone: "default".into(),
            region: "default".into(),
            n: 3,
            r: 2,
            w: 2,
            partitions: 256,
            limits: Limits::default(),
            storage: Storage::default(),
            ttl: Ttl::default(),
            server: Server::default(),
            repair: Repair::default(),
            transfer: Transfer::default(),
            cross_region: CrossRegion::default(),
            chaos: Chaos::default(),
            security: Security::default(),
            resp: Resp::default(),
            log: "info".into(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bucket_bytes_max: 512,
            key_bytes_max: 512,
            value_bytes_max: 1 << 20,
            object_bytes_max: 8 << 20,
            siblings_max: 100,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            sync: "group".into(),
            block_cache_mb: 256,
            object_cache_mb: 64,
            write_buffer_mb: 64,
            group_commit_window_us: 1000,
            reserve_mb: 32,
            periodic_compaction_secs: 86_400,
        }
    }
}

impl Default for Ttl {
    fn default() -> Self {
        Ttl {
            default_ttl_secs: 0,
            reap_grace_secs: 3600,
            expiry_grace_secs: 60,
            expiry_compact_bytes: 64 << 20,
            expiry_compact_interval_secs: 600,
        }
    }
}

/// A validated configuration, with parsed types.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The raw settings.
    pub raw: Config,
    /// Parsed node id.
    pub node_id: NodeId,
    /// Parsed client address.
    pub http: SocketAddr,
    /// Parsed peer address.
    pub peer: SocketAddr,
    /// Parsed RESP address, when the listener is on (`[resp] listen`).
    pub resp: Option<SocketAddr>,
    /// Parsed sync mode.
    pub sync: SyncMode,
}

/// Room `limits.object_bytes_max` leaves above `limits.value_bytes_max` for the rest of an
/// object's record (header, clock, the version's dot and timestamps; a clock of a few dozen
/// actors), so that a value of the largest size fits in an object on its own.
pub const OBJECT_RECORD_ROOM_BYTES: usize = 4096;

/// Longest TTL accepted (about 100 years), so expiry instants never overflow.
pub const TTL_SECS_MAX: u64 = 100 * 365 * 24 * 3600;

/// A setting that is missing, malformed or out of range: one line naming it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        ConfigError(message.to_string())
    }
}

/// Parses one socket address setting; `what` names it in the error.
fn parse_addr(what: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse::<SocketAddr>().map_err(|e| {
        ConfigError(format!(
            "{what} address {s:?} is not HOST:PORT with a port 0-65535 ({e})"
        ))
    })
}

/// Refuses `value` outside `min ..= max` with "`{name} must be between {min} and {max}`".
fn check_between<T>(name: &str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if value < min || value > max {
        return Err(ConfigError(format!(
            "{name} must be between {min} and {max}"
        )));
    }
    Ok(())
}

/// Refuses `value` above `max` with "`{name} must be at most {max}`".
fn check_at_most<T>(name: &str, value: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if value > max {
        return Err(ConfigError(format!("{name} must be at most {max}")));
    }
    Ok(())
}

impl Config {
    /// Parses a TOML document (unknown keys are errors).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config: {}", e.message())))
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Checks every setting, section by section; the error is one line naming the first
    /// setting found wrong.
    pub fn validate(self) -> Result<Validated, ConfigError> {
        let node_id = self.validate_identity()?;
        let (http, peer) = self.validate_addresses()?;
        let resp = validate_resp(&self.resp, &self.limits)?;
        self.validate_replication()?;
        validate_limits(&self.limits)?;
        let sync = validate_storage(&self.storage)?;
        validate_server(&self.server)?;
        validate_frame_fits(&self.limits, &self.server)?;
        validate_ttl(&self.ttl)?;
        validate_repair(&self.repair)?;
        validate_transfer(&self.transfer)?;
        validate_cross_region(&self.cross_region)?;
        crate::chaos::check_links(&self.chaos.wan)
            .map_err(|e| ConfigError(format!("chaos.{e}")))?;
        validate_security(&self.security)?;
        let mut listeners = vec![("http", http), ("peer", peer)];
        listeners.extend(resp.map(|addr| ("resp", addr)));
        check_secure_by_default(&self.security, &listeners)?;
        Ok(Validated {
            node_id,
            http,
            peer,
            resp,
            sync,
            raw: self,
        })
    }

    /// `node_id` and `cluster_name`; returns the parsed node id.
    fn validate_identity(&self) -> Result<NodeId, ConfigError> {
        let node_id =
            NodeId::new(self.node_id.clone()).map_err(|e| ConfigError(format!("node_id: {e}")))?;
        if self.cluster_name.is_empty() || self.cluster_name.len() > 64 {
            return Err(ConfigError::from("cluster_name must be 1 to 64 bytes"));
        }
        Ok(node_id)
    }

    /// `http`, `peer` and `seeds`; returns the parsed client and peer addresses.
    fn validate_addresses(&self) -> Result<(SocketAddr, SocketAddr), ConfigError> {
        let http = parse_addr("http", &self.http)?;
        let peer = parse_addr("peer", &self.peer)?;
        for s in &self.seeds {
            parse_addr("seed", s)?;
        }
        Ok((http, peer))
    }

    /// How keys are replicated: `zone`, `n`, `r`, `w` (each quorum at most `n`) and
    /// `partitions`.
    fn validate_replication(&self) -> Result<(), ConfigError> {
        if self.zone.is_empty() || self.zone.len() > 64 {
            return Err(ConfigError::from("zone must be 1 to 64 bytes"));
        }
        if self.region.is_empty()
            || self.region.len() > 64
            || self.region.chars().any(char::is_control)
        {
            return Err(ConfigError::from(
                "region must be 1 to 64 bytes without control characters",
            ));
        }
        if !(1..=16).contains(&self.n) {
            return Err(ConfigError::from(format!(
                "n must be between 1 and 16, got {}",
                self.n
            )));
        }
        for (name, q) in [("r", self.r), ("w", self.w)] {
            if q == 0 || q > self.n {
                return Err(ConfigError::from(format!(
                    "{name} must be between 1 and n ({}), got {q}",
                    self.n
                )));
            }
        }
        if !self.partitions.is_power_of_two() || !(1..=65536).contains(&self.partitions) {
            return Err(ConfigError::from(format!(
                "partitions must be a power of two between 1 and 65536, got {}",
                self.partitions
            )));
        }
        Ok(())
    }
}

/// The `[security]` section: the TLS files go together.
fn validate_security(security: &Security) -> Result<(), ConfigError> {
    let set = [
        ("tls_cert", "--tls-cert", &security.tls_cert),
        ("tls_key", "--tls-key", &security.tls_key),
        ("tls_ca", "--tls-ca", &security.tls_ca),
    ];
    let given = set.iter().filter(|(_, _, path)| path.is_some()).count();
    if given != 0 && given != set.len() {
        let missing: Vec<String> = set
            .iter()
            .filter(|(_, _, path)| path.is_none())
            .map(|(name, flag, _)| format!("security.{name} ({flag})"))
            .collect();
        return Err(ConfigError(format!(
            "TLS needs a certificate, a key and the cluster CA: {} missing",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// The secure-by-default rule: a node listens on an address other machines can reach only with
/// TLS, unless `security.insecure` (`--insecure`) says otherwise. Loopback addresses (a dev
/// cluster, tests) need nothing. The one place this rule lives, so that other requirements
/// (client keys) extend it here. `listeners`: each address the node serves, with its setting's
/// name (`http`, `peer`, `resp`).
pub fn check_secure_by_default(
    security: &Security,
    listeners: &[(&str, SocketAddr)],
) -> Result<(), ConfigError> {
    if security.insecure {
        return Ok(());
    }
    let mut missing = Vec::new();
    if security.tls_files().is_none() {
        missing.push("TLS (--tls-cert, --tls-key and --tls-ca; see `yeskv cert`)");
    }
    if !security.auth {
        missing.push("API keys (--auth, with --admin-key-file on the first node)");
    }
    if security.cluster_keys.is_none() {
        missing.push("cluster keyring (--cluster-keys; see `yeskv keyring new`)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    for &(what, addr) in listeners {
        if !addr.ip().is_loopback() {
            return Err(ConfigError(format!(
                "refusing to serve {what} address {addr}: it is not loopback and the node has no {}; \
                 give them, or --insecure to serve anyway",
                missing.join(", no ")
            )));
        }
    }
    Ok(())
}

/// The `[resp]` section; returns the listener's address when it is on.
fn validate_resp(resp: &Resp, limits: &Limits) -> Result<Option<SocketAddr>, ConfigError> {
    let bucket = resp.default_bucket.as_bytes();
    if bucket.is_empty() || bucket.len() > limits.bucket_bytes_max || bucket.contains(&b':') {
        return Err(ConfigError(format!(
            "resp.default_bucket must be 1 to limits.bucket_bytes_max ({}) bytes without ':'",
            limits.bucket_bytes_max
        )));
    }
    check_between("resp.connections_max", resp.connections_max, 1, 1 << 20)?;
    check_between(
        "resp.idle_timeout_ms",
        resp.idle_timeout_ms,
        1000,
        86_400_000,
    )?;
    resp.listen
        .as_deref()
        .map(|listen| parse_addr("resp", listen))
        .transpose()
}

/// The `[limits]` section.
fn validate_limits(limits: &Limits) -> Result<(), ConfigError> {
    check_between("limits.bucket_bytes_max", limits.bucket_bytes_max, 1, 512)?;
    check_between("limits.key_bytes_max", limits.key_bytes_max, 1, 512)?;
    check_between(
        "limits.value_bytes_max",
        limits.value_bytes_max,
        1,
        64 << 20,
    )?;
    check_between("limits.siblings_max", limits.siblings_max, 1, 10_000)?;
    let room = OBJECT_RECORD_ROOM_BYTES;
    if limits.value_bytes_max.saturating_add(room) > limits.object_bytes_max {
        return Err(ConfigError(format!(
            "limits.value_bytes_max ({}) must be at least {room} bytes below \
             limits.object_bytes_max ({}): a value of the largest size must fit in an object",
            limits.value_bytes_max, limits.object_bytes_max
        )));
    }
    Ok(())
}

/// The largest object, in the largest message that carries one, must fit one internode frame,
/// or it could be written but never replicated nor read from another node (issue 14).
fn validate_frame_fits(limits: &Limits, server: &Server) -> Result<(), ConfigError> {
    let envelope = crate::peer::ENVELOPE_BYTES_MAX;
    if limits.object_bytes_max.saturating_add(envelope) > server.rpc_frame_bytes_max {
        return Err(ConfigError(format!(
            "limits.object_bytes_max ({}) plus {envelope} bytes of message envelope must fit \
             server.rpc_frame_bytes_max ({}): a larger object could not replicate",
            limits.object_bytes_max, server.rpc_frame_bytes_max
        )));
    }
    Ok(())
}

/// The `[storage]` section; returns the parsed sync mode.
fn validate_storage(storage: &Storage) -> Result<SyncMode, ConfigError> {
    let sync: SyncMode = storage
        .sync
        .parse()
        .map_err(|e| ConfigError(format!("storage.{e}")))?;
    if storage.block_cache_mb == 0 || storage.write_buffer_mb == 0 {
        return Err(ConfigError::from(
            "storage.block_cache_mb and storage.write_buffer_mb must be positive",
        ));
    }
    check_at_most(
        "storage.group_commit_window_us",
        storage.group_commit_window_us,
        100_000,
    )?;
    check_at_most("storage.reserve_mb", storage.reserve_mb, 1 << 20)?;
    Ok(sync)
}

/// The `[server]` section.
fn validate_server(server: &Server) -> Result<(), ConfigError> {
    check_between("server.rpc_timeout_ms", server.rpc_timeout_ms, 1, 600_000)?;
    check_between(
        "server.http_header_timeout_ms",
        server.http_header_timeout_ms,
        100,
        3_600_000,
    )?;
    check_between(
        "server.http_body_timeout_ms",
        server.http_body_timeout_ms,
        100,
        3_600_000,
    )?;
    check_between(
        "server.http_connections_max",
        server.http_connections_max,
        1,
        1 << 20,
    )?;
    check_between(
        "server.rpc_connections_max",
        server.rpc_connections_max,
        1,
        1 << 20,
    )?;
    // Room for the largest value (and a whole frame) at least: one request must always fit.
    check_between(
        "server.http_inflight_bytes_max",
        server.http_inflight_bytes_max,
        1 << 20,
        1 << 40,
    )?;
    check_between(
        "server.rpc_inflight_bytes_max",
        server.rpc_inflight_bytes_max,
        server.rpc_frame_bytes_max,
        1 << 40,
    )?;
    // Not below the default: the layout's and anti-entropy's own messages are sized for it.
    check_between(
        "server.rpc_frame_bytes_max",
        server.rpc_frame_bytes_max,
        yeskv_rpc::FRAME_BYTES_MAX_DEFAULT,
        yeskv_rpc::FRAME_BYTES_MAX_LIMIT,
    )
}

/// The `[ttl]` section: no duration past [`TTL_SECS_MAX`].
fn validate_ttl(ttl: &Ttl) -> Result<(), ConfigError> {
    check_at_most("ttl.default_ttl_secs", ttl.default_ttl_secs, TTL_SECS_MAX)?;
    check_at_most("ttl.reap_grace_secs", ttl.reap_grace_secs, TTL_SECS_MAX)?;
    check_at_most("ttl.expiry_grace_secs", ttl.expiry_grace_secs, 86_400)?;
    check_between(
        "ttl.expiry_compact_interval_secs",
        ttl.expiry_compact_interval_secs,
        1,
        86_400,
    )
}

/// The `[transfer]` section.
fn validate_transfer(transfer: &Transfer) -> Result<(), ConfigError> {
    check_between("transfer.interval_ms", transfer.interval_ms, 1, 3_600_000)?;
    check_between(
        "transfer.exchanges_per_holder_max",
        transfer.exchanges_per_holder_max,
        1,
        1000,
    )?;
    check_between(
        "transfer.batch_bytes",
        transfer.batch_bytes,
        4096,
        crate::transfer::BATCH_BYTES_MAX,
    )?;
    check_between(
        "transfer.cleanup_delay_secs",
        transfer.cleanup_delay_secs,
        0,
        7 * 86_400,
    )
}

/// The `[cross_region]` section.
fn validate_cross_region(xr: &CrossRegion) -> Result<(), ConfigError> {
    check_between(
        "cross_region.queue_entries_max",
        xr.queue_entries_max,
        1,
        1 << 32,
    )?;
    check_between(
        "cross_region.batch",
        xr.batch,
        1,
        crate::replication::MERGE_MANY_MAX,
    )?;
    check_between("cross_region.retry_ms", xr.retry_ms, 1, 3_600_000)?;
    check_between("cross_region.poll_ms", xr.poll_ms, 1, 3_600_000)
}

/// The `[repair]` section (`hint_age_max_secs` is retired and accepted as anything).
fn validate_repair(repair: &Repair) -> Result<(), ConfigError> {
    if repair.hints_per_target_max == 0 {
        return Err(ConfigError::from(
            "repair.hints_per_target_max must be positive",
        ));
    }
    check_between("repair.hints_mb_max", repair.hints_mb_max, 1, 1 << 30)?;
    check_between(
        "repair.handoff_interval_ms",
        repair.handoff_interval_ms,
        1,
        3_600_000,
    )?;
    check_between("repair.handoff_batch", repair.handoff_batch, 1, 100_000)?;
    check_between(
        "repair.handoff_inflight_max",
        repair.handoff_inflight_max,
        1,
        1024,
    )?;
    check_between(
        "repair.read_repair_inflight_max",
        repair.read_repair_inflight_max,
        1,
        100_000,
    )?;
    check_between("repair.read_all_every", repair.read_all_every, 1, 1_000_000)?;
    check_between("repair.read_hedge_ms", repair.read_hedge_ms, 1, 60_000)?;
    check_at_most("repair.aae_interval_ms", repair.aae_interval_ms, 3_600_000)?;
    check_between(
        "repair.aae_keys_per_exchange_max",
        repair.aae_keys_per_exchange_max,
        1,
        1_000_000,
    )?;
    check_between(
        "repair.reap_interval_ms",
        repair.reap_interval_ms,
        1,
        3_600_000,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn example_file_parses_and_validates() {
        let text = include_str!("../../../yeskv.example.toml");
        let cfg = Config::from_toml(text).expect("example parses");
        cfg.validate().expect("example validates");
    }

    #[test]
    fn chaos_is_off_unless_asked_for() {
        assert!(!Config::default().chaos.enabled);
        let on = Config::from_toml("[chaos]\nenabled = true").expect("parses");
        assert!(on.chaos.enabled);
        assert!(on.chaos.is_on());
        assert!(!Config::default().chaos.is_on());
    }

    #[test]
    fn chaos_wan_links_turn_the_layer_on_and_are_validated() {
        let cfg = Config::from_toml(
            "region = \"r1\"\n[chaos]\nwan = [\n  {from = \"r1\", to = \"r2\", delay_ms = 40, \
             jitter_ms = 5, loss = 0.0},\n  {from = \"r2\", to = \"r1\", delay_ms = 40},\n]",
        )
        .expect("parses");
        assert!(!cfg.chaos.enabled);
        assert!(cfg.chaos.is_on(), "wan links imply the chaos layer");
        let valid = cfg.validate().expect("validates");
        let rules = crate::chaos::rules_from(&valid.raw.chaos.wan, &valid.raw.region);
        assert_eq!(rules.len(), 1);
        assert_eq!((rules[0].to.as_str(), rules[0].delay_ms), ("r2", 40));
        for (bad, why) in [
            (
                "[chaos]\nwan = [{from = \"r1\", to = \"r2\", loss = 1.5}]",
                "loss",
            ),
            (
                "[chaos]\nwan = [{from = \"r1\", to = \"r2\", delay_ms = 60001}]",
                "at most",
            ),
            ("[chaos]\nwan = [{from = \"\", to = \"r2\"}]", "wan from"),
            ("[chaos]\nwan = [{from = \"r1\", to = \"\"}]", "region name"),
            (
                "[chaos]\nwan = [{from = \"r1\", to = \"r2\"}, {from = \"r1\", to = \"r2\"}]",
                "twice",
            ),
        ] {
            let e = Config::from_toml(bad)
                .expect("parses")
                .validate()
                .map(|_| ())
                .expect_err(bad)
                .to_string();
            assert!(e.contains("chaos.") && e.contains(why), "{bad}: {e}");
        }
        // Unknown keys in a link are refused when parsing.
        assert!(
            Config::from_toml("[chaos]\nwan = [{from = \"r1\", to = \"r2\", drop = 1}]").is_err()
        );
    }

    #[test]
    fn the_retired_hint_age_still_loads() {
        let c = Config::from_toml("[repair]\nhint_age_max_secs = 7200").expect("parses");
        assert_eq!(c.repair.hint_age_max_secs, Some(7200));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = [
            "r = 4",
            "w = 0",
            "n = 0",
            "http = \"127.0.0.1:70000\"",
            "partitions = 100",
            "nosuchkey = 1",
            "[storage]\nsync = \"sometimes\"",
            "[limits]\nkey_bytes_max = 0",
            "node_id = \"has space\"",
            "[repair]\nhints_mb_max = 0",
            "[repair]\nhandoff_batch = 0",
            "[chaos]\ndelay_ms = 5",
            "[server]\nrpc_frame_bytes_max = 1048576",
        ];
        for b in bad {
            let r = Config::from_toml(b).and_then(|c| c.validate().map(|_| ()));
            assert!(r.is_err(), "{b} should be refused");
        }
    }

    /// Refused, in one line naming both keys.
    fn refused<const N: usize>(toml: &str, keys: [&str; N]) {
        let error = Config::from_toml(toml)
            .and_then(|c| c.validate().map(|_| ()))
            .expect_err(toml)
            .to_string();
        assert!(!error.contains('\n'), "one line: {error}");
        for key in keys {
            assert!(error.contains(key), "{toml}: {error} should name {key}");
        }
    }

    #[test]
    fn the_largest_object_must_fit_the_internode_frame() {
        let frame = yeskv_rpc::FRAME_BYTES_MAX_DEFAULT;
        let envelope = crate::peer::ENVELOPE_BYTES_MAX;
        let defaults = Config::default();
        assert!(defaults.limits.object_bytes_max + envelope <= defaults.server.rpc_frame_bytes_max);
        // Exactly at the frame: taken; one byte over: refused, naming both keys.
        let at = format!("[limits]\nobject_bytes_max = {}", frame - envelope);
        assert!(Config::from_toml(&at).expect("parses").validate().is_ok());
        refused(
            &format!("[limits]\nobject_bytes_max = {}", frame - envelope + 1),
            ["limits.object_bytes_max", "server.rpc_frame_bytes_max"],
        );
        // A larger frame makes room for a larger object.
        let larger = format!(
            "[limits]\nobject_bytes_max = {}\n[server]\nrpc_frame_bytes_max = {}",
            32 << 20,
            64 << 20
        );
        assert!(Config::from_toml(&larger)
            .expect("parses")
            .validate()
            .is_ok());
    }

    #[test]
    fn the_largest_value_must_fit_an_object() {
        refused(
            "[limits]\nvalue_bytes_max = 8388608",
            ["limits.value_bytes_max", "limits.object_bytes_max"],
        );
        refused(
            "[limits]\nvalue_bytes_max = 1048576\nobject_bytes_max = 1048576",
            ["limits.value_bytes_max", "limits.object_bytes_max"],
        );
        let fits = format!(
            "[limits]\nvalue_bytes_max = 1048576\nobject_bytes_max = {}",
            (1 << 20) + OBJECT_RECORD_ROOM_BYTES
        );
        assert!(Config::from_toml(&fits).expect("parses").validate().is_ok());
    }

    #[test]
    fn a_reachable_address_needs_tls_keys_and_a_keyring_or_insecure() {
        refused(
            "http = \"0.0.0.0:8081\"",
            ["http address 0.0.0.0:8081", "--insecure"],
        );
        refused(
            "peer = \"10.0.0.7:7081\"",
            ["peer address 10.0.0.7:7081", "--insecure"],
        );
        for allowed in [
            "http = \"127.0.0.1:8081\"\npeer = \"[::1]:7081\"",
            "http = \"0.0.0.0:8081\"\n[security]\ninsecure = true",
            "http = \"0.0.0.0:8081\"\n[security]\ntls_cert = \"n.pem\"\ntls_key = \"n.key\"\ntls_ca = \"ca.pem\"\nauth = true\ncluster_keys = \"c.keys\"",
        ] {
            let cfg = Config::from_toml(allowed).expect("parses");
            assert!(cfg.validate().is_ok(), "{allowed}");
        }
        // TLS alone is not enough: keys and the keyring too.
        refused(
            "http = \"0.0.0.0:8081\"\n[security]\ntls_cert = \"n.pem\"\ntls_key = \"n.key\"\ntls_ca = \"ca.pem\"",
            ["no API keys", "no cluster keyring", "--insecure"],
        );
    }

    #[test]
    fn the_resp_listener_is_off_by_default_and_follows_the_secure_rule() {
        let cfg = Config::default().validate().expect("defaults");
        assert_eq!(cfg.resp, None);
        let on = Config::from_toml("[resp]\nlisten = \"127.0.0.1:6380\"")
            .expect("parses")
            .validate()
            .expect("loopback is fine");
        assert_eq!(on.resp, Some("127.0.0.1:6380".parse().expect("addr")));
        refused(
            "[resp]\nlisten = \"0.0.0.0:6380\"",
            ["resp address 0.0.0.0:6380", "--insecure"],
        );
        let insecure = "[resp]\nlisten = \"0.0.0.0:6380\"\n[security]\ninsecure = true";
        assert!(Config::from_toml(insecure)
            .expect("parses")
            .validate()
            .is_ok());
        refused("[resp]\nlisten = \"nowhere\"", ["resp address"]);
        refused("[resp]\ndefault_bucket = \"a:b\"", ["resp.default_bucket"]);
        refused("[resp]\ndefault_bucket = \"\"", ["resp.default_bucket"]);
        refused("[resp]\nconnections_max = 0", ["resp.connections_max"]);
        refused("[resp]\nidle_timeout_ms = 10", ["resp.idle_timeout_ms"]);
    }

    #[test]
    fn tls_files_go_together() {
        refused(
            "[security]\ntls_cert = \"n.pem\"",
            ["security.tls_key (--tls-key)", "security.tls_ca (--tls-ca)"],
        );
    }
}
