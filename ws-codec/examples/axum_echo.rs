//! A WebSocket echo route in axum on agentwire-ws (feature `tokio`): the handshake is the
//! Sans-IO `handshake` module over the request, the socket is hyper's upgraded connection
//! driven by `stream::WebSocketStream`. No WebSocket feature of axum is involved.
//!
//! ```text
//! cargo run -p agentwire-ws --features tokio --example axum_echo
//! # then ws://127.0.0.1:3000/echo with any client
//! ```
//!
//! `tests/axum_echo.rs` serves this router on a loopback port and talks to it.

use agentwire_ws::stream::WebSocketStream;
use agentwire_ws::{handshake, Config, Event, Role};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;

/// Upgrades and echoes every text and binary message until the client closes.
async fn echo(mut req: Request) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    let upgrade = match handshake::from_parts(&parts) {
        Ok(u) => u,
        Err(e) => return handshake::reject(&e).map(|()| Body::empty()),
    };
    tokio::spawn(async move {
        let Ok(io) = on_upgrade.await else { return };
        let mut ws = WebSocketStream::new(TokioIo::new(io), Role::Server, Config::default());
        while let Some(event) = ws.next().await {
            let _ = match event {
                Event::Text(text) => ws.send_text(text),
                Event::Binary(data) => ws.send_binary(data),
                _ => Ok(()), // pings are answered, the peer's Close too, by the machine
            };
        }
    });
    upgrade
        .accept(handshake::Accept::default())
        .map(|()| Body::empty())
}

/// The application: `GET /echo` upgrades.
pub(crate) fn app() -> Router {
    Router::new().route("/echo", get(echo))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("ws://{}/echo", listener.local_addr()?);
    axum::serve(listener, app()).await
}
