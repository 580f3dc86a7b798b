//! HTTP/1.1 on a bare socket, for tools that must see exactly what a node sent: the chaos
//! runner's own calls (status, ring, health, the `Date` header) and the multi-process tests'
//! (every status and header of the contract). [`request_bytes`] writes a request with
//! `Connection: close`; [`Http1Response::parse`] reads everything the node sent until it closed.
//! The [`crate::Client`] is for applications; it goes through hyper.

use crate::Error;

/// One response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http1Response {
    /// The status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Http1Response {
    /// Parses a whole response (everything up to the close of the connection).
    pub fn parse(raw: &[u8]) -> Result<Http1Response, Error> {
        let invalid = |what: String| Error::InvalidResponse(what);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| invalid("response has no header end".into()))?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body)?;
        }
        Ok(Http1Response {
            status,
            headers,
            body,
        })
    }

    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The bytes of a request: `Host`, `Connection: close`, `Content-Length`, then `headers` and
/// the body.
pub fn request_bytes(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, Error> {
    let truncated = || Error::InvalidResponse("truncated chunked body".into());
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(truncated)?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .map_err(|_| Error::InvalidResponse("bad chunk size".into()))?;
        if size == 0 {
            return Ok(out);
        }
        let start = eol + 2;
        out.extend_from_slice(b.get(start..start + size).ok_or_else(truncated)?);
        b = b.get(start + size + 2..).ok_or_else(truncated)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_response_parses() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Causal-Context: abc\r\n\r\n3\r\nfoo\r\n2\r\nba\r\n0\r\n\r\n";
        let r = Http1Response::parse(raw).expect("parses");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-causal-context"), Some("abc"));
        assert_eq!(r.header("X-CAUSAL-CONTEXT"), Some("abc"));
        assert_eq!(r.body, b"fooba".to_vec());
    }

    #[test]
    fn nonsense_is_an_error() {
        assert!(Http1Response::parse(b"garbage").is_err());
        assert!(Http1Response::parse(b"HTTP/1.1 abc\r\n\r\n").is_err());
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(Http1Response::parse(cut).is_err());
    }

    #[test]
    fn a_request_has_its_length_and_headers() {
        let bytes = request_bytes("PUT", "/v1/kv/b/k", "h:1", &[("X-A", "1")], b"xyz");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(
            text.starts_with("PUT /v1/kv/b/k HTTP/1.1\r\nHost: h:1\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Length: 3\r\n"), "{text}");
        assert!(text.ends_with("X-A: 1\r\n\r\nxyz"), "{text}");
    }
}
