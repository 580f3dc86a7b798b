//! A tiny HTTP/1.1 client for the runner's own calls (cluster formation, status, the chaos
//! endpoint, health and the `Date` header): one connection per request, `Connection: close`,
//! bounded by a timeout and a response size limit. The workloads use `yeskv-client` instead;
//! this exists for the calls that client does not make and for exact statuses and headers.
//!
//! With `--secure` ([`set_secure`]), every call goes over TLS (checked against the run's CA)
//! and carries the run's admin key.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response accepted (status and ring documents are a few KiB).
const RESPONSE_BYTES_MAX: u64 = 4 << 20;

/// How a `--secure` run reaches its nodes.
#[derive(Clone)]
pub struct Secure {
    /// The run's cluster CA certificate (for `yeskv-client` too).
    pub ca: std::path::PathBuf,
    /// The admin key every call carries.
    pub key: String,
    tls: tokio_rustls::TlsConnector,
}

static SECURE: std::sync::OnceLock<Secure> = std::sync::OnceLock::new();

/// Makes every later call TLS with `key` (once, before the nodes start).
pub fn set_secure(ca: std::path::PathBuf, key: String) -> anyhow::Result<()> {
    let config = yeskv_client::client_config(Some(&ca))?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    SECURE
        .set(Secure { ca, key, tls })
        .map_err(|_| anyhow!("set_secure called twice"))
}

/// The run's security, if `--secure`.
pub fn secure() -> Option<&'static Secure> {
    SECURE.get()
}

/// A stream to a node: plain TCP, or TLS in a `--secure` run.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Opens a stream to `addr` (`IP:PORT`); the TLS handshake, if any, is part of it.
async fn connect(addr: &str) -> std::io::Result<Box<dyn Stream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let Some(secure) = secure() else {
        return Ok(Box::new(tcp));
    };
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    Ok(Box::new(secure.tls.connect(name, tcp).await?))
}

/// The headers of every call: JSON, and the admin key in a `--secure` run.
fn headers<'a>(extra: &[(&'a str, &'a str)], bearer: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ];
    if !bearer.is_empty() {
        all.push(("Authorization", bearer));
    }
    all.extend_from_slice(extra);
    all
}

/// `Bearer KEY` in a `--secure` run, else empty.
fn bearer() -> String {
    secure().map_or(String::new(), |s| format!("Bearer {}", s.key))
}

/// One response (the shared HTTP/1.1 reader of `yeskv-client`).
pub use yeskv_client::http1::Http1Response as Response;

/// A response's body as JSON.
pub trait JsonBody {
    /// The body as JSON, or why it is not.
    fn json(&self) -> anyhow::Result<serde_json::Value>;
}

impl JsonBody for Response {
    fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "body is not JSON: {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }
}

/// Sends one request to `addr` (`HOST:PORT`) and reads the whole answer within `timeout`.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Response> {
    let answer = exchange(addr, method, path, &[], body, timeout, timeout);
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no answer within {timeout:?}"))?
        .map_err(|e| anyhow!("{method} {path} on {addr}: {e}"))
}

/// Why an [`exchange`] has no answer.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made: nothing was sent.
    NotSent(String),
    /// Sent (or possibly sent), no complete answer: timed out, connection broken, unreadable.
    Indeterminate(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotSent(e) => write!(f, "not sent: {e}"),
            Failure::Indeterminate(e) => write!(f, "no answer: {e}"),
        }
    }
}

/// One request with extra `headers` (for the workload's data-type calls, which `yeskv-client`
/// does not make), telling a request never sent (the connection failed within
/// `connect_timeout`) from one without an answer within `timeout`.
pub async fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Response, Failure> {
    let stream = tokio::time::timeout(connect_timeout, connect(addr))
        .await
        .map_err(|_| Failure::NotSent(format!("connecting to {addr}: timed out")))?
        .map_err(|e| Failure::NotSent(format!("connecting to {addr}: {e}")))?;
    let bearer = bearer();
    let all_headers = self::headers(headers, &bearer);
    let request = yeskv_client::http1::request_bytes(method, path, addr, &all_headers, body);
    let exchange = async move {
        let mut stream = stream;
        stream.write_all(&request).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(RESPONSE_BYTES_MAX)
            .read_to_end(&mut raw)
            .await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Failure::Indeterminate(format!("{method} {path}: timed out")))?
        .map_err(|e| Failure::Indeterminate(format!("{method} {path}: {e}")))?;
    Response::parse(&raw).map_err(|e| Failure::Indeterminate(format!("{method} {path}: {e}")))
}
