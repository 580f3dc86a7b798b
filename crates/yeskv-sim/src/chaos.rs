//! Message loss and duplication on the internode data path: a [`ChaosPeers`] wraps the node's
//! real RPC client (the coordinator's `PeerClient`) and, while a loss or duplication fault is
//! active, drops a request, drops its reply, or sends it twice.
//!
//! Why here and not in the network: turmoil's TCP is reliable and ordered (as TCP is), and its
//! random link failures cut whole links rather than single messages. What a lost message means
//! to a node is a call that never gets an answer: the caller times out and cannot know whether
//! the request ran. So:
//! - *request dropped*: the request is not sent; the caller waits its full deadline and gets a
//!   timeout (nothing ran);
//! - *reply dropped*: the request runs on the peer, the answer is discarded, the caller times out
//!   (the request ran: the indeterminate case);
//! - *duplicated*: `Read` and `Merge` are sent twice (a retransmission; a merge is idempotent,
//!   so this must change nothing). `Coordinate` is never duplicated: a second copy would be a
//!   second client write, which is the forwarding coordinator's decision, not the network's.
//!
//! Decisions come from one seeded RNG shared by all nodes (the simulation is single-threaded, so
//! the order of draws is the order of calls: deterministic).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yeskv_node::peer::{CallFuture, PeerRequest, PeerResponse};
use yeskv_rpc::Call;
use yeskv_rpc::RpcClient;

use crate::net::SimConnector;

/// The node's internode RPC client over the simulated network.
pub type SimRpcClient = RpcClient<PeerRequest, PeerResponse, SimConnector>;

/// Counts of what the chaos layer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosCounts {
    /// Requests not sent.
    pub requests_dropped: u64,
    /// Replies discarded.
    pub replies_dropped: u64,
    /// Requests sent twice.
    pub duplicated: u64,
}

struct ChaosState {
    loss_rate: f64,
    duplicate_rate: f64,
    rng: StdRng,
    counts: ChaosCounts,
}

/// The current loss and duplication rates, shared by every node of a simulation.
pub struct NetChaos {
    state: Mutex<ChaosState>,
}

/// What to do with one call.
enum Fate {
    Deliver,
    DropRequest,
    DropReply,
    Duplicate,
}

impl NetChaos {
    /// No loss, no duplication; later choices drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        NetChaos {
            state: Mutex::new(ChaosState {
                loss_rate: 0.0,
                duplicate_rate: 0.0,
                rng: StdRng::seed_from_u64(seed),
                counts: ChaosCounts::default(),
            }),
        }
    }

    /// Sets the share of calls that lose their request or their reply (half each).
    pub fn set_loss_rate(&self, rate: f64) {
        self.state.lock().loss_rate = rate.clamp(0.0, 1.0);
    }

    /// Sets the share of `Read`/`Merge` calls sent twice.
    pub fn set_duplicate_rate(&self, rate: f64) {
        self.state.lock().duplicate_rate = rate.clamp(0.0, 1.0);
    }

    /// What the chaos layer did so far.
    pub fn counts(&self) -> ChaosCounts {
        self.state.lock().counts
    }

    fn fate(&self, request: &PeerRequest) -> Fate {
        let mut s = self.state.lock();
        if s.loss_rate == 0.0 && s.duplicate_rate == 0.0 {
            return Fate::Deliver;
        }
        let (loss, dup) = (s.loss_rate, s.duplicate_rate);
        let roll: f64 = s.rng.random();
        let idempotent = matches!(request, PeerRequest::Replication(r) if r.is_idempotent());
        if roll < loss / 2.0 {
            s.counts.requests_dropped += 1;
            Fate::DropRequest
        } else if roll < loss {
            s.counts.replies_dropped += 1;
            Fate::DropReply
        } else if idempotent && roll < loss + dup {
            s.counts.duplicated += 1;
            Fate::Duplicate
        } else {
            Fate::Deliver
        }
    }
}

/// The coordinator's peer client with chaos (see the module docs).
pub struct ChaosPeers {
    inner: SimRpcClient,
    chaos: Arc<NetChaos>,
}

impl ChaosPeers {
    /// Wraps `inner`.
    pub fn new(inner: SimRpcClient, chaos: Arc<NetChaos>) -> Self {
        ChaosPeers { inner, chaos }
    }
}

/// A call the chaos layer lost (its request or its reply) ends as a timeout.
fn timed_out(timeout: Duration) -> yeskv_rpc::Error {
    yeskv_rpc::Error::Timeout {
        timeout_ms: timeout.as_millis() as u64,
    }
}

impl Call<PeerRequest, PeerResponse> for ChaosPeers {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: PeerRequest,
        timeout: Duration,
    ) -> CallFuture<'a> {
        let fate = self.chaos.fate(&request);
        Box::pin(async move {
            match fate {
                Fate::Deliver => self.inner.call(addr, &request, timeout).await,
                Fate::DropRequest => {
                    tokio::time::sleep(timeout).await;
                    Err(timed_out(timeout))
                }
                Fate::DropReply => {
                    let started = tokio::time::Instant::now();
                    let _ = self.inner.call(addr, &request, timeout).await;
                    tokio::time::sleep_until(started + timeout).await;
                    Err(timed_out(timeout))
                }
                Fate::Duplicate => {
                    let copy = self.inner.clone();
                    let (addr2, request2) = (addr.to_string(), request.clone());
                    tokio::spawn(async move {
                        let _ = copy.call(&addr2, &request2, timeout).await;
                    });
                    self.inner.call(addr, &request, timeout).await
                }
            }
        })
    }
}
