//! Loopback tests of the demo agents of `agentwire serve`: the page, `ChatRoom` (join,
//! presence, broadcast, leave, history) and `TaskRunner` (REST, SSE with ids, resume with
//! `Last-Event-ID`, persistence).

mod common;

use agentwire::demo::tasks::{task_tokens, TaskRunner};
use agentwire::{Limits, Storage};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DELAY: Duration = Duration::from_millis(20);

async fn demo(storage: Storage) -> SocketAddr {
    let runner = TaskRunner::with_token_delay(DELAY);
    spawn(agentwire::demo::server_with(
        storage,
        Limits::default(),
        runner,
    ))
    .await
}

/// One parsed SSE event: id, event name, data.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    id: Option<u64>,
    event: String,
    data: String,
}

fn parse_sse(body: &str) -> Vec<Ev> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (None, "message".to_owned(), None::<String>);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ").or(line.strip_prefix("event:"))
                {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data = Some(match data {
                        Some(d) => format!("{d}\n{v}"),
                        None => v.to_owned(),
                    });
                }
            }
            data.map(|data| Ev { id, event, data })
        })
        .collect()
}

fn tokens_of(evs: &[Ev]) -> (Vec<u64>, String) {
    let mut ids = Vec::new();
    let mut text = String::new();
    for e in evs.iter().filter(|e| e.event == "token") {
        ids.push(e.id.expect("token events have ids"));
        let v: Value = serde_json::from_str(&e.data).unwrap();
        text.push_str(v["token"].as_str().unwrap());
    }
    (ids, text)
}

#[tokio::test]
async fn page_is_served_at_root() {
    let addr = demo(Storage::memory()).await;
    let (status, headers, body) = http(addr, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(body.contains("new WebSocket(") && body.contains("new EventSource("));
    // self-contained: no external scripts, styles or fonts
    assert!(!body.contains("src=\"http") && !body.contains("href=\"http"));
    assert_eq!(http(addr, "GET", "/nope", &[], "").await.0, 404);
}

#[tokio::test]
async fn counter_agent_is_served_with_the_demo() {
    let addr = demo(Storage::memory()).await;
    let mut a = Client::connect(addr, "/agents/counter-agent/demo?_pk=a")
        .await
        .unwrap();
    let [id, st, _] = a.connect_frames().await;
    assert_eq!(id["agent"], "counter-agent");
    assert_eq!(st["state"], json!({"count": 0}));
    let mut b = Client::connect(addr, "/agents/counter-agent/demo?_pk=b")
        .await
        .unwrap();
    b.connect_frames().await;
    assert_eq!(a.call_ok("increment", json!([2])).await, json!(2));
    // the other tab sees the new state
    let (st, _) = b.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"], json!({"count": 2}));
}

fn presence_names(v: &Value) -> Vec<String> {
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn chat_room_join_presence_broadcast_leave() {
    let addr = demo(Storage::memory()).await;
    let mut alice = Client::connect(addr, "/agents/chat-room/lobby?username=alice&_pk=a1")
        .await
        .unwrap();
    // no protocol frames: history first, then presence
    assert_eq!(
        alice.recv_json().await,
        json!({"type": "history", "messages": []})
    );
    let p = alice.recv_json().await;
    assert_eq!(p["type"], "presence");
    assert_eq!(presence_names(&p), ["alice"]);
    assert_eq!(p["users"][0]["id"], "a1");

    let mut bob = Client::connect(addr, "/agents/chat-room/lobby?username=bob&_pk=b2")
        .await
        .unwrap();
    assert_eq!(bob.recv_json().await["type"], "history");
    let p = bob.recv_json().await;
    assert_eq!(presence_names(&p), ["alice", "bob"]);
    // alice hears only the change: bob joined (not the whole list again)
    let j = alice.recv_json().await;
    assert_eq!(
        (j["type"].as_str(), j["user"].as_str(), j["id"].as_str()),
        (Some("join"), Some("bob"), Some("b2"))
    );
    assert!(j["joinedAt"].as_u64().unwrap() > 0);

    // a message reaches everyone, the sender included, with the sender's name
    alice
        .send_json(&json!({"type": "message", "text": "hi bob"}))
        .await;
    for c in [&mut alice, &mut bob] {
        let m = c.recv_json().await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["user"], "alice");
        assert_eq!(m["text"], "hi bob");
        assert!(m["timestamp"].as_u64().unwrap() > 0);
    }
    // plain text works too; ping is answered only to the sender
    bob.send_text("hello alice").await;
    let m = alice.recv_json().await;
    assert_eq!(
        (m["user"].as_str(), m["text"].as_str()),
        (Some("bob"), Some("hello alice"))
    );
    assert_eq!(bob.recv_json().await["text"], "hello alice");
    bob.send_text("ping").await;
    assert_eq!(bob.recv().await, Frame::Text("pong".into()));
    // a malformed message is refused to its sender only
    bob.send_json(&json!({"type": "message"})).await;
    assert_eq!(bob.recv_json().await["type"], "error");

    // bob leaves: alice gets the notice with his id, nothing more
    bob.close(1000).await;
    let l = alice.recv_json().await;
    assert_eq!(
        (l["type"].as_str(), l["user"].as_str(), l["id"].as_str()),
        (Some("leave"), Some("bob"), Some("b2"))
    );
    assert!(alice
        .recv_within(Duration::from_millis(100))
        .await
        .is_none());

    // a newcomer gets the history, oldest first
    let mut carol = Client::connect(addr, "/agents/chat-room/lobby?username=carol&_pk=c3")
        .await
        .unwrap();
    let h = carol.recv_json().await;
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hi bob", "hello alice"]);
    // rooms are separate instances
    let mut other = Client::connect(addr, "/agents/chat-room/other?username=dan")
        .await
        .unwrap();
    assert_eq!(
        other.recv_json().await,
        json!({"type": "history", "messages": []})
    );
}

#[tokio::test]
async fn task_runner_rest_sse_and_resume() {
    let addr = demo(Storage::memory()).await;
    let base = "/agents/task-runner/demo/tasks";
    let prompt = "Explain   streaming";
    let started = Instant::now();
    let created = create_task(addr, base, prompt).await;
    let id = created["id"].as_u64().unwrap();
    assert_eq!(id, 1);
    assert_eq!(created["status"], "running");
    let expected = task_tokens(id, "Explain streaming"); // whitespace is normalised
    let k = expected.len();
    assert!(k > 20);
    assert_eq!(created["tokens"], json!(k));
    assert_eq!(created["events"], format!("{base}/1/events"));

    // status while running
    let (status, _, body) = http(addr, "GET", &format!("{base}/1"), &[], "").await;
    assert_eq!(status, 200);
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["status"], "running");
    assert_eq!(st["prompt"], "Explain streaming");
    assert!(st["emitted"].as_u64().unwrap() < k as u64);

    // the whole stream: K token events with ids 1..=K, paced, then `done`
    let (status, headers, body) = http(addr, "GET", &format!("{base}/1/events"), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        started.elapsed() >= DELAY * (k as u32 - 1),
        "tokens are produced over time"
    );
    let evs = parse_sse(&body);
    let (ids, text) = tokens_of(&evs);
    assert_eq!(ids, (1..=k as u64).collect::<Vec<_>>());
    assert_eq!(text, expected.concat());
    let last = evs.last().unwrap();
    assert_eq!(last.event, "done");
    assert_eq!(last.id, None);
    assert_eq!(
        serde_json::from_str::<Value>(&last.data).unwrap(),
        json!({"id": 1, "tokens": k})
    );

    // resuming after event 5 gives 6..=K, no duplicates, then `done`
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("{base}/1/events"),
        &[("last-event-id", "5")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let evs = parse_sse(&body);
    let (ids, text) = tokens_of(&evs);
    assert_eq!(ids, (6..=k as u64).collect::<Vec<_>>());
    assert_eq!(text, expected[5..].concat());
    assert_eq!(evs.last().unwrap().event, "done");
    // nothing missing: 204 (stops EventSource from reconnecting)
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("{base}/1/events"),
        &[("last-event-id", &k.to_string())],
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""));

    // done: the status has the whole output
    let (_, _, body) = http(addr, "GET", &format!("{base}/1"), &[], "").await;
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["status"], "done");
    assert_eq!(st["emitted"], json!(k));
    assert_eq!(st["output"], expected.concat());

    // a second task gets the next id; the list has both, newest first
    let (status, _, body) = http(addr, "POST", base, &[], "plain text prompt").await;
    assert_eq!(status, 201);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], 2);
    let (_, _, body) = http(addr, "GET", base, &[], "").await;
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["id"], 2);
    assert_eq!(list[0]["prompt"], "plain text prompt");
    assert_eq!(list[1]["id"], 1);

    // errors
    assert_eq!(http(addr, "POST", base, &[], "   ").await.0, 400);
    assert_eq!(
        http(addr, "POST", base, &[], r#"{"prompt": 3}"#).await.0,
        400
    );
    assert_eq!(
        http(addr, "GET", &format!("{base}/99"), &[], "").await.0,
        404
    );
    assert_eq!(
        http(addr, "GET", &format!("{base}/x/events"), &[], "")
            .await
            .0,
        404
    );
    assert_eq!(
        http(addr, "DELETE", &format!("{base}/1"), &[], "").await.0,
        405
    );
}

#[tokio::test]
async fn tasks_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("agentwire-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = "/agents/task-runner/keep/tasks";
    let addr = demo(Storage::sqlite(&dir)).await;
    let (status, _, _) = http(addr, "POST", base, &[], r#"{"prompt":"persist me"}"#).await;
    assert_eq!(status, 201);

    // a second server on the same data directory
    let addr2 = demo(Storage::sqlite(&dir)).await;
    tokio::time::sleep(DELAY * 80).await;
    let (status, _, body) = http(addr2, "GET", &format!("{base}/1"), &[], "").await;
    assert_eq!(status, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["prompt"], "persist me");
    assert_eq!(st["status"], "done");
    assert_eq!(st["output"], task_tokens(1, "persist me").concat());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn presence_counts_tabs_and_streams_a_paced_countdown() {
    let addr = demo(Storage::memory()).await;
    let mut a = Client::connect(addr, "/agents/presence/demo?_pk=a")
        .await
        .unwrap();
    // no protocol frames: the count comes first
    assert_eq!(
        a.recv_json().await,
        json!({"type": "presence", "connections": 1})
    );
    let mut b = Client::connect(addr, "/agents/presence/demo?_pk=b")
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv_json().await["connections"], 2);
    }

    // countdown(3, 40): chunks 3, 2, 1 at least 40 ms apart, then "liftoff"
    a.send_json(&json!({"type": "rpc", "id": "c1", "method": "countdown", "args": [3, 40]}))
        .await;
    let mut chunks = Vec::new();
    let start = Instant::now();
    let reply = loop {
        let v = a.recv_json().await;
        assert_eq!(v["id"], "c1", "{v}");
        if v["done"] == json!(false) {
            chunks.push((v["result"].clone(), start.elapsed()));
        } else {
            break v;
        }
    };
    assert_eq!(
        chunks.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        [json!(3), json!(2), json!(1)]
    );
    assert!(chunks[2].1 - chunks[0].1 >= Duration::from_millis(80));
    assert_eq!(
        (reply["success"].clone(), reply["result"].clone()),
        (json!(true), json!("liftoff"))
    );
    let bad = a.call("countdown", json!([1000, 10])).await;
    assert_eq!(bad["success"], json!(false), "{bad}");

    b.close(1000).await;
    assert_eq!(
        a.recv_json().await,
        json!({"type": "presence", "connections": 1})
    );

    // the page's traffic figures: the process's metrics as JSON
    let (status, headers, body) = http(addr, "GET", "/stats", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert!(s["messages_out"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["wire_bytes_out"].as_u64().unwrap() > 0, "{s}");
    assert!(s["websockets"].as_i64().unwrap() >= 1, "{s}");
}
