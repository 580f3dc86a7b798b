//! Property tests of the expiry rule: which objects are *expiring* (every sibling a value with an
//! expiry), that the fast record scan a compaction filter uses agrees with a full decode, that
//! anti-entropy trees leave expiring objects out, and that merging an expired expiring object
//! into anything shows a reader nothing new (so dropping such a record on one replica and not
//! on another changes no read).

use proptest::prelude::*;
use yeskv_core::codec::{decode_record, encode_record, record_expires_at_ms};
use yeskv_core::tictac::{object_digest, tree_digest};
use yeskv_core::Object;

mod support;

use support::{objects, synced};

/// The definition, written out: the latest expiry if there is a sibling and every sibling is a
/// value that expires.
fn expected_expiry(o: &Object) -> Option<u64> {
    let s = o.siblings();
    if s.is_empty()
        || s.iter()
            .any(|s| s.version.is_tombstone() || s.version.expires_at_ms.is_none())
    {
        return None;
    }
    s.iter().filter_map(|s| s.version.expires_at_ms).max()
}

/// The values a reader at `now_ms` sees, with their dots.
fn visible(o: &Object, now_ms: u64) -> Vec<(yeskv_core::Dot, Vec<u8>)> {
    o.visible(now_ms)
        .filter_map(|s| Some((s.dot.clone(), s.version.value.clone()?)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn expiring_is_every_sibling_an_expiring_value(r in objects(true)) {
        for o in &r {
            prop_assert_eq!(o.expires_at_ms(), expected_expiry(o));
        }
    }

    #[test]
    fn the_record_scan_agrees_with_a_full_decode(r in objects(true), reap in proptest::option::of(1u64..u64::MAX)) {
        for o in &r {
            let rec = encode_record(o, reap);
            let decoded = decode_record(&rec).expect("round trip");
            prop_assert_eq!(record_expires_at_ms(&rec), decoded.expires_at_ms());
        }
    }

    #[test]
    fn the_record_scan_never_panics_on_damaged_bytes(r in objects(true), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        for o in &r {
            let mut rec = encode_record(o, None);
            let i = at.index(rec.len());
            rec[i] ^= 1 << bit;
            let _ = record_expires_at_ms(&rec);
            for len in [0, rec.len() / 2, rec.len().saturating_sub(1)] {
                let _ = record_expires_at_ms(&rec[..len]);
            }
        }
    }

    #[test]
    fn trees_leave_out_exactly_the_expiring_and_empty_objects(r in objects(true)) {
        for o in &r {
            let want = (!o.is_empty() && expected_expiry(o).is_none())
                .then(|| object_digest(b"k", o));
            prop_assert_eq!(tree_digest(b"k", o), want);
        }
    }

    /// Two expiring objects merge into an expiring one that expires no later than the later of
    /// them: a merge never makes expired data live again, nor keeps it past its time.
    #[test]
    fn merging_expiring_objects_stays_expiring(r in objects(true)) {
        for (a, b) in [(&r[0], &r[1]), (&r[1], &r[2]), (&r[0], &r[2])] {
            if let (Some(x), Some(y)) = (a.expires_at_ms(), b.expires_at_ms()) {
                let m = synced(a, b);
                let e = m.expires_at_ms();
                prop_assert!(e.is_some(), "{:?}", m);
                prop_assert!(e <= Some(x.max(y)));
            }
        }
    }

    /// What a replica that still holds an expired expiring record adds, by any merge, to what a
    /// reader sees is nothing: so whether a replica dropped it (the compaction filter) or not,
    /// reads are the same.
    #[test]
    fn an_expired_expiring_object_adds_nothing_visible(r in objects(true), later in 0u64..100) {
        for (i, e) in r.iter().enumerate() {
            let Some(exp) = e.expires_at_ms() else { continue };
            let now = exp + later;
            for (j, o) in r.iter().enumerate() {
                if i == j {
                    continue;
                }
                let merged = synced(o, e);
                for v in visible(&merged, now) {
                    prop_assert!(visible(o, now).contains(&v), "{:?} came from the expired object", v);
                }
            }
        }
    }
}
