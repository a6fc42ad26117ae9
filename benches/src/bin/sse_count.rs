//! One SSE decode arm over one workload, once: for instruction counts under
//! `valgrind --tool=callgrind`, which do not depend on the machine's load (criterion ratios on
//! a shared machine do). The arm `none` builds the workload only; subtract its count.
//!
//! ```sh
//! cargo build --release -p agentwire-benches --bin sse_count
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/sse_count a agentwire
//! ```

use agentwire_benches::sse::{self, Chunking, Floor};
use bytes::Bytes;
use futures::StreamExt;
use std::convert::Infallible;
use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (workload, arm) = match &args[..] {
        [_, w, a] => (w.as_str(), a.as_str()),
        _ => {
            eprintln!("usage: sse_count a|c_tokens|b|c_big agentwire|sse-stream|floor|none");
            std::process::exit(2);
        }
    };
    let w = match workload {
        "a" => sse::tokens(Chunking::Fixed(16 * 1024)),
        "c_tokens" => sse::tokens(Chunking::Random(4096)),
        "b" => sse::big(Chunking::Fixed(16 * 1024)),
        "c_big" => sse::big(Chunking::Random(4096)),
        other => panic!("unknown workload {other}"),
    };
    let chunks = &w.chunks;
    let (n, bytes) = match arm {
        "agentwire" => {
            let mut d = agentwire_sse::Decoder::new();
            let (mut n, mut bytes) = (0, 0);
            for c in chunks {
                d.handle_input(c.clone());
                while let Some(batch) = d.poll_events() {
                    for e in &batch.expect("within limits") {
                        n += 1;
                        bytes += black_box(e.data).len();
                    }
                }
            }
            (n, bytes)
        }
        "sse-stream" => {
            let stream = futures::stream::iter(chunks.iter().cloned().map(Ok::<Bytes, Infallible>));
            let mut s = sse_stream::SseByteStream::new(stream);
            let (mut n, mut bytes) = (0, 0);
            futures::executor::block_on(async {
                while let Some(ev) = s.next().await {
                    if let Some(d) = ev.expect("event").data {
                        n += 1;
                        bytes += black_box(d).len();
                    }
                }
            });
            (n, bytes)
        }
        "floor" => {
            let mut f = Floor::default();
            for c in chunks {
                f.feed(c);
            }
            (f.events, f.data_bytes)
        }
        "none" => (w.specs.len(), w.data_bytes),
        other => panic!("unknown arm {other}"),
    };
    assert_eq!(
        (n, bytes),
        (w.specs.len(), w.data_bytes),
        "{arm} on {workload}"
    );
    println!("{arm} {workload}: {n} events, {bytes} data bytes");
}
