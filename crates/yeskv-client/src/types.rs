//! The values exchanged with a node: quorum choices, per-request options, and what a read returns.

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize};

use crate::Error;
use yeskv_core::Quorum;

/// Standard base64 that accepts values with or without `=` padding (the server pads; being
/// lenient costs nothing).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Options of one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Replicas that must answer (`?r=`); `None` uses the server's configured default.
    pub r: Option<Quorum>,
}

/// Options of one write or delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// The causal context of an earlier read (or write) of the key: the write supersedes exactly
    /// the versions that context covers. `None` is a blind write that supersedes nothing.
    pub context: Option<String>,
    /// Replicas that must acknowledge (`?w=`); `None` uses the server's configured default.
    pub w: Option<Quorum>,
    /// Expire the value this many seconds after the write (`?ttl=`); ignored by deletes.
    pub ttl_secs: Option<u64>,
}

/// One version of a key: a value, or a tombstone left by a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The value; `None` for a tombstone (`"deleted": true` on the wire).
    pub value: Option<Bytes>,
}

impl Sibling {
    /// Whether this version is a delete marker.
    pub fn is_deleted(&self) -> bool {
        self.value.is_none()
    }
}

/// What a read returned: the causal context to send back with the next write, and every
/// concurrent version (sibling) of the key.
///
/// `siblings` is empty when the key has no live value (HTTP 404); `context` is then the token of
/// the tombstones the server still remembers, or empty when it knows nothing of the key. A write
/// carrying even that context keeps the old tombstones from resurfacing as siblings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// The opaque causal context token (`X-Causal-Context`).
    pub context: String,
    /// The concurrent versions, as the server ordered them.
    pub siblings: Vec<Sibling>,
}

impl Read {
    /// The live values, tombstones skipped.
    pub fn values(&self) -> impl Iterator<Item = &Bytes> + '_ {
        self.siblings
            .iter()
            .filter_map(|sibling| sibling.value.as_ref())
    }

    /// The value when the read found exactly one version and it is not a tombstone.
    pub fn value(&self) -> Option<&Bytes> {
        match self.siblings.as_slice() {
            [only] => only.value.as_ref(),
            _ => None,
        }
    }

    /// Whether concurrent versions exist (tombstones count): the application should merge them
    /// and write the result back with [`Read::context`].
    pub fn is_conflict(&self) -> bool {
        self.siblings.len() > 1
    }

    /// Whether any live value was found.
    pub fn is_found(&self) -> bool {
        self.values().next().is_some()
    }

    /// Parses the server's JSON form of a read:
    /// `{"context": "...", "siblings": [{"value": "<base64>", "deleted": false}, ...]}`.
    pub fn from_json(body: &[u8]) -> Result<Read, Error> {
        #[derive(Deserialize)]
        struct WireRead<'a> {
            #[serde(default, borrow)]
            context: Option<Cow<'a, str>>,
            #[serde(borrow)]
            siblings: Vec<WireSibling<'a>>,
        }
        #[derive(Deserialize)]
        struct WireSibling<'a> {
            #[serde(default, borrow)]
            value: Option<Cow<'a, str>>,
            #[serde(default)]
            deleted: bool,
        }

        let wire: WireRead<'_> = serde_json::from_slice(body)
            .map_err(|error| Error::InvalidResponse(format!("read body is not valid: {error}")))?;
        let mut siblings = Vec::with_capacity(wire.siblings.len());
        for sibling in wire.siblings {
            let value = if sibling.deleted {
                None
            } else {
                let encoded = sibling.value.unwrap_or_default();
                let decoded = BASE64.decode(encoded.as_bytes()).map_err(|error| {
                    Error::InvalidResponse(format!("sibling value is not base64: {error}"))
                })?;
                Some(Bytes::from(decoded))
            };
            siblings.push(Sibling { value });
        }
        Ok(Read {
            context: wire.context.map(Cow::into_owned).unwrap_or_default(),
            siblings,
        })
    }

    /// The server's JSON form of this read (see [`Read::from_json`]); tombstones are written as
    /// `{"value": null, "deleted": true}`.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, booleans and nulls into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for Sibling {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut state = serializer.serialize_struct("Sibling", 2)?;
        match &self.value {
            Some(value) => state.serialize_field("value", &BASE64.encode(value))?,
            None => state.serialize_field("value", &None::<&str>)?,
        }
        state.serialize_field("deleted", &self.value.is_none())?;
        state.end()
    }
}

impl Serialize for Read {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut state = serializer.serialize_struct("Read", 2)?;
        state.serialize_field("context", &self.context)?;
        state.serialize_field("siblings", &self.siblings)?;
        state.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_round_trips_through_text() {
        for (text, quorum) in [
            ("one", Quorum::One),
            ("quorum", Quorum::Quorum),
            ("all", Quorum::All),
            ("1", Quorum::N(1)),
            ("3", Quorum::N(3)),
            ("255", Quorum::N(255)),
        ] {
            assert_eq!(text.parse::<Quorum>(), Ok(quorum));
            assert_eq!(quorum.to_string(), text);
        }
        assert_eq!("ALL".parse::<Quorum>(), Ok(Quorum::All));
        assert_eq!(" Quorum ".parse::<Quorum>(), Ok(Quorum::Quorum));
    }

    #[test]
    fn quorum_rejects_nonsense() {
        for text in ["", "0", "256", "-1", "two", "1.5", "majority"] {
            assert!(text.parse::<Quorum>().is_err(), "{text:?} parsed");
        }
        let message = "0"
            .parse::<Quorum>()
            .expect_err("0 is no quorum")
            .to_string();
        assert!(message.contains("1 to 255"), "{message}");
    }

    #[test]
    fn read_parses_values_and_tombstones() {
        let body = br#"{"context":"abc","siblings":[
            {"value":"aGVsbG8=","deleted":false},
            {"value":"","deleted":true},
            {"value":"aGk","deleted":false},
            {"deleted":true,"value":null}]}"#;
        let read = Read::from_json(body).expect("valid");
        assert_eq!(read.context, "abc");
        assert_eq!(read.siblings.len(), 4);
        let values: Vec<&[u8]> = read.values().map(|value| value.as_ref()).collect();
        assert_eq!(values, [&b"hello"[..], &b"hi"[..]]);
        assert!(read.is_conflict());
        assert!(read.is_found());
        assert_eq!(read.value(), None);
        assert!(read.siblings[1].is_deleted());
    }

    #[test]
    fn read_json_round_trips() {
        let read = Read {
            context: "ctx".into(),
            siblings: vec![
                Sibling {
                    value: Some(Bytes::from_static(b"\x00\xffbinary")),
                },
                Sibling { value: None },
            ],
        };
        let json = read.to_json();
        assert_eq!(
            json,
            r#"{"context":"ctx","siblings":[{"value":"AP9iaW5hcnk=","deleted":false},{"value":null,"deleted":true}]}"#
        );
        assert_eq!(Read::from_json(json.as_bytes()), Ok(read));
    }

    #[test]
    fn single_value_read() {
        let read =
            Read::from_json(br#"{"context":"c","siblings":[{"value":"eA==","deleted":false}]}"#)
                .expect("valid");
        assert_eq!(read.value().map(|v| v.as_ref()), Some(&b"x"[..]));
        assert!(!read.is_conflict());
        assert!(Read::from_json(br#"{"context":"c","siblings":[{"value":"!!"}]}"#).is_err());
        assert!(Read::from_json(b"not json").is_err());
    }

    #[test]
    fn empty_read_is_not_found() {
        let read = Read::default();
        assert!(!read.is_found());
        assert!(!read.is_conflict());
        assert_eq!(read.value(), None);
    }
}
