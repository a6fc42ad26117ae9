//! A Rust `AgentClient`: the client side of the Cloudflare Agents protocol over WebSocket
//! (feature `client`).
//!
//! It behaves like the JavaScript `AgentClient` of the npm `agents` package: it connects to
//! `ws://host/{prefix}/{namespace}/{name}?_pk={id}` (the namespace is the kebab-case of the
//! agent class name, the id a UUID v4 generated once per client and reused on every
//! reconnect), follows the connect sequence (identity, state, MCP servers), keeps the agent's
//! state, makes RPC calls (regular and streaming), and reconnects with the reference client's
//! backoff when the socket drops — except after a terminal close (`1008`, `4000`–`4999`) or
//! [`AgentClient::close`].
//!
//! ```no_run
//! use agentwire::client::{AgentClient, ClientEvent};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = AgentClient::builder("ws://127.0.0.1:8787", "CounterAgent", "demo").build()?;
//! let mut events = client.events(); // sees everything since `build`
//! let who = client.ready().await?; // identity (and the state that follows it) received
//! println!("connected to {}/{} as {}", who.agent, who.name, client.id());
//! println!("state: {:?}", client.state());
//!
//! let count = client.call("increment", [1]).await?;
//! let mut countdown = client.call_stream("countdown", [3])?;
//! while let Some(chunk) = countdown.next_chunk().await {
//!     println!("chunk {chunk}");
//! }
//! println!("final {}", countdown.finish().await?);
//!
//! client.set_state(&json!({"count": 10}))?; // local state updated at once, no echo
//! while let Ok(ev) = events.try_recv() {
//!     if let ClientEvent::Message(m) = ev { println!("message {m:?}"); }
//! }
//! client.close().await;
//! # let _ = count; Ok(()) }
//! ```
//!
//! # Behaviour, as the reference client
//!
//! * [`AgentClient::ready`] resolves on `cf_agent_identity`, or, when the identity says
//!   `stateFollows`, on the state frame after it. It is reset when the socket drops and
//!   resolves again after reconnecting.
//! * [`AgentClient::set_state`] sends `cf_agent_state` and updates the local state at once
//!   (source [`UpdateSource::Client`]); the server does not echo it. A refusal arrives as
//!   [`ClientEvent::StateError`].
//! * Calls and messages made while disconnected are buffered and sent, in order, as soon as
//!   the next connection opens. Calls already sent fail with [`CallError::ConnectionClosed`]
//!   when the socket drops; a terminal close or [`AgentClient::close`] fails every pending
//!   call.
//! * Regular calls time out after 30 s by default ([`AgentClientBuilder::call_timeout`]);
//!   streaming calls have no timeout.
//! * Reconnection waits `3 s × 1.3^(n-1)` (at most 10 s) after the `n`-th consecutive
//!   failure; the counter resets after a connection stayed open 5 s ([`Backoff`]). Attempts
//!   that do not open within 4 s are abandoned and retried.
//!
//! Everything the server sends that is not a protocol frame is a [`ClientEvent::Message`].
//!
//! # Tracing
//!
//! Connection attempts (and why they failed), opens, drops and replies to unknown call ids
//! are logged at `debug` in an `agent_client{url}` span; unparsable state frames at `warn`.

mod driver;
mod transport;
mod url;

use crate::Message;
use agentwire_protocol::{McpServers, RawJson};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use agentwire_ws::Config as WsConfig;

/// Who changed the state of a [`StateUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateSource {
    /// A `cf_agent_state` frame from the server (connect sequence or broadcast).
    Server,
    /// This client's own [`AgentClient::set_state`].
    Client,
}

/// The agent's state and where it came from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateUpdate {
    /// The full state.
    pub state: Value,
    /// Who set it.
    pub source: UpdateSource,
}

/// The instance the client is connected to, as the server's `cf_agent_identity` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Identity {
    /// The instance name, as routed (not percent-decoded).
    pub name: String,
    /// The agent namespace (kebab-case class name).
    pub agent: String,
}

/// Why the client stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// [`AgentClient::close`] was called, or every handle was dropped.
    Client,
    /// The server closed with a terminal code (`1008` or `4000`–`4999`).
    Terminal,
    /// The socket dropped and reconnection is disabled, or [`Backoff::max_retries`] was
    /// reached.
    GaveUp,
}

/// How the client ended ([`Status::Closed`], [`AgentClient::closed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The close code (`1006` when the connection ended without a Close frame, `1005` when the
    /// frame had no code).
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Why the client stopped.
    pub cause: CloseCause,
}

/// The connection status ([`AgentClient::status`], [`AgentClient::watch_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Connecting, or waiting before the next reconnect attempt.
    Connecting,
    /// The socket is open; the identity has not arrived yet.
    Open,
    /// Identity (and the state that follows it, if announced) received: calls are answered.
    Ready,
    /// The client stopped for good; calls fail at once.
    Closed(CloseInfo),
}

/// Something the client received or that happened to its connection
/// ([`AgentClient::events`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A socket opened (the first one or after a reconnect); the connect frames follow.
    Open,
    /// `cf_agent_identity`.
    Identity(Identity),
    /// The state changed: a server `cf_agent_state` frame or this client's
    /// [`AgentClient::set_state`].
    State(StateUpdate),
    /// `cf_agent_state_error`: the server refused this client's state update.
    StateError(String),
    /// `cf_agent_mcp_servers`.
    McpServers(McpServers),
    /// A frame that is not part of the protocol (application broadcasts, `onMessage`
    /// replies, binary frames).
    Message(Message),
    /// The socket closed.
    Disconnected {
        /// The close code (`1006`: no Close frame).
        code: u16,
        /// The close reason.
        reason: String,
        /// Whether the client will reconnect.
        reconnect: bool,
    },
}

/// Errors of the client handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL cannot be used.
    #[error("invalid url {0}")]
    Url(String),
    /// The client is closed.
    #[error("client closed ({} {})", .0.code, .0.reason)]
    Closed(CloseInfo),
    /// A value could not be serialised to JSON.
    #[error("json: {0}")]
    Json(String),
    /// [`AgentClientBuilder::build`] was called outside a tokio runtime.
    #[error("no tokio runtime")]
    NoRuntime,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The server answered with an error (`success:false`); the message as sent, e.g.
    /// `Method foo does not exist`.
    #[error("{0}")]
    Remote(String),
    /// The connection closed before the reply arrived (or the client is closed).
    #[error("Connection closed")]
    ConnectionClosed,
    /// No reply within the call's timeout.
    #[error("RPC call to {method} timed out after {}ms", .after.as_millis())]
    TimedOut {
        /// The method called.
        method: String,
        /// The timeout.
        after: Duration,
    },
    /// The arguments do not serialise to a JSON array, or the result could not be parsed.
    #[error("json: {0}")]
    Json(String),
}

/// Reconnection backoff. The default is the reference client's (partysocket's): the `n`-th
/// consecutive failure waits `3 s × 1.3^(n-1)`, at most 10 s, unlimited retries, and the
/// failure count resets once a connection stayed open 5 s.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Growth factor per further failure.
    pub factor: f64,
    /// Longest wait.
    pub max: Duration,
    /// A connection that stayed open this long resets the failure count.
    pub min_uptime: Duration,
    /// Give up after this many consecutive failures (`None`: never).
    pub max_retries: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(3),
            factor: 1.3,
            max: Duration::from_secs(10),
            min_uptime: Duration::from_secs(5),
            max_retries: None,
        }
    }
}

impl Backoff {
    /// A fixed wait between attempts (`factor` 1), handy in tests.
    pub fn constant(wait: Duration) -> Self {
        Self {
            initial: wait,
            factor: 1.0,
            max: wait,
            ..Self::default()
        }
    }

    /// Replaces [`max_retries`](Self::max_retries).
    pub fn with_max_retries(mut self, n: Option<u32>) -> Self {
        self.max_retries = n;
        self
    }

    /// The wait after `failures` consecutive failures (`0`: none).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exp = i32::try_from(failures - 1).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// Options of an [`AgentClient`]; from [`AgentClient::builder`].
#[derive(Debug, Clone)]
pub struct AgentClientBuilder {
    base: String,
    agent: String,
    name: String,
    prefix: String,
    id: Option<String>,
    query: Vec<(String, String)>,
    headers: http::HeaderMap,
    backoff: Option<Backoff>,
    call_timeout: Option<Duration>,
    connect_timeout: Duration,
    ws: WsConfig,
    event_capacity: usize,
    #[cfg(feature = "deflate")]
    deflate: Option<crate::DeflateConfig>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl AgentClientBuilder {
    /// The permessage-deflate offer (feature `deflate`; default: offered with the defaults,
    /// as browsers do; `None`: not offered). Used only if the server accepts it.
    #[cfg(feature = "deflate")]
    pub fn deflate(mut self, offer: Option<crate::DeflateConfig>) -> Self {
        self.deflate = offer;
        self
    }

    /// The URL prefix (default `agents`; may contain `/`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The connection id sent as `_pk` (default: a fresh UUID v4). The server uses it as the
    /// connection's id; it is reused on every reconnect.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Adds a query parameter after `_pk` (e.g. an auth token or `readonly=1`).
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Adds a header to the upgrade request (e.g. `Authorization`).
    pub fn header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Reconnection policy; `None` stops at the first drop. Default [`Backoff::default`].
    pub fn reconnect(mut self, backoff: Option<Backoff>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Timeout of regular calls made with [`AgentClient::call`] (default 30 s; `None`: wait
    /// forever).
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// How long an attempt may take to open the socket before it is abandoned (default 4 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// WebSocket limits and heartbeats (default: `agentwire-ws` defaults).
    pub fn ws_config(mut self, config: WsConfig) -> Self {
        self.ws = config;
        self
    }

    /// Events kept for a slow [`AgentClient::events`] receiver before it lags (default 1,024).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// The TLS configuration for `wss://` URLs (feature `tls`; default:
    /// [`crate::tls::client_config`], Mozilla's roots). Use
    /// [`crate::tls::client_config_with_roots`] to trust a private CA.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Starts the client: returns at once; the connection is made by a background task (so
    /// this must run inside a tokio runtime). Await [`AgentClient::ready`] before relying on
    /// the state; calls made earlier are buffered until the socket opens.
    pub fn build(self) -> Result<AgentClient, ClientError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        let id = self.id.unwrap_or_else(url::uuid_v4);
        #[allow(unused_mut)]
        let mut target = url::target(
            &self.base,
            &self.prefix,
            &self.agent,
            &self.name,
            &id,
            &self.query,
        )?;
        #[cfg(feature = "tls")]
        if let (Some(config), Some(_)) = (self.tls, &target.tls) {
            target.tls = Some(config);
        }
        let (events, first) = broadcast::channel(self.event_capacity);
        let shared = Arc::new(Shared {
            id,
            url: target.uri.to_string(),
            status: watch::Sender::new(Status::Connecting),
            state: watch::Sender::new(None),
            identity: Mutex::new(None),
            mcp: Mutex::new(None),
            events,
            first_events: Mutex::new(Some(first)),
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let driver = driver::Driver::new(
            shared.clone(),
            cmd_rx,
            driver::Settings {
                target,
                headers: self.headers,
                backoff: self.backoff,
                connect_timeout: self.connect_timeout,
                ws: self.ws,
                #[cfg(feature = "deflate")]
                deflate: self.deflate,
            },
        );
        runtime.spawn(driver.run());
        Ok(AgentClient {
            shared,
            cmds: cmd_tx,
            call_timeout: self.call_timeout,
        })
    }

    /// [`build`](Self::build), then waits for [`AgentClient::ready`]. While the server cannot
    /// be reached this keeps retrying (wrap it in `tokio::time::timeout` to bound it).
    pub async fn connect(self) -> Result<AgentClient, ClientError> {
        let client = self.build()?;
        client.ready().await?;
        Ok(client)
    }
}

/// What the handles and the background task share.
#[derive(Debug)]
pub(crate) struct Shared {
    id: String,
    url: String,
    status: watch::Sender<Status>,
    state: watch::Sender<Option<StateUpdate>>,
    identity: Mutex<Option<Identity>>,
    mcp: Mutex<Option<McpServers>>,
    events: broadcast::Sender<ClientEvent>,
    first_events: Mutex<Option<broadcast::Receiver<ClientEvent>>>,
}

impl Shared {
    fn emit(&self, ev: ClientEvent) {
        let _ = self.events.send(ev);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a call's outcome goes.
#[derive(Debug)]
pub(crate) enum Responder {
    Once(oneshot::Sender<Result<Value, CallError>>),
    Stream(mpsc::UnboundedSender<StreamMsg>),
}

impl Responder {
    fn finish(self, r: Result<Value, CallError>) {
        match self {
            Responder::Once(tx) => {
                let _ = tx.send(r);
            }
            Responder::Stream(tx) => {
                let _ = tx.send(StreamMsg::End(r));
            }
        }
    }
}

/// What a streaming call's receiver gets.
#[derive(Debug)]
pub(crate) enum StreamMsg {
    Chunk(Value),
    End(Result<Value, CallError>),
}

/// Something to send: a call or a frame.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Call {
        method: String,
        args: RawJson,
        timeout: Option<Duration>,
        created: Instant,
        reply: Responder,
    },
    /// A frame to send as it is (state updates, application messages).
    Frame(Message),
}

/// A command from a handle to the background task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Out(Outgoing),
    Close { code: u16, reason: String },
}

/// A client of one agent instance. Cheap to clone: clones share the connection. The
/// connection closes (code `1000`) when [`close`](Self::close) is called or the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct AgentClient {
    shared: Arc<Shared>,
    cmds: mpsc::UnboundedSender<Cmd>,
    call_timeout: Option<Duration>,
}

impl AgentClient {
    /// Options for a client of instance `name` of agent class `agent` (a class name such as
    /// `CounterAgent` or its namespace `counter-agent`) on the server at `base`
    /// (`ws://host:port`, `http://host:port` or `host:port`; `wss://host` or `https://host`
    /// with the feature `tls`).
    pub fn builder(
        base: impl Into<String>,
        agent: impl Into<String>,
        name: impl Into<String>,
    ) -> AgentClientBuilder {
        AgentClientBuilder {
            base: base.into(),
            agent: agent.into(),
            name: name.into(),
            prefix: agentwire_protocol::DEFAULT_PREFIX.to_owned(),
            id: None,
            query: Vec::new(),
            headers: http::HeaderMap::new(),
            backoff: Some(Backoff::default()),
            call_timeout: Some(agentwire_protocol::DEFAULT_CALL_TIMEOUT),
            connect_timeout: Duration::from_secs(4),
            ws: WsConfig::default(),
            event_capacity: 1024,
            #[cfg(feature = "deflate")]
            deflate: Some(crate::DeflateConfig::default()),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// A client with the default options, once [`ready`](Self::ready).
    pub async fn connect(
        base: impl Into<String>,
        agent: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<AgentClient, ClientError> {
        Self::builder(base, agent, name).connect().await
    }

    /// The connection id (`_pk`), the same on every reconnect.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The URL the client connects to.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The identity the server last sent, if any.
    pub fn identity(&self) -> Option<Identity> {
        lock(&self.shared.identity).clone()
    }

    /// The current state (`None` until the server sent one or [`set_state`](Self::set_state)
    /// was called).
    pub fn state(&self) -> Option<Value> {
        self.shared.state.borrow().as_ref().map(|u| u.state.clone())
    }

    /// The current state as a typed value (`None` when there is no state yet).
    pub fn state_as<T: DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.shared
            .state
            .borrow()
            .as_ref()
            .map(|u| T::deserialize(&u.state))
    }

    /// The MCP servers frame the server last sent, if any.
    pub fn mcp_servers(&self) -> Option<McpServers> {
        lock(&self.shared.mcp).clone()
    }

    /// The state and every change to it, with its source (a `watch`: a slow reader sees the
    /// latest update, not every one; use [`events`](Self::events) for all of them).
    pub fn subscribe_state(&self) -> watch::Receiver<Option<StateUpdate>> {
        self.shared.state.subscribe()
    }

    /// Every [`ClientEvent`], in order. The first call returns a receiver holding everything
    /// since the client was built (up to [`AgentClientBuilder::event_capacity`]); later calls
    /// see events from then on.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        lock(&self.shared.first_events)
            .take()
            .unwrap_or_else(|| self.shared.events.subscribe())
    }

    /// [`events`](Self::events) as a `futures_core::Stream`: every event in order; an
    /// `Err(Lagged)` item says how many were dropped because this reader fell more than
    /// [`AgentClientBuilder::event_capacity`] behind. Ends when the client is gone.
    pub fn event_stream(&self) -> ClientEvents {
        let rx = self.events();
        ClientEvents(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move {
                match rx.recv().await {
                    Ok(ev) => Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        Some((Err(Lagged { skipped }), rx))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        )))
    }

    /// [`subscribe_state`](Self::subscribe_state) as a `futures_core::Stream`: the current
    /// state first (if there is one), then each change (a slow reader sees the latest, not
    /// every one). Ends when the client is gone.
    pub fn state_stream(&self) -> StateChanges {
        let rx = self.subscribe_state();
        StateChanges(Box::pin(futures_util::stream::unfold(
            (rx, true),
            |(mut rx, first)| async move {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                loop {
                    let current = rx.borrow_and_update().clone();
                    if let Some(update) = current {
                        return Some((update, (rx, false)));
                    }
                    rx.changed().await.ok()?;
                }
            },
        )))
    }

    /// The connection status now.
    pub fn status(&self) -> Status {
        self.shared.status.borrow().clone()
    }

    /// The connection status and its changes.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Waits until the client is [`Status::Ready`] (resolves at once if it is) and returns the
    /// identity; fails once the client is closed.
    pub async fn ready(&self) -> Result<Identity, ClientError> {
        let mut rx = self.shared.status.subscribe();
        let st = rx
            .wait_for(|s| matches!(s, Status::Ready | Status::Closed(_)))
            .await
            .map_err(|_| ClientError::Closed(gone()))?
            .clone();
        match st {
            Status::Closed(info) => Err(ClientError::Closed(info)),
            _ => Ok(self.identity().unwrap_or_else(|| Identity {
                name: String::new(),
                agent: String::new(),
            })),
        }
    }

    /// Waits until the client stopped for good and returns how.
    pub async fn closed(&self) -> CloseInfo {
        let mut rx = self.shared.status.subscribe();
        let r = rx.wait_for(|s| matches!(s, Status::Closed(_))).await;
        match r.as_deref() {
            Ok(Status::Closed(info)) => info.clone(),
            _ => gone(),
        }
    }

    fn closed_error(&self) -> ClientError {
        match &*self.shared.status.borrow() {
            Status::Closed(info) => ClientError::Closed(info.clone()),
            _ => ClientError::Closed(gone()),
        }
    }

    /// Sets the agent's state: sends `cf_agent_state` (buffered while disconnected) and makes
    /// `state` the local state at once ([`UpdateSource::Client`]). The server does not echo
    /// it; a refusal arrives as [`ClientEvent::StateError`].
    pub fn set_state<T: Serialize + ?Sized>(&self, state: &T) -> Result<(), ClientError> {
        let value = serde_json::to_value(state).map_err(|e| ClientError::Json(e.to_string()))?;
        let frame = agentwire_protocol::ClientMessage::State {
            state: RawJson::from(&value),
        }
        .encode();
        self.cmds
            .send(Cmd::Out(Outgoing::Frame(Message::Text(frame))))
            .map_err(|_| self.closed_error())?;
        let update = StateUpdate {
            state: value,
            source: UpdateSource::Client,
        };
        self.shared.state.send_replace(Some(update.clone()));
        self.shared.emit(ClientEvent::State(update));
        Ok(())
    }

    /// Sends an application message (text or binary, not a protocol frame) to the agent's
    /// `onMessage`; buffered while disconnected.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), ClientError> {
        self.cmds
            .send(Cmd::Out(Outgoing::Frame(message.into())))
            .map_err(|_| self.closed_error())
    }

    /// Calls `method` with `args` (anything that serialises to a JSON array: `[1, 2]`, a
    /// tuple, `json!([…])`; `()` is no arguments) and returns its result (`null` for a method
    /// that returned nothing). Times out after [`AgentClientBuilder::call_timeout`].
    ///
    /// The request is queued when `call` is called, not when the future is first polled, so
    /// calls and state updates go out in the order they were made.
    pub fn call<A: Serialize>(
        &self,
        method: &str,
        args: A,
    ) -> impl Future<Output = Result<Value, CallError>> + Send + 'static {
        self.call_with_timeout(method, args, self.call_timeout)
    }

    /// [`call`](Self::call) with its own timeout (`None`: none).
    pub fn call_with_timeout<A: Serialize>(
        &self,
        method: &str,
        args: A,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Value, CallError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let started = self.start_call(method, args, timeout, Responder::Once(tx));
        async move {
            started?;
            rx.await.unwrap_or(Err(CallError::ConnectionClosed))
        }
    }

    /// Calls a streaming method: the returned [`CallStream`] yields the `done:false` chunks,
    /// then the final value or the error. No timeout (as the reference client).
    pub fn call_stream<A: Serialize>(
        &self,
        method: &str,
        args: A,
    ) -> Result<CallStream, CallError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.start_call(method, args, None, Responder::Stream(tx))?;
        Ok(CallStream { rx, end: None })
    }

    fn start_call<A: Serialize>(
        &self,
        method: &str,
        args: A,
        timeout: Option<Duration>,
        reply: Responder,
    ) -> Result<(), CallError> {
        let args = match serde_json::to_value(&args).map_err(|e| CallError::Json(e.to_string()))? {
            Value::Null => Value::Array(Vec::new()),
            v @ Value::Array(_) => v,
            _ => return Err(CallError::Json("call arguments must be an array".into())),
        };
        self.cmds
            .send(Cmd::Out(Outgoing::Call {
                method: method.to_owned(),
                args: RawJson::from(args),
                timeout,
                created: Instant::now(),
                reply,
            }))
            .map_err(|_| CallError::ConnectionClosed)
    }

    /// Closes the connection with `1000` (no reconnect), fails pending calls with
    /// [`CallError::ConnectionClosed`] and waits until the client is closed.
    pub async fn close(&self) -> CloseInfo {
        self.close_with(1000, "").await
    }

    /// [`close`](Self::close) with a code and reason.
    pub async fn close_with(&self, code: u16, reason: &str) -> CloseInfo {
        let _ = self.cmds.send(Cmd::Close {
            code,
            reason: reason.to_owned(),
        });
        self.closed().await
    }
}

/// The close information when the background task ended without reporting one (it cannot
/// normally happen: the task always reports before it ends).
fn gone() -> CloseInfo {
    CloseInfo {
        code: 1006,
        reason: String::new(),
        cause: CloseCause::Client,
    }
}

/// Events dropped for a reader that fell behind ([`AgentClient::event_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{skipped} client events dropped: the reader fell behind")]
pub struct Lagged {
    /// How many events were dropped.
    pub skipped: u64,
}

/// Every [`ClientEvent`] as a `Stream` ([`AgentClient::event_stream`]).
pub struct ClientEvents(
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<ClientEvent, Lagged>> + Send>>,
);

impl std::fmt::Debug for ClientEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEvents").finish_non_exhaustive()
    }
}

impl futures_core::Stream for ClientEvents {
    type Item = Result<ClientEvent, Lagged>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// The state and its changes as a `Stream` ([`AgentClient::state_stream`]).
pub struct StateChanges(std::pin::Pin<Box<dyn futures_core::Stream<Item = StateUpdate> + Send>>);

impl std::fmt::Debug for StateChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateChanges").finish_non_exhaustive()
    }
}

impl futures_core::Stream for StateChanges {
    type Item = StateUpdate;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<StateUpdate>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// A streaming call in progress ([`AgentClient::call_stream`]). Also a `futures_core::Stream`
/// of the chunks (the same as [`next_chunk`](Self::next_chunk)).
#[derive(Debug)]
pub struct CallStream {
    rx: mpsc::UnboundedReceiver<StreamMsg>,
    end: Option<Result<Value, CallError>>,
}

impl CallStream {
    /// The next chunk, or `None` once the call ended (then [`finish`](Self::finish) returns
    /// the outcome at once).
    pub async fn next_chunk(&mut self) -> Option<Value> {
        if self.end.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(StreamMsg::Chunk(v)) => Some(v),
            Some(StreamMsg::End(r)) => {
                self.end = Some(r);
                None
            }
            None => {
                self.end = Some(Err(CallError::ConnectionClosed));
                None
            }
        }
    }

    /// The final value (`null` if the stream ended without one) or the error, skipping the
    /// chunks not read yet.
    pub async fn finish(mut self) -> Result<Value, CallError> {
        while self.next_chunk().await.is_some() {}
        self.end.unwrap_or(Err(CallError::ConnectionClosed))
    }
}

impl futures_core::Stream for CallStream {
    type Item = Value;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Value>> {
        use std::task::Poll;
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(StreamMsg::Chunk(v))) => Poll::Ready(Some(v)),
            Poll::Ready(Some(StreamMsg::End(r))) => {
                self.end = Some(r);
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.end = Some(Err(CallError::ConnectionClosed));
                Poll::Ready(None)
            }
        }
    }
}
