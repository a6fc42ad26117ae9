//! Where a client can tell the difference, the server answers as the reference server does:
//! close handshake, method lookup, JSON values, the contract agent's state and SSE route.

mod common;

use agentwire::demo::counter::CounterAgent;
use agentwire::{Server, Storage};
use common::{http, spawn, Client, Frame};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn counter_server(storage: Storage) -> Server {
    Server::builder()
        .agent("CounterAgent", |_| CounterAgent::new())
        .storage(storage)
        .build()
}

async fn counter(name: &str) -> (std::net::SocketAddr, Client) {
    let addr = spawn(counter_server(Storage::memory())).await;
    let mut c = Client::connect(addr, &format!("/agents/counter-agent/{name}?_pk=p1"))
        .await
        .unwrap();
    c.connect_frames().await;
    (addr, c)
}

/// The top-level fields of a JSON object, each as its exact text.
fn raw_fields(text: &str) -> HashMap<String, String> {
    let m: HashMap<String, Box<RawValue>> = serde_json::from_str(text).expect("a JSON object");
    m.into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect()
}

/// Sends an RPC frame whose `args` is the JSON text `args`; returns the reply frame's text.
async fn call_raw(c: &mut Client, id: &str, method: &str, args: &str) -> String {
    c.send_text(&format!(
        r#"{{"type":"rpc","id":"{id}","method":"{method}","args":{args}}}"#
    ))
    .await;
    loop {
        match c.recv().await {
            Frame::Text(t) => {
                let f = raw_fields(&t);
                if f.get("id").map(String::as_str) == Some(&format!("\"{id}\"")) {
                    return t;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn close_reply_carries_the_clients_code_and_reason() {
    let (addr, mut c) = counter("close").await;
    c.close_with(4123, "going home — bye").await;
    assert_eq!(
        c.recv().await,
        Frame::Close(4123, "going home — bye".into())
    );
    assert!(c.recv_within(Duration::from_secs(5)).await.is_none());

    // the longest reason a Close can carry (123 bytes) comes back whole
    let mut c = Client::connect(addr, "/agents/counter-agent/close")
        .await
        .unwrap();
    c.connect_frames().await;
    let reason = "r".repeat(123);
    c.close_with(1000, &reason).await;
    assert_eq!(c.recv().await, Frame::Close(1000, reason));
}

#[tokio::test]
async fn nothing_is_sent_after_the_clients_close() {
    let (_addr, mut c) = counter("after-close").await;
    // a call and a Close in one write: the call's reply may not follow the server's Close
    c.send_text_then_close(
        r#"{"type":"rpc","id":"x","method":"countdown","args":[50]}"#,
        1000,
    )
    .await;
    let mut frames = Vec::new();
    while let Some(f) = c.recv_within(Duration::from_secs(5)).await {
        frames.push(f);
    }
    let close_at = frames
        .iter()
        .position(|f| matches!(f, Frame::Close(..)))
        .expect("the server's Close");
    assert_eq!(frames[close_at], Frame::Close(1000, String::new()));
    assert_eq!(
        close_at + 1,
        frames.len(),
        "frames after the Close: {frames:?}"
    );
}

#[tokio::test]
async fn base_class_members_are_not_callable_and_lookup_is_case_sensitive() {
    let (_addr, mut c) = counter("members").await;
    for m in [
        "setState",
        "onConnect",
        "onRequest",
        "broadcast",
        "sql",
        "schedule",
        "scheduleEvery",
        "getConnections",
        "destroy",
        "toString",
        "constructor",
        "hasOwnProperty",
    ] {
        let r = c.call(m, json!([])).await;
        assert_eq!(r["success"], json!(false), "{m}: {r}");
        assert_eq!(r["error"], format!("Method {m} is not callable"), "{m}");
    }
    // getters and unknown names do not exist; lookup is case-sensitive
    for m in [
        "SetState",
        "setstate",
        "state",
        "name",
        "__proto__",
        "nope",
        "Increment",
    ] {
        let r = c.call(m, json!([])).await;
        assert_eq!(r["error"], format!("Method {m} does not exist"), "{m}");
    }
    // an agent's own method of such a name is called as usual
    assert_eq!(
        c.call_ok("echo", json!(["setState"])).await,
        json!("setState")
    );
}

#[tokio::test]
async fn rpc_values_round_trip_exactly() {
    let (_addr, mut c) = counter("json").await;
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let deep_obj = format!("{}null{}", r#"{"a":"#.repeat(300), "}".repeat(300));
    let values = [
        r#""\ud800""#,
        r#""\udfff tail""#,
        r#""a\u0000b""#,
        "\"\u{2028}\u{2029}\"",
        r#"{"":1,"":2}"#,
        r#"{"":{"":[]}}"#,
        "1e308",
        "-1e-308",
        "-0",
        "12345678901234567890123",
        "9007199254740993",
        "-9223372036854775809",
        "1.0",
        "0.1",
        &deep,
        &deep_obj,
    ];
    for (i, v) in values.iter().enumerate() {
        let reply = call_raw(&mut c, &format!("e{i}"), "echo", &format!("[{v}]")).await;
        let f = raw_fields(&reply);
        assert_eq!(f["success"], "true", "{reply}");
        assert_eq!(f["result"], *v, "echo changed the value");
    }
    // broadcast payloads are relayed as they came, too
    c.send_text(r#"{"type":"rpc","id":"s","method":"shout","args":["\ud800",false]}"#)
        .await;
    match c.recv().await {
        Frame::Text(t) => assert_eq!(t, r#"{"type":"shout","payload":"\ud800"}"#),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn echo_without_an_argument_answers_without_result() {
    let (_addr, mut c) = counter("void").await;
    let reply = call_raw(&mut c, "v", "echo", "[]").await;
    let f = raw_fields(&reply);
    assert_eq!(f["success"], "true");
    assert_eq!(f["done"], "true");
    assert!(!f.contains_key("result"), "{reply}");
    // an explicit null is a result
    let reply = call_raw(&mut c, "n", "echo", "[null]").await;
    assert_eq!(raw_fields(&reply)["result"], "null");
}

#[tokio::test]
async fn unreadable_arguments_fail_with_a_clear_error() {
    let (_addr, mut c) = counter("args").await;
    let r = call_raw(&mut c, "a", "add", r#"["\ud800",1]"#).await;
    let v: Value = serde_json::from_str(&r.replace("\\ud800", "?")).unwrap();
    assert_eq!(v["success"], json!(false), "{r}");
    assert!(
        v["error"].as_str().unwrap().starts_with("argument 0"),
        "{r}"
    );
    // the agent did not run with no arguments: the count is unchanged
    let r = call_raw(&mut c, "i", "increment", r#"[{"deep":[[[[]]]]}]"#).await;
    let v: Value = serde_json::from_str(&r).unwrap();
    assert_eq!(v["success"], json!(false), "{r}");
    assert!(
        v["error"].as_str().unwrap().starts_with("argument 0"),
        "{r}"
    );
    assert_eq!(c.call_ok("increment", json!([0])).await, json!(0));
}

#[tokio::test]
async fn contract_state_keeps_any_json_with_a_numeric_count() {
    let dir = std::env::temp_dir().join(format!("agentwire-fidelity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = spawn(counter_server(Storage::sqlite(&dir))).await;
    let path = "/agents/counter-agent/big";
    let mut a = Client::connect(addr, &format!("{path}?_pk=a"))
        .await
        .unwrap();
    let mut b = Client::connect(addr, &format!("{path}?_pk=b"))
        .await
        .unwrap();
    a.connect_frames().await;
    b.connect_frames().await;

    let blob = "x".repeat(600 * 1024);
    let deep = format!("{}true{}", "[".repeat(400), "]".repeat(400));
    let state = format!(
        r#"{{"count":-0,"note":"\ud83d lone \udc00","big":12345678901234567890123,"huge":1e308,"":{{"":null}},"nul":"\u0000","ls":"{}","deep":{deep},"blob":"{blob}"}}"#,
        '\u{2028}'
    );
    assert!(state.len() >= 512 * 1024);
    a.send_text(&format!(r#"{{"type":"cf_agent_state","state":{state}}}"#))
        .await;
    // the other connection receives it byte for byte
    let got = match b.recv().await {
        Frame::Text(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(raw_fields(&got)["state"], state);

    // persisted: a connection to a new server on the same data gets it at connect
    let addr2 = spawn(counter_server(Storage::sqlite(&dir))).await;
    let mut c = Client::connect(addr2, path).await.unwrap();
    let _identity = c.recv().await;
    let connect_state = match c.recv().await {
        Frame::Text(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(raw_fields(&connect_state)["state"], state);

    // a non-numeric count (or a state that is no object) is refused
    for bad in [r#"{"count":"1"}"#, r#"{"other":1}"#, "[1]", "null", "5"] {
        a.send_text(&format!(r#"{{"type":"cf_agent_state","state":{bad}}}"#))
            .await;
        let (err, _) = a.wait_for(|v| v["type"] == "cf_agent_state_error").await;
        assert_eq!(err["error"], "State update rejected", "{bad}");
    }
    // increment replaces the state with `{count}`, as `setState({count: count + by})` does
    assert_eq!(a.call_ok("increment", json!([2])).await, json!(2));
    let (st, _) = b
        .wait_for(|v| v["type"] == "cf_agent_state" && v["state"]["count"] == 2)
        .await;
    assert_eq!(st["state"], json!({"count": 2}));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn contract_sse_route_ignores_last_event_id() {
    let (addr, _c) = counter("sse").await;
    let path = "/agents/counter-agent/sse/sse";
    let (status, headers, fresh) = http(addr, "GET", path, &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let (_, _, resumed) = http(addr, "GET", path, &[("last-event-id", "3")], "").await;
    let expected: String = (1..=5)
        .map(|i| format!("id: {i}\nevent: tick\ndata: {{\"i\":{i},\"count\":0}}\n\n"))
        .chain(["event: done\ndata: bye\n\n".to_owned()])
        .collect();
    assert_eq!(fresh, expected);
    assert_eq!(resumed, expected);
}
