//! The `agentwire` command.
//!
//! ```sh
//! agentwire                   # = agentwire serve
//! agentwire serve [--addr 127.0.0.1:8787] [--data ./agentwire-data] [--no-deflate]
//!                 [--allow-origin ORIGIN]...
//!                             # the demo agents and their page at http://127.0.0.1:8787/
//! agentwire tail <http-url>   # follow an SSE stream: one JSON line per event, resumes with Last-Event-ID
//! ```

use agentwire::{Limits, Storage};
use agentwire_sse::ReconnectPolicy;
use std::process::ExitCode;

const USAGE: &str = "usage: agentwire [serve [--addr HOST:PORT] [--data DIR] [--no-deflate]
                        [--allow-origin ORIGIN]...]
       agentwire tail <http://host:port/path>

  serve  run the demo agents (CounterAgent, ChatRoom, TaskRunner, FilesAgent) and their page at /;
         --addr defaults to 127.0.0.1:8787, --data (SQLite files) to ./agentwire-data.
         WebSocket messages are compressed (permessage-deflate) with clients that offer it,
         as browsers do, unless --no-deflate. Pages from other sites may not open
         WebSockets or send POST/PUT/PATCH/DELETE requests unless their origin is given
         with --allow-origin (scheme://host[:port], or * for any; repeatable), which also
         answers their CORS preflights.
         This is what `agentwire` without arguments does. Stops on Ctrl-C or SIGTERM.
  tail   follow a Server-Sent Events stream, printing each event as a JSON line
         {\"type\":…,\"data\":…,\"lastEventId\":…}; reconnects with Last-Event-ID after the
         server's retry: time and stops when the server answers 204";

const DEFAULT_ADDR: &str = "127.0.0.1:8787";
const DEFAULT_DATA: &str = "./agentwire-data";

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("agentwire: {msg}\n{USAGE}");
    ExitCode::from(2)
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn serve(args: &[&str]) -> ExitCode {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut data = DEFAULT_DATA.to_owned();
    let mut deflate = true;
    let mut origins = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--addr" => match it.next() {
                Some(v) => addr = (*v).to_owned(),
                None => return usage_error("--addr needs HOST:PORT"),
            },
            "--data" => match it.next() {
                Some(v) => data = (*v).to_owned(),
                None => return usage_error("--data needs a directory"),
            },
            "--no-deflate" => deflate = false,
            "--allow-origin" => match it.next() {
                Some(v) => origins.push((*v).to_owned()),
                None => return usage_error("--allow-origin needs an origin"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument {other}")),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&data) {
        eprintln!("agentwire serve: cannot create the data directory {data}: {e}");
        return ExitCode::FAILURE;
    }
    #[allow(unused_mut)]
    let mut limits = Limits::default();
    #[cfg(feature = "deflate")]
    if deflate {
        limits.deflate = Some(agentwire::server_deflate());
    }
    #[cfg(not(feature = "deflate"))]
    let _ = deflate;
    let runner = agentwire::demo::tasks::TaskRunner::new();
    let server = agentwire::demo::builder(Storage::sqlite(&data), limits, runner)
        .allowed_origins(origins)
        .build();
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agentwire serve: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => eprintln!("agentwire: demo at http://{a}/ (data in {data})"),
        Err(_) => eprintln!("agentwire: demo at http://{addr}/ (data in {data})"),
    }
    match server.serve_with_shutdown(listener, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentwire serve: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn tail(url: &str) -> ExitCode {
    let mut out = std::io::stdout();
    let run = agentwire::tail::tail(url, ReconnectPolicy::default(), &mut out);
    tokio::select! {
        res = run => match res {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agentwire tail: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => serve(&[]).await,
        ["serve", rest @ ..] => serve(rest).await,
        ["tail", url] => tail(url).await,
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        [flag, ..] if flag.starts_with("--") => serve(&args).await,
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
