// The yeskv console: polls the node that served it and draws what it says, and reads every
// other member's /v1/status and /metrics at the member's own HTTP address (the nodes answer
// cross-origin requests: api/cors.rs) for the per-node figures and the anti-entropy agreement.
// Plain DOM code, no framework. Data requests carry the API key typed into the page (kept in
// sessionStorage for this tab only); the page itself is open.
"use strict";

const POLL_MS = 1500;
// The other members are read half as often: 2 requests per member per 3 s.
const PEER_POLL_MS = 3000;
// A member that has not answered within this long is shown as not answering ("—").
const PEER_TIMEOUT_MS = 2500;
const MISSING = "—";
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
  "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#17becf", "#8c564b"];
const KEY_STORE = "yeskv-console-api-key";
// ops/s and p99 are over the requests of about this long: the difference between a member's
// scrape of /metrics now and its scrape this long ago (less until the page has one that old).
const WINDOW_MS = 15000;

// figures: node id -> { status, series, samples, load } of the last answer of that member (the
// answering node's from its own poll; samples: its scrapes within the load window, load: its
// ops/s and p99 over them); absent when the member did not answer.
const state = { status: null, ring: null, metrics: null, colourBy: "owner", plan: null,
  figures: new Map(), peersInFlight: false };

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

// The banner under the header: what the page's polls of this node ran into; `code` (the HTTP
// status, or "unreachable") in its data-code.
function showMessage(text, code) {
  const m = $("message");
  if (!text) { m.hidden = true; m.removeAttribute("data-code"); return; }
  m.hidden = false;
  m.setAttribute("data-code", String(code || "error"));
  m.textContent = text;
}

class HttpError extends Error {
  constructor(status, text, reason) { super(text); this.status = status; this.reason = reason || text; }
}

// The node's `{"error": …}` reason of a refused answer (its text when not JSON).
async function reasonOf(resp) {
  const text = await resp.text();
  try { return JSON.parse(text).error || text; } catch (_) { return text; }
}

// A 401 or 403 answer as an error saying what to do.
async function refusal(resp) {
  const reason = await reasonOf(resp);
  const text = resp.status === 401
    ? `401 Unauthorized: ${apiKey() ? "the node does not accept this API key" : "this node needs an API key"} (${reason}). Enter a key above.`
    : `403 Forbidden: this API key lacks the permission (${reason}). The cluster views and Commit need an admin key.`;
  return new HttpError(resp.status, text, reason);
}

async function api(path, options) {
  const opts = options || {};
  const headers = Object.assign({}, opts.headers || {});
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  const resp = await fetch(path, { method: opts.method || "GET", headers, cache: "no-store",
    signal: opts.signal });
  if (resp.status === 401 || resp.status === 403) throw await refusal(resp);
  return resp;
}

async function json(path) {
  const resp = await api(path);
  const text = await resp.text();
  if (!resp.ok) {
    let reason = text;
    try { reason = JSON.parse(text).error || text; } catch (_) { /* not JSON: as is */ }
    throw new HttpError(resp.status, `${path}: ${resp.status} ${reason}`, reason);
  }
  return JSON.parse(text);
}

// ---- Prometheus text -------------------------------------------------------------------

function parseMetrics(text) {
  const series = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const l of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    series.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return series;
}

const isClientRoute = (labels) => /^\/v1\/(kv|dt)\//.test(labels.route || "");

function clientOps(series) {
  return series.filter((s) => s.name === "yeskv_http_requests_total" && isClientRoute(s.labels))
    .reduce((sum, s) => sum + s.value, 0);
}

// The cumulative buckets of the client routes' latency histogram (all routes summed), as a Map
// upper bound (seconds, Infinity for "+Inf") -> requests that took at most that long.
function clientBuckets(series) {
  const buckets = new Map();
  for (const s of series) {
    if (s.name !== "yeskv_http_request_duration_seconds_bucket" || !isClientRoute(s.labels)) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    buckets.set(le, (buckets.get(le) || 0) + s.value);
  }
  return buckets;
}

// Quantile `q` (0..1) of the requests observed between two scrapes of one cumulative
// Prometheus histogram, `before` and `after` (each iterable of [upper bound, cumulative
// count], e.g. a Map; Infinity for "+Inf"), interpolated linearly inside the bucket it falls in
// as Prometheus's histogram_quantile does (the first bucket starts at 0). Infinity when it
// falls in the "+Inf" bucket; null when nothing was observed in between or a count went back
// (the node restarted: its histogram started over). Pure: no DOM, no state.
function quantileFromDeltas(before, after, q) {
  const start = new Map(before);
  const bounds = [...new Map(after).entries()].sort((a, b) => a[0] - b[0]);
  const deltas = [];
  for (const [le, count] of bounds) {
    const d = count - (start.get(le) || 0);
    if (!(d >= 0)) return null;
    deltas.push([le, d]);
  }
  // Cumulative deltas never decrease; a smaller one means mixed-up scrapes: no answer.
  for (let i = 1; i < deltas.length; i++) if (deltas[i][1] < deltas[i - 1][1]) return null;
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, d] of deltas) {
    if (d >= rank && d > below) {
      if (le === Infinity) return Infinity;
      return lower + (le - lower) * ((rank - below) / (d - below));
    }
    lower = le;
    below = d;
  }
  return null;
}

function metric(series, name) {
  const found = series.filter((s) => s.name === name);
  return found.length ? found.reduce((sum, s) => sum + s.value, 0) : null;
}

// ---- formatting ------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function seconds(s) {
  if (s === null || s === undefined) return "?";
  if (s === Infinity) return "> largest bucket";
  return s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(2)} s`;
}

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
}

// ---- views -----------------------------------------------------------------------------

// A member's transfers as a cell: partitions it is receiving, bytes left, ETA.
function receivingCell(t) {
  const parts = (t && t.partitions_incoming) || 0;
  if (!parts) return "none";
  const left = t.bytes_pending === null || t.bytes_pending === undefined ? "?" : bytes(t.bytes_pending);
  const eta = t.eta_s === null || t.eta_s === undefined ? "?" : `${Number(t.eta_s).toFixed(0)} s`;
  return `${parts} partitions, ${left} left, ETA ${eta}`;
}

// A member's cross-region queue as a cell: writes queued, the oldest one's age, links down.
function lagCell(regions) {
  const entries = Object.entries(regions || {});
  if (!entries.length) return "none";
  const queue = entries.reduce((sum, [, r]) => sum + (Number(r.queue) || 0), 0);
  const age = entries.reduce((max, [, r]) => Math.max(max, Number(r.oldest_age_s) || 0), 0);
  const down = entries.filter(([, r]) => r.link && r.link !== "up").map(([name, r]) => `${name}: ${r.link}`);
  return `${queue} queued, ${age.toFixed(1)} s behind${down.length ? "; " + down.join(", ") : ""}`;
}

// The per-node cells of member `id`: [attribute, machine value, text] each; "—" for all when
// the member did not answer.
function figureCells(id) {
  const f = state.figures.get(id);
  const names = ["ops", "p99", "disk", "hints", "receiving", "lag"];
  if (!f) return names.map((n) => [n, MISSING, MISSING]);
  const s = f.status;
  const { rate, p99, span } = f.load;
  const used = s.disk && s.disk.used_bytes ? s.disk.used_bytes.total : null;
  return [
    ["ops", rate === null ? "" : rate.toFixed(1), rate === null ? "measuring…" : rate.toFixed(1)],
    ["p99", p99 === null ? "" : String(p99), rate === null ? "measuring…" : p99 === null ? "no requests" : seconds(p99)],
    ["disk", used === null ? MISSING : String(used), used === null ? MISSING : bytes(used) + (s.disk.writable ? "" : " (NOT WRITABLE)")],
    ["hints", String(s.hints_pending ?? ""), String(s.hints_pending ?? "?")],
    ["receiving", String((s.transfers && s.transfers.partitions_incoming) || 0), receivingCell(s.transfers)],
    ["lag", String(Object.values(s.regions || {}).reduce((sum, r) => sum + (Number(r.queue) || 0), 0)), lagCell(s.regions)],
  ];
}

function renderNodes(status) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  const members = status.members || [];
  let up = 0;
  for (const m of members) {
    if (m.status === "up") up++;
    const where = m.region ? `${m.region} / ${m.zone || "?"}` : (m.zone || "?");
    const link = el("a", { href: `${location.protocol}//${m.http}/ui` }, m.http || "?");
    const cells = figureCells(m.id).map(([name, value, text]) => el("td", { [`data-${name}`]: value, class: "num" }, text));
    body.append(el("tr", { "data-node-id": m.id, "data-status": m.status, "data-answered": String(state.figures.has(m.id)) },
      el("td", {}, m.id),
      el("td", {}, el("span", { class: `badge ${m.status}` }, m.status)),
      el("td", {}, m.state || "?"),
      // A member that gossips no release runs 0.1.0 (rolling upgrades: docs/operations.md).
      el("td", { "data-release": m.release ?? "0.1.0" }, m.release ?? "0.1.0"),
      el("td", {}, where),
      el("td", {}, m.owns ?? "?"),
      ...cells,
      el("td", {}, link)));
  }
  const summary = $("nodes-summary");
  summary.textContent = `${up} of ${members.length} up`;
  summary.setAttribute("data-up", String(up));
  $("node-name").textContent = `· ${status.node}`;
  $("self-id").textContent = status.node;
  $("layout").textContent = `layout v${status.layout_version} · N=${status.n} R=${status.r} W=${status.w}`;
  $("layout").setAttribute("data-layout-version", String(status.layout_version));
}

function renderSelf(status, load) {
  const disk = status.disk;
  const t = status.transfers || {};
  const lag = Object.entries(status.regions || {})
    .map(([r, x]) => `${r}: ${x.link}, ${x.queue} queued, ${Number(x.oldest_age_s).toFixed(1)} s behind`)
    .join("; ") || "none (one region)";
  facts($("self"), [
    ["serving", status.serving],
    ["release", `${status.release ?? "0.1.0"} (internode protocol ${(status.protocol_versions || ["?"]).join(" to ")})`],
    [`load (last ${WINDOW_MS / 1000} s)`, load.rate === null ? "measuring…" : `${load.rate.toFixed(1)} ops/s over ${load.span.toFixed(1)} s`],
    [`p99 (kv, dt; last ${WINDOW_MS / 1000} s)`, load.rate === null ? "measuring…" : load.p99 === null ? "no requests" : seconds(load.p99)],
    ["disk", disk ? `${bytes(disk.used_bytes.total)} used, ${bytes(disk.free_bytes)} free of ${bytes(disk.total_bytes)}${disk.writable ? "" : " (NOT WRITABLE)"}` : "?"],
    ["keys stored", status.keys_stored ?? "?"],
    ["hints", `${status.hints_pending ?? "?"} pending (${bytes(status.hint_bytes)})`],
    ["transfers", `${t.partitions_incoming ?? 0} incoming, ${t.partitions_pending ?? 0} pending, ETA ${t.eta_s ?? "?"} s`],
    ["replication lag", lag],
    ["uptime", `${status.uptime_secs} s`],
  ]);
}

// Anti-entropy convergence across the cluster, as `yeskv cluster status` computes it: every
// member that answered reports the merkle root of each partition it is a replica of; a
// partition agrees when at least two replicas reported and all their roots are built and
// equal. Out of the ring's partitions (one not reported by two replicas does not agree).
function agreement(members, partitionCount) {
  const roots = new Map();
  let answered = 0;
  for (const m of members) {
    const f = state.figures.get(m.id);
    if (!f) continue;
    answered++;
    for (const p of f.status.partitions || []) {
      if (!roots.has(p.id)) roots.set(p.id, []);
      roots.get(p.id).push(p.merkle_root ?? null);
    }
  }
  let agreeing = 0;
  for (const r of roots.values()) {
    if (r.length > 1 && r.every((x) => x !== null && x === r[0])) agreeing++;
  }
  return { agreeing, total: partitionCount || roots.size, answered };
}

function renderAae(status, series) {
  const members = status.members || [];
  const partitionCount = state.ring && state.ring.partitions ? state.ring.partitions.length : 0;
  const { agreeing, total, answered } = agreement(members, partitionCount);
  const parts = status.partitions || [];
  const built = parts.filter((p) => p.merkle_root !== null).length;
  const compared = metric(series, "yeskv_aae_partitions_compared");
  const differing = metric(series, "yeskv_aae_partitions_differing");
  const ran = compared !== null && compared > 0 && differing !== null;
  const node = $("aae");
  facts(node, [
    ["replicas", el("span", { "data-agreeing": String(agreeing), "data-partitions": String(total) },
      `${agreeing} of ${total} partitions agree across replicas`)],
    ["compared", `merkle roots of ${answered} of ${members.length} members`],
    [`${status.node}'s last round`, ran ? `${compared - differing} of ${compared} partitions agree with the peer` : "no exchange yet"],
    [`${status.node} replica of`, `${parts.length} partitions (${built} trees built)`],
  ]);
  node.setAttribute("data-agreeing", String(agreeing));
  node.setAttribute("data-differing", String(total - agreeing));
}

function colourKey(nodeId, nodes) {
  if (state.colourBy === "owner") return nodeId;
  const n = nodes.get(nodeId) || {};
  return state.colourBy === "zone" ? (n.zone || "?") : (n.region || "(default)");
}

function renderRing(ring, status) {
  const wheel = $("wheel");
  wheel.replaceChildren();
  const nodes = new Map();
  for (const m of (status && status.members) || []) nodes.set(m.id, m);
  const parts = ring.partitions || [];
  const count = parts.length || 1;
  const colours = new Map();
  const colourOf = (key) => {
    if (!colours.has(key)) colours.set(key, PALETTE[colours.size % PALETTE.length]);
    return colours.get(key);
  };
  const point = (r, turn) => {
    const a = turn * 2 * Math.PI - Math.PI / 2;
    return `${(r * Math.cos(a)).toFixed(3)} ${(r * Math.sin(a)).toFixed(3)}`;
  };
  parts.forEach((p, i) => {
    const owner = (p.preference || [])[0] || "?";
    const a0 = i / count, a1 = (i + 1) / count;
    const d = `M ${point(100, a0)} A 100 100 0 0 1 ${point(100, a1)} L ${point(62, a1)} A 62 62 0 0 0 ${point(62, a0)} Z`;
    const down = nodes.has(owner) && nodes.get(owner).status !== "up";
    const seg = svg("path", { d, fill: colourOf(colourKey(owner, nodes)), stroke: "#fff",
      "stroke-width": count > 64 ? "0.15" : "0.6", "data-partition": p.id, opacity: down ? "0.35" : "1" });
    const title = svg("title", {});
    title.textContent = `partition ${p.id}: ${(p.preference || []).join(", ")}${p.syncing ? " (moving to " + p.syncing.join(", ") + ")" : ""}`;
    seg.append(title);
    wheel.append(seg);
  });
  const label = svg("text", { x: "0", y: "5", "text-anchor": "middle", "font-size": "13", fill: "#1d2330" });
  label.textContent = `${parts.length} partitions`;
  wheel.append(label);
  const legend = $("legend");
  legend.replaceChildren();
  for (const [key, colour] of colours) {
    const sw = el("span", { class: "swatch" });
    sw.style.background = colour;
    legend.append(el("li", {}, sw, key));
  }
}

// The staged plan (or why there is none to show) in the plan card; its box's data-staged is
// "true", "false", or "unknown" (the plan could not be read with this key).
function renderPlan(plan) {
  const box = $("plan");
  box.replaceChildren();
  const commit = $("commit");
  const staged = plan.staged || {};
  const nothing = !(staged.joins || []).length && !(staged.leaves || []).length && !staged.replication;
  if (nothing && !(plan.moves || []).length) {
    state.plan = null;
    box.setAttribute("data-staged", "false");
    box.append(el("p", { class: "muted" }, "Nothing staged."));
    commit.disabled = true;
    return;
  }
  state.plan = plan;
  box.setAttribute("data-staged", "true");
  box.setAttribute("data-base-version", String(plan.base_version));
  box.setAttribute("data-new-version", String(plan.new_version));
  const leaves = (staged.leaves || []).map((l) => `${l.node} (${l.mode})`).join(", ") || "none";
  const dl = el("dl", { class: "facts" });
  facts(dl, [
    ["version", `${plan.base_version} → ${plan.new_version}`],
    ["joins", (staged.joins || []).join(", ") || "none"],
    ["leaves", leaves],
    ["replicas moved", `${plan.replicas_moved} (${plan.partitions_moving} partitions)`],
    ["data to move", plan.bytes_known ? bytes(plan.bytes_moving) : `≥ ${bytes(plan.bytes_moving)}`],
    ["safe", `zones: ${plan.zone_safe ? "yes" : "NO"}, data: ${plan.data_safe ? "yes" : "NO"}`],
  ]);
  box.append(dl);
  const moves = plan.moves || [];
  const list = el("ul", { class: "moves", "data-moves": String(moves.length) });
  for (const m of moves.slice(0, 512)) {
    list.append(el("li", { "data-move": String(m.partition) }, `partition ${m.partition}: ${m.from || "–"} → ${m.to || "–"}`));
  }
  if (moves.length > 512) list.append(el("li", { class: "muted" }, `… and ${moves.length - 512} more`));
  box.append(list);
  commit.disabled = false;
}

async function refreshPlan() {
  const box = $("plan");
  try {
    renderPlan(await json("/v1/cluster/plan"));
  } catch (e) {
    state.plan = null;
    box.replaceChildren();
    if (e.status === 409) {
      // Nothing staged (the usual case), said plainly.
      box.setAttribute("data-staged", "false");
      box.append(el("p", { class: "muted" }, "Nothing staged (stage a join or a leave with the CLI or the API)."));
      $("commit").disabled = true;
    } else if (e.status === 401 || e.status === 403) {
      // The key may not read the plan; Commit stays offered and the node decides (and says why
      // not in the commit banner).
      box.setAttribute("data-staged", "unknown");
      box.append(el("p", { class: "muted" }, `The staged plan cannot be read with this key: ${e.reason}.`));
      $("commit").disabled = false;
    } else {
      box.setAttribute("data-staged", "unknown");
      box.append(el("p", { class: "muted" }, e.message));
      $("commit").disabled = true;
    }
  }
}

// The banner of the last Commit: what the node answered (data-code: its HTTP status, or
// "unreachable"); it stays until the next Commit or key change.
function commitMessage(text, code) {
  const m = $("commit-message");
  if (!text) { m.hidden = true; m.removeAttribute("data-code"); return; }
  m.hidden = false;
  m.setAttribute("data-code", String(code));
  m.className = code === 200 ? "banner info" : "banner";
  m.textContent = text;
}

async function commitPlan() {
  const plan = state.plan;
  const question = plan
    ? `Commit the staged plan as layout v${plan.new_version} (now v${plan.base_version}; ${plan.replicas_moved} replicas move)?`
    : "Commit what is staged on this node? (The plan could not be read with this key.)";
  if (!confirm(question)) return;
  commitMessage("");
  try {
    const resp = await api("/v1/cluster/commit", { method: "POST" });
    if (!resp.ok) throw new HttpError(resp.status, `Commit failed: ${resp.status} ${await reasonOf(resp)}`);
    const body = await resp.json();
    commitMessage(`Committed: the cluster is at layout v${body.version} (${(body.members || []).length} members).`, 200);
  } catch (e) {
    if (e.status === 401) {
      commitMessage(`Commit refused (401 Unauthorized): ${e.reason}. Enter an admin key above.`, 401);
    } else if (e.status === 403) {
      commitMessage(`Commit refused (403 Forbidden): ${e.reason}. Committing needs an admin key.`, 403);
    } else if (e instanceof HttpError) {
      commitMessage(e.message, e.status);
    } else {
      commitMessage(`Commit: cannot reach this node: ${e.message}`, "unreachable");
    }
  }
  refreshPlan();
  poll();
}

// ---- key browser -----------------------------------------------------------------------

function decode(b64) {
  try {
    return new TextDecoder("utf-8", { fatal: false }).decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  } catch (_) { return b64; }
}

async function browse(bucket, key) {
  const out = $("key-result");
  out.replaceChildren(el("p", { class: "muted" }, "reading…"));
  try {
    const path = `/v1/kv/${encodeURIComponent(bucket)}/${encodeURIComponent(key)}`;
    const resp = await api(path, { headers: { Accept: "application/json" } });
    const text = await resp.text();
    if (resp.status === 404) { out.replaceChildren(el("p", {}, `${bucket}/${key}: not found`)); return; }
    if (!resp.ok) throw new HttpError(resp.status, `${resp.status} ${text}`);
    const body = JSON.parse(text);
    const context = resp.headers.get("X-Causal-Context") || body.context || "";
    const siblings = body.siblings || [];
    const result = el("div", { "data-key": `${bucket}/${key}`, "data-siblings": String(siblings.length) });
    result.append(el("p", {}, `${bucket}/${key}: ${siblings.length} sibling${siblings.length === 1 ? "" : "s"}`));
    siblings.forEach((s, i) => {
      result.append(el("div", { class: "sibling", "data-sibling": String(i), "data-deleted": String(s.deleted) },
        el("strong", {}, s.deleted ? `#${i + 1} (tombstone)` : `#${i + 1}`),
        el("pre", {}, s.deleted ? "" : decode(s.value))));
    });
    result.append(el("p", { class: "muted" }, "causal context (X-Causal-Context):"),
      el("div", { class: "context", "data-context": context }, context));
    out.replaceChildren(result);
  } catch (e) {
    out.replaceChildren(el("p", {}, e.message));
  }
}

// ---- polling ---------------------------------------------------------------------------

async function poll() {
  try {
    const [status, ring, metricsText] = await Promise.all([
      json("/v1/status"),
      json("/v1/ring"),
      api("/metrics").then((r) => (r.ok ? r.text() : "")),
    ]);
    const series = parseMetrics(metricsText);
    const first = state.status === null;
    state.status = status; state.ring = ring; state.metrics = series;
    const load = record(status.node, status, series);
    render();
    renderSelf(status, load);
    renderRing(ring, status);
    document.body.setAttribute("data-loaded", "true");
    showMessage("");
    if (first) pollPeers();
  } catch (e) {
    if (e instanceof HttpError) showMessage(e.message, e.status);
    else showMessage(`cannot reach this node: ${e.message}`, "unreachable");
  }
}

// Keeps member `id`'s answer and a scrape of its client requests (count and latency buckets)
// in its window; returns its load over the window.
function record(id, status, series) {
  const before = state.figures.get(id);
  const samples = windowed(before ? before.samples : [],
    { at: performance.now(), count: clientOps(series), buckets: clientBuckets(series) });
  const load = loadOver(samples);
  state.figures.set(id, { status, series, samples, load });
  return load;
}

// `samples` with `sample` added, less those older than the window needs: the oldest kept is the
// last one taken at or before WINDOW_MS ago (so the window spans WINDOW_MS once it can). A
// count that went back (the node restarted) starts the window over.
function windowed(samples, sample) {
  const last = samples[samples.length - 1];
  const kept = last && sample.count >= last.count ? samples.concat([sample]) : [sample];
  const from = sample.at - WINDOW_MS;
  while (kept.length > 2 && kept[1].at <= from) kept.shift();
  return kept;
}

// Requests per second and p99 between the oldest and the newest sample: { rate, p99, span }
// (span in seconds); rate null until two samples, p99 null when no request in between.
function loadOver(samples) {
  const first = samples[0];
  const last = samples[samples.length - 1];
  const span = (last.at - first.at) / 1000;
  if (samples.length < 2 || !(span > 0)) return { rate: null, p99: null, span: 0 };
  return { rate: Math.max(0, last.count - first.count) / span,
    p99: quantileFromDeltas(first.buckets, last.buckets, 0.99), span };
}

function render() {
  if (!state.status) return;
  renderNodes(state.status);
  renderAae(state.status, state.metrics || []);
}

// One member's /v1/status and /metrics at its own address (same scheme as the page, same
// key), within PEER_TIMEOUT_MS; null when it does not answer both.
async function readMember(m) {
  const base = `${location.protocol}//${m.http}`;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), PEER_TIMEOUT_MS);
  try {
    const [statusResp, metricsResp] = await Promise.all([
      api(`${base}/v1/status`, { signal: abort.signal }),
      api(`${base}/metrics`, { signal: abort.signal }),
    ]);
    if (!statusResp.ok || !metricsResp.ok) return null;
    return { status: await statusResp.json(), series: parseMetrics(await metricsResp.text()) };
  } catch (_) {
    return null; // down, unreachable from this browser, or refused: shown as "—"
  } finally {
    clearTimeout(timer);
  }
}

// Every other member, in parallel; one round at a time.
async function pollPeers() {
  if (!state.status || state.peersInFlight) return;
  state.peersInFlight = true;
  try {
    const self = state.status.node;
    const others = (state.status.members || []).filter((m) => m.id !== self && m.http);
    const answers = await Promise.all(others.map(readMember));
    others.forEach((m, i) => {
      if (answers[i]) record(m.id, answers[i].status, answers[i].series);
      else state.figures.delete(m.id);
    });
    const known = new Set((state.status.members || []).map((m) => m.id));
    for (const id of [...state.figures.keys()]) if (!known.has(id)) state.figures.delete(id);
    render();
  } finally {
    state.peersInFlight = false;
  }
}

function fromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("apikey")) {
    sessionStorage.setItem(KEY_STORE, params.get("apikey"));
    params.delete("apikey");
    history.replaceState(null, "", location.pathname + (params.toString() ? "#" + params.toString() : ""));
  }
  const deep = params.get("key");
  if (deep && deep.includes("/")) {
    const at = deep.indexOf("/");
    return [deep.slice(0, at), deep.slice(at + 1)];
  }
  return null;
}

function start() {
  const deep = fromFragment();
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
    commitMessage("");
    poll(); pollPeers(); refreshPlan();
  });
  $("colour-by").addEventListener("change", (e) => {
    state.colourBy = e.target.value;
    if (state.ring) renderRing(state.ring, state.status);
  });
  $("commit").addEventListener("click", commitPlan);
  $("browse").addEventListener("submit", (e) => {
    e.preventDefault();
    browse($("browse-bucket").value, $("browse-key").value);
  });
  if (deep) {
    $("browse-bucket").value = deep[0];
    $("browse-key").value = deep[1];
    browse(deep[0], deep[1]);
  }
  poll(); refreshPlan();
  setInterval(poll, POLL_MS);
  setInterval(pollPeers, PEER_POLL_MS);
  setInterval(refreshPlan, POLL_MS * 4);
}

document.addEventListener("DOMContentLoaded", start);
