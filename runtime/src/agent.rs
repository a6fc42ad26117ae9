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

/// A connection's peer broke the WebSocket protocol (a malformed or oversized frame, invalid
/// UTF-8, …): passed to [`Agent::on_error`] with the connection, before
/// [`Agent::on_close`]. The socket was closed with [`code`](Self::code).
#[derive(Debug, Clone, thiserror::Error)]
#[error("websocket protocol error (close {}): {message}", code.0)]
pub struct SocketError {
    /// The close code sent to the peer (`1002`, `1007`, `1009`).
    pub code: agentwire_ws::CloseCode,
    /// What was wrong.
    pub message: String,
}

/// Why [`Agent::on_connect`] refused a connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reject {
    /// Accept the WebSocket, then close it at once with this code and reason (use `1008` or
    /// `4000`–`4999` to stop the reference client from reconnecting).
    Close(agentwire_ws::CloseCode, String),
    /// Answer the upgrade request with this HTTP response instead of `101`. (Clients retry
    /// non-`101` answers forever; prefer [`Reject::Close`] with a 4xxx code to stop them.)
    Http(Response<Body>),
}

/// An agent class: one value per instance (per URL name), created on first use and driven
/// one event at a time, in arrival order. A hook that has to await something slow defers
/// its reply ([`Call::defer`]) and does the waiting in a task ([`Context::spawn`]), so that
/// the instance goes on with its other events (see the crate docs, "Hooks that await").
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
    /// any other hook. Its props are [`Context::props`].
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

    /// A schedule came due (see [`Context::schedule`] and [`crate::schedule`]): match on
    /// [`Schedule::method`](crate::Schedule::method). The schedule is removed (or moved to its
    /// next time) after this returns, error or not; an error goes to
    /// [`on_error`](Self::on_error). The default fails with "no handler".
    fn on_schedule(
        &mut self,
        cx: &mut Context<Self>,
        schedule: crate::Schedule,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = cx;
        async move {
            Err(format!(
                "schedule {} ({}) is due but the agent has no on_schedule",
                schedule.id, schedule.method
            )
            .into())
        }
    }

    /// A hook failed, or the runtime hit an error for this instance (`conn` is the connection
    /// concerned, if any), including a peer that broke the WebSocket protocol (a
    /// [`SocketError`], with the close code; `error.downcast_ref::<SocketError>()`). The
    /// default logs it.
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
    pub(crate) slot: Arc<CallSlot>,
    pub(crate) from_handle: bool,
}

/// What the runtime and a call's [`Deferred`] responder share, so that exactly one final
/// frame is sent: whether the call was deferred, whether the hook is still running, whether
/// the responder was dropped unanswered, and whether the final frame went out.
#[derive(Debug)]
pub(crate) struct CallSlot(std::sync::Mutex<SlotState>);

#[derive(Debug)]
struct SlotState {
    deferred: bool,
    hook_running: bool,
    dropped: bool,
    answered: bool,
}

/// What the runtime does once the hook returned.
pub(crate) enum AfterHook {
    /// Send the hook's result.
    Send,
    /// The responder was dropped unanswered while the hook ran: answer that.
    Dropped,
    /// Nothing: the responder answers (or did).
    Nothing,
}

impl CallSlot {
    pub(crate) fn new() -> Self {
        Self(std::sync::Mutex::new(SlotState {
            deferred: false,
            hook_running: true,
            dropped: false,
            answered: false,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the right to send the final frame (true once).
    fn claim(&self) -> bool {
        !std::mem::replace(&mut self.lock().answered, true)
    }

    fn answered(&self) -> bool {
        self.lock().answered
    }

    /// The hook returned (`failed`: with an error, which then is the answer unless the
    /// responder already answered).
    pub(crate) fn hook_returned(&self, failed: bool) -> AfterHook {
        let mut s = self.lock();
        s.hook_running = false;
        if s.answered {
            return AfterHook::Nothing;
        }
        if failed || !s.deferred {
            s.answered = true;
            return AfterHook::Send;
        }
        if s.dropped {
            s.answered = true;
            return AfterHook::Dropped;
        }
        AfterHook::Nothing
    }
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
            slot: self.slot.clone(),
        }
    }

    /// Whether the call came through an [`AgentHandle`](crate::AgentHandle) rather than a
    /// client's socket (then [`connection`](Self::connection) is a detached connection with
    /// an empty id that belongs to no instance).
    pub fn from_handle(&self) -> bool {
        self.from_handle
    }

    /// Answers the call later, from any task: the hook returns [`Reply::deferred()`] at once
    /// and the instance goes on with its next event while the returned [`Deferred`] streams
    /// chunks and sends the final reply (typically from a task started with
    /// [`Context::spawn`]). See the crate docs, "Hooks that await".
    ///
    /// A `Deferred` dropped without [`finish`](Deferred::finish) answers the call with the
    /// error `Call dropped without a reply`, so no client waits forever.
    pub fn defer(&self) -> Deferred {
        self.slot.lock().deferred = true;
        Deferred {
            id: self.id.clone(),
            method: self.method.clone(),
            conn: self.conn.clone(),
            slot: self.slot.clone(),
            started: crate::metrics::start(),
        }
    }
}

/// The responder of a deferred call ([`Call::defer`]): `Send + 'static`, completed later from
/// any task. Chunks ([`send`](Self::send)) and the final reply ([`finish`](Self::finish)) go
/// straight to the caller's socket queue; they do not wait for the instance.
#[derive(Debug)]
pub struct Deferred {
    id: RpcId,
    method: String,
    conn: Connection,
    slot: Arc<CallSlot>,
    started: std::time::Instant,
}

impl Deferred {
    /// Sends one streaming chunk (`done:false`). Fails with `Connection closed` once the
    /// caller is gone, so that a producing loop `d.send(&token)?` ends when nobody listens.
    pub fn send<T: Serialize + ?Sized>(&self, chunk: &T) -> Result<(), RpcError> {
        send_chunk(&self.id, &self.conn, &self.slot, chunk)
    }

    /// A cloneable [`RpcStream`] for the same call (to hand chunks out to several tasks).
    pub fn stream(&self) -> RpcStream {
        RpcStream {
            id: self.id.clone(),
            conn: self.conn.clone(),
            slot: self.slot.clone(),
        }
    }

    /// Whether the caller is gone (chunks and the reply would be dropped).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Sends the final reply (or error) and ends the call. Returns `false` when it was not
    /// delivered: the caller is gone.
    pub fn finish(self, result: Result<Reply, RpcError>) -> bool {
        self.answer(result)
    }

    fn answer(&self, result: Result<Reply, RpcError>) -> bool {
        if !self.slot.claim() {
            return false;
        }
        let result = match result {
            Ok(Reply(ReplyKind::Deferred)) => {
                Err(RpcError::new("Reply::deferred() is not a final reply"))
            }
            r => r,
        };
        crate::metrics::rpc_done(self.started);
        self.conn
            .send_text(encode_reply(self.id.clone(), &self.method, result))
            .is_ok()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let mut s = self.slot.lock();
        if s.answered {
            return;
        }
        if s.hook_running {
            // the hook's own result decides (an error it returns is the answer)
            s.dropped = true;
            return;
        }
        drop(s);
        tracing::warn!(method = %self.method, "a deferred call was dropped without a reply");
        self.answer(Err(RpcError::new(CALL_DROPPED)));
    }
}

/// The error a deferred call that was dropped unanswered fails with.
pub(crate) const CALL_DROPPED: &str = "Call dropped without a reply";

fn send_chunk<T: Serialize + ?Sized>(
    id: &RpcId,
    conn: &Connection,
    slot: &CallSlot,
    chunk: &T,
) -> Result<(), RpcError> {
    if conn.is_closed() || slot.answered() {
        return Err(RpcError::new(agentwire_protocol::texts::CONNECTION_CLOSED));
    }
    let frame = RpcResponse::chunk(id.clone(), chunk)?;
    conn.send_text(frame.encode())
        .map_err(|_| RpcError::new(agentwire_protocol::texts::CONNECTION_CLOSED))
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
    slot: Arc<CallSlot>,
}

impl RpcStream {
    /// Sends one chunk. Fails with `Connection closed` once the calling connection is gone
    /// (closed, or closed for overflowing its queue), so that a loop producing chunks with
    /// `stream.send(&chunk)?` ends when nobody is listening any more.
    pub fn send<T: Serialize + ?Sized>(&self, chunk: &T) -> Result<(), RpcError> {
        send_chunk(&self.id, &self.conn, &self.slot, chunk)
    }

    /// Whether the calling connection is gone (chunks and the reply would be dropped).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

/// The final value of a successful call.
#[derive(Debug, Clone)]
pub struct Reply(pub(crate) ReplyKind);

#[derive(Debug, Clone)]
pub(crate) enum ReplyKind {
    Value(Option<RawJson>),
    Deferred,
}

impl Reply {
    /// A result value.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Reply, RpcError> {
        Ok(Reply(ReplyKind::Value(Some(RawJson::from_serialize(
            value,
        )?))))
    }

    /// No result (the reply frame has no `result` key; the client resolves `undefined`).
    pub fn void() -> Reply {
        Reply(ReplyKind::Value(None))
    }

    /// A result given as JSON text, sent exactly as it is (see [`Call::raw_arg`]).
    pub fn raw(value: RawJson) -> Reply {
        Reply(ReplyKind::Value(Some(value)))
    }

    /// What a hook returns after [`Call::defer`]: the reply comes later from the
    /// [`Deferred`] responder. (Returned without deferring, the call fails.)
    pub fn deferred() -> Reply {
        Reply(ReplyKind::Deferred)
    }

    /// The result's JSON text (`None`: no result, or [`Reply::deferred`]).
    pub fn as_raw(&self) -> Option<&RawJson> {
        match &self.0 {
            ReplyKind::Value(v) => v.as_ref(),
            ReplyKind::Deferred => None,
        }
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

impl From<crate::ScheduleError> for RpcError {
    fn from(e: crate::ScheduleError) -> Self {
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

/// [`Context::spawn`] refused a task: [`Limits::max_instance_tasks`](crate::Limits::max_instance_tasks)
/// are running on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many tasks running on this agent instance")]
pub struct TooManyTasks;

impl From<TooManyTasks> for RpcError {
    fn from(e: TooManyTasks) -> Self {
        RpcError::Failed(e.to_string())
    }
}

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
    pub(crate) scheduler: Arc<crate::schedule::Scheduler>,
    /// Tasks of [`Context::spawn`]: aborted when the instance is deleted or ends.
    pub(crate) tasks: tokio::task::JoinSet<()>,
    /// The output gate (cluster storage): output of an event waits for its writes.
    pub(crate) gate: Option<Arc<crate::connection::Gate>>,
    pub(crate) env: crate::instance::Env,
    pub(crate) props: Option<Arc<serde_json::Value>>,
}

impl<A: Agent> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("connections", &self.conns.len())
            .field("tasks", &self.tasks.len())
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

    /// Runs `fut` as a task of this instance, concurrently with its hooks: the way to await
    /// something slow (an upstream API, an LLM stream, another agent) without holding the
    /// instance. Typically it completes a [`Deferred`] call and changes state through an
    /// [`AgentHandle`](crate::AgentHandle) (`cx.handle()`), whose operations are queued with
    /// the instance's other events.
    ///
    /// The task belongs to the instance: the instance does not hibernate while it runs, and
    /// it is aborted when the instance is deleted or ends (server shutdown). A panic in it is
    /// logged. It runs on the agents' runtime ([`ServerBuilder::agent_runtime`](crate::ServerBuilder::agent_runtime)).
    ///
    /// Fails with [`TooManyTasks`] when [`Limits::max_instance_tasks`](crate::Limits::max_instance_tasks)
    /// are running (the future is dropped; a [`Deferred`] it held answers its call with an
    /// error).
    pub fn spawn<F>(&mut self, fut: F) -> Result<(), TooManyTasks>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument;
        if self.tasks.len() >= self.env.limits.max_instance_tasks {
            tracing::warn!(tasks = self.tasks.len(), "too many tasks on the instance");
            return Err(TooManyTasks);
        }
        self.tasks.spawn(fut.instrument(tracing::Span::current()));
        Ok(())
    }

    /// A handle on this instance, for tasks of [`spawn`](Self::spawn) (not to be awaited
    /// from this instance's own hooks: see [`AgentHandle`](crate::AgentHandle)).
    pub fn handle(&self) -> crate::AgentHandle<A> {
        crate::AgentHandle::lookup(&self.env, Some(&self.namespace), &self.name)
            .expect("an instance's own class is registered")
    }

    /// A handle on the instance `name` of the agent class of type `B` (the reference's
    /// `getAgentByName`); fails when no class, or several, of that type are registered.
    pub fn agent<B: Agent>(&self, name: &str) -> Result<crate::AgentHandle<B>, crate::HandleError> {
        crate::AgentHandle::lookup(&self.env, None, name)
    }

    /// The instance's props: those of [`AgentHandle::start`](crate::AgentHandle::start), or
    /// the class's ([`ServerBuilder::agent_with_props`](crate::ServerBuilder::agent_with_props)).
    /// [`Agent::on_start`] reads them; they stay for later wakes from hibernation.
    pub fn props(&self) -> Option<&serde_json::Value> {
        self.props.as_deref()
    }

    /// How many tasks of [`spawn`](Self::spawn) are running.
    pub fn running_tasks(&self) -> usize {
        self.tasks.len()
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
            send_sse(self.gate.as_ref(), subs, bytes);
        }
        Ok(id)
    }

    /// Sends an event without an id and without logging it (e.g. a final `done` event).
    pub fn sse_send_unlogged(&mut self, stream: &str, event: Option<&str>, data: &str) {
        if let Some(subs) = self.sse.get_mut(stream) {
            let bytes = sse::encode(None, event, data);
            send_sse(self.gate.as_ref(), subs, bytes);
        }
    }

    /// A `text/event-stream` response subscribed to `stream`: first the logged events after
    /// the request's `Last-Event-ID` (when it has one), then live events.
    pub fn sse_subscribe(
        &mut self,
        stream: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, StoreError> {
        match sse::last_event_id(headers) {
            Some(after) => self.sse_subscribe_after(stream, after),
            None => {
                let (resp, tx) = sse::response();
                self.sse.entry(stream.to_owned()).or_default().push(tx);
                Ok(resp)
            }
        }
    }

    /// A `text/event-stream` response subscribed to `stream`: the logged events with an id
    /// above `after` (`0`: all that are kept), then live events.
    pub fn sse_subscribe_after(
        &mut self,
        stream: &str,
        after: u64,
    ) -> Result<Response<Body>, StoreError> {
        let (resp, tx) = sse::response();
        if let Some(store) = &self.store {
            for ev in store.sse_since(stream, after)? {
                if tx.send_stored(&ev).is_err() {
                    break;
                }
            }
        }
        self.sse.entry(stream.to_owned()).or_default().push(tx);
        Ok(resp)
    }

    /// The id of the last event logged on `stream` (`0`: none).
    pub fn sse_last_id(&self, stream: &str) -> Result<u64, StoreError> {
        match &self.store {
            Some(s) => s.sse_last_id(stream),
            None => Ok(0),
        }
    }

    /// Schedules a call of [`Agent::on_schedule`] with `method` and `payload` (see
    /// [`crate::schedule`] for the guarantees): after a delay, at a date, on a cron expression
    /// ([`When::Cron`](crate::When::Cron)) or every interval. Committed before it returns;
    /// survives hibernation and restarts. Returns the schedule (its `id` is stable).
    pub fn schedule<T: Serialize + ?Sized>(
        &mut self,
        when: crate::When,
        method: &str,
        payload: &T,
    ) -> Result<crate::Schedule, crate::ScheduleError> {
        let payload = RawJson::from_serialize(payload)?;
        let s = crate::schedule::new_schedule(when, method, payload, crate::schedule::now_ms())?;
        let store = self.store.as_ref().ok_or(StoreError::Closed)?;
        // the index first: a crash before the row is committed wakes the instance once for
        // nothing, never misses the schedule
        self.scheduler.lower(&self.namespace, &self.name, s.time)?;
        crate::schedule::insert(&store.db, &s)?;
        Ok(s)
    }

    /// [`schedule`](Self::schedule) every `interval`, the first time one interval from now.
    pub fn schedule_every<T: Serialize + ?Sized>(
        &mut self,
        interval: std::time::Duration,
        method: &str,
        payload: &T,
    ) -> Result<crate::Schedule, crate::ScheduleError> {
        self.schedule(crate::When::Every(interval), method, payload)
    }

    /// Cancels a schedule; `false` if there was none with this id.
    pub fn cancel_schedule(&mut self, id: &str) -> Result<bool, crate::ScheduleError> {
        let store = self.store.as_ref().ok_or(StoreError::Closed)?;
        let gone = crate::schedule::delete(&store.db, id)?;
        self.sync_schedule_index();
        Ok(gone)
    }

    /// The pending schedules, next first.
    pub fn schedules(&self) -> Result<Vec<crate::Schedule>, crate::ScheduleError> {
        let store = self.store.as_ref().ok_or(StoreError::Closed)?;
        Ok(crate::schedule::list(&store.db)?)
    }

    /// Writes the instance's next due time to the server's index.
    pub(crate) fn sync_schedule_index(&self) {
        let Some(store) = &self.store else { return };
        let next = match crate::schedule::earliest(&store.db) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the schedules");
                return;
            }
        };
        if let Err(e) = self.scheduler.set(&self.namespace, &self.name, next) {
            tracing::error!(error = %e, "cannot update the schedule index");
        }
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

    /// Runs `f` once what the current event wrote is durable (at once without cluster
    /// storage; dropped if the writes are refused).
    pub(crate) fn after_commit(&self, f: impl FnOnce() + Send + 'static) {
        match &self.gate {
            Some(g) => g.run(Box::new(f)),
            None => f(),
        }
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

/// Sends an SSE chunk to a stream's subscribers, dropping those gone or too far behind; behind
/// a closed gate, sends when it opens.
fn send_sse(
    gate: Option<&Arc<crate::connection::Gate>>,
    subs: &mut Vec<SseSender>,
    bytes: bytes::Bytes,
) {
    match gate {
        Some(g) if g.is_closed() => {
            subs.retain(|s| !s.is_closed());
            let subs = subs.clone();
            g.run(Box::new(move || {
                for s in subs {
                    let _ = s.send_raw(bytes.clone());
                }
            }));
        }
        _ => subs.retain(|s| s.send_raw(bytes.clone()).is_ok()),
    }
}

pub(crate) fn encode_reply(id: RpcId, method: &str, res: Result<Reply, RpcError>) -> Utf8Bytes {
    use agentwire_protocol::CallOutcome;
    let outcome = match res {
        Ok(Reply(ReplyKind::Value(result))) => CallOutcome::Done(result),
        Ok(Reply(ReplyKind::Deferred)) => {
            CallOutcome::Failed("The call was deferred without Call::defer".into())
        }
        Err(RpcError::NoSuchMethod) => CallOutcome::NoSuchMethod,
        Err(RpcError::NotCallable) => CallOutcome::NotCallable,
        Err(RpcError::Failed(msg)) => CallOutcome::Failed(msg),
    };
    agentwire_protocol::encode_reply(id, method, outcome)
}
