//! The server stays up for everyone under idle, slow, hostile and heavy clients: connection
//! cap and shedding, head/body/keep-alive deadlines, slow consumers, streaming to a gone
//! caller, bounded awake instances, authorization before anything exists, instance deletion.

mod common;

use agentwire::{
    body::response, Agent, Call, Context, Limits, Reply, RpcError, Server, StateSource, Storage,
};
use common::{http, server_with, spawn, Client, Frame};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for "eventually" (the deadlines under test are far shorter).
const EVENTUALLY: Duration = Duration::from_secs(10);

fn limits() -> Limits {
    Limits::default()
}

/// Whether the server closed `sock` (EOF or reset), reading and discarding what it sent.
async fn closed_by_server(sock: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads an HTTP answer's status line from `sock`.
async fn status_of(sock: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(EVENTUALLY, sock.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn at_the_cap_idle_connections_are_shed_before_clients_are_refused() {
    let server = server_with(Storage::memory(), limits().with_max_connections(Some(3)));
    let addr = spawn(server.clone()).await;
    // three sockets that never send anything fill the cap
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // a real client still gets an answer: the oldest idle socket made room
    let (status, _, _) = http(addr, "GET", "/agents/test-agent/a/status", &[], "").await;
    assert_eq!(status, 200);
    assert!(closed_by_server(&mut silent[0], EVENTUALLY).await);

    // fill the cap with WebSockets (never idle): the next client gets 503, not a hang
    drop(silent);
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while server.open_connections() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sockets = Vec::new();
    for i in 0..3 {
        let mut c = Client::connect(addr, &format!("/agents/test-agent/ws{i}"))
            .await
            .unwrap();
        c.connect_frames().await;
        sockets.push(c);
    }
    let mut late = TcpStream::connect(addr).await.unwrap();
    late.write_all(b"GET /agents/test-agent/a/status HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut late).await, Some(503));
    // the WebSockets were not disturbed
    assert_eq!(sockets[0].call_ok("add", json!([1, 2])).await, json!(3));
}

#[tokio::test]
async fn silent_and_slow_heads_are_cut() {
    let addr = spawn(server_with(
        Storage::memory(),
        limits()
            .with_keep_alive_timeout(Duration::from_millis(300))
            .with_request_head_timeout(Duration::from_millis(300)),
    ))
    .await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(&mut silent, EVENTUALLY).await);
    // slowloris: a head that trickles in never completes
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut cut = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"x-a: b\r\n").await.is_err() {
            cut = true;
            break;
        }
        let mut b = [0u8; 512];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut b)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickling request head was never cut");
}

#[tokio::test]
async fn a_stalled_body_times_out_and_an_oversized_head_is_refused() {
    let addr = spawn(server_with(
        Storage::memory(),
        limits().with_request_body_timeout(Duration::from_millis(300)),
    ))
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /agents/test-agent/a/status HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nonly a little",
    )
    .await
    .unwrap();
    assert_eq!(status_of(&mut s).await, Some(408));

    let mut s = TcpStream::connect(addr).await.unwrap();
    let big = format!(
        "GET /agents/test-agent/a/status?q={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "q".repeat(40 * 1024)
    );
    let _ = s.write_all(big.as_bytes()).await;
    assert_eq!(status_of(&mut s).await, Some(431));
}

/// Connections of instance `path` according to the server (via the status route).
async fn connections(addr: SocketAddr, name: &str) -> u64 {
    let (_, _, body) = http(
        addr,
        "GET",
        &format!("/agents/test-agent/{name}/status"),
        &[],
        "",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"].as_u64().unwrap()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_when_writes_stall() {
    // a queue large enough never to overflow: the write deadline is what frees the socket
    let addr = spawn(server_with(
        Storage::memory(),
        limits()
            .with_max_queued_bytes(1 << 30)
            .with_ws_write_timeout(Duration::from_millis(500)),
    ))
    .await;
    let mut sender = Client::connect(addr, "/agents/test-agent/slow")
        .await
        .unwrap();
    sender.connect_frames().await;
    let stalled = Client::connect(addr, "/agents/test-agent/slow?_pk=stalled")
        .await
        .unwrap();
    assert_eq!(connections(addr, "slow").await, 2);
    // 64 MiB to a socket that reads nothing: the kernel buffers fill, writes stop progressing
    sender.call_ok("flood", json!([256, 256 * 1024])).await;
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while connections(addr, "slow").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled socket kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}

#[tokio::test]
async fn a_queue_overflow_closes_at_once_even_with_writes_blocked() {
    let addr = spawn(server_with(
        Storage::memory(),
        limits()
            .with_max_queued_bytes(4 << 20)
            .with_ws_write_timeout(Duration::from_secs(3600)),
    ))
    .await;
    let mut sender = Client::connect(addr, "/agents/test-agent/ovf")
        .await
        .unwrap();
    sender.connect_frames().await;
    let _stalled = Client::connect(addr, "/agents/test-agent/ovf?_pk=stalled")
        .await
        .unwrap();
    sender.call_ok("flood", json!([256, 256 * 1024])).await;
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while connections(addr, "ovf").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "overflowed socket kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Streams chunks until sending fails; counts the calls that ended that way.
#[derive(Default)]
struct Streamer {
    ended: Arc<AtomicUsize>,
}

impl Agent for Streamer {
    type State = serde_json::Value;

    async fn on_call(&mut self, _cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        let stream = call.stream();
        for i in 0u64.. {
            if let Err(e) = stream.send(&i) {
                assert_eq!(e, RpcError::new("Connection closed"));
                self.ended.fetch_add(1, Ordering::SeqCst);
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        unreachable!()
    }
}

#[tokio::test]
async fn streaming_to_a_gone_caller_fails_the_send() {
    let ended = Arc::new(AtomicUsize::new(0));
    let e2 = ended.clone();
    let server = Server::builder()
        .agent("Streamer", move |_| Streamer { ended: e2.clone() })
        .build();
    let addr = spawn(server).await;
    let mut c = Client::connect(addr, "/agents/streamer/s").await.unwrap();
    c.send_json(&json!({"type":"rpc","id":"1","method":"forever","args":[]}))
        .await;
    for _ in 0..3 {
        assert!(matches!(c.recv().await, Frame::Text(_)));
    }
    drop(c);
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while ended.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn awake_instances_are_bounded() {
    let dir = std::env::temp_dir().join(format!("agentwire-awake-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = server_with(
        Storage::sqlite(&dir),
        limits().with_max_open_instances(Some(3)),
    );
    let addr = spawn(server.clone()).await;
    for i in 0..12 {
        let (status, _, _) = http(
            addr,
            "GET",
            &format!("/agents/test-agent/n{i}/status"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, 200);
    }
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while server.awake_instances() > 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} awake",
            server.awake_instances()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a hibernated instance wakes with its data
    let (_, _, body) = http(addr, "GET", "/agents/test-agent/n0/status", &[], "").await;
    assert!(body.contains("\"count\":0"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn authorize_runs_before_anything_is_created() {
    let dir = std::env::temp_dir().join(format!("agentwire-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::builder()
        .agent("TestAgent", common::test_agent)
        .storage(Storage::sqlite(&dir))
        .authorize(|req| async move {
            let token = req
                .bearer_token()
                .map(str::to_owned)
                .or_else(|| req.query("token"));
            if token.as_deref() == Some("sesame") {
                Ok(())
            } else {
                Err(response::text(
                    http::StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                ))
            }
        })
        .build();
    let addr = spawn(server).await;
    let (status, _, _) = http(addr, "GET", "/agents/test-agent/x/status", &[], "").await;
    assert_eq!(status, 401);
    assert_eq!(
        Client::connect(addr, "/agents/test-agent/y").await.err(),
        Some(401)
    );
    // nothing was created on disk for the refused names
    assert!(!dir.join("test-agent").join("x.sqlite").exists());
    assert!(!dir.join("test-agent").join("y.sqlite").exists());

    let (status, _, _) = http(
        addr,
        "GET",
        "/agents/test-agent/x/status",
        &[("authorization", "Bearer sesame")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let mut c = Client::connect(addr, "/agents/test-agent/y?token=sesame")
        .await
        .unwrap();
    c.connect_frames().await;
    assert!(dir.join("test-agent").join("y.sqlite").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn deleting_an_instance_closes_its_sockets_and_removes_its_data() {
    let dir = std::env::temp_dir().join(format!("agentwire-delete-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = server_with(Storage::sqlite(&dir), limits());
    let addr = spawn(server.clone()).await;
    let mut c = Client::connect(addr, "/agents/test-agent/gone")
        .await
        .unwrap();
    c.connect_frames().await;
    assert_eq!(c.call_ok("increment", json!([5])).await, json!(5));
    let file = dir.join("test-agent").join("gone.sqlite");
    assert!(file.exists());
    assert!(server.delete_instance("TestAgent", "gone").await.unwrap());
    assert_eq!(
        c.recv().await,
        Frame::Close(4004, "agent instance deleted".into())
    );
    assert!(!file.exists());
    // a new instance of that name starts afresh
    let mut c = Client::connect(addr, "/agents/test-agent/gone")
        .await
        .unwrap();
    let [_, st, _] = c.connect_frames().await;
    assert_eq!(st["state"]["count"], 0);
    assert!(!server.delete_instance("NoSuchAgent", "gone").await.unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reused_connection_id_does_not_mute_the_others_updates() {
    let addr = spawn(server_with(Storage::memory(), limits())).await;
    let mut a = Client::connect(addr, "/agents/test-agent/pk?_pk=same")
        .await
        .unwrap();
    let mut b = Client::connect(addr, "/agents/test-agent/pk?_pk=same")
        .await
        .unwrap();
    a.connect_frames().await;
    b.connect_frames().await;
    a.send_json(&json!({"type":"cf_agent_state","state":{"count":9}}))
        .await;
    let (st, _) = b.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"]["count"], 9);
}

#[derive(Clone, Serialize, Deserialize)]
struct Strict {
    count: i64,
}

#[derive(Default)]
struct StrictAgent;

impl Agent for StrictAgent {
    type State = Strict;
    fn initial_state(&self) -> Option<Strict> {
        Some(Strict { count: 0 })
    }
    fn validate_state(_: &Strict, _: StateSource<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test]
async fn what_is_stored_and_broadcast_is_the_validated_value() {
    let server = Server::builder()
        .agent("StrictAgent", |_| StrictAgent)
        .build();
    let addr = spawn(server).await;
    let mut a = Client::connect(addr, "/agents/strict-agent/s?_pk=a")
        .await
        .unwrap();
    let mut b = Client::connect(addr, "/agents/strict-agent/s?_pk=b")
        .await
        .unwrap();
    a.connect_frames().await;
    b.connect_frames().await;
    a.send_text(r#"{"type":"cf_agent_state","state":{"count":3,"injected":{"x":[1,2,3]}}}"#)
        .await;
    let (st, _) = b.wait_for(|v| v["type"] == "cf_agent_state").await;
    assert_eq!(st["state"], json!({"count": 3}));
    let mut c = Client::connect(addr, "/agents/strict-agent/s")
        .await
        .unwrap();
    let [_, st, _] = c.connect_frames().await;
    assert_eq!(st["state"], json!({"count": 3}));
}

/// `block` occupies its worker thread (as CPU-heavy code in a hook would) until released.
struct Blocker {
    release: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    entered: Arc<AtomicUsize>,
}

impl Agent for Blocker {
    type State = serde_json::Value;

    async fn on_call(&mut self, _cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        match call.method() {
            "block" => {
                self.entered.fetch_add(1, Ordering::SeqCst);
                let rx = self.release.lock().unwrap();
                let _ = rx.recv_timeout(Duration::from_secs(30));
                self.entered.fetch_add(1, Ordering::SeqCst);
                Reply::json("released")
            }
            "ping" => Reply::json("pong"),
            _ => Err(RpcError::NoSuchMethod),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_instances_answer_while_a_hook_blocks_its_thread() {
    // the agents' runtime, apart from the one serving sockets (dropped off the async context)
    let agents = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let release = Arc::new(std::sync::Mutex::new(rx));
    let entered = Arc::new(AtomicUsize::new(0));
    let (r2, e2) = (release.clone(), entered.clone());
    let server = Server::builder()
        .agent("Blocker", move |_| Blocker {
            release: r2.clone(),
            entered: e2.clone(),
        })
        .agent_runtime(agents.handle().clone())
        .build();
    let addr = spawn(server).await;
    let mut a = Client::connect(addr, "/agents/blocker/a").await.unwrap();
    a.send_json(&json!({"type":"rpc","id":"b","method":"block","args":[]}))
        .await;
    while entered.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // one worker is stuck in instance `a`; instance `b` (new connection, new instance) and
    // plain HTTP are served by the other
    let mut b = Client::connect(addr, "/agents/blocker/b").await.unwrap();
    assert_eq!(b.call_ok("ping", json!([])).await, json!("pong"));
    let (status, _, _) = http(addr, "GET", "/agents/blocker/c/x", &[], "").await;
    assert_eq!(status, 404);
    // (2 once the hook returned: then the others were served only after it)
    assert_eq!(entered.load(Ordering::SeqCst), 1, "still blocked meanwhile");
    tx.send(()).unwrap();
    let (reply, _) = a.wait_for(|v| v["id"] == "b").await;
    assert_eq!(reply["result"], "released");
    tokio::task::spawn_blocking(move || drop(agents))
        .await
        .unwrap();
}
