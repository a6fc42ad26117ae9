//! Reads an event stream on stdin and prints each dispatched event as one JSON line
//! `{"type":…,"data":…,"lastEventId":…}`, then at the end of input
//! `{"end":true,"lastEventId":…,"retry":<ms or null>}`.
//!
//! ```sh
//! printf 'id: 1\ndata: hello\n\n' | cargo run -q -p agentwire-sse --example decode
//! ```

use agentwire_sse::Decoder;
use serde::Serialize;
use std::io::{Read, Write};

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a str,
    #[serde(rename = "lastEventId")]
    last_event_id: &'a str,
}

#[derive(Serialize)]
struct End<'a> {
    end: bool,
    #[serde(rename = "lastEventId")]
    last_event_id: &'a str,
    retry: Option<u64>,
}

fn main() -> std::io::Result<()> {
    let mut decoder = Decoder::new();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        decoder.handle_input_slice(&buf[..n]);
        loop {
            match decoder.poll_event() {
                Some(Ok(event)) => {
                    let line = Line {
                        event_type: event.event_type(),
                        data: event.data(),
                        last_event_id: event.last_event_id(),
                    };
                    writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
                }
                None => break,
                Some(Err(e)) => eprintln!("decode: {e}"),
            }
        }
    }
    decoder.handle_eof();
    let end = End {
        end: true,
        last_event_id: decoder.last_event_id(),
        retry: decoder.retry().map(|r| r.as_millis() as u64),
    };
    writeln!(stdout, "{}", serde_json::to_string(&end)?)?;
    Ok(())
}
