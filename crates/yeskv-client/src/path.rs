//! Request paths: buckets and keys as percent-encoded path segments.
//!
//! Buckets and keys are arbitrary bytes. Each is sent as exactly one path segment in which every
//! byte except the RFC 3986 *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) is percent-encoded, so
//! `/`, `?`, `%`, spaces and non-UTF-8 bytes all survive the trip. A segment made only of dots
//! (`.` or `..`) is encoded entirely (`%2E`), so that no proxy or URL normalizer mistakes it for a
//! relative-path step.

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use yeskv_core::Quorum;

/// Bytes that are encoded in a segment: everything but the unreserved characters.
const SEGMENT_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends `segment`, percent-encoded as one path segment, to `out`.
pub(crate) fn push_segment(out: &mut String, segment: &[u8]) {
    if !segment.is_empty() && segment.iter().all(|&byte| byte == b'.') {
        for _ in segment {
            out.push_str("%2E");
        }
        return;
    }
    for chunk in percent_encode(segment, SEGMENT_ENCODE_SET) {
        out.push_str(chunk);
    }
}

/// `segment` percent-encoded as one path segment (see the module docs).
pub fn encode_segment(segment: &[u8]) -> String {
    let mut out = String::with_capacity(segment.len());
    push_segment(&mut out, segment);
    out
}

/// The path and query of a key request: `/v1/kv/{bucket}/{key}` plus the given query parameters
/// (`r`, `w`, `ttl`), without the node's path prefix.
pub(crate) fn key_path(
    bucket: &[u8],
    key: &[u8],
    quorum: Option<(&str, Quorum)>,
    ttl_secs: Option<u64>,
) -> String {
    object_path("/v1/kv/", bucket, key, None, quorum, ttl_secs)
}

/// The path and query of a data-type request: `/v1/dt/{bucket}/{key}` plus `r` or `w` and `ttl`.
pub(crate) fn dt_path(
    bucket: &[u8],
    key: &[u8],
    quorum: Option<(&str, Quorum)>,
    ttl_secs: Option<u64>,
) -> String {
    object_path("/v1/dt/", bucket, key, None, quorum, ttl_secs)
}

/// The path and query of a touch: `/v1/kv/{bucket}/{key}?touch`, plus `w` and `ttl`.
pub(crate) fn touch_path(
    bucket: &[u8],
    key: &[u8],
    w: Option<Quorum>,
    ttl_secs: Option<u64>,
) -> String {
    object_path(
        "/v1/kv/",
        bucket,
        key,
        Some("touch"),
        w.map(|w| ("w", w)),
        ttl_secs,
    )
}

/// The path of a bucket's properties: `/v1/buckets/{bucket}`.
pub(crate) fn bucket_path(bucket: &[u8]) -> String {
    let mut path = String::with_capacity(12 + bucket.len());
    path.push_str("/v1/buckets/");
    push_segment(&mut path, bucket);
    path
}

/// `{prefix}{bucket}/{key}`, then the query: `flag` (a parameter without a value), the quorum
/// and `ttl`, in that order.
fn object_path(
    prefix: &str,
    bucket: &[u8],
    key: &[u8],
    flag: Option<&str>,
    quorum: Option<(&str, Quorum)>,
    ttl_secs: Option<u64>,
) -> String {
    use std::fmt::Write as _;

    let mut path = String::with_capacity(prefix.len() + bucket.len() + key.len() + 32);
    path.push_str(prefix);
    push_segment(&mut path, bucket);
    path.push('/');
    push_segment(&mut path, key);
    let mut separator = '?';
    if let Some(flag) = flag {
        path.push(separator);
        path.push_str(flag);
        separator = '&';
    }
    if let Some((name, quorum)) = quorum {
        // Writing into a String cannot fail.
        let _ = write!(path, "{separator}{name}={quorum}");
        separator = '&';
    }
    if let Some(ttl_secs) = ttl_secs {
        let _ = write!(path, "{separator}ttl={ttl_secs}");
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_bytes_pass_through() {
        assert_eq!(encode_segment(b"user-42_a.b~c"), "user-42_a.b~c");
        assert_eq!(encode_segment(b"ABCxyz019"), "ABCxyz019");
    }

    #[test]
    fn everything_else_is_encoded() {
        assert_eq!(encode_segment(b"a/b"), "a%2Fb");
        assert_eq!(encode_segment(b"a b?c#d%e"), "a%20b%3Fc%23d%25e");
        assert_eq!(encode_segment(b"+&=:@"), "%2B%26%3D%3A%40");
        assert_eq!(encode_segment("é".as_bytes()), "%C3%A9");
        assert_eq!(encode_segment(b"\x00\xff"), "%00%FF");
    }

    #[test]
    fn dot_segments_are_encoded() {
        assert_eq!(encode_segment(b"."), "%2E");
        assert_eq!(encode_segment(b".."), "%2E%2E");
        assert_eq!(encode_segment(b"..."), "%2E%2E%2E");
        assert_eq!(encode_segment(b".a."), ".a.");
        assert_eq!(encode_segment(b""), "");
    }

    #[test]
    fn key_paths_carry_query_parameters() {
        assert_eq!(key_path(b"b", b"k", None, None), "/v1/kv/b/k");
        assert_eq!(
            key_path(b"my bucket", b"a/b", Some(("r", Quorum::One)), None),
            "/v1/kv/my%20bucket/a%2Fb?r=one"
        );
        assert_eq!(
            key_path(b"b", b"k", Some(("w", Quorum::N(3))), Some(60)),
            "/v1/kv/b/k?w=3&ttl=60"
        );
        assert_eq!(key_path(b"b", b"k", None, Some(5)), "/v1/kv/b/k?ttl=5");
    }

    #[test]
    fn data_type_touch_and_bucket_paths() {
        assert_eq!(
            dt_path(b"carts", b"al/ice", Some(("w", Quorum::One)), Some(60)),
            "/v1/dt/carts/al%2Fice?w=one&ttl=60"
        );
        assert_eq!(dt_path(b"c", b"k", None, None), "/v1/dt/c/k");
        assert_eq!(touch_path(b"s", b"k", None, None), "/v1/kv/s/k?touch");
        assert_eq!(
            touch_path(b"s", b"k", Some(Quorum::All), Some(30)),
            "/v1/kv/s/k?touch&w=all&ttl=30"
        );
        assert_eq!(bucket_path(b"my carts"), "/v1/buckets/my%20carts");
    }
}
