//! # yeskv-tls: transport security of a yeskv cluster
//!
//! Every node holds a certificate issued by the cluster's own CA (`yeskv cert init`, `yeskv cert
//! issue`). The certificate names the node: a URI subject alternative name
//! `yeskv:node:<node id>` ([`identity`]). With TLS configured:
//!
//! - the client HTTP API serves HTTPS only, with the node certificate (clients verify it against
//!   the cluster CA, `yeskv --ca ca.pem`; they present no certificate);
//! - internode RPC runs over mutual TLS: the server requires a client certificate signed by the
//!   cluster CA that names a node, the client verifies the server's certificate against the
//!   cluster CA and, when it knows whom it calls (the layout maps the address to a node id),
//!   that the certificate names that node ([`NodeConnector`]). The RPC handshake then refuses a
//!   `Hello` whose node id is not the certificate's (`yeskv-rpc`, [`yeskv_rpc::PeerIdentity`]).
//!
//! The certificate, key and CA are files; [`TlsState::reload`] re-reads them (on `SIGHUP`) and
//! new connections use the new ones; a failed reload keeps the old ones.
//!
//! ## Why these choices
//! - **rustls with the `ring` provider**, never our own crypto; TLS 1.2 and 1.3 with rustls'
//!   safe defaults. ECDSA P-256 keys (rcgen's default): small, fast handshakes.
//! - **Identity is the node id, not the host name.** Nodes move between hosts and are reached
//!   at addresses the layout gives; what a node must know is *which node* answers. So the RPC
//!   client checks the chain against the cluster CA and the node id, not the DNS name
//!   ([`verify`]). HTTPS clients check host names as usual (node certificates carry the hosts
//!   given to `yeskv cert issue`, and `localhost`/`127.0.0.1`).
//! - **Handshakes off the accept loop.** [`TlsListener`] accepts TCP and runs each TLS handshake
//!   in its own task, at most [`HANDSHAKES_INFLIGHT_MAX`] at once and each within
//!   [`HANDSHAKE_TIMEOUT`], so a slow or silent client never holds up the others.
//!
//! Refusals are counted in the `yeskv_peer_refused_total` counter (label `reason`).

#![deny(missing_docs)]

pub mod connector;
pub mod identity;
pub mod issue;
pub mod listener;
pub mod material;
pub mod verify;

use std::time::Duration;

pub use connector::{NodeConnector, NodeStream, TlsConnector};
pub use identity::{node_id_of, node_uri, NODE_URI_PREFIX};
pub use issue::{issue_node, new_ca, CaPems, NodePems};
pub use listener::{Role, TlsListener};
pub use material::{TlsFiles, TlsMaterial, TlsState};

/// The counter of refused peers and TLS clients, by `reason` (`tls`, `identity`, `not_node`,
/// `not_member`, `handshake`).
pub const PEER_REFUSED: &str = "yeskv_peer_refused_total";

/// TLS handshakes a listener runs at once; more connections wait in the accept queue.
pub const HANDSHAKES_INFLIGHT_MAX: usize = 256;

/// Longest time a TLS handshake may take before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong loading or making certificates: one line for an operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A certificate or key is malformed, does not match, or is not what was expected.
    #[error("{0}")]
    Invalid(String),
    /// Certificate generation failed (rcgen).
    #[error("certificate generation: {0}")]
    Generate(String),
}

/// Counts one refusal under `reason`.
pub(crate) fn count_refused(reason: &'static str) {
    metrics::counter!(PEER_REFUSED, "reason" => reason).increment(1);
}

/// The crypto provider every config of this crate uses (explicit, so that no other crate's
/// choice of a process-wide default can change it).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
