//! [`TlsListener`]: accepts TCP connections and hands out TLS streams whose handshake is done.
//!
//! A background task accepts; each handshake runs in its own task (at most
//! [`HANDSHAKES_INFLIGHT_MAX`] at once, each within [`HANDSHAKE_TIMEOUT`]); finished streams
//! queue on a channel that [`TlsListener::accept`] reads, which is therefore cancel-safe. A
//! failed handshake (plain HTTP on an HTTPS port, a certificate from another CA, a client
//! certificate missing where one is required) closes that connection, is counted
//! (`yeskv_peer_refused_total{reason="tls"}`) and logged at debug: it never reaches the server.
//! Dropping the listener stops the accept task (and closes the socket).
//!
//! The server config is taken from [`TlsState`] for every connection, so a reload applies to
//! the next handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::identity::node_id_of;
use crate::material::TlsState;
use crate::{count_refused, HANDSHAKES_INFLIGHT_MAX, HANDSHAKE_TIMEOUT};

/// Streams whose handshake finished, waiting for `accept`.
const READY_QUEUE_MAX: usize = 64;
/// Pause after an accept error (for example too many open files).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Which of the node's servers a listener serves: picks the server config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The client HTTP API: no client certificate.
    Http,
    /// Internode RPC: a client certificate of the cluster CA required.
    Rpc,
}

/// See the module docs.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Serves TLS on `tcp` for `role`, with the material of `state`. Must be called inside a
    /// tokio runtime.
    pub fn new(tcp: TcpListener, state: Arc<TlsState>, role: Role) -> io::Result<TlsListener> {
        let local_addr = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE_MAX);
        let config = move || -> Arc<ServerConfig> {
            let material = state.current();
            match role {
                Role::Http => material.http_server.clone(),
                Role::Rpc => material.rpc_server.clone(),
            }
        };
        let accept_task = tokio::spawn(accept_loop(tcp, config, sender));
        Ok(TlsListener {
            ready,
            local_addr,
            accept_task,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next stream whose handshake finished. Cancel-safe. Fails only if the accept task
    /// ended (it does not, short of a panic).
    pub async fn accept(&mut self) -> io::Result<(TlsStream<TcpStream>, SocketAddr)> {
        self.ready
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the TLS accept task ended"))
    }
}

async fn accept_loop(
    tcp: TcpListener,
    config: impl Fn() -> Arc<ServerConfig> + Send + 'static,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(HANDSHAKES_INFLIGHT_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, addr) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(config());
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, addr)).await;
                }
                Ok(Err(error)) => {
                    count_refused("tls");
                    tracing::debug!(peer = %addr, %error, "TLS handshake failed");
                }
                Err(_elapsed) => {
                    count_refused("tls");
                    tracing::debug!(peer = %addr, "TLS handshake timed out");
                }
            }
        });
    }
}

/// Who the client of a server-side stream is: the node its certificate names.
pub fn client_identity(stream: &TlsStream<TcpStream>) -> yeskv_rpc::PeerIdentity {
    let certificates = stream.get_ref().1.peer_certificates();
    identity_of(certificates)
}

/// The identity a presented chain gives (its first certificate names the node).
pub(crate) fn identity_of(
    certificates: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> yeskv_rpc::PeerIdentity {
    use yeskv_rpc::PeerIdentity;
    let Some(leaf) = certificates.and_then(|c| c.first()) else {
        return PeerIdentity::NotANode("no certificate presented".into());
    };
    match node_id_of(leaf) {
        Ok(Some(id)) => PeerIdentity::Node(id),
        Ok(None) => PeerIdentity::NotANode("the certificate names no node".into()),
        Err(e) => PeerIdentity::NotANode(e.to_string()),
    }
}

impl yeskv_rpc::Listener for TlsListener {
    type Stream = TlsStream<TcpStream>;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        TlsListener::accept(self).await
    }

    fn peer_identity(stream: &Self::Stream) -> yeskv_rpc::PeerIdentity {
        client_identity(stream)
    }
}
