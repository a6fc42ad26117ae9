//! A Sans-IO table of a client's in-flight RPC calls.

use crate::error::ProtocolError;
use crate::message::{RpcId, RpcRequest, RpcResponse};
use crate::raw::RawJson;
use crate::texts;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Default timeout of a non-streaming call in the reference client (30 s).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// The method streams (`done:false` chunks before the end). Only informational for the
    /// table: chunks are accepted for any call, as the reference client does.
    pub streaming: bool,
    /// Fail the call with `RPC call to {method} timed out after {ms}ms` after this long.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// A regular call with the reference client's default 30 s timeout.
    pub const fn regular() -> Self {
        Self {
            streaming: false,
            timeout: Some(DEFAULT_CALL_TIMEOUT),
        }
    }

    /// A streaming call, without a timeout (the reference client's default).
    pub const fn streaming() -> Self {
        Self {
            streaming: true,
            timeout: None,
        }
    }

    /// Replaces the timeout.
    pub const fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Default for CallOptions {
    fn default() -> Self {
        Self::regular()
    }
}

/// What happened to a call, from [`CallTable::poll_event`] after
/// [`CallTable::handle_input`], [`CallTable::handle_timeout`] or [`CallTable::handle_eof`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallEvent {
    /// A streaming chunk; the call stays pending.
    Chunk {
        /// Call id.
        id: RpcId,
        /// The chunk value (`None`: the frame had no `result` key).
        result: Option<RawJson>,
    },
    /// The call resolved; it is removed from the table.
    Completed {
        /// Call id.
        id: RpcId,
        /// The method that was called.
        method: String,
        /// The result (`None`: no `result` key, i.e. `undefined`).
        result: Option<RawJson>,
    },
    /// The call was rejected (server error, timeout, lost connection); it is removed.
    Failed {
        /// Call id.
        id: RpcId,
        /// The method that was called.
        method: String,
        /// The rejection message.
        error: String,
    },
    /// A response for an id that is not pending; the reference client discards it.
    UnknownId {
        /// The id in the response.
        id: RpcId,
    },
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    method: String,
    streaming: bool,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
}

/// The client's in-flight calls: id allocation, chunk/completion/error correlation, timeouts,
/// and rejection of everything pending when the connection is lost.
///
/// Sans-IO, in the vocabulary of the other agentwire machines: it never reads a socket or a
/// clock. The caller sends the returned requests; hands RPC responses to
/// [`handle_input`](Self::handle_input), the time to [`handle_timeout`](Self::handle_timeout)
/// and a lost connection to [`handle_eof`](Self::handle_eof); then drains
/// [`poll_event`](Self::poll_event) and asks [`poll_timeout`](Self::poll_timeout) for the next
/// deadline. Failures (server errors, timeouts, a lost connection) come out of `poll_event`
/// as [`CallEvent::Failed`]. Each `handle_*` call queues at most one event per pending call
/// (one for a response), so draining `poll_event` after each call keeps the queue that small.
///
/// Put a call in the table when its request is handed to the socket: the reference client
/// rejects transmitted calls with `Connection closed` when the socket closes, while requests
/// still waiting in its send buffer stay pending and go out after reconnecting.
///
/// ```
/// use agentwire_protocol::{CallEvent, CallOptions, CallTable, RawJson, RpcResponse};
/// use std::time::Instant;
/// let mut calls = CallTable::new();
/// let req = calls
///     .start("add", RawJson::from_string("[2,3]".into()).unwrap(), CallOptions::regular(), Instant::now())
///     .unwrap();
/// assert_eq!(req.to_json(), r#"{"args":[2,3],"id":"1","method":"add","type":"rpc"}"#);
/// calls.handle_input(RpcResponse::done(req.id().clone(), &5).unwrap());
/// let ev = calls.poll_event().unwrap();
/// assert!(matches!(ev, CallEvent::Completed { ref result, .. } if result.as_ref().unwrap().get() == "5"));
/// assert!(calls.is_empty());
/// ```
#[derive(Debug, Default)]
pub struct CallTable {
    id_prefix: String,
    next: u64,
    seq: u64,
    pending: HashMap<RpcId, Pending>,
    events: VecDeque<CallEvent>,
}

impl CallTable {
    /// An empty table whose generated ids are `1`, `2`, …
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table whose generated ids are `{prefix}1`, `{prefix}2`, … (use a random prefix
    /// to make ids unique across reconnects and processes).
    pub fn with_id_prefix(prefix: impl Into<String>) -> Self {
        Self {
            id_prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Starts a call with a generated id; returns the request to send.
    /// Fails only if `args` is not a JSON array.
    pub fn start(
        &mut self,
        method: impl Into<String>,
        args: RawJson,
        options: CallOptions,
        now: Instant,
    ) -> Result<RpcRequest, ProtocolError> {
        loop {
            self.next = self.next.wrapping_add(1);
            let id = RpcId::new(format!("{}{}", self.id_prefix, self.next));
            if !self.pending.contains_key(&id) {
                return self.start_with_id(id, method, args, options, now);
            }
        }
    }

    /// Starts a call with a caller-chosen id (e.g. a UUID v4, as the reference client uses).
    /// Fails if the id is already pending or `args` is not a JSON array.
    pub fn start_with_id(
        &mut self,
        id: impl Into<RpcId>,
        method: impl Into<String>,
        args: RawJson,
        options: CallOptions,
        now: Instant,
    ) -> Result<RpcRequest, ProtocolError> {
        let id = id.into();
        if self.pending.contains_key(&id) {
            return Err(ProtocolError::DuplicateCallId(id.into_string()));
        }
        let method = method.into();
        let request = RpcRequest::new(id.clone(), method.clone(), args)?;
        let seq = self.next_seq();
        self.pending.insert(
            id,
            Pending {
                seq,
                method,
                streaming: options.streaming,
                deadline: options.timeout.and_then(|t| now.checked_add(t)),
                timeout: options.timeout,
            },
        );
        Ok(request)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Input: one RPC response. `Error` and `Done` end the call; `Chunk` keeps it pending.
    /// Queues exactly one event.
    pub fn handle_input(&mut self, response: RpcResponse) {
        let ev = self.response_event(response);
        self.events.push_back(ev);
    }

    /// Output: the next event, `None` when every event was taken.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    fn response_event(&mut self, response: RpcResponse) -> CallEvent {
        let id = response.id().clone();
        if !self.pending.contains_key(&id) {
            return CallEvent::UnknownId { id };
        }
        match response {
            RpcResponse::Chunk { id, result } => CallEvent::Chunk { id, result },
            RpcResponse::Done { id, result } => {
                let method = self.remove(&id);
                CallEvent::Completed { id, method, result }
            }
            RpcResponse::Error { id, error } => {
                let method = self.remove(&id);
                CallEvent::Failed { id, method, error }
            }
        }
    }

    fn remove(&mut self, id: &RpcId) -> String {
        self.pending
            .remove(id)
            .map(|p| p.method)
            .unwrap_or_default()
    }

    /// The earliest deadline of a pending call, if any call has a timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| p.deadline).min()
    }

    /// Input: time passed. Every call whose deadline is at or before `now` fails, oldest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<RpcId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        self.reject(expired, |p| {
            texts::rpc_timed_out(&p.method, p.timeout.unwrap_or_default().as_millis())
        })
    }

    /// Input: the connection was lost. Every pending call fails with `Connection closed`,
    /// oldest first, and the table is empty afterwards.
    pub fn handle_eof(&mut self) {
        let all: Vec<RpcId> = self.pending.keys().cloned().collect();
        self.reject(all, |_| texts::CONNECTION_CLOSED.to_owned())
    }

    fn reject(&mut self, ids: Vec<RpcId>, error: impl Fn(&Pending) -> String) {
        let mut removed: Vec<(RpcId, Pending)> = ids
            .into_iter()
            .filter_map(|id| self.pending.remove(&id).map(|p| (id, p)))
            .collect();
        removed.sort_by_key(|(_, p)| p.seq);
        self.events
            .extend(removed.into_iter().map(|(id, p)| CallEvent::Failed {
                error: error(&p),
                id,
                method: p.method,
            }));
    }

    /// Forgets a call without an event (e.g. the application gave up on it). Returns whether
    /// it was pending.
    pub fn cancel(&mut self, id: &str) -> bool {
        self.pending.remove(id).is_some()
    }

    /// Whether `id` is pending.
    pub fn contains(&self, id: &str) -> bool {
        self.pending.contains_key(id)
    }

    /// Whether the pending call `id` was started as streaming.
    pub fn is_streaming(&self, id: &str) -> Option<bool> {
        self.pending.get(id).map(|p| p.streaming)
    }

    /// Number of pending calls.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no call is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Whether a close code received from the server makes the reference client stop
/// reconnecting (and reject every pending call): `1008` and `4000..=4999`. Every other code —
/// including a server-sent `1000` — is followed by a reconnect.
pub fn is_terminal_close(code: u16) -> bool {
    code == 1008 || (4000..=4999).contains(&code)
}

/// The reference client's wait before reconnect attempt number `consecutive_failures`
/// (1-based): `3000 ms × 1.3^(n-1)`, capped at 10 s, rounded to milliseconds (3 s, 3.9 s,
/// 5.07 s, 6.591 s, 8.568 s, 10 s, …). `0` means the first attempt, which is immediate.
pub fn reconnect_delay(consecutive_failures: u32) -> Duration {
    if consecutive_failures == 0 {
        return Duration::ZERO;
    }
    let exp = i32::try_from(consecutive_failures - 1).unwrap_or(i32::MAX);
    let ms = (3000.0 * 1.3f64.powi(exp)).min(10_000.0);
    // `ms` is in 3000.0..=10000.0, so the cast is exact after rounding.
    Duration::from_millis(ms.round() as u64)
}
