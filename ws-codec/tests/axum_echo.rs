//! Serves `examples/axum_echo.rs` on a loopback port; a client on the same driver sends text
//! and binary messages and gets them back, then closes cleanly.

#[allow(dead_code)]
#[path = "../examples/axum_echo.rs"]
mod example;

use agentwire_ws::handshake::{ClientHandshake, ClientOptions};
use agentwire_ws::stream::WebSocketStream;
use agentwire_ws::{CloseCode, Config, Event, Role};
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn echoes_text_and_binary_then_closes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, example::app()).await });

    let uri: http::Uri = format!("ws://{addr}/echo").parse().unwrap();
    let (hs, req) = ClientHandshake::new(&uri, ClientOptions::default()).unwrap();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = BytesMut::new();
    ClientHandshake::encode_request(&req, &mut head);
    sock.write_all(&head).await.unwrap();
    let mut buf = BytesMut::new();
    let n = loop {
        if let Some((_, n)) = hs.parse_response(&buf).unwrap() {
            break n;
        }
        assert!(sock.read_buf(&mut buf).await.unwrap() > 0, "no 101");
    };
    let mut ws =
        WebSocketStream::new(sock, Role::Client, Config::default()).with_leftover(&buf[n..]);

    ws.send_text("hello").unwrap();
    ws.send_binary(vec![1u8, 2, 3]).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Event::Text(t)) => got.push(format!("text {}", t.as_str())),
            Some(Event::Binary(b)) => got.push(format!("binary {:?}", &b[..])),
            Some(_) => {}
            None => panic!("ended early: {got:?}"),
        }
    }
    assert_eq!(got, ["text hello", "binary [1, 2, 3]"]);

    ws.close(CloseCode::NORMAL, "bye").unwrap();
    let mut clean = None;
    while let Some(ev) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        if let Event::Closed { clean: c, .. } = ev {
            clean = Some(c);
        }
    }
    assert_eq!(clean, Some(true));
}
