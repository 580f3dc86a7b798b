//! `yeskv bucket ...`: a bucket's properties, cluster-wide. `set` changes the named ones
//! (`PUT /v1/buckets/{bucket}`; the others keep their values) and prints the result, `get`
//! prints every property (`GET /v1/buckets/{bucket}`) as JSON.

/// How long a `set` may take: the asked node may first ask every member whether the bucket
/// holds data (30 s each at most, all at once), then wait for the layout leader (10 s).
const SET_TIMEOUT_SECS: u64 = 60;

/// `yeskv bucket` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum BucketCommand {
    /// Change a bucket's properties (the ones not given keep their values), cluster-wide.
    Set(SetArgs),
    /// Print a bucket's properties as JSON.
    Get(GetArgs),
}

/// The node to ask.
#[derive(clap::Args, Debug)]
pub struct NodeArg {
    /// URL of the node to ask (any node of the cluster).
    #[arg(long, default_value = "http://127.0.0.1:8081", env = "YESKV_NODE")]
    node: String,
}

/// Flags of `yeskv bucket set`.
#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The bucket.
    bucket: String,
    /// Server-side data type; `none` for opaque values. Refused once the bucket holds data.
    #[arg(long, value_parser = ["cart", "counter", "set", "none"])]
    datatype: Option<String>,
    /// How a plain bucket resolves concurrent writes.
    #[arg(long, value_parser = ["siblings", "lww"])]
    conflict: Option<String>,
    /// Expiry of every write, in seconds after it; `none` for no expiry.
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<Ttl>,
    /// Each read or write of a key extends its expiry by the TTL (needs --ttl).
    #[arg(long, value_parser = clap::value_parser!(bool))]
    sliding: Option<bool>,
    /// Sub-keys a counter or set key's writes are spread over (1: not salted).
    #[arg(long)]
    salt: Option<u8>,
    #[command(flatten)]
    node: NodeArg,
}

/// Flags of `yeskv bucket get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The bucket.
    bucket: String,
    #[command(flatten)]
    node: NodeArg,
}

/// A `--ttl` value.
#[derive(Clone, Copy, Debug)]
pub enum Ttl {
    /// `none`.
    None,
    /// Seconds.
    Secs(u64),
}

fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text == "none" {
        return Ok(Ttl::None);
    }
    text.parse::<u64>()
        .map(Ttl::Secs)
        .map_err(|_| format!("{text:?} is neither a number of seconds nor \"none\""))
}

/// The `PUT` body of `set`: only the fields given.
fn set_body(args: &SetArgs) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut body = serde_json::Map::new();
    if let Some(d) = &args.datatype {
        let value = if d == "none" {
            Value::Null
        } else {
            Value::from(d.as_str())
        };
        body.insert("datatype".into(), value);
    }
    if let Some(c) = &args.conflict {
        body.insert("conflict".into(), Value::from(c.as_str()));
    }
    if let Some(t) = args.ttl {
        let value = match t {
            Ttl::None => Value::Null,
            Ttl::Secs(s) => Value::from(s),
        };
        body.insert("ttl_secs".into(), value);
    }
    if let Some(s) = args.sliding {
        body.insert("ttl_sliding".into(), Value::from(s));
    }
    if let Some(s) = args.salt {
        body.insert("salt".into(), Value::from(s));
    }
    body
}

/// Runs a `yeskv bucket` command.
pub async fn run(cmd: BucketCommand) -> anyhow::Result<()> {
    match cmd {
        BucketCommand::Set(a) => {
            let body = set_body(&a);
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to set: give at least one of --datatype, --conflict, --ttl, \
                     --sliding, --salt"
                );
            }
            let path = bucket_path(&a.bucket);
            crate::cluster_cmd::call_within(
                &a.node.node,
                "PUT",
                &path,
                Some(serde_json::Value::Object(body)),
                std::time::Duration::from_secs(SET_TIMEOUT_SECS),
            )
            .await?;
            print_props(&a.node.node, &path).await
        }
        BucketCommand::Get(a) => print_props(&a.node.node, &bucket_path(&a.bucket)).await,
    }
}

fn bucket_path(bucket: &str) -> String {
    format!(
        "/v1/buckets/{}",
        yeskv_client::encode_segment(bucket.as_bytes())
    )
}

async fn print_props(node: &str, path: &str) -> anyhow::Result<()> {
    let props = crate::cluster_cmd::call(node, "GET", path, None).await?;
    println!("{props}");
    Ok(())
}
