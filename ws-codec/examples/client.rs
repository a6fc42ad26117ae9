//! A blocking client: runs every case of an Autobahn fuzzingserver (echoing each message), or,
//! given a `ws://` URL that is not an Autobahn server, sends one text message and prints the
//! echo.
//!
//! ```sh
//! cargo run --release -p agentwire-ws --example client -- ws://127.0.0.1:9001 [agent]
//! cargo run --release -p agentwire-ws --example client -- --echo ws://127.0.0.1:9001 hello
//! ```

mod common;

use agentwire_ws::handshake::{ClientHandshake, ClientOptions};
use agentwire_ws::{CloseCode, Config, Connection, Event, Role};
use bytes::BytesMut;
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Connects and completes the handshake; returns the socket, the machine and leftover bytes.
fn connect(url: &str) -> io::Result<(TcpStream, Connection, BytesMut)> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    #[allow(unused_mut)]
    let mut opts = ClientOptions::default();
    // With the `deflate` feature (and unless WS_DEFLATE=off) the client offers
    // permessage-deflate and resets its compressor after each message (saves memory; the
    // conformance suite's server accepts only such offers in its no-context-takeover cases).
    #[cfg(feature = "deflate")]
    if !std::env::var("WS_DEFLATE").is_ok_and(|v| v == "off") {
        opts = opts.with_deflate(
            agentwire_ws::deflate::DeflateConfig::default()
                .with_client_no_context_takeover(true)
                .with_threshold(0),
        );
    }
    let (hs, req) = ClientHandshake::new(&uri, opts).map_err(io::Error::other)?;
    let host = uri.host().unwrap_or("127.0.0.1");
    let port = uri.port_u16().unwrap_or(80);
    let mut sock = TcpStream::connect((host, port))?;
    sock.set_nodelay(true)?;
    let mut out = BytesMut::new();
    ClientHandshake::encode_request(&req, &mut out);
    sock.write_all(&out)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if common::read_some(&mut sock, &mut buf)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof during handshake",
            ));
        }
        if let Some((accepted, n)) = hs.parse_response(&buf).map_err(io::Error::other)? {
            let leftover = buf.split_off(n);
            #[cfg(feature = "deflate")]
            let config = Config::default().with_deflate(accepted.deflate);
            #[cfg(not(feature = "deflate"))]
            let config = {
                let _ = accepted;
                Config::default()
            };
            let conn = Connection::new(Role::Client, config, Instant::now());
            return Ok((sock, conn, leftover));
        }
    }
}

/// After the close handshake a client waits for the server to close TCP (RFC 6455 §7.1.1).
fn wait_server_close(mut sock: TcpStream) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
    let mut b = BytesMut::new();
    while matches!(common::read_some(&mut sock, &mut b), Ok(n) if n > 0) {
        b.clear();
    }
}

fn run(url: &str, on_event: impl FnMut(&mut Connection, Event)) -> io::Result<()> {
    let (mut sock, conn, leftover) = connect(url)?;
    common::drive(&mut sock, conn, leftover, on_event)?;
    wait_server_close(sock);
    Ok(())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--echo") {
        // --echo URL MSG...: send each message, print each echo, then close normally
        let url = args.get(1).map_or("ws://127.0.0.1:9001", String::as_str);
        let msgs: Vec<String> = args.iter().skip(2).cloned().collect();
        let (mut sock, mut conn, leftover) = connect(url)?;
        let mut pending = msgs.len();
        for m in msgs {
            conn.send_text(m).map_err(io::Error::other)?;
        }
        if pending == 0 {
            let _ = conn.close(Instant::now(), CloseCode::NORMAL, "");
        }
        common::drive(&mut sock, conn, leftover, |conn, ev| match ev {
            Event::Text(t) => {
                println!("{}", t.as_str());
                pending = pending.saturating_sub(1);
                if pending == 0 {
                    let _ = conn.close(Instant::now(), CloseCode::NORMAL, "done");
                }
            }
            Event::Ping(p) => eprintln!("ping {}", String::from_utf8_lossy(&p)),
            Event::Closed { clean, error, .. } => eprintln!("closed clean={clean} error={error:?}"),
            _ => {}
        })?;
        wait_server_close(sock);
        return Ok(());
    }
    let base = args
        .first()
        .map_or("ws://127.0.0.1:9001", String::as_str)
        .trim_end_matches('/')
        .to_owned();
    let agent = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "agentwire-ws".into());
    let mut count = 0usize;
    run(&format!("{base}/getCaseCount"), |_, ev| {
        if let Event::Text(t) = ev {
            count = t.as_str().trim().parse().unwrap_or(0);
        }
    })?;
    eprintln!("running {count} cases");
    for case in 1..=count {
        if let Err(e) = run(
            &format!("{base}/runCase?case={case}&agent={agent}"),
            common::echo,
        ) {
            eprintln!("case {case}: {e}");
        }
    }
    run(&format!("{base}/updateReports?agent={agent}"), |_, _| {})?;
    Ok(())
}
