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

// ===== handles =====

use agentwire::{Agent, AgentHandle, Call, Context, HandleError, Reply, RpcError};
use std::time::Duration;

/// An agent whose `ask` streams "tokens" from a task, as an LLM call would, and records the
/// answer in its state through a handle; `relay(n)` increments a `CounterAgent` through
/// another handle.
#[derive(Default)]
struct Llm;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Answers {
    answers: Vec<String>,
}

impl Agent for Llm {
    type State = Answers;

    fn initial_state(&self) -> Option<Answers> {
        Some(Answers { answers: vec![] })
    }

    async fn on_call(&mut self, cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        match call.method() {
            "ask" => {
                let prompt: String = call.arg(0)?;
                let reply = call.defer();
                let me = cx.handle();
                cx.spawn(async move {
                    let mut text = String::new();
                    for word in prompt.split(' ') {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        if reply.send(word).is_err() {
                            return; // the caller is gone
                        }
                        text.push_str(word);
                    }
                    let saved = text.clone();
                    let r = me
                        .update_state(move |s| {
                            let mut s = s.cloned().unwrap_or(Answers { answers: vec![] });
                            s.answers.push(saved);
                            s
                        })
                        .await;
                    reply.finish(match r {
                        Ok(()) => Reply::json(&text),
                        Err(e) => Err(RpcError::new(e)),
                    });
                })?;
                Ok(Reply::deferred())
            }
            "relay" => {
                let n: i64 = call.arg(0)?;
                let counter = cx.agent::<CounterAgent>("relayed").map_err(RpcError::new)?;
                let reply = call.defer();
                cx.spawn(async move {
                    let r: Result<serde_json::Value, _> = counter.call("increment", &[n]).await;
                    reply.finish(r.map_err(RpcError::new).and_then(|v| Reply::json(&v)));
                })?;
                Ok(Reply::deferred())
            }
            "forget" => {
                drop(call.defer());
                Ok(Reply::deferred())
            }
            "deferFail" => {
                let _later = call.defer();
                Err(RpcError::new("failed after deferring"))
            }
            "badDefer" => Ok(Reply::deferred()),
            "quick" => Reply::json("quick"),
            _ => Err(RpcError::NoSuchMethod),
        }
    }
}

fn both(limits: Limits) -> Server {
    Server::builder()
        .agent("CounterAgent", |_| CounterAgent::new())
        .agent("Llm", |_| Llm)
        .storage(Storage::memory())
        .limits(limits)
        .build()
}

#[tokio::test]
async fn a_streaming_call_from_a_task_changes_state_through_a_handle() {
    let server = both(Limits::default());
    let addr = spawn(server.clone()).await;
    let mut a = Client::connect(addr, "/agents/llm/x?_pk=a").await.unwrap();
    a.connect_frames().await;
    a.send_json(&json!({"type": "rpc", "id": "q", "method": "ask", "args": ["one two three"]}))
        .await;
    // another call answers while the stream runs
    assert_eq!(a.call_ok("quick", json!([])).await, json!("quick"));
    let mut chunks = Vec::new();
    let mut state_seen = false;
    loop {
        let v = a.recv_json().await;
        if v["type"] == "cf_agent_state" {
            assert_eq!(v["state"], json!({"answers": ["onetwothree"]}));
            state_seen = true;
        } else if v["id"] == "q" && v["done"] == json!(false) {
            chunks.push(v["result"].clone());
        } else if v["id"] == "q" {
            assert_eq!(v["result"], json!("onetwothree"), "{v}");
            break;
        }
    }
    assert_eq!(chunks, vec![json!("one"), json!("two"), json!("three")]);
    assert!(state_seen, "the state is broadcast before the final reply");
    // the state is durable and readable through a handle
    let h: AgentHandle<Llm> = server.agent::<Llm>("x").unwrap();
    assert_eq!(
        h.state().await.unwrap(),
        Some(Answers {
            answers: vec!["onetwothree".into()]
        })
    );
}

#[tokio::test]
async fn deferred_calls_always_answer_once() {
    let addr = spawn(both(Limits::default())).await;
    let mut a = Client::connect(addr, "/agents/llm/d").await.unwrap();
    a.connect_frames().await;
    let r = a.call("forget", json!([])).await;
    assert_eq!(r["error"], json!("Call dropped without a reply"), "{r}");
    let r = a.call("deferFail", json!([])).await;
    assert_eq!(r["error"], json!("failed after deferring"), "{r}");
    let r = a.call("badDefer", json!([])).await;
    assert_eq!(r["success"], json!(false), "{r}");
    // exactly one terminal frame per call: the next call's reply comes next
    a.send_json(&json!({"type": "rpc", "id": "last", "method": "quick", "args": []}))
        .await;
    let v = a.recv_json().await;
    assert_eq!(v["id"], "last", "{v}");
}

#[tokio::test]
async fn a_hook_reaches_another_agent_through_a_handle() {
    let server = both(Limits::default());
    let addr = spawn(server.clone()).await;
    let mut c = Client::connect(addr, "/agents/counter-agent/relayed")
        .await
        .unwrap();
    c.connect_frames().await;
    let mut a = Client::connect(addr, "/agents/llm/r").await.unwrap();
    a.connect_frames().await;
    assert_eq!(a.call_ok("relay", json!([4])).await, json!(4));
    // the counter's client sees the change
    let (st, _) = c.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"], json!({"count": 4}));
}

#[tokio::test]
async fn server_handles_call_set_state_broadcast_send_and_run_closures() {
    let server = both(Limits::default());
    let addr = spawn(server.clone()).await;
    let h = server.agent::<CounterAgent>("h").unwrap();
    assert_eq!(h.name(), "h");
    assert_eq!(h.agent_namespace(), "counter-agent");
    // before any client: the call starts the instance
    assert_eq!(h.call::<i64, _>("increment", &[5]).await.unwrap(), 5);
    let mut a = Client::connect(addr, "/agents/counter-agent/h?_pk=a")
        .await
        .unwrap();
    let [_, st, _] = a.connect_frames().await;
    assert_eq!(st["state"], json!({"count": 5}));
    let mut b = Client::connect(addr, "/agents/counter-agent/h?_pk=b")
        .await
        .unwrap();
    b.connect_frames().await;

    // set_state: persisted, broadcast to both
    let next = serde_json::from_value(json!({"count": 9})).unwrap();
    h.set_state(next).await.unwrap();
    for c in [&mut a, &mut b] {
        let (st, _) = c.wait_for(|v| v["type"] == "cf_agent_state").await;
        assert_eq!(st["state"], json!({"count": 9}));
    }
    assert_eq!(h.state().await.unwrap().unwrap().count().as_i64(), Some(9));
    // errors of the method come back as RPC errors; chunks of a stream in order
    let e = h.call::<(), _>("fail", &["nope"]).await.unwrap_err();
    assert!(
        matches!(e, HandleError::Rpc(RpcError::Failed(ref m)) if m == "nope"),
        "{e}"
    );
    let mut chunks = Vec::new();
    let done = h
        .call_streaming("countdown", &[3], |c| {
            chunks.push(c.unwrap().get().to_owned())
        })
        .await
        .unwrap();
    assert_eq!(chunks, ["3", "2", "1"]);
    assert_eq!(done.unwrap().get(), "\"liftoff\"");
    // a deferred method through a handle
    assert_eq!(h.call::<u64, _>("slow", &[10]).await.unwrap(), 10);

    // broadcast without `a`, then to `a` only
    assert_eq!(h.broadcast("to-others", &["a"]).await.unwrap(), 1);
    let (v, _) = b.wait_for(|v| v.is_null()).await; // a non-JSON text frame reads as null
    assert!(v.is_null());
    assert_eq!(h.send_to("a", "just-a").await.unwrap(), 1);
    assert_eq!(h.send_to("nobody", "x").await.unwrap(), 0);
    match a.recv().await {
        Frame::Text(t) => assert_eq!(t, "just-a"),
        f => panic!("{f:?}"),
    }
    // an SSE stream's log
    assert_eq!(h.sse_publish("s", Some("e"), "1").await.unwrap(), 1);
    assert_eq!(h.sse_publish("s", None, "2").await.unwrap(), 2);
    // a closure inside the instance
    let ids = h
        .with(|_agent, cx| {
            cx.connections()
                .map(|c| c.id().to_owned())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
    assert_eq!(ids, ["a", "b"]);
    // a panicking closure fails the operation, not the instance
    let e = h.with(|_, _| -> () { panic!("inside") }).await.unwrap_err();
    assert!(matches!(e, HandleError::Unavailable), "{e}");
    assert_eq!(h.call::<i64, _>("increment", &[1]).await.unwrap(), 10);
}

#[tokio::test]
async fn handles_wake_a_hibernated_instance_and_keep_order() {
    let limits = Limits::default().with_idle_timeout(Some(Duration::from_millis(100)));
    let server = both(limits);
    let addr = spawn(server.clone()).await;
    let mut a = Client::connect(addr, "/agents/counter-agent/w?_pk=a")
        .await
        .unwrap();
    a.connect_frames().await;
    assert_eq!(a.call_ok("increment", json!([2])).await, json!(2));
    // let it hibernate (the socket stays open)
    let mut slept = false;
    for _ in 0..20 {
        // (asking resets the idle timer: ask less often than it runs out)
        tokio::time::sleep(Duration::from_millis(250)).await;
        let info = server.instance_info("CounterAgent", "w").await.unwrap();
        if !info.awake {
            slept = true;
            break;
        }
    }
    assert!(slept, "the instance did not hibernate");
    let h = server.agent::<CounterAgent>("w").unwrap();
    assert_eq!(h.state().await.unwrap().unwrap().count().as_i64(), Some(2));
    let info = server.instance_info("CounterAgent", "w").await.unwrap();
    assert!(info.awake);
    assert_eq!(info.starts, 2);
    // handle operations queued after a client's call see its effect
    a.send_json(&json!({"type": "rpc", "id": "x", "method": "increment", "args": [3]}))
        .await;
    let (v, _) = a.wait_for(|v| v["id"] == "x").await;
    assert_eq!(v["result"], json!(5));
    assert_eq!(h.call::<i64, _>("increment", &[1]).await.unwrap(), 6);
}

#[test]
fn unknown_and_ambiguous_types_are_refused() {
    let server = Server::builder()
        .agent("CounterAgent", |_| CounterAgent::new())
        .agent("OtherCounter", |_| CounterAgent::new())
        .build();
    assert!(matches!(
        server.agent::<Llm>("x").unwrap_err(),
        HandleError::NotRegistered(_)
    ));
    assert!(matches!(
        server.agent::<CounterAgent>("x").unwrap_err(),
        HandleError::Ambiguous(_)
    ));
    let h = server
        .agent_in::<CounterAgent>("OtherCounter", "x")
        .unwrap();
    assert_eq!(h.agent_namespace(), "other-counter");
    assert!(server.agent_in::<Llm>("OtherCounter", "x").is_err());
}

// ===== props, connections, socket errors =====

use agentwire::{BoxError, Connection, SocketError};
use std::sync::{Arc, Mutex};

type Log = Arc<Mutex<Vec<String>>>;

/// Records its props at start and the errors it is told about.
struct Recorder {
    log: Log,
    props: Option<Value>,
}

impl Agent for Recorder {
    type State = Value;

    async fn on_start(&mut self, cx: &mut Context<Self>) -> Result<(), BoxError> {
        self.props = cx.props().cloned();
        Ok(())
    }

    async fn on_call(&mut self, _cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        match call.method() {
            "props" => Reply::json(&self.props),
            _ => Err(RpcError::NoSuchMethod),
        }
    }

    async fn on_error(
        &mut self,
        _cx: &mut Context<Self>,
        conn: Option<&Connection>,
        error: &BoxError,
    ) {
        let code = error.downcast_ref::<SocketError>().map(|e| e.code.0);
        self.log.lock().unwrap().push(format!(
            "{} {:?} {}",
            conn.map_or("-", |c| c.id()),
            code,
            conn.map_or("-", |c| c.server())
        ));
    }
}

fn recorder(log: &Log) -> Server {
    let log = log.clone();
    Server::builder()
        .agent_with_props("Recorder", json!({"k": 1}), move |_| Recorder {
            log: log.clone(),
            props: None,
        })
        .agent("CounterAgent", |_| CounterAgent::new())
        .build()
}

#[tokio::test]
async fn on_start_gets_the_class_props_or_those_of_start() {
    let log = Log::default();
    let server = recorder(&log);
    let addr = spawn(server.clone()).await;
    let mut a = Client::connect(addr, "/agents/recorder/a").await.unwrap();
    // no state: identity and MCP servers only
    a.recv_json().await;
    a.recv_json().await;
    assert_eq!(a.call_ok("props", json!([])).await, json!({"k": 1}));
    let b = server.agent::<Recorder>("b").unwrap();
    assert!(b.start(Some(json!({"k": 2}))).await.unwrap());
    assert!(!b.start(Some(json!({"k": 3}))).await.unwrap());
    assert_eq!(
        b.call::<Value, _>("props", &()).await.unwrap(),
        json!({"k": 2})
    );
}

#[tokio::test]
async fn on_error_hears_of_a_peer_breaking_the_protocol() {
    let log = Log::default();
    let addr = spawn(recorder(&log)).await;
    let mut a = Client::connect(addr, "/agents/recorder/p?_pk=bad")
        .await
        .unwrap();
    a.recv_json().await;
    a.recv_json().await;
    // a masked frame with the reserved opcode 3
    a.send_raw(&[0x83, 0x80, 1, 2, 3, 4]).await;
    let mut closed = None;
    for _ in 0..10 {
        if let Frame::Close(code, _) = a.recv().await {
            closed = Some(code);
            break;
        }
    }
    assert_eq!(closed, Some(1002));
    for _ in 0..100 {
        if !log.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*log.lock().unwrap(), ["bad Some(1002) p"]);
}

#[tokio::test]
async fn connections_by_id_and_tag_and_their_state() {
    let server = both(Limits::default());
    let addr = spawn(server.clone()).await;
    let mut a = Client::connect(addr, "/agents/counter-agent/t?_pk=a&tag=blue")
        .await
        .unwrap();
    a.connect_frames().await;
    let mut b = Client::connect(addr, "/agents/counter-agent/t?_pk=b&tag=red")
        .await
        .unwrap();
    b.connect_frames().await;
    let mut c = Client::connect(addr, "/agents/counter-agent/t?_pk=c&tag=blue")
        .await
        .unwrap();
    c.connect_frames().await;
    let h = server.agent::<CounterAgent>("t").unwrap();
    let (blue, red, a_server, none) = h
        .with(|_, cx| {
            let ids = |tag: &str| {
                cx.connections_tagged(tag)
                    .map(|c| c.id().to_owned())
                    .collect::<Vec<_>>()
            };
            (
                ids("blue"),
                ids("red"),
                cx.connection("a").map(|c| c.server().to_owned()),
                cx.connection("zz").is_none(),
            )
        })
        .await
        .unwrap();
    assert_eq!(blue, ["a", "c"]);
    assert_eq!(red, ["b"]);
    assert_eq!(a_server.as_deref(), Some("t"));
    assert!(none);
    // the id is a tag too
    assert_eq!(
        h.with(|_, cx| cx.connections_tagged("b").count())
            .await
            .unwrap(),
        1
    );

    // per-connection state: set by a call, updated from outside, seen by the next call
    assert_eq!(
        a.call_ok("setConnState", json!([{"n": 1}])).await,
        json!({"n": 1})
    );
    let updated = h
        .with(|_, cx| {
            cx.connection("a")
                .map(|c| c.update_state(|s| json!({"n": s["n"].as_i64().unwrap_or(0) + 1})))
        })
        .await
        .unwrap();
    assert_eq!(updated, Some(json!({"n": 2})));
    let me = a.call_ok("whoami", json!([])).await;
    assert_eq!(me["state"], json!({"n": 2}));
    assert_eq!(me["tags"], json!(["a", "blue"]));
    // other connections keep their own state
    assert_eq!(b.call_ok("whoami", json!([])).await["state"], Value::Null);
    // a closed connection leaves the lists
    c.close(1000).await;
    for _ in 0..100 {
        let n = h
            .with(|_, cx| cx.connections_tagged("blue").count())
            .await
            .unwrap();
        if n == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the closed connection is still listed");
}

#[tokio::test]
async fn instance_tasks_are_bounded() {
    let limits = Limits::default().with_max_instance_tasks(2);
    let addr = spawn(
        Server::builder()
            .agent("CounterAgent", |_| CounterAgent::new())
            .limits(limits)
            .build(),
    )
    .await;
    let mut a = Client::connect(addr, "/agents/counter-agent/b")
        .await
        .unwrap();
    a.connect_frames().await;
    for i in 0..3 {
        a.send_json(
            &json!({"type": "rpc", "id": format!("s{i}"), "method": "slow", "args": [300]}),
        )
        .await;
    }
    // the third is refused at once; the first two answer later
    let (v, _) = a.wait_for(is_final).await;
    assert_eq!(v["id"], "s2", "{v}");
    assert_eq!(v["error"], "too many tasks running on this agent instance");
    for _ in 0..2 {
        let (v, _) = a.wait_for(is_final).await;
        assert_eq!(v["result"], json!(300), "{v}");
    }
    // room again once they finished
    assert_eq!(a.call_ok("slow", json!([1])).await, json!(1));
}

#[tokio::test]
async fn a_streaming_task_ends_when_its_caller_leaves() {
    let server = both(Limits::default());
    let addr = spawn(server.clone()).await;
    let mut a = Client::connect(addr, "/agents/llm/gone").await.unwrap();
    a.connect_frames().await;
    let words = vec!["w"; 100].join(" "); // 100 tokens, 30 ms apart
    a.send_json(&json!({"type": "rpc", "id": "q", "method": "ask", "args": [words]}))
        .await;
    let (first, _) = a.wait_for(|v| v["id"] == "q").await;
    assert_eq!(first["done"], json!(false));
    let h = server.agent::<Llm>("gone").unwrap();
    assert_eq!(h.with(|_, cx| cx.running_tasks()).await.unwrap(), 1);
    a.close(1000).await;
    drop(a);
    // the next chunk fails, the task returns without storing an answer
    for _ in 0..200 {
        if h.with(|_, cx| cx.running_tasks()).await.unwrap() == 0 {
            assert_eq!(h.state().await.unwrap().unwrap().answers.len(), 0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the task kept running after its caller left");
}
