//! The instance core: deferred replies and instance tasks (a slow call does not hold the
//! instance), handles, props, and connection bookkeeping.

mod common;

use agentwire::demo::counter::CounterAgent;
use agentwire::{Limits, Server, Storage};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;

async fn counter() -> SocketAddr {
    spawn(
        Server::builder()
            .agent("CounterAgent", |_| CounterAgent::new())
            .storage(Storage::memory())
            .limits(Limits::default())
            .build(),
    )
    .await
}

fn is_final(v: &Value) -> bool {
    v["type"] == "rpc" && v.get("done") != Some(&json!(false))
}

#[tokio::test]
async fn slow_calls_do_not_hold_the_instance() {
    let addr = counter().await;
    let mut a = Client::connect(addr, "/agents/counter-agent/slow?_pk=a")
        .await
        .unwrap();
    a.connect_frames().await;
    let mut b = Client::connect(addr, "/agents/counter-agent/slow?_pk=b")
        .await
        .unwrap();
    b.connect_frames().await;
    // 20 slow calls in flight on connection `a`…
    for i in 0..20 {
        a.send_json(
            &json!({"type": "rpc", "id": format!("s{i}"), "method": "slow", "args": [2000]}),
        )
        .await;
    }
    // …then `increment` on the other connection and on `a` itself: both answer first.
    assert_eq!(b.call_ok("increment", json!([])).await, json!(1));
    a.send_json(&json!({"type": "rpc", "id": "inc", "method": "increment", "args": [5]}))
        .await;
    let (reply, skipped) = a.wait_for(|v| is_final(v) && v["id"] == "inc").await;
    assert_eq!(reply["result"], json!(6));
    assert!(
        skipped.iter().all(|v| !is_final(v)),
        "a slow call answered before increment: {skipped:?}"
    );
    // every slow call answers with its argument
    let mut answered = 0;
    while answered < 20 {
        let (v, _) = a.wait_for(is_final).await;
        assert!(v["id"].as_str().unwrap().starts_with('s'), "{v}");
        assert_eq!(v["result"], json!(2000), "{v}");
        answered += 1;
    }
}

#[tokio::test]
async fn slow_refuses_waits_beyond_its_bound() {
    let addr = counter().await;
    let mut a = Client::connect(addr, "/agents/counter-agent/bound")
        .await
        .unwrap();
    a.connect_frames().await;
    let r = a.call("slow", json!([600_000])).await;
    assert_eq!(r["success"], json!(false), "{r}");
    assert_eq!(a.call_ok("slow", json!([0])).await, json!(0));
}
