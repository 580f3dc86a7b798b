//! `yeskv`: the one binary. `server` runs a node, `dev` runs a local cluster of real node
//! processes, `get`/`put`/`delete`/`touch` and `dt` (data types) are the command-line client,
//! `cluster`, `bucket`, `key` (API keys) and `keyring` (the cluster keyring) the operator's
//! commands, and `bench` is the load generator. `--key` (or `YESKV_KEY`) makes every client
//! command send `Authorization: Bearer KEY`.
//! Every failure ends with one line on stderr and a non-zero exit status.

mod backup_cmd;
mod bench;
mod bucket_cmd;
mod cert_cmd;
mod client_cmd;
mod cluster_cmd;
mod dev;
mod dt_cmd;
mod key_cmd;
mod logging;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the request path allocates small buffers on one thread
/// and frees them on another, where glibc's arenas spent ~10% of a node's CPU (see
/// `docs/performance.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// yeskv: a Dynamo-style key-value store that always accepts writes.
#[derive(Parser, Debug)]
#[command(name = "yeskv", version, about, long_about = None)]
struct Cli {
    /// API key sent as `Authorization: Bearer KEY` by client commands (get, put, cluster,
    /// bucket, key, bench...) to nodes started with --auth.
    // Its own id: `get`/`put` have a positional `key`, which a global arg of the same id
    // would swallow.
    #[arg(
        long = "key",
        id = "api_key",
        value_name = "KEY",
        global = true,
        env = "YESKV_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// The cluster CA certificate (PEM) that https:// nodes' certificates are checked against
    /// (`ca.pem` of `yeskv cert init`).
    #[arg(long, global = true, env = "YESKV_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The `--key` of this run, set once in `main`.
static API_KEY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// The API key client commands send (`--key` / `YESKV_KEY`), if any.
pub(crate) fn api_key() -> Option<&'static str> {
    API_KEY.get().and_then(|key| key.as_deref())
}

/// The `--ca` of this run (set once, before any command runs).
static CA_FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// The cluster CA file given with `--ca` / `YESKV_CA`, for clients of `https://` nodes.
pub(crate) fn ca_file() -> Option<&'static std::path::Path> {
    CA_FILE.get().and_then(|ca| ca.as_deref())
}

/// A client builder for the CLI's commands: with the `--ca` given, if any.
pub(crate) fn client_builder() -> yeskv_client::ClientBuilder {
    let builder = yeskv_client::Client::builder();
    match ca_file() {
        Some(ca) => builder.ca_file(ca),
        None => builder,
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node.
    #[command(after_long_help = concat!(
        "CONFIGURATION FILE (--config), every key with its default:\n\n",
        include_str!("../../../yeskv.example.toml")
    ))]
    Server(ServerArgs),
    /// Run a local cluster of real node processes on 127.0.0.1 (Ctrl-C stops them all).
    Dev(dev::DevArgs),
    /// Read a key.
    Get(client_cmd::GetArgs),
    /// Write a key.
    Put(client_cmd::PutArgs),
    /// Delete a key (with the context of a read; without --context the CLI reads first).
    Delete(client_cmd::DeleteArgs),
    /// Extend a key's expiry without rewriting it (a session kept alive).
    Touch(client_cmd::TouchArgs),
    /// Data types: cart, counter and set operations and reads (bucket with a datatype).
    #[command(subcommand)]
    Dt(dt_cmd::DtCommand),
    /// Load generator: YCSB-style workloads, latency percentiles, ops/s.
    Bench(bench::BenchArgs),
    /// Operator commands on the cluster: status, join, leave, plan, commit.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// A bucket's properties (data type, conflict resolution, TTL, salt), cluster-wide.
    #[command(subcommand)]
    Bucket(bucket_cmd::BucketCommand),
    /// API keys: create (the key is shown once), list, revoke (admin key needed).
    #[command(subcommand)]
    Key(key_cmd::KeyCommand),
    /// The cluster keyring file (signs causal contexts, encrypts gossip): new, rotate.
    #[command(subcommand)]
    Keyring(key_cmd::KeyringCommand),
    /// Copy every member's data into a directory (checkpoints, checked by SHA-256).
    Backup(backup_cmd::BackupArgs),
    /// Merge a backup directory into a cluster of any size (checked before anything changes).
    Restore(backup_cmd::RestoreArgs),
    /// Certificates: make the cluster CA, issue node certificates (TLS, `docs/security.md`).
    #[command(subcommand)]
    Cert(cert_cmd::CertCommand),
}

/// Flags of `yeskv server`; each overrides the same key of the config file.
#[derive(clap::Args, Debug, Clone)]
struct ServerArgs {
    /// TOML configuration file (see below for every key).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (`node_id`).
    #[arg(long)]
    node_id: Option<String>,
    /// Data directory (`data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client HTTP address, HOST:PORT (`http`).
    #[arg(long)]
    http: Option<String>,
    /// Peer address other nodes reach this node at, HOST:PORT (`peer`).
    #[arg(long)]
    peer: Option<String>,
    /// Also serve the Redis protocol (RESP2/RESP3) on HOST:PORT (`resp.listen`; docs/resp.md).
    #[arg(long, value_name = "ADDR")]
    resp: Option<String>,
    /// Peer address of a node of the cluster to join; repeatable (`seeds`).
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Failure domain of this node (`zone`).
    #[arg(long)]
    zone: Option<String>,
    /// Region (data centre) of this node (`region`); its zone lives inside it.
    #[arg(long)]
    region: Option<String>,
    /// Durability of acknowledged writes: always, group or none (`storage.sync`).
    #[arg(long)]
    sync: Option<String>,
    /// Require an API key on every request but the open ones (`security.auth`).
    #[arg(long)]
    auth: bool,
    /// The cluster keyring file (`security.cluster_keys`): signs causal contexts, encrypts
    /// gossip; the same on every node.
    #[arg(long)]
    cluster_keys: Option<PathBuf>,
    /// While the cluster has no API key, register the key in FILE (created, mode 0600, if
    /// absent) as the admin key "admin" (`security.admin_key_file`).
    #[arg(long, value_name = "FILE")]
    admin_key_file: Option<PathBuf>,
    /// This node's certificate chain, PEM (`security.tls_cert`); with --tls-key and --tls-ca
    /// the node serves HTTPS and talks to its peers over mutual TLS.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This node's private key, PEM (`security.tls_key`).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The cluster CA certificate, PEM (`security.tls_ca`).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Serve plain text on a non-loopback address (`security.insecure`): only on a network you
    /// trust.
    #[arg(long)]
    insecure: bool,
}

fn load_server_config(args: &ServerArgs) -> anyhow::Result<yeskv_node::config::Validated> {
    let mut cfg = match &args.config {
        Some(path) => yeskv_node::Config::from_file(path).map_err(anyhow::Error::msg)?,
        None => yeskv_node::Config::default(),
    };
    if let Some(v) = &args.node_id {
        cfg.node_id = v.clone();
        if args.data_dir.is_none() && args.config.is_none() {
            cfg.data_dir = PathBuf::from("./yeskv-data").join(v);
        }
    }
    if let Some(v) = &args.data_dir {
        cfg.data_dir = v.clone();
    }
    if let Some(v) = &args.http {
        cfg.http = v.clone();
    }
    if let Some(v) = &args.peer {
        cfg.peer = v.clone();
    }
    if let Some(v) = &args.resp {
        cfg.resp.listen = Some(v.clone());
    }
    if !args.seeds.is_empty() {
        cfg.seeds = args.seeds.clone();
    }
    if let Some(v) = &args.zone {
        cfg.zone = v.clone();
    }
    if let Some(v) = &args.region {
        cfg.region = v.clone();
    }
    if let Some(v) = &args.sync {
        cfg.storage.sync = v.clone();
    }
    if args.auth {
        cfg.security.auth = true;
    }
    if let Some(v) = &args.cluster_keys {
        cfg.security.cluster_keys = Some(v.clone());
    }
    if let Some(v) = &args.admin_key_file {
        cfg.security.admin_key_file = Some(v.clone());
    }
    if let Some(v) = &args.tls_cert {
        cfg.security.tls_cert = Some(v.clone());
    }
    if let Some(v) = &args.tls_key {
        cfg.security.tls_key = Some(v.clone());
    }
    if let Some(v) = &args.tls_ca {
        cfg.security.tls_ca = Some(v.clone());
    }
    if args.insecure {
        cfg.security.insecure = true;
    }
    cfg.validate().map_err(anyhow::Error::msg)
}

/// Catches Ctrl-C (SIGINT) and SIGTERM from the moment it is called, and resolves on the first.
/// Both are registered before it returns (within a runtime), so a signal that arrives while the
/// caller is still starting up waits for it instead of killing the process by the default
/// action (an unclean stop, and for `yeskv dev` orphaned nodes).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async fn first(s: Option<Signal>) {
        match s {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    async move {
        tokio::select! {
            _ = first(term) => {},
            _ = first(interrupt) => {},
        }
    }
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let cfg = load_server_config(&args)?;
    logging::init(&cfg.raw.log);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cfg.raw.server.worker_threads > 0 {
        rt.worker_threads(cfg.raw.server.worker_threads);
    }
    let rt = rt.build().context("starting the runtime")?;
    rt.block_on(async move {
        let metrics = yeskv_node::metrics::install();
        yeskv_node::server::run(cfg, metrics, shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    })
}

fn main() {
    let cli = Cli::parse();
    let _ = API_KEY.set(cli.api_key.clone());
    let _ = CA_FILE.set(cli.ca.clone());
    let result = match cli.command {
        Command::Server(args) => run_server(args),
        Command::Cert(c) => cert_cmd::run(c),
        other => {
            logging::init("warn");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")
                .and_then(|rt| {
                    rt.block_on(async move {
                        match other {
                            Command::Dev(a) => dev::run(a).await,
                            Command::Get(a) => client_cmd::get(a).await,
                            Command::Put(a) => client_cmd::put(a).await,
                            Command::Delete(a) => client_cmd::delete(a).await,
                            Command::Touch(a) => client_cmd::touch(a).await,
                            Command::Dt(c) => dt_cmd::run(c).await,
                            Command::Bench(a) => bench::run(a).await,
                            Command::Cluster(c) => cluster_cmd::run(c).await,
                            Command::Bucket(c) => bucket_cmd::run(c).await,
                            Command::Key(c) => key_cmd::run(c).await,
                            Command::Keyring(c) => key_cmd::keyring(c),
                            Command::Backup(a) => backup_cmd::backup(a).await,
                            Command::Restore(a) => backup_cmd::restore(a).await,
                            Command::Server(_) | Command::Cert(_) => Ok(()),
                        }
                    })
                })
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
