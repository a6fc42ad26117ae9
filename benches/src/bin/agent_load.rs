//! Load generator for the agent server (the runtime's `counter` example), built on the crate's
//! own Sans-IO WebSocket client machine (`agentwire_ws`) over tokio sockets.
//!
//! ```sh
//! agent_load --url http://127.0.0.1:8787 [--instance NAME] [--server-pid PID] \
//!     broadcast --sockets 10000 --rounds 5 [--pad 1000] [--concurrency 256]
//! agent_load --url http://127.0.0.1:8787 rpc --conns 100 --in-flight 1 --seconds 3
//! ```
//!
//! * `broadcast`: one writer socket plus `--sockets` receivers on one agent instance. Connect
//!   time counts until every receiver got its connect frames (identity, state, MCP servers).
//!   With `--server-pid`, the server's `VmRSS` is read before and after connecting the
//!   receivers (memory per idle socket). Then `--rounds` times the writer sends one client state
//!   update (`cf_agent_state`, `count` plus a `pad` string of `--pad` bytes); the figure is the
//!   time from sending it until the last receiver has the broadcast frame.
//! * `rpc`: `--conns` sockets on one instance, each keeping `--in-flight` calls of
//!   `add(1, 2)` outstanding for `--seconds`; calls/s and latency percentiles.
//!
//! Every result is printed as one JSON line on stdout.

use agentwire_ws::handshake::{ClientHandshake, ClientOptions};
use agentwire_ws::{Config, Connection, Event, Role, Utf8Bytes};
use bytes::BytesMut;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One WebSocket client: a socket driving a client-role machine.
struct Client {
    stream: TcpStream,
    conn: Connection,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Client {
    async fn connect(host: &str, path: &str) -> Res<Client> {
        let mut stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        let uri = match format!("ws://{host}{path}").parse() {
            Ok(u) => u,
            Err(_) => return Err(format!("bad URL ws://{host}{path}").into()),
        };
        let (hs, req) =
            ClientHandshake::new(&uri, ClientOptions::default()).map_err(|e| format!("{e:?}"))?;
        let mut wbuf = BytesMut::with_capacity(256);
        ClientHandshake::encode_request(&req, &mut wbuf);
        stream.write_all(&wbuf).await?;
        wbuf.clear();
        let mut rbuf = BytesMut::with_capacity(1024);
        loop {
            if stream.read_buf(&mut rbuf).await? == 0 {
                return Err("connection closed during the handshake".into());
            }
            if let Some((_, n)) = hs.parse_response(&rbuf).map_err(|e| format!("{e:?}"))? {
                let _ = rbuf.split_to(n);
                break;
            }
        }
        let now = Instant::now();
        let mut conn = Connection::new(Role::Client, Config::default(), now);
        if !rbuf.is_empty() {
            conn.handle_input(now, &mut rbuf);
        }
        Ok(Client {
            stream,
            conn,
            rbuf,
            wbuf,
        })
    }

    async fn flush(&mut self) -> Res<()> {
        if self.conn.poll_transmit_into(&mut self.wbuf) > 0 {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Queues a text frame without writing it.
    fn queue(&mut self, text: String) -> Res<()> {
        self.conn.send_text(text).map_err(|e| format!("{e:?}"))?;
        Ok(())
    }

    async fn send(&mut self, text: String) -> Res<()> {
        self.queue(text)?;
        self.flush().await
    }

    /// The next text message; `None` once the connection is over.
    async fn next_text(&mut self) -> Res<Option<Utf8Bytes>> {
        loop {
            while let Some(ev) = self.conn.poll_event() {
                match ev {
                    Event::Text(t) => return Ok(Some(t)),
                    Event::Closed { .. } => {
                        self.flush().await?;
                        return Ok(None);
                    }
                    _ => {}
                }
            }
            self.flush().await?;
            self.rbuf.reserve(2048);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(None);
            }
            self.conn.handle_input(Instant::now(), &mut self.rbuf);
        }
    }

    /// Reads until the connect frames are in (the MCP servers frame comes last).
    async fn connect_frames(&mut self) -> Res<()> {
        loop {
            match self.next_text().await? {
                Some(t) if t.contains("\"cf_agent_mcp_servers\"") => return Ok(()),
                Some(_) => {}
                None => return Err("closed before the connect frames".into()),
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    host: String,
    instance: String,
    server_pid: Option<u32>,
    scenario: String,
    sockets: usize,
    rounds: usize,
    pad: usize,
    concurrency: usize,
    conns: usize,
    in_flight: usize,
    seconds: f64,
}

fn usage() -> ! {
    eprintln!(
        "usage: agent_load --url http://HOST:PORT [--instance NAME] [--server-pid PID] \
         (broadcast [--sockets N] [--rounds R] [--pad BYTES] [--concurrency C] \
         | rpc [--conns N] [--in-flight K] [--seconds S])"
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        host: "127.0.0.1:8787".to_owned(),
        instance: format!("load-{}", std::process::id()),
        server_pid: None,
        scenario: String::new(),
        sockets: 10_000,
        rounds: 5,
        pad: 1000,
        concurrency: 256,
        conns: 100,
        in_flight: 1,
        seconds: 3.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--url" => {
                let u = val();
                let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
                o.host = rest.trim_end_matches('/').to_owned();
            }
            "--instance" => o.instance = val(),
            "--server-pid" => o.server_pid = val().parse().ok(),
            "--sockets" => o.sockets = val().parse().unwrap_or_else(|_| usage()),
            "--rounds" => o.rounds = val().parse().unwrap_or_else(|_| usage()),
            "--pad" => o.pad = val().parse().unwrap_or_else(|_| usage()),
            "--concurrency" => o.concurrency = val().parse().unwrap_or_else(|_| usage()),
            "--conns" => o.conns = val().parse().unwrap_or_else(|_| usage()),
            "--in-flight" => o.in_flight = val().parse().unwrap_or_else(|_| usage()),
            "--seconds" => o.seconds = val().parse().unwrap_or_else(|_| usage()),
            "broadcast" | "rpc" => o.scenario = a,
            _ => usage(),
        }
    }
    if o.scenario.is_empty() {
        usage();
    }
    o
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The `p`-th percentile (0–100) of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn path(o: &Opts, pk: &str) -> String {
    format!("/agents/counter-agent/{}?_pk={pk}", o.instance)
}

enum Report {
    Ready(Instant),
    Failed(String),
    State(Instant, usize),
}

async fn broadcast(o: Opts) -> Res<()> {
    let n = o.sockets;
    let mut writer = Client::connect(&o.host, &path(&o, "writer")).await?;
    writer.connect_frames().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = o.server_pid.and_then(rss_kib);

    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let gate = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let t0 = Instant::now();
    for i in 0..n {
        let (tx, gate, host, p) = (
            tx.clone(),
            gate.clone(),
            o.host.clone(),
            path(&o, &format!("r{i}")),
        );
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut c = match Client::connect(&host, &p).await {
                Ok(c) => c,
                Err(e) => return drop(tx.send(Report::Failed(e.to_string()))),
            };
            if let Err(e) = c.connect_frames().await {
                return drop(tx.send(Report::Failed(e.to_string())));
            }
            drop(permit);
            let _ = tx.send(Report::Ready(Instant::now()));
            while let Ok(Some(t)) = c.next_text().await {
                if t.contains("\"cf_agent_state\"") {
                    let _ = tx.send(Report::State(Instant::now(), t.len()));
                }
            }
        });
    }
    drop(tx);

    let (mut ready, mut failed, mut last_ready, mut first_err) = (0usize, 0usize, t0, None);
    let deadline = t0 + Duration::from_secs(180);
    while ready + failed < n {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            rx.recv(),
        )
        .await
        {
            Ok(Some(Report::Ready(t))) => {
                ready += 1;
                last_ready = last_ready.max(t);
            }
            Ok(Some(Report::Failed(e))) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
            Ok(Some(Report::State(..))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let connect = last_ready - t0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = o.server_pid.and_then(rss_kib);
    let per_socket = match (rss_before, rss_after) {
        (Some(b), Some(a)) if ready > 0 => {
            Some((a.saturating_sub(b) as f64 * 1024.0) / ready as f64)
        }
        _ => None,
    };
    println!(
        "{}",
        json!({
            "scenario": "connect",
            "sockets": n,
            "ready": ready,
            "failed": failed,
            "first_error": first_err,
            "concurrency": o.concurrency,
            "connect_all_ms": ms(connect),
            "server_rss_before_kib": rss_before,
            "server_rss_after_kib": rss_after,
            "server_bytes_per_idle_socket": per_socket.map(|b| b.round()),
        })
    );
    // Drain anything that arrived since (late connect-frame duplicates would be a bug, not data).
    while rx.try_recv().is_ok() {}

    let pad = "x".repeat(o.pad);
    let mut lasts = Vec::with_capacity(o.rounds);
    for r in 0..o.rounds {
        let msg = json!({"type": "cf_agent_state", "state": {"count": r + 1, "pad": pad}});
        let msg = msg.to_string();
        let sent_bytes = msg.len();
        let t = Instant::now();
        writer.send(msg).await?;
        let (mut got, mut first, mut last, mut frame_bytes) = (0usize, None, t, 0usize);
        let deadline = t + Duration::from_secs(60);
        while got < ready {
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                rx.recv(),
            )
            .await
            {
                Ok(Some(Report::State(at, len))) => {
                    got += 1;
                    first.get_or_insert(at);
                    last = last.max(at);
                    frame_bytes = len;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let to_last = last - t;
        if got == ready {
            lasts.push(to_last);
        }
        println!(
            "{}",
            json!({
                "scenario": "broadcast-round",
                "round": r + 1,
                "receivers": ready,
                "delivered": got,
                "sent_bytes": sent_bytes,
                "frame_bytes": frame_bytes,
                "first_delivery_ms": first.map(|f| ms(f - t)),
                "last_delivery_ms": ms(to_last),
            })
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    lasts.sort();
    println!(
        "{}",
        json!({
            "scenario": "broadcast",
            "sockets": n,
            "receivers": ready,
            "rounds": o.rounds,
            "complete_rounds": lasts.len(),
            "pad": o.pad,
            "connect_all_ms": ms(connect),
            "last_delivery_p50_ms": ms(pct(&lasts, 50.0)),
            "last_delivery_max_ms": ms(lasts.last().copied().unwrap_or_default()),
            "server_bytes_per_idle_socket": per_socket.map(|b| b.round()),
        })
    );
    Ok(())
}

/// The `id` of an RPC reply whose `done` is true.
fn done_rpc_id(t: &str) -> Option<u64> {
    if !t.contains("\"rpc\"") || !t.contains("\"done\":true") {
        return None;
    }
    let rest = &t[t.find("\"id\":\"")? + 6..];
    rest[..rest.find('"')?].parse().ok()
}

fn rpc_call(id: u64) -> String {
    format!(r#"{{"type":"rpc","id":"{id}","method":"add","args":[1,2]}}"#)
}

async fn rpc_conn(mut c: Client, start: Instant, end: Instant, k: usize) -> Res<Vec<Duration>> {
    let mut lat = Vec::new();
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::with_capacity(k);
    tokio::time::sleep_until(start.into()).await;
    let mut next = 0u64;
    for _ in 0..k.max(1) {
        c.queue(rpc_call(next))?;
        pending.push_back((next, Instant::now()));
        next += 1;
    }
    c.flush().await?;
    while !pending.is_empty() {
        let t = match timeout(Duration::from_secs(10), c.next_text()).await {
            Ok(r) => r?,
            Err(_) => return Err("RPC reply timed out".into()),
        };
        let Some(t) = t else {
            return Err("connection closed during the RPC run".into());
        };
        let Some(id) = done_rpc_id(&t) else { continue };
        let now = Instant::now();
        if let Some(i) = pending.iter().position(|&(p, _)| p == id) {
            let (_, sent) = pending.remove(i).unwrap_or((id, now));
            if now < end {
                lat.push(now - sent);
                c.send(rpc_call(next)).await?;
                pending.push_back((next, now));
                next += 1;
            }
        }
    }
    Ok(lat)
}

async fn rpc(o: Opts) -> Res<()> {
    let mut clients = Vec::with_capacity(o.conns);
    let t0 = Instant::now();
    for i in 0..o.conns {
        let mut c = Client::connect(&o.host, &path(&o, &format!("c{i}"))).await?;
        c.connect_frames().await?;
        clients.push(c);
    }
    let connect = t0.elapsed();
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(o.seconds);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(rpc_conn(c, start, end, o.in_flight)))
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0usize;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => lat.extend(l),
            _ => errors += 1,
        }
    }
    lat.sort();
    println!(
        "{}",
        json!({
            "scenario": "rpc",
            "conns": o.conns,
            "in_flight": o.in_flight,
            "seconds": o.seconds,
            "connect_ms": ms(connect),
            "calls": lat.len(),
            "errors": errors,
            "calls_per_s": (lat.len() as f64 / o.seconds).round(),
            "p50_ms": ms(pct(&lat, 50.0)),
            "p99_ms": ms(pct(&lat, 99.0)),
            "max_ms": ms(lat.last().copied().unwrap_or_default()),
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let o = parse_args();
    match o.scenario.as_str() {
        "broadcast" => broadcast(o).await,
        _ => rpc(o).await,
    }
}
