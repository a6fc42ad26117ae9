//! Server-Sent Events responses with resume.
//!
//! Two levels:
//!
//! * [`response`] makes a `text/event-stream` response and the [`SseSender`] that feeds it
//!   (a bounded queue of [`DEFAULT_QUEUE`] chunks, keep-alive comments every
//!   [`DEFAULT_KEEP_ALIVE`] of silence, the client's disconnect noticed through
//!   [`SseSender::is_closed`]).
//! * Resumable streams on the agent's [`Context`](crate::Context):
//!   [`sse_publish`](crate::Context::sse_publish) appends an event to a bounded, persisted log
//!   (ids 1, 2, 3, … per stream) and sends it to every live subscriber;
//!   [`sse_subscribe`](crate::Context::sse_subscribe) answers a request with the events after
//!   its `Last-Event-ID` (if any), then the live ones. A subscriber that falls
//!   [`DEFAULT_QUEUE`] chunks behind is dropped; its client reconnects with `Last-Event-ID`
//!   and catches up from the log.

use crate::body::Body;
use crate::store::StoredEvent;
use agentwire_sse::{EventId, EventName, OutEvent};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response};
use std::time::Duration;
use tokio::sync::mpsc;

/// Chunks an SSE response may have queued before its sender reports it full: 256.
pub const DEFAULT_QUEUE: usize = 256;
/// Silence after which a keep-alive comment is sent: 15 s.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events kept per stream in the persisted log: 1,000.
pub const DEFAULT_LOG_LEN: usize = 1000;

/// The sending side of an SSE response. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SseSender {
    tx: mpsc::Sender<Bytes>,
}

/// The client is gone (or too slow and was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SSE client is gone or too far behind")]
pub struct Gone;

/// A `200 text/event-stream` response and its sender, with the default queue and keep-alive.
pub fn response() -> (Response<Body>, SseSender) {
    response_with(DEFAULT_QUEUE, Some(DEFAULT_KEEP_ALIVE))
}

/// [`response`] with an explicit queue length (chunks) and keep-alive interval.
pub fn response_with(queue: usize, keep_alive: Option<Duration>) -> (Response<Body>, SseSender) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let mut r = Response::new(Body::channel(rx, keep_alive));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (r, SseSender { tx })
}

impl SseSender {
    /// Queues raw, already-encoded SSE bytes. Never waits: a full queue is [`Gone`].
    pub fn send_raw(&self, bytes: Bytes) -> Result<(), Gone> {
        self.tx.try_send(bytes).map_err(|e| {
            if let mpsc::error::TrySendError::Full(_) = e {
                crate::metrics::sse_overflow();
                tracing::warn!("SSE subscriber too slow; dropped (it resumes with Last-Event-ID)");
            }
            Gone
        })
    }

    /// Queues one event (`id:`, `event:`, `data:` lines; the data split on line ends).
    pub fn send_event(&self, id: Option<u64>, event: Option<&str>, data: &str) -> Result<(), Gone> {
        self.send_raw(encode(id, event, data))
    }

    /// Queues a stored event.
    pub fn send_stored(&self, ev: &StoredEvent) -> Result<(), Gone> {
        self.send_event(Some(ev.id), ev.event.as_deref(), &ev.data)
    }

    /// Whether the client has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Encodes one event as `id: …\nevent: …\ndata: …\n\n` (the field order of the reference
/// server). An event name that is not a valid SSE field value is left out.
pub fn encode(id: Option<u64>, event: Option<&str>, data: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 32);
    // Digits are always a valid event ID.
    let id = id.and_then(|id| EventId::new(id.to_string()).ok());
    let name = event.and_then(|e| EventName::new(e.to_owned()).ok());
    let mut ev = OutEvent::new(data);
    if let Some(id) = &id {
        ev = ev.id(id);
    }
    if let Some(n) = &name {
        ev = ev.event(n);
    }
    ev.encode(&mut b);
    b.freeze()
}

/// The `Last-Event-ID` of a request as a number (ids of resumable streams are numbers).
pub fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_reference_order() {
        assert_eq!(
            &encode(Some(1), Some("tick"), "{\"i\":1}")[..],
            b"id: 1\nevent: tick\ndata: {\"i\":1}\n\n"
        );
        assert_eq!(
            &encode(None, Some("done"), "bye")[..],
            b"event: done\ndata: bye\n\n"
        );
        assert_eq!(
            &encode(None, Some("bad\nname"), "a\nb")[..],
            b"data: a\ndata: b\n\n"
        );
    }

    #[test]
    fn last_event_id_parses_numbers_only() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static(" 7 "));
        assert_eq!(last_event_id(&h), Some(7));
        h.insert("last-event-id", HeaderValue::from_static("x"));
        assert_eq!(last_event_id(&h), None);
    }

    #[tokio::test]
    async fn full_queue_and_gone_client_are_reported() {
        let (resp, tx) = response_with(2, None);
        tx.send_event(Some(1), None, "a").unwrap();
        tx.send_event(Some(2), None, "b").unwrap();
        assert_eq!(tx.send_event(Some(3), None, "c"), Err(Gone));
        drop(resp);
        assert!(tx.is_closed());
    }
}
