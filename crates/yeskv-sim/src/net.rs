//! The RPC seams of `yeskv-rpc` over turmoil's simulated TCP: the node's internode client and
//! server, and the simulator's client protocol, run the product's transport code unchanged
//! (framing, CRCs, handshake, keepalive, reconnect backoff) on a network the simulation
//! controls (latency, partitions, crashes).

use std::io;
use std::net::SocketAddr;

use turmoil::net::{TcpListener, TcpStream};
use yeskv_rpc::{Connector, Listener};

/// Opens simulated TCP connections (`"host:port"`, resolved by turmoil's DNS).
#[derive(Clone, Copy, Debug, Default)]
pub struct SimConnector;

impl Connector for SimConnector {
    type Stream = TcpStream;

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        TcpStream::connect(addr).await
    }
}

/// Accepts simulated TCP connections.
pub struct SimListener(pub TcpListener);

impl SimListener {
    /// Listens on `port` of the current simulated host.
    pub async fn bind(port: u16) -> io::Result<SimListener> {
        Ok(SimListener(TcpListener::bind(("0.0.0.0", port)).await?))
    }
}

impl Listener for SimListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        self.0.accept().await
    }
}
