//! Runs `examples/axum_app.rs` on a loopback port: an own route, an agent over WebSocket and
//! HTTP on the same listener, and the shared graceful shutdown (the socket gets `1001`).

mod common;
#[allow(dead_code)]
#[path = "../examples/axum_app.rs"]
mod example;

use common::{Client, Frame, WAIT};
use serde_json::json;

#[tokio::test]
async fn own_routes_and_agents_share_the_listener_state_and_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(example::run(listener, async {
        let _ = stopped.await;
    }));

    let (status, _, body) = common::http(addr, "GET", "/", &[], "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "an axum app with agents under /agents/")
    );

    // An agent over WebSocket: the connect sequence, then RPC that updates the app's state.
    let mut ws = Client::connect(addr, "/agents/counter/a")
        .await
        .expect("101");
    let [identity, state, _mcp] = ws.connect_frames().await;
    assert_eq!(identity["name"], "a");
    assert_eq!(state["state"], json!({ "count": 0 }));
    assert_eq!(ws.call_ok("increment", json!([5])).await, json!(5));
    assert_eq!(ws.call_ok("increment", json!([])).await, json!(6));

    let (status, _, body) = common::http(addr, "GET", "/api/stats", &[], "").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats, json!({ "increments": 2, "awake_instances": 1 }));

    // The same instance over HTTP (its onRequest).
    let (status, _, body) = common::http(addr, "GET", "/agents/counter/a", &[], "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"count":6}"#));
    let (status, _, _) = common::http(addr, "GET", "/nope", &[], "").await;
    assert_eq!(status, 404);

    // One shutdown: the WebSocket is closed with 1001 and `run` returns.
    stop.send(()).unwrap();
    loop {
        match ws.recv_within(WAIT).await.expect("close frame") {
            Frame::Close(code, _) => {
                assert_eq!(code, 1001);
                break;
            }
            _ => continue,
        }
    }
    tokio::time::timeout(WAIT, serving)
        .await
        .expect("run returns after the shutdown")
        .unwrap()
        .unwrap();
}

/// A WebSocket upgrade that reaches the server without hyper's upgrade extension (a host
/// that does not support upgrades, or a test calling `handle`) is refused with a clear `500`,
/// never a `101` on a connection that cannot be handed over.
#[tokio::test]
async fn an_upgrade_without_the_upgrade_extension_is_refused() {
    use http_body_util::BodyExt;
    let state = example::state();
    let req = http::Request::get("/agents/counter/a")
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = state.agents.handle(req).await;
    assert_eq!(resp.status(), 500);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("WebSocket upgrade unavailable"));
}
