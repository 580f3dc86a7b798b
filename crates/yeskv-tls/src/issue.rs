//! Making the cluster CA and node certificates (rcgen): what `yeskv cert init` and `yeskv cert
//! issue` write. Pure: PEM text in, PEM text out; the binary writes the files (keys mode 0600).
//!
//! - The CA: ECDSA P-256, self-signed, `CA:TRUE, pathlen:0`, valid [`CA_VALIDITY_DAYS`].
//! - A node certificate: ECDSA P-256, signed by the CA, valid [`NODE_VALIDITY_DAYS`], usable
//!   as a TLS server and client certificate (both extended key usages: a node is the server of
//!   its peers' connections and the client of its own), with the SANs `yeskv:node:<id>`
//!   ([`crate::identity`]), `localhost`, `127.0.0.1` and the hosts given (DNS names or IPs).
//!   A fresh key and a random serial each time, so a reissued certificate is told apart.

use std::net::IpAddr;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::identity::node_uri;
use crate::Error;

/// How long the cluster CA is valid, in days.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a node certificate is valid, in days.
pub const NODE_VALIDITY_DAYS: i64 = 365;
/// How far back a certificate's validity starts, for clocks behind the issuer's.
const BACKDATE: Duration = Duration::hours(1);

/// A CA as PEM text.
#[derive(Clone, Debug)]
pub struct CaPems {
    /// The CA certificate (`ca.pem`).
    pub cert: String,
    /// The CA private key (`ca.key`).
    pub key: String,
}

/// A node certificate and key as PEM text.
#[derive(Clone, Debug)]
pub struct NodePems {
    /// The node certificate (`node.pem`).
    pub cert: String,
    /// The node private key (`node.key`).
    pub key: String,
}

fn generate(what: &str, error: rcgen::Error) -> Error {
    Error::Generate(format!("{what}: {error}"))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Positive and without a leading zero byte, as DER integers want.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// The CA's subject: fixed, so that the issuer of a node certificate can be rebuilt from the
/// CA key alone (the chain is checked by key signature; the name only has to match).
const CA_COMMON_NAME: &str = "yeskv cluster CA";

/// The CA's parameters that an issued certificate refers to (its subject and key id method).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params
}

/// A new cluster CA.
pub fn new_ca() -> Result<CaPems, Error> {
    let key = KeyPair::generate().map_err(|e| generate("CA key", e))?;
    let mut params = ca_params();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial());
    let cert = params
        .self_signed(&key)
        .map_err(|e| generate("CA certificate", e))?;
    Ok(CaPems {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for node `node_id`, signed by the CA whose key is `ca_key_pem`, for `hosts`
/// (DNS names or IP addresses) besides `localhost` and `127.0.0.1`.
pub fn issue_node(ca_key_pem: &str, node_id: &str, hosts: &[String]) -> Result<NodePems, Error> {
    if node_id.is_empty()
        || node_id.len() > 64
        || !node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(Error::Invalid(format!(
            "node id {node_id:?} must be 1 to 64 of [A-Za-z0-9._-]"
        )));
    }
    let ca_key = KeyPair::from_pem(ca_key_pem)
        .map_err(|e| Error::Invalid(format!("CA key does not parse: {e}")))?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("yeskv node {node_id}"));
    params.distinguished_name = dn;
    let uri = node_uri(node_id)
        .try_into()
        .map_err(|e| generate("node URI", e))?;
    let mut names = vec![SanType::URI(uri)];
    let mut all_hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    all_hosts.extend(hosts.iter().cloned());
    for host in all_hosts {
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.as_str()
                    .try_into()
                    .map_err(|e| Error::Invalid(format!("host {host:?}: {e}")))?,
            ),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(NODE_VALIDITY_DAYS);
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate().map_err(|e| generate("node key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| generate("node certificate", e))?;
    Ok(NodePems {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::identity::node_id_of;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM")
    }

    #[test]
    fn the_ca_names_no_node_and_bad_ids_are_refused() {
        let ca = new_ca().expect("ca");
        assert_eq!(node_id_of(&der(&ca.cert)).expect("parses"), None);
        for bad in ["", "has space", "slash/", &"x".repeat(65)] {
            assert!(issue_node(&ca.key, bad, &[]).is_err(), "{bad:?}");
        }
        assert!(issue_node("not a key", "n1", &[]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn an_issued_certificate_names_its_node_and_gets_a_fresh_serial(
            id in "[A-Za-z0-9._-]{1,64}",
        ) {
            let ca = new_ca().expect("ca");
            let first = issue_node(&ca.key, &id, &["db.example".into(), "10.1.2.3".into()])
                .expect("issued");
            let second = issue_node(&ca.key, &id, &[]).expect("issued");
            prop_assert_eq!(node_id_of(&der(&first.cert)).expect("parses"), Some(id));
            prop_assert_ne!(
                crate::identity::serial_of(&der(&first.cert)).expect("serial"),
                crate::identity::serial_of(&der(&second.cert)).expect("serial")
            );
        }
    }
}
