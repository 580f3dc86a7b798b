//! # yeskv-client: the async Rust SDK for yeskv
//!
//! A [`Client`] talks to one or more yeskv nodes over the HTTP API (`docs`: the external contract
//! in `spec/interface.md`): [`Client::get`] / [`Client::read`], [`Client::put`],
//! [`Client::delete`], plus [`Client::status`], [`Client::ring`] and [`Client::health`].
//!
//! ## Causal contexts and siblings
//! yeskv is a Dynamo-style store: concurrent writes are all kept, as *siblings*. Every read
//! returns an opaque causal context token ([`Read::context`]); a write that sends it back
//! ([`WriteOptions::context`]) supersedes exactly the versions that read saw. A write without a
//! context (a *blind* write) supersedes nothing and becomes a sibling of whatever is there, so
//! code that updates a key should read it, merge the siblings, and write with the read's context
//! (see [`Client::put`]). A put returns the context of the new version, so a client that keeps
//! writing the same key can chain contexts without reading again.
//!
//! ## Performance
//! The client is built on hyper's pooled HTTP/1.1 client: connections are kept alive and reused
//! (up to [`ClientBuilder::pool_max_idle_per_host`] idle ones per node), `TCP_NODELAY` is set,
//! and a request costs a few small allocations (its path, its headers). [`Client`] is a cheap
//! handle (one `Arc`); clone it into every task rather than building one per task.
//!
//! ## Routing and retries
//! [`Client::with_nodes`] spreads requests round-robin over several nodes; any node coordinates
//! any key. A request that could not even connect is retried on the next node (at most
//! [`ClientBuilder::retries`] times; the request was never sent, so this is safe for writes too),
//! and a read is also retried after timeouts and "overloaded" statuses. Every attempt has its own
//! timeout ([`ClientBuilder::timeout`], 10 s by default).
//!
//! ```no_run
//! # async fn example() -> Result<(), yeskv_client::Error> {
//! use yeskv_client::{Client, ReadOptions, WriteOptions};
//!
//! let client = Client::new("http://127.0.0.1:8081")?;
//! let context = client
//!     .put("users", "ada", "v1".into(), &WriteOptions::default())
//!     .await?;
//! if let Some(read) = client.get("users", "ada", &ReadOptions::default()).await? {
//!     assert_eq!(read.values().count(), 1);
//! }
//! // Replace what we wrote, chaining the context the put returned.
//! client
//!     .put("users", "ada", "v2".into(), &WriteOptions { context: Some(context), ..Default::default() })
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod path;
mod routing;
mod types;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use error::Error;
pub use path::encode_segment;
pub use types::{ParseQuorumError, Quorum, Read, ReadOptions, Sibling, WriteOptions};

use routing::{Node, Router, Target};

/// The header that carries the causal context token, on reads and writes alike.
pub const CAUSAL_CONTEXT_HEADER: &str = "x-causal-context";

/// Default per-attempt timeout of a request, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default timeout for establishing a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default number of idle keep-alive connections kept per node. High, because a load generator
/// with hundreds of in-flight requests should never have to reconnect.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 1024;

/// Default time an idle pooled connection is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default number of retries (on the next node) of a request that failed retryably.
pub const DEFAULT_RETRIES: u32 = 2;

/// Largest response body the client accepts (a read of a key with many large siblings, base64
/// encoded, stays well below it with the server's default limits).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Pause before the first retry; doubled for each further one.
const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(10);

const CAUSAL_CONTEXT: HeaderName = HeaderName::from_static(CAUSAL_CONTEXT_HEADER);
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const APPLICATION_OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A handle to a yeskv cluster. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpClient,
    router: Router,
    timeout: Duration,
    retries: u32,
}

/// Configures a [`Client`]; start with [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    retries: u32,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            nodes: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            retries: DEFAULT_RETRIES,
        }
    }
}

impl ClientBuilder {
    /// Adds a node URL (`http://host:port`, optionally with a path prefix).
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(url.into());
        self
    }

    /// Adds several node URLs.
    pub fn nodes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Per-attempt timeout of a request, from sending it to having read the whole response
    /// (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Timeout for establishing a connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Idle keep-alive connections kept per node (default [`DEFAULT_POOL_MAX_IDLE_PER_HOST`]).
    pub fn pool_max_idle_per_host(mut self, count: usize) -> Self {
        self.pool_max_idle_per_host = count;
        self
    }

    /// How long an idle connection is kept (default [`DEFAULT_POOL_IDLE_TIMEOUT`]).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many times a failed request is retried on the next node (default
    /// [`DEFAULT_RETRIES`]; 0 turns retries off). Connection failures are retried for every
    /// request; timeouts and retryable statuses (see [`Error::is_retryable`]) only for reads,
    /// because retrying a write that may have been applied could apply it twice.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Builds the client. Fails if no node was given or a URL is not `http://host:port[/path]`.
    /// Does not connect: the first request does.
    pub fn build(self) -> Result<Client, Error> {
        let nodes = self
            .nodes
            .iter()
            .map(|url| Node::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        let router = Router::new(nodes)?;

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_idle_timeout(self.pool_idle_timeout)
            .build(connector);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                router,
                timeout: self.timeout,
                retries: self.retries,
            }),
        })
    }
}

/// Whether a failed request may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Idempotence {
    /// Reads: retry after any retryable error.
    Idempotent,
    /// Writes: retry only when the request was certainly not sent.
    NotIdempotent,
}

/// One request, independent of the node it goes to (so that it can be retried elsewhere).
struct RequestSpec<'a> {
    method: Method,
    /// Path and query, without the node's prefix.
    path_and_query: Bytes,
    context: Option<&'a str>,
    accept_json: bool,
    body: Option<Bytes>,
    idempotence: Idempotence,
}

/// A response with its body read.
struct RawResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl RawResponse {
    fn context(&self) -> Result<Option<String>, Error> {
        match self.headers.get(CAUSAL_CONTEXT) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(|text| Some(text.to_string()))
                .map_err(|_| Error::InvalidResponse("X-Causal-Context header is not ASCII".into())),
        }
    }

    fn is_json(&self) -> bool {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .get(..16)
                    .is_some_and(|start| start.eq_ignore_ascii_case("application/json"))
            })
    }

    fn into_error(self) -> Error {
        Error::from_response(
            self.status.as_u16(),
            self.status.canonical_reason(),
            &self.body,
        )
    }
}

impl Client {
    /// A client for one node, with default settings.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::builder().node(base_url).build()
    }

    /// A client that spreads requests round-robin over `urls`, with default settings.
    pub fn with_nodes(urls: Vec<String>) -> Result<Client, Error> {
        Client::builder().nodes(urls).build()
    }

    /// A builder for a client with non-default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The node URLs this client uses, in the order given.
    pub fn nodes(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner
            .router
            .nodes()
            .iter()
            .map(|node| node.url.as_str())
    }

    /// A client that sends everything to the node at `index` (in [`Client::nodes`] order), for
    /// per-node requests like [`Client::status`]. It shares this client's connection pool and
    /// settings but does not retry on other nodes. `None` if there is no such node.
    pub fn for_node(&self, index: usize) -> Option<Client> {
        let node = self.inner.router.nodes().get(index)?.clone();
        let router = Router::new(vec![node]).ok()?;
        Some(Client {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                router,
                timeout: self.inner.timeout,
                retries: self.inner.retries,
            }),
        })
    }

    /// Reads a key. `Ok(None)` when it has no live value (HTTP 404: never written, deleted, or
    /// expired). Use [`Client::read`] instead when you need the context of a deleted key.
    ///
    /// The returned [`Read`] may hold several siblings (concurrent writes, tombstones among
    /// them); see [`Read::values`] and [`Read::is_conflict`].
    pub async fn get(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        options: &ReadOptions,
    ) -> Result<Option<Read>, Error> {
        let read = self.read(bucket, key, options).await?;
        Ok(if read.siblings.is_empty() {
            None
        } else {
            Some(read)
        })
    }

    /// Reads a key, also when it has no live value: then [`Read::siblings`] is empty and
    /// [`Read::context`] is the token the server sent with its 404 (covering the tombstones it
    /// still holds; empty if none). Writing with that context keeps old tombstones from
    /// reappearing as siblings of the new value: the right call for read-modify-write.
    pub async fn read(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        options: &ReadOptions,
    ) -> Result<Read, Error> {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        check_names(bucket, key)?;
        let path = path::key_path(bucket, key, options.r.map(|r| ("r", r)), None);
        let response = self
            .execute(
                Target::Key { bucket, key },
                RequestSpec {
                    method: Method::GET,
                    path_and_query: Bytes::from(path),
                    context: None,
                    // Raw 200 for one version (no JSON or base64 work on either side);
                    // siblings still come as 300 JSON.
                    accept_json: false,
                    body: None,
                    idempotence: Idempotence::Idempotent,
                },
            )
            .await?;
        match response.status {
            StatusCode::OK | StatusCode::MULTIPLE_CHOICES => {
                let header_context = response.context()?;
                if response.is_json() || response.status == StatusCode::MULTIPLE_CHOICES {
                    let mut read = Read::from_json(&response.body)?;
                    if let Some(context) = header_context {
                        read.context = context;
                    }
                    Ok(read)
                } else {
                    // A server that ignored `Accept: application/json`: one raw version.
                    Ok(Read {
                        context: header_context.unwrap_or_default(),
                        siblings: vec![Sibling {
                            value: Some(response.body),
                        }],
                    })
                }
            }
            StatusCode::NOT_FOUND => Ok(Read {
                context: response.context()?.unwrap_or_default(),
                siblings: Vec::new(),
            }),
            _ => Err(response.into_error()),
        }
    }

    /// Writes `value` under a key and returns the causal context of the new version.
    ///
    /// With [`WriteOptions::context`] from an earlier read, the write supersedes exactly the
    /// versions that read saw; without one it supersedes nothing and becomes a sibling of every
    /// existing version. The returned context covers the given context plus this write, so
    /// passing it to the next put of the same key replaces this value. The server refuses a
    /// write that would exceed its sibling limit with 409 ([`Error::is_too_many_siblings`]).
    pub async fn put(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        value: Bytes,
        options: &WriteOptions,
    ) -> Result<String, Error> {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        check_names(bucket, key)?;
        let path = path::key_path(bucket, key, options.w.map(|w| ("w", w)), options.ttl_secs);
        let response = self
            .execute(
                Target::Key { bucket, key },
                RequestSpec {
                    method: Method::PUT,
                    path_and_query: Bytes::from(path),
                    context: options.context.as_deref(),
                    accept_json: false,
                    body: Some(value),
                    idempotence: Idempotence::NotIdempotent,
                },
            )
            .await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        response.context()?.ok_or_else(|| {
            Error::InvalidResponse(format!(
                "{} to a PUT without an X-Causal-Context header",
                response.status
            ))
        })
    }

    /// Deletes a key: writes a tombstone that supersedes the versions
    /// [`WriteOptions::context`] covers (`ttl_secs` is ignored). The server refuses a delete
    /// without a context (428); use [`Client::delete_latest`] to read and delete in one call.
    /// A 404 answer (nothing to delete) counts as success.
    pub async fn delete(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        options: &WriteOptions,
    ) -> Result<(), Error> {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        check_names(bucket, key)?;
        let path = path::key_path(bucket, key, options.w.map(|w| ("w", w)), None);
        let response = self
            .execute(
                Target::Key { bucket, key },
                RequestSpec {
                    method: Method::DELETE,
                    path_and_query: Bytes::from(path),
                    context: options.context.as_deref(),
                    accept_json: false,
                    body: None,
                    idempotence: Idempotence::NotIdempotent,
                },
            )
            .await?;
        if response.status.is_success() || response.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(response.into_error())
        }
    }

    /// Reads a key and deletes every version the read saw (a write concurrent with this call
    /// survives as a sibling, as it should). Returns `false`, without deleting, when the key had
    /// no live value. [`WriteOptions::context`] is ignored: the read's context is used.
    pub async fn delete_latest(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        read_options: &ReadOptions,
        write_options: &WriteOptions,
    ) -> Result<bool, Error> {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        let read = self.read(bucket, key, read_options).await?;
        if !read.is_found() {
            return Ok(false);
        }
        let options = WriteOptions {
            context: Some(read.context),
            w: write_options.w,
            ttl_secs: None,
        };
        self.delete(bucket, key, &options).await?;
        Ok(true)
    }

    /// `GET /v1/status` of the next node: its view of the cluster, as JSON.
    pub async fn status(&self) -> Result<serde_json::Value, Error> {
        self.get_json("/v1/status").await
    }

    /// `GET /v1/ring` of the next node: the partition layout, as JSON.
    pub async fn ring(&self) -> Result<serde_json::Value, Error> {
        self.get_json("/v1/ring").await
    }

    /// Whether the next node answers `GET /v1/health` with success (it is serving). `false`
    /// when it is starting, draining, or unreachable.
    pub async fn health(&self) -> bool {
        let spec = RequestSpec {
            method: Method::GET,
            path_and_query: Bytes::from_static(b"/v1/health"),
            context: None,
            accept_json: false,
            body: None,
            idempotence: Idempotence::Idempotent,
        };
        let index = self.inner.router.pick(Target::AnyNode);
        match self.attempt(index, &spec).await {
            Ok(response) => response.status.is_success(),
            Err(_) => false,
        }
    }

    async fn get_json(&self, path: &'static str) -> Result<serde_json::Value, Error> {
        let response = self
            .execute(
                Target::AnyNode,
                RequestSpec {
                    method: Method::GET,
                    path_and_query: Bytes::from_static(path.as_bytes()),
                    context: None,
                    accept_json: true,
                    body: None,
                    idempotence: Idempotence::Idempotent,
                },
            )
            .await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        serde_json::from_slice(&response.body)
            .map_err(|error| Error::InvalidResponse(format!("{path} is not JSON: {error}")))
    }

    /// Sends `spec`, retrying on the next node as [`ClientBuilder::retries`] describes. Returns
    /// the response whatever its status, except that retryable statuses of idempotent requests
    /// are retried first.
    async fn execute(
        &self,
        target: Target<'_>,
        spec: RequestSpec<'_>,
    ) -> Result<RawResponse, Error> {
        let mut index = self.inner.router.pick(target);
        let mut backoff = RETRY_BACKOFF_INITIAL;
        let mut retries_left = self.inner.retries;
        loop {
            let result = self.attempt(index, &spec).await;
            let retry = match &result {
                Err(Error::Connect(_)) => true,
                Err(error) => spec.idempotence == Idempotence::Idempotent && error.is_retryable(),
                Ok(response) => {
                    spec.idempotence == Idempotence::Idempotent
                        && matches!(response.status.as_u16(), 502..=504)
                }
            };
            if !retry || retries_left == 0 {
                return result;
            }
            retries_left -= 1;
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            index = self.inner.router.failover(index);
        }
    }

    /// One attempt of `spec` on node `index`, bounded by the client's timeout.
    async fn attempt(&self, index: usize, spec: &RequestSpec<'_>) -> Result<RawResponse, Error> {
        let node = self.inner.router.node(index);
        let mut request = Request::builder()
            .method(spec.method.clone())
            .uri(node.uri(&spec.path_and_query)?);
        if spec.accept_json {
            request = request.header(ACCEPT, APPLICATION_JSON);
        }
        if spec.body.is_some() {
            request = request.header(CONTENT_TYPE, APPLICATION_OCTET_STREAM);
        }
        if let Some(context) = spec.context {
            let value = HeaderValue::from_str(context).map_err(|_| {
                Error::InvalidArgument(
                    "causal context must be the token a read returned (visible ASCII)".into(),
                )
            })?;
            request = request.header(CAUSAL_CONTEXT, value);
        }
        let request = request
            .body(Full::new(spec.body.clone().unwrap_or_default()))
            .map_err(|error| Error::InvalidArgument(format!("cannot build request: {error}")))?;

        let exchange = async {
            let response = self
                .inner
                .http
                .request(request)
                .await
                .map_err(|error| client_error(node, &error))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        Error::InvalidResponse(format!(
                            "response body larger than {RESPONSE_BYTES_MAX} bytes"
                        ))
                    } else {
                        Error::Transport(format!(
                            "{}: reading response: {}",
                            node.url,
                            error_chain(&*error)
                        ))
                    }
                })?
                .to_bytes();
            Ok(RawResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.inner.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        }
    }
}

/// Rejects names the server could never accept, before sending anything (an empty segment
/// would even route to a different endpoint).
fn check_names(bucket: &[u8], key: &[u8]) -> Result<(), Error> {
    if bucket.is_empty() {
        return Err(Error::InvalidArgument("bucket must not be empty".into()));
    }
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    Ok(())
}

/// Maps a hyper client error to ours, with the useful part of its cause chain.
fn client_error(node: &Node, error: &hyper_util::client::legacy::Error) -> Error {
    let cause = match std::error::Error::source(error) {
        Some(source) => error_chain(source),
        None => error.to_string(),
    };
    if error.is_connect() {
        Error::Connect(format!("{}: {cause}", node.url))
    } else {
        Error::Transport(format!("{}: {cause}", node.url))
    }
}

/// `error` and its sources, joined with `: `.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates_nodes() {
        assert!(Client::builder().build().is_err());
        assert!(Client::new("ftp://x:1").is_err());
        let client =
            Client::with_nodes(vec!["http://a:1".into(), "http://b:2/".into()]).expect("valid");
        assert_eq!(
            client.nodes().collect::<Vec<_>>(),
            ["http://a:1", "http://b:2"]
        );
        let single = client.for_node(1).expect("exists");
        assert_eq!(single.nodes().collect::<Vec<_>>(), ["http://b:2"]);
        assert!(client.for_node(2).is_none());
    }

    #[tokio::test]
    async fn empty_names_are_rejected_before_sending() {
        let client = Client::new("http://127.0.0.1:9").expect("valid");
        let error = client
            .get("", "k", &ReadOptions::default())
            .await
            .expect_err("empty bucket");
        assert!(matches!(error, Error::InvalidArgument(_)));
        let error = client
            .put("b", "", Bytes::new(), &WriteOptions::default())
            .await
            .expect_err("empty key");
        assert!(matches!(error, Error::InvalidArgument(_)));
    }

    #[tokio::test]
    async fn unreachable_node_is_a_connect_error() {
        // Port 9 (discard) on loopback is closed on any sane test machine.
        let client = Client::builder()
            .node("http://127.0.0.1:9")
            .retries(1)
            .build()
            .expect("valid");
        let error = client
            .get("b", "k", &ReadOptions::default())
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, Error::Connect(_)), "{error:?}");
        assert!(error.is_retryable());
        assert!(error.to_string().contains("127.0.0.1:9"), "{error}");
        assert!(!client.health().await);
    }
}
