//! Runs `examples/axum_tokens.rs` on a loopback port and follows it with `EventStream`.

#[allow(dead_code)]
#[path = "../examples/axum_tokens.rs"]
mod example;

use agentwire_sse::client::EventStream;
use agentwire_sse::{ErrorReason, SourceEvent};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

async fn start(state: example::Tokens) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, example::app(state)).await });
    format!("http://{addr}/tokens")
}

fn state() -> example::Tokens {
    example::Tokens::from_text(
        "one two three four five",
        Duration::from_millis(1),
        Duration::from_millis(50),
    )
}

/// The whole answer arrives in order with IDs; the client then reconnects with
/// `Last-Event-ID: 4` by itself and the server's 204 ends the stream.
#[tokio::test]
async fn streams_every_token_then_stops_on_204() {
    let url = start(state()).await;
    let mut events = EventStream::new(&url).unwrap();
    let mut text = String::new();
    let mut ids = Vec::new();
    let mut opens = 0;
    let mut errors = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the stream ends by itself")
    {
        match ev {
            SourceEvent::Open => opens += 1,
            SourceEvent::Message(m) => {
                assert_eq!(m.event_type(), "token");
                text.push_str(m.data());
                ids.push(m.last_event_id().to_owned());
            }
            SourceEvent::Error {
                reason,
                reconnect_at,
            } => errors.push((reason, reconnect_at.is_some())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(text, "one two three four five");
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    assert_eq!(opens, 1);
    // End of the body (reconnect), then the 204 (stop for good).
    assert_eq!(
        errors,
        [
            (ErrorReason::Disconnected, true),
            (ErrorReason::NoContent, false)
        ]
    );
    assert_eq!(events.last_event_id(), "4");
}

/// A request with `Last-Event-ID` resumes after that token, with the SSE headers.
#[tokio::test]
async fn resumes_after_last_event_id() {
    let url = start(state()).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = http::Request::get(&url)
        .header("last-event-id", "2")
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        b"id: 3\nevent: token\nretry: 50\ndata:  four\n\nid: 4\nevent: token\ndata:  five\n\n"
    );
    let req = http::Request::get(&url)
        .header("last-event-id", "x")
        .body(Empty::new())
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), 400);
}
