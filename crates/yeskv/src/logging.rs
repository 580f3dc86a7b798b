//! The server's log output: one line per event, on stderr.
//!
//! Libraries log errors with their `Debug` form, which for an `anyhow` error is its cause chain
//! on several lines and, whenever `RUST_BACKTRACE` is set, a backtrace of ~150 lines (chitchat
//! logs every failed gossip send that way, several a second during a partition). Here every
//! event is folded onto one line (its lines joined by ` | `), and library backtraces are
//! captured only when the log filter asks for debug output; panics keep theirs.

use std::io::{self, Write};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::EnvFilter;

/// Sets up `tracing` with `filter` (`RUST_LOG` wins when set).
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let debug = filter
        .max_level_hint()
        .is_none_or(|level| level >= LevelFilter::DEBUG);
    if !debug && std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Read by `std::backtrace` (and so by anyhow) when an error is made; set before any
        // thread starts.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| OneLine)
        .with_ansi(false)
        .try_init();
}

/// Writes each event to stderr on one line.
struct OneLine;

impl Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().lock().write_all(&fold(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `event` with its lines joined by ` | ` (blank ones dropped, indentation trimmed) and one
/// newline at the end.
fn fold(event: &[u8]) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    if !body.contains(&b'\n') {
        return event.to_vec();
    }
    let mut out = Vec::with_capacity(event.len() + 16);
    for line in body.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b" | ");
        }
        out.extend_from_slice(line);
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn an_event_of_several_lines_becomes_one() {
        let event = b"WARN chitchat: failed to gossip error=failed to send\n\nCaused by:\n    Operation not permitted (os error 1)\n";
        assert_eq!(
            fold(event),
            b"WARN chitchat: failed to gossip error=failed to send | Caused by: | Operation not permitted (os error 1)\n".to_vec()
        );
    }

    #[test]
    fn a_one_line_event_is_untouched() {
        assert_eq!(fold(b"INFO serving\n"), b"INFO serving\n".to_vec());
        assert_eq!(fold(b"no newline"), b"no newline".to_vec());
    }
}
