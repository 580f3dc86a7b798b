//! HTTPS to the nodes: the connector under the client's connection pool (hyper-rustls over
//! hyper's `HttpConnector`). It speaks plain HTTP to `http://` nodes and TLS to `https://` ones,
//! checking a node's certificate against the CA given (the cluster CA of `yeskv cert init`)
//! and its host name (node certificates name `localhost`, `127.0.0.1` and the hosts they were
//! issued for). There is no fallback to the system's roots: a cluster has its own CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// The roots in a PEM file of CA certificates.
fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let unusable =
        |what: String| Error::InvalidArgument(format!("CA file {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| unusable(format!("not a PEM certificate file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| unusable(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(unusable("holds no certificate".into()));
    }
    Ok(roots)
}

/// The TLS configuration of a client of the nodes: trusting only the CA in `ca_file` (none: no
/// server at all), no client certificate. For callers that speak HTTP over their own streams.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, Error> {
    let roots = match ca_file {
        Some(path) => roots(path)?,
        None => RootCertStore::empty(),
    };
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A connector for `http://` and `https://` nodes, trusting the CA in `ca_file` (none: no
/// `https://` node can be reached), connecting within `connect_timeout`.
pub fn https_connector(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, Error> {
    let config = client_config(ca_file)?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

pub(crate) use https_connector as connector;
