//! Binary encodings: stored records and causal context tokens.
//!
//! Every persisted or transmitted encoding starts with a format version byte and carries a CRC32C
//! checksum, so corrupt bytes are detected and never served (STYLE habit 7). Decoders are total:
//! any input yields a value or an [`Error`], never a panic, and every length is bounded by the
//! bytes actually present.
//!
//! ## Stored record (format 1)
//! ```text
//! [0]      format = 1
//! [1..5]   CRC32C (little endian) of bytes [5..]
//! [5..13]  reap_at_ms, u64 LE: reserved (the node writes 0; see below)
//! [13..]   object body
//! ```
//! `reap_at_ms` once let a compaction filter drop expired records without decoding them; the node
//! writes 0 and nothing reads the field. Tombstones are removed by the node's reaper (after every
//! primary holds the same one); the compaction filter that drops expired records reads the
//! object body instead ([`record_expires_at_ms`], then [`decode_record`]), so that it decides
//! from what the record holds, whatever build wrote it. Object body: varint actor count, then per actor (node id string, epoch,
//! counter) — the clock; varint sibling count, then per sibling (actor index, counter, flags,
//! written_at_ms, optional expires_at_ms, optional value). Integers are LEB128 varints; strings and values are
//! length-prefixed.
//!
//! ## Causal context token (format 2)
//! `base64url(no padding)` of `[format=2][key tag u32 LE][seen vv][loose dots][MAC]`, where MAC
//! is the first [`TOKEN_MAC_BYTES`] bytes of HMAC-SHA256 over everything before it, under the
//! cluster's context subkey ([`crate::keyring`], [`crate::keyring::Purpose::Contexts`]). The key
//! tag binds a token to the key it was issued for, so a token from another key is refused; the
//! MAC makes a tampered, truncated or forged token fail (a client cannot make up a clock). A
//! token is checked against every key of the ring (primary first), so tokens signed before a
//! rotation stay valid while their key is in the ring. Format 1 (a CRC32C instead of the MAC,
//! forgeable by anyone) is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::causality::{Actor, CausalContext, Dot, NodeId, VersionVector};
use crate::error::Error;
use crate::keyring::Subkeys;
use crate::object::{Object, Sibling, Version};

/// Format version of stored records written by this build.
pub const RECORD_FORMAT: u8 = 1;
/// Bytes before the object body in a stored record.
pub const RECORD_HEADER_LEN: usize = 13;
/// Format version of causal context tokens issued by this build.
pub const TOKEN_FORMAT: u8 = 2;
/// Bytes of a token's MAC: a truncated HMAC-SHA256 (128 bits: a forger's chance per try is
/// 2^-128).
pub const TOKEN_MAC_BYTES: usize = 16;
/// Most actors a write may leave in a key's clock, and so in a context token: a write past it
/// is refused before anything is stored. Real clocks hold a few: one actor per primary and
/// actor epoch, one per stand-in hint lifetime (an outage), not per write.
pub const CLOCK_ACTORS_MAX: usize = 256;
/// Longest token accepted, in base64 characters: a context of [`CLOCK_ACTORS_MAX`] actors and
/// [`CausalContext::DOTS_MAX`] loose dots, each with the longest node id and the largest
/// epoch and counter, fits (35,856 characters; see the tests).
pub const TOKEN_LEN_MAX: usize = 36 * 1024;
/// Most actors accepted in one stored clock (a bound for decoders: merges of histories that
/// each stay under [`CLOCK_ACTORS_MAX`] stay far below it).
pub const ACTORS_MAX: usize = 4096;

const FLAG_TOMBSTONE: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

/// Appends a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A bounds-checked reader over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn err(&self, reason: &str) -> Error {
        Error::corrupt(self.what, reason)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| self.err("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    /// A dot counter: a varint of at most [`crate::causality::COUNTER_MAX`] (a larger one was
    /// never minted: it is forged or damaged, and counting up from it would overflow).
    pub(crate) fn counter(&mut self) -> Result<u64, Error> {
        let c = self.varint()?;
        if c > crate::causality::COUNTER_MAX {
            return Err(self.err("counter beyond any write an actor can make"));
        }
        Ok(c)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, Error> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.err("varint overflow"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    pub(crate) fn count(&mut self, max: usize) -> Result<usize, Error> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(self.err("count out of bounds"));
        }
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Error> {
        // The length is checked against what is left *after* its own varint was read: checked
        // against the bytes before it (`count(self.buf.len())`), a length one to ten bytes too
        // long passed and `split_at` panicked (found by the record scan's property test, which
        // reads records without verifying their checksum first).
        let n = self.varint()?;
        if n > self.buf.len() as u64 {
            return Err(self.err("length beyond the bytes present"));
        }
        let (b, rest) = self.buf.split_at(n as usize);
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn actor(&mut self) -> Result<Actor, Error> {
        let node = std::str::from_utf8(self.bytes()?).map_err(|_| self.err("node id not utf-8"))?;
        let node = NodeId::new(node).map_err(|e| self.err(&e.to_string()))?;
        let epoch = self.varint()?;
        Ok(Actor::new(node, epoch))
    }

    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

pub(crate) fn put_actor(out: &mut Vec<u8>, a: &Actor) {
    put_bytes(out, a.node.as_str().as_bytes());
    put_varint(out, a.epoch);
}

fn put_vv(out: &mut Vec<u8>, vv: &VersionVector) {
    put_varint(out, vv.len() as u64);
    for (a, c) in vv.iter() {
        put_actor(out, a);
        put_varint(out, c);
    }
}

fn read_vv(r: &mut Reader<'_>) -> Result<(VersionVector, Vec<Actor>), Error> {
    let n = r.count(ACTORS_MAX)?;
    let mut actors = Vec::with_capacity(n);
    let mut vv = VersionVector::new();
    for _ in 0..n {
        let a = r.actor()?;
        let c = r.counter()?;
        if c == 0 {
            return Err(r.err("zero counter in clock"));
        }
        if vv.get(&a) != 0 {
            return Err(r.err("duplicate actor in clock"));
        }
        vv.raise(&a, c);
        actors.push(a);
    }
    Ok((vv, actors))
}

/// Encodes an object as a stored record (header + checksum + body).
pub fn encode_record(obj: &Object, reap_at_ms: Option<u64>) -> Vec<u8> {
    let value_bytes: usize = obj
        .siblings()
        .iter()
        .map(|s| s.version.value.as_ref().map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + 32 + value_bytes + 24 * obj.clock().len());
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&reap_at_ms.unwrap_or(0).to_le_bytes());
    let clock = obj.clock();
    put_vv(&mut out, clock);
    let actors: Vec<&Actor> = clock.iter().map(|(a, _)| a).collect();
    put_varint(&mut out, obj.siblings().len() as u64);
    for s in obj.siblings() {
        // The object invariant guarantees the dot's actor is in the clock.
        let idx = actors.binary_search(&&s.dot.actor).unwrap_or(actors.len());
        put_varint(&mut out, idx as u64);
        put_varint(&mut out, s.dot.counter);
        let v = &s.version;
        let mut flags = 0;
        if v.value.is_none() {
            flags |= FLAG_TOMBSTONE;
        }
        if v.expires_at_ms.is_some() {
            flags |= FLAG_EXPIRES;
        }
        out.push(flags);
        put_varint(&mut out, v.written_at_ms);
        if let Some(exp) = v.expires_at_ms {
            put_varint(&mut out, exp);
        }
        if let Some(val) = &v.value {
            put_bytes(&mut out, val);
        }
    }
    let crc = crc32c::crc32c(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Bytes of a LEB128 varint of `v`.
fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

/// The length of [`encode_record`]'s encoding of `obj`, computed without encoding it: what the
/// object takes on disk and on the wire (the node's `limits.object_bytes_max` bounds it).
pub fn record_len(obj: &Object) -> usize {
    let clock = obj.clock();
    let mut len = RECORD_HEADER_LEN + varint_len(clock.len() as u64);
    for (a, c) in clock.iter() {
        let node = a.node.as_str().len();
        len += varint_len(node as u64) + node + varint_len(a.epoch) + varint_len(c);
    }
    len += varint_len(obj.siblings().len() as u64);
    let actors: Vec<&Actor> = clock.iter().map(|(a, _)| a).collect();
    for s in obj.siblings() {
        let idx = actors.binary_search(&&s.dot.actor).unwrap_or(actors.len());
        let v = &s.version;
        len += varint_len(idx as u64) + varint_len(s.dot.counter) + 1;
        len += varint_len(v.written_at_ms);
        len += v.expires_at_ms.map_or(0, varint_len);
        len += v
            .value
            .as_ref()
            .map_or(0, |val| varint_len(val.len() as u64) + val.len());
    }
    len
}

/// Reads `reap_at_ms` from a record header without verifying or decoding it (for compaction
/// filters). `None` when the record is too short or of an unknown format, or never reaped.
pub fn record_reap_at_ms(record: &[u8]) -> Option<u64> {
    if record.len() < RECORD_HEADER_LEN || record[0] != RECORD_FORMAT {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&record[5..13]);
    match u64::from_le_bytes(b) {
        0 => None,
        t => Some(t),
    }
}

/// The latest expiry of the object a record holds if it is *expiring* (every sibling a value
/// with an expiry: [`Object::expires_at_ms`]), read without verifying the checksum and without
/// allocating; `None` for any other object and for bytes that do not parse.
///
/// For a compaction filter, which sees every record each time it is compacted: most records are
/// kept, and this tells so at a fraction of [`decode_record`]'s cost. A record it names expired
/// must still be verified ([`decode_record`]) before it is dropped: a damaged record is kept,
/// so that the read path reports it.
pub fn record_expires_at_ms(record: &[u8]) -> Option<u64> {
    if record.len() < RECORD_HEADER_LEN || record[0] != RECORD_FORMAT {
        return None;
    }
    let mut r = Reader::new(&record[RECORD_HEADER_LEN..], "record");
    let actors = r.count(ACTORS_MAX).ok()?;
    for _ in 0..actors {
        r.bytes().ok()?;
        r.varint().ok()?;
        r.varint().ok()?;
    }
    let siblings = r.count(r.buf.len()).ok()?;
    let mut latest: Option<u64> = None;
    for _ in 0..siblings {
        r.varint().ok()?;
        r.varint().ok()?;
        let flags = r.u8().ok()?;
        if flags != FLAG_EXPIRES {
            // A tombstone, a value that never expires, or flags this build does not know.
            return None;
        }
        r.varint().ok()?;
        let exp = r.varint().ok()?;
        r.bytes().ok()?;
        latest = Some(latest.map_or(exp, |l| l.max(exp)));
    }
    r.finish().ok()?;
    latest
}

/// Verifies and decodes a stored record.
pub fn decode_record(record: &[u8]) -> Result<Object, Error> {
    let what = "record";
    if record.len() < RECORD_HEADER_LEN {
        return Err(Error::corrupt(what, "shorter than its header"));
    }
    if record[0] != RECORD_FORMAT {
        return Err(Error::UnsupportedFormat {
            what,
            version: record[0],
        });
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&record[1..5]);
    let stored = u32::from_le_bytes(crc);
    let actual = crc32c::crc32c(&record[5..]);
    if stored != actual {
        return Err(Error::corrupt(
            what,
            format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
        ));
    }
    let mut r = Reader::new(&record[RECORD_HEADER_LEN..], what);
    let (clock, actors) = read_vv(&mut r)?;
    let n = r.count(r.buf.len())?;
    let mut siblings = Vec::with_capacity(n);
    for _ in 0..n {
        let idx = r.varint()?;
        let actor = actors
            .get(usize::try_from(idx).unwrap_or(usize::MAX))
            .ok_or_else(|| r.err("sibling actor index out of range"))?
            .clone();
        let counter = r.counter()?;
        let flags = r.u8()?;
        if flags & !(FLAG_TOMBSTONE | FLAG_EXPIRES) != 0 {
            return Err(r.err("unknown sibling flags"));
        }
        let written_at_ms = r.varint()?;
        let expires_at_ms = if flags & FLAG_EXPIRES != 0 {
            Some(r.varint()?)
        } else {
            None
        };
        let value = if flags & FLAG_TOMBSTONE != 0 {
            None
        } else {
            Some(r.bytes()?.to_vec())
        };
        siblings.push(Sibling {
            dot: Dot { actor, counter },
            version: Version {
                value,
                written_at_ms,
                expires_at_ms,
            },
        });
    }
    r.finish()?;
    Object::from_parts(clock, siblings).map_err(|e| match e {
        Error::Corrupt { reason, .. } => Error::corrupt(what, reason),
        other => other,
    })
}

/// Encodes a causal context as an opaque token bound to a key (by `key_tag`), signed with the
/// primary of `keys`.
pub fn encode_token(ctx: &CausalContext, key_tag: u32, keys: &Subkeys) -> String {
    let mut out = Vec::with_capacity(24 + 24 * (ctx.seen.len() + ctx.dots.len()));
    out.push(TOKEN_FORMAT);
    out.extend_from_slice(&key_tag.to_le_bytes());
    put_vv(&mut out, &ctx.seen);
    put_varint(&mut out, ctx.dots.len() as u64);
    for d in &ctx.dots {
        put_actor(&mut out, &d.actor);
        put_varint(&mut out, d.counter);
    }
    let mac = token_mac(keys.primary(), &out).finalize().into_bytes();
    out.extend_from_slice(&mac[..TOKEN_MAC_BYTES]);
    URL_SAFE_NO_PAD.encode(out)
}

fn token_mac(key: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    mac
}

/// Decodes a token issued for the key with `key_tag` under one of `keys`. Any malformed,
/// tampered, truncated, forged or foreign token is an [`Error::InvalidContext`]; nothing of a
/// token is parsed before its MAC is verified (in constant time).
pub fn decode_token(token: &str, key_tag: u32, keys: &Subkeys) -> Result<CausalContext, Error> {
    let invalid = |m: &str| Error::InvalidContext(m.to_string());
    if token.len() > TOKEN_LEN_MAX {
        return Err(invalid("token too long"));
    }
    let raw = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| invalid("not base64url"))?;
    if raw.len() < 1 + 4 + TOKEN_MAC_BYTES {
        return Err(invalid("token too short"));
    }
    if raw[0] != TOKEN_FORMAT {
        return Err(invalid(&format!(
            "unknown token format {} (tokens of format 1 were not signed: read the key again)",
            raw[0]
        )));
    }
    let (body, mac) = raw.split_at(raw.len() - TOKEN_MAC_BYTES);
    let signed = keys
        .all()
        .iter()
        .any(|key| token_mac(key, body).verify_truncated_left(mac).is_ok());
    if !signed {
        return Err(invalid(
            "signature mismatch (token altered, truncated, forged, or signed by a key no \
             longer in the cluster keyring)",
        ));
    }
    let mut tag = [0u8; 4];
    tag.copy_from_slice(&body[1..5]);
    if u32::from_le_bytes(tag) != key_tag {
        return Err(invalid("token was issued for another key"));
    }
    let mut r = Reader::new(&body[5..], "context");
    let inner = |r: &mut Reader<'_>| -> Result<CausalContext, Error> {
        let (seen, _) = read_vv(r)?;
        if seen.len() > CLOCK_ACTORS_MAX {
            return Err(r.err("more actors than a write may leave"));
        }
        let n = r.count(CausalContext::DOTS_MAX)?;
        let mut dots = Vec::with_capacity(n);
        for _ in 0..n {
            let actor = r.actor()?;
            let counter = r.counter()?;
            dots.push(Dot { actor, counter });
        }
        r.finish()?;
        Ok(CausalContext { seen, dots })
    };
    let mut ctx = inner(&mut r).map_err(|e| Error::InvalidContext(e.to_string()))?;
    ctx.normalize();
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{Keyring, Purpose};

    fn keys() -> Subkeys {
        Keyring::unkeyed("test").derive(Purpose::Contexts)
    }

    fn sample() -> Object {
        let a = Actor::new(NodeId::new("n1").expect("valid"), 42);
        let b = Actor::new(NodeId::new("n2").expect("valid"), 7);
        let mut o = Object::new();
        o.update(
            &CausalContext::empty(),
            &a,
            Version::value(b"hello".to_vec(), 5, Some(99)),
            0,
        );
        o.update(&CausalContext::empty(), &b, Version::tombstone(6), 0);
        o
    }

    /// The largest context a write can leave (every limit at its worst) fits the token length
    /// bound and decodes back; one actor more is refused by the decoder.
    #[test]
    fn the_largest_context_fits_its_token() {
        let actor = |i: usize| {
            let id = format!("{i:0>64}");
            Actor::new(NodeId::new(id).expect("id"), u64::MAX)
        };
        let mut ctx = CausalContext::empty();
        for i in 0..CLOCK_ACTORS_MAX {
            ctx.seen.raise(&actor(i), crate::causality::COUNTER_MAX);
        }
        for i in 0..CausalContext::DOTS_MAX {
            ctx.dots.push(Dot {
                actor: actor(10_000 + i),
                counter: crate::causality::COUNTER_MAX,
            });
        }
        let token = encode_token(&ctx, 7, &keys());
        assert!(token.len() <= TOKEN_LEN_MAX, "{} characters", token.len());
        let back = decode_token(&token, 7, &keys()).expect("decodes");
        assert_eq!(back.seen.len(), CLOCK_ACTORS_MAX);

        ctx.seen.raise(&actor(CLOCK_ACTORS_MAX), 1);
        let token = encode_token(&ctx, 7, &keys());
        assert!(decode_token(&token, 7, &keys()).is_err());
    }

    #[test]
    fn varint_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn record_round_trip() {
        let o = sample();
        let rec = encode_record(&o, Some(1234));
        assert_eq!(record_len(&o), rec.len());
        assert_eq!(record_reap_at_ms(&rec), Some(1234));
        assert_eq!(decode_record(&rec).expect("decodes"), o);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let rec = encode_record(&sample(), None);
        for i in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[i] ^= 1 << bit;
                assert!(decode_record(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn token_round_trip_and_key_binding() {
        let ctx = sample().context();
        let t = encode_token(&ctx, 17, &keys());
        assert_eq!(decode_token(&t, 17, &keys()).expect("decodes"), ctx);
        assert!(matches!(
            decode_token(&t, 18, &keys()),
            Err(Error::InvalidContext(_))
        ));
        assert!(decode_token("garbage!", 17, &keys()).is_err());
        assert!(decode_token("", 17, &keys()).is_err());
    }

    /// A context naming a counter no actor can reach (forged: `u64::MAX` would wrap the next
    /// counter) is refused, in the clock and as a loose dot alike.
    #[test]
    fn a_counter_beyond_any_write_is_refused() {
        let actor = Actor::new(NodeId::new("n9").expect("id"), 1);
        let mut seen = CausalContext::empty();
        seen.seen.raise(&actor, u64::MAX);
        let t = encode_token(&seen, 17, &keys());
        assert!(matches!(
            decode_token(&t, 17, &keys()),
            Err(Error::InvalidContext(_))
        ));
        let loose = CausalContext {
            seen: Default::default(),
            dots: vec![Dot {
                actor: actor.clone(),
                counter: crate::causality::COUNTER_MAX + 1,
            }],
        };
        let t = encode_token(&loose, 17, &keys());
        assert!(matches!(
            decode_token(&t, 17, &keys()),
            Err(Error::InvalidContext(_))
        ));
        let mut fine = CausalContext::empty();
        fine.seen.raise(&actor, crate::causality::COUNTER_MAX);
        let t = encode_token(&fine, 17, &keys());
        assert_eq!(decode_token(&t, 17, &keys()).expect("decodes"), fine);
    }

    /// Changing any bit of a token, or cutting it short, makes it fail: the MAC covers every
    /// byte before it, and the MAC itself is compared whole.
    #[test]
    fn every_flipped_bit_of_a_token_is_refused() {
        let token = encode_token(&sample().context(), 17, &keys());
        let raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[i] ^= 1 << bit;
                let bad = URL_SAFE_NO_PAD.encode(&bad);
                assert!(
                    decode_token(&bad, 17, &keys()).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        for cut in 1..raw.len() {
            let short = URL_SAFE_NO_PAD.encode(&raw[..raw.len() - cut]);
            assert!(decode_token(&short, 17, &keys()).is_err(), "cut {cut}");
        }
    }

    /// A token signed by another cluster's key (or the unsigned format 1) is refused; after a
    /// rotation the old key's tokens are accepted while it is in the ring, and refused once it
    /// is dropped.
    #[test]
    fn tokens_follow_the_keyring_through_a_rotation() {
        let old = Keyring::new(vec![[1; 32]]).expect("ring");
        let ctx = sample().context();
        let signed_old = encode_token(&ctx, 3, &old.derive(Purpose::Contexts));
        assert!(decode_token(&signed_old, 3, &keys()).is_err());

        let both = old.with_primary([2; 32]).expect("room");
        let contexts = both.derive(Purpose::Contexts);
        assert_eq!(
            decode_token(&signed_old, 3, &contexts).expect("old key"),
            ctx
        );
        let signed_new = encode_token(&ctx, 3, &contexts);
        assert_ne!(signed_new, signed_old);

        let new_only = Keyring::new(vec![[2; 32]])
            .expect("ring")
            .derive(Purpose::Contexts);
        assert_eq!(
            decode_token(&signed_new, 3, &new_only).expect("new key"),
            ctx
        );
        let refused = decode_token(&signed_old, 3, &new_only).expect_err("refused");
        assert!(refused.to_string().contains("signature"), "{refused}");

        let mut v1 = URL_SAFE_NO_PAD.decode(&signed_new).expect("base64");
        v1[0] = 1;
        let refused = decode_token(&URL_SAFE_NO_PAD.encode(v1), 3, &new_only).expect_err("refused");
        assert!(refused.to_string().contains("format 1"), "{refused}");
    }
}
