//! An async event stream over hyper's client (feature `client`).
//!
//! [`EventStream`] is the IO shell around the Sans-IO [`EventSource`]: it makes the requests
//! the policy asks for, feeds the bodies in and sleeps until the reconnection time, and yields
//! what the policy dispatches as a `futures_core::Stream` of [`SourceEvent`]s. So the rules
//! are the browser's: `Last-Event-ID` on every reconnection, the server's `retry:` honoured,
//! capped backoff with jitter after repeated failures, and the end of the stream on a 204,
//! another status, a wrong content type or [`close`](EventStream::close).
//!
//! ```no_run
//! use agentwire_sse::client::EventStream;
//! use agentwire_sse::SourceEvent;
//! use futures_util::StreamExt;
//!
//! # async fn run() -> Result<(), agentwire_sse::client::UrlError> {
//! let mut events = EventStream::new("http://127.0.0.1:3000/tokens")?;
//! while let Some(ev) = events.next().await {
//!     match ev {
//!         SourceEvent::Message(m) => print!("{}", m.data()),
//!         SourceEvent::Error { reconnect_at: Some(_), .. } => eprintln!("reconnecting"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! For `https://`, give [`EventStream::with_client`] a client with a TLS connector (for
//! example hyper-rustls's `HttpsConnector`).
//!
//! | bound | default | on excess |
//! |---|---|---|
//! | [`EventStream::response_timeout`] (connect and response head) | 30 s | the attempt counts as a failed connection and is retried |
//! | decoder limits ([`Limits`]) | 2 MiB line, 8 MiB event | [`SourceEvent::Malformed`], the stream goes on |
//! | body idle time | none (as browsers) | — the server's keep-alive comments keep proxies awake |

use crate::eventsource::{EventSource, ReadyState, ReconnectPolicy, SourceEvent};
use crate::Limits;
use bytes::Bytes;
use futures_core::Stream;
use http::{header, Request, Uri};
use http_body::Body as _;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Default bound on connecting and receiving the response head.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The URL given to [`EventStream`] is not an absolute `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an absolute http(s) url: {}", self.0)
    }
}

impl std::error::Error for UrlError {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum State {
    Idle,
    Connecting(ResponseFuture, Pin<Box<tokio::time::Sleep>>),
    Reading(Incoming),
    Waiting(Pin<Box<tokio::time::Sleep>>),
}

/// A `Stream` of [`SourceEvent`]s from one URL, reconnecting by the [`EventSource`] policy
/// (see the [module docs](self)). It ends (`None`) when the source is closed for good; the
/// last item before that is the `Error` event that says why.
pub struct EventStream<C = HttpConnector> {
    client: Client<C, Empty<Bytes>>,
    uri: Uri,
    source: EventSource,
    state: State,
    response_timeout: Duration,
    last_error: Option<BoxError>,
}

// No field is ever pinned: the futures it polls are boxed or `Unpin`.
impl<C> Unpin for EventStream<C> {}

impl<C> fmt::Debug for EventStream<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("uri", &self.uri)
            .field("ready_state", &self.source.ready_state())
            .field("last_event_id", &self.source.last_event_id())
            .finish_non_exhaustive()
    }
}

impl EventStream<HttpConnector> {
    /// Follows `url` (`http://` only: use [`with_client`](EventStream::with_client) and a TLS
    /// connector for `https://`) with the default policy and limits.
    pub fn new(url: &str) -> Result<Self, UrlError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(http);
        Self::with_client(client, url, ReconnectPolicy::default(), Limits::default())
    }
}

impl<C> EventStream<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// Follows `url` through `client` with this reconnect policy and decoder limits.
    pub fn with_client(
        client: Client<C, Empty<Bytes>>,
        url: &str,
        policy: ReconnectPolicy,
        limits: Limits,
    ) -> Result<Self, UrlError> {
        let uri: Uri = url.parse().map_err(|_| UrlError(url.to_owned()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(UrlError(url.to_owned()));
        }
        Ok(Self {
            client,
            uri,
            source: EventSource::with_policy(url, policy, limits),
            state: State::Idle,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            last_error: None,
        })
    }

    /// Sets the bound on connecting and receiving the response head (default
    /// [`DEFAULT_RESPONSE_TIMEOUT`]).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }
}

impl<C> EventStream<C> {
    /// The policy's state.
    pub fn ready_state(&self) -> ReadyState {
        self.source.ready_state()
    }

    /// The ID of the last event received (what the next request sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &str {
        self.source.last_event_id()
    }

    /// Why the last connection attempt failed or the last body broke, if one did.
    pub fn last_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.last_error.as_deref()
    }

    /// Closes the source for good: the connection is dropped and the stream ends.
    pub fn close(&mut self) {
        self.source.close();
        self.state = State::Idle;
    }

    fn request(&self, last_event_id: Option<&str>) -> Request<Empty<Bytes>> {
        let mut req = Request::get(self.uri.clone())
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        req.body(Empty::new()).unwrap_or_else(|_| {
            // Unreachable: the URI was validated and the event ID cannot hold CR, LF or NUL.
            Request::new(Empty::new())
        })
    }
}

impl<C> Stream for EventStream<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    type Item = SourceEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SourceEvent>> {
        let this = &mut *self;
        loop {
            if let Some(ev) = this.source.poll_event() {
                return Poll::Ready(Some(ev));
            }
            match &mut this.state {
                State::Idle => {
                    if let Some(req) = this.source.poll_connect() {
                        let request = this.request(req.last_event_id());
                        let deadline = tokio::time::sleep(this.response_timeout);
                        this.state =
                            State::Connecting(this.client.request(request), Box::pin(deadline));
                    } else if this.source.ready_state() == ReadyState::Closed {
                        return Poll::Ready(None);
                    } else if let Some(at) = this.source.poll_timeout() {
                        this.state = State::Waiting(Box::pin(tokio::time::sleep_until(at.into())));
                    } else {
                        return Poll::Ready(None);
                    }
                }
                State::Connecting(fut, deadline) => match Pin::new(fut).poll(cx) {
                    Poll::Ready(Ok(resp)) => {
                        let content_type = resp
                            .headers()
                            .get(header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok());
                        let ok = this
                            .source
                            .handle_response(resp.status().as_u16(), content_type);
                        this.state = if ok {
                            State::Reading(resp.into_body())
                        } else {
                            State::Idle
                        };
                    }
                    Poll::Ready(Err(e)) => {
                        this.last_error = Some(Box::new(e));
                        this.source.handle_eof(Instant::now());
                        this.state = State::Idle;
                    }
                    Poll::Pending => {
                        if deadline.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        this.last_error = Some("no response within the response timeout".into());
                        this.source.handle_eof(Instant::now());
                        this.state = State::Idle;
                    }
                },
                State::Reading(body) => match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            this.source.handle_input(data);
                        }
                    }
                    Poll::Ready(end) => {
                        if let Some(Err(e)) = end {
                            this.last_error = Some(Box::new(e));
                        }
                        this.source.handle_eof(Instant::now());
                        this.state = State::Idle;
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Waiting(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.source.handle_timeout(Instant::now());
                    this.state = State::Idle;
                }
            }
        }
    }
}
