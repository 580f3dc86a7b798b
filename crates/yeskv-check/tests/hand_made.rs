//! Hand-made histories, one or two per rule: ones that must fail (each a planted anomaly the
//! checker has to name) and ones that must pass (legitimate Dynamo behaviour the checker must
//! not mistake for a bug).

mod common;

use common::{add_op, dt_add_op, dt_read_op, dt_remove_op, ttl_write_op, write_op, Builder};
use yeskv_check::history::Status::{Fail, Info, Ok as Acked};
use yeskv_check::{check, trace, validate, Error, Options, Report, ViolationKind};

fn judge(builder: &Builder) -> Report {
    check(&builder.build(), &Options::default())
}

fn kinds(report: &Report) -> Vec<ViolationKind> {
    report
        .violations
        .iter()
        .map(|violation| violation.kind)
        .collect()
}

fn assert_passes(report: &Report) {
    assert!(report.ok(), "expected a pass, got {report:#?}");
}

// ---- rule 1: registers ----

#[test]
fn lost_acknowledged_write_is_flagged() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Acked, "k", "b", &[])
        .merged("k", &["b"]);
    let report = judge(&history);
    assert_eq!(report.lost, 1);
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
    assert_eq!(report.violations[0].value.as_deref(), Some("a"));
    assert_eq!(report.violations[0].key.as_deref(), Some("k"));
    assert!(!report.ok());
}

#[test]
fn indeterminate_write_may_be_absent() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Info, "k", "b", &[])
        .merged("k", &["a"]);
    let report = judge(&history);
    assert_passes(&report);
    assert_eq!(
        (report.acked, report.indeterminate, report.failed),
        (1, 1, 0)
    );
}

#[test]
fn indeterminate_write_may_be_present() {
    let mut history = Builder::new();
    history.write(1, Info, "k", "a", &[]).merged("k", &["a"]);
    assert_passes(&judge(&history));
}

#[test]
fn write_covered_by_a_later_write_context_passes() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .read(2, Acked, "k", &["a"])
        .write(2, Acked, "k", "b", &["a"])
        .merged("k", &["b"]);
    assert_passes(&judge(&history));
}

#[test]
fn a_chain_of_coverings_passes() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Info, "k", "b", &["a"])
        .write(3, Acked, "k", "c", &["b"])
        .write(1, Acked, "k", "d", &["c"])
        .merged("k", &["d"]);
    assert_passes(&judge(&history));
}

#[test]
fn a_broken_chain_loses_the_write() {
    // b saw a, but b itself is neither present nor seen by anyone: b (indeterminate) may never
    // have been applied, so nothing superseded a.
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Info, "k", "b", &["a"])
        .write(3, Acked, "k", "c", &[])
        .merged("k", &["c"]);
    let report = judge(&history);
    assert_eq!(report.lost, 1);
    assert_eq!(report.violations[0].value.as_deref(), Some("a"));
}

#[test]
fn a_refused_write_does_not_cover() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Fail, "k", "b", &["a"])
        .merged("k", &[]);
    let report = judge(&history);
    assert_eq!(report.lost, 1);
    assert_eq!(report.failed, 1);
}

#[test]
fn a_delete_covers_what_it_saw() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .delete(2, Acked, "k", &["a"])
        .write(1, Acked, "j", "x", &[])
        .delete(2, Info, "j", &["x"])
        .merged("k", &[])
        .merged("j", &[]);
    let report = judge(&history);
    assert_passes(&report);
    assert_eq!(report.acked, 3);
}

#[test]
fn a_refused_delete_does_not_cover() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .delete(2, Fail, "k", &["a"])
        .merged("k", &[]);
    assert_eq!(judge(&history).lost, 1);
}

#[test]
fn a_pending_write_is_indeterminate() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .invoke(2, write_op("k", "b", &["a"]))
        .merged("k", &["b"]);
    let report = judge(&history);
    assert_passes(&report);
    assert_eq!((report.ops, report.pending), (1, 1));
}

// ---- rule 2: carts ----

#[test]
fn lost_cart_add_is_flagged() {
    let mut history = Builder::new();
    history
        .add(1, Acked, "cart", "apple")
        .add(2, Acked, "cart", "pear")
        .add(3, Info, "cart", "plum")
        .merged("cart", &["apple", ""]);
    let report = judge(&history);
    assert_eq!(report.lost, 1);
    assert_eq!(kinds(&report), vec![ViolationKind::LostCartAdd]);
    assert_eq!(report.violations[0].value.as_deref(), Some("pear"));
}

#[test]
fn cart_adds_spread_over_siblings_pass() {
    let mut history = Builder::new();
    history
        .add(1, Acked, "cart", "apple")
        .add(2, Acked, "cart", "pear")
        .add(1, Acked, "cart", "fig")
        .merged("cart", &["apple,fig", "pear"]);
    assert_passes(&judge(&history));
}

#[test]
fn a_refused_cart_add_must_stay_absent() {
    let mut history = Builder::new();
    history
        .add(1, Acked, "cart", "apple")
        .add(2, Fail, "cart", "pear")
        .merged("cart", &["apple,pear"]);
    let report = judge(&history);
    assert_eq!(kinds(&report), vec![ViolationKind::FailedWritePresent]);
    assert_eq!(report.violations[0].value.as_deref(), Some("pear"));
}

// ---- rule 2a-2c: server-side carts ----

/// One server-side cart: x and y added, y read and then removed with that read's context.
fn dt_cart(remove: yeskv_check::history::Status) -> Builder {
    let mut history = Builder::new();
    history
        .op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_add_op("d", "y"))
        .op(3, Acked, dt_read_op("d", &["x", "y"]))
        .op(3, remove, dt_remove_op("d", "y"));
    history
}

#[test]
fn a_lost_server_side_cart_add_is_flagged() {
    let mut history = Builder::new();
    history
        .op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_add_op("d", "y"))
        .op(3, Info, dt_add_op("d", "z"))
        .merged("d", &["x"]);
    let report = judge(&history);
    assert_eq!(report.lost, 1);
    assert_eq!(kinds(&report), vec![ViolationKind::LostCartAdd]);
    assert_eq!(report.violations[0].value.as_deref(), Some("y"));
}

#[test]
fn a_removed_item_may_be_absent_whatever_the_remove_ended_as() {
    for remove in [Acked, Info] {
        let mut history = dt_cart(remove);
        history.merged("d", &["x"]);
        assert_passes(&judge(&history));
    }
    // Pending: invoked, never answered.
    let mut history = Builder::new();
    history
        .op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_read_op("d", &["x"]))
        .invoke(2, dt_remove_op("d", "x"))
        .merged("d", &[]);
    assert_passes(&judge(&history));
}

#[test]
fn a_refused_remove_does_not_excuse_a_missing_item() {
    let mut history = dt_cart(Fail);
    history.merged("d", &["x"]);
    let report = judge(&history);
    assert_eq!(kinds(&report), vec![ViolationKind::LostCartAdd]);
    assert_eq!(report.violations[0].value.as_deref(), Some("y"));
}

#[test]
fn a_removed_item_back_in_the_final_state_is_flagged() {
    let mut history = dt_cart(Acked);
    history.merged("d", &["x,y"]);
    let report = judge(&history);
    assert_eq!(report.resurrected, 1);
    assert_eq!(kinds(&report), vec![ViolationKind::RemovedItemPresent]);
    assert_eq!(report.violations[0].value.as_deref(), Some("y"));
}

#[test]
fn an_indeterminate_remove_may_leave_the_item() {
    let mut history = dt_cart(Info);
    history.merged("d", &["x,y"]);
    assert_passes(&judge(&history));
}

#[test]
fn an_add_concurrent_with_a_remove_survives_it() {
    // The remove of y saw x's add; z was added concurrently and is kept (add wins).
    let mut history = Builder::new();
    history
        .op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_read_op("d", &["x"]))
        .invoke(2, dt_remove_op("d", "x"))
        .op(1, Acked, dt_add_op("d", "z"))
        .event(2, Acked, dt_remove_op("d", "x"))
        .merged("d", &["z"]);
    let report = judge(&history);
    assert_passes(&report);
    assert_eq!(
        (report.acked, report.ops),
        (3, 4),
        "reads are not acked writes"
    );
}

#[test]
fn phantom_server_side_cart_items_are_flagged() {
    let mut read = Builder::new();
    read.op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_read_op("d", &["x", "ghost"]))
        .merged("d", &["x"]);
    assert_eq!(kinds(&judge(&read)), vec![ViolationKind::UnknownValue]);

    let mut refused = Builder::new();
    refused
        .op(1, Acked, dt_add_op("d", "x"))
        .op(2, Fail, dt_add_op("d", "y"))
        .merged("d", &["x,y"]);
    let report = judge(&refused);
    assert_eq!(kinds(&report), vec![ViolationKind::FailedWritePresent]);
    assert_eq!(report.violations[0].value.as_deref(), Some("y"));

    let mut fine = Builder::new();
    fine.op(1, Acked, dt_add_op("d", "x"))
        .op(2, Info, dt_add_op("d", "y"))
        .op(3, Acked, dt_read_op("d", &["x", "y"]))
        .op(3, Acked, dt_read_op("d", &[]))
        .merged("d", &["x,y"]);
    assert_passes(&judge(&fine));
}

#[test]
fn a_server_side_cart_has_one_final_value() {
    let mut history = Builder::new();
    history
        .op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_add_op("d", "y"))
        .merged("d", &["x", "y"]);
    assert_eq!(
        kinds(&judge(&history)),
        vec![ViolationKind::TooManySiblings]
    );
    let mut one = Builder::new();
    one.op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_add_op("d", "y"))
        .merged("d", &["x,y"]);
    assert_passes(&judge(&one));
}

// ---- rule 7: expiry ----

/// A TTL'd write of `a` (1 s) acknowledged at 2 ms, then a read at `read_at_ms` returning it.
fn ttl_read(read_at_ms: u64) -> Builder {
    let mut history = Builder::new();
    history.op(1, Acked, ttl_write_op("t", "a", &[], 1_000));
    let slept = read_at_ms - history.now_ms() - 1;
    history.sleep(slept).read(2, Acked, "t", &["a"]);
    history
}

#[test]
fn a_value_read_after_it_must_have_expired_is_flagged() {
    // Acknowledged at 2 ms: visible at most until 2 + 1_000 + the 25_000 ms skew bound.
    let late = ttl_read(26_003);
    let report = judge(&late);
    assert_eq!((report.expired_visible, report.ttl_judged), (1, 1));
    assert_eq!(kinds(&report), vec![ViolationKind::ExpiredVisible]);
    assert_eq!(report.violations[0].value.as_deref(), Some("a"));
    // Within the skew bound: a reader whose clock is behind the writer's may still see it.
    assert_passes(&judge(&ttl_read(26_002)));
    // A tighter bound (the simulator knows its seed's skews) judges it earlier.
    let tight = Options {
        skew_bound_ms: 100,
        ..Options::default()
    };
    assert_eq!(check(&ttl_read(1_200).build(), &tight).expired_visible, 1);
    assert!(check(&ttl_read(1_102).build(), &tight).ok());
}

#[test]
fn an_expired_value_in_the_final_state_is_flagged() {
    let options = Options {
        skew_bound_ms: 0,
        ..Options::default()
    };
    let mut history = Builder::new();
    history
        .op(1, Acked, ttl_write_op("t", "a", &[], 1_000))
        .merged_at(1_003, "t", &["a"]);
    let report = check(&history.build(), &options);
    assert_eq!(kinds(&report), vec![ViolationKind::ExpiredVisible]);

    let mut early = Builder::new();
    early
        .op(1, Acked, ttl_write_op("t", "a", &[], 1_000))
        .merged_at(1_002, "t", &["a"]);
    let report = check(&early.build(), &options);
    assert!(report.ok());
    assert_eq!(report.ttl_judged, 0, "read before it had to expire");
    let mut gone = Builder::new();
    gone.op(1, Acked, ttl_write_op("t", "a", &[], 1_000))
        .merged_at(1_003, "t", &[]);
    let report = check(&gone.build(), &options);
    assert!(report.ok());
    assert_eq!(report.ttl_judged, 1, "judged, and gone as it should be");
    // A final read without a time is not judged for expiry.
    let mut untimed = Builder::new();
    untimed
        .op(1, Acked, ttl_write_op("t", "a", &[], 1_000))
        .merged("t", &["a"]);
    assert!(check(&untimed.build(), &options).ok());
}

#[test]
fn an_indeterminate_ttl_write_is_not_judged_for_expiry() {
    let mut history = Builder::new();
    history
        .op(1, Info, ttl_write_op("t", "a", &[], 1_000))
        .sleep(60_000)
        .read(2, Acked, "t", &["a"])
        .merged_at(70_000, "t", &["a"]);
    assert_passes(&judge(&history));
}

#[test]
fn an_expired_value_is_not_lost_and_covers_what_it_saw() {
    // b (no TTL) superseded by a's write with a TTL; a expired: both gone, rightly.
    let mut history = Builder::new();
    history
        .write(1, Acked, "t", "b", &[])
        .read(1, Acked, "t", &["b"])
        .op(1, Acked, ttl_write_op("t", "a", &["b"], 1_000))
        .merged_at(5_000, "t", &[]);
    let options = Options {
        skew_bound_ms: 0,
        ..Options::default()
    };
    assert!(check(&history.build(), &options).ok());
}

#[test]
fn a_ttl_value_gone_before_it_can_have_expired_is_lost() {
    let options = Options {
        skew_bound_ms: 100,
        ..Options::default()
    };
    let mut history = Builder::new();
    history
        .write(1, Acked, "t", "b", &[])
        .op(2, Acked, ttl_write_op("t", "a", &[], 10_000))
        .merged_at(5_000, "t", &["b"]);
    let report = check(&history.build(), &options);
    assert_eq!(report.lost, 1);
    assert_eq!(kinds(&report), vec![ViolationKind::LostWrite]);
    assert_eq!(report.violations[0].value.as_deref(), Some("a"));
    // Without a time on the final read it may have expired: not judged lost.
    let mut untimed = Builder::new();
    untimed
        .write(1, Acked, "t", "b", &[])
        .op(2, Acked, ttl_write_op("t", "a", &[], 10_000))
        .merged("t", &["b"]);
    assert!(check(&untimed.build(), &options).ok());
}

#[test]
fn histories_without_ttls_or_read_times_still_read() {
    let json = r#"{
        "events": [
            {"process": 1, "time_ms": 1, "status": "invoke",
             "op": {"type": "write", "key": "k", "value": "a", "saw": []}},
            {"process": 1, "time_ms": 2, "status": "ok",
             "op": {"type": "write", "key": "k", "value": "a", "saw": []}}
        ],
        "healed_at_ms": null,
        "final_reads": [{"key": "k", "node": "merged", "values": ["a"]}],
        "digests": []
    }"#;
    let history: yeskv_check::history::History = serde_json::from_str(json).expect("reads");
    assert!(check(&history, &Options::default()).ok());
    let written = serde_json::to_string(&history).expect("writes");
    assert!(!written.contains("ttl_ms") && !written.contains("time_ms\":null"));
}

// ---- rule 3: resurrection ----

#[test]
fn resurrected_delete_is_flagged() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .delete(2, Acked, "k", &["a"])
        .merged("k", &["a"]);
    let report = judge(&history);
    assert_eq!(report.resurrected, 1);
    assert_eq!(kinds(&report), vec![ViolationKind::Resurrected]);
}

#[test]
fn an_indeterminate_delete_may_leave_the_value() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .delete(2, Info, "k", &["a"])
        .merged("k", &["a"]);
    assert_passes(&judge(&history));
}

#[test]
fn a_retried_indeterminate_write_may_come_back_after_a_delete() {
    let mut history = Builder::new();
    history
        .write(1, Info, "k", "a", &[])
        .delete(2, Acked, "k", &["a"])
        .merged("k", &["a"]);
    assert_passes(&judge(&history));
}

#[test]
fn a_write_concurrent_with_a_delete_survives_it() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .delete(2, Acked, "k", &["a"])
        .write(3, Acked, "k", "b", &[])
        .merged("k", &["b"]);
    assert_passes(&judge(&history));
}

// ---- rule 4: convergence ----

fn diverged() -> Builder {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .merged("k", &["a"])
        .final_read("n1", "k", &["a"])
        .final_read("n2", "k", &[]);
    history
}

#[test]
fn diverged_replicas_are_flagged() {
    let report = judge(&diverged());
    assert_eq!(kinds(&report), vec![ViolationKind::Diverged]);
    assert!(report.violations[0].explanation.contains("n2"));
}

#[test]
fn convergence_off_reports_without_failing() {
    let options = Options {
        check_convergence: false,
        ..Options::default()
    };
    let report = check(&diverged().build(), &options);
    assert_passes(&report);
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.warnings[0].kind, ViolationKind::Diverged);
}

#[test]
fn replicas_that_agree_pass_and_order_does_not_matter() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Acked, "k", "b", &[])
        .final_read("n1", "k", &["a", "b"])
        .final_read("n2", "k", &["b", "a"]);
    let report = judge(&history);
    assert_passes(&report);
    assert_eq!(report.not_judgeable, 0);
}

#[test]
fn converged_ms_is_the_first_agreement_after_healing() {
    let mut history = Builder::new();
    // Samples are staggered: n2's first sample of partition 1 comes at 1_105.
    history
        .healed_at(1_000)
        .digest(1_050, "n1", 0, "x")
        .digest(1_050, "n2", 0, "y")
        .digest(1_050, "n1", 1, "p")
        .digest(1_100, "n1", 0, "x")
        .digest(1_100, "n2", 0, "x")
        .digest(1_105, "n2", 1, "p");
    let report = judge(&history);
    assert_passes(&report);
    assert_eq!(report.converged_ms, Some(105));
}

#[test]
fn replicas_that_never_agree_are_flagged() {
    let mut history = Builder::new();
    history
        .healed_at(1_000)
        .digest(1_100, "n1", 0, "x")
        .digest(1_100, "n2", 0, "y")
        .digest(1_200, "n1", 0, "x")
        .digest(1_200, "n2", 0, "z");
    let report = judge(&history);
    assert_eq!(report.converged_ms, None);
    assert_eq!(kinds(&report), vec![ViolationKind::NotConverged]);
}

#[test]
fn converging_later_than_the_bound_is_flagged() {
    let mut history = Builder::new();
    history
        .healed_at(1_000)
        .digest(1_100, "n1", 0, "x")
        .digest(1_100, "n2", 0, "y")
        .digest(9_000, "n1", 0, "x")
        .digest(9_000, "n2", 0, "x");
    let options = Options {
        convergence_bound_ms: 5_000,
        ..Options::default()
    };
    let report = check(&history.build(), &options);
    assert_eq!(report.converged_ms, Some(8_000));
    assert_eq!(kinds(&report), vec![ViolationKind::ConvergedTooLate]);
    let relaxed = Options {
        convergence_bound_ms: 8_000,
        ..Options::default()
    };
    assert_passes(&check(&history.build(), &relaxed));
}

// ---- rule 5: siblings ----

#[test]
fn concurrent_siblings_within_the_bound_pass() {
    let mut history = Builder::new();
    history
        .invoke(1, write_op("k", "a", &[]))
        .invoke(2, write_op("k", "b", &[]))
        .event(1, Acked, write_op("k", "a", &[]))
        .event(2, Acked, write_op("k", "b", &[]))
        .read(3, Acked, "k", &["a", "b"])
        .merged("k", &["a", "b"]);
    assert_passes(&judge(&history));
}

#[test]
fn too_many_siblings_are_flagged() {
    // One process wrote three values, each with the context of its previous write, yet a read
    // returns two of them as siblings: the context was ignored.
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(1, Acked, "k", "b", &["a"])
        .read(2, Acked, "k", &["a", "b"])
        .merged("k", &["b"]);
    let report = judge(&history);
    assert_eq!(report.sibling_violations, 1);
    assert_eq!(kinds(&report), vec![ViolationKind::TooManySiblings]);
    assert_eq!(report.violations[0].event_index, Some(5));
}

#[test]
fn an_indeterminate_write_allows_one_more_sibling() {
    // A timed-out write retried by the client can leave two siblings of one value.
    let mut history = Builder::new();
    history
        .write(1, Info, "k", "a", &[])
        .read(2, Acked, "k", &["a", "a"])
        .merged("k", &["a", "a"]);
    assert_passes(&judge(&history));
}

#[test]
fn a_repeated_blind_write_allows_one_more_sibling() {
    // Without a context nothing supersedes the process's earlier write.
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(1, Acked, "k", "b", &[])
        .read(1, Acked, "k", &["a", "b"])
        .merged("k", &["a", "b"]);
    assert_passes(&judge(&history));
}

#[test]
fn a_stale_cart_add_allows_one_more_sibling_and_only_when_marked() {
    // One process adds x, then y after a read that missed x (a stale read): y's write does not
    // supersede x's version, so the cart may end with both as siblings. Unmarked, the same
    // final state exceeds the bound of one writing process.
    let stale = |marked: bool| {
        let mut history = Builder::new();
        history.add(1, Acked, "c", "x");
        history.invoke(1, add_op("c", "y"));
        history.event(
            1,
            Acked,
            yeskv_check::history::Op::CartAdd {
                cart: "c".into(),
                item: "y".into(),
                stale: marked,
            },
        );
        history.merged("c", &["x", "y"]);
        judge(&history)
    };
    assert_passes(&stale(true));
    assert_eq!(stale(false).sibling_violations, 1);
}

#[test]
fn the_final_state_is_held_to_the_bound() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(1, Acked, "k", "b", &["a"])
        .merged("k", &["a", "b"]);
    assert_eq!(judge(&history).sibling_violations, 1);
}

#[test]
fn the_hard_sibling_maximum_applies() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Acked, "k", "b", &[])
        .write(3, Acked, "k", "c", &[])
        .merged("k", &["a", "b", "c"]);
    assert_passes(&judge(&history));
    let options = Options {
        siblings_max: Some(2),
        ..Options::default()
    };
    let report = check(&history.build(), &options);
    assert_eq!(report.sibling_violations, 1);
    assert!(report.violations[0].explanation.contains("hard maximum 2"));
}

// ---- rule 6: indeterminate, refused and unknown values ----

#[test]
fn a_refused_write_present_is_flagged() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Fail, "k", "b", &[])
        .merged("k", &["a", "b"]);
    let report = judge(&history);
    assert_eq!(kinds(&report), vec![ViolationKind::FailedWritePresent]);
    assert_eq!(report.violations[0].value.as_deref(), Some("b"));
}

#[test]
fn a_refused_write_seen_by_a_read_is_flagged() {
    let mut history = Builder::new();
    history
        .write(2, Fail, "k", "b", &[])
        .read(1, Acked, "k", &["b"])
        .write(1, Acked, "k", "c", &["b"])
        .merged("k", &["c"]);
    let report = judge(&history);
    assert_eq!(kinds(&report), vec![ViolationKind::FailedWritePresent]);
}

#[test]
fn a_value_nobody_wrote_is_flagged() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .merged("k", &["a", "ghost"]);
    let report = judge(&history);
    assert!(kinds(&report).contains(&ViolationKind::UnknownValue));
}

#[test]
fn counts_separate_acked_indeterminate_and_failed() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .read(1, Acked, "k", &["a"])
        .read(1, Info, "k", &[])
        .write(2, Info, "k", "b", &[])
        .write(2, Fail, "k", "c", &[])
        .add(3, Acked, "cart", "x")
        .add(3, Fail, "cart", "y")
        .delete(4, Acked, "k", &["a"])
        .merged("k", &["b"])
        .merged("cart", &["x"]);
    let report = judge(&history);
    assert_passes(&report);
    assert_eq!(report.ops, 8);
    assert_eq!(report.acked, 3);
    assert_eq!(report.indeterminate, 2);
    assert_eq!(report.failed, 2);
    assert_eq!(report.keys, 2);
}

// ---- final state resolution ----

#[test]
fn disagreeing_nodes_without_a_merged_read_are_not_judged() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .final_read("n1", "k", &[])
        .final_read("n2", "k", &["a"])
        .write(1, Acked, "j", "x", &[]);
    let options = Options {
        check_convergence: false,
        ..Options::default()
    };
    let report = check(&history.build(), &options);
    assert_passes(&report);
    assert_eq!(report.not_judgeable, 2, "k disagrees, j has no final read");
    assert_eq!(report.lost, 0);
}

#[test]
fn agreeing_nodes_without_a_merged_read_are_judged() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .final_read("n1", "k", &[])
        .final_read("n2", "k", &[]);
    let report = judge(&history);
    assert_eq!(report.not_judgeable, 0);
    assert_eq!(report.lost, 1);
}

#[test]
fn the_merged_read_wins_over_per_node_reads() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .merged("k", &["a"])
        .final_read("n1", "k", &[])
        .final_read("n2", "k", &[]);
    let report = judge(&history);
    assert_eq!(report.lost, 0);
}

// ---- malformed histories ----

#[test]
fn malformed_histories_are_errors() {
    let mut orphan = Builder::new();
    orphan.event(1, Acked, write_op("k", "a", &[]));
    assert!(matches!(
        validate(&orphan.build())[..],
        [Error::CompletionWithoutInvoke {
            index: 0,
            process: 1
        }]
    ));

    let mut overlapping = Builder::new();
    overlapping
        .invoke(1, write_op("k", "a", &[]))
        .invoke(1, write_op("k", "b", &[]));
    assert!(matches!(
        validate(&overlapping.build())[..],
        [Error::InvokeWhileOutstanding {
            index: 1,
            process: 1,
            outstanding_index: 0
        }]
    ));

    let mut mismatched = Builder::new();
    mismatched
        .invoke(1, write_op("k", "a", &[]))
        .event(1, Acked, write_op("k", "b", &[]));
    assert!(matches!(
        validate(&mismatched.build())[..],
        [Error::CompletionMismatch {
            index: 1,
            invoke_index: 0,
            ..
        }]
    ));

    let mut duplicated = Builder::new();
    duplicated
        .write(1, Acked, "k", "a", &[])
        .write(2, Acked, "k", "a", &[]);
    assert!(matches!(
        validate(&duplicated.build())[..],
        [Error::DuplicateValue {
            index: 2,
            first_index: 0,
            ..
        }]
    ));

    let mut mixed = Builder::new();
    mixed.write(1, Acked, "k", "a", &[]).add(1, Acked, "k", "x");
    assert!(matches!(
        validate(&mixed.build())[..],
        [Error::MixedKey { .. }]
    ));

    let mut mixed_dt = Builder::new();
    mixed_dt
        .write(1, Acked, "k", "a", &[])
        .op(1, Acked, dt_read_op("k", &[]));
    assert!(matches!(
        validate(&mixed_dt.build())[..],
        [Error::MixedKey { .. }]
    ));

    let mut mixed_carts = Builder::new();
    mixed_carts
        .add(1, Acked, "c", "x")
        .op(1, Acked, dt_add_op("c", "y"));
    assert!(matches!(
        validate(&mixed_carts.build())[..],
        [Error::MixedKey { .. }]
    ));

    let mut reused_item = Builder::new();
    reused_item
        .op(1, Acked, dt_add_op("d", "x"))
        .op(2, Acked, dt_add_op("d", "x"));
    assert!(matches!(
        validate(&reused_item.build())[..],
        [Error::DuplicateValue { .. }]
    ));

    let mut bad_dt_item = Builder::new();
    bad_dt_item.op(1, Acked, dt_add_op("d", "a,b"));
    assert!(matches!(
        validate(&bad_dt_item.build())[..],
        [Error::BadCartItem { .. }]
    ));

    let mut bad_item = Builder::new();
    bad_item.op(1, Acked, add_op("cart", "a,b"));
    assert!(matches!(
        validate(&bad_item.build())[..],
        [Error::BadCartItem { .. }]
    ));

    let mut two_merged = Builder::new();
    two_merged.merged("k", &["a"]).merged("k", &[]);
    assert!(matches!(
        validate(&two_merged.build())[..],
        [Error::ConflictingMergedReads { .. }]
    ));

    let report = judge(&orphan);
    assert!(!report.ok());
    assert_eq!(report.errors.len(), 1);
}

#[test]
fn a_well_formed_history_has_no_errors() {
    let mut history = Builder::new();
    history
        .invoke(1, write_op("k", "a", &[]))
        .invoke(2, write_op("k", "b", &[]))
        .event(2, Info, write_op("k", "b", &[]))
        .event(1, Acked, write_op("k", "a", &[]))
        .read(2, Acked, "k", &["a"]);
    assert!(validate(&history.build()).is_empty());
}

// ---- report and trace ----

#[test]
fn the_report_caps_its_lists_but_not_its_counts() {
    let mut history = Builder::new();
    for value in ["a", "b", "c", "d"] {
        history.write(1, Acked, "k", value, &[]);
    }
    history.merged("k", &[]);
    let options = Options {
        violations_max: 2,
        ..Options::default()
    };
    let report = check(&history.build(), &options);
    assert_eq!(report.lost, 4);
    assert_eq!(report.violations.len(), 2);
    assert_eq!(report.violations_omitted, 2);
    assert!(!report.ok());
}

#[test]
fn the_report_serializes_to_json() {
    let mut history = Builder::new();
    history.write(1, Acked, "k", "a", &[]).merged("k", &[]);
    let report = judge(&history);
    let json = serde_json::to_value(&report).expect("a report serializes");
    assert_eq!(json["lost"], 1);
    assert_eq!(json["violations"][0]["kind"], "lost_write");
    assert_eq!(json["violations"][0]["value"], "a");
    let back: Report = serde_json::from_value(json).expect("and reads back");
    assert_eq!(back, report);
}

#[test]
fn trace_keeps_the_write_and_the_last_events_on_the_key() {
    let mut history = Builder::new();
    history.write(1, Acked, "k", "a", &[]);
    for i in 0..10 {
        history.write(2, Acked, "other", &format!("o{i}"), &[]);
        history.read(3, Acked, "k", &[]);
    }
    history.merged("k", &[]);
    let built = history.build();
    let report = check(&built, &Options::default());
    let lost = report
        .violations
        .iter()
        .find(|violation| violation.kind == ViolationKind::LostWrite)
        .expect("a is lost");
    let events = trace(&built, lost, 5);
    assert_eq!(events.len(), 5);
    assert!(events.iter().all(|event| event.op.key() == "k"));
    assert_eq!(
        events[0], built.events[0],
        "the write's invocation comes first"
    );
    assert_eq!(events[1], built.events[1], "then its completion");
    assert_eq!(events[4], *built.events.last().expect("non-empty"));
    assert!(events
        .windows(2)
        .all(|pair| pair[0].time_ms < pair[1].time_ms));
}
