//! The control messages of the protocol: the handshake (`Hello`, `Welcome`, `Refused`) and the
//! `Failure` answer. Pure data and checks, no I/O.
//!
//! Compatibility rules (they are what makes the handshake a version negotiation):
//! - `Hello.protocol_version` is the **first** field of `Hello` in every version, so a server can
//!   read it from a `Hello` whose other fields it does not understand and refuse it politely.
//! - `Refused { reason }` never changes, so every version can explain a refusal to every other.
//! - Everything else (the request and response types, the other control messages) may change
//!   only together with [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Bump it whenever the encoding of any message changes
/// (including the node's request and response enums): peers of another version are refused.
pub const PROTOCOL_VERSION: u16 = 8;

/// Longest cluster id or node id accepted in a handshake, in bytes.
pub const ID_BYTES_MAX: usize = 255;

/// First frame of every connection, client → server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`]. Must stay the first field.
    pub protocol_version: u16,
    /// The cluster the client belongs to; a server of another cluster refuses it.
    pub cluster_id: String,
    /// The client node's id (reported to the handler in [`crate::PeerInfo`]).
    pub node_id: String,
}

/// The server accepts the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server node's id.
    pub node_id: String,
}

/// The server refuses the handshake and closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Why, in words meant for an operator.
    pub reason: String,
}

/// The server could not handle one request (it did not decode, the handler panicked, the
/// response could not be encoded). The connection stays open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What went wrong.
    pub reason: String,
}

/// Why a server refuses a client's `Hello` (sent back to it in `Refused`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Checks a `Hello` payload against this server's cluster: the accepted `Hello`, or the reason to
/// refuse it.
pub fn check_hello(payload: &[u8], cluster_id: &str) -> Result<Hello, Refusal> {
    let (protocol_version, _) = postcard::take_from_bytes::<u16>(payload)
        .map_err(|error| Refusal(format!("malformed hello: {error}")))?;
    if protocol_version != PROTOCOL_VERSION {
        return Err(Refusal(format!(
            "protocol version {protocol_version} is not supported: this node speaks version \
             {PROTOCOL_VERSION}"
        )));
    }
    let hello: Hello = postcard::from_bytes(payload)
        .map_err(|error| Refusal(format!("malformed hello: {error}")))?;
    if hello.cluster_id != cluster_id {
        return Err(Refusal(format!(
            "cluster id {:?} does not match this node's cluster {:?}",
            hello.cluster_id, cluster_id
        )));
    }
    if hello.node_id.is_empty() || hello.node_id.len() > ID_BYTES_MAX {
        return Err(Refusal(format!(
            "node id must be 1 to {ID_BYTES_MAX} bytes, got {}",
            hello.node_id.len()
        )));
    }
    Ok(hello)
}

/// Checks the node id an accepted `Hello` announces against the one the network proved.
pub fn check_identity(hello: &Hello, proved: &crate::PeerIdentity) -> Result<(), Refusal> {
    match proved {
        crate::PeerIdentity::Unauthenticated => Ok(()),
        crate::PeerIdentity::Node(id) if *id == hello.node_id => Ok(()),
        crate::PeerIdentity::Node(id) => Err(Refusal(format!(
            "hello announces node {:?} but the certificate is node {id:?}'s",
            hello.node_id
        ))),
        crate::PeerIdentity::NotANode(reason) => Err(Refusal(format!(
            "the peer's certificate is not a node's: {reason}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(protocol_version: u16, cluster_id: &str) -> Vec<u8> {
        postcard::to_allocvec(&Hello {
            protocol_version,
            cluster_id: cluster_id.into(),
            node_id: "n1".into(),
        })
        .expect("encodes")
    }

    #[test]
    fn matching_hello_is_accepted() {
        let accepted = check_hello(&hello(PROTOCOL_VERSION, "c"), "c").expect("accepted");
        assert_eq!(accepted.node_id, "n1");
    }

    #[test]
    fn other_cluster_and_other_version_are_refused_with_a_clear_reason() {
        let reason = check_hello(&hello(PROTOCOL_VERSION, "other"), "c").expect_err("refused");
        assert!(reason.0.contains("cluster id \"other\""), "{reason}");
        let reason = check_hello(&hello(PROTOCOL_VERSION + 1, "c"), "c").expect_err("refused");
        let expected = format!("protocol version {}", PROTOCOL_VERSION + 1);
        assert!(reason.0.contains(&expected), "{reason}");
    }

    #[test]
    fn a_future_hello_with_unknown_fields_is_refused_by_version_not_by_parse_error() {
        // A later version may append fields or change them; the version still leads.
        #[derive(Serialize)]
        struct HelloV9 {
            protocol_version: u16,
            features: Vec<u64>,
        }
        let payload = postcard::to_allocvec(&HelloV9 {
            protocol_version: 9,
            features: vec![1, 2, 3],
        })
        .expect("encodes");
        let reason = check_hello(&payload, "c").expect_err("refused");
        assert!(reason.0.contains("protocol version 9"), "{reason}");
    }

    #[test]
    fn identity_must_match_the_proved_node() {
        let hello = check_hello(&hello(PROTOCOL_VERSION, "c"), "c").expect("accepted");
        assert!(check_identity(&hello, &crate::PeerIdentity::Unauthenticated).is_ok());
        assert!(check_identity(&hello, &crate::PeerIdentity::Node("n1".into())).is_ok());
        let reason = check_identity(&hello, &crate::PeerIdentity::Node("n2".into()))
            .expect_err("another node's certificate");
        assert!(
            reason.0.contains("\"n1\"") && reason.0.contains("\"n2\""),
            "{reason}"
        );
        assert!(check_identity(&hello, &crate::PeerIdentity::NotANode("x".into())).is_err());
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert!(check_hello(&[], "c").is_err());
        assert!(check_hello(&[1, 0xff, 0xff, 0xff], "c").is_err());
    }
}
