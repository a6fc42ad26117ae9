//! permessage-deflate in the server (`Limits::deflate`): negotiated with clients that offer
//! it, compressed frames both ways, uncompressed clients on the same instance unaffected, and
//! off by default.
#![cfg(feature = "deflate")]

mod common;

use agentwire::{DeflateConfig, Limits, Storage};
use agentwire_ws::handshake::ClientOptions;
use common::{server_with, spawn, Client};
use serde_json::json;

fn offer() -> ClientOptions {
    ClientOptions::default().with_deflate(DeflateConfig::default())
}

#[tokio::test]
async fn compressed_and_plain_clients_share_an_instance() {
    let limits = Limits::default().with_deflate(Some(DeflateConfig::default()));
    let addr = spawn(server_with(Storage::memory(), limits)).await;
    let path = "/agents/test-agent/zip";
    let (mut a, acc) = Client::connect_with(addr, path, offer()).await.unwrap();
    assert_eq!(
        acc.response.headers()["sec-websocket-extensions"],
        "permessage-deflate"
    );
    assert!(acc.deflate.is_some());
    let (mut b, _) = Client::connect_with(addr, path, offer()).await.unwrap();
    let mut plain = Client::connect(addr, path).await.unwrap();
    a.connect_frames().await;
    b.connect_frames().await;
    plain.connect_frames().await;

    // a large, repetitive state, as agent state tends to be
    let items: Vec<_> = (0..400)
        .map(|i| json!({"id": i, "role": "assistant", "text": "the weather in Lisbon is sunny"}))
        .collect();
    let state = json!({"count": 7, "items": items});
    let frame = json!({"type": "cf_agent_state", "state": state});
    let raw = frame.to_string().len() as u64;
    let before = (b.wire_bytes_received(), plain.wire_bytes_received());
    a.send_json(&frame).await;
    let (got_b, _) = b.wait_for(|f| f["type"] == "cf_agent_state").await;
    let (got_plain, _) = plain.wait_for(|f| f["type"] == "cf_agent_state").await;
    assert_eq!(got_b["state"], state);
    assert_eq!(got_plain["state"], state);
    let wire_b = b.wire_bytes_received() - before.0;
    let wire_plain = plain.wire_bytes_received() - before.1;
    assert!(wire_plain >= raw, "plain client got {wire_plain} of {raw}");
    assert!(
        wire_b * 5 < raw,
        "compressed client got {wire_b} bytes for {raw}"
    );

    // the state came in compressed too, and was understood: a new connection gets it
    let (mut c, _) = Client::connect_with(addr, path, offer()).await.unwrap();
    let [_, st, _] = c.connect_frames().await;
    assert_eq!(st["state"], state);
    assert_eq!(c.call_ok("add", json!([2, 3])).await, json!(5));
}

#[tokio::test]
async fn off_by_default() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    let (mut a, acc) = Client::connect_with(addr, "/agents/test-agent/plain", offer())
        .await
        .unwrap();
    assert!(acc.deflate.is_none());
    assert!(acc
        .response
        .headers()
        .get("sec-websocket-extensions")
        .is_none());
    a.connect_frames().await;
    assert_eq!(a.call_ok("add", json!([1, 1])).await, json!(2));
}

/// The Rust `AgentClient` offers permessage-deflate by default; against a compressing server
/// its large state update and calls go through.
#[cfg(feature = "client")]
#[tokio::test]
async fn agent_client_with_compression() {
    use agentwire::client::AgentClient;
    let limits = Limits::default().with_deflate(Some(DeflateConfig::default()));
    let addr = spawn(server_with(Storage::memory(), limits)).await;
    let client = AgentClient::connect(format!("ws://{addr}"), "TestAgent", "zc")
        .await
        .unwrap();
    let (mut watcher, _) = Client::connect_with(addr, "/agents/test-agent/zc", offer())
        .await
        .unwrap();
    watcher.connect_frames().await;
    let items: Vec<_> = (0..300)
        .map(|i| json!({"id": i, "text": "compressed by the Rust client"}))
        .collect();
    let state = json!({"count": 3, "items": items});
    client.set_state(&state).unwrap();
    let (got, _) = watcher.wait_for(|f| f["type"] == "cf_agent_state").await;
    assert_eq!(got["state"], state);
    assert_eq!(client.call("add", [20, 22]).await.unwrap(), json!(42));
    client.close().await;
}

#[tokio::test]
async fn server_deflate_negotiates_no_context_takeover_and_compresses_big_broadcasts() {
    let limits = Limits::default().with_deflate(Some(agentwire::server_deflate()));
    let addr = spawn(server_with(Storage::memory(), limits)).await;
    let path = "/agents/test-agent/srv";
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (mut c, acc) = Client::connect_with(addr, path, offer()).await.unwrap();
        assert_eq!(
            acc.response.headers()["sec-websocket-extensions"],
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        c.connect_frames().await;
        clients.push(c);
    }
    let items: Vec<_> = (0..400)
        .map(|i| json!({"id": i, "text": "the same words again and again"}))
        .collect();
    let state = json!({"count": 1, "items": items});
    let frame = json!({"type": "cf_agent_state", "state": state});
    let raw = frame.to_string().len() as u64;
    let (first, rest) = clients.split_first_mut().unwrap();
    first.send_json(&frame).await;
    for c in rest {
        let before = c.wire_bytes_received();
        let (got, _) = c.wait_for(|f| f["type"] == "cf_agent_state").await;
        assert_eq!(got["state"], state);
        let wire = c.wire_bytes_received() - before;
        assert!(wire * 5 < raw, "{wire} bytes on the wire for {raw}");
    }
}
