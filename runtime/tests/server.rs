//! Loopback tests of the server: protocol behaviour, isolation, concurrency, SSE resume,
//! hibernation, shutdown.

mod common;

use agentwire::{Limits, Storage};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn mcp() -> Value {
    json!({"type":"cf_agent_mcp_servers","mcp":{"prompts":[],"resources":[],"servers":{},"tools":[]}})
}

#[tokio::test]
async fn connect_sequence_then_rpc() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    let mut c = Client::connect(addr, "/agents/test-agent/one?_pk=abc&tag=blue")
        .await
        .unwrap();
    let [id, st, m] = c.connect_frames().await;
    assert_eq!(
        id,
        json!({"type":"cf_agent_identity","name":"one","agent":"test-agent","stateFollows":true})
    );
    assert_eq!(st, json!({"type":"cf_agent_state","state":{"count":0}}));
    assert_eq!(m, mcp());

    assert_eq!(c.call_ok("add", json!([2, 3])).await, json!(5));
    let void = c.call("nothing", json!([])).await;
    assert_eq!(
        void,
        json!({"type":"rpc","id":void["id"],"success":true,"done":true})
    );
    let unknown = c.call("nope", json!([])).await;
    assert_eq!(unknown["error"], "Method nope does not exist");
    assert!(unknown.get("done").is_none() && unknown.get("result").is_none());
    assert_eq!(
        c.call("hidden", json!([])).await["error"],
        "Method hidden is not callable"
    );
    let who = c.call_ok("whoami", json!([])).await;
    assert_eq!(who["id"], "abc");
    assert_eq!(who["tags"], json!(["abc", "blue"]));

    // streaming: chunks then the final value
    c.send_json(&json!({"type":"rpc","id":"s1","method":"countdown","args":[3]}))
        .await;
    let mut seen = Vec::new();
    loop {
        let f = c.recv_json().await;
        seen.push((f["done"].clone(), f["result"].clone()));
        if f["done"] == json!(true) {
            break;
        }
    }
    assert_eq!(
        seen,
        vec![
            (json!(false), json!(3)),
            (json!(false), json!(2)),
            (json!(false), json!(1)),
            (json!(true), json!("liftoff"))
        ]
    );

    // non-protocol text and binary reach on_message (the test agent echoes)
    c.send_text("hello").await;
    assert_eq!(c.recv().await, Frame::Text("hello".into()));
    let weak_rpc = r#"{"type":"rpc","id":7,"method":"add","args":[1,1]}"#;
    c.send_text(weak_rpc).await;
    assert_eq!(c.recv().await, Frame::Text(weak_rpc.into()));
    c.send_binary(&[1, 2, 3]).await;
    assert_eq!(c.recv().await, Frame::Binary(vec![1u8, 2, 3].into()));
}

#[tokio::test]
async fn client_state_updates_follow_the_rules() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    let path = "/agents/test-agent/st";
    let mut a = Client::connect(addr, &format!("{path}?_pk=a"))
        .await
        .unwrap();
    let mut b = Client::connect(addr, &format!("{path}?_pk=b"))
        .await
        .unwrap();
    let mut ro = Client::connect(addr, &format!("{path}?_pk=r&readonly=1"))
        .await
        .unwrap();
    let mut np = Client::connect(addr, &format!("{path}?_pk=n&protocol=0"))
        .await
        .unwrap();
    a.connect_frames().await;
    b.connect_frames().await;
    ro.connect_frames().await;

    let update = r#"{"state":{"count":41},"type":"cf_agent_state"}"#;
    a.send_text(update).await;
    // relayed byte for byte to the others, not to the sender nor to the no-protocol socket
    assert_eq!(b.recv().await, Frame::Text(update.into()));
    assert_eq!(ro.recv().await, Frame::Text(update.into()));
    assert_eq!(a.recv_within(Duration::from_millis(200)).await, None);
    assert_eq!(np.recv_within(Duration::from_millis(200)).await, None);

    // validation and readonly refusals go to the sender only
    a.send_text(r#"{"state":{"count":-1},"type":"cf_agent_state"}"#)
        .await;
    assert_eq!(
        a.recv_json().await,
        json!({"type":"cf_agent_state_error","error":"State update rejected"})
    );
    a.send_text(r#"{"state":{"count":"x"},"type":"cf_agent_state"}"#)
        .await;
    assert_eq!(a.recv_json().await["error"], "State update rejected");
    ro.send_text(r#"{"state":{"count":9},"type":"cf_agent_state"}"#)
        .await;
    assert_eq!(
        ro.recv_json().await,
        json!({"type":"cf_agent_state_error","error":"Connection is readonly"})
    );
    let r = ro.call("increment", json!([1])).await;
    assert_eq!(r["error"], "Connection is readonly");
    assert_eq!(ro.call_ok("add", json!([1, 1])).await, json!(2));
    assert_eq!(b.recv_within(Duration::from_millis(200)).await, None);

    // server-side set_state reaches everyone (the caller before its reply), not no-protocol
    b.send_json(&json!({"type":"rpc","id":"i","method":"increment","args":[1]}))
        .await;
    assert_eq!(
        b.recv_json().await,
        json!({"state":{"count":42},"type":"cf_agent_state"})
    );
    assert_eq!(b.recv_json().await["result"], json!(42));
    assert_eq!(a.recv_json().await["state"], json!({"count":42}));
    assert_eq!(np.call_ok("add", json!([40, 2])).await, json!(42));
    assert_eq!(np.recv_within(Duration::from_millis(200)).await, None);

    // persisted: a new connection starts from it
    let mut c = Client::connect(addr, path).await.unwrap();
    assert_eq!(c.connect_frames().await[1]["state"], json!({"count":42}));
}

#[tokio::test]
async fn many_clients_updating_one_instance_lose_nothing() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    const CLIENTS: usize = 12;
    const CALLS: usize = 25;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, &format!("/agents/test-agent/race?_pk=c{i}"))
                .await
                .unwrap();
            c.connect_frames().await;
            for _ in 0..CALLS {
                c.call_ok("increment", json!([1])).await;
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let total = (CLIENTS * CALLS) as i64;
    // every client ends on the same final state (the last state frame it received)
    for c in &mut clients {
        while c.recv_within(Duration::from_millis(300)).await.is_some() {}
        assert_eq!(c.last_state, Some(json!({ "count": total })));
    }
    let (status, _, body) = http(addr, "GET", "/agents/test-agent/race/status", &[], "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"]["count"], json!(total));
}

#[tokio::test]
async fn malformed_or_oversized_input_only_affects_its_own_socket() {
    let mut limits = Limits::default();
    limits.ws = limits
        .ws
        .with_max_message(64 * 1024)
        .with_max_frame_payload(64 * 1024);
    let addr = spawn(server_with(Storage::memory(), limits)).await;
    let path = "/agents/test-agent/iso";
    let mut good = Client::connect(addr, path).await.unwrap();
    good.connect_frames().await;

    // an unmasked client frame is a protocol error (1002)
    let mut bad = Client::connect(addr, path).await.unwrap();
    bad.connect_frames().await;
    bad.send_raw(&[0x81, 0x02, b'h', b'i']).await;
    assert_eq!(
        bad.recv().await.code_only(),
        Frame::Close(1002, String::new())
    );

    // a frame declaring 1 MiB is refused before it is buffered (1009)
    let mut big = Client::connect(addr, path).await.unwrap();
    big.connect_frames().await;
    let mut head = vec![0x82, 0xFF];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    big.send_raw(&head).await;
    assert_eq!(
        big.recv().await.code_only(),
        Frame::Close(1009, String::new())
    );

    // invalid UTF-8 in a text frame (1007)
    let mut utf = Client::connect(addr, path).await.unwrap();
    utf.connect_frames().await;
    utf.send_raw(&[0x81, 0x82, 0, 0, 0, 0, 0xC3, 0x28]).await;
    assert_eq!(
        utf.recv().await.code_only(),
        Frame::Close(1007, String::new())
    );

    // garbage instead of an HTTP request
    let mut junk = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut junk, b"\x00\x01\x02 not http\r\n\r\n")
        .await
        .unwrap();

    // the well-behaved socket and the server carry on
    assert_eq!(good.call_ok("add", json!([20, 22])).await, json!(42));
    let mut again = Client::connect(addr, path).await.unwrap();
    assert_eq!(again.connect_frames().await[0]["type"], "cf_agent_identity");
}

trait CodeOnly {
    fn code_only(self) -> Frame;
}

impl CodeOnly for Frame {
    fn code_only(self) -> Frame {
        match self {
            Frame::Close(c, _) => Frame::Close(c, String::new()),
            f => f,
        }
    }
}

#[tokio::test]
async fn routing_http_and_fallback() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    let (s, _, body) = http(addr, "GET", "/agents/no-such-agent/x", &[], "").await;
    assert_eq!((s, body.as_str()), (400, "Invalid request"));
    assert_eq!(
        Client::connect(addr, "/agents/no-such-agent/x").await.err(),
        Some(400)
    );
    let (s, _, body) = http(addr, "GET", "/elsewhere", &[], "").await;
    assert_eq!((s, body.as_str()), (418, "fallback"));
    let (s, h, body) = http(
        addr,
        "POST",
        "/agents/test-agent/h%20i/status?",
        &[],
        "payload",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "application/json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "h%20i");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body"], "payload");
    let (s, _, _) = http(addr, "GET", "/agents/test-agent/x/other", &[], "").await;
    assert_eq!(s, 404);
    let (s, _, _) = http(addr, "GET", "/agents/test-agent/x/boom", &[], "").await;
    assert_eq!(s, 500);
    // on_connect may refuse the upgrade with an HTTP answer…
    assert_eq!(
        Client::connect(addr, "/agents/test-agent/x?auth=no")
            .await
            .err(),
        Some(401)
    );
    // …or accept it and close at once with the agent's code
    let mut denied = Client::connect(addr, "/agents/test-agent/x?deny=1")
        .await
        .unwrap();
    denied.connect_frames().await;
    assert_eq!(denied.recv().await, Frame::Close(4001, "denied".into()));
}

#[tokio::test]
async fn broadcast_excludes_ids_and_reaches_no_protocol_sockets() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    let path = "/agents/test-agent/bc";
    let mut a = Client::connect(addr, &format!("{path}?_pk=a"))
        .await
        .unwrap();
    let mut b = Client::connect(addr, &format!("{path}?_pk=b"))
        .await
        .unwrap();
    let mut np = Client::connect(addr, &format!("{path}?_pk=n&protocol=0"))
        .await
        .unwrap();
    a.connect_frames().await;
    b.connect_frames().await;
    assert_eq!(a.call_ok("broadcast", json!(["hey"])).await, json!(2));
    assert_eq!(b.recv().await, Frame::Text("hey".into()));
    assert_eq!(np.recv().await, Frame::Text("hey".into()));
    assert_eq!(a.recv_within(Duration::from_millis(200)).await, None);
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_then_goes_live() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    let mut c = Client::connect(addr, "/agents/test-agent/sse")
        .await
        .unwrap();
    c.connect_frames().await;
    for i in 1..=4 {
        assert_eq!(
            c.call_ok("publish", json!([format!("m{i}")])).await,
            json!(i)
        );
    }
    // resume after 2: events 3 and 4 from the log, then a live one
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/agents/test-agent/sse/feed")
        .header("host", "x")
        .header("last-event-id", "2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut text = String::new();
    while !text.contains("data: m4\n\n") {
        next_chunk(&mut body, &mut text).await;
    }
    assert_eq!(
        text,
        "id: 3\nevent: msg\ndata: m3\n\nid: 4\nevent: msg\ndata: m4\n\n"
    );
    assert_eq!(c.call_ok("publish", json!(["m5"])).await, json!(5));
    text.clear();
    while !text.ends_with("\n\n") {
        next_chunk(&mut body, &mut text).await;
    }
    assert_eq!(text, "id: 5\nevent: msg\ndata: m5\n\n");
}

async fn next_chunk(body: &mut hyper::body::Incoming, text: &mut String) {
    use http_body_util::BodyExt;
    let f = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("a chunk in time")
        .expect("body not over")
        .expect("no body error");
    text.push_str(std::str::from_utf8(f.data_ref().expect("data")).unwrap());
}

#[tokio::test]
async fn hibernation_keeps_sockets_and_connection_data() {
    let limits = Limits::default().with_idle_timeout(Some(Duration::from_millis(200)));
    let server = server_with(Storage::memory(), limits);
    let addr = spawn(server.clone()).await;
    let mut c = Client::connect(addr, "/agents/test-agent/sleepy?_pk=h&readonly=1&tag=idle")
        .await
        .unwrap();
    c.connect_frames().await;
    let started = c.call_ok("startedAt", json!([])).await;
    c.call_ok("setConnState", json!([{"note":"kept"}])).await;
    let who = c.call_ok("whoami", json!([])).await;
    assert_eq!(c.recv_within(Duration::from_millis(600)).await, None);
    let info = server.instance_info("TestAgent", "sleepy").await.unwrap();
    assert!(!info.awake, "instance should be evicted: {info:?}");
    assert_eq!(info.connections, 1);

    // the next event wakes it: MCP servers re-announced, then the reply; flags/state kept
    c.send_json(&json!({"type":"rpc","id":"w","method":"whoami","args":[]}))
        .await;
    assert_eq!(c.recv_json().await, mcp());
    let again = c.recv_json().await;
    assert_eq!(again["result"], who);
    assert_eq!(who["state"], json!({"note":"kept"}));
    assert_eq!(who["readonly"], json!(true));
    assert_ne!(c.call_ok("startedAt", json!([])).await, started);
    let info = server.instance_info("TestAgent", "sleepy").await.unwrap();
    assert!(info.awake && info.starts == 2, "{info:?}");
}

#[tokio::test]
async fn sqlite_state_and_agent_sql_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("agentwire-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let addr = spawn(server_with(Storage::sqlite(&dir), Limits::default())).await;
        let mut c = Client::connect(addr, "/agents/test-agent/disk")
            .await
            .unwrap();
        c.connect_frames().await;
        assert_eq!(c.call_ok("increment", json!([5])).await, json!(5));
        assert_eq!(c.call_ok("sqlCount", json!([])).await, json!(1));
    }
    let addr = spawn(server_with(Storage::sqlite(&dir), Limits::default())).await;
    let mut c = Client::connect(addr, "/agents/test-agent/disk")
        .await
        .unwrap();
    assert_eq!(c.connect_frames().await[1]["state"], json!({"count":5}));
    assert_eq!(c.call_ok("sqlCount", json!([])).await, json!(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_1001() {
    let server = server_with(Storage::memory(), Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve_with_shutdown(listener, async {
        let _ = stopped.await;
    }));
    let mut c = Client::connect(addr, "/agents/test-agent/bye")
        .await
        .unwrap();
    c.connect_frames().await;
    stop.send(()).unwrap();
    assert_eq!(
        c.recv().await,
        Frame::Close(1001, "server shutting down".into())
    );
    tokio::time::timeout(WAIT, served)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn usable_as_a_tower_service() {
    use tower_service::Service;
    let mut svc = server_with(Storage::memory(), Limits::default());
    let req = http::Request::get("/agents/test-agent/tw/status")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = svc.call(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let req = http::Request::get("/agents/unknown/tw")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(svc.call(req).await.unwrap().status(), 400);
}

#[tokio::test]
async fn idle_instances_end_and_restart_with_their_state() {
    let limits = Limits::default().with_idle_timeout(Some(Duration::from_millis(150)));
    let server = server_with(Storage::memory(), limits);
    let addr = spawn(server.clone()).await;
    let mut c = Client::connect(addr, "/agents/test-agent/gone")
        .await
        .unwrap();
    c.connect_frames().await;
    assert_eq!(c.call_ok("increment", json!([3])).await, json!(3));
    c.close(1000).await;
    while c.recv_within(Duration::from_millis(200)).await.is_some() {}
    // evicted after one idle period, ended after another: no longer running
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.instance_info("TestAgent", "gone").await, None);
    // the next request starts a new instance that finds the state
    let (s, _, body) = http(addr, "GET", "/agents/test-agent/gone/status", &[], "").await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        json!({"count": 3})
    );
    let info = server.instance_info("TestAgent", "gone").await.unwrap();
    assert_eq!((info.awake, info.starts, info.connections), (true, 1, 0));
}

#[tokio::test]
async fn a_panicking_hook_fails_its_call_and_the_agent_restarts() {
    let server = server_with(Storage::memory(), Limits::default());
    let addr = spawn(server.clone()).await;
    let mut a = Client::connect(addr, "/agents/test-agent/oops?_pk=a")
        .await
        .unwrap();
    let mut b = Client::connect(addr, "/agents/test-agent/oops?_pk=b")
        .await
        .unwrap();
    a.connect_frames().await;
    b.connect_frames().await;
    assert_eq!(a.call_ok("increment", json!([2])).await, json!(2));
    let started = a.call_ok("startedAt", json!([])).await;
    let r = a.call("panic", json!([])).await;
    assert_eq!(r["error"], "Internal error");
    // both sockets still work; the agent started again and found its state
    assert_eq!(b.call_ok("increment", json!([1])).await, json!(3));
    assert_ne!(a.call_ok("startedAt", json!([])).await, started);
    let info = server.instance_info("TestAgent", "oops").await.unwrap();
    assert_eq!((info.connections, info.starts), (2, 2));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_at_its_queue_limit() {
    let limits = Limits::default().with_max_queued_bytes(256 * 1024);
    let addr = spawn(server_with(Storage::memory(), limits)).await;
    let path = "/agents/test-agent/slow";
    let mut sender = Client::connect(addr, &format!("{path}?_pk=s"))
        .await
        .unwrap();
    let mut reader = Client::connect(addr, &format!("{path}?_pk=r"))
        .await
        .unwrap();
    let mut stalled = Client::connect(addr, &format!("{path}?_pk=x"))
        .await
        .unwrap();
    sender.connect_frames().await;
    reader.connect_frames().await;
    stalled.connect_frames().await;
    // 32 MiB for each receiver: far more than socket buffers and the 256 KiB queue hold
    let reader_task = tokio::spawn(async move {
        let mut got = 0usize;
        while let Some(Frame::Binary(b)) = reader.recv_within(WAIT).await {
            got += b.len();
            if got == 32 << 20 {
                break;
            }
        }
        got
    });
    let reached = sender.call_ok("flood", json!([512, 64 * 1024])).await;
    // the last broadcasts no longer reach the stalled socket; the reader got everything
    assert_eq!(reached, json!(1));
    assert_eq!(reader_task.await.unwrap(), 32 << 20);
    // the server gave up on the stalled socket at once (its writes were blocked, so no
    // Close could be written) and dropped what was queued: when the client reads again it
    // finds what the socket buffers held, then the end of the connection
    let mut got = 0usize;
    while let Some(f) = stalled.recv_within(WAIT).await {
        if let Frame::Binary(b) = f {
            got += b.len();
        }
    }
    assert!(got < 32 << 20, "{got} bytes reached the stalled client");
}

#[tokio::test]
async fn a_custom_prefix_routes_and_everything_else_falls_back() {
    let server = agentwire::Server::builder()
        .agent("TestAgent", test_agent)
        .prefix("api/agents")
        .build();
    let addr = spawn(server).await;
    let mut c = Client::connect(addr, "/api/agents/test-agent/p/extra?_pk=z")
        .await
        .unwrap();
    assert_eq!(c.connect_frames().await[0]["name"], "p");
    assert_eq!(c.call_ok("whoami", json!([])).await["id"], "z");
    let (s, _, _) = http(addr, "GET", "/agents/test-agent/p/status", &[], "").await;
    assert_eq!(s, 404, "the default prefix is not routed any more");
    let (s, _, _) = http(addr, "GET", "/api/agents/test-agent/p/status", &[], "").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn state_change_hook_runs_after_each_accepted_change() {
    let addr = spawn(server_with(Storage::memory(), Limits::default())).await;
    let mut a = Client::connect(addr, "/agents/test-agent/hook?_pk=a")
        .await
        .unwrap();
    a.connect_frames().await;
    a.send_text(r#"{"state":{"count":5},"type":"cf_agent_state"}"#)
        .await;
    a.send_text(r#"{"state":{"count":-5},"type":"cf_agent_state"}"#)
        .await; // refused
    a.call_ok("increment", json!([1])).await;
    assert_eq!(
        a.call_ok("updates", json!([])).await,
        json!([["a", 5], ["server", 6]])
    );
}

#[tokio::test]
async fn graceful_shutdown_ends_live_sse_responses() {
    let server = server_with(Storage::memory(), Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve_with_shutdown(listener, async {
        let _ = stopped.await;
    }));
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/agents/test-agent/live/feed")
        .header("host", "x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    // the body ends (well before the 5 s grace period) and the server returns
    let body = tokio::time::timeout(WAIT, http_body_util::BodyExt::collect(res.into_body()))
        .await
        .expect("the SSE body ends")
        .unwrap();
    assert!(body.to_bytes().is_empty());
    tokio::time::timeout(WAIT, served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}
