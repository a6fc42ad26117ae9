//! The [`Agent`] trait, its [`Context`], and RPC types.

use crate::body::{response, Body};
use crate::connection::{Connection, Message};
use crate::sse::{self, SseSender};
use crate::store::{InstanceStore, StoreError};
use agentwire_protocol::{RawJson, RpcId, RpcResponse, StateFrame, Utf8Bytes};
use agentwire_ws::PreparedMessage;
use http::{HeaderMap, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// A boxed error, as hooks return it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a state change came from.
#[derive(Debug, Clone, Copy)]
pub enum StateSource<'a> {
    /// Server code called [`Context::set_state`].
    Server,
    /// A client sent `cf_agent_state` on this connection.
    Client(&'a Connection),
}

/// Why [`Agent::on_connect`] refused a connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reject {
    /// Accept the WebSocket, then close it at once with this code and reason (use `1008` or
    /// `4000`–`4999` to stop the reference client from reconnecting).
    Close(u16, String),
    /// Answer the upgrade request with this HTTP response instead of `101`. (Clients retry
    /// non-`101` answers forever; prefer [`Reject::Close`] with a 4xxx code to stop them.)
    Http(Response<Body>),
}

/// An agent class: one value per instance (per URL name), created on first use and driven
/// one event at a time, in arrival order.
///
/// Every hook has a default; a useful agent overrides [`on_call`](Self::on_call) and perhaps
/// [`initial_state`](Self::initial_state). Hooks get `&mut self` (in-memory fields, lost on
/// hibernation) and the [`Context`] (state, connections, SQL, broadcast).
pub trait Agent: Send + Sized + 'static {
    /// The agent's state, synchronised to every protocol connection. `serde_json::Value`
    /// accepts anything.
    type State: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// The state before anything was stored; `None` means "no state" (then no state frame is
    /// sent on connect). It is persisted when first read.
    fn initial_state(&self) -> Option<Self::State> {
        None
    }

    /// Checks a state change before it is persisted. A client's update that fails (or that
    /// does not deserialise into [`State`](Self::State)) is answered with
    /// `cf_agent_state_error` `State update rejected`; a server-side [`Context::set_state`]
    /// fails with the message.
    ///
    /// The default accepts server changes and **refuses every client update**: clients may
    /// write the state only where an agent opts in by overriding this.
    fn validate_state(next: &Self::State, source: StateSource<'_>) -> Result<(), String> {
        let _ = next;
        match source {
            StateSource::Server => Ok(()),
            StateSource::Client(_) => Err("client state updates are not accepted".into()),
        }
    }

    /// Runs once when the instance starts (and again when it wakes from hibernation), before
    /// any other hook.
    fn on_start(
        &mut self,
        cx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = cx;
        async { Ok(()) }
    }

    /// Whether a new connection is readonly (decided before the connect frames are sent).
    fn connection_readonly(&self, conn: &Connection, req: &http::request::Parts) -> bool {
        let _ = (conn, req);
        false
    }

    /// Whether a new connection receives protocol frames (identity, state, MCP servers).
    fn connection_protocol_messages(&self, conn: &Connection, req: &http::request::Parts) -> bool {
        let _ = (conn, req);
        true
    }

    /// Extra tags of a new connection (its id is always the first tag; at most 10 tags in all,
    /// each 1–256 characters).
    fn connection_tags(&self, conn: &Connection, req: &http::request::Parts) -> Vec<String> {
        let _ = (conn, req);
        Vec::new()
    }

    /// A WebSocket connected (after its connect frames were queued); no message of it is
    /// delivered before this returns.
    fn on_connect(
        &mut self,
        cx: &mut Context<Self>,
        conn: &Connection,
        req: &http::request::Parts,
    ) -> impl Future<Output = Result<(), Reject>> + Send {
        let _ = (cx, conn, req);
        async { Ok(()) }
    }

    /// A text frame that is not a protocol message, or a binary frame.
    fn on_message(
        &mut self,
        cx: &mut Context<Self>,
        conn: &Connection,
        msg: Message,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (cx, conn, msg);
        async { Ok(()) }
    }

    /// An RPC call. Match on [`Call::method`]; answer [`RpcError::NoSuchMethod`] for unknown
    /// names (the default) and [`RpcError::NotCallable`] for names that exist but are not
    /// exposed.
    fn on_call(
        &mut self,
        cx: &mut Context<Self>,
        call: Call,
    ) -> impl Future<Output = Result<Reply, RpcError>> + Send {
        let _ = (cx, call);
        async { Err(RpcError::NoSuchMethod) }
    }

    /// A WebSocket closed (`code` 1005 when the peer sent none, 1006 when it vanished).
    fn on_close(
        &mut self,
        cx: &mut Context<Self>,
        conn: &Connection,
        code: u16,
        reason: &str,
        clean: bool,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (cx, conn, code, reason, clean);
        async { Ok(()) }
    }

    /// A plain HTTP request to `/{prefix}/{namespace}/{name}[/…]`. Its body is streamed
    /// (see [`crate::request`]): read it with [`RequestExt`](crate::RequestExt)
    /// (`req.json::<T>()`, `req.bytes()`, `req.multipart()`) or as an `http_body::Body`. The
    /// default answers `404 Not implemented`; an error answers `500`, except a
    /// [`RequestError`](crate::RequestError), which answers its own status (`400`, `413`, `415`).
    ///
    /// The instance handles its other events after this returns: a hook that reads a large
    /// or slow upload holds the instance meanwhile.
    fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        req: crate::HttpRequest,
    ) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send {
        let _ = (cx, req);
        async {
            Ok(response::text(
                StatusCode::NOT_FOUND,
                agentwire_protocol::texts::NOT_IMPLEMENTED,
            ))
        }
    }

    /// The largest request body accepted for `req` (`None`: [`Limits::max_request_body`](crate::Limits::max_request_body),
    /// 1 MiB by default). Decided from the request head before the instance is involved, so
    /// it can differ per route (e.g. more for an upload path). A request announcing more
    /// (`Content-Length`) is answered `413` unread; a longer chunked body fails with
    /// [`RequestError::TooLarge`](crate::RequestError::TooLarge) once past the limit.
    fn max_request_body(req: &http::request::Parts) -> Option<u64> {
        let _ = req;
        None
    }

    /// The state changed (after it was persisted and broadcast). `source` is the connection
    /// whose `cf_agent_state` caused it, or `None` for server-side changes.
    fn on_state_update(
        &mut self,
        cx: &mut Context<Self>,
        state: &Self::State,
        source: Option<&Connection>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (cx, state, source);
        async { Ok(()) }
    }

    /// A hook failed, or the runtime hit an error for this instance (`conn` is the connection
    /// concerned, if any). The default logs it.
    fn on_error(
        &mut self,
        cx: &mut Context<Self>,
        conn: Option<&Connection>,
        error: &BoxError,
    ) -> impl Future<Output = ()> + Send {
        tracing::error!(
            agent = %cx.agent_namespace(),
            name = %cx.name(),
            connection = conn.map(|c| c.id()),
            %error,
            "agent error"
        );
        async {}
    }
}

// ===== RPC =====

/// One RPC call: method, JSON arguments, calling connection, stream handle.
///
/// The arguments are kept as their JSON text ([`RawJson`]), exactly as the client sent them:
/// every value `JSON.parse` accepts is kept as it is — lone UTF-16 surrogate escapes
/// (`"\ud800"`), integers beyond 2^53, `1e308`, `-0`, nesting hundreds of levels deep — and
/// is only parsed into a Rust value when a typed accessor asks for it. An agent that relays
/// values (echo, storage, forwarding) uses [`raw_arg`](Self::raw_arg) and [`Reply::raw`] and
/// changes nothing.
#[derive(Debug)]
pub struct Call {
    pub(crate) id: RpcId,
    pub(crate) method: String,
    pub(crate) args: Vec<RawJson>,
    pub(crate) conn: Connection,
}

impl Call {
    /// The method name.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The calling connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// All arguments, each as its JSON text.
    pub fn args(&self) -> &[RawJson] {
        &self.args
    }

    /// How many arguments the client passed.
    pub fn arg_count(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` as its JSON text, or `None` when the client passed fewer arguments.
    pub fn raw_arg(&self, i: usize) -> Option<&RawJson> {
        self.args.get(i)
    }

    /// Argument `i`, deserialised; a missing argument reads as `null` (so `Option<T>` accepts
    /// it, like an omitted JavaScript argument). A value that does not fit `T` fails the call
    /// with `argument {i}: …`.
    pub fn arg<T: DeserializeOwned>(&self, i: usize) -> Result<T, RpcError> {
        let parsed = match self.args.get(i) {
            Some(raw) => raw.deserialize(),
            None => serde_json::from_str("null"),
        };
        parsed.map_err(|e| RpcError::Failed(format!("argument {i}: {e}")))
    }

    /// Argument `i`, or `default` when it is missing or `null`.
    pub fn arg_or<T: DeserializeOwned>(&self, i: usize, default: T) -> Result<T, RpcError> {
        Ok(self.arg::<Option<T>>(i)?.unwrap_or(default))
    }

    /// A handle for streaming chunks (`done:false` frames) before the final [`Reply`].
    pub fn stream(&self) -> RpcStream {
        RpcStream {
            id: self.id.clone(),
            conn: self.conn.clone(),
        }
    }
}

/// Splits the `args` array of a call into its elements, kept as JSON text. Fails only on text
/// that is not a JSON array (the classifier lets only arrays through).
pub(crate) fn split_args(args: &RawJson) -> Result<Vec<RawJson>, serde_json::Error> {
    let items: Vec<Box<serde_json::value::RawValue>> = serde_json::from_str(args.get())?;
    Ok(items.into_iter().map(RawJson::from_raw).collect())
}

/// Sends the chunks of a streaming call.
#[derive(Debug, Clone)]
pub struct RpcStream {
    id: RpcId,
    conn: Connection,
}

impl RpcStream {
    /// Sends one chunk. Fails with `Connection closed` once the calling connection is gone
    /// (closed, or closed for overflowing its queue), so that a loop producing chunks with
    /// `stream.send(&chunk)?` ends when nobody is listening any more.
    pub fn send<T: Serialize + ?Sized>(&self, chunk: &T) -> Result<(), RpcError> {
        if self.conn.is_closed() {
            return Err(RpcError::new(agentwire_protocol::texts::CONNECTION_CLOSED));
        }
        let frame = RpcResponse::chunk(self.id.clone(), chunk)?;
        self.conn
            .send_text(frame.encode())
            .map_err(|_| RpcError::new(agentwire_protocol::texts::CONNECTION_CLOSED))
    }

    /// Whether the calling connection is gone (chunks and the reply would be dropped).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

/// The final value of a successful call.
#[derive(Debug, Clone)]
pub struct Reply(pub(crate) Option<RawJson>);

impl Reply {
    /// A result value.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Reply, RpcError> {
        Ok(Reply(Some(RawJson::from_serialize(value)?)))
    }

    /// No result (the reply frame has no `result` key; the client resolves `undefined`).
    pub fn void() -> Reply {
        Reply(None)
    }

    /// A result given as JSON text, sent exactly as it is (see [`Call::raw_arg`]).
    pub fn raw(value: RawJson) -> Reply {
        Reply(Some(value))
    }
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// `Method {name} does not exist`.
    #[error("method does not exist")]
    NoSuchMethod,
    /// `Method {name} is not callable`.
    #[error("method is not callable")]
    NotCallable,
    /// The call failed with this message.
    #[error("{0}")]
    Failed(String),
}

impl RpcError {
    /// A failure with `message` (what the client's promise rejects with).
    pub fn new(message: impl fmt::Display) -> Self {
        RpcError::Failed(message.to_string())
    }
}

impl From<serde_json::Error> for RpcError {
    fn from(e: serde_json::Error) -> Self {
        RpcError::Failed(e.to_string())
    }
}

impl From<StateError> for RpcError {
    fn from(e: StateError) -> Self {
        RpcError::Failed(e.to_string())
    }
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        RpcError::Failed(e.to_string())
    }
}

impl From<rusqlite::Error> for RpcError {
    fn from(e: rusqlite::Error) -> Self {
        RpcError::Failed(e.to_string())
    }
}

impl From<String> for RpcError {
    fn from(e: String) -> Self {
        RpcError::Failed(e)
    }
}

impl From<&str> for RpcError {
    fn from(e: &str) -> Self {
        RpcError::Failed(e.to_owned())
    }
}

// ===== state =====

/// A refused [`Context::set_state`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The call is handling an RPC of a readonly connection: `Connection is readonly`.
    #[error("Connection is readonly")]
    Readonly,
    /// [`Agent::validate_state`] refused it; the message is the validator's.
    #[error("{0}")]
    Invalid(String),
    /// The state could not be serialised.
    #[error("state not serialisable: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Persisting failed; nothing changed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

pub(crate) struct Loaded<S> {
    pub(crate) value: S,
    pub(crate) raw: RawJson,
}

impl<S> Loaded<S> {
    /// `{"type":"cf_agent_state","state":…}`: the connect-time form (key order of the
    /// reference server, which differs from its broadcast form).
    pub(crate) fn connect_frame(&self) -> Utf8Bytes {
        Utf8Bytes::from(format!(
            "{{\"type\":\"cf_agent_state\",\"state\":{}}}",
            self.raw.get()
        ))
    }
}

/// What an agent instance knows and can do: its name, state, connections, storage.
///
/// Hooks get `&mut Context<Self>`. It outlives the agent value: when an idle instance is
/// evicted (hibernation) the connections stay here while the agent value and its in-memory
/// fields are dropped.
pub struct Context<A: Agent> {
    pub(crate) name: Arc<str>,
    pub(crate) namespace: Arc<str>,
    /// Keyed by the connection's accept sequence, so iteration (broadcasts, `connections()`)
    /// runs oldest connection first, like the reference server.
    pub(crate) conns: BTreeMap<u64, Connection>,
    pub(crate) store: Option<InstanceStore>,
    pub(crate) state: Option<Loaded<A::State>>,
    pub(crate) current: Option<Connection>,
    pub(crate) changed: VecDeque<Option<Connection>>,
    pub(crate) sse: HashMap<String, Vec<SseSender>>,
    pub(crate) sse_log_len: usize,
}

impl<A: Agent> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl<A: Agent> Context<A> {
    /// The instance name, exactly as routed (not percent-decoded).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL namespace of the agent class (`counter-agent`).
    pub fn agent_namespace(&self) -> &str {
        &self.namespace
    }

    /// The current state (`None` when the agent has none).
    pub fn state(&self) -> Option<&A::State> {
        self.state.as_ref().map(|l| &l.value)
    }

    /// The connection whose event is being handled, if any.
    pub fn current_connection(&self) -> Option<&Connection> {
        self.current.as_ref()
    }

    /// Validates, persists (committed), then broadcasts the new state to every protocol
    /// connection, the calling one included. Fails with [`StateError::Readonly`] while
    /// handling a readonly connection's event.
    pub fn set_state(&mut self, state: A::State) -> Result<(), StateError> {
        if self.current.as_ref().is_some_and(Connection::readonly) {
            return Err(StateError::Readonly);
        }
        A::validate_state(&state, StateSource::Server).map_err(StateError::Invalid)?;
        let raw = RawJson::from_serialize(&state)?;
        self.commit_state(state, raw, None)?;
        Ok(())
    }

    /// [`set_state`](Self::set_state) with a function of the previous state.
    pub fn update_state(
        &mut self,
        f: impl FnOnce(Option<&A::State>) -> A::State,
    ) -> Result<(), StateError> {
        let next = f(self.state());
        self.set_state(next)
    }

    /// Persist → remember → broadcast (to all protocol connections except those with the id of
    /// `source`) → queue the change notification.
    pub(crate) fn commit_state(
        &mut self,
        value: A::State,
        raw: RawJson,
        source: Option<&Connection>,
    ) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.save_state(raw.get())?;
        }
        let frame = PreparedMessage::text(StateFrame::from_raw_json(&raw).into_utf8_bytes());
        for c in self.conns.values() {
            // Every protocol connection but the source socket itself (not every socket that
            // shares its id: a client reusing another's `_pk` must not mute its updates).
            if c.protocol_messages() && source.is_none_or(|s| s.key() != c.key()) {
                let _ = c.send_shared(&frame);
            }
        }
        self.state = Some(Loaded { value, raw });
        self.changed.push_back(source.cloned());
        Ok(())
    }

    /// The open connections.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> + '_ {
        self.conns.values()
    }

    /// The open connections that have `tag`.
    pub fn connections_tagged<'a>(
        &'a self,
        tag: &'a str,
    ) -> impl Iterator<Item = &'a Connection> + 'a {
        self.conns.values().filter(move |c| c.has_tag(tag))
    }

    /// The open connection with this id (the first one if a client reused an id).
    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.conns.values().find(|c| c.id() == id)
    }

    /// Sends `msg` to every open connection whose id is not in `without` (no-protocol ones
    /// included); returns how many it was sent to. A text message is encoded once and shared.
    pub fn broadcast(&self, msg: impl Into<crate::Message>, without: &[&str]) -> usize {
        let msg = match msg.into() {
            Message::Text(t) => PreparedMessage::text(t),
            Message::Binary(b) => PreparedMessage::binary(b),
        };
        let mut n = 0;
        for c in self.conns.values() {
            if !without.contains(&c.id()) && c.send_shared(&msg).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// The instance's own SQLite database (also holds the runtime's `cf_agents_*` tables).
    pub fn sql(&self) -> &rusqlite::Connection {
        // Invariant: the store is open whenever a hook runs (the instance does not start
        // without it).
        &self
            .store
            .as_ref()
            .expect("the instance store is open while hooks run")
            .db
    }

    /// Appends an event to the persisted log of `stream` (keeping the last
    /// [`sse::DEFAULT_LOG_LEN`]) and sends it to the stream's live subscribers; returns its
    /// id. Subscribers that are gone or too far behind are dropped.
    pub fn sse_publish(
        &mut self,
        stream: &str,
        event: Option<&str>,
        data: &str,
    ) -> Result<u64, StoreError> {
        let id = match &self.store {
            Some(s) => s.sse_append(stream, event, data, self.sse_log_len)?,
            None => 0,
        };
        if let Some(subs) = self.sse.get_mut(stream) {
            let bytes = sse::encode(Some(id), event, data);
            subs.retain(|s| s.send_raw(bytes.clone()).is_ok());
        }
        Ok(id)
    }

    /// Sends an event without an id and without logging it (e.g. a final `done` event).
    pub fn sse_send_unlogged(&mut self, stream: &str, event: Option<&str>, data: &str) {
        if let Some(subs) = self.sse.get_mut(stream) {
            let bytes = sse::encode(None, event, data);
            subs.retain(|s| s.send_raw(bytes.clone()).is_ok());
        }
    }

    /// A `text/event-stream` response subscribed to `stream`: first the logged events after
    /// the request's `Last-Event-ID` (when it has one), then live events.
    pub fn sse_subscribe(
        &mut self,
        stream: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, StoreError> {
        let (resp, tx) = sse::response();
        if let (Some(after), Some(store)) = (sse::last_event_id(headers), &self.store) {
            for ev in store.sse_since(stream, after)? {
                if tx.send_stored(&ev).is_err() {
                    break;
                }
            }
        }
        self.sse.entry(stream.to_owned()).or_default().push(tx);
        Ok(resp)
    }

    /// Ends the responses of every live subscriber of `stream`.
    pub fn sse_end(&mut self, stream: &str) {
        self.sse.remove(stream);
    }

    /// Forgets the logged events of `stream` (ids start at 1 again).
    pub fn sse_reset(&mut self, stream: &str) -> Result<(), StoreError> {
        if let Some(s) = &self.store {
            s.sse_reset(stream)?;
        }
        Ok(())
    }

    pub(crate) fn broadcast_protocol(&self, frame: &Utf8Bytes) {
        let frame = PreparedMessage::text(frame.clone());
        for c in self.conns.values() {
            if c.protocol_messages() {
                let _ = c.send_shared(&frame);
            }
        }
    }
}

pub(crate) fn encode_reply(id: RpcId, method: &str, res: Result<Reply, RpcError>) -> Utf8Bytes {
    match res {
        Ok(Reply(result)) => RpcResponse::Done { id, result },
        // A name of the reference base class (`setState`, `onConnect`, `toString`, …) exists
        // there as a function that is not callable, so the reference answers "not callable".
        Err(RpcError::NoSuchMethod)
            if agentwire_protocol::texts::is_reference_agent_member(method) =>
        {
            RpcResponse::method_not_callable(id, method)
        }
        Err(RpcError::NoSuchMethod) => RpcResponse::method_does_not_exist(id, method),
        Err(RpcError::NotCallable) => RpcResponse::method_not_callable(id, method),
        Err(RpcError::Failed(msg)) => RpcResponse::error(id, msg),
    }
    .encode()
}
