//! Shared pieces of the loopback tests: a test agent, a WebSocket client on the
//! `agentwire-ws` machine, and an HTTP helper on hyper's client.
#![allow(dead_code, unreachable_pub, missing_docs)]

use agentwire::body::response;
use agentwire::{
    Agent, BoxError, Call, Connection, Context, Limits, Message, Reply, RpcError, Server,
    StateSource, Storage,
};
use agentwire_ws::handshake::{ClientHandshake, ClientOptions};
use agentwire_ws::{CloseCode, Config, Connection as Ws, Event, Role};
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Count {
    pub count: i64,
    /// Other fields clients send are kept (what is stored and broadcast is this value).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Count {
    pub fn new(count: i64) -> Self {
        Count {
            count,
            extra: Default::default(),
        }
    }
}

/// A counter agent for the tests (integer counts only).
pub struct TestAgent {
    started_at: u128,
    /// (source connection id or "server", count) of every state change notification
    updates: Vec<(String, i64)>,
}

pub fn test_agent(_name: &str) -> TestAgent {
    TestAgent {
        started_at: 0,
        updates: Vec::new(),
    }
}

impl Agent for TestAgent {
    type State = Count;

    fn initial_state(&self) -> Option<Count> {
        Some(Count::new(0))
    }

    fn validate_state(next: &Count, _source: StateSource<'_>) -> Result<(), String> {
        if next.count < 0 {
            return Err("count must not be negative".into());
        }
        Ok(())
    }

    async fn on_start(&mut self, _cx: &mut Context<Self>) -> Result<(), BoxError> {
        self.started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(())
    }

    fn connection_readonly(&self, conn: &Connection, _: &http::request::Parts) -> bool {
        conn.uri().query().unwrap_or("").contains("readonly=1")
    }

    fn connection_protocol_messages(&self, conn: &Connection, _: &http::request::Parts) -> bool {
        !conn.uri().query().unwrap_or("").contains("protocol=0")
    }

    fn connection_tags(&self, conn: &Connection, _: &http::request::Parts) -> Vec<String> {
        agentwire::protocol::query_param(conn.uri().query().unwrap_or(""), "tag")
            .map(|t| t.into_owned())
            .into_iter()
            .collect()
    }

    async fn on_state_update(
        &mut self,
        _cx: &mut Context<Self>,
        state: &Count,
        source: Option<&Connection>,
    ) -> Result<(), BoxError> {
        let who = source.map_or_else(|| "server".to_owned(), |c| c.id().to_owned());
        self.updates.push((who, state.count));
        Ok(())
    }

    async fn on_connect(
        &mut self,
        _cx: &mut Context<Self>,
        conn: &Connection,
        _req: &http::request::Parts,
    ) -> Result<(), agentwire::Reject> {
        if conn.uri().query().unwrap_or("").contains("deny=1") {
            return Err(agentwire::Reject::Close(4001.into(), "denied".into()));
        }
        if conn.uri().query().unwrap_or("").contains("auth=no") {
            return Err(agentwire::Reject::Http(response::text(
                StatusCode::UNAUTHORIZED,
                "no",
            )));
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        _cx: &mut Context<Self>,
        conn: &Connection,
        msg: Message,
    ) -> Result<(), BoxError> {
        conn.send(msg)?;
        Ok(())
    }

    async fn on_call(&mut self, cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        match call.method() {
            "increment" => {
                let by: i64 = call.arg_or(0, 1)?;
                let count = cx.state().map_or(0, |s| s.count) + by;
                cx.set_state(Count::new(count))?;
                Reply::json(&count)
            }
            "add" => Reply::json(&(call.arg::<i64>(0)? + call.arg::<i64>(1)?)),
            "nothing" => Ok(Reply::void()),
            "countdown" => {
                let s = call.stream();
                for i in (1..=call.arg_or(0, 3i64)?).rev() {
                    s.send(&i)?;
                }
                Reply::json("liftoff")
            }
            "whoami" => {
                let c = call.connection();
                Reply::json(&json!({
                    "id": c.id(), "tags": c.tags().to_vec(), "readonly": c.readonly(),
                    "protocol": c.protocol_messages(), "state": c.state(),
                }))
            }
            "setConnState" => {
                let v: Value = call.arg(0)?;
                call.connection().set_state(v.clone());
                Reply::json(&v)
            }
            "startedAt" => Reply::json(&self.started_at.to_string()),
            "publish" => {
                let data: String = call.arg(0)?;
                Reply::json(&cx.sse_publish("feed", Some("msg"), &data)?)
            }
            "broadcast" => {
                let text: String = call.arg(0)?;
                let me = [call.connection().id()];
                Reply::json(&cx.broadcast(text, &me))
            }
            "sqlCount" => {
                let db = cx.sql();
                db.execute_batch("CREATE TABLE IF NOT EXISTS hits (n INTEGER)")?;
                db.execute("INSERT INTO hits VALUES (1)", [])?;
                let n: i64 = db.query_row("SELECT COUNT(*) FROM hits", [], |r| r.get(0))?;
                Reply::json(&n)
            }
            "hidden" => Err(RpcError::NotCallable),
            "panic" => panic!("a bug in the agent"),
            "updates" => Reply::json(&self.updates),
            "flood" => {
                // n broadcasts of `size` bytes, 1 ms apart, to everyone but the caller; returns how many
                // connections the last one reached
                let (n, size): (usize, usize) = (call.arg(0)?, call.arg(1)?);
                let me = [call.connection().id()];
                let payload = bytes::Bytes::from(vec![b'x'; size]);
                let mut reached = 0;
                for _ in 0..n {
                    reached = cx.broadcast(payload.clone(), &me);
                    // paced, so that a client that reads keeps up
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Reply::json(&reached)
            }
            _ => Err(RpcError::NoSuchMethod),
        }
    }

    async fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        mut req: agentwire::HttpRequest,
    ) -> Result<Response<agentwire::Body>, BoxError> {
        let path = req.uri().path().to_owned();
        if path.ends_with("/status") {
            let body = agentwire::RequestExt::bytes(&mut req).await?;
            return Ok(response::json(&json!({
                "name": cx.name(), "state": cx.state(), "connections": cx.connections().count(),
                "method": req.method().as_str(), "body": String::from_utf8_lossy(&body),
            })));
        }
        if path.ends_with("/feed") {
            return Ok(cx.sse_subscribe("feed", req.headers())?);
        }
        if path.ends_with("/boom") {
            return Err("boom".into());
        }
        Ok(response::text(StatusCode::NOT_FOUND, "Not found"))
    }
}

pub fn server_with(storage: Storage, limits: Limits) -> Server {
    Server::builder()
        .agent("TestAgent", test_agent)
        .storage(storage)
        .limits(limits)
        .fallback(|_req| async { response::text(StatusCode::IM_A_TEAPOT, "fallback") })
        .build()
}

/// Serves `server` on a loopback port.
pub async fn spawn(server: Server) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener));
    addr
}

/// What a test client saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Bytes),
    Close(u16, String),
}

impl Frame {
    pub fn json(&self) -> Value {
        match self {
            Frame::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// A WebSocket client on the `agentwire-ws` machine.
#[cfg(feature = "deflate")]
fn ws_config(acc: &agentwire_ws::handshake::Accepted) -> Config {
    Config::default().with_deflate(acc.deflate)
}

#[cfg(not(feature = "deflate"))]
fn ws_config(_acc: &agentwire_ws::handshake::Accepted) -> Config {
    Config::default()
}

pub struct Client {
    sock: TcpStream,
    ws: Ws,
    rbuf: BytesMut,
    inbox: VecDeque<Frame>,
    closed: bool,
    next_id: u64,
    /// The `state` of the last `cf_agent_state` frame received (also those skipped by `call`).
    pub last_state: Option<Value>,
}

impl Client {
    /// Connects; `Err(status)` when the server answers something else than `101`.
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<Client, u16> {
        Client::connect_with(addr, path, ClientOptions::default())
            .await
            .map(|(c, _)| c)
    }

    /// Connects with these handshake options; also returns the server's acceptance.
    pub async fn connect_with(
        addr: SocketAddr,
        path: &str,
        opts: ClientOptions,
    ) -> Result<(Client, agentwire_ws::handshake::Accepted), u16> {
        let uri: http::Uri = format!("ws://{addr}{path}").parse().unwrap();
        let (hs, req) = ClientHandshake::new(&uri, opts).unwrap();
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.set_nodelay(true).unwrap();
        let mut out = BytesMut::new();
        ClientHandshake::encode_request(&req, &mut out);
        sock.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let (acc, n) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut res = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(_)) = res.parse(&buf) {
                if res.code != Some(101) {
                    return Err(res.code.unwrap_or(0));
                }
            }
            match hs.parse_response(&buf) {
                Ok(Some(done)) => break done,
                Ok(None) => {}
                Err(e) => panic!("handshake: {e}"),
            }
            let r = tokio::time::timeout(WAIT, sock.read_buf(&mut buf)).await;
            assert!(matches!(r, Ok(Ok(n)) if n > 0), "no handshake response");
        };
        let rbuf = buf.split_off(n);
        let mut c = Client {
            sock,
            ws: Ws::new(Role::Client, ws_config(&acc), Instant::now()),
            rbuf,
            inbox: VecDeque::new(),
            closed: false,
            next_id: 0,
            last_state: None,
        };
        let mut first = std::mem::take(&mut c.rbuf);
        c.ws.handle_input(Instant::now(), &mut first);
        c.rbuf = first;
        c.drain_events();
        Ok((c, acc))
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.ws.poll_event() {
            match ev {
                Event::Text(t) => self.inbox.push_back(Frame::Text(t.as_str().to_owned())),
                Event::Binary(b) => self.inbox.push_back(Frame::Binary(b)),
                Event::CloseReceived { code, reason } => self.inbox.push_back(Frame::Close(
                    code.map_or(1005, |c| c.0),
                    reason.as_str().to_owned(),
                )),
                Event::Closed { .. } => self.closed = true,
                _ => {}
            }
        }
    }

    async fn flush(&mut self) {
        let mut out = BytesMut::new();
        while let Some(t) = self.ws.poll_transmit() {
            t.write_to(&mut out);
        }
        if !out.is_empty() {
            let _ = self.sock.write_all(&out).await;
        }
    }

    /// Frame payload bytes received on the wire (compressed size when deflate is on).
    pub fn wire_bytes_received(&self) -> u64 {
        self.ws.stats().bytes_received
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send_text(text.to_owned()).unwrap();
        self.flush().await;
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws.send_binary(Bytes::copy_from_slice(data)).unwrap();
        self.flush().await;
    }

    /// Writes raw bytes to the socket, bypassing the machine (for malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.sock.write_all(bytes).await;
    }

    pub async fn close(&mut self, code: u16) {
        self.close_with(code, "").await;
    }

    pub async fn close_with(&mut self, code: u16, reason: &str) {
        let _ = self.ws.close(Instant::now(), CloseCode(code), reason);
        self.flush().await;
    }

    /// Queues `text` and a Close, then writes both with one write.
    pub async fn send_text_then_close(&mut self, text: &str, code: u16) {
        self.ws.send_text(text.to_owned()).unwrap();
        let _ = self.ws.close(Instant::now(), CloseCode(code), "");
        self.flush().await;
    }

    /// The next frame, or `None` after `timeout` (or when the connection is over).
    pub async fn recv_within(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.inbox.pop_front() {
                let v = f.json();
                if v["type"] == "cf_agent_state" {
                    self.last_state = v.get("state").cloned();
                }
                return Some(f);
            }
            if self.closed {
                return None;
            }
            self.rbuf.reserve(8192);
            let r = tokio::time::timeout_at(deadline, self.sock.read_buf(&mut self.rbuf)).await;
            match r {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => self.ws.handle_eof(Instant::now()),
                Ok(Ok(_)) => self.ws.handle_input(Instant::now(), &mut self.rbuf),
            }
            self.drain_events();
            self.flush().await;
        }
    }

    pub async fn recv(&mut self) -> Frame {
        self.recv_within(WAIT).await.expect("a frame")
    }

    pub async fn recv_json(&mut self) -> Value {
        let f = self.recv().await;
        match f {
            Frame::Text(t) => serde_json::from_str(&t).expect("json"),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Reads the three connect frames and returns them.
    pub async fn connect_frames(&mut self) -> [Value; 3] {
        [
            self.recv_json().await,
            self.recv_json().await,
            self.recv_json().await,
        ]
    }

    /// Waits for a frame matching `pred`, skipping others (which are returned too).
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let v = match self.recv().await {
                Frame::Text(t) => serde_json::from_str(&t).unwrap_or(Value::Null),
                other => panic!("unexpected {other:?}"),
            };
            if pred(&v) {
                return (v, skipped);
            }
            skipped.push(v);
        }
    }

    /// Calls `method` and returns its terminal reply frame (other frames are dropped).
    pub async fn call(&mut self, method: &str, args: Value) -> Value {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        self.send_json(&json!({"type": "rpc", "id": id, "method": method, "args": args}))
            .await;
        let (reply, _) = self
            .wait_for(|v| {
                v["type"] == "rpc" && v["id"] == id.as_str() && v.get("done") != Some(&json!(false))
            })
            .await;
        reply
    }

    /// Calls `method` and returns `result`, panicking on an error reply.
    pub async fn call_ok(&mut self, method: &str, args: Value) -> Value {
        let r = self.call(method, args).await;
        assert_eq!(r["success"], json!(true), "call {method} failed: {r}");
        r.get("result").cloned().unwrap_or(Value::Null)
    }
}

/// A plain HTTP/1.1 request; returns status, headers and the whole body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let sock = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("response in time")
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = tokio::time::timeout(WAIT, res.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// `POST`s a JSON task with `prompt` to a TaskRunner's `tasks_path`; returns the created task
/// (asserting `201`).
pub async fn create_task(addr: SocketAddr, tasks_path: &str, prompt: &str) -> Value {
    let (status, _, body) = http(
        addr,
        "POST",
        tasks_path,
        &[("content-type", "application/json")],
        &json!({ "prompt": prompt }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Starts this test binary again with only the ignored test `test` selected — a server that
/// prints `LISTENING {addr}` and serves until killed — with `{env} = {dir}`; returns the child
/// and the address it listens on.
pub fn start_child_server(
    test: &str,
    env: &str,
    dir: &std::path::Path,
) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("child output").unwrap();
        // libtest may print `test NAME ... ` on the same line first
        if let Some((_, a)) = line.split_once("LISTENING ") {
            break a.trim().parse().unwrap();
        }
    };
    (child, addr)
}
