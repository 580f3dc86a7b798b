//! `yeskv dt ...`: the data types (cart, counter, set) from the command line.
//!
//! A bucket holds data types once its `datatype` is set (`yeskv bucket set B --datatype cart`);
//! these commands then send operations, which the server merges with concurrent ones, and read
//! the merged value. One subcommand per operation, named for what it does:
//!
//! | command | type | operation |
//! |---|---|---|
//! | `dt get BUCKET KEY` | any | print the value |
//! | `dt add BUCKET KEY ITEM [QTY]` | cart | add QTY (default 1) of ITEM |
//! | `dt remove BUCKET KEY ITEM` | cart | remove ITEM |
//! | `dt set BUCKET KEY ITEM QTY` | cart | set ITEM's quantity (0 removes it) |
//! | `dt incr BUCKET KEY BY` | counter | add BY (negative: subtract) |
//! | `dt sadd BUCKET KEY MEMBER...` | set | add members |
//! | `dt srem BUCKET KEY MEMBER...` | set | remove members |
//!
//! Output follows `yeskv get`/`put`: an operation prints the key's new causal context on
//! stdout; `get` prints the value (a cart as `ITEM<TAB>QTY` lines, a counter as a number, a set
//! one member per line) and the context on stderr as `context: <token>`, or with `--json` the
//! server's JSON. A remove with `--context` removes only what that read saw (an add made since on
//! another device survives); without, everything the node holds of the item or members.

use std::io::Write as _;

use yeskv_client::{Client, DtOp, DtRead, DtValue, Quorum, ReadOptions, WriteOptions};

use crate::client_cmd::{connect, describe, ClientOpts};

/// `yeskv dt` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DtCommand {
    /// Print a data-type key's value (cart, counter or set).
    Get(GetArgs),
    /// Cart: add QTY (default 1) of ITEM.
    Add(CartAddArgs),
    /// Cart: remove ITEM (what --context saw of it; without, everything the node holds).
    Remove(CartRemoveArgs),
    /// Cart: set ITEM's quantity (0 removes it).
    Set(CartSetArgs),
    /// Counter: add BY (negative to subtract).
    Incr(IncrArgs),
    /// Set: add MEMBERs.
    Sadd(SetAddArgs),
    /// Set: remove MEMBERs (what --context saw of them; without, everything the node holds).
    Srem(SetRemoveArgs),
}

/// Flags of `yeskv dt get`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
OUTPUT:
  cart: one 'ITEM<TAB>QTY' line per item; counter: the value; set: one member per line.
  The causal context goes to stderr as 'context: <token>' (for 'dt remove --context').
  --json: one line {\"type\": ..., \"items\"|\"value\"|\"members\": ..., \"context\": ...}.
  Never written: 'not found' on stderr and exit status 1 (with --json, 'null' on stdout too).")]
pub struct GetArgs {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Replicas that must answer: one, quorum, all, or a number (default: the server's r).
    #[arg(long)]
    pub r: Option<Quorum>,
    /// Print the server's JSON form.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// What every operation may carry.
#[derive(clap::Args, Debug)]
pub struct WriteFlags {
    /// Replicas that must acknowledge: one, quorum, all, or a number (default: the server's w).
    #[arg(long)]
    pub w: Option<Quorum>,
    /// Expire the key this many seconds after the operation (default: the bucket's ttl_secs).
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub opts: ClientOpts,
}

/// Flags of `yeskv dt add`.
#[derive(clap::Args, Debug)]
pub struct CartAddArgs {
    /// Bucket (datatype cart).
    pub bucket: String,
    /// Key (the cart).
    pub key: String,
    /// Item.
    pub item: String,
    /// Quantity to add, at least 1.
    #[arg(default_value_t = 1)]
    pub qty: u64,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// Flags of `yeskv dt remove`.
#[derive(clap::Args, Debug)]
pub struct CartRemoveArgs {
    /// Bucket (datatype cart).
    pub bucket: String,
    /// Key (the cart).
    pub key: String,
    /// Item.
    pub item: String,
    /// Context of a 'dt get': remove only what that read saw of the item.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// Flags of `yeskv dt set`.
#[derive(clap::Args, Debug)]
pub struct CartSetArgs {
    /// Bucket (datatype cart).
    pub bucket: String,
    /// Key (the cart).
    pub key: String,
    /// Item.
    pub item: String,
    /// New quantity (0 removes the item).
    pub qty: u64,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// Flags of `yeskv dt incr`.
#[derive(clap::Args, Debug)]
pub struct IncrArgs {
    /// Bucket (datatype counter).
    pub bucket: String,
    /// Key (the counter).
    pub key: String,
    /// Amount to add (negative to subtract).
    #[arg(allow_negative_numbers = true)]
    pub by: i64,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// Flags of `yeskv dt sadd`.
#[derive(clap::Args, Debug)]
pub struct SetAddArgs {
    /// Bucket (datatype set).
    pub bucket: String,
    /// Key (the set).
    pub key: String,
    /// Members to add.
    #[arg(required = true)]
    pub members: Vec<String>,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// Flags of `yeskv dt srem`.
#[derive(clap::Args, Debug)]
pub struct SetRemoveArgs {
    /// Bucket (datatype set).
    pub bucket: String,
    /// Key (the set).
    pub key: String,
    /// Members to remove.
    #[arg(required = true)]
    pub members: Vec<String>,
    /// Context of a 'dt get': remove only what that read saw of the members.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// Runs a `yeskv dt` command.
pub async fn run(command: DtCommand) -> anyhow::Result<()> {
    let (bucket, key, op, context, write) = match command {
        DtCommand::Get(args) => return get(args).await,
        DtCommand::Add(a) => (
            a.bucket,
            a.key,
            DtOp::CartAdd {
                item: a.item,
                qty: a.qty,
            },
            None,
            a.write,
        ),
        DtCommand::Remove(a) => (
            a.bucket,
            a.key,
            DtOp::CartRemove { item: a.item },
            a.context,
            a.write,
        ),
        DtCommand::Set(a) => (
            a.bucket,
            a.key,
            DtOp::CartSet {
                item: a.item,
                qty: a.qty,
            },
            None,
            a.write,
        ),
        DtCommand::Incr(a) => (
            a.bucket,
            a.key,
            DtOp::CounterIncr { by: a.by },
            None,
            a.write,
        ),
        DtCommand::Sadd(a) => (
            a.bucket,
            a.key,
            DtOp::SetAdd { members: a.members },
            None,
            a.write,
        ),
        DtCommand::Srem(a) => (
            a.bucket,
            a.key,
            DtOp::SetRemove { members: a.members },
            a.context,
            a.write,
        ),
    };
    let client = connect(&write.opts)?;
    let options = WriteOptions {
        context,
        w: write.w,
        ttl_secs: write.ttl,
    };
    let context = client
        .dt_apply(&bucket, &key, &op, &options)
        .await
        .map_err(|error| describe(error, &write.opts))?;
    println!("{context}");
    Ok(())
}

/// `yeskv dt get`: see the module docs.
async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client: Client = connect(&args.opts)?;
    let read = client
        .dt_read(&args.bucket, &args.key, &ReadOptions { r: args.r })
        .await
        .map_err(|error| describe(error, &args.opts))?;
    let mut stdout = std::io::stdout().lock();
    let Some(read) = read else {
        if args.json {
            writeln!(stdout, "null")?;
            stdout.flush()?;
        }
        anyhow::bail!("not found");
    };
    if args.json {
        writeln!(stdout, "{}", read.to_json())?;
    } else {
        print_value(&read, &mut stdout)?;
        eprintln!("context: {}", read.context);
    }
    stdout.flush()?;
    Ok(())
}

/// Writes the value of `read` as `yeskv dt get` shows it (see the module docs).
fn print_value(read: &DtRead, out: &mut impl std::io::Write) -> std::io::Result<()> {
    match &read.value {
        DtValue::Cart(items) => {
            for (item, qty) in items {
                writeln!(out, "{item}\t{qty}")?;
            }
        }
        DtValue::Counter(value) => writeln!(out, "{value}")?,
        DtValue::Set(members) => {
            for member in members {
                writeln!(out, "{member}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        dt: DtCommand,
    }

    fn parse(args: &[&str]) -> Result<DtCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("dt").chain(args.iter().copied())).map(|cli| cli.dt)
    }

    fn printed(value: DtValue) -> String {
        let mut out = Vec::new();
        let read = DtRead {
            context: "c".into(),
            value,
        };
        print_value(&read, &mut out).expect("writing to a Vec");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn values_print_one_per_line() {
        let items = [("sku-1".to_string(), 2), ("sku-2".to_string(), 1)];
        assert_eq!(
            printed(DtValue::Cart(items.into_iter().collect())),
            "sku-1\t2\nsku-2\t1\n"
        );
        assert_eq!(printed(DtValue::Counter(-4)), "-4\n");
        assert_eq!(
            printed(DtValue::Set(vec!["a".into(), "b".into()])),
            "a\nb\n"
        );
        assert_eq!(printed(DtValue::Cart(Default::default())), "");
    }

    #[test]
    fn subcommands_parse() {
        match parse(&["add", "carts", "alice", "sku-1"]).expect("valid") {
            DtCommand::Add(a) => assert_eq!((a.item.as_str(), a.qty), ("sku-1", 1)),
            other => panic!("{other:?}"),
        }
        match parse(&["incr", "views", "p1", "-3", "--w", "all"]).expect("valid") {
            DtCommand::Incr(a) => {
                assert_eq!(a.by, -3);
                assert_eq!(a.write.w, Some(Quorum::All));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["srem", "tags", "p1", "a", "b", "--context", "ctx"]).expect("valid") {
            DtCommand::Srem(a) => {
                assert_eq!(a.members, ["a", "b"]);
                assert_eq!(a.context.as_deref(), Some("ctx"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["sadd", "tags", "p1"]).is_err(), "no member");
        assert!(
            parse(&["set", "carts", "alice", "sku-1"]).is_err(),
            "no qty"
        );
        assert!(parse(&["add", "carts", "alice", "sku", "-1"]).is_err());
    }
}
