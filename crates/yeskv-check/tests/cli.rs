//! The `yeskv-check` binary: exit 0 on a passing history, 1 on violations, 2 on bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::Builder;
use yeskv_check::history::Status::{Info, Ok as Acked};
use yeskv_check::Report;

/// Writes `text` to a file unique to this test and returns its path.
fn history_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "yeskv-check-cli-{}-{name}.json",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write a temporary history");
    path
}

fn run(name: &str, text: &str, flags: &[&str]) -> Output {
    let path = history_file(name, text);
    let output = Command::new(env!("CARGO_BIN_EXE_yeskv-check"))
        .arg(&path)
        .args(flags)
        .output()
        .expect("run yeskv-check");
    std::fs::remove_file(&path).expect("remove the temporary history");
    output
}

fn report_of(output: &Output) -> Report {
    serde_json::from_slice(&output.stdout).expect("stdout is a JSON report")
}

fn json(builder: &Builder) -> String {
    serde_json::to_string(&builder.build()).expect("a history serializes")
}

#[test]
fn a_passing_history_exits_0_with_its_report() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .write(2, Info, "k", "b", &["a"])
        .merged("k", &["b"]);
    let output = run("pass", &json(&history), &[]);
    assert_eq!(output.status.code(), Some(0));
    let report = report_of(&output);
    assert!(report.ok());
    assert_eq!((report.acked, report.indeterminate), (1, 1));
}

#[test]
fn violations_exit_1() {
    let mut history = Builder::new();
    history.write(1, Acked, "k", "a", &[]).merged("k", &[]);
    let output = run("lost", &json(&history), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report_of(&output).lost, 1);
}

#[test]
fn no_convergence_turns_divergence_into_a_warning() {
    let mut history = Builder::new();
    history
        .write(1, Acked, "k", "a", &[])
        .merged("k", &["a"])
        .final_read("n1", "k", &["a"])
        .final_read("n2", "k", &[]);
    let text = json(&history);
    assert_eq!(run("diverged", &text, &[]).status.code(), Some(1));
    let relaxed = run("diverged-relaxed", &text, &["--no-convergence"]);
    assert_eq!(relaxed.status.code(), Some(0));
    assert_eq!(report_of(&relaxed).warnings.len(), 1);
}

#[test]
fn the_convergence_bound_is_a_flag() {
    let mut history = Builder::new();
    history
        .healed_at(0)
        .digest(500, "n1", 0, "x")
        .digest(500, "n2", 0, "x");
    let text = json(&history);
    assert_eq!(
        run("bound-ok", &text, &["--convergence-bound-ms", "500"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run("bound-late", &text, &["--convergence-bound-ms", "499"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let garbage = run("garbage", "{ not json", &[]);
    assert_eq!(garbage.status.code(), Some(2));
    let stderr = String::from_utf8(garbage.stderr).expect("utf-8");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let bad_flag = run("bad-flag", "{}", &["--convergence-bound-ms", "soon"]);
    assert_eq!(bad_flag.status.code(), Some(2));

    let mut malformed = Builder::new();
    malformed.event(1, Acked, common::write_op("k", "a", &[]));
    let output = run("malformed", &json(&malformed), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(report_of(&output).errors.len(), 1);
}

#[test]
fn an_empty_history_passes() {
    assert_eq!(
        run(
            "empty",
            "{\"events\": [], \"final_reads\": [], \"digests\": []}",
            &[]
        )
        .status
        .code(),
        Some(0)
    );
}
