//! The simulated clients and their workloads, recorded as a `yeskv-check` history.
//!
//! Each client host runs one sequential client (a *process* in the history; after an
//! indeterminate operation it continues as a new process, as in Jepsen, since its old operation
//! may still be running). Every request goes to a node picked at random among the members of the
//! layout at that moment (as a ring-aware client routes by the layout it fetched), over the
//! simulated network, with the client protocol of [`crate::protocol`]; `r = w = quorum`.
//!
//! On a seed with regions each client is in a region (client `i` in region `i mod R`) and
//! sends every request to a member of its own region (any member if its region has none), as an
//! application talks to the data centre it runs in. Reads and writes then ask the product's
//! default, `local_quorum` (a majority of the coordinator's region's replicas), except one read
//! in ten asking `quorum` (a majority of all replicas, across the WAN) and one write in ten
//! each asking `each_quorum` and `quorum`. During a region cut those fail (`503`, recorded as
//! indeterminate: never acknowledged) while `local_quorum` writes go on; [`WriteTally`] counts
//! the writes by the quorum they asked and how they ended.
//!
//! Four workloads, mixed at random (30 %, 25 %, 25 %, 20 % of the operations):
//!
//! - **Registers** (keys `r0`, `r1`, ...): a read; a read followed by a write of a fresh value
//!   with the read's context (`saw` = the read's values); a read followed by a delete with its
//!   context (when the read found something); or a blind write (no context, `saw` empty) — only
//!   as a process's first write of a key, so each process's later writes carry a context that
//!   saw its previous one (the checkers' sibling bound assumes it, as any real session does).
//! - **Carts** (keys `c0`, `c1`, ...): `CartAdd` reads the cart, takes the union of its
//!   siblings' items, adds a fresh item and writes the union back with the read's context. If the
//!   read fails nothing was written, so the add is a definite failure.
//! - **Server-side carts** (keys `d0`, `d1`, ... in the bucket of data type `cart`,
//!   [`crate::protocol::DT_BUCKET`]): `DtCartAdd` of a fresh item, quantity 1, without a context
//!   (the store merges); a `DtCartRead`; or a read followed, when it showed items, by a
//!   `DtCartRemove` of one of them with the read's context.
//! - **TTL keys** (keys `t0`, `t1`, ... in the plain bucket): as registers without deletes,
//!   each write with a TTL of [`TTL_SECS_MIN`] to [`TTL_SECS_MAX`] s (`?ttl=`; recorded as
//!   `ttl_ms`), except one write in five without one, so that a key holds both and the expiry of
//!   one version must not take another with it.
//!
//! Outcomes: an answer → `ok`; a `4xx`-like refusal → `fail` (not applied); a `5xx` (quorum
//! missed, storage) or any transport error or timeout → `info` (indeterminate).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yeskv_check::history::{Event, Op, ProcessId, Status};
use yeskv_core::datatypes::DtOp;
use yeskv_core::NodeId;
use yeskv_rpc::RpcClient;

use crate::clock::sim_now_ms;
use crate::net::SimConnector;
use crate::node::{rpc_config, CLIENT_PORT};
use crate::protocol::{ClientRequest, ClientResponse, BUCKET, DT_BUCKET};
use crate::topology::LayoutCell;
use crate::trace::Recorder;

/// A client's deadline for one request, simulated ms (longer than a forwarded write's two RPC
/// deadlines plus its replication round).
pub const CLIENT_TIMEOUT_MS: u64 = 1_500;
/// Most think time between two operations of a client, simulated ms.
pub const THINK_MS_MAX: u64 = 10;
/// Shortest TTL of a TTL key's write, s.
pub const TTL_SECS_MIN: u64 = 1;
/// Longest TTL of a TTL key's write, s.
pub const TTL_SECS_MAX: u64 = 3;

/// The keys of one run.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Register keys.
    pub registers: Vec<String>,
    /// Cart keys.
    pub carts: Vec<String>,
    /// Server-side cart keys (in [`DT_BUCKET`]).
    pub dt_carts: Vec<String>,
    /// TTL keys (registers whose writes mostly carry a TTL).
    pub ttl: Vec<String>,
}

impl Keys {
    /// `registers` register keys, `carts` cart keys, `dt_carts` server-side cart keys and
    /// `ttl` TTL keys.
    pub fn new(registers: usize, carts: usize, dt_carts: usize, ttl: usize) -> Self {
        let named = |prefix: &str, count: usize| -> Vec<String> {
            (0..count).map(|i| format!("{prefix}{i}")).collect()
        };
        Keys {
            registers: named("r", registers),
            carts: named("c", carts),
            dt_carts: named("d", dt_carts),
            ttl: named("t", ttl),
        }
    }

    /// Every key: registers, carts, TTL keys, server-side carts.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.registers
            .iter()
            .chain(&self.carts)
            .chain(&self.ttl)
            .chain(&self.dt_carts)
    }

    /// The bucket `key` lives in.
    pub fn bucket_of(&self, key: &str) -> &'static [u8] {
        match self.is_dt(key) {
            true => DT_BUCKET,
            false => BUCKET,
        }
    }

    /// Whether `key` is a server-side cart.
    pub fn is_dt(&self, key: &str) -> bool {
        self.dt_carts.iter().any(|k| k == key)
    }
}

/// One client's settings.
pub struct ClientEnv {
    /// 0-based client index.
    pub index: usize,
    /// Clients in the run (process ids are `index + k × clients`).
    pub clients: usize,
    /// The layout, whose members are the nodes to pick from.
    pub layout: std::sync::Arc<LayoutCell>,
    /// The keys.
    pub keys: Keys,
    /// Randomness.
    pub seed: u64,
    /// Stop starting operations at this simulated time.
    pub until_ms: u64,
    /// Where to record.
    pub recorder: Recorder,
    /// The client's region on a seed with regions: it talks to that region's members and asks
    /// regional quorums (see the module docs).
    pub region: Option<String>,
    /// Where the writes' outcomes are counted by quorum.
    pub tally: Arc<WriteTally>,
}

/// How the writes that asked one quorum ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcomes {
    /// Acknowledged.
    pub acked: u64,
    /// Indeterminate (timeout, `5xx`: a missed quorum).
    pub indeterminate: u64,
    /// Refused (`4xx`: not applied).
    pub refused: u64,
    /// Simulated ms from request to acknowledgement of each acknowledged write, as the client
    /// saw it.
    pub acked_ms: Vec<u64>,
}

impl WriteOutcomes {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &WriteOutcomes) {
        self.acked += other.acked;
        self.indeterminate += other.indeterminate;
        self.refused += other.refused;
        self.acked_ms.extend(&other.acked_ms);
    }

    /// The `q` quantile (nearest rank) of the acknowledged writes' latency, ms; `None` without
    /// any.
    pub fn acked_ms_quantile(&self, q: f64) -> Option<u64> {
        let mut sorted = self.acked_ms.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
        sorted.get(rank).copied()
    }
}

/// The workload's writes (values, deletes, cart writes, server-side cart operations) by the
/// write quorum they asked, shared by a seed's clients.
#[derive(Debug, Default)]
pub struct WriteTally {
    counts: Mutex<BTreeMap<&'static str, WriteOutcomes>>,
}

/// The name a write's quorum is counted under (`""`, the default, as what it means with
/// regions).
fn quorum_label(w: &'static str) -> &'static str {
    match w {
        "" => "local_quorum (default)",
        other => other,
    }
}

impl WriteTally {
    /// Counts a write that asked `w`, sent at `sent_ms`, ending with `outcome` now.
    fn record(&self, w: &'static str, sent_ms: u64, outcome: &Outcome) {
        let mut counts = self.counts.lock();
        let entry = counts.entry(quorum_label(w)).or_default();
        match outcome {
            Outcome::Ok(_) => {
                entry.acked += 1;
                entry.acked_ms.push(sim_now_ms().saturating_sub(sent_ms));
            }
            Outcome::Info(_) => entry.indeterminate += 1,
            Outcome::Fail(_) => entry.refused += 1,
        }
    }

    /// The counts so far, by quorum.
    pub fn counts(&self) -> BTreeMap<&'static str, WriteOutcomes> {
        self.counts.lock().clone()
    }
}

/// A request's outcome, as the history sees it.
enum Outcome {
    Ok(ClientResponse),
    Fail(String),
    Info(String),
}

type Client = RpcClient<ClientRequest, ClientResponse, SimConnector>;

struct Worker {
    env: ClientEnv,
    rpc: Client,
    rng: StdRng,
    process: ProcessId,
    generation: u64,
    counter: u64,
    /// Keys this process has written (its later writes of them carry a context).
    written: BTreeSet<String>,
    /// This process's last acknowledged add to each cart.
    last_cart_add: std::collections::BTreeMap<String, String>,
}

/// What a read returned.
struct ReadResult {
    values: Vec<String>,
    context: String,
}

impl Worker {
    /// A member to send the next request to: any member, or with regions one of the client's
    /// region (any member if the region has none).
    fn pick_node(&mut self) -> NodeId {
        let layout = self.env.layout.current();
        let mut candidates: Vec<&NodeId> = match &self.env.region {
            None => Vec::new(),
            Some(region) => layout
                .members
                .iter()
                .filter(|(_, m)| &m.region == region)
                .map(|(id, _)| id)
                .collect(),
        };
        if candidates.is_empty() {
            candidates = layout.members.keys().collect();
        }
        let i = self.rng.random_range(0..candidates.len());
        candidates[i].clone()
    }

    /// The quorum a read asks, by name: `quorum` without regions; with regions the default
    /// (`local_quorum`), one read in ten `quorum`.
    fn read_quorum(&mut self) -> &'static str {
        match &self.env.region {
            None => "quorum",
            Some(_) if self.rng.random_range(0..10) == 0 => "quorum",
            Some(_) => "",
        }
    }

    /// The quorum a write asks, by name: `quorum` without regions; with regions the default
    /// (`local_quorum`), one write in ten `each_quorum` and one in ten `quorum`.
    fn write_quorum(&mut self) -> &'static str {
        match &self.env.region {
            None => "quorum",
            Some(_) => match self.rng.random_range(0..10) {
                0 => "each_quorum",
                1 => "quorum",
                _ => "",
            },
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}.{}", self.env.index, self.counter)
    }

    fn record(&self, status: Status, op: Op, node: &NodeId, error: Option<String>) {
        self.env.recorder.event(Event {
            process: self.process,
            time_ms: sim_now_ms(),
            status,
            op,
            node: Some(node.to_string()),
            error,
        });
    }

    /// Completes an operation; an indeterminate one retires the process.
    fn complete(&mut self, outcome: &Outcome, op: Op, node: &NodeId) {
        let (status, error) = match outcome {
            Outcome::Ok(_) => (Status::Ok, None),
            Outcome::Fail(e) => (Status::Fail, Some(e.clone())),
            Outcome::Info(e) => (Status::Info, Some(e.clone())),
        };
        self.record(status, op, node, error);
        if status == Status::Info {
            self.generation += 1;
            self.process = self.env.index as u64 + self.generation * self.env.clients as u64;
            self.written.clear();
            self.last_cart_add.clear();
        }
    }

    async fn call(&self, node: &NodeId, request: ClientRequest) -> Outcome {
        let addr = format!("{node}:{CLIENT_PORT}");
        match self
            .rpc
            .call(&addr, &request, Duration::from_millis(CLIENT_TIMEOUT_MS))
            .await
        {
            Ok(ClientResponse::Refused { status, message }) if status < 500 => {
                Outcome::Fail(format!("{status}: {message}"))
            }
            Ok(ClientResponse::Refused { status, message }) => {
                Outcome::Info(format!("{status}: {message}"))
            }
            Ok(answer) => Outcome::Ok(answer),
            Err(e) => Outcome::Info(e.to_string()),
        }
    }

    /// A recorded register read.
    async fn read(&mut self, key: &str) -> Option<ReadResult> {
        let node = self.pick_node();
        let invoke = Op::Read {
            key: key.to_string(),
            values: Vec::new(),
        };
        self.record(Status::Invoke, invoke.clone(), &node, None);
        let request = ClientRequest::Get {
            key: key.to_string(),
            r: self.read_quorum().into(),
        };
        let outcome = self.call(&node, request).await;
        match outcome {
            Outcome::Ok(ClientResponse::Read {
                values, context, ..
            }) => {
                let op = Op::Read {
                    key: key.to_string(),
                    values: values.clone(),
                };
                self.record(Status::Ok, op, &node, None);
                Some(ReadResult { values, context })
            }
            Outcome::Ok(other) => {
                let outcome = Outcome::Info(format!("unexpected answer {other:?}"));
                self.complete(&outcome, invoke, &node);
                None
            }
            outcome => {
                self.complete(&outcome, invoke, &node);
                None
            }
        }
    }

    /// A recorded register write (with a TTL of `ttl_secs`, if any) or delete (`value = None`).
    async fn write(
        &mut self,
        key: &str,
        value: Option<String>,
        seen: Option<ReadResult>,
        ttl_secs: Option<u64>,
    ) {
        let node = self.pick_node();
        let (saw, context) = seen.map_or((Vec::new(), String::new()), |r| (r.values, r.context));
        let op = match &value {
            Some(v) => Op::Write {
                key: key.to_string(),
                value: v.clone(),
                saw,
                ttl_ms: ttl_secs.map(|s| s * 1_000),
            },
            None => Op::Delete {
                key: key.to_string(),
                saw,
            },
        };
        self.record(Status::Invoke, op.clone(), &node, None);
        let w = self.write_quorum();
        let request = ClientRequest::Put {
            key: key.to_string(),
            context,
            value,
            w: w.into(),
            ttl_secs,
        };
        let sent_ms = sim_now_ms();
        let outcome = self.call(&node, request).await;
        self.env.tally.record(w, sent_ms, &outcome);
        self.written.insert(key.to_string());
        self.complete(&outcome, op, &node);
    }

    async fn register_op(&mut self) {
        let key = {
            let keys = &self.env.keys.registers;
            keys[self.rng.random_range(0..keys.len())].clone()
        };
        let roll: u32 = self.rng.random_range(0..100);
        if roll < 15 && !self.written.contains(&key) {
            let value = self.fresh("v");
            self.write(&key, Some(value), None, None).await;
            return;
        }
        let Some(read) = self.read(&key).await else {
            return;
        };
        if roll < 40 {
            return;
        }
        if roll < 50 && !read.context.is_empty() {
            self.write(&key, None, Some(read), None).await;
            return;
        }
        let value = self.fresh("v");
        self.write(&key, Some(value), Some(read), None).await;
    }

    /// An operation on a TTL key (module docs).
    async fn ttl_op(&mut self) {
        let key = {
            let keys = &self.env.keys.ttl;
            keys[self.rng.random_range(0..keys.len())].clone()
        };
        let roll: u32 = self.rng.random_range(0..100);
        let ttl_secs = match self.rng.random_range(0..5) {
            0 => None,
            _ => Some(self.rng.random_range(TTL_SECS_MIN..=TTL_SECS_MAX)),
        };
        if roll < 15 && !self.written.contains(&key) {
            let value = self.fresh("v");
            self.write(&key, Some(value), None, ttl_secs).await;
            return;
        }
        let Some(read) = self.read(&key).await else {
            return;
        };
        if roll < 40 {
            return;
        }
        let value = self.fresh("v");
        self.write(&key, Some(value), Some(read), ttl_secs).await;
    }

    /// A recorded server-side cart read.
    async fn dt_read(&mut self, cart: &str) -> Option<(Vec<String>, String)> {
        let node = self.pick_node();
        let invoke = Op::DtCartRead {
            cart: cart.to_string(),
            items: Vec::new(),
        };
        self.record(Status::Invoke, invoke.clone(), &node, None);
        let request = ClientRequest::DtGet {
            key: cart.to_string(),
            r: self.read_quorum().into(),
        };
        match self.call(&node, request).await {
            Outcome::Ok(ClientResponse::DtRead { items, context, .. }) => {
                let items: Vec<String> = items.into_iter().map(|(item, _)| item).collect();
                let op = Op::DtCartRead {
                    cart: cart.to_string(),
                    items: items.clone(),
                };
                self.record(Status::Ok, op, &node, None);
                Some((items, context))
            }
            Outcome::Ok(other) => {
                let outcome = Outcome::Info(format!("unexpected answer {other:?}"));
                self.complete(&outcome, invoke, &node);
                None
            }
            outcome => {
                self.complete(&outcome, invoke, &node);
                None
            }
        }
    }

    /// A recorded server-side cart operation: `op` with the context token `context`.
    async fn dt_post(&mut self, cart: &str, recorded: Op, op: DtOp, context: String) {
        let node = self.pick_node();
        self.record(Status::Invoke, recorded.clone(), &node, None);
        let w = self.write_quorum();
        let request = ClientRequest::DtPost {
            key: cart.to_string(),
            context,
            op,
            w: w.into(),
        };
        let sent_ms = sim_now_ms();
        let outcome = match self.call(&node, request).await {
            Outcome::Ok(answer @ ClientResponse::Written { .. }) => Outcome::Ok(answer),
            Outcome::Ok(other) => Outcome::Info(format!("unexpected answer {other:?}")),
            outcome => outcome,
        };
        self.env.tally.record(w, sent_ms, &outcome);
        self.complete(&outcome, recorded, &node);
    }

    /// An operation on a server-side cart (module docs).
    async fn dt_cart_op(&mut self) {
        let cart = {
            let keys = &self.env.keys.dt_carts;
            keys[self.rng.random_range(0..keys.len())].clone()
        };
        let roll: u32 = self.rng.random_range(0..100);
        if roll < 55 {
            let item = self.fresh("d");
            let recorded = Op::DtCartAdd {
                cart: cart.clone(),
                item: item.clone(),
            };
            let op = DtOp::CartAdd { item, qty: 1 };
            self.dt_post(&cart, recorded, op, String::new()).await;
            return;
        }
        let Some((items, context)) = self.dt_read(&cart).await else {
            return;
        };
        if roll < 75 || items.is_empty() {
            return;
        }
        let item = items[self.rng.random_range(0..items.len())].clone();
        let recorded = Op::DtCartRemove {
            cart: cart.clone(),
            item: item.clone(),
        };
        self.dt_post(&cart, recorded, DtOp::CartRemove { item }, context)
            .await;
    }

    async fn cart_op(&mut self) {
        let cart = {
            let keys = &self.env.keys.carts;
            keys[self.rng.random_range(0..keys.len())].clone()
        };
        let item = self.fresh("i");
        let mut op = Op::CartAdd {
            cart: cart.clone(),
            item: item.clone(),
            stale: false,
        };
        let node = self.pick_node();
        self.record(Status::Invoke, op.clone(), &node, None);
        let r = self.read_quorum();
        let read = self
            .call(
                &node,
                ClientRequest::Get {
                    key: cart.clone(),
                    r: r.into(),
                },
            )
            .await;
        let (items, context) = match read {
            Outcome::Ok(ClientResponse::Read {
                values, context, ..
            }) => {
                let mut items: BTreeSet<String> = values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .filter(|i| !i.is_empty())
                    .map(str::to_string)
                    .collect();
                // A read that misses this process's own last add is stale: the write below
                // will not supersede that add's version.
                let stale = self
                    .last_cart_add
                    .get(&cart)
                    .is_some_and(|last| !items.contains(last));
                op = Op::CartAdd {
                    cart: cart.clone(),
                    item: item.clone(),
                    stale,
                };
                items.insert(item.clone());
                (items, context)
            }
            Outcome::Ok(other) => {
                let e = format!("cart read: unexpected answer {other:?}");
                self.complete(&Outcome::Fail(e), op, &node);
                return;
            }
            Outcome::Fail(e) | Outcome::Info(e) => {
                // Nothing was written: the add definitely did not happen.
                self.complete(&Outcome::Fail(format!("cart read failed: {e}")), op, &node);
                return;
            }
        };
        let value = items.into_iter().collect::<Vec<_>>().join(",");
        let node = self.pick_node();
        let w = self.write_quorum();
        let sent_ms = sim_now_ms();
        let outcome = self
            .call(
                &node,
                ClientRequest::Put {
                    key: cart.clone(),
                    context,
                    value: Some(value),
                    w: w.into(),
                    ttl_secs: None,
                },
            )
            .await;
        self.env.tally.record(w, sent_ms, &outcome);
        if matches!(outcome, Outcome::Ok(_)) {
            self.last_cart_add.insert(cart, item);
        }
        self.complete(&outcome, op, &node);
    }
}

/// A client host's software: operations until `until_ms`, then done.
pub async fn client_main(env: ClientEnv) -> turmoil::Result {
    let name = format!("client{}", env.index + 1);
    let mut rng = StdRng::seed_from_u64(env.seed);
    let rpc: Client = RpcClient::with_connector(rpc_config(&name), SimConnector, rng.random())?;
    let process = env.index as u64;
    let mut worker = Worker {
        env,
        rpc,
        rng,
        process,
        generation: 0,
        counter: 0,
        written: BTreeSet::new(),
        last_cart_add: std::collections::BTreeMap::new(),
    };
    while sim_now_ms() < worker.env.until_ms {
        match worker.rng.random_range(0..20) {
            0..6 => worker.register_op().await,
            6..11 => worker.cart_op().await,
            11..16 => worker.dt_cart_op().await,
            _ => worker.ttl_op().await,
        }
        let think = worker.rng.random_range(0..=THINK_MS_MAX);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    Ok(())
}

/// The final-read client: reads every key with `r = all` through the coordinator (trying each
/// member of the final layout, `nodes`, in turn until one answers) and records each as a final
/// read of node [`yeskv_check::MERGED_NODE`], made when the answering request was sent: a
/// register or cart key's sibling values, a server-side cart's items joined by `,` (no value
/// when not found).
pub async fn final_reads_main(
    nodes: Vec<NodeId>,
    keys: Keys,
    recorder: Recorder,
    seed: u64,
) -> turmoil::Result {
    let rpc: Client = RpcClient::with_connector(rpc_config("final"), SimConnector, seed)?;
    for (k, key) in keys.all().enumerate() {
        let mut result = None;
        for attempt in 0..nodes.len() * 2 {
            let node = &nodes[(k + attempt) % nodes.len()];
            let request = match keys.is_dt(key) {
                false => ClientRequest::Get {
                    key: key.clone(),
                    r: "all".into(),
                },
                true => ClientRequest::DtGet {
                    key: key.clone(),
                    r: "all".into(),
                },
            };
            let sent_ms = sim_now_ms();
            let answer = rpc
                .call(
                    &format!("{node}:{CLIENT_PORT}"),
                    &request,
                    Duration::from_millis(CLIENT_TIMEOUT_MS),
                )
                .await;
            match answer {
                Ok(ClientResponse::Read { values, .. }) => {
                    result = Some((values, sent_ms));
                    break;
                }
                Ok(ClientResponse::DtRead { found, items, .. }) => {
                    let joined = items
                        .into_iter()
                        .map(|(item, _)| item)
                        .collect::<Vec<_>>()
                        .join(",");
                    result = Some((if found { vec![joined] } else { Vec::new() }, sent_ms));
                    break;
                }
                other => {
                    recorder.note(
                        sim_now_ms(),
                        crate::trace::Kind::Node,
                        format!("final read of {key} through {node} failed: {other:?}"),
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Some((values, sent_ms)) = result {
            recorder.final_read(
                sim_now_ms(),
                yeskv_check::history::FinalRead {
                    key: key.clone(),
                    node: yeskv_check::MERGED_NODE.to_string(),
                    values,
                    time_ms: Some(sent_ms),
                },
            );
        }
    }
    Ok(())
}
