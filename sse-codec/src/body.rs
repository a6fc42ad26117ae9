//! A `Stream` of events as an HTTP response body (feature `http-body`).
//!
//! [`SseBody`] turns any `futures_core::Stream` of [`SseEvent`]s into an `http_body::Body`:
//! each event is encoded with the validated encoder (so no event can break the framing),
//! events that are ready together go out in one chunk, and while the stream is idle a
//! keep-alive comment (`:\n`) is written every [`DEFAULT_KEEP_ALIVE`] (15 s) so that proxies
//! and load balancers keep the connection open. [`response`] adds the headers of an event
//! stream; [`last_event_id`] reads the header a reconnecting client sends. A stream that can
//! fail (a model call that errors) goes in with [`SseBody::try_new`]: the events before the
//! error are sent, then the response is aborted so that the client reconnects.
//!
//! It works with any server built on `http_body` — hyper, axum, tower stacks. In axum a
//! handler returns the response as it is:
//!
//! ```
//! use agentwire_sse::body::{self, SseEvent};
//! use agentwire_sse::EventId;
//!
//! async fn tokens(headers: http::HeaderMap) -> http::Response<body::SseBody> {
//!     // Resume after the last token the client has seen.
//!     let from = body::last_event_id(&headers).and_then(|id| id.parse().ok()).map_or(0, |n: usize| n + 1);
//!     let words = ["Hello", " from", " the", " model"];
//!     let events = words.into_iter().enumerate().skip(from).map(|(i, w)| {
//!         SseEvent::data(w).id(EventId::new(i.to_string()).unwrap())
//!     });
//!     body::response(futures_util::stream::iter(events))
//! }
//! ```
//!
//! The keep-alive timer is tokio's: build and poll the body inside a tokio runtime (with its
//! time driver enabled), as every hyper and axum server does.
//!
//! | setting | default | effect |
//! |---|---|---|
//! | [`SseBody::keep_alive`] | 15 s ([`DEFAULT_KEEP_ALIVE`]) | `:\n` after this long without an event; `None` turns it off |
//! | chunk coalescing | [`MAX_CHUNK`] (16 KiB) | events ready at once are written together up to this size |

use crate::encode::{encode_comment, encode_keep_alive, encode_retry, EventId, EventName};
use crate::OutEvent;
use crate::Utf8Bytes;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http_body::{Body, Frame, SizeHint};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Default interval of the keep-alive comment: 15 s, well under the 30–60 s idle timeouts
/// of common proxies and load balancers.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Events that are ready at the same time are written as one chunk of at most about this
/// many bytes (one event larger than this is one chunk of its own size).
pub const MAX_CHUNK: usize = 16 << 10;

/// The response headers of an event stream: `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache` (no cache may hold back or replay the stream) and
/// `X-Accel-Buffering: no` (nginx passes each chunk on at once instead of buffering).
pub fn headers() -> [(HeaderName, HeaderValue); 3] {
    [
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ]
}

/// A `200` response with the event-stream [`headers`] whose body is `events`, with the
/// default keep-alive.
pub fn response<S>(events: S) -> http::Response<SseBody>
where
    S: Stream<Item = SseEvent> + Send + 'static,
{
    SseBody::new(events).into_response()
}

/// The `Last-Event-ID` a reconnecting client sent, if any (a valid header value that is
/// UTF-8; an empty one counts as none).
pub fn last_event_id(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// One event (or comment) to send; owned, so that a stream can yield it.
///
/// ```
/// use agentwire_sse::body::SseEvent;
/// use agentwire_sse::{EventId, EventName};
/// use std::time::Duration;
///
/// let ev = SseEvent::data("a\nb")
///     .event(EventName::new("token")?)
///     .id(EventId::new("7")?)
///     .retry(Duration::from_secs(1));
/// let mut out = bytes::BytesMut::new();
/// ev.encode(&mut out);
/// assert_eq!(&out[..], b"id: 7\nevent: token\nretry: 1000\ndata: a\ndata: b\n\n");
/// # Ok::<(), agentwire_sse::InvalidField>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Event {
        data: Utf8Bytes,
        event: Option<EventName>,
        id: Option<EventId>,
        retry: Option<Duration>,
    },
    Comment(Utf8Bytes),
    Retry(Duration),
}

impl SseEvent {
    /// An event with this data (split on CR, LF and CRLF into `data:` lines).
    pub fn data(data: impl Into<Utf8Bytes>) -> Self {
        Self {
            kind: Kind::Event {
                data: data.into(),
                event: None,
                id: None,
                retry: None,
            },
        }
    }

    /// An event whose data is `value` as compact JSON on one line (feature `json`).
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        let text = serde_json::to_string(value)?;
        Ok(Self::data(text))
    }

    /// A comment (`: text`): dispatches nothing, shows up in logs and keeps proxies awake.
    pub fn comment(text: impl Into<Utf8Bytes>) -> Self {
        Self {
            kind: Kind::Comment(text.into()),
        }
    }

    /// A `retry:` line on its own: the client's reconnection time.
    pub fn retry_only(retry: Duration) -> Self {
        Self {
            kind: Kind::Retry(retry),
        }
    }

    /// Sets the event type (`event:`); no effect on a comment or a lone `retry:`.
    pub fn event(mut self, name: EventName) -> Self {
        if let Kind::Event { event, .. } = &mut self.kind {
            *event = Some(name);
        }
        self
    }

    /// Sets the event ID (`id:`), which the client sends back as `Last-Event-ID` when it
    /// reconnects; no effect on a comment or a lone `retry:`.
    pub fn id(mut self, value: EventId) -> Self {
        if let Kind::Event { id, .. } = &mut self.kind {
            *id = Some(value);
        }
        self
    }

    /// Sets the client's reconnection time (`retry:`) on the event.
    pub fn retry(mut self, value: Duration) -> Self {
        if let Kind::Event { retry, .. } = &mut self.kind {
            *retry = Some(value);
        }
        self
    }

    /// Appends the encoded event (or comment) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match &self.kind {
            Kind::Event {
                data,
                event,
                id,
                retry,
            } => {
                let mut out = OutEvent::new(data);
                if let Some(e) = event {
                    out = out.event(e);
                }
                if let Some(i) = id {
                    out = out.id(i);
                }
                if let Some(r) = retry {
                    out = out.retry(*r);
                }
                out.encode(dst);
            }
            Kind::Comment(text) => encode_comment(text, dst),
            Kind::Retry(r) => encode_retry(*r, dst),
        }
    }
}

/// The error type of [`SseBody`]: what a fallible stream ([`SseBody::try_new`]) failed with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxStream = Pin<Box<dyn Stream<Item = Result<SseEvent, BoxError>> + Send>>;

/// Adapts an infallible stream of events.
struct Infallibly<S>(Pin<Box<S>>);

impl<S: Stream<Item = SseEvent>> Stream for Infallibly<S> {
    type Item = Result<SseEvent, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx).map(|ev| ev.map(Ok))
    }
}

/// Adapts a fallible stream of events.
struct Fallibly<S>(Pin<Box<S>>);

impl<S, E> Stream for Fallibly<S>
where
    S: Stream<Item = Result<SseEvent, E>>,
    E: Into<BoxError>,
{
    type Item = Result<SseEvent, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .as_mut()
            .poll_next(cx)
            .map(|ev| ev.map(|r| r.map_err(Into::into)))
    }
}

/// A `Stream` of [`SseEvent`]s as an `http_body::Body` (see the [module docs](self)).
///
/// The body ends when the stream does. Dropping it (the client went away) drops the stream,
/// which is how a producer notices: a channel's sender sees its receiver closed.
pub struct SseBody {
    events: Option<BoxStream>,
    /// An error from a fallible stream, returned after the events before it are sent.
    error: Option<BoxError>,
    keep_alive: Option<Duration>,
    /// Armed on the first poll (so that a body can be built outside a runtime).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    buf: BytesMut,
}

impl fmt::Debug for SseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody")
            .field("ended", &self.events.is_none())
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl SseBody {
    /// A body streaming `events`, with a keep-alive comment every [`DEFAULT_KEEP_ALIVE`].
    pub fn new<S>(events: S) -> Self
    where
        S: Stream<Item = SseEvent> + Send + 'static,
    {
        Self::from_boxed(Box::pin(Infallibly(Box::pin(events))))
    }

    /// A body streaming fallible `events`: the events before an error are sent, then the body
    /// fails with it (the server aborts the response, so the client sees a broken stream and
    /// reconnects with its `Last-Event-ID`, as after any cut).
    pub fn try_new<S, E>(events: S) -> Self
    where
        S: Stream<Item = Result<SseEvent, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self::from_boxed(Box::pin(Fallibly(Box::pin(events))))
    }

    fn from_boxed(events: BoxStream) -> Self {
        Self {
            events: Some(events),
            error: None,
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            timer: None,
            buf: BytesMut::new(),
        }
    }

    /// Sets the keep-alive interval; `None` sends none.
    pub fn keep_alive(mut self, every: Option<Duration>) -> Self {
        self.keep_alive = every;
        self.timer = None;
        self
    }

    /// A `200` response with this body and the event-stream [`headers`].
    pub fn into_response(self) -> http::Response<Self> {
        let mut resp = http::Response::new(self);
        resp.headers_mut().extend(headers());
        resp
    }

    fn rearm(&mut self) {
        if let Some(d) = self.keep_alive {
            let at = tokio::time::Instant::now() + d;
            match &mut self.timer {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(events) = &mut this.events else {
            return Poll::Ready(this.error.take().map(Err));
        };
        let mut ended = false;
        while this.buf.len() < MAX_CHUNK {
            match events.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(ev))) => ev.encode(&mut this.buf),
                Poll::Ready(Some(Err(e))) => {
                    this.error = Some(e);
                    ended = true;
                    break;
                }
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if ended {
            this.events = None;
            this.timer = None;
        }
        if !this.buf.is_empty() {
            this.rearm();
            return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
        }
        if ended {
            return Poll::Ready(this.error.take().map(Err));
        }
        if this.timer.is_none() {
            this.rearm();
        }
        let Some(timer) = &mut this.timer else {
            return Poll::Pending;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        encode_keep_alive(&mut this.buf);
        this.rearm();
        // Register the re-armed timer so that it wakes this task.
        if let Some(timer) = &mut this.timer {
            let _ = timer.as_mut().poll(cx);
        }
        Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_none() && self.buf.is_empty() && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn next(body: &mut SseBody) -> Poll<Option<Bytes>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|f| f.map(|f| f.unwrap().into_data().unwrap()))
    }

    #[tokio::test(start_paused = true)]
    async fn coalesces_ready_events_then_ends() {
        let evs = (0..3).map(|i| SseEvent::data(i.to_string()));
        let mut body = SseBody::new(futures_util::stream::iter(evs));
        assert_eq!(
            next(&mut body),
            Poll::Ready(Some(Bytes::from_static(
                b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            )))
        );
        assert_eq!(next(&mut body), Poll::Ready(None));
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_only_while_idle() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
        let rx =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
            );
        let mut body = SseBody::new(rx).keep_alive(Some(Duration::from_secs(15)));
        assert_eq!(next(&mut body), Poll::Pending);
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(next(&mut body), Poll::Pending);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            next(&mut body),
            Poll::Ready(Some(Bytes::from_static(b":\n")))
        );
        assert_eq!(next(&mut body), Poll::Pending);
        // An event restarts the interval.
        tokio::time::advance(Duration::from_secs(10)).await;
        tx.send(SseEvent::comment("hi")).unwrap();
        assert_eq!(
            next(&mut body),
            Poll::Ready(Some(Bytes::from_static(b": hi\n")))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(next(&mut body), Poll::Pending);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            next(&mut body),
            Poll::Ready(Some(Bytes::from_static(b":\n")))
        );
        drop(tx);
        assert_eq!(next(&mut body), Poll::Ready(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_stream_sends_what_came_before_then_fails() {
        let evs: Vec<Result<SseEvent, std::io::Error>> = vec![
            Ok(SseEvent::data("a")),
            Err(std::io::Error::other("model failed")),
            Ok(SseEvent::data("never")),
        ];
        let mut body = SseBody::try_new(futures_util::stream::iter(evs));
        let mut cx = Context::from_waker(Waker::noop());
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(
            matches!(&first, Poll::Ready(Some(Ok(f))) if f.data_ref().is_some_and(|d| &d[..] == b"data: a\n\n"))
        );
        let second = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(&second, Poll::Ready(Some(Err(e))) if e.to_string() == "model failed"));
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert!(body.is_end_stream());
    }

    #[test]
    fn response_headers_and_last_event_id() {
        let resp = response(futures_util::stream::empty());
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/event-stream");
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-cache");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        let mut h = http::HeaderMap::new();
        assert_eq!(last_event_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static(""));
        assert_eq!(last_event_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static("41"));
        assert_eq!(last_event_id(&h), Some("41"));
    }
}
