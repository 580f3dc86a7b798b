//! Reading a request's body: the one place that bounds it in size, time and memory.
//!
//! Every handler that takes a body (`/v1/kv` values, `/v1/dt` operations, bucket properties)
//! reads it with [`read`], which
//!
//! - refuses a body over the handler's limit with `413` — after **draining** what the client
//!   declared (up to [`DRAIN_BYTES_MAX`], within the body timeout), because clients that send
//!   the whole body before reading the answer (Python's `urllib` and `requests`, curl without
//!   `Expect`) otherwise see the connection reset under them instead of the `413` and its
//!   reason; a larger one is answered at once and the connection closed;
//! - takes room for the body from the node's **in-flight byte budget**
//!   (`server.http_inflight_bytes_max`) before reading it, and keeps it until the handler is
//!   done with the bytes ([`Body`] holds it), so many large uploads at once wait instead of
//!   exhausting memory (`503` if no room frees up within the body timeout);
//! - gives the body `server.http_body_timeout_ms` to arrive (`408` past it), so a client
//!   trickling a body holds nothing for long. (Headers have their own timeout, set on the
//!   connection: `server.rs`.)

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Most bytes drained from a body over its limit so that the client reads the `413`; past it
/// the node answers at once and closes the connection.
pub const DRAIN_BYTES_MAX: u64 = 64 << 20;

/// The node-wide bounds on request bodies (see the module docs).
#[derive(Clone)]
pub struct BodyLimits {
    /// Time for a body to arrive once its headers did.
    pub timeout: Duration,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

impl BodyLimits {
    /// Bodies get `timeout` to arrive and share `inflight_bytes_max` bytes.
    pub fn new(timeout: Duration, inflight_bytes_max: usize) -> Self {
        // A semaphore counts at most `Semaphore::MAX_PERMITS` (2^61): far above any budget.
        let budget_bytes = inflight_bytes_max.min(Semaphore::MAX_PERMITS);
        BodyLimits {
            timeout,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        }
    }

    /// Bytes of the budget free now (for `/metrics` and tests).
    pub fn available(&self) -> usize {
        self.budget.available_permits()
    }
}

/// A request body read in full, holding its room in the in-flight budget until dropped.
pub struct Body {
    bytes: Bytes,
    _room: Option<OwnedSemaphorePermit>,
}

impl Deref for Body {
    type Target = Bytes;
    fn deref(&self) -> &Bytes {
        &self.bytes
    }
}

/// The declared `Content-Length`, if any and valid.
fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads `body` of at most `limit` bytes (`what` names it in errors: "value", "operation"):
/// see the module docs.
pub async fn read(
    limits: &BodyLimits,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    what: &str,
) -> Result<Body, Error> {
    let declared = declared_len(headers);
    if let Some(len) = declared.filter(|len| *len > limit as u64) {
        if len <= DRAIN_BYTES_MAX {
            drain(body, limits.timeout).await;
        }
        return Err(Error::TooLarge(format!(
            "{what} is {len} bytes, limit {limit}"
        )));
    }
    // Room for what was declared, or for the limit when nothing was (chunked).
    let room = declared
        .map_or(limit, |len| len as usize)
        .min(limits.budget_bytes);
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let permit = if room == 0 {
        None
    } else {
        let acquire = limits.budget.clone().acquire_many_owned(room as u32);
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_closed)) => return Err(Error::NotServing("shutting down")),
            Err(_elapsed) => {
                return Err(Error::Busy(format!(
                "request bodies in flight fill server.http_inflight_bytes_max ({} bytes); retry",
                limits.budget_bytes
            )))
            }
        }
    };
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Ok(Ok(collected)) => Ok(Body {
            bytes: collected.to_bytes(),
            _room: permit,
        }),
        Ok(Err(error)) => {
            if error.is::<http_body_util::LengthLimitError>() {
                Err(Error::TooLarge(format!(
                    "{what} exceeds the limit of {limit} bytes"
                )))
            } else {
                Err(Error::BadRequest(format!("reading the {what}: {error}")))
            }
        }
        Err(_elapsed) => Err(Error::BodyTimeout(format!(
            "the {what} did not arrive within server.http_body_timeout_ms ({} ms)",
            limits.timeout.as_millis()
        ))),
    }
}

/// Reads and drops what is left of `body`, for at most `timeout` and [`DRAIN_BYTES_MAX`].
async fn drain(body: axum::body::Body, timeout: Duration) {
    let mut body = http_body_util::Limited::new(body, DRAIN_BYTES_MAX as usize);
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_frame)) = body.frame().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(len: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(len) = len {
            h.insert(
                header::CONTENT_LENGTH,
                len.to_string().parse().expect("value"),
            );
        }
        h
    }

    #[tokio::test]
    async fn bodies_are_bounded_in_size_time_and_memory() {
        let limits = BodyLimits::new(Duration::from_millis(200), 100);
        // Within the limit: read, holding its room until dropped.
        let body = read(
            &limits,
            &headers(Some(10)),
            "0123456789".into(),
            50,
            "value",
        )
        .await
        .expect("reads");
        assert_eq!(&body[..], b"0123456789");
        assert_eq!(limits.available(), 90);
        drop(body);
        assert_eq!(limits.available(), 100);
        // Declared over the limit: 413 naming it.
        let big = vec![b'x'; 60];
        let refused = read(&limits, &headers(Some(60)), big.clone().into(), 50, "value").await;
        assert!(
            matches!(&refused, Err(Error::TooLarge(m)) if m.contains("60 bytes")),
            "{:?}",
            refused.err()
        );
        // Undeclared (chunked) and over the limit: 413 too.
        let refused = read(&limits, &headers(None), big.into(), 50, "value").await;
        assert!(matches!(refused, Err(Error::TooLarge(_))));
        assert_eq!(limits.available(), 100, "no room kept by refused bodies");
        // No room in the budget within the timeout: 503 (Busy), nothing read.
        let held = read(
            &limits,
            &headers(Some(95)),
            vec![0u8; 95].into(),
            100,
            "value",
        )
        .await
        .expect("reads");
        let starved = read(
            &limits,
            &headers(Some(10)),
            vec![0u8; 10].into(),
            100,
            "value",
        )
        .await;
        assert!(
            matches!(starved, Err(Error::Busy(_))),
            "{:?}",
            starved.err()
        );
        drop(held);
        // A body that never ends: 408 by the timeout.
        let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let slow = axum::body::Body::from_stream(never);
        let timed_out = read(&limits, &headers(Some(5)), slow, 50, "value").await;
        assert!(
            matches!(timed_out, Err(Error::BodyTimeout(_))),
            "{:?}",
            timed_out.err()
        );
        assert_eq!(limits.available(), 100);
    }
}
