//! The client side: WHATWG `EventSource` connection policy, Sans-IO.
//!
//! [`EventSource`] does no IO and reads no clock. The caller performs the requests it asks
//! for, reports what happened, and passes `now` in; in return it gets the events to dispatch
//! and the instant to reconnect at. The shape follows the browser API (and the Workers
//! `EventSource`): a URL, a [`ReadyState`], `open` / `message` / `error` events,
//! [`close`](EventSource::close), and [`from_stream`](EventSource::from_stream) for a body that
//! is already open.
//!
//! ```
//! use agentwire_sse::{EventSource, ReadyState, SourceEvent};
//! use std::time::{Duration, Instant};
//!
//! let t0 = Instant::now();
//! let mut es = EventSource::new("http://example.test/events");
//! let req = es.poll_connect().expect("connect now");
//! assert_eq!(req.last_event_id(), None);
//! es.handle_response(200, Some("text/event-stream; charset=utf-8"));
//! assert!(matches!(es.poll_event(), Some(SourceEvent::Open)));
//! es.handle_input_slice(b"retry: 1000\nid: 7\ndata: hi\n\n");
//! assert!(matches!(es.poll_event(), Some(SourceEvent::Message(m)) if m.data() == "hi"));
//! es.handle_eof(t0); // the body ended
//! assert_eq!(es.ready_state(), ReadyState::Connecting);
//! assert_eq!(es.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
//! es.handle_timeout(t0 + Duration::from_millis(1000));
//! let req = es.poll_connect().expect("reconnect");
//! assert_eq!(req.last_event_id(), Some("7"));
//! ```

use crate::decode::{DecodeError, Decoder, Event, Limits};
use agentwire_utf8::Utf8Bytes;
use bytes::Bytes;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// `EventSource.readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReadyState {
    /// `CONNECTING` (0): a connection is being made or will be made.
    Connecting = 0,
    /// `OPEN` (1): events are being received.
    Open = 1,
    /// `CLOSED` (2): closed for good.
    Closed = 2,
}

/// How and when to reconnect.
///
/// | setting | default | why |
/// |---|---|---|
/// | [`default_retry`](Self::default_retry) | 3 s | what browsers use until the server sends `retry:` |
/// | [`max_backoff`](Self::max_backoff) | 30 s | after repeated failures the delay doubles up to this; a server's own larger `retry:` still wins |
/// | [`jitter_seed`](Self::jitter_seed) | random per process | spreads clients reconnecting to a failed server; set it for reproducible tests |
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// The reconnection time before the server sends `retry:`.
    pub default_retry: Duration,
    /// Ceiling of the exponential backoff after consecutive failures.
    pub max_backoff: Duration,
    /// Seed of the jitter generator.
    pub jitter_seed: u64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            default_retry: Duration::from_secs(3),
            max_backoff: Duration::from_secs(30),
            jitter_seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        }
    }
}

impl ReconnectPolicy {
    /// Sets [`default_retry`](Self::default_retry).
    pub fn default_retry(mut self, d: Duration) -> Self {
        self.default_retry = d;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Sets [`jitter_seed`](Self::jitter_seed).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = seed;
        self
    }
}

/// Why an `error` event fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorReason {
    /// The connection could not be made or was lost (including the end of the body).
    Disconnected,
    /// The server answered 204 No Content: the standard way to tell a client to stop.
    NoContent,
    /// The server answered with a status other than 200.
    Status(u16),
    /// The response's content type was not `text/event-stream`.
    ContentType,
}

/// What the caller should dispatch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceEvent {
    /// The `open` event: a 200 `text/event-stream` response arrived.
    Open,
    /// A `message` (or named) event.
    Message(Event),
    /// The `error` event. With `reconnect_at` set the state is `Connecting` and a new request
    /// is due then; without it the state is `Closed` for good.
    Error {
        /// What went wrong.
        reason: ErrorReason,
        /// When the next connection attempt is due, if there is one.
        reconnect_at: Option<Instant>,
    },
    /// The stream broke a decoder limit; the event was dropped and the stream goes on.
    Malformed(DecodeError),
}

/// A request the caller must make: `GET url` with [`headers`](Self::headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    url: String,
    last_event_id: Utf8Bytes,
}

impl ConnectRequest {
    /// The URL to request.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `Last-Event-ID` to send, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        (!self.last_event_id.is_empty()).then(|| self.last_event_id.as_str())
    }

    /// The request headers: `Accept: text/event-stream`, `Cache-Control: no-cache` and, when
    /// an event ID has been seen, `Last-Event-ID`.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("accept", "text/event-stream"),
            ("cache-control", "no-cache"),
        ]
        .into_iter()
        .chain(self.last_event_id().map(|id| ("last-event-id", id)))
    }
}

/// `true` if a `Content-Type` value's essence is `text/event-stream` (parameters allowed).
pub fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/event-stream")
}

/// The WHATWG `EventSource` processing model as a Sans-IO state machine.
///
/// Methods by kind:
/// - getters: [`url`](Self::url), [`ready_state`](Self::ready_state),
///   [`last_event_id`](Self::last_event_id), [`reconnection_time`](Self::reconnection_time);
/// - inputs: [`handle_response`](Self::handle_response), [`handle_input`](Self::handle_input) /
///   [`handle_input_slice`](Self::handle_input_slice), [`handle_eof`](Self::handle_eof),
///   [`handle_timeout`](Self::handle_timeout), [`close`](Self::close);
/// - outputs: [`poll_connect`](Self::poll_connect) (a request to make now),
///   [`poll_event`](Self::poll_event) (events to dispatch), [`poll_timeout`](Self::poll_timeout)
///   (when to call `handle_timeout`).
///
/// Reconnection: after a lost connection the next attempt waits the reconnection time (the
/// server's last `retry:`, else [`ReconnectPolicy::default_retry`]) exactly, as browsers do.
/// When attempts keep failing without a single event in between, the delay doubles per
/// failure up to [`ReconnectPolicy::max_backoff`], with jitter between half and all of it. A
/// 204, any other non-200 status, a wrong content type or [`close`](Self::close) stop for good.
#[derive(Debug)]
pub struct EventSource {
    url: Option<String>,
    state: ReadyState,
    decoder: Decoder,
    policy: ReconnectPolicy,
    events: VecDeque<SourceEvent>,
    connect_due: bool,
    reconnect_at: Option<Instant>,
    /// Connections in a row that ended without delivering an event.
    failures: u32,
    rng: u64,
}

impl EventSource {
    /// An `EventSource` for `url`, in state `Connecting` with a request due at once.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_policy(url, ReconnectPolicy::default(), Limits::default())
    }

    /// Like [`new`](Self::new), with a reconnect policy and decoder limits.
    pub fn with_policy(url: impl Into<String>, policy: ReconnectPolicy, limits: Limits) -> Self {
        Self {
            url: Some(url.into()),
            state: ReadyState::Connecting,
            decoder: Decoder::with_limits(limits),
            policy,
            events: VecDeque::new(),
            connect_due: true,
            reconnect_at: None,
            failures: 0,
            rng: policy.jitter_seed | 1,
        }
    }

    /// An `EventSource` over a body that is already open (the Workers `EventSource.from`):
    /// state `Open`, no URL, never reconnects.
    pub fn from_stream() -> Self {
        let mut es =
            Self::with_policy(String::new(), ReconnectPolicy::default(), Limits::default());
        es.url = None;
        es.state = ReadyState::Open;
        es.connect_due = false;
        es
    }

    /// The URL, or `None` for [`from_stream`](Self::from_stream).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The current ready state.
    pub fn ready_state(&self) -> ReadyState {
        self.state
    }

    /// The last event ID string (sent as `Last-Event-ID` on reconnection).
    pub fn last_event_id(&self) -> &str {
        self.decoder.last_event_id()
    }

    /// The reconnection time: the server's last `retry:`, else the policy default.
    pub fn reconnection_time(&self) -> Duration {
        self.decoder.retry().unwrap_or(self.policy.default_retry)
    }

    /// The request to make now, if one is due.
    pub fn poll_connect(&mut self) -> Option<ConnectRequest> {
        if !std::mem::take(&mut self.connect_due) {
            return None;
        }
        Some(ConnectRequest {
            url: self.url.clone()?,
            last_event_id: self.decoder.last_event_id().clone(),
        })
    }

    /// The response to the last request arrived with this status and `Content-Type`.
    /// Returns `true` if the body should be read and fed in; otherwise the source is closed
    /// (an `error` event is queued).
    pub fn handle_response(&mut self, status: u16, content_type: Option<&str>) -> bool {
        if self.state == ReadyState::Closed {
            return false;
        }
        let reason = match status {
            200 if content_type.is_some_and(is_event_stream) => {
                self.decoder.handle_eof();
                self.state = ReadyState::Open;
                self.events.push_back(SourceEvent::Open);
                return true;
            }
            200 => ErrorReason::ContentType,
            204 => ErrorReason::NoContent,
            s => ErrorReason::Status(s),
        };
        self.fail(reason);
        false
    }

    /// Input: a chunk of the response body, without copying.
    pub fn handle_input(&mut self, chunk: Bytes) {
        if self.state == ReadyState::Open {
            self.decoder.handle_input(chunk);
        }
    }

    /// Input: a chunk of the response body, copied once.
    pub fn handle_input_slice(&mut self, chunk: &[u8]) {
        if self.state == ReadyState::Open {
            self.decoder.handle_input_slice(chunk);
        }
    }

    /// The connection failed or the body ended: schedules a reconnection (or closes, for
    /// [`from_stream`](Self::from_stream)). Events still buffered are dispatched first.
    pub fn handle_eof(&mut self, now: Instant) {
        if self.state == ReadyState::Closed {
            return;
        }
        self.drain_decoder();
        self.decoder.handle_eof();
        if self.url.is_none() {
            self.fail(ErrorReason::Disconnected);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let at = now + self.next_delay();
        self.state = ReadyState::Connecting;
        self.reconnect_at = Some(at);
        self.events.push_back(SourceEvent::Error {
            reason: ErrorReason::Disconnected,
            reconnect_at: Some(at),
        });
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.reconnect_at
    }

    /// Time passed: when the reconnection time is up, a new request becomes due
    /// ([`poll_connect`](Self::poll_connect)). Extra calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            self.connect_due = true;
        }
    }

    /// `close()`: closed for good, no more events, no reconnection.
    pub fn close(&mut self) {
        self.state = ReadyState::Closed;
        self.connect_due = false;
        self.reconnect_at = None;
        self.decoder.handle_eof();
    }

    /// The next event to dispatch.
    pub fn poll_event(&mut self) -> Option<SourceEvent> {
        if let Some(ev) = self.events.pop_front() {
            return Some(ev);
        }
        if self.state != ReadyState::Open {
            return None;
        }
        self.decode_one()
    }

    fn decode_one(&mut self) -> Option<SourceEvent> {
        match self.decoder.poll_event()? {
            Ok(event) => {
                self.failures = 0;
                Some(SourceEvent::Message(event))
            }
            Err(e) => Some(SourceEvent::Malformed(e)),
        }
    }

    fn drain_decoder(&mut self) {
        if self.state == ReadyState::Open {
            while let Some(ev) = self.decode_one() {
                self.events.push_back(ev);
            }
        }
    }

    fn fail(&mut self, reason: ErrorReason) {
        self.close();
        self.events.push_back(SourceEvent::Error {
            reason,
            reconnect_at: None,
        });
    }

    /// The reconnection time after one failure; capped exponential backoff with jitter after
    /// more.
    fn next_delay(&mut self) -> Duration {
        let base = self.reconnection_time();
        if self.failures <= 1 {
            return base;
        }
        let cap = self.policy.max_backoff.max(base);
        let factor = 1u32 << (self.failures - 1).min(16);
        let backoff = base.saturating_mul(factor).min(cap);
        // xorshift64*: a jitter source that needs no IO.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let half = backoff / 2;
        let jitter = half.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64);
        (half + jitter).max(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> EventSource {
        EventSource::with_policy(
            "http://x/e",
            ReconnectPolicy::default().jitter_seed(7),
            Limits::default(),
        )
    }

    #[test]
    fn stops_for_good_on_204_status_and_type() {
        for (status, ct, reason) in [
            (204, Some("text/event-stream"), ErrorReason::NoContent),
            (500, Some("text/event-stream"), ErrorReason::Status(500)),
            (200, Some("text/plain"), ErrorReason::ContentType),
            (200, None, ErrorReason::ContentType),
        ] {
            let mut es = source();
            es.poll_connect().unwrap();
            assert!(!es.handle_response(status, ct));
            assert_eq!(es.ready_state(), ReadyState::Closed);
            assert_eq!(
                es.poll_event(),
                Some(SourceEvent::Error {
                    reason,
                    reconnect_at: None
                })
            );
            es.handle_eof(Instant::now());
            assert_eq!(es.poll_timeout(), None);
            assert!(es.poll_connect().is_none());
        }
    }

    #[test]
    fn backoff_grows_with_failures_and_resets_after_an_event() {
        let t = Instant::now();
        let mut es = source();
        es.poll_connect().unwrap();
        let mut delays = Vec::new();
        for _ in 0..8 {
            es.handle_eof(t);
            delays.push(es.poll_timeout().unwrap() - t);
            es.handle_timeout(t + Duration::from_secs(3600));
            es.poll_connect().unwrap();
        }
        assert_eq!(delays[0], Duration::from_secs(3));
        for (i, d) in delays.iter().enumerate().skip(1) {
            let full = Duration::from_secs(3 * (1 << i)).min(Duration::from_secs(30));
            assert!(*d >= full / 2 && *d <= full, "{i}: {d:?}");
            assert!(*d >= Duration::from_secs(3));
        }
        assert!(delays[7] <= Duration::from_secs(30));
        es.handle_response(200, Some("text/event-stream"));
        es.handle_input_slice(b"data: x\n\n");
        while es.poll_event().is_some() {}
        es.handle_eof(t);
        assert_eq!(es.poll_timeout(), Some(t + Duration::from_secs(3)));
    }

    #[test]
    fn close_stops_everything() {
        let mut es = source();
        es.poll_connect().unwrap();
        es.handle_response(200, Some("text/event-stream"));
        es.close();
        es.handle_input_slice(b"data: x\n\n");
        assert_eq!(es.poll_event(), Some(SourceEvent::Open));
        assert_eq!(es.poll_event(), None);
        assert_eq!(es.ready_state(), ReadyState::Closed);
    }

    #[test]
    fn from_stream_never_reconnects() {
        let mut es = EventSource::from_stream();
        assert_eq!(es.ready_state(), ReadyState::Open);
        assert!(es.poll_connect().is_none());
        es.handle_input_slice(b"data: a\n\ndata: cut");
        es.handle_eof(Instant::now());
        assert!(matches!(es.poll_event(), Some(SourceEvent::Message(m)) if m.data() == "a"));
        assert!(matches!(
            es.poll_event(),
            Some(SourceEvent::Error {
                reconnect_at: None,
                ..
            })
        ));
        assert_eq!(es.ready_state(), ReadyState::Closed);
    }
}
