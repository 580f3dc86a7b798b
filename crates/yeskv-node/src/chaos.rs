//! Test-only fault injection in the node's own transport: on every outgoing internode call the
//! node makes, a delay (plus random jitter) and, per destination region, a WAN delay, jitter and
//! loss, set in the config and at runtime over HTTP.
//!
//! This kernel-independent delay exists for the real-process chaos runner (`scripts/chaos`,
//! crate `yeskv-chaos`) and for running several regions on one machine (`yeskv dev --regions R
//! --wan-delay-ms MS`): network namespaces and nftables can drop packets but not delay them
//! without netem. It is off unless the node's configuration says `[chaos] enabled = true` or
//! names `[chaos] wan` rules; only then does [`crate::server`] wrap the node's [`PeerClient`]
//! in a [`ChaosPeers`] and mount [`routes`] (`GET`/`POST /v1/admin/chaos`). A production node
//! never has either.
//!
//! **Two layers, added up.** The global `delay_ms` + `jitter_ms` applies to every call. A
//! [`WanRule`] (`to`, `delay_ms`, `jitter_ms`, `loss`) applies to calls whose destination is a
//! node of region `to`: its delay and jitter are added to the global ones, and with probability
//! `loss` the call is **dropped**: it is never sent, and it fails as a timeout would after
//! waiting its timeout, at most [`DROP_WAIT_MS_MAX`] (a lost request's caller learns nothing
//! until its deadline; the bound keeps a long-deadline call, a transfer batch, from hanging on
//! one drop). The destination's region comes from a [`RegionOf`] resolver the server builds
//! from the layout (the member whose internode address the call goes to); a destination the
//! layout does not know gets no rule.
//!
//! **Rules are directional.** In the config, `[chaos] wan = [{from = "r1", to = "r2", delay_ms
//! = 40, jitter_ms = 5, loss = 0.0}]` is a list of [`WanLink`]s; a node keeps the links whose
//! `from` is its own region, as rules. Only calls *leaving* a node are delayed, and an answer
//! travels back on the same call, so a link from r1 to r2 slows r1's calls to r2 (request and
//! answer both) and nothing r2 sends: a symmetric WAN needs both directions (`yeskv dev` writes
//! both). At runtime, `POST /v1/admin/chaos` with `"wan": [...]` replaces the rules of that node
//! (`"wan": []` clears them); a body without `wan` leaves them as they are, and sets the global
//! delay and jitter as before (absent = 0). `GET` shows everything in force.
//!
//! Invariants: a delay never extends a call's deadline: the wrapped call gets what is left of
//! the timeout after the delay, and a delay at or beyond the timeout fails the call as a
//! timeout would, without sending it. A dropped call is never sent. With nothing set the
//! wrapper only forwards. Limits: delays and jitters at most [`DELAY_MS_MAX`], loss in
//! `0..=1`, region names 1 to [`REGION_BYTES_MAX`] bytes, at most [`WAN_RULES_MAX`] rules, one
//! per region; a refused setting changes nothing (`400` with the reason). Only traffic through
//! the node's [`PeerClient`] (replication, forwarding, hinted handoff, anti-entropy, transfers,
//! the reaper) is affected: Raft layout messages and UDP gossip use their own paths.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use yeskv_rpc::Call;

use crate::peer::{CallFuture, PeerClient, PeerRequest, PeerResponse};

/// Largest delay and largest jitter accepted, in milliseconds (global and per rule).
pub const DELAY_MS_MAX: u64 = 60_000;
/// Most WAN rules one node holds: one per destination region, and a layout names at most 8
/// regions.
pub const WAN_RULES_MAX: usize = 8;
/// Most `[chaos] wan` links in a config file: [`WAN_RULES_MAX`] from each of 8 regions.
pub const WAN_LINKS_MAX: usize = 64;
/// Longest region name in a rule, in bytes (as for a node's `region`).
pub const REGION_BYTES_MAX: usize = 64;
/// Longest a dropped call waits before it fails, in milliseconds (the default
/// `server.rpc_timeout_ms`); a call with a shorter timeout waits its timeout.
pub const DROP_WAIT_MS_MAX: u64 = 2_000;

/// The region of the node at an internode address, if known (built by the server from the
/// layout; tests use a fixed map).
pub type RegionOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What to do to calls from this node to the nodes of one region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanRule {
    /// The destination region.
    pub to: String,
    /// Fixed delay added to each call to that region, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Extra random delay, uniform in `0..=jitter_ms`, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability (`0..=1`) that a call to that region is dropped (see the module docs).
    #[serde(default)]
    pub loss: f64,
}

/// One directional WAN link of the config file (`[chaos] wan`): the rule that nodes of region
/// `from` apply to their calls to region `to`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanLink {
    /// The region whose nodes apply this link.
    pub from: String,
    /// The destination region.
    pub to: String,
    /// See [`WanRule::delay_ms`].
    #[serde(default)]
    pub delay_ms: u64,
    /// See [`WanRule::jitter_ms`].
    #[serde(default)]
    pub jitter_ms: u64,
    /// See [`WanRule::loss`].
    #[serde(default)]
    pub loss: f64,
}

impl WanLink {
    /// The rule a node of region `from` applies.
    pub fn rule(&self) -> WanRule {
        WanRule {
            to: self.to.clone(),
            delay_ms: self.delay_ms,
            jitter_ms: self.jitter_ms,
            loss: self.loss,
        }
    }
}

/// Checks a region name of a rule or link.
fn check_region(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > REGION_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(format!(
            "{what} must be a region name of 1 to {REGION_BYTES_MAX} bytes without control \
             characters, got {name:?}"
        ));
    }
    Ok(())
}

/// Checks one delay and jitter pair.
fn check_delay(delay_ms: u64, jitter_ms: u64) -> Result<(), String> {
    if delay_ms > DELAY_MS_MAX || jitter_ms > DELAY_MS_MAX {
        return Err(format!(
            "delay_ms and jitter_ms must be at most {DELAY_MS_MAX}"
        ));
    }
    Ok(())
}

/// Checks one rule: its region, delays and loss.
fn check_rule(rule: &WanRule) -> Result<(), String> {
    check_region("to", &rule.to)?;
    check_delay(rule.delay_ms, rule.jitter_ms)?;
    if !(rule.loss.is_finite() && (0.0..=1.0).contains(&rule.loss)) {
        return Err(format!("loss must be between 0 and 1, got {}", rule.loss));
    }
    Ok(())
}

/// Checks a list of rules: each valid, at most [`WAN_RULES_MAX`], one per region.
fn check_rule_list(rules: &[WanRule]) -> Result<(), String> {
    if rules.len() > WAN_RULES_MAX {
        return Err(format!(
            "at most {WAN_RULES_MAX} rules, got {}",
            rules.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for rule in rules {
        check_rule(rule)?;
        if !seen.insert(rule.to.as_str()) {
            return Err(format!("region {:?} named twice", rule.to));
        }
    }
    Ok(())
}

/// Checks the rules one node holds: each valid, at most [`WAN_RULES_MAX`], one per region.
pub fn check_rules(rules: &[WanRule]) -> Result<(), String> {
    check_rule_list(rules).map_err(|e| format!("wan: {e}"))
}

/// Checks the links of a config file: at most [`WAN_LINKS_MAX`], each `from` valid, and the
/// rules of each `from` region valid as [`check_rules`] says.
pub fn check_links(links: &[WanLink]) -> Result<(), String> {
    if links.len() > WAN_LINKS_MAX {
        return Err(format!(
            "wan: at most {WAN_LINKS_MAX} links, got {}",
            links.len()
        ));
    }
    let froms: BTreeSet<&str> = links.iter().map(|l| l.from.as_str()).collect();
    for from in froms {
        check_region("wan from", from)?;
        check_rule_list(&rules_from(links, from)).map_err(|e| format!("wan from {from:?}: {e}"))?;
    }
    Ok(())
}

/// The rules a node of `region` applies: the links from it.
pub fn rules_from(links: &[WanLink], region: &str) -> Vec<WanRule> {
    links
        .iter()
        .filter(|l| l.from == region)
        .map(WanLink::rule)
        .collect()
}

/// The settings in force; shared by the wrapper and the admin endpoint.
#[derive(Debug, Default)]
pub struct ChaosControl {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
    wan: RwLock<Arc<[WanRule]>>,
}

/// Body of `POST /v1/admin/chaos` and answer of both methods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSettings {
    /// Fixed delay before every outgoing internode call, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Extra random delay, uniform in `0..=jitter_ms`, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
    /// The WAN rules: in a `POST`, absent leaves the rules in force as they are and a list
    /// replaces them (`[]` clears them); in an answer, always the rules in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan: Option<Vec<WanRule>>,
}

/// What happens to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Sent after this delay.
    Send(Duration),
    /// Never sent; fails as a timeout.
    Drop,
}

/// A uniform draw in `delay_ms..=delay_ms + jitter_ms`.
fn draw(delay_ms: u64, jitter_ms: u64) -> Duration {
    let jitter = if jitter_ms == 0 {
        0
    } else {
        rand::random_range(0..=jitter_ms)
    };
    Duration::from_millis(delay_ms + jitter)
}

impl ChaosControl {
    /// The settings in force.
    pub fn settings(&self) -> ChaosSettings {
        ChaosSettings {
            delay_ms: self.delay_ms.load(Ordering::Relaxed),
            jitter_ms: self.jitter_ms.load(Ordering::Relaxed),
            wan: Some(self.wan.read().to_vec()),
        }
    }

    /// Replaces the settings (the WAN rules only when `s.wan` is given); refuses values out
    /// of bounds (module docs), changing nothing then.
    pub fn set(&self, s: &ChaosSettings) -> Result<(), crate::error::Error> {
        let bad = crate::error::Error::BadRequest;
        check_delay(s.delay_ms, s.jitter_ms).map_err(bad)?;
        if let Some(rules) = &s.wan {
            check_rules(rules).map_err(bad)?;
            *self.wan.write() = Arc::from(rules.clone());
        }
        self.delay_ms.store(s.delay_ms, Ordering::Relaxed);
        self.jitter_ms.store(s.jitter_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Replaces the WAN rules alone (the config's, at start); refuses them as [`Self::set`]
    /// does.
    pub fn set_wan(&self, rules: Vec<WanRule>) -> Result<(), crate::error::Error> {
        check_rules(&rules).map_err(crate::error::Error::BadRequest)?;
        *self.wan.write() = Arc::from(rules);
        Ok(())
    }

    /// The fate of one call to a node of the region `region` returns (asked only when a WAN
    /// rule is in force): the global delay, plus the rule's delay, or a drop.
    fn fate(&self, region: impl FnOnce() -> Option<String>) -> Fate {
        let mut delay = draw(
            self.delay_ms.load(Ordering::Relaxed),
            self.jitter_ms.load(Ordering::Relaxed),
        );
        let rules = self.wan.read().clone();
        if rules.is_empty() {
            return Fate::Send(delay);
        }
        let Some(region) = region() else {
            return Fate::Send(delay);
        };
        if let Some(rule) = rules.iter().find(|r| r.to == region) {
            if rule.loss > 0.0 && rand::random::<f64>() < rule.loss {
                return Fate::Drop;
            }
            delay += draw(rule.delay_ms, rule.jitter_ms);
        }
        Fate::Send(delay)
    }
}

/// A [`PeerClient`] that applies [`ChaosControl`]'s settings to each call.
pub struct ChaosPeers {
    inner: Arc<dyn PeerClient>,
    control: Arc<ChaosControl>,
    region_of: RegionOf,
}

impl ChaosPeers {
    /// Wraps `inner`; the settings are whatever `control` holds at each call, and a call's
    /// destination region is `region_of` its address.
    pub fn new(
        inner: Arc<dyn PeerClient>,
        control: Arc<ChaosControl>,
        region_of: RegionOf,
    ) -> Self {
        ChaosPeers {
            inner,
            control,
            region_of,
        }
    }
}

/// The error of a call that did not make its deadline.
fn timed_out(timeout: Duration) -> yeskv_rpc::Error {
    yeskv_rpc::Error::Timeout {
        timeout_ms: timeout.as_millis() as u64,
    }
}

impl Call<PeerRequest, PeerResponse> for ChaosPeers {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: PeerRequest,
        timeout: Duration,
    ) -> CallFuture<'a> {
        Box::pin(async move {
            match self.control.fate(|| (self.region_of)(addr)) {
                Fate::Drop => {
                    tracing::debug!(addr, "chaos: call dropped");
                    tokio::time::sleep(timeout.min(Duration::from_millis(DROP_WAIT_MS_MAX))).await;
                    Err(timed_out(timeout))
                }
                Fate::Send(delay) if delay.is_zero() => {
                    self.inner.call(addr, request, timeout).await
                }
                Fate::Send(delay) if delay >= timeout => {
                    // Delayed past its deadline: the call times out without being sent.
                    tokio::time::sleep(timeout).await;
                    Err(timed_out(timeout))
                }
                Fate::Send(delay) => {
                    tokio::time::sleep(delay).await;
                    self.inner.call(addr, request, timeout - delay).await
                }
            }
        })
    }
}

/// `GET /v1/admin/chaos` (the settings in force) and `POST /v1/admin/chaos` (replace them).
pub fn routes(control: Arc<ChaosControl>) -> Router {
    Router::new()
        .route("/v1/admin/chaos", get(show).post(set))
        .with_state(control)
}

async fn show(State(control): State<Arc<ChaosControl>>) -> Json<ChaosSettings> {
    Json(control.settings())
}

fn bad_request(reason: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": reason })),
    )
        .into_response()
}

async fn set(
    State(control): State<Arc<ChaosControl>>,
    body: Result<Json<ChaosSettings>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let settings = match body {
        Ok(Json(settings)) => settings,
        Err(e) => {
            return bad_request(format!(
                "body must be {{\"delay_ms\": N, \"jitter_ms\": N, \"wan\": [{{\"to\": REGION, \
                 \"delay_ms\": N, \"jitter_ms\": N, \"loss\": P}}]}} (each optional): {}",
                e.body_text()
            ))
        }
    };
    match control.set(&settings) {
        Ok(()) => {
            let now = control.settings();
            tracing::warn!(
                delay_ms = now.delay_ms,
                jitter_ms = now.jitter_ms,
                wan = %serde_json::to_string(&now.wan).unwrap_or_default(),
                "chaos: outgoing internode delay set"
            );
            Json(now).into_response()
        }
        Err(e) => bad_request(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// Answers every call at once and counts the calls and the deadlines it was given.
    struct Immediate {
        calls: AtomicUsize,
        last_timeout_ms: AtomicU64,
    }

    impl Call<PeerRequest, PeerResponse> for Immediate {
        fn call<'a>(
            &'a self,
            _addr: &'a str,
            _request: PeerRequest,
            timeout: Duration,
        ) -> CallFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.last_timeout_ms
                .store(timeout.as_millis() as u64, Ordering::SeqCst);
            Box::pin(async {
                Err(yeskv_rpc::Error::Remote {
                    reason: "answered".to_string(),
                })
            })
        }
    }

    /// `R1` is a node of region r1, `R2` one of r2; any other address is unknown.
    const R1: &str = "10.0.0.1:7000";
    const R2: &str = "10.0.0.2:7000";

    fn wrapped() -> (Arc<Immediate>, Arc<ChaosControl>, ChaosPeers) {
        let inner = Arc::new(Immediate {
            calls: AtomicUsize::new(0),
            last_timeout_ms: AtomicU64::new(0),
        });
        let control = Arc::new(ChaosControl::default());
        let region_of: RegionOf = Arc::new(|addr: &str| match addr {
            R1 => Some("r1".to_string()),
            R2 => Some("r2".to_string()),
            _ => None,
        });
        let peers = ChaosPeers::new(inner.clone(), control.clone(), region_of);
        (inner, control, peers)
    }

    fn request() -> PeerRequest {
        PeerRequest::Replication(crate::replication::ReplicationRequest::Read {
            storage_key: b"k".to_vec(),
        })
    }

    fn delay(delay_ms: u64, jitter_ms: u64) -> ChaosSettings {
        ChaosSettings {
            delay_ms,
            jitter_ms,
            wan: None,
        }
    }

    fn rule(to: &str, delay_ms: u64, jitter_ms: u64, loss: f64) -> WanRule {
        WanRule {
            to: to.to_string(),
            delay_ms,
            jitter_ms,
            loss,
        }
    }

    fn wan(rules: Vec<WanRule>) -> ChaosSettings {
        ChaosSettings {
            wan: Some(rules),
            ..ChaosSettings::default()
        }
    }

    fn answered(r: &Result<PeerResponse, yeskv_rpc::Error>) -> bool {
        matches!(r, Err(yeskv_rpc::Error::Remote { reason }) if reason == "answered")
    }

    #[tokio::test]
    async fn delay_is_waited_and_taken_from_the_deadline() {
        let (inner, control, peers) = wrapped();
        control.set(&delay(300, 0)).expect("in range");
        let before = Instant::now();
        let r = peers.call(R1, request(), Duration::from_millis(1000)).await;
        assert!(answered(&r), "{r:?}");
        assert!(before.elapsed() >= Duration::from_millis(300));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(inner.last_timeout_ms.load(Ordering::SeqCst), 700);
    }

    #[tokio::test]
    async fn delay_past_the_deadline_fails_without_sending() {
        let (inner, control, peers) = wrapped();
        control.set(&delay(5000, 0)).expect("in range");
        let before = Instant::now();
        let r = peers.call(R1, request(), Duration::from_millis(200)).await;
        assert!(
            matches!(r, Err(yeskv_rpc::Error::Timeout { timeout_ms: 200 })),
            "{r:?}"
        );
        let waited = before.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_millis(5000));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn zero_forwards_untouched_and_limits_hold() {
        let (inner, control, peers) = wrapped();
        let before = Instant::now();
        let _ = peers.call(R1, request(), Duration::from_millis(1000)).await;
        assert!(before.elapsed() < Duration::from_millis(100));
        assert_eq!(inner.last_timeout_ms.load(Ordering::SeqCst), 1000);
        assert!(control.set(&delay(DELAY_MS_MAX + 1, 0)).is_err());
        assert_eq!(control.settings(), wan(Vec::new()));
    }

    #[tokio::test]
    async fn a_rule_to_r2_delays_calls_to_r2_only_on_top_of_the_global_delay() {
        let (inner, control, peers) = wrapped();
        control
            .set(&ChaosSettings {
                delay_ms: 100,
                jitter_ms: 0,
                wan: Some(vec![rule("r2", 250, 0, 0.0)]),
            })
            .expect("in range");
        // To r1 (and to an address no region is known for): the global delay only.
        for addr in [R1, "10.0.0.9:7000"] {
            let before = Instant::now();
            let r = peers
                .call(addr, request(), Duration::from_millis(1000))
                .await;
            let took = before.elapsed();
            assert!(answered(&r), "{r:?}");
            assert!(
                took >= Duration::from_millis(100) && took < Duration::from_millis(340),
                "{addr}: {took:?}"
            );
            assert_eq!(inner.last_timeout_ms.load(Ordering::SeqCst), 900);
        }
        // To r2: both, added up, and taken from the deadline.
        let before = Instant::now();
        let r = peers.call(R2, request(), Duration::from_millis(1000)).await;
        assert!(answered(&r), "{r:?}");
        assert!(before.elapsed() >= Duration::from_millis(350));
        assert_eq!(inner.last_timeout_ms.load(Ordering::SeqCst), 650);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn loss_one_never_sends_and_waits_at_most_the_bound() {
        let (inner, control, peers) = wrapped();
        control
            .set(&wan(vec![rule("r2", 0, 0, 1.0)]))
            .expect("in range");
        for _ in 0..50 {
            let r = peers.call(R2, request(), Duration::from_millis(5)).await;
            assert!(
                matches!(r, Err(yeskv_rpc::Error::Timeout { timeout_ms: 5 })),
                "{r:?}"
            );
        }
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            0,
            "a dropped call is never sent"
        );
        // A long deadline waits the bound, not the deadline.
        let before = Instant::now();
        let r = peers.call(R2, request(), Duration::from_secs(30)).await;
        let waited = before.elapsed();
        assert!(matches!(r, Err(yeskv_rpc::Error::Timeout { .. })), "{r:?}");
        assert!(
            waited >= Duration::from_millis(DROP_WAIT_MS_MAX)
                && waited < Duration::from_millis(DROP_WAIT_MS_MAX + 1000),
            "{waited:?}"
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
        // Other regions are untouched.
        let r = peers.call(R1, request(), Duration::from_millis(5)).await;
        assert!(answered(&r), "{r:?}");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn partial_loss_drops_some_calls_and_sends_the_rest() {
        let (inner, control, peers) = wrapped();
        control
            .set(&wan(vec![rule("r2", 0, 0, 0.5)]))
            .expect("in range");
        let mut dropped = 0;
        for _ in 0..400 {
            match peers.call(R2, request(), Duration::from_millis(1)).await {
                Err(yeskv_rpc::Error::Timeout { .. }) => dropped += 1,
                r => assert!(answered(&r), "{r:?}"),
            }
        }
        let sent = inner.calls.load(Ordering::SeqCst);
        assert_eq!(sent + dropped, 400);
        // Binomial(400, 0.5): outside 120..=280 has a probability below 1e-15.
        assert!((120..=280).contains(&sent), "sent {sent} of 400");
    }

    #[test]
    fn a_post_without_wan_keeps_the_rules_and_an_empty_list_clears_them() {
        let control = ChaosControl::default();
        control
            .set(&wan(vec![rule("r2", 40, 5, 0.01)]))
            .expect("in range");
        control.set(&delay(10, 0)).expect("in range");
        let now = control.settings();
        assert_eq!(now.delay_ms, 10);
        assert_eq!(now.wan, Some(vec![rule("r2", 40, 5, 0.01)]));
        control.set(&wan(Vec::new())).expect("clears");
        assert_eq!(control.settings(), wan(Vec::new()));
    }

    #[test]
    fn bad_settings_are_refused_and_change_nothing() {
        let control = ChaosControl::default();
        let good = ChaosSettings {
            delay_ms: 7,
            jitter_ms: 3,
            wan: Some(vec![rule("r2", 40, 5, 0.0)]),
        };
        control.set(&good).expect("in range");
        let nine: Vec<WanRule> = (0..9).map(|i| rule(&format!("r{i}"), 1, 0, 0.0)).collect();
        let bad = [
            (delay(DELAY_MS_MAX + 1, 0), "at most"),
            (delay(0, DELAY_MS_MAX + 1), "at most"),
            (wan(vec![rule("r3", DELAY_MS_MAX + 1, 0, 0.0)]), "at most"),
            (wan(vec![rule("r3", 0, DELAY_MS_MAX + 1, 0.0)]), "at most"),
            (wan(vec![rule("r3", 0, 0, 1.5)]), "between 0 and 1"),
            (wan(vec![rule("r3", 0, 0, -0.1)]), "between 0 and 1"),
            (wan(vec![rule("r3", 0, 0, f64::NAN)]), "between 0 and 1"),
            (wan(vec![rule("", 0, 0, 0.0)]), "region name"),
            (wan(vec![rule(&"r".repeat(65), 0, 0, 0.0)]), "region name"),
            (wan(vec![rule("r\n3", 0, 0, 0.0)]), "region name"),
            (wan(nine), "at most 8"),
            (
                wan(vec![rule("r3", 1, 0, 0.0), rule("r3", 2, 0, 0.0)]),
                "twice",
            ),
            // The delay is fine, the rules are not: nothing is taken, not even the delay.
            (
                ChaosSettings {
                    delay_ms: 500,
                    jitter_ms: 0,
                    wan: Some(vec![rule("r3", 0, 0, 2.0)]),
                },
                "between 0 and 1",
            ),
        ];
        for (settings, why) in bad {
            let e = control.set(&settings).expect_err("refused").to_string();
            assert!(e.contains(why), "{settings:?}: {e}");
            assert_eq!(control.settings(), good, "{settings:?} changed something");
        }
        // At the limits: taken.
        let eight: Vec<WanRule> = (0..8)
            .map(|i| rule(&format!("r{i}"), DELAY_MS_MAX, DELAY_MS_MAX, 1.0))
            .collect();
        control.set(&wan(eight)).expect("at the limits");
    }

    #[test]
    fn unknown_fields_are_refused_by_the_body_type() {
        for body in [
            r#"{"drop": 1}"#,
            r#"{"wan": [{"to": "r2", "delay": 40}]}"#,
            r#"{"wan": [{"from": "r1", "to": "r2"}]}"#,
            r#"{"wan": [{"delay_ms": 40}]}"#,
        ] {
            assert!(
                serde_json::from_str::<ChaosSettings>(body).is_err(),
                "{body} should be refused"
            );
        }
        let taken: ChaosSettings =
            serde_json::from_str(r#"{"wan": [{"to": "r2", "delay_ms": 40}]}"#).expect("parses");
        assert_eq!(taken.wan, Some(vec![rule("r2", 40, 0, 0.0)]));
        assert_eq!(taken.delay_ms, 0);
    }

    #[test]
    fn config_links_apply_from_their_own_region_only() {
        let link = |from: &str, to: &str, delay_ms| WanLink {
            from: from.into(),
            to: to.into(),
            delay_ms,
            ..WanLink::default()
        };
        let links = vec![
            link("r1", "r2", 40),
            link("r2", "r1", 41),
            link("r1", "r3", 42),
        ];
        check_links(&links).expect("valid");
        assert_eq!(
            rules_from(&links, "r1"),
            vec![rule("r2", 40, 0, 0.0), rule("r3", 42, 0, 0.0)]
        );
        assert_eq!(rules_from(&links, "r2"), vec![rule("r1", 41, 0, 0.0)]);
        assert!(rules_from(&links, "r3").is_empty());
        // The same link twice, a bad `from`, too many links: refused.
        let twice = vec![link("r1", "r2", 40), link("r1", "r2", 50)];
        assert!(check_links(&twice).expect_err("twice").contains("twice"));
        assert!(check_links(&[link("", "r2", 1)])
            .expect_err("empty from")
            .contains("wan from"));
        let many: Vec<WanLink> = (0..=WAN_LINKS_MAX)
            .map(|i| link(&format!("a{i}"), "b", 1))
            .collect();
        assert!(check_links(&many).is_err());
    }
}
