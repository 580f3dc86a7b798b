//! The OpenAPI 3.1 description of the client API, derived from the code: `GET /v1/openapi.json`.
//!
//! Each operation is described by a `#[utoipa::path]` attribute on the function that serves it
//! (`kv::get_value`, `dt::update_datatype`, `keys::create`, ...), and each JSON body by
//! `#[derive(ToSchema)]` on the type the handler serializes ([`super::ErrorBody`],
//! `kv::SiblingsBody`, `node::HealthBody`, ...). [`ApiDoc`] lists them; nothing here is
//! written by hand except what applies to every operation alike, added by [`Everywhere`]:
//!
//! - the security schemes: `api_key` (any key with the permission the operation needs on its
//!   bucket, or any key at all for `/v1/ring`) and `admin_key` (an admin key), both
//!   `Authorization: Bearer KEY` ([`crate::auth`]). Only enforced on nodes started with
//!   `--auth`; without it every request passes and no `401`/`403` is ever answered;
//! - `401` (with `WWW-Authenticate: Bearer`) and `403` on every operation that needs a key:
//!   the API key check ([`crate::auth::require`]) answers them before any handler runs;
//! - the `X-Yeskv-Layout-Version` header on every answer of `/v1/kv` and `/v1/dt`
//!   (`kv::key_response` adds it to all of them, errors included).
//!
//! The description itself is open, like `/v1/health`: it holds nothing that is not in the
//! source, and a client needs it before it has a key.
//!
//! `docs/openapi.json` is this document, committed; the test
//! `committed_document_is_the_generated_one` fails when they differ, and rewrites the file when
//! run with `YESKV_UPDATE_OPENAPI=1`. `crates/yeskv/tests/openapi.rs` validates live answers of
//! a real cluster against the document a node serves.
//!
//! Not described: the paths that only exist when `[chaos]` is configured (`/v1/admin/chaos`),
//! `HEAD` (answered as `GET` without a body), and the `404`/`405` of paths and methods the
//! router does not know.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as OpenApiDoc, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};

use super::{backups, buckets, cluster, dt, keys, kv, node, ErrorBody, LAYOUT_VERSION_HEADER};

/// The OpenAPI document of the client API (module docs).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "yeskv",
        description = "The client HTTP API of a yeskv node: keys and values (`/v1/kv`), data \
            types (`/v1/dt`), bucket properties, API keys, cluster membership changes, and the \
            node's own endpoints. Buckets and keys are path segments, percent-encoded, any \
            bytes. Errors answer `{\"error\": REASON}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        kv::get_value,
        kv::put_value,
        kv::delete_value,
        kv::touch_key,
        dt::read_datatype,
        dt::update_datatype,
        buckets::get_props,
        buckets::set_props,
        keys::list,
        keys::create,
        keys::revoke,
        cluster::join,
        cluster::leave,
        cluster::replication,
        cluster::plan,
        cluster::commit,
        node::status,
        node::ring,
        node::health,
        node::hot,
        node::metrics_text,
        node::compact,
        backups::create,
        backups::file,
        backups::delete,
        backups::import,
        serve,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Everywhere),
    tags(
        (name = "kv", description = "Keys and values, with causal contexts and siblings"),
        (name = "datatypes", description = "Carts, counters and sets (convergent data types)"),
        (name = "buckets", description = "Bucket properties, cluster-wide"),
        (name = "keys", description = "API keys (admin)"),
        (name = "cluster", description = "Staged membership changes (admin)"),
        (name = "node", description = "This node: health, status, ring, metrics"),
        (name = "backups", description = "Backup checkpoints and restores (admin)"),
    )
)]
pub struct ApiDoc;

/// What applies to every operation alike (module docs).
struct Everywhere;

impl Modify for Everywhere {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description.to_string()))
                    .build(),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            bearer(
                "An API key (`ykv_...`) with read permission on the bucket for GET/HEAD, write \
                 permission for the other methods; any key for `/v1/ring`. Required only on \
                 nodes started with `--auth`.",
            ),
        );
        components.add_security_scheme(
            "admin_key",
            bearer("An admin API key. Required only on nodes started with `--auth`."),
        );
        let error = || {
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ErrorBody",
            ))))
        };
        let unauthorized = ResponseBuilder::new()
            .description("No key, a malformed `Authorization` header, or an unknown key")
            .content("application/json", error())
            .header(
                "www-authenticate",
                HeaderBuilder::new()
                    .schema(String::schema())
                    .description(Some("`Bearer`"))
                    .build(),
            )
            .build();
        let forbidden = ResponseBuilder::new()
            .description("The key lacks the permission")
            .content("application/json", error())
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let on_a_key = path.starts_with("/v1/kv/") || path.starts_with("/v1/dt/");
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.head,
            ]
            .into_iter()
            .flatten()
            {
                let responses = &mut operation.responses.responses;
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    responses.insert("401".into(), RefOr::T(unauthorized.clone()));
                    responses.insert("403".into(), RefOr::T(forbidden.clone()));
                }
                if on_a_key {
                    for response in responses.values_mut() {
                        if let RefOr::T(response) = response {
                            response.headers.insert(
                                LAYOUT_VERSION_HEADER.to_string(),
                                HeaderBuilder::new()
                                    .schema(u64::schema())
                                    .description(Some("The layout version this node routes by"))
                                    .build(),
                            );
                        }
                    }
                }
            }
        }
    }
}

impl ApiDoc {
    /// The document as served and committed: pretty JSON, one trailing newline.
    pub fn json() -> &'static str {
        static JSON: OnceLock<String> = OnceLock::new();
        JSON.get_or_init(|| {
            let mut text = ApiDoc::openapi()
                .to_pretty_json()
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            text.push('\n');
            text
        })
    }
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "node",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    description = "Open: needs no key.",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object,
        content_type = "application/json"))
)]
pub(super) async fn serve() -> Response {
    let mut response = (StatusCode::OK, ApiDoc::json()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the generated document; `YESKV_UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = ApiDoc::json();
        if std::env::var("YESKV_UPDATE_OPENAPI").as_deref() == Ok("1") {
            std::fs::write(path, generated).expect("write docs/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the document the code generates; regenerate it with \
             `YESKV_UPDATE_OPENAPI=1 cargo test --release -p yeskv-node --lib openapi` and \
             commit it"
        );
    }

    #[test]
    fn every_route_is_described_and_is_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(ApiDoc::json()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, methods) in [
            (
                "/v1/kv/{bucket}/{key}",
                &["get", "put", "post", "delete"][..],
            ),
            ("/v1/dt/{bucket}/{key}", &["get", "post"]),
            ("/v1/buckets/{bucket}", &["get", "put"]),
            ("/v1/admin/keys", &["get", "post"]),
            ("/v1/admin/keys/{name}", &["delete"]),
            ("/v1/admin/compact", &["post"]),
            ("/v1/cluster/join", &["post"]),
            ("/v1/cluster/leave", &["post"]),
            ("/v1/cluster/replication", &["post"]),
            ("/v1/cluster/plan", &["get"]),
            ("/v1/cluster/commit", &["post"]),
            ("/v1/status", &["get"]),
            ("/v1/ring", &["get"]),
            ("/v1/health", &["get"]),
            ("/v1/hot", &["get"]),
            ("/v1/openapi.json", &["get"]),
            ("/metrics", &["get"]),
        ] {
            for method in methods {
                assert!(
                    paths.get(path).and_then(|p| p.get(method)).is_some(),
                    "{method} {path} is not described"
                );
            }
        }
        // The open endpoints need no key; the others name one, and answer 401/403 for it.
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("item") {
                let open = matches!(
                    path.as_str(),
                    "/v1/health" | "/metrics" | "/v1/openapi.json"
                );
                assert_eq!(op.get("security").is_none(), open, "{method} {path}");
                assert_eq!(
                    op["responses"].get("401").is_some(),
                    !open,
                    "{method} {path}"
                );
            }
        }
    }
}
