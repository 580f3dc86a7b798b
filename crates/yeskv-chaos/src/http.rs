//! A tiny HTTP/1.1 client for the runner's own calls (cluster formation, status, the chaos
//! endpoint, health and the `Date` header): one connection per request, `Connection: close`,
//! bounded by a timeout and a response size limit. The workloads use `yeskv-client` instead;
//! this exists for the calls that client does not make and for exact statuses and headers.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response accepted (status and ring documents are a few KiB).
const RESPONSE_BYTES_MAX: u64 = 4 << 20;

/// One response.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "body is not JSON: {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }
}

/// Sends one request to `addr` (`HOST:PORT`) and reads the whole answer within `timeout`.
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Response> {
    tokio::time::timeout(timeout, request_inner(addr, method, path, body))
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no answer within {timeout:?}"))?
}

async fn request_inner(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut raw)
        .await?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("response has no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
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
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk"))?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let start = eol + 2;
        if b.len() < start + size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\nDate: x\r\ncontent-length: 2\r\n\r\nhi").expect("ok");
        assert_eq!(
            (r.status, r.header("date"), &r.body[..]),
            (200, Some("x"), &b"hi"[..])
        );
        let r = parse(
            b"HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
        )
        .expect("ok");
        assert_eq!((r.status, &r.body[..]), (503, &b"abc"[..]));
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
