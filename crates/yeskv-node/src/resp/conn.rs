//! One RESP connection: read, run, answer — with pipelining.
//!
//! The loop reads into one buffer, takes every complete command it holds (at most
//! [`BATCH_COMMANDS_MAX`]), runs them, and writes every answer with one write: a pipeline of
//! `-P 16` costs one read and one write, not sixteen of each. Answers are always in the order
//! of the commands. Within a batch, key commands run concurrently in *waves*: a command joins
//! the running wave unless it names a key a command of the wave names (then the wave finishes
//! first), so that `SET k 1; GET k` in one pipeline reads `1`, while sixteen `SET`s of
//! different keys wait for one round of replication, not sixteen. A connection command
//! (`AUTH`, `HELLO`, `YESKV.BUCKET`…) runs alone, after the wave before it and before the next
//! (it may change what the next commands are allowed to do).
//!
//! Bounds: the buffer holds at most one command being received (its header is checked against
//! the limits before its bytes are waited for: `codec`), plus what one read brings; a
//! connection silent for `[resp] idle_timeout_ms` is closed; answers are written out whenever
//! more than [`OUT_FLUSH_BYTES`] are pending. A malformed command is answered `-ERR Protocol
//! error: …` and the connection closed (after the answers of the commands before it), as
//! Redis does: the stream cannot be resynchronised.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use metrics::{Counter, Histogram};
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use yeskv_storage::Engine;

use super::codec::{parse_command, Protocol, Reply};
use super::commands::{self, Command};
use super::exec::Session;
use super::Shared;

/// Most commands taken from the buffer per batch (the rest wait for the next batch).
const BATCH_COMMANDS_MAX: usize = 1024;

/// Pending answer bytes past which they are written before the batch goes on.
const OUT_FLUSH_BYTES: usize = 1 << 20;

/// Bytes asked of the socket per read (at least).
const READ_BYTES: usize = 16 * 1024;

/// Serves one connection until the client leaves, `QUIT`s, is idle too long, sends a malformed
/// command, or the listener stops.
pub(super) async fn serve<E, S>(mut stream: S, addr: SocketAddr, shared: &Shared<E>)
where
    E: Engine,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let open = ::metrics::gauge!(crate::metrics::RESP_CONNECTIONS_OPEN);
    open.increment(1.0);
    shared.clients.fetch_add(1, Ordering::Relaxed);
    let mut session = Session {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        addr: addr.to_string(),
        protocol: Protocol::V2,
        bucket: shared.default_bucket.clone(),
        name: None,
        lib: (None, None),
        secret: None,
        quit: false,
    };
    if let Err(e) = run(&mut stream, shared, &mut session).await {
        tracing::debug!(client = %addr, error = %e, "RESP connection ended");
    }
    let _ = stream.shutdown().await;
    shared.clients.fetch_sub(1, Ordering::Relaxed);
    open.decrement(1.0);
}

async fn run<E, S>(stream: &mut S, shared: &Shared<E>, session: &mut Session) -> std::io::Result<()>
where
    E: Engine,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut input = BytesMut::with_capacity(READ_BYTES);
    let mut out = BytesMut::new();
    let mut stopping = shared.stopping.clone();
    loop {
        let mut batch = Vec::new();
        let mut malformed = None;
        while batch.len() < BATCH_COMMANDS_MAX {
            match parse_command(&input, &shared.limits) {
                Ok(Some(parsed)) => {
                    let frame = input.split_to(parsed.consumed).freeze();
                    if !parsed.args.is_empty() {
                        batch.push(parsed.args.into_iter().map(|r| frame.slice(r)).collect());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    malformed = Some(e);
                    break;
                }
            }
        }
        if batch.is_empty() && malformed.is_none() {
            if *stopping.borrow() {
                return Ok(());
            }
            input.reserve(READ_BYTES);
            let read = tokio::select! {
                read = tokio::time::timeout(shared.idle_timeout, stream.read_buf(&mut input)) => read,
                _ = stopping.wait_for(|s| *s) => return Ok(()),
            };
            match read {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => {
                    tracing::debug!(client = %session.addr, "RESP connection idle past resp.idle_timeout_ms; closing");
                    return Ok(());
                }
            }
        }
        run_batch(stream, shared, session, batch, &mut out).await?;
        if let Some(e) = malformed {
            record("protocol", &Reply::err(""), Instant::now());
            Reply::Error(format!("ERR Protocol error: {e}")).encode(session.protocol, &mut out);
            stream.write_all(&out).await?;
            return Ok(());
        }
        stream.write_all(&out).await?;
        out.clear();
        if session.quit {
            return Ok(());
        }
    }
}

/// Runs `batch` in waves (module docs), appending the answers to `out` in order.
async fn run_batch<E, S>(
    stream: &mut S,
    shared: &Shared<E>,
    session: &mut Session,
    batch: Vec<Vec<Bytes>>,
    out: &mut BytesMut,
) -> std::io::Result<()>
where
    E: Engine,
    S: AsyncWrite + Unpin,
{
    let mut wave: Vec<(&'static str, Command)> = Vec::new();
    let mut wave_keys: HashSet<Bytes> = HashSet::new();
    for args in batch {
        let started = Instant::now();
        let (name, parsed) = commands::parse(&args);
        let name = name.unwrap_or("unknown");
        let command = match parsed {
            Ok(c) => c,
            Err(refusal) => {
                // Answered at once; its place in the order is after the wave before it.
                run_wave(shared, session, &mut wave, &mut wave_keys, out).await;
                record(name, &refusal, started);
                refusal.encode(session.protocol, out);
                continue;
            }
        };
        if command.is_connection() {
            run_wave(shared, session, &mut wave, &mut wave_keys, out).await;
            let reply = shared.connection(session, command);
            record(name, &reply, started);
            reply.encode(session.protocol, out);
            if session.quit {
                return Ok(());
            }
            continue;
        }
        let keys = command.keys();
        if keys.iter().any(|k| wave_keys.contains(*k)) {
            run_wave(shared, session, &mut wave, &mut wave_keys, out).await;
        }
        wave_keys.extend(keys.into_iter().cloned());
        wave.push((name, command));
        if out.len() > OUT_FLUSH_BYTES {
            stream.write_all(out).await?;
            out.clear();
        }
    }
    run_wave(shared, session, &mut wave, &mut wave_keys, out).await;
    Ok(())
}

/// Runs the key commands of a wave concurrently and appends their answers in order.
async fn run_wave<E: Engine>(
    shared: &Shared<E>,
    session: &Session,
    wave: &mut Vec<(&'static str, Command)>,
    wave_keys: &mut HashSet<Bytes>,
    out: &mut BytesMut,
) {
    wave_keys.clear();
    if wave.is_empty() {
        return;
    }
    let runs = wave.drain(..).map(|(name, command)| async move {
        let started = Instant::now();
        let reply = shared.keyed(session, command).await;
        record(name, &reply, started);
        reply
    });
    for reply in futures_util::future::join_all(runs).await {
        reply.encode(session.protocol, out);
    }
}

/// Per command name: its counter, its latency histogram (looked up once, as `http_series`).
type Series = (Counter, Histogram);

static SERIES: LazyLock<RwLock<std::collections::HashMap<&'static str, Series>>> =
    LazyLock::new(Default::default);

/// Counts a command, its latency and, if it failed, its error code.
fn record(name: &'static str, reply: &Reply, started: Instant) {
    let series = SERIES.read().get(name).cloned();
    let (count, latency) = series.unwrap_or_else(|| {
        let made = (
            ::metrics::counter!(crate::metrics::RESP_COMMANDS, "command" => name),
            ::metrics::histogram!(crate::metrics::RESP_DURATION, "command" => name),
        );
        SERIES.write().insert(name, made.clone());
        made
    });
    count.increment(1);
    latency.record(started.elapsed().as_secs_f64());
    if let Some(code) = reply.error_code() {
        // Codes are the listener's own (ERR, WRONGTYPE, SIBLINGS…): a bounded set of labels.
        ::metrics::counter!(crate::metrics::RESP_ERRORS, "command" => name, "code" => code.to_string())
            .increment(1);
    }
}
