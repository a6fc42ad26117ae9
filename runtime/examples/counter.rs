//! The test agent of the interop suite: `CounterAgent`, served at `/agents/counter-agent/{name}`.
//!
//! ```sh
//! cargo run --release -p agentwire --example counter -- --addr 127.0.0.1:8787 --data ./data
//! ```
//!
//! Options: `--addr HOST:PORT` (default `127.0.0.1:8787`), `--data DIR` (SQLite files; without
//! it, state lives in memory), `--idle SECS` (hibernation timeout, default 10; `0` never evicts).
//! Stops gracefully on Ctrl-C or SIGTERM.

use agentwire::demo::counter::CounterAgent;
use agentwire::{Limits, Server, Storage};
use std::time::Duration;

struct Args {
    addr: String,
    data: Option<String>,
    limits: Limits,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8787".to_owned(),
        data: None,
        limits: Limits::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--addr" => a.addr = it.next().unwrap_or(a.addr),
            "--data" => a.data = it.next(),
            "--idle" => {
                let secs: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                a.limits.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "-h" | "--help" => {
                eprintln!("usage: counter [--addr HOST:PORT] [--data DIR] [--idle SECS]");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let Args { addr, data, limits } = args();
    let storage = data.map_or_else(Storage::memory, Storage::sqlite);
    let server = Server::builder()
        .agent("CounterAgent", |_name| CounterAgent::new())
        .storage(storage)
        .limits(limits)
        .build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "counter agent listening on http://{}",
        listener.local_addr()?
    );
    server.serve_with_shutdown(listener, stop_signal()).await
}
