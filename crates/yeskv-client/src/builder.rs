//! [`ClientBuilder`]: every setting of a [`Client`] with its default, and the assembly of the
//! client from them (the HTTP connection pool and the [`Router`]).
//!
//! The defaults are public constants so that applications and the docs can name them; the
//! builder checks what it can before anything connects (node URLs, a positive ring refresh
//! interval), so a misconfigured client fails at `build`, not at its first request.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::routing::{Node, ReadRouting, Router, RoutingConfig};
use crate::{Client, Error};

/// Default interval after which a ring-aware client in use fetches `/v1/ring` again.
pub const DEFAULT_RING_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Default time a node that refused a connection is skipped by routing before it is tried again.
pub const DEFAULT_NODE_COOLDOWN: Duration = Duration::from_secs(2);

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

/// Configures a [`Client`]; start with [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    nodes: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    retries: u32,
    ring_aware: bool,
    read_routing: ReadRouting,
    ring_refresh_interval: Duration,
    node_cooldown: Duration,
    region: Option<String>,
    ca_file: Option<std::path::PathBuf>,
    api_key: Option<Redacted>,
}

/// An API key that `Debug` does not print.
#[derive(Clone)]
struct Redacted(String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            nodes: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_file: None,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            retries: DEFAULT_RETRIES,
            ring_aware: true,
            read_routing: ReadRouting::default(),
            ring_refresh_interval: DEFAULT_RING_REFRESH_INTERVAL,
            node_cooldown: DEFAULT_NODE_COOLDOWN,
            region: None,
            api_key: None,
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

    /// The CA that signed the nodes' certificates (PEM), for `https://` nodes: the cluster CA of
    /// `yeskv cert init`. An `https://` node without it is refused when the client is built.
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
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

    /// Whether key requests are routed by the cluster's ring (default `true`; see the crate
    /// docs). The given URLs are then *seeds*: the ring is fetched from one of them and names
    /// the nodes requests go to. `false`: requests go round-robin over the given URLs only.
    pub fn ring_aware(mut self, enabled: bool) -> Self {
        self.ring_aware = enabled;
        self
    }

    /// Which node of a key's preference list a read goes to (default [`ReadRouting::Primary`]);
    /// writes always go to the first live one. Only for ring-aware clients.
    pub fn read_routing(mut self, routing: ReadRouting) -> Self {
        self.read_routing = routing;
        self
    }

    /// The client's region (a cluster with replicas per region): a key request goes to the
    /// key's nodes in that region first, so its `local_quorum` is this region's; the others
    /// only while none of them is reachable. Only for ring-aware clients.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// How old the cached ring may get before a request triggers a background refresh (default
    /// [`DEFAULT_RING_REFRESH_INTERVAL`]; must be positive). Layout changes the nodes announce
    /// are picked up sooner, from the [`LAYOUT_VERSION_HEADER`] of their responses.
    ///
    /// [`LAYOUT_VERSION_HEADER`]: crate::LAYOUT_VERSION_HEADER
    pub fn ring_refresh_interval(mut self, interval: Duration) -> Self {
        self.ring_refresh_interval = interval;
        self
    }

    /// How long a node that refused a connection is skipped by routing before it is tried
    /// again (default [`DEFAULT_NODE_COOLDOWN`]; zero: never skipped).
    pub fn node_cooldown(mut self, cooldown: Duration) -> Self {
        self.node_cooldown = cooldown;
        self
    }

    /// Sends `Authorization: Bearer KEY` with every request (nodes started with keys
    /// required; `docs/security.md`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Redacted(key.into()));
        self
    }

    /// Builds the client. Fails if no node was given, a URL is not `http://host:port[/path]`
    /// or `https://host:port[/path]`, an `https://` node has no CA (or the CA file does not
    /// load), or the ring refresh interval is zero. Does not connect: the first request does (and, for
    /// a ring-aware client, the first key request fetches the ring first).
    pub fn build(self) -> Result<Client, Error> {
        let authorization = match &self.api_key {
            None => None,
            Some(Redacted(key)) => {
                let mut value = hyper::header::HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| {
                        Error::InvalidArgument("an API key is visible ASCII without spaces".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let nodes = self
            .nodes
            .iter()
            .map(|url| Node::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        if self.ca_file.is_none() {
            if let Some(node) = nodes.iter().find(|node| node.is_https()) {
                return Err(Error::InvalidArgument(format!(
                    "{} is https:// but no CA was given to check its certificate (--ca FILE or \
                     YESKV_CA)",
                    node.url
                )));
            }
        }
        if self.ring_refresh_interval.is_zero() {
            return Err(Error::InvalidArgument(
                "the ring refresh interval must be positive".into(),
            ));
        }
        let router = Router::new(
            nodes,
            RoutingConfig {
                ring_aware: self.ring_aware,
                read_routing: self.read_routing,
                node_cooldown: self.node_cooldown,
                ring_refresh_interval: self.ring_refresh_interval,
                region: self.region.map(Arc::from),
            },
        )?;

        let connector = crate::tls::connector(self.ca_file.as_deref(), self.connect_timeout)?;
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_idle_timeout(self.pool_idle_timeout)
            .build(connector);
        Ok(Client::from_parts(
            http,
            router,
            self.timeout,
            self.retries,
            authorization,
        ))
    }
}
