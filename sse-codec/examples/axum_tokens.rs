//! An axum endpoint that streams a model's answer token by token over Server-Sent Events,
//! resumable with `Last-Event-ID`: each token is an event whose ID is its index, so a client
//! that reconnects (every `EventSource` does, by itself) gets the tokens after the last one it
//! saw, and once it has them all the server answers `204 No Content`, which tells it to stop.
//!
//! ```text
//! cargo run -p agentwire-sse --features client --example axum_tokens
//! curl -N http://127.0.0.1:3000/tokens                          # the whole answer
//! curl -N -H 'Last-Event-ID: 5' http://127.0.0.1:3000/tokens    # from token 6 on
//! ```
//!
//! `tests/axum_tokens.rs` runs this router on a loopback port and follows it with
//! `agentwire_sse::client::EventStream`.

use agentwire_sse::body::{self, SseBody, SseEvent};
use agentwire_sse::{EventId, EventName};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// What the endpoint streams, shared by every request.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    /// The answer, split into tokens.
    pub(crate) tokens: Arc<[String]>,
    /// Time between two tokens (a model's generation speed).
    pub(crate) delay: Duration,
    /// The reconnection time sent to clients (`retry:`).
    pub(crate) retry: Duration,
}

impl Tokens {
    /// Splits `text` into word tokens (each keeping its leading space, as tokenizers do).
    pub(crate) fn from_text(text: &str, delay: Duration, retry: Duration) -> Self {
        let mut tokens = Vec::new();
        for (i, word) in text.split(' ').enumerate() {
            tokens.push(if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            });
        }
        Self {
            tokens: tokens.into(),
            delay,
            retry,
        }
    }
}

/// The application: `GET /tokens` streams the answer.
pub(crate) fn app(state: Tokens) -> Router {
    Router::new()
        .route("/tokens", get(stream_tokens))
        .with_state(state)
}

async fn stream_tokens(State(state): State<Tokens>, headers: HeaderMap) -> Response {
    // The first token the client has not seen.
    let from = match body::last_event_id(&headers).map(str::parse::<usize>) {
        None => 0,
        Some(Ok(last)) => last + 1,
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "bad Last-Event-ID").into_response(),
    };
    if from >= state.tokens.len() {
        return StatusCode::NO_CONTENT.into_response(); // all delivered: the client stops
    }
    let token = EventName::new("token").expect("valid event name");
    let retry = state.retry;
    let delay = state.delay;
    let tokens = state.tokens.clone();
    let events = futures_util::stream::iter(from..tokens.len()).then(move |i| {
        let (tokens, token) = (tokens.clone(), token.clone());
        async move {
            tokio::time::sleep(delay).await; // generating…
            let id = EventId::new(i.to_string()).expect("digits are a valid id");
            let ev = SseEvent::data(tokens[i].clone()).event(token).id(id);
            if i == from {
                ev.retry(retry)
            } else {
                ev
            }
        }
    });
    SseBody::new(events).into_response().into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let answer = "Server-Sent Events stream a model's answer token by token, and a client \
                  that loses the connection resumes where it left off.";
    let state = Tokens::from_text(answer, Duration::from_millis(80), Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("streaming on http://{}/tokens", listener.local_addr()?);
    axum::serve(listener, app(state)).await
}
