//! API keys on the node: secrets and their hashes, the table every request is checked against,
//! and which permission each endpoint needs.
//!
//! A key's secret is `ykv_` followed by 32 random bytes in base64url ([`generate_secret`]);
//! it is shown once, to whoever created it. The layout state keeps only its SHA-256
//! ([`hash_secret`]): a secret of 256 random bits needs no slow password hash, since nobody
//! can guess it from its hash. Keys, their hashes and permissions live in the layout's
//! replicated state (`yeskv_layout::keys`), so they are the same on every node.
//!
//! Every request is checked against a [`KeyTable`]: the keys of the layout state this node
//! last applied, swapped in whole when they change and read without a lock (as the bucket
//! properties are, `crate::topology::BucketTable`). A check never waits for a Raft leader;
//! a key revoked on one node stops working on each node as soon as that node applies the
//! revocation (normally within a heartbeat).
//!
//! The lookup hashes the presented secret and finds the entry by its hash, then compares
//! the hashes in constant time. The map lookup's timing depends only on the hash of what the
//! caller sent, which tells them nothing about any real secret's hash that they could use.
//!
//! [`need`] says what an endpoint requires ([`Need`]); [`check`] decides, with `401` for a
//! missing or unknown key and `403` for a key without the permission ([`Denied`]). The rule,
//! documented for operators in `docs/security.md`:
//!
//! - open: `GET /v1/health`, `GET /v1/openapi.json` (the API's description: nothing in it
//!   that is not in the source), the web console's page `/ui`, `/ui/…` (static assets: the
//!   data the page shows comes from the endpoints below, with the key typed into the page); `GET /metrics` unless `security.open_metrics = false`;
//! - a bucket's read permission: `GET`/`HEAD` on `/v1/kv/{bucket}/…`, `/v1/dt/{bucket}/…` and
//!   `/v1/buckets/{bucket}`; its write permission: the other methods on `/v1/kv` and `/v1/dt`.
//!   A salted bucket's sub-key bucket (`coordinator::salt`) counts as the bucket itself;
//! - any valid key: `GET /v1/ring` (clients route by it);
//! - admin: everything else: `/v1/cluster/*`, `/v1/admin/*` (keys, compaction, chaos),
//!   `PUT /v1/buckets/*`, `/v1/status`, `/v1/hot` (it names keys), and unknown paths.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use yeskv_layout::{ApiKey, AppliedState};

/// What every secret starts with, so that a leaked one is easy to recognise (secret scanners).
pub const SECRET_PREFIX: &str = "ykv_";
/// Random bytes in a secret.
pub const SECRET_RANDOM_BYTES: usize = 32;
/// Longest `Authorization` header value looked at (a secret is 47 characters).
const AUTHORIZATION_BYTES_MAX: usize = 256;

/// A new secret: [`SECRET_PREFIX`] and 32 bytes from the operating system's random source.
pub fn generate_secret() -> Result<String, String> {
    let mut random = [0u8; SECRET_RANDOM_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut random)
        .map_err(|e| format!("the operating system's random source failed: {e}"))?;
    Ok(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
}

/// The hash the layout state keeps of a secret (SHA-256 of its text).
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// What the installed table holds: the keys of one applied state, by hash.
#[derive(Default)]
struct InstalledKeys {
    applied_index: u64,
    by_name: BTreeMap<String, ApiKey>,
    by_hash: HashMap<[u8; 32], (Arc<str>, ApiKey)>,
}

impl InstalledKeys {
    fn new(applied_index: u64, by_name: BTreeMap<String, ApiKey>) -> Self {
        let by_hash = by_name
            .iter()
            .map(|(name, key)| (key.hash, (Arc::from(name.as_str()), key.clone())))
            .collect();
        InstalledKeys {
            applied_index,
            by_name,
            by_hash,
        }
    }
}

/// The API keys as this node last applied them (module docs). Installed like
/// `crate::topology::BucketTable`: by the task following the layout states, and by the node
/// that made a change right after it applied, so that it reads its own write.
#[derive(Default)]
pub struct KeyTable {
    current: ArcSwap<InstalledKeys>,
    installing: parking_lot::Mutex<()>,
}

impl KeyTable {
    /// Installs the keys of `applied`, unless a state at least as new is installed.
    pub fn install(&self, applied: &AppliedState) {
        let _one_at_a_time = self.installing.lock();
        let current = self.current.load();
        if applied.applied_index <= current.applied_index && current.applied_index > 0 {
            return;
        }
        if applied.state.keys == current.by_name {
            if applied.applied_index != current.applied_index {
                self.current.store(Arc::new(InstalledKeys {
                    applied_index: applied.applied_index,
                    by_name: current.by_name.clone(),
                    by_hash: current.by_hash.clone(),
                }));
            }
            return;
        }
        tracing::info!(
            keys = applied.state.keys.len(),
            applied_index = applied.applied_index,
            "API keys changed"
        );
        self.current.store(Arc::new(InstalledKeys::new(
            applied.applied_index,
            applied.state.keys.clone(),
        )));
    }

    /// Sets the keys by hand (tests, which run no layout service).
    pub fn set(&self, keys: BTreeMap<String, ApiKey>) {
        let _one_at_a_time = self.installing.lock();
        let index = self.current.load().applied_index;
        self.current
            .store(Arc::new(InstalledKeys::new(index, keys)));
    }

    /// The key whose secret is `secret`, with its name.
    pub fn lookup(&self, secret: &str) -> Option<(Arc<str>, ApiKey)> {
        let hash = hash_secret(secret);
        let current = self.current.load();
        let (name, key) = current.by_hash.get(&hash)?;
        bool::from(key.hash.ct_eq(&hash)).then(|| (name.clone(), key.clone()))
    }

    /// Whether no key exists.
    pub fn is_empty(&self) -> bool {
        self.current.load().by_name.is_empty()
    }

    /// Every key by name.
    pub fn all(&self) -> BTreeMap<String, ApiKey> {
        self.current.load().by_name.clone()
    }
}

/// What a request needs (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: open to anyone.
    Open,
    /// Any valid key.
    AnyKey,
    /// Read permission on the bucket.
    Read(Vec<u8>),
    /// Write permission on the bucket.
    Write(Vec<u8>),
    /// An admin key.
    Admin,
}

/// What `method path` needs (module docs). `open_metrics`: whether `/metrics` is open.
pub fn need(method: &Method, path: &str, open_metrics: bool) -> Need {
    let reads = method == Method::GET || method == Method::HEAD;
    let bucket_of = |rest: &str| -> Vec<u8> {
        let segment = rest.split('/').next().unwrap_or("");
        let bucket: Vec<u8> = percent_decode_str(segment).collect();
        crate::coordinator::props_bucket(&bucket).to_vec()
    };
    if path == "/v1/health"
        || path == "/v1/openapi.json"
        || path == "/ui"
        || path.starts_with("/ui/")
    {
        return Need::Open;
    }
    if path == "/metrics" {
        return if open_metrics {
            Need::Open
        } else {
            Need::Admin
        };
    }
    if path == "/v1/ring" {
        return Need::AnyKey;
    }
    if let Some(rest) = path
        .strip_prefix("/v1/kv/")
        .or_else(|| path.strip_prefix("/v1/dt/"))
    {
        let bucket = bucket_of(rest);
        return if reads {
            Need::Read(bucket)
        } else {
            Need::Write(bucket)
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/buckets/") {
        if reads {
            return Need::Read(bucket_of(rest));
        }
    }
    Need::Admin
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No key, a malformed header, or a key nobody knows (revoked, mistyped): `401`.
    Unauthenticated(String),
    /// A valid key without the permission: `403`.
    Forbidden(String),
}

impl Denied {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The reason, for the JSON body.
    pub fn reason(&self) -> &str {
        match self {
            Denied::Unauthenticated(r) | Denied::Forbidden(r) => r,
        }
    }
}

/// The bearer secret of `headers`, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Denied> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        Denied::Unauthenticated(
            "malformed Authorization header (expected \"Bearer KEY\")".to_string(),
        )
    };
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(malformed());
    }
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, secret) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(secret.trim()))
}

/// Whether a request with `headers` may do what `need` says, by the keys of `table`.
pub fn check(table: &KeyTable, need: &Need, headers: &HeaderMap) -> Result<(), Denied> {
    if *need == Need::Open {
        return Ok(());
    }
    let secret = bearer(headers)?.ok_or_else(|| {
        Denied::Unauthenticated(
            "an API key is required: send \"Authorization: Bearer KEY\"".to_string(),
        )
    })?;
    let (name, key) = table.lookup(secret).ok_or_else(|| {
        Denied::Unauthenticated("unknown API key (revoked, or never created)".to_string())
    })?;
    let bucket_name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let allowed = match need {
        Need::Open | Need::AnyKey => true,
        Need::Admin => key.admin,
        Need::Read(bucket) => key.may_read(bucket),
        Need::Write(bucket) => key.may_write(bucket),
    };
    if allowed {
        return Ok(());
    }
    Err(Denied::Forbidden(match need {
        Need::Read(bucket) => format!("key {name:?} may not read bucket {:?}", bucket_name(bucket)),
        Need::Write(bucket) => format!(
            "key {name:?} may not write bucket {:?}",
            bucket_name(bucket)
        ),
        _ => format!("key {name:?} is not an admin key"),
    }))
}

/// What the HTTP layer's check works with.
pub struct Guard {
    /// Whether keys are required (`security.auth`); if not, every request passes.
    pub enabled: bool,
    /// Whether `/metrics` stays open with keys required (`security.open_metrics`).
    pub open_metrics: bool,
    /// The keys.
    pub keys: Arc<KeyTable>,
}

/// The axum middleware: refuses a request its key does not allow, with a JSON reason, before
/// any handler runs (so a refused request reads and writes nothing).
pub async fn require(
    axum::extract::State(guard): axum::extract::State<Arc<Guard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if guard.enabled {
        let need = need(request.method(), request.uri().path(), guard.open_metrics);
        if let Err(denied) = check(&guard.keys, &need, request.headers()) {
            ::metrics::counter!(crate::metrics::AUTH_REFUSED, "status" => denied.status().as_str().to_string())
                .increment(1);
            let mut response = crate::api::json_error(denied.status(), denied.reason());
            if denied.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            return response;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;
    use yeskv_layout::Access;

    fn headers(secret: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(s) = secret {
            h.insert(
                axum::http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {s}")).expect("ascii"),
            );
        }
        h
    }

    /// Name, secret, admin, permissions.
    type TestKey<'a> = (&'a str, &'a str, bool, &'a [(&'a [u8], Access)]);

    fn table(keys: &[TestKey<'_>]) -> KeyTable {
        let t = KeyTable::default();
        t.set(
            keys.iter()
                .map(|(name, secret, admin, buckets)| {
                    (
                        name.to_string(),
                        ApiKey {
                            hash: hash_secret(secret),
                            admin: *admin,
                            buckets: buckets.iter().map(|(b, a)| (b.to_vec(), *a)).collect(),
                        },
                    )
                })
                .collect(),
        );
        t
    }

    #[test]
    fn secrets_are_random_prefixed_and_hashed() {
        let a = generate_secret().expect("random");
        let b = generate_secret().expect("random");
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + 43);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[test]
    fn endpoints_need_what_the_docs_say() {
        let get = Method::GET;
        let put = Method::PUT;
        assert_eq!(need(&get, "/v1/health", false), Need::Open);
        assert_eq!(need(&get, "/v1/openapi.json", false), Need::Open);
        assert_eq!(need(&get, "/ui", false), Need::Open);
        assert_eq!(need(&get, "/ui/", false), Need::Open);
        assert_eq!(need(&get, "/ui/app.js", false), Need::Open);
        assert_eq!(need(&get, "/uix", false), Need::Admin);
        assert_eq!(need(&get, "/v1/ui", false), Need::Admin);
        assert_eq!(need(&get, "/metrics", true), Need::Open);
        assert_eq!(need(&get, "/metrics", false), Need::Admin);
        assert_eq!(need(&get, "/v1/ring", true), Need::AnyKey);
        assert_eq!(
            need(&get, "/v1/kv/b%2Fx/k", true),
            Need::Read(b"b/x".to_vec())
        );
        assert_eq!(
            need(&Method::HEAD, "/v1/kv/b/k", true),
            Need::Read(b"b".to_vec())
        );
        assert_eq!(need(&put, "/v1/kv/b/k", true), Need::Write(b"b".to_vec()));
        assert_eq!(
            need(&Method::DELETE, "/v1/kv/b/k", true),
            Need::Write(b"b".to_vec())
        );
        assert_eq!(
            need(&Method::POST, "/v1/dt/c/k", true),
            Need::Write(b"c".to_vec())
        );
        assert_eq!(need(&get, "/v1/dt/c/k", true), Need::Read(b"c".to_vec()));
        // A salted bucket's sub-key bucket is the bucket itself.
        assert_eq!(
            need(&put, "/v1/dt/c%00salt/k", true),
            Need::Write(b"c".to_vec())
        );
        assert_eq!(need(&get, "/v1/buckets/b", true), Need::Read(b"b".to_vec()));
        assert_eq!(need(&put, "/v1/buckets/b", true), Need::Admin);
        for path in [
            "/v1/cluster/plan",
            "/v1/admin/keys",
            "/v1/admin/compact",
            "/v1/admin/chaos",
            "/v1/admin/backups/b1",
            "/v1/admin/backups/b1/CURRENT",
            "/v1/admin/import",
            "/v1/status",
            "/v1/hot",
            "/v1/nothing",
        ] {
            assert_eq!(need(&get, path, true), Need::Admin, "{path}");
        }
        assert_eq!(need(&Method::POST, "/v1/cluster/commit", true), Need::Admin);
    }

    #[test]
    fn keys_are_checked_401_then_403() {
        let t = table(&[
            ("reader", "r-secret", false, &[(b"b", Access::Read)]),
            ("writer", "w-secret", false, &[(b"b", Access::ReadWrite)]),
            ("root", "a-secret", true, &[]),
        ]);
        let read = Need::Read(b"b".to_vec());
        let write = Need::Write(b"b".to_vec());
        assert_eq!(check(&t, &Need::Open, &headers(None)), Ok(()));
        let status = |need: &Need, secret: Option<&str>| {
            check(&t, need, &headers(secret)).map_err(|d| d.status().as_u16())
        };
        assert_eq!(status(&read, None), Err(401));
        assert_eq!(status(&read, Some("nope")), Err(401));
        assert_eq!(status(&read, Some("r-secret")), Ok(()));
        assert_eq!(status(&write, Some("r-secret")), Err(403));
        assert_eq!(status(&write, Some("w-secret")), Ok(()));
        assert_eq!(
            status(&Need::Read(b"other".to_vec()), Some("w-secret")),
            Err(403)
        );
        assert_eq!(status(&Need::Admin, Some("w-secret")), Err(403));
        assert_eq!(status(&Need::Admin, Some("a-secret")), Ok(()));
        assert_eq!(status(&write, Some("a-secret")), Ok(()));
        assert_eq!(status(&Need::AnyKey, Some("r-secret")), Ok(()));
        let denied = check(&t, &write, &headers(Some("r-secret"))).expect_err("refused");
        assert!(denied
            .reason()
            .contains("\"reader\" may not write bucket \"b\""));
        // Malformed headers are 401 too.
        let mut basic = HeaderMap::new();
        basic.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwdw=="),
        );
        assert_eq!(
            check(&t, &read, &basic).map_err(|d| d.status().as_u16()),
            Err(401)
        );
        // A revoked key (gone from the table) is unknown.
        t.set(BTreeMap::new());
        assert_eq!(status(&Need::AnyKey, Some("a-secret")), Err(401));
        assert!(t.is_empty());
    }

    proptest! {
        /// Whatever a key's permissions and whatever the request: a key allows a request
        /// exactly when it is admin or names the bucket with an access that covers it, and a
        /// secret that differs from every key's is refused with 401.
        #[test]
        fn a_check_allows_exactly_what_the_permissions_say(
            admin in any::<bool>(),
            access in proptest::option::of(prop_oneof![
                Just(Access::Read), Just(Access::Write), Just(Access::ReadWrite)
            ]),
            writes in any::<bool>(),
            other_bucket in any::<bool>(),
            wrong in "[a-z]{1,12}",
        ) {
            let buckets: Vec<(&[u8], Access)> =
                access.map(|a| (&b"b"[..], a)).into_iter().collect();
            let t = table(&[("k", "the-secret", admin, &buckets)]);
            let bucket = if other_bucket { b"o".to_vec() } else { b"b".to_vec() };
            let need = if writes { Need::Write(bucket) } else { Need::Read(bucket) };
            let expected = admin
                || (!other_bucket
                    && access.is_some_and(|a| if writes { a.writes() } else { a.reads() }));
            let got = check(&t, &need, &headers(Some("the-secret")));
            prop_assert_eq!(got.is_ok(), expected);
            if let Err(d) = got {
                prop_assert_eq!(d.status(), StatusCode::FORBIDDEN);
            }
            let refused = check(&t, &need, &headers(Some(&wrong))).expect_err("refused");
            prop_assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        }
    }
}
