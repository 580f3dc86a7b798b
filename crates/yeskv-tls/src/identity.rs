//! A node's identity in its certificate: the URI subject alternative name
//! `yeskv:node:<node id>` ([`NODE_URI_PREFIX`]). A URI SAN, not a DNS name, because node ids
//! (`[A-Za-z0-9._-]{1,64}`) are not host names and must never be mistaken for one by an HTTPS
//! client checking a host. A certificate names at most one node; two node URIs make it invalid.
//!
//! Pure functions over DER bytes (parsed by rustls-webpki, the parser rustls itself uses); the
//! chain is checked by rustls.

use rustls::pki_types::CertificateDer;

use crate::Error;

/// The prefix of a node's URI SAN.
pub const NODE_URI_PREFIX: &str = "yeskv:node:";

/// The URI SAN naming `node_id`.
pub fn node_uri(node_id: &str) -> String {
    format!("{NODE_URI_PREFIX}{node_id}")
}

fn parse<'a>(certificate: &'a CertificateDer<'a>) -> Result<webpki::EndEntityCert<'a>, Error> {
    webpki::EndEntityCert::try_from(certificate)
        .map_err(|e| Error::Invalid(format!("certificate does not parse: {e}")))
}

/// The node id a certificate names, `None` if it names no node. Fails on a certificate that
/// does not parse or names two nodes or an empty id.
pub fn node_id_of(certificate: &CertificateDer<'_>) -> Result<Option<String>, Error> {
    let parsed = parse(certificate)?;
    let mut found: Option<String> = None;
    for uri in parsed.valid_uri_names() {
        if let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) {
            if id.is_empty() {
                return Err(Error::Invalid("certificate names an empty node id".into()));
            }
            if let Some(first) = &found {
                return Err(Error::Invalid(format!(
                    "certificate names two nodes, {first:?} and {id:?}"
                )));
            }
            found = Some(id.to_string());
        }
    }
    Ok(found)
}

/// The serial number of a certificate, as lower-case hex: what an operator compares to see
/// which certificate a node serves.
pub fn serial_of(certificate: &CertificateDer<'_>) -> Result<String, Error> {
    Ok(parse(certificate)?
        .serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
