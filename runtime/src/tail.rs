//! `agentwire tail`: follow an SSE stream, printing each event as one JSON line.
//!
//! The IO shell around [`agentwire_sse::EventSource`]: this module makes the requests the policy
//! asks for (hyper's HTTP/1.1 client over a plain TCP connection), feeds the body in, prints
//! what it dispatches and sleeps until the reconnection time it returns. So the reconnect rules
//! are the codec's: `Last-Event-ID` on every reconnection, the server's `retry:` honoured,
//! backoff with jitter after repeated failures, and a stop for good on 204, another status or
//! a wrong content type.
//!
//! ```no_run
//! # async fn run() -> Result<(), agentwire::tail::TailError> {
//! let mut out = std::io::stdout();
//! agentwire::tail::tail("http://127.0.0.1:8787/agents/counter-agent/a/sse", Default::default(), &mut out).await?;
//! # Ok(()) }
//! ```

use agentwire_sse::{ConnectRequest, ErrorReason, EventSource, Limits, ReconnectPolicy};
use agentwire_sse::{ReadyState, SourceEvent};
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::io::Write;
use std::time::Instant;
use tokio::net::TcpStream;

/// Why [`tail`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// The URL is not an absolute `http://` URL.
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
    let uri: Uri = url.parse().map_err(|_| TailError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(TailError::Url(url.to_owned()));
    }
    let mut es = EventSource::with_policy(url, policy, Limits::default());
    loop {
        if let Some(req) = es.poll_connect() {
            match connect(&uri, &req).await {
                Ok(resp) => {
                    let content_type = resp
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok());
                    if es.handle_response(resp.status().as_u16(), content_type) {
                        let mut body = resp.into_body();
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                es.handle_input(data);
                                drain(&mut es, out)?;
                            }
                        }
                        es.handle_eof(Instant::now());
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connection failed");
                    es.handle_eof(Instant::now());
                }
            }
        }
        if let Some(end) = drain(&mut es, out)? {
            return end;
        }
        if es.ready_state() == ReadyState::Closed {
            return Ok(());
        }
        if let Some(at) = es.poll_timeout() {
            tokio::time::sleep_until(at.into()).await;
            es.handle_timeout(Instant::now());
        }
    }
}

/// Prints what the policy dispatches; `Some` when the source closed for good.
fn drain<W: Write>(
    es: &mut EventSource,
    out: &mut W,
) -> Result<Option<Result<(), TailError>>, TailError> {
    while let Some(ev) = es.poll_event() {
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
                eprintln!("tail: {reason:?}; reconnecting in {} ms", wait.as_millis());
            }
            SourceEvent::Error {
                reason: ErrorReason::NoContent,
                reconnect_at: None,
            } => return Ok(Some(Ok(()))),
            SourceEvent::Error {
                reason,
                reconnect_at: None,
            } => return Ok(Some(Err(TailError::Refused(reason)))),
            SourceEvent::Malformed(e) => eprintln!("tail: {e}"),
            SourceEvent::Open => {}
            _ => {}
        }
    }
    Ok(None)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One `GET` with the policy's headers over a new HTTP/1.1 connection.
async fn connect(
    uri: &Uri,
    req: &ConnectRequest,
) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
    let host = uri.host().unwrap_or("localhost");
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended");
        }
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let mut builder = Request::get(path).header(header::HOST, authority);
    for (name, value) in req.headers() {
        builder = builder.header(name, value);
    }
    let request = builder.body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?)
}
