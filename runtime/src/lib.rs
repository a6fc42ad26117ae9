//! An agent server speaking the Cloudflare Agents protocol over WebSocket and SSE.
//!
//! Write an [`Agent`]; the [`Server`] routes `/{prefix}/{namespace}/{name}` to one instance per
//! (class, name), created on first use, that handles its events one at a time in arrival order
//! (like a Durable Object). The unmodified JavaScript `AgentClient` / `useAgent` / `agentFetch`
//! talk to it as to the reference server: connect sequence (identity, state, MCP servers), state
//! sync with validation and readonly connections, RPC with streaming, broadcast, tags,
//! `onRequest` and SSE with resume, hibernation.
//!
//! # Quick start
//!
//! ```no_run
//! use agentwire::{Agent, Call, Connection, Context, Message, Reply, RpcError, Server, Storage};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Count { count: i64 }
//!
//! struct Counter;
//!
//! impl Agent for Counter {
//!     type State = Count;
//!
//!     fn initial_state(&self) -> Option<Count> { Some(Count { count: 0 }) }
//!
//!     async fn on_call(&mut self, cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
//!         match call.method() {
//!             "increment" => {
//!                 let by: i64 = call.arg_or(0, 1)?;
//!                 let count = cx.state().map_or(0, |s| s.count) + by;
//!                 cx.set_state(Count { count })?; // persisted, then broadcast to every client
//!                 Reply::json(&count)
//!             }
//!             "countdown" => {
//!                 let stream = call.stream();
//!                 for i in (1..=call.arg_or(0, 3i64)?).rev() { stream.send(&i)?; }
//!                 Reply::json("liftoff")
//!             }
//!             _ => Err(RpcError::NoSuchMethod),
//!         }
//!     }
//!
//!     async fn on_message(&mut self, _cx: &mut Context<Self>, conn: &Connection, msg: Message)
//!         -> Result<(), agentwire::BoxError> {
//!         conn.send(msg)?; // echo
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let server = Server::builder()
//!         .agent("Counter", |_name| Counter) // ws://host/agents/counter/{name}
//!         .storage(Storage::sqlite("./data"))
//!         .build();
//!     server.serve(tokio::net::TcpListener::bind("127.0.0.1:8787").await?).await
//! }
//! ```
//!
//! The complete test agent of the interop suite is `examples/counter.rs`
//! (`cargo run --release -p agentwire --example counter -- --addr 127.0.0.1:8787 --data DIR`).
//!
//! # Serving
//!
//! * [`Server::serve`] / [`Server::serve_with_shutdown`]: HTTP/1.1 with upgrades on hyper, one
//!   task per connection; the graceful shutdown stops accepting, closes WebSockets with `1001`
//!   and lets HTTP requests finish.
//! * The [`Server`] is a `tower::Service<http::Request<B>>` for any request body, so it mounts
//!   in axum (`Router::new().route(...).fallback_service(server)`) or any tower/hyper stack.
//!   Give it the full, unstripped path (it matches the prefix itself; avoid `nest_service`).
//!   WebSocket upgrades work wherever hyper's upgrade extension is present (axum's `serve`
//!   and hyper-util's servers with upgrades enabled).
//! * [`Server::handle`] answers one request.
//!
//! Each WebSocket is driven by its own task around the Sans-IO `agentwire-ws` machine (read →
//! `handle_input` → events → the instance; the connection's queue → frames → vectored writes;
//! `poll_timeout` → timer); each instance is one task that handles its events one at a time.
//!
//! # The model
//!
//! | upstream (`agents`) | here |
//! | --- | --- |
//! | `onStart` | [`Agent::on_start`] (again after hibernation) |
//! | `onConnect(conn, ctx)` | [`Agent::on_connect`] (reject with [`Reject`]) |
//! | `onMessage` | [`Agent::on_message`] (non-protocol text, binary) |
//! | `@callable()` methods | [`Agent::on_call`] (match on the method name) |
//! | `onClose`, `onError` | [`Agent::on_close`], [`Agent::on_error`] |
//! | `onRequest` | [`Agent::on_request`] (`http::Request<Bytes>`) |
//! | `initialState`, `state`, `setState` | [`Agent::initial_state`], [`Context::state`], [`Context::set_state`] |
//! | `validateStateChange`, `onStateChanged` | [`Agent::validate_state`], [`Agent::on_state_update`] |
//! | `shouldConnectionBeReadonly`, `shouldSendProtocolMessages`, `getConnectionTags` | [`Agent::connection_readonly`], [`Agent::connection_protocol_messages`], [`Agent::connection_tags`] |
//! | `broadcast`, `getConnections(tag)`, `getConnection(id)` | [`Context::broadcast`], [`Context::connections_tagged`], [`Context::connection`] |
//! | `connection.setState/state/send/close` | [`Connection`] |
//! | `this.sql` | [`Context::sql`] (the instance's own SQLite database) |
//!
//! Client state writes are refused unless [`Agent::validate_state`] accepts them (the default
//! refuses every client write).
//!
//! # Limits and defaults
//!
//! | setting | default | on excess |
//! | --- | --- | --- |
//! | [`Limits::max_queued_bytes`] (per connection, outbound) | 16 MiB | the connection is closed with `1008` |
//! | [`Limits::instance_queue`] (events per instance) | 1,024 | senders wait (the sockets concerned stop being read) |
//! | [`Limits::max_request_body`] | 1 MiB | `413` |
//! | [`Limits::idle_timeout`] | 10 s | the idle instance is evicted (hibernation); sockets stay open |
//! | [`Limits::ws`] `max_message` / `max_frame_payload` | 1 MiB | close `1009` for that socket only |
//! | `Limits::deflate` (feature `deflate`) | off (`agentwire serve`: on) | compressed messages inflate to at most `max_message`, else close `1009` |
//! | [`Limits::max_tags`] | 10 (incl. the id) | setup error: close `1011` |
//! | [`Limits::sse_log_len`] (events kept per SSE stream) | 1,000 | oldest dropped |
//! | [`sse::DEFAULT_QUEUE`] (chunks per SSE response) | 256 | subscriber dropped; it resumes with `Last-Event-ID` |
//! | [`Limits::shutdown_grace`] | 5 s | remaining tasks are abandoned |
//! | [`Limits::connect_pacing`] / [`Limits::mcp_frame_delay`] | at most 10 ms / 30 ms, cut short when the client sends | — |
//!
//! # Tracing and metrics
//!
//! Each instance runs in an `agent{agent, name}` span; each HTTP connection in an
//! `http{peer}` span, each request in a `request{method, path}` span inside it, and each
//! WebSocket in a `ws{agent, name, id}` span inside its upgrade request. At `info`: WebSocket
//! opens, closes (code, reason, clean, duration), refused handshakes and rejected state
//! updates; at `warn`: overflowing queues and failed accepts; at `error`: hook errors (the
//! default [`Agent::on_error`]), panics in hooks, storage failures. [`metrics`] counts
//! connections, instances, messages, bytes, RPC and SQLite latencies for Prometheus. The
//! `agentwire` command installs a subscriber (`RUST_LOG`, default `info`) and serves them.
//!
//! # Hibernation
//!
//! An instance idle for [`Limits::idle_timeout`] drops its agent value, its loaded state and
//! its database handle; its sockets stay open and keep their id, tags, per-connection state
//! and readonly / protocol flags (they live with the socket, not the agent). The next event
//! wakes it: `cf_agent_mcp_servers` is re-sent to protocol connections, then
//! [`Agent::on_start`] runs, then the event is handled. What an evicted instance with 1,000
//! idle sockets costs the server (`runtime/interop/idle-memory.mjs`, Linux, release build):
//! about 11 KB resident per socket (≈10.8 MiB for 1,000; 11,293–11,452 bytes in three runs).
//! An idle socket keeps no read or send buffer (the WebSocket machine itself is 552 bytes,
//! 576 with `deflate`); the rest is the socket task, its queue and handle, and allocator
//! overhead.
//!
//! # Storage
//!
//! [`Storage::sqlite`] keeps one database per instance under a data directory; a state update
//! is committed before it is broadcast or acknowledged. [`Storage::memory`] is for tests.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod agent;
pub mod body;
// The Rust `AgentClient`, only with the `client` feature (documented in the module).
#[cfg(feature = "client")]
pub mod client;
mod connection;
pub mod demo;
mod instance;
pub mod metrics;
mod server;
pub mod sse;
mod store;
pub mod tail;
mod ws;

pub use agent::{
    Agent, BoxError, Call, Context, Reject, Reply, RpcError, RpcStream, StateError, StateSource,
};
pub use body::Body;
pub use connection::{Closed, Connection, Message};
pub use instance::InstanceInfo;
pub use server::{Server, ServerBuilder};
pub use store::{Storage, StoreError, StoredEvent};

pub use agentwire_protocol as protocol;
/// The permessage-deflate policy of [`Limits::deflate`].
#[cfg(feature = "deflate")]
pub use agentwire_ws::deflate::DeflateConfig;
pub use agentwire_ws::Config as WsConfig;

use std::time::Duration;

/// Limits and timeouts of a [`Server`]; see the table in the crate docs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of outbound messages a connection may have queued before it is closed with
    /// `1008` (a client that stopped reading). Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Events an instance may have queued before senders wait. Default 1,024.
    pub instance_queue: usize,
    /// Largest accepted HTTP request body. Default 1 MiB.
    pub max_request_body: usize,
    /// Idle time after which an instance is evicted from memory (its sockets stay open);
    /// `None` never evicts. Default 10 s, like upstream.
    pub idle_timeout: Option<Duration>,
    /// WebSocket settings (default: `agentwire-ws` defaults with 1 MiB messages and frames).
    pub ws: WsConfig,
    /// Most tags per connection, the id included. Default 10.
    pub max_tags: usize,
    /// Events kept per SSE stream log. Default 1,000.
    pub sse_log_len: usize,
    /// How long a graceful shutdown waits for sockets and requests. Default 5 s.
    pub shutdown_grace: Duration,
    /// Longest wait between the `101` and the first connect frame (identity), cut short as
    /// soon as the client sends anything. The connect frames are written as separate writes,
    /// spaced as the reference server's reach its clients, so that a client sending on `open`
    /// is not overtaken by them (clients, and transcripts recorded against the reference
    /// server, see the same order). `None`: no wait. Default 10 ms.
    pub connect_pacing: Option<Duration>,
    /// Longest wait before the last connect frame (`cf_agent_mcp_servers`), cut short as
    /// soon as the client sends anything: with the reference server that frame arrives well
    /// after identity and state, so a client that calls as soon as it is `ready` sees its call
    /// leave before the frame arrives. `AgentClient` ignores the frame (`ready` resolves on the
    /// state frame) and inbound frames wait until it is written, so only timing changes.
    /// `None`: no wait. Default 30 ms.
    pub mcp_frame_delay: Option<Duration>,
    /// permessage-deflate policy (feature `deflate`): when set, WebSocket clients that offer
    /// the extension (every browser does) get compressed messages, and the inflated size of
    /// what they send is bounded by `ws.max_message`. Default `None` (off): compression costs
    /// CPU and about 300 KiB per busy connection with context takeover; it pays for large,
    /// repetitive frames such as JSON state.
    #[cfg(feature = "deflate")]
    pub deflate: Option<agentwire_ws::deflate::DeflateConfig>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_queued_bytes: 16 << 20,
            instance_queue: 1024,
            max_request_body: 1 << 20,
            idle_timeout: Some(Duration::from_secs(10)),
            ws: WsConfig::default()
                .with_max_message(1 << 20)
                .with_max_frame_payload(1 << 20),
            max_tags: 10,
            sse_log_len: sse::DEFAULT_LOG_LEN,
            shutdown_grace: Duration::from_secs(5),
            connect_pacing: Some(Duration::from_millis(10)),
            mcp_frame_delay: Some(Duration::from_millis(30)),
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}
