//! [`Call`]: one message schema's client as an object, so that what sends messages (the node's
//! data path, the layout's Raft group) can be handed a real [`RpcClient`], a simulated network or
//! a chaos layer alike. [`RpcClient`] implements it here, once, for every schema.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Connector, Result, RpcClient};

/// A call in flight: the answer, or what went wrong in transport.
pub type CallFuture<'a, Resp> = Pin<Box<dyn Future<Output = Result<Resp>> + Send + 'a>>;

/// Sends one request and waits for its answer (see the module docs).
pub trait Call<Req, Resp>: Send + Sync + 'static {
    /// Sends `request` to the node at `addr` (`host:port`) and waits at most `timeout`.
    fn call<'a>(&'a self, addr: &'a str, request: Req, timeout: Duration) -> CallFuture<'a, Resp>;
}

impl<Req, Resp, C> Call<Req, Resp> for RpcClient<Req, Resp, C>
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
    C: Connector,
{
    fn call<'a>(&'a self, addr: &'a str, request: Req, timeout: Duration) -> CallFuture<'a, Resp> {
        Box::pin(async move { RpcClient::call(self, addr, &request, timeout).await })
    }
}
