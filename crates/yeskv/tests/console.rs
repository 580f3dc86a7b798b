//! The web console (`/ui`) in a real browser: headless Chromium (Debian's `chromium` package,
//! installed by `scripts/setup`) loads the page from a real cluster of three nodes.
//!
//! Chromium runs once per look: `--dump-dom` prints the DOM after the page's scripts ran for
//! `--virtual-time-budget` ms of page time (its polls of `/v1/status`, `/v1/ring`, `/metrics`
//! included), `--screenshot` saves a PNG. The page marks what the test reads with data
//! attributes (`data-node-id`, `data-status`, `data-sibling`, `data-context`), so the checks do
//! not depend on wording or layout. Screenshots (laptop 1280×900, the whole page at 1280×1500,
//! phone 390×844, and the laptop view after the kill) are kept in
//! `${CARGO_TARGET_DIR:-target}/console-screenshots/` as test artefacts.
//!
//! Asserted: the page and its assets are served with their content types and a strict
//! Content-Security-Policy, without an API key; the page shows three nodes up, each with its
//! own figures (read cross-origin from the node's own address: ops/s, p99, disk used, hints,
//! receiving, cross-region lag in `data-*` cells of its `data-node-id` row) and the
//! anti-entropy agreement of all members' merkle roots (`data-agreeing`); a key written
//! twice without a context shows both siblings and a causal context (deep link
//! `/ui#key=BUCKET/KEY`); a node killed with SIGKILL shows as down within 10 s of the kill,
//! its figures as "—" and no error banner.
//! Without Chromium the test fails (it does not skip): `scripts/setup` installs it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::start_cluster;

/// Where Chromium is looked for, in order.
const CHROMIUM_CANDIDATES: [&str; 3] =
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium"];
/// Longest one Chromium run may take before the test gives up on it.
const CHROMIUM_RUN_SECS_MAX: u64 = 60;
/// How long a killed node may take to show as down on the page.
const DOWN_WITHIN: Duration = Duration::from_secs(10);

fn chromium() -> String {
    for c in CHROMIUM_CANDIDATES {
        let found = Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return c.to_string();
        }
    }
    panic!(
        "headless Chromium is required for the console test and was not found ({}): \
         run scripts/setup (it installs Debian's `chromium` package)",
        CHROMIUM_CANDIDATES.join(", ")
    );
}

/// Where screenshots are kept: `${CARGO_TARGET_DIR:-target}/console-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Runs Chromium headless with `args` then `url`; its standard output.
fn run_chromium(browser: &str, profile: &Path, args: &[String], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox", // tests run as root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(CHROMIUM_RUN_SECS_MAX);
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let mut stdout = stdout;
        std::io::Read::read_to_string(&mut stdout, &mut out).ok();
        out
    });
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {CHROMIUM_RUN_SECS_MAX} s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("chromium output")
}

/// The DOM of `url` after `budget_ms` of page time.
fn dump_dom(browser: &str, profile: &Path, url: &str, budget_ms: u32) -> String {
    run_chromium(
        browser,
        profile,
        &[
            "--dump-dom".into(),
            format!("--virtual-time-budget={budget_ms}"),
        ],
        url,
    )
}

/// Saves a screenshot of `url` at `width`×`height` to `path`.
fn screenshot(browser: &str, profile: &Path, url: &str, (width, height): (u32, u32), path: &Path) {
    let _ = std::fs::remove_file(path);
    run_chromium(
        browser,
        profile,
        &[
            format!("--screenshot={}", path.display()),
            format!("--window-size={width},{height}"),
            "--virtual-time-budget=4000".into(),
        ],
        url,
    );
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "no screenshot of {url} at {}", path.display());
}

/// The row of node `id` in a dumped DOM, from its `<tr` to its `</tr>`.
fn node_row<'d>(dom: &'d str, id: &str) -> Option<&'d str> {
    let at = dom.find(&format!("data-node-id=\"{id}\""))?;
    let end = at + dom[at..].find("</tr>")?;
    Some(&dom[at..end])
}

/// The value of attribute `name` of the first element carrying it in `html`.
fn attribute<'d>(html: &'d str, name: &str) -> Option<&'d str> {
    let value = html.split(&format!("{name}=\"")).nth(1)?;
    Some(&value[..value.find('"')?])
}

/// The `data-status` of node `id`'s row in a dumped DOM.
fn node_status(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("data-node-id=\"{id}\""))?;
    let tag = &dom[at..at + dom[at..].find('>')?];
    let status = tag.split("data-status=\"").nth(1)?;
    Some(status[..status.find('"')?].to_string())
}

#[test]
fn console_shows_the_cluster_in_headless_chromium() {
    let browser = chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("chromium-profile");
    let shots = screenshot_dir();
    let mut cluster = start_cluster(&dir.path().join("cluster"), 3, &["a", "b", "c"], &[]);
    let n1 = cluster.nodes[0].http.clone();

    // The page and its assets: open, typed, under a strict policy.
    for (path, content_type) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = cluster.nodes[0].req("GET", path, &[], b"");
        assert_eq!(r.status, 200, "GET {path}");
        let ct = r.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with(content_type),
            "GET {path}: content-type {ct}"
        );
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'"), "GET {path}: CSP {csp}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "GET {path}");
    }
    assert_eq!(
        cluster.nodes[0].req("GET", "/ui/nope.js", &[], b"").status,
        404
    );

    // Two writes without a context: two siblings.
    for value in ["apple-sibling", "pear-sibling"] {
        let r = cluster.nodes[0].req("PUT", "/v1/kv/console/fruit", &[], value.as_bytes());
        assert!(r.status == 200 || r.status == 204, "PUT: {}", r.status);
    }

    let started = Instant::now();
    let url = format!("http://{n1}/ui#key=console/fruit");
    let dom = dump_dom(&browser, &profile, &url, 5000);
    for id in ["n1", "n2", "n3"] {
        assert_eq!(
            node_status(&dom, id).as_deref(),
            Some("up"),
            "node {id} shown up; DOM:\n{dom}"
        );
    }
    assert!(dom.contains("3 of 3 up"), "the summary says 3 of 3 up");
    // Every node's own figures, read from its own address (cross-origin), in its row.
    for id in ["n1", "n2", "n3"] {
        let row = node_row(&dom, id).unwrap_or_default();
        assert_eq!(
            attribute(row, "data-answered"),
            Some("true"),
            "node {id} answered the page; row: {row}"
        );
        let disk = attribute(row, "data-disk").unwrap_or("—");
        assert!(
            disk != "—" && disk.parse::<u64>().is_ok_and(|b| b > 0),
            "node {id}'s disk used shown, not {disk:?}; row: {row}"
        );
        for cell in [
            "data-ops",
            "data-p99",
            "data-hints",
            "data-receiving",
            "data-lag",
        ] {
            let value = attribute(row, cell);
            assert!(
                value.is_some_and(|v| v != "—"),
                "node {id}'s {cell} shown, not {value:?}; row: {row}"
            );
        }
    }
    // Anti-entropy: the merkle roots of every member compared, per partition.
    let agreeing = attribute(&dom, "data-agreeing").and_then(|a| a.parse::<u32>().ok());
    assert!(
        agreeing.is_some_and(|a| a <= 256)
            && dom.contains("of 256 partitions agree across replicas")
            && dom.contains("merkle roots of 3 of 3 members"),
        "the anti-entropy agreement across the three nodes shown ({agreeing:?}); DOM:\n{dom}"
    );
    eprintln!(
        "console: {} of 256 partitions agree across replicas",
        agreeing.unwrap_or(0)
    );
    assert!(dom.contains("data-partition="), "the ring is drawn");
    assert!(
        dom.contains("apple-sibling") && dom.contains("pear-sibling"),
        "both siblings shown; DOM:\n{dom}"
    );
    assert!(dom.contains("data-siblings=\"2\""), "two siblings counted");
    let context = dom
        .split("data-context=\"")
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap_or_default();
    assert!(!context.is_empty(), "a causal context shown");
    screenshot(
        &browser,
        &profile,
        &url,
        (1280, 900),
        &shots.join("laptop.png"),
    );
    screenshot(
        &browser,
        &profile,
        &url,
        (390, 844),
        &shots.join("phone.png"),
    );
    // The whole page, the key browser included.
    screenshot(
        &browser,
        &profile,
        &url,
        (1280, 1500),
        &shots.join("laptop-full.png"),
    );
    eprintln!(
        "console: page checks and screenshots took {:?}",
        started.elapsed()
    );

    // A node killed: down on the page within DOWN_WITHIN.
    cluster.nodes[2].kill9();
    let killed = Instant::now();
    let page = format!("http://{n1}/ui");
    loop {
        let dom = dump_dom(&browser, &profile, &page, 1500);
        let status = node_status(&dom, "n3");
        if status.as_deref() == Some("down") {
            assert!(dom.contains("2 of 3 up"), "the summary says 2 of 3 up");
            let row = node_row(&dom, "n3").unwrap_or_default();
            assert_eq!(
                attribute(row, "data-disk"),
                Some("—"),
                "a node that does not answer shows \"—\", not stale figures; row: {row}"
            );
            assert!(
                !dom.contains("cannot reach"),
                "no error banner for a member down"
            );
            break;
        }
        assert!(
            killed.elapsed() < DOWN_WITHIN,
            "n3 still shown {status:?} {:?} after the kill",
            killed.elapsed()
        );
    }
    let shown_down = killed.elapsed();
    assert!(
        shown_down <= DOWN_WITHIN,
        "n3 shown down only after {shown_down:?}"
    );
    eprintln!("console: the killed node shown down {shown_down:?} after the kill");
    screenshot(
        &browser,
        &profile,
        &page,
        (1280, 900),
        &shots.join("laptop-node-down.png"),
    );
    eprintln!("console: screenshots in {}", shots.display());
}
