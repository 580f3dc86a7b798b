//! The workloads, run through the HTTP API by clients in the hub namespace, and the history they
//! record (the model of `yeskv-check`).
//!
//! - **Registers** (bucket `reg`, keys `r0..`): each worker sticks to one node and loops over a
//!   read, a read-modify-write (read, then write a fresh value with the read's context, `saw` =
//!   the values read) or a read-then-delete (with the read's context). No blind writes: every
//!   write carries the context of a read that followed the worker's own previous write, which is
//!   what the sibling bound of the checker assumes.
//! - **Carts** (bucket `cart`, keys `c0..`): each worker rotates over the nodes and adds a fresh
//!   item: read the cart, take the union of its siblings' items, add the item, write the union
//!   (items joined by `,`) back with the read's context. Recorded as one `CartAdd`.
//! - **Server-side carts** (bucket `dtcart`, data type `cart`, set with `PUT /v1/buckets` before
//!   the workload starts; keys `d0..`): each worker rotates over the nodes and either adds a
//!   fresh item (`POST /v1/dt/dtcart/{key}` `{"op":"add","item":…,"qty":1}`, no context), reads
//!   the cart (`GET /v1/dt`), or reads it and removes one of the items it showed
//!   (`{"op":"remove","item":…}` with the read's `X-Causal-Context`). Recorded as `DtCartAdd`,
//!   `DtCartRead`, `DtCartRemove`.
//! - **TTL keys** (bucket `ttl`, keys `t0..`): as registers without deletes, each write with
//!   `?ttl=` of [`TTL_SECS_MIN`] to [`TTL_SECS_MAX`] s (recorded as `ttl_ms`) but one in five
//!   without, so a key holds both kinds of versions.
//!
//! Outcomes: `2xx` is `ok`; a `4xx` or a refused connection is `fail` (nothing was applied); a
//! `5xx` (`503` quorum failure, `500`), a timeout or a broken connection is `info`
//! (indeterminate), after which the worker continues as a new process id (Jepsen's rule: the
//! old process may still have an operation in flight). A cart add whose read failed never sent
//! its write, so it is `fail`.
//!
//! Values and items are unique in the history (`v{worker}.{seq}`, `i{worker}.{seq}`). Every
//! client request has a timeout ([`REQUEST_TIMEOUT`]) and no retries, so a stopped workload ends
//! within two timeouts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use yeskv_check::history::{Event, Op, Status};
use yeskv_client::{Client, Error as ClientError, Read, ReadOptions, WriteOptions};

/// Bucket of the register workload.
pub const REGISTER_BUCKET: &str = "reg";
/// Bucket of the cart workload.
pub const CART_BUCKET: &str = "cart";
/// Bucket of the server-side cart workload (its data type is `cart`).
pub const DT_CART_BUCKET: &str = "dtcart";
/// Bucket of the TTL workload.
pub const TTL_BUCKET: &str = "ttl";
/// Shortest TTL of a TTL key's write, s.
pub const TTL_SECS_MIN: u64 = 1;
/// Longest TTL of a TTL key's write, s.
pub const TTL_SECS_MAX: u64 = 5;
/// Per-request timeout of the workload clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout of the workload clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the workload does.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Register keys.
    pub register_keys: usize,
    /// Cart keys.
    pub cart_keys: usize,
    /// Server-side cart keys.
    pub dt_cart_keys: usize,
    /// TTL keys.
    pub ttl_keys: usize,
    /// Register workers.
    pub register_workers: usize,
    /// Cart workers.
    pub cart_workers: usize,
    /// Server-side cart workers.
    pub dt_cart_workers: usize,
    /// TTL workers.
    pub ttl_workers: usize,
    /// Pause between a worker's operations, in ms (uniform in `think_ms_min..=think_ms_max`).
    pub think_ms_min: u64,
    /// See `think_ms_min`.
    pub think_ms_max: u64,
}

/// Latency and outcome counts of one operation kind.
struct KindStats {
    ok_us: Histogram<u64>,
    ok: u64,
    fail: u64,
    info: u64,
}

/// Summary of one operation kind, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    /// Acknowledged.
    pub ok: u64,
    /// Definitely not applied.
    pub fail: u64,
    /// Indeterminate.
    pub info: u64,
    /// Latency of `ok` operations, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
}

/// The history being recorded, and the figures of the run.
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
    stats: Mutex<BTreeMap<&'static str, KindStats>>,
    /// Completed operations (ok, fail, info).
    pub completed: AtomicU64,
    /// `ok` completions.
    pub ok: AtomicU64,
    /// `info` completions.
    pub info: AtomicU64,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            events: Mutex::new(Vec::new()),
            stats: Mutex::new(BTreeMap::new()),
            completed: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            info: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn push(&self, process: u64, status: Status, op: Op, node: &str, error: Option<String>) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        // The time is taken under the lock, so event times never go backwards.
        let time_ms = self.now_ms();
        events.push(Event {
            process,
            time_ms,
            status,
            op,
            node: Some(node.to_string()),
            error,
        });
    }

    fn invoke(&self, process: u64, op: Op, node: &str) {
        self.push(process, Status::Invoke, op, node, None);
    }

    fn complete(
        &self,
        kind: &'static str,
        process: u64,
        outcome: (Status, Option<String>),
        op: Op,
        node: &str,
        latency: Duration,
    ) {
        let (status, error) = outcome;
        self.push(process, status, op, node, error);
        self.completed.fetch_add(1, Ordering::Relaxed);
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = stats.entry(kind).or_insert_with(|| KindStats {
            ok_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            ok: 0,
            fail: 0,
            info: 0,
        });
        match status {
            Status::Ok => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                entry.ok += 1;
                let _ = entry.ok_us.record(latency.as_micros().max(1) as u64);
            }
            Status::Fail => entry.fail += 1,
            Status::Info => {
                self.info.fetch_add(1, Ordering::Relaxed);
                entry.info += 1
            }
            Status::Invoke => {}
        }
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Per-kind outcome counts and latencies.
    pub fn summary(&self) -> BTreeMap<String, KindSummary> {
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats
            .iter()
            .map(|(kind, s)| {
                let ms = |us: u64| us as f64 / 1000.0;
                (
                    kind.to_string(),
                    KindSummary {
                        ok: s.ok,
                        fail: s.fail,
                        info: s.info,
                        p50_ms: ms(s.ok_us.value_at_quantile(0.50)),
                        p99_ms: ms(s.ok_us.value_at_quantile(0.99)),
                        max_ms: ms(s.ok_us.max()),
                    },
                )
            })
            .collect()
    }
}

/// How a failed request ends in the history.
fn classify(e: &ClientError) -> (Status, Option<String>) {
    let status = match e {
        ClientError::Http { status, .. } if (400..500).contains(status) => Status::Fail,
        ClientError::Connect(_) | ClientError::InvalidArgument(_) | ClientError::InvalidUrl(_) => {
            Status::Fail
        }
        _ => Status::Info,
    };
    (status, Some(e.to_string()))
}

/// A client per node: no ring routing, no retries, a timeout per request.
pub fn clients(http_addrs: &[String]) -> anyhow::Result<Vec<Client>> {
    http_addrs
        .iter()
        .map(|a| {
            let builder = Client::builder()
                .ring_aware(false)
                .retries(0)
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT);
            let builder = match crate::http::secure() {
                None => builder.node(format!("http://{a}")),
                Some(secure) => builder
                    .node(format!("https://{a}"))
                    .ca_file(&secure.ca)
                    .api_key(&secure.key),
            };
            builder.build().map_err(anyhow::Error::from)
        })
        .collect()
}

/// The live sibling values of a read, as strings.
pub fn values_of(read: &Read) -> Vec<String> {
    read.values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// How a server-side cart request without a `2xx` answer ends in the history: a `4xx` or a
/// request never sent is `fail`, anything else `info`.
fn dt_failure(e: &DtError) -> (Status, Option<String>) {
    match e {
        DtError::Status(status, body) if (400..500).contains(status) => {
            (Status::Fail, Some(format!("{status}: {body}")))
        }
        DtError::Status(status, body) => (Status::Info, Some(format!("{status}: {body}"))),
        DtError::Http(crate::http::Failure::NotSent(m)) => (Status::Fail, Some(m.clone())),
        DtError::Http(f) => (Status::Info, Some(f.to_string())),
    }
}

/// A server-side cart request that did not succeed.
#[derive(Debug)]
pub enum DtError {
    /// An answer other than `2xx` (and other than `404` for a read), with its body.
    Status(u16, String),
    /// No answer.
    Http(crate::http::Failure),
}

impl std::fmt::Display for DtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtError::Status(status, body) => write!(f, "{status}: {body}"),
            DtError::Http(e) => write!(f, "{e}"),
        }
    }
}

/// `GET /v1/dt/dtcart/{cart}` on the node at `addr` (with `?r=` if `r` is set): the items
/// shown, by name (none for a `404`), and the context token (empty if none).
pub async fn dt_read(
    addr: &str,
    cart: &str,
    r: Option<yeskv_client::Quorum>,
) -> Result<(Vec<String>, String), DtError> {
    let path = match r {
        Some(r) => format!("/v1/dt/{DT_CART_BUCKET}/{cart}?r={r}"),
        None => format!("/v1/dt/{DT_CART_BUCKET}/{cart}"),
    };
    let response = crate::http::exchange(
        addr,
        "GET",
        &path,
        &[],
        b"",
        CONNECT_TIMEOUT,
        REQUEST_TIMEOUT,
    )
    .await
    .map_err(DtError::Http)?;
    let context = response
        .header("x-causal-context")
        .unwrap_or_default()
        .to_string();
    match response.status {
        200 => {
            let body: serde_json::Value = serde_json::from_slice(&response.body)
                .map_err(|e| DtError::Status(200, format!("not JSON: {e}")))?;
            let items = body["items"]
                .as_object()
                .ok_or_else(|| DtError::Status(200, format!("no items: {body}")))?
                .keys()
                .cloned()
                .collect();
            Ok((items, context))
        }
        404 => Ok((Vec::new(), context)),
        status => Err(DtError::Status(status, response.text())),
    }
}

/// `POST /v1/dt/dtcart/{cart}` on the node at `addr`: the JSON operation `op`, with
/// `X-Causal-Context: context` unless it is empty.
pub async fn dt_post(
    addr: &str,
    cart: &str,
    op: &serde_json::Value,
    context: &str,
) -> Result<(), DtError> {
    let path = format!("/v1/dt/{DT_CART_BUCKET}/{cart}");
    let headers: Vec<(&str, &str)> = match context.is_empty() {
        true => Vec::new(),
        false => vec![("X-Causal-Context", context)],
    };
    let body = serde_json::to_vec(op).map_err(|e| DtError::Status(0, e.to_string()))?;
    let response = crate::http::exchange(
        addr,
        "POST",
        &path,
        &headers,
        &body,
        CONNECT_TIMEOUT,
        REQUEST_TIMEOUT,
    )
    .await
    .map_err(DtError::Http)?;
    match response.status {
        200..=299 => Ok(()),
        status => Err(DtError::Status(status, response.text())),
    }
}

/// What every worker shares.
pub struct Shared {
    /// One client per node.
    pub clients: Vec<Client>,
    /// Each node's HTTP address (`HOST:PORT`), in the clients' order.
    pub http_addrs: Vec<String>,
    /// Node ids, in the clients' order.
    pub node_ids: Vec<String>,
    /// The history.
    pub recorder: Arc<Recorder>,
    /// Set to end the workload.
    pub stop: AtomicBool,
    /// Parameters.
    pub params: Params,
}

/// One worker's identity and state.
struct Worker {
    index: u64,
    stride: u64,
    process: u64,
    seq: u64,
    rng: StdRng,
    /// This process's last acknowledged add to each cart (a read that misses it is stale).
    last_cart_add: BTreeMap<String, String>,
}

impl Worker {
    fn new(index: u64, stride: u64, seed: u64) -> Worker {
        Worker {
            index,
            stride,
            process: index,
            seq: 0,
            rng: StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            last_cart_add: BTreeMap::new(),
        }
    }

    /// After an indeterminate outcome, continue as a new process.
    fn after(&mut self, status: Status) {
        if status == Status::Info {
            self.process += self.stride;
            self.last_cart_add.clear();
        }
    }

    async fn think(&mut self, shared: &Shared) {
        let ms = self
            .rng
            .random_range(shared.params.think_ms_min..=shared.params.think_ms_max);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// A recorded register read of `key` in `bucket`; `Some` when it succeeded.
    async fn read(
        &mut self,
        shared: &Shared,
        node: usize,
        bucket: &str,
        key: &str,
    ) -> Option<Read> {
        let rec = &shared.recorder;
        let id = &shared.node_ids[node];
        let p = self.process;
        rec.invoke(
            p,
            Op::Read {
                key: key.to_string(),
                values: vec![],
            },
            id,
        );
        let t = Instant::now();
        let result = shared.clients[node]
            .read(bucket, key, &ReadOptions::default())
            .await;
        match result {
            Ok(read) => {
                let op = Op::Read {
                    key: key.to_string(),
                    values: values_of(&read),
                };
                rec.complete("read", p, (Status::Ok, None), op, id, t.elapsed());
                Some(read)
            }
            Err(e) => {
                let outcome = classify(&e);
                let status = outcome.0;
                let op = Op::Read {
                    key: key.to_string(),
                    values: vec![],
                };
                rec.complete("read", p, outcome, op, id, t.elapsed());
                self.after(status);
                None
            }
        }
    }

    async fn register_op(&mut self, shared: &Shared, node: usize) {
        let key = format!("r{}", self.rng.random_range(0..shared.params.register_keys));
        let roll = self.rng.random_range(0..100);
        let Some(read) = self.read(shared, node, REGISTER_BUCKET, &key).await else {
            return;
        };
        if roll < 30 {
            return;
        }
        let rec = &shared.recorder;
        let id = &shared.node_ids[node];
        let saw = values_of(&read);
        let options = WriteOptions {
            context: (!read.context.is_empty()).then(|| read.context.clone()),
            ..WriteOptions::default()
        };
        let p = self.process;
        if roll < 85 {
            self.seq += 1;
            let value = format!("v{}.{}", self.index, self.seq);
            let op = Op::Write {
                key: key.clone(),
                value: value.clone(),
                saw,
                ttl_ms: None,
            };
            rec.invoke(p, op.clone(), id);
            let t = Instant::now();
            let result = shared.clients[node]
                .put(REGISTER_BUCKET, &key, Bytes::from(value), &options)
                .await;
            let outcome = match &result {
                Ok(_) => (Status::Ok, None),
                Err(e) => classify(e),
            };
            let status = outcome.0;
            rec.complete("write", p, outcome, op, id, t.elapsed());
            self.after(status);
        } else if !saw.is_empty() {
            let op = Op::Delete {
                key: key.clone(),
                saw,
            };
            rec.invoke(p, op.clone(), id);
            let t = Instant::now();
            let result = shared.clients[node]
                .delete(REGISTER_BUCKET, &key, &options)
                .await;
            let outcome = match &result {
                Ok(()) => (Status::Ok, None),
                Err(e) => classify(e),
            };
            let status = outcome.0;
            rec.complete("delete", p, outcome, op, id, t.elapsed());
            self.after(status);
        }
    }

    async fn cart_op(&mut self, shared: &Shared, node: usize) {
        let cart = format!("c{}", self.rng.random_range(0..shared.params.cart_keys));
        self.seq += 1;
        let item = format!("i{}.{}", self.index, self.seq);
        let rec = &shared.recorder;
        let id = &shared.node_ids[node];
        let p = self.process;
        let op = Op::CartAdd {
            cart: cart.clone(),
            item: item.clone(),
            stale: false,
        };
        rec.invoke(p, op.clone(), id);
        let t = Instant::now();
        let client = &shared.clients[node];
        let read = match client
            .read(CART_BUCKET, &cart, &ReadOptions::default())
            .await
        {
            Ok(read) => read,
            Err(e) => {
                // The write was never sent: definitely not applied.
                let outcome = (Status::Fail, Some(format!("reading the cart: {e}")));
                rec.complete("cart_add", p, outcome, op, id, t.elapsed());
                return;
            }
        };
        let mut items: BTreeSet<String> = values_of(&read)
            .iter()
            .flat_map(|v| v.split(',').filter(|i| !i.is_empty()).map(str::to_string))
            .collect::<BTreeSet<_>>();
        // A read that misses this process's own last add is stale: the write below will not
        // supersede that add's version.
        let stale = self
            .last_cart_add
            .get(&cart)
            .is_some_and(|last| !items.contains(last));
        items.insert(item.clone());
        let value = items.into_iter().collect::<Vec<_>>().join(",");
        let options = WriteOptions {
            context: (!read.context.is_empty()).then_some(read.context),
            ..WriteOptions::default()
        };
        let result = client
            .put(CART_BUCKET, &cart, Bytes::from(value), &options)
            .await;
        let outcome = match &result {
            Ok(_) => (Status::Ok, None),
            Err(e) => classify(e),
        };
        let status = outcome.0;
        let op = Op::CartAdd {
            cart: cart.clone(),
            item: item.clone(),
            stale,
        };
        rec.complete("cart_add", p, outcome, op, id, t.elapsed());
        if status == Status::Ok {
            self.last_cart_add.insert(cart, item);
        }
        self.after(status);
    }
}

impl Worker {
    /// An operation on a TTL key (module docs).
    async fn ttl_op(&mut self, shared: &Shared, node: usize) {
        let key = format!("t{}", self.rng.random_range(0..shared.params.ttl_keys));
        let roll = self.rng.random_range(0..100);
        let ttl_secs = match self.rng.random_range(0..5) {
            0 => None,
            _ => Some(self.rng.random_range(TTL_SECS_MIN..=TTL_SECS_MAX)),
        };
        let Some(read) = self.read(shared, node, TTL_BUCKET, &key).await else {
            return;
        };
        if roll < 30 {
            return;
        }
        let rec = &shared.recorder;
        let id = &shared.node_ids[node];
        let options = WriteOptions {
            context: (!read.context.is_empty()).then(|| read.context.clone()),
            ttl_secs,
            ..WriteOptions::default()
        };
        self.seq += 1;
        let value = format!("v{}.{}", self.index, self.seq);
        let op = Op::Write {
            key: key.clone(),
            value: value.clone(),
            saw: values_of(&read),
            ttl_ms: ttl_secs.map(|s| s * 1000),
        };
        let p = self.process;
        rec.invoke(p, op.clone(), id);
        let t = Instant::now();
        let result = shared.clients[node]
            .put(TTL_BUCKET, &key, Bytes::from(value), &options)
            .await;
        let outcome = match &result {
            Ok(_) => (Status::Ok, None),
            Err(e) => classify(e),
        };
        let status = outcome.0;
        // Counted as one kind whether it carried a TTL (4 in 5) or not.
        rec.complete("ttl_key_write", p, outcome, op, id, t.elapsed());
        self.after(status);
    }

    /// A recorded server-side cart read; `Some((items, context))` when it succeeded.
    async fn dt_read(
        &mut self,
        shared: &Shared,
        node: usize,
        cart: &str,
    ) -> Option<(Vec<String>, String)> {
        let (rec, id, p) = (&shared.recorder, &shared.node_ids[node], self.process);
        let mut op = Op::DtCartRead {
            cart: cart.to_string(),
            items: Vec::new(),
        };
        rec.invoke(p, op.clone(), id);
        let t = Instant::now();
        match dt_read(&shared.http_addrs[node], cart, None).await {
            Ok((items, context)) => {
                op = Op::DtCartRead {
                    cart: cart.to_string(),
                    items: items.clone(),
                };
                rec.complete("dt_read", p, (Status::Ok, None), op, id, t.elapsed());
                Some((items, context))
            }
            Err(e) => {
                let outcome = dt_failure(&e);
                let status = outcome.0;
                rec.complete("dt_read", p, outcome, op, id, t.elapsed());
                self.after(status);
                None
            }
        }
    }

    /// A recorded server-side cart operation `body`, recorded as `op`.
    async fn dt_post(
        &mut self,
        shared: &Shared,
        node: usize,
        kind: &'static str,
        op: Op,
        body: serde_json::Value,
        context: &str,
    ) {
        let (rec, id, p) = (&shared.recorder, &shared.node_ids[node], self.process);
        rec.invoke(p, op.clone(), id);
        let t = Instant::now();
        let outcome = match dt_post(&shared.http_addrs[node], op.key(), &body, context).await {
            Ok(()) => (Status::Ok, None),
            Err(e) => dt_failure(&e),
        };
        let status = outcome.0;
        rec.complete(kind, p, outcome, op, id, t.elapsed());
        self.after(status);
    }

    /// An operation on a server-side cart (module docs).
    async fn dt_cart_op(&mut self, shared: &Shared, node: usize) {
        let cart = format!("d{}", self.rng.random_range(0..shared.params.dt_cart_keys));
        let roll = self.rng.random_range(0..100);
        if roll < 55 {
            self.seq += 1;
            let item = format!("d{}.{}", self.index, self.seq);
            let body = serde_json::json!({"op": "add", "item": item, "qty": 1});
            let op = Op::DtCartAdd { cart, item };
            self.dt_post(shared, node, "dt_add", op, body, "").await;
            return;
        }
        let Some((items, context)) = self.dt_read(shared, node, &cart).await else {
            return;
        };
        if roll < 75 || items.is_empty() {
            return;
        }
        let item = items[self.rng.random_range(0..items.len())].clone();
        let body = serde_json::json!({"op": "remove", "item": item});
        let op = Op::DtCartRemove { cart, item };
        self.dt_post(shared, node, "dt_remove", op, body, &context)
            .await;
    }
}

/// Runs a TTL worker until `shared.stop`: it rotates over the nodes.
pub async fn ttl_worker(shared: Arc<Shared>, index: u64, stride: u64, seed: u64) {
    let mut w = Worker::new(index, stride, seed);
    let mut node = index as usize;
    while !shared.stop.load(Ordering::Relaxed) {
        node = (node + 1) % shared.clients.len();
        w.ttl_op(&shared, node).await;
        w.think(&shared).await;
    }
}

/// Runs a server-side cart worker until `shared.stop`: it rotates over the nodes.
pub async fn dt_cart_worker(shared: Arc<Shared>, index: u64, stride: u64, seed: u64) {
    let mut w = Worker::new(index, stride, seed);
    let mut node = index as usize;
    while !shared.stop.load(Ordering::Relaxed) {
        node = (node + 1) % shared.clients.len();
        w.dt_cart_op(&shared, node).await;
        w.think(&shared).await;
    }
}

/// Runs a register worker until `shared.stop`.
pub async fn register_worker(shared: Arc<Shared>, index: u64, stride: u64, seed: u64) {
    let mut w = Worker::new(index, stride, seed);
    let node = index as usize % shared.clients.len();
    while !shared.stop.load(Ordering::Relaxed) {
        w.register_op(&shared, node).await;
        w.think(&shared).await;
    }
}

/// Runs a cart worker until `shared.stop`.
pub async fn cart_worker(shared: Arc<Shared>, index: u64, stride: u64, seed: u64) {
    let mut w = Worker::new(index, stride, seed);
    let mut node = index as usize;
    while !shared.stop.load(Ordering::Relaxed) {
        node = (node + 1) % shared.clients.len();
        w.cart_op(&shared, node).await;
        w.think(&shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let http = |status| ClientError::Http {
            status,
            reason: String::new(),
        };
        assert_eq!(classify(&http(503)).0, Status::Info);
        assert_eq!(classify(&http(500)).0, Status::Info);
        assert_eq!(classify(&http(409)).0, Status::Fail);
        assert_eq!(classify(&ClientError::Timeout).0, Status::Info);
        assert_eq!(classify(&ClientError::Connect("x".into())).0, Status::Fail);
        assert_eq!(
            classify(&ClientError::Transport("reset".into())).0,
            Status::Info
        );
    }

    #[test]
    fn recorder_times_are_monotonic_and_counts_add_up() {
        let rec = Recorder::new(Instant::now());
        let op = Op::Read {
            key: "r0".into(),
            values: vec![],
        };
        rec.invoke(1, op.clone(), "n1");
        rec.complete(
            "read",
            1,
            (Status::Ok, None),
            op.clone(),
            "n1",
            Duration::from_millis(3),
        );
        rec.invoke(2, op.clone(), "n2");
        rec.complete(
            "read",
            2,
            (Status::Info, Some("t".into())),
            op,
            "n2",
            Duration::ZERO,
        );
        let events = rec.events();
        assert_eq!(events.len(), 4);
        assert!(events.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
        let s = &rec.summary()["read"];
        assert_eq!((s.ok, s.info, s.fail), (1, 1, 0));
        assert!(s.p50_ms >= 2.9 && s.p50_ms <= 3.1, "{}", s.p50_ms);
    }
}
