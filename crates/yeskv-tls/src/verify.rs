//! How a node checks the peer it called: [`NodeServerVerifier`], the RPC client's certificate
//! verifier. It checks the chain against the cluster CA (rustls/webpki: signatures, validity,
//! the server extended key usage) and that the certificate names a node; it does not check a
//! DNS name, because a peer is known by its node id ([`crate::identity`]), and which node id
//! the caller expects is checked once the handshake is done ([`crate::connector`]).
//!
//! The server side needs nothing of its own: rustls' `WebPkiClientVerifier` with the cluster CA,
//! client certificates mandatory; the node id is read after the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::identity::node_id_of;

/// See the module docs.
#[derive(Debug)]
pub struct NodeServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// For the handshake signatures (the same checks as any rustls client).
    signatures: Arc<WebPkiServerVerifier>,
}

impl NodeServerVerifier {
    /// A verifier trusting the certificates in `roots` (the cluster CA).
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, crate::Error> {
        let signatures =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| crate::Error::Invalid(format!("cluster CA: {e}")))?;
        Ok(NodeServerVerifier {
            roots,
            provider,
            signatures,
        })
    }
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match node_id_of(end_entity) {
            Ok(Some(_)) => Ok(ServerCertVerified::assertion()),
            Ok(None) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            Err(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_verify_schemes()
    }
}
