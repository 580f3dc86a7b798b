//! What each node gossips about itself, as chitchat key-values, and how a peer's key-values are
//! read back. Pure: no I/O.
//!
//! chitchat replicates a small string map per node (scuttlebutt reconciliation). yeskv puts these
//! keys in it:
//!
//! | key              | value                                                  |
//! |------------------|--------------------------------------------------------|
//! | `format`         | [`NODE_INFO_FORMAT`], the version of this key schema    |
//! | `zone`           | the node's zone (failure domain for replica placement) |
//! | `http`           | the client HTTP address, as configured                 |
//! | `peer`           | the internode RPC (TCP) address, as configured         |
//! | `layout_version` | the cluster layout version the node holds, decimal u64 |
//! | `region`         | the node's region; optional: a node of a build before regions does not |
//! |                  | publish it, and reads as [`DEFAULT_REGION`]                             |
//! | `release`        | the release the node runs (`0.2.0`); optional: release 0.1.0 does not   |
//! |                  | publish it (so, in a rolling upgrade, an absent one is 0.1.0)           |
//!
//! Keys are only ever added, optional, so a node of the previous release reads a newer node's
//! map (it ignores keys it does not know) and the other way round: a rolling upgrade runs both.
//!
//! The node id, the generation and the gossip address travel in chitchat's own node identity
//! (`ChitchatId`), and the cluster id in every SYN, so they are not repeated here.
//!
//! A peer's map can be *incomplete* (chitchat learns of a node from a digest before the node's
//! keys arrive) or *invalid* (another schema version, oversized or malformed values): both are
//! reported as such and the node is left out of the view until its keys read back whole.

/// Version of the key schema above. A node refuses to interpret a peer whose `format` differs
/// (it stays out of the view and is logged), so a future schema change is an explicit decision.
pub const NODE_INFO_FORMAT: &str = "1";
/// Longest accepted zone name, in bytes.
pub const ZONE_BYTES_MAX: usize = 64;
/// Longest accepted region name, in bytes.
pub const REGION_BYTES_MAX: usize = 64;
/// The region of a node that publishes none.
pub const DEFAULT_REGION: &str = "default";
/// Longest accepted HTTP or peer address, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 256;

pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_ZONE: &str = "zone";
pub(crate) const KEY_HTTP: &str = "http";
pub(crate) const KEY_PEER: &str = "peer";
pub(crate) const KEY_LAYOUT_VERSION: &str = "layout_version";
pub(crate) const KEY_REGION: &str = "region";
pub(crate) const KEY_RELEASE: &str = "release";
/// Longest accepted release name, in bytes.
pub const RELEASE_BYTES_MAX: usize = 64;

/// What a node says about itself in gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Zone (failure domain).
    pub zone: String,
    /// Region (the zone's data centre or cloud region).
    pub region: String,
    /// Client HTTP address, as the node was configured (`host:port`).
    pub http_addr: String,
    /// Internode RPC address (`host:port`, TCP).
    pub peer_addr: String,
    /// Version of the cluster layout the node holds.
    pub layout_version: u64,
    /// The release the node runs (`None`: a node of release 0.1.0, which does not say).
    pub release: Option<String>,
}

/// A peer's key-values read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Every key is present and valid.
    Complete(NodeInfo),
    /// Some key has not arrived yet (normal for a moment after a node is first heard of).
    Incomplete,
    /// The keys are there but cannot be used; the reason says why.
    Invalid(String),
}

impl NodeInfo {
    /// The key-values to publish for this node.
    pub fn to_key_values(&self) -> Vec<(String, String)> {
        vec![
            (KEY_FORMAT.to_string(), NODE_INFO_FORMAT.to_string()),
            (KEY_ZONE.to_string(), self.zone.clone()),
            (KEY_REGION.to_string(), self.region.clone()),
            (KEY_HTTP.to_string(), self.http_addr.clone()),
            (KEY_PEER.to_string(), self.peer_addr.clone()),
            (
                KEY_LAYOUT_VERSION.to_string(),
                self.layout_version.to_string(),
            ),
        ]
        .into_iter()
        .chain(
            self.release
                .iter()
                .map(|release| (KEY_RELEASE.to_string(), release.clone())),
        )
        .collect()
    }

    /// Reads a node's info back from its key-values (`get` looks a key up).
    pub fn decode<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Decoded {
        let (Some(format), Some(zone), Some(http), Some(peer), Some(layout_version)) = (
            get(KEY_FORMAT),
            get(KEY_ZONE),
            get(KEY_HTTP),
            get(KEY_PEER),
            get(KEY_LAYOUT_VERSION),
        ) else {
            return Decoded::Incomplete;
        };
        if format != NODE_INFO_FORMAT {
            return Decoded::Invalid(format!(
                "node info format {format:?}, this node reads {NODE_INFO_FORMAT:?}"
            ));
        }
        if zone.is_empty() || zone.len() > ZONE_BYTES_MAX {
            return Decoded::Invalid(format!(
                "zone of {} bytes (1 to {ZONE_BYTES_MAX} allowed)",
                zone.len()
            ));
        }
        let region = get(KEY_REGION).unwrap_or(DEFAULT_REGION);
        if region.is_empty() || region.len() > REGION_BYTES_MAX {
            return Decoded::Invalid(format!(
                "region of {} bytes (1 to {REGION_BYTES_MAX} allowed)",
                region.len()
            ));
        }
        for (name, address) in [("http", http), ("peer", peer)] {
            if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
                return Decoded::Invalid(format!(
                    "{name} address of {} bytes (1 to {ADDRESS_BYTES_MAX} allowed)",
                    address.len()
                ));
            }
        }
        let Ok(layout_version) = layout_version.parse::<u64>() else {
            return Decoded::Invalid(format!("layout_version {layout_version:?} is not a u64"));
        };
        let release = get(KEY_RELEASE);
        if let Some(release) = release {
            if release.is_empty() || release.len() > RELEASE_BYTES_MAX {
                return Decoded::Invalid(format!(
                    "release of {} bytes (1 to {RELEASE_BYTES_MAX} allowed)",
                    release.len()
                ));
            }
        }
        Decoded::Complete(NodeInfo {
            zone: zone.to_string(),
            region: region.to_string(),
            http_addr: http.to_string(),
            peer_addr: peer.to_string(),
            layout_version,
            release: release.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn info() -> NodeInfo {
        NodeInfo {
            zone: "eu-1".into(),
            region: "eu".into(),
            http_addr: "127.0.0.1:8081".into(),
            peer_addr: "127.0.0.1:7081".into(),
            layout_version: 7,
            release: Some("0.2.0".into()),
        }
    }

    fn decode_map(map: &BTreeMap<String, String>) -> Decoded {
        NodeInfo::decode(|key| map.get(key).map(String::as_str))
    }

    #[test]
    fn key_values_read_back_to_the_same_info() {
        let map: BTreeMap<_, _> = info().to_key_values().into_iter().collect();
        assert_eq!(decode_map(&map), Decoded::Complete(info()));
    }

    #[test]
    fn a_missing_key_is_incomplete_not_invalid() {
        for missing in [KEY_FORMAT, KEY_ZONE, KEY_HTTP, KEY_PEER, KEY_LAYOUT_VERSION] {
            let mut map: BTreeMap<_, _> = info().to_key_values().into_iter().collect();
            map.remove(missing);
            assert_eq!(decode_map(&map), Decoded::Incomplete, "without {missing}");
        }
    }

    #[test]
    fn a_peer_without_a_region_is_in_the_default_region() {
        let mut map: BTreeMap<_, _> = info().to_key_values().into_iter().collect();
        map.remove(KEY_REGION);
        let Decoded::Complete(read) = decode_map(&map) else {
            panic!("a node info without region decodes");
        };
        assert_eq!(read.region, DEFAULT_REGION);
    }

    #[test]
    fn a_peer_without_a_release_is_of_the_first_release_and_reads_whole() {
        let mut map: BTreeMap<_, _> = info().to_key_values().into_iter().collect();
        map.remove(KEY_RELEASE);
        let Decoded::Complete(read) = decode_map(&map) else {
            panic!("a node info without release (release 0.1.0) decodes");
        };
        assert_eq!(read.release, None);
        assert_eq!(read.zone, info().zone);
    }

    #[test]
    fn malformed_values_are_invalid() {
        let cases = [
            (KEY_FORMAT, "2".to_string()),
            (KEY_ZONE, String::new()),
            (KEY_ZONE, "z".repeat(ZONE_BYTES_MAX + 1)),
            (KEY_REGION, String::new()),
            (KEY_REGION, "r".repeat(REGION_BYTES_MAX + 1)),
            (KEY_HTTP, String::new()),
            (KEY_PEER, "p".repeat(ADDRESS_BYTES_MAX + 1)),
            (KEY_LAYOUT_VERSION, "-1".to_string()),
            (KEY_LAYOUT_VERSION, "seven".to_string()),
            (KEY_RELEASE, String::new()),
            (KEY_RELEASE, "r".repeat(RELEASE_BYTES_MAX + 1)),
        ];
        for (key, value) in cases {
            let mut map: BTreeMap<_, _> = info().to_key_values().into_iter().collect();
            map.insert(key.to_string(), value.clone());
            assert!(
                matches!(decode_map(&map), Decoded::Invalid(_)),
                "{key}={value:?} should be invalid"
            );
        }
    }
}
