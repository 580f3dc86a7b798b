//! The simulator's acceptance tests: a bounded run passes with convergence enforced (handoff,
//! anti-entropy and the reaper running in every node), a third of its seeds with regions,
//! server-side carts and TTL'd writes judged, a seed replays identically, the planted bugs are
//! caught, and without the nodes' repair the convergence rule fails. Regression seeds found before regions existed run without regions
//! (`--regions 0`), as they were found.

use yeskv_check::history::{Op, Status};
use yeskv_check::ViolationKind;
use yeskv_sim::regions::WAN_BASE_MS_MIN;
use yeskv_sim::workload::WriteOutcomes;
use yeskv_sim::{run_seed, Bug, SimOptions};

/// The options of a seed found before regions existed: no regions, whatever the seed.
fn without_regions() -> SimOptions {
    SimOptions {
        regions: Some(0),
        ..SimOptions::default()
    }
}

/// Seeds of the bounded run (the issue asks for at least 50).
const BOUNDED_SEEDS: u64 = 50;
/// Seeds of the bounded run that fail on a known, not yet fixed product bug (each has its own
/// ignored regression test below); they are skipped here and the run takes one more seed each.
const KNOWN_BUG_SEEDS: [u64; 0] = [];

#[test]
fn a_bounded_run_passes() {
    let options = SimOptions::default();
    assert!(
        options.require_convergence,
        "convergence is enforced by default"
    );
    let (mut ops, mut acked, mut reaped, mut seeds_reaping) = (0, 0, 0, 0);
    let mut membership: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut partitions_received = 0;
    let (mut region_seeds, mut region_faults) = (0, std::collections::BTreeMap::new());
    let mut region_writes: std::collections::BTreeMap<&'static str, WriteOutcomes> =
        Default::default();
    let (mut dt_adds, mut dt_removes, mut ttl_writes, mut ttl_judged) = (0, 0, 0, 0);
    let seeds = (1..).filter(|s| !KNOWN_BUG_SEEDS.contains(s));
    for seed in seeds.take(BOUNDED_SEEDS as usize) {
        let o = run_seed(&options, seed).expect("the seed runs to its end");
        assert!(
            o.ok(),
            "seed {seed} failed: {:?}\nreplay: cargo run --release -p yeskv-sim -- --seed {seed} -vv",
            o.report.violations
        );
        assert!(o.report.errors.is_empty(), "seed {seed}: malformed history");
        // Every replica was sampled and agreed within the bound (checked by `ok()`); the
        // figure exists, so the rule judged tree roots, not an empty sample set.
        assert!(
            o.report.converged_ms.is_some(),
            "seed {seed}: no convergence time (no tree-root samples?)"
        );
        assert!(
            !o.history.digests.is_empty(),
            "seed {seed}: no digest samples"
        );
        assert_eq!(
            o.hints_left, 0,
            "seed {seed}: hints still pending at the end"
        );
        assert_eq!(
            o.transitions_left, 0,
            "seed {seed}: partitions still moving at the end"
        );
        for kind in [
            "join",
            "join-skipped",
            "leave",
            "leave-skipped",
            "leave-completed",
            "replace",
            "replace-skipped",
        ] {
            *membership.entry(kind).or_default() += o.faults.get(kind).copied().unwrap_or(0);
        }
        if o.regions > 0 {
            region_seeds += 1;
            for kind in ["region-cut", "slow-wan"] {
                *region_faults.entry(kind).or_insert(0) += o.faults.get(kind).copied().unwrap_or(0);
            }
            for (quorum, counts) in &o.writes_by_quorum {
                region_writes.entry(quorum).or_default().add(counts);
            }
        }
        partitions_received += o.partitions_received;
        ops += o.report.ops;
        acked += o.report.acked;
        reaped += o.reaped;
        seeds_reaping += u64::from(o.reaped > 0);
        ttl_judged += o.report.ttl_judged;
        for event in o.history.events.iter().filter(|e| e.status == Status::Ok) {
            match &event.op {
                Op::DtCartAdd { .. } => dt_adds += 1,
                Op::DtCartRemove { .. } => dt_removes += 1,
                Op::Write {
                    ttl_ms: Some(_), ..
                } => ttl_writes += 1,
                _ => {}
            }
        }
    }
    // Server-side carts were added to and removed from, and the writes with a TTL were all
    // read after they had to be gone (the settle phase outlasts them), by the final reads at
    // least: the expiry rule judged every one.
    assert!(
        dt_adds > 1_000 && dt_removes > 300,
        "{dt_adds} adds, {dt_removes} removes"
    );
    assert!(ttl_writes > 500, "{ttl_writes} writes with a TTL");
    assert_eq!(
        ttl_judged, ttl_writes,
        "every TTL'd write judged for expiry"
    );
    // Deletes are reaped during the settle phase in a good share of seeds, and the resurrection
    // checker (part of `ok()`) still passed on all of them.
    assert!(
        seeds_reaping >= 5,
        "tombstones reaped in only {seeds_reaping} of {BOUNDED_SEEDS} seeds ({reaped} copies)"
    );
    // The run did real work: thousands of operations, most writes acknowledged.
    assert!(
        ops > 5_000,
        "only {ops} operations in {BOUNDED_SEEDS} seeds"
    );
    assert!(acked > 1_000, "only {acked} acknowledged writes");
    // Membership changed during the run: nodes joined, left (and were stopped once out of the
    // layout) and were replaced, and their partitions were received.
    let committed = |kind: &str| membership[kind] - membership[&*format!("{kind}-skipped")];
    assert!(committed("join") >= 5, "joins: {membership:?}");
    assert!(committed("leave") >= 5, "leaves: {membership:?}");
    assert!(committed("replace") >= 5, "replaces: {membership:?}");
    assert_eq!(
        membership["leave-completed"],
        committed("leave"),
        "every node that left gracefully left the layout: {membership:?}"
    );
    assert!(
        partitions_received > 100,
        "{partitions_received} partitions received"
    );
    // Every third seed has three regions: region cuts and slow WANs happened, writes with the
    // default (`local_quorum`) were acknowledged at LAN speed while `quorum` writes waited for
    // another region across the WAN, and `each_quorum` and `quorum` writes failed during cuts
    // (indeterminate, never acknowledged) — and the checkers still found nothing lost.
    assert_eq!(region_seeds, BOUNDED_SEEDS / 3, "seeds 3, 6, ..., 48");
    assert!(region_faults["region-cut"] >= 5, "{region_faults:?}");
    assert!(region_faults["slow-wan"] >= 5, "{region_faults:?}");
    let local = &region_writes["local_quorum (default)"];
    let (quorum, each) = (&region_writes["quorum"], &region_writes["each_quorum"]);
    assert!(local.acked > 1_000, "{region_writes:?}");
    assert!(each.acked > 0 && quorum.acked > 0, "{region_writes:?}");
    assert!(
        each.indeterminate > 0 && quorum.indeterminate > 0,
        "no each_quorum or quorum write failed during a region cut: {region_writes:?}"
    );
    let median = |w: &WriteOutcomes| w.acked_ms_quantile(0.5).expect("acknowledged writes");
    assert!(
        median(local) < WAN_BASE_MS_MIN,
        "local_quorum writes crossed the WAN: median {} ms",
        median(local)
    );
    assert!(
        median(quorum) >= 2 * WAN_BASE_MS_MIN,
        "quorum writes did not wait for another region: median {} ms",
        median(quorum)
    );
}

#[test]
fn a_seed_replays_identically() {
    let options = SimOptions::default();
    let a = run_seed(&options, 7).expect("run");
    let b = run_seed(&options, 7).expect("run");
    assert_eq!(a.hash, b.hash, "seed 7 gave two different traces");
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.history, b.history);
    let c = run_seed(&options, 8).expect("run");
    assert_ne!(a.hash, c.hash, "two seeds gave the same trace");
}

/// A seed with regions (WAN latencies, region faults, regional quorums) replays as exactly.
/// Seed 9 has no membership change: a seed whose former holders clean up a partition may not
/// replay (the compaction after the cleanup runs on a real thread, `docs/reliability.md`).
#[test]
fn a_seed_with_regions_replays_identically() {
    let options = SimOptions::default();
    let a = run_seed(&options, 9).expect("run");
    assert_eq!(a.regions, 3, "seed 9 draws regions");
    assert!(
        a.faults.contains_key("region-cut"),
        "seed 9 cuts a region off"
    );
    let b = run_seed(&options, 9).expect("run");
    assert_eq!(a.hash, b.hash, "seed 9 gave two different traces");
    assert_eq!(a.history, b.history);
    // Regions change the run: seed 9 without them is another cluster.
    let c = run_seed(&without_regions(), 9).expect("run");
    assert_eq!(c.regions, 0);
    assert_ne!(a.hash, c.hash);
}

/// Found by the first run with regions (seed 56 with `--regions 3`): r1 (n1, n2) was cut from
/// the other regions; writes through it were acknowledged by its two replicas alone
/// (`local_quorum`); n2 then left gracefully — r1 had two owners for two replicas, so its
/// replicas shrank to one, nothing moved, and n2 was stopped for good at once — and n1 was
/// replaced (crashed for good) 98 ms later, before cross-region repair had copied those writes
/// out of r1: six acknowledged writes lost with both disks that held them, two permanent losses
/// before repair as in seed 739. The simulator now skips a replace of a holder of a partition
/// whose region shrank while that partition's data holders disagree.
#[test]
fn regression_no_replace_of_a_regions_last_copy_before_the_others_have_it() {
    let options = SimOptions {
        regions: Some(3),
        ..SimOptions::default()
    };
    let o = run_seed(&options, 56).expect("run");
    assert_eq!(
        o.faults.get("replace-skipped"),
        Some(&1),
        "the replace is skipped"
    );
    assert_eq!(o.faults.get("leave"), Some(&1));
    assert!(o.ok(), "seed 56: {:?}", o.report.violations);
    assert_eq!(o.report.lost, 0);
}

#[test]
fn region_options_out_of_range_are_refused() {
    for regions in [1, 5] {
        let options = SimOptions {
            regions: Some(regions),
            ..SimOptions::default()
        };
        assert!(options.validate().is_err(), "--regions {regions}");
    }
    for region_nodes in [1, 4] {
        let options = SimOptions {
            region_nodes: Some(region_nodes),
            ..SimOptions::default()
        };
        assert!(options.validate().is_err(), "--region-nodes {region_nodes}");
    }
    let default = SimOptions::default();
    assert_eq!(
        (1..=9).map(|s| default.regions_of(s)).collect::<Vec<_>>(),
        [0, 0, 3, 0, 0, 3, 0, 0, 3]
    );
    assert_eq!(without_regions().regions_of(3), 0);
}

/// Each seed's hash printed by `yeskv-sim --hash`.
fn hashes(args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yeskv-sim"))
        .args(args)
        .arg("--hash")
        .output()
        .expect("yeskv-sim runs");
    assert!(out.status.success(), "yeskv-sim {args:?} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" hash "))
        .map(str::to_owned)
        .collect()
}

/// Seeds with a clean restart while several of the node's tasks wait for its stop signal: a
/// `tokio::sync::watch` channel woke them in a random order, and these seeds ran two ways
/// (about one run in three differed), until the signal woke its waiters in a fixed order.
/// Each runs in four processes of its own, which must all print the same hash.
#[test]
fn a_clean_restart_replays_identically() {
    for seed in ["10", "19", "56"] {
        let runs: Vec<Vec<String>> = (0..4).map(|_| hashes(&["--seed", seed])).collect();
        assert!(
            runs.iter().all(|r| r == &runs[0]),
            "seed {seed} ran differently: {runs:?}"
        );
    }
}

/// A failing seed found in a long run is replayed alone: its trace must not depend on the
/// seeds that ran before it in the same process, nor on the process.
#[test]
fn a_seed_replays_alone_as_it_ran_in_a_sequence() {
    let sequence = hashes(&["--seeds", "3", "--from", "5"]);
    assert_eq!(sequence.len(), 3, "{sequence:?}");
    for (i, seed) in (5..8).enumerate() {
        let alone = hashes(&["--seed", &seed.to_string()]);
        assert_eq!(alone, vec![sequence[i].clone()], "seed {seed}");
    }
}

#[test]
fn lose_ack_is_caught_within_ten_seeds() {
    let options = SimOptions {
        bug: Some(Bug::LoseAck),
        ..SimOptions::default()
    };
    let caught: Vec<u64> = (1..=10)
        .filter(|&seed| {
            let o = run_seed(&options, seed).expect("run");
            assert!(o.lost_by_bug > 0, "seed {seed}: the bug never fired");
            !o.ok()
        })
        .collect();
    assert!(
        !caught.is_empty(),
        "the checkers missed acknowledged writes dropped by n1 in 10 seeds"
    );
}

/// The checkers see through regions: with three regions on every seed, the planted bug (`n1`,
/// a replica of r1, acknowledges writes and drops them) loses acknowledged writes the checkers
/// report within the first five seeds.
#[test]
fn lose_ack_is_caught_with_regions() {
    let options = SimOptions {
        bug: Some(Bug::LoseAck),
        regions: Some(3),
        ..SimOptions::default()
    };
    let lost: usize = (1..=5)
        .map(|seed| {
            let o = run_seed(&options, seed).expect("run");
            assert_eq!(o.regions, 3);
            assert!(o.lost_by_bug > 0, "seed {seed}: the bug never fired");
            o.report.lost
        })
        .sum();
    assert!(
        lost > 0,
        "no acknowledged write dropped by n1 was found lost in seeds 1-5 with regions"
    );
}

/// The expiry rule has teeth: when `n1`'s API drops the TTL of the writes it takes, their
/// values outlive their expiry and the final reads show them, within the first five seeds.
#[test]
fn ignored_ttls_are_caught() {
    let options = SimOptions {
        bug: Some(Bug::IgnoreTtl),
        ..SimOptions::default()
    };
    let expired: usize = (1..=5)
        .map(|seed| {
            run_seed(&options, seed)
                .expect("run")
                .report
                .expired_visible
        })
        .sum();
    assert!(expired > 0, "no value outlived its TTL in seeds 1-5");
}

/// Removed items staying removed has teeth: when `n1`'s API acknowledges server-side cart
/// removes without applying them, the removed items are still in the final state.
#[test]
fn skipped_removes_are_caught() {
    let options = SimOptions {
        bug: Some(Bug::SkipRemove),
        ..SimOptions::default()
    };
    let o = run_seed(&options, 1).expect("run");
    assert!(
        o.report
            .violations
            .iter()
            .any(|v| v.kind == ViolationKind::RemovedItemPresent),
        "{:?}",
        o.report.violations
    );
}

/// Seeds that found a real bug: a write forwarded by a node that is not a replica timed out at
/// the first replica (which had applied it) and was retried on the next, so one client write
/// became two versions; a delete carrying the context of a read of one left the other, and the
/// deleted value came back. Since the fix such a write is indeterminate (`503`). (Seed 155
/// stopped reaching the case when the workload gained server-side carts and TTL keys; 157, one
/// of many seeds that reach it since, took its place.)
#[test]
fn regression_forwarded_write_retried_on_another_replica() {
    let options = without_regions();
    for seed in [125, 128, 157] {
        let o = run_seed(&options, seed).expect("run");
        assert!(o.ok(), "seed {seed}: {:?}", o.report.violations);
        // The seed still reaches the case: a forward that failed in transport.
        assert!(
            o.history.events.iter().any(|e| e
                .error
                .as_deref()
                .is_some_and(|e| e.contains("may have been applied there"))),
            "seed {seed} no longer exercises an ambiguous forward"
        );
    }
}

/// The convergence rule has teeth: with the nodes' background repair off (no handoff, no
/// anti-entropy, no reaper), replicas that missed writes during faults stay behind, and some of
/// the first seeds fail on convergence (some also lose writes that only stand-ins held).
#[test]
fn without_repair_the_convergence_rule_fails() {
    let options = SimOptions {
        repair: false,
        ..SimOptions::default()
    };
    let not_converged = (1..=5)
        .filter(|&seed| {
            let o = run_seed(&options, seed).expect("run");
            o.report.violations.iter().any(|v| {
                matches!(
                    v.kind,
                    ViolationKind::Diverged
                        | ViolationKind::NotConverged
                        | ViolationKind::ConvergedTooLate
                )
            })
        })
        .count();
    assert!(
        not_converged > 0,
        "no seed of 1..=5 failed the convergence rule without repair"
    );
}

/// Seed 43 (7 nodes) lost an acknowledged blind write, found once hinted handoff ran in the
/// simulator. The cause (fixed: `Replica::stand_in_actor`): a node that is no primary of a
/// key and cannot reach any coordinates the write as a stand-in in its hint slot for the first
/// primary, and mints the dot from that slot's object. After an earlier stand-in write of the
/// same key was handed off (the hint removed), the slot is empty, so a blind write gets the
/// same dot `(n4, 1)` as the earlier one; the primaries' clock already covers that dot (a later
/// write saw the earlier value), so the next write with such a context drops the new value.
/// Each stand-in write now gets an actor of its own.
#[test]
fn regression_stand_in_dot_reuse_after_handoff() {
    let o = run_seed(&without_regions(), 43).expect("run");
    assert!(o.ok(), "seed 43: {:?}", o.report.violations);
}

/// Seed 1269: a value whose tombstone was reaped came back. The reaper checked that every
/// primary held the identical tombstone and that the grace had passed, trusting that no hint
/// could be older than the grace; but a stand-in had taken the old value into a hint *after*
/// the tombstone was written, so the hint's age said nothing about the value's, and handoff
/// brought it back once the tombstone was gone. The reaper now also asks every other member
/// for hints of the key and waits while any is held (or any member is down).
#[test]
fn regression_reaped_tombstone_and_a_late_hint() {
    let o = run_seed(&without_regions(), 1269).expect("run");
    assert!(o.ok(), "seed 1269: {:?}", o.report.violations);
    assert_eq!(o.report.resurrected, 0);
}

/// Four acknowledged writes lost in a 900 s chaos run, in the simulator: a long split
/// (`faults::long_split`) keeps two nodes away from every primary of some keys for seconds, so
/// writes through them live only as hints on those two nodes, later writes merged into the same
/// hints. The old code dropped a hint once its *first* write was older than the hint age limit
/// (3 s here, 5 s in chaos), taking the later writes along: seeds 1, 16 and 43 lost 3, 1 and 7
/// acknowledged writes (18 of seeds 1-400 failed). Hints now live until delivered.
#[test]
fn regression_hints_outlive_a_long_split() {
    for seed in [1, 16, 43] {
        let o = run_seed(&without_regions(), seed).expect("run");
        assert_eq!(
            o.faults.get("partition-long-split"),
            Some(&1),
            "seed {seed} has its long split"
        );
        assert!(o.ok(), "seed {seed}: {:?}", o.report.violations);
        assert_eq!(o.report.lost, 0, "seed {seed}");
    }
}

/// Seed 739 of the first long run with membership changes lost an acknowledged cart add: it was
/// on two replicas only (the third cut off by a one-way partition), and the seed replaced both
/// within 36 ms, the second before the first one's replacement had received anything. Two
/// permanent disk losses among the replicas of a partition before repair are beyond what a
/// `w = 2` write survives, so the simulator no longer destroys a second holder of a partition
/// that is not rebuilt yet: the second replace is skipped.
#[test]
fn regression_no_second_permanent_loss_before_the_first_is_rebuilt() {
    let o = run_seed(&without_regions(), 739).expect("run");
    assert_eq!(
        o.faults.get("replace"),
        Some(&2),
        "seed 739 draws two replaces"
    );
    assert_eq!(
        o.faults.get("replace-skipped"),
        Some(&1),
        "the second is skipped"
    );
    assert!(o.ok(), "seed 739: {:?}", o.report.violations);
}

/// Found by the layout faults: a node that starts receiving a partition clears what it holds
/// of it (`Replica::clear_partition`) but keeps its actor. It used to coordinate writes of the
/// partition from the commit on (in the write set, first in the forward order as a target
/// replica); after the clear its next write to such a key minted a higher dot of the same actor
/// over a copy that no longer held the earlier ones, and the version vector entry covered them:
/// merged into the data holders, it superseded acknowledged writes nobody saw. Seed 134:
/// `r1 = v1.65` (dot `n7:3`, coordinated by the syncing n7 at 3412 ms, acknowledged) was dropped
/// at 3877 ms by a blind write that n7 coordinated at 3875 ms with clock `{n7:4}`, 5 ms after its
/// transfer worker cleared partition 58; 12 of seeds 1-1000 failed this way. Now only a holder
/// of the key's data coordinates with its own actor (`coordinator/write.rs`).
#[test]
fn regression_cleared_partition_forgets_its_own_dots() {
    for seed in [134, 150, 221, 357, 504, 508, 526, 532, 792, 816, 929, 935] {
        let o = run_seed(&without_regions(), seed).expect("run");
        assert!(o.ok(), "seed {seed}: {:?}", o.report.violations);
    }
}

/// Seed 20111 (no regions): an acknowledged delete came back. The client read `r1 = v3.58`
/// from n2 (split from the other replicas, the only one holding it) and deleted through n4,
/// whose copy was behind. n4 clamped the context to its copy's clock before applying it, so
/// the tombstone's clock lacked v3.58's dot (`n2:83`, the tombstone said `n2:69`); once the
/// split healed, v3.58 met the tombstone as a concurrent sibling and was back in every read.
/// The coordinator now applies the (signed, key-bound) context whole (`Replica::coordinate`).
#[test]
fn regression_delete_through_a_replica_behind_the_read() {
    let o = run_seed(&SimOptions::default(), 20111).expect("run");
    assert!(o.ok(), "seed 20111: {:?}", o.report.violations);
    assert_eq!(o.report.resurrected, 0);
}
