//! Cross-origin requests (CORS): lets a page served by one node (the console at `/ui`) read
//! the answers of the other members (`/v1/status`, `/metrics`, …).
//!
//! This module owns the CORS headers of every answer of the client API. It is an axum
//! middleware layered *outside* the API key check ([`crate::auth::require`]), because a
//! browser's preflight (`OPTIONS` with `Access-Control-Request-Method`) never carries the
//! `Authorization` header: it asks whether the real request may be sent, and only then does
//! the page's script send it, key included. So:
//!
//! - a preflight is answered here, `204` with the allowed methods and headers, without a key
//!   and without reaching a handler (it reads and writes nothing);
//! - every other request (a non-preflight `OPTIONS` included) goes on unchanged, through the
//!   key check, and its answer gets `Access-Control-Allow-Origin: *` and the headers the page
//!   may read (`X-Causal-Context`, `X-Yeskv-Layout-Version`).
//!
//! Only the cluster's own pages are let in: an origin is allowed when it is `http://` or
//! `https://` followed by the HTTP address of a member of the layout (or of this node), the
//! address the console of that member is served from; the answer then names that origin
//! (`Access-Control-Allow-Origin: ORIGIN`, `Vary: Origin`). Any other origin gets no CORS
//! header, so a browser keeps the answer from the page. That matters for a node without API
//! keys: a page from anywhere, opened by someone whose browser can reach the node, could
//! otherwise read it. No cookie or other ambient credential is ever accepted, and
//! `Access-Control-Allow-Credentials` is never sent; `docs/security.md` says the same.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Whether a page of an origin's `HOST:PORT` may read answers: one of the cluster's members'
/// HTTP addresses.
pub type Origins = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// `Access-Control-Allow-Methods` of a preflight: the methods the API serves.
pub const ALLOW_METHODS: &str = "GET, HEAD, PUT, POST, DELETE";
/// `Access-Control-Allow-Headers` of a preflight: the request headers a page may send.
pub const ALLOW_HEADERS: &str = "authorization, accept, content-type, x-causal-context";
/// `Access-Control-Expose-Headers`: the answer headers a page's script may read.
pub const EXPOSE_HEADERS: &str = "x-causal-context, x-yeskv-layout-version";
/// `Access-Control-Max-Age`: how long, in seconds, a browser may reuse a preflight's answer
/// (Chromium caps it at 7200), so a page polling every few seconds sends one preflight per
/// URL per 10 minutes, not one per poll.
pub const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// The `Origin` of `request` if it is allowed: `http://` or `https://` and an address that
/// `origins` accepts.
fn allowed_origin(request: &Request, origins: &Origins) -> Option<HeaderValue> {
    let origin = request.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let addr = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))?;
    origins(addr).then(|| origin.clone())
}

/// Whether `request` is a CORS preflight: `OPTIONS` asking about another method.
fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The axum middleware: answers a preflight itself (`204`, no key needed; the CORS headers
/// only for an allowed origin) and adds `Access-Control-Allow-Origin` and
/// `Access-Control-Expose-Headers` to every other answer to an allowed origin.
pub async fn cors(
    axum::extract::State(origins): axum::extract::State<Origins>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = allowed_origin(&request, &origins);
    if is_preflight(&request) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        let Some(origin) = allowed else {
            return response;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_SECS),
        );
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    let Some(origin) = allowed else {
        return response;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    /// A router shaped like the API's: a route behind a key check that refuses every request
    /// (as `auth::require` refuses one without a key), and this middleware outside it.
    fn router() -> Router {
        async fn refuse_without_key(request: Request, next: Next) -> Response {
            if request.headers().contains_key(header::AUTHORIZATION) {
                next.run(request).await
            } else {
                StatusCode::UNAUTHORIZED.into_response()
            }
        }
        Router::new()
            .route("/v1/status", get(|| async { "{}" }))
            .layer(axum::middleware::from_fn(refuse_without_key))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(|addr: &str| addr == "127.0.0.1:8082") as Origins,
                cors,
            ))
    }

    fn send(request: axum::http::Request<Body>) -> Response {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(router().oneshot(request))
            .expect("infallible")
    }

    fn header_of(response: &Response, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn preflight_is_answered_before_the_auth_check() {
        let response = send(
            axum::http::Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/status")
                .header(header::ORIGIN, "http://127.0.0.1:8082")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
                .body(Body::empty())
                .expect("request"),
        );
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header_of(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("http://127.0.0.1:8082")
        );
        let methods = header_of(&response, header::ACCESS_CONTROL_ALLOW_METHODS).unwrap_or("");
        for method in ["GET", "HEAD", "PUT", "POST", "DELETE"] {
            assert!(methods.contains(method), "{methods}");
        }
        assert_eq!(
            header_of(&response, header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some(ALLOW_HEADERS)
        );
        assert_eq!(
            header_of(&response, header::ACCESS_CONTROL_MAX_AGE),
            Some("600")
        );
    }

    #[test]
    fn other_answers_keep_their_status_and_allow_any_origin_under_auth() {
        // Refused by the key check: still readable cross-origin, so the page can say why.
        let refused = send(
            axum::http::Request::builder()
                .uri("/v1/status")
                .header(header::ORIGIN, "https://127.0.0.1:8082")
                .body(Body::empty())
                .expect("request"),
        );
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header_of(&refused, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://127.0.0.1:8082")
        );
        let answered = send(
            axum::http::Request::builder()
                .uri("/v1/status")
                .header(header::ORIGIN, "http://127.0.0.1:8082")
                .header(header::AUTHORIZATION, "Bearer ykv_x")
                .body(Body::empty())
                .expect("request"),
        );
        assert_eq!(answered.status(), StatusCode::OK);
        assert_eq!(
            header_of(&answered, header::ACCESS_CONTROL_EXPOSE_HEADERS),
            Some(EXPOSE_HEADERS)
        );
        // An OPTIONS that is not a preflight is not answered here: the key check sees it.
        let plain_options = send(
            axum::http::Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/status")
                .body(Body::empty())
                .expect("request"),
        );
        assert_eq!(plain_options.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn pages_of_other_origins_get_no_cors_headers() {
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8083",
            "file://127.0.0.1:8082",
            "null",
        ] {
            let preflight = send(
                axum::http::Request::builder()
                    .method(Method::OPTIONS)
                    .uri("/v1/status")
                    .header(header::ORIGIN, origin)
                    .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
                    .body(Body::empty())
                    .expect("request"),
            );
            assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
            assert_eq!(
                header_of(&preflight, header::ACCESS_CONTROL_ALLOW_ORIGIN),
                None,
                "{origin}"
            );
            let answered = send(
                axum::http::Request::builder()
                    .uri("/v1/status")
                    .header(header::ORIGIN, origin)
                    .header(header::AUTHORIZATION, "Bearer ykv_x")
                    .body(Body::empty())
                    .expect("request"),
            );
            assert_eq!(answered.status(), StatusCode::OK);
            assert_eq!(
                header_of(&answered, header::ACCESS_CONTROL_ALLOW_ORIGIN),
                None,
                "{origin}"
            );
        }
    }
}
