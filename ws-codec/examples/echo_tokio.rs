//! The echo server on tokio: the same machine, driven by an async task per connection.
//!
//! ```sh
//! cargo run --release -p agentwire-ws --example echo_tokio -- 127.0.0.1:9001
//! ```

mod common;

use agentwire_ws::handshake::{self, Accept};
use agentwire_ws::{Connection, Event, Role};
use bytes::BytesMut;
use http::{header, HeaderValue};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(mut sock: TcpStream) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let (upgrade, n) = loop {
        if sock.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; handshake::MAX_HEADERS];
        match handshake::parse_request(&buf, &mut headers) {
            Ok(Some(done)) => break done,
            Ok(None) => continue,
            Err(e) => {
                let mut out = BytesMut::new();
                handshake::encode_response(&handshake::reject(&e), &mut out);
                return sock.write_all(&out).await;
            }
        }
    };
    let mut accept = Accept::default();
    accept.headers.insert(
        header::SERVER,
        HeaderValue::from_static("agentwire-ws-echo-tokio"),
    );
    if let Some(p) = upgrade.protocols().next() {
        accept = accept.with_protocol(p);
    }
    let (accept, config) = common::accept_extensions(&upgrade, accept);
    let mut out = BytesMut::new();
    handshake::encode_response(&upgrade.accept(accept), &mut out);
    sock.write_all(&out).await?;
    out.clear();
    let mut rbuf = buf.split_off(n);
    let mut conn = Connection::new(Role::Server, config, Instant::now());
    conn.handle_input(Instant::now(), &mut rbuf);
    loop {
        while let Some(ev) = conn.poll_event() {
            let r = match ev {
                Event::Text(t) => conn.send_text(t),
                Event::Binary(b) => conn.send_binary(b),
                _ => Ok(()),
            };
            if let Err(e) = r {
                eprintln!("send failed: {e}");
            }
        }
        conn.poll_transmit_into(&mut out);
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
        if conn.state().is_closed() {
            let _ = sock.shutdown().await;
            return Ok(());
        }
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(64 * 1024);
        }
        let deadline = conn.poll_timeout();
        let read = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), sock.read_buf(&mut rbuf))
                    .await
                    .ok(),
                None => Some(sock.read_buf(&mut rbuf).await),
            }
        };
        match read.await {
            None => conn.handle_timeout(Instant::now()),
            Some(Ok(0)) | Some(Err(_)) => conn.handle_eof(Instant::now()),
            Some(Ok(_)) => conn.handle_input(Instant::now(), &mut rbuf),
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo_tokio listening on ws://{}", listener.local_addr()?);
    loop {
        let (sock, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = serve(sock).await {
                eprintln!("connection error: {e}");
            }
        });
    }
}
