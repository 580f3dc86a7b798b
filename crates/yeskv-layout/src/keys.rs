//! API keys in the replicated state: who may do what over the client API.
//!
//! A key is a name, the SHA-256 of its secret (the secret itself is shown once to whoever
//! created it and is never stored), an `admin` flag and a permission per bucket
//! ([`Access`]). Keys live in the layout's [`crate::LayoutState`] beside the buckets'
//! properties, so every node applies the same keys in the same order (cluster-wide and
//! consistent: a revocation is one log entry, applied by every node), and a node checks a
//! request against the keys of the state it last applied, without asking anyone.
//!
//! [`crate::Command::PutKey`] adds a key and [`crate::Command::RevokeKey`] drops one. Both
//! are validated when applied (names, sizes, counts: [`ApiKey::validate`], [`validate_name`]),
//! so a log entry from a faulty proposer cannot grow the state past its bounds.
//!
//! Hashing and comparing secrets is the node's business (`yeskv-node`'s `auth` module); this
//! module is plain data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most API keys in a cluster. Each costs at most about
/// `32 + 64 + KEY_BUCKETS_MAX * (BUCKET_BYTES_MAX + 2)` bytes of state; real keys name a few
/// buckets, so a full table stays within a few MiB of snapshot.
pub const KEYS_MAX: usize = 1024;
/// Longest key name, in bytes.
pub const KEY_NAME_BYTES_MAX: usize = 64;
/// Most buckets one key names.
pub const KEY_BUCKETS_MAX: usize = 64;
/// Bytes of a key's hash (SHA-256).
pub const KEY_HASH_BYTES: usize = 32;

/// What a key may do in one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Reads (`GET`, `HEAD`).
    Read,
    /// Writes (`PUT`, `POST`, `DELETE`), not reads.
    Write,
    /// Both.
    ReadWrite,
}

impl Access {
    /// Whether it allows reads.
    pub fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    /// Whether it allows writes.
    pub fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }

    /// Its name in the API and the CLI: `read`, `write`, `readwrite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "readwrite",
        }
    }

    /// Reads [`Access::as_str`]'s names.
    pub fn parse(text: &str) -> Option<Access> {
        match text {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            _ => None,
        }
    }
}

/// One API key as the state holds it (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// SHA-256 of the secret.
    pub hash: [u8; KEY_HASH_BYTES],
    /// Whether the key may do everything (every bucket, every operator endpoint).
    pub admin: bool,
    /// What it may do per bucket (names of 1 to [`crate::BUCKET_BYTES_MAX`] bytes, at most
    /// [`KEY_BUCKETS_MAX`]).
    pub buckets: BTreeMap<Vec<u8>, Access>,
}

impl ApiKey {
    /// Checks the key's limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.buckets.len() > KEY_BUCKETS_MAX {
            return Err(format!(
                "{} buckets, a key names at most {KEY_BUCKETS_MAX}",
                self.buckets.len()
            ));
        }
        for bucket in self.buckets.keys() {
            if bucket.is_empty() || bucket.len() > crate::BUCKET_BYTES_MAX {
                return Err(format!(
                    "a bucket name is 1 to {} bytes, got {}",
                    crate::BUCKET_BYTES_MAX,
                    bucket.len()
                ));
            }
        }
        Ok(())
    }

    /// Whether it may read `bucket`.
    pub fn may_read(&self, bucket: &[u8]) -> bool {
        self.admin || self.buckets.get(bucket).is_some_and(|a| a.reads())
    }

    /// Whether it may write `bucket`.
    pub fn may_write(&self, bucket: &[u8]) -> bool {
        self.admin || self.buckets.get(bucket).is_some_and(|a| a.writes())
    }
}

/// Checks a key name: 1 to [`KEY_NAME_BYTES_MAX`] bytes of ASCII letters, digits, `.`, `_`
/// and `-` (it is a URL path segment and a CLI argument).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > KEY_NAME_BYTES_MAX {
        return Err(format!(
            "a key name is 1 to {KEY_NAME_BYTES_MAX} bytes, got {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "a key name is made of ASCII letters, digits, '.', '_' and '-'; got {c:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_parses_and_allows() {
        for access in [Access::Read, Access::Write, Access::ReadWrite] {
            assert_eq!(Access::parse(access.as_str()), Some(access));
        }
        assert_eq!(Access::parse("admin"), None);
        let key = ApiKey {
            hash: [0; 32],
            admin: false,
            buckets: [
                (b"r".to_vec(), Access::Read),
                (b"w".to_vec(), Access::Write),
                (b"rw".to_vec(), Access::ReadWrite),
            ]
            .into_iter()
            .collect(),
        };
        assert!(key.may_read(b"r") && !key.may_write(b"r"));
        assert!(!key.may_read(b"w") && key.may_write(b"w"));
        assert!(key.may_read(b"rw") && key.may_write(b"rw"));
        assert!(!key.may_read(b"other") && !key.may_write(b"other"));
        let admin = ApiKey {
            admin: true,
            buckets: BTreeMap::new(),
            ..key
        };
        assert!(admin.may_read(b"any") && admin.may_write(b"any"));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("ci-reader_2.prod").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(KEY_NAME_BYTES_MAX + 1)).is_err());
        assert!(validate_name("a/b").expect_err("refused").contains("'/'"));
        assert!(validate_name("é").is_err());
    }
}
