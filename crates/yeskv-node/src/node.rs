//! Assembling a node: the one place its parts are put together.
//!
//! The server (`server.rs`), the simulator (`yeskv-sim`) and the multi-node tests all build a
//! node here, from the same parts — the replica (over whatever engine), the topology, the
//! internode client, the clock and the settings — so they run the same node. What each brings of
//! its own is only what is outside the node: the server opens RocksDB, runs the layout service,
//! gossip and HTTP; the simulator brings a simulated disk, network and clock.
//!
//! [`NodeBuilder::build`] makes the [`NodeContext`], the [`Coordinator`] and the [`Dispatcher`]
//! of peer messages, and starts the background workers (hinted handoff, anti-entropy, the
//! reaper, cross-region replication, expiry compactions, receiving partitions) in [`Workers`]. [`Node::serve_peers`] answers peers on a listener until the node
//! stops. [`Node::stop`] ends all of it and waits for every task it started.

use std::sync::Arc;

use yeskv_rpc::RpcServer;
use yeskv_storage::Engine;

use crate::aae::AaeSettings;
use crate::context::NodeContext;
use crate::coordinator::Coordinator;
use crate::dispatch::{Dispatcher, LayoutHandler};
use crate::handoff::HandoffSettings;
use crate::peer::{PeerRequest, PeerResponse};
use crate::reaper::{Reaper, ReaperSettings};
use crate::transfer::TransferSettings;
use crate::workers::{Spawner, StopSignal, WorkerStatus, Workers};

/// The background repair a node runs.
#[derive(Clone, Debug)]
pub struct RepairSettings {
    /// Hinted handoff.
    pub handoff: HandoffSettings,
    /// Anti-entropy exchanges.
    pub aae: AaeSettings,
    /// The reaper.
    pub reaper: ReaperSettings,
    /// Cross-region replication ([`crate::xr`]).
    pub xr: crate::xr::XrSettings,
    /// Compactions for expired records ([`crate::expiry`]).
    pub expiry: crate::expiry::ExpirySettings,
}

/// What a node is built from (see the module docs).
pub struct NodeBuilder<E: Engine> {
    ctx: NodeContext<E>,
    repair: Option<RepairSettings>,
    transfer: Option<TransferSettings>,
    layout: Option<LayoutHandler>,
    spawn: Spawner,
    stop: Option<StopSignal>,
}

impl<E: Engine> NodeBuilder<E> {
    /// A node over this context (its replica, topology, peer client, clock and settings), with
    /// no background repair and no layout service yet.
    pub fn new(ctx: NodeContext<E>) -> Self {
        NodeBuilder {
            ctx,
            repair: None,
            transfer: None,
            layout: None,
            spawn: crate::workers::tokio_spawner,
            stop: None,
        }
    }

    /// Runs hinted handoff, anti-entropy and the reaper with these settings.
    pub fn repair(mut self, settings: RepairSettings) -> Self {
        self.repair = Some(settings);
        self
    }

    /// Receives the partitions the layout makes this node a new holder of, and reports them
    /// ([`crate::transfer`]).
    pub fn transfers(mut self, settings: TransferSettings) -> Self {
        self.transfer = Some(settings);
        self
    }

    /// Answers the layout group's messages with `handler`.
    pub fn layout(mut self, handler: LayoutHandler) -> Self {
        self.layout = Some(handler);
        self
    }

    /// Spawns the node's tasks with `spawn` (the product's `tokio::spawn` unless set).
    pub fn spawner(mut self, spawn: Spawner) -> Self {
        self.spawn = spawn;
        self
    }

    /// Stops the workers and the internode server when `signal` turns true, all at once,
    /// instead of at [`Node::stop`] (the simulator's clean restarts, which also stop the
    /// node's client server).
    pub fn stop_signal(mut self, signal: StopSignal) -> Self {
        self.stop = Some(signal);
        self
    }

    /// The node, its workers started.
    pub fn build(self) -> Node<E> {
        let coordinator = Coordinator::new(self.ctx.clone());
        let dispatcher = Dispatcher::new(coordinator.clone(), self.layout);
        let mut workers = Workers::new(self.spawn, self.stop.clone());
        if let Some(repair) = self.repair {
            start_repair(&mut workers, &self.ctx, repair);
        }
        if let Some(transfer) = self.transfer {
            let c = self.ctx.clone();
            self.ctx.transfers().set_limit(transfer.rate_bytes_per_s);
            let settings = transfer.clone();
            workers.start("transfer", move |stop, status| async move {
                crate::workers::every(settings.interval, stop, &status, || {
                    crate::transfer::round(&c, &settings)
                })
                .await
            });
            let c = self.ctx.clone();
            workers.start("cleanup", move |stop, status| async move {
                let memory = crate::transfer::Cleanup::default();
                crate::workers::every(transfer.interval, stop, &status, || {
                    crate::transfer::cleanup(&c, &transfer, &memory)
                })
                .await
            });
        }
        let servers_external = self.stop.is_some();
        let servers_stop = self.stop.unwrap_or_default();
        Node {
            coordinator,
            dispatcher,
            workers,
            spawn: self.spawn,
            servers_external,
            servers_stop,
            servers: Vec::new(),
        }
    }
}

/// Starts hinted handoff, anti-entropy exchanges, the reaper, cross-region replication and the
/// expiry compactions, in that order.
fn start_repair<E: Engine>(workers: &mut Workers, ctx: &NodeContext<E>, repair: RepairSettings) {
    let RepairSettings {
        handoff,
        aae,
        reaper,
        xr,
        expiry,
    } = repair;
    let c = ctx.clone();
    workers.start("handoff", move |stop, status| async move {
        crate::workers::every(handoff.interval, stop, &status, || {
            crate::handoff::worker_round(&c, &handoff)
        })
        .await
    });
    if !aae.interval.is_zero() {
        let c = ctx.clone();
        workers.start("anti-entropy", move |stop, status| async move {
            crate::workers::every(aae.interval, stop, &status, || crate::aae::round(&c, &aae)).await
        });
    }
    let c = ctx.clone();
    workers.start("reaper", move |stop, status| async move {
        // The round's future cannot borrow the worker's state across calls of the closure, so
        // the reaper is taken out of its cell for each round and put back after.
        let cell = parking_lot::Mutex::new(Reaper::default());
        crate::workers::every(reaper.interval, stop, &status, || async {
            let mut r = std::mem::take(&mut *cell.lock());
            let outcome = r.round(&c, &reaper).await;
            *cell.lock() = r;
            outcome
        })
        .await
    });
    let c = ctx.clone();
    workers.start("cross-region", move |stop, status| {
        crate::xr::run(c, xr, stop, status)
    });
    let c = ctx.clone();
    workers.start("expiry", move |stop, status| async move {
        let cell = parking_lot::Mutex::new(crate::expiry::ExpiryWorker::default());
        crate::workers::every(expiry.interval, stop, &status, || async {
            let mut w = std::mem::take(&mut *cell.lock());
            let outcome = w.round(&c, &expiry).await;
            *cell.lock() = w;
            outcome
        })
        .await
    });
}

/// A running node (see the module docs).
pub struct Node<E: Engine> {
    coordinator: Coordinator<E>,
    dispatcher: Dispatcher<E>,
    workers: Workers,
    spawn: Spawner,
    /// The internode server's stop signal, and whether it comes from outside.
    servers_external: bool,
    servers_stop: StopSignal,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl<E: Engine> Node<E> {
    /// The coordinator of client requests (and, through it, the node's context).
    pub fn coordinator(&self) -> &Coordinator<E> {
        &self.coordinator
    }

    /// The node's context.
    pub fn context(&self) -> &NodeContext<E> {
        self.coordinator.context()
    }

    /// The dispatcher of peer messages (for a server of one's own, as the tests' fault gates).
    pub fn dispatcher(&self) -> &Dispatcher<E> {
        &self.dispatcher
    }

    /// The background workers' statuses.
    pub fn workers(&self) -> Vec<Arc<WorkerStatus>> {
        self.workers.statuses()
    }

    /// Starts a one-off background job reported as worker `name` (the tree rebuild after a
    /// crash), joined at [`Node::stop`] like the others.
    pub fn start_job<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(StopSignal, Arc<WorkerStatus>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.workers.start(name, run);
    }

    /// Answers peers' messages arriving on `listener` until the node stops.
    pub fn serve_peers<L>(&mut self, listener: L, server: RpcServer<PeerRequest, PeerResponse>)
    where
        L: yeskv_rpc::Listener + Send + 'static,
    {
        let dispatcher = self.dispatcher.clone();
        let stop = self.servers_stop.clone();
        let task = async move {
            server
                .serve(
                    listener,
                    move |peer: yeskv_rpc::PeerInfo, request| {
                        let d = dispatcher.clone();
                        async move { d.serve_peer(&peer, request).await }
                    },
                    async move { stop.stopped().await },
                )
                .await;
        };
        self.servers.push((self.spawn)(Box::pin(task)));
    }

    /// Stops the node's tasks and waits for each: first the workers end their rounds (the
    /// node still answers its peers meanwhile), then the internode server closes once the calls
    /// in flight are answered. With a stop signal from outside, waits for them to end.
    pub async fn stop(&mut self) {
        if self.servers_external {
            // Signalled from outside, all at once: wait for the server, then the workers.
            self.join_servers().await;
            self.workers.stop_and_join().await;
            return;
        }
        self.workers.stop_and_join().await;
        self.servers_stop.stop();
        self.join_servers().await;
    }

    async fn join_servers(&mut self) {
        for server in self.servers.drain(..) {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "the internode server ended abnormally");
            }
        }
    }
}
