//! Which node a request goes to.
//!
//! Today the client spreads requests round-robin over the node URLs it was given; any node can
//! coordinate any key (the server forwards to the key's preference list). [`Router::pick`] takes
//! the request's [`Target`] so that ring-aware routing — sending a key straight to a node of its
//! preference list, learned from `GET /v1/ring` — can be added here without touching callers.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use hyper::http::uri::{Authority, Parts, PathAndQuery, Scheme};
use hyper::Uri;

use crate::Error;

/// One node's HTTP endpoint, parsed once.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// The URL as given, without a trailing `/` (for messages).
    pub(crate) url: String,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix (for a node behind a path-routing proxy), without a trailing `/`; usually empty.
    path_prefix: String,
}

impl Node {
    /// Parses `http://host:port[/prefix]`. Only plain HTTP is supported.
    pub(crate) fn parse(url: &str) -> Result<Node, Error> {
        let trimmed = url.trim();
        let uri: Uri = trimmed
            .parse()
            .map_err(|error| Error::InvalidUrl(format!("{trimmed:?}: {error}")))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| {
            Error::InvalidUrl(format!(
                "{trimmed:?}: missing scheme, expected http://host:port"
            ))
        })?;
        if scheme != Scheme::HTTP {
            return Err(Error::InvalidUrl(format!(
                "{trimmed:?}: only http:// is supported"
            )));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| Error::InvalidUrl(format!("{trimmed:?}: missing host")))?;
        if uri.query().is_some() {
            return Err(Error::InvalidUrl(format!(
                "{trimmed:?}: a node URL may not have a query"
            )));
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Node {
            url: trimmed.trim_end_matches('/').to_string(),
            scheme,
            authority,
            path_prefix,
        })
    }

    /// The full URI of `path_and_query` (which starts with `/`) on this node.
    pub(crate) fn uri(&self, path_and_query: &Bytes) -> Result<Uri, Error> {
        let path_and_query = if self.path_prefix.is_empty() {
            PathAndQuery::from_maybe_shared(path_and_query.clone())
        } else {
            let mut joined = Vec::with_capacity(self.path_prefix.len() + path_and_query.len());
            joined.extend_from_slice(self.path_prefix.as_bytes());
            joined.extend_from_slice(path_and_query);
            PathAndQuery::from_maybe_shared(Bytes::from(joined))
        }
        .map_err(|error| Error::InvalidArgument(format!("bad request path: {error}")))?;
        let mut parts = Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|error| Error::InvalidUrl(format!("{}: {error}", self.url)))
    }
}

/// What a request is about, for choosing its node.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// A key request; a ring-aware router would send it to the key's preference list.
    Key {
        #[allow(dead_code)] // Used once routing is ring-aware.
        bucket: &'a [u8],
        #[allow(dead_code)]
        key: &'a [u8],
    },
    /// A node-level request (status, health): any node will do.
    AnyNode,
}

/// Chooses nodes for requests (see the module docs).
#[derive(Debug)]
pub(crate) struct Router {
    nodes: Vec<Node>,
    next: AtomicUsize,
}

impl Router {
    /// A router over `nodes`, which must not be empty.
    pub(crate) fn new(nodes: Vec<Node>) -> Result<Router, Error> {
        if nodes.is_empty() {
            return Err(Error::InvalidUrl("no node URL given".into()));
        }
        Ok(Router {
            nodes,
            next: AtomicUsize::new(0),
        })
    }

    /// The nodes, in the order given.
    pub(crate) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The index of the node for a first attempt at `target`.
    pub(crate) fn pick(&self, _target: Target<'_>) -> usize {
        if self.nodes.len() == 1 {
            return 0;
        }
        self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()
    }

    /// The index of the node for a retry after `failed` failed: the next one in the list.
    pub(crate) fn failover(&self, failed: usize) -> usize {
        (failed + 1) % self.nodes.len()
    }

    /// The node at `index` (from [`Router::pick`] or [`Router::failover`]).
    pub(crate) fn node(&self, index: usize) -> &Node {
        &self.nodes[index % self.nodes.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_urls() {
        let node = Node::parse("http://127.0.0.1:8081/").expect("valid");
        assert_eq!(node.url, "http://127.0.0.1:8081");
        let uri = node.uri(&Bytes::from_static(b"/v1/status")).expect("valid");
        assert_eq!(uri.to_string(), "http://127.0.0.1:8081/v1/status");

        let node = Node::parse("http://proxy:80/yeskv/").expect("valid");
        let uri = node
            .uri(&Bytes::from_static(b"/v1/kv/b/k?r=one"))
            .expect("valid");
        assert_eq!(uri.to_string(), "http://proxy:80/yeskv/v1/kv/b/k?r=one");
    }

    #[test]
    fn rejects_unusable_urls() {
        for url in [
            "127.0.0.1:8081",
            "https://host:1",
            "http://host:1/?a=b",
            "",
            "not a url",
        ] {
            assert!(Node::parse(url).is_err(), "{url:?} accepted");
        }
        assert!(Router::new(Vec::new()).is_err());
    }

    #[test]
    fn round_robin_and_failover() {
        let nodes = ["http://a:1", "http://b:1", "http://c:1"]
            .iter()
            .map(|url| Node::parse(url).expect("valid"))
            .collect();
        let router = Router::new(nodes).expect("non-empty");
        let picks: Vec<usize> = (0..6).map(|_| router.pick(Target::AnyNode)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(router.failover(2), 0);
        assert_eq!(router.node(1).url, "http://b:1");
    }
}
