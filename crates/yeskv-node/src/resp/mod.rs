//! The Redis-protocol (RESP2/RESP3) listener: Redis clients (`redis-cli`, `redis-benchmark`,
//! redis-py…) reading and writing yeskv keys. Off unless `[resp] listen` (`--resp ADDR`) is
//! set; `docs/resp.md` is the user's page (commands, rules, limits, what is not supported).
//!
//! It is a second front door to the same node, beside the HTTP API and equal to it: commands
//! go to the same [`Coordinator`](crate::coordinator::Coordinator) (placement, quorums,
//! sloppy quorum, contexts, TTL, bucket properties), are refused by the same rules (limits,
//! API keys and their bucket permissions, `AppState::keys_gate`) and nothing below this
//! module knows RESP. What Redis semantics need that HTTP does not offer is one write kind,
//! [`WriteBody::Supersede`](crate::coordinator::WriteBody::Supersede): a `SET` replaces what
//! its coordinator holds, so `SET k v1; SET k v2; GET k` answers `v2`, while concurrent
//! `SET`s through different coordinators still become siblings (`coordinator/supersede.rs`).
//!
//! - [`codec`]: requests in (multibulk and inline, bounded), replies out (RESP2 or RESP3).
//! - [`commands`]: the command table: names, arity, options → [`commands::Command`].
//! - [`exec`]: the session and what each command does with the coordinator.
//! - [`conn`]: one connection: pipelining, idle timeout, ordered answers, one write per batch.
//!
//! This file owns the listener: bind (TLS when the node has TLS, as the HTTP port), a cap on
//! open connections (past it a client is told `-ERR max number of clients reached` and
//! closed, as Redis does), and the stop: no new connections, and each open one closes after
//! the batch it is running.

pub mod codec;
pub mod commands;
mod conn;
pub mod exec;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use yeskv_storage::Engine;

use crate::api::AppState;
use crate::config::Validated;
use crate::error::Error;

/// Room a command may take beyond `limits.value_bytes_max`: its name, key and options and
/// their headers (a `SET` of the largest value fits; an `MSET`'s values together get the
/// value limit).
pub const COMMAND_SLACK_BYTES: usize = 64 * 1024;

/// Most arguments of one command, its name included: an `MSET` of 1,023 pairs, an `MGET` or
/// `DEL` of 2,047 keys, an `SADD` of the 1,024 members a set operation may name.
pub const ARGS_MAX: usize = 2048;

/// How long a stopping listener waits for its connections to finish their batch.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What every connection of the listener shares.
pub(crate) struct Shared<E: Engine> {
    /// The node, as the HTTP handlers see it.
    state: Arc<AppState<E>>,
    /// Bounds on one request.
    limits: codec::Limits,
    /// The bucket of keys without a prefix, until a session picks another.
    default_bucket: Vec<u8>,
    /// `[resp] idle_timeout_ms`.
    idle_timeout: Duration,
    /// Connections open now.
    clients: AtomicUsize,
    /// `[resp] connections_max`.
    connections_max: usize,
    /// The next connection's id.
    next_id: AtomicU64,
    /// The port listened on (`INFO`).
    port: u16,
    /// Turns `true` when the listener stops.
    stopping: watch::Receiver<bool>,
}

/// A running listener; [`RespServer::stop`] ends it.
pub struct RespServer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The address it listens on.
    pub local_addr: SocketAddr,
}

impl RespServer {
    /// Stops accepting, lets each open connection finish its current batch (at most
    /// [`STOP_WAIT`]), and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_WAIT, self.task).await.is_err() {
            tracing::warn!("RESP connections still open after {STOP_WAIT:?}; leaving them");
        }
    }
}

/// The two kinds of listener: plain TCP, or TLS with the node's certificate.
enum Listener {
    Tcp(TcpListener),
    Tls(yeskv_tls::TlsListener),
}

/// Starts the RESP listener when the config has one (`[resp] listen`), with TLS when `tls`
/// is set. Fails only if the address cannot be bound.
pub async fn start<E: Engine>(
    cfg: &Validated,
    state: Arc<AppState<E>>,
    tls: Option<&Arc<yeskv_tls::TlsState>>,
) -> Result<Option<RespServer>, Error> {
    let Some(addr) = cfg.resp else {
        return Ok(None);
    };
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Startup(format!("cannot listen on RESP address {addr}: {e}")))?;
    let local_addr = tcp
        .local_addr()
        .map_err(|e| Error::Startup(format!("RESP listener address: {e}")))?;
    let listener = match tls {
        Some(tls) => Listener::Tls(
            yeskv_tls::TlsListener::new(tcp, tls.clone(), yeskv_tls::Role::Http)
                .map_err(|e| Error::Startup(format!("RESP TLS listener: {e}")))?,
        ),
        None => Listener::Tcp(tcp),
    };
    describe_metrics();
    let raw = &cfg.raw;
    let (stop, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        limits: codec::Limits {
            args_max: ARGS_MAX,
            command_bytes_max: raw.limits.value_bytes_max + COMMAND_SLACK_BYTES,
        },
        default_bucket: raw.resp.default_bucket.as_bytes().to_vec(),
        idle_timeout: Duration::from_millis(raw.resp.idle_timeout_ms),
        clients: AtomicUsize::new(0),
        connections_max: raw.resp.connections_max,
        next_id: AtomicU64::new(1),
        port: local_addr.port(),
        stopping,
        state,
    });
    tracing::info!(resp = %local_addr, tls = tls.is_some(), "serving RESP");
    let task = tokio::spawn(accept_loop(listener, shared));
    Ok(Some(RespServer {
        stop,
        task,
        local_addr,
    }))
}

/// Accepts until the stop, then waits for the open connections to close.
async fn accept_loop<E: Engine>(mut listener: Listener, shared: Arc<Shared<E>>) {
    let slots = Arc::new(Semaphore::new(shared.connections_max));
    let mut stopping = shared.stopping.clone();
    loop {
        let accepted = tokio::select! {
            accepted = accept(&mut listener) => accepted,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ::metrics::counter!(crate::metrics::RESP_CONNECTIONS_REFUSED).increment(1);
            tracing::debug!(
                max = shared.connections_max,
                "RESP connection refused: resp.connections_max open"
            );
            tokio::spawn(refuse(stream));
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            match stream {
                Stream::Tcp(s) => conn::serve(s, addr, &shared).await,
                Stream::Tls(s) => conn::serve(*s, addr, &shared).await,
            }
            drop(slot);
        });
    }
    drop(listener);
    // Every slot back: every connection closed.
    let max = u32::try_from(shared.connections_max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(max).await;
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn accept(listener: &mut Listener) -> std::io::Result<(Stream, SocketAddr)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), addr))
        }
        Listener::Tls(l) => {
            let (s, addr) = l.accept().await?;
            Ok((Stream::Tls(Box::new(s)), addr))
        }
    }
}

/// Tells a client past the connection cap why it is closed.
async fn refuse(stream: Stream) {
    let message = b"-ERR max number of clients reached\r\n";
    let write = async {
        match stream {
            Stream::Tcp(mut s) => s.write_all(message).await,
            Stream::Tls(mut s) => s.write_all(message).await,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

fn describe_metrics() {
    use crate::metrics::{
        RESP_COMMANDS, RESP_CONNECTIONS_OPEN, RESP_CONNECTIONS_REFUSED, RESP_DURATION, RESP_ERRORS,
    };
    ::metrics::describe_counter!(RESP_COMMANDS, "RESP commands run, by command.");
    ::metrics::describe_counter!(
        RESP_ERRORS,
        "RESP commands answered with an error, by command and error code."
    );
    ::metrics::describe_histogram!(
        RESP_DURATION,
        "RESP command latency in seconds, by command."
    );
    ::metrics::describe_gauge!(RESP_CONNECTIONS_OPEN, "RESP connections open.");
    ::metrics::describe_counter!(
        RESP_CONNECTIONS_REFUSED,
        "RESP connections closed at once: resp.connections_max were open."
    );
    ::metrics::counter!(RESP_CONNECTIONS_REFUSED).increment(0);
    ::metrics::gauge!(RESP_CONNECTIONS_OPEN).set(0.0);
}
