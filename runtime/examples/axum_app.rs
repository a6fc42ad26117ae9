//! The agent server mounted inside an existing axum application: the app's own routes beside
//! `/agents/…`, state shared between them, and one graceful shutdown for both.
//!
//! ```text
//! cargo run -p agentwire --example axum_app
//! curl http://127.0.0.1:3000/api/stats                         # an own route
//! curl -X POST http://127.0.0.1:3000/agents/counter/a          # the agent's onRequest
//! # WebSocket: ws://127.0.0.1:3000/agents/counter/a (any Agents client, or the Rust client:
//! cargo run -p agentwire --features client --example agent_client -- ws://127.0.0.1:3000 counter a
//! ```
//!
//! `Server` is a `tower::Service` for any request body: mount it with `route_service` (or
//! `fallback_service`) on the full, unstripped path; `axum::serve` enables the HTTP upgrades
//! WebSockets need. On Ctrl-C, `Server::shutdown` closes the WebSockets with `1001` and ends
//! SSE responses, then axum stops accepting and lets requests in flight finish.
//! `tests/axum_app.rs` runs this application on a loopback port.

use agentwire::body::response;
use agentwire::{Agent, Body, BoxError, Call, Context, HttpRequest, Reply, RpcError, Server};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The application's own state, also used by its agents.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Calls to `increment` across every counter instance.
    pub(crate) increments: AtomicU64,
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Count {
    pub(crate) count: i64,
}

/// A counter whose instances live at `/agents/counter/{name}`.
pub(crate) struct Counter {
    stats: Arc<Stats>,
}

impl Agent for Counter {
    type State = Count;

    fn initial_state(&self) -> Option<Count> {
        Some(Count { count: 0 })
    }

    async fn on_call(&mut self, cx: &mut Context<Self>, call: Call) -> Result<Reply, RpcError> {
        match call.method() {
            "increment" => {
                let count = cx.state().map_or(0, |s| s.count) + call.arg_or(0, 1)?;
                cx.set_state(Count { count })?;
                self.stats.increments.fetch_add(1, Ordering::Relaxed);
                Reply::json(&count)
            }
            _ => Err(RpcError::NoSuchMethod),
        }
    }

    async fn on_request(
        &mut self,
        cx: &mut Context<Self>,
        _req: HttpRequest,
    ) -> Result<http::Response<Body>, BoxError> {
        let count = cx.state().map_or(0, |s| s.count);
        Ok(response::json(&serde_json::json!({ "count": count })))
    }
}

/// What the axum handlers share: the app's state and the agent server.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) stats: Arc<Stats>,
    pub(crate) agents: Server,
}

/// The agent server (storage in memory here; `Storage::sqlite(dir)` keeps it) and the state.
pub(crate) fn state() -> AppState {
    let stats = Arc::new(Stats::default());
    let s = stats.clone();
    let agents = Server::builder()
        .agent("Counter", move |_name| Counter { stats: s.clone() })
        .build();
    AppState { stats, agents }
}

/// The application: own routes, and the agents under `/agents/`.
pub(crate) fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { "an axum app with agents under /agents/" }),
        )
        .route("/api/stats", get(stats))
        // The full path reaches the server, which matches `/agents/{namespace}/{name}` itself.
        .route_service("/agents/{*rest}", state.agents.clone())
        .with_state(state)
}

async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "increments": state.stats.increments.load(Ordering::Relaxed),
        "awake_instances": state.agents.awake_instances(),
    }))
}

/// Serves the application on `listener` until `signal`, then shuts both down gracefully.
pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = state();
    let agents = state.agents.clone();
    let shutdown = async move {
        signal.await;
        // WebSockets (which axum no longer tracks once upgraded) close with 1001 and SSE
        // responses end; then axum drains the HTTP connections.
        agents.shutdown().await;
    };
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("http://{}/ (agents under /agents/)", listener.local_addr()?);
    run(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
