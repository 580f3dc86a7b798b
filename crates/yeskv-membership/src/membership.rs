//! The runtime: runs chitchat on the chosen transport, folds its state into the
//! [`MemberTable`] on every liveness change and every gossip round, and publishes the
//! [`MembershipView`] on a watch channel. This is the only module with tasks and locks.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    NodeState, ProtocolVersion,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use yeskv_core::NodeId;

use crate::config::{MembershipConfig, HEARTBEAT_SAMPLES_MAX};
use crate::error::{Error, Result};
use crate::table::{ForgetRefused, MemberTable, Observation};
use crate::transport::{
    CountingSocket, GossipCounters, GossipStats, GossipTransport, OpenedSocket,
};
use crate::view::MembershipView;
use crate::wire::{Decoded, NodeInfo, KEY_LAYOUT_VERSION};

/// Counters of one node's membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Gossip traffic.
    pub gossip: GossipStats,
    /// Observations of new node ids dropped because the view held
    /// [`MembershipConfig::members_max`] members (refreshes × ids).
    pub members_over_limit: u64,
}

/// One node's cluster membership: gossip, failure detection and the resulting view.
///
/// Dropping it stops gossip at once, as a crash would (peers notice through the failure
/// detector; chitchat has no goodbye message); [`Membership::shutdown`] does the same and waits
/// until the socket is closed.
pub struct Membership {
    shared: Arc<Shared>,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    handle: Option<ChitchatHandle>,
    refresher: Option<JoinHandle<()>>,
    gossip_addr: SocketAddr,
    generation: u64,
}

struct Shared {
    table: Mutex<MemberTable>,
    view_tx: watch::Sender<MembershipView>,
    counters: Arc<GossipCounters>,
    /// Incarnations already logged as unusable, so a bad peer is logged once, not every round.
    warned: Mutex<HashSet<(Arc<str>, u64)>>,
    warned_max: usize,
}

impl Membership {
    /// Starts gossiping on `transport` with a generation of the current Unix time in
    /// milliseconds (a restarted node must start at least a millisecond later, on a clock that
    /// did not go back, to be told apart from its previous life).
    pub async fn start(config: MembershipConfig, transport: GossipTransport) -> Result<Membership> {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self::start_with_generation(config, transport, generation).await
    }

    /// Starts gossiping with an explicit generation: for simulators, whose clock is not the
    /// wall clock. Generations of one node id must grow from one start to the next.
    pub async fn start_with_generation(
        config: MembershipConfig,
        transport: GossipTransport,
        generation: u64,
    ) -> Result<Membership> {
        config.validate()?;
        let listen_addr = config.gossip_listen_addr()?;
        let counters = Arc::new(GossipCounters::default());
        let socket = transport
            .open(listen_addr, &config.cluster_id, &counters)
            .await
            .map_err(|error| Error::Bind {
                addr: listen_addr,
                reason: format!("{error:#}"),
            })?;
        let bound_addr = socket.local_addr().map_err(|error| Error::Bind {
            addr: listen_addr,
            reason: format!("{error:#}"),
        })?;
        let gossip_addr = config.gossip_advertise_addr_for(bound_addr)?;
        let socket = CountingSocket::new(socket, counters.clone(), config.cluster_id.clone());

        let info = NodeInfo {
            zone: config.zone.clone(),
            region: config.region.clone(),
            http_addr: config.http_addr.clone(),
            peer_addr: config.peer_addr.clone(),
            layout_version: config.layout_version,
            release: Some(env!("CARGO_PKG_VERSION").to_string()),
        };
        let dead_node_grace = std::time::Duration::from_millis(config.dead_node_grace_ms);
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(config.node_id.as_str(), generation, gossip_addr),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval(),
            listen_addr: bound_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                sampling_window_size: HEARTBEAT_SAMPLES_MAX,
                max_interval: std::time::Duration::from_millis(config.heartbeat_interval_max_ms),
                initial_interval: config.heartbeat_interval_prior(),
                dead_node_grace_period: dead_node_grace,
            },
            // yeskv never deletes its keys; tombstones would only come from a future schema.
            marked_for_deletion_grace_period: dead_node_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // V1 compresses digests. Every yeskv node runs chitchat 0.13, which reads both.
            protocol_version: ProtocolVersion::V1,
        };
        let handle = spawn_chitchat(
            chitchat_config,
            info.to_key_values(),
            &OpenedSocket::new(Box::new(socket)),
        )
        .await
        .map_err(|error| Error::Gossip {
            reason: format!("{error:#}"),
        })?;
        let chitchat = handle.chitchat();

        let table = MemberTable::new(config.node_id.clone(), generation, info, config.members_max);
        let (view_tx, _) = watch::channel(table.view());
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            view_tx,
            counters,
            warned: Mutex::new(HashSet::new()),
            warned_max: config.members_max.saturating_mul(4),
        });
        let refresher = tokio::spawn(refresh_loop(
            chitchat.clone(),
            shared.clone(),
            config.gossip_interval(),
        ));
        tracing::info!(
            node = %config.node_id,
            generation,
            %gossip_addr,
            cluster = %config.cluster_id,
            seeds = ?config.seeds,
            "membership started"
        );
        Ok(Membership {
            shared,
            chitchat,
            handle: Some(handle),
            refresher: Some(refresher),
            gossip_addr,
            generation,
        })
    }

    /// The current view.
    pub fn view(&self) -> MembershipView {
        self.shared.view_tx.borrow().clone()
    }

    /// A receiver of the view, marked changed whenever a member joins, goes up or down, is
    /// forgotten or changes what it gossips.
    pub fn subscribe(&self) -> watch::Receiver<MembershipView> {
        self.shared.view_tx.subscribe()
    }

    /// Announces the layout version this node now holds. Versions only move forward.
    pub async fn set_layout_version(&self, layout_version: u64) -> Result<()> {
        let mut chitchat = self.chitchat.lock().await;
        let mut table = self.shared.table.lock();
        let current = table.self_member().layout_version;
        if layout_version < current {
            return Err(Error::LayoutVersionRegressed {
                current,
                requested: layout_version,
            });
        }
        table.set_self_layout_version(layout_version);
        chitchat
            .self_node_state()
            .set(KEY_LAYOUT_VERSION, layout_version);
        self.shared.publish(&table);
        Ok(())
    }

    /// Drops a down member from the view for good (a node removed from the cluster). Returns
    /// whether it was there. Refused for a member that is up and for this node.
    pub fn forget(&self, id: &NodeId) -> Result<bool> {
        let mut table = self.shared.table.lock();
        let forgotten = table.forget(id).map_err(|refused| Error::CannotForget {
            id: id.clone(),
            reason: match refused {
                ForgetRefused::Up => "it is up",
                ForgetRefused::SelfNode => "it is this node",
            },
        })?;
        self.shared.publish(&table);
        Ok(forgotten)
    }

    /// Counters since start.
    pub fn stats(&self) -> MembershipStats {
        MembershipStats {
            gossip: self.shared.counters.snapshot(),
            members_over_limit: self.shared.table.lock().members_over_limit(),
        }
    }

    /// The gossip address announced to peers (the bound one when the configuration said port 0).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// This incarnation's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Stops gossip and waits until the gossip task has ended and its socket is closed.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
        }
        match self.handle.take() {
            Some(handle) => handle.shutdown().await.map_err(|error| Error::Gossip {
                reason: format!("{error:#}"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

impl Shared {
    /// Publishes the table's view if it differs from the last one published.
    fn publish(&self, table: &MemberTable) {
        let view = table.view();
        self.view_tx.send_if_modified(|current| {
            if *current == view {
                false
            } else {
                *current = view;
                true
            }
        });
    }

    /// Reads one node state; `None` (logged once per incarnation) when it is unusable.
    fn observe(
        &self,
        chitchat_id: &ChitchatId,
        state: &NodeState,
        live: bool,
    ) -> Option<Observation> {
        let id = match NodeId::new(&*chitchat_id.node_id) {
            Ok(id) => id,
            Err(reason) => {
                self.warn_once(chitchat_id, &reason.to_string());
                return None;
            }
        };
        let info = match NodeInfo::decode(|key| state.get(key)) {
            Decoded::Complete(info) => Some(info),
            Decoded::Incomplete => None,
            Decoded::Invalid(reason) => {
                self.warn_once(chitchat_id, &reason);
                None
            }
        };
        Some(Observation {
            id,
            generation: chitchat_id.generation_id,
            live,
            info,
        })
    }

    fn warn_once(&self, chitchat_id: &ChitchatId, reason: &str) {
        let mut warned = self.warned.lock();
        if warned.len() >= self.warned_max {
            warned.clear();
        }
        if warned.insert((chitchat_id.node_id.clone(), chitchat_id.generation_id)) {
            tracing::warn!(peer = ?chitchat_id, reason, "ignoring a peer's gossip state");
        }
    }
}

/// Refreshes the view whenever chitchat's live set changes and at every gossip interval (which
/// catches what the live-set watcher does not report: dead nodes' state, garbage collection).
async fn refresh_loop(
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    shared: Arc<Shared>,
    interval: std::time::Duration,
) {
    let mut live_nodes = chitchat.lock().await.live_nodes_watcher();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = live_nodes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ticker.tick() => {}
        }
        let observations: Vec<Observation> = {
            let chitchat = chitchat.lock().await;
            let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
            chitchat
                .node_states()
                .iter()
                .filter_map(|(chitchat_id, state)| {
                    shared.observe(chitchat_id, state, live.contains(chitchat_id))
                })
                .collect()
        };
        let mut table = shared.table.lock();
        table.observe(observations);
        shared.publish(&table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Membership>();
        assert_send_sync::<MembershipView>();
    }
}
