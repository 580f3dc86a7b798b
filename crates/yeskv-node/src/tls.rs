//! The node's TLS wiring (`yeskv-tls` does the TLS itself): loading the files the config
//! names, the HTTPS listener of the client API, the internode connector (mutual TLS, checking
//! the node reached against the layout), and reloading the files on `SIGHUP`.
//!
//! `docs/security.md` says what each port trusts.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use yeskv_layout::Layout;
use yeskv_tls::{NodeConnector, Role, TlsConnector, TlsFiles, TlsListener, TlsState};

use crate::config::Validated;
use crate::error::Error;

/// The node's TLS state when the config turns TLS on (all three files set), loaded and checked.
pub fn load(cfg: &Validated) -> Result<Option<Arc<TlsState>>, Error> {
    let Some((cert, key, ca)) = cfg.raw.security.tls_files() else {
        return Ok(None);
    };
    let state = TlsState::load(TlsFiles { cert, key, ca }, cfg.node_id.as_str())
        .map_err(|e| Error::Startup(format!("TLS: {e}")))?;
    tracing::info!(serial = %state.current().serial, "TLS on: HTTPS API, mutual TLS between nodes");
    Ok(Some(state))
}

/// The layout, once the layout service runs: the connector asks it which node is at an
/// address. Set after the RPC client is made (the layout service needs the client first).
pub type LayoutWatch = Arc<OnceLock<watch::Receiver<Option<Arc<Layout>>>>>;

/// The internode connector: mutual TLS when `tls` is set (expecting at an address the layout
/// member whose peer address it is), plain TCP otherwise.
pub fn connector(tls: Option<&Arc<TlsState>>, layout: &LayoutWatch) -> NodeConnector {
    let Some(state) = tls else {
        return NodeConnector::Tcp;
    };
    let layout = layout.clone();
    let expected = Arc::new(move |addr: &str| {
        let current = layout.get()?.borrow().clone()?;
        current
            .members
            .iter()
            .find(|(_, member)| member.peer == addr)
            .map(|(id, _)| id.to_string())
    });
    NodeConnector::Tls(TlsConnector::new(state.clone(), expected))
}

/// The internode listener with mutual TLS.
pub fn rpc_listener(tcp: TcpListener, state: &Arc<TlsState>) -> Result<TlsListener, Error> {
    TlsListener::new(tcp, state.clone(), Role::Rpc)
        .map_err(|e| Error::Startup(format!("internode TLS listener: {e}")))
}

/// The client API's HTTPS listener, for `axum::serve`.
pub struct HttpsListener(TlsListener);

impl HttpsListener {
    /// HTTPS on `tcp` with the node certificate of `state`.
    pub fn new(tcp: TcpListener, state: &Arc<TlsState>) -> Result<Self, Error> {
        TlsListener::new(tcp, state.clone(), Role::Http)
            .map(HttpsListener)
            .map_err(|e| Error::Startup(format!("HTTPS listener: {e}")))
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // Only if the accept task is gone; never busy-loop on it.
                Err(error) => {
                    tracing::error!(%error, "HTTPS listener failed");
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.0.local_addr())
    }
}

/// Re-reads the TLS files on every `SIGHUP` until the process ends: new connections use the
/// new certificate; a failed reload logs an error and keeps the current one.
pub fn reload_on_sighup(state: Arc<TlsState>) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| Error::Startup(format!("cannot watch SIGHUP: {e}")))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match state.reload() {
                Ok(serial) => {
                    tracing::info!(%serial, "SIGHUP: TLS certificate, key and CA reloaded")
                }
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: TLS reload failed; keeping the current certificate")
                }
            }
        }
    });
    Ok(())
}
