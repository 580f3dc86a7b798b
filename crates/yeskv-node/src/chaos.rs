//! Test-only fault injection in the node's own transport: a delay (plus random jitter) on every
//! outgoing internode call the coordinator makes, set at runtime over HTTP.
//!
//! This kernel-independent delay exists for the real-process chaos runner (`scripts/chaos`,
//! crate `yeskv-chaos`): network namespaces and nftables can drop packets but not delay them
//! without netem. It is off unless the node's configuration says `[chaos] enabled = true`; only
//! then does [`crate::server`] wrap the coordinator's [`PeerClient`] in a [`ChaosPeers`] and
//! mount [`routes`] (`GET`/`POST /v1/admin/chaos`). A production node never has either.
//!
//! Invariants: a delay never extends a call's deadline: the wrapped call gets what is left of
//! the timeout after the delay, and a delay at or beyond the timeout fails the call as a
//! timeout would, without sending it. With delay and jitter 0 the wrapper only forwards.
//! Settings are bounded by [`DELAY_MS_MAX`]. Only the coordinator's replica traffic (reads,
//! writes) is delayed: Raft layout messages and UDP gossip use their own paths.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use yeskv_rpc::Call;

use crate::peer::{CallFuture, PeerClient, PeerRequest, PeerResponse};

/// Largest delay and largest jitter accepted, in milliseconds.
pub const DELAY_MS_MAX: u64 = 60_000;

/// The current injected delay; shared by the wrapper and the admin endpoint.
#[derive(Debug, Default)]
pub struct ChaosControl {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

/// Body of `POST /v1/admin/chaos` and answer of both methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSettings {
    /// Fixed delay before every outgoing internode call, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Extra random delay, uniform in `0..=jitter_ms`, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
}

impl ChaosControl {
    /// The settings in force.
    pub fn settings(&self) -> ChaosSettings {
        ChaosSettings {
            delay_ms: self.delay_ms.load(Ordering::Relaxed),
            jitter_ms: self.jitter_ms.load(Ordering::Relaxed),
        }
    }

    /// Replaces the settings; refuses values above [`DELAY_MS_MAX`].
    pub fn set(&self, s: ChaosSettings) -> Result<(), crate::error::Error> {
        if s.delay_ms > DELAY_MS_MAX || s.jitter_ms > DELAY_MS_MAX {
            return Err(crate::error::Error::BadRequest(format!(
                "delay_ms and jitter_ms must be at most {DELAY_MS_MAX}"
            )));
        }
        self.delay_ms.store(s.delay_ms, Ordering::Relaxed);
        self.jitter_ms.store(s.jitter_ms, Ordering::Relaxed);
        Ok(())
    }

    /// The delay for one call: the fixed part plus a uniform draw of the jitter.
    fn draw(&self) -> Duration {
        let s = self.settings();
        let jitter = if s.jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=s.jitter_ms)
        };
        Duration::from_millis(s.delay_ms + jitter)
    }
}

/// A [`PeerClient`] that waits [`ChaosControl`]'s delay before each call.
pub struct ChaosPeers {
    inner: Arc<dyn PeerClient>,
    control: Arc<ChaosControl>,
}

impl ChaosPeers {
    /// Wraps `inner`; the delay is whatever `control` holds at each call.
    pub fn new(inner: Arc<dyn PeerClient>, control: Arc<ChaosControl>) -> Self {
        ChaosPeers { inner, control }
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
            let delay = self.control.draw();
            if delay.is_zero() {
                return self.inner.call(addr, request, timeout).await;
            }
            if delay >= timeout {
                // Delayed past its deadline: the call times out without being sent.
                tokio::time::sleep(timeout).await;
                return Err(yeskv_rpc::Error::Timeout {
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(delay).await;
            self.inner.call(addr, request, timeout - delay).await
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

async fn set(
    State(control): State<Arc<ChaosControl>>,
    body: Result<Json<ChaosSettings>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(settings)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "body must be {\"delay_ms\": N, \"jitter_ms\": N}"})),
        )
            .into_response();
    };
    match control.set(settings) {
        Ok(()) => {
            tracing::warn!(
                delay_ms = settings.delay_ms,
                jitter_ms = settings.jitter_ms,
                "chaos: outgoing internode delay set"
            );
            Json(control.settings()).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

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

    fn wrapped() -> (Arc<Immediate>, Arc<ChaosControl>, ChaosPeers) {
        let inner = Arc::new(Immediate {
            calls: AtomicUsize::new(0),
            last_timeout_ms: AtomicU64::new(0),
        });
        let control = Arc::new(ChaosControl::default());
        let peers = ChaosPeers::new(inner.clone(), control.clone());
        (inner, control, peers)
    }

    fn request() -> PeerRequest {
        PeerRequest::Replication(crate::replication::ReplicationRequest::Read {
            storage_key: b"k".to_vec(),
        })
    }

    #[tokio::test]
    async fn delay_is_waited_and_taken_from_the_deadline() {
        let (inner, control, peers) = wrapped();
        control
            .set(ChaosSettings {
                delay_ms: 300,
                jitter_ms: 0,
            })
            .expect("in range");
        let before = tokio::time::Instant::now();
        let r = peers
            .call("10.0.0.1:7000", request(), Duration::from_millis(1000))
            .await;
        assert!(
            matches!(r, Err(yeskv_rpc::Error::Remote { ref reason }) if reason == "answered"),
            "{r:?}"
        );
        assert!(before.elapsed() >= Duration::from_millis(300));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        assert_eq!(inner.last_timeout_ms.load(Ordering::SeqCst), 700);
    }

    #[tokio::test]
    async fn delay_past_the_deadline_fails_without_sending() {
        let (inner, control, peers) = wrapped();
        control
            .set(ChaosSettings {
                delay_ms: 5000,
                jitter_ms: 0,
            })
            .expect("in range");
        let before = tokio::time::Instant::now();
        let r = peers
            .call("10.0.0.1:7000", request(), Duration::from_millis(200))
            .await;
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
        let before = tokio::time::Instant::now();
        let _ = peers
            .call("10.0.0.1:7000", request(), Duration::from_millis(1000))
            .await;
        assert!(before.elapsed() < Duration::from_millis(100));
        assert_eq!(inner.last_timeout_ms.load(Ordering::SeqCst), 1000);
        assert!(control
            .set(ChaosSettings {
                delay_ms: DELAY_MS_MAX + 1,
                jitter_ms: 0
            })
            .is_err());
        assert_eq!(control.settings(), ChaosSettings::default());
    }
}
