//! A blocking `std::net` echo server, one thread per connection: proof that the core needs no
//! async runtime.
//!
//! ```sh
//! cargo run --release -p agentwire-ws --example echo_std -- 127.0.0.1:9001
//! ```

mod common;

use agentwire_ws::handshake::{self, Accept};
use agentwire_ws::{Connection, Role};
use bytes::BytesMut;
use http::{header, HeaderValue};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn serve(mut sock: TcpStream) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let (upgrade, n) = loop {
        if common::read_some(&mut sock, &mut buf)? == 0 {
            return Ok(());
        }
        let mut headers = [httparse::EMPTY_HEADER; handshake::MAX_HEADERS];
        match handshake::parse_request(&buf, &mut headers) {
            Ok(Some(done)) => break done,
            Ok(None) => continue,
            Err(e) => {
                let mut out = BytesMut::new();
                handshake::encode_response(&handshake::reject(&e), &mut out);
                return sock.write_all(&out);
            }
        }
    };
    let mut accept = Accept::default();
    accept.headers.insert(
        header::SERVER,
        HeaderValue::from_static("agentwire-ws-echo-std"),
    );
    if let Some(p) = upgrade.protocols().next() {
        accept = accept.with_protocol(p); // an echo server speaks every protocol
    }
    let (accept, config) = common::accept_extensions(&upgrade, accept);
    let mut out = BytesMut::new();
    handshake::encode_response(&upgrade.accept(accept), &mut out);
    sock.write_all(&out)?;
    let leftover = buf.split_off(n);
    let conn = Connection::new(Role::Server, config, Instant::now());
    let stats = common::drive(&mut sock, conn, leftover, common::echo)?;
    if std::env::var_os("WS_STATS").is_some() {
        // for the interop tests: wire bytes per connection (compressed sizes with deflate)
        eprintln!(
            "stats {} frames_received={} bytes_received={} bytes_sent={}",
            upgrade.uri(),
            stats.frames_received,
            stats.bytes_received,
            stats.bytes_sent
        );
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let listener = TcpListener::bind(&addr)?;
    eprintln!("echo_std listening on ws://{}", listener.local_addr()?);
    for sock in listener.incoming() {
        let sock = sock?;
        std::thread::spawn(move || {
            if let Err(e) = serve(sock) {
                eprintln!("connection error: {e}");
            }
        });
    }
    Ok(())
}
