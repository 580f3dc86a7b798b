//! Salted keys: one hot `counter` or `set` key spread over several keys (the bucket's
//! `salt`), so that its writes load many partitions instead of one.
//!
//! Sub-key 0 of `(bucket, key)` is the key itself; sub-key `i` (1 ≤ i < salt) is
//! `(bucket ‖ "\0salt", [i] ‖ key)`, a key of its own hashing to its own partition. Each
//! sub-key is an independent data-type object: a write goes to one sub-key picked at random, a
//! read reads every sub-key and combines their *values* (a counter's sum, a set's union) — never
//! their states, whose dots and remove contexts belong to their own object. A set `remove` goes
//! to every sub-key and removes what each sub-key's coordinator holds (the client's context
//! names one object and cannot say what it saw of the others).

use std::collections::BTreeSet;

use yeskv_core::datatypes::{self, DtOp, DtValue};
use yeskv_core::{BucketProps, CausalContext, Object, Quorum};
use yeskv_storage::Engine;

use super::{Coordinator, Write, WriteBody, Written};
use crate::error::Error;

/// What a salted bucket's sub-keys live in: the bucket's name followed by this.
pub const SALT_SUFFIX: &[u8] = b"\0salt";

/// The `(bucket, key)` of sub-key `i` of a salted key (module docs).
pub fn sub_key(bucket: &[u8], key: &[u8], i: u8) -> (Vec<u8>, Vec<u8>) {
    if i == 0 {
        return (bucket.to_vec(), key.to_vec());
    }
    let mut b = bucket.to_vec();
    b.extend_from_slice(SALT_SUFFIX);
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(i);
    k.extend_from_slice(key);
    (b, k)
}

/// The bucket whose properties a stored bucket name follows: a sub-key's bucket follows the
/// salted bucket it belongs to.
pub fn props_bucket(bucket: &[u8]) -> &[u8] {
    bucket.strip_suffix(SALT_SUFFIX).unwrap_or(bucket)
}

/// A data-type read: the value and the context of the key's object (of sub-key 0 when
/// salted); `None` when nothing was ever written.
pub struct DtRead {
    /// The value, if any sub-key holds one.
    pub value: Option<DtValue>,
    /// The object whose context the client gets back.
    pub object: Object,
}

impl<E: Engine> Coordinator<E> {
    /// A data-type operation, spread over the sub-keys of a salted bucket (module docs).
    pub async fn dt_write(
        &self,
        bucket: &[u8],
        key: &[u8],
        write: Write,
        w: Option<Quorum>,
    ) -> Result<Written, Error> {
        let props = self.bucket_props(bucket);
        if props.salt <= 1 {
            return self.write(bucket, key, write, w).await;
        }
        if let WriteBody::Dt(DtOp::SetRemove { .. }) = &write.body {
            let mut last = None;
            let writes = (0..props.salt).map(|i| {
                let (b, k) = sub_key(bucket, key, i);
                let sub = Write {
                    ctx: CausalContext::empty(),
                    body: write.body.clone(),
                    ttl_secs: write.ttl_secs,
                };
                async move { self.write(&b, &k, sub, w).await }
            });
            for result in futures_util::future::join_all(writes).await {
                last = Some(result?);
            }
            return last.ok_or_else(|| Error::BadRequest("salt of 0".into()));
        }
        let i = (rand::random::<u32>() % u32::from(props.salt)) as u8;
        let (b, k) = sub_key(bucket, key, i);
        let written = self.write(&b, &k, write, w).await?;
        Ok(Written {
            // A context for one sub-key says nothing of the key: only sub-key 0's is handed out.
            ctx: if i == 0 {
                written.ctx
            } else {
                CausalContext::empty()
            },
            siblings: written.siblings,
        })
    }

    /// Reads a data-type key: every sub-key of a salted bucket, their values combined.
    pub async fn dt_read(
        &self,
        bucket: &[u8],
        key: &[u8],
        props: &BucketProps,
        r: Option<Quorum>,
    ) -> Result<DtRead, Error> {
        let kind = props
            .datatype
            .ok_or_else(|| Error::Conflict("a plain bucket".into()))?;
        let salt = props.salt.max(1);
        let reads = (0..salt).map(|i| {
            let (b, k) = sub_key(bucket, key, i);
            async move { self.get(&b, &k, r).await }
        });
        let objects = futures_util::future::try_join_all(reads).await?;
        let now = self.now_ms();
        let mut values = Vec::new();
        for obj in &objects {
            let states: Vec<&[u8]> = obj
                .visible(now)
                .filter_map(|s| s.version.value.as_deref())
                .collect();
            if states.is_empty() {
                continue;
            }
            let state = datatypes::fold(kind, states.iter().copied())
                .map_err(|e| Error::Conflict(format!("the key does not hold a {kind}: {e}")))?;
            values.push(state.value());
        }
        let object = objects.into_iter().next().unwrap_or_default();
        Ok(DtRead {
            value: combine(values),
            object,
        })
    }
}

/// Combines the values of sub-keys: counters add up, sets unite (carts are never salted).
fn combine(values: Vec<DtValue>) -> Option<DtValue> {
    let mut it = values.into_iter();
    let first = it.next()?;
    Some(it.fold(first, |acc, v| match (acc, v) {
        (DtValue::Counter(a), DtValue::Counter(b)) => DtValue::Counter(a.saturating_add(b)),
        (DtValue::Set(a), DtValue::Set(b)) => {
            let all: BTreeSet<String> = a.into_iter().chain(b).collect();
            DtValue::Set(all.into_iter().collect())
        }
        (acc, _) => acc,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_keys_are_distinct_and_map_back_to_their_bucket() {
        let (b0, k0) = sub_key(b"hits", b"sale", 0);
        assert_eq!((b0.as_slice(), k0.as_slice()), (&b"hits"[..], &b"sale"[..]));
        let (b3, k3) = sub_key(b"hits", b"sale", 3);
        assert_eq!(props_bucket(&b3), b"hits");
        assert_eq!(k3, b"\x03sale");
        assert_ne!(sub_key(b"hits", b"sale", 1), sub_key(b"hits", b"sale", 2));
        assert_eq!(props_bucket(b"plain"), b"plain");
    }

    #[test]
    fn values_combine() {
        let c = combine(vec![
            DtValue::Counter(3),
            DtValue::Counter(-1),
            DtValue::Counter(5),
        ]);
        assert_eq!(c, Some(DtValue::Counter(7)));
        let s = combine(vec![
            DtValue::Set(vec!["a".into(), "c".into()]),
            DtValue::Set(vec!["b".into(), "c".into()]),
        ]);
        assert_eq!(
            s,
            Some(DtValue::Set(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert_eq!(combine(vec![]), None);
    }
}
