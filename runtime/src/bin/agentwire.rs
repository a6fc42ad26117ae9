//! The `agentwire` command.
//!
//! ```sh
//! agentwire tail <http-url>   # follow an SSE stream: one JSON line per event, resumes with Last-Event-ID
//! ```

use agentwire_sse::ReconnectPolicy;
use std::process::ExitCode;

const USAGE: &str = "usage: agentwire tail <http://host:port/path>

  tail   follow a Server-Sent Events stream, printing each event as a JSON line
         {\"type\":…,\"data\":…,\"lastEventId\":…}; reconnects with Last-Event-ID after the
         server's retry: time and stops when the server answers 204";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tail", url] => {
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
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
