//! `yeskv cert`: the cluster's certificates (`docs/security.md`).
//!
//! - `init --dir D` makes the cluster CA: `D/ca.pem` (give it to every node, `--tls-ca`, and
//!   every client, `--ca`) and `D/ca.key` (mode 0600; keep it off the nodes).
//! - `issue --ca-dir D --node-id ID [--host H]... --out O` issues node `ID`'s certificate:
//!   `O/node.pem` and `O/node.key` (0600), with a copy of `ca.pem` beside them.
//!
//! Existing files are never overwritten (a second `init` would orphan every certificate issued).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// `yeskv cert` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Create the cluster CA: DIR/ca.pem and DIR/ca.key.
    Init {
        /// Directory to write the CA into (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node certificate signed by the cluster CA: OUT/node.pem, OUT/node.key, OUT/ca.pem.
    Issue {
        /// Directory of the CA (`yeskv cert init --dir`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The node id the certificate names (the node's `--node-id`).
        #[arg(long)]
        node_id: String,
        /// A host name or IP address clients reach the node at; repeatable (localhost and
        /// 127.0.0.1 are always included).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Directory to write the certificate and key into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs one `yeskv cert` command.
pub fn run(command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Init { dir } => {
            let (cert, key) = init(&dir)?;
            println!(
                "cluster CA written: {} and {} (keep the key secret)",
                cert.display(),
                key.display()
            );
            Ok(())
        }
        CertCommand::Issue {
            ca_dir,
            node_id,
            hosts,
            out,
        } => {
            let (cert, key) = issue(&ca_dir, &node_id, &hosts, &out)?;
            println!(
                "certificate for node {node_id} written: {} and {}",
                cert.display(),
                key.display()
            );
            Ok(())
        }
    }
}

/// Creates the cluster CA in `dir`; returns the paths of `ca.pem` and `ca.key`.
pub(crate) fn init(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca = yeskv_tls::new_ca()?;
    create_dir(dir)?;
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    refuse_existing(&[&cert, &key])?;
    write_file(&key, &ca.key, true)?;
    write_file(&cert, &ca.cert, false)?;
    Ok((cert, key))
}

/// Issues node `node_id`'s certificate with the CA in `ca_dir` into `out` (with a copy of the
/// CA certificate), and checks that it loads as the node will load it; returns the paths of
/// `node.pem` and `node.key`.
pub(crate) fn issue(
    ca_dir: &Path,
    node_id: &str,
    hosts: &[String],
    out: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca_cert = ca_dir.join("ca.pem");
    let ca_key_path = ca_dir.join("ca.key");
    let ca_key = std::fs::read_to_string(&ca_key_path)
        .with_context(|| format!("cannot read the CA key {}", ca_key_path.display()))?;
    let ca_pem = std::fs::read_to_string(&ca_cert)
        .with_context(|| format!("cannot read the CA certificate {}", ca_cert.display()))?;
    let node = yeskv_tls::issue_node(&ca_key, node_id, hosts)?;
    create_dir(out)?;
    let (cert, key, ca_copy) = (
        out.join("node.pem"),
        out.join("node.key"),
        out.join("ca.pem"),
    );
    refuse_existing(&[&cert, &key])?;
    write_file(&key, &node.key, true)?;
    write_file(&cert, &node.cert, false)?;
    // The CA beside the node's files, unless `out` is the CA's directory.
    if !ca_copy.exists() {
        write_file(&ca_copy, &ca_pem, false)?;
    }
    // The certificate must load as the node will load it: chain, key, node id.
    yeskv_tls::TlsMaterial::load(
        &yeskv_tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca_cert,
        },
        node_id,
    )
    .context("the issued certificate does not check out against the CA")?;
    Ok((cert, key))
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    if let Some(existing) = paths.iter().find(|path| path.exists()) {
        anyhow::bail!("{} exists; refusing to overwrite it", existing.display());
    }
    Ok(())
}

/// Writes `text` to a new file; a secret one with mode 0600 (`yeskv_node::server::write_new_file`).
pub(crate) fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    yeskv_node::server::write_new_file(path, text, secret).map_err(anyhow::Error::msg)
}
