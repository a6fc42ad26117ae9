//! The demo agents that `agentwire serve` runs, and its browser page.
//!
//! | agent | URL | what it shows |
//! | --- | --- | --- |
//! | [`CounterAgent`](counter::CounterAgent) | `/agents/counter-agent/{name}` | the interop test contract: state sync, RPC, streaming, broadcast, SSE |
//! | [`ChatRoom`](chat::ChatRoom) | `/agents/chat-room/{room}?username=NAME` | join / leave, presence from per-connection state, history in SQLite |
//! | [`TaskRunner`](tasks::TaskRunner) | `/agents/task-runner/{name}/tasks` | REST + SSE: token output streamed with ids, resumable with `Last-Event-ID` |
//! | [`FilesAgent`](files::FilesAgent) | `/agents/files-agent/{name}/upload`, `…/files` | `multipart/form-data` uploads streamed to disk, CORS for the allowed origins |
//! | [`Presence`](presence::Presence) | `/agents/presence/{name}` | the number of connected tabs, a paced streaming call (`countdown`) |
//!
//! [`server`] builds a [`Server`] with all four and the page ([`INDEX_HTML`]) at `/`: one
//! self-contained HTML file (no build step, no external resources) using the browser's
//! `WebSocket`, `fetch` and `EventSource`.

pub mod chat;
pub mod counter;
pub mod files;
pub mod presence;
pub mod tasks;

use crate::body::response;
use crate::{Body, Limits, Server, ServerBuilder, Storage};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

/// The demo page served at `/`.
pub const INDEX_HTML: &str = include_str!("index.html");

/// A server with the demo agents (token delay [`tasks::DEFAULT_TOKEN_DELAY`]) and the page.
pub fn server(storage: Storage, limits: Limits) -> Server {
    server_with(storage, limits, tasks::TaskRunner::new())
}

/// [`server`] with the given task runner (e.g. a faster one in tests).
pub fn server_with(storage: Storage, limits: Limits, runner: tasks::TaskRunner) -> Server {
    builder(storage, limits, runner)
        .fallback(|req| async move { page(&req) })
        .build()
}

/// A builder with the demo agents, `storage` and `limits`, but no fallback: add one that ends
/// in [`page`] (as `agentwire serve` does, to answer `/healthz` and the like first), and
/// more settings (e.g. [`allowed_origins`](ServerBuilder::allowed_origins), as `agentwire
/// serve --allow-origin`). [`FilesAgent`](files::FilesAgent) keeps its files in the storage's
/// data directory, or with [`Storage::memory`] in a directory under the system's temporary
/// directory.
pub fn builder(storage: Storage, limits: Limits, runner: tasks::TaskRunner) -> ServerBuilder {
    let files_root = storage.dir().map_or_else(
        || std::env::temp_dir().join(format!("agentwire-files-{}", std::process::id())),
        |d| d.to_path_buf(),
    );
    Server::builder()
        .agent("CounterAgent", |_name| counter::CounterAgent::new())
        .agent("ChatRoom", |_name| chat::ChatRoom::new())
        .agent("TaskRunner", move |_name| runner.clone())
        .agent("FilesAgent", move |_name| {
            files::FilesAgent::new(&files_root)
        })
        .agent("Presence", |_name| presence::Presence::new())
        .storage(storage)
        .limits(limits)
}

/// Answers the requests that are not agent requests: the page at `/` and `/index.html`,
/// the process's main [`metrics`](crate::metrics::snapshot) as JSON at `/stats` (for the
/// page's traffic figures), `404` otherwise.
pub fn page(req: &Request<Bytes>) -> Response<Body> {
    match req.uri().path() {
        "/stats" if req.method() == Method::GET => {
            let mut r = response::json(&crate::metrics::snapshot());
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/" | "/index.html" if req.method() == Method::GET || req.method() == Method::HEAD => {
            let mut r = Response::new(if req.method() == Method::HEAD {
                Body::empty()
            } else {
                Body::from(INDEX_HTML)
            });
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html;charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        "/favicon.ico" => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        _ => response::not_found(),
    }
}

/// The segments after `/{prefix}/{namespace}/{name}`.
pub(crate) fn rest_of<'a>(path: &'a str, namespace: &str) -> Vec<&'a str> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.iter().position(|s| *s == namespace) {
        Some(p) if segs.len() >= p + 2 => segs[p + 2..].to_vec(),
        _ => Vec::new(),
    }
}
