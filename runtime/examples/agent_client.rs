//! The Rust `AgentClient` against a running server (e.g. `cargo run --release`).
//!
//! ```sh
//! cargo run -p agentwire --features client --example agent_client -- ws://127.0.0.1:8787 counter-agent demo
//! ```
//!
//! Connects, prints the identity and the state, calls `increment` and the streaming
//! `countdown`, then prints every event (state broadcasts, messages, reconnects) until Ctrl-C.

use agentwire::client::{AgentClient, ClientEvent};
use std::process::ExitCode;
use std::time::Duration;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base = args.first().map_or("ws://127.0.0.1:8787", String::as_str);
    let agent = args.get(1).map_or("counter-agent", String::as_str);
    let name = args.get(2).map_or("demo", String::as_str);

    let client = match AgentClient::builder(base, agent, name).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::from(2);
        }
    };
    let mut events = client.events();
    eprintln!("connecting to {} (id {})", client.url(), client.id());
    let identity = match tokio::time::timeout(Duration::from_secs(10), client.ready()).await {
        Ok(Ok(identity)) => identity,
        Ok(Err(e)) => {
            eprintln!("client: {e}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("client: not ready after 10 s");
            return ExitCode::FAILURE;
        }
    };
    println!("identity: agent={} name={}", identity.agent, identity.name);
    println!("state: {}", client.state().unwrap_or_default());

    match client.call("increment", [1]).await {
        Ok(v) => println!("increment -> {v}"),
        Err(e) => println!("increment failed: {e}"),
    }
    match client.call_stream("countdown", [3]) {
        Ok(mut stream) => {
            while let Some(chunk) = stream.next_chunk().await {
                println!("countdown chunk {chunk}");
            }
            match stream.finish().await {
                Ok(v) => println!("countdown -> {v}"),
                Err(e) => println!("countdown failed: {e}"),
            }
        }
        Err(e) => println!("countdown failed: {e}"),
    }

    eprintln!("following events; Ctrl-C to stop");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => match ev {
                Ok(ClientEvent::State(u)) => println!("state ({:?}): {}", u.source, u.state),
                Ok(ClientEvent::Message(m)) => println!("message: {m:?}"),
                Ok(ClientEvent::StateError(e)) => println!("state error: {e}"),
                Ok(ClientEvent::Disconnected { code, reason, reconnect }) => {
                    println!("disconnected: {code} {reason:?} (reconnect: {reconnect})");
                    if !reconnect {
                        break;
                    }
                }
                Ok(other) => println!("{other:?}"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    println!("({n} events skipped)")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let info = client.close().await;
    eprintln!("closed: {} {:?}", info.code, info.cause);
    ExitCode::SUCCESS
}
