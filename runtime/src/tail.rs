//! `agentwire tail`: follow an SSE stream, printing each event as one JSON line.
//!
//! A thin printer over [`agentwire_sse::client::EventStream`], the async shell around the
//! Sans-IO [`agentwire_sse::EventSource`]: so the reconnect rules are the codec's:
//! `Last-Event-ID` on every reconnection, the server's `retry:` honoured, backoff with jitter
//! after repeated failures, and a stop for good on 204, another status or a wrong content
//! type. With the feature `tls`, `https://` URLs are followed too (Mozilla's roots, or the
//! roots of [`tail_with_tls`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), agentwire::tail::TailError> {
//! let mut out = std::io::stdout();
//! agentwire::tail::tail("http://127.0.0.1:8787/agents/counter-agent/a/sse", Default::default(), &mut out).await?;
//! # Ok(()) }
//! ```

use agentwire_sse::client::EventStream;
use agentwire_sse::{ErrorReason, Limits, ReconnectPolicy, SourceEvent};
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::Connect;
use serde::Serialize;
use std::io::Write;
use std::time::Instant;

/// Why [`tail`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// The URL is not an absolute `http://` URL (or `https://` with the feature `tls`).
    #[error("not an http:// url: {0}")]
    Url(String),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// The server refused the stream for good (a status other than 200, or not
    /// `text/event-stream`). A 204 is a normal end, not an error.
    #[error("stream refused: {0:?}")]
    Refused(ErrorReason),
}

/// One printed line.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a str,
    #[serde(rename = "lastEventId")]
    last_event_id: &'a str,
}

/// Follows the event stream at `url` until the server ends it with 204 (returns `Ok`) or
/// refuses it (returns [`TailError::Refused`]), writing each event to `out` as a JSON line
/// `{"type":…,"data":…,"lastEventId":…}`. Connection problems are reported on standard error
/// and retried.
pub async fn tail<W: Write>(
    url: &str,
    policy: ReconnectPolicy,
    out: &mut W,
) -> Result<(), TailError> {
    #[cfg(feature = "tls")]
    {
        tail_with_tls(url, policy, crate::tls::client_config(), out).await
    }
    #[cfg(not(feature = "tls"))]
    {
        use hyper_util::client::legacy::{connect::HttpConnector, Client};
        if !url.starts_with("http://") {
            return Err(TailError::Url(url.to_owned()));
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(http);
        let events = EventStream::with_client(client, url, policy, Limits::default())
            .map_err(|_| TailError::Url(url.to_owned()))?;
        print(events, out).await
    }
}

/// [`tail`] over `http://` or `https://`, trusting the roots of `tls` (feature `tls`; e.g. a
/// private CA, see [`crate::tls::client_config_with_roots`]).
#[cfg(feature = "tls")]
pub async fn tail_with_tls<W: Write>(
    url: &str,
    policy: ReconnectPolicy,
    tls: rustls::ClientConfig,
    out: &mut W,
) -> Result<(), TailError> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let events = EventStream::with_client(client, url, policy, Limits::default())
        .map_err(|_| TailError::Url(url.to_owned()))?;
    print(events, out).await
}

/// Prints what the stream dispatches until it ends.
async fn print<C, W>(mut events: EventStream<C>, out: &mut W) -> Result<(), TailError>
where
    C: Connect + Clone + Send + Sync + 'static,
    W: Write,
{
    while let Some(ev) = events.next().await {
        match ev {
            SourceEvent::Message(m) => {
                let line = Line {
                    event_type: m.event_type(),
                    data: m.data(),
                    last_event_id: m.last_event_id(),
                };
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            SourceEvent::Error {
                reason,
                reconnect_at: Some(at),
            } => {
                let wait = at.saturating_duration_since(Instant::now());
                match events.last_error() {
                    Some(e) => eprintln!(
                        "tail: {reason:?} ({e}); reconnecting in {} ms",
                        wait.as_millis()
                    ),
                    None => eprintln!("tail: {reason:?}; reconnecting in {} ms", wait.as_millis()),
                }
            }
            SourceEvent::Error {
                reason: ErrorReason::NoContent,
                reconnect_at: None,
            } => return Ok(()),
            SourceEvent::Error {
                reason,
                reconnect_at: None,
            } => return Err(TailError::Refused(reason)),
            SourceEvent::Malformed(e) => eprintln!("tail: {e}"),
            _ => {}
        }
    }
    Ok(())
}
