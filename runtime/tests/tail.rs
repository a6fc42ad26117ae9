//! `agentwire::tail` against a scripted SSE server over loopback: a connection cut in the
//! middle of an event, resumption with `Last-Event-ID` after the server's `retry:` time, no
//! event lost or printed twice, and the stop on 204.

use agentwire_sse::ReconnectPolicy;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads a request head; returns its `Last-Event-ID` header, if any.
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    head.lines()
        .find_map(|l| l.strip_prefix("last-event-id: ").map(str::to_owned))
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn resumes_after_a_cut_without_loss_or_duplicates_and_stops_on_204() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        // 1: three events, then the connection drops in the middle of the fourth.
        let (mut s, _) = listener.accept().await.unwrap();
        seen.push((read_head(&mut s).await, Instant::now()));
        s.write_all(OK.as_bytes()).await.unwrap();
        s.write_all(b"retry: 300\n\nid: 1\ndata: one\n\nid: 2\nevent: tick\ndata: two\n\n")
            .await
            .unwrap();
        s.write_all(b"id: 3\ndata: three\n\nid: 4\ndata: fo")
            .await
            .unwrap();
        drop(s);
        let cut = Instant::now();
        // 2: the client resumes after event 3 and gets 4 and 5; the body ends.
        let (mut s, _) = listener.accept().await.unwrap();
        seen.push((read_head(&mut s).await, Instant::now()));
        let waited = seen[1].1 - cut;
        s.write_all(OK.as_bytes()).await.unwrap();
        s.write_all(b"id: 4\ndata: four\n\nid: 5\ndata: five\n\n")
            .await
            .unwrap();
        drop(s);
        // 3: nothing more: 204 tells the client to stop.
        let (mut s, _) = listener.accept().await.unwrap();
        seen.push((read_head(&mut s).await, Instant::now()));
        s.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        (seen, waited)
    });

    let mut out = Vec::new();
    let url = format!("http://{addr}/events");
    let policy = ReconnectPolicy::default().jitter_seed(1);
    tokio::time::timeout(
        Duration::from_secs(20),
        agentwire::tail::tail(&url, policy, &mut out),
    )
    .await
    .expect("tail stops on 204")
    .expect("a 204 is a normal end");

    let (seen, waited) = server.await.unwrap();
    let ids: Vec<Option<String>> = seen.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [None, Some("3".into()), Some("5".into())]);
    assert!(
        waited >= Duration::from_millis(290),
        "reconnected after {waited:?}, before the server's retry: 300"
    );

    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap(),
                l["data"].as_str().unwrap(),
                l["lastEventId"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("message", "one", "1"),
            ("tick", "two", "2"),
            ("message", "three", "3"),
            ("message", "four", "4"),
            ("message", "five", "5"),
        ]
    );
}

#[tokio::test]
async fn refuses_a_stream_of_the_wrong_type() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi")
            .await
            .unwrap();
    });
    let mut out = Vec::new();
    let err = agentwire::tail::tail(
        &format!("http://{addr}/"),
        ReconnectPolicy::default(),
        &mut out,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, agentwire::tail::TailError::Refused(_)),
        "{err}"
    );
    assert!(out.is_empty());
}
