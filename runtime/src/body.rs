//! The response body of [`Agent::on_request`](crate::Agent::on_request) and of the server.

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A response body: complete bytes, or a stream of chunks (SSE, see [`crate::sse`]).
///
/// Streaming bodies are sent with chunked transfer encoding and flushed per chunk. When the
/// client goes away the body is dropped, which the sending side notices
/// ([`SseSender::is_closed`](crate::sse::SseSender::is_closed)).
#[derive(Debug)]
pub struct Body {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Stream {
        rx: mpsc::Receiver<Bytes>,
        keep_alive: Option<tokio::time::Interval>,
    },
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        Self {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
        }
    }

    /// A streaming body fed by `rx`; it ends when every sender is dropped. With `keep_alive`,
    /// an SSE keep-alive comment (`:\n`) is sent whenever that long passes without a chunk.
    pub(crate) fn channel(rx: mpsc::Receiver<Bytes>, keep_alive: Option<Duration>) -> Self {
        let keep_alive = keep_alive.map(|d| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Self {
            kind: Kind::Stream { rx, keep_alive },
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Self::full(s)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Self::full(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self::full(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Self::full(b)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream { rx, keep_alive } => match rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => {
                    if let Some(k) = keep_alive {
                        k.reset();
                    }
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => {
                    if let Some(k) = keep_alive {
                        if k.poll_tick(cx).is_ready() {
                            let mut b = BytesMut::new();
                            agentwire_sse::encode_keep_alive(&mut b);
                            return Poll::Ready(Some(Ok(Frame::data(b.freeze()))));
                        }
                    }
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn streaming_body_sends_keep_alives_only_when_silent() {
        let (tx, rx) = mpsc::channel(4);
        let mut body = Body::channel(rx, Some(Duration::from_secs(15)));
        tx.send(Bytes::from_static(b"data: a\n\n")).await.unwrap();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), &b"data: a\n\n"[..]);
        // nothing for 15 s: a keep-alive comment (time is paused and advances by itself)
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), &b":\n"[..]);
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn full_body_is_one_frame() {
        let mut body = Body::from("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), &b"hello"[..]);
        assert!(body.frame().await.is_none());
        assert!(Body::empty().is_end_stream());
    }
}

/// Shorthand responses.
pub mod response {
    use super::Body;
    use http::{header, HeaderValue, Response, StatusCode};

    /// A `200` JSON response (`content-type: application/json`).
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Response<Body> {
        match serde_json::to_vec(value) {
            Ok(v) => {
                let mut r = Response::new(Body::full(v));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        }
    }

    /// A plain-text response with `status`.
    pub fn text(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
        let mut r = Response::new(body.into());
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=UTF-8"),
        );
        r
    }

    /// `404 Not found`.
    pub fn not_found() -> Response<Body> {
        text(StatusCode::NOT_FOUND, "Not found")
    }
}
