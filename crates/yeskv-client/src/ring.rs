//! The partition layout a node publishes at `GET /v1/ring`, and the key → preference-list lookup.
//!
//! yeskv splits the key space into a fixed power-of-two number of equal partitions (Dynamo §6.2,
//! "strategy 3"): a key's partition is the top `log2(partition_count)` bits of a stable 64-bit
//! hash of its bucket and name ([`yeskv_core::keyspace::key_hash`]). Each partition has a
//! *preference list* (Dynamo §4.3): the nodes that hold its replicas, primaries first. A client
//! that knows the layout can send a request straight to a node of the key's preference list and
//! save the hop from an arbitrary coordinator to a replica.
//!
//! [`Ring`] is plain data: parsed and validated once ([`Ring::from_json`]), then only looked up.
//! No I/O, no clock. Its invariants, checked by the parser:
//! - the key hash function the server names is the one this client implements
//!   ([`SUPPORTED_HASH`]); a layout hashed any other way would route every key to the wrong
//!   nodes, so it is rejected (the client then routes round-robin, which is always correct);
//! - `partition_count` is a power of two from 1 to [`RING_PARTITIONS_MAX`], and every partition
//!   `0..partition_count` is listed exactly once;
//! - every preference list is non-empty and names only nodes listed in `nodes`, each at most
//!   once; node ids are unique.

use std::collections::HashMap;

use serde::Deserialize;
use yeskv_core::keyspace;

use crate::Error;

/// The key hash function this client implements, as `/v1/ring` names it in `hash`.
pub const SUPPORTED_HASH: &str = keyspace::HASH_NAME;

/// Most partitions a ring may have (partition ids are 16-bit).
pub const RING_PARTITIONS_MAX: u32 = 1 << 16;

/// Most nodes a ring may name (far above any real cluster; bounds what a bad answer can cost).
pub const RING_NODES_MAX: usize = 1 << 14;

/// One node of a ring, as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingNode {
    /// The node's id (what preference lists name).
    pub id: String,
    /// The node's client HTTP address as published: usually `host:port`, maybe a full URL.
    pub http: String,
    /// The node's zone, when it has one.
    pub zone: Option<String>,
    /// The node's region, when the cluster has regions (`default` and absent read as none).
    pub region: Option<String>,
}

impl RingNode {
    /// [`RingNode::http`] as a URL: `http://` is prefixed when it has no scheme.
    pub fn url(&self) -> String {
        let http = self.http.trim();
        if http.contains("://") {
            http.to_string()
        } else {
            format!("http://{http}")
        }
    }
}

/// A validated partition layout (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    version: u64,
    n: u32,
    partition_count: u32,
    nodes: Vec<RingNode>,
    /// Every preference list, concatenated in partition order; entries index `nodes`.
    preferences: Vec<usize>,
    /// Partition `p`'s list is `preferences[offsets[p]..offsets[p + 1]]`.
    offsets: Vec<usize>,
}

/// `/v1/ring` as sent; unknown fields are ignored so that the server may add some.
#[derive(Deserialize)]
struct RingJson {
    version: u64,
    n: u32,
    /// Not in every server version's answer: then the number of listed partitions.
    #[serde(default)]
    partition_count: Option<u64>,
    partitions: Vec<PartitionJson>,
    nodes: Vec<NodeJson>,
    hash: String,
}

#[derive(Deserialize)]
struct PartitionJson {
    id: u64,
    preference: Vec<String>,
}

#[derive(Deserialize)]
struct NodeJson {
    id: String,
    http: String,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

/// Prefix of the [`Error::InvalidResponse`] message of every layout this module rejects.
pub(crate) const UNUSABLE_RING: &str = "unusable ring layout";

fn invalid(reason: impl std::fmt::Display) -> Error {
    Error::InvalidResponse(format!("{UNUSABLE_RING}: {reason}"))
}

impl Ring {
    /// Parses and validates the body of `GET /v1/ring`. Fails with [`Error::InvalidResponse`]
    /// (`unusable ring layout: ...`) when it is malformed, inconsistent, or hashed with a
    /// function this client does not implement.
    pub fn from_json(body: &[u8]) -> Result<Ring, Error> {
        let json: RingJson = serde_json::from_slice(body)
            .map_err(|error| invalid(format!("not the expected JSON: {error}")))?;
        if json.hash != SUPPORTED_HASH {
            return Err(invalid(format!(
                "key hash function {:?} is not supported by this client (it supports {:?})",
                json.hash, SUPPORTED_HASH
            )));
        }
        if json.n == 0 {
            return Err(invalid("n is 0"));
        }
        if json.nodes.is_empty() || json.nodes.len() > RING_NODES_MAX {
            return Err(invalid(format!(
                "{} nodes listed, expected 1 to {RING_NODES_MAX}",
                json.nodes.len()
            )));
        }
        let listed = json.partitions.len() as u64;
        let count = json.partition_count.unwrap_or(listed);
        if count == 0 || count > u64::from(RING_PARTITIONS_MAX) || !count.is_power_of_two() {
            return Err(invalid(format!(
                "partition_count {count} is not a power of two from 1 to {RING_PARTITIONS_MAX}"
            )));
        }
        if listed != count {
            return Err(invalid(format!(
                "partition_count is {count} but {listed} partitions are listed"
            )));
        }
        // Checked above: count <= RING_PARTITIONS_MAX, so these conversions are lossless.
        let partition_count = count as u32;

        let mut index_of = HashMap::with_capacity(json.nodes.len());
        for (index, node) in json.nodes.iter().enumerate() {
            if index_of.insert(node.id.as_str(), index).is_some() {
                return Err(invalid(format!("node {:?} is listed twice", node.id)));
            }
        }

        let mut lists: Vec<Option<Vec<usize>>> = vec![None; count as usize];
        for partition in &json.partitions {
            let slot = usize::try_from(partition.id)
                .ok()
                .and_then(|id| lists.get_mut(id))
                .ok_or_else(|| {
                    invalid(format!(
                        "partition id {} is out of range (partition_count {count})",
                        partition.id
                    ))
                })?;
            if slot.is_some() {
                return Err(invalid(format!(
                    "partition {} is listed twice",
                    partition.id
                )));
            }
            if partition.preference.is_empty() {
                return Err(invalid(format!(
                    "partition {} has an empty preference list",
                    partition.id
                )));
            }
            let mut list = Vec::with_capacity(partition.preference.len());
            for id in &partition.preference {
                let index = *index_of.get(id.as_str()).ok_or_else(|| {
                    invalid(format!(
                        "partition {}'s preference list names unknown node {id:?}",
                        partition.id
                    ))
                })?;
                if list.contains(&index) {
                    return Err(invalid(format!(
                        "partition {}'s preference list names node {id:?} twice",
                        partition.id
                    )));
                }
                list.push(index);
            }
            *slot = Some(list);
        }

        let mut preferences = Vec::new();
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        offsets.push(0);
        for list in lists {
            // Every slot is filled: `count` distinct in-range ids were listed.
            preferences.extend(list.unwrap_or_default());
            offsets.push(preferences.len());
        }
        Ok(Ring {
            version: json.version,
            n: json.n,
            partition_count,
            nodes: json
                .nodes
                .into_iter()
                .map(|node| RingNode {
                    id: node.id,
                    http: node.http,
                    zone: node.zone.filter(|zone| !zone.is_empty()),
                    region: node
                        .region
                        .filter(|region| !region.is_empty() && region != "default"),
                })
                .collect(),
            preferences,
            offsets,
        })
    }

    /// The layout version (it grows with every committed change).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Replicas per key.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// Number of partitions (a power of two).
    pub fn partition_count(&self) -> u32 {
        self.partition_count
    }

    /// The nodes, in the order the ring lists them; preference lists index this.
    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    /// The partition of a key.
    pub fn partition(&self, bucket: &[u8], key: &[u8]) -> u32 {
        u32::from(keyspace::partition_of(
            keyspace::key_hash(bucket, key),
            self.partition_count,
        ))
    }

    /// The key's preference list: indices into [`Ring::nodes`], primaries first. Never empty.
    pub fn preference(&self, bucket: &[u8], key: &[u8]) -> &[usize] {
        self.partition_preference(self.partition(bucket, key))
    }

    /// The preference list of `partition`; empty when there is no such partition.
    pub fn partition_preference(&self, partition: u32) -> &[usize] {
        let partition = partition as usize;
        match (self.offsets.get(partition), self.offsets.get(partition + 1)) {
            (Some(&start), Some(&end)) => &self.preferences[start..end],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring of `count` partitions over nodes a, b, c: partition p prefers node p mod 3 first.
    fn ring_json(count: u32, hash: &str) -> serde_json::Value {
        let ids = ["a", "b", "c"];
        let partitions: Vec<_> = (0..count as usize)
            .map(|p| {
                serde_json::json!({
                    "id": p,
                    "preference": [ids[p % 3], ids[(p + 1) % 3], ids[(p + 2) % 3]],
                })
            })
            .collect();
        serde_json::json!({
            "version": 7,
            "n": 3,
            "partition_count": count,
            "partitions": partitions,
            "nodes": [
                {"id": "a", "http": "127.0.0.1:8081", "zone": "z1"},
                {"id": "b", "http": "http://127.0.0.1:8082", "zone": ""},
                {"id": "c", "http": "127.0.0.1:8083"},
            ],
            "hash": hash,
        })
    }

    fn parse(json: &serde_json::Value) -> Result<Ring, Error> {
        Ring::from_json(json.to_string().as_bytes())
    }

    fn reason(json: &serde_json::Value) -> String {
        match parse(json) {
            Err(Error::InvalidResponse(reason)) => {
                assert!(reason.starts_with("unusable ring layout: "), "{reason}");
                reason
            }
            other => panic!("expected an unusable layout, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_valid_ring() {
        let ring = parse(&ring_json(256, SUPPORTED_HASH)).expect("valid");
        assert_eq!(ring.version(), 7);
        assert_eq!(ring.n(), 3);
        assert_eq!(ring.partition_count(), 256);
        assert_eq!(ring.nodes().len(), 3);
        assert_eq!(ring.nodes()[0].zone.as_deref(), Some("z1"));
        assert_eq!(ring.nodes()[1].zone, None);
        assert_eq!(ring.nodes()[0].url(), "http://127.0.0.1:8081");
        assert_eq!(ring.nodes()[1].url(), "http://127.0.0.1:8082");
        assert_eq!(ring.partition_preference(0), [0, 1, 2]);
        assert_eq!(ring.partition_preference(4), [1, 2, 0]);
        assert_eq!(ring.partition_preference(255), [0, 1, 2]);
        assert_eq!(ring.partition_preference(256), [] as [usize; 0]);
    }

    #[test]
    fn preference_follows_the_core_hash() {
        // Pinned in yeskv-core: key_hash("carts", "alice") = 18_247_826_736_772_091_887, whose
        // top 8 bits are 253 (= 0xFD); so with 256 partitions the key lives in partition 253,
        // with 2 in partition 1 (the top bit), with 1 in partition 0.
        assert_eq!(
            keyspace::key_hash(b"carts", b"alice"),
            18_247_826_736_772_091_887
        );
        let ring = parse(&ring_json(256, SUPPORTED_HASH)).expect("valid");
        assert_eq!(ring.partition(b"carts", b"alice"), 253);
        // 253 mod 3 = 1: b first.
        assert_eq!(ring.preference(b"carts", b"alice"), [1, 2, 0]);
        let ring = parse(&ring_json(2, SUPPORTED_HASH)).expect("valid");
        assert_eq!(ring.partition(b"carts", b"alice"), 1);
        let ring = parse(&ring_json(1, SUPPORTED_HASH)).expect("valid");
        assert_eq!(ring.partition(b"carts", b"alice"), 0);
        assert_eq!(ring.preference(b"carts", b"alice"), [0, 1, 2]);
    }

    #[test]
    fn partition_count_is_optional_but_checked() {
        let mut json = ring_json(4, SUPPORTED_HASH);
        json.as_object_mut()
            .expect("object")
            .remove("partition_count");
        assert_eq!(parse(&json).expect("valid").partition_count(), 4);

        let json = ring_json(6, SUPPORTED_HASH);
        assert!(reason(&json).contains("power of two"), "{}", reason(&json));
        let mut json = ring_json(0, SUPPORTED_HASH);
        assert!(reason(&json).contains("power of two"));
        json["partition_count"] = 1u64.into();
        assert!(
            reason(&json).contains("1 but 0 partitions"),
            "{}",
            reason(&json)
        );
        let mut json = ring_json(4, SUPPORTED_HASH);
        json["partition_count"] = 8.into();
        assert!(reason(&json).contains("8 but 4"));
    }

    #[test]
    fn rejects_an_unknown_hash_function() {
        let json = ring_json(4, "md5(bucket/key)");
        let reason = reason(&json);
        assert!(reason.contains("\"md5(bucket/key)\""), "{reason}");
        assert!(reason.contains("not supported"), "{reason}");
        let error = parse(&json).expect_err("unusable");
        assert!(!error.is_retryable());
    }

    #[test]
    fn rejects_inconsistent_partitions() {
        let mut json = ring_json(4, SUPPORTED_HASH);
        json["partitions"][1]["id"] = 0.into();
        assert!(reason(&json).contains("partition 0 is listed twice"));

        let mut json = ring_json(4, SUPPORTED_HASH);
        json["partitions"][3]["id"] = 4.into();
        assert!(reason(&json).contains("out of range"));

        let mut json = ring_json(4, SUPPORTED_HASH);
        json["partitions"][2]["preference"] = serde_json::json!([]);
        assert!(reason(&json).contains("partition 2 has an empty preference list"));

        let mut json = ring_json(4, SUPPORTED_HASH);
        json["partitions"][2]["preference"] = serde_json::json!(["a", "zz"]);
        assert!(reason(&json).contains("unknown node \"zz\""));

        let mut json = ring_json(4, SUPPORTED_HASH);
        json["partitions"][2]["preference"] = serde_json::json!(["a", "a"]);
        assert!(reason(&json).contains("twice"));
    }

    #[test]
    fn rejects_bad_nodes_and_shapes() {
        let mut json = ring_json(4, SUPPORTED_HASH);
        json["nodes"][2]["id"] = "a".into();
        assert!(reason(&json).contains("node \"a\" is listed twice"));

        let mut json = ring_json(1, SUPPORTED_HASH);
        json["nodes"] = serde_json::json!([]);
        assert!(reason(&json).contains("0 nodes"));

        let mut json = ring_json(4, SUPPORTED_HASH);
        json["n"] = 0.into();
        assert!(reason(&json).contains("n is 0"));

        let mut json = ring_json(4, SUPPORTED_HASH);
        json.as_object_mut().expect("object").remove("version");
        assert!(reason(&json).contains("not the expected JSON"));
        assert!(matches!(
            Ring::from_json(b"<html>"),
            Err(Error::InvalidResponse(_))
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut json = ring_json(2, SUPPORTED_HASH);
        json["future"] = serde_json::json!({"x": 1});
        json["nodes"][0]["state"] = "valid".into();
        assert!(parse(&json).is_ok());
    }
}
