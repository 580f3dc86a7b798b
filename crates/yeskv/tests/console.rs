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
//!
//! A second test drives one page that keeps running, over the DevTools protocol on a pipe
//! ([`Browser`]): it types API keys into the page, clicks its buttons with the mouse and
//! accepts its confirm dialog, against three nodes with API keys (`--auth`) and a spare fourth.
//! Asserted: without a key, and with a key the cluster does not know, a `401` banner; with a
//! key without the admin flag, a `403` banner, and Commit clicked answers a `403` banner and
//! commits nothing; with the admin key, the join of the spare (staged through the API) shown
//! with its versions and exactly the API's moves, Commit clicked and confirmed (the dialog names
//! the versions), the layout one version further on the node and on the page, the plan gone and
//! four nodes up; the page's `quantileFromDeltas` on known buckets (answers that a quantile of
//! the totals since the start, or without interpolation, would miss); a burst of writes shown in
//! n1's windowed ops/s and p99, then gone ("no requests") once out of the 15 s window; no
//! uncaught exception in the page.
//!
//! Without Chromium the tests fail (they do not skip): `scripts/setup` installs it.

mod support;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{admin_key, bearer, form, start_cluster, start_nodes, wait_until, Node};

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

/// The flags of every Chromium run.
const HEADLESS_FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox", // tests run as root in CI containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-extensions",
];

/// Runs Chromium headless with `args` then `url`; its standard output.
fn run_chromium(browser: &str, profile: &Path, args: &[String], url: &str) -> String {
    let mut child = Command::new(browser)
        .args(HEADLESS_FLAGS)
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
    for id in ["n1", "n2", "n3"] {
        let row = node_row(&dom, id).unwrap_or_default();
        assert_eq!(
            attribute(row, "data-release"),
            Some(env!("CARGO_PKG_VERSION")),
            "node {id}'s release shown: {row}"
        );
    }
    assert!(
        dom.contains("ops/s (last 15 s)") && dom.contains("p99 (last 15 s)"),
        "the load's window named"
    );
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

/// Whether a value the page returned counts as true in JavaScript.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// A headless Chromium driven over the DevTools protocol, for what a DOM dump cannot do: type
/// into the page, click its buttons with the mouse, answer its confirm dialog, evaluate its
/// functions, all in one page that keeps running. The protocol runs over a pipe
/// (`--remote-debugging-pipe`: JSON messages, each ended by a NUL byte, on Chromium's file
/// descriptors 3 and 4), so no port and no WebSocket client are needed.
struct Browser {
    child: Child,
    to: std::io::PipeWriter,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    /// The page's session (`Target.attachToTarget`, flattened).
    session: String,
    /// The messages of the dialogs the page opened, in order; each was accepted ("OK").
    dialogs: Vec<String>,
    /// Uncaught exceptions in the page.
    exceptions: Vec<String>,
}

impl Browser {
    /// Starts Chromium with a blank page of `width`×`height`.
    fn launch(browser: &str, profile: &Path, (width, height): (u32, u32)) -> Browser {
        let (child_reads, to) = std::io::pipe().expect("pipe");
        let (from, child_writes) = std::io::pipe().expect("pipe");
        // The shell moves the pipe's ends to descriptors 3 and 4, where Chromium looks.
        let child = Command::new("sh")
            .args([
                "-c",
                "exec \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null",
                "sh",
                browser,
            ])
            .args(HEADLESS_FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::from(child_reads))
            .stdout(Stdio::from(child_writes))
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(from);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(message) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            session: String::new(),
            dialogs: Vec::new(),
            exceptions: Vec::new(),
        };
        let target = b.send(
            false,
            "Target.createTarget",
            json!({ "url": "about:blank" }),
        );
        let target = target["targetId"].clone();
        let attached = b.send(
            false,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        b.send(true, "Page.enable", json!({}));
        b.send(true, "Runtime.enable", json!({}));
        b.send(
            true,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        b
    }

    fn write(&mut self, message: &Value) {
        let mut bytes = serde_json::to_vec(message).expect("json");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
    }

    /// Sends `method` (to the page's session if `page`) and waits for its answer; events that
    /// come meanwhile are handled (a dialog is accepted).
    fn send(&mut self, page: bool, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if page {
            message["sessionId"] = json!(self.session);
        }
        self.write(&message);
        let deadline = Instant::now() + Duration::from_secs(CHROMIUM_RUN_SECS_MAX);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer from chromium to {method}: {e}"));
            if answer["id"].as_u64() == Some(id) {
                if let Some(error) = answer.get("error") {
                    panic!("chromium refused {method}: {error}");
                }
                return answer["result"].clone();
            }
            self.event(&answer);
        }
    }

    fn event(&mut self, message: &Value) {
        match message["method"].as_str() {
            Some("Page.javascriptDialogOpening") => {
                let text = message["params"]["message"].as_str().unwrap_or_default();
                self.dialogs.push(text.to_string());
                // "OK", as the operator would; the answer to this is not waited for.
                self.next_id += 1;
                let accept = json!({
                    "id": self.next_id,
                    "sessionId": self.session,
                    "method": "Page.handleJavaScriptDialog",
                    "params": { "accept": true },
                });
                self.write(&accept);
            }
            Some("Runtime.exceptionThrown") => self
                .exceptions
                .push(message["params"]["exceptionDetails"].to_string()),
            _ => {}
        }
    }

    /// Opens `url` in the page.
    fn goto(&mut self, url: &str) {
        self.send(true, "Page.navigate", json!({ "url": url }));
    }

    /// The value of `expression` in the page (a promise is awaited); panics if it throws.
    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("{expression} threw in the page: {e}"))
    }

    /// The value of `expression` in the page, or what it threw.
    fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.send(
            true,
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        match r.get("exceptionDetails") {
            Some(e) => Err(e.to_string()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// The page's visible text (for failure messages).
    fn text(&mut self) -> String {
        self.try_eval("document.body ? document.body.innerText : ''")
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Evaluates `expression` every 100 ms until it is truthy (its value) or `timeout` passes.
    /// It may throw meanwhile (e.g. while the page is still loading).
    fn wait_for(&mut self, what: &str, timeout: Duration, expression: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.try_eval(expression);
            if let Ok(v) = &v {
                if truthy(v) {
                    return v.clone();
                }
            }
            if Instant::now() > deadline {
                let text = self.text();
                panic!(
                    "timed out after {timeout:?} waiting for {what} ({expression} = {v:?}); \
                     the page:\n{text}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element `selector` with the mouse, at its centre (scrolled into view); it
    /// must be enabled and be what is under the pointer there.
    fn click(&mut self, selector: &str) {
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
             const x = r.x + r.width / 2, y = r.y + r.height / 2; \
             return {{ x, y, disabled: !!e.disabled, hit: e.contains(document.elementFromPoint(x, y)) }}; }})()",
            sel = json!(selector)
        ));
        assert!(!at.is_null(), "no {selector} on the page");
        assert_eq!(at["disabled"], false, "{selector} is disabled");
        assert_eq!(at["hit"], true, "{selector} is covered by another element");
        for kind in ["mousePressed", "mouseReleased"] {
            self.send(
                true,
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Clicks the field `selector` and types `text` over what it held.
    fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.eval(&format!(
            "document.querySelector({}).select()",
            json!(selector)
        ));
        self.send(true, "Input.insertText", json!({ "text": text }));
    }

    /// Saves a screenshot of the page, scrolled to its top, at `width`×`height` to `path`.
    fn screenshot(&mut self, (width, height): (u32, u32), path: &Path) {
        self.eval("window.scrollTo(0, 0)");
        self.send(
            true,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600 }),
        );
        let shot = self.send(true, "Page.captureScreenshot", json!({ "format": "png" }));
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(png.len() > 1000, "no screenshot for {}", path.display());
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page's expression `banner` (an element id) shows: its `data-code` and text, or
/// `null` while hidden.
fn banner_js(id: &str) -> String {
    format!(
        "(() => {{ const m = document.getElementById('{id}'); \
         return m.hidden ? null : {{ code: m.dataset.code || '', text: m.textContent }}; }})()"
    )
}

/// Waits until banner `id` shows `code` and a text holding every one of `says`; its text.
fn wait_banner(page: &mut Browser, id: &str, code: &str, says: &[&str]) -> String {
    let says_js = json!(says);
    let expression = format!(
        "(() => {{ const b = {banner}; return b && b.code === '{code}' && \
         {says_js}.every((s) => b.text.includes(s)) ? b.text : null; }})()",
        banner = banner_js(id)
    );
    let what = format!("banner #{id} {code} saying {says:?}");
    page.wait_for(&what, Duration::from_secs(20), &expression)
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The layout version node `node` serves (`/v1/ring`, any valid key).
fn ring_version(node: &Node, headers: &[(&str, &str)]) -> u64 {
    let r = node.req("GET", "/v1/ring", headers, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["version"].as_u64().expect("version")
}

#[test]
fn console_commits_a_staged_join_with_an_admin_key() {
    let browser = chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let shots = screenshot_dir();
    let started = Instant::now();

    // Three nodes with API keys and a keyring; n1 registers the first admin key.
    let keyring = dir.path().join("cluster.keys");
    let made = Command::new(support::bin())
        .args(["keyring", "new", "--out"])
        .arg(&keyring)
        .output()
        .expect("yeskv keyring new");
    assert!(made.status.success(), "{made:?}");
    let admin_file = dir.path().join("admin.key");
    let keyring_arg = keyring.to_str().expect("utf-8");
    let secure = ["--auth", "--cluster-keys", keyring_arg];
    let nodes = start_nodes(
        dir.path(),
        &["n1", "n2", "n3"],
        &secure,
        &["--admin-key-file", admin_file.to_str().expect("utf-8")],
    );
    let admin = admin_key(&admin_file, Duration::from_secs(30));
    let admin_auth = bearer(&admin);
    let as_admin = [("authorization", admin_auth.as_str())];
    wait_until("the admin key registered", Duration::from_secs(30), || {
        nodes[0].req("GET", "/v1/admin/keys", &as_admin, b"").status == 200
    });
    form(&nodes, &admin);
    let n1 = &nodes[0];
    let made = n1.req(
        "POST",
        "/v1/admin/keys",
        &as_admin,
        json!({ "name": "reader", "buckets": { "console": "read" }, "admin": false })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(made.status, 200, "{}", made.text());
    let reader = made.json()["key"].as_str().expect("key").to_string();
    let version = ring_version(n1, &as_admin);
    // A spare node in the gossip, not yet a member.
    let peer = n1.args[n1.args.iter().position(|a| a == "--peer").expect("--peer") + 1].clone();
    let mut spare_args = vec!["--node-id", "n4", "--zone", "d", "--seed", &peer];
    spare_args.extend(secure);
    let _n4 = Node::start(&dir.path().join("n4"), &spare_args);
    eprintln!(
        "console: secure cluster and spare up in {:?}",
        started.elapsed()
    );

    let mut page = Browser::launch(&browser, &dir.path().join("chromium-profile"), (1280, 900));
    page.goto(&format!("http://{}/ui", n1.http));

    // No key: a 401 banner saying a key is needed.
    wait_banner(&mut page, "message", "401", &["401", "needs an API key"]);
    page.screenshot((1280, 900), &shots.join("laptop-401.png"));
    // A wrong key, typed into the page: 401, the node does not know it.
    page.type_into("#api-key", "ykv_not-a-key-of-this-cluster");
    page.click("#key-form button[type=submit]");
    wait_banner(
        &mut page,
        "message",
        "401",
        &["401", "does not accept this API key", "unknown API key"],
    );
    let stored = page.eval("sessionStorage.getItem('yeskv-console-api-key')");
    assert_eq!(
        stored,
        json!("ykv_not-a-key-of-this-cluster"),
        "the key is kept for the tab"
    );

    // A join staged through the API.
    let join = json!({ "nodes": ["n4"] }).to_string();
    wait_until("n4 in n1's gossip view", Duration::from_secs(30), || {
        n1.req("POST", "/v1/cluster/join", &as_admin, join.as_bytes())
            .status
            == 200
    });
    let plan = n1.req("GET", "/v1/cluster/plan", &as_admin, b"");
    assert_eq!(plan.status, 200, "{}", plan.text());
    let moves = plan.json()["moves"].as_array().map_or(0, Vec::len);
    assert!(moves > 0, "the join moves replicas: {}", plan.text());

    // A key without the admin flag: 403 on the page's polls; Commit refused with a 403 banner,
    // and nothing committed.
    page.type_into("#api-key", &reader);
    page.click("#key-form button[type=submit]");
    wait_banner(&mut page, "message", "403", &["403", "not an admin key"]);
    page.wait_for(
        "the plan unreadable with the reader key, Commit offered",
        Duration::from_secs(20),
        "document.getElementById('plan').dataset.staged === 'unknown' \
         && !document.getElementById('commit').disabled",
    );
    page.click("#commit");
    let refused = wait_banner(
        &mut page,
        "commit-message",
        "403",
        &[
            "Commit refused (403",
            "not an admin key",
            "needs an admin key",
        ],
    );
    eprintln!("console: commit with the reader key: {refused}");
    assert_eq!(
        page.dialogs.len(),
        1,
        "one confirm dialog: {:?}",
        page.dialogs
    );
    assert!(
        page.dialogs[0].contains("could not be read"),
        "{:?}",
        page.dialogs
    );
    assert_eq!(ring_version(n1, &as_admin), version, "nothing committed");
    assert_eq!(
        n1.req("GET", "/v1/cluster/plan", &as_admin, b"").status,
        200,
        "the join still staged"
    );
    page.screenshot((1280, 1300), &shots.join("laptop-403.png"));

    // The admin key: the banners go, the plan shows with its moves.
    page.type_into("#api-key", &admin);
    page.click("#key-form button[type=submit]");
    page.wait_for(
        "no banner with the admin key",
        Duration::from_secs(20),
        "document.getElementById('message').hidden \
         && document.getElementById('commit-message').hidden \
         && document.body.dataset.loaded === 'true' \
         && ['n1', 'n2', 'n3'].every((id) => !!document.querySelector( \
              `tr[data-node-id=\"${id}\"][data-answered=\"true\"]`))",
    );
    let shown = page.wait_for(
        "the staged plan with its moves",
        Duration::from_secs(20),
        "(() => { const p = document.getElementById('plan'); const l = p.querySelector('.moves'); \
         return p.dataset.staged === 'true' && l ? { base: p.dataset.baseVersion, \
         next: p.dataset.newVersion, moves: l.dataset.moves, \
         listed: l.querySelectorAll('li[data-move]').length, text: p.textContent } : null; })()",
    );
    assert_eq!(shown["base"], json!(version.to_string()), "{shown}");
    assert_eq!(shown["next"], json!((version + 1).to_string()), "{shown}");
    assert_eq!(shown["moves"], json!(moves.to_string()), "{shown}");
    assert_eq!(shown["listed"], json!(moves.min(512)), "{shown}");
    assert!(
        shown["text"].as_str().unwrap_or_default().contains("n4"),
        "the join of n4 shown: {shown}"
    );
    page.screenshot((1280, 1500), &shots.join("laptop-plan.png"));

    // Commit, clicked on the page and confirmed: the layout moves on, the plan goes.
    page.click("#commit");
    let committed = wait_banner(
        &mut page,
        "commit-message",
        "200",
        &[&format!("layout v{}", version + 1)],
    );
    eprintln!("console: {committed}");
    assert_eq!(page.dialogs.len(), 2, "{:?}", page.dialogs);
    assert!(
        page.dialogs[1].contains(&format!("layout v{} (now v{version}", version + 1)),
        "the dialog names the versions: {:?}",
        page.dialogs
    );
    assert_eq!(ring_version(n1, &as_admin), version + 1, "committed");
    page.wait_for(
        "the new layout on the page, nothing staged, four nodes up",
        Duration::from_secs(30),
        &format!(
            "document.getElementById('layout').dataset.layoutVersion === '{}' \
             && document.getElementById('plan').dataset.staged === 'false' \
             && document.getElementById('commit').disabled \
             && document.getElementById('nodes-summary').dataset.up === '4' \
             && !!document.querySelector('tr[data-node-id=\"n4\"][data-status=\"up\"]')",
            version + 1
        ),
    );
    page.screenshot((1280, 900), &shots.join("laptop-committed.png"));

    // ops/s and p99 over the last window, from bucket deltas: known inputs, known answers.
    let answers = page.eval(
        "(() => { const q = quantileFromDeltas; \
         const zero = [[0.001, 0], [0.01, 0], [0.1, 0], [Infinity, 0]]; \
         const some = [[0.001, 50], [0.01, 90], [0.1, 100], [Infinity, 100]]; \
         const old = [[0.001, 1000], [0.01, 1000], [0.1, 1000], [Infinity, 1000]]; \
         const slow = [[0.001, 1000], [0.01, 1000], [0.1, 1010], [Infinity, 1010]]; \
         const lost = [[0.001, 1000], [0.01, 1000], [0.1, 1000], [Infinity, 1005]]; \
         return [q(zero, some, 0.99), q(zero, some, 0.5), q(old, slow, 0.99), q(old, old, 0.99), \
           q(old, lost, 0.99), q(old, zero, 0.99), q(new Map(old), new Map(slow), 0.5)].map(String); })()",
    );
    let got: Vec<String> = answers
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let close = |s: &str, want: f64| s.parse::<f64>().is_ok_and(|v| (v - want).abs() < 1e-9);
    // 99 of 100 requests: the 9th of the 10 in (10 ms, 100 ms].
    assert!(close(&got[0], 0.091), "p99 of one window: {got:?}");
    assert!(close(&got[1], 0.001), "p50 of one window: {got:?}");
    // Only the window's 10 slow requests count, not the 1,000 fast ones before it (the p99
    // since the start would be 1 ms).
    assert!(close(&got[2], 0.0991), "p99 of the delta: {got:?}");
    assert_eq!(got[3], "null", "no request in the window: no p99");
    assert_eq!(got[4], "Infinity", "all in +Inf: {got:?}");
    assert_eq!(got[5], "null", "counts went back (restart): no p99");
    assert!(
        close(&got[6], 0.055),
        "p50 of the delta, from Maps: {got:?}"
    );

    // The page's figures are windowed: a burst shows, then leaves the window.
    for i in 0..200 {
        let r = n1.req(
            "PUT",
            &format!("/v1/kv/console/load-{i}"),
            &as_admin,
            b"value",
        );
        assert!(r.status == 200 || r.status == 204, "PUT: {}", r.status);
    }
    let n1_cells = "(() => { const r = document.querySelector('tr[data-node-id=\"n1\"]'); \
         if (!r) return null; const c = (n) => r.querySelector('[data-' + n + ']'); \
         return { ops: c('ops').dataset.ops, p99: c('p99').dataset.p99, text: c('p99').textContent }; })()";
    let busy = page.wait_for(
        "n1's burst in its ops/s and p99",
        Duration::from_secs(20),
        &format!("(() => {{ const c = {n1_cells}; return c && Number(c.ops) > 0 && c.p99 !== '' ? c : null; }})()"),
    );
    eprintln!("console: n1 during the burst: {busy}");
    let idle_since = Instant::now();
    let idle = page.wait_for(
        "n1's burst out of its window",
        Duration::from_secs(40),
        &format!("(() => {{ const c = {n1_cells}; return c && c.ops === '0.0' && c.p99 === '' ? c : null; }})()"),
    );
    eprintln!(
        "console: n1 idle again {:?} after the burst: {idle}",
        idle_since.elapsed()
    );
    assert_eq!(idle["text"], json!("no requests"), "{idle}");
    let header = page.eval("document.querySelector('#nodes thead').textContent");
    assert!(
        header
            .as_str()
            .is_some_and(|h| h.contains("ops/s (last 15 s)") && h.contains("p99 (last 15 s)")),
        "the window named in the table: {header}"
    );
    assert!(
        page.exceptions.is_empty(),
        "uncaught exceptions in the page: {:?}",
        page.exceptions
    );
    eprintln!(
        "console: the secure commit test took {:?}",
        started.elapsed()
    );
}
