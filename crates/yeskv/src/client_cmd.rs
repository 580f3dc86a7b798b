//! The command-line client: `yeskv get`, `yeskv put`, `yeskv delete` and `yeskv touch`.
//!
//! Thin wrappers over [`yeskv_client::Client`], shaped for shells and scripts:
//! - `get` prints a single value raw on stdout (byte for byte, so `yeskv get b k > file` copies
//!   it exactly) and the causal context on stderr as `context: <token>`. Concurrent versions
//!   (siblings) are printed one after another, each under a `sibling I of N:` label, tombstones
//!   as `(deleted)`. `--json` prints the server's JSON form instead, for scripts.
//! - `put` prints the new causal context on stdout, so `ctx=$(yeskv put b k v)` captures it, and
//!   `--context` sends one back: `yeskv put --context "$ctx" b k v2` replaces `v`.
//! - `delete` deletes what a read saw: with `--context` exactly that, otherwise it reads first.
//! - `touch` extends a key's expiry (`--ttl`, or the bucket's `ttl_secs`) without rewriting it.
//!
//! A key with no live value is an error (`not found`, exit status 1), like a missing file.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use yeskv_client::{Client, Quorum, Read, ReadOptions, WriteOptions};

/// How to reach the node (shared by `get`, `put` and `delete`).
#[derive(clap::Args, Debug)]
pub struct ClientOpts {
    /// URL of the node to send the request to.
    #[arg(long, default_value = "http://127.0.0.1:8081", env = "YESKV_NODE")]
    pub node: String,
    /// Give up on the request after this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,
}

/// Flags of `yeskv get`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
OUTPUT:
  One version: the value, raw, on stdout (a newline is added only when stdout is a terminal).
  Siblings (concurrent versions): each under a 'sibling I of N:' line, tombstones as '(deleted)'.
  The causal context goes to stderr as 'context: <token>'; pass it to 'put --context' to
  replace what was read.
  --json: one line {\"context\": \"<token>\", \"siblings\": [{\"value\": \"<base64>\" or null,
  \"deleted\": bool}, ...]} on stdout.
  Not found: 'not found' on stderr and exit status 1 (with --json, 'null' on stdout too).")]
pub struct GetArgs {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Replicas that must answer: one, quorum, all, or a number (default: the server's r).
    #[arg(long)]
    pub r: Option<Quorum>,
    /// Print the read as JSON (context and base64 siblings); 'null' when not found.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// Flags of `yeskv put`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
Prints the causal context of the new version on stdout:
  ctx=$(yeskv put users ada v1)
  yeskv put --context \"$ctx\" users ada v2    # replaces v1
Without --context a write supersedes nothing: it becomes a sibling of every existing version.
To update a key: 'yeskv get' it, take the 'context:' line from stderr, and 'put --context'.")]
pub struct PutArgs {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The value; '-' reads it from stdin (bytes, unchanged).
    pub value: String,
    /// Replicas that must acknowledge: one, quorum, all, or a number (default: the server's w).
    #[arg(long)]
    pub w: Option<Quorum>,
    /// Causal context of a previous get or put of this key: the write replaces what it saw.
    #[arg(long)]
    pub context: Option<String>,
    /// Expire the value this many seconds after the write.
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// Flags of `yeskv delete`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
A delete writes a tombstone that supersedes exactly the versions a read saw. With --context it
deletes what that read saw; without, it reads the key first and deletes every version found (a
write racing with it survives as a sibling). A key with no live value is 'not found' (exit 1).")]
pub struct DeleteArgs {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Replicas that must acknowledge: one, quorum, all, or a number (default: the server's w).
    #[arg(long)]
    pub w: Option<Quorum>,
    /// Causal context of a previous get of this key (default: read the key first).
    #[arg(long)]
    pub context: Option<String>,
    /// Replicas that must answer the read done without --context (default: the server's r).
    #[arg(long)]
    pub r: Option<Quorum>,
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// Flags of `yeskv touch`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
Extends the key's expiry to --ttl seconds from now (default: the bucket's ttl_secs; a bucket
without one needs --ttl), without rewriting its value: a session kept alive. A key with no live
value (never written, deleted, or already expired) is 'not found' (exit 1).")]
pub struct TouchArgs {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// New expiry, in seconds from now (default: the bucket's ttl_secs).
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// `yeskv get`: see the module docs.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = connect(&args.opts)?;
    let read = client
        .read(&args.bucket, &args.key, &ReadOptions { r: args.r })
        .await
        .map_err(|error| describe(error, &args.opts))?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        if read.siblings.is_empty() {
            writeln!(stdout, "null")?;
        } else {
            writeln!(stdout, "{}", read.to_json())?;
        }
        stdout.flush()?;
    }
    if !read.is_found() {
        anyhow::bail!("not found");
    }
    if args.json {
        return Ok(());
    }
    print_read(&read, &mut stdout, std::io::stdout().is_terminal())?;
    stdout.flush()?;
    eprintln!("context: {}", read.context);
    Ok(())
}

/// Writes the versions of `read` as `yeskv get` shows them: one live version raw; otherwise
/// every sibling under a `sibling I of N:` label, each followed by a newline unless it ends with
/// one, tombstones as `(deleted)`. `terminal`: end a lone value with a newline for the prompt.
fn print_read(read: &Read, out: &mut impl std::io::Write, terminal: bool) -> std::io::Result<()> {
    if let Some(value) = read.value() {
        out.write_all(value)?;
        if terminal && !value.ends_with(b"\n") {
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    let count = read.siblings.len();
    for (index, sibling) in read.siblings.iter().enumerate() {
        writeln!(out, "sibling {} of {count}:", index + 1)?;
        match &sibling.value {
            Some(value) => {
                out.write_all(value)?;
                if !value.ends_with(b"\n") {
                    out.write_all(b"\n")?;
                }
            }
            None => writeln!(out, "(deleted)")?,
        }
    }
    Ok(())
}

/// `yeskv put`: see the module docs.
pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let value = if args.value == "-" {
        let mut buffer = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buffer)
            .context("reading the value from stdin")?;
        Bytes::from(buffer)
    } else {
        Bytes::from(args.value.into_bytes())
    };
    let client = connect(&args.opts)?;
    let options = WriteOptions {
        context: args.context,
        w: args.w,
        ttl_secs: args.ttl,
    };
    let context = client
        .put(&args.bucket, &args.key, value, &options)
        .await
        .map_err(|error| describe(error, &args.opts))?;
    println!("{context}");
    Ok(())
}

/// `yeskv delete`: see the module docs.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = connect(&args.opts)?;
    let options = WriteOptions {
        context: args.context,
        w: args.w,
        ttl_secs: None,
    };
    if options.context.is_some() {
        client
            .delete(&args.bucket, &args.key, &options)
            .await
            .map_err(|error| describe(error, &args.opts))?;
        return Ok(());
    }
    let deleted = client
        .delete_latest(
            &args.bucket,
            &args.key,
            &ReadOptions { r: args.r },
            &options,
        )
        .await
        .map_err(|error| describe(error, &args.opts))?;
    if !deleted {
        anyhow::bail!("not found");
    }
    Ok(())
}

/// `yeskv touch`: see the module docs.
pub async fn touch(args: TouchArgs) -> anyhow::Result<()> {
    let client = connect(&args.opts)?;
    let touched = client
        .touch(&args.bucket, &args.key, args.ttl)
        .await
        .map_err(|error| describe(error, &args.opts))?;
    if !touched {
        anyhow::bail!("not found");
    }
    Ok(())
}

/// A client for `--node`, with `--timeout`. The CLI talks to one node, so it does not retry.
pub(crate) fn connect(opts: &ClientOpts) -> anyhow::Result<Client> {
    let timeout = Duration::try_from_secs_f64(opts.timeout)
        .ok()
        .filter(|timeout| !timeout.is_zero())
        .with_context(|| {
            format!(
                "--timeout must be a positive number of seconds, got {}",
                opts.timeout
            )
        })?;
    let mut builder = crate::client_builder()
        .node(opts.node.clone())
        .timeout(timeout)
        .connect_timeout(timeout)
        .retries(0);
    if let Some(key) = crate::api_key() {
        builder = builder.api_key(key);
    }
    Ok(builder.build()?)
}

/// One clear line for a client error, naming the node where the error itself does not.
pub(crate) fn describe(error: yeskv_client::Error, opts: &ClientOpts) -> anyhow::Error {
    match error {
        yeskv_client::Error::Timeout => {
            anyhow::anyhow!("{} did not answer within {} s", opts.node, opts.timeout)
        }
        yeskv_client::Error::InvalidResponse(_) => {
            anyhow::Error::new(error).context(format!("talking to {}", opts.node))
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yeskv_client::Sibling;

    fn printed(read: &Read, terminal: bool) -> String {
        let mut out = Vec::new();
        print_read(read, &mut out, terminal).expect("writing to a Vec");
        String::from_utf8(out).expect("utf-8 in tests")
    }

    fn value(text: &'static str) -> Sibling {
        Sibling {
            value: Some(Bytes::from_static(text.as_bytes())),
        }
    }

    #[test]
    fn one_version_is_printed_raw() {
        let read = Read {
            context: "c".into(),
            siblings: vec![value("hello")],
        };
        assert_eq!(printed(&read, false), "hello");
        assert_eq!(printed(&read, true), "hello\n");
    }

    #[test]
    fn siblings_are_labelled() {
        let read = Read {
            context: "c".into(),
            siblings: vec![value("a"), Sibling { value: None }, value("b\n")],
        };
        assert_eq!(
            printed(&read, false),
            "sibling 1 of 3:\na\nsibling 2 of 3:\n(deleted)\nsibling 3 of 3:\nb\n"
        );
    }

    #[test]
    fn timeout_must_be_positive() {
        let opts = |timeout| ClientOpts {
            node: "http://127.0.0.1:1".into(),
            timeout,
        };
        assert!(connect(&opts(0.0)).is_err());
        assert!(connect(&opts(-1.0)).is_err());
        assert!(connect(&opts(f64::NAN)).is_err());
        assert!(connect(&opts(0.5)).is_ok());
        assert!(connect(&ClientOpts {
            node: "nonsense".into(),
            timeout: 1.0
        })
        .is_err());
    }
}
