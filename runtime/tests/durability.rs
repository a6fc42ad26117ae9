//! An acknowledged state update survives `kill -9` of the server process.
//!
//! The server runs in a child process: this test binary re-executed with only the ignored
//! `child_server` test selected, which serves until it is killed.

mod common;

use agentwire::{Limits, Storage};
use common::*;
use serde_json::json;

const DATA_ENV: &str = "AGENTWIRE_TEST_CHILD_DATA";

/// Not a test on its own: the server process of `kill_9_keeps_acknowledged_updates`.
#[test]
#[ignore = "run by kill_9_keeps_acknowledged_updates as its server process"]
fn child_server() {
    let dir = std::env::var(DATA_ENV).expect("started by the durability test");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap());
        server_with(Storage::sqlite(dir), Limits::default())
            .serve(listener)
            .await
            .unwrap();
    });
}

#[tokio::test]
async fn kill_9_keeps_acknowledged_updates() {
    let dir = std::env::temp_dir().join(format!("agentwire-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let (mut child, addr) = start_child_server("child_server", DATA_ENV, &dir);
    let mut c = Client::connect(addr, "/agents/test-agent/durable")
        .await
        .unwrap();
    c.connect_frames().await;
    for i in 1..=20 {
        assert_eq!(c.call_ok("increment", json!([1])).await, json!(i));
    }
    // a client update, acknowledged by the reply to a later call on the same socket
    // (one instance handles its events in order)
    c.send_text(r#"{"state":{"count":100},"type":"cf_agent_state"}"#)
        .await;
    assert_eq!(c.call_ok("add", json!([1, 1])).await, json!(2));
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();

    let (mut child, addr) = start_child_server("child_server", DATA_ENV, &dir);
    let mut c = Client::connect(addr, "/agents/test-agent/durable")
        .await
        .unwrap();
    assert_eq!(c.connect_frames().await[1]["state"], json!({"count": 100}));
    assert_eq!(c.call_ok("increment", json!([1])).await, json!(101));
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
