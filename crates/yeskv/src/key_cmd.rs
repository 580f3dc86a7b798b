//! `yeskv key ...` (API keys, through `/v1/admin/keys` with an admin `--key`) and
//! `yeskv keyring ...` (the cluster keyring file; local, no node involved).

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{json, Value};
use yeskv_core::keyring::{Keyring, KEY_BYTES};

use crate::cluster_cmd::NodeArg;

/// `yeskv key` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a key; prints it once (only its hash is kept).
    Create(CreateArgs),
    /// List the keys: names and permissions.
    List(NodeArg),
    /// Revoke a key on every node.
    Revoke(RevokeArgs),
}

/// Flags of `yeskv key create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The key's name: letters, digits, '.', '_', '-'.
    name: String,
    /// A permission, BUCKET=read|write|readwrite; repeatable.
    #[arg(long = "bucket", value_name = "BUCKET=ACCESS", value_parser = parse_grant)]
    buckets: Vec<(String, String)>,
    /// An admin key: every bucket and every operator endpoint.
    #[arg(long)]
    admin: bool,
    #[command(flatten)]
    node: NodeArg,
}

/// Flags of `yeskv key revoke`.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The key's name.
    name: String,
    #[command(flatten)]
    node: NodeArg,
}

/// `BUCKET=ACCESS`.
fn parse_grant(text: &str) -> Result<(String, String), String> {
    let (bucket, access) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not BUCKET=read|write|readwrite"))?;
    if yeskv_layout::Access::parse(access).is_none() {
        return Err(format!(
            "{access:?} is not an access: read, write or readwrite"
        ));
    }
    if bucket.is_empty() {
        return Err("the bucket name is empty".into());
    }
    Ok((bucket.to_string(), access.to_string()))
}

/// Runs a `yeskv key` command.
pub async fn run(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create(a) => {
            let buckets: serde_json::Map<String, Value> = a
                .buckets
                .iter()
                .map(|(b, access)| (b.clone(), Value::from(access.as_str())))
                .collect();
            let body = json!({ "name": a.name, "buckets": buckets, "admin": a.admin });
            let created =
                crate::cluster_cmd::call(a.node.url(), "POST", "/v1/admin/keys", Some(body))
                    .await?;
            let key = created["key"]
                .as_str()
                .context("the node's answer carries no key")?;
            eprintln!(
                "created key {:?}; it is shown only now: keep it (e.g. in YESKV_KEY)",
                a.name
            );
            println!("{key}");
            Ok(())
        }
        KeyCommand::List(node) => {
            let listed =
                crate::cluster_cmd::call(node.url(), "GET", "/v1/admin/keys", None).await?;
            let keys = listed["keys"].as_array().cloned().unwrap_or_default();
            if keys.is_empty() {
                println!("no keys");
            }
            for key in keys {
                let mut grants: Vec<String> = key["buckets"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(b, a)| format!("{b}={}", a.as_str().unwrap_or("?")))
                            .collect()
                    })
                    .unwrap_or_default();
                if key["admin"].as_bool() == Some(true) {
                    grants.insert(0, "admin".into());
                }
                println!(
                    "{:<24} {}",
                    key["name"].as_str().unwrap_or("?"),
                    grants.join(" ")
                );
            }
            Ok(())
        }
        KeyCommand::Revoke(a) => {
            let path = format!("/v1/admin/keys/{}", a.name);
            crate::cluster_cmd::call(a.node.url(), "DELETE", &path, None).await?;
            println!("revoked {:?}", a.name);
            Ok(())
        }
    }
}

/// `yeskv keyring` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum KeyringCommand {
    /// Write a new keyring of one random key to a new file (mode 0600).
    New {
        /// The file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a new random key at the top of FILE: it signs and encrypts from now on, the old
    /// keys are still accepted. Roll the file out to every node; drop the old key (delete its
    /// line) once every node has the new one.
    Rotate {
        /// The keyring file.
        file: PathBuf,
    },
}

fn random_key() -> anyhow::Result<[u8; KEY_BYTES]> {
    use rand::TryRngCore as _;
    let mut key = [0u8; KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    Ok(key)
}

/// Writes a new keyring of one random key to a new file at `out` (mode 0600).
pub(crate) fn new_keyring(out: &std::path::Path) -> anyhow::Result<()> {
    let ring = Keyring::new(vec![random_key()?]).map_err(anyhow::Error::msg)?;
    write_private(out, &ring.render(), true)
}

/// Runs a `yeskv keyring` command.
pub fn keyring(cmd: KeyringCommand) -> anyhow::Result<()> {
    match cmd {
        KeyringCommand::New { out } => {
            new_keyring(&out)?;
            println!("wrote a new cluster keyring to {}", out.display());
            Ok(())
        }
        KeyringCommand::Rotate { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let ring =
                Keyring::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let rotated = ring
                .with_primary(random_key()?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            write_private(&file, &rotated.render(), false)?;
            println!(
                "{}: new primary key added ({} keys); drop the old ones once every node has it",
                file.display(),
                rotated.keys().len()
            );
            Ok(())
        }
    }
}

/// Writes `text` to `path` with mode 0600: a new file (`create_new`), or replacing one
/// through a temporary file renamed over it.
fn write_private(path: &std::path::Path, text: &str, create_new: bool) -> anyhow::Result<()> {
    if create_new {
        return crate::cert_cmd::write_file(path, text, true);
    }
    let temporary = path.with_extension("tmp");
    // A temporary file left by an interrupted rotation.
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", temporary.display()))
        }
        _ => {}
    }
    crate::cert_cmd::write_file(&temporary, text, true)?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}
