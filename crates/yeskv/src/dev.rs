//! `yeskv dev`: a local cluster of real `yeskv server` processes on 127.0.0.1.
//!
//! Each node is a child process of this command with its own data directory
//! (`DATA_DIR/nN`), HTTP port `BASE_PORT + i` and peer port `BASE_PORT - 1000 + i`. Their logs are
//! streamed here prefixed by node id. The command prints each node's URL and one `ready` line once
//! every node answers `/v1/health`, and stops them all (SIGTERM, which flushes storage) on Ctrl-C
//! or SIGTERM. Running it again on the same data directory brings back the same nodes and data.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Flags of `yeskv dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Number of nodes. Until clustering lands (issue 4) a dev cluster is a single node.
    #[arg(long, default_value_t = 1)]
    nodes: u16,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "./yeskv-data")]
    data_dir: PathBuf,
    /// HTTP port of the first node; peer ports start 1000 lower.
    #[arg(long, default_value_t = 8081)]
    base_port: u16,
    /// Durability mode passed to every node (always, group, none).
    #[arg(long)]
    sync: Option<String>,
}

/// How long a node may take to answer its health check after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

struct Node {
    id: String,
    url: String,
    child: Child,
}

async fn healthy(addr: &str) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    else {
        return false;
    };
    let req = format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut buf)).await;
    read.is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn stream_logs<R: tokio::io::AsyncRead + Unpin + Send + 'static>(id: String, r: R) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{id}] {line}");
        }
    });
}

fn terminate(nodes: &[Node]) {
    for n in nodes {
        if let Some(pid) = n.child.id() {
            #[allow(unsafe_code)]
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
}

/// Runs the dev cluster until Ctrl-C / SIGTERM or until a node exits.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes != 1 {
        bail!(
            "--nodes {}: multi-node dev clusters need clustering (issue 4); use --nodes 1 for now",
            args.nodes
        );
    }
    if args.base_port < 1024 + args.nodes || args.base_port.checked_add(args.nodes).is_none() {
        bail!(
            "--base-port {} leaves no room for peer ports 1000 lower",
            args.base_port
        );
    }
    let exe = std::env::current_exe().context("locating the yeskv binary")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let id = format!("n{}", i + 1);
        let http = format!("127.0.0.1:{}", args.base_port + i);
        let peer = format!("127.0.0.1:{}", args.base_port - 1000 + i);
        let mut cmd = Command::new(&exe);
        cmd.arg("server")
            .args(["--node-id", &id, "--http", &http, "--peer", &peer])
            .arg("--data-dir")
            .arg(args.data_dir.join(&id))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(s) = &args.sync {
            cmd.args(["--sync", s]);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting node {id}"))?;
        if let Some(out) = child.stdout.take() {
            stream_logs(id.clone(), out);
        }
        if let Some(err) = child.stderr.take() {
            stream_logs(id.clone(), err);
        }
        nodes.push(Node {
            id,
            url: format!("http://{http}"),
            child,
        });
    }

    let deadline = Instant::now() + START_TIMEOUT;
    for i in 0..nodes.len() {
        let addr = nodes[i].url.trim_start_matches("http://").to_string();
        while !healthy(&addr).await {
            if let Ok(Some(status)) = nodes[i].child.try_wait() {
                terminate(&nodes);
                bail!("node {} exited during start-up ({status})", nodes[i].id);
            }
            if Instant::now() > deadline {
                terminate(&nodes);
                bail!(
                    "node {} did not become healthy within {:?}",
                    nodes[i].id,
                    START_TIMEOUT
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("{} {}", nodes[i].id, nodes[i].url);
    }
    println!(
        "ready: {} node(s); try: curl -X PUT --data-binary hello {}/v1/kv/demo/greeting",
        nodes.len(),
        nodes[0].url
    );

    let exited = async {
        loop {
            for n in nodes.iter_mut() {
                if let Ok(Some(status)) = n.child.try_wait() {
                    return (n.id.clone(), status);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let outcome = tokio::select! {
        _ = crate::shutdown_signal() => None,
        (id, status) = exited => Some((id, status)),
    };
    eprintln!("stopping {} node(s)", nodes.len());
    terminate(&nodes);
    for n in &mut nodes {
        match tokio::time::timeout(Duration::from_secs(30), n.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = n.child.start_kill();
            }
        }
    }
    match outcome {
        None => Ok(()),
        Some((id, status)) => bail!("node {id} exited unexpectedly ({status})"),
    }
}
