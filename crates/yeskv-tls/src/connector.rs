//! The node's internode connector: plain TCP (`--insecure`, loopback dev clusters) or mutual
//! TLS ([`TlsConnector`]), one type for the node's RPC client either way ([`NodeConnector`]).
//!
//! With TLS, after the handshake the connector checks the node the certificate names against
//! the node the caller meant to reach: the node's `expected` function maps the address called
//! to a node id (the layout's member with that peer address). An address no member has (a seed
//! contacted to join) may be any node of the CA; the RPC handshake then still checks that the
//! `Welcome` names the certificate's node.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use yeskv_rpc::{Connector, PeerIdentity, TcpConnector};

use crate::count_refused;
use crate::listener::identity_of;
use crate::material::TlsState;

/// Maps a peer address to the node id expected there, if known.
pub type ExpectedNode = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The server name sent in the TLS handshake (SNI). Never checked: a node is known by its node
/// id ([`crate::verify`]).
const SERVER_NAME: &str = "yeskv-node";

/// Mutual TLS to peers (see the module docs).
#[derive(Clone)]
pub struct TlsConnector {
    state: Arc<TlsState>,
    expected: ExpectedNode,
}

impl TlsConnector {
    /// Connects with the material of `state`; `expected` names the node expected at an address.
    pub fn new(state: Arc<TlsState>, expected: ExpectedNode) -> Self {
        TlsConnector { state, expected }
    }

    async fn connect(&self, addr: &str) -> io::Result<TlsStream<TcpStream>> {
        let tcp = TcpConnector.connect(addr).await?;
        let config = self.state.current().rpc_client.clone();
        let name = ServerName::try_from(SERVER_NAME)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = match tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
        {
            Ok(tls) => tls,
            Err(error) => {
                count_refused("tls");
                return Err(error);
            }
        };
        if let Some(expected) = (self.expected)(addr) {
            match identity_of(tls.get_ref().1.peer_certificates()) {
                PeerIdentity::Node(id) if id == expected => {}
                other => {
                    count_refused("identity");
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{addr} should be node {expected:?} but its certificate is {}",
                            describe(&other)
                        ),
                    ));
                }
            }
        }
        Ok(tls)
    }
}

fn describe(identity: &PeerIdentity) -> String {
    match identity {
        PeerIdentity::Node(id) => format!("node {id:?}'s"),
        PeerIdentity::NotANode(reason) => format!("not a node's ({reason})"),
        PeerIdentity::Unauthenticated => "missing".into(),
    }
}

/// The node's connector: see the module docs.
#[derive(Clone)]
pub enum NodeConnector {
    /// Plain TCP.
    Tcp,
    /// Mutual TLS.
    Tls(TlsConnector),
}

impl Connector for NodeConnector {
    type Stream = NodeStream;

    async fn connect(&self, addr: &str) -> io::Result<NodeStream> {
        match self {
            NodeConnector::Tcp => Ok(NodeStream::Tcp(TcpConnector.connect(addr).await?)),
            NodeConnector::Tls(tls) => Ok(NodeStream::Tls(Box::new(tls.connect(addr).await?))),
        }
    }

    fn peer_identity(stream: &NodeStream) -> PeerIdentity {
        match stream {
            NodeStream::Tcp(_) => PeerIdentity::Unauthenticated,
            NodeStream::Tls(tls) => identity_of(tls.get_ref().1.peer_certificates()),
        }
    }
}

/// A client stream of [`NodeConnector`].
pub enum NodeStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NodeStream::Tcp(s) => s.is_write_vectored(),
            NodeStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
