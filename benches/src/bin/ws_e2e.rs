//! End-to-end WebSocket echo over loopback: peer echo servers and a load generator.
//!
//! ```sh
//! ws_e2e serve-tungstenite 127.0.0.1:9102   # tokio-tungstenite echo
//! ws_e2e serve-fastws 127.0.0.1:9103        # fastwebsockets echo
//! ws_e2e serve-tcp 127.0.0.1:9104           # the floor: 101, then raw byte echo
//! ws_e2e load ws://127.0.0.1:9101/ --conns 10 --msgs 20000 --size 32 [--masked-echo]
//! ```
//!
//! Our own server is `cargo run --release -p agentwire-ws --example echo_tokio`. The servers
//! run a multi-threaded tokio runtime (one worker when pinned to one CPU with `taskset`), the
//! load generator a current-thread runtime. The load generator drives
//! [`agentwire_ws::Connection`] in the client role: each of N connections sends M binary
//! messages of S bytes one at a time and waits for each echo. It prints one JSON line with
//! messages/s (all connections, wall clock) and the p50/p99 round-trip latency.
//!
//! The floor echoes the client's frames as they are, masked; `--masked-echo` makes the load
//! generator decode them with a server-role machine (which expects masked frames).
//! `scripts/ws-e2e.sh` runs the whole matrix.

use agentwire_ws::handshake::{self, ClientHandshake, ClientOptions};
use agentwire_ws::{Config, Connection, Event, Role};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, target) = match (args.first(), args.get(1)) {
        (Some(c), Some(t)) => (c.as_str(), t.clone()),
        _ => return Err(usage()),
    };
    let server = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cmd {
        "serve-tungstenite" => server()?.block_on(serve(target, tungstenite_conn)),
        "serve-fastws" => server()?.block_on(serve(target, fastws_conn)),
        "serve-tcp" => server()?.block_on(serve(target, tcp_conn)),
        "load" => {
            let opts = LoadOpts::parse(&args[2..])?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(load(target, opts))
        }
        _ => Err(usage()),
    }
}

fn usage() -> Box<dyn std::error::Error> {
    "usage: ws_e2e serve-tungstenite|serve-fastws|serve-tcp ADDR | \
     load URL --conns N --msgs M --size S [--masked-echo]"
        .into()
}

// ===== servers =====

async fn serve<F, Fut>(addr: String, per_conn: F) -> Res<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = Res<()>> + Send + 'static,
{
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let (sock, _) = listener.accept().await?;
        sock.set_nodelay(true)?;
        let fut = per_conn(sock);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                eprintln!("connection error: {e}");
            }
        });
    }
}

async fn tungstenite_conn(sock: TcpStream) -> Res<()> {
    let mut ws = tokio_tungstenite::accept_async(sock).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await?;
        } else if msg.is_close() {
            break;
        }
    }
    Ok(())
}

/// Answers the upgrade with our handshake code; returns bytes read past the request head.
async fn accept_upgrade(sock: &mut TcpStream) -> Res<BytesMut> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if sock.read_buf(&mut buf).await? == 0 {
            return Err("eof before the upgrade request".into());
        }
        let mut headers = [httparse::EMPTY_HEADER; handshake::MAX_HEADERS];
        if let Some((upgrade, n)) = handshake::parse_request(&buf, &mut headers)? {
            let mut out = BytesMut::new();
            handshake::encode_response(&upgrade.accept(Default::default()), &mut out);
            sock.write_all(&out).await?;
            return Ok(buf.split_off(n));
        }
    }
}

async fn fastws_conn(mut sock: TcpStream) -> Res<()> {
    let rest = accept_upgrade(&mut sock).await?;
    if !rest.is_empty() {
        return Err("client spoke before the 101".into());
    }
    let ws = fastwebsockets::WebSocket::after_handshake(sock, fastwebsockets::Role::Server);
    let mut ws = fastwebsockets::FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary => {
                ws.write_frame(frame).await?
            }
            fastwebsockets::OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

async fn tcp_conn(mut sock: TcpStream) -> Res<()> {
    let mut buf = accept_upgrade(&mut sock).await?;
    loop {
        if !buf.is_empty() {
            sock.write_all(&buf).await?;
            buf.clear();
        }
        if buf.capacity() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if sock.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

// ===== load generator =====

#[derive(Debug, Clone, Copy)]
struct LoadOpts {
    conns: usize,
    msgs: usize,
    size: usize,
    masked_echo: bool,
}

impl LoadOpts {
    fn parse(args: &[String]) -> Res<LoadOpts> {
        let mut o = LoadOpts {
            conns: 1,
            msgs: 10_000,
            size: 32,
            masked_echo: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut num = || -> Res<usize> { Ok(it.next().ok_or_else(usage)?.parse()?) };
            match a.as_str() {
                "--conns" => o.conns = num()?,
                "--msgs" => o.msgs = num()?,
                "--size" => o.size = num()?,
                "--masked-echo" => o.masked_echo = true,
                _ => return Err(usage()),
            }
        }
        Ok(o)
    }
}

/// One client connection: the socket, our client machine, and (for the floor) a server-role
/// machine that decodes the masked frames echoed back.
struct Client {
    sock: TcpStream,
    tx: Connection,
    rx: Option<Connection>,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    async fn connect(uri: &http::Uri, masked_echo: bool) -> Res<Client> {
        let auth = uri.authority().ok_or("URL without host")?;
        let mut sock = TcpStream::connect(auth.as_str()).await?;
        sock.set_nodelay(true)?;
        let (hs, req) = ClientHandshake::new(uri, ClientOptions::default())?;
        let mut wbuf = BytesMut::new();
        ClientHandshake::encode_request(&req, &mut wbuf);
        sock.write_all(&wbuf).await?;
        wbuf.clear();
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let n = loop {
            if sock.read_buf(&mut rbuf).await? == 0 {
                return Err("eof during the handshake".into());
            }
            if let Some((_, n)) = hs.parse_response(&rbuf)? {
                break n;
            }
        };
        let _ = rbuf.split_to(n);
        let now = Instant::now();
        Ok(Client {
            sock,
            tx: Connection::new(Role::Client, Config::default(), now),
            rx: masked_echo.then(|| Connection::new(Role::Server, Config::default(), now)),
            rbuf,
            wbuf,
        })
    }

    /// Sends one message and waits for its echo.
    async fn echo(&mut self, payload: &Bytes) -> Res<()> {
        self.tx.send_binary(payload.clone())?;
        self.tx.poll_transmit_into(&mut self.wbuf);
        self.sock.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        loop {
            let rx = self.rx.as_mut().unwrap_or(&mut self.tx);
            while let Some(ev) = rx.poll_event() {
                match ev {
                    Event::Binary(b) if b.len() == payload.len() => return Ok(()),
                    Event::Ping(_) | Event::Pong(_) => {}
                    other => return Err(format!("unexpected event {other:?}").into()),
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                self.rbuf.reserve(64 * 1024);
            }
            if self.sock.read_buf(&mut self.rbuf).await? == 0 {
                return Err("server closed the connection".into());
            }
            rx.handle_input(Instant::now(), &mut self.rbuf);
        }
    }
}

async fn load(url: String, o: LoadOpts) -> Res<()> {
    let uri: http::Uri = url.parse()?;
    let payload = Bytes::from(
        (0..o.size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut clients = Vec::with_capacity(o.conns);
    for _ in 0..o.conns {
        clients.push(Client::connect(&uri, o.masked_echo).await?);
    }
    // Warm-up, not measured.
    for c in &mut clients {
        for _ in 0..10 {
            c.echo(&payload).await?;
        }
    }
    let local = tokio::task::LocalSet::new();
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let payload = payload.clone();
            local.spawn_local(async move {
                let mut lat = Vec::with_capacity(o.msgs);
                for _ in 0..o.msgs {
                    let t = Instant::now();
                    c.echo(&payload).await.map_err(|e| e.to_string())?;
                    lat.push(t.elapsed());
                }
                Ok::<_, String>(lat)
            })
        })
        .collect();
    let results = local.run_until(futures::future::join_all(tasks)).await;
    let wall = start.elapsed();
    let mut lat: Vec<Duration> = Vec::with_capacity(o.conns * o.msgs);
    for r in results {
        lat.extend(r??);
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e6
    };
    let total = lat.len();
    let rate = total as f64 / wall.as_secs_f64();
    println!(
        "{{\"conns\":{},\"msgs\":{},\"size\":{},\"secs\":{:.3},\"msgs_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
        o.conns,
        o.msgs,
        o.size,
        wall.as_secs_f64(),
        rate,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
