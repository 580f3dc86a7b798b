//! The network seam: which transport gossip runs over, and a counting wrapper around it.
//!
//! chitchat reaches the network only through its `Transport` trait (`open(addr)` gives a
//! `Socket` with `send(to, envelope)` and `recv()`), so the gossip code is the same whatever
//! carries the datagrams:
//!
//! - [`GossipTransport::Udp`]: real UDP, production without a cluster keyring.
//! - [`GossipTransport::SealedUdp`]: real UDP, every packet encrypted and authenticated with
//!   the cluster keyring's gossip subkeys ([`crate::sealed`]).
//! - [`GossipTransport::Memory`]: chitchat's in-process [`MemoryNetwork`] (`ChannelTransport`):
//!   every node holding a clone of the same network reaches the others by (logical) address; it
//!   serializes every envelope like the wire would, counts bytes, and can cut links
//!   ([`MemoryNetwork::remove_link`]) to partition the cluster. It uses no sockets and no real
//!   time, so it runs under `tokio::time::pause` (virtual time) and inside a simulator's hosts.
//! - [`GossipTransport::Custom`]: any other implementation, such as chitchat's fault injectors
//!   ([`TransportExt::drop_message`], [`TransportExt::delay`]) or a simulator's own network.
//!
//! Whatever the choice, [`crate::Membership`] opens the socket itself (so a port 0 is resolved
//! before the node announces its address) and wraps it in a counting socket that feeds
//! [`GossipStats`]. The counting wrapper sees the decoded envelopes, so it also counts the SYNs
//! of other clusters this node refused and the refusals it received.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
pub use chitchat::transport::{
    ChannelTransport as MemoryNetwork, RecvOutcome, SendOutcome, Socket, Transport, TransportExt,
    UdpTransport,
};
use chitchat::{ChitchatEnvelope, ChitchatMessage};
use parking_lot::Mutex;

/// Which network gossip runs over; see the module docs.
pub enum GossipTransport {
    /// Real UDP sockets.
    Udp,
    /// Real UDP sockets, packets sealed with these keys ([`crate::sealed`]).
    SealedUdp(yeskv_core::keyring::Subkeys),
    /// The in-process network shared by every node holding a clone of it.
    Memory(MemoryNetwork),
    /// Any chitchat transport.
    Custom(Box<dyn Transport>),
}

impl GossipTransport {
    pub(crate) async fn open(
        &self,
        addr: SocketAddr,
        cluster_id: &str,
        counters: &Arc<GossipCounters>,
    ) -> anyhow::Result<Box<dyn Socket>> {
        match self {
            GossipTransport::Udp => UdpTransport.open(addr).await,
            GossipTransport::SealedUdp(keys) => Ok(Box::new(
                crate::sealed::SealedUdpSocket::open(
                    addr,
                    keys.clone(),
                    cluster_id.to_string(),
                    counters.clone(),
                )
                .await?,
            )),
            GossipTransport::Memory(network) => network.open(addr).await,
            GossipTransport::Custom(transport) => transport.open(addr).await,
        }
    }
}

impl std::fmt::Debug for GossipTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GossipTransport::Udp => "Udp",
            GossipTransport::SealedUdp(_) => "SealedUdp",
            GossipTransport::Memory(_) => "Memory",
            GossipTransport::Custom(_) => "Custom",
        })
    }
}

/// Gossip traffic of one node since it started. Relaxed counters: each is exact on its own, a
/// snapshot is not one instant across them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Bytes of gossip messages sent (serialized envelopes, without UDP/IP headers).
    pub bytes_sent: u64,
    /// Bytes of gossip messages received.
    pub bytes_received: u64,
    /// Messages sent (SYN, SYN-ACK, ACK, refusals).
    pub messages_sent: u64,
    /// Messages received and decoded.
    pub messages_received: u64,
    /// Sends the transport failed.
    pub send_errors: u64,
    /// SYNs received from nodes of another cluster; each was answered with a refusal and its
    /// content ignored.
    pub foreign_cluster_syns_received: u64,
    /// Refusals received: a peer said this node belongs to another cluster.
    pub refusals_received: u64,
    /// With sealed gossip: packets dropped because they did not open (forged, altered, other
    /// keys, replayed outside the window) or did not decode ([`crate::sealed`]).
    pub sealed_refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct GossipCounters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    send_errors: AtomicU64,
    foreign_cluster_syns_received: AtomicU64,
    refusals_received: AtomicU64,
    sealed_refused: AtomicU64,
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

impl GossipCounters {
    pub(crate) fn snapshot(&self) -> GossipStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        GossipStats {
            bytes_sent: read(&self.bytes_sent),
            bytes_received: read(&self.bytes_received),
            messages_sent: read(&self.messages_sent),
            messages_received: read(&self.messages_received),
            send_errors: read(&self.send_errors),
            foreign_cluster_syns_received: read(&self.foreign_cluster_syns_received),
            refusals_received: read(&self.refusals_received),
            sealed_refused: read(&self.sealed_refused),
        }
    }

    pub(crate) fn count_sealed_refused(&self) {
        add(&self.sealed_refused, 1);
    }
}

/// A socket that counts what goes through it.
pub(crate) struct CountingSocket {
    inner: Box<dyn Socket>,
    counters: Arc<GossipCounters>,
    cluster_id: String,
}

impl CountingSocket {
    pub(crate) fn new(
        inner: Box<dyn Socket>,
        counters: Arc<GossipCounters>,
        cluster_id: String,
    ) -> Self {
        CountingSocket {
            inner,
            counters,
            cluster_id,
        }
    }
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        match self.inner.send(to, envelope).await {
            Ok(outcome) => {
                add(&self.counters.bytes_sent, outcome.num_bytes_sent as u64);
                add(&self.counters.messages_sent, 1);
                Ok(outcome)
            }
            Err(error) => {
                add(&self.counters.send_errors, 1);
                Err(error)
            }
        }
    }

    /// Cancellation-safe as long as the inner socket's `recv` is: the counting happens only once
    /// a message was handed over.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let outcome = self.inner.recv().await?;
        add(
            &self.counters.bytes_received,
            outcome.num_bytes_received as u64,
        );
        add(&self.counters.messages_received, 1);
        match &outcome.envelope.message {
            ChitchatMessage::Syn { cluster_id, .. } if *cluster_id != self.cluster_id => {
                add(&self.counters.foreign_cluster_syns_received, 1);
            }
            ChitchatMessage::BadCluster => add(&self.counters.refusals_received, 1),
            _ => {}
        }
        Ok(outcome)
    }
}

/// Hands chitchat a socket that is already open: `spawn_chitchat` opens its socket itself, but
/// the node must know the bound address (port 0) before it builds its identity.
pub(crate) struct OpenedSocket(Mutex<Option<Box<dyn Socket>>>);

impl OpenedSocket {
    pub(crate) fn new(socket: Box<dyn Socket>) -> Self {
        OpenedSocket(Mutex::new(Some(socket)))
    }
}

#[async_trait]
impl Transport for OpenedSocket {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self.0.lock().take().ok_or_else(|| {
            anyhow::anyhow!("the gossip socket for {listen_addr} was already taken")
        })?;
        Ok(socket)
    }
}
