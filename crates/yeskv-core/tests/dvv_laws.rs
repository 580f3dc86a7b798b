//! Property tests of the dotted version vector laws that the "no acknowledged write is lost"
//! promise rests on: `sync` is a join (commutative, associative, idempotent); a write with a
//! read's context replaces exactly what that read returned; a write without context removes
//! nothing; concurrent writes are both kept; and the context token round-trips while garbage is an
//! error, never a panic.

use proptest::prelude::*;
use yeskv_core::codec::{decode_record, decode_token, encode_record, encode_token, record_len};
use yeskv_core::keyring::{Keyring, Purpose, Subkeys};

fn keys() -> Subkeys {
    Keyring::unkeyed("laws").derive(Purpose::Contexts)
}
use yeskv_core::{CausalContext, Version};

mod support;

use support::{actor, objects, run, step, synced, Step};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sync_is_commutative(r in objects(false)) {
        prop_assert_eq!(synced(&r[0], &r[1]), synced(&r[1], &r[0]));
    }

    #[test]
    fn sync_is_associative(r in objects(false)) {
        let left = synced(&synced(&r[0], &r[1]), &r[2]);
        let right = synced(&r[0], &synced(&r[1], &r[2]));
        prop_assert_eq!(left, right);
    }

    #[test]
    fn sync_is_idempotent(r in objects(false)) {
        prop_assert_eq!(synced(&r[0], &r[0]), r[0].clone());
        let ab = synced(&r[0], &r[1]);
        prop_assert_eq!(synced(&ab, &r[1]), ab.clone());
    }

    #[test]
    fn context_write_replaces_exactly_what_was_read(r in objects(false), at in 0u8..3) {
        let read = &r[0];
        let ctx = read.context();
        let mut target = r[at as usize].clone();
        let before = target.clone();
        let dot = target.update(&ctx, &actor(at), Version::value(b"new".to_vec(), 0, None), 0);
        // Every sibling the read returned is gone; every other sibling of the target remains.
        for s in before.siblings() {
            let was_read = read.siblings().iter().any(|x| x.dot == s.dot) || ctx.covers(&s.dot);
            let kept = target.siblings().iter().any(|x| x.dot == s.dot);
            prop_assert_eq!(kept, !was_read, "sibling {:?}", s.dot);
        }
        prop_assert!(target.siblings().iter().any(|x| x.dot == dot));
        prop_assert_eq!(target.siblings().len(), before.siblings().iter().filter(|s| !ctx.covers(&s.dot)).count() + 1);
    }

    /// A write supersedes, on every replica, everything its context covers — also when the
    /// coordinating replica is behind the read the context came from (seed 20111: a delete
    /// coordinated by a replica that lacked the value the client had read elsewhere left that
    /// value a sibling of its tombstone, and it came back). The context is applied whole: the
    /// new object's clock covers the read, so a sync with any replica, the one read or any
    /// other, drops what the read saw and keeps the new version.
    #[test]
    fn a_write_supersedes_what_its_context_covers_on_every_replica(r in objects(false), at in 0u8..3, from in 0u8..3, tombstone: bool) {
        let read = &r[from as usize];
        let ctx = read.context();
        let mut target = r[at as usize].clone();
        let version = if tombstone {
            Version::tombstone(0)
        } else {
            Version::value(b"w".to_vec(), 0, None)
        };
        let dot = target.update(&ctx, &actor(at), version, 0);
        prop_assert!(target.clock().descends(&ctx.seen));
        for other in &r {
            let merged = synced(other, &target);
            prop_assert!(merged.siblings().iter().any(|s| s.dot == dot));
            for s in merged.siblings() {
                prop_assert!(!ctx.covers(&s.dot), "sibling {:?} of the read survived", s.dot);
            }
        }
    }

    #[test]
    fn write_without_context_removes_nothing(r in objects(false), at in 0u8..3) {
        let mut target = r[at as usize].clone();
        let before = target.siblings().to_vec();
        target.update(&CausalContext::empty(), &actor(at), Version::value(b"x".to_vec(), 0, None), 0);
        for s in &before {
            prop_assert!(target.siblings().contains(s));
        }
        prop_assert_eq!(target.siblings().len(), before.len() + 1);
    }

    #[test]
    fn concurrent_writes_are_both_kept(r in objects(false), a in 0u8..3, b in 0u8..3) {
        prop_assume!(a != b);
        // Two clients read the same state, then write at different replicas.
        let base = synced(&r[a as usize], &r[b as usize]);
        let ctx = base.context();
        let mut ra = base.clone();
        let mut rb = base.clone();
        let da = ra.update(&ctx, &actor(a), Version::value(b"A".to_vec(), 0, None), 0);
        let db = rb.update(&ctx, &actor(b), Version::value(b"B".to_vec(), 0, None), 0);
        let m = synced(&ra, &rb);
        prop_assert!(m.siblings().iter().any(|s| s.dot == da));
        prop_assert!(m.siblings().iter().any(|s| s.dot == db));
    }

    #[test]
    fn no_write_is_lost_without_a_covering_context(steps in proptest::collection::vec(step(false), 0..30)) {
        // Every write's dot is, after a full sync, either a sibling or covered by the context of a
        // later write that superseded it (i.e. it is in the merged clock and some write read it).
        let r = run(&steps);
        let all = synced(&synced(&r[0], &r[1]), &r[2]);
        for s in r.iter().flat_map(|o| o.siblings()) {
            prop_assert!(all.clock().contains(&s.dot));
        }
        // Siblings of the merge never exceed the number of writes.
        let writes = steps.iter().filter(|s| matches!(s, Step::Write { .. })).count();
        prop_assert!(all.siblings().len() <= writes);
    }

    #[test]
    fn record_round_trips(r in objects(false), reap in proptest::option::of(1u64..u64::MAX)) {
        for o in &r {
            let rec = encode_record(o, reap);
            prop_assert_eq!(&decode_record(&rec).expect("round trip"), o);
            prop_assert_eq!(record_len(o), rec.len());
        }
    }

    #[test]
    fn token_round_trips(r in objects(false), tag in any::<u32>()) {
        let ctx = r[1].context();
        let t = encode_token(&ctx, tag, &keys());
        prop_assert_eq!(decode_token(&t, tag, &keys()).expect("round trip"), ctx);
    }

    /// Changing any byte of a token (to any other value) makes it invalid: a client cannot
    /// edit the clock it was given.
    #[test]
    fn tampered_tokens_are_refused(
        r in objects(false),
        tag in any::<u32>(),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let t = encode_token(&r[1].context(), tag, &keys());
        let mut raw = engine.decode(&t).expect("base64");
        let i = at.index(raw.len());
        raw[i] ^= flip;
        prop_assert!(decode_token(&engine.encode(&raw), tag, &keys()).is_err());
    }

    #[test]
    fn garbage_tokens_are_errors(s in ".{0,200}", tag in any::<u32>()) {
        let _ = decode_token(&s, tag, &keys()); // must not panic
    }

    #[test]
    fn garbage_bytes_tokens_are_errors(b in proptest::collection::vec(any::<u8>(), 0..200), tag in any::<u32>()) {
        use base64::Engine as _;
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b);
        prop_assert!(decode_token(&t, tag, &keys()).is_err());
    }

    #[test]
    fn garbage_records_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_record(&b);
    }
}
