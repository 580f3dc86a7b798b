//! # yeskv-rpc: the internode transport
//!
//! Nodes of a yeskv cluster talk over persistent, multiplexed TCP connections: one connection per
//! pair of (client node, server node), many requests in flight on it at once, answered in any
//! order. This crate is generic over the request and response types (the node defines them as
//! serde enums) and over the network ([`Connector`], [`Listener`]), so the same code runs over
//! real TCP and inside a deterministic simulator.
//!
//! ## Wire format
//!
//! Every message is one frame:
//!
//! ```text
//!  0         4         8    9                  17                         8 + length
//!  +---------+---------+----+-------------------+--------------------------+
//!  | length  | crc32c  |kind| request id        | payload (postcard)       |
//!  | u32 LE  | u32 LE  | u8 | u64 LE            | length - 9 bytes         |
//!  +---------+---------+----+-------------------+--------------------------+
//!                      \___________ crc32c and `length` cover these _______/
//! ```
//!
//! - `length` counts the bytes after the CRC (kind + request id + payload); a frame is `8 +
//!   length` bytes, never more than [`RpcConfig::frame_bytes_max`] (default 16 MiB).
//! - `kind` is a [`FrameKind`]: `Hello`/`Welcome`/`Refused` (handshake), `Request`/`Response`/
//!   `Failure` (calls), `GoAway` (server shutting down), `Ping`/`Pong` (keepalive).
//! - `request id` pairs a response with its request; 0 for connection-level frames.
//! - The payload is the message encoded with `postcard` (compact, not self-describing: both ends
//!   must agree on the types, which is what the handshake's protocol version guarantees).
//!
//! ## Connection lifecycle
//!
//! ```text
//!  client                                           server
//!    | -- TCP connect (TCP_NODELAY) ------------------> |   accept
//!    | -- Hello { protocol_version, cluster_id, node_id } -> |
//!    | <------------ Welcome { node_id } -------------- |   or Refused { reason } and close
//!    | -- Request #1, Request #2, Ping, Request #3 ---> |   one task per request
//!    | <----- Response #2, Response #1, Pong, ... ----- |   in completion order
//!    |                       ...                        |
//!    | <-------------------- GoAway ------------------- |   server shutdown: no new requests,
//!    | <----------- last responses, then EOF ---------- |   in-flight ones still answered
//! ```
//!
//! The handshake (connect + `Hello` + `Welcome`) has a deadline (`handshake_timeout_ms`). Frames
//! before the handshake completes are limited to [`HANDSHAKE_FRAME_BYTES_MAX`]. The client pings
//! every `keepalive_interval_ms`; either side closes a connection on which nothing arrived for
//! `keepalive_timeout_ms` (a crashed host or half-open TCP connection). The client reconnects
//! lazily, on the next call, after an exponential, jittered backoff ([`Backoff`]).
//!
//! ## Peer identity
//!
//! A network that authenticates peers (mutual TLS, `yeskv-tls`) reports who the other end is
//! ([`PeerIdentity`], from [`Listener::peer_identity`] / [`Connector::peer_identity`]). The
//! server then refuses a `Hello` whose node id is not the one proved (and a peer that is not a
//! node at all), counting it in [`ServerStats::identity_refused`] and in the
//! `yeskv_peer_refused_total{reason="identity"}` metric; the client refuses a `Welcome` whose
//! node id is not the one proved. Over plain TCP the ids are taken as announced.
//!
//! ## Invariants
//!
//! - **Never deliver a corrupt message.** A frame with a bad CRC, an unknown or unexpected kind,
//!   a length below the minimum or above the limit closes its connection and is counted
//!   ([`TrafficStats::corrupt_frames`], [`TrafficStats::oversized_frames`]); calls pending on it
//!   fail with the retryable [`Error::Disconnected`].
//! - **Every call ends by its deadline**, with its response or an error, and leaves nothing
//!   behind: its pending entry is removed on every path, so a late response is dropped.
//! - **No head-of-line blocking.** The server runs each request in its own task and writes each
//!   response as soon as it is ready; only `inflight_max` requests per connection run at once,
//!   beyond which the server stops reading (backpressure, not unbounded queues).
//! - **Few syscalls under load.** One writer task per connection takes every frame already
//!   queued into one buffer and writes it with one `write_all`; an idle connection writes a frame
//!   at once.
//! - **A limit on everything**: frame size, requests in flight, write queue, write batch,
//!   handshake time, reconnect delay, shutdown grace — each a documented [`RpcConfig`] field.
//!
//! ## Modules
//!
//! - [`frame`]: the pure frame codec (property-tested).
//! - [`protocol`]: the handshake and failure messages, [`PROTOCOL_VERSION`].
//! - [`backoff`]: the pure reconnect backoff.
//! - [`transport`]: the network seams and their TCP implementations.
//! - `client`, `server`: [`RpcClient`] and [`RpcServer`].

#![deny(missing_docs)]

pub mod backoff;
mod call;
mod client;
mod config;
mod error;
pub mod frame;
mod io;
pub mod protocol;
mod server;
mod stats;
pub mod transport;

pub use backoff::Backoff;
pub use call::{Call, CallFuture};
pub use client::RpcClient;
pub use config::{RpcConfig, FRAME_BYTES_MAX_LIMIT, INFLIGHT_MAX_LIMIT};
pub use error::{Error, Result};
pub use frame::{FrameKind, FRAME_BYTES_MAX_DEFAULT, HANDSHAKE_FRAME_BYTES_MAX};
pub use protocol::{Hello, Refused, Welcome, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
pub use server::{Handler, PeerInfo, RpcServer};
pub use stats::{PeerStats, ServerStats, TrafficStats};
pub use transport::{Connector, Listener, PeerIdentity, Stream, TcpConnector};
