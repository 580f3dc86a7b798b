//! Bucket properties: what a bucket's values are and how they conflict and expire.
//!
//! A bucket with no properties set is a plain bucket (opaque values, concurrent writes kept as
//! siblings, no expiry). Properties are cluster-wide: they live in the layout service's
//! replicated state (`yeskv-layout`), so every node applies the same ones, and a node reads them
//! from its last applied state without asking anyone (a missing Raft leader never blocks a read
//! or write). This module owns the one definition of the properties and their validation; the
//! HTTP surface (`PUT /v1/buckets/{bucket}`) parses JSON into a [`BucketPatch`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest TTL a bucket may set, in seconds (100 years; as a `?ttl=` query).
pub const BUCKET_TTL_SECS_MAX: u64 = 100 * 365 * 24 * 3600;

/// Most sub-keys a salted key may be spread over.
pub const SALT_MAX: u8 = 64;

/// A bucket's server-side data type (`crate::datatypes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Datatype {
    /// An add-wins map of item → quantity.
    Cart,
    /// A counter that goes up and down.
    Counter,
    /// An add-wins set of members.
    Set,
}

impl Datatype {
    /// The name used on the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Cart => "cart",
            Datatype::Counter => "counter",
            Datatype::Set => "set",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Datatype> {
        match s {
            "cart" => Some(Datatype::Cart),
            "counter" => Some(Datatype::Counter),
            "set" => Some(Datatype::Set),
            _ => None,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a plain bucket resolves concurrent writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Conflict {
    /// Keep every concurrent write as a sibling; the next write with a context resolves them.
    #[default]
    Siblings,
    /// Last writer wins by hybrid-logical-clock timestamp: a read answers one value. Concurrent
    /// writes may lose all but one — what the user asked for by choosing it.
    Lww,
}

impl Conflict {
    /// The name used on the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Conflict::Siblings => "siblings",
            Conflict::Lww => "lww",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Conflict> {
        match s {
            "siblings" => Some(Conflict::Siblings),
            "lww" => Some(Conflict::Lww),
            _ => None,
        }
    }
}

/// A bucket's properties (module docs). `Default` is a plain bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BucketProps {
    /// `None`: opaque values.
    pub datatype: Option<Datatype>,
    /// How concurrent plain writes resolve (data types always merge).
    pub conflict: Conflict,
    /// Every write's expiry, seconds after the write (a request's `?ttl=` overrides it).
    pub ttl_secs: Option<u64>,
    /// Each read or write of a key extends its expiry by `ttl_secs`.
    pub ttl_sliding: bool,
    /// Sub-keys a `counter` or `set` key's writes are spread over (1: not salted).
    pub salt: u8,
}

impl Default for BucketProps {
    fn default() -> Self {
        BucketProps {
            datatype: None,
            conflict: Conflict::Siblings,
            ttl_secs: None,
            ttl_sliding: false,
            salt: 1,
        }
    }
}

/// A change to a bucket's properties: `None` keeps a field (for the nullable fields,
/// `Some(None)` clears it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketPatch {
    /// New data type, or `Some(None)` for plain values.
    pub datatype: Option<Option<Datatype>>,
    /// New conflict resolution.
    pub conflict: Option<Conflict>,
    /// New TTL, or `Some(None)` for none.
    pub ttl_secs: Option<Option<u64>>,
    /// New sliding flag.
    pub ttl_sliding: Option<bool>,
    /// New salt.
    pub salt: Option<u8>,
}

/// Why a set of properties is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProps {
    /// A field's value is out of range or contradicts another.
    #[error("{0}")]
    Invalid(String),
}

impl BucketProps {
    /// `self` changed by `patch`, checked ([`BucketProps::validate`]).
    pub fn patched(&self, patch: &BucketPatch) -> Result<BucketProps, InvalidProps> {
        let mut next = self.clone();
        if let Some(d) = patch.datatype {
            next.datatype = d;
        }
        if let Some(c) = patch.conflict {
            next.conflict = c;
        }
        if let Some(t) = patch.ttl_secs {
            next.ttl_secs = t;
        }
        if let Some(s) = patch.ttl_sliding {
            next.ttl_sliding = s;
        }
        if let Some(s) = patch.salt {
            next.salt = s;
        }
        next.validate()?;
        Ok(next)
    }

    /// Checks the properties hold together.
    pub fn validate(&self) -> Result<(), InvalidProps> {
        let bad = |m: String| Err(InvalidProps::Invalid(m));
        if let Some(t) = self.ttl_secs {
            if t == 0 || t > BUCKET_TTL_SECS_MAX {
                return bad(format!(
                    "ttl_secs must be between 1 and {BUCKET_TTL_SECS_MAX}, got {t}"
                ));
            }
        }
        if self.ttl_sliding && self.ttl_secs.is_none() {
            return bad("ttl_sliding needs ttl_secs".into());
        }
        if self.salt == 0 || self.salt > SALT_MAX {
            return bad(format!(
                "salt must be between 1 and {SALT_MAX}, got {}",
                self.salt
            ));
        }
        if self.salt > 1 && !matches!(self.datatype, Some(Datatype::Counter | Datatype::Set)) {
            return bad("salt applies to counter and set buckets only".into());
        }
        if self.conflict == Conflict::Lww && self.datatype.is_some() {
            return bad(
                "conflict \"lww\" applies to plain buckets (data types always merge)".into(),
            );
        }
        Ok(())
    }

    /// Whether the bucket is plain (opaque values).
    pub fn is_plain(&self) -> bool {
        self.datatype.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_keep_missing_fields_and_validate() {
        let p = BucketProps::default();
        let counter = p
            .patched(&BucketPatch {
                datatype: Some(Some(Datatype::Counter)),
                salt: Some(16),
                ..Default::default()
            })
            .expect("valid");
        assert_eq!(counter.salt, 16);
        assert_eq!(counter.conflict, Conflict::Siblings);
        let ttl = counter
            .patched(&BucketPatch {
                ttl_secs: Some(Some(60)),
                ttl_sliding: Some(true),
                ..Default::default()
            })
            .expect("valid");
        assert_eq!(
            (ttl.datatype, ttl.salt, ttl.ttl_secs),
            (Some(Datatype::Counter), 16, Some(60))
        );
        assert!(p
            .patched(&BucketPatch {
                ttl_sliding: Some(true),
                ..Default::default()
            })
            .is_err());
        assert!(p
            .patched(&BucketPatch {
                salt: Some(0),
                ..Default::default()
            })
            .is_err());
        assert!(p
            .patched(&BucketPatch {
                salt: Some(65),
                ..Default::default()
            })
            .is_err());
        assert!(p
            .patched(&BucketPatch {
                salt: Some(4),
                ..Default::default()
            })
            .is_err());
        assert!(p
            .patched(&BucketPatch {
                ttl_secs: Some(Some(0)),
                ..Default::default()
            })
            .is_err());
        assert!(counter
            .patched(&BucketPatch {
                conflict: Some(Conflict::Lww),
                ..Default::default()
            })
            .is_err());
        let cleared = ttl
            .patched(&BucketPatch {
                ttl_secs: Some(None),
                ttl_sliding: Some(false),
                ..Default::default()
            })
            .expect("valid");
        assert_eq!(cleared.ttl_secs, None);
    }

    #[test]
    fn names_round_trip() {
        for d in [Datatype::Cart, Datatype::Counter, Datatype::Set] {
            assert_eq!(Datatype::parse(d.as_str()), Some(d));
        }
        for c in [Conflict::Siblings, Conflict::Lww] {
            assert_eq!(Conflict::parse(c.as_str()), Some(c));
        }
        assert_eq!(Datatype::parse("map"), None);
    }
}
