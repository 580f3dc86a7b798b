//! The replica-history generator the property tests share: client writes at random replicas of
//! one key, each with the context of a read at a random replica (or none), interleaved with
//! syncs between replicas.

use proptest::prelude::*;
use yeskv_core::{Actor, NodeId, Object, Version};

/// Replica `i`'s actor.
pub fn actor(i: u8) -> Actor {
    Actor::new(
        NodeId::new(format!("n{i}")).expect("valid"),
        u64::from(i) * 1000 + 1,
    )
}

/// One step of a history.
#[derive(Clone, Debug)]
pub enum Step {
    /// Write at replica `at`, with the context of a read at replica `read_from` (or none); a
    /// tombstone if `tomb`, else a value that expires if `ttl`.
    Write {
        at: u8,
        read_from: Option<u8>,
        tomb: bool,
        ttl: bool,
    },
    /// Replica `to` merges replica `from`.
    Sync { from: u8, to: u8 },
}

/// A step; writes carry an expiry time only if `ttl`.
pub fn step(ttl: bool) -> impl Strategy<Value = Step> {
    let expires = if ttl {
        any::<bool>().boxed()
    } else {
        Just(false).boxed()
    };
    prop_oneof![
        (0u8..3, proptest::option::of(0u8..3), any::<bool>(), expires).prop_map(
            |(at, read_from, tomb, ttl)| Step::Write {
                at,
                read_from,
                tomb,
                ttl
            }
        ),
        (0u8..3, 0u8..3).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// Plays `steps` on three replicas; returns their objects.
pub fn run(steps: &[Step]) -> Vec<Object> {
    let mut replicas = vec![Object::new(); 3];
    for (i, s) in steps.iter().enumerate() {
        match *s {
            Step::Write {
                at,
                read_from,
                tomb,
                ttl,
            } => {
                let ctx = read_from
                    .map(|r| replicas[r as usize].context())
                    .unwrap_or_default();
                let version = if tomb {
                    Version::tombstone(i as u64)
                } else {
                    let expires = ttl.then_some(1_000 + i as u64);
                    Version::value(vec![i as u8], i as u64, expires)
                };
                replicas[at as usize].update(&ctx, &actor(at), version, 0);
            }
            Step::Sync { from, to } => {
                let src = replicas[from as usize].clone();
                replicas[to as usize].sync(&src);
            }
        }
    }
    replicas
}

/// The three replicas' objects after a random history of up to 30 steps.
pub fn objects(ttl: bool) -> impl Strategy<Value = Vec<Object>> {
    proptest::collection::vec(step(ttl), 0..30).prop_map(|s| run(&s))
}

/// `a` merged with `b`.
pub fn synced(a: &Object, b: &Object) -> Object {
    let mut x = a.clone();
    x.sync(b);
    x
}
