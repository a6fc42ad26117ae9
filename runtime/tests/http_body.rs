//! Streamed request bodies in `on_request`: the JSON helper's `400`, a per-route body limit
//! (`Agent::max_request_body`) on a streamed multipart upload, client errors kept out of
//! `on_error`.

#[path = "common/raw.rs"]
mod raw;

use agentwire::body::response;
use agentwire::{Agent, Body, BoxError, Context, HttpRequest, RequestExt, Server};
use http::Response;
use raw::{form, form_type, read_reply, request, BOUNDARY};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Deserialize)]
struct Todo {
    title: String,
    done: bool,
}

/// `POST …/todo` takes JSON; `POST …/upload` (limit 1,000 bytes) counts a file's bytes.
struct Api {
    errors: Arc<AtomicUsize>,
}

impl Agent for Api {
    type State = serde_json::Value;

    fn max_request_body(req: &http::request::Parts) -> Option<u64> {
        req.uri.path().ends_with("/upload").then_some(1000)
    }

    async fn on_request(
        &mut self,
        _cx: &mut Context<Self>,
        mut req: HttpRequest,
    ) -> Result<Response<Body>, BoxError> {
        if req.uri().path().ends_with("/todo") {
            let todo: Todo = req.json().await?;
            return Ok(response::json(
                &serde_json::json!({ "title": todo.title, "done": todo.done }),
            ));
        }
        let mut form = req.multipart()?;
        let file = form.field("file").await?;
        let mut size = 0;
        while let Some(c) = file.chunk().await? {
            size += c.len();
        }
        Ok(response::json(&serde_json::json!({ "size": size })))
    }

    async fn on_error(
        &mut self,
        _cx: &mut Context<Self>,
        _c: Option<&agentwire::Connection>,
        _e: &BoxError,
    ) {
        self.errors.fetch_add(1, Ordering::SeqCst);
    }
}

async fn spawn() -> (SocketAddr, Arc<AtomicUsize>) {
    let errors = Arc::new(AtomicUsize::new(0));
    let e = errors.clone();
    let server = Server::builder()
        .agent("Api", move |_| Api { errors: e.clone() })
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener));
    (addr, errors)
}

#[tokio::test]
async fn json_helper_answers_400_on_bad_input() {
    let (addr, errors) = spawn().await;
    let path = "/agents/api/x/todo";
    let r = request(addr, "POST", path, &[], br#"{"title":"milk","done":false}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, r#"{"done":false,"title":"milk"}"#);

    for bad in [
        &b"{\"title\":"[..],
        b"{\"title\":1,\"done\":false}",
        b"not json",
        b"",
    ] {
        let r = request(addr, "POST", path, &[], bad).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert!(r.body.starts_with("invalid JSON body: "), "{}", r.body);
    }
    // over the default limit (1 MiB): 413
    let big = vec![b' '; (1 << 20) + 1];
    let r = request(addr, "POST", path, &[], &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "client errors are not agent errors"
    );
}

#[tokio::test]
async fn per_route_limit_stops_a_streamed_upload() {
    let (addr, errors) = spawn().await;
    let path = "/agents/api/x/upload";
    let ct = form_type();

    let ok = form(&[("file", Some("a"), &[7u8; 500])]);
    let r = request(addr, "POST", path, &[("content-type", &ct)], &ok).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, r#"{"size":500}"#);

    // announced: refused from the head
    let big = form(&[("file", Some("a"), &[7u8; 2000])]);
    let r = request(addr, "POST", path, &[("content-type", &ct)], &big).await;
    assert_eq!(r.status, 413);

    // chunked: refused while the upload is still going (its end is never sent)
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {ct}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let part = format!(
        "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
    );
    let mut chunks = vec![part.into_bytes()];
    chunks.extend(std::iter::repeat_n(vec![7u8; 400], 4));
    for c in chunks {
        sock.write_all(format!("{:x}\r\n", c.len()).as_bytes())
            .await
            .unwrap();
        sock.write_all(&c).await.unwrap();
        sock.write_all(b"\r\n").await.unwrap();
    }
    let r = read_reply(&mut sock).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body, "request body larger than 1000 bytes");

    // the limit is per route: the JSON route keeps the default
    let r = request(addr, "POST", "/agents/api/x/todo", &[], &vec![b' '; 5000]).await;
    assert_eq!(
        r.status, 400,
        "5000 bytes of spaces are within 1 MiB, but not JSON"
    );
    assert_eq!(errors.load(Ordering::SeqCst), 0);
}
