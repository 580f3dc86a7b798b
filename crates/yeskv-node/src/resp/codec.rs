//! The RESP wire format: requests in, replies out. Pure functions over byte buffers; no I/O.
//!
//! **Requests** are what Redis servers accept: a *multibulk* — `*N\r\n` then `N` bulk strings
//! `$LEN\r\n<bytes>\r\n` — or an *inline* command, one line of words separated by spaces
//! (telnet; no quoting). [`parse_command`] takes one command off the front of a buffer, or says
//! it is incomplete (wait for more bytes), or that it is malformed. Every limit is checked on
//! the headers, before the bytes they announce are waited for: a command of more than
//! [`Limits::args_max`] arguments or [`Limits::command_bytes_max`] bytes is refused as soon as
//! its header says so, so a client cannot make the node buffer more than that. A malformed
//! command cannot be skipped (the stream has no resynchronisation point), so the connection
//! answers the error and closes, as Redis does.
//!
//! **Replies** ([`Reply`]) are encoded for the connection's protocol version: RESP3 has maps,
//! sets and a null of its own; in RESP2 a map is a flat array of key, value, key, value…, a set
//! an array and the null `$-1`.
//!
//! Why not the `redis-protocol` crate (aembke), which decodes every RESP2 and RESP3 frame: a
//! server needs only arrays of bulk strings, and the crate's general decoder recurses once per
//! nesting level with no bound — a buffer of `*1\r\n` repeated 200,000 times (800 KB, under
//! the value limit) overflows the stack and aborts the process (tried on 6.0.0). It also has
//! no inline commands and no limits on what a header announces. So this module parses the
//! one shape a request has, flat, with limits; its tests check it against `redis-protocol`
//! (a dev-dependency) both ways: commands that crate encodes parse here, and replies encoded
//! here decode there to the same frames.

use bytes::{BufMut, BytesMut};

/// Bounds on one request (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most arguments of one command, its name included.
    pub args_max: usize,
    /// Most bytes of one command as sent (headers included).
    pub command_bytes_max: usize,
}

/// Longest inline command line, in bytes (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// Longest header line (`*N` or `$LEN`), in bytes, before its CRLF.
const HEADER_BYTES_MAX: usize = 32;

/// Why a request could not be parsed: the text of the `-ERR Protocol error: …` answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*N` with `N` not a number, or above [`Limits::args_max`].
    #[error("invalid multibulk length")]
    MultibulkLength,
    /// An argument that is not a bulk string.
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// `$LEN` not a number, negative, or past [`Limits::command_bytes_max`].
    #[error("invalid bulk length")]
    BulkLength,
    /// A bulk string not followed by CRLF.
    #[error("expected CRLF after a bulk string")]
    MissingCrlf,
    /// A header line without its CRLF within [`HEADER_BYTES_MAX`] bytes.
    #[error("header line too long")]
    HeaderTooLong,
    /// An inline command longer than [`INLINE_BYTES_MAX`].
    #[error("too big inline request")]
    InlineTooLong,
}

/// One parsed command: its arguments as ranges of the buffer it was parsed from, and how many
/// bytes it took. An empty `args` is a command to ignore (`*0`, `*-1`, an empty inline line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Byte ranges of the arguments, the command's name first.
    pub args: Vec<std::ops::Range<usize>>,
    /// Bytes of the buffer the command used.
    pub consumed: usize,
}

/// Parses one command at the start of `buf`: `Ok(None)` when it is not complete yet.
pub fn parse_command(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf),
    }
}

/// The line starting at `at` (without its CRLF) and where the next one starts; `Ok(None)` if
/// the CRLF has not arrived.
fn header_line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window = &buf[at..buf.len().min(at + HEADER_BYTES_MAX + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&window[..end], at + end + 2))),
        None if window.len() >= HEADER_BYTES_MAX + 2 => Err(ProtocolError::HeaderTooLong),
        None => Ok(None),
    }
}

/// A decimal integer of a header: an optional `-`, then 1 to 19 digits.
fn header_number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    let Some((line, mut at)) = header_line(buf, 0)? else {
        return Ok(None);
    };
    let count = header_number(&line[1..]).ok_or(ProtocolError::MultibulkLength)?;
    if count <= 0 {
        return Ok(Some(Parsed {
            args: Vec::new(),
            consumed: at,
        }));
    }
    let count = usize::try_from(count).map_err(|_| ProtocolError::MultibulkLength)?;
    if count > limits.args_max {
        return Err(ProtocolError::MultibulkLength);
    }
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(&kind) = buf.get(at) else {
            return Ok(None);
        };
        if kind != b'$' {
            return Err(ProtocolError::ExpectedBulk(char::from(kind)));
        }
        let Some((line, data)) = header_line(buf, at)? else {
            return Ok(None);
        };
        let len = header_number(&line[1..])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(ProtocolError::BulkLength)?;
        // What the command would be with this argument, before its bytes are waited for.
        if data.saturating_add(len).saturating_add(2) > limits.command_bytes_max {
            return Err(ProtocolError::BulkLength);
        }
        let end = data + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        args.push(data..end);
        at = end + 2;
    }
    Ok(Some(Parsed { args, consumed: at }))
}

fn parse_inline(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    let Some(newline) = buf
        .iter()
        .take(INLINE_BYTES_MAX + 1)
        .position(|&b| b == b'\n')
    else {
        return match buf.len() > INLINE_BYTES_MAX {
            true => Err(ProtocolError::InlineTooLong),
            false => Ok(None),
        };
    };
    let line_end = match newline > 0 && buf[newline - 1] == b'\r' {
        true => newline - 1,
        false => newline,
    };
    let mut args = Vec::new();
    let mut start = None;
    for (i, b) in buf[..line_end].iter().enumerate() {
        match (b.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                args.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        args.push(s..line_end);
    }
    Ok(Some(Parsed {
        args,
        consumed: newline + 1,
    }))
}

/// The protocol a connection speaks: 2 until `HELLO 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2.
    V2,
    /// RESP3.
    V3,
}

/// One reply, encoded per the connection's [`Protocol`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`-style status.
    Status(&'static str),
    /// An error: its code (`ERR`, `WRONGTYPE`, …) and message. CR and LF become spaces.
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(bytes::Bytes),
    /// Nothing (a missing key): `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// An array.
    Array(Vec<Reply>),
    /// A map: a flat array of key, value, … in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set: an array in RESP2.
    Set(Vec<Reply>),
}

impl Reply {
    /// `-ERR message`.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// A bulk string of text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(bytes::Bytes::from(s.into()))
    }

    /// The error code of an error reply (`ERR`, `WRONGTYPE`…), for metrics.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e.split(' ').next().unwrap_or("ERR")),
            _ => None,
        }
    }

    /// Appends the encoding of this reply to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        match self {
            Reply::Status(s) => {
                out.put_u8(b'+');
                out.put_slice(s.as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Error(e) => {
                out.put_u8(b'-');
                out.extend(e.bytes().map(|b| match b {
                    b'\r' | b'\n' => b' ',
                    b => b,
                }));
                out.put_slice(b"\r\n");
            }
            Reply::Int(n) => header(out, b':', *n),
            Reply::Bulk(b) => {
                header(out, b'$', b.len() as i64);
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Nil => match protocol {
                Protocol::V2 => out.put_slice(b"$-1\r\n"),
                Protocol::V3 => out.put_slice(b"_\r\n"),
            },
            Reply::Array(items) => {
                header(out, b'*', items.len() as i64);
                items.iter().for_each(|r| r.encode(protocol, out));
            }
            Reply::Set(items) => {
                let kind = match protocol {
                    Protocol::V2 => b'*',
                    Protocol::V3 => b'~',
                };
                header(out, kind, items.len() as i64);
                items.iter().for_each(|r| r.encode(protocol, out));
            }
            Reply::Map(pairs) => {
                match protocol {
                    Protocol::V2 => header(out, b'*', 2 * pairs.len() as i64),
                    Protocol::V3 => header(out, b'%', pairs.len() as i64),
                }
                for (k, v) in pairs {
                    k.encode(protocol, out);
                    v.encode(protocol, out);
                }
            }
        }
    }
}

/// `<kind><n>\r\n`.
fn header(out: &mut BytesMut, kind: u8, n: i64) {
    out.put_u8(kind);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis_protocol::resp2::types::{OwnedFrame as Frame2, Resp2Frame as _};
    use redis_protocol::resp3::types::OwnedFrame as Frame3;

    const LIMITS: Limits = Limits {
        args_max: 64,
        command_bytes_max: 4096,
    };

    fn args_of(buf: &[u8], parsed: &Parsed) -> Vec<Vec<u8>> {
        parsed
            .args
            .iter()
            .map(|r| buf[r.clone()].to_vec())
            .collect()
    }

    /// A command as `redis-protocol` encodes it (the oracle).
    fn encoded(args: &[Vec<u8>]) -> Vec<u8> {
        let frame = Frame2::Array(args.iter().cloned().map(Frame2::BulkString).collect());
        let mut buf = vec![0; frame.encode_len(false)];
        redis_protocol::resp2::encode::encode(&mut buf, &frame, false).expect("encodes");
        buf
    }

    #[test]
    fn parses_multibulk_and_inline() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n";
        let first = parse_command(buf, &LIMITS).expect("ok").expect("complete");
        assert_eq!(
            args_of(buf, &first),
            [b"SET".to_vec(), b"k".to_vec(), Vec::new()]
        );
        let rest = &buf[first.consumed..];
        let second = parse_command(rest, &LIMITS).expect("ok").expect("complete");
        assert_eq!(args_of(rest, &second), [b"PING".to_vec()]);
        assert_eq!(second.consumed, rest.len());
        let inline = b"  get   key\n";
        let p = parse_command(inline, &LIMITS)
            .expect("ok")
            .expect("complete");
        assert_eq!(args_of(inline, &p), [b"get".to_vec(), b"key".to_vec()]);
        let empty = parse_command(b"\r\n", &LIMITS)
            .expect("ok")
            .expect("complete");
        assert!(empty.args.is_empty());
        let zero = parse_command(b"*0\r\n", &LIMITS)
            .expect("ok")
            .expect("complete");
        assert_eq!((zero.args.len(), zero.consumed), (0, 4));
    }

    #[test]
    fn refuses_bad_and_oversized_input_from_its_header() {
        let refused = |buf: &[u8]| parse_command(buf, &LIMITS).expect_err("refused");
        assert_eq!(refused(b"*x\r\n"), ProtocolError::MultibulkLength);
        assert_eq!(refused(b"*65\r\n"), ProtocolError::MultibulkLength);
        assert_eq!(refused(b"*1\r\n:5\r\n"), ProtocolError::ExpectedBulk(':'));
        assert_eq!(refused(b"*1\r\n*1\r\n"), ProtocolError::ExpectedBulk('*'));
        assert_eq!(refused(b"*1\r\n$-5\r\n"), ProtocolError::BulkLength);
        assert_eq!(refused(b"*1\r\n$+5\r\n"), ProtocolError::BulkLength);
        // Past the command limit: refused on the header, no data sent.
        assert_eq!(refused(b"*1\r\n$5000\r\n"), ProtocolError::BulkLength);
        assert_eq!(refused(b"*1\r\n$3\r\nabcXY"), ProtocolError::MissingCrlf);
        assert_eq!(
            refused(&[b'*'; HEADER_BYTES_MAX + 3]),
            ProtocolError::HeaderTooLong
        );
        assert_eq!(
            refused(&vec![b'a'; INLINE_BYTES_MAX + 1]),
            ProtocolError::InlineTooLong
        );
        // Deep nesting is refused at once, not recursed into (module docs).
        assert_eq!(
            refused(&b"*1\r\n".repeat(200_000)),
            ProtocolError::ExpectedBulk('*')
        );
    }

    #[test]
    fn encodes_what_redis_protocol_decodes() {
        let reply = Reply::Map(vec![
            (Reply::text("server"), Reply::text("yeskv")),
            (Reply::text("proto"), Reply::Int(-3)),
            (
                Reply::text("list"),
                Reply::Array(vec![Reply::Nil, Reply::Status("OK")]),
            ),
            (Reply::text("set"), Reply::Set(vec![Reply::text("a")])),
        ]);
        let mut out = BytesMut::new();
        reply.encode(Protocol::V3, &mut out);
        let (frame, used) = redis_protocol::resp3::decode::complete::decode(&out)
            .expect("decodes")
            .expect("complete");
        assert_eq!(used, out.len());
        let Frame3::Map { data, .. } = frame else {
            panic!("a map: {frame:?}");
        };
        assert_eq!(data.len(), 4);
        let mut out = BytesMut::new();
        reply.encode(Protocol::V2, &mut out);
        let (frame, used) = redis_protocol::resp2::decode::decode(&out)
            .expect("decodes")
            .expect("complete");
        assert_eq!(used, out.len());
        let Frame2::Array(items) = frame else {
            panic!("an array: {frame:?}");
        };
        assert_eq!(items[0], Frame2::BulkString(b"server".to_vec()));
        assert_eq!(items[3], Frame2::Integer(-3));
        assert_eq!(
            items[5],
            Frame2::Array(vec![Frame2::Null, Frame2::SimpleString(b"OK".to_vec())])
        );
        let mut out = BytesMut::new();
        Reply::Error("ERR two\r\nlines".into()).encode(Protocol::V2, &mut out);
        assert_eq!(&out[..], b"-ERR two  lines\r\n");
    }

    fn arg() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..40)
    }

    proptest! {
        /// A pipeline of commands encoded by `redis-protocol`, cut into arbitrary pieces as a
        /// socket would deliver them, parses to the same commands, each exactly when its last
        /// byte has arrived.
        #[test]
        fn pipelines_parse_whatever_the_cuts(
            commands in prop::collection::vec(prop::collection::vec(arg(), 1..6), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let wire: Vec<u8> = commands.iter().flat_map(|c| encoded(c)).collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut buffer = Vec::new();
            let mut fed = 0;
            let mut parsed = Vec::new();
            for cut in cuts {
                buffer.extend_from_slice(&wire[fed..cut]);
                fed = cut;
                while let Some(p) = parse_command(&buffer, &LIMITS).expect("valid") {
                    parsed.push(args_of(&buffer, &p));
                    buffer.drain(..p.consumed);
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(parsed, commands);
        }

        /// Whatever the bytes, parsing answers (no panic), and a command it takes never claims
        /// more bytes than it was given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some(p)) = parse_command(&bytes, &LIMITS) {
                prop_assert!(p.consumed <= bytes.len());
                prop_assert!(p.args.iter().all(|r| r.end <= p.consumed));
            }
        }

        /// A truncated command is incomplete, never an error nor a shorter command.
        #[test]
        fn every_prefix_is_incomplete(command in prop::collection::vec(arg(), 1..6)) {
            let wire = encoded(&command);
            for end in 0..wire.len() {
                prop_assert_eq!(parse_command(&wire[..end], &LIMITS), Ok(None));
            }
        }

        /// Bulk strings and integers encoded here decode in `redis-protocol` to what they hold.
        #[test]
        fn replies_round_trip(values in prop::collection::vec(arg(), 0..6), n in any::<i64>()) {
            let mut items: Vec<Reply> =
                values.iter().map(|v| Reply::Bulk(bytes::Bytes::from(v.clone()))).collect();
            items.push(Reply::Int(n));
            let mut out = BytesMut::new();
            Reply::Array(items).encode(Protocol::V2, &mut out);
            let (frame, used) = redis_protocol::resp2::decode::decode(&out)
                .expect("decodes")
                .expect("complete");
            prop_assert_eq!(used, out.len());
            let mut want: Vec<Frame2> = values.into_iter().map(Frame2::BulkString).collect();
            want.push(Frame2::Integer(n));
            prop_assert_eq!(frame, Frame2::Array(want));
        }
    }
}
