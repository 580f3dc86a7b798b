//! serde helpers for [`NodeId`], which `yeskv-core` keeps free of serde: a node id travels as
//! its string and is validated again ([`NodeId::new`]) when decoded, so no malformed id from a
//! peer or a disk ever becomes a `NodeId`.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use yeskv_core::NodeId;

fn parse<'de, D: Deserializer<'de>>(text: String) -> Result<NodeId, D::Error> {
    NodeId::new(text).map_err(D::Error::custom)
}

/// `#[serde(with = "node_id")]` for one [`NodeId`].
pub(crate) mod node_id {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        parse::<D>(String::deserialize(d)?)
    }
}

/// `#[serde(with = "node_ids")]` for a `Vec<NodeId>`.
pub(crate) mod node_ids {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(ids: &[NodeId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(NodeId::as_str))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NodeId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(parse::<D>)
            .collect()
    }
}

/// `#[serde(with = "node_map")]` for a `BTreeMap<NodeId, V>`.
pub(crate) mod node_map {
    use super::*;

    pub(crate) fn serialize<S, V>(map: &BTreeMap<NodeId, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        V: Serialize,
    {
        s.collect_map(map.iter().map(|(id, value)| (id.as_str(), value)))
    }

    pub(crate) fn deserialize<'de, D, V>(d: D) -> Result<BTreeMap<NodeId, V>, D::Error>
    where
        D: Deserializer<'de>,
        V: Deserialize<'de>,
    {
        let entries = BTreeMap::<String, V>::deserialize(d)?;
        let mut map = BTreeMap::new();
        for (id, value) in entries {
            map.insert(parse::<D>(id)?, value);
        }
        Ok(map)
    }
}
