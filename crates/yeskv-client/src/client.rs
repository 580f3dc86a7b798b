//! [`Client`]: sending requests to a yeskv cluster and making sense of the answers.
//!
//! This module owns the request path: a key request (get, read, put, delete) or a node-level
//! one (status, ring, health) becomes a [`RequestSpec`], which [`Client::execute`] sends to the
//! node the [`Router`] picks, retrying on the next node as the crate docs describe; each attempt
//! is bounded by the client's timeout and reads the whole response. It also runs the ring
//! refreshes of a ring-aware client (at most one at a time, in the background, recorded by a
//! drop guard so that a cancelled refresh still frees its slot). *Which* node a request goes to,
//! and *when* a refresh is due, is [`crate::routing`]'s decision; the settings come from
//! [`ClientBuilder`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::watch;

use crate::path;
use crate::routing::{Access, Node, RefreshOutcome, Route, Router, RoutingConfig, Target};
use crate::{ClientBuilder, Error, Read, ReadOptions, Ring, Sibling, WriteOptions};

/// The header that carries the causal context token, on reads and writes alike.
pub const CAUSAL_CONTEXT_HEADER: &str = "x-causal-context";

/// The response header in which a node announces the version of its ring layout; a ring-aware
/// client fetches `/v1/ring` again when it exceeds the cached ring's version.
pub const LAYOUT_VERSION_HEADER: &str = "x-yeskv-layout-version";

/// Largest response body the client accepts (a read of a key with many large siblings, base64
/// encoded, stays well below it with the server's default limits).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Pause before the first retry; doubled for each further one.
const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(10);

/// How many times [`Client::refresh_ring`] waits for a refresh someone else started before
/// giving up on running its own.
const REFRESH_RING_TRIES_MAX: usize = 3;

const CAUSAL_CONTEXT: HeaderName = HeaderName::from_static(CAUSAL_CONTEXT_HEADER);
const LAYOUT_VERSION: HeaderName = HeaderName::from_static(LAYOUT_VERSION_HEADER);
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const APPLICATION_OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// The pooled hyper client every request goes through (HTTP, and HTTPS with a CA given).
pub(crate) type HttpClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A handle to a yeskv cluster. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What clones of a [`Client`] share.
#[derive(Debug)]
struct Inner {
    http: HttpClient,
    router: Router,
    timeout: Duration,
    retries: u32,
    /// Counts ended ring refreshes (the first key requests wait for the first one to end).
    refreshes_ended: watch::Sender<u64>,
    /// Why the last ring refresh failed; `None` after one succeeded.
    ring_error: Mutex<Option<Error>>,
    /// `Bearer KEY`, sent with every request when the client has an API key.
    authorization: Option<HeaderValue>,
}

impl Inner {
    fn new(
        http: HttpClient,
        router: Router,
        timeout: Duration,
        retries: u32,
        authorization: Option<HeaderValue>,
    ) -> Inner {
        Inner {
            http,
            router,
            timeout,
            retries,
            refreshes_ended: watch::Sender::new(0),
            ring_error: Mutex::new(None),
            authorization,
        }
    }
}

/// Whether a failed request may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Reads: retry after any retryable error.
    Idempotent,
    /// Writes: retry only when the request was certainly not sent.
    NotIdempotent,
}

/// One request, independent of the node it goes to (so that it can be retried elsewhere).
pub(crate) struct RequestSpec<'a> {
    pub(crate) method: Method,
    /// Path and query, without the node's prefix.
    pub(crate) path_and_query: Bytes,
    pub(crate) context: Option<&'a str>,
    pub(crate) accept_json: bool,
    pub(crate) body: Option<Bytes>,
    /// The body is JSON (`Content-Type: application/json`), not opaque bytes.
    pub(crate) json_body: bool,
    pub(crate) idempotence: Idempotence,
    /// This request's per-attempt timeout, when it is not the client's (a request the server
    /// may take long to answer).
    pub(crate) timeout: Option<Duration>,
}

/// A response with its body read.
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl RawResponse {
    pub(crate) fn context(&self) -> Result<Option<String>, Error> {
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

    /// The layout version the node announced, if it did (older servers do not).
    fn layout_version(&self) -> Option<u64> {
        self.headers
            .get(LAYOUT_VERSION)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub(crate) fn into_error(self) -> Error {
        Error::from_response(
            self.status.as_u16(),
            self.status.canonical_reason(),
            &self.body,
        )
    }
}

impl Client {
    /// A client over `http` (its connection pool) and `router`: what [`ClientBuilder::build`]
    /// assembles, and [`Client::for_node`] from a client's parts.
    pub(crate) fn from_parts(
        http: HttpClient,
        router: Router,
        timeout: Duration,
        retries: u32,
        authorization: Option<HeaderValue>,
    ) -> Client {
        Client {
            inner: Arc::new(Inner::new(http, router, timeout, retries, authorization)),
        }
    }

    /// A client that sends every request to one node (which coordinates every key: the client
    /// is not ring-aware), with default settings otherwise. For a ring-aware client with one
    /// seed, use `Client::builder().node(url).build()`.
    pub fn new(base_url: &str) -> Result<Client, Error> {
        Client::builder().node(base_url).ring_aware(false).build()
    }

    /// A ring-aware client with `urls` as seeds, with default settings: key requests go to the
    /// key's preference list once the ring is known, and round-robin over `urls` when the
    /// server publishes no usable ring.
    pub fn with_nodes(urls: Vec<String>) -> Result<Client, Error> {
        Client::builder().nodes(urls).build()
    }

    /// A builder for a client with non-default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The node URLs this client was given (its seeds, for a ring-aware client), in the order
    /// given. See [`Client::known_nodes`] for the nodes requests may go to.
    pub fn nodes(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner
            .router
            .seeds()
            .iter()
            .map(|state| state.node.url.as_str())
    }

    /// The node URLs requests may go to now: with a cached ring its nodes (in ring order), then
    /// the seeds it does not name; otherwise the seeds.
    pub fn known_nodes(&self) -> Vec<String> {
        self.inner.router.known_urls()
    }

    /// A client that sends everything to the node at `index` (in [`Client::nodes`] order), for
    /// per-node requests like [`Client::status`]. It shares this client's connection pool and
    /// settings but is not ring-aware and does not retry on other nodes. `None` if there is no
    /// such node.
    pub fn for_node(&self, index: usize) -> Option<Client> {
        let seed = self.inner.router.seeds().get(index)?.clone();
        let config = RoutingConfig {
            ring_aware: false,
            ..self.inner.router.config().clone()
        };
        let router = Router::with_states(vec![seed], config).ok()?;
        Some(Client::from_parts(
            self.inner.http.clone(),
            router,
            self.inner.timeout,
            self.inner.retries,
            self.inner.authorization.clone(),
        ))
    }

    /// The per-attempt timeout of a request ([`ClientBuilder::timeout`]).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The version of the cached ring; `None` before it was fetched, when the server has no
    /// usable ring, and for a client that is not ring-aware.
    pub fn ring_version(&self) -> Option<u64> {
        self.inner.router.ring_version()
    }

    /// The cached ring, if there is one (see [`Client::ring_version`]).
    pub fn cached_ring(&self) -> Option<Arc<Ring>> {
        self.inner.router.ring()
    }

    /// Why the last ring fetch failed: a refused connection, a server without `/v1/ring` (an
    /// [`Error::Http`] 404), a layout the client cannot use ([`Error::InvalidResponse`]
    /// `unusable ring layout: ...`, e.g. a key hash function it does not implement)...; `None`
    /// once one succeeded. For diagnostics: the client routes round-robin while it has no
    /// usable ring.
    pub fn ring_error(&self) -> Option<Error> {
        self.inner
            .ring_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The URL of the node a write of `bucket`/`key` would go to now (a read too, with
    /// [`ReadRouting::Primary`]), for tests and diagnostics. Does not fetch the ring and does not
    /// move the round-robin position.
    ///
    /// [`ReadRouting::Primary`]: crate::ReadRouting::Primary
    pub fn route(&self, bucket: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> String {
        let target = Target::Key {
            bucket: bucket.as_ref(),
            key: key.as_ref(),
            access: Access::Write,
        };
        self.inner.router.peek(target, Instant::now())
    }

    /// Fetches the ring now and returns the version then cached. If a refresh is already
    /// running, waits for it to end and then runs another. Fails with the reason when no ring
    /// could be fetched (the previous one, if any, stays cached), and with
    /// [`Error::InvalidArgument`] for a client that is not ring-aware.
    pub async fn refresh_ring(&self) -> Result<u64, Error> {
        if !self.inner.router.config().ring_aware {
            return Err(Error::InvalidArgument(
                "this client is not ring-aware".into(),
            ));
        }
        let mut ended = self.inner.refreshes_ended.subscribe();
        for _ in 0..REFRESH_RING_TRIES_MAX {
            let seen = *ended.borrow_and_update();
            match self.spawn_refresh() {
                Some(before) => {
                    // The sender lives in `self`: waiting can only end by the count growing.
                    let _ = ended.wait_for(|count| *count > before).await;
                    return match (self.ring_error(), self.ring_version()) {
                        (Some(error), _) => Err(error),
                        (None, Some(version)) => Ok(version),
                        (None, None) => Err(Error::InvalidResponse("no ring was fetched".into())),
                    };
                }
                None => {
                    let _ = ended.wait_for(|count| *count > seen).await;
                }
            }
        }
        Err(Error::InvalidResponse(
            "ring refreshes started by requests kept running; try again".into(),
        ))
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
                Target::Key {
                    bucket,
                    key,
                    access: Access::Read,
                },
                RequestSpec {
                    method: Method::GET,
                    path_and_query: Bytes::from(path),
                    context: None,
                    // Raw 200 for one version (no JSON or base64 work on either side);
                    // siblings still come as 300 JSON.
                    accept_json: false,
                    body: None,
                    idempotence: Idempotence::Idempotent,
                    json_body: false,
                    timeout: None,
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
    /// passing it to the next put of the same key replaces this value. A key never refuses a
    /// write for its number of siblings (the server flags one over its limit with the
    /// `X-Yeskv-Siblings` header); [`Client::update`] reads, merges and writes back in one call.
    /// A bucket with a `datatype` refuses plain writes with 409 ([`Error::is_conflict`]).
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
                Target::Key {
                    bucket,
                    key,
                    access: Access::Write,
                },
                RequestSpec {
                    method: Method::PUT,
                    path_and_query: Bytes::from(path),
                    context: options.context.as_deref(),
                    accept_json: false,
                    body: Some(value),
                    idempotence: Idempotence::NotIdempotent,
                    json_body: false,
                    timeout: None,
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
                Target::Key {
                    bucket,
                    key,
                    access: Access::Write,
                },
                RequestSpec {
                    method: Method::DELETE,
                    path_and_query: Bytes::from(path),
                    context: options.context.as_deref(),
                    accept_json: false,
                    body: None,
                    idempotence: Idempotence::NotIdempotent,
                    json_body: false,
                    timeout: None,
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

    /// Writes `value` under a key that expires `ttl_secs` seconds after the write (a session):
    /// a blind write (no context) with [`WriteOptions::ttl_secs`] set, otherwise as
    /// [`Client::put`]. Returns the context of the new version. To keep a session alive without
    /// rewriting it, [`Client::touch`] it; in a bucket with `ttl_sliding` every read does that.
    pub async fn put_with_ttl(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        value: Bytes,
        ttl_secs: u64,
    ) -> Result<String, Error> {
        if ttl_secs == 0 {
            return Err(Error::InvalidArgument(
                "a TTL must be at least one second".into(),
            ));
        }
        let options = WriteOptions {
            ttl_secs: Some(ttl_secs),
            ..WriteOptions::default()
        };
        self.put(bucket, key, value, &options).await
    }

    /// Extends a key's expiry without rewriting its value (`POST /v1/kv/{bucket}/{key}?touch`):
    /// to `ttl_secs` seconds from now, or with `None` by the bucket's `ttl_secs` (the server
    /// refuses with 400 a bucket that has none). Returns `false` when the key has no live value
    /// (never written, deleted or already expired: a session that is gone stays gone).
    ///
    /// A touch sets an expiry and carries no value, so it is retried like a read.
    pub async fn touch(
        &self,
        bucket: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
        ttl_secs: Option<u64>,
    ) -> Result<bool, Error> {
        let (bucket, key) = (bucket.as_ref(), key.as_ref());
        check_names(bucket, key)?;
        if ttl_secs == Some(0) {
            return Err(Error::InvalidArgument(
                "a TTL must be at least one second".into(),
            ));
        }
        let path = path::touch_path(bucket, key, None, ttl_secs);
        let response = self
            .execute(
                Target::Key {
                    bucket,
                    key,
                    access: Access::Write,
                },
                RequestSpec {
                    method: Method::POST,
                    path_and_query: Bytes::from(path),
                    context: None,
                    accept_json: false,
                    body: None,
                    json_body: false,
                    idempotence: Idempotence::Idempotent,
                    timeout: None,
                },
            )
            .await?;
        match response.status {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(response.into_error()),
        }
    }

    /// `GET /v1/status` of the next node: its view of the cluster, as JSON.
    pub async fn status(&self) -> Result<serde_json::Value, Error> {
        self.get_json("/v1/status").await
    }

    /// `GET /v1/ring` of the next node: the partition layout, as JSON. (The parsed layout a
    /// ring-aware client routes by is [`Client::cached_ring`].)
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
            json_body: false,
            timeout: None,
        };
        let route = self.inner.router.route(Target::AnyNode, Instant::now());
        match self.attempt(&route.node().node, &spec).await {
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
                    json_body: false,
                    timeout: None,
                },
            )
            .await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        serde_json::from_slice(&response.body)
            .map_err(|error| Error::InvalidResponse(format!("{path} is not JSON: {error}")))
    }

    /// Sends `spec`, retrying on the next node as [`ClientBuilder::retries`] describes (and, for
    /// a ring-routed request, moving down the preference list past refused connections without
    /// counting retries). Returns the response whatever its status, except that retryable
    /// statuses of idempotent requests are retried first.
    pub(crate) async fn execute(
        &self,
        target: Target<'_>,
        spec: RequestSpec<'_>,
    ) -> Result<RawResponse, Error> {
        if matches!(target, Target::Key { .. }) && self.inner.router.config().ring_aware {
            self.prepare_ring().await;
        }
        let router = &self.inner.router;
        let mut route = router.route(target, Instant::now());
        let mut backoff = RETRY_BACKOFF_INITIAL;
        let mut retries_left = self.inner.retries;
        let mut free_failovers_left = if route.is_ring_routed() {
            route.node_count().saturating_sub(1)
        } else {
            0
        };
        loop {
            let result = self.attempt(&route.node().node, &spec).await;
            self.observe(&route, &result);
            if matches!(result, Err(Error::Connect(_)))
                && free_failovers_left > 0
                && router.failover_untried(&mut route, Instant::now())
            {
                free_failovers_left -= 1;
                continue;
            }
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
            router.failover(&mut route, Instant::now());
        }
    }

    /// Before a key request of a ring-aware client: the first one starts fetching the ring and
    /// waits for that to end (at most one request timeout: then it goes round-robin); later
    /// ones only start a background refresh when one is due.
    async fn prepare_ring(&self) {
        let router = &self.inner.router;
        if router.bootstrapped() {
            if router.refresh_due(Instant::now()) {
                self.spawn_refresh();
            }
            return;
        }
        let mut ended = self.inner.refreshes_ended.subscribe();
        self.spawn_refresh();
        // Ends early only if the sender is gone, which it cannot be while `self` lives.
        let _ = tokio::time::timeout(self.inner.timeout, ended.wait_for(|count| *count > 0)).await;
    }

    /// Learns from one attempt: failure marks, the failure streak, announced layout versions;
    /// starts a ring refresh when that makes one due.
    fn observe(&self, route: &Route, result: &Result<RawResponse, Error>) {
        let router = &self.inner.router;
        let now = Instant::now();
        match result {
            Ok(response) => {
                route.node().mark_alive();
                router.note_success();
                if let Some(version) = response.layout_version() {
                    router.note_layout_version(version);
                }
            }
            Err(Error::Connect(_)) => {
                route.node().mark_failed(now, router.config().node_cooldown);
                router.note_failure();
            }
            Err(Error::Timeout | Error::Transport(_)) => router.note_failure(),
            Err(_) => {}
        }
        if router.refresh_due(now) {
            self.spawn_refresh();
        }
    }

    /// Starts a ring refresh in the background unless one is running (then `None`). Returns how
    /// many refreshes had ended before it: its own end makes the count one more.
    fn spawn_refresh(&self) -> Option<u64> {
        if !self.inner.router.try_begin_refresh() {
            return None;
        }
        // Every earlier refresh counted its end before freeing the slot we now hold.
        let ended_before = *self.inner.refreshes_ended.borrow();
        let client = self.clone();
        tokio::spawn(async move {
            // Records the outcome and frees the slot even if the task is dropped mid-fetch.
            let mut guard = RefreshGuard {
                client: &client,
                outcome: RefreshOutcome::Failed,
            };
            guard.outcome = client.update_ring().await;
        });
        Some(ended_before)
    }

    /// One refresh: asks a few nodes (best first) for the ring until one answers with a layout
    /// at least as new as every announced version, and installs the newest answer.
    async fn update_ring(&self) -> RefreshOutcome {
        let router = &self.inner.router;
        let announced = router.announced_version();
        let mut newest: Option<(Ring, Node)> = None;
        let mut error = None;
        let mut unusable = None;
        for source in router.refresh_sources(Instant::now()) {
            match self.fetch_ring(&source.node).await {
                Ok(Ok(ring)) => {
                    source.mark_alive();
                    let version = ring.version();
                    if newest
                        .as_ref()
                        .is_none_or(|(kept, _)| version > kept.version())
                    {
                        newest = Some((ring, source.node.clone()));
                    }
                    if version >= announced {
                        break;
                    }
                }
                Ok(Err(layout_error)) => {
                    if unusable.is_none() {
                        unusable = Some(layout_error.clone());
                    }
                    error = Some(layout_error);
                }
                Err(failure) => {
                    if matches!(failure, Error::Connect(_)) {
                        source.mark_failed(Instant::now(), router.config().node_cooldown);
                    }
                    error = Some(failure);
                }
            }
        }
        let (outcome, error) = match newest {
            Some((ring, source)) => match router.install_ring(ring, &source) {
                Ok(version) if version >= announced => (RefreshOutcome::Current, None),
                Ok(_) => (RefreshOutcome::Behind, None),
                Err(failure) => {
                    router.drop_ring();
                    (RefreshOutcome::Failed, Some(failure))
                }
            },
            None => {
                // A layout we cannot use must not route: forget any older one too. Unreachable
                // nodes, though, leave the cached ring in place (stale beats none).
                if unusable.is_some() {
                    router.drop_ring();
                }
                (RefreshOutcome::Failed, unusable.or(error))
            }
        };
        *self
            .inner
            .ring_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
        outcome
    }

    /// `GET /v1/ring` of `node`, parsed and validated. The outer error: no successful answer;
    /// the inner one: an answer that is not a layout this client can use.
    async fn fetch_ring(&self, node: &Node) -> Result<Result<Ring, Error>, Error> {
        let spec = RequestSpec {
            method: Method::GET,
            path_and_query: Bytes::from_static(b"/v1/ring"),
            context: None,
            accept_json: true,
            body: None,
            idempotence: Idempotence::Idempotent,
            json_body: false,
            timeout: None,
        };
        let response = self.attempt(node, &spec).await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        Ok(
            Ring::from_json(&response.body).map_err(|error| match error {
                Error::InvalidResponse(reason) => {
                    Error::InvalidResponse(format!("{}/v1/ring: {reason}", node.url))
                }
                other => other,
            }),
        )
    }

    /// One attempt of `spec` on `node`, bounded by the client's timeout.
    async fn attempt(&self, node: &Node, spec: &RequestSpec<'_>) -> Result<RawResponse, Error> {
        let mut request = Request::builder()
            .method(spec.method.clone())
            .uri(node.uri(&spec.path_and_query)?);
        if spec.accept_json {
            request = request.header(ACCEPT, APPLICATION_JSON);
        }
        if let Some(authorization) = &self.inner.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization.clone());
        }
        if spec.body.is_some() {
            let content_type = if spec.json_body {
                APPLICATION_JSON
            } else {
                APPLICATION_OCTET_STREAM
            };
            request = request.header(CONTENT_TYPE, content_type);
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
        let timeout = spec.timeout.unwrap_or(self.inner.timeout);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        }
    }
}

/// Holds the single ring-refresh slot of a client; on drop (the refresh ended, or its task was
/// dropped) records the outcome, counts the end, then frees the slot, in that order so that
/// whoever claims the slot next sees every earlier end counted.
struct RefreshGuard<'a> {
    client: &'a Client,
    outcome: RefreshOutcome,
}

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        let inner = &self.client.inner;
        inner.router.record_refresh(Instant::now(), self.outcome);
        inner.refreshes_ended.send_modify(|count| *count += 1);
        inner.router.end_refresh();
    }
}

/// Rejects names the server could never accept, before sending anything (an empty segment
/// would even route to a different endpoint).
pub(crate) fn check_names(bucket: &[u8], key: &[u8]) -> Result<(), Error> {
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
