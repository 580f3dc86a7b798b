//! The seams between the RPC layer and the network: a [`Connector`] opens streams to peers, a
//! [`Listener`] accepts them. The transport only needs `AsyncRead + AsyncWrite` streams, so the
//! same code runs over real TCP ([`TcpConnector`], `tokio::net::TcpListener`) and, later, over a
//! simulated network (turmoil) in deterministic tests.
//!
//! To plug in another network, wrap its types in newtypes (the orphan rule forbids implementing
//! these traits for a foreign type directly in another crate) and implement the two traits; the
//! rest of the crate is unchanged.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Who the network layer proved the other end of a stream to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The network does not authenticate peers (plain TCP, the simulator): the node id a
    /// handshake announces is taken as claimed.
    Unauthenticated,
    /// The peer proved it is this node (a certificate naming it, checked by mutual TLS): a
    /// handshake announcing another node id is refused.
    Node(String),
    /// The peer authenticated but is not a node (why, for the refusal): always refused.
    NotANode(String),
}

/// A byte stream the transport can run a connection on.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Opens client streams to peers.
pub trait Connector: Send + Sync + 'static {
    /// The stream type a connection runs on.
    type Stream: Stream;

    /// Opens a stream to `addr` (`"host:port"`; resolved on every attempt, so a peer that moved
    /// is found again). The caller bounds the time this may take.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Who the server at the other end of `stream` is, as far as the network proved it
    /// (default: it does not).
    fn peer_identity(_stream: &Self::Stream) -> PeerIdentity {
        PeerIdentity::Unauthenticated
    }
}

/// Accepts server streams.
pub trait Listener: Send + 'static {
    /// The stream type a connection runs on.
    type Stream: Stream;

    /// Waits for the next incoming stream and the address it came from. Must be cancel-safe
    /// (the server drops this future when it shuts down).
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// Who the client at the other end of `stream` is, as far as the network proved it
    /// (default: it does not).
    fn peer_identity(_stream: &Self::Stream) -> PeerIdentity {
        PeerIdentity::Unauthenticated
    }
}

/// Connects over real TCP with `TCP_NODELAY` set (the writer task already coalesces frames, so
/// Nagle's algorithm would only add latency).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }
}
