//! [`Connection`]: one client WebSocket as the agent sees it.

use agentwire_protocol::Utf8Bytes;
use bytes::Bytes;
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// A message of the application (not a protocol frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Message {
    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(Utf8Bytes::from(s))
    }
}

impl From<&'static str> for Message {
    fn from(s: &'static str) -> Self {
        Message::Text(Utf8Bytes::from(s))
    }
}

impl From<Utf8Bytes> for Message {
    fn from(s: Utf8Bytes) -> Self {
        Message::Text(s)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(Bytes::from(b))
    }
}

/// What the socket task is asked to do.
#[derive(Debug)]
pub(crate) enum Out {
    Msg(Message),
    /// One message sent to many connections: payload and compressed form shared.
    Shared(agentwire_ws::PreparedMessage),
    Close(agentwire_ws::CloseCode, String),
}

/// One client WebSocket of an agent instance. Cheap to clone (a shared handle); it can be kept
/// and used from other tasks (e.g. to close a socket a little later).
///
/// Sending never waits: messages go to the socket's queue, bounded by
/// [`Limits::max_queued_bytes`](crate::Limits::max_queued_bytes); a connection whose queue
/// overflows (a client that stops reading) is closed with `1008`.
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) key: u64,
    pub(crate) id: String,
    pub(crate) server: Arc<str>,
    pub(crate) uri: http::Uri,
    pub(crate) tx: mpsc::UnboundedSender<Out>,
    pub(crate) queued: AtomicUsize,
    pub(crate) max_queued: usize,
    pub(crate) overflowed: AtomicBool,
    /// Woken when the queue overflowed: the socket task stops writing and drops the socket.
    pub(crate) abort: tokio::sync::Notify,
    pub(crate) closed: AtomicBool,
    pub(crate) readonly: AtomicBool,
    pub(crate) protocol: AtomicBool,
    pub(crate) tags: Mutex<Arc<[String]>>,
    pub(crate) state: Mutex<Value>,
    /// The instance's output gate (cluster storage), set when the instance takes the socket.
    pub(crate) gate: std::sync::OnceLock<Arc<Gate>>,
}

/// An instance's output gate (cluster storage): while an event is handled, what it sends —
/// socket messages and closes, SSE events, HTTP responses, handle results — is held, and
/// released in order once the event's writes are durable, or dropped if they were refused.
#[derive(Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    held: Mutex<Vec<Held>>,
}

enum Held {
    Out(Arc<Inner>, Out),
    Run(Box<dyn FnOnce() + Send>),
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("held", &lock(&self.held).len())
            .finish()
    }
}

impl Gate {
    /// Holds output from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether output is held now.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn hold(&self, h: Held) -> Result<(), Held> {
        if !self.closed.load(Ordering::SeqCst) {
            return Err(h);
        }
        let mut held = lock(&self.held);
        // re-checked under the lock: `open` drains and opens under it, so nothing sent
        // after it can overtake what it releases
        if !self.closed.load(Ordering::SeqCst) {
            return Err(h);
        }
        held.push(h);
        Ok(())
    }

    /// Runs `f` now, or when the gate opens (dropped if the held output is discarded).
    pub(crate) fn run(&self, f: Box<dyn FnOnce() + Send>) {
        if let Err(Held::Run(f)) = self.hold(Held::Run(f)) {
            f();
        }
    }

    /// Releases what was held, in order, and stops holding.
    pub(crate) fn open(&self) {
        let mut held = lock(&self.held);
        for h in held.drain(..) {
            match h {
                Held::Out(inner, out) => {
                    let _ = inner.tx.send(out);
                }
                Held::Run(f) => f(),
            }
        }
        self.closed.store(false, Ordering::SeqCst);
    }

    /// Drops what was held (the writes it depended on were refused) and stops holding.
    #[cfg(feature = "postgres")]
    pub(crate) fn discard(&self) {
        let dropped: Vec<Held> = {
            let mut held = lock(&self.held);
            self.closed.store(false, Ordering::SeqCst);
            held.drain(..).collect()
        };
        drop(dropped);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("uri", &self.inner.uri)
            .field("readonly", &self.readonly())
            .field("protocol", &self.protocol_messages())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection is closed; the message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection closed")]
pub struct Closed;

impl Connection {
    pub(crate) fn new(
        key: u64,
        id: String,
        uri: http::Uri,
        max_queued: usize,
        server: Arc<str>,
    ) -> (Self, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            key,
            id,
            server,
            uri,
            tx,
            queued: AtomicUsize::new(0),
            max_queued,
            overflowed: AtomicBool::new(false),
            abort: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            readonly: AtomicBool::new(false),
            protocol: AtomicBool::new(true),
            tags: Mutex::new(Arc::from(Vec::new())),
            state: Mutex::new(Value::Null),
            gate: std::sync::OnceLock::new(),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// The connection id: the client's `_pk`, or a generated id when it sent none. Ids are
    /// chosen by clients and not guaranteed unique.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The name of the agent instance this connection belongs to (the reference's
    /// `connection.server`).
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The upgrade request's URI (path and query).
    pub fn uri(&self) -> &http::Uri {
        &self.inner.uri
    }

    /// The tags: the id first, then those of [`Agent::connection_tags`](crate::Agent::connection_tags).
    pub fn tags(&self) -> Arc<[String]> {
        lock(&self.inner.tags).clone()
    }

    /// Whether the connection has the tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        lock(&self.inner.tags).iter().any(|t| t == tag)
    }

    /// Whether the connection is readonly (its state updates and `set_state` calls made while
    /// handling its RPCs are refused).
    pub fn readonly(&self) -> bool {
        self.inner.readonly.load(Ordering::Relaxed)
    }

    /// Makes the connection readonly or not.
    pub fn set_readonly(&self, readonly: bool) {
        self.inner.readonly.store(readonly, Ordering::Relaxed);
    }

    /// Whether the connection receives protocol frames (identity, state, MCP servers).
    pub fn protocol_messages(&self) -> bool {
        self.inner.protocol.load(Ordering::Relaxed)
    }

    /// Turns protocol frames on or off for this connection.
    pub fn set_protocol_messages(&self, on: bool) {
        self.inner.protocol.store(on, Ordering::Relaxed);
    }

    /// The per-connection state (`null` initially).
    pub fn state(&self) -> Value {
        lock(&self.inner.state).clone()
    }

    /// Replaces the per-connection state.
    pub fn set_state(&self, state: impl Into<Value>) {
        *lock(&self.inner.state) = state.into();
    }

    /// Replaces the per-connection state with a function of the previous one; returns the new
    /// state.
    pub fn update_state(&self, f: impl FnOnce(&Value) -> Value) -> Value {
        let mut s = lock(&self.inner.state);
        *s = f(&s);
        s.clone()
    }

    /// Whether the socket is closed (or closing).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Sends a text or binary message.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), Closed> {
        let msg = msg.into();
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        };
        self.enqueue(len, Out::Msg(msg))
    }

    /// Sends a message prepared for many connections (broadcasts): with permessage-deflate
    /// and no server context takeover it is compressed once for all of them.
    pub(crate) fn send_shared(&self, msg: &agentwire_ws::PreparedMessage) -> Result<(), Closed> {
        self.enqueue(msg.payload().len(), Out::Shared(msg.clone()))
    }

    fn enqueue(&self, len: usize, out: Out) -> Result<(), Closed> {
        if self.is_closed() {
            return Err(Closed);
        }
        let queued = self.inner.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.inner.max_queued {
            self.inner.queued.fetch_sub(len, Ordering::Relaxed);
            if !self.inner.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!(id = %self.inner.id, queued, "send queue full; closing the connection");
                crate::metrics::connection_overflow();
                let _ = self.inner.tx.send(Out::Close(
                    agentwire_ws::CloseCode::POLICY,
                    "send queue full".into(),
                ));
                self.inner.closed.store(true, Ordering::Relaxed);
                // The Close would wait behind the queued messages and a client that does not
                // read never takes them: the socket task gives up on it at once.
                self.inner.abort.notify_one();
            }
            return Err(Closed);
        }
        self.push(out)
    }

    /// Queues `out` for the socket, through the instance's gate when it has one.
    fn push(&self, out: Out) -> Result<(), Closed> {
        let out = match self.inner.gate.get() {
            Some(gate) => match gate.hold(Held::Out(self.inner.clone(), out)) {
                Ok(()) => return Ok(()),
                Err(Held::Out(_, out)) => out,
                Err(Held::Run(_)) => return Ok(()),
            },
            None => out,
        };
        self.inner.tx.send(out).map_err(|_| Closed)
    }

    /// Puts the socket's output behind the instance's gate (cluster storage).
    pub(crate) fn set_gate(&self, gate: &Arc<Gate>) {
        let _ = self.inner.gate.set(gate.clone());
    }

    /// Sends a text message.
    pub fn send_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), Closed> {
        self.send(Message::Text(text.into()))
    }

    /// Sends a binary message.
    pub fn send_binary(&self, data: impl Into<Bytes>) -> Result<(), Closed> {
        self.send(Message::Binary(data.into()))
    }

    /// Closes at once, past the gate and even if a close is already queued or held (the
    /// instance lost its lease: what it held is dropped).
    #[cfg(feature = "postgres")]
    pub(crate) fn close_now(&self, code: impl Into<agentwire_ws::CloseCode>, reason: &str) {
        self.inner.closed.store(true, Ordering::Relaxed);
        let _ = self
            .inner
            .tx
            .send(Out::Close(code.into(), reason.to_owned()));
    }

    /// Closes the socket with `code` and `reason` (after the messages already queued). Codes
    /// `1008` and `4000`–`4999` make the reference client stop reconnecting.
    pub fn close(&self, code: impl Into<agentwire_ws::CloseCode>, reason: &str) {
        if !self.inner.closed.swap(true, Ordering::Relaxed) {
            let _ = self.push(Out::Close(code.into(), reason.to_owned()));
        }
    }

    pub(crate) fn set_tags(&self, tags: Vec<String>) {
        *lock(&self.inner.tags) = Arc::from(tags);
    }

    pub(crate) fn key(&self) -> u64 {
        self.inner.key
    }

    pub(crate) fn dequeued(&self, len: usize) {
        self.inner.queued.fetch_sub(len, Ordering::Relaxed);
    }

    pub(crate) fn mark_closed(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
    }
}
