//! Bucket properties: what a bucket's values are (plain or a data type), how plain values
//! conflict, and when they expire (`GET`/`PUT /v1/buckets/{bucket}`).
//!
//! Properties are cluster-wide and consistent: a `PUT` goes through the cluster's layout leader
//! and is answered once the asked node applied it. The types are `yeskv_core`'s
//! ([`BucketProps`], [`BucketPatch`]), so the client checks properties by the server's own rules
//! ([`BucketProps::validate`]) before sending them; the JSON form is built here
//! ([`props_json`], [`patch_json`], [`props_from_json`]).

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::{Idempotence, RequestSpec};
use crate::path;
use crate::routing::Target;
use crate::{Client, Error};
use yeskv_core::{BucketPatch, BucketProps, Conflict, Datatype};

/// Least time a `PUT /v1/buckets/{bucket}` is given: a change of `datatype` first asks every
/// member whether the bucket holds data, then the change waits for the layout leader.
pub const SET_BUCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// Every field of `props`, as `PUT` takes them and `GET` answers them.
pub fn props_json(props: &BucketProps) -> Value {
    serde_json::json!({
        "datatype": props.datatype.map(Datatype::as_str),
        "conflict": props.conflict.as_str(),
        "ttl_secs": props.ttl_secs,
        "ttl_sliding": props.ttl_sliding,
        "salt": props.salt,
    })
}

/// The fields `patch` changes (a missing field keeps its value on the server; `null` clears a
/// nullable one).
pub fn patch_json(patch: &BucketPatch) -> Value {
    let mut fields = Map::new();
    if let Some(datatype) = patch.datatype {
        fields.insert("datatype".into(), datatype.map(Datatype::as_str).into());
    }
    if let Some(conflict) = patch.conflict {
        fields.insert("conflict".into(), conflict.as_str().into());
    }
    if let Some(ttl_secs) = patch.ttl_secs {
        fields.insert("ttl_secs".into(), ttl_secs.into());
    }
    if let Some(sliding) = patch.ttl_sliding {
        fields.insert("ttl_sliding".into(), sliding.into());
    }
    if let Some(salt) = patch.salt {
        fields.insert("salt".into(), salt.into());
    }
    Value::Object(fields)
}

/// Parses a `GET /v1/buckets/{bucket}` answer; a field it lacks has its default.
pub fn props_from_json(body: &[u8]) -> Result<BucketProps, Error> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(default)]
        datatype: Option<String>,
        #[serde(default)]
        conflict: Option<String>,
        #[serde(default)]
        ttl_secs: Option<u64>,
        #[serde(default)]
        ttl_sliding: bool,
        #[serde(default)]
        salt: Option<u8>,
    }
    let invalid = |what: String| Error::InvalidResponse(format!("bucket properties: {what}"));
    let wire: Wire = serde_json::from_slice(body).map_err(|error| invalid(error.to_string()))?;
    let datatype = match wire.datatype.as_deref() {
        None => None,
        Some(name) => Some(
            Datatype::parse(name).ok_or_else(|| invalid(format!("unknown datatype {name:?}")))?,
        ),
    };
    let conflict = match wire.conflict.as_deref() {
        None => Conflict::default(),
        Some(name) => {
            Conflict::parse(name).ok_or_else(|| invalid(format!("unknown conflict {name:?}")))?
        }
    };
    Ok(BucketProps {
        datatype,
        conflict,
        ttl_secs: wire.ttl_secs,
        ttl_sliding: wire.ttl_sliding,
        salt: wire.salt.unwrap_or(1),
    })
}

impl Client {
    /// The properties of `bucket` (`GET /v1/buckets/{bucket}`); a bucket never set has the
    /// defaults (a plain bucket).
    pub async fn bucket(&self, bucket: impl AsRef<[u8]>) -> Result<BucketProps, Error> {
        let bucket = bucket.as_ref();
        check_bucket(bucket)?;
        let response = self
            .execute(
                Target::AnyNode,
                RequestSpec {
                    method: Method::GET,
                    path_and_query: Bytes::from(path::bucket_path(bucket)),
                    context: None,
                    accept_json: true,
                    body: None,
                    json_body: false,
                    idempotence: Idempotence::Idempotent,
                    timeout: None,
                },
            )
            .await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        props_from_json(&response.body)
    }

    /// Sets every property of `bucket` to `props`, cluster-wide. `props` is checked first
    /// ([`BucketProps::validate`]: nothing is sent if it fails). The server refuses a change of
    /// `datatype` of a bucket that holds data (409, [`Error::is_conflict`]) and answers 503 when
    /// it has no layout leader or cannot ask every member (retried like a read: setting the
    /// same properties twice is harmless). Each attempt may take up to
    /// [`SET_BUCKET_TIMEOUT`] (or the client's timeout, if longer).
    pub async fn set_bucket(
        &self,
        bucket: impl AsRef<[u8]>,
        props: &BucketProps,
    ) -> Result<(), Error> {
        props
            .validate()
            .map_err(|error| Error::InvalidArgument(error.to_string()))?;
        self.put_bucket(bucket.as_ref(), props_json(props)).await
    }

    /// Changes only the properties `patch` names (the others keep their values). The server
    /// checks the result holds together (400 with the reason otherwise); see
    /// [`Client::set_bucket`] for the rest.
    pub async fn patch_bucket(
        &self,
        bucket: impl AsRef<[u8]>,
        patch: &BucketPatch,
    ) -> Result<(), Error> {
        self.put_bucket(bucket.as_ref(), patch_json(patch)).await
    }

    async fn put_bucket(&self, bucket: &[u8], body: Value) -> Result<(), Error> {
        check_bucket(bucket)?;
        let response = self
            .execute(
                Target::AnyNode,
                RequestSpec {
                    method: Method::PUT,
                    path_and_query: Bytes::from(path::bucket_path(bucket)),
                    context: None,
                    accept_json: true,
                    body: Some(Bytes::from(body.to_string())),
                    json_body: true,
                    idempotence: Idempotence::Idempotent,
                    timeout: Some(SET_BUCKET_TIMEOUT.max(self.timeout())),
                },
            )
            .await?;
        if !response.status.is_success() {
            return Err(response.into_error());
        }
        Ok(())
    }
}

fn check_bucket(bucket: &[u8]) -> Result<(), Error> {
    if bucket.is_empty() {
        return Err(Error::InvalidArgument("bucket must not be empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_props() -> BucketProps {
        BucketProps {
            ttl_secs: Some(1800),
            ttl_sliding: true,
            ..BucketProps::default()
        }
    }

    #[test]
    fn props_round_trip_through_json() {
        let cart = BucketProps {
            datatype: Some(Datatype::Cart),
            ..BucketProps::default()
        };
        let counter = BucketProps {
            datatype: Some(Datatype::Counter),
            salt: 8,
            ..BucketProps::default()
        };
        let lww = BucketProps {
            conflict: Conflict::Lww,
            ..BucketProps::default()
        };
        for props in [BucketProps::default(), cart, counter, lww, session_props()] {
            let json = props_json(&props).to_string();
            assert_eq!(props_from_json(json.as_bytes()), Ok(props));
        }
        assert_eq!(
            props_json(&session_props()),
            serde_json::json!({"datatype": null, "conflict": "siblings", "ttl_secs": 1800,
                               "ttl_sliding": true, "salt": 1})
        );
    }

    #[test]
    fn missing_fields_read_as_defaults_and_unknown_names_fail() {
        assert_eq!(props_from_json(b"{}"), Ok(BucketProps::default()));
        assert!(props_from_json(br#"{"datatype":"map"}"#).is_err());
        assert!(props_from_json(br#"{"conflict":"newest"}"#).is_err());
        assert!(props_from_json(b"\"props\"").is_err());
        assert!(props_from_json(b"not json").is_err());
    }

    #[test]
    fn patches_name_only_their_fields() {
        assert_eq!(patch_json(&BucketPatch::default()), serde_json::json!({}));
        let patch = BucketPatch {
            datatype: Some(None),
            ttl_secs: Some(Some(60)),
            ttl_sliding: Some(true),
            ..BucketPatch::default()
        };
        assert_eq!(
            patch_json(&patch),
            serde_json::json!({"datatype": null, "ttl_secs": 60, "ttl_sliding": true})
        );
    }
}
