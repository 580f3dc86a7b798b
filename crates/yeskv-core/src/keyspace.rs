//! The keyspace: how a `(bucket, key)` pair becomes a 64-bit hash, a partition and a storage key.
//!
//! The hash is XXH3-64 of `u16 BE bucket length ‖ bucket ‖ key`, a stable function any client can
//! compute (it is named in `/v1/ring` as [`HASH_NAME`]). Partitions are the top bits of the hash,
//! so the partition count is a power of two and each partition is a contiguous hash range
//! (Dynamo §6.2, "strategy 3": fixed, equal-sized partitions). Storage keys start with the
//! partition number so that everything one partition holds is one contiguous range on disk: a
//! handoff or an anti-entropy pass over a partition is a range scan, never a full scan.

/// Name of the key → hash function, as published in `/v1/ring`.
pub const HASH_NAME: &str =
    "xxh3-64(u16be(len(bucket)) || bucket || key), partition = hash >> (64 - log2(partitions))";

/// Longest bucket or key accepted by the encoding (the configured limits are at most this).
pub const NAME_LEN_MAX: usize = u16::MAX as usize;

/// Stable 64-bit hash of a bucket and key.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(bucket.len() as u16).to_be_bytes());
    h.update(bucket);
    h.update(key);
    h.digest()
}

/// The tag that binds causal context tokens to a key (low 32 bits of the key hash).
pub fn key_tag(bucket: &[u8], key: &[u8]) -> u32 {
    key_hash(bucket, key) as u32
}

/// The partition of `hash` among `partitions` (a power of two, at most 65,536).
pub fn partition_of(hash: u64, partitions: u32) -> u16 {
    debug_assert!(partitions.is_power_of_two() && partitions <= 1 << 16);
    let bits = partitions.trailing_zeros();
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as u16
    }
}

/// The storage key of `(bucket, key)` in `partition`: `u16 BE partition ‖ u16 BE len(bucket) ‖
/// bucket ‖ key`. Callers bound bucket length by [`NAME_LEN_MAX`].
pub fn storage_key(partition: u16, bucket: &[u8], key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + bucket.len() + key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
    out.extend_from_slice(bucket);
    out.extend_from_slice(key);
    out
}

/// Splits a storage key back into `(partition, bucket, key)`; `None` if malformed.
pub fn split_storage_key(sk: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    if sk.len() < 4 {
        return None;
    }
    let partition = u16::from_be_bytes([sk[0], sk[1]]);
    let blen = u16::from_be_bytes([sk[2], sk[3]]) as usize;
    let rest = &sk[4..];
    if rest.len() < blen {
        return None;
    }
    let (bucket, key) = rest.split_at(blen);
    Some((partition, bucket, key))
}

/// The storage key range `[start, end)` holding everything of `partition`.
pub fn partition_range(partition: u16) -> (Vec<u8>, Vec<u8>) {
    let start = partition.to_be_bytes().to_vec();
    let end = match partition.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff, 0xff, 0xff],
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_is_stable() {
        // Pinned: clients compute this too (value checked against Python's `xxhash.xxh3_64`),
        // so it must never change.
        assert_eq!(key_hash(b"carts", b"alice"), 18_247_826_736_772_091_887);
        assert_ne!(key_hash(b"carts", b"alice"), key_hash(b"cart", b"salice"));
    }

    proptest! {
        #[test]
        fn storage_key_round_trips(p in any::<u16>(), b in proptest::collection::vec(any::<u8>(), 0..40), k in proptest::collection::vec(any::<u8>(), 0..40)) {
            let sk = storage_key(p, &b, &k);
            let (p2, b2, k2) = split_storage_key(&sk).expect("well formed");
            prop_assert_eq!((p2, b2, k2), (p, &b[..], &k[..]));
            let (start, end) = partition_range(p);
            prop_assert!(sk >= start && sk < end);
        }

        #[test]
        fn partition_in_range(h in any::<u64>(), bits in 0u32..=16) {
            let n = 1u32 << bits;
            prop_assert!(u32::from(partition_of(h, n)) < n);
        }
    }
}
