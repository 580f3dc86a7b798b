//! The control messages of the protocol: the handshake (`Hello`, `Welcome`, `Refused`) and the
//! `Failure` answer. Pure data and checks, no I/O.
//!
//! ## Versions and their negotiation
//! A build speaks every protocol version in [`PROTOCOL_VERSION_MIN`]`..=`[`PROTOCOL_VERSION`];
//! each connection speaks one, agreed in its handshake ([`negotiate`]): the newest both ends
//! speak. A cluster in a rolling upgrade so runs nodes of two releases side by side, each pair
//! at the newest version both speak, and a request introduced in version `v` is sent only on a
//! connection that agreed on `v` or later (`RpcClient::call_since`).
//!
//! Compatibility rules (they are what makes the handshake a negotiation across releases):
//! - `Hello.protocol_version` is the **first** field of `Hello` in every version: the oldest
//!   version the client speaks. A build of version 8 (which spoke exactly one version) reads
//!   only that field, so a client that still speaks 8 leads with 8.
//! - Later fields are appended, never changed: a reader decodes the fields it knows and takes a
//!   missing trailing field as its old default (postcard ignores trailing bytes, so a version-8
//!   build reads a newer `Hello` or `Welcome` as its own). `Hello.protocol_version_max` (since
//!   9) is the newest version the client speaks (absent: the same as the first field);
//!   `Welcome.protocol_version` (since 9) is the agreed one (absent: the server spoke exactly
//!   the client's first field).
//! - `Refused { reason }` never changes, so every version can explain a refusal to every other.
//! - The request and response types change only by appending enum variants and only together
//!   with a new [`PROTOCOL_VERSION`]; what a variant needs is recorded where it is defined.
//!
//! | version | what it added |
//! |---|---|
//! | 8 | the oldest spoken: the node's requests as of release 0.1.0 |
//! | 9 | the negotiating handshake (`Hello.protocol_version_max`, `Welcome.protocol_version`) |

use serde::{Deserialize, Serialize};

/// The newest protocol version this build speaks. Bump it whenever a message is added or its
/// encoding changes, and keep speaking the old version (down to [`PROTOCOL_VERSION_MIN`]) so that
/// peers of the previous release are not refused.
pub const PROTOCOL_VERSION: u16 = 9;

/// The oldest protocol version this build speaks: the newest of the previous release (0.1.0),
/// so a cluster upgrades one node at a time. Raised only when a release drops an old version;
/// the release notes then say from which release one may upgrade.
pub const PROTOCOL_VERSION_MIN: u16 = 8;

/// Longest cluster id or node id accepted in a handshake, in bytes.
pub const ID_BYTES_MAX: usize = 255;

/// First frame of every connection, client → server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The oldest protocol version the client speaks. Must stay the first field.
    pub protocol_version: u16,
    /// The cluster the client belongs to; a server of another cluster refuses it.
    pub cluster_id: String,
    /// The client node's id (reported to the handler in [`crate::PeerInfo`]).
    pub node_id: String,
    /// The newest protocol version the client speaks (since version 9; a `Hello` without it
    /// reads as `protocol_version`).
    pub protocol_version_max: u16,
}

/// The fields of a version-8 `Hello`, the prefix of every later one.
#[derive(Deserialize)]
struct HelloV8 {
    protocol_version: u16,
    cluster_id: String,
    node_id: String,
}

impl Hello {
    /// Decodes a `Hello` of any version: the fields this build knows, missing trailing ones at
    /// their defaults (unknown trailing ones, of a later version, are ignored).
    pub fn decode(payload: &[u8]) -> Result<Hello, postcard::Error> {
        let (v8, rest) = postcard::take_from_bytes::<HelloV8>(payload)?;
        let protocol_version_max = if rest.is_empty() {
            v8.protocol_version
        } else {
            postcard::take_from_bytes::<u16>(rest)?.0
        };
        Ok(Hello {
            protocol_version: v8.protocol_version,
            cluster_id: v8.cluster_id,
            node_id: v8.node_id,
            protocol_version_max,
        })
    }
}

/// The server accepts the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server node's id.
    pub node_id: String,
    /// The protocol version the connection speaks (since version 9; see [`Welcome::decode`]).
    pub protocol_version: u16,
}

impl Welcome {
    /// Decodes a `Welcome` of any version. A version-8 server sends none of the later fields:
    /// it accepted the client's `hello_version` (its oldest) as the one version it speaks.
    pub fn decode(payload: &[u8], hello_version: u16) -> Result<Welcome, postcard::Error> {
        let (node_id, rest) = postcard::take_from_bytes::<String>(payload)?;
        let protocol_version = if rest.is_empty() {
            hello_version
        } else {
            postcard::take_from_bytes::<u16>(rest)?.0
        };
        Ok(Welcome {
            node_id,
            protocol_version,
        })
    }
}

/// The protocol version a connection speaks: the newest in both `ours` and `theirs` (inclusive
/// ranges, oldest first), or why there is none.
pub fn negotiate(ours: (u16, u16), theirs: (u16, u16)) -> Result<u16, Refusal> {
    let agreed = ours.1.min(theirs.1);
    if theirs.0 > theirs.1 || agreed < ours.0.max(theirs.0) {
        return Err(Refusal(format!(
            "protocol versions {} to {} are not supported: this node speaks {} to {}",
            theirs.0, theirs.1, ours.0, ours.1
        )));
    }
    Ok(agreed)
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

/// Checks a `Hello` payload against this server's cluster and the protocol versions it speaks
/// (`versions`, oldest first): the accepted `Hello` and the version agreed on, or the reason to
/// refuse it.
pub fn check_hello(
    payload: &[u8],
    cluster_id: &str,
    versions: (u16, u16),
) -> Result<(Hello, u16), Refusal> {
    let (protocol_version, _) = postcard::take_from_bytes::<u16>(payload)
        .map_err(|error| Refusal(format!("malformed hello: {error}")))?;
    if protocol_version > versions.1 {
        // A later release's hello may not even decode here: refuse by version first.
        return Err(Refusal(format!(
            "protocol version {protocol_version} is not supported: this node speaks {} to {}",
            versions.0, versions.1
        )));
    }
    let hello =
        Hello::decode(payload).map_err(|error| Refusal(format!("malformed hello: {error}")))?;
    let agreed = negotiate(
        versions,
        (hello.protocol_version, hello.protocol_version_max),
    )?;
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
    Ok((hello, agreed))
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

    const OURS: (u16, u16) = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION);

    fn hello(protocol_version: u16, cluster_id: &str) -> Vec<u8> {
        postcard::to_allocvec(&Hello {
            protocol_version,
            cluster_id: cluster_id.into(),
            node_id: "n1".into(),
            protocol_version_max: protocol_version,
        })
        .expect("encodes")
    }

    /// A `Hello` as a version-8 build (release 0.1.0) encodes it.
    fn hello_v8(cluster_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct HelloV8 {
            protocol_version: u16,
            cluster_id: String,
            node_id: String,
        }
        postcard::to_allocvec(&HelloV8 {
            protocol_version: 8,
            cluster_id: cluster_id.into(),
            node_id: "n1".into(),
        })
        .expect("encodes")
    }

    #[test]
    fn matching_hello_is_accepted_at_the_newest_common_version() {
        let (accepted, agreed) =
            check_hello(&hello(PROTOCOL_VERSION, "c"), "c", OURS).expect("accepted");
        assert_eq!(accepted.node_id, "n1");
        assert_eq!(agreed, PROTOCOL_VERSION);
        let ranged = postcard::to_allocvec(&Hello {
            protocol_version: PROTOCOL_VERSION_MIN,
            cluster_id: "c".into(),
            node_id: "n1".into(),
            protocol_version_max: PROTOCOL_VERSION + 5,
        })
        .expect("encodes");
        let (_, agreed) = check_hello(&ranged, "c", OURS).expect("accepted");
        assert_eq!(
            agreed, PROTOCOL_VERSION,
            "a newer client steps down to ours"
        );
    }

    #[test]
    fn a_version_8_hello_is_spoken_at_version_8() {
        let (hello, agreed) = check_hello(&hello_v8("c"), "c", OURS).expect("accepted");
        assert_eq!((hello.protocol_version, hello.protocol_version_max), (8, 8));
        assert_eq!(agreed, 8);
    }

    #[test]
    fn a_version_8_build_reads_our_hello_and_welcome_as_its_own() {
        // What release 0.1.0 does with our frames: `from_bytes` of its own structs, trailing
        // bytes ignored.
        #[derive(Deserialize, Debug, PartialEq)]
        struct HelloV8 {
            protocol_version: u16,
            cluster_id: String,
            node_id: String,
        }
        #[derive(Deserialize, Debug, PartialEq)]
        struct WelcomeV8 {
            node_id: String,
        }
        let ours = Hello {
            protocol_version: PROTOCOL_VERSION_MIN,
            cluster_id: "c".into(),
            node_id: "n2".into(),
            protocol_version_max: PROTOCOL_VERSION,
        };
        let read: HelloV8 =
            postcard::from_bytes(&postcard::to_allocvec(&ours).expect("encodes")).expect("reads");
        assert_eq!(
            read.protocol_version, 8,
            "0.1.0 accepts only a hello that leads with 8"
        );
        assert_eq!(read.node_id, "n2");
        let welcome = Welcome {
            node_id: "n2".into(),
            protocol_version: 8,
        };
        let read: WelcomeV8 =
            postcard::from_bytes(&postcard::to_allocvec(&welcome).expect("e")).expect("reads");
        assert_eq!(read.node_id, "n2");
    }

    #[test]
    fn a_welcome_without_a_version_is_the_hellos_first_version() {
        let v8 = postcard::to_allocvec(&"n2".to_string()).expect("encodes");
        let welcome = Welcome::decode(&v8, 8).expect("decodes");
        assert_eq!(welcome.protocol_version, 8);
        let v9 = postcard::to_allocvec(&Welcome {
            node_id: "n2".into(),
            protocol_version: 9,
        })
        .expect("encodes");
        assert_eq!(
            Welcome::decode(&v9, 8).expect("decodes").protocol_version,
            9
        );
        assert!(Welcome::decode(&[], 8).is_err());
    }

    #[test]
    fn negotiation_picks_the_newest_common_version_or_refuses() {
        assert_eq!(negotiate((8, 9), (8, 9)), Ok(9));
        assert_eq!(negotiate((8, 9), (8, 8)), Ok(8));
        assert_eq!(negotiate((8, 8), (8, 12)), Ok(8));
        assert_eq!(negotiate((9, 12), (7, 10)), Ok(10));
        let refusal = negotiate((9, 10), (7, 8)).expect_err("disjoint");
        assert!(
            refusal.0.contains("7 to 8") && refusal.0.contains("9 to 10"),
            "{refusal}"
        );
        assert!(negotiate((8, 9), (10, 11)).is_err());
        assert!(negotiate((8, 9), (9, 8)).is_err(), "an empty range");
    }

    #[test]
    fn other_cluster_and_other_version_are_refused_with_a_clear_reason() {
        let reason =
            check_hello(&hello(PROTOCOL_VERSION, "other"), "c", OURS).expect_err("refused");
        assert!(reason.0.contains("cluster id \"other\""), "{reason}");
        let reason =
            check_hello(&hello(PROTOCOL_VERSION + 1, "c"), "c", OURS).expect_err("refused");
        let expected = format!("protocol version {}", PROTOCOL_VERSION + 1);
        assert!(reason.0.contains(&expected), "{reason}");
        let reason =
            check_hello(&hello(PROTOCOL_VERSION_MIN - 1, "c"), "c", OURS).expect_err("too old");
        assert!(reason.0.contains("not supported"), "{reason}");
    }

    #[test]
    fn a_future_hello_with_unknown_fields_is_refused_by_version_not_by_parse_error() {
        // A later version may append fields or change them; the version still leads.
        #[derive(Serialize)]
        struct HelloV99 {
            protocol_version: u16,
            features: Vec<u64>,
        }
        let payload = postcard::to_allocvec(&HelloV99 {
            protocol_version: 99,
            features: vec![1, 2, 3],
        })
        .expect("encodes");
        let reason = check_hello(&payload, "c", OURS).expect_err("refused");
        assert!(reason.0.contains("protocol version 99"), "{reason}");
    }

    #[test]
    fn identity_must_match_the_proved_node() {
        let (hello, _) = check_hello(&hello(PROTOCOL_VERSION, "c"), "c", OURS).expect("accepted");
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
        assert!(check_hello(&[], "c", OURS).is_err());
        assert!(check_hello(&[1, 0xff, 0xff, 0xff], "c", OURS).is_err());
        assert!(check_hello(&[8, 1, b'c', 2, b'n', b'1', 0xff], "c", OURS).is_err());
    }
}
