//! The command table: which Redis commands the listener knows, their arity and options,
//! parsed from a request's arguments into a [`Command`]. Pure: no I/O, no node state.
//!
//! A command that does not parse is answered with Redis's own phrasing (`ERR wrong number of
//! arguments for 'get' command`, `ERR syntax error`, `ERR value is not an integer or out of
//! range`, `ERR unknown command 'x', with args beginning with: …`) and changes nothing. What
//! each command does with the node is in [`super::exec`]; `docs/resp.md` is the table for
//! users.

use bytes::Bytes;

use super::codec::Reply;

/// When a `SET` or an `EXPIRE` makes a key expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// In this many milliseconds from now (`EX`, `PX`, `EXPIRE`, `PEXPIRE`).
    In(i64),
    /// At this Unix time in milliseconds (`EXAT`, `PXAT`, `EXPIREAT`, `PEXPIREAT`).
    At(i64),
}

/// `EXPIRE`'s condition on the key's current expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireIf {
    /// Always.
    Always,
    /// Only if it has none (`NX`).
    NoExpiry,
    /// Only if it has one (`XX`).
    HasExpiry,
    /// Only if the new one is later (`GT`; none counts as never, so never later).
    Later,
    /// Only if the new one is earlier (`LT`; none counts as never).
    Earlier,
}

/// A parsed command. Keys are raw (`bucket:key` or a bare key): the session resolves them.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    // Connection commands: they read or change the connection's state and run in order.
    /// `PING [message]`.
    Ping(Option<Bytes>),
    /// `ECHO message`.
    Echo(Bytes),
    /// `HELLO [protover [AUTH user secret] [SETNAME name]]`.
    Hello {
        /// The protocol asked for.
        protocol: Option<Bytes>,
        /// `AUTH user secret`.
        auth: Option<(Bytes, Bytes)>,
        /// `SETNAME name`.
        name: Option<Bytes>,
    },
    /// `AUTH [user] secret`.
    Auth(Bytes),
    /// `QUIT`.
    Quit,
    /// `SELECT index`.
    Select(Bytes),
    /// `CLIENT subcommand …`.
    Client(Vec<Bytes>),
    /// `INFO [section …]`.
    Info,
    /// `COMMAND [subcommand …]`.
    CommandInfo(Option<Bytes>),
    /// `CONFIG GET pattern …` (anything else is refused).
    ConfigGet(Vec<Bytes>),
    /// `YESKV.BUCKET [name]`: shows or sets the connection's default bucket.
    Bucket(Option<Bytes>),
    // Key commands: they run concurrently with their neighbours on other keys.
    /// `GET key`.
    Get(Bytes),
    /// `SET key value [EX s|PX ms|EXAT t|PXAT t]`.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// When it expires.
        expiry: Option<Expiry>,
    },
    /// `DEL key …`.
    Del(Vec<Bytes>),
    /// `EXISTS key …`.
    Exists(Vec<Bytes>),
    /// `MGET key …`.
    MGet(Vec<Bytes>),
    /// `MSET key value …`.
    MSet(Vec<(Bytes, Bytes)>),
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`.
    Expire {
        /// The key.
        key: Bytes,
        /// When it expires.
        expiry: Expiry,
        /// Under which condition.
        condition: ExpireIf,
    },
    /// `TTL key` (seconds) or `PTTL key` (milliseconds).
    Ttl {
        /// The key.
        key: Bytes,
        /// Milliseconds (`PTTL`).
        millis: bool,
    },
    /// `PERSIST key`.
    Persist(Bytes),
    /// `INCR`, `DECR`, `INCRBY`, `DECRBY`.
    IncrBy {
        /// The key.
        key: Bytes,
        /// The increment.
        by: i64,
    },
    /// `SADD key member …`.
    SAdd(Bytes, Vec<Bytes>),
    /// `SREM key member …`.
    SRem(Bytes, Vec<Bytes>),
    /// `SMEMBERS key`.
    SMembers(Bytes),
    /// `SISMEMBER key member`.
    SIsMember(Bytes, Bytes),
    /// `SCARD key`.
    SCard(Bytes),
    /// `HSET key field value …` (`HMSET` too).
    HSet {
        /// The key.
        key: Bytes,
        /// Each field and its new quantity.
        pairs: Vec<(Bytes, Bytes)>,
        /// `HMSET` answers `OK`, `HSET` the number of new fields.
        ok: bool,
    },
    /// `HINCRBY key field by`.
    HIncrBy {
        /// The key.
        key: Bytes,
        /// The field.
        field: Bytes,
        /// The increment.
        by: i64,
    },
    /// `HDEL key field …`.
    HDel(Bytes, Vec<Bytes>),
    /// `HGETALL key`.
    HGetAll(Bytes),
    /// `HGET key field`.
    HGet(Bytes, Bytes),
    /// `HLEN key`.
    HLen(Bytes),
}

/// Commands the listener knows, by name (lower case: the metrics' `command` label), and
/// their arity as Redis states it: `n` exactly `n` arguments with the name, `-n` at least `n`.
pub const TABLE: &[(&str, i32)] = &[
    ("ping", -1),
    ("echo", 2),
    ("hello", -1),
    ("auth", -2),
    ("quit", -1),
    ("select", 2),
    ("client", -2),
    ("info", -1),
    ("command", -1),
    ("config", -2),
    ("yeskv.bucket", -1),
    ("get", 2),
    ("set", -3),
    ("del", -2),
    ("exists", -2),
    ("mget", -2),
    ("mset", -3),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("persist", 2),
    ("incr", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("sadd", -3),
    ("srem", -3),
    ("smembers", 2),
    ("sismember", 3),
    ("scard", 2),
    ("hset", -4),
    ("hmset", -4),
    ("hincrby", 4),
    ("hdel", -3),
    ("hgetall", 2),
    ("hget", 3),
    ("hlen", 2),
];

/// Redis commands deliberately not served, with why (`docs/resp.md`, "Not supported").
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "keys",
        "no key listing: a key's replicas are spread over the cluster",
    ),
    (
        "scan",
        "no key listing: a key's replicas are spread over the cluster",
    ),
    (
        "dbsize",
        "no key count: nothing counts the cluster's keys cheaply",
    ),
    ("flushall", "no bulk delete"),
    ("flushdb", "no bulk delete"),
    ("multi", "no transactions"),
    ("exec", "no transactions"),
    ("watch", "no transactions"),
    ("discard", "no transactions"),
    ("subscribe", "no pub/sub"),
    ("psubscribe", "no pub/sub"),
    ("publish", "no pub/sub"),
    ("eval", "no scripts"),
    ("evalsha", "no scripts"),
    ("script", "no scripts"),
    ("function", "no scripts"),
    ("setnx", "no atomic check-and-set across replicas"),
    ("getset", "no atomic check-and-set across replicas"),
    ("getdel", "no atomic check-and-set across replicas"),
    ("append", "no in-place string edits: SET the whole value"),
    ("setex", "use SET key value EX seconds"),
    ("psetex", "use SET key value PX milliseconds"),
];

/// The table's name for `name` (any case), if the listener knows it.
pub fn known(name: &[u8]) -> Option<(&'static str, i32)> {
    TABLE
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .copied()
}

/// `ERR wrong number of arguments for 'name' command`.
fn arity_error(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// `ERR value is not an integer or out of range`.
pub fn not_an_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

/// `ERR syntax error`.
fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

/// An argument as a decimal `i64`, as Redis reads one.
pub fn integer(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !s.starts_with('+') && !s.is_empty())
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(not_an_integer)
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' ` (Redis's phrasing), or why a
/// known Redis command is not served.
fn unknown(args: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&args[0]);
    let lower = name.to_ascii_lowercase();
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == lower) {
        return Reply::err(format!(
            "{} is not supported by yeskv: {why} (docs/resp.md)",
            name.to_ascii_uppercase()
        ));
    }
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let arg = String::from_utf8_lossy(arg);
        let room = 128 - listed.len();
        listed.push_str(&format!(
            "'{}' ",
            arg.chars().take(room).collect::<String>()
        ));
    }
    let name: String = name.chars().take(128).collect();
    Reply::err(format!(
        "unknown command '{name}', with args beginning with: {listed}"
    ))
}

/// Parses a request's arguments (the name first; never empty) into a command, or the reply
/// that refuses it. Returns the table's name for metrics (`None` for an unknown command).
pub fn parse(args: &[Bytes]) -> (Option<&'static str>, Result<Command, Reply>) {
    let Some((name, arity)) = known(&args[0]) else {
        return (None, Err(unknown(args)));
    };
    let count = args.len() as i32;
    if (arity >= 0 && count != arity) || (arity < 0 && count < -arity) {
        return (Some(name), Err(arity_error(name)));
    }
    (Some(name), parse_known(name, args))
}

fn parse_known(name: &'static str, args: &[Bytes]) -> Result<Command, Reply> {
    let arg = |i: usize| args[i].clone();
    let rest = |from: usize| args[from..].to_vec();
    let upper = |i: usize| args[i].to_ascii_uppercase();
    Ok(match name {
        "ping" => match args.len() {
            1 => Command::Ping(None),
            2 => Command::Ping(Some(arg(1))),
            _ => return Err(arity_error(name)),
        },
        "echo" => Command::Echo(arg(1)),
        "hello" => parse_hello(args)?,
        "auth" => match args.len() {
            // `AUTH user secret`: the user name is not checked (a key is its own identity).
            2 | 3 => Command::Auth(arg(args.len() - 1)),
            _ => return Err(syntax_error()),
        },
        "quit" => Command::Quit,
        "select" => Command::Select(arg(1)),
        "client" => Command::Client(rest(1)),
        "info" => Command::Info,
        "command" => Command::CommandInfo(args.get(1).cloned()),
        "config" => match upper(1).as_slice() {
            b"GET" if args.len() >= 3 => Command::ConfigGet(rest(2)),
            b"GET" => return Err(arity_error("config|get")),
            _ => {
                return Err(Reply::err(format!(
                    "CONFIG {} is not supported by yeskv: its settings are in the node's \
                     config file",
                    String::from_utf8_lossy(&args[1]).to_ascii_uppercase()
                )))
            }
        },
        "yeskv.bucket" => match args.len() {
            1 => Command::Bucket(None),
            2 => Command::Bucket(Some(arg(1))),
            _ => return Err(arity_error(name)),
        },
        "get" => Command::Get(arg(1)),
        "set" => parse_set(args)?,
        "del" => Command::Del(rest(1)),
        "exists" => Command::Exists(rest(1)),
        "mget" => Command::MGet(rest(1)),
        "mset" => {
            if args.len().is_multiple_of(2) {
                return Err(arity_error(name));
            }
            Command::MSet(pairs(&args[1..]))
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let n = integer(&args[2])?;
            let ms = match name {
                "expire" | "expireat" => n.checked_mul(1000).ok_or_else(|| {
                    Reply::err(format!("invalid expire time in '{name}' command"))
                })?,
                _ => n,
            };
            let expiry = match name {
                "expire" | "pexpire" => Expiry::In(ms),
                _ => Expiry::At(ms),
            };
            let condition = match args.get(3).map(|a| a.to_ascii_uppercase()).as_deref() {
                None => ExpireIf::Always,
                Some(b"NX") => ExpireIf::NoExpiry,
                Some(b"XX") => ExpireIf::HasExpiry,
                Some(b"GT") => ExpireIf::Later,
                Some(b"LT") => ExpireIf::Earlier,
                Some(other) => {
                    return Err(Reply::err(format!(
                        "Unsupported option {}",
                        String::from_utf8_lossy(other)
                    )))
                }
            };
            if args.len() > 4 {
                return Err(Reply::err(
                    "NX and XX, GT or LT options at the same time are not compatible",
                ));
            }
            Command::Expire {
                key: arg(1),
                expiry,
                condition,
            }
        }
        "ttl" | "pttl" => Command::Ttl {
            key: arg(1),
            millis: name == "pttl",
        },
        "persist" => Command::Persist(arg(1)),
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                "incrby" => integer(&args[2])?,
                _ => integer(&args[2])?
                    .checked_neg()
                    .ok_or_else(|| Reply::err("decrement would overflow"))?,
            };
            Command::IncrBy { key: arg(1), by }
        }
        "sadd" => Command::SAdd(arg(1), rest(2)),
        "srem" => Command::SRem(arg(1), rest(2)),
        "smembers" => Command::SMembers(arg(1)),
        "sismember" => Command::SIsMember(arg(1), arg(2)),
        "scard" => Command::SCard(arg(1)),
        "hset" | "hmset" => {
            if !args.len().is_multiple_of(2) {
                return Err(arity_error(name));
            }
            Command::HSet {
                key: arg(1),
                pairs: pairs(&args[2..]),
                ok: name == "hmset",
            }
        }
        "hincrby" => Command::HIncrBy {
            key: arg(1),
            field: arg(2),
            by: integer(&args[3])?,
        },
        "hdel" => Command::HDel(arg(1), rest(2)),
        "hgetall" => Command::HGetAll(arg(1)),
        "hget" => Command::HGet(arg(1), arg(2)),
        "hlen" => Command::HLen(arg(1)),
        other => return Err(unknown(&[Bytes::from_static(other.as_bytes())])),
    })
}

/// `a b c d` → `(a, b), (c, d)`.
fn pairs(args: &[Bytes]) -> Vec<(Bytes, Bytes)> {
    args.chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

fn parse_hello(args: &[Bytes]) -> Result<Command, Reply> {
    let mut hello = Command::Hello {
        protocol: args.get(1).cloned(),
        auth: None,
        name: None,
    };
    let Command::Hello { auth, name, .. } = &mut hello else {
        unreachable!("just made");
    };
    let mut at = 2;
    while at < args.len() {
        match args[at].to_ascii_uppercase().as_slice() {
            b"AUTH" if at + 2 < args.len() => {
                *auth = Some((args[at + 1].clone(), args[at + 2].clone()));
                at += 3;
            }
            b"SETNAME" if at + 1 < args.len() => {
                *name = Some(args[at + 1].clone());
                at += 2;
            }
            _ => {
                return Err(Reply::err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[at])
                )))
            }
        }
    }
    Ok(hello)
}

fn parse_set(args: &[Bytes]) -> Result<Command, Reply> {
    let mut expiry = None;
    let mut at = 3;
    while at < args.len() {
        let option = args[at].to_ascii_uppercase();
        match option.as_slice() {
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                let Some(n) = args.get(at + 1) else {
                    return Err(syntax_error());
                };
                if expiry.is_some() {
                    return Err(syntax_error());
                }
                let n = integer(n)?;
                let invalid = || Reply::err("invalid expire time in 'set' command");
                if n <= 0 {
                    return Err(invalid());
                }
                expiry = Some(match option.as_slice() {
                    b"EX" => Expiry::In(n.checked_mul(1000).ok_or_else(invalid)?),
                    b"PX" => Expiry::In(n),
                    b"EXAT" => Expiry::At(n.checked_mul(1000).ok_or_else(invalid)?),
                    _ => Expiry::At(n),
                });
                at += 2;
            }
            b"NX" | b"XX" | b"GET" | b"KEEPTTL" => {
                return Err(Reply::err(format!(
                    "SET {} is not supported by yeskv: it needs an atomic read-and-write of \
                     every replica (docs/resp.md)",
                    String::from_utf8_lossy(&option)
                )))
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok(Command::Set {
        key: args[1].clone(),
        value: args[2].clone(),
        expiry,
    })
}

impl Command {
    /// The raw keys the command reads or writes (empty for connection commands).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Command::Get(k)
            | Command::Set { key: k, .. }
            | Command::Expire { key: k, .. }
            | Command::Ttl { key: k, .. }
            | Command::Persist(k)
            | Command::IncrBy { key: k, .. }
            | Command::SAdd(k, _)
            | Command::SRem(k, _)
            | Command::SMembers(k)
            | Command::SIsMember(k, _)
            | Command::SCard(k)
            | Command::HSet { key: k, .. }
            | Command::HIncrBy { key: k, .. }
            | Command::HDel(k, _)
            | Command::HGetAll(k)
            | Command::HGet(k, _)
            | Command::HLen(k) => vec![k],
            Command::Del(keys) | Command::Exists(keys) | Command::MGet(keys) => {
                keys.iter().collect()
            }
            Command::MSet(pairs) => pairs.iter().map(|(k, _)| k).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether it reads or changes the connection's state (runs alone, in order).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Command::Ping(_)
                | Command::Echo(_)
                | Command::Hello { .. }
                | Command::Auth(_)
                | Command::Quit
                | Command::Select(_)
                | Command::Client(_)
                | Command::Info
                | Command::CommandInfo(_)
                | Command::ConfigGet(_)
                | Command::Bucket(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> (Option<&'static str>, Result<Command, Reply>) {
        let args: Vec<Bytes> = line
            .split(' ')
            .map(|s| Bytes::from(s.to_string()))
            .collect();
        parse(&args)
    }

    fn error(line: &str) -> String {
        match cmd(line).1 {
            Err(Reply::Error(e)) => e,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn errors_are_phrased_as_redis_phrases_them() {
        assert_eq!(
            error("foo a b"),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            error("GET"),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            error("get a b"),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            error("incrby k x"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            error("set k v ex 0"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(error("set k v ex 1 px 2"), "ERR syntax error");
        assert_eq!(error("set k v bogus"), "ERR syntax error");
        assert!(error("set k v nx").contains("SET NX is not supported"));
        assert!(error("KEYS *").contains("KEYS is not supported by yeskv"));
        assert!(error("config set save x").contains("CONFIG SET is not supported"));
        assert_eq!(cmd("foo").0, None);
        assert_eq!(cmd("GeT k").0, Some("get"));
    }

    #[test]
    fn options_and_keys() {
        assert_eq!(
            cmd("SET k v PX 1500").1,
            Ok(Command::Set {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
                expiry: Some(Expiry::In(1500)),
            })
        );
        assert_eq!(
            cmd("set k v exat 10").1,
            Ok(Command::Set {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
                expiry: Some(Expiry::At(10_000)),
            })
        );
        assert_eq!(
            cmd("expire k 5 gt").1,
            Ok(Command::Expire {
                key: Bytes::from("k"),
                expiry: Expiry::In(5000),
                condition: ExpireIf::Later,
            })
        );
        assert_eq!(
            cmd("decrby c 4").1,
            Ok(Command::IncrBy {
                key: Bytes::from("c"),
                by: -4
            })
        );
        assert!(cmd("decrby c -9223372036854775808").1.is_err());
        assert_eq!(
            error("mset a 1 b"),
            "ERR wrong number of arguments for 'mset' command"
        );
        let mset = cmd("mset a 1 b 2").1.expect("parses");
        assert_eq!(mset.keys(), [&Bytes::from("a"), &Bytes::from("b")]);
        assert!(!mset.is_connection());
        let hello = cmd("HELLO 3 AUTH u s SETNAME me").1.expect("parses");
        assert_eq!(
            hello,
            Command::Hello {
                protocol: Some(Bytes::from("3")),
                auth: Some((Bytes::from("u"), Bytes::from("s"))),
                name: Some(Bytes::from("me")),
            }
        );
        assert!(hello.is_connection() && hello.keys().is_empty());
        assert!(error("hello 3 auth u").starts_with("ERR Syntax error in HELLO option"));
        assert_eq!(
            cmd("auth u secret").1,
            Ok(Command::Auth(Bytes::from("secret")))
        );
    }
}
