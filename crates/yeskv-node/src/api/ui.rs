//! The web console: `GET /ui` (and `/ui/`, `/ui/{asset}`), a page every node serves.
//!
//! This module owns the console's static assets and how they are served; it holds no state
//! and reads nothing from the node. The page (`ui/index.html`, `ui/app.js`, `ui/app.css`:
//! plain HTML, CSS and JavaScript, no framework and no build step) is compiled into the binary
//! with `include_str!`, so the console works offline, on any node, with nothing else to deploy
//! and no CDN to reach. Its figures come from the node's own API, polled by the page every
//! 1.5 s: `/v1/status`, `/v1/ring`, `/metrics`, `/v1/cluster/plan` (and `POST
//! /v1/cluster/commit`), `/v1/kv/{bucket}/{key}`; and every 3 s from each other member's
//! `/v1/status` and `/metrics`, at the member's HTTP address (cross-origin: [`super::cors`]).
//! Those requests carry the API key the operator typed into the page (kept in
//! `sessionStorage`), so the page itself is open ([`crate::auth::need`]) and the data it
//! shows is not.
//!
//! Every answer carries a strict Content-Security-Policy (`default-src 'self'`: no inline
//! script or style, nothing loaded from another origin; the script may only connect to other
//! `http:`/`https:` origins, to read the members), `X-Content-Type-Options: nosniff` and
//! `Cache-Control: no-cache` (the assets are not fingerprinted, so a browser revalidates
//! them and an upgraded node serves its own page at once).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The page.
const INDEX_HTML: &str = include_str!("ui/index.html");
/// The page's script.
const APP_JS: &str = include_str!("ui/app.js");
/// The page's style sheet.
const APP_CSS: &str = include_str!("ui/app.css");

/// What the page may load: only this origin, no inline code, no framing. Its script may also
/// connect to other origins (`connect-src ... http: https:`): it reads every member's
/// `/v1/status` and `/metrics` at the member's own address (the nodes answer cross-origin
/// requests, see [`super::cors`]).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self' http: https:; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /ui` and `GET /ui/`: the page.
pub async fn index() -> Response {
    asset_response(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /ui/{asset}`: the script or the style sheet; `404` for anything else.
pub async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "" | "index.html" => asset_response(INDEX_HTML, "text/html; charset=utf-8"),
        "app.js" => asset_response(APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => asset_response(APP_CSS, "text/css; charset=utf-8"),
        _ => super::json_error(StatusCode::NOT_FOUND, "no such console asset"),
    }
}

fn asset_response(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
