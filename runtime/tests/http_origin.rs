//! The server's origin policy: CORS preflights and reply headers for allowed origins, `403`
//! for WebSocket upgrades and state-changing requests from foreign origins, same-origin and
//! non-browser clients let through; through `agentwire serve --allow-origin` and in process.

#[path = "common/raw.rs"]
mod raw;

use agentwire::body::response;
use agentwire::{Agent, Body, BoxError, Context, HttpRequest, Server};
use http::{Method, Response, StatusCode};
use raw::{form, form_type, request, Serve};
use std::net::SocketAddr;

const APP: &str = "http://app.example:3000";
const EVIL: &str = "http://evil.example";

fn upgrade_headers(origin: Option<&str>) -> Vec<(&str, &str)> {
    let mut h = vec![
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    if let Some(o) = origin {
        h.push(("origin", o));
    }
    h
}

#[tokio::test]
async fn serve_allow_origin_answers_preflights_and_decorates_replies() {
    let serve = Serve::start("http-origin", &["--allow-origin", APP]);
    let addr = serve.addr;
    let up = "/agents/files-agent/cors/upload";

    // preflight from the allowed origin: answered by the server
    let r = request(
        addr,
        "OPTIONS",
        up,
        &[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r
        .header("vary")
        .unwrap()
        .to_ascii_lowercase()
        .contains("origin"));

    // preflight from another origin: no allow headers
    let r = request(
        addr,
        "OPTIONS",
        up,
        &[("origin", EVIL), ("access-control-request-method", "POST")],
        b"",
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    assert_eq!(r.header("access-control-allow-methods"), None, "{r:?}");

    // the upload from the allowed origin carries the headers
    let body = form(&[("file", Some("cors.txt"), b"12345")]);
    let ct = form_type();
    let r = request(
        addr,
        "POST",
        up,
        &[("content-type", &ct), ("origin", APP)],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, r#"{"filename":"cors.txt","size":5}"#);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert!(r
        .header("vary")
        .unwrap()
        .to_ascii_lowercase()
        .contains("origin"));

    // from a foreign origin it is refused; without Origin (curl) or from the same origin
    // (the demo page) it is accepted without CORS headers
    let r = request(
        addr,
        "POST",
        up,
        &[("content-type", &ct), ("origin", EVIL)],
        &body,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = request(addr, "POST", up, &[("content-type", &ct)], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let same = format!("http://{addr}");
    let r = request(
        addr,
        "POST",
        up,
        &[("content-type", &ct), ("origin", &same)],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // reads from a foreign origin are answered, without CORS headers (the browser hides them)
    let r = request(
        addr,
        "GET",
        "/agents/files-agent/cors/files",
        &[("origin", EVIL)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), Some("origin"), "replies vary by Origin");

    // WebSocket upgrades: foreign refused; none, same-origin and allowed accepted
    let ws = "/agents/counter-agent/cors";
    let r = request(addr, "GET", ws, &upgrade_headers(Some(EVIL)), b"").await;
    assert_eq!(r.status, 403);
    for origin in [None, Some(same.as_str()), Some(APP)] {
        let r = request(addr, "GET", ws, &upgrade_headers(origin), b"").await;
        assert_eq!(r.status, 101, "origin {origin:?}");
    }
}

/// Answers `OPTIONS` itself, as the upstream CORS example does, and echoes POSTs.
struct OwnCors;

impl Agent for OwnCors {
    type State = serde_json::Value;

    async fn on_request(
        &mut self,
        _cx: &mut Context<Self>,
        req: HttpRequest,
    ) -> Result<Response<Body>, BoxError> {
        if req.method() == Method::OPTIONS {
            let mut r = Response::new(Body::empty());
            let h = r.headers_mut();
            h.insert("access-control-allow-origin", "*".parse()?);
            h.insert(
                "access-control-allow-methods",
                "GET, POST, OPTIONS".parse()?,
            );
            h.insert("access-control-allow-headers", "Content-Type".parse()?);
            return Ok(r);
        }
        let mut r = response::json(&serde_json::json!({ "data": "..." }));
        r.headers_mut()
            .insert("access-control-allow-origin", "*".parse()?);
        Ok(r)
    }
}

async fn spawn(server: Server) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener));
    addr
}

#[tokio::test]
async fn default_policy_refuses_foreign_writes_and_leaves_options_to_the_agent() {
    let addr = spawn(Server::builder().agent("OwnCors", |_| OwnCors).build()).await;
    let path = "/agents/own-cors/x/api";

    // no origin listed: a foreign preflight reaches the agent, which answers it itself
    let r = request(
        addr,
        "OPTIONS",
        path,
        &[("origin", EVIL), ("access-control-request-method", "POST")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );

    // but state-changing requests and upgrades from it are refused all the same
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = request(addr, method, path, &[("origin", EVIL)], b"{}").await;
        assert_eq!(r.status, 403, "{method}");
    }
    let r = request(
        addr,
        "GET",
        "/agents/own-cors/x",
        &upgrade_headers(Some(EVIL)),
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    // `null` (sandboxed frames, file pages) is foreign too
    let r = request(addr, "POST", path, &[("origin", "null")], b"{}").await;
    assert_eq!(r.status, 403);
    // the same request without Origin passes
    let r = request(addr, "POST", path, &[], b"{}").await;
    assert_eq!(r.status, 200);
    let r = request(
        addr,
        "GET",
        "/agents/own-cors/x",
        &upgrade_headers(None),
        b"",
    )
    .await;
    assert_eq!(r.status, 101);
}

#[tokio::test]
async fn any_origin_and_agent_headers_win() {
    let server = Server::builder()
        .agent("OwnCors", |_| OwnCors)
        .allowed_origins(["*"])
        .build();
    let addr = spawn(server).await;
    let path = "/agents/own-cors/x/api";
    // `*`: every origin may write; the agent's own Access-Control-Allow-Origin is kept
    let r = request(addr, "POST", path, &[("origin", EVIL)], b"{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("vary"), Some("origin"));
    // preflights are answered by the server, echoing the origin
    let r = request(
        addr,
        "OPTIONS",
        path,
        &[("origin", EVIL), ("access-control-request-method", "PUT")],
        b"",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT.as_u16());
    assert_eq!(r.header("access-control-allow-origin"), Some(EVIL));
    // a plain OPTIONS (not a preflight) still reaches the agent
    let r = request(addr, "OPTIONS", path, &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
}
