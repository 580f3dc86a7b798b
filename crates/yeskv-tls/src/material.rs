//! The node's TLS material: the files ([`TlsFiles`]), the rustls configs built from them
//! ([`TlsMaterial`]) and the swappable current set ([`TlsState`]).
//!
//! Loading checks everything before anything is used: the files parse, the key matches the
//! certificate, the certificate chains to the CA and names this node (`yeskv:node:<id>`). A
//! reload that fails any check leaves the current material in place, so a half-written file
//! never takes a node off the network. Connections already open keep the material they were
//! made with; new ones use the current one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::identity::{node_id_of, serial_of};
use crate::verify::NodeServerVerifier;
use crate::{provider, Error};

/// Where the node's certificate chain, key and cluster CA are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (`security.tls_cert`).
    pub cert: PathBuf,
    /// This node's private key (`security.tls_key`).
    pub key: PathBuf,
    /// The cluster CA (`security.tls_ca`).
    pub ca: PathBuf,
}

/// rustls configs made from one loading of the files.
#[derive(Debug)]
pub struct TlsMaterial {
    /// For the HTTP API: the node certificate, no client certificate asked.
    pub http_server: Arc<ServerConfig>,
    /// For internode RPC, server side: client certificates from the cluster CA required.
    pub rpc_server: Arc<ServerConfig>,
    /// For internode RPC, client side: this node's certificate, the server checked against the
    /// cluster CA ([`NodeServerVerifier`]).
    pub rpc_client: Arc<ClientConfig>,
    /// The node certificate's serial number (hex).
    pub serial: String,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        reason: what.to_string(),
    }
}

/// The certificates in a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The cluster CA as a root store.
pub fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

impl TlsMaterial {
    /// Loads and checks the files for node `node_id` (see the module docs).
    pub fn load(files: &TlsFiles, node_id: &str) -> Result<TlsMaterial, Error> {
        let chain = read_certificates(&files.cert)?;
        let key_pem = read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| invalid(&files.key, format!("not a PEM private key: {e}")))?;
        let roots = read_roots(&files.ca)?;
        let provider = provider();

        let leaf = &chain[0];
        match node_id_of(leaf).map_err(|e| invalid(&files.cert, e))? {
            Some(id) if id == node_id => {}
            Some(id) => {
                return Err(invalid(
                    &files.cert,
                    format!("certificate is for node {id:?}, this node is {node_id:?}"),
                ))
            }
            None => {
                return Err(invalid(
                    &files.cert,
                    "certificate names no node (no yeskv:node:<id> URI SAN; make it with \
                     `yeskv cert issue`)",
                ))
            }
        }
        let parsed = ParsedCertificate::try_from(leaf)
            .map_err(|e| invalid(&files.cert, format!("certificate: {e}")))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &chain[1..],
            UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| {
            invalid(
                &files.cert,
                format!(
                    "certificate is not valid under the CA {}: {e}",
                    files.ca.display()
                ),
            )
        })?;
        let serial = serial_of(leaf)?;

        let versions = rustls::DEFAULT_VERSIONS;
        let http_server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| Error::Invalid(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid(&files.key, format!("key does not fit the certificate: {e}")))?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| invalid(&files.ca, format!("cluster CA: {e}")))?;
        let rpc_server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| Error::Invalid(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid(&files.key, format!("key does not fit the certificate: {e}")))?;

        let server_verifier = NodeServerVerifier::new(roots, provider.clone())?;
        let rpc_client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| Error::Invalid(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(server_verifier))
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid(&files.key, format!("key does not fit the certificate: {e}")))?;

        Ok(TlsMaterial {
            http_server: Arc::new(http_server),
            rpc_server: Arc::new(rpc_server),
            rpc_client: Arc::new(rpc_client),
            serial,
        })
    }
}

/// The files and the material currently in use; shared by the node's listeners and connector.
#[derive(Debug)]
pub struct TlsState {
    files: TlsFiles,
    node_id: String,
    current: ArcSwap<TlsMaterial>,
}

impl TlsState {
    /// Loads the files for node `node_id` (fails as [`TlsMaterial::load`]).
    pub fn load(files: TlsFiles, node_id: &str) -> Result<Arc<TlsState>, Error> {
        let material = TlsMaterial::load(&files, node_id)?;
        Ok(Arc::new(TlsState {
            files,
            node_id: node_id.to_string(),
            current: ArcSwap::from_pointee(material),
        }))
    }

    /// The material new connections use.
    pub fn current(&self) -> Arc<TlsMaterial> {
        self.current.load_full()
    }

    /// The node id the certificates must name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Re-reads the files; on success new connections use them and the new certificate's serial
    /// is returned. On failure nothing changes.
    pub fn reload(&self) -> Result<String, Error> {
        let material = TlsMaterial::load(&self.files, &self.node_id)?;
        let serial = material.serial.clone();
        self.current.store(Arc::new(material));
        Ok(serial)
    }
}
