//! Blocking `std::net` driver shared by the examples: the whole IO side of a connection.

#![allow(dead_code, unreachable_pub)]

use agentwire_ws::{Connection, Event};
use bytes::BytesMut;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// The server's permessage-deflate policy: on when the examples are built with the `deflate`
/// feature, unless `WS_DEFLATE=off`. Every message is compressed (threshold 0), as conformance
/// suites expect of an echo server.
#[cfg(feature = "deflate")]
pub fn server_deflate() -> Option<agentwire_ws::deflate::DeflateConfig> {
    if std::env::var("WS_DEFLATE").is_ok_and(|v| v == "off") {
        return None;
    }
    Some(agentwire_ws::deflate::DeflateConfig::default().with_threshold(0))
}

/// Accepts permessage-deflate when the client offers it and the policy allows; returns the
/// response options and the connection settings to use.
pub fn accept_extensions(
    upgrade: &agentwire_ws::handshake::Upgrade,
    accept: agentwire_ws::handshake::Accept,
) -> (agentwire_ws::handshake::Accept, agentwire_ws::Config) {
    #[cfg(feature = "deflate")]
    {
        let pmd = server_deflate().and_then(|p| upgrade.negotiate_deflate(&p));
        let accept = match pmd {
            Some(n) => accept.with_deflate(n),
            None => accept,
        };
        (accept, agentwire_ws::Config::default().with_deflate(pmd))
    }
    #[cfg(not(feature = "deflate"))]
    {
        let _ = upgrade;
        (accept, agentwire_ws::Config::default())
    }
}

/// Reads once into the spare capacity of `buf` (at least 64 KiB). `Ok(0)` is end of file.
pub fn read_some(sock: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let len = buf.len();
    let want = (buf.capacity() - len).max(64 * 1024);
    buf.resize(len + want, 0);
    let r = sock.read(&mut buf[len..]);
    let n = *r.as_ref().unwrap_or(&0);
    buf.truncate(len + n);
    r
}

/// Writes every pending frame, gathered into one buffer per drain.
pub fn flush(conn: &mut Connection, sock: &mut TcpStream, out: &mut BytesMut) -> io::Result<()> {
    conn.poll_transmit_into(out);
    if !out.is_empty() {
        sock.write_all(out)?;
        out.clear();
    }
    Ok(())
}

/// Runs `conn` over `sock` until it is closed, calling `on_event` for every event (which may
/// queue sends); returns the connection's counters. `rbuf` holds bytes already read past the
/// handshake.
pub fn drive(
    sock: &mut TcpStream,
    mut conn: Connection,
    mut rbuf: BytesMut,
    mut on_event: impl FnMut(&mut Connection, Event),
) -> io::Result<agentwire_ws::Stats> {
    let mut out = BytesMut::new();
    conn.handle_input(Instant::now(), &mut rbuf);
    loop {
        while let Some(ev) = conn.poll_event() {
            on_event(&mut conn, ev);
        }
        flush(&mut conn, sock, &mut out)?;
        if conn.state().is_closed() {
            return Ok(conn.stats());
        }
        let timeout = conn
            .poll_timeout()
            .map(|d| d.saturating_duration_since(Instant::now()));
        if timeout == Some(std::time::Duration::ZERO) {
            conn.handle_timeout(Instant::now());
            continue;
        }
        sock.set_read_timeout(timeout)?;
        match read_some(sock, &mut rbuf) {
            Ok(0) => conn.handle_eof(Instant::now()),
            Ok(_) => conn.handle_input(Instant::now(), &mut rbuf),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                conn.handle_timeout(Instant::now())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => conn.handle_eof(Instant::now()),
        }
    }
}

/// The echo behaviour: every message goes back as it came.
pub fn echo(conn: &mut Connection, ev: Event) {
    let r = match ev {
        Event::Text(t) => conn.send_text(t),
        Event::Binary(b) => conn.send_binary(b),
        _ => Ok(()),
    };
    if let Err(e) = r {
        eprintln!("send failed: {e}");
    }
}
