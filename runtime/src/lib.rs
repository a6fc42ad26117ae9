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
//!   and hyper-util's servers with upgrades enabled); without it an upgrade is answered `500`
//!   with a message (never a `101` on a connection that cannot be handed over).
//!   `examples/axum_app.rs` mounts it beside an app's own routes, with shared state and one
//!   graceful shutdown (`Server::shutdown` in axum's shutdown signal).
//! * [`Server::serve_tls`] / [`Server::serve_tls_with_shutdown`] (feature `tls`): the same
//!   over rustls; [`tls`] builds the configurations (PEM files, Mozilla's roots for clients).
//! * [`Server::handle`] answers one request.
//!
//! Each WebSocket is driven by its own task around the Sans-IO `agentwire-ws` machine (read →
//! `handle_input` → events → the instance; the connection's queue → frames → vectored writes;
//! `poll_timeout` → timer); each instance is one task that handles its events one at a time.
//!
//! # Features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `deflate` | on | permessage-deflate ([`Limits::deflate`]) |
//! | `client` | off | `agentwire::client`: the Rust `AgentClient` (its `CallStream`, events and state are also `futures_core::Stream`s) |
//! | `tls` | off (on with `cli`) | rustls: `wss://` for the client, `https://` for `tail`, `Server::serve_tls`, the `tls` module |
//! | `demo` | off (on with `cli`) | `agentwire::demo`: the demo agents of `agentwire serve` |
//! | `postgres` | off (on with `cli`) | [`Storage::postgres`] and the [`cluster`]: instance data in PostgreSQL, one owner per instance by leases with fencing epochs, forwarding to the owner (tokio-postgres, deadpool-postgres) |
//! | `cli` | on | the `agentwire` command and `agentwire::tail`; tokio's multi-threaded runtime and signals |
//!
//! A library user sets `default-features = false` (and picks `deflate`, `client`, `tls`): the
//! library then needs only tokio's `rt`, `net`, `io-util`, `time`, `sync`, `fs` and `macros`.
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
//! | `onRequest` | [`Agent::on_request`] ([`HttpRequest`]: `http::Request` with a streamed [`RequestBody`]) |
//! | `request.json()`, `request.formData()` | [`RequestExt::json`], [`RequestExt::multipart`] |
//! | `initialState`, `state`, `setState` | [`Agent::initial_state`], [`Context::state`], [`Context::set_state`] |
//! | `validateStateChange`, `onStateChanged` | [`Agent::validate_state`], [`Agent::on_state_update`] |
//! | `shouldConnectionBeReadonly`, `shouldSendProtocolMessages`, `getConnectionTags` | [`Agent::connection_readonly`], [`Agent::connection_protocol_messages`], [`Agent::connection_tags`] |
//! | `broadcast`, `getConnections(tag)`, `getConnection(id)` | [`Context::broadcast`], [`Context::connections_tagged`], [`Context::connection`] |
//! | `getAgentByName(env.X, name)` | [`Server::agent`], [`Context::agent`] ([`AgentHandle`]) |
//! | `onStart(props)`, `routeAgentRequest(…, { props })` | [`Context::props`] in [`Agent::on_start`]; [`ServerBuilder::agent_with_props`], [`AgentHandle::start`] |
//! | `this.ctx.waitUntil`, handlers awaiting I/O | [`Context::spawn`], [`Call::defer`] |
//! | `connection.server` | [`Connection::server`] |
//! | `connection.setState/state/send/close` | [`Connection`] |
//! | `this.sql` | [`Context::sql`] (the instance's own SQLite database) |
//! | `schedule(when, "method", payload)`, `scheduleEvery`, `cancelSchedule`, `getSchedules` | [`Context::schedule`] ([`When`]: delay, date, cron), [`Context::schedule_every`], [`Context::cancel_schedule`], [`Context::schedules`]; the call lands in [`Agent::on_schedule`] — persisted, survives hibernation and restarts (see [`schedule`]) |
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
//! | [`Limits::max_request_body`] | 1 MiB | `413`: from `Content-Length` before any byte is read; a chunked body once past it |
//! | [`Agent::max_request_body`] (per agent / route) | `None`: the above | the same; e.g. the demo's `FilesAgent` upload route allows 256 MiB |
//! | [`MultipartLimits`] `max_fields` / `max_field_bytes` / `max_file_bytes` | 100 / 64 KiB / the body limit | `413` |
//! | [`MultipartLimits::max_part_head_bytes`] (boundary + part headers buffered) | 64 KiB | `400` |
//! | CORS preflight `Access-Control-Max-Age` | 600 s | — |
//! | [`Limits::idle_timeout`] | 10 s | the idle instance is evicted (hibernation); sockets stay open |
//! | [`Limits::ws`] `max_message` / `max_frame_payload` | 1 MiB | close `1009` for that socket only |
//! | `Limits::deflate` (feature `deflate`) | off (`agentwire serve`: on) | compressed messages inflate to at most `max_message`, else close `1009` |
//! | [`Limits::max_tags`] | 10 (incl. the id) | setup error: close `1011` |
//! | [`Limits::sse_log_len`] (events kept per SSE stream) | 1,000 | oldest dropped |
//! | [`Limits::max_instance_tasks`] (tasks of [`Context::spawn`] per instance) | 1,024 | [`TooManyTasks`] (a deferred call answers an error) |
//! | [`sse::DEFAULT_QUEUE`] (chunks per SSE response) | 256 | subscriber dropped; it resumes with `Last-Event-ID` |
//! | [`Limits::shutdown_grace`] | 5 s | remaining tasks are abandoned |
//! | [`Limits::max_connections`] (open sockets of [`Server::serve`]) | open-files limit − 3 × awake instances − 64 | the oldest idle HTTP connection is closed to make room; with none idle, `503` at once |
//! | [`Limits::request_head_timeout`] | 20 s | the connection is closed (slow or stalled heads) |
//! | [`Limits::max_request_head`] (request line + headers, so also the URI a WebSocket keeps) | 16 KiB | `431` |
//! | [`Limits::request_body_timeout`] (no body data for this long) | 20 s | `408` |
//! | [`Limits::keep_alive_timeout`] (HTTP connection without a request) | 20 s | closed |
//! | [`Limits::ws_write_timeout`] (a WebSocket write without progress) | 20 s | the socket is dropped, its queue freed; a queue overflow drops it at once |
//! | `WsConfig::close_timeout` ([`Limits::ws`]) | 5 s | the socket is dropped when the peer does not answer our Close |
//! | [`Limits::max_open_instances`] (awake instances, each holding its database) | open-files limit / 16, 16–1,024 | the least recently active one hibernates |
//! | `agentwire::server_deflate` (feature `deflate`) release time | 10 s | idle compressor / decompressor freed |
//!
//! # Hooks that await: deferred replies, instance tasks, handles
//!
//! An instance handles its events one at a time, in arrival order: a hook has `&mut self`
//! and the [`Context`], and nothing else of the instance runs until it returns. So a hook
//! must not *await something slow* (an LLM streaming for 30 s, a tool, another agent) in
//! place: every other connection of the instance would wait behind it. Instead:
//!
//! * [`Call::defer`] turns the call into a [`Deferred`] responder (`Send + 'static`); the hook
//!   returns [`Reply::deferred()`] at once and the instance goes on with its next event. The
//!   responder streams chunks ([`Deferred::send`]) and sends the final reply
//!   ([`Deferred::finish`]) from wherever it is; dropped unanswered, it answers an error, so
//!   no client waits forever.
//! * [`Context::spawn`] runs that work as a task of the instance: it keeps the instance awake
//!   while it runs and is aborted when the instance is deleted or ends.
//! * State changes and everything else that touches the instance go through an
//!   [`AgentHandle`] ([`Context::handle`], [`Context::agent`] for another agent,
//!   [`Server::agent`] from outside): each operation is an event in the instance's queue, so
//!   state changes stay serialised with the hooks, and are persisted before they are
//!   broadcast or acknowledged.
//!
//! Events of one connection are still seen in order; a slow call only delays its own reply.
//! With 20 calls of the contract agent's `slow(5000)` in flight on one instance, `increment`
//! on it answers in 0.1 ms (p50) / 0.7–4 ms (p99) on a shared 2-core machine
//! (`benches/scripts/slow-load.mjs`).
//!
//! A streaming, LLM-style call:
//!
//! ```
//! use agentwire::{Agent, Call, Context, Reply, RpcError};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Chat { answers: Vec<String> }
//!
//! struct Assistant;
//!
//! /// Stands in for a model's token stream (an HTTP call to an LLM API in real life).
//! async fn next_token(prompt: &str, i: usize) -> Option<String> {
//!     tokio::time::sleep(Duration::from_millis(50)).await;
//!     prompt.split(' ').nth(i).map(|w| format!("{w} "))
//! }
//!
//! impl Agent for Assistant {
//!     type State = Chat;
//!
//!     fn initial_state(&self) -> Option<Chat> { Some(Chat::default()) }
//!
//!     async fn on_call(&mut self, cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
//!         match call.method() {
//!             "ask" => {
//!                 let prompt: String = call.arg(0)?;
//!                 let reply = call.defer(); // answered later, from the task
//!                 let me = cx.handle();
//!                 cx.spawn(async move {
//!                     let mut text = String::new();
//!                     let mut i = 0;
//!                     while let Some(token) = next_token(&prompt, i).await {
//!                         if reply.send(&token).is_err() {
//!                             return; // the caller left: stop generating
//!                         }
//!                         text.push_str(&token);
//!                         i += 1;
//!                     }
//!                     // serialised with the instance's events, persisted, then broadcast
//!                     let saved = text.clone();
//!                     let stored = me.update_state(move |s| {
//!                         let mut s = s.cloned().unwrap_or_default();
//!                         s.answers.push(saved);
//!                         s
//!                     });
//!                     reply.finish(match stored.await {
//!                         Ok(()) => Reply::json(&text),
//!                         Err(e) => Err(RpcError::new(e)),
//!                     });
//!                 })?; // fails beyond `Limits::max_instance_tasks`
//!                 Ok(Reply::deferred()) // the instance is free for the next event
//!             }
//!             _ => Err(RpcError::NoSuchMethod),
//!         }
//!     }
//! }
//! ```
//!
//! From outside any hook (a timer, a queue consumer, another service), `server.agent::<A>(name)`
//! gives the same handle: `call`, `state` / `set_state`, `broadcast`, `send_to`,
//! `sse_publish`, `with(|agent, cx| …)`, `start(props)`. A hook must not await a handle on its
//! own instance (it would wait for itself).
//!
//! # Hooks never block a thread
//!
//! Hooks are `async` and run on the runtime's worker threads: while a hook awaits (a model
//! call, a tool, another agent), other instances run. A hook must not *block* its thread —
//! CPU-heavy work (parsing a large document, embeddings on the CPU, compression) belongs in
//! `tokio::task::spawn_blocking`, whose result the hook awaits:
//!
//! ```
//! # async fn heavy(input: Vec<u8>) -> Result<usize, agentwire::RpcError> {
//! let n = tokio::task::spawn_blocking(move || input.iter().filter(|b| **b == b'\n').count())
//!     .await
//!     .map_err(agentwire::RpcError::new)?;
//! # Ok(n) }
//! ```
//!
//! A hook that blocks anyway holds one worker until it returns — and tokio drives sockets and
//! timers from an idle worker, so on a small machine that can stall I/O for every connection.
//! [`ServerBuilder::agent_runtime`] runs the instances on a runtime of their own (what
//! `agentwire serve` does): then sockets, HTTP and other instances keep going. Loops that
//! stream chunks end when the caller leaves: [`RpcStream::send`] fails with
//! `Connection closed`.
//!
//! # Access control
//!
//! * [`ServerBuilder::authorize`] decides on every agent request (HTTP or upgrade) before
//!   anything of the instance is started or created on disk: authentication (a token in a
//!   header or the query, see [`AgentRequest`]) and which instance names may exist.
//! * [`ServerBuilder::allowed_origins`]: browsers' cross-site WebSocket upgrades and
//!   state-changing requests are refused (`403`) unless their `Origin` is listed; requests
//!   without `Origin` (non-browser clients) and same-origin ones pass.
//! * [`Server::delete_instance`] closes an instance's sockets (`4004`) and removes its data.
//!
//! # HTTP: request bodies, uploads, CORS
//!
//! [`Agent::on_request`] gets the body streamed ([`RequestBody`], an `http_body::Body`), not
//! collected: small bodies are read with [`RequestExt`] (`req.json::<T>()`, `req.bytes()`,
//! `req.text()`), uploads with [`RequestExt::multipart`] chunk by chunk, so a large file goes
//! to disk without being held in memory. A [`RequestError`] returned with `?` answers its own
//! status (`400` bad JSON or form, `413` too large, `415` not a form). See [`request`].
//!
//! The upload example of the Agents docs (`request.formData()`, then the file's name and
//! size) is:
//!
//! ```
//! use agentwire::{Agent, Body, BoxError, Context, HttpRequest, RequestExt};
//! use agentwire::body::response;
//! use http::{Method, Response, StatusCode};
//!
//! struct Uploads;
//!
//! impl Agent for Uploads {
//!     type State = serde_json::Value;
//!
//!     // uploads up to 100 MiB on this route (others keep `Limits::max_request_body`)
//!     fn max_request_body(req: &http::request::Parts) -> Option<u64> {
//!         (req.method == Method::POST).then_some(100 << 20)
//!     }
//!
//!     async fn on_request(&mut self, _cx: &mut Context<Self>, mut req: HttpRequest)
//!         -> Result<Response<Body>, BoxError> {
//!         if req.method() == Method::POST {
//!             let mut form = req.multipart()?;
//!             let file = form.field("file").await?;
//!             let filename = file.file_name().unwrap_or_default().to_owned();
//!             let mut size = 0; // process the file chunk by chunk (to disk, a hash, …)
//!             while let Some(chunk) = file.chunk().await? {
//!                 size += chunk.len();
//!             }
//!             return Ok(response::json(&serde_json::json!({ "filename": filename, "size": size })));
//!         }
//!         Ok(response::text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"))
//!     }
//! }
//! ```
//!
//! (`agentwire serve` runs one that keeps the files: `demo::files::FilesAgent`, feature `demo`.)
//!
//! **CORS and the `Origin` policy.** One policy for the server,
//! [`ServerBuilder::allowed_origins`]: preflights from the listed origins are answered by the
//! server, replies to them carry `Access-Control-Allow-Origin` and `Vary: Origin`, and
//! WebSocket upgrades and `POST`/`PUT`/`PATCH`/`DELETE` from any other foreign origin are
//! refused with `403` (requests without `Origin`, i.e. non-browser clients, and same-origin
//! pages pass; this holds with an empty list too). So the CORS example of the Agents docs
//! needs no header code in the agent:
//!
//! ```no_run
//! # use agentwire::{Agent, Body, BoxError, Context, HttpRequest, Server};
//! # use agentwire::body::response;
//! # use http::Response;
//! struct Api;
//!
//! impl Agent for Api {
//!     type State = serde_json::Value;
//!     async fn on_request(&mut self, _cx: &mut Context<Self>, _req: HttpRequest)
//!         -> Result<Response<Body>, BoxError> {
//!         Ok(response::json(&serde_json::json!({ "data": "..." })))
//!     }
//! }
//!
//! let server = Server::builder()
//!     .agent("Api", |_| Api)
//!     .allowed_origins(["https://app.example"]) // or ["*"] for any origin, as the example's `*`
//!     .build();
//! ```
//!
//! An agent may still answer `OPTIONS` itself, as the example does: preflights from origins
//! that are not listed, and every `OPTIONS` without `Origin`, reach [`Agent::on_request`], and
//! headers the agent sets are kept. (For writes from every origin, list `*`.)
//!
//! ```
//! # use agentwire::{Agent, Body, BoxError, Context, HttpRequest};
//! # use agentwire::body::response;
//! # use http::{Method, Response};
//! # struct Api;
//! # impl Agent for Api {
//! #     type State = serde_json::Value;
//! async fn on_request(&mut self, _cx: &mut Context<Self>, req: HttpRequest)
//!     -> Result<Response<Body>, BoxError> {
//!     if req.method() == Method::OPTIONS {
//!         let mut r = Response::new(Body::empty());
//!         let h = r.headers_mut();
//!         h.insert("access-control-allow-origin", "*".parse()?);
//!         h.insert("access-control-allow-methods", "GET, POST, OPTIONS".parse()?);
//!         h.insert("access-control-allow-headers", "Content-Type".parse()?);
//!         return Ok(r);
//!     }
//!     let mut r = response::json(&serde_json::json!({ "data": "..." }));
//!     r.headers_mut().insert("access-control-allow-origin", "*".parse()?);
//!     Ok(r)
//! }
//! # }
//! ```
//!
//! Same-origin means an `Origin` naming the `Host` the request was sent to (the scheme is not
//! compared, for TLS-terminating proxies). That does not stop DNS rebinding (a foreign name
//! resolving to the server's address); put a server reachable that way behind a proxy that
//! checks `Host`.
//!
//! # Tracing and metrics
//!
//! Each instance runs in an `agent{agent, name}` span; each HTTP connection in an
//! `http{peer}` span, each request in a `request{method, path}` span inside it, and each
//! WebSocket in a `ws{agent, name, id}` span inside its upgrade request. At `info`: WebSocket
//! opens, closes (code, reason, clean, duration), refused handshakes and rejected state
//! updates and requests refused for their `Origin`; at `debug` requests answered with a
//! [`RequestError`]; at `warn`: overflowing queues and failed accepts; at `error`: hook errors (the
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
//!
//! With the `postgres` feature, `Storage::postgres(url)` keeps every instance in PostgreSQL and
//! `Storage::postgres_node(url, Node::new("n1").advertise("10.0.0.1:8787"))` makes the server a
//! node of a cluster: any node accepts any request, each instance is served by the node holding
//! its lease, and every write is fenced by the lease's epoch and durable before anything the
//! event produced goes out. The design, its consistency and its cost are in [`cluster`]:
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use agentwire::cluster::Node;
//! use agentwire::{Server, Storage};
//! use std::time::Duration;
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8787").await?;
//! let node = Node::new("node-1")
//!     .advertise("10.0.0.1:8787")
//!     .lease_ttl(Duration::from_secs(10));
//! let storage = Storage::postgres_node("postgres://agentwire:secret@db:5432/agentwire", node)?;
//! storage.connect().await?; // creates the tables, registers the node
//! # #[derive(Default)] struct MyAgent;
//! # impl agentwire::Agent for MyAgent { type State = serde_json::Value; }
//! Server::builder()
//!     .agent("MyAgent", |_name| MyAgent::default())
//!     .storage(storage)
//!     .build()
//!     .serve(listener)
//!     .await?;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod accept;
mod agent;
pub mod body;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod cluster;
// The Rust `AgentClient`, only with the `client` feature (documented in the module).
#[cfg(feature = "client")]
pub mod client;
mod connection;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "postgres")]
mod forward;
mod handle;
mod instance;
pub mod metrics;
mod origin;
pub mod request;
pub mod schedule;
mod server;
pub mod sse;
mod store;
#[cfg(feature = "cli")]
pub mod tail;
#[cfg(feature = "tls")]
pub mod tls;
mod ws;

pub use accept::BodyTimeout;
pub use agent::{
    Agent, BoxError, Call, Context, Deferred, Reject, Reply, RpcError, RpcStream, SocketError,
    StateError, StateSource, TooManyTasks,
};
pub use body::Body;
pub use connection::{Closed, Connection, Message};
pub use handle::{AgentHandle, HandleError};
pub use instance::InstanceInfo;
pub use request::{
    Field, HttpRequest, Multipart, MultipartLimits, RequestBody, RequestError, RequestExt,
};
pub use schedule::{Schedule, ScheduleError, When};
pub use server::{AgentRequest, Server, ServerBuilder};
pub use store::{Storage, StoreError, StoredEvent};

pub use agentwire_protocol as protocol;
/// The permessage-deflate policy of [`Limits::deflate`].
#[cfg(feature = "deflate")]
pub use agentwire_ws::deflate::DeflateConfig;
pub use agentwire_ws::Config as WsConfig;
/// The SQLite bindings of [`Context::sql`] and [`StoreError`], re-exported so that agents use
/// the same version.
pub use rusqlite;

use std::time::Duration;

/// The permessage-deflate policy for servers with many connections (what `agentwire serve`
/// uses): compression that costs nothing until it pays.
///
/// * messages under 1 KiB go uncompressed (connect and protocol frames, small RPC replies):
///   a connection that only sees those never allocates a compressor;
/// * no context takeover in either direction: every message is compressed on its own, so a
///   broadcast is compressed once for all connections with the same parameters (not once per
///   connection), and compressor and decompressor are freed after 10 s without compressed
///   traffic — an idle connection holds no compression memory.
///
/// The cost is ratio on streams of small, similar messages (each starts without the previous
/// ones as dictionary); `DeflateConfig::default()` keeps context takeover (best ratio, about
/// 300 KiB per busy connection, compressed per connection).
#[cfg(feature = "deflate")]
pub fn server_deflate() -> DeflateConfig {
    DeflateConfig::default()
        .with_threshold(1024)
        .with_server_no_context_takeover(true)
        .with_client_no_context_takeover(true)
        .with_release_after(Some(Duration::from_secs(10)))
}

impl Limits {
    /// [`max_open_instances`](Self::max_open_instances), resolved.
    pub fn open_instances_cap(&self) -> usize {
        self.max_open_instances
            .unwrap_or_else(accept::default_max_open_instances)
    }

    /// [`max_connections`](Self::max_connections), resolved.
    pub fn connections_cap(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| accept::default_max_connections(self.open_instances_cap()))
    }
}

/// Limits and timeouts of a [`Server`]; see the table in the crate docs.
///
/// Start from [`Limits::default`] and change what differs, with the `with_*` setters or by
/// assigning the public fields (the struct is `#[non_exhaustive]`: new limits can be added
/// without breaking callers):
///
/// ```
/// use agentwire::Limits;
/// use std::time::Duration;
///
/// let limits = Limits::default()
///     .with_idle_timeout(Some(Duration::from_secs(60)))
///     .with_max_request_body(8 << 20);
/// assert_eq!(limits.max_request_body, 8 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Most tasks of [`Context::spawn`] running at once per instance (deferred calls in
    /// flight, background work); more fail with [`TooManyTasks`]. Default 1,024.
    pub max_instance_tasks: usize,
    /// How long a graceful shutdown waits for sockets and requests. Default 5 s.
    pub shutdown_grace: Duration,
    /// Longest time to receive a request head, from the moment the connection waits for one
    /// (hyper's header read timeout: slow or stalled heads are cut). Default 20 s.
    pub request_head_timeout: Duration,
    /// Largest request head (request line and headers, so also the URI a WebSocket keeps for
    /// its lifetime); more is answered `431`. At least 8 KiB. Default 16 KiB.
    pub max_request_head: usize,
    /// Longest wait for the next piece of a request body that is being read; then the request
    /// fails (`408`). Default 20 s.
    pub request_body_timeout: Duration,
    /// An HTTP connection with no request in flight is closed after this long. Default 20 s.
    pub keep_alive_timeout: Duration,
    /// A WebSocket write that makes no progress for this long (a client that stopped reading
    /// with full socket buffers) aborts the connection and frees its queue. Default 20 s.
    pub ws_write_timeout: Duration,
    /// Most open sockets (HTTP connections and WebSockets) of [`Server::serve`]. At the cap the
    /// oldest idle HTTP connection is closed to make room; with none idle, new clients get
    /// `503`. `None`: the process's open-files limit less 3 files per
    /// [`max_open_instances`](Self::max_open_instances) and 64 spare (at least 64).
    pub max_connections: Option<usize>,
    /// Most instances awake at once (each holds its SQLite database: 3 open files). Waking
    /// one more hibernates the least recently active instance first. `None`: a sixteenth of
    /// the process's open-files limit, between 16 and 1,024 (64 under `ulimit -n 1024`; 256
    /// where the limit is unknown).
    pub max_open_instances: Option<usize>,
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
            max_instance_tasks: 1024,
            shutdown_grace: Duration::from_secs(5),
            request_head_timeout: Duration::from_secs(20),
            max_request_head: 16 << 10,
            request_body_timeout: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(20),
            ws_write_timeout: Duration::from_secs(20),
            max_connections: None,
            max_open_instances: None,
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$cfg:meta])* $field:ident / $name:ident: $ty:ty;)*) => {
        impl Limits {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                $(#[$cfg])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    max_queued_bytes / with_max_queued_bytes: usize;
    instance_queue / with_instance_queue: usize;
    max_request_body / with_max_request_body: usize;
    idle_timeout / with_idle_timeout: Option<Duration>;
    ws / with_ws: WsConfig;
    max_tags / with_max_tags: usize;
    sse_log_len / with_sse_log_len: usize;
    shutdown_grace / with_shutdown_grace: Duration;
    request_head_timeout / with_request_head_timeout: Duration;
    max_request_head / with_max_request_head: usize;
    request_body_timeout / with_request_body_timeout: Duration;
    keep_alive_timeout / with_keep_alive_timeout: Duration;
    ws_write_timeout / with_ws_write_timeout: Duration;
    max_connections / with_max_connections: Option<usize>;
    max_open_instances / with_max_open_instances: Option<usize>;
    max_instance_tasks / with_max_instance_tasks: usize;
    #[cfg(feature = "deflate")]
    deflate / with_deflate: Option<DeflateConfig>;
}
