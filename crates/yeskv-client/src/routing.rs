//! Which node a request goes to.
//!
//! Any yeskv node coordinates any key: it forwards to the key's replicas. So routing never
//! decides *whether* a request succeeds, only how many hops it takes and how load spreads.
//!
//! ## Ring-aware routing (the default for [`crate::ClientBuilder`])
//! The router keeps a *view*: the nodes it knows and, once fetched, the [`Ring`] from
//! `GET /v1/ring`. A key request goes straight to a node of the key's preference list (Dynamo
//! §4.5, "partition-aware client library": one hop fewer than going through a load balancer):
//! - a write to the first entry that is not marked failed, then the next, then any node;
//! - a read likewise with [`ReadRouting::Primary`], or rotating over the live primaries (the
//!   first `n` entries) with [`ReadRouting::Spread`].
//!
//! A node that refuses a connection is marked failed for a cool-down
//! (`ClientBuilder::node_cooldown`) and skipped while it lasts; after it the node is tried again.
//! Node-level requests (status, health) and every request of a client without a usable ring go
//! round-robin over the known nodes (the ring's nodes, or the seed URLs the client was given).
//! The seeds the ring does not name stay in the view as a last resort, after all ring nodes.
//!
//! The view is immutable and swapped whole (`Arc`): a request routes on the view it started
//! with, and a refresh never blocks one. Failure marks live in shared per-URL node state, so they
//! survive a view swap.
//!
//! ## Refresh bookkeeping
//! The router also decides *when* the ring should be fetched again ([`Router::refresh_due`]):
//! when a response announced a newer layout version (`X-Yeskv-Layout-Version`), when the last
//! attempt is older than the refresh interval, or after [`RING_REFRESH_AFTER_FAILURES`]
//! consecutive failed attempts. At most one refresh runs at a time
//! ([`Router::try_begin_refresh`]); the client does the fetching (`client.rs`). Time comes in as
//! an argument, so all of this is tested without waiting.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::http::uri::{Authority, Parts, PathAndQuery, Scheme};
use hyper::Uri;

use crate::ring::{Ring, RingNode, UNUSABLE_RING};
use crate::Error;

/// Pause after a ring refresh that failed, or that found an older layout than a node had
/// announced, before the next try.
pub(crate) const RING_REFRESH_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Consecutive failed attempts (refused connections, timeouts, broken connections) after which
/// the ring is fetched again: the layout may have changed under the client.
pub(crate) const RING_REFRESH_AFTER_FAILURES: u32 = 3;

/// Most nodes one refresh asks for the ring before giving up until the next trigger.
pub(crate) const RING_REFRESH_SOURCES_MAX: usize = 4;

/// One node's HTTP endpoint, parsed once.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// The URL as given, without a trailing `/` (for messages).
    pub(crate) url: String,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix (for a node behind a path-routing proxy), without a trailing `/`; usually empty.
    path_prefix: String,
}

impl Node {
    /// Parses `http://host:port[/prefix]` or `https://host:port[/prefix]`.
    pub(crate) fn parse(url: &str) -> Result<Node, Error> {
        let trimmed = url.trim();
        let uri: Uri = trimmed
            .parse()
            .map_err(|error| Error::InvalidUrl(format!("{trimmed:?}: {error}")))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            Error::InvalidUrl(format!(
                "{trimmed:?}: missing scheme, expected http://host:port or https://host:port"
            ))
        })?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(Error::InvalidUrl(format!(
                "{trimmed:?}: only http:// and https:// are supported"
            )));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| Error::InvalidUrl(format!("{trimmed:?}: missing host")))?;
        if uri.query().is_some() {
            return Err(Error::InvalidUrl(format!(
                "{trimmed:?}: a node URL may not have a query"
            )));
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Node {
            url: trimmed.trim_end_matches('/').to_string(),
            scheme,
            authority,
            path_prefix,
        })
    }

    /// Whether the node is reached over HTTPS.
    pub(crate) fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The node a ring entry names. An entry without a scheme (nodes publish `host:port`) is
    /// reached with the scheme of `source`, the node that served the ring: a cluster serves
    /// HTTPS on every node or on none. A node that advertises an unspecified address
    /// (`0.0.0.0`, `[::]`: it listens on every interface) is reached at the host of `source`,
    /// on its advertised port.
    fn from_ring(entry: &RingNode, source: &Node) -> Result<Node, Error> {
        let http = entry.http.trim();
        let url = if http.contains("://") {
            http.to_string()
        } else {
            format!("{}://{http}", source.scheme)
        };
        let node = Node::parse(&url).map_err(|error| {
            Error::InvalidResponse(format!(
                "{UNUSABLE_RING}: node {:?} has an unusable http address {:?}: {error}",
                entry.id, entry.http
            ))
        })?;
        let host = node.authority.host();
        let unspecified = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if !unspecified {
            return Ok(node);
        }
        let port = node
            .authority
            .port_u16()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        Node::parse(&format!(
            "{}://{}{port}{}",
            node.scheme,
            source.authority.host(),
            node.path_prefix
        ))
    }

    /// The full URI of `path_and_query` (which starts with `/`) on this node.
    pub(crate) fn uri(&self, path_and_query: &Bytes) -> Result<Uri, Error> {
        let path_and_query = if self.path_prefix.is_empty() {
            PathAndQuery::from_maybe_shared(path_and_query.clone())
        } else {
            let mut joined = Vec::with_capacity(self.path_prefix.len() + path_and_query.len());
            joined.extend_from_slice(self.path_prefix.as_bytes());
            joined.extend_from_slice(path_and_query);
            PathAndQuery::from_maybe_shared(Bytes::from(joined))
        }
        .map_err(|error| Error::InvalidArgument(format!("bad request path: {error}")))?;
        let mut parts = Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|error| Error::InvalidUrl(format!("{}: {error}", self.url)))
    }
}

/// Milliseconds from a process-wide epoch to `now` (for lock-free deadlines in atomics).
fn millis(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A node and whether it is cooling down after a refused connection. Shared (`Arc`) by every
/// view and every `for_node` client that uses the same URL.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) node: Node,
    /// Until when (see [`millis`]) the node counts as failed; 0: it does not.
    failed_until_ms: AtomicU64,
}

impl NodeState {
    pub(crate) fn new(node: Node) -> Arc<NodeState> {
        Arc::new(NodeState {
            node,
            failed_until_ms: AtomicU64::new(0),
        })
    }

    fn is_failed(&self, now_ms: u64) -> bool {
        let until = self.failed_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// Marks the node failed for `cooldown` from `now`.
    pub(crate) fn mark_failed(&self, now: Instant, cooldown: Duration) {
        let until = millis(now).saturating_add(duration_millis(cooldown)).max(1);
        self.failed_until_ms.store(until, Ordering::Relaxed);
    }

    /// Clears a failure mark (the node answered).
    pub(crate) fn mark_alive(&self) {
        // Load first: the common case writes nothing, so the cache line stays shared.
        if self.failed_until_ms.load(Ordering::Relaxed) != 0 {
            self.failed_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// What a request is about, for choosing its node.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// A key request: routed to the key's preference list when the ring is known.
    Key {
        bucket: &'a [u8],
        key: &'a [u8],
        access: Access,
    },
    /// A node-level request (status, health, ring): any node will do.
    AnyNode,
}

/// Whether a key request reads or writes (deletes are writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Which node of a key's preference list a read goes to (writes always go to the first live
/// one). Set with `ClientBuilder::read_routing`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadRouting {
    /// The first live node of the preference list, like writes: a key's requests share one
    /// coordinator.
    #[default]
    Primary,
    /// Rotate over the live primaries (the first `n` nodes of the preference list): spreads the
    /// coordination work of hot keys over their replicas.
    Spread,
}

/// The routing settings of a client (see `ClientBuilder`).
#[derive(Clone, Debug)]
pub(crate) struct RoutingConfig {
    pub(crate) ring_aware: bool,
    pub(crate) read_routing: ReadRouting,
    pub(crate) node_cooldown: Duration,
    pub(crate) ring_refresh_interval: Duration,
    /// The client's region: key requests go to the key's nodes in it first.
    pub(crate) region: Option<Arc<str>>,
}

/// The nodes a router knows, and the ring when it has a usable one. Immutable; replaced whole.
#[derive(Debug)]
pub(crate) struct View {
    /// With a ring: its nodes in ring order (so preference entries index this directly), then
    /// the seeds the ring does not name. Without: the seeds.
    nodes: Vec<Arc<NodeState>>,
    /// How many of `nodes` round-robin covers: the ring's nodes, or all seeds.
    routable: usize,
    ring: Option<Arc<Ring>>,
}

impl View {
    fn seeds(seeds: &[Arc<NodeState>]) -> View {
        View {
            nodes: seeds.to_vec(),
            routable: seeds.len(),
            ring: None,
        }
    }
}

/// One request's way through the nodes: where it goes now, and where it has been.
#[derive(Debug)]
pub(crate) struct Route {
    view: Arc<View>,
    /// The key's partition, when the request is routed by the ring.
    partition: Option<u32>,
    current: usize,
    /// Nodes already tried (allocated only on failover).
    tried: Vec<usize>,
}

impl Route {
    /// The node to send to now.
    pub(crate) fn node(&self) -> &Arc<NodeState> {
        &self.view.nodes[self.current]
    }

    /// Whether the ring chose the node (rather than round-robin).
    pub(crate) fn is_ring_routed(&self) -> bool {
        self.partition.is_some()
    }

    /// How many nodes the route may visit.
    pub(crate) fn node_count(&self) -> usize {
        self.view.nodes.len()
    }
}

/// How a refresh attempt ended, for scheduling the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshOutcome {
    /// A ring at least as new as every announced version is installed.
    Current,
    /// A ring was installed, or the cached one kept, but a node announced a newer version.
    Behind,
    /// No ring could be fetched (the cached one, if any, stays) or the layout was unusable.
    Failed,
}

/// When the ring was last fetched and why it should be fetched again (see the module docs).
#[derive(Debug, Default)]
struct RefreshState {
    in_flight: AtomicBool,
    /// Whether an attempt has ended (the first requests wait for that).
    attempted: AtomicBool,
    /// When the last attempt ended ([`millis`]).
    last_attempt_ms: AtomicU64,
    /// No new attempt before this ([`millis`]).
    not_before_ms: AtomicU64,
    /// Highest layout version a response announced.
    announced_version: AtomicU64,
    /// Consecutive failed attempts of requests.
    failures: AtomicU32,
    /// Rotates the nodes refreshes ask first.
    source_rotation: AtomicUsize,
}

/// Chooses nodes for requests (see the module docs).
#[derive(Debug)]
pub(crate) struct Router {
    /// The URLs the client was given, in order.
    seeds: Vec<Arc<NodeState>>,
    config: RoutingConfig,
    view: RwLock<Arc<View>>,
    /// Round-robin position (also spreads reads).
    next: AtomicUsize,
    refresh: RefreshState,
    /// The cached ring's version plus one; 0: no ring. Mirrors `view` for lock-free checks on
    /// every response.
    ring_version_plus_one: AtomicU64,
}

impl Router {
    /// A router over the seed `nodes`, which must not be empty.
    pub(crate) fn new(nodes: Vec<Node>, config: RoutingConfig) -> Result<Router, Error> {
        Router::with_states(nodes.into_iter().map(NodeState::new).collect(), config)
    }

    /// A router over existing node states (shared with another router), which must not be empty.
    pub(crate) fn with_states(
        seeds: Vec<Arc<NodeState>>,
        config: RoutingConfig,
    ) -> Result<Router, Error> {
        if seeds.is_empty() {
            return Err(Error::InvalidUrl("no node URL given".into()));
        }
        // Fix the epoch now, so that every instant the router is later given lies after it.
        millis(Instant::now());
        Ok(Router {
            view: RwLock::new(Arc::new(View::seeds(&seeds))),
            seeds,
            config,
            next: AtomicUsize::new(0),
            refresh: RefreshState::default(),
            ring_version_plus_one: AtomicU64::new(0),
        })
    }

    /// The seed nodes, in the order given.
    pub(crate) fn seeds(&self) -> &[Arc<NodeState>] {
        &self.seeds
    }

    pub(crate) fn config(&self) -> &RoutingConfig {
        &self.config
    }

    fn view(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_view(&self, view: View) {
        let mut current = self.view.write().unwrap_or_else(PoisonError::into_inner);
        let version_plus_one = view
            .ring
            .as_ref()
            .map_or(0, |ring| ring.version().saturating_add(1));
        self.ring_version_plus_one
            .store(version_plus_one, Ordering::Relaxed);
        *current = Arc::new(view);
    }

    /// The version of the cached ring, without taking the view lock.
    pub(crate) fn ring_version(&self) -> Option<u64> {
        self.ring_version_plus_one
            .load(Ordering::Relaxed)
            .checked_sub(1)
    }

    /// The cached ring, if there is a usable one.
    pub(crate) fn ring(&self) -> Option<Arc<Ring>> {
        self.view().ring.clone()
    }

    /// The URLs requests may go to now: the ring's nodes, then the seeds it does not name.
    pub(crate) fn known_urls(&self) -> Vec<String> {
        self.view()
            .nodes
            .iter()
            .map(|state| state.node.url.clone())
            .collect()
    }

    /// The round-robin position: advanced for a request, only read for a peek.
    fn tick(&self, advance: bool) -> usize {
        if advance {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        }
    }

    /// Plans a request for `target` (see the module docs).
    pub(crate) fn route(&self, target: Target<'_>, now: Instant) -> Route {
        self.plan(target, now, true)
    }

    /// Where a request for `target` would go now, without moving the round-robin position.
    pub(crate) fn peek(&self, target: Target<'_>, now: Instant) -> String {
        let route = self.plan(target, now, false);
        route.node().node.url.clone()
    }

    fn plan(&self, target: Target<'_>, now: Instant, advance: bool) -> Route {
        let view = self.view();
        let now_ms = millis(now);
        let (partition, current) = match (target, &view.ring) {
            (
                Target::Key {
                    bucket,
                    key,
                    access,
                },
                Some(ring),
            ) => {
                let partition = ring.partition(bucket, key);
                let current =
                    self.pick_in_preference(&view, ring, partition, access, now_ms, advance);
                (Some(partition), current)
            }
            _ => (None, self.round_robin(&view, now_ms, advance)),
        };
        Route {
            view,
            partition,
            current,
            tried: Vec::new(),
        }
    }

    fn pick_in_preference(
        &self,
        view: &View,
        ring: &Ring,
        partition: u32,
        access: Access,
        now_ms: u64,
        advance: bool,
    ) -> usize {
        let all = ring.partition_preference(partition);
        let live = |index: &&usize| !view.nodes[**index].is_failed(now_ms);
        // With a region, the key's nodes in it (all of them its primaries there), while one of
        // them is live; otherwise the whole list.
        let in_region: Vec<usize>;
        let (preference, primaries) = match &self.config.region {
            Some(region) => {
                in_region = all
                    .iter()
                    .copied()
                    .filter(|i| {
                        ring.nodes().get(*i).and_then(|n| n.region.as_deref()) == Some(region)
                    })
                    .collect();
                match in_region.iter().any(|i| live(&i)) {
                    true => (&in_region[..], in_region.len()),
                    false => (all, ring.n() as usize),
                }
            }
            None => (all, ring.n() as usize),
        };
        let spread = if access == Access::Read && self.config.read_routing == ReadRouting::Spread {
            let primaries = &preference[..preference.len().min(primaries)];
            match primaries.iter().filter(live).count() {
                0 => None,
                live_count => primaries
                    .iter()
                    .filter(live)
                    .nth(self.tick(advance) % live_count)
                    .copied(),
            }
        } else {
            None
        };
        spread
            .or_else(|| preference.iter().find(live).copied())
            .or_else(|| all.iter().find(live).copied())
            .or_else(|| self.any_live(view, now_ms, advance))
            // Validated non-empty; 0 only guards against an impossible empty list.
            .unwrap_or_else(|| all.first().copied().unwrap_or(0))
    }

    /// Round-robin over the routable nodes, skipping failed ones while any other is live.
    fn round_robin(&self, view: &View, now_ms: u64, advance: bool) -> usize {
        let count = view.routable;
        if count <= 1 {
            return 0;
        }
        let start = self.tick(advance) % count;
        (0..count)
            .map(|step| (start + step) % count)
            .find(|&index| !view.nodes[index].is_failed(now_ms))
            .unwrap_or(start)
    }

    /// Any live node of the view (seeds included), from a rotating start.
    fn any_live(&self, view: &View, now_ms: u64, advance: bool) -> Option<usize> {
        let count = view.nodes.len();
        let start = self.tick(advance) % count.max(1);
        (0..count)
            .map(|step| (start + step) % count)
            .find(|&index| !view.nodes[index].is_failed(now_ms))
    }

    /// Moves `route` to the next node it has not tried: the rest of the key's preference list
    /// first (live nodes before failed ones), then the other nodes from the current one on.
    /// Returns `false`, leaving the route where it is, when every node has been tried.
    pub(crate) fn failover_untried(&self, route: &mut Route, now: Instant) -> bool {
        let now_ms = millis(now);
        route.tried.push(route.current);
        let view = &route.view;
        let count = view.nodes.len();
        let preference: &[usize] = match (&view.ring, route.partition) {
            (Some(ring), Some(partition)) => ring.partition_preference(partition),
            _ => &[],
        };
        let order = || {
            preference
                .iter()
                .copied()
                .chain((1..=count).map(|step| (route.current + step) % count))
        };
        let untried = |index: &usize| !route.tried.contains(index);
        let next = order()
            .filter(untried)
            .find(|&index| !view.nodes[index].is_failed(now_ms))
            .or_else(|| order().find(untried));
        match next {
            Some(index) => {
                route.current = index;
                true
            }
            None => false,
        }
    }

    /// Moves `route` to the node for a retry: the next untried one, or, when all have been
    /// tried, around again from the next node in order.
    pub(crate) fn failover(&self, route: &mut Route, now: Instant) {
        if !self.failover_untried(route, now) {
            route.tried.clear();
            route.current = (route.current + 1) % route.view.nodes.len();
        }
    }

    /// Installs a freshly fetched ring, served by `source`, unless the cached one is newer.
    /// Returns the version now cached. Fails (changing nothing) when a node's address is
    /// unusable.
    pub(crate) fn install_ring(&self, ring: Ring, source: &Node) -> Result<u64, Error> {
        let current = self.view();
        if let Some(cached) = &current.ring {
            if cached.version() > ring.version() {
                return Ok(cached.version());
            }
        }
        let known = || current.nodes.iter().chain(&self.seeds);
        let mut nodes: Vec<Arc<NodeState>> =
            Vec::with_capacity(ring.nodes().len() + self.seeds.len());
        for entry in ring.nodes() {
            let node = Node::from_ring(entry, source)?;
            let state = known()
                .find(|state| state.node.url == node.url)
                .cloned()
                .unwrap_or_else(|| NodeState::new(node));
            nodes.push(state);
        }
        let routable = nodes.len();
        for seed in &self.seeds {
            if !nodes.iter().any(|state| state.node.url == seed.node.url) {
                nodes.push(seed.clone());
            }
        }
        let version = ring.version();
        self.set_view(View {
            nodes,
            routable,
            ring: Some(Arc::new(ring)),
        });
        Ok(version)
    }

    /// Forgets the ring: requests go round-robin over the seeds.
    pub(crate) fn drop_ring(&self) {
        self.set_view(View::seeds(&self.seeds));
    }

    /// The nodes to ask for the ring, best first: live known nodes from a rotating start, then
    /// live seeds, then the failed ones; at most [`RING_REFRESH_SOURCES_MAX`].
    pub(crate) fn refresh_sources(&self, now: Instant) -> Vec<Arc<NodeState>> {
        let now_ms = millis(now);
        let view = self.view();
        let count = view.routable.max(1);
        let start = self.refresh.source_rotation.fetch_add(1, Ordering::Relaxed) % count;
        let ordered = (0..count)
            .filter_map(|step| view.nodes.get((start + step) % count))
            .chain(&view.nodes)
            .chain(&self.seeds);
        let mut live: Vec<Arc<NodeState>> = Vec::new();
        let mut failed: Vec<Arc<NodeState>> = Vec::new();
        for state in ordered {
            if live
                .iter()
                .chain(&failed)
                .any(|seen| Arc::ptr_eq(seen, state))
            {
                continue;
            }
            if state.is_failed(now_ms) {
                failed.push(state.clone());
            } else {
                live.push(state.clone());
            }
        }
        live.extend(failed);
        live.truncate(RING_REFRESH_SOURCES_MAX);
        live
    }

    /// Whether a first ring fetch has ended (successfully or not).
    pub(crate) fn bootstrapped(&self) -> bool {
        self.refresh.attempted.load(Ordering::Acquire)
    }

    /// Whether the ring should be fetched again now (see the module docs). Always `false` for
    /// a router that is not ring-aware, before the first fetch ended, and while one runs.
    pub(crate) fn refresh_due(&self, now: Instant) -> bool {
        let refresh = &self.refresh;
        if !self.config.ring_aware
            || !self.bootstrapped()
            || refresh.in_flight.load(Ordering::Relaxed)
        {
            return false;
        }
        let now_ms = millis(now);
        if now_ms < refresh.not_before_ms.load(Ordering::Relaxed) {
            return false;
        }
        let interval_ms = duration_millis(self.config.ring_refresh_interval);
        let stale =
            now_ms.saturating_sub(refresh.last_attempt_ms.load(Ordering::Relaxed)) >= interval_ms;
        let failing = refresh.failures.load(Ordering::Relaxed) >= RING_REFRESH_AFTER_FAILURES;
        stale || failing || self.announced_newer()
    }

    /// Whether a response announced a layout newer than the cached ring (never without a ring:
    /// a client routing round-robin has nothing to update).
    fn announced_newer(&self) -> bool {
        let announced = self.refresh.announced_version.load(Ordering::Relaxed);
        self.ring_version()
            .is_some_and(|version| announced > version)
    }

    /// Claims the single refresh slot; `false` when a refresh is already running.
    pub(crate) fn try_begin_refresh(&self) -> bool {
        let claimed = self
            .refresh
            .in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if claimed {
            self.refresh.failures.store(0, Ordering::Relaxed);
        }
        claimed
    }

    /// Records how a refresh ended (call [`Router::end_refresh`] after).
    pub(crate) fn record_refresh(&self, now: Instant, outcome: RefreshOutcome) {
        let now_ms = millis(now);
        let refresh = &self.refresh;
        refresh.last_attempt_ms.store(now_ms, Ordering::Relaxed);
        let not_before = match outcome {
            RefreshOutcome::Current => now_ms,
            RefreshOutcome::Behind | RefreshOutcome::Failed => {
                now_ms.saturating_add(duration_millis(RING_REFRESH_RETRY_DELAY))
            }
        };
        refresh.not_before_ms.store(not_before, Ordering::Relaxed);
        refresh.attempted.store(true, Ordering::Release);
    }

    /// Frees the refresh slot.
    pub(crate) fn end_refresh(&self) {
        self.refresh.in_flight.store(false, Ordering::Release);
    }

    /// The highest layout version a response announced (0: none).
    pub(crate) fn announced_version(&self) -> u64 {
        self.refresh.announced_version.load(Ordering::Relaxed)
    }

    /// Notes the layout version a response announced.
    pub(crate) fn note_layout_version(&self, version: u64) {
        if version > self.refresh.announced_version.load(Ordering::Relaxed) {
            self.refresh
                .announced_version
                .fetch_max(version, Ordering::Relaxed);
        }
    }

    /// Notes a failed attempt (toward [`RING_REFRESH_AFTER_FAILURES`]).
    pub(crate) fn note_failure(&self) {
        self.refresh.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes an answered attempt: the failure streak ends.
    pub(crate) fn note_success(&self) {
        if self.refresh.failures.load(Ordering::Relaxed) != 0 {
            self.refresh.failures.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::SUPPORTED_HASH;

    const COOLDOWN: Duration = Duration::from_secs(2);

    fn config(ring_aware: bool, read_routing: ReadRouting) -> RoutingConfig {
        RoutingConfig {
            ring_aware,
            read_routing,
            node_cooldown: COOLDOWN,
            ring_refresh_interval: Duration::from_secs(30),
            region: None,
        }
    }

    fn router(urls: &[&str], ring_aware: bool, read_routing: ReadRouting) -> Router {
        let nodes = urls
            .iter()
            .map(|url| Node::parse(url).expect("valid"))
            .collect();
        Router::new(nodes, config(ring_aware, read_routing)).expect("non-empty")
    }

    /// A ring over nodes a, b, c (at `http` addresses), 4 partitions, partition p preferring
    /// node p mod 3 first, then the next two.
    fn ring(version: u64, http: [&str; 3]) -> Ring {
        Ring::from_json(ring_json_at(version, http).as_bytes()).expect("valid")
    }

    fn ring_json(version: u64) -> String {
        ring_json_at(version, HTTP)
    }

    fn ring_json_at(version: u64, http: [&str; 3]) -> String {
        let ids = ["a", "b", "c"];
        let partitions: Vec<_> = (0..4)
            .map(|p| {
                serde_json::json!({
                    "id": p,
                    "preference": [ids[p % 3], ids[(p + 1) % 3], ids[(p + 2) % 3]],
                })
            })
            .collect();
        let json = serde_json::json!({
            "version": version,
            "n": 2,
            "partition_count": 4,
            "partitions": partitions,
            "nodes": [
                {"id": "a", "http": http[0]},
                {"id": "b", "http": http[1]},
                {"id": "c", "http": http[2]},
            ],
            "hash": SUPPORTED_HASH,
        });
        json.to_string()
    }

    const HTTP: [&str; 3] = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];

    /// A key whose partition (among 4) is `partition`.
    fn key_in(partition: u32) -> Vec<u8> {
        let ring = ring(1, HTTP);
        (0u32..)
            .map(|i| format!("k{i}").into_bytes())
            .find(|key| ring.partition(b"b", key) == partition)
            .expect("some key lands there")
    }

    fn write(key: &[u8]) -> Target<'_> {
        Target::Key {
            bucket: b"b",
            key,
            access: Access::Write,
        }
    }

    fn read(key: &[u8]) -> Target<'_> {
        Target::Key {
            bucket: b"b",
            key,
            access: Access::Read,
        }
    }

    fn url(route: &Route) -> &str {
        &route.node().node.url
    }

    #[test]
    fn parses_node_urls() {
        let node = Node::parse("http://127.0.0.1:8081/").expect("valid");
        assert_eq!(node.url, "http://127.0.0.1:8081");
        let uri = node.uri(&Bytes::from_static(b"/v1/status")).expect("valid");
        assert_eq!(uri.to_string(), "http://127.0.0.1:8081/v1/status");

        let node = Node::parse("http://proxy:80/yeskv/").expect("valid");
        let uri = node
            .uri(&Bytes::from_static(b"/v1/kv/b/k?r=one"))
            .expect("valid");
        assert_eq!(uri.to_string(), "http://proxy:80/yeskv/v1/kv/b/k?r=one");
    }

    #[test]
    fn rejects_unusable_urls() {
        for url in [
            "127.0.0.1:8081",
            "ftp://host:1",
            "http://host:1/?a=b",
            "",
            "not a url",
        ] {
            assert!(Node::parse(url).is_err(), "{url:?} accepted");
        }
        assert!(Router::new(Vec::new(), config(true, ReadRouting::Primary)).is_err());
    }

    #[test]
    fn round_robin_and_failover() {
        let router = router(
            &["http://a:1", "http://b:1", "http://c:1"],
            false,
            ReadRouting::Primary,
        );
        let now = Instant::now();
        let picks: Vec<String> = (0..6)
            .map(|_| url(&router.route(Target::AnyNode, now)).to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "http://a:1",
                "http://b:1",
                "http://c:1",
                "http://a:1",
                "http://b:1",
                "http://c:1"
            ]
        );
        let mut route = router.route(Target::AnyNode, now); // a
        router.failover(&mut route, now);
        assert_eq!(url(&route), "http://b:1");
        router.failover(&mut route, now);
        router.failover(&mut route, now);
        assert_eq!(
            url(&route),
            "http://a:1",
            "wraps around once all were tried"
        );
    }

    /// A client of region r2 sends each key to the key's node in r2 (b: a in r1, b in r2, c
    /// in r3), whatever the preference order; when that node is marked failed, to the first
    /// live node of the whole list.
    #[test]
    fn a_regional_client_goes_to_its_regions_node_first() {
        let seed = "http://127.0.0.1:2";
        let mut cfg = config(true, ReadRouting::Spread);
        cfg.region = Some(Arc::from("r2"));
        let router = Router::new(vec![Node::parse(seed).expect("valid")], cfg).expect("router");
        let mut json: serde_json::Value = serde_json::from_str(&ring_json(3)).expect("ring json");
        for (node, region) in ["r1", "r2", "r3"].iter().enumerate() {
            json["nodes"][node]["region"] = serde_json::json!(region);
        }
        let ring = Ring::from_json(json.to_string().as_bytes()).expect("valid");
        let source = Node::parse(seed).expect("valid");
        router.install_ring(ring, &source).expect("installed");
        let now = Instant::now();
        for partition in 0..4 {
            let key = key_in(partition);
            assert_eq!(url(&router.route(write(&key), now)), "http://127.0.0.1:2");
            assert_eq!(url(&router.route(read(&key), now)), "http://127.0.0.1:2");
        }
        let route = router.route(write(&key_in(0)), now);
        route.node().mark_failed(now, COOLDOWN);
        assert_eq!(
            url(&router.route(write(&key_in(0)), now)),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            url(&router.route(write(&key_in(1)), now)),
            "http://127.0.0.1:3"
        );
    }

    #[test]
    fn key_requests_go_to_the_first_live_preference_node() {
        let router = router(&["http://127.0.0.1:2"], true, ReadRouting::Primary);
        let source = Node::parse("http://127.0.0.1:2").expect("valid");
        assert_eq!(router.install_ring(ring(5, HTTP), &source), Ok(5));
        assert_eq!(router.ring().map(|ring| ring.version()), Some(5));
        assert_eq!(router.ring_version(), Some(5));
        let now = Instant::now();
        for partition in 0..4 {
            let key = key_in(partition);
            let expected = format!("http://{}", HTTP[partition as usize % 3]);
            for _ in 0..3 {
                assert_eq!(url(&router.route(write(&key), now)), expected);
                assert_eq!(url(&router.route(read(&key), now)), expected);
            }
            assert_eq!(router.peek(write(&key), now), expected);
        }
        // The seed is ring node b, so it is not listed twice.
        assert_eq!(
            router.known_urls(),
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3"
            ]
        );
    }

    #[test]
    fn failed_nodes_cool_down_then_come_back() {
        let router = router(&["http://seed:9"], true, ReadRouting::Primary);
        let source = Node::parse("http://seed:9").expect("valid");
        router.install_ring(ring(1, HTTP), &source).expect("usable");
        let key = key_in(0); // a, b, c
        let now = Instant::now();
        let mut route = router.route(write(&key), now);
        assert_eq!(url(&route), "http://127.0.0.1:1");
        route.node().mark_failed(now, COOLDOWN);
        assert_eq!(url(&router.route(write(&key), now)), "http://127.0.0.1:2");
        assert!(router.failover_untried(&mut route, now));
        assert_eq!(url(&route), "http://127.0.0.1:2");
        route.node().mark_failed(now, COOLDOWN);
        assert_eq!(url(&router.route(write(&key), now)), "http://127.0.0.1:3");

        // Every ring node down: any other live node (the seed) rather than a dead one.
        assert!(router.failover_untried(&mut route, now));
        route.node().mark_failed(now, COOLDOWN);
        assert_eq!(url(&router.route(write(&key), now)), "http://seed:9");

        let later = now + COOLDOWN;
        assert_eq!(url(&router.route(write(&key), later)), "http://127.0.0.1:1");
        route.node().mark_alive();
    }

    #[test]
    fn failover_walks_the_preference_list_then_the_rest() {
        let router = router(&["http://seed:9"], true, ReadRouting::Primary);
        let source = Node::parse("http://seed:9").expect("valid");
        router.install_ring(ring(1, HTTP), &source).expect("usable");
        let now = Instant::now();
        let key = key_in(1); // b, c, a
        let mut route = router.route(write(&key), now);
        assert!(route.is_ring_routed());
        let mut visited = vec![url(&route).to_string()];
        while router.failover_untried(&mut route, now) {
            visited.push(url(&route).to_string());
        }
        assert_eq!(
            visited,
            [
                "http://127.0.0.1:2",
                "http://127.0.0.1:3",
                "http://127.0.0.1:1",
                "http://seed:9"
            ]
        );
        // A further retry starts over.
        router.failover(&mut route, now);
        assert_eq!(url(&route), "http://127.0.0.1:1");
    }

    #[test]
    fn spread_reads_rotate_over_live_primaries() {
        let router = router(&["http://127.0.0.1:1"], true, ReadRouting::Spread);
        let source = Node::parse("http://127.0.0.1:1").expect("valid");
        router.install_ring(ring(1, HTTP), &source).expect("usable");
        let now = Instant::now();
        let key = key_in(2); // c, a, b; n = 2
        let mut reads: Vec<String> = (0..4)
            .map(|_| url(&router.route(read(&key), now)).to_string())
            .collect();
        reads.sort();
        assert_eq!(
            reads,
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:1",
                "http://127.0.0.1:3",
                "http://127.0.0.1:3"
            ]
        );
        for _ in 0..4 {
            assert_eq!(url(&router.route(write(&key), now)), "http://127.0.0.1:3");
        }
        router
            .route(write(&key), now)
            .node()
            .mark_failed(now, COOLDOWN);
        for _ in 0..4 {
            assert_eq!(url(&router.route(read(&key), now)), "http://127.0.0.1:1");
        }
    }

    #[test]
    fn an_older_ring_does_not_replace_a_newer_one() {
        let router = router(&["http://127.0.0.1:1"], true, ReadRouting::Primary);
        let source = Node::parse("http://127.0.0.1:1").expect("valid");
        assert_eq!(router.install_ring(ring(4, HTTP), &source), Ok(4));
        assert_eq!(router.install_ring(ring(3, HTTP), &source), Ok(4));
        assert_eq!(router.ring().map(|ring| ring.version()), Some(4));
        router.drop_ring();
        assert!(router.ring().is_none());
        assert_eq!(router.ring_version(), None);
        assert_eq!(router.known_urls(), ["http://127.0.0.1:1"]);
    }

    #[test]
    fn ring_entries_take_the_scheme_of_the_node_that_served_the_ring() {
        let router = router(&["https://10.0.0.5:8081"], true, ReadRouting::Primary);
        let source = Node::parse("https://10.0.0.5:8081").expect("valid");
        assert!(source.is_https());
        router
            .install_ring(
                ring(
                    1,
                    ["10.0.0.5:8081", "10.0.0.6:8081", "http://10.0.0.7:8083"],
                ),
                &source,
            )
            .expect("usable");
        assert_eq!(
            router.known_urls(),
            [
                "https://10.0.0.5:8081",
                "https://10.0.0.6:8081",
                "http://10.0.0.7:8083"
            ]
        );
    }

    #[test]
    fn unspecified_addresses_take_the_source_host() {
        let router = router(&["http://10.0.0.5:8081"], true, ReadRouting::Primary);
        let source = Node::parse("http://10.0.0.5:8081").expect("valid");
        router
            .install_ring(
                ring(1, ["0.0.0.0:8081", "[::]:8082", "http://10.0.0.7:8083"]),
                &source,
            )
            .expect("usable");
        assert_eq!(
            router.known_urls(),
            [
                "http://10.0.0.5:8081",
                "http://10.0.0.5:8082",
                "http://10.0.0.7:8083"
            ]
        );
        let error = router
            .install_ring(ring(2, ["", "a:1", "b:1"]), &source)
            .expect_err("empty address");
        assert!(
            error
                .to_string()
                .contains("unusable ring layout: node \"a\""),
            "{error}"
        );
        assert_eq!(router.ring().map(|ring| ring.version()), Some(1));
    }

    #[test]
    fn refresh_is_due_on_announcements_age_and_failures() {
        let router = router(&["http://127.0.0.1:1"], true, ReadRouting::Primary);
        let source = Node::parse("http://127.0.0.1:1").expect("valid");
        let now = Instant::now();
        assert!(!router.refresh_due(now), "the first fetch is not a refresh");
        assert!(router.try_begin_refresh());
        assert!(!router.try_begin_refresh(), "single flight");
        router.install_ring(ring(3, HTTP), &source).expect("usable");
        router.record_refresh(now, RefreshOutcome::Current);
        router.end_refresh();
        assert!(router.bootstrapped());
        assert!(!router.refresh_due(now));

        // An announced newer version.
        router.note_layout_version(3);
        assert!(!router.refresh_due(now));
        router.note_layout_version(4);
        assert!(router.refresh_due(now));
        assert!(router.try_begin_refresh());
        assert!(!router.refresh_due(now), "one at a time");
        router.record_refresh(now, RefreshOutcome::Behind);
        router.end_refresh();
        assert!(!router.refresh_due(now), "behind: wait before trying again");
        assert!(router.refresh_due(now + RING_REFRESH_RETRY_DELAY));
        router.install_ring(ring(4, HTTP), &source).expect("usable");
        router.record_refresh(now, RefreshOutcome::Current);
        assert!(!router.refresh_due(now));

        // Age.
        assert!(router.refresh_due(now + Duration::from_secs(30)));

        // Repeated failures; an answer ends the streak.
        for _ in 1..RING_REFRESH_AFTER_FAILURES {
            router.note_failure();
        }
        assert!(!router.refresh_due(now));
        router.note_success();
        for _ in 0..RING_REFRESH_AFTER_FAILURES {
            router.note_failure();
        }
        assert!(router.refresh_due(now));
        assert!(router.try_begin_refresh());
        router.record_refresh(now, RefreshOutcome::Current);
        router.end_refresh();
        assert!(
            !router.refresh_due(now),
            "beginning a refresh resets the streak"
        );

        // Never for a client that is not ring-aware.
        let plain = self::router(&["http://127.0.0.1:1"], false, ReadRouting::Primary);
        plain.record_refresh(now, RefreshOutcome::Failed);
        assert!(!plain.refresh_due(now + Duration::from_secs(3600)));
    }

    #[test]
    fn refresh_sources_prefer_live_nodes() {
        let router = router(&["http://seed:9"], true, ReadRouting::Primary);
        let source = Node::parse("http://seed:9").expect("valid");
        let now = Instant::now();
        let sources = router.refresh_sources(now);
        assert_eq!(sources.len(), 1);
        router.install_ring(ring(1, HTTP), &source).expect("usable");
        let sources = router.refresh_sources(now);
        assert_eq!(sources.len(), RING_REFRESH_SOURCES_MAX);
        sources[0].mark_failed(now, COOLDOWN);
        let again = router.refresh_sources(now);
        assert!(
            Arc::ptr_eq(&again[3], &sources[0]),
            "failed node asked last"
        );
    }
}
