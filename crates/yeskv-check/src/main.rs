//! `yeskv-check HISTORY.json [--convergence-bound-ms N] [--no-convergence] [--siblings-max N]
//! [--skew-bound-ms N]`
//!
//! Reads a history (JSON, `-` for stdin), prints the [`yeskv_check::Report`] as JSON on stdout
//! and exits 0 when the history passes, 1 on any violation, 2 on bad input (unreadable file,
//! bad JSON, bad arguments, or a malformed history) with a one-line error on stderr. The only
//! I/O of the crate lives here.

use std::io::Read;
use std::process::ExitCode;

use yeskv_check::history::History;
use yeskv_check::{check, Options};

const USAGE: &str = "usage: yeskv-check HISTORY.json [--convergence-bound-ms N] \
                     [--no-convergence] [--siblings-max N] [--skew-bound-ms N]";

/// The parsed command line.
struct Arguments {
    path: String,
    options: Options,
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not a non-negative integer"))
}

fn parse_arguments(arguments: impl IntoIterator<Item = String>) -> Result<Arguments, String> {
    let mut path = None;
    let mut options = Options::default();
    let mut arguments = arguments.into_iter();
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--convergence-bound-ms" => {
                options.convergence_bound_ms = parse_number(&argument, arguments.next())?;
            }
            "--siblings-max" => {
                options.siblings_max = Some(parse_number(&argument, arguments.next())?);
            }
            "--skew-bound-ms" => {
                options.skew_bound_ms = parse_number(&argument, arguments.next())?;
            }
            "--no-convergence" => options.check_convergence = false,
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}; {USAGE}")),
            _ if path.is_some() => return Err(format!("more than one history given; {USAGE}")),
            _ => path = Some(argument),
        }
    }
    let path = path.ok_or_else(|| USAGE.to_string())?;
    Ok(Arguments { path, options })
}

fn read_history(path: &str) -> Result<History, String> {
    let mut text = String::new();
    if path == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| format!("reading stdin: {error}"))?;
    } else {
        text = std::fs::read_to_string(path).map_err(|error| format!("reading {path}: {error}"))?;
    }
    serde_json::from_str(&text).map_err(|error| format!("{path}: not a history: {error}"))
}

fn main() -> ExitCode {
    let arguments = match parse_arguments(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(message) => {
            eprintln!("yeskv-check: {message}");
            return ExitCode::from(2);
        }
    };
    let history = match read_history(&arguments.path) {
        Ok(history) => history,
        Err(message) => {
            eprintln!("yeskv-check: {message}");
            return ExitCode::from(2);
        }
    };
    let report = check(&history, &arguments.options);
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(error) => {
            eprintln!("yeskv-check: cannot print the report: {error}");
            return ExitCode::from(2);
        }
    }
    if let Some(first) = report.errors.first() {
        eprintln!(
            "yeskv-check: malformed history ({} problems), first: {first}",
            report.errors.len()
        );
        return ExitCode::from(2);
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "yeskv-check: {} violations (lost {}, resurrected {}, expired visible {}, sibling \
             bound {})",
            report.violations.len() + report.violations_omitted,
            report.lost,
            report.resurrected,
            report.expired_visible,
            report.sibling_violations
        );
        ExitCode::from(1)
    }
}
