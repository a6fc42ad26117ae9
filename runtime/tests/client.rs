//! `agentwire::client::AgentClient` against the demo server over loopback: connect sequence,
//! state sync between two clients, regular and streaming calls and their errors, reconnection
//! with the same connection id (server close, server restart on the same data directory, a
//! cut connection), pending calls failed when the socket drops, terminal close codes and
//! `close()`.
#![cfg(feature = "client")]

mod common;

use agentwire::client::{
    AgentClient, Backoff, CallError, ClientError, ClientEvent, CloseCause, Status, UpdateSource,
};
use agentwire::{Limits, Storage};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot, watch};

/// Generous: the machine running the tests may be slow and busy.
const WAIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The demo server (CounterAgent, ChatRoom, TaskRunner) on a loopback port.
async fn demo() -> SocketAddr {
    common::spawn(agentwire::demo::server(
        Storage::memory(),
        Limits::default(),
    ))
    .await
}

/// Reconnects quickly, so the tests do not wait for the reference client's 3 s.
fn fast() -> Backoff {
    Backoff::constant(Duration::from_millis(50))
}

fn client(addr: SocketAddr, name: &str) -> AgentClient {
    AgentClient::builder(format!("ws://{addr}"), "CounterAgent", name)
        .reconnect(Some(fast()))
        .build()
        .unwrap()
}

/// The next event matching `pred` (others are skipped).
async fn event_where(
    rx: &mut broadcast::Receiver<ClientEvent>,
    pred: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    within("an event", async {
        loop {
            let ev = rx.recv().await.expect("event stream open");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
}

#[tokio::test]
async fn identity_state_and_mcp_on_connect() {
    let addr = demo().await;
    let c = client(addr, "connect");
    let mut events = c.events();
    assert!(
        c.url()
            .starts_with(&format!("ws://{addr}/agents/counter-agent/connect?_pk=")),
        "{}",
        c.url()
    );
    assert!(c.url().ends_with(c.id()));
    assert_eq!(c.id().len(), 36, "a UUID v4: {}", c.id());

    let identity = within("ready", c.ready()).await.unwrap();
    assert_eq!(
        (identity.agent.as_str(), identity.name.as_str()),
        ("counter-agent", "connect")
    );
    assert_eq!(c.identity(), Some(identity.clone()));
    // `stateFollows`: ready resolves only once the state is there
    assert_eq!(c.state(), Some(json!({"count": 0})));
    let st = c.subscribe_state().borrow().clone().unwrap();
    assert_eq!(st.source, UpdateSource::Server);
    assert_eq!(c.status(), Status::Ready);

    // the events since `build`, in order: open, identity, state, MCP servers
    assert_eq!(events.recv().await.unwrap(), ClientEvent::Open);
    assert_eq!(
        events.recv().await.unwrap(),
        ClientEvent::Identity(identity)
    );
    match events.recv().await.unwrap() {
        ClientEvent::State(u) => {
            assert_eq!(
                (u.state, u.source),
                (json!({"count": 0}), UpdateSource::Server)
            )
        }
        other => panic!("expected the state, got {other:?}"),
    }
    match event_where(&mut events, |e| matches!(e, ClientEvent::McpServers(_))).await {
        ClientEvent::McpServers(mcp) => assert!(mcp.servers.is_empty()),
        _ => unreachable!(),
    }
    assert!(c.mcp_servers().is_some());

    // an explicit id is used as `_pk` and is the server's connection id
    let d = AgentClient::builder(format!("{addr}"), "counter-agent", "connect")
        .id("my id")
        .query("tag", "blue")
        .build()
        .unwrap();
    assert!(d.url().ends_with("?_pk=my+id&tag=blue"), "{}", d.url());
    let who = within("whoami", d.call("whoami", ())).await.unwrap();
    assert_eq!(who["id"], "my id");
    assert_eq!(who["tags"], json!(["my id", "blue"]));
}

#[tokio::test]
async fn set_state_reaches_a_second_client_and_is_not_echoed() {
    let addr = demo().await;
    let a = client(addr, "sync");
    let b = client(addr, "sync");
    within("a ready", a.ready()).await.unwrap();
    within("b ready", b.ready()).await.unwrap();
    // the first `events()` receiver holds everything since `build`: skip the connect frames
    let mut a_events = a.events();
    while a_events.try_recv().is_ok() {}
    let mut b_state = b.subscribe_state();

    a.set_state(&json!({"count": 41})).unwrap();
    // optimistic: the local state changes at once, from the client
    assert_eq!(a.state(), Some(json!({"count": 41})));
    let st = a.subscribe_state().borrow().clone().unwrap();
    assert_eq!(st.source, UpdateSource::Client);

    let got = within(
        "the broadcast on b",
        b_state.wait_for(|u| u.as_ref().is_some_and(|u| u.state == json!({"count": 41}))),
    )
    .await
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(got.source, UpdateSource::Server);
    assert_eq!(
        b.state_as::<Value>().unwrap().unwrap(),
        json!({"count": 41})
    );

    // The instance handles a's frames in order: a call after the update is answered after
    // any echo would have been sent. None was: a's only state event is its own.
    assert_eq!(
        within("add", a.call("add", (1, 1))).await.unwrap(),
        json!(2)
    );
    let mut states = Vec::new();
    while let Ok(ev) = a_events.try_recv() {
        if let ClientEvent::State(u) = ev {
            states.push(u.source);
        }
    }
    assert_eq!(states, [UpdateSource::Client]);

    // a server-side change reaches both, the caller included
    assert_eq!(
        within("increment", b.call("increment", [2])).await.unwrap(),
        json!(43)
    );
    assert_eq!(b.state(), Some(json!({"count": 43})));
    let mut a_state = a.subscribe_state();
    within(
        "the increment on a",
        a_state.wait_for(|u| u.as_ref().is_some_and(|u| u.state == json!({"count": 43}))),
    )
    .await
    .unwrap();

    // a refused update is surfaced: `count` must be a number
    a.set_state(&json!({"count": "many"})).unwrap();
    match event_where(&mut a_events, |e| matches!(e, ClientEvent::StateError(_))).await {
        ClientEvent::StateError(e) => assert_eq!(e, "State update rejected"),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn calls_results_and_errors() {
    let addr = demo().await;
    let c = client(addr, "calls");
    // made before the socket opened: buffered, then sent
    let early = c.call("add", (2, 3));
    assert_eq!(within("early call", early).await.unwrap(), json!(5));
    assert_eq!(
        within("echo", c.call("echo", [json!({"a": [1, "x"]})]))
            .await
            .unwrap(),
        json!({"a": [1, "x"]})
    );
    // a void method resolves with null
    assert_eq!(
        within("nothing", c.call("nothing", ())).await.unwrap(),
        Value::Null
    );
    assert_eq!(
        within("fail", c.call("fail", ["kaboom"])).await,
        Err(CallError::Remote("kaboom".into()))
    );
    let unknown = within("nope", c.call("nope", ())).await.unwrap_err();
    assert_eq!(
        unknown,
        CallError::Remote("Method nope does not exist".into())
    );
    assert_eq!(unknown.to_string(), "Method nope does not exist");
    assert_eq!(
        within("notExposed", c.call("notExposed", ())).await,
        Err(CallError::Remote(
            "Method notExposed is not callable".into()
        ))
    );
    // arguments must be an array
    assert!(matches!(
        c.call("add", json!({"a": 1})).await,
        Err(CallError::Json(_))
    ));
    // several calls in flight, correlated by id
    let calls: Vec<_> = (0..20).map(|i| c.call("add", (i, 1000))).collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(within("add", call).await.unwrap(), json!(i + 1000));
    }
}

#[tokio::test]
async fn streaming_calls_yield_chunks_then_the_result() {
    let addr = demo().await;
    let c = client(addr, "stream");
    let mut s = c.call_stream("countdown", [3]).unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = within("a chunk", s.next_chunk()).await {
        chunks.push(chunk);
    }
    assert_eq!(chunks, [json!(3), json!(2), json!(1)]);
    assert_eq!(
        within("the end", s.finish()).await.unwrap(),
        json!("liftoff")
    );

    // an error after a chunk: the chunk, then the error
    let mut s = c.call_stream("streamFail", ()).unwrap();
    assert_eq!(
        within("a chunk", s.next_chunk()).await,
        Some(json!("partial"))
    );
    assert_eq!(within("the chunk end", s.next_chunk()).await, None);
    assert_eq!(
        within("the error", s.finish()).await,
        Err(CallError::Remote("stream exploded".into()))
    );

    // `finish` skips unread chunks
    let s = c.call_stream("countdown", [5]).unwrap();
    assert_eq!(
        within("the end", s.finish()).await.unwrap(),
        json!("liftoff")
    );
}

#[tokio::test]
async fn server_close_reconnects_with_the_same_id() {
    let addr = demo().await;
    let c = client(addr, "bounce");
    within("ready", c.ready()).await.unwrap();
    let mut events = c.events();
    let who = within("whoami", c.call("whoami", ())).await.unwrap();
    assert_eq!(who["id"], c.id());
    assert_eq!(
        within("increment", c.call("increment", [3])).await.unwrap(),
        json!(3)
    );

    // 1012 is not terminal: the client reconnects, with the same `_pk`
    let r = within("disconnect", c.call("disconnect", [1012]))
        .await
        .unwrap();
    assert_eq!(r["closing"], true);
    let ev = event_where(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        ev,
        ClientEvent::Disconnected {
            code: 1012,
            reason: String::new(),
            reconnect: true
        }
    );
    event_where(&mut events, |e| *e == ClientEvent::Open).await;
    within("ready again", c.ready()).await.unwrap();
    assert_eq!(c.state(), Some(json!({"count": 3})));
    let who = within("whoami", c.call("whoami", ())).await.unwrap();
    assert_eq!(who["id"], c.id());
}

/// Serves the demo on `addr` (retrying while the port is still held) until `stop` fires.
async fn serve_on(
    addr: SocketAddr,
    dir: &Path,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = within("the port", async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = agentwire::demo::server(Storage::sqlite(dir), Limits::default());
    let task = tokio::spawn(async move {
        server
            .serve_with_shutdown(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop, task)
}

#[tokio::test]
async fn server_restart_reconnects_and_the_state_is_kept() {
    let dir = std::env::temp_dir().join(format!("agentwire-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (addr, stop, task) = serve_on("127.0.0.1:0".parse().unwrap(), &dir).await;

    let c = client(addr, "restart");
    within("ready", c.ready()).await.unwrap();
    let mut events = c.events();
    assert_eq!(
        within("increment", c.call("increment", [7])).await.unwrap(),
        json!(7)
    );

    // stop the server: it closes the socket with 1001 (going away), the client retries
    stop.send(()).unwrap();
    within("the server to stop", task).await.unwrap();
    let ev = event_where(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            ClientEvent::Disconnected {
                code: 1001,
                reconnect: true,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(matches!(c.status(), Status::Connecting | Status::Open));
    // a call made while the server is down waits for the next connection
    let waiting = c.call("increment", [1]);

    // a new server on the same port and data directory
    let (_, stop, task) = serve_on(addr, &dir).await;
    assert_eq!(
        within("the buffered call", waiting).await.unwrap(),
        json!(8)
    );
    within("ready", c.ready()).await.unwrap();
    assert_eq!(c.state(), Some(json!({"count": 8})));
    let who = within("whoami", c.call("whoami", ())).await.unwrap();
    assert_eq!(
        who["id"],
        c.id(),
        "the same connection id after reconnecting"
    );

    c.close().await;
    stop.send(()).unwrap();
    within("the server to stop", task).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP proxy that can cut every connection through it and swallow client→server bytes.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<u64>,
    hold: Arc<AtomicBool>,
    swallowed: watch::Sender<usize>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            cut: watch::Sender::new(0),
            hold: Arc::new(AtomicBool::new(false)),
            swallowed: watch::Sender::new(0),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let (cut, hold, swallowed, accepted) = (
            proxy.cut.clone(),
            proxy.hold.clone(),
            proxy.swallowed.clone(),
            proxy.accepted.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let cut = cut.subscribe();
                tokio::spawn(pipe(client, server, cut, hold.clone(), swallowed.clone()));
            }
        });
        proxy
    }

    /// Drops every connection open now (both sides see the TCP connection end).
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut cut: watch::Receiver<u64>,
    hold: Arc<AtomicBool>,
    swallowed: watch::Sender<usize>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if hold.load(Ordering::SeqCst) {
                swallowed.send_modify(|s| *s += n);
            } else {
                sw.write_all(&buf[..n]).await?;
            }
        }
    };
    let down = tokio::io::copy(&mut sr, &mut cw);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

#[tokio::test]
async fn pending_calls_fail_when_the_connection_drops() {
    let addr = demo().await;
    let proxy = Proxy::start(addr).await;
    let c = AgentClient::builder(format!("ws://{}", proxy.addr), "CounterAgent", "cut")
        .reconnect(Some(fast()))
        .build()
        .unwrap();
    within("ready", c.ready()).await.unwrap();
    let mut events = c.events();
    let id_before = within("whoami", c.call("whoami", ())).await.unwrap()["id"].clone();

    // the requests leave the client but never reach the server (each awaited at the proxy,
    // so both are on the wire, not still buffered in the client, when the connection drops)
    proxy.hold.store(true, Ordering::SeqCst);
    let mut swallowed = proxy.swallowed.subscribe();
    let pending = c.call("add", (1, 2));
    let first = *within("the call at the proxy", swallowed.wait_for(|n| *n > 0))
        .await
        .unwrap();
    let mut stream = c.call_stream("countdown", [2]).unwrap();
    within(
        "the streaming call at the proxy",
        swallowed.wait_for(|n| *n > first),
    )
    .await
    .unwrap();
    proxy.hold.store(false, Ordering::SeqCst);
    proxy.cut();

    assert_eq!(
        within("the pending call", pending).await,
        Err(CallError::ConnectionClosed)
    );
    assert_eq!(within("the stream", stream.next_chunk()).await, None);
    assert_eq!(stream.finish().await, Err(CallError::ConnectionClosed));
    let ev = event_where(&mut events, |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            ClientEvent::Disconnected {
                code: 1006,
                reconnect: true,
                ..
            }
        ),
        "{ev:?}"
    );

    // it reconnects through the proxy with the same id, and calls work again
    within("ready again", c.ready()).await.unwrap();
    assert_eq!(
        within("add", c.call("add", (1, 2))).await.unwrap(),
        json!(3)
    );
    let who = within("whoami", c.call("whoami", ())).await.unwrap();
    assert_eq!(who["id"], id_before);
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_terminal_close_stops_reconnecting() {
    let addr = demo().await;
    let proxy = Proxy::start(addr).await;
    let c = AgentClient::builder(format!("ws://{}", proxy.addr), "CounterAgent", "terminal")
        .reconnect(Some(fast()))
        .build()
        .unwrap();
    within("ready", c.ready()).await.unwrap();
    let mut events = c.events();
    within("disconnect", c.call("disconnect", (4001, "revoked")))
        .await
        .unwrap();
    let info = within("closed", c.closed()).await;
    assert_eq!(
        (info.code, info.reason.as_str(), info.cause),
        (4001, "revoked", CloseCause::Terminal)
    );
    assert_eq!(
        event_where(&mut events, |e| matches!(
            e,
            ClientEvent::Disconnected { .. }
        ))
        .await,
        ClientEvent::Disconnected {
            code: 4001,
            reason: "revoked".into(),
            reconnect: false
        }
    );
    assert!(matches!(c.status(), Status::Closed(_)));
    // everything fails at once now
    assert_eq!(
        c.call("add", (1, 1)).await,
        Err(CallError::ConnectionClosed)
    );
    assert!(matches!(
        c.set_state(&json!({"count": 1})),
        Err(ClientError::Closed(_))
    ));
    assert!(matches!(c.ready().await, Err(ClientError::Closed(_))));
    // the background task is gone, so nothing can reconnect: only the first connection was
    // ever made through the proxy
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_ends_the_client_and_fails_pending_calls() {
    let addr = demo().await;
    let proxy = Proxy::start(addr).await;
    let c = AgentClient::builder(format!("ws://{}", proxy.addr), "CounterAgent", "close")
        .reconnect(Some(fast()))
        .build()
        .unwrap();
    within("ready", c.ready()).await.unwrap();
    let mut events = c.events();
    while events.try_recv().is_ok() {} // the connect frames
    proxy.hold.store(true, Ordering::SeqCst);
    let pending = c.call("add", (1, 2));
    within(
        "the request at the proxy",
        proxy.swallowed.subscribe().wait_for(|n| *n > 0),
    )
    .await
    .unwrap();
    proxy.hold.store(false, Ordering::SeqCst);

    let info = within("close", c.close()).await;
    assert_eq!((info.code, info.cause), (1000, CloseCause::Client));
    assert_eq!(
        within("the pending call", pending).await,
        Err(CallError::ConnectionClosed)
    );
    assert_eq!(
        c.call("add", (1, 1)).await,
        Err(CallError::ConnectionClosed)
    );
    assert!(matches!(c.send("hello"), Err(ClientError::Closed(_))));
    // no reconnect after an explicit close: the socket ended without a `Disconnected` event
    // announcing a retry, and the proxy saw one connection only
    while let Ok(ev) = events.try_recv() {
        assert!(
            !matches!(
                ev,
                ClientEvent::Disconnected {
                    reconnect: true,
                    ..
                } | ClientEvent::Open
            ),
            "{ev:?}"
        );
    }
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn application_messages_are_events() {
    let addr = demo().await;
    let a = client(addr, "messages");
    let b = client(addr, "messages");
    within("a ready", a.ready()).await.unwrap();
    within("b ready", b.ready()).await.unwrap();
    let mut a_events = a.events();
    let mut b_events = b.events();
    // CounterAgent echoes text as {"type":"echo","data":…}
    a.send("hello agent").unwrap();
    match event_where(&mut a_events, |e| matches!(e, ClientEvent::Message(_))).await {
        ClientEvent::Message(m) => {
            let v: Value = serde_json::from_str(m.as_text().unwrap()).unwrap();
            assert_eq!(v, json!({"type": "echo", "data": "hello agent"}));
        }
        _ => unreachable!(),
    }
    // and binary as it came
    a.send(bytes::Bytes::from_static(b"\x00\x01")).unwrap();
    assert_eq!(
        event_where(&mut a_events, |e| matches!(e, ClientEvent::Message(_))).await,
        ClientEvent::Message(agentwire::Message::Binary(bytes::Bytes::from_static(
            b"\x00\x01"
        )))
    );
    // a broadcast from the agent reaches the other client as a message
    within("shout", a.call("shout", [json!("hi all")]))
        .await
        .unwrap();
    match event_where(&mut b_events, |e| matches!(e, ClientEvent::Message(_))).await {
        ClientEvent::Message(m) => {
            let v: Value = serde_json::from_str(m.as_text().unwrap()).unwrap();
            assert_eq!(v, json!({"type": "shout", "payload": "hi all"}));
        }
        _ => unreachable!(),
    }
}

/// The client's streams are `futures_core::Stream`s: a streaming call's chunks, the state
/// and its changes, every event.
#[tokio::test]
async fn call_state_and_event_streams_are_streams() {
    use futures_util::StreamExt;
    let addr = demo().await;
    let c = client(addr, "streams");
    let mut events = c.event_stream();
    within("ready", c.ready()).await.unwrap();

    let chunks: Vec<Value> = within(
        "the chunks",
        c.call_stream("countdown", [3]).unwrap().collect(),
    )
    .await;
    assert_eq!(chunks, [json!(3), json!(2), json!(1)]);

    let mut states = c.state_stream();
    let first = within("the state", states.next()).await.unwrap();
    assert_eq!(first.source, UpdateSource::Server);
    within("increment", c.call("increment", [4])).await.unwrap();
    let next = within("a change", states.next()).await.unwrap();
    assert_eq!(
        next.state["count"],
        first.state["count"].as_i64().unwrap() + 4
    );

    // the event stream starts with everything since `build`: the open, then the frames
    let open = within("an event", events.next()).await.unwrap().unwrap();
    assert!(matches!(open, ClientEvent::Open), "{open:?}");
}
