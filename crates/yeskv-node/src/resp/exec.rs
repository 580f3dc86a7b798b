//! What each command does: a connection's [`Session`] (protocol, default bucket, API key,
//! name) and the calls into the same [`Coordinator`](crate::coordinator::Coordinator) the HTTP
//! API uses — never HTTP itself. Every rule here is stated for users in `docs/resp.md`.
//!
//! - **Keys**: `bucket:key` splits at the first `:`; a key without one is in the session's
//!   default bucket. Bucket and key lengths are checked against `[limits]` as HTTP checks
//!   them, values against `limits.value_bytes_max`; a refused command writes nothing.
//! - **Plain and `lww` buckets**: `SET`, `DEL`, `MSET` and the rewrites of `EXPIRE` and
//!   `PERSIST` are [`WriteBody::Supersede`] writes (`coordinator/supersede.rs`): they replace
//!   what the key's coordinating replica holds, so sequential writes replace each other and
//!   concurrent ones stay siblings. `GET` of a plain key with several visible versions
//!   answers `-SIBLINGS` naming the HTTP API (never one of them silently); an `lww` key
//!   answers its winner, as HTTP does. Reads and writes use the node's default `r` and `w`.
//! - **Data types**: counters (`INCRBY`…, `GET`), sets (`SADD`…) and carts (`HSET`…) map to
//!   the data-type operations of `/v1/dt`; a command of another type's bucket is `WRONGTYPE`.
//!   Replies that Redis computes from the state before or after (`SADD`'s count of new
//!   members, `INCRBY`'s new value) come from a read at the default `r` before or after the
//!   operation: concurrent writers can make them differ from what this operation alone did.
//! - **Auth**: with `security.auth`, every command but `AUTH`, `HELLO … AUTH` and `QUIT` needs
//!   a key first (`-NOAUTH`), and key commands need the key's read or write permission on the
//!   bucket, as HTTP does (`-NOPERM`). The key is looked up again on every command, so a
//!   revoked key stops working at once.
//! - **Readiness**: a node not serving keys yet (`AppState::keys_gate`) answers `-TRYAGAIN`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use yeskv_core::datatypes::{DtOp, DtValue};
use yeskv_core::{CausalContext, Conflict, Datatype, Object};
use yeskv_storage::Engine;

use super::codec::{Protocol, Reply};
use super::commands::{integer, not_an_integer, Command, ExpireIf, Expiry};
use super::Shared;
use crate::config::TTL_SECS_MAX;
use crate::coordinator::{Write, WriteBody};
use crate::error::Error;

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// The connection's id (`CLIENT ID`).
    pub id: u64,
    /// Its peer's address.
    pub addr: String,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// The bucket of keys without a `bucket:` prefix.
    pub bucket: Vec<u8>,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME` and `LIB-VER`.
    pub lib: (Option<Bytes>, Option<Bytes>),
    /// The secret of the API key it authenticated with.
    pub secret: Option<String>,
    /// Set by `QUIT`: close once the answers are written.
    pub quit: bool,
}

/// A failed command's answer.
type Refusal = Reply;

impl From<Error> for Reply {
    fn from(e: Error) -> Reply {
        match &e {
            Error::NotServing(_) => Reply::Error(format!("TRYAGAIN {e}")),
            Error::Conflict(_) => Reply::Error(format!("WRONGTYPE {e}")),
            _ if e.is_retryable() => Reply::Error(format!("TRYAGAIN {e}")),
            _ => Reply::err(e),
        }
    }
}

/// What a key needs of the session's API key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// A plain key's one visible value, as a read found it.
struct Current {
    value: Bytes,
    expires_at_ms: Option<u64>,
}

impl<E: Engine> Shared<E> {
    /// Runs a connection command (one that may change the session).
    pub(super) fn connection(&self, session: &mut Session, command: Command) -> Reply {
        let open = matches!(
            command,
            Command::Auth(_) | Command::Hello { .. } | Command::Quit
        );
        if !open {
            if let Err(refusal) = self.authenticated(session) {
                return refusal;
            }
        }
        match command {
            Command::Ping(None) => Reply::Status("PONG"),
            Command::Ping(Some(m)) | Command::Echo(m) => Reply::Bulk(m),
            Command::Quit => {
                session.quit = true;
                Reply::Status("OK")
            }
            Command::Auth(secret) => self.auth(session, &secret),
            Command::Hello {
                protocol,
                auth,
                name,
            } => self.hello(session, protocol, auth, name),
            Command::Select(index) => match &index[..] {
                b"0" => Reply::Status("OK"),
                _ => Reply::err(
                    "SELECT is not supported by yeskv: it has buckets, not numbered databases; \
                     name the bucket in the key (bucket:key) or set the connection's default \
                     bucket with YESKV.BUCKET name",
                ),
            },
            Command::Client(args) => self.client(session, &args),
            Command::Info => Reply::Bulk(Bytes::from(self.info(session))),
            Command::CommandInfo(sub) => match sub.map(|s| s.to_ascii_uppercase()).as_deref() {
                // `redis-cli` asks for the docs to show hints: none is a fine answer.
                Some(b"DOCS") if session.protocol == Protocol::V3 => Reply::Map(Vec::new()),
                None | Some(b"DOCS") | Some(b"INFO") | Some(b"LIST") => Reply::Array(Vec::new()),
                Some(b"COUNT") => Reply::Int(super::commands::TABLE.len() as i64),
                Some(other) => Reply::err(format!(
                    "unknown subcommand '{}'. Try COMMAND HELP.",
                    String::from_utf8_lossy(other)
                )),
            },
            Command::ConfigGet(patterns) => config_get(&patterns),
            Command::Bucket(None) => Reply::Bulk(Bytes::from(session.bucket.clone())),
            Command::Bucket(Some(name)) => match self.check_bucket(&name) {
                Ok(()) => {
                    session.bucket = name.to_vec();
                    Reply::Status("OK")
                }
                Err(refusal) => refusal,
            },
            other => Reply::err(format!("not a connection command: {other:?}")),
        }
    }

    /// `-NOAUTH` unless the session may run commands (auth off, or a key that still exists).
    fn authenticated(&self, session: &Session) -> Result<Option<yeskv_layout::ApiKey>, Refusal> {
        let guard = &self.state.guard;
        if !guard.enabled {
            return Ok(None);
        }
        let Some(secret) = &session.secret else {
            return Err(Reply::Error("NOAUTH Authentication required.".into()));
        };
        match guard.keys.lookup(secret) {
            Some((_, key)) => Ok(Some(key)),
            None => Err(Reply::Error(
                "NOAUTH the API key is no longer valid (revoked): AUTH again".into(),
            )),
        }
    }

    fn auth(&self, session: &mut Session, secret: &[u8]) -> Reply {
        if !self.state.guard.enabled {
            return Reply::err(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        }
        let secret = String::from_utf8_lossy(secret).into_owned();
        match self.state.guard.keys.lookup(&secret) {
            Some(_) => {
                session.secret = Some(secret);
                Reply::Status("OK")
            }
            None => {
                ::metrics::counter!(crate::metrics::AUTH_REFUSED, "status" => "resp").increment(1);
                Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
            }
        }
    }

    fn hello(
        &self,
        session: &mut Session,
        protocol: Option<Bytes>,
        auth: Option<(Bytes, Bytes)>,
        name: Option<Bytes>,
    ) -> Reply {
        let wanted = match protocol.as_deref() {
            None => session.protocol,
            Some(b"2") => Protocol::V2,
            Some(b"3") => Protocol::V3,
            Some(p) if integer(p).is_err() => {
                return Reply::err("Protocol version is not an integer or out of range")
            }
            Some(_) => return Reply::Error("NOPROTO unsupported protocol version".into()),
        };
        if let Some((_, secret)) = auth {
            match self.auth(session, &secret) {
                Reply::Status(_) => {}
                refusal => return refusal,
            }
        } else if self.state.guard.enabled && session.secret.is_none() {
            return Reply::Error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise \
                 the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
                 client and select the RESP protocol version at the same time"
                    .into(),
            );
        }
        if let Some(name) = name {
            if let Err(refusal) = check_name(&name) {
                return refusal;
            }
            session.name = Some(name);
        }
        session.protocol = wanted;
        let proto = match wanted {
            Protocol::V2 => 2,
            Protocol::V3 => 3,
        };
        Reply::Map(vec![
            (Reply::text("server"), Reply::text("yeskv")),
            (
                Reply::text("version"),
                Reply::text(env!("CARGO_PKG_VERSION")),
            ),
            (Reply::text("proto"), Reply::Int(proto)),
            (Reply::text("id"), Reply::Int(session.id as i64)),
            (Reply::text("mode"), Reply::text("cluster")),
            (Reply::text("role"), Reply::text("yeskv")),
            (Reply::text("modules"), Reply::Array(Vec::new())),
        ])
    }

    fn client(&self, session: &mut Session, args: &[Bytes]) -> Reply {
        let sub = args[0].to_ascii_uppercase();
        match (sub.as_slice(), args.len()) {
            (b"ID", 1) => Reply::Int(session.id as i64),
            (b"GETNAME", 1) => session.name.clone().map_or(Reply::Nil, Reply::Bulk),
            (b"SETNAME", 2) => match check_name(&args[1]) {
                Ok(()) => {
                    session.name = (!args[1].is_empty()).then(|| args[1].clone());
                    Reply::Status("OK")
                }
                Err(refusal) => refusal,
            },
            (b"SETINFO", 3) => {
                let value = Some(args[2].clone());
                match args[1].to_ascii_uppercase().as_slice() {
                    b"LIB-NAME" => session.lib.0 = value,
                    b"LIB-VER" => session.lib.1 = value,
                    _ => {
                        return Reply::err(format!(
                            "Unrecognized option '{}'",
                            String::from_utf8_lossy(&args[1])
                        ))
                    }
                }
                Reply::Status("OK")
            }
            (b"INFO", 1) => Reply::Bulk(Bytes::from(self.client_line(session))),
            (b"ID" | b"GETNAME" | b"SETNAME" | b"SETINFO" | b"INFO", _) => Reply::err(format!(
                "wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub).to_ascii_lowercase()
            )),
            _ => Reply::err(format!(
                "unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[0])
            )),
        }
    }

    /// The `CLIENT INFO` line of a session.
    fn client_line(&self, session: &Session) -> String {
        let text = |b: &Option<Bytes>| {
            b.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let resp = match session.protocol {
            Protocol::V2 => 2,
            Protocol::V3 => 3,
        };
        format!(
            "id={} addr={} name={} db=0 resp={resp} bucket={} lib-name={} lib-ver={}\n",
            session.id,
            session.addr,
            text(&session.name),
            String::from_utf8_lossy(&session.bucket),
            text(&session.lib.0),
            text(&session.lib.1),
        )
    }

    fn info(&self, session: &Session) -> String {
        let state = &self.state;
        let topology = state.coordinator.context().topology();
        format!(
            "# Server\r\nredis_version:7.0.0\r\nyeskv_version:{}\r\nnode_id:{}\r\nrole:yeskv\r\n\
             mode:cluster\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
             zone:{}\r\nregion:{}\r\nhttp:{}\r\n\r\n# Clients\r\nconnected_clients:{}\r\n\
             maxclients:{}\r\n\r\n# Cluster\r\nlayout_version:{}\r\nserving_keys:{}\r\n\
             default_bucket:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            state.node_id,
            std::process::id(),
            self.port,
            state.started.elapsed().as_secs(),
            state.zone,
            state.region,
            state.http,
            self.clients.load(Ordering::Relaxed),
            self.connections_max,
            topology.layout_version(),
            u8::from(state.keys_gate().is_ok()),
            String::from_utf8_lossy(&session.bucket),
        )
    }

    /// A bucket name a session may use: 1 to `limits.bucket_bytes_max` bytes, no `:`.
    fn check_bucket(&self, name: &[u8]) -> Result<(), Refusal> {
        let max = self.state.limits.bucket_bytes_max;
        if name.is_empty() || name.len() > max || name.contains(&b':') {
            return Err(Reply::err(format!(
                "a bucket name is 1 to {max} bytes without ':', got {} bytes",
                name.len()
            )));
        }
        Ok(())
    }

    /// The `(bucket, key)` of a raw key (module docs), checked against the limits and the
    /// session's API key.
    fn key(
        &self,
        session: &Session,
        raw: &[u8],
        access: Access,
        api_key: &Option<yeskv_layout::ApiKey>,
    ) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
        let (bucket, key) = match raw.iter().position(|&b| b == b':') {
            Some(at) => (&raw[..at], &raw[at + 1..]),
            None => (&session.bucket[..], raw),
        };
        let limits = &self.state.limits;
        let shown = String::from_utf8_lossy(raw);
        if bucket.is_empty() || key.is_empty() {
            return Err(Reply::err(format!(
                "key '{shown}' names an empty bucket or key (bucket:key; docs/resp.md)"
            )));
        }
        if bucket.len() > limits.bucket_bytes_max {
            return Err(Reply::err(format!(
                "bucket is {} bytes, limit {}",
                bucket.len(),
                limits.bucket_bytes_max
            )));
        }
        if key.len() > limits.key_bytes_max {
            return Err(Reply::err(format!(
                "key is {} bytes, limit {}",
                key.len(),
                limits.key_bytes_max
            )));
        }
        if let Some(api_key) = api_key {
            let of = crate::coordinator::props_bucket(bucket);
            let allowed = match access {
                Access::Read => api_key.may_read(of),
                Access::Write => api_key.may_write(of),
            };
            if !allowed {
                ::metrics::counter!(crate::metrics::AUTH_REFUSED, "status" => "resp").increment(1);
                let what = match access {
                    Access::Read => "read",
                    Access::Write => "write",
                };
                return Err(Reply::Error(format!(
                    "NOPERM this API key may not {what} bucket '{}'",
                    String::from_utf8_lossy(of)
                )));
            }
        }
        Ok((bucket.to_vec(), key.to_vec()))
    }

    /// Runs a key command.
    pub(super) async fn keyed(&self, session: &Session, command: Command) -> Reply {
        match self.keyed_inner(session, command).await {
            Ok(reply) | Err(reply) => reply,
        }
    }

    async fn keyed_inner(&self, session: &Session, command: Command) -> Result<Reply, Refusal> {
        let api_key = self.authenticated(session)?;
        self.state.keys_gate()?;
        let key = |raw: &[u8], access| self.key(session, raw, access, &api_key);
        match command {
            Command::Get(raw) => {
                let (b, k) = key(&raw, Access::Read)?;
                Ok(self.get(&b, &k).await?.map_or(Reply::Nil, Reply::Bulk))
            }
            Command::MGet(raws) => {
                let keys = raws
                    .iter()
                    .map(|raw| key(raw, Access::Read))
                    .collect::<Result<Vec<_>, _>>()?;
                let reads = keys.iter().map(|(b, k)| self.get_or_nil(b, k));
                let values = futures_util::future::try_join_all(reads).await?;
                Ok(Reply::Array(
                    values
                        .into_iter()
                        .map(|v| v.map_or(Reply::Nil, Reply::Bulk))
                        .collect(),
                ))
            }
            Command::Set {
                key: raw,
                value,
                expiry,
            } => {
                let (b, k) = key(&raw, Access::Write)?;
                self.set(&b, &k, value, expiry_secs(expiry, self.now_ms(), "set")?)
                    .await?;
                Ok(Reply::Status("OK"))
            }
            Command::MSet(pairs) => {
                let keys = pairs
                    .iter()
                    .map(|(raw, _)| key(raw, Access::Write))
                    .collect::<Result<Vec<_>, _>>()?;
                let writes = keys
                    .iter()
                    .zip(pairs)
                    .map(|((b, k), (_, v))| self.set(b, k, v, None));
                futures_util::future::try_join_all(writes).await?;
                Ok(Reply::Status("OK"))
            }
            Command::Del(raws) => {
                let keys = raws
                    .iter()
                    .map(|raw| key(raw, Access::Write))
                    .collect::<Result<Vec<_>, _>>()?;
                let deletes = keys.iter().map(|(b, k)| self.delete(b, k));
                let deleted = futures_util::future::try_join_all(deletes).await?;
                Ok(Reply::Int(deleted.into_iter().filter(|d| *d).count() as i64))
            }
            Command::Exists(raws) => {
                let keys = raws
                    .iter()
                    .map(|raw| key(raw, Access::Read))
                    .collect::<Result<Vec<_>, _>>()?;
                let reads = keys.iter().map(|(b, k)| self.exists(b, k));
                let found = futures_util::future::try_join_all(reads).await?;
                Ok(Reply::Int(found.into_iter().filter(|f| *f).count() as i64))
            }
            Command::Expire {
                key: raw,
                expiry,
                condition,
            } => {
                let (b, k) = key(&raw, Access::Write)?;
                self.expire(&b, &k, expiry, condition).await
            }
            Command::Ttl { key: raw, millis } => {
                let (b, k) = key(&raw, Access::Read)?;
                let now = self.now_ms();
                let ms = match self.expiry_of(&b, &k).await? {
                    None => -2,
                    Some(None) => -1,
                    Some(Some(at)) => at.saturating_sub(now) as i64,
                };
                Ok(Reply::Int(match (millis, ms) {
                    (true, _) | (_, -2 | -1) => ms,
                    // Redis rounds the remaining time to the nearest second.
                    (false, ms) => (ms + 500) / 1000,
                }))
            }
            Command::Persist(raw) => {
                let (b, k) = key(&raw, Access::Write)?;
                self.persist(&b, &k).await
            }
            Command::IncrBy { key: raw, by } => {
                let (b, k) = key(&raw, Access::Write)?;
                self.typed(&b, Datatype::Counter, "INCRBY")?;
                self.dt(&b, &k, DtOp::CounterIncr { by }).await?;
                match self.dt_value(&b, &k).await? {
                    Some(DtValue::Counter(v)) => Ok(Reply::Int(v)),
                    _ => Ok(Reply::Int(0)),
                }
            }
            Command::SAdd(raw, members) => {
                let (b, k) = key(&raw, Access::Write)?;
                self.typed(&b, Datatype::Set, "SADD")?;
                let members = utf8_all(&members, "a member")?;
                let before = self.members(&b, &k).await?;
                let added = members.iter().filter(|m| !before.contains(*m)).count();
                if added > 0 {
                    self.dt(&b, &k, DtOp::SetAdd { members }).await?;
                }
                Ok(Reply::Int(added as i64))
            }
            Command::SRem(raw, members) => {
                let (b, k) = key(&raw, Access::Write)?;
                self.typed(&b, Datatype::Set, "SREM")?;
                let members = utf8_all(&members, "a member")?;
                let before = self.members(&b, &k).await?;
                let present: Vec<String> =
                    members.into_iter().filter(|m| before.contains(m)).collect();
                if !present.is_empty() {
                    self.dt(
                        &b,
                        &k,
                        DtOp::SetRemove {
                            members: present.clone(),
                        },
                    )
                    .await?;
                }
                Ok(Reply::Int(present.len() as i64))
            }
            Command::SMembers(raw) => {
                let (b, k) = key(&raw, Access::Read)?;
                self.typed(&b, Datatype::Set, "SMEMBERS")?;
                let members = self.members(&b, &k).await?;
                Ok(Reply::Set(members.into_iter().map(Reply::text).collect()))
            }
            Command::SIsMember(raw, member) => {
                let (b, k) = key(&raw, Access::Read)?;
                self.typed(&b, Datatype::Set, "SISMEMBER")?;
                let members = self.members(&b, &k).await?;
                let member = String::from_utf8_lossy(&member);
                Ok(Reply::Int(i64::from(members.iter().any(|m| *m == member))))
            }
            Command::SCard(raw) => {
                let (b, k) = key(&raw, Access::Read)?;
                self.typed(&b, Datatype::Set, "SCARD")?;
                Ok(Reply::Int(self.members(&b, &k).await?.len() as i64))
            }
            Command::HSet {
                key: raw,
                pairs,
                ok,
            } => {
                let (b, k) = key(&raw, Access::Write)?;
                self.typed(&b, Datatype::Cart, "HSET")?;
                let mut sets = Vec::with_capacity(pairs.len());
                for (field, value) in &pairs {
                    let item = utf8(field, "a field")?;
                    let qty = u64::try_from(integer(value)?).map_err(|_| {
                        Reply::err("a cart holds quantities: the value must be 0 or more")
                    })?;
                    sets.push((item, qty));
                }
                let before = self.items(&b, &k).await?;
                let new = sets
                    .iter()
                    .filter(|(item, qty)| *qty > 0 && !before.contains_key(item))
                    .count();
                for (item, qty) in sets {
                    self.dt(&b, &k, DtOp::CartSet { item, qty }).await?;
                }
                Ok(match ok {
                    true => Reply::Status("OK"),
                    false => Reply::Int(new as i64),
                })
            }
            Command::HIncrBy {
                key: raw,
                field,
                by,
            } => {
                let (b, k) = key(&raw, Access::Write)?;
                self.typed(&b, Datatype::Cart, "HINCRBY")?;
                let item = utf8(&field, "a field")?;
                if by > 0 {
                    let qty = u64::try_from(by).map_err(|_| not_an_integer())?;
                    self.dt(
                        &b,
                        &k,
                        DtOp::CartAdd {
                            item: item.clone(),
                            qty,
                        },
                    )
                    .await?;
                } else if by < 0 {
                    // A cart has no decrement: the quantity read, lowered, is set (docs/resp.md).
                    let current = self.items(&b, &k).await?.get(&item).copied().unwrap_or(0);
                    let qty = u64::try_from(current.saturating_add(by).max(0)).unwrap_or(0);
                    self.dt(
                        &b,
                        &k,
                        DtOp::CartSet {
                            item: item.clone(),
                            qty,
                        },
                    )
                    .await?;
                }
                let after = self.items(&b, &k).await?;
                Ok(Reply::Int(after.get(&item).copied().unwrap_or(0)))
            }
            Command::HDel(raw, fields) => {
                let (b, k) = key(&raw, Access::Write)?;
                self.typed(&b, Datatype::Cart, "HDEL")?;
                let fields = utf8_all(&fields, "a field")?;
                let before = self.items(&b, &k).await?;
                let mut removed = 0;
                for item in fields.into_iter().filter(|f| before.contains_key(f)) {
                    self.dt(&b, &k, DtOp::CartRemove { item }).await?;
                    removed += 1;
                }
                Ok(Reply::Int(removed))
            }
            Command::HGetAll(raw) => {
                let (b, k) = key(&raw, Access::Read)?;
                self.typed(&b, Datatype::Cart, "HGETALL")?;
                let items = self.items(&b, &k).await?;
                Ok(Reply::Map(
                    items
                        .into_iter()
                        .map(|(item, qty)| (Reply::text(item), Reply::text(qty.to_string())))
                        .collect(),
                ))
            }
            Command::HGet(raw, field) => {
                let (b, k) = key(&raw, Access::Read)?;
                self.typed(&b, Datatype::Cart, "HGET")?;
                let items = self.items(&b, &k).await?;
                let item = String::from_utf8_lossy(&field);
                Ok(items
                    .get(item.as_ref())
                    .map_or(Reply::Nil, |q| Reply::text(q.to_string())))
            }
            Command::HLen(raw) => {
                let (b, k) = key(&raw, Access::Read)?;
                self.typed(&b, Datatype::Cart, "HLEN")?;
                Ok(Reply::Int(self.items(&b, &k).await?.len() as i64))
            }
            other => Ok(Reply::err(format!("not a key command: {other:?}"))),
        }
    }

    fn now_ms(&self) -> u64 {
        self.state.coordinator.now_ms()
    }

    /// `-WRONGTYPE` unless `bucket` holds `kind`s.
    fn typed(&self, bucket: &[u8], kind: Datatype, command: &str) -> Result<(), Refusal> {
        let props = self.state.coordinator.bucket_props(bucket);
        if props.datatype == Some(kind) {
            return Ok(());
        }
        let holds = props
            .datatype
            .map_or_else(|| "plain values".to_string(), |d| format!("{d}s"));
        Err(Reply::Error(format!(
            "WRONGTYPE {command} needs a {kind} bucket; bucket '{}' holds {holds} \
             (PUT /v1/buckets/{} {{\"datatype\":\"{kind}\"}})",
            String::from_utf8_lossy(bucket),
            String::from_utf8_lossy(bucket),
        )))
    }

    /// `-WRONGTYPE` unless `bucket` is plain or `lww` (holds values).
    fn plain(&self, bucket: &[u8], command: &str) -> Result<Conflict, Refusal> {
        let props = self.state.coordinator.bucket_props(bucket);
        match props.datatype {
            None => Ok(props.conflict),
            Some(kind) => Err(Reply::Error(format!(
                "WRONGTYPE {command} needs a bucket of values; bucket '{}' holds {kind}s",
                String::from_utf8_lossy(bucket)
            ))),
        }
    }

    /// A data-type operation (no context: a remove removes what the coordinator holds).
    async fn dt(&self, bucket: &[u8], key: &[u8], op: DtOp) -> Result<(), Refusal> {
        let write = Write {
            ctx: CausalContext::empty(),
            body: WriteBody::Dt(op),
            ttl_secs: None,
        };
        self.state
            .coordinator
            .dt_write(bucket, key, write, None)
            .await?;
        Ok(())
    }

    /// A data-type key's value (`None`: nothing written).
    async fn dt_value(&self, bucket: &[u8], key: &[u8]) -> Result<Option<DtValue>, Refusal> {
        let coord = &self.state.coordinator;
        let props = coord.bucket_props(bucket);
        let read = coord.dt_read(bucket, key, &props, None).await?;
        coord.slide(bucket, key, &read.object);
        Ok(read.value)
    }

    async fn members(&self, bucket: &[u8], key: &[u8]) -> Result<Vec<String>, Refusal> {
        Ok(match self.dt_value(bucket, key).await? {
            Some(DtValue::Set(members)) => members,
            _ => Vec::new(),
        })
    }

    async fn items(&self, bucket: &[u8], key: &[u8]) -> Result<BTreeMap<String, i64>, Refusal> {
        Ok(match self.dt_value(bucket, key).await? {
            Some(DtValue::Cart(items)) => items,
            _ => BTreeMap::new(),
        })
    }

    /// A plain or `lww` key's visible value, or `-SIBLINGS` (module docs).
    async fn current(
        &self,
        bucket: &[u8],
        key: &[u8],
        conflict: Conflict,
    ) -> Result<Option<Current>, Refusal> {
        let coord = &self.state.coordinator;
        let obj = coord.get(bucket, key, None).await?;
        coord.slide(bucket, key, &obj);
        visible_value(&obj, conflict, coord.now_ms(), bucket, key)
    }

    /// `GET`: a value, a counter's value, or `-WRONGTYPE` for sets and carts.
    async fn get(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Bytes>, Refusal> {
        let props = self.state.coordinator.bucket_props(bucket);
        match props.datatype {
            None => Ok(self
                .current(bucket, key, props.conflict)
                .await?
                .map(|c| c.value)),
            Some(Datatype::Counter) => Ok(match self.dt_value(bucket, key).await? {
                Some(DtValue::Counter(v)) => Some(Bytes::from(v.to_string())),
                _ => None,
            }),
            Some(_) => self.plain(bucket, "GET").map(|_| None),
        }
    }

    /// `MGET`'s read of one key: as `GET`, but nil for sets and carts (as Redis answers nil
    /// for a key of another type).
    async fn get_or_nil(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Bytes>, Refusal> {
        match self.state.coordinator.bucket_props(bucket).datatype {
            Some(Datatype::Set | Datatype::Cart) => Ok(None),
            _ => self.get(bucket, key).await,
        }
    }

    /// A superseding write of `value` (`None`: a tombstone).
    async fn supersede(
        &self,
        bucket: &[u8],
        key: &[u8],
        value: Option<Bytes>,
        ttl_secs: Option<u64>,
    ) -> Result<(), Refusal> {
        let write = Write {
            ctx: CausalContext::empty(),
            body: WriteBody::Supersede(value.map(|v| v.to_vec())),
            ttl_secs,
        };
        self.state
            .coordinator
            .write(bucket, key, write, None)
            .await?;
        Ok(())
    }

    /// `SET` (and each pair of `MSET`).
    async fn set(
        &self,
        bucket: &[u8],
        key: &[u8],
        value: Bytes,
        ttl_secs: Option<u64>,
    ) -> Result<(), Refusal> {
        self.plain(bucket, "SET")?;
        let max = self.state.limits.value_bytes_max;
        if value.len() > max {
            return Err(Reply::err(format!(
                "value is {} bytes, limit {max} (limits.value_bytes_max)",
                value.len()
            )));
        }
        self.supersede(bucket, key, Some(value), ttl_secs).await
    }

    /// `DEL` of one key: whether it held a value (then a superseding tombstone is written).
    async fn delete(&self, bucket: &[u8], key: &[u8]) -> Result<bool, Refusal> {
        let conflict = match self.state.coordinator.bucket_props(bucket).datatype {
            None => self.plain(bucket, "DEL")?,
            Some(kind) => {
                return Err(Reply::err(format!(
                    "DEL of a {kind} key is not supported: data types have no delete                      (remove its members or items)"
                )))
            }
        };
        let held = match self.current(bucket, key, conflict).await {
            Ok(c) => c.is_some(),
            // Siblings are values too: the delete supersedes them all.
            Err(Reply::Error(e)) if e.starts_with("SIBLINGS") => true,
            Err(refusal) => return Err(refusal),
        };
        if held {
            self.supersede(bucket, key, None, None).await?;
        }
        Ok(held)
    }

    /// `EXISTS` of one key.
    async fn exists(&self, bucket: &[u8], key: &[u8]) -> Result<bool, Refusal> {
        let props = self.state.coordinator.bucket_props(bucket);
        match props.datatype {
            None => match self.current(bucket, key, props.conflict).await {
                Ok(c) => Ok(c.is_some()),
                Err(Reply::Error(e)) if e.starts_with("SIBLINGS") => Ok(true),
                Err(refusal) => Err(refusal),
            },
            Some(_) => Ok(self.dt_value(bucket, key).await?.is_some()),
        }
    }

    /// A key's expiry: `None` if it holds no value, `Some(None)` if it never expires.
    async fn expiry_of(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Option<u64>>, Refusal> {
        let coord = &self.state.coordinator;
        let props = coord.bucket_props(bucket);
        match props.datatype {
            None => Ok(self
                .current(bucket, key, props.conflict)
                .await?
                .map(|c| c.expires_at_ms)),
            Some(_) => {
                let read = coord.dt_read(bucket, key, &props, None).await?;
                Ok(read.value.map(|_| read.object.expires_at_ms()))
            }
        }
    }

    /// `EXPIRE` and its kin: a rewrite of the value read with the new expiry (module docs).
    async fn expire(
        &self,
        bucket: &[u8],
        key: &[u8],
        expiry: Expiry,
        condition: ExpireIf,
    ) -> Result<Reply, Refusal> {
        let conflict = self.plain(bucket, "EXPIRE")?;
        let now = self.now_ms();
        let Some(current) = self.current(bucket, key, conflict).await? else {
            return Ok(Reply::Int(0));
        };
        let new_at = match expiry {
            Expiry::In(ms) => (now as i64).saturating_add(ms),
            Expiry::At(ms) => ms,
        };
        let applies = match (condition, current.expires_at_ms) {
            (ExpireIf::Always, _) => true,
            (ExpireIf::NoExpiry, e) => e.is_none(),
            (ExpireIf::HasExpiry, e) => e.is_some(),
            (ExpireIf::Later, e) => e.is_some_and(|e| new_at > e as i64),
            (ExpireIf::Earlier, e) => e.is_none_or(|e| new_at < e as i64),
        };
        if !applies {
            return Ok(Reply::Int(0));
        }
        if new_at <= now as i64 {
            // An expiry in the past deletes the key, as in Redis.
            self.supersede(bucket, key, None, None).await?;
            return Ok(Reply::Int(1));
        }
        let ttl = expiry_secs(Some(Expiry::At(new_at)), now, "expire")?;
        self.supersede(bucket, key, Some(current.value), ttl)
            .await?;
        Ok(Reply::Int(1))
    }

    /// `PERSIST`: a rewrite of the value read without an expiry.
    async fn persist(&self, bucket: &[u8], key: &[u8]) -> Result<Reply, Refusal> {
        let conflict = self.plain(bucket, "PERSIST")?;
        let coord = &self.state.coordinator;
        let bucket_ttl = coord.bucket_props(bucket).ttl_secs;
        let default_ttl = coord.settings().default_ttl_secs;
        if let Some(t) = bucket_ttl.or((default_ttl > 0).then_some(default_ttl)) {
            return Err(Reply::err(format!(
                "every write to bucket '{}' expires after {t} s (the bucket's ttl_secs or                  ttl.default_ttl_secs): PERSIST cannot lift it",
                String::from_utf8_lossy(bucket)
            )));
        }
        match self.current(bucket, key, conflict).await? {
            Some(Current {
                value,
                expires_at_ms: Some(_),
            }) => {
                self.supersede(bucket, key, Some(value), None).await?;
                Ok(Reply::Int(1))
            }
            _ => Ok(Reply::Int(0)),
        }
    }
}

/// The value a reader sees of a plain (`Siblings`) or `lww` object at `now_ms`: `None` when
/// nothing or only tombstones are visible; `-SIBLINGS` when a plain key has several visible
/// versions (a tombstone among them counts, as in HTTP's `300`).
fn visible_value(
    obj: &Object,
    conflict: Conflict,
    now_ms: u64,
    bucket: &[u8],
    key: &[u8],
) -> Result<Option<Current>, Refusal> {
    let chosen = match conflict {
        Conflict::Lww => obj.visible(now_ms).max_by(|a, b| {
            (a.version.written_at_ms, &a.dot).cmp(&(b.version.written_at_ms, &b.dot))
        }),
        Conflict::Siblings => {
            let visible: Vec<_> = obj.visible(now_ms).collect();
            if visible.iter().all(|s| s.version.is_tombstone()) {
                return Ok(None);
            }
            if visible.len() > 1 {
                return Err(siblings_error(bucket, key, visible.len()));
            }
            visible.into_iter().next()
        }
    };
    Ok(chosen.and_then(|s| {
        s.version.value.as_ref().map(|v| Current {
            value: Bytes::from(v.clone()),
            expires_at_ms: s.version.expires_at_ms,
        })
    }))
}

/// The answer to reading a plain key with siblings (`docs/resp.md`, "Siblings").
pub fn siblings_error(bucket: &[u8], key: &[u8], count: usize) -> Reply {
    let path = |b: &[u8]| {
        percent_encoding::percent_encode(b, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    Reply::Error(format!(
        "SIBLINGS key has {count} concurrent values; read them with GET /v1/kv/{}/{} (HTTP          API), or SET the key to replace them",
        path(bucket),
        path(key)
    ))
}

/// The TTL in whole seconds of a write that expires per `expiry` (rounded up: a version's TTL
/// is in seconds); `ERR invalid expire time` past [`TTL_SECS_MAX`] or in the past.
fn expiry_secs(expiry: Option<Expiry>, now_ms: u64, command: &str) -> Result<Option<u64>, Refusal> {
    let invalid = || Reply::err(format!("invalid expire time in '{command}' command"));
    let ms = match expiry {
        None => return Ok(None),
        Some(Expiry::In(ms)) => ms,
        Some(Expiry::At(at)) => at.saturating_sub(now_ms as i64),
    };
    let ms = u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(invalid)?;
    let secs = ms.div_ceil(1000);
    if secs > TTL_SECS_MAX {
        return Err(invalid());
    }
    Ok(Some(secs))
}

/// A member or field name: UTF-8 (data types name items with strings).
fn utf8(arg: &[u8], what: &str) -> Result<String, Refusal> {
    String::from_utf8(arg.to_vec())
        .map_err(|_| Reply::err(format!("{what} must be UTF-8 text in a yeskv data type")))
}

fn utf8_all(args: &[Bytes], what: &str) -> Result<Vec<String>, Refusal> {
    args.iter().map(|a| utf8(a, what)).collect()
}

/// A connection name: no spaces or newlines (Redis's rule).
fn check_name(name: &[u8]) -> Result<(), Refusal> {
    if name.iter().any(|b| *b <= b' ' || *b > b'~') {
        return Err(Reply::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

/// `CONFIG GET`: what `redis-benchmark` asks at start (`save`, `appendonly`), answered for
/// yeskv (no snapshots; the WAL is not an append-only file); every other name matches nothing.
fn config_get(patterns: &[Bytes]) -> Reply {
    let known: [(&str, &str); 2] = [("save", ""), ("appendonly", "no")];
    let mut pairs = Vec::new();
    for (name, value) in known {
        if patterns
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name.as_bytes()) || &p[..] == b"*")
        {
            pairs.push((Reply::text(name), Reply::text(value)));
        }
    }
    Reply::Map(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yeskv_core::{Actor, NodeId, Version};

    fn object(versions: &[Option<&str>]) -> Object {
        let actor = Actor::new(NodeId::new("n1").expect("id"), 1);
        let mut obj = Object::new();
        for (i, v) in versions.iter().enumerate() {
            let version = match v {
                Some(v) => Version::value(v.as_bytes().to_vec(), 10 + i as u64, None),
                None => Version::tombstone(10 + i as u64),
            };
            // Blind writes: each a sibling.
            obj.update(&CausalContext::empty(), &actor, version, 0);
        }
        obj
    }

    #[test]
    fn the_siblings_rule() {
        let value = |obj: &Object, c| {
            visible_value(obj, c, 0, b"b", b"k")
                .map(|c| c.map(|c| c.value))
                .map_err(|e| format!("{e:?}"))
        };
        assert_eq!(value(&object(&[]), Conflict::Siblings), Ok(None));
        assert_eq!(value(&object(&[None]), Conflict::Siblings), Ok(None));
        assert_eq!(
            value(&object(&[Some("a")]), Conflict::Siblings),
            Ok(Some(Bytes::from("a")))
        );
        let two = object(&[Some("a"), Some("b")]);
        let e = value(&two, Conflict::Siblings).expect_err("siblings");
        assert!(e.contains("SIBLINGS key has 2 concurrent values"), "{e}");
        assert!(e.contains("GET /v1/kv/b/k"), "{e}");
        assert!(value(&object(&[Some("a"), None]), Conflict::Siblings).is_err());
        // Last writer wins: the latest.
        assert_eq!(value(&two, Conflict::Lww), Ok(Some(Bytes::from("b"))));
    }

    #[test]
    fn expiry_rounds_up_to_seconds_and_refuses_the_past() {
        assert_eq!(expiry_secs(None, 0, "set"), Ok(None));
        assert_eq!(expiry_secs(Some(Expiry::In(1)), 0, "set"), Ok(Some(1)));
        assert_eq!(expiry_secs(Some(Expiry::In(1500)), 0, "set"), Ok(Some(2)));
        assert_eq!(expiry_secs(Some(Expiry::In(3000)), 0, "set"), Ok(Some(3)));
        assert_eq!(
            expiry_secs(Some(Expiry::At(12_000)), 10_000, "set"),
            Ok(Some(2))
        );
        assert!(expiry_secs(Some(Expiry::At(5_000)), 10_000, "set").is_err());
        assert!(expiry_secs(Some(Expiry::In(i64::MAX)), 0, "set").is_err());
    }

    #[test]
    fn config_get_answers_what_redis_benchmark_asks() {
        assert_eq!(
            config_get(&[Bytes::from("save")]),
            Reply::Map(vec![(Reply::text("save"), Reply::text(""))])
        );
        assert_eq!(
            config_get(&[Bytes::from("APPENDONLY")]),
            Reply::Map(vec![(Reply::text("appendonly"), Reply::text("no"))])
        );
        assert_eq!(
            config_get(&[Bytes::from("maxmemory")]),
            Reply::Map(Vec::new())
        );
    }
}
